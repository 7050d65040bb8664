//! The one way the tests wait: a condition polled with a short, growing pause until a deadline,
//! failing with a message that names what was awaited (and what was last seen) if it never holds.
//!
//! A test never sleeps to let something happen: it waits for the thing itself (a revision, a
//! log line, a metric, a process exit, a key that a waiter created). The deadline only bounds a
//! wait that would otherwise hang; it is generous and never an assertion about speed.
//!
//! The pause starts at [`FIRST_PAUSE`] and doubles up to [`MAX_PAUSE`]: a condition that holds
//! quickly is seen quickly, and a long wait does not keep the two cores busy with probes (each
//! may be an RPC, an etcdctl process or a read of a server log).
//!
//! - [`eventually`] / [`eventually_blocking`]: poll a probe until it is [`Ready`] (`true`,
//!   `Some`, `Ok`) and return its value; past the deadline, panic naming what was awaited and the
//!   last `Err` (or `None`/`false`) seen.
//! - [`Poll`]: the same loop written out, for waits that do more between attempts (trigger
//!   something, stop early on a process exit, return instead of panicking at the deadline), and
//!   the deadline of waits that block by themselves (reading a stream: [`Poll::left`]).

use std::fmt::{Debug, Display};
use std::time::{Duration, Instant};

/// The first pause between two attempts.
pub const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause between two attempts.
pub const MAX_PAUSE: Duration = Duration::from_millis(50);

/// What a probe returns: ready with a value, or not yet (with what it saw, for the message).
pub trait Ready {
    type Value;
    fn ready(self) -> Result<Self::Value, String>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("the condition was false".into())
        }
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet".into())
    }
}

impl<T, E: Debug> Ready for Result<T, E> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// One wait: its deadline and the pause before the next attempt.
pub struct Poll {
    what: String,
    within: Duration,
    until: Instant,
    pause: Duration,
}

impl Poll {
    /// A wait for `what` (a phrase: "the leader elected"), for at most `within`.
    pub fn new(what: impl Into<String>, within: Duration) -> Poll {
        Poll {
            what: what.into(),
            within,
            until: Instant::now() + within,
            pause: FIRST_PAUSE,
        }
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.until
    }

    /// The time left before the deadline (zero once it has passed): the bound of one attempt
    /// that blocks by itself, such as reading the next message of a stream.
    pub fn left(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }

    /// Panics naming what was awaited and `last` (what the last attempt saw).
    #[track_caller]
    pub fn fail(&self, last: impl Display) -> ! {
        panic!(
            "gave up after {:?} waiting for {}; last seen: {last}",
            self.within, self.what
        )
    }

    /// Between two attempts: fails (see [`fail`](Self::fail)) once the deadline has passed, else
    /// pauses.
    pub async fn next(&mut self, last: impl Display) {
        if !self.try_next().await {
            self.fail(last)
        }
    }

    /// Like [`next`](Self::next), for code that does not run on tokio.
    #[track_caller]
    pub fn next_blocking(&mut self, last: impl Display) {
        if !self.try_next_blocking() {
            self.fail(last)
        }
    }

    /// Between two attempts: false once the deadline has passed, else pauses and returns true.
    pub async fn try_next(&mut self) -> bool {
        match self.pause() {
            Some(p) => {
                tokio::time::sleep(p).await;
                true
            }
            None => false,
        }
    }

    /// Like [`try_next`](Self::try_next), for code that does not run on tokio.
    pub fn try_next_blocking(&mut self) -> bool {
        match self.pause() {
            Some(p) => {
                std::thread::sleep(p);
                true
            }
            None => false,
        }
    }

    /// The next pause (never past the deadline), or None once the deadline has passed.
    fn pause(&mut self) -> Option<Duration> {
        let left = self.until.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        let p = self.pause.min(left);
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        Some(p)
    }
}

/// Polls `probe` until it is ready and returns its value; panics naming `what` and the last
/// thing seen once `within` has passed.
pub async fn eventually<R: Ready>(
    what: impl Into<String>,
    within: Duration,
    mut probe: impl AsyncFnMut() -> R,
) -> R::Value {
    let mut poll = Poll::new(what, within);
    loop {
        match probe().await.ready() {
            Ok(v) => return v,
            Err(last) => poll.next(last).await,
        }
    }
}

/// Like [`eventually`], for code that does not run on tokio.
#[track_caller]
pub fn eventually_blocking<R: Ready>(
    what: impl Into<String>,
    within: Duration,
    mut probe: impl FnMut() -> R,
) -> R::Value {
    let mut poll = Poll::new(what, within);
    loop {
        match probe().ready() {
            Ok(v) => return v,
            Err(last) => poll.next_blocking(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_ready() {
        let mut n = 0;
        let v = eventually_blocking("n to reach 3", Duration::from_secs(10), || {
            n += 1;
            (n >= 3).then_some(n)
        });
        assert_eq!(v, 3);
    }

    #[test]
    fn fails_naming_what_and_the_last_thing_seen() {
        let e = std::panic::catch_unwind(|| {
            eventually_blocking("the impossible", Duration::from_millis(30), || {
                Err::<(), _>("still 7")
            })
        })
        .expect_err("must give up");
        let msg = e.downcast_ref::<String>().expect("a formatted message");
        assert!(
            msg.contains("the impossible") && msg.contains("still 7"),
            "{msg}"
        );
    }

    #[test]
    fn pauses_grow_up_to_the_cap_and_stop_at_the_deadline() {
        let mut p = Poll::new("x", Duration::from_secs(3600));
        let pauses: Vec<Duration> = (0..8).map(|_| p.pause().unwrap()).collect();
        assert_eq!(pauses[0], FIRST_PAUSE);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*pauses.last().unwrap(), MAX_PAUSE);
        let mut done = Poll::new("x", Duration::ZERO);
        assert!(done.expired() && done.pause().is_none());
    }

    #[tokio::test]
    async fn async_probes_may_borrow_state() {
        let mut seen = Vec::new();
        eventually("three attempts", Duration::from_secs(10), async || {
            seen.push(seen.len());
            seen.len() == 3
        })
        .await;
        assert_eq!(seen, [0, 1, 2]);
    }
}
