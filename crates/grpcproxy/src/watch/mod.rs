//! The Watch service of the proxy: client watchers on the same key range share upstream watchers.
//!
//! # Design
//!
//! * `mux`: every upstream watcher of the proxy rides one Watch stream to the cluster, with ids
//!   the proxy chooses; it follows endpoints and resumes each upstream watcher from the revision
//!   after the last one it received.
//! * `groups`: client streams are grouped by the credentials they carry; each group has its own
//!   mux and ranges, so upstream watchers are shared within a group only (no events cross users).
//! * Permission: a client watcher that joins an existing upstream watcher is never seen by the
//!   cluster, and a group outlives changes to what its credentials may read (auth enabled, a
//!   permission revoked; the group without credentials lives as long as the proxy). So, as
//!   etcd's proxy does (`checkPermissionForWatch`), every new client watcher is first checked
//!   by the cluster: a count-only serializable Range of its range under the client's own
//!   credentials. A refusal is answered as etcd's proxy answers it (created and canceled, the
//!   error's text as `cancel_reason`) and the watcher touches no range; only a watcher the
//!   cluster let read its range now joins or opens an upstream watcher.
//! * `ranges`: one state machine per distinct `(key, range_end)` (`broadcast::RangeState`), found
//!   by the exact range (as etcd's proxy does; overlapping but different ranges are not merged).
//! * `broadcast`: within a range, a **shared feed** (one upstream watcher) serves every client
//!   watcher that can start where it is; each client watcher filters what it is sent:
//!   - it drops events below its own `next_rev` (so it gets exactly the revisions it asked for,
//!     never one twice), applies its own `NOPUT`/`NODELETE` filters, drops `prev_kv` unless it
//!     asked for it, strips the namespace, and fragments for itself. The shared upstream watcher
//!     carries what its most demanding client needs: it asks for `prev_kv` as soon as one client
//!     does (a new upstream watcher continues from the old one's revision; it never goes back to
//!     not asking while it lives) and never filters.
//!   - a watcher from "now" (start revision 0) or from a revision the shared feed has not reached
//!     joins it at once; its "created" answer says the shared feed's revision, and it is sent every
//!     event after that.
//!   - a watcher from an older revision (etcd's proxy gives it an upstream watcher of its own
//!     forever) gets its own upstream watcher, a **catch-up feed**, that replays its history. Once
//!     that feed is as far as the shared one, the watcher moves over. To move without gap or
//!     duplicate while events keep coming, it first buffers the shared feed's responses from the
//!     shared revision `T` on, and moves when its own feed has reached `T`: buffered events its own
//!     feed already sent are dropped by `next_rev`. A buffer that grows past a bound is given up
//!     and started again later.
//!   - a client whose queue is full (`ClientQueue`) is not waited for: its watchers are dropped
//!     from their feeds, remember the first revision they were not sent, and catch up from it (a
//!     catch-up feed, as above) once the client has read its queue down. Others sharing the feed
//!     never notice: a slow client costs its own queue, and one upstream watcher while it catches
//!     up, never the group's speed.
//! * Guarantees through the proxy: per client watcher, revisions arrive in order, each once,
//!   whole (one upstream response, never split unless the client asked for fragments), with no
//!   gap, from the revision it asked; a compacted start revision gets the cluster's compaction
//!   answer (from the catch-up feed's upstream watcher, with etcd's `compact_revision`); after the
//!   proxy loses its upstream stream, every feed resumes from its last revision + 1, and if that
//!   was compacted meanwhile its clients get the compaction answer, as a resuming etcd client would.
//! * Progress: periodic notifications from the cluster go to the client watchers that asked
//!   for them. A client's progress request is answered with watch id -1 and the smallest revision
//!   up to which each of its watchers has been sent everything, computed under the ranges' locks,
//!   after everything up to it is queued, so it never claims a revision the client has not seen
//!   all events up to. On a cluster that answers progress requests in order (etcd 3.5, Hearth),
//!   the proxy first asks the cluster, so the answer is current; on etcd 3.4 it answers from what
//!   it has seen, which may be older than the cluster's revision (still true).
//!
//! # Tradeoffs
//!
//! * The shared upstream watcher always asks for progress notifications and never for filters,
//!   so the cluster sends the proxy every event of the range once, whatever its clients filter.
//! * A watcher with history costs an extra upstream watcher until it has caught up, and the
//!   shared feed's responses meanwhile are held once per such watcher (bounded).
//! * Exact-range grouping only: `a..c` and `a..d` are two upstream watchers.
//! * The permission check costs the cluster one small serializable Range per new client
//!   watcher (not per event), and the client stream reads its next request only once the
//!   cluster has answered, so a stream's requests keep their order. Coalescing is unaffected:
//!   the checked watchers still share upstream watchers.
//! * One upstream stream for the whole proxy: simple routing and one resume point; the cluster
//!   serves it like one client with many watchers.
//!
//! # Bounds (per client stream)
//!
//! At most [`MAX_QUEUED`] responses and [`MAX_QUEUED_BYTES`] of them (the first is always taken)
//! wait for the client; control answers (created, canceled) are always queued, but the stream
//! stops reading requests while its queue is full, so a client cannot grow it by asking.

pub mod broadcast;
pub mod groups;
pub mod mux;
pub mod ranges;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use api::etcdserverpb::kv_client::KvClient;
use api::etcdserverpb::watch_request::RequestUnion;
use api::etcdserverpb::watch_server::Watch;
use api::etcdserverpb::{
    RangeRequest, ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse,
};
use futures::Stream;
use prost::Message as _;
use tokio::sync::{mpsc, Notify};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::namespace::Namespace;
use crate::upstream::{auth_metadata, client_status, forward, is_auth_error, Retry, Upstream};
use broadcast::{ClientSink, SubId, SubSpec};
use groups::WatchGroups;
use ranges::{RangeEntry, WatchRanges};

/// Responses a client stream may have queued before its watchers are dropped to catch up later.
pub const MAX_QUEUED: usize = 1024;
/// Bytes of responses a client stream may have queued (past the first response).
pub const MAX_QUEUED_BYTES: usize = 8 << 20;
/// How long a progress request waits for the cluster's ordered answer before answering from
/// what the proxy has seen.
const PROGRESS_WAIT: Duration = Duration::from_secs(5);
/// etcd's `clientv3.InvalidWatchID`.
const INVALID_WATCH_ID: i64 = -1;
/// etcd's `clientv3.AutoWatchID`.
const AUTO_WATCH_ID: i64 = 0;

/// A client stream's queue: an unbounded channel whose length the producers check, so pushing
/// never waits and a full queue is told, not waited on.
pub struct ClientQueue {
    tx: mpsc::UnboundedSender<WatchResponse>,
    len: AtomicUsize,
    bytes: AtomicUsize,
    /// A watcher was dropped for a full queue: wake the stream when the queue drains.
    lagging: AtomicBool,
    drained: Notify,
}

impl ClientSink for ClientQueue {
    fn try_push(&self, parts: Vec<WatchResponse>) -> bool {
        let n = parts.len();
        let size: usize = parts.iter().map(|p| p.encoded_len()).sum();
        let len = self.len.fetch_add(n, Ordering::AcqRel);
        let bytes = self.bytes.fetch_add(size, Ordering::AcqRel);
        if len > 0 && (len + n > MAX_QUEUED || bytes + size > MAX_QUEUED_BYTES) {
            self.len.fetch_sub(n, Ordering::AcqRel);
            self.bytes.fetch_sub(size, Ordering::AcqRel);
            self.lagging.store(true, Ordering::Release);
            return false;
        }
        for p in parts {
            let _ = self.tx.send(p);
        }
        true
    }

    fn push(&self, r: WatchResponse) {
        self.len.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(r.encoded_len(), Ordering::AcqRel);
        let _ = self.tx.send(r);
    }
}

impl ClientQueue {
    fn full(&self) -> bool {
        self.len.load(Ordering::Acquire) >= MAX_QUEUED
            || self.bytes.load(Ordering::Acquire) >= MAX_QUEUED_BYTES
    }
}

/// The consuming end, handed to tonic.
struct QueueStream {
    rx: mpsc::UnboundedReceiver<WatchResponse>,
    q: Arc<ClientQueue>,
}

impl Stream for QueueStream {
    type Item = Result<WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(r)) => {
                let q = &self.q;
                let len = q.len.fetch_sub(1, Ordering::AcqRel) - 1;
                let bytes = q.bytes.fetch_sub(r.encoded_len(), Ordering::AcqRel);
                let drained = len <= MAX_QUEUED / 4 && bytes <= MAX_QUEUED_BYTES / 4;
                if drained && q.lagging.swap(false, Ordering::AcqRel) {
                    q.drained.notify_one();
                }
                Poll::Ready(Some(Ok(r)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

pub struct WatchProxy {
    pub groups: Arc<WatchGroups>,
    pub up: Arc<Upstream>,
    pub ns: Namespace,
    /// Responses larger than this are fragmented for clients that asked.
    pub fragment_bytes: usize,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchProxy {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let q = Arc::new(ClientQueue {
            tx,
            len: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            lagging: AtomicBool::new(false),
            drained: Notify::new(),
        });
        let stream = ClientStream {
            ranges: self.groups.group(req.metadata()),
            credentials: auth_metadata(req.metadata()),
            up: self.up.clone(),
            ns: self.ns.clone(),
            fragment_bytes: self.fragment_bytes,
            q: q.clone(),
            watchers: HashMap::new(),
            next_id: 0,
        };
        tokio::spawn(stream.run(req.into_inner()));
        Ok(Response::new(Box::pin(QueueStream { rx, q })))
    }
}

/// One client stream: its watchers and its receive loop.
struct ClientStream {
    ranges: Arc<WatchRanges>,
    /// The client's own credentials, for the permission check of each new watcher.
    credentials: MetadataMap,
    up: Arc<Upstream>,
    ns: Namespace,
    fragment_bytes: usize,
    q: Arc<ClientQueue>,
    watchers: HashMap<i64, (Arc<RangeEntry>, SubId)>,
    next_id: i64,
}

impl ClientStream {
    fn header(&self, rev: i64) -> ResponseHeader {
        ResponseHeader {
            revision: rev,
            ..self.ranges.mux().header()
        }
    }

    async fn run(mut self, mut inbound: Streaming<WatchRequest>) {
        let mut input = true;
        loop {
            if input && self.q.full() {
                // Hold the client's requests back until it reads its answers.
                tokio::select! {
                    _ = self.q.tx.closed() => break,
                    _ = self.q.drained.notified() => self.resync(),
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
                continue;
            }
            tokio::select! {
                _ = self.q.tx.closed() => break,
                _ = self.q.drained.notified() => self.resync(),
                msg = inbound.message(), if input => match msg {
                    Ok(Some(req)) => self.handle(req).await,
                    // A client that half-closes keeps its watchers, as etcd does.
                    Ok(None) => input = false,
                    Err(_) => break,
                },
            }
        }
        for (_, (entry, sub)) in self.watchers.drain() {
            self.ranges.remove(&entry, sub);
        }
    }

    fn resync(&self) {
        for (entry, sub) in self.watchers.values() {
            entry.resync(*sub);
        }
    }

    async fn handle(&mut self, req: WatchRequest) {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                if let Some((entry, sub)) = self.watchers.remove(&c.watch_id) {
                    if let Some(h) = self.ranges.remove(&entry, sub) {
                        self.q.push(WatchResponse {
                            header: Some(h),
                            watch_id: c.watch_id,
                            canceled: true,
                            ..Default::default()
                        });
                    }
                }
            }
            Some(RequestUnion::ProgressRequest(_)) => self.progress(),
            // etcd ignores a request it does not understand rather than ending the stream.
            None => {}
        }
    }

    fn refuse(&self, reason: &str) {
        self.q.push(WatchResponse {
            header: Some(self.header(self.up.seen())),
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        });
    }

    async fn create(&mut self, c: WatchCreateRequest) {
        // etcd's range conventions, checked on the client's keys: an empty key is "\0", an end
        // at or before the key (other than "\0") is an empty range.
        let key = if c.key.is_empty() && self.ns.is_empty() {
            vec![0]
        } else {
            c.key.clone()
        };
        // Cluster key space; the namespace's "whole range" for an empty key with an open end.
        let (k, e) = self.ns.interval(&key, &c.range_end);
        // Asked of the cluster before anything else, as a member checks a watcher's permission
        // before its other checks. The stream reads no further request meanwhile, so the
        // client's requests keep their order.
        let checked = tokio::select! {
            r = self.permitted(&k, &e) => r,
            _ = self.q.tx.closed() => return,
        };
        if let Err(s) = checked {
            return self.refuse(&go_error_text(&s));
        }
        if !c.range_end.is_empty() && c.range_end != [0] && key >= c.range_end {
            return self.refuse("mvcc: watcher range is empty");
        }
        let id = if c.watch_id != AUTO_WATCH_ID {
            if self.watchers.contains_key(&c.watch_id) {
                return self.refuse("mvcc: duplicate watch ID provided on the WatchStream");
            }
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        let spec = SubSpec::from_request(
            &c,
            id,
            self.ns.prefix().len(),
            self.fragment_bytes,
            self.q.clone(),
        );
        let (entry, sub) = self.ranges.add(k, e, spec);
        self.watchers.insert(id, (entry, sub));
    }

    /// Whether the cluster lets this client read `[key, end)` now: a count-only serializable
    /// Range under the client's own credentials (etcd's `checkPermissionForWatch`).
    async fn permitted(&self, key: &[u8], end: &[u8]) -> Result<(), Status> {
        let up = &self.up;
        let r = RangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            limit: 1,
            serializable: true,
            count_only: true,
            ..Default::default()
        };
        let res = up
            .call(Retry::Safe, |ch| {
                let req = forward(&self.credentials, r.clone());
                async move { KvClient::new(ch).range(req).await.map(|_| ()) }
            })
            .await;
        res.map_err(|s| {
            if is_auth_error(&s) && up.note_auth() {
                tracing::info!("the cluster has auth enabled: cached answers are no longer served");
            }
            client_status(up, s)
        })
    }

    fn progress(&self) {
        let watchers: Vec<(Arc<RangeEntry>, SubId)> = self.watchers.values().cloned().collect();
        let ranges = self.ranges.clone();
        let up = self.up.clone();
        let q = self.q.clone();
        tokio::spawn(async move {
            if !watchers.is_empty() {
                let _ = tokio::time::timeout(PROGRESS_WAIT, ranges.mux().progress()).await;
            }
            let rev = watchers
                .iter()
                .filter_map(|(e, s)| e.through_of(*s))
                .min()
                .unwrap_or_else(|| up.seen());
            q.push(WatchResponse {
                header: Some(ResponseHeader {
                    revision: rev,
                    ..ranges.mux().header()
                }),
                watch_id: INVALID_WATCH_ID,
                ..Default::default()
            });
        });
    }
}

/// The text clientv3 gives for an error, which etcd's proxy puts in `cancel_reason`: etcd's own
/// errors by their message alone, any other as grpc-go prints a status.
fn go_error_text(s: &Status) -> String {
    if s.message().starts_with("etcdserver: ") {
        return s.message().to_string();
    }
    let code = match s.code() {
        tonic::Code::Cancelled => "Canceled".to_string(),
        c => format!("{c:?}"),
    };
    format!("rpc error: code = {code} desc = {}", s.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_etcds_proxy_writes_them() {
        let s = Status::invalid_argument("etcdserver: user name is empty");
        assert_eq!(go_error_text(&s), "etcdserver: user name is empty");
        let s = Status::permission_denied("etcdserver: permission denied");
        assert_eq!(go_error_text(&s), "etcdserver: permission denied");
        let s = Status::unavailable("connection refused");
        assert_eq!(
            go_error_text(&s),
            "rpc error: code = Unavailable desc = connection refused"
        );
        let s = Status::cancelled("gone");
        assert_eq!(go_error_text(&s), "rpc error: code = Canceled desc = gone");
    }
}
