//! TLS of the member's listeners and of its dials to peers, built once at start from the flags with
//! the `transport` crate (etcd's `embed` does the same with `TLSInfo`).
//!
//! - Auto TLS (`--auto-tls`, `--peer-auto-tls`): when no certificate is given, the side's `TlsInfo` is
//!   replaced by a self-signed one under `<data-dir>/fixtures/{client,peer}` naming every listen host,
//!   as etcd's `ClientSelfCert`/`PeerSelfCert`; with certificates given it is ignored (and logged).
//!   The replaced info is written back into the member's `Config`, so everything downstream (the auth
//!   layer's CN-as-user rule included) sees what is served.
//! - A server configuration is built only for a side that serves some `https` URL: an `http` URL
//!   with certificates configured is served in plaintext, as etcd does (it warns at start).
//! - Listen URLs are bound once per `host:port` (`transport::group_listen_urls`): an address given as
//!   both `http://` and `https://` serves both on one port.
//! - Peers are dialed with one `ClientTls` made of the peer flags (the peer certificate, or
//!   `--peer-client-cert-file`, is presented; servers are verified against `--peer-trusted-ca-file`,
//!   or not at all with auto TLS) and `--peer-cert-allowed-cn`/`--peer-cert-allowed-hostname` apply to
//!   the peer's server certificate as they do to client certificates on the peer listener, as in etcd.
//!   Without peer certificates the system's CAs verify `https` peers, as Go's default TLS configuration
//!   would; a machine without a CA bundle cannot dial them.
//!
//! Certificates, keys, CAs and CRLs are re-read by `transport` when the files change, so rotating
//! them on disk needs no restart.

use std::net::SocketAddr;

use transport::{ClientTls, Role, ServerTls, TlsInfo};

use crate::{config, listener, Config, StartError};

/// What the member serves and dials with.
pub(crate) struct MemberTls {
    /// For the client, client HTTP and metrics URLs given as `https`.
    pub(crate) client: Option<ServerTls>,
    /// For the peer URLs given as `https`.
    pub(crate) peer: Option<ServerTls>,
    /// For dialing `https` peer URLs.
    pub(crate) peer_dial: Option<ClientTls>,
}

/// Applies `--auto-tls` and `--peer-auto-tls` to `cfg` (etcd's `ClientSelfCert` and `PeerSelfCert`)
/// and runs etcd's checks of https URLs on the result.
pub(crate) fn apply_auto_tls(cfg: &mut Config) -> Result<(), StartError> {
    if cfg.client_auto_tls {
        if cfg.client_tls.is_empty() {
            let hosts = hosts(
                cfg.listen_client_urls
                    .iter()
                    .chain(&cfg.listen_client_http_urls),
            );
            let options = cfg.client_tls.options.clone();
            cfg.client_tls = transport::self_cert(
                &cfg.data_dir.join("fixtures").join("client"),
                &hosts,
                cfg.self_signed_cert_validity,
                options,
            )?;
            let urls: Vec<String> = cfg
                .listen_client_urls
                .iter()
                .chain(&cfg.listen_client_http_urls)
                .cloned()
                .collect();
            transport::check_client_urls(&urls, &cfg.client_tls)?;
        } else {
            tracing::warn!("ignoring client auto TLS since certs given");
        }
    }
    if cfg.peer_auto_tls {
        if cfg.peer_tls.is_empty() {
            let hosts = hosts(cfg.listen_peer_urls.iter());
            let options = cfg.peer_tls.options.clone();
            cfg.peer_tls = transport::self_cert(
                &cfg.data_dir.join("fixtures").join("peer"),
                &hosts,
                cfg.self_signed_cert_validity,
                options,
            )?;
            transport::check_peer_urls(&cfg.listen_peer_urls, &cfg.peer_tls)?;
        } else {
            tracing::warn!("ignoring peer auto TLS since certs given");
        }
    }
    Ok(())
}

/// The `host:port` parts of URLs.
fn hosts<'a>(urls: impl Iterator<Item = &'a String>) -> Vec<String> {
    urls.filter_map(|u| {
        let rest = u.split_once("://")?.1;
        Some(rest.split('/').next().unwrap_or(rest).to_string())
    })
    .collect()
}

impl MemberTls {
    /// Reads the certificates the member serves and dials with; an unusable file is an error
    /// naming it.
    pub(crate) fn new(cfg: &Config) -> Result<MemberTls, StartError> {
        let client_needed = cfg
            .listen_client_urls
            .iter()
            .chain(&cfg.listen_client_http_urls)
            .chain(&cfg.listen_metrics_urls)
            .any(|u| transport::url_needs_tls(u));
        let client = if client_needed {
            Some(ServerTls::new(&cfg.client_tls, Role::Client)?)
        } else {
            None
        };
        let peer = if cfg
            .listen_peer_urls
            .iter()
            .any(|u| transport::url_needs_tls(u))
        {
            Some(ServerTls::new(&cfg.peer_tls, Role::Peer)?)
        } else {
            None
        };
        let peer_dial = if cfg.peer_tls.is_empty() && cfg.peer_tls.trusted_ca_file.is_none() {
            // Plain peers need nothing; https peers are verified against the system's CAs.
            ClientTls::new(&TlsInfo {
                options: cfg.peer_tls.options.clone(),
                ..TlsInfo::default()
            })
            .ok()
        } else {
            Some(ClientTls::new(&cfg.peer_tls)?)
        };
        Ok(MemberTls {
            client,
            peer,
            peer_dial,
        })
    }
}

/// A bound listen address, not yet accepting.
pub(crate) struct Bound {
    listener: tokio::net::TcpListener,
    acceptor: transport::Acceptor,
}

impl Bound {
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Starts accepting (and handshaking) connections.
    pub(crate) fn incoming(self) -> transport::Incoming {
        self.acceptor.incoming(self.listener)
    }
}

/// Binds each address of `urls` once, with the acceptor its schemes ask for.
pub(crate) fn bind(
    cfg: &Config,
    urls: &[String],
    role: Role,
    tls: Option<&ServerTls>,
) -> Result<Vec<Bound>, StartError> {
    let mut out = Vec::new();
    for group in transport::group_listen_urls(urls)? {
        let addr = config::listen_addr(&group.urls[0])?;
        let acceptor = group.acceptor(role, tls)?;
        let listener = listener::listen(addr, cfg).map_err(|e| StartError::Listen(addr, e))?;
        out.push(Bound { listener, acceptor });
    }
    Ok(out)
}
