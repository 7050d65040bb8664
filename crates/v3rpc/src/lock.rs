//! The Lock service (etcd's `v3lock`): Lock and Unlock on top of etcd's mutex recipe
//! (`concurrency::mutex`). Every error is answered as etcd's service answers it: code Unknown
//! with etcd's text (`rpctypes::relayed`).

use api::v3lockpb::{lock_server::Lock, LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::auth::Ctx;
use crate::concurrency::{mutex, Client};
use crate::shutdown::or_stopped;
use rpctypes::relayed;

pub struct LockService {
    client: Client,
    /// Turns true when the member stops: waiting requests then fail (a graceful shutdown waits
    /// for every request in flight).
    shutdown: watch::Receiver<bool>,
}

impl LockService {
    pub fn new(client: Client, shutdown: watch::Receiver<bool>) -> LockService {
        LockService { client, shutdown }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let client = self.client.with_ctx(Ctx::of(&req));
        let req = req.into_inner();
        let lock = mutex::lock(&client, &req.name, req.lease);
        let locked = or_stopped(&self.shutdown, lock).await.map_err(relayed)?;
        Ok(Response::new(LockResponse {
            header: locked.header,
            key: locked.key,
        }))
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let client = self.client.with_ctx(Ctx::of(&req));
        let header = mutex::unlock(&client, req.into_inner().key)
            .await
            .map_err(relayed)?;
        Ok(Response::new(UnlockResponse { header }))
    }
}
