//! Entries applied in one batch (one deferred backend commit), as the Raft loop applies them.

use std::sync::Arc;

use api::etcdserverpb::{
    request_op, DeleteRangeRequest, InternalRaftRequest, PutRequest, RequestHeader, RequestOp,
    TxnRequest,
};
use backend::{Backend, BackendConfig};
use mvcc::{KvStore, RangeOptions};
use prost::Message;
use tokio::sync::oneshot;

use super::*;
use crate::lessor::tests::{cfg, ManualClock};

struct Batch {
    _dir: tempfile::TempDir,
    kv: Arc<KvStore>,
    applier: Applier,
    wait: Arc<Wait<ApplyResult>>,
    index: u64,
}

impl Batch {
    fn new() -> Batch {
        let dir = tempfile::tempdir().unwrap();
        let be = Arc::new(Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap());
        let kv = Arc::new(KvStore::open(be).unwrap());
        let leases = Arc::new(Leases::recover(&kv, cfg(), ManualClock::new().clock()).unwrap());
        let wait = Arc::new(Wait::default());
        let applier = Applier::new(kv.clone(), leases, wait.clone());
        Batch {
            _dir: dir,
            kv,
            applier,
            wait,
            index: 0,
        }
    }

    /// Applies `req` as the next entry without flushing; its answer comes with the flush.
    fn apply(&mut self, req: InternalRaftRequest) -> oneshot::Receiver<ApplyResult> {
        self.index += 1;
        let id = 1000 + self.index;
        let req = InternalRaftRequest {
            header: Some(RequestHeader {
                id,
                ..Default::default()
            }),
            ..req
        };
        let rx = self.wait.register(id);
        self.applier
            .apply(self.index, 1, &req.encode_to_vec())
            .expect("applied");
        rx
    }

    fn mod_revision(&self, key: &[u8]) -> Option<i64> {
        let r = self
            .kv
            .read()
            .range(key, None, RangeOptions::default())
            .unwrap();
        r.kvs.first().map(|kv| kv.mod_revision)
    }
}

fn put(key: &[u8]) -> InternalRaftRequest {
    InternalRaftRequest {
        put: Some(PutRequest {
            key: key.to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn revision(r: ApplyResult) -> i64 {
    match r {
        Ok(Applied::Put(p)) => p.header.unwrap().revision,
        Ok(_) => panic!("not a put's answer"),
        Err(e) => panic!("put failed: {e}"),
    }
}

#[test]
fn a_txn_refused_in_the_middle_of_a_batch_loses_none_of_the_others() {
    let mut m = Batch::new();
    let first = m.apply(put(b"b"));
    m.applier.flush().unwrap();
    assert_eq!(revision(first.blocking_recv().unwrap()), 2);
    // Deletes every key from "a" on ("\0"), then reuses b's value: b is gone when the put runs.
    let txn = InternalRaftRequest {
        txn: Some(TxnRequest {
            success: vec![
                RequestOp {
                    request: Some(request_op::Request::RequestDeleteRange(
                        DeleteRangeRequest {
                            key: b"a".to_vec(),
                            range_end: vec![0],
                            ..Default::default()
                        },
                    )),
                },
                RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: b"b".to_vec(),
                        ignore_value: true,
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    let x = m.apply(put(b"x"));
    let t = m.apply(txn);
    let y = m.apply(put(b"y"));
    m.applier.flush().unwrap();
    assert_eq!(revision(x.blocking_recv().unwrap()), 3);
    assert!(matches!(
        t.blocking_recv().unwrap(),
        Err(ServerError::KeyNotFound)
    ));
    assert_eq!(revision(y.blocking_recv().unwrap()), 4);
    // The refused txn changed nothing; the puts around it are where their answers said.
    assert_eq!(m.mod_revision(b"b"), Some(2));
    assert_eq!(m.mod_revision(b"x"), Some(3));
    assert_eq!(m.mod_revision(b"y"), Some(4));
    assert_eq!(m.kv.consistent_index(), 4);
}
