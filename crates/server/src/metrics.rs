//! Prometheus metrics under etcd's names, so existing dashboards and alerts keep working. Registered once per
//! process in the default registry; the Raft loop and the services update them.

use std::sync::LazyLock;

use prometheus::{register_gauge, register_gauge_vec, Gauge, GaugeVec};

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
