//! The KV service: validate, then propose writes through Raft or serve reads from the local store (after a
//! ReadIndex round unless the request is serializable). Read-only txns are reads, as in etcd.

use std::sync::Arc;

use api::etcdserverpb::{
    kv_server::Kv, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    InternalRaftRequest, PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest,
    TxnResponse,
};
use tonic::{Request, Response, Status};

use crate::etcdserver::EtcdServer;
use crate::v3rpc::validate;
use apply::applier::Applied;
use apply::txn::{self, Exec, NoLeases};
use rpctypes::ServerError;

pub struct KvService {
    pub srv: Arc<EtcdServer>,
}

fn unexpected() -> Status {
    ServerError::Internal("unexpected apply result".into()).into()
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = req.into_inner();
        validate::check_range(&req)?;
        if !req.serializable && self.srv.is_learner() {
            return Err(ServerError::NotSupportedForLearner.into());
        }
        if !req.serializable {
            self.srv.linearizable_read().await?;
        }
        let mut resp = txn::range(&self.srv.kv.read(), &req)?;
        self.srv.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = req.into_inner();
        self.srv.check_quota(apply::quota::cost_put(&req)).await?;
        validate::check_put(&req)?;
        match self
            .srv
            .propose(InternalRaftRequest {
                put: Some(req),
                ..Default::default()
            })
            .await?
        {
            Applied::Put(mut resp) => {
                self.srv.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected()),
        }
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = req.into_inner();
        validate::check_delete(&req)?;
        match self
            .srv
            .propose(InternalRaftRequest {
                delete_range: Some(req),
                ..Default::default()
            })
            .await?
        {
            Applied::DeleteRange(mut resp) => {
                self.srv.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected()),
        }
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = req.into_inner();
        self.srv.check_quota(apply::quota::cost_txn(&req)).await?;
        validate::check_txn(&req, self.srv.cfg.max_txn_ops)?;
        if txn::txn_is_read_only(&req) {
            if !txn::txn_is_serializable(&req) {
                self.srv.linearizable_read().await?;
            }
            let view = self.srv.kv.read();
            let mut resp = txn::txn(
                &mut Exec::Read(&view),
                self.srv.kv.first_rev(),
                &NoLeases,
                &req,
            )?;
            self.srv.fill(&mut resp.header);
            return Ok(Response::new(resp));
        }
        match self
            .srv
            .propose(InternalRaftRequest {
                txn: Some(req),
                ..Default::default()
            })
            .await?
        {
            Applied::Txn(mut resp) => {
                self.srv.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected()),
        }
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let req = req.into_inner();
        match self
            .srv
            .propose(InternalRaftRequest {
                compaction: Some(req),
                ..Default::default()
            })
            .await?
        {
            Applied::Compaction(mut resp, handle) => {
                if let Some(h) = handle {
                    // Physical compaction deletes in batches on its own; wait without holding a runtime thread.
                    tokio::task::spawn_blocking(move || h.wait())
                        .await
                        .map_err(|e| ServerError::Internal(e.to_string()))?
                        .map_err(ServerError::from)?;
                }
                self.srv.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected()),
        }
    }
}
