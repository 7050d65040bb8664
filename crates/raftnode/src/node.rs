//! The Raft loop: one thread that owns the raft-rs `RawNode` and the WAL, and hands committed entries to
//! the apply thread (`apply_thread`).
//!
//! Each turn it takes the queued commands (proposals, read-index requests, messages from peers, the apply
//! thread's progress), ticks the clock when due, and handles a `Ready`: entries and hard state are
//! appended to the WAL with one fdatasync, and committed entries are handed to the apply thread through a
//! bounded queue. Because every proposal that arrived while the previous fsync was running lands in the
//! same `Ready`, concurrent clients share fsyncs (group commit) without any timer. Applying never holds
//! up a tick or a heartbeat: when the apply queue is full the loop remembers the range of committed
//! indexes still to hand over (the entries stay in raft-rs's log) and goes on.
//!
//! Durability order: an entry is fsynced in the WAL before raft-rs counts it as persisted, and it is applied
//! (and its client answered) only once committed, so an acknowledged write survives a crash. Messages raft-rs
//! marks as persisted messages (votes, append responses) leave only after that fsync; the others (a
//! leader's appends and heartbeats) leave before it, so followers write in parallel with the leader. The
//! backend commits without fsync and is made durable every `BACKEND_SYNC_INTERVAL` (by the apply thread);
//! after a crash the WAL is replayed from the backend's consistent index.
//!
//! Bounds (`queue` says how the command queue is bounded): client commands queue up to a byte budget;
//! proposals are refused with `etcdserver: too many requests` while the committed index is more than
//! [`MAX_APPLY_GAP`] past the applied one (checked by the caller, [`RaftStatus::check_apply_gap`]), when
//! more than `proposal::MAX_WAITING` wait for a leader, and dropped by raft-rs past
//! `MAX_UNCOMMITTED_BYTES` of uncommitted log; reads waiting for a read index are capped at `MAX_READS`.
//!
//! Membership changes are conf change entries, applied by the loop itself once the apply thread has
//! applied everything before them: checked against the membership (`membership`), applied to raft-rs,
//! written to the backend with the consistent index, and then made visible to the transport and the
//! services; a member that applies its own removal stops shortly after (as etcd does).
//!
//! Log compaction: every `snapshot_count` applied entries the apply thread syncs the backend and the loop
//! writes a snapshot marker at the consistent index synced to the WAL, older WAL segments are released, and the in-memory log keeps only
//! `snapshot_catchup_entries` entries before the marker for slow followers. The backend file is the snapshot:
//! a follower behind the compacted log is sent a copy of it (by the peer transport, from
//! [`BackendSnapshots`]), which it installs between two turns of this loop (`snapshot`).
//!
//! Messages from peers pass `admit` before they are stepped: raft-rs stops the process on some inputs a
//! correct member never sends.
//!
//! The loop is reached only through its command queue ([`Handle`]); the peer transport reaches it as
//! its [`rafthttp::Raft`], and it reaches the peers only through [`RaftTransport`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeV2, Entry, EntryType, Message, ReadState};
use raft::storage::MemStorage;
use raft::{RawNode, SnapshotStatus, StateRole, Storage as _};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit};

use apply::applier::Applier;
use apply::wait::Wait;
use apply_thread::SharedApplier;
use membership::{Change, Member, RaftCluster, MEMBER_UPDATE_CONTEXT};
use rafthttp::{RaftTransport, SendReport};
use rpctypes::ServerError;

use crate::loopcore::{Reads, REMOVED_STOP_DELAY};
use crate::metrics;
use crate::proposal::{Payload, Pending, ProposalState, Waiting};
use crate::queue::Commands;
use crate::storage::RecoveredLog;
use crate::RaftError;

/// How many entries before a snapshot stay in memory so a slightly slow follower catches up from the log
/// (etcd's default).
pub const SNAPSHOT_CATCHUP_ENTRIES: u64 = 5000;
/// How often the backend is made durable when there were writes.
const BACKEND_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// etcd's `maxGapBetweenApplyAndCommitIndex`: proposals are refused while the committed index is further
/// than this past the applied one.
pub const MAX_APPLY_GAP: u64 = 5000;
/// etcd's `MaxUncommittedEntriesSize`: a leader drops proposals past this many bytes of uncommitted log.
const MAX_UNCOMMITTED_BYTES: u64 = 1 << 30;
/// The most bytes of committed entries one `Ready` hands out, so one apply batch (and the apply queue,
/// [`APPLY_QUEUE`] batches) stays bounded.
const MAX_COMMITTED_BYTES_PER_READY: u64 = 4 * 1024 * 1024;
/// The most linearizable reads waiting for a read index at once; past it a read is refused with
/// `etcdserver: too many requests`.
const MAX_READS: usize = 64 * 1024;
/// The most commands taken in one turn, so ticks and readies are never starved.
const MAX_COMMANDS_PER_TURN: usize = 8192;
/// The result of a membership change, for the member that proposed it.
pub type ConfResult = Result<Vec<Member>, ServerError>;

pub enum Command {
    Propose {
        id: u64,
        data: Vec<u8>,
        state: Arc<ProposalState>,
    },
    /// A membership change, and the request id its result is delivered to.
    ProposeMembership {
        id: u64,
        payload: Payload,
        state: Arc<ProposalState>,
    },
    ReadIndex(oneshot::Sender<Result<u64, ServerError>>),
    /// Start handing leadership to `target` (a voter); answered once the transfer is under way.
    TransferLeader {
        target: u64,
        reply: oneshot::Sender<Result<(), ServerError>>,
    },
    /// Messages from a peer. The permit counts them against the transport's in-flight budget until stepped.
    Step {
        msgs: Vec<Message>,
        permit: OwnedSemaphorePermit,
    },
    /// Messages to this peer were lost.
    Unreachable(u64),
    /// How far member `id` has replicated the log, and how far the leader has: only the leader knows
    /// (None elsewhere). `(None, _)` if `id` is not replicating.
    Progress {
        id: u64,
        reply: oneshot::Sender<Option<(Option<u64>, u64)>>,
    },
    /// A peer refused this member as removed from the cluster.
    Removed,
    /// A snapshot from the leader, received and verified, to install (`snapshot`).
    InstallSnapshot(rafthttp::Incoming),
    /// A snapshot send to `to` ended; raft-rs hears whether it succeeded.
    SnapshotStatus {
        to: u64,
        ok: bool,
    },
    /// Finish the current turn, make the backend durable and return.
    Stop,
    /// A client's command, holding its share of the queue's budget until the loop takes it
    /// ([`crate::Handle::admit`]).
    Admitted {
        cmd: Box<Command>,
        permit: OwnedSemaphorePermit,
    },
    /// The apply thread applied everything up to `index`; with `snapshot`, it made the backend durable
    /// at that consistent index and a snapshot marker is due there.
    Applied {
        index: u64,
        snapshot: Option<u64>,
    },
    /// The apply thread could not apply an entry: the member stops.
    ApplyFailed(apply::applier::ApplyFailed),
}

/// What the rest of the server may read about the node without talking to its thread.
#[derive(Default)]
pub struct RaftStatus {
    pub term: AtomicU64,
    pub leader: AtomicU64,
    pub commit: AtomicU64,
    pub applied: AtomicU64,
    /// When the current leader was first seen (etcd's `leadElectedTime`).
    pub lead_elected: Mutex<Option<Instant>>,
}

impl RaftStatus {
    pub fn lead_elected(&self) -> Option<Instant> {
        *self.lead_elected.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// etcd's refusal of a proposal while the member applies far behind what is committed
    /// (`processInternalRaftRequestOnce`): `etcdserver: too many requests` once the committed index is
    /// more than [`MAX_APPLY_GAP`] past the applied one.
    pub fn check_apply_gap(&self) -> Result<(), ServerError> {
        let committed = self.commit.load(Ordering::Acquire);
        let applied = self.applied.load(Ordering::Acquire);
        if committed > applied.saturating_add(MAX_APPLY_GAP) {
            return Err(ServerError::TooManyRequests);
        }
        Ok(())
    }
}

/// The membership side of the node: what conf changes update and report to.
pub struct ClusterParts {
    pub cluster: Arc<RaftCluster>,
    pub transport: Box<dyn RaftTransport>,
    pub conf_wait: Arc<Wait<ConfResult>>,
}

pub struct RaftNode {
    node: RawNode<MemStorage>,
    wal: wal::Wal,
    /// Shared with the apply thread, which holds it while it applies a batch.
    applier: SharedApplier,
    kv: Arc<mvcc::KvStore>,
    /// Answers proposals that never reach the log without waiting for the applier.
    wait: Arc<Wait<apply::applier::ApplyResult>>,
    backend: Arc<backend::Backend>,
    commands: Commands,
    status: Arc<RaftStatus>,
    applied_tx: Arc<watch::Sender<u64>>,
    cluster: ClusterParts,
    tick_interval: Duration,
    snapshot_catchup_entries: u64,
    snapshot_index: u64,
    /// The same, for the apply thread (which decides when a marker is due).
    shared_snapshot_index: Arc<AtomicU64>,
    /// The last index applied, as the apply thread last reported it (or the loop applied).
    applied: u64,
    /// The last committed index handed to the apply thread or applied here.
    handed: u64,
    /// Committed entries not handed over yet because the apply queue was full: their index range (they
    /// stay in raft-rs's log until applied).
    backlog: Option<(u64, u64)>,
    apply_tx: Option<SyncSender<Vec<Entry>>>,
    apply_thread: Option<std::thread::JoinHandle<()>>,
    progress: Arc<apply_thread::Progress>,
    reads: Reads<oneshot::Sender<Result<u64, ServerError>>>,
    last_leader: u64,
    waiting: Waiting,
    /// Set once this member is no longer in the cluster: when to stop.
    stop_at: Option<Instant>,
    conf_changed: bool,
    /// A command failed in a way that must stop the loop (a snapshot install that went wrong).
    fatal: Option<RaftError>,
    heartbeats: crate::heartbeat::Heartbeats,
}

pub struct NodeConfig {
    pub heartbeat: Duration,
    pub election: Duration,
    pub snapshot_count: u64,
    pub snapshot_catchup_entries: u64,
}

impl RaftNode {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        log: RecoveredLog,
        cfg: &NodeConfig,
        applier: Applier,
        backend: Arc<backend::Backend>,
        commands: Commands,
        status: Arc<RaftStatus>,
        applied_tx: watch::Sender<u64>,
        cluster: ClusterParts,
    ) -> Result<RaftNode, RaftError> {
        let hs = log.storage.initial_state()?.hard_state;
        // Entries the backend already holds are not handed to us again; anything between the saved commit
        // and the backend's index is re-delivered once committed and skipped by the applier.
        let applied = log
            .snapshot_index
            .max(applier.consistent_index().min(hs.commit));
        let election_tick =
            (cfg.election.as_millis() / cfg.heartbeat.as_millis().max(1)).max(2) as usize;
        let rc = raft::Config {
            id: log.meta.node_id,
            election_tick,
            heartbeat_tick: 1,
            applied,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 512,
            // etcd's bound on the uncommitted tail of a leader's log; past it proposals are dropped.
            max_uncommitted_size: MAX_UNCOMMITTED_BYTES,
            max_committed_size_per_ready: MAX_COMMITTED_BYTES_PER_READY,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        rc.validate()?;
        let node = RawNode::new(&rc, log.storage, &crate::log::logger())?;
        status.applied.store(applied, Ordering::Release);
        status.term.store(node.raft.term, Ordering::Release);
        status.leader.store(node.raft.leader_id, Ordering::Release);
        applied_tx.send_replace(applied);
        let applied_tx = Arc::new(applied_tx);
        let kv = applier.kv().clone();
        let wait = applier.waiters().clone();
        let applier = Arc::new(Mutex::new(applier));
        let progress = Arc::new(apply_thread::Progress::new(applied));
        let shared_snapshot_index = Arc::new(AtomicU64::new(log.snapshot_index));
        let (apply_tx, entries) = std::sync::mpsc::sync_channel(apply_thread::APPLY_QUEUE);
        let worker = apply_thread::Worker {
            applier: applier.clone(),
            entries,
            loop_tx: commands.tx.clone(),
            status: status.clone(),
            applied_tx: applied_tx.clone(),
            progress: progress.clone(),
            backend: backend.clone(),
            snapshot_count: cfg.snapshot_count.max(1),
            snapshot_index: shared_snapshot_index.clone(),
        };
        let apply_thread = std::thread::Builder::new()
            .name("raft-apply".into())
            .spawn(move || worker.run())
            .map_err(|e| RaftError::Corrupt(format!("cannot start the apply thread: {e}")))?;
        let mut n = RaftNode {
            node,
            wal: log.wal,
            applier,
            kv,
            wait,
            backend,
            commands,
            status,
            applied_tx,
            cluster,
            tick_interval: cfg.heartbeat,
            snapshot_catchup_entries: cfg.snapshot_catchup_entries,
            snapshot_index: log.snapshot_index,
            shared_snapshot_index,
            applied,
            handed: applied,
            backlog: None,
            apply_tx: Some(apply_tx),
            apply_thread: Some(apply_thread),
            progress,
            reads: Reads::new(MAX_READS),
            last_leader: raft::INVALID_ID,
            waiting: Waiting::default(),
            stop_at: None,
            conf_changed: false,
            fatal: None,
            heartbeats: crate::heartbeat::Heartbeats::new(cfg.heartbeat),
        };
        n.settle()?;
        Ok(n)
    }

    /// Handles what is ready before the loop starts: applies what is committed (a new cluster's first
    /// entries make its configuration), and lets a lone voter become leader, so that a single member serves
    /// as soon as it has started.
    fn settle(&mut self) -> Result<(), RaftError> {
        self.campaign_if_alone()?;
        for _ in 0..16 {
            if !self.node.has_ready() {
                break;
            }
            self.on_ready()?;
            if std::mem::take(&mut self.conf_changed) {
                self.campaign_if_alone()?;
            }
        }
        Ok(())
    }

    /// A lone voter needs no election timeout to know it wins.
    fn campaign_if_alone(&mut self) -> Result<(), RaftError> {
        let r = &self.node.raft;
        let cs = r.prs().conf().to_conf_state();
        let alone = cs.voters == [r.id] && cs.voters_outgoing.is_empty();
        if alone && r.state != StateRole::Leader {
            self.node.campaign()?;
        }
        Ok(())
    }

    /// Runs until asked to stop or every [`crate::Handle`] is gone. An error is fatal: the log or the backend could not be
    /// written, and continuing could acknowledge a write that is not durable.
    pub fn run(mut self) -> Result<(), RaftError> {
        let mut next_tick = Instant::now() + self.tick_interval;
        let result = loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.commands.rx.recv_timeout(wait) {
                Ok(cmd) => {
                    let mut stop = !self.handle(cmd);
                    for _ in 0..MAX_COMMANDS_PER_TURN {
                        match self.commands.rx.try_recv() {
                            Ok(cmd) => stop |= !self.handle(cmd),
                            Err(_) => break,
                        }
                    }
                    if let Some(e) = self.fatal.take() {
                        break Err(e);
                    }
                    if stop {
                        break Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) if self.commands.abandoned() => break Ok(()),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break Ok(()),
            }
            let now = Instant::now();
            if now >= next_tick {
                self.node.tick();
                next_tick = now + self.tick_interval;
                self.waiting.purge();
            }
            if self.stop_at.is_some_and(|t| now >= t) {
                break Err(RaftError::Removed);
            }
            if let Err(e) = self.turn() {
                break Err(e);
            }
        };
        // The apply thread finishes what it was handed (entries left in the backlog are replayed from
        // the WAL at the next start).
        self.stop_apply();
        let synced = self.sync_backend();
        self.fail_reads(ServerError::Stopped);
        for p in self.waiting.drain() {
            if p.state.claim() {
                fail_pending(&self.wait, &self.cluster.conf_wait, p, ServerError::Stopped);
            }
        }
        result.and(synced)
    }

    /// What follows the commands of a turn: held proposals and reads go out, a `Ready` is handled, the
    /// apply queue takes what waited for room.
    fn turn(&mut self) -> Result<(), RaftError> {
        self.flush_waiting();
        self.flush_reads();
        if self.node.has_ready() {
            self.on_ready()?;
            // A leader may have just appeared.
            self.flush_waiting();
        }
        self.flush_backlog()?;
        if std::mem::take(&mut self.conf_changed) {
            self.campaign_if_alone()?;
        }
        Ok(())
    }

    fn stop_apply(&mut self) {
        drop(self.apply_tx.take());
        if let Some(t) = self.apply_thread.take() {
            if t.join().is_err() {
                tracing::error!("the apply thread panicked");
            }
        }
    }

    /// Returns false when asked to stop.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Propose { id, data, state } => self.propose(Pending {
                id,
                payload: Payload::Normal(data),
                state,
            }),
            Command::ProposeMembership { id, payload, state } => {
                self.propose(Pending { id, payload, state })
            }
            Command::ReadIndex(tx) => {
                if let Err(tx) = self.reads.push(tx) {
                    let _ = tx.send(Err(ServerError::TooManyRequests));
                }
            }
            Command::TransferLeader { target, reply } => {
                let r = &self.node.raft;
                let result = if r.leader_id != r.id {
                    Err(ServerError::NotLeader)
                } else if !r.prs().conf().voters().contains(target) {
                    Err(ServerError::BadLeaderTransferee)
                } else {
                    self.node.transfer_leader(target);
                    Ok(())
                };
                let _ = reply.send(result);
            }
            Command::Step { msgs, permit } => {
                for mut m in msgs {
                    if let Err(e) = crate::admit::admit(&self.node.raft, &mut m) {
                        let from = format!("{:x}", m.from);
                        tracing::warn!(remote_peer_id = %from, "dropped a raft message from a peer: {e}");
                        rafthttp::metrics::PEER_RECEIVED_FAILURES
                            .with_label_values(&[&from])
                            .inc();
                        continue;
                    }
                    self.heartbeats.received(&m, Instant::now());
                    if let Err(e) = self.node.step(m) {
                        tracing::debug!("raft message not stepped: {e}");
                    }
                }
                drop(permit);
            }
            Command::InstallSnapshot(incoming) => {
                if let Err(e) = self.on_snapshot(incoming) {
                    self.fatal = Some(e);
                }
            }
            Command::SnapshotStatus { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.node.report_snapshot(to, status);
            }
            Command::Unreachable(id) => self.node.report_unreachable(id),
            Command::Progress { id, reply } => {
                let r = &self.node.raft;
                let progress = (r.state == StateRole::Leader).then(|| {
                    let prs = r.prs();
                    (
                        prs.get(id).map(|p| p.matched),
                        prs.get(r.id).map(|p| p.matched).unwrap_or(0),
                    )
                });
                let _ = reply.send(progress);
            }
            Command::Removed => {
                tracing::warn!("this member was removed from the cluster; stopping");
                self.stop_at = Some(Instant::now());
            }
            Command::Stop => return false,
            Command::Admitted { cmd, permit } => {
                drop(permit);
                return self.handle(*cmd);
            }
            Command::Applied { index, snapshot } => {
                self.applied = self.applied.max(index);
                if index > self.node.raft.raft_log.applied {
                    self.node.advance_apply_to(index);
                }
                if let Some(at) = snapshot {
                    if let Err(e) = self.write_snapshot_marker(at) {
                        self.fatal = Some(e);
                    }
                }
            }
            Command::ApplyFailed(e) => self.fatal = Some(RaftError::Apply(e)),
        }
        true
    }

    /// Proposes at once if there is a leader, else holds the proposal until there is one.
    fn propose(&mut self, p: Pending) {
        if self.node.raft.leader_id == raft::INVALID_ID {
            if let Err(p) = self.waiting.push(p) {
                if p.state.claim() {
                    fail_pending(
                        &self.wait,
                        &self.cluster.conf_wait,
                        p,
                        ServerError::TooManyRequests,
                    );
                }
            }
            return;
        }
        if !p.state.claim() {
            return;
        }
        let r = match &p.payload {
            Payload::Normal(data) => self.node.propose(vec![], data.clone()),
            Payload::Conf(cc) => self.node.propose_conf_change(vec![], cc.clone()),
            Payload::MemberUpdate(data) => self
                .node
                .propose(MEMBER_UPDATE_CONTEXT.to_vec(), data.clone()),
        };
        if let Err(e) = r {
            tracing::debug!(id = p.id, "proposal dropped: {e}");
            metrics::PROPOSALS_FAILED.inc();
            let err = match e {
                raft::Error::ProposalDropped => ServerError::ProposalDropped,
                other => ServerError::Internal(other.to_string()),
            };
            fail_pending(&self.wait, &self.cluster.conf_wait, p, err);
        }
    }

    fn flush_waiting(&mut self) {
        if self.waiting.is_empty() || self.node.raft.leader_id == raft::INVALID_ID {
            return;
        }
        let waiting: Vec<Pending> = self.waiting.drain().collect();
        for p in waiting {
            self.propose(p);
        }
    }

    /// Sends one read-index request for every read that arrived since the last one, and sends again those
    /// left unanswered too long (`loopcore::Reads`).
    fn flush_reads(&mut self) {
        let r = &self.node.raft;
        if r.leader_id == raft::INVALID_ID || (r.leader_id == r.id && !r.commit_to_current_term()) {
            return;
        }
        let requests = self.reads.flush(Instant::now());
        // etcd counts a read index that had to be asked again as slow.
        metrics::SLOW_READ_INDEXES.inc_by(requests.retried as f64);
        for ctx in requests.contexts {
            self.node.read_index(ctx);
        }
    }

    fn on_read_state(&mut self, rs: ReadState) {
        for tx in self.reads.answered(&rs.request_ctx) {
            let _ = tx.send(Ok(rs.index));
        }
    }

    fn fail_reads(&mut self, e: ServerError) {
        if !self.reads.is_empty() {
            metrics::READ_INDEXES_FAILED.inc();
        }
        for tx in self.reads.take_all() {
            let _ = tx.send(Err(e.clone()));
        }
    }

    fn on_ready(&mut self) -> Result<(), RaftError> {
        let mut ready = self.node.ready();
        let mut report = SendReport::default();
        // A leader's appends and heartbeats may leave before its own fsync (raft-rs's Ready contract).
        failpoint::hit("raftBeforeLeaderSend");
        let msgs = ready.take_messages();
        self.heartbeats.sent(&msgs, Instant::now());
        self.cluster.transport.send(msgs, &mut report);
        let snapshot =
            (!ready.snapshot().is_empty()).then(|| ready.snapshot().get_metadata().index);
        if snapshot.is_some() {
            self.store_snapshot(ready.snapshot().clone())?;
        }
        for rs in ready.take_read_states() {
            self.on_read_state(rs);
        }
        self.hand_off(ready.take_committed_entries())?;
        let entries = ready.take_entries();
        let hs = ready.hs().cloned();
        if !entries.is_empty() || hs.is_some() {
            let hard = hs
                .clone()
                .unwrap_or_else(|| self.node.store().rl().hard_state().clone());
            let hard_bytes = hard
                .write_to_bytes()
                .map_err(|e| RaftError::Corrupt(e.to_string()))?;
            let mut wal_entries = Vec::with_capacity(entries.len());
            for e in &entries {
                let data = e
                    .write_to_bytes()
                    .map_err(|e| RaftError::Corrupt(e.to_string()))?;
                wal_entries.push(wal::Entry {
                    index: e.index,
                    term: e.term,
                    data,
                });
            }
            let started = Instant::now();
            failpoint::hit("raftBeforeSave");
            self.wal.save(Some(&hard_bytes), &wal_entries)?;
            failpoint::hit("raftAfterSave");
            metrics::WAL_FSYNC.observe(started.elapsed().as_secs_f64());
            let mut store = self.node.mut_store().wl();
            store.append(&entries)?;
            if let Some(hs) = hs {
                store.set_hardstate(hs);
            }
        }
        // Votes and append responses promise what is now on disk: only now may they leave.
        failpoint::hit("raftBeforeFollowerSend");
        self.cluster
            .transport
            .send(ready.take_persisted_messages(), &mut report);
        failpoint::hit("raftBeforeAdvance");
        // Applying is the apply thread's: raft-rs hears how far it got from its reports.
        let mut light = self.node.advance_append(ready);
        if let Some(index) = snapshot {
            if index > self.node.raft.raft_log.applied {
                self.node.advance_apply_to(index);
            }
        }
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().wl().mut_hard_state().commit = commit;
        }
        let msgs = light.take_messages();
        self.heartbeats.sent(&msgs, Instant::now());
        self.cluster.transport.send(msgs, &mut report);
        self.hand_off(light.take_committed_entries())?;
        for id in report.unreachable {
            self.node.report_unreachable(id);
        }
        for id in report.snapshot_failed {
            self.node.report_snapshot(id, SnapshotStatus::Failure);
        }
        self.publish_status();
        Ok(())
    }

    /// Hands newly committed entries (the next ones, in log order) to the applier without waiting for
    /// room: behind a backlog they join it; what the apply queue cannot take now becomes the backlog.
    fn hand_off(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(());
        };
        if let Some((_, hi)) = &mut self.backlog {
            *hi = last;
            return Ok(());
        }
        if let Some(first) = self.dispatch(entries, false)? {
            self.backlog = Some((first, last));
        }
        Ok(())
    }

    /// Hands over as much of the backlog as the apply queue takes now (all of it with `block`).
    fn flush_backlog_with(&mut self, block: bool) -> Result<(), RaftError> {
        while let Some((lo, hi)) = self.backlog.take() {
            let entries = self.node.store().entries(
                lo,
                hi + 1,
                Some(MAX_COMMITTED_BYTES_PER_READY),
                raft::GetEntriesContext::empty(false),
            )?;
            let Some(last) = entries.last().map(|e| e.index) else {
                return Err(RaftError::Corrupt(format!(
                    "committed entries {lo}..={hi} are not in the log"
                )));
            };
            if let Some(first) = self.dispatch(entries, block)? {
                self.backlog = Some((first, hi));
                return Ok(());
            }
            if last < hi {
                self.backlog = Some((last + 1, hi));
            }
        }
        Ok(())
    }

    fn flush_backlog(&mut self) -> Result<(), RaftError> {
        self.flush_backlog_with(false)
    }

    /// Sends normal entries to the apply thread and applies membership entries here, once everything
    /// before them is applied. Without `block`, stops at a full apply queue and returns the index of the
    /// first entry not handed over.
    fn dispatch(&mut self, entries: Vec<Entry>, block: bool) -> Result<Option<u64>, RaftError> {
        let mut batch = Vec::new();
        for e in entries {
            if !applied_here(&e) {
                batch.push(e);
                continue;
            }
            if let Some(first) = self.send_batch(std::mem::take(&mut batch), block)? {
                return Ok(Some(first));
            }
            self.drain_apply()?;
            self.apply_here(e)?;
        }
        self.send_batch(batch, block)
    }

    fn send_batch(&mut self, batch: Vec<Entry>, block: bool) -> Result<Option<u64>, RaftError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(None);
        };
        let (first, last) = (first.index, last.index);
        let gone = || RaftError::Corrupt("the apply thread stopped".into());
        let tx = self.apply_tx.as_ref().ok_or_else(gone)?;
        if block {
            tx.send(batch).map_err(|_| gone())?;
        } else {
            match tx.try_send(batch) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => return Ok(Some(first)),
                Err(TrySendError::Disconnected(_)) => return Err(gone()),
            }
        }
        self.handed = last;
        Ok(None)
    }

    /// Waits until the apply thread has applied everything committed so far (the backlog included), as
    /// etcd's loop waits for the apply of a conf change. The apply thread never waits for the loop, so
    /// this ends.
    fn drain_apply(&mut self) -> Result<(), RaftError> {
        self.flush_backlog_with(true)?;
        let thread = &self.apply_thread;
        let done = || thread.as_ref().is_none_or(|t| t.is_finished());
        self.progress.wait_for(self.handed, &done)?;
        self.applied = self.applied.max(self.handed);
        Ok(())
    }

    /// Applies a membership entry (everything before it is applied).
    fn apply_here(&mut self, e: Entry) -> Result<(), RaftError> {
        match e.get_entry_type() {
            EntryType::EntryNormal => {
                self.apply_member_update(e.index, e.term, &e.data)?;
            }
            EntryType::EntryConfChange => {
                failpoint::hit("beforeApplyOneConfChange");
                let cc = crate::storage::parse_conf_change(&e)?;
                self.apply_conf_change(e.index, e.term, &cc)?;
            }
            EntryType::EntryConfChangeV2 => {
                // Hearth proposes only simple (v1) changes; raft-rs proposes an empty v2 change only
                // to leave a joint configuration, which Hearth never enters.
                let cc = ConfChangeV2::parse_from_bytes(&e.data)
                    .map_err(|err| RaftError::Corrupt(format!("conf change {}: {err}", e.index)))?;
                let cs = self.node.apply_conf_change(&cc)?;
                self.node.mut_store().wl().set_conf_state(cs);
            }
        }
        self.handed = e.index;
        self.set_applied(e.index);
        if e.index > self.node.raft.raft_log.applied {
            self.node.advance_apply_to(e.index);
        }
        Ok(())
    }

    /// Publishes `index` as applied (the apply thread is idle: the loop applied it).
    fn set_applied(&mut self, index: u64) {
        self.applied = index;
        self.status.applied.store(index, Ordering::Release);
        self.applied_tx.send_replace(index);
        self.progress.set(index);
    }

    /// Applies one membership change, as etcd's `applyConfChange`: a change the membership rejects is not
    /// applied to raft-rs either (its proposer gets the error); one it accepts is applied to raft-rs, written
    /// to the backend with the consistent index, and then made visible.
    fn apply_conf_change(
        &mut self,
        index: u64,
        term: u64,
        cc: &ConfChange,
    ) -> Result<(), RaftError> {
        let change = Change::from_conf_change(cc).map_err(ServerError::Internal);
        self.apply_membership(index, term, cc.id, change, Some(cc))
    }

    /// Applies new peer URLs for a member (a normal entry; Raft's configuration does not change).
    fn apply_member_update(&mut self, index: u64, term: u64, data: &[u8]) -> Result<(), RaftError> {
        match Change::from_member_update(data) {
            Ok((id, change)) => self.apply_membership(index, term, id, Ok(change), None),
            Err(e) => self.apply_membership(index, term, 0, Err(ServerError::Internal(e)), None),
        }
    }

    fn apply_membership(
        &mut self,
        index: u64,
        term: u64,
        request_id: u64,
        change: Result<Change, ServerError>,
        cc: Option<&ConfChange>,
    ) -> Result<(), RaftError> {
        if index <= apply_thread::lock(&self.applier).consistent_index() {
            // Already in the backend, and in the configuration raft-rs started with.
            return Ok(());
        }
        let wait = self.cluster.conf_wait.clone();
        let cluster = self.cluster.cluster.clone();
        let checked = change.and_then(|c| cluster.validate(&c).map(|()| c));
        let change = match checked {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(index, "membership change rejected: {e}");
                self.record_index(index, term)?;
                wait.trigger(request_id, Err(e));
                return Ok(());
            }
        };
        let cs = match cc.map(|cc| self.node.apply_conf_change(cc)) {
            None => None,
            Some(Ok(cs)) => Some(cs),
            Some(Err(e)) => {
                tracing::error!(index, "raft rejected a membership change: {e}");
                self.record_index(index, term)?;
                wait.trigger(request_id, Err(ServerError::Internal(e.to_string())));
                return Ok(());
            }
        };
        let (saved, removed) = cluster.outcome(&change);
        let persisted = apply_thread::lock(&self.applier).apply_backend(index, term, |txn| {
            if let Some(m) = &saved {
                membership::store::save_member(txn, m)?;
            }
            if let Some(id) = removed {
                membership::store::remove_member(txn, id)?;
            }
            match &cs {
                Some(cs) => membership::store::save_conf_state(txn, cs),
                None => Ok(()),
            }
        });
        if let Err(e) = persisted {
            return Err(RaftError::Corrupt(format!(
                "cannot record membership change {index}: {e}"
            )));
        }
        if let Some(cs) = cs {
            self.node.mut_store().wl().set_conf_state(cs);
            self.conf_changed = true;
        }
        cluster.commit(saved, removed);
        let local = self.node.raft.id;
        match &change {
            Change::Add(m) => {
                tracing::info!(member = format!("{:x}", m.id), peer_urls = ?m.peer_urls, learner = m.is_learner, "added member");
                self.cluster.transport.add_peer(m.id, &m.peer_urls);
            }
            Change::UpdatePeerUrls(id, urls) => {
                tracing::info!(member = format!("{id:x}"), peer_urls = ?urls, "updated member");
                self.cluster.transport.add_peer(*id, urls);
            }
            Change::Promote(id) => {
                tracing::info!(member = format!("{id:x}"), "promoted learner member");
            }
            Change::Remove(id) => {
                tracing::info!(member = format!("{id:x}"), "removed member");
                self.cluster.transport.remove_peer(*id);
                if *id == local {
                    tracing::warn!("this member was removed from the cluster; stopping");
                    self.stop_at = Some(Instant::now() + REMOVED_STOP_DELAY);
                }
            }
        }
        wait.trigger(request_id, Ok(cluster.members()));
        Ok(())
    }

    /// Records `index` as applied for an entry that changed nothing.
    fn record_index(&mut self, index: u64, term: u64) -> Result<(), RaftError> {
        apply_thread::lock(&self.applier)
            .apply_backend(index, term, |_| Ok(()))
            .map(|_| ())
            .map_err(|e| RaftError::Corrupt(format!("cannot record entry {index}: {e}")))
    }

    fn publish_status(&mut self) {
        let r = &self.node.raft;
        self.status.term.store(r.term, Ordering::Release);
        self.status.leader.store(r.leader_id, Ordering::Release);
        self.status
            .commit
            .store(r.raft_log.committed, Ordering::Release);
        if r.leader_id == self.last_leader {
            return;
        }
        self.heartbeats.reset();
        self.last_leader = r.leader_id;
        if r.leader_id == raft::INVALID_ID {
            return;
        }
        // A new leader (etcd counts a leader after none as new too).
        metrics::LEADER_CHANGES.inc();
        *self
            .status
            .lead_elected
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        // Reads that were waiting on the old leader's confirmation will never get it.
        for tx in self.reads.take_inflight() {
            let _ = tx.send(Err(ServerError::LeaderChanged));
        }
    }

    fn sync_backend(&mut self) -> Result<(), RaftError> {
        let started = Instant::now();
        self.backend.force_commit()?;
        metrics::BACKEND_COMMIT.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Log compaction at `index`, a consistent index the apply thread made durable in the backend: a
    /// snapshot marker there, older WAL segments released, and the in-memory log trimmed to
    /// `snapshot_catchup_entries` before it.
    fn write_snapshot_marker(&mut self, index: u64) -> Result<(), RaftError> {
        if index <= self.snapshot_index {
            // An installed snapshot went past it meanwhile.
            return Ok(());
        }
        let term = self.node.store().term(index)?;
        failpoint::hit("raftBeforeWALSaveSnaphot");
        self.wal
            .save_snapshot(wal::SnapshotMarker { index, term })?;
        let keep_from = index.saturating_sub(self.snapshot_catchup_entries);
        let first = self.node.store().first_index()?;
        if keep_from > first {
            self.node.mut_store().wl().compact(keep_from)?;
        }
        self.wal.release_to(index)?;
        failpoint::hit("raftAfterWALRelease");
        self.set_snapshot_index(index);
        tracing::info!(index, term, "compacted the raft log at a snapshot marker");
        Ok(())
    }

    fn set_snapshot_index(&mut self, index: u64) {
        self.snapshot_index = index;
        self.shared_snapshot_index.store(index, Ordering::Release);
    }
}

/// Whether the loop applies `e` itself (it changes the membership, which the loop's raft-rs and transport
/// follow) rather than the apply thread.
fn applied_here(e: &Entry) -> bool {
    match e.get_entry_type() {
        EntryType::EntryNormal => e.context.as_ref() == MEMBER_UPDATE_CONTEXT,
        EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => true,
    }
}

/// Answers a proposal that will never be applied.
fn fail_pending(
    wait: &Wait<apply::applier::ApplyResult>,
    conf_wait: &Wait<ConfResult>,
    p: Pending,
    e: ServerError,
) {
    match p.payload {
        Payload::Normal(_) => wait.trigger(p.id, Err(e)),
        Payload::Conf(_) | Payload::MemberUpdate(_) => conf_wait.trigger(p.id, Err(e)),
    }
}

mod apply_thread;
mod snapshot;

pub use apply_thread::APPLY_QUEUE;
pub use snapshot::{BackendSnapshots, Described};

#[cfg(test)]
mod tests;
