//! The peer transport, after etcd's `rafthttp`: carries Raft messages between the members of a cluster, as
//! gRPC over HTTP/2 on the peer URLs, with Hearth's own service (`hearthraftpb.Raft`).
//!
//! # Sending
//! For every peer there is one long-lived stream (`peer`), fed by a bounded queue. The Raft loop hands
//! messages over with [`Transport::send`], which never blocks: a message for a peer whose stream is not up,
//! or whose queue is full, is dropped and the peer is reported unreachable to raft-rs (as etcd does), which
//! then slows down to probing that peer. Raft tolerates lost messages; what it must never get is an
//! unbounded queue that turns a slow peer into unbounded memory and stale traffic. The stream's own
//! back-pressure is HTTP/2 flow control: when the receiver stops reading, the sender's stream stops
//! draining its queue, the queue fills and further messages are dropped. A broken stream is re-opened
//! with exponential backoff; the messages it still held are dropped and the peer reported unreachable.
//!
//! # Receiving
//! `server` accepts streams from peers after checking the sender's cluster id (a member of another cluster
//! gets etcd's `cluster ID mismatch`), that it was not removed from the cluster (it gets etcd's
//! `the member has been permanently removed from the cluster` and stops itself), and hands decoded
//! messages to the Raft loop. Messages in flight from all peers to the Raft loop are bounded by a
//! semaphore counting their bytes; while it is exhausted the receiver stops reading and HTTP/2 pushes back.
//!
//! # Snapshots
//! A peer whose log is behind the leader's compacted log (or a new member of a cluster whose log was
//! compacted) gets a consistent copy of the leader's backend, on its own call of the same service, never
//! on the message stream (a large snapshot must not hold up heartbeats). At most one transfer per peer
//! and `max_snapshot_sends` in all run at once; a `MsgSnapshot` beyond that is reported failed at once
//! and raft-rs tries again later. See `snapshot`.
//!
//! # Untrusted input
//! Every message from a peer is checked (`validate`) before raft-rs sees it, because raft-rs stops the
//! process on input no correct member sends.
//!
//! # Forwarding and discovery
//! Lease keep-alives, time-to-live queries and learner promotions, which only the leader can answer,
//! are forwarded to it over the peer URLs (`forward`), as etcd's `leasehttp` does; a member joining a
//! cluster asks a peer for the members (`discovery`); the corruption checks ask peers for their KV
//! hash (`hashkv`, etcd's `/members/hashkv`).
//!
//! # What it knows of the member
//! Nothing but three traits, implemented by the server: [`Raft`] (hand received messages and
//! snapshots to the Raft loop, report unreachable peers and snapshot outcomes), [`SnapshotStore`] (copy
//! the backend for a peer, stage and verify a received one) and [`PeerHandler`] (what peers ask of this
//! member: is a member removed, the member list, promotions and lease requests forwarded to the
//! leader, its KV hash). It does not know the Raft loop, the backend, the membership or the server.
//!
//! # Faults (tests only)
//! While the failpoint [`BLACKHOLE`] (`blackholePeerNetwork`) is armed with `return`, the member drops
//! all peer traffic, in and out, as if its network to the other members were cut (its client port keeps
//! working): the end-to-end tests cut members off and heal them through the failpoint file
//! (`docs/failpoints.md`).

#![forbid(unsafe_code)]

pub mod discovery;
mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod hashkv;
pub mod metrics;
mod peer;
mod server;
mod snapshot;
pub mod validate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use api::etcdserverpb::{
    HashKvResponse, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use api::membershippb;
use raft::prelude::{ConfState, Message, MessageType};
use rpctypes::ServerError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::{Channel, Endpoint};

pub use server::PeerService;
pub use snapshot::{Incoming, InstallResult};

/// Metadata keys every peer call carries (values: lower-case hex ids).
pub const HEADER_CLUSTER_ID: &str = "hearth-cluster-id";
pub const HEADER_FROM: &str = "hearth-from";
pub const HEADER_TO: &str = "hearth-to";
/// What a member removed from the cluster is told when it calls a peer (etcd's `errMemberRemoved`).
pub const REMOVED_TEXT: &str = "the member has been permanently removed from the cluster";
/// What a member of another cluster is told (etcd's text).
pub const CLUSTER_MISMATCH_TEXT: &str = "cluster ID mismatch";
/// The failpoint that cuts this member off from its peers (etcd's robustness tests call the fault
/// `BlackholePeerNetwork`).
pub const BLACKHOLE: &str = "blackholePeerNetwork";

/// Whether all peer traffic is to be dropped (see [`BLACKHOLE`]).
pub fn blackholed() -> bool {
    failpoint::is_on(BLACKHOLE)
}

/// What the transport hands to this member's Raft loop (etcd's `rafthttp.Raft`). No method waits
/// for the loop.
pub trait Raft: Send + Sync + 'static {
    /// Messages received from a peer, already checked (`validate`). `permit` counts their bytes
    /// against the transport's in-flight budget until the loop has stepped them. False once the
    /// loop is gone.
    fn process(&self, msgs: Vec<Message>, permit: OwnedSemaphorePermit) -> bool;
    /// Messages to peer `id` were lost.
    fn report_unreachable(&self, id: u64);
    /// A snapshot sent to `to` ended: `ok` if the peer has it.
    fn report_snapshot(&self, to: u64, ok: bool);
    /// A peer refused this member as removed from the cluster.
    fn report_removed(&self);
    /// A received and verified snapshot, for the loop to install. False once the loop is gone.
    fn install_snapshot(&self, snapshot: Incoming) -> bool;
}

/// The member's backend as snapshot transfers use it. Every method may block (the transport calls
/// them from blocking threads).
pub trait SnapshotStore: Send + Sync + 'static {
    /// A consistent copy of the backend, and what it holds, read from the one read snapshot it was
    /// copied from.
    fn copy(&self) -> Result<SnapshotCopy, String>;
    /// Where a received snapshot is written before it is installed.
    fn staging_path(&self) -> PathBuf;
    /// Checks a received file against the message that announced it: a complete database holding
    /// the message's Raft position and configuration, whose membership includes this member.
    fn verify(&self, path: &Path, msg: &Message) -> Result<(), String>;
}

/// A copy of the backend for a peer.
pub struct SnapshotCopy {
    pub file: Box<dyn std::io::Read + Send>,
    pub size: u64,
    /// The consistent index and its term the copy holds.
    pub index: u64,
    pub term: u64,
    /// The Raft configuration it records (None for a backend from before it was recorded).
    pub conf_state: Option<ConfState>,
}

/// What peers ask of this member besides Raft messages and snapshots.
#[tonic::async_trait]
pub trait PeerHandler: Send + Sync + 'static {
    /// Whether `id` was removed from the cluster for good (its calls are refused).
    fn is_removed(&self, id: u64) -> bool;
    /// The members, for a member joining the cluster.
    fn members(&self) -> Vec<membershippb::Member>;
    /// A `MemberPromote` forwarded by a follower; `NotLeader` unless this member leads.
    async fn promote(&self, id: u64) -> Result<Vec<membershippb::Member>, ServerError>;
    /// A keep-alive forwarded by a follower; `NotLeader` unless this member leads.
    async fn lease_renew(&self, id: i64) -> Result<LeaseKeepAliveResponse, ServerError>;
    /// A time-to-live query forwarded by a follower; `NotLeader` unless this member leads.
    async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, ServerError>;
    /// This member's KV hash at `rev` (0: current), for a peer's corruption check.
    async fn hash_kv(&self, rev: i64) -> Result<HashKvResponse, ServerError>;
}

/// What the Raft loop needs from a transport; a test drives the loop with an in-memory one.
pub trait RaftTransport: Send {
    /// Queues `msgs` without blocking, and tells which peers must be reported unreachable (messages dropped)
    /// and which snapshot sends failed.
    fn send(&self, msgs: Vec<Message>, report: &mut SendReport);
    /// Starts (or re-targets) the stream to a peer.
    fn add_peer(&self, id: u64, urls: &[String]);
    fn remove_peer(&self, id: u64);
}

/// Peers the Raft loop must tell raft-rs about after a send.
#[derive(Debug, Default)]
pub struct SendReport {
    pub unreachable: Vec<u64>,
    pub snapshot_failed: Vec<u64>,
}

impl SendReport {
    fn unreachable(&mut self, id: u64) {
        if !self.unreachable.contains(&id) {
            self.unreachable.push(id);
        }
    }
}

#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Messages waiting to be sent to one peer (etcd: 4096).
    pub queue_len: usize,
    /// Bytes of received messages waiting for the Raft loop, from all peers together.
    pub inflight_bytes: usize,
    /// The largest message a peer may send (an entry can be as large as a client request).
    pub max_message_bytes: usize,
    pub dial_timeout: Duration,
    /// HTTP/2 keepalive: a silent peer connection is declared dead after `keepalive + keepalive_timeout`.
    pub keepalive: Duration,
    pub keepalive_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Snapshot transfers sent at once, to all peers together.
    pub max_snapshot_sends: usize,
    /// The largest snapshot a peer may send.
    pub max_snapshot_bytes: u64,
    /// How `https` peer URLs are dialed (the peer certificate presented, the CA trusted); `None`:
    /// only `http` peers can be reached.
    pub tls: Option<transport::ClientTls>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            queue_len: 4096,
            inflight_bytes: 64 * 1024 * 1024,
            max_message_bytes: 64 * 1024 * 1024,
            dial_timeout: Duration::from_secs(1),
            keepalive: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            max_snapshot_sends: 2,
            // Eight times etcd's largest suggested backend quota.
            max_snapshot_bytes: 64 << 30,
            tls: None,
        }
    }
}

/// The sending half of the transport: one `peer::Peer` per remote member. `Send + Sync`; the Raft loop
/// sends through it, the services ask it about connectivity.
pub struct Transport {
    local_id: u64,
    cluster_id: u64,
    cfg: TransportConfig,
    runtime: tokio::runtime::Handle,
    raft: Arc<dyn Raft>,
    peers: RwLock<HashMap<u64, peer::Peer>>,
    /// Where snapshots for peers are copied from and received ones staged (none: snapshots can be
    /// neither sent nor received).
    snapshots: Option<Arc<dyn SnapshotStore>>,
    /// Snapshot transfers in flight, by peer.
    snapshot_sends: Mutex<HashMap<u64, tokio::task::JoinHandle<()>>>,
    snapshot_slots: Arc<Semaphore>,
    forwarding: forward::Channels,
}

impl Transport {
    pub fn new(
        local_id: u64,
        cluster_id: u64,
        cfg: TransportConfig,
        runtime: tokio::runtime::Handle,
        raft: Arc<dyn Raft>,
    ) -> Transport {
        Transport {
            local_id,
            cluster_id,
            snapshot_slots: Arc::new(Semaphore::new(cfg.max_snapshot_sends.max(1))),
            cfg,
            runtime,
            raft,
            peers: RwLock::new(HashMap::new()),
            snapshots: None,
            snapshot_sends: Mutex::new(HashMap::new()),
            forwarding: forward::Channels::default(),
        }
    }

    /// Snapshots for peers are copies of `store`, and received ones are staged there.
    pub fn with_snapshots(mut self, store: Arc<dyn SnapshotStore>) -> Transport {
        self.snapshots = Some(store);
        self
    }

    pub fn local_id(&self) -> u64 {
        self.local_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn config(&self) -> &TransportConfig {
        &self.cfg
    }

    fn peers(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, peer::Peer>> {
        // Only whole-map inserts and removes happen under the lock; a poisoned lock is harmless.
        self.peers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn peers_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, peer::Peer>> {
        self.peers.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Since when the stream to `id` has been up (None: it is down, or `id` is not a peer).
    pub fn active_since(&self, id: u64) -> Option<Instant> {
        if blackholed() {
            return None;
        }
        self.peers().get(&id).and_then(|p| p.status.active_since())
    }

    /// etcd's `isConnectedSince`: the stream to `id` has been up since before `since`.
    pub fn is_connected_since(&self, id: u64, since: Instant) -> bool {
        self.active_since(id).is_some_and(|t| t <= since)
    }

    /// How many of `members` (this member counts as connected) have had their stream up since `since`.
    pub fn connected_since(&self, members: &[u64], since: Instant) -> usize {
        members
            .iter()
            .filter(|&&id| id == self.local_id || self.is_connected_since(id, since))
            .count()
    }

    /// Stops every peer stream and snapshot transfer.
    pub fn stop(&self) {
        for (_, p) in self.peers_mut().drain() {
            p.stop();
        }
        for (_, t) in self.sends().drain() {
            t.abort();
        }
    }

    /// A peer's current URLs.
    pub fn peer_urls(&self, id: u64) -> Vec<String> {
        self.peers()
            .get(&id)
            .map(|p| p.urls.borrow().clone())
            .unwrap_or_default()
    }

    fn sends(&self) -> std::sync::MutexGuard<'_, HashMap<u64, tokio::task::JoinHandle<()>>> {
        self.snapshot_sends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Starts sending `m`'s snapshot to its peer; false if it cannot start now (raft-rs is then told
    /// the snapshot failed, and tries again later).
    fn start_snapshot(&self, m: Message) -> bool {
        let to = m.to;
        let Some(store) = self.snapshots.clone() else {
            return false;
        };
        let urls = self.peer_urls(to);
        if urls.is_empty() || blackholed() {
            return false;
        }
        let mut sends = self.sends();
        sends.retain(|_, t| !t.is_finished());
        if sends.contains_key(&to) {
            return false;
        }
        let Ok(slot) = self.snapshot_slots.clone().try_acquire_owned() else {
            tracing::info!(
                remote_peer_id = format!("{to:x}"),
                "a snapshot for the peer waits: {} transfers are already running",
                self.cfg.max_snapshot_sends
            );
            return false;
        };
        let ctx = snapshot::SendContext {
            local_id: self.local_id,
            cluster_id: self.cluster_id,
            to,
            urls,
            cfg: self.cfg.clone(),
            store,
            raft: self.raft.clone(),
        };
        let task = self.runtime.spawn(async move {
            snapshot::send(ctx, m).await;
            drop(slot);
        });
        sends.insert(to, task);
        true
    }
}

impl RaftTransport for Arc<Transport> {
    fn send(&self, msgs: Vec<Message>, report: &mut SendReport) {
        let blocked = blackholed();
        let peers = self.peers();
        for m in msgs {
            let to = m.to;
            if m.get_msg_type() == MessageType::MsgSnapshot {
                if !self.start_snapshot(m) {
                    metrics::SNAPSHOT_SEND_FAILURES
                        .with_label_values(&[&format!("{to:x}")])
                        .inc();
                    report.snapshot_failed.push(to);
                }
                continue;
            }
            let queued = !blocked && peers.get(&to).is_some_and(|p| p.try_send(m));
            if !queued {
                metrics::PEER_SENT_FAILURES
                    .with_label_values(&[&format!("{to:x}")])
                    .inc();
                report.unreachable(to);
            }
        }
    }

    fn add_peer(&self, id: u64, urls: &[String]) {
        if id == self.local_id {
            return;
        }
        let mut peers = self.peers_mut();
        if let Some(p) = peers.get(&id) {
            p.set_urls(urls);
            return;
        }
        tracing::info!(
            remote_peer_id = format!("{id:x}"),
            remote_peer_urls = ?urls,
            "added remote peer"
        );
        metrics::show_peer(id);
        let p = peer::Peer::start(
            peer::PeerContext {
                local_id: self.local_id,
                cluster_id: self.cluster_id,
                remote_id: id,
                cfg: self.cfg.clone(),
                raft: self.raft.clone(),
            },
            urls,
            &self.runtime,
        );
        peers.insert(id, p);
    }

    fn remove_peer(&self, id: u64) {
        if let Some(p) = self.peers_mut().remove(&id) {
            tracing::info!(remote_peer_id = format!("{id:x}"), "removed remote peer");
            p.stop();
        }
        if let Some(t) = self.sends().remove(&id) {
            t.abort();
        }
        self.forwarding.forget(id);
    }
}

/// How every call to a peer is made: plaintext or TLS by the URL's scheme (`transport::endpoint`),
/// dial timeout, no Nagle, HTTP/2 keepalive.
pub(crate) fn endpoint(
    url: &str,
    cfg: &TransportConfig,
) -> Result<(Endpoint, transport::Connector), String> {
    let (e, c) =
        transport::endpoint(url, cfg.tls.as_ref()).map_err(|e| format!("bad peer URL: {e}"))?;
    let e = e
        .connect_timeout(cfg.dial_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(cfg.keepalive)
        .keep_alive_timeout(cfg.keepalive_timeout)
        .keep_alive_while_idle(true);
    Ok((e, c))
}

/// Dials a peer URL.
pub(crate) async fn connect(url: &str, cfg: &TransportConfig) -> Result<Channel, String> {
    let (e, c) = endpoint(url, cfg)?;
    match tokio::time::timeout(cfg.dial_timeout * 2, e.connect_with_connector(c)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("dial: {}", error_chain(&e))),
        Err(_) => Err("dial timed out".into()),
    }
}

/// An error and its sources, as one line (tonic's "transport error" alone says nothing of a
/// refused certificate).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

/// Parses a hex id from call metadata.
fn header_id(md: &tonic::metadata::MetadataMap, key: &str) -> Option<u64> {
    md.get(key)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| u64::from_str_radix(s, 16).ok())
}

/// Adds this member's identity to an outgoing peer call.
fn set_headers<T>(req: &mut tonic::Request<T>, cluster_id: u64, from: u64, to: u64) {
    let md = req.metadata_mut();
    for (k, v) in [
        (HEADER_CLUSTER_ID, cluster_id),
        (HEADER_FROM, from),
        (HEADER_TO, to),
    ] {
        if let Ok(v) = format!("{v:x}").parse() {
            md.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(to: u64, t: MessageType) -> Message {
        let mut m = Message {
            to,
            from: 1,
            ..Default::default()
        };
        m.set_msg_type(t);
        m
    }

    /// A Raft loop that is never there.
    struct NoLoop;

    impl Raft for NoLoop {
        fn process(&self, _: Vec<Message>, _: OwnedSemaphorePermit) -> bool {
            false
        }
        fn report_unreachable(&self, _: u64) {}
        fn report_snapshot(&self, _: u64, _: bool) {}
        fn report_removed(&self) {}
        fn install_snapshot(&self, _: Incoming) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn messages_to_down_or_unknown_peers_and_snapshots_are_reported() {
        let t = Arc::new(Transport::new(
            1,
            9,
            TransportConfig::default(),
            tokio::runtime::Handle::current(),
            Arc::new(NoLoop),
        ));
        // Nothing listens there: the stream never comes up, so nothing is queued.
        t.add_peer(2, &["http://127.0.0.1:1".to_string()]);
        t.add_peer(1, &["http://127.0.0.1:1".to_string()]);
        let mut report = SendReport::default();
        t.send(
            vec![
                msg(2, MessageType::MsgHeartbeat),
                msg(2, MessageType::MsgAppend),
                msg(3, MessageType::MsgHeartbeat),
                msg(2, MessageType::MsgSnapshot),
            ],
            &mut report,
        );
        assert_eq!(report.unreachable, [2, 3]);
        assert_eq!(report.snapshot_failed, [2]);
        assert!(t.active_since(2).is_none());
        assert_eq!(t.connected_since(&[1, 2], Instant::now()), 1);
        t.remove_peer(2);
        t.stop();
    }
}
