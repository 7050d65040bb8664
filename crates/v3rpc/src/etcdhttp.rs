//! The plain HTTP endpoints etcd serves on its client port, for load balancers, probes and scrapers:
//! `/health` (a linearizable read must succeed), `/livez`, `/readyz`, `/version` and `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::{metrics, MetricsSource, RaftStatusGetter, ReadIndexer, API_VERSION};

/// How long `/health` waits for a linearizable read before reporting unhealthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn router<S>(srv: Arc<S>) -> Router
where
    S: RaftStatusGetter + ReadIndexer + MetricsSource,
{
    let health = {
        let srv = srv.clone();
        move || health(srv.clone())
    };
    let readyz = {
        let srv = srv.clone();
        move || readyz(srv.clone())
    };
    let metrics = move || metrics_page(srv.clone());
    Router::new()
        .route("/health", get(health))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
}

/// Why the member is unhealthy, or None.
async fn check<S: RaftStatusGetter + ReadIndexer>(srv: &S) -> Option<&'static str> {
    if srv.leader() == 0 {
        return Some("RAFT NO LEADER");
    }
    match tokio::time::timeout(HEALTH_TIMEOUT, srv.linearizable_read()).await {
        Ok(Ok(())) => None,
        _ => Some("RAFT READ INDEX FAILED"),
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn health<S: RaftStatusGetter + ReadIndexer>(srv: Arc<S>) -> Response {
    match check(&*srv).await {
        None => json(StatusCode::OK, r#"{"health":"true","reason":""}"#.into()),
        Some(reason) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(r#"{{"health":"false","reason":"{reason}"}}"#),
        ),
    }
}

async fn readyz<S: RaftStatusGetter + ReadIndexer>(srv: Arc<S>) -> Response {
    match check(&*srv).await {
        None => (StatusCode::OK, "ok").into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[-]{reason}\nreadyz check failed"),
        )
            .into_response(),
    }
}

async fn version() -> Response {
    json(
        StatusCode::OK,
        format!(r#"{{"etcdserver":"{API_VERSION}","etcdcluster":"{API_VERSION}"}}"#),
    )
}

async fn metrics_page<S: MetricsSource>(srv: Arc<S>) -> Response {
    srv.refresh_metrics();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(),
    )
        .into_response()
}
