//! The Raft loop's decisions without its I/O: a [`Core`] owns raft-rs's `RawNode` (over its in-memory
//! `MemStorage`) and what the loop decides around it — read-index batching and retries, proposals held
//! while there is no leader, when a snapshot marker is due (`--snapshot-count`), a lone voter's campaign
//! after a conf change, when a removed member stops, whether a leader transfer may start, and which
//! leader changes fail the reads waiting on the old one. It takes the time (`now`) and inputs (commands,
//! peer messages, apply progress) and returns [`Effect`]s for a runtime to perform: persist entries and
//! hard state, send messages, apply committed entries, apply a membership entry, write a snapshot
//! marker, answer or fail reads and proposals, stop.
//!
//! Because it never reads a clock, sleeps, spawns or touches a disk, its tests drive time explicitly
//! and several cores can run in one deterministic in-memory simulation (`loopcore/sim.rs`, after raft-rs's
//! own test network).
//!
//! # The runtime's contract
//! Effects are performed in the order they are returned. A [`Effect::Persist`] must be durable before
//! anything after it is performed (the core has already told raft-rs the entries are persisted, so a
//! failed persist is fatal and nothing after it may happen): that is how messages raft-rs marks as
//! persisted (votes, append responses) leave only after the fsync, while those listed before it (a
//! leader's appends) leave in parallel with it. [`Effect::Apply`] entries are applied in order and
//! reported back with [`Core::applied`]; an [`Effect::ApplyMembership`] is performed once everything
//! before it is applied, and its outcome reported with [`Core::apply_conf_change`] (accepted) or simply
//! [`Core::applied`] (refused by the membership).
//!
//! Failpoints of a `Ready` (`raftBeforeLeaderSend`, `raftBeforeApplySnap`, `raftAfterApplySnap`,
//! `raftBeforeFollowerSend`, `raftBeforeAdvance`) are [`Effect::Failpoint`]s at their place in the
//! order, hit by the runtime: what a crash there leaves on disk and on the wire is what it left when
//! the loop hit them itself (raft-rs's in-memory state is lost in a crash either way).
//!
//! The production loop (`node`) is such a runtime: it feeds the core its commands, peer messages,
//! ticks and the apply thread's progress with `Instant::now()`, and performs the effects — the WAL save
//! and fsync, sends through the transport, the hand-off to the apply thread (bounded, with a backlog of
//! indexes when the apply queue is full), membership entries applied against the membership and the
//! backend, snapshot markers, answers. What stays in the runtime is I/O and the bookkeeping of that I/O:
//! the apply queue's backlog, waiting for the apply thread before a membership entry or a snapshot
//! install, the install itself (`node::snapshot`, which tells the core with
//! [`Core::snapshot_installed`]), the admission of peer messages, heartbeat timing and metrics. The
//! in-memory log is raft-rs's `MemStorage` in both (the runtime's is rebuilt from the WAL by `storage`),
//! so the core is not generic over raft-rs's `Storage`.
//!
//! # Tradeoffs
//! * The core appends a `Ready`'s entries to the in-memory log before the runtime saves them to the
//!   WAL (the loop used to do it after): nothing reads the in-memory log between the two, and a failed
//!   save stops the member.
//! * When a snapshot marker is due is decided twice: the apply thread decides it (it must sync the
//!   backend before asking), and the core checks it again against the last marker it knows of, which
//!   also drops a request an installed snapshot has overtaken.
//! * A leader does not trim the in-memory log at a marker while a snapshot is being sent, so that the
//!   peer installing it finds the entries after it; the log grows meanwhile, until the next marker
//!   after the transfer ([`Core::snapshot_written`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use raft::prelude::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState, Message,
};
use raft::storage::MemStorage;
use raft::{ProgressState, RawNode, SnapshotStatus, StateRole, Storage as _};
use rpctypes::ServerError;

use crate::proposal::{Payload, Pending, Waiting};
use crate::RaftError;
use membership::MEMBER_UPDATE_CONTEXT;

/// A read-index request unanswered for this long is sent again (raft-rs drops some silently, e.g. while a
/// new leader has not committed in its term), as etcd retries its own.
pub const READ_INDEX_RETRY: Duration = Duration::from_millis(500);
/// How long a member that applied its own removal keeps going (so the change reaches the others) before it
/// stops, as etcd does.
pub const REMOVED_STOP_DELAY: Duration = Duration::from_secs(1);

/// Whether a snapshot marker is due at consistent index `index`, the last one being at `last`: every
/// `count` (`--snapshot-count`) applied entries.
pub fn snapshot_due(index: u64, last: u64, count: u64) -> bool {
    index >= last.saturating_add(count.max(1))
}

/// Linearizable reads waiting for a read index: those not asked for yet share the next request (one per
/// turn, however many reads arrived), and a request unanswered for [`READ_INDEX_RETRY`] is sent again.
///
/// A request's context is the member's id and a sequence number. The leader keeps one table of pending
/// requests by context for the whole cluster and silently drops a request whose context is already in
/// it (raft-rs's `ReadOnly::add_request`), so contexts must differ between members: with the sequence
/// alone, members counting in step dropped each other's requests, which then waited for the retry.
/// A member also must not reuse its own contexts across a restart: the leader may still hold a request
/// from before it, and its answer (a read index from then) would serve a read made after. The runtime
/// starts the sequence from the wall clock in nanoseconds ([`CoreConfig::first_read_seq`]), which has
/// moved on further than the old process could count.
pub struct Reads<W> {
    pending: Vec<W>,
    inflight: HashMap<u64, Inflight<W>>,
    member: u64,
    seq: u64,
    max: usize,
}

struct Inflight<W> {
    sent: Instant,
    waiters: Vec<W>,
}

/// What [`Reads::flush`] wants sent to raft-rs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadRequests {
    /// Request contexts to hand to `RawNode::read_index`, retries first.
    pub contexts: Vec<Vec<u8>>,
    /// How many of them are retries (etcd counts them as slow read indexes).
    pub retried: usize,
}

impl<W> Reads<W> {
    /// At most `max` reads waiting at once, on member `member`.
    /// `first_seq`: the sequence number after which this member's requests count.
    pub fn new(member: u64, first_seq: u64, max: usize) -> Reads<W> {
        Reads {
            pending: Vec::new(),
            inflight: HashMap::new(),
            member,
            seq: first_seq,
            max,
        }
    }

    fn context(&self, seq: u64) -> Vec<u8> {
        let mut ctx = Vec::with_capacity(16);
        ctx.extend_from_slice(&self.member.to_be_bytes());
        ctx.extend_from_slice(&seq.to_be_bytes());
        ctx
    }

    /// Queues a read, or gives it back if `max` reads are already waiting.
    pub fn push(&mut self, w: W) -> Result<(), W> {
        if self.len() >= self.max {
            return Err(w);
        }
        self.pending.push(w);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.pending.len()
            + self
                .inflight
                .values()
                .map(|f| f.waiters.len())
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The requests to send at `now`: the unanswered ones again if they are old, and one for every read
    /// that arrived since the last one.
    pub fn flush(&mut self, now: Instant) -> ReadRequests {
        let mut out = ReadRequests::default();
        let mut stale: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.sent) >= READ_INDEX_RETRY)
            .map(|(seq, _)| *seq)
            .collect();
        stale.sort_unstable();
        for seq in stale {
            if let Some(f) = self.inflight.get_mut(&seq) {
                f.sent = now;
            }
            out.contexts.push(self.context(seq));
            out.retried += 1;
        }
        if !self.pending.is_empty() {
            self.seq = self.seq.wrapping_add(1);
            let waiters = std::mem::take(&mut self.pending);
            self.inflight
                .insert(self.seq, Inflight { sent: now, waiters });
            out.contexts.push(self.context(self.seq));
        }
        out
    }

    /// The reads a read state with `ctx` answers (none if `ctx` is not one of this member's).
    pub fn answered(&mut self, ctx: &[u8]) -> Vec<W> {
        let Ok(ctx) = <[u8; 16]>::try_from(ctx).map(u128::from_be_bytes) else {
            return Vec::new();
        };
        let (member, seq) = ((ctx >> 64) as u64, ctx as u64);
        if member != self.member {
            return Vec::new();
        }
        self.inflight
            .remove(&seq)
            .map(|f| f.waiters)
            .unwrap_or_default()
    }

    /// The reads already asked for (a new leader will never answer the old one's requests).
    pub fn take_inflight(&mut self) -> Vec<W> {
        self.inflight.drain().flat_map(|(_, f)| f.waiters).collect()
    }

    /// Every waiting read.
    pub fn take_all(&mut self) -> Vec<W> {
        let mut all = std::mem::take(&mut self.pending);
        all.extend(self.take_inflight());
        all
    }
}

/// What the runtime is asked to do.
pub enum Effect<W> {
    /// A failpoint's place in the handling of a `Ready` (`docs/failpoints.md`): the runtime hits it
    /// there, between the effects before and after it.
    Failpoint(&'static str),
    /// Messages that may leave now.
    Send(Vec<Message>),
    /// Entries and the hard state to make durable (WAL append and fsync) before any later effect.
    Persist {
        entries: Vec<Entry>,
        hard_state: HardState,
    },
    /// Committed normal entries to apply, in order.
    Apply(Vec<Entry>),
    /// A committed membership entry (conf change, or peer URL update with `MEMBER_UPDATE_CONTEXT`), to
    /// apply once everything before it is applied.
    ApplyMembership(Entry),
    /// A snapshot marker is due at `index` (the consistent index reported durable), of `term`.
    SnapshotMarker { index: u64, term: u64 },
    /// Reads answered with a read index (serve them once `index` is applied).
    ReadIndex { waiters: Vec<W>, index: u64 },
    /// Reads that will not be answered.
    FailReads { waiters: Vec<W>, error: ServerError },
    /// A proposal that will never be in the log.
    FailProposal {
        pending: Pending,
        error: ServerError,
    },
    /// This many read-index requests went unanswered too long and were asked again (etcd counts them
    /// as slow read indexes).
    ReadsRetried(usize),
    /// The leader raft-rs knows is now this one (`raft::INVALID_ID`: none).
    LeaderChanged(u64),
    /// This member was removed and its grace period is over.
    Stop,
}

/// What the core decides when, and with which bounds.
pub struct CoreConfig {
    pub tick: Duration,
    pub snapshot_count: u64,
    pub snapshot_catchup_entries: u64,
    pub max_reads: usize,
    /// Where read-index sequence numbers start: unique to this run of the member (see [`Reads`]).
    pub first_read_seq: u64,
}

/// The Raft loop's decisions around raft-rs, without I/O (see the module doc).
pub struct Core<W> {
    node: RawNode<MemStorage>,
    cfg: CoreConfig,
    reads: Reads<W>,
    waiting: Waiting,
    next_tick: Option<Instant>,
    last_leader: u64,
    snapshot_index: u64,
    stop_at: Option<Instant>,
    conf_changed: bool,
}

impl<W> Core<W> {
    /// `snapshot_index`: where the last snapshot marker is.
    pub fn new(node: RawNode<MemStorage>, cfg: CoreConfig, snapshot_index: u64) -> Core<W> {
        let reads = Reads::new(node.raft.id, cfg.first_read_seq, cfg.max_reads);
        Core {
            node,
            cfg,
            reads,
            waiting: Waiting::default(),
            next_tick: None,
            last_leader: raft::INVALID_ID,
            snapshot_index,
            stop_at: None,
            conf_changed: true,
        }
    }

    pub fn raft(&self) -> &raft::Raft<MemStorage> {
        &self.node.raft
    }

    /// raft-rs's log in memory (committed entries are read from it again when applying had to wait).
    pub fn store(&self) -> &MemStorage {
        self.node.store()
    }

    pub fn leader(&self) -> u64 {
        self.node.raft.leader_id
    }

    /// When the runtime must call [`Core::turn`] next at the latest (the next tick).
    pub fn deadline(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Nothing for a turn to do before the first tick: no `Ready`, no configuration change to react to
    /// (the runtime's start-up turns until then, so a lone voter leads as soon as it has started).
    pub fn settled(&self) -> bool {
        !self.conf_changed && !self.node.has_ready()
    }

    /// A proposal: to raft-rs at once if there is a leader, else held until there is one (or refused
    /// past `proposal::MAX_WAITING`).
    pub fn propose(&mut self, p: Pending, out: &mut Vec<Effect<W>>) {
        if self.node.raft.leader_id == raft::INVALID_ID {
            if let Err(p) = self.waiting.push(p) {
                if p.state.claim() {
                    out.push(Effect::FailProposal {
                        pending: p,
                        error: ServerError::TooManyRequests,
                    });
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
            let error = match e {
                raft::Error::ProposalDropped => ServerError::ProposalDropped,
                other => ServerError::Internal(other.to_string()),
            };
            out.push(Effect::FailProposal { pending: p, error });
        }
    }

    /// A linearizable read waiting for a read index.
    pub fn read_index(&mut self, w: W, out: &mut Vec<Effect<W>>) {
        if let Err(w) = self.reads.push(w) {
            out.push(Effect::FailReads {
                waiters: vec![w],
                error: ServerError::TooManyRequests,
            });
        }
    }

    /// A message from a peer (already admitted, see `admit`).
    pub fn step(&mut self, m: Message) -> Result<(), raft::Error> {
        self.node.step(m)
    }

    pub fn unreachable(&mut self, id: u64) {
        self.node.report_unreachable(id);
    }

    /// A snapshot sent to `to` arrived (`ok`) or did not.
    pub fn snapshot_sent(&mut self, to: u64, ok: bool) {
        let status = if ok {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.node.report_snapshot(to, status);
    }

    /// Starts handing leadership to `target`: only a leader can, and only to a voter.
    pub fn transfer_leader(&mut self, target: u64) -> Result<(), ServerError> {
        let r = &self.node.raft;
        if r.leader_id != r.id {
            return Err(ServerError::NotLeader);
        }
        if !r.prs().conf().voters().contains(target) {
            return Err(ServerError::BadLeaderTransferee);
        }
        self.node.transfer_leader(target);
        Ok(())
    }

    /// How far member `id` has replicated the log and how far the leader has, on the leader only
    /// (`(None, _)` if `id` is not replicating).
    pub fn progress(&self, id: u64) -> Option<(Option<u64>, u64)> {
        let r = &self.node.raft;
        (r.state == StateRole::Leader).then(|| {
            let prs = r.prs();
            (
                prs.get(id).map(|p| p.matched),
                prs.get(r.id).map(|p| p.matched).unwrap_or(0),
            )
        })
    }

    /// A peer refused this member as removed from the cluster: it stops at the next turn.
    pub fn removed(&mut self, now: Instant) {
        self.stop_at = Some(now);
    }

    /// Everything up to `index` is applied (the backend's consistent index, made durable, is
    /// `durable`, if the runtime made it so).
    pub fn applied(&mut self, index: u64, durable: Option<u64>, out: &mut Vec<Effect<W>>) {
        if index > self.node.raft.raft_log.applied && index <= self.node.raft.raft_log.committed {
            self.node.advance_apply_to(index);
        }
        if let Some(ci) = durable {
            if snapshot_due(ci, self.snapshot_index, self.cfg.snapshot_count) {
                match self.node.store().term(ci) {
                    Ok(term) => out.push(Effect::SnapshotMarker { index: ci, term }),
                    Err(e) => tracing::warn!(index = ci, "no snapshot marker: {e}"),
                }
            }
        }
    }

    /// The runtime wrote the marker at `index`: the in-memory log keeps `snapshot_catchup_entries`
    /// before it — unless a snapshot is on its way to a peer, as in etcd. That peer resumes from the
    /// log right after the snapshot's index; trimmed meanwhile, the log could no longer give it those
    /// entries and it would need another snapshot, and under steady writes might never catch up.
    ///
    /// The skipped compaction is not remembered: like etcd, the next marker after the transfer
    /// compacts (the sooner the better for memory, but compacting the moment the transfer ends
    /// would trim the entries the peer is about to ask for whenever more than
    /// `snapshot_catchup_entries` were written during the transfer). The cost is memory: the
    /// in-memory log grows for the whole transfer and up to `--snapshot-count` entries after it, and
    /// keeps growing for as long as every marker finds a transfer running (a peer that fails each
    /// install and is sent another at once).
    pub fn snapshot_written(&mut self, index: u64) -> Result<(), raft::Error> {
        self.snapshot_index = self.snapshot_index.max(index);
        let keep_from = index.saturating_sub(self.cfg.snapshot_catchup_entries);
        if keep_from <= self.node.store().first_index()? {
            return Ok(());
        }
        if let Some(to) = self.snapshot_in_flight() {
            tracing::info!(
                index,
                remote_peer_id = format!("{to:x}"),
                "raft log not compacted at the snapshot marker: a snapshot is being sent to a peer"
            );
            return Ok(());
        }
        self.node.mut_store().wl().compact(keep_from)?;
        Ok(())
    }

    /// A peer a snapshot is being sent to, if any. raft-rs's progress of a peer is in
    /// `ProgressState::Snapshot` from the `MsgSnapshot` until the transfer is reported
    /// ([`Core::snapshot_sent`], which the runtime does for every transfer it starts or refuses) or
    /// the peer acknowledges the snapshot's index; losing leadership resets every progress, so only a
    /// leader can hold the log back.
    fn snapshot_in_flight(&self) -> Option<u64> {
        let r = &self.node.raft;
        if r.state != StateRole::Leader {
            return None;
        }
        r.prs()
            .iter()
            .find(|(_, pr)| pr.state == ProgressState::Snapshot)
            .map(|(id, _)| *id)
    }

    /// The runtime installed a snapshot from the leader at `index` (backend, membership, WAL marker)
    /// and is about to step its message: raft-rs hands it back in a `Ready`, and only that snapshot
    /// goes into the in-memory log. The membership may have changed.
    pub fn snapshot_installed(&mut self, index: u64) {
        self.snapshot_index = index;
        self.conf_changed = true;
    }

    /// A membership entry the membership accepted: raft-rs's configuration follows. The change that
    /// removes this member starts its grace period.
    pub fn apply_conf_change(
        &mut self,
        now: Instant,
        index: u64,
        cc: &ConfChange,
    ) -> Result<ConfState, raft::Error> {
        let cs = self.node.apply_conf_change(cc)?;
        self.node.mut_store().wl().set_conf_state(cs.clone());
        self.conf_changed = true;
        if index > self.node.raft.raft_log.applied {
            self.node.advance_apply_to(index);
        }
        // Only the change that removes this member: a joining member replays the changes that added
        // the others before the one that adds it, and must not take those for its removal.
        let removed =
            cc.get_change_type() == ConfChangeType::RemoveNode && cc.node_id == self.node.raft.id;
        if removed && self.stop_at.is_none() {
            self.stop_at = Some(now + REMOVED_STOP_DELAY);
        }
        Ok(cs)
    }

    /// raft-rs's own empty change to leave a joint configuration (Hearth proposes only simple changes
    /// and never enters one): nothing for the membership.
    pub fn apply_conf_change_v2(
        &mut self,
        index: u64,
        cc: &ConfChangeV2,
    ) -> Result<(), raft::Error> {
        let cs = self.node.apply_conf_change(cc)?;
        self.node.mut_store().wl().set_conf_state(cs);
        if index > self.node.raft.raft_log.applied {
            self.node.advance_apply_to(index);
        }
        Ok(())
    }

    /// One turn at `now`: tick if due, release held proposals and reads, handle a `Ready`. Returns the
    /// effects in the order the runtime must perform them; an error is fatal (the in-memory log cannot
    /// take what raft-rs handed out).
    pub fn turn(&mut self, now: Instant) -> Result<Vec<Effect<W>>, RaftError> {
        let mut out = Vec::new();
        match self.next_tick {
            Some(t) if now < t => {}
            Some(_) => {
                self.node.tick();
                self.waiting.purge();
                self.next_tick = Some(now + self.cfg.tick);
            }
            None => self.next_tick = Some(now + self.cfg.tick),
        }
        if self.stop_at.is_some_and(|t| now >= t) {
            out.push(Effect::Stop);
            return Ok(out);
        }
        if std::mem::take(&mut self.conf_changed) {
            self.campaign_if_alone()?;
        }
        self.flush_waiting(&mut out);
        self.flush_reads(now, &mut out);
        if self.node.has_ready() {
            self.ready(&mut out)?;
            // A leader may have just appeared.
            self.flush_waiting(&mut out);
        }
        Ok(out)
    }

    /// A lone voter needs no election timeout to know it wins.
    fn campaign_if_alone(&mut self) -> Result<(), raft::Error> {
        let r = &self.node.raft;
        let cs = r.prs().conf().to_conf_state();
        if cs.voters == [r.id] && cs.voters_outgoing.is_empty() && r.state != StateRole::Leader {
            self.node.campaign()?;
        }
        Ok(())
    }

    fn flush_waiting(&mut self, out: &mut Vec<Effect<W>>) {
        if self.waiting.is_empty() || self.node.raft.leader_id == raft::INVALID_ID {
            return;
        }
        let held: Vec<Pending> = self.waiting.drain().collect();
        for p in held {
            self.propose(p, out);
        }
    }

    /// One read-index request for every read that arrived since the last one, and again those left
    /// unanswered too long; none while there is no leader, or while a new leader has not committed in
    /// its term (raft-rs would drop them).
    fn flush_reads(&mut self, now: Instant, out: &mut Vec<Effect<W>>) {
        let r = &self.node.raft;
        if r.leader_id == raft::INVALID_ID || (r.leader_id == r.id && !r.commit_to_current_term()) {
            return;
        }
        let requests = self.reads.flush(now);
        if requests.retried > 0 {
            out.push(Effect::ReadsRetried(requests.retried));
        }
        for ctx in requests.contexts {
            self.node.read_index(ctx);
        }
    }

    /// A `Ready`, in raft-rs's order: a leader's messages leave before the fsync, a snapshot goes into
    /// the in-memory log, read states answer reads, committed entries go to be applied, entries and
    /// hard state are persisted, then the messages that promise them leave and raft-rs advances.
    ///
    /// Except when the `Ready` changes the term or the vote: raft-rs lets a leader send before the
    /// fsync because a leader's term was made durable with its campaign, but a lone voter wins
    /// in the same step it campaigns. Its appends to learners would then carry a term it may forget
    /// in a power loss, after which it could lead that term again with other entries at the same
    /// indexes, and a learner holding the first ones would never learn they were replaced.
    fn ready(&mut self, out: &mut Vec<Effect<W>>) -> Result<(), RaftError> {
        let mut ready = self.node.ready();
        out.push(Effect::Failpoint("raftBeforeLeaderSend"));
        let new_term_or_vote = ready.hs().is_some_and(|hs| {
            let store = self.node.store().rl();
            let old = store.hard_state();
            hs.term != old.term || hs.vote != old.vote
        });
        let mut msgs = ready.take_messages();
        if !msgs.is_empty() && !new_term_or_vote {
            out.push(Effect::Send(std::mem::take(&mut msgs)));
        }
        let snapshot =
            (!ready.snapshot().is_empty()).then(|| ready.snapshot().get_metadata().index);
        if let Some(index) = snapshot {
            // raft-rs restores only the snapshot the runtime installed just before stepping it.
            if index != self.snapshot_index {
                return Err(RaftError::Corrupt(format!(
                    "raft restored a snapshot at {index}, but the one installed is at {}",
                    self.snapshot_index
                )));
            }
            out.push(Effect::Failpoint("raftBeforeApplySnap"));
            self.node
                .mut_store()
                .wl()
                .apply_snapshot(ready.snapshot().clone())?;
            out.push(Effect::Failpoint("raftAfterApplySnap"));
        }
        for rs in ready.take_read_states() {
            let waiters = self.reads.answered(&rs.request_ctx);
            if !waiters.is_empty() {
                out.push(Effect::ReadIndex {
                    waiters,
                    index: rs.index,
                });
            }
        }
        out.extend(Self::split_committed(ready.take_committed_entries()));
        let entries = ready.take_entries();
        let hs = ready.hs().cloned();
        if !entries.is_empty() || hs.is_some() {
            let mut store = self.node.mut_store().wl();
            let hard_state = hs.clone().unwrap_or_else(|| store.hard_state().clone());
            store.append(&entries)?;
            if let Some(hs) = hs {
                store.set_hardstate(hs);
            }
            out.push(Effect::Persist {
                entries,
                hard_state,
            });
        }
        // Votes and append responses promise what the persist made durable: only after it.
        out.push(Effect::Failpoint("raftBeforeFollowerSend"));
        msgs.extend(ready.take_persisted_messages());
        if !msgs.is_empty() {
            out.push(Effect::Send(msgs));
        }
        out.push(Effect::Failpoint("raftBeforeAdvance"));
        // Applying is the runtime's: raft-rs hears how far it got from `applied`.
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
        if !msgs.is_empty() {
            out.push(Effect::Send(msgs));
        }
        out.extend(Self::split_committed(light.take_committed_entries()));
        self.leader_changes(out);
        Ok(())
    }

    /// Committed entries as the effects that apply them, in log order: runs of normal entries, and
    /// each membership entry on its own.
    pub fn split_committed(entries: Vec<Entry>) -> Vec<Effect<W>> {
        let mut out = Vec::new();
        let mut batch = Vec::new();
        for e in entries {
            let membership = match e.get_entry_type() {
                EntryType::EntryNormal => e.context.as_ref() == MEMBER_UPDATE_CONTEXT,
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => true,
            };
            if !membership {
                batch.push(e);
                continue;
            }
            if !batch.is_empty() {
                out.push(Effect::Apply(std::mem::take(&mut batch)));
            }
            out.push(Effect::ApplyMembership(e));
        }
        if !batch.is_empty() {
            out.push(Effect::Apply(batch));
        }
        out
    }

    fn leader_changes(&mut self, out: &mut Vec<Effect<W>>) {
        let leader = self.node.raft.leader_id;
        if leader == self.last_leader {
            return;
        }
        self.last_leader = leader;
        out.push(Effect::LeaderChanged(leader));
        if leader == raft::INVALID_ID {
            return;
        }
        // Reads waiting on the old leader's confirmation will never get it.
        let waiters = self.reads.take_inflight();
        if !waiters.is_empty() {
            out.push(Effect::FailReads {
                waiters,
                error: ServerError::LeaderChanged,
            });
        }
    }

    /// Everything still waiting, failed (the runtime is stopping).
    pub fn shut_down(&mut self, out: &mut Vec<Effect<W>>) {
        let waiters = self.reads.take_all();
        if !waiters.is_empty() {
            out.push(Effect::FailReads {
                waiters,
                error: ServerError::Stopped,
            });
        }
        let held: Vec<Pending> = self.waiting.drain().collect();
        for p in held {
            if p.state.claim() {
                out.push(Effect::FailProposal {
                    pending: p,
                    error: ServerError::Stopped,
                });
            }
        }
    }
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
