//! etcd's snapshot file and Hearth's backend, both ways.
//!
//! An etcd snapshot (what `etcdctl snapshot save` writes) is etcd's backend: a bbolt database
//! with etcd's buckets (`key` by revision, `meta` with the consistent index and compaction marks,
//! `lease`, `auth*`, `members*`, `cluster`, `alarm`), followed by the SHA-256 of the database,
//! which the client appends from the last message of the Snapshot stream. This crate maps that
//! file onto Hearth's backend, which keeps the same buckets with the same bytes where it matters
//! (see `schema` for the two records that are translated):
//!
//! * [`EtcdSnapshot`]: a consistent snapshot of a Hearth backend as etcd's file, streamed with
//!   bounded memory while writes go on (the Snapshot RPC sends it);
//! * [`import()`]: an etcd file into an empty Hearth backend (`hearthutl snapshot restore`);
//! * [`status()`]: what `etcdctl snapshot status` prints about a file.
//!
//! **Invariants:** knows etcd's bucket names and which records it must translate, nothing of
//! Raft, the network or the server; reads the backend only through one read snapshot; never
//! panics on a damaged file (errors name the bucket or page at fault).

#![forbid(unsafe_code)]

mod export;
mod import;
mod json;
mod schema;

#[cfg(test)]
mod tests;

pub use export::{EtcdSnapshot, BATCH_BYTES, BATCH_PAIRS};
pub use import::{check_integrity, import, status, Imported, Status, IMPORT_BATCH};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file's bbolt structure (or writing one) failed.
    #[error(transparent)]
    Bbolt(#[from] bbolt::Error),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    /// A bbolt file, but not one etcd wrote.
    #[error("not an etcd snapshot: {0}")]
    NotEtcd(String),
    /// bbolt's integrity check found problems (etcd's `snapshot status` wording).
    #[error("snapshot file integrity check failed. {} errors found.\n{}", .0.len(), .0.join("\n"))]
    Integrity(Vec<String>),
    /// A record that cannot be what it claims to be.
    #[error("corrupt snapshot record: {0}")]
    Corrupt(String),
}

/// Whether a file starting with `prefix` is a bbolt (etcd) database rather than a redb (Hearth)
/// one: by content, never by name.
pub fn is_etcd_file(prefix: &[u8]) -> bool {
    bbolt::looks_like_bbolt(prefix)
}
