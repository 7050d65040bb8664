//! Helpers for comparing lease, lock and election commands side by side.
//!
//! - [`Ids`]: lease IDs are chosen by each server (member id, clock and counter), so they
//!   necessarily differ. Each server's IDs are learned under a name (`L1`, or the order they
//!   were seen) and written back as `<name>` in what etcdctl prints, in every form etcdctl uses
//!   (16-digit hex, short hex, decimal); `{name}` in an argument is replaced by that server's
//!   ID in hex, which is how etcdctl takes it.
//! - [`Interactive`]: an etcdctl command that runs until interrupted (`lock`, `elect`,
//!   `lease keep-alive`), read line by line, stopped with SIGINT as a person would.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ctl::Ctl;
use crate::poll::Poll;

/// One server's lease IDs, by name.
#[derive(Debug, Default, Clone)]
pub struct Ids {
    names: Vec<(String, i64)>,
}

impl Ids {
    /// Remembers `id` under `name` (the same ID learned twice keeps its first name).
    pub fn learn(&mut self, name: &str, id: i64) {
        if !self.names.iter().any(|(_, i)| *i == id) {
            self.names.push((name.to_string(), id));
        }
    }

    /// Learns the ID printed as `lease <hex> granted` (etcdctl `lease grant`).
    pub fn learn_granted(&mut self, name: &str, stdout: &str) -> Option<i64> {
        let hex = stdout.strip_prefix("lease ")?.split(' ').next()?;
        let id = i64::from_str_radix(hex, 16).ok()?;
        self.learn(name, id);
        Some(id)
    }

    /// Learns the lease of a session key `<prefix>/<hex>` (etcdctl `lock`, `elect`) found on
    /// any line of `stdout` starting with `prefix/`.
    pub fn learn_session_key(&mut self, name: &str, prefix: &str, stdout: &str) -> Option<i64> {
        let hex = stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix)?.strip_prefix('/'))?;
        let id = i64::from_str_radix(hex.trim(), 16).ok()?;
        self.learn(name, id);
        Some(id)
    }

    pub fn get(&self, name: &str) -> Option<i64> {
        self.names.iter().find(|(n, _)| n == name).map(|(_, i)| *i)
    }

    /// `arg` with every `{name}` replaced by that lease's ID in hex.
    pub fn fill(&self, arg: &str) -> String {
        let mut s = arg.to_string();
        for (n, id) in &self.names {
            s = s.replace(&format!("{{{n}}}"), &format!("{id:x}"));
        }
        s
    }

    /// `text` with every known ID written as `<name>`: 16-digit hex, plain hex and decimal.
    /// In JSON (`json: true`) the decimal form becomes the string `"<name>"`.
    pub fn scrub(&self, text: &str, json: bool) -> String {
        let mut s = text.to_string();
        for (n, id) in &self.names {
            let tag = format!("<{n}>");
            s = s.replace(&format!("{id:016x}"), &tag);
            s = s.replace(&format!("{id:x}"), &tag);
            let dec = if json {
                format!("\"{tag}\"")
            } else {
                tag.clone()
            };
            s = s.replace(&id.to_string(), &dec);
        }
        s
    }
}

/// Standard base64 (as etcdctl's JSON prints bytes), decoded; `None` if it is not base64.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

/// A running etcdctl whose stdout is read line by line as it comes.
pub struct Interactive {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Interactive {
    /// Starts `etcdctl --endpoints=ENDPOINT ARGS` (API v3), as `server::etcdctl` runs it.
    pub fn start(endpoint: &str, args: &[&str]) -> Interactive {
        let mut cmd = crate::server::etcdctl_command(endpoint, args);
        cmd.stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn /usr/bin/etcdctl");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let l = lines.clone();
        let a = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push(line);
            }
        });
        let e = stderr.clone();
        let b = std::thread::spawn(move || {
            let mut err = err;
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                e.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Interactive {
            child,
            lines,
            stderr,
            readers: vec![a, b],
        }
    }

    /// The lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until at least `n` lines were printed, or the process exited, or `deadline`
    /// passed; returns whether there are `n` lines.
    pub fn wait_lines(&mut self, n: usize, deadline: Duration) -> bool {
        let mut poll = Poll::new(format!("{n} lines from etcdctl"), deadline);
        loop {
            if self.lines().len() >= n {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                // It exited: once the readers have taken the last lines, the output is whole.
                self.join_readers();
                return self.lines().len() >= n;
            }
            if !poll.try_next_blocking() {
                return false;
            }
        }
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGINT (a person's Ctrl-C), then waits up to `deadline` for it to exit (killing it
    /// after that) and returns what it printed.
    pub fn interrupt(mut self, deadline: Duration) -> Ctl {
        if self.running() {
            let _ = crate::server::signal(&self.child, rustix::process::Signal::INT);
        }
        self.wait(deadline)
    }

    /// Waits up to `deadline` for it to exit by itself (killing it after that) and returns
    /// what it printed.
    pub fn wait(mut self, deadline: Duration) -> Ctl {
        let mut poll = Poll::new("etcdctl to exit", deadline);
        while self.running() && poll.try_next_blocking() {}
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for etcdctl");
        self.join_readers();
        let mut stdout = self.lines().join("\n");
        if !stdout.is_empty() {
            stdout.push('\n');
        }
        let out = std::process::Output {
            status,
            stdout: stdout.into_bytes(),
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
        };
        Ctl::from_output(&out)
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The keys under `prefix` (all keys for ""), in order, as strings.
pub async fn keys(c: &mut etcd_client::Client, prefix: &str) -> Vec<String> {
    let r = c
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .expect("get keys");
    r.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_fill_and_scrub_every_form() {
        let mut ids = Ids::default();
        assert_eq!(
            ids.learn_granted("L1", "lease 694da222c274fb05 granted with TTL(10s)\n"),
            Some(0x694d_a222_c274_fb05)
        );
        ids.learn("L2", 0x1234);
        assert_eq!(
            ids.fill("lease revoke {L1} {L2}"),
            "lease revoke 694da222c274fb05 1234"
        );
        let text = format!(
            "lease 694da222c274fb05 granted\nlock/0000000000001234\n{{\"ID\":{}}}",
            0x694d_a222_c274_fb05_i64
        );
        assert_eq!(
            ids.scrub(&text, true),
            "lease <L1> granted\nlock/<L2>\n{\"ID\":\"<L1>\"}"
        );
        assert_eq!(ids.scrub("ID 4660", false), "ID <L2>");
        assert_eq!(base64_decode("azE=").unwrap(), b"k1");
        assert_eq!(base64_decode("bXlsb2NrLzY5").unwrap(), b"mylock/69");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode(""), Some(vec![]));
        assert_eq!(base64_decode("a*=="), None);
        let mut other = Ids::default();
        assert_eq!(
            other.learn_session_key("S", "mylock", "mylock/694da222c274fb1c\n\n"),
            Some(0x694d_a222_c274_fb1c)
        );
    }
}
