//! Request-level permission checks (etcd's `apply_auth.go`, plus the checks `v3_server.go` and
//! the v3rpc services make before proposing), so the server's applier and services call one
//! method per request instead of re-deriving which keys need which permission.
//!
//! These follow etcd 3.5's latest security fixes, which etcd 3.4.23 lacks: the operations of a
//! nested Txn are checked, a Put inside a Txn is checked like a plain Put (its lease's keys and
//! `prev_kv` included), and lease keep-alive needs write access to the lease's keys.
//!
//! The store knows nothing of leases: callers pass `lease_keys`, a function from a lease ID to
//! the keys attached to it (empty for an unknown lease), e.g. from the lessor.

use api::etcdserverpb::{
    request_op, AuthRoleGetRequest, AuthUserGetRequest, DeleteRangeRequest, InternalRaftRequest,
    PutRequest, RangeRequest, TxnRequest,
};

use crate::error::AuthError;
use crate::{AuthInfo, AuthStore};

/// Whether applying `req` requires the root role (etcd's `needAdminPermission`): every Auth
/// request except Authenticate, UserGet and RoleGet (which have their own rules:
/// [`AuthStore::check_user_get`], [`AuthStore::check_role_get`]).
pub fn needs_admin_permission(req: &InternalRaftRequest) -> bool {
    req.auth_enable.is_some()
        || req.auth_disable.is_some()
        || req.auth_status.is_some()
        || req.auth_user_add.is_some()
        || req.auth_user_delete.is_some()
        || req.auth_user_change_password.is_some()
        || req.auth_user_grant_role.is_some()
        || req.auth_user_revoke_role.is_some()
        || req.auth_role_add.is_some()
        || req.auth_role_grant_permission.is_some()
        || req.auth_role_revoke_permission.is_some()
        || req.auth_role_delete.is_some()
        || req.auth_user_list.is_some()
        || req.auth_role_list.is_some()
}

impl AuthStore {
    /// The applier's gate for an entry, from its header's `AuthInfo` (etcd's
    /// `authApplierV3.Apply`, `UserGet`, `RoleGet`): admin requests need the root role; UserGet
    /// is also allowed on oneself and RoleGet on one's own roles; everything else passes here
    /// and is checked by the per-request methods below.
    pub fn check_apply(&self, ai: &AuthInfo, req: &InternalRaftRequest) -> Result<(), AuthError> {
        if needs_admin_permission(req) {
            return self.is_admin_permitted(ai);
        }
        if let Some(r) = &req.auth_user_get {
            return self.check_user_get(ai, r);
        }
        if let Some(r) = &req.auth_role_get {
            return self.check_role_get(ai, r);
        }
        Ok(())
    }

    /// UserGet is permitted to the root role and to the user itself.
    pub fn check_user_get(&self, ai: &AuthInfo, req: &AuthUserGetRequest) -> Result<(), AuthError> {
        match self.is_admin_permitted(ai) {
            Err(e) if req.name != ai.username => Err(e),
            _ => Ok(()),
        }
    }

    /// RoleGet is permitted to the root role and to users that have the role.
    pub fn check_role_get(&self, ai: &AuthInfo, req: &AuthRoleGetRequest) -> Result<(), AuthError> {
        match self.is_admin_permitted(ai) {
            Err(e) if !self.has_role(&ai.username, &req.role) => Err(e),
            _ => Ok(()),
        }
    }

    /// Range: read access to `[key, range_end)`.
    pub fn check_range(&self, ai: &AuthInfo, r: &RangeRequest) -> Result<(), AuthError> {
        self.is_range_permitted(ai, &r.key, &r.range_end)
    }

    /// Put: write access to the key; if the put attaches a lease, write access to every key
    /// already attached to it (or the root role), since the user could then revoke the lease;
    /// with `prev_kv`, read access to the key (etcd's `checkPutAuth`).
    pub fn check_put(
        &self,
        ai: &AuthInfo,
        r: &PutRequest,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), AuthError> {
        self.is_put_permitted(ai, &r.key)?;
        if r.lease != 0 {
            self.check_lease_keys_writable(ai, &lease_keys(r.lease))?;
        }
        if r.prev_kv {
            self.is_range_permitted(ai, &r.key, &[])?;
        }
        Ok(())
    }

    /// DeleteRange: write access to the range, and read access with `prev_kv`.
    pub fn check_delete_range(
        &self,
        ai: &AuthInfo,
        r: &DeleteRangeRequest,
    ) -> Result<(), AuthError> {
        self.is_delete_range_permitted(ai, &r.key, &r.range_end)?;
        if r.prev_kv {
            self.is_range_permitted(ai, &r.key, &r.range_end)?;
        }
        Ok(())
    }

    /// Txn: read access to every compared key or range, then every operation of both branches,
    /// nested transactions included (etcd's `checkTxnAuth`). Both branches are checked whatever
    /// the compares will decide.
    pub fn check_txn(
        &self,
        ai: &AuthInfo,
        r: &TxnRequest,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), AuthError> {
        for c in &r.compare {
            self.is_range_permitted(ai, &c.key, &c.range_end)?;
        }
        for op in r.success.iter().chain(&r.failure) {
            match &op.request {
                Some(request_op::Request::RequestRange(rr)) => self.check_range(ai, rr)?,
                Some(request_op::Request::RequestPut(p)) => self.check_put(ai, p, lease_keys)?,
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    // etcd checks the read first inside a txn.
                    if d.prev_kv {
                        self.is_range_permitted(ai, &d.key, &d.range_end)?;
                    }
                    self.is_delete_range_permitted(ai, &d.key, &d.range_end)?;
                }
                Some(request_op::Request::RequestTxn(t)) => self.check_txn(ai, t, lease_keys)?,
                None => {}
            }
        }
        Ok(())
    }

    /// LeaseRevoke, and a Put attaching a lease: the root role, or write access to every key
    /// attached to the lease (etcd's `checkLeasePutsKeys`).
    pub fn check_lease_keys_writable(
        &self,
        ai: &AuthInfo,
        keys: &[Vec<u8>],
    ) -> Result<(), AuthError> {
        if self.is_admin_permitted(ai).is_ok() {
            return Ok(());
        }
        for key in keys {
            self.is_put_permitted(ai, key)?;
        }
        Ok(())
    }

    /// LeaseKeepAlive (etcd's `checkLeaseRenew`, 3.4.42+ and 3.5): with auth enabled, a user is
    /// required (`UserEmpty`); the root role passes; anyone else needs write access to every key
    /// of the lease, and `seen_revision` (the store's revision before the credentials were read)
    /// must still be the store's, else `AuthOldRevision`.
    pub fn check_lease_renew(
        &self,
        ai: Option<&AuthInfo>,
        keys: &[Vec<u8>],
        seen_revision: u64,
    ) -> Result<(), AuthError> {
        self.check_lease_call(ai, keys, seen_revision, |ai, key| {
            self.is_put_permitted(ai, key)
        })
    }

    /// LeaseLeases (etcd's `checkLeaseLeases`, 3.4.42+ and 3.5), with the keys of every lease:
    /// as [`check_lease_keys_readable`](Self::check_lease_keys_readable), then, unless the root
    /// role let the caller through, `seen_revision` must still be the store's.
    pub fn check_lease_leases(
        &self,
        ai: Option<&AuthInfo>,
        keys: &[Vec<u8>],
        seen_revision: u64,
    ) -> Result<(), AuthError> {
        self.check_lease_call(ai, keys, seen_revision, |ai, key| {
            self.is_range_permitted(ai, key, &[])
        })
    }

    /// The shape etcd's server-side lease checks share: a user is required, the root role passes,
    /// anyone else passes `per_key` for every key and then the revision comparison.
    fn check_lease_call(
        &self,
        ai: Option<&AuthInfo>,
        keys: &[Vec<u8>],
        seen_revision: u64,
        per_key: impl Fn(&AuthInfo, &[u8]) -> Result<(), AuthError>,
    ) -> Result<(), AuthError> {
        if !self.is_enabled() {
            return Ok(());
        }
        let ai = ai.ok_or(AuthError::UserEmpty)?;
        if self.is_admin_permitted(ai).is_ok() {
            return Ok(());
        }
        for key in keys {
            per_key(ai, key)?;
        }
        self.check_revision_unchanged(seen_revision)
    }

    /// The last step of etcd's lease checks: a simple token's lookup answers with the revision
    /// of the lookup, so passing the permission checks does not show that nothing changed since
    /// the call began at `seen_revision`; with auth enabled, any change since is
    /// `AuthOldRevision` (clients log in again and retry).
    pub fn check_revision_unchanged(&self, seen_revision: u64) -> Result<(), AuthError> {
        if self.is_enabled() && seen_revision != self.revision() {
            return Err(AuthError::AuthOldRevision);
        }
        Ok(())
    }

    /// LeaseTimeToLive with `keys` (etcd's `checkLeaseTimeToLive`, with the lease's keys): with
    /// auth enabled, a user is required (`UserEmpty`), and unless it has the root role, read
    /// access to every key. The server then answers `AuthOldRevision` if the store's revision
    /// moved while it read the lease ([`check_revision_unchanged`](Self::check_revision_unchanged)).
    pub fn check_lease_keys_readable(
        &self,
        ai: Option<&AuthInfo>,
        keys: &[Vec<u8>],
    ) -> Result<(), AuthError> {
        if !self.is_enabled() {
            return Ok(());
        }
        let ai = ai.ok_or(AuthError::UserEmpty)?;
        if self.is_admin_permitted(ai).is_ok() {
            return Ok(());
        }
        for key in keys {
            self.is_range_permitted(ai, key, &[])?;
        }
        Ok(())
    }

    /// etcd 3.5's `requireAuthInfo`, for calls any logged-in user may make (LeaseGrant,
    /// LeaseRevoke before the apply-time key check, LeaseTimeToLive, MemberList, Status, Alarm
    /// GET): with auth
    /// enabled, no credentials → `UserEmpty`.
    pub fn require_auth_info(&self, ai: Option<&AuthInfo>) -> Result<(), AuthError> {
        if self.is_enabled() && ai.is_none() {
            return Err(AuthError::UserEmpty);
        }
        Ok(())
    }

    /// For calls that need the root role before anything else (Compact, Defragment, Snapshot,
    /// Hash, HashKV, MoveLeader, Alarm activate/deactivate, member changes): etcd's
    /// `IsAdminPermitted` on the request's credentials, where none means an empty user.
    pub fn require_admin(&self, ai: Option<&AuthInfo>) -> Result<(), AuthError> {
        self.is_admin_permitted(ai.unwrap_or(&AuthInfo::default()))
    }
}
