//! The token provider chosen by `--auth-token` (etcd's `TokenProvider` and `NewTokenProvider`):
//! `simple` (the default), `jwt,...`, or the empty string, which issues no tokens at all
//! (etcd's `tokenNop`: Authenticate fails, every token is invalid).

use std::time::Duration;

use crate::error::AuthError;
use crate::jwt::JwtTokens;
use crate::options::{decompose, JwtOptions};
use crate::simple_token::{self, SimpleTokens};
use crate::{AuthInfo, Now};

/// Which kind of tokens a provider issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// `simple`: random tokens registered on every member at apply, with a sliding TTL.
    Simple,
    /// `jwt`: signed tokens carrying user, auth revision and expiry.
    Jwt,
    /// `""`: no tokens (every Authenticate fails).
    Nop,
}

#[derive(Debug)]
enum Inner {
    Simple(SimpleTokens),
    Jwt(Box<JwtTokens>),
    Nop,
}

/// Issues and checks tokens. Owned by the [`AuthStore`](crate::AuthStore), which enables,
/// disables and invalidates it as auth changes; `Send + Sync`, with the simple-token table behind
/// its own mutex (see `simple_token`).
#[derive(Debug)]
pub struct TokenProvider {
    inner: Inner,
}

impl TokenProvider {
    /// A `simple` provider whose tokens live `ttl` after their last use (`--auth-token-ttl`;
    /// 0 means etcd's default, 300 s).
    pub fn simple(ttl: Duration) -> TokenProvider {
        TokenProvider {
            inner: Inner::Simple(SimpleTokens::new(ttl)),
        }
    }

    /// A provider that issues no tokens (`--auth-token ""`).
    pub fn nop() -> TokenProvider {
        TokenProvider { inner: Inner::Nop }
    }

    /// Parses `--auth-token` (e.g. `simple`, or
    /// `jwt,pub-key=app.pub,priv-key=app.key,sign-method=RS256,ttl=10m`) and reads the key files
    /// it names. `simple_ttl` is `--auth-token-ttl`. Errors are etcd's: `InvalidAuthOpts` for a
    /// malformed string, an unknown type or sign method, a bad `ttl` or an unreadable file
    /// (the reason is logged); `MissingKey`, `KeyMismatch`, `InvalidKey` or
    /// `UnsupportedSignMethod` for unusable keys.
    pub fn from_options(opts: &str, simple_ttl: Duration) -> Result<TokenProvider, AuthError> {
        Self::from_options_with(opts, simple_ttl, &|path| std::fs::read(path))
    }

    /// [`from_options`](Self::from_options) with the key files read by `read_file` (the only
    /// I/O this crate would otherwise do; tests pass keys from memory).
    pub fn from_options_with(
        opts: &str,
        simple_ttl: Duration,
        read_file: &dyn Fn(&str) -> std::io::Result<Vec<u8>>,
    ) -> Result<TokenProvider, AuthError> {
        let (kind, fields) = decompose(opts)?;
        match kind {
            "simple" => {
                tracing::warn!("simple token is not cryptographically signed");
                Ok(Self::simple(simple_ttl))
            }
            "jwt" => {
                let jwt_opts = JwtOptions::parse(&fields, read_file)?;
                Ok(TokenProvider {
                    inner: Inner::Jwt(Box::new(JwtTokens::new(&jwt_opts)?)),
                })
            }
            "" => Ok(Self::nop()),
            other => {
                tracing::warn!(r#type = other, "unknown token type");
                Err(AuthError::InvalidAuthOpts)
            }
        }
    }

    /// The kind of tokens issued.
    pub fn kind(&self) -> TokenKind {
        match self.inner {
            Inner::Simple(_) => TokenKind::Simple,
            Inner::Jwt(_) => TokenKind::Jwt,
            Inner::Nop => TokenKind::Nop,
        }
    }

    /// For `simple`: a fresh random prefix to put in the Authenticate proposal
    /// (`InternalAuthenticateRequest.simple_token`). Empty for the other kinds (etcd's
    /// `GenTokenPrefix`).
    pub fn gen_token_prefix(&self) -> String {
        match self.inner {
            Inner::Simple(_) => simple_token::gen_token_prefix(),
            _ => String::new(),
        }
    }

    /// For `simple`: the log index the server must have applied before it looks `token` up
    /// (etcd waits for it with a deadline; a token whose index is never reached is invalid).
    /// `Ok(None)` for the other kinds; `InvalidAuthToken` for a simple token that is malformed.
    pub fn wait_index(&self, token: &str) -> Result<Option<u64>, AuthError> {
        match self.inner {
            Inner::Simple(_) => simple_token::token_index(strip_bearer(token))
                .map(Some)
                .ok_or(AuthError::InvalidAuthToken),
            _ => Ok(None),
        }
    }

    /// For `simple`: forgets the tokens unused for longer than the TTL at `now`; returns how
    /// many. The server calls it from a timer (etcd checks every second); a token past its
    /// deadline is refused even before it is purged.
    pub fn purge(&self, now: Now) -> usize {
        match &self.inner {
            Inner::Simple(s) => s.purge(now.instant),
            _ => 0,
        }
    }

    /// Number of live simple tokens (0 for the other kinds).
    pub fn simple_tokens(&self) -> usize {
        match &self.inner {
            Inner::Simple(s) => s.len(),
            _ => 0,
        }
    }

    /// The simple-token TTL, or the JWT lifetime (`None` for nop or a negative JWT TTL).
    pub fn ttl(&self) -> Option<Duration> {
        match &self.inner {
            Inner::Simple(s) => Some(s.ttl()),
            Inner::Jwt(j) => u64::try_from(j.ttl_nanos()).ok().map(Duration::from_nanos),
            Inner::Nop => None,
        }
    }

    /// For `jwt`: the sign method; whether it can only verify.
    pub fn jwt_method(&self) -> Option<(&str, bool)> {
        match &self.inner {
            Inner::Jwt(j) => Some((j.method(), j.verify_only())),
            _ => None,
        }
    }

    pub(crate) fn enable(&self) {
        if let Inner::Simple(s) = &self.inner {
            s.enable();
        }
    }

    pub(crate) fn disable(&self) {
        if let Inner::Simple(s) = &self.inner {
            s.disable();
        }
    }

    pub(crate) fn invalidate_user(&self, user: &str) {
        if let Inner::Simple(s) = &self.inner {
            s.invalidate_user(user);
        }
    }

    pub(crate) fn retain_users(&self, keep: impl Fn(&str) -> bool) {
        if let Inner::Simple(s) = &self.inner {
            s.retain_users(keep);
        }
    }

    /// A token for `username` (etcd's `assign`): simple tokens are `prefix.index` and become
    /// known here; JWTs carry `revision` and expire after their TTL; nop refuses (`AuthFailed`).
    pub(crate) fn assign(
        &self,
        username: &str,
        revision: u64,
        prefix: &str,
        index: u64,
        now: Now,
    ) -> Result<String, AuthError> {
        match &self.inner {
            Inner::Simple(s) => Ok(s.assign(username, prefix, index, now.instant)),
            Inner::Jwt(j) => j.assign(username, revision, now.wall),
            Inner::Nop => Err(AuthError::AuthFailed),
        }
    }

    /// Who `token` belongs to (etcd's `info`). A simple token yields the store's current
    /// `revision`, a JWT the revision it was issued at.
    pub(crate) fn info(&self, token: &str, revision: u64, now: Now) -> Option<AuthInfo> {
        match &self.inner {
            Inner::Simple(s) => {
                simple_token::token_index(token)?;
                s.user(token, now.instant)
                    .map(|username| AuthInfo { username, revision })
            }
            Inner::Jwt(j) => j.info(token, now.wall),
            Inner::Nop => None,
        }
    }
}

/// The token without the `Bearer ` prefix etcd 3.5.x accepts in the `authorization` header.
pub fn strip_bearer(token: &str) -> &str {
    token.strip_prefix("Bearer ").unwrap_or(token)
}
