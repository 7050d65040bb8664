//! `put`: `--total` puts of `--val-size` bytes to keys of `--key-size` bytes drawn from
//! `--key-space-size` keys (at random, or in order with `--sequential-keys`). Measures the
//! latency of each Put (a Raft round and an fsync on the server) and the throughput.
//! `--compact-interval` compacts the store every so often, `--compact-index-delta` revisions
//! behind the head, as etcd's tool does.

use crate::gateway::b64;
use crate::keys::{random_bytes, seed, KeySpace};
use crate::runner::{self, Workload};
use crate::{Global, GoDuration, Outcome};
use anyhow::Result;
use clap::Args;
use etcd_client::{Client, KvClient};
use serde::Serialize;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

#[derive(Args, Debug, Clone, Serialize)]
pub struct PutArgs {
    /// Key size of put request
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of put request
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Total number of put requests
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Maximum possible keys
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Use sequential keys
    #[arg(long)]
    pub sequential_keys: bool,
    /// Interval to compact the store (e.g. 5m; unset or 0: never)
    #[arg(long)]
    pub compact_interval: Option<GoDuration>,
    /// Delta between the current revision and the compact revision
    #[arg(long, default_value_t = 1000)]
    pub compact_index_delta: i64,
}

struct Put {
    keys: KeySpace,
    value: Vec<u8>,
    /// With `--gateway`: the endpoints, and the value as it appears in JSON.
    gateway: Option<(Vec<String>, String)>,
    opened: AtomicUsize,
}

impl Workload for Put {
    type Conn = super::KvConn;

    fn report_names(&self) -> Vec<String> {
        vec!["put".into()]
    }

    async fn open(&self, client: Client) -> Result<super::KvConn> {
        let gateway = self
            .gateway
            .as_ref()
            .map(|(endpoints, _)| endpoints.as_slice());
        Ok(super::KvConn::open(client, gateway, &self.opened))
    }

    async fn call(&self, conn: &mut super::KvConn, i: u64) -> (usize, Result<(), String>) {
        match conn {
            super::KvConn::Grpc(kv) => {
                let r = kv.put(self.keys.key_for(i), self.value.clone(), None).await;
                (0, super::outcome(r))
            }
            super::KvConn::Json(c) => {
                let value = self.gateway.as_ref().map_or("", |(_, v)| v.as_str());
                let body = format!(
                    r#"{{"key":"{}","value":"{value}"}}"#,
                    b64(&self.keys.key_for(i))
                );
                (0, c.post("/v3/kv/put", body.into()).await)
            }
        }
    }
}

pub async fn run(g: &Global, a: &PutArgs) -> Result<Outcome> {
    let seed = seed();
    let value = random_bytes(seed, a.val_size);
    let w = Put {
        keys: KeySpace::new(a.key_size, a.key_space_size, a.sequential_keys, seed)?,
        gateway: g.gateway.then(|| (g.endpoints.clone(), b64(&value))),
        value,
        opened: AtomicUsize::new(0),
    };
    let load = super::load(g, a.total).await?;
    let compactor = match &a.compact_interval {
        Some(every) if !every.get().is_zero() => Some(tokio::spawn(compact_every(
            load.clients[0].kv_client(),
            every.get(),
            a.compact_index_delta,
        ))),
        _ => None,
    };
    let reports = runner::run(Arc::new(w), load).await;
    if let Some(c) = compactor {
        c.abort();
    }
    let mut reports = reports?;
    Ok(Outcome::single(reports.remove(0)))
}

/// Every `every`, compacts at `head - delta` (skipped while that is not positive); failures
/// are reported on stderr and do not stop the run.
async fn compact_every(mut kv: KvClient, every: std::time::Duration, delta: i64) {
    let mut last = 0;
    loop {
        tokio::time::sleep(every).await;
        let head = match kv.get("foo", None).await {
            Ok(r) => r.header().map(|h| h.revision()).unwrap_or(0),
            Err(e) => {
                eprintln!(
                    "compaction: reading the revision failed: {}",
                    crate::client::error_text(&e)
                );
                continue;
            }
        };
        let rev = head - delta;
        if rev <= last {
            continue;
        }
        match kv.compact(rev, None).await {
            Ok(_) => last = rev,
            Err(e) => eprintln!(
                "compaction at {rev} failed: {}",
                crate::client::error_text(&e)
            ),
        }
    }
}
