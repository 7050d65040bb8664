//! Running `etcdctl` and normalizing what it prints, for side-by-side comparison.

use serde_json::Value;
use std::process::Output;

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
