//! Certificates for tests, generated at run time with rcgen: certificate authorities, server, client and
//! peer certificates (also expired or not yet valid ones), CRLs, and files to hand to a [`TlsInfo`].
//!
//! Used by this crate's tests and by the server's end-to-end tests; nothing in a server uses it.
//!
//! [`TlsInfo`]: crate::TlsInfo

use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::days(30);
        p.not_after = now + Duration::days(3650);
        let key = KeyPair::generate().expect("generate CA key");
        let cert = p.self_signed(&key).expect("self-sign CA");
        Ca {
            issuer: Issuer::new(p, key),
            cert_pem: cert.pem(),
        }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate as described.
    pub fn issue(&self, spec: &CertSpec) -> Issued {
        let mut p = CertificateParams::new(spec.sans.clone()).expect("valid SANs");
        p.distinguished_name = DistinguishedName::new();
        if let Some(cn) = &spec.cn {
            p.distinguished_name.push(DnType::CommonName, cn.as_str());
        }
        p.not_before = spec.not_before;
        p.not_after = spec.not_after;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("generate key");
        let cert = p.signed_by(&key, &self.issuer).expect("sign certificate");
        let serial = x509_parser::parse_x509_certificate(cert.der())
            .expect("rcgen makes valid certificates")
            .1
            .raw_serial()
            .to_vec();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        }
    }

    /// A CRL of this CA revoking `revoked`, PEM.
    pub fn crl_pem(&self, revoked: &[&Issued]) -> String {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::days(1),
            next_update: now + Duration::days(30),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|i| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&i.serial),
                    revocation_time: now - Duration::hours(1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .expect("sign CRL")
            .pem()
            .expect("encode CRL")
    }
}

/// What to put in an issued certificate.
#[derive(Clone, Debug)]
pub struct CertSpec {
    /// Common name.
    pub cn: Option<String>,
    /// Subject alternative names: IP addresses or DNS names.
    pub sans: Vec<String>,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
}

impl CertSpec {
    /// A certificate named `cn`, valid for `127.0.0.1` and `localhost`, from yesterday for a year.
    pub fn new(cn: &str) -> CertSpec {
        let now = OffsetDateTime::now_utc();
        CertSpec {
            cn: Some(cn.to_string()),
            sans: vec!["127.0.0.1".into(), "localhost".into()],
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(365),
        }
    }

    /// Replaces the subject alternative names.
    pub fn sans(mut self, sans: &[&str]) -> CertSpec {
        self.sans = sans.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Valid only in the past.
    pub fn expired(mut self) -> CertSpec {
        let now = OffsetDateTime::now_utc();
        self.not_before = now - Duration::days(30);
        self.not_after = now - Duration::days(1);
        self
    }

    /// Valid only in the future.
    pub fn not_yet_valid(mut self) -> CertSpec {
        let now = OffsetDateTime::now_utc();
        self.not_before = now + Duration::days(1);
        self.not_after = now + Duration::days(30);
        self
    }
}

/// An issued certificate and its key.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// Its serial number, big-endian bytes.
    pub serial: Vec<u8>,
}

impl Issued {
    /// Writes `<name>.pem` and `<name>-key.pem` under `dir`; returns (certificate, key) paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        (
            write(dir, &format!("{name}.pem"), &self.cert_pem),
            write(dir, &format!("{name}-key.pem"), &self.key_pem),
        )
    }
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write test file");
    p
}
