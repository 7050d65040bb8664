//! Hearth's server: one member of a Hearth cluster.
//!
//! Start-up opens the backend (`<data-dir>/member/snap/db`) and the WAL (`<data-dir>/member/wal`), rebuilds
//! the Raft log, starts the Raft loop on its own thread (`raft_node`), and serves etcd's gRPC API on the
//! client URLs (`v3rpc`). Requests reach the store only through Raft (`etcdserver` proposes, `applier`
//! applies); reads wait for a ReadIndex round unless serializable.

pub mod applier;
pub mod apply;
pub mod authority;
pub mod concurrency;
pub mod config;
pub mod error;
pub mod etcdserver;
mod http;
pub mod ids;
pub mod lease_requests;
pub mod lessor;
pub mod lessor_driver;
pub mod metrics;
mod raft_log;
pub mod raft_node;
pub mod v3rpc;
mod wait;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use api::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use api::v3electionpb::election_server::ElectionServer;
use api::v3lockpb::lock_server::LockServer;
use tokio::sync::watch;

pub use config::{ClusterState, Config};
use raft_node::{Command, NodeConfig, RaftNode, RaftStatus, WalMeta};
use v3rpc::election::ElectionService;
use v3rpc::kv::KvService;
use v3rpc::lease::LeaseService;
use v3rpc::lock::LockService;
use v3rpc::maintenance::{ClusterService, MaintenanceService};
use v3rpc::unimplemented::Unimplemented;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("cannot create data directory {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("cannot open backend: {0}")]
    Backend(#[from] backend::BackendError),
    #[error("cannot open the key-value store: {0}")]
    Mvcc(#[from] mvcc::MvccError),
    #[error("cannot recover the leases: {0}")]
    Lease(#[from] lease::LeaseError),
    #[error("cannot recover the raft log: {0}")]
    Raft(#[from] raft_node::RaftError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
}

/// A running member. Dropping it does not stop it: call `stop`.
pub struct Hearth {
    pub server: Arc<etcdserver::EtcdServer>,
    raft: std::thread::JoinHandle<Result<(), raft_node::RaftError>>,
    raft_done: watch::Receiver<bool>,
    shutdown: watch::Sender<bool>,
    serving: Vec<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    client_addrs: Vec<SocketAddr>,
    _peer_listeners: Vec<tokio::net::TcpListener>,
}

fn member_dirs(data_dir: &Path) -> Result<(PathBuf, PathBuf), StartError> {
    let wal = data_dir.join("member").join("wal");
    let snap = data_dir.join("member").join("snap");
    std::fs::create_dir_all(&snap).map_err(|e| StartError::DataDir(snap.clone(), e))?;
    Ok((wal, snap))
}

async fn bind(urls: &[String]) -> Result<Vec<tokio::net::TcpListener>, StartError> {
    let mut out = Vec::new();
    for u in urls {
        let addr = config::listen_addr(u)?;
        out.push(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| StartError::Listen(addr, e))?,
        );
    }
    Ok(out)
}

impl Hearth {
    /// Opens the member's data and starts serving. Must be called inside a tokio runtime.
    pub async fn start(cfg: Config) -> Result<Hearth, StartError> {
        cfg.validate()?;
        let members = cfg.initial_members()?;
        let me = members
            .iter()
            .find(|m| m.name == cfg.name)
            .expect("validated above");
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        let fresh = WalMeta {
            node_id: me.id,
            cluster_id: ids::cluster_id(&ids),
            voters: ids,
        };

        let (wal_dir, snap_dir) = member_dirs(&cfg.data_dir)?;
        let backend = Arc::new(backend::Backend::open(
            snap_dir.join("db"),
            backend::BackendConfig::default(),
        )?);
        let kv = Arc::new(mvcc::KvStore::open(backend.clone())?);
        let leases = Arc::new(lessor::Leases::recover(
            &kv,
            lessor::LessorConfig::from_config(&cfg),
            lessor::system_clock(),
        )?);
        let log = raft_node::open_log(&wal_dir, &fresh)?;
        let (member_id, cluster_id) = (log.meta.node_id, log.meta.cluster_id);
        tracing::info!(
            name = %cfg.name,
            member_id = format!("{member_id:x}"),
            cluster_id = format!("{cluster_id:x}"),
            revision = kv.rev(),
            consistent_index = kv.consistent_index(),
            data_dir = %cfg.data_dir.display(),
            "starting member"
        );

        // Bind before starting Raft, so a port conflict fails start-up cleanly.
        let client_listeners = bind(&cfg.listen_client_urls).await?;
        let peer_listeners = bind(&cfg.listen_peer_urls).await?;
        let client_addrs = client_listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();

        let (tx, rx) = std::sync::mpsc::channel();
        let status = Arc::new(RaftStatus::default());
        let wait = Arc::new(wait::Wait::default());
        let (applied_tx, applied_rx) = watch::channel(0);
        let applier = applier::Applier::new(kv.clone(), leases.clone(), wait.clone());
        let node_cfg = NodeConfig {
            heartbeat: cfg.heartbeat_interval,
            election: cfg.election_timeout,
            snapshot_count: cfg.snapshot_count,
        };
        let node = RaftNode::new(
            log,
            &node_cfg,
            applier,
            backend.clone(),
            rx,
            status.clone(),
            applied_tx,
        )?;
        let (done_tx, raft_done) = watch::channel(false);
        let raft = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || {
                let r = node.run();
                if let Err(e) = &r {
                    tracing::error!("raft loop stopped: {e}");
                }
                let _ = done_tx.send(true);
                r
            })
            .map_err(|e| StartError::Thread("raft", e))?;
        let watchable = Arc::new(
            mvcc::WatchableStore::spawn(kv.clone(), mvcc::WatchConfig::default())
                .map_err(|e| StartError::Thread("watch", e))?,
        );

        let server = Arc::new(etcdserver::EtcdServer::new(
            cfg.clone(),
            member_id,
            cluster_id,
            kv,
            watchable,
            backend,
            status,
            leases,
            tx,
            wait,
            applied_rx,
        ));
        let (shutdown, shutdown_rx) = watch::channel(false);
        tokio::spawn(lessor_driver::run(server.clone(), shutdown_rx.clone()));
        let mut serving = Vec::new();
        for l in client_listeners {
            serving.push(tokio::spawn(serve_client(
                server.clone(),
                l,
                shutdown_rx.clone(),
            )));
        }
        Ok(Hearth {
            server,
            raft,
            raft_done,
            shutdown,
            serving,
            client_addrs,
            _peer_listeners: peer_listeners,
        })
    }

    /// The bound client addresses (useful when a URL asked for port 0).
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    /// Resolves when the Raft loop has stopped on its own, which only happens on a fatal error.
    pub async fn failed(&self) {
        let mut done = self.raft_done.clone();
        let _ = done.wait_for(|d| *d).await;
    }

    /// Stops serving, lets the Raft loop finish its turn, and makes the backend durable.
    pub async fn stop(self) -> Result<(), raft_node::RaftError> {
        let _ = self.shutdown.send(true);
        for s in self.serving {
            let _ = s.await;
        }
        let _ = self.server.send(Command::Stop);
        let raft = self.raft;
        tokio::task::spawn_blocking(move || raft.join())
            .await
            .map_err(|e| raft_node::RaftError::Corrupt(e.to_string()))?
            .unwrap_or_else(|_| Err(raft_node::RaftError::Corrupt("raft thread panicked".into())))
    }
}

async fn serve_client(
    srv: Arc<etcdserver::EtcdServer>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let max_recv = srv.cfg.max_request_bytes + config::GRPC_OVERHEAD_BYTES;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |s| {
            s.map(|s| {
                // Requests are small and latency-bound: never let Nagle hold a response back.
                let _ = s.set_nodelay(true);
                authority::FixAuthority::new(s)
            })
        },
    );
    let mut routes = tonic::service::Routes::from(http::router(srv.clone()));
    routes = routes
        .add_service(health)
        .add_service(
            KvServer::new(KvService { srv: srv.clone() }).max_decoding_message_size(max_recv),
        )
        .add_service(
            MaintenanceServer::new(MaintenanceService { srv: srv.clone() })
                .max_decoding_message_size(max_recv),
        )
        .add_service(
            ClusterServer::new(ClusterService { srv: srv.clone() })
                .max_decoding_message_size(max_recv),
        )
        .add_service(WatchServer::new(Unimplemented))
        .add_service(
            LeaseServer::new(LeaseService {
                srv: srv.clone(),
                shutdown: shutdown.clone(),
            })
            .max_decoding_message_size(max_recv),
        )
        .add_service(AuthServer::new(Unimplemented))
        .add_service(
            LockServer::new(LockService::new(srv.clone(), shutdown.clone()))
                .max_decoding_message_size(max_recv),
        )
        .add_service(
            ElectionServer::new(ElectionService::new(srv.clone(), shutdown.clone()))
                .max_decoding_message_size(max_recv),
        );
    tonic::transport::Server::builder()
        // etcd answers plain HTTP/1.1 (/health, /metrics) on the same port as gRPC.
        .accept_http1(true)
        .layer(tower::util::MapResponseLayer::new(
            v3rpc::fix_oversize_status,
        ))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}
