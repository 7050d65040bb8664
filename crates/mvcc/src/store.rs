//! The store: read views, write transactions, compaction, hashing, restore.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::thread::JoinHandle;
use std::time::Duration;

use api::mvccpb::{event::EventType, Event, KeyValue};
use backend::{Backend, Bucket, ReadTxn, Reader, WriteTxn};
use prost::Message as _;

use crate::hash::{HashStorage, KeyValueHash, KvHasher};
use crate::index::{Fingerprint, IndexBuilder, TreeIndex, Undo};
use crate::revision::{BucketKey, Revision};
use crate::watchable_store::Watchers;
use crate::MvccError;

/// `meta` key of the consistent index (8 bytes, big endian), as etcd names it.
pub(crate) const META_CONSISTENT_INDEX: &[u8] = b"consistent_index";
/// `meta` key of the Raft term (8 bytes, big endian).
pub(crate) const META_TERM: &[u8] = b"term";
/// `meta` key of the last scheduled compaction (a 17-byte revision), as etcd names it.
pub(crate) const META_SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
/// `meta` key of the last finished compaction (a 17-byte revision).
pub(crate) const META_FINISHED_COMPACT: &[u8] = b"finishedCompactRev";

/// Options of a range read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// At most this many keys are returned; `<= 0` means no limit.
    pub limit: i64,
    /// Read at this revision; `<= 0` means the current one.
    pub rev: i64,
    /// Return only the count, no key-values.
    pub count_only: bool,
    /// Stop fetching key-values once those fetched hold this many key and value bytes (at least
    /// one is always returned); `0` means no bound. `count` still counts the whole range. Lets a
    /// caller read a large range in parts of bounded size.
    pub max_bytes: usize,
    /// Walk the index only as far as `limit` keys: `count` is then the number of keys found
    /// (at most `limit`), not the whole range's, and a read near the start of a long range
    /// costs no more than the keys it returns.
    pub no_total: bool,
}

/// The result of a range read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    /// The key-values, ascending by key (empty for `count_only`).
    pub kvs: Vec<KeyValue>,
    /// The store's current revision as seen by the reader (not the revision read at), as etcd
    /// returns it in the response header.
    pub rev: i64,
    /// How many keys matched, before `limit`.
    pub count: i64,
}

/// Tuning of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Records examined per physical compaction batch (one backend transaction each).
    pub compaction_batch_limit: usize,
    /// Pause between two physical compaction batches, to let writers in.
    pub compaction_sleep_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            compaction_batch_limit: 1000,
            compaction_sleep_interval: Duration::from_millis(10),
        }
    }
}

/// Past this many operations in the deferred backend transaction, [`KvStore::flush`] commits it
/// instead of publishing it uncommitted, which bounds the transaction's dirty pages.
const LAZY_COMMIT_OPS: usize = 4096;

#[derive(Debug)]
struct State {
    index: TreeIndex,
    /// Revision of the last completed write transaction.
    current_rev: i64,
    /// Main revision of the last compaction; -1 if there was none (as etcd's compactMainRev).
    compact_main_rev: i64,
}

struct Inner {
    backend: Arc<Backend>,
    config: StoreConfig,
    state: RwLock<State>,
    writer: Mutex<()>,
    /// Set when the store is dropped: the compactor stops after its current batch.
    stopping: AtomicBool,
    /// Wakes the compactor from its pause between batches when `stopping` is set.
    pause: (Mutex<()>, Condvar),
    /// Bumped when the backend's file is replaced ([`KvStore::restore`]): a physical compaction
    /// scheduled before stops, its revisions to keep are those of the old file.
    generation: AtomicU64,
    /// The watchers, once a [`crate::WatchableStore`] is attached: [`TxnWrite::end`] publishes
    /// each new revision and notifies them under the watchers' lock (see `watchable_store`).
    watchers: OnceLock<Arc<Watchers>>,
    /// Revisions written with [`TxnWrite::end_deferred`] but not yet published
    /// (see [`KvStore::flush`]). Changed only under `writer`.
    unpublished: Mutex<Unpublished>,
    /// The hashes of the last compactions (see `hash`).
    hashes: HashStorage,
}

/// Deferred revisions: their events (for the watchers, once published) and how to take their
/// index changes back if their commit fails.
#[derive(Default)]
struct Unpublished {
    pending: bool,
    revs: Vec<(i64, Vec<Event>)>,
    undo: Vec<Undo>,
}

impl Inner {
    fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().expect("mvcc state lock poisoned")
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().expect("mvcc state lock poisoned")
    }

    fn unpublished(&self) -> MutexGuard<'_, Unpublished> {
        self.unpublished.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `pick` of the state and a backend snapshot holding every revision the state has
    /// published. The backend commits published changes on demand under its write gate, which
    /// a writer holds while it waits for the state lock, so the commit is made before the state
    /// lock is taken and checked under it (a revision is published in the backend before in the
    /// state), and made again if a publication came in between.
    fn visible_snapshot<T>(
        &self,
        mut pick: impl FnMut(&State) -> T,
    ) -> Result<(T, backend::ReadTxn), backend::BackendError> {
        loop {
            self.backend.make_visible()?;
            let st = self.state();
            if self.backend.is_visible() {
                let picked = pick(&st);
                return Ok((picked, self.backend.read_raw()?));
            }
        }
    }

    /// Publishes the deferred revisions, whose changes the backend has just committed or published,
    /// in order.
    fn publish_unpublished(&self) {
        let done = std::mem::take(&mut *self.unpublished());
        for (rev, events) in done.revs {
            self.publish(rev, &events);
        }
    }

    /// Takes back the index changes of deferred revisions whose changes the backend lost.
    fn discard_unpublished(&self) {
        let mut lost = std::mem::take(&mut *self.unpublished());
        if lost.pending {
            tracing::error!(
                revisions = lost.revs.len(),
                "discarding deferred writes the backend did not commit"
            );
        }
        let mut st = self.state_mut();
        while let Some(u) = lost.undo.pop() {
            st.index.undo(u);
        }
    }

    /// Makes `rev` the store's revision and hands its events to the watchers.
    fn publish(&self, rev: i64, events: &[Event]) {
        let publish = || {
            if !events.is_empty() {
                self.state_mut().current_rev = rev;
            }
        };
        match self.watchers.get() {
            // Publishing the revision and notifying the watchers happen under the watchers'
            // lock, so a watcher created concurrently sees either the old revision (and gets
            // these events here) or the new one (and does not): never both, never neither.
            Some(w) if !events.is_empty() => w.publish(rev, events, publish),
            _ => publish(),
        }
    }

    fn writer(&self) -> MutexGuard<'_, ()> {
        // The guarded value is (); a panic while it was held cannot leave it inconsistent.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Job {
    inner: Arc<Inner>,
    rev: i64,
    keep: HashSet<Revision>,
    generation: u64,
    /// The compaction before this one, and whether it had finished when this one was scheduled
    /// (only then is this one's hash stored: see `hash`).
    prev: Option<i64>,
    done: Arc<Completion>,
}

/// The in-memory state as the backend describes it (see [`KvStore::open`]).
struct Loaded {
    state: State,
    /// `scheduledCompactRev`, if any.
    scheduled: Option<i64>,
    /// The index came from an image, not from a scan of the `key` bucket.
    from_image: bool,
}

impl Loaded {
    /// Takes the index from `image` if it matches the backend, else rebuilds it by scanning the
    /// `key` bucket; the revision and compaction revision come from the records and the
    /// compaction marks.
    fn read(backend: &Backend, image: Option<&[u8]>) -> Result<Loaded, MvccError> {
        let snap = backend.read()?;
        let marks = CompactMarks::read(&snap)?;
        let scheduled = marks.scheduled;
        let compact_main_rev = marks.finished.unwrap_or(-1);

        if let Some(bytes) = image {
            let now = fingerprint(&snap, &marks)?;
            match TreeIndex::from_image(bytes, &now) {
                Ok((index, current_rev)) => {
                    tracing::info!(keys = index.len(), "key index loaded from its image");
                    // As after a scan: an unfinished compaction is taken up again (on an index
                    // that already had it, that changes nothing but finds what to keep).
                    return Ok(Loaded {
                        state: State {
                            index,
                            current_rev,
                            compact_main_rev,
                        },
                        scheduled,
                        from_image: true,
                    });
                }
                Err(e) => tracing::warn!("key index image not used, rebuilding the index: {e}"),
            }
        }
        let mut index = IndexBuilder::default();
        let mut current_rev = 1i64;
        let mut failure = None;
        let start = Revision::new(1, 0).to_bytes();
        snap.for_each(
            Bucket::Key,
            &start,
            None,
            &mut |k, v| match restore_record(&mut index, k, v) {
                Ok(main) => {
                    current_rev = main;
                    true
                }
                Err(e) => {
                    failure = Some(e);
                    false
                }
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        let index = index.finish();
        // Compaction may have removed the newest records; the revision never goes back.
        current_rev = current_rev.max(compact_main_rev);
        if let Some(s) = scheduled {
            current_rev = current_rev.max(s);
        }
        Ok(Loaded {
            state: State {
                index,
                current_rev,
                compact_main_rev,
            },
            scheduled,
            from_image: false,
        })
    }

    /// A compaction that was scheduled but not finished.
    fn unfinished_compaction(&self) -> Option<i64> {
        self.scheduled.filter(|&s| s > self.state.compact_main_rev)
    }
}

/// Whether opening `backend` with `image` would take the index from it.
#[cfg(test)]
pub(crate) fn image_is_used(backend: &Backend, image: &[u8]) -> Result<bool, MvccError> {
    Ok(Loaded::read(backend, Some(image))?.from_image)
}

/// Takes up a compaction the backend says was scheduled at `rev` but not finished: reads below
/// `rev` fail from now on and the index is compacted; returns the revisions to keep for the
/// physical part. The caller excludes writers.
fn resume_compaction(inner: &Inner, rev: i64) -> HashSet<Revision> {
    tracing::info!(
        scheduled = rev,
        finished = inner.state().compact_main_rev,
        "resuming interrupted compaction"
    );
    inner.state_mut().compact_main_rev = rev;
    compact_index(inner, rev)
}

struct Worker {
    tx: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
}

/// The multi-version store. `Send + Sync`; share it as `Arc<KvStore>`.
pub struct KvStore {
    inner: Arc<Inner>,
    worker: Mutex<Option<Worker>>,
}

impl fmt::Debug for KvStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvStore")
            .field("rev", &self.rev())
            .field("compact_rev", &self.compact_rev())
            .finish_non_exhaustive()
    }
}

fn decode_kv(bytes: &[u8]) -> Result<KeyValue, MvccError> {
    KeyValue::decode(bytes).map_err(|e| MvccError::Corrupt(format!("undecodable KeyValue: {e}")))
}

/// What every record this store writes satisfies; anything else in the `key` bucket is damage (or
/// another program's file) and must not reach the index, whose arithmetic relies on it. A
/// revision must leave room for the next one.
fn check_record(bk: &BucketKey, kv: &KeyValue) -> Result<(), MvccError> {
    let main = bk.rev.main;
    let sane = main < i64::MAX
        && (bk.tombstone
            || (kv.mod_revision == main
                && (1..=main).contains(&kv.create_revision)
                && (1..=main).contains(&kv.version)));
    if sane {
        Ok(())
    } else {
        Err(MvccError::Corrupt(format!(
            "record {}.{} is impossible: create revision {}, mod revision {}, version {}",
            main, bk.rev.sub, kv.create_revision, kv.mod_revision, kv.version
        )))
    }
}

/// Adds one record of the `key` bucket (scanned in key order) to the index being rebuilt, after
/// checking it; returns its main revision.
pub(crate) fn restore_record(
    index: &mut IndexBuilder,
    k: &[u8],
    v: &[u8],
) -> Result<i64, MvccError> {
    let bk = BucketKey::from_bytes(k)?;
    if v.is_empty() && !bk.tombstone && bk.rev.main < i64::MAX {
        // etcdutl's `snapshot restore --bump-revision` writes a record with no key-value at the
        // bumped revision, so that the store opens there; etcd's later snapshots keep it. It
        // holds no key: it counts as a revision and stays out of the index.
        return Ok(bk.rev.main);
    }
    let kv = decode_kv(v)?;
    check_record(&bk, &kv)?;
    if let Err(e) = index.restore_record(
        &kv.key,
        bk.rev,
        bk.tombstone,
        kv.create_revision,
        kv.version,
    ) {
        tracing::warn!(
            key = %String::from_utf8_lossy(&kv.key),
            rev = bk.rev.main,
            "restoring key index: {e:?}"
        );
    }
    Ok(bk.rev.main)
}

fn read_u64(r: &dyn Reader, key: &[u8]) -> Result<Option<u64>, MvccError> {
    match r.get(Bucket::Meta, key)? {
        None => Ok(None),
        Some(v) => {
            let b: [u8; 8] = v.as_slice().try_into().map_err(|_| {
                MvccError::Corrupt(format!(
                    "meta {} is {} bytes",
                    String::from_utf8_lossy(key),
                    v.len()
                ))
            })?;
            Ok(Some(u64::from_be_bytes(b)))
        }
    }
}

/// The finished and the scheduled compaction revisions recorded in `meta`, if any.
struct CompactMarks {
    finished: Option<i64>,
    scheduled: Option<i64>,
}

impl CompactMarks {
    fn read(r: &dyn Reader) -> Result<CompactMarks, MvccError> {
        Ok(CompactMarks {
            finished: read_compact_mark(r, META_FINISHED_COMPACT)?,
            scheduled: read_compact_mark(r, META_SCHEDULED_COMPACT)?,
        })
    }
}

/// What the backend holds now, as far as an image of the index must match it; `marks` are the
/// backend's own, read from the same snapshot.
fn fingerprint(r: &backend::ReadTxn, marks: &CompactMarks) -> Result<Fingerprint, MvccError> {
    let (records, last_key) = r.extent(Bucket::Key)?;
    let (consistent_index, term) = consistent_index_and_term(r)?;
    Ok(Fingerprint {
        records,
        last_key: last_key.unwrap_or_default(),
        finished: marks.finished.unwrap_or(-1),
        scheduled: marks.scheduled.unwrap_or(-1),
        consistent_index,
        term,
    })
}

/// The consistent index and term a backend snapshot records in `meta` (0 for either if never
/// written): the Raft entry the data stands for.
pub fn consistent_index_and_term(r: &dyn Reader) -> Result<(u64, u64), MvccError> {
    Ok((
        read_u64(r, META_CONSISTENT_INDEX)?.unwrap_or(0),
        read_u64(r, META_TERM)?.unwrap_or(0),
    ))
}

fn read_compact_mark(r: &dyn Reader, key: &[u8]) -> Result<Option<i64>, MvccError> {
    match r.get(Bucket::Meta, key)? {
        None => Ok(None),
        Some(v) => match BucketKey::from_bytes(&v)?.rev.main {
            // The store's revision is at least the mark, and must leave room for the next one.
            i64::MAX => Err(MvccError::Corrupt(format!(
                "meta {} leaves no room for another revision",
                String::from_utf8_lossy(key)
            ))),
            main => Ok(Some(main)),
        },
    }
}

fn compact_mark(rev: i64) -> [u8; crate::REV_BYTES_LEN] {
    Revision::new(rev, 0).to_bytes()
}

/// etcd's rangeKeys: the shared read path of views and write transactions.
fn range_keys(
    inner: &Inner,
    reader: &dyn Reader,
    key: &[u8],
    end: Option<&[u8]>,
    cur_rev: i64,
    opts: RangeOptions,
) -> Result<RangeResult, MvccError> {
    if opts.rev > cur_rev {
        return Err(MvccError::FutureRev);
    }
    let rev = if opts.rev <= 0 { cur_rev } else { opts.rev };
    let limit = usize::try_from(opts.limit).unwrap_or(0);
    let (revs, total) = {
        let st = inner.state();
        if rev < st.compact_main_rev {
            return Err(MvccError::Compacted);
        }
        if opts.count_only {
            let count = st.index.count_revisions(key, end, rev);
            return Ok(RangeResult {
                kvs: Vec::new(),
                rev: cur_rev,
                count: count as i64,
            });
        }
        if opts.no_total {
            let revs = st.index.first_revisions(key, end, rev, limit);
            let n = revs.len();
            (revs, n)
        } else {
            st.index.revisions(key, end, rev, limit)
        }
    };
    let mut kvs = Vec::with_capacity(revs.len());
    let mut fetched = 0usize;
    for r in revs {
        if opts.max_bytes > 0 && fetched >= opts.max_bytes {
            break;
        }
        let Some(bytes) = reader.get(Bucket::Key, &r.to_bytes())? else {
            return Err(MvccError::Corrupt(format!(
                "revision {}.{} is in the index but not in the backend",
                r.main, r.sub
            )));
        };
        let kv = decode_kv(&bytes)?;
        fetched = fetched.saturating_add(kv.key.len() + kv.value.len());
        kvs.push(kv);
    }
    Ok(RangeResult {
        kvs,
        rev: cur_rev,
        count: total as i64,
    })
}

impl KvStore {
    /// Opens the store on `backend` with the default [`StoreConfig`].
    pub fn open(backend: Arc<Backend>) -> Result<KvStore, MvccError> {
        KvStore::open_with_config(backend, StoreConfig::default())
    }

    /// Opens the store: rebuilds the index from the `key` bucket, restores the revision and the
    /// compaction revision, and finishes an interrupted compaction before returning.
    pub fn open_with_config(
        backend: Arc<Backend>,
        config: StoreConfig,
    ) -> Result<KvStore, MvccError> {
        KvStore::open_with_image(backend, config, None)
    }

    /// Opens the store as [`open_with_config`](Self::open_with_config) does, taking the index
    /// from `image` (made by [`index_image`](Self::index_image)) if it matches what the backend
    /// holds; a damaged or outdated image is logged and the index rebuilt from the backend.
    ///
    /// An entry applied after the image moves the consistent index and a compaction moves its
    /// marks, so either makes the image unused; the server also deletes the image's file before
    /// the store opens (see its `index_image`), so an old file is never offered again.
    pub fn open_with_image(
        backend: Arc<Backend>,
        config: StoreConfig,
        image: Option<&[u8]>,
    ) -> Result<KvStore, MvccError> {
        let loaded = Loaded::read(&backend, image)?;
        let from_image = loaded.from_image;
        let scheduled = loaded.unfinished_compaction();
        let inner = Arc::new(Inner {
            backend,
            config,
            state: RwLock::new(loaded.state),
            writer: Mutex::new(()),
            unpublished: Mutex::default(),
            stopping: AtomicBool::new(false),
            pause: Default::default(),
            generation: AtomicU64::new(0),
            watchers: OnceLock::new(),
            hashes: HashStorage::default(),
        });
        if let Some(s) = scheduled {
            let keep = resume_compaction(&inner, s);
            run_physical(&inner, s, &keep, Duration::ZERO, 0, -1)?;
        }
        let (current_rev, compact_main_rev) = {
            let st = inner.state();
            (st.current_rev, st.compact_main_rev)
        };
        tracing::info!(
            current_rev,
            compact_main_rev,
            index_from_image = from_image,
            "mvcc store opened"
        );

        Ok(KvStore {
            inner,
            worker: Mutex::new(None),
        })
    }

    /// Replaces everything the store holds in memory with what the backend holds once `install`
    /// has swapped its file for another one (a Raft snapshot from the leader), as etcd's
    /// `store.Restore` and `watchableStore.Restore` do.
    ///
    /// While it runs no write transaction, compaction or watch catch-up round can run. The index,
    /// the revision and the compaction revision are rebuilt from the new file; then, in one step
    /// under the watchers' lock, the new state is published and every synced watcher becomes
    /// unsynced, so catch-up reads what it has not seen from the new data (revisions are the same
    /// on every member, so nothing is sent twice or skipped; a watcher whose next revision was
    /// compacted in the new data gets the compaction response). A compaction the new file left
    /// unfinished is resumed on the compactor thread; physical compactions of the old file still
    /// queued or running stop at their next batch.
    ///
    /// If `install` fails nothing is rebuilt and its error is returned; the backend may then
    /// serve either file, so the caller must not go on applying entries (the server stops).
    pub fn restore<E: From<MvccError>>(
        &self,
        install: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let watchers = self.watchers().clone();
        let _no_catch_up = watchers.sync_lock();
        let _no_writer = self.inner.writer();
        // Before the swap, so a compaction batch of the old file either runs before it or sees
        // the new generation (the backend's write gate orders the two).
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        install()?;
        let loaded = Loaded::read(&self.inner.backend, None)?;
        let scheduled = loaded.unfinished_compaction();
        let (rev, compact) = (loaded.state.current_rev, loaded.state.compact_main_rev);
        watchers.restore(|| *self.inner.state_mut() = loaded.state);
        if let Some(s) = scheduled {
            let keep = resume_compaction(&self.inner, s);
            let generation = self.inner.generation.load(Ordering::SeqCst);
            self.schedule_physical(s, keep, generation, None)?;
        }
        tracing::info!(
            current_rev = rev,
            compact_main_rev = compact,
            "mvcc store restored from a new backend file"
        );
        Ok(())
    }

    /// The backend this store writes to.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.inner.backend
    }

    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The current revision (of the last write transaction that changed something).
    pub fn rev(&self) -> i64 {
        self.inner.state().current_rev
    }

    /// The revision of the last compaction, or 0 if there was none. Reads below it fail with
    /// [`MvccError::Compacted`]; a read at exactly it succeeds.
    pub fn compact_rev(&self) -> i64 {
        self.inner.state().compact_main_rev.max(0)
    }

    /// etcd's `FirstRev`: the compacted revision, or -1 if the store was never compacted. A txn's range
    /// at a revision below it fails with [`MvccError::Compacted`] (so a negative revision passes on a
    /// store that was never compacted, as in etcd).
    pub fn first_rev(&self) -> i64 {
        self.inner.state().compact_main_rev
    }

    /// Number of keys in the index (live or with history not yet compacted).
    pub fn index_len(&self) -> usize {
        self.inner.state().index.len()
    }

    /// A consistent read-only snapshot at the current revision.
    pub fn read(&self) -> ReadView<'_> {
        let (rev, snap) = match self.inner.visible_snapshot(|st| st.current_rev) {
            Ok((rev, snap)) => (rev, Ok(snap)),
            Err(e) => (self.inner.state().current_rev, Err(e.to_string())),
        };
        ReadView {
            inner: &self.inner,
            snap,
            rev,
        }
    }

    /// The write transaction: exclusive (a second caller waits), and everything it changes
    /// forms one revision. Finish it with [`TxnWrite::end`]; dropping it discards it.
    pub fn write(&self) -> TxnWrite<'_> {
        let guard = self.inner.writer();
        let begin_rev = match self.inner.unpublished().revs.last() {
            Some((rev, _)) => *rev,
            None => self.inner.state().current_rev,
        };
        let (txn, error) = match self.inner.backend.resume() {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(MvccError::from(e))),
        };
        let resumed_ops = txn.as_ref().map_or(0, |t| t.ops());
        TxnWrite {
            inner: &self.inner,
            _guard: guard,
            txn,
            begin_rev,
            changes: Vec::new(),
            undo: Vec::new(),
            error,
            finished: false,
            resumed_ops,
        }
    }

    /// Publishes the revisions written with [`TxnWrite::end_deferred`] (to readers and watchers)
    /// in order. Does nothing if there are none.
    ///
    /// While the backend's deferred transaction holds fewer than [`LAZY_COMMIT_OPS`] operations
    /// they are published uncommitted (`backend::Backend::publish_deferred`): a reader commits them
    /// when it opens its snapshot, the caller's timer when it makes the backend durable. Past that
    /// they are committed first; if that commit fails, their index changes are taken back and the
    /// error returned: the caller must not acknowledge them. A later commit that fails stops the
    /// backend (`failure`), and the member applies them again from its log.
    ///
    /// The commit is volatile (see `backend::WriteTxn::commit_volatile`): the caller answers the
    /// revisions' requests right after it and makes the backend durable on its own timer, so
    /// the batch interval's fsync is not on their path. Their durability is the WAL's.
    pub fn flush(&self) -> Result<(), MvccError> {
        let _guard = self.inner.writer();
        if let Some(f) = self.inner.backend.failure() {
            // Deferred revisions may have been lost with the failure; none may be acknowledged.
            return Err(backend::BackendError::Poisoned(f.to_string()).into());
        }
        if !self.inner.unpublished().pending {
            return Ok(());
        }
        if self.inner.backend.deferred_ops() < LAZY_COMMIT_OPS {
            // Readers commit the published changes when they need them (`Backend::read`), the
            // apply thread's timer when it syncs: no commit on the path of the answers.
            self.inner.backend.publish_deferred();
            self.inner.publish_unpublished();
            return Ok(());
        }
        let committed = self
            .inner
            .backend
            .resume()
            .and_then(|t| t.commit_volatile().map(|_| ()));
        match committed {
            Ok(()) => {
                self.inner.publish_unpublished();
                Ok(())
            }
            Err(e) => {
                self.inner.discard_unpublished();
                Err(e.into())
            }
        }
    }

    /// The consistent index stored in `meta` (0 if none was ever written).
    pub fn consistent_index(&self) -> u64 {
        match self.consistent_index_and_term() {
            Ok((ci, _)) => ci,
            Err(e) => {
                tracing::error!("reading the consistent index: {e}");
                0
            }
        }
    }

    /// The consistent index and term stored in `meta` (0 for either if never written).
    pub fn consistent_index_and_term(&self) -> Result<(u64, u64), MvccError> {
        consistent_index_and_term(&self.inner.backend.read()?)
    }

    /// The watchers attached to this store (created on first use; one set per store).
    pub(crate) fn watchers(&self) -> &Arc<Watchers> {
        self.inner.watchers.get_or_init(Default::default)
    }

    /// Reads the events of revisions `[from, to)` from one backend snapshot, in revision order,
    /// keeping those whose key passes `want` (a DELETE's key-value has only `key` and
    /// `mod_revision`, as from [`TxnWrite::end`]). Stops after `limit` records or `limit_bytes`
    /// bytes of records were examined, but only at a revision boundary, so a revision is never
    /// split.
    ///
    /// Returns the events, the first revision not read (`to` unless stopped early), and the
    /// compaction revision read *after* the snapshot was opened (-1 if none): every record of
    /// a revision above it is in the snapshot, since later compactions had not started then.
    pub(crate) fn read_events(
        &self,
        from: i64,
        to: i64,
        limit: usize,
        limit_bytes: usize,
        want: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(Vec<Event>, i64, i64), MvccError> {
        let snap = self.inner.backend.read()?;
        let compact = self.inner.state().compact_main_rev;
        let start = Revision::new(from.max(0), 0).to_bytes();
        let end = Revision::new(to.max(0), 0).to_bytes();
        let mut events = Vec::new();
        let mut examined = 0usize;
        let mut bytes = 0usize;
        let mut last_main = None;
        let mut stopped_at = None;
        let mut failure = None;
        snap.for_each(Bucket::Key, &start, Some(&end), &mut |k, v| {
            let bk = match BucketKey::from_bytes(k) {
                Ok(bk) => bk,
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            };
            if (examined >= limit || bytes >= limit_bytes) && last_main != Some(bk.rev.main) {
                stopped_at = Some(bk.rev.main);
                return false;
            }
            examined += 1;
            bytes += k.len() + v.len();
            last_main = Some(bk.rev.main);
            let mut kv = match decode_kv(v) {
                Ok(kv) => kv,
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            };
            if !want(&kv.key) {
                return true;
            }
            let kind = if bk.tombstone {
                // A tombstone stores only the key; the watcher needs the deletion's revision.
                kv.mod_revision = bk.rev.main;
                EventType::Delete
            } else {
                EventType::Put
            };
            events.push(Event {
                r#type: kind as i32,
                kv: Some(kv),
                prev_kv: None,
            });
            true
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok((events, stopped_at.unwrap_or(to), compact))
    }

    /// The key index as bytes, for [`open_with_image`](Self::open_with_image) to start from
    /// instead of scanning the backend; for a member that stops.
    ///
    /// It stops the compactor thread first (a compaction it was running resumes at the next
    /// open, as after a crash) and makes the backend durable, so the image and the file agree.
    /// The store must not be written to afterwards; a write would make the image outdated
    /// (which the next open detects, and then scans). Fails if deferred writes are not yet
    /// committed ([`flush`](Self::flush)) or the backend cannot commit.
    pub fn index_image(&self) -> Result<Vec<u8>, MvccError> {
        self.stop_compactor();
        let _w = self.inner.writer();
        if self.inner.unpublished().pending {
            return Err(MvccError::Uncommitted);
        }
        self.inner.backend.force_commit()?;
        let snap = self.inner.backend.read()?;
        let fp = fingerprint(&snap, &CompactMarks::read(&snap)?)?;
        let st = self.inner.state();
        Ok(st.index.image(&fp, st.current_rev))
    }

    /// Stops the compactor thread after its current batch and waits for it.
    fn stop_compactor(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        {
            let (lock, cv) = &self.inner.pause;
            let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
            cv.notify_all();
        }
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(Worker { tx, thread }) = worker {
            drop(tx);
            let _ = thread.join();
        }
    }

    /// Makes every backend commit so far durable.
    pub fn force_commit(&self) -> Result<(), MvccError> {
        Ok(self.inner.backend.force_commit()?)
    }

    /// Compacts at `rev`: reads below `rev` fail from now on, and records no longer visible at
    /// any revision `>= rev` are removed.
    ///
    /// Fails with [`MvccError::Compacted`] if `rev` is not above the last compaction and with
    /// [`MvccError::FutureRev`] if it is above the current revision. Before returning, it records
    /// the compaction durably in `meta` and compacts the index; the physical deletion from the
    /// backend then runs on the store's compactor thread, in batches. Wait for it with
    /// [`CompactHandle::wait`] (a blocking call); dropping the handle does not cancel it.
    pub fn compact(&self, rev: i64) -> Result<CompactHandle, MvccError> {
        let (keep, generation, prev) = {
            let _w = self.inner.writer();
            let prev = {
                let st = self.inner.state();
                if rev <= st.compact_main_rev {
                    return Err(MvccError::Compacted);
                }
                if rev > st.current_rev {
                    return Err(MvccError::FutureRev);
                }
                st.compact_main_rev
            };
            let mut t = self.inner.backend.write()?;
            // etcd's checkPrevCompactionCompleted: the previous compaction's physical part is done.
            let prev_done = read_compact_mark(&t, META_SCHEDULED_COMPACT)?
                == read_compact_mark(&t, META_FINISHED_COMPACT)?;
            t.put(Bucket::Meta, META_SCHEDULED_COMPACT, &compact_mark(rev))?;
            failpoint::hit("compactBeforeCommitScheduledCompact");
            t.commit_durable()?;
            failpoint::hit("compactAfterCommitScheduledCompact");
            self.inner.state_mut().compact_main_rev = rev;
            (
                compact_index(&self.inner, rev),
                self.inner.generation.load(Ordering::SeqCst),
                prev_done.then_some(prev),
            )
        };
        self.schedule_physical(rev, keep, generation, prev)
    }

    /// Queues the physical part of a compaction at `rev` on the compactor thread (started on
    /// first use).
    fn schedule_physical(
        &self,
        rev: i64,
        keep: HashSet<Revision>,
        generation: u64,
        prev: Option<i64>,
    ) -> Result<CompactHandle, MvccError> {
        let done = Arc::new(Completion::default());
        let job = Job {
            inner: self.inner.clone(),
            rev,
            keep,
            generation,
            prev,
            done: done.clone(),
        };
        let mut worker = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if worker.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            let thread = std::thread::Builder::new()
                .name("mvcc-compactor".into())
                .spawn(move || {
                    for job in rx {
                        let result = if job.inner.stopping.load(Ordering::SeqCst) {
                            Err(MvccError::CompactionInterrupted)
                        } else {
                            run_physical(
                                &job.inner,
                                job.rev,
                                &job.keep,
                                job.inner.config.compaction_sleep_interval,
                                job.generation,
                                job.prev.unwrap_or(-1),
                            )
                            .map(|hash| match job.prev {
                                Some(_) => job.inner.hashes.store(hash),
                                None => tracing::info!(
                                    "previous compaction was interrupted, skip storing compaction hash value"
                                ),
                            })
                        };
                        if let Err(e) = &result {
                            tracing::warn!(rev = job.rev, "physical compaction: {e}");
                        }
                        job.done.finish(result);
                    }
                })
                .map_err(|e| MvccError::Backend(backend::BackendError::Io(e)))?;
            *worker = Some(Worker { tx, thread });
        }
        if let Some(w) = worker.as_ref() {
            if let Err(mpsc::SendError(job)) = w.tx.send(job) {
                job.done.finish(Err(MvccError::CompactionInterrupted));
            }
        }
        Ok(CompactHandle { rev, done })
    }

    /// etcd's `HashKV`: a CRC-32C over the `key` bucket's records of revisions `<= rev` (0 =
    /// current) that survive compaction, so members at the same revision can be compared (see
    /// `hash`). Returns the hash and the compaction revision it was computed against (-1 if the
    /// store was never compacted, as etcd reports it). Always computed afresh.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64), MvccError> {
        let (h, _) = self.compute_hash(rev)?;
        Ok((h.hash, h.compact_revision))
    }

    /// etcd's `HashStorage.HashByRev`: the hash at `rev` (0 = current) and the store's current
    /// revision, from the hashes kept of recent compactions when `rev` is one of them, else
    /// computed as [`hash_kv`](Self::hash_kv) does. This is what peers compare.
    pub fn hash_by_rev(&self, rev: i64) -> Result<(KeyValueHash, i64), MvccError> {
        if let Some(h) = self.inner.hashes.get(rev) {
            return Ok((h, self.inner.state().current_rev));
        }
        self.compute_hash(rev)
    }

    /// The hashes kept of the last compactions (at most `HASH_STORAGE_MAX_SIZE`), oldest first.
    pub fn compaction_hashes(&self) -> Vec<KeyValueHash> {
        self.inner.hashes.all()
    }

    fn compute_hash(&self, rev: i64) -> Result<(KeyValueHash, i64), MvccError> {
        let (picked, snap) = self.inner.visible_snapshot(|st| {
            let (compact, cur) = (st.compact_main_rev, st.current_rev);
            if rev > 0 && rev < compact {
                return Err(MvccError::Compacted);
            }
            if rev > 0 && rev > cur {
                return Err(MvccError::FutureRev);
            }
            let at = if rev == 0 { cur } else { rev };
            Ok((compact, cur, at, st.index.keep(at)))
        })?;
        let (compact, cur, at, keep) = picked?;
        let mut h = KvHasher::new(compact, at, &keep);
        let mut failure = None;
        snap.for_each(Bucket::Key, &[], None, &mut |k, v| {
            let bk = match BucketKey::from_bytes(k) {
                Ok(bk) => bk,
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            };
            if bk.rev.main > at {
                // Keys are in revision order: nothing after this one counts.
                return false;
            }
            h.write(&bk, k, v);
            true
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok((h.finish(), cur)),
        }
    }
}

impl Drop for KvStore {
    fn drop(&mut self) {
        self.stop_compactor();
    }
}

/// Compacts the index at `rev` in chunks (each under the state write lock, so readers are not
/// held up by one long pause); returns the revisions to keep. The caller excludes writers.
fn compact_index(inner: &Inner, rev: i64) -> HashSet<Revision> {
    const CHUNK_KEYS: usize = 10_000;
    let mut keep = HashSet::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let mut st = inner.state_mut();
        after = st
            .index
            .compact_chunk(rev, after.as_deref(), CHUNK_KEYS, &mut keep);
        if after.is_none() {
            return keep;
        }
    }
}

/// Deletes from the backend every record with `main <= rev` that is not in `keep`, in batches
/// of `compaction_batch_limit` records; the last batch records `finishedCompactRev`. Stops if
/// the backend's file was replaced since `generation` (`keep` describes the old file). Returns
/// the hash of the records it went through, against the compaction before, `prev` (see `hash`).
fn run_physical(
    inner: &Inner,
    rev: i64,
    keep: &HashSet<Revision>,
    pause: Duration,
    generation: u64,
    prev: i64,
) -> Result<KeyValueHash, MvccError> {
    let mut hasher = KvHasher::new(prev, rev, keep);
    let batch = inner.config.compaction_batch_limit.max(1);
    let end = Revision::new(rev.saturating_add(1), 0).to_bytes();
    let mut last = Revision::new(0, 0).to_bytes().to_vec();
    let mut deleted = 0usize;
    loop {
        let mut t = inner.backend.write()?;
        // Checked while holding the backend's write transaction: a file swap waits for it.
        if inner.generation.load(Ordering::SeqCst) != generation {
            return Err(MvccError::CompactionInterrupted);
        }
        let mut keys = Vec::with_capacity(batch);
        t.for_each(Bucket::Key, &last, Some(&end), &mut |k, v| {
            // A key that does not decode fails the batch below.
            if let Ok(bk) = BucketKey::from_bytes(k) {
                hasher.write(&bk, k, v);
            }
            keys.push(k.to_vec());
            keys.len() < batch
        })?;
        let mut last_rev = None;
        for k in &keys {
            let bk = BucketKey::from_bytes(k)?;
            if !keep.contains(&bk.rev) {
                t.delete(Bucket::Key, k)?;
                deleted += 1;
            }
            last_rev = Some(bk.rev);
        }
        if keys.len() < batch {
            // Compactions run in order, but never let the mark go backwards.
            let prev = read_compact_mark(&t, META_FINISHED_COMPACT)?.unwrap_or(-1);
            failpoint::hit("compactBeforeSetFinishedCompact");
            if rev > prev {
                t.put(Bucket::Meta, META_FINISHED_COMPACT, &compact_mark(rev))?;
            }
            t.commit()?;
            failpoint::hit("compactAfterSetFinishedCompact");
            let hash = hasher.finish();
            tracing::info!(
                rev,
                deleted,
                hash = hash.hash,
                "finished scheduled compaction"
            );
            return Ok(hash);
        }
        failpoint::hit("compactBeforeCommitBatch");
        t.commit()?;
        failpoint::hit("compactAfterCommitBatch");
        if let Some(r) = last_rev {
            last = Revision::new(r.main, r.sub + 1).to_bytes().to_vec();
        }
        if inner.stopping.load(Ordering::SeqCst) {
            return Err(MvccError::CompactionInterrupted);
        }
        if !pause.is_zero() {
            let (lock, cv) = &inner.pause;
            let g = lock.lock().unwrap_or_else(|p| p.into_inner());
            let _ = cv.wait_timeout_while(g, pause, |_| !inner.stopping.load(Ordering::SeqCst));
        }
    }
}

#[derive(Default)]
struct Completion {
    result: Mutex<Option<Result<(), MvccError>>>,
    done: AtomicBool,
    cv: Condvar,
}

impl Completion {
    fn finish(&self, r: Result<(), MvccError>) {
        let mut slot = self.result.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(r);
        self.done.store(true, Ordering::SeqCst);
        self.cv.notify_all();
    }
}

/// A scheduled compaction. The index is already compacted; the physical deletion runs on the
/// store's compactor thread. [`wait`](Self::wait) blocks until it is done.
pub struct CompactHandle {
    rev: i64,
    done: Arc<Completion>,
}

impl fmt::Debug for CompactHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompactHandle")
            .field("rev", &self.rev)
            .field("done", &self.is_done())
            .finish()
    }
}

impl CompactHandle {
    /// The compaction revision.
    pub fn rev(&self) -> i64 {
        self.rev
    }

    /// Whether the physical compaction has finished (successfully or not).
    pub fn is_done(&self) -> bool {
        self.done.done.load(Ordering::SeqCst)
    }

    /// Blocks until the physical compaction has finished; returns its outcome.
    pub fn wait(self) -> Result<(), MvccError> {
        let mut slot = self.done.result.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = slot.take() {
                return r;
            }
            slot = self.done.cv.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A consistent read-only view at one revision. Reads in it fail with
/// [`MvccError::Compacted`] once a compaction passes its revision.
pub struct ReadView<'a> {
    inner: &'a Inner,
    snap: Result<ReadTxn, String>,
    rev: i64,
}

impl fmt::Debug for ReadView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadView")
            .field("rev", &self.rev)
            .finish_non_exhaustive()
    }
}

impl ReadView<'_> {
    /// The store revision this view reads at (and reports).
    pub fn rev(&self) -> i64 {
        self.rev
    }

    /// Reads `key` (`end: None`), every key `>= key` (`end: Some(b"")`), or `[key, end)`.
    pub fn range(
        &self,
        key: &[u8],
        end: Option<&[u8]>,
        opts: RangeOptions,
    ) -> Result<RangeResult, MvccError> {
        let snap = self
            .snap
            .as_ref()
            .map_err(|e| MvccError::Backend(backend::BackendError::Storage(e.clone())))?;
        range_keys(self.inner, snap, key, end, self.rev, opts)
    }
}

#[derive(Debug)]
enum Change {
    Put(KeyValue),
    Delete(Vec<u8>),
}

/// The write transaction. All its changes form one revision, `rev() + 1` at the start.
pub struct TxnWrite<'a> {
    inner: &'a Inner,
    txn: Option<WriteTxn<'a>>,
    begin_rev: i64,
    changes: Vec<Change>,
    undo: Vec<Undo>,
    error: Option<MvccError>,
    finished: bool,
    /// Operations the backend transaction already held from deferred revisions when this one
    /// began: if this one ends without a commit and added none, the deferred ones are kept.
    resumed_ops: usize,
    // Last, so it is released after `Drop::drop` and the fields above.
    _guard: MutexGuard<'a, ()>,
}

impl fmt::Debug for TxnWrite<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxnWrite")
            .field("begin_rev", &self.begin_rev)
            .field("changes", &self.changes.len())
            .finish_non_exhaustive()
    }
}

impl<'a> TxnWrite<'a> {
    /// The revision this transaction reads at: the store revision when it began, or that plus
    /// one once it has changed something (etcd's `Rev` plus pending changes) — the revision to
    /// report in a response header.
    pub fn rev(&self) -> i64 {
        if self.changes.is_empty() {
            self.begin_rev
        } else {
            self.begin_rev + 1
        }
    }

    /// The store revision when this transaction began.
    pub fn begin_rev(&self) -> i64 {
        self.begin_rev
    }

    /// Number of changes so far (the next change's sub revision).
    pub fn changes_len(&self) -> usize {
        self.changes.len()
    }

    /// The backend write transaction, to write other buckets (leases, auth, ...) atomically
    /// with this revision. Do not touch the `key` bucket through it, nor stage values (a dropped
    /// revision that staged nothing else would keep them). `None` if the backend
    /// could not start the transaction (then [`end`](Self::end) fails).
    pub fn backend_txn(&mut self) -> Option<&mut WriteTxn<'a>> {
        self.txn.as_mut()
    }

    fn poison(&mut self, e: MvccError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Reads as [`ReadView::range`] does, seeing this transaction's own changes.
    pub fn range(
        &self,
        key: &[u8],
        end: Option<&[u8]>,
        opts: RangeOptions,
    ) -> Result<RangeResult, MvccError> {
        if let Some(e) = &self.error {
            return Err(MvccError::Backend(backend::BackendError::Storage(
                e.to_string(),
            )));
        }
        let txn = self.txn.as_ref().ok_or_else(|| {
            MvccError::Backend(backend::BackendError::Storage(
                "no write transaction".into(),
            ))
        })?;
        range_keys(self.inner, txn, key, end, self.rev(), opts)
    }

    /// Puts `key = value` with `lease` (0 = none); returns the new key-value.
    pub fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> KeyValue {
        let rev = self.begin_rev + 1;
        let (create_revision, version) = match self.inner.state().index.get(key, rev) {
            Some(found) => (found.created.main, found.version.saturating_add(1)),
            None => (rev, 1),
        };
        let idx_rev = Revision::new(rev, self.changes.len() as i64);
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision,
            mod_revision: rev,
            version,
            value: value.to_vec(),
            lease,
        };
        if self.error.is_some() {
            return kv;
        }
        let stored = match self.txn.as_mut() {
            Some(t) => t.put(Bucket::Key, &idx_rev.to_bytes(), &kv.encode_to_vec()),
            None => return kv,
        };
        if let Err(e) = stored {
            self.poison(e.into());
            return kv;
        }
        match self.inner.state_mut().index.put(key, idx_rev) {
            Ok(u) => self.undo.push(u),
            Err(e) => {
                self.poison(MvccError::Corrupt(format!("index put: {e:?}")));
                return kv;
            }
        }
        self.changes.push(Change::Put(kv.clone()));
        kv
    }

    /// Deletes `key` (`end: None`), every key `>= key` (`end: Some(b"")`), or `[key, end)`.
    /// Returns how many keys were deleted and their previous key-values. Deleting nothing
    /// changes nothing.
    pub fn delete_range(&mut self, key: &[u8], end: Option<&[u8]>) -> (i64, Vec<KeyValue>) {
        if self.error.is_some() {
            return (0, Vec::new());
        }
        let at = self.rev();
        let (keys, revs) = self.inner.state().index.range(key, end, at);
        if keys.is_empty() {
            return (0, Vec::new());
        }
        let mut prev = Vec::with_capacity(keys.len());
        if let Some(t) = self.txn.as_ref() {
            for r in &revs {
                match t.get(Bucket::Key, &r.to_bytes()) {
                    Ok(Some(bytes)) => match decode_kv(&bytes) {
                        Ok(kv) => prev.push(kv),
                        Err(e) => {
                            self.poison(e);
                            return (0, Vec::new());
                        }
                    },
                    Ok(None) => {
                        self.poison(MvccError::Corrupt(format!(
                            "revision {}.{} is in the index but not in the backend",
                            r.main, r.sub
                        )));
                        return (0, Vec::new());
                    }
                    Err(e) => {
                        self.poison(e.into());
                        return (0, Vec::new());
                    }
                }
            }
        }
        let n = keys.len() as i64;
        for k in keys {
            self.delete(k);
        }
        (n, prev)
    }

    fn delete(&mut self, key: Vec<u8>) {
        if self.error.is_some() {
            return;
        }
        let rev = Revision::new(self.begin_rev + 1, self.changes.len() as i64);
        let tomb = KeyValue {
            key: key.clone(),
            ..Default::default()
        };
        let stored = match self.txn.as_mut() {
            Some(t) => t.put(
                Bucket::Key,
                &BucketKey::new(rev, true).to_bytes(),
                &tomb.encode_to_vec(),
            ),
            None => return,
        };
        if let Err(e) = stored {
            self.poison(e.into());
            return;
        }
        match self.inner.state_mut().index.tombstone(&key, rev) {
            Ok(u) => self.undo.push(u),
            Err(e) => {
                self.poison(MvccError::Corrupt(format!("index tombstone: {e:?}")));
                return;
            }
        }
        self.changes.push(Change::Delete(key));
    }

    /// Commits: writes `consistent_index` (if not 0) and `term` (if not 0) into `meta` in the
    /// same backend transaction as the changes, commits it, and publishes the new revision.
    /// Returns the events, in order: PUT with the new key-value, DELETE with a key-value that
    /// has only `key` and `mod_revision` (the deletion's revision).
    pub fn end(self, consistent_index: u64, term: u64) -> Result<Vec<Event>, MvccError> {
        self.finish(consistent_index, term, false)
    }

    /// Like [`end`](Self::end), but leaves the backend transaction open for the next write
    /// transaction and publishes nothing: the revision becomes visible to readers and watchers
    /// with [`KvStore::flush`] (or the next [`end`](Self::end)). Later write transactions see it.
    /// `on_events` gets the events.
    ///
    /// **Tradeoff.** A backend commit costs far more than the changes of a small request
    /// (it checksums and writes back every dirty page), so a caller applying many requests in a
    /// row ends each with this and flushes once: one publication per batch instead of a commit per
    /// request.
    /// The price is that nothing in the batch may be acknowledged before the flush.
    pub fn end_deferred(
        self,
        consistent_index: u64,
        term: u64,
        on_events: impl FnOnce(&[Event]),
    ) -> Result<(), MvccError> {
        let events = self.finish(consistent_index, term, true)?;
        on_events(&events);
        Ok(())
    }

    fn finish(
        mut self,
        consistent_index: u64,
        term: u64,
        defer: bool,
    ) -> Result<Vec<Event>, MvccError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let Some(mut txn) = self.txn.take() else {
            return Err(MvccError::Backend(backend::BackendError::Storage(
                "no write transaction".into(),
            )));
        };
        // Staged, not put: in a batch only the last entry's values reach the file, and the
        // commit that ends the batch, whoever makes it, writes them with the batch's data.
        if consistent_index != 0 {
            txn.stage(
                Bucket::Meta,
                META_CONSISTENT_INDEX,
                &consistent_index.to_be_bytes(),
            );
            if term != 0 {
                txn.stage(Bucket::Meta, META_TERM, &term.to_be_bytes());
            }
        }
        let rev = self.begin_rev + 1;
        // Built before the commit so they can be handed to the watchers; if the commit fails,
        // `Drop` still undoes the index from `undo`.
        let events: Vec<Event> = std::mem::take(&mut self.changes)
            .into_iter()
            .map(|c| match c {
                Change::Put(kv) => Event {
                    r#type: EventType::Put as i32,
                    kv: Some(kv),
                    prev_kv: None,
                },
                Change::Delete(key) => Event {
                    r#type: EventType::Delete as i32,
                    kv: Some(KeyValue {
                        key,
                        mod_revision: rev,
                        ..Default::default()
                    }),
                    prev_kv: None,
                },
            })
            .collect();
        if defer {
            txn.defer();
            self.finished = true;
            let mut u = self.inner.unpublished();
            u.pending = true;
            u.undo.append(&mut self.undo);
            if !events.is_empty() {
                u.revs.push((rev, events.clone()));
            }
            return Ok(events);
        }
        if let Err(e) = txn.commit() {
            // The commit took the deferred revisions down with it.
            self.inner.discard_unpublished();
            return Err(e.into());
        }
        self.undo.clear();
        self.finished = true;
        self.inner.publish_unpublished();
        self.inner.publish(rev, &events);
        Ok(events)
    }
}

impl Drop for TxnWrite<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Newest first: this transaction's index changes, then (if they are lost with ours)
        // the deferred ones.
        {
            let mut st = self.inner.state_mut();
            while let Some(u) = self.undo.pop() {
                st.index.undo(u);
            }
        }
        if let Some(txn) = self.txn.take() {
            if txn.ops() == self.resumed_ops {
                // Nothing of ours in it: keep the deferred revisions' changes for the flush.
                txn.defer();
            } else if self.resumed_ops == 0 {
                // No deferred changes in it: another writer (a forced commit, the compactor, a
                // defragmentation) committed them since, and the flush still publishes them.
                drop(txn);
            } else {
                // Aborting ours aborts the deferred ones too, and their requests may already
                // count as applied (or, published by a flush, have been answered): a later
                // revision must not take their place. The member stops and applies them again
                // from its log. Since flushes publish without committing, the deferred ones are
                // usually there, so a request that fails after it wrote stops the member; the
                // requests' pre-checks make that a backend failure only (a savepoint per request
                // would keep the member up at the cost of one per request).
                drop(txn);
                self.inner.discard_unpublished();
                self.inner
                    .backend
                    .fail("a write transaction was dropped with deferred revisions in it");
            }
        }
    }
}
