//! `hearth`: runs one member. Flags are etcd's; every flag can also be set as `HEARTH_<FLAG>` (upper case,
//! dashes as underscores), and `ETCD_<FLAG>` is accepted as well so existing deployments keep working.

mod grpc_proxy;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use server::{ClusterState, Config, Hearth};

#[derive(Parser, Debug)]
#[command(
    name = "hearth",
    version,
    about = "A distributed, strongly consistent key-value store speaking etcd's v3 API",
    after_help = "Run `hearth grpc-proxy start --help` for the gRPC proxy."
)]
struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "HEARTH_NAME", default_value = "default")]
    name: String,
    /// Path to the data directory (default: <name>.hearth).
    #[arg(long, env = "HEARTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(
        long,
        env = "HEARTH_LISTEN_CLIENT_URLS",
        value_delimiter = ',',
        default_value = "http://localhost:2379"
    )]
    listen_client_urls: Vec<String>,
    /// This member's client URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "HEARTH_ADVERTISE_CLIENT_URLS",
        value_delimiter = ',',
        default_value = "http://localhost:2379"
    )]
    advertise_client_urls: Vec<String>,
    /// URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "HEARTH_LISTEN_PEER_URLS",
        value_delimiter = ',',
        default_value = "http://localhost:2380"
    )]
    listen_peer_urls: Vec<String>,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "HEARTH_INITIAL_ADVERTISE_PEER_URLS",
        value_delimiter = ',',
        default_value = "http://localhost:2380"
    )]
    initial_advertise_peer_urls: Vec<String>,
    /// Initial cluster configuration for bootstrapping, as name=url,... (default: this member alone).
    #[arg(long, env = "HEARTH_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// Initial cluster state: new or existing.
    #[arg(long, env = "HEARTH_INITIAL_CLUSTER_STATE", default_value = "new", value_parser = ["new", "existing"])]
    initial_cluster_state: String,
    /// Initial cluster token, which makes the cluster's ids unique.
    #[arg(
        long,
        env = "HEARTH_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    initial_cluster_token: String,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "HEARTH_MAX_REQUEST_BYTES", default_value_t = server::config::DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "HEARTH_MAX_TXN_OPS", default_value_t = 128)]
    max_txn_ops: usize,
    /// Raise an alarm when the backend size exceeds this many bytes (0: 2 GiB).
    #[arg(long, env = "HEARTH_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    quota_backend_bytes: u64,
    /// Number of committed transactions between compactions of the raft log.
    #[arg(long, env = "HEARTH_SNAPSHOT_COUNT", default_value_t = 10_000)]
    snapshot_count: u64,
    /// Number of entries for a slow follower to catch up after compacting the raft log.
    #[arg(long, env = "HEARTH_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES", default_value_t = server::raft_node::SNAPSHOT_CATCHUP_ENTRIES)]
    experimental_snapshot_catchup_entries: u64,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "HEARTH_HEARTBEAT_INTERVAL", default_value_t = 100)]
    heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "HEARTH_ELECTION_TIMEOUT", default_value_t = 1000)]
    election_timeout: u64,
    /// Duration of periodic watch progress notifications (Go syntax: 10m, 30s, 500ms).
    #[arg(
        long,
        env = "HEARTH_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m",
        value_parser = server::config::parse_go_duration
    )]
    experimental_watch_progress_notify_interval: Duration,
    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(long, env = "HEARTH_STRICT_RECONFIG_CHECK", default_value_t = true, action = clap::ArgAction::Set)]
    strict_reconfig_check: bool,
    /// TESTS ONLY: while this file exists, the member drops all traffic to and from its peers, as if its
    /// network were cut. Never set it in production.
    #[arg(long, env = "HEARTH_UNSAFE_TEST_PEER_FAULT_FILE", hide = true)]
    unsafe_test_peer_fault_file: Option<PathBuf>,
    /// Log level: debug, info, warn, error.
    #[arg(long, env = "HEARTH_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Accepted for compatibility with etcd's command lines; Hearth always logs to stderr.
    #[arg(long, env = "HEARTH_LOGGER", hide = true)]
    logger: Option<String>,
    /// Accepted for compatibility with etcd's command lines; Hearth always logs to stderr.
    #[arg(long, env = "HEARTH_LOG_OUTPUTS", hide = true, value_delimiter = ',')]
    log_outputs: Vec<String>,
}

impl Flags {
    fn into_config(self) -> Config {
        let initial_cluster = self.initial_cluster.unwrap_or_else(|| {
            self.initial_advertise_peer_urls
                .iter()
                .map(|u| format!("{}={u}", self.name))
                .collect::<Vec<_>>()
                .join(",")
        });
        Config {
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(format!("{}.hearth", self.name))),
            name: self.name,
            listen_client_urls: self.listen_client_urls,
            advertise_client_urls: self.advertise_client_urls,
            listen_peer_urls: self.listen_peer_urls,
            initial_advertise_peer_urls: self.initial_advertise_peer_urls,
            initial_cluster,
            initial_cluster_state: if self.initial_cluster_state == "existing" {
                ClusterState::Existing
            } else {
                ClusterState::New
            },
            initial_cluster_token: self.initial_cluster_token,
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops,
            quota_backend_bytes: self.quota_backend_bytes,
            snapshot_count: self.snapshot_count,
            snapshot_catchup_entries: self.experimental_snapshot_catchup_entries,
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval),
            election_timeout: Duration::from_millis(self.election_timeout),
            watch_progress_notify_interval: self.experimental_watch_progress_notify_interval,
            strict_reconfig_check: self.strict_reconfig_check,
            unsafe_test_peer_fault_file: self.unsafe_test_peer_fault_file,
        }
    }
}

/// `ETCD_X` stands in for `HEARTH_X` when the latter is not set.
fn accept_etcd_env() {
    for (k, v) in std::env::vars_os() {
        let Some(rest) = k.to_str().and_then(|k| k.strip_prefix("ETCD_")) else {
            continue;
        };
        let ours = format!("HEARTH_{rest}");
        if std::env::var_os(&ours).is_none() {
            // Single-threaded here: no runtime has started yet.
            std::env::set_var(ours, v);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "grpc-proxy") {
        return grpc_proxy::main(args);
    }
    accept_etcd_env();
    let flags = Flags::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&flags.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cfg = flags.into_config();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cfg))
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let hearth = Hearth::start(cfg).await.context("hearth failed to start")?;
    for a in hearth.client_addrs() {
        tracing::info!(address = %a, "serving client requests");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let failed = tokio::select! {
        _ = tokio::signal::ctrl_c() => false,
        _ = term.recv() => false,
        _ = hearth.failed() => true,
    };
    tracing::info!("stopping");
    match hearth.stop().await {
        // etcd exits cleanly when it was removed from the cluster, after saying so.
        Err(server::raft_node::RaftError::Removed) => {
            tracing::warn!("the member has been permanently removed from the cluster");
            tracing::warn!("data-dir used by this member must be removed");
            return Ok(());
        }
        r => r.context("hearth stopped with an error")?,
    }
    if failed {
        anyhow::bail!("the raft loop failed; see the log above");
    }
    Ok(())
}
