//! Raft snapshots between members: a member behind the leader's compacted log (restarted, or added
//! after the log was compacted) catches up from a copy of the leader's backend, keeps every
//! acknowledged write, and restarts from what it installed; a member killed at any point of an
//! install restarts and catches up; and a snapshot saved with `etcdctl snapshot save` and restored
//! with `hearthutl snapshot restore` starts a new cluster with all the data.
//!
//! etcd 3.4 has no `--experimental-snapshot-catchup-entries` (it keeps 5000 entries), so these
//! tests run against Hearth only.

use std::time::Duration;

use hearth_tests::load::{self, Load};
use hearth_tests::server::hearthutl_bin;
use hearth_tests::{poll, ports, Cluster, Kind};

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
    let what = format!("member {i} to install a snapshot");
    poll::eventually(what, DEADLINE, async || {
        if installed(c, i) > more_than {
            Ok(())
        } else {
            Err(format!("its log ends:\n{}", c.member(i).log_tail(40)))
        }
    })
    .await
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_added_after_compaction_joins_by_snapshot_and_is_promoted() {
    if !hearth_only() {
        return;
    }
    let mut c = Cluster::start_with(Kind::Hearth, 3, &COMPACT_OFTEN).await;
    let load = Load::start("join", c.endpoints(), 4);
    load.wait_more(200).await;
    let (acks, _) = load.stop().await;

    let leader = c.wait_leader(&[]).await;
    let (client, peer) = (ports::reserve(), ports::reserve());
    let url = peer.url();
    let id = c
        .member_add(leader, &url, true, DEADLINE)
        .await
        .expect("member add");
    let new = c.join("m3", client, peer).await;
    // The log it would need is gone: only a snapshot can bring it up to date.
    wait_installed(&c, new, 0).await;
    poll::eventually("the new member promoted", DEADLINE, async || {
        let leader = c.wait_leader(&[new]).await;
        let mut cl = c.member(leader).client().await;
        cl.member_promote(id).await
    })
    .await;
    // The promotion is the leader's answer; the new member acts on it once it has applied it.
    let mut cl = c.member(new).client().await;
    poll::eventually(
        "the new member to see itself promoted",
        DEADLINE,
        async || {
            let s = cl.status().await.expect("status of the new member");
            !s.is_learner()
        },
    )
    .await;
    cl.put("promoted", "yes", None)
        .await
        .expect("put through the new voter");
    c.assert_hashkv_equal().await;
    for i in 0..4 {
        load::verify(&c.member(i).endpoint(), "join", &acks).await;
    }
}

/// Every failpoint of an install (see `docs/failpoints.md`): the member aborts there, restarts
/// without it, catches up (by another snapshot where the first was not complete), and ends with the
/// leader's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_at_any_point_of_an_install_restarts_and_catches_up() {
    if !hearth_only() {
        return;
    }
    let mut c = Cluster::start_with(Kind::Hearth, 3, &COMPACT_OFTEN).await;
    let leader = c.wait_leader(&[]).await;
    let behind = (leader + 1) % 3;
    let mut all_acks = Vec::new();
    for (round, point) in [
        "applyBeforeOpenSnapshot",
        "installBeforeRename",
        "installAfterRename",
        "installAfterSyncDir",
        "installAfterSwap",
        "raftBeforeSaveSnap",
        "raftAfterSaveSnap",
        "raftBeforeApplySnap",
    ]
    .into_iter()
    .enumerate()
    {
        c.member_mut(behind).kill9();
        let load = Load::start(&format!("kill{round}"), others(&c, behind), 4);
        load.wait_more(120).await;
        let (acks, _) = load.stop().await;
        all_acks.push((format!("kill{round}"), acks));

        let abort_there = format!("{point}=abort");
        c.member_mut(behind)
            .set_env(&[("HEARTH_FAILPOINTS", abort_there.as_str())]);
        c.member_mut(behind).respawn();
        let status = c.member_mut(behind).wait_exit(DEADLINE).await;
        assert!(
            status.is_some_and(|s| !s.success())
                && c.member(behind)
                    .log()
                    .contains(&format!("failpoint {point}: aborting the process")),
            "member did not abort at {point}: {status:?}\n{}",
            c.member(behind).log_tail(30)
        );
        c.member_mut(behind).set_env(&[]);
        c.member_mut(behind).respawn();
        c.member_mut(behind).wait_ready().await;
        c.assert_hashkv_equal().await;
        for (prefix, acks) in &all_acks {
            load::verify(&c.member(behind).endpoint(), prefix, acks).await;
        }
    }
}

fn hearthutl(args: &[&str]) -> std::process::Output {
    std::process::Command::new(hearthutl_bin())
        .args(args)
        .output()
        .expect("run hearthutl")
}

/// `etcdctl snapshot save` from a member of a running cluster, `hearthutl snapshot restore` for
/// three new members, and a new cluster started from them has every key, under new ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_snapshot_restores_into_a_new_three_member_cluster() {
    let c = Cluster::start(3).await;
    let load = Load::start("saved", c.endpoints(), 4);
    load.wait_more(150).await;
    let (acks, _) = load.stop().await;
    let old_cluster = {
        let mut cl = c.member(0).client().await;
        cl.member_list()
            .await
            .expect("member list")
            .header()
            .expect("header")
            .cluster_id()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("saved.db");
    let leader = c.wait_leader(&[]).await;
    // The snapshot is of what the follower applied: every acknowledged write, once it caught up.
    c.assert_hashkv_equal().await;
    let follower = (leader + 1) % 3;
    let o = c
        .member(follower)
        .etcdctl(&["snapshot", "save", file.to_str().expect("utf-8 path")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    drop(c);

    let restored = Cluster::start_prepared(Kind::Hearth, 3, &[], |spec, data_dir| {
        let peer = spec.peer.url();
        let o = hearthutl(&[
            "snapshot",
            "restore",
            file.to_str().expect("utf-8 path"),
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
            "--name",
            &spec.name,
            "--initial-cluster",
            &spec.initial_cluster,
            "--initial-cluster-token",
            &spec.token,
            "--initial-advertise-peer-urls",
            &peer,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    })
    .await;
    for i in 0..3 {
        load::verify(&restored.member(i).endpoint(), "saved", &acks).await;
    }
    restored.assert_hashkv_equal().await;
    let mut cl = restored.member(0).client().await;
    let list = cl.member_list().await.expect("member list");
    assert_eq!(list.members().len(), 3);
    assert_ne!(list.header().expect("header").cluster_id(), old_cluster);
    cl.put("after-restore", "ok", None).await.expect("put");
}
