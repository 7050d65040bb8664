//! A concurrent write load over several endpoints that records every acknowledged put, and the
//! checks that every acknowledged write is on a member with the revision it was acknowledged at.
//!
//! Every key is written once (`<prefix>/<task>/<seq>`), so a key's mod_revision is its
//! create_revision and the revisions of the keys under the prefix tell whether any revision was
//! lost or reordered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::etcdserverpb::{PutRequest, RangeRequest};
use api::mvccpb::KeyValue;

use crate::poll;
use crate::rpc::RawKv;

/// How long the load has to make the progress a test waits for.
const PROGRESS_DEADLINE: Duration = Duration::from_secs(60);
/// The pause of a writer after a failed put or connection, before it tries the next member: not
/// a wait for anything, just not spinning on a member that is down.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct Ack {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub revision: i64,
}

/// Writer tasks; each starts on its own endpoint and moves to the next one when a put fails.
pub struct Load {
    acks: Arc<Mutex<Vec<Ack>>>,
    count: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<usize>>,
}

impl Load {
    pub fn start(prefix: &str, endpoints: Vec<String>, tasks: usize) -> Load {
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let count = Arc::new(AtomicUsize::new(0));
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..tasks)
            .map(|t| {
                tokio::spawn(writer(
                    format!("{prefix}/{t}"),
                    endpoints.clone(),
                    t,
                    acks.clone(),
                    count.clone(),
                    errors.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Load {
            acks,
            count,
            errors,
            stop,
            tasks: handles,
        }
    }

    /// Acknowledged puts so far.
    pub fn acked(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until `n` more puts than now are acknowledged.
    pub async fn wait_more(&self, n: usize) {
        let target = self.acked() + n;
        let what = format!("{target} acknowledged puts");
        poll::eventually(what, PROGRESS_DEADLINE, async || {
            if self.acked() >= target {
                return Ok(());
            }
            let errors = self.errors.lock().unwrap();
            let last: Vec<_> = errors.iter().rev().take(5).collect();
            Err(format!(
                "{} acknowledged; last errors {last:?}",
                self.acked()
            ))
        })
        .await
    }

    /// Stops the writers; returns every acknowledged put and how many each task made.
    pub async fn stop(self) -> (Vec<Ack>, Vec<usize>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut per_task = Vec::new();
        for t in self.tasks {
            per_task.push(t.await.expect("writer task"));
        }
        let acks = self.acks.lock().unwrap().clone();
        (acks, per_task)
    }
}

async fn writer(
    prefix: String,
    endpoints: Vec<String>,
    start: usize,
    acks: Arc<Mutex<Vec<Ack>>>,
    count: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut at = start;
    let mut client: Option<RawKv> = None;
    let mut n = 0;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let kv = match &mut client {
            Some(c) => c,
            None => match RawKv::connect(&endpoints[at % endpoints.len()]).await {
                Ok(c) => client.insert(c),
                Err(_) => {
                    at += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            },
        };
        let key = format!("{prefix}/{seq:06}").into_bytes();
        let value = format!("value of {prefix}/{seq}").into_bytes();
        seq += 1;
        let put = kv.put(PutRequest {
            key: key.clone(),
            value: value.clone(),
            ..Default::default()
        });
        match put.await {
            Ok(r) => {
                let revision = r.header.expect("put response has a header").revision;
                acks.lock().unwrap().push(Ack {
                    key,
                    value,
                    revision,
                });
                count.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
            // This put may or may not have been applied; either is allowed. Try another member.
            Err(e) => {
                errors.lock().unwrap().push(format!("{e:?}"));
                client = None;
                at += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
    n
}

/// Reads every key under `prefix` from `endpoint` (serializable: the member's own data) and
/// checks that every ack is there with its value and revision, and that each key was written
/// once. Returns the member's revision and the revisions of the keys.
pub async fn verify(endpoint: &str, prefix: &str, acks: &[Ack]) -> (i64, BTreeSet<i64>) {
    let mut raw = RawKv::connect(endpoint).await.expect("connect");
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    let r = raw
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: end,
            serializable: true,
            ..Default::default()
        })
        .await
        .expect("range");
    let current = r.header.as_ref().expect("header").revision;
    let by_key: BTreeMap<&[u8], &KeyValue> =
        r.kvs.iter().map(|kv| (kv.key.as_slice(), kv)).collect();
    let mut missing = Vec::new();
    for a in acks {
        match by_key.get(a.key.as_slice()) {
            None => missing.push(String::from_utf8_lossy(&a.key).into_owned()),
            Some(kv) => assert_eq!(
                (&kv.value, kv.mod_revision),
                (&a.value, a.revision),
                "{endpoint}: key {} differs from what was acknowledged",
                String::from_utf8_lossy(&a.key)
            ),
        }
    }
    assert!(
        missing.is_empty(),
        "{endpoint}: {} acknowledged writes missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let mut revs = BTreeSet::new();
    for kv in &r.kvs {
        assert_eq!(
            (kv.create_revision, kv.version),
            (kv.mod_revision, 1),
            "every key is written once"
        );
        assert!(revs.insert(kv.mod_revision), "two keys share a revision");
    }
    (current, revs)
}
