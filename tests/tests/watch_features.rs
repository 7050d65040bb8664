//! Watch features that need a particular setup, side by side with etcd: periodic progress
//! notifications (`--experimental-watch-progress-notify-interval`) and fragmented responses
//! (one revision larger than the request size limit, split for a watcher that asked).

use std::time::Duration;

use etcd_client::proto::PbWatchResponse;
use etcd_client::{Compare, CompareOp, TxnOp, WatchOptions};
use hearth_tests::poll::Poll;
use hearth_tests::{Kind, Options, Server};

const DEADLINE: Duration = Duration::from_secs(60);

async fn next(stream: &mut etcd_client::WatchStream, what: &str) -> PbWatchResponse {
    match tokio::time::timeout(DEADLINE, stream.message()).await {
        Ok(Ok(Some(r))) => r.0,
        other => panic!("no {what}: {other:?}"),
    }
}

fn rev(r: &PbWatchResponse) -> i64 {
    r.header.as_ref().map_or(0, |h| h.revision)
}

/// One watcher with `progress_notify` on an idle key: the server must send it an empty
/// response with its own watch id and the current revision, by itself, and again later.
async fn progress_notifications(kind: Kind) -> Vec<(i64, i64, usize)> {
    let s = Server::start_with(
        kind,
        Options::with_args(&["--experimental-watch-progress-notify-interval", "300ms"]),
    )
    .await;
    let mut c = s.client().await;
    c.put("other", "1", None).await.unwrap();
    let opts = WatchOptions::new().with_progress_notify().with_watch_id(7);
    let mut w = c.watch_client().watch("idle", Some(opts)).await.unwrap();
    let created = next(&mut w, "created response").await;
    assert!(created.created);
    let mut out = Vec::new();
    let poll = Poll::new("two progress notifications", DEADLINE);
    while out.len() < 2 {
        let r = next(&mut w, "progress notification").await;
        out.push((r.watch_id, rev(&r), r.events.len()));
        assert!(!poll.expired(), "{kind:?}: {out:?}");
    }
    // An event in between: the next notification carries the new revision.
    c.put("idle", "x", None).await.unwrap();
    let r = loop {
        // A notification queued just before the put may come first.
        let r = next(&mut w, "event").await;
        if !r.events.is_empty() {
            break r;
        }
        assert_eq!((r.watch_id, rev(&r)), (7, 2), "{kind:?}");
    };
    out.push((r.watch_id, rev(&r), r.events.len()));
    let r = next(&mut w, "progress notification after the event").await;
    out.push((r.watch_id, rev(&r), r.events.len()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notifications_side_by_side() {
    let etcd = progress_notifications(Kind::Etcd).await;
    let hearth = progress_notifications(Kind::Hearth).await;
    assert_eq!(etcd, vec![(7, 2, 0), (7, 2, 0), (7, 3, 1), (7, 3, 0)]);
    assert_eq!(hearth, etcd);
}

/// A txn of three puts of 480 KB values, watched with `prev_kv`: its one revision is about
/// 2.9 MB with the previous values, over etcd's send limit (`--max-request-bytes` plus 512 KiB,
/// 2 MiB by default). The watcher that asked for fragments gets it in pieces, the other whole.
async fn fragments(kind: Kind) -> Vec<Vec<(bool, usize, i64)>> {
    let s = Server::start(kind).await;
    let mut c = s.client().await;
    let value = |i: u8| vec![b'a' + i; 480_000];
    for i in 0..3 {
        c.put(format!("f/{i}"), value(i), None).await.unwrap();
    }
    let mut out = Vec::new();
    let mut streams = Vec::new();
    for fragment in [true, false] {
        let mut opts = WatchOptions::new().with_prefix().with_prev_key();
        if fragment {
            opts = opts.with_fragment();
        }
        let mut w = c
            .watch_client()
            .max_decoding_message_size(16 << 20)
            .watch("f/", Some(opts))
            .await
            .unwrap();
        assert!(next(&mut w, "created response").await.created);
        streams.push(w);
    }
    let ops: Vec<TxnOp> = (0..3u8)
        .map(|i| TxnOp::put(format!("f/{i}"), value(i + 3), None))
        .collect();
    let txn = etcd_client::Txn::new()
        .when([Compare::version("f/0", CompareOp::Greater, 0)])
        .and_then(ops);
    let r = c.txn(txn).await.unwrap();
    assert!(r.succeeded());
    for w in &mut streams {
        let mut parts = Vec::new();
        loop {
            let r = next(w, "events").await;
            for e in &r.events {
                let prev = e.prev_kv.as_ref().map_or(0, |p| p.value[0]);
                assert_eq!(e.kv.as_ref().unwrap().value[0], prev + 3, "{kind:?}");
            }
            parts.push((r.fragment, r.events.len(), rev(&r)));
            if !r.fragment {
                break;
            }
        }
        out.push(parts);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_side_by_side() {
    let etcd = fragments(Kind::Etcd).await;
    let hearth = fragments(Kind::Hearth).await;
    assert_eq!(
        etcd,
        vec![vec![(true, 2, 5), (false, 1, 5)], vec![(false, 3, 5)]],
        "the reference"
    );
    assert_eq!(hearth, etcd);
}

/// A client that closes its side of the stream keeps its watchers (etcd ignores the end of
/// the request stream): events still arrive.
async fn half_closed(kind: Kind) -> Vec<(i64, Vec<u8>)> {
    let s = Server::start(kind).await;
    let mut c = s.client().await;
    let (sender, mut responses) = c.watch_client().watch("h", None).await.unwrap().split();
    let created = tokio::time::timeout(DEADLINE, responses.message())
        .await
        .expect("created response")
        .unwrap()
        .unwrap();
    assert!(created.created());
    drop(sender);
    c.put("h", "after close", None).await.unwrap();
    let r = tokio::time::timeout(DEADLINE, responses.message())
        .await
        .expect("event after the client closed its side")
        .unwrap()
        .unwrap();
    r.events()
        .iter()
        .map(|e| {
            let kv = e.kv().unwrap();
            (kv.mod_revision(), kv.value().to_vec())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_stream_keeps_watching_side_by_side() {
    let etcd = half_closed(Kind::Etcd).await;
    assert_eq!(etcd, vec![(2, b"after close".to_vec())]);
    assert_eq!(half_closed(Kind::Hearth).await, etcd);
}

/// A progress request while a watcher is still replaying history: the reply (watch id -1) comes
/// only after every event up to its revision (etcd 3.4 may answer before; see the Watch
/// service's module doc), so a client can trust it as "you have everything up to here".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reply_waits_for_catch_up() {
    let s = Server::start(Kind::Hearth).await;
    if s.kind() == Kind::Etcd {
        return; // HEARTH_TEST_TARGET=etcd: etcd 3.4 answers at once, by design.
    }
    let mut c = s.client().await;
    let mut last = 0;
    for i in 0..1500 {
        last = c
            .put(format!("p/{}", i % 10), "x", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
    }
    let opts = WatchOptions::new().with_prefix().with_start_revision(1);
    let mut w = c.watch_client().watch("p/", Some(opts)).await.unwrap();
    w.request_progress().await.unwrap();
    let mut seen = 0;
    loop {
        let r = next(&mut w, "progress reply").await;
        if r.created {
            continue;
        }
        if r.watch_id == -1 {
            assert_eq!(rev(&r), last);
            break;
        }
        for e in &r.events {
            seen += 1;
            assert_eq!(e.kv.as_ref().unwrap().mod_revision, seen + 1);
        }
    }
    assert_eq!(seen, last - 1, "the progress reply overtook events");
}

/// etcd 3.5.24 on refuses a watch from a negative revision as compacted, with the invalid watch id
/// and the current revision (etcd 3.4 takes it as "from the start"; Hearth reports 3.5.33). The
/// stream stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_start_revision_is_refused_as_compacted() {
    let s = Server::start(Kind::Hearth).await;
    let mut c = s.client().await;
    c.put("k", "v", None).await.unwrap();
    let opts = WatchOptions::new().with_start_revision(-1);
    let mut w = c.watch_client().watch("k", Some(opts)).await.unwrap();
    let r = next(&mut w, "refusal").await;
    assert_eq!(
        (
            r.watch_id,
            r.created,
            r.canceled,
            r.cancel_reason.as_str(),
            rev(&r)
        ),
        (
            -1,
            true,
            true,
            "etcdserver: mvcc: required revision has been compacted",
            2
        )
    );
    w.watch("k", Some(WatchOptions::new().with_watch_id(3)))
        .await
        .unwrap();
    let r = next(&mut w, "created").await;
    assert!(r.created && !r.canceled && r.watch_id == 3, "{r:?}");
}
