//! etcd's `monitorLeader`: a stream opened with the `hasleader` metadata (clients set it with
//! `WithRequireLeader`) is ended with `etcdserver: no leader` (Unavailable) once the member has
//! seen no leader for three election timeouts in a row, so a client watching through a member cut
//! off from the cluster moves to another member instead of waiting on one that cannot see new
//! events. New streams with `hasleader` are refused at once while there is no leader (the
//! interceptor's check).
//!
//! A task checks the leader once per election timeout and, after the third miss in a row, bumps a
//! generation number (and again at each further miss, as etcd cancels every registered stream at
//! each such tick). Each `hasleader` stream's response body watches that number and, when it
//! moves, ends with the no-leader status in its trailers; dropping the inner body ends the service's
//! side of the stream. Streams without the metadata pay nothing.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;

use rpctypes::ServerError;

use crate::RaftStatusGetter;

/// etcd's `maxNoLeaderCnt`.
const MAX_NO_LEADER_COUNT: u32 = 3;

/// The generation of "no leader for too long" events.
#[derive(Clone, Debug)]
pub struct NoLeader(watch::Receiver<u64>);

/// Starts etcd's leader monitor: checks every `election` until `shutdown` turns true.
pub fn monitor_leader<S: RaftStatusGetter>(
    srv: Arc<S>,
    election: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> NoLeader {
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut misses = 0u32;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(election) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            if srv.leader() == 0 {
                misses = misses.saturating_add(1);
            } else {
                misses = 0;
            }
            if misses >= MAX_NO_LEADER_COUNT {
                tx.send_modify(|g| *g += 1);
            }
        }
    });
    NoLeader(rx)
}

/// etcd's `rpctypes.MetadataRequireLeaderKey` and `MetadataHasLeader`.
fn requires_leader<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get("hasleader")
        .is_some_and(|v| v.as_bytes() == b"true")
}

#[derive(Clone)]
pub struct NoLeaderLayer {
    monitor: NoLeader,
}

pub fn layer(monitor: NoLeader) -> NoLeaderLayer {
    NoLeaderLayer { monitor }
}

impl<S> tower::Layer<S> for NoLeaderLayer {
    type Service = CancelOnNoLeader<S>;

    fn layer(&self, inner: S) -> CancelOnNoLeader<S> {
        CancelOnNoLeader {
            inner,
            monitor: self.monitor.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CancelOnNoLeader<S> {
    inner: S,
    monitor: NoLeader,
}

impl<S, B, R> tower::Service<http::Request<B>> for CancelOnNoLeader<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<NoLeaderBody<R>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // etcd's stream interceptor only: a unary request ends by itself.
        let watch = (requires_leader(&req) && crate::grpc_metrics::is_stream(req.uri().path()))
            .then(|| {
                let mut rx = self.monitor.0.clone();
                rx.mark_unchanged();
                rx
            });
        ResponseFuture {
            inner: self.inner.call(req),
            watch,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        watch: Option<watch::Receiver<u64>>,
    }
}

impl<F, R, E> std::future::Future for ResponseFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<R>, E>>,
{
    type Output = Result<http::Response<NoLeaderBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = std::task::ready!(this.inner.poll(cx))?;
        let changed = this.watch.take().map(fired);
        Poll::Ready(Ok(resp.map(|inner| NoLeaderBody {
            inner: Some(inner),
            changed,
        })))
    }
}

/// Resolves when the monitor fires, and never once the monitor has stopped: a member that
/// stops ends its streams as a closed connection (as etcd's does, whose monitor returns without
/// cancelling anything), which a client resumes elsewhere, not with `no leader`, which ends it.
fn fired(mut rx: watch::Receiver<u64>) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}

/// A response body that ends with etcd's no-leader status when the monitor fires.
pub struct NoLeaderBody<B> {
    inner: Option<B>,
    changed: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl<B: Default> Default for NoLeaderBody<B> {
    fn default() -> Self {
        NoLeaderBody {
            inner: Some(B::default()),
            changed: None,
        }
    }
}

fn no_leader_trailers() -> http::HeaderMap {
    let status = tonic::Status::from(ServerError::NoLeader);
    let mut h = http::HeaderMap::new();
    h.insert("grpc-status", http::HeaderValue::from(status.code() as i32));
    if let Ok(v) = http::HeaderValue::from_str(status.message()) {
        h.insert("grpc-message", v);
    }
    h
}

impl<B: Body<Data = Bytes> + Unpin> Body for NoLeaderBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(changed) = self.changed.as_mut() {
            if changed.as_mut().poll(cx).is_ready() {
                self.changed = None;
                if self.inner.take().is_some() {
                    return Poll::Ready(Some(Ok(Frame::trailers(no_leader_trailers()))));
                }
            }
        }
        match self.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;

    #[test]
    fn a_stopped_monitor_ends_no_stream_and_a_firing_one_does() {
        let (tx, rx) = watch::channel(0u64);
        let mut firing = fired(rx);
        assert!((&mut firing).now_or_never().is_none());
        tx.send_modify(|g| *g += 1);
        assert!(firing.now_or_never().is_some());
        // The monitor returns when the member stops, dropping its sender.
        let (tx, rx) = watch::channel(0u64);
        let mut stopped = fired(rx);
        drop(tx);
        assert!((&mut stopped).now_or_never().is_none());
    }
}
