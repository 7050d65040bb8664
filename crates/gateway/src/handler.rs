//! One gateway request: JSON body → request message → the gRPC call, in process, through the very
//! service stack the gRPC port serves → response message(s) → JSON, as grpc-gateway's generated
//! handlers and `ForwardResponseMessage` / `ForwardResponseStream` do it.
//!
//! Streams are never buffered here: the HTTP body pulls one response from the gRPC stream each
//! time hyper can write, so a client that stops reading stops the pulling, and the service's own
//! bounded queues (and slow-watcher handling) decide what happens next; request values are read
//! from the HTTP body one at a time as the service asks for them.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use futures::{stream, StreamExt};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use prost_reflect::DynamicMessage;
use tonic::codec::Streaming;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, KeyAndValueRef, MetadataMap};
use tonic::{Code, Status};

use crate::body::{BodyError, JsonValues};
use crate::codec::DynCodec;
use crate::errors;
use crate::jsonpb;
use crate::{Inner, Method};

/// The gRPC metadata key that carries an auth token (etcd's `rpctypes.TokenFieldNameGRPC`).
const TOKEN: &str = "token";
/// Request headers forwarded as gRPC metadata under the rest of their name (grpc-gateway's
/// `MetadataHeaderPrefix`).
const METADATA_PREFIX: &str = "grpc-metadata-";

/// The gRPC metadata for a gateway request, as grpc-gateway's `AnnotateContext` derives it:
/// `Grpc-Metadata-<key>` headers become `<key>`, and the `Authorization` header carries the auth
/// token (etcd reads it as it reads the `token` metadata a gRPC client sends; an explicit
/// `Grpc-Metadata-Token` wins, as `token` wins over `authorization` in etcd).
pub(crate) fn request_metadata(headers: &HeaderMap) -> MetadataMap {
    let mut md = MetadataMap::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(METADATA_PREFIX) else {
            continue;
        };
        // Binary metadata would need grpc-gateway's base64 step; etcd's services read none.
        if key.is_empty() || key.ends_with("-bin") {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            AsciiMetadataKey::from_bytes(key.as_bytes()),
            AsciiMetadataValue::try_from(value.as_bytes()),
        ) {
            md.append(k, v);
        }
    }
    if !md.contains_key(TOKEN) {
        if let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| AsciiMetadataValue::try_from(v.as_bytes()).ok())
        {
            md.insert(TOKEN, v);
        }
    }
    md
}

/// Response headers from the call's header metadata (`Grpc-Metadata-<key>`), as etcd forwards them.
fn forward_headers(md: &MetadataMap, b: http::response::Builder) -> http::response::Builder {
    let mut b = b;
    for kv in md.iter() {
        let KeyAndValueRef::Ascii(k, v) = kv else {
            continue;
        };
        let k = k.as_str();
        if k.starts_with("grpc-") || k == "te" || k == "content-length" {
            continue;
        }
        if let Ok(v) = HeaderValue::from_bytes(v.as_encoded_bytes()) {
            b = b.header(format!("grpc-metadata-{k}"), v);
        }
    }
    b
}

fn body_error(e: BodyError, code_for_syntax: Code, max: usize) -> http::Response<Body> {
    match e {
        BodyError::Syntax(msg) => errors::plain_error(code_for_syntax, &msg),
        // What etcd's gRPC server answers for a message over its limit.
        BodyError::TooLarge(n) => errors::call_error(&Status::new(
            Code::ResourceExhausted,
            format!("grpc: received message larger than max ({n} vs. {max})"),
        )),
        BodyError::Read => errors::plain_error(code_for_syntax, "unexpected EOF"),
    }
}

/// Serves a request for `method` (already routed).
pub(crate) async fn call(
    gw: Arc<Inner>,
    method: Arc<Method>,
    headers: HeaderMap,
    body: Body,
) -> http::Response<Body> {
    let md = request_metadata(&headers);
    let mut values = JsonValues::new(body, gw.max_body_bytes);
    let mut grpc = tonic::client::Grpc::new(gw.grpc.clone())
        // etcd's gateway dials with `MaxCallRecvMsgSize(math.MaxInt32)`.
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    if let Err(e) = grpc.ready().await {
        match e {}
    }
    let codec = DynCodec::new(method.output.clone());

    if method.client_streaming {
        // grpc-gateway decodes the first request before anything else; a body that does not
        // decode is an error of the stream set-up (code Unknown), an empty body opens the stream
        // without requests.
        let first = match values.next().await {
            Ok(Some(v)) => match jsonpb::decode(&gw.schema, &method.input, &v) {
                Ok(m) => Some(m),
                Err(e) => return errors::plain_error(Code::Unknown, &e),
            },
            Ok(None) => None,
            Err(e) => return body_error(e, Code::Unknown, gw.max_body_bytes),
        };
        let more = first.is_some();
        let rest = stream::unfold(
            (values, gw.clone(), method.clone(), more),
            |(mut values, gw, method, more)| async move {
                if !more {
                    return None;
                }
                // A value that does not decode, or the end of the body, half-closes the stream
                // (etcd's `CloseSend`); the responses keep coming.
                let v = values.next().await.ok()??;
                let m = jsonpb::decode(&gw.schema, &method.input, &v).ok()?;
                Some((m, (values, gw, method, true)))
            },
        );
        let requests = stream::iter(first).chain(rest);
        let req = tonic::Request::from_parts(md, Default::default(), requests);
        return match grpc.streaming(req, method.path.clone(), codec).await {
            // With no first request etcd never waits for the response headers, so it has none
            // to forward.
            Ok(resp) => forward_stream(gw, resp, more).await,
            Err(status) => errors::call_error(&status),
        };
    }

    let msg = match values.next().await {
        Ok(Some(v)) => match jsonpb::decode(&gw.schema, &method.input, &v) {
            Ok(m) => m,
            Err(e) => return errors::plain_error(Code::InvalidArgument, &e),
        },
        Ok(None) => DynamicMessage::new(method.input.clone()),
        Err(e) => return body_error(e, Code::InvalidArgument, gw.max_body_bytes),
    };
    let req = tonic::Request::from_parts(md, Default::default(), msg);
    if method.server_streaming {
        match grpc.server_streaming(req, method.path.clone(), codec).await {
            Ok(resp) => forward_stream(gw, resp, true).await,
            Err(status) => errors::call_error(&status),
        }
    } else {
        match grpc.unary(req, method.path.clone(), codec).await {
            Ok(resp) => {
                let (md, msg, _) = resp.into_parts();
                let mut out = Vec::with_capacity(256);
                jsonpb::encode(&gw.schema, &msg, &mut out);
                forward_headers(&md, http::Response::builder())
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(out))
                    .unwrap_or_default()
            }
            Err(status) => errors::call_error(&status),
        }
    }
}

/// One stream response as grpc-gateway writes it: `{"result":<message>}` and a newline.
fn result_chunk(gw: &Inner, msg: &DynamicMessage) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"result\":");
    jsonpb::encode(&gw.schema, msg, &mut out);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

/// Streams the responses. HTTP headers go out with the first response (as Go writes them with
/// the first chunk), so a call that fails before answering still gets its error's HTTP status.
/// `with_headers` says whether the call's header metadata is forwarded.
async fn forward_stream(
    gw: Arc<Inner>,
    resp: tonic::Response<Streaming<DynamicMessage>>,
    with_headers: bool,
) -> http::Response<Body> {
    let (md, mut responses, _) = resp.into_parts();
    let md = if with_headers { md } else { MetadataMap::new() };
    let (status, first, more) = match responses.message().await {
        Ok(Some(m)) => (StatusCode::OK, result_chunk(&gw, &m), true),
        Ok(None) => (StatusCode::OK, Bytes::new(), false),
        Err(s) => (
            errors::http_status(s.code()),
            Bytes::from(errors::stream_error_chunk(&s)),
            false,
        ),
    };
    let rest = stream::unfold(more.then_some((responses, gw)), |state| async move {
        let (mut responses, gw) = state?;
        match responses.message().await {
            Ok(Some(m)) => {
                let chunk = result_chunk(&gw, &m);
                Some((chunk, Some((responses, gw))))
            }
            Ok(None) => None,
            // The error ends the stream, without a newline after it.
            Err(s) => Some((Bytes::from(errors::stream_error_chunk(&s)), None)),
        }
    });
    let chunks = stream::once(async move { first })
        .filter(|c| std::future::ready(!c.is_empty()))
        .chain(rest)
        .map(Ok::<Bytes, Infallible>);
    forward_headers(&md, http::Response::builder())
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(chunks))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_header_becomes_the_token() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("tok.1"));
        h.insert("grpc-metadata-hasleader", HeaderValue::from_static("true"));
        h.insert("user-agent", HeaderValue::from_static("curl"));
        let md = request_metadata(&h);
        assert_eq!(md.get(TOKEN).unwrap(), "tok.1");
        assert_eq!(md.get("hasleader").unwrap(), "true");
        assert!(md.get("user-agent").is_none());
    }

    #[test]
    fn an_explicit_token_metadata_wins_over_authorization() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("b"));
        h.insert("grpc-metadata-token", HeaderValue::from_static("a"));
        let md = request_metadata(&h);
        assert_eq!(md.get_all(TOKEN).iter().count(), 1);
        assert_eq!(md.get(TOKEN).unwrap(), "a");
    }
}
