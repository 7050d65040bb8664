//! Installing a snapshot from the leader, as etcd's `applySnapshot`, between two turns of the Raft loop,
//! once the apply thread has applied everything handed to it (`RaftNode::drain_apply`), so nothing is
//! applied meanwhile and the backend moves from one consistent index to the snapshot's.
//!
//! A received snapshot (checked and staged by the peer transport, verified by [`BackendSnapshots`]) is
//! installed only if raft-rs would
//! restore it: [`RaftNode::snapshot_wanted`] asks what raft-rs's `restore` asks (a term not behind the
//! node's, an index past its commit that its log does not already hold, a configuration that includes
//! it), so the backend never moves to a state raft-rs does not then take on. Otherwise the message is
//! stepped anyway (raft-rs answers the leader with its commit index) and the file is dropped.
//!
//! # Order, and what a crash leaves
//! 1. `Backend::install` swaps the file in (atomically, see `backend::swap`); the applier rebuilds what
//!    it keeps in memory from it (`Applier::restore`: the MVCC index and revisions, with every watcher
//!    moved to catch-up; the lessor; the alarms; the consistent index); then the membership, and the
//!    peers the transport talks to.
//! 2. The WAL gets a snapshot marker at the snapshot's index and term, and older segments are released.
//! 3. Only then is the `MsgSnapshot` stepped. raft-rs restores its log and configuration from the
//!    metadata and hands the snapshot back in the next `Ready`, where the core (`loopcore::Core`)
//!    puts it into `MemStorage` (after checking it is the one installed) before that `Ready`'s hard
//!    state is saved and its answer to the leader leaves, so the leader hears of the snapshot only once the member holds it durably.
//!
//! A crash before the file's rename leaves the old backend (its staging file is removed at start) and
//! the old WAL: the member restarts as it was and the leader sends a snapshot again. A crash after the
//! rename and before the marker leaves a backend whose consistent index is an entry the WAL does not
//! have (or has with another term): `storage::open_log` recognises that, takes the backend as the
//! snapshot and writes the missing marker, so the member restarts as after step 2. Never a mix: the
//! backend is one file or the other, and the entries the WAL holds are used only when they continue
//! the backend.
//!
//! # Failpoints
//! Each step has one (`docs/failpoints.md`), so a test can crash a member anywhere in an install:
//! `applyBeforeOpenSnapshot` (staged and verified, nothing installed), the backend's
//! `installBeforeRename`, `installAfterRename`, `installAfterSyncDir` and `installAfterSwap`,
//! `raftBeforeSaveSnap` (memory rebuilt, no marker yet), `raftAfterSaveSnap` (marker written, older
//! segments not yet released), `raftAfterWALRelease`, and in the next `Ready` `raftBeforeApplySnap` /
//! `raftAfterApplySnap` around raft-rs's storage taking the snapshot. The end-to-end tests kill a
//! member at each and restart it.

use std::path::{Path, PathBuf};

use raft::prelude::{ConfState, Message};
use raft::StateRole;
use rafthttp::{Incoming, SnapshotCopy};

use super::*;

/// What a backend snapshot stands for, read from the read snapshot it was copied from.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    pub index: u64,
    pub term: u64,
    /// None for a backend from before the configuration was recorded with the data.
    pub conf_state: Option<ConfState>,
}

impl Described {
    pub fn read(r: &dyn backend::Reader) -> Result<Described, String> {
        let (index, term) = mvcc::consistent_index_and_term(r).map_err(|e| e.to_string())?;
        let conf_state = membership::store::read_conf_state(r).map_err(|e| e.to_string())?;
        Ok(Described {
            index,
            term,
            conf_state,
        })
    }
}

/// The member's backend as the peer transport sends and receives snapshots of it.
pub struct BackendSnapshots {
    backend: Arc<backend::Backend>,
    local_id: u64,
}

impl BackendSnapshots {
    pub fn new(backend: Arc<backend::Backend>, local_id: u64) -> BackendSnapshots {
        BackendSnapshots { backend, local_id }
    }
}

impl rafthttp::SnapshotStore for BackendSnapshots {
    fn copy(&self) -> Result<SnapshotCopy, String> {
        let (file, d) = self
            .backend
            .snapshot_with(|r| Described::read(r).map_err(backend::BackendError::Storage))
            .map_err(|e| e.to_string())?;
        Ok(SnapshotCopy {
            size: file.size(),
            file: Box::new(file),
            index: d.index,
            term: d.term,
            conf_state: d.conf_state,
        })
    }

    fn staging_path(&self) -> PathBuf {
        self.backend.install_staging_path()
    }

    /// The file must be a complete database whose Raft position and configuration are the message's,
    /// and whose membership includes this member.
    fn verify(&self, path: &Path, msg: &Message) -> Result<(), String> {
        let db = backend::Backend::open(path, backend::BackendConfig::default())
            .map_err(|e| format!("not a valid database: {e}"))?;
        let described = {
            let r = db.read().map_err(|e| e.to_string())?;
            Described::read(&r)?
        };
        let md = msg.get_snapshot().get_metadata();
        if (described.index, described.term) != (md.index, md.term) {
            return Err(format!(
                "the file holds index {} of term {}, the message announces index {} of term {}",
                described.index, described.term, md.index, md.term
            ));
        }
        if let Some(cs) = &described.conf_state {
            if cs != md.get_conf_state() {
                return Err(format!(
                    "the file's configuration {cs:?} is not the message's {:?}",
                    md.get_conf_state()
                ));
            }
        }
        let members = membership::store::load(&db).map_err(|e| e.to_string())?;
        if !members.members.iter().any(|m| m.id == self.local_id) {
            return Err("the file's membership does not include this member".into());
        }
        db.close().map_err(|e| e.to_string())
    }
}

impl RaftNode {
    /// Installs a received snapshot if raft-rs will take it, then steps its message. An error is fatal:
    /// the backend may hold the snapshot while the rest does not know it yet (a restart sorts it out).
    pub(super) fn on_snapshot(&mut self, incoming: Incoming) -> Result<(), RaftError> {
        let Incoming {
            msg,
            staged,
            slot,
            reply,
        } = incoming;
        let md = msg.get_snapshot().get_metadata();
        let (index, term) = (md.index, md.term);
        let from = format!("{:x}", msg.from);
        if let Err(e) = self.drain_apply() {
            let _ = std::fs::remove_file(&staged);
            let _ = reply.send(Err(e.to_string()));
            return Err(e);
        }
        if !self.snapshot_wanted(&msg) {
            let _ = std::fs::remove_file(&staged);
            drop(slot);
            tracing::info!(
                remote_peer_id = %from,
                snapshot_index = index,
                commit = self.core.raft().raft_log.committed,
                "ignored a snapshot this member does not need"
            );
            self.step_snapshot(msg);
            let _ = reply.send(Ok(false));
            return Ok(());
        }
        tracing::info!(
            remote_peer_id = %from,
            snapshot_index = index,
            snapshot_term = term,
            applied = self.applied,
            "applying snapshot"
        );
        failpoint::hit("applyBeforeOpenSnapshot");
        let backend = self.backend.clone();
        let restored =
            super::apply_thread::lock(&self.applier).restore(|| backend.install(&staged));
        // The staging file is gone (installed, or removed by a failed install).
        drop(slot);
        if let Err(e) = restored.map_err(|e| RaftError::Corrupt(e.to_string())) {
            let _ = reply.send(Err(e.to_string()));
            return Err(RaftError::Corrupt(format!(
                "installing the snapshot at {index}: {e}"
            )));
        }
        // The key index was rebuilt from the snapshot; what the rebuild freed goes back to the OS.
        crate::heap::release_free_pages();
        self.reload_membership()?;
        failpoint::hit("raftBeforeSaveSnap");
        self.wal
            .save_snapshot(wal::SnapshotMarker { index, term })?;
        failpoint::hit("raftAfterSaveSnap");
        self.wal.release_to(index)?;
        failpoint::hit("raftAfterWALRelease");
        self.core.snapshot_installed(index);
        self.shared_snapshot_index.store(index, Ordering::Release);
        self.handed = index;
        self.set_applied(index);
        self.step_snapshot(msg);
        let _ = reply.send(Ok(true));
        tracing::info!(
            remote_peer_id = %from,
            snapshot_index = index,
            snapshot_term = term,
            revision = self.backend_revision(),
            "applied snapshot"
        );
        Ok(())
    }

    /// Whether raft-rs will restore `m`'s snapshot when it is stepped: the checks of its `step` (term)
    /// and `restore` (commit, configuration, a log that already holds the index), in its order.
    fn snapshot_wanted(&self, m: &Message) -> bool {
        let r = self.core.raft();
        if m.term < r.term || (m.term == r.term && r.state == StateRole::Leader) {
            return false;
        }
        let md = m.get_snapshot().get_metadata();
        if md.index < r.raft_log.committed {
            return false;
        }
        let cs = md.get_conf_state();
        let member = cs
            .voters
            .iter()
            .chain(&cs.learners)
            .chain(&cs.voters_outgoing)
            .any(|&id| id == r.id);
        member && !r.raft_log.match_term(md.index, md.term)
    }

    fn step_snapshot(&mut self, msg: Message) {
        if let Err(e) = self.core.step(msg) {
            tracing::warn!("snapshot message not stepped: {e}");
        }
    }

    /// Takes the membership from the installed backend and makes the transport follow it.
    fn reload_membership(&mut self) -> Result<(), RaftError> {
        let stored = membership::store::load(&self.backend)
            .map_err(|e| RaftError::Corrupt(format!("membership of the snapshot: {e}")))?;
        let cluster = self.cluster.cluster.clone();
        for id in cluster.replace(stored.members.clone(), stored.removed) {
            self.cluster.transport.remove_peer(id);
        }
        for m in &stored.members {
            self.cluster.transport.add_peer(m.id, &m.peer_urls);
        }
        Ok(())
    }

    fn backend_revision(&self) -> i64 {
        self.kv.rev()
    }
}
