//! Dialing peers and upstreams over TLS with tonic's `Channel`, without tonic's own TLS features.
//!
//! tonic's built-in TLS (`tls-ring`) cannot take a rustls configuration, so it could honour neither
//! `--cipher-suites`/`--tls-*-version` nor a client certificate re-read on rotation, nor auto TLS's
//! skipped verification. Instead [`Connector`] dials TCP and runs the handshake itself, and is given to
//! `Endpoint::connect_with_connector`. For an `https://` URL, [`endpoint`] dials `http://host:port` (so
//! tonic never tries TLS of its own, even if some other crate in the build enables its TLS features) and
//! sets the endpoint's origin to the `https://` URL, so requests still carry `:scheme: https` and the
//! right `:authority`.
//!
//! `Channel::balance_list` always uses tonic's own connector; a caller balancing over several URLs builds
//! one channel per URL with [`endpoint`] instead.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::Endpoint;

use crate::client_config::ClientTls;
use crate::error::TlsError;
use crate::maybe_tls::MaybeTls;

/// Dials TCP and, when configured with TLS, handshakes: a tower service for tonic's
/// `Endpoint::connect_with_connector`.
#[derive(Clone, Debug)]
pub struct Connector {
    tls: Option<ClientTls>,
}

impl Connector {
    /// Plaintext (`http://` URLs).
    pub fn plain() -> Connector {
        Connector { tls: None }
    }

    /// TLS with this configuration (`https://` URLs).
    pub fn tls(tls: ClientTls) -> Connector {
        Connector { tls: Some(tls) }
    }

    /// Connects to the host and port of `uri` (the scheme is not consulted: the connector decides).
    pub async fn connect(&self, uri: &Uri) -> io::Result<ClientConn> {
        let host = uri.host().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}"))
        })?;
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let tcp = TcpStream::connect((bare, port)).await?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(ClientConn::Plain(tcp));
        };
        let name = tls
            .server_name(host)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let stream = tokio_rustls::TlsConnector::from(tls.config())
            .connect(name, tcp)
            .await
            .map_err(own_refusal)?;
        match stream.get_ref().1.alpn_protocol() {
            None | Some(b"h2") => Ok(ClientConn::Tls(Box::new(stream))),
            Some(other) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "server negotiated {:?} instead of h2",
                    String::from_utf8_lossy(other)
                ),
            )),
        }
    }
}

/// A server certificate refused by one of our checks fails the dial with that check's own words (etcd's
/// "client certificate authentication failed"), not rustls' debug form of a foreign error.
fn own_refusal(e: io::Error) -> io::Error {
    let reason = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .and_then(crate::verify::refusal)
        .map(str::to_string);
    match reason {
        Some(r) => io::Error::new(e.kind(), r),
        None => e,
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<ClientConn>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<ClientConn>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(&uri).await.map(TokioIo::new) })
    }
}

/// A tonic endpoint for `url` and the connector that reaches it: plaintext for `http://`, TLS with `tls`
/// for `https://` (an error without it). Configure the endpoint (timeouts, keepalive) and call
/// `endpoint.connect_with_connector(connector)`.
pub fn endpoint(url: &str, tls: Option<&ClientTls>) -> Result<(Endpoint, Connector), TlsError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| TlsError::Config(format!("bad URL {url:?}: {e}")))?;
    let authority = uri
        .authority()
        .ok_or_else(|| TlsError::Config(format!("bad URL {url:?}: no host")))?
        .clone();
    match uri.scheme_str() {
        Some("http") => {
            let ep = Endpoint::from(uri);
            Ok((ep, Connector::plain()))
        }
        Some("https") => {
            let tls = tls.ok_or_else(|| {
                TlsError::Config(format!("cannot dial {url}: no TLS configuration for https"))
            })?;
            let dial: Uri = format!("http://{authority}")
                .parse()
                .map_err(|e| TlsError::Config(format!("bad URL {url:?}: {e}")))?;
            let origin: Uri = format!("https://{authority}")
                .parse()
                .map_err(|e| TlsError::Config(format!("bad URL {url:?}: {e}")))?;
            Ok((
                Endpoint::from(dial).origin(origin),
                Connector::tls(tls.clone()),
            ))
        }
        _ => Err(TlsError::Config(format!(
            "cannot dial {url}: scheme must be http or https"
        ))),
    }
}

/// A dialed connection, plaintext or TLS.
pub type ClientConn = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_endpoints_dial_plain_uris_with_an_https_origin() {
        let (ep, c) = endpoint("http://127.0.0.1:2380", None).unwrap();
        assert_eq!(ep.uri().to_string(), "http://127.0.0.1:2380/");
        assert!(c.tls.is_none());
        assert!(endpoint("https://127.0.0.1:2380", None)
            .unwrap_err()
            .to_string()
            .contains("no TLS configuration"));
        assert!(endpoint("unix:///tmp/x", None).is_err());
    }
}
