//! Which listen URLs need TLS, and etcd's start-up checks and messages about them (`embed/etcd.go`).
//!
//! `https` and `unixs` are the secure schemes. Listen URLs are grouped by address: etcd serves an address
//! given both as `http://` and `https://` on one port, telling the two apart per connection (cmux); a
//! [`ListenGroup`] says which of the two an address needs and [`ListenGroup::acceptor`] builds the
//! matching [`Acceptor`].

use http::Uri;

use crate::error::TlsError;
use crate::info::TlsInfo;
use crate::listener_tls::Acceptor;
use crate::server_config::{Role, ServerTls};

/// Whether a URL scheme is served with TLS (`https`, `unixs`).
pub fn is_tls_scheme(scheme: &str) -> bool {
    matches!(scheme, "https" | "unixs")
}

/// The scheme of a URL (`""` when it has none).
pub fn scheme_of(url: &str) -> &str {
    url.split_once("://").map(|(s, _)| s).unwrap_or("")
}

/// Whether a URL is served with TLS.
pub fn url_needs_tls(url: &str) -> bool {
    is_tls_scheme(scheme_of(url))
}

/// etcd's `configureClientListeners` checks: an `https`/`unixs` client URL needs `--cert-file` and
/// `--key-file` (etcd's message); `http` URLs with certificates or client-cert-auth configured are
/// logged, as etcd warns that those settings are ignored there.
pub fn check_client_urls(urls: &[String], info: &TlsInfo) -> Result<(), TlsError> {
    for u in urls {
        if url_needs_tls(u) {
            if info.is_empty() {
                return Err(TlsError::Config(format!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for client url {u} with HTTPS scheme"
                )));
            }
        } else {
            if !info.is_empty() {
                tracing::warn!(
                    client_url = %u,
                    "scheme is http or unix while key and cert files are present; ignoring key and cert files"
                );
            }
            if info.client_cert_auth {
                tracing::warn!(
                    client_url = %u,
                    "scheme is http or unix while --client-cert-auth is enabled; ignoring client cert auth for this URL"
                );
            }
        }
    }
    Ok(())
}

/// etcd's peer listener check: an `https` peer URL needs `--peer-cert-file` and `--peer-key-file`. etcd
/// reports the listener's address (`host:port`) in this message.
pub fn check_peer_urls(urls: &[String], info: &TlsInfo) -> Result<(), TlsError> {
    for u in urls {
        if url_needs_tls(u) {
            if info.is_empty() {
                let addr = u.split_once("://").map(|(_, a)| a).unwrap_or(u);
                let addr = addr.trim_end_matches('/');
                return Err(TlsError::Config(format!(
                    "cannot listen on TLS for {addr}: KeyFile and CertFile are not presented"
                )));
            }
        } else {
            if !info.is_empty() {
                tracing::warn!(
                    peer_url = %u,
                    "scheme is HTTP while key and cert files are present; ignoring key and cert files"
                );
            }
            if info.client_cert_auth {
                tracing::warn!(
                    peer_url = %u,
                    "scheme is HTTP while --peer-client-cert-auth is enabled; ignoring client cert auth for this URL"
                );
            }
        }
    }
    Ok(())
}

/// etcd's `ErrMissingClientTLSInfoForMetricsURL`, for an `https` `--listen-metrics-urls` entry without
/// client certificates.
pub fn check_metrics_urls(urls: &[String], client: &TlsInfo) -> Result<(), TlsError> {
    if client.is_empty() && urls.iter().any(|u| url_needs_tls(u)) {
        return Err(TlsError::Config(
            "client TLS key/cert (--cert-file, --key-file) must be provided for metrics secure url"
                .into(),
        ));
    }
    Ok(())
}

/// The listen URLs of one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenGroup {
    /// `host:port` as written in the URLs.
    pub addr: String,
    /// Some URL for this address is plaintext.
    pub plain: bool,
    /// Some URL for this address is TLS.
    pub tls: bool,
    /// The URLs, as given.
    pub urls: Vec<String>,
}

impl ListenGroup {
    /// The acceptor that serves this address: plaintext, TLS, or both by sniffing. `tls` must be given
    /// when the group needs TLS.
    pub fn acceptor(&self, role: Role, tls: Option<&ServerTls>) -> Result<Acceptor, TlsError> {
        match (self.plain, self.tls, tls) {
            (_, false, _) => Ok(Acceptor::plain(role)),
            (false, true, Some(t)) => Ok(Acceptor::tls(t.clone())),
            (true, true, Some(t)) => Ok(Acceptor::tls_and_plain(t.clone())),
            (_, true, None) => Err(TlsError::Config(format!(
                "cannot listen on TLS for {}: KeyFile and CertFile are not presented",
                self.addr
            ))),
        }
    }
}

/// Groups listen URLs by `host:port`, in first-seen order.
pub fn group_listen_urls(urls: &[String]) -> Result<Vec<ListenGroup>, TlsError> {
    let mut groups: Vec<ListenGroup> = Vec::new();
    for u in urls {
        let uri: Uri = u
            .parse()
            .map_err(|e| TlsError::Config(format!("invalid URL {u:?}: {e}")))?;
        let scheme = uri.scheme_str().unwrap_or("");
        if !matches!(scheme, "http" | "https") {
            return Err(TlsError::Config(format!(
                "URL scheme must be http or https: {u}"
            )));
        }
        let addr = uri
            .authority()
            .ok_or_else(|| TlsError::Config(format!("invalid URL {u:?}: no host")))?
            .to_string();
        let secure = is_tls_scheme(scheme);
        match groups.iter_mut().find(|g| g.addr == addr) {
            Some(g) => {
                g.plain |= !secure;
                g.tls |= secure;
                g.urls.push(u.clone());
            }
            None => groups.push(ListenGroup {
                addr,
                plain: !secure,
                tls: secure,
                urls: vec![u.clone()],
            }),
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn secure_schemes() {
        assert!(url_needs_tls("https://127.0.0.1:2379"));
        assert!(url_needs_tls("unixs://sock"));
        assert!(!url_needs_tls("http://127.0.0.1:2379"));
        assert!(!url_needs_tls("unix://sock"));
    }

    #[test]
    fn https_without_certs_is_refused_with_etcds_messages() {
        let none = TlsInfo::default();
        assert_eq!(
            check_client_urls(&s(&["http://a:1", "https://127.0.0.1:2379"]), &none)
                .unwrap_err()
                .to_string(),
            "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme"
        );
        assert_eq!(
            check_peer_urls(&s(&["https://127.0.0.1:2380"]), &none)
                .unwrap_err()
                .to_string(),
            "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"
        );
        assert_eq!(
            check_metrics_urls(&s(&["https://127.0.0.1:2381"]), &none)
                .unwrap_err()
                .to_string(),
            "client TLS key/cert (--cert-file, --key-file) must be provided for metrics secure url"
        );
        let some = TlsInfo {
            cert_file: Some("c".into()),
            key_file: Some("k".into()),
            ..Default::default()
        };
        check_client_urls(&s(&["https://127.0.0.1:2379", "http://x:1"]), &some).unwrap();
        check_client_urls(&s(&["http://127.0.0.1:2379"]), &none).unwrap();
    }

    #[test]
    fn urls_group_by_address() {
        let g = group_listen_urls(&s(&[
            "http://127.0.0.1:2379",
            "https://127.0.0.1:2379",
            "https://127.0.0.1:22379",
        ]))
        .unwrap();
        assert_eq!(g.len(), 2);
        assert!(g[0].plain && g[0].tls);
        assert!(!g[1].plain && g[1].tls);
        assert!(g[1].acceptor(Role::Client, None).is_err());
        assert!(group_listen_urls(&s(&["ftp://x:1"])).is_err());
    }
}
