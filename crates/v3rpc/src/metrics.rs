//! The watch service's metrics (etcd registers them in `mvcc`; here the service is what counts them),
//! and the text `/metrics` renders.

use std::sync::LazyLock;

use prometheus::{register_counter, register_gauge, Counter, Gauge};

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

/// Registers them, so they are on `/metrics` from the first scrape.
pub fn register() {
    let _ = (
        WATCH_STREAMS.get(),
        WATCH_PENDING_EVENTS.get(),
        WATCH_EVENTS.get(),
    );
}

/// Renders every registered metric in Prometheus' text format.
pub fn render() -> String {
    let families = prometheus::gather();
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_default()
}
