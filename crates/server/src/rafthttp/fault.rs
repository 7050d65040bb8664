//! A fault switch for tests: while a given file exists, the member drops all peer traffic, in and out, as
//! if its network to the other members were cut (its client port keeps working). Enabled only by the
//! hidden flag `--unsafe-test-peer-fault-file` (`HEARTH_UNSAFE_TEST_PEER_FAULT_FILE`); never use it in
//! production. A file rather than an RPC, so that nothing on the network can switch it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the file is looked at.
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
pub struct FaultSwitch {
    blocked: AtomicBool,
}

impl FaultSwitch {
    /// A switch that is never on.
    pub fn off() -> Arc<FaultSwitch> {
        Arc::new(FaultSwitch::default())
    }

    /// A switch that follows `file` (polled on the current tokio runtime until `stop` resolves).
    pub fn watching(
        file: PathBuf,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<FaultSwitch> {
        let sw = Arc::new(FaultSwitch::default());
        let s = sw.clone();
        tracing::warn!(file = %file.display(), "test-only peer fault switch enabled");
        tokio::spawn(async move {
            loop {
                let on = tokio::fs::try_exists(&file).await.unwrap_or(false);
                if s.blocked.swap(on, Ordering::AcqRel) != on {
                    tracing::warn!(blocked = on, "test-only peer fault switch flipped");
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
        sw
    }

    /// Whether all peer traffic is to be dropped.
    pub fn blocked(&self) -> bool {
        self.blocked.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub fn set(&self, on: bool) {
        self.blocked.store(on, Ordering::Release);
    }
}
