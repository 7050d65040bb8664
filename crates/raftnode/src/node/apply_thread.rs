//! Applying committed entries on a thread of its own, as etcd applies on a goroutine of its own: the Raft
//! loop hands the committed normal entries over through a bounded queue ([`APPLY_QUEUE`] batches of at
//! most `MAX_COMMITTED_BYTES_PER_READY` bytes each) and goes on ticking, sending heartbeats and
//! appending while they are applied.
//!
//! What the loop keeps for itself: membership entries (conf changes and peer URL updates) change raft-rs's
//! configuration and the transport, which the loop owns; it applies them itself once this thread has
//! applied everything before them (`RaftNode::drain_apply`, etcd's followers also wait for the apply of a
//! conf change), so the applier sees one order. A snapshot from the leader is installed the same way,
//! after the queue drained.
//!
//! Ordering: entries reach this thread only once raft-rs calls them committed, which it does only once
//! they are in the local WAL (fsynced), and in log order: the loop never hands a later batch while an
//! earlier one waits for room (it keeps the waiting range of indexes, not the entries, which stay in
//! raft-rs's log until they are applied and a snapshot compacts them).
//!
//! This thread also makes the backend durable every `BACKEND_SYNC_INTERVAL` and, every `snapshot_count`
//! applied entries, syncs it and asks the loop to write a snapshot marker at the consistent index it
//! synced ([`Command::Applied`]), so the marker never promises more than the backend holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use raft::prelude::Entry;
use tokio::sync::watch;

use apply::applier::{Applier, ApplyFailed};

use super::{Command, RaftStatus, BACKEND_SYNC_INTERVAL};
use crate::metrics;
use crate::RaftError;

/// The most batches of committed entries queued for the apply thread.
pub const APPLY_QUEUE: usize = 32;

/// The applier, shared by the apply thread and (for membership entries and snapshot installs, while the
/// apply thread is idle) the loop.
pub(crate) type SharedApplier = Arc<Mutex<Applier>>;

pub(crate) fn lock(a: &SharedApplier) -> MutexGuard<'_, Applier> {
    // A panic on the apply thread stops the member anyway (the loop sees the thread gone).
    a.lock().unwrap_or_else(|e| e.into_inner())
}

/// How far the apply thread got, for the loop to wait on.
#[derive(Default)]
pub(crate) struct Progress {
    state: Mutex<(u64, Option<ApplyFailed>)>,
    changed: Condvar,
}

impl Progress {
    pub(crate) fn new(applied: u64) -> Progress {
        Progress {
            state: Mutex::new((applied, None)),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (u64, Option<ApplyFailed>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set(&self, index: u64) {
        let mut s = self.lock();
        s.0 = s.0.max(index);
        self.changed.notify_all();
    }

    fn fail(&self, e: &ApplyFailed) {
        self.lock().1 = Some(ApplyFailed {
            index: e.index,
            reason: e.reason.clone(),
        });
        self.changed.notify_all();
    }

    /// Waits until everything up to `index` is applied; an error if the apply thread failed or is gone.
    pub(crate) fn wait_for(&self, index: u64, done: &dyn Fn() -> bool) -> Result<(), RaftError> {
        let mut s = self.lock();
        loop {
            if let Some(e) = &s.1 {
                return Err(RaftError::Apply(ApplyFailed {
                    index: e.index,
                    reason: e.reason.clone(),
                }));
            }
            if s.0 >= index {
                return Ok(());
            }
            if done() {
                return Err(RaftError::Corrupt("the apply thread stopped".into()));
            }
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// What the apply thread shares with the loop.
pub(crate) struct Worker {
    pub applier: SharedApplier,
    pub entries: Receiver<Vec<Entry>>,
    pub loop_tx: Sender<Command>,
    pub status: Arc<RaftStatus>,
    pub applied_tx: Arc<watch::Sender<u64>>,
    pub progress: Arc<Progress>,
    pub backend: Arc<backend::Backend>,
    pub snapshot_count: u64,
    /// The index of the last snapshot marker (the loop moves it on an install).
    pub snapshot_index: Arc<AtomicU64>,
}

impl Worker {
    pub(crate) fn run(self) {
        let mut dirty = false;
        let mut last_sync = Instant::now();
        // The consistent index a marker was last asked for.
        let mut requested = 0;
        loop {
            let wait = if dirty {
                BACKEND_SYNC_INTERVAL.saturating_sub(last_sync.elapsed())
            } else {
                Duration::from_secs(3600)
            };
            let batch = match self.entries.recv_timeout(wait) {
                Ok(b) => Some(b),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut applier = lock(&self.applier);
            let result = (|| {
                let mut marker = None;
                if let Some(batch) = batch {
                    let Some(last) = batch.last().map(|e| e.index) else {
                        return Ok(None);
                    };
                    for e in batch {
                        failpoint::hit("beforeApplyOneEntryNormal");
                        applier.apply(e.index, e.term, &e.data)?;
                    }
                    // The batch's writes become visible, and their proposers are answered, with one
                    // publication (committed when read, or by the sync below).
                    applier.flush()?;
                    dirty = true;
                    let ci = applier.consistent_index();
                    let from = self.snapshot_index.load(Ordering::Acquire).max(requested);
                    if crate::loopcore::snapshot_due(ci, from, self.snapshot_count) {
                        // The marker promises the backend holds everything up to `ci`: make it durable
                        // first.
                        sync(&self.backend)?;
                        (dirty, last_sync, requested) = (false, Instant::now(), ci);
                        marker = Some(ci);
                    }
                    self.publish(last);
                    return Ok(Some((last, marker)));
                }
                Ok(None)
            })();
            if dirty && last_sync.elapsed() >= BACKEND_SYNC_INTERVAL {
                match sync(&self.backend) {
                    Ok(()) => (dirty, last_sync) = (false, Instant::now()),
                    Err(e) => {
                        self.failed(e);
                        return;
                    }
                }
            }
            drop(applier);
            match result {
                Ok(Some((index, snapshot))) => {
                    let _ = self.loop_tx.send(Command::Applied { index, snapshot });
                }
                Ok(None) => {}
                Err(e) => {
                    self.failed(e);
                    return;
                }
            }
        }
    }

    fn publish(&self, index: u64) {
        self.status.applied.store(index, Ordering::Release);
        self.applied_tx.send_replace(index);
        self.progress.set(index);
    }

    fn failed(&self, e: ApplyFailed) {
        tracing::error!("apply stopped: {e}");
        self.progress.fail(&e);
        let _ = self.loop_tx.send(Command::ApplyFailed(e));
    }
}

fn sync(backend: &backend::Backend) -> Result<(), ApplyFailed> {
    let started = Instant::now();
    backend.force_commit().map_err(|e| ApplyFailed {
        index: 0,
        reason: format!("making the backend durable: {e}"),
    })?;
    metrics::BACKEND_COMMIT.observe(started.elapsed().as_secs_f64());
    Ok(())
}
