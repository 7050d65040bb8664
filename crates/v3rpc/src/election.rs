//! The Election service (etcd's `v3election`): Campaign, Proclaim, Leader, Observe and Resign on
//! top of etcd's election recipe (`concurrency::election`). Every error is answered as etcd's
//! service answers it: code Unknown with etcd's text (`rpctypes::relayed`).

use std::pin::Pin;

use api::v3electionpb::{
    election_server::Election, CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest,
    LeaderResponse, ProclaimRequest, ProclaimResponse, ResignRequest, ResignResponse,
};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use crate::auth::Ctx;
use crate::concurrency::{election, Client};
use crate::shutdown::{or_stopped, stopping};
use rpctypes::{relayed, ServerError};

/// Observe responses buffered per stream.
const OBSERVE_BUFFER: usize = 16;

pub struct ElectionService {
    client: Client,
    /// Turns true when the member stops: campaigns and observers then end (a graceful shutdown
    /// waits for every request in flight).
    shutdown: watch::Receiver<bool>,
}

impl ElectionService {
    pub fn new(client: Client, shutdown: watch::Receiver<bool>) -> ElectionService {
        ElectionService { client, shutdown }
    }

    /// The leader key of a Proclaim or Resign, with the lease of its session: etcd opens a
    /// session on the key's lease, which for lease 0 is a new lease.
    async fn resume(
        &self,
        client: &Client,
        leader: Option<LeaderKey>,
    ) -> Result<LeaderKey, Status> {
        let mut leader = leader.ok_or_else(|| Status::from(ServerError::MissingLeaderKey))?;
        leader.lease = client.session(leader.lease).await?;
        Ok(leader)
    }
}

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    type ObserveStream = Stream<LeaderResponse>;

    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let client = self.client.with_ctx(Ctx::of(&req));
        let req = req.into_inner();
        let campaign = election::campaign(&client, &req.name, &req.value, req.lease);
        let e = or_stopped(&self.shutdown, campaign)
            .await
            .map_err(relayed)?;
        Ok(Response::new(CampaignResponse {
            header: e.header,
            leader: Some(e.leader),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let client = self.client.with_ctx(Ctx::of(&req));
        let req = req.into_inner();
        let leader = self.resume(&client, req.leader).await.map_err(relayed)?;
        let header = election::proclaim(&client, &leader, &req.value)
            .await
            .map_err(relayed)?;
        Ok(Response::new(ProclaimResponse { header }))
    }

    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let client = self.client.with_ctx(Ctx::of(&req));
        let resp = election::leader(&client, &req.into_inner().name)
            .await
            .map_err(relayed)?;
        Ok(Response::new(resp))
    }

    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let client = self.client.with_ctx(Ctx::of(&req));
        let name = req.into_inner().name;
        let (tx, rx) = mpsc::channel(OBSERVE_BUFFER);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let stopped = tx.clone();
            tokio::select! {
                _ = election::observe(&client, &name, tx) => {}
                _ = stopping(&mut shutdown) => {
                    let _ = stopped.send(Err(relayed(ServerError::Stopped.into()))).await;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn resign(
        &self,
        req: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let client = self.client.with_ctx(Ctx::of(&req));
        let leader = self
            .resume(&client, req.into_inner().leader)
            .await
            .map_err(relayed)?;
        let header = election::resign(&client, &leader).await.map_err(relayed)?;
        Ok(Response::new(ResignResponse { header }))
    }
}
