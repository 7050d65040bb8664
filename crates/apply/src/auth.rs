//! Apply-time auth, as etcd's `authApplierV3` and the auth half of `applierV3backend`: the auth
//! store shared by the applier and the services, the permission gate every entry passes before it
//! is applied, and the Auth entries themselves.
//!
//! # Why a request is checked again at apply
//!
//! The proposing member checked nothing for writes: it only put the caller's user name and the
//! auth revision its credentials were read at into the entry's header. Here, every member checks
//! the entry against the auth store *as of this entry*, so a permission revoked by an earlier
//! entry refuses the write on every member alike, and credentials read at an older auth revision
//! are refused with etcd's `AuthOldRevision` (clients re-authenticate and retry). Reads served
//! locally are checked by the server before and after reading (etcd's `doSerialize`).
//!
//! # Locking
//!
//! The store sits behind one `RwLock` ([`SharedAuth`]). Only the applier writes it, and always
//! while it holds the MVCC write transaction whose backend transaction the change is written into
//! (lock order: store write transaction, then auth store, like the lessor). Services take the read
//! lock for checks and token lookups, never across an `.await`. bcrypt never runs under it.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use api::etcdserverpb::{
    AuthDisableResponse, AuthEnableResponse, AuthRoleAddResponse, AuthRoleDeleteResponse,
    AuthRoleGetResponse, AuthRoleGrantPermissionResponse, AuthRoleListResponse,
    AuthRoleRevokePermissionResponse, AuthStatusResponse, AuthUserAddResponse,
    AuthUserChangePasswordResponse, AuthUserDeleteResponse, AuthUserGetResponse,
    AuthUserGrantRoleResponse, AuthUserListResponse, AuthUserRevokeRoleResponse,
    AuthenticateResponse, InternalRaftRequest,
};
use auth::{AuthInfo, AuthStore, Now};

use crate::lessor::Leases;
use rpctypes::ServerError;

/// The auth store shared by the applier (writer) and the services (readers).
#[derive(Debug)]
pub struct SharedAuth {
    store: RwLock<AuthStore>,
}

impl SharedAuth {
    pub fn new(store: AuthStore) -> SharedAuth {
        SharedAuth {
            store: RwLock::new(store),
        }
    }

    /// For checks and lookups; never hold it across an `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, AuthStore> {
        // A panic while holding the lock leaves the store as the last completed change made it
        // (changes update memory only after their writes succeeded).
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    /// For the applier only.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, AuthStore> {
        self.store.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where the applier gets the time for Authenticate entries (a simple token's deadline, a JWT's
/// `exp`): the wall and monotonic clocks in the server, a manual clock in tests.
pub type AuthClock = Arc<dyn Fn() -> Now + Send + Sync>;

/// What the applier needs for auth.
#[derive(Clone)]
pub struct ApplyAuth {
    pub store: Arc<SharedAuth>,
    pub clock: AuthClock,
}

/// The answer to an applied Auth entry.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthApplied {
    Enable(AuthEnableResponse),
    Disable(AuthDisableResponse),
    Status(AuthStatusResponse),
    Authenticate(AuthenticateResponse),
    UserAdd(AuthUserAddResponse),
    UserDelete(AuthUserDeleteResponse),
    UserChangePassword(AuthUserChangePasswordResponse),
    UserGrantRole(AuthUserGrantRoleResponse),
    UserGet(AuthUserGetResponse),
    UserList(AuthUserListResponse),
    UserRevokeRole(AuthUserRevokeRoleResponse),
    RoleAdd(AuthRoleAddResponse),
    RoleGrantPermission(AuthRoleGrantPermissionResponse),
    RoleGet(AuthRoleGetResponse),
    RoleList(AuthRoleListResponse),
    RoleRevokePermission(AuthRoleRevokePermissionResponse),
    RoleDelete(AuthRoleDeleteResponse),
}

/// The credentials an entry carries (etcd's `authApplierV3.Apply`): none is the empty user.
pub fn entry_auth_info(req: &InternalRaftRequest) -> AuthInfo {
    req.header
        .as_ref()
        .map(|h| AuthInfo {
            username: h.username.clone(),
            revision: h.auth_revision,
        })
        .unwrap_or_default()
}

/// Whether `req` is an Auth entry (applied by [`apply_auth_entry`]).
pub fn is_auth_entry(req: &InternalRaftRequest) -> bool {
    req.authenticate.is_some()
        || req.auth_user_get.is_some()
        || req.auth_role_get.is_some()
        || auth::needs_admin_permission(req)
}

/// Whether the Auth entry changes the store (and so needs a backend transaction).
pub(crate) fn auth_entry_writes(req: &InternalRaftRequest) -> bool {
    req.auth_enable.is_some()
        || req.auth_disable.is_some()
        || req.auth_user_add.is_some()
        || req.auth_user_delete.is_some()
        || req.auth_user_change_password.is_some()
        || req.auth_user_grant_role.is_some()
        || req.auth_user_revoke_role.is_some()
        || req.auth_role_add.is_some()
        || req.auth_role_delete.is_some()
        || req.auth_role_grant_permission.is_some()
        || req.auth_role_revoke_permission.is_some()
}

/// etcd's `authApplierV3`: may the entry's user apply it? Admin entries need the root role;
/// UserGet and RoleGet have their own rules; key-space writes need the permissions of their
/// keys (a Put attaching a lease, and LeaseRevoke, also need write access to the lease's keys).
pub fn check_entry(
    store: &AuthStore,
    leases: &Leases,
    req: &InternalRaftRequest,
) -> Result<(), ServerError> {
    let ai = entry_auth_info(req);
    store.check_apply(&ai, req)?;
    let lease_keys = |id: i64| leases.keys(id);
    if let Some(p) = &req.put {
        store.check_put(&ai, p, &lease_keys)?;
    }
    if let Some(d) = &req.delete_range {
        store.check_delete_range(&ai, d)?;
    }
    if let Some(t) = &req.txn {
        store.check_txn(&ai, t, &lease_keys)?;
    }
    if let Some(r) = &req.range {
        store.check_range(&ai, r)?;
    }
    if let Some(r) = &req.lease_revoke {
        store.check_lease_keys_writable(&ai, &leases.keys(r.id))?;
    }
    Ok(())
}

/// Applies an Auth entry that reads the store or mints a token (no backend write).
pub(crate) fn apply_auth_read(
    a: &ApplyAuth,
    req: &InternalRaftRequest,
    index: u64,
) -> Result<AuthApplied, auth::AuthError> {
    let store = a.store.read();
    if let Some(r) = &req.authenticate {
        return store
            .authenticate(r, index, (a.clock)())
            .map(AuthApplied::Authenticate);
    }
    if req.auth_status.is_some() {
        return Ok(AuthApplied::Status(store.auth_status()));
    }
    if let Some(r) = &req.auth_user_get {
        return store.user_get(r).map(AuthApplied::UserGet);
    }
    if req.auth_user_list.is_some() {
        return Ok(AuthApplied::UserList(store.user_list()));
    }
    if let Some(r) = &req.auth_role_get {
        return store.role_get(r).map(AuthApplied::RoleGet);
    }
    if req.auth_role_list.is_some() {
        return Ok(AuthApplied::RoleList(store.role_list()));
    }
    Err(auth::AuthError::Corrupt("not an auth read entry".into()))
}

/// Applies an Auth entry that changes the store, writing through `txn`.
pub(crate) fn apply_auth_write(
    a: &ApplyAuth,
    txn: &mut backend::WriteTxn<'_>,
    req: &InternalRaftRequest,
) -> Result<AuthApplied, auth::AuthError> {
    let mut store = a.store.write();
    let s = &mut *store;
    if req.auth_enable.is_some() {
        return s.auth_enable(txn).map(AuthApplied::Enable);
    }
    if req.auth_disable.is_some() {
        return s.auth_disable(txn).map(AuthApplied::Disable);
    }
    if let Some(r) = &req.auth_user_add {
        return s.user_add(txn, r).map(AuthApplied::UserAdd);
    }
    if let Some(r) = &req.auth_user_delete {
        return s.user_delete(txn, r).map(AuthApplied::UserDelete);
    }
    if let Some(r) = &req.auth_user_change_password {
        return s
            .user_change_password(txn, r)
            .map(AuthApplied::UserChangePassword);
    }
    if let Some(r) = &req.auth_user_grant_role {
        return s.user_grant_role(txn, r).map(AuthApplied::UserGrantRole);
    }
    if let Some(r) = &req.auth_user_revoke_role {
        return s.user_revoke_role(txn, r).map(AuthApplied::UserRevokeRole);
    }
    if let Some(r) = &req.auth_role_add {
        return s.role_add(txn, r).map(AuthApplied::RoleAdd);
    }
    if let Some(r) = &req.auth_role_delete {
        return s.role_delete(txn, r).map(AuthApplied::RoleDelete);
    }
    if let Some(r) = &req.auth_role_grant_permission {
        return s
            .role_grant_permission(txn, r)
            .map(AuthApplied::RoleGrantPermission);
    }
    if let Some(r) = &req.auth_role_revoke_permission {
        return s
            .role_revoke_permission(txn, r)
            .map(AuthApplied::RoleRevokePermission);
    }
    Err(auth::AuthError::Corrupt("not an auth write entry".into()))
}
