//! The member's side of the corruption checks (`corrupt` has the checks themselves), as etcd's
//! `corrupt.go` and `monitorKVHash`/`monitorCompactHash`: the store's hashes, the peers' hashes over
//! the peer transport (`rafthttp`'s HashKV call), linearizable reads and the `CORRUPT` alarm through
//! Raft; the initial check at start, and the two tasks that run the others on the leader.
//!
//! A round of peer requests asks every other member, one URL after another until one answers, each
//! within the request timeout; members are asked one after another, as etcd does (a round per period
//! on the leader, so a slow peer delays only the check).

use std::sync::{Arc, Weak};
use std::time::Duration;

use api::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
use corrupt::{CorruptionChecker, Hasher, KeyValueHash, PeerError, PeerHash, PeerHashKv};
use membership::RaftCluster;
use mvcc::KvStore;
use rafthttp::Transport;
use rpctypes::ServerError;
use tokio::sync::watch;

use super::EtcdServer;

/// What the checks reach of this member.
pub(crate) struct MemberHasher {
    member_id: u64,
    kv: Arc<KvStore>,
    cluster: Arc<RaftCluster>,
    transport: Arc<Transport>,
    timeout: Duration,
    /// The running server, for linearizable reads and alarms; none during the initial check,
    /// which needs neither.
    server: Option<Weak<EtcdServer>>,
}

impl MemberHasher {
    /// For the initial check, before the member runs.
    pub(crate) fn before_start(
        member_id: u64,
        kv: Arc<KvStore>,
        cluster: Arc<RaftCluster>,
        transport: Arc<Transport>,
        cfg: &crate::Config,
    ) -> MemberHasher {
        MemberHasher {
            member_id,
            kv,
            cluster,
            transport,
            timeout: super::request_timeout(cfg),
            server: None,
        }
    }

    /// For the checks of a running member.
    pub(crate) fn running(srv: &Arc<EtcdServer>) -> MemberHasher {
        MemberHasher {
            member_id: srv.member_id,
            kv: srv.kv.clone(),
            cluster: srv.cluster.clone(),
            transport: srv.transport.clone(),
            timeout: srv.request_timeout,
            server: Some(Arc::downgrade(srv)),
        }
    }

    fn server(&self) -> Result<Arc<EtcdServer>, String> {
        self.server
            .as_ref()
            .and_then(Weak::upgrade)
            .ok_or_else(|| "the member is not running".to_string())
    }
}

/// The store's hash at `rev` (0: current) and its current revision; the scan runs on a blocking
/// thread.
async fn hash_by_rev(kv: &Arc<KvStore>, rev: i64) -> Result<(KeyValueHash, i64), ServerError> {
    let kv = kv.clone();
    tokio::task::spawn_blocking(move || kv.hash_by_rev(rev))
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?
        .map_err(ServerError::from)
}

impl EtcdServer {
    /// This member's hash at `rev` (0: current), as a peer asks for it.
    pub(crate) async fn hash_by_rev(&self, rev: i64) -> Result<(KeyValueHash, i64), ServerError> {
        hash_by_rev(&self.kv, rev).await
    }
}

impl Hasher for MemberHasher {
    fn member_id(&self) -> u64 {
        self.member_id
    }

    async fn hash_by_rev(&self, rev: i64) -> Result<(KeyValueHash, i64), String> {
        hash_by_rev(&self.kv, rev).await.map_err(|e| e.to_string())
    }

    fn hashes(&self) -> Vec<KeyValueHash> {
        self.kv.compaction_hashes()
    }

    async fn peer_hash_by_rev(&self, rev: i64) -> Vec<PeerHash> {
        let mut out = Vec::new();
        for m in self.cluster.members() {
            if m.id == self.member_id || m.peer_urls.is_empty() {
                continue;
            }
            let mut last = PeerError::Other("no peer URL".into());
            let mut answered = None;
            for url in &m.peer_urls {
                match self
                    .transport
                    .peer_hash_kv(m.id, url, rev, self.timeout)
                    .await
                {
                    Ok(r) => {
                        let header = r.header.unwrap_or_default();
                        answered = Some(PeerHashKv {
                            member_id: header.member_id,
                            revision: header.revision,
                            hash: r.hash,
                            compact_revision: r.compact_revision,
                        });
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(
                            local_member_id = format!("{:x}", self.member_id),
                            requested_revision = rev,
                            remote_peer_endpoint = %url,
                            error = %e,
                            "failed hash kv request"
                        );
                        last = match e {
                            ServerError::FutureRev => PeerError::FutureRev,
                            ServerError::Compacted => PeerError::Compacted,
                            ServerError::ClusterIdMismatch => PeerError::ClusterIdMismatch,
                            e => PeerError::Other(e.to_string()),
                        };
                    }
                }
            }
            out.push(PeerHash {
                id: m.id,
                endpoints: m.peer_urls.clone(),
                resp: answered.ok_or(last),
            });
        }
        out
    }

    async fn linearizable_read_notify(&self) -> Result<(), String> {
        self.server()?
            .linearizable_read()
            .await
            .map_err(|e| e.to_string())
    }

    fn trigger_corrupt_alarm(&self, member: u64) {
        let srv = match self.server() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot raise the CORRUPT alarm: {e}");
                return;
            }
        };
        tokio::spawn(async move {
            let req = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: member,
                alarm: AlarmType::Corrupt as i32,
            };
            if let Err(e) = srv.alarm(req).await {
                tracing::warn!("failed to raise the CORRUPT alarm: {e}");
            }
        });
    }
}

/// etcd's `InitialCheck`, run by a restarting member before it serves: its hash against its peers'.
pub(crate) async fn initial_check(hasher: MemberHasher) -> Result<(), corrupt::InitialCheckError> {
    let timeout = hasher.timeout;
    CorruptionChecker::new(hasher).initial_check(timeout).await
}

/// Runs the periodic check (`--corrupt-check-time`, none when 0) and the compaction hash check
/// (the `CompactHashCheck` gate, every `--compact-hash-check-time`) on the leader, until shutdown.
pub(crate) fn monitor(srv: Arc<EtcdServer>, shutdown: watch::Receiver<bool>) {
    let checker = Arc::new(CorruptionChecker::new(MemberHasher::running(&srv)));
    let period = srv.cfg.corrupt_check_time;
    let compact_period = srv.cfg.compact_hash_check_time;
    let compact_on = srv
        .cfg
        .feature_gates
        .get("CompactHashCheck")
        .copied()
        .unwrap_or(false);
    if !period.is_zero() {
        tracing::info!(
            local_member_id = format!("{:x}", srv.member_id),
            interval = %compactor::go_duration(period),
            "enabled corruption checking"
        );
        let (srv, checker, shutdown) = (srv.clone(), checker.clone(), shutdown.clone());
        tokio::spawn(every(period, srv, shutdown, move || {
            let checker = checker.clone();
            async move {
                if let Err(e) = checker.periodic_check().await {
                    tracing::warn!(error = %e, "failed to check hash KV");
                }
            }
        }));
    }
    if compact_on && !compact_period.is_zero() {
        tokio::spawn(every(compact_period, srv, shutdown, move || {
            let checker = checker.clone();
            async move { checker.compact_hash_check().await }
        }));
    }
}

/// Waits `period`, runs `check` if this member leads, and again, until shutdown (etcd's loops:
/// the period counts from the end of the previous check).
async fn every<F, Fut>(
    period: Duration,
    srv: Arc<EtcdServer>,
    mut shutdown: watch::Receiver<bool>,
    check: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if srv.leader() != srv.member_id {
            continue;
        }
        tokio::select! {
            _ = check() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
