//! Hearth's auto-compactor, after etcd's `v3compactor` package: when to compact the key space, and
//! at which revision, for `--auto-compaction-mode periodic|revision` and
//! `--auto-compaction-retention`.
//!
//! # Shape
//!
//! [`Compactor`] is a state machine with no clock, thread or I/O of its own. It answers each event
//! with the next [`Command`]: wait so long, or compact at a revision. The caller carries the command
//! out and reports back with the time it is now, whether this member leads and the store's current
//! revision:
//!
//! ```text
//! let (mut c, mut cmd) = Compactor::new(retention, now, rev);
//! loop {
//!     cmd = match cmd {
//!         Command::Wait(d) => { sleep(d); c.woke(now, is_leader, rev) }
//!         Command::Compact(r) => { let o = propose_compaction(r); c.compacted(now, o, rev) }
//!     };
//! }
//! ```
//!
//! The server's task (`server::compactor_driver`) is that loop on tokio with the real clock; the
//! unit tests are the same loop on a manual clock, so every schedule below is checked minute by
//! minute without sleeping. This is etcd's goroutine loop unrolled: etcd's compactor samples the
//! revision at the top of its loop, blocks on `clock.After`, checks its pause flag, maybe calls
//! `Compact` synchronously, and loops; each of those points is one event here.
//!
//! # The schedules (etcd 3.5's, exactly)
//!
//! **Periodic** (`--auto-compaction-retention=1h`, or a bare `1` meaning hours): the revision is
//! sampled every *retry interval*, a tenth of the retention (of one hour if the retention is longer),
//! into a window of `retention / retry interval + 1` samples, so the oldest sample is about one
//! retention old. Nothing is compacted during the first retention after start; then the oldest
//! sample is compacted, and after that every *compact interval* (the retention, or one hour if the
//! retention is longer). A successful compaction (or one that finds the revision already compacted)
//! starts the next interval; a failed one is retried at the next sample, one retry interval later,
//! with the window moved on by one sample. While the member is not the leader nothing is compacted
//! but sampling goes on, so a new leader compacts as soon as an interval has passed since this
//! member's last success (or since start).
//!
//! **Revision** (`--auto-compaction-mode=revision --auto-compaction-retention=1000`): every five
//! minutes, on the leader, compact at `current revision - retention`, unless that is not positive or
//! is the revision the last successful compaction used. A failure is retried five minutes later.
//!
//! Either way the compaction is proposed through Raft like a client's `Compact` (not physical: the
//! proposer does not wait for the deletion of old records), so every member compacts at the same
//! revision.
//!
//! # etcd 3.6
//!
//! etcd 3.6's periodic compactor also skips a compaction at the revision its last success used;
//! 3.5 proposes it again, Raft applies it, and the store answers "already compacted", which counts
//! as a success. Hearth follows 3.5: the effect on the data is the same, one extra entry per interval
//! on an idle cluster.
//!
//! # Invariants
//!
//! Knows nothing of Raft, the store, the server or the network: revisions and leadership come in as
//! numbers and flags, time as `Instant`s the caller reads; never sleeps, never spawns. Logs etcd's
//! lines ("starting auto periodic compaction", "completed ...", "failed ...").

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

mod periodic;
mod revision;

#[cfg(test)]
mod tests;

pub use periodic::Periodic;
pub use revision::{Revision, REVISION_INTERVAL};

/// `--auto-compaction-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Periodic,
    Revision,
}

impl Mode {
    /// etcd's mode names (`periodic`, `revision`).
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "periodic" => Some(Mode::Periodic),
            "revision" => Some(Mode::Revision),
            _ => None,
        }
    }
}

/// What the auto-compactor keeps: `--auto-compaction-retention` read in its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep this much history (periodic mode).
    Periodic(Duration),
    /// Keep this many revisions (revision mode).
    Revision(i64),
}

/// Reads `--auto-compaction-retention` as etcd's `parseCompactionRetention` does: a non-negative
/// integer is hours in periodic mode and a revision count in revision mode; anything else must be a
/// duration (`parse_duration`, Go's syntax), which in revision mode etcd takes as a count of
/// nanoseconds (Hearth keeps that quirk rather than invent another meaning). `None` when the
/// retention is zero: no auto-compaction.
pub fn parse_retention(
    mode: Mode,
    value: &str,
    parse_duration: impl Fn(&str) -> Result<Duration, String>,
) -> Result<Option<Retention>, String> {
    let value = if value.is_empty() { "0" } else { value };
    // Go's strconv.Atoi: an optional sign and decimal digits only.
    let int = value
        .strip_prefix('+')
        .unwrap_or(value)
        .chars()
        .all(|c| c.is_ascii_digit())
        .then(|| value.parse::<i64>().ok())
        .flatten();
    let r = match (int, mode) {
        (Some(n), Mode::Revision) => Retention::Revision(n),
        (Some(n), Mode::Periodic) => Retention::Periodic(
            Duration::from_secs(3600)
                .checked_mul(u32::try_from(n).map_err(|_| too_long(value))?)
                .ok_or_else(|| too_long(value))?,
        ),
        (None, _) => {
            let d = parse_duration(value)
                .map_err(|e| format!("error parsing CompactionRetention: {e}"))?;
            match mode {
                Mode::Periodic => Retention::Periodic(d),
                Mode::Revision => {
                    Retention::Revision(i64::try_from(d.as_nanos()).map_err(|_| too_long(value))?)
                }
            }
        }
    };
    Ok(match r {
        Retention::Periodic(d) if d.is_zero() => None,
        Retention::Revision(0) => None,
        r => Some(r),
    })
}

fn too_long(value: &str) -> String {
    format!("error parsing CompactionRetention: {value:?} is too long")
}

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Wait this long, then call [`Compactor::woke`].
    Wait(Duration),
    /// Propose a compaction at this revision through Raft, wait for it to be applied, then call
    /// [`Compactor::compacted`].
    Compact(i64),
}

/// How a proposed compaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied.
    Done,
    /// The store was already compacted at or past the revision (etcd's `ErrCompacted`): as good as
    /// done.
    AlreadyCompacted,
    /// Anything else (no leader, timeout, the member is stopping, ...): tried again later.
    Failed(String),
}

/// The auto-compactor of one member, in either mode.
#[derive(Debug)]
pub enum Compactor {
    Periodic(Periodic),
    Revision(Revision),
}

impl Compactor {
    /// A compactor started at `now` with the store at revision `rev`, and its first command.
    pub fn new(retention: Retention, now: Instant, rev: i64) -> (Compactor, Command) {
        match retention {
            Retention::Periodic(d) => {
                let (p, cmd) = Periodic::new(d, now, rev);
                (Compactor::Periodic(p), cmd)
            }
            Retention::Revision(n) => {
                let (r, cmd) = Revision::new(n);
                (Compactor::Revision(r), cmd)
            }
        }
    }

    /// A [`Command::Wait`] is over. `leader`: whether this member leads now (etcd pauses the
    /// compactor on followers); `rev`: the store's current revision.
    pub fn woke(&mut self, now: Instant, leader: bool, rev: i64) -> Command {
        match self {
            Compactor::Periodic(p) => p.woke(now, leader, rev),
            Compactor::Revision(r) => r.woke(now, leader, rev),
        }
    }

    /// The compaction asked for by the last [`Command::Compact`] ended with `outcome`; `rev` is the
    /// store's current revision.
    pub fn compacted(&mut self, now: Instant, outcome: Outcome, rev: i64) -> Command {
        match self {
            Compactor::Periodic(p) => p.compacted(now, outcome, rev),
            Compactor::Revision(r) => r.compacted(now, outcome),
        }
    }
}

/// A duration as Go's `time.Duration.String` writes it (`1h0m0s`, `6m0s`, `1.5s`, `300ms`), which
/// is how etcd's log lines show durations.
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    let frac = |v: u128, unit: u128, width: usize| -> String {
        let (i, f) = (v / unit, v % unit);
        if f == 0 {
            i.to_string()
        } else {
            let s = format!("{i}.{f:0width$}");
            s.trim_end_matches('0').to_string()
        }
    };
    match ns {
        0 => "0s".into(),
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{}µs", frac(n, 1_000, 3)),
        n if n < 1_000_000_000 => format!("{}ms", frac(n, 1_000_000, 6)),
        n => {
            let secs = n / 1_000_000_000;
            let s = frac(n % 60_000_000_000, 1_000_000_000, 9);
            let (h, m) = (secs / 3600, (secs / 60) % 60);
            if h > 0 {
                format!("{h}h{m}m{s}s")
            } else if m > 0 {
                format!("{m}m{s}s")
            } else {
                format!("{s}s")
            }
        }
    }
}
