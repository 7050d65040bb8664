//! `lease-keepalive`: each client grants itself a lease (TTL 100 s, not timed) and then sends
//! keepalives for it on one LeaseKeepAlive stream, `--total` in all; each request is timed from
//! sending the keepalive to receiving its answer. (etcd's tool opens a stream per keepalive
//! with `KeepAliveOnce`; a stream broken by an error is reopened here by the next request.)

use crate::client::error_text;
use crate::runner::{self, Workload};
use crate::{Global, Outcome};
use anyhow::{Context, Result};
use clap::Args;
use etcd_client::{Client, LeaseClient, LeaseKeepAliveStream, LeaseKeeper};
use serde::Serialize;
use std::sync::Arc;

/// TTL of the benchmark's leases, as etcd's tool grants them.
const LEASE_TTL: i64 = 100;

#[derive(Args, Debug, Clone, Serialize)]
pub struct LeaseArgs {
    /// Total number of lease keepalive requests
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
}

pub struct LeaseConn {
    client: LeaseClient,
    id: i64,
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

struct Keepalive;

impl Workload for Keepalive {
    type Conn = LeaseConn;

    fn report_names(&self) -> Vec<String> {
        vec!["lease-keepalive".into()]
    }

    async fn open(&self, client: Client) -> Result<LeaseConn> {
        let mut client = client.lease_client();
        let grant = client
            .grant(LEASE_TTL, None)
            .await
            .map_err(|e| anyhow::anyhow!(error_text(&e)))
            .context("lease grant")?;
        Ok(LeaseConn {
            client,
            id: grant.id(),
            stream: None,
        })
    }

    async fn call(&self, c: &mut LeaseConn, _i: u64) -> (usize, Result<(), String>) {
        (0, keepalive(c).await)
    }
}

async fn keepalive(c: &mut LeaseConn) -> Result<(), String> {
    let Some((keeper, stream)) = &mut c.stream else {
        // Opening the stream sends a keepalive and waits for its answer: that is this request.
        return match c.client.keep_alive(c.id).await {
            Ok(s) => {
                c.stream = Some(s);
                Ok(())
            }
            Err(e) => Err(error_text(&e)),
        };
    };
    let res = match keeper.keep_alive().await {
        Err(e) => Err(error_text(&e)),
        Ok(()) => match stream.message().await {
            Ok(Some(r)) if r.ttl() > 0 => Ok(()),
            Ok(Some(_)) => Err("lease expired or revoked".to_string()),
            Ok(None) => Err("keepalive stream closed by the server".to_string()),
            Err(e) => Err(error_text(&e)),
        },
    };
    if res.is_err() {
        c.stream = None;
    }
    res
}

pub async fn run(g: &Global, a: &LeaseArgs) -> Result<Outcome> {
    let mut reports = runner::run(Arc::new(Keepalive), super::load(g, a.total).await?).await?;
    Ok(Outcome::single(reports.remove(0)))
}
