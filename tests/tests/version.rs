//! The version Hearth reports is the etcd version whose behaviour it implements (3.5.33), the same
//! everywhere etcd reports one, and Kubernetes' feature gate for RequestWatchProgress passes on it.

use hearth_tests::{server::hearth_bin, Kind, Server};

/// A version as Kubernetes' `version.ParseSemantic` takes it: `MAJOR.MINOR.PATCH`, numbers without
/// leading zeros, optionally `-pre` and `+build` (ignored here). None when it does not parse.
fn parse_semantic(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.split(['-', '+']).next()?;
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() != 3 {
        return None;
    }
    let num = |s: &str| {
        if s.is_empty()
            || (s.len() > 1 && s.starts_with('0'))
            || !s.bytes().all(|b| b.is_ascii_digit())
        {
            None
        } else {
            s.parse().ok()
        }
    };
    Some((num(parts[0])?, num(parts[1])?, num(parts[2])?))
}

/// Kubernetes' `endpointSupportsRequestWatchProgress` (apiserver's `feature_support_checker.go`):
/// supported unless the version does not parse, is below 3.4.31, or is 3.5.x below 3.5.13.
fn supports_request_watch_progress(status_version: &str) -> bool {
    let Some(v) = parse_semantic(status_version) else {
        return false;
    };
    !(v < (3, 4, 31) || ((3, 5, 0)..(3, 5, 13)).contains(&v))
}

#[test]
fn the_gate_is_kubernetes_gate() {
    assert!(!supports_request_watch_progress("3.5.0"));
    assert!(!supports_request_watch_progress("3.5.12"));
    assert!(supports_request_watch_progress("3.5.13"));
    assert!(!supports_request_watch_progress("3.4.23"));
    assert!(supports_request_watch_progress("3.4.31"));
    assert!(supports_request_watch_progress("3.6.0"));
    assert!(!supports_request_watch_progress("3.5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearth_reports_etcd_3_5_33_everywhere_and_passes_kubernetes_gate() {
    let s = Server::start(Kind::Hearth).await;
    let mut c = s.client().await;
    let status = c.status().await.unwrap();
    assert_eq!(status.version(), "3.5.33");
    assert!(supports_request_watch_progress(status.version()));

    let (code, body) = s.http_get("/version").await;
    assert_eq!(code, 200);
    assert_eq!(body, r#"{"etcdserver":"3.5.33","etcdcluster":"3.5.0"}"#);
    let page = s.metrics();
    assert!(page.contains(r#"etcd_server_version{server_version="3.5.33"} 1"#));
    assert!(page.contains(r#"etcd_cluster_version{cluster_version="3.5"} 1"#));

    let out = std::process::Command::new(hearth_bin())
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.starts_with("hearth Version: "), "{text}");
    assert!(text.contains("\netcd Version: 3.5.33\n"), "{text}");
    assert!(text.contains("\netcd API Version: 3.5\n"), "{text}");
}
