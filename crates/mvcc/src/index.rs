//! The in-memory key index: for every user key, the revisions at which it changed, grouped into
//! generations (etcd's `keyIndex` / `treeIndex`).
//!
//! A generation is one lifetime of a key: it starts with the put that created the key and, unless
//! it is the last generation, ends with the tombstone that deleted it. After a tombstone an empty
//! generation is appended, which the next put fills. Example, for put(1.0), put(2.0),
//! tombstone(3.0), put(4.0), tombstone(5.0):
//!
//! ```text
//! {empty}
//! {4.0, 5.0(t)}
//! {1.0, 2.0, 3.0(t)}
//! ```
//!
//! Compacting at revision `r` keeps, per key, the newest revision with `main <= r` and everything
//! after it, and drops whole generations whose tombstone is older than `r`; a tombstone at exactly
//! `r` is kept (as etcd >= 3.5.16 does) unless the same transaction put the key again, in which
//! case that put is what a read at `r` sees and is kept instead. A key left with only an empty
//! generation is removed.

use std::collections::HashSet;
use std::ops::Bound;

use indexmap::IndexMap;
use smallvec::{smallvec, SmallVec};

use crate::packed::PackedMap;
use crate::revision::Revision;

pub(crate) mod image;
pub(crate) use image::{Fingerprint, ImageError};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Generation {
    /// Number of puts in this generation, including ones already compacted away.
    ver: i64,
    /// Revision of the put that created this generation.
    created: Revision,
    /// Revisions in ascending order; the last one of a non-last generation is a tombstone.
    revs: SmallVec<[Revision; 1]>,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }

    /// Index of the last revision with `main <= at`, if any.
    fn find_rev_index(&self, at: i64) -> Option<usize> {
        self.revs.partition_point(|r| r.main <= at).checked_sub(1)
    }
}

/// Why an index operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IndexError {
    /// The key does not exist (at the latest revision), so it cannot be deleted.
    NotFound,
    /// A revision not newer than the key's last modification.
    NotIncreasing,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    /// No separate "last modified" field: it is the last revision of the last non-empty
    /// generation, and 16 bytes per key add up with millions of keys.
    generations: SmallVec<[Generation; 1]>,
}

/// What `get` returns: the revision visible at the asked revision, the generation's creation
/// revision, and the key's version at that revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) modified: Revision,
    pub(crate) created: Revision,
    pub(crate) version: i64,
}

impl KeyIndex {
    fn is_empty(&self) -> bool {
        self.generations.is_empty()
            || (self.generations.len() == 1 && self.generations[0].is_empty())
    }

    /// The revision of the key's latest change (put or tombstone).
    fn modified(&self) -> Revision {
        self.generations
            .iter()
            .rev()
            .find_map(|g| g.revs.last().copied())
            .unwrap_or_default()
    }

    pub(crate) fn put(&mut self, rev: Revision) -> Result<(), IndexError> {
        if !self.generations.is_empty() && rev <= self.modified() {
            return Err(IndexError::NotIncreasing);
        }
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let g = self.generations.last_mut().expect("a generation exists");
        if g.revs.is_empty() {
            g.created = rev;
        }
        g.revs.push(rev);
        g.ver = g.ver.saturating_add(1);
        Ok(())
    }

    /// Starts the index of a key whose first surviving revision (after compaction) is a put.
    fn restore(&mut self, created: Revision, modified: Revision, ver: i64) {
        self.generations = smallvec![Generation {
            ver,
            created,
            revs: smallvec![modified],
        }];
    }

    /// Starts the index of a key whose first surviving revision is a tombstone.
    fn restore_tombstone(&mut self, rev: Revision) {
        self.restore(Revision::default(), rev, 1);
        self.generations.push(Generation::default());
    }

    pub(crate) fn tombstone(&mut self, rev: Revision) -> Result<(), IndexError> {
        match self.generations.last() {
            None => return Err(IndexError::NotFound),
            Some(g) if g.is_empty() => return Err(IndexError::NotFound),
            Some(_) => {}
        }
        self.put(rev)?;
        self.generations.push(Generation::default());
        Ok(())
    }

    /// The generation alive at `at`, if the key existed then.
    fn find_generation(&self, at: i64) -> Option<&Generation> {
        let last = self.generations.len().checked_sub(1)?;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let Some(first) = g.revs.first() else {
                continue;
            };
            if i != last {
                let tomb = g.revs.last().expect("non-empty");
                if tomb.main <= at {
                    return None;
                }
            }
            if first.main <= at {
                return Some(g);
            }
        }
        None
    }

    pub(crate) fn get(&self, at: i64) -> Option<Found> {
        let g = self.find_generation(at)?;
        let n = g.find_rev_index(at)?;
        Some(Found {
            modified: g.revs[n],
            created: g.created,
            version: g.ver.saturating_sub((g.revs.len() - n - 1) as i64),
        })
    }

    /// The generation compaction at `at` starts from, and the index of the revision kept in it,
    /// which is added to `available`.
    ///
    /// A generation is passed over when its tombstone is older than `at`, and also when the next
    /// generation already has a revision at `at`: one transaction deleted the key and put it
    /// again, and a read at `at` sees the put, so that is what must stay (etcd since 3.5.16 stops
    /// at the tombstone there and deletes the put from its backend: etcd-io/etcd#22376).
    fn do_compact(&self, at: i64, available: &mut HashSet<Revision>) -> (usize, Option<usize>) {
        let mut gi = 0;
        while gi + 1 < self.generations.len() {
            let ended_before = self.generations[gi]
                .revs
                .last()
                .is_none_or(|tomb| tomb.main < at);
            let superseded = self.generations[gi + 1]
                .revs
                .first()
                .is_some_and(|next| next.main <= at);
            if !(ended_before || superseded) {
                break;
            }
            gi += 1;
        }
        let ri = self.generations[gi].find_rev_index(at);
        if let Some(ri) = ri {
            available.insert(self.generations[gi].revs[ri]);
        }
        (gi, ri)
    }

    /// Drops the revisions compaction at `at` makes unreachable; records the kept one.
    fn compact(&mut self, at: i64, available: &mut HashSet<Revision>) {
        if self.is_empty() {
            return;
        }
        let (gi, ri) = self.do_compact(at, available);
        if let Some(ri) = ri {
            let revs = &mut self.generations[gi].revs;
            revs.drain(..ri);
            revs.shrink_to_fit();
        }
        self.generations.drain(..gi);
        self.generations.shrink_to_fit();
    }

    /// Records which revision compaction at `at` would keep, without changing anything; a
    /// tombstone is not recorded (this feeds the hash, which must match etcd's).
    fn keep(&self, at: i64, available: &mut HashSet<Revision>) {
        if self.is_empty() {
            return;
        }
        let (gi, ri) = self.do_compact(at, available);
        let g = &self.generations[gi];
        if let Some(ri) = ri {
            if ri + 1 == g.revs.len() && gi + 1 != self.generations.len() {
                available.remove(&g.revs[ri]);
            }
        }
    }

    /// Reverts the latest `put` (for a write transaction that did not commit).
    fn undo_put(&mut self) {
        if let Some(g) = self.generations.last_mut() {
            if g.revs.pop().is_some() {
                g.ver -= 1;
            }
            if g.revs.is_empty() {
                g.created = Revision::default();
            }
        }
    }

    /// Reverts the latest `tombstone`.
    fn undo_tombstone(&mut self) {
        self.generations.pop();
        self.undo_put();
    }
}

/// How to revert one index change.
#[derive(Debug)]
pub(crate) struct Undo {
    key: Vec<u8>,
    created_key: bool,
    tombstone: bool,
}

/// Rebuilds a [`TreeIndex`] from the backend's `key` bucket on start-up.
///
/// The bucket is read in revision order, not key order. Inserting each record into the tree
/// means one or two searches of it per record, and those comparisons were 40% of a restart with
/// 1M keys. Keys written in order also leave the tree's nodes half full. The builder keeps one
/// entry per key in a hash map while the records stream in, then builds the index once from the
/// keys sorted: one sort instead of a tree search per record, and full leaves.
///
/// The sort used to be most of the rest: 22% of a 2M-key restart, nearly all of it `memcmp` on
/// keys read through their pointers, which missed the cache on almost every comparison. Two
/// changes took the start-up with 2M keys from 11-12 s to 5.8-6.1 s (hand runs in
/// `bench/RESULTS.md`):
/// * Each sorted element carries eight bytes of its key inline (those after the prefix all keys
///   share, [`sort_prefix`]); most comparisons end there without reading the key.
/// * The map keeps its entries in insertion order (`IndexMap`). When it grows it moves only its
///   index table and the entries' stored hashes, where a `HashMap` rehashed every key through its
///   pointer (14% of that restart).
///
/// Tradeoff: during the build the entries sit first in the map, then in sorted `Vec`s, so the
/// peak is a few arrays of entries on top of the index. That memory is freed when the build ends;
/// the server then hands the free pages back to the system (`raftnode::heap`), since `free` alone
/// left them resident in some restarts.
#[derive(Debug, Default)]
pub(crate) struct IndexBuilder {
    /// Hashed with foldhash, not SipHash: the keys come from this member's own file, and the
    /// hash of every record's key is on the start-up path.
    keys: IndexMap<Box<[u8]>, KeyIndex, foldhash::fast::RandomState>,
}

impl IndexBuilder {
    /// Adds one backend record. Each key's records must come in revision order. A record that
    /// does not fit its key's history is refused and leaves the key as it was.
    pub(crate) fn restore_record(
        &mut self,
        key: &[u8],
        rev: Revision,
        tombstone: bool,
        create_revision: i64,
        version: i64,
    ) -> Result<(), IndexError> {
        if let Some(ki) = self.keys.get_mut(key) {
            return if tombstone {
                ki.tombstone(rev)
            } else {
                ki.put(rev)
            };
        }
        let mut ki = KeyIndex::default();
        if tombstone {
            ki.restore_tombstone(rev);
        } else {
            ki.restore(Revision::new(create_revision, 0), rev, version);
        }
        self.keys.insert(key.into(), ki);
        Ok(())
    }

    /// The index, built from the keys in sorted order.
    pub(crate) fn finish(self) -> TreeIndex {
        TreeIndex {
            tree: PackedMap::from_sorted(self.sorted()),
        }
    }

    /// Every key's entry, in byte order of the keys.
    fn sorted(self) -> Vec<(Box<[u8]>, KeyIndex)> {
        let entries: Vec<(Box<[u8]>, KeyIndex)> = self.keys.into_iter().collect();
        let skip = common_prefix_len(&entries);
        let mut entries: Vec<(u64, Box<[u8]>, KeyIndex)> = entries
            .into_iter()
            .map(|(k, v)| (sort_prefix(&k, skip), k, v))
            .collect();
        // In place, unlike the stable sort; it returns after one pass if the keys came in order.
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        entries.into_iter().map(|(_, k, v)| (k, v)).collect()
    }
}

/// How many leading bytes every key shares.
fn common_prefix_len(entries: &[(Box<[u8]>, KeyIndex)]) -> usize {
    let Some((first, _)) = entries.first() else {
        return 0;
    };
    entries.iter().fold(first.len(), |len, (k, _)| {
        first[..len]
            .iter()
            .zip(k.iter())
            .take_while(|(a, b)| a == b)
            .count()
    })
}

/// The eight bytes after the keys' common prefix, zero-padded, as a big-endian number.
///
/// It orders two keys as their bytes do whenever the numbers differ: the first differing
/// padded byte is a real byte of the greater key, and the lesser key either has a smaller byte
/// there or ended before it. Equal numbers say nothing, and the keys are compared in full. The
/// number sits in the sorted element itself, so most comparisons read no key through its
/// pointer.
fn sort_prefix(key: &[u8], skip: usize) -> u64 {
    let mut bytes = [0u8; 8];
    let tail = key.get(skip..).unwrap_or_default();
    let n = tail.len().min(8);
    bytes[..n].copy_from_slice(&tail[..n]);
    u64::from_be_bytes(bytes)
}

/// All keys' indexes, ordered by key.
#[derive(Debug, Default)]
pub(crate) struct TreeIndex {
    /// A packed map, not a `BTreeMap`: keys written in order left a B-tree's nodes half full, and
    /// a key in an allocation of its own cost a pointer and a heap chunk on top of its bytes; the
    /// packed map's leaves keep their keys back to back in one buffer (see [`PackedMap`]).
    tree: PackedMap<KeyIndex>,
}

impl TreeIndex {
    pub(crate) fn len(&self) -> usize {
        self.tree.len()
    }

    /// The index's image (see [`image`]), made while the backend matches `fp`.
    pub(crate) fn image(&self, fp: &Fingerprint, current_rev: i64) -> Vec<u8> {
        image::encode(fp, current_rev, self)
    }

    /// The index and current revision of an image, if it is intact and made when the backend
    /// matched `now`.
    pub(crate) fn from_image(
        bytes: &[u8],
        now: &Fingerprint,
    ) -> Result<(TreeIndex, i64), ImageError> {
        image::decode(bytes, now)
    }

    pub(crate) fn get(&self, key: &[u8], at: i64) -> Option<Found> {
        self.tree.get(key)?.get(at)
    }

    /// Every key and its history, in key order.
    pub(crate) fn entries(&self) -> Vec<(Vec<u8>, KeyIndex)> {
        let mut out = Vec::with_capacity(self.len());
        self.visit(b"", Some(b""), |k, ki| out.push((k.to_vec(), ki.clone())));
        out
    }

    /// Calls `f` on each key's index in the range, in key order.
    /// `end`: `None` = just `key`; `Some(b"")` = every key `>= key`; else `[key, end)`.
    fn visit<'a>(
        &'a self,
        key: &[u8],
        end: Option<&[u8]>,
        mut f: impl FnMut(&'a [u8], &'a KeyIndex),
    ) {
        match end {
            None => {
                if let Some((k, ki)) = self.tree.get_key_value(key) {
                    f(k, ki);
                }
            }
            Some([]) => {
                for (k, ki) in self.tree.range(Bound::Included(key), Bound::Unbounded) {
                    f(k, ki);
                }
            }
            Some(e) if e <= key => {}
            Some(e) => {
                for (k, ki) in self.tree.range(Bound::Included(key), Bound::Excluded(e)) {
                    f(k, ki);
                }
            }
        }
    }

    /// Up to `limit` (`0` = all) visible revisions in the range at `at`, and how many there are.
    pub(crate) fn revisions(
        &self,
        key: &[u8],
        end: Option<&[u8]>,
        at: i64,
        limit: usize,
    ) -> (Vec<Revision>, usize) {
        let mut revs = Vec::new();
        let mut total = 0;
        self.visit(key, end, |_, ki| {
            if let Some(found) = ki.get(at) {
                if limit == 0 || revs.len() < limit {
                    revs.push(found.modified);
                }
                total += 1;
            }
        });
        (revs, total)
    }

    /// The first `limit` (`0` = all) visible revisions in the range at `at`, walking no further
    /// into the range than it takes to find them.
    pub(crate) fn first_revisions(
        &self,
        key: &[u8],
        end: Option<&[u8]>,
        at: i64,
        limit: usize,
    ) -> Vec<Revision> {
        let mut revs = Vec::new();
        let mut push = |ki: &KeyIndex| {
            if let Some(found) = ki.get(at) {
                revs.push(found.modified);
            }
            limit != 0 && revs.len() >= limit
        };
        match end {
            None => {
                if let Some(ki) = self.tree.get(key) {
                    push(ki);
                }
            }
            Some(e) if !e.is_empty() && e <= key => {}
            Some(e) => {
                let upper = if e.is_empty() {
                    Bound::Unbounded
                } else {
                    Bound::Excluded(e)
                };
                for (_, ki) in self.tree.range(Bound::Included(key), upper) {
                    if push(ki) {
                        break;
                    }
                }
            }
        }
        revs
    }

    /// How many keys in the range exist at `at`.
    pub(crate) fn count_revisions(&self, key: &[u8], end: Option<&[u8]>, at: i64) -> usize {
        let mut total = 0;
        self.visit(key, end, |_, ki| {
            if ki.get(at).is_some() {
                total += 1;
            }
        });
        total
    }

    /// The keys in the range that exist at `at`, with their visible revisions.
    pub(crate) fn range(
        &self,
        key: &[u8],
        end: Option<&[u8]>,
        at: i64,
    ) -> (Vec<Vec<u8>>, Vec<Revision>) {
        let (mut keys, mut revs) = (Vec::new(), Vec::new());
        self.visit(key, end, |k, ki| {
            if let Some(found) = ki.get(at) {
                keys.push(k.to_vec());
                revs.push(found.modified);
            }
        });
        (keys, revs)
    }

    /// Records a put of `key` at `rev`; returns how to undo it.
    pub(crate) fn put(&mut self, key: &[u8], rev: Revision) -> Result<Undo, IndexError> {
        let (ki, created_key) = match self.tree.get_mut(key) {
            Some(ki) => (ki, false),
            None => self.tree.get_or_insert_default(key),
        };
        if let Err(e) = ki.put(rev) {
            if created_key {
                self.tree.remove(key);
            }
            return Err(e);
        }
        Ok(Undo {
            key: key.to_vec(),
            created_key,
            tombstone: false,
        })
    }

    /// Records a deletion of `key` at `rev`; returns how to undo it.
    pub(crate) fn tombstone(&mut self, key: &[u8], rev: Revision) -> Result<Undo, IndexError> {
        let ki = self.tree.get_mut(key).ok_or(IndexError::NotFound)?;
        ki.tombstone(rev)?;
        Ok(Undo {
            key: key.to_vec(),
            created_key: false,
            tombstone: true,
        })
    }

    /// Reverts a change; changes must be undone newest first.
    pub(crate) fn undo(&mut self, u: Undo) {
        if u.created_key {
            self.tree.remove(u.key.as_slice());
            return;
        }
        if let Some(ki) = self.tree.get_mut(u.key.as_slice()) {
            if u.tombstone {
                ki.undo_tombstone();
            } else {
                ki.undo_put();
            }
        }
    }

    /// Compacts up to `max_keys` keys after `after` (all keys if `after` is `None` at the start)
    /// at `at`, adding the kept revisions to `available`. Returns the last key visited, or
    /// `None` when the end was reached.
    pub(crate) fn compact_chunk(
        &mut self,
        at: i64,
        after: Option<&[u8]>,
        max_keys: usize,
        available: &mut HashSet<Revision>,
    ) -> Option<Vec<u8>> {
        let lower = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        let mut empty = Vec::new();
        let mut last = None;
        let mut n = 0;
        for (k, ki) in self.tree.range_mut(lower, Bound::Unbounded) {
            if n == max_keys {
                break;
            }
            ki.compact(at, available);
            if ki.is_empty() {
                empty.push(k.to_vec());
            }
            last = Some(k.to_vec());
            n += 1;
        }
        for k in empty {
            self.tree.remove(k.as_slice());
        }
        if n < max_keys {
            None
        } else {
            last
        }
    }

    /// The revisions a compaction at `at` would keep (etcd's `Keep`, used by the hash).
    pub(crate) fn keep(&self, at: i64) -> HashSet<Revision> {
        let mut available = HashSet::new();
        for ki in self.tree.values() {
            ki.keep(at, &mut available);
        }
        available
    }

    #[cfg(test)]
    pub(crate) fn key_index(&self, key: &[u8]) -> Option<&KeyIndex> {
        self.tree.get(key)
    }
}

#[cfg(test)]
impl KeyIndex {
    /// The generations as lists of main revisions (for tests).
    pub(crate) fn shape(&self) -> Vec<Vec<i64>> {
        self.generations
            .iter()
            .map(|g| g.revs.iter().map(|r| r.main).collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_key_entry_stays_small() {
        // One entry per key, millions of keys: a field or a tag word added here is tens of MiB.
        assert_eq!(std::mem::size_of::<Generation>(), 48);
        assert_eq!(std::mem::size_of::<KeyIndex>(), 56);
    }

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// put(1) put(2) tombstone(3) put(4) tombstone(5), as in etcd's documentation.
    fn example() -> KeyIndex {
        let mut ki = KeyIndex::default();
        ki.put(r(1)).unwrap();
        ki.put(r(2)).unwrap();
        ki.tombstone(r(3)).unwrap();
        ki.put(r(4)).unwrap();
        ki.tombstone(r(5)).unwrap();
        ki
    }

    #[test]
    fn get_follows_generations() {
        let ki = example();
        assert_eq!(ki.get(0), None);
        let f = ki.get(1).unwrap();
        assert_eq!((f.modified, f.created, f.version), (r(1), r(1), 1));
        let f = ki.get(2).unwrap();
        assert_eq!((f.modified, f.created, f.version), (r(2), r(1), 2));
        assert_eq!(ki.get(3), None, "deleted at 3");
        let f = ki.get(4).unwrap();
        assert_eq!((f.modified, f.created, f.version), (r(4), r(4), 1));
        assert_eq!(ki.get(5), None);
        assert_eq!(ki.get(100), None);
    }

    #[test]
    fn tombstone_of_missing_key_is_refused() {
        let mut ki = example();
        assert_eq!(ki.tombstone(r(6)), Err(IndexError::NotFound));
        assert_eq!(ki.put(r(5)), Err(IndexError::NotIncreasing));
    }

    #[test]
    fn compaction_matches_etcd_examples() {
        let shape = |at: i64| {
            let mut ki = example();
            let mut avail = HashSet::new();
            ki.compact(at, &mut avail);
            let mut kept: Vec<i64> = avail.iter().map(|r| r.main).collect();
            kept.sort();
            (ki.shape(), kept, ki.is_empty())
        };
        assert_eq!(
            shape(2),
            (vec![vec![2, 3], vec![4, 5], vec![]], vec![2], false)
        );
        assert_eq!(shape(4), (vec![vec![4, 5], vec![]], vec![4], false));
        // A tombstone at exactly the compaction revision is kept.
        assert_eq!(shape(5), (vec![vec![5], vec![]], vec![5], false));
        assert_eq!(shape(6), (vec![vec![]], vec![], true));
    }

    /// One transaction at revision 3 deletes the key (3.1) and puts it again (3.2); it is then
    /// deleted once more, in that transaction (3.3) if `then_deleted`, else at revision 4.
    fn deleted_and_put_in_one_transaction(then_deleted: bool) -> KeyIndex {
        let mut ki = KeyIndex::default();
        ki.put(r(2)).unwrap();
        ki.tombstone(Revision::new(3, 1)).unwrap();
        ki.put(Revision::new(3, 2)).unwrap();
        if then_deleted {
            ki.tombstone(Revision::new(3, 3)).unwrap();
        } else {
            ki.tombstone(r(4)).unwrap();
        }
        ki
    }

    #[test]
    fn compaction_keeps_a_put_that_follows_a_tombstone_in_its_transaction() {
        let mut ki = deleted_and_put_in_one_transaction(false);
        let seen = ki.get(3).unwrap();
        assert_eq!(seen.modified, Revision::new(3, 2));
        let mut avail = HashSet::new();
        ki.compact(3, &mut avail);
        assert_eq!(avail, HashSet::from([Revision::new(3, 2)]));
        assert_eq!(ki.get(3), Some(seen));
        assert_eq!(ki.shape(), vec![vec![3, 4], vec![]]);
        let mut hashed = HashSet::new();
        deleted_and_put_in_one_transaction(false).keep(3, &mut hashed);
        assert_eq!(hashed, avail);

        // Deleted once more in the same transaction: the last tombstone is what is seen at 3,
        // and the one kept (the hash skips it, as for any tombstone at the revision).
        let mut ki = deleted_and_put_in_one_transaction(true);
        assert_eq!(ki.get(3), None);
        let mut avail = HashSet::new();
        ki.compact(3, &mut avail);
        assert_eq!(avail, HashSet::from([Revision::new(3, 3)]));
        assert_eq!(ki.shape(), vec![vec![3], vec![]]);
        let mut hashed = HashSet::new();
        deleted_and_put_in_one_transaction(true).keep(3, &mut hashed);
        assert!(hashed.is_empty());
    }

    /// Random histories, up to three changes per transaction, compacted at every revision:
    /// reads at and after the compaction revision see what they saw before, and the index keeps
    /// no revision at or below it that the backend would delete (one not in `available`).
    #[test]
    fn compaction_keeps_what_reads_see_and_only_what_it_records() {
        const LAST: i64 = 24;
        let mut rng = fastrand::Rng::with_seed(0x636f_6d70);
        for _ in 0..300 {
            let mut ki = KeyIndex::default();
            let mut alive = false;
            for main in 2..=LAST {
                for sub in 0..rng.i64(0..=3) {
                    let rev = Revision::new(main, sub);
                    if alive && rng.bool() {
                        ki.tombstone(rev).unwrap();
                        alive = false;
                    } else {
                        ki.put(rev).unwrap();
                        alive = true;
                    }
                }
            }
            if ki.is_empty() {
                continue;
            }
            for at in 1..=LAST {
                let mut compacted = ki.clone();
                let mut avail = HashSet::new();
                compacted.compact(at, &mut avail);
                for read in at..=LAST + 1 {
                    assert_eq!(compacted.get(read), ki.get(read), "{ki:?} at {at}");
                }
                for g in &compacted.generations {
                    for rev in g.revs.iter().filter(|r| r.main <= at) {
                        assert!(avail.contains(rev), "{rev:?} of {ki:?} at {at}");
                    }
                }
            }
        }
    }

    #[test]
    fn keep_skips_a_tombstone_at_the_revision() {
        let ki = example();
        let mut avail = HashSet::new();
        ki.keep(5, &mut avail);
        assert!(avail.is_empty());
        ki.keep(4, &mut avail);
        assert_eq!(avail.into_iter().collect::<Vec<_>>(), vec![r(4)]);
    }

    #[test]
    fn undo_reverts_exactly() {
        let mut t = TreeIndex::default();
        t.put(b"a", r(2)).unwrap();
        t.tombstone(b"a", r(3)).unwrap();
        let before = t.key_index(b"a").unwrap().clone();
        let u1 = t.put(b"a", Revision::new(4, 0)).unwrap();
        let u2 = t.put(b"a", Revision::new(4, 1)).unwrap();
        let u3 = t.tombstone(b"a", Revision::new(4, 2)).unwrap();
        let u4 = t.put(b"b", Revision::new(4, 3)).unwrap();
        for u in [u4, u3, u2, u1] {
            t.undo(u);
        }
        assert_eq!(t.key_index(b"a").unwrap(), &before);
        assert!(t.key_index(b"b").is_none());
    }

    #[test]
    fn range_end_conventions() {
        let mut t = TreeIndex::default();
        for (i, k) in [&b"a"[..], b"b", b"c", b"d"].iter().enumerate() {
            t.put(k, r(i as i64 + 2)).unwrap();
        }
        assert_eq!(t.count_revisions(b"b", None, 10), 1);
        assert_eq!(t.count_revisions(b"bb", None, 10), 0);
        assert_eq!(t.count_revisions(b"b", Some(b""), 10), 3);
        assert_eq!(t.count_revisions(b"b", Some(b"d"), 10), 2);
        assert_eq!(t.count_revisions(b"d", Some(b"b"), 10), 0);
        assert_eq!(t.count_revisions(b"b", Some(b"b"), 10), 0);
        let (revs, total) = t.revisions(b"a", Some(b""), 10, 2);
        assert_eq!((revs, total), (vec![r(2), r(3)], 4));
        // Historical: at 3 only a and b exist.
        assert_eq!(t.count_revisions(b"", Some(b""), 3), 2);
    }

    /// The builder hands the tree every key once, in byte order, whatever order the records came in:
    /// keys sharing long prefixes, keys that are prefixes of others, zero bytes at the ends.
    #[test]
    fn the_builder_orders_keys_as_their_bytes() {
        let mut rng = fastrand::Rng::with_seed(7);
        for (shared, alphabet) in [(&b""[..], 256u16), (b"/registry/pods/", 3), (b"k", 2)] {
            let mut keys: Vec<Vec<u8>> = (0..3000)
                .map(|_| {
                    let mut k = shared.to_vec();
                    k.extend((0..rng.usize(0..14)).map(|_| rng.u16(..alphabet) as u8));
                    k
                })
                .collect();
            keys.push(shared.to_vec());
            let mut b = IndexBuilder::default();
            for (i, k) in keys.iter().enumerate() {
                let rev = r(i as i64 + 1);
                b.restore_record(k, rev, false, rev.main, 1).unwrap();
            }
            let mut want = keys.clone();
            want.sort();
            want.dedup();
            let got: Vec<Vec<u8>> = b.sorted().into_iter().map(|(k, _)| k.to_vec()).collect();
            assert_eq!(got, want, "shared prefix {shared:?}");
        }
    }

    #[test]
    fn a_sort_prefix_never_contradicts_the_keys_order() {
        let keys: [&[u8]; 7] = [
            b"ab",
            b"ab\0",
            b"ab\0\x01",
            b"ab\x01",
            b"abcdefghij",
            b"abcdefghik",
            b"ac",
        ];
        // Every key starts with the one byte skipped, as the common prefix guarantees.
        for a in keys {
            for b in keys {
                let (pa, pb) = (sort_prefix(a, 1), sort_prefix(b, 1));
                if pa != pb {
                    assert_eq!(pa.cmp(&pb), a.cmp(b), "{a:?} {b:?}");
                }
            }
        }
        assert_eq!(sort_prefix(b"a", 3), 0);
    }
}
