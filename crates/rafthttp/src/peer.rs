//! One remote member: a bounded queue of outgoing Raft messages and the task that streams them.
//!
//! The task dials the peer (rotating through its peer URLs), opens a `Stream` call, and is *active* once the
//! peer accepted it (response headers arrived, so the peer checked our cluster id). It then moves messages
//! from the queue to the stream in batches; `send` on the stream waits while HTTP/2 flow control holds it
//! back, which is the back-pressure that fills the queue. When the stream breaks, the peer is inactive
//! again: queued messages are dropped, raft-rs hears the peer is unreachable, and the task dials again after
//! a backoff that doubles from `backoff_min` to `backoff_max` (reset by a stream that came up).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::hearthraftpb::{raft_client::RaftClient, MessageBatch};
use protobuf::Message as _;
use raft::prelude::Message;
use tokio::sync::{mpsc, watch};

use super::{Raft, TransportConfig, CLUSTER_MISMATCH_TEXT, REMOVED_TEXT};
use crate::metrics;

/// A batch is cut at this many messages or bytes (a single larger message goes alone).
const BATCH_MESSAGES: usize = 256;
const BATCH_BYTES: usize = 1024 * 1024;

/// Whether the stream to a peer is up, and since when.
#[derive(Debug, Default)]
pub(crate) struct PeerStatus {
    active_since: Mutex<Option<Instant>>,
}

impl PeerStatus {
    pub fn active_since(&self) -> Option<Instant> {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.active_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns whether this changed anything.
    fn set_active(&self, on: bool) -> bool {
        let mut s = self.lock();
        match (s.is_some(), on) {
            (false, true) => {
                *s = Some(Instant::now());
                true
            }
            (true, false) => {
                *s = None;
                true
            }
            _ => false,
        }
    }
}

/// What a peer's task needs to know.
pub(crate) struct PeerContext {
    pub local_id: u64,
    pub cluster_id: u64,
    pub remote_id: u64,
    pub cfg: TransportConfig,
    pub raft: Arc<dyn Raft>,
}

pub(crate) struct Peer {
    queue: mpsc::Sender<Message>,
    pub(super) urls: watch::Sender<Vec<String>>,
    pub status: Arc<PeerStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl Peer {
    pub fn start(ctx: PeerContext, urls: &[String], rt: &tokio::runtime::Handle) -> Peer {
        let (queue, rx) = mpsc::channel(ctx.cfg.queue_len.max(1));
        let (urls_tx, urls_rx) = watch::channel(urls.to_vec());
        let status = Arc::new(PeerStatus::default());
        let task = rt.spawn(run(ctx, rx, urls_rx, status.clone()));
        Peer {
            queue,
            urls: urls_tx,
            status,
            task,
        }
    }

    /// Queues `m` if the stream is up and the queue has room.
    pub fn try_send(&self, m: Message) -> bool {
        self.status.active_since().is_some() && self.queue.try_send(m).is_ok()
    }

    pub fn set_urls(&self, urls: &[String]) {
        self.urls.send_if_modified(|u| {
            let changed = u.as_slice() != urls;
            if changed {
                *u = urls.to_vec();
            }
            changed
        });
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// Why a stream ended.
enum Ended {
    /// The queue is closed: the peer was removed from the transport.
    Closed,
    /// The peer says this member was removed from the cluster.
    Removed,
    Failed(String),
}

async fn run(
    ctx: PeerContext,
    mut queue: mpsc::Receiver<Message>,
    mut urls: watch::Receiver<Vec<String>>,
    status: Arc<PeerStatus>,
) {
    let remote = format!("{:x}", ctx.remote_id);
    let local = format!("{:x}", ctx.local_id);
    let mut backoff = ctx.cfg.backoff_min;
    let mut next_url = 0usize;
    let mut last_error = String::new();
    loop {
        let list = urls.borrow_and_update().clone();
        if list.is_empty() {
            if urls.changed().await.is_err() {
                return;
            }
            continue;
        }
        let url = &list[next_url % list.len()];
        let ended = if super::blackholed() {
            Ended::Failed("peer traffic is blocked by the blackholePeerNetwork failpoint".into())
        } else {
            stream_to(&ctx, url, &mut queue, &status, &mut backoff).await
        };
        if status.set_active(false) {
            tracing::warn!(remote_peer_id = %remote, "peer became inactive (message send to peer failed)");
            metrics::ACTIVE_PEERS
                .with_label_values(&[&local, &remote])
                .set(0.0);
            metrics::DISCONNECTED_PEERS
                .with_label_values(&[&local, &remote])
                .inc();
        }
        // The receiver never saw what is still queued.
        let mut dropped = 0usize;
        while queue.try_recv().is_ok() {
            dropped += 1;
        }
        if dropped > 0 {
            metrics::PEER_SENT_FAILURES
                .with_label_values(&[&remote])
                .inc_by(dropped as f64);
            ctx.raft.report_unreachable(ctx.remote_id);
        }
        match ended {
            Ended::Closed => return,
            Ended::Removed => {
                tracing::error!(
                    remote_peer_id = %remote,
                    "{REMOVED_TEXT}: a peer refused this member's stream"
                );
                ctx.raft.report_removed();
                return;
            }
            Ended::Failed(e) => {
                if e != last_error {
                    tracing::info!(remote_peer_id = %remote, url = %url, error = %e, "cannot stream to peer; retrying");
                    last_error = e;
                } else {
                    tracing::debug!(remote_peer_id = %remote, url = %url, error = %e, "cannot stream to peer");
                }
                next_url = next_url.wrapping_add(1);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(jitter(backoff)) => {}
            changed = urls.changed() => {
                if changed.is_err() {
                    return;
                }
                // New URLs: try them at once.
                backoff = ctx.cfg.backoff_min;
                continue;
            }
        }
        backoff = (backoff * 2).min(ctx.cfg.backoff_max);
    }
}

/// Up to a quarter more, so that members that lost each other do not redial in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

fn classify(s: &tonic::Status) -> Ended {
    if s.message() == REMOVED_TEXT {
        return Ended::Removed;
    }
    if s.message() == CLUSTER_MISMATCH_TEXT {
        tracing::error!("request sent was ignored by remote peer due to cluster ID mismatch");
    }
    Ended::Failed(format!("{}: {}", s.code(), s.message()))
}

async fn stream_to(
    ctx: &PeerContext,
    url: &str,
    queue: &mut mpsc::Receiver<Message>,
    status: &PeerStatus,
    backoff: &mut Duration,
) -> Ended {
    let channel = match super::connect(url, &ctx.cfg).await {
        Ok(c) => c,
        Err(e) => return Ended::Failed(e),
    };
    let mut client = RaftClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(ctx.cfg.max_message_bytes);
    let (tx, rx) = mpsc::channel::<MessageBatch>(1);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    super::set_headers(&mut req, ctx.cluster_id, ctx.local_id, ctx.remote_id);
    let accepted = tokio::time::timeout(ctx.cfg.dial_timeout * 2, client.stream(req)).await;
    let mut events = match accepted {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return classify(&s),
        Err(_) => return Ended::Failed("the peer did not accept the stream in time".into()),
    };
    let remote = format!("{:x}", ctx.remote_id);
    if status.set_active(true) {
        tracing::info!(remote_peer_id = %remote, "peer became active");
        metrics::ACTIVE_PEERS
            .with_label_values(&[&format!("{:x}", ctx.local_id), &remote])
            .set(1.0);
    }
    *backoff = ctx.cfg.backoff_min;
    loop {
        tokio::select! {
            ev = events.message() => match ev {
                Ok(Some(_)) => {}
                Ok(None) => return Ended::Failed("stream closed by the peer".into()),
                Err(s) => return classify(&s),
            },
            m = queue.recv() => {
                let Some(first) = m else {
                    return Ended::Closed;
                };
                let batch = collect(first, queue);
                let bytes: usize = batch.messages.iter().map(Vec::len).sum();
                if tx.send(batch).await.is_err() {
                    return Ended::Failed("stream broken".into());
                }
                metrics::PEER_SENT_BYTES
                    .with_label_values(&[&remote])
                    .inc_by(bytes as f64);
            }
        }
    }
}

/// `first` and whatever else is queued, up to the batch limits, encoded.
fn collect(first: Message, queue: &mut mpsc::Receiver<Message>) -> MessageBatch {
    let mut messages = Vec::new();
    let mut bytes = 0;
    let mut next = Some(first);
    while let Some(m) = next.take() {
        match m.write_to_bytes() {
            Ok(b) => {
                bytes += b.len();
                messages.push(b);
            }
            // Only an unencodable message (which raft-rs never makes) lands here; raft retries.
            Err(e) => tracing::error!("cannot encode a raft message: {e}"),
        }
        if messages.len() >= BATCH_MESSAGES || bytes >= BATCH_BYTES {
            break;
        }
        next = queue.try_recv().ok();
    }
    MessageBatch { messages }
}
