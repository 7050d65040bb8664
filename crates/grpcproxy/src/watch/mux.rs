//! The proxy's watchers on the cluster, all carried by one upstream Watch stream, as clientv3
//! multiplexes a client's watchers.
//!
//! Each upstream watcher gets a proxy-wide id chosen here and sent as `watch_id` in its create
//! request (etcd 3.4+), so responses are routed by id without relying on the order of "created"
//! answers. The stream carries the `hasleader` metadata (clientv3's `WithRequireLeader`), so a
//! member without a leader refuses it and the proxy moves on to the next endpoint.
//!
//! When the stream breaks (member killed, connection lost, stream refused), the mux connects to
//! the next endpoint (with a capped backoff) and opens every registered watcher again from the
//! revision after the last one it received (`FeedSink::resume`): nothing is lost or repeated,
//! and a watcher whose revision was compacted meanwhile gets the cluster's compaction answer.
//!
//! The stream carries the credentials (`token`/`authorization` metadata) of the clients it serves
//! (see `groups`): the cluster checks their permissions when each upstream watcher is created, as
//! it would for a client watching directly.
//!
//! Progress requests: etcd 3.5 and Hearth answer one (watch id -1) only once every watcher of the
//! stream has been sent everything up to the revision they report, so such an answer moves every
//! created watcher's known revision forward (`FeedSink::on_progress_all`). etcd 3.4 answers at
//! once, possibly ahead of events not sent yet; on such a cluster (told by its version in
//! `Status`) the mux never asks, and `progress` reports false.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::etcdserverpb::auth_client::AuthClient;
use api::etcdserverpb::maintenance_client::MaintenanceClient;
use api::etcdserverpb::watch_client::WatchClient;
use api::etcdserverpb::watch_request::RequestUnion;
use api::etcdserverpb::{
    AuthStatusRequest, ResponseHeader, StatusRequest, WatchCancelRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, WatchResponse,
};
use tokio::sync::{mpsc, oneshot, Notify};
use tonic::metadata::MetadataMap;
use tonic::Streaming;

use crate::metrics::Metrics;
use crate::upstream::{is_auth_error, Upstream, DIAL_TIMEOUT};
use crate::watch::broadcast::{Commands, FeedId};

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Whoever consumes the responses of an upstream watcher.
pub trait FeedSink: Send + Sync {
    fn on_response(&self, id: FeedId, resp: WatchResponse);
    /// Every event up to `rev` has been sent on watcher `id` (an ordered progress answer).
    fn on_progress_all(&self, id: FeedId, rev: i64);
    /// The create request that opens `id` again where it stopped; None if it is gone.
    fn resume(&self, id: FeedId) -> Option<WatchCreateRequest>;
}

enum Cmd {
    Create(FeedId, Arc<dyn FeedSink>, WatchCreateRequest),
    Cancel(FeedId),
    Progress(oneshot::Sender<bool>),
    Stop,
}

pub struct WatchMux {
    tx: mpsc::UnboundedSender<Cmd>,
    next_id: AtomicI64,
    connected: AtomicBool,
    header: Mutex<ResponseHeader>,
    /// Notified on every (re)connection, for tests and health checks.
    pub connected_notify: Notify,
}

/// The commands of one feed sink: what it creates is routed back to it.
pub struct SinkCommands<'a> {
    pub mux: &'a WatchMux,
    pub sink: Arc<dyn FeedSink>,
}

impl Commands for SinkCommands<'_> {
    fn new_id(&self) -> FeedId {
        self.mux.new_id()
    }

    fn create(&self, id: FeedId, req: WatchCreateRequest) {
        self.mux.create_with(id, self.sink.clone(), req);
    }

    fn cancel(&self, id: FeedId) {
        self.mux.cancel(id);
    }
}

impl WatchMux {
    /// A mux whose stream carries no credentials.
    pub fn spawn(up: Arc<Upstream>, metrics: Arc<Metrics>) -> Arc<WatchMux> {
        WatchMux::spawn_as(up, metrics, MetadataMap::new())
    }

    /// A mux whose stream carries `auth` (a client's `token`/`authorization` metadata).
    pub fn spawn_as(up: Arc<Upstream>, metrics: Arc<Metrics>, auth: MetadataMap) -> Arc<WatchMux> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mux = Arc::new(WatchMux {
            tx,
            // 0 is etcd's "pick an id for me".
            next_id: AtomicI64::new(1),
            connected: AtomicBool::new(false),
            header: Mutex::new(ResponseHeader::default()),
            connected_notify: Notify::new(),
        });
        tokio::spawn(run(mux.clone(), up, metrics, auth, rx));
        mux
    }

    /// Closes the upstream stream and every watcher on it, for good.
    pub fn stop(&self) {
        let _ = self.tx.send(Cmd::Stop);
    }

    /// A proxy-wide id for a new upstream watcher.
    pub fn new_id(&self) -> FeedId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Closes upstream watcher `id`; nothing more of it reaches its sink.
    pub fn cancel(&self, id: FeedId) {
        let _ = self.tx.send(Cmd::Cancel(id));
    }

    /// Opens upstream watcher `id` with `req`; its responses go to `sink`.
    pub fn create_with(&self, id: FeedId, sink: Arc<dyn FeedSink>, req: WatchCreateRequest) {
        let _ = self.tx.send(Cmd::Create(id, sink, req));
    }

    /// Asks the cluster for an ordered progress answer; true once it came and was applied, false
    /// if the cluster cannot give one (etcd 3.4) or the stream broke.
    pub async fn progress(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Progress(tx)).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The last header the cluster sent on the watch stream.
    pub fn header(&self) -> ResponseHeader {
        *self.header.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a cluster of this version answers progress requests in order (3.5 and later).
fn ordered_progress(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (3, 5)
}

struct Session {
    req_tx: mpsc::UnboundedSender<WatchRequest>,
    stream: Streaming<WatchResponse>,
    ordered: bool,
    /// Creates sent and not answered yet, in order: a refused create (permission denied) is
    /// answered with watch id -1, and creates are answered in the order they were sent.
    creates: VecDeque<FeedId>,
}

async fn connect(
    up: &Upstream,
    ep: usize,
    auth: &MetadataMap,
    first: Vec<WatchRequest>,
) -> Result<Session, String> {
    let (url, ch) = up.endpoint(ep);
    let status = tokio::time::timeout(
        DIAL_TIMEOUT,
        MaintenanceClient::new(ch.clone()).status(tonic::Request::from_parts(
            auth.clone(),
            Default::default(),
            StatusRequest {},
        )),
    )
    .await
    .map_err(|_| format!("{url}: status timed out"))?;
    let ordered = match status {
        Ok(s) => {
            let s = s.into_inner();
            if s.leader == 0 {
                return Err(format!("{url}: member has no leader"));
            }
            ordered_progress(&s.version)
        }
        // etcd 3.5 (and Hearth) answer Status only to an authenticated client once auth is on;
        // such a member serves, and the cluster will judge each watcher's credentials itself.
        Err(s) if is_auth_error(&s) => true,
        Err(s) => return Err(format!("{url}: {s}")),
    };
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    for r in first {
        let _ = req_tx.send(r);
    }
    let mut req = tonic::Request::from_parts(
        auth.clone(),
        Default::default(),
        tokio_stream::wrappers::UnboundedReceiverStream::new(req_rx),
    );
    req.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let stream = tokio::time::timeout(
        DIAL_TIMEOUT,
        WatchClient::new(ch)
            .max_decoding_message_size(up.max_recv_bytes)
            .max_encoding_message_size(up.max_send_bytes)
            .watch(req),
    )
    .await
    .map_err(|_| format!("{url}: watch stream timed out"))?
    .map_err(|s| format!("{url}: {s}"))?
    .into_inner();
    Ok(Session {
        req_tx,
        stream,
        ordered,
        creates: VecDeque::new(),
    })
}

fn create_req(id: FeedId, mut c: WatchCreateRequest) -> WatchRequest {
    c.watch_id = id;
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(c)),
    }
}

fn progress_req() -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    }
}

async fn run(
    mux: Arc<WatchMux>,
    up: Arc<Upstream>,
    _metrics: Arc<Metrics>,
    auth: MetadataMap,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) {
    let mut registry: HashMap<FeedId, Arc<dyn FeedSink>> = HashMap::new();
    let mut ep = up.pinned();
    let mut backoff = BACKOFF_MIN;
    loop {
        // Every registered watcher again, from where it stopped; then a progress request, which
        // every cluster answers at once when idle, so the stream's headers come back even with
        // no watcher.
        let mut first = Vec::new();
        let mut creates = VecDeque::new();
        registry.retain(|id, sink| match sink.resume(*id) {
            Some(c) => {
                first.push(create_req(*id, c));
                creates.push_back(*id);
                true
            }
            None => false,
        });
        first.push(progress_req());
        match connect(&up, ep, &auth, first).await {
            Ok(mut s) => {
                s.creates = std::mem::take(&mut creates);
                tracing::info!(
                    endpoint = up.endpoint(ep).0,
                    watchers = registry.len(),
                    "upstream watch stream open"
                );
                mux.connected.store(true, Ordering::Release);
                mux.connected_notify.notify_waiters();
                backoff = BACKOFF_MIN;
                let ended = session(&mux, &up, &auth, ep, s, &mut registry, &mut rx).await;
                mux.connected.store(false, Ordering::Release);
                match ended {
                    Ended::Shutdown => return,
                    Ended::Broken(why) => {
                        tracing::warn!(
                            endpoint = up.endpoint(ep).0,
                            "upstream watch stream broke: {why}"
                        )
                    }
                }
            }
            Err(why) => tracing::debug!("cannot open an upstream watch stream: {why}"),
        }
        ep = (ep + 1) % up.len();
        // Meanwhile, commands still change what will be opened on the next stream.
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                cmd = rx.recv() => match cmd {
                    None | Some(Cmd::Stop) => return,
                    Some(Cmd::Create(id, sink, _)) => { registry.insert(id, sink); }
                    Some(Cmd::Cancel(id)) => { registry.remove(&id); }
                    Some(Cmd::Progress(w)) => { let _ = w.send(false); }
                }
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

enum Ended {
    Shutdown,
    Broken(String),
}

/// How often the member carrying the stream is asked whether it still has a leader (Hearth and
/// etcd 3.4 do not end a watch stream when their member loses its leader).
const LEADER_CHECK: Duration = Duration::from_secs(2);

/// Resolves when the member behind endpoint `ep` has had no leader (or not answered) twice in a
/// row. Also notes when the cluster has auth enabled (`AuthStatus`, which etcd 3.4 lacks), so the
/// cache stops answering within one check of an `auth enable` made behind the proxy's back.
async fn watchdog(up: Arc<Upstream>, ep: usize, auth: MetadataMap) -> String {
    let mut bad = 0;
    loop {
        tokio::time::sleep(LEADER_CHECK).await;
        let (url, ch) = up.endpoint(ep);
        if !up.auth_seen() {
            let st = tokio::time::timeout(
                DIAL_TIMEOUT,
                AuthClient::new(ch.clone()).auth_status(AuthStatusRequest {}),
            )
            .await;
            let enabled = match st {
                Ok(Ok(st)) => st.get_ref().enabled,
                Ok(Err(s)) => is_auth_error(&s),
                Err(_) => false,
            };
            if enabled && up.note_auth() {
                tracing::info!("the cluster has auth enabled: cached answers are no longer served");
            }
        }
        let r = tokio::time::timeout(
            DIAL_TIMEOUT,
            MaintenanceClient::new(ch).status(tonic::Request::from_parts(
                auth.clone(),
                Default::default(),
                StatusRequest {},
            )),
        )
        .await;
        match r {
            Ok(Ok(s)) if s.get_ref().leader != 0 => bad = 0,
            // It answers (auth refuses an anonymous or expired token's Status).
            Ok(Err(s)) if is_auth_error(&s) => bad = 0,
            _ => bad += 1,
        }
        if bad >= 2 {
            return format!("{url} has no leader or does not answer");
        }
    }
}

async fn session(
    mux: &WatchMux,
    up: &Arc<Upstream>,
    auth: &MetadataMap,
    ep: usize,
    mut s: Session,
    registry: &mut HashMap<FeedId, Arc<dyn FeedSink>>,
    rx: &mut mpsc::UnboundedReceiver<Cmd>,
) -> Ended {
    let dog = watchdog(up.clone(), ep, auth.clone());
    tokio::pin!(dog);
    // The connection's own progress request (see `run`) is the first in flight.
    let mut in_flight: Option<Vec<oneshot::Sender<bool>>> = Some(Vec::new());
    let mut waiting: Vec<oneshot::Sender<bool>> = Vec::new();
    loop {
        tokio::select! {
            why = &mut dog => return Ended::Broken(why),
            cmd = rx.recv() => match cmd {
                None | Some(Cmd::Stop) => return Ended::Shutdown,
                Some(Cmd::Create(id, sink, c)) => {
                    registry.insert(id, sink);
                    s.creates.push_back(id);
                    let _ = s.req_tx.send(create_req(id, c));
                }
                Some(Cmd::Cancel(id)) => {
                    if registry.remove(&id).is_some() {
                        let _ = s.req_tx.send(WatchRequest {
                            request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id: id })),
                        });
                    }
                }
                Some(Cmd::Progress(w)) => {
                    if !s.ordered {
                        let _ = w.send(false);
                    } else if in_flight.is_some() {
                        waiting.push(w);
                    } else {
                        in_flight = Some(vec![w]);
                        let _ = s.req_tx.send(progress_req());
                    }
                }
            },
            msg = s.stream.message() => {
                let r = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return Ended::Broken("stream ended".into()),
                    Err(e) => return Ended::Broken(e.to_string()),
                };
                if let Some(h) = &r.header {
                    *mux.header.lock().unwrap_or_else(|e| e.into_inner()) = *h;
                    // Clients are sent this revision (or told of it): the cache must not answer
                    // from anything older.
                    up.observe(h.revision);
                }
                if r.watch_id == -1 && !r.created && !r.canceled {
                    let rev = r.header.as_ref().map_or(0, |h| h.revision);
                    if s.ordered {
                        for (id, sink) in registry.iter() {
                            sink.on_progress_all(*id, rev);
                        }
                    }
                    for w in in_flight.take().unwrap_or_default() {
                        let _ = w.send(s.ordered);
                    }
                    if !waiting.is_empty() {
                        in_flight = Some(std::mem::take(&mut waiting));
                        let _ = s.req_tx.send(progress_req());
                    }
                    continue;
                }
                let mut r = r;
                if r.created {
                    let asked = s.creates.pop_front();
                    if r.watch_id == -1 {
                        match asked {
                            Some(id) => r.watch_id = id,
                            None => continue,
                        }
                    }
                }
                let id = r.watch_id;
                let canceled = r.canceled;
                if let Some(sink) = registry.get(&id) {
                    sink.on_response(id, r);
                }
                if canceled {
                    registry.remove(&id);
                }
            }
        }
    }
}
