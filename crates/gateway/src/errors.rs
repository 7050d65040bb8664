//! Errors as etcd's gateway (grpc-gateway v1's runtime, as built into Debian's etcd 3.4) writes
//! them: a gRPC status becomes `{"error":...,"message":...,"code":N}` with the HTTP status mapped
//! from its code; inside a stream it becomes an `{"error":{"grpc_code":...}}` chunk; routing
//! failures are Go's plain-text `http.Error` pages.

use axum::body::Body;
use bytes::Bytes;
use futures::stream;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use tonic::{Code, Status};

use crate::jsonpb::write_string;

/// grpc-gateway's `HTTPStatusFromCode` as etcd 3.4 ships it (`FailedPrecondition` is 412 there).
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Aborted => StatusCode::CONFLICT,
        Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Go's `http.StatusText` for the statuses `http_status` produces.
fn status_text(s: StatusCode) -> &'static str {
    s.canonical_reason().unwrap_or("")
}

/// The body of a unary error: grpc-gateway's `errorBody` through jsonpb (empty strings left out).
pub(crate) fn error_body(code: Code, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() * 2 + 40);
    out.push(b'{');
    if !message.is_empty() {
        out.extend_from_slice(b"\"error\":");
        write_string(&mut out, message);
        out.extend_from_slice(b",\"message\":");
        write_string(&mut out, message);
        out.push(b',');
    }
    out.extend_from_slice(format!("\"code\":{}", code as i32).as_bytes());
    out.push(b'}');
    out
}

fn json_headers(status: StatusCode) -> http::response::Builder {
    http::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
}

/// A request the gateway itself rejects before any call (an undecodable body): the status is the
/// code's, the body has no trailer.
pub(crate) fn plain_error(code: Code, message: &str) -> http::Response<Body> {
    json_headers(http_status(code))
        .body(Body::from(error_body(code, message)))
        .unwrap_or_default()
}

/// Trailer metadata of a failed call as etcd forwards it (`Grpc-Trailer-<key>`). grpc-go reports the
/// content type among a trailers-only response's trailers, so etcd always has that one.
fn trailers(status: &Status) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert(
        "grpc-trailer-content-type",
        HeaderValue::from_static("application/grpc"),
    );
    for kv in status.metadata().iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
            let k = k.as_str();
            if k.starts_with("grpc-") || k == "content-type" {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::try_from(format!("grpc-trailer-{k}")),
                HeaderValue::from_bytes(v.as_encoded_bytes()),
            ) {
                t.append(name, value);
            }
        }
    }
    t
}

/// A failed call: the error body, announced trailers, and the trailers themselves (sent only to a
/// client that asked for trailers with `TE: trailers`, as HTTP/1.1 requires).
pub(crate) fn call_error(status: &Status) -> http::Response<Body> {
    let t = trailers(status);
    let mut b = json_headers(http_status(status.code()));
    for name in t.keys() {
        b = b.header(header::TRAILER, name.as_str());
    }
    let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
        Ok(Frame::data(Bytes::from(error_body(
            status.code(),
            status.message(),
        )))),
        Ok(Frame::trailers(t)),
    ];
    b.body(Body::new(StreamBody::new(stream::iter(frames))))
        .unwrap_or_default()
}

/// The chunk that ends a stream whose call failed: grpc-gateway's `StreamError` under `"error"`.
pub(crate) fn stream_error_chunk(status: &Status) -> Vec<u8> {
    let code = status.code();
    let http = http_status(code);
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"error\":{");
    let mut fields: Vec<Vec<u8>> = Vec::new();
    if code != Code::Ok {
        fields.push(format!("\"grpc_code\":{}", code as i32).into_bytes());
    }
    fields.push(format!("\"http_code\":{}", http.as_u16()).into_bytes());
    if !status.message().is_empty() {
        let mut f = b"\"message\":".to_vec();
        write_string(&mut f, status.message());
        fields.push(f);
    }
    let mut f = b"\"http_status\":".to_vec();
    write_string(&mut f, status_text(http));
    fields.push(f);
    out.extend_from_slice(&fields.join(&b","[..]));
    out.extend_from_slice(b"}}");
    out
}

/// Go's `http.Error`: a plain-text page with a trailing newline.
pub(crate) fn text(status: StatusCode, msg: &str) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff")
        .body(Body::from(format!("{msg}\n")))
        .unwrap_or_default()
}

/// grpc-gateway's answer for a `/v3/...` path no route matches.
pub(crate) fn not_found() -> http::Response<Body> {
    text(StatusCode::NOT_FOUND, "Not Found")
}

/// grpc-gateway's answer for a route asked with another method than POST.
pub(crate) fn method_not_allowed() -> http::Response<Body> {
    text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unary_error_body_is_grpc_gateways() {
        assert_eq!(
            String::from_utf8(error_body(
                Code::InvalidArgument,
                "etcdserver: key is not provided"
            ))
            .unwrap(),
            r#"{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}"#
        );
        assert_eq!(
            String::from_utf8(error_body(Code::Unknown, "")).unwrap(),
            r#"{"code":2}"#
        );
    }

    #[test]
    fn stream_error_chunk_is_grpc_gateways() {
        let s = Status::new(Code::Unavailable, "etcdserver: no leader");
        assert_eq!(
            String::from_utf8(stream_error_chunk(&s)).unwrap(),
            r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#
        );
    }

    #[test]
    fn failed_precondition_is_412_as_in_etcd_3_4() {
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(http_status(Code::OutOfRange), StatusCode::BAD_REQUEST);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
