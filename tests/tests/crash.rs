//! Crash: a concurrent write load, `kill -9` mid-load, restart. Every acknowledged put must be
//! there with its value and with the revision it was acknowledged at; revisions must be
//! continuous (every key is written once, so the keys' mod_revisions are exactly
//! 2..=current). Several rounds: kill, restart, more load, kill again.

use hearth_tests::rng::Rng;
use hearth_tests::wire::*;
use hearth_tests::{Kind, Server};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TASKS: usize = 8;
const ROUNDS: usize = 3;
/// Upper bound of puts per task per round; the kill comes long before.
const MAX_PUTS_PER_TASK: usize = 5000;

#[derive(Debug, Clone)]
struct Ack {
    key: Vec<u8>,
    value: Vec<u8>,
    revision: i64,
}

async fn writer(
    endpoint: String,
    round: usize,
    task: usize,
    acks: Arc<Mutex<Vec<Ack>>>,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> usize {
    let Ok(mut raw) = RawKv::connect(&endpoint).await else {
        return 0;
    };
    let mut n = 0;
    for seq in 0..MAX_PUTS_PER_TASK {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("crash/{round}/{task}/{seq:05}").into_bytes();
        let value = format!("value {round} {task} {seq}").into_bytes();
        match raw
            .put(PutRequest {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => {
                let revision = r.header.expect("put response has a header").revision;
                acks.lock().unwrap().push(Ack {
                    key,
                    value,
                    revision,
                });
                count.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
            // The server died (or is dying): this put may or may not have been applied.
            Err(_) => break,
        }
    }
    n
}

/// Reads everything and checks every acknowledged write and the continuity of revisions.
async fn verify(server: &Server, acks: &[Ack], round: usize) -> i64 {
    let mut raw = server.raw().await;
    let r = raw
        .range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        })
        .await
        .expect("range after restart");
    let current = r.header.as_ref().expect("header").revision;
    let by_key: BTreeMap<&[u8], &KeyValue> =
        r.kvs.iter().map(|kv| (kv.key.as_slice(), kv)).collect();
    let mut missing = Vec::new();
    for a in acks {
        match by_key.get(a.key.as_slice()) {
            None => missing.push(format!(
                "{} (acknowledged at revision {})",
                String::from_utf8_lossy(&a.key),
                a.revision
            )),
            Some(kv) => {
                assert_eq!(
                    (&kv.value, kv.mod_revision, kv.create_revision, kv.version),
                    (&a.value, a.revision, a.revision, 1),
                    "round {round}: key {} differs from what was acknowledged",
                    String::from_utf8_lossy(&a.key)
                );
            }
        }
    }
    assert!(
        missing.is_empty(),
        "round {round}: {} acknowledged writes lost after kill -9, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for kv in &r.kvs {
        assert!(
            kv.key.starts_with(b"crash/"),
            "unexpected key {:?}",
            String::from_utf8_lossy(&kv.key)
        );
        assert_eq!(
            (kv.create_revision, kv.version),
            (kv.mod_revision, 1),
            "every key is written once"
        );
    }
    let mut revs: Vec<i64> = r.kvs.iter().map(|kv| kv.mod_revision).collect();
    revs.sort_unstable();
    let expected: Vec<i64> = (2..=current).collect();
    if revs != expected {
        let have: std::collections::BTreeSet<i64> = revs.iter().copied().collect();
        let gaps: Vec<i64> = expected
            .iter()
            .filter(|r| !have.contains(r))
            .copied()
            .take(10)
            .collect();
        panic!(
            "round {round}: revisions are not continuous: {} keys for current revision {current}; first missing revisions {gaps:?}",
            revs.len()
        );
    }
    current
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill9() {
    let seed = Rng::seed_from_env();
    println!("acknowledged_writes_survive_kill9: seed {seed} (replay with HEARTH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let mut server = Server::start(Kind::Hearth).await;
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let mut last_rev = 1;
    for round in 0..ROUNDS {
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                tokio::spawn(writer(
                    server.endpoint(),
                    round,
                    t,
                    acks.clone(),
                    count.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        // Kill once this many puts of the round are acknowledged: mid-load, with puts in
        // flight on every task.
        let kill_at = 100 + rng.below(200) as usize;
        let deadline = Instant::now() + Duration::from_secs(60);
        while count.load(Ordering::SeqCst) < kill_at {
            assert!(
                Instant::now() < deadline,
                "round {round}: only {} puts acknowledged in 60 s",
                count.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        let mut per_task = Vec::new();
        for t in tasks {
            per_task.push(t.await.expect("writer task"));
        }
        let acked = count.load(Ordering::SeqCst);
        server.restart().await;
        let snapshot = acks.lock().unwrap().clone();
        let current = verify(&server, &snapshot, round).await;
        println!(
            "round {round}: killed after {acked} acknowledged puts (per task {per_task:?}); revision {current}, {} acknowledged in all",
            snapshot.len()
        );
        assert!(
            current >= last_rev + acked as i64,
            "round {round}: revision went back"
        );
        assert!(
            per_task.iter().filter(|&&n| n > 0).count() > 1,
            "the load was not concurrent: {per_task:?}"
        );
        last_rev = current;
    }
}
