//! Watch under load, against the real server: one stream with 1000 watchers, and a second
//! stream (its own connection) with another 1000 watchers whose client stops reading. While
//! that stream is stalled:
//!
//! * every write is still acknowledged (each put is awaited, with the client's usual timeout);
//! * every one of the 1000 busy watchers sees every event of its range, in order, with no gaps
//!   and no duplicates;
//! * the stalled stream's watchers are reported slow (`etcd_debugging_mvcc_slow_watcher_total`),
//!   which shows the test really stalled it;
//! * the server's resident memory (VmRSS) stays under [`RSS_BOUND_MIB`], although the stalled
//!   stream is owed [`SLOW_WATCHERS`] x [`SLOW_PUTS`] = 2 million responses (with the
//!   server's per-stream queue made unbounded, this test measured over 300 MiB; bounded, about
//!   25 MiB).
//!
//! Finally the stalled client goes away, and its 1000 watchers must be gone from the server
//! (`etcd_debugging_mvcc_watcher_total`). There is no timing assertion: only deadlines for
//! things to happen at all.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::proto::PbWatchResponse;
use etcd_client::WatchOptions;
use hearth_tests::poll::Poll;
use hearth_tests::watch::Inbox;
use hearth_tests::{Kind, Options, Server};

const WATCHERS: usize = 1000;
const SMALL_KEYS: usize = 20;
const SMALL_PUTS: usize = 200;
/// Puts that only the stalled stream watches.
const SLOW_PUTS: usize = 2000;
const SLOW_WATCHERS: usize = 1000;
/// The bound on the server's resident memory (debug build) while the slow stream is stalled.
/// The server's own per-stream bounds (see `server::v3rpc::watch`) keep the stalled stream to
/// about a thousand queued responses plus one pending batch per watcher.
const RSS_BOUND_MIB: u64 = 100;
const DEADLINE: Duration = Duration::from_secs(180);

fn small_key(j: usize) -> String {
    format!("s/{:02}", j % SMALL_KEYS)
}

/// Watcher `i` of the busy stream: even ones watch the prefix, odd ones a single key.
fn busy_watch(i: usize) -> (String, WatchOptions) {
    let opts = WatchOptions::new().with_watch_id(i as i64 + 1);
    if i.is_multiple_of(2) {
        ("s/".to_string(), opts.with_prefix())
    } else {
        (small_key(i / 2), opts)
    }
}

/// What one watcher received: (mod_revision, key, value, prev value) per event.
type Seen = BTreeMap<i64, Vec<(i64, String, Vec<u8>, Option<Vec<u8>>)>>;

fn record(seen: &mut Seen, r: &PbWatchResponse) {
    let events = seen.entry(r.watch_id).or_default();
    for e in &r.events {
        let kv = e.kv.as_ref().expect("event without kv");
        events.push((
            kv.mod_revision,
            String::from_utf8_lossy(&kv.key).into_owned(),
            kv.value.clone(),
            e.prev_kv.as_ref().map(|p| p.value.clone()),
        ));
    }
}

async fn wait_created(rx: &mut Inbox, n: usize) {
    let poll = Poll::new("the watchers created", DEADLINE);
    let mut created = 0;
    while created < n {
        match rx.next(poll.left()).await {
            Ok(r) => {
                assert!(!r.canceled, "watcher refused: {r:?}");
                assert!(r.events.is_empty(), "events before the writes: {r:?}");
                created += usize::from(r.created);
            }
            other => panic!("only {created} of {n} watchers created: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_watchers_and_a_stalled_stream() {
    // A short Raft log, so the log of large puts does not dominate the memory measured.
    let server = Server::start_with(
        Kind::Hearth,
        Options::with_args(&["--snapshot-count", "20"]),
    )
    .await;

    // The busy stream: 1000 watchers on one stream, read all along.
    let busy_client = server.client().await;
    let (key, opts) = busy_watch(0);
    let (mut busy, busy_stream) = busy_client
        .watch_client()
        .watch(key, Some(opts))
        .await
        .expect("open busy stream")
        .split();
    let mut busy_rx = Inbox::spawn(busy_stream);
    for i in 1..WATCHERS {
        let (key, opts) = busy_watch(i);
        busy.watch(key, Some(opts)).await.expect("create watcher");
    }
    wait_created(&mut busy_rx, WATCHERS).await;

    // The stalled stream, on its own connection (an unread stream holds back its whole HTTP/2
    // connection's window): its watchers are created, then nobody reads it.
    let slow_client = server.client().await;
    let opts = || WatchOptions::new().with_prefix().with_prev_key();
    let (mut slow, slow_stream) = slow_client
        .watch_client()
        .watch("t/", Some(opts()))
        .await
        .expect("open slow stream")
        .split();
    for _ in 1..SLOW_WATCHERS {
        slow.watch("t/", Some(opts())).await.expect("create");
    }
    let mut slow_rx = Some(slow_stream);
    {
        // Read only the created responses, through a reader that is dropped afterwards so the
        // stream is not polled again until the end.
        let mut stream = slow_rx.take().unwrap();
        let mut created = 0;
        while created < SLOW_WATCHERS {
            let r = tokio::time::timeout(DEADLINE, stream.message())
                .await
                .expect("slow stream created responses")
                .expect("slow stream")
                .expect("slow stream open");
            created += usize::from(r.created());
        }
        slow_rx = Some(stream);
    }

    // Writes, each acknowledged, while the slow stream is stalled.
    let mut kv = server.client().await;
    let mut peak_rss_kib = 0;
    let mut small_revs = Vec::new();
    let every_small = SLOW_PUTS / SMALL_PUTS;
    for j in 0..SLOW_PUTS {
        kv.put(format!("t/{:03}", j % 100), format!("slow value {j}"), None)
            .await
            .expect("put acknowledged while a stream is stalled");
        if j.is_multiple_of(every_small) {
            let n = small_revs.len();
            let r = kv
                .put(small_key(n), format!("v{n}"), None)
                .await
                .expect("put acknowledged while a stream is stalled");
            small_revs.push((r.header().unwrap().revision(), n));
        }
        if j.is_multiple_of(50) {
            if let Some(rss) = server.rss_kib() {
                peak_rss_kib = peak_rss_kib.max(rss);
            }
        }
    }
    assert_eq!(small_revs.len(), SMALL_PUTS);

    // Every busy watcher gets every event of its range, in order, without gaps.
    let mut seen = Seen::new();
    let expected: BTreeMap<i64, Vec<(i64, String, Vec<u8>)>> = (0..WATCHERS)
        .map(|i| {
            let want = small_revs
                .iter()
                .filter(|(_, j)| i.is_multiple_of(2) || small_key(*j) == small_key(i / 2))
                .map(|(rev, j)| (*rev, small_key(*j), format!("v{j}").into_bytes()))
                .collect();
            (i as i64 + 1, want)
        })
        .collect();
    let total: usize = expected.values().map(Vec::len).sum();
    let mut got = 0;
    let poll = Poll::new("every event on the busy stream", DEADLINE);
    while got < total {
        match busy_rx.next(poll.left()).await {
            Ok(r) => {
                got += r.events.len();
                record(&mut seen, &r);
            }
            other => panic!("busy stream: {got} of {total} events, then {other:?}"),
        }
        if let Some(rss) = server.rss_kib() {
            peak_rss_kib = peak_rss_kib.max(rss);
        }
    }
    for (id, want) in &expected {
        let have: Vec<(i64, String, Vec<u8>)> = seen
            .get(id)
            .map(|v| {
                v.iter()
                    .map(|(r, k, v, _)| (*r, k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            have.len(),
            want.len(),
            "watcher {id}: {} events, expected {}",
            have.len(),
            want.len()
        );
        assert!(have == *want, "watcher {id}: events differ from the writes");
    }

    if let Some(rss) = server.rss_kib() {
        peak_rss_kib = peak_rss_kib.max(rss);
    }
    eprintln!(
        "watch_stress: peak VmRSS {} MiB (bound {RSS_BOUND_MIB} MiB), {} slow watchers",
        peak_rss_kib / 1024,
        server
            .metric("etcd_debugging_mvcc_slow_watcher_total")
            .unwrap_or(-1.0)
    );
    assert!(peak_rss_kib > 0, "could not read the server's VmRSS");
    assert!(
        peak_rss_kib / 1024 < RSS_BOUND_MIB,
        "server VmRSS reached {} MiB (bound {RSS_BOUND_MIB} MiB)",
        peak_rss_kib / 1024
    );

    // The slow stream really was stalled: its watchers are slow (victims or catching up).
    let slow_now = server
        .metric("etcd_debugging_mvcc_slow_watcher_total")
        .expect("slow watcher gauge");
    assert!(
        slow_now >= 1.0,
        "the unread stream never fell behind (slow watchers: {slow_now})"
    );
    // The stalled client goes away: its watchers must be removed from the server.
    drop(slow);
    drop(slow_rx);
    drop(slow_client);
    server
        .wait_metrics(&[
            ("etcd_debugging_mvcc_watcher_total", WATCHERS as f64),
            ("etcd_debugging_mvcc_watch_stream_total", 1.0),
        ])
        .await;
    drop(busy);
}
