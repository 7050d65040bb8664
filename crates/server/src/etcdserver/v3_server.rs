//! The member as the client services see it, as etcd's `v3_server.go`: `EtcdServer` implements the
//! traits `v3rpc` defines. Writes go through Raft and are answered from their apply result; reads are
//! served from the local store after a ReadIndex round unless serializable; leases, alarms, membership
//! changes and leader transfer are the server's own operations (`lease_requests`, `quota`, `reconfig`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use api::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, AuthenticateRequest, AuthenticateResponse,
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    InternalRaftRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use apply::txn::{self, Exec, NoLeases};
use apply::Applied;
use membership::Member;
use raftnode::Command;
use rpctypes::ServerError;
use v3rpc::Ctx;

use super::EtcdServer;

fn unexpected() -> ServerError {
    ServerError::Internal("unexpected apply result".into())
}

impl v3rpc::RaftStatusGetter for EtcdServer {
    fn member_id(&self) -> u64 {
        self.member_id
    }

    fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    fn term(&self) -> u64 {
        EtcdServer::term(self)
    }

    fn leader(&self) -> u64 {
        EtcdServer::leader(self)
    }

    fn committed_index(&self) -> u64 {
        self.status.commit.load(Ordering::Acquire)
    }

    fn applied_index(&self) -> u64 {
        self.status.applied.load(Ordering::Acquire)
    }

    fn is_learner(&self) -> bool {
        EtcdServer::is_learner(self)
    }
}

impl v3rpc::KvGetter for EtcdServer {
    fn kv(&self) -> &Arc<mvcc::KvStore> {
        &self.kv
    }

    fn watchable(&self) -> &Arc<mvcc::WatchableStore> {
        &self.watchable
    }
}

impl v3rpc::BackendGetter for EtcdServer {
    fn backend(&self) -> &Arc<backend::Backend> {
        &self.backend
    }
}

#[tonic::async_trait]
impl v3rpc::RaftKv for EtcdServer {
    async fn range(&self, cx: &Ctx, req: RangeRequest) -> Result<RangeResponse, ServerError> {
        if !req.serializable {
            self.linearizable_read().await?;
        }
        self.serialize(
            cx,
            |store, ai| store.check_range(ai, &req),
            || txn::range(&self.kv.read(), &req),
        )
        .await
    }

    async fn put(&self, cx: &Ctx, req: PutRequest) -> Result<PutResponse, ServerError> {
        let ai = self.auth_info(cx).await?;
        let applied = self
            .propose_as(
                ai.as_ref(),
                InternalRaftRequest {
                    put: Some(req),
                    ..Default::default()
                },
            )
            .await?;
        match applied {
            Applied::Put(resp) => Ok(resp),
            _ => Err(unexpected()),
        }
    }

    async fn delete_range(
        &self,
        cx: &Ctx,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, ServerError> {
        let ai = self.auth_info(cx).await?;
        let applied = self
            .propose_as(
                ai.as_ref(),
                InternalRaftRequest {
                    delete_range: Some(req),
                    ..Default::default()
                },
            )
            .await?;
        match applied {
            Applied::DeleteRange(resp) => Ok(resp),
            _ => Err(unexpected()),
        }
    }

    async fn txn(&self, cx: &Ctx, req: TxnRequest) -> Result<TxnResponse, ServerError> {
        if txn::txn_is_read_only(&req) {
            if !txn::txn_is_serializable(&req) {
                self.linearizable_read().await?;
            }
            let leases = &self.leases;
            return self
                .serialize(
                    cx,
                    |store, ai| store.check_txn(ai, &req, &|id| leases.keys(id)),
                    || {
                        let view = self.kv.read();
                        txn::txn(&mut Exec::Read(&view), self.kv.first_rev(), &NoLeases, &req)
                    },
                )
                .await;
        }
        let ai = self.auth_info(cx).await?;
        let applied = self
            .propose_as(
                ai.as_ref(),
                InternalRaftRequest {
                    txn: Some(req),
                    ..Default::default()
                },
            )
            .await?;
        match applied {
            Applied::Txn(resp) => Ok(resp),
            _ => Err(unexpected()),
        }
    }

    async fn compact(
        &self,
        cx: &Ctx,
        req: CompactionRequest,
    ) -> Result<CompactionResponse, ServerError> {
        let ai = self.auth_info(cx).await?;
        let applied = self
            .propose_as(
                ai.as_ref(),
                InternalRaftRequest {
                    compaction: Some(req),
                    ..Default::default()
                },
            )
            .await?;
        match applied {
            Applied::Compaction(resp, handle) => {
                if let Some(h) = handle {
                    // Physical compaction deletes in batches on its own; wait without holding a
                    // runtime thread.
                    tokio::task::spawn_blocking(move || h.wait())
                        .await
                        .map_err(|e| ServerError::Internal(e.to_string()))?
                        .map_err(ServerError::from)?;
                }
                Ok(resp)
            }
            _ => Err(unexpected()),
        }
    }
}

impl EtcdServer {
    /// etcd's `doSerialize`: a read served locally is checked against the caller's credentials
    /// (none is the empty user) before it is read, and refused with `AuthOldRevision` if the auth
    /// store changed while it was read with credentials of an older revision.
    async fn serialize<T>(
        &self,
        cx: &Ctx,
        check: impl FnOnce(&auth::AuthStore, &auth::AuthInfo) -> Result<(), auth::AuthError>,
        read: impl FnOnce() -> Result<T, ServerError>,
    ) -> Result<T, ServerError> {
        let ai = self.auth_info(cx).await?.unwrap_or_default();
        check(&self.auth_store(), &ai)?;
        let resp = read()?;
        if ai.revision != 0 && ai.revision != self.auth_store().revision() {
            return Err(auth::AuthError::AuthOldRevision.into());
        }
        Ok(resp)
    }
}

#[tonic::async_trait]
impl v3rpc::Quota for EtcdServer {
    fn quota_has_room(&self, cost: u64) -> Result<bool, ServerError> {
        EtcdServer::quota_has_room(self, cost)
    }

    async fn refuse_over_quota(&self) -> ServerError {
        EtcdServer::refuse_over_quota(self).await
    }
}

#[tonic::async_trait]
impl v3rpc::Alarmer for EtcdServer {
    async fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, ServerError> {
        EtcdServer::alarm(self, req).await
    }

    fn alarms(&self) -> Vec<AlarmMember> {
        self.alarms.get(AlarmType::None)
    }
}

#[tonic::async_trait]
impl v3rpc::LeaderTransferrer for EtcdServer {
    async fn move_leader(&self, target: u64) -> Result<(), ServerError> {
        if self.leader() != self.member_id {
            return Err(ServerError::NotLeader);
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Command::TransferLeader { target, reply })?;
        rx.await.map_err(|_| ServerError::Stopped)??;
        tracing::info!(
            from = format!("{:x}", self.member_id),
            to = format!("{target:x}"),
            "leadership transfer starting"
        );
        // As etcd: wait, one heartbeat at a time, until the target leads.
        let deadline = tokio::time::Instant::now() + self.request_timeout();
        while self.leader() != target {
            if tokio::time::Instant::now() >= deadline {
                return Err(ServerError::LeaderTransferTimeout);
            }
            tokio::time::sleep(self.cfg.heartbeat_interval).await;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl v3rpc::Lessor for EtcdServer {
    async fn lease_grant(
        &self,
        cx: &Ctx,
        req: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, ServerError> {
        let ai = self.require_auth_info(cx).await?;
        EtcdServer::lease_grant(self, ai.as_ref(), req).await
    }

    async fn lease_revoke(
        &self,
        cx: &Ctx,
        req: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, ServerError> {
        let ai = self.require_auth_info(cx).await?;
        EtcdServer::lease_revoke(self, ai.as_ref(), req).await
    }

    async fn lease_renew(&self, cx: &Ctx, id: i64) -> Result<i64, ServerError> {
        // etcd's `checkLeaseRenew`: write access to the lease's keys. The revision is read before
        // the credentials because a simple token's lookup answers with the revision of the
        // lookup, which may be newer than the one the permissions were checked against.
        let seen = self.auth_store().revision();
        if self.auth_store().is_enabled() {
            let ai = self.auth_info(cx).await?;
            self.auth_store()
                .check_lease_renew(ai.as_ref(), &self.leases.keys(id), seen)?;
        }
        EtcdServer::lease_renew(self, id).await
    }

    async fn lease_time_to_live(
        &self,
        cx: &Ctx,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, ServerError> {
        let seen = self.auth_store().revision();
        let ai = self.require_auth_info(cx).await?;
        if !req.keys {
            return EtcdServer::lease_time_to_live(self, req).await;
        }
        // etcd's `checkLeaseTimeToLive`: read access to the lease's keys, and the keys are
        // withheld if the auth store moved while they were read (the caller's access may be gone).
        self.auth_store()
            .check_lease_keys_readable(ai.as_ref(), &self.leases.keys(req.id))?;
        let resp = EtcdServer::lease_time_to_live(self, req).await?;
        self.auth_store().check_revision_unchanged(seen)?;
        Ok(resp)
    }

    async fn lease_leases(&self, cx: &Ctx) -> Result<Vec<i64>, ServerError> {
        let seen = self.auth_store().revision();
        let ids = self.leases.leases();
        // etcd's `checkLeaseLeases`: read access to the keys of every lease.
        if self.auth_store().is_enabled() {
            let ai = self.auth_info(cx).await?;
            let keys: Vec<Vec<u8>> = ids.iter().flat_map(|id| self.leases.keys(*id)).collect();
            self.auth_store()
                .check_lease_leases(ai.as_ref(), &keys, seen)?;
        }
        Ok(ids)
    }
}

#[tonic::async_trait]
impl v3rpc::AuthGetter for EtcdServer {
    async fn auth_info(&self, cx: &Ctx) -> Result<Option<auth::AuthInfo>, auth::AuthError> {
        EtcdServer::auth_info(self, cx).await
    }

    fn auth_store(&self) -> std::sync::RwLockReadGuard<'_, auth::AuthStore> {
        EtcdServer::auth_store(self)
    }
}

#[tonic::async_trait]
impl v3rpc::Authenticator for EtcdServer {
    async fn authenticate(
        &self,
        req: AuthenticateRequest,
    ) -> Result<AuthenticateResponse, ServerError> {
        EtcdServer::authenticate(self, req).await
    }

    async fn auth_request(
        &self,
        cx: &Ctx,
        req: InternalRaftRequest,
    ) -> Result<apply::auth::AuthApplied, ServerError> {
        EtcdServer::auth_request(self, cx, req).await
    }
}

#[tonic::async_trait]
impl v3rpc::Cluster for EtcdServer {
    fn members(&self) -> Vec<Member> {
        self.cluster.members()
    }

    fn parse_peer_urls(&self, urls: &[String]) -> Result<Vec<String>, ServerError> {
        super::reconfig::parse_peer_urls(urls)
    }

    async fn add_member(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<(Member, Vec<Member>), ServerError> {
        EtcdServer::add_member(self, peer_urls, is_learner).await
    }

    async fn remove_member(&self, id: u64) -> Result<Vec<Member>, ServerError> {
        EtcdServer::remove_member(self, id).await
    }

    async fn update_member(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<Vec<Member>, ServerError> {
        EtcdServer::update_member(self, id, peer_urls).await
    }

    async fn promote_member(&self, id: u64) -> Result<Vec<Member>, ServerError> {
        EtcdServer::promote_member(self, id).await
    }
}

#[tonic::async_trait]
impl v3rpc::ReadIndexer for EtcdServer {
    async fn linearizable_read(&self) -> Result<(), ServerError> {
        EtcdServer::linearizable_read(self).await
    }
}

impl v3rpc::MetricsSource for EtcdServer {
    fn refresh_metrics(&self) {
        self.refresh_gauges();
    }
}
