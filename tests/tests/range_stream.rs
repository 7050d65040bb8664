//! `KV/RangeStream` (etcd 3.7) against the real server: merged, the parts are the unary Range at
//! the same revision; the range comes in several parts; the request checks, revision errors and
//! permission checks are etcd's; and a reader that stops reading after the first part sees a
//! compaction that passes the stream's revision, because the server reads ahead by a bounded
//! amount only.
//!
//! The server runs with `--max-request-bytes=65536`, so parts aim at 64 KiB and a few hundred
//! kilobytes of values make many of them.

use api::authpb::{permission::Type as PermType, Permission, UserAddOptions};
use api::etcdserverpb::auth_client::AuthClient;
use api::etcdserverpb::kv_client::KvClient;
use api::etcdserverpb::range_request::{SortOrder, SortTarget};
use api::etcdserverpb::{
    AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest, AuthUserAddRequest,
    AuthUserGrantRoleRequest, AuthenticateRequest, CompactionRequest, PutRequest, RangeRequest,
};
use hearth_tests::rpc::{RawKv, RpcError, StreamAnswer};
use hearth_tests::{Kind, Options, Server};
use tonic::transport::Channel;
use tonic::Code;

const PART_BYTES: &str = "--max-request-bytes=65536";

async fn start() -> (Server, RawKv) {
    let s = Server::start_with(Kind::Hearth, Options::with_args(&[PART_BYTES])).await;
    let kv = RawKv::connect(&s.endpoint()).await.unwrap();
    (s, kv)
}

async fn put(kv: &mut RawKv, key: &str, value: Vec<u8>) -> i64 {
    kv.put(PutRequest {
        key: key.into(),
        value,
        ..Default::default()
    })
    .await
    .unwrap()
    .header
    .unwrap()
    .revision
}

/// `n` keys `prefix000`.. with values of `size` bytes.
async fn fill(kv: &mut RawKv, prefix: &str, n: usize, size: usize, byte: u8) -> i64 {
    let mut rev = 0;
    for i in 0..n {
        rev = put(kv, &format!("{prefix}{i:03}"), vec![byte; size]).await;
    }
    rev
}

fn prefix(p: &str) -> RangeRequest {
    let mut end = p.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    RangeRequest {
        key: p.into(),
        range_end: end,
        ..Default::default()
    }
}

/// Only the last part carries the header, `more` and `count`.
fn assert_shape(a: &StreamAnswer, what: &str) {
    let (last, rest) = a
        .parts
        .split_last()
        .unwrap_or_else(|| panic!("{what}: no part"));
    assert!(
        last.header.is_some(),
        "{what}: the last part has the header"
    );
    for p in rest {
        assert_eq!(p.header, None, "{what}");
        assert_eq!((p.more, p.count), (false, 0), "{what}");
    }
}

#[tokio::test]
async fn parts_merge_into_the_range_at_the_same_revision() {
    let (_s, mut kv) = start().await;
    let old = fill(&mut kv, "r/", 150, 4000, b'a').await;
    // Later writes change the first 40 keys and add some, so the old revision differs.
    fill(&mut kv, "r/", 40, 3000, b'b').await;
    fill(&mut kv, "r/x", 10, 100, b'c').await;

    let mut cases = Vec::new();
    for limit in [0, 1, 25, 160, 1000] {
        for revision in [0, old] {
            for keys_only in [false, true] {
                cases.push(RangeRequest {
                    limit,
                    revision,
                    keys_only,
                    ..prefix("r/")
                });
            }
        }
    }
    cases.push(RangeRequest {
        serializable: true,
        sort_target: SortTarget::Key as i32,
        sort_order: SortOrder::Ascend as i32,
        ..prefix("r/")
    });
    cases.push(RangeRequest {
        key: b"r/007".to_vec(),
        ..Default::default()
    });
    cases.push(prefix("nothing/"));
    for req in cases {
        let what = format!("{req:?}");
        let got = kv.range_stream(req.clone(), None).await;
        assert_eq!(got.error, None, "{what}");
        assert_shape(&got, &what);
        // The unary Range at the same revision (nothing is written meanwhile).
        let want = kv.range(req.clone()).await.unwrap();
        assert_eq!(got.merged(), want, "{what}");
        if req.limit == 0 && req.range_end == b"r0" && !req.keys_only {
            assert!(
                got.parts.len() >= 5,
                "{what}: {} parts for 600 kB",
                got.parts.len()
            );
        }
    }

    // count_only: one part, as the Range.
    for limit in [0, 3] {
        let req = RangeRequest {
            count_only: true,
            limit,
            ..prefix("r/")
        };
        let got = kv.range_stream(req.clone(), None).await;
        assert_eq!(got.error, None);
        assert_eq!(got.parts.len(), 1);
        assert_eq!(got.merged(), kv.range(req).await.unwrap());
        assert_eq!(got.merged().count, 160);
    }
}

#[tokio::test]
async fn requests_and_revisions_are_checked_as_etcd_does() {
    let (_s, mut kv) = start().await;
    let rev = fill(&mut kv, "e/", 5, 10, b'v').await;
    let err = |code, msg: &str| Some(RpcError::new(code, msg));
    let cases = [
        (
            RangeRequest::default(),
            err(Code::InvalidArgument, "etcdserver: key is not provided"),
        ),
        (
            RangeRequest {
                sort_order: SortOrder::Descend as i32,
                ..prefix("e/")
            },
            err(
                Code::Unimplemented,
                "RangeStream does not support custom sort orders",
            ),
        ),
        (
            RangeRequest {
                sort_target: SortTarget::Mod as i32,
                sort_order: SortOrder::Ascend as i32,
                ..prefix("e/")
            },
            err(
                Code::Unimplemented,
                "RangeStream does not support custom sort orders",
            ),
        ),
        (
            RangeRequest {
                max_mod_revision: 3,
                ..prefix("e/")
            },
            err(
                Code::Unimplemented,
                "RangeStream does not support revision filters",
            ),
        ),
        (
            RangeRequest {
                revision: rev + 10,
                ..prefix("e/")
            },
            err(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
        ),
    ];
    for (req, want) in cases {
        let got = kv.range_stream(req.clone(), None).await;
        assert_eq!(got.error, want, "{req:?}");
        assert!(got.parts.is_empty(), "{req:?}");
    }

    kv.compact(CompactionRequest {
        revision: rev,
        physical: true,
    })
    .await
    .unwrap();
    let got = kv
        .range_stream(
            RangeRequest {
                revision: rev - 1,
                ..prefix("e/")
            },
            None,
        )
        .await;
    let compacted = err(
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_eq!(got.error, compacted);
    assert!(got.parts.is_empty());
    // At the compaction's own revision the range is still there.
    let at = RangeRequest {
        revision: rev,
        ..prefix("e/")
    };
    let got = kv.range_stream(at.clone(), None).await;
    assert_eq!(got.error, None);
    assert_eq!(got.merged(), kv.range(at).await.unwrap());
}

#[tokio::test]
async fn a_slow_reader_sees_a_compaction_past_the_streams_revision() {
    let (_s, mut kv) = start().await;
    // 8 MB: more than the server reads ahead plus what HTTP/2 flow control lets through to a
    // client that reads nothing.
    fill(&mut kv, "big/", 140, 60_000, b'z').await;
    let mut stream = kv
        .range_stream_open(prefix("big/"), None)
        .await
        .expect("stream opens");
    let first = stream.message().await.unwrap().unwrap();
    let first = first.range_response.unwrap();
    assert!(!first.kvs.is_empty());
    assert_eq!(first.header, None, "more parts follow");
    // A write, then a compaction at it: past the revision the stream reads at.
    let rev = put(&mut kv, "other", b"v".to_vec()).await;
    kv.compact(CompactionRequest {
        revision: rev,
        physical: false,
    })
    .await
    .unwrap();
    let mut keys = first.kvs.len();
    let err = loop {
        match stream.message().await {
            Ok(Some(part)) => {
                let part = part.range_response.unwrap();
                assert_eq!(part.header, None, "the stream cannot finish");
                keys += part.kvs.len();
            }
            Ok(None) => panic!("the stream ended without an error after {keys} keys"),
            Err(e) => break RpcError::from(e),
        }
    };
    assert!(keys < 140, "{keys} keys before the error");
    assert_eq!(
        err,
        RpcError::new(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted"
        )
    );
}

async fn auth_client(s: &Server) -> AuthClient<Channel> {
    let ch = Channel::from_shared(s.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    AuthClient::new(ch)
}

/// A unary Range with the `token` metadata when given.
async fn range_as(
    s: &Server,
    req: RangeRequest,
    token: Option<&str>,
) -> Result<api::etcdserverpb::RangeResponse, RpcError> {
    let ch = Channel::from_shared(s.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut req = tonic::Request::new(req);
    if let Some(t) = token {
        req.metadata_mut().insert("token", t.parse().unwrap());
    }
    KvClient::new(ch)
        .range(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(RpcError::from)
}

async fn add_user(auth: &mut AuthClient<Channel>, name: &str, role: Option<&str>) {
    auth.user_add(AuthUserAddRequest {
        name: name.into(),
        password: format!("{name}pw"),
        options: Some(UserAddOptions { no_password: false }),
        hashed_password: String::new(),
    })
    .await
    .unwrap();
    if let Some(role) = role {
        auth.user_grant_role(AuthUserGrantRoleRequest {
            user: name.into(),
            role: role.into(),
        })
        .await
        .unwrap();
    }
}

async fn login(auth: &mut AuthClient<Channel>, name: &str) -> String {
    auth.authenticate(AuthenticateRequest {
        name: name.into(),
        password: format!("{name}pw"),
    })
    .await
    .unwrap()
    .into_inner()
    .token
}

#[tokio::test]
async fn permissions_are_checked_as_for_range() {
    let s = Server::start_with(
        Kind::Hearth,
        Options::with_args(&[PART_BYTES, "--bcrypt-cost=4"]),
    )
    .await;
    let mut kv = RawKv::connect(&s.endpoint()).await.unwrap();
    fill(&mut kv, "a/", 30, 5000, b'a').await;
    fill(&mut kv, "b/", 3, 10, b'b').await;
    let mut auth = auth_client(&s).await;
    auth.role_add(AuthRoleAddRequest {
        name: "reader".into(),
    })
    .await
    .unwrap();
    auth.role_grant_permission(AuthRoleGrantPermissionRequest {
        name: "reader".into(),
        perm: Some(Permission {
            perm_type: PermType::Read as i32,
            key: b"a/".to_vec(),
            range_end: b"a0".to_vec(),
        }),
    })
    .await
    .unwrap();
    add_user(&mut auth, "root", Some("root")).await;
    add_user(&mut auth, "reader", Some("reader")).await;
    add_user(&mut auth, "nobody", None).await;
    auth.auth_enable(AuthEnableRequest {}).await.unwrap();
    let reader = login(&mut auth, "reader").await;
    let nobody = login(&mut auth, "nobody").await;

    let denied = Some(RpcError::new(
        Code::PermissionDenied,
        "etcdserver: permission denied",
    ));
    // Without a token, with a token of a user without the permission, and on a range the
    // reader may read only part of.
    for (req, token) in [
        (prefix("a/"), None),
        (prefix("a/"), Some(nobody.as_str())),
        (prefix("b/"), Some(reader.as_str())),
        (
            RangeRequest {
                key: b"a/".to_vec(),
                range_end: b"b0".to_vec(),
                ..Default::default()
            },
            Some(reader.as_str()),
        ),
    ] {
        let got = kv.range_stream(req.clone(), token).await;
        assert!(got.parts.is_empty(), "{req:?}");
        // The Range's refusal, whatever it is (without a token: the empty user's).
        let unary = range_as(&s, req.clone(), token).await.unwrap_err();
        assert_eq!(got.error.as_ref(), Some(&unary), "{req:?}");
        if token.is_some() {
            assert_eq!(got.error, denied, "{req:?}");
        }
    }
    let got = kv.range_stream(prefix("a/"), Some(&reader)).await;
    assert_eq!(got.error, None);
    assert_shape(&got, "reader");
    assert!(got.parts.len() > 1);
    assert_eq!(got.merged().kvs.len(), 30);
    assert_eq!(got.merged().count, 30);
}
