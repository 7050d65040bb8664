//! The serializable-read cache (etcd's `grpcproxy/cache`), with a freshness rule etcd's lacks.
//!
//! # What is cached
//!
//! Range answers for requests at the latest revision (`revision == 0`), keyed by the whole request
//! as encoded (with `serializable` set, so a linearizable read fills the entry a serializable one
//! then hits). Only serializable requests are answered from it; linearizable ones always go to the
//! cluster. Requests at an explicit revision are not cached: their answer never changes, but a
//! compaction made elsewhere turns it into `ErrCompacted`, which the proxy cannot see.
//!
//! # Freshness
//!
//! The proxy watches the whole key space (one upstream watcher, see `watch::mux`), and every event
//! invalidates the entries whose range holds its key. `through` is the revision up to which events
//! have been applied. An entry fetched at revision `r` that no event in `(r, through]` touched is
//! the answer at every revision of `[r, through]`, so a hit is answered with header revision
//! `max(r, through)`: a truthful revision, and never lower than an earlier hit's.
//!
//! A hit is only served when `through` has reached every revision the proxy has already passed on
//! to a client (`Upstream::seen`: answers of writes and reads, watch events). So a client that
//! wrote through the proxy, or saw a watch event, never reads an older state from the cache; while
//! the invalidation watch lags (a write in flight), reads go upstream. In a write-heavy cluster the
//! hit rate drops accordingly: that is the price of the rule.
//!
//! The proxy's own writes invalidate their keys as soon as their answer arrives, before the
//! client sees it (redundant with the rule above, but it keeps a stalled watch from serving
//! anything written through the proxy).
//!
//! # The insert race
//!
//! A Range sent before a write can answer after the write's invalidation; inserting that answer
//! would bring the old value back. Each invalidation is therefore kept in a short log (revision and
//! range); an answer at revision `r` is only inserted if no logged invalidation after `r` overlaps
//! its range, and answers older than the log are not inserted at all.
//!
//! # Bounds and eviction
//!
//! At most `max_bytes` of encoded answers, least recently used evicted first. Lookups of the
//! entries an event touches: single-key entries are found by key in a hash map; range entries
//! (prefixes, from-key) are scanned, on the assumption that they are few next to single keys.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use api::etcdserverpb::RangeRequest;
use api::etcdserverpb::RangeResponse;
use prost::Message as _;

/// Invalidations remembered for the insert race.
const LOG_LEN: usize = 4096;

type ReqKey = Arc<[u8]>;

struct Entry {
    resp: RangeResponse,
    rev: i64,
    bytes: usize,
    tick: u64,
    key: Vec<u8>,
    end: Vec<u8>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<ReqKey, Entry>,
    lru: BTreeMap<u64, ReqKey>,
    points: HashMap<Vec<u8>, HashSet<ReqKey>>,
    spans: HashSet<ReqKey>,
    bytes: usize,
    tick: u64,
    /// Events up to this revision have been applied.
    through: i64,
    log: VecDeque<(i64, Vec<u8>, Vec<u8>)>,
    /// Answers below this revision are not inserted (older than the log).
    floor: i64,
}

pub struct Cache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

/// Whether `[k1, e1)` and `[k2, e2)` share a key, with etcd's range conventions (empty end: the
/// one key; `"\0"`: to the end of the key space).
pub fn overlaps(k1: &[u8], e1: &[u8], k2: &[u8], e2: &[u8]) -> bool {
    fn contains(k: &[u8], e: &[u8], x: &[u8]) -> bool {
        match e {
            [] => k == x,
            [0] => x >= k,
            _ => x >= k && x < e,
        }
    }
    match (e1, e2) {
        ([], _) => contains(k2, e2, k1),
        (_, []) => contains(k1, e1, k2),
        _ => {
            // Both are ranges: each starts before the other ends.
            let before_end = |k: &[u8], e: &[u8]| e == [0] || k < e;
            before_end(k1, e2) && before_end(k2, e1)
        }
    }
}

impl Cache {
    pub fn new(max_bytes: usize) -> Cache {
        Cache {
            inner: Mutex::new(Inner::default()),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key a request is cached under, or None if such requests are not cached.
    pub fn key_of(req: &RangeRequest) -> Option<ReqKey> {
        if req.revision != 0 {
            return None;
        }
        let mut r = req.clone();
        r.serializable = true;
        Some(r.encode_to_vec().into())
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The revision up to which invalidations are applied.
    pub fn through(&self) -> i64 {
        self.lock().through
    }

    /// The cached answer, if it is at least as new as `seen`.
    pub fn get(&self, key: &ReqKey, seen: i64) -> Option<RangeResponse> {
        let mut g = self.lock();
        if g.through < seen {
            return None;
        }
        g.tick += 1;
        let tick = g.tick;
        let through = g.through;
        let e = g.entries.get_mut(key)?;
        let old = std::mem::replace(&mut e.tick, tick);
        let mut resp = e.resp.clone();
        let rev = e.rev.max(through);
        if let Some(h) = &mut resp.header {
            h.revision = rev;
        }
        let k = key.clone();
        g.lru.remove(&old);
        g.lru.insert(tick, k);
        Some(resp)
    }

    /// Stores the answer to a request over `[key, end)`, unless an invalidation after its revision
    /// touched that range.
    pub fn insert(&self, req_key: ReqKey, key: &[u8], end: &[u8], resp: &RangeResponse) {
        let rev = resp.header.as_ref().map_or(0, |h| h.revision);
        let bytes = resp.encoded_len() + req_key.len() + 64;
        if bytes > self.max_bytes {
            return;
        }
        let mut g = self.lock();
        if rev < g.floor
            || g.log
                .iter()
                .rev()
                .take_while(|(r, _, _)| *r > rev)
                .any(|(_, k, e)| overlaps(k, e, key, end))
        {
            return;
        }
        g.remove(&req_key);
        g.tick += 1;
        let tick = g.tick;
        if end.is_empty() {
            g.points
                .entry(key.to_vec())
                .or_default()
                .insert(req_key.clone());
        } else {
            g.spans.insert(req_key.clone());
        }
        g.lru.insert(tick, req_key.clone());
        g.bytes += bytes;
        g.entries.insert(
            req_key,
            Entry {
                resp: resp.clone(),
                rev,
                bytes,
                tick,
                key: key.to_vec(),
                end: end.to_vec(),
            },
        );
        while g.bytes > self.max_bytes {
            let Some((_, k)) = g.lru.pop_first() else {
                break;
            };
            g.remove(&k);
        }
    }

    /// Drops the entries over `[key, end)` older than `rev`, and remembers the invalidation.
    pub fn invalidate(&self, key: &[u8], end: &[u8], rev: i64) {
        let mut g = self.lock();
        let mut doomed: Vec<ReqKey> = Vec::new();
        if end.is_empty() {
            if let Some(set) = g.points.get(key) {
                doomed.extend(set.iter().cloned());
            }
        } else {
            for (k, set) in &g.points {
                if overlaps(k, &[], key, end) {
                    doomed.extend(set.iter().cloned());
                }
            }
        }
        for s in &g.spans {
            if let Some(e) = g.entries.get(s) {
                if overlaps(&e.key, &e.end, key, end) {
                    doomed.push(s.clone());
                }
            }
        }
        for d in doomed {
            if g.entries.get(&d).is_some_and(|e| e.rev < rev) {
                g.remove(&d);
            }
        }
        g.log.push_back((rev, key.to_vec(), end.to_vec()));
        while g.log.len() > LOG_LEN {
            if let Some((r, _, _)) = g.log.pop_front() {
                g.floor = g.floor.max(r);
            }
        }
    }

    /// Every event up to `rev` has been applied.
    pub fn advance(&self, rev: i64) {
        let mut g = self.lock();
        g.through = g.through.max(rev);
    }

    /// Forgets everything: events were lost (the invalidation watch could not resume). Answers
    /// older than `rev` are not inserted any more.
    pub fn reset(&self, rev: i64) {
        let mut g = self.lock();
        let through = g.through.max(rev);
        *g = Inner {
            through,
            floor: through,
            ..Inner::default()
        };
    }
}

impl Inner {
    fn remove(&mut self, k: &ReqKey) {
        let Some(e) = self.entries.remove(k) else {
            return;
        };
        self.bytes -= e.bytes;
        self.lru.remove(&e.tick);
        if e.end.is_empty() {
            if let Some(set) = self.points.get_mut(&e.key) {
                set.remove(k);
                if set.is_empty() {
                    self.points.remove(&e.key);
                }
            }
        } else {
            self.spans.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::etcdserverpb::ResponseHeader;
    use api::mvccpb::KeyValue;

    fn req(key: &[u8], end: &[u8]) -> RangeRequest {
        RangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            serializable: true,
            ..Default::default()
        }
    }

    fn resp(rev: i64, value: &[u8]) -> RangeResponse {
        RangeResponse {
            header: Some(ResponseHeader {
                revision: rev,
                ..Default::default()
            }),
            kvs: vec![KeyValue {
                key: b"k".to_vec(),
                value: value.to_vec(),
                ..Default::default()
            }],
            count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn overlap_follows_etcd_range_conventions() {
        assert!(overlaps(b"a", b"", b"a", b""));
        assert!(!overlaps(b"a", b"", b"b", b""));
        assert!(overlaps(b"b", b"", b"a", b"c"));
        assert!(!overlaps(b"c", b"", b"a", b"c"));
        assert!(overlaps(b"z", b"", b"a", b"\0"));
        assert!(overlaps(b"a", b"c", b"b", b"\0"));
        assert!(!overlaps(b"a", b"b", b"b", b"c"));
    }

    #[test]
    fn hit_needs_the_watch_to_have_reached_every_revision_seen() {
        let c = Cache::new(1 << 20);
        let k = Cache::key_of(&req(b"k", b"")).unwrap();
        c.insert(k.clone(), b"k", b"", &resp(5, b"v"));
        c.advance(5);
        assert!(c.get(&k, 6).is_none(), "the proxy saw 6, the watch only 5");
        c.advance(7);
        let hit = c.get(&k, 6).expect("fresh through 7");
        assert_eq!(hit.header.unwrap().revision, 7, "answer is true at 7");
        assert_eq!(hit.kvs[0].value, b"v");
    }

    #[test]
    fn an_event_drops_older_entries_of_its_key_only() {
        let c = Cache::new(1 << 20);
        let k = Cache::key_of(&req(b"k", b"")).unwrap();
        let p = Cache::key_of(&req(b"a", b"\0")).unwrap();
        let other = Cache::key_of(&req(b"x", b"")).unwrap();
        c.insert(k.clone(), b"k", b"", &resp(5, b"v"));
        c.insert(p.clone(), b"a", b"\0", &resp(5, b"v"));
        c.insert(other.clone(), b"x", b"", &resp(5, b"v"));
        c.invalidate(b"k", b"", 6);
        c.advance(6);
        assert!(c.get(&k, 0).is_none());
        assert!(c.get(&p, 0).is_none(), "the from-key range holds k");
        assert!(c.get(&other, 0).is_some());
        // An entry already newer than the event stays.
        c.insert(k.clone(), b"k", b"", &resp(9, b"w"));
        c.invalidate(b"k", b"", 8);
        assert!(c.get(&k, 0).is_some());
    }

    #[test]
    fn an_answer_older_than_a_logged_invalidation_is_not_inserted() {
        let c = Cache::new(1 << 20);
        let k = Cache::key_of(&req(b"k", b"")).unwrap();
        c.invalidate(b"k", b"", 10);
        c.insert(k.clone(), b"k", b"", &resp(9, b"old"));
        assert!(c.is_empty());
        c.insert(k.clone(), b"k", b"", &resp(10, b"new"));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn size_bound_evicts_least_recently_used() {
        let one = resp(1, &[0; 1000]).encoded_len() + 200;
        let c = Cache::new(3 * one);
        let keys: Vec<_> = (0..4u8)
            .map(|i| Cache::key_of(&req(&[b'k', i], b"")).unwrap())
            .collect();
        for (i, k) in keys.iter().enumerate().take(3) {
            c.insert(k.clone(), &[b'k', i as u8], b"", &resp(1, &[0; 1000]));
        }
        c.advance(1);
        assert!(c.get(&keys[0], 0).is_some(), "touch k0");
        c.insert(keys[3].clone(), b"k\x03", b"", &resp(1, &[0; 1000]));
        assert!(c.get(&keys[1], 0).is_none(), "k1 was least recently used");
        assert!(c.get(&keys[0], 0).is_some());
        assert!(c.get(&keys[3], 0).is_some());
    }

    #[test]
    fn requests_at_a_revision_are_not_cached() {
        let mut r = req(b"k", b"");
        r.revision = 3;
        assert!(Cache::key_of(&r).is_none());
    }
}
