//! TLS for Hearth's client and peer URLs and for dialing peers: etcd's `client/pkg/transport` and
//! `client/pkg/tlsutil`, on rustls with the ring provider (no OpenSSL, no aws-lc).
//!
//! # What is where
//!
//! | etcd | here |
//! |---|---|
//! | `transport.TLSInfo`, its checks | [`TlsInfo`] ([`TlsInfo::validate`]) |
//! | `tlsutil.GetCipherSuites`, `GetTLSVersion`, `Config.Validate` TLS checks | [`TlsOptions::new`] |
//! | `TLSInfo.ServerConfig` | [`ServerTls::new`] (a rustls `ServerConfig`) |
//! | `TLSInfo.ClientConfig` | [`ClientTls::new`] (a rustls `ClientConfig`) |
//! | `NewTLSListener`, `tlsListener` (concurrent handshakes, CRL, SAN checks) | [`Acceptor`], [`Incoming`], [`Conn`] |
//! | cmux serving `http` and `https` on one port | [`Acceptor::tls_and_plain`] |
//! | `SelfCert` (`--auto-tls`, `--peer-auto-tls`) | [`self_cert()`] |
//! | the https-without-certificates errors of `embed/etcd.go` | [`check_client_urls`], [`check_peer_urls`], [`check_metrics_urls`] |
//! | `AuthInfoFromTLS` (CN as user) | [`ConnInfo::common_name`] |
//! | `NewTransport` for peers | [`Connector`], [`endpoint()`] |
//!
//! # Behaviour
//!
//! - Files are read once when a configuration is built: a missing, unreadable or malformed file, or a key
//!   that does not match its certificate, is an error naming the file, so a member refuses to start.
//! - Certificates and keys, the trusted CA and the CRL are re-read when the files change (checked with a
//!   `stat` per handshake; see `reload` for what happens when a re-read fails).
//! - A server requires and verifies client certificates when a trusted CA file is given or
//!   client-cert-auth is on (etcd's rule), checks the CRL, then the allowed CNs or hostnames, all during
//!   the handshake; the peer role also checks that a client certificate's SANs match the remote address
//!   (etcd's `checkSAN`, off with `skip_client_san_verify`).
//! - A dialer applies the same allowed CNs or hostnames to the server's certificate (etcd puts one
//!   `VerifyPeerCertificate` in both its server and client configurations), so `--peer-cert-allowed-cn`
//!   also keeps a member from dialing a peer outside the rule; the dial fails with etcd's "client
//!   certificate authentication failed".
//! - Handshakes run concurrently with a timeout; a failed one drops its connection and is logged with
//!   etcd's "rejected connection on client endpoint" / "... peer endpoint" and the CN of the certificate
//!   presented. Nothing here panics on network or file input.
//! - `--cipher-suites` restricts TLS 1.2 (TLS 1.3 suites are always on, as in Go); suites rustls does not
//!   implement are dropped with a warning. `--tls-min-version` defaults to TLS 1.2.
//!
//! # Wiring
//!
//! Server (client URLs): build the [`TlsInfo`] from the flags, call [`check_client_urls`] at start, group
//! the URLs with [`group_listen_urls`], and for each group bind a `TcpListener` and build
//! `group.acceptor(Role::Client, Some(&ServerTls::new(&info, Role::Client)?))`. Serve
//! `acceptor.incoming(listener)` with `tonic::transport::Server::serve_with_incoming_shutdown`; the item
//! type [`Conn`] implements tonic's `Connected` with [`ConnInfo`], so a service reads
//! `request.extensions().get::<ConnInfo>()` (tonic's `Request::remote_addr()` is `None` with a custom
//! connect info). A stream wrapper such as the server's `:authority` filter wraps `Conn` and forwards
//! `Connected` to it. The auth layer takes [`ConnInfo::common_name`] as the user when
//! `client_cert_auth` is on and the request has no token (etcd ignores it for requests carrying the
//! `grpcgateway-accept` header). For hyper/axum outside tonic, serve each `Conn` with
//! `hyper_util::server::conn::auto::Builder` over `hyper_util::rt::TokioIo::new(conn)`.
//!
//! Peer URLs: the same with [`check_peer_urls`] and `Role::Peer`. Dialing peers (Raft streams, the
//! snapshot stream, forwarded requests, member-add checks): build one [`ClientTls`] from the peer
//! [`TlsInfo`] at start, then for each URL `let (ep, c) = endpoint(url, Some(&client_tls))?` and
//! `ep.connect_timeout(..).connect_with_connector(c)` (or `connect_with_connector_lazy`). The grpc-proxy
//! dials its upstream the same way with a [`TlsInfo`] made of `--cacert --cert --key`. No tonic TLS
//! feature is needed (nor wanted: `_tls-any` makes tonic refuse `https` URIs on custom connectors, which
//! is why [`endpoint()`] dials an `http` URI with an `https` origin).
//!
//! Auto TLS: when `--auto-tls` is set and no certificate is given, `self_cert(&data_dir.join("fixtures")
//! .join("client"), &listen_hosts, self_signed_cert_validity, options)` returns the [`TlsInfo`] to use
//! (the same for `--peer-auto-tls` under `fixtures/peer`); etcd logs "ignoring client auto TLS since certs
//! given" when both are set.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client_config;
mod coalesce;
mod dial;
mod error;
mod info;
mod listener_tls;
mod maybe_tls;
mod reload;
mod self_cert;
mod server_config;
pub mod testing;
mod tlsutil;
mod urls;
mod verify;

pub use client_config::ClientTls;
pub use dial::{endpoint, ClientConn, Connector};
pub use error::TlsError;
pub use info::TlsInfo;
pub use listener_tls::{Acceptor, Conn, ConnInfo, HandshakeError, Incoming, TlsConnInfo};
pub use maybe_tls::MaybeTls;
pub use self_cert::self_cert;
pub use server_config::{Role, ServerTls};
pub use tlsutil::{supported_cipher_suites, TlsOptions, TlsVersion};
pub use urls::{
    check_client_urls, check_metrics_urls, check_peer_urls, group_listen_urls, is_tls_scheme,
    scheme_of, url_needs_tls, ListenGroup,
};
pub use verify::CertSummary;

/// The rustls and tokio-rustls crates this one is built on, for callers that need their types.
pub use rustls;
pub use tokio_rustls;
