//! How requests that wait (lock, campaign, keep-alive and watch streams) end when the member stops: a
//! graceful shutdown waits for every request in flight, so nothing may wait past it.

use rpctypes::ServerError;
use tonic::Status;

/// Runs `f` unless the member stops first (`shutdown` turns true): then `etcdserver: server
/// stopped`. A graceful shutdown waits for every request in flight, so nothing may wait past it.
pub async fn or_stopped<T>(
    shutdown: &tokio::sync::watch::Receiver<bool>,
    f: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let mut shutdown = shutdown.clone();
    tokio::select! {
        r = f => r,
        _ = stopping(&mut shutdown) => Err(ServerError::Stopped.into()),
    }
}

/// Resolves when `shutdown` turns true (or its sender is gone).
pub async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
