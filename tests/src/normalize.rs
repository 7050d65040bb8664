//! Side-by-side comparison of responses from two servers.
//!
//! Responses are compared field by field, except the header's `cluster_id`, `member_id` and
//! `raft_term` (at every nesting level), which legitimately differ between two servers. Errors
//! are compared by gRPC code and message. Everything here prints bytes readably, so a mismatch
//! report can be read by a person.

use std::fmt::Write as _;

use api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use api::etcdserverpb::range_request::{SortOrder, SortTarget};
use api::etcdserverpb::request_op::Request;
use api::etcdserverpb::response_op::Response;
use api::etcdserverpb::{Compare, RequestOp, ResponseHeader};
use api::mvccpb::KeyValue;

use crate::rpc::RpcError;

/// What one request produced: the response, or the error.
pub type Outcome = Result<Response, RpcError>;

fn header(h: &mut Option<ResponseHeader>) {
    if let Some(h) = h {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
}

/// Clears the fields that are not compared, recursively.
pub fn normalize_response(r: &mut Response) {
    match r {
        Response::ResponseRange(r) => header(&mut r.header),
        Response::ResponsePut(r) => header(&mut r.header),
        Response::ResponseDeleteRange(r) => header(&mut r.header),
        Response::ResponseTxn(r) => {
            header(&mut r.header);
            for op in &mut r.responses {
                if let Some(r) = &mut op.response {
                    normalize_response(r);
                }
            }
        }
    }
}

pub fn normalize(mut o: Outcome) -> Outcome {
    if let Ok(r) = &mut o {
        normalize_response(r);
    }
    o
}

/// Compares two outcomes after normalization; `Err` holds a readable description of both.
pub fn compare(expected: &Outcome, actual: &Outcome) -> Result<(), String> {
    let e = normalize(expected.clone());
    let a = normalize(actual.clone());
    if e == a {
        Ok(())
    } else {
        Err(format!(
            "  etcd (reference): {}\n  under test:       {}",
            show_outcome(expected),
            show_outcome(actual)
        ))
    }
}

/// Bytes as a quoted string, non-printable bytes escaped.
pub fn show_bytes(b: &[u8]) -> String {
    let mut s = String::from("\"");
    for &c in b {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s.push('"');
    s
}

fn show_bytes_trunc(b: &[u8]) -> String {
    if b.len() > 64 {
        format!("{}...({} bytes)", show_bytes(&b[..64]), b.len())
    } else {
        show_bytes(b)
    }
}

pub fn show_kv(kv: &KeyValue) -> String {
    format!(
        "{{key={} create={} mod={} ver={} value={} lease={}}}",
        show_bytes(&kv.key),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        show_bytes_trunc(&kv.value),
        kv.lease
    )
}

fn show_kvs(kvs: &[KeyValue]) -> String {
    let v: Vec<String> = kvs.iter().map(show_kv).collect();
    format!("[{}]", v.join(", "))
}

fn show_header(h: &Option<ResponseHeader>) -> String {
    match h {
        None => "header=None".into(),
        Some(h) => format!(
            "header={{rev={} cluster={} member={} term={}}}",
            h.revision, h.cluster_id, h.member_id, h.raft_term
        ),
    }
}

pub fn show_response(r: &Response) -> String {
    match r {
        Response::ResponseRange(r) => format!(
            "Range {} count={} more={} kvs={}",
            show_header(&r.header),
            r.count,
            r.more,
            show_kvs(&r.kvs)
        ),
        Response::ResponsePut(r) => format!(
            "Put {} prev_kv={}",
            show_header(&r.header),
            r.prev_kv.as_ref().map_or("None".into(), show_kv)
        ),
        Response::ResponseDeleteRange(r) => format!(
            "DeleteRange {} deleted={} prev_kvs={}",
            show_header(&r.header),
            r.deleted,
            show_kvs(&r.prev_kvs)
        ),
        Response::ResponseTxn(r) => {
            let ops: Vec<String> = r
                .responses
                .iter()
                .map(|op| match &op.response {
                    None => "None".into(),
                    Some(r) => show_response(r),
                })
                .collect();
            format!(
                "Txn {} succeeded={} responses=[{}]",
                show_header(&r.header),
                r.succeeded,
                ops.join("; ")
            )
        }
    }
}

pub fn show_outcome(o: &Outcome) -> String {
    match o {
        Ok(r) => show_response(r),
        Err(e) => format!("error code={:?} message={:?}", e.code, e.message),
    }
}

/// An enum field's name in the proto (`ASCEND`), or its number if it has none.
fn name<E: TryFrom<i32>>(v: i32, as_str: impl Fn(&E) -> &'static str) -> String {
    E::try_from(v).map_or_else(|_| v.to_string(), |e| as_str(&e).to_string())
}

pub fn show_compare(c: &Compare) -> String {
    let tu = match &c.target_union {
        None => "None".into(),
        Some(TargetUnion::Version(v)) => format!("version={v}"),
        Some(TargetUnion::CreateRevision(v)) => format!("create_revision={v}"),
        Some(TargetUnion::ModRevision(v)) => format!("mod_revision={v}"),
        Some(TargetUnion::Value(v)) => format!("value={}", show_bytes_trunc(v)),
        Some(TargetUnion::Lease(v)) => format!("lease={v}"),
    };
    format!(
        "{}({}{}) {} {}",
        name(c.target, CompareTarget::as_str_name),
        show_bytes(&c.key),
        if c.range_end.is_empty() {
            String::new()
        } else {
            format!("..{}", show_bytes(&c.range_end))
        },
        name(c.result, CompareResult::as_str_name),
        tu
    )
}

pub fn show_request(r: &Request) -> String {
    match r {
        Request::RequestRange(r) => {
            let mut s = format!(
                "Range key={} range_end={}",
                show_bytes(&r.key),
                show_bytes(&r.range_end)
            );
            if r.limit != 0 {
                let _ = write!(s, " limit={}", r.limit);
            }
            if r.revision != 0 {
                let _ = write!(s, " revision={}", r.revision);
            }
            if r.sort_order != 0 || r.sort_target != 0 {
                let _ = write!(
                    s,
                    " sort={}/{}",
                    name(r.sort_target, SortTarget::as_str_name),
                    name(r.sort_order, SortOrder::as_str_name)
                );
            }
            for (flag, on) in [
                ("serializable", r.serializable),
                ("keys_only", r.keys_only),
                ("count_only", r.count_only),
            ] {
                if on {
                    let _ = write!(s, " {flag}");
                }
            }
            for (field, v) in [
                ("min_mod", r.min_mod_revision),
                ("max_mod", r.max_mod_revision),
                ("min_create", r.min_create_revision),
                ("max_create", r.max_create_revision),
            ] {
                if v != 0 {
                    let _ = write!(s, " {field}={v}");
                }
            }
            s
        }
        Request::RequestPut(r) => {
            let mut s = format!(
                "Put key={} value={}",
                show_bytes(&r.key),
                show_bytes_trunc(&r.value)
            );
            if r.lease != 0 {
                let _ = write!(s, " lease={}", r.lease);
            }
            for (flag, on) in [
                ("prev_kv", r.prev_kv),
                ("ignore_value", r.ignore_value),
                ("ignore_lease", r.ignore_lease),
            ] {
                if on {
                    let _ = write!(s, " {flag}");
                }
            }
            s
        }
        Request::RequestDeleteRange(r) => format!(
            "DeleteRange key={} range_end={}{}",
            show_bytes(&r.key),
            show_bytes(&r.range_end),
            if r.prev_kv { " prev_kv" } else { "" }
        ),
        Request::RequestTxn(t) => {
            let ops = |ops: &[RequestOp]| {
                let v: Vec<String> = ops
                    .iter()
                    .map(|op| match &op.request {
                        None => "None".into(),
                        Some(r) => show_request(r),
                    })
                    .collect();
                v.join("; ")
            };
            let cmps: Vec<String> = t.compare.iter().map(show_compare).collect();
            format!(
                "Txn {{ if [{}] then [{}] else [{}] }}",
                cmps.join(", "),
                ops(&t.success),
                ops(&t.failure)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::etcdserverpb::{RangeResponse, ResponseOp, TxnResponse};

    fn range(rev: i64, cluster: u64, kvs: Vec<KeyValue>) -> Outcome {
        Ok(Response::ResponseRange(RangeResponse {
            header: Some(ResponseHeader {
                cluster_id: cluster,
                member_id: cluster + 1,
                revision: rev,
                raft_term: cluster + 2,
            }),
            kvs,
            more: false,
            count: 1,
        }))
    }

    #[test]
    fn ignores_identity_fields_only() {
        let kv = KeyValue {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            ..Default::default()
        };
        assert!(compare(
            &range(5, 1, vec![kv.clone()]),
            &range(5, 99, vec![kv.clone()])
        )
        .is_ok());
        assert!(compare(
            &range(5, 1, vec![kv.clone()]),
            &range(6, 1, vec![kv.clone()])
        )
        .is_err());
        let mut other = kv.clone();
        other.value = b"2".to_vec();
        assert!(compare(&range(5, 1, vec![kv.clone()]), &range(5, 1, vec![other])).is_err());
        let err = |code, msg: &str| -> Outcome { Err(RpcError::new(code, msg)) };
        assert!(compare(
            &err(tonic::Code::OutOfRange, "x"),
            &err(tonic::Code::OutOfRange, "x")
        )
        .is_ok());
        assert!(compare(
            &err(tonic::Code::OutOfRange, "x"),
            &err(tonic::Code::InvalidArgument, "x")
        )
        .is_err());
        assert!(compare(&err(tonic::Code::OutOfRange, "x"), &range(5, 1, vec![])).is_err());
        // Nested txn headers are normalized too.
        let txn = |cluster| -> Outcome {
            Ok(Response::ResponseTxn(TxnResponse {
                header: None,
                succeeded: true,
                responses: vec![ResponseOp {
                    response: Some(range(3, cluster, vec![]).unwrap()),
                }],
            }))
        };
        assert!(compare(&txn(1), &txn(2)).is_ok());
        assert_eq!(show_bytes(b"a\0\"\xff"), "\"a\\x00\\\"\\xff\"");
        let c = Compare {
            result: CompareResult::NotEqual as i32,
            target: CompareTarget::Mod as i32,
            key: b"k".to_vec(),
            range_end: vec![],
            target_union: Some(TargetUnion::ModRevision(3)),
        };
        assert_eq!(show_compare(&c), "MOD(\"k\") NOT_EQUAL mod_revision=3");
        let r = Request::RequestRange(api::etcdserverpb::RangeRequest {
            key: b"a".to_vec(),
            sort_order: SortOrder::Ascend as i32,
            sort_target: 9,
            ..Default::default()
        });
        assert_eq!(
            show_request(&r),
            "Range key=\"a\" range_end=\"\" sort=9/ASCEND"
        );
    }
}
