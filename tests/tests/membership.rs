//! Membership changes: a learner added under write load catches up, is promoted, another member is
//! removed (and stops itself), and every member agrees on the member list; and etcd's errors for
//! the changes it refuses, side by side with etcd.

use std::time::Duration;

use hearth_tests::cluster::{status_of, MEMBER_ADD_PATIENCE};
use hearth_tests::ctl::Ctl;
use hearth_tests::load::{self, Load};
use hearth_tests::poll;
use hearth_tests::ports;
use hearth_tests::{Cluster, Kind, Server};

fn member_list(s: &Server) -> String {
    let c = Ctl::from_output(&s.etcdctl(&["member", "list"]));
    assert!(c.ok(), "member list on {}: {c:?}", s.endpoint());
    c.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_joins_under_load_is_promoted_and_a_member_is_removed() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_leader(&[]).await;
    let leaving = (leader + 1) % 3;
    let staying: Vec<usize> = (0..3).filter(|&i| i != leaving).collect();
    let load = Load::start(
        "membership",
        staying.iter().map(|&i| c.member(i).endpoint()).collect(),
        4,
    );
    load.wait_more(100).await;

    let (client, peer) = (ports::reserve(), ports::reserve());
    let url = peer.url();
    let id = c
        .member_add(leader, &url, true, MEMBER_ADD_PATIENCE)
        .await
        .expect("add a learner");
    // Not started yet, so far behind: etcd refuses to promote it, on the leader and elsewhere.
    for i in [leader, leaving] {
        let mut cl = c.member(i).client().await;
        assert_eq!(
            status_of(
                cl.member_promote(id)
                    .await
                    .expect_err("promote before catch-up")
            ),
            (
                tonic::Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader".into()
            )
        );
    }
    let ctl =
        Ctl::from_output(
            &c.member(leaving)
                .etcdctl(&["member", "promote", &format!("{id:x}")]),
        );
    assert_eq!(
        ctl.errors,
        ["Error: etcdserver: can only promote a learner member which is in sync with leader"]
    );
    // One learner at a time.
    assert_eq!(
        c.member_add(leader, "http://127.0.0.1:1", true, MEMBER_ADD_PATIENCE)
            .await,
        Err((
            tonic::Code::FailedPrecondition,
            "etcdserver: too many learner members in cluster".into()
        ))
    );
    // The leader has applied the add (it answered it); a follower may not have yet.
    let unstarted = member_list(c.member(leader));
    assert!(
        unstarted.contains(&format!("{id:x}, unstarted, , {url}, , true")),
        "{unstarted}"
    );

    let learner = c.join("m3", client, peer).await;
    {
        let mut cl = c.member(learner).client().await;
        let s = cl.status().await.expect("learner status");
        assert!(s.is_learner());
        assert_eq!(
            status_of(
                cl.get("k", None)
                    .await
                    .expect_err("linearizable read on a learner")
            ),
            (
                tonic::Code::Unavailable,
                "etcdserver: rpc not supported for learner".into()
            )
        );
        assert_eq!(
            status_of(
                cl.put("k", "v", None)
                    .await
                    .expect_err("write on a learner")
            )
            .1,
            "etcdserver: rpc not supported for learner"
        );
        cl.get(
            "k",
            Some(etcd_client::GetOptions::new().with_serializable()),
        )
        .await
        .expect("serializable read on a learner");
        // etcd 3.5 on: a learner serves a snapshot too.
        let mut snap = cl.snapshot().await.expect("a snapshot from a learner");
        let chunk = snap.message().await.expect("a snapshot chunk");
        assert!(chunk.is_some_and(|c| !c.blob().is_empty()));
        // etcd 3.5.19 on: a learner is live but not ready.
        let m = c.member(learner);
        assert_eq!(m.http_get("/livez").await, (200, "ok\n".into()));
        let (code, body) = m.http_get("/readyz/non_learner").await;
        assert_eq!(code, 503, "{body}");
        assert!(
            body.contains("[-]non_learner failed: not supported for learner"),
            "{body}"
        );
    }
    load.wait_more(100).await;

    // Once caught up it can be promoted, through a follower too (which forwards to the leader).
    let mut cl = c.member(leaving).client().await;
    let r = poll::eventually(
        "the learner in sync, and promoted",
        Duration::from_secs(30),
        async || match cl.member_promote(id).await {
            Ok(r) => Ok(r),
            Err(e) => {
                let st = status_of(e);
                assert!(st.1.contains("in sync with leader"), "promote: {st:?}");
                Err(st)
            }
        },
    )
    .await;
    let m = r
        .members()
        .iter()
        .find(|m| m.id() == id)
        .expect("promoted member");
    assert!(!m.is_learner());
    load.wait_more(100).await;

    // Removing a member makes it stop by itself (exit status 0, as etcd's).
    let leaving_id = c.member_id(leaving).await;
    let mut cl = c.member(leader).client().await;
    let r = cl.member_remove(leaving_id).await.expect("member remove");
    assert!(r.members().iter().all(|m| m.id() != leaving_id));
    let exit = c
        .member_mut(leaving)
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("a removed member stops");
    assert!(exit.success(), "removed member exited with {exit}");
    assert!(c.member(leaving).log().contains("permanently removed"));
    load.wait_more(100).await;
    let (acks, _) = load.stop().await;

    // Every member has applied everything (the removal too); then every member lists the same
    // members: the two that stayed and the promoted one, all started.
    c.assert_hashkv_equal().await;
    let lists: Vec<String> = c.running().map(|i| member_list(c.member(i))).collect();
    assert_eq!(lists.len(), 3);
    assert!(lists.windows(2).all(|w| w[0] == w[1]), "{lists:#?}");
    assert_eq!(lists[0].lines().count(), 3, "{}", lists[0]);
    assert!(lists[0]
        .lines()
        .all(|l| l.contains(", started, ") && l.ends_with(", false")));
    assert!(
        lists[0].contains(&format!("{id:x}, started, m3, {url}")),
        "{}",
        lists[0]
    );

    for i in c.running().collect::<Vec<_>>() {
        load::verify(&c.member(i).endpoint(), "membership", &acks).await;
    }
}

/// Runs `etcdctl ARGS` on both clusters and checks they answer alike (exit code and `Error:`
/// lines; stdout differs by ids and ports).
fn same_answer(etcd: &Server, hearth: &Server, args: &[&str]) -> Ctl {
    let e = Ctl::from_output(&etcd.etcdctl(args));
    let h = Ctl::from_output(&hearth.etcdctl(args));
    assert_eq!(
        (h.code, &h.errors),
        (e.code, &e.errors),
        "etcdctl {args:?}: hearth {h:?}, etcd {e:?}"
    );
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_membership_changes_match_etcd() {
    let (etcd, hearth) = tokio::join!(
        Cluster::start_with(Kind::Etcd, 3, &[]),
        Cluster::start_with(Kind::Hearth, 3, &[])
    );
    let (e, h) = (etcd.member(0), hearth.member(0));
    same_answer(e, h, &["member", "remove", "1234"]);
    same_answer(
        e,
        h,
        &["member", "update", "1234", "--peer-urls=http://127.0.0.1:1"],
    );
    let hearth_id = format!("{:x}", hearth.member_id(0).await);
    let etcd_id = format!("{:x}", etcd.member_id(0).await);
    for (c, id) in [(e, &etcd_id), (h, &hearth_id)] {
        let r = Ctl::from_output(&c.etcdctl(&["member", "promote", id]));
        assert_eq!(
            r.errors,
            ["Error: etcdserver: can only promote a learner member"]
        );
    }
    // A learner, then a second one.
    let ports = ports::reserve_n(2);
    let l1 = ports[0].url();
    let l2 = ports[1].url();
    let (ei, hi) = tokio::join!(
        etcd.member_add(0, &l1, true, MEMBER_ADD_PATIENCE),
        hearth.member_add(0, &l1, true, MEMBER_ADD_PATIENCE)
    );
    let (ei, hi) = (
        ei.expect("etcd: add learner"),
        hi.expect("hearth: add learner"),
    );
    // A peer URL another member has.
    let e_url = etcd.member(1).peer_url();
    let h_url = hearth.member(1).peer_url();
    let er = Ctl::from_output(&e.etcdctl(&["member", "add", "x", &format!("--peer-urls={e_url}")]));
    let hr = Ctl::from_output(&h.etcdctl(&["member", "add", "x", &format!("--peer-urls={h_url}")]));
    assert_eq!((hr.code, &hr.errors), (er.code, &er.errors));
    assert_eq!(hr.errors, ["Error: etcdserver: Peer URLs already exists"]);

    let (ee, he) = tokio::join!(
        etcd.member_add(0, &l2, true, MEMBER_ADD_PATIENCE),
        hearth.member_add(0, &l2, true, MEMBER_ADD_PATIENCE)
    );
    assert_eq!(he, ee);
    let (ee, he) = tokio::join!(
        etcd.member_add(0, &l2, false, MEMBER_ADD_PATIENCE),
        hearth.member_add(0, &l2, false, MEMBER_ADD_PATIENCE)
    );
    assert!(
        ee.is_ok() == he.is_ok(),
        "adding an unstarted voter: etcd {ee:?}, hearth {he:?}"
    );
    // Another voter, while one is unstarted (hence not connected).
    let l3 = "http://127.0.0.1:1";
    let (ee3, he3) = tokio::join!(
        etcd.member_add(0, l3, false, Duration::ZERO),
        hearth.member_add(0, l3, false, Duration::ZERO)
    );
    assert_eq!(he3, ee3);

    // The member lists agree, up to ids and ports.
    let shape = |s: &str, urls: &[(String, &str)]| -> Vec<String> {
        let mut lines: Vec<String> = s
            .lines()
            .map(|l| {
                let mut l = l
                    .split_once(", ")
                    .map(|(_, rest)| rest)
                    .unwrap_or(l)
                    .to_string();
                for (u, name) in urls {
                    l = l.replace(u, name);
                }
                l
            })
            .collect();
        lines.sort();
        lines
    };
    let urls = |c: &Cluster| -> Vec<(String, &'static str)> {
        let mut v: Vec<(String, &'static str)> = Vec::new();
        for (i, n) in ["P0", "P1", "P2"].iter().enumerate() {
            v.push((c.member(i).peer_url(), n));
            v.push((c.member(i).endpoint(), ["C0", "C1", "C2"][i]));
        }
        v
    };
    assert_eq!(
        shape(&member_list(h), &urls(&hearth)),
        shape(&member_list(e), &urls(&etcd))
    );

    // Removing the learner, then removing it again.
    for (c, id) in [(e, ei), (h, hi)] {
        let first = Ctl::from_output(&c.etcdctl(&["member", "remove", &format!("{id:x}")]));
        assert!(first.ok(), "{first:?}");
        let again = Ctl::from_output(&c.etcdctl(&["member", "remove", &format!("{id:x}")]));
        assert_eq!(again.errors, ["Error: etcdserver: member not found"]);
    }
}
