//! The tokio runtime the server and the grpc-proxy run on.
//!
//! Tokio's scheduler runs a task woken by the task it is polling next, ahead of everything
//! queued (the "LIFO slot"), which saves a trip through the run queue when one task hands work
//! to another. Under a full core it is unfair to clients: a gRPC stream's handler that finishes
//! wakes its connection, that connection runs at once, reads its next requests and spawns their
//! handlers, which wake it again, while the other connections wait in the queue. With 1000
//! clients on 100 connections and one server core, serializable ranges of one key had a median
//! of 7-13 ms and a p99 of 93-127 ms; with the slot disabled, a median of 13-15 ms, a p99 of
//! 17-28 ms, and 62-70k reads/s against 55-59k, since each connection's turn then carries more
//! requests per read and write. A woken task now waits its turn in the queue, which costs little
//! when the core is idle (the queue is empty) and is fair when it is not.
//!
//! Disabling the slot is one of tokio's unstable options, so it needs `--cfg tokio_unstable`,
//! which the workspace's `.cargo/config.toml` passes. A build that overrides those flags
//! (`RUSTFLAGS` in the environment replaces them) keeps the slot and says so at start.
//! Unstable options are outside tokio's semver guarantee; `Cargo.lock` pins the version.

/// A multi-threaded runtime with every driver and the LIFO slot disabled when the build allows.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    builder().build()
}

fn builder() -> tokio::runtime::Builder {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    #[cfg(tokio_unstable)]
    b.disable_lifo_slot();
    b
}

/// Logs, once logging is up, that this build keeps tokio's LIFO slot (see the module doc).
pub fn note_build() {
    #[cfg(not(tokio_unstable))]
    tracing::warn!(
        "built without --cfg tokio_unstable: the scheduler's LIFO slot stays on, which makes \
         latency under load less fair (see .cargo/config.toml)"
    );
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    /// A task woken by the running task waits behind one spawned before the wake.
    #[test]
    fn a_woken_task_does_not_jump_the_queue() {
        let rt = super::builder().worker_threads(1).build().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let log = |name: &'static str| {
            let order = order.clone();
            move || order.lock().unwrap().push(name)
        };
        let (woken_done, queued_done) = (log("woken"), log("queued"));
        rt.block_on(async move {
            let handles = tokio::spawn(async move {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let woken = tokio::spawn(async move {
                    rx.await.unwrap();
                    woken_done();
                });
                // A yield lets the worker poll `woken` until it waits on `rx`.
                tokio::task::yield_now().await;
                let queued = tokio::spawn(async move { queued_done() });
                tx.send(()).unwrap();
                [woken, queued]
            })
            .await
            .unwrap();
            for h in handles {
                h.await.unwrap();
            }
        });
        assert_eq!(*order.lock().unwrap(), ["queued", "woken"]);
    }
}
