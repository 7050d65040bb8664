//! `/metrics` has what etcd's own alerting rules and dashboard (etcd's `contrib/mixin`) read, with
//! etcd's types and labels, and the counters move with the requests that should move them.

use std::collections::{BTreeMap, BTreeSet};

use hearth_tests::{poll, Cluster};

/// Every metric etcd's mixin (alerts and dashboard) reads: name, Prometheus type, and the labels its
/// series carry (besides `le` for histograms). Taken from `contrib/mixin/alerts/alerts.libsonnet` and
/// `contrib/mixin/dashboards/*.libsonnet` in etcd's repository.
const MIXIN: &[(&str, &str, &[&str])] = &[
    ("etcd_server_has_leader", "gauge", &[]),
    ("etcd_server_leader_changes_seen_total", "counter", &[]),
    ("etcd_server_proposals_failed_total", "counter", &[]),
    ("etcd_server_proposals_pending", "gauge", &[]),
    ("etcd_server_proposals_committed_total", "gauge", &[]),
    ("etcd_server_proposals_applied_total", "gauge", &[]),
    ("etcd_server_quota_backend_bytes", "gauge", &[]),
    ("etcd_disk_wal_fsync_duration_seconds", "histogram", &[]),
    (
        "etcd_disk_backend_commit_duration_seconds",
        "histogram",
        &[],
    ),
    ("etcd_mvcc_db_total_size_in_bytes", "gauge", &[]),
    ("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge", &[]),
    (
        "etcd_network_client_grpc_received_bytes_total",
        "counter",
        &[],
    ),
    ("etcd_network_client_grpc_sent_bytes_total", "counter", &[]),
    (
        "etcd_network_peer_received_bytes_total",
        "counter",
        &["From"],
    ),
    ("etcd_network_peer_sent_bytes_total", "counter", &["To"]),
    ("etcd_network_peer_sent_failures_total", "counter", &["To"]),
    (
        "etcd_network_peer_round_trip_time_seconds",
        "histogram",
        &["To"],
    ),
    (
        "grpc_server_started_total",
        "counter",
        &["grpc_method", "grpc_service", "grpc_type"],
    ),
    (
        "grpc_server_handled_total",
        "counter",
        &["grpc_code", "grpc_method", "grpc_service", "grpc_type"],
    ),
    (
        "grpc_server_handling_seconds",
        "histogram",
        &["grpc_method", "grpc_service", "grpc_type"],
    ),
    ("process_resident_memory_bytes", "gauge", &[]),
];

/// More of etcd 3.5's list that Hearth exports, checked the same way.
const MORE: &[(&str, &str, &[&str])] = &[
    (
        "grpc_server_msg_received_total",
        "counter",
        &["grpc_method", "grpc_service", "grpc_type"],
    ),
    (
        "grpc_server_msg_sent_total",
        "counter",
        &["grpc_method", "grpc_service", "grpc_type"],
    ),
    ("etcd_mvcc_put_total", "counter", &[]),
    ("etcd_mvcc_range_total", "counter", &[]),
    ("etcd_mvcc_delete_total", "counter", &[]),
    ("etcd_mvcc_txn_total", "counter", &[]),
    ("etcd_debugging_mvcc_keys_total", "gauge", &[]),
    ("etcd_server_slow_apply_total", "counter", &[]),
    ("etcd_server_slow_read_indexes_total", "counter", &[]),
    ("etcd_server_read_indexes_failed_total", "counter", &[]),
    ("etcd_server_heartbeat_send_failures_total", "counter", &[]),
    ("etcd_server_id", "gauge", &["server_id"]),
    ("etcd_server_version", "gauge", &["server_version"]),
    ("etcd_cluster_version", "gauge", &["cluster_version"]),
    ("etcd_server_is_leader", "gauge", &[]),
    ("etcd_server_is_learner", "gauge", &[]),
    (
        "etcd_disk_backend_defrag_duration_seconds",
        "histogram",
        &[],
    ),
    (
        "etcd_disk_backend_snapshot_duration_seconds",
        "histogram",
        &[],
    ),
    ("etcd_disk_defrag_inflight", "gauge", &[]),
    ("etcd_mvcc_hash_duration_seconds", "histogram", &[]),
    ("etcd_mvcc_hash_rev_duration_seconds", "histogram", &[]),
    ("etcd_server_health_success", "counter", &[]),
    ("etcd_server_health_failures", "counter", &[]),
    ("os_fd_used", "gauge", &[]),
    ("os_fd_limit", "gauge", &[]),
    ("process_open_fds", "gauge", &[]),
    ("process_cpu_seconds_total", "counter", &[]),
];

/// A scrape: each family's type, and the label names of its samples.
struct Scrape {
    types: BTreeMap<String, String>,
    labels: BTreeMap<String, BTreeSet<String>>,
    page: String,
}

fn parse(page: &str) -> Scrape {
    let mut types = BTreeMap::new();
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            types.insert(name.to_string(), ty.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, _) = line.rsplit_once(' ').unwrap();
        let (name, ls) = match series.split_once('{') {
            Some((n, ls)) => (n, ls.trim_end_matches('}')),
            None => (series, ""),
        };
        let set = labels.entry(name.to_string()).or_default();
        for kv in ls.split(',').filter(|kv| !kv.is_empty()) {
            set.insert(kv.split_once('=').unwrap().0.to_string());
        }
    }
    Scrape {
        types,
        labels,
        page: page.to_string(),
    }
}

impl Scrape {
    fn check(&self, name: &str, ty: &str, want: &[&str]) {
        assert_eq!(
            self.types.get(name).map(String::as_str),
            Some(ty),
            "type of {name}"
        );
        let sample = if ty == "histogram" {
            format!("{name}_bucket")
        } else {
            name.to_string()
        };
        let mut have: BTreeSet<String> = self
            .labels
            .get(&sample)
            .unwrap_or_else(|| panic!("no sample of {sample}"))
            .clone();
        have.remove("le");
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(have, want, "labels of {sample}");
    }

    /// The value of the series `name{labels}` (labels in the page's order, which is sorted).
    fn value(&self, series: &str) -> f64 {
        self.page
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

fn handled(method: &str, code: &str) -> String {
    format!(
        r#"grpc_server_handled_total{{grpc_code="{code}",grpc_method="{method}",grpc_service="etcdserverpb.KV",grpc_type="unary"}}"#
    )
}

fn per_method(name: &str, method: &str) -> String {
    format!(r#"{name}{{grpc_method="{method}",grpc_service="etcdserverpb.KV",grpc_type="unary"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_what_etcds_alerts_and_dashboard_read_and_requests_move_them() {
    let cluster =
        Cluster::start_with(hearth_tests::Kind::Hearth, 3, &["--metrics=extensive"]).await;
    let leader = cluster.wait_leader(&[]).await;
    let m = &cluster.members[leader];
    // The leader measures round trips from its heartbeats: wait for one to each peer.
    poll::eventually(
        "the leader to have measured a round trip",
        std::time::Duration::from_secs(30),
        async || {
            m.metrics()
                .contains("etcd_network_peer_round_trip_time_seconds_count")
        },
    )
    .await;
    let before = parse(&m.metrics());
    for (name, ty, labels) in MIXIN.iter().chain(MORE) {
        before.check(name, ty, labels);
    }
    let id = format!("{:x}", cluster.member_id(leader).await);
    assert!(
        before
            .page
            .contains(&format!(r#"etcd_server_id{{server_id="{id}"}} 1"#)),
        "{}",
        before.page
    );
    assert!(before
        .page
        .contains(r#"etcd_server_version{server_version="3.5.33"} 1"#));
    assert!(before
        .page
        .contains(r#"etcd_cluster_version{cluster_version="3.5"} 1"#));
    assert!(before
        .page
        .contains("etcd_server_quota_backend_bytes 2147483648"));
    // Every method is listed from the start, with every code, as go-grpc-prometheus does.
    assert!(before.page.contains(&handled("Compact", "DataLoss")));

    let out = m.etcdctl(&["put", "metrics-key", "v"]);
    assert!(out.status.success(), "{out:?}");
    let out = m.etcdctl(&["get", "metrics-key", "--rev=1000"]);
    assert!(!out.status.success(), "a future revision fails");

    let after = parse(&m.metrics());
    // The default registry carries the process collector; registering a second one fails.
    let log = m.log();
    assert!(!log.contains("metrics not registered"), "{log}");
    let moved = |series: &str| after.value(series) - before.value(series);
    assert_eq!(moved(&handled("Put", "OK")), 1.0);
    assert_eq!(moved(&per_method("grpc_server_started_total", "Put")), 1.0);
    assert_eq!(
        moved(&per_method("grpc_server_msg_received_total", "Put")),
        1.0
    );
    assert_eq!(moved(&per_method("grpc_server_msg_sent_total", "Put")), 1.0);
    assert_eq!(
        moved(&per_method("grpc_server_handling_seconds_count", "Put")),
        1.0
    );
    assert_eq!(moved(&handled("Range", "OutOfRange")), 1.0);
    assert_eq!(moved(&handled("Range", "OK")), 0.0);
    // A failed unary call sends no message.
    assert_eq!(
        moved(&per_method("grpc_server_msg_sent_total", "Range")),
        0.0
    );
    assert_eq!(moved("etcd_mvcc_put_total"), 1.0);
    assert_eq!(moved("etcd_debugging_mvcc_keys_total"), 1.0);
    // The put's request (key, value) and response (a header) crossed the client port.
    assert!(moved("etcd_network_client_grpc_received_bytes_total") >= 12.0);
    assert!(moved("etcd_network_client_grpc_sent_bytes_total") > 0.0);
    cluster.assert_hashkv_equal().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handling_histogram_is_only_there_with_extensive_metrics() {
    let s = hearth_tests::Server::start(hearth_tests::Kind::Hearth).await;
    let page = s.metrics();
    assert!(page.contains("grpc_server_started_total{"), "{page}");
    assert!(!page.contains("grpc_server_handling_seconds"), "{page}");
}
