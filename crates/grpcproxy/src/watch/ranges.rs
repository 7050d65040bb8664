//! Every watched key range of the proxy (etcd's `watchRanges`): one `RangeState` per distinct
//! `(key, range_end)`, shared by every client watcher on that range, whichever stream it came on.
//!
//! Locks: the map's lock, then a range's. Adding and removing a client watcher take both (so a
//! range is never dropped while a watcher joins it); upstream responses take only the range's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use api::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};

use crate::metrics::Metrics;
use crate::watch::broadcast::{FeedId, RangeState, SubId, SubSpec};
use crate::watch::mux::{FeedSink, SinkCommands, WatchMux};

type RangeKey = (Vec<u8>, Vec<u8>);

pub struct WatchRanges {
    mux: Arc<WatchMux>,
    metrics: Arc<Metrics>,
    ranges: Mutex<HashMap<RangeKey, Arc<RangeEntry>>>,
    next_sub: AtomicU64,
    /// The mux is this group's alone (see `groups`): stopped when the group is dropped.
    owns_mux: bool,
}

impl Drop for WatchRanges {
    fn drop(&mut self) {
        if self.owns_mux {
            self.mux.stop();
        }
    }
}

/// One range: its state machine behind its lock.
pub struct RangeEntry {
    state: Mutex<RangeState>,
    mux: Arc<WatchMux>,
    metrics: Arc<Metrics>,
    me: Weak<RangeEntry>,
}

impl RangeEntry {
    fn lock(&self) -> MutexGuard<'_, RangeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&mut RangeState, &SinkCommands<'_>, &Metrics) -> R,
    ) -> Option<R> {
        let sink: Arc<dyn FeedSink> = self.me.upgrade()?;
        let cmds = SinkCommands {
            mux: &self.mux,
            sink,
        };
        let mut st = self.lock();
        Some(f(&mut st, &cmds, &self.metrics))
    }

    /// The revision up to which client watcher `sub` has been sent every event.
    pub fn through_of(&self, sub: SubId) -> Option<i64> {
        self.lock().through_of(sub)
    }

    /// The client's queue drained: `sub` catches up if it was dropped.
    pub fn resync(&self, sub: SubId) {
        self.with(|st, cmds, m| st.resync(sub, cmds, m));
    }
}

impl FeedSink for RangeEntry {
    fn on_response(&self, id: FeedId, resp: WatchResponse) {
        self.with(|st, cmds, m| st.on_response(id, resp, cmds, m));
    }

    fn on_progress_all(&self, id: FeedId, rev: i64) {
        self.with(|st, cmds, m| st.on_progress_all(id, rev, cmds, m));
    }

    fn resume(&self, id: FeedId) -> Option<WatchCreateRequest> {
        self.lock().resume_request(id)
    }
}

impl WatchRanges {
    pub fn new(mux: Arc<WatchMux>, metrics: Arc<Metrics>, owns_mux: bool) -> WatchRanges {
        WatchRanges {
            mux,
            metrics,
            ranges: Mutex::new(HashMap::new()),
            next_sub: AtomicU64::new(1),
            owns_mux,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<RangeKey, Arc<RangeEntry>>> {
        self.ranges.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn mux(&self) -> &Arc<WatchMux> {
        &self.mux
    }

    /// Adds a client watcher on `[key, end)` (cluster key space); returns its range and id.
    pub fn add(&self, key: Vec<u8>, end: Vec<u8>, spec: SubSpec) -> (Arc<RangeEntry>, SubId) {
        let id = self.next_sub.fetch_add(1, Ordering::Relaxed);
        let mut map = self.map();
        let entry = map
            .entry((key.clone(), end.clone()))
            .or_insert_with(|| {
                Arc::new_cyclic(|me| RangeEntry {
                    state: Mutex::new(RangeState::new(key, end, self.mux.header())),
                    mux: self.mux.clone(),
                    metrics: self.metrics.clone(),
                    me: me.clone(),
                })
            })
            .clone();
        entry.with(|st, cmds, m| st.add(id, spec, cmds, m));
        (entry, id)
    }

    /// Removes a client watcher; the header for its "canceled" answer, or None if the cluster
    /// had already ended it.
    pub fn remove(&self, entry: &Arc<RangeEntry>, sub: SubId) -> Option<ResponseHeader> {
        let mut map = self.map();
        let (header, empty) = entry
            .with(|st, cmds, m| (st.remove(sub, cmds, m), st.is_empty()))
            .unwrap_or((None, false));
        if empty {
            map.retain(|_, e| !Arc::ptr_eq(e, entry));
        }
        header
    }

    /// Distinct ranges watched.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
