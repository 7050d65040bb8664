//! The entry of the `bbolt` fuzz target (`fuzz/`, `docs/fuzzing.md`), also run for a bounded number
//! of iterations by this crate's tests: bytes as a bbolt file, the file `hearthutl snapshot restore`
//! takes from a user (an etcd snapshot, or anything else).
//!
//! The file is opened, checked as `etcdctl snapshot status` does, and every bucket is walked (one
//! level of nesting too). Besides never panicking, looping or allocating what a damaged field
//! claims: every bucket of a file the check finds sound must be readable in full, and a walk
//! yields keys in strictly increasing order.

use crate::{bucket_ref, looks_like_bbolt, BucketRef, Db};

/// Walks bucket `b`, checking key order; returns the nested buckets met.
fn walk(db: &Db, b: &BucketRef) -> crate::Result<Vec<BucketRef>> {
    let mut last: Option<Vec<u8>> = None;
    let mut nested = Vec::new();
    db.for_each(b, &mut |e| {
        if let Some(l) = &last {
            assert!(l.as_slice() < e.key, "keys out of order in a walk");
        }
        last = Some(e.key.to_vec());
        if e.is_bucket {
            if let Ok(r) = bucket_ref(e.value) {
                nested.push(r);
            }
        }
        true
    })?;
    Ok(nested)
}

/// The fuzz entry.
pub fn fuzz_bbolt(data: &[u8]) {
    let _ = looks_like_bbolt(data);
    let Ok(db) = Db::from_bytes(data.to_vec()) else {
        return;
    };
    assert!(db.size() <= db.file_len());
    let sound = matches!(db.check(), Ok(p) if p.is_empty());
    // What a restore reads: the buckets of the root (refused if the root holds anything else,
    // which bbolt's check does not look at), and their entries.
    let _ = db.buckets();
    let read_all = || -> crate::Result<()> {
        for b in walk(&db, &db.root())? {
            for n in walk(&db, &b)? {
                walk(&db, &n)?;
            }
        }
        Ok(())
    };
    let read = read_all();
    if sound {
        if let Err(e) = read {
            panic!("a file the check finds sound cannot be read: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build, Entries};

    fn rev_key(main: u64) -> Vec<u8> {
        let mut k = main.to_be_bytes().to_vec();
        k.push(b'_');
        k.extend_from_slice(&0u64.to_be_bytes());
        k
    }

    /// Small files shaped like etcd's: inline buckets, a bucket of a few pages, an empty one.
    fn seeds() -> Vec<Vec<u8>> {
        let key: Entries = (1..60u64)
            .map(|i| (rev_key(i), vec![(i % 251) as u8; (i % 9) as usize]))
            .collect();
        let meta: Entries = vec![(b"consistent_index".to_vec(), 9u64.to_be_bytes().to_vec())];
        let small: Vec<(&[u8], Entries)> = vec![(b"alarm", vec![]), (b"meta", meta.clone())];
        let big: Vec<(&[u8], Entries)> = vec![(b"key", key), (b"meta", meta)];
        vec![build(1024, &small).unwrap(), build(1024, &big).unwrap()]
    }

    #[test]
    fn seeds_are_sound_and_read_back() {
        for s in seeds() {
            let db = Db::from_bytes(s.clone()).unwrap();
            assert_eq!(db.check().unwrap(), Vec::<String>::new());
            assert!(looks_like_bbolt(&s));
            fuzz_bbolt(&s);
        }
    }

    #[test]
    fn bounded_fuzz_of_bbolt_files() {
        fuzzcorpus::run(0x6262_6f6c, &seeds(), 2500, fuzz_bbolt);
    }
}
