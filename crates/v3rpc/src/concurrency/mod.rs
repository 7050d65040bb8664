//! etcd's client-side concurrency recipes (`client/v3/concurrency`: session, mutex, election)
//! run inside the server, for the v3lock and v3election services.
//!
//! etcd's services run these recipes through an in-process client; so do we: every KV request
//! goes through the KV service ([`Client`]), with its validation, Raft proposal, linearizable
//! read and response header, exactly as a remote client's would. The keys and revisions are
//! therefore etcd's: a session's key under a prefix is `<prefix><lease ID in hex>`, the order of
//! waiters is the keys' create revision, and whoever holds the oldest key holds the lock (or
//! leads the election).
//!
//! Waiting for a key's deletion watches it on the member's watchable store (no polling), from the
//! revision after the read that found it, so a deletion between the read and the watch is read
//! back from history rather than missed.
//!
//! Errors are the statuses of the KV service (or of the recipes' own errors); the services pass
//! them through `rpctypes::relayed`, as etcd's in-process client does.

pub mod election;
pub mod mutex;

use std::sync::Arc;

use api::etcdserverpb::{
    compare, kv_server::Kv, range_request, request_op, Compare, DeleteRangeRequest,
    DeleteRangeResponse, LeaseGrantRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse,
};
use api::mvccpb::{event::EventType, KeyValue};
use mvcc::{WatchFilter, WatchResponse, WatchSink, WatchStream};
use tokio::sync::mpsc;
use tonic::Status;

use rpctypes::ServerError;

use crate::auth::Ctx;
use crate::{KvGetter, Lessor, RaftStatusGetter};

/// The TTL of the lease a session grants when the caller names none (etcd's
/// `defaultSessionTTL`). Such a lease is never revoked by the services; it expires.
pub const DEFAULT_SESSION_TTL: i64 = 60;

/// Watch responses buffered per wait; when full, the watcher waits as a victim (see `mvcc`).
const WAIT_BUFFER: usize = 64;

/// What the recipes need from the member besides the KV service: sessions (leases), watches and
/// response headers.
pub trait Member: Lessor + KvGetter + RaftStatusGetter {}

impl<T: Lessor + KvGetter + RaftStatusGetter> Member for T {}

/// The member's KV service as the recipes hold it (they never call RangeStream).
pub type DynKv = dyn Kv<RangeStreamStream = crate::range_stream::PartStream>;

/// The in-process client the recipes use. It acts with the credentials of the request it serves
/// ([`Client::with_ctx`]), as etcd's in-process client passes its caller's context on.
#[derive(Clone)]
pub struct Client {
    srv: Arc<dyn Member>,
    kv: Arc<DynKv>,
    cx: Ctx,
}

impl Client {
    /// A client of `kv` (the member's own KV service) and `srv`, without credentials.
    pub fn new(srv: Arc<dyn Member>, kv: Arc<DynKv>) -> Client {
        Client {
            srv,
            kv,
            cx: Ctx::default(),
        }
    }

    /// This client acting with `cx`.
    pub fn with_ctx(&self, cx: Ctx) -> Client {
        Client {
            srv: self.srv.clone(),
            kv: self.kv.clone(),
            cx,
        }
    }

    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, Status> {
        Ok(self.kv.txn(self.cx.attach(req)).await?.into_inner())
    }

    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, Status> {
        Ok(self.kv.range(self.cx.attach(req)).await?.into_inner())
    }

    pub async fn delete(&self, key: Vec<u8>) -> Result<DeleteRangeResponse, Status> {
        let req = DeleteRangeRequest {
            key,
            ..Default::default()
        };
        Ok(self
            .kv
            .delete_range(self.cx.attach(req))
            .await?
            .into_inner())
    }

    /// etcd's `NewSession(WithLease(lease))`: the caller's lease, or with lease 0 a new lease of
    /// [`DEFAULT_SESSION_TTL`] seconds. The services orphan their sessions at once (etcd's
    /// `Orphan`), so no keep-alive is kept running: the caller keeps its own lease alive.
    pub async fn session(&self, lease: i64) -> Result<i64, Status> {
        if lease != lease::NO_LEASE {
            return Ok(lease);
        }
        let resp = self
            .srv
            .lease_grant(
                &self.cx,
                LeaseGrantRequest {
                    ttl: DEFAULT_SESSION_TTL,
                    id: 0,
                },
            )
            .await?;
        Ok(resp.id)
    }

    /// etcd's `waitDeletes`: waits until no key under `pfx` with a create revision at or below
    /// `max_create_rev` is left, newest first; returns the header of the read that found none.
    pub async fn wait_deletes(
        &self,
        pfx: &[u8],
        max_create_rev: i64,
    ) -> Result<ResponseHeader, Status> {
        loop {
            let mut req = last_create(pfx);
            req.max_create_revision = max_create_rev;
            let resp = self.range(req).await?;
            let rev = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
            let Some(kv) = resp.kvs.into_iter().next() else {
                return Ok(resp.header.unwrap_or_default());
            };
            self.wait_delete(kv.key, rev).await?;
        }
    }

    /// Waits until `key`, which exists at revision `rev`, is deleted.
    pub async fn wait_delete(&self, key: Vec<u8>, rev: i64) -> Result<(), Status> {
        let mut w = KeyWatch::new(self, key, None, rev + 1, vec![WatchFilter::NoPut])?;
        loop {
            let resp = w.next().await?;
            if resp
                .events
                .iter()
                .any(|e| e.r#type == EventType::Delete as i32)
            {
                return Ok(());
            }
        }
    }

    /// A response header at `revision`.
    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        crate::header::header(&*self.srv, revision)
    }
}

/// One watcher on the watchable store, read as a stream of responses.
pub struct KeyWatch {
    rx: mpsc::Receiver<WatchResponse>,
    // Dropping it cancels the watcher.
    _stream: WatchStream,
}

struct ChannelSink(mpsc::Sender<WatchResponse>);

impl WatchSink for ChannelSink {
    fn try_send(&self, resp: WatchResponse) -> Result<(), WatchResponse> {
        match self.0.try_send(resp) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Full(r)) => Err(r),
        }
    }
}

impl KeyWatch {
    /// Watches `key` (`end: None`) or `[key, end)` (`Some(b"")`: every key from `key` on) from
    /// `start_rev`.
    pub fn new(
        c: &Client,
        key: Vec<u8>,
        end: Option<Vec<u8>>,
        start_rev: i64,
        filters: Vec<WatchFilter>,
    ) -> Result<KeyWatch, Status> {
        let (tx, rx) = mpsc::channel(WAIT_BUFFER);
        let stream = c.srv.watchable().watch_stream(Arc::new(ChannelSink(tx)));
        stream
            .watch(mvcc::AUTO_WATCH_ID, key, end, start_rev, filters, |_, _| {})
            .map_err(|e| Status::from(ServerError::Internal(e.to_string())))?;
        Ok(KeyWatch {
            rx,
            _stream: stream,
        })
    }

    /// The next response with events. A compaction past the watched revision is etcd's
    /// `ErrCompacted`, as the client's watch reports it.
    pub async fn next(&mut self) -> Result<WatchResponse, Status> {
        loop {
            let resp = self
                .rx
                .recv()
                .await
                .ok_or_else(|| Status::from(ServerError::Stopped))?;
            if resp.compact_revision != 0 {
                return Err(ServerError::Compacted.into());
            }
            if !resp.events.is_empty() {
                return Ok(resp);
            }
        }
    }
}

/// The end of the range of every key starting with `pfx` (etcd's `GetPrefixRangeEnd`): `pfx`
/// with its last byte below 0xff incremented and what follows dropped; `"\0"` (every key from
/// `pfx` on) if there is no such byte.
pub fn prefix_end(pfx: &[u8]) -> Vec<u8> {
    let mut end = pfx.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            let n = end.len();
            end[n - 1] = last + 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// The watch range end for [`prefix_end`]'s result (`"\0"` means "to the end").
pub fn watch_end(range_end: Vec<u8>) -> Option<Vec<u8>> {
    if range_end == [0] {
        Some(Vec::new())
    } else {
        Some(range_end)
    }
}

/// `<pfx><lease ID in hex>`, as Go's `fmt.Sprintf("%s%x", pfx, leaseID)` writes it (a negative
/// ID gets a minus sign and its magnitude).
pub fn session_key(pfx: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    let mut k = pfx.to_vec();
    k.extend_from_slice(hex.as_bytes());
    k
}

/// `name` + `/`: the prefix of a lock's or an election's keys.
pub fn prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

fn top(pfx: &[u8], order: range_request::SortOrder) -> RangeRequest {
    RangeRequest {
        key: pfx.to_vec(),
        range_end: prefix_end(pfx),
        limit: 1,
        sort_order: order as i32,
        sort_target: range_request::SortTarget::Create as i32,
        ..Default::default()
    }
}

/// The oldest key under `pfx` (etcd's `WithFirstCreate`).
pub fn first_create(pfx: &[u8]) -> RangeRequest {
    top(pfx, range_request::SortOrder::Ascend)
}

/// The newest key under `pfx` (etcd's `WithLastCreate`).
pub fn last_create(pfx: &[u8]) -> RangeRequest {
    top(pfx, range_request::SortOrder::Descend)
}

pub fn get(key: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

/// `create_revision(key) == rev`.
pub fn created_at(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(compare::TargetUnion::CreateRevision(rev)),
    }
}

pub fn op_put(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

pub fn op_range(r: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(r)),
    }
}

pub fn op_delete(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.to_vec(),
                ..Default::default()
            },
        )),
    }
}

/// The key-values of the `i`-th op response of a txn, if it was a range.
pub fn range_kvs(resp: &TxnResponse, i: usize) -> &[KeyValue] {
    match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(api::etcdserverpb::response_op::Response::ResponseRange(r)) => &r.kvs,
        _ => &[],
    }
}

pub fn header_rev(h: &Option<ResponseHeader>) -> i64 {
    h.as_ref().map(|h| h.revision).unwrap_or(0)
}

/// Runs `f` on drop unless disarmed: the clean-up a recipe does when its caller goes away
/// mid-wait (etcd's does it when the request context is cancelled). It runs as its own task.
pub struct OnCancel {
    cleanup: Option<Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>>,
}

impl OnCancel {
    pub fn new<F, Fut>(f: F) -> OnCancel
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        OnCancel {
            cleanup: Some(Box::new(move || Box::pin(f()))),
        }
    }

    pub fn disarm(mut self) {
        self.cleanup = None;
    }
}

impl Drop for OnCancel {
    fn drop(&mut self) {
        if let Some(f) = self.cleanup.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(f());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ranges_as_etcd_writes_them() {
        assert_eq!(prefix_end(b"lock/"), b"lock0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
        assert_eq!(watch_end(prefix_end(b"\xff")), Some(Vec::new()));
        assert_eq!(watch_end(prefix_end(b"x/")), Some(b"x0".to_vec()));
        assert_eq!(
            session_key(b"lock/", 0x694d_a222_c274_fb05),
            b"lock/694da222c274fb05"
        );
        assert_eq!(session_key(b"e/", 0x1a), b"e/1a");
        assert_eq!(session_key(b"e/", -0x1a), b"e/-1a");
        assert_eq!(session_key(b"e/", i64::MIN), b"e/-8000000000000000");
        assert_eq!(prefix(b"name"), b"name/");
    }
}
