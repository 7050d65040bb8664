//! Many "machines" (processes of the example binary) against a real Hearth: never more than K
//! hold a slot at once, also when holders are killed with SIGKILL (their leases expire, their
//! slots come free and the others finish).
//!
//! The machines append `acquire`/`release` lines to one file in append mode, and the test
//! appends `killed <machine>` once a killed machine is dead. Every machine writes `acquire`
//! after it holds its slot and `release` before it gives it back, and a killed machine's slot
//! comes free only when its lease expires, after the test wrote `killed`; so at every point of
//! the file, the machines acquired and not yet released or killed are a superset of those
//! really holding a slot, and there must never be more than K of them.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::LeaseTimeToLiveOptions;
use hearth_tests::poll::{self, Poll};
use hearth_tests::{Kind, Server};

const SLOTS: usize = 2;
const ROUNDS: usize = 3;
const MACHINES: usize = 6;
const DEADLINE: Duration = Duration::from_secs(120);

fn machine(endpoint: &str, name: &str, reboot_ms: u64, rounds: usize, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_reboot-semaphore"))
        .args(["--endpoints", endpoint, "--name", "fleet"])
        .args(["--slots", &SLOTS.to_string(), "--ttl", "3"])
        .args(["--machine", name, "--reboot-ms", &reboot_ms.to_string()])
        .args(["--rounds", &rounds.to_string()])
        .arg("--log")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start a machine")
}

fn history(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The ids of the leases on the server.
async fn leases(c: &mut etcd_client::Client) -> BTreeSet<i64> {
    let r = c.leases().await.expect("list leases");
    r.leases().iter().map(|l| l.id()).collect()
}

/// How many leases, other than those in `except`, have a key in every slot's queue: each is a
/// machine waiting for a slot (a machine grants its lease before it queues).
async fn queued_machines(c: &mut etcd_client::Client, except: &BTreeSet<i64>) -> usize {
    let mut queued = 0;
    for id in leases(c).await.difference(except) {
        let opts = LeaseTimeToLiveOptions::new().with_keys();
        let t = c
            .lease_time_to_live(*id, Some(opts))
            .await
            .expect("lease time-to-live");
        queued += usize::from(t.keys().len() == SLOTS);
    }
    queued
}

/// Replays the history; returns the acquisitions per machine.
fn check(lines: &[String]) -> std::collections::BTreeMap<String, usize> {
    let mut holders = BTreeSet::new();
    let mut acquired = std::collections::BTreeMap::new();
    for (n, l) in lines.iter().enumerate() {
        let f: Vec<&str> = l.split(' ').collect();
        match f.as_slice() {
            ["acquire", m, _slot] => {
                assert!(
                    holders.insert(m.to_string()),
                    "line {n}: {m} acquired twice"
                );
                *acquired.entry(m.to_string()).or_insert(0) += 1;
            }
            ["release", m, _slot] => {
                assert!(
                    holders.remove(*m),
                    "line {n}: {m} released what it did not hold"
                );
            }
            ["killed", m] => {
                holders.remove(*m);
            }
            _ => panic!("line {n}: unexpected {l:?}"),
        }
        assert!(
            holders.len() <= SLOTS,
            "line {n}: {holders:?} hold at once, more than {SLOTS}:\n{}",
            lines[..=n].join("\n")
        );
    }
    acquired
}

#[test]
fn never_more_than_k_reboot_at_once_even_when_holders_die() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(Server::start(Kind::Hearth));
    let endpoint = server.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("history");

    // Two machines that take every slot and then "reboot" for a minute: they will be killed.
    let mut doomed: Vec<(String, Child)> = (0..SLOTS)
        .map(|i| {
            let name = format!("doomed{i}");
            let c = machine(&endpoint, &name, 60_000, 1, &log);
            (name, c)
        })
        .collect();
    poll::eventually_blocking("the doomed machines to hold every slot", DEADLINE, || {
        history(&log).len() == SLOTS
    });
    let mut client = rt.block_on(server.client());
    let doomed_leases = rt.block_on(leases(&mut client));

    // The fleet queues up behind them.
    let mut fleet: Vec<(String, Child)> = (0..MACHINES)
        .map(|i| {
            let name = format!("m{i}");
            let c = machine(&endpoint, &name, 200, ROUNDS, &log);
            (name, c)
        })
        .collect();
    poll::eventually_blocking(
        "every machine of the fleet to queue on every slot",
        DEADLINE,
        || {
            let queued = rt.block_on(queued_machines(&mut client, &doomed_leases));
            if queued == MACHINES {
                Ok(())
            } else {
                Err(format!("{queued} of {MACHINES} queued"))
            }
        },
    );
    assert_eq!(history(&log).len(), SLOTS, "nobody got past the holders");

    for (name, c) in &mut doomed {
        c.kill().expect("SIGKILL");
        c.wait().unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(format!("killed {name}\n").as_bytes()).unwrap();
    }

    // Their leases expire, the slots come free, and every machine gets its rounds.
    let mut poll = Poll::new("every machine of the fleet to finish", DEADLINE);
    for (name, c) in &mut fleet {
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "{name} failed: {status}");
                break;
            }
            if !poll.try_next_blocking() {
                panic!(
                    "{name} did not finish; history:\n{}",
                    history(&log).join("\n")
                );
            }
        }
    }

    let lines = history(&log);
    let acquired = check(&lines);
    for i in 0..MACHINES {
        assert_eq!(acquired.get(&format!("m{i}")), Some(&ROUNDS), "{lines:?}");
    }
    // Both slots were used while the fleet ran (K at once is reached, not just allowed).
    let mut most = 0;
    let mut now = 0i32;
    for l in lines.iter().skip(SLOTS + SLOTS) {
        now += if l.starts_with("acquire") { 1 } else { -1 };
        most = most.max(now);
    }
    assert_eq!(most as usize, SLOTS, "{lines:?}");

    // Nothing is left under the semaphore: released slots and the dead machines' keys are gone.
    rt.block_on(async {
        let r = client
            .get("fleet/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(r.kvs().len(), 0, "{:?}", r.kvs());
    });
}

#[test]
fn the_history_check_catches_too_many_holders() {
    let ok: Vec<String> = ["acquire a 0", "acquire b 1", "release a 0", "acquire c 0"]
        .map(String::from)
        .to_vec();
    check(&ok);
    let bad: Vec<String> = ["acquire a 0", "acquire b 1", "acquire c 0"]
        .map(String::from)
        .to_vec();
    assert!(std::panic::catch_unwind(|| check(&bad)).is_err());
    let killed: Vec<String> = ["acquire a 0", "acquire b 1", "killed a", "acquire c 0"]
        .map(String::from)
        .to_vec();
    check(&killed);
}
