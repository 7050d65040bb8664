//! Online defragmentation: rewriting the database compactly while requests keep being served.
//!
//! redb, like bbolt, never shrinks its file: pages freed by deletes (MVCC compaction) are reused
//! but stay allocated. etcd's defragment copies the whole file while holding the batch
//! transaction lock, so every write (and, in etcd, every read) waits for seconds per gigabyte.
//! Here the long part runs beside the writers:
//!
//! 1. **Start.** Under the write gate (so no write transaction is open) a journal is switched on
//!    and a read snapshot taken: from now on the live state is exactly the snapshot plus the
//!    journal's operations, in order. Every committed write transaction appends its puts and
//!    deletes to the journal (aborted ones append nothing) while it still holds the gate.
//! 2. **Copy** ([`Point::DefragCopy`]). The snapshot is copied into a new file next to the
//!    database (`<db>.defrag.tmp`) in bounded batches, with a durable commit every 64 KiB (see
//!    `crate::copy`: one fsync of the whole copy at the end would stall every other fsync on
//!    the disk, the WAL's included, for as long as it takes to write it). Readers and writers
//!    run as usual.
//! 3. **Catch up** ([`Point::DefragCatchUp`]). The journal is drained and replayed into the new
//!    file, repeatedly, while writers go on filling it. Each round replays what was written
//!    during the previous one, which takes less time than it took to write (no consensus, no
//!    per-request overhead), so the rounds shrink; they stop once a round had at most
//!    [`DefragConfig::final_ops`] operations or after [`DefragConfig::max_rounds`] rounds. Every
//!    round ends with a durable commit, so the new file is on disk up to its last round.
//! 4. **Switch** ([`Point::DefragFinal`], the only critical section). Under the write gate the
//!    last journal entries are replayed and committed durably (if there are any), the new file
//!    is renamed over the live one, the directory fsynced and the handle switched (see
//!    [`crate::swap`]). Readers are not blocked (a reader that must commit
//!    published changes waits for the gate like a writer); writers wait only for this step. The old
//!    handle is closed after the gate is released, without fsyncs (its file is unlinked).
//!
//! **Bounds.** The critical section replays at most `max(final_ops, ops of the last round)`
//! operations, then one fsync of just the pages they wrote, a rename and a directory fsync;
//! nothing in it is proportional to the database size. The journal holds copies of the keys
//! and values written during the copy; if it grows past [`DefragConfig::max_journal_bytes`]
//! (writers outpace the copy for long) the defragmentation is abandoned with an error and the
//! live file is left as it was, so memory stays bounded.
//!
//! **Size.** The copy holds only live pairs, written in key order into nearly full pages. Its
//! length still overshoots: redb grows a file below 4 GiB by doubling it, so the copy's length
//! is the power-of-two step it reached, up to twice its data, the rest a hole that takes no
//! disk space. [`Backend::size`] therefore reports the allocated size, which after a
//! defragmentation is the live data. redb's `compact` would trim the length, but it walks and
//! moves pages for seconds on a large file, and the next commit after it (the final replay,
//! which must come after it) doubles the file again; it is not used.
//!
//! **Tradeoffs.** Writers are held for a few milliseconds whatever the database size, against
//! etcd's defragment holding them for the whole copy; in exchange the defragmentation takes
//! longer than a plain copy (an fsync every 64 KiB and one per catch-up round), and under a
//! write load that the rounds cannot outrun the critical section replays up to a round's worth
//! of operations (after `max_rounds`) instead of a handful. While the copy runs, the
//! snapshot pins the pages it reads, so the live file may grow by what is overwritten
//! meanwhile (reclaimed by the swap). Disk use peaks at the old file plus the compact copy.
//! Every write pays a copy of its pairs into the journal while a defragmentation runs, and
//! nothing when none does.

use std::sync::atomic::Ordering;

use redb::Durability;

use crate::copy::{copy_into, COPY_BATCH, SYNC_EVERY};
use crate::swap::{staging_path, Point};
use crate::{Backend, BackendError, Bucket, Result};

/// Tuning of [`Backend::defrag`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefragConfig {
    /// Abandon the defragmentation if the writes made during it need more journal than this.
    pub max_journal_bytes: usize,
    /// Enter the critical section once a catch-up round replayed at most this many operations.
    pub final_ops: usize,
    /// Enter the critical section after this many catch-up rounds in any case.
    pub max_rounds: usize,
}

impl Default for DefragConfig {
    fn default() -> Self {
        DefragConfig {
            max_journal_bytes: 256 << 20,
            final_ops: 256,
            max_rounds: 16,
        }
    }
}

/// What a defragmentation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DefragStats {
    /// File size before, in bytes.
    pub size_before: u64,
    /// File size after, in bytes.
    pub size_after: u64,
    /// Pairs copied from the snapshot.
    pub copied: u64,
    /// Catch-up rounds run outside the critical section.
    pub rounds: usize,
    /// Operations replayed outside the critical section.
    pub caught_up: usize,
    /// Operations replayed inside the critical section.
    pub final_ops: usize,
}

/// One change of a committed write transaction.
#[derive(Clone, Debug)]
pub(crate) enum JournalOp {
    Put(Bucket, Vec<u8>, Vec<u8>),
    Delete(Bucket, Vec<u8>),
    DeleteRange(Bucket, Vec<u8>, Option<Vec<u8>>),
}

impl JournalOp {
    fn bytes(&self) -> usize {
        // A fixed overhead per entry keeps a flood of tiny writes bounded too.
        32 + match self {
            JournalOp::Put(_, k, v) => k.len() + v.len(),
            JournalOp::Delete(_, k) => k.len(),
            JournalOp::DeleteRange(_, s, e) => s.len() + e.as_ref().map_or(0, Vec::len),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Journal {
    ops: Vec<JournalOp>,
    bytes: usize,
    limit: usize,
    overflowed: bool,
}

impl Backend {
    /// Called with the write gate held; the flag only changes under the gate too.
    pub(crate) fn journal_active(&self) -> bool {
        self.journaling.load(Ordering::Acquire)
    }

    pub(crate) fn journal_append(&self, ops: Vec<JournalOp>) {
        let mut j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let Some(j) = j.as_mut() else { return };
        if j.overflowed {
            return;
        }
        j.bytes += ops.iter().map(JournalOp::bytes).sum::<usize>();
        if j.bytes > j.limit {
            j.overflowed = true;
            j.ops = Vec::new();
            return;
        }
        j.ops.extend(ops);
    }

    fn journal_take(&self) -> Result<Vec<JournalOp>> {
        let mut j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let Some(j) = j.as_mut() else {
            return Err(BackendError::Storage(
                "defragmentation journal is off".into(),
            ));
        };
        if j.overflowed {
            return Err(BackendError::Storage(format!(
                "defragmentation abandoned: more than {} bytes were written while it copied",
                j.limit
            )));
        }
        j.bytes = 0;
        Ok(std::mem::take(&mut j.ops))
    }

    /// Called with the write gate held (or after a failure, when a stale `true` only makes
    /// the next writers record changes nobody reads).
    fn journal_stop(&self) {
        self.journaling.store(false, Ordering::Release);
        *self.journal.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Rewrites the database compactly while reads and writes go on (see the module doc), then
    /// switches to the new file atomically and crash-safely. One at a time; a second caller
    /// waits. On error the live database is unchanged.
    pub fn defrag(&self, cfg: &DefragConfig) -> Result<DefragStats> {
        let _one = self.replacing.lock().unwrap_or_else(|p| p.into_inner());
        let staged = staging_path(&self.path, "defrag");
        match std::fs::remove_file(&staged) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let size_before = self.size()?;
        let snap = {
            let _gate = self.write_gate.lock().unwrap_or_else(|p| p.into_inner());
            self.commit_deferred_locked()?;
            *self.journal.lock().unwrap_or_else(|p| p.into_inner()) = Some(Journal {
                ops: Vec::new(),
                bytes: 0,
                limit: cfg.max_journal_bytes,
                overflowed: false,
            });
            self.journaling.store(true, Ordering::Release);
            // Everything is committed (the gate is held), and `read` would wait for the gate.
            self.read_raw()
        };
        let result = snap.and_then(|snap| {
            self.at(Point::DefragCopy);
            failpoint::hit("defragBeforeCopy");
            let mut b = redb::Database::builder();
            b.set_cache_size(self.config.cache_bytes);
            // This file becomes the served one: it syncs as the served one does.
            let (db, sync) = crate::nosync::create(&b, &staged, self.config.unsafe_no_fsync)?;
            let copied = copy_into(&snap, &db, Some(SYNC_EVERY))?;
            drop(snap);
            self.at(Point::DefragCatchUp);
            let mut stats = DefragStats {
                size_before,
                copied,
                ..Default::default()
            };
            // Every round ends with a durable commit, so the fsync under the gate only covers
            // what the last few operations wrote.
            loop {
                let ops = self.journal_take()?;
                let n = ops.len();
                replay(&db, ops, Durability::Immediate)?;
                stats.rounds += 1;
                stats.caught_up += n;
                if n <= cfg.final_ops || stats.rounds >= cfg.max_rounds {
                    break;
                }
            }
            let gate = self.write_gate.lock().unwrap_or_else(|p| p.into_inner());
            self.at(Point::DefragFinal);
            self.commit_deferred_locked()?;
            let ops = self.journal_take()?;
            self.journal_stop();
            stats.final_ops = ops.len();
            if !ops.is_empty() {
                replay(&db, ops, Durability::Immediate)?;
            }
            failpoint::hit("defragBeforeRename");
            self.swap_in(db, sync, &staged, gate, None)?;
            stats.size_after = self.size()?;
            Ok(stats)
        });
        self.journal_stop();
        match &result {
            Ok(s) => tracing::info!(
                before = s.size_before,
                after = s.size_after,
                rounds = s.rounds,
                final_ops = s.final_ops,
                "defragmented the backend"
            ),
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                tracing::warn!("defragmentation failed: {e}");
            }
        }
        result
    }
}

/// Applies journal operations to `db` in order, in transactions of bounded size; the last one
/// commits with `last`.
fn replay(db: &redb::Database, ops: Vec<JournalOp>, last: Durability) -> Result<()> {
    let mut it = ops.into_iter().peekable();
    loop {
        let mut txn = db.begin_write()?;
        let mut n = 0;
        while n < COPY_BATCH {
            let Some(op) = it.next() else { break };
            n += 1;
            match op {
                JournalOp::Put(b, k, v) => {
                    txn.open_table(b.def())?
                        .insert(k.as_slice(), v.as_slice())?;
                }
                JournalOp::Delete(b, k) => {
                    txn.open_table(b.def())?.remove(k.as_slice())?;
                }
                JournalOp::DeleteRange(b, s, e) => {
                    if let Some(range) = crate::bounds(&s, e.as_deref()) {
                        txn.open_table(b.def())?
                            .retain_in::<&[u8], _>(range, |_, _| false)?;
                    }
                }
            }
        }
        let done = it.peek().is_none();
        txn.set_durability(if done { last } else { Durability::None })?;
        txn.commit()?;
        if done {
            return Ok(());
        }
    }
}
