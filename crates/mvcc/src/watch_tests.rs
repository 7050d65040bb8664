//! Tests of the watchable store: delivery, catch-up, victims, create/write races, compaction.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::{Backend, BackendConfig};

use crate::*;

struct Fx {
    _dir: tempfile::TempDir,
    kv: Arc<KvStore>,
}

fn open() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(
        Backend::open(
            dir.path().join("db"),
            BackendConfig {
                batch_interval: Duration::from_secs(3600),
                batch_limit: usize::MAX,
                ..BackendConfig::default()
            },
        )
        .unwrap(),
    );
    let kv = Arc::new(KvStore::open(b).unwrap());
    Fx { _dir: dir, kv }
}

fn put(kv: &KvStore, k: &str, v: &str) -> i64 {
    let mut w = kv.write();
    w.put(k.as_bytes(), v.as_bytes(), 0);
    w.end(0, 0).unwrap();
    kv.rev()
}

fn stream(ws: &WatchableStore, cap: usize) -> (WatchStream, Receiver<WatchResponse>) {
    let (tx, rx) = sync_channel(cap);
    (ws.watch_stream(Arc::new(tx)), rx)
}

/// Creates a watcher; returns its id and the revision it was registered at.
fn watch(
    s: &WatchStream,
    id: WatchId,
    key: &str,
    end: Option<&str>,
    start: i64,
    filters: Vec<WatchFilter>,
) -> (WatchId, i64) {
    let mut at = None;
    let id = s
        .watch(
            id,
            key.into(),
            end.map(Into::into),
            start,
            filters,
            |id, rev| at = Some((id, rev)),
        )
        .unwrap();
    let (cid, rev) = at.expect("on_created was called");
    assert_eq!(cid, id);
    (id, rev)
}

fn rev_of(e: &Event) -> i64 {
    e.kv.as_ref().unwrap().mod_revision
}

fn key_of(e: &Event) -> String {
    String::from_utf8(e.kv.as_ref().unwrap().key.clone()).unwrap()
}

/// The responses of one watcher as (header revision, [(type, key, mod revision)]).
type Seen = Vec<(i64, Vec<(i32, String, i64)>)>;

fn of(resps: &[WatchResponse], id: WatchId) -> Seen {
    resps
        .iter()
        .filter(|r| r.watch_id == id)
        .map(|r| {
            (
                r.revision,
                r.events
                    .iter()
                    .map(|e| (e.r#type, key_of(e), rev_of(e)))
                    .collect(),
            )
        })
        .collect()
}

const PUT: i32 = EventType::Put as i32;
const DEL: i32 = EventType::Delete as i32;

fn ev(t: i32, k: &str, r: i64) -> (i32, String, i64) {
    (t, k.to_string(), r)
}

#[test]
fn synced_watchers_get_each_revision_once_in_order() {
    let fx = open();
    let ws = WatchableStore::new(fx.kv.clone(), WatchConfig::default());
    assert_eq!(put(&fx.kv, "a", "0"), 2);
    let (s, rx) = stream(&ws, 100);
    let (w_key, at) = watch(&s, AUTO_WATCH_ID, "a", None, 0, vec![]);
    assert_eq!((w_key, at), (0, 2));
    let (w_range, _) = watch(&s, AUTO_WATCH_ID, "a", Some("b"), 0, vec![]);
    let (w_from, _) = watch(&s, AUTO_WATCH_ID, "b", Some(""), 0, vec![]);
    let (w_noput, _) = watch(&s, 7, "a", None, 0, vec![WatchFilter::NoPut]);
    let (w_nodel, _) = watch(&s, 8, "a", Some("b"), 0, vec![WatchFilter::NoDelete]);
    assert_eq!((w_range, w_from, w_noput, w_nodel), (1, 2, 7, 8));
    assert_eq!(ws.counts().synced, 5);

    put(&fx.kv, "a", "1"); // 3
    put(&fx.kv, "b", "1"); // 4
    let mut w = fx.kv.write();
    w.put(b"a", b"2", 0);
    w.put(b"ab", b"2", 0);
    w.end(0, 0).unwrap(); // 5
    let mut w = fx.kv.write();
    assert_eq!(w.delete_range(b"a", None).0, 1);
    w.end(0, 0).unwrap(); // 6
    let mut w = fx.kv.write();
    w.delete_range(b"nothing", None);
    w.end(0, 0).unwrap(); // no revision, no event

    let got: Vec<WatchResponse> = rx.try_iter().collect();
    assert_eq!(
        of(&got, w_key),
        vec![
            (3, vec![ev(PUT, "a", 3)]),
            (5, vec![ev(PUT, "a", 5)]),
            (6, vec![ev(DEL, "a", 6)]),
        ]
    );
    assert_eq!(
        of(&got, w_range),
        vec![
            (3, vec![ev(PUT, "a", 3)]),
            (5, vec![ev(PUT, "a", 5), ev(PUT, "ab", 5)]),
            (6, vec![ev(DEL, "a", 6)]),
        ]
    );
    assert_eq!(of(&got, w_from), vec![(4, vec![ev(PUT, "b", 4)])]);
    assert_eq!(of(&got, w_noput), vec![(6, vec![ev(DEL, "a", 6)])]);
    assert_eq!(
        of(&got, w_nodel),
        vec![
            (3, vec![ev(PUT, "a", 3)]),
            (5, vec![ev(PUT, "a", 5), ev(PUT, "ab", 5)]),
        ]
    );
    // The put's key-value is complete; the delete has only key and revision.
    let first = got.iter().find(|r| r.watch_id == w_key).unwrap();
    let kv = first.events[0].kv.as_ref().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.version),
        (&b"1"[..], 2, 2)
    );

    s.cancel(w_key).unwrap();
    put(&fx.kv, "a", "again");
    let got: Vec<WatchResponse> = rx.try_iter().collect();
    assert!(of(&got, w_key).is_empty(), "nothing after cancel");
    assert_eq!(of(&got, w_range).len(), 1);
}

#[test]
fn unsynced_watcher_catches_up_in_whole_revisions_then_goes_live() {
    let fx = open();
    let cfg = WatchConfig {
        max_records_per_sync: 5,
        max_revs_per_response: 3,
        ..WatchConfig::default()
    };
    let ws = WatchableStore::new(fx.kv.clone(), cfg);
    for i in 2..=11 {
        let mut w = fx.kv.write();
        w.put(format!("k{i:02}a").as_bytes(), b"v", 0);
        w.put(b"other", b"v", 0);
        w.put(format!("k{i:02}b").as_bytes(), b"v", 0);
        w.end(0, 0).unwrap();
        assert_eq!(fx.kv.rev(), i);
    }
    let (s, rx) = stream(&ws, 100);
    let (id, at) = watch(&s, AUTO_WATCH_ID, "k", Some("l"), 4, vec![]);
    assert_eq!(at, 11);
    assert_eq!(ws.counts().unsynced, 1);
    put(&fx.kv, "k99", "not yet"); // 12: not notified while unsynced
    assert!(rx.try_recv().is_err());

    let mut rounds = 0;
    while ws.counts().unsynced > 0 {
        let r = ws.sync_unsynced(512);
        assert_eq!(r.victims + r.compacted, 0);
        rounds += 1;
        assert!(rounds < 100);
    }
    assert!(rounds > 3, "the record limit splits catch-up into rounds");
    let got: Vec<WatchResponse> = rx.try_iter().collect();
    let mut revs = Vec::new();
    for r in &got {
        assert_eq!(r.watch_id, id);
        let mut in_resp: Vec<i64> = r.events.iter().map(|e| rev_of(e)).collect();
        in_resp.dedup();
        assert!(in_resp.len() <= 3, "at most 3 revisions per response");
        for rev in &in_resp {
            let n = r.events.iter().filter(|e| rev_of(e) == *rev).count();
            let want = if *rev == 12 { 1 } else { 2 };
            assert_eq!(n, want, "revision {rev} is whole in one response");
        }
        assert!(r.revision >= *in_resp.last().unwrap());
        revs.extend(r.events.iter().map(|e| rev_of(e)));
    }
    let mut want: Vec<i64> = (4..=11).flat_map(|r| [r, r]).collect();
    want.push(12);
    assert_eq!(revs, want, "every event once, in order");

    assert_eq!(put(&fx.kv, "k5", "live"), 13);
    let live = rx.try_recv().unwrap();
    assert_eq!((live.revision, rev_of(&live.events[0])), (13, 13));
}

#[test]
fn victim_does_not_block_writes_and_later_gets_everything_in_order() {
    let fx = open();
    let ws = WatchableStore::new(fx.kv.clone(), WatchConfig::default());
    let (slow, slow_rx) = stream(&ws, 2);
    let (fast, fast_rx) = stream(&ws, 10_000);
    let (sid, _) = watch(&slow, AUTO_WATCH_ID, "v", Some("w"), 0, vec![]);
    let (fid, _) = watch(&fast, AUTO_WATCH_ID, "v", Some("w"), 0, vec![]);

    let started = Instant::now();
    for i in 0..300 {
        put(&fx.kv, &format!("v{}", i % 7), &i.to_string());
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "writes are not held up"
    );
    let last = fx.kv.rev();
    assert_eq!(ws.counts().victims, 1, "the slow watcher is a victim");
    let fast_revs: Vec<i64> = fast_rx
        .try_iter()
        .map(|r| {
            assert_eq!(r.watch_id, fid);
            rev_of(&r.events[0])
        })
        .collect();
    assert_eq!(fast_revs, (2..=last).collect::<Vec<_>>());

    // Retrying while the reader is still stalled changes nothing and loses nothing.
    assert_eq!(ws.retry_victims(), 0);
    let mut revs = Vec::new();
    let mut rounds = 0;
    loop {
        for r in slow_rx.try_iter() {
            assert_eq!(r.watch_id, sid);
            revs.extend(r.events.iter().map(|e| rev_of(e)));
        }
        let c = ws.counts();
        if c.synced == 2 && c.victims == 0 && c.unsynced == 0 {
            break;
        }
        ws.retry_victims();
        ws.sync_unsynced(512);
        rounds += 1;
        assert!(rounds < 10_000);
    }
    revs.extend(
        slow_rx
            .try_iter()
            .flat_map(|r| r.events)
            .map(|e| rev_of(&e)),
    );
    assert_eq!(revs, (2..=last).collect::<Vec<_>>(), "no gap, no duplicate");
    put(&fx.kv, "v1", "after");
    assert_eq!(rev_of(&slow_rx.try_recv().unwrap().events[0]), last + 1);
}

#[test]
fn concurrent_create_and_write_never_lose_or_duplicate() {
    let fx = open();
    let ws = WatchableStore::new(fx.kv.clone(), WatchConfig::default());
    let mut created = 0;
    for round in 0..20 {
        let kv = fx.kv.clone();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    put(&kv, "c", &i.to_string());
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        // Create watchers back to back while the writes go on, so that some land right
        // between a commit and its notification.
        // Bounded, so a slow writer (a loaded machine) cannot make the loop eat memory.
        let mut watchers = Vec::new();
        while !done.load(std::sync::atomic::Ordering::SeqCst) && watchers.len() < 500 {
            let (s, rx) = stream(&ws, 64);
            let (_, at) = watch(&s, AUTO_WATCH_ID, "c", None, 0, vec![]);
            watchers.push((s, rx, at));
        }
        writer.join().unwrap();
        let last = fx.kv.rev();
        assert_eq!(ws.counts().unsynced + ws.counts().victims, 0);
        for (s, rx, at) in watchers {
            let revs: Vec<i64> = rx
                .try_iter()
                .flat_map(|r| r.events)
                .map(|e| rev_of(&e))
                .collect();
            assert_eq!(
                revs,
                (at + 1..=last).collect::<Vec<_>>(),
                "round {round}: created at {at}"
            );
            created += 1;
            drop(s);
        }
    }
    assert!(created > 100, "only {created} watchers raced the writes");
}

#[test]
fn concurrent_history_watch_with_background_sync_never_loses_or_duplicates() {
    let fx = open();
    let cfg = WatchConfig {
        sync_interval: Duration::from_millis(1),
        victim_retry_interval: Duration::from_millis(1),
        max_records_per_sync: 7,
        ..WatchConfig::default()
    };
    let ws = WatchableStore::spawn(fx.kv.clone(), cfg).unwrap();
    for round in 0..100 {
        let kv = fx.kv.clone();
        let writer = std::thread::spawn(move || {
            for i in 0..30 {
                put(&kv, if i % 2 == 0 { "h" } else { "h2" }, &i.to_string());
            }
        });
        // Not a wait: a varying head start for the writer, so the watcher is created at
        // different points of the writes from round to round.
        std::thread::sleep(Duration::from_micros((round % 10) * 100));
        let start = (fx.kv.rev() - 5).max(2);
        // A small sink: the watcher also goes through victim retries.
        let (s, rx) = stream(&ws, 2);
        watch(&s, AUTO_WATCH_ID, "h", Some("i"), start, vec![]);
        writer.join().unwrap();
        let last = fx.kv.rev();
        let mut revs = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while revs.last() != Some(&last) {
            if let Ok(r) = rx.recv_timeout(Duration::from_millis(10)) {
                revs.extend(r.events.iter().map(|e| rev_of(e)));
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: stuck at {revs:?}"
            );
        }
        assert_eq!(revs, (start..=last).collect::<Vec<_>>(), "round {round}");
    }
}

#[test]
fn compaction_cancels_watchers_behind_it() {
    let fx = open();
    let ws = WatchableStore::new(fx.kv.clone(), WatchConfig::default());
    for i in 2..=10 {
        assert_eq!(put(&fx.kv, "x", &i.to_string()), i);
    }
    let (s, rx) = stream(&ws, 100);
    let (behind, _) = watch(&s, AUTO_WATCH_ID, "x", None, 3, vec![]);
    let (at_compaction, _) = watch(&s, AUTO_WATCH_ID, "x", None, 6, vec![]);
    fx.kv.compact(6).unwrap().wait().unwrap();
    ws.sync_unsynced(512);
    let got: Vec<WatchResponse> = rx.try_iter().collect();
    let cancel: Vec<&WatchResponse> = got.iter().filter(|r| r.watch_id == behind).collect();
    assert_eq!(cancel.len(), 1);
    assert_eq!(
        (
            cancel[0].compact_revision,
            cancel[0].revision,
            cancel[0].events.len()
        ),
        (6, 0, 0)
    );
    let revs: Vec<i64> = got
        .iter()
        .filter(|r| r.watch_id == at_compaction)
        .flat_map(|r| r.events.iter().map(|e| rev_of(e)))
        .collect();
    assert_eq!(revs, (6..=10).collect::<Vec<_>>());
    assert_eq!(
        ws.counts(),
        WatcherCounts {
            synced: 1,
            unsynced: 0,
            victims: 0
        }
    );
    put(&fx.kv, "x", "later");
    let got: Vec<WatchResponse> = rx.try_iter().collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].watch_id, at_compaction);
    assert!(
        s.request_progress_all(),
        "a compacted watcher gets nothing more and does not hold progress back"
    );
    let got: Vec<WatchResponse> = rx.try_iter().collect();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].watch_id, got[0].revision), (-1, fx.kv.rev()));
    // Its own progress notifications (it asked for them) stop too.
    s.request_progress(behind);
    assert!(
        rx.try_iter().next().is_none(),
        "progress for a compacted watcher"
    );
    // Alone in its stream, it still carries the stream's answer: the client asked the stream.
    s.cancel(at_compaction).unwrap();
    assert!(s.request_progress_all());
    let ids: Vec<WatchId> = rx.try_iter().map(|r| r.watch_id).collect();
    assert_eq!(
        ids,
        vec![-1],
        "a stream of compacted watchers answers a progress request"
    );
    s.cancel(behind).unwrap();
    assert!(s.request_progress_all());
}

#[test]
fn compaction_response_waits_for_room_in_the_sink() {
    let fx = open();
    let ws = WatchableStore::new(fx.kv.clone(), WatchConfig::default());
    for i in 2..=5 {
        put(&fx.kv, "y", &i.to_string());
    }
    let (s, rx) = stream(&ws, 1);
    let (live, _) = watch(&s, AUTO_WATCH_ID, "z", None, 0, vec![]);
    put(&fx.kv, "z", "fills the sink");
    let (behind, _) = watch(&s, AUTO_WATCH_ID, "y", None, 2, vec![]);
    fx.kv.compact(4).unwrap().wait().unwrap();
    ws.sync_unsynced(512);
    assert_eq!(
        ws.counts().unsynced,
        1,
        "stays unsynced until the response fits"
    );
    assert_eq!(rx.try_recv().unwrap().watch_id, live);
    ws.sync_unsynced(512);
    let r = rx.try_recv().unwrap();
    assert_eq!((r.watch_id, r.compact_revision), (behind, 4));
    assert_eq!(ws.counts().unsynced, 0);
}

#[test]
fn progress_only_when_synced() {
    let fx = open();
    let ws = WatchableStore::new(fx.kv.clone(), WatchConfig::default());
    put(&fx.kv, "p", "1");
    let (s, rx) = stream(&ws, 100);
    assert!(s.request_progress_all(), "no watchers: nothing to wait for");
    assert!(rx.try_recv().is_err(), "and nothing sent");
    let (a, _) = watch(&s, AUTO_WATCH_ID, "p", None, 0, vec![]);
    s.request_progress(a);
    let r = rx.try_recv().unwrap();
    assert_eq!((r.watch_id, r.revision, r.events.len()), (a, 2, 0));
    assert!(s.request_progress_all());
    let r = rx.try_recv().unwrap();
    assert_eq!((r.watch_id, r.revision), (INVALID_WATCH_ID, 2));

    let (b, _) = watch(&s, AUTO_WATCH_ID, "q", None, 1, vec![]);
    assert!(!s.request_progress_all());
    s.request_progress(b);
    assert!(rx.try_recv().is_err(), "unsynced: no progress");
    ws.sync_unsynced(512);
    assert!(s.request_progress_all());
    assert_eq!(rx.try_recv().unwrap().watch_id, INVALID_WATCH_ID);

    let (future, _) = watch(&s, AUTO_WATCH_ID, "f", None, 4, vec![]);
    assert!(!s.request_progress_all(), "waiting for its start revision");
    put(&fx.kv, "x", "3");
    put(&fx.kv, "x", "4");
    assert!(s.request_progress_all());
    s.cancel(future).unwrap();
}

#[test]
fn stream_ids_and_errors_are_etcds() {
    let fx = open();
    let ws = WatchableStore::new(fx.kv.clone(), WatchConfig::default());
    let (s, _rx) = stream(&ws, 100);
    let no = |_: WatchId, _: i64| {};
    assert_eq!(watch(&s, AUTO_WATCH_ID, "a", None, 0, vec![]).0, 0);
    assert_eq!(watch(&s, AUTO_WATCH_ID, "a", None, 0, vec![]).0, 1);
    assert_eq!(watch(&s, 3, "a", None, 0, vec![]).0, 3);
    assert_eq!(watch(&s, AUTO_WATCH_ID, "a", None, 0, vec![]).0, 2);
    assert_eq!(watch(&s, AUTO_WATCH_ID, "a", None, 0, vec![]).0, 4);
    assert_eq!(
        s.watch(3, b"a".to_vec(), None, 0, vec![], no),
        Err(WatchError::DuplicateId)
    );
    assert_eq!(
        s.watch(9, b"b".to_vec(), Some(b"a".to_vec()), 0, vec![], no),
        Err(WatchError::EmptyRange)
    );
    assert_eq!(
        s.watch(9, b"a".to_vec(), Some(b"a".to_vec()), 0, vec![], no),
        Err(WatchError::EmptyRange)
    );
    assert_eq!(
        WatchError::DuplicateId.to_string(),
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    assert_eq!(s.cancel(3), Ok(()));
    assert_eq!(s.cancel(3), Err(WatchError::NotExist));
    assert_eq!(
        watch(&s, 3, "a", None, 0, vec![]).0,
        3,
        "a freed id is reusable"
    );
    assert_eq!(ws.counts().synced, 5);
    s.close();
    assert_eq!(ws.counts().synced, 0);
    assert_eq!(s.cancel(0), Err(WatchError::NotExist));
    assert_eq!(
        s.watch(AUTO_WATCH_ID, b"a".to_vec(), None, 0, vec![], no),
        Err(WatchError::EmptyRange)
    );
    let (s2, _rx2) = stream(&ws, 1);
    watch(&s2, AUTO_WATCH_ID, "a", None, 0, vec![]);
    drop(s2);
    assert_eq!(
        ws.counts(),
        WatcherCounts::default(),
        "dropping a stream cancels"
    );
}

#[test]
fn cancel_removes_a_victim_and_its_pending_batch() {
    let fx = open();
    let ws = WatchableStore::new(fx.kv.clone(), WatchConfig::default());
    let (s, rx) = stream(&ws, 1);
    let (id, _) = watch(&s, AUTO_WATCH_ID, "a", None, 0, vec![]);
    put(&fx.kv, "a", "1");
    put(&fx.kv, "a", "2");
    assert_eq!(ws.counts().victims, 1);
    s.cancel(id).unwrap();
    assert_eq!(ws.counts(), WatcherCounts::default());
    assert_eq!(rx.try_iter().count(), 1);
    assert_eq!(ws.retry_victims(), 0);
    assert!(rx.try_recv().is_err());
}

#[test]
fn events_share_one_allocation_across_watchers() {
    let fx = open();
    let ws = WatchableStore::new(fx.kv.clone(), WatchConfig::default());
    let (s, rx) = stream(&ws, 100);
    watch(&s, AUTO_WATCH_ID, "s", None, 0, vec![]);
    watch(&s, AUTO_WATCH_ID, "s", Some("t"), 0, vec![]);
    put(&fx.kv, "s", "v");
    let got: Vec<WatchResponse> = rx.try_iter().collect();
    assert_eq!(got.len(), 2);
    assert!(Arc::ptr_eq(&got[0].events[0], &got[1].events[0]));
}

#[test]
fn negative_start_revision_is_live_or_compacted_as_in_etcd_3_4() {
    let fx = open();
    let ws = WatchableStore::new(fx.kv.clone(), WatchConfig::default());
    for i in 2..=4 {
        put(&fx.kv, "n", &i.to_string());
    }
    let (s, rx) = stream(&ws, 100);
    // Never compacted: no history, live from the next revision on.
    let (live, _) = watch(&s, AUTO_WATCH_ID, "n", None, -1, vec![]);
    let r = ws.sync_unsynced(512);
    assert_eq!((r.synced, r.remaining), (1, 0));
    put(&fx.kv, "n", "5");
    let got: Vec<WatchResponse> = rx.try_iter().collect();
    assert_eq!(of(&got, live), vec![(5, vec![ev(PUT, "n", 5)])]);
    // Once compacted, a negative start revision is below the compaction.
    fx.kv.compact(3).unwrap().wait().unwrap();
    let (behind, _) = watch(&s, AUTO_WATCH_ID, "n", None, -1, vec![]);
    ws.sync_unsynced(512);
    let got: Vec<WatchResponse> = rx.try_iter().collect();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].watch_id, got[0].compact_revision), (behind, 3));
}

fn drain(rx: &Receiver<WatchResponse>) -> Vec<WatchResponse> {
    rx.try_iter().collect()
}

/// A follower's store restored from a leader's copy: the index, revision and compaction revision
/// are the leader's, and a watcher synced before the restore catches up on exactly the revisions
/// it has not seen.
#[test]
fn restore_from_a_copy_moves_watchers_to_catch_up() {
    let leader = open();
    let follower = open();
    // The same history on both, as Raft makes it.
    for kv in [&leader.kv, &follower.kv] {
        put(kv, "a", "1"); // 2
        put(kv, "b", "1"); // 3
    }
    let ws = WatchableStore::new(follower.kv.clone(), WatchConfig::default());
    let (s, rx) = stream(&ws, 100);
    let (w_all, at) = watch(&s, AUTO_WATCH_ID, "", Some(""), 0, vec![]);
    assert_eq!(at, 3);
    let (w_b, _) = watch(&s, AUTO_WATCH_ID, "b", None, 2, vec![]);
    let (w_future, _) = watch(&s, AUTO_WATCH_ID, "c", None, 100, vec![]);
    ws.sync_unsynced(100);
    assert_eq!(of(&drain(&rx), w_b), vec![(3, vec![ev(PUT, "b", 3)])]);
    // The follower misses what the leader does next.
    put(&leader.kv, "a", "2"); // 4
    let mut w = leader.kv.write();
    w.delete_range(b"b", None);
    w.end(0, 0).unwrap(); // 5
    put(&leader.kv, "c", "1"); // 6

    let copy = follower._dir.path().join("copy");
    leader.kv.backend().copy_to_file(&copy).unwrap();
    let backend = follower.kv.backend().clone();
    follower
        .kv
        .restore(|| backend.install(&copy).map_err(MvccError::from))
        .unwrap();
    assert_eq!(follower.kv.rev(), 6);
    assert_eq!(
        follower.kv.hash_kv(0).unwrap(),
        leader.kv.hash_kv(0).unwrap()
    );
    assert!(drain(&rx).is_empty(), "nothing is sent before catch-up");
    assert_eq!(ws.counts().synced, 0);
    ws.sync_unsynced(100);
    let got = drain(&rx);
    assert_eq!(
        of(&got, w_all),
        vec![(6, vec![ev(PUT, "a", 4), ev(DEL, "b", 5), ev(PUT, "c", 6)])]
    );
    assert_eq!(of(&got, w_b), vec![(6, vec![ev(DEL, "b", 5)])]);
    assert!(of(&got, w_future).is_empty());
    assert_eq!(ws.counts().synced, 3);
    // Writes after the restore reach the watchers as usual, once.
    put(&follower.kv, "a", "3"); // 7
    let got = drain(&rx);
    assert_eq!(of(&got, w_all), vec![(7, vec![ev(PUT, "a", 7)])]);
    assert!(of(&got, w_b).is_empty());
}

/// A watcher whose next revision the leader compacted away gets the compaction response, and a
/// compaction the copy left unfinished is finished after the restore.
#[test]
fn restore_past_a_watchers_revision_compacts_it() {
    let leader = open();
    let follower = open();
    for kv in [&leader.kv, &follower.kv] {
        put(kv, "a", "1"); // 2
    }
    let ws = WatchableStore::new(follower.kv.clone(), WatchConfig::default());
    let (s, rx) = stream(&ws, 100);
    let (w, _) = watch(&s, AUTO_WATCH_ID, "a", None, 0, vec![]);
    for i in 0..5 {
        put(&leader.kv, "a", &i.to_string()); // 3..=7
    }
    leader.kv.compact(5).unwrap().wait().unwrap();
    // The leader schedules a compaction the copy records as unfinished.
    {
        let backend = leader.kv.backend();
        let mut t = backend.write().unwrap();
        t.put(
            backend::Bucket::Meta,
            b"scheduledCompactRev",
            &Revision::new(6, 0).to_bytes(),
        )
        .unwrap();
        t.commit_durable().unwrap();
    }
    let copy = follower._dir.path().join("copy");
    leader.kv.backend().copy_to_file(&copy).unwrap();
    let backend = follower.kv.backend().clone();
    follower
        .kv
        .restore(|| backend.install(&copy).map_err(MvccError::from))
        .unwrap();
    assert_eq!(follower.kv.rev(), 7);
    assert_eq!(follower.kv.compact_rev(), 6);
    ws.sync_unsynced(100);
    let got = drain(&rx);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].watch_id, got[0].compact_revision), (w, 6));
    // The resumed physical compaction runs on the compactor thread.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = follower.kv.backend().read().unwrap();
        let finished = backend::Reader::get(&r, backend::Bucket::Meta, b"finishedCompactRev")
            .unwrap()
            .map(|v| BucketKey::from_bytes(&v).unwrap().rev.main);
        if finished == Some(6) {
            break;
        }
        assert!(Instant::now() < deadline, "compaction not resumed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        follower
            .kv
            .read()
            .range(b"a", None, RangeOptions::default())
            .unwrap()
            .kvs[0]
            .mod_revision,
        7
    );
}

/// A failed install changes nothing in memory.
#[test]
fn failed_restore_keeps_the_store() {
    let fx = open();
    put(&fx.kv, "a", "1");
    let r: Result<(), MvccError> = fx.kv.restore(|| Err(MvccError::Corrupt("no file".into())));
    assert!(r.is_err());
    assert_eq!(fx.kv.rev(), 2);
    put(&fx.kv, "a", "2");
    assert_eq!(fx.kv.rev(), 3);
}
