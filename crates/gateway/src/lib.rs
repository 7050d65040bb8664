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
//! HTTP/1.1 ──► mux (access, CORS, /v3beta, 301, 404/405) ──► handler ──► jsonpb::decode ──► gRPC call
//!                                                                ◄── jsonpb::encode ◄── response(s)
//! ```
//!
//! # Where the answers differ from etcd 3.4's gateway
//!
//! Bodies and statuses are meant to be equal (the side-by-side tests in `tests/tests/gateway.rs`
//! check them). What is knowingly different:
//! - HTTP framing details: header names are lower case and in another order (hyper's way); the
//!   trailers of a failed call (`Grpc-Trailer-Content-Type`) are announced but, as HTTP/1.1 asks,
//!   only sent to a client that said `TE: trailers` (etcd sends them to everyone).
//! - Not served: the WebSocket form of the streaming routes (etcd wraps its gateway in
//!   grpc-websocket-proxy), `X-HTTP-Method-Override`, the `Grpc-Timeout` request header, binary
//!   (`-bin`) metadata headers.
//! - A request value more than four times the gRPC message limit is refused by the gateway itself
//!   (ResourceExhausted, naming the body's size); etcd reads any body and its server then names
//!   the message's size. Below that, the server decides, as in etcd.
//! - Messages nested deeper than 100 levels (a txn in a txn in ...) are refused with
//!   `exceeded max depth`; Hearth's gRPC services refuse them too (prost's recursion limit).
//! - Several members of one oneof in a request: Go keeps one in random (map) order, Hearth the
//!   last declared. Non-printable non-ASCII characters in quoted error texts follow Go's
//!   `unicode.IsPrint` closely but not for every code point.
//! - etcd 3.5's routes `/v3/maintenance/hashkv`, `/v3/maintenance/downgrade` and
//!   `/v3/auth/status` are served as well.

#![forbid(unsafe_code)]

mod body;
mod codec;
mod errors;
#[doc(hidden)]
pub mod fuzzing;
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

/// Limits and access control of the gateway.
#[derive(Clone, Debug)]
pub struct Config {
    /// The largest gRPC message the server accepts (etcd's `--max-request-bytes` plus its gRPC
    /// overhead allowance).
    pub max_grpc_message_bytes: usize,
    /// etcd's `--cors`: origins the answers allow (`*` or empty: any).
    pub cors: Vec<String>,
    /// etcd's `--host-whitelist`: `Host` names a request over a plain-text connection may carry
    /// (`*` or empty: any). A TLS connection is never checked: the whitelist defends against DNS
    /// rebinding, which a verified server certificate already defeats.
    pub host_whitelist: Vec<String>,
    /// `Some` when the server requires client certificates (etcd's `--client-cert-auth`): then,
    /// while auth is enabled, a `/v3/...` request over TLS whose client certificate has a CN is
    /// refused, as etcd refuses it. Under `--client-cert-auth` a gRPC client's CN is its user, but a
    /// gateway call reaches the services without the client's certificate (etcd's dials its own
    /// port; Hearth's is in process), so the CN could never count; etcd says so rather than run the
    /// request as someone else than the client meant.
    pub client_cert_auth: Option<AuthEnabled>,
}

/// Whether the server's auth is enabled, asked at each request (it changes at run time).
#[derive(Clone)]
pub struct AuthEnabled(Arc<dyn Fn() -> bool + Send + Sync>);

impl AuthEnabled {
    /// `f` answers whether auth is enabled now; it is called once per request over TLS.
    pub fn new(f: impl Fn() -> bool + Send + Sync + 'static) -> AuthEnabled {
        AuthEnabled(Arc::new(f))
    }

    fn get(&self) -> bool {
        (self.0)()
    }
}

impl std::fmt::Debug for AuthEnabled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthEnabled").finish_non_exhaustive()
    }
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
/// gateway's `/v3/...` routes, behind etcd's access control (`--host-whitelist`, the client
/// certificate check, CORS headers, `OPTIONS`), with Go's `404 page not found` for other paths (gRPC
/// requests for unknown services get `Unimplemented`). Gateway calls go to `grpc`. Whether a
/// request came over TLS, and with which client certificate, is read from the
/// `transport::ConnInfo` in its extensions (the one `transport::Conn` gives tonic); a request
/// without one is taken as plain text, so the whitelist applies.
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
        // Go's ServeMux sends a request for a subtree's bare name to the subtree.
        .route(
            "/v3",
            any(|req: http::Request<Body>| async move { mux::redirect(req.method(), "/v3/") }),
        )
        .route("/v3/", any(serve.clone()))
        .route("/v3/{*rest}", any(serve.clone()))
        .route("/v3beta/{*rest}", any(serve))
        .fallback(mux::fallback)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(mux::Access::new(
                &config.cors,
                &config.host_whitelist,
                config.client_cert_auth.clone(),
            )),
            mux::access_control,
        )))
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

#[cfg(test)]
mod tests {
    //! The gateway against a stand-in KV service: what reaches the service is what a gRPC client
    //! would have sent, metadata included.

    use super::*;
    use api::etcdserverpb::kv_server::{Kv, KvServer};
    use api::etcdserverpb::{
        CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
        PutResponse, RangeRequest, RangeResponse, RangeStreamResponse, TxnRequest, TxnResponse,
    };
    use api::mvccpb::KeyValue;
    use http_body_util::BodyExt;
    use tonic::{Request, Response, Status};
    use tower::ServiceExt;

    /// Answers a Range with one key: the requested key, its value the `token` metadata it got.
    struct EchoToken;

    #[tonic::async_trait]
    impl Kv for EchoToken {
        type RangeStreamStream = futures::stream::Empty<Result<RangeStreamResponse, Status>>;

        async fn range_stream(
            &self,
            _: Request<RangeRequest>,
        ) -> Result<Response<Self::RangeStreamStream>, Status> {
            Err(Status::unimplemented("not served by the stand-in"))
        }
        async fn range(
            &self,
            req: Request<RangeRequest>,
        ) -> Result<Response<RangeResponse>, Status> {
            let token = req
                .metadata()
                .get("token")
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            Ok(Response::new(RangeResponse {
                kvs: vec![KeyValue {
                    key: req.into_inner().key,
                    value: token,
                    ..Default::default()
                }],
                count: 1,
                ..Default::default()
            }))
        }
        async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
            Err(Status::unimplemented("put"))
        }
        async fn delete_range(
            &self,
            _: Request<DeleteRangeRequest>,
        ) -> Result<Response<DeleteRangeResponse>, Status> {
            Err(Status::unimplemented("delete_range"))
        }
        async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
            Err(Status::unimplemented("txn"))
        }
        async fn compact(
            &self,
            _: Request<CompactionRequest>,
        ) -> Result<Response<CompactionResponse>, Status> {
            Err(Status::failed_precondition(
                "etcdserver: nothing to compact",
            ))
        }
    }

    fn app() -> Router {
        let grpc = tonic::service::Routes::new(KvServer::new(EchoToken));
        router(
            Router::new(),
            GrpcService::new(grpc),
            Config {
                max_grpc_message_bytes: 1 << 20,
                cors: vec!["*".into()],
                host_whitelist: vec!["*".into()],
                client_cert_auth: None,
            },
        )
        .expect("every route names a method of the protos")
    }

    async fn post(path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        let mut b = http::Request::post(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = app()
            .oneshot(b.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn the_authorization_header_reaches_the_service_as_its_token() {
        let (status, body) = post(
            "/v3/kv/range",
            &[("authorization", "user1.42")],
            r#"{"key":"Zm9v"}"#,
        )
        .await;
        assert_eq!(status, 200);
        // "dXNlcjEuNDI=" is base64("user1.42").
        assert_eq!(
            body,
            r#"{"kvs":[{"key":"Zm9v","value":"dXNlcjEuNDI="}],"count":"1"}"#
        );
        // Without the header, no token.
        let (_, body) = post("/v3/kv/range", &[], r#"{"key":"Zm9v"}"#).await;
        assert_eq!(body, r#"{"kvs":[{"key":"Zm9v"}],"count":"1"}"#);
    }

    #[tokio::test]
    async fn service_errors_keep_their_code_and_message() {
        let (status, body) = post("/v3/kv/compaction", &[], "{}").await;
        assert_eq!(status, 412);
        assert_eq!(
            body,
            r#"{"error":"etcdserver: nothing to compact","message":"etcdserver: nothing to compact","code":9}"#
        );
        // A service the stack does not have answers gRPC's Unimplemented.
        let (status, _) = post("/v3/lease/grant", &[], "{}").await;
        assert_eq!(status, 501);
    }

    /// A connection's facts as `transport::Conn` hands them to tonic: plain text, or TLS with a
    /// client certificate named `cn` (`Some("")`: a certificate without a CN).
    fn conn(tls: bool, cn: Option<&str>) -> transport::ConnInfo {
        let tls = tls.then(|| transport::TlsConnInfo {
            peer_certificates: Vec::new(),
            peer: cn.map(|cn| transport::CertSummary {
                common_name: (!cn.is_empty()).then(|| cn.to_string()),
                ..Default::default()
            }),
            alpn: None,
            version: None,
            cipher_suite: None,
            server_name: None,
        });
        transport::ConnInfo::new(None, None, tls)
    }

    #[tokio::test]
    async fn access_control_looks_at_the_host_on_plain_text_and_at_the_certificate_on_tls() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let auth = Arc::new(AtomicBool::new(false));
        let flag = auth.clone();
        let app = router(
            Router::new(),
            GrpcService::new(tonic::service::Routes::new(KvServer::new(EchoToken))),
            Config {
                max_grpc_message_bytes: 1 << 20,
                cors: vec!["*".into()],
                host_whitelist: vec!["localhost".into()],
                client_cert_auth: Some(AuthEnabled::new(move || flag.load(Ordering::SeqCst))),
            },
        )
        .unwrap();
        let send = |path: &str, host: &str, conn: Option<transport::ConnInfo>| {
            let mut req = http::Request::post(path)
                .header("host", host)
                .body(Body::from(r#"{"key":"Zm9v"}"#))
                .unwrap();
            if let Some(c) = conn {
                req.extensions_mut().insert(c);
            }
            let app = app.clone();
            async move {
                let resp = app.oneshot(req).await.unwrap();
                let status = resp.status().as_u16();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&bytes).into_owned())
            }
        };
        let plain = || Some(conn(false, None));
        let alice = || Some(conn(true, Some("alice")));
        let nameless = || Some(conn(true, Some("")));
        // The whitelist: plain text (or no connection facts at all) only.
        for (host, c, want) in [
            ("other", None, 421),
            ("other", plain(), 421),
            ("localhost:2379", plain(), 200),
            ("other", alice(), 200),
        ] {
            assert_eq!(
                send("/v3/kv/range", host, c.clone()).await.0,
                want,
                "{host} {c:?}"
            );
        }
        // The CN check: only with auth enabled, only on /v3/ (or /v3beta/) paths, only for a
        // certificate with a CN, only over TLS.
        auth.store(true, Ordering::SeqCst);
        let refused = (
            400,
            "CommonName of client sending a request against gateway will be ignored and not used as expected\n"
                .to_string(),
        );
        for path in ["/v3/kv/range", "/v3beta/kv/range", "/v3/no/such/route"] {
            assert_eq!(send(path, "other", alice()).await, refused, "{path}");
        }
        for (path, host, c, want) in [
            ("/elsewhere", "other", alice(), 404),
            ("/v3/kv/range", "other", nameless(), 200),
            ("/v3/kv/range", "localhost", plain(), 200),
        ] {
            assert_eq!(send(path, host, c.clone()).await.0, want, "{path} {c:?}");
        }
        auth.store(false, Ordering::SeqCst);
        assert_eq!(send("/v3/kv/range", "other", alice()).await.0, 200);
    }

    #[test]
    fn every_route_names_a_method_of_the_protos() {
        let pool = DescriptorPool::decode(api::FILE_DESCRIPTOR_SET).unwrap();
        let methods = methods(&pool).unwrap();
        assert_eq!(methods.len(), routes::ROUTES.len());
        let watch = routes::ROUTES
            .iter()
            .position(|(p, _, _)| *p == "/v3/watch")
            .unwrap();
        assert!(methods[watch].client_streaming && methods[watch].server_streaming);
    }
}
