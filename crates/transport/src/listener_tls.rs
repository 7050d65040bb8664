//! etcd's `tlsListener`: accepted TCP connections handshaken concurrently, checked, and handed to the
//! server (tonic, hyper, axum) as ready streams.
//!
//! Every accepted connection gets its own task for the handshake, bounded by a timeout, so a client that
//! connects and sends nothing (or dribbles bytes) never holds up the next one. A handshake that fails
//! (plaintext on a TLS port, garbage, a certificate from another CA, revoked, expired, not yet valid, a
//! refused CN or hostname, a SAN that does not match the peer's address) drops that connection and is
//! logged with etcd's message ("rejected connection on client endpoint" / "... peer endpoint"), the
//! remote address and the CN and SANs of the certificate presented, if any. The number of handshakes in
//! flight is capped; beyond the cap new connections are closed at once (and logged) rather than queued,
//! which keeps memory bounded under a flood without ever stalling `accept`.
//!
//! When one address is listed both as `http://` and `https://` (etcd serves both on one port through
//! cmux), [`Acceptor::tls_and_plain`] looks at the first byte: a TLS record starts with 0x16 (handshake),
//! which no HTTP/1 method and not the HTTP/2 preface does.
//!
//! The resulting [`Conn`] implements tonic's `Connected` with [`ConnInfo`], which services read from a
//! request's extensions (`req.extensions().get::<ConnInfo>()`): addresses, the verified client
//! certificate chain and its CN (the user name under `--client-cert-auth`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::coalesce::Coalesce;
use crate::maybe_tls::MaybeTls;
use crate::server_config::{Role, ServerTls};
use crate::verify::{self, CertSummary, Slot};

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

#[derive(Clone, Debug)]
enum Mode {
    Plain,
    Tls(ServerTls),
    Both(ServerTls),
}

/// Turns accepted TCP connections into [`Conn`]s: plaintext, TLS, or either by sniffing.
#[derive(Clone, Debug)]
pub struct Acceptor {
    mode: Mode,
    role: Role,
    handshake_timeout: Duration,
    max_pending: usize,
}

/// Why one connection was not accepted.
#[derive(Debug)]
pub struct HandshakeError {
    /// What failed, as rustls or our checks say it.
    pub error: String,
    /// The certificate the peer presented, if it got that far.
    pub presented: Option<CertSummary>,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

impl std::error::Error for HandshakeError {}

impl HandshakeError {
    fn new(error: impl Into<String>) -> Self {
        HandshakeError {
            error: error.into(),
            presented: None,
        }
    }
}

impl Acceptor {
    /// Default time a client has to complete its handshake.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default cap on handshakes in flight.
    pub const DEFAULT_MAX_PENDING: usize = 1024;

    fn new(mode: Mode, role: Role) -> Acceptor {
        Acceptor {
            mode,
            role,
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            max_pending: Self::DEFAULT_MAX_PENDING,
        }
    }

    /// Plaintext only (`http://` URLs).
    pub fn plain(role: Role) -> Acceptor {
        Acceptor::new(Mode::Plain, role)
    }

    /// TLS only (`https://` URLs).
    pub fn tls(tls: ServerTls) -> Acceptor {
        let role = tls.role();
        Acceptor::new(Mode::Tls(tls), role)
    }

    /// TLS or plaintext on one port, told apart by the first byte (an address given both as `http://`
    /// and `https://`).
    pub fn tls_and_plain(tls: ServerTls) -> Acceptor {
        let role = tls.role();
        Acceptor::new(Mode::Both(tls), role)
    }

    /// Sets the time a client has to send its first bytes and complete the handshake.
    pub fn handshake_timeout(mut self, d: Duration) -> Acceptor {
        self.handshake_timeout = d;
        self
    }

    /// Sets how many handshakes may be in flight at once.
    pub fn max_pending_handshakes(mut self, n: usize) -> Acceptor {
        self.max_pending = n.max(1);
        self
    }

    /// Handshakes and checks one accepted connection (no logging: see [`Acceptor::incoming`]).
    pub async fn accept(&self, tcp: TcpStream) -> Result<Conn, HandshakeError> {
        let _ = tcp.set_nodelay(true);
        let base = ConnInfo {
            local_addr: tcp.local_addr().ok(),
            remote_addr: tcp.peer_addr().ok(),
            tls: None,
        };
        let slot = Slot::default();
        let work = async {
            match &self.mode {
                Mode::Plain => Ok(Conn::plain(tcp, base.clone())),
                Mode::Tls(tls) => self.handshake(tls, tcp, base.clone(), slot.clone()).await,
                Mode::Both(tls) => {
                    let mut first = [0u8; 1];
                    let n = tcp
                        .peek(&mut first)
                        .await
                        .map_err(|e| HandshakeError::new(e.to_string()))?;
                    if n == 0 {
                        Err(HandshakeError::new("connection closed before any byte"))
                    } else if first[0] == TLS_HANDSHAKE_RECORD {
                        self.handshake(tls, tcp, base.clone(), slot.clone()).await
                    } else {
                        Ok(Conn::plain(tcp, base.clone()))
                    }
                }
            }
        };
        match tokio::time::timeout(self.handshake_timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(HandshakeError {
                error: format!(
                    "TLS handshake not completed within {:?}",
                    self.handshake_timeout
                ),
                presented: slot.lock().ok().and_then(|mut s| s.take()),
            }),
        }
    }

    async fn handshake(
        &self,
        tls: &ServerTls,
        tcp: TcpStream,
        mut info: ConnInfo,
        slot: Slot,
    ) -> Result<Conn, HandshakeError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
        let stream = verify::with_presented_slot(slot.clone(), acceptor.accept(tcp))
            .await
            .map_err(|e| HandshakeError {
                error: describe(&e),
                presented: slot.lock().ok().and_then(|mut s| s.take()),
            })?;
        let (_, session) = stream.get_ref();
        let peer_certificates: Vec<CertificateDer<'static>> = session
            .peer_certificates()
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let peer = peer_certificates
            .first()
            .and_then(|c| CertSummary::parse(c));
        if let (true, Some(p), Some(remote)) = (tls.check_san(), &peer, info.remote_addr) {
            if let Err(e) = verify::check_cert_san(p, remote.ip()).await {
                return Err(HandshakeError {
                    error: e,
                    presented: peer,
                });
            }
        }
        info.tls = Some(Arc::new(TlsConnInfo {
            peer_certificates,
            peer,
            alpn: session.alpn_protocol().map(<[u8]>::to_vec),
            version: session.protocol_version().map(|v| format!("{v:?}")),
            cipher_suite: session
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite())),
            server_name: session.server_name().map(str::to_string),
        }));
        Ok(Conn {
            io: Coalesce::new(ConnIo::Tls(Box::new(stream))),
            info,
        })
    }

    /// Accepts connections from `listener` until the returned stream is dropped. Items are never
    /// errors: failed handshakes and accept errors are logged and skipped, so a server consuming the
    /// stream (tonic's `serve_with_incoming`) keeps running.
    pub fn incoming(self, listener: TcpListener) -> Incoming {
        let local_addr = listener.local_addr().ok();
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(accept_loop(Arc::new(self), listener, tx));
        Incoming {
            rx,
            task,
            local_addr,
        }
    }

    fn log_rejection(&self, remote: Option<SocketAddr>, e: &HandshakeError) {
        let remote = remote.map(|a| a.to_string()).unwrap_or_default();
        match &e.presented {
            Some(c) => tracing::warn!(
                remote_addr = %remote,
                common_name = c.common_name.as_deref().unwrap_or(""),
                ip_addresses = ?c.ip_addresses,
                dns_names = ?c.dns_names,
                serial = %c.serial,
                error = %e.error,
                "{}",
                self.role.rejected_message()
            ),
            None => tracing::warn!(
                remote_addr = %remote,
                error = %e.error,
                "{}",
                self.role.rejected_message()
            ),
        }
    }
}

/// The reason a handshake failed, with our own refusals (allowed CN/hostname) in plain words instead of
/// rustls' debug form of a foreign error.
fn describe(e: &io::Error) -> String {
    let Some(inner) = e.get_ref() else {
        return e.to_string();
    };
    match inner.downcast_ref::<rustls::Error>() {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) => {
            format!("invalid peer certificate: {}", o.0)
        }
        Some(r) => r.to_string(),
        None => e.to_string(),
    }
}

async fn accept_loop(acceptor: Arc<Acceptor>, listener: TcpListener, tx: mpsc::Sender<Conn>) {
    let pending = Arc::new(Semaphore::new(acceptor.max_pending));
    let mut handshakes = JoinSet::new();
    // Go's net/http backs off the same way on accept errors (EMFILE and the like).
    let mut backoff = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    backoff = Duration::ZERO;
                    if matches!(acceptor.mode, Mode::Plain) {
                        if let Ok(conn) = acceptor.accept(tcp).await {
                            if tx.send(conn).await.is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                    let Ok(permit) = pending.clone().try_acquire_owned() else {
                        tracing::warn!(
                            remote_addr = %remote,
                            max = acceptor.max_pending,
                            "{}: too many TLS handshakes in flight",
                            acceptor.role.rejected_message()
                        );
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    handshakes.spawn(async move {
                        let result = acceptor.accept(tcp).await;
                        drop(permit);
                        match result {
                            Ok(conn) => {
                                let _ = tx.send(conn).await;
                            }
                            Err(e) => acceptor.log_rejection(Some(remote), &e),
                        }
                    });
                }
                Err(e) => {
                    backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                    tracing::warn!(error = %e, retry_in = ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }
}

/// The stream of accepted connections of one listener (for tonic's `serve_with_incoming`). Dropping it
/// stops accepting, closes the listener and abandons handshakes in flight.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Conn>,
    task: JoinHandle<()>,
    local_addr: Option<SocketAddr>,
}

impl Incoming {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures::Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(Ok))
    }
}

/// What a service can learn about the connection a request came on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    local_addr: Option<SocketAddr>,
    remote_addr: Option<SocketAddr>,
    tls: Option<Arc<TlsConnInfo>>,
}

/// The TLS side of a connection.
#[derive(Debug)]
pub struct TlsConnInfo {
    /// The verified client certificate chain (empty when none was asked for).
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// The end-entity client certificate, parsed.
    pub peer: Option<CertSummary>,
    /// The negotiated application protocol.
    pub alpn: Option<Vec<u8>>,
    /// The negotiated protocol version.
    pub version: Option<String>,
    /// The negotiated cipher suite.
    pub cipher_suite: Option<String>,
    /// The server name the client asked for (SNI).
    pub server_name: Option<String>,
}

impl ConnInfo {
    /// The local address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The client's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// What a connection with these properties would report: for in-process front ends and
    /// for tests of what services do with a client certificate.
    pub fn new(
        local_addr: Option<SocketAddr>,
        remote_addr: Option<SocketAddr>,
        tls: Option<TlsConnInfo>,
    ) -> ConnInfo {
        ConnInfo {
            local_addr,
            remote_addr,
            tls: tls.map(Arc::new),
        }
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// TLS details, for TLS connections.
    pub fn tls(&self) -> Option<&TlsConnInfo> {
        self.tls.as_deref()
    }

    /// The common name of the client certificate the server verified, if any: etcd's
    /// `AuthInfoFromTLS` user under `--client-cert-auth`.
    pub fn common_name(&self) -> Option<&str> {
        self.tls
            .as_ref()?
            .peer
            .as_ref()?
            .common_name
            .as_deref()
            .filter(|cn| !cn.is_empty())
    }
}

type ConnIo = MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

/// An accepted connection, plaintext or TLS, ready for a server.
pub struct Conn {
    /// Writes are coalesced per flush: see [`crate::coalesce`].
    io: Coalesce<ConnIo>,
    info: ConnInfo,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("info", &self.info).finish()
    }
}

impl Conn {
    fn plain(tcp: TcpStream, info: ConnInfo) -> Conn {
        Conn {
            io: Coalesce::new(ConnIo::Plain(tcp)),
            info,
        }
    }

    /// What is known about the connection.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
