//! Leases expiring on their own, and across restarts of the member.
//!
//! - When a lease expires, the leader revokes it through Raft: every attached key disappears in
//!   one revision (the header revision moves by exactly one), and a watcher sees all the
//!   deletes in that one revision.
//! - Leases survive a restart (SIGTERM or SIGKILL) with their keys, and the restart extends
//!   them to a full TTL, so none expires early because of it; they still expire afterwards.
//! - The lease metrics etcd exports are on `/metrics`.

use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use hearth_tests::leases::keys;
use hearth_tests::poll::{self, Poll};
use hearth_tests::server::metric_value as metric;
use hearth_tests::{Kind, Server};

/// Generous: a 2 s lease is revoked well within it.
const DEADLINE: Duration = Duration::from_secs(30);

fn rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.expect("response has a header").revision()
}

async fn remaining(c: &mut Client, id: i64) -> i64 {
    c.lease_time_to_live(id, None).await.unwrap().ttl()
}

/// Polls until lease `id` is gone (TTL -1).
async fn wait_revoked(c: &mut Client, id: i64) {
    poll::eventually(
        format!("lease {id:x} to expire"),
        DEADLINE,
        async || match remaining(c, id).await {
            -1 => Ok(()),
            ttl => Err(format!("{ttl} s left")),
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_keys_go_in_one_revision() {
    let s = Server::start(Kind::Hearth).await;
    let mut c = s.client().await;
    let mut w = c
        .watch("exp/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();

    let l = c.lease_grant(2, None).await.unwrap().id();
    for k in ["exp/a", "exp/b", "exp/c"] {
        c.put(k, "v", Some(PutOptions::new().with_lease(l)))
            .await
            .unwrap();
    }
    let last = c.put("exp/keep", "v", None).await.unwrap();
    let before = rev(last.header());

    wait_revoked(&mut c, l).await;
    let r = c
        .get("exp/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(rev(r.header()), before + 1, "one revision for all the keys");
    assert_eq!(keys(&mut c, "exp/").await, ["exp/keep"]);
    let then = c
        .get(
            "exp/",
            Some(GetOptions::new().with_prefix().with_revision(before)),
        )
        .await
        .unwrap();
    assert_eq!(then.kvs().len(), 4);

    // A keep-alive of the expired lease finds nothing.
    assert!(c.lease_keep_alive(l).await.is_err());

    let mut deletes = Vec::new();
    let poll = Poll::new("the watcher to see the deletes", DEADLINE);
    while deletes.len() < 3 {
        assert!(!poll.expired(), "the watcher saw {deletes:?}");
        let m = tokio::time::timeout(poll.left(), w.message())
            .await
            .expect("watch answered")
            .unwrap()
            .expect("watch open");
        for e in m.events() {
            if e.event_type() == EventType::Delete {
                let kv = e.kv().unwrap();
                deletes.push((
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.mod_revision(),
                    rev(m.header()),
                ));
            }
        }
    }
    assert_eq!(
        deletes,
        ["exp/a", "exp/b", "exp/c"]
            .map(|k| (k.to_string(), before + 1, before + 1))
            .to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_restarts_and_are_extended_by_them() {
    let mut s = Server::start(Kind::Hearth).await;
    let mut c = s.client().await;
    let term = c.lease_grant(10, None).await.unwrap().id();
    let kill = c.lease_grant(10, None).await.unwrap().id();
    let revoked = c.lease_grant(600, None).await.unwrap().id();
    c.put("t", "v", Some(PutOptions::new().with_lease(term)))
        .await
        .unwrap();
    c.put("k", "v", Some(PutOptions::new().with_lease(kill)))
        .await
        .unwrap();
    c.lease_revoke(revoked).await.unwrap();

    for crash in [false, true] {
        // Let half the TTL go by, so a lease that was not extended would show it.
        let mut c = s.client().await;
        poll::eventually(
            "the lease's TTL to go down to 5 s",
            DEADLINE,
            async || match remaining(&mut c, term).await {
                ttl if ttl <= 5 => Ok(()),
                ttl => Err(format!("{ttl} s left")),
            },
        )
        .await;
        if crash {
            s.kill9();
        } else {
            s.stop();
        }
        s.restart().await;
        let mut c = s.client().await;
        let ids: Vec<i64> = c
            .leases()
            .await
            .unwrap()
            .leases()
            .iter()
            .map(|l| l.id())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        let mut want = vec![term, kill];
        want.sort_unstable();
        assert_eq!(sorted, want, "the revoked lease stays revoked");
        for (id, key) in [(term, "t"), (kill, "k")] {
            let t = c.lease_time_to_live(id, None).await.unwrap();
            assert_eq!(t.granted_ttl(), 10);
            // A full TTL again from the restart (plus the election timeout): 10 s. Without
            // the extension it would be 5 s at most; 3 s of slack for a slow machine.
            assert!(
                t.ttl() >= 7,
                "lease {id:x} after restart (crash: {crash}): {} s left",
                t.ttl()
            );
            assert_eq!(keys(&mut c, key).await, [key]);
        }
        let t = c
            .lease_time_to_live(
                term,
                Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
            )
            .await
            .unwrap();
        assert_eq!(t.keys(), [b"t".to_vec()], "attachments are rebuilt");
    }

    // And they still expire.
    let mut c = s.client().await;
    wait_revoked(&mut c, term).await;
    wait_revoked(&mut c, kill).await;
    assert!(keys(&mut c, "").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_metrics_are_etcds() {
    let s = Server::start(Kind::Hearth).await;
    let mut c = s.client().await;
    let short = c.lease_grant(2, None).await.unwrap().id();
    let l = c.lease_grant(60, None).await.unwrap().id();
    let (mut keeper, mut stream) = c.lease_keep_alive(l).await.unwrap();
    keeper.keep_alive().await.unwrap();
    stream.message().await.unwrap();
    c.lease_revoke(l).await.unwrap();
    wait_revoked(&mut c, short).await;

    // The expiry driver counts the lease once its revoke proposal returned, which may be a moment
    // after the lease is gone.
    s.wait_metrics(&[("etcd_debugging_server_lease_expired_total", 1.0)])
        .await;
    let page = s.metrics();
    assert_eq!(
        metric(&page, "etcd_debugging_lease_granted_total"),
        Some(2.0)
    );
    assert_eq!(
        metric(&page, "etcd_debugging_lease_revoked_total"),
        Some(2.0)
    );
    assert!(metric(&page, "etcd_debugging_lease_renewed_total").unwrap() >= 1.0);
    assert_eq!(
        metric(&page, "etcd_debugging_server_lease_expired_total"),
        Some(1.0)
    );
    assert_eq!(
        metric(&page, "etcd_debugging_lease_ttl_total_count"),
        Some(2.0)
    );
    assert_eq!(
        metric(&page, "etcd_debugging_lease_ttl_total_sum"),
        Some(62.0)
    );
    assert_eq!(
        metric(&page, "etcd_debugging_lease_ttl_total_bucket{le=\"2\"}"),
        Some(1.0)
    );
}
