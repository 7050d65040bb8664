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
//! # TLS
//!
//! Each endpoint is dialed with `transport`'s connector (rustls, no tonic TLS), following
//! clientv3's rule per endpoint: `https://` always dials TLS (with the system's CAs when no
//! `--cacert` is given), `http://` never does, and a bare `host:port` dials TLS exactly when upstream
//! TLS is configured (`--cacert`, `--cert`/`--key` or `--insecure-skip-tls-verify`). clientv3 lets
//! the first endpoint decide for all of them; deciding per endpoint only differs for a mixed list.
//!
//! # Auth
//!
//! The client's `token` (or `authorization`) metadata travels with every call it makes, so the
//! cluster checks each client's own permissions. [`Upstream::note_auth`] records that the cluster
//! has auth enabled (a token seen, an auth error, `AuthStatus`): from then on cached answers,
//! which cannot be checked per user, are no longer served (see `kv`).
//!
//! # Revisions seen
//!
//! [`Upstream::observe`] records the highest header revision of any answer the proxy forwarded.
//! The cache (see `cache`) never answers from a state older than that.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// How long a connection attempt to one endpoint may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Metadata that travels from the client to the cluster: the auth token, the require-leader flag
/// and the deadline.
const FORWARDED_METADATA: &[&str] = &["token", "authorization", "hasleader", "grpc-timeout"];
/// The metadata that carries a client's credentials.
pub const AUTH_METADATA: &[&str] = &["token", "authorization"];

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
    /// Upstream TLS (`--cacert`, `--cert`, `--key`, `--insecure-skip-tls-verify`); None when
    /// none of them is given.
    pub tls: Option<transport::ClientTls>,
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
    /// Each endpoint's TLS, if dialed with TLS (for the HTTP `/metrics` fetch).
    tls: Vec<Option<transport::ClientTls>>,
    pinned: AtomicUsize,
    seen: AtomicI64,
    auth: AtomicBool,
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

/// `host:port` or a URL, as etcd's `--endpoints` takes them: a bare `host:port` is `https://`
/// when upstream TLS is configured (clientv3's "credentials optional" endpoints).
pub fn endpoint_url(e: &str, tls: bool) -> String {
    if e.contains("://") {
        e.to_string()
    } else if tls {
        format!("https://{e}")
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
        let mut tls_of = Vec::new();
        // clientv3 dials an `https://` endpoint with the system's CAs when no TLS flag is given.
        let mut default_tls = None;
        for e in &cfg.endpoints {
            let url = endpoint_url(e, cfg.tls.is_some());
            let tls = match &cfg.tls {
                Some(t) => Some(t.clone()),
                None if url.starts_with("https://") => {
                    if default_tls.is_none() {
                        default_tls = Some(
                            transport::ClientTls::new(&transport::TlsInfo::default()).map_err(
                                |err| EndpointError::Invalid(e.clone(), err.to_string()),
                            )?,
                        );
                    }
                    default_tls.clone()
                }
                None => None,
            };
            let (ep, connector) = transport::endpoint(&url, tls.as_ref())
                .map_err(|err| EndpointError::Invalid(e.clone(), err.to_string()))?;
            let mut ep = ep
                .connect_timeout(DIAL_TIMEOUT)
                .tcp_nodelay(true)
                .keep_alive_timeout(cfg.keepalive_timeout)
                .keep_alive_while_idle(cfg.permit_without_stream);
            if let Some(t) = cfg.keepalive_time {
                ep = ep.http2_keep_alive_interval(t);
            }
            endpoints.push((url.clone(), ep.connect_with_connector_lazy(connector)));
            tls_of.push(tls.filter(|_| url.starts_with("https://")));
        }
        Ok(Arc::new(Upstream {
            endpoints,
            tls: tls_of,
            pinned: AtomicUsize::new(0),
            seen: AtomicI64::new(0),
            auth: AtomicBool::new(false),
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

    /// Endpoint `i`'s TLS (modulo the count), if it is dialed with TLS.
    pub fn tls(&self, i: usize) -> Option<&transport::ClientTls> {
        self.tls[i % self.tls.len()].as_ref()
    }

    /// Records that the cluster has auth enabled; true the first time.
    pub fn note_auth(&self) -> bool {
        !self.auth.swap(true, Ordering::AcqRel)
    }

    /// Whether the cluster was seen with auth enabled.
    pub fn auth_seen(&self) -> bool {
        self.auth.load(Ordering::Acquire)
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

/// Whether `md` carries a client's credentials.
pub fn has_token(md: &MetadataMap) -> bool {
    AUTH_METADATA.iter().any(|k| md.get(*k).is_some())
}

/// The client's credentials alone, to open a stream on its behalf.
pub fn auth_metadata(md: &MetadataMap) -> MetadataMap {
    let mut out = MetadataMap::new();
    for k in AUTH_METADATA {
        if let Some(v) = md.get(*k) {
            out.insert(*k, v.clone());
        }
    }
    out
}

/// The credentials of `md` as one map key (None without any).
pub fn credentials_key(md: &MetadataMap) -> Option<Vec<u8>> {
    let mut key = Vec::new();
    let mut any = false;
    for k in AUTH_METADATA {
        key.extend_from_slice(k.as_bytes());
        key.push(0);
        if let Some(v) = md.get(*k) {
            any = true;
            key.extend_from_slice(v.as_bytes());
        }
        key.push(0);
    }
    any.then_some(key)
}

/// Whether `s` is one of etcd's answers that only a cluster with auth enabled gives.
pub fn is_auth_error(s: &Status) -> bool {
    matches!(
        s.message(),
        "etcdserver: permission denied"
            | "etcdserver: user name is empty"
            | "etcdserver: invalid auth token"
            | "etcdserver: authentication failed, invalid user ID or password"
            | "etcdserver: revision of auth store is old"
    )
}

/// Turns a dial failure into grpc-go's wording; any other status is passed through untouched.
pub fn client_status(up: &Upstream, s: Status) -> Status {
    if never_sent(&s) {
        unreachable(up.endpoint(up.pinned()).0)
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_tell_groups_apart() {
        let none = MetadataMap::new();
        assert_eq!(credentials_key(&none), None);
        let mut a = MetadataMap::new();
        a.insert("token", "a.1".parse().unwrap());
        a.insert("hasleader", "true".parse().unwrap());
        let mut b = MetadataMap::new();
        b.insert("token", "b.2".parse().unwrap());
        let mut a2 = MetadataMap::new();
        a2.insert("token", "a.1".parse().unwrap());
        assert!(credentials_key(&a).is_some());
        assert_ne!(credentials_key(&a), credentials_key(&b));
        assert_eq!(credentials_key(&a), credentials_key(&a2));
        let mut c = MetadataMap::new();
        c.insert("authorization", "a.1".parse().unwrap());
        assert_ne!(credentials_key(&a), credentials_key(&c));
    }
}
