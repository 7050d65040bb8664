//! What etcd's gRPC interceptors check before any service runs, as one tower layer over every client
//! service: a learner serves only `Maintenance/Status`, serializable `KV/Range` (the Range service
//! checks the serializable part) and `Maintenance/Snapshot` (etcd 3.5's stream interceptor lets it
//! through), everything else gets `etcdserver: rpc not supported for learner`; and a
//! request carrying the `hasleader` metadata (clients set it with `WithRequireLeader`) gets
//! `etcdserver: no leader` while the member knows no leader. Plain HTTP (`/health`, `/metrics`) passes.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::Either;
use tonic::Status;

use rpctypes::ServerError;

use crate::RaftStatusGetter;

/// RPCs a learner serves (etcd's `isRPCSupportedForLearner`, and the one stream it allows).
const LEARNER_RPCS: &[&str] = &[
    "/etcdserverpb.Maintenance/Status",
    "/etcdserverpb.KV/Range",
    "/etcdserverpb.Maintenance/Snapshot",
];
/// etcd's `rpctypes.MetadataRequireLeaderKey` and `MetadataHasLeader`.
const REQUIRE_LEADER_KEY: &str = "hasleader";
const HAS_LEADER: &str = "true";

pub struct InterceptLayer<M> {
    srv: Arc<M>,
}

impl<M> Clone for InterceptLayer<M> {
    fn clone(&self) -> Self {
        InterceptLayer {
            srv: self.srv.clone(),
        }
    }
}

pub fn layer<M>(srv: Arc<M>) -> InterceptLayer<M> {
    InterceptLayer { srv }
}

impl<S, M> tower::Layer<S> for InterceptLayer<M> {
    type Service = Intercept<S, M>;

    fn layer(&self, inner: S) -> Intercept<S, M> {
        Intercept {
            inner,
            srv: self.srv.clone(),
        }
    }
}

pub struct Intercept<S, M> {
    inner: S,
    srv: Arc<M>,
}

impl<S: Clone, M> Clone for Intercept<S, M> {
    fn clone(&self) -> Self {
        Intercept {
            inner: self.inner.clone(),
            srv: self.srv.clone(),
        }
    }
}

/// Why `req` must not reach the services, if it must not.
fn refuse<M: RaftStatusGetter, B>(srv: &M, req: &http::Request<B>) -> Option<ServerError> {
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !grpc {
        return None;
    }
    if srv.is_learner() && !LEARNER_RPCS.contains(&req.uri().path()) {
        return Some(ServerError::NotSupportedForLearner);
    }
    let require_leader = req
        .headers()
        .get(REQUIRE_LEADER_KEY)
        .is_some_and(|v| v.as_bytes() == HAS_LEADER.as_bytes());
    if require_leader && srv.leader() == 0 {
        return Some(ServerError::NoLeader);
    }
    None
}

impl<S, M, B, R> tower::Service<http::Request<B>> for Intercept<S, M>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    M: RaftStatusGetter,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Either<S::Future, std::future::Ready<Result<http::Response<R>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match refuse(&*self.srv, &req) {
            Some(e) => Either::Right(std::future::ready(Ok(Status::from(e).into_http()))),
            None => Either::Left(self.inner.call(req)),
        }
    }
}
