//! Watcher groups (which watchers want a key) and event batches (what one watcher gets in one
//! response), as etcd's `watcher_group.go`.
//!
//! A group indexes watchers by what they watch: single keys in a hash map, ranges in an ordered
//! map keyed by `(start, end)`, so watchers on the same range share one entry. Finding the
//! watchers of a key is a hash lookup plus a scan of the distinct ranges that start at or
//! before the key (etcd uses an interval tree; the usual workloads have few distinct ranges,
//! and many watchers on the same prefix cost one entry).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use crate::Event;

/// A watcher's identity inside the store: unique for the store's life, never reused (unlike
/// watch ids, which clients choose per stream).
pub(crate) type WatcherKey = u64;

/// The end of a watched range.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum End {
    /// Up to this key, excluded.
    Before(Vec<u8>),
    /// Every key from the start on (etcd's "from key", `range_end = "\0"`). Orders after
    /// every `Before`, which the range lookup relies on.
    Unbounded,
}

/// What a watcher watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyRange {
    Key(Vec<u8>),
    Range(Vec<u8>, End),
}

impl KeyRange {
    /// `end`: `None` for the single key, `Some(b"")` for every key `>= key`, else `[key, end)`
    /// (the conventions of [`crate::ReadView::range`]).
    pub(crate) fn new(key: Vec<u8>, end: Option<Vec<u8>>) -> KeyRange {
        match end {
            None => KeyRange::Key(key),
            Some(e) if e.is_empty() => KeyRange::Range(key, End::Unbounded),
            Some(e) => KeyRange::Range(key, End::Before(e)),
        }
    }
}

/// A set of watchers, indexed by what they watch.
#[derive(Debug, Default)]
pub(crate) struct WatcherGroup {
    keys: HashMap<Vec<u8>, HashSet<WatcherKey>>,
    ranges: BTreeMap<(Vec<u8>, End), HashSet<WatcherKey>>,
    /// Ordered, so catch-up can go round the group fairly (see [`WatcherGroup::pick`]).
    members: BTreeSet<WatcherKey>,
}

impl WatcherGroup {
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub(crate) fn add(&mut self, w: WatcherKey, r: &KeyRange) {
        if !self.members.insert(w) {
            return;
        }
        match r {
            KeyRange::Key(k) => {
                self.keys.entry(k.clone()).or_default().insert(w);
            }
            KeyRange::Range(s, e) => {
                self.ranges
                    .entry((s.clone(), e.clone()))
                    .or_default()
                    .insert(w);
            }
        }
    }

    /// Removes `w` (which watches `r`); false if it was not in the group.
    pub(crate) fn remove(&mut self, w: WatcherKey, r: &KeyRange) -> bool {
        if !self.members.remove(&w) {
            return false;
        }
        match r {
            KeyRange::Key(k) => {
                if let Some(set) = self.keys.get_mut(k) {
                    set.remove(&w);
                    if set.is_empty() {
                        self.keys.remove(k);
                    }
                }
            }
            KeyRange::Range(s, e) => {
                let entry = (s.clone(), e.clone());
                if let Some(set) = self.ranges.get_mut(&entry) {
                    set.remove(&w);
                    if set.is_empty() {
                        self.ranges.remove(&entry);
                    }
                }
            }
        }
        true
    }

    /// Calls `f` once for each watcher whose range contains `key`.
    pub(crate) fn for_each_matching(&self, key: &[u8], mut f: impl FnMut(WatcherKey)) {
        if let Some(set) = self.keys.get(key) {
            set.iter().for_each(|w| f(*w));
        }
        if self.ranges.is_empty() {
            return;
        }
        // Every range starting at or before `key`; `(key, Unbounded)` is the largest such entry.
        let upper = (key.to_vec(), End::Unbounded);
        for ((_, end), set) in self
            .ranges
            .range((Bound::Unbounded, Bound::Included(&upper)))
        {
            let inside = match end {
                End::Unbounded => true,
                End::Before(e) => key < e.as_slice(),
            };
            if inside {
                set.iter().for_each(|w| f(*w));
            }
        }
    }

    /// Whether some watcher of the group wants `key`.
    pub(crate) fn matches(&self, key: &[u8]) -> bool {
        if self.keys.contains_key(key) {
            return true;
        }
        if self.ranges.is_empty() {
            return false;
        }
        let upper = (key.to_vec(), End::Unbounded);
        self.ranges
            .range((Bound::Unbounded, Bound::Included(&upper)))
            .any(|((_, end), _)| match end {
                End::Unbounded => true,
                End::Before(e) => key < e.as_slice(),
            })
    }

    /// Up to `limit` members, starting after `cursor` and wrapping around, so that successive
    /// rounds over a group larger than `limit` reach every member.
    pub(crate) fn pick(&self, limit: usize, cursor: Option<WatcherKey>) -> Vec<WatcherKey> {
        match cursor {
            Some(c) => self
                .members
                .range((Bound::Excluded(c), Bound::Unbounded))
                .chain(self.members.range((Bound::Unbounded, Bound::Included(c))))
                .take(limit)
                .copied()
                .collect(),
            None => self.members.iter().take(limit).copied().collect(),
        }
    }
}

/// The events one watcher gets in one response: whole revisions, at most `max_revs` of them
/// (etcd's `watchBatchMaxRevs`); `more_rev` is the first revision left out, 0 if none was.
#[derive(Debug, Default)]
pub(crate) struct EventBatch {
    pub(crate) events: Vec<Arc<Event>>,
    revs: usize,
    bytes: usize,
    pub(crate) more_rev: i64,
}

fn mod_rev(e: &Event) -> i64 {
    e.kv.as_ref().map(|kv| kv.mod_revision).unwrap_or(0)
}

fn size(e: &Event) -> usize {
    e.kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len())
}

impl EventBatch {
    /// Adds `ev`, which is not older than the events already added, unless the batch already
    /// holds `max_revs` revisions or `max_bytes` of keys and values: then `more_rev` is set to
    /// the first revision left out. A revision is never split.
    pub(crate) fn add(&mut self, ev: &Arc<Event>, max_revs: usize, max_bytes: usize) {
        if self.more_rev != 0 {
            return;
        }
        let Some(last) = self.events.last() else {
            self.revs = 1;
            self.bytes = size(ev);
            self.events.push(ev.clone());
            return;
        };
        let rev = mod_rev(ev);
        if rev > mod_rev(last) {
            if self.revs >= max_revs || self.bytes >= max_bytes {
                self.more_rev = rev;
                return;
            }
            self.revs += 1;
        }
        self.bytes += size(ev);
        self.events.push(ev.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyValue;

    fn ev(key: &str, rev: i64) -> Arc<Event> {
        Arc::new(Event {
            kv: Some(KeyValue {
                key: key.into(),
                mod_revision: rev,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn matching(g: &WatcherGroup, key: &str) -> Vec<WatcherKey> {
        let mut v = Vec::new();
        g.for_each_matching(key.as_bytes(), |w| v.push(w));
        v.sort();
        v
    }

    #[test]
    fn group_matches_keys_ranges_and_from_key() {
        let mut g = WatcherGroup::default();
        let single = KeyRange::new(b"b".to_vec(), None);
        let range = KeyRange::new(b"a".to_vec(), Some(b"c".to_vec()));
        let same_range = range.clone();
        let from = KeyRange::new(b"b".to_vec(), Some(Vec::new()));
        g.add(1, &single);
        g.add(2, &range);
        g.add(3, &same_range);
        g.add(4, &from);
        assert_eq!(matching(&g, "a"), vec![2, 3]);
        assert_eq!(matching(&g, "b"), vec![1, 2, 3, 4]);
        assert_eq!(matching(&g, "bz"), vec![2, 3, 4]);
        assert_eq!(matching(&g, "c"), vec![4]);
        assert_eq!(matching(&g, "0"), Vec::<WatcherKey>::new());
        assert!(g.matches(b"zzz") && !g.matches(b"0"));
        assert!(g.remove(2, &range));
        assert!(!g.remove(2, &range));
        assert_eq!(matching(&g, "a"), vec![3]);
        assert!(g.remove(3, &same_range));
        assert!(!g.matches(b"a"));
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn pick_goes_round_the_group() {
        let mut g = WatcherGroup::default();
        for w in 0..5 {
            g.add(w, &KeyRange::new(vec![w as u8], None));
        }
        assert_eq!(g.pick(2, None), vec![0, 1]);
        assert_eq!(g.pick(2, Some(1)), vec![2, 3]);
        assert_eq!(g.pick(2, Some(3)), vec![4, 0]);
        assert_eq!(g.pick(10, Some(3)), vec![4, 0, 1, 2, 3]);
    }

    #[test]
    fn batch_keeps_whole_revisions_up_to_the_limit() {
        let mut b = EventBatch::default();
        for (k, r) in [("a", 2), ("b", 2), ("a", 3), ("a", 4), ("b", 4), ("c", 5)] {
            b.add(&ev(k, r), 2, usize::MAX);
        }
        let revs: Vec<i64> = b.events.iter().map(|e| mod_rev(e)).collect();
        assert_eq!(revs, vec![2, 2, 3]);
        assert_eq!(b.more_rev, 4);
    }

    #[test]
    fn batch_stops_at_a_byte_bound_between_revisions() {
        let mut b = EventBatch::default();
        // Each event is 1 byte of key; the bound is reached inside revision 3, which is kept
        // whole.
        for (k, r) in [("a", 2), ("b", 3), ("c", 3), ("d", 3), ("e", 4)] {
            b.add(&ev(k, r), 100, 2);
        }
        let revs: Vec<i64> = b.events.iter().map(|e| mod_rev(e)).collect();
        assert_eq!(revs, vec![2, 3, 3, 3]);
        assert_eq!(b.more_rev, 4);
    }
}
