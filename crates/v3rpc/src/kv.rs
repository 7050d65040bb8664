//! The KV service: validate, check the quota before a write (as etcd's `quotaKVServer`), then hand the
//! request to the member ([`RaftKv`]): writes go through Raft, reads are served from the local store
//! (after a ReadIndex round unless the request is serializable). Read-only txns are reads, as in etcd.
//! The caller's credentials ([`Ctx`]) go with every request; Compact needs the root role.
//! RangeStream is served in parts by [`crate::range_stream`].

use std::sync::Arc;

use api::etcdserverpb::{
    kv_server::Kv, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use rpctypes::ServerError;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::auth::{require_admin, Ctx};
use crate::header::fill;
use crate::range_stream::{self, PartStream};
use crate::{
    validate, AuthGetter, ClientConfig, KvGetter, Quota, RaftKv, RaftStatusGetter, ReadIndexer,
};

pub struct KvService<S> {
    srv: Arc<S>,
    max_txn_ops: usize,
    /// The size a RangeStream part aims at (`--max-request-bytes`, etcd's choice).
    part_bytes: usize,
    /// Ends RangeStreams when the member stops.
    shutdown: watch::Receiver<bool>,
}

impl<S> Clone for KvService<S> {
    fn clone(&self) -> Self {
        KvService {
            srv: self.srv.clone(),
            max_txn_ops: self.max_txn_ops,
            part_bytes: self.part_bytes,
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<S> KvService<S> {
    /// The service for `srv`, refusing txns of more than `cfg.max_txn_ops` operations.
    pub fn new(srv: Arc<S>, cfg: &ClientConfig, shutdown: watch::Receiver<bool>) -> KvService<S> {
        KvService {
            srv,
            max_txn_ops: cfg.max_txn_ops,
            part_bytes: cfg.max_request_bytes,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl<S> Kv for KvService<S>
where
    S: RaftKv + Quota + RaftStatusGetter + KvGetter + AuthGetter + ReadIndexer,
{
    type RangeStreamStream = PartStream;

    async fn range_stream(
        &self,
        req: Request<RangeRequest>,
    ) -> Result<Response<PartStream>, Status> {
        let cx = Ctx::of(&req);
        let parts = range_stream::start(
            self.srv.clone(),
            cx,
            req.into_inner(),
            self.part_bytes,
            self.shutdown.clone(),
        )
        .await?;
        Ok(Response::new(parts))
    }

    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let cx = Ctx::of(&req);
        let req = req.into_inner();
        validate::check_range(&req)?;
        if !req.serializable && self.srv.is_learner() {
            return Err(ServerError::NotSupportedForLearner.into());
        }
        let mut resp = self.srv.range(&cx, req).await?;
        fill(&*self.srv, &mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let cx = Ctx::of(&req);
        let req = req.into_inner();
        crate::check_quota(&*self.srv, apply::quota::cost_put(&req)).await?;
        validate::check_put(&req)?;
        let mut resp = self.srv.put(&cx, req).await?;
        fill(&*self.srv, &mut resp.header);
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let cx = Ctx::of(&req);
        let req = req.into_inner();
        validate::check_delete(&req)?;
        let mut resp = self.srv.delete_range(&cx, req).await?;
        fill(&*self.srv, &mut resp.header);
        Ok(Response::new(resp))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let cx = Ctx::of(&req);
        let req = req.into_inner();
        crate::check_quota(&*self.srv, apply::quota::cost_txn(&req)).await?;
        validate::check_txn(&req, self.max_txn_ops)?;
        let mut resp = self.srv.txn(&cx, req).await?;
        fill(&*self.srv, &mut resp.header);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        // etcd 3.5.28+ and 3.6: only the root role may compact (etcd's `AuthAdmin`).
        let cx = Ctx::of(&req);
        require_admin(&*self.srv, &cx)
            .await
            .map_err(ServerError::from)?;
        let mut resp = self.srv.compact(&cx, req.into_inner()).await?;
        fill(&*self.srv, &mut resp.header);
        Ok(Response::new(resp))
    }
}
