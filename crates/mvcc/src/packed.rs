//! An ordered map from byte keys to values that stays densely packed when keys arrive in order.
//!
//! The key index used to be a `BTreeMap`. A B-tree node that overflows is split in two, so keys
//! inserted in ascending order (the common case: names with a counter, many clients writing
//! ascending names at once) leave the nodes behind them about half full, and only a restart,
//! which builds the tree bottom-up, filled them again. With 1M keys written by 1000 clients the
//! server's RSS was 240 MiB after the writes and 156 MiB after a restart; with this map it is
//! 193 MiB after the writes (hand runs in `bench/RESULTS.md`).
//!
//! Here the entries live in sorted leaves of at most `LEAF` entries, allocated with exactly that
//! capacity and with their keys back to back in one buffer per leaf ([`leaf`]), and a `BTreeMap`
//! from a separator key to each leaf finds the leaf. When a key goes into a full leaf:
//! * past the last entry of the last leaf, or before the first entry of the first leaf, it starts
//!   a new leaf of its own and the full one stays full (strictly ordered inserts);
//! * otherwise entries move into a neighbour with free slots, the ones before the key into the
//!   previous leaf or those after it into the next (keys that arrive nearly in order land in the
//!   last few leaves, and this tops up the ones behind);
//! * only when both neighbours are full is the leaf split in halves, as a B-tree node is.
//!
//! Unit tests hold the resulting fill: every leaf but the newest full for ordered keys; at least
//! 83% for keys shuffled within windows of 1000 (85% seen; 68% with halving splits alone); at
//! least 77% for random keys (87% seen; 72% with halving splits alone).
//!
//! Tradeoffs, with `LEAF = 64` and values of 56 bytes:
//! * An insert or removal inside a leaf moves up to 63 values (3.5 KiB), their key offsets and
//!   key bytes, each with one `memmove`, where a B-tree node moves at most 11 entries. A lookup
//!   costs one search of the small separator tree and a binary search of one leaf.
//! * Moving entries between leaves allocates a leaf for the part that moves (`Leaf::split_off`)
//!   where a `Vec` of entries could drain into its neighbour in place; once per overflow.
//! * Moving entries into a neighbour changes a separator: one removal and one insertion in the
//!   separator tree and one key copy, once per overflow, not per insert.
//! * The separator tree holds a copy of one key per leaf, about half a byte per entry.
//! * Removals merge a leaf that drops below a quarter full into a neighbour when both fit in one
//!   leaf, so deleting most keys does not leave a tree of nearly empty leaves.
//!
//! Invariants: no leaf is empty; every leaf's entries are sorted and unique; each separator is
//! no greater than every key of its leaf and greater than every key of the leaves before it (a
//! separator can be smaller than its leaf's first key after that key was removed; that keeps it
//! valid); `len` is the number of entries.

mod leaf;

use std::collections::BTreeMap;
use std::ops::Bound;

use leaf::Leaf;

#[derive(Debug)]
pub(crate) struct PackedMap<V, const LEAF: usize = 64> {
    leaves: BTreeMap<Box<[u8]>, Leaf<V>>,
    len: usize,
}

impl<V, const LEAF: usize> Default for PackedMap<V, LEAF> {
    fn default() -> Self {
        Self {
            leaves: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<V, const LEAF: usize> PackedMap<V, LEAF> {
    /// Builds the map from entries already sorted by key, without duplicates, with full leaves.
    pub(crate) fn from_sorted<K: AsRef<[u8]>>(entries: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut leaves = Vec::new();
        let mut leaf = Leaf::with_capacity(LEAF);
        let mut len = 0;
        for e in entries {
            if leaf.len() == LEAF {
                leaves.push(std::mem::replace(&mut leaf, Leaf::with_capacity(LEAF)));
            }
            let key = e.0.as_ref();
            debug_assert!(leaf.is_empty() || leaf.key(leaf.len() - 1) < key);
            leaf.push(key, e.1);
            len += 1;
        }
        if !leaf.is_empty() {
            leaves.push(leaf);
        }
        Self {
            // Sorted input: `from_iter` builds the separator tree with full nodes.
            leaves: leaves.into_iter().map(|l| (l.key(0).into(), l)).collect(),
            len,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The leaf that holds `key` if anything does, with its separator: the last leaf whose
    /// separator is not greater than `key`, or the first leaf.
    fn leaf_for(&self, key: &[u8]) -> Option<(&[u8], &Leaf<V>)> {
        self.leaves
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .or_else(|| self.leaves.iter().next())
            .map(|(s, l)| (&**s, l))
    }

    /// As [`Self::leaf_for`], for changing the leaf.
    fn leaf_for_mut(&mut self, key: &[u8]) -> Option<(&[u8], &mut Leaf<V>)> {
        let before_all = self.leaves.first_key_value()?.0.as_ref() > key;
        let found = if before_all {
            self.leaves.iter_mut().next()
        } else {
            self.leaves
                .range_mut::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
                .next_back()
        };
        found.map(|(s, l)| (&**s, l))
    }

    pub(crate) fn get_key_value(&self, key: &[u8]) -> Option<(&[u8], &V)> {
        let (_, leaf) = self.leaf_for(key)?;
        let i = leaf.search(key).ok()?;
        Some((leaf.key(i), leaf.value(i)))
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&V> {
        self.get_key_value(key).map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let (_, leaf) = self.leaf_for_mut(key)?;
        let i = leaf.search(key).ok()?;
        Some(leaf.value_mut(i))
    }

    /// The value of `key`, inserted as `V::default()` if it was missing; and whether it was.
    ///
    /// The decisions are made on a shared borrow first, and each branch then borrows the leaf
    /// it changes: a mutable borrow taken before the branch could not be returned from one arm
    /// while another arm changes the separator tree.
    pub(crate) fn get_or_insert_default(&mut self, key: &[u8]) -> (&mut V, bool)
    where
        V: Default,
    {
        let (found, before_all, full, in_last) = match self.leaf_for(key) {
            None => {
                let mut leaf = Leaf::with_capacity(LEAF);
                leaf.push(key, V::default());
                self.len = 1;
                let leaf = self.leaves.entry(key.into()).or_insert(leaf);
                return (leaf.value_mut(0), true);
            }
            Some((sep, leaf)) => (
                leaf.search(key),
                sep > key,
                leaf.len() == LEAF,
                self.leaves
                    .last_key_value()
                    .is_some_and(|(s, _)| s.as_ref() <= key),
            ),
        };
        let pos = match found {
            Ok(i) => {
                let (_, leaf) = self.leaf_for_mut(key).expect("the leaf just found");
                return (leaf.value_mut(i), false);
            }
            Err(pos) => pos,
        };
        self.len += 1;
        if before_all {
            // The key becomes the first leaf's separator, in a leaf of its own if that one is full.
            let (sep, mut leaf) = self.leaves.pop_first().expect("the leaf just found");
            if full {
                self.leaves.insert(sep, leaf);
                leaf = Leaf::with_capacity(LEAF);
            }
            leaf.insert(0, key, V::default());
            let leaf = self.leaves.entry(key.into()).or_insert(leaf);
            return (leaf.value_mut(0), true);
        }
        if !full {
            let (_, leaf) = self.leaf_for_mut(key).expect("the leaf just found");
            leaf.insert(pos, key, V::default());
            return (leaf.value_mut(pos), true);
        }
        if in_last && pos == LEAF {
            // Past the end of the map: a new leaf, and the full one stays full.
            let mut leaf = Leaf::with_capacity(LEAF);
            leaf.push(key, V::default());
            let leaf = self.leaves.entry(key.into()).or_insert(leaf);
            return (leaf.value_mut(0), true);
        }
        let (sep, _) = self.leaf_for(key).expect("the leaf just found");
        let sep = Box::<[u8]>::from(sep);
        if let Some((sep, at)) = self.make_room(&sep, key, pos) {
            let leaf = self.leaves.get_mut(&sep).expect("the leaf with room");
            leaf.insert(at, key, V::default());
            return (leaf.value_mut(at), true);
        }
        let leaf = self.leaves.get_mut(&sep).expect("the leaf just found");
        let mut right = leaf.split_off(LEAF / 2);
        if pos <= LEAF / 2 {
            leaf.insert(pos, key, V::default());
            self.leaves.insert(right.key(0).into(), right);
            let leaf = self.leaves.get_mut(&sep).expect("the leaf just split");
            return (leaf.value_mut(pos), true);
        }
        // `pos > LEAF / 2`: the key is greater than the right half's first key.
        let at = pos - LEAF / 2;
        right.insert(at, key, V::default());
        let leaf = self.leaves.entry(right.key(0).into()).or_insert(right);
        (leaf.value_mut(at), true)
    }

    /// Frees a slot in the full leaf at `sep`, where `key` goes at `pos`, by moving entries
    /// into a neighbour with free slots: into the previous leaf the entries before `key`, or
    /// into the next one those after it. Returns the leaf `key` now goes in, and where in it;
    /// `None` if neither neighbour can take any.
    ///
    /// Keys that arrive nearly in order (many clients writing ascending names at once) land in
    /// the last few leaves, not only the last, and halving splits would leave those half full.
    /// Topping a neighbour up first keeps the leaves behind the newest ones full.
    fn make_room(&mut self, sep: &[u8], key: &[u8], pos: usize) -> Option<(Box<[u8]>, usize)> {
        let free = |l: &Leaf<V>| LEAF - l.len();
        let previous = self
            .leaves
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(sep)))
            .next_back()
            .filter(|(_, l)| pos > 0 && free(l) > 0)
            .map(|(s, l)| (s.clone(), free(l).min(pos)));
        if let Some((previous, moved)) = previous {
            let mut full = self.leaves.remove(sep).expect("the full leaf");
            let leaf = full.split_off(moved);
            self.leaves
                .get_mut(&previous)
                .expect("the previous leaf")
                .append(full);
            // The separator must stay at or below the leaf's first key, `key` once inserted.
            let sep: Box<[u8]> = if pos == moved {
                key.into()
            } else {
                leaf.key(0).into()
            };
            self.leaves.insert(sep.clone(), leaf);
            return Some((sep, pos - moved));
        }
        let next = self
            .leaves
            .range::<[u8], _>((Bound::Excluded(sep), Bound::Unbounded))
            .next()
            .filter(|(_, l)| pos < LEAF && free(l) > 0)
            .map(|(s, l)| (s.clone(), free(l).min(LEAF - pos)));
        let (next, moved) = next?;
        let right = self.leaves.remove(&next).expect("the next leaf");
        let leaf = self.leaves.get_mut(sep).expect("the full leaf");
        let mut moving = leaf.split_off(LEAF - moved);
        moving.append(right);
        self.leaves.insert(moving.key(0).into(), moving);
        Some((sep.into(), pos))
    }

    /// Removes `key`; returns its value if it was there.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<V> {
        let (sep, leaf) = self.leaf_for(key)?;
        let i = leaf.search(key).ok()?;
        let sep = Box::<[u8]>::from(sep);
        let leaf = self.leaves.get_mut(&sep).expect("the leaf just found");
        let v = leaf.remove(i);
        self.len -= 1;
        if leaf.is_empty() {
            self.leaves.remove(&sep);
        } else if leaf.len() < LEAF / 4 {
            self.merge_small(&sep);
        }
        Some(v)
    }

    /// Merges the leaf at `sep` with a neighbour if the two fit in one leaf.
    fn merge_small(&mut self, sep: &[u8]) {
        let size = self.leaves[sep].len();
        let next = self
            .leaves
            .range::<[u8], _>((Bound::Excluded(sep), Bound::Unbounded))
            .next()
            .filter(|(_, l)| l.len() + size <= LEAF)
            .map(|(s, _)| s.clone());
        if let Some(next) = next {
            let moved = self.leaves.remove(&next).expect("the neighbour just found");
            self.leaves.get_mut(sep).expect("the leaf").append(moved);
            return;
        }
        let prev = self
            .leaves
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(sep)))
            .next_back()
            .filter(|(_, l)| l.len() + size <= LEAF)
            .map(|(s, _)| s.clone());
        if let Some(prev) = prev {
            let moved = self.leaves.remove(sep).expect("the leaf");
            self.leaves
                .get_mut(&prev)
                .expect("the neighbour just found")
                .append(moved);
        }
    }

    /// The leaf to start a scan from `lower` at (its separator; `None`: the first leaf), and
    /// how many of its entries lie before `lower`.
    fn start(&self, lower: Bound<&[u8]>) -> Option<(&[u8], usize)> {
        let (key, excluded) = match lower {
            Bound::Unbounded => return None,
            Bound::Included(k) => (k, false),
            Bound::Excluded(k) => (k, true),
        };
        let (sep, leaf) = self.leaf_for(key)?;
        let skip = match leaf.search(key) {
            Ok(i) if excluded => i + 1,
            Ok(i) | Err(i) => i,
        };
        Some((sep, skip))
    }

    /// The entries with keys within the bounds, in key order.
    pub(crate) fn range<'a, 'b>(
        &'a self,
        lower: Bound<&[u8]>,
        upper: Bound<&'b [u8]>,
    ) -> impl Iterator<Item = (&'a [u8], &'a V)> + use<'a, 'b, V, LEAF> {
        let (leaves, skip) = match self.start(lower) {
            Some((sep, skip)) => (
                self.leaves
                    .range::<[u8], _>((Bound::Included(sep), Bound::Unbounded)),
                skip,
            ),
            None => (self.leaves.range::<[u8], _>(..), 0),
        };
        leaves
            .flat_map(|(_, l)| l.iter())
            .skip(skip)
            .take_while(move |(k, _)| below(k, upper))
    }

    /// As [`Self::range`], with the values mutable.
    pub(crate) fn range_mut<'a, 'b>(
        &'a mut self,
        lower: Bound<&[u8]>,
        upper: Bound<&'b [u8]>,
    ) -> impl Iterator<Item = (&'a [u8], &'a mut V)> + use<'a, 'b, V, LEAF> {
        let start = self
            .start(lower)
            .map(|(sep, skip)| (Box::<[u8]>::from(sep), skip));
        let (leaves, skip) = match &start {
            Some((sep, skip)) => (
                self.leaves
                    .range_mut::<[u8], _>((Bound::Included(sep.as_ref()), Bound::Unbounded)),
                *skip,
            ),
            None => (self.leaves.range_mut::<[u8], _>(..), 0),
        };
        leaves
            .flat_map(|(_, l)| l.iter_mut())
            .skip(skip)
            .take_while(move |(k, _)| below(k, upper))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.leaves.values().flat_map(|l| l.values())
    }
}

fn below(key: &[u8], upper: Bound<&[u8]>) -> bool {
    match upper {
        Bound::Unbounded => true,
        Bound::Included(u) => key <= u,
        Bound::Excluded(u) => key < u,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl<V, const LEAF: usize> PackedMap<V, LEAF> {
        /// Panics unless every invariant in the module doc holds; returns the number of leaves.
        fn check(&self) -> usize {
            let mut previous: Option<&[u8]> = None;
            let mut len = 0;
            for (sep, leaf) in &self.leaves {
                assert!(!leaf.is_empty(), "an empty leaf");
                assert!(leaf.len() <= LEAF, "a leaf overfull");
                leaf.check(LEAF);
                assert!(**sep <= *leaf.key(0), "a separator above its leaf");
                if let Some(p) = previous {
                    assert!(p < &**sep, "a separator not above the previous leaf");
                }
                for i in 1..leaf.len() {
                    assert!(leaf.key(i - 1) < leaf.key(i), "a leaf out of order");
                }
                previous = Some(leaf.key(leaf.len() - 1));
                len += leaf.len();
            }
            assert_eq!(len, self.len);
            self.leaves.len()
        }
    }

    fn key(n: u64) -> Vec<u8> {
        format!("k{n:06}").into_bytes()
    }

    /// Inserts `n` keys in the given order; returns the number of leaves.
    fn fill<const LEAF: usize>(order: impl Iterator<Item = u64>) -> usize {
        let mut m = PackedMap::<u64, LEAF>::default();
        for n in order {
            let (v, created) = m.get_or_insert_default(&key(n));
            assert!(created);
            *v = n;
        }
        m.check()
    }

    #[test]
    fn keys_in_order_leave_full_leaves() {
        // The point of the structure: a B-tree leaves these half full.
        assert_eq!(fill::<64>(0..6400), 100);
        assert_eq!(fill::<64>((0..6400).rev()), 100);
        assert_eq!(fill::<4>(0..1001), 251);
    }

    #[test]
    fn keys_in_random_order_fill_leaves_as_a_b_tree_does() {
        let mut keys: Vec<u64> = (0..6400).collect();
        fastrand::Rng::with_seed(7).shuffle(&mut keys);
        let leaves = fill::<64>(keys.into_iter());
        assert!((100..=130).contains(&leaves), "{leaves} leaves");
    }

    #[test]
    fn keys_nearly_in_order_leave_nearly_full_leaves() {
        // 1000 clients writing ascending keys: each key lands within a window of the newest.
        let mut keys: Vec<u64> = (0..64_000).collect();
        let mut rng = fastrand::Rng::with_seed(11);
        for window in keys.chunks_mut(1000) {
            rng.shuffle(window);
        }
        let leaves = fill::<64>(keys.into_iter());
        assert!(
            leaves <= 1200,
            "{leaves} leaves for 1000 leaves' worth of keys"
        );
    }

    fn bound(rng: &mut fastrand::Rng, space: u64) -> Bound<Vec<u8>> {
        match rng.u8(0..3) {
            0 => Bound::Unbounded,
            1 => Bound::Included(key(rng.u64(0..space))),
            _ => Bound::Excluded(key(rng.u64(0..space))),
        }
    }

    fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
        match b {
            Bound::Unbounded => Bound::Unbounded,
            Bound::Included(k) => Bound::Included(k),
            Bound::Excluded(k) => Bound::Excluded(k),
        }
    }

    /// Random inserts, removals, lookups and scans, checked against a `BTreeMap`.
    fn agrees_with_a_btree_map<const LEAF: usize>(seed: u64, space: u64, steps: usize) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut m = PackedMap::<u64, LEAF>::default();
        let mut model = BTreeMap::<Vec<u8>, u64>::new();
        // Phases that favour inserts, then removals, so leaves both split and merge; and runs
        // of ascending keys among the random ones.
        let mut next_in_order = 0;
        for step in 0..steps {
            let removing = (step / (steps / 6).max(1)) % 2 == 1;
            let k = if rng.u8(0..4) == 0 {
                next_in_order = (next_in_order + 1) % space;
                key(next_in_order)
            } else {
                key(rng.u64(0..space))
            };
            match rng.u8(0..10) {
                0..=4 if !removing => {
                    let (v, created) = m.get_or_insert_default(&k);
                    let prior = model.get(&k).copied();
                    assert_eq!(created, prior.is_none());
                    assert_eq!(*v, prior.unwrap_or_default());
                    *v = step as u64 + 1;
                    model.insert(k, step as u64 + 1);
                }
                0..=4 => assert_eq!(m.remove(&k), model.remove(&k)),
                5 => {
                    if let Some(v) = m.get_mut(&k) {
                        *v += 1;
                    }
                    if let Some(v) = model.get_mut(&k) {
                        *v += 1;
                    }
                }
                6 => assert_eq!(m.get(&k), model.get(&k)),
                7 => assert_eq!(
                    m.get_key_value(&k),
                    model.get_key_value(&k).map(|(k, v)| (k.as_slice(), v))
                ),
                8 => {
                    let (lo, hi) = (bound(&mut rng, space), bound(&mut rng, space));
                    let got: Vec<(Vec<u8>, u64)> = m
                        .range(as_ref(&lo), as_ref(&hi))
                        .map(|(k, v)| (k.to_vec(), *v))
                        .collect();
                    let want: Vec<(Vec<u8>, u64)> = model
                        .iter()
                        .filter(|(k, _)| {
                            let above = match &lo {
                                Bound::Unbounded => true,
                                Bound::Included(l) => *k >= l,
                                Bound::Excluded(l) => *k > l,
                            };
                            above && below(k, as_ref(&hi))
                        })
                        .map(|(k, v)| (k.clone(), *v))
                        .collect();
                    assert_eq!(got, want, "range {lo:?}..{hi:?}");
                }
                _ => {
                    let lo = bound(&mut rng, space);
                    let mut touched = Vec::new();
                    for (k, v) in m.range_mut(as_ref(&lo), Bound::Unbounded).take(20) {
                        *v += 7;
                        touched.push(k.to_vec());
                    }
                    let want: Vec<Vec<u8>> = model
                        .range::<[u8], _>((as_ref(&lo), Bound::Unbounded))
                        .take(20)
                        .map(|(k, _)| k.clone())
                        .collect();
                    assert_eq!(touched, want);
                    for k in touched {
                        *model.get_mut(&k).expect("a key the scan saw") += 7;
                    }
                }
            }
            assert_eq!(m.len(), model.len());
        }
        m.check();
        let all: Vec<(Vec<u8>, u64)> = m
            .range(Bound::Unbounded, Bound::Unbounded)
            .map(|(k, v)| (k.to_vec(), *v))
            .collect();
        assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        assert_eq!(m.values().count(), m.len());
    }

    #[test]
    fn small_leaves_agree_with_a_btree_map() {
        for seed in 0..20 {
            agrees_with_a_btree_map::<4>(seed, 300, 4000);
        }
    }

    #[test]
    fn default_leaves_agree_with_a_btree_map() {
        for seed in 0..2 {
            agrees_with_a_btree_map::<64>(seed, 5000, 20000);
        }
    }

    #[test]
    fn built_from_sorted_entries_it_is_full_and_complete() {
        let m = PackedMap::<u64, 64>::from_sorted((0..1000).map(|n| (key(n), n)));
        assert_eq!(m.check(), 16);
        assert_eq!(m.len(), 1000);
        assert_eq!(m.get(&key(999)), Some(&999));
        assert_eq!(m.get(b"k"), None);
        let empty = PackedMap::<u64, 64>::from_sorted(std::iter::empty::<(Vec<u8>, u64)>());
        assert_eq!(empty.check(), 0);
        assert_eq!(empty.range(Bound::Unbounded, Bound::Unbounded).count(), 0);
    }

    #[test]
    fn removing_most_keys_merges_leaves() {
        let mut m = PackedMap::<u64, 64>::from_sorted((0..6400).map(|n| (key(n), n)));
        for n in (0..6400).filter(|n| n % 10 != 0) {
            assert_eq!(m.remove(&key(n)), Some(n));
            m.check();
        }
        // 640 keys left; leaves below a quarter full are merged while they fit.
        let leaves = m.check();
        assert!(leaves <= 640 / 16, "{leaves} leaves for 640 keys");
    }
}
