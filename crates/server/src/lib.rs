//! Hearth's server: wires one member of a Hearth cluster together, as etcd's `etcdserver` and `embed`.
//!
//! Start-up opens the backend (`<data-dir>/member/snap/db`) and the WAL (`<data-dir>/member/wal`, or
//! `--wal-dir`) (or
//! bootstraps them, `bootstrap`), rebuilds the Raft log and starts the Raft loop on its own thread
//! (`raftnode`), streams Raft messages to and from the other members on the peer URLs (`rafthttp`), and
//! serves etcd's gRPC API on the client URLs (`v3rpc`). Requests reach the store only through Raft
//! (`etcdserver` proposes, `apply` applies); reads wait for a ReadIndex round unless serializable. The
//! logic lives in those crates; this one builds them, connects them through their traits and runs the
//! member's own tasks (publishing its attributes, the lessor driver, the NOSPACE alarm).

#![forbid(unsafe_code)]

mod bootstrap;
mod client_port;
mod compactor_driver;
pub mod config;
mod etcdserver;
mod ids;
mod index_image;
mod lessor_driver;
mod listener;
mod metrics;
mod purge;
mod tls;
mod urls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

pub use bootstrap::BootstrapError;
pub use config::{ClusterState, Config};
use membership::{Member, RaftCluster};
use rafthttp::{RaftTransport as _, Transport, TransportConfig};
pub use raftnode::RaftError;
use raftnode::{BackendSnapshots, ClusterParts, Command, Handle, NodeConfig, RaftNode, RaftStatus};
use transport::Role;

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
    Raft(#[from] raftnode::RaftError),
    #[error("cannot recover the cluster membership: {0}")]
    Membership(#[from] membership::store::StoreError),
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
    #[error(transparent)]
    Failpoints(#[from] failpoint::ParseError),
    /// `--auth-token` unusable, or the auth buckets unreadable (etcd refuses to start too).
    #[error("{0}")]
    Auth(#[from] auth::AuthError),
    /// The initial corruption check found a peer with other data.
    #[error(transparent)]
    Corrupt(#[from] corrupt::InitialCheckError),
    /// A certificate, key, CA or CRL file is unusable, or an https URL has no certificate.
    #[error(transparent)]
    Tls(#[from] transport::TlsError),
}

/// How long a stopping member keeps serving requests already in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A running member. Dropping it does not stop it: call `stop`.
pub struct Hearth {
    server: Arc<etcdserver::EtcdServer>,
    raft: std::thread::JoinHandle<Result<(), raftnode::RaftError>>,
    raft_done: watch::Receiver<bool>,
    shutdown: watch::Sender<bool>,
    serving: Vec<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    client_addrs: Vec<SocketAddr>,
    peer_addrs: Vec<SocketAddr>,
    http_addrs: Vec<SocketAddr>,
    /// For the key index image written at a clean stop.
    kv: Arc<mvcc::KvStore>,
    snap_dir: PathBuf,
}

/// The member's WAL directory (`--wal-dir`, or `<data-dir>/member/wal`) and snapshot (backend)
/// directory, the latter created if missing.
pub fn member_dirs(cfg: &Config) -> Result<(PathBuf, PathBuf), StartError> {
    let snap = cfg.snap_dir();
    let sync = |d: &std::path::Path| match cfg.unsafe_no_fsync {
        true => Ok(()),
        false => backend::swap::sync_dir(d),
    };
    backend::swap::create_dir_all_durably(&snap, sync)
        .map_err(|e| StartError::DataDir(snap.clone(), e))?;
    Ok((cfg.wal_dir(), snap))
}

/// How the WAL is opened: `--unsafe-no-fsync`, `--max-wals`.
fn wal_options(cfg: &Config) -> wal::WalOptions {
    wal::WalOptions {
        unsafe_no_fsync: cfg.unsafe_no_fsync,
        max_files: cfg.max_wals,
    }
}

/// The identity a member of a new cluster gets from its configuration: its id, the cluster id and
/// the initial voters. Fails on a configuration a new cluster cannot start from.
pub fn new_member_meta(cfg: &Config) -> Result<raftnode::WalMeta, StartError> {
    cfg.validate()?;
    let initial = cfg.initial_members()?;
    match bootstrap::new_cluster(cfg, &initial)?.boot {
        raftnode::Bootstrap::NewCluster { meta, .. } | raftnode::Bootstrap::Join { meta } => {
            Ok(meta)
        }
    }
}

/// Creates the data directory of a member of a new cluster whose backend is the database file at
/// `db` (for `hearthutl snapshot restore`): the file is moved into place and the WAL bootstrapped
/// exactly as start-up does for a new cluster. The caller has already reset the file's Raft
/// bookkeeping (`restore::reset_for_new_cluster`), so every entry of the new log applies.
pub fn bootstrap_from_backend(cfg: &Config, db: &Path) -> Result<raftnode::WalMeta, StartError> {
    cfg.validate()?;
    let prepared = bootstrap::new_cluster(cfg, &cfg.initial_members()?)?;
    let (wal_dir, snap_dir) = member_dirs(cfg)?;
    let target = snap_dir.join("db");
    std::fs::rename(db, &target).map_err(|e| StartError::DataDir(target.clone(), e))?;
    backend::swap::sync_dir(&snap_dir).map_err(|e| StartError::DataDir(snap_dir.clone(), e))?;
    let log = raftnode::open_log_with(
        &wal_dir,
        Some(&prepared.boot),
        &raftnode::Applied::default(),
        &raftnode::LogOptions {
            wal: wal_options(cfg),
            force_new_cluster: false,
        },
    )?;
    Ok(log.meta)
}

/// The store's tuning from `--compaction-batch-limit` and `--compaction-sleep-interval` (0: etcd's
/// defaults, 1000 records and 10 ms).
fn store_config(cfg: &Config) -> mvcc::StoreConfig {
    let default = mvcc::StoreConfig::default();
    mvcc::StoreConfig {
        compaction_batch_limit: match cfg.compaction_batch_limit {
            0 => default.compaction_batch_limit,
            n => n,
        },
        compaction_sleep_interval: match cfg.compaction_sleep_interval {
            d if d.is_zero() => default.compaction_sleep_interval,
            d => d,
        },
    }
}

/// Whether a feature gate is on.
fn gate(cfg: &Config, name: &str) -> bool {
    cfg.feature_gates.get(name).copied().unwrap_or(false)
}

impl Hearth {
    /// Opens the member's data and starts serving. Must be called inside a tokio runtime.
    pub async fn start(mut cfg: Config) -> Result<Hearth, StartError> {
        cfg.validate()?;
        tls::apply_auto_tls(&mut cfg)?;
        let member_tls = tls::MemberTls::new(&cfg)?;
        let armed = failpoint::init()?;
        if !armed.is_empty() {
            tracing::warn!(
                failpoints = ?armed,
                "test-only failpoints armed by {} / {}",
                failpoint::ENV,
                failpoint::FILE_ENV
            );
        }
        if cfg.unsafe_no_fsync {
            tracing::warn!(
                "--unsafe-no-fsync: the WAL and the backend are never fsynced; a power failure or \
                 an operating system crash can lose acknowledged writes or corrupt the data"
            );
        }
        let (wal_dir, snap_dir) = member_dirs(&cfg)?;
        let backend = Arc::new(backend::Backend::open(
            snap_dir.join("db"),
            backend_config(&cfg),
        )?);
        let image = index_image::take(&snap_dir);
        let kv = Arc::new(mvcc::KvStore::open_with_image(
            backend.clone(),
            store_config(&cfg),
            image.as_deref(),
        )?);
        drop(image);
        let stored = membership::store::load(&backend)?;
        let alarms = Arc::new(
            apply::alarm::AlarmStore::load(&backend.read()?)
                .map_err(|e| backend::BackendError::Corrupt(e.to_string()))?,
        );
        let auth = Arc::new(etcdserver::auth::open(&cfg, &backend)?);
        let quota = apply::quota::Quota::from_flag(cfg.quota_backend_bytes);
        let nospace = Arc::new(tokio::sync::Notify::new());
        let leases = Arc::new(apply::lessor::Leases::recover(
            &kv,
            apply::lessor::LessorConfig::new(cfg.heartbeat_interval, cfg.election_timeout),
            // The lessor's only clock: monotonic time.
            Arc::new(std::time::Instant::now),
        )?);

        // A member with a WAL restarts from it; the --initial-cluster* flags only matter the first time.
        let have_wal = wal::Wal::exists(&wal_dir);
        let prepared = if have_wal {
            None
        } else {
            Some(bootstrap::prepare(&cfg, member_tls.peer_dial.as_ref()).await?)
        };
        let (consistent_index, applied_term) = kv.consistent_index_and_term()?;
        let applied = raftnode::Applied {
            consistent_index,
            term: applied_term,
            conf_state: stored.conf_state.clone(),
        };
        if cfg.force_new_cluster && have_wal {
            tracing::warn!(
                "--force-new-cluster: restarting this member's data as a cluster of this member alone"
            );
        }
        let log = raftnode::open_log_with(
            &wal_dir,
            prepared.as_ref().map(|p| &p.boot),
            &applied,
            &raftnode::LogOptions {
                wal: wal_options(&cfg),
                force_new_cluster: cfg.force_new_cluster,
            },
        )?;
        // The key index and the Raft log are rebuilt; what the rebuild freed goes back to the OS.
        raftnode::heap::release_free_pages();
        let (member_id, cluster_id) = (log.meta.node_id, log.meta.cluster_id);
        tracing::info!(
            name = %cfg.name,
            member_id = format!("{member_id:x}"),
            cluster_id = format!("{cluster_id:x}"),
            revision = kv.rev(),
            consistent_index = kv.consistent_index(),
            data_dir = %cfg.data_dir.display(),
            wal_dir = %wal_dir.display(),
            force_new_cluster = cfg.force_new_cluster,
            max_wals = cfg.max_wals,
            max_snapshots = cfg.max_snapshots,
            unsafe_no_fsync = cfg.unsafe_no_fsync,
            "starting member"
        );
        let mut members = stored.members;
        let legacy = stored.conf_state.is_none()
            && !raft::Storage::initial_state(&log.storage)
                .map_err(raftnode::RaftError::from)?
                .conf_state
                .voters
                .is_empty();
        if members.is_empty() && legacy {
            // A data dir from before the membership was recorded: its voters, as configured.
            members = legacy_members(&cfg, &log.meta.voters);
        }
        let peers: Vec<Member> = match &prepared {
            Some(p) => p.peers.clone(),
            None => members.clone(),
        };
        let cluster = Arc::new(RaftCluster::new(
            member_id,
            cluster_id,
            members,
            stored.removed,
        ));
        if let Some(p) = &prepared {
            cluster.set_joined_as_learner(p.learner);
        }
        cluster.set_max_learners(cfg.max_learners);

        // Bind before starting Raft, so a port conflict fails start-up cleanly.
        let client_tls = member_tls.client.as_ref();
        let client_listeners = tls::bind(&cfg, &cfg.listen_client_urls, Role::Client, client_tls)?;
        let client_http_listeners =
            tls::bind(&cfg, &cfg.listen_client_http_urls, Role::Client, client_tls)?;
        let metrics_listeners =
            tls::bind(&cfg, &cfg.listen_metrics_urls, Role::Client, client_tls)?;
        let peer_listeners = tls::bind(
            &cfg,
            &cfg.listen_peer_urls,
            Role::Peer,
            member_tls.peer.as_ref(),
        )?;
        let http_addrs = client_http_listeners
            .iter()
            .chain(&metrics_listeners)
            .filter_map(tls::Bound::local_addr)
            .collect();
        let client_addrs = client_listeners
            .iter()
            .filter_map(tls::Bound::local_addr)
            .collect();
        let peer_addrs = peer_listeners
            .iter()
            .filter_map(tls::Bound::local_addr)
            .collect();

        let (shutdown, shutdown_rx) = watch::channel(false);
        let (raft_handle, rx) = Handle::channel();
        let largest_entry = cfg.max_request_bytes.max(1024 * 1024);
        let transport = Arc::new(
            Transport::new(
                member_id,
                cluster_id,
                TransportConfig {
                    max_message_bytes: 2 * largest_entry + 1024 * 1024,
                    tls: member_tls.peer_dial.clone(),
                    ..TransportConfig::default()
                },
                tokio::runtime::Handle::current(),
                Arc::new(raft_handle.clone()),
            )
            .with_snapshots(Arc::new(BackendSnapshots::new(backend.clone(), member_id))),
        );
        for p in &peers {
            transport.add_peer(p.id, &p.peer_urls);
        }
        // etcd's initial corruption check: a member with data compares it with its peers' before
        // it serves anything (a new member has nothing to compare).
        if have_wal && gate(&cfg, "InitialCorruptCheck") {
            let hasher = etcdserver::corrupt::MemberHasher::before_start(
                member_id,
                kv.clone(),
                cluster.clone(),
                transport.clone(),
                &cfg,
            );
            if let Err(e) = etcdserver::corrupt::initial_check(hasher).await {
                tracing::error!(error = %e, "checkInitialHashKV failed");
                transport.stop();
                return Err(e.into());
            }
        }
        let status = Arc::new(RaftStatus::default());
        let wait = Arc::new(apply::wait::Wait::default());
        let conf_wait = Arc::new(apply::wait::Wait::default());
        let (applied_tx, applied_rx) = watch::channel(0);
        let last_at_start = raft::Storage::last_index(&log.storage).unwrap_or(0);
        let applier = apply::Applier::new(kv.clone(), leases.clone(), wait.clone())
            .with_replayed_until(last_at_start)
            .with_cluster(cluster.clone())
            .with_auth(apply::auth::ApplyAuth {
                store: auth.clone(),
                clock: Arc::new(etcdserver::auth::now),
            })
            .with_space(apply::Space {
                alarms: alarms.clone(),
                quota,
                raise_nospace: {
                    let n = nospace.clone();
                    Box::new(move || n.notify_one())
                },
            })
            .with_slow_apply(
                cfg.warning_apply_duration,
                Arc::new(std::time::Instant::now),
            );
        let node_cfg = NodeConfig {
            heartbeat: cfg.heartbeat_interval,
            election: cfg.election_timeout,
            snapshot_count: cfg.snapshot_count,
            snapshot_catchup_entries: cfg.snapshot_catchup_entries,
        };
        let node = RaftNode::new(
            log,
            &node_cfg,
            applier,
            backend.clone(),
            rx,
            status.clone(),
            applied_tx,
            ClusterParts {
                cluster: cluster.clone(),
                transport: Box::new(transport.clone()),
                conf_wait: conf_wait.clone(),
            },
        )?;
        let (done_tx, raft_done) = watch::channel(false);
        let raft = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || {
                raftnode::sched::batch_this_thread("raft");
                let r = node.run();
                match &r {
                    Err(raftnode::RaftError::Removed) => {}
                    Err(e) => tracing::error!("raft loop stopped: {e}"),
                    Ok(()) => {}
                }
                let _ = done_tx.send(true);
                r
            })
            .map_err(|e| StartError::Thread("raft", e))?;
        let watchable = Arc::new(
            mvcc::WatchableStore::spawn(kv.clone(), mvcc::WatchConfig::default())
                .map_err(|e| StartError::Thread("watch", e))?,
        );

        let kv_for_stop = kv.clone();
        let server = Arc::new(etcdserver::EtcdServer::new(etcdserver::Parts {
            cfg: cfg.clone(),
            member_id,
            cluster_id,
            kv,
            watchable,
            backend,
            status,
            leases,
            raft: raft_handle,
            wait,
            applied: applied_rx,
            cluster,
            transport,
            conf_wait,
            alarms,
            quota,
            auth,
        }));
        tokio::spawn(etcdserver::quota::raise_nospace_when_asked(
            server.clone(),
            nospace,
            shutdown_rx.clone(),
        ));
        tokio::spawn(lessor_driver::run(server.clone(), shutdown_rx.clone()));
        tokio::spawn(etcdserver::auth::purge_simple_tokens(
            server.clone(),
            shutdown_rx.clone(),
        ));
        if let Some(retention) = cfg.auto_compaction {
            tokio::spawn(compactor_driver::run(
                server.clone(),
                retention,
                shutdown_rx.clone(),
            ));
        }
        etcdserver::corrupt::monitor(server.clone(), shutdown_rx.clone());
        if cfg.max_snapshots > 0 {
            tokio::spawn(purge::run(
                snap_dir.clone(),
                cfg.max_snapshots,
                shutdown_rx.clone(),
            ));
        }
        let mut serving = Vec::new();
        for l in peer_listeners {
            serving.push(tokio::spawn(serve_peer(
                server.clone(),
                l.incoming(),
                shutdown_rx.clone(),
            )));
        }
        let no_leader =
            v3rpc::monitor_leader(server.clone(), cfg.election_timeout, shutdown_rx.clone());
        // etcd 3.5: with --listen-client-http-urls, the client URLs serve gRPC only.
        let split_http = !client_http_listeners.is_empty();
        let client =
            client_port::ClientPort::new(server.clone(), no_leader, shutdown_rx.clone()).await;
        for l in client_listeners {
            serving.push(tokio::spawn(
                client.clone().serve(l.incoming(), !split_http),
            ));
        }
        for l in client_http_listeners {
            serving.push(tokio::spawn(client.clone().serve_http(l.incoming())));
        }
        for l in metrics_listeners {
            serving.push(tokio::spawn(client.clone().serve_metrics(l.incoming())));
        }
        tokio::spawn(publish(server.clone(), shutdown_rx));
        Ok(Hearth {
            server,
            raft,
            raft_done,
            shutdown,
            serving,
            client_addrs,
            peer_addrs,
            http_addrs,
            kv: kv_for_stop,
            snap_dir,
        })
    }

    /// The bound addresses of `--listen-client-http-urls`, then of `--listen-metrics-urls`.
    pub fn http_addrs(&self) -> &[SocketAddr] {
        &self.http_addrs
    }

    /// The bound peer addresses (useful when a URL asked for port 0).
    pub fn peer_addrs(&self) -> &[SocketAddr] {
        &self.peer_addrs
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
    pub async fn stop(self) -> Result<(), raftnode::RaftError> {
        let _ = self.shutdown.send(true);
        // Graceful shutdown waits for clients to hang up, and an idle client connection never
        // does: give requests in flight a moment to finish, then drop every connection.
        let grace = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(grace);
        for mut s in self.serving {
            tokio::select! {
                _ = &mut s => {}
                _ = &mut grace => s.abort(),
            }
        }
        let _ = self.server.send(Command::Stop);
        self.server.transport().stop();
        let raft = self.raft;
        let (kv, snap_dir) = (self.kv, self.snap_dir);
        tokio::task::spawn_blocking(move || {
            let r = raft.join().unwrap_or_else(|_| {
                Err(raftnode::RaftError::Corrupt("raft thread panicked".into()))
            });
            // Only after a clean end: nothing applies entries any more.
            if r.is_ok() {
                index_image::save(&kv, &snap_dir);
            }
            r
        })
        .await
        .map_err(|e| raftnode::RaftError::Corrupt(e.to_string()))?
    }
}

/// Serves Hearth's peer service on a peer URL.
async fn serve_peer(
    srv: Arc<etcdserver::EtcdServer>,
    incoming: transport::Incoming,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let max = srv.transport().config().max_message_bytes;
    let svc = api::hearthraftpb::raft_server::RaftServer::new(rafthttp::PeerService::new(
        srv.transport(),
        srv.clone(),
        shutdown.clone(),
    ))
    .max_decoding_message_size(max);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(srv.transport().config().keepalive))
        .http2_keepalive_timeout(Some(srv.transport().config().keepalive_timeout))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}

/// The backend's batching from `--backend-batch-interval` and `--backend-batch-limit` (0: etcd's
/// defaults, 100 ms and 10000).
fn backend_config(cfg: &Config) -> backend::BackendConfig {
    let mut b = backend::BackendConfig {
        unsafe_no_fsync: cfg.unsafe_no_fsync,
        ..backend::BackendConfig::default()
    };
    if !cfg.backend_batch_interval.is_zero() {
        b.batch_interval = cfg.backend_batch_interval;
    }
    if cfg.backend_batch_limit > 0 {
        b.batch_limit = cfg.backend_batch_limit;
    }
    b
}

/// Publishes this member's name and client URLs through Raft once it runs, as etcd's `publish`: that is
/// what makes it a started member in everyone's member list.
async fn publish(srv: Arc<etcdserver::EtcdServer>, mut shutdown: watch::Receiver<bool>) {
    use api::etcdserverpb::InternalRaftRequest;
    use api::membershippb::{Attributes, ClusterMemberAttrSetRequest};
    let req = InternalRaftRequest {
        cluster_member_attr_set: Some(ClusterMemberAttrSetRequest {
            member_id: srv.member_id(),
            member_attributes: Some(Attributes {
                name: srv.cfg().name.clone(),
                client_urls: srv.cfg().advertise_client_urls.clone(),
            }),
        }),
        ..Default::default()
    };
    loop {
        tokio::select! {
            r = srv.propose(req.clone()) => match r {
                Ok(_) => {
                    tracing::info!(
                        name = %srv.cfg().name,
                        client_urls = ?srv.cfg().advertise_client_urls,
                        "published local member to cluster through raft"
                    );
                    return;
                }
                Err(e) => tracing::debug!("publishing member attributes: {e}"),
            },
            _ = shutdown.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// The members of a data dir written before membership was recorded: its voters, with what
/// `--initial-cluster` says about them.
fn legacy_members(cfg: &Config, voters: &[u64]) -> Vec<Member> {
    let initial = cfg.initial_members().unwrap_or_default();
    voters
        .iter()
        .map(|&id| {
            let known = initial.iter().find(|m| m.id == id);
            Member {
                id,
                name: known.map(|m| m.name.clone()).unwrap_or_default(),
                peer_urls: known.map(|m| m.peer_urls.clone()).unwrap_or_default(),
                client_urls: Vec::new(),
                is_learner: false,
            }
        })
        .collect()
}

#[cfg(test)]
mod fuzz_tests;
