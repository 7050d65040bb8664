//! The parts of a RangeStream against a real store: merged, they are the Range at the same
//! revision; each stays near the size budget; a compaction between parts ends the stream.

use std::sync::Arc;
use std::time::Duration;

use backend::{Backend, BackendConfig};
use mvcc::{KvStore, StoreConfig};

use super::*;

struct Store {
    _dir: tempfile::TempDir,
    _backend: Arc<Backend>,
    kv: KvStore,
}

fn store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BackendConfig {
        batch_interval: Duration::from_secs(3600),
        batch_limit: usize::MAX,
        ..BackendConfig::default()
    };
    let backend = Arc::new(Backend::open(dir.path().join("db"), cfg).unwrap());
    let kv = KvStore::open_with_config(
        backend.clone(),
        StoreConfig {
            compaction_batch_limit: 1000,
            compaction_sleep_interval: Duration::ZERO,
        },
    )
    .unwrap();
    Store {
        _dir: dir,
        _backend: backend,
        kv,
    }
}

fn put(kv: &KvStore, key: &str, value: &[u8]) {
    let mut w = kv.write();
    w.put(key.as_bytes(), value, 0);
    w.end(0, 0).unwrap();
}

/// `n` keys `k000`.. with values of `size` bytes, each key written twice (the second time with
/// a different first byte), so older revisions differ from the current one.
fn fill(kv: &KvStore, n: usize, size: usize) {
    for round in 0..2u8 {
        for i in 0..n {
            let mut v = vec![b'a' + (i % 26) as u8; size];
            v[0] = round;
            put(kv, &format!("k{i:03}"), &v);
        }
    }
}

fn all_parts(kv: &KvStore, req: &RangeRequest, target: usize) -> Vec<ReadPart> {
    let mut parts = Parts::new(req.clone(), target);
    let mut out = Vec::new();
    while let Some(p) = parts.next(kv) {
        out.push(p.unwrap());
    }
    out
}

/// The parts merged as etcd's `proto.Merge` would: kvs appended, the last part's other fields.
fn merged(parts: &[ReadPart]) -> RangeResponse {
    let mut m = RangeResponse::default();
    for p in parts {
        m.kvs.extend(p.resp.kvs.iter().cloned());
        if p.last {
            m.header = p.resp.header;
            m.more = p.resp.more;
            m.count = p.resp.count;
        }
    }
    m
}

fn prefix() -> RangeRequest {
    RangeRequest {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        ..Default::default()
    }
}

#[test]
fn merged_parts_are_the_range_at_the_same_revision() {
    let s = store();
    fill(&s.kv, 60, 1000);
    let rev = s.kv.rev();
    let mut cases = Vec::new();
    for limit in [0, -3, 1, 7, 10, 11, 59, 60, 61] {
        for keys_only in [false, true] {
            for revision in [0, 30, 61, rev] {
                cases.push(RangeRequest {
                    limit,
                    keys_only,
                    revision,
                    ..prefix()
                });
            }
        }
    }
    cases.push(RangeRequest {
        key: b"k010".to_vec(),
        ..Default::default()
    });
    cases.push(RangeRequest {
        key: b"k010".to_vec(),
        range_end: vec![0],
        sort_target: range_request::SortTarget::Key as i32,
        sort_order: range_request::SortOrder::Ascend as i32,
        ..Default::default()
    });
    cases.push(RangeRequest {
        key: b"zzz".to_vec(),
        range_end: vec![0],
        ..Default::default()
    });
    for req in cases {
        let parts = all_parts(&s.kv, &req, 8 * 1024);
        let want = apply::txn::range(&s.kv.read(), &req).unwrap();
        let got = merged(&parts);
        assert_eq!(got, want, "{req:?}");
        assert!(parts.last().unwrap().last, "{req:?}");
        for p in &parts[..parts.len() - 1] {
            assert!(!p.last);
            assert_eq!(p.resp.header, None, "{req:?}");
            assert_eq!((p.resp.more, p.resp.count), (false, 0), "{req:?}");
        }
        if req.limit <= 0 && req.range_end == b"l" {
            assert!(parts.len() > 3, "{req:?} came in {} parts", parts.len());
        }
    }
}

#[test]
fn count_only_is_one_part() {
    let s = store();
    fill(&s.kv, 30, 10);
    for revision in [0, 20] {
        let req = RangeRequest {
            count_only: true,
            limit: 5,
            revision,
            ..prefix()
        };
        let parts = all_parts(&s.kv, &req, 64);
        assert_eq!(parts.len(), 1);
        assert_eq!(
            merged(&parts),
            apply::txn::range(&s.kv.read(), &req).unwrap()
        );
    }
}

#[test]
fn parts_stay_near_the_budget() {
    let s = store();
    // Many small values, then large ones: the keys per part grow on the small ones.
    for i in 0..400 {
        put(&s.kv, &format!("k{i:04}"), b"x");
    }
    for i in 400..440 {
        put(&s.kv, &format!("k{i:04}"), &vec![b'y'; 4000]);
    }
    let target = 16 * 1024;
    let parts = all_parts(&s.kv, &prefix(), target);
    for p in &parts {
        assert!(
            p.resp.encoded_len() < target + 4100,
            "a part of {} bytes",
            p.resp.encoded_len()
        );
    }
    assert_eq!(merged(&parts).kvs.len(), 440);
}

#[test]
fn every_part_reads_the_first_parts_revision() {
    let s = store();
    fill(&s.kv, 40, 100);
    let rev = s.kv.rev();
    let mut parts = Parts::new(prefix(), 1024);
    let first = parts.next(&s.kv).unwrap().unwrap();
    assert!(!first.last);
    // Writes after the first part are not seen by the later ones.
    put(&s.kv, "k000a", b"new");
    put(&s.kv, "k039", b"changed");
    let mut all = vec![first];
    while let Some(p) = parts.next(&s.kv) {
        all.push(p.unwrap());
    }
    let at = RangeRequest {
        revision: rev,
        ..prefix()
    };
    let mut want = apply::txn::range(&s.kv.read(), &at).unwrap();
    want.header.as_mut().unwrap().revision = rev;
    assert_eq!(merged(&all), want);
}

#[test]
fn a_compaction_between_parts_ends_the_stream() {
    let s = store();
    fill(&s.kv, 40, 100);
    let mut parts = Parts::new(prefix(), 1024);
    assert!(!parts.next(&s.kv).unwrap().unwrap().last);
    put(&s.kv, "other", b"v");
    s.kv.compact(s.kv.rev()).unwrap();
    let err = parts.next(&s.kv).unwrap().unwrap_err();
    assert_eq!(err, ServerError::from(mvcc::MvccError::Compacted));
    assert!(parts.next(&s.kv).is_none());
}

#[test]
fn a_future_or_compacted_revision_is_refused_before_any_part() {
    let s = store();
    fill(&s.kv, 5, 10);
    let future = RangeRequest {
        revision: s.kv.rev() + 1,
        ..prefix()
    };
    let err = Parts::new(future, 1024).next(&s.kv).unwrap().unwrap_err();
    assert_eq!(err, ServerError::from(mvcc::MvccError::FutureRev));
    s.kv.compact(5).unwrap();
    let old = RangeRequest {
        revision: 3,
        ..prefix()
    };
    let err = Parts::new(old, 1024).next(&s.kv).unwrap().unwrap_err();
    assert_eq!(err, ServerError::from(mvcc::MvccError::Compacted));
}

#[test]
fn checks_are_etcds() {
    use range_request::{SortOrder, SortTarget};
    let code = |r: RangeRequest| check(&r).err().map(|s| (s.code(), s.message().to_owned()));
    assert_eq!(code(prefix()), None);
    let empty = code(RangeRequest::default()).unwrap();
    assert_eq!(empty.1, "etcdserver: key is not provided");
    for (target, order, ok) in [
        (SortTarget::Key, SortOrder::Ascend, true),
        (SortTarget::Value, SortOrder::None, true),
        (SortTarget::Key, SortOrder::Descend, false),
        (SortTarget::Mod, SortOrder::Ascend, false),
    ] {
        let r = RangeRequest {
            sort_target: target as i32,
            sort_order: order as i32,
            ..prefix()
        };
        let want = (!ok).then(|| (tonic::Code::Unimplemented, CUSTOM_SORT.to_owned()));
        assert_eq!(code(r), want, "{target:?} {order:?}");
    }
    let bad_sort = RangeRequest {
        sort_order: 9,
        ..prefix()
    };
    assert_eq!(code(bad_sort).unwrap().1, "etcdserver: invalid sort option");
    let filtered = RangeRequest {
        min_create_revision: 2,
        ..prefix()
    };
    assert_eq!(
        code(filtered),
        Some((tonic::Code::Unimplemented, REVISION_FILTERS.to_owned()))
    );
}

#[test]
fn keys_per_part_follow_etcds_rule() {
    assert_eq!(next_part_keys(10, 100, 1000), 20);
    assert_eq!(next_part_keys(10, 700, 1000), 10);
    assert_eq!(next_part_keys(10, 2001, 1000), 5);
    assert_eq!(next_part_keys(1, 5000, 1000), 1);
    assert_eq!(next_part_keys(MAX_PART_KEYS, 0, 1000), MAX_PART_KEYS);
}
