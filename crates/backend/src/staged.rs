//! Writes staged until the transaction commits, for records that every request overwrites.
//!
//! The server writes the Raft consistent index and term into `meta` with every applied entry, in
//! the same transaction as the entry's data, and applies a batch of entries in one transaction
//! (see [`WriteTxn::defer`](crate::WriteTxn::defer)). Only the batch's last values survive its
//! commit, so [`WriteTxn::stage`](crate::WriteTxn::stage) keeps the value here and the commit
//! writes it once: a put request then opens one table instead of three.
//!
//! The staged values belong to the transaction, not to its owner: whichever commit ends it (its
//! owner's, another writer's after a defer, `force_commit`, a defragmentation's) writes them
//! first, so a committed file never holds an entry's data without the index that goes with it.
//! Reads through the transaction see them; a direct write or delete of a staged key replaces it.

use crate::Bucket;

/// The staged writes of one transaction: a few keys, each with its latest value.
#[derive(Default)]
pub(crate) struct Staged(Vec<(Bucket, Vec<u8>, Vec<u8>)>);

impl Staged {
    /// Stages `value` under `key`, replacing what was staged there (reusing its buffer).
    pub(crate) fn set(&mut self, bucket: Bucket, key: &[u8], value: &[u8]) {
        match self.0.iter_mut().find(|(b, k, _)| *b == bucket && k == key) {
            Some((_, _, v)) => {
                v.clear();
                v.extend_from_slice(value);
            }
            None => self.0.push((bucket, key.to_vec(), value.to_vec())),
        }
    }

    /// Drops what is staged under `key`: a direct write of it comes later and wins.
    pub(crate) fn forget(&mut self, bucket: Bucket, key: &[u8]) {
        self.0.retain(|(b, k, _)| !(*b == bucket && k == key));
    }

    /// Drops what is staged in `[start, end)` (`end: None` = to the end of the bucket).
    pub(crate) fn forget_range(&mut self, bucket: Bucket, start: &[u8], end: Option<&[u8]>) {
        self.0
            .retain(|(b, k, _)| !(*b == bucket && in_range(k, start, end)));
    }

    pub(crate) fn get(&self, bucket: Bucket, key: &[u8]) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(b, k, _)| *b == bucket && k == key)
            .map(|(_, _, v)| v.as_slice())
    }

    /// The staged pairs of `bucket` in `[start, end)`, in no particular order.
    pub(crate) fn in_range<'a>(
        &'a self,
        bucket: Bucket,
        start: &'a [u8],
        end: Option<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        self.0
            .iter()
            .filter(move |(b, k, _)| *b == bucket && in_range(k, start, end))
            .map(|(_, k, v)| (k.as_slice(), v.as_slice()))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Takes every staged write, grouped by bucket (so each table is opened once).
    pub(crate) fn take(&mut self) -> Vec<(Bucket, Vec<u8>, Vec<u8>)> {
        let mut all = std::mem::take(&mut self.0);
        all.sort_by_key(|(b, _, _)| *b);
        all
    }
}

fn in_range(key: &[u8], start: &[u8], end: Option<&[u8]>) -> bool {
    key >= start && end.is_none_or(|e| key < e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_value_replaces_the_staged_one() {
        let mut s = Staged::default();
        s.set(Bucket::Meta, b"ci", &1u64.to_be_bytes());
        s.set(Bucket::Meta, b"term", &1u64.to_be_bytes());
        s.set(Bucket::Meta, b"ci", &2u64.to_be_bytes());
        assert_eq!(s.get(Bucket::Meta, b"ci"), Some(&2u64.to_be_bytes()[..]));
        assert_eq!(s.get(Bucket::Key, b"ci"), None);
        assert_eq!(s.take().len(), 2);
        assert!(s.is_empty());
    }

    #[test]
    fn forgetting_a_range_keeps_what_is_outside_it() {
        let mut s = Staged::default();
        for k in [b"a", b"b", b"c"] {
            s.set(Bucket::Meta, k, b"v");
        }
        s.set(Bucket::Lease, b"b", b"v");
        s.forget_range(Bucket::Meta, b"b", Some(b"c"));
        assert!(s.get(Bucket::Meta, b"b").is_none());
        assert!(s.get(Bucket::Meta, b"a").is_some() && s.get(Bucket::Meta, b"c").is_some());
        assert!(s.get(Bucket::Lease, b"b").is_some());
        s.forget_range(Bucket::Meta, b"a", None);
        assert_eq!(s.in_range(Bucket::Meta, b"", None).count(), 0);
        s.forget(Bucket::Lease, b"b");
        assert!(s.is_empty());
    }
}
