//! Watch: streams of the store's changes, with etcd's `watchable_store.go` semantics.
//!
//! # Model
//!
//! A [`WatchStream`] carries many watchers and delivers their [`WatchResponse`]s, in order,
//! into one [`WatchSink`] (the server's bounded per-stream channel). A watcher watches a key, a
//! range `[key, end)` or every key from `key` on, from a start revision, and is always in
//! exactly one place:
//!
//! * **synced**: it has seen every revision up to the current one. When a write transaction
//!   ends, its events go to the synced watchers that want them, at once, as one response per
//!   watcher with the revision in the header ("notify"). A send never blocks: the sink is
//!   `try_send`.
//! * **unsynced**: it needs history (a start revision at or below the current one, or it fell
//!   behind). Catch-up ([`WatchableStore::sync_unsynced`]) reads the events between its next
//!   revision and the current revision from the backend and sends them, then moves it to
//!   synced when nothing is left.
//! * **victim**: a send found its sink full. The watcher leaves its group holding that one
//!   batch of events, and [`WatchableStore::retry_victims`] tries it again; once delivered, the
//!   watcher goes to synced if nothing happened meanwhile, else to unsynced, where catch-up
//!   reads what it missed from the backend. Writes therefore never wait for a slow reader, and
//!   a slow reader costs at most one pending batch plus its sink's capacity.
//! * **compacted**: catch-up found its next revision below the compaction revision; it was sent
//!   a response with `compact_revision` set and gets nothing more (nor does it hold back a
//!   stream's progress notification, unlike in etcd).
//!
//! A negative start revision behaves as in etcd 3.4: on a store never compacted it replays no
//! history (the watcher goes live), otherwise it is below the compaction revision.
//!
//! A response never splits a revision: notify sends one revision; catch-up sends whole
//! revisions, at most `max_revs_per_response` of them (etcd's `watchBatchMaxRevs`, 1000). The
//! header revision is etcd's: the events' revision for notify, the store revision at the start
//! of the round for catch-up, and `next revision - 1` for a retried victim batch.
//!
//! # Invariants (no gaps, no duplicates)
//!
//! * Each watcher has `min_rev`, the first revision it has not been sent. Every event a watcher
//!   is sent has `mod_revision >= min_rev`, and sending advances `min_rev` past it.
//! * Publishing a new revision and notifying the synced watchers happen under one lock (the
//!   watchers' lock, etcd's `watchableStore.mu`), taken inside [`crate::TxnWrite::end`] after
//!   the backend commit. Creating a watcher reads the current revision and joins a group under
//!   the same lock. So a watcher created concurrently with a write either sees the old
//!   revision (it is synced with `min_rev` = that revision and gets it from notify) or the new
//!   one (then it starts after it, or catch-up reads it from the backend, where it already is).
//! * Only synced watchers are notified; an unsynced watcher moves to synced only under the lock
//!   and only if its `min_rev` is above the current revision, so nothing published between
//!   the catch-up read and the move is lost.
//!
//! # Bounds
//!
//! * A catch-up round takes at most `max_watchers_per_sync` (512) unsynced watchers, going round
//!   the group fairly, and reads at most `max_records_per_sync` backend records and
//!   `max_bytes_per_sync` bytes of them (extended to the end of the revision in progress); a
//!   catch-up response holds at most `max_bytes_per_response` of keys and values (again whole
//!   revisions), so what a round or a victim holds does not grow with value sizes. It reads from a backend snapshot *without* the
//!   watchers' lock, so writes keep flowing during the read (etcd holds its lock across the
//!   read); what it learned is applied under the lock afterwards, skipping watchers cancelled
//!   meanwhile and, if a compaction passed a watcher's revision meanwhile, leaving that watcher
//!   for the next round (which sends it the compaction response).
//! * Events are shared (`Arc`) between the watchers of one notify or one round.
//!
//! # Threads
//!
//! [`WatchableStore::spawn`] starts one std thread (`mvcc-watch`) that retries victims every
//! 10 ms while there are any (at once when a write makes one) and runs a catch-up round every
//! 100 ms; when a round made progress and watchers remain unsynced, the next one starts after
//! a pause as long as the round took (etcd's fairness rule). The thread holds only a weak
//! reference to the [`KvStore`] and stops when the [`WatchableStore`] is dropped.
//! [`WatchableStore::new`] starts no thread: the caller drives the two calls (tests do).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::watcher_group::{EventBatch, KeyRange, WatcherGroup, WatcherKey};
use crate::{Event, EventType, KvStore};

/// A watcher's id on its stream, chosen by the client or assigned by the stream.
pub type WatchId = i64;
/// Asks the stream to pick the id (etcd's `clientv3.AutoWatchID`).
pub const AUTO_WATCH_ID: WatchId = 0;
/// The id of responses that belong to no single watcher (etcd's `clientv3.InvalidWatchID`).
pub const INVALID_WATCH_ID: WatchId = -1;

/// Drops events of one kind (etcd's `NOPUT` and `NODELETE` filters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFilter {
    NoPut,
    NoDelete,
}

/// One response for one watcher (or, with [`INVALID_WATCH_ID`], for a whole stream).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchResponse {
    pub watch_id: WatchId,
    /// In revision order; empty for a progress notification or a compaction.
    pub events: Vec<Arc<Event>>,
    /// The revision for the response header (see the module doc); 0 for a compaction.
    pub revision: i64,
    /// Set when the watcher was cancelled because its next revision was compacted.
    pub compact_revision: i64,
}

/// Where a stream's responses go. `try_send` must not block: it returns the response when the
/// sink is full, and the watcher becomes a victim. A sink whose reader is gone should accept
/// and drop everything (the stream is about to be closed anyway).
pub trait WatchSink: Send + Sync {
    fn try_send(&self, resp: WatchResponse) -> Result<(), WatchResponse>;
}

impl WatchSink for std::sync::mpsc::SyncSender<WatchResponse> {
    fn try_send(&self, resp: WatchResponse) -> Result<(), WatchResponse> {
        match std::sync::mpsc::SyncSender::try_send(self, resp) {
            Ok(()) | Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(r)) => Err(r),
        }
    }
}

/// Errors of [`WatchStream`], with etcd's texts (clients see them as `cancel_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("mvcc: watcher does not exist")]
    NotExist,
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
}

/// Tuning of catch-up and victim retries; the defaults are etcd's where etcd has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// Pause between catch-up rounds (etcd's `watchResyncPeriod`).
    pub sync_interval: Duration,
    /// Pause between victim retries while there are victims.
    pub victim_retry_interval: Duration,
    /// Unsynced watchers per catch-up round (etcd's `maxWatchersPerSync`).
    pub max_watchers_per_sync: usize,
    /// Backend records read per catch-up round, rounded up to a whole revision (etcd reads
    /// everything up to the current revision in one go).
    pub max_records_per_sync: usize,
    /// Revisions per catch-up response (etcd's `watchBatchMaxRevs`).
    pub max_revs_per_response: usize,
    /// Bytes of backend records read per catch-up round, rounded up to a whole revision (etcd
    /// has no such bound; it keeps a round's memory independent of value sizes).
    pub max_bytes_per_sync: usize,
    /// Bytes of keys and values per catch-up response, rounded up to a whole revision (etcd has
    /// no such bound; it keeps a slow stream's pending batch small).
    pub max_bytes_per_response: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            sync_interval: Duration::from_millis(100),
            victim_retry_interval: Duration::from_millis(10),
            max_watchers_per_sync: 512,
            max_records_per_sync: 10_000,
            max_revs_per_response: 1000,
            max_bytes_per_sync: 16 << 20,
            max_bytes_per_response: 2 << 20,
        }
    }
}

/// What one catch-up round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Watchers still unsynced after the round.
    pub remaining: usize,
    /// Watchers moved to synced.
    pub synced: usize,
    /// Watchers that advanced (were sent events or moved on) without being synced yet.
    pub advanced: usize,
    /// Watchers sent their compaction response.
    pub compacted: usize,
    /// Watchers that became victims.
    pub victims: usize,
}

/// How many watchers are where.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatcherCounts {
    pub synced: usize,
    pub unsynced: usize,
    pub victims: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Synced,
    Unsynced,
    Victim,
    Compacted,
}

struct Watcher {
    range: KeyRange,
    start_rev: i64,
    /// The first revision this watcher has not been sent.
    min_rev: i64,
    id: WatchId,
    filters: Vec<WatchFilter>,
    sink: Arc<dyn WatchSink>,
    place: Place,
}

impl Watcher {
    fn keeps(&self, e: &Event) -> bool {
        let put = e.r#type == EventType::Put as i32;
        !self.filters.iter().any(|f| match f {
            WatchFilter::NoPut => put,
            WatchFilter::NoDelete => !put,
        })
    }

    /// etcd's `watcher.send`: filters, sends nothing if the filters left nothing (unless it was
    /// a progress notification all along), and hands back the events if the sink is full.
    fn send(&self, revision: i64, events: Vec<Arc<Event>>) -> Result<(), Vec<Arc<Event>>> {
        let progress = events.is_empty();
        let events: Vec<Arc<Event>> = if self.filters.is_empty() {
            events
        } else {
            events.into_iter().filter(|e| self.keeps(e)).collect()
        };
        if !progress && events.is_empty() {
            return Ok(());
        }
        self.sink
            .try_send(WatchResponse {
                watch_id: self.id,
                events,
                revision,
                compact_revision: 0,
            })
            .map_err(|r| r.events)
    }
}

#[derive(Default)]
struct Groups {
    all: HashMap<WatcherKey, Watcher>,
    synced: WatcherGroup,
    unsynced: WatcherGroup,
    /// Each victim's one undelivered batch (already filtered).
    victims: HashMap<WatcherKey, Vec<Arc<Event>>>,
    next_key: WatcherKey,
    /// Where the last catch-up round stopped, so the next one goes on from there.
    sync_cursor: Option<WatcherKey>,
}

impl Groups {
    fn place(&mut self, wk: WatcherKey, to: Place) {
        let Some(w) = self.all.get_mut(&wk) else {
            return;
        };
        match w.place {
            Place::Synced => {
                self.synced.remove(wk, &w.range);
            }
            Place::Unsynced => {
                self.unsynced.remove(wk, &w.range);
            }
            Place::Victim | Place::Compacted => {}
        }
        match to {
            Place::Synced => self.synced.add(wk, &w.range),
            Place::Unsynced => self.unsynced.add(wk, &w.range),
            Place::Victim | Place::Compacted => {}
        }
        w.place = to;
    }

    /// etcd's `notify`: the events of revision `rev` to the synced watchers that want them.
    /// Returns whether a watcher became a victim.
    fn notify(&mut self, rev: i64, events: &[Event]) -> bool {
        if self.synced.is_empty() {
            return false;
        }
        let mut shared: Vec<Option<Arc<Event>>> = vec![None; events.len()];
        let mut batches: HashMap<WatcherKey, Vec<Arc<Event>>> = HashMap::new();
        let (synced, all) = (&self.synced, &self.all);
        for (i, ev) in events.iter().enumerate() {
            let Some(kv) = &ev.kv else { continue };
            synced.for_each_matching(&kv.key, |wk| {
                if all.get(&wk).is_some_and(|w| kv.mod_revision >= w.min_rev) {
                    let e = shared[i].get_or_insert_with(|| Arc::new(ev.clone()));
                    batches.entry(wk).or_default().push(e.clone());
                }
            });
        }
        let mut victims = false;
        for (wk, evs) in batches {
            let Some(w) = self.all.get_mut(&wk) else {
                continue;
            };
            w.min_rev = rev + 1;
            if let Err(evs) = w.send(rev, evs) {
                self.place(wk, Place::Victim);
                self.victims.insert(wk, evs);
                victims = true;
            }
        }
        victims
    }

    fn remove(&mut self, wk: WatcherKey) {
        self.place(wk, Place::Compacted);
        self.victims.remove(&wk);
        self.all.remove(&wk);
    }
}

/// The watchers of one store: the state behind [`WatchableStore`] and [`WatchStream`], attached
/// to the [`KvStore`] so that every write transaction notifies them.
#[derive(Default)]
pub(crate) struct Watchers {
    groups: Mutex<Groups>,
    /// Serializes catch-up rounds: two rounds must not deliver the same history twice.
    sync_lock: Mutex<()>,
    /// Set when a write made a victim; wakes the background thread.
    wake: Mutex<bool>,
    wake_cv: Condvar,
}

impl fmt::Debug for Watchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watchers").finish_non_exhaustive()
    }
}

impl Watchers {
    fn lock(&self) -> MutexGuard<'_, Groups> {
        self.groups.lock().expect("watchers lock poisoned")
    }

    fn wake(&self) {
        *self.wake.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake_cv.notify_all();
    }

    /// Held while no catch-up round may run (the store's content is being replaced).
    pub(crate) fn sync_lock(&self) -> MutexGuard<'_, ()> {
        self.sync_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// etcd's `watchableStore.Restore`: under the lock, `publish` makes the store's new content
    /// current and every synced watcher becomes unsynced, so that catch-up brings it from the
    /// revision it has not seen to the new current one (or sends it the compaction response).
    /// Victims keep their batch; once it is delivered they go to unsynced too.
    pub(crate) fn restore(&self, publish: impl FnOnce()) {
        let mut g = self.lock();
        publish();
        let synced: Vec<WatcherKey> = g
            .all
            .iter()
            .filter(|(_, w)| w.place == Place::Synced)
            .map(|(wk, _)| *wk)
            .collect();
        for wk in synced {
            g.place(wk, Place::Unsynced);
        }
        drop(g);
        self.wake();
    }

    /// Called by [`crate::TxnWrite::end`] after its commit: `publish` makes revision `rev`
    /// current, then its events go to the synced watchers, all under the lock.
    pub(crate) fn publish(&self, rev: i64, events: &[Event], publish: impl FnOnce()) {
        let victims = {
            let mut g = self.lock();
            publish();
            g.notify(rev, events)
        };
        if victims {
            self.wake();
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &self,
        kv: &KvStore,
        range: KeyRange,
        start_rev: i64,
        id: WatchId,
        filters: Vec<WatchFilter>,
        sink: Arc<dyn WatchSink>,
        on_created: impl FnOnce(i64),
    ) -> WatcherKey {
        let mut g = self.lock();
        let cur = kv.rev();
        let synced = start_rev > cur || start_rev == 0;
        let min_rev = if synced {
            (cur + 1).max(start_rev)
        } else {
            start_rev
        };
        let wk = g.next_key;
        g.next_key += 1;
        g.all.insert(
            wk,
            Watcher {
                range,
                start_rev,
                min_rev,
                id,
                filters,
                sink,
                place: Place::Compacted,
            },
        );
        g.place(
            wk,
            if synced {
                Place::Synced
            } else {
                Place::Unsynced
            },
        );
        // Still under the lock: whatever `on_created` sends reaches the sink before any event.
        on_created(cur);
        wk
    }

    fn cancel(&self, wk: WatcherKey) {
        self.lock().remove(wk);
    }

    /// etcd's `progressIfSync`: if every watcher in `wks` is synced (and not waiting for a
    /// future start revision), sends one empty response with the current revision through the
    /// first one's sink. Returns whether it was sent (etcd also says yes when the sink was
    /// full; we say no, so the caller can ask again). A watcher cancelled by compaction gets
    /// nothing more, so it does not hold the others' progress back (in etcd it does, forever).
    fn progress(&self, kv: &KvStore, wks: &[WatcherKey], resp_id: WatchId) -> bool {
        let g = self.lock();
        let cur = kv.rev();
        for wk in wks {
            match g.all.get(wk) {
                Some(w) if w.place == Place::Synced && cur >= w.start_rev => {}
                Some(w) if w.place == Place::Compacted => {}
                _ => return false,
            }
        }
        // A compacted watcher asked alone gets nothing (etcd removed it from its groups); the
        // stream-wide answer is the stream's, and goes through its one sink whichever watcher
        // holds it, even when every watcher left was compacted.
        let Some(w) = wks
            .iter()
            .filter_map(|wk| g.all.get(wk))
            .find(|w| resp_id == INVALID_WATCH_ID || w.place != Place::Compacted)
        else {
            return true;
        };
        w.sink
            .try_send(WatchResponse {
                watch_id: resp_id,
                revision: cur,
                ..Default::default()
            })
            .is_ok()
    }

    /// etcd's `moveVictims`: retries each victim's batch; a delivered one goes back to synced,
    /// or to unsynced if revisions were published meanwhile.
    fn retry_victims(&self, kv: &KvStore) -> usize {
        let mut g = self.lock();
        if g.victims.is_empty() {
            return 0;
        }
        let cur = kv.rev();
        let mut moved = 0;
        for (wk, evs) in std::mem::take(&mut g.victims) {
            let Some(w) = g.all.get(&wk) else { continue };
            // The watcher has seen the store up to, but not including, `min_rev`.
            let min_rev = w.min_rev;
            match w.send(min_rev - 1, evs) {
                Err(evs) => {
                    g.victims.insert(wk, evs);
                }
                Ok(()) => {
                    moved += 1;
                    let to = if min_rev <= cur {
                        Place::Unsynced
                    } else {
                        Place::Synced
                    };
                    g.place(wk, to);
                }
            }
        }
        moved
    }

    /// etcd's `syncWatchers`, in three steps: choose watchers under the lock (sending the
    /// compaction response to those behind the compaction), read their events without it,
    /// deliver under it.
    fn sync(&self, kv: &KvStore, cfg: &WatchConfig, limit: usize) -> SyncReport {
        let _one_round = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = SyncReport::default();

        let (chosen, from, cur) = {
            let mut g = self.lock();
            if g.unsynced.is_empty() {
                return report;
            }
            let cur = kv.rev();
            // etcd's compactMainRev: -1 before any compaction. A negative start revision is
            // below it once the store was compacted, and gets the compaction response.
            let compact = kv.first_rev();
            let picked = g.unsynced.pick(limit.max(1), g.sync_cursor);
            g.sync_cursor = picked.last().copied();
            let mut chosen = Vec::with_capacity(picked.len());
            let mut from = i64::MAX;
            for wk in picked {
                let Some(w) = g.all.get(&wk) else { continue };
                if w.min_rev < compact {
                    let resp = WatchResponse {
                        watch_id: w.id,
                        compact_revision: compact,
                        ..Default::default()
                    };
                    // A full sink: try again next round.
                    if w.sink.try_send(resp).is_ok() {
                        g.place(wk, Place::Compacted);
                        report.compacted += 1;
                    }
                    continue;
                }
                if w.min_rev < 0 {
                    // etcd 3.4 reads no history for a negative start revision (its range read
                    // from a negative revision is empty): the watcher goes live from now on.
                    if let Some(w) = g.all.get_mut(&wk) {
                        w.min_rev = cur + 1;
                    }
                    g.place(wk, Place::Synced);
                    report.synced += 1;
                    continue;
                }
                from = from.min(w.min_rev);
                chosen.push((wk, w.range.clone(), w.min_rev));
            }
            if chosen.is_empty() {
                report.remaining = g.unsynced.len();
                return report;
            }
            (chosen, from, cur)
        };

        let mut group = WatcherGroup::default();
        let mut min_revs = HashMap::with_capacity(chosen.len());
        for (wk, range, min_rev) in &chosen {
            group.add(*wk, range);
            min_revs.insert(*wk, *min_rev);
        }
        let read = kv.read_events(
            from,
            cur + 1,
            cfg.max_records_per_sync.max(1),
            cfg.max_bytes_per_sync.max(1),
            &mut |k| group.matches(k),
        );
        let (events, read_end, compact) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("watch catch-up cannot read revisions {from}..={cur}: {e}");
                report.remaining = self.lock().unsynced.len();
                return report;
            }
        };
        let mut batches: HashMap<WatcherKey, EventBatch> = HashMap::new();
        for ev in events.into_iter().map(Arc::new) {
            let Some(kv) = &ev.kv else { continue };
            group.for_each_matching(&kv.key, |wk| {
                if kv.mod_revision >= min_revs[&wk] {
                    batches.entry(wk).or_default().add(
                        &ev,
                        cfg.max_revs_per_response,
                        cfg.max_bytes_per_response,
                    );
                }
            });
        }

        let mut g = self.lock();
        let now = kv.rev();
        for (wk, _, _) in chosen {
            let Some(w) = g.all.get_mut(&wk) else {
                continue; // cancelled during the read
            };
            if w.place != Place::Unsynced || w.min_rev < compact {
                // A compaction passed it during the read: the next round says so.
                continue;
            }
            let batch = batches.remove(&wk).unwrap_or_default();
            w.min_rev = if batch.more_rev != 0 {
                batch.more_rev
            } else {
                w.min_rev.max(read_end)
            };
            let min_rev = w.min_rev;
            if !batch.events.is_empty() {
                if let Err(evs) = w.send(cur, batch.events) {
                    g.place(wk, Place::Victim);
                    g.victims.insert(wk, evs);
                    report.victims += 1;
                    continue;
                }
            }
            if min_rev > now {
                g.place(wk, Place::Synced);
                report.synced += 1;
            } else {
                report.advanced += 1;
            }
        }
        report.remaining = g.unsynced.len();
        drop(g);
        if report.victims > 0 {
            self.wake();
        }
        report
    }

    fn counts(&self) -> WatcherCounts {
        let g = self.lock();
        WatcherCounts {
            synced: g.synced.len(),
            unsynced: g.unsynced.len(),
            victims: g.victims.len(),
        }
    }
}

/// etcd's `watchableStore`: the watch side of a [`KvStore`]. All handles on one store share
/// its watchers.
pub struct WatchableStore {
    kv: Arc<KvStore>,
    watchers: Arc<Watchers>,
    cfg: WatchConfig,
    background: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl fmt::Debug for WatchableStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchableStore")
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

impl WatchableStore {
    /// Attaches to `kv` without a background thread: call [`sync_unsynced`](Self::sync_unsynced)
    /// and [`retry_victims`](Self::retry_victims) yourself.
    pub fn new(kv: Arc<KvStore>, cfg: WatchConfig) -> WatchableStore {
        let watchers = kv.watchers().clone();
        WatchableStore {
            kv,
            watchers,
            cfg,
            background: None,
        }
    }

    /// Attaches to `kv` and starts the `mvcc-watch` thread that drives catch-up and victim
    /// retries (see the module doc); it stops when this handle is dropped.
    pub fn spawn(kv: Arc<KvStore>, cfg: WatchConfig) -> std::io::Result<WatchableStore> {
        let mut s = WatchableStore::new(kv, cfg);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (kv, watchers, cfg, stop) = (
                Arc::downgrade(&s.kv),
                s.watchers.clone(),
                s.cfg.clone(),
                stop.clone(),
            );
            std::thread::Builder::new()
                .name("mvcc-watch".into())
                .spawn(move || background(kv, watchers, cfg, stop))?
        };
        s.background = Some((stop, thread));
        Ok(s)
    }

    /// The store watched.
    pub fn kv(&self) -> &Arc<KvStore> {
        &self.kv
    }

    /// A new stream whose responses all go to `sink`.
    pub fn watch_stream(&self, sink: Arc<dyn WatchSink>) -> WatchStream {
        WatchStream {
            kv: self.kv.clone(),
            watchers: self.watchers.clone(),
            sink,
            state: Mutex::new(StreamState::default()),
        }
    }

    /// One catch-up round over at most `limit` unsynced watchers.
    pub fn sync_unsynced(&self, limit: usize) -> SyncReport {
        self.watchers.sync(&self.kv, &self.cfg, limit)
    }

    /// Retries every victim's pending batch once; returns how many were delivered.
    pub fn retry_victims(&self) -> usize {
        self.watchers.retry_victims(&self.kv)
    }

    /// How many watchers are synced, unsynced and victims.
    pub fn counts(&self) -> WatcherCounts {
        self.watchers.counts()
    }
}

impl Drop for WatchableStore {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.background.take() {
            stop.store(true, Ordering::SeqCst);
            self.watchers.wake();
            let _ = thread.join();
        }
    }
}

fn background(kv: Weak<KvStore>, w: Arc<Watchers>, cfg: WatchConfig, stop: Arc<AtomicBool>) {
    let mut next_sync = Instant::now() + cfg.sync_interval;
    loop {
        let mut timeout = next_sync.saturating_duration_since(Instant::now());
        if w.counts().victims > 0 {
            timeout = timeout.min(cfg.victim_retry_interval);
        }
        {
            let mut woken = w.wake.lock().unwrap_or_else(|p| p.into_inner());
            if !*woken && !stop.load(Ordering::SeqCst) {
                woken = w
                    .wake_cv
                    .wait_timeout(woken, timeout)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            *woken = false;
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(kv) = kv.upgrade() else { return };
        while w.retry_victims(&kv) > 0 {}
        if Instant::now() >= next_sync {
            let started = Instant::now();
            let r = w.sync(&kv, &cfg, cfg.max_watchers_per_sync);
            let took = started.elapsed();
            // More work and it is moving: go on soon, but leave the store as much time as the
            // round took.
            let pause = if r.remaining > 0 && (r.synced + r.advanced + r.compacted) > 0 {
                took.max(Duration::from_millis(1))
            } else {
                cfg.sync_interval
            };
            next_sync = Instant::now() + pause;
        }
    }
}

#[derive(Default)]
struct StreamState {
    next_id: WatchId,
    closed: bool,
    ids: BTreeMap<WatchId, WatcherKey>,
}

/// etcd's `watchStream`: the watchers of one client stream, sharing one sink. Dropping it
/// cancels them.
pub struct WatchStream {
    kv: Arc<KvStore>,
    watchers: Arc<Watchers>,
    sink: Arc<dyn WatchSink>,
    state: Mutex<StreamState>,
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}

impl WatchStream {
    fn state(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().expect("watch stream lock poisoned")
    }

    /// Creates a watcher on `key` (`end: None`), every key `>= key` (`end: Some(b"")`) or
    /// `[key, end)`, from `start_rev` (0: the next revision; at or below the current revision:
    /// history first). `id` is [`AUTO_WATCH_ID`] or the client's choice, which must not be in
    /// use on this stream. `on_created(id, rev)` runs once the watcher is registered, with the
    /// store revision it was registered at, before any of its responses can reach the sink
    /// (so it can put the "created" message in the same ordered channel).
    pub fn watch(
        &self,
        id: WatchId,
        key: Vec<u8>,
        end: Option<Vec<u8>>,
        start_rev: i64,
        filters: Vec<WatchFilter>,
        on_created: impl FnOnce(WatchId, i64),
    ) -> Result<WatchId, WatchError> {
        if let Some(e) = &end {
            if !e.is_empty() && key >= *e {
                return Err(WatchError::EmptyRange);
            }
        }
        let mut st = self.state();
        if st.closed {
            // etcd's answer on a closed stream.
            return Err(WatchError::EmptyRange);
        }
        let id = if id == AUTO_WATCH_ID {
            while st.ids.contains_key(&st.next_id) {
                st.next_id += 1;
            }
            st.next_id += 1;
            st.next_id - 1
        } else if st.ids.contains_key(&id) {
            return Err(WatchError::DuplicateId);
        } else {
            id
        };
        let wk = self.watchers.add(
            &self.kv,
            KeyRange::new(key, end),
            start_rev,
            id,
            filters,
            self.sink.clone(),
            |rev| on_created(id, rev),
        );
        st.ids.insert(id, wk);
        Ok(id)
    }

    /// Cancels watcher `id`; once this returns, nothing more is sent for it.
    pub fn cancel(&self, id: WatchId) -> Result<(), WatchError> {
        let mut st = self.state();
        if st.closed {
            return Err(WatchError::NotExist);
        }
        let wk = st.ids.remove(&id).ok_or(WatchError::NotExist)?;
        self.watchers.cancel(wk);
        Ok(())
    }

    /// Sends an empty response with watcher `id` and the current revision, if that watcher is
    /// synced (etcd's periodic progress notification).
    pub fn request_progress(&self, id: WatchId) {
        let wk = self.state().ids.get(&id).copied();
        if let Some(wk) = wk {
            self.watchers.progress(&self.kv, &[wk], id);
        }
    }

    /// If every watcher of the stream is synced, sends one empty response with
    /// [`INVALID_WATCH_ID`] and the current revision, and returns true (also when the stream
    /// has no watchers, then sending nothing). Returns false if some watcher is not synced or
    /// the sink was full: the caller asks again later.
    pub fn request_progress_all(&self) -> bool {
        let st = self.state();
        let wks: Vec<WatcherKey> = st.ids.values().copied().collect();
        self.watchers.progress(&self.kv, &wks, INVALID_WATCH_ID)
    }

    /// The store's current revision.
    pub fn rev(&self) -> i64 {
        self.kv.rev()
    }

    /// Cancels every watcher; later `watch` calls fail.
    pub fn close(&self) {
        let mut st = self.state();
        for (_, wk) in std::mem::take(&mut st.ids) {
            self.watchers.cancel(wk);
        }
        st.closed = true;
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for (_, wk) in std::mem::take(&mut st.ids) {
            self.watchers.cancel(wk);
        }
        st.closed = true;
    }
}
