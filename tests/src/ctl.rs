//! Running `etcdctl` and normalizing what it prints, for side-by-side comparison; and what a
//! command that had to succeed printed.

use serde_json::Value;
use std::process::Output;
use std::time::Duration;

use crate::poll::Poll;

/// One etcdctl run, reduced to what is compared: exit code, stdout, and the `Error:` lines of
/// stderr (etcdctl 3.4 also logs client-side retry warnings there, with timestamps and random
/// target names, which are not compared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctl {
    pub code: Option<i32>,
    pub stdout: String,
    pub errors: Vec<String>,
}

impl Ctl {
    pub fn from_output(o: &Output) -> Ctl {
        let stderr = String::from_utf8_lossy(&o.stderr);
        Ctl {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            errors: stderr
                .lines()
                .filter(|l| l.starts_with("Error:"))
                .map(str::to_string)
                .collect(),
        }
    }

    /// Stdout parsed as JSON (for `-w json`), with the fields that differ between two
    /// servers replaced by a placeholder.
    pub fn json(&self) -> Value {
        let mut v: Value = serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("etcdctl printed no JSON ({e}):\n{}", self.stdout));
        scrub(&mut v);
        v
    }

    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Fields whose values legitimately differ between two servers (identity, raft state,
/// version, sizes, timings). They must still be present where the reference has them.
pub const SCRUBBED: &[&str] = &[
    "cluster_id",
    "member_id",
    "raft_term",
    "leader",
    "raftIndex",
    "raftTerm",
    "raftAppliedIndex",
    "dbSize",
    "dbSizeInUse",
    "took",
    "Endpoint",
    "endpoint",
];

/// Fields scrubbed only inside an endpoint status (`version` elsewhere is a key's version).
pub const SCRUBBED_IN_STATUS: &[&str] = &["version"];

fn scrub(v: &mut Value) {
    scrub_in(v, false)
}

fn scrub_in(v: &mut Value, in_status: bool) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if SCRUBBED.contains(&k.as_str())
                    || (in_status && SCRUBBED_IN_STATUS.contains(&k.as_str()))
                {
                    *val = Value::String("<scrubbed>".into());
                } else {
                    scrub_in(val, k == "Status");
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| scrub_in(v, in_status)),
        _ => {}
    }
}

/// What a command that had to succeed printed on stdout; if it failed, panics naming it (`what`)
/// with both of its outputs.
pub fn succeeded(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An etcdctl command that runs until stopped (`watch`), its output collected as it comes.
pub struct Running {
    child: std::process::Child,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Takes over a child spawned with piped stdout and stderr.
    pub fn new(mut child: std::process::Child) -> Running {
        use std::io::Read;
        fn collect(
            mut from: impl Read + Send + 'static,
        ) -> (
            std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
            std::thread::JoinHandle<()>,
        ) {
            let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let b = buf.clone();
            let h = std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = from.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    b.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
            (buf, h)
        }
        let (stdout, a) = collect(child.stdout.take().expect("piped stdout"));
        let (stderr, b) = collect(child.stderr.take().expect("piped stderr"));
        Running {
            child,
            stdout,
            stderr,
            readers: vec![a, b],
        }
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Waits until `done(stdout)` holds or the process exits, for at most `deadline`.
    /// Returns whether `done` held.
    pub fn wait_for(&mut self, deadline: Duration, done: impl Fn(&str) -> bool) -> bool {
        let mut poll = Poll::new("etcdctl's output", deadline);
        loop {
            if done(&self.stdout()) {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                // It exited: once the readers have taken the last bytes, the output is whole.
                self.join_readers();
                return done(&self.stdout());
            }
            if !poll.try_next_blocking() {
                return false;
            }
        }
    }

    /// Waits for the process to exit by itself (for at most `deadline`, then kills it) and
    /// returns what it printed.
    pub fn wait_exit(mut self, deadline: Duration) -> Ctl {
        let mut poll = Poll::new("etcdctl to exit", deadline);
        while !matches!(self.child.try_wait(), Ok(Some(_))) && poll.try_next_blocking() {}
        self.stop()
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// Kills the process (if still running) and returns what it printed.
    pub fn stop(mut self) -> Ctl {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for etcdctl");
        self.join_readers();
        let out = Output {
            status,
            stdout: std::mem::take(&mut *self.stdout.lock().unwrap()),
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
        };
        Ctl::from_output(&out)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each line of stdout parsed as JSON and scrubbed (etcdctl `watch -w json` prints one
/// response per line).
pub fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("etcdctl printed a line that is no JSON ({e}): {l}"));
            scrub(&mut v);
            v
        })
        .collect()
}
