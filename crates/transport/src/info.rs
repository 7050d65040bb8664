//! etcd's `TLSInfo`: what one side (client or peer) is configured with, and its checks.
//!
//! The flags map one to one: `--cert-file`/`--peer-cert-file` → `cert_file`, `--key-file` → `key_file`,
//! `--client-cert-file`/`--client-key-file` → `client_cert_file`/`client_key_file` (the certificate this
//! member presents when it dials; the server certificate otherwise), `--trusted-ca-file` →
//! `trusted_ca_file`, `--client-cert-auth` → `client_cert_auth`, `--client-crl-file`/`--peer-crl-file` →
//! `crl_file`, `--peer-cert-allowed-cn` → `allowed_cns`, `--client-cert-allowed-hostname`/
//! `--peer-cert-allowed-hostname` → `allowed_hostnames`, `--peer-skip-client-san-verification` →
//! `skip_client_san_verify`, and the shared `--cipher-suites --tls-min-version --tls-max-version` →
//! `options`. `--auto-tls`/`--peer-auto-tls` produce a whole `TlsInfo` with [`crate::self_cert`].
//!
//! As in etcd, a server asks for and verifies client certificates when a trusted CA file is given or
//! client-cert-auth is on; `client_cert_auth` itself also tells the auth layer to take the CN as user.

use std::fmt;
use std::path::PathBuf;

use crate::error::{go_quote_list, TlsError};
use crate::tlsutil::TlsOptions;

/// TLS configuration of one side (client URLs or peer URLs), as etcd's `transport.TLSInfo`.
#[derive(Clone, Debug, Default)]
pub struct TlsInfo {
    /// The server certificate (a PEM chain, leaf first); also presented when dialing unless
    /// `client_cert_file` is set.
    pub cert_file: Option<PathBuf>,
    /// The key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// An explicit certificate to present when dialing (etcd's `--peer-client-cert-file`).
    pub client_cert_file: Option<PathBuf>,
    /// The key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// CA certificates that client certificates (server side) and server certificates (when dialing)
    /// must chain to. Without it the system's CAs are used, as Go uses its system pool.
    pub trusted_ca_file: Option<PathBuf>,
    /// Client certificates are required and verified; the auth layer takes the CN as user.
    pub client_cert_auth: bool,
    /// A certificate revocation list (PEM or DER) checked against client certificates.
    pub crl_file: Option<PathBuf>,
    /// The other end's certificate (a client's when serving, the server's when dialing with a
    /// certificate of our own) is accepted only if its CN is one of these (when non-empty).
    pub allowed_cns: Vec<String>,
    /// The other end's certificate, as for `allowed_cns`, is accepted only if it is valid for one of
    /// these hostnames or IP addresses (when non-empty; matched against its subject alternative names).
    pub allowed_hostnames: Vec<String>,
    /// Peer side only: skip etcd's check that a client certificate's IP/DNS SANs match the address the
    /// connection comes from.
    pub skip_client_san_verify: bool,
    /// The name to verify the server certificate against when dialing, instead of the URL's host.
    pub server_name: Option<String>,
    /// Do not verify server certificates when dialing (etcd sets it for auto-TLS certificates).
    pub insecure_skip_verify: bool,
    /// Cipher suites and protocol versions.
    pub options: TlsOptions,
}

impl TlsInfo {
    /// etcd's `Empty()`: no server certificate configured, so no TLS is served.
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_none() && self.key_file.is_none()
    }

    /// Whether a server built from this info requires and verifies client certificates (etcd's
    /// `RequireAndVerifyClientCert`).
    pub fn verifies_clients(&self) -> bool {
        self.trusted_ca_file.is_some() || self.client_cert_auth
    }

    /// etcd's checks of `baseConfig`, with its messages.
    pub fn validate(&self) -> Result<(), TlsError> {
        if self.cert_file.is_none() || self.key_file.is_none() {
            return Err(TlsError::Config(format!(
                "KeyFile and CertFile must both be present[key: {}, cert: {}]",
                show(&self.key_file),
                show(&self.cert_file)
            )));
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(TlsError::Config(format!(
                "ClientKeyFile and ClientCertFile must both be present or both absent: key: {}, cert: {}]",
                show(&self.client_key_file),
                show(&self.client_cert_file)
            )));
        }
        if !self.allowed_cns.is_empty() && !self.allowed_hostnames.is_empty() {
            return Err(TlsError::Config(format!(
                "AllowedCNs and AllowedHostnames are mutually exclusive (cns={}, hostnames={})",
                go_quote_list(&self.allowed_cns),
                go_quote_list(&self.allowed_hostnames)
            )));
        }
        Ok(())
    }

    /// The certificate and key presented when dialing.
    pub(crate) fn dial_identity(&self) -> Option<(PathBuf, PathBuf)> {
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            _ => match (&self.cert_file, &self.key_file) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                _ => None,
            },
        }
    }
}

fn show(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// etcd's `TLSInfo.String()`, for the "starting with client TLS" log line.
impl fmt::Display for TlsInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cert = {}, key = {}, client-cert={}, client-key={}, trusted-ca = {}, client-cert-auth = {}, crl-file = {}",
            show(&self.cert_file),
            show(&self.key_file),
            show(&self.client_cert_file),
            show(&self.client_key_file),
            show(&self.trusted_ca_file),
            self.client_cert_auth,
            show(&self.crl_file)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_messages_are_etcds() {
        let mut i = TlsInfo {
            cert_file: Some("c.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            i.validate().unwrap_err().to_string(),
            "KeyFile and CertFile must both be present[key: , cert: c.pem]"
        );
        i.key_file = Some("k.pem".into());
        i.validate().unwrap();
        i.client_cert_file = Some("cc.pem".into());
        assert_eq!(
            i.validate().unwrap_err().to_string(),
            "ClientKeyFile and ClientCertFile must both be present or both absent: key: , cert: cc.pem]"
        );
        i.client_cert_file = None;
        i.allowed_cns = vec!["a".into(), "b".into()];
        i.allowed_hostnames = vec!["h".into()];
        assert_eq!(
            i.validate().unwrap_err().to_string(),
            r#"AllowedCNs and AllowedHostnames are mutually exclusive (cns=["a" "b"], hostnames=["h"])"#
        );
    }

    #[test]
    fn dialing_presents_the_explicit_client_certificate_first() {
        let mut i = TlsInfo {
            cert_file: Some("s.pem".into()),
            key_file: Some("s.key".into()),
            ..Default::default()
        };
        assert_eq!(i.dial_identity().unwrap().0, PathBuf::from("s.pem"));
        i.client_cert_file = Some("c.pem".into());
        i.client_key_file = Some("c.key".into());
        assert_eq!(i.dial_identity().unwrap().0, PathBuf::from("c.pem"));
        assert!(!i.is_empty());
        assert!(TlsInfo::default().is_empty());
    }
}
