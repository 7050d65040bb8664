//! Password hashing and checking with bcrypt, as plain functions for the server's bounded
//! blocking pool.
//!
//! bcrypt is slow on purpose (about 50-100 ms at etcd's default cost 10), so nothing here is
//! called by the store's apply methods in normal operation: the server hashes a new password
//! *before* proposing UserAdd or UserChangePassword ([`prepare_user_add`],
//! [`prepare_user_change_password`], etcd 3.5's `v3_server.go`), and checks a password *before*
//! proposing Authenticate ([`PasswordCheck::verify`], etcd's `CheckPassword`), both off the Raft
//! loop and off the async runtime's workers. Hashing before proposing also means every member
//! stores the same hash (etcd 3.4 hashed at apply, so each member had its own salt), and the
//! clear-text password never reaches the Raft log.
//!
//! Hashes are Go's: `$2a$<cost>$<salt+hash>` (60 bytes). Passwords longer than 72 bytes are
//! refused when hashing, as Go's `bcrypt.GenerateFromPassword` does since x/crypto 0.x (etcd
//! 3.5); etcd 3.4's older library silently truncated them.

use base64::Engine;

use api::etcdserverpb::{AuthUserAddRequest, AuthUserChangePasswordRequest};

use crate::error::AuthError;

/// bcrypt's smallest cost (Go's `bcrypt.MinCost`).
pub const MIN_BCRYPT_COST: u32 = 4;
/// bcrypt's largest cost (Go's `bcrypt.MaxCost`).
pub const MAX_BCRYPT_COST: u32 = 31;
/// etcd's `--bcrypt-cost` default (Go's `bcrypt.DefaultCost`).
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// The longest password bcrypt hashes (Go refuses longer ones).
pub const MAX_PASSWORD_BYTES: usize = 72;

/// `--bcrypt-cost` as etcd uses it: a cost outside `4..=31` is replaced by the default 10 with a
/// warning, not refused.
pub fn effective_bcrypt_cost(cost: u32) -> u32 {
    if (MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
        cost
    } else {
        tracing::warn!(
            min_cost = MIN_BCRYPT_COST,
            max_cost = MAX_BCRYPT_COST,
            default_cost = DEFAULT_BCRYPT_COST,
            given_cost = cost,
            "use default bcrypt cost instead of the invalid given cost"
        );
        DEFAULT_BCRYPT_COST
    }
}

/// The bcrypt hash of `password` at `cost`, in Go's `$2a$` form. Slow: run it on a blocking pool.
pub fn hash_password(password: &str, cost: u32) -> Result<Vec<u8>, AuthError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::PasswordTooLong);
    }
    let parts =
        bcrypt::hash_with_result(password, cost).map_err(|e| AuthError::Bcrypt(e.to_string()))?;
    Ok(parts.format_for_version(bcrypt::Version::TwoA).into_bytes())
}

/// Whether `password` matches the bcrypt `hash` (any of `$2a$`, `$2b$`, `$2y$`). A malformed or
/// empty hash matches nothing. Slow: run it on a blocking pool.
pub fn check_password(hash: &[u8], password: &str) -> bool {
    let Ok(hash) = std::str::from_utf8(hash) else {
        return false;
    };
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// etcd 3.5's UserAdd preparation: unless the user is `no_password`, hash the password into
/// `hashed_password` (base64 of the bcrypt hash) and clear `password`, so the proposal carries no
/// clear text. Slow: run it on a blocking pool.
pub fn prepare_user_add(req: &mut AuthUserAddRequest, cost: u32) -> Result<(), AuthError> {
    if req.options.as_ref().is_none_or(|o| !o.no_password) {
        let hash = hash_password(&req.password, cost)?;
        req.hashed_password = base64::engine::general_purpose::STANDARD.encode(hash);
        req.password.clear();
    }
    Ok(())
}

/// etcd 3.5's UserChangePassword preparation: a non-empty password is hashed into
/// `hashed_password` and cleared. Slow: run it on a blocking pool.
pub fn prepare_user_change_password(
    req: &mut AuthUserChangePasswordRequest,
    cost: u32,
) -> Result<(), AuthError> {
    if !req.password.is_empty() {
        let hash = hash_password(&req.password, cost)?;
        req.hashed_password = base64::engine::general_purpose::STANDARD.encode(hash);
        req.password.clear();
    }
    Ok(())
}

/// What [`AuthStore::prepare_password_check`](crate::AuthStore::prepare_password_check) read
/// under the store's lock: the user's hash and the auth revision it was read at. Verifying it is
/// the slow part and needs no lock.
#[derive(Clone)]
pub struct PasswordCheck {
    pub(crate) name: String,
    pub(crate) hash: Vec<u8>,
    pub(crate) revision: u64,
}

impl std::fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is not secret, but it has no business in logs.
        f.debug_struct("PasswordCheck")
            .field("name", &self.name)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

impl PasswordCheck {
    /// The user being checked.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The auth revision the hash was read at.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// etcd's `CheckPassword`, second half: the auth revision if `password` is right,
    /// `AuthFailed` otherwise. Slow: run it on a blocking pool. The server then proposes
    /// Authenticate and, once it is applied, retries the whole login if the store's revision is
    /// no longer this one (etcd's loop in `v3_server.go`): the password may have changed between
    /// the check and the apply.
    pub fn verify(&self, password: &str) -> Result<u64, AuthError> {
        if check_password(&self.hash, password) {
            Ok(self.revision)
        } else {
            tracing::info!(user = %self.name, "invalid password");
            Err(AuthError::AuthFailed)
        }
    }
}

/// etcd's `selectPassword` at apply: a hash proposed by the server (base64 in `hashed`), or, for
/// entries proposed without one (etcd 3.4 proposed clear text), a hash made here. Any failure is
/// `NoPasswordUser`, as in etcd.
pub(crate) fn select_password(
    password: &str,
    hashed: &str,
    cost: u32,
) -> Result<Vec<u8>, AuthError> {
    if !password.is_empty() && hashed.is_empty() {
        tracing::warn!("hashing a clear-text password at apply time");
        return hash_password(password, cost).map_err(|_| AuthError::NoPasswordUser);
    }
    base64::engine::general_purpose::STANDARD
        .decode(hashed)
        .map_err(|_| AuthError::NoPasswordUser)
}
