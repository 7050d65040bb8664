//! The watch service's metrics (etcd registers them in `mvcc`; here the service is what counts them),
//! the durations of the maintenance operations the Maintenance service runs (etcd registers them in
//! `backend` and `mvcc`, where its maintenance calls go; Hearth's run from here), and the text
//! `/metrics` renders.

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, register_counter, register_gauge, register_histogram, Counter, Gauge,
    Histogram,
};

macro_rules! metric {
    ($name:ident, $ty:ty, $make:expr) => {
        pub static $name: LazyLock<$ty> =
            LazyLock::new(|| $make.expect("metric names are unique and valid"));
    };
}

metric!(
    WATCH_STREAMS,
    Gauge,
    register_gauge!(
        "etcd_debugging_mvcc_watch_stream_total",
        "Total number of watch streams."
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

metric!(
    DEFRAG_DURATION,
    Histogram,
    register_histogram!(
        "etcd_disk_backend_defrag_duration_seconds",
        "The latency distribution of backend defragmentation.",
        buckets(0.1, 13)
    )
);

metric!(
    DEFRAG_INFLIGHT,
    Gauge,
    register_gauge!(
        "etcd_disk_defrag_inflight",
        "Whether or not defrag is active on the member. 1 means active, 0 means not."
    )
);

metric!(
    SNAPSHOT_DURATION,
    Histogram,
    register_histogram!(
        "etcd_disk_backend_snapshot_duration_seconds",
        "The latency distribution of backend snapshots.",
        buckets(0.01, 17)
    )
);

metric!(
    HASH_DURATION,
    Histogram,
    register_histogram!(
        "etcd_mvcc_hash_duration_seconds",
        "The latency distribution of storage hash operation.",
        buckets(0.01, 15)
    )
);

metric!(
    HASH_REV_DURATION,
    Histogram,
    register_histogram!(
        "etcd_mvcc_hash_rev_duration_seconds",
        "The latency distribution of storage hash by revision operation.",
        buckets(0.01, 15)
    )
);

/// Prometheus' `ExponentialBuckets(start, 2, count)`, as etcd declares its histograms.
fn buckets(start: f64, count: usize) -> Vec<f64> {
    exponential_buckets(start, 2.0, count).unwrap_or_default()
}

/// Sets a gauge to 1 for as long as it lives.
pub(crate) struct Inflight<'a>(&'a Gauge);

impl<'a> Inflight<'a> {
    pub(crate) fn new(g: &'a Gauge) -> Self {
        g.set(1.0);
        Inflight(g)
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.0.set(0.0);
    }
}

/// Registers them, so they are on `/metrics` from the first scrape.
pub fn register() {
    let _ = (
        WATCH_STREAMS.get(),
        WATCH_PENDING_EVENTS.get(),
        WATCH_EVENTS.get(),
        DEFRAG_DURATION.get_sample_count(),
        DEFRAG_INFLIGHT.get(),
        SNAPSHOT_DURATION.get_sample_count(),
        HASH_DURATION.get_sample_count(),
        HASH_REV_DURATION.get_sample_count(),
    );
    crate::etcdhttp::register();
}

/// Renders every registered metric in Prometheus' text format.
pub fn render() -> String {
    let families = prometheus::gather();
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_default()
}
