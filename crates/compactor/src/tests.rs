//! The schedules, checked on a manual clock: the same loop the server runs, with time advanced
//! event by event instead of slept through. Expectations were worked out from etcd 3.5's loop
//! (and agree with what its `periodic_test.go`/`revision_test.go` expect of it).

use super::*;

const MIN: Duration = Duration::from_secs(60);
const SEC: Duration = Duration::from_secs(1);

fn mins(m: u64) -> Duration {
    MIN * m as u32
}

/// A member running the compactor on a manual clock.
struct Sim {
    start: Instant,
    now: Instant,
    c: Compactor,
    next: Next,
    leader: bool,
    /// The store's revision as a function of the time since start.
    rev: Box<dyn Fn(Duration) -> i64>,
    /// Outcomes of the next compactions (then `Done`).
    outcomes: Vec<Outcome>,
    /// (time since start, revision) of every compaction proposed.
    proposed: Vec<(Duration, i64)>,
}

enum Next {
    WakeAt(Instant),
    Compact(i64),
}

impl Sim {
    fn new(retention: Retention, rev: impl Fn(Duration) -> i64 + 'static) -> Sim {
        let start = Instant::now();
        let (c, cmd) = Compactor::new(retention, start, rev(Duration::ZERO));
        let mut s = Sim {
            start,
            now: start,
            c,
            next: Next::Compact(0),
            leader: true,
            rev: Box::new(rev),
            outcomes: Vec::new(),
            proposed: Vec::new(),
        };
        s.follow(cmd);
        s
    }

    fn follow(&mut self, cmd: Command) {
        self.next = match cmd {
            Command::Wait(d) => Next::WakeAt(self.now + d),
            Command::Compact(r) => Next::Compact(r),
        };
    }

    fn rev_now(&self) -> i64 {
        (self.rev)(self.now - self.start)
    }

    /// Runs every event due up to `t` after start, inclusive; compactions take no time.
    fn run_to(&mut self, t: Duration) {
        let until = self.start + t;
        loop {
            let cmd = match self.next {
                Next::WakeAt(at) if at > until => return,
                Next::WakeAt(at) => {
                    self.now = at;
                    self.c.woke(self.now, self.leader, self.rev_now())
                }
                Next::Compact(r) => {
                    self.proposed.push((self.now - self.start, r));
                    let outcome = if self.outcomes.is_empty() {
                        Outcome::Done
                    } else {
                        self.outcomes.remove(0)
                    };
                    self.c.compacted(self.now, outcome, self.rev_now())
                }
            };
            self.follow(cmd);
        }
    }

    fn take(&mut self) -> Vec<(Duration, i64)> {
        std::mem::take(&mut self.proposed)
    }
}

/// One write a minute: revision 1 at start, 2 after a minute, ...
fn per_minute(t: Duration) -> i64 {
    1 + (t.as_secs() / 60) as i64
}

fn failed() -> Outcome {
    Outcome::Failed("etcdserver: request timed out".into())
}

#[test]
fn periodic_one_hour_compacts_hourly_after_the_first_hour() {
    let mut s = Sim::new(Retention::Periodic(mins(60)), per_minute);
    s.run_to(mins(60) - SEC);
    assert_eq!(s.take(), []);
    s.run_to(mins(180));
    // The first compaction takes the revision sampled at start; later ones the oldest sample of
    // the window (retention + one retry interval of 6 minutes back).
    assert_eq!(
        s.take(),
        [
            (mins(60), per_minute(mins(0))),
            (mins(120), per_minute(mins(54))),
            (mins(180), per_minute(mins(114))),
        ]
    );
}

#[test]
fn periodic_ten_minutes_samples_every_minute() {
    let mut s = Sim::new(Retention::Periodic(mins(10)), per_minute);
    match &s.c {
        Compactor::Periodic(p) => assert_eq!(p.retry_interval(), MIN),
        other => panic!("{other:?}"),
    }
    s.run_to(mins(40));
    assert_eq!(
        s.take(),
        [
            (mins(10), 1),
            (mins(20), per_minute(mins(9))),
            (mins(30), per_minute(mins(19))),
            (mins(40), per_minute(mins(29))),
        ]
    );
}

#[test]
fn periodic_thirty_seconds() {
    // One write a second.
    let mut s = Sim::new(Retention::Periodic(SEC * 30), |t| 1 + t.as_secs() as i64);
    s.run_to(SEC * 29);
    assert_eq!(s.take(), []);
    s.run_to(SEC * 90);
    assert_eq!(
        s.take(),
        [(SEC * 30, 1), (SEC * 60, 28), (SEC * 90, 58)],
        "samples every 3 s, the oldest of 11 compacted"
    );
}

#[test]
fn periodic_longer_than_an_hour_waits_the_retention_then_compacts_hourly() {
    let mut s = Sim::new(Retention::Periodic(mins(120)), per_minute);
    s.run_to(mins(120) - SEC);
    assert_eq!(s.take(), []);
    s.run_to(mins(240));
    // Samples every 6 minutes, 21 of them: the window reaches back 126 minutes.
    assert_eq!(
        s.take(),
        [
            (mins(120), 1),
            (mins(180), per_minute(mins(54))),
            (mins(240), per_minute(mins(114))),
        ]
    );
}

#[test]
fn periodic_pauses_without_leadership_and_keeps_sampling() {
    let mut s = Sim::new(Retention::Periodic(mins(10)), per_minute);
    s.leader = false;
    s.run_to(mins(24));
    assert_eq!(s.take(), [], "a follower never compacts");
    // Leader again: compacts at the next sample, from the window it kept filling.
    s.leader = true;
    s.run_to(mins(35));
    assert_eq!(
        s.take(),
        [
            (mins(25), per_minute(mins(14))),
            (mins(35), per_minute(mins(24)))
        ]
    );
    s.leader = false;
    s.run_to(mins(60));
    assert_eq!(s.take(), []);
    s.leader = true;
    s.run_to(mins(70));
    assert_eq!(s.take(), [(mins(61), per_minute(mins(50)))]);
}

#[test]
fn periodic_retries_a_failed_compaction_one_sample_later() {
    let mut s = Sim::new(Retention::Periodic(mins(10)), per_minute);
    s.outcomes = vec![failed(), failed()];
    s.run_to(mins(22));
    assert_eq!(
        s.take(),
        [
            (mins(10), 1),
            (mins(11), 1),
            // The window moved on by one sample per try.
            (mins(12), per_minute(mins(1))),
            // The interval counts from the success.
            (mins(22), per_minute(mins(11))),
        ]
    );
}

#[test]
fn periodic_counts_an_already_compacted_revision_as_success() {
    // A store that does not move: etcd 3.5 proposes the same revision again every interval.
    let mut s = Sim::new(Retention::Periodic(mins(10)), |_| 7);
    s.outcomes = vec![Outcome::Done, Outcome::AlreadyCompacted];
    s.run_to(mins(30));
    assert_eq!(s.take(), [(mins(10), 7), (mins(20), 7), (mins(30), 7)]);
}

#[test]
fn revision_mode_checks_every_five_minutes() {
    let rev = |t: Duration| match t.as_secs() / 60 {
        0..=5 => 5,
        6..=15 => 100,
        _ => 200,
    };
    let mut s = Sim::new(Retention::Revision(10), rev);
    s.run_to(mins(5));
    assert_eq!(s.take(), [], "revision 5 keeps fewer than 10 revisions");
    s.run_to(mins(25));
    // At 15 minutes the target is the last one compacted: skipped.
    assert_eq!(s.take(), [(mins(10), 90), (mins(20), 190)]);
    s.run_to(mins(60));
    assert_eq!(s.take(), []);
}

#[test]
fn revision_mode_retries_after_a_failure_and_pauses_on_followers() {
    let mut s = Sim::new(Retention::Revision(1000), |t| {
        1 + 100 * (t.as_secs() / 60) as i64
    });
    s.outcomes = vec![failed()];
    s.run_to(mins(10));
    assert_eq!(s.take(), [(mins(10), 1)], "revision 1001 keeps 1000");
    s.run_to(mins(15));
    assert_eq!(
        s.take(),
        [(mins(15), 501)],
        "tried again five minutes later"
    );
    s.leader = false;
    s.run_to(mins(40));
    assert_eq!(s.take(), []);
    s.leader = true;
    s.run_to(mins(45));
    assert_eq!(s.take(), [(mins(45), 3501)]);
}

#[test]
fn retention_parses_as_etcd_reads_it() {
    let dur = |s: &str| -> Result<Duration, String> {
        match s {
            "30m" => Ok(mins(30)),
            "0h" => Ok(Duration::ZERO),
            "1ms" => Ok(Duration::from_millis(1)),
            _ => Err(format!("time: invalid duration {s:?}")),
        }
    };
    let p = |mode, s| parse_retention(mode, s, dur);
    assert_eq!(
        p(Mode::Periodic, "1"),
        Ok(Some(Retention::Periodic(mins(60))))
    );
    assert_eq!(
        p(Mode::Periodic, "30m"),
        Ok(Some(Retention::Periodic(mins(30))))
    );
    assert_eq!(p(Mode::Periodic, "0"), Ok(None));
    assert_eq!(p(Mode::Periodic, ""), Ok(None));
    assert_eq!(p(Mode::Periodic, "0h"), Ok(None));
    assert_eq!(
        p(Mode::Revision, "1000"),
        Ok(Some(Retention::Revision(1000)))
    );
    assert_eq!(p(Mode::Revision, "0"), Ok(None));
    // etcd's quirk: a duration in revision mode is its count of nanoseconds.
    assert_eq!(
        p(Mode::Revision, "1ms"),
        Ok(Some(Retention::Revision(1_000_000)))
    );
    assert_eq!(
        p(Mode::Periodic, "abc"),
        Err("error parsing CompactionRetention: time: invalid duration \"abc\"".into())
    );
    assert!(p(Mode::Periodic, "-1").is_err());
    assert!(p(Mode::Periodic, "99999999999").is_err());
    assert_eq!(Mode::parse("revision"), Some(Mode::Revision));
    assert_eq!(Mode::parse("hourly"), None);
}

#[test]
fn durations_print_as_go_prints_them() {
    for (d, want) in [
        (Duration::ZERO, "0s"),
        (Duration::from_nanos(5), "5ns"),
        (Duration::from_micros(1500), "1.5ms"),
        (Duration::from_millis(300), "300ms"),
        (Duration::from_millis(1500), "1.5s"),
        (SEC * 90, "1m30s"),
        (mins(6), "6m0s"),
        (mins(60), "1h0m0s"),
        (mins(150) + Duration::from_millis(500), "2h30m0.5s"),
    ] {
        assert_eq!(go_duration(d), want, "{d:?}");
    }
}
