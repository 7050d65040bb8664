//! `--auth-token` as etcd parses it (`store.go`'s `decomposeOpts`, `options.go`): the token type,
//! then `name=value` fields separated by commas, e.g.
//! `jwt,pub-key=app.pub,priv-key=app.key,sign-method=RS256,ttl=5m`.

use std::collections::HashMap;

use crate::error::AuthError;

/// The JWT fields etcd knows; others are accepted with a warning.
const KNOWN_JWT_OPTIONS: [&str; 4] = ["sign-method", "pub-key", "priv-key", "ttl"];

/// etcd's default JWT lifetime (`DefaultTTL`, 5 minutes), in nanoseconds.
pub(crate) const DEFAULT_JWT_TTL_NANOS: i128 = 5 * 60 * 1_000_000_000;

/// Splits `--auth-token` into its type and fields. A field without exactly one `=`, or a field
/// given twice, is `InvalidAuthOpts` (etcd's `decomposeOpts`).
pub(crate) fn decompose(opts: &str) -> Result<(&str, HashMap<&str, &str>), AuthError> {
    let mut parts = opts.split(',');
    let kind = parts.next().unwrap_or("");
    let mut fields = HashMap::new();
    for part in parts {
        let pair: Vec<&str> = part.split('=').collect();
        let [name, value] = pair[..] else {
            tracing::error!(option = opts, "invalid token option");
            return Err(AuthError::InvalidAuthOpts);
        };
        if fields.insert(name, value).is_some() {
            tracing::error!(option = opts, duplicate = name, "invalid token option");
            return Err(AuthError::InvalidAuthOpts);
        }
    }
    Ok((kind, fields))
}

/// The JWT fields, with the key files read.
#[derive(Debug)]
pub(crate) struct JwtOptions {
    pub(crate) sign_method: String,
    pub(crate) pub_key: Option<Vec<u8>>,
    pub(crate) priv_key: Option<Vec<u8>>,
    /// Token lifetime in nanoseconds; Go durations may be negative.
    pub(crate) ttl_nanos: i128,
}

/// Sign methods Go's golang-jwt registers; anything else is `InvalidAuthOpts` in etcd. Which of
/// them Hearth can use is decided in `jwt`.
const GO_SIGN_METHODS: [&str; 14] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "ES512", "EdDSA", "none",
];

impl JwtOptions {
    /// etcd's `ParseWithDefaults`: `ttl` (a Go duration, 5m if absent or empty), the key files
    /// (an empty value means "not given"), and `sign-method`, in etcd's order. Every failure is
    /// `InvalidAuthOpts`, with the reason logged.
    pub(crate) fn parse(
        fields: &HashMap<&str, &str>,
        read_file: &dyn Fn(&str) -> std::io::Result<Vec<u8>>,
    ) -> Result<JwtOptions, AuthError> {
        let fail = |reason: String| {
            tracing::error!(%reason, "problem loading JWT options");
            AuthError::InvalidAuthOpts
        };
        let ttl_nanos = match fields.get("ttl").copied().unwrap_or("") {
            "" => DEFAULT_JWT_TTL_NANOS,
            s => parse_go_duration(s).ok_or_else(|| fail(format!("invalid duration {s:?}")))?,
        };
        let read = |name: &str| -> Result<Option<Vec<u8>>, AuthError> {
            match fields.get(name).copied().unwrap_or("") {
                "" => Ok(None),
                path => read_file(path)
                    .map(Some)
                    .map_err(|e| fail(format!("{name} {path}: {e}"))),
            }
        };
        let pub_key = read("pub-key")?;
        let priv_key = read("priv-key")?;
        let sign_method = fields.get("sign-method").copied().unwrap_or("");
        if !GO_SIGN_METHODS.contains(&sign_method) {
            return Err(fail(format!(
                "auth: invalid auth signature method {sign_method:?}"
            )));
        }
        let unknown: Vec<&str> = fields
            .keys()
            .copied()
            .filter(|k| !KNOWN_JWT_OPTIONS.contains(k))
            .collect();
        if !unknown.is_empty() {
            tracing::warn!(keys = ?unknown, "unknown JWT options");
        }
        Ok(JwtOptions {
            sign_method: sign_method.to_string(),
            pub_key,
            priv_key,
            ttl_nanos,
        })
    }
}

/// Go's `time.ParseDuration`: an optional sign, then `0` alone or one or more decimal numbers
/// (with an optional fraction) each followed by a unit (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`,
/// `h`), e.g. `300s`, `1h30m`, `1.5h`. Returns nanoseconds, `None` if malformed or beyond Go's
/// range (±2^63-1 ns).
pub(crate) fn parse_go_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            _ => return None,
        };
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            // More than 30 digits overflows Go's range anyway.
            if int_part.len() > 30 {
                return None;
            }
            int_part.parse().ok()?
        };
        let mut v = int.checked_mul(unit_nanos)?;
        // Fractions below a nanosecond are dropped, as Go does.
        let mut scale = unit_nanos;
        for d in frac_part.bytes().take(30) {
            scale /= 10;
            if scale == 0 {
                break;
            }
            v += i128::from(d - b'0') * scale;
        }
        total = total.checked_add(v)?;
        if total > i128::from(i64::MAX) {
            return None;
        }
        rest = after;
    }
    Some(if neg { -total } else { total })
}
