//! Prometheus metrics under etcd's names, so existing dashboards and alerts keep working. Registered once per
//! process in the default registry; the Raft loop and the services update them.

use std::sync::LazyLock;

use prometheus::{
    register_counter, register_gauge, register_gauge_vec, register_histogram, Counter, Gauge,
    GaugeVec, Histogram,
};

/// etcd's disk latency buckets: 1 ms doubling up to about 8 s.
fn disk_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 2.0, 14).expect("static bucket parameters are valid")
}

macro_rules! metric {
    ($name:ident, $ty:ty, $make:expr) => {
        pub static $name: LazyLock<$ty> =
            LazyLock::new(|| $make.expect("metric names are unique and valid"));
    };
}

metric!(
    HAS_LEADER,
    Gauge,
    register_gauge!(
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not."
    )
);
metric!(
    IS_LEADER,
    Gauge,
    register_gauge!(
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise."
    )
);
metric!(
    LEADER_CHANGES,
    Counter,
    register_counter!(
        "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen."
    )
);
metric!(
    PROPOSALS_COMMITTED,
    Gauge,
    register_gauge!(
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed."
    )
);
metric!(
    PROPOSALS_APPLIED,
    Gauge,
    register_gauge!(
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied."
    )
);
metric!(
    PROPOSALS_PENDING,
    Gauge,
    register_gauge!(
        "etcd_server_proposals_pending",
        "The current number of pending proposals to commit."
    )
);
metric!(
    PROPOSALS_FAILED,
    Counter,
    register_counter!(
        "etcd_server_proposals_failed_total",
        "The total number of failed proposals seen."
    )
);
metric!(
    WAL_FSYNC,
    Histogram,
    register_histogram!(
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL.",
        disk_buckets()
    )
);
metric!(
    BACKEND_COMMIT,
    Histogram,
    register_histogram!(
        "etcd_disk_backend_commit_duration_seconds",
        "The latency distributions of commit called by backend.",
        disk_buckets()
    )
);
metric!(
    DB_SIZE,
    Gauge,
    register_gauge!(
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes."
    )
);
metric!(
    DB_SIZE_IN_USE,
    Gauge,
    register_gauge!(
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Total size of the underlying database logically in use in bytes."
    )
);
metric!(
    CURRENT_REVISION,
    Gauge,
    register_gauge!(
        "etcd_debugging_mvcc_current_revision",
        "The current revision of store."
    )
);
metric!(
    COMPACT_REVISION,
    Gauge,
    register_gauge!(
        "etcd_debugging_mvcc_compact_revision",
        "The revision of the last compaction in store."
    )
);
metric!(
    SERVER_VERSION,
    GaugeVec,
    register_gauge_vec!(
        "etcd_server_version",
        "Which version is running. 1 for 'server_version' label with current version.",
        &["server_version"]
    )
);

metric!(
    WATCH_STREAMS,
    Gauge,
    register_gauge!(
        "etcd_debugging_mvcc_watch_stream_total",
        "Total number of watch streams."
    )
);
metric!(
    WATCHERS,
    Gauge,
    register_gauge!(
        "etcd_debugging_mvcc_watcher_total",
        "Total number of watchers."
    )
);
metric!(
    SLOW_WATCHERS,
    Gauge,
    register_gauge!(
        "etcd_debugging_mvcc_slow_watcher_total",
        "Total number of unsynced slow watchers."
    )
);
metric!(
    WATCH_PENDING_EVENTS,
    Gauge,
    register_gauge!(
        "etcd_debugging_mvcc_pending_events_total",
        "Total number of pending events to be sent."
    )
);
metric!(
    WATCH_EVENTS,
    Counter,
    register_counter!(
        "etcd_debugging_mvcc_events_total",
        "Total number of events sent by this member."
    )
);

/// Renders every registered metric in Prometheus' text format.
pub fn render() -> String {
    let families = prometheus::gather();
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_default()
}
