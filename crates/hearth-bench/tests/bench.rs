//! Runs the `hearth-bench` binary against real servers started by the end-to-end tests'
//! harness (`hearth_tests::Server`, on reserved loopback ports): Hearth (the binary at
//! `$HEARTH_BIN`, else `<workspace>/target/debug/hearth`) for put/range/txn, and Debian's
//! `/usr/bin/etcd` for watch/lease (which Hearth does not serve yet); without etcd installed,
//! its checks are skipped with a message. Only counts and errors are checked, never timings.

use hearth_tests::server::ETCD_BIN;
use hearth_tests::{ports, Kind, Server};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

const BENCH: &str = env!("CARGO_BIN_EXE_hearth-bench");

/// A server of `kind` on reserved loopback ports (the end-to-end tests' harness).
fn start(kind: Kind) -> Server {
    tokio::runtime::Runtime::new()
        .expect("tokio runtime")
        .block_on(Server::start(kind))
}

/// Runs `hearth-bench --endpoints=E ARGS`: (success, stdout, stderr).
fn bench(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BENCH)
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run hearth-bench");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or(Value::Null)
}

/// Runs with `--json`, asserts success, and returns the reports by name.
fn run_json(endpoint: &str, args: &[&str]) -> Value {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--json");
    let (ok, out, err) = bench(endpoint, &all);
    assert!(ok, "hearth-bench {args:?} failed:\n{out}\n{err}");
    let v = json(&out);
    assert!(v.is_object(), "not JSON:\n{out}");
    v
}

fn report<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["reports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no report {name} in {v:#}"))
}

/// A report with `count` successes, no errors, and the full set of figures.
fn assert_clean(r: &Value, count: u64) {
    assert_eq!(r["count"], count, "{r:#}");
    assert_eq!(r["errors"], 0, "{r:#}");
    assert_eq!(r["error_distribution"], serde_json::json!([]), "{r:#}");
    if count > 0 {
        let buckets = r["histogram"].as_array().unwrap();
        assert_eq!(buckets.len(), 11);
        let in_buckets: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
        assert_eq!(in_buckets, count);
        assert_eq!(r["percentiles"].as_array().unwrap().len(), 8);
        for k in [
            "fastest_secs",
            "slowest_secs",
            "average_secs",
            "requests_per_sec",
        ] {
            assert!(r[k].as_f64().unwrap() > 0.0, "{k} in {r:#}");
        }
    }
}

fn kv_workloads(s: &Server) {
    let e = &s.endpoint();
    let v = run_json(
        e,
        &[
            "put",
            "--total",
            "200",
            "--clients",
            "4",
            "--sequential-keys",
            "--key-space-size",
            "50",
        ],
    );
    assert_eq!(v["command"], "put");
    assert_eq!(v["global"]["clients"], 4);
    assert_eq!(v["options"]["total"], 200);
    assert_eq!(v["reports"].as_array().unwrap().len(), 1);
    assert_clean(report(&v, "put"), 200);

    let v = run_json(
        e,
        &[
            "range",
            "probe",
            "--total",
            "100",
            "--clients",
            "2",
            "--conns",
            "2",
        ],
    );
    assert_clean(report(&v, "range"), 100);
    let v = run_json(
        e,
        &[
            "range",
            "a",
            "z",
            "--consistency",
            "s",
            "--total",
            "50",
            "--limit",
            "10",
            "--count-only",
        ],
    );
    assert_eq!(v["options"]["consistency"], "s");
    assert_clean(report(&v, "range"), 50);

    let v = run_json(
        e,
        &[
            "txn-put",
            "--total",
            "60",
            "--clients",
            "3",
            "--txn-ops",
            "4",
            "--key-space-size",
            "16",
        ],
    );
    assert_clean(report(&v, "txn-put"), 60);

    let v = run_json(
        e,
        &[
            "txn-mixed",
            "--total",
            "100",
            "--clients",
            "2",
            "--rw-ratio",
            "1",
            "--key-space-size",
            "10",
        ],
    );
    let (read, write) = (report(&v, "txn-mixed-read"), report(&v, "txn-mixed-write"));
    let (r, w) = (
        read["count"].as_u64().unwrap(),
        write["count"].as_u64().unwrap(),
    );
    assert_eq!(r + w, 100, "{v:#}");
    assert_clean(read, r);
    assert_clean(write, w);

    // The JSON gateway mode: put and range as JSON over HTTP/1.1, one connection per client.
    let v = run_json(
        e,
        &[
            "put",
            "--gateway",
            "--total",
            "100",
            "--clients",
            "4",
            "--key-space-size",
            "10",
        ],
    );
    assert_eq!(v["global"]["gateway"], true);
    assert_clean(report(&v, "put"), 100);
    let v = run_json(
        e,
        &[
            "range",
            "a",
            "z",
            "--gateway",
            "--consistency",
            "s",
            "--limit",
            "5",
            "--total",
            "50",
            "--clients",
            "2",
        ],
    );
    assert_clean(report(&v, "range"), 50);
    let (ok, _, err) = bench(e, &["txn-put", "--gateway", "--total", "1"]);
    assert!(!ok && err.contains("--gateway"), "{err}");

    // Rate limiting and the text report (no timing assertions: only that it runs and prints).
    let (ok, out, err) = bench(e, &["put", "--total", "20", "--rate", "1000", "--precise"]);
    assert!(ok, "{out}\n{err}");
    for needle in [
        "Summary:",
        "Requests/sec:",
        "Response time histogram:",
        "Latency distribution:",
    ] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    assert!(!out.contains("Error distribution"), "{out}");
}

#[test]
fn kv_workloads_against_hearth() {
    let s = start(Kind::Hearth);
    kv_workloads(&s);
}

#[test]
fn all_workloads_against_etcd() {
    if !Path::new(ETCD_BIN).is_file() {
        eprintln!("SKIP: {ETCD_BIN} is not installed");
        return;
    }
    let s = start(Kind::Etcd);
    let e = &s.endpoint();
    kv_workloads(&s);

    let v = run_json(e, &["lease-keepalive", "--total", "100", "--clients", "3"]);
    assert_clean(report(&v, "lease-keepalive"), 100);

    // 3 streams x 4 watchers over 2 keys, 20 puts over the same 2 keys: each put reaches the
    // 6 watchers of its key, 120 events in all.
    let v = run_json(
        e,
        &[
            "watch",
            "--streams",
            "3",
            "--watchers-per-stream",
            "4",
            "--key-space",
            "2",
            "--put-total",
            "20",
            "--clients",
            "2",
        ],
    );
    assert_clean(report(&v, "watch-create"), 12);
    assert_clean(report(&v, "put"), 20);
    assert_clean(report(&v, "watch-events"), 120);

    let v = run_json(
        e,
        &[
            "watch-latency",
            "--streams",
            "2",
            "--watchers-per-stream",
            "3",
            "--put-total",
            "10",
            "--put-rate",
            "200",
        ],
    );
    assert_clean(report(&v, "put"), 10);
    assert_clean(report(&v, "watch-events"), 60);
}

#[test]
fn unreachable_server_fails_cleanly_or_counts_errors() {
    // Nothing listens on this (reserved) port: every request fails, and the failures are
    // counted.
    let port = ports::reserve();
    let (ok, out, err) = bench(
        &format!("127.0.0.1:{port}"),
        &["put", "--total", "3", "--dial-timeout", "1s", "--json"],
    );
    if ok {
        let v = json(&out);
        let r = report(&v, "put");
        assert_eq!(r["count"], 0);
        assert_eq!(r["errors"], 3);
        assert!(r["histogram"].as_array().unwrap().is_empty());
    } else {
        assert!(err.contains("Error"), "{err}");
    }
}
