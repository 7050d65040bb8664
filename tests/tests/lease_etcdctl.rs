//! etcdctl 3.4's `lease`, `put --lease`, `lock` and `elect` against Hearth, side by side with
//! etcd: the same commands in the same order on both servers, and what etcdctl prints must be
//! the same (exit code, stdout, `Error:` lines).
//!
//! Normalized, because they necessarily differ: lease IDs (each server picks its own; they are
//! learned under a name and printed as `<name>`, see `hearth_tests::leases::Ids`), the fields
//! `Ctl::json` scrubs (cluster/member id, raft term), and a remaining TTL that is within a few
//! seconds of the granted TTL (the two servers are queried moments apart).
//!
//! `etcdctl lock` and `elect` wait for other holders through the Watch RPC, and `elect -l`
//! follows the leader through it.

use std::time::Duration;

use hearth_tests::ctl::Ctl;
use hearth_tests::leases::{base64_decode, keys, Ids, Interactive};
use hearth_tests::poll;
use hearth_tests::{Kind, Server};
use serde_json::Value;

/// How long an interactive etcdctl has to print what is expected, or to exit.
const WAIT: Duration = Duration::from_secs(20);

struct Pair {
    servers: [Server; 2],
    ids: [Ids; 2],
    failures: Vec<String>,
    ran: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Exact,
    Json,
}

impl Pair {
    async fn new() -> Pair {
        Pair {
            servers: [
                Server::start(Kind::Etcd).await,
                Server::start(Kind::Hearth).await,
            ],
            ids: [Ids::default(), Ids::default()],
            failures: Vec::new(),
            ran: 0,
        }
    }

    /// Runs `args` (with `{name}` filled in per server) on both; no comparison.
    fn raw(&self, args: &[&str]) -> [Ctl; 2] {
        [0, 1].map(|i| {
            let args: Vec<String> = args.iter().map(|a| self.ids[i].fill(a)).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Ctl::from_output(&self.servers[i].etcdctl(&args))
        })
    }

    fn normalized(&self, i: usize, c: &Ctl, mode: Mode) -> (Option<i32>, String, Vec<String>) {
        let json = mode == Mode::Json;
        let stdout = self.ids[i].scrub(&c.stdout, json);
        let stdout = match mode {
            Mode::Exact => sorted_attached_keys(&steady_remaining_text(&stdout)),
            Mode::Json if stdout.trim().is_empty() => String::new(),
            Mode::Json => {
                let mut v = Ctl {
                    stdout,
                    ..c.clone()
                }
                .json();
                steady_remaining_json(&mut v);
                readable_keys(&mut v, &self.ids[i]);
                v.to_string()
            }
        };
        let errors = c
            .errors
            .iter()
            .map(|e| self.ids[i].scrub(e, false))
            .collect();
        (c.code, stdout, errors)
    }

    fn compare(&mut self, what: &str, out: &[Ctl; 2], mode: Mode) {
        self.ran += 1;
        let e = self.normalized(0, &out[0], mode);
        let h = self.normalized(1, &out[1], mode);
        if e != h {
            self.failures.push(format!(
                "command #{}: etcdctl {what}\n  etcd:       {e:?}\n  under test: {h:?}",
                self.ran
            ));
        }
    }

    fn exact(&mut self, args: &[&str]) -> [Ctl; 2] {
        let out = self.raw(args);
        self.compare(&args.join(" "), &out, Mode::Exact);
        out
    }

    fn json(&mut self, args: &[&str]) -> [Ctl; 2] {
        let mut a = args.to_vec();
        a.extend(["-w", "json"]);
        let out = self.raw(&a);
        self.compare(&a.join(" "), &out, Mode::Json);
        out
    }

    /// `lease grant ARGS`, learning each server's new lease as `name`.
    fn grant(&mut self, name: &str, args: &[&str]) {
        let mut a = vec!["lease", "grant"];
        a.extend(args);
        let out = self.raw(&a);
        for (i, c) in out.iter().enumerate() {
            assert!(
                self.ids[i].learn_granted(name, &c.stdout).is_some(),
                "{:?}: lease grant printed no lease: {c:?}",
                self.servers[i].kind()
            );
        }
        self.compare(&a.join(" "), &out, Mode::Exact);
    }

    /// Starts an interactive etcdctl on both servers.
    /// Waits until both servers hold `n` keys under `prefix` (etcdctl `lock` and `elect` queue a
    /// key there before they wait).
    async fn wait_keys(&self, prefix: &str, n: usize, what: &str) {
        for s in &self.servers {
            let mut c = s.client().await;
            let what = format!("{what} ({:?})", s.kind());
            poll::eventually(what, WAIT, async || {
                let k = keys(&mut c, prefix).await;
                if k.len() == n {
                    Ok(())
                } else {
                    Err(k)
                }
            })
            .await;
        }
    }

    fn start(&self, args: &[&str]) -> [Interactive; 2] {
        [0, 1].map(|i| {
            let args: Vec<String> = args.iter().map(|a| self.ids[i].fill(a)).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Interactive::start(&self.servers[i].endpoint(), &args)
        })
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} etcdctl commands differ between etcd and the server under test:\n{}",
            self.failures.len(),
            self.ran,
            self.failures.join("\n")
        );
    }
}

/// `remaining(Ms)` within 10 s below the granted `TTL(Ns)` on the same line becomes
/// `remaining(~Ns)`.
fn steady_remaining_text(s: &str) -> String {
    s.lines()
        .map(|l| {
            let num = |after: &str| -> Option<i64> {
                let i = l.find(after)? + after.len();
                l[i..].split('s').next()?.parse().ok()
            };
            match (num("granted with TTL("), num("remaining(")) {
                (Some(t), Some(r)) if (t - 10..=t).contains(&r) => {
                    l.replace(&format!("remaining({r}s)"), &format!("remaining(~{t}s)"))
                }
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `attached keys([k2 k1])` with the keys sorted: etcd lists them in Go map order.
fn sorted_attached_keys(s: &str) -> String {
    const AT: &str = "attached keys([";
    s.lines()
        .map(|l| {
            let Some(i) = l.find(AT) else {
                return l.to_string();
            };
            let start = i + AT.len();
            let Some(len) = l[start..].find("])") else {
                return l.to_string();
            };
            let mut keys: Vec<&str> = l[start..start + len].split(' ').collect();
            keys.sort_unstable();
            format!("{}{}{}", &l[..start], keys.join(" "), &l[start + len..])
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `"key"` (base64) decoded, with lease IDs scrubbed, so keys naming a lease compare;
/// a TimeToLive's `"keys"` decoded and sorted (etcd lists them in Go map order).
fn readable_keys(v: &mut Value, ids: &Ids) {
    let decode = |s: &str| match base64_decode(s) {
        Some(b) => ids.scrub(&String::from_utf8_lossy(&b), false),
        None => s.to_string(),
    };
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                match (k.as_str(), &mut *val) {
                    ("key", Value::String(s)) => *s = decode(s),
                    ("keys", Value::Array(a)) => {
                        let mut keys: Vec<String> =
                            a.iter().filter_map(Value::as_str).map(decode).collect();
                        keys.sort_unstable();
                        *a = keys.into_iter().map(Value::String).collect();
                    }
                    _ => readable_keys(val, ids),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| readable_keys(v, ids)),
        _ => {}
    }
}

/// `"ttl"` within 10 s below `"granted-ttl"` becomes `"~<granted>"`.
fn steady_remaining_json(v: &mut Value) {
    let Some(m) = v.as_object_mut() else { return };
    let (Some(t), Some(g)) = (
        m.get("ttl").and_then(Value::as_i64),
        m.get("granted-ttl").and_then(Value::as_i64),
    ) else {
        return;
    };
    if (g - 10..=g).contains(&t) {
        m.insert("ttl".into(), Value::String(format!("~{g}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lease_side_by_side() {
    let mut p = Pair::new().await;

    // grant: TTL raised to the minimum (2 s with the default flags), errors.
    p.grant("L1", &["300"]);
    p.grant("L2", &["600"]);
    p.grant("short", &["1"]);
    p.exact(&["lease", "revoke", "{short}"]);
    let out = p.raw(&["lease", "grant", "900", "-w", "json"]);
    for (i, c) in out.iter().enumerate() {
        let id = c.json()["ID"].as_i64().expect("grant -w json has an ID");
        p.ids[i].learn("L3", id);
    }
    p.compare("lease grant 900 -w json", &out, Mode::Json);
    p.exact(&["lease", "grant", "9000000001"]);
    p.exact(&["lease", "grant", "abc"]);
    p.exact(&["lease", "grant"]);

    // list: soonest expiry first.
    p.exact(&["lease", "list"]);
    p.json(&["lease", "list"]);

    // put --lease attaches; an unknown lease is refused; overwriting detaches.
    p.exact(&["put", "--lease={L1}", "k1", "v1"]);
    p.exact(&["put", "--lease={L1}", "k2", "v2"]);
    p.exact(&["put", "--lease={L2}", "other", "v"]);
    p.exact(&["put", "--lease=1234", "k3", "v3"]);
    p.exact(&["put", "--lease=zz", "k3", "v3"]);
    p.json(&["get", "k1"]);
    p.exact(&["lease", "timetolive", "{L1}"]);
    p.exact(&["lease", "timetolive", "{L1}", "--keys"]);
    p.json(&["lease", "timetolive", "{L1}", "--keys"]);
    p.exact(&["put", "k2", "v2b"]);
    p.exact(&["lease", "timetolive", "{L1}", "--keys"]);
    p.exact(&["put", "k2", "v2c", "--lease={L1}"]);
    p.exact(&["put", "k2", "--ignore-value", "--lease={L2}"]);
    p.exact(&["lease", "timetolive", "{L2}", "--keys"]);
    p.exact(&["lease", "timetolive", "1234"]);
    p.json(&["lease", "timetolive", "1234", "--keys"]);
    p.exact(&["lease", "timetolive", "zz"]);

    // keep-alive: once, and a stream that the user interrupts.
    p.exact(&["lease", "keep-alive", "--once", "{L1}"]);
    p.json(&["lease", "keep-alive", "--once", "{L2}"]);
    p.exact(&["lease", "keep-alive", "--once", "1234"]);
    let running = p.start(&["lease", "keep-alive", "{L3}"]);
    let outs = running.map(|mut r| {
        assert!(r.wait_lines(1, WAIT), "keep-alive printed nothing");
        r.interrupt(WAIT)
    });
    p.compare("lease keep-alive {L3} (interrupted)", &outs, Mode::Exact);

    // revoke: every attached key goes, in one revision.
    p.json(&["get", "", "--prefix"]);
    p.exact(&["lease", "revoke", "{L1}"]);
    p.json(&["get", "", "--prefix"]);
    p.exact(&["lease", "revoke", "{L1}"]);
    p.exact(&["lease", "revoke", "1234"]);
    p.exact(&["lease", "revoke", "zz"]);
    p.exact(&["lease", "timetolive", "{L1}", "--keys"]);
    // keep-alive on a revoked lease ends at once.
    p.exact(&["lease", "keep-alive", "{L1}"]);
    p.exact(&["lease", "list"]);
    p.exact(&["lease", "revoke", "{L2}"]);
    p.exact(&["lease", "revoke", "{L3}"]);
    p.exact(&["lease", "list"]);
    p.json(&["get", "", "--prefix"]);
    p.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_side_by_side() {
    let mut p = Pair::new().await;
    p.exact(&["put", "before", "x"]);

    // With a command: it runs holding the lock, with the key and revision in its environment.
    let out = p.raw(&[
        "lock",
        "mylock",
        "--",
        "sh",
        "-c",
        "echo $ETCD_LOCK_KEY; echo $ETCD_LOCK_REV",
    ]);
    for (i, c) in out.iter().enumerate() {
        p.ids[i].learn_session_key("S1", "mylock", &c.stdout);
    }
    p.compare("lock mylock -- sh -c ...", &out, Mode::Exact);
    p.exact(&["lock", "mylock", "--", "sh", "-c", "exit 3"]);

    // Without a command: it prints the key and holds the lock until interrupted.
    let mut held = p.start(&["lock", "--ttl", "30", "mylock"]);
    for h in &mut held {
        assert!(
            h.wait_lines(1, WAIT),
            "lock printed nothing: {:?}",
            h.lines()
        );
    }
    for (i, h) in held.iter().enumerate() {
        p.ids[i].learn_session_key("S2", "mylock", &h.lines().join("\n"));
    }
    p.json(&["get", "mylock", "--prefix"]);

    // A second locker waits for the first, then gets the lock when it is released.
    let mut waiting = p.start(&["lock", "mylock"]);
    p.wait_keys("mylock/", 2, "the second locker queued behind the holder")
        .await;
    for w in &mut waiting {
        assert!(w.running() && w.lines().is_empty(), "{:?}", w.lines());
    }
    // The waiter's key is there, after the holder's: learn its lease from it.
    let out = p.raw(&["get", "mylock", "--prefix", "--keys-only"]);
    for (i, c) in out.iter().enumerate() {
        let last = c.stdout.lines().rfind(|l| !l.is_empty()).unwrap_or("");
        p.ids[i].learn_session_key("S3", "mylock", last);
    }
    p.compare("get mylock --prefix --keys-only", &out, Mode::Exact);
    let outs = held.map(|h| h.interrupt(WAIT));
    p.compare("lock --ttl 30 mylock (interrupted)", &outs, Mode::Exact);
    for w in &mut waiting {
        assert!(w.wait_lines(1, WAIT), "the waiter never got the lock");
    }
    let outs = waiting.map(|w| w.interrupt(WAIT));
    p.compare("lock mylock (waited, interrupted)", &outs, Mode::Exact);
    p.json(&["get", "mylock", "--prefix"]);
    p.exact(&["lock"]);
    p.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_side_by_side() {
    let mut p = Pair::new().await;
    p.exact(&["elect"]);
    p.exact(&["elect", "-l"]);

    let mut leader = p.start(&["elect", "myelection", "first"]);
    for l in &mut leader {
        assert!(l.wait_lines(2, WAIT), "elect printed {:?}", l.lines());
    }
    for (i, l) in leader.iter().enumerate() {
        p.ids[i].learn_session_key("E1", "myelection", &l.lines().join("\n"));
    }
    p.json(&["get", "myelection", "--prefix"]);

    let mut observer = p.start(&["elect", "-l", "myelection"]);
    for o in &mut observer {
        assert!(o.wait_lines(2, WAIT), "elect -l printed {:?}", o.lines());
    }
    let lines = [observer[0].lines(), observer[1].lines()];
    let scrubbed: Vec<Vec<String>> = (0..2)
        .map(|i| {
            lines[i][..2]
                .iter()
                .map(|l| p.ids[i].scrub(l, false))
                .collect()
        })
        .collect();
    assert_eq!(
        scrubbed[0], scrubbed[1],
        "elect -l: the current leader differs"
    );

    // A second candidate waits; when the leader resigns, it leads and the observer
    // prints it.
    let mut second = p.start(&["elect", "myelection", "second"]);
    p.wait_keys(
        "myelection/",
        2,
        "the second candidate queued behind the leader",
    )
    .await;
    for s in &mut second {
        assert!(s.running() && s.lines().is_empty(), "{:?}", s.lines());
    }
    let outs = leader.map(|l| l.interrupt(WAIT));
    p.compare("elect myelection first (interrupted)", &outs, Mode::Exact);
    for s in &mut second {
        assert!(s.wait_lines(2, WAIT), "the second candidate never led");
    }
    for (i, s) in second.iter().enumerate() {
        p.ids[i].learn_session_key("E2", "myelection", &s.lines().join("\n"));
    }
    for o in &mut observer {
        assert!(o.wait_lines(4, WAIT), "elect -l printed {:?}", o.lines());
    }
    let outs = observer.map(|o| o.interrupt(WAIT));
    p.compare("elect -l myelection (interrupted)", &outs, Mode::Exact);
    let outs = second.map(|s| s.interrupt(WAIT));
    p.compare("elect myelection second (interrupted)", &outs, Mode::Exact);
    p.json(&["get", "myelection", "--prefix"]);
    p.finish();
}
