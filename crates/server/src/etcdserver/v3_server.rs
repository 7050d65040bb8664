//! The member as the client services see it, as etcd's `v3_server.go`: `EtcdServer` implements the
//! traits `v3rpc` defines. Writes go through Raft and are answered from their apply result; reads are
//! served from the local store after a ReadIndex round unless serializable; leases, alarms, membership
//! changes and leader transfer are the server's own operations (`lease_requests`, `quota`, `reconfig`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use api::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse,
    DeleteRangeRequest, DeleteRangeResponse, InternalRaftRequest, LeaseGrantRequest,
    LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest,
    TxnResponse,
};
use apply::txn::{self, Exec, NoLeases};
use apply::Applied;
use membership::Member;
use raftnode::Command;
use rpctypes::ServerError;

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
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, ServerError> {
        if !req.serializable {
            self.linearizable_read().await?;
        }
        txn::range(&self.kv.read(), &req)
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse, ServerError> {
        let applied = self
            .propose(InternalRaftRequest {
                put: Some(req),
                ..Default::default()
            })
            .await?;
        match applied {
            Applied::Put(resp) => Ok(resp),
            _ => Err(unexpected()),
        }
    }

    async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, ServerError> {
        let applied = self
            .propose(InternalRaftRequest {
                delete_range: Some(req),
                ..Default::default()
            })
            .await?;
        match applied {
            Applied::DeleteRange(resp) => Ok(resp),
            _ => Err(unexpected()),
        }
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, ServerError> {
        if txn::txn_is_read_only(&req) {
            if !txn::txn_is_serializable(&req) {
                self.linearizable_read().await?;
            }
            let view = self.kv.read();
            return txn::txn(&mut Exec::Read(&view), self.kv.first_rev(), &NoLeases, &req);
        }
        let applied = self
            .propose(InternalRaftRequest {
                txn: Some(req),
                ..Default::default()
            })
            .await?;
        match applied {
            Applied::Txn(resp) => Ok(resp),
            _ => Err(unexpected()),
        }
    }

    async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse, ServerError> {
        let applied = self
            .propose(InternalRaftRequest {
                compaction: Some(req),
                ..Default::default()
            })
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

#[tonic::async_trait]
impl v3rpc::Quota for EtcdServer {
    async fn check_quota(&self, cost: u64) -> Result<(), ServerError> {
        EtcdServer::check_quota(self, cost).await
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
    async fn lease_grant(&self, req: LeaseGrantRequest) -> Result<LeaseGrantResponse, ServerError> {
        EtcdServer::lease_grant(self, req).await
    }

    async fn lease_revoke(
        &self,
        req: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, ServerError> {
        EtcdServer::lease_revoke(self, req).await
    }

    async fn lease_renew(&self, id: i64) -> Result<i64, ServerError> {
        EtcdServer::lease_renew(self, id).await
    }

    async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, ServerError> {
        EtcdServer::lease_time_to_live(self, req).await
    }

    fn lease_ids(&self) -> Vec<i64> {
        self.leases.leases()
    }
}

#[tonic::async_trait]
impl v3rpc::Cluster for EtcdServer {
    fn members(&self) -> Vec<Member> {
        self.cluster.members()
    }

    async fn add_member(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<(Member, Vec<Member>), ServerError> {
        EtcdServer::add_member(self, &peer_urls, is_learner).await
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
