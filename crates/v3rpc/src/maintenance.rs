//! The Maintenance service: status, hashes, alarms, defragment (online, see `backend::defrag`),
//! snapshots (etcd's file, a bbolt database built by the `snapshot` crate from one read snapshot;
//! etcd's stream: 32 KiB chunks, then the SHA-256 of the content as the last message)
//! and leader transfer. The Cluster service (membership) is `v3rpc::member`.
//!
//! With auth enabled, as etcd 3.5's `authMaintenanceServer`: Defragment, Snapshot, Hash, HashKV,
//! MoveLeader, Downgrade and changing alarms need the root role; Status and listing alarms need
//! any valid user.

use std::sync::Arc;

use api::etcdserverpb::{
    maintenance_server::Maintenance, AlarmRequest, AlarmResponse, DefragmentRequest,
    DefragmentResponse, DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse,
    HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};

use rpctypes::ServerError;

use crate::auth::{require_admin, require_auth_info, Ctx};
use crate::header::header;
use crate::unimplemented::unimplemented;
use crate::{
    Alarmer, AuthGetter, BackendGetter, KvGetter, LeaderTransferrer, RaftStatusGetter, ETCD_VERSION,
};

/// etcd's chunk size for the Snapshot stream.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// Streams `snap` in chunks, each with the bytes still to come, then its SHA-256 alone.
fn send_snapshot(
    mut snap: snapshot::EtcdSnapshot,
    tx: tokio::sync::mpsc::Sender<Result<SnapshotResponse, Status>>,
) {
    use sha2::Digest as _;
    use std::io::Read as _;
    let total = snap.size();
    let mut sent = 0u64;
    let mut sha = sha2::Sha256::new();
    while sent < total {
        let mut buf = vec![0u8; SNAPSHOT_CHUNK];
        let mut n = 0;
        while n < buf.len() {
            match snap.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(ServerError::Internal(e.to_string()).into()));
                    return;
                }
            }
        }
        if n == 0 {
            let _ = tx.blocking_send(Err(ServerError::Internal(
                "snapshot file ended early".into(),
            )
            .into()));
            return;
        }
        buf.truncate(n);
        sha.update(&buf);
        sent += n as u64;
        let msg = SnapshotResponse {
            header: None,
            remaining_bytes: total - sent,
            blob: buf,
        };
        if tx.blocking_send(Ok(msg)).is_err() {
            return;
        }
    }
    let _ = tx.blocking_send(Ok(SnapshotResponse {
        header: None,
        remaining_bytes: 0,
        blob: sha.finalize().to_vec(),
    }));
    tracing::info!(total_bytes = total, "sent database snapshot to client");
}

pub struct MaintenanceService<S> {
    srv: Arc<S>,
}

/// etcd's `authMaintenanceServer.isAuthenticated` as Defragment, Snapshot, Hash and HashKV use it:
/// the store's error is returned without etcd's map, so clients see `Unknown` with the store's
/// text (`auth: permission denied`).
async fn admin_unmapped<S: AuthGetter>(srv: &S, cx: &Ctx) -> Result<(), Status> {
    require_admin(srv, cx)
        .await
        .map_err(|e| ServerError::auth_unmapped(&e).into())
}

/// The same check as Alarm (activate, deactivate), MoveLeader and Downgrade make it in etcd 3.5,
/// through etcd's map (`togRPCError`).
async fn admin<S: AuthGetter>(srv: &S, cx: &Ctx) -> Result<(), Status> {
    require_admin(srv, cx)
        .await
        .map_err(|e| ServerError::from(e).into())
}

impl<S> MaintenanceService<S> {
    pub fn new(srv: Arc<S>) -> MaintenanceService<S> {
        MaintenanceService { srv }
    }
}

/// The alarms as etcd's Status lists them in `errors` (Go's text form of `AlarmMember`).
fn status_errors(alarms: &[api::etcdserverpb::AlarmMember]) -> Vec<String> {
    alarms
        .iter()
        .map(|m| {
            let name = api::etcdserverpb::AlarmType::try_from(m.alarm)
                .map(|a| a.as_str_name().to_string())
                .unwrap_or_else(|_| m.alarm.to_string());
            format!("memberID:{} alarm:{name} ", m.member_id)
        })
        .collect()
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl<S> Maintenance for MaintenanceService<S>
where
    S: RaftStatusGetter + KvGetter + BackendGetter + Alarmer + LeaderTransferrer + AuthGetter,
{
    type SnapshotStream = Stream<SnapshotResponse>;

    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let cx = Ctx::of(&req);
        if req.get_ref().action == api::etcdserverpb::alarm_request::AlarmAction::Get as i32 {
            require_auth_info(&*self.srv, &cx)
                .await
                .map_err(ServerError::from)?;
        } else {
            admin(&*self.srv, &cx).await?;
        }
        let mut resp = self.srv.alarm(req.into_inner()).await?;
        resp.header = header(&*self.srv, 0);
        Ok(Response::new(resp))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let s = &*self.srv;
        require_auth_info(s, &Ctx::of(&req))
            .await
            .map_err(ServerError::from)?;
        let backend = s.backend().clone();
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
        errors.extend(status_errors(&s.alarms()));
        Ok(Response::new(StatusResponse {
            header: header(s, 0),
            version: ETCD_VERSION.into(),
            db_size: db_size as i64,
            leader: s.leader(),
            raft_index: s.committed_index(),
            raft_term: s.term(),
            raft_applied_index: s.applied_index(),
            errors,
            db_size_in_use: db_size_in_use as i64,
            is_learner: s.is_learner(),
        }))
    }

    async fn defragment(
        &self,
        req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        admin_unmapped(&*self.srv, &Ctx::of(&req)).await?;
        let backend = self.srv.backend().clone();
        tracing::info!("starting defragment");
        let stats = tokio::task::spawn_blocking(move || {
            let _inflight = crate::metrics::Inflight::new(&crate::metrics::DEFRAG_INFLIGHT);
            let start = std::time::Instant::now();
            let r = backend.defrag(&backend::DefragConfig::default());
            crate::metrics::DEFRAG_DURATION.observe(start.elapsed().as_secs_f64());
            r
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?
        .map_err(|e| {
            tracing::warn!("failed to defragment: {e}");
            ServerError::Internal(e.to_string())
        })?;
        tracing::info!(
            size_before = stats.size_before,
            size_after = stats.size_after,
            "finished defragment"
        );
        // etcd answers a defragment (and a leader move) with an empty message: no header.
        Ok(Response::new(DefragmentResponse::default()))
    }

    async fn hash(&self, req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        admin_unmapped(&*self.srv, &Ctx::of(&req)).await?;
        let backend = self.srv.backend().clone();
        let kv = self.srv.kv().clone();
        let (hash, rev) = tokio::task::spawn_blocking(move || {
            // The revision is read first: the snapshot hashed holds at least that revision.
            let rev = kv.rev();
            let start = std::time::Instant::now();
            let h = backend.hash(&mvcc::is_raft_meta);
            crate::metrics::HASH_DURATION.observe(start.elapsed().as_secs_f64());
            h.map(|h| (h, rev))
                .map_err(|e| ServerError::Internal(e.to_string()))
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))??;
        Ok(Response::new(HashResponse {
            header: header(&*self.srv, rev),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        admin_unmapped(&*self.srv, &Ctx::of(&req)).await?;
        let rev = req.into_inner().revision;
        let kv = self.srv.kv().clone();
        let (hash, compact_revision) = tokio::task::spawn_blocking(move || {
            let start = std::time::Instant::now();
            let r = kv.hash_kv(rev);
            crate::metrics::HASH_REV_DURATION.observe(start.elapsed().as_secs_f64());
            r
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?
        .map_err(ServerError::from)?;
        Ok(Response::new(HashKvResponse {
            header: header(&*self.srv, 0),
            hash,
            compact_revision,
        }))
    }

    async fn snapshot(
        &self,
        req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        admin_unmapped(&*self.srv, &Ctx::of(&req)).await?;
        let backend = self.srv.backend().clone();
        let snap = tokio::task::spawn_blocking(move || snapshot::EtcdSnapshot::new(&backend))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))?
            .map_err(|e| ServerError::Internal(e.to_string()))?;
        tracing::info!(
            total_bytes = snap.size(),
            "sending database snapshot to client"
        );
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let start = std::time::Instant::now();
            send_snapshot(snap, tx);
            crate::metrics::SNAPSHOT_DURATION.observe(start.elapsed().as_secs_f64());
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        admin(&*self.srv, &Ctx::of(&req)).await?;
        let target = req.into_inner().target_id;
        self.srv.move_leader(target).await?;
        Ok(Response::new(MoveLeaderResponse::default()))
    }

    async fn downgrade(
        &self,
        req: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        admin(&*self.srv, &Ctx::of(&req)).await?;
        Err(unimplemented("Maintenance", "Downgrade"))
    }
}

#[cfg(test)]
mod tests {
    use api::etcdserverpb::{AlarmMember, AlarmType};

    #[test]
    fn status_errors_use_go_text_form() {
        let alarms = [
            AlarmMember {
                member_id: 1,
                alarm: AlarmType::Nospace as i32,
            },
            AlarmMember {
                member_id: 2,
                alarm: AlarmType::Corrupt as i32,
            },
        ];
        assert_eq!(
            super::status_errors(&alarms),
            ["memberID:1 alarm:NOSPACE ", "memberID:2 alarm:CORRUPT "]
        );
    }
}
