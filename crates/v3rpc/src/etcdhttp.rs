//! The plain HTTP endpoints etcd 3.5 serves for load balancers, probes and scrapers (its
//! `etcdhttp` package): `/health`, `/livez`, `/readyz` and their per-check sub-paths, `/version`
//! and `/metrics`. The client URLs serve all of them; `--listen-metrics-urls` serve all but
//! `/version`, as etcd's metrics mux does.
//!
//! What each answers, as etcd 3.5.33's `health.go`:
//! * `/health`: unhealthy on an active alarm not named in `?exclude=` (`ALARM NOSPACE`, `ALARM
//!   CORRUPT`), then with no leader (`RAFT NO LEADER`, not checked with `?serializable=true`), then
//!   when a one-key Range fails (`RANGE ERROR:<error>`; linearizable unless `?serializable=true`).
//!   JSON `{"health":"true","reason":""}`, 503 when unhealthy.
//! * `/livez`: a serializable read. `/readyz`: no CORRUPT alarm (`data_corruption`), a serializable
//!   read, a linearizable read, not a learner (`non_learner`, etcd 3.5.19 on). `ok\n`, or with `?verbose` each check as `[+]name ok`; a failed
//!   check answers 503 with every check's line (`[-]name failed: <error>`). `?exclude=name` skips a
//!   check of the root path; `/livez/<check>` and `/readyz/<check>` run one check.
//!
//! etcd runs the checks of a root path in Go's map order (random); Hearth runs them in the order
//! above, so a verbose answer is stable.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::RawQuery;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use prometheus::{
    register_counter, register_counter_vec, register_gauge_vec, Counter, CounterVec, GaugeVec,
};

use api::etcdserverpb::{AlarmType, RangeRequest};
use rpctypes::ServerError;

use crate::{
    metrics, Alarmer, MetricsSource, RaftKv, RaftStatusGetter, CLUSTER_VERSION, ETCD_VERSION,
};

/// What the health pages need from the member.
pub trait HealthServer: RaftStatusGetter + RaftKv + Alarmer + MetricsSource {}
impl<T: RaftStatusGetter + RaftKv + Alarmer + MetricsSource> HealthServer for T {}

struct HealthMetrics {
    success: Counter,
    failures: Counter,
    check: GaugeVec,
    checks: CounterVec,
}

static HEALTH: LazyLock<HealthMetrics> = LazyLock::new(|| {
    let must = "metric names are unique and valid";
    HealthMetrics {
        success: register_counter!(
            "etcd_server_health_success",
            "The total number of successful health checks"
        )
        .expect(must),
        failures: register_counter!(
            "etcd_server_health_failures",
            "The total number of failed health checks"
        )
        .expect(must),
        check: register_gauge_vec!(
            "etcd_server_healthcheck",
            "The result of each kind of healthcheck.",
            &["type", "name"]
        )
        .expect(must),
        checks: register_counter_vec!(
            "etcd_server_healthchecks_total",
            "The total number of each kind of healthcheck.",
            &["type", "name", "status"]
        )
        .expect(must),
    }
});

/// Makes the health metrics visible from the first scrape.
pub(crate) fn register() {
    let _ = &*HEALTH;
}

/// The checks of `/livez` and `/readyz`, in the order they run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    DataCorruption,
    SerializableRead,
    LinearizableRead,
    NonLearner,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
            Check::NonLearner => "non_learner",
        }
    }
}

const LIVEZ: &[Check] = &[Check::SerializableRead];
const READYZ: &[Check] = &[
    Check::DataCorruption,
    Check::SerializableRead,
    Check::LinearizableRead,
    Check::NonLearner,
];

/// The health pages, `/version` and `/metrics`, for a client URL.
pub(crate) fn router<S: HealthServer>(srv: Arc<S>, request_timeout: Duration) -> Router {
    let version = any(|m: Method| async move {
        if m != Method::GET {
            return method_not_allowed();
        }
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            format!(r#"{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"{CLUSTER_VERSION}"}}"#),
        )
            .into_response()
    });
    metrics_router(srv, request_timeout).route("/version", version)
}

/// What a `--listen-metrics-urls` URL serves: `/metrics` and the health pages.
pub(crate) fn metrics_router<S: HealthServer>(srv: Arc<S>, request_timeout: Duration) -> Router {
    register();
    let h = Arc::new(Health {
        srv: srv.clone(),
        timeout: request_timeout,
    });
    let mut r = Router::new();
    {
        let h = h.clone();
        r = r.route(
            "/health",
            any(move |m: Method, q: RawQuery| {
                let h = h.clone();
                async move { h.health(m, q.0.as_deref().unwrap_or("")).await }
            }),
        );
    }
    for (kind, checks) in [("livez", LIVEZ), ("readyz", READYZ)] {
        let root = {
            let h = h.clone();
            any(move |m: Method, q: RawQuery| {
                let h = h.clone();
                async move {
                    h.checks(kind, checks, m, q.0.as_deref().unwrap_or(""), true)
                        .await
                }
            })
        };
        r = r.route(&format!("/{kind}"), root);
        for &c in checks {
            let h = h.clone();
            let one = any(move |m: Method, q: RawQuery| {
                let h = h.clone();
                async move {
                    h.checks(kind, &[c][..], m, q.0.as_deref().unwrap_or(""), false)
                        .await
                }
            });
            r = r.route(&format!("/{kind}/{}", c.name()), one);
        }
    }
    // Any method, as etcd's Prometheus handler answers.
    let metrics = any(move || {
        let srv = srv.clone();
        async move {
            srv.refresh_metrics();
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                metrics::render(),
            )
                .into_response()
        }
    });
    r.route("/metrics", metrics)
}

struct Health<S> {
    srv: Arc<S>,
    timeout: Duration,
}

/// Go's `http.Error`: plain text, `nosniff`, the message and a newline.
fn go_error(status: StatusCode, msg: &str) -> Response {
    let mut r = (status, format!("{msg}\n")).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn method_not_allowed() -> Response {
    let mut r = go_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    r
}

/// The values of a query parameter, as Go's `url.Values` holds them (empty ones dropped, as etcd drops
/// them).
fn query_values<'a>(query: &'a str, key: &'a str) -> impl Iterator<Item = String> + 'a {
    query.split(['&', ';']).filter_map(move |kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (crate::percent_decode(&k.replace('+', " ")) == key)
            .then(|| crate::percent_decode(&v.replace('+', " ")))
            .filter(|v| !v.is_empty())
    })
}

fn has_key(query: &str, key: &str) -> bool {
    query
        .split(['&', ';'])
        .any(|kv| crate::percent_decode(kv.split_once('=').map_or(kv, |(k, _)| k)) == key)
}

/// A JSON string, as Go's `encoding/json` writes one (HTML characters escaped).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl<S: HealthServer> Health<S> {
    async fn read(&self, serializable: bool) -> Result<(), ServerError> {
        let req = RangeRequest {
            key: vec![0],
            keys_only: true,
            limit: 1,
            serializable,
            ..Default::default()
        };
        // As etcd's `checkAPI`: the member's own read, made as root.
        match tokio::time::timeout(self.timeout, self.srv.range(&crate::auth::Ctx::root(), req))
            .await
        {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Why `/health` fails, or None.
    async fn unhealthy(&self, excluded: &[String], serializable: bool) -> Option<String> {
        for a in self.srv.alarms() {
            let t = AlarmType::try_from(a.alarm).unwrap_or(AlarmType::None);
            if excluded.iter().any(|e| e == t.as_str_name()) {
                continue;
            }
            let reason = match t {
                AlarmType::Nospace => "ALARM NOSPACE",
                AlarmType::Corrupt => "ALARM CORRUPT",
                AlarmType::None => "ALARM UNKNOWN",
            };
            tracing::warn!(
                alarm = t.as_str_name(),
                "serving /health false due to an alarm"
            );
            return Some(reason.into());
        }
        if !serializable && self.srv.leader() == 0 {
            tracing::warn!("serving /health false; no leader");
            return Some("RAFT NO LEADER".into());
        }
        if let Err(e) = self.read(serializable).await {
            tracing::warn!(error = %e, "serving /health false; Range fails");
            return Some(format!("RANGE ERROR:{e}"));
        }
        None
    }

    async fn health(&self, m: Method, query: &str) -> Response {
        if m != Method::GET {
            tracing::warn!(status_code = 405, "/health error");
            return method_not_allowed();
        }
        let excluded: Vec<String> = query_values(query, "exclude").collect();
        let serializable = query_values(query, "serializable").next().as_deref() == Some("true");
        match self.unhealthy(&excluded, serializable).await {
            None => {
                HEALTH.success.inc();
                let mut r = (StatusCode::OK, r#"{"health":"true","reason":""}"#).into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
            Some(reason) => {
                HEALTH.failures.inc();
                let body = format!(r#"{{"health":"false","reason":{}}}"#, json_string(&reason));
                tracing::warn!(output = %body, status_code = 503, "/health error");
                go_error(StatusCode::SERVICE_UNAVAILABLE, &body)
            }
        }
    }

    async fn run(&self, c: Check) -> Result<(), String> {
        match c {
            Check::DataCorruption => {
                let corrupt = self
                    .srv
                    .alarms()
                    .iter()
                    .any(|a| a.alarm == AlarmType::Corrupt as i32);
                if corrupt {
                    Err("alarm activated: CORRUPT".into())
                } else {
                    Ok(())
                }
            }
            Check::SerializableRead => self.read(true).await.map_err(|e| e.to_string()),
            Check::LinearizableRead => self.read(false).await.map_err(|e| e.to_string()),
            Check::NonLearner if self.srv.is_learner() => Err("not supported for learner".into()),
            Check::NonLearner => Ok(()),
        }
    }

    async fn checks(
        &self,
        kind: &'static str,
        checks: &[Check],
        m: Method,
        query: &str,
        root: bool,
    ) -> Response {
        if m != Method::GET {
            tracing::warn!(path = kind, status_code = 405, "Health request error");
            return method_not_allowed();
        }
        let excluded: Vec<String> = if root {
            query_values(query, "exclude").collect()
        } else {
            Vec::new()
        };
        let missing: Vec<&String> = excluded
            .iter()
            .filter(|e| !checks.iter().any(|c| c.name() == e.as_str()))
            .collect();
        if !missing.is_empty() {
            // As etcd, for compatibility across versions: excluding an unknown check is no error.
            tracing::warn!(missing_health_checks = ?missing, "some health checks cannot be excluded");
        }
        let mut failed = false;
        let mut reason = String::new();
        for &c in checks {
            if excluded.iter().any(|e| e == c.name()) {
                continue;
            }
            let status = match self.run(c).await {
                Ok(()) => {
                    reason.push_str(&format!("[+]{} ok\n", c.name()));
                    "success"
                }
                Err(e) => {
                    failed = true;
                    reason.push_str(&format!("[-]{} failed: {e}\n", c.name()));
                    "error"
                }
            };
            HEALTH
                .check
                .with_label_values(&[kind, c.name()])
                .set(if status == "success" { 1.0 } else { 0.0 });
            HEALTH
                .checks
                .with_label_values(&[kind, c.name(), status])
                .inc();
        }
        if failed {
            tracing::error!(path = kind, reason = %reason, status_code = 503, "Health check error");
            return go_error(StatusCode::SERVICE_UNAVAILABLE, &reason);
        }
        let body = if has_key(query, "verbose") {
            format!("{reason}ok\n")
        } else {
            "ok\n".to_string()
        };
        let mut r = (StatusCode::OK, body).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_as_go_reads_them() {
        let q = "exclude=NOSPACE&exclude=&exclude=CORRUPT&serializable=true&verbose";
        assert_eq!(
            query_values(q, "exclude").collect::<Vec<_>>(),
            ["NOSPACE", "CORRUPT"]
        );
        assert_eq!(
            query_values(q, "serializable").collect::<Vec<_>>(),
            ["true"]
        );
        assert!(has_key(q, "verbose"));
        assert!(!has_key(q, "verb"));
        assert_eq!(
            query_values("exclude=linearizable%5Fread", "exclude").collect::<Vec<_>>(),
            ["linearizable_read"]
        );
    }

    #[test]
    fn reasons_are_json_strings() {
        assert_eq!(json_string(r#"a "b" <c>"#), r#""a \"b\" \u003cc\u003e""#);
    }
}
