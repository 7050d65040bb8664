//! The Lease service, as etcd's `v3rpc/lease.go`: Grant and Revoke through Raft, KeepAlive as a
//! bidirectional stream, TimeToLive and Leases.
//!
//! etcd's answers kept: TimeToLive of an unknown lease is not an error but a response with
//! TTL -1 (and granted TTL 0, no keys); a keep-alive of an unknown or expired lease answers
//! TTL 0 and the stream goes on; a keep-alive response's header is taken *before* the renewal,
//! so its revision is never newer than the state the renewal saw; any other keep-alive error
//! ends the stream with that error; the client closing its side ends the stream cleanly.

use std::pin::Pin;
use std::sync::Arc;

use api::etcdserverpb::{
    lease_server::Lease, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use rpctypes::ServerError;

use crate::auth::Ctx;
use crate::header::header;
use crate::shutdown::stopping;
use crate::{KvGetter, Lessor, RaftStatusGetter};

/// Keep-alive responses buffered per stream before the stream stops reading requests.
const KEEPALIVE_BUFFER: usize = 16;

pub struct LeaseService<S> {
    srv: Arc<S>,
    /// Turns true when the member stops: keep-alive streams then end with `etcdserver: server
    /// stopped` (a graceful shutdown waits for every stream in flight; clients reconnect).
    shutdown: watch::Receiver<bool>,
}

impl<S> LeaseService<S> {
    pub fn new(srv: Arc<S>, shutdown: watch::Receiver<bool>) -> LeaseService<S> {
        LeaseService { srv, shutdown }
    }
}

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl<S> Lease for LeaseService<S>
where
    S: Lessor + RaftStatusGetter + KvGetter,
{
    type LeaseKeepAliveStream = Stream<LeaseKeepAliveResponse>;

    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let cx = Ctx::of(&req);
        Ok(Response::new(
            self.srv.lease_grant(&cx, req.into_inner()).await?,
        ))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let cx = Ctx::of(&req);
        Ok(Response::new(
            self.srv.lease_revoke(&cx, req.into_inner()).await?,
        ))
    }

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let cx = Ctx::of(&req);
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(KEEPALIVE_BUFFER);
        let srv = self.srv.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    m = inbound.message() => Some(m),
                    _ = tx.closed() => return,
                    _ = stopping(&mut shutdown) => None,
                };
                let Some(next) = next else {
                    let _ = tx.send(Err(ServerError::Stopped.into())).await;
                    return;
                };
                let req = match next {
                    Ok(Some(r)) => r,
                    // The client closed its side: nothing to answer.
                    Ok(None) => return,
                    // A message that does not decode (or the connection broke): the stream ends
                    // with the receive error, as etcd's does.
                    Err(status) => {
                        let _ = tx.try_send(Err(crate::grpc_go_receive_status(status)));
                        return;
                    }
                };
                let header = header(&*srv, 0);
                let ttl = match srv.lease_renew(&cx, req.id).await {
                    Ok(ttl) => ttl,
                    Err(ServerError::LeaseNotFound) => 0,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let resp = LeaseKeepAliveResponse {
                    header,
                    id: req.id,
                    ttl,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let cx = Ctx::of(&req);
        let req = req.into_inner();
        let id = req.id;
        let mut resp = match self.srv.lease_time_to_live(&cx, req).await {
            Ok(r) => r,
            Err(ServerError::LeaseNotFound) => LeaseTimeToLiveResponse {
                header: None,
                id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
            Err(e) => return Err(e.into()),
        };
        resp.header = header(&*self.srv, 0);
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let ids = self.srv.lease_leases(&Ctx::of(&req)).await?;
        Ok(Response::new(LeaseLeasesResponse {
            header: header(&*self.srv, 0),
            leases: ids.into_iter().map(|id| LeaseStatus { id }).collect(),
        }))
    }
}
