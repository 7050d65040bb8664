//! Request bodies as a sequence of JSON values, read the way Go's `json.Decoder` reads them: a
//! unary route takes the first value (an empty body is an empty request, anything after the first
//! value is ignored); a streaming route (`/v3/watch`, `/v3/lease/keepalive`) sends each value as one
//! request as it arrives, for as long as the client keeps the body open.
//!
//! Memory is bounded: only the value being read is buffered, and a value larger than the cap is
//! refused before it is complete. etcd's gateway has no cap of its own (its gRPC server refuses an
//! oversized message after the gateway built it); the cap sits well above the largest body that
//! can encode a request the server accepts (see `Config::max_body_bytes`).

use axum::body::Body;
use http_body_util::BodyExt;

use crate::jsonpb::json::{Split, ValueSplitter};

/// Why no (further) value could be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Go's decoder error text.
    Syntax(String),
    /// The value has grown past the cap; how many bytes were buffered.
    TooLarge(usize),
    /// The client's body failed (it hung up, or sent a broken chunked encoding).
    Read,
}

/// The JSON values of a request body.
pub(crate) struct JsonValues {
    body: Body,
    buf: Vec<u8>,
    splitter: ValueSplitter,
    eof: bool,
    cap: usize,
}

impl JsonValues {
    pub(crate) fn new(body: Body, cap: usize) -> JsonValues {
        JsonValues {
            body,
            buf: Vec::new(),
            splitter: ValueSplitter::default(),
            eof: false,
            cap,
        }
    }

    /// The next value's bytes, or None at the end of the body.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<u8>>, BodyError> {
        loop {
            match self.splitter.next(&self.buf, self.eof) {
                Split::Value { start, end } => {
                    let v = self.buf[start..end].to_vec();
                    self.buf.drain(..end);
                    return Ok(Some(v));
                }
                Split::Eof => return Ok(None),
                Split::Error(e) => return Err(BodyError::Syntax(e)),
                Split::More => {}
            }
            if self.buf.len() > self.cap {
                return Err(BodyError::TooLarge(self.buf.len()));
            }
            match self.body.frame().await {
                None => self.eof = true,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) => return Err(BodyError::Read),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn chunked(chunks: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<bytes::Bytes, std::convert::Infallible>> = chunks
            .iter()
            .map(|c| Ok(bytes::Bytes::from_static(c)))
            .collect();
        Body::from_stream(stream::iter(frames))
    }

    #[tokio::test]
    async fn values_span_chunks() {
        let mut v = JsonValues::new(chunked(&[b" {\"a\":", b"1}{\"b\"", b":2} ", b""]), 1024);
        assert_eq!(v.next().await, Ok(Some(b"{\"a\":1}".to_vec())));
        assert_eq!(v.next().await, Ok(Some(b"{\"b\":2}".to_vec())));
        assert_eq!(v.next().await, Ok(None));
    }

    #[tokio::test]
    async fn a_value_over_the_cap_is_refused_before_it_ends() {
        let mut v = JsonValues::new(chunked(&[b"{\"a\":\"", &[b'x'; 64], &[b'x'; 64]]), 100);
        assert_eq!(v.next().await, Err(BodyError::TooLarge(134)));
    }

    #[tokio::test]
    async fn a_body_ending_inside_a_value_is_unexpected_eof() {
        let mut v = JsonValues::new(chunked(&[b"{\"a\":"]), 100);
        assert_eq!(
            v.next().await,
            Err(BodyError::Syntax("unexpected EOF".into()))
        );
    }
}
