//! Backend snapshots between members, after etcd's `snapshot_sender.go` and its snapshot handler: the
//! leader sends a consistent copy of its backend to a member too far behind to catch up from the log,
//! on the `Snapshot` call of `hearthraftpb.Raft`, never on the message stream.
//!
//! # Sending
//! When raft-rs emits a `MsgSnapshot`, [`Transport::send`](super::Transport) starts a task (never more
//! than one per peer, nor more than `max_snapshot_sends` at once: a copy costs a temporary file and a
//! read snapshot that keeps the live file from reusing pages) and the Raft loop goes on. The task has
//! the member make the copy ([`SnapshotStore::copy`](super::SnapshotStore)) on a blocking thread, with,
//! read from the very read snapshot the copy is made of, the consistent index, term and Raft
//! configuration the backend records:
//! they become the message's snapshot metadata, so the metadata says exactly what the file holds (etcd
//! does the same, taking them from its apply loop as it takes the copy). That index may be below the
//! one raft-rs put in the message (its commit index); raft-rs finds the difference out from the
//! follower's answer, and the leader's log always holds the entries after it (the log is compacted
//! only up to the backend's consistent index). The file then streams in chunks of `CHUNK` bytes, at
//! most two chunks in memory, followed by its SHA-256. The outcome goes back to the Raft loop, which
//! reports it to raft-rs (`report_snapshot`); metrics are etcd's
//! (`etcd_network_snapshot_send_{success,failures,total_duration_seconds}`).
//!
//! # Receiving
//! One transfer at a time (a second gets `Unavailable`; its sender retries later): the message is
//! checked ([`super::validate::check_snapshot_message`]), the bytes are written to the member's
//! staging path ([`SnapshotStore::staging_path`](super::SnapshotStore), removed at the next start if a
//! crash interrupts), the length and checksum are verified, and the member checks the file
//! ([`SnapshotStore::verify`](super::SnapshotStore): a complete database whose consistent index, term
//! and configuration are those of the message, with a membership that includes this member). Only
//! then does the Raft loop get it ([`Raft::install_snapshot`](super::Raft));
//! the call is answered once the loop has installed it or found it does not need it. The transfer's
//! slot is held until the Raft loop is done with the file, even if the sender goes away meanwhile.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::hearthraftpb::{raft_client::RaftClient, SnapshotChunk};
use protobuf::Message as _;
use raft::prelude::Message;
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use super::{validate, Raft, SnapshotStore};
use crate::metrics;

/// Bytes of the file per chunk.
const CHUNK: usize = 1024 * 1024;
/// How long a transfer may take: this, plus a second per `SLOW_RATE` bytes (a bound for a peer that
/// stopped reading without breaking the connection; keepalive catches a vanished one sooner).
const BASE_TIMEOUT: Duration = Duration::from_secs(60);
const SLOW_RATE: u64 = 1024 * 1024;

/// What the Raft loop says about a received snapshot: installed, or not needed.
pub type InstallResult = Result<bool, String>;

/// A received, verified snapshot for the Raft loop to install.
pub struct Incoming {
    /// The leader's `MsgSnapshot`, whose metadata describes the file.
    pub msg: Message,
    /// The file, at the member's staging path.
    pub staged: PathBuf,
    /// Held until the loop is done with the file: no other transfer may write to `staged` meanwhile.
    pub slot: OwnedSemaphorePermit,
    pub reply: oneshot::Sender<InstallResult>,
}

/// Everything a send task needs.
pub(super) struct SendContext {
    pub local_id: u64,
    pub cluster_id: u64,
    pub to: u64,
    pub urls: Vec<String>,
    pub cfg: super::TransportConfig,
    pub store: Arc<dyn SnapshotStore>,
    pub raft: Arc<dyn Raft>,
}

/// Sends `msg`'s snapshot to its peer and reports the outcome to the Raft loop.
pub(super) async fn send(ctx: SendContext, msg: Message) {
    let label = format!("{:x}", ctx.to);
    let started = Instant::now();
    metrics::SNAPSHOT_SEND_INFLIGHTS
        .with_label_values(&[&label])
        .inc();
    let result = send_copy(&ctx, msg).await;
    metrics::SNAPSHOT_SEND_INFLIGHTS
        .with_label_values(&[&label])
        .dec();
    let ok = match result {
        Ok((index, bytes, installed)) => {
            metrics::SNAPSHOT_SEND_SUCCESS
                .with_label_values(&[&label])
                .inc();
            metrics::SNAPSHOT_SEND_SECONDS
                .with_label_values(&[&label])
                .observe(started.elapsed().as_secs_f64());
            tracing::info!(
                remote_peer_id = %label,
                snapshot_index = index,
                bytes,
                installed,
                took = ?started.elapsed(),
                "sent database snapshot to peer"
            );
            true
        }
        Err(e) => {
            metrics::SNAPSHOT_SEND_FAILURES
                .with_label_values(&[&label])
                .inc();
            tracing::warn!(remote_peer_id = %label, error = %e, "failed to send database snapshot to peer");
            false
        }
    };
    ctx.raft.report_snapshot(ctx.to, ok);
}

/// Returns the snapshot's index, its size and whether the peer installed it.
async fn send_copy(ctx: &SendContext, mut msg: Message) -> Result<(u64, u64, bool), String> {
    if super::blackholed() {
        return Err("peer traffic is blocked by the blackholePeerNetwork failpoint".into());
    }
    let store = ctx.store.clone();
    let copy = tokio::task::spawn_blocking(move || store.copy())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot copy the backend: {e}"))?;
    if copy.index == 0 || copy.term == 0 {
        return Err("the backend records no applied entry".into());
    }
    let described = (copy.index, copy.term);
    let (file, size) = (copy.file, copy.size);
    {
        let md = msg.mut_snapshot().mut_metadata();
        md.index = copy.index;
        md.term = copy.term;
        if let Some(cs) = copy.conf_state {
            md.set_conf_state(cs);
        }
    }
    msg.mut_snapshot().data = Default::default();
    let header = msg.write_to_bytes().map_err(|e| e.to_string())?;
    tracing::info!(
        remote_peer_id = format!("{:x}", ctx.to),
        snapshot_index = described.0,
        snapshot_term = described.1,
        bytes = size,
        "sending database snapshot to peer"
    );
    let timeout = BASE_TIMEOUT + Duration::from_secs(size / SLOW_RATE);
    let mut last_error = String::from("the peer has no peer URL");
    // The copy is read once: a failed URL costs a new copy at raft-rs's next attempt.
    let mut file = Some(file);
    for url in &ctx.urls {
        let Some(f) = file.take() else { break };
        match tokio::time::timeout(timeout, stream_to(ctx, url, f, header.clone(), size)).await {
            Ok(Ok(installed)) => return Ok((described.0, size, installed)),
            Ok(Err((e, unused))) => {
                last_error = format!("{url}: {e}");
                file = unused;
            }
            Err(_) => {
                return Err(format!(
                    "{url}: the transfer did not finish within {timeout:?}"
                ))
            }
        }
    }
    Err(last_error)
}

/// A copy of the backend, read once.
type CopyFile = Box<dyn Read + Send>;

type StreamError = (String, Option<CopyFile>);

/// Streams the file to one URL. A failure to connect hands the file back for the next URL.
async fn stream_to(
    ctx: &SendContext,
    url: &str,
    file: CopyFile,
    header: Vec<u8>,
    size: u64,
) -> Result<bool, StreamError> {
    let channel = match super::connect(url, &ctx.cfg).await {
        Ok(c) => c,
        Err(e) => return Err((e, Some(file))),
    };
    let mut client = RaftClient::new(channel).max_encoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(2);
    let reader = tokio::task::spawn_blocking(move || feed(file, header, size, tx));
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    super::set_headers(&mut req, ctx.cluster_id, ctx.local_id, ctx.to);
    let answered = client.snapshot(req).await;
    let fed = reader.await.map_err(|e| (e.to_string(), None))?;
    match answered {
        Ok(resp) => {
            // The peer answered after the whole stream; a feeding error would have ended it early.
            fed.map_err(|e| (e, None))?;
            Ok(resp.into_inner().installed)
        }
        Err(s) => Err((format!("{}: {}", s.code(), s.message()), None)),
    }
}

/// Reads the file in chunks into `tx`, the first with the message, the last with the SHA-256.
fn feed(
    mut file: CopyFile,
    header: Vec<u8>,
    size: u64,
    tx: mpsc::Sender<SnapshotChunk>,
) -> Result<(), String> {
    let mut sha = sha2::Sha256::new();
    let mut sent = 0u64;
    let mut first = Some(header);
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0;
        while n < buf.len() {
            match file.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading the copy: {e}")),
            }
        }
        buf.truncate(n);
        sha.update(&buf);
        sent += n as u64;
        let done = n == 0 || sent >= size;
        let chunk = SnapshotChunk {
            message: first.take().unwrap_or_default(),
            size,
            data: buf,
            sha256: if done {
                sha.clone().finalize().to_vec()
            } else {
                Vec::new()
            },
        };
        if tx.blocking_send(chunk).is_err() {
            return Err("the peer stopped reading the snapshot".into());
        }
        if done {
            return if sent == size {
                Ok(())
            } else {
                Err(format!("the copy has {sent} bytes, not {size}"))
            };
        }
    }
}

/// Why a received snapshot was refused, as the status the sender gets.
fn refuse(what: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::invalid_argument(format!("snapshot refused: {what}"))
}

/// Removes the staging file unless the Raft loop took it over.
struct Staged {
    path: PathBuf,
    handed_over: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.handed_over {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What the receiving side needs.
pub(super) struct ReceiveContext {
    pub local_id: u64,
    pub from: u64,
    pub max_bytes: u64,
    pub store: Arc<dyn SnapshotStore>,
    pub raft: Arc<dyn Raft>,
}

/// Receives one snapshot from `incoming` and hands it to the Raft loop; returns whether it was
/// installed. `slot` is this member's one transfer slot.
pub(super) async fn receive(
    ctx: ReceiveContext,
    mut incoming: tonic::Streaming<SnapshotChunk>,
    slot: OwnedSemaphorePermit,
) -> Result<bool, tonic::Status> {
    let label = format!("{:x}", ctx.from);
    let started = Instant::now();
    metrics::SNAPSHOT_RECEIVE_INFLIGHTS
        .with_label_values(&[&label])
        .inc();
    let result = receive_file(&ctx, &mut incoming, slot).await;
    metrics::SNAPSHOT_RECEIVE_INFLIGHTS
        .with_label_values(&[&label])
        .dec();
    match &result {
        Ok(installed) => {
            metrics::SNAPSHOT_RECEIVE_SUCCESS
                .with_label_values(&[&label])
                .inc();
            metrics::SNAPSHOT_RECEIVE_SECONDS
                .with_label_values(&[&label])
                .observe(started.elapsed().as_secs_f64());
            tracing::info!(remote_peer_id = %label, installed, took = ?started.elapsed(), "received database snapshot from peer");
        }
        Err(s) => {
            metrics::SNAPSHOT_RECEIVE_FAILURES
                .with_label_values(&[&label])
                .inc();
            tracing::warn!(remote_peer_id = %label, error = %s.message(), "failed to receive database snapshot from peer");
        }
    }
    result
}

async fn receive_file(
    ctx: &ReceiveContext,
    incoming: &mut tonic::Streaming<SnapshotChunk>,
    slot: OwnedSemaphorePermit,
) -> Result<bool, tonic::Status> {
    let Some(mut chunk) = incoming.message().await? else {
        return Err(refuse("the stream was empty"));
    };
    let msg = Message::parse_from_bytes(&chunk.message).map_err(refuse)?;
    validate::check_snapshot_message(ctx.local_id, ctx.from, &msg).map_err(refuse)?;
    let size = chunk.size;
    if size > ctx.max_bytes {
        return Err(tonic::Status::resource_exhausted(format!(
            "snapshot refused: {size} bytes is more than the {} this member accepts",
            ctx.max_bytes
        )));
    }
    let md = msg.get_snapshot().get_metadata();
    tracing::info!(
        remote_peer_id = format!("{:x}", ctx.from),
        snapshot_index = md.index,
        snapshot_term = md.term,
        bytes = size,
        "receiving database snapshot from peer"
    );
    let mut staged = Staged {
        path: ctx.store.staging_path(),
        handed_over: false,
    };
    let mut file = tokio::fs::File::create(&staged.path).await?;
    let mut sha = sha2::Sha256::new();
    let mut got = 0u64;
    let digest = loop {
        if !chunk.data.is_empty() {
            got = got.saturating_add(chunk.data.len() as u64);
            if got > size {
                return Err(refuse(format!("more than the announced {size} bytes")));
            }
            sha.update(&chunk.data);
            file.write_all(&chunk.data).await?;
        }
        if !chunk.sha256.is_empty() {
            break chunk.sha256;
        }
        chunk = match incoming.message().await? {
            Some(c) if c.message.is_empty() => c,
            Some(_) => return Err(refuse("a second message inside one transfer")),
            None => return Err(refuse("the stream ended before the checksum")),
        };
    };
    if incoming.message().await?.is_some() {
        return Err(refuse("data after the checksum"));
    }
    if got != size {
        return Err(refuse(format!("{got} bytes instead of {size}")));
    }
    if sha.finalize().as_slice() != digest.as_slice() {
        return Err(refuse("checksum mismatch"));
    }
    file.sync_all().await?;
    drop(file);
    let (path, store, expected) = (staged.path.clone(), ctx.store.clone(), msg.clone());
    tokio::task::spawn_blocking(move || store.verify(&path, &expected))
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .map_err(refuse)?;
    let (reply, answer) = oneshot::channel();
    staged.handed_over = true;
    let handed = ctx.raft.install_snapshot(Incoming {
        msg,
        staged: staged.path.clone(),
        slot,
        reply,
    });
    if !handed {
        staged.handed_over = false;
        return Err(tonic::Status::unavailable("the member is stopping"));
    }
    match answer.await {
        Ok(Ok(installed)) => Ok(installed),
        Ok(Err(e)) => Err(tonic::Status::internal(format!(
            "installing the snapshot failed: {e}"
        ))),
        Err(_) => Err(tonic::Status::unavailable("the member is stopping")),
    }
}
