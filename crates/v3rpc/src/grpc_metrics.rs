//! The gRPC server metrics etcd exports through go-grpc-prometheus, and etcd's own client byte
//! counters, as one tower layer on the client port: `grpc_server_started_total`,
//! `grpc_server_handled_total` (with `grpc_code`), `grpc_server_msg_received_total`,
//! `grpc_server_msg_sent_total`, `grpc_server_handling_seconds` (only with `--metrics extensive`, as
//! etcd), `etcd_network_client_grpc_received_bytes_total` and `..._sent_bytes_total`. The same layer
//! logs etcd's "request stats" warning for a unary request slower than
//! `--warning-unary-request-duration`.
//!
//! Cost on the request path: the method's counters are resolved once, when the table is built from
//! the services' descriptors (every label value is a `&'static` string, every child counter a handle),
//! so a request costs a hash lookup of its path, a few atomic increments, one `Instant::now()`, and
//! the wrapping of its two bodies; the bodies are scanned only for gRPC's 5-byte message headers
//! (counting messages and payload bytes as etcd's codec counts them), never copied.
//!
//! Where etcd's counts come from, and where Hearth's differ: go-grpc-prometheus counts a unary
//! request as one received message when it starts and one sent message when it succeeds; a stream
//! counts every message it reads and writes; the code is the handler's status. Here the code is the
//! `grpc-status` of the response (in its headers for an error answered at once, in its trailers
//! otherwise), and a call whose response is dropped before it ends (the client went away) counts as
//! `Canceled`, which is what etcd's handlers return then. etcd's interceptor chain runs the learner
//! and `hasleader` checks before the metrics interceptor, so those refusals are not counted; this
//! layer sits inside the same checks, so they are not counted here either.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{LazyLock, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, Histogram,
    HistogramVec, IntCounter, IntCounterVec,
};

/// gRPC status codes by number, with the names go-grpc-prometheus puts in `grpc_code`.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

/// The services of the client port as etcd 3.5 registers them with go-grpc-prometheus (every
/// method is shown from the first scrape, at zero). etcd registers Lock and Election after that
/// call, so its scrape shows them only once called; Hearth shows them from the start too.
const PACKAGES: &[&str] = &["etcdserverpb", "v3lockpb", "v3electionpb"];

struct Families {
    started: IntCounterVec,
    handled: IntCounterVec,
    received: IntCounterVec,
    sent: IntCounterVec,
    received_bytes: IntCounter,
    sent_bytes: IntCounter,
}

macro_rules! must {
    ($e:expr) => {
        $e.expect("metric names are unique and valid")
    };
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| {
    let labels = &["grpc_type", "grpc_service", "grpc_method"];
    Families {
        started: must!(register_int_counter_vec!(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            labels
        )),
        handled: must!(register_int_counter_vec!(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"]
        )),
        received: must!(register_int_counter_vec!(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            labels
        )),
        sent: must!(register_int_counter_vec!(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            labels
        )),
        received_bytes: must!(register_int_counter!(
            "etcd_network_client_grpc_received_bytes_total",
            "The total number of bytes received from grpc clients."
        )),
        sent_bytes: must!(register_int_counter!(
            "etcd_network_client_grpc_sent_bytes_total",
            "The total number of bytes sent to grpc clients."
        )),
    }
});

/// Registered only when `--metrics extensive` asks for it, as etcd does.
static HANDLING: OnceLock<HistogramVec> = OnceLock::new();

/// One method's metrics, resolved once.
struct Method {
    /// `/package.Service/Method`, for the slow-request warning.
    path: &'static str,
    /// The `grpc_type`, `grpc_service` and `grpc_method` labels.
    labels: [&'static str; 3],
    unary_request: bool,
    started: IntCounter,
    handled: [IntCounter; 17],
    received: IntCounter,
    sent: IntCounter,
    handling: OnceLock<Histogram>,
}

static TABLE: LazyLock<HashMap<&'static str, Method>> = LazyLock::new(build_table);

fn leak(s: String) -> &'static str {
    // The table is built once per process and lives as long as it: its strings are label
    // values the registry keeps anyway.
    Box::leak(s.into_boxed_str())
}

fn build_table() -> HashMap<&'static str, Method> {
    let f = &*FAMILIES;
    let mut out = HashMap::new();
    let mut add = |service: &str, method: &str, client_stream: bool, server_stream: bool| {
        let kind = match (client_stream, server_stream) {
            (false, false) => "unary",
            (true, false) => "client_stream",
            (false, true) => "server_stream",
            (true, true) => "bidi_stream",
        };
        let path = leak(format!("/{service}/{method}"));
        let (service, method) = path[1..].split_once('/').unwrap_or_default();
        let l = [kind, service, method];
        let handled = CODES.map(|c| f.handled.with_label_values(&[kind, service, method, c]));
        out.insert(
            path,
            Method {
                path,
                labels: l,
                unary_request: !client_stream,
                started: f.started.with_label_values(&l),
                handled,
                received: f.received.with_label_values(&l),
                sent: f.sent.with_label_values(&l),
                handling: OnceLock::new(),
            },
        );
    };
    match prost_reflect::DescriptorPool::decode(api::FILE_DESCRIPTOR_SET) {
        Ok(pool) => {
            for s in pool.services() {
                if !PACKAGES.contains(&s.package_name()) {
                    continue;
                }
                for m in s.methods() {
                    add(
                        s.full_name(),
                        m.name(),
                        m.is_client_streaming(),
                        m.is_server_streaming(),
                    );
                }
            }
        }
        Err(e) => tracing::error!("gRPC metrics: cannot read the services' descriptors: {e}"),
    }
    add("grpc.health.v1.Health", "Check", false, false);
    add("grpc.health.v1.Health", "Watch", false, true);
    out
}

/// Whether the method at `path` streams (either way).
pub(crate) fn is_stream(path: &str) -> bool {
    TABLE.get(path).is_some_and(|m| m.labels[0] != "unary")
}

/// How the layer is configured (etcd's `--metrics` and `--warning-unary-request-duration`).
#[derive(Debug, Clone, Copy)]
pub struct MetricsConfig {
    /// `--metrics extensive`: also the handling-time histogram.
    pub extensive: bool,
    /// A unary request slower than this is logged (etcd's default: 300 ms; zero: never).
    pub warn_unary_duration: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            extensive: false,
            warn_unary_duration: Duration::from_millis(300),
        }
    }
}

/// Makes every metric of this module visible from the first scrape.
pub(crate) fn register(extensive: bool) {
    let table = &*TABLE;
    if extensive {
        let h = HANDLING.get_or_init(|| {
            must!(register_histogram_vec!(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                &["grpc_type", "grpc_service", "grpc_method"],
                prometheus::DEFAULT_BUCKETS.to_vec()
            ))
        });
        for m in table.values() {
            let _ = m.handling.get_or_init(|| h.with_label_values(&m.labels));
        }
    }
}

#[derive(Clone)]
pub struct MetricsLayer {
    cfg: MetricsConfig,
}

/// The layer, after registering what `cfg` asks for.
pub fn layer(cfg: MetricsConfig) -> MetricsLayer {
    register(cfg.extensive);
    MetricsLayer { cfg }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            cfg: self.cfg,
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    cfg: MetricsConfig,
}

fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl<S, R> tower::Service<http::Request<tonic::body::Body>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<R>>,
    R: Body<Data = Bytes>,
{
    type Response = http::Response<SentBody<R>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let method = if is_grpc(&req) {
            TABLE.get(req.uri().path())
        } else {
            None
        };
        let Some(m) = method else {
            return ResponseFuture {
                inner: self.inner.call(req),
                call: None,
            };
        };
        m.started.inc();
        if m.unary_request {
            // go-grpc-prometheus counts a unary request's message before the handler runs.
            m.received.inc();
        }
        let req = req.map(|b| {
            tonic::body::Body::new(ReceivedBody {
                inner: b,
                frames: Frames::default(),
                method: m,
            })
        });
        ResponseFuture {
            inner: self.inner.call(req),
            call: Some(Call {
                method: m,
                start: Instant::now(),
                cfg: self.cfg,
                done: false,
            }),
        }
    }
}

/// A call not yet counted as handled; counted as `Canceled` if dropped before its end.
struct Call {
    method: &'static Method,
    start: Instant,
    cfg: MetricsConfig,
    done: bool,
}

impl Call {
    fn finish(mut self, code: usize) {
        self.record(code);
    }

    fn record(&mut self, code: usize) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let m = self.method;
        let code = code.min(CODES.len() - 1);
        m.handled[code].inc();
        let took = self.start.elapsed();
        if self.cfg.extensive {
            if let Some(h) = m.handling.get() {
                h.observe(took.as_secs_f64());
            }
        }
        let warn = self.cfg.warn_unary_duration;
        if m.labels[0] == "unary" && !warn.is_zero() && took > warn {
            tracing::warn!(
                method = m.path,
                took = ?took,
                code = CODES[code],
                "request stats: slow unary request"
            );
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record(CANCELED);
    }
}

/// The code in a `grpc-status` header, if there is one.
fn status_code(h: &http::HeaderMap) -> Option<usize> {
    let v = h.get("grpc-status")?;
    let n = std::str::from_utf8(v.as_bytes())
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| *n < CODES.len())
        .unwrap_or(UNKNOWN);
    Some(n)
}

pin_project_lite::pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, R, E> std::future::Future for ResponseFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<R>, E>>,
    R: Body<Data = Bytes>,
{
    type Output = Result<http::Response<SentBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = ready!(this.inner.poll(cx))?;
        let mut call = this.call.take();
        if let Some(code) = status_code(resp.headers()) {
            // Trailers-only: the call ended with the headers.
            if let Some(c) = call.take() {
                c.finish(code);
            }
        }
        Poll::Ready(Ok(resp.map(|inner| SentBody {
            inner,
            frames: Frames::default(),
            call,
        })))
    }
}

/// Counts gRPC's length-prefixed messages in a body as its chunks go by.
#[derive(Default)]
struct Frames {
    /// Bytes of the current message header seen so far (0 while inside a payload).
    header: [u8; 5],
    header_len: usize,
    /// Payload bytes of the current message still to come.
    remaining: u64,
}

impl Frames {
    /// Feeds a chunk; returns (messages that began, their payload bytes).
    fn feed(&mut self, mut chunk: &[u8]) -> (u64, u64) {
        let (mut messages, mut bytes) = (0, 0);
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining as usize).min(chunk.len());
                self.remaining -= n as u64;
                chunk = &chunk[n..];
                continue;
            }
            let n = (5 - self.header_len).min(chunk.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&chunk[..n]);
            self.header_len += n;
            chunk = &chunk[n..];
            if self.header_len == 5 {
                self.header_len = 0;
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as u64;
                self.remaining = len;
                messages += 1;
                bytes += len;
            }
        }
        (messages, bytes)
    }
}

pin_project_lite::pin_project! {
    /// A request body, counting the messages and bytes the client sends.
    pub struct ReceivedBody<B> {
        #[pin]
        inner: B,
        frames: Frames,
        method: &'static Method,
    }
}

impl<B: Body<Data = Bytes>> Body for ReceivedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(f)) = &frame {
            if let Some(d) = f.data_ref() {
                let (messages, bytes) = this.frames.feed(d);
                if messages > 0 && !this.method.unary_request {
                    this.method.received.inc_by(messages);
                }
                if bytes > 0 {
                    FAMILIES.received_bytes.inc_by(bytes);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A response body, counting the messages and bytes sent, and the call's code from its trailers.
    pub struct SentBody<B> {
        #[pin]
        inner: B,
        frames: Frames,
        call: Option<Call>,
    }
}

impl<B: Default> Default for SentBody<B> {
    fn default() -> Self {
        SentBody {
            inner: B::default(),
            frames: Frames::default(),
            call: None,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for SentBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let Some(call) = this.call.as_ref() else {
            return Poll::Ready(frame);
        };
        match &frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    let (messages, bytes) = this.frames.feed(d);
                    if messages > 0 {
                        call.method.sent.inc_by(messages);
                    }
                    if bytes > 0 {
                        FAMILIES.sent_bytes.inc_by(bytes);
                    }
                } else if let Some(t) = f.trailers_ref() {
                    let code = status_code(t).unwrap_or(UNKNOWN);
                    if let Some(c) = this.call.take() {
                        c.finish(code);
                    }
                }
            }
            Some(Err(_)) => {
                if let Some(c) = this.call.take() {
                    c.finish(UNKNOWN);
                }
            }
            // Ended without trailers: dropping the call counts it as canceled.
            None => drop(this.call.take()),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_count_messages_split_anywhere() {
        let mut wire = Vec::new();
        for payload in [&b"abc"[..], b"", b"hello world"] {
            wire.push(0);
            wire.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            wire.extend_from_slice(payload);
        }
        for split in 1..wire.len() {
            let mut f = Frames::default();
            let (mut m, mut b) = (0, 0);
            for chunk in wire.chunks(split) {
                let (dm, db) = f.feed(chunk);
                m += dm;
                b += db;
            }
            assert_eq!((m, b), (3, 14), "chunks of {split}");
        }
    }

    #[test]
    fn table_has_etcd_services_with_their_stream_types() {
        let t = &*TABLE;
        let kind = |p: &str| t[p].labels[0];
        assert_eq!(kind("/etcdserverpb.KV/Put"), "unary");
        assert_eq!(kind("/etcdserverpb.Watch/Watch"), "bidi_stream");
        assert_eq!(kind("/etcdserverpb.Lease/LeaseKeepAlive"), "bidi_stream");
        assert_eq!(kind("/etcdserverpb.Maintenance/Snapshot"), "server_stream");
        assert_eq!(kind("/v3electionpb.Election/Observe"), "server_stream");
        assert_eq!(kind("/grpc.health.v1.Health/Watch"), "server_stream");
        assert_eq!(kind("/etcdserverpb.Auth/AuthStatus"), "unary");
        assert!(t.contains_key("/etcdserverpb.Maintenance/Downgrade"));
        assert!(!t.keys().any(|p| p.starts_with("/hearthraftpb.")));
        assert_eq!(
            t["/etcdserverpb.KV/Range"].labels,
            ["unary", "etcdserverpb.KV", "Range"]
        );
    }

    #[test]
    fn status_codes_read_as_names() {
        let mut h = http::HeaderMap::new();
        assert_eq!(status_code(&h), None);
        h.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(CODES[status_code(&h).unwrap()], "NotFound");
        h.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(CODES[status_code(&h).unwrap()], "Unknown");
    }
}
