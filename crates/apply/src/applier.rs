//! Applies committed Raft entries to the store, in log order, and produces each request's response.
//!
//! Entries at or below the store's consistent index are already in the backend (the index is written in the
//! same backend transaction as the data), so they are skipped: replaying the WAL after a crash is idempotent.
//! The applier has no clock and no sockets: it is driven entry by entry by the Raft loop, and by tests.
//!
//! Puts, deletes and write txns end their store transaction with a deferred commit
//! ([`mvcc::TxnWrite::end_deferred`]), and their responses wait in the applier until [`Applier::flush`],
//! which the Raft loop calls after each batch of committed entries: one publication per batch instead of
//! one commit per request (a commit costs far more than a small put), and the commit itself only when a
//! reader needs it or the deferred transaction has grown large (`mvcc::KvStore::flush`). Any other request
//! first flushes what is pending, so it sees, and its response follows, everything applied before it.

use std::sync::Arc;

use api::etcdserverpb::{
    AlarmRequest, AlarmResponse, CompactionResponse, DeleteRangeResponse, InternalRaftRequest,
    LeaseGrantResponse, LeaseRevokeResponse, PutResponse, ResponseHeader, TxnResponse,
};
use mvcc::KvStore;
use prost::Message as _;

use crate::alarm::{self, AlarmStore};
use crate::auth::{self as apply_auth, ApplyAuth, AuthApplied};
use crate::lessor::Leases;
use crate::quota::{self, Quota};
use crate::txn::{self, Exec};
use crate::wait::Wait;
use rpctypes::ServerError;

/// A write's outcome, as computed at apply time.
pub enum Applied {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    /// With the handle to wait on for `physical` compactions.
    Compaction(CompactionResponse, Option<mvcc::CompactHandle>),
    Alarm(AlarmResponse),
    /// A member published its name and client URLs.
    MemberAttrSet,
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    /// An Auth entry's answer (its header is filled by the server).
    Auth(AuthApplied),
}

pub type ApplyResult = Result<Applied, ServerError>;

/// A committed entry the store could not take (a full disk, an I/O error). The member must stop: going on
/// would apply later entries on top of a missing one, and the other members applied it. After a restart the
/// entry is replayed from the WAL, since the backend's consistent index never moved past it.
#[derive(Debug, thiserror::Error)]
#[error("cannot apply entry {index}: {reason}")]
pub struct ApplyFailed {
    pub index: u64,
    pub reason: String,
}

pub struct Applier {
    kv: Arc<KvStore>,
    leases: Arc<Leases>,
    wait: Arc<Wait<ApplyResult>>,
    consistent_index: u64,
    space: Space,
    cluster: Option<Arc<membership::RaftCluster>>,
    /// The auth store and its clock; without it nothing is checked (tests of other concerns).
    auth: Option<ApplyAuth>,
    /// Responses of requests applied since the last flush, in apply order.
    unflushed: Vec<(u64, ApplyResult)>,
    /// The backend file's size, read once per flush: the file only grows when a commit writes
    /// it (now often a reader's or the 100 ms sync's, so the figure may lag by that much) (etcd's quota also reads the size as of the last commit), and a `stat` per request
    /// was a visible share of the apply loop.
    db_size: Option<u64>,
    /// etcd's `--warning-apply-duration`, with the clock that measures it (none: not measured).
    slow: Option<(std::time::Duration, crate::lessor::Clock)>,
    /// The last index the log held when the member started: entries up to it were applied
    /// before, and are applied again only because the consistent index did not record them.
    replayed_until: u64,
}

/// What the applier needs for alarms and the space quota (see `alarm` and `quota`).
pub struct Space {
    pub alarms: Arc<AlarmStore>,
    pub quota: Quota,
    /// Asked to raise the NOSPACE alarm through Raft when a write went over the quota.
    pub raise_nospace: Box<dyn Fn() + Send>,
}

impl Applier {
    pub fn new(kv: Arc<KvStore>, leases: Arc<Leases>, wait: Arc<Wait<ApplyResult>>) -> Applier {
        let consistent_index = kv.consistent_index();
        Applier {
            kv,
            leases,
            wait,
            consistent_index,
            space: Space {
                alarms: Arc::default(),
                quota: Quota {
                    max_bytes: u64::MAX,
                },
                raise_nospace: Box::new(|| {}),
            },
            cluster: None,
            auth: None,
            unflushed: Vec::new(),
            db_size: None,
            slow: None,
            replayed_until: 0,
        }
    }

    /// Entries up to `index` (the log's last at start) were applied before the restart: an
    /// Authenticate among them mints no simple token again. etcd keeps simple tokens in memory
    /// only; minting one again would give it a new lifetime, and an expired one back its use.
    pub fn with_replayed_until(mut self, index: u64) -> Applier {
        self.replayed_until = index;
        self
    }

    /// Logs an entry whose apply took longer than `threshold` by `clock` and counts it in
    /// `etcd_server_slow_apply_total`, as etcd's `warnOfExpensiveRequest` (`--warning-apply-duration`).
    pub fn with_slow_apply(
        mut self,
        threshold: std::time::Duration,
        clock: crate::lessor::Clock,
    ) -> Applier {
        self.slow = Some((threshold, clock));
        self
    }

    /// The membership that `cluster_member_attr_set` entries update.
    pub fn with_cluster(mut self, cluster: Arc<membership::RaftCluster>) -> Applier {
        self.cluster = Some(cluster);
        self
    }

    /// Checks every entry against the auth store and applies Auth entries (see `auth`).
    pub fn with_auth(mut self, auth: ApplyAuth) -> Applier {
        self.auth = Some(auth);
        self
    }

    /// Enforces alarms and the space quota.
    pub fn with_space(mut self, space: Space) -> Applier {
        self.space = space;
        self
    }

    pub fn consistent_index(&self) -> u64 {
        self.consistent_index
    }

    pub fn kv(&self) -> &Arc<KvStore> {
        &self.kv
    }

    /// The requests waiting for their entries' results (for answering one that never reaches the log
    /// without holding the applier).
    pub fn waiters(&self) -> &Arc<Wait<ApplyResult>> {
        &self.wait
    }

    /// Applies one normal entry's payload (empty for the leader's no-op entries). Fails only when the
    /// store could not take the entry (see [`ApplyFailed`]); a request the entry's semantics reject is
    /// answered with its error and counts as applied.
    pub fn apply(&mut self, index: u64, term: u64, data: &[u8]) -> Result<(), ApplyFailed> {
        if data.is_empty() {
            // A leader's first entry of its term: the lessor may now be promoted.
            self.leases.noop_applied(term);
            return Ok(());
        }
        if index <= self.consistent_index {
            return Ok(());
        }
        let req = match InternalRaftRequest::decode(data) {
            Ok(r) => r,
            Err(e) => {
                // Every member sees the same bytes, so every member skips the same entry.
                tracing::error!(index, "skipping undecodable raft entry: {e}");
                return Ok(());
            }
        };
        let id = req.header.as_ref().map(|h| h.id).unwrap_or(0);
        let batched = batchable(&req);
        if !batched {
            if let Err(e) = self.flush() {
                self.wait.trigger(id, Err(ServerError::Stopped));
                return Err(e);
            }
        }
        let start = self.slow.as_ref().map(|(_, clock)| clock());
        let result = self.apply_request(req, index, term);
        if let (Some(start), Some((threshold, clock))) = (start, &self.slow) {
            let took = clock().saturating_duration_since(start);
            if took > *threshold {
                crate::metrics::SLOW_APPLY.inc();
                tracing::warn!(
                    index,
                    took = ?took,
                    expected_duration = ?threshold,
                    error = result.as_ref().err().map(|e| e.to_string()),
                    "apply request took too long"
                );
            }
        }
        if let Some(reason) = self.kv.backend().failure() {
            // The outcome is unknown to the client until the entry is applied after a restart.
            self.wait.trigger(id, Err(ServerError::Stopped));
            for (id, _) in std::mem::take(&mut self.unflushed) {
                self.wait.trigger(id, Err(ServerError::Stopped));
            }
            return Err(ApplyFailed {
                index,
                reason: reason.to_string(),
            });
        }
        if let Err(ServerError::Internal(e)) = &result {
            tracing::error!(index, "apply failed: {e}");
        }
        if batched {
            self.unflushed.push((id, result));
        } else {
            self.wait.trigger(id, result);
        }
        Ok(())
    }

    /// Publishes what the requests applied since the last flush changed (committing it when
    /// `mvcc::KvStore::flush` does), and sends their responses. If that fails, they are answered with [`ServerError::Stopped`] and the
    /// member must stop (see [`ApplyFailed`]): those entries are applied in memory but not on disk, and
    /// are applied again from the WAL after a restart.
    pub fn flush(&mut self) -> Result<(), ApplyFailed> {
        let committed = self.kv.flush();
        self.db_size = None;
        let responses = std::mem::take(&mut self.unflushed);
        match committed {
            Ok(()) => {
                for (id, result) in responses {
                    self.wait.trigger(id, result);
                }
                Ok(())
            }
            Err(e) => {
                for (id, _) in responses {
                    self.wait.trigger(id, Err(ServerError::Stopped));
                }
                Err(ApplyFailed {
                    index: self.consistent_index,
                    reason: format!("committing the applied entries: {e}"),
                })
            }
        }
    }

    fn apply_request(&mut self, req: InternalRaftRequest, index: u64, term: u64) -> ApplyResult {
        alarm::gate(&self.space.alarms, &req)?;
        // etcd's order: the capped applier (alarms), then auth, then the quota.
        if let Some(a) = &self.auth {
            apply_auth::check_entry(&a.store.read(), &self.leases, &req)?;
            if apply_auth::is_auth_entry(&req) {
                return self.apply_auth(&req, index, term);
            }
        }
        if let Some(a) = &req.alarm {
            return self.apply_alarm(a, index, term);
        }
        // etcd's quota applier: a write over the quota is still applied (every member applies
        // the same entries) but answered with NoSpace, and the alarm is raised.
        let fits = !quota::limited(&req) || {
            let size = self.db_size();
            self.space.quota.available(size, quota::cost(&req))
        };
        let result = self.apply_kv(req, index, term);
        if result.is_ok() && !fits {
            if !self.space.alarms.has(api::etcdserverpb::AlarmType::Nospace) {
                (self.space.raise_nospace)();
            }
            return Err(ServerError::NoSpace);
        }
        result
    }

    /// An Auth entry: reads and Authenticate under the store's read lock; changes in one backend
    /// transaction with the entry's consistent index. A change the store refuses (an unknown user,
    /// ...) still moves the consistent index, as any applied entry does.
    fn apply_auth(&mut self, req: &InternalRaftRequest, index: u64, term: u64) -> ApplyResult {
        let Some(a) = self.auth.clone() else {
            return Err(ServerError::Internal("auth is not wired".into()));
        };
        if !apply_auth::auth_entry_writes(req) {
            if req.authenticate.is_some() && index <= self.replayed_until {
                // Nobody waits for it: its request was made before the restart.
                return Err(ServerError::InvalidAuthToken);
            }
            return apply_auth::apply_auth_read(&a, req, index)
                .map(Applied::Auth)
                .map_err(ServerError::from);
        }
        let kv = Arc::clone(&self.kv);
        let mut w = kv.write();
        let txn = w
            .backend_txn()
            .ok_or_else(|| ServerError::Internal("no backend transaction".into()))?;
        let result = apply_auth::apply_auth_write(&a, txn, req);
        if let Err(e @ (auth::AuthError::Backend(_) | auth::AuthError::Corrupt(_))) = &result {
            // Dropping the transaction unended discards what was written; memory was not
            // changed (the store updates memory only after its writes succeeded).
            drop(w);
            return Err(ServerError::Internal(e.to_string()));
        }
        self.end(w, index, term)?;
        result.map(Applied::Auth).map_err(ServerError::from)
    }

    fn db_size(&mut self) -> u64 {
        let kv = &self.kv;
        *self
            .db_size
            .get_or_insert_with(|| kv.backend().size().unwrap_or(0))
    }

    fn apply_alarm(&mut self, req: &AlarmRequest, index: u64, term: u64) -> ApplyResult {
        let kv = Arc::clone(&self.kv);
        let mut w = kv.write();
        let (resp, change) = self.space.alarms.prepare(req)?;
        if let Some(c) = &change {
            let txn = w
                .backend_txn()
                .ok_or_else(|| ServerError::Internal("no backend transaction".into()))?;
            c.write(txn)
                .map_err(|e| ServerError::Internal(e.to_string()))?;
        }
        self.end(w, index, term)?;
        if let Some(c) = change {
            self.space.alarms.commit(c);
        }
        Ok(Applied::Alarm(resp))
    }

    fn apply_kv(&mut self, req: InternalRaftRequest, index: u64, term: u64) -> ApplyResult {
        let kv = Arc::clone(&self.kv);
        let leases = Arc::clone(&self.leases);
        let leases = leases.as_ref();
        if let Some(p) = req.put {
            let mut w = kv.write();
            let resp = txn::put(&mut w, leases, &p)?;
            self.end_deferred(w, index, term)?;
            return Ok(Applied::Put(resp));
        }
        if let Some(d) = req.delete_range {
            let mut w = kv.write();
            let resp = txn::delete_range(&mut w, &d)?;
            self.end_deferred(w, index, term)?;
            return Ok(Applied::DeleteRange(resp));
        }
        if let Some(t) = req.txn {
            let first_rev = self.kv.first_rev();
            if txn::txn_is_read_only(&t) {
                let view = self.kv.read();
                return txn::txn(&mut Exec::Read(&view), first_rev, leases, &t).map(Applied::Txn);
            }
            let mut w = kv.write();
            let resp = txn::txn(&mut Exec::Write(&mut w), first_rev, leases, &t)?;
            self.end_deferred(w, index, term)?;
            return Ok(Applied::Txn(resp));
        }
        if let Some(c) = req.compaction {
            let handle = self.kv.compact(c.revision)?;
            let header = Some(ResponseHeader {
                revision: self.kv.rev(),
                ..Default::default()
            });
            let handle = if c.physical { Some(handle) } else { None };
            return Ok(Applied::Compaction(CompactionResponse { header }, handle));
        }
        if let Some(a) = req.cluster_member_attr_set {
            return self.member_attr_set(a, index, term);
        }
        if let Some(g) = req.lease_grant {
            let mut w = kv.write();
            let ttl = leases.grant(&mut w, g.id, g.ttl)?;
            let revision = w.rev();
            self.end_lease_change(w, index, term)?;
            return Ok(Applied::LeaseGrant(LeaseGrantResponse {
                header: Some(ResponseHeader {
                    revision,
                    ..Default::default()
                }),
                id: g.id,
                ttl,
                error: String::new(),
            }));
        }
        if let Some(r) = req.lease_revoke {
            let mut w = kv.write();
            leases.revoke(&mut w, r.id)?;
            let revision = w.rev();
            self.end_lease_change(w, index, term)?;
            return Ok(Applied::LeaseRevoke(LeaseRevokeResponse {
                header: Some(ResponseHeader {
                    revision,
                    ..Default::default()
                }),
            }));
        }
        Err(ServerError::Internal("unsupported raft request".into()))
    }

    fn member_attr_set(
        &mut self,
        a: api::membershippb::ClusterMemberAttrSetRequest,
        index: u64,
        term: u64,
    ) -> ApplyResult {
        let attrs = a.member_attributes.unwrap_or_default();
        let updated = self
            .cluster
            .as_ref()
            .and_then(|c| c.with_attributes(a.member_id, &attrs.name, &attrs.client_urls));
        let Some(m) = updated else {
            tracing::warn!(
                member = format!("{:x}", a.member_id),
                "skipped attributes of a member that is not in the cluster"
            );
            return Ok(Applied::MemberAttrSet);
        };
        let saved = m.clone();
        self.apply_backend(index, term, move |txn| {
            membership::store::save_member(txn, &saved)
        })?;
        if let Some(c) = &self.cluster {
            c.commit(Some(m), None);
        }
        Ok(Applied::MemberAttrSet)
    }

    /// Writes what `f` writes (buckets outside the key space, e.g. the membership) in one backend
    /// transaction with `index` as the consistent index. Returns false, writing nothing, if `index` was
    /// applied before.
    pub fn apply_backend(
        &mut self,
        index: u64,
        term: u64,
        f: impl FnOnce(&mut backend::WriteTxn<'_>) -> Result<(), backend::BackendError>,
    ) -> Result<bool, ServerError> {
        if index <= self.consistent_index {
            return Ok(false);
        }
        self.flush()
            .map_err(|e| ServerError::Internal(e.to_string()))?;
        let kv = Arc::clone(&self.kv);
        let mut w = kv.write();
        match w.backend_txn() {
            Some(txn) => f(txn).map_err(|e| ServerError::Internal(e.to_string()))?,
            None => return Err(ServerError::Internal("no backend transaction".into())),
        }
        self.end(w, index, term)?;
        Ok(true)
    }

    /// Ends a write transaction with a deferred commit (see the module doc).
    fn end_deferred(
        &mut self,
        w: mvcc::TxnWrite<'_>,
        index: u64,
        term: u64,
    ) -> Result<(), ServerError> {
        let leases = &self.leases;
        w.end_deferred(index, term, |events| leases.apply_events(events))?;
        self.consistent_index = index;
        Ok(())
    }

    fn end(&mut self, w: mvcc::TxnWrite<'_>, index: u64, term: u64) -> Result<(), ServerError> {
        let events = w.end(index, term)?;
        self.consistent_index = index;
        self.leases.apply_events(&events);
        Ok(())
    }

    /// Ends a write transaction that changed the lessor; if it cannot commit, the lessor is
    /// rebuilt from the backend so memory matches disk again.
    fn end_lease_change(
        &mut self,
        w: mvcc::TxnWrite<'_>,
        index: u64,
        term: u64,
    ) -> Result<(), ServerError> {
        let r = self.end(w, index, term);
        if r.is_err() {
            if let Err(e) = self.leases.reload(&self.kv) {
                tracing::error!("cannot rebuild the lessor after a failed apply: {e}");
            }
        }
        r
    }
}

/// Whether a request's changes may wait for [`Applier::flush`]: writes to the key space, whose responses
/// carry nothing read outside their own transaction. A read-only txn reads the store as published, so it
/// must come after a flush.
fn batchable(req: &InternalRaftRequest) -> bool {
    req.put.is_some()
        || req.delete_range.is_some()
        || req.txn.as_ref().is_some_and(|t| !txn::txn_is_read_only(t))
}

impl Applier {
    /// Replaces the backend's file with `install` (a snapshot from the leader) and rebuilds everything
    /// held in memory from it: the key-value store and its watchers (`KvStore::restore`), the lessor, the
    /// alarms and the consistent index. On error the backend may serve either file; the caller stops.
    pub fn restore(
        &mut self,
        install: impl FnOnce() -> Result<(), backend::BackendError>,
    ) -> Result<(), ServerError> {
        self.kv
            .restore(|| install().map_err(mvcc::MvccError::from))?;
        self.leases
            .reload(&self.kv)
            .map_err(|e| ServerError::Internal(format!("reloading the lessor: {e}")))?;
        let r = self
            .kv
            .backend()
            .read()
            .map_err(|e| ServerError::Internal(e.to_string()))?;
        self.space.alarms.reload(&r)?;
        if let Some(a) = &self.auth {
            a.store
                .write()
                .recover(&r)
                .map_err(|e| ServerError::Internal(format!("reloading the auth store: {e}")))?;
        }
        self.consistent_index = self.kv.consistent_index();
        Ok(())
    }

    /// Answers a request that will never be applied (its proposal was dropped).
    pub fn fail(&self, id: u64, e: ServerError) {
        self.wait.trigger(id, Err(e));
    }
}

#[cfg(test)]
mod tests;
