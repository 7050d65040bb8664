//! A gRPC proxy process in front of a cluster: Hearth's (`hearth grpc-proxy start`) or etcd's
//! (`etcd grpc-proxy start`), on a free loopback port, killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
}

impl Proxy {
    /// `hearth grpc-proxy start --endpoints=ENDPOINTS ARGS`, ready to serve.
    pub async fn start(endpoints: &[String], args: &[&str]) -> Proxy {
        Proxy::start_kind(false, endpoints, args).await
    }

    /// Debian's `etcd grpc-proxy start` with the same flags, for side-by-side figures.
    pub async fn start_etcd(endpoints: &[String], args: &[&str]) -> Proxy {
        Proxy::start_kind(true, endpoints, args).await
    }

    async fn start_kind(etcd: bool, endpoints: &[String], args: &[&str]) -> Proxy {
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

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(mut c) = connect(&self.endpoint()).await {
                if c.get("hearth-e2e-proxy-probe", None).await.is_ok() {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("proxy exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "proxy not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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

    /// Runs etcdctl against the proxy.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        crate::server::etcdctl(&self.endpoint(), args, "")
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
