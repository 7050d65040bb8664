use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backend::{Backend, BackendConfig, Bucket, Reader};

use crate::store::{META_FINISHED_COMPACT, META_SCHEDULED_COMPACT};
use crate::*;

/// Nothing becomes durable unless asked for (or the backend is closed).
fn lazy() -> BackendConfig {
    BackendConfig {
        batch_interval: Duration::from_secs(3600),
        batch_limit: usize::MAX,
        ..BackendConfig::default()
    }
}

/// Small batches so compaction takes several; no pauses.
fn cfg() -> StoreConfig {
    StoreConfig {
        compaction_batch_limit: 3,
        compaction_sleep_interval: Duration::ZERO,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        Fixture { _dir: dir, path }
    }

    fn open(&self) -> (Arc<Backend>, KvStore) {
        open_at(&self.path)
    }
}

fn open_at(path: &Path) -> (Arc<Backend>, KvStore) {
    let b = Arc::new(Backend::open(path, lazy()).unwrap());
    let s = KvStore::open_with_config(b.clone(), cfg()).unwrap();
    (b, s)
}

fn put(s: &KvStore, k: &str, v: &str) -> KeyValue {
    let mut w = s.write();
    let kv = w.put(k.as_bytes(), v.as_bytes(), 0);
    w.end(0, 0).unwrap();
    kv
}

fn del(s: &KvStore, k: &str, end: Option<&str>) -> i64 {
    let mut w = s.write();
    let (n, _) = w.delete_range(k.as_bytes(), end.map(str::as_bytes));
    w.end(0, 0).unwrap();
    n
}

fn get_at(s: &KvStore, k: &str, rev: i64) -> Option<KeyValue> {
    let opts = RangeOptions {
        rev,
        ..Default::default()
    };
    s.read()
        .range(k.as_bytes(), None, opts)
        .unwrap()
        .kvs
        .into_iter()
        .next()
}

fn get(s: &KvStore, k: &str) -> Option<KeyValue> {
    get_at(s, k, 0)
}

fn keys(r: &RangeResult) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn all(s: &KvStore, rev: i64) -> Result<RangeResult, MvccError> {
    let opts = RangeOptions {
        rev,
        ..Default::default()
    };
    s.read().range(b"", Some(b""), opts)
}

/// Every record of the `key` bucket, as (main, sub, tombstone).
fn records(b: &Backend) -> Vec<(i64, i64, bool)> {
    b.read()
        .unwrap()
        .range(Bucket::Key, b"", None, 0)
        .unwrap()
        .into_iter()
        .map(|(k, _)| {
            let bk = BucketKey::from_bytes(&k).unwrap();
            (bk.rev.main, bk.rev.sub, bk.tombstone)
        })
        .collect()
}

fn meta_rev(b: &Backend, key: &[u8]) -> Option<i64> {
    b.read()
        .unwrap()
        .get(Bucket::Meta, key)
        .unwrap()
        .map(|v| BucketKey::from_bytes(&v).unwrap().rev.main)
}

#[test]
fn revision_arithmetic() {
    let f = Fixture::new();
    let (_b, s) = f.open();
    assert_eq!(s.rev(), 1, "an empty store is at revision 1");
    assert_eq!(s.compact_rev(), 0);

    let kv = put(&s, "a", "1");
    assert_eq!(s.rev(), 2, "the first write makes 2");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));

    let kv = put(&s, "a", "2");
    assert_eq!(s.rev(), 3);
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));

    // A transaction without changes does not bump the revision.
    let w = s.write();
    assert_eq!(w.rev(), 3);
    assert!(w.end(0, 0).unwrap().is_empty());
    assert_eq!(s.rev(), 3);
    assert_eq!(del(&s, "missing", None), 0);
    assert_eq!(s.rev(), 3, "deleting a missing key changes nothing");

    assert_eq!(del(&s, "a", None), 1);
    assert_eq!(s.rev(), 4);
}

#[test]
fn generations_put_delete_recreate() {
    let f = Fixture::new();
    let (_b, s) = f.open();
    put(&s, "a", "v1"); // 2
    put(&s, "a", "v2"); // 3
    del(&s, "a", None); // 4
    assert_eq!(get(&s, "a"), None);
    let old = get_at(&s, "a", 3).unwrap();
    assert_eq!((old.value.as_slice(), old.version), (&b"v2"[..], 2));
    assert_eq!(get_at(&s, "a", 1), None, "did not exist yet");

    let kv = put(&s, "a", "v3"); // 5
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (5, 5, 1),
        "a put on a deleted key starts a new generation"
    );
    assert_eq!(get_at(&s, "a", 4), None);
    assert_eq!(get(&s, "a").unwrap(), kv);
    let kv = put(&s, "a", "v4"); // 6
    assert_eq!((kv.create_revision, kv.version), (5, 2));
    assert_eq!(get_at(&s, "a", 2).unwrap().value, b"v1");
}

#[test]
fn range_end_conventions_and_limits() {
    let f = Fixture::new();
    let (_b, s) = f.open();
    for k in ["a", "b", "c", "d"] {
        put(&s, k, k);
    }
    let r = s.read();
    let rng = |k: &str, e: Option<&str>| {
        keys(
            &r.range(k.as_bytes(), e.map(str::as_bytes), RangeOptions::default())
                .unwrap(),
        )
    };
    assert_eq!(rng("b", None), vec!["b"]);
    assert_eq!(rng("bb", None), Vec::<String>::new());
    assert_eq!(rng("b", Some("")), vec!["b", "c", "d"]);
    assert_eq!(rng("", Some("")), vec!["a", "b", "c", "d"]);
    assert_eq!(rng("b", Some("d")), vec!["b", "c"]);
    assert_eq!(rng("b", Some("cc")), vec!["b", "c"]);
    assert_eq!(rng("d", Some("b")), Vec::<String>::new(), "end <= key");
    assert_eq!(rng("b", Some("b")), Vec::<String>::new());

    let res = r
        .range(
            b"a",
            Some(b""),
            RangeOptions {
                limit: 2,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(keys(&res), vec!["a", "b"]);
    assert_eq!(res.count, 4, "count is the total before the limit");
    assert_eq!(res.rev, 5, "rev is the current revision");
    for limit in [0, -1, 10] {
        let res = r
            .range(
                b"a",
                Some(b""),
                RangeOptions {
                    limit,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(res.kvs.len(), 4, "limit {limit}");
    }
    let res = r
        .range(
            b"a",
            Some(b"c"),
            RangeOptions {
                count_only: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(res.kvs.is_empty());
    assert_eq!(res.count, 2);
    assert_eq!(res.rev, 5);
    let res = r
        .range(
            b"zz",
            None,
            RangeOptions {
                count_only: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(res.count, 0);
    // Each key-value here holds two bytes: a budget of 3 stops after the second one, a budget of
    // 1 still returns one, and the count is the whole range's either way.
    for (max_bytes, want) in [(3, vec!["a", "b"]), (1, vec!["a"]), (4, vec!["a", "b"])] {
        let res = r
            .range(
                b"a",
                Some(b""),
                RangeOptions {
                    max_bytes,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(keys(&res), want, "max_bytes {max_bytes}");
        assert_eq!(res.count, 4, "max_bytes {max_bytes}");
    }
    // Without the total, the count is what the index found up to the limit.
    for (key, end, limit, want) in [
        ("a", Some(""), 2, vec!["a", "b"]),
        ("b", Some(""), 0, vec!["b", "c", "d"]),
        ("b", Some("d"), 5, vec!["b", "c"]),
        ("c", None, 3, vec!["c"]),
        ("d", Some("b"), 3, vec![]),
    ] {
        let res = r
            .range(
                key.as_bytes(),
                end.map(str::as_bytes),
                RangeOptions {
                    limit,
                    no_total: true,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(keys(&res), want, "{key} {end:?} {limit}");
        assert_eq!(res.count, want.len() as i64, "{key} {end:?} {limit}");
    }
    let res = r
        .range(
            b"a",
            Some(b""),
            RangeOptions {
                limit: 3,
                max_bytes: 1,
                no_total: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((keys(&res), res.count), (vec!["a".to_string()], 3));
}

#[test]
fn historical_reads_and_revision_errors() {
    let f = Fixture::new();
    let (_b, s) = f.open();
    put(&s, "a", "1"); // 2
    put(&s, "b", "1"); // 3
    put(&s, "a", "2"); // 4
    del(&s, "b", None); // 5

    let at = |rev| keys(&all(&s, rev).unwrap());
    assert_eq!(at(1), Vec::<String>::new());
    assert_eq!(at(2), vec!["a"]);
    assert_eq!(at(3), vec!["a", "b"]);
    assert_eq!(at(4), vec!["a", "b"]);
    assert_eq!(at(5), vec!["a"]);
    assert_eq!(
        all(&s, 4).unwrap().rev,
        5,
        "rev reports the current revision"
    );
    assert_eq!(get_at(&s, "a", 3).unwrap().value, b"1");

    let e = all(&s, 6).unwrap_err();
    assert!(matches!(e, MvccError::FutureRev));
    assert_eq!(
        e.to_string(),
        "mvcc: required revision is a future revision"
    );

    s.compact(3).unwrap().wait().unwrap();
    let e = all(&s, 2).unwrap_err();
    assert!(matches!(e, MvccError::Compacted));
    assert_eq!(e.to_string(), "mvcc: required revision has been compacted");
    assert_eq!(
        at(3),
        vec!["a", "b"],
        "reading at the compacted revision is allowed"
    );
    assert_eq!(get_at(&s, "a", 3).unwrap().value, b"1");
    assert_eq!(at(0), vec!["a"]);
}

#[test]
fn one_transaction_is_one_revision() {
    let f = Fixture::new();
    let (b, s) = f.open();
    put(&s, "c", "old"); // 2
    let mut w = s.write();
    assert_eq!(w.begin_rev(), 2);
    let a1 = w.put(b"a", b"1", 0);
    let b1 = w.put(b"b", b"1", 7);
    let (n, prev) = w.delete_range(b"c", None);
    assert_eq!(n, 1);
    assert_eq!(prev[0].value, b"old");
    let a2 = w.put(b"a", b"2", 0);
    assert_eq!(w.changes_len(), 4);
    let events = w.end(0, 0).unwrap();
    assert_eq!(s.rev(), 3, "four changes, one revision");
    assert_eq!(a1.mod_revision, 3);
    assert_eq!(b1.mod_revision, 3);
    assert_eq!(b1.lease, 7);
    assert_eq!((a2.create_revision, a2.version), (3, 2));

    // Sub revisions count the changes; the delete is a tombstone record.
    assert_eq!(
        records(&b),
        vec![
            (2, 0, false),
            (3, 0, false),
            (3, 1, false),
            (3, 2, true),
            (3, 3, false)
        ]
    );
    let types: Vec<EventType> = events
        .iter()
        .map(|e| EventType::try_from(e.r#type).unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            EventType::Put,
            EventType::Put,
            EventType::Delete,
            EventType::Put
        ]
    );
    assert_eq!(events[0].kv.as_ref().unwrap(), &a1);
    assert_eq!(
        events[2].kv.as_ref().unwrap(),
        &KeyValue {
            key: b"c".to_vec(),
            mod_revision: 3,
            ..Default::default()
        }
    );
    assert_eq!(get(&s, "a").unwrap(), a2);
    assert_eq!(get(&s, "c"), None);
}

#[test]
fn write_transaction_sees_its_own_writes_readers_do_not() {
    let f = Fixture::new();
    let (_b, s) = f.open();
    put(&s, "a", "1"); // 2
    let before = s.read();
    let mut w = s.write();
    assert_eq!(w.rev(), 2);
    let r = w.range(b"a", None, RangeOptions::default()).unwrap();
    assert_eq!((r.kvs[0].value.as_slice(), r.rev), (&b"1"[..], 2));
    let e = w
        .range(
            b"a",
            None,
            RangeOptions {
                rev: 3,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(e, MvccError::FutureRev));

    w.put(b"a", b"2", 0);
    w.put(b"n", b"new", 0);
    assert_eq!(w.rev(), 3, "reads at begin+1 once there are changes");
    let r = w.range(b"", Some(b""), RangeOptions::default()).unwrap();
    assert_eq!(keys(&r), vec!["a", "n"]);
    assert_eq!(r.kvs[0].value, b"2");
    assert_eq!(r.rev, 3);
    let r = w
        .range(
            b"a",
            None,
            RangeOptions {
                rev: 2,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(r.kvs[0].value, b"1", "historical read inside the txn");

    // Deleting inside the txn sees the txn's own put.
    let (n, prev) = w.delete_range(b"n", None);
    assert_eq!((n, prev[0].value.as_slice()), (1, &b"new"[..]));
    assert!(w
        .range(b"n", None, RangeOptions::default())
        .unwrap()
        .kvs
        .is_empty());

    // Readers, old and new, still see revision 2 only.
    let during = s.read();
    assert_eq!(during.rev(), 2);
    for v in [&before, &during] {
        let r = v.range(b"", Some(b""), RangeOptions::default()).unwrap();
        assert_eq!(keys(&r), vec!["a"]);
        assert_eq!(r.kvs[0].value, b"1");
    }
    w.end(0, 0).unwrap();
    assert_eq!(s.rev(), 3);
    // The old view keeps its snapshot.
    assert_eq!(
        before
            .range(b"a", None, RangeOptions::default())
            .unwrap()
            .kvs[0]
            .value,
        b"1"
    );
    assert_eq!(get(&s, "a").unwrap().value, b"2");
    assert_eq!(get(&s, "n"), None);
}

#[test]
fn dropped_transaction_leaves_no_trace() {
    let f = Fixture::new();
    let (b, s) = f.open();
    put(&s, "a", "1"); // 2
    del(&s, "a", None); // 3
    put(&s, "b", "1"); // 4
    let recs = records(&b);
    {
        let mut w = s.write();
        w.put(b"a", b"x", 0);
        w.put(b"c", b"x", 0);
        w.delete_range(b"b", None);
        w.put(b"b", b"y", 0);
    }
    assert_eq!(s.rev(), 4);
    assert_eq!(records(&b), recs);
    assert_eq!(keys(&all(&s, 0).unwrap()), vec!["b"]);
    assert_eq!(s.index_len(), 2);
    // The same revision is used again, with the right versions.
    let kv = put(&s, "a", "again");
    assert_eq!((kv.mod_revision, kv.create_revision, kv.version), (5, 5, 1));
    let kv = put(&s, "b", "2");
    assert_eq!((kv.create_revision, kv.version), (4, 2));
}

#[test]
fn compaction_removes_old_revisions_and_tombstones() {
    let f = Fixture::new();
    let (b, s) = f.open();
    put(&s, "a", "v1"); // 2
    put(&s, "a", "v2"); // 3
    put(&s, "b", "v1"); // 4
    del(&s, "b", None); // 5
    put(&s, "c", "v1"); // 6
    put(&s, "a", "v3"); // 7
    assert_eq!(records(&b).len(), 6);

    assert!(matches!(s.compact(8), Err(MvccError::FutureRev)));
    let h = s.compact(6).unwrap();
    assert_eq!(h.rev(), 6);
    // The index is compacted right away.
    assert_eq!(s.compact_rev(), 6);
    assert_eq!(s.index_len(), 2, "b's generation ended before 6: gone");
    h.wait().unwrap();

    // Physically: a@2 (superseded), b@4 and its tombstone b@5 are gone.
    assert_eq!(
        records(&b),
        vec![(3, 0, false), (6, 0, false), (7, 0, false)]
    );
    assert_eq!(meta_rev(&b, META_SCHEDULED_COMPACT), Some(6));
    assert_eq!(meta_rev(&b, META_FINISHED_COMPACT), Some(6));
    // The value kept for the compaction revision is still readable there.
    assert_eq!(get_at(&s, "a", 6).unwrap().value, b"v2");
    assert_eq!(keys(&all(&s, 6).unwrap()), vec!["a", "c"]);
    assert!(matches!(all(&s, 5), Err(MvccError::Compacted)));
    assert_eq!(get(&s, "a").unwrap().value, b"v3");
    // Versions survive compaction.
    assert_eq!(get(&s, "a").unwrap().version, 3);
    let kv = put(&s, "a", "v4");
    assert_eq!((kv.create_revision, kv.version), (2, 4));

    assert!(matches!(s.compact(6), Err(MvccError::Compacted)));
    assert!(matches!(s.compact(5), Err(MvccError::Compacted)));
}

#[test]
fn compaction_at_a_tombstone_keeps_it() {
    let f = Fixture::new();
    let (b, s) = f.open();
    put(&s, "a", "v1"); // 2
    del(&s, "a", None); // 3
    put(&s, "z", "v1"); // 4
    s.compact(3).unwrap().wait().unwrap();
    assert_eq!(records(&b), vec![(3, 0, true), (4, 0, false)]);
    assert_eq!(get_at(&s, "a", 3), None);
    // The next compaction past it drops it.
    s.compact(4).unwrap().wait().unwrap();
    assert_eq!(records(&b), vec![(4, 0, false)]);
    assert_eq!(s.index_len(), 1);
    // And a re-created key starts over.
    let kv = put(&s, "a", "v2");
    assert_eq!((kv.create_revision, kv.version), (5, 1));
}

#[test]
fn compaction_at_a_transaction_that_deleted_and_put_a_key_keeps_the_put() {
    let f = Fixture::new();
    let (b, s) = f.open();
    put(&s, "a", "v1"); // 2
    let mut w = s.write(); // 3: deletes a (3.0), puts it again (3.1)
    w.delete_range(b"a", None);
    w.put(b"a", b"v2", 0);
    w.end(0, 0).unwrap();
    del(&s, "a", None); // 4
    let seen = get_at(&s, "a", 3).unwrap();
    assert_eq!((seen.create_revision, seen.mod_revision), (3, 3));
    s.compact(3).unwrap().wait().unwrap();
    assert_eq!(records(&b), vec![(3, 1, false), (4, 0, true)]);
    assert_eq!(get_at(&s, "a", 3), Some(seen.clone()));
    assert_eq!(all(&s, 3).unwrap().count, 1);
    drop(s);
    drop(b);
    // The index rebuilt from the file agrees with the one compacted in memory.
    let (b, s) = f.open();
    assert_eq!(get_at(&s, "a", 3), Some(seen));
    assert_eq!(get(&s, "a"), None);
    s.compact(4).unwrap().wait().unwrap();
    assert_eq!(records(&b), vec![(4, 0, true)]);
}

#[test]
fn compaction_of_many_keys_in_batches() {
    let f = Fixture::new();
    let (b, s) = f.open();
    for round in 0..3 {
        let mut w = s.write();
        for i in 0..20 {
            w.put(
                format!("k{i:02}").as_bytes(),
                format!("{round}").as_bytes(),
                0,
            );
        }
        w.end(0, 0).unwrap();
    }
    assert_eq!(records(&b).len(), 60);
    let rev = s.rev();
    s.compact(rev).unwrap().wait().unwrap();
    assert_eq!(records(&b).len(), 20);
    let r = all(&s, rev).unwrap();
    assert_eq!(r.count, 20);
    assert!(r.kvs.iter().all(|kv| kv.value == b"2" && kv.version == 3));
}

#[test]
fn restart_keeps_revisions_data_compaction_and_consistent_index() {
    let f = Fixture::new();
    let (snapshot, hash) = {
        let (b, s) = f.open();
        let mut ci = 10;
        for (k, v) in [("a", "1"), ("b", "1"), ("a", "2"), ("c", "1")] {
            let mut w = s.write();
            w.put(k.as_bytes(), v.as_bytes(), 0);
            ci += 1;
            w.end(ci, 3).unwrap();
        }
        let mut w = s.write();
        w.delete_range(b"b", None);
        w.end(15, 4).unwrap();
        s.compact(3).unwrap().wait().unwrap();
        assert_eq!(s.consistent_index(), 15);
        let snapshot = (s.rev(), all(&s, 0).unwrap(), all(&s, 4).unwrap());
        let hash = s.hash_kv(0).unwrap();
        drop(s);
        drop(b);
        (snapshot, hash)
    };
    let (_b, s) = f.open();
    assert_eq!(s.rev(), snapshot.0);
    assert_eq!(s.rev(), 6);
    assert_eq!(all(&s, 0).unwrap(), snapshot.1);
    assert_eq!(all(&s, 4).unwrap(), snapshot.2);
    assert_eq!(s.compact_rev(), 3);
    assert!(matches!(all(&s, 2), Err(MvccError::Compacted)));
    assert_eq!(s.consistent_index(), 15);
    assert_eq!(s.consistent_index_and_term().unwrap(), (15, 4));
    assert_eq!(s.hash_kv(0).unwrap(), hash);
    // Versions and create revisions are rebuilt from the records.
    let a = get(&s, "a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 4, 2));
    let kv = put(&s, "a", "3");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 7, 3));
    let kv = put(&s, "b", "again");
    assert_eq!((kv.create_revision, kv.version), (8, 1));
}

#[test]
fn revision_never_goes_back_below_compaction_marks() {
    let f = Fixture::new();
    {
        let (b, s) = f.open();
        put(&s, "a", "1"); // 2
        drop(s);
        // As if records up to revision 9 had existed and were compacted away.
        let mut t = b.write().unwrap();
        t.put(
            Bucket::Meta,
            META_FINISHED_COMPACT,
            &Revision::new(9, 0).to_bytes(),
        )
        .unwrap();
        t.put(
            Bucket::Meta,
            META_SCHEDULED_COMPACT,
            &Revision::new(9, 0).to_bytes(),
        )
        .unwrap();
        t.commit().unwrap();
    }
    {
        let (_b, s) = f.open();
        assert_eq!(s.rev(), 9);
        assert_eq!(s.compact_rev(), 9);
        assert_eq!(put(&s, "b", "1").mod_revision, 10);
    }
    {
        // A scheduled but unfinished compaction is a floor too.
        let (b, s) = f.open();
        drop(s);
        let mut t = b.write().unwrap();
        t.delete_range(Bucket::Key, b"", None).unwrap();
        t.put(
            Bucket::Meta,
            META_SCHEDULED_COMPACT,
            &Revision::new(12, 0).to_bytes(),
        )
        .unwrap();
        t.commit().unwrap();
    }
    let (b, s) = f.open();
    assert_eq!(s.rev(), 12);
    assert_eq!(s.compact_rev(), 12);
    assert_eq!(meta_rev(&b, META_FINISHED_COMPACT), Some(12));
}

#[test]
fn unfinished_compaction_is_resumed_on_open() {
    let f = Fixture::new();
    {
        let (b, s) = f.open();
        for i in 0..10 {
            put(&s, "k", &i.to_string()); // 2..=11
        }
        put(&s, "other", "x"); // 12
        drop(s);
        // Crash after the compaction was scheduled, before any record was removed.
        let mut t = b.write().unwrap();
        t.put(
            Bucket::Meta,
            META_SCHEDULED_COMPACT,
            &Revision::new(8, 0).to_bytes(),
        )
        .unwrap();
        t.commit_durable().unwrap();
        assert_eq!(records(&b).len(), 11);
    }
    let (b, s) = f.open();
    assert_eq!(s.compact_rev(), 8);
    assert_eq!(s.rev(), 12);
    assert_eq!(meta_rev(&b, META_FINISHED_COMPACT), Some(8));
    let mains: Vec<i64> = records(&b).into_iter().map(|r| r.0).collect();
    assert_eq!(mains, vec![8, 9, 10, 11, 12]);
    assert_eq!(get_at(&s, "k", 8).unwrap().value, b"6");
    assert!(matches!(all(&s, 7), Err(MvccError::Compacted)));
    assert_eq!(get(&s, "k").unwrap().version, 10);
}

#[test]
fn crash_loses_non_durable_commits_back_to_a_consistent_index() {
    let f = Fixture::new();
    let (b, s) = f.open();
    let mut w = s.write();
    w.put(b"a", b"1", 0);
    w.end(100, 2).unwrap();
    s.force_commit().unwrap();
    let mut w = s.write();
    w.put(b"b", b"1", 0);
    w.end(101, 2).unwrap();
    let mut w = s.write();
    w.delete_range(b"a", None);
    w.end(102, 2).unwrap();
    assert_eq!(s.rev(), 4);
    assert_eq!(s.consistent_index(), 102);
    assert!(b.pending_commits() > 0);

    // What a crash now leaves on disk: the file without the non-durable commits.
    let image = f.path.with_file_name("crash");
    std::fs::copy(&f.path, &image).unwrap();
    let (_cb, c) = open_at(&image);
    assert_eq!(c.rev(), 2);
    assert_eq!(c.consistent_index_and_term().unwrap(), (100, 2));
    assert_eq!(keys(&all(&c, 0).unwrap()), vec!["a"]);

    // After force_commit everything survives.
    s.force_commit().unwrap();
    let image2 = f.path.with_file_name("crash2");
    std::fs::copy(&f.path, &image2).unwrap();
    let (_cb2, c2) = open_at(&image2);
    assert_eq!(c2.rev(), 4);
    assert_eq!(c2.consistent_index(), 102);
    assert_eq!(keys(&all(&c2, 0).unwrap()), vec!["b"]);
}

#[test]
fn deferred_revisions_reach_the_file_with_their_consistent_index_whoever_commits_them() {
    let f = Fixture::new();
    let (_b, s) = f.open();
    put_deferred(&s, "a", "1", 10);
    put_deferred(&s, "b", "2", 11);
    // Not flushed: the commit that makes them durable is the backend's own (a timer's).
    s.force_commit().unwrap();
    let image = f.path.with_file_name("crash");
    std::fs::copy(&f.path, &image).unwrap();
    let (_cb, c) = open_at(&image);
    assert_eq!(keys(&all(&c, 0).unwrap()), vec!["a", "b"]);
    assert_eq!(c.consistent_index_and_term().unwrap(), (11, 1));
    // The flush that follows publishes them as usual.
    s.flush().unwrap();
    assert_eq!(s.rev(), 3);
}

/// The same ops on a fresh store; `twist` changes one value.
fn feed(s: &KvStore, twist: bool) {
    put(s, "a", "1");
    put(s, "b", "1");
    put(s, "a", if twist { "X" } else { "2" });
    del(s, "b", None);
    let mut w = s.write();
    w.put(b"c", b"1", 5);
    w.put(b"d", b"1", 0);
    w.end(0, 0).unwrap();
    put(s, "a", "3");
}

#[test]
fn hash_kv_compares_members() {
    let (f1, f2, f3) = (Fixture::new(), Fixture::new(), Fixture::new());
    let (b1, s1) = f1.open();
    let (_b2, s2) = f2.open();
    let (_b3, s3) = f3.open();
    feed(&s1, false);
    feed(&s2, false);
    feed(&s3, true);
    assert_eq!(s1.rev(), 7);
    for rev in [0, 3, 5, 7] {
        assert_eq!(
            s1.hash_kv(rev).unwrap(),
            s2.hash_kv(rev).unwrap(),
            "rev {rev}"
        );
    }
    assert_eq!(
        s1.hash_kv(0).unwrap().1,
        -1,
        "never compacted, as etcd reports it"
    );
    assert_ne!(s1.hash_kv(0).unwrap().0, s3.hash_kv(0).unwrap().0);
    assert_eq!(
        s1.hash_kv(3).unwrap(),
        s3.hash_kv(3).unwrap(),
        "before the differing write"
    );
    assert_ne!(s1.hash_kv(4).unwrap(), s3.hash_kv(4).unwrap());
    assert!(matches!(s1.hash_kv(8), Err(MvccError::FutureRev)));

    // The hash is a CRC-32C over "key" and every record's key and value, in order.
    let mut expect = crc32c::crc32c_append(0, b"key");
    for (k, v) in b1.read().unwrap().range(Bucket::Key, b"", None, 0).unwrap() {
        expect = crc32c::crc32c_append(expect, &k);
        expect = crc32c::crc32c_append(expect, &v);
    }
    assert_eq!(s1.hash_kv(0).unwrap().0, expect);

    // Compaction keeps hashes equal between members, and does not change the hash of the
    // revisions it keeps visible.
    let before = s1.hash_kv(0).unwrap().0;
    s1.compact(5).unwrap().wait().unwrap();
    let h2 = s2.compact(5).unwrap();
    // Whether or not the physical part is done, the hash is the same.
    let mid = s2.hash_kv(0).unwrap();
    h2.wait().unwrap();
    assert_eq!(s1.hash_kv(0).unwrap(), s2.hash_kv(0).unwrap());
    assert_eq!(mid, s2.hash_kv(0).unwrap());
    assert_eq!(s1.hash_kv(0).unwrap().1, 5);
    assert_ne!(s1.hash_kv(0).unwrap().0, before);
    assert!(matches!(s1.hash_kv(4), Err(MvccError::Compacted)));
    assert!(s1.hash_kv(5).is_ok());
}

#[test]
fn a_compaction_keeps_the_hash_hash_kv_gave_just_before_it() {
    let (f1, f2) = (Fixture::new(), Fixture::new());
    let (_b1, s1) = f1.open();
    let (_b2, s2) = f2.open();
    for s in [&s1, &s2] {
        feed(s, false);
        put(s, "e", "5"); // 8
    }
    let want = s1.hash_by_rev(5).unwrap().0;
    assert_eq!(
        want,
        KeyValueHash {
            hash: s1.hash_kv(5).unwrap().0,
            compact_revision: -1,
            revision: 5
        }
    );
    assert!(s1.compaction_hashes().is_empty());
    s1.compact(5).unwrap().wait().unwrap();
    assert_eq!(s1.compaction_hashes(), [want]);
    // Asked at that revision, the store answers from the kept hash (etcd's HashByRev), with
    // its current revision; computed afresh the hash is against the new compaction.
    assert_eq!(s1.hash_by_rev(5).unwrap(), (want, 8));
    assert_eq!(s1.hash_kv(5).unwrap().1, 5);
    assert_ne!(s1.hash_kv(5).unwrap().0, want.hash);

    // The next compaction hashes against this one, and both members agree.
    s2.compact(5).unwrap().wait().unwrap();
    let want2 = s1.hash_by_rev(7).unwrap().0;
    assert_eq!(want2.compact_revision, 5);
    s1.compact(7).unwrap().wait().unwrap();
    s2.compact(7).unwrap().wait().unwrap();
    assert_eq!(s1.compaction_hashes(), [want, want2]);
    assert_eq!(s1.compaction_hashes(), s2.compaction_hashes());

    // Only the newest ten are kept.
    for i in 0..12 {
        put(&s1, "f", &i.to_string());
        s1.compact(s1.rev()).unwrap().wait().unwrap();
    }
    let kept = s1.compaction_hashes();
    assert_eq!(kept.len(), HASH_STORAGE_MAX_SIZE);
    assert_eq!(kept.last().unwrap().revision, s1.rev());
    assert!(kept.windows(2).all(|w| w[0].revision < w[1].revision));
}

#[test]
fn a_compaction_after_an_unfinished_one_keeps_no_hash() {
    let f = Fixture::new();
    let (b, s) = f.open();
    feed(&s, false);
    s.compact(3).unwrap().wait().unwrap();
    // As if the physical part of a compaction at 5 had been cut short: scheduled but never
    // finished.
    let mut t = b.write().unwrap();
    t.put(
        Bucket::Meta,
        META_SCHEDULED_COMPACT,
        &Revision::new(5, 0).to_bytes(),
    )
    .unwrap();
    t.commit_durable().unwrap();
    s.compact(6).unwrap().wait().unwrap();
    assert_eq!(s.compaction_hashes().len(), 1, "only the compaction at 3");
    assert_eq!(s.compaction_hashes()[0].revision, 3);
}

#[test]
fn consistent_index_zero_is_not_written() {
    let f = Fixture::new();
    let (_b, s) = f.open();
    assert_eq!(s.consistent_index_and_term().unwrap(), (0, 0));
    let w = s.write();
    w.end(7, 0).unwrap();
    assert_eq!(s.consistent_index_and_term().unwrap(), (7, 0));
    let w = s.write();
    w.end(0, 9).unwrap();
    assert_eq!(s.consistent_index_and_term().unwrap(), (7, 0));
}

#[test]
fn garbage_records_are_an_error_not_a_panic() {
    for (key, value) in [
        (&b"short"[..], &b""[..]),
        (&Revision::new(2, 0).to_bytes()[..], &[0xff, 0xff, 0xff][..]),
    ] {
        let f = Fixture::new();
        {
            let b = Backend::open(&f.path, lazy()).unwrap();
            let mut t = b.write().unwrap();
            t.put(Bucket::Key, key, value).unwrap();
            t.commit_durable().unwrap();
        }
        let b = Arc::new(Backend::open(&f.path, lazy()).unwrap());
        let e = KvStore::open(b).unwrap_err();
        assert!(matches!(e, MvccError::Corrupt(_)), "{e}");
    }
    // A file that is not a database at all.
    let f = Fixture::new();
    std::fs::write(&f.path, vec![0x42u8; 64 * 1024]).unwrap();
    assert!(Backend::open(&f.path, lazy()).is_err());
}

#[test]
fn views_are_consistent_under_concurrent_writes() {
    let f = Fixture::new();
    let (_b, s) = f.open();
    let s = Arc::new(s);
    const KEYS: usize = 8;
    const ROUNDS: i64 = 200;
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for round in 0..ROUNDS {
                let mut w = s.write();
                for k in 0..KEYS {
                    w.put(format!("k{k}").as_bytes(), &round.to_be_bytes(), 0);
                }
                w.end(0, 0).unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut seen = 0;
                while seen < ROUNDS - 1 {
                    let v = s.read();
                    let r = v.range(b"k", Some(b"l"), RangeOptions::default()).unwrap();
                    if r.kvs.is_empty() {
                        continue;
                    }
                    assert_eq!(r.kvs.len(), KEYS);
                    let first = &r.kvs[0];
                    for kv in &r.kvs {
                        assert_eq!(kv.value, first.value, "a view mixes revisions");
                        assert_eq!(kv.mod_revision, v.rev());
                    }
                    seen = i64::from_be_bytes(first.value.as_slice().try_into().unwrap());
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(s.rev(), 1 + ROUNDS);
}

#[test]
fn compaction_runs_while_writes_continue() {
    let f = Fixture::new();
    let (b, s) = f.open();
    for i in 0..50 {
        put(&s, &format!("k{}", i % 5), &i.to_string());
    }
    let h = s.compact(40).unwrap();
    for i in 0..20 {
        put(&s, &format!("k{}", i % 5), "late");
    }
    h.wait().unwrap();
    assert_eq!(s.rev(), 71);
    let r = all(&s, 40).unwrap();
    assert_eq!(r.count, 5);
    // 5 kept at or below 40, plus the 11 puts at 41..=51 and the 20 late ones.
    assert_eq!(records(&b).len(), 5 + 11 + 20);
}

#[test]
fn error_texts_match_etcd() {
    assert_eq!(
        MvccError::Compacted.to_string(),
        "mvcc: required revision has been compacted"
    );
    assert_eq!(
        MvccError::FutureRev.to_string(),
        "mvcc: required revision is a future revision"
    );
}

#[test]
fn hash_kv_skips_a_tombstone_at_the_compaction_revision() {
    // etcd keeps such a tombstone on disk (newer versions) or deletes it (older ones), so the
    // hash must not depend on it.
    let f = Fixture::new();
    let (b, s) = f.open();
    put(&s, "a", "1"); // 2
    del(&s, "a", None); // 3
    s.compact(3).unwrap().wait().unwrap();
    assert_eq!(records(&b), vec![(3, 0, true)]);
    assert_eq!(s.hash_kv(0).unwrap(), (crc32c::crc32c_append(0, b"key"), 3));
}

#[test]
fn shared_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<KvStore>();
    send_sync::<CompactHandle>();
    send_sync::<Backend>();
    send_sync::<backend::ReadTxn>();
    send_sync::<MvccError>();
}

/// `n` random bytes for the fuzz tests below (`fastrand` with fixed seeds: failures replay).
fn random_bytes(rng: &mut fastrand::Rng, n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    rng.fill(&mut b);
    b
}

#[test]
fn revision_keys_decode_or_fail_cleanly() {
    let mut rng = fastrand::Rng::with_seed(17);
    for _ in 0..20_000 {
        let n = rng.usize(..24);
        let mut b = random_bytes(&mut rng, n);
        if n >= REV_BYTES_LEN && rng.bool() {
            b[8] = b'_';
        }
        if let Ok(k) = BucketKey::from_bytes(&b) {
            assert!(k.rev.main >= 0 && k.rev.sub >= 0);
            assert_eq!(k.to_bytes(), b, "decoding is exact");
        }
    }
    for main in [0, 1, i64::MAX] {
        for sub in [0, 7, i64::MAX] {
            for tomb in [false, true] {
                let k = BucketKey::new(Revision::new(main, sub), tomb);
                assert_eq!(BucketKey::from_bytes(&k.to_bytes()).unwrap(), k);
            }
        }
    }
}

/// Records a damaged or foreign file may hold (they pass redb's checksums): the store opens or
/// reports corruption, and writes on top never panic, whatever the numbers in the records.
#[test]
fn records_with_extreme_numbers_do_not_panic() {
    let mut rng = fastrand::Rng::with_seed(99);
    let extremes = [i64::MIN, -1, 0, 1, i64::MAX - 1, i64::MAX];
    for round in 0..200 {
        let dir = tempfile::tempdir().unwrap();
        let b = Arc::new(Backend::open(dir.path().join("db"), lazy()).unwrap());
        {
            let mut w = b.write().unwrap();
            for i in 0..4i64 {
                let mut pick = || extremes[rng.usize(..extremes.len())];
                let kv = KeyValue {
                    key: b"a".to_vec(),
                    create_revision: pick(),
                    mod_revision: pick(),
                    version: pick(),
                    value: b"v".to_vec(),
                    lease: 0,
                };
                let rev = Revision::new(2 + i, 0);
                let tomb = round % 5 == 0 && i == 1;
                let value = if rng.u8(..8) == 0 {
                    random_bytes(&mut rng, 12)
                } else {
                    prost::Message::encode_to_vec(&kv)
                };
                w.put(Bucket::Key, &BucketKey::new(rev, tomb).to_bytes(), &value)
                    .unwrap();
            }
            if round % 3 == 0 {
                let mark = Revision::new(extremes[round % extremes.len()].max(0), 0).to_bytes();
                w.put(Bucket::Meta, META_SCHEDULED_COMPACT, &mark).unwrap();
            }
            w.commit_durable().unwrap();
        }
        let Ok(s) = KvStore::open_with_config(b, cfg()) else {
            continue;
        };
        let _ = s.read().range(b"a", None, RangeOptions::default());
        let _ = s.hash_kv(0);
        for _ in 0..2 {
            let mut w = s.write();
            w.put(b"a", b"again", 0);
            let _ = w.end(0, 0);
        }
        let mut w = s.write();
        w.delete_range(b"a", None);
        let _ = w.end(0, 0);
    }
}

fn put_deferred(s: &KvStore, k: &str, v: &str, ci: u64) {
    let mut w = s.write();
    w.put(k.as_bytes(), v.as_bytes(), 0);
    w.end_deferred(ci, 1, |events| assert_eq!(events.len(), 1))
        .unwrap();
}

#[test]
fn deferred_revisions_are_invisible_until_flushed_and_survive_an_empty_abort() {
    let f = Fixture::new();
    let (b, s) = f.open();
    put(&s, "a", "1");
    put_deferred(&s, "b", "2", 7);
    put_deferred(&s, "c", "3", 8);
    // Readers still see revision 2 only; the next writer builds on the deferred ones.
    assert_eq!(s.rev(), 2);
    assert!(get_at(&s, "b", 0).is_none());
    {
        let w = s.write();
        assert_eq!(w.begin_rev(), 4);
        // Dropped without a change: the deferred changes must stay.
    }
    {
        // A failed transaction that changed nothing (validation failed) also keeps them.
        let w = s.write();
        assert!(
            w.range(b"b", None, RangeOptions::default())
                .unwrap()
                .kvs
                .len()
                == 1
        );
    }
    s.flush().unwrap();
    assert_eq!(s.rev(), 4);
    assert_eq!(get_at(&s, "c", 0).unwrap().mod_revision, 4);
    assert_eq!(s.consistent_index(), 8);
    // Flushing again is a no-op; a plain `end` after deferred ones publishes them all.
    s.flush().unwrap();
    put_deferred(&s, "d", "4", 9);
    put(&s, "e", "5");
    assert_eq!(s.rev(), 6);
    assert_eq!(get_at(&s, "d", 0).unwrap().mod_revision, 5);
    drop(s);
    drop(b);
    let (_b, s) = f.open();
    assert_eq!(s.rev(), 6);
}

#[test]
fn a_flush_publishes_without_a_commit_and_a_reader_commits_what_it_reads() {
    let f = Fixture::new();
    let (b, s) = f.open();
    put(&s, "a", "1");
    put_deferred(&s, "b", "2", 7);
    let commits = b.pending_commits();
    s.flush().unwrap();
    // Published: the store is at the revision, the backend has not committed it yet.
    assert_eq!(s.rev(), 3);
    assert!(b.deferred_ops() > 0);
    assert!(!b.is_visible());
    assert_eq!(b.pending_commits(), commits);
    // A reader commits it before it takes its snapshot.
    assert_eq!(get_at(&s, "b", 0).unwrap().mod_revision, 3);
    assert_eq!(b.deferred_ops(), 0);
    assert_eq!(b.pending_commits(), commits + 1);
    // So does a hash: the same as a store that committed each revision.
    put_deferred(&s, "c", "3", 8);
    s.flush().unwrap();
    let lazy = s.hash_kv(0).unwrap();
    assert!(b.is_visible());
    let g = Fixture::new();
    let (_b2, t) = g.open();
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
        put(&t, k, v);
    }
    assert_eq!(t.hash_kv(0).unwrap(), lazy);
    // And a restart replays nothing it lost: the published revisions are in the file once
    // forced, as the apply thread's timer does.
    put_deferred(&s, "d", "4", 9);
    s.flush().unwrap();
    s.force_commit().unwrap();
    drop(s);
    drop(b);
    let (_b, s) = f.open();
    assert_eq!(s.rev(), 5);
    assert_eq!(s.consistent_index(), 9);
}

#[test]
fn readers_racing_lazy_publications_always_find_the_revision_they_read_at() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let f = Fixture::new();
    let (_b, s) = f.open();
    put(&s, "k", "0");
    let done = AtomicBool::new(false);
    std::thread::scope(|t| {
        t.spawn(|| {
            // Every revision writes `k`, published in batches of three without a commit.
            for i in 1..=1500u64 {
                put_deferred(&s, "k", &i.to_string(), i);
                if i % 3 == 0 {
                    s.flush().unwrap();
                }
            }
            s.flush().unwrap();
            done.store(true, Ordering::SeqCst);
        });
        for _ in 0..2 {
            t.spawn(|| {
                let mut reads = 0u64;
                while reads < 100 || !done.load(Ordering::SeqCst) {
                    let view = s.read();
                    let rev = view.rev();
                    let r = view
                        .range(b"k", None, RangeOptions::default())
                        .unwrap_or_else(|e| panic!("a view at {rev}: {e}"));
                    assert_eq!(r.kvs[0].mod_revision, rev, "a view at {rev} misses it");
                    reads += 1;
                }
            });
        }
    });
    assert_eq!(s.rev(), 1502);
}

#[test]
fn a_transaction_aborted_after_writing_stops_the_store_rather_than_lose_deferred_ones() {
    let f = Fixture::new();
    let (b, s) = f.open();
    put(&s, "a", "1");
    put_deferred(&s, "b", "2", 5);
    {
        let mut w = s.write();
        w.put(b"c", b"3", 0);
        // Dropped after a write: the backend transaction, b's changes in it, is aborted.
    }
    // b's request may count as applied already: no later revision may take its place.
    assert!(b.failure().is_some());
    assert!(s.flush().is_err());
    assert_eq!(s.rev(), 2);
    assert!(get_at(&s, "b", 0).is_none());
    drop(s);
    drop(b);
    // Neither reached the file, nor did b's consistent index: its entry is applied again.
    let (_b, s) = f.open();
    assert_eq!(s.rev(), 2);
    assert_eq!(s.consistent_index(), 0);
    assert!(get_at(&s, "b", 0).is_none());
}

#[test]
fn a_transaction_aborted_after_a_forced_commit_keeps_the_deferred_ones() {
    let f = Fixture::new();
    let (b, s) = f.open();
    put(&s, "a", "1");
    put_deferred(&s, "b", "2", 5);
    // Another writer commits the deferred transaction before the next request runs.
    s.force_commit().unwrap();
    {
        let mut w = s.write();
        w.put(b"c", b"3", 0);
    }
    // Only c's change was lost; b is committed and the flush publishes it.
    assert_eq!(b.failure(), None);
    s.flush().unwrap();
    assert_eq!(s.rev(), 3);
    assert_eq!(get_at(&s, "b", 0).unwrap().mod_revision, 3);
    assert!(get_at(&s, "c", 0).is_none());
    let kv = put(&s, "d", "4");
    assert_eq!(kv.mod_revision, 4);
    assert_eq!(get_at(&s, "b", 3).unwrap().value, b"2");
}

/// Random puts, deletes and range deletes over a few keys, with compactions in between.
fn random_history(s: &KvStore, rng: &mut fastrand::Rng, ops: usize) {
    for i in 0..ops {
        let k = format!("k{:02}", rng.u32(..30));
        match rng.u32(..10) {
            0 => {
                del(s, &k, None);
            }
            1 => {
                let end = format!("k{:02}", rng.u32(..30));
                del(s, &k, Some(&end));
            }
            _ => {
                put(s, &k, &i.to_string());
            }
        }
        if i % 97 == 96 {
            s.compact(s.rev() - 20).unwrap().wait().unwrap();
        }
    }
}

/// Everything a reader can see of a store: each revision's key-values from the compaction on.
fn observable(s: &KvStore) -> Vec<(i64, Vec<KeyValue>)> {
    (s.compact_rev().max(1)..=s.rev())
        .map(|rev| (rev, all(s, rev).unwrap().kvs))
        .collect()
}

#[test]
fn an_index_image_opens_the_same_store_a_scan_does() {
    for seed in 0..4 {
        let f = Fixture::new();
        let (b, s) = f.open();
        random_history(&s, &mut fastrand::Rng::with_seed(seed), 400);
        let image = s.index_image().unwrap();
        let seen = (s.rev(), s.compact_rev(), observable(&s));
        drop(s);
        assert!(crate::store::image_is_used(&b, &image).unwrap());
        let from_image = KvStore::open_with_image(b.clone(), cfg(), Some(&image)).unwrap();
        assert_eq!(
            (
                from_image.rev(),
                from_image.compact_rev(),
                observable(&from_image)
            ),
            seen
        );
        drop(from_image);
        let scanned = KvStore::open_with_config(b.clone(), cfg()).unwrap();
        assert_eq!(
            (scanned.rev(), scanned.compact_rev(), observable(&scanned)),
            seen
        );
        // Both go on from the same revision with the same versions.
        let kv = put(&scanned, "k00", "next");
        drop(scanned);
        drop(b);
        let (_b, again) = f.open();
        assert_eq!(get(&again, "k00"), Some(kv));
    }
}

#[test]
fn an_image_is_not_used_once_the_backend_moved_on() {
    let f = Fixture::new();
    let (b, s) = f.open();
    random_history(&s, &mut fastrand::Rng::with_seed(11), 200);
    let image = s.index_image().unwrap();
    drop(s);
    // A write after the image, as by a member that crashed later and left the old file.
    let s = KvStore::open_with_config(b.clone(), cfg()).unwrap();
    let mut w = s.write();
    w.delete_range(b"k", Some(b"l"));
    w.put(b"new", b"1", 0);
    w.end(1, 1).unwrap();
    let want = observable(&s);
    drop(s);
    b.force_commit().unwrap();
    assert!(!crate::store::image_is_used(&b, &image).unwrap());
    let s = KvStore::open_with_image(b.clone(), cfg(), Some(&image)).unwrap();
    assert_eq!(observable(&s), want);
    assert_eq!(keys(&all(&s, 0).unwrap()), vec!["new"]);
    drop(s);
    // A compaction alone (no new revision) makes it stale too.
    let s = KvStore::open_with_config(b.clone(), cfg()).unwrap();
    let image = s.index_image().unwrap();
    drop(s);
    let s = KvStore::open_with_config(b.clone(), cfg()).unwrap();
    s.compact(s.rev()).unwrap().wait().unwrap();
    drop(s);
    assert!(!crate::store::image_is_used(&b, &image).unwrap());
    // And damage is not used.
    let mut bad = image.clone();
    bad[20] ^= 1;
    assert!(!crate::store::image_is_used(&b, &bad).unwrap());
}

#[test]
fn an_image_taken_during_a_compaction_resumes_it_on_open() {
    let f = Fixture::new();
    let b = Arc::new(Backend::open(&f.path, lazy()).unwrap());
    // One batch of 3 records, then a pause the image's stop cuts short.
    let paused = StoreConfig {
        compaction_sleep_interval: Duration::from_secs(3600),
        ..cfg()
    };
    let s = KvStore::open_with_config(b.clone(), paused).unwrap();
    for i in 0..300 {
        put(&s, &format!("k{}", i % 7), &i.to_string());
    }
    let h = s.compact(290).unwrap();
    let image = s.index_image().unwrap();
    assert!(matches!(h.wait(), Err(MvccError::CompactionInterrupted)));
    assert_eq!(meta_rev(&b, META_FINISHED_COMPACT), None);
    let seen = (s.rev(), s.compact_rev(), observable(&s));
    drop(s);
    assert!(crate::store::image_is_used(&b, &image).unwrap());
    let s = KvStore::open_with_image(b.clone(), cfg(), Some(&image)).unwrap();
    assert_eq!((s.rev(), s.compact_rev(), observable(&s)), seen);
    assert_eq!(meta_rev(&b, META_FINISHED_COMPACT), Some(290));
    // Each key's newest record at or below 290, and everything after it.
    assert_eq!(records(&b).len(), 7 + 11);
}

/// etcdutl's `snapshot restore --bump-revision` leaves a record with no key-value at the bumped
/// revision, and etcd's later snapshots keep it: the store opens at that revision, with no key
/// for it, and writes go on after it.
#[test]
fn a_bumped_revision_record_without_a_key_value_counts_as_a_revision_only() {
    let f = Fixture::new();
    {
        let (b, s) = f.open();
        put(&s, "a", "1");
        drop(s);
        let mut w = b.write().unwrap();
        let bumped = Revision::new(1_000_000_003, 0);
        w.put(Bucket::Key, &BucketKey::new(bumped, false).to_bytes(), b"")
            .unwrap();
        w.put(Bucket::Meta, META_SCHEDULED_COMPACT, &bumped.to_bytes())
            .unwrap();
        w.commit_durable().unwrap();
    }
    let (_b, s) = f.open();
    assert_eq!(s.rev(), 1_000_000_003);
    assert_eq!(keys(&all(&s, 0).unwrap()), vec!["a"]);
    assert_eq!(put(&s, "b", "2").mod_revision, 1_000_000_004);
}

/// A record or a compaction mark at the last revision there is leaves no room for a write: the
/// store refuses to open rather than overflow later.
#[test]
fn a_revision_at_the_end_of_the_range_is_refused_at_open() {
    for mark in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let b = Arc::new(Backend::open(dir.path().join("db"), lazy()).unwrap());
        {
            let mut w = b.write().unwrap();
            let last = Revision::new(i64::MAX, 0);
            if mark {
                w.put(Bucket::Meta, META_SCHEDULED_COMPACT, &last.to_bytes())
                    .unwrap();
            } else {
                let kv = KeyValue {
                    key: b"a".to_vec(),
                    create_revision: i64::MAX,
                    mod_revision: i64::MAX,
                    version: 1,
                    value: b"v".to_vec(),
                    lease: 0,
                };
                w.put(
                    Bucket::Key,
                    &BucketKey::new(last, false).to_bytes(),
                    &prost::Message::encode_to_vec(&kv),
                )
                .unwrap();
            }
            w.commit_durable().unwrap();
        }
        match KvStore::open_with_config(b, cfg()) {
            Err(MvccError::Corrupt(_)) => {}
            other => panic!("mark {mark}: {other:?}"),
        }
    }
}
