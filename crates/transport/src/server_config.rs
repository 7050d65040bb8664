//! etcd's `TLSInfo.ServerConfig`: the rustls configuration a client or peer listener serves with.
//!
//! One `ServerConfig` per listener role, built once at start; what changes on disk is picked up through
//! its certificate resolver and client-certificate verifier (see `reload`), so the configuration object
//! itself never needs rebuilding and can be shared by every connection.

use std::sync::Arc;

use rustls::ServerConfig;

use crate::error::TlsError;
use crate::info::TlsInfo;
use crate::reload::{ClientVerifier, KeyPairSource};
use crate::tlsutil;
use crate::verify::Policy;

/// Which listener a configuration is for: it decides ALPN, etcd's SAN check and the log message of
/// refused connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Client URLs: gRPC (`h2`) and the HTTP/JSON endpoints (`http/1.1`).
    Client,
    /// Peer URLs: Hearth's peer service over `h2` only; a client certificate's SANs must match the
    /// connection's address unless `skip_client_san_verify`.
    Peer,
}

impl Role {
    pub(crate) fn rejected_message(self) -> &'static str {
        match self {
            Role::Client => "rejected connection on client endpoint",
            Role::Peer => "rejected connection on peer endpoint",
        }
    }
}

/// A server-side TLS configuration, ready for [`crate::Acceptor`].
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    role: Role,
    check_san: bool,
}

impl ServerTls {
    /// Builds the configuration, reading every file once: a missing, unreadable or malformed file, or a
    /// key that does not match its certificate, is an error naming the file. etcd's checks of
    /// [`TlsInfo::validate`] apply.
    pub fn new(info: &TlsInfo, role: Role) -> Result<ServerTls, TlsError> {
        info.validate()?;
        let (Some(cert), Some(key)) = (&info.cert_file, &info.key_file) else {
            return Err(TlsError::Config(
                "KeyFile and CertFile must both be present".into(),
            ));
        };
        let provider = info.options.provider();
        let source = KeyPairSource::load(cert, key, provider.clone())?;
        // etcd checks the explicit client pair at start too, so a bad one fails now, not at the first
        // dial.
        if let (Some(c), Some(k)) = (&info.client_cert_file, &info.client_key_file) {
            tlsutil::load_key_pair(c, k, &provider)?;
        }
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&info.options.versions())?;
        let builder = if info.verifies_clients() {
            let verifier = ClientVerifier::load(
                info.trusted_ca_file.as_deref(),
                info.crl_file.as_deref(),
                provider,
                Policy::of(info),
            )?;
            builder.with_client_cert_verifier(Arc::new(verifier))
        } else {
            if info.crl_file.is_some()
                || !info.allowed_cns.is_empty()
                || !info.allowed_hostnames.is_empty()
            {
                tracing::warn!(
                    "a CRL file or allowed CNs/hostnames are set, but client certificates are not \
                     requested (no trusted CA file and no client-cert-auth); they have no effect"
                );
            }
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(Arc::new(source));
        // No session resumption: a resumed session skips certificate verification, so a client whose
        // certificate was revoked (or whose CA was removed) could keep reconnecting on an old ticket.
        // Clients of etcd keep long-lived HTTP/2 connections; full handshakes cost little.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        config.alpn_protocols = match role {
            Role::Client => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Role::Peer => vec![b"h2".to_vec()],
        };
        Ok(ServerTls {
            config: Arc::new(config),
            role,
            check_san: role == Role::Peer && !info.skip_client_san_verify,
        })
    }

    /// The rustls configuration (usable with any rustls-based server).
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The listener role.
    pub fn role(&self) -> Role {
        self.role
    }

    pub(crate) fn check_san(&self) -> bool {
        self.check_san
    }
}
