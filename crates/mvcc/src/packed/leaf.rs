//! One leaf of a [`super::PackedMap`]: its keys, back to back in one buffer, and its values.
//!
//! A key in a `Box<[u8]>` of its own costs a 16-byte pointer and length in the entry and a
//! heap allocation of at least 32 bytes for a 16-byte key; with millions of keys that was the
//! largest part of the index after the values. Here a leaf's keys share one buffer and each
//! costs its bytes and one offset.
//!
//! Tradeoffs: an insert or removal inside the leaf moves the key bytes after it as well as the
//! entries, and adjusts the offsets after it (up to `LEAF - 1` additions); both are contiguous
//! and small next to the binary search. The buffer grows by doubling, and is trimmed to its
//! contents whenever the leaf becomes full, so the leaves that stay full (all but the newest
//! ones when keys arrive in order) carry no spare capacity.
//!
//! Invariants: `ends` and `vals` have the same length and the capacity the leaf was made with;
//! `ends` is non-decreasing and its last element is `bytes.len()`; key `i` is
//! `bytes[ends[i - 1]..ends[i]]` (from 0 for the first).

pub(super) struct Leaf<V> {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    vals: Vec<V>,
}

impl<V: std::fmt::Debug> std::fmt::Debug for Leaf<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Key `i` of a leaf's buffer and offsets.
fn key_at<'a>(bytes: &'a [u8], ends: &[usize], i: usize) -> &'a [u8] {
    &bytes[start_at(ends, i)..ends[i]]
}

/// Where key `i` starts in a leaf's buffer.
fn start_at(ends: &[usize], i: usize) -> usize {
    if i == 0 {
        0
    } else {
        ends[i - 1]
    }
}

impl<V> Leaf<V> {
    /// An empty leaf that holds up to `cap` entries without growing.
    pub(super) fn with_capacity(cap: usize) -> Self {
        Self {
            bytes: Vec::new(),
            ends: Vec::with_capacity(cap),
            vals: Vec::with_capacity(cap),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.vals.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.vals.is_empty()
    }

    /// How many entries the leaf was made to hold.
    pub(super) fn capacity(&self) -> usize {
        self.vals.capacity()
    }

    fn start(&self, i: usize) -> usize {
        start_at(&self.ends, i)
    }

    pub(super) fn key(&self, i: usize) -> &[u8] {
        key_at(&self.bytes, &self.ends, i)
    }

    pub(super) fn value(&self, i: usize) -> &V {
        &self.vals[i]
    }

    pub(super) fn value_mut(&mut self, i: usize) -> &mut V {
        &mut self.vals[i]
    }

    /// Where `key` is, or would be inserted.
    pub(super) fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// Inserts an entry at `i`; the caller keeps the keys sorted and within capacity.
    pub(super) fn insert(&mut self, i: usize, key: &[u8], value: V) {
        let at = self.start(i);
        self.bytes.splice(at..at, key.iter().copied());
        self.ends.insert(i, at + key.len());
        for end in &mut self.ends[i + 1..] {
            *end += key.len();
        }
        self.vals.insert(i, value);
        self.trim_if_full();
    }

    pub(super) fn push(&mut self, key: &[u8], value: V) {
        self.insert(self.len(), key, value);
    }

    pub(super) fn remove(&mut self, i: usize) -> V {
        let (start, end) = (self.start(i), self.ends[i]);
        self.bytes.drain(start..end);
        self.ends.remove(i);
        for e in &mut self.ends[i..] {
            *e -= end - start;
        }
        self.vals.remove(i)
    }

    /// Moves the entries from `at` on into a new leaf of the same capacity.
    pub(super) fn split_off(&mut self, at: usize) -> Self {
        let cut = self.start(at);
        let mut right = Self::with_capacity(self.capacity());
        right.bytes = self.bytes.split_off(cut);
        right.ends.extend(self.ends.drain(at..).map(|e| e - cut));
        right.vals.extend(self.vals.drain(at..));
        right
    }

    /// Moves every entry of `other`, whose keys are all greater, to the end of this leaf.
    pub(super) fn append(&mut self, other: Self) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.ends.extend(other.ends.iter().map(|e| e + base));
        self.vals.extend(other.vals);
        self.trim_if_full();
    }

    /// A full leaf takes no more keys until something is removed, so spare room in its buffer
    /// would be held for nothing.
    fn trim_if_full(&mut self) {
        if self.vals.len() == self.vals.capacity() {
            self.bytes.shrink_to_fit();
        }
    }

    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = (&[u8], &V)> {
        self.vals
            .iter()
            .enumerate()
            .map(|(i, v)| (key_at(&self.bytes, &self.ends, i), v))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&[u8], &mut V)> {
        let (bytes, ends) = (&self.bytes, &self.ends);
        self.vals
            .iter_mut()
            .enumerate()
            .map(move |(i, v)| (key_at(bytes, ends, i), v))
    }

    pub(super) fn values(&self) -> std::slice::Iter<'_, V> {
        self.vals.iter()
    }

    /// Panics unless the module's invariants hold.
    #[cfg(test)]
    pub(super) fn check(&self, cap: usize) {
        assert_eq!(self.ends.len(), self.vals.len());
        assert!(
            self.ends.capacity() == cap && self.vals.capacity() == cap,
            "a leaf grew"
        );
        assert!(self.ends.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(self.ends.last().copied().unwrap_or(0), self.bytes.len());
        if self.len() == cap {
            assert_eq!(
                self.bytes.capacity(),
                self.bytes.len(),
                "a full leaf with spare room"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(l: &Leaf<u32>) -> Vec<(Vec<u8>, u32)> {
        l.iter().map(|(k, v)| (k.to_vec(), *v)).collect()
    }

    #[test]
    fn keys_of_different_lengths_keep_their_bytes_through_every_operation() {
        let mut l = Leaf::with_capacity(8);
        l.push(b"b", 1);
        l.push(b"dddd", 2);
        l.insert(0, b"", 0);
        l.insert(2, b"ccc", 3);
        l.check(8);
        assert_eq!(l.search(b"ccc"), Ok(2));
        assert_eq!(l.search(b"c"), Err(2));
        assert_eq!(l.search(b"e"), Err(4));
        assert_eq!(l.remove(1), 1);
        l.check(8);
        let right = l.split_off(1);
        right.check(8);
        l.check(8);
        assert_eq!(keys(&l), vec![(b"".to_vec(), 0)]);
        assert_eq!(
            keys(&right),
            vec![(b"ccc".to_vec(), 3), (b"dddd".to_vec(), 2)]
        );
        l.append(right);
        l.check(8);
        for (_, v) in l.iter_mut() {
            *v += 10;
        }
        assert_eq!(
            keys(&l),
            vec![
                (b"".to_vec(), 10),
                (b"ccc".to_vec(), 13),
                (b"dddd".to_vec(), 12)
            ]
        );
    }

    #[test]
    fn a_leaf_that_fills_holds_no_spare_room() {
        let mut l = Leaf::with_capacity(5);
        for (i, k) in [b"a1", b"a2", b"a3", b"a4", b"a5"].iter().enumerate() {
            l.push(&k[..], i as u32);
        }
        l.check(5);
        assert_eq!(l.bytes.capacity(), 10);
        l.remove(4);
        l.push(b"a9", 9);
        l.check(5);
        let mut half = Leaf::with_capacity(5);
        half.push(b"a0", 0);
        let right = l.split_off(1);
        half.append(right);
        assert_eq!(half.len(), 5);
        half.check(5);
    }
}
