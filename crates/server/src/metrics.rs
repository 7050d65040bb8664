//! Prometheus metrics under etcd's names, so existing dashboards and alerts keep working. Registered once per
//! process in the default registry; the Raft loop and the services update them. The `process_*` metrics come
//! from the default registry itself, which registers the process collector on Linux.

use std::sync::LazyLock;

use prometheus::{register_gauge, register_gauge_vec, Gauge, GaugeVec};

/// `os_fd_used` and `os_fd_limit`, as etcd's `monitorFileDescriptor` reads them (on Linux, the
/// entries of `/proc/self/fd` and the soft `RLIMIT_NOFILE`).
pub(crate) fn refresh_fds() {
    if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
        FD_USED.set(d.count() as f64);
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        let soft = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = soft {
            FD_LIMIT.set(v);
        }
    }
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
    SERVER_ID,
    GaugeVec,
    register_gauge_vec!(
        "etcd_server_id",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
        &["server_id"]
    )
);
metric!(
    CLUSTER_VERSION,
    GaugeVec,
    register_gauge_vec!(
        "etcd_cluster_version",
        "Which version is running. 1 for 'cluster_version' label with current cluster version",
        &["cluster_version"]
    )
);
metric!(
    QUOTA_BACKEND_BYTES,
    Gauge,
    register_gauge!(
        "etcd_server_quota_backend_bytes",
        "Current backend storage quota size in bytes."
    )
);
metric!(
    KEYS,
    Gauge,
    register_gauge!("etcd_debugging_mvcc_keys_total", "Total number of keys.")
);
metric!(
    FD_USED,
    Gauge,
    register_gauge!("os_fd_used", "The number of used file descriptors.")
);
metric!(
    FD_LIMIT,
    Gauge,
    register_gauge!("os_fd_limit", "The file descriptor limit.")
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
    AUTH_REVISION,
    Gauge,
    register_gauge!(
        "etcd_debugging_auth_revision",
        "The current revision of auth store."
    )
);
