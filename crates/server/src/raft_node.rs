//! The Raft loop: one thread that owns the raft-rs `RawNode`, the WAL and the applier.
//!
//! Each turn it takes every queued command (proposals, read-index requests), ticks the clock when due, and
//! handles a `Ready`: entries and hard state are appended to the WAL with one fdatasync, then committed entries
//! are applied. Because every proposal that arrived while the previous fsync was running lands in the same
//! `Ready`, concurrent clients share fsyncs (group commit) without any timer.
//!
//! Durability order: an entry is fsynced in the WAL before raft-rs counts it as persisted, and it is applied
//! (and its client answered) only once committed, so an acknowledged write survives a crash. The backend
//! commits without fsync and is made durable every `BACKEND_SYNC_INTERVAL`; after a crash the WAL is
//! replayed from the backend's consistent index.
//!
//! Log compaction: every `snapshot_count` applied entries the backend is synced, a snapshot marker at its
//! consistent index is written to the WAL, older WAL segments are released, and the in-memory log keeps only
//! `SNAPSHOT_CATCHUP_ENTRIES` entries before the marker for slow followers. The backend file is the snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeV2, ConfState, Entry, EntryType, HardState, ReadState, Snapshot,
};
use raft::storage::MemStorage;
use raft::{RawNode, Storage as _};
use tokio::sync::{oneshot, watch};

use crate::applier::Applier;
use crate::error::ServerError;

/// How many entries before a snapshot stay in memory so a slightly slow follower catches up from the log.
const SNAPSHOT_CATCHUP_ENTRIES: u64 = 5000;
/// How often the backend is made durable when there were writes.
const BACKEND_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// A read-index request unanswered for this long is sent again (raft-rs drops some silently, e.g. while a
/// new leader has not committed in its term), as etcd retries its own.
const READ_INDEX_RETRY: Duration = Duration::from_millis(500);
/// The most commands taken in one turn, so ticks and readies are never starved.
const MAX_COMMANDS_PER_TURN: usize = 8192;

pub enum Command {
    Propose {
        id: u64,
        data: Vec<u8>,
    },
    ReadIndex(oneshot::Sender<Result<u64, ServerError>>),
    /// Start handing leadership to `target` (a voter); answered once the transfer is under way.
    TransferLeader {
        target: u64,
        reply: oneshot::Sender<Result<(), ServerError>>,
    },
    /// Finish the current turn, make the backend durable and return.
    Stop,
}

/// What the rest of the server may read about the node without talking to its thread.
#[derive(Default)]
pub struct RaftStatus {
    pub term: AtomicU64,
    pub leader: AtomicU64,
    pub commit: AtomicU64,
    pub applied: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("wal: {0}")]
    Wal(#[from] wal::WalError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("backend: {0}")]
    Backend(#[from] backend::BackendError),
    #[error("corrupt raft state in WAL: {0}")]
    Corrupt(String),
}

/// The node's identity and the voters it was bootstrapped with, kept in the WAL's metadata record:
/// node id, cluster id, voter count, voter ids (all big-endian).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalMeta {
    pub node_id: u64,
    pub cluster_id: u64,
    pub voters: Vec<u64>,
}

impl WalMeta {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(20 + 8 * self.voters.len());
        b.extend_from_slice(&self.node_id.to_be_bytes());
        b.extend_from_slice(&self.cluster_id.to_be_bytes());
        b.extend_from_slice(&(self.voters.len() as u32).to_be_bytes());
        for v in &self.voters {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<WalMeta, RaftError> {
        let bad = || RaftError::Corrupt("WAL metadata record is malformed".into());
        let u64_at = |i: usize| -> Result<u64, RaftError> {
            let s = b.get(i..i + 8).ok_or_else(bad)?;
            Ok(u64::from_be_bytes(s.try_into().map_err(|_| bad())?))
        };
        let n = u32::from_be_bytes(
            b.get(16..20)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize;
        if b.len() != 20 + 8 * n {
            return Err(bad());
        }
        let voters = (0..n)
            .map(|i| u64_at(20 + 8 * i))
            .collect::<Result<_, _>>()?;
        Ok(WalMeta {
            node_id: u64_at(0)?,
            cluster_id: u64_at(8)?,
            voters,
        })
    }
}

/// The raft log as recovered from (or freshly created in) the WAL directory.
pub struct RecoveredLog {
    pub wal: wal::Wal,
    pub storage: MemStorage,
    pub meta: WalMeta,
    /// Index of the newest snapshot marker (0 if none).
    pub snapshot_index: u64,
}

/// Opens the WAL in `dir`, or creates it for a new member described by `fresh`, and rebuilds the in-memory
/// raft log from it.
pub fn open_log(dir: &std::path::Path, fresh: &WalMeta) -> Result<RecoveredLog, RaftError> {
    if !wal::Wal::exists(dir) {
        let w = wal::Wal::create(dir, &fresh.encode())?;
        let storage =
            MemStorage::new_with_conf_state(ConfState::from((fresh.voters.clone(), vec![])));
        return Ok(RecoveredLog {
            wal: w,
            storage,
            meta: fresh.clone(),
            snapshot_index: 0,
        });
    }
    let (w, rec) = wal::Wal::open(dir)?;
    if let Some((file, offset)) = &rec.repaired_tail {
        tracing::warn!(file = %file.display(), offset, "repaired a torn write at the end of the WAL");
    }
    let meta = WalMeta::decode(&rec.metadata)?;
    let conf_state = ConfState::from((meta.voters.clone(), vec![]));
    let storage = MemStorage::new_with_conf_state(conf_state.clone());
    let mut snapshot_index = 0;
    {
        let mut core = storage.wl();
        if let Some(m) = &rec.snapshot {
            let mut snap = Snapshot::default();
            let md = snap.mut_metadata();
            md.index = m.index;
            md.term = m.term;
            md.set_conf_state(conf_state);
            core.apply_snapshot(snap)?;
            snapshot_index = m.index;
        }
        let mut entries = Vec::with_capacity(rec.entries.len());
        for e in &rec.entries {
            let entry = Entry::parse_from_bytes(&e.data)
                .map_err(|err| RaftError::Corrupt(format!("entry {}: {err}", e.index)))?;
            if entry.index != e.index {
                return Err(RaftError::Corrupt(format!(
                    "entry {} is labelled {}",
                    entry.index, e.index
                )));
            }
            entries.push(entry);
        }
        if let Some(first) = entries.first() {
            if first.index != snapshot_index + 1 {
                return Err(RaftError::Corrupt(format!(
                    "log starts at {} but the snapshot is at {snapshot_index}",
                    first.index
                )));
            }
        }
        core.append(&entries)?;
        let last = entries.last().map(|e| e.index).unwrap_or(snapshot_index);
        if let Some(hs) = &rec.hard_state {
            let mut hs = HardState::parse_from_bytes(hs)
                .map_err(|err| RaftError::Corrupt(format!("hard state: {err}")))?;
            // The commit index is saved lazily (with the next append); it can trail the snapshot marker.
            hs.commit = hs.commit.max(snapshot_index).min(last);
            core.set_hardstate(hs);
        }
    }
    Ok(RecoveredLog {
        wal: w,
        storage,
        meta,
        snapshot_index,
    })
}

pub struct RaftNode {
    node: RawNode<MemStorage>,
    wal: wal::Wal,
    applier: Applier,
    backend: Arc<backend::Backend>,
    commands: Receiver<Command>,
    status: Arc<RaftStatus>,
    applied_tx: watch::Sender<u64>,
    tick_interval: Duration,
    snapshot_count: u64,
    snapshot_index: u64,
    applied: u64,
    backend_dirty: bool,
    last_backend_sync: Instant,
    pending_reads: Vec<oneshot::Sender<Result<u64, ServerError>>>,
    inflight_reads: HashMap<u64, InflightRead>,
    read_seq: u64,
    last_leader: u64,
}

/// Reads waiting on one read-index request.
struct InflightRead {
    sent: Instant,
    waiters: Vec<oneshot::Sender<Result<u64, ServerError>>>,
}

pub struct NodeConfig {
    pub heartbeat: Duration,
    pub election: Duration,
    pub snapshot_count: u64,
}

impl RaftNode {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        log: RecoveredLog,
        cfg: &NodeConfig,
        applier: Applier,
        backend: Arc<backend::Backend>,
        commands: Receiver<Command>,
        status: Arc<RaftStatus>,
        applied_tx: watch::Sender<u64>,
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
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        rc.validate()?;
        let voters = log.meta.voters.clone();
        let mut node = RawNode::new(&rc, log.storage, &crate::raft_log::logger())?;
        if voters == [log.meta.node_id] {
            // A lone voter needs no election timeout to know it wins.
            node.campaign()?;
        }
        status.applied.store(applied, Ordering::Release);
        status.term.store(node.raft.term, Ordering::Release);
        status.leader.store(node.raft.leader_id, Ordering::Release);
        applied_tx.send_replace(applied);
        Ok(RaftNode {
            node,
            wal: log.wal,
            applier,
            backend,
            commands,
            status,
            applied_tx,
            tick_interval: cfg.heartbeat,
            snapshot_count: cfg.snapshot_count.max(1),
            snapshot_index: log.snapshot_index,
            applied,
            backend_dirty: false,
            last_backend_sync: Instant::now(),
            pending_reads: Vec::new(),
            inflight_reads: HashMap::new(),
            read_seq: 0,
            last_leader: raft::INVALID_ID,
        })
    }

    /// Runs until every command sender is gone. An error is fatal: the log or the backend could not be
    /// written, and continuing could acknowledge a write that is not durable.
    pub fn run(mut self) -> Result<(), RaftError> {
        let mut next_tick = Instant::now() + self.tick_interval;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.commands.recv_timeout(wait) {
                Ok(cmd) => {
                    let mut stop = !self.handle(cmd);
                    for _ in 0..MAX_COMMANDS_PER_TURN {
                        match self.commands.try_recv() {
                            Ok(cmd) => stop |= !self.handle(cmd),
                            Err(_) => break,
                        }
                    }
                    if stop {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if now >= next_tick {
                self.node.tick();
                next_tick = now + self.tick_interval;
                if self.backend_dirty
                    && now.duration_since(self.last_backend_sync) >= BACKEND_SYNC_INTERVAL
                {
                    self.sync_backend()?;
                }
            }
            self.flush_reads();
            if self.node.has_ready() {
                self.on_ready()?;
            }
        }
        self.sync_backend()?;
        self.fail_reads(ServerError::Stopped);
        Ok(())
    }

    /// Returns false when asked to stop.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Propose { id, data } => {
                if let Err(e) = self.node.propose(vec![], data) {
                    tracing::debug!(id, "proposal dropped: {e}");
                    crate::metrics::PROPOSALS_FAILED.inc();
                    self.applier.fail(id, ServerError::NoLeader);
                }
            }
            Command::ReadIndex(tx) => self.pending_reads.push(tx),
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
            Command::Stop => return false,
        }
        true
    }

    /// Sends one read-index request for every read that arrived since the last one, and sends again those
    /// left unanswered too long.
    fn flush_reads(&mut self) {
        let r = &self.node.raft;
        if r.leader_id == raft::INVALID_ID || (r.leader_id == r.id && !r.commit_to_current_term()) {
            return;
        }
        let now = Instant::now();
        let stale: Vec<u64> = self
            .inflight_reads
            .iter()
            .filter(|(_, f)| now.duration_since(f.sent) >= READ_INDEX_RETRY)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in stale {
            if let Some(f) = self.inflight_reads.get_mut(&seq) {
                f.sent = now;
            }
            self.node.read_index(seq.to_be_bytes().to_vec());
        }
        if self.pending_reads.is_empty() {
            return;
        }
        self.read_seq += 1;
        self.node.read_index(self.read_seq.to_be_bytes().to_vec());
        let waiters = std::mem::take(&mut self.pending_reads);
        self.inflight_reads
            .insert(self.read_seq, InflightRead { sent: now, waiters });
    }

    fn on_read_state(&mut self, rs: ReadState) {
        let Ok(seq) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()).map(u64::from_be_bytes) else {
            return;
        };
        for tx in self
            .inflight_reads
            .remove(&seq)
            .map(|f| f.waiters)
            .unwrap_or_default()
        {
            let _ = tx.send(Ok(rs.index));
        }
    }

    fn fail_reads(&mut self, e: ServerError) {
        let inflight = self.inflight_reads.drain().flat_map(|(_, f)| f.waiters);
        for tx in self.pending_reads.drain(..).chain(inflight) {
            let _ = tx.send(Err(e.clone()));
        }
    }

    fn on_ready(&mut self) -> Result<(), RaftError> {
        let mut ready = self.node.ready();
        // Messages to peers would be sent here; a single member has none.
        drop(ready.take_messages());
        for rs in ready.take_read_states() {
            self.on_read_state(rs);
        }
        self.apply(ready.take_committed_entries())?;
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
            self.wal.save(Some(&hard_bytes), &wal_entries)?;
            crate::metrics::WAL_FSYNC.observe(started.elapsed().as_secs_f64());
            let mut store = self.node.mut_store().wl();
            store.append(&entries)?;
            if let Some(hs) = hs {
                store.set_hardstate(hs);
            }
        }
        drop(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().wl().mut_hard_state().commit = commit;
        }
        drop(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.node.advance_apply();
        self.publish_status();
        self.maybe_snapshot()
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(());
        };
        for e in entries {
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    self.applier.apply(e.index, e.term, &e.data);
                    self.backend_dirty = true;
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&e.data).map_err(|err| {
                        RaftError::Corrupt(format!("conf change {}: {err}", e.index))
                    })?;
                    let cs = self.node.apply_conf_change(&cc)?;
                    self.node.mut_store().wl().set_conf_state(cs);
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&e.data).map_err(|err| {
                        RaftError::Corrupt(format!("conf change {}: {err}", e.index))
                    })?;
                    let cs = self.node.apply_conf_change(&cc)?;
                    self.node.mut_store().wl().set_conf_state(cs);
                }
            }
        }
        self.applied = last;
        self.status.applied.store(last, Ordering::Release);
        self.applied_tx.send_replace(last);
        Ok(())
    }

    fn publish_status(&mut self) {
        let r = &self.node.raft;
        self.status.term.store(r.term, Ordering::Release);
        self.status.leader.store(r.leader_id, Ordering::Release);
        self.status
            .commit
            .store(r.raft_log.committed, Ordering::Release);
        if r.leader_id != self.last_leader {
            let had_leader = self.last_leader != raft::INVALID_ID;
            self.last_leader = r.leader_id;
            if r.leader_id != raft::INVALID_ID {
                crate::metrics::LEADER_CHANGES.inc();
            }
            if !had_leader {
                return;
            }
            // Reads that were waiting on the old leader's confirmation will never get it.
            let stale: Vec<_> = self
                .inflight_reads
                .drain()
                .flat_map(|(_, f)| f.waiters)
                .collect();
            for tx in stale {
                let _ = tx.send(Err(ServerError::LeaderChanged));
            }
        }
    }

    fn sync_backend(&mut self) -> Result<(), RaftError> {
        let started = Instant::now();
        self.backend.force_commit()?;
        crate::metrics::BACKEND_COMMIT.observe(started.elapsed().as_secs_f64());
        self.backend_dirty = false;
        self.last_backend_sync = Instant::now();
        Ok(())
    }

    fn maybe_snapshot(&mut self) -> Result<(), RaftError> {
        let index = self.applier.consistent_index();
        if index < self.snapshot_index + self.snapshot_count {
            return Ok(());
        }
        let term = self.node.store().term(index)?;
        // The marker promises the backend holds everything up to `index`: make that durable first.
        self.sync_backend()?;
        self.wal
            .save_snapshot(wal::SnapshotMarker { index, term })?;
        let keep_from = index.saturating_sub(SNAPSHOT_CATCHUP_ENTRIES);
        let first = self.node.store().first_index()?;
        if keep_from > first {
            self.node.mut_store().wl().compact(keep_from)?;
        }
        self.wal.release_to(index)?;
        self.snapshot_index = index;
        tracing::info!(index, term, "compacted the raft log at a snapshot marker");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_meta_round_trips_and_rejects_garbage() {
        let m = WalMeta {
            node_id: 7,
            cluster_id: 9,
            voters: vec![7, 8],
        };
        assert_eq!(WalMeta::decode(&m.encode()).unwrap(), m);
        assert!(WalMeta::decode(&[1, 2, 3]).is_err());
        let mut long = m.encode();
        long.push(0);
        assert!(WalMeta::decode(&long).is_err());
        let mut huge = m.encode();
        huge[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(WalMeta::decode(&huge).is_err());
    }
}
