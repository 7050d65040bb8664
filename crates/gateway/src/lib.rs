//! etcd's HTTP/JSON gateway on the client port: `POST /v3/kv/range` with `{"key":"Zm9v"}` and the
//! rest of etcd's gRPC-gateway routes, answered with the bytes etcd 3.4's gateway writes.
//!
//! The gateway has no RPC semantics of its own. Each request is decoded from JSON into the gRPC
//! request message (by descriptor, `jsonpb`), sent as a gRPC call to the service stack the caller
//! hands in (in Hearth, the very stack the gRPC port serves: interceptors, size limits,
//! validation, auth), and the response message is encoded back to JSON. What this crate adds is
//! only what etcd's gateway adds: routing (`routes`, `mux`), the JSON mapping (`jsonpb`), the error
//! and stream framing (`errors`, `handler`), header metadata (`Authorization` → `token`).
//!
//! Bounded memory: a request body is read one JSON value at a time with a cap per value (`body`);
//! streamed responses are pulled from the gRPC stream only as fast as the HTTP client reads them.
//!
//! ```text
//! HTTP/1.1 ──► mux (CORS, /v3beta, 301, 404/405) ──► handler ──► jsonpb::decode ──► gRPC call
//!                                                        ◄── jsonpb::encode ◄── response(s)
//! ```

#![forbid(unsafe_code)]

mod body;
mod codec;
mod errors;
mod handler;
mod jsonpb;
mod mux;
mod routes;

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::routing::any;
use axum::Router;
use http::uri::PathAndQuery;
use prost_reflect::{DescriptorPool, MessageDescriptor};
use tower::util::BoxCloneSyncService;

/// The gRPC services the gateway calls: any `tower` service that answers gRPC requests.
pub type GrpcService = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    Infallible,
>;

/// Limits of the gateway.
#[derive(Clone, Debug)]
pub struct Config {
    /// The largest gRPC message the server accepts (etcd's `--max-request-bytes` plus its gRPC
    /// overhead allowance).
    pub max_grpc_message_bytes: usize,
}

impl Config {
    /// The cap on one JSON value of a request body. JSON is larger than the protobuf it encodes
    /// (base64 is 4/3 of the bytes, an array of byte values up to 4 times), so a body up to four
    /// times the gRPC limit is decoded and left to the server to judge as etcd's gateway does;
    /// only beyond that does the gateway refuse on its own, without buffering more.
    fn max_body_bytes(&self) -> usize {
        self.max_grpc_message_bytes
            .saturating_mul(4)
            .saturating_add(64 * 1024)
    }
}

/// A gRPC method the gateway serves.
#[derive(Debug)]
struct Method {
    path: PathAndQuery,
    input: MessageDescriptor,
    output: MessageDescriptor,
    client_streaming: bool,
    server_streaming: bool,
}

/// What every request shares.
struct Inner {
    schema: jsonpb::Schema,
    /// In `routes::ROUTES` order.
    methods: Vec<Arc<Method>>,
    grpc: GrpcService,
    max_body_bytes: usize,
}

/// Why the gateway could not be set up (a route names a method the protos do not have).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("descriptor set: {0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
    #[error("gateway route {path}: no method {service}/{method} in the protos")]
    UnknownMethod {
        path: &'static str,
        service: &'static str,
        method: &'static str,
    },
    #[error("gateway route {0}: invalid gRPC path")]
    BadPath(&'static str),
}

fn methods(pool: &DescriptorPool) -> Result<Vec<Arc<Method>>, Error> {
    routes::ROUTES
        .iter()
        .map(|&(path, service, method)| {
            let m = pool
                .get_service_by_name(service)
                .and_then(|s| s.methods().find(|m| m.name() == method))
                .ok_or(Error::UnknownMethod {
                    path,
                    service,
                    method,
                })?;
            let grpc_path = PathAndQuery::try_from(format!("/{service}/{method}"))
                .map_err(|_| Error::BadPath(path))?;
            Ok(Arc::new(Method {
                path: grpc_path,
                input: m.input(),
                output: m.output(),
                client_streaming: m.is_client_streaming(),
                server_streaming: m.is_server_streaming(),
            }))
        })
        .collect()
}

/// The client port's plain-HTTP side: `base` (the server's own pages, e.g. `/health`) and the
/// gateway's `/v3/...` routes, behind etcd's access control (CORS headers, `OPTIONS`), with Go's
/// `404 page not found` for other paths (gRPC requests for unknown services get `Unimplemented`).
/// Gateway calls go to `grpc`.
pub fn router(base: Router, grpc: GrpcService, config: Config) -> Result<Router, Error> {
    let pool = DescriptorPool::decode(api::FILE_DESCRIPTOR_SET)?;
    let inner = Arc::new(Inner {
        schema: jsonpb::Schema::new(&pool),
        methods: methods(&pool)?,
        grpc,
        max_body_bytes: config.max_body_bytes(),
    });
    let serve = move |req: http::Request<Body>| {
        let inner = inner.clone();
        async move { route(inner, req).await }
    };
    Ok(base
        .route("/v3/", any(serve.clone()))
        .route("/v3/{*rest}", any(serve.clone()))
        .route("/v3beta/{*rest}", any(serve))
        .fallback(mux::fallback)
        .layer(axum::middleware::from_fn(mux::access_control)))
}

async fn route(inner: Arc<Inner>, req: http::Request<Body>) -> http::Response<Body> {
    let (parts, body) = req.into_parts();
    let path = mux::effective_path(parts.uri.path());
    match mux::lookup(&parts.method, &path, parts.uri.query()) {
        mux::Lookup::Route(i) => {
            let Some(method) = inner.methods.get(i).cloned() else {
                return errors::not_found();
            };
            handler::call(inner, method, parts.headers, body).await
        }
        mux::Lookup::Redirect(to) => mux::redirect(&parts.method, &to),
        mux::Lookup::NotFound => errors::not_found(),
        mux::Lookup::MethodNotAllowed => errors::method_not_allowed(),
    }
}
