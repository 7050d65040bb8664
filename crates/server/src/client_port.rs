//! The member's client-facing listeners, as etcd's `embed` serves them:
//! * a client URL (`--listen-client-urls`): gRPC and, on the same port, plain HTTP (the JSON
//!   gateway, `/health`, `/livez`, `/readyz`, `/version`, `/metrics`); with
//!   `--listen-client-http-urls` set it serves gRPC only, as etcd 3.5 splits them;
//! * a client HTTP URL (`--listen-client-http-urls`): the plain HTTP part alone;
//! * a metrics URL (`--listen-metrics-urls`): `/metrics` and the health pages, without the gateway,
//!   `/version` or etcd's access control (as etcd's metrics mux).
//!
//! The services are built once and shared by every listener; each listener is served by
//! `v3rpc::serve`, so every one has the same interceptor, metrics and HTTP/2 settings.
//!
//! TLS is per address, from the URL schemes (`tls_listeners`): an address given as `https://` is
//! served with the client certificate (`--cert-file`, or `--auto-tls`), one given as both `http://`
//! and `https://` serves both on one port, told apart by the first byte of each connection (etcd's
//! cmux). The same certificate serves the client, client HTTP and metrics URLs, as in etcd.

use std::sync::Arc;

use tokio::sync::watch;

use crate::etcdserver::EtcdServer;

/// Go's `http.NotFound`, as etcd's metrics mux answers a path it does not serve.
async fn not_found() -> http::Response<axum::body::Body> {
    let mut r = http::Response::new(axum::body::Body::from("404 page not found\n"));
    *r.status_mut() = http::StatusCode::NOT_FOUND;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    r
}

#[derive(Clone)]
pub(crate) struct ClientPort {
    srv: Arc<EtcdServer>,
    grpc: tonic::service::Routes,
    plain: axum::Router,
    metrics: axum::Router,
    serve: v3rpc::ServeConfig,
    shutdown: watch::Receiver<bool>,
}

impl ClientPort {
    pub(crate) async fn new(
        srv: Arc<EtcdServer>,
        no_leader: v3rpc::no_leader::NoLeader,
        shutdown: watch::Receiver<bool>,
    ) -> ClientPort {
        let c = srv.cfg();
        let cfg = v3rpc::ClientConfig {
            max_request_bytes: c.max_request_bytes,
            max_txn_ops: c.max_txn_ops,
            watch_progress_notify_interval: c.progress_notify_interval(),
        };
        let serve = v3rpc::ServeConfig {
            max_concurrent_streams: c.max_concurrent_streams,
            keepalive_interval: c.grpc_keepalive_interval,
            keepalive_timeout: c.grpc_keepalive_timeout,
            metrics: v3rpc::grpc_metrics::MetricsConfig {
                extensive: c.metrics_extensive,
                warn_unary_duration: c.warning_unary_request_duration,
            },
            no_leader,
            accept_http1: true,
        };
        let timeout = c.request_timeout();
        let grpc = v3rpc::routes(srv.clone(), &cfg, shutdown.clone()).await;
        // The JSON gateway calls the same services in process, through the same layers as the gRPC
        // port (etcd's gateway dials its own gRPC port, so its calls count in the gRPC metrics too).
        let local = tower::ServiceBuilder::new()
            .layer(v3rpc::interceptor::layer(srv.clone()))
            .layer(v3rpc::grpc_metrics::layer(serve.metrics))
            .map_response(v3rpc::fix_oversize_status)
            .service(grpc.clone());
        let local = tower::ServiceBuilder::new()
            .map_response(|r: http::Response<_>| r.map(tonic::body::Body::new))
            .service(local);
        let plain = gateway::router(
            v3rpc::http_router(srv.clone(), timeout),
            gateway::GrpcService::new(local),
            gateway::Config {
                max_grpc_message_bytes: cfg.max_request_bytes + v3rpc::GRPC_OVERHEAD_BYTES,
                cors: c.cors.clone(),
                host_whitelist: c.host_whitelist.clone(),
                client_cert_auth: c.client_tls.client_cert_auth.then(|| {
                    let srv = srv.clone();
                    gateway::AuthEnabled::new(move || srv.auth_store().is_enabled())
                }),
            },
        )
        .unwrap_or_else(|e| {
            tracing::error!("JSON gateway not served: {e}");
            v3rpc::http_router(srv.clone(), timeout)
        });
        let metrics = v3rpc::metrics_router(srv.clone(), timeout).fallback(not_found);
        ClientPort {
            srv,
            grpc,
            plain,
            metrics,
            serve,
            shutdown,
        }
    }

    /// A client URL: gRPC, and plain HTTP beside it unless `with_http` is false.
    pub(crate) async fn serve(
        self,
        incoming: transport::Incoming,
        with_http: bool,
    ) -> Result<(), tonic::transport::Error> {
        let mut cfg = self.serve.clone();
        let routes = if with_http {
            tonic::service::Routes::from(self.plain.merge(self.grpc.into_axum_router()))
        } else {
            cfg.accept_http1 = false;
            self.grpc
        };
        v3rpc::serve(self.srv, routes, incoming, &cfg, self.shutdown).await
    }

    /// A client HTTP URL: the gateway and the HTTP pages.
    pub(crate) async fn serve_http(
        self,
        incoming: transport::Incoming,
    ) -> Result<(), tonic::transport::Error> {
        let routes = tonic::service::Routes::from(self.plain);
        v3rpc::serve(self.srv, routes, incoming, &self.serve, self.shutdown).await
    }

    /// A metrics URL: `/metrics` and the health pages.
    pub(crate) async fn serve_metrics(
        self,
        incoming: transport::Incoming,
    ) -> Result<(), tonic::transport::Error> {
        let routes = tonic::service::Routes::from(self.metrics);
        v3rpc::serve(self.srv, routes, incoming, &self.serve, self.shutdown).await
    }
}
