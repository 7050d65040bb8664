//! The Raft loop's metrics, under etcd's names (etcd's `etcdserver`, `wal` and `backend` packages register
//! them; here the loop is what observes them).

use std::sync::LazyLock;

use prometheus::{register_counter, register_histogram, Counter, Histogram};

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
    LEADER_CHANGES,
    Counter,
    register_counter!(
        "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen."
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
    HEARTBEAT_SEND_FAILURES,
    Counter,
    register_counter!(
        "etcd_server_heartbeat_send_failures_total",
        "The total number of leader heartbeat send failures (likely overloaded from slow disk)."
    )
);

metric!(
    SLOW_READ_INDEXES,
    Counter,
    register_counter!(
        "etcd_server_slow_read_indexes_total",
        "The total number of pending read indexes not in sync with leader's or timed out read index requests."
    )
);

metric!(
    READ_INDEXES_FAILED,
    Counter,
    register_counter!(
        "etcd_server_read_indexes_failed_total",
        "The total number of failed read indexes seen."
    )
);

/// Registers the loop's metrics, so they are on `/metrics` from the first scrape.
pub fn register() {
    let _ = (
        LEADER_CHANGES.get(),
        PROPOSALS_FAILED.get(),
        HEARTBEAT_SEND_FAILURES.get(),
        SLOW_READ_INDEXES.get(),
        READ_INDEXES_FAILED.get(),
        WAL_FSYNC.get_sample_count(),
        BACKEND_COMMIT.get_sample_count(),
    );
}

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
