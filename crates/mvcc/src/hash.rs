//! etcd's KV hash (`mvcc/hash.go`): the CRC-32C members compare to find corruption, and the hashes
//! of recent compactions the leader compares with its followers' (the compaction hash check).
//!
//! # The hash
//!
//! A CRC-32C (Castagnoli) of the bucket name `key`, then of every record of the `key` bucket, key
//! bytes then value bytes, in key (revision) order, counting only the records that matter at a
//! revision `rev` given a compaction revision `compact`: none above `rev`; of those at or below
//! `compact`, only the ones a compaction at `rev` keeps (unless it keeps none: then all); never a
//! tombstone at exactly `compact` (etcd 3.5.16 stopped deleting it, and hashes must not depend on
//! which version compacted). Members holding the same data at the same compaction get the same
//! hash, whatever their Raft bookkeeping.
//!
//! # Compaction hashes
//!
//! A physical compaction at `rev` reads every record at or below `rev` anyway; it hashes them as
//! above with `compact` = the previous compaction revision, which is what `HashKV` at `rev` returned
//! just before the compaction. The store keeps the last [`HASH_STORAGE_MAX_SIZE`] of these (in
//! memory: a restart forgets them, as etcd's does), and [`KvStore::hash_by_rev`] answers from them at
//! those revisions, so a leader can ask followers for the hash of a compaction they all made, even
//! long after it. A compaction whose predecessor had not finished is not stored: records its
//! predecessor should have deleted may still be there.
//!
//! [`KvStore::hash_by_rev`]: crate::KvStore::hash_by_rev

use std::collections::HashSet;
use std::sync::Mutex;

use crate::revision::{BucketKey, Revision};

/// How many compaction hashes are kept (etcd's `hashStorageMaxSize`).
pub const HASH_STORAGE_MAX_SIZE: usize = 10;

/// A hash of the key space at `revision`, computed against the compaction at `compact_revision`
/// (-1: never compacted), as etcd's `mvcc.KeyValueHash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyValueHash {
    pub hash: u32,
    pub compact_revision: i64,
    pub revision: i64,
}

/// Hashes records as etcd's `kvHasher` does.
pub(crate) struct KvHasher<'a> {
    crc: u32,
    compact: i64,
    rev: i64,
    keep: &'a HashSet<Revision>,
}

impl<'a> KvHasher<'a> {
    pub(crate) fn new(compact: i64, rev: i64, keep: &'a HashSet<Revision>) -> KvHasher<'a> {
        KvHasher {
            crc: crc32c::crc32c_append(0, backend::Bucket::Key.name().as_bytes()),
            compact,
            rev,
            keep,
        }
    }

    /// Counts one record of the `key` bucket (`bk` is `k` decoded).
    pub(crate) fn write(&mut self, bk: &BucketKey, k: &[u8], v: &[u8]) {
        if bk.rev.main > self.rev {
            return;
        }
        if bk.rev.main <= self.compact && !self.keep.is_empty() && !self.keep.contains(&bk.rev) {
            return;
        }
        if bk.rev.main == self.compact && bk.tombstone {
            return;
        }
        self.crc = crc32c::crc32c_append(self.crc, k);
        self.crc = crc32c::crc32c_append(self.crc, v);
    }

    pub(crate) fn finish(self) -> KeyValueHash {
        KeyValueHash {
            hash: self.crc,
            compact_revision: self.compact,
            revision: self.rev,
        }
    }
}

/// The hashes of the last compactions, oldest first.
#[derive(Default)]
pub(crate) struct HashStorage {
    hashes: Mutex<Vec<KeyValueHash>>,
}

impl HashStorage {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<KeyValueHash>> {
        self.hashes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn store(&self, h: KeyValueHash) {
        tracing::info!(
            hash = h.hash,
            revision = h.revision,
            compact_revision = h.compact_revision,
            "storing new hash"
        );
        let mut hashes = self.lock();
        hashes.push(h);
        hashes.sort_by_key(|h| h.revision);
        let excess = hashes.len().saturating_sub(HASH_STORAGE_MAX_SIZE);
        hashes.drain(..excess);
    }

    pub(crate) fn get(&self, rev: i64) -> Option<KeyValueHash> {
        self.lock().iter().find(|h| h.revision == rev).copied()
    }

    pub(crate) fn all(&self) -> Vec<KeyValueHash> {
        self.lock().clone()
    }
}
