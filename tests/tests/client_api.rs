//! The KV API through the `etcd-client` crate (and, where its builders cannot express a
//! request, the raw client), with the exact responses and errors etcd 3.4 gives. Every
//! expectation here was checked against etcd itself (`HEARTH_TEST_TARGET=etcd`).

use api::etcdserverpb::range_request::{SortOrder as WireSortOrder, SortTarget as WireSortTarget};
use api::etcdserverpb::response_op::Response;
use api::etcdserverpb::{
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    TxnRequest, TxnResponse,
};
use api::mvccpb::KeyValue;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use hearth_tests::normalize::show_kv;
use hearth_tests::rpc::{convert, RpcError};
use hearth_tests::{Kind, Server};
use tonic::Code;

const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const EMPTY_KEY: &str = "etcdserver: key is not provided";
const KEY_NOT_FOUND: &str = "etcdserver: key not found";
const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
const TOO_LARGE: &str = "etcdserver: request is too large";

fn range(r: &etcd_client::GetResponse) -> RangeResponse {
    convert(&r.0)
}

fn rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.expect("response has a header").revision()
}

/// `key=value` for each kv, in order.
fn kvs(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| {
            format!(
                "{}={}",
                String::from_utf8_lossy(&kv.key),
                String::from_utf8_lossy(&kv.value)
            )
        })
        .collect()
}

fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn kv(key: &str, value: &str, create: i64, modr: i64, version: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modr,
        version,
        lease: 0,
    }
}

#[track_caller]
fn assert_err<T: std::fmt::Debug>(r: Result<T, etcd_client::Error>, code: Code, msg: &str) {
    match r {
        Ok(v) => panic!("expected error {code:?} {msg:?}, got {v:?}"),
        Err(e) => assert_eq!(RpcError::from(e), RpcError::new(code, msg)),
    }
}

async fn get(c: &mut Client, key: &str, opts: GetOptions) -> RangeResponse {
    range(&c.get(key, Some(opts)).await.expect("get"))
}

/// Revisions 2..=7: a=1, b=2, c=3, a=10, ab=4, b/x=5.
/// Final: a(create 2, mod 5, ver 2)=10, ab(6,6,1)=4, b(3,3,1)=2, b/x(7,7,1)=5, c(4,4,1)=3.
async fn populate(c: &mut Client) {
    for (i, (k, v)) in [
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("a", "10"),
        ("ab", "4"),
        ("b/x", "5"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = c.put(k, v, None).await.expect("put");
        assert_eq!(rev(r.header()), i as i64 + 2, "put {k} revision");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_options() {
    let server = Server::start(Kind::Hearth).await;
    let mut c = server.client().await;
    populate(&mut c).await;
    let all = || GetOptions::new().with_all_keys();

    let r = get(&mut c, "a", GetOptions::new()).await;
    assert_eq!(r.kvs, vec![kv("a", "10", 2, 5, 2)]);
    assert_eq!((r.count, r.more), (1, false));
    assert_eq!(r.header.as_ref().unwrap().revision, 7);
    let h = r.header.unwrap();
    assert!(h.cluster_id != 0 && h.member_id != 0 && h.raft_term != 0);

    // Historical reads: the header still carries the current revision.
    let r = get(&mut c, "a", GetOptions::new().with_revision(4)).await;
    assert_eq!(r.kvs, vec![kv("a", "1", 2, 2, 1)]);
    assert_eq!(r.header.unwrap().revision, 7);
    let r = get(&mut c, "a", GetOptions::new().with_revision(1)).await;
    assert_eq!((r.kvs.len(), r.count), (0, 0));
    let r = get(&mut c, "", all().with_revision(3)).await;
    assert_eq!(kvs(&r), ["a=1", "b=2"]);
    let r = get(&mut c, "a", GetOptions::new().with_revision(7)).await;
    assert_eq!(kvs(&r), ["a=10"]);
    assert_err(
        c.get("a", Some(GetOptions::new().with_revision(8))).await,
        Code::OutOfRange,
        FUTURE_REV,
    );
    // A negative revision means "current".
    let r = get(&mut c, "a", GetOptions::new().with_revision(-1)).await;
    assert_eq!(kvs(&r), ["a=10"]);

    let r = get(&mut c, "missing", GetOptions::new()).await;
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 0, false));

    // Key ranges: prefix, from-key, explicit end, all keys, inverted and empty ranges.
    assert_eq!(
        keys(&get(&mut c, "a", GetOptions::new().with_prefix()).await),
        ["a", "ab"]
    );
    assert_eq!(
        keys(&get(&mut c, "b", GetOptions::new().with_prefix()).await),
        ["b", "b/x"]
    );
    assert_eq!(
        keys(&get(&mut c, "b", GetOptions::new().with_from_key()).await),
        ["b", "b/x", "c"]
    );
    assert_eq!(
        keys(&get(&mut c, "a", GetOptions::new().with_range("b")).await),
        ["a", "ab"]
    );
    assert_eq!(
        keys(&get(&mut c, "ab", GetOptions::new().with_range("b/x")).await),
        ["ab", "b"]
    );
    assert_eq!(
        keys(&get(&mut c, "", all()).await),
        ["a", "ab", "b", "b/x", "c"]
    );
    let r = get(&mut c, "c", GetOptions::new().with_range("a")).await;
    assert_eq!((r.kvs.len(), r.count), (0, 0), "end < key: empty");
    let r = get(&mut c, "b", GetOptions::new().with_range("b")).await;
    assert_eq!((r.kvs.len(), r.count), (0, 0), "end == key: empty");
    // range_end "\0" with any key: every key >= key.
    assert_eq!(
        keys(&get(&mut c, "ab", GetOptions::new().with_range(vec![0u8])).await),
        ["ab", "b", "b/x", "c"]
    );

    // Limit: count is the total, more says there are more.
    let r = get(&mut c, "", all().with_limit(2)).await;
    assert_eq!(keys(&r), ["a", "ab"]);
    assert_eq!((r.count, r.more), (5, true));
    let r = get(&mut c, "", all().with_limit(5)).await;
    assert_eq!((r.kvs.len(), r.count, r.more), (5, 5, false));
    let r = get(&mut c, "", all().with_limit(-1)).await;
    assert_eq!((r.kvs.len(), r.count, r.more), (5, 5, false));

    // Sorting: ties keep key order.
    let sorted = |t, o| all().with_sort(t, o);
    for (t, o, expect) in [
        (
            SortTarget::Mod,
            SortOrder::Descend,
            ["b/x", "ab", "a", "c", "b"],
        ),
        (
            SortTarget::Mod,
            SortOrder::Ascend,
            ["b", "c", "a", "ab", "b/x"],
        ),
        (
            SortTarget::Create,
            SortOrder::Ascend,
            ["a", "b", "c", "ab", "b/x"],
        ),
        (
            SortTarget::Create,
            SortOrder::Descend,
            ["b/x", "ab", "c", "b", "a"],
        ),
        (
            SortTarget::Value,
            SortOrder::Ascend,
            ["a", "b", "c", "ab", "b/x"],
        ),
        (
            SortTarget::Value,
            SortOrder::Descend,
            ["b/x", "ab", "c", "b", "a"],
        ),
        (
            SortTarget::Version,
            SortOrder::Descend,
            ["a", "ab", "b", "b/x", "c"],
        ),
        (
            SortTarget::Version,
            SortOrder::Ascend,
            ["ab", "b", "b/x", "c", "a"],
        ),
        (
            SortTarget::Key,
            SortOrder::Descend,
            ["c", "b/x", "b", "ab", "a"],
        ),
        (
            SortTarget::Key,
            SortOrder::Ascend,
            ["a", "ab", "b", "b/x", "c"],
        ),
        // A sort target with order NONE sorts ascending by that target.
        (
            SortTarget::Mod,
            SortOrder::None,
            ["b", "c", "a", "ab", "b/x"],
        ),
        (
            SortTarget::Value,
            SortOrder::None,
            ["a", "b", "c", "ab", "b/x"],
        ),
    ] {
        assert_eq!(
            keys(&get(&mut c, "", sorted(t, o)).await),
            expect,
            "sort {t:?} {o:?}"
        );
    }
    // Sort, then limit.
    let r = get(
        &mut c,
        "",
        sorted(SortTarget::Mod, SortOrder::Descend).with_limit(2),
    )
    .await;
    assert_eq!(keys(&r), ["b/x", "ab"]);
    assert_eq!((r.count, r.more), (5, true));
    // KEY/ASCEND as sent on the wire (the crate rewrites it to NONE).
    let mut raw = server.raw().await;
    let r = raw
        .range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            sort_target: WireSortTarget::Key as i32,
            sort_order: WireSortOrder::Ascend as i32,
            limit: 3,
            ..Default::default()
        })
        .await
        .expect("range");
    assert_eq!(keys(&r), ["a", "ab", "b"]);
    assert_eq!((r.count, r.more), (5, true));

    // keys_only: keys and metadata, no values.
    let r = get(
        &mut c,
        "a",
        GetOptions::new().with_prefix().with_keys_only(),
    )
    .await;
    assert_eq!(
        r.kvs,
        vec![kv("a", "", 2, 5, 2), kv("ab", "", 6, 6, 1)],
        "keys_only"
    );
    // count_only: no kvs, the count, and more=false even with a limit.
    let r = get(&mut c, "", all().with_count_only()).await;
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 5, false));
    let r = get(&mut c, "", all().with_count_only().with_limit(2)).await;
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 5, false));
    let r = get(
        &mut c,
        "b",
        GetOptions::new().with_prefix().with_count_only(),
    )
    .await;
    assert_eq!((r.kvs.len(), r.count), (0, 2));

    // Revision filters prune the kvs, but count is the number of keys in the range before
    // filtering.
    let r = get(&mut c, "", all().with_min_mod_revision(5)).await;
    assert_eq!(
        (keys(&r), r.count),
        (vec!["a".into(), "ab".into(), "b/x".into()], 5)
    );
    let r = get(&mut c, "", all().with_max_mod_revision(4)).await;
    assert_eq!((keys(&r), r.count), (vec!["b".into(), "c".into()], 5));
    let r = get(
        &mut c,
        "",
        all()
            .with_min_create_revision(3)
            .with_max_create_revision(6),
    )
    .await;
    assert_eq!(keys(&r), ["ab", "b", "c"]);
    assert_eq!(r.count, 5);
    let r = get(&mut c, "", all().with_min_mod_revision(5).with_limit(1)).await;
    assert_eq!(keys(&r), ["a"]);
    assert_eq!((r.count, r.more), (5, true));
    let r = get(&mut c, "", all().with_min_mod_revision(5).with_limit(3)).await;
    assert_eq!((r.kvs.len(), r.count, r.more), (3, 5, false));
    let r = get(
        &mut c,
        "",
        all()
            .with_max_mod_revision(6)
            .with_sort(SortTarget::Mod, SortOrder::Descend)
            .with_limit(2),
    )
    .await;
    assert_eq!(keys(&r), ["ab", "a"]);
    // Filters at a historical revision.
    let r = get(
        &mut c,
        "",
        all().with_revision(5).with_min_create_revision(3),
    )
    .await;
    assert_eq!(kvs(&r), ["b=2", "c=3"]);

    // Serializable reads answer the same on a single member.
    let r = get(&mut c, "", all().with_serializable()).await;
    assert_eq!(r.kvs.len(), 5);

    // The empty key is an error for a plain get.
    assert_err(
        c.get("", None).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_options_and_errors() {
    let server = Server::start(Kind::Hearth).await;
    let mut c = server.client().await;

    // prev_kv on a new key: none.
    let r = c
        .put("k", "v1", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(rev(r.header()), 2);
    assert!(r.prev_key().is_none());
    let r = c
        .put("k", "v2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(rev(r.header()), 3);
    let prev: PutResponse = convert(&r.0);
    assert_eq!(prev.prev_kv, Some(kv("k", "v1", 2, 2, 1)));
    // Without prev_kv: none.
    let r = c.put("k", "v3", None).await.unwrap();
    assert!(r.prev_key().is_none());
    assert_eq!(rev(r.header()), 4);

    // ignore_value: keeps the value, bumps version and mod_revision.
    let r = c
        .put(
            "k",
            "",
            Some(PutOptions::new().with_ignore_value().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(rev(r.header()), 5);
    let prev: PutResponse = convert(&r.0);
    assert_eq!(prev.prev_kv, Some(kv("k", "v3", 2, 4, 3)));
    let g = get(&mut c, "k", GetOptions::new()).await;
    assert_eq!(g.kvs, vec![kv("k", "v3", 2, 5, 4)]);
    // ignore_lease: new value, lease kept (none here).
    let r = c
        .put("k", "v4", Some(PutOptions::new().with_ignore_lease()))
        .await
        .unwrap();
    assert_eq!(rev(r.header()), 6);
    let g = get(&mut c, "k", GetOptions::new()).await;
    assert_eq!(g.kvs, vec![kv("k", "v4", 2, 6, 5)]);
    // Both at once.
    c.put(
        "k",
        "",
        Some(PutOptions::new().with_ignore_value().with_ignore_lease()),
    )
    .await
    .unwrap();
    let g = get(&mut c, "k", GetOptions::new()).await;
    assert_eq!(g.kvs, vec![kv("k", "v4", 2, 7, 6)]);
    // Empty values are values.
    c.put("empty", "", None).await.unwrap();
    let g = get(&mut c, "empty", GetOptions::new()).await;
    assert_eq!(g.kvs, vec![kv("empty", "", 8, 8, 1)]);

    // Errors leave the revision alone.
    assert_err(
        c.put("missing", "", Some(PutOptions::new().with_ignore_value()))
            .await,
        Code::InvalidArgument,
        KEY_NOT_FOUND,
    );
    assert_err(
        c.put("missing", "x", Some(PutOptions::new().with_ignore_lease()))
            .await,
        Code::InvalidArgument,
        KEY_NOT_FOUND,
    );
    assert_err(
        c.put("k", "x", Some(PutOptions::new().with_ignore_value()))
            .await,
        Code::InvalidArgument,
        "etcdserver: value is provided",
    );
    assert_err(
        c.put(
            "k",
            "x",
            Some(PutOptions::new().with_ignore_lease().with_lease(5)),
        )
        .await,
        Code::InvalidArgument,
        "etcdserver: lease is provided",
    );
    assert_err(c.put("", "x", None).await, Code::InvalidArgument, EMPTY_KEY);
    let g = get(&mut c, "k", GetOptions::new()).await;
    assert_eq!(g.header.as_ref().unwrap().revision, 8);
    assert_eq!(kvs(&g), ["k=v4"]);

    // Binary keys and values, including NUL and 0xff bytes.
    let key = vec![0u8, 1, 0xff, b'k'];
    let value = vec![0xffu8, 0, 7];
    c.put(key.clone(), value.clone(), None).await.unwrap();
    let r = range(&c.get(key.clone(), None).await.unwrap());
    assert_eq!(
        r.kvs.len(),
        1,
        "{:?}",
        r.kvs.iter().map(show_kv).collect::<Vec<_>>()
    );
    assert_eq!((r.kvs[0].key.clone(), r.kvs[0].value.clone()), (key, value));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_with_unknown_lease_is_not_found() {
    let server = Server::start(Kind::Hearth).await;
    let mut c = server.client().await;
    assert_err(
        c.put("k", "v", Some(PutOptions::new().with_lease(0x1234)))
            .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    let r = get(&mut c, "k", GetOptions::new()).await;
    assert_eq!((r.count, r.header.unwrap().revision), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_options() {
    let server = Server::start(Kind::Hearth).await;
    let mut c = server.client().await;
    populate(&mut c).await;

    // Deleting nothing does not create a revision.
    let r = c.delete("missing", None).await.unwrap();
    assert_eq!((r.deleted(), rev(r.header())), (0, 7));
    let r = c
        .delete(
            "zz",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.deleted(), rev(r.header()), r.prev_kvs().len()),
        (0, 7, 0)
    );

    // Single key, with prev_kv.
    let r = c
        .delete("c", Some(DeleteOptions::new().with_prev_key()))
        .await
        .unwrap();
    let d: DeleteRangeResponse = convert(&r.0);
    assert_eq!(d.deleted, 1);
    assert_eq!(d.prev_kvs, vec![kv("c", "3", 4, 4, 1)]);
    assert_eq!(d.header.unwrap().revision, 8);
    // Without prev_kv: no prev_kvs.
    let r = c.delete("b/x", None).await.unwrap();
    assert_eq!(
        (r.deleted(), r.prev_kvs().len(), rev(r.header())),
        (1, 0, 9)
    );

    // A range: one revision for all keys, prev_kvs in key order.
    let r = c
        .delete(
            "a",
            Some(DeleteOptions::new().with_range("b").with_prev_key()),
        )
        .await
        .unwrap();
    let d: DeleteRangeResponse = convert(&r.0);
    assert_eq!(d.deleted, 2);
    assert_eq!(
        d.prev_kvs,
        vec![kv("a", "10", 2, 5, 2), kv("ab", "4", 6, 6, 1)]
    );
    assert_eq!(d.header.unwrap().revision, 10);
    // The past is still readable.
    let r = get(
        &mut c,
        "",
        GetOptions::new().with_all_keys().with_revision(9),
    )
    .await;
    assert_eq!(kvs(&r), ["a=10", "ab=4", "b=2"]);
    let r = get(&mut c, "", GetOptions::new().with_all_keys()).await;
    assert_eq!(kvs(&r), ["b=2"]);

    // Re-creating a deleted key starts a new generation.
    c.put("a", "new", None).await.unwrap();
    let r = get(&mut c, "a", GetOptions::new()).await;
    assert_eq!(r.kvs, vec![kv("a", "new", 11, 11, 1)]);

    // Prefix and from-key deletes.
    c.put("p/1", "x", None).await.unwrap();
    c.put("p/2", "y", None).await.unwrap();
    let r = c
        .delete("p/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!((r.deleted(), rev(r.header())), (2, 14));
    let r = c
        .delete("b", Some(DeleteOptions::new().with_from_key()))
        .await
        .unwrap();
    assert_eq!((r.deleted(), rev(r.header())), (1, 15));
    // All keys.
    let r = c
        .delete(
            "",
            Some(DeleteOptions::new().with_all_keys().with_prev_key()),
        )
        .await
        .unwrap();
    let d: DeleteRangeResponse = convert(&r.0);
    assert_eq!(d.prev_kvs, vec![kv("a", "new", 11, 11, 1)]);
    assert_eq!(d.header.unwrap().revision, 16);
    let r = get(&mut c, "", GetOptions::new().with_all_keys()).await;
    assert_eq!((r.count, r.header.unwrap().revision), (0, 16));

    assert_err(c.delete("", None).await, Code::InvalidArgument, EMPTY_KEY);
}

/// Each compare target against each relation, on an existing key, a missing key, and ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares() {
    let server = Server::start(Kind::Hearth).await;
    let mut c = server.client().await;
    populate(&mut c).await;
    // a: create 2, mod 5, version 2, value "10", lease 0.
    let ops = [
        CompareOp::Equal,
        CompareOp::Greater,
        CompareOp::Less,
        CompareOp::NotEqual,
    ];
    let holds = |op: CompareOp, actual: i64, target: i64| match op {
        CompareOp::Equal => actual == target,
        CompareOp::Greater => actual > target,
        CompareOp::Less => actual < target,
        CompareOp::NotEqual => actual != target,
    };
    let mut checked = 0;
    for op in ops {
        for delta in [-1i64, 0, 1] {
            let cases = [
                (Compare::version("a", op, 2 + delta), 2, 2 + delta),
                (Compare::create_revision("a", op, 2 + delta), 2, 2 + delta),
                (Compare::mod_revision("a", op, 5 + delta), 5, 5 + delta),
                (Compare::lease("a", op, delta), 0, delta),
                // Missing keys compare as version/create/mod/lease 0.
                (Compare::version("zz", op, delta), 0, delta),
                (Compare::create_revision("zz", op, delta), 0, delta),
                (Compare::mod_revision("zz", op, delta), 0, delta),
                (Compare::lease("zz", op, delta), 0, delta),
            ];
            for (cmp, actual, target) in cases {
                let expect = holds(op, actual, target);
                let txn = Txn::new()
                    .when([cmp.clone()])
                    .and_then([TxnOp::get("a", None)])
                    .or_else([TxnOp::get("b", None)]);
                let r = c.txn(txn).await.unwrap();
                assert_eq!(r.succeeded(), expect, "{cmp:?}");
                let resp: TxnResponse = convert(&r.0);
                assert_eq!(resp.header.as_ref().unwrap().revision, 7);
                let Some(Response::ResponseRange(g)) = &resp.responses[0].response else {
                    panic!("expected a range response: {resp:?}");
                };
                assert_eq!(keys(g), [if expect { "a" } else { "b" }], "{cmp:?}");
                checked += 1;
            }
        }
        // Values compare as bytes.
        for (target, actual_cmp) in [("10", 0), ("1", 1), ("100", -1), ("9", -1), ("", 1)] {
            let expect = match op {
                CompareOp::Equal => actual_cmp == 0,
                CompareOp::Greater => actual_cmp > 0,
                CompareOp::Less => actual_cmp < 0,
                CompareOp::NotEqual => actual_cmp != 0,
            };
            let cmp = Compare::value("a", op, target);
            let r = c.txn(Txn::new().when([cmp.clone()])).await.unwrap();
            assert_eq!(r.succeeded(), expect, "{cmp:?}");
            // A value compare on a missing key always fails, whatever the relation.
            let cmp = Compare::value("zz", op, target);
            let r = c.txn(Txn::new().when([cmp.clone()])).await.unwrap();
            assert!(!r.succeeded(), "{cmp:?}");
            checked += 2;
        }
    }
    assert_eq!(checked, 4 * 3 * 8 + 4 * 5 * 2);

    // Range compares hold only if they hold for every key in the range.
    let t = |cmp: Compare| Txn::new().when([cmp]);
    for (cmp, expect) in [
        // a(ver 2), ab(ver 1)
        (
            Compare::version("a", CompareOp::Greater, 0).with_prefix(),
            true,
        ),
        (
            Compare::version("a", CompareOp::Equal, 1).with_prefix(),
            false,
        ),
        (
            Compare::version("ab", CompareOp::Equal, 1).with_range("b"),
            true,
        ),
        (
            Compare::mod_revision("a", CompareOp::Less, 8).with_range("c"),
            true,
        ),
        (
            Compare::mod_revision("a", CompareOp::Less, 7).with_range("c"),
            false,
        ),
        (
            Compare::create_revision("b", CompareOp::Greater, 2).with_prefix(),
            true,
        ),
        (
            Compare::value("b", CompareOp::NotEqual, "zz").with_prefix(),
            true,
        ),
        (
            Compare::value("b", CompareOp::Equal, "2").with_prefix(),
            false,
        ),
        // From-key and all-keys ranges.
        (
            Compare::value("b", CompareOp::Less, "6").with_range(vec![0u8]),
            true,
        ),
        (
            Compare::lease("a", CompareOp::Equal, 0).with_range(vec![0u8]),
            true,
        ),
        // An empty range compares like a missing key.
        (
            Compare::version("x", CompareOp::Equal, 0).with_prefix(),
            true,
        ),
        (
            Compare::create_revision("x", CompareOp::Equal, 0).with_range("y"),
            true,
        ),
        (
            Compare::value("x", CompareOp::NotEqual, "q").with_prefix(),
            false,
        ),
    ] {
        let r = c.txn(t(cmp.clone())).await.unwrap();
        assert_eq!(r.succeeded(), expect, "{cmp:?}");
    }

    // Several compares: all must hold.
    let r = c
        .txn(Txn::new().when([
            Compare::version("a", CompareOp::Equal, 2),
            Compare::value("b", CompareOp::Equal, "2"),
        ]))
        .await
        .unwrap();
    assert!(r.succeeded());
    let r = c
        .txn(Txn::new().when([
            Compare::version("a", CompareOp::Equal, 2),
            Compare::value("b", CompareOp::Equal, "3"),
        ]))
        .await
        .unwrap();
    assert!(!r.succeeded());
    // No compares: success.
    let r = c.txn(Txn::new()).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(rev(r.header()), 7);
    // A compare with an empty key is an error.
    let mut raw = server.raw().await;
    let e = raw
        .txn(TxnRequest {
            compare: vec![api::etcdserverpb::Compare::default()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e, RpcError::new(Code::InvalidArgument, EMPTY_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_ops_and_nesting() {
    let server = Server::start(Kind::Hearth).await;
    let mut c = server.client().await;
    populate(&mut c).await;

    // All writes of a txn share one revision; reads inside see earlier writes of the txn.
    let r = c
        .txn(
            Txn::new()
                .when([Compare::value("a", CompareOp::Equal, "10")])
                .and_then([
                    TxnOp::put("n1", "x", None),
                    TxnOp::put("a", "11", Some(PutOptions::new().with_prev_key())),
                    TxnOp::get("", Some(GetOptions::new().with_all_keys().with_keys_only())),
                    TxnOp::delete(
                        "b",
                        Some(DeleteOptions::new().with_prefix().with_prev_key()),
                    ),
                    TxnOp::get("b", Some(GetOptions::new().with_prefix().with_count_only())),
                ])
                .or_else([TxnOp::put("never", "x", None)]),
        )
        .await
        .unwrap();
    assert!(r.succeeded());
    let t: TxnResponse = convert(&r.0);
    assert_eq!(t.header.as_ref().unwrap().revision, 8);
    let resp: Vec<_> = t
        .responses
        .iter()
        .map(|r| r.response.clone().unwrap())
        .collect();
    let Response::ResponsePut(p0) = &resp[0] else {
        panic!("{t:?}")
    };
    assert_eq!(p0.header.as_ref().unwrap().revision, 8);
    let Response::ResponsePut(p1) = &resp[1] else {
        panic!("{t:?}")
    };
    assert_eq!(p1.prev_kv, Some(kv("a", "10", 2, 5, 2)));
    let Response::ResponseRange(g) = &resp[2] else {
        panic!("{t:?}")
    };
    assert_eq!(
        g.kvs,
        vec![
            kv("a", "", 2, 8, 3),
            kv("ab", "", 6, 6, 1),
            kv("b", "", 3, 3, 1),
            kv("b/x", "", 7, 7, 1),
            kv("c", "", 4, 4, 1),
            kv("n1", "", 8, 8, 1),
        ]
    );
    assert_eq!(g.header.as_ref().unwrap().revision, 8);
    let Response::ResponseDeleteRange(d) = &resp[3] else {
        panic!("{t:?}")
    };
    assert_eq!(d.deleted, 2);
    assert_eq!(
        keys(&RangeResponse {
            kvs: d.prev_kvs.clone(),
            ..Default::default()
        }),
        ["b", "b/x"]
    );
    let Response::ResponseRange(g) = &resp[4] else {
        panic!("{t:?}")
    };
    assert_eq!(g.count, 0);
    // Inner headers carry the revision.
    for r in &resp {
        let h = match r {
            Response::ResponseRange(x) => &x.header,
            Response::ResponsePut(x) => &x.header,
            Response::ResponseDeleteRange(x) => &x.header,
            Response::ResponseTxn(x) => &x.header,
        };
        assert_eq!(h.as_ref().map(|h| h.revision), Some(8), "{t:?}");
    }
    // After the txn.
    let g = get(&mut c, "", GetOptions::new().with_all_keys()).await;
    assert_eq!(kvs(&g), ["a=11", "ab=4", "c=3", "n1=x"]);
    assert_eq!(g.header.unwrap().revision, 8);

    // The failure branch, and a read-only txn does not create a revision.
    let r = c
        .txn(
            Txn::new()
                .when([Compare::value("a", CompareOp::Equal, "10")])
                .and_then([TxnOp::put("never", "x", None)])
                .or_else([TxnOp::get("a", None), TxnOp::delete("zz", None)]),
        )
        .await
        .unwrap();
    assert!(!r.succeeded());
    assert_eq!(rev(r.header()), 8);
    match &r.op_responses()[..] {
        [TxnOpResponse::Get(g), TxnOpResponse::Delete(d)] => {
            assert_eq!(kvs(&range(g)), ["a=11"]);
            assert_eq!(d.deleted(), 0);
        }
        other => panic!("{other:?}"),
    }

    // Nested txns: a txn op runs its own compare and branch; its response is a txn response.
    let inner_then = Txn::new()
        .when([Compare::value("c", CompareOp::Equal, "3")])
        .and_then([TxnOp::put("in", "then", None), TxnOp::get("c", None)])
        .or_else([TxnOp::put("in", "else", None)]);
    let inner_else = Txn::new()
        .when([Compare::value("c", CompareOp::Equal, "nope")])
        .and_then([TxnOp::put("in2", "then", None)])
        .or_else([TxnOp::put("in2", "else", None)]);
    let r = c
        .txn(Txn::new().and_then([
            TxnOp::put("outer", "1", None),
            TxnOp::txn(inner_then),
            TxnOp::txn(Txn::new().and_then([TxnOp::txn(inner_else)])),
        ]))
        .await
        .unwrap();
    assert!(r.succeeded());
    assert_eq!(rev(r.header()), 9);
    let t: TxnResponse = convert(&r.0);
    let Some(Response::ResponseTxn(i1)) = &t.responses[1].response else {
        panic!("{t:?}")
    };
    assert!(i1.succeeded);
    assert_eq!(i1.responses.len(), 2);
    let Some(Response::ResponseTxn(i2)) = &t.responses[2].response else {
        panic!("{t:?}")
    };
    let Some(Response::ResponseTxn(i3)) = &i2.responses[0].response else {
        panic!("{t:?}")
    };
    assert!(!i3.succeeded);
    let g = get(&mut c, "", GetOptions::new().with_all_keys()).await;
    assert_eq!(
        kvs(&g),
        ["a=11", "ab=4", "c=3", "in=then", "in2=else", "n1=x", "outer=1"]
    );
    assert!(g
        .kvs
        .iter()
        .filter(|kv| kv.key != b"a" && kv.key != b"ab" && kv.key != b"c" && kv.key != b"n1")
        .all(|kv| kv.mod_revision == 9));

    // Every compare in the tree is evaluated before any op runs: a nested compare does not
    // see the writes of earlier ops of the same txn.
    let r = c
        .txn(
            Txn::new().and_then([
                TxnOp::put("seen", "yes", None),
                TxnOp::txn(
                    Txn::new()
                        .when([Compare::value("seen", CompareOp::Equal, "yes")])
                        .and_then([TxnOp::put("saw", "then", None)])
                        .or_else([TxnOp::put("saw", "else", None)]),
                ),
            ]),
        )
        .await
        .unwrap();
    assert!(r.succeeded());
    let g = get(&mut c, "saw", GetOptions::new()).await;
    assert_eq!(kvs(&g), ["saw=else"]);
    // ... but reads in nested txns do see earlier writes.
    let r = c
        .txn(Txn::new().and_then([
            TxnOp::put("seen", "again", None),
            TxnOp::txn(Txn::new().and_then([TxnOp::get("seen", None)])),
        ]))
        .await
        .unwrap();
    let t: TxnResponse = convert(&r.0);
    let Some(Response::ResponseTxn(i)) = &t.responses[1].response else {
        panic!("{t:?}")
    };
    let Some(Response::ResponseRange(g)) = &i.responses[0].response else {
        panic!("{t:?}")
    };
    assert_eq!(kvs(g), ["seen=again"]);
    assert_eq!(g.header.as_ref().unwrap().revision, 11);

    // Errors inside a txn abort it whole: a range at a future revision.
    let e = c
        .txn(Txn::new().and_then([
            TxnOp::put("aborted", "x", None),
            TxnOp::get("a", Some(GetOptions::new().with_revision(100))),
        ]))
        .await;
    assert_err(e, Code::OutOfRange, FUTURE_REV);
    let e = c
        .txn(Txn::new().and_then([
            TxnOp::put("aborted", "x", None),
            TxnOp::put("missing", "", Some(PutOptions::new().with_ignore_value())),
        ]))
        .await;
    assert_err(e, Code::InvalidArgument, KEY_NOT_FOUND);
    let g = get(&mut c, "aborted", GetOptions::new()).await;
    assert_eq!((g.count, g.header.unwrap().revision), (0, 11));

    // An op with no request in it.
    let mut raw = server.raw().await;
    let e = raw
        .txn(TxnRequest {
            success: vec![RequestOp { request: None }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e, RpcError::new(Code::InvalidArgument, KEY_NOT_FOUND));
    // Empty keys inside a txn.
    for op in [
        TxnOp::get("", None),
        TxnOp::put("", "x", None),
        TxnOp::delete("", None),
    ] {
        assert_err(
            c.txn(Txn::new().and_then([op])).await,
            Code::InvalidArgument,
            EMPTY_KEY,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_limits_too_many_ops_and_duplicate_keys() {
    let server = Server::start(Kind::Hearth).await;
    let mut c = server.client().await;
    let puts = |n: usize, prefix: &str| -> Vec<TxnOp> {
        (0..n)
            .map(|i| TxnOp::put(format!("{prefix}{i:03}"), "v", None))
            .collect()
    };
    let gets =
        |n: usize| -> Vec<TxnOp> { (0..n).map(|i| TxnOp::get(format!("g{i}"), None)).collect() };
    let cmps = |n: usize| -> Vec<Compare> {
        (0..n)
            .map(|i| Compare::version(format!("c{i}"), CompareOp::Equal, 0))
            .collect()
    };

    // 128 ops per list is the limit (etcd's default --max-txn-ops).
    let r = c.txn(Txn::new().and_then(puts(128, "k"))).await.unwrap();
    assert_eq!(rev(r.header()), 2);
    assert_eq!(r.op_responses().len(), 128);
    assert_err(
        c.txn(Txn::new().and_then(puts(129, "k"))).await,
        Code::InvalidArgument,
        TOO_MANY_OPS,
    );
    assert_err(
        c.txn(Txn::new().and_then(gets(129))).await,
        Code::InvalidArgument,
        TOO_MANY_OPS,
    );
    assert_err(
        c.txn(Txn::new().or_else(gets(129))).await,
        Code::InvalidArgument,
        TOO_MANY_OPS,
    );
    assert_err(
        c.txn(Txn::new().when(cmps(129))).await,
        Code::InvalidArgument,
        TOO_MANY_OPS,
    );
    // The limit is per list, not the sum of the lists.
    let r = c
        .txn(
            Txn::new()
                .when(cmps(128))
                .and_then(gets(128))
                .or_else(gets(128)),
        )
        .await
        .unwrap();
    assert!(r.succeeded());
    // A nested txn may use what its parent left: 128 minus the parent's largest list.
    let nested = |outer: usize, inner: usize| {
        let mut ops = gets(outer - 1);
        ops.push(TxnOp::txn(Txn::new().and_then(gets(inner))));
        Txn::new().and_then(ops)
    };
    c.txn(nested(100, 28))
        .await
        .expect("100 + 28 is within the limit");
    assert_err(
        c.txn(nested(100, 29)).await,
        Code::InvalidArgument,
        TOO_MANY_OPS,
    );
    assert_err(
        c.txn(nested(128, 1)).await,
        Code::InvalidArgument,
        TOO_MANY_OPS,
    );
    let g = get(
        &mut c,
        "k",
        GetOptions::new().with_prefix().with_count_only(),
    )
    .await;
    assert_eq!((g.count, g.header.unwrap().revision), (128, 2));

    // Duplicate keys: a key put twice in one branch, or put and deleted.
    let dup = |ops: Vec<TxnOp>| Txn::new().and_then(ops);
    for (what, txn) in [
        (
            "put twice",
            dup(vec![TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]),
        ),
        (
            "put and delete",
            dup(vec![TxnOp::put("d", "1", None), TxnOp::delete("d", None)]),
        ),
        (
            "delete then put",
            dup(vec![TxnOp::delete("d", None), TxnOp::put("d", "1", None)]),
        ),
        (
            "put in a deleted range",
            dup(vec![
                TxnOp::put("d", "1", None),
                TxnOp::delete("c", Some(DeleteOptions::new().with_range("e"))),
            ]),
        ),
        (
            "put in a deleted prefix",
            dup(vec![
                TxnOp::put("dd/1", "1", None),
                TxnOp::delete("dd/", Some(DeleteOptions::new().with_prefix())),
            ]),
        ),
        (
            "put in an outer and a nested txn",
            dup(vec![
                TxnOp::put("d", "1", None),
                TxnOp::txn(Txn::new().and_then([TxnOp::put("d", "2", None)])),
            ]),
        ),
        (
            "nested put in an outer deleted range",
            dup(vec![
                TxnOp::delete("c", Some(DeleteOptions::new().with_range("e"))),
                TxnOp::txn(Txn::new().or_else([TxnOp::put("d", "2", None)])),
            ]),
        ),
        (
            "put in two nested txns",
            dup(vec![
                TxnOp::txn(Txn::new().and_then([TxnOp::put("d", "1", None)])),
                TxnOp::txn(Txn::new().or_else([TxnOp::put("d", "2", None)])),
            ]),
        ),
        (
            "outer put in a nested deleted range",
            dup(vec![
                TxnOp::txn(Txn::new().and_then([TxnOp::delete("d", None)])),
                TxnOp::put("d", "2", None),
            ]),
        ),
    ] {
        assert_err(c.txn(txn).await, Code::InvalidArgument, DUPLICATE_KEY);
        let _ = what;
    }
    // Not duplicates: the same key in the success and the failure branch, in the then and
    // else branches of one nested txn, deletes that overlap each other, reads of put keys.
    for txn in [
        Txn::new()
            .and_then([TxnOp::put("d", "1", None)])
            .or_else([TxnOp::put("d", "2", None)]),
        dup(vec![TxnOp::txn(
            Txn::new()
                .and_then([TxnOp::put("d", "1", None)])
                .or_else([TxnOp::put("d", "2", None)]),
        )]),
        dup(vec![
            TxnOp::delete("d", None),
            TxnOp::delete("c", Some(DeleteOptions::new().with_range("e"))),
        ]),
        dup(vec![
            TxnOp::put("d", "1", None),
            TxnOp::get("d", None),
            TxnOp::put("e", "1", None),
        ]),
        // etcd 3.4 quirk: the duplicate check takes a range_end of "\0" literally (an empty
        // interval), so a put under a from-key or all-keys delete is not a duplicate.
        dup(vec![
            TxnOp::delete("a", Some(DeleteOptions::new().with_from_key())),
            TxnOp::put("d", "1", None),
        ]),
        dup(vec![
            TxnOp::delete("", Some(DeleteOptions::new().with_all_keys())),
            TxnOp::put("d", "2", None),
        ]),
    ] {
        c.txn(txn).await.expect("not a duplicate");
    }
    // The last one deleted everything, then put d=2.
    let g = get(&mut c, "", GetOptions::new().with_all_keys()).await;
    assert_eq!(kvs(&g), ["d=2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction() {
    let server = Server::start(Kind::Hearth).await;
    let mut c = server.client().await;
    populate(&mut c).await;

    // Compacting the future is an error; so is compacting what is already compacted.
    assert_err(c.compact(8, None).await, Code::OutOfRange, FUTURE_REV);
    let r = c.compact(4, None).await.unwrap();
    assert_eq!(rev(r.header()), 7, "compaction does not create a revision");
    assert_err(c.compact(4, None).await, Code::OutOfRange, COMPACTED);
    assert_err(c.compact(3, None).await, Code::OutOfRange, COMPACTED);
    // Reads below the compacted revision fail; at it and above they work.
    assert_err(
        c.get("a", Some(GetOptions::new().with_revision(3))).await,
        Code::OutOfRange,
        COMPACTED,
    );
    let r = get(
        &mut c,
        "",
        GetOptions::new().with_all_keys().with_revision(4),
    )
    .await;
    assert_eq!(kvs(&r), ["a=1", "b=2", "c=3"]);
    assert_eq!(r.kvs[0], kv("a", "1", 2, 2, 1));
    // Inside a txn, too.
    assert_err(
        c.txn(Txn::new().and_then([TxnOp::get("a", Some(GetOptions::new().with_revision(2)))]))
            .await,
        Code::OutOfRange,
        COMPACTED,
    );
    // Compaction keeps the latest version of each key and deletes nothing current.
    let r = get(&mut c, "", GetOptions::new().with_all_keys()).await;
    assert_eq!(kvs(&r), ["a=10", "ab=4", "b=2", "b/x=5", "c=3"]);

    // Physical compaction: answered once the compaction is done; same semantics.
    c.delete("c", None).await.unwrap();
    let r = c
        .compact(8, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    assert_eq!(rev(r.header()), 8);
    assert_err(
        c.get("a", Some(GetOptions::new().with_revision(7))).await,
        Code::OutOfRange,
        COMPACTED,
    );
    let r = get(
        &mut c,
        "",
        GetOptions::new().with_all_keys().with_revision(8),
    )
    .await;
    assert_eq!(kvs(&r), ["a=10", "ab=4", "b=2", "b/x=5"]);
    // Compacting up to the current revision is allowed.
    let r = c
        .compact(8, Some(CompactionOptions::new().with_physical()))
        .await;
    assert_err(r, Code::OutOfRange, COMPACTED);
    c.put("z", "1", None).await.unwrap();
    c.compact(9, None)
        .await
        .expect("compact at the current revision");
    let r = get(&mut c, "", GetOptions::new().with_all_keys()).await;
    assert_eq!(r.header.unwrap().revision, 9);
    assert_eq!(r.kvs.len(), 5);
    // Writes after compaction go on from the same revision.
    let r = c.put("after", "1", None).await.unwrap();
    assert_eq!(rev(r.header()), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_size_limits() {
    let server = Server::start(Kind::Hearth).await;
    let mut c = server.client().await;
    const MIB: usize = 1024 * 1024;

    // 1 MiB is fine, and reads back, also two at once (a 2 MiB response).
    let v1 = vec![b'x'; MIB];
    c.put("big1", v1.clone(), None).await.unwrap();
    c.put("big2", v1.clone(), None).await.unwrap();
    let r = get(&mut c, "big", GetOptions::new().with_prefix()).await;
    assert_eq!(r.kvs.len(), 2);
    assert!(r.kvs.iter().all(|kv| kv.value == v1));

    // Over --max-request-bytes (1.5 MiB) but under the gRPC frame limit (2 MiB): etcd's own
    // error.
    let v = vec![b'y'; MIB + MIB / 2 + 100 * 1024];
    assert_err(
        c.put("too-big", v.clone(), None).await,
        Code::InvalidArgument,
        TOO_LARGE,
    );
    assert_err(
        c.txn(Txn::new().and_then([TxnOp::put("too-big", v, None)]))
            .await,
        Code::InvalidArgument,
        TOO_LARGE,
    );
    // Two 800 KiB puts in one txn: too large together.
    let v800 = vec![b'w'; 800 * 1024];
    assert_err(
        c.txn(Txn::new().and_then([
            TxnOp::put("t1", v800.clone(), None),
            TxnOp::put("t2", v800, None),
        ]))
        .await,
        Code::InvalidArgument,
        TOO_LARGE,
    );
    // Over the gRPC receive limit (1.5 MiB + 512 KiB = 2 MiB): rejected by the transport with
    // ResourceExhausted, naming the message size and the limit.
    let v = vec![b'z'; 2 * MIB + 1024];
    let size = prost::Message::encoded_len(&PutRequest {
        key: b"too-big".to_vec(),
        value: v.clone(),
        ..Default::default()
    });
    assert_err(
        c.put("too-big", v, None).await,
        Code::ResourceExhausted,
        &format!("grpc: received message larger than max ({size} vs. 2097152)"),
    );
    // The same limit on a stream: a watch created with a key over it ends the stream with the
    // same status. etcd sends a stream's response headers with its first response, so its client
    // sees the status when the stream opens; Hearth sends them at once, so its client sees the
    // status at the first message.
    let key = vec![b'k'; 2 * MIB + 1024];
    let size = prost::Message::encoded_len(&api::etcdserverpb::WatchRequest {
        request_union: Some(
            api::etcdserverpb::watch_request::RequestUnion::CreateRequest(
                api::etcdserverpb::WatchCreateRequest {
                    key: key.clone(),
                    ..Default::default()
                },
            ),
        ),
    });
    let received = match c.watch(key, None).await {
        Ok(mut w) => w.message().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert_err(
        received,
        Code::ResourceExhausted,
        &format!("grpc: received message larger than max ({size} vs. 2097152)"),
    );
    // Nothing of it was written, and the server still serves.
    let r = get(
        &mut c,
        "",
        GetOptions::new().with_all_keys().with_keys_only(),
    )
    .await;
    assert_eq!(keys(&r), ["big1", "big2"]);
    assert_eq!(r.header.unwrap().revision, 3);
}

/// Compaction bounds on a fresh store (current revision 1, nothing compacted yet): a revision
/// at or below the compacted one is "compacted" (checked first; the initial compacted
/// revision behaves as -1), one above the current is "future".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_bounds_on_a_fresh_store() {
    let server = Server::start(Kind::Hearth).await;
    let mut c = server.client().await;
    assert_err(c.compact(-1, None).await, Code::OutOfRange, COMPACTED);
    assert_err(c.compact(2, None).await, Code::OutOfRange, FUTURE_REV);
    let r = c
        .compact(0, None)
        .await
        .expect("compact 0 on a fresh store");
    assert_eq!(rev(r.header()), 1);
    assert_err(c.compact(0, None).await, Code::OutOfRange, COMPACTED);
    c.compact(1, None)
        .await
        .expect("compact at the current revision");
    assert_err(c.compact(1, None).await, Code::OutOfRange, COMPACTED);
    // Reads at the compacted revision itself work; below it they fail; above, future.
    let r = get(&mut c, "a", GetOptions::new().with_revision(1)).await;
    assert_eq!((r.count, r.header.unwrap().revision), (0, 1));
    assert_err(
        c.get("a", Some(GetOptions::new().with_revision(2))).await,
        Code::OutOfRange,
        FUTURE_REV,
    );
    c.put("a", "1", None).await.unwrap();
    c.compact(2, None).await.unwrap();
    assert_err(
        c.get("a", Some(GetOptions::new().with_revision(1))).await,
        Code::OutOfRange,
        COMPACTED,
    );
    // A future revision is still "future" after compactions; a negative one means current.
    assert_err(
        c.get("a", Some(GetOptions::new().with_revision(3))).await,
        Code::OutOfRange,
        FUTURE_REV,
    );
    let r = get(&mut c, "a", GetOptions::new().with_revision(-5)).await;
    assert_eq!(kvs(&r), ["a=1"]);
}
