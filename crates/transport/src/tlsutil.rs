//! etcd's `client/pkg/tlsutil`: TLS versions and cipher suites by their Go names, and PEM files.
//!
//! etcd takes `--cipher-suites` as Go's names and `--tls-min-version`/`--tls-max-version` as `TLS1.2` /
//! `TLS1.3`; the checks and messages of `embed.Config.Validate` and `tlsutil.GetCipherSuites` live in
//! [`TlsOptions::new`]. Go can configure only TLS 1.2 suites (TLS 1.3 suites are always on), and so do we:
//! the given suites restrict TLS 1.2, TLS 1.3 keeps all of rustls' suites.
//!
//! rustls implements only the AEAD suites with forward secrecy. A name Go knows but rustls does not
//! implement (the CBC, RC4, 3DES and RSA-key-exchange suites) is dropped with a warning, so that an etcd
//! configuration listing them still starts; a list of which nothing is usable is an error. An unknown name
//! is etcd's error.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring::cipher_suite as rs;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

use crate::error::{go_quote_list, TlsError};

/// A TLS protocol version as etcd names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `TLS1.2`
    Tls12,
    /// `TLS1.3`
    Tls13,
}

impl TlsVersion {
    /// etcd's `GetTLSVersion`: `""` is "let the library decide" (`None`).
    pub fn parse(s: &str) -> Result<Option<TlsVersion>, TlsError> {
        match s {
            "" => Ok(None),
            "TLS1.2" => Ok(Some(TlsVersion::Tls12)),
            "TLS1.3" => Ok(Some(TlsVersion::Tls13)),
            other => Err(TlsError::Config(format!(
                "unexpected TLS version {other:?} (must be one of: TLS1.2, TLS1.3)"
            ))),
        }
    }

    /// etcd's name for the version.
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLS1.2",
            TlsVersion::Tls13 => "TLS1.3",
        }
    }

    fn rustls(self) -> &'static SupportedProtocolVersion {
        match self {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        }
    }
}

/// What a Go cipher suite name means here.
enum GoSuite {
    /// A TLS 1.2 suite rustls implements.
    Tls12(SupportedCipherSuite),
    /// A TLS 1.3 suite: Go accepts the name and ignores it (TLS 1.3 suites are not configurable).
    Tls13,
    /// Go knows it; rustls does not implement it.
    Unsupported,
}

fn go_suite(name: &str) -> Option<GoSuite> {
    use GoSuite::*;
    Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
            Tls12(rs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
        }
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
            Tls12(rs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
        }
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            Tls12(rs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => Tls12(rs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => Tls12(rs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            Tls12(rs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256)
        }
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => {
            Tls13
        }
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_RC4_128_SHA"
        | "TLS_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA256"
        | "TLS_RSA_WITH_AES_128_GCM_SHA256"
        | "TLS_RSA_WITH_AES_256_GCM_SHA384"
        | "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_RSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256" => Unsupported,
        _ => return None,
    })
}

/// The TLS 1.2 cipher suites this build can negotiate, by Go name.
pub fn supported_cipher_suites() -> Vec<&'static str> {
    vec![
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ]
}

/// `--cipher-suites`, `--tls-min-version` and `--tls-max-version`, checked; shared by the client and
/// peer sides, as in etcd.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// The TLS 1.2 suites to offer, in the given order; empty means rustls' defaults.
    suites: Vec<SupportedCipherSuite>,
    /// The names as given (for logs).
    names: Vec<String>,
    /// `None`: TLS 1.2 (etcd's default minimum).
    pub min_version: Option<TlsVersion>,
    /// `None`: the highest rustls supports (TLS 1.3).
    pub max_version: Option<TlsVersion>,
}

impl TlsOptions {
    /// Parses and checks the three flags as etcd's `Config.Validate` and `GetCipherSuites` do, with
    /// etcd's messages.
    pub fn new(cipher_suites: &[String], min: &str, max: &str) -> Result<TlsOptions, TlsError> {
        let min_version = TlsVersion::parse(min)?;
        let max_version = TlsVersion::parse(max)?;
        if matches!((min_version, max_version), (Some(lo), Some(hi)) if lo > hi) {
            return Err(TlsError::Config(format!(
                "min version ({min}) is greater than max version ({max})"
            )));
        }
        let names: Vec<String> = cipher_suites
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if min_version == Some(TlsVersion::Tls13) && !names.is_empty() {
            return Err(TlsError::Config(
                "cipher suites cannot be configured when only TLS1.3 is enabled".into(),
            ));
        }
        let mut suites = Vec::new();
        let mut dropped = Vec::new();
        for name in &names {
            match go_suite(name) {
                None => {
                    return Err(TlsError::Config(format!(
                        "unexpected TLS cipher suite {name:?}"
                    )));
                }
                Some(GoSuite::Tls12(s)) => {
                    if !suites.contains(&s) {
                        suites.push(s)
                    }
                }
                Some(GoSuite::Tls13) => {}
                Some(GoSuite::Unsupported) => dropped.push(name.clone()),
            }
        }
        if !names.is_empty() && suites.is_empty() {
            return Err(TlsError::Config(format!(
                "none of the cipher suites {} can be used for TLS1.2 (supported: {})",
                go_quote_list(&names),
                supported_cipher_suites().join(", ")
            )));
        }
        if !dropped.is_empty() {
            tracing::warn!(
                ignored = %go_quote_list(&dropped),
                "ignoring cipher suites that rustls does not implement (only AEAD suites with forward secrecy are)"
            );
        }
        Ok(TlsOptions {
            suites,
            names,
            min_version,
            max_version,
        })
    }

    /// The cipher suite names as given.
    pub fn cipher_suite_names(&self) -> &[String] {
        &self.names
    }

    /// ring's provider restricted to the configured TLS 1.2 suites (TLS 1.3 suites all stay).
    pub(crate) fn provider(&self) -> Arc<CryptoProvider> {
        let mut p = rustls::crypto::ring::default_provider();
        if !self.suites.is_empty() {
            let tls13 = p
                .cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .copied();
            p.cipher_suites = tls13.chain(self.suites.iter().copied()).collect();
        }
        Arc::new(p)
    }

    /// The protocol versions between min and max.
    pub(crate) fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        let lo = self.min_version.unwrap_or(TlsVersion::Tls12);
        let hi = self.max_version.unwrap_or(TlsVersion::Tls13);
        [TlsVersion::Tls13, TlsVersion::Tls12]
            .into_iter()
            .filter(|v| *v >= lo && *v <= hi)
            .map(TlsVersion::rustls)
            .collect()
    }
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::read(path, e))
}

fn pem_error(path: &Path, what: &str, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::bad(path, format!("bad PEM data in {what} input: {e}"))
}

/// Every certificate in a PEM file (a chain: leaf first).
pub(crate) fn parse_certs(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, "certificate", e))?;
    if certs.is_empty() {
        return Err(TlsError::bad(
            path,
            "tls: failed to find any PEM data in certificate input",
        ));
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c)
            .map_err(|e| TlsError::bad(path, format!("x509: malformed certificate: {e}")))?;
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1, as Go's `X509KeyPair`).
pub(crate) fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(k) => Ok(k),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            let has_cert = CertificateDer::pem_slice_iter(pem).any(|c| c.is_ok());
            Err(TlsError::bad(
                path,
                if has_cert {
                    "tls: found a certificate rather than a key in the PEM for the private key"
                } else {
                    "tls: failed to find any PEM data in key input"
                },
            ))
        }
        Err(e) => Err(pem_error(path, "key", e)),
    }
}

/// etcd's `tlsutil.NewCert`: a certificate chain and its key, checked to belong together.
pub(crate) fn load_key_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = parse_certs(cert, &read_file(cert)?)?;
    let der = parse_key(key, &read_file(key)?)?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::bad(key, format!("unusable private key: {e}")))?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
        Err(e) => Err(TlsError::bad(cert, e.to_string())),
    }
}

/// etcd's `tlsutil.NewCertPool`: the CA certificates of a PEM file, at least one.
pub(crate) fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let certs = parse_certs(path, &read_file(path)?)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| TlsError::bad(path, format!("unusable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The system's CA bundle, used when no trusted CA file is given (as Go uses the system pool).
pub(crate) fn system_roots() -> rustls::RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "cannot load a system CA certificate");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!(added, ignored, "system CA certificates loaded");
    }
    roots
}

/// The CRLs of a file, PEM (`X509 CRL` blocks) or DER (what etcd reads).
pub(crate) fn load_crls(
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read_file(path)?;
    let crls: Vec<CertificateRevocationListDer<'static>> = if bytes.starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(path, "CRL", e))?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if crls.is_empty() {
        return Err(TlsError::bad(path, "no certificate revocation list found"));
    }
    for c in &crls {
        x509_parser::parse_x509_crl(c.as_ref())
            .map_err(|e| TlsError::bad(path, format!("x509: malformed CRL: {e}")))?;
    }
    Ok(crls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_with_etcds_message() {
        assert_eq!(TlsVersion::parse("").unwrap(), None);
        assert_eq!(
            TlsVersion::parse("TLS1.3").unwrap(),
            Some(TlsVersion::Tls13)
        );
        assert_eq!(
            TlsVersion::parse("TLS1.1").unwrap_err().to_string(),
            r#"unexpected TLS version "TLS1.1" (must be one of: TLS1.2, TLS1.3)"#
        );
    }

    #[test]
    fn options_are_checked_as_etcd_checks_them() {
        let err = |s: &[&str], min: &str, max: &str| {
            let s: Vec<String> = s.iter().map(|x| x.to_string()).collect();
            TlsOptions::new(&s, min, max).unwrap_err().to_string()
        };
        assert_eq!(
            err(&[], "TLS1.3", "TLS1.2"),
            "min version (TLS1.3) is greater than max version (TLS1.2)"
        );
        assert_eq!(
            err(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"], "TLS1.3", ""),
            "cipher suites cannot be configured when only TLS1.3 is enabled"
        );
        assert_eq!(
            err(&["TLS_NOPE"], "", ""),
            r#"unexpected TLS cipher suite "TLS_NOPE""#
        );
        assert!(err(&["TLS_RSA_WITH_RC4_128_SHA"], "", "").starts_with("none of the cipher suites"));
    }

    #[test]
    fn configured_suites_restrict_tls12_only() {
        let names = vec![
            "TLS_RSA_WITH_AES_128_CBC_SHA".to_string(),
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305".to_string(),
        ];
        let o = TlsOptions::new(&names, "", "").unwrap();
        let p = o.provider();
        let tls12: Vec<_> = p
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS12)
            .collect();
        assert_eq!(tls12.len(), 1);
        assert_eq!(
            tls12[0].suite(),
            rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        );
        assert_eq!(
            p.cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .count(),
            3
        );
    }

    #[test]
    fn version_range_is_inclusive() {
        let o = TlsOptions::new(&[], "TLS1.2", "TLS1.2").unwrap();
        assert_eq!(o.versions(), vec![&rustls::version::TLS12]);
        let o = TlsOptions::new(&[], "", "").unwrap();
        assert_eq!(o.versions().len(), 2);
        let o = TlsOptions::new(&[], "TLS1.3", "").unwrap();
        assert_eq!(o.versions(), vec![&rustls::version::TLS13]);
    }
}
