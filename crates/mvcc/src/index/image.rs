//! The key index as bytes: what a cleanly stopped member keeps so that its next start need not
//! rebuild the index by scanning every record of the `key` bucket.
//!
//! An image is only as good as its match with the backend. It carries a [`Fingerprint`] of the
//! backend taken when it was made (the `key` bucket's record count and greatest key, the
//! compaction marks, the consistent index and term); [`decode`] refuses an image whose
//! fingerprint differs from the backend's now. Every applied Raft entry moves the consistent
//! index, a write also adds a record at a new, greater revision, and a compaction moves its marks
//! and deletes records, so an image that matches describes the same records a scan would read.
//! The caller also deletes the image before anything writes (see the server's `index_image`), so
//! an old image is never offered again.
//!
//! Format, integers little-endian or LEB128 varints: `MAGIC`, the format version, the
//! fingerprint and the current revision, the number of keys, then each key in ascending byte
//! order (length, bytes, generations), and last a CRC-32C of everything before it. Revisions are
//! varints: most are a few bytes, so 2M keys of 16 bytes take about 56 MB.
//!
//! Decoding never panics and never trusts a length: every count is checked against the bytes
//! left, the keys must ascend, and each key's history must be one the index can hold (revisions
//! strictly ascending, no empty generation but the last, none above the current revision).

use std::ops::Bound;

use smallvec::SmallVec;

use super::{Generation, KeyIndex, TreeIndex};
use crate::packed::PackedMap;
use crate::revision::Revision;

const MAGIC: &[u8; 8] = b"HEARTHKI";
const VERSION: u32 = 1;

/// What the backend held when an image was made; an image is used only if the backend still
/// holds exactly this.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    /// Records in the `key` bucket.
    pub(crate) records: u64,
    /// The `key` bucket's greatest key (empty if the bucket is empty).
    pub(crate) last_key: Vec<u8>,
    /// The finished and scheduled compaction marks' revisions, -1 when absent.
    pub(crate) finished: i64,
    pub(crate) scheduled: i64,
    pub(crate) consistent_index: u64,
    pub(crate) term: u64,
}

/// Why an image was not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ImageError {
    #[error("the image is damaged: {0}")]
    Damaged(String),
    #[error("the backend changed after the image was made ({0})")]
    Stale(String),
}

fn damaged(what: impl Into<String>) -> ImageError {
    ImageError::Damaged(what.into())
}

/// The image of `index` at `current_rev`, taken when the backend matched `fp`.
pub(crate) fn encode(fp: &Fingerprint, current_rev: i64, index: &TreeIndex) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + index.len() * 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&fp.records.to_le_bytes());
    put_varint(&mut out, fp.last_key.len() as u64);
    out.extend_from_slice(&fp.last_key);
    for v in [fp.finished, fp.scheduled, current_rev] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&fp.consistent_index.to_le_bytes());
    out.extend_from_slice(&fp.term.to_le_bytes());
    out.extend_from_slice(&(index.len() as u64).to_le_bytes());
    for (key, ki) in index.tree.range(Bound::Unbounded, Bound::Unbounded) {
        put_varint(&mut out, key.len() as u64);
        out.extend_from_slice(key);
        put_varint(&mut out, ki.generations.len() as u64);
        for g in &ki.generations {
            put_varint(&mut out, g.ver as u64);
            put_rev(&mut out, g.created);
            put_varint(&mut out, g.revs.len() as u64);
            for r in &g.revs {
                put_rev(&mut out, *r);
            }
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The index and current revision an image holds, if it is intact and `now` is the fingerprint
/// it was made with.
pub(crate) fn decode(bytes: &[u8], now: &Fingerprint) -> Result<(TreeIndex, i64), ImageError> {
    decode_with(bytes, |fp| {
        if fp == now {
            Ok(())
        } else {
            Err(ImageError::Stale(describe_difference(fp, now)))
        }
    })
}

/// [`decode`], with `accept` deciding on the image's fingerprint before the keys are read.
pub(crate) fn decode_with(
    bytes: &[u8],
    accept: impl FnOnce(&Fingerprint) -> Result<(), ImageError>,
) -> Result<(TreeIndex, i64), ImageError> {
    let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
        return Err(damaged("shorter than its checksum"));
    };
    if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
        return Err(damaged("checksum mismatch"));
    }
    let mut r = Bytes(body);
    if r.take(MAGIC.len())? != MAGIC {
        return Err(damaged("not a key index image"));
    }
    let version = u32::from_le_bytes(r.array()?);
    if version != VERSION {
        return Err(damaged(format!("format version {version}, not {VERSION}")));
    }
    let records = u64::from_le_bytes(r.array()?);
    let last_len = r.len()?;
    let fp = Fingerprint {
        records,
        last_key: r.take(last_len)?.to_vec(),
        finished: i64::from_le_bytes(r.array()?),
        scheduled: i64::from_le_bytes(r.array()?),
        consistent_index: 0,
        term: 0,
    };
    let current_rev = i64::from_le_bytes(r.array()?);
    let fp = Fingerprint {
        consistent_index: u64::from_le_bytes(r.array()?),
        term: u64::from_le_bytes(r.array()?),
        ..fp
    };
    accept(&fp)?;
    let keys = u64::from_le_bytes(r.array()?);
    let mut failure = None;
    let mut prev: Option<&[u8]> = None;
    let mut read = 0u64;
    let entries = std::iter::from_fn(|| {
        if read == keys || failure.is_some() {
            return None;
        }
        read += 1;
        match entry(&mut r, prev, current_rev) {
            Ok((k, ki)) => {
                prev = Some(k);
                Some((k, ki))
            }
            Err(e) => {
                failure = Some(e);
                None
            }
        }
    });
    let tree = PackedMap::from_sorted(entries);
    if let Some(e) = failure {
        return Err(e);
    }
    if !r.0.is_empty() {
        return Err(damaged(format!("{} bytes after the last key", r.0.len())));
    }
    Ok((TreeIndex { tree }, current_rev))
}

fn describe_difference(image: &Fingerprint, now: &Fingerprint) -> String {
    let mut parts = Vec::new();
    if image.records != now.records {
        parts.push(format!("records {} now {}", image.records, now.records));
    }
    if image.last_key != now.last_key {
        parts.push("last record differs".to_string());
    }
    if (image.finished, image.scheduled) != (now.finished, now.scheduled) {
        parts.push(format!(
            "compaction {}/{} now {}/{}",
            image.finished, image.scheduled, now.finished, now.scheduled
        ));
    }
    if (image.consistent_index, image.term) != (now.consistent_index, now.term) {
        parts.push(format!(
            "consistent index {} now {}",
            image.consistent_index, now.consistent_index
        ));
    }
    parts.join(", ")
}

/// One key and its history; `prev` is the key before it.
fn entry<'a>(
    r: &mut Bytes<'a>,
    prev: Option<&[u8]>,
    current_rev: i64,
) -> Result<(&'a [u8], KeyIndex), ImageError> {
    let len = r.len()?;
    let key = r.take(len)?;
    if prev.is_some_and(|p| p >= key) {
        return Err(damaged("keys out of order"));
    }
    let n = r.len()?;
    if n == 0 {
        return Err(damaged("a key without history"));
    }
    let mut generations = SmallVec::new();
    let mut last = Revision::default();
    for i in 0..n {
        let ver = r.int()?;
        let created = r.rev()?;
        let count = r.len()?;
        if count == 0 && (i + 1 < n || n == 1) {
            return Err(damaged("an empty generation before the last"));
        }
        let mut revs = SmallVec::new();
        for _ in 0..count {
            let rev = r.rev()?;
            if rev <= last || rev.main > current_rev {
                return Err(damaged("revisions out of order"));
            }
            last = rev;
            revs.push(rev);
        }
        generations.push(Generation { ver, created, revs });
    }
    Ok((key, KeyIndex { generations }))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Revisions, versions and counts are never negative in an index; as varints they are short.
fn put_rev(out: &mut Vec<u8>, r: Revision) {
    put_varint(out, r.main as u64);
    put_varint(out, r.sub as u64);
}

/// A reader over an image's bytes that fails, rather than panics, at the end.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ImageError> {
        if n > self.0.len() {
            return Err(damaged("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ImageError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn varint(&mut self) -> Result<u64, ImageError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.take(1)?.first().unwrap_or(&0);
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(damaged("a varint longer than ten bytes"))
    }

    /// A count or length: no more than the bytes left, so nothing is sized from a forged one.
    fn len(&mut self) -> Result<usize, ImageError> {
        let v = self.varint()?;
        usize::try_from(v)
            .ok()
            .filter(|&n| n <= self.0.len())
            .ok_or_else(|| damaged("a length beyond the end"))
    }

    fn int(&mut self) -> Result<i64, ImageError> {
        i64::try_from(self.varint()?).map_err(|_| damaged("a negative number"))
    }

    fn rev(&mut self) -> Result<Revision, ImageError> {
        Ok(Revision::new(self.int()?, self.int()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp() -> Fingerprint {
        Fingerprint {
            records: 9,
            last_key: b"last".to_vec(),
            finished: 3,
            scheduled: 4,
            consistent_index: 77,
            term: 2,
        }
    }

    /// Keys with several generations, tombstones, and a compaction that drops some of them.
    fn sample() -> TreeIndex {
        let mut t = TreeIndex::default();
        let mut rev = 1;
        let mut next = || {
            rev += 1;
            Revision::new(rev, 0)
        };
        for i in 0..200u32 {
            let key = format!("key/{:03}", (i * 37) % 200).into_bytes();
            t.put(&key, next()).unwrap();
            if i % 3 == 0 {
                t.put(&key, next()).unwrap();
            }
            if i % 5 == 0 {
                t.tombstone(&key, next()).unwrap();
            }
            if i % 10 == 0 {
                t.put(&key, next()).unwrap();
            }
        }
        let mut keep = std::collections::HashSet::new();
        t.compact_chunk(100, None, usize::MAX, &mut keep);
        t
    }

    #[test]
    fn an_image_gives_back_the_same_index() {
        let t = sample();
        let image = encode(&fp(), 500, &t);
        let (back, rev) = decode(&image, &fp()).unwrap();
        assert_eq!(rev, 500);
        assert_eq!(back.entries(), t.entries());
        assert!(t.len() > 100);
        let (empty, _) = decode(&encode(&fp(), 1, &TreeIndex::default()), &fp()).unwrap();
        assert_eq!(empty.len(), 0);
    }

    #[test]
    fn a_different_backend_makes_the_image_stale() {
        let image = encode(&fp(), 500, &sample());
        let changes: [fn(&mut Fingerprint); 6] = [
            |f| f.records += 1,
            |f| f.last_key.push(0),
            |f| f.finished = -1,
            |f| f.scheduled += 1,
            |f| f.consistent_index += 1,
            |f| f.term += 1,
        ];
        for change in changes {
            let mut now = fp();
            change(&mut now);
            assert!(matches!(decode(&image, &now), Err(ImageError::Stale(_))));
        }
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let image = encode(&fp(), 500, &sample());
        for n in 0..image.len() {
            assert!(decode(&image[..n], &fp()).is_err(), "truncated to {n}");
        }
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..1000 {
            let mut bad = image.clone();
            let at = rng.usize(..bad.len());
            bad[at] ^= 1 << rng.u32(..8);
            assert!(matches!(decode(&bad, &fp()), Err(ImageError::Damaged(_))));
            // With the checksum made to fit: the checks below it still hold.
            let body = bad.len() - 4;
            let crc = crc32c::crc32c(&bad[..body]);
            bad[body..].copy_from_slice(&crc.to_le_bytes());
            if let Ok((t, rev)) = decode(&bad, &fp()) {
                check_well_formed(&t, rev);
            }
        }
    }

    /// What the index's code relies on: keys ascending, histories that can be read.
    fn check_well_formed(t: &TreeIndex, rev: i64) {
        let entries = t.entries();
        assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        for (_, ki) in &entries {
            assert!(!ki.is_empty());
            let revs: Vec<Revision> = ki.generations.iter().flat_map(|g| g.revs.clone()).collect();
            assert!(revs.windows(2).all(|w| w[0] < w[1]));
            assert!(revs.iter().all(|r| r.main <= rev));
            for at in [0, 1, 100, rev / 2, rev] {
                let _ = ki.get(at);
            }
        }
    }

    #[test]
    fn a_varint_stops_at_ten_bytes() {
        let mut r = Bytes(&[0xff; 11]);
        assert!(r.varint().is_err());
        let mut out = Vec::new();
        put_varint(&mut out, u64::MAX);
        assert_eq!(out.len(), 10);
        assert_eq!(Bytes(&out).varint().unwrap(), u64::MAX);
    }
}
