//! Crashes at failpoints (see `docs/failpoints.md`), network partitions and full disks, under a
//! concurrent recorded load; then the whole history is checked.
//!
//! Each round restarts one member with `HEARTH_FAILPOINTS=<point>=<n>*off->abort`, so it runs on
//! normally for `n` hits of the point and then aborts the process right there (what a crash leaves
//! of the process: nothing but what reached the disk). Points that only busy members reach are
//! driven by a trigger (a compaction, a defragmentation, a membership change). The test waits for
//! the abort (and checks that it was that failpoint), restarts the member without failpoints and
//! checks that the members' HashKV agree at a revision they all reached. Every few rounds a member
//! is cut off from its peers, under the same load, until it has lost its leader and the others
//! have one among themselves, and is healed.
//!
//! Throughout, [`Traffic`] records every get, put, delete and compare-and-swap txn with its times,
//! and a [`ResumingWatcher`] follows the keys, resuming on another member whenever its stream
//! breaks. At the end the members must converge on one HashKV; the history must be linearizable,
//! with every acknowledged write present at its revision (`linearizability::check`); the watcher
//! must have seen every revision exactly once and in order; and every member must serve exactly
//! the final state the history implies.
//!
//! Seeds are printed; `HEARTH_SEED` replays the choices (not the timing).
//!
//! Also here: backpressure while a leader's applying is held (`beforeApplyOneEntryNormal=pause`), which
//! must neither stop its Raft loop nor let its apply backlog grow past etcd's gap.

use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

use api::etcdserverpb::{CompactionRequest, RangeRequest};
use etcd_client::MemberAddOptions;
use hearth_tests::history::{ResumingWatcher, Traffic};
use hearth_tests::poll::{self, Poll};
use hearth_tests::ports::{self, Port};
use hearth_tests::rng::{Rng, Seed};
use hearth_tests::rpc::RawKv;
use hearth_tests::{linearizability, Cluster, Kind};

const PREFIX: &str = "fp";
const CLIENTS: usize = 6;
/// Long enough for any failpoint here to be reached under the load, or for its trigger to run.
const CRASH_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Leader,
    Follower,
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// The load reaches the point by itself.
    Load,
    /// A compaction with more than one batch of records to delete.
    Compact,
    /// Defragment the target.
    Defrag,
    /// Add a learner (a conf change entry), removed again after the round.
    ConfChange,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    point: &'static str,
    target: Target,
    trigger: Trigger,
}

const fn case(point: &'static str, target: Target, trigger: Trigger) -> Case {
    Case {
        point,
        target,
        trigger,
    }
}

/// How the process must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The failpoint aborts it (SIGABRT).
    Abort,
    /// An injected ENOSPC makes it stop on its own with an error (exit status 1).
    FullDisk,
}

/// A learner added by a trigger: its id, when, and the (never used) port of its peer URL.
type Learner = Option<(u64, Instant, Port)>;

struct Run {
    c: Cluster,
    /// Kept for the whole run: prints the seed if the test fails.
    _seed: Seed,
    rng: Rng,
    traffic: Traffic,
    watcher: ResumingWatcher,
    endpoints: Vec<String>,
    /// The last compaction revision sent.
    compacted: i64,
    crashes: usize,
}

impl Run {
    async fn start(test: &str, members: usize, args: &[&str]) -> Run {
        let seed = Seed::from_env(test);
        let mut rng = seed.rng();
        let c = Cluster::start_with(Kind::Hearth, members, args).await;
        let endpoints: Vec<String> = c.members.iter().map(|m| m.endpoint()).collect();
        let traffic = Traffic::start(PREFIX, endpoints.clone(), CLIENTS, &mut rng);
        let watcher = ResumingWatcher::start(PREFIX, endpoints.clone());
        traffic.wait_more(200).await;
        Run {
            c,
            _seed: seed,
            rng,
            traffic,
            watcher,
            endpoints,
            compacted: 0,
            crashes: 0,
        }
    }

    async fn pick(&mut self, target: Target) -> usize {
        let n = self.c.members.len();
        let leader = self.c.wait_leader(&[]).await;
        match target {
            Target::Leader => leader,
            Target::Follower => (leader + 1 + self.rng.usize(..n - 1)) % n,
            Target::Any => self.rng.usize(..n),
        }
    }

    /// Restarts member `i` with `spec`, triggers it, waits for it to end as `ending` says, and
    /// restarts it clean.
    async fn crash(&mut self, i: usize, point: &str, spec: &str, trigger: Trigger, ending: Ending) {
        let name = self.c.member(i).name().to_string();
        println!("{name}: HEARTH_FAILPOINTS={spec}");
        {
            let m = self.c.member_mut(i);
            m.stop();
            m.set_env(&[("HEARTH_FAILPOINTS", spec)]);
            m.respawn();
        }
        let mut poll = Poll::new(format!("{name} to reach failpoint {spec}"), CRASH_DEADLINE);
        let mut learner: Learner = None;
        let mut last_trigger = Instant::now() - Duration::from_secs(10);
        let status = loop {
            if let Some(st) = self.c.member_mut(i).exited() {
                break st;
            }
            // Triggers are paced (one a second), not waited on: the exit is what counts.
            if last_trigger.elapsed() >= Duration::from_secs(1) {
                last_trigger = Instant::now();
                self.trigger(i, trigger, &mut learner).await;
            }
            if !poll.try_next().await {
                panic!(
                    "{name} did not reach failpoint {spec} within {CRASH_DEADLINE:?}\n{}",
                    self.c.member(i).log_tail(40)
                );
            }
        };
        let log = self.c.member(i).log();
        match ending {
            Ending::Abort => {
                assert_eq!(
                    status.signal(),
                    Some(libc::SIGABRT),
                    "{name} ended with {status} instead of aborting at {point}\n{}",
                    self.c.member(i).log_tail(40)
                );
                assert!(
                    log.contains(&format!("failpoint {point}: aborting the process")),
                    "{name} aborted, but not at {point}"
                );
            }
            Ending::FullDisk => {
                assert_eq!(
                    status.code(),
                    Some(1),
                    "{name} ended with {status}, not with an error\n{}",
                    self.c.member(i).log_tail(40)
                );
                assert!(
                    log.contains("No space left on device"),
                    "{name} stopped without saying the disk is full\n{}",
                    self.c.member(i).log_tail(40)
                );
            }
        }
        self.crashes += 1;
        let m = self.c.member_mut(i);
        m.set_env(&[]);
        m.restart().await;
        if let Some((id, _, _port)) = learner {
            self.remove_learner(id).await;
        }
        self.watcher.resume_now();
        let rev = self.c.assert_hashkv_equal_at_common_revision().await;
        self.traffic.wait_more(150).await;
        println!(
            "{name}: restarted after {point}; HashKV equal at revision {rev}; {} operations so far",
            self.traffic.succeeded()
        );
    }

    async fn trigger(&mut self, i: usize, trigger: Trigger, learner: &mut Learner) {
        match trigger {
            Trigger::Load => {}
            Trigger::Compact => {
                // Enough new records since the last compaction for several batches (1000 each), and
                // never past what the watcher has seen (it must be able to resume).
                let rev = self.watcher.last_rev() - 1;
                if rev < self.compacted + 1200 {
                    return;
                }
                for e in &self.endpoints {
                    let Ok(mut kv) = RawKv::connect(e).await else {
                        continue;
                    };
                    let r = kv
                        .compact(CompactionRequest {
                            revision: rev,
                            physical: false,
                        })
                        .await;
                    // A compaction the crash interrupted may still have been recorded.
                    self.compacted = rev;
                    if r.is_ok() {
                        println!("compacted at {rev}");
                        return;
                    }
                }
            }
            Trigger::Defrag => {
                if let Ok(mut c) = hearth_tests::server::connect(&self.endpoints[i]).await {
                    let _ = c.defragment().await;
                }
            }
            Trigger::ConfChange => match learner {
                None => {
                    let port = ports::reserve();
                    let url = port.url();
                    let opts = MemberAddOptions::new().with_is_learner();
                    for e in self.endpoints.iter().filter(|e| **e != self.endpoints[i]) {
                        let Ok(mut c) = hearth_tests::server::connect(e).await else {
                            continue;
                        };
                        if let Ok(r) = c.member_add([url.as_str()], Some(opts.clone())).await {
                            let id = r.member().expect("added member").id();
                            *learner = Some((id, Instant::now(), port));
                            return;
                        }
                    }
                }
                // The target was not ready for the change: remove the learner and add another.
                Some((id, since, _)) if since.elapsed() > Duration::from_secs(3) => {
                    self.remove_learner(*id).await;
                    *learner = None;
                }
                Some(_) => {}
            },
        }
    }

    async fn remove_learner(&self, id: u64) {
        let what = format!("learner {id:x} removed");
        poll::eventually(what, CRASH_DEADLINE, async || {
            let mut last = String::from("no member reachable");
            for e in &self.endpoints {
                let Ok(mut c) = hearth_tests::server::connect(e).await else {
                    continue;
                };
                match c.member_remove(id).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.to_string().contains("member not found") => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(last)
        })
        .await
    }

    async fn crash_at(&mut self, case: Case) {
        let i = self.pick(case.target).await;
        let skip = match case.trigger {
            // Snapshot markers come every `--snapshot-count` entries: the next one or the one after.
            Trigger::Load if case.point.contains("WAL") => self.rng.u64(..2),
            // Enough passes that the crash comes mid-load, not during the restart.
            Trigger::Load => 20 + self.rng.u64(..80),
            _ => 0,
        };
        let spec = format!("{}={skip}*off->abort", case.point);
        self.crash(i, case.point, &spec, case.trigger, Ending::Abort)
            .await;
    }

    /// Cuts a member off from its peers under load until it has noticed (it knows no leader)
    /// and the others have a leader among themselves, then heals it.
    async fn partition(&mut self) {
        let n = self.c.members.len();
        let i = self.rng.usize(..n);
        let name = self.c.member(i).name().to_string();
        self.c.member(i).cut_off(true);
        self.c.wait_leader_lost(i).await;
        self.c.wait_leader(&[i]).await;
        self.c.member(i).cut_off(false);
        self.watcher.resume_now();
        self.traffic.wait_more(150).await;
        let rev = self.c.assert_hashkv_equal_at_common_revision().await;
        println!("{name}: cut off and healed; HashKV equal at revision {rev}");
    }

    /// Stops the load and checks everything (see the module doc).
    async fn finish(self) {
        let history = self.traffic.stop().await;
        let rev = self.c.assert_hashkv_equal().await;
        self.watcher.wait_for(rev).await;
        let (changes, resumes) = self.watcher.stop().await;
        let report = linearizability::check(&history, &changes)
            .unwrap_or_else(|e| panic!("the history is not linearizable:\n{e}"));
        assert_eq!(
            report.last_rev, rev,
            "the watcher saw changes up to {}, the members are at {rev}",
            report.last_rev
        );
        for m in &self.c.members {
            let mut raw = m.raw().await;
            let r = raw
                .range(RangeRequest {
                    key: format!("{PREFIX}/").into_bytes(),
                    range_end: format!("{PREFIX}0").into_bytes(),
                    serializable: true,
                    ..Default::default()
                })
                .await
                .expect("range");
            let want: Vec<_> = report.final_state.values().cloned().collect();
            assert_eq!(
                r.kvs,
                want,
                "{} does not hold the state the history ends in",
                m.name()
            );
        }
        assert!(
            report.acknowledged_writes > 300 && report.reads > 100,
            "too little traffic to mean much: {report:?}"
        );
        println!(
            "{} operations ({} reads, {} acknowledged writes, {} failed writes applied, {} failed writes lost); \
             {} crashes; watcher resumed {resumes} times; final revision {rev}; linearizable",
            report.operations,
            report.reads,
            report.acknowledged_writes,
            report.unknown_applied,
            report.unknown_lost,
            self.crashes,
        );
    }
}

/// Every point of the Raft loop, the WAL and the backend commit, on a three-member cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_loop_failpoints_on_three_members() {
    use Target::*;
    use Trigger::*;
    let cases = [
        case("raftBeforeLeaderSend", Leader, Load),
        case("raftBeforeSave", Follower, Load),
        case("raftAfterSave", Leader, Load),
        case("raftBeforeFollowerSend", Follower, Load),
        case("raftBeforeAdvance", Any, Load),
        case("beforeApplyOneEntryNormal", Leader, Load),
        case("beforeApplyOneConfChange", Follower, ConfChange),
        case("walBeforeSync", Leader, Load),
        case("walAfterSync", Follower, Load),
        case("beforeCommit", Any, Load),
        case("afterCommit", Leader, Load),
        case("raftBeforeWALSaveSnaphot", Any, Load),
        case("raftAfterWALRelease", Leader, Load),
    ];
    let mut run = Run::start(
        "raft_loop_failpoints_on_three_members",
        3,
        &[
            "--snapshot-count=300",
            // Members that were down catch up from the log (sending snapshots is not built yet).
            "--experimental-snapshot-catchup-entries=1000000",
            "--strict-reconfig-check=false",
        ],
    )
    .await;
    for (k, c) in cases.into_iter().enumerate() {
        run.crash_at(c).await;
        if k % 3 == 2 {
            run.partition().await;
        }
    }
    run.finish().await;
}

/// Compaction, defragmentation and the commit points on a lone member, whose crash takes the whole
/// cluster down: everything acknowledged must come back from its own disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_failpoints_on_one_member() {
    use Target::*;
    use Trigger::*;
    let cases = [
        case("compactBeforeCommitScheduledCompact", Any, Compact),
        case("compactAfterCommitScheduledCompact", Any, Compact),
        case("compactBeforeCommitBatch", Any, Compact),
        case("compactAfterCommitBatch", Any, Compact),
        case("compactBeforeSetFinishedCompact", Any, Compact),
        case("compactAfterSetFinishedCompact", Any, Compact),
        case("defragBeforeCopy", Any, Defrag),
        case("defragBeforeRename", Any, Defrag),
        case("raftBeforeSave", Any, Load),
        case("raftAfterSave", Any, Load),
        case("walBeforeSync", Any, Load),
        case("beforeCommit", Any, Load),
        case("afterCommit", Any, Load),
        case("raftBeforeWALSaveSnaphot", Any, Load),
    ];
    let mut run = Run::start(
        "storage_failpoints_on_one_member",
        1,
        &["--snapshot-count=300"],
    )
    .await;
    for c in cases {
        run.crash_at(c).await;
    }
    run.finish().await;
}

/// A full disk (ENOSPC injected at the WAL's sync and at the backend's commit) stops the member
/// with an error that says so, on a follower, on a leader and on a lone member; nothing
/// acknowledged is lost and the member rejoins with the same data as the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_stops_the_member_and_loses_nothing() {
    for members in [3, 1] {
        let mut run = Run::start(
            &format!("full_disk_stops_the_member_and_loses_nothing ({members} members)"),
            members,
            &[],
        )
        .await;
        for (point, target) in [
            ("walBeforeSync", Target::Follower),
            ("beforeCommit", Target::Follower),
            ("beforeCommit", Target::Leader),
        ] {
            if members == 1 && target == Target::Follower {
                continue;
            }
            let i = run.pick(target).await;
            // Full for a moment: one write fails, later ones would succeed again.
            let spec = format!("{point}={}*off->1*return(ENOSPC)", 20 + run.rng.u64(..80));
            run.crash(i, point, &spec, Trigger::Load, Ending::FullDisk)
                .await;
        }
        if members == 1 {
            let spec = format!(
                "walBeforeSync={}*off->1*return(ENOSPC)",
                20 + run.rng.u64(..80)
            );
            run.crash(0, "walBeforeSync", &spec, Trigger::Load, Ending::FullDisk)
                .await;
        }
        run.finish().await;
    }
}

/// Backpressure, as etcd's: while the leader's applying is held (`beforeApplyOneEntryNormal=pause`)
/// its Raft loop goes on (it keeps its followers, which keep applying what it commits), and once its
/// committed index is more than 5000 past its applied one it refuses writes at once with etcd's
/// `etcdserver: too many requests` (ResourceExhausted). Released, it catches up and takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_applying_far_behind_refuses_writes_and_keeps_its_followers() {
    const WAVES: usize = 30;
    let c = Cluster::start_with(Kind::Hearth, 3, &[]).await;
    let l = c.wait_leader(&[]).await;
    let leader = c.member(l);
    let follower = c.member((l + 1) % 3);
    let mut kv = leader.client().await;
    kv.put("bp/before", "v", None).await.unwrap();
    std::fs::write(leader.failpoint_file(), "beforeApplyOneEntryNormal=pause").unwrap();
    poll::eventually_blocking("the leader's failpoint file armed", CRASH_DEADLINE, || {
        leader.log().contains("failpoints re-armed from the file")
    });
    // Writes that commit but are not applied on the leader: their clients time out there. In waves
    // (each of 10 connections with 100 requests in flight, HTTP/2's usual limit) until the leader's
    // backlog passes the gap, however many a loaded machine gets through per wave.
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    let mut sent = 0;
    for _wave in 0..WAVES {
        let pending = leader
            .metric("etcd_server_proposals_pending")
            .unwrap_or(0.0);
        if pending > 5000.0 {
            break;
        }
        let mut flood = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let kv = leader.client().await;
            for _ in 0..100 {
                let mut kv = kv.clone();
                let key = format!("bp/{sent:06}");
                sent += 1;
                flood.spawn(async move { kv.put(key, "v", None).await });
            }
        }
        // Each ends: timed out waiting for the leader's apply, or refused past the gap.
        while let Some(r) = flood.join_next().await {
            let what = match r.unwrap() {
                Ok(_) => "applied".to_string(),
                Err(e) => hearth_tests::cluster::status_of(e).1,
            };
            *outcomes.entry(what).or_default() += 1;
        }
    }
    // What the leader took in commits (some may still be on their way when their clients gave up).
    poll::eventually(
        "the leader's commit index more than 5000 past its applied one",
        CRASH_DEADLINE,
        async || match leader.metric("etcd_server_proposals_pending") {
            Some(p) if p > 5000.0 => Ok(p),
            other => Err((other, &outcomes)),
        },
    )
    .await;
    for what in outcomes.keys() {
        assert!(
            what.starts_with("etcdserver: request timed out")
                || what == "etcdserver: too many requests"
                || what == "Timeout expired",
            "{outcomes:?}"
        );
    }
    // The followers applied everything it committed: its Raft loop went on while applying was held.
    let committed = leader
        .metric("etcd_server_proposals_committed_total")
        .unwrap();
    poll::eventually(
        "the followers applied what the held member committed",
        CRASH_DEADLINE,
        async || {
            let applied = follower.metric("etcd_server_proposals_applied_total");
            match applied {
                Some(a) if a >= committed => Ok(()),
                other => Err((other, committed)),
            }
        },
    )
    .await;
    // Every member still agrees on one leader (a leader stuck in its apply would have been replaced
    // while still claiming to lead).
    c.wait_leader(&[]).await;
    let refused = kv.put("bp/refused", "v", None).await.unwrap_err();
    assert_eq!(
        hearth_tests::cluster::status_of(refused),
        (
            tonic::Code::ResourceExhausted,
            "etcdserver: too many requests".to_string()
        )
    );
    std::fs::write(leader.failpoint_file(), "beforeApplyOneEntryNormal=off").unwrap();
    poll::eventually(
        "the leader takes writes again",
        CRASH_DEADLINE,
        async || kv.put("bp/after", "v", None).await,
    )
    .await;
    c.assert_hashkv_equal().await;
}

/// A leader whose Raft loop is stuck (on its disk; here held at `raftBeforeSave`) still believes
/// it leads, while the others elect a leader that expires its leases. Before it renews a lease it
/// confirms its leadership with a read-index round, as etcd 3.5 does (`ensureLeadership`), so the
/// holder of a lock learns that the stuck member no longer keeps its lease alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_leader_keeps_no_lease_alive() {
    let c = Cluster::start_with(Kind::Hearth, 3, &[]).await;
    let l = c.wait_leader(&[]).await;
    let leader = c.member(l);
    let mut cl = leader.client().await;
    let id = cl.lease_grant(60, None).await.unwrap().id();
    let (mut keeper, mut answers) = cl.lease_keep_alive(id).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let first = answers.message().await.unwrap().expect("an answer");
    assert_eq!(first.ttl(), 60);

    std::fs::write(leader.failpoint_file(), "raftBeforeSave=pause").unwrap();
    poll::eventually(
        "the leader's failpoint file armed",
        CRASH_DEADLINE,
        async || {
            leader
                .log()
                .contains(r#""failpoints":"[\"raftBeforeSave\"]""#)
        },
    )
    .await;
    // A write brings its Raft loop to the point, where it stays.
    let mut w = cl.clone();
    let held = tokio::spawn(async move { w.put("stuck", "v", None).await });
    poll::eventually("the leader's Raft loop held", CRASH_DEADLINE, async || {
        leader.log().contains("raftBeforeSave pauses")
    })
    .await;
    keeper.keep_alive().await.unwrap();
    let answer = tokio::time::timeout(CRASH_DEADLINE, answers.message())
        .await
        .expect("the keep-alive is answered");
    let err = answer.expect_err("a stuck leader renews no lease");
    let etcd_client::Error::GRpcStatus(status) = err else {
        panic!("not a gRPC status: {err:?}");
    };
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unknown, "not a primary lessor")
    );

    std::fs::write(leader.failpoint_file(), "raftBeforeSave=off").unwrap();
    let _ = held.await;
    c.wait_leader(&[]).await;
}
