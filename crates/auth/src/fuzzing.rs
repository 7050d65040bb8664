//! The entry of the `auth_token` fuzz target (`fuzz/`, `docs/fuzzing.md`), also run for a bounded
//! number of iterations by this crate's tests: the `token` a client puts in its request metadata,
//! as a simple token (its index) and as a JWT checked against an HS256 key.
//!
//! Besides not panicking: a simple token's index is accepted only in etcd's one form
//! (`<prefix without a dot>.<decimal>`), and a JWT is accepted only with the key's signature, so
//! whatever user it names is one a token was signed for.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::jwt::JwtTokens;
use crate::options::JwtOptions;
use crate::simple_token::token_index;
use crate::token::strip_bearer;

/// The HMAC secret of the fuzz entry's JWT provider.
const SECRET: &[u8] = b"hearth fuzz secret";
/// The users the unit tests sign tokens for: the only names an accepted token may carry.
pub const SIGNED_USERS: [&str; 3] = ["root", "alice", "b\u{f6}b"];
/// The instant tokens are checked at (and the unit tests' tokens are issued at).
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn provider() -> Option<&'static JwtTokens> {
    static P: OnceLock<Option<JwtTokens>> = OnceLock::new();
    P.get_or_init(|| {
        JwtTokens::new(&JwtOptions {
            sign_method: "HS256".into(),
            pub_key: None,
            priv_key: Some(SECRET.to_vec()),
            ttl_nanos: 300 * 1_000_000_000,
        })
        .ok()
    })
    .as_ref()
}

/// A token signed for `user` at `revision`, valid at [`now`] (for the unit tests' seeds).
pub fn signed(user: &str, revision: u64) -> Option<String> {
    provider()?.assign(user, revision, now()).ok()
}

/// The fuzz entry.
pub fn fuzz_auth_token(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let token = strip_bearer(token);
    if let Some(i) = token_index(token) {
        let (prefix, digits) = token.split_once('.').expect("an index follows a dot");
        assert!(!prefix.contains('.') && digits.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(digits.parse::<u64>().ok(), Some(i));
    }
    if let Some(p) = provider() {
        if let Some(info) = p.info(token, now()) {
            assert!(
                SIGNED_USERS.contains(&info.username.as_str()),
                "accepted a token for {:?} nobody signed",
                info.username
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds() -> Vec<Vec<u8>> {
        let mut seeds: Vec<Vec<u8>> = SIGNED_USERS
            .iter()
            .zip([1u64, 42, u64::MAX])
            .map(|(u, r)| signed(u, r).expect("HS256 signs").into_bytes())
            .collect();
        seeds.push(format!("Bearer {}", signed("root", 7).unwrap()).into_bytes());
        seeds.push(b"abcdefghijklmnop.12345".to_vec());
        seeds.push(b"Bearer XyZxyzXYZxyzXyZx.18446744073709551615".to_vec());
        seeds
    }

    #[test]
    fn signed_tokens_are_accepted_for_their_user() {
        let p = provider().expect("an HS256 provider");
        for (u, r) in SIGNED_USERS.iter().zip([1u64, 42, u64::MAX]) {
            let info = p.info(&signed(u, r).unwrap(), now()).unwrap();
            assert_eq!((info.username.as_str(), info.revision), (*u, r));
        }
        assert_eq!(token_index("abcdefghijklmnop.12345"), Some(12345));
    }

    #[test]
    fn bounded_fuzz_of_auth_tokens() {
        fuzzcorpus::run(0x746f_6b65, &seeds(), 3000, fuzz_auth_token);
    }
}
