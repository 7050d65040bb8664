//! `KV/RangeStream` (etcd 3.7): a Range answered as a stream of parts, so that a large range is
//! never held whole, neither in the member nor in the client.
//!
//! What a client sees is etcd 3.7's:
//! * The request is checked as a Range is; a sort other than ascending by key (or no sort order)
//!   and the min/max mod/create revision filters are refused with `Unimplemented`.
//! * Unless serializable, one ReadIndex round first; then the caller's read permission on the
//!   range, once; if the auth store changed while the parts were read with a token of an older
//!   auth revision, the stream ends with `AuthOldRevision` after them (etcd's `doSerialize`).
//! * Every part comes from the same revision: the first part reads at the requested revision, or
//!   at the current one, which the following parts then read at. A compaction past it between two
//!   parts ends the stream with `ErrCompacted` after the parts already sent.
//! * Each part carries a disjoint, key-ordered slice of the kvs; only the last one carries the
//!   header (its revision the store's revision when the first part was read), `more` and `count`,
//!   so merging every part gives what a Range at that revision would have answered.
//! * count_only: one part with the header and the count.
//!
//! How the range is cut is Hearth's, and not part of the contract: like etcd, the number of keys
//! per part starts at 10 and doubles while parts come out under half of `--max-request-bytes`
//! (halves above twice it). Unlike etcd, a part also stops once its keys and values reach
//! `--max-request-bytes`, so a run of large values after many small ones cannot make a part of
//! thousands of large values. A limit of 0 or below is no limit (etcd reads a negative limit as
//! no limit in one part), and a revision below 0 is pinned as 0 is (etcd pins only 0). With a sort target other than the key and no sort order, etcd sorts
//! each part by that target; Hearth does too, and continues after the part's greatest key (etcd
//! continues after the key of the part's last kv, which repeats or skips keys).
//!
//! Memory: one part is read at a time, on a task that hands it to the response through a channel
//! of one slot, so a client that reads slowly holds at most the part in the channel, the part
//! being encoded and the one being read (about three times `--max-request-bytes`, plus one value
//! past the budget each), and beyond that only what HTTP/2 flow control lets the connection
//! buffer. Smaller parts would cost more reads and messages for the same range;
//! larger ones more memory per slow client. Each part is its own read of the store, which walks
//! the index only over the part's keys (plus one); a stream cut short by its limit counts the rest
//! of the range once, at the end, as etcd does.

use std::sync::Arc;

use api::etcdserverpb::{
    range_request, RangeRequest, RangeResponse, RangeStreamResponse as Part, ResponseHeader,
};
use api::mvccpb::KeyValue;
use futures::Stream;
use mvcc::{KvStore, RangeOptions};
use prost::Message;
use rpctypes::ServerError;
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::auth::Ctx;
use crate::shutdown::stopping;
use crate::{validate, AuthGetter, KvGetter, RaftStatusGetter, ReadIndexer};

/// Keys in the first part (etcd's `initialStreamChunkLimit`).
const FIRST_PART_KEYS: i64 = 10;
/// No part asks the index for more keys than this, whatever the doubling says.
const MAX_PART_KEYS: i64 = 1 << 17;

/// etcd 3.7's refusals of what RangeStream does not do.
const CUSTOM_SORT: &str = "RangeStream does not support custom sort orders";
const REVISION_FILTERS: &str = "RangeStream does not support revision filters";

/// The response stream of one RangeStream call.
pub type PartStream = std::pin::Pin<Box<dyn Stream<Item = Result<Part, Status>> + Send>>;

/// etcd's `checkRangeStreamRequest`: a Range's checks, then no custom sort and no revision filters.
pub fn check(r: &RangeRequest) -> Result<(), Status> {
    validate::check_range(r)?;
    if !default_ordering(r) {
        return Err(Status::unimplemented(CUSTOM_SORT));
    }
    if r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0
    {
        return Err(Status::unimplemented(REVISION_FILTERS));
    }
    Ok(())
}

/// etcd's `IsDefaultOrdering`: no sort order, or ascending by key.
fn default_ordering(r: &RangeRequest) -> bool {
    r.sort_order() == range_request::SortOrder::None
        || (r.sort_target() == range_request::SortTarget::Key
            && r.sort_order() == range_request::SortOrder::Ascend)
}

/// Checks, reads the linearizable point and the caller's permission, then streams the parts of
/// `req` from a task; `target` is the part size in bytes. The stream ends with `Stopped` when
/// `shutdown` turns true.
pub async fn start<S>(
    srv: Arc<S>,
    cx: Ctx,
    req: RangeRequest,
    target: usize,
    shutdown: watch::Receiver<bool>,
) -> Result<PartStream, Status>
where
    S: ReadIndexer + AuthGetter + KvGetter + RaftStatusGetter,
{
    check(&req)?;
    if !req.serializable {
        srv.linearizable_read().await?;
    }
    let ai = srv
        .auth_info(&cx)
        .await
        .map_err(ServerError::from)?
        .unwrap_or_default();
    srv.auth_store()
        .check_range(&ai, &req)
        .map_err(ServerError::from)?;

    let (tx, rx) = mpsc::channel::<Result<Part, Status>>(1);
    tokio::spawn(async move {
        let mut parts = Parts::new(req, target);
        while let Some(part) = parts.next(srv.kv()) {
            let last = !matches!(part, Ok(ReadPart { last: false, .. }));
            let mut item = part.map_err(Status::from).map(|p| {
                let mut resp = p.resp;
                if let Some(h) = &mut resp.header {
                    // etcd's `fillWithoutRevision`: the member's fields as the part is sent.
                    h.cluster_id = srv.cluster_id();
                    h.member_id = srv.member_id();
                    h.raft_term = srv.term();
                }
                Part {
                    range_response: Some(resp),
                }
            });
            // etcd's `doSerialize` checks the auth revision after the whole read: after the last
            // part, or instead of the error that ended the read.
            let mut refusal = None;
            if last && ai.revision != 0 && ai.revision != srv.auth_store().revision() {
                let old = Status::from(ServerError::from(::auth::AuthError::AuthOldRevision));
                if item.is_ok() {
                    refusal = Some(old);
                } else {
                    item = Err(old);
                }
            }
            if tx.send(item).await.is_err() {
                return;
            }
            if let Some(refusal) = refusal {
                let _ = tx.send(Err(refusal)).await;
            }
        }
    });
    Ok(Box::pin(futures::stream::unfold(
        (rx, shutdown, false),
        |(mut rx, mut shutdown, ended)| async move {
            if ended {
                return None;
            }
            tokio::select! {
                item = rx.recv() => item.map(|i| (i, (rx, shutdown, false))),
                _ = stopping(&mut shutdown) => {
                    Some((Err(ServerError::Stopped.into()), (rx, shutdown, true)))
                }
            }
        },
    )))
}

/// One part as read: the response and whether it is the last.
#[derive(Debug)]
pub struct ReadPart {
    pub resp: RangeResponse,
    pub last: bool,
}

/// The parts of one RangeStream, read one at a time from the store.
#[derive(Debug)]
pub struct Parts {
    /// The request, its key moved past the parts read and its revision pinned after the first.
    req: RangeRequest,
    /// Keys the caller asked for at most (`i64::MAX`: no limit).
    total_limit: i64,
    /// Keys in the parts read so far.
    sent: i64,
    /// Keys the next part asks for at most.
    part_keys: i64,
    /// Bytes a part aims at.
    target: usize,
    /// The store's revision when the first part was read (0 before).
    head_rev: i64,
    done: bool,
}

impl Parts {
    pub fn new(req: RangeRequest, target: usize) -> Parts {
        let total_limit = if req.limit > 0 { req.limit } else { i64::MAX };
        Parts {
            req,
            total_limit,
            sent: 0,
            part_keys: FIRST_PART_KEYS,
            target: target.max(1),
            head_rev: 0,
            done: false,
        }
    }

    /// The next part read from `kv`, or `None` after the last part or an error.
    pub fn next(&mut self, kv: &KvStore) -> Option<Result<ReadPart, ServerError>> {
        if self.done {
            return None;
        }
        let r = self.read(kv);
        if !matches!(r, Ok(ReadPart { last: false, .. })) {
            self.done = true;
        }
        Some(r)
    }

    fn read(&mut self, kv: &KvStore) -> Result<ReadPart, ServerError> {
        apply::metrics::range();
        let end = apply::txn::range_end(&self.req.range_end);
        if self.req.count_only {
            let rr = kv.read().range(
                &self.req.key,
                end,
                RangeOptions {
                    rev: self.req.revision,
                    count_only: true,
                    ..Default::default()
                },
            )?;
            return Ok(ReadPart {
                resp: RangeResponse {
                    header: Some(header(rr.rev)),
                    count: rr.count,
                    ..Default::default()
                },
                last: true,
            });
        }
        let want = self.part_keys.min(self.total_limit - self.sent).max(1);
        // One key past the part tells whether more follow (etcd's limit + 1).
        let rr = kv.read().range(
            &self.req.key,
            end,
            RangeOptions {
                limit: want.saturating_add(1),
                rev: self.req.revision,
                count_only: false,
                max_bytes: self.target,
                no_total: true,
            },
        )?;
        if self.head_rev == 0 {
            self.head_rev = rr.rev;
            if self.req.revision <= 0 {
                self.req.revision = rr.rev;
            }
        }
        let mut kvs = rr.kvs;
        kvs.truncate(usize::try_from(want).unwrap_or(usize::MAX));
        let n = kvs.len() as i64;
        self.sent += n;
        // The index found keys past this part (the extra one, or those the byte budget left).
        let more = rr.count > n;
        let last = !more || self.sent >= self.total_limit || n == 0;
        if let Some(kv) = kvs.last() {
            let mut next = kv.key.clone();
            next.push(0);
            self.req.key = next;
        }
        // Cut short by the limit: the count is the whole range's (etcd's `txn.Count` from the
        // next key, at the same revision).
        let left = if last && more {
            apply::metrics::range();
            kv.read()
                .range(
                    &self.req.key,
                    end,
                    RangeOptions {
                        rev: self.req.revision,
                        count_only: true,
                        ..Default::default()
                    },
                )?
                .count
        } else {
            0
        };
        if self.req.keys_only {
            for kv in &mut kvs {
                kv.value = Vec::new();
            }
        }
        sort_part(&mut kvs, self.req.sort_target(), self.req.sort_order());
        let mut resp = RangeResponse {
            kvs,
            ..Default::default()
        };
        if last {
            resp.header = Some(header(self.head_rev));
            resp.more = more;
            resp.count = self.sent + left;
        } else {
            self.part_keys = next_part_keys(self.part_keys, resp.encoded_len(), self.target);
        }
        Ok(ReadPart { resp, last })
    }
}

/// A header with only the revision; the member's fields are filled as the part is sent.
fn header(revision: i64) -> ResponseHeader {
    ResponseHeader {
        revision,
        ..Default::default()
    }
}

/// etcd's `adjustChunkLimit`: double the keys per part below half the target size, halve them
/// above twice it, never below one (nor above [`MAX_PART_KEYS`]).
fn next_part_keys(keys: i64, size: usize, target: usize) -> i64 {
    let keys = if size < target / 2 {
        keys.saturating_mul(2)
    } else if size > target.saturating_mul(2) {
        keys / 2
    } else {
        keys
    };
    keys.clamp(1, MAX_PART_KEYS)
}

/// etcd sorts each part ascending by the target when a target other than the key comes with no
/// sort order (stable here, ties in key order).
fn sort_part(
    kvs: &mut [KeyValue],
    target: range_request::SortTarget,
    order: range_request::SortOrder,
) {
    use range_request::{SortOrder, SortTarget};
    if order != SortOrder::None {
        return;
    }
    match target {
        SortTarget::Key => {}
        SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
        SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
        SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
        SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
}

#[cfg(test)]
#[path = "range_stream_tests.rs"]
mod tests;
