//! gRPC connections: `--conns` connections, shared round-robin by `--clients` clients.

use anyhow::{Context, Result};
use etcd_client::{Client, ConnectOptions};
use std::time::Duration;

/// Opens `conns` connections (each an `etcd_client::Client` over its own channel to the
/// endpoints) and hands them to `clients` users round-robin, as etcd's `mustCreateClients`.
pub async fn connect_clients(
    endpoints: &[String],
    conns: usize,
    clients: usize,
    dial_timeout: Duration,
) -> Result<Vec<Client>> {
    let conns = connect(endpoints, conns, dial_timeout).await?;
    Ok((0..clients)
        .map(|i| conns[i % conns.len()].clone())
        .collect())
}

/// `n` independent connections.
pub async fn connect(
    endpoints: &[String],
    n: usize,
    dial_timeout: Duration,
) -> Result<Vec<Client>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        out.push(connect_one(endpoints, dial_timeout).await?);
    }
    Ok(out)
}

pub async fn connect_one(endpoints: &[String], dial_timeout: Duration) -> Result<Client> {
    let mut opts = ConnectOptions::new();
    if !dial_timeout.is_zero() {
        opts = opts.with_connect_timeout(dial_timeout);
    }
    Client::connect(endpoints, Some(opts))
        .await
        .with_context(|| format!("connecting to {}", endpoints.join(",")))
}

/// A request error as one line, grouped by the error distribution: gRPC statuses as Go's gRPC
/// prints them (`rpc error: code = ... desc = ...`), so the text matches etcd's tool and does
/// not vary with response metadata.
pub fn error_text(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            format!("rpc error: code = {:?} desc = {}", s.code(), s.message())
        }
        other => other.to_string(),
    }
}
