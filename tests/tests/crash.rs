//! Crash: a concurrent write load, `kill -9` mid-load, restart. Every acknowledged put must be
//! there with its value and with the revision it was acknowledged at; revisions must be
//! continuous (every key is written once, so the keys' mod_revisions are exactly
//! 2..=current). Several rounds: kill, restart, more load, kill again.

use hearth_tests::load::{self, Load};
use hearth_tests::rng::Seed;
use hearth_tests::{Kind, Server};

const TASKS: usize = 8;
const ROUNDS: usize = 3;

/// Checks every acknowledged write (see `load::verify`), that nothing but the load's keys
/// exists, and the continuity of revisions. Returns the current revision.
async fn verify(server: &Server, acks: &[load::Ack], round: usize) -> i64 {
    println!("round {round}: checking {} acknowledged puts", acks.len());
    let (current, revs) = load::verify(&server.endpoint(), "crash/", acks).await;
    let mut c = server.client().await;
    let all = c
        .get(
            vec![0],
            Some(
                etcd_client::GetOptions::new()
                    .with_from_key()
                    .with_count_only(),
            ),
        )
        .await
        .expect("count every key after restart");
    assert_eq!(
        all.count() as usize,
        revs.len(),
        "round {round}: keys other than the load's"
    );
    let expected: std::collections::BTreeSet<i64> = (2..=current).collect();
    if revs != expected {
        let gaps: Vec<i64> = expected.difference(&revs).copied().take(10).collect();
        panic!(
            "round {round}: revisions are not continuous: {} keys for current revision {current}; first missing revisions {gaps:?}",
            revs.len()
        );
    }
    current
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill9() {
    let seed = Seed::from_env("acknowledged_writes_survive_kill9");
    let mut rng = seed.rng();
    let mut server = Server::start(Kind::Hearth).await;
    let mut acks = Vec::new();
    let mut last_rev = 1;
    for round in 0..ROUNDS {
        let load = Load::start(&format!("crash/{round}"), vec![server.endpoint()], TASKS);
        // Kill once this many puts of the round are acknowledged: mid-load, with puts in
        // flight on every task.
        let kill_at = 100 + rng.usize(..200);
        load.wait_more(kill_at).await;
        server.kill9();
        let (round_acks, per_task) = load.stop().await;
        let acked = round_acks.len();
        acks.extend(round_acks);
        server.restart().await;
        let current = verify(&server, &acks, round).await;
        println!(
            "round {round}: killed after {acked} acknowledged puts (per task {per_task:?}); revision {current}, {} acknowledged in all",
            acks.len()
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
