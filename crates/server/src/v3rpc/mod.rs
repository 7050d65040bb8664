//! The gRPC services, as etcd's `v3rpc` package: they validate requests, hand them to the server and map
//! errors to etcd's statuses. They hold no state of their own.

pub mod election;
pub mod interceptor;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod member;
pub mod unimplemented;
pub mod validate;
pub mod watch;

/// Rewrites tonic's status for an oversized request message into grpc-go's, which etcd clients see from etcd:
/// `ResourceExhausted "grpc: received message larger than max (N vs. M)"`. tonic rejects such a request before
/// the service runs and answers trailers-only, so the status is in the response headers.
pub fn fix_oversize_status<B>(mut resp: http::Response<B>) -> http::Response<B> {
    const OUT_OF_RANGE: &[u8] = b"11";
    let h = resp.headers_mut();
    if h.get("grpc-status").map(|v| v.as_bytes()) != Some(OUT_OF_RANGE) {
        return resp;
    }
    let Some(msg) = h.get("grpc-message").and_then(|v| v.to_str().ok()) else {
        return resp;
    };
    let msg = percent_decode(msg);
    let Some(rest) = msg.strip_prefix("Error, decoded message length too large: found ") else {
        return resp;
    };
    let mut nums = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let (Some(found), Some(limit)) = (nums.next(), nums.next()) else {
        return resp;
    };
    let text = format!("grpc: received message larger than max ({found} vs. {limit})");
    if let Ok(v) = http::HeaderValue::from_str(&text) {
        h.insert("grpc-status", http::HeaderValue::from_static("8"));
        h.insert("grpc-message", v);
    }
    resp
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn oversize_status_is_rewritten_and_others_kept() {
        let mk = |code: &'static str, msg: &'static str| {
            let mut r = http::Response::new(());
            r.headers_mut()
                .insert("grpc-status", http::HeaderValue::from_static(code));
            r.headers_mut()
                .insert("grpc-message", http::HeaderValue::from_static(msg));
            r
        };
        let r = super::fix_oversize_status(mk(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%202098190%20bytes,%20the%20limit%20is:%202097152%20bytes",
        ));
        assert_eq!(r.headers()["grpc-status"], "8");
        assert_eq!(
            r.headers()["grpc-message"],
            "grpc: received message larger than max (2098190 vs. 2097152)"
        );
        let r = super::fix_oversize_status(mk(
            "11",
            "etcdserver:%20mvcc:%20required%20revision%20is%20a%20future%20revision",
        ));
        assert_eq!(r.headers()["grpc-status"], "11");
    }
}
