//! redb's file backend with a switch for its fsyncs. Everything else (reads, writes, length, the
//! file locks) is redb's own `FileBackend`.
//!
//! * `--unsafe-no-fsync`, as bbolt's `NoSync` is for etcd's: the switch is off from the start, so
//!   commits are written but never fsynced. A crash of the process loses nothing (the kernel has
//!   the pages); a power failure can lose recent commits or leave a file redb must repair or
//!   refuses.
//! * A file replaced by a defragmentation or an install is unlinked before its handle closes;
//!   closing commits redb's allocator state and fsyncs it, work nobody will ever read that would
//!   compete with the served file's and the WAL's fsyncs. [`SyncSwitch::off`] skips those fsyncs
//!   (the dirty pages of an unlinked file are dropped, never written back).

use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{BackendError, Builder, Database, DatabaseError, StorageBackend};

/// The error of redb's I/O methods without its `experimental-api-5` feature.
type BackendIoError = std::io::Error;

/// Turns off the fsyncs of one database's file; clones share the switch.
#[derive(Clone, Debug, Default)]
pub(crate) struct SyncSwitch(Arc<AtomicBool>);

impl SyncSwitch {
    /// From now on the file's `sync_data` does nothing.
    pub(crate) fn off(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_off(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Opens (or creates) the database at `path` as `builder` would, without fsyncs if `no_sync`.
/// The switch turns them off later.
pub(crate) fn create(
    builder: &Builder,
    path: &Path,
    no_sync: bool,
) -> Result<(Database, SyncSwitch), DatabaseError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let switch = SyncSwitch::default();
    if no_sync {
        switch.off();
    }
    let db = builder.create_with_backend(Switchable(FileBackend::new(file)?, switch.clone()))?;
    Ok((db, switch))
}

#[derive(Debug)]
struct Switchable(FileBackend, SyncSwitch);

impl StorageBackend for Switchable {
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
        if self.1.is_off() {
            return Ok(());
        }
        self.0.sync_data()
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
