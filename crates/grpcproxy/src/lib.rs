//! Hearth's gRPC proxy (`hearth grpc-proxy start`), after etcd's `server/proxy/grpcproxy`: a
//! stateless process between many clients and a cluster (Hearth or etcd) that serves every etcd
//! service, so etcdctl, the client libraries and the JSON gateway (`/v3/...`, served on the listen
//! address as by a member) work through it unchanged, while sparing the cluster:
//!
//! * **Watch coalescing** (`watch`): client watchers on the same key range share one upstream
//!   watcher, including watchers that start from an older revision (they catch up on their own
//!   upstream watcher, then merge without gap or duplicate) and slow clients (dropped from the
//!   group and resynced, never slowing it). Every guarantee of Watch holds per client watcher.
//! * **Caching** (`cache`, `kv`): serializable Range answers, invalidated by the proxy's writes and
//!   by one upstream watch of the whole key space, and never older than a revision the proxy has
//!   already passed on; linearizable reads always go to the cluster. Bounded in bytes, LRU.
//! * **Lease keep-alive coalescing** (`lease`): one upstream keep-alive stream; concurrent
//!   keep-alives of one lease become one upstream keep-alive.
//! * **Namespaces** (`namespace`): `--namespace` prefixes every key both ways.
//! * **Upstream faults** (`upstream`, `watch::mux`): failover across `--endpoints`, watchers
//!   resumed from their last revision, etcd's errors passed through.
//! * **TLS** on both sides (`transport`): clients reach the listen address (and an `https://`
//!   `--metrics-addr`) over TLS when a certificate is configured, with client certificates
//!   verified against `--trusted-ca-file` and `--client-crl-file`; the cluster is dialed over TLS
//!   as `upstream` describes.
//! * **Auth**: each client's token travels with its calls; every new watcher is first checked
//!   by the cluster with its client's credentials (`watch`), and watchers are coalesced only
//!   among clients with the same credentials (`watch::groups`); the cache is off once the
//!   cluster is seen with auth enabled (`kv`).
//!
//! Unlike etcd 3.5's proxy, whose listen address serves only gRPC and the health and metrics
//! pages, this one also serves the JSON gateway there, as a member's client URL does.
//!
//! Layering: the services implement the tonic server traits of the `api` crate and talk to the
//! cluster only through its tonic clients; nothing here depends on Hearth's server crates, so the
//! proxy works in front of etcd as well.

#![forbid(unsafe_code)]

pub mod cache;
mod http;
pub mod kv;
pub mod lease;
pub mod metrics;
pub mod namespace;
pub mod services;
pub mod upstream;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::etcdserverpb::auth_server::AuthServer;
use api::etcdserverpb::cluster_server::ClusterServer;
use api::etcdserverpb::kv_server::KvServer;
use api::etcdserverpb::lease_server::LeaseServer;
use api::etcdserverpb::maintenance_server::MaintenanceServer;
use api::etcdserverpb::watch_server::WatchServer;
use api::v3electionpb::election_server::ElectionServer;
use api::v3lockpb::lock_server::LockServer;
use tokio::sync::watch as signal;

pub use upstream::UpstreamConfig;

/// Default bound of the serializable-read cache.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;
/// What a gRPC request may weigh beyond `--max-send-bytes` (framing, metadata).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// grpc-go's default receive limit, which etcd's proxy keeps for its clients.
const GRPC_DEFAULT_RECV_BYTES: usize = 4 << 20;

/// How a proxy runs: etcd's `grpc-proxy start` flags that Hearth implements.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--listen-addr`: host:port for client gRPC and HTTP.
    pub listen_addr: String,
    /// `--metrics-addr`: an extra `http://host:port` for `/metrics` and the health endpoints.
    pub metrics_addr: Option<String>,
    pub upstream: UpstreamConfig,
    /// `--advertise-client-url`: what `MemberList` answers; empty passes it through.
    pub advertise_client_url: String,
    /// `--namespace`.
    pub namespace: String,
    /// `--experimental-serializable-ordering`.
    pub serializable_ordering: bool,
    /// `--experimental-cache-max-bytes` (Hearth's own; 0 disables the cache).
    pub cache_max_bytes: usize,
    /// `--grpc-keepalive-interval` / `--grpc-keepalive-timeout` (server side; zero disables).
    pub grpc_keepalive_interval: Duration,
    pub grpc_keepalive_timeout: Duration,
    /// `--max-concurrent-streams`.
    pub max_concurrent_streams: u32,
    /// Client-facing TLS (`--cert-file --key-file --trusted-ca-file --client-crl-file`, or
    /// `--auto-tls`); None serves plaintext.
    pub tls: Option<transport::ServerTls>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Endpoint(#[from] upstream::EndpointError),
    #[error("invalid {flag} {value:?}: {why}")]
    Address {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
}

/// A client connection as the proxy serves it: whatever the caller's wrapper made of the accepted
/// connection, with what is known about it (addresses, TLS) for the services.
pub struct ProxyConn<IO> {
    io: IO,
    info: transport::ConnInfo,
}

impl<IO> tonic::transport::server::Connected for ProxyConn<IO> {
    type ConnectInfo = transport::ConnInfo;

    fn connect_info(&self) -> transport::ConnInfo {
        self.info.clone()
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ProxyConn<IO> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ProxyConn<IO> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The proxy's services and shared parts.
pub struct Services {
    pub up: Arc<upstream::Upstream>,
    pub metrics: Arc<metrics::Metrics>,
    pub mux: Arc<watch::mux::WatchMux>,
    pub cache: Option<Arc<cache::Cache>>,
    pub watch_groups: Arc<watch::groups::WatchGroups>,
    kv: Arc<kv::KvProxy>,
    watch: Arc<watch::WatchProxy>,
    lease: Arc<lease::LeaseProxy>,
    cfg: Config,
    _cache_watch: Option<Arc<kv::CacheWatch>>,
}

impl Services {
    /// Builds the services and starts their background tasks (the upstream watch stream, the
    /// keep-alive stream, the cache's invalidation watch). Must run inside a tokio runtime.
    pub fn new(cfg: Config) -> Result<Services, ProxyError> {
        let up = upstream::Upstream::new(&cfg.upstream)?;
        let metrics = Arc::new(metrics::Metrics::new());
        let mux = watch::mux::WatchMux::spawn(up.clone(), metrics.clone());
        let ns = namespace::Namespace::new(cfg.namespace.as_bytes());
        let cache =
            (cfg.cache_max_bytes > 0).then(|| Arc::new(cache::Cache::new(cfg.cache_max_bytes)));
        let cache_watch = cache
            .as_ref()
            .map(|c| kv::CacheWatch::start(c.clone(), up.clone(), mux.clone()));
        let watch_groups = Arc::new(watch::groups::WatchGroups::new(
            up.clone(),
            metrics.clone(),
            mux.clone(),
        ));
        let kv = Arc::new(kv::KvProxy {
            up: up.clone(),
            ns: ns.clone(),
            cache: cache.clone(),
            metrics: metrics.clone(),
            ordering: cfg.serializable_ordering,
        });
        let watch = Arc::new(watch::WatchProxy {
            groups: watch_groups.clone(),
            up: up.clone(),
            ns: ns.clone(),
            fragment_bytes: cfg.upstream.max_send_bytes,
        });
        let lease = Arc::new(lease::LeaseProxy {
            up: up.clone(),
            ns,
            keepalives: Arc::new(lease::KeepAliveHubs::new(up.clone(), metrics.clone())),
        });
        Ok(Services {
            up,
            metrics,
            mux,
            cache,
            watch_groups,
            kv,
            watch,
            lease,
            cfg,
            _cache_watch: cache_watch,
        })
    }

    /// Every client-facing route of the proxy: the etcd gRPC services, `grpc.health.v1`, the JSON
    /// gateway (`/v3/...`, calling the same services in process, so its calls take the same path
    /// through the proxy as gRPC ones) and the plain HTTP endpoints.
    pub async fn routes(&self) -> tonic::service::Routes {
        let max_recv =
            GRPC_DEFAULT_RECV_BYTES.max(self.cfg.upstream.max_send_bytes + GRPC_OVERHEAD_BYTES);
        let grpc = self.grpc_routes().await;
        let local = tower::ServiceBuilder::new()
            .map_response(|r: ::http::Response<_>| r.map(tonic::body::Body::new))
            .service(grpc.clone());
        let plain = gateway::router(
            self.http_router(),
            gateway::GrpcService::new(local),
            gateway::Config {
                max_grpc_message_bytes: max_recv,
                cors: Vec::new(),
                host_whitelist: Vec::new(),
                // etcd's proxy serves its gateway without etcd's access controller.
                client_cert_auth: None,
            },
        )
        .unwrap_or_else(|e| {
            tracing::error!("JSON gateway not served: {e}");
            self.http_router()
        });
        tonic::service::Routes::from(plain.merge(grpc.into_axum_router()))
    }

    /// The gRPC services alone.
    async fn grpc_routes(&self) -> tonic::service::Routes {
        let max_recv =
            GRPC_DEFAULT_RECV_BYTES.max(self.cfg.upstream.max_send_bytes + GRPC_OVERHEAD_BYTES);
        let ns = namespace::Namespace::new(self.cfg.namespace.as_bytes());
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        // No fallback of its own: the gateway's router (merged with this one) has Go's 404.
        tonic::service::Routes::from(axum::Router::new())
            .add_service(health)
            .add_service(KvServer::from_arc(self.kv.clone()).max_decoding_message_size(max_recv))
            .add_service(
                WatchServer::from_arc(self.watch.clone()).max_decoding_message_size(max_recv),
            )
            .add_service(
                LeaseServer::from_arc(self.lease.clone()).max_decoding_message_size(max_recv),
            )
            .add_service(
                ClusterServer::new(services::ClusterProxy {
                    up: self.up.clone(),
                    advertise_client_url: self.cfg.advertise_client_url.clone(),
                })
                .max_decoding_message_size(max_recv),
            )
            .add_service(
                MaintenanceServer::new(services::MaintenanceProxy {
                    up: self.up.clone(),
                })
                .max_decoding_message_size(max_recv),
            )
            .add_service(
                AuthServer::new(services::AuthProxy {
                    up: self.up.clone(),
                })
                .max_decoding_message_size(max_recv),
            )
            .add_service(
                LockServer::new(services::LockProxy {
                    up: self.up.clone(),
                    ns: ns.clone(),
                })
                .max_decoding_message_size(max_recv),
            )
            .add_service(
                ElectionServer::new(services::ElectionProxy {
                    up: self.up.clone(),
                    ns,
                })
                .max_decoding_message_size(max_recv),
            )
    }

    /// `/health`, `/metrics`, `/proxy/health`, `/proxy/metrics`.
    pub fn http_router(&self) -> axum::Router {
        http::router(http::HttpState {
            up: self.up.clone(),
            metrics: self.metrics.clone(),
            mux: self.mux.clone(),
        })
    }
}

/// A running proxy. Dropping it does not stop it: call `stop`.
pub struct GrpcProxy {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: signal::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// `host:port`, or a URL's `host:port`; true for an `https://` URL.
fn socket_addr(flag: &'static str, value: &str) -> Result<(SocketAddr, bool), ProxyError> {
    let (hostport, tls) = match value.split_once("://") {
        Some(("http", rest)) => (rest.trim_end_matches('/'), false),
        Some(("https", rest)) => (rest.trim_end_matches('/'), true),
        Some((scheme, _)) => {
            return Err(ProxyError::Address {
                flag,
                value: value.into(),
                why: format!("scheme {scheme} is not supported"),
            })
        }
        None => (value, false),
    };
    let hostport = hostport.replace("localhost", "127.0.0.1");
    let addr = hostport
        .parse()
        .map_err(|e: std::net::AddrParseError| ProxyError::Address {
            flag,
            value: value.into(),
            why: e.to_string(),
        })?;
    Ok((addr, tls))
}

impl GrpcProxy {
    pub async fn start(cfg: Config) -> Result<GrpcProxy, ProxyError> {
        GrpcProxy::start_with(cfg, |s| s).await
    }

    /// Like `start`, with every accepted client connection (after its TLS handshake) passed
    /// through `wrap` before HTTP/2 sees it. The `hearth` binary passes the server's `:authority`
    /// fix-up here, so etcdctl 3.4 (which sends `http://host:port` as authority) works through the
    /// proxy as it does against a member; the proxy itself stays free of the server's crates.
    pub async fn start_with<W, IO>(cfg: Config, wrap: W) -> Result<GrpcProxy, ProxyError>
    where
        W: Fn(transport::Conn) -> IO + Send + 'static,
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (addr, _) = socket_addr("--listen-addr", &cfg.listen_addr)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| ProxyError::Listen(cfg.listen_addr.clone(), e))?;
        let addr = listener.local_addr().unwrap_or(addr);
        let acceptor = |tls: bool| match (&cfg.tls, tls) {
            (Some(t), true) => transport::Acceptor::tls(t.clone()),
            _ => transport::Acceptor::plain(transport::Role::Client),
        };
        let metrics_listener = match &cfg.metrics_addr {
            Some(m) => {
                let (a, tls) = socket_addr("--metrics-addr", m)?;
                if tls && cfg.tls.is_none() {
                    return Err(ProxyError::Address {
                        flag: "--metrics-addr",
                        value: m.clone(),
                        why: "https needs the proxy's TLS (--cert-file and --key-file, or --auto-tls)".into(),
                    });
                }
                let l = tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| ProxyError::Listen(m.clone(), e))?;
                Some(acceptor(tls).incoming(l))
            }
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr());
        let (shutdown, rx) = signal::channel(false);
        let services = Services::new(cfg.clone())?;
        let routes = services.routes().await;
        let mut tasks = Vec::new();
        // etcd serves TLS alone on a TLS listen address (gRPC and HTTP/1.1 over it).
        let incoming = tokio_stream::StreamExt::map(acceptor(true).incoming(listener), move |c| {
            c.map(|c| {
                let info = c.info().clone();
                ProxyConn { io: wrap(c), info }
            })
        });
        let mut server = tonic::transport::Server::builder()
            .accept_http1(true)
            .max_concurrent_streams(cfg.max_concurrent_streams);
        if !cfg.grpc_keepalive_interval.is_zero() {
            server = server.http2_keepalive_interval(Some(cfg.grpc_keepalive_interval));
        }
        if !cfg.grpc_keepalive_timeout.is_zero() {
            server = server.http2_keepalive_timeout(Some(cfg.grpc_keepalive_timeout));
        }
        let mut stop = rx.clone();
        let serve = server
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        tasks.push(tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!("gRPC proxy server stopped: {e}");
            }
        }));
        if let Some(l) = metrics_listener {
            let routes = tonic::service::Routes::from(services.http_router());
            let mut stop = rx.clone();
            let incoming = l;
            tasks.push(tokio::spawn(async move {
                let r = tonic::transport::Server::builder()
                    .accept_http1(true)
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = r {
                    tracing::error!("metrics listener stopped: {e}");
                }
            }));
        }
        Ok(GrpcProxy {
            addr,
            metrics_addr,
            shutdown,
            tasks,
        })
    }

    /// The bound client address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops serving; streams still open after a short grace are dropped.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for mut t in self.tasks {
            // Watch and keep-alive streams never end on their own.
            if tokio::time::timeout(Duration::from_secs(1), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }
}
