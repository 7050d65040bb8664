//! Hands a result computed on the apply thread to the request that is waiting for it, by request id.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

pub struct Wait<T> {
    waiters: Mutex<HashMap<u64, oneshot::Sender<T>>>,
}

impl<T> Default for Wait<T> {
    fn default() -> Self {
        Wait {
            waiters: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Wait<T> {
    pub fn register(&self, id: u64) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        rx
    }

    /// Delivers `v` to the waiter of `id`, if any is still waiting (after a restart, or a timeout, none is).
    pub fn trigger(&self, id: u64, v: T) {
        if let Some(tx) = self.lock().remove(&id) {
            let _ = tx.send(v);
        }
    }

    pub fn cancel(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<T>>> {
        // A panic while holding this lock cannot leave the map inconsistent, so poisoning is ignored.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}
