//! bbolt's file format, read and written without bbolt: what etcd keeps its backend in and
//! what `etcdctl snapshot save` writes. Hearth's own backend is redb; this crate exists so
//! Hearth can hand etcd's tools a file they accept (the Snapshot RPC) and take in a file etcd
//! wrote (`hearthutl snapshot restore`).
//!
//! It knows pages, buckets and bytes, nothing of etcd's buckets or encodings (the `snapshot`
//! crate maps those). The format, as read from bbolt's source (`page.go`, `db.go`,
//! `bucket.go`, `node.go`, `freelist.go`, `tx.go`), is described in `docs/bbolt.md`.
//!
//! * [`Db`] reads a file: picks the meta page as bbolt does, walks a bucket's tree in key
//!   order ([`Db::for_each`]), and checks the whole file as `bbolt check` / etcd's
//!   `snapshot status` do ([`Db::check`]). It never panics and never trusts an offset: a
//!   truncated, bit-flipped or foreign file is an [`Error`] naming the page and what is wrong.
//! * [`Planner`] and [`Plan`] write a file of top-level buckets from sorted entries in two
//!   passes (see `write`), so a file of any size can be streamed with bounded memory.
//!
//! Not supported, because etcd does not use them: nested buckets when writing (reading reports
//! them as entries), bucket sequences, and big-endian files.

#![forbid(unsafe_code)]

#[doc(hidden)]
pub mod fuzzing;
mod page;
mod read;
mod write;

#[cfg(test)]
mod tests;

pub use page::{
    Meta, DEFAULT_PAGE_SIZE, MAGIC, MAX_KEY_SIZE, MAX_VALUE_SIZE, NO_FREELIST, VERSION,
};
pub use read::{bucket_ref, looks_like_bbolt, BucketRef, Db, Entry};
pub use write::{build, BucketPlanner, Entries, Plan, Planner, TreeWriter};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the file failed (a file shorter than a page it must hold is reported as
    /// [`Error::Truncated`] or [`Error::Corrupt`] where it is known).
    #[error("bbolt: I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a bbolt file at all.
    #[error("not a bbolt database: {0}")]
    NotBbolt(String),
    /// The file ends before the pages its meta page says are in use.
    #[error("bbolt database is truncated: {0}")]
    Truncated(String),
    /// The file is a bbolt file, damaged.
    #[error("bbolt database is corrupt: {0}")]
    Corrupt(String),
    /// Writing: a key, value or page beyond bbolt's limits.
    #[error("bbolt: cannot write {0}")]
    TooLarge(String),
    /// Writing: keys or bucket names not in strictly increasing order.
    #[error("bbolt: entries out of order: {0}")]
    Unsorted(String),
    /// Writing: the second pass did not produce what the first planned.
    #[error("bbolt: the data changed between the two passes: {0}")]
    PlanMismatch(String),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
