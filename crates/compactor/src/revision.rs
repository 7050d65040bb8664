//! Revision mode (etcd's `v3compactor/revision.go`): every five minutes, keep the last `retention`
//! revisions.

use std::time::{Duration, Instant};

use crate::{go_duration, Command, Outcome};

/// How often revision mode checks (etcd's `revInterval`).
pub const REVISION_INTERVAL: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
pub struct Revision {
    retention: i64,
    /// The revision of the last successful compaction (0: none yet).
    prev: i64,
    /// The compaction in flight: its revision and when it was proposed.
    pending: Option<(i64, Instant)>,
}

impl Revision {
    /// A compactor keeping `retention` revisions; it first waits one interval.
    pub fn new(retention: i64) -> (Revision, Command) {
        (
            Revision {
                retention,
                prev: 0,
                pending: None,
            },
            Command::Wait(REVISION_INTERVAL),
        )
    }

    pub(crate) fn woke(&mut self, now: Instant, leader: bool, rev: i64) -> Command {
        if !leader {
            return Command::Wait(REVISION_INTERVAL);
        }
        let at = rev.saturating_sub(self.retention);
        if at <= 0 || at == self.prev {
            return Command::Wait(REVISION_INTERVAL);
        }
        tracing::info!(
            revision = at,
            revision_compaction_retention = self.retention,
            "starting auto revision compaction"
        );
        self.pending = Some((at, now));
        Command::Compact(at)
    }

    pub(crate) fn compacted(&mut self, now: Instant, outcome: Outcome) -> Command {
        let (at, started) = self.pending.take().unwrap_or((0, now));
        match outcome {
            Outcome::Done | Outcome::AlreadyCompacted => {
                self.prev = at;
                tracing::info!(
                    revision = at,
                    revision_compaction_retention = self.retention,
                    took = %go_duration(now.saturating_duration_since(started)),
                    "completed auto revision compaction"
                );
            }
            Outcome::Failed(error) => tracing::warn!(
                revision = at,
                revision_compaction_retention = self.retention,
                retry_interval = %go_duration(REVISION_INTERVAL),
                error = %error,
                "failed auto revision compaction"
            ),
        }
        Command::Wait(REVISION_INTERVAL)
    }
}
