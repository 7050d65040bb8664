//! How a request finds its route, following the three Go layers it crosses in etcd: the access
//! controller (`--host-whitelist` on plain text, the client certificate check on TLS, CORS headers,
//! `OPTIONS`, `/v3beta/` rewritten to `/v3/`), Go's `http.ServeMux` (a
//! path that is not clean is redirected with 301), and grpc-gateway's `ServeMux` (exact path
//! components, an optional `:verb` suffix, 405 for a known path asked with another method than
//! POST, 404 otherwise).

use axum::body::Body;
use http::{header, HeaderValue, Method, StatusCode};

use crate::errors;

/// What the path and method select.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Index into `routes::ROUTES`.
    Route(usize),
    Redirect(String),
    NotFound,
    MethodNotAllowed,
}

/// Decodes `%XX` escapes as Go's `url.URL.Path` holds the path (invalid escapes kept as they are).
fn percent_decode(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `path.Clean`: no `.` or `..` elements, no repeated or trailing slashes.
fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `http.ServeMux` `cleanPath`: cleaned, rooted, a trailing slash kept.
fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return "/".to_string();
    }
    let rooted = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    };
    let mut np = clean(&rooted);
    if rooted.ends_with('/') && np != "/" {
        np.push('/');
    }
    np
}

/// The path etcd routes on: percent-decoded, `/v3beta/` taken as `/v3/`.
pub(crate) fn effective_path(raw: &str) -> String {
    let p = percent_decode(raw);
    match p.strip_prefix("/v3beta/") {
        Some(rest) => format!("/v3/{rest}"),
        None => p,
    }
}

/// Finds the route for `method` and the (effective) `path`; `query` is kept on a redirect.
pub(crate) fn lookup(method: &Method, path: &str, query: Option<&str>) -> Lookup {
    let cleaned = clean_path(path);
    if cleaned != path {
        let loc = match query {
            Some(q) if !q.is_empty() => format!("{cleaned}?{q}"),
            _ => cleaned,
        };
        return Lookup::Redirect(loc);
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Lookup::NotFound;
    };
    let mut components: Vec<&str> = rest.split('/').collect();
    // grpc-gateway splits a `:verb` off the last component; no etcd route has a verb.
    if let Some(last) = components.last_mut() {
        if let Some(idx) = last.rfind(':') {
            if idx == 0 || idx + 1 < last.len() {
                return Lookup::NotFound;
            }
            *last = &last[..idx];
        }
    }
    let wanted = format!("/{}", components.join("/"));
    let Some(i) = crate::routes::ROUTES
        .iter()
        .position(|(p, _, _)| *p == wanted)
    else {
        return Lookup::NotFound;
    };
    if method == Method::POST {
        Lookup::Route(i)
    } else {
        Lookup::MethodNotAllowed
    }
}

/// Go's `http.Redirect` with 301.
pub(crate) fn redirect(method: &Method, location: &str) -> http::Response<Body> {
    let mut b = http::Response::builder()
        .status(StatusCode::MOVED_PERMANENTLY)
        .header(header::LOCATION, location);
    let body = if method == Method::GET || method == Method::HEAD {
        b = b.header(header::CONTENT_TYPE, "text/html; charset=utf-8");
        if method == Method::GET {
            // Go's htmlEscape.
            let href = location
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&#34;")
                .replace('\'', "&#39;");
            format!("<a href=\"{href}\">Moved Permanently</a>.\n\n")
        } else {
            String::new()
        }
    } else {
        String::new()
    };
    b.body(Body::from(body)).unwrap_or_default()
}

/// etcd's `--cors` and `--host-whitelist` (its `AccessController`; an empty set or `*` allows
/// any), and `--client-cert-auth` with the auth state (`Config::client_cert_auth`).
#[derive(Debug)]
pub(crate) struct Access {
    cors: Vec<String>,
    hosts: Vec<String>,
    client_cert_auth: Option<crate::AuthEnabled>,
}

impl Access {
    pub(crate) fn new(
        cors: &[String],
        hosts: &[String],
        client_cert_auth: Option<crate::AuthEnabled>,
    ) -> Access {
        Access {
            cors: cors.to_vec(),
            hosts: hosts.to_vec(),
            client_cert_auth,
        }
    }

    /// etcd's check of a gateway request over TLS, in its order: `--client-cert-auth`, auth
    /// enabled, a `/v3/` path (after the `/v3beta/` rewrite), a client certificate with a CN.
    fn refuses_common_name(&self, conn: &transport::ConnInfo, path: &str) -> bool {
        self.client_cert_auth.as_ref().is_some_and(|a| a.get())
            && effective_path(path).starts_with("/v3/")
            && conn.common_name().is_some()
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.cors.is_empty() || self.cors.iter().any(|o| o == "*" || o == origin)
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|h| h == "*" || h == host)
    }
}

/// Go's `httputil.GetHostname`: the `Host` header without its port.
fn hostname(req: &http::Request<Body>) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((h, _)) = rest.split_once(']') {
            return h.to_string();
        }
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => host,
    }
}

/// etcd's answer to a `Host` not in `--host-whitelist` (its `errCVE20185702`).
fn misdirected(host: &str) -> http::Response<Body> {
    let msg = format!(
        "\netcd received your request, but the Host header was unrecognized.\n\nTo fix this, choose one of the following options:\n- Enable TLS, then any HTTPS request will be allowed.\n- Add the hostname you want to use to the whitelist in settings.\n  - e.g. etcd --host-whitelist {host:?}\n\nThis requirement has been added to help prevent \"DNS Rebinding\" attacks (CVE-2018-5702).\n"
    );
    errors::text(StatusCode::MISDIRECTED_REQUEST, &msg)
}

/// etcd's refusal of a gateway request carrying a client certificate with a CN while auth is on.
fn common_name_refused() -> http::Response<Body> {
    errors::text(
        StatusCode::BAD_REQUEST,
        "CommonName of client sending a request against gateway will be ignored and not used as expected",
    )
}

/// etcd's access controller, around every plain-HTTP answer of the client port. On a plain-text
/// connection a request whose `Host` is not in `--host-whitelist` is refused (421): the whitelist
/// defends against DNS rebinding, which TLS already defeats, so etcd looks at `Host` only there.
/// On a TLS connection the client certificate check applies instead (`Access::refuses_common_name`,
/// 400). Then the CORS headers are added for an origin `--cors` allows (`*` by default), and
/// `OPTIONS` is answered at once. Both refusals come first, without CORS headers, as in etcd.
pub(crate) async fn access_control(
    axum::extract::State(access): axum::extract::State<std::sync::Arc<Access>>,
    req: http::Request<Body>,
    next: axum::middleware::Next,
) -> http::Response<Body> {
    match req
        .extensions()
        .get::<transport::ConnInfo>()
        .filter(|c| c.is_tls())
    {
        None => {
            let host = hostname(&req);
            if !access.host_allowed(&host) {
                tracing::warn!(host = %host, "rejecting HTTP request to prevent DNS rebinding attacks");
                return misdirected(&host);
            }
        }
        Some(conn) => {
            if access.refuses_common_name(conn, req.uri().path()) {
                return common_name_refused();
            }
        }
    }
    let origin = if access.origin_allowed("*") {
        Some(HeaderValue::from_static("*"))
    } else {
        req.headers()
            .get(header::ORIGIN)
            .filter(|o| o.to_str().is_ok_and(|o| access.origin_allowed(o)))
            .cloned()
    };
    let mut resp = if req.method() == Method::OPTIONS {
        http::Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, "0")
            .body(Body::empty())
            .unwrap_or_default()
    } else {
        next.run(req).await
    };
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("accept, content-type, authorization"),
        );
    }
    resp
}

/// What the client port answers for a path nothing serves: gRPC's `Unimplemented` to a gRPC
/// request (as tonic's router does), Go's `404 page not found` to anything else.
pub(crate) async fn fallback(req: http::Request<Body>) -> http::Response<Body> {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let (parts, ()) = tonic::Status::unimplemented("")
            .into_http::<()>()
            .into_parts();
        return http::Response::from_parts(parts, Body::empty());
    }
    errors::text(StatusCode::NOT_FOUND, "404 page not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(path: &str) -> Lookup {
        lookup(&Method::POST, &effective_path(path), None)
    }

    #[test]
    fn routes_match_as_in_grpc_gateway() {
        assert!(matches!(post("/v3/kv/range"), Lookup::Route(_)));
        assert!(matches!(post("/v3beta/kv/range"), Lookup::Route(_)));
        assert!(matches!(post("/v3/kv/%72ange"), Lookup::Route(_)));
        // An empty verb is no verb; any other verb matches nothing.
        assert!(matches!(post("/v3/kv/range:"), Lookup::Route(_)));
        assert_eq!(post("/v3/kv/range:foo"), Lookup::NotFound);
        assert_eq!(post("/v3/kv/:range"), Lookup::NotFound);
        assert_eq!(post("/v3/kv/range/"), Lookup::NotFound);
        assert_eq!(post("/v3/kv/nope"), Lookup::NotFound);
        assert_eq!(post("/v3alpha/kv/range"), Lookup::NotFound);
        assert_eq!(
            lookup(&Method::GET, "/v3/kv/range", None),
            Lookup::MethodNotAllowed
        );
        assert_eq!(
            lookup(&Method::PUT, "/v3/watch", None),
            Lookup::MethodNotAllowed
        );
    }

    #[test]
    fn unclean_paths_redirect_as_go_servemux() {
        assert_eq!(
            post("/v3//kv/range"),
            Lookup::Redirect("/v3/kv/range".into())
        );
        assert_eq!(
            lookup(&Method::POST, "/v3/kv/./range", Some("a=1")),
            Lookup::Redirect("/v3/kv/range?a=1".into())
        );
        assert_eq!(
            post("/v3/x/../kv/range/"),
            Lookup::Redirect("/v3/kv/range/".into())
        );
    }

    #[test]
    fn path_clean_follows_go() {
        assert_eq!(clean("/a/b/../c/./d//"), "/a/c/d");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean_path("/v3/"), "/v3/");
    }
}
