//! The one error type of the crate.
//!
//! Configuration mistakes carry etcd's own message where etcd has one (operators search for those
//! strings); problems with a file always name the file, because "tls: private key does not match public
//! key" alone does not say which of a member's six PEM files is wrong.

use std::io;
use std::path::PathBuf;

/// What went wrong while building or using a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A configuration that etcd refuses, with etcd's message.
    #[error("{0}")]
    Config(String),
    /// A file could not be read.
    #[error("open {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file's content is not what it should be (no PEM data, bad PEM, a certificate where a key
    /// belongs, an unparsable certificate or CRL, a key type the crypto provider cannot use).
    #[error("{}: {detail}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The private key does not belong to the certificate.
    #[error(
        "tls: private key does not match public key (certificate {}, key {})",
        cert.display(),
        key.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A rustls configuration could not be built (for instance no cipher suite left for the versions
    /// allowed).
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// Writing a generated certificate failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Certificate generation failed (auto TLS).
    #[error("cannot generate certificate: {0}")]
    Generate(String),
}

impl TlsError {
    pub(crate) fn bad(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        TlsError::BadFile {
            path: path.into(),
            detail: detail.into(),
        }
    }
    pub(crate) fn read(path: impl Into<PathBuf>, source: io::Error) -> Self {
        TlsError::Read {
            path: path.into(),
            source,
        }
    }
}

/// Go's `%q` of a string list (`["a" "b"]`), which etcd's messages use.
pub(crate) fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(" "))
}
