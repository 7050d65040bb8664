//! Restart: a few hundred writes with overwrites, deletes and a compaction, then SIGTERM and a
//! start on the same data dir. Everything readable before must read the same after: the
//! current revision, the whole keyspace at several historical revisions, the compacted
//! revision's errors, and writes go on from the next revision.

use api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use api::etcdserverpb::request_op::Request;
use api::etcdserverpb::response_op::Response;
use api::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest,
};
use api::mvccpb::KeyValue;
use hearth_tests::normalize::{compare, Outcome};
use hearth_tests::rng::Seed;
use hearth_tests::rpc::{request_op, RawKv, RpcError};
use hearth_tests::{Kind, Server};

const LOADED: &str = "key index loaded from its image";
const NOT_USED: &str = "key index image not used";

async fn snapshot(raw: &mut RawKv, revs: &[i64]) -> Vec<(i64, Outcome)> {
    let mut out = Vec::new();
    for &rev in revs {
        for (key, range_end) in [(vec![0u8], vec![0u8]), (b"k/1".to_vec(), b"k/3".to_vec())] {
            let req = RangeRequest {
                key,
                range_end,
                revision: rev,
                ..Default::default()
            };
            out.push((rev, raw.call(Request::RequestRange(req)).await));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything() {
    let seed = Seed::from_env("restart_keeps_everything");
    let mut rng = seed.rng();
    let mut server = Server::start(Kind::Hearth).await;
    let mut raw = server.raw().await;

    // ~300 writes over 60 keys: overwrites, single and range deletes, a few txns.
    let mut rev = 1;
    let mut compacted = 0;
    for i in 0..300 {
        let key = format!("k/{}", rng.u64(..60)).into_bytes();
        let r = match rng.u64(..10) {
            0 => raw
                .delete_range(DeleteRangeRequest {
                    key,
                    ..Default::default()
                })
                .await
                .map(|r| r.header),
            1 => {
                let end = format!("k/{}", rng.u64(..60)).into_bytes();
                raw.delete_range(DeleteRangeRequest {
                    key,
                    range_end: end,
                    ..Default::default()
                })
                .await
                .map(|r| r.header)
            }
            2 => raw
                .txn(TxnRequest {
                    compare: vec![Compare {
                        target: CompareTarget::Version as i32,
                        result: CompareResult::Greater as i32,
                        key: key.clone(),
                        target_union: Some(TargetUnion::Version(0)),
                        range_end: vec![],
                    }],
                    success: vec![request_op(Request::RequestPut(PutRequest {
                        key: key.clone(),
                        value: format!("txn-{i}").into_bytes(),
                        ..Default::default()
                    }))],
                    failure: vec![request_op(Request::RequestPut(PutRequest {
                        key: b"k/created-by-txn".to_vec(),
                        value: format!("{i}").into_bytes(),
                        ..Default::default()
                    }))],
                })
                .await
                .map(|r| r.header),
            _ => raw
                .put(PutRequest {
                    key,
                    value: format!("v{i}").into_bytes(),
                    ..Default::default()
                })
                .await
                .map(|r| r.header),
        };
        rev = r.expect("write").expect("header").revision;
        if i == 150 {
            compacted = rev - 20;
            raw.compact(CompactionRequest {
                revision: compacted,
                physical: false,
            })
            .await
            .expect("compact");
        }
    }
    // Range deletes can empty most of the keyspace; end with keys that are certainly there.
    for j in 0..20 {
        rev = raw
            .put(PutRequest {
                key: format!("k/tail/{j}").into_bytes(),
                value: b"tail".to_vec(),
                ..Default::default()
            })
            .await
            .expect("write")
            .header
            .expect("header")
            .revision;
    }
    let probe = raw
        .range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("range");
    assert_eq!(probe.header.as_ref().unwrap().revision, rev);
    assert!(compacted > 100, "compacted at {compacted}");
    println!("revision {rev}, compacted at {compacted}");

    // Revisions to compare: below the compaction (errors), at it, and spread to the current.
    let mut revs = vec![compacted - 1, compacted, 0, rev, rev + 1];
    for k in 1..8 {
        revs.push(compacted + (rev - compacted) * k / 8);
    }
    let before = snapshot(&mut raw, &revs).await;
    assert!(
        matches!(&before[0].1, Err(e) if e.code == tonic::Code::OutOfRange),
        "below the compaction: {:?}",
        before[0].1
    );
    assert!(
        before
            .iter()
            .filter(|(r, _)| *r == 0)
            .any(|(_, o)| matches!(o, Ok(Response::ResponseRange(r)) if r.count > 10)),
        "the keyspace has content"
    );

    drop(raw);
    server.restart().await;
    // The clean stop left the key index for the start to load instead of a scan.
    assert_eq!(server.log().matches(LOADED).count(), 1);
    let mut raw = server.raw().await;
    let after = snapshot(&mut raw, &revs).await;
    for ((rev, b), (_, a)) in before.iter().zip(&after) {
        if let Err(diff) = compare(b, a) {
            panic!(
                "seed {}: range at revision {rev} differs after restart\n{diff}",
                seed.value()
            );
        }
    }
    // Compacting again at or below the old compaction is still an error.
    let e = raw
        .compact(CompactionRequest {
            revision: compacted,
            physical: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e,
        RpcError::new(
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted"
        )
    );
    // Writes go on from the next revision.
    let r = raw
        .put(PutRequest {
            key: b"after-restart".to_vec(),
            value: b"1".to_vec(),
            ..Default::default()
        })
        .await
        .expect("put after restart");
    assert_eq!(r.header.unwrap().revision, rev + 1);

    // A second restart right after a write, to check the newest write survives too.
    drop(raw);
    server.restart().await;
    let mut raw = server.raw().await;
    let g = raw
        .range(RangeRequest {
            key: b"after-restart".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range");
    assert_eq!(g.header.unwrap().revision, rev + 1);
    assert_eq!(
        g.kvs,
        vec![KeyValue {
            key: b"after-restart".to_vec(),
            create_revision: rev + 1,
            mod_revision: rev + 1,
            version: 1,
            value: b"1".to_vec(),
            lease: 0
        }]
    );
}

async fn put(raw: &mut RawKv, key: &str, value: &str) -> i64 {
    raw.put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    })
    .await
    .expect("put")
    .header
    .expect("header")
    .revision
}

async fn whole_keyspace(raw: &mut RawKv) -> Vec<(String, i64, i64, i64)> {
    let r = raw
        .range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        })
        .await
        .expect("range");
    r.kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
            )
        })
        .collect()
}

/// The key index image a clean stop writes is used by the next start only; a member that
/// crashes later starts from a scan even if an old image is put back in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_index_image_is_used_only_by_the_start_after_its_stop() {
    let mut server = Server::start(Kind::Hearth).await;
    let image = server.data_dir().join("member/snap/db.keyindex");
    let mut raw = server.raw().await;
    for i in 0..50 {
        put(&mut raw, &format!("k/{}", i % 20), &i.to_string()).await;
    }
    drop(raw);
    server.stop();
    let saved = std::fs::read(&image).expect("a clean stop writes the key index image");

    server.restart().await;
    assert!(!image.exists(), "the start removes the image it read");
    assert_eq!(server.log().matches(LOADED).count(), 1);
    let mut raw = server.raw().await;
    raw.delete_range(DeleteRangeRequest {
        key: b"k/1".to_vec(),
        ..Default::default()
    })
    .await
    .expect("delete");
    let rev = put(&mut raw, "k/new", "1").await;
    let want = whole_keyspace(&mut raw).await;
    assert!(want.iter().any(|k| k.0 == "k/new") && !want.iter().any(|k| k.0 == "k/1"));
    drop(raw);

    // A crash, and the old image back in place: the start must see it is outdated.
    server.kill9();
    std::fs::write(&image, &saved).unwrap();
    server.restart().await;
    assert_eq!(server.log().matches(NOT_USED).count(), 1);
    assert_eq!(server.log().matches(LOADED).count(), 1);
    let mut raw = server.raw().await;
    assert_eq!(whole_keyspace(&mut raw).await, want);
    assert_eq!(put(&mut raw, "k/after", "1").await, rev + 1);
    drop(raw);

    // A crash with no image scans without a word about images.
    server.kill9();
    server.restart().await;
    assert_eq!(server.log().matches(NOT_USED).count(), 1);
    assert_eq!(server.log().matches(LOADED).count(), 1);
    let mut raw = server.raw().await;
    let now = whole_keyspace(&mut raw).await;
    assert_eq!(now.len(), want.len() + 1);
    drop(raw);

    // And a clean stop again is followed by a start from the image, with the same data.
    server.restart().await;
    assert_eq!(server.log().matches(LOADED).count(), 2);
    let mut raw = server.raw().await;
    assert_eq!(whole_keyspace(&mut raw).await, now);
}
