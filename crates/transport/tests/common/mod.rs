//! Shared by the transport integration tests: a test PKI on disk, a TLS echo server built on the
//! crate's acceptor, a client built on the crate's client configuration, and a log capture to check
//! what refusals say.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::Context as _;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use transport::testing::{Ca, CertSpec, Issued};
use transport::{Acceptor, ClientTls, TlsInfo, TlsOptions};

/// A CA and its files in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub ca_file: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ca = Ca::new(&format!("hearth test CA {n}"));
        let ca_file = transport::testing::write(dir.path(), "ca.pem", ca.cert_pem());
        Pki { dir, ca, ca_file }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Issues `spec` and writes it as `<name>.pem`/`<name>-key.pem`.
    pub fn issue(&self, spec: &CertSpec, name: &str) -> (Issued, PathBuf, PathBuf) {
        let issued = self.ca.issue(spec);
        let (c, k) = issued.write(self.path(), name);
        (issued, c, k)
    }

    /// Server info with a fresh server certificate; verifies client certificates against this CA.
    pub fn server_info(&self, client_cert_auth: bool) -> TlsInfo {
        let (_, c, k) = self.issue(&CertSpec::new("server"), "server");
        TlsInfo {
            cert_file: Some(c),
            key_file: Some(k),
            trusted_ca_file: client_cert_auth.then(|| self.ca_file.clone()),
            client_cert_auth,
            ..Default::default()
        }
    }

    /// Client info trusting this CA and presenting a certificate named `cn` (none if `cn` is None).
    pub fn client_info(&self, cn: Option<&str>) -> TlsInfo {
        let mut info = TlsInfo {
            trusted_ca_file: Some(self.ca_file.clone()),
            ..Default::default()
        };
        if let Some(cn) = cn {
            let (_, c, k) = self.issue(&CertSpec::new(cn), &format!("client-{cn}"));
            info.cert_file = Some(c);
            info.key_file = Some(k);
        }
        info
    }
}

pub fn options(suites: &[&str], min: &str, max: &str) -> TlsOptions {
    let s: Vec<String> = suites.iter().map(|s| s.to_string()).collect();
    TlsOptions::new(&s, min, max).unwrap()
}

/// Serves `acceptor` on a loopback port: each connection is greeted with `hello <cn or -> <alpn or ->`
/// and then every line is echoed back.
pub async fn echo_server(acceptor: Acceptor) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming = acceptor.incoming(listener);
    tokio::spawn(async move {
        while let Some(Ok(conn)) = incoming.next().await {
            tokio::spawn(async move {
                let info = conn.info().clone();
                let cn = info.common_name().unwrap_or("-").to_string();
                let alpn = info
                    .tls()
                    .and_then(|t| t.alpn.clone())
                    .map(|a| String::from_utf8_lossy(&a).into_owned())
                    .unwrap_or_else(|| "-".into());
                let (r, mut w) = tokio::io::split(conn);
                // A `Conn` holds what is written until a flush.
                if send(&mut w, format!("hello {cn} {alpn}\n")).await.is_err() {
                    return;
                }
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if send(&mut w, format!("{line}\n")).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn send(w: &mut (impl AsyncWrite + Unpin), line: String) -> std::io::Result<()> {
    w.write_all(line.as_bytes()).await?;
    w.flush().await
}

/// Connects with `tls`, reads the greeting, sends a line and reads its echo; returns the greeting.
pub async fn exchange(addr: SocketAddr, tls: &ClientTls) -> anyhow::Result<String> {
    exchange_with(addr, tls, "127.0.0.1").await
}

pub async fn exchange_with(
    addr: SocketAddr,
    tls: &ClientTls,
    host: &str,
) -> anyhow::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let name = tls.server_name(host)?;
    let stream = tokio_rustls::TlsConnector::from(tls.config())
        .connect(name, tcp)
        .await
        .context("handshake")?;
    let (r, mut w) = tokio::io::split(stream);
    let mut lines = BufReader::new(r).lines();
    let greeting = lines
        .next_line()
        .await
        .context("greeting")?
        .context("closed before greeting")?;
    w.write_all(b"ping\n").await?;
    let echo = lines.next_line().await?.context("closed before echo")?;
    anyhow::ensure!(echo == "ping", "echo was {echo:?}");
    Ok(greeting)
}

pub fn client(info: &TlsInfo) -> ClientTls {
    ClientTls::new(info).unwrap()
}

/// Everything logged by this test binary (a global subscriber writing into memory).
pub fn logs() -> String {
    String::from_utf8_lossy(&LOG.get_or_init(init_logs).lock().unwrap()).into_owned()
}

pub fn capture_logs() {
    LOG.get_or_init(init_logs);
}

static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(l) = LOG.get() {
            l.lock().unwrap().extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() -> Mutex<Vec<u8>> {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| LogWriter)
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .try_init();
    Mutex::new(Vec::new())
}
