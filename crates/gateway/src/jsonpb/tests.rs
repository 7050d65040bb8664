//! The JSON mapping on etcd's real messages (Hearth's compiled protos). Expected outputs and error
//! texts are what Debian's etcd 3.4 gateway answered for the same messages and bodies, except where
//! a test says it follows from Go's rules (escaping, unknown enum values, nesting).

use api::etcdserverpb as pb;
use api::mvccpb;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

use super::{decode, encode, Schema};

fn pool() -> DescriptorPool {
    DescriptorPool::decode(api::FILE_DESCRIPTOR_SET).expect("descriptors")
}

fn desc(name: &str) -> MessageDescriptor {
    pool()
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name}"))
}

/// The JSON etcd's gateway writes for `msg` (sent over the wire first, as the gateway receives it).
fn to_json<M: Message>(name: &str, msg: &M) -> String {
    let pool = pool();
    let schema = Schema::new(&pool);
    let dynamic = DynamicMessage::decode(desc(name), msg.encode_to_vec().as_slice()).unwrap();
    let mut out = Vec::new();
    encode(&schema, &dynamic, &mut out);
    String::from_utf8(out).unwrap()
}

/// Decodes `json` as a request of type `M`, through the protobuf bytes the call would carry.
fn from_json<M: Message + Default>(name: &str, json: &str) -> Result<M, String> {
    let pool = pool();
    let schema = Schema::new(&pool);
    let m = decode(&schema, &desc(name), json.as_bytes())?;
    Ok(M::decode(m.encode_to_vec().as_slice()).unwrap())
}

fn header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: 324952591200643719,
        member_id: 3319814642761637952,
        revision,
        raft_term: 2,
    })
}

fn kv(key: &[u8], value: &[u8], create: i64, modr: i64, version: i64) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: key.to_vec(),
        create_revision: create,
        mod_revision: modr,
        version,
        value: value.to_vec(),
        lease: 0,
    }
}

#[test]
fn range_response_is_written_as_etcd_writes_it() {
    let resp = pb::RangeResponse {
        header: header(2),
        kvs: vec![kv(b"foo", b"bar", 2, 2, 1)],
        more: false,
        count: 1,
    };
    assert_eq!(
        to_json("etcdserverpb.RangeResponse", &resp),
        r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"2","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}"#
    );
}

#[test]
fn watch_events_leave_out_zero_values() {
    // The event type PUT (0) and watch id 0 are left out; DELETE is named.
    let resp = pb::WatchResponse {
        header: header(4),
        events: vec![mvccpb::Event {
            r#type: mvccpb::event::EventType::Delete as i32,
            kv: Some(mvccpb::KeyValue {
                key: b"foo".to_vec(),
                mod_revision: 4,
                ..Default::default()
            }),
            prev_kv: Some(kv(b"foo", b"baz", 2, 3, 2)),
        }],
        ..Default::default()
    };
    assert_eq!(
        to_json("etcdserverpb.WatchResponse", &resp),
        r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"4","raft_term":"2"},"events":[{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"4"},"prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmF6"}}]}"#
    );
    let progress = pb::WatchResponse {
        header: header(4),
        watch_id: -1,
        ..Default::default()
    };
    assert_eq!(
        to_json("etcdserverpb.WatchResponse", &progress),
        r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"4","raft_term":"2"},"watch_id":"-1"}"#
    );
}

#[test]
fn field_names_are_the_protos_own() {
    let status = pb::StatusResponse {
        header: header(2),
        version: "3.4.23".into(),
        db_size: 20480,
        leader: 3319814642761637952,
        raft_index: 5,
        raft_term: 2,
        raft_applied_index: 5,
        db_size_in_use: 16384,
        ..Default::default()
    };
    assert_eq!(
        to_json("etcdserverpb.StatusResponse", &status),
        r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"2","raft_term":"2"},"version":"3.4.23","dbSize":"20480","leader":"3319814642761637952","raftIndex":"5","raftTerm":"2","raftAppliedIndex":"5","dbSizeInUse":"16384"}"#
    );
    let members = pb::MemberListResponse {
        header: Some(pb::ResponseHeader {
            revision: 0,
            ..header(0).unwrap()
        }),
        members: vec![pb::Member {
            id: 3319814642761637952,
            name: "default".into(),
            peer_ur_ls: vec!["http://127.0.0.1:23800".into()],
            client_ur_ls: vec!["http://127.0.0.1:23790".into()],
            is_learner: false,
        }],
    };
    assert_eq!(
        to_json("etcdserverpb.MemberListResponse", &members),
        r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","raft_term":"2"},"members":[{"ID":"3319814642761637952","name":"default","peerURLs":["http://127.0.0.1:23800"],"clientURLs":["http://127.0.0.1:23790"]}]}"#
    );
}

#[test]
fn thirty_two_bit_integers_are_numbers_and_oneofs_are_named_by_member() {
    let hash = pb::HashResponse {
        header: header(2),
        hash: 2996158770,
    };
    assert_eq!(
        to_json("etcdserverpb.HashResponse", &hash),
        r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"2","raft_term":"2"},"hash":2996158770}"#
    );
    let txn = pb::TxnResponse {
        header: header(3),
        succeeded: true,
        responses: vec![pb::ResponseOp {
            response: Some(pb::response_op::Response::ResponsePut(pb::PutResponse {
                header: Some(pb::ResponseHeader {
                    revision: 3,
                    ..Default::default()
                }),
                prev_kv: None,
            })),
        }],
    };
    assert_eq!(
        to_json("etcdserverpb.TxnResponse", &txn),
        r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"3","raft_term":"2"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"3"}}}]}"#
    );
    // A present but empty message is written as `{}`.
    let empty = pb::DefragmentResponse {
        header: Some(pb::ResponseHeader::default()),
    };
    assert_eq!(
        to_json("etcdserverpb.DefragmentResponse", &empty),
        r#"{"header":{}}"#
    );
}

#[test]
fn strings_are_escaped_and_unknown_enums_are_numbers() {
    let resp = pb::WatchResponse {
        canceled: true,
        cancel_reason: "a<b> & \"c\"".into(),
        events: vec![mvccpb::Event {
            r#type: 7,
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(
        to_json("etcdserverpb.WatchResponse", &resp),
        r#"{"canceled":true,"cancel_reason":"a\u003cb\u003e \u0026 \"c\"","events":[{"type":7}]}"#
    );
}

#[test]
fn both_names_are_accepted_and_the_camel_case_one_wins() {
    let r: pb::RangeRequest = from_json(
        "etcdserverpb.RangeRequest",
        r#"{"key":"Zm9v","range_end":"Zm9w","keysOnly":true,"sort_order":"DESCEND","sortTarget":2,"limit":"5","min_mod_revision":3}"#,
    )
    .unwrap();
    assert_eq!(r.key, b"foo");
    assert_eq!(r.range_end, b"fop");
    assert!(r.keys_only);
    assert_eq!(r.sort_order, pb::range_request::SortOrder::Descend as i32);
    assert_eq!(r.sort_target, pb::range_request::SortTarget::Create as i32);
    assert_eq!(r.limit, 5);
    assert_eq!(r.min_mod_revision, 3);
    let r: pb::RangeRequest = from_json(
        "etcdserverpb.RangeRequest",
        r#"{"range_end":"YQ==","rangeEnd":"Yg==","limit":1,"limit":2}"#,
    )
    .unwrap();
    assert_eq!(r.range_end, b"b");
    assert_eq!(r.limit, 2, "the last of duplicate keys counts");
}

#[test]
fn nulls_and_unknown_fields_change_nothing() {
    let r: pb::PutRequest = from_json(
        "etcdserverpb.PutRequest",
        r#"{"key":"Zm9v","value":null,"lease":null,"prev_kv":null,"whatever":{"x":[1,2]}}"#,
    )
    .unwrap();
    assert_eq!(
        r,
        pb::PutRequest {
            key: b"foo".to_vec(),
            ..Default::default()
        }
    );
    let r: pb::RangeRequest = from_json("etcdserverpb.RangeRequest", "null").unwrap();
    assert_eq!(r, pb::RangeRequest::default());
}

#[test]
fn bytes_take_go_base64_or_an_array_of_bytes() {
    let r: pb::RangeRequest =
        from_json("etcdserverpb.RangeRequest", r#"{"key":[102,111,111]}"#).unwrap();
    assert_eq!(r.key, b"foo");
    let r: pb::RangeRequest =
        from_json("etcdserverpb.RangeRequest", r#"{"key":"Zm9v\n"}"#).unwrap();
    assert_eq!(r.key, b"foo");
    for (body, err) in [
        (r#"{"key":"Zm9v!"}"#, "illegal base64 data at input byte 4"),
        (r#"{"key":"Zm9vYg"}"#, "illegal base64 data at input byte 4"),
        (
            r#"{"key":"Zm9v-_8="}"#,
            "illegal base64 data at input byte 4",
        ),
        (
            r#"{"key":5}"#,
            "json: cannot unmarshal number into Go value of type []uint8",
        ),
    ] {
        assert_eq!(
            from_json::<pb::RangeRequest>("etcdserverpb.RangeRequest", body),
            Err(err.to_string()),
            "{body}"
        );
    }
}

#[test]
fn wrong_types_get_go_errors() {
    for (body, err) in [
        (
            r#"{"key":"Zm9v","limit":1.5}"#,
            "json: cannot unmarshal number 1.5 into Go value of type int64",
        ),
        (r#"{"key":"Zm9v","limit":""}"#, "unexpected end of JSON input"),
        (
            r#"{"key":"Zm9v","limit":"x"}"#,
            "invalid character 'x' looking for beginning of value",
        ),
        (
            r#"{"key":"Zm9v","keys_only":"true"}"#,
            "json: cannot unmarshal string into Go value of type bool",
        ),
        (
            r#"{"key":"Zm9v","sort_order":"NOPE"}"#,
            "unknown value \"NOPE\" for enum etcdserverpb.RangeRequest_SortOrder",
        ),
        (
            r#"{"key":"Zm9v","sort_order":1.5}"#,
            "json: cannot unmarshal number 1.5 into Go value of type etcdserverpb.RangeRequest_SortOrder",
        ),
        (
            "[1]",
            "json: cannot unmarshal array into Go value of type map[string]json.RawMessage",
        ),
        (
            r#"{"key":"Zm9v","limit":"5","revision":{}}"#,
            "json: cannot unmarshal object into Go value of type int64",
        ),
    ] {
        assert_eq!(
            from_json::<pb::RangeRequest>("etcdserverpb.RangeRequest", body),
            Err(err.to_string()),
            "{body}"
        );
    }
}

#[test]
fn fields_are_decoded_in_declaration_order_and_the_first_error_wins() {
    // `key` is declared before `limit`.
    assert_eq!(
        from_json::<pb::RangeRequest>("etcdserverpb.RangeRequest", r#"{"limit":"x","key":5}"#),
        Err("json: cannot unmarshal number into Go value of type []uint8".to_string())
    );
}

#[test]
fn repeated_enums_take_names_or_numbers() {
    let r: pb::WatchRequest = from_json(
        "etcdserverpb.WatchRequest",
        r#"{"create_request":{"key":"Zm9v","filters":["NODELETE",0],"prev_kv":true,"watch_id":"5"}}"#,
    )
    .unwrap();
    let Some(pb::watch_request::RequestUnion::CreateRequest(c)) = r.request_union else {
        panic!("create request expected");
    };
    assert_eq!(c.filters, vec![1, 0]);
    assert!(c.prev_kv);
    assert_eq!(c.watch_id, 5);
    assert_eq!(
        from_json::<pb::WatchRequest>(
            "etcdserverpb.WatchRequest",
            r#"{"create_request":{"filters":"NOPUT"}}"#
        ),
        Err(
            "invalid target \"slice\" for enum etcdserverpb.WatchCreateRequest_FilterType"
                .to_string()
        )
    );
    assert_eq!(
        from_json::<pb::WatchRequest>(
            "etcdserverpb.WatchRequest",
            r#"{"create_request":{"filters":{}}}"#
        ),
        Err("json: cannot unmarshal object into Go value of type []json.RawMessage".to_string())
    );
}

#[test]
fn txns_nest_and_oneof_members_select_their_branch() {
    let r: pb::TxnRequest = from_json(
        "etcdserverpb.TxnRequest",
        r#"{"compare":[{"target":"VERSION","key":"Zm9v","version":null},{"result":"GREATER","target":2,"key":"Zm9v","mod_revision":"3","range_end":"AA=="}],
            "success":[{"request_txn":{"success":[{"requestPut":{"key":"YQ==","value":"Yg=="}}]}},null],
            "failure":[{"request_range":{"key":"Zm9v"}}]}"#,
    )
    .unwrap();
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    assert_eq!(r.compare.len(), 2);
    assert_eq!(r.compare[0].target, CompareTarget::Version as i32);
    // A `null` scalar member still selects it, with its zero value.
    assert_eq!(r.compare[0].target_union, Some(TargetUnion::Version(0)));
    assert_eq!(r.compare[1].result, CompareResult::Greater as i32);
    assert_eq!(r.compare[1].target_union, Some(TargetUnion::ModRevision(3)));
    assert_eq!(r.compare[1].range_end, b"\0");
    assert_eq!(r.success.len(), 2);
    let Some(pb::request_op::Request::RequestTxn(inner)) = &r.success[0].request else {
        panic!("nested txn expected");
    };
    assert!(matches!(
        &inner.success[0].request,
        Some(pb::request_op::Request::RequestPut(p)) if p.key == b"a" && p.value == b"b"
    ));
    // A `null` element is an empty operation.
    assert_eq!(r.success[1], pb::RequestOp::default());
    assert!(matches!(
        &r.failure[0].request,
        Some(pb::request_op::Request::RequestRange(_))
    ));
}

#[test]
fn nesting_is_bounded() {
    let mut body = String::from(r#"{"key":"YQ=="}"#);
    for _ in 0..200 {
        body = format!(r#"{{"success":[{{"request_txn":{body}}}]}}"#);
    }
    assert_eq!(
        from_json::<pb::TxnRequest>("etcdserverpb.TxnRequest", &body),
        Err("exceeded max depth".to_string())
    );
}
