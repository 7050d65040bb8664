//! Periodic mode (etcd's `v3compactor/periodic.go`): keep a retention's worth of history, sampled
//! every tenth of it. The schedule is described in the crate doc; this is its state.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::{go_duration, Command, Outcome};

/// etcd's `retryDivisor`: the window holds one sample per tenth of the (capped) retention.
const RETRY_DIVISOR: u32 = 10;
/// Retentions longer than this compact every hour.
const MAX_COMPACT_INTERVAL: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub struct Periodic {
    /// The retention (etcd's `period`).
    period: Duration,
    /// Time between samples, and between a failed compaction and the next try.
    retry: Duration,
    /// Compactions after the first come this often.
    compact_interval: Duration,
    /// Samples the window holds: the oldest is about one retention old.
    retentions: usize,
    /// Sampled revisions, oldest first.
    revs: VecDeque<i64>,
    /// When the last compaction succeeded (start-up at first).
    last_success: Instant,
    /// How long after `last_success` the next compaction is due: the retention until the first
    /// one, then the compact interval.
    base_interval: Duration,
    /// The compaction in flight: its revision and when it was proposed.
    pending: Option<(i64, Instant)>,
}

impl Periodic {
    /// A compactor keeping `period` of history, started at `now` with the store at `rev`.
    pub fn new(period: Duration, now: Instant, rev: i64) -> (Periodic, Command) {
        let capped = period.min(MAX_COMPACT_INTERVAL);
        // etcd divides by this; a retention under 10 ns (which makes Go's division panic) gets the
        // smallest interval there is instead.
        let retry = (capped / RETRY_DIVISOR).max(Duration::from_nanos(1));
        let retentions = usize::try_from(period.as_nanos() / retry.as_nanos())
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let mut p = Periodic {
            period,
            retry,
            compact_interval: capped,
            retentions,
            revs: VecDeque::new(),
            last_success: now,
            base_interval: period,
            pending: None,
        };
        let cmd = p.sample(rev);
        (p, cmd)
    }

    /// The retry interval (a tenth of the retention, at most six minutes).
    pub fn retry_interval(&self) -> Duration {
        self.retry
    }

    /// The top of etcd's loop: records the revision and waits one retry interval.
    fn sample(&mut self, rev: i64) -> Command {
        self.revs.push_back(rev);
        while self.revs.len() > self.retentions {
            self.revs.pop_front();
        }
        Command::Wait(self.retry)
    }

    pub(crate) fn woke(&mut self, now: Instant, leader: bool, rev: i64) -> Command {
        // Paused (not the leader), or not due: sample and wait again.
        if !leader || now.saturating_duration_since(self.last_success) < self.base_interval {
            return self.sample(rev);
        }
        // After the first retention, compact every compact interval.
        if self.base_interval == self.period {
            self.base_interval = self.compact_interval;
        }
        let Some(&at) = self.revs.front() else {
            return self.sample(rev);
        };
        tracing::info!(
            revision = at,
            compact_period = %go_duration(self.period),
            "starting auto periodic compaction"
        );
        self.pending = Some((at, now));
        Command::Compact(at)
    }

    pub(crate) fn compacted(&mut self, now: Instant, outcome: Outcome, rev: i64) -> Command {
        let (at, started) = self.pending.take().unwrap_or((0, now));
        match outcome {
            Outcome::Done | Outcome::AlreadyCompacted => {
                tracing::info!(
                    revision = at,
                    compact_period = %go_duration(self.period),
                    took = %go_duration(now.saturating_duration_since(started)),
                    "completed auto periodic compaction"
                );
                self.last_success = now;
            }
            Outcome::Failed(error) => tracing::warn!(
                revision = at,
                compact_period = %go_duration(self.period),
                retry_interval = %go_duration(self.retry),
                error = %error,
                "failed auto periodic compaction"
            ),
        }
        self.sample(rev)
    }
}
