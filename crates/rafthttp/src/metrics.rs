//! The peer transport's metrics, under etcd's names and labels (etcd's `rafthttp/metrics.go`).

use std::sync::LazyLock;

use prometheus::{
    register_counter_vec, register_gauge_vec, register_histogram_vec, CounterVec, GaugeVec,
    HistogramVec,
};

macro_rules! metric {
    ($name:ident, $ty:ty, $make:expr) => {
        pub static $name: LazyLock<$ty> =
            LazyLock::new(|| $make.expect("metric names are unique and valid"));
    };
}

metric!(
    PEER_SENT_BYTES,
    CounterVec,
    register_counter_vec!(
        "etcd_network_peer_sent_bytes_total",
        "The total number of bytes sent to peers.",
        &["To"]
    )
);

metric!(
    PEER_RECEIVED_BYTES,
    CounterVec,
    register_counter_vec!(
        "etcd_network_peer_received_bytes_total",
        "The total number of bytes received from peers.",
        &["From"]
    )
);

metric!(
    PEER_SENT_FAILURES,
    CounterVec,
    register_counter_vec!(
        "etcd_network_peer_sent_failures_total",
        "The total number of send failures from peers.",
        &["To"]
    )
);

metric!(
    PEER_RECEIVED_FAILURES,
    CounterVec,
    register_counter_vec!(
        "etcd_network_peer_received_failures_total",
        "The total number of receive failures from peers.",
        &["From"]
    )
);

metric!(
    ACTIVE_PEERS,
    GaugeVec,
    register_gauge_vec!(
        "etcd_network_active_peers",
        "The current number of active peer connections.",
        &["Local", "Remote"]
    )
);

metric!(
    DISCONNECTED_PEERS,
    CounterVec,
    register_counter_vec!(
        "etcd_network_disconnected_peers_total",
        "The total number of disconnected peers.",
        &["Local", "Remote"]
    )
);

metric!(
    SNAPSHOT_SEND_FAILURES,
    CounterVec,
    register_counter_vec!(
        "etcd_network_snapshot_send_failures",
        "Total number of snapshot send failures",
        &["To"]
    )
);

metric!(
    SNAPSHOT_SEND_SUCCESS,
    CounterVec,
    register_counter_vec!(
        "etcd_network_snapshot_send_success",
        "Total number of successful snapshot sends",
        &["To"]
    )
);

metric!(
    SNAPSHOT_SEND_INFLIGHTS,
    GaugeVec,
    register_gauge_vec!(
        "etcd_network_snapshot_send_inflights_total",
        "Total number of inflight snapshot sends",
        &["To"]
    )
);

metric!(
    SNAPSHOT_SEND_SECONDS,
    HistogramVec,
    register_histogram_vec!(
        "etcd_network_snapshot_send_total_duration_seconds",
        "Total latency distributions of v3 snapshot sends",
        &["To"],
        snapshot_buckets()
    )
);

metric!(
    SNAPSHOT_RECEIVE_SUCCESS,
    CounterVec,
    register_counter_vec!(
        "etcd_network_snapshot_receive_success",
        "Total number of successful snapshot receives",
        &["From"]
    )
);

metric!(
    SNAPSHOT_RECEIVE_FAILURES,
    CounterVec,
    register_counter_vec!(
        "etcd_network_snapshot_receive_failures",
        "Total number of snapshot receive failures",
        &["From"]
    )
);

metric!(
    SNAPSHOT_RECEIVE_INFLIGHTS,
    GaugeVec,
    register_gauge_vec!(
        "etcd_network_snapshot_receive_inflights_total",
        "Total number of inflight snapshot receives",
        &["From"]
    )
);

metric!(
    SNAPSHOT_RECEIVE_SECONDS,
    HistogramVec,
    register_histogram_vec!(
        "etcd_network_snapshot_receive_total_duration_seconds",
        "Total latency distributions of v3 snapshot receives",
        &["From"],
        snapshot_buckets()
    )
);

/// etcd's snapshot transfer buckets: 100 ms doubling up to about 51 s.
fn snapshot_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.1, 2.0, 10).expect("static bucket parameters are valid")
}

metric!(
    PEER_RTT,
    HistogramVec,
    register_histogram_vec!(
        "etcd_network_peer_round_trip_time_seconds",
        "Round-Trip-Time histogram between peers",
        &["To"],
        prometheus::exponential_buckets(0.0001, 2.0, 16)
            .expect("static bucket parameters are valid")
    )
);

/// Shows a peer's traffic and failure counters at zero from the moment it is added, so that alerts
/// on their rates (etcd's mixin watches `etcd_network_peer_sent_failures_total`) have a series to
/// read before the first failure.
pub(crate) fn show_peer(id: u64) {
    let id = format!("{id:x}");
    for c in [
        &*PEER_SENT_BYTES,
        &*PEER_RECEIVED_BYTES,
        &*PEER_SENT_FAILURES,
        &*PEER_RECEIVED_FAILURES,
    ] {
        let _ = c.with_label_values(&[&id]);
    }
}
