//! Checks a request before it is proposed, as etcd's gRPC layer does: a request that fails here never
//! reaches Raft. The order of checks matters, since only the first error is reported.

use std::collections::HashSet;

use api::etcdserverpb::{
    range_request, request_op, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use rpctypes::ServerError;

pub fn check_range(r: &RangeRequest) -> Result<(), ServerError> {
    if r.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    if range_request::SortOrder::try_from(r.sort_order).is_err()
        || range_request::SortTarget::try_from(r.sort_target).is_err()
    {
        return Err(ServerError::InvalidSortOption);
    }
    Ok(())
}

pub fn check_put(r: &PutRequest) -> Result<(), ServerError> {
    if r.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(ServerError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(ServerError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), ServerError> {
    if r.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    Ok(())
}

/// Op counts, compare keys and every op (recursively), then overlapping writes.
pub fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), ServerError> {
    check_txn_ops(r, max_txn_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// A nested txn may use only what its parent left: `max_txn_ops` minus the parent's largest list.
fn check_txn_ops(r: &TxnRequest, max_txn_ops: usize) -> Result<(), ServerError> {
    let widest = r.compare.len().max(r.success.len()).max(r.failure.len());
    if widest > max_txn_ops {
        return Err(ServerError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(ServerError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(x)) => check_range(x)?,
            Some(request_op::Request::RequestPut(x)) => check_put(x)?,
            Some(request_op::Request::RequestDeleteRange(x)) => check_delete(x)?,
            Some(request_op::Request::RequestTxn(x)) => check_txn_ops(x, max_txn_ops - widest)?,
            // An op with no request is how etcd reports an empty union.
            None => return Err(ServerError::KeyNotFound),
        }
    }
    Ok(())
}

/// A half-open key interval; an empty `end` is unbounded. Deletes of a single key are `[k, k\0)`.
#[derive(Clone)]
struct Interval {
    begin: Vec<u8>,
    end: Vec<u8>,
}

impl Interval {
    fn contains(&self, k: &[u8]) -> bool {
        self.begin.as_slice() <= k && (self.end.is_empty() || k < self.end.as_slice())
    }
}

/// Returns the keys put and the ranges deleted by `ops` (nested txns included), failing on a put that
/// overlaps another put or a delete in the same branch. Puts in the `success` and `failure` branches of one
/// nested txn may name the same key, since only one branch runs. Deletes may overlap each other.
/// (A delete whose `range_end` is `"\0"` is taken as the literal interval `[key, "\0")`, as etcd does.)
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Interval>), ServerError> {
    let mut dels: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(request_op::Request::RequestDeleteRange(d)) => Some(if d.range_end.is_empty() {
                let mut end = d.key.clone();
                end.push(0);
                Interval {
                    begin: d.key.clone(),
                    end,
                }
            } else {
                Interval {
                    begin: d.key.clone(),
                    end: d.range_end.clone(),
                }
            }),
            _ => None,
        })
        .collect();
    let overlaps = |dels: &[Interval], k: &[u8]| dels.iter().any(|d| d.contains(k));
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(request_op::Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || overlaps(&dels, k) {
                return Err(ServerError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in puts_else {
            if (puts.contains(&k) && !puts_then.contains(&k)) || overlaps(&dels, &k) {
                return Err(ServerError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(request_op::Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || overlaps(&dels, &p.key) {
            return Err(ServerError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: k.into(),
                    range_end: end.into(),
                    ..Default::default()
                },
            )),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest {
                success,
                failure,
                ..Default::default()
            })),
        }
    }
    fn check(success: Vec<RequestOp>) -> Result<(), ServerError> {
        check_txn(
            &TxnRequest {
                success,
                ..Default::default()
            },
            128,
        )
    }

    #[test]
    fn duplicate_puts_and_put_over_delete_are_rejected() {
        assert_eq!(
            check(vec![put("a"), put("a")]),
            Err(ServerError::DuplicateKey)
        );
        assert_eq!(
            check(vec![del("a", "c"), put("b")]),
            Err(ServerError::DuplicateKey)
        );
        assert_eq!(
            check(vec![del("a", ""), put("a")]),
            Err(ServerError::DuplicateKey)
        );
        assert_eq!(
            check(vec![txn(vec![put("a")], vec![]), put("a")]),
            Err(ServerError::DuplicateKey)
        );
    }

    #[test]
    fn allowed_overlaps() {
        assert_eq!(check(vec![del("a", "c"), del("b", "d")]), Ok(()));
        assert_eq!(check(vec![txn(vec![put("a")], vec![put("a")])]), Ok(()));
        assert_eq!(check(vec![del("a", "c"), put("c")]), Ok(()));
        // etcd takes "\0" literally here, so a from-key delete overlaps nothing.
        assert_eq!(check(vec![del("a", "\0"), put("b")]), Ok(()));
    }

    #[test]
    fn too_many_ops_and_empty_keys() {
        let many: Vec<RequestOp> = (0..129).map(|i| put(&format!("k{i}"))).collect();
        assert_eq!(check(many), Err(ServerError::TooManyOps));
        assert_eq!(check(vec![put("")]), Err(ServerError::EmptyKey));
        assert_eq!(
            check(vec![RequestOp { request: None }]),
            Err(ServerError::KeyNotFound)
        );
        let nested = |outer: usize, inner: usize| {
            let mut ops: Vec<RequestOp> = (0..outer - 1).map(|i| put(&format!("o{i}"))).collect();
            ops.push(txn(
                (0..inner).map(|i| put(&format!("i{i}"))).collect(),
                vec![],
            ));
            ops
        };
        assert_eq!(check(nested(100, 28)), Ok(()));
        assert_eq!(check(nested(100, 29)), Err(ServerError::TooManyOps));
        let bad_sort = RangeRequest {
            key: "a".into(),
            sort_order: 7,
            ..Default::default()
        };
        assert_eq!(check_range(&bad_sort), Err(ServerError::InvalidSortOption));
    }

    #[test]
    fn deep_and_wide_txns_are_validated_without_panicking() {
        // As deep as a request of etcd's default size limit can nest, and as wide as the op limit.
        let mut t = TxnRequest::default();
        for _ in 0..1000 {
            t = TxnRequest {
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestTxn(t)),
                }],
                ..Default::default()
            };
        }
        assert_eq!(check_txn(&t, 128), Err(ServerError::TooManyOps));
        let wide = TxnRequest {
            success: (0..5000)
                .map(|i| RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: format!("k{i}").into_bytes(),
                        ..Default::default()
                    })),
                })
                .collect(),
            ..Default::default()
        };
        assert_eq!(check_txn(&wide, 128), Err(ServerError::TooManyOps));
        assert_eq!(check_txn(&wide, 5000), Ok(()));
    }
}
