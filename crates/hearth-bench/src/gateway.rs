//! The JSON gateway mode (`--gateway`): put and range sent as `POST /v3/kv/put` and
//! `POST /v3/kv/range` with JSON bodies (bytes in base64), as an HTTP client that does not speak
//! gRPC sends them. Each client has its own HTTP/1.1 keep-alive connection, since HTTP/1.1 carries
//! one request at a time per connection (`--conns` does not apply); a connection the server
//! closed is opened again for the next request.

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Bytes as a JSON string: standard padded base64, as the gateway reads bytes fields.
pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// One client's connection to the gateway of one endpoint.
pub struct JsonConn {
    /// `host:port`.
    addr: String,
    tx: Option<SendRequest<Full<Bytes>>>,
}

impl JsonConn {
    /// A connection to `endpoint` (`host:port` or `http://host:port`), opened on first use.
    pub fn new(endpoint: &str) -> JsonConn {
        let addr = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        JsonConn { addr, tx: None }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if self.tx.as_ref().is_none_or(|t| t.is_closed()) {
            let s = tokio::net::TcpStream::connect(&self.addr)
                .await
                .map_err(|e| format!("connect {}: {e}", self.addr))?;
            let _ = s.set_nodelay(true);
            let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                .await
                .map_err(|e| format!("HTTP/1.1 handshake with {}: {e}", self.addr))?;
            tokio::spawn(conn);
            self.tx = Some(tx);
        }
        self.tx.as_mut().ok_or_else(|| "not connected".to_string())
    }

    /// POSTs `body` to `path`; an answer other than 200 is an error named by its status and the
    /// gateway's error message.
    pub async fn post(&mut self, path: &str, body: Bytes) -> Result<(), String> {
        let req = hyper::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", self.addr.as_str())
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let tx = self.sender().await?;
        tx.ready().await.map_err(|e| e.to_string())?;
        let resp = match tx.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.tx = None;
                return Err(format!("POST {path}: {e}"));
            }
        };
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("POST {path}: reading the answer: {e}"))?
            .to_bytes();
        if status.is_success() {
            return Ok(());
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        Err(format!("HTTP {}: {message}", status.as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_taken_with_or_without_scheme() {
        assert_eq!(
            JsonConn::new("http://127.0.0.1:2379/").addr,
            "127.0.0.1:2379"
        );
        assert_eq!(JsonConn::new("127.0.0.1:2379").addr, "127.0.0.1:2379");
    }

    #[test]
    fn bytes_are_standard_base64() {
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(&[0xfb, 0xff]), "+/8=");
    }
}
