//! Starting, stopping, crashing and restarting a real server process.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::poll::{self, Poll};
use crate::ports::{self, Port};

/// How long a server has to answer a Range after being started.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long a server has to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// How long a server's gauges have to reach what a test waits for: generous, as tearing down a
/// stalled stream of a thousand watchers on a busy machine may take a while.
const METRICS_DEADLINE: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The server under test: the `hearth` binary, or etcd when `HEARTH_TEST_TARGET=etcd`.
    Hearth,
    /// The reference: Debian's etcd 3.4 at /usr/bin/etcd.
    Etcd,
}

impl Kind {
    /// What `Kind::Hearth` really runs: etcd itself when `HEARTH_TEST_TARGET=etcd`, which is
    /// how the tests are validated against the reference.
    fn resolve(self) -> Kind {
        match (self, std::env::var("HEARTH_TEST_TARGET").as_deref()) {
            (Kind::Hearth, Ok("etcd")) => Kind::Etcd,
            (Kind::Hearth, Ok("hearth") | Ok("") | Err(_)) => Kind::Hearth,
            (Kind::Hearth, Ok(other)) => {
                panic!("HEARTH_TEST_TARGET={other:?}: expected \"etcd\" or \"hearth\"")
            }
            (Kind::Etcd, _) => Kind::Etcd,
        }
    }
}

/// The `hearth` binary: `HEARTH_BIN` if set, else `<workspace>/target/debug/hearth`.
pub fn hearth_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "HEARTH_BIN={} does not exist; build it with `cargo build -p hearth`",
            p.display()
        );
        return p;
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .join("target/debug/hearth");
    assert!(
        p.is_file(),
        "{} does not exist: run `cargo build -p hearth` first (or set HEARTH_BIN)",
        p.display()
    );
    p
}

/// The `hearthutl` binary: `HEARTHUTL_BIN` if set, else next to the `hearth` binary.
pub fn hearthutl_bin() -> PathBuf {
    let p = std::env::var_os("HEARTHUTL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| hearth_bin().with_file_name("hearthutl"));
    assert!(
        p.is_file(),
        "{} does not exist: run `cargo build -p hearthutl` first (or set HEARTHUTL_BIN)",
        p.display()
    );
    p
}

pub const ETCD_BIN: &str = "/usr/bin/etcd";
pub const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";

/// How a server is known to be ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A linearizable Range succeeds (needs a leader).
    Linearizable,
    /// A serializable Range succeeds (what a learner serves).
    Serializable,
}

/// Where and how a cluster member runs (see [`Server::spawn_member`]).
#[derive(Debug)]
pub struct MemberSpec {
    pub name: String,
    /// Held by the member for its whole life.
    pub client: Port,
    pub peer: Port,
    /// `--initial-cluster`.
    pub initial_cluster: String,
    /// `new` or `existing`.
    pub state: &'static str,
    pub token: String,
    /// More flags, e.g. `--snapshot-count=...`.
    pub args: Vec<String>,
    /// Started following a failpoint file, so it can be cut off from its peers (Hearth only;
    /// see [`Server::cut_off`]).
    pub fault_file: bool,
    pub probe: Probe,
}

/// A server process on reserved loopback ports (see [`ports`]), in its own temporary data dir.
/// Killed (SIGKILL) on drop; if the test is failing at that point, the tail of its log is
/// printed.
pub struct Server {
    kind: Kind,
    requested: Kind,
    dir: tempfile::TempDir,
    client: Port,
    peer: Port,
    token: String,
    name: String,
    initial_cluster: Option<String>,
    state: &'static str,
    args: Vec<String>,
    fault_file: bool,
    probe: Probe,
    child: Option<Child>,
    starts: u32,
    opts: Options,
}

/// Extra start-up settings for [`Server::start_with`].
#[derive(Default)]
pub struct Options {
    /// More flags, after the harness's own.
    pub args: Vec<String>,
    /// Environment variables for the server (set after the harness clears `HEARTH_*`/`ETCD_*`).
    pub env: Vec<(String, String)>,
    /// Called with the (not yet existing) data dir before the first start, to lay it out.
    pub prepare: Option<Prepare>,
}

impl Options {
    /// Just extra flags.
    pub fn with_args(args: &[&str]) -> Options {
        Options {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Options::default()
        }
    }
}

/// Lays out a data dir before a server's first start.
pub type Prepare = Box<dyn FnOnce(&Path)>;

impl Server {
    /// Starts a server of `kind` and waits until it answers a Range request.
    pub async fn start(kind: Kind) -> Server {
        Server::start_with(kind, Options::default()).await
    }

    /// Like [`start`](Self::start), with extra flags, environment or a prepared data dir.
    pub async fn start_with(kind: Kind, mut opts: Options) -> Server {
        let prepare = opts.prepare.take();
        let dir = tempfile::Builder::new()
            .prefix("hearth-e2e-")
            .tempdir()
            .expect("create temp dir");
        let (client, peer) = (ports::reserve(), ports::reserve());
        let token = format!(
            "hearth-e2e-{}-{}",
            std::process::id(),
            dir.path().file_name().unwrap().to_string_lossy()
        );
        let mut s = Server {
            kind: kind.resolve(),
            requested: kind,
            dir,
            client,
            peer,
            token,
            name: "default".into(),
            initial_cluster: None,
            state: "new",
            args: std::mem::take(&mut opts.args),
            fault_file: false,
            probe: Probe::Linearizable,
            child: None,
            starts: 0,
            opts,
        };
        if let Some(p) = prepare {
            p(&s.data_dir());
        }
        s.spawn();
        s.wait_ready().await;
        s
    }

    /// A cluster member on the given ports, spawned but not waited for (see
    /// [`Server::wait_ready`]): the members of a new cluster only become ready together.
    pub fn spawn_member(kind: Kind, spec: MemberSpec) -> Server {
        Server::spawn_member_prepared(kind, spec, |_, _| {})
    }

    /// Like [`spawn_member`](Self::spawn_member), with `prepare(spec, data dir)` run first to lay
    /// out the (not yet existing) data dir, e.g. restored from a snapshot.
    pub fn spawn_member_prepared(
        kind: Kind,
        spec: MemberSpec,
        prepare: impl FnOnce(&MemberSpec, &Path),
    ) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("hearth-e2e-")
            .tempdir()
            .expect("create temp dir");
        prepare(&spec, &dir.path().join("data"));
        let mut s = Server {
            kind: kind.resolve(),
            requested: kind,
            dir,
            client: spec.client,
            peer: spec.peer,
            token: spec.token,
            name: spec.name,
            initial_cluster: Some(spec.initial_cluster),
            state: spec.state,
            args: spec.args,
            fault_file: spec.fault_file,
            probe: spec.probe,
            child: None,
            starts: 0,
            opts: Options::default(),
        };
        s.spawn();
        s
    }

    /// Waits until the server answers its readiness probe; fails the test if it does not.
    pub async fn wait_ready(&mut self) {
        if let Err(e) = self.probe_until_ready().await {
            self.fail(&e);
        }
    }

    /// The member's name (`--name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The peer URL (`--initial-advertise-peer-urls`).
    pub fn peer_url(&self) -> String {
        self.peer.url()
    }

    /// Whether the process is running (as far as the harness knows).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The failpoint file this member follows (`HEARTH_FAILPOINTS_FILE`, see `docs/failpoints.md`).
    pub fn failpoint_file(&self) -> PathBuf {
        self.dir.path().join("failpoints")
    }

    /// Cuts this member off from its peers, or heals it, by arming or disarming the
    /// `blackholePeerNetwork` failpoint (Hearth only).
    pub fn cut_off(&self, cut: bool) {
        assert!(
            self.fault_file && self.kind == Kind::Hearth,
            "cut_off needs a Hearth member started with the failpoint file"
        );
        if cut {
            std::fs::write(self.failpoint_file(), b"blackholePeerNetwork=return")
                .expect("write the failpoint file");
        } else {
            let _ = std::fs::remove_file(self.failpoint_file());
        }
    }

    /// Changes `--initial-cluster-state` and `--initial-cluster-token` for later restarts (a member
    /// with data must ignore them).
    pub fn set_initial_flags(&mut self, state: &'static str, token: &str) {
        self.state = state;
        self.token = token.to_string();
    }

    /// Sets the environment variables of later starts (replacing those given before), e.g.
    /// `HEARTH_FAILPOINTS` for the next start only.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.opts.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// The extra flags later starts get.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Sets the extra flags of later starts (replacing those given before), e.g.
    /// `--force-new-cluster` for the next start only.
    pub fn set_args(&mut self, args: Vec<String>) {
        self.args = args;
    }

    /// Sets the readiness probe used by later restarts.
    pub fn set_probe(&mut self, probe: Probe) {
        self.probe = probe;
    }

    /// What really runs (`Kind::Hearth` may be etcd, see `HEARTH_TEST_TARGET`).
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// What the test asked for.
    pub fn requested_kind(&self) -> Kind {
        self.requested
    }

    pub fn endpoint(&self) -> String {
        self.client.url()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn command(&self) -> Command {
        let peer = self.peer_url();
        let client = self.endpoint();
        let mut cmd = match self.kind {
            Kind::Hearth => Command::new(hearth_bin()),
            Kind::Etcd => Command::new(ETCD_BIN),
        };
        let initial_cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={peer}", self.name));
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-state")
            .arg(self.state)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .args(&self.args);
        if self.kind == Kind::Etcd {
            cmd.arg("--logger=zap").arg("--log-outputs=stderr");
        }
        // Keep the environment from steering either server (hearth reads HEARTH_<FLAG> and
        // ETCD_<FLAG>; the tests' own HEARTH_* variables are not for it). The log level may
        // pass, for debugging.
        for (k, _) in std::env::vars_os() {
            let k_str = k.to_string_lossy();
            if (k_str.starts_with("ETCD_") || k_str.starts_with("HEARTH_"))
                && k_str != "HEARTH_LOG_LEVEL"
            {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        if self.fault_file && self.kind == Kind::Hearth {
            cmd.env("HEARTH_FAILPOINTS_FILE", self.failpoint_file());
        }
        cmd
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open server log");
        self.starts += 1;
        let cmd = self.command();
        let _ = writeln!(
            log,
            "===== harness: start #{} of {:?} ({:?} requested): {:?}",
            self.starts, self.kind, self.requested, cmd
        );
        let mut cmd = cmd;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?} failed: {e}", cmd.get_program()));
        self.child = Some(child);
    }

    /// Polls a Range request until it succeeds, the process exits, or the deadline passes.
    async fn probe_until_ready(&mut self) -> Result<(), String> {
        let mut poll = Poll::new("a Range request answered", READY_DEADLINE);
        let endpoint = self.endpoint();
        let serializable = self.probe == Probe::Serializable;
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("server exited during startup with {status}"));
                }
            }
            let last_err =
                match tokio::time::timeout(Duration::from_secs(3), probe(&endpoint, serializable))
                    .await
                {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(e)) => e,
                    Err(_) => "probe timed out".into(),
                };
            if !poll.try_next().await {
                return Err(format!(
                    "server did not answer a Range request within {READY_DEADLINE:?} (last error: {last_err})"
                ));
            }
        }
    }

    fn fail(&mut self, msg: &str) -> ! {
        self.kill_child();
        panic!(
            "{:?} server at {}: {msg}\n----- server log tail -----\n{}",
            self.kind,
            self.endpoint(),
            self.log_tail(80)
        );
    }

    fn kill_child(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL: the process dies at once, with whatever it had not made durable.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("kill9: server not running");
        c.kill().expect("SIGKILL");
        c.wait().expect("wait");
    }

    /// SIGTERM, then waits for the process to exit; a server that does not exit in time
    /// fails the test.
    pub fn stop(&mut self) {
        let mut c = self.child.take().expect("stop: server not running");
        signal(&c, rustix::process::Signal::TERM).expect("kill -TERM");
        let mut poll = Poll::new("the server to exit after SIGTERM", STOP_DEADLINE);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                let _ = writeln!(
                    self.log_file(),
                    "===== harness: exited after SIGTERM: {status}"
                );
                return;
            }
            if !poll.try_next_blocking() {
                let _ = c.kill();
                let _ = c.wait();
                self.fail(&format!("did not exit within {STOP_DEADLINE:?} of SIGTERM"));
            }
        }
    }

    /// Stops the server (SIGTERM) if it runs, and starts it again on the same data dir and
    /// ports; returns once it answers.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
        if let Err(e) = self.probe_until_ready().await {
            self.fail(&e);
        }
    }

    /// Starts the server again (after `kill9` or `stop`) without waiting for it.
    pub fn respawn(&mut self) {
        self.spawn();
    }

    /// The exit status if the process has exited (it is then no longer running), else None.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Waits until the process exits on its own; returns its exit status, or None if it was
    /// still running at the deadline.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let mut poll = Poll::new("the server to exit", deadline);
        loop {
            self.child.as_ref()?;
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if !poll.try_next().await {
                return None;
            }
        }
    }

    fn log_file(&self) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open server log")
    }

    /// The whole server log (all starts).
    pub fn log(&self) -> String {
        let mut s = Vec::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let _ = f.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut s = Vec::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)));
            let _ = f.read_to_end(&mut s);
        }
        let s = String::from_utf8_lossy(&s);
        let all: Vec<&str> = s.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The server's `/metrics` page (Prometheus text format).
    pub fn metrics(&self) -> String {
        match http_get(self.client.number(), "/metrics") {
            Ok((200, body)) => body,
            other => panic!("GET /metrics from {}: {other:?}", self.endpoint()),
        }
    }

    /// The value of the metric `name` on `/metrics` (None if absent); see [`metric_value`].
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.metrics(), name)
    }

    /// Waits until every metric in `want` has its value on `/metrics` (gauges that say the
    /// server has done something: watchers created and caught up, say).
    pub async fn wait_metrics(&self, want: &[(&str, f64)]) {
        let what = format!("{:?} on {:?}'s /metrics", want, self.kind);
        poll::eventually(what, METRICS_DEADLINE, async || {
            let page = self.metrics();
            let have: Vec<Option<f64>> = want.iter().map(|(n, _)| metric_value(&page, n)).collect();
            if want.iter().zip(&have).all(|((_, v), h)| *h == Some(*v)) {
                Ok(())
            } else {
                Err(have)
            }
        })
        .await
    }

    /// The sum of every series of metric `name` on `/metrics`, whatever its labels (0 if absent).
    pub fn metric_sum(&self, name: &str) -> f64 {
        self.metrics()
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let value = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once("} ")?.1,
                    None => rest.strip_prefix(' ')?,
                };
                value.trim().parse::<f64>().ok()
            })
            .sum()
    }

    /// The server process's resident memory in KiB (`VmRSS` in /proc/<pid>/status).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status.lines().find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
    }

    /// Starts `etcdctl --endpoints=<this server> ARGS` without waiting for it (for commands
    /// that run until stopped, such as `watch`), stdout and stderr piped.
    pub fn etcdctl_spawn(&self, args: &[&str]) -> Child {
        etcdctl_command(&self.endpoint(), args)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn /usr/bin/etcdctl")
    }

    /// `GET path` over plain HTTP/1.1 on the client port (`/metrics`, `/health`): status and body.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        let port = self.client.number();
        let p = path.to_string();
        tokio::task::spawn_blocking(move || http_get(port, &p))
            .await
            .expect("http_get task")
            .unwrap_or_else(|e| panic!("GET {path} from port {port}: {e}"))
    }

    /// An `etcd_client::Client` connected to this server.
    pub async fn client(&self) -> etcd_client::Client {
        connect(&self.endpoint())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.endpoint()))
    }

    /// A raw KV client (requests sent exactly as built).
    pub async fn raw(&self) -> crate::rpc::RawKv {
        crate::rpc::RawKv::connect(&self.endpoint())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.endpoint()))
    }

    /// Runs `etcdctl --endpoints=<this server> ARGS` (API v3) and returns its output.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_stdin(args, "")
    }

    /// Like `etcdctl`, with `stdin` fed to the command.
    pub fn etcdctl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        etcdctl(&self.endpoint(), args, stdin)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_child();
        if std::thread::panicking() {
            eprintln!(
                "----- {:?} server ({:?} requested) at {}: log tail ({}) -----\n{}\n----- end of log -----",
                self.kind,
                self.requested,
                self.endpoint(),
                self.log_path().display(),
                self.log_tail(60)
            );
        }
    }
}

/// Sends `sig` to a child process.
pub fn signal(c: &Child, sig: rustix::process::Signal) -> std::io::Result<()> {
    rustix::process::kill_process(rustix::process::Pid::from_child(c), sig).map_err(Into::into)
}

/// The value of the metric `name` (with its labels, if any: `name{le="2"}`) in a `/metrics`
/// page; None if absent.
pub fn metric_value(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// A plain HTTP/1.0 GET on the loopback port; returns the body of a 200 answer.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    use std::net::TcpStream;
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("answer: {head}"))?;
    Ok((status, body.to_string()))
}

/// `etcdctl --endpoints=ENDPOINT ARGS` with API v3, timeouts set, no inherited `ETCDCTL_*`, stdout and
/// stderr piped.
pub fn etcdctl_command(endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(ETCDCTL_BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["--dial-timeout=5s", "--command-timeout=20s"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `/usr/bin/etcdctl --endpoints=ENDPOINT ARGS` with `ETCDCTL_API=3`.
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = etcdctl_command(endpoint, args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn /usr/bin/etcdctl");
    {
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("etcdctl output")
}

/// An `etcd_client::Client` with bounded connect and request times.
pub async fn connect(endpoint: &str) -> Result<etcd_client::Client, etcd_client::Error> {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(20));
    etcd_client::Client::connect([endpoint], Some(opts)).await
}

async fn probe(endpoint: &str, serializable: bool) -> Result<(), String> {
    let mut c = connect(endpoint).await.map_err(|e| e.to_string())?;
    let opts = serializable.then(|| etcd_client::GetOptions::new().with_serializable());
    match c.get("hearth-e2e-readiness-probe", opts).await {
        Ok(_) => Ok(()),
        // With auth enabled an anonymous read is refused, but only once the member serves.
        Err(etcd_client::Error::GRpcStatus(s))
            if s.message() == "etcdserver: user name is empty" =>
        {
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}
