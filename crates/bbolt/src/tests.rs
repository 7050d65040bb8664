//! Round trips through the writer and reader, the golden file etcd 3.4 wrote, and damaged files.

use std::io::Write as _;

use super::*;
use crate::page::{PageHeader, PAGE_HEADER};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn write_tmp(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f.flush().unwrap();
    f
}

fn read_all(db: &Db) -> Vec<(Vec<u8>, Entries)> {
    db.buckets()
        .unwrap()
        .into_iter()
        .map(|(name, b)| {
            let mut entries = Vec::new();
            db.for_each(&b, &mut |e| {
                assert!(!e.is_bucket);
                entries.push((e.key.to_vec(), e.value.to_vec()));
                true
            })
            .unwrap();
            (name, entries)
        })
        .collect()
}

fn rev_key(main: u64, sub: u64) -> Vec<u8> {
    let mut k = main.to_be_bytes().to_vec();
    k.push(b'_');
    k.extend_from_slice(&sub.to_be_bytes());
    k
}

/// Buckets shaped like etcd's: a large `key` bucket, small and empty ones.
fn sample(keys: u64, value_len: usize) -> Vec<(&'static [u8], Entries)> {
    let key: Entries = (1..=keys)
        .map(|i| (rev_key(i, 0), vec![(i % 251) as u8; value_len]))
        .collect();
    vec![
        (&b"alarm"[..], vec![]),
        (&b"key"[..], key),
        (
            &b"lease"[..],
            (1..40u64)
                .map(|i| (i.to_be_bytes().to_vec(), vec![8; 20]))
                .collect(),
        ),
        (
            &b"meta"[..],
            vec![(b"consistent_index".to_vec(), 9u64.to_be_bytes().to_vec())],
        ),
    ]
}

fn round_trip(page_size: usize, buckets: &[(&[u8], Entries)]) -> Vec<u8> {
    let bytes = build(page_size, buckets).unwrap();
    assert_eq!(bytes.len() % page_size, 0);
    let f = write_tmp(&bytes);
    let db = Db::open(f.path()).unwrap();
    assert_eq!(db.size(), bytes.len() as u64);
    assert_eq!(db.page_size(), page_size);
    assert_eq!(db.check().unwrap(), Vec::<String>::new());
    let back = read_all(&db);
    let want: Vec<(Vec<u8>, Entries)> = buckets
        .iter()
        .map(|(n, e)| (n.to_vec(), e.clone()))
        .collect();
    assert_eq!(back, want);
    bytes
}

#[test]
fn empty_and_small_buckets_are_inline() {
    let mut buckets = sample(3, 10);
    buckets.retain(|(n, _)| *n != b"lease");
    let bytes = round_trip(4096, &buckets);
    // Metas, freelist, and one root leaf holding every (inline) bucket.
    assert_eq!(bytes.len(), 4 * 4096);
    let f = write_tmp(&bytes);
    let db = Db::open(f.path()).unwrap();
    for (_, b) in db.buckets().unwrap() {
        assert!(matches!(b, BucketRef::Inline(_)));
    }
    // 39 lease records take more than a quarter page: a page of their own.
    let f = write_tmp(&round_trip(4096, &sample(3, 10)));
    let db = Db::open(f.path()).unwrap();
    assert!(matches!(
        db.bucket(b"lease").unwrap(),
        Some(BucketRef::Tree(_))
    ));
}

#[test]
fn large_buckets_make_multi_level_trees() {
    // 30k records of 100 bytes: three levels of pages.
    round_trip(4096, &sample(30_000, 100));
    // Smaller pages, more levels.
    round_trip(1024, &sample(5_000, 30));
}

#[test]
fn values_larger_than_a_page_use_overflow_pages() {
    let mut buckets = sample(50, 10);
    buckets[1].1[7].1 = vec![7; 3 * 4096 + 5];
    buckets[1].1[8].1 = vec![8; 10_000];
    buckets[1].1[40].1 = vec![9; 4000];
    round_trip(4096, &buckets);
}

#[test]
fn long_keys_keep_branches_at_two_children_at_least() {
    let keys: Entries = (0..200u32)
        .map(|i| {
            let mut k = vec![b'k'; 3000];
            k.extend_from_slice(&i.to_be_bytes());
            (k, b"v".to_vec())
        })
        .collect();
    round_trip(4096, &[(&b"big"[..], keys)]);
}

#[test]
fn writing_refuses_unsorted_or_empty_keys_and_names() {
    let e = build(4096, &[(&b"b"[..], vec![]), (&b"a"[..], vec![])]).unwrap_err();
    assert!(matches!(e, Error::Unsorted(_)), "{e}");
    let e = build(
        4096,
        &[(
            &b"a"[..],
            vec![(b"2".to_vec(), vec![]), (b"1".to_vec(), vec![])],
        )],
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsorted(_)), "{e}");
    let e = build(4096, &[(&b"a"[..], vec![(vec![], vec![])])]).unwrap_err();
    assert!(matches!(e, Error::TooLarge(_)), "{e}");
    assert!(Planner::new(1000).is_err());
}

#[test]
fn a_second_pass_with_other_data_is_caught() {
    let mut planner = Planner::new(4096).unwrap();
    let mut b = planner.bucket(b"key").unwrap();
    for i in 0..1000u64 {
        b.push(&rev_key(i, 0), &[1; 50]).unwrap();
    }
    b.finish().unwrap();
    let plan = planner.finish().unwrap();
    let mut w = plan.writer(b"key").unwrap();
    let mut out = Vec::new();
    for i in 0..900u64 {
        w.push(&rev_key(i, 0), &[1; 50], &mut out).unwrap();
    }
    let e = w.finish(&mut out).unwrap_err();
    assert!(matches!(e, Error::PlanMismatch(_)), "{e}");
}

/// A file etcd 3.4.23 wrote (`etcdctl snapshot save` after puts, a delete, a lease, a user, a
/// role and a compaction), trailer removed. Its every bucket is inline and its freelist is not
/// stored (etcd runs bbolt with `NoFreelistSync`).
fn etcd_fixture() -> Vec<u8> {
    let mut b = include_bytes!("../tests/data/etcd-3.4.23-small.db").to_vec();
    assert_eq!(b.len() % 512, 32, "the fixture keeps etcd's sha256 trailer");
    b.truncate(b.len() - 32);
    b
}

#[test]
fn reads_what_etcd_wrote() {
    let bytes = etcd_fixture();
    let f = write_tmp(&bytes);
    let db = Db::open(f.path()).unwrap();
    assert_eq!(db.meta().freelist, NO_FREELIST);
    assert_eq!(db.size(), 20480);
    assert_eq!(db.check().unwrap(), Vec::<String>::new());
    let all = read_all(&db);
    let names: Vec<&[u8]> = all.iter().map(|(n, _)| n.as_slice()).collect();
    assert_eq!(
        names,
        [
            &b"alarm"[..],
            b"auth",
            b"authRoles",
            b"authUsers",
            b"cluster",
            b"key",
            b"lease",
            b"members",
            b"members_removed",
            b"meta"
        ]
    );
    let get = |b: &str| &all.iter().find(|(n, _)| n == b.as_bytes()).unwrap().1;
    assert_eq!(
        get("cluster"),
        &vec![(b"clusterVersion".to_vec(), b"3.4.0".to_vec())]
    );
    let keys = get("key");
    assert_eq!(keys.len(), 5);
    assert_eq!(keys[0].0, rev_key(2, 0));
    // The delete of b at revision 5 is a tombstone: the revision and a trailing 't'.
    assert!(keys.iter().any(|(k, _)| k.len() == 18 && k[17] == b't'));
    let meta: Vec<&[u8]> = get("meta").iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(
        meta,
        [
            &b"consistent_index"[..],
            b"finishedCompactRev",
            b"scheduledCompactRev"
        ]
    );
}

#[test]
fn rewriting_etcds_file_keeps_every_entry() {
    let f = write_tmp(&etcd_fixture());
    let db = Db::open(f.path()).unwrap();
    let all = read_all(&db);
    let buckets: Vec<(&[u8], Entries)> =
        all.iter().map(|(n, e)| (n.as_slice(), e.clone())).collect();
    round_trip(4096, &buckets);
}

#[test]
fn foreign_files_are_not_bbolt() {
    for bytes in [
        b"redb\x1a\x0a\xa9\x0d\x0a and more bytes to fill a header of eighty bytes at least ......."
            .to_vec(),
        vec![0u8; 8192],
        b"short".to_vec(),
    ] {
        let f = write_tmp(&bytes);
        let e = Db::open(f.path()).unwrap_err();
        assert!(matches!(e, Error::NotBbolt(_)), "{e}");
        assert!(!looks_like_bbolt(&bytes));
    }
    assert!(looks_like_bbolt(&etcd_fixture()));
}

#[test]
fn a_truncated_file_is_refused_at_open() {
    let bytes = build(4096, &sample(2000, 50)).unwrap();
    for cut in [4096, 3 * 4096, bytes.len() - 4096, bytes.len() - 1] {
        let f = write_tmp(&bytes[..cut]);
        let e = Db::open(f.path()).unwrap_err();
        assert!(matches!(e, Error::Truncated(_)), "cut at {cut}: {e}");
        assert!(e.to_string().contains("pages"), "{e}");
    }
}

#[test]
fn one_damaged_meta_falls_back_to_the_other() {
    let mut bytes = build(4096, &sample(10, 10)).unwrap();
    bytes[PAGE_HEADER + 20] ^= 0xff;
    let f = write_tmp(&bytes);
    let db = Db::open(f.path()).unwrap();
    assert_eq!(db.meta().txid, 1);
    bytes[4096 + PAGE_HEADER + 20] ^= 0xff;
    let f = write_tmp(&bytes);
    let e = Db::open(f.path()).unwrap_err().to_string();
    assert!(e.contains("no valid meta page"), "{e}");
    assert!(e.contains("checksum mismatch"), "{e}");
}

#[test]
fn check_reports_unreachable_and_doubly_used_pages() {
    let bytes = build(4096, &sample(3000, 40)).unwrap();
    let pages = bytes.len() / 4096;

    // One more page in use that nothing points to.
    let mut grown = bytes.clone();
    grown.extend_from_slice(&[0u8; 4096]);
    set_meta_pgid(&mut grown, pages as u64 + 1);
    let f = write_tmp(&grown);
    let problems = Db::open(f.path()).unwrap().check().unwrap();
    assert_eq!(problems, vec![format!("page {pages}: unreachable unfreed")]);

    // A branch page whose two children are the same page.
    let mut twice = bytes.clone();
    let branch = (3..pages)
        .find(|&p| PageHeader::parse(&twice[p * 4096..]).unwrap().flags == 0x01)
        .unwrap();
    let first_child = u64::from_le_bytes(
        twice[branch * 4096 + PAGE_HEADER + 8..branch * 4096 + PAGE_HEADER + 16]
            .try_into()
            .unwrap(),
    );
    let at = branch * 4096 + PAGE_HEADER + 16 + 8;
    twice[at..at + 8].copy_from_slice(&first_child.to_le_bytes());
    let f = write_tmp(&twice);
    let db = Db::open(f.path()).unwrap();
    let problems = db.check().unwrap();
    assert!(
        problems.iter().any(|p| p.contains("multiple references")),
        "{problems:?}"
    );
    let key = db.bucket(b"key").unwrap().unwrap();
    let e = db.for_each(&key, &mut |_| true).unwrap_err().to_string();
    assert!(
        e.contains("outside the range its parent branch gives"),
        "{e}"
    );

    // A branch key that no longer matches its child (bbolt 1.3.8+ checks this too).
    let mut shifted = bytes.clone();
    let pos = u32::from_le_bytes(
        shifted[branch * 4096 + PAGE_HEADER + 16..branch * 4096 + PAGE_HEADER + 20]
            .try_into()
            .unwrap(),
    ) as usize;
    // The second element's key: raise its revision's last byte.
    let at = branch * 4096 + PAGE_HEADER + 16 + pos + 7;
    shifted[at] = shifted[at].wrapping_add(1);
    let f = write_tmp(&shifted);
    let db = Db::open(f.path()).unwrap();
    let problems = db.check().unwrap();
    assert!(
        problems.iter().any(|p| p.contains("outside the range")),
        "{problems:?}"
    );
}

fn set_meta_pgid(bytes: &mut [u8], pgid: u64) {
    for m in [0usize, 4096] {
        let at = m + PAGE_HEADER;
        let mut meta = Meta::parse(&bytes[at..]).unwrap();
        meta.pgid = pgid;
        bytes[at..at + 64].copy_from_slice(&meta.encode());
    }
}

/// Reads every bucket and runs the check; must return (an error or not), never panic or hang.
fn read_everything(bytes: &[u8]) -> Result<(), Error> {
    let f = write_tmp(bytes);
    let db = Db::open(f.path())?;
    let problems = db.check()?;
    if !problems.is_empty() {
        return Err(Error::Corrupt(problems.join("; ")));
    }
    for (_, b) in db.buckets()? {
        db.for_each(&b, &mut |_| true)?;
    }
    Ok(())
}

#[test]
fn random_damage_never_panics() {
    let clean = build(4096, &sample(3000, 40)).unwrap();
    let etcd = etcd_fixture();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut refused = 0;
    for round in 0..400 {
        let src = if round % 2 == 0 { &clean } else { &etcd };
        let mut bytes = src.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            bytes[at] ^= 1 << rng.below(8);
        }
        if round % 7 == 0 {
            let cut = rng.below(bytes.len());
            bytes.truncate(cut);
        }
        if let Err(e) = read_everything(&bytes) {
            assert!(!e.to_string().is_empty());
            refused += 1;
        }
    }
    // Most flips land in keys or values (harmless to the structure), but not all.
    assert!(refused > 10, "only {refused} damaged files were refused");
}

#[test]
fn damage_in_page_headers_is_named() {
    let clean = build(4096, &sample(3000, 40)).unwrap();
    let pages = clean.len() / 4096;
    for p in 3..pages {
        // The page type.
        let mut bytes = clean.clone();
        bytes[p * 4096 + 8] = 0x20;
        let e = read_everything(&bytes).unwrap_err().to_string();
        assert!(e.contains(&format!("page {p}")), "{e}");
        // The element count.
        let mut bytes = clean.clone();
        bytes[p * 4096 + 10..p * 4096 + 12].copy_from_slice(&0xfff0u16.to_le_bytes());
        let e = read_everything(&bytes).unwrap_err().to_string();
        assert!(e.contains(&format!("page {p}")), "{e}");
    }
}
