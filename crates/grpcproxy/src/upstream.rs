//! The proxy's connection to the cluster: one lazily connected gRPC channel per `--endpoints` entry,
//! a pinned endpoint that every call tries first, and failover to the next endpoint.
//!
//! # Retry policy (etcd's clientv3 retry interceptor)
//!
//! * A call that never left the proxy (the connection to the endpoint could not be made) is safe
//!   to send elsewhere, whatever it is: the next endpoint is tried.
//! * A read-only call (`Retry::Safe`: Range, Status, MemberList, TimeToLive, ...) that fails with
//!   `Unavailable` (the member lost its leader, is stopping, or the connection broke mid-call) is
//!   tried on the next endpoint too; reading twice changes nothing.
//! * A write that fails once sent is answered with the member's error as is (`etcdserver: leader
//!   changed`, `no leader`, `request timed out`, ...): it may have been applied, and only the
//!   client can decide to repeat it. etcd's proxy passes these errors through the same way.
//!
//! Every endpoint is tried at most once per call; when none can be reached the client gets
//! `Unavailable` with grpc-go's wording for a failed dial, which etcd clients treat as retryable.
//! etcd's proxy instead holds such calls until the client's deadline passes; answering at once
//! lets a client with several proxies move on.
//!
//! The pinned endpoint moves to whichever endpoint last answered, so a proxy whose member died
//! settles on a live one and stays there (sticky, like clientv3 3.3's pinned endpoint): its cache
//! and watchers then see one member's view of the revisions.
//!
//! # Revisions seen
//!
//! [`Upstream::observe`] records the highest header revision of any answer the proxy forwarded.
//! The cache (see `cache`) never answers from a state older than that.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// How long a connection attempt to one endpoint may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Metadata that travels from the client to the cluster: the auth token, the require-leader flag
/// and the deadline.
const FORWARDED_METADATA: &[&str] = &["token", "authorization", "hasleader", "grpc-timeout"];

/// Connection settings for the upstream endpoints (etcd's `--dial-keepalive-*` and
/// `--max-send-bytes`/`--max-recv-bytes`).
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    pub endpoints: Vec<String>,
    pub max_send_bytes: usize,
    pub max_recv_bytes: usize,
    pub keepalive_time: Option<Duration>,
    pub keepalive_timeout: Duration,
    pub permit_without_stream: bool,
}

/// Whether a call may be repeated on another endpoint after it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Reads: repeated on `Unavailable`.
    Safe,
    /// Writes: repeated only if they were never sent.
    Unsent,
}

pub struct Upstream {
    endpoints: Vec<(String, Channel)>,
    pinned: AtomicUsize,
    seen: AtomicI64,
    pub max_send_bytes: usize,
    pub max_recv_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("no endpoints given")]
    Empty,
    #[error("invalid endpoint {0:?}: {1}")]
    Invalid(String, String),
}

/// `host:port` or a URL, as etcd's `--endpoints` takes them; `https://` needs TLS, which the caller
/// refuses before this point.
pub fn endpoint_url(e: &str) -> String {
    if e.contains("://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Result<Arc<Upstream>, EndpointError> {
        if cfg.endpoints.is_empty() {
            return Err(EndpointError::Empty);
        }
        let mut endpoints = Vec::new();
        for e in &cfg.endpoints {
            let url = endpoint_url(e);
            let mut ep = Endpoint::from_shared(url.clone())
                .map_err(|err| EndpointError::Invalid(e.clone(), err.to_string()))?
                .connect_timeout(DIAL_TIMEOUT)
                .tcp_nodelay(true)
                .keep_alive_timeout(cfg.keepalive_timeout)
                .keep_alive_while_idle(cfg.permit_without_stream);
            if let Some(t) = cfg.keepalive_time {
                ep = ep.http2_keep_alive_interval(t);
            }
            endpoints.push((url, ep.connect_lazy()));
        }
        Ok(Arc::new(Upstream {
            endpoints,
            pinned: AtomicUsize::new(0),
            seen: AtomicI64::new(0),
            max_send_bytes: cfg.max_send_bytes,
            max_recv_bytes: cfg.max_recv_bytes,
        }))
    }

    /// The endpoints as URLs, in the order given.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.endpoints.iter().map(|(u, _)| u.as_str())
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Never true: an upstream has at least one endpoint.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The pinned endpoint's index.
    pub fn pinned(&self) -> usize {
        self.pinned.load(Ordering::Relaxed) % self.endpoints.len()
    }

    /// Endpoint `i` (modulo the count): its URL and channel.
    pub fn endpoint(&self, i: usize) -> (&str, Channel) {
        let (u, c) = &self.endpoints[i % self.endpoints.len()];
        (u, c.clone())
    }

    pub fn pin(&self, i: usize) {
        self.pinned
            .store(i % self.endpoints.len(), Ordering::Relaxed);
    }

    /// Records a revision the proxy has passed on to a client.
    pub fn observe(&self, rev: i64) {
        self.seen.fetch_max(rev, Ordering::AcqRel);
    }

    /// The highest revision passed on so far.
    pub fn seen(&self) -> i64 {
        self.seen.load(Ordering::Acquire)
    }

    /// Runs `f` on the pinned endpoint's channel, and on the others as the retry policy allows.
    pub async fn call<T, F, Fut>(&self, retry: Retry, mut f: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let first = self.pinned();
        let mut last = None;
        for n in 0..self.endpoints.len() {
            let i = (first + n) % self.endpoints.len();
            match f(self.endpoints[i].1.clone()).await {
                Ok(v) => {
                    if n > 0 {
                        self.pin(i);
                    }
                    return Ok(v);
                }
                Err(s) if retryable(&s, retry) => {
                    tracing::debug!(endpoint = %self.endpoints[i].0, "upstream call failed, trying the next endpoint: {s}");
                    last = Some(s);
                }
                Err(s) => return Err(s),
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no upstream endpoint")))
    }
}

/// Whether `s` says the request never reached the endpoint.
pub fn never_sent(s: &Status) -> bool {
    if s.code() != tonic::Code::Unavailable || s.message().starts_with("etcdserver:") {
        return false;
    }
    // tonic reports a failed dial as a transport error with the connector's error as its source.
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = src {
        let text = e.to_string();
        if text.contains("connect") || text.contains("dns error") {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
            ) {
                return true;
            }
        }
        src = e.source();
    }
    s.message().contains("error trying to connect") || s.message().contains("tcp connect error")
}

fn retryable(s: &Status, retry: Retry) -> bool {
    never_sent(s) || (retry == Retry::Safe && s.code() == tonic::Code::Unavailable)
}

/// grpc-go's status for a call whose every endpoint refused, which etcd clients know.
pub fn unreachable(url: &str) -> Status {
    Status::unavailable(format!(
        "connection error: desc = \"transport: Error while dialing dial tcp {}: connect: connection refused\"",
        url.split("://").nth(1).unwrap_or(url)
    ))
}

/// A request to the cluster carrying `msg` and the client metadata that must travel with it.
pub fn forward<T>(md: &MetadataMap, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    for k in FORWARDED_METADATA {
        if let Some(v) = md.get(*k) {
            r.metadata_mut().insert(*k, v.clone());
        }
    }
    r
}

/// Turns a dial failure into grpc-go's wording; any other status is passed through untouched.
pub fn client_status(up: &Upstream, s: Status) -> Status {
    if never_sent(&s) {
        unreachable(up.endpoint(up.pinned()).0)
    } else {
        s
    }
}
