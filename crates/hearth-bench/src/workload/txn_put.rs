//! `txn-put`: `--total` transactions, each of `--txn-ops` unconditional puts to distinct keys
//! of the `--key-space-size` key space (transaction `i` writes keys `i*ops .. i*ops+ops`,
//! wrapping). Measures the latency of multi-key writes.

use crate::keys::{random_bytes, seed, KeySpace};
use crate::runner::{self, Workload};
use crate::{Global, Outcome};
use anyhow::{bail, Result};
use clap::Args;
use etcd_client::{Client, KvClient, Txn, TxnOp};
use serde::Serialize;
use std::sync::Arc;

#[derive(Args, Debug, Clone, Serialize)]
pub struct TxnPutArgs {
    /// Key size of txn put
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of txn put
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Number of puts per txn
    #[arg(long, default_value_t = 1)]
    pub txn_ops: u64,
    /// Total number of txn requests
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Maximum possible keys
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
}

struct TxnPut {
    keys: KeySpace,
    ops: u64,
    value: Vec<u8>,
}

impl Workload for TxnPut {
    type Conn = KvClient;

    fn report_names(&self) -> Vec<String> {
        vec!["txn-put".into()]
    }

    async fn open(&self, client: Client) -> Result<KvClient> {
        Ok(client.kv_client())
    }

    async fn call(&self, kv: &mut KvClient, i: u64) -> (usize, Result<(), String>) {
        let ops: Vec<TxnOp> = (0..self.ops)
            .map(|j| TxnOp::put(self.keys.key_at(i * self.ops + j), self.value.clone(), None))
            .collect();
        let r = kv.txn(Txn::new().and_then(ops)).await;
        (0, super::outcome(r))
    }
}

pub async fn run(g: &Global, a: &TxnPutArgs) -> Result<Outcome> {
    if a.txn_ops == 0 {
        bail!("expected positive --txn-ops, got 0");
    }
    if a.txn_ops > a.key_space_size {
        bail!(
            "expected --txn-ops no larger than --key-space-size, got txn-ops({}) key-space-size({})",
            a.txn_ops,
            a.key_space_size
        );
    }
    let seed = seed();
    let w = TxnPut {
        keys: KeySpace::new(a.key_size, a.key_space_size, true, seed)?,
        ops: a.txn_ops,
        value: random_bytes(seed, a.val_size),
    };
    let mut reports = runner::run(Arc::new(w), super::load(g, a.total).await?).await?;
    Ok(Outcome::single(reports.remove(0)))
}
