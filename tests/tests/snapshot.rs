//! Raft snapshots between members: a member behind the leader's compacted log catches up from a
//! copy of the leader's backend, keeps every acknowledged write, and restarts from what it
//! installed.
//!
//! etcd 3.4 has no `--experimental-snapshot-catchup-entries` (it keeps 5000 entries), so these
//! tests run against Hearth only.

use std::time::{Duration, Instant};

use hearth_tests::load::{self, Load};
use hearth_tests::{Cluster, Kind};

/// Compact often and keep few entries for slow followers, so falling behind is quick.
const COMPACT_OFTEN: [&str; 2] = [
    "--snapshot-count=40",
    "--experimental-snapshot-catchup-entries=5",
];
const DEADLINE: Duration = Duration::from_secs(60);

fn hearth_only() -> bool {
    if std::env::var("HEARTH_TEST_TARGET").as_deref() == Ok("etcd") {
        println!("skipped: etcd 3.4 lacks --experimental-snapshot-catchup-entries");
        return false;
    }
    true
}

/// How many snapshots member `i` has installed so far (its log says so each time).
fn installed(c: &Cluster, i: usize) -> usize {
    c.member(i).log().matches("applied snapshot").count()
}

async fn wait_installed(c: &Cluster, i: usize, more_than: usize) {
    let deadline = Instant::now() + DEADLINE;
    while installed(c, i) <= more_than {
        assert!(
            Instant::now() < deadline,
            "member {i} installed no snapshot:\n{}",
            c.member(i).log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn others(c: &Cluster, but: usize) -> Vec<String> {
    c.running()
        .filter(|&i| i != but)
        .map(|i| c.member(i).endpoint())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_catches_up_by_snapshot() {
    if !hearth_only() {
        return;
    }
    let mut c = Cluster::start_with(Kind::Hearth, 3, &COMPACT_OFTEN).await;
    let leader = c.wait_leader(&[]).await;
    let behind = (leader + 1) % 3;
    let behind_id = c.member_id(behind).await;
    c.member_mut(behind).kill9();
    let load = Load::start("far", others(&c, behind), 4);
    load.wait_more(200).await;
    let (acks, _) = load.stop().await;

    c.member_mut(behind).respawn();
    c.member_mut(behind).wait_ready().await;
    wait_installed(&c, behind, 0).await;
    c.assert_hashkv_equal().await;
    for i in 0..3 {
        load::verify(&c.member(i).endpoint(), "far", &acks).await;
    }
    // The leader counted it under etcd's metric names, the member on its side.
    let leader = c.wait_leader(&[]).await;
    let sent = c.member(leader).metrics();
    assert!(
        sent.contains(&format!(
            "etcd_network_snapshot_send_success{{To=\"{behind_id:x}\"}}"
        )),
        "{}",
        sent.lines()
            .filter(|l| l.contains("snapshot"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        c.member(behind)
            .metric_sum("etcd_network_snapshot_receive_success")
            >= 1.0
    );
    assert!(
        c.member(leader)
            .metric_sum("etcd_network_snapshot_send_total_duration_seconds_count")
            >= 1.0
    );

    // It serves and replicates as any member, and restarts from the snapshot.
    let mut cl = c.member(behind).client().await;
    cl.put("after", "snapshot", None).await.expect("put");
    c.member_mut(behind).restart().await;
    let r = cl_get(&c, behind, "after").await;
    assert_eq!(r.as_deref(), Some("snapshot"));
    c.assert_hashkv_equal().await;
}

async fn cl_get(c: &Cluster, i: usize, key: &str) -> Option<String> {
    let mut cl = c.member(i).client().await;
    let r = cl.get(key, None).await.expect("get");
    r.kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
}

/// Keep-alive, time-to-live and a lock sent to a follower reach the leader's lessor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_requests_through_a_follower_reach_the_leader() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader(&[]).await;
    let follower = (leader + 1) % 3;
    let mut cl = c.member(follower).client().await;
    let id = cl.lease_grant(60, None).await.expect("grant").id();

    let (mut keeper, mut stream) = cl.lease_keep_alive(id).await.expect("keep-alive");
    keeper.keep_alive().await.expect("send keep-alive");
    let r = stream
        .message()
        .await
        .expect("keep-alive stream")
        .expect("keep-alive answer");
    assert_eq!(r.id(), id);
    assert!(r.ttl() > 0, "lease {id} not kept alive: ttl {}", r.ttl());

    let t = cl.lease_time_to_live(id, None).await.expect("time-to-live");
    assert_eq!(t.granted_ttl(), 60);
    assert!(t.ttl() > 0, "lease {id} has ttl {}", t.ttl());

    let lock = cl
        .lock(
            "snap-lock",
            Some(etcd_client::LockOptions::new().with_lease(id)),
        )
        .await
        .expect("lock");
    assert!(lock.key().starts_with(b"snap-lock/"));
    cl.unlock(lock.key()).await.expect("unlock");
}
