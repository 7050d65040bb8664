//! Certificates, keys, CAs and CRLs re-read from disk when they change, so that rotating files needs no
//! restart.
//!
//! etcd re-reads its certificate and key on every handshake. We check instead, per handshake, whether
//! the files changed (one `stat` each: size, modification and change times, inode) and re-read only
//! then, which costs a few system calls instead of PEM and key parsing.
//!
//! What happens when a re-read fails differs by what it protects:
//! - our own certificate and key (server side, and the client certificate we present when dialing): the
//!   previous pair keeps being used and the failure is logged once per change of the files. A rotation
//!   that writes the certificate before the key goes through a moment where the two do not match;
//!   serving the old pair meanwhile harms nobody.
//! - the trusted CA and the CRL (server side): client certificates are refused until the files are
//!   readable again (fail closed, as etcd does for a CRL it cannot read): accepting a certificate under a
//!   revocation list we cannot read could admit a revoked member.
//!
//! A read that races with a writer is detected by stat-ing again after reading; such a result is used but
//! not remembered, so the next handshake reads again.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::DistinguishedName;

use crate::error::TlsError;
use crate::tlsutil;
use crate::verify::{self, CertSummary, Policy};

/// What identifies a version of a file's content without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    changed: (i64, i64),
    #[cfg(unix)]
    inode: (u64, u64),
}

pub(crate) fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    use std::os::unix::fs::MetadataExt;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        #[cfg(unix)]
        changed: (m.ctime(), m.ctime_nsec()),
        #[cfg(unix)]
        inode: (m.dev(), m.ino()),
    })
}

fn stamps(paths: &[&Path]) -> Vec<Option<Stamp>> {
    paths.iter().map(|p| stamp(p)).collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A certificate and its key, re-read when either file changes.
pub(crate) struct KeyPairSource {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<KeyPairState>,
}

struct KeyPairState {
    seen: Vec<Option<Stamp>>,
    current: Arc<CertifiedKey>,
}

impl KeyPairSource {
    /// Loads the pair; an error names the file at fault.
    pub(crate) fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<KeyPairSource, TlsError> {
        let seen = stamps(&[cert, key]);
        let ck = tlsutil::load_key_pair(cert, key, &provider)?;
        warn_if_not_valid_now(cert, &ck);
        Ok(KeyPairSource {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            state: Mutex::new(KeyPairState {
                seen,
                current: Arc::new(ck),
            }),
        })
    }

    /// The pair as the files are now (or the last good one, see the module doc).
    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        let now = stamps(&[&self.cert, &self.key]);
        {
            let st = lock(&self.state);
            if st.seen == now {
                return st.current.clone();
            }
        }
        let loaded = tlsutil::load_key_pair(&self.cert, &self.key, &self.provider);
        let settled = stamps(&[&self.cert, &self.key]) == now;
        let mut st = lock(&self.state);
        match loaded {
            Ok(ck) => {
                warn_if_not_valid_now(&self.cert, &ck);
                tracing::info!(
                    cert_file = %self.cert.display(),
                    key_file = %self.key.display(),
                    "loaded changed certificate files"
                );
                st.current = Arc::new(ck);
                if settled {
                    st.seen = now;
                }
            }
            Err(e) => {
                if st.seen != now {
                    tracing::warn!(
                        cert_file = %self.cert.display(),
                        key_file = %self.key.display(),
                        error = %e,
                        "cannot reload certificate files; still using the previous certificate"
                    );
                    st.seen = now;
                }
            }
        }
        st.current.clone()
    }
}

impl fmt::Debug for KeyPairSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPairSource")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl ResolvesServerCert for KeyPairSource {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for KeyPairSource {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A certificate outside its validity period still loads (etcd starts with it too; peers refuse it),
/// but says so in the log.
fn warn_if_not_valid_now(path: &Path, ck: &CertifiedKey) {
    let Some(s) = ck.cert.first().and_then(|c| CertSummary::parse(c)) else {
        return;
    };
    let now = UnixTime::now().as_secs() as i64;
    if !s.valid_at(now) {
        tracing::warn!(
            cert_file = %path.display(),
            not_before = s.not_before,
            not_after = s.not_after,
            "certificate is not valid now (expired or not yet valid); peers will refuse it"
        );
    }
}

/// Server-side verification of client certificates: chain to the trusted CA, revocation by the CRL,
/// then the allowed-CN / allowed-hostname rule. The CA and CRL files are re-read when they change.
pub(crate) struct ClientVerifier {
    ca: Option<PathBuf>,
    crl: Option<PathBuf>,
    provider: Arc<CryptoProvider>,
    policy: Policy,
    state: Mutex<VerifierState>,
}

struct VerifierState {
    seen: Vec<Option<Stamp>>,
    inner: Result<Arc<dyn ClientCertVerifier>, String>,
}

impl ClientVerifier {
    pub(crate) fn load(
        ca: Option<&Path>,
        crl: Option<&Path>,
        provider: Arc<CryptoProvider>,
        policy: Policy,
    ) -> Result<ClientVerifier, TlsError> {
        let v = ClientVerifier {
            ca: ca.map(Path::to_path_buf),
            crl: crl.map(Path::to_path_buf),
            provider,
            policy,
            state: Mutex::new(VerifierState {
                seen: Vec::new(),
                inner: Err(String::new()),
            }),
        };
        let seen = v.stamps();
        let inner = v.build()?;
        *lock(&v.state) = VerifierState {
            seen,
            inner: Ok(inner),
        };
        Ok(v)
    }

    fn stamps(&self) -> Vec<Option<Stamp>> {
        let files: Vec<&Path> = self
            .ca
            .iter()
            .chain(&self.crl)
            .map(|p| p.as_path())
            .collect();
        stamps(&files)
    }

    fn build(&self) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        let roots = match &self.ca {
            Some(p) => tlsutil::load_roots(p)?,
            None => tlsutil::system_roots(),
        };
        if roots.is_empty() {
            return Err(TlsError::Config(
                "no trusted CA certificate to verify client certificates against (no --trusted-ca-file and no system CA bundle)".into(),
            ));
        }
        let mut b =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone());
        if let Some(crl) = &self.crl {
            // A CRL revokes the certificates it lists; certificates of other issuers are not "unknown"
            // but simply not revoked, as in etcd.
            b = b
                .with_crls(tlsutil::load_crls(crl)?)
                .allow_unknown_revocation_status();
        }
        b.build()
            .map_err(|e| TlsError::Config(format!("cannot verify client certificates: {e}")))
    }

    fn current(&self) -> Result<Arc<dyn ClientCertVerifier>, String> {
        let now = self.stamps();
        {
            let st = lock(&self.state);
            if st.seen == now {
                return st.inner.clone();
            }
        }
        let built = self.build().map_err(|e| e.to_string());
        let settled = self.stamps() == now;
        let mut st = lock(&self.state);
        match &built {
            Ok(_) => tracing::info!(
                trusted_ca_file = ?self.ca,
                crl_file = ?self.crl,
                "loaded changed trusted CA / CRL files"
            ),
            Err(e) => tracing::warn!(
                trusted_ca_file = ?self.ca,
                crl_file = ?self.crl,
                error = %e,
                "cannot reload trusted CA / CRL files; refusing client certificates until they can be read"
            ),
        }
        st.inner = built;
        if settled {
            st.seen = now;
        }
        st.inner.clone()
    }
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("ca", &self.ca)
            .field("crl", &self.crl)
            .finish()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: the CA may change on reload, and a client that sees no hint sends its certificate
    /// whatever issued it (Go's and rustls' clients both do).
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let summary = CertSummary::parse(end_entity);
        verify::record_presented(summary.clone());
        let inner = self.current().map_err(rustls::Error::General)?;
        let ok = inner.verify_client_cert(end_entity, intermediates, now)?;
        self.policy.check(end_entity, summary.as_ref())?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
