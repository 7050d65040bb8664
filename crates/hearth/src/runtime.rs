//! The tokio runtime the server and the grpc-proxy run on.
//!
//! Two of tokio's scheduling defaults are changed, both for fair latency when the cores are full.
//! Each was measured with 1000 clients on 100 connections reading one key, the server alone on
//! one core and `hearth-bench` on another (see `bench/RESULTS.md`).
//!
//! * **No LIFO slot.** By default a task woken by the task being polled runs next, ahead of
//!   everything queued, which saves a trip through the run queue when one task hands work to
//!   another. Under a full core it is unfair: a gRPC stream's handler that finishes wakes its
//!   connection, that connection runs at once, reads its next requests and spawns their handlers,
//!   which wake it again, while the other connections wait. Serializable ranges had a median of
//!   7-13 ms and a p99 of 93-127 ms; without the slot, 13-15 ms and 17-28 ms, and 62-70k reads/s
//!   against 55-59k, since each connection's turn then carries more requests per read and write.
//! * **The queue of tasks woken from other threads is looked at on every tick** (tokio's
//!   `global_queue_interval`), not every few dozen polls. The Raft loop, the apply thread and the
//!   watch thread wake the tasks waiting on them from outside the runtime; by default those tasks
//!   wait behind every local task until the worker's next look at that queue. A linearizable
//!   read is answered that way (after the Raft loop's read index): 40.8-53.5k reads/s with a p99
//!   of 62-82 ms by default, 58.2-62.5k with a p99 of 24-28 ms with this. Puts and watches were
//!   unchanged within noise; serializable reads, which no other thread wakes, ran somewhat slower
//!   (53.1-61.7k reads/s against 62.6-69.7k). It favours finishing requests the server has
//!   already worked on over reading new ones, which is the order that keeps latency down; it
//!   cannot starve the connections, since those remote wakes come from requests the connections
//!   delivered.
//!
//! Disabling the slot is one of tokio's unstable options, so it needs `--cfg tokio_unstable`,
//! which the workspace's `.cargo/config.toml` passes. A build that overrides those flags
//! (`RUSTFLAGS` in the environment replaces them) keeps the slot and says so at start.
//! Unstable options are outside tokio's semver guarantee; `Cargo.lock` pins the version.

/// A multi-threaded runtime with every driver and the scheduling described above.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    builder().build()
}

fn builder() -> tokio::runtime::Builder {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all().global_queue_interval(1);
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
    use std::future::Future;
    use std::sync::{Arc, Mutex};

    /// Runs `setup` as a task on a one-worker runtime built as the server's, then every task it
    /// returns, and gives the order in which those tasks logged.
    fn order_of<F, Fut>(setup: F) -> Vec<&'static str>
    where
        F: FnOnce(Log) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<tokio::task::JoinHandle<()>>> + Send + 'static,
    {
        // Without the cfg the runtime keeps the LIFO slot, which runs a woken task ahead of both
        // orders checked here: fail on the cause, not on the order.
        if !cfg!(tokio_unstable) {
            panic!(
                "built without --cfg tokio_unstable (RUSTFLAGS in the environment replaces the \
                 workspace's .cargo/config.toml), so the runtime keeps tokio's LIFO slot"
            );
        }
        let rt = super::builder().worker_threads(1).build().unwrap();
        let log = Log::default();
        let l = log.clone();
        rt.block_on(async move {
            for h in tokio::spawn(setup(l)).await.unwrap() {
                h.await.unwrap();
            }
        });
        let order = log.0.lock().unwrap().clone();
        order
    }

    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<&'static str>>>);

    impl Log {
        fn push(&self, what: &'static str) {
            self.0.lock().unwrap().push(what);
        }
    }

    /// A task woken by the running task waits behind one spawned before the wake.
    #[test]
    fn a_task_woken_on_the_worker_does_not_jump_the_queue() {
        let order = order_of(|log| async move {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let l = log.clone();
            let woken = tokio::spawn(async move {
                rx.await.unwrap();
                l.push("woken");
            });
            // The worker polls `woken` until it waits on `rx` before this task runs again.
            tokio::task::yield_now().await;
            let queued = tokio::spawn(async move { log.push("queued") });
            tx.send(()).unwrap();
            vec![woken, queued]
        });
        assert_eq!(order, ["queued", "woken"]);
    }

    /// A task woken from another thread runs before the tasks queued on the worker.
    #[test]
    fn a_task_woken_from_another_thread_runs_first() {
        let order = order_of(|log| async move {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let l = log.clone();
            let mut tasks = vec![tokio::spawn(async move {
                rx.await.unwrap();
                l.push("remote");
            })];
            tokio::task::yield_now().await;
            for _ in 0..4 {
                let l = log.clone();
                tasks.push(tokio::spawn(async move { l.push("local") }));
            }
            std::thread::spawn(move || tx.send(()).unwrap())
                .join()
                .unwrap();
            tasks
        });
        assert_eq!(order, ["remote", "local", "local", "local", "local"]);
    }
}
