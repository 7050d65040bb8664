//! `etcdctl watch` (3.4) against Hearth, side by side with etcd: the same history, the same
//! watch commands (single key, range, `--prefix`, `--rev`, `--prev-kv`, JSON output), the
//! same live writes, and what etcdctl prints must be the same. JSON output is compared with
//! cluster/member ids and the raft term scrubbed.
//!
//! etcdctl prints nothing when its watch is set up, so the scenario waits on the server's own
//! `etcd_debugging_mvcc_watcher_total` and `etcd_debugging_mvcc_slow_watcher_total` gauges
//! (both servers export them) before it writes: every watcher exists and has caught up.

use std::time::Duration;

use hearth_tests::ctl::{json_lines, Ctl, Running};
use hearth_tests::{Kind, Server};

const DEADLINE: Duration = Duration::from_secs(60);

/// A watch command, and how many times the sentinel value must appear before it is stopped.
struct WatchCmd {
    args: Vec<&'static str>,
    sentinels: usize,
}

fn cmd(args: &[&'static str], sentinels: usize) -> WatchCmd {
    WatchCmd {
        args: args.to_vec(),
        sentinels,
    }
}

fn is_json(args: &[&str]) -> bool {
    args.windows(2).any(|w| w == ["-w", "json"])
}

fn sentinel_count(out: &str, json: bool) -> usize {
    // "end", base64-encoded in JSON output.
    if json {
        out.matches("\"ZW5k\"").count()
    } else {
        out.lines().filter(|l| *l == "end").count()
    }
}

/// Waits until the server's gauges say `watchers` watchers exist and none is catching up.
async fn wait_watchers(s: &Server, watchers: f64) {
    s.wait_metrics(&[
        ("etcd_debugging_mvcc_watcher_total", watchers),
        ("etcd_debugging_mvcc_slow_watcher_total", 0.0),
    ])
    .await;
}

fn ctl_ok(s: &Server, args: &[&str]) {
    let c = Ctl::from_output(&s.etcdctl(args));
    assert!(c.ok(), "{:?}: etcdctl {args:?}: {c:?}", s.kind());
}

/// Runs the whole scenario on one server; returns each watch command's output.
async fn scenario(kind: Kind) -> Vec<(String, Ctl)> {
    let s = Server::start(kind).await;
    // Revisions 2..=8.
    for (k, v) in [
        ("a", "1"),
        ("b", "1"),
        ("a", "2"),
        ("ab", "x"),
        ("c", "1"),
        ("a", "3"),
    ] {
        ctl_ok(&s, &["put", k, v]);
    }
    ctl_ok(&s, &["del", "a"]);

    let cmds = [
        cmd(&["watch", "a"], 1),
        cmd(&["watch", "--prefix", "a"], 2),
        cmd(&["watch", "a", "--prev-kv"], 1),
        cmd(&["watch", "b", "d"], 1),
        cmd(&["watch", "--prefix", "", "--prev-kv", "-w", "json"], 3),
        cmd(&["watch", "a", "--rev", "1"], 1),
        cmd(&["watch", "--prefix", "a", "--rev", "3", "--prev-kv"], 2),
        cmd(&["watch", "", "--prefix", "--rev", "2", "-w", "json"], 3),
        cmd(&["watch", "ab", "--rev", "5", "--prev-kv", "-w", "json"], 1),
        cmd(&["watch", "a", "c", "--rev", "4"], 2),
    ];
    let mut running: Vec<Running> = cmds
        .iter()
        .map(|c| Running::new(s.etcdctl_spawn(&c.args)))
        .collect();
    wait_watchers(&s, cmds.len() as f64).await;

    // Live writes: puts, a txn with several changes in one revision, a prefix delete.
    ctl_ok(&s, &["put", "a", "4"]);
    ctl_ok(&s, &["put", "b", "2"]);
    let txn =
        Ctl::from_output(&s.etcdctl_stdin(&["txn"], "\nput a 5\nput ab y\ndel b\nput bb 1\n\n\n"));
    assert!(txn.ok(), "{txn:?}");
    ctl_ok(&s, &["del", "--prefix", "a"]);
    ctl_ok(&s, &["put", "c", "2"]);
    ctl_ok(&s, &["put", "a", "end"]);
    ctl_ok(&s, &["put", "ab", "end"]);
    ctl_ok(&s, &["put", "b", "end"]);

    let mut out = Vec::new();
    for (c, mut r) in cmds.iter().zip(running.drain(..)) {
        let json = is_json(&c.args);
        let ok = r.wait_for(DEADLINE, |o| sentinel_count(o, json) >= c.sentinels);
        let ctl = r.stop();
        assert!(
            ok,
            "{:?}: etcdctl {:?} never printed its {} sentinel(s): {ctl:?}",
            s.kind(),
            c.args,
            c.sentinels
        );
        out.push((c.args.join(" "), ctl));
    }

    // Compaction: a watch from below the compaction revision is cancelled and etcdctl exits;
    // one from the compaction revision on replays what is left.
    ctl_ok(&s, &["compact", "9"]);
    for args in [
        vec!["watch", "a", "--rev", "2"],
        vec!["watch", "--prefix", "", "--rev", "8", "-w", "json"],
    ] {
        let r = Running::new(s.etcdctl_spawn(&args));
        out.push((args.join(" "), r.wait_exit(DEADLINE)));
    }
    let args = ["watch", "--prefix", "", "--rev", "9", "--prev-kv"];
    let mut r = Running::new(s.etcdctl_spawn(&args));
    let ok = r.wait_for(DEADLINE, |o| sentinel_count(o, false) >= 3);
    let ctl = r.stop();
    assert!(
        ok,
        "{:?}: watch from the compaction revision: {ctl:?}",
        s.kind()
    );
    out.push((args.join(" "), ctl));
    out
}

fn same(a: &Ctl, b: &Ctl, json: bool) -> bool {
    a.code == b.code
        && a.errors == b.errors
        && if json {
            json_lines(&a.stdout) == json_lines(&b.stdout)
        } else {
            a.stdout == b.stdout
        }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_side_by_side() {
    let etcd = scenario(Kind::Etcd).await;
    let hearth = scenario(Kind::Hearth).await;
    assert_eq!(etcd.len(), hearth.len());
    let mut failures = Vec::new();
    for ((cmd, e), (_, h)) in etcd.iter().zip(&hearth) {
        let json = cmd.contains("-w json");
        if !same(e, h, json) {
            failures.push(format!(
                "etcdctl {cmd}\n  etcd:       {e:?}\n  under test: {h:?}"
            ));
        }
    }
    // The scenario must have exercised something: events, prev values, a cancellation.
    let all: String = etcd.iter().map(|(_, c)| c.stdout.clone()).collect();
    assert!(all.contains("DELETE") && all.contains("PUT"), "{etcd:?}");
    assert!(
        etcd.iter()
            .any(|(_, c)| !c.errors.is_empty() || c.code.is_some()),
        "no watch was cancelled by compaction: {etcd:?}"
    );
    assert!(
        failures.is_empty(),
        "{} etcdctl watch commands differ between etcd and the server under test:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
