//! Tokens: `--auth-token` parsing, simple tokens with an injected clock, JWTs for every sign
//! method Hearth supports (valid, expired, forged, tampered, malformed), and tokens of users
//! deleted while the token is live.

use std::collections::HashMap;
use std::time::Duration;

use api::etcdserverpb::{AuthUserDeleteRequest, InternalAuthenticateRequest};
use getrandom::rand_core::UnwrapErr;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

use super::*;
use crate::options::parse_go_duration;
use crate::simple_token::token_index;
use crate::TokenKind;

// ---- --auth-token --------------------------------------------------------------------------

fn provider(opts: &str, files: &[(&str, Vec<u8>)]) -> Result<TokenProvider, AuthError> {
    let files: HashMap<String, Vec<u8>> = files
        .iter()
        .map(|(n, b)| (n.to_string(), b.clone()))
        .collect();
    TokenProvider::from_options_with(opts, Duration::from_secs(300), &|path| {
        files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, path.to_string()))
    })
}

#[test]
fn auth_token_option_strings_are_parsed_as_etcd_parses_them() {
    assert_eq!(provider("simple", &[]).unwrap().kind(), TokenKind::Simple);
    // Fields after "simple" are ignored, as etcd does.
    assert_eq!(
        provider("simple,x=y", &[]).unwrap().kind(),
        TokenKind::Simple
    );
    assert_eq!(provider("", &[]).unwrap().kind(), TokenKind::Nop);
    for bad in [
        "oauth",
        "jwt,sign-method",
        "jwt,sign-method=HS256,sign-method=HS256",
        "jwt,a=b=c",
        "simple,",
        "jwt,priv-key=k,sign-method=HS999",
        "jwt,priv-key=k",
        "jwt,priv-key=k,sign-method=HS256,ttl=5",
        "jwt,priv-key=k,sign-method=HS256,ttl=five",
        "jwt,priv-key=missing,sign-method=HS256",
    ] {
        assert!(
            matches!(
                provider(bad, &[("k", b"secret".to_vec())]),
                Err(AuthError::InvalidAuthOpts)
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        provider("jwt,sign-method=HS256", &[]),
        Err(AuthError::MissingKey)
    ));
    assert!(matches!(
        provider("jwt,sign-method=HS256,priv-key=", &[]),
        Err(AuthError::MissingKey)
    ));
    assert!(matches!(
        provider("jwt,sign-method=RS256", &[]),
        Err(AuthError::MissingKey)
    ));
    assert!(matches!(
        provider("jwt,sign-method=ES512,priv-key=k", &[("k", b"x".to_vec())]),
        Err(AuthError::UnsupportedSignMethod(m)) if m == "ES512"
    ));
    assert!(matches!(
        provider("jwt,sign-method=none,priv-key=k", &[("k", b"x".to_vec())]),
        Err(AuthError::UnsupportedSignMethod(_))
    ));
    let p = provider(
        "jwt,sign-method=HS256,priv-key=k,ttl=1h30m,extra=ignored",
        &[("k", b"secret".to_vec())],
    )
    .unwrap();
    assert_eq!(p.kind(), TokenKind::Jwt);
    assert_eq!(p.ttl(), Some(Duration::from_secs(5400)));
    assert_eq!(p.jwt_method(), Some(("HS256", false)));
    // No ttl (or an empty one) means etcd's 5 minutes.
    let p = provider(
        "jwt,sign-method=HS256,priv-key=k,ttl=",
        &[("k", b"s".to_vec())],
    )
    .unwrap();
    assert_eq!(p.ttl(), Some(Duration::from_secs(300)));
}

#[test]
fn go_durations_parse_like_time_parse_duration() {
    let s = 1_000_000_000i128;
    assert_eq!(parse_go_duration("0"), Some(0));
    assert_eq!(parse_go_duration("-0"), Some(0));
    assert_eq!(parse_go_duration("5m"), Some(300 * s));
    assert_eq!(parse_go_duration("1h30m"), Some(5400 * s));
    assert_eq!(parse_go_duration("1.5h"), Some(5400 * s));
    assert_eq!(parse_go_duration(".5s"), Some(s / 2));
    assert_eq!(parse_go_duration("300ms"), Some(300_000_000));
    assert_eq!(parse_go_duration("2us"), Some(2_000));
    assert_eq!(parse_go_duration("2µs"), Some(2_000));
    assert_eq!(parse_go_duration("-10s"), Some(-10 * s));
    assert_eq!(parse_go_duration("+10s"), Some(10 * s));
    assert_eq!(
        parse_go_duration("1.0000000001s"),
        Some(s),
        "below a nanosecond"
    );
    for bad in [
        "",
        "5",
        "s",
        "1x",
        "1.s.",
        "-",
        "1h2",
        "9999999999999999999999h",
    ] {
        assert_eq!(parse_go_duration(bad), None, "{bad:?}");
    }
}

// ---- simple tokens -------------------------------------------------------------------------

#[test]
fn simple_token_indexes_are_parsed_strictly() {
    assert_eq!(token_index("abcdefghijklmnop.42"), Some(42));
    assert_eq!(token_index(".0"), Some(0));
    for bad in [
        "abc",
        "abc.",
        "a.b.1",
        "abc.-1",
        "abc.+1",
        "abc.1a",
        "abc. 1",
        "abc.99999999999999999999",
    ] {
        assert_eq!(token_index(bad), None, "{bad:?}");
    }
    let p = TokenProvider::simple(Duration::ZERO);
    assert_eq!(
        p.ttl(),
        Some(Duration::from_secs(300)),
        "0 means etcd's default"
    );
    assert_eq!(p.wait_index("abc.7").unwrap(), Some(7));
    assert_eq!(p.wait_index("Bearer abc.7").unwrap(), Some(7));
    assert!(matches!(
        p.wait_index("garbage"),
        Err(AuthError::InvalidAuthToken)
    ));
}

#[test]
fn simple_token_prefixes_are_sixteen_random_letters() {
    let p = TokenProvider::simple(Duration::from_secs(1));
    let a = p.gen_token_prefix();
    let b = p.gen_token_prefix();
    assert_eq!(a.len(), 16);
    assert!(a.bytes().all(|c| c.is_ascii_alphabetic()));
    assert_ne!(a, b);
}

#[test]
fn a_simple_token_lives_ttl_after_its_last_use_by_the_injected_clock() {
    let mut fx = Fx::with_tokens(TokenProvider::simple(Duration::from_secs(300)));
    fx.user_add("alice", "pw");
    fx.enable();
    let token = fx.login("alice", 5, at(0)).unwrap();
    // Each use moves the deadline: alive long after the first 300 s.
    for t in [299, 598, 897] {
        let ai = fx
            .store
            .auth_info_from_token(&token, at(t))
            .unwrap()
            .unwrap();
        assert_eq!(ai.username, "alice");
        assert_eq!(
            ai.revision,
            fx.store.revision(),
            "simple tokens carry the current revision"
        );
    }
    // Unused for more than 300 s: refused even before any purge.
    assert!(matches!(
        fx.store.auth_info_from_token(&token, at(897 + 301)),
        Err(AuthError::InvalidAuthToken)
    ));
    // A second token is purged by the timer once idle past its TTL, not before.
    let other = fx.login("alice", 6, at(1000)).unwrap();
    assert_eq!(fx.store.tokens().purge(at(1300)), 0);
    assert_eq!(fx.store.tokens().simple_tokens(), 1);
    assert_eq!(fx.store.tokens().purge(at(1301)), 1);
    assert_eq!(fx.store.tokens().simple_tokens(), 0);
    assert!(fx.store.auth_info_from_token(&other, at(1302)).is_err());
}

#[test]
fn unknown_malformed_and_disabled_tokens() {
    let mut fx = Fx::new();
    fx.user_add("alice", "pw");
    // Auth disabled: tokens are ignored, whatever they are.
    assert_eq!(fx.store.auth_info_from_token("junk", at(0)).unwrap(), None);
    fx.enable();
    let token = fx.login("alice", 3, at(0)).unwrap();
    for bad in [
        "",
        "junk",
        "abcdefghijklmnop.3",
        &format!("{token}0"),
        &format!("x{token}"),
    ] {
        assert!(
            matches!(
                fx.store.auth_info_from_token(bad, at(1)),
                Err(AuthError::InvalidAuthToken)
            ),
            "{bad:?}"
        );
    }
    // The gateway's "Bearer " form is accepted.
    let ai = fx
        .store
        .auth_info_from_token(&format!("Bearer {token}"), at(1))
        .unwrap();
    assert_eq!(ai.unwrap().username, "alice");
}

#[test]
fn a_users_simple_tokens_die_with_the_user() {
    let mut fx = Fx::new();
    fx.user_add("alice", "pw");
    fx.user_add("bob", "pw");
    fx.enable();
    let alice = fx.login("alice", 8, at(0)).unwrap();
    let bob = fx.login("bob", 9, at(0)).unwrap();
    let del = AuthUserDeleteRequest {
        name: "alice".into(),
    };
    fx.apply(|s, t| s.user_delete(t, &del)).unwrap();
    assert!(matches!(
        fx.store.auth_info_from_token(&alice, at(1)),
        Err(AuthError::InvalidAuthToken)
    ));
    assert!(fx
        .store
        .auth_info_from_token(&bob, at(1))
        .unwrap()
        .is_some());
    // Re-creating the user does not revive the token.
    fx.user_add("alice", "pw");
    assert!(fx.store.auth_info_from_token(&alice, at(2)).is_err());
}

#[test]
fn the_nop_provider_refuses_every_login_and_token() {
    let mut fx = Fx::with_tokens(TokenProvider::nop());
    fx.user_add("alice", "pw");
    fx.enable();
    assert_eq!(fx.store.tokens().gen_token_prefix(), "");
    assert_eq!(fx.store.tokens().wait_index("x.1").unwrap(), None);
    assert!(matches!(
        fx.login("alice", 1, at(0)),
        Err(AuthError::AuthFailed)
    ));
    assert!(matches!(
        fx.store.auth_info_from_token("x.1", at(0)),
        Err(AuthError::InvalidAuthToken)
    ));
}

// ---- JWT -----------------------------------------------------------------------------------

struct Keys {
    private: Vec<u8>,
    public: Vec<u8>,
}

fn rsa_keys() -> (Keys, Keys) {
    let key = rsa::PrivateKey::new(&mut UnwrapErr(getrandom::SysRng), 2048).unwrap();
    let pkcs1 = Keys {
        private: key
            .to_pkcs1_pem(LineEnding::LF)
            .unwrap()
            .as_bytes()
            .to_vec(),
        public: key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
            .into_bytes(),
    };
    let pkcs8 = Keys {
        private: key
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap()
            .as_bytes()
            .to_vec(),
        public: pkcs1.public.clone(),
    };
    (pkcs1, pkcs8)
}

fn rcgen_keys(alg: &'static rcgen::SignatureAlgorithm) -> Keys {
    let kp = rcgen::KeyPair::generate_for(alg).unwrap();
    Keys {
        private: kp.serialize_pem().into_bytes(),
        public: kp.public_key_pem().into_bytes(),
    }
}

/// The same P-256 key in SEC1 form (`EC PRIVATE KEY`, what `openssl ecparam -genkey` writes).
fn sec1(k: &Keys) -> Keys {
    use p256::pkcs8::DecodePrivateKey;
    let key = p256::SecretKey::from_pkcs8_pem(std::str::from_utf8(&k.private).unwrap()).unwrap();
    Keys {
        private: key.to_sec1_pem(LineEnding::LF).unwrap().as_bytes().to_vec(),
        public: k.public.clone(),
    }
}

/// A self-signed certificate for a key pair given as PKCS#8 PEM (etcd's docs use a server
/// certificate as `pub-key`).
fn certificate(pkcs8_private: &[u8]) -> Vec<u8> {
    let kp = rcgen::KeyPair::from_pem(std::str::from_utf8(pkcs8_private).unwrap()).unwrap();
    rcgen::CertificateParams::new(vec!["jwt.hearth".into()])
        .unwrap()
        .self_signed(&kp)
        .unwrap()
        .pem()
        .into_bytes()
}

fn jwt(
    method: &str,
    keys: &Keys,
    with_public: bool,
    ttl: &str,
) -> Result<TokenProvider, AuthError> {
    let opts = if with_public {
        format!("jwt,sign-method={method},priv-key=priv,pub-key=pub,ttl={ttl}")
    } else {
        format!("jwt,sign-method={method},priv-key=priv,ttl={ttl}")
    };
    provider(
        &opts,
        &[("priv", keys.private.clone()), ("pub", keys.public.clone())],
    )
}

fn verify_only(method: &str, public: &[u8]) -> Result<TokenProvider, AuthError> {
    provider(
        &format!("jwt,sign-method={method},pub-key=pub"),
        &[("pub", public.to_vec())],
    )
}

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn assign(p: &TokenProvider, user: &str, rev: u64, now: Now) -> String {
    p.assign(user, rev, "", 0, now).unwrap()
}

/// The contract of one working provider: claims as etcd writes them, valid strictly before
/// `exp`, refused when tampered with or truncated.
fn check_provider(p: &TokenProvider, label: &str) {
    let token = assign(p, "alice", 42, at(0));
    let c = claims(&token);
    assert_eq!(c["username"], "alice", "{label}");
    assert_eq!(c["revision"], 42, "{label}");
    assert_eq!(c["exp"], unix(600), "{label}: exp = now + ttl (10m)");
    let ai = p
        .info(&token, 7, at(599))
        .unwrap_or_else(|| panic!("{label}: valid token"));
    assert_eq!(
        ai,
        AuthInfo {
            username: "alice".into(),
            revision: 42
        },
        "{label}: a JWT carries its own revision"
    );
    assert!(
        p.info(&token, 7, at(600)).is_none(),
        "{label}: expired at exp"
    );
    // Tampering with the payload (alice -> admin) breaks the signature.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let forged_claims = serde_json::json!({"exp": unix(600), "revision": 42, "username": "root"});
    parts[1] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        forged_claims.to_string(),
    );
    assert!(
        p.info(&parts.join("."), 7, at(1)).is_none(),
        "{label}: tampered"
    );
    for bad in [
        "",
        "a.b",
        "a.b.c",
        &token[..token.len() - 3],
        &format!("{token}.x"),
    ] {
        assert!(p.info(bad, 7, at(1)).is_none(), "{label}: {bad:?}");
    }
}

#[test]
fn jwt_hmac_rsa_pss_ecdsa_and_eddsa_providers_sign_and_verify_etcds_claims() {
    let secret = Keys {
        private: b"a shared secret".to_vec(),
        public: Vec::new(),
    };
    for m in ["HS256", "HS384", "HS512"] {
        check_provider(&jwt(m, &secret, false, "10m").unwrap(), m);
    }
    let (pkcs1, pkcs8) = rsa_keys();
    for m in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        check_provider(&jwt(m, &pkcs1, true, "10m").unwrap(), &format!("{m} pkcs1"));
    }
    check_provider(&jwt("RS256", &pkcs8, false, "10m").unwrap(), "RS256 pkcs8");
    let p256 = rcgen_keys(&rcgen::PKCS_ECDSA_P256_SHA256);
    check_provider(&jwt("ES256", &p256, true, "10m").unwrap(), "ES256 pkcs8");
    check_provider(
        &jwt("ES256", &sec1(&p256), true, "10m").unwrap(),
        "ES256 sec1",
    );
    let p384 = rcgen_keys(&rcgen::PKCS_ECDSA_P384_SHA384);
    check_provider(&jwt("ES384", &p384, true, "10m").unwrap(), "ES384");
    let ed = rcgen_keys(&rcgen::PKCS_ED25519);
    check_provider(&jwt("EdDSA", &ed, true, "10m").unwrap(), "EdDSA");
}

#[test]
fn a_verify_only_provider_accepts_tokens_of_its_key_pair_and_cannot_sign() {
    let (pkcs1, pkcs8) = rsa_keys();
    let signer = jwt("RS256", &pkcs1, false, "10m").unwrap();
    let token = assign(&signer, "alice", 3, at(0));
    let cert = certificate(&pkcs8.private);
    for public in [&pkcs1.public, &cert] {
        let v = verify_only("RS256", public).unwrap();
        assert_eq!(v.jwt_method(), Some(("RS256", true)));
        assert_eq!(v.info(&token, 0, at(1)).unwrap().username, "alice");
        assert!(matches!(
            v.assign("alice", 3, "", 0, at(0)),
            Err(AuthError::VerifyOnly)
        ));
    }
    let ec = rcgen_keys(&rcgen::PKCS_ECDSA_P256_SHA256);
    let signer = jwt("ES256", &ec, false, "10m").unwrap();
    let token = assign(&signer, "bob", 1, at(0));
    let v = verify_only("ES256", &certificate(&ec.private)).unwrap();
    assert_eq!(v.info(&token, 0, at(1)).unwrap().username, "bob");
}

#[test]
fn tokens_signed_with_another_key_or_algorithm_are_refused() {
    let (a, _) = rsa_keys();
    let (b, _) = rsa_keys();
    let pa = jwt("RS256", &a, false, "10m").unwrap();
    let pb = jwt("RS256", &b, false, "10m").unwrap();
    let token = assign(&pb, "root", 9, at(0));
    assert!(pa.info(&token, 0, at(1)).is_none(), "another RSA key");
    // Same key, other algorithm (RS256 vs PS256): the header's alg must be the configured one.
    let ps = jwt("PS256", &a, false, "10m").unwrap();
    assert!(pa.info(&assign(&ps, "root", 9, at(0)), 0, at(1)).is_none());
    // The classic confusion: HMAC keyed with the RSA public key.
    let hs = EncodingKey::from_secret(&a.public).unwrap();
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"exp": unix(600), "revision": 9, "username": "root"}),
        &hs,
    )
    .unwrap();
    assert!(pa.info(&confused, 0, at(1)).is_none(), "alg confusion");
    // An unsigned token.
    let header = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        r#"{"alg":"none","typ":"JWT"}"#,
    );
    let body = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        format!(r#"{{"exp":{},"revision":9,"username":"root"}}"#, unix(600)),
    );
    assert!(
        pa.info(&format!("{header}.{body}."), 0, at(1)).is_none(),
        "alg none"
    );
    // HMAC with the wrong secret.
    let s1 = Keys {
        private: b"one".to_vec(),
        public: vec![],
    };
    let s2 = Keys {
        private: b"two".to_vec(),
        public: vec![],
    };
    let t = assign(&jwt("HS256", &s1, false, "1m").unwrap(), "u", 1, at(0));
    assert!(jwt("HS256", &s2, false, "1m")
        .unwrap()
        .info(&t, 0, at(1))
        .is_none());
}

/// Signs arbitrary claims with HS256 and `secret`.
fn hs256(secret: &[u8], claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

#[test]
fn jwt_claims_are_validated_like_golang_jwt_v4() {
    let secret = b"s3cret";
    let p = jwt(
        "HS256",
        &Keys {
            private: secret.to_vec(),
            public: vec![],
        },
        false,
        "5m",
    )
    .unwrap();
    let now = unix(0);
    let ok = |c: serde_json::Value| p.info(&hs256(secret, c), 0, at(0));
    // No exp, or exp 0: never expires (etcd always sets one, golang-jwt does not require it).
    assert!(ok(serde_json::json!({"revision": 1, "username": "u"})).is_some());
    assert!(ok(serde_json::json!({"exp": 0, "revision": 1, "username": "u"})).is_some());
    assert!(ok(serde_json::json!({"exp": now + 1, "revision": 1, "username": "u"})).is_some());
    assert!(ok(serde_json::json!({"exp": now, "revision": 1, "username": "u"})).is_none());
    assert!(ok(serde_json::json!({"exp": "later", "revision": 1, "username": "u"})).is_none());
    // nbf and iat in the future make the token not yet valid.
    assert!(ok(serde_json::json!({"nbf": now + 10, "revision": 1, "username": "u"})).is_none());
    assert!(ok(serde_json::json!({"iat": now + 10, "revision": 1, "username": "u"})).is_none());
    assert!(
        ok(serde_json::json!({"iat": now, "nbf": now, "revision": 1, "username": "u"})).is_some()
    );
    // username must be a string and revision a non-negative number; floats are truncated.
    assert!(ok(serde_json::json!({"revision": 1})).is_none());
    assert!(ok(serde_json::json!({"revision": 1, "username": 5})).is_none());
    assert!(ok(serde_json::json!({"username": "u"})).is_none());
    assert!(ok(serde_json::json!({"revision": "1", "username": "u"})).is_none());
    assert!(ok(serde_json::json!({"revision": -1, "username": "u"})).is_none());
    assert_eq!(
        ok(serde_json::json!({"revision": 7.9, "username": "u"}))
            .unwrap()
            .revision,
        7
    );
}

#[test]
fn a_token_issued_by_etcd_3_4_is_accepted_and_ours_has_the_same_shape() {
    // Issued by Debian's etcd 3.4.23 started with
    // `--auth-token jwt,priv-key=<file holding "hearth-interop-secret">,sign-method=HS256,ttl=10m`
    // for user alice at auth revision 4 (POST /v3/auth/authenticate).
    let etcd = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3OTYyMTM1MzcsInJldmlzaW9uIjo0LCJ1c2VybmFtZSI6ImFsaWNlIn0.zXUl3QOzbmgByZaKvAOKk6tb2xPmrGPu5-wOlXUCvA4";
    let keys = Keys {
        private: b"hearth-interop-secret".to_vec(),
        public: vec![],
    };
    let p = jwt("HS256", &keys, false, "10m").unwrap();
    let issued_at = wall(1_796_213_537 - 600);
    let now = Now {
        instant: at(0).instant,
        wall: issued_at,
    };
    assert_eq!(
        p.info(etcd, 0, now),
        Some(AuthInfo {
            username: "alice".into(),
            revision: 4
        })
    );
    let after = Now {
        wall: wall(1_796_213_537),
        ..now
    };
    assert!(p.info(etcd, 0, after).is_none(), "expired at its exp");
    // Ours, for the same user, revision and time, has the same claims (header key order
    // differs, which verifiers ignore).
    let ours = p.assign("alice", 4, "", 0, now).unwrap();
    assert_eq!(claims(&ours), claims(etcd));
}

#[test]
fn bad_key_files_and_mismatched_key_pairs_are_refused_at_startup() {
    let (a, _) = rsa_keys();
    let (b, _) = rsa_keys();
    let mismatched = Keys {
        private: a.private.clone(),
        public: b.public.clone(),
    };
    assert!(matches!(
        jwt("RS256", &mismatched, true, "1m"),
        Err(AuthError::KeyMismatch)
    ));
    let garbage = Keys {
        private: b"not a key".to_vec(),
        public: b"not a key".to_vec(),
    };
    match jwt("RS256", &garbage, false, "1m") {
        Err(AuthError::InvalidKey(m)) => {
            assert_eq!(
                m,
                "invalid key: Key must be a PEM encoded PKCS1 or PKCS8 key"
            )
        }
        other => panic!("{other:?}"),
    }
    // An EC key for an RSA method, a P-384 key for ES256, an RSA public key for ES256.
    let ec384 = rcgen_keys(&rcgen::PKCS_ECDSA_P384_SHA384);
    match jwt("RS256", &ec384, false, "1m") {
        Err(AuthError::InvalidKey(m)) => assert_eq!(m, "key is not a valid RSA private key"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        jwt("ES256", &ec384, false, "1m"),
        Err(AuthError::InvalidKey(_))
    ));
    assert!(matches!(
        verify_only("ES256", &a.public),
        Err(AuthError::InvalidKey(_))
    ));
    // The error strings are etcd's.
    assert_eq!(
        AuthError::KeyMismatch.to_string(),
        "auth: public and private keys don't match"
    );
    assert_eq!(AuthError::MissingKey.to_string(), "auth: missing key data");
    assert_eq!(
        AuthError::InvalidAuthOpts.to_string(),
        "auth: invalid auth options"
    );
}

#[test]
fn a_jwt_of_a_deleted_user_fails_on_the_old_revision_and_admin_checks_find_no_user() {
    let keys = Keys {
        private: b"secret".to_vec(),
        public: vec![],
    };
    let mut fx = Fx::with_tokens(jwt("HS256", &keys, false, "10m").unwrap());
    fx.user_add("alice", "pw");
    fx.user_add("bob", "pw");
    fx.role_add("r");
    fx.grant("r", api::authpb::permission::Type::Readwrite, b"k", b"");
    fx.grant_role("alice", "r");
    fx.grant_role("alice", "root");
    fx.enable();
    let req = InternalAuthenticateRequest {
        name: "alice".into(),
        ..Default::default()
    };
    let token = fx.store.authenticate(&req, 1, at(0)).unwrap().token;
    let ai = fx
        .store
        .auth_info_from_token(&token, at(1))
        .unwrap()
        .unwrap();
    assert_eq!(ai.revision, fx.store.revision());
    fx.store.is_put_permitted(&ai, b"k").unwrap();
    let del = AuthUserDeleteRequest {
        name: "alice".into(),
    };
    fx.apply(|s, t| s.user_delete(t, &del)).unwrap();
    // The token still decodes (JWTs are stateless) but is useless.
    let ai = fx
        .store
        .auth_info_from_token(&token, at(2))
        .unwrap()
        .unwrap();
    assert!(matches!(
        fx.store.is_put_permitted(&ai, b"k"),
        Err(AuthError::AuthOldRevision)
    ));
    assert!(matches!(
        fx.store.is_admin_permitted(&ai),
        Err(AuthError::UserNotFound)
    ));
    // Even once the user is back, at a newer revision, the old token is behind it.
    fx.user_add("alice", "pw");
    let ai = fx
        .store
        .auth_info_from_token(&token, at(3))
        .unwrap()
        .unwrap();
    assert!(matches!(
        fx.store.is_range_permitted(&ai, b"k", b""),
        Err(AuthError::AuthOldRevision)
    ));
    // A jwt expired by the injected clock is an invalid token.
    assert!(matches!(
        fx.store.auth_info_from_token(&token, at(600)),
        Err(AuthError::InvalidAuthToken)
    ));
}
