//! URLs as etcd's flags and membership requests take them (`http://host:port`, no path), parsed in one
//! place with `http::Uri`. The text the user gave is what is kept and compared (member ids are derived
//! from it), so nothing here renders a URL again.

use http::Uri;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UrlError {
    /// No scheme.
    Scheme,
    /// Not `scheme://authority`, or something after the authority (a path, even `/`, a query or a
    /// fragment), or user information.
    Shape,
}

/// Parses `scheme://authority` with nothing after the authority.
pub(crate) fn parse(url: &str) -> Result<Uri, UrlError> {
    let uri: Uri = url.parse().map_err(|_| UrlError::Shape)?;
    let scheme = uri.scheme_str().ok_or(UrlError::Scheme)?;
    let authority = uri.authority().ok_or(UrlError::Shape)?.as_str();
    // `Uri` reports an absent path as "/" and drops a fragment, so the text is compared instead.
    let exact = url.len() == scheme.len() + "://".len() + authority.len();
    if !exact || authority.contains('@') {
        return Err(UrlError::Shape);
    }
    Ok(uri)
}

/// What follows the host in `uri`'s authority: `""`, `":"` or `":<port>"`.
fn after_host(uri: &Uri) -> &str {
    uri.authority()
        .and_then(|a| a.as_str().strip_prefix(a.host()))
        .unwrap_or_default()
}

/// The port of `uri`'s authority: `Ok(None)` when there is none (`host`) or it is empty (`host:`, which
/// etcd accepts), an error when it is not a port number.
pub(crate) fn port(uri: &Uri) -> Result<Option<u16>, ()> {
    match after_host(uri).strip_prefix(':') {
        None | Some("") => Ok(None),
        Some(p) => p.parse().map(Some).map_err(|_| ()),
    }
}

/// Whether `uri` names a port, possibly empty (etcd's `net.SplitHostPort` succeeds).
pub(crate) fn has_port(uri: &Uri) -> bool {
    after_host(uri).starts_with(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scheme_and_authority() {
        let u = parse("http://127.0.0.1:2380").unwrap();
        assert_eq!(u.host(), Some("127.0.0.1"));
        assert_eq!(port(&u), Ok(Some(2380)));
        assert_eq!(parse("foo").unwrap_err(), UrlError::Scheme);
        for bad in [
            "http://",
            "http://h:1/",
            "http://h:1/path",
            "http://h:1?q",
            "http://h:1#f",
            "http://user@h:1",
            "http://a b:1",
        ] {
            assert_eq!(parse(bad).unwrap_err(), UrlError::Shape, "{bad}");
        }
        assert!(port(&parse("http://h:notaport").unwrap()).is_err());
        assert!(port(&parse("http://h:99999").unwrap()).is_err());
        assert_eq!(port(&parse("http://h").unwrap()), Ok(None));
        assert!(has_port(&parse("http://h:").unwrap()));
        assert!(!has_port(&parse("http://[::1]").unwrap()));
        assert_eq!(port(&parse("http://[::1]:7").unwrap()), Ok(Some(7)));
    }
}
