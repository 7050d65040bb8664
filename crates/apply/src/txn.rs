//! Request-level KV semantics on top of `mvcc`, as etcd's applier defines them: Range options (sorting,
//! revision filters, limit and `more`), Put options (prev_kv, ignore_value, ignore_lease), DeleteRange and
//! Txn (compares, nested branches, pre-checks). Deterministic and free of I/O beyond the store, so every
//! member that applies the same entries computes the same responses.
//!
//! Txn follows etcd's order of work: the branch taken at every nesting level is decided up front against one
//! read view of the state before the txn, the puts and ranges of that path are checked (lease exists, key
//! exists for ignore_* when the put runs, revisions in range), and only then is a write transaction opened, so
//! a txn that fails a check changes nothing. A write txn that passes them cannot fail part way except on a
//! backend error (which stops the member): the applier defers the commit of a batch of requests, and a txn
//! dropped after writing would abort the writes of the requests before it in the batch.

use api::etcdserverpb::{
    compare, range_request, request_op, response_op, Compare, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use api::mvccpb::KeyValue;
use mvcc::{MvccError, RangeOptions, RangeResult, ReadView, TxnWrite};

use rpctypes::ServerError;

/// What the applier needs to know about leases (`lessor::Leases` implements it).
pub trait LeaseLookup {
    fn exists(&self, id: i64) -> bool;
}

/// No leases at all: every non-zero lease id is unknown (for read-only txns, which never check).
pub struct NoLeases;

impl LeaseLookup for NoLeases {
    fn exists(&self, _id: i64) -> bool {
        false
    }
}

/// Reading the store, either from a read view or from inside a write transaction (which sees its own writes).
pub trait KvRead {
    fn range(
        &self,
        key: &[u8],
        end: Option<&[u8]>,
        opts: RangeOptions,
    ) -> Result<RangeResult, MvccError>;
    /// The revision this reader sees.
    fn rev(&self) -> i64;
}

impl KvRead for ReadView<'_> {
    fn range(
        &self,
        key: &[u8],
        end: Option<&[u8]>,
        opts: RangeOptions,
    ) -> Result<RangeResult, MvccError> {
        ReadView::range(self, key, end, opts)
    }
    fn rev(&self) -> i64 {
        ReadView::rev(self)
    }
}

impl KvRead for TxnWrite<'_> {
    fn range(
        &self,
        key: &[u8],
        end: Option<&[u8]>,
        opts: RangeOptions,
    ) -> Result<RangeResult, MvccError> {
        TxnWrite::range(self, key, end, opts)
    }
    fn rev(&self) -> i64 {
        TxnWrite::rev(self)
    }
}

/// etcd's range_end convention: empty = the single key; `"\0"` = every key from `key` on; else `[key, end)`.
pub fn range_end(end: &[u8]) -> Option<&[u8]> {
    match end {
        [] => None,
        [0] => Some(&[]),
        e => Some(e),
    }
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

fn get_one(r: &impl KvRead, key: &[u8]) -> Result<Option<KeyValue>, ServerError> {
    Ok(r.range(key, None, RangeOptions::default())?
        .kvs
        .into_iter()
        .next())
}

pub fn range(r: &impl KvRead, req: &RangeRequest) -> Result<RangeResponse, ServerError> {
    use range_request::{SortOrder, SortTarget};
    crate::metrics::range();
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let sort_order = req.sort_order();
    let sort_target = req.sort_target();
    // Sorting and filtering need every match; otherwise fetch one extra row to learn whether there is `more`.
    let limit = if sort_order != SortOrder::None || filtered {
        0
    } else if req.limit > 0 {
        // Saturating: etcd's Go wraps `MaxInt64 + 1` to a negative limit, which means no limit,
        // and a limit this large means the same.
        req.limit.saturating_add(1)
    } else {
        req.limit
    };
    let opts = RangeOptions {
        limit,
        rev: req.revision,
        count_only: req.count_only,
        max_bytes: 0,
        no_total: false,
    };
    let rr = r.range(&req.key, range_end(&req.range_end), opts)?;
    let mut kvs = rr.kvs;
    if filtered {
        kvs.retain(|kv| {
            !(req.max_mod_revision != 0 && kv.mod_revision > req.max_mod_revision
                || req.min_mod_revision != 0 && kv.mod_revision < req.min_mod_revision
                || req.max_create_revision != 0 && kv.create_revision > req.max_create_revision
                || req.min_create_revision != 0 && kv.create_revision < req.min_create_revision)
        });
    }
    // Results come sorted by key; any other target sorts ascending unless told otherwise.
    let order = if sort_target != SortTarget::Key && sort_order == SortOrder::None {
        SortOrder::Ascend
    } else {
        sort_order
    };
    if order != SortOrder::None {
        // A stable sort keeps ties in key order, which is what etcd's sort yields for small results.
        match sort_target {
            SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
            SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
            SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
            SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
            SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
        }
        if order == SortOrder::Descend {
            reverse_stable(&mut kvs, sort_target);
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
    }
    Ok(RangeResponse {
        header: header(rr.rev),
        kvs,
        more,
        count: rr.count,
    })
}

/// Descending order with ties kept in their ascending-key order, as a stable sort on the reversed
/// comparison gives.
fn reverse_stable(kvs: &mut [KeyValue], target: range_request::SortTarget) {
    use range_request::SortTarget;
    match target {
        SortTarget::Key => kvs.sort_by(|a, b| b.key.cmp(&a.key)),
        SortTarget::Version => kvs.sort_by_key(|kv| std::cmp::Reverse(kv.version)),
        SortTarget::Create => kvs.sort_by_key(|kv| std::cmp::Reverse(kv.create_revision)),
        SortTarget::Mod => kvs.sort_by_key(|kv| std::cmp::Reverse(kv.mod_revision)),
        SortTarget::Value => kvs.sort_by(|a, b| b.value.cmp(&a.value)),
    }
}

pub fn put(
    txn: &mut TxnWrite<'_>,
    leases: &dyn LeaseLookup,
    req: &PutRequest,
) -> Result<PutResponse, ServerError> {
    if req.lease != 0 && !leases.exists(req.lease) {
        return Err(ServerError::LeaseNotFound);
    }
    put_checked(txn, req)
}

/// Put without the lease check (a txn checks all its puts before it starts writing).
fn put_checked(txn: &mut TxnWrite<'_>, req: &PutRequest) -> Result<PutResponse, ServerError> {
    let prev = if req.ignore_value || req.ignore_lease || req.prev_kv {
        get_one(txn, &req.key)?
    } else {
        None
    };
    let (mut value, mut lease) = (req.value.as_slice(), req.lease);
    if req.ignore_value || req.ignore_lease {
        let p = prev.as_ref().ok_or(ServerError::KeyNotFound)?;
        if req.ignore_value {
            value = &p.value;
        }
        if req.ignore_lease {
            lease = p.lease;
        }
    }
    let value = value.to_vec();
    crate::metrics::PUT.inc();
    crate::metrics::PUT_SIZE.add((req.key.len() + value.len()) as i64);
    let kv = txn.put(&req.key, &value, lease);
    Ok(PutResponse {
        header: header(kv.mod_revision),
        prev_kv: if req.prev_kv { prev } else { None },
    })
}

pub fn delete_range(
    txn: &mut TxnWrite<'_>,
    req: &DeleteRangeRequest,
) -> Result<DeleteRangeResponse, ServerError> {
    let end = range_end(&req.range_end);
    crate::metrics::DELETE.inc();
    let (deleted, prev) = txn.delete_range(&req.key, end);
    let rev = KvRead::rev(txn);
    Ok(DeleteRangeResponse {
        header: header(rev),
        deleted,
        prev_kvs: if req.prev_kv { prev } else { Vec::new() },
    })
}

/// The branch taken at one txn level, and the paths of the nested txns in that branch, in order.
struct TxnPath {
    succeeded: bool,
    nested: Vec<TxnPath>,
}

impl TxnPath {
    fn decide(r: &impl KvRead, req: &TxnRequest) -> TxnPath {
        let succeeded = req.compare.iter().all(|c| compare(r, c));
        let nested = branch(req, succeeded)
            .iter()
            .filter_map(|op| match &op.request {
                Some(request_op::Request::RequestTxn(t)) => Some(TxnPath::decide(r, t)),
                _ => None,
            })
            .collect();
        TxnPath { succeeded, nested }
    }

    /// Calls `f` on every op of the taken path, depth first, in request order.
    fn visit<'a, E>(
        &self,
        req: &'a TxnRequest,
        f: &mut impl FnMut(&'a request_op::Request) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut nested = self.nested.iter();
        for op in branch(req, self.succeeded) {
            let Some(r) = &op.request else { continue };
            f(r)?;
            if let request_op::Request::RequestTxn(t) = r {
                if let Some(p) = nested.next() {
                    p.visit(t, f)?;
                }
            }
        }
        Ok(())
    }
}

fn branch(req: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

fn compare(r: &impl KvRead, c: &Compare) -> bool {
    let Ok(rr) = r.range(&c.key, range_end(&c.range_end), RangeOptions::default()) else {
        return false;
    };
    if rr.kvs.is_empty() {
        // A missing key compares as all zeros, except that no value can equal a missing one.
        return c.target() != compare::CompareTarget::Value && compare_kv(c, &KeyValue::default());
    }
    rr.kvs.iter().all(|kv| compare_kv(c, kv))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let ord = match c.target() {
        CompareTarget::Value => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        t => {
            let want = match (&c.target_union, t) {
                (Some(TargetUnion::Version(v)), CompareTarget::Version)
                | (Some(TargetUnion::CreateRevision(v)), CompareTarget::Create)
                | (Some(TargetUnion::ModRevision(v)), CompareTarget::Mod)
                | (Some(TargetUnion::Lease(v)), CompareTarget::Lease) => *v,
                _ => 0,
            };
            let have = match t {
                CompareTarget::Version => kv.version,
                CompareTarget::Create => kv.create_revision,
                CompareTarget::Mod => kv.mod_revision,
                CompareTarget::Lease => kv.lease,
                CompareTarget::Value => unreachable!("handled above"),
            };
            have.cmp(&want)
        }
    };
    match c.result() {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

/// True when no op in either branch, at any depth, writes.
pub fn txn_is_read_only(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(request_op::Request::RequestPut(_))
            | Some(request_op::Request::RequestDeleteRange(_)) => false,
            Some(request_op::Request::RequestTxn(t)) => txn_is_read_only(t),
            _ => true,
        })
}

/// True when every op in either branch is a range that asks for a serializable read. As in
/// etcd, a nested txn (or an empty op) makes the whole txn linearizable, whatever it holds.
pub fn txn_is_serializable(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(request_op::Request::RequestRange(r)) => r.serializable,
            _ => false,
        })
}

/// Executes a txn on `target`: a read view for read-only txns, else the write transaction, which the caller
/// ends (with the raft index) only if this returns Ok. `first_rev` is the store's compaction floor
/// (`mvcc::KvStore::first_rev`).
pub fn txn(
    target: &mut Exec<'_, '_, '_>,
    first_rev: i64,
    leases: &dyn LeaseLookup,
    req: &TxnRequest,
) -> Result<TxnResponse, ServerError> {
    // Before any op runs, the write transaction sees exactly the pre-txn state.
    let path = match target {
        Exec::Read(v) => prepare(*v, first_rev, leases, req, false)?,
        Exec::Write(w) => prepare(&**w, first_rev, leases, req, true)?,
    };
    if req.compare.len() + branch(req, path.succeeded).len() > 1 {
        crate::metrics::TXN.inc();
    }
    let mut resp = exec(target, req, &path)?;
    let rev = match target {
        Exec::Read(v) => v.rev(),
        Exec::Write(w) => KvRead::rev(&**w),
    };
    resp.header = header(rev);
    Ok(resp)
}

/// Decides the branches and runs etcd's pre-checks on the taken path.
fn prepare(
    r: &impl KvRead,
    first_rev: i64,
    leases: &dyn LeaseLookup,
    req: &TxnRequest,
    is_write: bool,
) -> Result<TxnPath, ServerError> {
    let path = TxnPath::decide(r, req);
    if is_write {
        // The ranges deleted by the ops before each put. A put that reuses the key's value or
        // lease needs the key to exist when it runs, and once a txn has written, a failure would
        // take the writes of the whole apply batch with it: so whether the key still exists is
        // decided here. Only a delete can remove it (two puts of one key are refused), and a
        // `"\0"` range end escapes the duplicate-key check, as in etcd, whose applier panics
        // on such a txn instead.
        let mut deleted: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
        path.visit(req, &mut |op| match op {
            request_op::Request::RequestPut(p) => {
                if p.ignore_value || p.ignore_lease {
                    get_one(r, &p.key)?.ok_or(ServerError::KeyNotFound)?;
                    if deleted.iter().any(|&(k, end)| covers(k, end, &p.key)) {
                        return Err(ServerError::KeyNotFound);
                    }
                }
                if p.lease != 0 && !leases.exists(p.lease) {
                    return Err(ServerError::LeaseNotFound);
                }
                Ok(())
            }
            request_op::Request::RequestDeleteRange(d) => {
                deleted.push((&d.key, range_end(&d.range_end)));
                Ok(())
            }
            _ => Ok(()),
        })?;
    }
    let rev = r.rev();
    path.visit(req, &mut |op| match op {
        request_op::Request::RequestRange(g) if g.revision != 0 => {
            if g.revision > rev {
                Err(ServerError::FutureRev)
            } else if g.revision < first_rev {
                Err(ServerError::Compacted)
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    })?;
    Ok(path)
}

/// Whether a range in the store's convention (see [`range_end`]) holds `k`.
fn covers(key: &[u8], end: Option<&[u8]>, k: &[u8]) -> bool {
    match end {
        None => k == key,
        Some([]) => k >= key,
        Some(end) => key <= k && k < end,
    }
}

/// Where a txn runs.
pub enum Exec<'v, 'w, 's> {
    Read(&'v ReadView<'s>),
    Write(&'w mut TxnWrite<'s>),
}

fn exec(
    target: &mut Exec<'_, '_, '_>,
    req: &TxnRequest,
    path: &TxnPath,
) -> Result<TxnResponse, ServerError> {
    let mut nested = path.nested.iter();
    let mut responses = Vec::new();
    for op in branch(req, path.succeeded) {
        let response = match (&op.request, &mut *target) {
            (None, _) => None,
            (Some(request_op::Request::RequestRange(r)), Exec::Read(v)) => {
                Some(response_op::Response::ResponseRange(range(*v, r)?))
            }
            (Some(request_op::Request::RequestRange(r)), Exec::Write(w)) => {
                Some(response_op::Response::ResponseRange(range(&**w, r)?))
            }
            (Some(request_op::Request::RequestPut(p)), Exec::Write(w)) => {
                Some(response_op::Response::ResponsePut(put_checked(w, p)?))
            }
            (Some(request_op::Request::RequestDeleteRange(d)), Exec::Write(w)) => Some(
                response_op::Response::ResponseDeleteRange(delete_range(w, d)?),
            ),
            (
                Some(
                    request_op::Request::RequestPut(_) | request_op::Request::RequestDeleteRange(_),
                ),
                Exec::Read(_),
            ) => {
                return Err(ServerError::Internal("write in a read-only txn".into()));
            }
            (Some(request_op::Request::RequestTxn(t)), _) => {
                let p = nested
                    .next()
                    .ok_or_else(|| ServerError::Internal("txn path out of step".into()))?;
                // Nested txn responses carry an empty header, as etcd's do.
                let mut inner = exec(target, t, p)?;
                inner.header = Some(ResponseHeader::default());
                Some(response_op::Response::ResponseTxn(inner))
            }
        };
        responses.push(ResponseOp { response });
    }
    Ok(TxnResponse {
        header: None,
        succeeded: path.succeeded,
        responses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(serializable: bool) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: b"k".to_vec(),
                serializable,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn only_serializable_ranges_at_the_top_level_make_a_serializable_txn() {
        let txn = |success: Vec<RequestOp>| TxnRequest {
            success,
            ..Default::default()
        };
        assert!(txn_is_serializable(&txn(vec![])));
        assert!(txn_is_serializable(&txn(vec![range(true), range(true)])));
        assert!(!txn_is_serializable(&txn(vec![range(true), range(false)])));
        // etcd looks at the top level only: a nested txn is linearizable even if it holds only
        // serializable ranges, and so is an empty op.
        let nested = RequestOp {
            request: Some(request_op::Request::RequestTxn(txn(vec![range(true)]))),
        };
        assert!(!txn_is_serializable(&txn(vec![range(true), nested])));
        assert!(!txn_is_serializable(&txn(vec![RequestOp {
            request: None
        }])));
        let failure = TxnRequest {
            failure: vec![range(false)],
            ..txn(vec![range(true)])
        };
        assert!(!txn_is_serializable(&failure));
    }
}
