//! The client-facing services, as etcd's `v3rpc` package: the gRPC services (KV, Watch, Lease, Cluster,
//! Maintenance, the v3lock and v3election recipes, `grpc.health.v1`), request validation, what etcd's
//! interceptors check, the `:authority` filter that lets etcd's own clients in, and the plain HTTP
//! endpoints (`/health`, `/livez`, `/readyz`, `/version`, `/metrics`) served on the same port.
//!
//! Each service depends only on the small traits below, after etcd's interfaces (`RaftKV`, `Lessor`,
//! `Alarmer`, `LeaderTransferrer`, `KVGetter`, `BackendGetter`, `RaftStatusGetter`, ...); the server
//! implements them. [`routes`] builds every client service into one set of tonic routes, so another
//! front end (a JSON gateway) can serve the same services in-process; [`serve`] serves routes on a
//! client listener.
//!
//! # Invariants
//! * Services validate and translate; they hold no state of their own beyond a stream's buffers, and
//!   reach the member only through the traits.
//! * Errors become gRPC statuses only through `rpctypes`.
//! * Knows nothing of Raft, the peer transport or how the server is wired.

#![forbid(unsafe_code)]

mod auth;
mod concurrency;
mod election;
mod etcdhttp;
pub mod grpc_metrics;
mod header;
pub mod interceptor;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod member;
pub mod metrics;
pub mod no_leader;
mod range_stream;
mod shutdown;
mod unimplemented;
pub mod validate;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use api::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
    AlarmMember, AlarmRequest, AlarmResponse, AuthenticateRequest, AuthenticateResponse,
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    InternalRaftRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use api::v3electionpb::election_server::ElectionServer;
use api::v3lockpb::lock_server::LockServer;
use membership::Member;
use rpctypes::ServerError;

pub use auth::{AuthService, Ctx};
pub use authority::FixAuthority;
pub use election::ElectionService;
pub use header::header;
pub use kv::KvService;
pub use lease::LeaseService;
pub use lock::LockService;
pub use maintenance::MaintenanceService;
pub use member::ClusterService;
pub use watch::WatchService;

/// The etcd version whose behaviour Hearth implements, reported wherever etcd reports its own
/// version (Maintenance `Status.version`, `/version`'s `etcdserver`, `etcd_server_version`):
/// clients gate features on it (Kubernetes uses RequestWatchProgress only from 3.5.13 on). Hearth
/// follows etcd 3.5.33's code where 3.4 and 3.5 differ (see the README's list), so it reports that
/// release; it must move only with the behaviour.
pub const ETCD_VERSION: &str = "3.5.33";
/// The cluster version, as etcd reports it (`/version`'s `etcdcluster`, the `cluster` bucket):
/// major.minor of the members' versions, patch 0.
pub const CLUSTER_VERSION: &str = "3.5.0";
/// The cluster version's major.minor (etcd's `etcd_cluster_version` label).
pub const CLUSTER_VERSION_LABEL: &str = "3.5";

/// gRPC lets a request this much over `max_request_bytes` through, so that a slightly large request gets
/// etcd's own "request is too large" error rather than a transport error (etcd uses the same margin).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// etcd raises a shorter progress notify interval to this.
pub const MIN_WATCH_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_millis(100);

/// Who this member is and what its Raft node says (etcd's `RaftStatusGetter`, with the ids of its
/// response `header`).
pub trait RaftStatusGetter: Send + Sync + 'static {
    fn member_id(&self) -> u64;
    fn cluster_id(&self) -> u64;
    fn term(&self) -> u64;
    /// 0 while no leader is known.
    fn leader(&self) -> u64;
    fn committed_index(&self) -> u64;
    fn applied_index(&self) -> u64;
    /// A learner serves only what etcd's learners serve.
    fn is_learner(&self) -> bool;
}

/// The store reads are served from and watches follow (etcd's `KVGetter`).
pub trait KvGetter: Send + Sync + 'static {
    fn kv(&self) -> &Arc<mvcc::KvStore>;
    fn watchable(&self) -> &Arc<mvcc::WatchableStore>;
}

/// The member's backend, for whole-database operations (etcd's `BackendGetter`).
pub trait BackendGetter: Send + Sync + 'static {
    fn backend(&self) -> &Arc<backend::Backend>;
}

/// The KV requests as the member serves them: writes through Raft, reads from the store after a
/// linearizable read point unless serializable (etcd's `RaftKV`). Requests arrive validated.
#[tonic::async_trait]
/// Every method takes the caller's credentials: writes carry them in the proposal (checked at
/// apply), reads are checked before and after reading (etcd's `doSerialize`).
pub trait RaftKv: Send + Sync + 'static {
    async fn range(&self, cx: &Ctx, req: RangeRequest) -> Result<RangeResponse, ServerError>;
    async fn put(&self, cx: &Ctx, req: PutRequest) -> Result<PutResponse, ServerError>;
    async fn delete_range(
        &self,
        cx: &Ctx,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, ServerError>;
    async fn txn(&self, cx: &Ctx, req: TxnRequest) -> Result<TxnResponse, ServerError>;
    async fn compact(
        &self,
        cx: &Ctx,
        req: CompactionRequest,
    ) -> Result<CompactionResponse, ServerError>;
}

/// etcd's quota check before a write is proposed (its `quotaAlarmer`), in two steps (see
/// [`check_quota`]): the check, synchronous, and the refusal, which goes through Raft.
#[tonic::async_trait]
pub trait Quota: Send + Sync + 'static {
    /// Whether the backend has room for a write of `cost` bytes.
    fn quota_has_room(&self, cost: u64) -> Result<bool, ServerError>;
    /// A write did not fit: raises the NOSPACE alarm and gives the error to answer with.
    async fn refuse_over_quota(&self) -> ServerError;
}

/// Refuses with NOSPACE (and raises the alarm) when the backend has no room for `cost` bytes.
///
/// The check is a synchronous trait method and only the refusal an async one: every put and txn
/// passes here, and an async trait method boxes its future, which for the refusal's (it holds a
/// whole Raft proposal) cost a put more than the check itself, about 2% of its CPU time.
pub async fn check_quota<Q: Quota + ?Sized>(q: &Q, cost: u64) -> Result<(), ServerError> {
    if q.quota_has_room(cost)? {
        return Ok(());
    }
    Err(q.refuse_over_quota().await)
}

/// The cluster's alarms (etcd's `Alarmer`).
#[tonic::async_trait]
pub trait Alarmer: Send + Sync + 'static {
    /// An alarm request through Raft (a GET too, so the answer is linearizable).
    async fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, ServerError>;
    /// The active alarms as this member applied them.
    fn alarms(&self) -> Vec<AlarmMember>;
}

/// Hands leadership over (etcd's `LeaderTransferrer`).
#[tonic::async_trait]
pub trait LeaderTransferrer: Send + Sync + 'static {
    /// On the leader: makes `target` the leader and returns once it is.
    async fn move_leader(&self, target: u64) -> Result<(), ServerError>;
}

/// The member's leases (etcd's `Lessor` as its lease service uses it). Grant and revoke answer with
/// a complete header. Each call checks the caller's credentials as etcd 3.5 does.
#[tonic::async_trait]
pub trait Lessor: Send + Sync + 'static {
    async fn lease_grant(
        &self,
        cx: &Ctx,
        req: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, ServerError>;
    async fn lease_revoke(
        &self,
        cx: &Ctx,
        req: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, ServerError>;
    /// Renews a lease at the leader; its TTL.
    async fn lease_renew(&self, cx: &Ctx, id: i64) -> Result<i64, ServerError>;
    async fn lease_time_to_live(
        &self,
        cx: &Ctx,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, ServerError>;
    /// Every lease this member knows (LeaseLeases).
    async fn lease_leases(&self, cx: &Ctx) -> Result<Vec<i64>, ServerError>;
}

/// The caller's identity and the auth store (etcd's `AuthGetter`).
#[tonic::async_trait]
pub trait AuthGetter: Send + Sync + 'static {
    /// etcd's `AuthInfoFromCtx`: the user of a valid token (a simple token once this member
    /// applied the entry that minted it), else under `--client-cert-auth` the client
    /// certificate's common name, else `None`. A token that is not valid is `InvalidAuthToken`.
    async fn auth_info(&self, cx: &Ctx) -> Result<Option<::auth::AuthInfo>, ::auth::AuthError>;
    /// The auth store, for checks; never hold it across an `.await`.
    fn auth_store(&self) -> std::sync::RwLockReadGuard<'_, ::auth::AuthStore>;
}

/// The Auth requests as the member serves them (etcd's `Authenticator`).
#[tonic::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Checks the password off the runtime and mints a token through Raft.
    async fn authenticate(
        &self,
        req: AuthenticateRequest,
    ) -> Result<AuthenticateResponse, ServerError>;
    /// Any other Auth request (one field of `req` set), through Raft with the caller's
    /// credentials; the applier checks them.
    async fn auth_request(
        &self,
        cx: &Ctx,
        req: InternalRaftRequest,
    ) -> Result<apply::auth::AuthApplied, ServerError>;
}

/// The membership and its changes (etcd's `ClusterGetter` and the server's member operations).
#[tonic::async_trait]
pub trait Cluster: Send + Sync + 'static {
    fn members(&self) -> Vec<Member>;
    /// `urls` checked as peer URLs (etcd's `types.NewURLs`) and sorted, or `MemberBadUrls`.
    fn parse_peer_urls(&self, urls: &[String]) -> Result<Vec<String>, ServerError>;
    /// The added member and the membership after it; `peer_urls` come from `parse_peer_urls`.
    async fn add_member(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<(Member, Vec<Member>), ServerError>;
    async fn remove_member(&self, id: u64) -> Result<Vec<Member>, ServerError>;
    async fn update_member(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<Vec<Member>, ServerError>;
    async fn promote_member(&self, id: u64) -> Result<Vec<Member>, ServerError>;
}

/// A linearizable read point (etcd's `linearizableReadNotify`), for `/health`.
#[tonic::async_trait]
pub trait ReadIndexer: Send + Sync + 'static {
    async fn linearizable_read(&self) -> Result<(), ServerError>;
}

/// Brings the gauges that are read from state (rather than counted as things happen) up to date,
/// before `/metrics` is rendered.
pub trait MetricsSource: Send + Sync + 'static {
    fn refresh_metrics(&self);
}

/// Everything the client services need from the member.
pub trait V3Server:
    RaftStatusGetter
    + KvGetter
    + BackendGetter
    + RaftKv
    + Quota
    + Alarmer
    + LeaderTransferrer
    + Lessor
    + Cluster
    + ReadIndexer
    + MetricsSource
    + AuthGetter
    + Authenticator
{
}

impl<T> V3Server for T where
    T: RaftStatusGetter
        + KvGetter
        + BackendGetter
        + RaftKv
        + Quota
        + Alarmer
        + LeaderTransferrer
        + Lessor
        + Cluster
        + ReadIndexer
        + MetricsSource
        + AuthGetter
        + Authenticator
{
}

/// What the client services are configured with (etcd's flags of the same names).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// How often an idle watcher that asked for progress notifications gets one.
    pub watch_progress_notify_interval: Duration,
}

/// How a client listener serves gRPC (etcd's flags of the same names).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `--max-concurrent-streams`: HTTP/2 streams one connection may have open.
    pub max_concurrent_streams: u32,
    /// `--grpc-keepalive-interval`: how often the server pings an idle connection (zero: never).
    pub keepalive_interval: Duration,
    /// `--grpc-keepalive-timeout`: how long a ping may go unanswered before the connection closes.
    pub keepalive_timeout: Duration,
    /// `--metrics` and `--warning-unary-request-duration`.
    pub metrics: grpc_metrics::MetricsConfig,
    /// Ends `hasleader` streams when the member has lost its leader.
    pub no_leader: no_leader::NoLeader,
    /// Plain HTTP/1.1 on the same port (off for etcd's gRPC-only client URLs).
    pub accept_http1: bool,
}

/// Every gRPC service of the client port as tonic routes (the plain-HTTP pages are `http_router`). `shutdown` turning true ends
/// streams and waiting requests (a graceful shutdown waits for every request in flight).
pub async fn routes<S: V3Server>(
    srv: Arc<S>,
    cfg: &ClientConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tonic::service::Routes {
    let max_recv = cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let kv = KvService::new(srv.clone(), cfg, shutdown.clone());
    let recipes = concurrency::Client::new(srv.clone(), Arc::new(kv.clone()));
    tonic::service::Routes::from(axum::Router::new())
        .add_service(health)
        .add_service(KvServer::new(kv).max_decoding_message_size(max_recv))
        .add_service(
            MaintenanceServer::new(MaintenanceService::new(srv.clone()))
                .max_decoding_message_size(max_recv),
        )
        .add_service(
            ClusterServer::new(ClusterService::new(srv.clone()))
                .max_decoding_message_size(max_recv),
        )
        .add_service(
            WatchServer::new(WatchService::new(srv.clone(), cfg, shutdown.clone()))
                .max_decoding_message_size(max_recv),
        )
        .add_service(
            LeaseServer::new(LeaseService::new(srv.clone(), shutdown.clone()))
                .max_decoding_message_size(max_recv),
        )
        .add_service(
            AuthServer::new(AuthService::new(srv.clone())).max_decoding_message_size(max_recv),
        )
        .add_service(
            LockServer::new(LockService::new(recipes.clone(), shutdown.clone()))
                .max_decoding_message_size(max_recv),
        )
        .add_service(
            ElectionServer::new(ElectionService::new(recipes, shutdown))
                .max_decoding_message_size(max_recv),
        )
}

/// The client port's plain-HTTP pages: `/health`, `/livez`, `/readyz` (and their checks),
/// `/version`, `/metrics`. `request_timeout` bounds a health check's read (etcd's `ReqTimeout`).
pub fn http_router<S: etcdhttp::HealthServer>(
    srv: Arc<S>,
    request_timeout: Duration,
) -> axum::Router {
    etcdhttp::router(srv, request_timeout)
}

/// What a `--listen-metrics-urls` URL serves: `/metrics` and the health pages.
pub fn metrics_router<S: etcdhttp::HealthServer>(
    srv: Arc<S>,
    request_timeout: Duration,
) -> axum::Router {
    etcdhttp::metrics_router(srv, request_timeout)
}

pub use etcdhttp::HealthServer;
pub use no_leader::monitor_leader;

/// Serves `routes` on a client listener until `shutdown` turns true: plain HTTP/1.1 beside gRPC (as
/// etcd), every connection through the `:authority` filter, etcd's interceptor checks (learners,
/// `hasleader`) before any service, then the gRPC metrics, the end of `hasleader` streams without a
/// leader, and grpc-go's status for oversized requests. `incoming` yields the listener's connections,
/// plaintext or TLS, already handshaken (`transport::Acceptor::incoming`); each request carries its
/// connection's `transport::ConnInfo` in its extensions (the client certificate's CN for auth).
pub async fn serve<S: RaftStatusGetter>(
    srv: Arc<S>,
    routes: tonic::service::Routes,
    incoming: transport::Incoming,
    cfg: &ServeConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::StreamExt::map(incoming, |c| c.map(authority::FixAuthority::new));
    let keepalive = (!cfg.keepalive_interval.is_zero()).then_some(cfg.keepalive_interval);
    tonic::transport::Server::builder()
        // etcd answers plain HTTP/1.1 (/health, /metrics) on the same port as gRPC.
        .accept_http1(cfg.accept_http1)
        .max_concurrent_streams(Some(cfg.max_concurrent_streams))
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(cfg.keepalive_timeout))
        .layer(interceptor::layer(srv))
        .layer(grpc_metrics::layer(cfg.metrics))
        .layer(no_leader::layer(cfg.no_leader.clone()))
        .layer(tower::util::MapResponseLayer::new(fix_oversize_status))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}

/// Rewrites tonic's status for an oversized request message into grpc-go's, which etcd clients see from etcd:
/// `ResourceExhausted "grpc: received message larger than max (N vs. M)"`. tonic rejects such a request before
/// the service runs and answers trailers-only, so the status is in the response headers.
pub fn fix_oversize_status<B>(mut resp: http::Response<B>) -> http::Response<B> {
    const OUT_OF_RANGE: &[u8] = b"11";
    let h = resp.headers_mut();
    if h.get("grpc-status").map(|v| v.as_bytes()) != Some(OUT_OF_RANGE) {
        return resp;
    }
    let Some(msg) = h.get("grpc-message").and_then(|v| v.to_str().ok()) else {
        return resp;
    };
    let Some(text) = oversize_text(&percent_decode(msg)) else {
        return resp;
    };
    if let Ok(v) = http::HeaderValue::from_str(&text) {
        h.insert("grpc-status", http::HeaderValue::from_static("8"));
        h.insert("grpc-message", v);
    }
    resp
}

/// The same rewrite for a message received on a client stream (Watch, LeaseKeepAlive), where tonic
/// hands the status to the service instead of answering it.
pub(crate) fn grpc_go_receive_status(status: tonic::Status) -> tonic::Status {
    if status.code() != tonic::Code::OutOfRange {
        return status;
    }
    match oversize_text(status.message()) {
        Some(text) => tonic::Status::resource_exhausted(text),
        None => status,
    }
}

/// grpc-go's message for tonic's "decoded message length too large: found N bytes, the limit is: M bytes".
fn oversize_text(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("Error, decoded message length too large: found ")?;
    let mut nums = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let (found, limit) = (nums.next()?, nums.next()?);
    Some(format!(
        "grpc: received message larger than max ({found} vs. {limit})"
    ))
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn oversize_receive_status_is_grpc_gos_and_others_kept() {
        let s = super::grpc_go_receive_status(tonic::Status::out_of_range(
            "Error, decoded message length too large: found 2098190 bytes, the limit is: 2097152 bytes",
        ));
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "grpc: received message larger than max (2098190 vs. 2097152)"
        );
        for other in [
            tonic::Status::out_of_range("etcdserver: mvcc: required revision has been compacted"),
            tonic::Status::internal("Error, decoded message length too large: found 1 bytes"),
        ] {
            let kept = super::grpc_go_receive_status(other.clone());
            assert_eq!(
                (kept.code(), kept.message()),
                (other.code(), other.message())
            );
        }
    }

    #[test]
    fn oversize_status_is_rewritten_and_others_kept() {
        let mk = |code: &'static str, msg: &'static str| {
            let mut r = http::Response::new(());
            r.headers_mut()
                .insert("grpc-status", http::HeaderValue::from_static(code));
            r.headers_mut()
                .insert("grpc-message", http::HeaderValue::from_static(msg));
            r
        };
        let r = super::fix_oversize_status(mk(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%202098190%20bytes,%20the%20limit%20is:%202097152%20bytes",
        ));
        assert_eq!(r.headers()["grpc-status"], "8");
        assert_eq!(
            r.headers()["grpc-message"],
            "grpc: received message larger than max (2098190 vs. 2097152)"
        );
        let r = super::fix_oversize_status(mk(
            "11",
            "etcdserver:%20mvcc:%20required%20revision%20is%20a%20future%20revision",
        ));
        assert_eq!(r.headers()["grpc-status"], "11");
    }
}
