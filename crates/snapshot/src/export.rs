//! Hearth's backend as etcd's snapshot file, streamed.
//!
//! [`EtcdSnapshot::new`] opens one backend read snapshot and keeps it for the whole stream, so
//! the file is one consistent state; writers are never blocked by it (a redb read transaction
//! pins the pages it sees; the live file may grow by what is overwritten meanwhile, as etcd's
//! file does while a bolt read transaction streams). It then walks every bucket once to plan the
//! file's layout (`bbolt::Planner`: the meta pages, which come first, name the root page and the
//! page count), and [`Read`] produces the file page by page in a second walk, pulling pairs
//! from the read snapshot in batches of at most [`BATCH_PAIRS`] pairs or [`BATCH_BYTES`] bytes.
//!
//! **Tradeoff.** Two walks over the data instead of one plus a temporary copy: no disk space
//! and no write of the whole database before the first byte leaves, at the price of reading
//! the data twice (the first walk only counts pages). Memory is one batch plus one page per
//! tree level, whatever the database size.

use std::io::Read;

use backend::{Backend, Bucket, ReadTxn, Reader as _};

use crate::schema::{self, BUCKETS};
use crate::SnapshotError;

/// Pairs pulled from the read snapshot at a time in the second walk.
pub const BATCH_PAIRS: usize = 1024;
/// Bytes (keys and values) pulled at a time in the second walk, at most (one pair more if a
/// single pair is larger).
pub const BATCH_BYTES: usize = 1 << 20;

/// Where the second walk is.
enum Stage {
    /// Next: the metas and the freelist.
    Header,
    /// Writing bucket `BUCKETS[i]` (`None` while it has not started or is inline).
    Bucket(usize, Option<Cursor>),
    /// Next: the root bucket's pages.
    Root,
    Done,
}

/// The second walk through one bucket.
struct Cursor {
    writer: bbolt::TreeWriter,
    /// The last key written; the next batch starts after it.
    last: Option<Vec<u8>>,
}

/// A consistent snapshot of a backend as etcd's snapshot file (without the SHA-256 trailer,
/// which the Snapshot RPC appends), readable as a byte stream of [`size`](Self::size) bytes.
pub struct EtcdSnapshot {
    txn: ReadTxn,
    plan: bbolt::Plan,
    stage: Stage,
    buf: Vec<u8>,
    pos: usize,
    produced: u64,
}

impl std::fmt::Debug for EtcdSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSnapshot")
            .field("size", &self.size())
            .field("produced", &self.produced)
            .finish_non_exhaustive()
    }
}

impl EtcdSnapshot {
    /// Opens a read snapshot of `backend` and plans the file (one walk over every bucket).
    pub fn new(backend: &Backend) -> Result<EtcdSnapshot, SnapshotError> {
        EtcdSnapshot::of(backend.read()?)
    }

    /// The file for the read snapshot `txn`.
    pub fn of(txn: ReadTxn) -> Result<EtcdSnapshot, SnapshotError> {
        let mut planner = bbolt::Planner::with_default_page_size();
        for bucket in BUCKETS {
            let mut b = planner.bucket(bucket.name().as_bytes())?;
            let mut failure = None;
            txn.for_each(bucket, &[], None, &mut |k, v| {
                let r = schema::to_etcd(bucket, k, v)
                    .and_then(|v| b.push(k, &v).map_err(SnapshotError::from));
                match r {
                    Ok(()) => true,
                    Err(e) => {
                        failure = Some(e);
                        false
                    }
                }
            })?;
            if let Some(e) = failure {
                return Err(e);
            }
            b.finish()?;
        }
        let plan = planner.finish()?;
        Ok(EtcdSnapshot {
            txn,
            plan,
            stage: Stage::Header,
            buf: Vec::new(),
            pos: 0,
            produced: 0,
        })
    }

    /// Bytes of the whole file.
    pub fn size(&self) -> u64 {
        self.plan.size()
    }

    /// Bytes produced but not yet read.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Produces the next pages into `buf` (or moves to the next stage).
    fn advance(&mut self) -> Result<(), SnapshotError> {
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Header => {
                self.buf.extend_from_slice(&self.plan.header());
                self.stage = Stage::Bucket(0, None);
            }
            Stage::Bucket(i, None) => {
                let Some(&bucket) = BUCKETS.get(i) else {
                    self.stage = Stage::Root;
                    return Ok(());
                };
                self.stage = match self.plan.writer(bucket.name().as_bytes()) {
                    Some(writer) => Stage::Bucket(i, Some(Cursor { writer, last: None })),
                    None => Stage::Bucket(i + 1, None),
                };
            }
            Stage::Bucket(i, Some(mut cur)) => {
                let bucket = BUCKETS[i];
                let batch = self.batch(bucket, cur.last.as_deref())?;
                match batch.last() {
                    None => {
                        cur.writer.finish(&mut self.buf)?;
                        self.stage = Stage::Bucket(i + 1, None);
                    }
                    Some((k, _)) => {
                        cur.last = Some(k.clone());
                        for (k, v) in &batch {
                            let v = schema::to_etcd(bucket, k, v)?;
                            cur.writer.push(k, &v, &mut self.buf)?;
                        }
                        self.stage = Stage::Bucket(i, Some(cur));
                    }
                }
            }
            Stage::Root => {
                self.buf.extend_from_slice(self.plan.root_pages());
                self.stage = Stage::Done;
            }
            Stage::Done => {}
        }
        Ok(())
    }

    /// The next pairs of `bucket` after `after` (from the start if `None`).
    fn batch(&self, bucket: Bucket, after: Option<&[u8]>) -> Result<bbolt::Entries, SnapshotError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        self.txn
            .for_each(bucket, after.unwrap_or_default(), None, &mut |k, v| {
                if after == Some(k) {
                    return true;
                }
                bytes += k.len() + v.len();
                out.push((k.to_vec(), v.to_vec()));
                out.len() < BATCH_PAIRS && bytes < BATCH_BYTES
            })?;
        Ok(out)
    }
}

impl Read for EtcdSnapshot {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if matches!(self.stage, Stage::Done) {
                if self.produced != self.size() {
                    return Err(std::io::Error::other(format!(
                        "snapshot produced {} bytes, planned {}",
                        self.produced,
                        self.size()
                    )));
                }
                return Ok(0);
            }
            self.buf.clear();
            self.pos = 0;
            self.advance().map_err(std::io::Error::other)?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.produced += n as u64;
        Ok(n)
    }
}
