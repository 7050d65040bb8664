//! Checks on peer certificates beyond chain validation, and what we read out of certificates.
//!
//! - [`CertSummary`]: CN, SANs, serial and validity of a certificate (x509-parser; rustls and webpki do
//!   not expose subjects). The CN is what `--client-cert-auth` makes the user name.
//! - [`Policy`]: `--peer-cert-allowed-cn` / `--*-cert-allowed-hostname`, checked during the handshake as
//!   etcd's `VerifyPeerCertificate` does, with its message "client certificate authentication failed".
//!   etcd sets that callback in `baseConfig`, shared by its server and its client configurations, so the
//!   rule applies to both ends: a server checks the client's certificate ([`crate::reload`]'s verifier) and
//!   a dialer the server's ([`PolicyServerVerifier`]), both through [`Policy::check`]. A member therefore
//!   neither accepts nor dials a peer outside the rule, even one whose certificate the trusted CA issued.
//! - [`check_cert_san`]: etcd's peer-listener check that a client certificate's IP or DNS SANs match the
//!   address the connection comes from (after the handshake, since it may need DNS).
//! - The rejection slot: rustls does not say which certificate a failed handshake presented, so the
//!   verifier records a summary of it in a task-local slot that the acceptor reads to log the refusal with
//!   the certificate's CN. The verifier runs inside the handshake future's `poll`, on the task that set the
//!   slot; outside such a scope recording is a no-op.
//! - [`SkipServerVerification`]: etcd's `InsecureSkipVerify` for auto-TLS peers: any server certificate,
//!   but handshake signatures are still checked.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::DigitallySignedStruct;

use crate::error::go_quote_list;
use crate::info::TlsInfo;

/// What the logs and the auth layer need to know about a certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject's common name (the last CN attribute, as Go reads it).
    pub common_name: Option<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Serial number, hex.
    pub serial: String,
    /// Validity start, seconds since the epoch.
    pub not_before: i64,
    /// Validity end, seconds since the epoch.
    pub not_after: i64,
}

impl CertSummary {
    /// Parses a DER certificate; `None` if it is not one.
    pub fn parse(der: &[u8]) -> Option<CertSummary> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .last()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                            ip_addresses.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                            ip_addresses.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        let serial = cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Some(CertSummary {
            common_name,
            dns_names,
            ip_addresses,
            serial,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Whether `now` (seconds since the epoch) is inside the validity period.
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// The allowed-CN / allowed-hostname rule for the other end's certificate: a client's when serving, the
/// server's when dialing.
#[derive(Clone, Debug, Default)]
pub(crate) struct Policy {
    pub(crate) allowed_cns: Vec<String>,
    pub(crate) allowed_hostnames: Vec<String>,
}

/// etcd's text for a certificate refused by the allowed-CN / allowed-hostname rule (on either end: etcd
/// says "client" even when a dialer refuses a server).
pub(crate) const AUTH_FAILED: &str = "client certificate authentication failed";

impl Policy {
    /// The rule `info` configures.
    pub(crate) fn of(info: &TlsInfo) -> Policy {
        Policy {
            allowed_cns: info.allowed_cns.clone(),
            allowed_hostnames: info.allowed_hostnames.clone(),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.allowed_cns.is_empty() && self.allowed_hostnames.is_empty()
    }

    /// The rule as a handshake applies it, once the chain is verified: the end-entity certificate passes
    /// or is refused with etcd's message.
    pub(crate) fn check(
        &self,
        der: &CertificateDer<'_>,
        summary: Option<&CertSummary>,
    ) -> Result<(), rustls::Error> {
        if self.is_open() || self.allows(der, summary) {
            Ok(())
        } else {
            Err(refused(AUTH_FAILED))
        }
    }

    /// Whether the end-entity certificate passes the rule.
    pub(crate) fn allows(&self, der: &CertificateDer<'_>, summary: Option<&CertSummary>) -> bool {
        if !self.allowed_cns.is_empty() {
            let cn = summary.and_then(|s| s.common_name.as_deref());
            return cn.is_some_and(|cn| self.allowed_cns.iter().any(|a| a == cn));
        }
        if !self.allowed_hostnames.is_empty() {
            let Ok(ee) = webpki::EndEntityCert::try_from(der) else {
                return false;
            };
            return self.allowed_hostnames.iter().any(|h| {
                ServerName::try_from(h.as_str())
                    .is_ok_and(|name| ee.verify_is_valid_for_subject_name(&name).is_ok())
            });
        }
        true
    }
}

/// The reason a certificate was refused by a check of ours (not by chain validation).
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

pub(crate) fn refused(msg: impl Into<String>) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(Refused(msg.into())),
    )))
}

pub(crate) type Slot = Arc<Mutex<Option<CertSummary>>>;

tokio::task_local! {
    static PRESENTED: Slot;
}

/// Runs a handshake with a slot in which the verifier records the certificate the peer presented.
pub(crate) async fn with_presented_slot<F: std::future::Future>(slot: Slot, f: F) -> F::Output {
    PRESENTED.scope(slot, f).await
}

/// Records the certificate the peer presented, if a handshake of ours is running on this task.
pub(crate) fn record_presented(summary: Option<CertSummary>) {
    let _ = PRESENTED.try_with(|slot| {
        if let Ok(mut s) = slot.lock() {
            *s = summary;
        }
    });
}

/// etcd's `checkCertSAN` for peer listeners: a client certificate with IP or DNS SANs must match the
/// remote address, by IP SAN or by a forward lookup of one of its DNS names. (etcd also tries a reverse
/// lookup of the address; without a resolver library we do forward lookups only.)
pub(crate) async fn check_cert_san(cert: &CertSummary, remote: IpAddr) -> Result<(), String> {
    if cert.ip_addresses.is_empty() && cert.dns_names.is_empty() {
        return Ok(());
    }
    let remote = remote.to_canonical();
    if !cert.ip_addresses.is_empty() {
        if cert
            .ip_addresses
            .iter()
            .any(|ip| ip.to_canonical() == remote)
        {
            return Ok(());
        }
        if cert.dns_names.is_empty() {
            let ips: Vec<String> = cert.ip_addresses.iter().map(|i| i.to_string()).collect();
            return Err(format!(
                "x509: certificate is valid for {}, not {remote}",
                ips.join(", ")
            ));
        }
    }
    let mut last_err = None;
    for name in cert.dns_names.iter().filter(|n| !n.starts_with("*.")) {
        match tokio::net::lookup_host((name.as_str(), 0)).await {
            Ok(addrs) => {
                if addrs.into_iter().any(|a| a.ip().to_canonical() == remote) {
                    return Ok(());
                }
            }
            Err(e) => last_err = Some(e.to_string()),
        }
    }
    let suffix = last_err.map(|e| format!(" ({e})")).unwrap_or_default();
    Err(format!(
        "tls: \"{remote}\" does not match any of DNSNames {}{suffix}",
        go_quote_list(&cert.dns_names)
    ))
}

/// What one of our checks said, when it is what failed a handshake (rather than rustls' own verification).
pub(crate) fn refusal(e: &rustls::Error) -> Option<&str> {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => {
            o.0.downcast_ref::<Refused>().map(|r| r.0.as_str())
        }
        _ => None,
    }
}

/// A dialer's verification of server certificates: `inner`'s, then the [`Policy`].
///
/// Go hands `VerifyPeerCertificate` the verified chains, none when verification is skipped, and etcd's
/// callback refuses when no chain's leaf passes; so with `InsecureSkipVerify` and a rule, etcd refuses
/// every server. `chains_verified: false` keeps that: an unverified certificate never passes. (etcd's
/// flags never combine the two: auto TLS replaces the whole `TLSInfo`, rule included, as `self_cert`
/// does here.)
#[derive(Debug)]
pub(crate) struct PolicyServerVerifier {
    pub(crate) inner: Arc<dyn ServerCertVerifier>,
    pub(crate) chains_verified: bool,
    pub(crate) policy: Policy,
}

impl ServerCertVerifier for PolicyServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if !self.chains_verified && !self.policy.is_open() {
            return Err(refused(AUTH_FAILED));
        }
        let summary = CertSummary::parse(end_entity);
        self.policy.check(end_entity, summary.as_ref())?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// Accepts any server certificate (etcd's `InsecureSkipVerify`, set for auto-TLS peers), still
/// verifying that the server holds the certificate's key.
#[derive(Debug)]
pub(crate) struct SkipServerVerification(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for SkipServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> CertificateDer<'static> {
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let k = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&k).unwrap().der().clone()
    }

    #[test]
    fn summary_reads_cn_and_sans() {
        let der = cert("alice", &["example.com", "127.0.0.1", "::1"]);
        let s = CertSummary::parse(&der).unwrap();
        assert_eq!(s.common_name.as_deref(), Some("alice"));
        assert_eq!(s.dns_names, vec!["example.com".to_string()]);
        assert_eq!(
            s.ip_addresses,
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse::<IpAddr>().unwrap()
            ]
        );
        assert!(!s.serial.is_empty());
        assert!(CertSummary::parse(b"garbage").is_none());
    }

    #[test]
    fn policy_matches_cn_or_hostname() {
        let der = cert("member-1", &["m1.example.com", "10.0.0.1"]);
        let s = CertSummary::parse(&der);
        let by_cn = |cns: &[&str]| Policy {
            allowed_cns: cns.iter().map(|s| s.to_string()).collect(),
            allowed_hostnames: vec![],
        };
        let by_host = |hs: &[&str]| Policy {
            allowed_cns: vec![],
            allowed_hostnames: hs.iter().map(|s| s.to_string()).collect(),
        };
        assert!(by_cn(&["x", "member-1"]).allows(&der, s.as_ref()));
        assert!(!by_cn(&["member-2"]).allows(&der, s.as_ref()));
        assert!(by_host(&["m1.example.com"]).allows(&der, s.as_ref()));
        assert!(by_host(&["10.0.0.1"]).allows(&der, s.as_ref()));
        assert!(!by_host(&["m2.example.com", "10.0.0.2"]).allows(&der, s.as_ref()));
        assert!(Policy::default().allows(&der, s.as_ref()));
    }

    #[tokio::test]
    async fn san_check_matches_the_remote_ip() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let s = CertSummary::parse(&cert("m", &["127.0.0.1"])).unwrap();
        check_cert_san(&s, ip("127.0.0.1")).await.unwrap();
        check_cert_san(&s, ip("::ffff:127.0.0.1")).await.unwrap();
        assert_eq!(
            check_cert_san(&s, ip("127.0.0.2")).await.unwrap_err(),
            "x509: certificate is valid for 127.0.0.1, not 127.0.0.2"
        );
        let none = CertSummary::parse(&cert("m", &[])).unwrap();
        check_cert_san(&none, ip("10.1.1.1")).await.unwrap();
        let dns = CertSummary::parse(&cert("m", &["localhost"])).unwrap();
        check_cert_san(&dns, ip("127.0.0.1")).await.unwrap();
        assert!(check_cert_san(&dns, ip("127.0.0.9"))
            .await
            .unwrap_err()
            .starts_with(r#"tls: "127.0.0.9" does not match any of DNSNames ["localhost"]"#));
    }

    #[test]
    fn recording_outside_a_handshake_is_a_no_op() {
        record_presented(None);
    }
}
