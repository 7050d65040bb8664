//! Unit tests of the auth crate, with shared fixtures: a temporary backend, a store driven the way
//! the applier drives it (one write transaction per entry), and an injected clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::authpb::{permission::Type as PermType, Permission, UserAddOptions};
use api::etcdserverpb::{
    AuthRoleAddRequest, AuthRoleGrantPermissionRequest, AuthUserAddRequest,
    AuthUserGrantRoleRequest, InternalAuthenticateRequest,
};
use backend::{Backend, BackendConfig, WriteTxn};

use crate::{password, AuthError, AuthInfo, AuthStore, Now, TokenProvider};

mod encoding;
mod passwords;
mod perms;
mod store;
mod tokens;

/// bcrypt's smallest cost keeps hashing in tests around a millisecond.
const COST: u32 = 4;

/// A fixed point in time: tests move from it by whole seconds.
pub(super) fn at(secs: u64) -> Now {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    Now {
        instant: base + Duration::from_secs(secs),
        wall: UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs),
    }
}

/// Unix seconds of [`at`]`(secs)`.
pub(super) fn unix(secs: u64) -> u64 {
    at(secs).wall.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub(super) fn wall(unix_secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix_secs)
}

pub(super) struct Fx {
    _dir: tempfile::TempDir,
    pub(super) be: Backend,
    pub(super) store: AuthStore,
}

impl Fx {
    pub(super) fn new() -> Fx {
        Fx::with_tokens(TokenProvider::simple(Duration::from_secs(300)))
    }

    pub(super) fn with_tokens(tokens: TokenProvider) -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let be = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
        let mut txn = be.write().unwrap();
        let store = AuthStore::open(&mut txn, tokens, COST).unwrap();
        txn.commit().unwrap();
        Fx {
            _dir: dir,
            be,
            store,
        }
    }

    /// Runs one apply-time change in its own committed transaction.
    pub(super) fn apply<T>(
        &mut self,
        f: impl FnOnce(&mut AuthStore, &mut WriteTxn<'_>) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        let mut txn = self.be.write().unwrap();
        let r = f(&mut self.store, &mut txn);
        txn.commit().unwrap();
        r
    }

    /// Adds a user the way the server does: hash before "proposing", then apply.
    pub(super) fn user_add(&mut self, name: &str, pw: &str) {
        let mut req = AuthUserAddRequest {
            name: name.into(),
            password: pw.into(),
            ..Default::default()
        };
        password::prepare_user_add(&mut req, COST).unwrap();
        self.apply(|s, t| s.user_add(t, &req)).unwrap();
    }

    pub(super) fn user_add_no_password(&mut self, name: &str) {
        let req = AuthUserAddRequest {
            name: name.into(),
            options: Some(UserAddOptions { no_password: true }),
            ..Default::default()
        };
        self.apply(|s, t| s.user_add(t, &req)).unwrap();
    }

    pub(super) fn role_add(&mut self, name: &str) {
        let req = AuthRoleAddRequest { name: name.into() };
        self.apply(|s, t| s.role_add(t, &req)).unwrap();
    }

    pub(super) fn grant(&mut self, role: &str, ty: PermType, key: &[u8], end: &[u8]) {
        let req = AuthRoleGrantPermissionRequest {
            name: role.into(),
            perm: Some(perm(ty, key, end)),
        };
        self.apply(|s, t| s.role_grant_permission(t, &req)).unwrap();
    }

    pub(super) fn grant_role(&mut self, user: &str, role: &str) {
        let req = AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        };
        self.apply(|s, t| s.user_grant_role(t, &req)).unwrap();
    }

    /// root (password "rootpw") with the root role, then AuthEnable.
    pub(super) fn enable(&mut self) {
        if self.store.user("root").is_none() {
            self.user_add("root", "rootpw");
        }
        self.grant_role("root", "root");
        self.apply(|s, t| s.auth_enable(t)).unwrap();
    }

    /// Authenticate as applied at log `index`, with a fresh simple-token prefix.
    pub(super) fn login(&self, name: &str, index: u64, now: Now) -> Result<String, AuthError> {
        let req = InternalAuthenticateRequest {
            name: name.into(),
            password: String::new(),
            simple_token: self.store.tokens().gen_token_prefix(),
        };
        self.store.authenticate(&req, index, now).map(|r| r.token)
    }

    /// The credentials of `name` at the store's current revision.
    pub(super) fn ai(&self, name: &str) -> AuthInfo {
        AuthInfo {
            username: name.into(),
            revision: self.store.revision(),
        }
    }

    /// Asserts that what the store holds in memory is exactly what a fresh load from the
    /// backend gives.
    pub(super) fn assert_persisted(&self) {
        let read = self.be.read().unwrap();
        let loaded = AuthStore::load_from(&read, TokenProvider::nop(), COST).unwrap();
        assert_eq!(loaded.persisted_state(), self.store.persisted_state());
        assert_eq!(loaded.perm_cache(), self.store.perm_cache());
    }
}

pub(super) fn perm(ty: PermType, key: &[u8], end: &[u8]) -> Permission {
    Permission {
        perm_type: ty as i32,
        key: key.to_vec(),
        range_end: end.to_vec(),
    }
}
