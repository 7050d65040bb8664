//! From flag values to a member's [`server::Config`]: what etcd's `etcdmain.config.parse` and
//! `embed.Config.Validate` do once the command line, environment or file has been read.
//!
//! - etcd 3.6's names and the 3.5 `--experimental-*` names are both accepted; giving both is etcd's
//!   error, the old one alone stands for the new one, and the names etcd 3.6 deprecates are warned about
//!   with etcd's messages (whichever source named them).
//! - The 3.5 boolean switches become feature gates (see `features`).
//! - etcd's checks, with its messages: bind URLs must be IP addresses or `localhost`, advertised URLs need
//!   a host, timeouts must agree, `--advertise-client-urls` is required with an explicit
//!   `--listen-client-urls` (command line and environment only: a file keeps the default, as in etcd),
//!   one bootstrap method at most, TLS versions and suites.
//! - Deviation: the default data directory is `<name>.hearth` (etcd: `<name>.etcd`), so that Hearth never
//!   opens an etcd data directory by accident.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use server::config::AuthToken;
use server::{ClusterState, Config};
use transport::{TlsInfo, TlsOptions};

use crate::flags::Values;
use crate::notice::Notices;
use crate::unsupported::{self, NotSupportedYet};

/// Where the values came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The command line and the environment.
    Flags,
    /// `--config-file`.
    File,
}

/// etcd 3.6's old and new names of the same setting (its `experimentalFlagMigrationMap`).
pub(crate) static RENAMED: &[(&str, &str)] = &[
    (
        "experimental-compact-hash-check-time",
        "compact-hash-check-time",
    ),
    ("experimental-corrupt-check-time", "corrupt-check-time"),
    (
        "experimental-compaction-batch-limit",
        "compaction-batch-limit",
    ),
    (
        "experimental-watch-progress-notify-interval",
        "watch-progress-notify-interval",
    ),
    (
        "experimental-warning-apply-duration",
        "warning-apply-duration",
    ),
    (
        "experimental-bootstrap-defrag-threshold-megabytes",
        "bootstrap-defrag-threshold-megabytes",
    ),
    ("experimental-memory-mlock", "memory-mlock"),
    (
        "experimental-snapshot-catchup-entries",
        "snapshot-catchup-entries",
    ),
    (
        "experimental-compaction-sleep-interval",
        "compaction-sleep-interval",
    ),
    ("experimental-downgrade-check-time", "downgrade-check-time"),
    (
        "experimental-peer-skip-client-san-verification",
        "peer-skip-client-san-verification",
    ),
    (
        "experimental-enable-distributed-tracing",
        "enable-distributed-tracing",
    ),
    (
        "experimental-distributed-tracing-address",
        "distributed-tracing-address",
    ),
    (
        "experimental-distributed-tracing-service-name",
        "distributed-tracing-service-name",
    ),
    (
        "experimental-distributed-tracing-instance-id",
        "distributed-tracing-instance-id",
    ),
    (
        "experimental-distributed-tracing-sampling-rate",
        "distributed-tracing-sampling-rate",
    ),
];

/// etcd 3.6's deprecation warnings (its `deprecatedFlags`), in etcd's words.
static DEPRECATED: &[(&str, &str)] = &[
    ("snapshot-count", "--snapshot-count is deprecated in 3.6 and will be decommissioned in 3.7."),
    ("max-snapshots", "--max-snapshots is deprecated in 3.6 and will be decommissioned in 3.7."),
    ("v2-deprecation", "--v2-deprecation is deprecated and scheduled for removal in v3.8. The default value is enforced, ignoring user input."),
    ("experimental-compact-hash-check-enabled", "--experimental-compact-hash-check-enabled is deprecated in 3.6 and will be decommissioned in 3.7. Use '--feature-gates=CompactHashCheck=true' instead."),
    ("experimental-compact-hash-check-time", "--experimental-compact-hash-check-time is deprecated in 3.6 and will be decommissioned in 3.7. Use '--compact-hash-check-time' instead."),
    ("experimental-txn-mode-write-with-shared-buffer", "--experimental-txn-mode-write-with-shared-buffer is deprecated in v3.6 and will be decommissioned in v3.7. Use '--feature-gates=TxnModeWriteWithSharedBuffer=true' instead."),
    ("experimental-corrupt-check-time", "--experimental-corrupt-check-time is deprecated in v3.6 and will be decommissioned in v3.7. Use '--corrupt-check-time' instead."),
    ("experimental-compaction-batch-limit", "--experimental-compaction-batch-limit is deprecated in v3.6 and will be decommissioned in v3.7. Use '--compaction-batch-limit' instead."),
    ("experimental-watch-progress-notify-interval", "--experimental-watch-progress-notify-interval is deprecated in v3.6 and will be decommissioned in v3.7. Use '--watch-progress-notify-interval' instead."),
    ("experimental-warning-apply-duration", "--experimental-warning-apply-duration is deprecated in v3.6 and will be decommissioned in v3.7. Use '--warning-apply-duration' instead."),
    ("experimental-bootstrap-defrag-threshold-megabytes", "--experimental-bootstrap-defrag-threshold-megabytes is deprecated in v3.6 and will be decommissioned in v3.7. Use '--bootstrap-defrag-threshold-megabytes' instead."),
    ("experimental-memory-mlock", "--experimental-memory-mlock is deprecated in v3.6 and will be decommissioned in v3.7. Use '--memory-mlock' instead."),
    ("experimental-snapshot-catchup-entries", "--experimental-snapshot-catchup-entries is deprecated in v3.6 and will be decommissioned in v3.7. Use '--snapshot-catchup-entries' instead."),
    ("experimental-compaction-sleep-interval", "--experimental-compaction-sleep-interval is deprecated in v3.6 and will be decommissioned in v3.7. Use 'compaction-sleep-interval' instead."),
    ("experimental-downgrade-check-time", "--experimental-downgrade-check-time is deprecated in v3.6 and will be decommissioned in v3.7. Use '--downgrade-check-time' instead."),
    ("experimental-enable-distributed-tracing", "--experimental-enable-distributed-tracing is deprecated in 3.6 and will be decommissioned in 3.7. Use --enable-distributed-tracing instead."),
    ("experimental-distributed-tracing-address", "--experimental-distributed-tracing-address is deprecated in 3.6 and will be decommissioned in 3.7. Use --distributed-tracing-address instead."),
    ("experimental-distributed-tracing-service-name", "--experimental-distributed-tracing-service-name is deprecated in 3.6 and will be decommissioned in 3.7. Use --distributed-tracing-service-name instead."),
    ("experimental-distributed-tracing-instance-id", "--experimental-distributed-tracing-instance-id is deprecated in 3.6 and will be decommissioned in 3.7. Use --distributed-tracing-instance-id instead."),
    ("experimental-distributed-tracing-sampling-rate", "--experimental-distributed-tracing-sampling-rate is deprecated in 3.6 and will be decommissioned in 3.7. Use --distributed-tracing-sampling-rate instead."),
];

/// etcd's default `--initial-cluster`; a member named otherwise that keeps it gets its own instead.
const DEFAULT_INITIAL_CLUSTER: &str = "default=http://localhost:2380";
/// etcd's `maxElectionMs`.
const MAX_ELECTION_MS: u64 = 50_000;

/// Why a configuration is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ConfigError {
    /// etcd's own checks (etcd logs these as "failed to verify flags").
    Invalid(String),
    /// Settings Hearth does not implement yet.
    NotYet(NotSupportedYet),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Invalid(s) => f.write_str(s),
            ConfigError::NotYet(n) => n.fmt(f),
        }
    }
}

impl From<String> for ConfigError {
    fn from(s: String) -> Self {
        ConfigError::Invalid(s)
    }
}

/// The values with etcd 3.6's renames applied: the new name holds the old one's value when only the
/// old one was given.
struct Effective<'a> {
    values: &'a Values,
}

impl Effective<'_> {
    fn name<'n>(&self, new: &'n str) -> &'n str {
        match RENAMED.iter().find(|(_, n)| *n == new) {
            Some((old, _)) if self.values.is_set(old) => old,
            _ => new,
        }
    }
    fn duration(&self, new: &str) -> Duration {
        self.values.duration(self.name(new))
    }
    fn uint(&self, new: &str) -> u64 {
        self.values.uint(self.name(new))
    }
    fn int(&self, new: &str) -> i64 {
        self.values.int(self.name(new))
    }
    fn bool(&self, new: &str) -> bool {
        self.values.bool(self.name(new))
    }
}

/// etcd's renamed-flag conflicts and deprecation warnings.
pub(crate) fn check_renames(values: &Values, notices: &mut Notices) -> Result<(), ConfigError> {
    for (old, new) in RENAMED {
        if values.is_set(old) && values.is_set(new) {
            return Err(ConfigError::Invalid(format!(
                "cannot set --{old} and --{new} at the same time, please use --{new} only"
            )));
        }
    }
    for name in values.explicit() {
        if let Some((_, msg)) = DEPRECATED.iter().find(|(n, _)| *n == name) {
            notices.warn(*msg, &[]);
        }
    }
    Ok(())
}

/// Builds the member's configuration, or says why not.
pub(crate) fn resolve(
    values: &Values,
    source: Source,
    notices: &mut Notices,
) -> Result<Config, ConfigError> {
    let (cfg, not_yet) = build(values, source, notices)?;
    if !not_yet.is_empty() {
        return Err(ConfigError::NotYet(NotSupportedYet(not_yet)));
    }
    // etcd's checks of https URLs without certificates. With auto TLS and no certificate given, the
    // server makes the certificate first and checks then.
    if !(cfg.client_auto_tls && cfg.client_tls.is_empty()) {
        let client_urls: Vec<String> = cfg
            .listen_client_urls
            .iter()
            .chain(&cfg.listen_client_http_urls)
            .cloned()
            .collect();
        transport::check_client_urls(&client_urls, &cfg.client_tls).map_err(|e| e.to_string())?;
        transport::check_metrics_urls(&cfg.listen_metrics_urls, &cfg.client_tls)
            .map_err(|e| e.to_string())?;
    }
    if !(cfg.peer_auto_tls && cfg.peer_tls.is_empty()) {
        transport::check_peer_urls(&cfg.listen_peer_urls, &cfg.peer_tls)
            .map_err(|e| e.to_string())?;
    }
    Ok(cfg)
}

/// The configuration etcd's checks accept, and the settings in it Hearth does not implement yet.
pub(crate) fn build(
    values: &Values,
    source: Source,
    notices: &mut Notices,
) -> Result<(Config, Vec<String>), ConfigError> {
    check_renames(values, notices)?;
    let eff = Effective { values };

    // --warning-unary-request-duration and its 3.6 deprecated twin are not in etcd's rename table.
    let unary = values.duration("warning-unary-request-duration");
    let unary_old = values.duration("experimental-warning-unary-request-duration");
    if !unary.is_zero() && !unary_old.is_zero() {
        return Err(ConfigError::Invalid("both --experimental-warning-unary-request-duration and --warning-unary-request-duration flags are set. Use only --warning-unary-request-duration".into()));
    }
    if unary.is_zero() && !unary_old.is_zero() {
        notices.warn("--experimental-warning-unary-request-duration is deprecated, and will be decommissioned in v3.7. Use --warning-unary-request-duration instead.", &[]);
    }

    let switches: Vec<(&'static str, bool)> = crate::features::EXPERIMENTAL_FLAG_GATES
        .iter()
        .filter(|(f, _)| values.is_set(f))
        .map(|(f, _)| (*f, values.bool(f)))
        .collect();
    let gates = crate::features::resolve(&values.gates(), &switches)?;
    if gates["LeaseCheckpointPersist"] && !gates["LeaseCheckpoint"] {
        return Err(ConfigError::Invalid(
            "enabling feature gate LeaseCheckpointPersist requires enabling feature gate LeaseCheckpoint".into(),
        ));
    }

    unsupported::never(values)?;
    if values.differs_from_default("backend-bbolt-freelist-type") {
        notices.warn(
            "--backend-bbolt-freelist-type has no effect: Hearth's backend is not bbolt",
            &[],
        );
    }
    if !gates["TxnModeWriteWithSharedBuffer"] {
        notices.warn(
            "feature gate TxnModeWriteWithSharedBuffer=false has no effect: Hearth has no such buffer",
            &[],
        );
    }

    let name = values.str("name");
    let listen_peer = values.list("listen-peer-urls");
    let listen_client = values.list("listen-client-urls");
    let listen_client_http = values.list("listen-client-http-urls");
    let listen_metrics = values.list("listen-metrics-urls");
    let adv_peer = values.list("initial-advertise-peer-urls");
    let mut adv_client = values.list("advertise-client-urls");
    if source == Source::Flags
        && values.is_set("listen-client-urls")
        && !values.is_set("advertise-client-urls")
    {
        adv_client.clear();
    }

    for urls in [
        &listen_peer,
        &listen_client,
        &listen_client_http,
        &listen_metrics,
    ] {
        check_bind_urls(urls)?;
    }
    if listen_client_http.is_empty() {
        notices.warn(
            "Running http and grpc server on single port. This is not recommended for production.",
            &[],
        );
    }
    check_host_urls(&adv_peer).map_err(|e| {
        format!(
            "--initial-advertise-peer-urls {:?} must be \"host:port\" ({e})",
            adv_peer.join(",")
        )
    })?;
    check_host_urls(&adv_client).map_err(|e| {
        format!(
            "--advertise-client-urls {:?} must be \"host:port\" ({e})",
            adv_client.join(",")
        )
    })?;

    let mut initial_cluster = values.str("initial-cluster");
    let discovery = !values.str("discovery").is_empty()
        || !values.str("discovery-srv").is_empty()
        || !values.list("discovery-endpoints").is_empty();
    if discovery && !values.is_set("initial-cluster") {
        initial_cluster.clear();
    }
    let bootstraps = [
        !values.str("discovery").is_empty(),
        !initial_cluster.is_empty(),
        !values.str("discovery-srv").is_empty(),
        !values.list("discovery-endpoints").is_empty(),
    ];
    if bootstraps.iter().filter(|b| **b).count() > 1 {
        return Err(ConfigError::Invalid("multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\", \"discovery-endpoints\" or \"discovery-srv\"".into()));
    }

    let tick = values.uint("heartbeat-interval");
    let election = values.uint("election-timeout");
    if tick == 0 {
        return Err(format!("--heartbeat-interval must be >0 (set to {tick}ms)").into());
    }
    if election == 0 {
        return Err(format!("--election-timeout must be >0 (set to {election}ms)").into());
    }
    if 5 * tick > election {
        return Err(format!("--election-timeout[{election}ms] should be at least as 5 times as --heartbeat-interval[{tick}ms]").into());
    }
    if election > MAX_ELECTION_MS {
        return Err(format!("--election-timeout[{election}ms] is too long, and should be set less than {MAX_ELECTION_MS}ms").into());
    }
    if !listen_client.is_empty() && adv_client.is_empty() {
        return Err(ConfigError::Invalid(
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"
                .into(),
        ));
    }
    match values.str("auto-compaction-mode").as_str() {
        "periodic" | "revision" => {}
        "" => {
            return Err(ConfigError::Invalid(
                "undefined auto-compaction-mode".into(),
            ))
        }
        other => {
            return Err(ConfigError::Invalid(format!(
                "unknown auto-compaction-mode {other:?}"
            )))
        }
    }
    let auto_compaction = server::config::parse_auto_compaction(
        &values.str("auto-compaction-mode"),
        &values.str("auto-compaction-retention"),
    )
    .map_err(ConfigError::Invalid)?;
    if eff.duration("compact-hash-check-time").is_zero() {
        return Err(ConfigError::Invalid(format!(
            "--compact-hash-check-time must be >0 (set to {:?})",
            eff.duration("compact-hash-check-time")
        )));
    }
    if name == "default" {
        notices.warn(
            "it isn't recommended to use default name, please set a value for --name. Note that etcd might run into issue when multiple members have the same default name",
            &[("name", name.clone())],
        );
    }
    let options = TlsOptions::new(
        &values.list("cipher-suites"),
        &values.str("tls-min-version"),
        &values.str("tls-max-version"),
    )
    .map_err(|e| e.to_string())?;

    let auth_token = parse_auth_token(&values.str("auth-token"))?;
    let mut bcrypt_cost = values.uint("bcrypt-cost");
    if !(4..=31).contains(&bcrypt_cost) {
        notices.warn(
            "use default bcrypt cost instead of the invalid given cost",
            &[
                ("min-cost", "4".into()),
                ("max-cost", "31".into()),
                ("default-cost", "10".into()),
                ("given-cost", bcrypt_cost.to_string()),
            ],
        );
        bcrypt_cost = 10;
    }

    // etcd's UpdateDefaultClusterFromName: a member given only a name gets an initial cluster of itself.
    if name != "default" && initial_cluster == DEFAULT_INITIAL_CLUSTER {
        initial_cluster = adv_peer
            .iter()
            .map(|u| format!("{name}={u}"))
            .collect::<Vec<_>>()
            .join(",");
    }
    let data_dir = match values.str("data-dir") {
        d if d.is_empty() => {
            let d = format!("{name}.hearth");
            notices.warn(
                "'data-dir' was empty; using default",
                &[("data-dir", d.clone())],
            );
            PathBuf::from(d)
        }
        d => PathBuf::from(d),
    };
    let opt = |flag: &str| -> Option<PathBuf> {
        let s = values.str(flag);
        (!s.is_empty()).then(|| PathBuf::from(s))
    };
    let client_tls = TlsInfo {
        cert_file: opt("cert-file"),
        key_file: opt("key-file"),
        client_cert_file: opt("client-cert-file"),
        client_key_file: opt("client-key-file"),
        trusted_ca_file: opt("trusted-ca-file"),
        client_cert_auth: values.bool("client-cert-auth"),
        crl_file: opt("client-crl-file"),
        allowed_cns: values.list("client-cert-allowed-cn"),
        allowed_hostnames: values.list("client-cert-allowed-hostname"),
        skip_client_san_verify: values.bool("client-skip-client-san-verification"),
        server_name: None,
        insecure_skip_verify: false,
        options: options.clone(),
    };
    let peer_tls = TlsInfo {
        cert_file: opt("peer-cert-file"),
        key_file: opt("peer-key-file"),
        client_cert_file: opt("peer-client-cert-file"),
        client_key_file: opt("peer-client-key-file"),
        trusted_ca_file: opt("peer-trusted-ca-file"),
        client_cert_auth: values.bool("peer-client-cert-auth"),
        crl_file: opt("peer-crl-file"),
        allowed_cns: values.list("peer-cert-allowed-cn"),
        allowed_hostnames: values.list("peer-cert-allowed-hostname"),
        skip_client_san_verify: eff.bool("peer-skip-client-san-verification"),
        server_name: None,
        insecure_skip_verify: false,
        options,
    };
    let self_signed_cert_validity = match values.uint("self-signed-cert-validity") {
        0 if source == Source::File => 1,
        v => u32::try_from(v).unwrap_or(u32::MAX),
    };

    let not_yet = unsupported::not_yet(values, &gates);
    let cfg = Config {
        name,
        data_dir,
        listen_client_urls: listen_client,
        advertise_client_urls: adv_client,
        listen_peer_urls: listen_peer,
        initial_advertise_peer_urls: adv_peer,
        initial_cluster,
        initial_cluster_state: if values.str("initial-cluster-state") == "existing" {
            ClusterState::Existing
        } else {
            ClusterState::New
        },
        initial_cluster_token: values.str("initial-cluster-token"),
        max_request_bytes: usize::try_from(values.uint("max-request-bytes")).unwrap_or(usize::MAX),
        max_txn_ops: usize::try_from(values.uint("max-txn-ops")).unwrap_or(usize::MAX),
        quota_backend_bytes: u64::try_from(values.int("quota-backend-bytes")).unwrap_or(0),
        snapshot_count: values.uint("snapshot-count"),
        snapshot_catchup_entries: eff.uint("snapshot-catchup-entries"),
        heartbeat_interval: Duration::from_millis(tick),
        election_timeout: Duration::from_millis(election),
        watch_progress_notify_interval: eff.duration("watch-progress-notify-interval"),
        strict_reconfig_check: values.bool("strict-reconfig-check"),
        metrics_extensive: values.str("metrics") == "extensive",
        warning_unary_request_duration: match (unary, unary_old) {
            (u, _) if !u.is_zero() => u,
            (_, o) if !o.is_zero() => o,
            _ => server::config::DEFAULT_WARNING_UNARY_REQUEST_DURATION,
        },
        warning_apply_duration: eff.duration("warning-apply-duration"),
        cors: values.list("cors"),
        host_whitelist: values.list("host-whitelist"),
        socket_reuse_port: values.bool("socket-reuse-port"),
        socket_reuse_address: values.bool("socket-reuse-address"),
        auto_compaction,
        listen_client_http_urls: listen_client_http,
        listen_metrics_urls: listen_metrics,
        client_tls,
        client_auto_tls: values.bool("auto-tls"),
        peer_tls,
        peer_auto_tls: values.bool("peer-auto-tls"),
        self_signed_cert_validity,
        auth_token,
        auth_token_ttl: Duration::from_secs(values.uint("auth-token-ttl")),
        bcrypt_cost: bcrypt_cost as u32,
        force_new_cluster: values.bool("force-new-cluster"),
        unsafe_no_fsync: values.bool("unsafe-no-fsync"),
        wal_dir: opt("wal-dir"),
        max_snapshots: usize::try_from(values.uint("max-snapshots")).unwrap_or(usize::MAX),
        max_wals: usize::try_from(values.uint("max-wals")).unwrap_or(usize::MAX),
        backend_batch_interval: values.duration("backend-batch-interval"),
        backend_batch_limit: usize::try_from(values.int("backend-batch-limit")).unwrap_or(0),
        max_concurrent_streams: u32::try_from(values.uint("max-concurrent-streams"))
            .unwrap_or(u32::MAX),
        grpc_keepalive_min_time: values.duration("grpc-keepalive-min-time"),
        grpc_keepalive_interval: values.duration("grpc-keepalive-interval"),
        grpc_keepalive_timeout: values.duration("grpc-keepalive-timeout"),
        max_learners: usize::try_from(values.int("max-learners")).unwrap_or(0),
        compaction_batch_limit: usize::try_from(eff.int("compaction-batch-limit")).unwrap_or(0),
        compaction_sleep_interval: eff.duration("compaction-sleep-interval"),
        corrupt_check_time: eff.duration("corrupt-check-time"),
        compact_hash_check_time: eff.duration("compact-hash-check-time"),
        feature_gates: gates,
    };
    Ok((cfg, not_yet))
}

/// etcd's `checkBindURLs`: a listen URL's host is an IP address or `localhost`.
fn check_bind_urls(urls: &[String]) -> Result<(), ConfigError> {
    for u in urls {
        let Some((scheme, rest)) = u.split_once("://") else {
            continue;
        };
        if scheme == "unix" || scheme == "unixs" {
            continue;
        }
        let host = host_of(rest);
        if host == "localhost" {
            continue;
        }
        if host.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "expected IP in URL for binding ({u})"
            )));
        }
    }
    Ok(())
}

/// etcd's `checkHostURLs`: an advertised URL has a host.
fn check_host_urls(urls: &[String]) -> Result<(), String> {
    for u in urls {
        let rest = u.split_once("://").map(|(_, r)| r).unwrap_or(u);
        if host_of(rest).is_empty() {
            return Err(format!("unexpected empty host ({u})"));
        }
    }
    Ok(())
}

/// The host of `host:port` or `[v6]:port`.
fn host_of(hostport: &str) -> &str {
    let hostport = hostport.trim_end_matches('/');
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split_once(']').map(|(h, _)| h).unwrap_or(rest);
    }
    hostport
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(hostport)
}

/// The JWT algorithms etcd's JWT library knows.
const JWT_METHODS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "ES512", "EdDSA",
];

/// etcd's `--auth-token` option string (`decomposeOpts`, `jwtOptions.Parse`), with etcd's errors. Key
/// files must exist; their contents are checked by whoever uses them.
pub(crate) fn parse_auth_token(s: &str) -> Result<AuthToken, String> {
    const INVALID: &str = "auth: invalid auth options";
    let mut parts = s.split(',');
    let kind = parts.next().unwrap_or("");
    let mut opts: BTreeMap<&str, &str> = BTreeMap::new();
    for p in parts {
        let kv: Vec<&str> = p.split('=').collect();
        if kv.len() != 2 || opts.insert(kv[0], kv[1]).is_some() {
            return Err(INVALID.into());
        }
    }
    match kind {
        "simple" => Ok(AuthToken::Simple),
        "jwt" => {
            if opts
                .keys()
                .any(|k| !matches!(*k, "sign-method" | "pub-key" | "priv-key" | "ttl"))
            {
                return Err(INVALID.into());
            }
            let ttl = match opts.get("ttl") {
                Some(t) if !t.is_empty() => server::config::parse_go_duration(t)?,
                _ => Duration::from_secs(300),
            };
            let file = |k: &str| -> Result<Option<PathBuf>, String> {
                match opts.get(k) {
                    Some(f) if !f.is_empty() => {
                        std::fs::metadata(f).map_err(|e| format!("open {f}: {e}"))?;
                        Ok(Some(PathBuf::from(f)))
                    }
                    _ => Ok(None),
                }
            };
            let pub_key = file("pub-key")?;
            let priv_key = file("priv-key")?;
            let method = opts.get("sign-method").copied().unwrap_or("");
            if !JWT_METHODS.contains(&method) {
                return Err("auth: invalid auth signature method".into());
            }
            let keyed = if method.starts_with("HS") {
                priv_key.is_some()
            } else {
                pub_key.is_some() || priv_key.is_some()
            };
            if !keyed {
                return Err("auth: missing key data".into());
            }
            Ok(AuthToken::Jwt {
                sign_method: method.to_string(),
                pub_key,
                priv_key,
                ttl,
            })
        }
        "" => Err("--auth-token '' (no tokens at all) is not supported".into()),
        _ => Err(INVALID.into()),
    }
}

#[cfg(test)]
mod tests;
