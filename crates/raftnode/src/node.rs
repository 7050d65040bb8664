//! The Raft loop: one thread that owns a [`Core`] (raft-rs's `RawNode` and the loop's decisions, see
//! `loopcore`) and the WAL, performs what the core decides, and hands committed entries to the apply
//! thread (`apply_thread`). This module is the core's runtime: it decides nothing about held proposals,
//! read-index batching, snapshot-marker cadence, a lone voter's campaign, a removed member's stop or a
//! `Ready`'s order; it feeds the core its inputs with `Instant::now()` and performs the returned
//! effects in order.
//!
//! Each turn it takes the queued commands (proposals, read-index requests, messages from peers, the apply
//! thread's progress), lets the core tick the clock when due and handle a `Ready`: entries and hard
//! state are appended to the WAL with one fdatasync, and committed entries are handed to the apply thread through a
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
use raft::prelude::{ConfChange, ConfChangeV2, Entry, EntryType, HardState, Message};
use raft::{RawNode, Storage as _};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit};

use apply::applier::Applier;
use apply::wait::Wait;
use apply_thread::SharedApplier;
use membership::{Change, Member, RaftCluster};
use rafthttp::{RaftTransport, SendReport};
use rpctypes::ServerError;

use crate::loopcore::{Core, CoreConfig, Effect};
use crate::metrics;
use crate::proposal::{Payload, Pending, ProposalState};
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
/// Where this run's read-index sequence numbers start: the wall clock in nanoseconds. The previous run
/// of this member started from an earlier reading and counted one a request, each of which took longer
/// than a nanosecond, so none of its contexts comes again (unless the clock is set back past them).
fn first_read_seq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

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
    /// raft-rs and the loop's decisions around it (`loopcore`); this type performs what it decides.
    core: Core<ReadWaiter>,
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
    /// The index of the last snapshot marker, for the apply thread (which decides when one is due).
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
    /// A command failed in a way that must stop the loop (a snapshot install that went wrong).
    fatal: Option<RaftError>,
    heartbeats: crate::heartbeat::Heartbeats,
}

/// A linearizable read waiting for its read index.
type ReadWaiter = oneshot::Sender<Result<u64, ServerError>>;

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
        let core = Core::new(
            node,
            CoreConfig {
                tick: cfg.heartbeat,
                snapshot_count: cfg.snapshot_count,
                snapshot_catchup_entries: cfg.snapshot_catchup_entries,
                max_reads: MAX_READS,
                first_read_seq: first_read_seq(),
            },
            log.snapshot_index,
        );
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
            .spawn(move || {
                crate::sched::batch_this_thread("raft-apply");
                worker.run()
            })
            .map_err(|e| RaftError::Corrupt(format!("cannot start the apply thread: {e}")))?;
        let mut n = RaftNode {
            core,
            wal: log.wal,
            applier,
            kv,
            wait,
            backend,
            commands,
            status,
            applied_tx,
            cluster,
            shared_snapshot_index,
            applied,
            handed: applied,
            backlog: None,
            apply_tx: Some(apply_tx),
            apply_thread: Some(apply_thread),
            progress,
            fatal: None,
            heartbeats: crate::heartbeat::Heartbeats::new(cfg.heartbeat),
        };
        n.settle()?;
        Ok(n)
    }

    /// Turns until the core has nothing more to do before the first tick: applies what is committed (a
    /// new cluster's first entries make its configuration), and lets a lone voter become leader, so
    /// that a single member serves as soon as it has started.
    fn settle(&mut self) -> Result<(), RaftError> {
        let now = Instant::now();
        for _ in 0..16 {
            if self.core.settled() {
                break;
            }
            let effects = self.core.turn(now)?;
            if self.perform(effects)? {
                return Err(RaftError::Removed);
            }
        }
        Ok(())
    }

    /// Runs until asked to stop or every [`crate::Handle`] is gone. An error is fatal: the log or the backend could not be
    /// written, and continuing could acknowledge a write that is not durable.
    pub fn run(mut self) -> Result<(), RaftError> {
        let result = loop {
            let now = Instant::now();
            let wait = self
                .core
                .deadline()
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
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
            if let Err(e) = self.turn() {
                break Err(e);
            }
        };
        // The apply thread finishes what it was handed (entries left in the backlog are replayed from
        // the WAL at the next start).
        self.stop_apply();
        let synced = self.sync_backend();
        let mut out = Vec::new();
        self.core.shut_down(&mut out);
        if out.iter().any(|e| matches!(e, Effect::FailReads { .. })) {
            metrics::READ_INDEXES_FAILED.inc();
        }
        let answered = self.perform(out);
        result.and(synced).and(answered.map(|_| ()))
    }

    /// The core's turn (tick, held proposals and reads, a `Ready`), performed; then the apply queue
    /// takes what waited for room. A removed member's stop is an error.
    fn turn(&mut self) -> Result<(), RaftError> {
        let effects = self.core.turn(Instant::now())?;
        if self.perform(effects)? {
            return Err(RaftError::Removed);
        }
        self.flush_backlog()
    }

    fn stop_apply(&mut self) {
        drop(self.apply_tx.take());
        if let Some(t) = self.apply_thread.take() {
            if t.join().is_err() {
                tracing::error!("the apply thread panicked");
            }
        }
    }

    /// Performs the core's effects in order (see `loopcore`'s contract). Returns true when the member
    /// must stop; an error is fatal.
    fn perform(&mut self, effects: Vec<Effect<ReadWaiter>>) -> Result<bool, RaftError> {
        let mut report = SendReport::default();
        for effect in effects {
            match effect {
                Effect::Failpoint(name) => failpoint::hit(name),
                Effect::Send(msgs) => {
                    self.heartbeats.sent(&msgs, Instant::now());
                    self.cluster.transport.send(msgs, &mut report);
                }
                Effect::Persist {
                    entries,
                    hard_state,
                } => self.persist(&entries, &hard_state)?,
                Effect::Apply(entries) => self.hand_off(entries)?,
                Effect::ApplyMembership(e) => self.hand_off(vec![e])?,
                Effect::SnapshotMarker { index, term } => {
                    self.write_snapshot_marker(index, term)?
                }
                Effect::ReadIndex { waiters, index } => {
                    for tx in waiters {
                        let _ = tx.send(Ok(index));
                    }
                }
                Effect::FailReads { waiters, error } => {
                    for tx in waiters {
                        let _ = tx.send(Err(error.clone()));
                    }
                }
                Effect::FailProposal { pending, error } => {
                    if !matches!(error, ServerError::TooManyRequests | ServerError::Stopped) {
                        tracing::debug!(id = pending.id, "proposal dropped: {error}");
                        metrics::PROPOSALS_FAILED.inc();
                    }
                    fail_pending(&self.wait, &self.cluster.conf_wait, pending, error);
                }
                Effect::ReadsRetried(n) => metrics::SLOW_READ_INDEXES.inc_by(n as f64),
                Effect::LeaderChanged(leader) => self.leader_changed(leader),
                Effect::Stop => return Ok(true),
            }
        }
        for id in report.unreachable {
            self.core.unreachable(id);
        }
        for id in report.snapshot_failed {
            self.core.snapshot_sent(id, false);
        }
        self.publish_status();
        Ok(false)
    }

    /// Appends entries and the hard state to the WAL, with one fdatasync.
    fn persist(&mut self, entries: &[Entry], hard: &HardState) -> Result<(), RaftError> {
        let hard_bytes = hard
            .write_to_bytes()
            .map_err(|e| RaftError::Corrupt(e.to_string()))?;
        let mut wal_entries = Vec::with_capacity(entries.len());
        for e in entries {
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
        Ok(())
    }

    /// Returns false when asked to stop.
    fn handle(&mut self, cmd: Command) -> bool {
        let mut out = Vec::new();
        match cmd {
            Command::Propose { id, data, state } => self.core.propose(
                Pending {
                    id,
                    payload: Payload::Normal(data),
                    state,
                },
                &mut out,
            ),
            Command::ProposeMembership { id, payload, state } => {
                self.core.propose(Pending { id, payload, state }, &mut out)
            }
            Command::ReadIndex(tx) => self.core.read_index(tx, &mut out),
            Command::TransferLeader { target, reply } => {
                let _ = reply.send(self.core.transfer_leader(target));
            }
            Command::Step { msgs, permit } => {
                for mut m in msgs {
                    if let Err(e) = crate::admit::admit(self.core.raft(), &mut m) {
                        let from = format!("{:x}", m.from);
                        tracing::warn!(remote_peer_id = %from, "dropped a raft message from a peer: {e}");
                        rafthttp::metrics::PEER_RECEIVED_FAILURES
                            .with_label_values(&[&from])
                            .inc();
                        continue;
                    }
                    self.heartbeats.received(&m, Instant::now());
                    if let Err(e) = self.core.step(m) {
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
            Command::SnapshotStatus { to, ok } => self.core.snapshot_sent(to, ok),
            Command::Unreachable(id) => self.core.unreachable(id),
            Command::Progress { id, reply } => {
                let _ = reply.send(self.core.progress(id));
            }
            Command::Removed => {
                tracing::warn!("this member was removed from the cluster; stopping");
                self.core.removed(Instant::now());
            }
            Command::Stop => return false,
            Command::Admitted { cmd, permit } => {
                drop(permit);
                return self.handle(*cmd);
            }
            Command::Applied { index, snapshot } => {
                self.applied = self.applied.max(index);
                self.core.applied(index, snapshot, &mut out);
            }
            Command::ApplyFailed(e) => self.fatal = Some(RaftError::Apply(e)),
        }
        if !out.is_empty() {
            // A stop is only ever decided in a turn.
            if let Err(e) = self.perform(out) {
                self.fatal = Some(e);
            }
        }
        true
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
            let entries = self.core.store().entries(
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

    /// Sends normal entries to the apply thread and applies membership entries here (as the core splits
    /// them), once everything before them is applied. Without `block`, stops at a full apply queue and
    /// returns the index of the first entry not handed over.
    fn dispatch(&mut self, entries: Vec<Entry>, block: bool) -> Result<Option<u64>, RaftError> {
        for effect in Core::<ReadWaiter>::split_committed(entries) {
            match effect {
                Effect::Apply(batch) => {
                    if let Some(first) = self.send_batch(batch, block)? {
                        return Ok(Some(first));
                    }
                }
                Effect::ApplyMembership(e) => {
                    self.drain_apply()?;
                    self.apply_here(e)?;
                }
                _ => {}
            }
        }
        Ok(None)
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
                self.core.apply_conf_change_v2(e.index, &cc)?;
            }
        }
        self.handed = e.index;
        self.set_applied(e.index);
        // Raft-rs hears it; no marker is asked for here (the apply thread asks, after a backend sync).
        self.core.applied(e.index, None, &mut Vec::new());
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
        // raft-rs's configuration follows (and the core starts a removed member's grace period).
        let now = Instant::now();
        let cs = match cc.map(|cc| self.core.apply_conf_change(now, index, cc)) {
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
        cluster.commit(saved, removed);
        let local = self.core.raft().id;
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
        let r = self.core.raft();
        self.status.term.store(r.term, Ordering::Release);
        self.status.leader.store(r.leader_id, Ordering::Release);
        self.status
            .commit
            .store(r.raft_log.committed, Ordering::Release);
    }

    /// The core saw another leader (or none): heartbeats are timed afresh, and a new leader is counted
    /// (etcd counts a leader after none as new too).
    fn leader_changed(&mut self, leader: u64) {
        self.heartbeats.reset();
        if leader == raft::INVALID_ID {
            return;
        }
        metrics::LEADER_CHANGES.inc();
        *self
            .status
            .lead_elected
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    fn sync_backend(&mut self) -> Result<(), RaftError> {
        let started = Instant::now();
        self.backend.force_commit()?;
        metrics::BACKEND_COMMIT.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Log compaction at `index` (of `term`), a consistent index the apply thread made durable in the
    /// backend: a snapshot marker there, older WAL segments released, and the in-memory log trimmed by
    /// the core.
    fn write_snapshot_marker(&mut self, index: u64, term: u64) -> Result<(), RaftError> {
        failpoint::hit("raftBeforeWALSaveSnaphot");
        self.wal
            .save_snapshot(wal::SnapshotMarker { index, term })?;
        self.core.snapshot_written(index)?;
        self.wal.release_to(index)?;
        failpoint::hit("raftAfterWALRelease");
        self.shared_snapshot_index.store(index, Ordering::Release);
        tracing::info!(
            index,
            term,
            "wrote a snapshot marker and released the WAL segments before it"
        );
        Ok(())
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
