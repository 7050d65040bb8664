//! Hearth's multi-version key-value store, with etcd's MVCC semantics.
//!
//! # Data model
//!
//! Every change is stored under a [`Revision`] `(main, sub)`: `main` is the store revision of
//! the write transaction that made it, `sub` its position inside that transaction. The backend's
//! `key` bucket maps the 17-byte encoding of the revision (main big-endian, `_`, sub big-endian;
//! plus a trailing `t` for a deletion) to the prost-encoded [`KeyValue`] — the same layout as
//! etcd. A deletion (tombstone) stores a `KeyValue` with only `key` set.
//!
//! An in-memory index (an ordered map keyed by user key, `packed::PackedMap`; per key, generations of revisions, as
//! etcd's `keyIndex`) maps `(key, revision)` to the backend record visible at that revision. It
//! is rebuilt by scanning the `key` bucket when the store is opened, unless the store is given an
//! image of it made at a clean stop that still matches the backend (`index::image`).
//!
//! # Invariants
//!
//! * An empty store is at revision 1. A [`TxnWrite`] that changes anything bumps the revision by
//!   exactly one, whatever the number of changes (their sub revisions are 0, 1, 2, ...); one that
//!   changes nothing (a delete of a missing key, no ops) leaves the revision alone.
//! * A put keeps the key's `create_revision` and increments `version`; a put on a deleted (or
//!   never seen) key starts a new generation: `create_revision = mod_revision`, `version = 1`.
//! * The Raft consistent index and term are written into the `meta` bucket in the same backend
//!   transaction as the changes ([`TxnWrite::end`]), so the backend is always at some consistent
//!   index, even after a crash loses its non-durable commits (see the `backend` crate's batched
//!   durability): the server replays its WAL from [`KvStore::consistent_index`].
//! * Compaction at `r` records `scheduledCompactRev = r` durably before anything is removed, and
//!   `finishedCompactRev = r` in the last batch of the physical deletion. On open, an unfinished
//!   compaction is resumed (synchronously, before `open` returns), and the revision never goes
//!   backwards: it is at least the largest scheduled or finished compaction revision, even if the
//!   newest records were all compacted away.
//!
//! # Locking
//!
//! * `state: RwLock<State>` holds the index, the current revision and the compaction revision.
//!   Readers take it shared and only for the index lookups of one call; nobody holds it across a
//!   backend commit or fsync.
//! * `writer: Mutex<()>` admits one [`TxnWrite`] at a time (held for its whole life), and is also
//!   taken by [`KvStore::compact`] while it compacts the index, so a compaction never interleaves
//!   with an open write transaction. Do not call `compact` (or `write`) on a thread that holds a
//!   `TxnWrite`: it would deadlock.
//! * A write transaction updates the index as it goes, with revision `current + 1`, so it sees
//!   its own writes; readers query the index at revisions `<= current` and so never see them. At
//!   [`TxnWrite::end`] the backend transaction is committed first (without any store lock), and
//!   then `current` is bumped under the write lock; [`KvStore::flush`] instead publishes deferred
//!   revisions in the backend (`Backend::publish_deferred`) before it bumps `current`, without a
//!   commit. A [`ReadView`] has the backend commit what was published (under the backend's write
//!   gate, holding no store lock), then reads `current` under the read lock and, if the backend
//!   still says everything published is committed, opens its snapshot there (else it starts over):
//!   if it saw the new revision, its records were committed, so its snapshot contains them; if it
//!   saw the old one, its snapshot may also contain the new records, which the index never points
//!   it to. A view is therefore always consistent; a reader waits for a writer for an index update
//!   and, after a publication, for one commit.
//! * If a `TxnWrite` is dropped without `end`, or its commit fails, its index changes are undone
//!   (newest first) and nothing reaches the backend.
//! * Physical compaction deletes old records in batches of `compaction_batch_limit` records, each
//!   its own backend write transaction, with `compaction_sleep_interval` between batches so writers
//!   get the backend in between. It runs on one background thread per store (`mvcc-compactor`),
//!   in the order compactions were requested; [`CompactHandle::wait`] blocks until a compaction's
//!   physical part is done. Dropping the store stops the thread after the current batch; the
//!   rest is resumed at the next open.
//!
//! # Watch
//!
//! [`WatchableStore`] streams the store's changes to watchers with etcd's semantics; every
//! [`TxnWrite::end`] notifies them. Design, bounds and invariants: the `watchable_store` module.
//!
//! # Tradeoffs
//!
//! * The index lives in memory: O(keys + revisions since the last compaction).
//! * `delete_range` reads the previous value of every deleted key (for `prev_kv` and the
//!   caller's response), one backend lookup per key.
//! * [`TxnWrite::put`] and [`TxnWrite::delete_range`] cannot return errors (their signatures are
//!   the server's); a backend failure inside them poisons the transaction, and `end` returns the
//!   error and discards the transaction.

#![forbid(unsafe_code)]

#[doc(hidden)]
pub mod fuzzing;
mod hash;
mod index;
mod packed;
mod revision;
mod store;
mod watchable_store;
mod watcher_group;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod watch_tests;

pub use api::mvccpb::{event::EventType, Event, KeyValue};
pub use hash::{KeyValueHash, HASH_STORAGE_MAX_SIZE};
pub use revision::{BucketKey, Revision, MARKED_REV_BYTES_LEN, REV_BYTES_LEN};
pub use store::{
    consistent_index_and_term, CompactHandle, KvStore, RangeOptions, RangeResult, ReadView,
    StoreConfig, TxnWrite,
};
pub use watchable_store::{
    SyncReport, WatchConfig, WatchError, WatchFilter, WatchId, WatchResponse, WatchSink,
    WatchStream, WatchableStore, WatcherCounts, AUTO_WATCH_ID, INVALID_WATCH_ID,
};

/// Errors of the MVCC store. The `Display` texts of `Compacted` and `FutureRev` are etcd's.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    /// The requested revision has been compacted away.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the store's.
    #[error("mvcc: required revision is a future revision")]
    FutureRev,
    /// The backend failed.
    #[error("mvcc: backend: {0}")]
    Backend(#[from] backend::BackendError),
    /// The backend holds data that is not what this store writes.
    #[error("mvcc: corrupt data: {0}")]
    Corrupt(String),
    /// A physical compaction was stopped (the store was dropped) before it finished; it resumes
    /// when the store is opened again.
    #[error("mvcc: compaction interrupted")]
    CompactionInterrupted,
    /// Writes applied with their commit deferred are not yet in the backend, so the key index
    /// is ahead of it and an image of the index would not match the file.
    #[error("mvcc: deferred writes are not committed")]
    Uncommitted,
}

/// Whether a backend pair is Raft bookkeeping (the consistent index and term in `meta`): it may
/// differ between members that hold the same data, so whole-backend hashes skip it, and a
/// restored member resets it.
pub fn is_raft_meta(bucket: backend::Bucket, key: &[u8]) -> bool {
    bucket == backend::Bucket::Meta
        && (key == store::META_CONSISTENT_INDEX || key == store::META_TERM)
}
