//! The closed-loop driver shared by the request/response workloads: one task per client,
//! each taking the next request index until `--total` are issued, pacing on `--rate`, timing
//! each request and recording it in its own recorders (merged at the end).

use crate::limiter::RateLimiter;
use crate::report::{Recorder, Report};
use anyhow::{Context, Result};
use etcd_client::Client;
use indicatif::ProgressBar;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A request/response workload.
pub trait Workload: Send + Sync + 'static {
    /// What a client task keeps between requests (a KV client, a keepalive stream, ...).
    type Conn: Send + 'static;

    /// Names of the reports this workload fills, in print order.
    fn report_names(&self) -> Vec<String>;

    /// Prepares one client task (not timed).
    fn open(&self, client: Client) -> impl Future<Output = Result<Self::Conn>> + Send;

    /// Issues request number `i`; returns the index of the report it belongs to and whether
    /// it succeeded (the error as the line to count it under).
    fn call(
        &self,
        conn: &mut Self::Conn,
        i: u64,
    ) -> impl Future<Output = (usize, Result<(), String>)> + Send;
}

/// How much load, from whom.
pub struct Load {
    pub total: u64,
    pub clients: Vec<Client>,
    pub limiter: Option<Arc<RateLimiter>>,
    pub bar: ProgressBar,
}

/// Runs `total` requests of `w` and returns its reports (wall time from the first request to
/// the last response).
pub async fn run<W: Workload>(w: Arc<W>, load: Load) -> Result<Vec<Report>> {
    let names = w.report_names();
    let mut conns = Vec::with_capacity(load.clients.len());
    for c in load.clients {
        conns.push(w.open(c).await.context("preparing a client")?);
    }
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in conns {
        let (w, next, limiter, bar) = (
            w.clone(),
            next.clone(),
            load.limiter.clone(),
            load.bar.clone(),
        );
        let n = names.len();
        let total = load.total;
        tasks.spawn(async move {
            let mut recs: Vec<Recorder> = (0..n).map(|_| Recorder::new()).collect();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if let Some(l) = &limiter {
                    l.wait().await;
                }
                let st = Instant::now();
                let (k, res) = w.call(&mut conn, i).await;
                let d = st.elapsed();
                match res {
                    Ok(()) => recs[k].record(d),
                    Err(e) => recs[k].record_error(e),
                }
                bar.inc(1);
            }
            recs
        });
    }
    let mut merged: Vec<Recorder> = names.iter().map(|_| Recorder::new()).collect();
    while let Some(r) = tasks.join_next().await {
        let recs = r.context("client task panicked")?;
        for (m, r) in merged.iter_mut().zip(&recs) {
            m.merge(r);
        }
    }
    let elapsed = start.elapsed();
    load.bar.finish_and_clear();
    Ok(names
        .iter()
        .zip(&merged)
        .map(|(name, r)| r.report(name, elapsed))
        .collect())
}
