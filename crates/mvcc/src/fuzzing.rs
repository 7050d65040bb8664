//! The entry of the `backend_key` fuzz target (`fuzz/`, `docs/fuzzing.md`), also run for a
//! bounded number of iterations by this crate's tests: what the store reads back from the backend's
//! `key` bucket at start-up, where a damaged or foreign file may have put anything.
//!
//! The input is a list of records as the bucket would hold them; they are rebuilt into a key index
//! with the checks `KvStore::open` makes (revision key, `KeyValue`, the record's own consistency),
//! and the index is then read and compacted at every revision it mentions. Besides not panicking,
//! a decoded revision key must be the one encoding of what it decodes to.

use std::collections::{BTreeMap, HashSet};

use prost::Message as _;

use crate::index::{image, IndexBuilder, TreeIndex};
use crate::revision::{BucketKey, Revision};
use crate::store::restore_record;
use crate::KeyValue;

/// Records from the input: each a key length byte, the key, a value length byte, the value.
pub fn records(data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&klen, tail)) = rest.split_first() {
        let Some((k, tail)) = tail.split_at_checked(usize::from(klen)) else {
            break;
        };
        let Some((&vlen, tail)) = tail.split_first() else {
            break;
        };
        let Some((v, tail)) = tail.split_at_checked(usize::from(vlen)) else {
            break;
        };
        out.push((k, v));
        rest = tail;
    }
    out
}

/// The inverse of [`records`], for building seeds (keys and values up to 255 bytes).
pub fn encode_records(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        out.push(u8::try_from(k.len()).expect("a short key"));
        out.extend_from_slice(k);
        out.push(u8::try_from(v.len()).expect("a short value"));
        out.extend_from_slice(v);
    }
    out
}

/// The fuzz entry.
pub fn fuzz_backend_key(data: &[u8]) {
    if let Ok(bk) = BucketKey::from_bytes(data) {
        assert_eq!(bk.to_bytes(), data, "a revision key has one encoding");
        assert!(bk.rev.main >= 0 && bk.rev.sub >= 0);
    }

    // The bucket holds each key once, in byte order; the scan starts at revision 1.
    let start = Revision::new(1, 0).to_bytes();
    let bucket: BTreeMap<&[u8], &[u8]> = records(data)
        .into_iter()
        .filter(|(k, _)| *k >= &start[..])
        .collect();
    let mut index = IndexBuilder::default();
    let mut revs = vec![i64::MIN, -1, 0, 1, i64::MAX];
    let mut keys = Vec::new();
    for (k, v) in &bucket {
        match restore_record(&mut index, k, v) {
            Ok(main) => revs.push(main),
            Err(_) => break,
        }
        if let Ok(kv) = KeyValue::decode(*v) {
            keys.push(kv.key);
        }
    }
    let mut index = index.finish();
    revs.sort_unstable();
    revs.dedup();
    for &at in &revs {
        for key in &keys {
            if let Some(found) = index.get(key, at) {
                assert!(found.modified.main <= at, "{found:?} visible at {at}");
            }
        }
        let (_, total) = index.revisions(b"", Some(b""), at, 1);
        assert_eq!(total, index.count_revisions(b"", Some(b""), at));
        let _ = index.keep(at);
    }
    for &at in revs.iter().filter(|&&r| r >= 0) {
        let mut available = HashSet::new();
        let mut after = None;
        while let Some(last) = index.compact_chunk(at, after.as_deref(), 3, &mut available) {
            after = Some(last);
        }
    }
}

/// The entry of the `index_image` fuzz target: a key index image as a clean stop writes it
/// (`member/snap/db.keyindex`), without its trailing checksum, which is added here so the input
/// reaches the decoder's other checks. Whatever fingerprint it carries is accepted. An index it
/// yields must hold keys in order with readable histories, and encode to an image that decodes
/// to the same index.
pub fn fuzz_index_image(data: &[u8]) {
    let mut image = data.to_vec();
    image.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    let mut seen = None;
    let Ok((index, rev)) = image::decode_with(&image, |fp| {
        seen = Some(fp.clone());
        Ok(())
    }) else {
        return;
    };
    let fp = seen.expect("a decoded image has a fingerprint");
    let again = index.image(&fp, rev);
    let (back, back_rev) = TreeIndex::from_image(&again, &fp).expect("a written image decodes");
    assert_eq!(back_rev, rev);
    let entries = index.entries();
    assert_eq!(back.entries(), entries);
    assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "keys in order");
    for at in [0, 1, rev / 2, rev] {
        let (_, total) = index.revisions(b"", Some(b""), at, 1);
        assert_eq!(total, index.count_revisions(b"", Some(b""), at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history as the store writes it: puts of a few keys over revisions 2..=40, some deleted
    /// and recreated, and the latest (main) revision of each key's last put, or `None` if deleted.
    /// Records of the `key` bucket, `(key, value)` in key order.
    type Records = Vec<(Vec<u8>, Vec<u8>)>;

    fn history() -> (Records, BTreeMap<Vec<u8>, Option<i64>>) {
        let mut records = Vec::new();
        let mut state: BTreeMap<Vec<u8>, (i64, i64, bool)> = BTreeMap::new();
        let mut last = BTreeMap::new();
        for main in 2..=40i64 {
            let key = format!("k{}", main % 5).into_bytes();
            let (created, version, live) = state.get(&key).copied().unwrap_or((0, 0, false));
            if live && main % 7 == 0 {
                let kv = KeyValue {
                    key: key.clone(),
                    ..Default::default()
                };
                let bk = BucketKey::new(Revision::new(main, 0), true);
                records.push((bk.to_bytes(), kv.encode_to_vec()));
                state.insert(key.clone(), (0, 0, false));
                last.insert(key, None);
                continue;
            }
            let (created, version) = if live {
                (created, version + 1)
            } else {
                (main, 1)
            };
            let kv = KeyValue {
                key: key.clone(),
                create_revision: created,
                mod_revision: main,
                version,
                value: vec![main as u8; (main % 4) as usize],
                lease: if main % 3 == 0 { 7 } else { 0 },
            };
            let bk = BucketKey::new(Revision::new(main, 0), false);
            records.push((bk.to_bytes(), kv.encode_to_vec()));
            state.insert(key.clone(), (created, version, true));
            last.insert(key, Some(main));
        }
        (records, last)
    }

    /// The index a start rebuilds from `recs`.
    fn rebuilt(recs: &Records) -> TreeIndex {
        let mut index = IndexBuilder::default();
        for (k, v) in recs {
            restore_record(&mut index, k, v).unwrap();
        }
        index.finish()
    }

    #[test]
    fn valid_records_rebuild_the_index() {
        let (recs, last) = history();
        let index = rebuilt(&recs);
        for (key, want) in last {
            let got = index.get(&key, 40).map(|f| f.modified.main);
            assert_eq!(got, want, "{}", String::from_utf8_lossy(&key));
        }
    }

    #[test]
    fn bounded_fuzz_of_backend_keys() {
        let (recs, _) = history();
        let mut seeds = vec![encode_records(&recs)];
        for chunk in recs.chunks(6) {
            seeds.push(encode_records(chunk));
        }
        seeds.push(recs[0].0.clone());
        seeds.push(BucketKey::new(Revision::new(i64::MAX, i64::MAX), true).to_bytes());
        fuzzcorpus::run(0x6b65_7973, &seeds, 3000, fuzz_backend_key);
    }

    #[test]
    fn bounded_fuzz_of_index_images() {
        let index = rebuilt(&history().0);
        let fp = crate::index::Fingerprint::default();
        let mut seeds = Vec::new();
        for rev in [40, 1, 0] {
            let mut image = index.image(&fp, rev);
            image.truncate(image.len() - 4);
            seeds.push(image);
        }
        fuzzcorpus::run(0x696d_6167, &seeds, 3000, fuzz_index_image);
    }
}
