//! Consistent copies of the whole backend: into a new redb file, or as a byte stream.
//!
//! A copy reads one read snapshot (a redb read transaction, after committing published changes:
//! `Backend::read`), so it sees exactly one commit and never blocks writers; they go on committing to the live file while it runs. The cost is that
//! redb cannot reuse the pages the snapshot pins until the copy ends, so the live file may grow
//! by what is overwritten meanwhile.
//!
//! The destination is written in batches of at most [`COPY_BATCH`] pairs and about 1 MiB per
//! transaction (less when paced, below), non-durably, and made durable at the end, so memory
//! stays bounded whatever the database size.
//!
//! A copy that becomes a served file (a defragmentation, [`Backend::copy_to_file`]) also makes
//! its writes durable every [`SYNC_EVERY`] bytes. Left to the end, one fsync would flush the
//! whole copy (hundreds of MiB) at once, and while the disk does that, every other fsync on it
//! (the WAL's, the live file's commits) waits behind it: the device's cache flush waits for the
//! writes in flight, and on ext4 a journal commit must first write the data blocks newly
//! allocated to any file. Small regular fsyncs bound that wait to the time to write one step.
//! The anonymous file of a snapshot stream is not paced (nothing needs it durable before its
//! last commit).
//!
//! **Tradeoff.** Smaller steps mean shorter waits for the other fsyncs and more fsyncs of the
//! copy. 256 KiB steps rather than 1 MiB took the longest WAL fsync during a defragmentation of
//! 300k keys under load from 11-12 ms to 8-9 ms (that defragmentation took 2.5-2.8 s instead of
//! 2.1-2.2 s). 64 KiB rather than 256 KiB, defragmenting 1M keys (half overwritten, then
//! compacted) under 500 puts/s from 10 clients, took the slowest put from 15.6-15.9 ms to
//! 13.5-13.8 ms (two runs each) and the defragmentation from 5.0-5.8 s to 7.5-8.0 s.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use redb::{Durability, WriteTransaction};

use crate::{create_buckets, Backend, BackendError, Bucket, ReadTxn, Reader, Result};

/// Pairs inserted per destination transaction, at most.
pub(crate) const COPY_BATCH: usize = 8192;

/// Bytes of keys and values per destination transaction: a batch ends at the pair that
/// reaches it (so a batch holds at most this plus one pair, whatever the value sizes).
const COPY_BATCH_BYTES: usize = 1 << 20;

/// Bytes of keys and values a copy writes between two durable commits, when it paces them.
pub(crate) const SYNC_EVERY: usize = 64 << 10;

/// Copies every bucket of `src` into `dst` (whose buckets must be empty) and makes `dst`
/// durable. Returns the number of pairs copied. With `sync_every`, a destination transaction
/// commits durably once that many bytes were copied since the last durable one (see the
/// module doc).
pub(crate) fn copy_into(
    src: &ReadTxn,
    dst: &redb::Database,
    sync_every: Option<usize>,
) -> Result<u64> {
    create_buckets(dst)?;
    let mut total = 0u64;
    let mut unsynced = 0usize;
    let batch_bytes = sync_every.map_or(COPY_BATCH_BYTES, |s| s.min(COPY_BATCH_BYTES));
    for b in Bucket::ALL {
        let mut start: Vec<u8> = Vec::new();
        let mut first = true;
        loop {
            // Resume after the last key copied: [start, ..) minus `start` itself once copied.
            let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            let mut bytes = 0usize;
            src.for_each(b, &start, None, &mut |k, v| {
                if !first && k == start.as_slice() {
                    return true;
                }
                batch.push((k.to_vec(), v.to_vec()));
                bytes += k.len() + v.len();
                batch.len() < COPY_BATCH && bytes < batch_bytes
            })?;
            first = false;
            if batch.is_empty() {
                break;
            }
            let full = batch.len() == COPY_BATCH || bytes >= batch_bytes;
            unsynced += bytes;
            let durable = sync_every.is_some_and(|limit| unsynced >= limit);
            if durable {
                unsynced = 0;
            }
            let txn = begin(
                dst,
                if durable {
                    Durability::Immediate
                } else {
                    Durability::None
                },
            )?;
            {
                let mut t = txn.open_table(b.def())?;
                for (k, v) in &batch {
                    t.insert(k.as_slice(), v.as_slice())?;
                }
            }
            txn.commit()?;
            total += batch.len() as u64;
            if !full {
                break;
            }
            if let Some((k, _)) = batch.pop() {
                start = k;
            }
        }
    }
    let txn = begin(dst, Durability::Immediate)?;
    txn.commit()?;
    Ok(total)
}

fn begin(db: &redb::Database, d: Durability) -> Result<WriteTransaction> {
    let mut txn = db.begin_write()?;
    txn.set_durability(d)?;
    Ok(txn)
}

/// A consistent copy of the backend in an anonymous temporary file (it has no name, so nothing
/// is left behind if the process dies). Read it from the start with [`Read`]; it is a complete
/// redb database of [`size`](Self::size) bytes.
#[derive(Debug)]
pub struct SnapshotFile {
    file: File,
    size: u64,
    pairs: u64,
}

impl SnapshotFile {
    /// Length of the database file in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Pairs (over every bucket) in the copy.
    pub fn pairs(&self) -> u64 {
        self.pairs
    }

    /// The underlying file, positioned at the start.
    pub fn into_file(self) -> File {
        self.file
    }
}

impl Read for SnapshotFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

impl Backend {
    /// Writes a consistent copy of the latest commit into a new redb file at `dst` (which must
    /// not exist yet) and makes it durable. Writers keep running meanwhile. Returns the number
    /// of pairs copied. The copy holds only live data, so it is also the compact form of the
    /// database.
    pub fn copy_to_file(&self, dst: &Path) -> Result<u64> {
        let snap = self.read()?;
        copy_snapshot_to_file(&snap, dst)
    }

    /// A consistent copy of the latest commit as a byte stream (a redb file in a temporary file
    /// next to the database). Writers keep running while it is made and read.
    pub fn snapshot(&self) -> Result<SnapshotFile> {
        self.snapshot_with(|_| Ok(())).map(|(f, ())| f)
    }

    /// Like [`snapshot`](Self::snapshot), and `describe` reads from the very read snapshot the
    /// copy is made of, so what it returns (for example the Raft index the data stands for) is
    /// exactly what the copy holds.
    pub fn snapshot_with<T>(
        &self,
        describe: impl FnOnce(&ReadTxn) -> Result<T>,
    ) -> Result<(SnapshotFile, T)> {
        let snap = self.read()?;
        let described = describe(&snap)?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let file = tempfile::tempfile_in(&dir)?;
        let mut reader = file.try_clone()?;
        let backend = redb::backends::FileBackend::new(file)?;
        let db = redb::Database::builder()
            .set_cache_size(self.config.cache_bytes)
            .create_with_backend(backend)?;
        let pairs = copy_into(&snap, &db, None)?;
        drop(snap);
        db.close()?;
        let size = reader.seek(SeekFrom::End(0))?;
        reader.seek(SeekFrom::Start(0))?;
        Ok((
            SnapshotFile {
                file: reader,
                size,
                pairs,
            },
            described,
        ))
    }
}

pub(crate) fn copy_snapshot_to_file(snap: &ReadTxn, dst: &Path) -> Result<u64> {
    // Refuse to overwrite anything: create_new fails if `dst` exists.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dst)?;
    drop(file);
    let db = redb::Database::builder()
        .set_cache_size(crate::DEFAULT_CACHE_BYTES)
        .create(dst)
        .map_err(BackendError::from)?;
    let n = copy_into(snap, &db, Some(SYNC_EVERY))?;
    db.close()?;
    Ok(n)
}
