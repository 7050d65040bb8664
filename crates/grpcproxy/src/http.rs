//! The proxy's plain HTTP endpoints, on its listen address and on `--metrics-addr`, as etcd's
//! proxy serves them: `/metrics` (the cluster's metrics, fetched from an endpoint), `/health` (a
//! read through to the cluster), `/proxy/metrics` (the proxy's own) and `/proxy/health` (the
//! cluster read plus the proxy's upstream watch stream being up).

use std::sync::Arc;
use std::time::Duration;

use api::etcdserverpb::kv_client::KvClient;
use api::etcdserverpb::RangeRequest;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::metrics::Metrics;
use crate::upstream::{Retry, Upstream};
use crate::watch::mux::WatchMux;

/// etcd's proxy gives its health read one second.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long fetching the cluster's `/metrics` may take.
const METRICS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct HttpState {
    pub up: Arc<Upstream>,
    pub metrics: Arc<Metrics>,
    pub mux: Arc<WatchMux>,
}

pub fn router(st: HttpState) -> Router {
    let (a, b, c, d) = (st.clone(), st.clone(), st.clone(), st);
    Router::new()
        .route("/health", get(move || health(a.clone())))
        .route("/proxy/health", get(move || proxy_health(b.clone())))
        .route("/metrics", get(move || upstream_metrics(c.clone())))
        .route("/proxy/metrics", get(move || proxy_metrics(d.clone())))
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// None if a read of key "a" through to the cluster works (an auth refusal counts as working, as
/// permission denied does for etcd), else why not.
async fn check(up: &Upstream) -> Option<String> {
    let read = up.call(Retry::Safe, |ch| async move {
        KvClient::new(ch)
            .range(RangeRequest {
                key: b"a".to_vec(),
                ..Default::default()
            })
            .await
    });
    match tokio::time::timeout(HEALTH_TIMEOUT, read).await {
        Ok(Ok(_)) => None,
        // Auth refusing an anonymous read means the cluster serves.
        Ok(Err(s)) if crate::upstream::is_auth_error(&s) => None,
        Ok(Err(s)) => Some(format!("GET ERROR:{}", s.message())),
        Err(_) => Some("GET ERROR:context deadline exceeded".into()),
    }
}

fn health_answer(reason: Option<String>) -> Response {
    match reason {
        None => json(StatusCode::OK, r#"{"health":"true","reason":""}"#.into()),
        Some(r) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                r#"{{"health":"false","reason":"{}"}}"#,
                r.replace('\\', "\\\\").replace('"', "\\\"")
            ),
        ),
    }
}

async fn health(st: HttpState) -> Response {
    health_answer(check(&st.up).await)
}

async fn proxy_health(st: HttpState) -> Response {
    let mut reason = check(&st.up).await;
    if reason.is_none() && !st.mux.is_connected() {
        reason = Some("WATCH TIMEOUT".into());
    }
    health_answer(reason)
}

async fn proxy_metrics(st: HttpState) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

async fn upstream_metrics(st: HttpState) -> Response {
    let i = st.up.pinned();
    let url = st.up.endpoint(i).0.to_string();
    let tls = st.up.tls(i).cloned();
    match tokio::time::timeout(METRICS_TIMEOUT, http_get(&url, tls, "/metrics")).await {
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            body,
        )
            .into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error\n").into_response(),
    }
}

/// An HTTP/1.0 GET of `path` from the server at `url` (`http://host:port`, or `https://` with
/// the endpoint's TLS); the body of a 200 answer. Small on purpose: one request per scrape, no
/// connection reuse needed.
async fn http_get(
    url: &str,
    tls: Option<transport::ClientTls>,
    path: &str,
) -> std::io::Result<Vec<u8>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("only http:// and https:// endpoints"))?
        .trim_end_matches('/');
    let tcp = tokio::net::TcpStream::connect(host).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    let mut buf = Vec::new();
    match tls {
        None => {
            let mut s = tcp;
            s.write_all(request.as_bytes()).await?;
            s.read_to_end(&mut buf).await?;
        }
        Some(tls) => {
            // The gRPC dialer offers only h2; this request is HTTP/1.
            let mut config = (*tls.config()).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
            let name = tls.server_name(name).map_err(|e| bad(&e.to_string()))?;
            let mut s = transport::tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(name, tcp)
                .await?;
            s.write_all(request.as_bytes()).await?;
            // Go servers close without a TLS close_notify; what was read so far is the answer.
            if let Err(e) = s.read_to_end(&mut buf).await {
                if buf.is_empty() {
                    return Err(e);
                }
            }
        }
    }
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&buf[..split]);
    if head.split(' ').nth(1) != Some("200") {
        return Err(bad("not 200"));
    }
    Ok(buf[split + 4..].to_vec())
}
