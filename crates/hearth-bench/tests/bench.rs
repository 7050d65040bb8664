//! Runs the `hearth-bench` binary against real servers on free loopback ports: Hearth (the
//! binary at `$HEARTH_BIN`, else `hearth` beside this test's target directory, else
//! `<workspace>/target/debug/hearth`) for put/range/txn, and Debian's `/usr/bin/etcd` for
//! watch/lease (which Hearth does not serve yet). A server that is not installed skips its
//! checks with a message. Only counts and errors are checked, never timings.

use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ETCD_BIN: &str = "/usr/bin/etcd";
const BENCH: &str = env!("CARGO_BIN_EXE_hearth-bench");

fn hearth_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HEARTH_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "HEARTH_BIN={} does not exist", p.display());
        return Some(p);
    }
    // target/<profile>/deps/bench-<hash> -> target/<profile>/hearth
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("hearth")));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/hearth");
    beside.into_iter().chain([workspace]).find(|p| p.is_file())
}

/// A server process in a temp dir; killed on drop.
struct Server {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(bin: &Path) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("hearth-bench-")
            .tempdir()
            .unwrap();
        let (a, b) = (
            TcpListener::bind("127.0.0.1:0").unwrap(),
            TcpListener::bind("127.0.0.1:0").unwrap(),
        );
        let client = format!("http://{}", a.local_addr().unwrap());
        let peer = format!("http://{}", b.local_addr().unwrap());
        drop((a, b));
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("--name=default")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .arg(format!(
                "--initial-cluster-token=hearth-bench-{}",
                std::process::id()
            ));
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("ETCD_") || k.starts_with("HEARTH_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut s = Server {
            child,
            endpoint: client,
            dir,
        };
        s.wait_ready();
        s
    }

    /// Waits until a one-request range run succeeds.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server exited during startup ({status}):\n{}", self.log());
            }
            let out = bench(
                &self.endpoint,
                &["range", "probe", "--total", "1", "--json"],
            );
            if out.0 && json(&out.1)["reports"][0]["count"] == 1 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let e = &s.endpoint;
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
    let Some(bin) = hearth_bin() else {
        eprintln!(
            "SKIP: no hearth binary (build it with `cargo build -p hearth` or set HEARTH_BIN)"
        );
        return;
    };
    let s = Server::start(&bin);
    kv_workloads(&s);
}

#[test]
fn all_workloads_against_etcd() {
    if !Path::new(ETCD_BIN).is_file() {
        eprintln!("SKIP: {ETCD_BIN} is not installed");
        return;
    }
    let s = Server::start(Path::new(ETCD_BIN));
    let e = &s.endpoint;
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
    // Nothing listens on this port: every request fails, and the failures are counted.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
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
