//! etcd's member flags, 3.5 and 3.6 together, and the command line parsed the way Go's `flag` package
//! parses it (etcd's `server/etcdmain/config.go`, `server/embed/config.go`, `pkg/flags`).
//!
//! One table ([`FLAGS`]) says, for every flag, its name, type, default and help; the command line, the
//! environment (`env`) and the configuration file (`config_file`) all produce [`Values`] against it, so the
//! three sources cannot disagree on a name or a type. What a flag *means* is decided later, in `member`;
//! which flags Hearth parses but does not act on yet is decided in `unsupported`.
//!
//! Go's syntax, which etcd's users type: `-name value`, `--name value`, `-name=value`, `--name=value`; a
//! boolean takes its value only after `=` (`--client-cert-auth=false`; a bare `--client-cert-auth` is
//! true); `--` ends the flags; the first argument that is not a flag ends them too, and etcd then refuses
//! it. A flag given twice keeps its last value. Lists are comma separated; URL lists are checked, sorted
//! and de-duplicated as etcd's `types.NewURLs` does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::notice::Notices;

/// The type of a flag's value, as etcd declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Bool,
    /// Go `uint`/`uint64`.
    Uint,
    /// Go `uint32` (`--max-concurrent-streams`).
    Uint32,
    /// Go `int`/`int64`.
    Int,
    /// Go `time.Duration` syntax (`10m`, `1h30m`, `500ms`).
    Duration,
    /// Comma-separated URLs: checked, sorted, unique.
    Urls,
    /// `--cors`: URLs or `*`.
    Cors,
    /// Comma-separated strings, kept as given.
    Strings,
    /// Comma-separated strings, sorted and unique.
    UniqueStrings,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// `Name=bool,...` over etcd's feature gates.
    FeatureGates,
    /// A flag of etcd 0.4 that etcd still accepts and ignores (with or without a value).
    Ignored,
}

impl Kind {
    /// Go's `IsBoolFlag`: the value may be omitted and can only be given after `=`.
    fn is_bool(self) -> bool {
        matches!(self, Kind::Bool | Kind::Ignored)
    }
}

/// Where a flag comes from, for the help text and for what the command line accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// etcd 3.5 and 3.6.
    Both,
    /// etcd 3.5 only (gone in 3.6); accepted for old command lines.
    Etcd35,
    /// New in etcd 3.6.
    Etcd36,
    /// Hearth's own, hidden from the help (test switches).
    Hearth,
    /// Only a configuration file key (etcd has no flag for it).
    FileOnly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Section {
    Member,
    Clustering,
    Security,
    Auth,
    Monitoring,
    Logging,
    Tracing,
    Experimental,
    Unsafe,
    Legacy,
}

impl Section {
    fn title(self) -> &'static str {
        match self {
            Section::Member => "Member",
            Section::Clustering => "Clustering",
            Section::Security => "Security",
            Section::Auth => "Auth",
            Section::Monitoring => "Profiling and Monitoring",
            Section::Logging => "Logging",
            Section::Tracing => "Distributed tracing",
            Section::Experimental => "Experimental and tuning",
            Section::Unsafe => "Unsafe",
            Section::Legacy => "etcd 3.5 v2 API and proxy (accepted only with their defaults)",
        }
    }
    const ALL: [Section; 10] = [
        Section::Member,
        Section::Clustering,
        Section::Security,
        Section::Auth,
        Section::Monitoring,
        Section::Logging,
        Section::Tracing,
        Section::Experimental,
        Section::Unsafe,
        Section::Legacy,
    ];
}

/// One flag of the table.
#[derive(Debug)]
pub(crate) struct Flag {
    pub name: &'static str,
    pub kind: Kind,
    /// The default in the flag's own syntax.
    pub default: &'static str,
    pub section: Section,
    pub origin: Origin,
    pub help: &'static str,
}

const fn flag(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    section: Section,
    origin: Origin,
    help: &'static str,
) -> Flag {
    Flag {
        name,
        kind,
        default,
        section,
        origin,
        help,
    }
}

use Kind::*;
use Origin::*;
use Section::*;

const CLUSTER_STATES: &[&str] = &["new", "existing"];
const FALLBACKS: &[&str] = &["exit", "proxy"];
const PROXY_MODES: &[&str] = &["off", "readonly", "on"];
const V2_DEPRECATION: &[&str] = &["not-yet", "write-only", "write-only-drop-data", "gone"];

/// etcd's default `--log-rotation-config-json`.
pub(crate) const DEFAULT_LOG_ROTATION_CONFIG: &str =
    r#"{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}"#;

/// Every flag etcd 3.5 or 3.6 accepts, and Hearth's own. Order is the help's order.
pub(crate) static FLAGS: &[Flag] = &[
    // Member
    flag("name", Str, "default", Member, Both, "Human-readable name of this member."),
    flag("data-dir", Str, "", Member, Both, "Directory of this member's data (default: <name>.hearth)."),
    flag("wal-dir", Str, "", Member, Both, "A separate directory for the write-ahead log."),
    flag("snapshot-count", Uint, "10000", Member, Both, "Committed entries between two snapshots of the Raft log (deprecated in etcd 3.6)."),
    flag("heartbeat-interval", Uint, "100", Member, Both, "Milliseconds between two heartbeats of the leader."),
    flag("election-timeout", Uint, "1000", Member, Both, "Milliseconds a follower waits for the leader before starting an election."),
    flag("initial-election-tick-advance", Bool, "true", Member, Both, "Fast-forward election ticks at start so that the first election happens sooner."),
    flag("listen-peer-urls", Urls, "http://localhost:2380", Member, Both, "URLs to listen on for traffic from the other members."),
    flag("listen-client-urls", Urls, "http://localhost:2379", Member, Both, "URLs to listen on for client gRPC traffic (and HTTP unless --listen-client-http-urls is given)."),
    flag("listen-client-http-urls", Urls, "", Member, Both, "URLs to listen on for client HTTP traffic only; takes HTTP off --listen-client-urls."),
    flag("max-snapshots", Uint, "5", Member, Both, "Snapshot files to keep, 0 for all (deprecated in etcd 3.6)."),
    flag("max-wals", Uint, "5", Member, Both, "Write-ahead log files to keep, 0 for all."),
    flag("memory-mlock", Bool, "false", Member, Etcd36, "Lock the member's memory so that it is never swapped out."),
    flag("quota-backend-bytes", Int, "0", Member, Both, "Size of the backend above which a NOSPACE alarm makes the member read-only (0: 2 GiB)."),
    flag("backend-bbolt-freelist-type", Str, "", Member, Both, "bbolt's freelist type, map or array (etcd's bbolt backend only)."),
    flag("backend-batch-interval", Duration, "0s", Member, Both, "Longest time before a backend commit is made durable (0: 100ms)."),
    flag("backend-batch-limit", Int, "0", Member, Both, "Most operations before a backend commit is made durable (0: 10000)."),
    flag("max-txn-ops", Uint, "128", Member, Both, "Most operations one transaction may hold."),
    flag("max-request-bytes", Uint, "1572864", Member, Both, "Largest client request, in bytes."),
    flag("max-concurrent-streams", Uint32, "4294967295", Member, Both, "Most HTTP/2 streams one client connection may have open at once."),
    flag("grpc-keepalive-min-time", Duration, "5s", Member, Both, "Shortest interval at which a client may ping; faster pingers are disconnected."),
    flag("grpc-keepalive-interval", Duration, "2h", Member, Both, "Interval of the server's pings to a client connection (0: none)."),
    flag("grpc-keepalive-timeout", Duration, "20s", Member, Both, "How long an unanswered ping is waited for before the connection is closed (0: forever)."),
    flag("socket-reuse-port", Bool, "false", Member, Both, "Set SO_REUSEPORT on listeners."),
    flag("socket-reuse-address", Bool, "false", Member, Both, "Set SO_REUSEADDR on listeners."),
    flag("enable-grpc-gateway", Bool, "true", Member, Both, "Serve the JSON gateway (/v3/...) on the client URLs."),
    flag("raft-read-timeout", Duration, "5s", Member, Both, "Read timeout of connections between members."),
    flag("raft-write-timeout", Duration, "5s", Member, Both, "Write timeout of connections between members."),
    flag("feature-gates", FeatureGates, "", Member, Etcd36, "Feature switches, as Name=true|false,... (see below)."),
    // Clustering
    flag("initial-advertise-peer-urls", Urls, "http://localhost:2380", Clustering, Both, "This member's peer URLs, as the other members should reach them."),
    flag("initial-cluster", Str, "default=http://localhost:2380", Clustering, Both, "The members of a new cluster, as name=peer-url,..."),
    flag("initial-cluster-state", Choice(CLUSTER_STATES), "new", Clustering, Both, "new: bootstrap a new cluster; existing: join one (after `member add`). Ignored once the member has data."),
    flag("initial-cluster-token", Str, "etcd-cluster", Clustering, Both, "A token that makes the ids of a new cluster unique."),
    flag("advertise-client-urls", Urls, "http://localhost:2379", Clustering, Both, "This member's client URLs, as published to clients (required with --listen-client-urls)."),
    flag("discovery", Str, "", Clustering, Both, "URL of an etcd v2 discovery service to bootstrap with."),
    flag("discovery-token", Str, "", Clustering, Etcd36, "v3 discovery: the cluster's token."),
    flag("discovery-endpoints", UniqueStrings, "", Clustering, Etcd36, "v3 discovery: gRPC endpoints of the discovery service."),
    flag("discovery-dial-timeout", Duration, "2s", Clustering, Etcd36, "v3 discovery: dial timeout."),
    flag("discovery-request-timeout", Duration, "5s", Clustering, Etcd36, "v3 discovery: request timeout."),
    flag("discovery-keepalive-time", Duration, "2s", Clustering, Etcd36, "v3 discovery: keepalive time."),
    flag("discovery-keepalive-timeout", Duration, "6s", Clustering, Etcd36, "v3 discovery: keepalive timeout."),
    flag("discovery-insecure-transport", Bool, "true", Clustering, Etcd36, "v3 discovery: connect without TLS."),
    flag("discovery-insecure-skip-tls-verify", Bool, "false", Clustering, Etcd36, "v3 discovery: do not verify the server's certificate."),
    flag("discovery-cert", Str, "", Clustering, Etcd36, "v3 discovery: client certificate."),
    flag("discovery-key", Str, "", Clustering, Etcd36, "v3 discovery: client key."),
    flag("discovery-cacert", Str, "", Clustering, Etcd36, "v3 discovery: CA bundle."),
    flag("discovery-user", Str, "", Clustering, Etcd36, "v3 discovery: user[:password]."),
    flag("discovery-password", Str, "", Clustering, Etcd36, "v3 discovery: password."),
    flag("discovery-fallback", Choice(FALLBACKS), "exit", Clustering, Both, "What to do when discovery fails: exit (proxy is gone)."),
    flag("discovery-proxy", Str, "", Clustering, Both, "HTTP proxy for the discovery service."),
    flag("discovery-srv", Str, "", Clustering, Both, "DNS domain whose SRV records list the initial cluster."),
    flag("discovery-srv-name", Str, "", Clustering, Both, "Suffix of the SRV service names queried with --discovery-srv."),
    flag("strict-reconfig-check", Bool, "true", Clustering, Both, "Refuse membership changes that could cost the cluster its quorum."),
    flag("pre-vote", Bool, "true", Clustering, Both, "Run Raft's pre-vote phase, so a member back from a partition does not disrupt the leader."),
    flag("auto-compaction-retention", Str, "0", Clustering, Both, "History kept by auto compaction: a duration (periodic; bare numbers are hours) or a revision count; 0 disables it."),
    flag("auto-compaction-mode", Str, "periodic", Clustering, Both, "periodic or revision: how --auto-compaction-retention is read."),
    flag("v2-deprecation", Choice(V2_DEPRECATION), "write-only", Clustering, Both, "v2 store deprecation stage; deprecated, the default is enforced."),
    // Security
    flag("cert-file", Str, "", Security, Both, "Certificate served on the client URLs."),
    flag("key-file", Str, "", Security, Both, "Key of --cert-file."),
    flag("client-cert-auth", Bool, "false", Security, Both, "Require client certificates signed by --trusted-ca-file; their CN is the user."),
    flag("client-cert-file", Str, "", Security, Both, "Certificate presented when this member connects as a client (default: --cert-file)."),
    flag("client-key-file", Str, "", Security, Both, "Key of --client-cert-file."),
    flag("client-crl-file", Str, "", Security, Both, "Revocation list checked against client certificates."),
    flag("client-cert-allowed-hostname", Strings, "", Security, Both, "Accept only client certificates valid for one of these hostnames."),
    flag("trusted-ca-file", Str, "", Security, Both, "CA bundle that client certificates must chain to."),
    flag("auto-tls", Bool, "false", Security, Both, "Serve the client URLs with a generated self-signed certificate."),
    flag("peer-cert-file", Str, "", Security, Both, "Certificate served on the peer URLs and presented to other members."),
    flag("peer-key-file", Str, "", Security, Both, "Key of --peer-cert-file."),
    flag("peer-client-cert-auth", Bool, "false", Security, Both, "Require certificates signed by --peer-trusted-ca-file from other members."),
    flag("peer-client-cert-file", Str, "", Security, Both, "Certificate presented when dialing other members (default: --peer-cert-file)."),
    flag("peer-client-key-file", Str, "", Security, Both, "Key of --peer-client-cert-file."),
    flag("peer-trusted-ca-file", Str, "", Security, Both, "CA bundle that other members' certificates must chain to."),
    flag("peer-cert-allowed-cn", Strings, "", Security, Both, "Accept only peer certificates with one of these common names."),
    flag("peer-cert-allowed-hostname", Strings, "", Security, Both, "Accept only peer certificates valid for one of these hostnames."),
    flag("peer-auto-tls", Bool, "false", Security, Both, "Serve the peer URLs with a generated self-signed certificate."),
    flag("self-signed-cert-validity", Uint, "1", Security, Both, "Validity of generated certificates, in years."),
    flag("peer-crl-file", Str, "", Security, Both, "Revocation list checked against other members' certificates."),
    flag("cipher-suites", Strings, "", Security, Both, "TLS 1.2 cipher suites to offer, by Go's names (empty: the library's choice)."),
    flag("experimental-peer-skip-client-san-verification", Bool, "false", Security, Both, "Deprecated name of --peer-skip-client-san-verification."),
    flag("peer-skip-client-san-verification", Bool, "false", Security, Etcd36, "Do not check that a member's certificate names the address it connects from."),
    flag("cors", Cors, "*", Security, Both, "Origins allowed by CORS on the HTTP endpoints (* or empty: all)."),
    flag("host-whitelist", UniqueStrings, "*", Security, Both, "Host headers accepted on plain-HTTP client URLs (* or empty: all)."),
    flag("tls-min-version", Str, "TLS1.2", Security, Both, "Lowest TLS version accepted: TLS1.2 or TLS1.3."),
    flag("tls-max-version", Str, "", Security, Both, "Highest TLS version accepted: TLS1.2 or TLS1.3 (empty: the highest supported)."),
    // Auth
    flag("auth-token", Str, "simple", Auth, Both, "Token kind and options: simple, or jwt,sign-method=...,pub-key=...,priv-key=...,ttl=..."),
    flag("bcrypt-cost", Uint, "10", Auth, Both, "bcrypt cost factor of password hashes (4 to 31)."),
    flag("auth-token-ttl", Uint, "300", Auth, Both, "Lifetime of a simple token, in seconds."),
    // Profiling and monitoring
    flag("enable-pprof", Bool, "false", Monitoring, Both, "Serve runtime profiles under /debug/pprof/ (etcd's Go runtime only)."),
    flag("metrics", Str, "basic", Monitoring, Both, "Detail of the exported metrics: basic, or extensive for gRPC latency histograms."),
    flag("listen-metrics-urls", Urls, "", Monitoring, Both, "More URLs serving /metrics, /health, /livez and /readyz only."),
    // Logging
    flag("logger", Str, "zap", Logging, Both, "The logger: zap (structured; the only one left since etcd 3.5)."),
    flag("log-outputs", UniqueStrings, "default", Logging, Both, "Where logs go: default (stderr), stderr, stdout, systemd/journal, or file paths, comma separated."),
    flag("log-level", Str, "info", Logging, Both, "Least severe level logged: debug, info, warn, error, panic or fatal."),
    flag("log-format", Str, "json", Logging, Etcd36, "json (one object per line, zap's field names) or console."),
    flag("enable-log-rotation", Bool, "false", Logging, Both, "Rotate the log file (needs exactly one file in --log-outputs)."),
    flag("log-rotation-config-json", Str, DEFAULT_LOG_ROTATION_CONFIG, Logging, Both, "Rotation settings: maxsize (MB), maxage (days), maxbackups, localtime, compress."),
    flag("warning-unary-request-duration", Duration, "0s", Logging, Etcd36, "Log a warning for unary requests slower than this (0: 300ms)."),
    flag("experimental-warning-unary-request-duration", Duration, "0s", Logging, Etcd36, "Deprecated name of --warning-unary-request-duration."),
    // Distributed tracing
    flag("experimental-enable-distributed-tracing", Bool, "false", Tracing, Both, "Deprecated name of --enable-distributed-tracing."),
    flag("enable-distributed-tracing", Bool, "false", Tracing, Etcd36, "Send OpenTelemetry traces."),
    flag("experimental-distributed-tracing-address", Str, "localhost:4317", Tracing, Both, "Deprecated name of --distributed-tracing-address."),
    flag("distributed-tracing-address", Str, "localhost:4317", Tracing, Etcd36, "Address of the OpenTelemetry collector."),
    flag("experimental-distributed-tracing-service-name", Str, "etcd", Tracing, Both, "Deprecated name of --distributed-tracing-service-name."),
    flag("distributed-tracing-service-name", Str, "etcd", Tracing, Etcd36, "Service name in traces; the same on every member."),
    flag("experimental-distributed-tracing-instance-id", Str, "", Tracing, Both, "Deprecated name of --distributed-tracing-instance-id."),
    flag("distributed-tracing-instance-id", Str, "", Tracing, Etcd36, "Instance id in traces; unique per member."),
    flag("experimental-distributed-tracing-sampling-rate", Int, "0", Tracing, Both, "Deprecated name of --distributed-tracing-sampling-rate."),
    flag("distributed-tracing-sampling-rate", Int, "0", Tracing, Etcd36, "Spans sampled per million."),
    // Experimental and tuning
    flag("experimental-initial-corrupt-check", Bool, "false", Experimental, Both, "Check data for corruption before serving (3.6: --feature-gates=InitialCorruptCheck=true)."),
    flag("experimental-corrupt-check-time", Duration, "0s", Experimental, Both, "Deprecated name of --corrupt-check-time."),
    flag("corrupt-check-time", Duration, "0s", Experimental, Etcd36, "Period of the cluster-wide corruption check (0: off)."),
    flag("experimental-compact-hash-check-enabled", Bool, "false", Experimental, Both, "Let the leader compare followers' compaction hashes (3.6: --feature-gates=CompactHashCheck=true)."),
    flag("experimental-compact-hash-check-time", Duration, "1m", Experimental, Both, "Deprecated name of --compact-hash-check-time."),
    flag("compact-hash-check-time", Duration, "1m", Experimental, Etcd36, "Period of the leader's compaction hash check."),
    flag("experimental-enable-lease-checkpoint", Bool, "false", Experimental, Both, "Checkpoint remaining lease TTLs so a leader change does not reset them (3.6: LeaseCheckpoint gate)."),
    flag("experimental-enable-lease-checkpoint-persist", Bool, "false", Experimental, Both, "Persist lease checkpoints (3.6: LeaseCheckpointPersist gate)."),
    flag("experimental-compaction-batch-limit", Int, "0", Experimental, Both, "Deprecated name of --compaction-batch-limit."),
    flag("compaction-batch-limit", Int, "0", Experimental, Etcd36, "Revisions deleted per compaction batch (0: 1000)."),
    flag("experimental-compaction-sleep-interval", Duration, "0s", Experimental, Both, "Deprecated name of --compaction-sleep-interval."),
    flag("compaction-sleep-interval", Duration, "0s", Experimental, Etcd36, "Pause between compaction batches (0: 10ms)."),
    flag("experimental-watch-progress-notify-interval", Duration, "10m", Experimental, Both, "Deprecated name of --watch-progress-notify-interval."),
    flag("watch-progress-notify-interval", Duration, "10m", Experimental, Etcd36, "Period of progress notifications to idle watchers that asked for them."),
    flag("experimental-warning-apply-duration", Duration, "100ms", Experimental, Both, "Deprecated name of --warning-apply-duration."),
    flag("warning-apply-duration", Duration, "100ms", Experimental, Etcd36, "Log a warning for entries that take longer than this to apply."),
    flag("experimental-txn-mode-write-with-shared-buffer", Bool, "true", Experimental, Both, "Let write transactions read through the shared buffer (3.6: TxnModeWriteWithSharedBuffer gate)."),
    flag("experimental-bootstrap-defrag-threshold-megabytes", Uint, "0", Experimental, Both, "Deprecated name of --bootstrap-defrag-threshold-megabytes."),
    flag("bootstrap-defrag-threshold-megabytes", Uint, "0", Experimental, Etcd36, "Defragment at start when that frees at least this many megabytes (0: never)."),
    flag("max-learners", Int, "1", Experimental, Etcd36, "Most learners the cluster may have."),
    flag("experimental-downgrade-check-time", Duration, "5s", Experimental, Both, "Deprecated name of --downgrade-check-time."),
    flag("downgrade-check-time", Duration, "5s", Experimental, Etcd36, "Period of the downgrade status check."),
    flag("experimental-memory-mlock", Bool, "false", Experimental, Both, "Deprecated name of --memory-mlock."),
    flag("experimental-snapshot-catchup-entries", Uint, "5000", Experimental, Both, "Deprecated name of --snapshot-catchup-entries."),
    flag("snapshot-catchup-entries", Uint, "5000", Experimental, Etcd36, "Raft log entries kept after a snapshot so that slow followers can catch up."),
    flag("experimental-stop-grpc-service-on-defrag", Bool, "false", Experimental, Both, "Report NOT_SERVING on gRPC health while defragmenting (3.6: StopGRPCServiceOnDefrag gate)."),
    // Unsafe
    flag("force-new-cluster", Bool, "false", Unsafe, Both, "Restart this member's data as a cluster of this member alone (disaster recovery)."),
    flag("unsafe-no-fsync", Bool, "false", Unsafe, Both, "Never fsync: data is lost on power failure."),
    // etcd 3.5's v2 API and v2 proxy
    flag("enable-v2", Bool, "false", Legacy, Etcd35, "Serve the v2 API (removed in etcd 3.6; Hearth has none)."),
    flag("experimental-enable-v2v3", Str, "", Legacy, Etcd35, "Serve v2 emulated on v3 under this prefix (removed in etcd 3.6)."),
    flag("proxy", Choice(PROXY_MODES), "off", Legacy, Etcd35, "Run as a v2 proxy: off, readonly or on (removed in etcd 3.6)."),
    flag("proxy-failure-wait", Uint, "5000", Legacy, Etcd35, "v2 proxy: milliseconds a failed endpoint is avoided."),
    flag("proxy-refresh-interval", Uint, "30000", Legacy, Etcd35, "v2 proxy: milliseconds between endpoint refreshes."),
    flag("proxy-dial-timeout", Uint, "1000", Legacy, Etcd35, "v2 proxy: dial timeout in milliseconds."),
    flag("proxy-write-timeout", Uint, "5000", Legacy, Etcd35, "v2 proxy: write timeout in milliseconds."),
    flag("proxy-read-timeout", Uint, "0", Legacy, Etcd35, "v2 proxy: read timeout in milliseconds."),
    // The configuration file, and keys only a configuration file has.
    flag("config-file", Str, "", Member, Both, "Read the configuration from this YAML file (etcd's keys); other flags and environment variables are then ignored."),
    flag("client-cert-allowed-cn", Strings, "", Security, FileOnly, "client-transport-security.allowed-cn"),
    flag("client-skip-client-san-verification", Bool, "false", Security, FileOnly, "client-transport-security.skip-client-san-verification"),
    flag("discovery-config", Str, "", Clustering, FileOnly, "discovery-config"),
    // etcd 0.4's flags, still accepted and ignored by etcd.
    flag("cluster-active-size", Ignored, "", Legacy, Hearth, ""),
    flag("cluster-remove-delay", Ignored, "", Legacy, Hearth, ""),
    flag("cluster-sync-interval", Ignored, "", Legacy, Hearth, ""),
    flag("config", Ignored, "", Legacy, Hearth, ""),
    flag("force", Ignored, "", Legacy, Hearth, ""),
    flag("max-result-buffer", Ignored, "", Legacy, Hearth, ""),
    flag("max-retry-attempts", Ignored, "", Legacy, Hearth, ""),
    flag("peer-heartbeat-interval", Ignored, "", Legacy, Hearth, ""),
    flag("peer-election-timeout", Ignored, "", Legacy, Hearth, ""),
    flag("retry-interval", Ignored, "", Legacy, Hearth, ""),
    flag("snapshot", Ignored, "", Legacy, Hearth, ""),
    flag("v", Ignored, "", Legacy, Hearth, ""),
    flag("vv", Ignored, "", Legacy, Hearth, ""),
];

/// The flag of that name (command line, environment and file share the table).
pub(crate) fn lookup(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.name == name)
}

/// A parsed value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Str(String),
    Bool(bool),
    Uint(u64),
    Int(i64),
    Duration(Duration),
    List(Vec<String>),
    Gates(Gates),
}

/// `--feature-gates` as given: the text (etcd checks it with a substring test) and the pairs.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Gates {
    pub raw: String,
    pub pairs: Vec<(String, bool)>,
}

/// Parses `s` as a value of `kind`, with the error text Go's `flag` package or etcd's value types give.
pub(crate) fn parse_value(kind: Kind, s: &str) -> Result<Value, String> {
    Ok(match kind {
        Str => Value::Str(s.to_string()),
        Bool => Value::Bool(parse_bool(s).ok_or("parse error")?),
        Uint => Value::Uint(parse_uint(s, u64::MAX)?),
        Uint32 => Value::Uint(parse_uint(s, u32::MAX as u64)?),
        Int => Value::Int(parse_int(s)?),
        Kind::Duration => Value::Duration(server::config::parse_go_duration(s)?),
        Urls => Value::List(parse_urls(s)?),
        Cors => {
            if s == "*" || s.is_empty() {
                Value::List(vec![s.to_string()])
            } else {
                Value::List(parse_urls(s)?)
            }
        }
        Strings => Value::List(if s.is_empty() {
            Vec::new()
        } else {
            s.split(',').map(str::to_string).collect()
        }),
        UniqueStrings => {
            let mut v: Vec<String> = s
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            v.sort();
            v.dedup();
            Value::List(v)
        }
        Choice(valid) => {
            if !valid.contains(&s) {
                return Err(format!("invalid value {s:?}"));
            }
            Value::Str(s.to_string())
        }
        FeatureGates => Value::Gates(crate::features::parse(s)?),
        Ignored => Value::Str(String::new()),
    })
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseUint(s, 0, bits)`: decimal, `0x`, `0o`/`0`, `0b`, underscores between digits.
fn parse_uint(s: &str, max: u64) -> Result<u64, String> {
    let (digits, radix) = if let Some(r) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (r, 16)
    } else if let Some(r) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        (r, 2)
    } else if let Some(r) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
        (r, 8)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    if clean.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || clean.starts_with('+')
    {
        return Err("parse error".into());
    }
    match u64::from_str_radix(&clean, radix) {
        Ok(v) if v <= max => Ok(v),
        Ok(_) => Err("value out of range".into()),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
            Err("value out of range".into())
        }
        Err(_) => Err("parse error".into()),
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`.
fn parse_int(s: &str) -> Result<i64, String> {
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = parse_uint(rest, u64::MAX)?;
    if neg {
        if v > i64::MAX as u64 + 1 {
            return Err("value out of range".into());
        }
        Ok((v as i128).wrapping_neg() as i64)
    } else {
        i64::try_from(v).map_err(|_| "value out of range".to_string())
    }
}

/// etcd's `types.NewURLs` on a comma-separated list: each URL `http`/`https` with `host:port` and no
/// path, or `unix`/`unixs`; sorted and de-duplicated (etcd's URL flags keep a set).
pub(crate) fn parse_urls(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for raw in s.split(',') {
        let u = raw.trim();
        let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
        match scheme {
            "http" | "https" => {
                let (host, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, ""),
                };
                if !is_host_port(host) {
                    return Err(format!(
                        "URL address does not have the form \"host:port\": {u}"
                    ));
                }
                if !path.is_empty() {
                    return Err(format!("URL must not contain a path: {u}"));
                }
            }
            "unix" | "unixs" => {}
            _ => {
                return Err(format!(
                    "URL scheme must be http, https, unix, or unixs: {u}"
                ))
            }
        }
        out.push(u.to_string());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Go's `net.SplitHostPort` succeeding: `host:port` or `[v6]:port` (host and port may be empty).
fn is_host_port(s: &str) -> bool {
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((_, after)) => after.starts_with(':') && !after[1..].contains(':'),
            None => false,
        };
    }
    matches!(s.matches(':').count(), 1) && !s.contains('[') && !s.contains(']')
}

/// Values set explicitly, by flag name; everything else is the table's default. `explicit` is etcd's
/// `FlagsExplicitlySet`: what the command line, the environment or the file named.
#[derive(Clone, Debug, Default)]
pub(crate) struct Values {
    set: BTreeMap<&'static str, Value>,
}

impl Values {
    pub(crate) fn set(&mut self, flag: &'static Flag, v: Value) {
        self.set.insert(flag.name, v);
    }

    pub(crate) fn is_set(&self, name: &str) -> bool {
        self.set.contains_key(name)
    }

    /// The names set explicitly.
    pub(crate) fn explicit(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.set.keys().copied()
    }

    /// The value in force: the one set, or the default.
    pub(crate) fn get(&self, name: &str) -> Value {
        if let Some(v) = self.set.get(name) {
            return v.clone();
        }
        default_of(name)
    }

    /// Whether the value in force differs from the default.
    pub(crate) fn differs_from_default(&self, name: &str) -> bool {
        self.set.get(name).is_some_and(|v| *v != default_of(name))
    }

    pub(crate) fn str(&self, name: &str) -> String {
        match self.get(name) {
            Value::Str(s) => s,
            other => unreachable_kind(name, &other),
        }
    }

    pub(crate) fn bool(&self, name: &str) -> bool {
        match self.get(name) {
            Value::Bool(b) => b,
            other => unreachable_kind(name, &other),
        }
    }

    pub(crate) fn uint(&self, name: &str) -> u64 {
        match self.get(name) {
            Value::Uint(v) => v,
            other => unreachable_kind(name, &other),
        }
    }

    pub(crate) fn int(&self, name: &str) -> i64 {
        match self.get(name) {
            Value::Int(v) => v,
            other => unreachable_kind(name, &other),
        }
    }

    pub(crate) fn duration(&self, name: &str) -> Duration {
        match self.get(name) {
            Value::Duration(v) => v,
            other => unreachable_kind(name, &other),
        }
    }

    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        match self.get(name) {
            Value::List(v) => v,
            other => unreachable_kind(name, &other),
        }
    }

    pub(crate) fn gates(&self) -> Gates {
        match self.get("feature-gates") {
            Value::Gates(g) => g,
            other => unreachable_kind("feature-gates", &other),
        }
    }
}

/// A typed accessor used on a flag of another type: a bug in this crate's own table, never input.
fn unreachable_kind(name: &str, v: &Value) -> ! {
    panic!("flag --{name} read with the wrong type (its value is {v:?})")
}

fn default_of(name: &str) -> Value {
    let Some(f) = lookup(name) else {
        panic!("no flag --{name} in the table");
    };
    match (f.kind, f.default) {
        (Urls | Strings | UniqueStrings, "") => Value::List(Vec::new()),
        (kind, d) => parse_value(kind, d)
            .unwrap_or_else(|e| panic!("default of --{name} does not parse: {e}")),
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Command {
    /// Run a member with these values (as given on the command line).
    Run(Values),
    Help,
    Version,
}

/// A command line that cannot be parsed: Go's `flag` prints the message and exits with status 2.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UsageError(pub String);

/// Parses the arguments (without the program name) as Go's `flag.FlagSet.Parse` does for etcd.
pub(crate) fn parse_args(args: &[String], notices: &mut Notices) -> Result<Command, UsageError> {
    let mut values = Values::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            break;
        }
        if arg.len() < 2 || !arg.starts_with('-') {
            i -= 1;
            break;
        }
        let body = arg.strip_prefix("--").unwrap_or_else(|| &arg[1..]);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(UsageError(format!("bad flag syntax: {arg}")));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        if name == "help" || name == "h" {
            return Ok(Command::Help);
        }
        if name == "version" {
            let on = match inline {
                None => true,
                Some(v) => parse_bool(v).ok_or_else(|| {
                    UsageError(format!(
                        "invalid boolean value {v:?} for -version: parse error"
                    ))
                })?,
            };
            if on {
                return Ok(Command::Version);
            }
            continue;
        }
        let Some(flag) = lookup(name).filter(|f| f.origin != Origin::FileOnly) else {
            return Err(UsageError(format!(
                "flag provided but not defined: -{name}"
            )));
        };
        let text = if flag.kind.is_bool() {
            match inline {
                Some(v) => v.to_string(),
                None => "true".to_string(),
            }
        } else {
            match inline {
                Some(v) => v.to_string(),
                None => {
                    let Some(v) = args.get(i) else {
                        return Err(UsageError(format!("flag needs an argument: -{name}")));
                    };
                    i += 1;
                    v.clone()
                }
            }
        };
        if flag.kind == Ignored {
            notices.warn(
                "flag is no longer supported - ignoring",
                &[("flag-name", name.to_string())],
            );
        }
        let v = parse_value(flag.kind, &text).map_err(|e| {
            if flag.kind.is_bool() {
                UsageError(format!("invalid boolean value {text:?} for -{name}: {e}"))
            } else {
                UsageError(format!("invalid value {text:?} for flag -{name}: {e}"))
            }
        })?;
        values.set(flag, v);
    }
    if let Some(extra) = args.get(i) {
        return Err(UsageError(format!("{extra:?} is not a valid flag")));
    }
    Ok(Command::Run(values))
}

/// The help text: every flag of the table by section, with its default.
pub(crate) fn help() -> String {
    let mut s = String::from(
        "Usage:\n\n  hearth [flags]\n    Start a Hearth member (etcd's member flags).\n  hearth --version\n    Show the version.\n  hearth -h | --help\n    Show this help.\n\nEvery flag can also be given as an environment variable HEARTH_<FLAG> or ETCD_<FLAG>\n(upper case, dashes as underscores, e.g. ETCD_INITIAL_CLUSTER); HEARTH_ wins, and the\ncommand line must not repeat a flag given by the environment.\n",
    );
    for section in Section::ALL {
        let _ = write!(s, "\n{}:\n", section.title());
        for f in FLAGS.iter().filter(|f| {
            f.section == section && !matches!(f.origin, Origin::Hearth | Origin::FileOnly)
        }) {
            let default = match f.kind {
                Bool => format!(" '{}'", f.default),
                _ if f.default.is_empty() => " ''".to_string(),
                _ => format!(" '{}'", f.default),
            };
            let note = match f.origin {
                Origin::Etcd35 => " (etcd 3.5)",
                Origin::Etcd36 => " (etcd 3.6)",
                _ => "",
            };
            let _ = writeln!(s, "  --{}{}{}\n      {}", f.name, default, note, f.help);
            if f.kind == FeatureGates {
                for g in crate::features::GATES {
                    let _ = writeln!(
                        s,
                        "        {}=true|false ({} - default={})",
                        g.name, g.stage, g.default
                    );
                }
            }
        }
    }
    s.push_str(
        "\nUnsafe flags may break the guarantees of the consensus protocol: use them only when you know why.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn run(a: &[&str]) -> Result<Values, UsageError> {
        match parse_args(&args(a), &mut Notices::default())? {
            Command::Run(v) => Ok(v),
            other => panic!("expected a member to run, got {other:?}"),
        }
    }

    #[test]
    fn every_default_parses_and_names_are_unique() {
        let mut names: Vec<&str> = FLAGS.iter().map(|f| f.name).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a flag is listed twice");
        for f in FLAGS.iter().filter(|f| f.kind != Ignored) {
            let _ = Values::default().get(f.name);
        }
    }

    #[test]
    fn go_flag_syntax_is_accepted() {
        let v = run(&[
            "-name",
            "a",
            "--data-dir=/d",
            "-max-txn-ops=256",
            "--snapshot-count",
            "7",
            "--strict-reconfig-check=false",
            "--pre-vote",
        ])
        .unwrap();
        assert_eq!(v.str("name"), "a");
        assert_eq!(v.str("data-dir"), "/d");
        assert_eq!(v.uint("max-txn-ops"), 256);
        assert_eq!(v.uint("snapshot-count"), 7);
        assert!(!v.bool("strict-reconfig-check"));
        assert!(v.bool("pre-vote"));
        assert!(!v.is_set("heartbeat-interval"));
        assert_eq!(v.uint("heartbeat-interval"), 100);
    }

    #[test]
    fn the_last_of_a_repeated_flag_wins() {
        let v = run(&["--name=a", "--name=b"]).unwrap();
        assert_eq!(v.str("name"), "b");
    }

    #[test]
    fn booleans_take_values_only_after_an_equals_sign() {
        let e = run(&["--client-cert-auth", "false"]).unwrap_err();
        assert_eq!(e.0, "\"false\" is not a valid flag");
        let v = run(&["--client-cert-auth=F"]).unwrap();
        assert!(!v.bool("client-cert-auth"));
        let e = run(&["--client-cert-auth=yes"]).unwrap_err();
        assert_eq!(
            e.0,
            "invalid boolean value \"yes\" for -client-cert-auth: parse error"
        );
    }

    #[test]
    fn go_errors_for_bad_command_lines() {
        assert_eq!(
            run(&["--no-such-flag=1"]).unwrap_err().0,
            "flag provided but not defined: -no-such-flag"
        );
        assert_eq!(
            run(&["--name"]).unwrap_err().0,
            "flag needs an argument: -name"
        );
        assert_eq!(
            run(&["--max-txn-ops=x"]).unwrap_err().0,
            "invalid value \"x\" for flag -max-txn-ops: parse error"
        );
        assert_eq!(
            run(&["--max-concurrent-streams=4294967296"]).unwrap_err().0,
            "invalid value \"4294967296\" for flag -max-concurrent-streams: value out of range"
        );
        assert_eq!(
            run(&["--initial-cluster-state=old"]).unwrap_err().0,
            "invalid value \"old\" for flag -initial-cluster-state: invalid value \"old\""
        );
        assert_eq!(
            run(&["---name=x"]).unwrap_err().0,
            "bad flag syntax: ---name=x"
        );
        assert_eq!(
            run(&["serve"]).unwrap_err().0,
            "\"serve\" is not a valid flag"
        );
        // A file-only key is not a flag.
        assert!(run(&["--discovery-config=x"]).is_err());
    }

    #[test]
    fn help_and_version() {
        let mut n = Notices::default();
        assert!(matches!(
            parse_args(&args(&["-h"]), &mut n),
            Ok(Command::Help)
        ));
        assert!(matches!(
            parse_args(&args(&["--help"]), &mut n),
            Ok(Command::Help)
        ));
        assert!(matches!(
            parse_args(&args(&["--version"]), &mut n),
            Ok(Command::Version)
        ));
        let h = help();
        assert!(h.contains("--listen-metrics-urls ''"));
        assert!(h.contains("InitialCorruptCheck=true|false (ALPHA - default=false)"));
    }

    #[test]
    fn durations_numbers_and_lists() {
        let v = run(&[
            "--watch-progress-notify-interval=1h30m",
            "--backend-batch-interval=1.5s",
            "--quota-backend-bytes=-1",
            "--max-request-bytes=0x10",
            "--log-outputs=stdout,stderr,stdout",
            "--cipher-suites=b,a",
            "--listen-client-urls=http://127.0.0.1:2,http://127.0.0.1:1,http://127.0.0.1:2",
        ])
        .unwrap();
        assert_eq!(
            v.duration("watch-progress-notify-interval"),
            Duration::from_secs(5400)
        );
        assert_eq!(
            v.duration("backend-batch-interval"),
            Duration::from_millis(1500)
        );
        assert_eq!(v.int("quota-backend-bytes"), -1);
        assert_eq!(v.uint("max-request-bytes"), 16);
        assert_eq!(v.list("log-outputs"), ["stderr", "stdout"]);
        assert_eq!(v.list("cipher-suites"), ["b", "a"]);
        assert_eq!(
            v.list("listen-client-urls"),
            ["http://127.0.0.1:1", "http://127.0.0.1:2"]
        );
        assert!(run(&["--election-timeout=-1"]).is_err());
        assert!(run(&["--grpc-keepalive-interval=10"]).is_err());
    }

    #[test]
    fn urls_are_checked_as_etcd_checks_them() {
        assert!(parse_urls("http://127.0.0.1:1").is_ok());
        assert!(parse_urls("https://[::1]:1,unix://sock").is_ok());
        assert_eq!(
            parse_urls("http://127.0.0.1").unwrap_err(),
            "URL address does not have the form \"host:port\": http://127.0.0.1"
        );
        assert_eq!(
            parse_urls("http://127.0.0.1:1/x").unwrap_err(),
            "URL must not contain a path: http://127.0.0.1:1/x"
        );
        assert_eq!(
            parse_urls("ftp://a:1").unwrap_err(),
            "URL scheme must be http, https, unix, or unixs: ftp://a:1"
        );
    }

    #[test]
    fn ignored_etcd_0_4_flags_are_accepted_with_a_warning() {
        let mut n = Notices::default();
        let c = parse_args(
            &args(&["--snapshot", "--peer-heartbeat-interval=5"]),
            &mut n,
        )
        .unwrap();
        assert!(matches!(c, Command::Run(_)));
        assert_eq!(n.len(), 2);
    }
}
