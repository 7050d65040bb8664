//! One module per workload. Request/response workloads implement [`crate::runner::Workload`];
//! the watch workloads drive their own streams.

pub mod auth_storm;
pub mod lease;
pub mod put;
pub mod range;
pub mod txn_mixed;
pub mod txn_put;
pub mod watch;

use crate::limiter::RateLimiter;
use crate::runner::Load;
use crate::Global;
use anyhow::Result;
use std::sync::Arc;

/// The load of a request/response workload from the global flags: `--clients` clients over
/// `--conns` connections, `--rate`, and a progress bar of `total`.
async fn load(g: &Global, total: u64) -> Result<Load> {
    let clients =
        crate::client::connect_clients(&g.endpoints, g.conns(), g.clients(), g.dial_timeout.get())
            .await?;
    Ok(Load {
        total,
        clients,
        limiter: RateLimiter::new(g.rate).map(Arc::new),
        bar: crate::progress::bar(total),
    })
}

/// A client's connection for the KV workloads that also run through the JSON gateway.
pub enum KvConn {
    Grpc(Box<etcd_client::KvClient>),
    Json(crate::gateway::JsonConn),
}

impl KvConn {
    /// A gRPC connection over `client`, or with `gateway` endpoints a JSON one, the `opened`-th
    /// spread over them in turn.
    fn open(
        client: etcd_client::Client,
        gateway: Option<&[String]>,
        opened: &std::sync::atomic::AtomicUsize,
    ) -> KvConn {
        match gateway {
            None => KvConn::Grpc(Box::new(client.kv_client())),
            Some(endpoints) => {
                let n = opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                KvConn::Json(crate::gateway::JsonConn::new(
                    &endpoints[n % endpoints.len()],
                ))
            }
        }
    }
}

/// Result of one request as the runner counts it.
fn outcome<T>(r: Result<T, etcd_client::Error>) -> Result<(), String> {
    r.map(|_| ()).map_err(|e| crate::client::error_text(&e))
}
