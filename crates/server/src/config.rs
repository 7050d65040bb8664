//! Server configuration, in etcd's terms. The binary fills it from flags and environment; the server only
//! reads it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::urls;

/// Everything a member needs to start. Field names follow etcd's flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    /// `name=url,name=url,...`
    pub initial_cluster: String,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub quota_backend_bytes: u64,
    pub snapshot_count: u64,
    /// Entries kept before a snapshot for slow followers (etcd's `--experimental-snapshot-catchup-entries`).
    pub snapshot_catchup_entries: u64,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    /// etcd's `--experimental-watch-progress-notify-interval`: how often a watcher that asked for
    /// progress notifications gets one while idle (0 keeps the default).
    pub watch_progress_notify_interval: Duration,
    /// Reject membership changes that could cost the cluster its quorum (etcd's default: on).
    pub strict_reconfig_check: bool,
    /// `--metrics extensive`: also the gRPC handling-time histograms (`basic`: without).
    pub metrics_extensive: bool,
    /// `--warning-unary-request-duration`: a unary request slower than this is logged (0: 300 ms).
    pub warning_unary_request_duration: Duration,
    /// `--warning-apply-duration`: an apply slower than this is logged and counted in
    /// `etcd_server_slow_apply_total` (0: 100 ms).
    pub warning_apply_duration: Duration,
    /// `--cors`: origins the client URLs' HTTP answers allow (`*`: any).
    pub cors: Vec<String>,
    /// `--host-whitelist`: `Host` names a client HTTP request over a plain-text connection may carry
    /// (`*`: any); requests over TLS are not checked.
    pub host_whitelist: Vec<String>,
    /// `--socket-reuse-port`: SO_REUSEPORT on every listener.
    pub socket_reuse_port: bool,
    /// `--socket-reuse-address`: SO_REUSEADDR on every listener.
    pub socket_reuse_address: bool,
    /// `--auto-compaction-mode` and `--auto-compaction-retention` (see [`parse_auto_compaction`]);
    /// none: no auto-compaction (etcd's default, a retention of 0).
    pub auto_compaction: Option<compactor::Retention>,
    /// `--listen-client-http-urls`: HTTP only (gateway, health, metrics) client URLs; when set,
    /// `listen_client_urls` serve gRPC only.
    pub listen_client_http_urls: Vec<String>,
    /// `--listen-metrics-urls`: URLs serving `/metrics`, `/health`, `/livez`, `/readyz` only.
    pub listen_metrics_urls: Vec<String>,
    // What follows is parsed by the `hearth` binary but not all of it is used by the server yet: the
    // binary refuses to start when a setting not wired yet is anything but its default (its table of
    // flags not wired yet), so whoever wires a feature reads its field here and removes its line from
    // that table.
    /// TLS of the client URLs (`--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`,
    /// ...; empty: no TLS), as etcd's `ClientTLSInfo`.
    pub client_tls: transport::TlsInfo,
    /// `--auto-tls`: self-signed client certificates under `<data-dir>/fixtures/client` when
    /// `client_tls` has none.
    pub client_auto_tls: bool,
    /// TLS of the peer URLs and of dialing peers (`--peer-*` flags), as etcd's `PeerTLSInfo`.
    pub peer_tls: transport::TlsInfo,
    /// `--peer-auto-tls`: self-signed peer certificates under `<data-dir>/fixtures/peer`.
    pub peer_auto_tls: bool,
    /// `--self-signed-cert-validity`, in years.
    pub self_signed_cert_validity: u32,
    /// `--auth-token`.
    pub auth_token: AuthToken,
    /// `--auth-token-ttl`: lifetime of a simple token.
    pub auth_token_ttl: Duration,
    /// `--bcrypt-cost`: cost factor of password hashes.
    pub bcrypt_cost: u32,
    /// `--force-new-cluster`: restart this member's data as a one-member cluster (disaster recovery).
    pub force_new_cluster: bool,
    /// `--unsafe-no-fsync`: never fsync (data loss on power failure).
    pub unsafe_no_fsync: bool,
    /// `--wal-dir`: a dedicated directory for the WAL (none: `<data-dir>/member/wal`).
    pub wal_dir: Option<PathBuf>,
    /// `--max-snapshots`: snapshot files (`*.snap`, `*.snap.db`) kept in `<data-dir>/member/snap`
    /// (0: all).
    pub max_snapshots: usize,
    /// `--max-wals`: WAL segment files kept once no longer needed (0: all).
    pub max_wals: usize,
    /// `--backend-batch-interval`: longest time before a backend commit is made durable (0: 100 ms).
    pub backend_batch_interval: Duration,
    /// `--backend-batch-limit`: most operations before a backend commit is made durable (0: 10000).
    pub backend_batch_limit: usize,
    /// `--max-concurrent-streams`: HTTP/2 streams a client connection may open at once.
    pub max_concurrent_streams: u32,
    /// `--grpc-keepalive-min-time`: clients pinging more often than this are disconnected.
    pub grpc_keepalive_min_time: Duration,
    /// `--grpc-keepalive-interval`: server-to-client ping period (0: off).
    pub grpc_keepalive_interval: Duration,
    /// `--grpc-keepalive-timeout`: how long a ping may go unanswered before the connection is closed.
    pub grpc_keepalive_timeout: Duration,
    /// `--max-learners`: most learners the membership may hold.
    pub max_learners: usize,
    /// `--compaction-batch-limit`: records deleted per compaction batch (0: 1000).
    pub compaction_batch_limit: usize,
    /// `--compaction-sleep-interval`: pause between compaction batches (0: 10 ms).
    pub compaction_sleep_interval: Duration,
    /// `--corrupt-check-time`: period of the cluster-wide corruption check (0: off).
    pub corrupt_check_time: Duration,
    /// `--compact-hash-check-time`: period of the leader's compaction hash check.
    pub compact_hash_check_time: Duration,
    /// `--feature-gates` (and the 3.5 `--experimental-*` switches): etcd's server feature gates, every
    /// known gate with its value, by etcd's name (`InitialCorruptCheck`, `CompactHashCheck`, ...).
    pub feature_gates: std::collections::BTreeMap<String, bool>,
}

/// etcd's `--auth-token`: how the tokens handed out by `Authenticate` are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthToken {
    /// `simple`: random tokens held by the member that issued them, valid for `auth_token_ttl`.
    Simple,
    /// `jwt,sign-method=<alg>[,pub-key=<file>][,priv-key=<file>][,ttl=<duration>]`: signed tokens.
    Jwt {
        /// A JWT algorithm name (`RS256`, `ES256`, `EdDSA`, `HS256`, ...).
        sign_method: String,
        pub_key: Option<PathBuf>,
        priv_key: Option<PathBuf>,
        /// Token lifetime (etcd's default: 5 minutes).
        ttl: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// etcd's default `--experimental-snapshot-catchup-entries`.
pub use raftnode::SNAPSHOT_CATCHUP_ENTRIES as DEFAULT_SNAPSHOT_CATCHUP_ENTRIES;
/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1572864;
/// etcd's default `--quota-backend-bytes` when the flag is 0: 2 GiB.
pub use apply::quota::DEFAULT_QUOTA_BACKEND_BYTES;
/// etcd's default `--warning-unary-request-duration`.
pub const DEFAULT_WARNING_UNARY_REQUEST_DURATION: Duration = Duration::from_millis(300);
/// etcd's default `--warning-apply-duration`.
pub const DEFAULT_WARNING_APPLY_DURATION: Duration = Duration::from_millis(100);
/// etcd's default `--experimental-watch-progress-notify-interval`: 10 minutes.
pub const DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "default".into(),
            data_dir: PathBuf::from("default.hearth"),
            listen_client_urls: vec!["http://localhost:2379".into()],
            advertise_client_urls: vec!["http://localhost:2379".into()],
            listen_peer_urls: vec!["http://localhost:2380".into()],
            initial_advertise_peer_urls: vec!["http://localhost:2380".into()],
            initial_cluster: "default=http://localhost:2380".into(),
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "etcd-cluster".into(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: 128,
            quota_backend_bytes: 0,
            snapshot_count: 10_000,
            snapshot_catchup_entries: DEFAULT_SNAPSHOT_CATCHUP_ENTRIES,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            watch_progress_notify_interval: DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL,
            strict_reconfig_check: true,
            metrics_extensive: false,
            warning_unary_request_duration: DEFAULT_WARNING_UNARY_REQUEST_DURATION,
            warning_apply_duration: DEFAULT_WARNING_APPLY_DURATION,
            cors: vec!["*".into()],
            host_whitelist: vec!["*".into()],
            socket_reuse_port: false,
            socket_reuse_address: false,
            auto_compaction: None,
            listen_client_http_urls: Vec::new(),
            listen_metrics_urls: Vec::new(),
            client_tls: transport::TlsInfo::default(),
            client_auto_tls: false,
            peer_tls: transport::TlsInfo::default(),
            peer_auto_tls: false,
            self_signed_cert_validity: 1,
            auth_token: AuthToken::Simple,
            auth_token_ttl: Duration::from_secs(300),
            bcrypt_cost: 10,
            force_new_cluster: false,
            unsafe_no_fsync: false,
            wal_dir: None,
            max_snapshots: 5,
            max_wals: 5,
            backend_batch_interval: Duration::ZERO,
            backend_batch_limit: 0,
            max_concurrent_streams: u32::MAX,
            grpc_keepalive_min_time: Duration::from_secs(5),
            grpc_keepalive_interval: Duration::from_secs(2 * 60 * 60),
            grpc_keepalive_timeout: Duration::from_secs(20),
            max_learners: membership::MAX_LEARNERS,
            compaction_batch_limit: 0,
            compaction_sleep_interval: Duration::ZERO,
            corrupt_check_time: Duration::ZERO,
            compact_hash_check_time: Duration::from_secs(60),
            feature_gates: std::collections::BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid URL {0:?}: {1}")]
    Url(String, &'static str),
    #[error("invalid --initial-cluster entry {0:?}: expected name=url")]
    InitialCluster(String),
    #[error("couldn't find local name {name:?} in the initial cluster configuration")]
    NameNotInCluster { name: String },
    #[error(
        "--initial-cluster has {cluster:?} for {name:?} but --initial-advertise-peer-urls is {advertised:?}"
    )]
    PeerUrlMismatch {
        name: String,
        cluster: Vec<String>,
        advertised: Vec<String>,
    },
    #[error("--election-timeout[{election:?}] should be at least 5 times as --heartbeat-interval[{heartbeat:?}]")]
    Timeouts {
        election: Duration,
        heartbeat: Duration,
    },
}

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub id: u64,
}

impl Config {
    /// The progress notification interval watchers get: 0 keeps the default, as etcd adjusts
    /// the interval only when it is given one above 0.
    pub fn progress_notify_interval(&self) -> Duration {
        match self.watch_progress_notify_interval {
            Duration::ZERO => DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL,
            d => d,
        }
    }

    /// Where the WAL is: `--wal-dir`, or `<data-dir>/member/wal` (etcd's `WALDir`).
    pub fn wal_dir(&self) -> PathBuf {
        match &self.wal_dir {
            Some(d) => d.clone(),
            None => self.data_dir.join("member").join("wal"),
        }
    }

    /// Where the backend (and etcd's snapshot files) are: `<data-dir>/member/snap`.
    pub fn snap_dir(&self) -> PathBuf {
        self.data_dir.join("member").join("snap")
    }

    /// etcd's `ReqTimeout`: how long a request may wait for Raft (5 s plus two election timeouts).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(5) + 2 * self.election_timeout
    }

    /// The quota actually in force: etcd treats 0 as its default.
    pub fn quota_bytes(&self) -> u64 {
        if self.quota_backend_bytes == 0 {
            DEFAULT_QUOTA_BACKEND_BYTES
        } else {
            self.quota_backend_bytes
        }
    }

    /// Parses `--initial-cluster` into members with their etcd-derived ids, sorted by id.
    pub fn initial_members(&self) -> Result<Vec<InitialMember>, ConfigError> {
        let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
        for part in self
            .initial_cluster
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (name, url) = part
                .split_once('=')
                .ok_or_else(|| ConfigError::InitialCluster(part.to_string()))?;
            let url = normalize_url(url)?;
            match by_name.iter_mut().find(|(n, _)| n == name) {
                Some((_, urls)) => urls.push(url),
                None => by_name.push((name.to_string(), vec![url])),
            }
        }
        let mut members: Vec<InitialMember> = by_name
            .into_iter()
            .map(|(name, peer_urls)| {
                let id = crate::ids::member_id(&peer_urls, &self.initial_cluster_token);
                InitialMember {
                    name,
                    peer_urls,
                    id,
                }
            })
            .collect();
        members.sort_by_key(|m| m.id);
        Ok(members)
    }

    /// Checks the flags that must agree with each other, as etcd does at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.election_timeout < self.heartbeat_interval * 5 {
            return Err(ConfigError::Timeouts {
                election: self.election_timeout,
                heartbeat: self.heartbeat_interval,
            });
        }
        let members = self.initial_members()?;
        let me = members
            .iter()
            .find(|m| m.name == self.name)
            .ok_or_else(|| ConfigError::NameNotInCluster {
                name: self.name.clone(),
            })?;
        let mut advertised = self
            .initial_advertise_peer_urls
            .iter()
            .map(|u| normalize_url(u))
            .collect::<Result<Vec<_>, _>>()?;
        advertised.sort();
        let mut cluster = me.peer_urls.clone();
        cluster.sort();
        if advertised != cluster {
            return Err(ConfigError::PeerUrlMismatch {
                name: self.name.clone(),
                cluster,
                advertised,
            });
        }
        for u in self
            .listen_client_urls
            .iter()
            .chain(&self.listen_peer_urls)
            .chain(&self.listen_client_http_urls)
            .chain(&self.listen_metrics_urls)
        {
            listen_addr(u)?;
        }
        Ok(())
    }
}

/// etcd's `parseCompactionRetention`: `--auto-compaction-retention` read in `--auto-compaction-mode`
/// (`periodic` or `revision`). A bare number is hours (periodic) or revisions (revision); otherwise a
/// Go duration. `None` for a zero retention (no auto-compaction).
pub fn parse_auto_compaction(
    mode: &str,
    retention: &str,
) -> Result<Option<compactor::Retention>, String> {
    let mode = compactor::Mode::parse(mode)
        .ok_or_else(|| format!("unknown auto-compaction-mode {mode:?}"))?;
    compactor::parse_retention(mode, retention, parse_go_duration)
}

/// Parses a duration in Go's `time.ParseDuration` syntax, as etcd's duration flags take it: an
/// optional sign and a sequence of decimal numbers with units (`ns`, `us`, `µs`, `ms`, `s`, `m`,
/// `h`), e.g. `10m`, `1h30m`, `1.5s`, `100ms`; a bare `0` is zero. Negative durations are
/// rejected (no etcd flag means anything by them).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("time: invalid duration {s:?}");
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err(format!("negative duration {s:?}"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {s:?}"))?;
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per = match unit {
            "ns" => 1e0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            _ => return Err(format!("time: unknown unit {unit:?} in duration {s:?}")),
        };
        total += value * nanos_per;
        rest = tail;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// Accepts `http://host:port` (or `https://`, `unix://`), without a path; returns it without a trailing
/// slash.
fn normalize_url(url: &str) -> Result<String, ConfigError> {
    let url = url.trim().trim_end_matches('/');
    let bad = |why| ConfigError::Url(url.to_string(), why);
    let uri = urls::parse(url).map_err(|e| match e {
        urls::UrlError::Scheme => bad("scheme must be http or https"),
        urls::UrlError::Shape => bad("expected scheme://host:port"),
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https" | "unix")) {
        return Err(bad("scheme must be http or https"));
    }
    Ok(url.to_string())
}

/// The socket address to bind for a listen URL. `localhost` binds the IPv4 loopback.
pub fn listen_addr(url: &str) -> Result<SocketAddr, ConfigError> {
    let url = normalize_url(url)?;
    let bad = |why| ConfigError::Url(url.clone(), why);
    let uri = urls::parse(&url).map_err(|_| bad("expected scheme://host:port"))?;
    let port = urls::port(&uri)
        .map_err(|()| bad("bad port"))?
        .ok_or_else(|| bad("a port is required"))?;
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let ip = if host == "localhost" {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        host.parse()
            .map_err(|_| bad("host must be an IP address or localhost"))?
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_notify_interval_of_zero_keeps_the_default() {
        let c = |d| Config {
            watch_progress_notify_interval: d,
            ..Config::default()
        };
        assert_eq!(
            c(Duration::ZERO).progress_notify_interval(),
            DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL
        );
        let second = Duration::from_secs(1);
        assert_eq!(c(second).progress_notify_interval(), second);
    }

    #[test]
    fn default_config_is_valid_and_single_member() {
        let c = Config::default();
        c.validate().unwrap();
        let m = c.initial_members().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name, "default");
    }

    #[test]
    fn rejects_name_missing_from_cluster() {
        let c = Config {
            name: "x".into(),
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::NameNotInCluster { .. })
        ));
    }

    #[test]
    fn go_durations_parse_as_go_does() {
        let d = |s| parse_go_duration(s);
        assert_eq!(d("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(d("10m0s"), Ok(Duration::from_secs(600)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("2us"), Ok(Duration::from_micros(2)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        assert!(d("").is_err());
        assert!(d("10").is_err());
        assert!(d("5x").is_err());
        assert!(d("-1s").is_err());
        assert!(d("s").is_err());
    }

    #[test]
    fn listen_addr_parses_forms() {
        assert_eq!(
            listen_addr("http://localhost:2379").unwrap().to_string(),
            "127.0.0.1:2379"
        );
        assert_eq!(
            listen_addr("http://[::1]:1/").unwrap().to_string(),
            "[::1]:1"
        );
        assert!(listen_addr("http://host.example:1").is_err());
        assert!(listen_addr("ftp://127.0.0.1:1").is_err());
        assert!(listen_addr("http://127.0.0.1").is_err());
        assert!(listen_addr("http://127.0.0.1:1/path").is_err());
        assert!(listen_addr("unix://sock").is_err());
    }
}
