//! The watch workloads.
//!
//! - `watch`: `--streams` watch streams with `--watchers-per-stream` watchers each, spread over
//!   the `--key-space-size` keys; then `--put-total` puts to those keys by the `--clients`
//!   clients. Measures watch creation, the puts, and above all the events delivered: events
//!   per second over all watchers, and each event's latency from the moment its put was sent.
//! - `watch-latency`: the same watchers all on one key, and `--put-total` puts to it, one at a
//!   time at `--put-rate`. Measures each put and each event's latency from the moment its put
//!   was sent (so it includes the put's own commit).
//!
//! Each put carries its sequence number in its value, which is how an event is matched to the
//! moment its put was sent. Watchers that miss events do not hang the run: a stream that has
//! been silent for [`IDLE_TIMEOUT`] (or three put intervals, if longer) stops, and the events it
//! still expected are counted as errors.

use crate::client::{connect_clients, connect_one, error_text};
use crate::keys::{decode_seq, encode_seq, random_bytes, seed, KeySpace};
use crate::limiter::RateLimiter;
use crate::report::{Recorder, Report};
use crate::runner::{self, Load, Workload};
use crate::{Global, Outcome};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use etcd_client::{Client, KvClient, WatchOptions, WatchStream};
use indicatif::ProgressBar;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a stream may go without a message before its missing events are given up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args, Debug, Clone, Serialize)]
pub struct WatchArgs {
    /// Total watch streams
    #[arg(long, default_value_t = 10)]
    pub streams: u64,
    /// Total watchers per stream
    #[arg(long, alias = "watch-per-stream", default_value_t = 100)]
    pub watchers_per_stream: u64,
    /// Number of keys watched and written (watchers and puts go round-robin over them)
    #[arg(long, alias = "key-space", default_value_t = 1)]
    pub key_space_size: u64,
    /// Key size of watch request
    #[arg(long, default_value_t = 32)]
    pub key_size: usize,
    /// Value size of the puts (at least 8: the put's sequence number)
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Number of put requests
    #[arg(long, default_value_t = 1000)]
    pub put_total: u64,
    /// Number of keys to put per second (0: --rate, and 0 there is no limit)
    #[arg(long, default_value_t = 0.0)]
    pub put_rate: f64,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct WatchLatencyArgs {
    /// Total watch streams
    #[arg(long, default_value_t = 10)]
    pub streams: u64,
    /// Total watchers per stream
    #[arg(long, alias = "watch-per-stream", default_value_t = 10)]
    pub watchers_per_stream: u64,
    /// PrevKV enabled on watch requests
    #[arg(long)]
    pub prevkv: bool,
    /// Total number of put requests
    #[arg(long, default_value_t = 1000)]
    pub put_total: u64,
    /// Number of keys to put per second (0 is no limit)
    #[arg(long, default_value_t = 100.0)]
    pub put_rate: f64,
    /// Key size of watch response
    #[arg(long, default_value_t = 32)]
    pub key_size: usize,
    /// Value size of watch response (at least 8: the put's sequence number)
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
}

/// When each put was sent, by sequence number.
pub struct Timeline {
    base: Instant,
    /// Nanoseconds since `base`, plus one; zero while not sent.
    sent: Vec<AtomicU64>,
}

impl Timeline {
    pub fn new(puts: u64) -> Timeline {
        Timeline {
            base: Instant::now(),
            sent: (0..puts).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Put `seq` is about to be sent (called before sending: its event may come back before
    /// the put's response).
    pub fn mark(&self, seq: u64) {
        if let Some(slot) = self.sent.get(seq as usize) {
            slot.store(self.base.elapsed().as_nanos() as u64 + 1, Ordering::Release);
        }
    }

    pub fn sent_at(&self, seq: u64) -> Option<Instant> {
        let v = self.sent.get(seq as usize)?.load(Ordering::Acquire);
        (v > 0).then(|| self.base + Duration::from_nanos(v - 1))
    }
}

fn check_sizes(streams: u64, per_stream: u64, val_size: usize) -> Result<()> {
    if streams == 0 || per_stream == 0 {
        bail!("expected positive --streams and --watchers-per-stream");
    }
    if val_size < 8 {
        bail!("--val-size must be at least 8 (the put's sequence number), got {val_size}");
    }
    Ok(())
}

/// gRPC (and etcd) allow about 100 concurrent streams per connection by default.
fn warn_streams_per_conn(g: &Global, streams: u64) {
    let conns = g.conns.min(g.clients);
    let wanted = 1 + streams / 100;
    if conns < wanted {
        eprintln!(
            "warning: grpc limits 100 streams per client connection, have {conns} but need {wanted}"
        );
    }
}

/// Creates `streams` streams (stream `s` on `clients[s % len]`) of `per_stream` watchers each;
/// watcher `n` (counting across streams) watches `key_of(n)`. Each creation is timed from the
/// request to its `created` response.
async fn create_watchers(
    clients: &[Client],
    streams: u64,
    per_stream: u64,
    key_of: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>,
    opts: WatchOptions,
    bar: ProgressBar,
) -> Result<(Vec<WatchStream>, Recorder, Duration)> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..streams {
        let mut wc = clients[(s as usize) % clients.len()].watch_client();
        let (key_of, opts, bar) = (key_of.clone(), opts.clone(), bar.clone());
        tasks.spawn(async move {
            let mut rec = Recorder::new();
            let mut stream: Option<WatchStream> = None;
            for w in 0..per_stream {
                let key = key_of(s * per_stream + w);
                let st = Instant::now();
                let stream = match &mut stream {
                    Some(stream) => {
                        stream
                            .watch(key, Some(opts.clone()))
                            .await
                            .map_err(|e| anyhow!(error_text(&e)))?;
                        stream
                    }
                    None => stream.insert(
                        wc.watch(key, Some(opts.clone()))
                            .await
                            .map_err(|e| anyhow!(error_text(&e)))?,
                    ),
                };
                let resp = stream
                    .message()
                    .await
                    .map_err(|e| anyhow!(error_text(&e)))?
                    .ok_or_else(|| anyhow!("watch stream closed by the server"))?;
                if !resp.created() || resp.canceled() {
                    bail!(
                        "watch not created (created={}, canceled={}, reason={:?})",
                        resp.created(),
                        resp.canceled(),
                        resp.cancel_reason()
                    );
                }
                rec.record(st.elapsed());
                bar.inc(1);
            }
            Ok::<_, anyhow::Error>((s, stream.expect("at least one watcher"), rec))
        });
    }
    let mut out: Vec<(u64, WatchStream)> = Vec::new();
    let mut rec = Recorder::new();
    while let Some(r) = tasks.join_next().await {
        let (s, stream, r) = r
            .context("watch task panicked")?
            .context("creating watchers")?;
        rec.merge(&r);
        out.push((s, stream));
    }
    bar.finish_and_clear();
    out.sort_by_key(|(s, _)| *s);
    Ok((
        out.into_iter().map(|(_, s)| s).collect(),
        rec,
        start.elapsed(),
    ))
}

/// Receives the events of each stream until it has its `expected` count (or gives up after
/// `idle` without a message); each event is timed from when its put was sent. Returns the
/// recorder and when the last event arrived.
async fn receive_events(
    streams: Vec<WatchStream>,
    expected: Vec<u64>,
    timeline: Arc<Timeline>,
    idle: Duration,
    bar: ProgressBar,
) -> (Recorder, Option<Instant>) {
    let mut tasks = tokio::task::JoinSet::new();
    for (mut stream, expected) in streams.into_iter().zip(expected) {
        let (timeline, bar) = (timeline.clone(), bar.clone());
        tasks.spawn(async move {
            let mut rec = Recorder::new();
            let mut got = 0u64;
            let mut last = None;
            while got < expected {
                let missing = expected - got;
                let resp = match tokio::time::timeout(idle, stream.message()).await {
                    Err(_) => {
                        rec.record_errors(
                            format!("watch event not received within {idle:?}"),
                            missing,
                        );
                        break;
                    }
                    Ok(Err(e)) => {
                        rec.record_errors(error_text(&e), missing);
                        break;
                    }
                    Ok(Ok(None)) => {
                        rec.record_errors("watch stream closed by the server", missing);
                        break;
                    }
                    Ok(Ok(Some(resp))) => resp,
                };
                if resp.canceled() {
                    rec.record_errors(format!("watch canceled: {}", resp.cancel_reason()), missing);
                    break;
                }
                let now = Instant::now();
                for ev in resp.events() {
                    let sent = ev
                        .kv()
                        .and_then(|kv| decode_seq(kv.value()))
                        .and_then(|seq| timeline.sent_at(seq));
                    match sent {
                        Some(t) => rec.record(now.saturating_duration_since(t)),
                        None => rec.record_error("watch event not from a put of this run"),
                    }
                    got += 1;
                    bar.inc(1);
                }
                if !resp.events().is_empty() {
                    last = Some(now);
                }
            }
            (rec, last)
        });
    }
    let mut rec = Recorder::new();
    let mut last: Option<Instant> = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((r, l)) => {
                rec.merge(&r);
                last = last.max(l);
            }
            Err(e) => rec.record_error(format!("watch receiver failed: {e}")),
        }
    }
    bar.finish_and_clear();
    (rec, last)
}

/// The idle timeout for a put rate: [`IDLE_TIMEOUT`], or three put intervals if longer.
fn idle_timeout(put_rate: f64) -> Duration {
    if put_rate > 0.0 {
        IDLE_TIMEOUT.max(Duration::from_secs_f64(3.0 / put_rate))
    } else {
        IDLE_TIMEOUT
    }
}

/// The puts of `watch`: put `i` writes key `i mod keys` with its sequence number as value.
struct WatchPut {
    keys: KeySpace,
    val_size: usize,
    timeline: Arc<Timeline>,
}

impl Workload for WatchPut {
    type Conn = KvClient;

    fn report_names(&self) -> Vec<String> {
        vec!["put".into()]
    }

    async fn open(&self, client: Client) -> Result<KvClient> {
        Ok(client.kv_client())
    }

    async fn call(&self, kv: &mut KvClient, i: u64) -> (usize, Result<(), String>) {
        self.timeline.mark(i);
        let r = kv
            .put(self.keys.key_at(i), encode_seq(i, self.val_size), None)
            .await;
        (0, super::outcome(r))
    }
}

pub async fn run_watch(g: &Global, a: &WatchArgs) -> Result<Outcome> {
    check_sizes(a.streams, a.watchers_per_stream, a.val_size)?;
    warn_streams_per_conn(g, a.streams);
    let keys = KeySpace::new(a.key_size, a.key_space_size, true, seed())?;
    let clients =
        connect_clients(&g.endpoints, g.conns(), g.clients(), g.dial_timeout.get()).await?;

    let nkeys = a.key_space_size;
    let watchers = a.streams * a.watchers_per_stream;
    let key_of: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync> = {
        let keys = keys.clone();
        Arc::new(move |n| keys.key_at(n % nkeys))
    };
    let (streams, create, create_time) = create_watchers(
        &clients,
        a.streams,
        a.watchers_per_stream,
        key_of,
        WatchOptions::new(),
        crate::progress::bar(watchers),
    )
    .await?;

    // Watchers of each key on each stream, then the events each stream is owed.
    let mut expected = vec![0u64; a.streams as usize];
    for (s, e) in expected.iter_mut().enumerate() {
        let mut per_key = vec![0u64; nkeys as usize];
        for w in 0..a.watchers_per_stream {
            per_key[((s as u64 * a.watchers_per_stream + w) % nkeys) as usize] += 1;
        }
        *e = (0..a.put_total)
            .map(|i| per_key[(i % nkeys) as usize])
            .sum();
    }
    let events_total: u64 = expected.iter().sum();

    let put_rate = if a.put_rate > 0.0 { a.put_rate } else { g.rate };
    let timeline = Arc::new(Timeline::new(a.put_total));
    let receiver = tokio::spawn(receive_events(
        streams,
        expected,
        timeline.clone(),
        idle_timeout(put_rate),
        crate::progress::bar(events_total),
    ));
    let start = Instant::now();
    let puts = runner::run(
        Arc::new(WatchPut {
            keys,
            val_size: a.val_size,
            timeline,
        }),
        Load {
            total: a.put_total,
            clients,
            limiter: RateLimiter::new(put_rate).map(Arc::new),
            bar: ProgressBar::hidden(),
        },
    )
    .await?
    .remove(0);
    let (events, last) = receiver.await.context("watch receiver panicked")?;
    let events_time = last.map(|l| l - start).unwrap_or_else(|| start.elapsed());
    Ok(Outcome {
        preface: Vec::new(),
        sections: vec![
            (
                Some("Watch creation summary:".into()),
                create.report("watch-create", create_time),
            ),
            (Some("Put summary:".into()), puts),
            (
                Some("Watch events received summary:".into()),
                events.report("watch-events", events_time),
            ),
        ],
    })
}

pub async fn run_latency(g: &Global, a: &WatchLatencyArgs) -> Result<Outcome> {
    check_sizes(a.streams, a.watchers_per_stream, a.val_size)?;
    warn_streams_per_conn(g, a.streams);
    let seed = seed();
    // A printable random key, so that runs do not see each other's events.
    let key: Vec<u8> = random_bytes(seed, a.key_size)
        .into_iter()
        .map(|b| b"abcdefghijklmnopqrstuvwxyz0123456789"[b as usize % 36])
        .collect();
    let clients =
        connect_clients(&g.endpoints, g.conns(), g.clients(), g.dial_timeout.get()).await?;
    let mut put_client = connect_one(&g.endpoints, g.dial_timeout.get())
        .await?
        .kv_client();

    let mut opts = WatchOptions::new();
    if a.prevkv {
        opts = opts.with_prev_key();
    }
    let k = key.clone();
    let (streams, _create, _) = create_watchers(
        &clients,
        a.streams,
        a.watchers_per_stream,
        Arc::new(move |_| k.clone()),
        opts,
        crate::progress::bar(a.streams * a.watchers_per_stream),
    )
    .await?;

    let expected = vec![a.put_total * a.watchers_per_stream; a.streams as usize];
    let events_total = a.put_total * a.streams * a.watchers_per_stream;
    let timeline = Arc::new(Timeline::new(a.put_total));
    let receiver = tokio::spawn(receive_events(
        streams,
        expected,
        timeline.clone(),
        idle_timeout(a.put_rate),
        crate::progress::bar(events_total),
    ));

    let limiter = RateLimiter::new(a.put_rate);
    let mut puts = Recorder::new();
    let start = Instant::now();
    for i in 0..a.put_total {
        if let Some(l) = &limiter {
            l.wait().await;
        }
        timeline.mark(i);
        let st = Instant::now();
        match put_client
            .put(key.clone(), encode_seq(i, a.val_size), None)
            .await
        {
            Ok(_) => puts.record(st.elapsed()),
            Err(e) => puts.record_error(error_text(&e)),
        }
    }
    let put_time = start.elapsed();
    let (events, last) = receiver.await.context("watch receiver panicked")?;
    let events_time = last.map(|l| l - start).unwrap_or_else(|| start.elapsed());
    let sections: Vec<(Option<String>, Report)> = vec![
        (Some("Put summary:".into()), puts.report("put", put_time)),
        (
            Some("Watch events summary:".into()),
            events.report("watch-events", events_time),
        ),
    ];
    Ok(Outcome {
        preface: Vec::new(),
        sections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_records_send_times() {
        let t = Timeline::new(3);
        assert_eq!(t.sent_at(0), None);
        t.mark(1);
        let at = t.sent_at(1).unwrap();
        assert!(at >= t.base && at <= Instant::now());
        assert_eq!(t.sent_at(2), None);
        assert_eq!(t.sent_at(99), None);
        t.mark(99); // out of range: ignored
    }

    #[test]
    fn idle_timeout_covers_slow_put_rates() {
        assert_eq!(idle_timeout(0.0), IDLE_TIMEOUT);
        assert_eq!(idle_timeout(100.0), IDLE_TIMEOUT);
        assert_eq!(idle_timeout(0.1), Duration::from_secs(30));
    }

    #[test]
    fn sizes_are_checked() {
        assert!(check_sizes(1, 1, 8).is_ok());
        assert!(check_sizes(0, 1, 8).is_err());
        assert!(check_sizes(1, 0, 8).is_err());
        assert!(check_sizes(1, 1, 7).is_err());
    }
}
