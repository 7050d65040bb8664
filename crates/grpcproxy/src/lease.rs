//! The Lease service of the proxy, with keep-alive coalescing.
//!
//! Every client keep-alive stream of the proxy feeds one upstream `LeaseKeepAlive` stream (the
//! protocol is one request, one answer, per lease id, so one stream carries every lease). A
//! keep-alive for a lease that already has one in flight upstream is not sent again: it waits for
//! that one's answer, which goes to every client that asked meanwhile. A thousand clients keeping
//! one lease alive cost the cluster one keep-alive per round trip, not a thousand.
//!
//! Tradeoff: a client whose keep-alive joined one in flight is told the TTL the cluster set when
//! it handled that keep-alive, which may be up to one round trip before the client asked; the
//! lease then expires at most that much earlier than the client computes, the same uncertainty
//! network latency already gives it.
//!
//! Auth: keep-alives are coalesced per credentials. Each distinct client token has its own hub and
//! upstream stream carrying that token (the cluster checks a keep-alive against the permissions
//! of the stream's user: write access to the lease's keys), so one user's keep-alive never
//! renews a lease for another who may not. A refusal ends the upstream stream, as it ends a
//! direct client's; the clients waiting on it get the cluster's error.
//!
//! When the upstream stream breaks, the keep-alives in flight are sent again on the next endpoint
//! (a keep-alive is idempotent). An answer a client stream is too slow to take is dropped for
//! that client (it asks again), never waited on.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use api::etcdserverpb::lease_client::LeaseClient;
use api::etcdserverpb::lease_server::Lease;
use api::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::namespace::Namespace;
use crate::upstream::{
    auth_metadata, client_status, credentials_key, forward, Retry, Upstream, DIAL_TIMEOUT,
};

/// Answers a client keep-alive stream may have waiting.
const CLIENT_QUEUE: usize = 1024;

type Reply = mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>;

/// The proxy-wide keep-alive coalescer.
pub struct KeepAlives {
    tx: mpsc::UnboundedSender<(i64, Reply)>,
}

impl KeepAlives {
    /// A hub whose upstream stream carries `auth` (a client's credentials, or none).
    pub fn spawn(up: Arc<Upstream>, metrics: Arc<Metrics>, auth: MetadataMap) -> Arc<KeepAlives> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(keepalive_loop(up, metrics, auth, rx));
        Arc::new(KeepAlives { tx })
    }

    fn ask(&self, id: i64, reply: Reply) {
        let _ = self.tx.send((id, reply));
    }
}

/// One keep-alive hub per distinct client credentials (see the module doc); a hub and its
/// upstream stream end with the last client stream using it.
pub struct KeepAliveHubs {
    up: Arc<Upstream>,
    metrics: Arc<Metrics>,
    hubs: Mutex<HashMap<Option<Vec<u8>>, Weak<KeepAlives>>>,
}

impl KeepAliveHubs {
    pub fn new(up: Arc<Upstream>, metrics: Arc<Metrics>) -> KeepAliveHubs {
        KeepAliveHubs {
            up,
            metrics,
            hubs: Mutex::new(HashMap::new()),
        }
    }

    /// The hub for a client stream opened with metadata `md`.
    pub fn hub(&self, md: &MetadataMap) -> Arc<KeepAlives> {
        let key = credentials_key(md);
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        hubs.retain(|_, h| h.strong_count() > 0);
        if let Some(h) = hubs.get(&key).and_then(Weak::upgrade) {
            return h;
        }
        let h = KeepAlives::spawn(self.up.clone(), self.metrics.clone(), auth_metadata(md));
        hubs.insert(key, Arc::downgrade(&h));
        h
    }
}

async fn keepalive_loop(
    up: Arc<Upstream>,
    metrics: Arc<Metrics>,
    auth: MetadataMap,
    mut rx: mpsc::UnboundedReceiver<(i64, Reply)>,
) {
    let mut pending: HashMap<i64, Vec<Reply>> = HashMap::new();
    let mut ep = up.pinned();
    let mut backoff = Duration::from_millis(50);
    loop {
        // Wait for something to keep alive before opening a stream.
        if pending.is_empty() {
            match rx.recv().await {
                Some((id, r)) => pending.entry(id).or_default().push(r),
                None => return,
            }
        }
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        for id in pending.keys() {
            let _ = req_tx.send(LeaseKeepAliveRequest { id: *id });
        }
        let (url, ch) = up.endpoint(ep);
        let opened = tokio::time::timeout(
            DIAL_TIMEOUT,
            client(&up, ch).lease_keep_alive(Request::from_parts(
                auth.clone(),
                Default::default(),
                tokio_stream::wrappers::UnboundedReceiverStream::new(req_rx),
            )),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(s)) => {
                tracing::debug!(
                    endpoint = url,
                    "cannot open an upstream keep-alive stream: {s}"
                );
                ep = (ep + 1) % up.len();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(_) => {
                ep = (ep + 1) % up.len();
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        loop {
            tokio::select! {
                ask = rx.recv() => match ask {
                    None => return,
                    Some((id, r)) => {
                        let waiting = pending.entry(id).or_default();
                        if waiting.is_empty() {
                            let _ = req_tx.send(LeaseKeepAliveRequest { id });
                        } else {
                            metrics.keepalives_coalescing.inc();
                        }
                        waiting.push(r);
                    }
                },
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        if let Some(h) = &resp.header {
                            up.observe(h.revision);
                        }
                        for r in pending.remove(&resp.id).unwrap_or_default() {
                            let _ = r.try_send(Ok(resp));
                        }
                    }
                    Err(s) if refusal(&s) => {
                        // The cluster refused a keep-alive (auth): as for a direct client, the
                        // stream ends with its error for whoever was waiting on it.
                        tracing::debug!(endpoint = url, "upstream keep-alive refused: {s}");
                        for (_, rs) in pending.drain() {
                            for r in rs {
                                let _ = r.try_send(Err(s.clone()));
                            }
                        }
                        break;
                    }
                    Ok(None) | Err(_) => {
                        tracing::debug!(endpoint = url, "upstream keep-alive stream ended");
                        ep = (ep + 1) % up.len();
                        break;
                    }
                }
            }
        }
    }
}

/// An error that the next endpoint would give as well.
fn refusal(s: &Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::PermissionDenied
            | tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
    ) || crate::upstream::is_auth_error(s)
}

fn client(up: &Upstream, ch: Channel) -> LeaseClient<Channel> {
    LeaseClient::new(ch)
        .max_decoding_message_size(up.max_recv_bytes)
        .max_encoding_message_size(up.max_send_bytes)
}

pub struct LeaseProxy {
    pub up: Arc<Upstream>,
    pub ns: Namespace,
    pub keepalives: Arc<KeepAliveHubs>,
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

macro_rules! unary {
    ($self:ident, $req:ident, $retry:expr, $method:ident) => {{
        let md = $req.metadata().clone();
        let r = $req.into_inner();
        let up = &$self.up;
        let resp = up
            .call($retry, |ch| {
                let req = forward(&md, r.clone());
                async move { client(up, ch).$method(req).await.map(Response::into_inner) }
            })
            .await
            .map_err(|s| client_status(up, s))?;
        if let Some(h) = &resp.header {
            up.observe(h.revision);
        }
        resp
    }};
}

#[tonic::async_trait]
impl Lease for LeaseProxy {
    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        Ok(Response::new(unary!(self, req, Retry::Unsent, lease_grant)))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        Ok(Response::new(unary!(
            self,
            req,
            Retry::Unsent,
            lease_revoke
        )))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let mut resp = unary!(self, req, Retry::Safe, lease_time_to_live);
        resp.keys = self.ns.lease_keys(std::mem::take(&mut resp.keys));
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        Ok(Response::new(unary!(self, req, Retry::Safe, lease_leases)))
    }

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let hub = self.keepalives.hub(req.metadata());
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    msg = inbound.message() => match msg {
                        Ok(Some(r)) => hub.ask(r.id, tx.clone()),
                        // Answers still due go out; the stream ends when the client leaves.
                        Ok(None) | Err(_) => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
