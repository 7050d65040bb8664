//! The `hearth` binary configured as operators configure etcd: the kubeadm static-pod command line, an
//! etcd YAML configuration file, `ETCD_*` variables, and logs written to a file.
//!
//! These are about Hearth's own command line, so they always run the `hearth` binary (also under
//! `HEARTH_TEST_TARGET=etcd`: Debian's etcd 3.4 has no `--feature-gates` or 3.6 names).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use hearth_tests::poll;
use hearth_tests::ports::reserve_n;
use hearth_tests::server::{connect, hearth_bin, signal, ETCDCTL_BIN};
use serde_json::Value;

const EXIT_DEADLINE: Duration = Duration::from_secs(30);
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// `hearth` with `args`, in `dir`, with no `ETCD_*`/`HEARTH_*` variable but `env`; output to files.
fn spawn(dir: &Path, args: &[String], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(hearth_bin());
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        let k_str = k.to_string_lossy();
        if k_str.starts_with("ETCD_") || k_str.starts_with("HEARTH_") || k_str == "RUST_LOG" {
            cmd.env_remove(&k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.stdout(std::fs::File::create(dir.join("stdout")).expect("stdout file"));
    cmd.stderr(std::fs::File::create(dir.join("stderr")).expect("stderr file"));
    cmd.spawn().expect("spawn hearth")
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    poll::eventually_blocking("hearth to exit", EXIT_DEADLINE, || {
        child.try_wait().expect("wait")
    })
}

fn stderr_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
}

/// The JSON log lines of `text`; panics on a line that is not a JSON object.
fn json_lines(text: &str) -> Vec<serde_json::Map<String, Value>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(m)) => m,
            _ => panic!("not a JSON log line: {l:?}"),
        })
        .collect()
}

/// Waits until the member at `endpoint` answers a put and a get; fails if it exits first.
async fn wait_serving(child: &mut Child, endpoint: &str, dir: &Path) {
    let what = format!("hearth to serve at {endpoint}");
    poll::eventually(what, READY_DEADLINE, async || {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("hearth exited with {s}:\n{}", stderr_of(dir));
        }
        let mut c = connect(endpoint).await.map_err(|e| e.to_string())?;
        c.put("flags-e2e", "ok", None)
            .await
            .map_err(|e| e.to_string())?;
        let r = c.get("flags-e2e", None).await.map_err(|e| e.to_string())?;
        assert_eq!(r.kvs()[0].value(), b"ok");
        Ok::<(), String>(())
    })
    .await
}

fn stop(mut child: Child) {
    signal(&child, rustix::process::Signal::TERM).expect("kill -TERM");
    let status = wait_exit(&mut child);
    assert!(
        status.success(),
        "hearth exited with {status} after SIGTERM"
    );
}

/// kubeadm's PKI layout: `etcd/ca.crt`, `etcd/server.{crt,key}`, `etcd/peer.{crt,key}`.
fn kubeadm_pki(dir: &Path) -> PathBuf {
    let pki = dir.join("pki/etcd");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = transport::testing::Ca::new("etcd-ca");
    std::fs::write(pki.join("ca.crt"), ca.cert_pem()).unwrap();
    for name in ["server", "peer"] {
        let c = ca.issue(&transport::testing::CertSpec::new("node1"));
        std::fs::write(pki.join(format!("{name}.crt")), &c.cert_pem).unwrap();
        std::fs::write(pki.join(format!("{name}.key")), &c.key_pem).unwrap();
    }
    pki
}

#[tokio::test]
async fn kubeadms_static_pod_command_line_serves_etcdctl_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = kubeadm_pki(dir.path());
    let p = reserve_n(3);
    let (client, peer, metrics) = (p[0].number(), p[1].number(), p[2].number());
    let f = |n: &str| pki.join(n).display().to_string();
    // kubeadm's getEtcdCommand (cmd/kubeadm/app/phases/etcd/local.go), its arguments sorted by name as
    // kubeadm writes them, with this machine's loopback address and free ports.
    let args: Vec<String> = [
        format!("--advertise-client-urls=https://127.0.0.1:{client}"),
        format!("--cert-file={}", f("server.crt")),
        "--client-cert-auth=true".to_string(),
        format!("--data-dir={}", dir.path().join("etcd").display()),
        "--feature-gates=InitialCorruptCheck=true".to_string(),
        format!("--initial-advertise-peer-urls=https://127.0.0.1:{peer}"),
        format!("--initial-cluster=node1=https://127.0.0.1:{peer}"),
        format!("--key-file={}", f("server.key")),
        format!("--listen-client-urls=https://127.0.0.1:{client},https://127.0.0.1:{client}"),
        format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"),
        format!("--listen-peer-urls=https://127.0.0.1:{peer}"),
        "--name=node1".to_string(),
        format!("--peer-cert-file={}", f("peer.crt")),
        "--peer-client-cert-auth=true".to_string(),
        format!("--peer-key-file={}", f("peer.key")),
        format!("--peer-trusted-ca-file={}", f("ca.crt")),
        "--snapshot-count=10000".to_string(),
        format!("--trusted-ca-file={}", f("ca.crt")),
        "--watch-progress-notify-interval=5s".to_string(),
    ]
    .into();
    let mut child = spawn(dir.path(), &args, &[]);

    // The member serves over TLS to a client with a certificate (the server's pair, signed by the
    // same CA), as kube-apiserver connects.
    let ctl = |args: &[&str]| {
        Command::new(ETCDCTL_BIN)
            .env("ETCDCTL_API", "3")
            .args([
                &format!("--endpoints=https://127.0.0.1:{client}"),
                &format!("--cacert={}", f("ca.crt")),
                &format!("--cert={}", f("server.crt")),
                &format!("--key={}", f("server.key")),
            ])
            .args(args)
            .output()
            .expect("run etcdctl")
    };
    poll::eventually("hearth to serve over TLS", READY_DEADLINE, async || {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("hearth exited with {s}:\n{}", stderr_of(dir.path()));
        }
        ctl(&["endpoint", "health"]).status.success()
    })
    .await;
    let put = ctl(&["put", "kubeadm", "tls"]);
    assert!(put.status.success(), "{put:?}");
    let get = ctl(&["get", "kubeadm", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "tls");
    // Without a client certificate the member refuses the connection (--client-cert-auth).
    let anonymous = Command::new(ETCDCTL_BIN)
        .env("ETCDCTL_API", "3")
        .args([
            &format!("--endpoints=https://127.0.0.1:{client}"),
            &format!("--cacert={}", f("ca.crt")),
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "get",
            "kubeadm",
        ])
        .output()
        .expect("run etcdctl");
    assert!(!anonymous.status.success());
    for page in ["/livez", "/readyz"] {
        let body = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{metrics}{page}")])
            .output()
            .expect("run curl");
        assert!(body.status.success(), "{page} on the metrics URL failed");
        assert_eq!(String::from_utf8_lossy(&body.stdout).trim(), "ok");
    }
    // Parsed as etcd 3.6 parses it: its deprecation warning for --snapshot-count, nothing unknown.
    let stderr = stderr_of(dir.path());
    assert!(stderr.contains("--snapshot-count is deprecated in 3.6"));
    assert!(!stderr.contains("not defined"));
    stop(child);
}

#[tokio::test]
async fn a_config_file_with_etcds_keys_starts_a_member_and_logs_json_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = reserve_n(2);
    let (client, peer) = (p[0].number(), p[1].number());
    let log = dir.path().join("member.log");
    let conf = dir.path().join("etcd.conf.yml");
    std::fs::write(
        &conf,
        format!(
            r#"# etcd's sample configuration keys
name: from-file
data-dir: {data}
listen-client-urls: http://127.0.0.1:{client}
advertise-client-urls: http://127.0.0.1:{client}
listen-peer-urls: http://127.0.0.1:{peer}
initial-advertise-peer-urls: http://127.0.0.1:{peer}
initial-cluster: from-file=http://127.0.0.1:{peer}
initial-cluster-token: flags-e2e
initial-cluster-state: new
snapshot-count: 10000
heartbeat-interval: 100
election-timeout: 1000
max-txn-ops: 256
watch-progress-notify-interval: 600000000000
strict-reconfig-check: true
logger: zap
log-level: info
log-outputs: [{log}]
client-transport-security:
  client-cert-auth: false
peer-transport-security:
  client-cert-auth: false
"#,
            data = dir.path().join("data").display(),
            log = log.display(),
        ),
    )
    .unwrap();
    // The flags and the environment are ignored once a file is given, as etcd ignores them.
    let args = vec![
        format!("--config-file={}", conf.display()),
        "--name=ignored".to_string(),
    ];
    let mut child = spawn(dir.path(), &args, &[("ETCD_MAX_TXN_OPS", "1")]);
    let endpoint = format!("http://127.0.0.1:{client}");
    wait_serving(&mut child, &endpoint, dir.path()).await;

    let out = Command::new(ETCDCTL_BIN)
        .env("ETCDCTL_API", "3")
        .args([
            &format!("--endpoints={endpoint}"),
            "member",
            "list",
            "-w",
            "json",
        ])
        .output()
        .expect("run etcdctl");
    let v: Value = serde_json::from_slice(&out.stdout).expect("member list JSON");
    assert_eq!(v["members"][0]["name"], "from-file");
    // max-txn-ops is the file's 256, not the environment's 1.
    let mut c = connect(&endpoint).await.unwrap();
    let ops: Vec<etcd_client::TxnOp> = (0..200)
        .map(|i| etcd_client::TxnOp::put(format!("k{i}"), "v", None))
        .collect();
    c.txn(etcd_client::Txn::new().and_then(ops))
        .await
        .expect("a 200-op txn");
    stop(child);

    let text = std::fs::read_to_string(&log).expect("the log file");
    assert!(!text.contains('\x1b'), "escape codes in the log file");
    let lines = json_lines(&text);
    assert!(lines.len() > 3);
    for l in &lines {
        let keys: Vec<&str> = l.keys().map(String::as_str).collect();
        for k in ["level", "ts", "caller", "msg"] {
            assert!(keys.contains(&k), "{k} missing from {l:?}");
        }
        let ts = l["ts"].as_str().unwrap();
        // 2006-01-02T15:04:05.000000Z
        assert_eq!(ts.len(), 27, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
        assert!(["debug", "info", "warn", "error"].contains(&l["level"].as_str().unwrap()));
    }
    assert!(text.contains("loaded server configuration, other configuration command line flags and environment variables will be ignored if provided"));
    // Nothing went to stderr: the file was the only output.
    assert_eq!(stderr_of(dir.path()), "");
}

#[tokio::test]
async fn console_logs_to_a_file_have_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    // --memory-mlock is refused (not wired yet), so the member stops right after logging why.
    let args = vec![
        "--log-format=console".to_string(),
        "--log-level=debug".to_string(),
        format!("--log-outputs={}", log.display()),
        "--memory-mlock".to_string(),
    ];
    let mut child = spawn(dir.path(), &args, &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("\tinfo\t") && text.contains("\twarn\t"),
        "{text}"
    );
    assert!(
        text.contains("--memory-mlock is not supported yet"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "escape codes in {text:?}");
}

#[tokio::test]
async fn unknown_environment_variables_are_warned_about_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(
        dir.path(),
        &["--memory-mlock".to_string()],
        &[
            ("ETCD_NAMME", "typo"),
            ("HEARTH_LOG_LEVEL", "info"),
            ("ETCD_SNAPSHOT_COUNT", "100"),
            ("ETCDCTL_API", "3"),
        ],
    );
    assert_eq!(wait_exit(&mut child).code(), Some(1));
    let lines = json_lines(&stderr_of(dir.path()));
    let unrecognized: Vec<&str> = lines
        .iter()
        .filter(|l| l["msg"] == "unrecognized environment variable")
        .map(|l| l["environment-variable"].as_str().unwrap())
        .collect();
    assert_eq!(unrecognized, ["ETCD_NAMME"]);
    let mut used: Vec<&str> = lines
        .iter()
        .filter(|l| l["msg"] == "recognized and used environment variable")
        .map(|l| l["variable-name"].as_str().unwrap())
        .collect();
    used.sort();
    assert_eq!(used, ["ETCD_SNAPSHOT_COUNT", "HEARTH_LOG_LEVEL"]);
}

#[tokio::test]
async fn command_line_errors_are_gos() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(dir.path(), &["--no-such-flag=1".to_string()], &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(2));
    assert!(stderr_of(dir.path()).starts_with("flag provided but not defined: -no-such-flag\n"));

    // A flag given both on the command line and in the environment is etcd's fatal conflict.
    let mut child = spawn(dir.path(), &["--name=a".to_string()], &[("ETCD_NAME", "b")]);
    assert_eq!(wait_exit(&mut child).code(), Some(1));
    assert!(stderr_of(dir.path()).contains("is shadowed by corresponding command-line flag"));
}
