//! etcd's `simple` tokens (`simple_token.go`): opaque `<16 letters>.<index>` strings, known only to
//! the members that applied the Authenticate entry that minted them.
//!
//! The member that receives Authenticate draws the 16 letters ([`gen_token_prefix`]) and proposes
//! them; every member, applying that entry at log index `i`, registers the token `letters.i` for
//! the user ([`SimpleTokens::assign`]). A member asked about a token first waits until it has
//! applied index `i` (etcd's `indexWaiter`: [`token_index`]), so a token minted through another
//! member is known by the time it is looked up.
//!
//! # Expiry without a clock
//!
//! A token lives `ttl` (`--auth-token-ttl`, 300 s by default) after its last use: every
//! successful lookup moves its deadline to `now + ttl`, as etcd does. Nothing here reads a clock
//! or runs a timer: each call takes `now`, a token past its deadline is refused at once, and
//! [`SimpleTokens::purge`] drops expired tokens from memory when the server's timer calls it
//! (etcd's keeper does the same every second). Tokens are memory only: a restart forgets them all
//! and clients authenticate again, as with etcd.
//!
//! # Locking
//!
//! The table sits behind its own mutex because every request's lookup writes to it (the
//! deadline) while the rest of the auth store is only read; the server can then keep the store
//! under a read lock on the request path. The mutex is held for a hash-map operation only.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;

/// The letters etcd draws simple-token prefixes from.
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Length of a simple-token prefix (etcd's `defaultSimpleTokenLength`).
pub const SIMPLE_TOKEN_PREFIX_LEN: usize = 16;

/// etcd's default simple-token TTL (`--auth-token-ttl` 300), also used for a TTL of 0.
pub const DEFAULT_SIMPLE_TOKEN_TTL: Duration = Duration::from_secs(300);

/// 16 letters from the operating system's CSPRNG: the random part of a simple token, drawn by
/// the member that receives Authenticate and carried in the proposal.
pub fn gen_token_prefix() -> String {
    let mut rng = rand::rngs::OsRng;
    (0..SIMPLE_TOKEN_PREFIX_LEN)
        .map(|_| char::from(LETTERS[rng.gen_range(0..LETTERS.len())]))
        .collect()
}

/// The log index a simple token was minted at, or `None` if `token` is not of the form
/// `<anything without a dot>.<decimal u64>` (etcd's `isValidSimpleToken`: such a token is
/// invalid without waiting for anything).
pub fn token_index(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_prefix, index, rest) = (parts.next()?, parts.next()?, parts.next());
    if rest.is_some() || index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    index.parse().ok()
}

#[derive(Debug)]
struct Entry {
    user: String,
    deadline: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    /// Tokens are kept only while auth is enabled (etcd's keeper runs only then).
    enabled: bool,
    tokens: HashMap<String, Entry>,
}

/// The table of live simple tokens.
#[derive(Debug)]
pub(crate) struct SimpleTokens {
    ttl: Duration,
    state: Mutex<State>,
}

impl SimpleTokens {
    pub(crate) fn new(ttl: Duration) -> SimpleTokens {
        let ttl = if ttl.is_zero() {
            DEFAULT_SIMPLE_TOKEN_TTL
        } else {
            ttl
        };
        SimpleTokens {
            ttl,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The table is a map that is consistent after every operation: a poisoned lock is harmless.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    pub(crate) fn enable(&self) {
        self.state().enabled = true;
    }

    /// Forgets every token (etcd's `disable`).
    pub(crate) fn disable(&self) {
        let mut st = self.state();
        st.enabled = false;
        st.tokens.clear();
    }

    /// Registers `prefix.index` for `user`, alive until `now + ttl`, and returns it. While auth is
    /// disabled the token is returned but not registered (as etcd).
    pub(crate) fn assign(&self, user: &str, prefix: &str, index: u64, now: Instant) -> String {
        let token = format!("{prefix}.{index}");
        let mut st = self.state();
        if !st.enabled {
            return token;
        }
        let entry = Entry {
            user: user.to_string(),
            deadline: now.checked_add(self.ttl),
        };
        if st.tokens.insert(token.clone(), entry).is_some() {
            // etcd panics here; the only way to get here is a prefix proposed twice.
            tracing::warn!(
                user,
                "simple token assigned twice; the later assignment wins"
            );
        }
        token
    }

    /// The user of a live token, moving its deadline to `now + ttl`. An unknown token, or one
    /// past its deadline, is `None`.
    pub(crate) fn user(&self, token: &str, now: Instant) -> Option<String> {
        let mut st = self.state();
        let entry = st.tokens.get_mut(token)?;
        if entry.deadline.is_some_and(|d| now > d) {
            st.tokens.remove(token);
            return None;
        }
        entry.deadline = now.checked_add(self.ttl);
        Some(entry.user.clone())
    }

    /// Forgets every token of `user` (after its deletion or a password change).
    pub(crate) fn invalidate_user(&self, user: &str) {
        self.state().tokens.retain(|_, e| e.user != user);
    }

    /// Keeps only the tokens whose user satisfies `keep`.
    pub(crate) fn retain_users(&self, keep: impl Fn(&str) -> bool) {
        self.state().tokens.retain(|_, e| keep(&e.user));
    }

    /// Forgets the tokens past their deadline at `now`; returns how many.
    pub(crate) fn purge(&self, now: Instant) -> usize {
        let mut st = self.state();
        let before = st.tokens.len();
        st.tokens.retain(|_, e| e.deadline.is_none_or(|d| now <= d));
        before - st.tokens.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.state().tokens.len()
    }
}
