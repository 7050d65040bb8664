//! A gRPC proxy process in front of a cluster: Hearth's (`hearth grpc-proxy start`) or etcd's
//! (`etcd grpc-proxy start`), on a free loopback port, killed on drop.
//!
//! A proxy started with [`Proxy::start_tls`] serves TLS: its endpoint is `https://`, etcdctl and
//! curl are given the CA (and a client certificate if one is set), and readiness is probed with
//! etcdctl (the `etcd-client` crate here is built without TLS).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::poll::Poll;
use crate::ports::{reserve, Port};
use crate::server::{connect, hearth_bin, ETCD_BIN};

/// How long a proxy has to answer a Range through to its cluster.
const READY_DEADLINE: Duration = Duration::from_secs(30);

pub struct Proxy {
    child: Option<Child>,
    port: Port,
    dir: tempfile::TempDir,
    args: Vec<String>,
    etcd: bool,
    tls: Option<ClientFiles>,
}

/// What a client of a TLS proxy presents: the CA to trust and, optionally, a certificate.
#[derive(Clone, Debug, Default)]
pub struct ClientFiles {
    pub ca: PathBuf,
    pub cert_key: Option<(PathBuf, PathBuf)>,
}

impl ClientFiles {
    /// etcdctl's (and curl's) flags for these files.
    fn etcdctl_flags(&self) -> Vec<String> {
        let mut f = vec![format!("--cacert={}", self.ca.display())];
        if let Some((c, k)) = &self.cert_key {
            f.push(format!("--cert={}", c.display()));
            f.push(format!("--key={}", k.display()));
        }
        f
    }
}

impl Proxy {
    /// `hearth grpc-proxy start --endpoints=ENDPOINTS ARGS`, ready to serve.
    pub async fn start(endpoints: &[String], args: &[&str]) -> Proxy {
        Proxy::start_kind(false, endpoints, args, None).await
    }

    /// Like [`start`](Self::start) with client-facing TLS flags in `args`; clients trust and
    /// present `client`.
    pub async fn start_tls(endpoints: &[String], args: &[&str], client: ClientFiles) -> Proxy {
        Proxy::start_kind(false, endpoints, args, Some(client)).await
    }

    /// Debian's `etcd grpc-proxy start` with the same flags, for side-by-side figures.
    pub async fn start_etcd(endpoints: &[String], args: &[&str]) -> Proxy {
        Proxy::start_kind(true, endpoints, args, None).await
    }

    async fn start_kind(
        etcd: bool,
        endpoints: &[String],
        args: &[&str],
        tls: Option<ClientFiles>,
    ) -> Proxy {
        let port = reserve();
        let mut all = vec![
            format!("--endpoints={}", endpoints.join(",")),
            format!("--listen-addr=127.0.0.1:{port}"),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let mut p = Proxy {
            child: None,
            port,
            dir: tempfile::Builder::new()
                .prefix("hearth-e2e-proxy-")
                .tempdir()
                .expect("temp dir"),
            args: all,
            etcd,
            tls,
        };
        p.spawn();
        p.wait_ready().await;
        p
    }

    fn spawn(&mut self) {
        let mut cmd = if self.etcd {
            Command::new(ETCD_BIN)
        } else {
            Command::new(hearth_bin())
        };
        cmd.args(["grpc-proxy", "start"]).args(&self.args);
        if self.etcd {
            cmd.arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ));
        }
        let log = std::fs::File::create(self.log_path()).expect("proxy log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn proxy"));
    }

    /// One readiness probe: a Range through the proxy to the cluster.
    async fn probe(&self) -> Result<(), String> {
        if self.tls.is_some() {
            let o = self.etcdctl(&["get", "hearth-e2e-proxy-probe"]);
            return if o.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).into_owned())
            };
        }
        let mut c = connect(&self.endpoint()).await.map_err(|e| e.to_string())?;
        match c.get("hearth-e2e-proxy-probe", None).await {
            Ok(_) => Ok(()),
            // A cluster with auth enabled refuses an anonymous read, once it serves.
            Err(etcd_client::Error::GRpcStatus(s))
                if s.message().contains("user name is empty") =>
            {
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn wait_ready(&mut self) {
        let mut poll = Poll::new("the proxy to answer a Range", READY_DEADLINE);
        loop {
            let last = match self.probe().await {
                Ok(()) => return,
                Err(e) => e,
            };
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("proxy exited with {status}:\n{}", self.log());
            }
            poll.next(format!("{last}\n{}", self.log())).await;
        }
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port.number()
    }

    /// `curl --silent ARGS URL-of-path` against the proxy (with its CA and client certificate
    /// when it serves TLS).
    pub fn curl_command(&self, path: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("curl");
        cmd.arg("--silent").args(args);
        if let Some(t) = &self.tls {
            cmd.arg("--cacert").arg(&t.ca);
            if let Some((c, k)) = &t.cert_key {
                cmd.arg("--cert").arg(c).arg("--key").arg(k);
            }
        }
        cmd.arg(format!("{}{path}", self.endpoint()));
        cmd
    }

    /// `curl -X POST --data-binary BODY` of `path`: the HTTP status and the body.
    pub fn curl_post(&self, path: &str, body: &str) -> (u16, String) {
        let o = self
            .curl_command(
                path,
                &[
                    "-X",
                    "POST",
                    "--data-binary",
                    body,
                    "--write-out",
                    "\n%{http_code}",
                ],
            )
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code = code.trim().parse().unwrap_or(0);
        if code == 0 {
            return (0, format!("curl: {o:?}"));
        }
        (code, body.to_string())
    }

    /// The files clients of this proxy present, if it serves TLS.
    pub fn client_files(&self) -> Option<&ClientFiles> {
        self.tls.as_ref()
    }

    /// The directory the proxy's log is in (free for a test's files too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("proxy.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// An `etcd_client::Client` connected to the proxy.
    pub async fn client(&self) -> etcd_client::Client {
        connect(&self.endpoint())
            .await
            .unwrap_or_else(|e| panic!("connect to the proxy: {e}"))
    }

    /// Runs etcdctl against the proxy (with the TLS files of a TLS proxy).
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let flags = self
            .tls
            .as_ref()
            .map(ClientFiles::etcdctl_flags)
            .unwrap_or_default();
        let all: Vec<&str> = flags
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect();
        crate::server::etcdctl(&self.endpoint(), &all, "")
    }

    /// The value of the unlabelled metric `name` on the proxy's `/proxy/metrics`.
    pub fn proxy_metric(&self, name: &str) -> Option<f64> {
        let (code, body) = crate::server::http_get(self.port.number(), "/proxy/metrics").ok()?;
        assert_eq!(code, 200, "/proxy/metrics: {body}");
        body.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
            rest.trim().parse().ok()
        })
    }

    /// `GET path` on the proxy's port.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        crate::server::http_get(self.port.number(), path).expect("GET from the proxy")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "----- proxy log tail -----\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}
