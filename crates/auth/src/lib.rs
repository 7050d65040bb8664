//! Hearth's auth store: etcd's authentication and role-based access control (`server/auth`) as a
//! plain value.
//!
//! Users (with bcrypt passwords, or `no_password` for certificate identities) have roles; roles
//! have permissions (READ, WRITE or READWRITE on a key, a range `[key, range_end)`, or every key
//! from `key` on with `range_end = "\0"`); the `root` role may do anything. Once auth is enabled,
//! every request carries a user, from a token obtained with Authenticate or from the client
//! certificate's common name, and is checked against that user's permissions.
//!
//! # Invariants
//!
//! * **No clocks, threads, sockets or Raft.** Every call that needs the time takes a [`Now`];
//!   tokens expire when the caller says the time has come. The crate knows the `api` message
//!   types and the backend's buckets, nothing of gRPC, Raft or the MVCC store.
//! * **Every change goes through the caller's transaction.** The apply-time methods
//!   ([`AuthStore::user_add`], [`AuthStore::role_grant_permission`], ...) take the applier's
//!   `backend::WriteTxn`, so a change commits atomically with the consistent index of the entry
//!   that made it. Records are etcd's, byte for byte (see `store`): a snapshot moves between
//!   Hearth and etcd 3.4/3.5 in either direction.
//! * **The auth revision moves with every change** (AuthEnable excepted, as in etcd) and permission
//!   checks refuse credentials from an older revision (`AuthOldRevision`), so a request that was
//!   authorized before a revoke cannot be applied after it.
//! * **bcrypt never runs under a lock or at apply.** Passwords are hashed before proposing and
//!   checked before proposing Authenticate, by plain functions ([`password`]) the server runs on a
//!   bounded blocking pool. The one exception is etcd's compatibility path for entries carrying a
//!   clear-text password, which Hearth never proposes.
//! * **Never panics on input.** Corrupt records are [`AuthError::Corrupt`]; bad tokens are
//!   `InvalidAuthToken`; bad options are etcd's option errors.
//!
//! # What the server does with it
//!
//! The store is one value (`Send + Sync`); the server keeps it behind an `RwLock`. Requests
//! take the read lock (token lookups mutate only the simple-token table, which has its own
//! mutex); the applier takes the write lock for auth entries while it holds the backend write
//! transaction (lock order: backend write transaction, then auth store, like the lessor).
//!
//! **Startup.** `TokenProvider::from_options(--auth-token, --auth-token-ttl)` (refuse to start on
//! error, printing it), then `AuthStore::open(&mut txn, tokens, --bcrypt-cost)` in a write
//! transaction, committed. After installing a snapshot: [`AuthStore::recover`]. A timer calls
//! `tokens().purge(now)` every second (etcd's resolution).
//!
//! **Credentials (every request, in v3rpc).** Take the `token` metadata (or `authorization`);
//! for simple tokens wait until the applied index reaches [`TokenProvider::wait_index`] (with the
//! request's deadline; timing out is `InvalidAuthToken`), then
//! [`AuthStore::auth_info_from_token`]. No token and `--client-cert-auth`:
//! [`AuthStore::auth_info_from_common_name`] of the verified client certificate (not for
//! requests from the gRPC gateway). No credentials at all: `None`, checked as
//! `AuthInfo::default()` (an empty user, which auth refuses with `UserEmpty`).
//!
//! **Proposals.** The `RequestHeader` of every proposal except Authenticate carries the
//! credentials' `username` and `auth_revision`. UserAdd and UserChangePassword are first passed
//! through [`password::prepare_user_add`] / [`password::prepare_user_change_password`] with
//! [`AuthStore::bcrypt_cost`] on the blocking pool. Authenticate (after a linearizable-read
//! wait): [`AuthStore::prepare_password_check`] under the read lock, [`PasswordCheck::verify`]
//! on the blocking pool, then propose `InternalAuthenticateRequest { name, simple_token:
//! tokens().gen_token_prefix() }` (no password); once applied, if [`AuthStore::revision`] is no
//! longer the checked revision, start over (etcd's loop).
//!
//! **Apply.** For each entry, with `ai = AuthInfo { header.username, header.auth_revision }`:
//! [`AuthStore::check_apply`]; then Put → [`AuthStore::check_put`], DeleteRange →
//! [`AuthStore::check_delete_range`], Txn → [`AuthStore::check_txn`], Range →
//! [`AuthStore::check_range`], LeaseRevoke → [`AuthStore::check_lease_keys_writable`] with the
//! lease's keys; an error is the entry's result and nothing is applied. Auth entries call the
//! method of the same name (`authenticate` with the entry's index and `Now`); the server fills
//! the response header.
//!
//! **Reads and other checks (v3rpc / etcdserver), as etcd 3.5:**
//!
//! | call | check |
//! | --- | --- |
//! | Range, read-only Txn (served locally) | `check_range` / `check_txn` before reading; afterwards, if the credentials' revision is not 0 and differs from `revision()`, answer `AuthOldRevision` (etcd's `doSerialize`) |
//! | Watch create | `is_range_permitted(ai or default, key, range_end)` on the request's raw `key`/`range_end` (an empty key is `"\0"`), before `range_end` is normalized; refusal cancels the watch with [`AuthError::watch_cancel_reason`] |
//! | LeaseGrant, LeaseRevoke (before proposing) | `require_auth_info` |
//! | LeaseKeepAlive | `check_lease_renew` with the lease's keys and the `revision()` read before the credentials |
//! | LeaseTimeToLive | `require_auth_info`; with `keys`, also `check_lease_keys_readable` with the lease's keys, and after the answer `check_revision_unchanged` with the `revision()` read before the credentials |
//! | LeaseLeases | `check_lease_leases` with the keys of every lease and the `revision()` read before the credentials |
//! | Compact, Defragment, Snapshot, Hash, HashKV, MoveLeader, Alarm activate/deactivate, MemberAdd/Remove/Update/Promote, Downgrade | `require_admin` (Defragment, Snapshot, Hash and HashKV answer the store's own text as `Unknown`: [`AuthError::store_text`]) |
//! | Status, MemberList, Alarm GET | `require_auth_info` |
//! | Lock, Election | run with the caller's credentials through the KV checks |
//! | the Auth service | through Raft; `check_apply` at apply |
//!
//! Errors map to gRPC statuses with [`AuthError::grpc_code`] and `to_string()`.
//!
//! # Deliberate differences from etcd
//!
//! * Hashing before proposing (etcd 3.5), not at apply (etcd 3.4): no bcrypt on the apply path,
//!   the same hash on every member, no clear text in the log. Passwords over 72 bytes are
//!   refused (`bcrypt: password length exceeds 72 bytes`, as etcd 3.5; 3.4 truncated them).
//! * RoleGrantPermission looks for an existing permission with the same key and range end
//!   among all of the role's permissions (etcd looks only at the first with the same key, so it
//!   can store duplicates); a new permission goes after those with an equal key.
//! * A simple token is refused as soon as it is past its deadline, not at the next keeper tick.
//! * After [`AuthStore::recover`], simple tokens of users that no longer exist are dropped.
//! * Key-pair mismatches and unusable JWT keys are refused at startup; `ES512` is not supported
//!   (see `jwt`); `EdDSA` is (as etcd 3.6).
//! * The request-level checks include etcd 3.5's later security fixes, which etcd 3.4.23 lacks:
//!   nested Txn operations (9e4303361, 3.5.28), Put-in-Txn leases and `prev_kv` (e8ce1ae41),
//!   keep-alive and lease listing (f936af2c0, 3.5.28), a watch checked on its range as sent
//!   (e863b001b), and the root role for Compact (f936af2c0: `AuthAdmin` in `v3rpc/key.go`, in
//!   etcd 3.5.28+ and 3.6; 3.5.0-3.5.27 let any user compact).

#![forbid(unsafe_code)]

use std::time::{Instant, SystemTime};

mod apply_auth;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod jwt;
mod options;
pub mod password;
mod range_perm_cache;
mod simple_token;
mod store;
mod token;

#[cfg(test)]
mod tests;

pub use apply_auth::needs_admin_permission;
pub use error::{code, AuthError};
pub use password::PasswordCheck;
pub use simple_token::{gen_token_prefix, DEFAULT_SIMPLE_TOKEN_TTL, SIMPLE_TOKEN_PREFIX_LEN};
pub use store::{AuthStore, ENABLE_FLAG_KEY, REVISION_KEY, ROOT_ROLE, ROOT_USER};
pub use token::{strip_bearer, TokenKind, TokenProvider};

/// The gRPC metadata key that carries the token (etcd's `TokenFieldNameGRPC`).
pub const TOKEN_METADATA_KEY: &str = "token";
/// The HTTP header the gRPC gateway maps to the token (etcd's `TokenFieldNameSwagger`).
pub const TOKEN_METADATA_KEY_GATEWAY: &str = "authorization";

/// Who a request runs as, and the auth revision its credentials were checked at (etcd's
/// `AuthInfo`). The default (empty user, revision 0) means "no credentials".
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AuthInfo {
    /// The user name.
    pub username: String,
    /// The auth revision: the store's at lookup for a simple token or a certificate, the one at
    /// login for a JWT, the request header's at apply.
    pub revision: u64,
}

/// The time, as the caller sees it: a monotonic instant for simple-token deadlines and the wall
/// clock for JWT `exp`. The crate never reads a clock; the server passes
/// `Now { instant: Instant::now(), wall: SystemTime::now() }`, tests pass whatever they need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Wall-clock time.
    pub wall: SystemTime,
}

// The server shares the store across threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<AuthStore>();
    assert_send_sync::<TokenProvider>();
    assert_send_sync::<PasswordCheck>();
};
