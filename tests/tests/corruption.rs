//! etcd's corruption checks on a 3-member cluster whose follower had one value changed in its
//! backend while it was stopped (`hearth_tests::corrupt::flip_value`):
//!
//! * with the initial check (`--feature-gates=InitialCorruptCheck=true`) the member refuses to start,
//!   saying it found data inconsistency with its peers;
//! * with the periodic check (`--corrupt-check-time`) it starts, and the leader raises the `CORRUPT`
//!   alarm through Raft: every member then refuses writes with `etcdserver: corrupt cluster` (reads
//!   go on, as in etcd 3.5), and the leader's log names the member whose hash differs;
//! * with the compaction hash check (`--feature-gates=CompactHashCheck=true`) the leader finds the
//!   member's hash of a compaction differs, with the same outcome.
//!
//! Hearth only: the damage is done with Hearth's backend format.

use std::time::Duration;

use hearth_tests::ctl::Ctl;
use hearth_tests::{corrupt, poll, Cluster, Kind};
use serde_json::Value;

/// The checks run every second here; raising the alarm takes a round of Raft on top.
const ALARM_DEADLINE: Duration = Duration::from_secs(60);

fn skip() -> bool {
    if std::env::var("HEARTH_TEST_TARGET").as_deref() == Ok("etcd") {
        println!("skipped: damages Hearth's backend format");
        return true;
    }
    false
}

/// The JSON lines of a server log whose `msg` is `msg`.
fn log_lines(log: &str, msg: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["msg"] == msg)
        .collect()
}

/// A cluster with some data, all members at the same revision; returns it with a follower.
async fn cluster_with_data(flags: &[&str]) -> (Cluster, usize) {
    let c = Cluster::start_with(Kind::Hearth, 3, flags).await;
    let mut cl = c.member(0).client().await;
    for i in 0..10 {
        cl.put(format!("key{i}"), format!("value-{i}"), None)
            .await
            .expect("put");
    }
    c.assert_hashkv_equal().await;
    let leader = c.wait_leader(&[]).await;
    (c, (leader + 1) % 3)
}

/// Stops member `i`, changes the value of `key3` in its backend, and starts it again without
/// waiting for it.
fn damage(c: &mut Cluster, i: usize) {
    let m = c.member_mut(i);
    m.stop();
    corrupt::flip_value(&m.data_dir(), b"key3");
    m.respawn();
}

fn member_id_hex(id: u64) -> String {
    format!("{id:x}")
}

/// Waits until the cluster has the CORRUPT alarm (asked of member `via`).
async fn wait_corrupt_alarm(c: &Cluster, via: usize) {
    poll::eventually("the CORRUPT alarm", ALARM_DEADLINE, async || {
        let out = Ctl::from_output(&c.member(via).etcdctl(&["alarm", "list"]));
        if out.stdout.contains("alarm:CORRUPT") {
            Ok(out.stdout)
        } else {
            Err(format!("alarm list: {out:?}"))
        }
    })
    .await;
}

/// With CORRUPT raised, every member refuses writes with etcd's error, and still serves reads.
fn assert_writes_refused(c: &Cluster) {
    for i in 0..3 {
        let put = Ctl::from_output(&c.member(i).etcdctl(&["put", "after", "x"]));
        assert!(!put.ok(), "member {i}: {put:?}");
        assert_eq!(
            put.errors,
            ["Error: etcdserver: corrupt cluster"],
            "member {i}: {put:?}"
        );
        let get = Ctl::from_output(&c.member(i).etcdctl(&["get", "key0", "--print-value-only"]));
        assert!(get.ok(), "member {i}: {get:?}");
        assert_eq!(get.stdout.trim(), "value-0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_check_refuses_to_start_a_member_with_other_data() {
    if skip() {
        return;
    }
    let (mut c, f) = cluster_with_data(&["--feature-gates=InitialCorruptCheck=true"]).await;
    let id = c.member_id(f).await;
    // A healthy member restarts fine with the check on.
    let other = (f + 1) % 3;
    c.member_mut(other).restart().await;
    assert!(!log_lines(
        &c.member(other).log(),
        "initial corruption checking passed; no corruption"
    )
    .is_empty());

    damage(&mut c, f);
    let status = c
        .member_mut(f)
        .wait_exit(ALARM_DEADLINE)
        .await
        .expect("the damaged member exits");
    assert!(!status.success(), "{status}");
    let log = c.member(f).log();
    let found = log_lines(&log, "found different hash values from remote peer");
    assert!(!found.is_empty(), "{}", c.member(f).log_tail(30));
    assert!(found
        .iter()
        .all(|l| l["local-member-id"] == member_id_hex(id).as_str()));
    assert!(
        log.contains(&format!(
            "{} found data inconsistency with peers",
            member_id_hex(id)
        )),
        "{}",
        c.member(f).log_tail(30)
    );
    // Nothing was raised: the others go on.
    let mut cl = c.member(other).client().await;
    cl.put("still", "fine", None).await.expect("put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_check_raises_corrupt_and_the_cluster_refuses_writes() {
    if skip() {
        return;
    }
    let (mut c, f) = cluster_with_data(&["--corrupt-check-time=1s"]).await;
    let id = c.member_id(f).await;
    damage(&mut c, f);
    c.member_mut(f).wait_ready().await;
    wait_corrupt_alarm(&c, f).await;
    assert_writes_refused(&c);

    // The leader's log names the member whose hash differs.
    let named = (0..3).filter(|&i| i != f).any(|i| {
        log_lines(
            &c.member(i).log(),
            "same compact revision then hashes must match",
        )
        .iter()
        .any(|l| l["follower-peer-id"] == member_id_hex(id).as_str())
    });
    assert!(named, "no leader log names member {id:x}");
    let alarms = Ctl::from_output(&c.member(0).etcdctl(&["alarm", "list"]));
    // Raised for member 0, as etcd 3.5 does (etcdctl prints no zero member id).
    assert_eq!(alarms.stdout.trim(), "alarm:CORRUPT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_hash_check_raises_corrupt() {
    if skip() {
        return;
    }
    let (mut c, f) = cluster_with_data(&[
        "--feature-gates=CompactHashCheck=true",
        "--compact-hash-check-time=1s",
    ])
    .await;
    let id = c.member_id(f).await;
    damage(&mut c, f);
    c.member_mut(f).wait_ready().await;
    // Every member hashes what the compaction goes through; the damaged one differs.
    let mut cl = c.member(f).client().await;
    let rev = cl
        .status()
        .await
        .expect("status")
        .header()
        .expect("header")
        .revision();
    cl.compact(rev, None).await.expect("compact");
    wait_corrupt_alarm(&c, f).await;
    assert_writes_refused(&c);
    let named = (0..3).filter(|&i| i != f).any(|i| {
        log_lines(&c.member(i).log(), "failed compaction hash check")
            .iter()
            .any(|l| l["follower-peer-id"] == member_id_hex(id).as_str())
    });
    assert!(named, "no leader log names member {id:x}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_pass_on_a_healthy_cluster() {
    if skip() {
        return;
    }
    let (mut c, f) = cluster_with_data(&[
        "--corrupt-check-time=1s",
        "--feature-gates=InitialCorruptCheck=true,CompactHashCheck=true",
        "--compact-hash-check-time=1s",
    ])
    .await;
    c.member_mut(f).restart().await;
    let mut cl = c.member(0).client().await;
    let rev = cl
        .put("k", "v", None)
        .await
        .expect("put")
        .header()
        .expect("h")
        .revision();
    cl.compact(rev, None).await.expect("compact");
    // Both checks complete a round on the leader without finding anything.
    for msg in [
        "finished peer corruption check",
        "successfully checked hash on whole cluster",
    ] {
        poll::eventually(msg, ALARM_DEADLINE, async || {
            (0..3).any(|i| !log_lines(&c.member(i).log(), msg).is_empty())
        })
        .await;
    }
    let alarms = Ctl::from_output(&c.member(0).etcdctl(&["alarm", "list"]));
    assert_eq!(alarms.stdout.trim(), "", "{alarms:?}");
    cl.put("k", "v2", None).await.expect("put");
    c.assert_hashkv_equal().await;
}
