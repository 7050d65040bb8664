//! Hearth's storage backend: a thin layer over [redb] with named buckets, batched durable
//! commits and read snapshots.
//!
//! # Buckets
//!
//! A [`Bucket`] is a redb table with byte keys and byte values. `key` holds the MVCC data
//! (written by the `mvcc` crate), `meta` holds the Raft consistent index, the term and the
//! compaction marks; `members` and `members_removed` hold the cluster membership; `lease`, `auth`,
//! `authUsers`, `authRoles`, `alarm` and `cluster` belong to the layers that use them (the same
//! buckets as etcd's, so a snapshot maps bucket for bucket onto etcd's file). Every
//! bucket is created when the backend is opened, so read snapshots can always open every bucket.
//!
//! # Batched commits and where durability comes from
//!
//! Every write transaction ([`WriteTxn`]) commits with [`redb::Durability::None`]: the commit is
//! visible to readers as soon as [`WriteTxn::commit`] returns, but nothing is fsynced. A commit is
//! made durable ([`redb::Durability::Immediate`], an fsync) when, at commit time:
//!
//! * `batch_interval` has passed since the last durable commit, or
//! * `batch_limit` operations (puts and deletes) have accumulated since the last durable commit,
//! * or when the caller asks for it with [`Backend::force_commit`], [`WriteTxn::commit_durable`]
//!   or [`Backend::close`] (dropping the backend also makes pending commits durable).
//!
//! There is no background thread and no timer here: the time rule is checked only when some
//! write commits. A server that wants an upper bound on how long a commit may stay volatile
//! while no writes arrive calls [`Backend::commit_if_due`] (or `force_commit`) from its own timer.
//!
//! # Published but uncommitted changes
//!
//! A transaction set aside with [`WriteTxn::defer`] can be published ([`Backend::publish_deferred`]):
//! its changes are then part of what readers must see, though no commit holds them yet. [`Backend::read`]
//! commits them first (non-durably, under the write gate) and then opens its snapshot, so the cost of a
//! commit is paid once per batch of published changes that somebody reads, not once per batch. A
//! caller of `read` must therefore not hold the write gate, nor a lock that a writer waits for while it
//! holds the gate; [`Backend::read_raw`] never commits, for a caller that checked
//! [`Backend::is_visible`] under its own lock.
//!
//! **Tradeoff.** A reader of freshly published changes pays for their commit (tens of microseconds) and
//! waits for the writer's current transaction; a writer applying one change at a time no longer pays a
//! commit per change when nobody reads (a third of the apply thread's time for a put from one client).
//!
//! **Tradeoff.** redb never fsyncs on the request path (except for the one commit per
//! `batch_interval` / `batch_limit` that happens to cross the threshold). After a crash the file
//! is at its last durable commit, which may be up to `batch_interval` (or `batch_limit` ops)
//! behind what readers saw. This is safe only because the server writes the Raft consistent
//! index into the `meta` bucket *in the same transaction* as the data it applied: the file is
//! always at some consistent index, and the server replays its write-ahead log from there. The
//! WAL, not this file, is the durability point; nothing here may be acknowledged to a client on
//! the strength of a [`Durability::None`](redb::Durability::None) commit alone.
//!
//! # Snapshots
//!
//! [`Backend::read`] opens a redb read transaction: a consistent, immutable snapshot of the last
//! commit (durable or not) that never blocks writers; it waits for the write gate only to commit
//! published changes first (see above).
//! [`Backend::write`] opens the single redb write transaction; a second writer waits until the
//! first one commits or is dropped (aborted).
//!
//! # Copies, replacement and defragmentation
//!
//! Three general operations move whole databases; the server uses them for the Snapshot and
//! Defragment RPCs, and they are what a Raft snapshot transfer needs (send a copy, install it):
//!
//! * **Copy** ([`Backend::copy_to_file`], [`Backend::snapshot`]): a consistent copy of the
//!   latest commit, read from one read snapshot without blocking writers, into a new redb file
//!   or an anonymous temporary file read as a byte stream ([`SnapshotFile`]). See `copy`.
//! * **Replace** ([`Backend::install`]): swap the database this backend serves for another redb
//!   file at run time: the file is verified, renamed over the live path and the directory
//!   fsynced, so a crash at any point leaves a complete database at the path; the handle inside
//!   the backend is switched under the write gate, so every `Arc<Backend>` stays valid. Write a
//!   received file to [`Backend::install_staging_path`] to avoid a copy. See [`swap`].
//! * **Defragment** ([`Backend::defrag`]): copy in the background, catch up the writes made
//!   meanwhile from a journal, and swap in a critical section that replays only the last few
//!   writes. See [`defrag`].
//!
//! [`Backend::set_hook`] runs a callback at each named [`Point`] of these operations, so this
//! crate's tests can act there (run writers mid-copy, exit a child process). Everything else injects
//! faults through failpoints (`defragBeforeCopy`, `installAfterRename`, ..., `docs/failpoints.md`).
//!
//! # Corruption
//!
//! The file is opened with redb's integrity check (`set_check_integrity_on_open`), which
//! verifies every page checksum, so a damaged or foreign file is reported as
//! [`BackendError::Corrupt`] (or another error) instead of a panic; as a last line of defence a
//! panic inside redb while opening is caught and reported as `Corrupt` too. The check reads the
//! whole file, so opening costs O(file size).

#![forbid(unsafe_code)]

use std::fmt;
use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use staged::Staged;

use redb::{
    Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, WriteTransaction,
};

/// Errors of the backend. Nothing in this crate panics on bad input or a bad file.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// An I/O error from the file system.
    #[error("backend I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a valid database, or its contents failed a checksum.
    #[error("backend database is corrupt: {0}")]
    Corrupt(String),
    /// Another handle (in this or another process) has the file open.
    #[error("backend database is already open by another handle")]
    AlreadyOpen,
    /// Any other error reported by redb.
    #[error("backend storage error: {0}")]
    Storage(String),
    /// An earlier write failed (a full disk, an I/O error); see [`Backend::failure`].
    #[error("backend is unusable after an earlier write failed: {0}")]
    Poisoned(String),
}

impl From<redb::Error> for BackendError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Corrupted(msg) => BackendError::Corrupt(msg),
            redb::Error::DatabaseAlreadyOpen => BackendError::AlreadyOpen,
            // redb reports a file that is not a database at all as invalid data.
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                BackendError::Corrupt(io.to_string())
            }
            redb::Error::Io(io) => BackendError::Io(io),
            other => BackendError::Storage(other.to_string()),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for BackendError {
            fn from(e: $t) -> Self {
                BackendError::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Result type of this crate.
pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// A named bucket (a redb table of byte keys and byte values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    /// MVCC data: revision bytes -> `mvccpb.KeyValue`.
    Key,
    /// Consistent index, term, compaction marks.
    Meta,
    /// Reserved for leases.
    Lease,
    /// Reserved for the auth store.
    Auth,
    /// Reserved for auth users.
    AuthUsers,
    /// Reserved for auth roles.
    AuthRoles,
    /// Cluster membership: one record per member.
    Members,
    /// Ids of members removed from the cluster (they may never rejoin).
    MembersRemoved,
    /// Alarms: one key (an encoded `AlarmMember`) per active alarm.
    Alarm,
    /// The cluster version (`clusterVersion`), as etcd keeps it; carried across snapshots.
    Cluster,
}

impl Bucket {
    /// Every bucket, in a fixed order.
    pub const ALL: [Bucket; 10] = [
        Bucket::Key,
        Bucket::Meta,
        Bucket::Lease,
        Bucket::Auth,
        Bucket::AuthUsers,
        Bucket::AuthRoles,
        Bucket::Members,
        Bucket::MembersRemoved,
        Bucket::Alarm,
        Bucket::Cluster,
    ];

    /// The bucket's name, as etcd names it (and as the redb table is named).
    pub const fn name(self) -> &'static str {
        match self {
            Bucket::Key => "key",
            Bucket::Meta => "meta",
            Bucket::Lease => "lease",
            Bucket::Auth => "auth",
            Bucket::AuthUsers => "authUsers",
            Bucket::AuthRoles => "authRoles",
            Bucket::Members => "members",
            Bucket::MembersRemoved => "members_removed",
            Bucket::Alarm => "alarm",
            Bucket::Cluster => "cluster",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn def(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(self.name())
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Tuning of the batched durable commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// A commit is made durable once this long has passed since the last durable commit.
    pub batch_interval: Duration,
    /// A commit is made durable once this many puts/deletes accumulated since the last one.
    pub batch_limit: usize,
    /// Bytes of pages redb keeps in memory (its read cache plus its write buffer, which is capped
    /// at half of it). Pages not cached are read with `pread` and usually come from the kernel's
    /// page cache, which the kernel can reclaim, unlike this cache; see [`DEFAULT_CACHE_BYTES`].
    pub cache_bytes: usize,
    /// etcd's `--unsafe-no-fsync` (bbolt's `NoSync`): redb's syncs of the served file do nothing,
    /// so a "durable" commit is only written, not fsynced (see `nosync`).
    pub unsafe_no_fsync: bool,
}

/// The default of [`BackendConfig::cache_bytes`]: 16 MiB.
///
/// redb's own default (1 GiB) makes the process keep a second copy of up to a gigabyte of the file
/// that the kernel already caches, so resident memory grows with the database. A cache of some
/// MiB holds the branch pages of a database of millions of keys (the hot part of every lookup);
/// leaves come from the kernel's page cache at the price of a copy, and a batch that dirties more
/// pages than the write buffer holds (half the cache) writes some of them to the file before its
/// commit (not synced, so no extra fsync). Measured with 1M keys of 256 B: a 32 MiB cap instead
/// of redb's default took resident memory down by several hundred MiB with no measurable change
/// in put/range throughput; 16 MiB instead of 32 took the RSS after filling 1M keys from 193 to
/// 176-177 MiB, with the fill rate (1000 clients, keys in order) unchanged within run-to-run
/// noise.
pub const DEFAULT_CACHE_BYTES: usize = 16 << 20;

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            batch_interval: Duration::from_millis(100),
            batch_limit: 10_000,
            cache_bytes: DEFAULT_CACHE_BYTES,
            unsafe_no_fsync: false,
        }
    }
}

#[derive(Debug)]
struct BatchState {
    /// When the last durable commit finished (or the backend was opened).
    last_durable: Instant,
    /// Puts and deletes committed non-durably since the last durable commit.
    pending_ops: usize,
    /// Non-durable commits since the last durable commit.
    pending_commits: usize,
}

/// The storage backend. `Send + Sync`; share it as `Arc<Backend>`.
///
/// The redb database inside is swappable (see [`Backend::install`] and [`Backend::defrag`]):
/// readers clone the current handle under a lock held for a pointer copy, and every write
/// transaction holds `write_gate`, which a swap takes to exclude writers while it renames the new
/// file into place and switches handles.
pub struct Backend {
    db: RwLock<Arc<redb::Database>>,
    /// The fsync switch of the file `db` serves; turned off once a replacement unlinked it.
    sync: Mutex<nosync::SyncSwitch>,
    write_gate: Mutex<()>,
    path: PathBuf,
    config: BackendConfig,
    batch: Mutex<BatchState>,
    /// Writes committed while an online defragmentation copies the file (see `defrag`).
    journal: Mutex<Option<defrag::Journal>>,
    /// Whether `journal` is on; read without the lock on every write.
    journaling: std::sync::atomic::AtomicBool,
    /// Serializes the operations that replace the database (defrag, install).
    replacing: Mutex<()>,
    hook: RwLock<Option<Hook>>,
    /// The first write that failed; from then on every write transaction is refused.
    failure: OnceLock<String>,
    /// [`Backend::size`] as of the last commit or replacement of the file. The quota check
    /// reads it before every write request; asking the filesystem each time cost one `statx` a
    /// request, where the file changes only when a transaction commits (as etcd's figure is
    /// bbolt's, kept at each commit).
    size: AtomicU64,
    /// A write transaction set aside uncommitted by [`WriteTxn::defer`]; the next
    /// [`Backend::write`] continues it.
    deferred: Mutex<Option<Deferred>>,
    /// Bumped by [`Backend::publish_deferred`]: changes in the deferred transaction that readers
    /// must see.
    published: AtomicU64,
    /// The value of `published` as of the last commit that covered every change written before
    /// it (see [`Backend::make_visible`]).
    visible: AtomicU64,
}

/// What [`WriteTxn::defer`] keeps of a transaction (everything but the gate).
struct Deferred {
    txn: WriteTransaction,
    ops: usize,
    record: Option<Vec<defrag::JournalOp>>,
    staged: Staged,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("path", &self.path)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

impl Backend {
    /// Opens (or creates) the database file at `path` and makes sure every bucket exists.
    ///
    /// An empty or missing file becomes a new database. Anything that is not a valid redb file,
    /// or whose pages fail their checksums, is an error.
    pub fn open(path: impl AsRef<Path>, config: BackendConfig) -> Result<Backend> {
        let path = path.as_ref().to_path_buf();
        // A replacement that was interrupted before its rename leaves its staging file behind.
        swap::remove_stale_staging(&path)?;
        let created = !path.exists();
        let (db, sync) = open_db(&path, &config)?;
        if created && !config.unsafe_no_fsync {
            // The buckets are durable in the file; the file must be in its directory too, or a
            // power loss could leave a log whose entries were applied to a database that is gone.
            swap::sync_dir(swap::parent_dir(&path))?;
        }
        tracing::debug!(path = %path.display(), "backend opened");
        Ok(Backend::on(db, sync, path, config))
    }

    /// A backend serving `db`, which is open on `path`.
    fn on(
        db: redb::Database,
        sync: nosync::SyncSwitch,
        path: PathBuf,
        config: BackendConfig,
    ) -> Backend {
        let b = Backend {
            db: RwLock::new(Arc::new(db)),
            sync: Mutex::new(sync),
            write_gate: Mutex::new(()),
            path,
            config,
            batch: Mutex::new(BatchState {
                last_durable: Instant::now(),
                pending_ops: 0,
                pending_commits: 0,
            }),
            journal: Mutex::new(None),
            journaling: std::sync::atomic::AtomicBool::new(false),
            replacing: Mutex::new(()),
            hook: RwLock::new(None),
            deferred: Mutex::new(None),
            published: AtomicU64::new(0),
            visible: AtomicU64::new(0),
            failure: OnceLock::new(),
            size: AtomicU64::new(0),
        };
        b.note_size();
        b
    }

    /// Reads the file's size from the filesystem into [`Backend::size`]'s copy; an error keeps
    /// the previous figure (the next commit tries again).
    fn note_size(&self) {
        if let Ok(m) = std::fs::metadata(&self.path) {
            self.size.store(disk_size(&m), Ordering::Relaxed);
        }
    }

    /// Why the backend refuses writes, if a write failed. A commit that failed part way (a full
    /// disk, an I/O error) may have left redb's view of the file uncertain, and a caller that went on
    /// would apply later entries on top of an earlier one that is missing: the server stops instead
    /// and replays its log after a restart.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Refuses further writes, as after a failed commit, for a caller that lost changes it had
    /// already accepted (see [`failure`](Self::failure)).
    pub fn fail(&self, reason: &str) {
        if self.failure.set(reason.to_string()).is_ok() {
            tracing::error!("refusing further writes: {reason}");
        }
    }

    fn poison<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if self.failure.set(e.to_string()).is_ok() {
                tracing::error!("backend write failed, refusing further writes: {e}");
            }
        }
        r
    }

    /// The current database handle.
    fn db(&self) -> Arc<redb::Database> {
        self.db.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets (or clears) the hook called at each named point of a defragmentation or an install.
    /// Tests use it to hold an operation at a point or to kill the process there.
    pub fn set_hook(&self, hook: Option<Hook>) {
        *self.hook.write().unwrap_or_else(|p| p.into_inner()) = hook;
    }

    fn at(&self, point: Point) {
        let hook = self.hook.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(h) = hook {
            h(point);
        }
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The batching configuration.
    pub fn config(&self) -> &BackendConfig {
        &self.config
    }

    fn batch(&self) -> MutexGuard<'_, BatchState> {
        // The state is a few counters that are always consistent; a poisoned lock is harmless.
        self.batch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a read snapshot that holds every published change ([`Backend::publish_deferred`]):
    /// if the deferred transaction holds some, it is committed first (taking the write gate, so
    /// the caller must not hold it, nor a lock a writer waits for).
    pub fn read(&self) -> Result<ReadTxn> {
        self.make_visible()?;
        self.read_raw()
    }

    /// Opens a read snapshot of the latest commit (durable or not). Never blocks on writers; it
    /// may miss published changes unless [`Backend::is_visible`] said so after they were published.
    pub fn read_raw(&self) -> Result<ReadTxn> {
        let db = self.db();
        Ok(ReadTxn {
            tables: Default::default(),
            txn: db.begin_read()?,
            _db: db,
        })
    }

    /// Opens the write transaction. Waits while another write transaction is open.
    /// Dropping the returned [`WriteTxn`] without committing aborts it.
    /// A transaction set aside with [`WriteTxn::defer`] is committed first (non-durably): its
    /// owner, not this writer, decides what it holds (see [`Backend::resume`]).
    pub fn write(&self) -> Result<WriteTxn<'_>> {
        if let Some(f) = self.failure() {
            return Err(BackendError::Poisoned(f.to_string()));
        }
        let gate = self.write_gate.lock().unwrap_or_else(|p| p.into_inner());
        self.commit_deferred_locked()?;
        self.begin(gate)
    }

    /// Like [`write`](Self::write), but continues the transaction set aside with
    /// [`WriteTxn::defer`], if there is one, instead of committing it.
    pub fn resume(&self) -> Result<WriteTxn<'_>> {
        if let Some(f) = self.failure() {
            return Err(BackendError::Poisoned(f.to_string()));
        }
        let gate = self.write_gate.lock().unwrap_or_else(|p| p.into_inner());
        match self.take_deferred() {
            Some(d) => Ok(WriteTxn {
                txn: d.txn,
                backend: self,
                ops: d.ops,
                record: d.record,
                staged: d.staged,
                _gate: gate,
            }),
            None => self.begin(gate),
        }
    }

    fn begin<'a>(&'a self, gate: MutexGuard<'a, ()>) -> Result<WriteTxn<'a>> {
        let record = self.journal_active().then(Vec::new);
        let txn = self
            .db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .begin_write()?;
        Ok(WriteTxn {
            txn,
            backend: self,
            ops: 0,
            record,
            staged: Staged::default(),
            _gate: gate,
        })
    }

    /// Makes every commit so far durable (fsync). Does nothing if there is nothing pending.
    pub fn force_commit(&self) -> Result<()> {
        if self.batch().pending_commits == 0 && !self.has_deferred() {
            return Ok(());
        }
        self.write()?.commit_durable()
    }

    /// Makes pending commits durable if `batch_interval` has passed since the last durable
    /// commit; for a server timer. Returns whether a durable commit was made.
    pub fn commit_if_due(&self) -> Result<bool> {
        {
            let st = self.batch();
            let pending = st.pending_commits > 0 || self.has_deferred();
            if !pending || st.last_durable.elapsed() < self.config.batch_interval {
                return Ok(false);
            }
        }
        self.write()?.commit_durable()?;
        Ok(true)
    }

    /// Marks the changes in the deferred transaction as published: from now on a reader needs
    /// them, and [`Backend::read`] commits them first.
    pub fn publish_deferred(&self) {
        self.published.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether every change published so far is in a commit.
    pub fn is_visible(&self) -> bool {
        self.visible.load(Ordering::SeqCst) >= self.published.load(Ordering::SeqCst)
    }

    /// Commits the deferred transaction if it holds published changes. Under the write gate no
    /// transaction is open but the deferred one, so once it is committed every change written
    /// before is in a commit.
    pub fn make_visible(&self) -> Result<()> {
        if self.is_visible() {
            return Ok(());
        }
        let _gate = self.write_gate.lock().unwrap_or_else(|p| p.into_inner());
        self.commit_deferred_locked()
    }

    /// Operations in the deferred transaction (0 if there is none).
    pub fn deferred_ops(&self) -> usize {
        self.deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |d| d.ops)
    }

    fn take_deferred(&self) -> Option<Deferred> {
        self.deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn has_deferred(&self) -> bool {
        self.deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Commits a deferred transaction, if there is one. The caller holds the write gate: a
    /// defragmentation or an install must not begin or end with changes pending in a transaction
    /// on the old file (its journal would miss them, or they would land in the replaced file).
    ///
    /// Published changes become visible only through a commit that succeeded: after a failure
    /// (which may have taken published changes with it) this refuses, so no reader gets a snapshot
    /// without revisions the store already published; the member stops and applies them again
    /// from its log.
    pub(crate) fn commit_deferred_locked(&self) -> Result<()> {
        if let Some(f) = self.failure() {
            return Err(BackendError::Poisoned(f.to_string()));
        }
        match self.take_deferred() {
            // The ops rule of `WriteTxn::commit_volatile`, so commits made here (for readers,
            // mostly) count towards a durable one too.
            Some(d) => self
                .poison(self.commit_locked(d, Rule::Volatile))
                .map(|_| ()),
            None => {
                // Under the gate with nothing deferred, every change is in a commit.
                let published = self.published.load(Ordering::SeqCst);
                self.visible.fetch_max(published, Ordering::SeqCst);
                Ok(())
            }
        }
    }

    /// Commits a transaction's changes; the caller holds the write gate, so `d` holds every
    /// change not yet committed and a success makes everything published visible. Durable as
    /// `rule` says; the batch counters, the size and the defragmentation journal follow the
    /// commit. Returns whether it was durable.
    fn commit_locked(&self, mut d: Deferred, rule: Rule) -> Result<bool> {
        let published = self.published.load(Ordering::SeqCst);
        write_staged(&d.txn, &mut d.staged, &mut d.ops, &mut d.record)?;
        let mut st = self.batch();
        let ops = st.pending_ops.saturating_add(d.ops);
        let durable = match rule {
            Rule::Durable => true,
            Rule::Batched => {
                ops >= self.config.batch_limit
                    || st.last_durable.elapsed() >= self.config.batch_interval
            }
            Rule::Volatile => ops >= self.config.batch_limit,
        };
        d.txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        failpoint::hit_io("beforeCommit")?;
        d.txn.commit()?;
        self.visible.fetch_max(published, Ordering::SeqCst);
        self.note_size();
        if let Some(ops) = d.record {
            // Still under the write gate, so the journal gets commits in commit order.
            self.journal_append(ops);
        }
        if durable {
            st.last_durable = Instant::now();
            st.pending_ops = 0;
            st.pending_commits = 0;
        } else {
            st.pending_ops = ops;
            st.pending_commits += 1;
        }
        Ok(durable)
    }

    /// Number of non-durable commits since the last durable one (0 = everything is on disk).
    pub fn pending_commits(&self) -> usize {
        self.batch().pending_commits
    }

    /// Size of the database in bytes: what its file occupies on disk (Status `dbSize`, the
    /// quota's measure).
    ///
    /// Not the file's length: redb extends a file (below 4 GiB) by doubling it and writes only
    /// the pages it allocates, so the tail past its highest page is a hole that takes no disk
    /// space, and the length overstates the data by up to 2x. A freshly defragmented file is
    /// the typical case: its length is the power-of-two step its copy reached, its allocated
    /// blocks are its live data. The allocated size is the counterpart of etcd's figure, bbolt's
    /// high-water mark of pages (the file of a bbolt database is also longer than that). It is
    /// capped at the length (a filesystem may count blocks preallocated past the end) and is the
    /// length where the filesystem reports no blocks.
    ///
    /// The figure is taken after each commit and each replacement of the file, not read from the
    /// filesystem on every call.
    pub fn size(&self) -> Result<u64> {
        Ok(self.size.load(Ordering::Relaxed))
    }

    /// Length of the database file in bytes, holes included (see [`size`](Self::size)).
    pub fn file_len(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// Best estimate of the bytes holding live data: what every bucket's B-tree occupies in the
    /// latest snapshot (stored pairs, tree metadata and the unused parts of its pages, large
    /// values included). Unlike [`size`](Self::size) this shrinks when data is deleted (the file
    /// itself does not shrink; freed pages are reused). Walks the trees' pages (O(pages)),
    /// without blocking writers. At most [`size`](Self::size), as etcd's `dbSizeInUse` (its size
    /// minus its free pages) is at most its `dbSize`.
    pub fn size_in_use(&self) -> Result<u64> {
        // An estimate: published changes not yet committed need not be in it.
        let r = self.read_raw()?;
        let mut bytes = 0u64;
        for b in Bucket::ALL {
            if let Some(t) = r.table(b)? {
                let s = t.stats()?;
                bytes += s.stored_bytes() + s.metadata_bytes() + s.fragmented_bytes();
            }
        }
        Ok(bytes.min(self.size()?))
    }

    /// Makes pending commits durable and closes the file.
    pub fn close(self) -> Result<()> {
        self.force_commit()?;
        let db = self.db.into_inner().unwrap_or_else(|p| p.into_inner());
        // Readers still holding a snapshot keep the handle; it closes with the last of them.
        if let Ok(db) = Arc::try_unwrap(db) {
            db.close()?;
        }
        Ok(())
    }
}

/// The bytes a file occupies on disk, at most its length; its length where the filesystem does
/// not say (see [`Backend::size`]).
pub fn disk_size(m: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let allocated = m.blocks().saturating_mul(512);
        if allocated > 0 {
            return allocated.min(m.len());
        }
    }
    m.len()
}

/// Opens (or creates) a redb file with the integrity check and makes sure every bucket exists.
fn open_db(path: &Path, config: &BackendConfig) -> Result<(redb::Database, nosync::SyncSwitch)> {
    let opened = catch_unwind(AssertUnwindSafe(|| {
        let mut b = redb::Database::builder();
        b.set_check_integrity_on_open(true)
            .set_cache_size(config.cache_bytes);
        nosync::create(&b, path, config.unsafe_no_fsync)
    }));
    let (db, sync) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => return Err(e.into()),
        Err(p) => {
            return Err(BackendError::Corrupt(format!(
                "opening {} panicked: {}",
                path.display(),
                panic_message(p.as_ref())
            )))
        }
    };
    create_buckets(&db)?;
    Ok((db, sync))
}

/// Creates every bucket, durably, so every read snapshot can open all of them.
fn create_buckets(db: &redb::Database) -> Result<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    for b in Bucket::ALL {
        txn.open_table(b.def())?;
    }
    txn.commit()?;
    Ok(())
}

type ByteTable = ReadOnlyTable<&'static [u8], &'static [u8]>;
type ByteRange<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

fn bounds<'a>(start: &'a [u8], end: Option<&'a [u8]>) -> Option<ByteRange<'a>> {
    match end {
        None => Some((Bound::Included(start), Bound::Unbounded)),
        Some(e) if e <= start => None,
        Some(e) => Some((Bound::Included(start), Bound::Excluded(e))),
    }
}

fn scan<T, F>(table: &T, start: &[u8], end: Option<&[u8]>, mut f: F) -> Result<()>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
    F: FnMut(&[u8], &[u8]) -> bool,
{
    let Some(range) = bounds(start, end) else {
        return Ok(());
    };
    for item in table.range::<&[u8]>(range)? {
        let (k, v) = item?;
        if !f(k.value(), v.value()) {
            break;
        }
    }
    Ok(())
}

/// Read access shared by read snapshots and the write transaction.
///
/// Ranges are `[start, end)`; `end: None` means "to the end of the bucket", and an `end` that is
/// not after `start` gives nothing. Keys come in ascending byte order.
pub trait Reader {
    /// The value stored under `key`, if any.
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Calls `f` on each pair in `[start, end)` in key order until it returns `false`.
    fn for_each(
        &self,
        bucket: Bucket,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()>;

    /// Up to `limit` pairs (`0` = no limit) in `[start, end)`, in key order.
    fn range(
        &self,
        bucket: Bucket,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.for_each(bucket, start, end, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            limit == 0 || out.len() < limit
        })?;
        Ok(out)
    }
}

/// A read snapshot: every read sees the same committed state. It keeps the database handle it
/// was opened on, so it stays valid (and unchanged) when the backend swaps in another file.
pub struct ReadTxn {
    // Fields drop in order: the tables and the transaction before the handle they read from.
    tables: [OnceLock<Option<ByteTable>>; Bucket::ALL.len()],
    txn: ReadTransaction,
    _db: Arc<redb::Database>,
}

impl ReadTxn {
    fn table(&self, bucket: Bucket) -> Result<Option<&ByteTable>> {
        let cell = &self.tables[bucket.index()];
        if let Some(t) = cell.get() {
            return Ok(t.as_ref());
        }
        let t = match self.txn.open_table(bucket.def()) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(cell.get_or_init(|| t).as_ref())
    }

    /// How many pairs `bucket` holds and its greatest key: a fingerprint of the bucket that
    /// costs no scan (redb keeps the count in the tree's root).
    pub fn extent(&self, bucket: Bucket) -> Result<(u64, Option<Vec<u8>>)> {
        let Some(t) = self.table(bucket)? else {
            return Ok((0, None));
        };
        let last = t.last()?.map(|(k, _)| k.value().to_vec());
        Ok((t.len()?, last))
    }
}

impl fmt::Debug for ReadTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadTxn").finish_non_exhaustive()
    }
}

impl Reader for ReadTxn {
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.table(bucket)? {
            None => Ok(None),
            Some(t) => Ok(t.get(key)?.map(|v| v.value().to_vec())),
        }
    }

    fn for_each(
        &self,
        bucket: Bucket,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        match self.table(bucket)? {
            None => Ok(()),
            Some(t) => scan(t, start, end, f),
        }
    }
}

/// The write transaction. Commit with [`commit`](Self::commit); dropping it aborts.
pub struct WriteTxn<'a> {
    // Dropped before the gate: an aborted transaction ends before a swap may begin.
    txn: WriteTransaction,
    backend: &'a Backend,
    ops: usize,
    /// This transaction's changes, kept while a defragmentation journals writes.
    record: Option<Vec<defrag::JournalOp>>,
    /// Written when the transaction commits (see [`stage`](Self::stage)).
    staged: Staged,
    _gate: MutexGuard<'a, ()>,
}

impl fmt::Debug for WriteTxn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteTxn")
            .field("ops", &self.ops)
            .finish_non_exhaustive()
    }
}

/// What a commit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The commit was fsynced (it and every commit before it survive a crash).
    pub durable: bool,
}

/// Which of the batch rules (see the crate docs) a commit follows.
#[derive(Clone, Copy)]
enum Rule {
    /// Always fsynced.
    Durable,
    /// Fsynced once `batch_limit` operations or `batch_interval` have accumulated.
    Batched,
    /// Fsynced once `batch_limit` operations have accumulated; the time is the caller's timer's.
    Volatile,
}

impl WriteTxn<'_> {
    /// Stores `value` under `key`.
    pub fn put(&mut self, bucket: Bucket, key: &[u8], value: &[u8]) -> Result<()> {
        if !self.staged.is_empty() {
            self.staged.forget(bucket, key);
        }
        let r = self
            .txn
            .open_table(bucket.def())
            .map_err(BackendError::from)
            .and_then(|mut t| t.insert(key, value).map(drop).map_err(BackendError::from));
        self.backend.poison(r)?;
        self.ops += 1;
        if let Some(r) = &mut self.record {
            r.push(defrag::JournalOp::Put(bucket, key.to_vec(), value.to_vec()));
        }
        Ok(())
    }

    /// Removes `key`; returns whether it was present.
    pub fn delete(&mut self, bucket: Bucket, key: &[u8]) -> Result<bool> {
        self.staged.forget(bucket, key);
        let r = self
            .txn
            .open_table(bucket.def())
            .map_err(BackendError::from)
            .and_then(|mut t| {
                t.remove(key)
                    .map(|v| v.is_some())
                    .map_err(BackendError::from)
            });
        let existed = self.backend.poison(r)?;
        self.ops += 1;
        if let Some(r) = &mut self.record {
            r.push(defrag::JournalOp::Delete(bucket, key.to_vec()));
        }
        Ok(existed)
    }

    /// Removes every key in `[start, end)` (`end: None` = to the end); returns how many.
    pub fn delete_range(
        &mut self,
        bucket: Bucket,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<u64> {
        let Some(range) = bounds(start, end) else {
            return Ok(0);
        };
        self.staged.forget_range(bucket, start, end);
        let mut n = 0u64;
        let r = self
            .txn
            .open_table(bucket.def())
            .map_err(BackendError::from)
            .and_then(|mut t| {
                t.retain_in::<&[u8], _>(range, |_, _| {
                    n += 1;
                    false
                })
                .map_err(BackendError::from)
            });
        self.backend.poison(r)?;
        self.ops += usize::try_from(n).unwrap_or(usize::MAX);
        if let Some(r) = &mut self.record {
            r.push(defrag::JournalOp::DeleteRange(
                bucket,
                start.to_vec(),
                end.map(<[u8]>::to_vec),
            ));
        }
        Ok(n)
    }

    /// Stores `value` under `key` when this transaction commits, whoever commits it (see
    /// `staged`): for a record every request overwrites, written once a batch instead of once
    /// a request. A later `stage` of the same key replaces the value; a later [`put`](Self::put)
    /// or delete of it wins over it. Reads through this transaction see it (a scan of a bucket
    /// with staged values reads its range into memory first: stage only into small buckets such as
    /// `meta`); a delete reports and counts only the keys already stored.
    pub fn stage(&mut self, bucket: Bucket, key: &[u8], value: &[u8]) {
        self.staged.set(bucket, key, value);
    }

    /// Puts and deletes made in this transaction so far (staged writes count once written).
    pub fn ops(&self) -> usize {
        self.ops
    }

    /// Commits. Durable (fsync) only if the batch rules say so (see the crate docs); visible to
    /// new readers either way.
    pub fn commit(self) -> Result<CommitInfo> {
        self.commit_with(Rule::Batched)
    }

    /// Commits without the time rule: durable only if `batch_limit` operations have accumulated
    /// since the last durable commit. For a caller that
    /// answers requests right after the commit and makes the backend durable on its own timer
    /// afterwards ([`Backend::commit_if_due`], `force_commit`), so the interval's fsync is not
    /// on the path of those answers.
    pub fn commit_volatile(self) -> Result<CommitInfo> {
        self.commit_with(Rule::Volatile)
    }

    /// Commits durably: this commit and every earlier one are fsynced before it returns.
    pub fn commit_durable(self) -> Result<()> {
        self.commit_with(Rule::Durable).map(|_| ())
    }

    fn commit_with(self, rule: Rule) -> Result<CommitInfo> {
        let backend = self.backend;
        backend.poison(self.commit_inner(rule))
    }

    fn commit_inner(self, rule: Rule) -> Result<CommitInfo> {
        let (backend, d, _gate) = self.into_parts();
        let durable = backend.commit_locked(d, rule)?;
        failpoint::hit("afterCommit");
        Ok(CommitInfo { durable })
    }

    /// Sets the transaction aside without committing: the next [`Backend::write`] continues it,
    /// and its changes become visible (and durable) with that transaction's commit.
    ///
    /// This lets a caller apply many small changes with one commit (a redb commit costs far
    /// more than an insert: it checksums and flushes every dirty page) while releasing the
    /// write gate in between. Readers do not see deferred changes until they are published
    /// ([`Backend::publish_deferred`]); any writer may commit them.
    pub fn defer(self) {
        let (backend, d, _gate) = self.into_parts();
        *backend.deferred.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
    }

    /// Discards every change of this transaction (same as dropping it).
    pub fn abort(self) -> Result<()> {
        self.txn.abort()?;
        Ok(())
    }
}

impl<'a> WriteTxn<'a> {
    /// The backend, the changes, and the write gate, which the caller keeps until it has put the
    /// changes where they go (committed or set aside).
    fn into_parts(self) -> (&'a Backend, Deferred, MutexGuard<'a, ()>) {
        let WriteTxn {
            txn,
            backend,
            ops,
            record,
            staged,
            _gate,
        } = self;
        let d = Deferred {
            txn,
            ops,
            record,
            staged,
        };
        (backend, d, _gate)
    }
}

impl Reader for WriteTxn<'_> {
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.staged.get(bucket, key) {
            return Ok(Some(v.to_vec()));
        }
        let t = self.txn.open_table(bucket.def())?;
        let v = t.get(key)?.map(|v| v.value().to_vec());
        Ok(v)
    }

    fn for_each(
        &self,
        bucket: Bucket,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let t = self.txn.open_table(bucket.def())?;
        if self.staged.in_range(bucket, start, end).next().is_none() {
            return scan(&t, start, end, f);
        }
        // Rare (a scan of `meta` within a batch): merge the staged values into the stored ones.
        let mut pairs = std::collections::BTreeMap::new();
        scan(&t, start, end, |k, v| {
            pairs.insert(k.to_vec(), v.to_vec());
            true
        })?;
        for (k, v) in self.staged.in_range(bucket, start, end) {
            pairs.insert(k.to_vec(), v.to_vec());
        }
        for (k, v) in &pairs {
            if !f(k, v) {
                break;
            }
        }
        Ok(())
    }
}

/// Writes the staged values into `txn` before its commit (one table open per bucket), counted
/// and journaled as puts.
fn write_staged(
    txn: &WriteTransaction,
    staged: &mut Staged,
    ops: &mut usize,
    record: &mut Option<Vec<defrag::JournalOp>>,
) -> Result<()> {
    if staged.is_empty() {
        return Ok(());
    }
    let all = staged.take();
    for group in all.chunk_by(|a, b| a.0 == b.0) {
        let mut t = txn.open_table(group[0].0.def())?;
        for (_, k, v) in group {
            t.insert(k.as_slice(), v.as_slice())?;
        }
    }
    *ops += all.len();
    if let Some(r) = record {
        r.extend(
            all.into_iter()
                .map(|(b, k, v)| defrag::JournalOp::Put(b, k, v)),
        );
    }
    Ok(())
}

mod copy;
pub mod defrag;
mod hash;
mod nosync;
mod staged;
pub mod swap;

pub use copy::SnapshotFile;
pub use defrag::{DefragConfig, DefragStats};
pub use swap::{Hook, Point};

#[cfg(test)]
mod replace_tests;
#[cfg(test)]
mod tests;
