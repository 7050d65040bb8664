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
//! A peer whose log is behind the leader's compacted log needs the backend sent as a snapshot. That is not
//! supported yet: the `MsgSnapshot` raft-rs produces is not sent, raft-rs is told the snapshot failed, and
//! the failure is logged (at most every `SNAPSHOT_WARN_INTERVAL` per peer) and counted in
//! `etcd_network_snapshot_send_failures`. When it is, snapshots will travel on a separate RPC of the
//! same service, never on the message stream (a large snapshot must not hold up heartbeats).
//!
//! # Faults (tests only)
//! `fault::FaultSwitch` drops all peer traffic of a member while a file exists; see `--unsafe-test-peer-fault-file`.

pub mod fault;
pub mod peer;
pub mod server;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use raft::prelude::{Message, MessageType};

use crate::raft_node::Command;

/// Metadata keys every peer call carries (values: lower-case hex ids).
pub const HEADER_CLUSTER_ID: &str = "hearth-cluster-id";
pub const HEADER_FROM: &str = "hearth-from";
pub const HEADER_TO: &str = "hearth-to";
/// What a member removed from the cluster is told when it calls a peer (etcd's `errMemberRemoved`).
pub const REMOVED_TEXT: &str = "the member has been permanently removed from the cluster";
/// What a member of another cluster is told (etcd's text).
pub const CLUSTER_MISMATCH_TEXT: &str = "cluster ID mismatch";

/// How often a failure to send a snapshot to one peer is logged.
const SNAPSHOT_WARN_INTERVAL: Duration = Duration::from_secs(10);

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
        }
    }
}

/// The sending half of the transport: one `peer::Peer` per remote member. `Send + Sync`; the Raft loop
/// sends through it, the services ask it about connectivity.
pub struct Transport {
    pub local_id: u64,
    pub cluster_id: u64,
    cfg: TransportConfig,
    runtime: tokio::runtime::Handle,
    raft: std::sync::mpsc::Sender<Command>,
    fault: Arc<fault::FaultSwitch>,
    peers: RwLock<HashMap<u64, peer::Peer>>,
    snapshot_warned: Mutex<HashMap<u64, Instant>>,
}

impl Transport {
    pub fn new(
        local_id: u64,
        cluster_id: u64,
        cfg: TransportConfig,
        runtime: tokio::runtime::Handle,
        raft: std::sync::mpsc::Sender<Command>,
        fault: Arc<fault::FaultSwitch>,
    ) -> Transport {
        Transport {
            local_id,
            cluster_id,
            cfg,
            runtime,
            raft,
            fault,
            peers: RwLock::new(HashMap::new()),
            snapshot_warned: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &TransportConfig {
        &self.cfg
    }

    pub fn fault(&self) -> &Arc<fault::FaultSwitch> {
        &self.fault
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
        if self.fault.blocked() {
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

    /// Stops every peer stream.
    pub fn stop(&self) {
        for (_, p) in self.peers_mut().drain() {
            p.stop();
        }
    }

    fn snapshot_needed(&self, to: u64, m: &Message) {
        crate::metrics::SNAPSHOT_SEND_FAILURES
            .with_label_values(&[&format!("{to:x}")])
            .inc();
        let now = Instant::now();
        let mut warned = self
            .snapshot_warned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let due = warned
            .get(&to)
            .is_none_or(|t| now.duration_since(*t) >= SNAPSHOT_WARN_INTERVAL);
        if due {
            warned.insert(to, now);
            tracing::error!(
                remote_peer_id = format!("{to:x}"),
                snapshot_index = m.get_snapshot().get_metadata().index,
                "peer is too far behind to catch up from the log and needs a snapshot, which this version \
                 cannot send yet; it will not catch up until it is removed and added back as a new member \
                 with an empty data dir"
            );
        }
    }
}

impl RaftTransport for Arc<Transport> {
    fn send(&self, msgs: Vec<Message>, report: &mut SendReport) {
        let blocked = self.fault.blocked();
        let peers = self.peers();
        for m in msgs {
            let to = m.to;
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshot_needed(to, &m);
                report.snapshot_failed.push(to);
                continue;
            }
            let queued = !blocked && peers.get(&to).is_some_and(|p| p.try_send(m));
            if !queued {
                crate::metrics::PEER_SENT_FAILURES
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
        let p = peer::Peer::start(
            peer::PeerContext {
                local_id: self.local_id,
                cluster_id: self.cluster_id,
                remote_id: id,
                cfg: self.cfg.clone(),
                raft: self.raft.clone(),
                fault: self.fault.clone(),
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
    }
}

/// Parses a hex id from call metadata.
pub(crate) fn header_id(md: &tonic::metadata::MetadataMap, key: &str) -> Option<u64> {
    md.get(key)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| u64::from_str_radix(s, 16).ok())
}

/// Adds this member's identity to an outgoing peer call.
pub(crate) fn set_headers<T>(req: &mut tonic::Request<T>, cluster_id: u64, from: u64, to: u64) {
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

    #[tokio::test]
    async fn messages_to_down_or_unknown_peers_and_snapshots_are_reported() {
        let (tx, _rx) = std::sync::mpsc::channel();
        let fault = fault::FaultSwitch::off();
        let t = Arc::new(Transport::new(
            1,
            9,
            TransportConfig::default(),
            tokio::runtime::Handle::current(),
            tx,
            fault.clone(),
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
        fault.set(true);
        let mut report = SendReport::default();
        t.send(vec![msg(2, MessageType::MsgHeartbeat)], &mut report);
        assert_eq!(report.unreachable, [2]);
        t.remove_peer(2);
        t.stop();
    }
}
