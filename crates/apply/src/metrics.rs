//! etcd's per-operation counters of its `mvcc` package (`metrics_txn.go`), counted where Hearth runs
//! the operations: in `txn`, for reads served and for entries applied alike (as etcd counts them in
//! every read and write transaction, on every member). A txn counts once in
//! `etcd_mvcc_txn_total` when it has more than one compare or operation, and each of its ranges,
//! puts and deletes counts on its own, as etcd's do. Also etcd's `etcd_server_slow_apply_total`,
//! counted by the applier (`Applier::with_slow_apply`).

use std::sync::LazyLock;

use prometheus::{register_int_counter, register_int_gauge, IntCounter, IntGauge};

macro_rules! metric {
    ($name:ident, $ty:ty, $make:expr) => {
        pub static $name: LazyLock<$ty> =
            LazyLock::new(|| $make.expect("metric names are unique and valid"));
    };
}

metric!(
    RANGE,
    IntCounter,
    register_int_counter!(
        "etcd_mvcc_range_total",
        "Total number of ranges seen by this member."
    )
);
metric!(
    RANGE_DEBUG,
    IntCounter,
    register_int_counter!(
        "etcd_debugging_mvcc_range_total",
        "Total number of ranges seen by this member."
    )
);
metric!(
    PUT,
    IntCounter,
    register_int_counter!(
        "etcd_mvcc_put_total",
        "Total number of puts seen by this member."
    )
);
metric!(
    DELETE,
    IntCounter,
    register_int_counter!(
        "etcd_mvcc_delete_total",
        "Total number of deletes seen by this member."
    )
);
metric!(
    TXN,
    IntCounter,
    register_int_counter!(
        "etcd_mvcc_txn_total",
        "Total number of txns seen by this member."
    )
);
metric!(
    PUT_SIZE,
    IntGauge,
    register_int_gauge!(
        "etcd_debugging_mvcc_total_put_size_in_bytes",
        "The total size of put kv pairs seen by this member."
    )
);

metric!(
    SLOW_APPLY,
    IntCounter,
    register_int_counter!(
        "etcd_server_slow_apply_total",
        "The total number of slow apply requests (likely overloaded from slow disk)."
    )
);

/// Registers them, so they are on `/metrics` from the first scrape.
pub fn register() {
    let _ = (
        RANGE.get(),
        RANGE_DEBUG.get(),
        PUT.get(),
        DELETE.get(),
        TXN.get(),
        PUT_SIZE.get(),
        SLOW_APPLY.get(),
    );
}

/// Counts one range read of the store (each part of a RangeStream is one, as in etcd).
pub fn range() {
    RANGE.inc();
    RANGE_DEBUG.inc();
}
