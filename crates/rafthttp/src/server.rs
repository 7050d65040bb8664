//! The receiving side of the peer transport: the `hearthraftpb.Raft` service on the peer URLs. Raft
//! messages and snapshots go to the Raft loop ([`Raft`]); everything else peers ask is the member's to
//! answer ([`PeerHandler`]).

use std::pin::Pin;
use std::sync::Arc;

use api::etcdserverpb::{
    HashKvRequest, HashKvResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
};
use api::hearthraftpb::{
    raft_server::Raft, MembersRequest, MembersResponse, MessageBatch, PromoteRequest,
    PromoteResponse, SnapshotChunk, SnapshotResponse, StreamEvent,
};
use api::leasepb::{LeaseInternalRequest, LeaseInternalResponse};
use rpctypes::ServerError;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};

use super::{
    header_id, PeerHandler, Raft as RaftLoop, SnapshotStore, Transport, CLUSTER_MISMATCH_TEXT,
    HEADER_CLUSTER_ID, HEADER_FROM, HEADER_TO,
};
use crate::metrics;

/// Received bytes are counted against the in-flight budget in units of this size.
const PERMIT_BYTES: usize = 1024;

pub struct PeerService {
    local_id: u64,
    cluster_id: u64,
    handler: Arc<dyn PeerHandler>,
    raft: Arc<dyn RaftLoop>,
    snapshots: Option<Arc<dyn SnapshotStore>>,
    max_snapshot_bytes: u64,
    /// Streams end when this turns true, so a stopping member's server can finish gracefully.
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Permits for received message bytes not yet stepped by the Raft loop.
    inflight: Arc<Semaphore>,
    inflight_permits: u32,
    /// One snapshot transfer at a time (they share the backend's install staging path).
    snapshot_slot: Arc<Semaphore>,
}

impl PeerService {
    /// The service for `transport`'s member, with `handler` answering what peers ask of it.
    pub fn new(
        transport: &Transport,
        handler: Arc<dyn PeerHandler>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> PeerService {
        let cfg = transport.config();
        let permits = (cfg.inflight_bytes / PERMIT_BYTES)
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
        PeerService {
            local_id: transport.local_id,
            cluster_id: transport.cluster_id,
            handler,
            raft: transport.raft.clone(),
            snapshots: transport.snapshots.clone(),
            max_snapshot_bytes: cfg.max_snapshot_bytes,
            shutdown,
            inflight: Arc::new(Semaphore::new(permits as usize)),
            inflight_permits: permits,
            snapshot_slot: Arc::new(Semaphore::new(1)),
        }
    }

    fn blocked(&self) -> bool {
        super::blackholed()
    }

    /// The checks etcd's peer handlers make: same cluster, sender not removed.
    fn check_sender<T>(&self, req: &Request<T>) -> Result<u64, Status> {
        if self.blocked() {
            return Err(Status::unavailable("peer traffic is blocked"));
        }
        let md = req.metadata();
        let cluster = header_id(md, HEADER_CLUSTER_ID);
        let from = header_id(md, HEADER_FROM).unwrap_or(0);
        if cluster != Some(self.cluster_id) {
            tracing::warn!(
                local_member_cluster_id = format!("{:x}", self.cluster_id),
                local_member_server_cluster_id = cluster.map(|c| format!("{c:x}")),
                remote_peer_id = format!("{from:x}"),
                "request cluster ID mismatch"
            );
            return Err(Status::failed_precondition(CLUSTER_MISMATCH_TEXT));
        }
        if self.handler.is_removed(from) {
            tracing::warn!(
                remote_peer_id = format!("{from:x}"),
                "rejected stream from a member removed from the cluster"
            );
            return Err(Status::failed_precondition(super::REMOVED_TEXT));
        }
        Ok(from)
    }

    /// The checks of a call that is only for this member (`hearth-to`).
    fn check_addressed<T>(&self, req: &Request<T>) -> Result<u64, Status> {
        let from = self.check_sender(req)?;
        let to = header_id(req.metadata(), HEADER_TO).unwrap_or(0);
        if to != self.local_id {
            return Err(Status::failed_precondition(format!(
                "call meant for member {to:x} reached member {:x}",
                self.local_id
            )));
        }
        Ok(from)
    }
}

type EventStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<StreamEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Raft for PeerService {
    type StreamStream = EventStream;

    async fn stream(
        &self,
        req: Request<Streaming<MessageBatch>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let from = self.check_addressed(&req)?;
        let mut incoming = req.into_inner();
        let handler = self.handler.clone();
        let raft = self.raft.clone();
        let local = self.local_id;
        let inflight = self.inflight.clone();
        let max_permits = self.inflight_permits;
        let mut shutdown = self.shutdown.clone();
        // The response stream ends when this task does: that is how the sender learns we stopped reading.
        let (done_tx, done_rx) = tokio::sync::mpsc::channel::<Result<StreamEvent, Status>>(1);
        tokio::spawn(async move {
            let done = done_tx;
            let label = format!("{from:x}");
            loop {
                let next = tokio::select! {
                    next = incoming.message() => next,
                    _ = shutdown.wait_for(|s| *s) => return,
                };
                let batch = match next {
                    Ok(Some(b)) => b,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(remote_peer_id = %label, "peer stream ended: {e}");
                        metrics::PEER_RECEIVED_FAILURES
                            .with_label_values(&[&label])
                            .inc();
                        return;
                    }
                };
                if super::blackholed() {
                    continue;
                }
                // A member removed while its stream was open learns it here (it may never see the
                // entry that removed it: the leader stops replicating to it).
                if handler.is_removed(from) {
                    let _ = done
                        .send(Err(Status::failed_precondition(super::REMOVED_TEXT)))
                        .await;
                    return;
                }
                let bytes: usize = batch.messages.iter().map(Vec::len).sum();
                metrics::PEER_RECEIVED_BYTES
                    .with_label_values(&[&label])
                    .inc_by(bytes as f64);
                let mut msgs = Vec::with_capacity(batch.messages.len());
                for checked in super::validate::decode_batch(local, from, &batch.messages) {
                    match checked {
                        Ok(m) => msgs.push(m),
                        Err(e) => {
                            tracing::warn!(remote_peer_id = %label, "dropped a raft message from a peer: {e}");
                            metrics::PEER_RECEIVED_FAILURES
                                .with_label_values(&[&label])
                                .inc();
                        }
                    }
                }
                if msgs.is_empty() {
                    continue;
                }
                let want = (bytes / PERMIT_BYTES + 1).min(max_permits as usize) as u32;
                let Ok(permit) = inflight.clone().acquire_many_owned(want).await else {
                    return;
                };
                if !raft.process(msgs, permit) {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(done_rx),
        )))
    }

    async fn members(
        &self,
        _: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        if self.blocked() {
            return Err(Status::unavailable("peer traffic is blocked"));
        }
        Ok(Response::new(MembersResponse {
            cluster_id: self.cluster_id,
            member_id: self.local_id,
            members: self.handler.members(),
        }))
    }

    async fn promote(
        &self,
        req: Request<PromoteRequest>,
    ) -> Result<Response<PromoteResponse>, Status> {
        self.check_sender(&req)?;
        let id = req.into_inner().member_id;
        let members = self.handler.promote(id).await?;
        Ok(Response::new(PromoteResponse { members }))
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let from = self.check_addressed(&req)?;
        let Ok(slot) = self.snapshot_slot.clone().try_acquire_owned() else {
            return Err(Status::unavailable(
                "a snapshot is already being received; try again later",
            ));
        };
        let Some(store) = self.snapshots.clone() else {
            return Err(Status::unavailable("this member takes no snapshots"));
        };
        let ctx = super::snapshot::ReceiveContext {
            local_id: self.local_id,
            from,
            max_bytes: self.max_snapshot_bytes,
            store,
            raft: self.raft.clone(),
        };
        // Its own task: if the sender goes away, the transfer still ends properly (the slot and
        // the staging file are released only once the Raft loop is done with them).
        let task = tokio::spawn(super::snapshot::receive(ctx, req.into_inner(), slot));
        let installed = task.await.map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(SnapshotResponse { installed }))
    }

    async fn lease_renew(
        &self,
        req: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        self.check_sender(&req)?;
        let id = req.into_inner().id;
        Ok(Response::new(self.handler.lease_renew(id).await?))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseInternalRequest>,
    ) -> Result<Response<LeaseInternalResponse>, Status> {
        self.check_sender(&req)?;
        let Some(r) = req.into_inner().lease_time_to_live_request else {
            return Err(ServerError::Internal("empty time-to-live request".into()).into());
        };
        let resp = self.handler.lease_time_to_live(r).await?;
        Ok(Response::new(LeaseInternalResponse {
            lease_time_to_live_response: Some(resp),
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.check_sender(&req)?;
        let rev = req.into_inner().revision;
        Ok(Response::new(self.handler.hash_kv(rev).await?))
    }
}
