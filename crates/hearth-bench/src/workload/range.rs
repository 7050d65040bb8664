//! `range KEY [END]`: `--total` Range requests for KEY (or `[KEY, END)`), linearizable
//! (`--consistency l`, a ReadIndex round on the server) or serializable (`s`, served from the
//! local store), optionally with `--limit` and `--count-only`. Measures read latency and
//! throughput.

use crate::gateway::b64;
use crate::runner::{self, Workload};
use crate::{Consistency, Global, Outcome};
use anyhow::Result;
use clap::Args;
use etcd_client::{Client, GetOptions};
use serde::Serialize;
use std::sync::atomic::AtomicUsize;
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
    /// With `--gateway`: the endpoints, and the request body (the same for every request).
    gateway: Option<(Vec<String>, bytes::Bytes)>,
    opened: AtomicUsize,
}

impl Workload for Range {
    type Conn = super::KvConn;

    fn report_names(&self) -> Vec<String> {
        vec!["range".into()]
    }

    async fn open(&self, client: Client) -> Result<super::KvConn> {
        let gateway = self
            .gateway
            .as_ref()
            .map(|(endpoints, _)| endpoints.as_slice());
        Ok(super::KvConn::open(client, gateway, &self.opened))
    }

    async fn call(&self, conn: &mut super::KvConn, _i: u64) -> (usize, Result<(), String>) {
        match conn {
            super::KvConn::Grpc(kv) => {
                let r = kv.get(self.key.clone(), Some(self.opts.clone())).await;
                (0, super::outcome(r))
            }
            super::KvConn::Json(c) => {
                let body = self
                    .gateway
                    .as_ref()
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (0, c.post("/v3/kv/range", body).await)
            }
        }
    }
}

/// The JSON body of the Range the flags describe.
fn json_body(a: &RangeArgs) -> String {
    let mut fields = vec![format!(r#""key":"{}""#, b64(a.key.as_bytes()))];
    if let Some(end) = &a.end {
        fields.push(format!(r#""range_end":"{}""#, b64(end.as_bytes())));
    }
    if a.limit != 0 {
        fields.push(format!(r#""limit":"{}""#, a.limit));
    }
    if a.consistency == Consistency::Serializable {
        fields.push(r#""serializable":true"#.into());
    }
    if a.count_only {
        fields.push(r#""count_only":true"#.into());
    }
    format!("{{{}}}", fields.join(","))
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
        gateway: g
            .gateway
            .then(|| (g.endpoints.clone(), bytes::Bytes::from(json_body(a)))),
        opened: AtomicUsize::new(0),
    };
    let mut reports = runner::run(Arc::new(w), super::load(g, a.total).await?).await?;
    let mut out = Outcome::single(reports.remove(0));
    out.preface.push(a.consistency.banner().into());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_body_carries_the_flags() {
        let a = RangeArgs {
            key: "foo".into(),
            end: Some("fop".into()),
            consistency: Consistency::Serializable,
            limit: 10,
            count_only: true,
            total: 1,
        };
        assert_eq!(
            json_body(&a),
            r#"{"key":"Zm9v","range_end":"Zm9w","limit":"10","serializable":true,"count_only":true}"#
        );
    }
}
