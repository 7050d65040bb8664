//! Recording what clients saw, for the checks in [`crate::linearizability`].
//!
//! - [`Traffic`]: client tasks over several endpoints running a mix of linearizable gets, puts (with
//!   and without `prev_kv`), deletes and compare-and-swap txns on a few keys, each operation kept
//!   with its invocation and response time (one clock: every client runs in this process). A failed
//!   write is kept too: its outcome is unknown, and the checker decides from the history whether it
//!   took effect. Every put writes a value no other operation writes, so each change in the history
//!   names the operation that made it.
//! - [`ResumingWatcher`]: one watcher on the traffic's prefix from revision 1 that, whenever its
//!   stream fails or stalls, watches again on another member from the revision after the last event
//!   it got. It keeps every event exactly as delivered (duplicates and gaps included): the checker
//!   requires each revision exactly once, in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use api::etcdserverpb::request_op::Request;
use api::etcdserverpb::response_op::Response;
use api::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, ResponseHeader, TxnRequest,
};
use api::mvccpb::KeyValue;
use etcd_client::{EventType, WatchOptions};
use tokio::sync::Notify;

use crate::load::RETRY_PAUSE;
use crate::poll::{self, Poll};
use crate::rng::{Rng, RngExt};
use crate::rpc::{request_op, RawKv, RpcError};

/// Keys the traffic writes: few, so that operations on one key really interleave.
pub const KEYS: u64 = 8;

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Get {
        key: Vec<u8>,
    },
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        prev_kv: bool,
    },
    Delete {
        key: Vec<u8>,
    },
    /// If `key`'s mod_revision is `expect` (0: the key is absent), put `value`; else get `key`.
    Txn {
        key: Vec<u8>,
        expect: i64,
        value: Vec<u8>,
    },
}

impl Op {
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Get { key } | Op::Delete { key } => key,
            Op::Put { key, .. } | Op::Txn { key, .. } => key,
        }
    }

    /// The value this operation writes, if it may write one.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Op::Put { value, .. } | Op::Txn { value, .. } => Some(value),
            _ => None,
        }
    }

    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. })
    }
}

/// What a successful operation returned; `rev` is the response header's revision.
#[derive(Clone, Debug, PartialEq)]
pub enum Ret {
    Get {
        rev: i64,
        kv: Option<KeyValue>,
    },
    Put {
        rev: i64,
        prev: Option<KeyValue>,
    },
    Delete {
        rev: i64,
        deleted: i64,
    },
    /// `kv` is what the failure branch's get returned.
    Txn {
        rev: i64,
        succeeded: bool,
        kv: Option<KeyValue>,
    },
}

impl Ret {
    pub fn rev(&self) -> i64 {
        match self {
            Ret::Get { rev, .. }
            | Ret::Put { rev, .. }
            | Ret::Delete { rev, .. }
            | Ret::Txn { rev, .. } => *rev,
        }
    }
}

/// One operation with its times, measured from the start of the history.
#[derive(Clone, Debug)]
pub struct Record {
    pub client: usize,
    pub op: Op,
    pub invoked: Duration,
    /// When it returned and what, or the error (for a write: outcome unknown).
    pub outcome: Result<(Duration, Ret), String>,
}

/// A change as a watcher delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub rev: i64,
    pub key: Vec<u8>,
    /// `None` for a deletion.
    pub value: Option<Vec<u8>>,
    pub create_revision: i64,
    pub version: i64,
}

struct Shared {
    epoch: Instant,
    records: Mutex<Vec<Record>>,
    ok: AtomicUsize,
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// Clients running mixed KV operations until stopped.
pub struct Traffic {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// Starts `clients` clients on keys `<prefix>/k<n>`; client `i` begins on `endpoints[i % len]`
    /// and moves to the next endpoint whenever an operation fails. Each client draws its
    /// operations from its own generator, forked from `rng`.
    pub fn start(prefix: &str, endpoints: Vec<String>, clients: usize, rng: &mut Rng) -> Traffic {
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            records: Mutex::default(),
            ok: AtomicUsize::new(0),
            errors: Mutex::default(),
            stop: AtomicBool::new(false),
        });
        let tasks = (0..clients)
            .map(|id| {
                tokio::spawn(client(
                    id,
                    prefix.to_string(),
                    endpoints.clone(),
                    rng.fork(),
                    shared.clone(),
                ))
            })
            .collect();
        Traffic { shared, tasks }
    }

    /// Operations that succeeded so far.
    pub fn succeeded(&self) -> usize {
        self.shared.ok.load(Ordering::SeqCst)
    }

    /// Waits until `n` more operations than now have succeeded.
    pub async fn wait_more(&self, n: usize) {
        let target = self.succeeded() + n;
        let what = format!("{target} operations succeeded");
        poll::eventually(what, Duration::from_secs(90), async || {
            if self.succeeded() >= target {
                return Ok(());
            }
            let errors = self.shared.errors.lock().unwrap();
            let last: Vec<_> = errors.iter().rev().take(5).collect();
            Err(format!(
                "{} succeeded; last errors {last:?}",
                self.succeeded()
            ))
        })
        .await
    }

    /// Stops the clients (each finishes its operation in flight) and returns the history.
    pub async fn stop(self) -> Vec<Record> {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("traffic client");
        }
        std::mem::take(&mut *self.shared.records.lock().unwrap())
    }
}

fn pick_op(rng: &mut Rng, prefix: &str, id: usize, seq: u64, seen: &HashMap<Vec<u8>, i64>) -> Op {
    let key = format!("{prefix}/k{}", rng.u64(..KEYS)).into_bytes();
    let value = format!("c{id}-{seq}").into_bytes();
    match rng.u64(..100) {
        0..35 => Op::Get { key },
        35..65 => Op::Put {
            key,
            value,
            prev_kv: rng.chance(0.5),
        },
        65..75 => Op::Delete { key },
        _ => Op::Txn {
            expect: seen.get(&key).copied().unwrap_or(0),
            key,
            value,
        },
    }
}

async fn execute(kv: &mut RawKv, op: &Op) -> Result<Ret, RpcError> {
    let header_rev = |h: Option<ResponseHeader>| h.map(|h| h.revision).unwrap_or(-1);
    Ok(match op {
        Op::Get { key } => {
            let r = kv
                .range(RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })
                .await?;
            Ret::Get {
                rev: header_rev(r.header),
                kv: r.kvs.into_iter().next(),
            }
        }
        Op::Put {
            key,
            value,
            prev_kv,
        } => {
            let r = kv
                .put(PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                    prev_kv: *prev_kv,
                    ..Default::default()
                })
                .await?;
            Ret::Put {
                rev: header_rev(r.header),
                prev: r.prev_kv,
            }
        }
        Op::Delete { key } => {
            let r = kv
                .delete_range(DeleteRangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })
                .await?;
            Ret::Delete {
                rev: header_rev(r.header),
                deleted: r.deleted,
            }
        }
        Op::Txn { key, expect, value } => {
            let r = kv
                .txn(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Mod as i32,
                        key: key.clone(),
                        range_end: vec![],
                        target_union: Some(TargetUnion::ModRevision(*expect)),
                    }],
                    success: vec![request_op(Request::RequestPut(PutRequest {
                        key: key.clone(),
                        value: value.clone(),
                        ..Default::default()
                    }))],
                    failure: vec![request_op(Request::RequestRange(RangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    }))],
                })
                .await?;
            let kv = r.responses.into_iter().find_map(|o| match o.response {
                Some(Response::ResponseRange(g)) => g.kvs.into_iter().next(),
                _ => None,
            });
            Ret::Txn {
                rev: header_rev(r.header),
                succeeded: r.succeeded,
                kv,
            }
        }
    })
}

async fn client(id: usize, prefix: String, endpoints: Vec<String>, mut rng: Rng, s: Arc<Shared>) {
    let mut at = id;
    let mut conn: Option<RawKv> = None;
    let mut seen: HashMap<Vec<u8>, i64> = HashMap::new();
    let mut seq = 0u64;
    while !s.stop.load(Ordering::SeqCst) {
        let kv = match &mut conn {
            Some(c) => c,
            None => match RawKv::connect(&endpoints[at % endpoints.len()]).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    at += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            },
        };
        let op = pick_op(&mut rng, &prefix, id, seq, &seen);
        seq += 1;
        let invoked = s.epoch.elapsed();
        let result = execute(kv, &op).await;
        let returned = s.epoch.elapsed();
        let outcome = match result {
            Ok(ret) => {
                let observed = match &ret {
                    Ret::Get { kv, .. } | Ret::Txn { kv, .. } => {
                        Some(kv.as_ref().map_or(0, |kv| kv.mod_revision))
                    }
                    Ret::Put { rev, .. } => Some(*rev),
                    Ret::Delete { .. } => Some(0),
                };
                let succeeded_txn = matches!(
                    &ret,
                    Ret::Txn {
                        succeeded: true,
                        ..
                    }
                );
                if let Some(m) = observed {
                    seen.insert(op.key().to_vec(), if succeeded_txn { ret.rev() } else { m });
                }
                s.ok.fetch_add(1, Ordering::SeqCst);
                Ok((returned, ret))
            }
            Err(e) => {
                s.errors.lock().unwrap().push(format!("{e:?}"));
                conn = None;
                at += 1;
                Err(format!("{e:?}"))
            }
        };
        let failed = outcome.is_err();
        s.records.lock().unwrap().push(Record {
            client: id,
            op,
            invoked,
            outcome,
        });
        if failed {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

struct WatchShared {
    changes: Mutex<Vec<Change>>,
    resumes: AtomicUsize,
    problems: Mutex<Vec<String>>,
    stop: AtomicBool,
    kick: Notify,
}

/// A watcher that resumes on another member after a failure (see the module doc).
pub struct ResumingWatcher {
    shared: Arc<WatchShared>,
    task: tokio::task::JoinHandle<()>,
}

/// How long a watch stream may stay silent before the watcher suspects its member (cut off from the
/// cluster, say) and resumes elsewhere; only matters while it is behind the revision it waits for.
const STALL: Duration = Duration::from_secs(2);

impl ResumingWatcher {
    /// Watches every key under `prefix/` from revision 1, starting on `endpoints[0]`.
    pub fn start(prefix: &str, endpoints: Vec<String>) -> ResumingWatcher {
        let shared = Arc::new(WatchShared {
            changes: Mutex::default(),
            resumes: AtomicUsize::new(0),
            problems: Mutex::default(),
            stop: AtomicBool::new(false),
            kick: Notify::new(),
        });
        let task = tokio::spawn(watch_loop(format!("{prefix}/"), endpoints, shared.clone()));
        ResumingWatcher { shared, task }
    }

    /// The revision of the last change received (1 before any).
    pub fn last_rev(&self) -> i64 {
        self.shared
            .changes
            .lock()
            .unwrap()
            .last()
            .map_or(1, |c| c.rev)
    }

    /// Makes the watcher drop its stream and resume on the next member.
    pub fn resume_now(&self) {
        self.shared.kick.notify_one();
    }

    /// Waits until a change at revision `rev` or later has arrived, resuming elsewhere whenever the
    /// stream stalls.
    pub async fn wait_for(&self, rev: i64) {
        let mut poll = Poll::new(
            format!("the watcher to reach revision {rev}"),
            Duration::from_secs(60),
        );
        let mut last = (self.last_rev(), Instant::now());
        while self.last_rev() < rev {
            let now = self.last_rev();
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > STALL {
                self.resume_now();
                last.1 = Instant::now();
            }
            let problems = self.shared.problems.lock().unwrap().clone();
            poll.next(format!("at revision {now}; problems {problems:?}"))
                .await;
        }
    }

    /// Stops watching; returns every change received and how many streams it resumed on.
    pub async fn stop(self) -> (Vec<Change>, usize) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.kick.notify_one();
        self.task.await.expect("watcher task");
        let problems = self.shared.problems.lock().unwrap().clone();
        assert!(problems.is_empty(), "the watcher was refused: {problems:?}");
        let changes = std::mem::take(&mut *self.shared.changes.lock().unwrap());
        (changes, self.shared.resumes.load(Ordering::SeqCst))
    }
}

async fn watch_loop(prefix: String, endpoints: Vec<String>, s: Arc<WatchShared>) {
    let mut at = 0usize;
    let mut attempts = 0usize;
    let mut streams = 0usize;
    while !s.stop.load(Ordering::SeqCst) {
        if attempts > 0 {
            at += 1;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        attempts += 1;
        let from = s.changes.lock().unwrap().last().map_or(1, |c| c.rev + 1);
        let Ok(mut client) = crate::server::connect(&endpoints[at % endpoints.len()]).await else {
            continue;
        };
        let opts = WatchOptions::new().with_prefix().with_start_revision(from);
        let Ok(mut stream) = client.watch(prefix.as_bytes(), Some(opts)).await else {
            continue;
        };
        if streams > 0 {
            s.resumes.fetch_add(1, Ordering::SeqCst);
        }
        streams += 1;
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = s.kick.notified() => break,
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => break,
            };
            if resp.canceled() {
                s.problems.lock().unwrap().push(format!(
                    "watch from revision {from} canceled: compact revision {}, reason {:?}",
                    resp.compact_revision(),
                    resp.cancel_reason()
                ));
                break;
            }
            let mut changes = s.changes.lock().unwrap();
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                changes.push(Change {
                    rev: kv.mod_revision(),
                    key: kv.key().to_vec(),
                    value: (ev.event_type() == EventType::Put).then(|| kv.value().to_vec()),
                    create_revision: kv.create_revision(),
                    version: kv.version(),
                });
            }
        }
    }
}
