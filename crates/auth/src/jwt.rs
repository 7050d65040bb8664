//! etcd's `jwt` tokens (`jwt.go`, `options.go`): signed, self-contained tokens carrying the
//! claims `username`, `revision` (the auth revision at login) and `exp` (Unix seconds).
//!
//! A JWT needs no state on the members: any member holding the key verifies it. Its `revision`
//! is what the permission checks compare with the store's revision, so any change to users,
//! roles or permissions makes every older token fail with `AuthOldRevision` and clients log in
//! again; that is also how a token of a deleted user dies.
//!
//! # Keys and sign methods
//!
//! As etcd: `HS256/384/512` take the raw bytes of `priv-key` as the shared secret; `RS*`, `PS*`,
//! `ES256`, `ES384` and `EdDSA` take PEM files (PKCS#1 or PKCS#8 RSA keys, SEC1 or PKCS#8 EC
//! keys, PKCS#8 Ed25519 keys; public keys as PKIX, PKCS#1 or inside a certificate). With only
//! `pub-key` the provider verifies but cannot sign (Authenticate fails with `VerifyOnly`). Both
//! keys are checked at construction by signing a probe token and verifying it, so a bad key, a
//! key of the wrong curve, or a public key that does not belong to the private key is refused at
//! startup, not at the first login.
//!
//! Differences from etcd: `ES512` is refused (`UnsupportedSignMethod`): the `jsonwebtoken` crate
//! has no P-521. etcd 3.5 refuses `EdDSA` (3.6 accepts it; Hearth does). etcd's key-pair check
//! is a no-op for most mismatches; Hearth's refuses any mismatch. Key-parsing errors use
//! golang-jwt's messages without Go's x509 details.
//!
//! # Time
//!
//! Nothing reads the clock: [`JwtTokens::assign`] and [`JwtTokens::info`] take the wall time.
//! Validation is golang-jwt v4's `MapClaims.Valid` at one-second resolution: a token is valid
//! while `now < exp`, and not before `iat` or `nbf` if present; `exp` 0 means none; a
//! non-numeric time claim is invalid.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::AuthError;
use crate::options::JwtOptions;
use crate::AuthInfo;

/// Claims as etcd writes them (serde keeps field order; Go sorts map keys: the same order).
#[derive(Serialize)]
struct Claims<'a> {
    exp: i64,
    revision: u64,
    username: &'a str,
}

/// A JWT token provider.
pub(crate) struct JwtTokens {
    method: String,
    alg: Algorithm,
    /// `None`: verify-only (no private key).
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    ttl_nanos: i128,
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens")
            .field("method", &self.method)
            .field("verify_only", &self.encoding.is_none())
            .field("ttl_nanos", &self.ttl_nanos)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

fn algorithm(method: &str) -> Result<(Algorithm, Family), AuthError> {
    Ok(match method {
        "HS256" => (Algorithm::HS256, Family::Hmac),
        "HS384" => (Algorithm::HS384, Family::Hmac),
        "HS512" => (Algorithm::HS512, Family::Hmac),
        "RS256" => (Algorithm::RS256, Family::Rsa),
        "RS384" => (Algorithm::RS384, Family::Rsa),
        "RS512" => (Algorithm::RS512, Family::Rsa),
        "PS256" => (Algorithm::PS256, Family::Rsa),
        "PS384" => (Algorithm::PS384, Family::Rsa),
        "PS512" => (Algorithm::PS512, Family::Rsa),
        "ES256" => (Algorithm::ES256, Family::Ec),
        "ES384" => (Algorithm::ES384, Family::Ec),
        "EdDSA" => (Algorithm::EdDSA, Family::Ed),
        other => return Err(AuthError::UnsupportedSignMethod(other.to_string())),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn is_pem(bytes: &[u8]) -> bool {
    contains(bytes, b"-----BEGIN ")
}

/// golang-jwt's error for a key file of the wrong kind.
fn invalid_key(bytes: &[u8], what: &str) -> AuthError {
    if is_pem(bytes) {
        AuthError::InvalidKey(format!("key is not a valid {what}"))
    } else {
        AuthError::InvalidKey("invalid key: Key must be a PEM encoded PKCS1 or PKCS8 key".into())
    }
}

/// An ECDSA private key in SEC1 form (`EC PRIVATE KEY`, what `openssl ecparam -genkey` writes)
/// rewritten as PKCS#8, the only form `jsonwebtoken` reads.
fn sec1_to_pkcs8(pem: &[u8], alg: Algorithm) -> Option<Vec<u8>> {
    use p256::pkcs8::EncodePrivateKey;
    let text = std::str::from_utf8(pem).ok()?;
    let doc = match alg {
        Algorithm::ES256 => p256::SecretKey::from_sec1_pem(text)
            .ok()?
            .to_pkcs8_der()
            .ok()?,
        Algorithm::ES384 => p384::SecretKey::from_sec1_pem(text)
            .ok()?
            .to_pkcs8_der()
            .ok()?,
        _ => return None,
    };
    Some(doc.as_bytes().to_vec())
}

fn private_key(pem: &[u8], alg: Algorithm, family: Family) -> Result<EncodingKey, AuthError> {
    let r = match family {
        Family::Hmac => EncodingKey::from_secret(pem),
        Family::Rsa => EncodingKey::from_rsa_pem(pem),
        Family::Ec => {
            let sec1 = contains(pem, b"-----BEGIN EC PRIVATE KEY-----");
            match sec1.then(|| sec1_to_pkcs8(pem, alg)).flatten() {
                Some(der) => Ok(EncodingKey::from_ec_der(&der)),
                None if sec1 => return Err(invalid_key(pem, "ECDSA private key")),
                None => EncodingKey::from_ec_pem(pem),
            }
        }
        Family::Ed => match ed25519_pkcs8_v1(pem) {
            Some(der) => Ok(EncodingKey::from_ed_der(&der)),
            None => return Err(invalid_key(pem, private_kind(family))),
        },
    };
    r.map_err(|_| invalid_key(pem, private_kind(family)))
}

/// The DER inside the first PEM block of `pem`.
fn pem_der(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN "))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END "))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()
}

/// An Ed25519 private key as the 48-byte PKCS#8 v1 document `jsonwebtoken` expects. OpenSSL
/// writes v1; other tools (ring, rcgen) write v2, which appends the public key: the seed is the
/// same, so v2 is rewritten as v1.
fn ed25519_pkcs8_v1(pem: &[u8]) -> Option<Vec<u8>> {
    // SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    // The algorithm identifier and the wrapped seed, as they appear in both versions.
    const SEED_PREFIX: [u8; 11] = [
        0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ];
    let der = pem_der(pem)?;
    if der.len() == 48 && der.starts_with(&V1_PREFIX) {
        return Some(der);
    }
    let at = der
        .windows(SEED_PREFIX.len())
        .position(|w| w == SEED_PREFIX)?
        + SEED_PREFIX.len();
    let seed = der.get(at..at + 32)?;
    let mut v1 = V1_PREFIX.to_vec();
    v1.extend_from_slice(seed);
    Some(v1)
}

fn private_kind(family: Family) -> &'static str {
    match family {
        Family::Hmac => "HMAC secret",
        Family::Rsa => "RSA private key",
        Family::Ec => "ECDSA private key",
        Family::Ed => "Ed25519 private key",
    }
}

fn public_kind(family: Family) -> &'static str {
    match family {
        Family::Hmac => "HMAC secret",
        Family::Rsa => "RSA public key",
        Family::Ec => "ECDSA public key",
        Family::Ed => "Ed25519 public key",
    }
}

fn public_key(pem: &[u8], alg: Algorithm, family: Family) -> Result<DecodingKey, AuthError> {
    let key = match family {
        Family::Hmac => DecodingKey::from_secret(pem),
        Family::Rsa => DecodingKey::from_rsa_pem(pem),
        Family::Ec => DecodingKey::from_ec_pem(pem),
        Family::Ed => DecodingKey::from_ed_pem(pem),
    }
    .map_err(|_| invalid_key(pem, public_kind(family)))?;
    // Parses the key material (the constructors above only unwrap the PEM).
    Jwk::from_decoding_key(&key, Some(alg)).map_err(|_| invalid_key(pem, public_kind(family)))?;
    Ok(key)
}

/// Nanoseconds since the Unix epoch (negative before it).
fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    let s = unix_nanos(t).div_euclid(1_000_000_000);
    i64::try_from(s).unwrap_or(if s < 0 { i64::MIN } else { i64::MAX })
}

fn validation(alg: Algorithm) -> Validation {
    // Signature and algorithm only: the time claims are checked against the caller's `now`.
    let mut v = Validation::new(alg);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.leeway = 0;
    v
}

impl JwtTokens {
    /// Builds the provider from parsed options (etcd's `newTokenProviderJWT` and `Key`).
    pub(crate) fn new(opts: &JwtOptions) -> Result<JwtTokens, AuthError> {
        let (alg, family) = algorithm(&opts.sign_method)?;
        if CryptoProvider::try_get_default().is_none() {
            return Err(AuthError::UnsupportedSignMethod(format!(
                "{} (no JWT crypto provider in this build)",
                opts.sign_method
            )));
        }
        let priv_key = opts.priv_key.as_deref().filter(|k| !k.is_empty());
        let pub_key = opts.pub_key.as_deref().filter(|k| !k.is_empty());
        let (encoding, decoding) = match (family, priv_key, pub_key) {
            (Family::Hmac, None, _) | (_, None, None) => return Err(AuthError::MissingKey),
            (Family::Hmac, Some(secret), _) => (
                Some(private_key(secret, alg, family)?),
                DecodingKey::from_secret(secret).map_err(|_| AuthError::MissingKey)?,
            ),
            (_, None, Some(public)) => (None, public_key(public, alg, family)?),
            (_, Some(private), public) => {
                let enc = private_key(private, alg, family)?;
                let own = Jwk::from_encoding_key(&enc, alg)
                    .and_then(|jwk| DecodingKey::from_jwk(&jwk))
                    .map_err(|_| invalid_key(private, private_kind(family)))?;
                if let Some(public) = public {
                    let given = public_key(public, alg, family)?;
                    let probe = sign(alg, &enc, "", 0, 0)
                        .map_err(|_| invalid_key(private, private_kind(family)))?;
                    if jsonwebtoken::decode::<Map<String, Value>>(&probe, &given, &validation(alg))
                        .is_err()
                    {
                        return Err(AuthError::KeyMismatch);
                    }
                }
                (Some(enc), own)
            }
        };
        let tokens = JwtTokens {
            method: opts.sign_method.clone(),
            alg,
            encoding,
            decoding,
            ttl_nanos: opts.ttl_nanos,
        };
        // Sign and verify once, so a key that cannot sign (wrong curve, too small) fails now.
        if let Some(enc) = &tokens.encoding {
            let probe = sign(alg, enc, "", 0, 0)
                .map_err(|_| invalid_key(priv_key.unwrap_or_default(), private_kind(family)))?;
            jsonwebtoken::decode::<Map<String, Value>>(&probe, &tokens.decoding, &validation(alg))
                .map_err(|_| invalid_key(priv_key.unwrap_or_default(), private_kind(family)))?;
        }
        Ok(tokens)
    }

    /// The sign method, as given in `--auth-token`.
    pub(crate) fn method(&self) -> &str {
        &self.method
    }

    /// The token lifetime in nanoseconds.
    pub(crate) fn ttl_nanos(&self) -> i128 {
        self.ttl_nanos
    }

    /// Whether this provider only verifies.
    pub(crate) fn verify_only(&self) -> bool {
        self.encoding.is_none()
    }

    /// A token for `username` at auth `revision`, expiring `ttl` after `now`.
    pub(crate) fn assign(
        &self,
        username: &str,
        revision: u64,
        now: SystemTime,
    ) -> Result<String, AuthError> {
        let Some(enc) = &self.encoding else {
            return Err(AuthError::VerifyOnly);
        };
        let exp = (unix_nanos(now) + self.ttl_nanos).div_euclid(1_000_000_000);
        let exp = i64::try_from(exp).unwrap_or(if exp < 0 { i64::MIN } else { i64::MAX });
        sign(self.alg, enc, username, revision, exp)
    }

    /// The user and revision in `token` if its signature, algorithm and time claims are valid
    /// at `now` and it carries a string `username` and a non-negative numeric `revision`.
    pub(crate) fn info(&self, token: &str, now: SystemTime) -> Option<AuthInfo> {
        let data = match jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &self.decoding,
            &validation(self.alg),
        ) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "failed to parse a JWT token");
                return None;
            }
        };
        let claims = data.claims;
        let now = unix_secs(now) as f64;
        // golang-jwt v4 compares at second precision: `exp` is truncated, `now` is whole seconds.
        let time_claim = |name: &str| -> Result<Option<f64>, ()> {
            match claims.get(name) {
                None => Ok(None),
                Some(Value::Number(n)) => match n.as_f64() {
                    Some(0.0) => Ok(None),
                    Some(v) => Ok(Some(v.trunc())),
                    None => Err(()),
                },
                Some(_) => Err(()),
            }
        };
        let valid_times = (|| -> Result<bool, ()> {
            let exp_ok = time_claim("exp")?.is_none_or(|exp| now < exp);
            let iat_ok = time_claim("iat")?.is_none_or(|iat| now >= iat);
            let nbf_ok = time_claim("nbf")?.is_none_or(|nbf| now >= nbf);
            Ok(exp_ok && iat_ok && nbf_ok)
        })();
        if valid_times != Ok(true) {
            tracing::warn!("invalid JWT token: expired, not yet valid, or malformed time claims");
            return None;
        }
        let Some(Value::String(username)) = claims.get("username") else {
            tracing::warn!("failed to obtain user claims from jwt token");
            return None;
        };
        let revision = match claims.get("revision") {
            Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
                (Some(r), _) => r,
                (None, Some(f)) if f >= 0.0 => f as u64,
                _ => {
                    tracing::warn!("failed to obtain revision claims from jwt token");
                    return None;
                }
            },
            _ => {
                tracing::warn!("failed to obtain revision claims from jwt token");
                return None;
            }
        };
        Some(AuthInfo {
            username: username.clone(),
            revision,
        })
    }
}

fn sign(
    alg: Algorithm,
    key: &EncodingKey,
    username: &str,
    revision: u64,
    exp: i64,
) -> Result<String, AuthError> {
    let claims = Claims {
        exp,
        revision,
        username,
    };
    jsonwebtoken::encode(&Header::new(alg), &claims, key)
        .map_err(|e| AuthError::Sign(e.to_string()))
}
