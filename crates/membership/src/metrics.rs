//! The membership's metric, under etcd's name.

use std::sync::LazyLock;

use prometheus::{register_gauge, Gauge};

/// `etcd_server_is_learner`, kept by [`crate::RaftCluster`] as the local member's role changes.
pub static IS_LEARNER: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "etcd_server_is_learner",
        "Whether or not this member is a learner. 1 if is, 0 otherwise."
    )
    .expect("metric names are unique and valid")
});
