//! `txn-mixed [KEY [END]]`: `--total` transactions of one operation each, a Range with
//! probability `rw/(1+rw)` (`--rw-ratio`), else a Put of key `i mod --key-space-size`. Reads
//! cover KEY (or `[KEY, END)`; every key when KEY is not given) with `--limit` and
//! `--consistency`. Reads and writes are reported separately.

use super::range::get_options;
use crate::keys::{random_bytes, seed, unit_f64, KeySpace};
use crate::runner::{self, Workload};
use crate::{Consistency, Global, Outcome};
use anyhow::{bail, Result};
use clap::Args;
use etcd_client::{Client, GetOptions, KvClient, Txn, TxnOp};
use serde::Serialize;
use std::sync::Arc;

#[derive(Args, Debug, Clone, Serialize)]
pub struct TxnMixedArgs {
    /// Key to read (the start of the range with END); every key when not given
    pub key: Option<String>,
    /// End of the read range (exclusive)
    pub end: Option<String>,
    /// Key size of mixed txn
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of mixed txn
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Total number of txn requests
    #[arg(long, default_value_t = 10000)]
    pub total: u64,
    /// Maximum possible keys
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Linearizable (l) or Serializable (s)
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Read operation range result limit
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
    /// Read/write ops ratio
    #[arg(long, default_value_t = 1.0)]
    pub rw_ratio: f64,
}

const READ: usize = 0;
const WRITE: usize = 1;

struct TxnMixed {
    read_key: Vec<u8>,
    read_opts: GetOptions,
    read_probability: f64,
    keys: KeySpace,
    value: Vec<u8>,
    seed: u64,
}

impl Workload for TxnMixed {
    type Conn = KvClient;

    fn report_names(&self) -> Vec<String> {
        vec!["txn-mixed-read".into(), "txn-mixed-write".into()]
    }

    async fn open(&self, client: Client) -> Result<KvClient> {
        Ok(client.kv_client())
    }

    async fn call(&self, kv: &mut KvClient, i: u64) -> (usize, Result<(), String>) {
        let (kind, op) = if unit_f64(self.seed, i) < self.read_probability {
            (
                READ,
                TxnOp::get(self.read_key.clone(), Some(self.read_opts.clone())),
            )
        } else {
            (
                WRITE,
                TxnOp::put(self.keys.key_at(i), self.value.clone(), None),
            )
        };
        let r = kv.txn(Txn::new().and_then(vec![op])).await;
        (kind, super::outcome(r))
    }
}

pub async fn run(g: &Global, a: &TxnMixedArgs) -> Result<Outcome> {
    if !(a.rw_ratio >= 0.0 && a.rw_ratio.is_finite()) {
        bail!("expected a non-negative --rw-ratio, got {}", a.rw_ratio);
    }
    let seed = seed();
    let (read_key, read_opts) = match &a.key {
        Some(k) => (
            k.clone().into_bytes(),
            get_options(a.end.as_deref(), a.consistency, a.limit, false),
        ),
        None => (
            Vec::new(),
            get_options(None, a.consistency, a.limit, false).with_all_keys(),
        ),
    };
    let w = TxnMixed {
        read_key,
        read_opts,
        read_probability: a.rw_ratio / (1.0 + a.rw_ratio),
        keys: KeySpace::new(a.key_size, a.key_space_size, true, seed)?,
        value: random_bytes(seed, a.val_size),
        seed,
    };
    let mut reports = runner::run(Arc::new(w), super::load(g, a.total).await?).await?;
    let write = reports.remove(WRITE);
    let read = reports.remove(READ);
    Ok(Outcome {
        preface: vec![a.consistency.banner().into()],
        sections: vec![
            (
                Some(format!(
                    "Total Read Ops: {}\nDetails:",
                    read.count + read.errors
                )),
                read,
            ),
            (
                Some(format!(
                    "Total Write Ops: {}\nDetails:",
                    write.count + write.errors
                )),
                write,
            ),
        ],
    })
}
