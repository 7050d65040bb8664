//! The member as the gRPC services see it: propose a request and wait for its applied result, wait for a
//! linearizable read point, and fill response headers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::etcdserverpb::{InternalRaftRequest, RequestHeader, ResponseHeader};
use mvcc::KvStore;
use prost::Message as _;
use tokio::sync::{oneshot, watch};

use crate::config::Config;
use apply::applier::{Applied, ApplyResult};
use apply::wait::Wait;
use membership::RaftCluster;
use rafthttp::Transport;
use raftnode::ProposalState;
use raftnode::{Command, ConfResult, Handle, RaftStatus};
use rpctypes::ServerError;

pub(crate) mod auth;
pub(crate) mod corrupt;
mod lease_requests;
mod peer;
pub(crate) mod quota;
mod reconfig;
mod v3_server;

/// What a member's server is made of (built by `Hearth::start`).
pub(crate) struct Parts {
    pub cfg: Config,
    pub member_id: u64,
    pub cluster_id: u64,
    pub kv: Arc<KvStore>,
    pub watchable: Arc<mvcc::WatchableStore>,
    pub backend: Arc<backend::Backend>,
    pub status: Arc<RaftStatus>,
    pub leases: Arc<apply::lessor::Leases>,
    pub raft: Handle,
    pub wait: Arc<Wait<ApplyResult>>,
    pub applied: watch::Receiver<u64>,
    pub cluster: Arc<RaftCluster>,
    pub transport: Arc<Transport>,
    pub conf_wait: Arc<Wait<ConfResult>>,
    pub alarms: Arc<apply::alarm::AlarmStore>,
    pub quota: apply::quota::Quota,
    pub auth: Arc<apply::auth::SharedAuth>,
}

/// The member: reached from outside only through the traits it implements (`v3rpc`'s, and
/// `rafthttp::PeerHandler`) and the few methods the wiring needs.
pub struct EtcdServer {
    cfg: Config,
    member_id: u64,
    cluster_id: u64,
    kv: Arc<KvStore>,
    /// The store's watchers (watch streams, and the lock and election services that wait on keys).
    watchable: Arc<mvcc::WatchableStore>,
    backend: Arc<backend::Backend>,
    status: Arc<RaftStatus>,
    cluster: Arc<RaftCluster>,
    transport: Arc<Transport>,
    conf_wait: Arc<Wait<ConfResult>>,
    /// The lessor, shared with the applier and the expiry driver.
    leases: Arc<apply::lessor::Leases>,
    raft: Handle,
    wait: Arc<Wait<ApplyResult>>,
    applied: watch::Receiver<u64>,
    next_id: AtomicU64,
    request_timeout: Duration,
    /// Active alarms (shared with the applier) and the space quota; see `apply::alarm` and
    /// `apply::quota`.
    alarms: Arc<apply::alarm::AlarmStore>,
    quota: apply::quota::Quota,
    /// The auth store, shared with the applier (its only writer); see `auth`.
    auth: Arc<apply::auth::SharedAuth>,
    /// The bounded pool bcrypt runs on (see `auth`).
    bcrypt: Arc<tokio::sync::Semaphore>,
}

impl EtcdServer {
    pub(crate) fn new(p: Parts) -> EtcdServer {
        // Request ids: member id in the top 16 bits, start time in ms in the next 40, then a counter, as etcd
        // does, so ids stay unique across members and restarts.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let next_id = ((p.member_id & 0xffff) << 48) | ((now_ms & 0xff_ffff_ffff) << 8);
        let request_timeout = request_timeout(&p.cfg);
        EtcdServer {
            cfg: p.cfg,
            member_id: p.member_id,
            cluster_id: p.cluster_id,
            kv: p.kv,
            watchable: p.watchable,
            backend: p.backend,
            status: p.status,
            cluster: p.cluster,
            transport: p.transport,
            conf_wait: p.conf_wait,
            leases: p.leases,
            raft: p.raft,
            wait: p.wait,
            applied: p.applied,
            next_id: AtomicU64::new(next_id),
            request_timeout,
            alarms: p.alarms,
            quota: p.quota,
            auth: p.auth,
            bcrypt: Arc::new(tokio::sync::Semaphore::new(auth::bcrypt_workers())),
        }
    }

    /// The configuration the member started with.
    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    /// The peer transport.
    pub(crate) fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// The lessor (the expiry driver promotes, demotes and asks it).
    pub(crate) fn leases(&self) -> &Arc<apply::lessor::Leases> {
        &self.leases
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    pub fn term(&self) -> u64 {
        self.status.term.load(Ordering::Acquire)
    }

    pub fn leader(&self) -> u64 {
        self.status.leader.load(Ordering::Acquire)
    }

    /// A response header at `revision` (0: the store's current revision).
    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision: if revision == 0 {
                self.kv.rev()
            } else {
                revision
            },
            raft_term: self.term(),
        })
    }

    /// Fills the member fields of a header an applier produced, keeping its revision.
    pub fn fill(&self, h: &mut Option<ResponseHeader>) {
        let rev = h.as_ref().map(|h| h.revision).unwrap_or(0);
        *h = self.header(rev);
    }

    /// A new id from the member's generator (request ids, server-chosen lease ids), unique across
    /// members and restarts.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether this member is a learner (which serves only what etcd lets learners serve).
    pub fn is_learner(&self) -> bool {
        self.cluster.is_local_learner()
    }

    /// Proposes `req` through Raft without credentials and waits until it is applied.
    pub async fn propose(&self, req: InternalRaftRequest) -> Result<Applied, ServerError> {
        self.propose_as(None, req).await
    }

    /// Proposes `req` on behalf of `ai` (its user and auth revision go into the header, and the
    /// applier checks them) and waits until it is applied.
    pub async fn propose_as(
        &self,
        ai: Option<&::auth::AuthInfo>,
        mut req: InternalRaftRequest,
    ) -> Result<Applied, ServerError> {
        let id = self.next_id();
        req.header = Some(RequestHeader {
            id,
            username: ai.map(|a| a.username.clone()).unwrap_or_default(),
            auth_revision: ai.map(|a| a.revision).unwrap_or_default(),
        });
        // etcd refuses a proposal while the member applies far behind what is committed.
        self.status.check_apply_gap()?;
        let data = req.encode_to_vec();
        if data.len() > self.cfg.max_request_bytes {
            return Err(ServerError::RequestTooLarge);
        }
        let rx = self.wait.register(id);
        let state = ProposalState::new();
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let len = data.len();
        let cmd = Command::Propose {
            id,
            data,
            state: state.clone(),
        };
        // A full queue into the Raft loop: wait for room until the request's deadline, then give up
        // with etcd's `too many requests` (the proposal never reached Raft).
        if let Err(e) = self.raft.admit(cmd, len, self.request_timeout).await {
            self.wait.cancel(id);
            return Err(e);
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => {
                self.wait.cancel(id);
                Err(self.timeout_error(&state, start))
            }
        }
    }

    /// What a proposal that was not applied in time gets, as etcd decides it: if it never reached Raft (no
    /// leader all along) the deadline error itself; else `request timed out`, with the likely reason when
    /// there is one (etcd's `parseProposeCtxErr`).
    pub(crate) fn timeout_error(&self, state: &ProposalState, start: Instant) -> ServerError {
        if state.abandon() {
            return ServerError::DeadlineExceeded;
        }
        if let Some(elected) = self.status.lead_elected() {
            let lost = elected
                .checked_sub(self.cfg.election_timeout * 2)
                .unwrap_or(elected);
            if start > lost && start < elected {
                return ServerError::TimeoutDueToLeaderFail;
            }
        }
        let leader = self.leader();
        if leader == self.member_id {
            let ids: Vec<u64> = self.cluster.members().iter().map(|m| m.id).collect();
            if self.transport.connected_since(&ids, start) < ids.len() / 2 + 1 {
                return ServerError::TimeoutDueToConnectionLost;
            }
        } else if leader != 0 && !self.transport.is_connected_since(leader, start) {
            return ServerError::TimeoutDueToConnectionLost;
        }
        ServerError::Timeout
    }

    /// Waits until this member has applied everything committed before the call (Raft ReadIndex), so a read
    /// served afterwards is linearizable.
    pub async fn linearizable_read(&self) -> Result<(), ServerError> {
        let (tx, rx) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        self.raft
            .admit(Command::ReadIndex(tx), 0, self.request_timeout)
            .await?;
        let wait = async {
            let index = rx.await.map_err(|_| ServerError::Stopped)??;
            let mut applied = self.applied.clone();
            applied
                .wait_for(|a| *a >= index)
                .await
                .map_err(|_| ServerError::Stopped)?;
            Ok(())
        };
        tokio::time::timeout_at(deadline, wait)
            .await
            .map_err(|_| ServerError::Timeout)?
    }
}

/// etcd's request timeout (`ReqTimeout`): 5 s plus two election timeouts.
pub(crate) fn request_timeout(cfg: &Config) -> Duration {
    Duration::from_secs(5) + cfg.election_timeout * 2
}

impl EtcdServer {
    pub(crate) fn send(&self, cmd: Command) -> Result<(), ServerError> {
        self.raft.send(cmd)
    }
}

impl EtcdServer {
    /// Updates the gauges that are read from state rather than counted as things happen.
    pub fn refresh_gauges(&self) {
        use crate::metrics::*;
        let leader = self.leader();
        HAS_LEADER.set(if leader != 0 { 1.0 } else { 0.0 });
        IS_LEADER.set(if leader == self.member_id { 1.0 } else { 0.0 });
        let commit = self.status.commit.load(Ordering::Acquire);
        let applied = self.status.applied.load(Ordering::Acquire);
        PROPOSALS_COMMITTED.set(commit as f64);
        PROPOSALS_APPLIED.set(applied as f64);
        PROPOSALS_PENDING.set(commit.saturating_sub(applied) as f64);
        CURRENT_REVISION.set(self.kv.rev() as f64);
        AUTH_REVISION.set(self.auth.read().revision() as f64);
        COMPACT_REVISION.set(self.kv.compact_rev() as f64);
        let w = self.watchable.counts();
        WATCHERS.set((w.synced + w.unsynced + w.victims) as f64);
        SLOW_WATCHERS.set((w.unsynced + w.victims) as f64);
        // Registered on first use; show them from the first scrape on.
        v3rpc::metrics::register();
        if let Ok(size) = self.backend.size() {
            DB_SIZE.set(size as f64);
        }
        if let Ok(size) = self.backend.size_in_use() {
            DB_SIZE_IN_USE.set(size as f64);
        }
        SERVER_VERSION
            .with_label_values(&[v3rpc::ETCD_VERSION])
            .set(1.0);
        CLUSTER_VERSION
            .with_label_values(&[v3rpc::CLUSTER_VERSION_LABEL])
            .set(1.0);
        SERVER_ID
            .with_label_values(&[&format!("{:x}", self.member_id)])
            .set(1.0);
        QUOTA_BACKEND_BYTES.set(self.cfg.quota_bytes() as f64);
        KEYS.set(self.kv.index_len() as f64);
        apply::metrics::register();
        raftnode::metrics::register();
        refresh_fds();
    }
}
