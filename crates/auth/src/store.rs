//! The auth store (etcd's `store.go`): whether auth is enabled, the auth revision, users and
//! roles, kept in memory and written through the caller's backend transaction.
//!
//! # Storage layout (etcd's, byte for byte)
//!
//! * bucket `auth`: `authEnabled` → one byte, 1 enabled / 0 disabled (absent until the first
//!   AuthEnable); `authRevision` → the auth revision, 8 bytes big-endian.
//! * bucket `authUsers`: user name → encoded `authpb.User` (name, bcrypt hash, roles sorted,
//!   options; UserAdd always stores `options`, even when empty).
//! * bucket `authRoles`: role name → encoded `authpb.Role` (name, permissions sorted by key).
//!
//! prost encodes these messages exactly as etcd's gogo-protobuf does (fields in number order,
//! proto3 defaults omitted, an empty `options` message kept), so the files can be exchanged with
//! etcd 3.4/3.5 in either direction; a test pins the bytes.
//!
//! # In memory
//!
//! All users and roles are decoded once ([`AuthStore::open`], [`AuthStore::recover`]) and kept in
//! ordered maps keyed by name (byte order, as the buckets), with the range-permission cache
//! beside them. Reads and permission checks never touch the backend. A change writes its records
//! into the caller's transaction first and updates memory only after every write succeeded, so a
//! failed write leaves memory as it was; if the caller's transaction is then aborted instead of
//! committed, memory is ahead of disk and the server must stop (as for any apply failure) or
//! [`recover`](AuthStore::recover).

use std::collections::{BTreeMap, HashMap};

use api::authpb::{Permission, Role, User, UserAddOptions};
use api::etcdserverpb::{
    AuthDisableResponse, AuthEnableResponse, AuthRoleAddRequest, AuthRoleAddResponse,
    AuthRoleDeleteRequest, AuthRoleDeleteResponse, AuthRoleGetRequest, AuthRoleGetResponse,
    AuthRoleGrantPermissionRequest, AuthRoleGrantPermissionResponse, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusResponse,
    AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest,
    AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse,
    AuthUserListResponse, AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse,
    AuthenticateResponse, InternalAuthenticateRequest,
};
use backend::{Bucket, Reader, WriteTxn};
use prost::Message;

use crate::error::AuthError;
use crate::password::{effective_bcrypt_cost, select_password, PasswordCheck};
use crate::range_perm_cache::{is_valid_permission_range, Access, UnifiedRangePermissions};
use crate::token::{strip_bearer, TokenProvider};
use crate::{AuthInfo, Now};

/// Key of the enabled flag in bucket `auth`.
pub const ENABLE_FLAG_KEY: &[u8] = b"authEnabled";
/// Key of the auth revision in bucket `auth`.
pub const REVISION_KEY: &[u8] = b"authRevision";
/// The user that must exist, with the root role, before auth can be enabled.
pub const ROOT_USER: &str = "root";
/// The role that grants everything (it need not exist as a role record).
pub const ROOT_ROLE: &str = "root";

const AUTH_ENABLED: [u8; 1] = [1];
const AUTH_DISABLED: [u8; 1] = [0];

/// etcd's auth store as a plain value. See the crate documentation for how the server drives it.
#[derive(Debug)]
pub struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// user name → merged permissions of all their roles.
    perm_cache: HashMap<String, UnifiedRangePermissions>,
    tokens: TokenProvider,
    bcrypt_cost: u32,
}

fn name_of(bytes: &[u8], what: &str) -> Result<String, AuthError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| AuthError::Corrupt(format!("{what} name is not UTF-8: {bytes:?}")))
}

/// Everything the buckets hold, decoded.
struct Loaded {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
}

fn load<R: Reader + ?Sized>(reader: &R) -> Result<Loaded, AuthError> {
    let enabled = reader
        .get(Bucket::Auth, ENABLE_FLAG_KEY)?
        .is_some_and(|v| v == AUTH_ENABLED);
    let revision = match reader.get(Bucket::Auth, REVISION_KEY)? {
        None => 0,
        Some(v) => u64::from_be_bytes(v.as_slice().try_into().map_err(|_| {
            AuthError::Corrupt(format!("authRevision has {} bytes, expected 8", v.len()))
        })?),
    };
    let mut failure = None;
    let mut users = BTreeMap::new();
    reader.for_each(Bucket::AuthUsers, &[], None, &mut |k, v| {
        let r = User::decode(v)
            .map_err(|e| AuthError::Corrupt(format!("user {:?}: {e}", String::from_utf8_lossy(k))))
            .and_then(|u| {
                if u.name != k {
                    return Err(AuthError::Corrupt(format!(
                        "user record under key {:?} is named {:?}",
                        String::from_utf8_lossy(k),
                        String::from_utf8_lossy(&u.name)
                    )));
                }
                Ok((name_of(k, "user")?, u))
            });
        match r {
            Ok((name, u)) => {
                users.insert(name, u);
                true
            }
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failure.take() {
        return Err(e);
    }
    let mut roles = BTreeMap::new();
    reader.for_each(Bucket::AuthRoles, &[], None, &mut |k, v| {
        let r = Role::decode(v)
            .map_err(|e| AuthError::Corrupt(format!("role {:?}: {e}", String::from_utf8_lossy(k))))
            .and_then(|r| {
                if r.name != k {
                    return Err(AuthError::Corrupt(format!(
                        "role record under key {:?} is named {:?}",
                        String::from_utf8_lossy(k),
                        String::from_utf8_lossy(&r.name)
                    )));
                }
                Ok((name_of(k, "role")?, r))
            });
        match r {
            Ok((name, r)) => {
                roles.insert(name, r);
                true
            }
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Loaded {
        enabled,
        revision,
        users,
        roles,
    })
}

fn has_root_role(u: &User) -> bool {
    u.roles.iter().any(|r| r == ROOT_ROLE)
}

fn is_no_password(u: &User) -> bool {
    u.options.as_ref().is_some_and(|o| o.no_password)
}

impl AuthStore {
    /// etcd's `NewAuthStore`: loads the auth buckets through `txn` and, on a backend that has
    /// never had an auth store, writes auth revision 1 into it (etcd does this at startup, so a
    /// fresh data dir already holds `authRevision` = 1). `bcrypt_cost` outside `4..=31` becomes
    /// 10, as etcd does. Corrupt records are [`AuthError::Corrupt`].
    pub fn open(
        txn: &mut WriteTxn<'_>,
        tokens: TokenProvider,
        bcrypt_cost: u32,
    ) -> Result<AuthStore, AuthError> {
        let mut store = AuthStore::load_from(&*txn, tokens, bcrypt_cost)?;
        if store.revision == 0 {
            store.write_revision(txn, 1)?;
            store.revision = 1;
        }
        Ok(store)
    }

    /// Loads the store from a read snapshot without writing anything (a revision of 0 stays 0
    /// until the first change). Prefer [`open`](Self::open) at startup.
    pub fn load_from<R: Reader + ?Sized>(
        reader: &R,
        tokens: TokenProvider,
        bcrypt_cost: u32,
    ) -> Result<AuthStore, AuthError> {
        let loaded = load(reader)?;
        let mut store = AuthStore {
            enabled: false,
            revision: 0,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            perm_cache: HashMap::new(),
            tokens,
            bcrypt_cost: effective_bcrypt_cost(bcrypt_cost),
        };
        store.install(loaded);
        Ok(store)
    }

    /// etcd's `Recover`: replaces everything with what `reader` holds (after the backend was
    /// replaced by a snapshot from the leader). The token provider is kept; simple tokens of
    /// users that no longer exist are dropped, and all of them if auth is now disabled.
    pub fn recover<R: Reader + ?Sized>(&mut self, reader: &R) -> Result<(), AuthError> {
        let loaded = load(reader)?;
        self.install(loaded);
        Ok(())
    }

    fn install(&mut self, loaded: Loaded) {
        self.enabled = loaded.enabled;
        self.revision = loaded.revision;
        self.users = loaded.users;
        self.roles = loaded.roles;
        self.refresh_range_perm_cache();
        if self.enabled {
            self.tokens.enable();
            let users = &self.users;
            self.tokens.retain_users(|u| users.contains_key(u));
        } else {
            self.tokens.disable();
        }
    }

    /// Whether auth is enabled.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision: bumped by every change except AuthEnable (as in etcd). Also etcd's
    /// `etcd_debugging_auth_revision` gauge.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The bcrypt cost for hashing new passwords (`--bcrypt-cost`, after etcd's correction).
    pub fn bcrypt_cost(&self) -> u32 {
        self.bcrypt_cost
    }

    /// The token provider.
    pub fn tokens(&self) -> &TokenProvider {
        &self.tokens
    }

    /// The user record, if it exists.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// The role record, if it exists.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Whether `user` exists and has `role` (etcd's `HasRole`).
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        match self.users.get(user) {
            Some(u) => u.roles.iter().any(|r| r == role),
            None => {
                tracing::warn!(user, role, "'has-role' requested for non-existing user");
                false
            }
        }
    }

    fn refresh_range_perm_cache(&mut self) {
        let roles = &self.roles;
        self.perm_cache = self
            .users
            .iter()
            .map(|(name, u)| {
                let perms = u
                    .roles
                    .iter()
                    .filter_map(|r| roles.get(r))
                    .flat_map(|r| r.key_permission.iter());
                (name.clone(), UnifiedRangePermissions::build(perms))
            })
            .collect();
    }

    fn write_revision(&self, txn: &mut WriteTxn<'_>, rev: u64) -> Result<(), AuthError> {
        txn.put(Bucket::Auth, REVISION_KEY, &rev.to_be_bytes())?;
        Ok(())
    }

    /// Writes the next revision into `txn` and returns it; memory is updated by the caller once
    /// every write of the change succeeded.
    fn next_revision(&self, txn: &mut WriteTxn<'_>) -> Result<u64, AuthError> {
        let rev = self.revision + 1;
        self.write_revision(txn, rev)?;
        Ok(rev)
    }

    fn put_user(txn: &mut WriteTxn<'_>, u: &User) -> Result<(), AuthError> {
        txn.put(Bucket::AuthUsers, &u.name, &u.encode_to_vec())?;
        Ok(())
    }

    fn put_role(txn: &mut WriteTxn<'_>, r: &Role) -> Result<(), AuthError> {
        txn.put(Bucket::AuthRoles, &r.name, &r.encode_to_vec())?;
        Ok(())
    }

    // ---- apply-time operations -----------------------------------------------------------

    /// AuthEnable: requires user `root` with role `root`. Writes `authEnabled` = 1; the revision
    /// does not move (etcd's behaviour). Already enabled: nothing happens.
    pub fn auth_enable(&mut self, txn: &mut WriteTxn<'_>) -> Result<AuthEnableResponse, AuthError> {
        if self.enabled {
            tracing::info!("authentication is already enabled; ignored auth enable request");
            return Ok(AuthEnableResponse::default());
        }
        let root = self
            .users
            .get(ROOT_USER)
            .ok_or(AuthError::RootUserNotExist)?;
        if !has_root_role(root) {
            return Err(AuthError::RootRoleNotExist);
        }
        txn.put(Bucket::Auth, ENABLE_FLAG_KEY, &AUTH_ENABLED)?;
        self.enabled = true;
        self.tokens.enable();
        self.refresh_range_perm_cache();
        tracing::info!("enabled authentication");
        Ok(AuthEnableResponse::default())
    }

    /// AuthDisable: writes `authEnabled` = 0, bumps the revision and forgets every token. Already
    /// disabled: nothing happens.
    pub fn auth_disable(
        &mut self,
        txn: &mut WriteTxn<'_>,
    ) -> Result<AuthDisableResponse, AuthError> {
        if !self.enabled {
            return Ok(AuthDisableResponse::default());
        }
        txn.put(Bucket::Auth, ENABLE_FLAG_KEY, &AUTH_DISABLED)?;
        let rev = self.next_revision(txn)?;
        self.revision = rev;
        self.enabled = false;
        self.tokens.disable();
        tracing::info!("disabled authentication");
        Ok(AuthDisableResponse::default())
    }

    /// AuthStatus: whether auth is enabled and the auth revision.
    pub fn auth_status(&self) -> AuthStatusResponse {
        AuthStatusResponse {
            header: None,
            enabled: self.enabled,
            auth_revision: self.revision,
        }
    }

    /// Authenticate at apply (etcd's `AuthStore.Authenticate`): the password was already checked
    /// by the proposing member ([`prepare_password_check`](Self::prepare_password_check)); here
    /// the token is minted. `index` is the entry's log index (the simple token's suffix),
    /// `req.simple_token` its prefix; `now` sets the simple token's deadline and the JWT's `exp`.
    /// Auth disabled → `AuthNotEnabled`; unknown or `no_password` user → `AuthFailed`.
    pub fn authenticate(
        &self,
        req: &InternalAuthenticateRequest,
        index: u64,
        now: Now,
    ) -> Result<AuthenticateResponse, AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(&req.name).ok_or(AuthError::AuthFailed)?;
        if is_no_password(user) {
            return Err(AuthError::AuthFailed);
        }
        let token = self
            .tokens
            .assign(&req.name, self.revision, &req.simple_token, index, now)?;
        tracing::debug!(user = %req.name, "authenticated a user");
        Ok(AuthenticateResponse {
            header: None,
            token,
        })
    }

    /// UserAdd: empty name → `UserEmpty`; existing → `UserAlreadyExist`. Unless `no_password`,
    /// the password is `hashed_password` (base64 bcrypt, set by the proposing member); an entry
    /// with only a clear-text `password` is hashed here with the store's cost (etcd's path for
    /// entries written by etcd < 3.5). A hash that does not decode → `NoPasswordUser` (etcd's
    /// choice of error). `options` is stored even when absent from the request.
    pub fn user_add(
        &mut self,
        txn: &mut WriteTxn<'_>,
        req: &AuthUserAddRequest,
    ) -> Result<AuthUserAddResponse, AuthError> {
        if req.name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.users.contains_key(&req.name) {
            return Err(AuthError::UserAlreadyExist);
        }
        let options = req.options.unwrap_or(UserAddOptions { no_password: false });
        let password = if options.no_password {
            Vec::new()
        } else {
            select_password(&req.password, &req.hashed_password, self.bcrypt_cost)?
        };
        let user = User {
            name: req.name.clone().into_bytes(),
            password,
            roles: Vec::new(),
            options: Some(options),
        };
        Self::put_user(txn, &user)?;
        self.revision = self.next_revision(txn)?;
        self.users.insert(req.name.clone(), user);
        self.refresh_range_perm_cache();
        tracing::info!(user = %req.name, "added a user");
        Ok(AuthUserAddResponse::default())
    }

    /// UserDelete: `root` while enabled → `InvalidAuthMgmt`; unknown → `UserNotFound`. The
    /// user's simple tokens die with it (JWTs die by the revision bump).
    pub fn user_delete(
        &mut self,
        txn: &mut WriteTxn<'_>,
        req: &AuthUserDeleteRequest,
    ) -> Result<AuthUserDeleteResponse, AuthError> {
        if self.enabled && req.name == ROOT_USER {
            tracing::error!("cannot delete 'root' user");
            return Err(AuthError::InvalidAuthMgmt);
        }
        if !self.users.contains_key(&req.name) {
            return Err(AuthError::UserNotFound);
        }
        txn.delete(Bucket::AuthUsers, req.name.as_bytes())?;
        self.revision = self.next_revision(txn)?;
        self.users.remove(&req.name);
        self.refresh_range_perm_cache();
        self.tokens.invalidate_user(&req.name);
        tracing::info!(user = %req.name, "deleted a user");
        Ok(AuthUserDeleteResponse::default())
    }

    /// UserChangePassword: unknown → `UserNotFound`. A `no_password` user keeps no password;
    /// others get `hashed_password` (or a hash of a clear-text `password`, as in
    /// [`user_add`](Self::user_add)). The user's simple tokens are invalidated.
    pub fn user_change_password(
        &mut self,
        txn: &mut WriteTxn<'_>,
        req: &AuthUserChangePasswordRequest,
    ) -> Result<AuthUserChangePasswordResponse, AuthError> {
        let user = self.users.get(&req.name).ok_or(AuthError::UserNotFound)?;
        let password = if is_no_password(user) {
            Vec::new()
        } else {
            select_password(&req.password, &req.hashed_password, self.bcrypt_cost)?
        };
        let updated = User {
            name: req.name.clone().into_bytes(),
            password,
            roles: user.roles.clone(),
            options: user.options,
        };
        Self::put_user(txn, &updated)?;
        self.revision = self.next_revision(txn)?;
        self.users.insert(req.name.clone(), updated);
        self.refresh_range_perm_cache();
        self.tokens.invalidate_user(&req.name);
        tracing::info!(user = %req.name, "changed a password of a user");
        Ok(AuthUserChangePasswordResponse::default())
    }

    /// UserGrantRole: unknown user → `UserNotFound`; unknown role → `RoleNotFound`, except
    /// `root`, which may be granted without a role record. Granting a role the user has is a
    /// no-op (no revision bump). Roles stay sorted.
    pub fn user_grant_role(
        &mut self,
        txn: &mut WriteTxn<'_>,
        req: &AuthUserGrantRoleRequest,
    ) -> Result<AuthUserGrantRoleResponse, AuthError> {
        let user = self.users.get(&req.user).ok_or(AuthError::UserNotFound)?;
        if req.role != ROOT_ROLE && !self.roles.contains_key(&req.role) {
            return Err(AuthError::RoleNotFound);
        }
        if user.roles.contains(&req.role) {
            tracing::warn!(user = %req.user, role = %req.role, "ignored grant role request to a user");
            return Ok(AuthUserGrantRoleResponse::default());
        }
        let mut updated = user.clone();
        updated.roles.push(req.role.clone());
        updated.roles.sort();
        Self::put_user(txn, &updated)?;
        self.revision = self.next_revision(txn)?;
        self.users.insert(req.user.clone(), updated);
        self.refresh_range_perm_cache();
        tracing::info!(user = %req.user, role = %req.role, "granted a role to a user");
        Ok(AuthUserGrantRoleResponse::default())
    }

    /// UserGet: the user's roles; unknown → `UserNotFound`.
    pub fn user_get(&self, req: &AuthUserGetRequest) -> Result<AuthUserGetResponse, AuthError> {
        let user = self.users.get(&req.name).ok_or(AuthError::UserNotFound)?;
        Ok(AuthUserGetResponse {
            header: None,
            roles: user.roles.clone(),
        })
    }

    /// UserList: every user name, in byte order.
    pub fn user_list(&self) -> AuthUserListResponse {
        AuthUserListResponse {
            header: None,
            users: self.users.keys().cloned().collect(),
        }
    }

    /// UserRevokeRole: `root` from `root` while enabled → `InvalidAuthMgmt`; unknown user →
    /// `UserNotFound`; a role the user lacks → `RoleNotGranted`.
    pub fn user_revoke_role(
        &mut self,
        txn: &mut WriteTxn<'_>,
        req: &AuthUserRevokeRoleRequest,
    ) -> Result<AuthUserRevokeRoleResponse, AuthError> {
        if self.enabled && req.name == ROOT_USER && req.role == ROOT_ROLE {
            tracing::error!("'root' user cannot revoke 'root' role");
            return Err(AuthError::InvalidAuthMgmt);
        }
        let user = self.users.get(&req.name).ok_or(AuthError::UserNotFound)?;
        let mut updated = user.clone();
        updated.roles.retain(|r| *r != req.role);
        if updated.roles.len() == user.roles.len() {
            return Err(AuthError::RoleNotGranted);
        }
        Self::put_user(txn, &updated)?;
        self.revision = self.next_revision(txn)?;
        self.users.insert(req.name.clone(), updated);
        self.refresh_range_perm_cache();
        tracing::info!(user = %req.name, role = %req.role, "revoked a role from a user");
        Ok(AuthUserRevokeRoleResponse::default())
    }

    /// RoleAdd: empty name → `RoleEmpty`; existing → `RoleAlreadyExist`.
    pub fn role_add(
        &mut self,
        txn: &mut WriteTxn<'_>,
        req: &AuthRoleAddRequest,
    ) -> Result<AuthRoleAddResponse, AuthError> {
        if req.name.is_empty() {
            return Err(AuthError::RoleEmpty);
        }
        if self.roles.contains_key(&req.name) {
            return Err(AuthError::RoleAlreadyExist);
        }
        let role = Role {
            name: req.name.clone().into_bytes(),
            key_permission: Vec::new(),
        };
        Self::put_role(txn, &role)?;
        self.revision = self.next_revision(txn)?;
        self.roles.insert(req.name.clone(), role);
        // A role without permissions changes nobody's merged permissions.
        tracing::info!(role = %req.name, "created a role");
        Ok(AuthRoleAddResponse::default())
    }

    /// RoleGet: the role's permissions; unknown → `RoleNotFound`.
    pub fn role_get(&self, req: &AuthRoleGetRequest) -> Result<AuthRoleGetResponse, AuthError> {
        let role = self.roles.get(&req.role).ok_or(AuthError::RoleNotFound)?;
        Ok(AuthRoleGetResponse {
            header: None,
            perm: role.key_permission.clone(),
        })
    }

    /// RoleList: every role name, in byte order.
    pub fn role_list(&self) -> AuthRoleListResponse {
        AuthRoleListResponse {
            header: None,
            roles: self.roles.keys().cloned().collect(),
        }
    }

    /// RoleDelete: `root` while enabled → `InvalidAuthMgmt`; unknown → `RoleNotFound`. The role
    /// is also revoked from every user that had it.
    pub fn role_delete(
        &mut self,
        txn: &mut WriteTxn<'_>,
        req: &AuthRoleDeleteRequest,
    ) -> Result<AuthRoleDeleteResponse, AuthError> {
        if self.enabled && req.role == ROOT_ROLE {
            tracing::error!("cannot delete 'root' role");
            return Err(AuthError::InvalidAuthMgmt);
        }
        if !self.roles.contains_key(&req.role) {
            return Err(AuthError::RoleNotFound);
        }
        txn.delete(Bucket::AuthRoles, req.role.as_bytes())?;
        let mut updated_users = Vec::new();
        for (name, user) in &self.users {
            if user.roles.contains(&req.role) {
                let mut u = user.clone();
                u.roles.retain(|r| *r != req.role);
                Self::put_user(txn, &u)?;
                updated_users.push((name.clone(), u));
            }
        }
        self.revision = self.next_revision(txn)?;
        self.roles.remove(&req.role);
        self.users.extend(updated_users);
        self.refresh_range_perm_cache();
        tracing::info!(role = %req.role, "deleted a role");
        Ok(AuthRoleDeleteResponse::default())
    }

    /// RoleGrantPermission: no permission → `PermissionNotGiven`; an empty key or a range end
    /// not above the key (other than `"\0"`) → `InvalidAuthMgmt`; unknown role → `RoleNotFound`.
    /// A permission with the same key and range end has its type replaced; a new one is inserted
    /// after the permissions with a smaller or equal key (permissions stay sorted by key).
    pub fn role_grant_permission(
        &mut self,
        txn: &mut WriteTxn<'_>,
        req: &AuthRoleGrantPermissionRequest,
    ) -> Result<AuthRoleGrantPermissionResponse, AuthError> {
        let perm = req.perm.as_ref().ok_or(AuthError::PermissionNotGiven)?;
        if !is_valid_permission_range(&perm.key, &perm.range_end) {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let role = self.roles.get(&req.name).ok_or(AuthError::RoleNotFound)?;
        let mut updated = role.clone();
        match updated
            .key_permission
            .iter_mut()
            .find(|p| p.key == perm.key && p.range_end == perm.range_end)
        {
            Some(existing) => existing.perm_type = perm.perm_type,
            None => {
                let at = updated
                    .key_permission
                    .partition_point(|p| p.key <= perm.key);
                updated.key_permission.insert(
                    at,
                    Permission {
                        perm_type: perm.perm_type,
                        key: perm.key.clone(),
                        range_end: perm.range_end.clone(),
                    },
                );
            }
        }
        Self::put_role(txn, &updated)?;
        self.revision = self.next_revision(txn)?;
        self.roles.insert(req.name.clone(), updated);
        self.refresh_range_perm_cache();
        tracing::info!(role = %req.name, "granted/updated a permission to a role");
        Ok(AuthRoleGrantPermissionResponse::default())
    }

    /// RoleRevokePermission: unknown role → `RoleNotFound`; no permission with exactly this key
    /// and range end → `PermissionNotGranted`.
    pub fn role_revoke_permission(
        &mut self,
        txn: &mut WriteTxn<'_>,
        req: &AuthRoleRevokePermissionRequest,
    ) -> Result<AuthRoleRevokePermissionResponse, AuthError> {
        let role = self.roles.get(&req.role).ok_or(AuthError::RoleNotFound)?;
        let mut updated = role.clone();
        updated
            .key_permission
            .retain(|p| p.key != req.key || p.range_end != req.range_end);
        if updated.key_permission.len() == role.key_permission.len() {
            return Err(AuthError::PermissionNotGranted);
        }
        Self::put_role(txn, &updated)?;
        self.revision = self.next_revision(txn)?;
        self.roles.insert(req.role.clone(), updated);
        self.refresh_range_perm_cache();
        tracing::info!(role = %req.role, "revoked a permission on range");
        Ok(AuthRoleRevokePermissionResponse::default())
    }

    // ---- permission checks ---------------------------------------------------------------

    /// etcd's `isOpPermitted`: everything is permitted while auth is disabled; otherwise no user
    /// (revision 0) → `UserEmpty`; a revision older than the store's → `AuthOldRevision`; an
    /// unknown user → `PermissionDenied`; the root role permits everything; else the user's
    /// merged permissions decide (`PermissionDenied`).
    fn is_op_permitted(
        &self,
        ai: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if ai.revision == 0 {
            return Err(AuthError::UserEmpty);
        }
        if ai.revision < self.revision {
            tracing::warn!(
                current = self.revision,
                request = ai.revision,
                "request auth revision is less than current node auth revision"
            );
            return Err(AuthError::AuthOldRevision);
        }
        let Some(user) = self.users.get(&ai.username) else {
            tracing::error!(user = %ai.username, "cannot find a user for permission check");
            return Err(AuthError::PermissionDenied);
        };
        if has_root_role(user) {
            return Ok(());
        }
        match self.perm_cache.get(&ai.username) {
            Some(perms) if perms.permits(key, range_end, access) => Ok(()),
            _ => Err(AuthError::PermissionDenied),
        }
    }

    /// Whether `ai` may read `[key, range_end)` (etcd's range conventions; see the crate doc).
    pub fn is_range_permitted(
        &self,
        ai: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        self.is_op_permitted(ai, key, range_end, Access::Read)
    }

    /// Whether `ai` may write `key`.
    pub fn is_put_permitted(&self, ai: &AuthInfo, key: &[u8]) -> Result<(), AuthError> {
        self.is_op_permitted(ai, key, &[], Access::Write)
    }

    /// Whether `ai` may delete `[key, range_end)`.
    pub fn is_delete_range_permitted(
        &self,
        ai: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        self.is_op_permitted(ai, key, range_end, Access::Write)
    }

    /// etcd's `IsAdminPermitted`: permitted while auth is disabled; otherwise no user →
    /// `UserEmpty`, unknown user → `UserNotFound`, a user without the root role →
    /// `PermissionDenied`. The revision is not checked (etcd does not).
    pub fn is_admin_permitted(&self, ai: &AuthInfo) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if ai.username.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let user = self
            .users
            .get(&ai.username)
            .ok_or(AuthError::UserNotFound)?;
        if !has_root_role(user) {
            return Err(AuthError::PermissionDenied);
        }
        Ok(())
    }

    // ---- credentials ---------------------------------------------------------------------

    /// etcd's `AuthInfoFromCtx` once the server has the `token` (or `authorization`) metadata
    /// value: `Ok(None)` while auth is disabled (tokens are then ignored); otherwise the user and
    /// revision of a valid token, or `InvalidAuthToken` (malformed, unknown, expired, forged,
    /// or belonging to a deleted user). A `Bearer ` prefix is accepted. A simple token's lookup
    /// moves its deadline; for simple tokens, wait first for
    /// [`TokenProvider::wait_index`](crate::TokenProvider::wait_index).
    pub fn auth_info_from_token(
        &self,
        token: &str,
        now: Now,
    ) -> Result<Option<AuthInfo>, AuthError> {
        if !self.enabled {
            return Ok(None);
        }
        let token = strip_bearer(token);
        match self.tokens.info(token, self.revision, now) {
            Some(ai) => Ok(Some(ai)),
            None => {
                tracing::warn!("invalid auth token");
                Err(AuthError::InvalidAuthToken)
            }
        }
    }

    /// etcd's `AuthInfoFromTLS`: with `--client-cert-auth` and no token, the verified client
    /// certificate's common name is the user, at the current revision. (The server must not do
    /// this for requests that came through its own gRPC gateway: etcd ignores the CN when the
    /// `grpcgateway-accept` metadata is present.)
    pub fn auth_info_from_common_name(&self, common_name: &str) -> AuthInfo {
        AuthInfo {
            username: common_name.to_string(),
            revision: self.revision,
        }
    }

    /// Credentials for the server's own requests (etcd's `WithRoot`, used to revoke expired
    /// leases and for health checks): `root` at the current revision.
    pub fn root_auth_info(&self) -> AuthInfo {
        AuthInfo {
            username: ROOT_USER.to_string(),
            revision: self.revision,
        }
    }

    /// etcd's `CheckPassword`, first half, done under the store's lock: auth disabled →
    /// `AuthNotEnabled`; unknown user → `AuthFailed`; a `no_password` user → `NoPasswordUser`.
    /// The returned check is verified off the lock (slow, bcrypt) with
    /// [`PasswordCheck::verify`].
    pub fn prepare_password_check(&self, name: &str) -> Result<PasswordCheck, AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if is_no_password(user) {
            return Err(AuthError::NoPasswordUser);
        }
        Ok(PasswordCheck {
            name: name.to_string(),
            hash: user.password.clone(),
            revision: self.revision,
        })
    }

    /// Everything that is persisted, for tests comparing memory with disk.
    #[cfg(test)]
    pub(crate) fn persisted_state(
        &self,
    ) -> (bool, u64, &BTreeMap<String, User>, &BTreeMap<String, Role>) {
        (self.enabled, self.revision, &self.users, &self.roles)
    }

    #[cfg(test)]
    pub(crate) fn perm_cache(&self) -> &HashMap<String, UnifiedRangePermissions> {
        &self.perm_cache
    }
}
