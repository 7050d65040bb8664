//! The Maintenance service: what `etcdctl endpoint status/health/hashkv` need. Defragment, Snapshot and
//! MoveLeader are still to come.

use std::sync::Arc;

use api::etcdserverpb::{
    maintenance_server::Maintenance, AlarmRequest, AlarmResponse, DefragmentRequest,
    DefragmentResponse, DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse,
    HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::etcdserver::EtcdServer;
use crate::v3rpc::unimplemented::unimplemented;

/// The etcd API version Hearth implements, reported where etcd reports its own version: clients use it to
/// decide which features they may use.
pub const API_VERSION: &str = "3.5.0";

pub struct MaintenanceService {
    pub srv: Arc<EtcdServer>,
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    type SnapshotStream = Stream<SnapshotResponse>;

    async fn alarm(&self, _: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        Ok(Response::new(AlarmResponse {
            header: self.srv.header(0),
            alarms: Vec::new(),
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        use std::sync::atomic::Ordering::Acquire;
        let s = &self.srv;
        let backend = s.backend.clone();
        let sizes = tokio::task::spawn_blocking(move || {
            Ok::<_, backend::BackendError>((backend.size()?, backend.size_in_use()?))
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?;
        let (db_size, db_size_in_use) = sizes.map_err(|e| ServerError::Internal(e.to_string()))?;
        let mut errors = Vec::new();
        if s.leader() == 0 {
            errors.push(ServerError::NoLeader.to_string());
        }
        Ok(Response::new(StatusResponse {
            header: s.header(0),
            version: API_VERSION.into(),
            db_size: db_size as i64,
            leader: s.leader(),
            raft_index: s.status.commit.load(Acquire),
            raft_term: s.term(),
            raft_applied_index: s.status.applied.load(Acquire),
            errors,
            db_size_in_use: db_size_in_use as i64,
            is_learner: s.is_learner(),
        }))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Err(unimplemented("Maintenance", "Defragment"))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(unimplemented("Maintenance", "Hash"))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let rev = req.into_inner().revision;
        let kv = self.srv.kv.clone();
        let (hash, compact_revision) = tokio::task::spawn_blocking(move || kv.hash_kv(rev))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))?
            .map_err(ServerError::from)?;
        Ok(Response::new(HashKvResponse {
            header: self.srv.header(0),
            hash,
            compact_revision,
        }))
    }

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unimplemented("Maintenance", "Snapshot"))
    }

    async fn move_leader(
        &self,
        _: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(unimplemented("Maintenance", "MoveLeader"))
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(unimplemented("Maintenance", "Downgrade"))
    }
}
