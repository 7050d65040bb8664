//! Export and import through bbolt files: what etcd wrote, what Hearth writes, both ways.

use std::io::Read as _;
use std::sync::Arc;

use api::mvccpb::KeyValue;
use backend::{Backend, BackendConfig, Bucket, Reader as _};
use prost::Message as _;

use super::*;

/// The file etcd 3.4.23 wrote (see the bbolt crate's golden test), without its trailer.
fn etcd_fixture(dir: &std::path::Path) -> bbolt::Db {
    let mut b = include_bytes!("../../bbolt/tests/data/etcd-3.4.23-small.db").to_vec();
    b.truncate(b.len() - 32);
    let p = dir.join("etcd.db");
    std::fs::write(&p, &b).unwrap();
    bbolt::Db::open(&p).unwrap()
}

fn backend(dir: &std::path::Path, name: &str) -> Arc<Backend> {
    Arc::new(Backend::open(dir.join(name), BackendConfig::default()).unwrap())
}

/// A backend with a history: puts, overwrites, a delete, a compaction, a lease, a member and
/// a Raft configuration.
fn hearth_backend(dir: &std::path::Path) -> Arc<Backend> {
    let be = backend(dir, "hearth");
    let kv = mvcc::KvStore::open(be.clone()).unwrap();
    for i in 0..300u32 {
        let mut w = kv.write();
        w.put(format!("k{:03}", i % 120).as_bytes(), &[b'v'; 200], 0);
        w.end(u64::from(i) + 10, 2).unwrap();
    }
    let mut w = kv.write();
    w.delete_range(b"k000", Some(b"k010"));
    w.end(400, 2).unwrap();
    kv.compact(150).unwrap().wait().unwrap();
    drop(kv);
    let mut w = be.write().unwrap();
    let lease = api::leasepb::Lease {
        id: 77,
        ttl: 60,
        remaining_ttl: 0,
    };
    w.put(Bucket::Lease, &77i64.to_be_bytes(), &lease.encode_to_vec())
        .unwrap();
    let member = api::membershippb::Member {
        id: 0xabc,
        raft_attributes: Some(api::membershippb::RaftAttributes {
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            is_learner: false,
        }),
        member_attributes: Some(api::membershippb::Attributes {
            name: "m1".into(),
            client_urls: vec![],
        }),
    };
    w.put(Bucket::Members, b"abc", &member.encode_to_vec())
        .unwrap();
    let cs = json::ConfState {
        voters: vec![0xabc],
        ..Default::default()
    };
    w.put(Bucket::Meta, b"confState", &cs.encode_to_vec())
        .unwrap();
    w.put(Bucket::Alarm, b"\x08\x01\x10\x01", b"").unwrap();
    w.put(Bucket::Cluster, b"clusterVersion", b"3.5.0").unwrap();
    w.commit_durable().unwrap();
    be
}

fn export_to_file(be: &Backend, path: &std::path::Path) -> bbolt::Db {
    let mut snap = EtcdSnapshot::new(be).unwrap();
    let mut bytes = Vec::new();
    snap.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes.len() as u64, snap.size());
    std::fs::write(path, &bytes).unwrap();
    bbolt::Db::open(path).unwrap()
}

fn pairs(r: &dyn backend::Reader, b: Bucket) -> Vec<(Vec<u8>, Vec<u8>)> {
    r.range(b, &[], None, 0).unwrap()
}

fn file_pairs(db: &bbolt::Db, bucket: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let r = db.bucket(bucket.as_bytes()).unwrap().unwrap();
    db.for_each(&r, &mut |e| {
        out.push((e.key.to_vec(), e.value.to_vec()));
        true
    })
    .unwrap();
    out
}

#[test]
fn export_writes_etcds_buckets_with_hearths_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let be = hearth_backend(dir.path());
    let db = export_to_file(&be, &dir.path().join("out.db"));
    check_integrity(&db).unwrap();
    let names: Vec<String> = db
        .buckets()
        .unwrap()
        .into_iter()
        .map(|(n, _)| String::from_utf8(n).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "alarm",
            "auth",
            "authRoles",
            "authUsers",
            "cluster",
            "key",
            "lease",
            "members",
            "members_removed",
            "meta"
        ]
    );
    let r = be.read().unwrap();
    for b in [Bucket::Key, Bucket::Lease, Bucket::Alarm, Bucket::Cluster] {
        assert_eq!(file_pairs(&db, b.name()), pairs(&r, b), "{b}");
    }
    assert_eq!(
        file_pairs(&db, "members"),
        vec![(
            b"abc".to_vec(),
            b"{\"id\":2748,\"peerURLs\":[\"http://127.0.0.1:2380\"],\"name\":\"m1\"}".to_vec()
        )]
    );
    let meta = file_pairs(&db, "meta");
    let get = |k: &str| {
        meta.iter()
            .find(|(mk, _)| mk == k.as_bytes())
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("confState").unwrap(),
        b"{\"voters\":[2748],\"auto_leave\":false}"
    );
    assert_eq!(get("consistent_index").unwrap(), 400u64.to_be_bytes());
    assert_eq!(get("term").unwrap(), 2u64.to_be_bytes());
    let mark = r.get(Bucket::Meta, b"finishedCompactRev").unwrap().unwrap();
    assert_eq!(get("finishedCompactRev").unwrap(), mark);
    assert_eq!(mark.len(), 17);
}

#[test]
fn an_export_is_one_consistent_state_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let be = hearth_backend(dir.path());
    let before = pairs(&be.read().unwrap(), Bucket::Key);
    let mut snap = EtcdSnapshot::new(&be).unwrap();
    let mut first = vec![0u8; 10_000];
    snap.read_exact(&mut first).unwrap();
    // Writes commit while the stream is half read; none of them is in it.
    for i in 0..50u32 {
        let mut w = be.write().unwrap();
        w.put(
            Bucket::Key,
            &mvcc::Revision::new(1000 + i64::from(i), 0).to_bytes(),
            b"x",
        )
        .unwrap();
        w.commit().unwrap();
    }
    let mut rest = Vec::new();
    snap.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    let p = dir.path().join("out.db");
    std::fs::write(&p, &first).unwrap();
    let db = bbolt::Db::open(&p).unwrap();
    check_integrity(&db).unwrap();
    assert_eq!(file_pairs(&db, "key"), before);
}

#[test]
fn export_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let be = backend(dir.path(), "big");
    let value = vec![7u8; 1000];
    for chunk in 0..20u32 {
        let mut w = be.write().unwrap();
        for i in 0..1000u32 {
            let rev = i64::from(chunk * 1000 + i + 2);
            w.put(Bucket::Key, &mvcc::Revision::new(rev, 0).to_bytes(), &value)
                .unwrap();
        }
        w.commit().unwrap();
    }
    let mut snap = EtcdSnapshot::new(&be).unwrap();
    assert!(snap.size() > 20_000_000);
    let mut buf = vec![0u8; 32 * 1024];
    let mut total = 0u64;
    let mut most = 0usize;
    loop {
        let n = snap.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        most = most.max(snap.buffered());
    }
    assert_eq!(total, snap.size());
    // One batch of pairs laid out in pages, never the database.
    assert!(most < 2 * BATCH_BYTES, "{most} bytes buffered");
}

#[test]
fn round_trip_through_etcds_format_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let be = hearth_backend(dir.path());
    let db = export_to_file(&be, &dir.path().join("out.db"));
    let back = backend(dir.path(), "back");
    let imported = import(&db, &back).unwrap();
    assert_eq!(imported.skipped, Vec::<String>::new());
    let (a, b) = (be.read().unwrap(), back.read().unwrap());
    for bucket in [
        Bucket::Key,
        Bucket::Lease,
        Bucket::Alarm,
        Bucket::Cluster,
        Bucket::Auth,
    ] {
        assert_eq!(pairs(&a, bucket), pairs(&b, bucket), "{bucket}");
    }
    // Only the compaction marks of meta; no members.
    let meta: Vec<Vec<u8>> = pairs(&b, Bucket::Meta)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        meta,
        [
            b"finishedCompactRev".to_vec(),
            b"scheduledCompactRev".to_vec()
        ]
    );
    assert!(pairs(&b, Bucket::Members).is_empty());
    drop((a, b));
    let kv1 = mvcc::KvStore::open(be.clone()).unwrap();
    let kv2 = mvcc::KvStore::open(back.clone()).unwrap();
    assert_eq!(kv1.rev(), kv2.rev());
    assert_eq!(kv1.compact_rev(), kv2.compact_rev());
    assert_eq!(kv1.hash_kv(0).unwrap(), kv2.hash_kv(0).unwrap());
}

#[test]
fn status_of_etcds_file_is_what_etcdctl_printed() {
    let dir = tempfile::tempdir().unwrap();
    let db = etcd_fixture(dir.path());
    // `etcdctl snapshot status -w json` on the fixture.
    assert_eq!(
        status(&db).unwrap(),
        Status {
            hash: 168725416,
            revision: 6,
            total_keys: 14,
            total_size: 20480,
        }
    );
}

#[test]
fn etcds_records_are_what_prost_writes() {
    // HashKV and etcd's snapshot hash cover these bytes: Hearth must write the same bytes for
    // the same record as etcd (gogo-protobuf) does.
    let dir = tempfile::tempdir().unwrap();
    let db = etcd_fixture(dir.path());
    for (k, v) in file_pairs(&db, "key") {
        let kv = KeyValue::decode(v.as_slice()).unwrap();
        assert_eq!(kv.encode_to_vec(), v, "record {k:02x?}");
    }
    for (_, v) in file_pairs(&db, "lease") {
        let l = api::leasepb::Lease::decode(v.as_slice()).unwrap();
        assert_eq!(l.encode_to_vec(), v);
    }
    for (_, v) in file_pairs(&db, "authUsers") {
        let u = api::authpb::User::decode(v.as_slice()).unwrap();
        assert_eq!(u.encode_to_vec(), v);
    }
    for (_, v) in file_pairs(&db, "authRoles") {
        let r = api::authpb::Role::decode(v.as_slice()).unwrap();
        assert_eq!(r.encode_to_vec(), v);
    }
}

#[test]
fn importing_etcds_file_gives_its_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let db = etcd_fixture(dir.path());
    let be = backend(dir.path(), "imported");
    let imported = import(&db, &be).unwrap();
    // 5 key records, 2 compaction marks, 1 lease, auth (1), a user, a role, the cluster version.
    assert_eq!(imported.pairs, 12);
    let kv = mvcc::KvStore::open(be.clone()).unwrap();
    assert_eq!(kv.rev(), 6);
    assert_eq!(kv.compact_rev(), 3);
    let r = be.read().unwrap();
    assert_eq!(r.get(Bucket::Meta, b"consistent_index").unwrap(), None);
    assert_eq!(
        r.get(Bucket::Cluster, b"clusterVersion").unwrap().unwrap(),
        b"3.4.0"
    );
}

#[test]
fn files_that_are_not_etcds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let no_key = bbolt::build(4096, &[(&b"meta"[..], vec![])]).unwrap();
    let p = dir.path().join("nokey.db");
    std::fs::write(&p, &no_key).unwrap();
    let db = bbolt::Db::open(&p).unwrap();
    let e = import(&db, &backend(dir.path(), "a"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an etcd snapshot: no `key` bucket"), "{e}");

    let extra = bbolt::build(
        4096,
        &[
            (&b"key"[..], vec![]),
            (&b"meta"[..], vec![(b"weird".to_vec(), b"1".to_vec())]),
            (&b"zzz"[..], vec![(b"a".to_vec(), b"b".to_vec())]),
        ],
    )
    .unwrap();
    let p = dir.path().join("extra.db");
    std::fs::write(&p, &extra).unwrap();
    let db = bbolt::Db::open(&p).unwrap();
    let imported = import(&db, &backend(dir.path(), "b")).unwrap();
    assert_eq!(imported.pairs, 0);
    assert_eq!(
        imported.skipped,
        vec![
            "meta key \"weird\"".to_string(),
            "bucket \"zzz\": not an etcd bucket Hearth keeps".to_string()
        ]
    );
    assert!(!is_etcd_file(b"redb\x1a\x0a\xa9\x0d\x0a"));
}
