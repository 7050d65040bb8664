//! TLS end to end: the real `hearth` binary serving its client, metrics and peer URLs over TLS, driven by
//! etcdctl, curl and a gRPC client that dials through the `transport` crate. Every test makes its own
//! certificates (`transport::testing`). What is checked: TLS and mTLS clients, refusals (no client
//! certificate, a certificate of another CA), plaintext and TLS on one port, certificates rotated on disk
//! while the member runs, etcd's refusal of an https URL without certificates, `--auto-tls`, the client
//! certificate's CN as the user under auth, the JSON gateway over https (and, side by side with Debian's
//! etcd 3.4, `--host-whitelist` applying to plain text only and the gateway's refusal of a client
//! certificate with a CN under `--client-cert-auth` and auth), and a three-member cluster whose
//! peers use mTLS (a member with a certificate of another CA cannot join). The certificate policy flags:
//! `--client-crl-file` (a revoked certificate refused, the CRL re-read from disk when it changes),
//! `--peer-cert-allowed-cn` and `--peer-crl-file` (a joining member with another CN, or with a revoked
//! certificate, is refused while the others keep serving; a member whose peer server certificate has
//! another CN is not dialed, as etcd checks the CN on both ends), `--client-cert-allowed-hostname`,
//! `--tls-min-version`, `--tls-max-version` and `--cipher-suites` (what curl can negotiate, and etcd's
//! refusal of an unknown suite at start). Every refusal is also looked for in the accepting member's log,
//! by the presented certificate's serial and the reason.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use api::etcdserverpb::kv_client::KvClient;
use api::etcdserverpb::{PutRequest, RangeRequest};
use hearth_tests::poll;
use hearth_tests::ports::{reserve, reserve_n, Port};
use hearth_tests::server::{connect, etcdctl_command, hearth_bin, signal, ETCD_BIN};
use transport::testing::{Ca, CertSpec, Issued};

const DEADLINE: Duration = Duration::from_secs(30);

/// A certificate authority and the files of what it issued, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

/// A certificate and its key on disk.
#[derive(Clone)]
struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(name);
        transport::testing::write(dir.path(), "ca.pem", ca.cert_pem());
        Pki { dir, ca }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate named `cn`, valid for 127.0.0.1 and localhost, for server and client use.
    fn issue(&self, file: &str, cn: &str) -> Pair {
        self.issue_spec(file, &CertSpec::new(cn)).0
    }

    /// A certificate as `spec` says, with what a CRL needs to revoke it.
    fn issue_spec(&self, file: &str, spec: &CertSpec) -> (Pair, Issued) {
        let issued = self.ca.issue(spec);
        let (cert, key) = issued.write(self.dir.path(), file);
        (Pair { cert, key }, issued)
    }

    /// Writes (by renaming a new file over the old one) this CA's CRL revoking `revoked` to `file`.
    fn write_crl(&self, file: &str, revoked: &[&Issued]) -> PathBuf {
        let path = self.dir.path().join(file);
        let tmp = transport::testing::write(
            self.dir.path(),
            &format!("{file}.tmp"),
            &self.ca.crl_pem(revoked),
        );
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

/// `--cacert --cert --key` for etcdctl (and curl).
fn ctl_tls(ca: &Path, pair: Option<&Pair>) -> Vec<String> {
    let mut v = vec![format!("--cacert={}", ca.display())];
    if let Some(p) = pair {
        v.push(format!("--cert={}", p.cert.display()));
        v.push(format!("--key={}", p.key.display()));
    }
    v
}

fn curl_tls(ca: &Path, pair: Option<&Pair>) -> Vec<String> {
    let mut v = vec!["--cacert".to_string(), ca.display().to_string()];
    if let Some(p) = pair {
        v.extend([
            "--cert".to_string(),
            p.cert.display().to_string(),
            "--key".to_string(),
            p.key.display().to_string(),
        ]);
    }
    v
}

fn etcdctl(endpoint: &str, tls: &[String], args: &[&str]) -> Output {
    // Short timeouts (the last of a repeated flag wins): refusals are expected here.
    etcdctl_command(endpoint, &["--dial-timeout=3s", "--command-timeout=5s"])
        .args(tls)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run etcdctl")
}

fn ok(o: &Output) -> bool {
    o.status.success()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn curl(args: &[String]) -> Output {
    Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .args(args)
        .output()
        .expect("run curl")
}

/// curl's answer: the HTTP status (0 when there was none) and the body.
fn curl_reply(args: &[String]) -> (u16, String) {
    let o = curl(&[args, &["-w".to_string(), "\n%{http_code}".to_string()]].concat());
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A gRPC KV client over TLS with `ca` trusted and `pair` presented.
async fn tls_kv(
    url: &str,
    ca: &Path,
    pair: Option<&Pair>,
) -> Result<KvClient<tonic::transport::Channel>, String> {
    let info = transport::TlsInfo {
        cert_file: pair.map(|p| p.cert.clone()),
        key_file: pair.map(|p| p.key.clone()),
        trusted_ca_file: Some(ca.to_path_buf()),
        ..Default::default()
    };
    let tls = transport::ClientTls::new(&info).map_err(|e| e.to_string())?;
    let (ep, c) = transport::endpoint(url, Some(&tls)).map_err(|e| e.to_string())?;
    let ch = ep
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .connect_with_connector(c)
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(KvClient::new(ch))
}

async fn tls_get(url: &str, ca: &Path, pair: Option<&Pair>, key: &str) -> Result<String, String> {
    let mut kv = tls_kv(url, ca, pair).await?;
    let r = kv
        .range(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    Ok(r.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).to_string())
        .unwrap_or_default())
}

/// A `hearth` (or, for a side-by-side comparison, etcd) process with its data dir and its log
/// (stdout and stderr, appended across starts).
struct Member {
    dir: tempfile::TempDir,
    bin: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Member {
    fn spawn(args: Vec<String>) -> Member {
        Member::spawn_bin(hearth_bin(), args)
    }

    /// `bin` (`hearth_bin()` or `ETCD_BIN`) started with `args`.
    fn spawn_bin(bin: PathBuf, args: Vec<String>) -> Member {
        let dir = tempfile::Builder::new()
            .prefix("hearth-tls-")
            .tempdir()
            .unwrap();
        let mut m = Member {
            dir,
            bin,
            args,
            child: None,
        };
        m.start();
        m
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("log"))
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("--data-dir={}", self.data_dir().display()))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, _) in std::env::vars_os() {
            let k_str = k.to_string_lossy();
            if k_str.starts_with("ETCD_") || k_str.starts_with("HEARTH_") || k_str == "RUST_LOG" {
                cmd.env_remove(&k);
            }
        }
        self.child = Some(cmd.spawn().expect("spawn hearth"));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Panics with the log if the process has exited.
    fn assert_running(&mut self) {
        if let Some(c) = &mut self.child {
            if let Ok(Some(s)) = c.try_wait() {
                panic!("{} exited with {s}:\n{}", self.bin.display(), self.log());
            }
        }
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let c = self.child.as_mut().expect("running");
        let s = poll::eventually_blocking("hearth to exit", DEADLINE, || c.try_wait().unwrap());
        self.child = None;
        s
    }

    fn stop(&mut self) {
        let c = self.child.as_ref().expect("running");
        signal(c, rustix::process::Signal::TERM).unwrap();
        assert!(self.wait_exit().success(), "{}", self.log());
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A single member's flags with `client_urls` as its client URLs and a plaintext peer URL.
fn single(name: &str, client_urls: &str, peer: &Port, extra: &[String]) -> Vec<String> {
    let advertise = client_urls.split(',').next().unwrap();
    let mut v = vec![
        format!("--name={name}"),
        format!("--listen-client-urls={client_urls}"),
        format!("--advertise-client-urls={advertise}"),
        format!("--listen-peer-urls={}", peer.url()),
        format!("--initial-advertise-peer-urls={}", peer.url()),
        format!("--initial-cluster={name}={}", peer.url()),
    ];
    v.extend(extra.iter().cloned());
    v
}

fn server_tls_flags(pki: &Pki, server: &Pair) -> Vec<String> {
    vec![
        format!("--cert-file={}", server.cert.display()),
        format!("--key-file={}", server.key.display()),
        "--client-cert-auth".to_string(),
        format!("--trusted-ca-file={}", pki.ca_file().display()),
    ]
}

/// Waits until etcdctl with `tls` gets an answer from `endpoint`.
async fn wait_serving(m: &mut Member, endpoint: &str, tls: &[String]) {
    poll::eventually(
        format!("hearth to serve at {endpoint}"),
        DEADLINE,
        async || {
            m.assert_running();
            let o = etcdctl(endpoint, tls, &["get", "probe"]);
            ok(&o)
                .then_some(())
                .ok_or(String::from_utf8_lossy(&o.stderr).to_string())
        },
    )
    .await
}

/// Replaces a file the way a certificate manager does: a new file renamed over the old one.
fn replace(path: &Path, from: &Path) {
    let tmp = path.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn client_mtls_plaintext_beside_it_refusals_gateway_metrics_and_rotation() {
    let pki = Pki::new("client-ca");
    let other = Pki::new("other-ca");
    let server = pki.issue("server", "server");
    let client = pki.issue("client", "client");
    let intruder = other.issue("intruder", "client");
    let p = reserve_n(3);
    let (port, metrics) = (p[0].number(), p[1].number());
    let https = format!("https://127.0.0.1:{port}");
    let http = format!("http://127.0.0.1:{port}");
    let mut extra = server_tls_flags(&pki, &server);
    extra.push(format!("--listen-metrics-urls=https://127.0.0.1:{metrics}"));
    let mut m = Member::spawn(single("tls", &format!("{https},{http}"), &p[2], &extra));
    let mtls = ctl_tls(&pki.ca_file(), Some(&client));
    wait_serving(&mut m, &https, &mtls).await;

    // etcdctl and a gRPC client, both with a client certificate.
    assert!(ok(&etcdctl(&https, &mtls, &["put", "k", "v1"])));
    assert_eq!(
        stdout(&etcdctl(&https, &mtls, &["get", "k", "--print-value-only"])),
        "v1"
    );
    assert_eq!(
        tls_get(&https, &pki.ca_file(), Some(&client), "k")
            .await
            .unwrap(),
        "v1"
    );
    let mut kv = tls_kv(&https, &pki.ca_file(), Some(&client)).await.unwrap();
    kv.put(PutRequest {
        key: b"k".to_vec(),
        value: b"v2".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();

    // The same port answers plaintext too (http and https URLs on one address).
    assert_eq!(
        stdout(&etcdctl(&http, &[], &["get", "k", "--print-value-only"])),
        "v2"
    );

    // Under --client-cert-auth: no certificate, or one of another CA, is refused.
    let no_cert = ctl_tls(&pki.ca_file(), None);
    assert!(!ok(&etcdctl(&https, &no_cert, &["get", "k"])));
    assert!(tls_get(&https, &pki.ca_file(), None, "k").await.is_err());
    let foreign = ctl_tls(&pki.ca_file(), Some(&intruder));
    assert!(!ok(&etcdctl(&https, &foreign, &["get", "k"])));
    assert!(tls_get(&https, &pki.ca_file(), Some(&intruder), "k")
        .await
        .is_err());
    poll::eventually("the refusal in the log", DEADLINE, async || {
        m.log().contains("rejected connection on client endpoint")
    })
    .await;

    // The JSON gateway and the metrics URL over https.
    let body = curl(
        &[
            curl_tls(&pki.ca_file(), Some(&client)),
            vec![
                "-X".into(),
                "POST".into(),
                format!("{https}/v3/kv/range"),
                "-d".into(),
                r#"{"key":"aw=="}"#.into(),
            ],
        ]
        .concat(),
    );
    assert!(ok(&body), "{body:?}");
    assert!(stdout(&body).contains(r#""value":"djI=""#), "{body:?}");
    for page in ["/livez", "/readyz"] {
        let o = curl(
            &[
                curl_tls(&pki.ca_file(), Some(&client)),
                vec![format!("https://127.0.0.1:{metrics}{page}")],
            ]
            .concat(),
        );
        assert_eq!(stdout(&o), "ok", "{page}: {o:?}");
    }
    let o = curl(
        &[
            curl_tls(&pki.ca_file(), None),
            vec![format!("https://127.0.0.1:{metrics}/livez")],
        ]
        .concat(),
    );
    assert_ne!(
        stdout(&o),
        "ok",
        "the metrics URL wants a client certificate too"
    );

    // The server certificate replaced on disk (by one of a new CA) is served without a restart.
    let rotated = Pki::new("rotated-ca");
    let next = rotated.issue("server", "server");
    replace(&server.key, &next.key);
    replace(&server.cert, &next.cert);
    let via_new_ca = ctl_tls(&rotated.ca_file(), Some(&client));
    poll::eventually("the rotated certificate served", DEADLINE, async || {
        m.assert_running();
        let o = etcdctl(&https, &via_new_ca, &["get", "k", "--print-value-only"]);
        (stdout(&o) == "v2")
            .then_some(())
            .ok_or(String::from_utf8_lossy(&o.stderr).to_string())
    })
    .await;
    assert!(!ok(&etcdctl(&https, &mtls, &["get", "k"])));
    m.stop();
}

#[tokio::test]
async fn an_https_url_without_certificates_is_refused_at_start() {
    let p = reserve_n(2);
    let url = format!("https://127.0.0.1:{}", p[0].number());
    let mut m = Member::spawn(single("nocert", &url, &p[1], &[]));
    assert!(!m.wait_exit().success());
    let want = format!(
        "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
    );
    assert!(m.log().contains(&want), "{}", m.log());

    let p = reserve_n(3);
    let peer = format!("https://127.0.0.1:{}", p[1].number());
    let mut m = Member::spawn(vec![
        "--name=nocert".into(),
        format!("--listen-client-urls=http://127.0.0.1:{}", p[0].number()),
        format!("--advertise-client-urls=http://127.0.0.1:{}", p[0].number()),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=nocert={peer}"),
    ]);
    assert!(!m.wait_exit().success());
    let want = format!(
        "cannot listen on TLS for 127.0.0.1:{}: KeyFile and CertFile are not presented",
        p[1].number()
    );
    assert!(m.log().contains(&want), "{}", m.log());
}

#[tokio::test]
async fn auto_tls_serves_a_self_signed_certificate_on_client_and_peer_urls() {
    let p = reserve_n(3);
    let url = format!("https://127.0.0.1:{}", p[0].number());
    let peer = format!("https://127.0.0.1:{}", p[1].number());
    let http_url = format!("https://127.0.0.1:{}", p[2].number());
    let mut m = Member::spawn(vec![
        "--name=auto".into(),
        format!("--listen-client-urls={url}"),
        format!("--listen-client-http-urls={http_url}"),
        format!("--advertise-client-urls={url}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=auto={peer}"),
        "--auto-tls".into(),
        "--peer-auto-tls".into(),
    ]);
    // etcdctl 3.4 dials an https endpoint without TLS settings with Go's default (verifying)
    // configuration unless told --insecure-transport=false.
    let insecure = vec![
        "--insecure-transport=false".to_string(),
        "--insecure-skip-tls-verify".to_string(),
    ];
    wait_serving(&mut m, &url, &insecure).await;
    assert!(ok(&etcdctl(&url, &insecure, &["put", "a", "b"])));
    // The client HTTP URL serves the JSON gateway over https with the same certificate.
    let body = curl(&[
        "-k".into(),
        "-X".into(),
        "POST".into(),
        format!("{http_url}/v3/kv/range"),
        "-d".into(),
        r#"{"key":"YQ=="}"#.into(),
    ]);
    assert!(stdout(&body).contains(r#""value":"Yg==""#), "{body:?}");
    // The certificate is etcd's: under <data-dir>/fixtures, not trusted by a verifying client.
    let fixtures = m.data_dir().join("fixtures");
    for side in ["client", "peer"] {
        assert!(fixtures.join(side).join("cert.pem").is_file());
        assert!(fixtures.join(side).join("key.pem").is_file());
    }
    let ca = fixtures.join("client").join("cert.pem");
    let verified = etcdctl(
        &url,
        &["--insecure-transport=false".to_string()],
        &["get", "a"],
    );
    assert!(
        !ok(&verified),
        "a self-signed certificate is not trusted: {verified:?}"
    );
    // The same certificate is served again after a restart (the files are reused).
    let before = std::fs::read(&ca).unwrap();
    m.stop();
    m.start();
    wait_serving(&mut m, &url, &insecure).await;
    assert_eq!(std::fs::read(&ca).unwrap(), before);
    m.stop();
}

#[tokio::test]
async fn the_client_certificate_cn_is_the_user_under_auth() {
    let pki = Pki::new("auth-ca");
    let server = pki.issue("server", "server");
    let root = pki.issue("root", "root");
    let alice = pki.issue("alice", "alice");
    let p = reserve_n(2);
    let https = format!("https://127.0.0.1:{}", p[0].number());
    let mut m = Member::spawn(single(
        "cn",
        &https,
        &p[1],
        &server_tls_flags(&pki, &server),
    ));
    let as_root = ctl_tls(&pki.ca_file(), Some(&root));
    let as_alice = ctl_tls(&pki.ca_file(), Some(&alice));
    wait_serving(&mut m, &https, &as_root).await;
    for args in [
        vec!["user", "add", "root:rootpw"],
        vec!["user", "grant-role", "root", "root"],
        vec!["user", "add", "--no-password", "alice"],
        vec!["role", "add", "foo-writer"],
        vec!["role", "grant-permission", "foo-writer", "readwrite", "foo"],
        vec!["user", "grant-role", "alice", "foo-writer"],
        vec!["auth", "enable"],
    ] {
        let o = etcdctl(&https, &as_root, &args);
        assert!(ok(&o), "{args:?}: {o:?}");
    }
    // No token: the certificate's CN is the user.
    assert!(ok(&etcdctl(&https, &as_alice, &["put", "foo", "1"])));
    let denied = etcdctl(&https, &as_alice, &["put", "bar", "1"]);
    assert!(!ok(&denied));
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("permission denied"),
        "{denied:?}"
    );
    assert!(ok(&etcdctl(&https, &as_root, &["put", "bar", "1"])));
    // A token wins over the certificate: alice's certificate with root's password acts as root.
    assert!(ok(&etcdctl(
        &https,
        &as_alice,
        &["--user=root:rootpw", "put", "bar", "2"]
    )));
    // The JSON gateway refuses such a certificate: see
    // `the_gateway_refuses_a_client_certificate_cn_under_auth_as_etcd`.
    m.stop();
}

/// What `--host-whitelist=localhost` lets through on `bin`: a member with an `https://` and an
/// `http://` client URL; each answer as (what was asked, status, body). Bodies of successes are
/// left out (they carry member ids). (Two ports, not one serving both: etcd 3.4 may serve plain-text
/// gRPC, which its gateway dials, with its TLS server on such a port, a race in its `serve.go`.)
async fn whitelist_transcript(
    bin: PathBuf,
    pki: &Pki,
    server: &Pair,
) -> Vec<(String, u16, String)> {
    let p = reserve_n(3);
    let https = format!("https://127.0.0.1:{}", p[0].number());
    let http = format!("http://127.0.0.1:{}", p[1].number());
    let extra = vec![
        format!("--cert-file={}", server.cert.display()),
        format!("--key-file={}", server.key.display()),
        "--host-whitelist=localhost".to_string(),
    ];
    let mut m = Member::spawn_bin(bin, single("wl", &format!("{https},{http}"), &p[2], &extra));
    wait_serving(&mut m, &https, &ctl_tls(&pki.ca_file(), None)).await;
    let mut out = Vec::new();
    for (url, host) in [(&https, "other"), (&http, "other"), (&http, "localhost")] {
        let tls = if url == &https {
            curl_tls(&pki.ca_file(), None)
        } else {
            Vec::new()
        };
        for (path, post) in [("/health", false), ("/v3/kv/range", true)] {
            let mut args = tls.clone();
            args.extend(["-H".to_string(), format!("Host: {host}")]);
            if post {
                args.extend(["-X", "POST", "-d", r#"{"key":"Zm9v"}"#].map(String::from));
            }
            args.push(format!("{url}{path}"));
            let (status, body) = curl_reply(&args);
            let scheme = url.split(':').next().unwrap_or_default();
            let body = if status == 200 { String::new() } else { body };
            out.push((format!("{scheme} Host: {host} {path}"), status, body));
        }
    }
    // Killed on drop: etcd answers SIGTERM by re-raising it, which `stop` takes for a failure.
    drop(m);
    out
}

#[tokio::test]
async fn host_whitelist_applies_to_plain_text_only_as_in_etcd() {
    let pki = Pki::new("whitelist-ca");
    let server = pki.issue("server", "server");
    let hearth = whitelist_transcript(hearth_bin(), &pki, &server).await;
    let etcd = whitelist_transcript(PathBuf::from(ETCD_BIN), &pki, &server).await;
    assert_eq!(hearth, etcd);
    let statuses: Vec<u16> = hearth.iter().map(|(_, s, _)| *s).collect();
    // Over TLS a foreign Host is served; over plain text it is refused, localhost served.
    assert_eq!(statuses, [200, 200, 421, 421, 200, 200], "{hearth:#?}");
    assert!(
        hearth[2].2.contains("etcd --host-whitelist \"other\""),
        "{hearth:#?}"
    );
}

/// The gateway under `--client-cert-auth` on `bin`, before, while and after auth is enabled, with
/// a client certificate that has a CN (`alice`) and one that has none; each answer as (what was
/// asked, status, body or, for a success, whether the value of `foo` is in it). An `https://` and
/// an `http://` client URL on two ports, as in `whitelist_transcript`.
async fn gateway_cn_transcript(
    bin: PathBuf,
    pki: &Pki,
    server: &Pair,
) -> Vec<(String, u16, String)> {
    let root = pki.issue("root", "root");
    let alice = pki.issue("alice", "alice");
    let nameless = pki
        .issue_spec(
            "nameless",
            &CertSpec {
                cn: None,
                ..CertSpec::new("")
            },
        )
        .0;
    let p = reserve_n(3);
    let https = format!("https://127.0.0.1:{}", p[0].number());
    let http = format!("http://127.0.0.1:{}", p[1].number());
    let mut m = Member::spawn_bin(
        bin,
        single(
            "gwcn",
            &format!("{https},{http}"),
            &p[2],
            &server_tls_flags(pki, server),
        ),
    );
    let as_root = ctl_tls(&pki.ca_file(), Some(&root));
    wait_serving(&mut m, &https, &as_root).await;
    assert!(ok(&etcdctl(&https, &as_root, &["put", "foo", "bar"])));

    let mut out = Vec::new();
    // A POST of a Range of `foo` (or, to `/v3/auth/authenticate`, root's login) with the client
    // certificate `pair` and the token `token`; its body is returned and its summary recorded.
    let mut ask = |what: &str, url: &str, pair: Option<&Pair>, path: &str, token: Option<&str>| {
        let mut args = if url.starts_with("https") {
            curl_tls(&pki.ca_file(), pair)
        } else {
            Vec::new()
        };
        if let Some(t) = token {
            args.extend(["-H".to_string(), format!("Authorization: {t}")]);
        }
        let body = if path.ends_with("/authenticate") {
            r#"{"name":"root","password":"rootpw"}"#
        } else {
            r#"{"key":"Zm9v"}"#
        };
        args.extend(["-X", "POST", "-d", body].map(String::from));
        args.push(format!("{url}{path}"));
        let (status, body) = curl_reply(&args);
        let summary = if status == 200 {
            format!("foo=bar: {}", body.contains(r#""value":"YmFy""#))
        } else {
            body.clone()
        };
        out.push((what.to_string(), status, summary));
        body
    };
    let (range, beta, login) = ("/v3/kv/range", "/v3beta/kv/range", "/v3/auth/authenticate");
    let (cn, no_cn) = (Some(&alice), Some(&nameless));
    ask("auth off, CN", &https, cn, range, None);

    for args in [
        vec!["user", "add", "root:rootpw"],
        vec!["user", "grant-role", "root", "root"],
        vec!["auth", "enable"],
    ] {
        let o = etcdctl(&https, &as_root, &args);
        assert!(ok(&o), "{args:?}: {o:?}");
    }
    ask("auth on, CN", &https, cn, range, None);
    ask("auth on, CN, /v3beta", &https, cn, beta, None);
    // A certificate with a CN cannot even log in; one without a CN can, and uses the token.
    ask("auth on, CN, authenticate", &https, cn, login, None);
    let answer = ask("auth on, no CN, authenticate", &https, no_cn, login, None);
    let token = serde_json::from_str::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no token in {answer:?}"));
    let token = Some(token.as_str());
    ask("auth on, no CN, no token", &https, no_cn, range, None);
    ask("auth on, no CN, token", &https, no_cn, range, token);
    // The token does not help a certificate with a CN.
    ask("auth on, CN, token", &https, cn, range, token);
    // Plain text has no certificate to look at.
    ask("auth on, plain text, token", &http, None, range, token);

    let o = etcdctl(&https, &as_root, &["auth", "disable"]);
    assert!(ok(&o), "{o:?}");
    ask("auth off again, CN", &https, cn, range, None);
    // Killed on drop: etcd answers SIGTERM by re-raising it, which `stop` takes for a failure.
    drop(m);
    out
}

#[tokio::test]
async fn the_gateway_refuses_a_client_certificate_cn_under_auth_as_etcd() {
    let pki = Pki::new("gateway-cn-ca");
    let server = pki.issue("server", "server");
    let hearth = gateway_cn_transcript(hearth_bin(), &pki, &server).await;
    let etcd = gateway_cn_transcript(PathBuf::from(ETCD_BIN), &pki, &server).await;
    assert_eq!(hearth, etcd);
    let refused = (
        400,
        "CommonName of client sending a request against gateway will be ignored and not used as expected\n"
            .to_string(),
    );
    let answer = |what: &str| {
        hearth
            .iter()
            .find(|(w, _, _)| w == what)
            .map(|(_, s, b)| (*s, b.clone()))
            .unwrap_or_else(|| panic!("{what} not asked"))
    };
    let served = (200, "foo=bar: true".to_string());
    assert_eq!(answer("auth off, CN"), served);
    assert_eq!(answer("auth on, CN"), refused);
    assert_eq!(answer("auth on, CN, /v3beta"), refused);
    assert_eq!(answer("auth on, CN, authenticate"), refused);
    assert_eq!(answer("auth on, CN, token"), refused);
    assert_eq!(answer("auth on, no CN, token"), served);
    assert_eq!(answer("auth on, plain text, token"), served);
    assert_eq!(answer("auth off again, CN"), served);
    let (_, no_token) = answer("auth on, no CN, no token");
    assert!(no_token.contains("user name is empty"), "{hearth:#?}");
}

/// The flags of member `i` of a cluster (one member per entry of `ports`) with peer mTLS; client URLs
/// are plaintext.
fn peer_mtls_member(
    i: usize,
    ports: &[(Port, Port)],
    pki: &Pki,
    pair: &Pair,
    token: &str,
    extra: &[String],
) -> Vec<String> {
    let peer = |j: usize| format!("https://127.0.0.1:{}", ports[j].1.number());
    let initial = (0..ports.len())
        .map(|j| format!("m{j}={}", peer(j)))
        .collect::<Vec<_>>()
        .join(",");
    let client = ports[i].0.url();
    let mut v = vec![
        format!("--name=m{i}"),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={}", peer(i)),
        format!("--initial-advertise-peer-urls={}", peer(i)),
        format!("--initial-cluster={initial}"),
        format!("--initial-cluster-token={token}"),
        "--heartbeat-interval=50".into(),
        "--election-timeout=500".into(),
        format!("--peer-cert-file={}", pair.cert.display()),
        format!("--peer-key-file={}", pair.key.display()),
        "--peer-client-cert-auth".into(),
        format!("--peer-trusted-ca-file={}", pki.ca_file().display()),
    ];
    v.extend(extra.iter().cloned());
    v
}

async fn serializable_get(endpoint: &str, key: &str) -> Result<String, String> {
    let mut c = connect(endpoint).await.map_err(|e| e.to_string())?;
    let r = c
        .get(
            key,
            Some(etcd_client::GetOptions::new().with_serializable()),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).to_string())
        .unwrap_or_default())
}

/// Waits until the cluster has a leader, checking on the way that no member exited, and returns a
/// client of the first endpoint once `a=value` has been written through it.
async fn first_put(members: &mut [Member], endpoint: &str, value: &str) -> etcd_client::Client {
    poll::eventually("a leader", DEADLINE, async || {
        for m in members.iter_mut() {
            m.assert_running();
        }
        let mut c = connect(endpoint).await.map_err(|e| e.to_string())?;
        c.put("a", value, None).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(c)
    })
    .await
}

#[tokio::test]
async fn a_cluster_with_peer_mtls_elects_replicates_restarts_and_keeps_foreign_members_out() {
    let pki = Pki::new("peer-ca");
    let ports: Vec<(Port, Port)> = (0..3).map(|_| (reserve(), reserve())).collect();
    let token = format!("tls-{}-{}", std::process::id(), ports[0].0);
    let mut members: Vec<Member> = (0..3)
        .map(|i| {
            let pair = pki.issue(&format!("m{i}"), &format!("m{i}"));
            Member::spawn(peer_mtls_member(i, &ports, &pki, &pair, &token, &[]))
        })
        .collect();
    let endpoints: Vec<String> = ports.iter().map(|(c, _)| c.url()).collect();

    // Elected (a linearizable read needs a leader) and replicated.
    let mut c0 = first_put(&mut members, &endpoints[0], "1").await;
    for e in &endpoints {
        poll::eventually(format!("a replicated to {e}"), DEADLINE, async || {
            serializable_get(e, "a").await == Ok("1".into())
        })
        .await;
    }

    // A member restarted catches up over the TLS peer streams.
    members[1].stop();
    // The stopped member may have led: the put waits for the next leader.
    poll::eventually("a put with a member down", DEADLINE, async || {
        c0.put("b", "2", None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    members[1].start();
    poll::eventually("the restarted member catching up", DEADLINE, async || {
        members[1].assert_running();
        serializable_get(&endpoints[1], "b").await == Ok("2".into())
    })
    .await;

    // A member whose certificate comes from another CA cannot join: the cluster's peers refuse it.
    let other = Pki::new("other-ca");
    let intruder_pair = other.issue("m3", "m3");
    let p = reserve_n(2);
    let intruder_peer = format!("https://127.0.0.1:{}", p[1].number());
    // etcd refuses to add a member until the restarted one has been connected for a while.
    poll::eventually("the learner added", DEADLINE, async || {
        c0.member_add(
            [intruder_peer.as_str()],
            Some(etcd_client::MemberAddOptions::new().with_is_learner()),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    })
    .await;
    let initial = (0..3)
        .map(|j| format!("m{j}=https://127.0.0.1:{}", ports[j].1.number()))
        .chain([format!("m3={intruder_peer}")])
        .collect::<Vec<_>>()
        .join(",");
    let intruder = Member::spawn(vec![
        "--name=m3".into(),
        format!("--listen-client-urls={}", p[0].url()),
        format!("--advertise-client-urls={}", p[0].url()),
        format!("--listen-peer-urls={intruder_peer}"),
        format!("--initial-advertise-peer-urls={intruder_peer}"),
        format!("--initial-cluster={initial}"),
        "--initial-cluster-state=existing".into(),
        format!("--peer-cert-file={}", intruder_pair.cert.display()),
        format!("--peer-key-file={}", intruder_pair.key.display()),
        "--peer-client-cert-auth".into(),
        format!("--peer-trusted-ca-file={}", other.ca_file().display()),
    ]);
    poll::eventually("the foreign certificate refused", DEADLINE, async || {
        members
            .iter()
            .any(|m| m.log().contains("rejected connection on peer endpoint"))
    })
    .await;
    poll::eventually("the joining member refused", DEADLINE, async || {
        intruder.log().contains("could not get cluster information")
    })
    .await;
    let list = c0.member_list().await.unwrap();
    let learner = list
        .members()
        .iter()
        .find(|m| m.peer_urls().contains(&intruder_peer))
        .expect("the learner is listed");
    assert_eq!(learner.name(), "", "the foreign member never started");
    drop(intruder);
    for m in &mut members {
        m.stop();
    }
}

/// The logged reason of a refusal by a CRL.
const REVOKED: &str = "invalid peer certificate: Revoked";
/// The logged reason of a refusal by `--*-cert-allowed-cn` or `--*-cert-allowed-hostname` (etcd's words).
const NOT_ALLOWED: &str = "invalid peer certificate: client certificate authentication failed";

/// Whether `log` has a line refusing a connection on `endpoint` ("client" or "peer") from the certificate
/// with serial `serial` for a reason containing `why`; if not, the refusals it has.
fn refusal_logged(log: &str, endpoint: &str, serial: &[u8], why: &str) -> Result<(), String> {
    let serial: String = serial.iter().map(|b| format!("{b:02x}")).collect();
    let msg = format!("rejected connection on {endpoint} endpoint");
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains(&msg)).collect();
    refusals
        .iter()
        .any(|l| l.contains(&serial) && l.contains(why))
        .then_some(())
        .ok_or_else(|| format!("no refusal of serial {serial} for {why:?} in {refusals:#?}"))
}

#[tokio::test]
async fn a_client_crl_refuses_revoked_certificates_and_is_reread_when_it_changes() {
    let pki = Pki::new("crl-ca");
    let server = pki.issue("server", "server");
    let (good, good_cert) = pki.issue_spec("good", &CertSpec::new("good"));
    let (revoked, revoked_cert) = pki.issue_spec("revoked", &CertSpec::new("revoked"));
    let crl = pki.write_crl("crl.pem", &[&revoked_cert]);
    let p = reserve_n(2);
    let https = format!("https://127.0.0.1:{}", p[0].number());
    let mut extra = server_tls_flags(&pki, &server);
    extra.push(format!("--client-crl-file={}", crl.display()));
    let mut m = Member::spawn(single("crl", &https, &p[1], &extra));
    let as_good = ctl_tls(&pki.ca_file(), Some(&good));
    let as_revoked = ctl_tls(&pki.ca_file(), Some(&revoked));
    wait_serving(&mut m, &https, &as_good).await;
    assert!(ok(&etcdctl(&https, &as_good, &["put", "k", "v"])));

    // The revoked certificate is refused, and the refusal is logged with its serial.
    let o = etcdctl(&https, &as_revoked, &["get", "k"]);
    assert!(!ok(&o), "{o:?}");
    assert!(tls_get(&https, &pki.ca_file(), Some(&revoked), "k")
        .await
        .is_err());
    poll::eventually(
        "the revoked certificate's refusal logged",
        DEADLINE,
        async || refusal_logged(&m.log(), "client", &revoked_cert.serial, REVOKED),
    )
    .await;

    // A new CRL on disk, revoking the good certificate too, applies to new connections without a restart.
    pki.write_crl("crl.pem", &[&revoked_cert, &good_cert]);
    poll::eventually("the rewritten CRL applied", DEADLINE, async || {
        m.assert_running();
        let o = etcdctl(&https, &as_good, &["get", "k"]);
        (!ok(&o)).then_some(()).ok_or(stdout(&o))
    })
    .await;
    assert!(!ok(&etcdctl(&https, &as_revoked, &["get", "k"])));
    poll::eventually(
        "the good certificate's refusal logged",
        DEADLINE,
        async || refusal_logged(&m.log(), "client", &good_cert.serial, REVOKED),
    )
    .await;
    m.stop();
}

/// A member started with `--initial-cluster-state=existing` to join the cluster of `ports` (members
/// `m0`..) as `name`, with `pair` as its peer certificate and the cluster's CA.
fn joining_member(
    name: &str,
    ports: &[(Port, Port)],
    own: &[Port],
    pki: &Pki,
    pair: &Pair,
) -> Member {
    let peer = format!("https://127.0.0.1:{}", own[1].number());
    let initial = ports
        .iter()
        .enumerate()
        .map(|(j, (_, p))| format!("m{j}=https://127.0.0.1:{}", p.number()))
        .chain([format!("{name}={peer}")])
        .collect::<Vec<_>>()
        .join(",");
    Member::spawn(vec![
        format!("--name={name}"),
        format!("--listen-client-urls={}", own[0].url()),
        format!("--advertise-client-urls={}", own[0].url()),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster={initial}"),
        "--initial-cluster-state=existing".into(),
        format!("--peer-cert-file={}", pair.cert.display()),
        format!("--peer-key-file={}", pair.key.display()),
        "--peer-client-cert-auth".into(),
        format!("--peer-trusted-ca-file={}", pki.ca_file().display()),
    ])
}

#[tokio::test]
async fn peers_refuse_a_member_with_a_disallowed_cn_or_a_revoked_certificate() {
    let pki = Pki::new("peer-ca");
    let (stranger, stranger_cert) = pki.issue_spec("stranger", &CertSpec::new("stranger"));
    // The right CN, but revoked.
    let (revoked, revoked_cert) = pki.issue_spec("revoked", &CertSpec::new("member"));
    let crl = pki.write_crl("crl.pem", &[&revoked_cert]);
    let ports: Vec<(Port, Port)> = (0..2).map(|_| (reserve(), reserve())).collect();
    let token = format!("tls-policy-{}-{}", std::process::id(), ports[0].0);
    let policy = vec![
        "--peer-cert-allowed-cn=member".to_string(),
        format!("--peer-crl-file={}", crl.display()),
    ];
    let mut members: Vec<Member> = (0..2)
        .map(|i| {
            let pair = pki.issue(&format!("m{i}"), "member");
            Member::spawn(peer_mtls_member(i, &ports, &pki, &pair, &token, &policy))
        })
        .collect();
    let endpoints: Vec<String> = ports.iter().map(|(c, _)| c.url()).collect();
    let mut c0 = first_put(&mut members, &endpoints[0], "0").await;

    for (round, (name, pair, serial, why)) in [
        ("m2", &stranger, &stranger_cert.serial, NOT_ALLOWED),
        ("m3", &revoked, &revoked_cert.serial, REVOKED),
    ]
    .into_iter()
    .enumerate()
    {
        let own = reserve_n(2);
        let peer = format!("https://127.0.0.1:{}", own[1].number());
        // etcd refuses to add a member until the others have been connected for a while.
        let id = poll::eventually(format!("{name} added as a learner"), DEADLINE, async || {
            c0.member_add(
                [peer.as_str()],
                Some(etcd_client::MemberAddOptions::new().with_is_learner()),
            )
            .await
            .map_err(|e| e.to_string())?
            .member()
            .map(|m| m.id())
            .ok_or_else(|| "no member in the answer".to_string())
        })
        .await;
        let joiner = joining_member(name, &ports, &own, &pki, pair);
        poll::eventually(format!("{name}'s refusal logged"), DEADLINE, async || {
            members
                .iter()
                .map(|m| refusal_logged(&m.log(), "peer", serial, why))
                .reduce(|a, b| a.or(b))
                .unwrap()
        })
        .await;
        poll::eventually(format!("{name} refused"), DEADLINE, async || {
            joiner.log().contains("could not get cluster information")
        })
        .await;
        let list = c0.member_list().await.unwrap();
        let learner = list
            .members()
            .iter()
            .find(|m| m.id() == id)
            .expect("the learner is listed");
        assert_eq!(learner.name(), "", "{name} never started");
        // The two allowed members keep serving writes, and both have them.
        let value = round.to_string();
        c0.put("a", value.as_str(), None).await.unwrap();
        for e in &endpoints {
            poll::eventually(format!("a={value} at {e}"), DEADLINE, async || {
                serializable_get(e, "a").await == Ok(value.clone())
            })
            .await;
        }
        drop(joiner);
        c0.member_remove(id).await.unwrap();
    }
    for m in &mut members {
        m.stop();
    }
}

/// etcd checks `--peer-cert-allowed-cn` on the dialing end too. `m1` serves its peer URL with a
/// certificate of another CN but dials with an allowed one (`--peer-client-cert-file`): its stream to
/// `m0` is accepted, while `m0` refuses to dial it.
#[tokio::test]
async fn members_do_not_dial_a_peer_whose_server_certificate_has_a_disallowed_cn() {
    let pki = Pki::new("dial-ca");
    let ports: Vec<(Port, Port)> = (0..2).map(|_| (reserve(), reserve())).collect();
    let token = format!("tls-dial-{}-{}", std::process::id(), ports[0].0);
    let allowed = "--peer-cert-allowed-cn=member".to_string();
    let good = pki.issue("m0", "member");
    let mut m0 = Member::spawn(peer_mtls_member(
        0,
        &ports,
        &pki,
        &good,
        &token,
        std::slice::from_ref(&allowed),
    ));
    let server = pki.issue("m1-server", "stranger");
    let client = pki.issue("m1-client", "member");
    let mut m1 = Member::spawn(peer_mtls_member(
        1,
        &ports,
        &pki,
        &server,
        &token,
        &[
            allowed,
            format!("--peer-client-cert-file={}", client.cert.display()),
            format!("--peer-client-key-file={}", client.key.display()),
        ],
    ));
    poll::eventually("m1's stream to m0 accepted", DEADLINE, async || {
        m1.assert_running();
        m1.log().contains("peer became active")
    })
    .await;
    poll::eventually("m0 refusing to dial m1", DEADLINE, async || {
        m0.assert_running();
        m0.log().lines().any(|l| {
            l.contains("cannot stream to peer")
                && l.contains("client certificate authentication failed")
        })
    })
    .await;
    // Without a leader neither member finishes starting, and a TERM before then is not a clean stop
    // (the handler is installed once started): dropping the members kills them.
}

/// curl fetching `/version` from `url` with `ca` trusted and `args` added.
fn curl_version(url: &str, ca: &Path, args: &[&str]) -> Output {
    let mut v = curl_tls(ca, None);
    v.extend(args.iter().map(|a| a.to_string()));
    v.push(format!("{url}/version"));
    curl(&v)
}

fn served_version(o: &Output) -> bool {
    ok(o) && stdout(o).contains("etcdserver")
}

#[tokio::test]
async fn tls_versions_and_cipher_suites_limit_what_clients_can_negotiate() {
    let pki = Pki::new("versions-ca");
    let server = pki.issue("server", "server");
    let ca = pki.ca_file();
    let cert = vec![
        format!("--cert-file={}", server.cert.display()),
        format!("--key-file={}", server.key.display()),
    ];
    let no_cert = ctl_tls(&ca, None);

    // --tls-min-version TLS1.3: a client limited to TLS 1.2 is refused.
    let p = reserve_n(2);
    let https = format!("https://127.0.0.1:{}", p[0].number());
    let mut extra = cert.clone();
    extra.push("--tls-min-version=TLS1.3".into());
    let mut m = Member::spawn(single("tls13", &https, &p[1], &extra));
    wait_serving(&mut m, &https, &no_cert).await;
    let o = curl_version(&https, &ca, &["--tlsv1.3"]);
    assert!(served_version(&o), "{o:?}");
    let o = curl_version(&https, &ca, &["--tlsv1.2", "--tls-max", "1.2"]);
    assert!(!served_version(&o), "{o:?}");
    m.stop();

    // --tls-max-version TLS1.2 with one cipher suite (the certificates carry ECDSA keys): TLS 1.3 and
    // other suites are refused.
    let p = reserve_n(2);
    let https = format!("https://127.0.0.1:{}", p[0].number());
    let mut extra = cert.clone();
    extra.extend([
        "--tls-max-version=TLS1.2".to_string(),
        "--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".to_string(),
    ]);
    let mut m = Member::spawn(single("tls12", &https, &p[1], &extra));
    wait_serving(&mut m, &https, &no_cert).await;
    let tls12 = ["--tlsv1.2", "--tls-max", "1.2"];
    let o = curl_version(
        &https,
        &ca,
        &[&tls12[..], &["--ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384"]].concat(),
    );
    assert!(served_version(&o), "{o:?}");
    let o = curl_version(
        &https,
        &ca,
        &[&tls12[..], &["--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"]].concat(),
    );
    assert!(!served_version(&o), "{o:?}");
    let o = curl_version(&https, &ca, &["--tlsv1.3"]);
    assert!(!served_version(&o), "{o:?}");
    m.stop();

    // An unknown suite is refused at start, in etcd's words.
    let p = reserve_n(2);
    let https = format!("https://127.0.0.1:{}", p[0].number());
    let mut extra = cert.clone();
    extra.push("--cipher-suites=TLS_NOPE".into());
    let mut m = Member::spawn(single("nope", &https, &p[1], &extra));
    assert!(!m.wait_exit().success());
    assert!(
        m.log()
            .contains(r#"unexpected TLS cipher suite \"TLS_NOPE\""#),
        "{}",
        m.log()
    );
}

#[tokio::test]
async fn client_cert_allowed_hostname_refuses_certificates_for_other_names() {
    let pki = Pki::new("hostname-ca");
    let server = pki.issue("server", "server");
    let (named, _) = pki.issue_spec("named", &CertSpec::new("named").sans(&["good.example"]));
    let (other, other_cert) =
        pki.issue_spec("other", &CertSpec::new("other").sans(&["bad.example"]));
    let p = reserve_n(2);
    let https = format!("https://127.0.0.1:{}", p[0].number());
    let mut extra = server_tls_flags(&pki, &server);
    extra.push("--client-cert-allowed-hostname=good.example".into());
    let mut m = Member::spawn(single("hostname", &https, &p[1], &extra));
    let as_named = ctl_tls(&pki.ca_file(), Some(&named));
    wait_serving(&mut m, &https, &as_named).await;
    assert!(ok(&etcdctl(&https, &as_named, &["put", "k", "v"])));
    let o = etcdctl(
        &https,
        &ctl_tls(&pki.ca_file(), Some(&other)),
        &["get", "k"],
    );
    assert!(!ok(&o), "{o:?}");
    poll::eventually("the refusal logged", DEADLINE, async || {
        refusal_logged(&m.log(), "client", &other_cert.serial, NOT_ALLOWED)
    })
    .await;
    m.stop();
}
