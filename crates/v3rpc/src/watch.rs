//! The Watch service: one bidirectional gRPC stream carries many watchers, with etcd's
//! `v3rpc/watch.go` behaviour on the wire.
//!
//! # Design
//!
//! Each gRPC stream gets one [`mvcc::WatchStream`] and three parts:
//!
//! * the **outbox** ([`Outbox`]), the stream's one ordered queue. The store pushes event,
//!   progress and compaction responses into it (it is the stream's [`mvcc::WatchSink`]; a push
//!   never blocks), and the receive loop pushes control responses (created, canceled, progress
//!   replies). A watcher's "created" response is pushed by the store's `on_created` callback
//!   under the store's watchers lock, so it is in the queue before any of that watcher's events;
//!   etcd needs a second channel and a "pending until announced" buffer for the same guarantee.
//! * the **receive loop** (its own task): reads requests and creates, cancels and asks for
//!   progress. A client that half-closes its side keeps its watchers (etcd does the same): the
//!   stream ends when the client goes away or the server stops.
//! * the **send loop** (the stream's main task): takes responses from the outbox, fills `prev_kv`
//!   (a read of the key at the revision before the event, as etcd does in its server layer),
//!   builds the header, splits a response into fragments for watchers that asked, and hands
//!   them to tonic through a hand-over bounded in bytes (see [`outgoing`]), so it only runs as
//!   fast as the client reads. It also sends periodic progress notifications and retries a deferred progress
//!   request. When it ends (client gone, receive error, member stopping: then the client gets
//!   etcd's `Unavailable` "etcdserver: server stopped") it closes the store stream (every
//!   watcher of the stream is removed at once) and stops the receive loop. A request that does
//!   not decode (larger than the receive limit, say) ends the stream with grpc-go's status for it.
//!   The response headers go out when the stream opens; etcd (grpc-go) sends them with the first
//!   response, so an error before any response reaches an etcd client when it opens the stream and a
//!   Hearth client at its first message, with the same status.
//!
//! # Guarantees
//!
//! Ordering, no gaps, no duplicates, whole revisions per response and resumption from a
//! revision come from the store (see `mvcc::watchable_store`); this layer keeps the order of
//! the outbox, sends every event it takes out, and only splits a response when the watcher
//! asked for fragments. A cancel removes the watcher from the store first and then drops its
//! responses still in the outbox, so nothing of a watcher follows its "canceled" response.
//!
//! # Progress requests
//!
//! etcd 3.4 answers a progress request at once with watch id -1 and the current revision, even
//! if a watcher is still catching up, so the client may see a progress revision ahead of events
//! it has not received yet. etcd 3.5 sends it only when every watcher of the stream is synced
//! (and otherwise drops the request). Hearth sends it when every watcher is synced, and if some
//! are not, it keeps the request and sends the reply as soon as they are (checked every
//! [`DEFERRED_PROGRESS_RETRY`]), so a client never waits forever. A stream without watchers is
//! answered at once, as etcd 3.4 does (etcd 3.5 sends nothing; clients ignore it either way).
//!
//! # Bounds (per stream)
//!
//! * Store responses in the outbox: at most [`MAX_QUEUED_RESPONSES`] and, past the first,
//!   at most [`MAX_QUEUED_BYTES`] of event data (keys and values). When full, the store makes
//!   the watcher a victim holding its one undelivered batch, and retries it later: a slow
//!   client never blocks writes or other streams, and costs at most these bounds plus one
//!   batch per watcher. A batch is one revision (live) or at most 2 MiB of whole revisions
//!   (catch-up; `mvcc::WatchConfig`), and batches share their events, so the 1000 watchers of
//!   a stalled stream on one prefix hold one copy of each event between them.
//! * The send loop builds one response at a time: `prev_kv` is read and the events copied
//!   only for the response being sent.
//! * Control responses: at most [`MAX_QUEUED_CONTROLS`]; past that the receive loop stops
//!   reading requests until the send loop has caught up (etcd's `ctrlStreamBufLen`), so a
//!   client flooding create requests is held back by gRPC flow control.
//! * [`OUTGOING_BYTES`] (or one response) handed to tonic, and whatever HTTP/2 flow control
//!   lets hyper buffer.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use api::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, watch_server::Watch,
    ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse,
};
use api::mvccpb::{event::EventType, Event};
use futures::Stream;
use mvcc::{RangeOptions, WatchFilter, WatchId, WatchSink, INVALID_WATCH_ID};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tonic::{Request, Response, Status, Streaming};

use rpctypes::ServerError;

use crate::auth::Ctx;
use crate::{
    metrics, AuthGetter, ClientConfig, KvGetter, RaftStatusGetter, GRPC_OVERHEAD_BYTES,
    MIN_WATCH_PROGRESS_NOTIFY_INTERVAL,
};

/// Store responses a stream may hold before its watchers become victims.
pub const MAX_QUEUED_RESPONSES: usize = 1024;
/// Event bytes (keys and values) a stream may hold before its watchers become victims; the
/// first response is always accepted, so a single large revision still goes through.
pub const MAX_QUEUED_BYTES: usize = 4 << 20;
/// Control responses a stream may hold before its receive loop waits (etcd's 128).
pub const MAX_QUEUED_CONTROLS: usize = 128;
/// Encoded responses handed to tonic and not yet taken by it (see [`outgoing`]).
pub const OUTGOING_BYTES: usize = 256 << 10;
/// How often an unanswered progress request is tried again.
pub const DEFERRED_PROGRESS_RETRY: Duration = Duration::from_millis(50);

/// What one event costs in the outbox bound, besides its key and value.
const EVENT_OVERHEAD_BYTES: usize = 64;

/// What a watch stream needs from the member: the store, the header's ids and the auth store.
trait Member: KvGetter + RaftStatusGetter + AuthGetter {}

impl<T: KvGetter + RaftStatusGetter + AuthGetter> Member for T {}

pub struct WatchService<S> {
    srv: Arc<S>,
    /// The largest response before a watcher that asked for fragments gets it in pieces.
    max_response_bytes: usize,
    /// etcd's `--experimental-watch-progress-notify-interval` (0 keeps the default).
    progress_notify_interval: Duration,
    /// Turns true when the member stops: every stream then ends (a graceful shutdown waits for
    /// open streams, and a watch stream never ends on its own).
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl<S> WatchService<S> {
    pub fn new(
        srv: Arc<S>,
        cfg: &ClientConfig,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> WatchService<S> {
        WatchService {
            srv,
            max_response_bytes: cfg.max_request_bytes + GRPC_OVERHEAD_BYTES,
            progress_notify_interval: cfg.watch_progress_notify_interval,
            shutdown,
        }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<S: KvGetter + RaftStatusGetter + AuthGetter> Watch for WatchService<S> {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let cx = Ctx::of(&req);
        let inbound = req.into_inner();
        let (tx, rx) = outgoing();
        let limits = Limits {
            max_response_bytes: self.max_response_bytes,
            progress_notify_interval: self.progress_notify_interval,
        };
        tokio::spawn(serve(
            self.srv.clone(),
            cx,
            limits,
            inbound,
            tx,
            self.shutdown.clone(),
        ));
        Ok(Response::new(Box::pin(rx)))
    }
}

/// A stream's configuration.
#[derive(Clone, Copy)]
struct Limits {
    max_response_bytes: usize,
    progress_notify_interval: Duration,
}

/// The hand-over from the send loop to tonic: responses the send loop built and tonic has not
/// taken yet, at most [`OUTGOING_BYTES`] of them (encoded), or one response if it is larger.
/// Several small responses waiting together are encoded by tonic into one HTTP/2 DATA frame,
/// which is what keeps a stream of tiny watch responses cheap on the wire; with one response
/// at a time every response would be its own frame, and current HTTP/2 clients end a
/// connection that buffers too many tiny frames unread ("too_many_data_frames").
fn outgoing() -> (Outgoing, Incoming) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(OUTGOING_BYTES));
    (
        Outgoing {
            tx,
            budget: budget.clone(),
        },
        Incoming { rx, budget },
    )
}

type Outbound = Result<WatchResponse, Status>;

struct Outgoing {
    tx: mpsc::UnboundedSender<(Outbound, u32)>,
    budget: Arc<Semaphore>,
}

impl Outgoing {
    /// Waits for room, then hands `r` over. False once the client is gone.
    async fn send(&self, r: Outbound) -> bool {
        let cost = match &r {
            Ok(r) => r.encoded_len().clamp(1, OUTGOING_BYTES),
            Err(_) => 0,
        };
        let permit = tokio::select! {
            p = self.budget.acquire_many(cost as u32) => match p {
                Ok(p) => p,
                Err(_) => return false,
            },
            _ = self.tx.closed() => return false,
        };
        permit.forget();
        self.tx.send((r, cost as u32)).is_ok()
    }

    /// Hands `r` over without waiting for room (the stream's last word).
    fn send_now(&self, r: Outbound) {
        let _ = self.tx.send((r, 0));
    }

    async fn closed(&self) {
        self.tx.closed().await
    }
}

/// The response stream tonic reads.
struct Incoming {
    rx: mpsc::UnboundedReceiver<(Outbound, u32)>,
    budget: Arc<Semaphore>,
}

impl Stream for Incoming {
    type Item = Outbound;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Outbound>> {
        let polled = self.rx.poll_recv(cx);
        if let std::task::Poll::Ready(Some((_, cost))) = &polled {
            self.budget.add_permits(*cost as usize);
        }
        polled.map(|o| o.map(|(r, _)| r))
    }
}

/// One queued response.
enum Item {
    /// From the store: events, a progress notification or a compaction.
    Store(mvcc::WatchResponse),
    /// Built by the receive loop: created, canceled, progress replies.
    Control(WatchResponse),
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    store_responses: usize,
    store_bytes: usize,
    controls: usize,
    /// Set when the stream ends; later pushes are dropped.
    closed: bool,
}

/// The stream's ordered queue (see the module doc).
#[derive(Default)]
struct Outbox {
    queue: Mutex<Queue>,
    /// Something was queued (or the stream wants the send loop's attention).
    ready: Notify,
    /// A control response left the queue.
    room: Notify,
}

fn response_bytes(r: &mvcc::WatchResponse) -> usize {
    r.events
        .iter()
        .map(|e| EVENT_OVERHEAD_BYTES + e.kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len()))
        .sum()
}

fn pending_events(r: &mvcc::WatchResponse) -> f64 {
    r.events.len() as f64
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push_control(&self, r: WatchResponse) {
        {
            let mut q = self.lock();
            if q.closed {
                return;
            }
            q.controls += 1;
            q.items.push_back(Item::Control(r));
        }
        self.ready.notify_one();
    }

    /// Drops the queued store responses of watcher `id` (it was just cancelled).
    fn purge(&self, id: WatchId) {
        let mut q = self.lock();
        let mut dropped = (0, 0, 0.0);
        q.items.retain(|it| match it {
            Item::Store(r) if r.watch_id == id => {
                dropped.0 += 1;
                dropped.1 += response_bytes(r);
                dropped.2 += pending_events(r);
                false
            }
            _ => true,
        });
        q.store_responses -= dropped.0;
        q.store_bytes -= dropped.1;
        metrics::WATCH_PENDING_EVENTS.sub(dropped.2);
    }

    fn pop(&self) -> Option<Item> {
        let mut q = self.lock();
        let item = q.items.pop_front()?;
        match &item {
            Item::Store(r) => {
                q.store_responses -= 1;
                q.store_bytes -= response_bytes(r);
                metrics::WATCH_PENDING_EVENTS.sub(pending_events(r));
            }
            Item::Control(_) => {
                q.controls -= 1;
                drop(q);
                self.room.notify_one();
            }
        }
        Some(item)
    }

    fn controls(&self) -> usize {
        self.lock().controls
    }

    fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        let pending: f64 = q
            .items
            .iter()
            .map(|it| match it {
                Item::Store(r) => pending_events(r),
                Item::Control(_) => 0.0,
            })
            .sum();
        metrics::WATCH_PENDING_EVENTS.sub(pending);
        *q = Queue {
            closed: true,
            ..Queue::default()
        };
        drop(q);
        self.room.notify_waiters();
    }
}

impl WatchSink for Outbox {
    fn try_send(&self, r: mvcc::WatchResponse) -> Result<(), mvcc::WatchResponse> {
        {
            let mut q = self.lock();
            if q.closed {
                return Ok(());
            }
            let bytes = response_bytes(&r);
            if q.store_responses > 0
                && (q.store_responses >= MAX_QUEUED_RESPONSES
                    || q.store_bytes + bytes > MAX_QUEUED_BYTES)
            {
                return Err(r);
            }
            q.store_responses += 1;
            q.store_bytes += bytes;
            metrics::WATCH_PENDING_EVENTS.add(pending_events(&r));
            q.items.push_back(Item::Store(r));
        }
        self.ready.notify_one();
        Ok(())
    }
}

/// What the send loop needs to know of a watcher beyond what the store knows.
#[derive(Clone, Copy, Debug, Default)]
struct WatcherOpts {
    prev_kv: bool,
    fragment: bool,
    /// `Some` if the watcher asked for progress notifications: whether the next tick should
    /// send one (false after events went out since the last tick, as etcd elides it).
    progress: Option<bool>,
}

/// State shared by the two loops of one stream.
struct StreamCtx {
    srv: Arc<dyn Member>,
    /// The stream's credentials: every create is checked with them (a token may expire or its
    /// user lose the permission while the stream lives).
    cx: Ctx,
    limits: Limits,
    outbox: Arc<Outbox>,
    store: mvcc::WatchStream,
    opts: Mutex<HashMap<WatchId, WatcherOpts>>,
    /// A progress request is waiting for every watcher to be synced.
    deferred_progress: AtomicBool,
}

impl StreamCtx {
    fn opts(&self) -> MutexGuard<'_, HashMap<WatchId, WatcherOpts>> {
        self.opts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.srv.cluster_id(),
            member_id: self.srv.member_id(),
            revision,
            raft_term: self.srv.term(),
        })
    }
}

/// Decrements the stream gauge however the stream ends.
struct StreamGauge;

impl StreamGauge {
    fn new() -> StreamGauge {
        metrics::WATCH_STREAMS.inc();
        StreamGauge
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        metrics::WATCH_STREAMS.dec();
    }
}

async fn serve(
    srv: Arc<dyn Member>,
    cx: Ctx,
    limits: Limits,
    inbound: Streaming<WatchRequest>,
    tx: Outgoing,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let _gauge = StreamGauge::new();
    let outbox = Arc::new(Outbox::default());
    let store = srv.watchable().watch_stream(outbox.clone());
    let ctx = Arc::new(StreamCtx {
        srv,
        cx,
        limits,
        outbox,
        store,
        opts: Mutex::new(HashMap::new()),
        deferred_progress: AtomicBool::new(false),
    });
    let (recv_err_tx, recv_err_rx) = oneshot::channel();
    let recv = tokio::spawn(recv_loop(ctx.clone(), inbound, recv_err_tx));
    tokio::select! {
        _ = send_loop(&ctx, &tx, recv_err_rx) => {}
        _ = shutdown.wait_for(|stop| *stop) => {
            // What etcd's clients see from a stopping member; they reconnect elsewhere or
            // retry, resuming from their last revision.
            tx.send_now(Err(ServerError::Stopped.into()));
        }
    }
    recv.abort();
    ctx.store.close();
    ctx.outbox.close();
    ctx.opts().clear();
}

/// etcd's `recvLoop`. Returns on end of input (the stream lives on) and reports a receive
/// error (the stream ends with it).
async fn recv_loop(
    ctx: Arc<StreamCtx>,
    mut inbound: Streaming<WatchRequest>,
    err_tx: oneshot::Sender<Status>,
) {
    loop {
        // Hold back a client that creates watchers faster than it reads the replies.
        loop {
            let room = ctx.outbox.room.notified();
            if ctx.outbox.controls() < MAX_QUEUED_CONTROLS || ctx.outbox.lock().closed {
                break;
            }
            room.await;
        }
        let req = match inbound.message().await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(status) => {
                tracing::debug!("watch stream receive failed: {status}");
                let _ = err_tx.send(crate::grpc_go_receive_status(status));
                return;
            }
        };
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => {
                let c = WatchCreateRequest {
                    // \0 is the smallest key.
                    key: if c.key.is_empty() { vec![0] } else { c.key },
                    ..c
                };
                // etcd 3.5.24 on (eb7ef2e23): a negative start revision is refused as compacted,
                // before the permission check.
                if c.start_revision < 0 {
                    ctx.outbox.push_control(WatchResponse {
                        header: ctx.header(ctx.store.rev()),
                        watch_id: INVALID_WATCH_ID,
                        created: true,
                        canceled: true,
                        cancel_reason: ServerError::Compacted.to_string(),
                        ..Default::default()
                    });
                    continue;
                }
                match watch_permitted(&ctx, &c).await {
                    Ok(()) => create(&ctx, c),
                    Err(e) => ctx.outbox.push_control(WatchResponse {
                        header: ctx.header(ctx.store.rev()),
                        watch_id: INVALID_WATCH_ID,
                        created: true,
                        canceled: true,
                        cancel_reason: e.watch_cancel_reason(),
                        ..Default::default()
                    }),
                }
            }
            Some(RequestUnion::CancelRequest(c)) => {
                let id = c.watch_id;
                if ctx.store.cancel(id).is_ok() {
                    ctx.opts().remove(&id);
                    ctx.outbox.purge(id);
                    ctx.outbox.push_control(WatchResponse {
                        header: ctx.header(ctx.store.rev()),
                        watch_id: id,
                        canceled: true,
                        ..Default::default()
                    });
                }
            }
            Some(RequestUnion::ProgressRequest(_)) => progress_request(&ctx),
            // etcd ignores a request it does not understand rather than ending the stream.
            None => {}
        }
    }
}

/// etcd's `isWatchPermitted`: read permission on the watched range, as the client sent it (before
/// `"\0"` is read as "to the end", so a prefix grant never opens every key after it: etcd 3.5.x's
/// fix, e863b001b).
async fn watch_permitted(ctx: &StreamCtx, c: &WatchCreateRequest) -> Result<(), auth::AuthError> {
    let ai = ctx.srv.auth_info(&ctx.cx).await?.unwrap_or_default();
    ctx.srv
        .auth_store()
        .is_range_permitted(&ai, &c.key, &c.range_end)
}

fn create(ctx: &StreamCtx, c: WatchCreateRequest) {
    let key = c.key;
    // etcd's range conventions: no end is one key, "\0" is every key from `key` on.
    let end = match c.range_end.as_slice() {
        [] => None,
        [0] => Some(Vec::new()),
        _ => Some(c.range_end),
    };
    let filters = c
        .filters
        .iter()
        .filter_map(|f| match FilterType::try_from(*f) {
            Ok(FilterType::Noput) => Some(WatchFilter::NoPut),
            Ok(FilterType::Nodelete) => Some(WatchFilter::NoDelete),
            Err(_) => None,
        })
        .collect();
    let opts = WatcherOpts {
        prev_kv: c.prev_kv,
        fragment: c.fragment,
        progress: c.progress_notify.then_some(true),
    };
    let created = ctx.store.watch(
        c.watch_id,
        key,
        end,
        c.start_revision,
        filters,
        |id, rev| {
            // Under the store's lock, before any response of this watcher can be queued.
            ctx.opts().insert(id, opts);
            ctx.outbox.push_control(WatchResponse {
                header: ctx.header(rev),
                watch_id: id,
                created: true,
                ..Default::default()
            });
        },
    );
    if let Err(e) = created {
        ctx.outbox.push_control(WatchResponse {
            header: ctx.header(ctx.store.rev()),
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: e.to_string(),
            ..Default::default()
        });
    }
}

fn progress_request(ctx: &StreamCtx) {
    if ctx.opts().is_empty() {
        ctx.outbox.push_control(WatchResponse {
            header: ctx.header(ctx.store.rev()),
            watch_id: INVALID_WATCH_ID,
            ..Default::default()
        });
        return;
    }
    if ctx.deferred_progress.load(Ordering::Acquire) {
        return; // one reply answers every request made before it
    }
    if !ctx.store.request_progress_all() {
        ctx.deferred_progress.store(true, Ordering::Release);
        ctx.outbox.ready.notify_one();
    }
}

/// The progress notification interval with etcd's jitter (up to a tenth more), so streams
/// created together do not all tick together.
fn progress_interval(limits: &Limits) -> Duration {
    let base = limits
        .progress_notify_interval
        .max(MIN_WATCH_PROGRESS_NOTIFY_INTERVAL);
    let tenth = (base.as_nanos() / 10).max(1) as u64;
    let random = RandomState::new().build_hasher().finish();
    base + Duration::from_nanos(random % tenth)
}

/// etcd's `sendLoop`.
async fn send_loop(ctx: &StreamCtx, tx: &Outgoing, mut recv_err: oneshot::Receiver<Status>) {
    let interval = progress_interval(&ctx.limits);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut input_done = false;
    let mut next_retry = tokio::time::Instant::now();
    loop {
        // Checked here too, not only when idle: a busy stream must not starve the retry.
        let deferred = ctx.deferred_progress.load(Ordering::Acquire);
        if deferred && tokio::time::Instant::now() >= next_retry {
            if ctx.store.request_progress_all() {
                ctx.deferred_progress.store(false, Ordering::Release);
            }
            next_retry = tokio::time::Instant::now() + DEFERRED_PROGRESS_RETRY;
        }
        if let Some(item) = ctx.outbox.pop() {
            if !send_item(ctx, tx, item).await {
                return;
            }
            continue;
        }
        let deferred = ctx.deferred_progress.load(Ordering::Acquire);
        tokio::select! {
            _ = tx.closed() => {
                tracing::debug!("watch stream closed by the client");
                return;
            }
            r = &mut recv_err, if !input_done => match r {
                Ok(status) => {
                    tracing::debug!("watch stream ends: {status}");
                    tx.send_now(Err(status));
                    return;
                }
                // The client closed its side: keep serving its watchers.
                Err(_) => input_done = true,
            },
            _ = ctx.outbox.ready.notified() => {}
            _ = ticker.tick() => progress_tick(ctx),
            _ = tokio::time::sleep_until(next_retry), if deferred => {}
        }
    }
}

/// Periodic progress notifications: every watcher that asked gets one unless it was sent
/// events since the last tick (and the store sends it only if the watcher is synced).
fn progress_tick(ctx: &StreamCtx) {
    let due: Vec<WatchId> = {
        let mut opts = ctx.opts();
        opts.iter_mut()
            .filter_map(|(id, o)| {
                let due = o.progress?;
                o.progress = Some(true);
                due.then_some(*id)
            })
            .collect()
    };
    for id in due {
        ctx.store.request_progress(id);
    }
}

/// Sends one queued item (possibly as several fragments). Returns false once the client is
/// gone.
async fn send_item(ctx: &StreamCtx, tx: &Outgoing, item: Item) -> bool {
    let r = match item {
        Item::Control(r) => return tx.send(Ok(r)).await,
        Item::Store(r) => r,
    };
    let opts = ctx.opts().get(&r.watch_id).copied().unwrap_or_default();
    let n_events = r.events.len();
    let resp = WatchResponse {
        header: ctx.header(r.revision),
        watch_id: r.watch_id,
        canceled: r.compact_revision != 0,
        compact_revision: r.compact_revision,
        events: events_with_prev(ctx, &r.events, opts.prev_kv),
        ..Default::default()
    };
    metrics::WATCH_EVENTS.inc_by(n_events as f64);
    let limit = ctx.limits.max_response_bytes;
    if opts.fragment {
        for part in fragments(resp, limit) {
            if !tx.send(Ok(part)).await {
                return false;
            }
        }
    } else if !tx.send(Ok(resp)).await {
        return false;
    }
    if n_events > 0 {
        if let Some(o) = ctx.opts().get_mut(&r.watch_id) {
            if o.progress.is_some() {
                o.progress = Some(false);
            }
        }
    }
    true
}

/// The events to send, with `prev_kv` filled from the store at the revision before each event
/// when asked (not for a key's creation, which has none). A `prev_kv` that compaction already
/// removed is left out, as etcd does.
fn events_with_prev(ctx: &StreamCtx, events: &[Arc<Event>], prev_kv: bool) -> Vec<Event> {
    let mut out: Vec<Event> = events.iter().map(|e| Event::clone(e)).collect();
    if !prev_kv {
        return out;
    }
    let view = ctx.srv.kv().read();
    for e in &mut out {
        let Some(kv) = &e.kv else { continue };
        let created = e.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision;
        if created {
            continue;
        }
        let opts = RangeOptions {
            rev: kv.mod_revision - 1,
            ..Default::default()
        };
        if let Ok(r) = view.range(&kv.key, None, opts) {
            e.prev_kv = r.kvs.into_iter().next();
        }
    }
    out
}

/// etcd's `sendFragments`: a response of at least `limit` encoded bytes with two or more events
/// is split into responses of under `limit` bytes each (a single event larger than that goes
/// alone), all but the last marked `fragment`.
fn fragments(resp: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if resp.encoded_len() < limit || resp.events.len() < 2 {
        return vec![resp];
    }
    let mut out = Vec::new();
    let mut shell = resp;
    let mut events = std::mem::take(&mut shell.events).into_iter().peekable();
    shell.fragment = true;
    while events.peek().is_some() {
        let mut cur = shell.clone();
        while let Some(e) = events.peek() {
            cur.events.push(e.clone());
            if cur.events.len() > 1 && cur.encoded_len() >= limit {
                cur.events.pop();
                break;
            }
            events.next();
        }
        if events.peek().is_none() {
            cur.fragment = false;
        }
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::mvccpb::KeyValue;

    fn ev(key: &str, value_len: usize, rev: i64) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: key.as_bytes().to_vec(),
                value: vec![b'v'; value_len],
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                lease: 0,
            }),
            prev_kv: None,
        }
    }

    fn resp(events: Vec<Event>) -> WatchResponse {
        WatchResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 9,
                raft_term: 3,
            }),
            watch_id: 7,
            events,
            ..Default::default()
        }
    }

    #[test]
    fn small_or_single_event_responses_are_not_fragmented() {
        let r = resp(vec![ev("a", 10, 2), ev("b", 10, 2)]);
        assert_eq!(fragments(r.clone(), 1 << 20), vec![r]);
        let big = resp(vec![ev("a", 5000, 2)]);
        assert_eq!(fragments(big.clone(), 100), vec![big]);
    }

    #[test]
    fn fragments_keep_order_and_mark_all_but_last() {
        let events: Vec<Event> = (0..10).map(|i| ev(&format!("k{i}"), 400, 5)).collect();
        let whole = resp(events.clone());
        let parts = fragments(whole.clone(), 1000);
        assert!(parts.len() > 1, "{parts:?}");
        let mut seen = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.fragment, i + 1 < parts.len());
            assert_eq!(p.header, whole.header);
            assert_eq!(p.watch_id, 7);
            assert!(!p.events.is_empty());
            // Under the limit unless one event alone is over it.
            assert!(p.encoded_len() < 1000 || p.events.len() == 1);
            seen.extend(p.events.iter().cloned());
        }
        assert_eq!(seen, events);
    }

    #[tokio::test]
    async fn outgoing_holds_a_bounded_number_of_bytes() {
        use futures::StreamExt;
        let (tx, mut rx) = outgoing();
        let big = resp(vec![ev("k", OUTGOING_BYTES / 2, 2)]);
        assert!(tx.send(Ok(big.clone())).await);
        // Nearly half the budget is left: a second one does not fit until the first is taken.
        let second = tx.send(Ok(big.clone()));
        tokio::pin!(second);
        assert!(
            futures::poll!(second.as_mut()).is_pending(),
            "over the byte bound"
        );
        assert_eq!(rx.next().await.unwrap().unwrap(), big);
        assert!(second.await);
        // A response larger than the whole budget still goes, alone.
        let huge = resp(vec![ev("k", OUTGOING_BYTES * 2, 3)]);
        let third = tx.send(Ok(huge.clone()));
        tokio::pin!(third);
        assert!(futures::poll!(third.as_mut()).is_pending());
        assert_eq!(rx.next().await.unwrap().unwrap(), big);
        assert!(third.await);
        assert_eq!(rx.next().await.unwrap().unwrap(), huge);
        // Once the reader is gone, sending fails instead of waiting.
        tx.send_now(Ok(big.clone()));
        drop(rx);
        assert!(!tx.send(Ok(huge)).await);
    }

    #[test]
    fn outbox_bounds_store_responses_but_not_the_first() {
        let o = Outbox::default();
        let big = mvcc::WatchResponse {
            watch_id: 1,
            events: vec![Arc::new(ev("k", MAX_QUEUED_BYTES * 2, 3))],
            revision: 3,
            compact_revision: 0,
        };
        assert!(o.try_send(big.clone()).is_ok(), "first is always accepted");
        assert!(o.try_send(big.clone()).is_err(), "over the byte bound");
        assert!(matches!(o.pop(), Some(Item::Store(_))));
        let small = mvcc::WatchResponse {
            events: vec![Arc::new(ev("k", 1, 3))],
            ..big
        };
        for _ in 0..MAX_QUEUED_RESPONSES {
            assert!(o.try_send(small.clone()).is_ok());
        }
        assert!(o.try_send(small.clone()).is_err(), "over the count bound");
        o.push_control(WatchResponse::default());
        assert_eq!(o.controls(), 1);
        o.purge(small.watch_id);
        assert_eq!(o.lock().store_responses, 0);
        assert!(matches!(o.pop(), Some(Item::Control(_))));
        assert!(o.pop().is_none());
        o.close();
        assert!(o.try_send(small).is_ok(), "a closed outbox swallows");
        assert!(o.pop().is_none());
    }
}
