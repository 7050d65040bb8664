//! `range KEY [END]`: `--total` Range requests for KEY (or `[KEY, END)`), linearizable
//! (`--consistency l`, a ReadIndex round on the server) or serializable (`s`, served from the
//! local store), optionally with `--limit` and `--count-only`. Measures read latency and
//! throughput.

use crate::runner::{self, Workload};
use crate::{Consistency, Global, Outcome};
use anyhow::Result;
use clap::Args;
use etcd_client::{Client, GetOptions, KvClient};
use serde::Serialize;
use std::sync::Arc;

#[derive(Args, Debug, Clone, Serialize)]
pub struct RangeArgs {
    /// Key to read (the start of the range with END)
    pub key: String,
    /// End of the range (exclusive)
    pub end: Option<String>,
    /// Linearizable (l) or Serializable (s)
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Maximum number of keys returned per request (0 is no limit)
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Only return the count of keys
    #[arg(long)]
    pub count_only: bool,
    /// Total number of range requests
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
}

struct Range {
    key: Vec<u8>,
    opts: GetOptions,
}

impl Workload for Range {
    type Conn = KvClient;

    fn report_names(&self) -> Vec<String> {
        vec!["range".into()]
    }

    async fn open(&self, client: Client) -> Result<KvClient> {
        Ok(client.kv_client())
    }

    async fn call(&self, kv: &mut KvClient, _i: u64) -> (usize, Result<(), String>) {
        let r = kv.get(self.key.clone(), Some(self.opts.clone())).await;
        (0, super::outcome(r))
    }
}

/// The Range options of the flags (shared with txn-mixed).
pub fn get_options(
    end: Option<&str>,
    consistency: Consistency,
    limit: i64,
    count_only: bool,
) -> GetOptions {
    let mut o = GetOptions::new().with_limit(limit);
    if let Some(end) = end {
        o = o.with_range(end);
    }
    if consistency == Consistency::Serializable {
        o = o.with_serializable();
    }
    if count_only {
        o = o.with_count_only();
    }
    o
}

pub async fn run(g: &Global, a: &RangeArgs) -> Result<Outcome> {
    let w = Range {
        key: a.key.clone().into_bytes(),
        opts: get_options(a.end.as_deref(), a.consistency, a.limit, a.count_only),
    };
    let mut reports = runner::run(Arc::new(w), super::load(g, a.total).await?).await?;
    let mut out = Outcome::single(reports.remove(0));
    out.preface.push(a.consistency.banner().into());
    Ok(out)
}
