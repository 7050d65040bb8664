//! etcd's `TLSInfo.ClientConfig`: how a member dials its peers and the grpc-proxy its upstream.
//!
//! The server certificate is verified against the trusted CA file (the system's CAs without one) for the
//! URL's host, a DNS name or an IP address, unless the info says to skip verification (auto TLS, as etcd
//! does for self-signed certificates). The allowed CNs or hostnames then apply to it as they apply to
//! client certificates on the server side: etcd's `baseConfig` puts the one `VerifyPeerCertificate` in
//! both configurations, so a member with `--peer-cert-allowed-cn` does not dial a peer whose server
//! certificate has another CN, though the trusted CA issued it. As in etcd (whose `ClientConfig` skips
//! `baseConfig` then) an info without a certificate of its own checks no rule, and with verification
//! skipped a rule refuses every server (see `verify`).
//!
//! The certificate presented is `client_cert_file` or else `cert_file`, re-read when the files change, as
//! etcd re-reads it on every handshake. The trusted CA is read once, as in etcd (a dialer that must trust
//! a new CA is rebuilt). ALPN offers `h2`.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::error::TlsError;
use crate::info::TlsInfo;
use crate::reload::KeyPairSource;
use crate::tlsutil;
use crate::verify::{Policy, PolicyServerVerifier, SkipServerVerification};

/// A client-side TLS configuration, ready for [`crate::Connector`].
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: Option<String>,
}

impl ClientTls {
    /// Builds the configuration, reading every file once (errors name the file). An info without
    /// certificate (only a trusted CA) dials without presenting one.
    pub fn new(info: &TlsInfo) -> Result<ClientTls, TlsError> {
        if !info.is_empty() {
            info.validate()?;
        }
        let provider = info.options.provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&info.options.versions())?;
        let verifier: Arc<dyn ServerCertVerifier> = if info.insecure_skip_verify {
            Arc::new(SkipServerVerification(provider.clone()))
        } else {
            let roots = match &info.trusted_ca_file {
                Some(p) => tlsutil::load_roots(p)?,
                None => tlsutil::system_roots(),
            };
            if roots.is_empty() {
                return Err(TlsError::Config(
                    "no trusted CA certificate to verify servers against (no trusted CA file and no system CA bundle)".into(),
                ));
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::Config(format!("cannot verify servers: {e}")))?
        };
        let policy = if info.is_empty() {
            Policy::default()
        } else {
            Policy::of(info)
        };
        let verifier = if policy.is_open() {
            verifier
        } else {
            if info.insecure_skip_verify {
                tracing::warn!(
                    "allowed CNs/hostnames are set but server certificates are not verified; as in \
                     etcd, every server is refused"
                );
            }
            Arc::new(PolicyServerVerifier {
                inner: verifier,
                chains_verified: !info.insecure_skip_verify,
                policy,
            })
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match info.dial_identity() {
            Some((cert, key)) => {
                let source = KeyPairSource::load(&cert, &key, provider)?;
                builder.with_client_cert_resolver(Arc::new(source))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
            server_name: info.server_name.clone(),
        })
    }

    /// The rustls configuration.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The name the server certificate must be valid for when dialing `host` (a DNS name, an IP
    /// address, or an IPv6 address in brackets): the configured server name if any, else the host.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        ServerName::try_from(name.to_string())
            .map_err(|_| TlsError::Config(format!("invalid server name {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_or_the_override() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::testing::Ca::new("ca");
        let ca_file = crate::testing::write(dir.path(), "ca.pem", ca.cert_pem());
        let mut info = TlsInfo {
            trusted_ca_file: Some(ca_file),
            ..Default::default()
        };
        let t = ClientTls::new(&info).unwrap();
        assert_eq!(
            t.server_name("[::1]").unwrap(),
            ServerName::IpAddress("::1".parse::<std::net::IpAddr>().unwrap().into())
        );
        assert!(matches!(
            t.server_name("db.example").unwrap(),
            ServerName::DnsName(_)
        ));
        info.server_name = Some("etcd.example".into());
        let t = ClientTls::new(&info).unwrap();
        assert_eq!(
            t.server_name("10.0.0.1").unwrap(),
            ServerName::try_from("etcd.example").unwrap()
        );
    }
}
