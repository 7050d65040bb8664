//! The KV service of the proxy: namespace, then the serializable-read cache, then the cluster.
//!
//! Writes invalidate the cache entries of the keys they touch once their answer arrives (at the
//! answer's revision); the invalidation watch (`CacheWatch`) does the same for every write in
//! the cluster. With `--experimental-serializable-ordering`, a serializable read answered by an
//! endpoint behind a revision the proxy has already passed on is asked of the other endpoints,
//! and fails with etcd's `ErrNoGreaterRev` if none is far enough (etcd's `ordering` KV).
//!
//! Auth: a cached answer cannot be checked against the permissions of whoever asks next, so the
//! cache only serves (and is only filled by) requests without credentials, and only while the
//! proxy has not seen the cluster with auth enabled (`Upstream::auth_seen`: a token, an auth
//! error, `AuthStatus`). Once it has, the cache is emptied and stays off; every read goes to the
//! cluster with the client's token, as through etcd's proxy.
//!
//! RangeStream is refused with `Unimplemented`, as etcd 3.7's proxy refuses it.

use std::sync::{Arc, Mutex};

use api::etcdserverpb::kv_client::KvClient;
use api::etcdserverpb::kv_server::Kv;
use api::etcdserverpb::{
    request_op, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RangeStreamResponse, RequestOp,
    TxnRequest, TxnResponse, WatchCreateRequest, WatchResponse,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::namespace::Namespace;
use crate::upstream::{client_status, forward, has_token, is_auth_error, Retry, Upstream};
use crate::watch::broadcast::FeedId;
use crate::watch::mux::{FeedSink, WatchMux};

/// etcd 3.7's answer to a RangeStream through its proxy.
const RANGE_STREAM_UNSUPPORTED: &str = "RangeStream is not supported by the gRPC proxy";

/// etcd's `ordering.ErrNoGreaterRev`.
pub const NO_GREATER_REV: &str =
    "etcdclient: no cluster members have a revision higher than the previously received revision";
/// etcd's `rpctypes.ErrEmptyKey`.
const EMPTY_KEY: &str = "etcdserver: key is not provided";

pub struct KvProxy {
    pub up: Arc<Upstream>,
    pub ns: Namespace,
    pub cache: Option<Arc<Cache>>,
    pub metrics: Arc<Metrics>,
    pub ordering: bool,
}

fn client(up: &Upstream, ch: Channel) -> KvClient<Channel> {
    KvClient::new(ch)
        .max_decoding_message_size(up.max_recv_bytes)
        .max_encoding_message_size(up.max_send_bytes)
}

fn rev_of(h: &Option<api::etcdserverpb::ResponseHeader>) -> i64 {
    h.as_ref().map_or(0, |h| h.revision)
}

/// Whether a txn only reads (then it may be sent again elsewhere).
fn read_only(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(request_op::Request::RequestRange(_)) | None => true,
            Some(request_op::Request::RequestTxn(t)) => read_only(t),
            _ => false,
        })
}

/// Every key range a txn may write, in either branch.
fn written(ops: &[RequestOp], out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) => out.push((p.key.clone(), Vec::new())),
            Some(request_op::Request::RequestDeleteRange(d)) => {
                out.push((d.key.clone(), d.range_end.clone()))
            }
            Some(request_op::Request::RequestTxn(t)) => {
                written(&t.success, out);
                written(&t.failure, out);
            }
            _ => {}
        }
    }
}

impl KvProxy {
    fn empty_key(&self, key: &[u8]) -> Result<(), Status> {
        // etcd's namespace wrapper refuses an empty key before prefixing it; without a namespace
        // the cluster answers for itself.
        if !self.ns.is_empty() && key.is_empty() {
            return Err(Status::invalid_argument(EMPTY_KEY));
        }
        Ok(())
    }

    fn invalidate(&self, ranges: &[(Vec<u8>, Vec<u8>)], rev: i64) {
        if let Some(c) = &self.cache {
            for (k, e) in ranges {
                c.invalidate(k, e, rev);
            }
            self.metrics.cache_keys.set(c.len() as f64);
        }
    }

    /// The cache, if this request may use it (see the module doc).
    fn usable_cache(&self, md: &tonic::metadata::MetadataMap) -> Option<&Arc<Cache>> {
        let c = self.cache.as_ref()?;
        if has_token(md) && self.up.note_auth() {
            tracing::info!("a client sent an auth token: cached answers are no longer served");
        }
        if self.up.auth_seen() {
            if !c.is_empty() {
                c.reset(self.up.seen());
                self.metrics.cache_keys.set(0.0);
            }
            return None;
        }
        Some(c)
    }

    /// Notes what an error from the cluster says about auth.
    fn seen_error(&self, s: &Status) {
        if is_auth_error(s) && self.up.note_auth() {
            tracing::info!("the cluster has auth enabled: cached answers are no longer served");
        }
    }

    async fn range_upstream(
        &self,
        md: &tonic::metadata::MetadataMap,
        r: &RangeRequest,
    ) -> Result<RangeResponse, Status> {
        let up = &self.up;
        if !(self.ordering && r.serializable) {
            return up
                .call(Retry::Safe, |ch| {
                    let req = forward(md, r.clone());
                    async move { client(up, ch).range(req).await.map(Response::into_inner) }
                })
                .await;
        }
        // Ordering: the first endpoint that is not behind what clients were already sent.
        let first = up.pinned();
        let mut last_err = None;
        for n in 0..up.len() {
            let (_, ch) = up.endpoint(first + n);
            match client(up, ch).range(forward(md, r.clone())).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    if rev_of(&resp.header) >= up.seen() {
                        up.pin(first + n);
                        return Ok(resp);
                    }
                }
                Err(s) => last_err = Some(s),
            }
        }
        match last_err {
            Some(s) if up.len() == 1 => Err(s),
            _ => Err(Status::unknown(NO_GREATER_REV)),
        }
    }
}

#[tonic::async_trait]
impl Kv for KvProxy {
    type RangeStreamStream = futures::stream::Empty<Result<RangeStreamResponse, Status>>;

    async fn range_stream(
        &self,
        _: Request<RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(Status::unimplemented(RANGE_STREAM_UNSUPPORTED))
    }

    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let md = req.metadata().clone();
        let mut r = req.into_inner();
        self.empty_key(&r.key)?;
        self.ns.range_request(&mut r);
        let cache = self.usable_cache(&md);
        let cache_key = cache.and_then(|_| Cache::key_of(&r));
        if let (Some(c), Some(k), true) = (cache, &cache_key, r.serializable) {
            if let Some(mut hit) = c.get(k, self.up.seen()) {
                self.metrics.cache_hits.inc();
                self.up.observe(rev_of(&hit.header));
                self.ns.range_response(&mut hit);
                return Ok(Response::new(hit));
            }
            self.metrics.cache_misses.inc();
        }
        let mut resp = self.range_upstream(&md, &r).await.map_err(|s| {
            self.seen_error(&s);
            client_status(&self.up, s)
        })?;
        self.up.observe(rev_of(&resp.header));
        if let (Some(c), Some(k)) = (self.usable_cache(&md), cache_key) {
            c.insert(k, &r.key, &r.range_end, &resp);
            self.metrics.cache_keys.set(c.len() as f64);
        }
        self.ns.range_response(&mut resp);
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let md = req.metadata().clone();
        let mut r = req.into_inner();
        self.empty_key(&r.key)?;
        self.ns.put_request(&mut r);
        let up = &self.up;
        let mut resp = up
            .call(Retry::Unsent, |ch| {
                let req = forward(&md, r.clone());
                async move { client(up, ch).put(req).await.map(Response::into_inner) }
            })
            .await
            .map_err(|s| client_status(up, s))?;
        let rev = rev_of(&resp.header);
        self.invalidate(&[(r.key.clone(), Vec::new())], rev);
        up.observe(rev);
        self.ns.put_response(&mut resp);
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let md = req.metadata().clone();
        let mut r = req.into_inner();
        self.empty_key(&r.key)?;
        self.ns.delete_request(&mut r);
        let up = &self.up;
        let mut resp = up
            .call(Retry::Unsent, |ch| {
                let req = forward(&md, r.clone());
                async move {
                    client(up, ch)
                        .delete_range(req)
                        .await
                        .map(Response::into_inner)
                }
            })
            .await
            .map_err(|s| client_status(up, s))?;
        let rev = rev_of(&resp.header);
        self.invalidate(&[(r.key.clone(), r.range_end.clone())], rev);
        up.observe(rev);
        self.ns.delete_response(&mut resp);
        Ok(Response::new(resp))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let md = req.metadata().clone();
        let mut r = req.into_inner();
        self.ns.txn_request(&mut r);
        let retry = if read_only(&r) {
            Retry::Safe
        } else {
            Retry::Unsent
        };
        let up = &self.up;
        let mut resp = up
            .call(retry, |ch| {
                let req = forward(&md, r.clone());
                async move { client(up, ch).txn(req).await.map(Response::into_inner) }
            })
            .await
            .map_err(|s| client_status(up, s))?;
        let rev = rev_of(&resp.header);
        let mut w = Vec::new();
        written(&r.success, &mut w);
        written(&r.failure, &mut w);
        self.invalidate(&w, rev);
        up.observe(rev);
        self.ns.txn_response(&mut resp);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let md = req.metadata().clone();
        let r = req.into_inner();
        let up = &self.up;
        let resp = up
            .call(Retry::Unsent, |ch| {
                let req = forward(&md, r);
                async move { client(up, ch).compact(req).await.map(Response::into_inner) }
            })
            .await
            .map_err(|s| client_status(up, s))?;
        up.observe(rev_of(&resp.header));
        Ok(Response::new(resp))
    }
}

/// The cache's invalidation watch: one upstream watcher over the whole key space, without
/// `prev_kv`. Every event drops the cache entries of its key; the revision it has reached is the
/// cache's `through`. If it cannot resume (its revision was compacted while the proxy was cut
/// off), the cache is emptied and the watch starts again from the current revision.
pub struct CacheWatch {
    cache: Arc<Cache>,
    up: Arc<Upstream>,
    mux: Arc<WatchMux>,
    me: std::sync::Weak<CacheWatch>,
    state: Mutex<CacheWatchState>,
}

struct CacheWatchState {
    id: FeedId,
    start: i64,
    created: bool,
}

impl CacheWatch {
    pub fn start(cache: Arc<Cache>, up: Arc<Upstream>, mux: Arc<WatchMux>) -> Arc<CacheWatch> {
        let w = Arc::new_cyclic(|me| CacheWatch {
            cache,
            up,
            mux: mux.clone(),
            me: me.clone(),
            state: Mutex::new(CacheWatchState {
                id: mux.new_id(),
                start: 0,
                created: false,
            }),
        });
        let id = w.lock().id;
        w.open(id, 0);
        w
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheWatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn request(start: i64) -> WatchCreateRequest {
        WatchCreateRequest {
            key: vec![0],
            range_end: vec![0],
            start_revision: start,
            progress_notify: true,
            ..Default::default()
        }
    }

    fn open(&self, id: FeedId, start: i64) {
        if let Some(me) = self.me.upgrade() {
            self.mux.create_with(id, me, Self::request(start));
        }
    }
}

/// Whether a watch cancel reason is an auth refusal (etcd words it as a gRPC error or bare).
fn is_auth_reason(reason: &str) -> bool {
    [
        "permission denied",
        "user name is empty",
        "invalid auth token",
    ]
    .iter()
    .any(|r| reason.contains(r))
}

impl FeedSink for CacheWatch {
    fn on_response(&self, id: FeedId, resp: WatchResponse) {
        let mut st = self.lock();
        if id != st.id {
            return;
        }
        let rev = rev_of(&resp.header);
        if resp.canceled {
            self.cache.reset(rev.max(resp.compact_revision));
            if resp.compact_revision == 0 && is_auth_reason(&resp.cancel_reason) {
                // The cluster has auth enabled: the cache is off for good (see the module doc).
                if self.up.note_auth() {
                    tracing::info!("the cluster refused the cache's watch ({}): cached answers are no longer served", resp.cancel_reason);
                }
                st.created = false;
                return;
            }
            // Lost events: start over from now.
            st.id = self.mux.new_id();
            st.start = 0;
            st.created = false;
            let id = st.id;
            drop(st);
            self.open(id, 0);
            return;
        }
        if resp.created {
            if !st.created {
                st.created = true;
                let through = if st.start == 0 { rev } else { st.start - 1 };
                self.cache.advance(through);
            }
            return;
        }
        let mut last = rev;
        if !resp.events.is_empty() {
            last = 0;
            for ev in &resp.events {
                if let Some(kv) = &ev.kv {
                    self.cache.invalidate(&kv.key, &[], kv.mod_revision);
                    last = last.max(kv.mod_revision);
                }
            }
        }
        self.cache.advance(last);
        st.start = last + 1;
    }

    fn on_progress_all(&self, id: FeedId, rev: i64) {
        let st = self.lock();
        if id == st.id && st.created {
            self.cache.advance(rev);
        }
    }

    fn resume(&self, id: FeedId) -> Option<WatchCreateRequest> {
        let mut st = self.lock();
        if id != st.id || self.up.auth_seen() {
            return None;
        }
        if st.created {
            st.start = self.cache.through() + 1;
        }
        Some(Self::request(st.start))
    }
}
