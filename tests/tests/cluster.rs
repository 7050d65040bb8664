//! Multi-member clusters: replication, reads from any member, failover under load, catch-up by log,
//! a member cut off from its peers, a peer from another cluster. Every test ends by checking that
//! HashKV at the same revision is equal on all members.

use std::time::Duration;

use etcd_client::GetOptions;
use hearth_tests::ctl::Ctl;
use hearth_tests::load::{self, Load};
use hearth_tests::poll;
use hearth_tests::ports;
use hearth_tests::rng::Seed;
use hearth_tests::server::{MemberSpec, Probe};
use hearth_tests::{Cluster, Kind, Server};

fn ctl_ok(s: &Server, args: &[&str]) -> Ctl {
    let c = Ctl::from_output(&s.etcdctl(args));
    assert!(c.ok(), "etcdctl {args:?} on {}: {c:?}", s.endpoint());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_on_every_member() {
    let c = Cluster::start(3).await;
    for i in 0..3 {
        let mut cl = c.member(i).client().await;
        cl.put(format!("k{i}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    // Linearizable reads see every write at once, on every member; serializable reads see them
    // once the member has applied them.
    for i in 0..3 {
        let mut cl = c.member(i).client().await;
        let r = cl
            .get("k", Some(GetOptions::new().with_prefix()))
            .await
            .expect("get");
        assert_eq!(r.kvs().len(), 3, "linearizable read on member {i}");
    }
    for i in 0..3 {
        let mut cl = c.member(i).client().await;
        let what = format!("member {i} to apply the writes");
        poll::eventually(what, Duration::from_secs(10), async || {
            let r = cl
                .get(
                    "k",
                    Some(GetOptions::new().with_prefix().with_serializable()),
                )
                .await
                .expect("serializable get");
            r.kvs().len() == 3
        })
        .await;
    }

    // etcdctl, against a follower and the leader.
    let leader = c.wait_leader(&[]).await;
    let follower = (leader + 1) % 3;
    ctl_ok(c.member(follower), &["put", "via-follower", "f"]);
    ctl_ok(c.member(leader), &["put", "via-leader", "l"]);
    for i in 0..3 {
        let got = ctl_ok(
            c.member(i),
            &["get", "via-", "--prefix", "--print-value-only"],
        );
        assert_eq!(got.stdout, "f\nl\n", "member {i}");
        let got = ctl_ok(
            c.member(i),
            &["get", "via-follower", "--consistency=s", "-w", "json"],
        );
        assert_eq!(got.json()["count"], 1, "member {i}");
    }

    // Every member lists the same members, all started, and reports the same leader.
    let lists: Vec<String> = (0..3)
        .map(|i| ctl_ok(c.member(i), &["member", "list"]).stdout)
        .collect();
    assert!(lists.windows(2).all(|w| w[0] == w[1]), "{lists:#?}");
    assert_eq!(lists[0].lines().count(), 3);
    assert!(
        lists[0].lines().all(|l| l.contains(", started, m")),
        "{}",
        lists[0]
    );
    let mut leaders = Vec::new();
    for i in 0..3 {
        let mut cl = c.member(i).client().await;
        let s = cl.status().await.expect("status");
        assert!(!s.is_learner());
        assert!(s.errors().is_empty(), "{:?}", s.errors());
        assert!(s.raft_index() >= s.raft_applied_index());
        leaders.push(s.leader());
    }
    assert!(leaders.windows(2).all(|w| w[0] == w[1]) && leaders[0] != 0);
    c.assert_hashkv_equal().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill9_under_load_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_leader(&[]).await;
    let load = Load::start("load", c.endpoints(), 6);
    load.wait_more(200).await;
    c.member_mut(leader).kill9();
    let new_leader = c.wait_leader(&[leader]).await;
    assert_ne!(new_leader, leader);
    // The survivors keep taking writes.
    load.wait_more(200).await;
    let (acks, per_task) = load.stop().await;
    assert!(
        per_task.iter().filter(|&&n| n > 0).count() > 1,
        "the load was not concurrent: {per_task:?}"
    );

    c.member_mut(leader).restart().await;
    let rev = c.assert_hashkv_equal().await;
    for i in 0..3 {
        let (current, revs) = load::verify(&c.member(i).endpoint(), "load", &acks).await;
        assert_eq!(current, rev, "member {i}");
        // Every write is one revision: no revision may be missing or reordered.
        let expected: std::collections::BTreeSet<i64> = (2..=current).collect();
        assert_eq!(revs, expected, "member {i}: revisions are not continuous");
    }
    println!(
        "{} acknowledged puts across a leader failover; revision {rev}",
        acks.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_restarted_catches_up_by_log() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_leader(&[]).await;
    let follower = (leader + 1) % 3;
    c.member_mut(follower).kill9();
    let others: Vec<String> = (0..3)
        .filter(|&i| i != follower)
        .map(|i| c.member(i).endpoint())
        .collect();
    let load = Load::start("catchup", others, 4);
    load.wait_more(300).await;
    let (acks, _) = load.stop().await;

    // With data, the initial-cluster flags are ignored (as etcd ignores them).
    let id_before = c.member_id(leader).await;
    c.member_mut(follower)
        .set_initial_flags("existing", "some-other-token");
    c.member_mut(follower).respawn();
    c.member_mut(follower).wait_ready().await;
    assert_eq!(c.member_id(leader).await, id_before);
    c.assert_hashkv_equal().await;
    load::verify(&c.member(follower).endpoint(), "catchup", &acks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_cut_off_from_peers_serves_again_once_healed() {
    let c = Cluster::start(3).await;
    if c.kind() != Kind::Hearth {
        println!("skipped: the peer fault switch is Hearth's");
        return;
    }
    // Cut off the leader: it must step down (CheckQuorum) and the others elect a new one.
    let cut = c.wait_leader(&[]).await;
    c.member(cut).cut_off(true);
    let new_leader = c.wait_leader(&[cut]).await;
    assert_ne!(new_leader, cut);
    let mut isolated = c.member(cut).client().await;
    let s = c.wait_leader_lost(cut).await;
    assert_eq!(s.errors(), ["etcdserver: no leader"]);

    // A client that requires a leader is refused at once (etcd's `WithRequireLeader`).
    let mut raw = c.member(cut).raw().await;
    let refused = raw
        .range_requiring_leader(api::etcdserverpb::RangeRequest {
            key: b"any".to_vec(),
            serializable: true,
            ..Default::default()
        })
        .await
        .expect_err("no leader");
    assert_eq!(
        (refused.code, refused.message.as_str()),
        (tonic::Code::Unavailable, "etcdserver: no leader")
    );

    // The majority keeps taking writes meanwhile.
    let mut majority = c.member(new_leader).client().await;
    majority
        .put("during-cut", "1", None)
        .await
        .expect("put on the majority");

    // The cut-off member answers as etcd does: a write that never reaches a leader ends in the
    // proposal's deadline, a linearizable read times out; a serializable read is served.
    let mut writer = c.member(cut).client().await;
    let mut reader = c.member(cut).client().await;
    let (w, r) = tokio::join!(
        writer.put("on-cut-member", "x", None),
        reader.get("during-cut", None)
    );
    let status = |e: etcd_client::Error| match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not a gRPC status: {other}"),
    };
    assert_eq!(
        status(w.expect_err("a write on a cut-off member must fail")),
        (
            tonic::Code::Unknown,
            "context deadline exceeded".to_string()
        )
    );
    assert_eq!(
        status(r.expect_err("a linearizable read on a cut-off member must fail")),
        (
            tonic::Code::Unavailable,
            "etcdserver: request timed out".to_string()
        )
    );
    let stale = isolated
        .get("during-cut", Some(GetOptions::new().with_serializable()))
        .await
        .expect("serializable read on a cut-off member");
    assert!(
        stale.kvs().is_empty(),
        "it cannot have the majority's write"
    );

    c.member(cut).cut_off(false);
    let r = poll::eventually(
        "the healed member to serve a linearizable read",
        Duration::from_secs(30),
        async || isolated.get("during-cut", None).await,
    )
    .await;
    assert_eq!(r.kvs().len(), 1);
    isolated
        .put("after-heal", "1", None)
        .await
        .expect("write after heal");
    let r = isolated.get("on-cut-member", None).await.expect("get");
    assert!(r.kvs().is_empty(), "a write that failed must not appear");
    c.assert_hashkv_equal().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_from_another_cluster_is_rejected() {
    let c = Cluster::start(3).await;
    if c.kind() != Kind::Hearth {
        println!("skipped: checks Hearth's log");
        return;
    }
    // A new member that believes it bootstraps a cluster with our members, under another token:
    // another cluster id. Its streams must be refused, loudly, and nothing may change here.
    let (client, peer) = (ports::reserve(), ports::reserve());
    let mut initial: Vec<String> = (0..3)
        .map(|i| format!("{}={}", c.member(i).name(), c.member(i).peer_url()))
        .collect();
    initial.push(format!("stranger={}", peer.url()));
    let stranger = Server::spawn_member(
        Kind::Hearth,
        MemberSpec {
            name: "stranger".into(),
            client,
            peer,
            initial_cluster: initial.join(","),
            state: "new",
            token: "another-cluster".into(),
            args: vec![],
            fault_file: false,
            probe: Probe::Serializable,
        },
    );
    poll::eventually(
        "the stranger to be told about the cluster ID mismatch",
        Duration::from_secs(20),
        async || {
            if stranger.log().contains("cluster ID mismatch") {
                Ok(())
            } else {
                Err(format!("its log ends:\n{}", stranger.log_tail(30)))
            }
        },
    )
    .await;
    let seen = (0..3).any(|i| c.member(i).log().contains("request cluster ID mismatch"));
    assert!(seen, "no member logged the mismatch");
    let list = ctl_ok(c.member(0), &["member", "list"]).stdout;
    assert_eq!(list.lines().count(), 3, "{list}");
    let mut cl = c.member(0).client().await;
    cl.put("still", "fine", None).await.expect("put");
    c.assert_hashkv_equal().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_cluster_starts_and_stops_three_members() {
    if std::env::var("HEARTH_TEST_TARGET").as_deref() == Ok("etcd") {
        println!("skipped: scripts/cluster runs Hearth");
        return;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster");
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = ports::reserve_n(6);
    let client: Vec<String> = ports[..3].iter().map(ToString::to_string).collect();
    let peer: Vec<String> = ports[3..].iter().map(ToString::to_string).collect();
    let run = |arg: &str| {
        let out = std::process::Command::new(&script)
            .arg(arg)
            .env("HEARTH_BIN", hearth_tests::server::hearth_bin())
            .env("CLUSTER_DIR", dir.path())
            .env("CLUSTER_CLIENT_PORTS", client.join(" "))
            .env("CLUSTER_PEER_PORTS", peer.join(" "))
            .output()
            .expect("run scripts/cluster");
        assert!(
            out.status.success(),
            "scripts/cluster {arg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run("start");
    let endpoints = client
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let list = poll::eventually(
        "scripts/cluster to come up",
        Duration::from_secs(30),
        async || {
            let out = hearth_tests::server::etcdctl(&endpoints, &["member", "list"], "");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && text.matches(", started, infra").count() == 3 {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
    .await;
    for name in ["infra1", "infra2", "infra3"] {
        assert!(list.contains(name), "{list}");
    }
    let put = hearth_tests::server::etcdctl(&endpoints, &["put", "hello", "world"], "");
    assert!(put.status.success());
    let stopped = run("stop");
    assert_eq!(stopped.matches("stopped infra").count(), 3, "{stopped}");
    assert!(run("status").matches(" stopped").count() == 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_keep_serving_with_two_down() {
    let mut c = Cluster::start(5).await;
    let leader = c.wait_leader(&[]).await;
    let other = (leader + 2) % 5;
    let load = Load::start("five", c.endpoints(), 5);
    load.wait_more(100).await;
    c.member_mut(leader).kill9();
    c.member_mut(other).kill9();
    let new_leader = c.wait_leader(&[leader, other]).await;
    assert!(![leader, other].contains(&new_leader));
    load.wait_more(150).await;
    let (acks, _) = load.stop().await;
    for i in [leader, other] {
        c.member_mut(i).respawn();
    }
    for i in [leader, other] {
        c.member_mut(i).wait_ready().await;
    }
    c.assert_hashkv_equal().await;
    for i in 0..5 {
        load::verify(&c.member(i).endpoint(), "five", &acks).await;
    }
}

/// `etcdctl move-leader` hands leadership to a chosen follower, under load and without losing a
/// write; a member that is not the leader refuses with etcd's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_transfers_leadership_to_the_chosen_member() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader(&[]).await;
    let target = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let target_id = c.member_id(target).await;
    let load = Load::start("move", c.endpoints(), 4);
    load.wait_more(50).await;

    let endpoints = c.endpoints().join(",");
    let moved = ctl_ok(
        c.member(leader),
        &[
            "--endpoints",
            &endpoints,
            "move-leader",
            &format!("{target_id:x}"),
        ],
    );
    assert!(
        moved.stdout.contains(&format!("to {target_id:x}")),
        "{moved:?}"
    );
    assert_eq!(c.wait_leader(&[]).await, target);
    load.wait_more(50).await;
    let (acks, _) = load.stop().await;

    // Asked directly, a follower is not the one to move leadership.
    let mut cl = c.member(other).client().await;
    let err = cl
        .move_leader(target_id)
        .await
        .expect_err("move-leader through a follower");
    match err {
        etcd_client::Error::GRpcStatus(st) => assert_eq!(
            (st.code(), st.message()),
            (tonic::Code::FailedPrecondition, "etcdserver: not leader")
        ),
        e => panic!("move-leader through a follower: {e:?}"),
    }
    // Every member has applied every write (a serializable read shows only what it applied).
    c.assert_hashkv_equal().await;
    for i in 0..3 {
        load::verify(&c.member(i).endpoint(), "move", &acks).await;
    }
}

/// How long a member may keep a connection open after the garbage on it ended.
const HANG_UP: Duration = Duration::from_secs(30);

/// Garbage on a member's peer port (random bytes, a broken HTTP/1 request, an HTTP/2 preface followed
/// by junk frames, a connection dropped mid-frame) changes nothing: every member keeps running and
/// serving, and the data stays the same everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_peer_port_is_shrugged_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seed = Seed::from_env("garbage_on_the_peer_port_is_shrugged_off");
    let mut rng = seed.rng();
    let c = Cluster::start(3).await;
    let load = Load::start("hostile", c.endpoints(), 2);
    load.wait_more(20).await;
    let mut noise = |n: usize| -> Vec<u8> {
        let mut b = vec![0; n];
        rng.fill(&mut b);
        b
    };
    let mut inputs = vec![
        noise(4096),
        b"POST /hearthraftpb.Raft/Stream HTTP/1.1\r\nContent-Length: 99999\r\n\r\nxx".to_vec(),
    ];
    for _ in 0..8 {
        let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        h2.extend(noise(2048));
        inputs.push(h2);
    }
    for i in 0..3 {
        let addr = c
            .member(i)
            .peer_url()
            .trim_start_matches("http://")
            .to_string();
        for (k, bytes) in inputs.iter().enumerate() {
            if let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await {
                let _ = s.write_all(bytes).await;
                // Every other time hang up at once, mid-frame; else say the input is over and
                // wait for the member to hang up on it.
                if k.is_multiple_of(2) {
                    let _ = s.shutdown().await;
                    let mut rest = Vec::new();
                    let read = tokio::time::timeout(HANG_UP, s.read_to_end(&mut rest)).await;
                    assert!(
                        read.is_ok(),
                        "member {i} kept a connection of garbage open for {HANG_UP:?}"
                    );
                }
            }
        }
    }
    load.wait_more(20).await;
    let (acks, _) = load.stop().await;
    for i in 0..3 {
        assert!(
            c.member(i).is_running(),
            "member {i} died:\n{}",
            c.member(i).log_tail(30)
        );
    }
    // Every member has applied every write (a serializable read shows only what it applied).
    c.assert_hashkv_equal().await;
    for i in 0..3 {
        load::verify(&c.member(i).endpoint(), "hostile", &acks).await;
    }
}
