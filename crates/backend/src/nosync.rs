//! `--unsafe-no-fsync` for the backend, as bbolt's `NoSync` is for etcd's: redb's file backend with
//! `sync_data` doing nothing, so commits are written but never fsynced. Everything else (reads,
//! writes, length, the file locks) is redb's own `FileBackend`. A crash of the process loses nothing
//! (the kernel has the pages); a power failure can lose recent commits or leave a file redb must
//! repair or refuses.

use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::Path;

use redb::backends::FileBackend;
use redb::{BackendError, Builder, Database, DatabaseError, StorageBackend};

/// The error of redb's I/O methods without its `experimental-api-5` feature.
type BackendIoError = std::io::Error;

/// Opens (or creates) the database at `path` as `builder` would, without fsyncs if `no_sync`.
pub(crate) fn create(
    builder: &Builder,
    path: &Path,
    no_sync: bool,
) -> Result<Database, DatabaseError> {
    if !no_sync {
        return builder.create(path);
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    builder.create_with_backend(NoSync(FileBackend::new(file)?))
}

#[derive(Debug)]
struct NoSync(FileBackend);

impl StorageBackend for NoSync {
    fn len(&self) -> Result<u64, BackendIoError> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        self.0.write(offset, data)
    }

    fn close(&self) -> Result<(), BackendIoError> {
        self.0.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.0.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.query_lock_range(start, end)
    }
}
