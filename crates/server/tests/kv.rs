//! The server in-process on loopback port 0, driven through the generated gRPC client: the full path from
//! gRPC through Raft, WAL and apply, without the binary.

use api::etcdserverpb::{
    compare, kv_client::KvClient, maintenance_client::MaintenanceClient, request_op,
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    StatusRequest, TxnRequest,
};
use server::{Config, Hearth};
use tonic::transport::Channel;

fn config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        listen_client_urls: vec!["http://127.0.0.1:0".into()],
        listen_peer_urls: vec!["http://127.0.0.1:0".into()],
        ..Config::default()
    }
}

/// A channel to the member's client port, which is listening once `Hearth::start` returned.
async fn client(h: &Hearth) -> Channel {
    let addr = h.client_addrs()[0];
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
}

fn put(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }
}

fn get(k: &str) -> RangeRequest {
    RangeRequest {
        key: k.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_bump_revisions_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hearth::start(config(dir.path())).await.unwrap();
    let mut kv = KvClient::new(client(&h).await);

    let r = kv.range(get("a")).await.unwrap().into_inner();
    assert_eq!(
        r.header.as_ref().unwrap().revision,
        1,
        "an empty store is at revision 1"
    );
    let p = kv.put(put("a", "1")).await.unwrap().into_inner();
    let hd = p.header.unwrap();
    assert_eq!(hd.revision, 2);
    assert_ne!(hd.member_id, 0);
    assert_ne!(hd.cluster_id, 0);
    assert!(hd.raft_term >= 1);
    kv.put(put("a", "2")).await.unwrap();
    kv.put(put("b", "x")).await.unwrap();
    let d = kv
        .delete_range(DeleteRangeRequest {
            key: "b".into(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.deleted, 1);
    assert_eq!(d.prev_kvs[0].value, b"x");
    assert_eq!(d.header.unwrap().revision, 5);

    let r = kv.range(get("a")).await.unwrap().into_inner();
    assert_eq!(r.kvs[0].value, b"2");
    assert_eq!(
        (
            r.kvs[0].create_revision,
            r.kvs[0].mod_revision,
            r.kvs[0].version
        ),
        (2, 3, 2)
    );
    h.stop().await.unwrap();

    let h = Hearth::start(config(dir.path())).await.unwrap();
    let mut kv = KvClient::new(client(&h).await);
    let r = kv.range(get("a")).await.unwrap().into_inner();
    assert_eq!(r.header.unwrap().revision, 5);
    assert_eq!(r.kvs[0].value, b"2");
    let old = kv
        .range(RangeRequest {
            revision: 2,
            ..get("a")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.kvs[0].value, b"1");
    let p = kv.put(put("c", "3")).await.unwrap().into_inner();
    assert_eq!(p.header.unwrap().revision, 6);
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_errors_for_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hearth::start(config(dir.path())).await.unwrap();
    let mut kv = KvClient::new(client(&h).await);

    let e = kv.put(put("", "v")).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: key is not provided"
        )
    );
    let e = kv
        .put(PutRequest {
            ignore_value: true,
            ..put("k", "v")
        })
        .await
        .unwrap_err();
    assert_eq!(e.message(), "etcdserver: value is provided");
    let e = kv
        .put(PutRequest {
            ignore_value: true,
            ..put("missing", "")
        })
        .await
        .unwrap_err();
    assert_eq!(e.message(), "etcdserver: key not found");
    let e = kv
        .put(PutRequest {
            lease: 42,
            ..put("k", "v")
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::NotFound,
            "etcdserver: requested lease not found"
        )
    );
    let e = kv
        .range(RangeRequest {
            revision: 100,
            ..get("k")
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision"
        )
    );
    let big = "x".repeat(1572864);
    let e = kv.put(put("big", &big)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: request is too large"
        )
    );

    for i in 0..4 {
        kv.put(put("c", &i.to_string())).await.unwrap();
    }
    let c = kv
        .compact(CompactionRequest {
            revision: 3,
            physical: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.header.unwrap().revision, 5);
    let e = kv
        .range(RangeRequest {
            revision: 2,
            ..get("c")
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    let e = kv
        .compact(CompactionRequest {
            revision: 3,
            physical: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    // Puts of c made revisions 2..=5; compacting at 3 keeps the value c had at 3.
    assert_eq!(
        kv.range(RangeRequest {
            revision: 3,
            ..get("c")
        })
        .await
        .unwrap()
        .into_inner()
        .kvs[0]
            .value,
        b"1"
    );

    let mut m = MaintenanceClient::new(client(&h).await);
    let s = m.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(
        s.leader,
        s.header.unwrap().member_id,
        "a single member leads itself"
    );
    assert!(s.raft_applied_index >= 5 && s.db_size > 0);
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares_and_branches() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hearth::start(config(dir.path())).await.unwrap();
    let mut kv = KvClient::new(client(&h).await);
    kv.put(put("k", "v1")).await.unwrap();

    let op_put = |k: &str, v: &str| RequestOp {
        request: Some(request_op::Request::RequestPut(put(k, v))),
    };
    let op_get = |k: &str| RequestOp {
        request: Some(request_op::Request::RequestRange(get(k))),
    };
    let cmp_value = |k: &str, v: &str| Compare {
        key: k.into(),
        target: compare::CompareTarget::Value as i32,
        result: compare::CompareResult::Equal as i32,
        target_union: Some(compare::TargetUnion::Value(v.into())),
        ..Default::default()
    };
    let t = kv
        .txn(TxnRequest {
            compare: vec![cmp_value("k", "v1")],
            success: vec![op_put("k", "v2"), op_put("other", "o"), op_get("k")],
            failure: vec![op_get("k")],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(t.succeeded);
    assert_eq!(
        t.header.unwrap().revision,
        3,
        "a txn bumps the revision once"
    );
    let Some(api::etcdserverpb::response_op::Response::ResponseRange(r)) = &t.responses[2].response
    else {
        panic!("expected a range response")
    };
    assert_eq!(r.kvs[0].value, b"v2", "a txn sees its own writes");

    // A missing key compares as zeros, but never equal on VALUE.
    let t = kv
        .txn(TxnRequest {
            compare: vec![Compare {
                key: "missing".into(),
                target: compare::CompareTarget::Version as i32,
                result: compare::CompareResult::Equal as i32,
                target_union: Some(compare::TargetUnion::Version(0)),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(t.succeeded);
    let t = kv
        .txn(TxnRequest {
            compare: vec![cmp_value("missing", "")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!t.succeeded);
    assert_eq!(
        t.header.unwrap().revision,
        3,
        "a read-only txn does not bump the revision"
    );

    let e = kv
        .txn(TxnRequest {
            success: vec![op_put("d", "1"), op_put("d", "2")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.message(),
        "etcdserver: duplicate key given in txn request"
    );
    let e = kv
        .txn(TxnRequest {
            success: (0..129).map(|i| op_put(&format!("k{i}"), "v")).collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.message(),
        "etcdserver: too many operations in txn request"
    );
    h.stop().await.unwrap();
}
