//! The lease apply path without sockets or real time: entries go through the applier, time
//! through a manual clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::etcdserverpb::{
    compare, request_op, Compare, InternalRaftRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestHeader, RequestOp, TxnRequest,
};
use backend::{Backend, BackendConfig, Bucket, Reader};
use mvcc::KvStore;
use prost::Message;

use super::*;
use crate::applier::{Applied, Applier, ApplyResult};
use crate::txn;
use crate::wait::Wait;

const S: Duration = Duration::from_secs(1);

pub(crate) struct ManualClock(Mutex<Instant>);

impl ManualClock {
    pub(crate) fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock(Mutex::new(Instant::now())))
    }
    pub(crate) fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
    pub(crate) fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
    pub(crate) fn clock(self: &Arc<Self>) -> Clock {
        let c = self.clone();
        Arc::new(move || c.now())
    }
}

pub(crate) fn cfg() -> LessorConfig {
    LessorConfig {
        min_ttl: 2,
        extend: S,
        retry_after: 7 * S,
    }
}

pub(crate) struct Member {
    _dir: tempfile::TempDir,
    pub kv: Arc<KvStore>,
    pub leases: Arc<Leases>,
    pub clock: Arc<ManualClock>,
    applier: Applier,
    wait: Arc<Wait<ApplyResult>>,
    index: u64,
}

impl Member {
    pub(crate) fn new() -> Member {
        let dir = tempfile::tempdir().unwrap();
        let be = Arc::new(Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap());
        let kv = Arc::new(KvStore::open(be).unwrap());
        let clock = ManualClock::new();
        let leases = Arc::new(Leases::recover(&kv, cfg(), clock.clock()).unwrap());
        let wait = Arc::new(Wait::default());
        let applier = Applier::new(kv.clone(), leases.clone(), wait.clone());
        Member {
            _dir: dir,
            kv,
            leases,
            clock,
            applier,
            wait,
            index: 0,
        }
    }

    /// Applies `req` as the next entry (term 1) and returns its result.
    pub(crate) fn apply(&mut self, mut req: InternalRaftRequest) -> ApplyResult {
        self.index += 1;
        let id = 1000 + self.index;
        req.header = Some(RequestHeader {
            id,
            ..Default::default()
        });
        let rx = self.wait.register(id);
        self.applier
            .apply(self.index, 1, &req.encode_to_vec())
            .expect("applied");
        self.applier.flush().expect("flush");
        rx.blocking_recv().expect("the applier answers every entry")
    }

    /// A leader's empty entry of `term`.
    pub(crate) fn apply_noop(&mut self, term: u64) {
        self.index += 1;
        self.applier.apply(self.index, term, &[]).expect("applied");
    }

    pub(crate) fn grant(&mut self, id: i64, ttl: i64) -> ApplyResult {
        self.apply(InternalRaftRequest {
            lease_grant: Some(LeaseGrantRequest { ttl, id }),
            ..Default::default()
        })
    }

    pub(crate) fn revoke(&mut self, id: i64) -> ApplyResult {
        self.apply(InternalRaftRequest {
            lease_revoke: Some(LeaseRevokeRequest { id }),
            ..Default::default()
        })
    }

    pub(crate) fn put(&mut self, key: &str, lease: i64) -> ApplyResult {
        self.apply(InternalRaftRequest {
            put: Some(put_req(key, lease)),
            ..Default::default()
        })
    }

    pub(crate) fn keys(&self) -> Vec<String> {
        let r = txn::range(
            &self.kv.read(),
            &RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            },
        )
        .unwrap();
        r.kvs
            .iter()
            .map(|kv| format!("{}@{}", String::from_utf8_lossy(&kv.key), kv.lease))
            .collect()
    }

    pub(crate) fn attached(&self, id: i64) -> Vec<String> {
        self.leases
            .time_to_live(id)
            .unwrap()
            .keys
            .into_iter()
            .map(|k| String::from_utf8(k).unwrap())
            .collect()
    }

    fn record(&self, id: i64) -> Option<Vec<u8>> {
        self.kv
            .backend()
            .read()
            .unwrap()
            .get(Bucket::Lease, &id.to_be_bytes())
            .unwrap()
    }
}

fn put_req(key: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        lease,
        ..Default::default()
    }
}

fn rev(r: &ApplyResult) -> i64 {
    let h = match r.as_ref().expect("applied") {
        Applied::Put(p) => &p.header,
        Applied::Txn(t) => &t.header,
        Applied::LeaseGrant(g) => &g.header,
        Applied::LeaseRevoke(r) => &r.header,
        _ => panic!("unexpected result"),
    };
    h.as_ref().unwrap().revision
}

#[test]
fn grant_attach_and_revoke_delete_keys_in_one_revision() {
    let mut m = Member::new();
    match m.grant(7, 1) {
        // Raised to the minimum TTL; a grant writes no key, so the revision stays.
        Ok(Applied::LeaseGrant(g)) => {
            assert_eq!((g.id, g.ttl, g.error.as_str()), (7, 2, ""));
            assert_eq!(g.header.unwrap().revision, 1);
        }
        _ => panic!("grant failed"),
    }
    assert!(m.record(7).is_some());
    assert_eq!(m.kv.consistent_index(), 1, "the grant's index is recorded");
    assert_eq!(rev(&m.put("b", 7)), 2);
    assert_eq!(rev(&m.put("a", 7)), 3);
    assert_eq!(rev(&m.put("c", 7)), 4);
    assert_eq!(rev(&m.put("free", 0)), 5);
    // Overwriting without a lease detaches.
    assert_eq!(rev(&m.put("c", 0)), 6);
    assert_eq!(m.attached(7), ["a", "b"]);

    let r = m.revoke(7);
    assert_eq!(rev(&r), 7, "all attached keys go in one revision");
    assert_eq!(m.kv.rev(), 7);
    assert_eq!(m.keys(), ["c@0", "free@0"]);
    assert!(m.record(7).is_none(), "the record goes with the keys");
    assert_eq!(m.kv.consistent_index(), m.index);
    assert!(m.leases.time_to_live(7).is_none());
    assert!(matches!(m.revoke(7), Err(ServerError::LeaseNotFound)));

    // A lease without keys: the revoke writes no revision.
    m.grant(8, 60).unwrap();
    assert_eq!(rev(&m.revoke(8)), 7);
    assert_eq!(m.kv.rev(), 7);
}

#[test]
fn grant_errors_are_etcds() {
    let mut m = Member::new();
    m.grant(5, 10).unwrap();
    assert!(matches!(m.grant(5, 10), Err(ServerError::LeaseExist)));
    assert!(matches!(
        m.grant(6, lease::MAX_LEASE_TTL + 1),
        Err(ServerError::LeaseTtlTooLarge)
    ));
    assert!(matches!(m.grant(0, 10), Err(ServerError::LeaseNotFound)));
    assert_eq!(m.leases.leases(), [5]);
    assert!(m.record(6).is_none());
}

#[test]
fn unknown_lease_is_refused_also_inside_txns() {
    let mut m = Member::new();
    assert!(matches!(m.put("k", 99), Err(ServerError::LeaseNotFound)));
    let txn = |lease, cmp_version| TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Version as i32,
            key: b"k".to_vec(),
            target_union: Some(compare::TargetUnion::Version(cmp_version)),
            ..Default::default()
        }],
        success: vec![
            RequestOp {
                request: Some(request_op::Request::RequestPut(put_req("other", 0))),
            },
            RequestOp {
                request: Some(request_op::Request::RequestPut(put_req("k", lease))),
            },
        ],
        failure: vec![],
    };
    let r = m.apply(InternalRaftRequest {
        txn: Some(txn(99, 0)),
        ..Default::default()
    });
    assert!(matches!(r, Err(ServerError::LeaseNotFound)));
    assert_eq!(m.kv.rev(), 1, "a refused txn writes nothing");
    // On the branch not taken, the lease is not checked.
    let r = m.apply(InternalRaftRequest {
        txn: Some(txn(99, 5)),
        ..Default::default()
    });
    assert!(matches!(r, Ok(Applied::Txn(t)) if !t.succeeded));

    m.grant(3, 10).unwrap();
    let r = m.apply(InternalRaftRequest {
        txn: Some(txn(3, 0)),
        ..Default::default()
    });
    assert!(matches!(r, Ok(Applied::Txn(t)) if t.succeeded));
    assert_eq!(m.attached(3), ["k"]);

    // ignore_lease keeps the key's lease (and its attachment).
    let r = m.apply(InternalRaftRequest {
        put: Some(PutRequest {
            key: b"k".to_vec(),
            value: b"new".to_vec(),
            ignore_lease: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    r.unwrap();
    assert_eq!(m.attached(3), ["k"]);
    assert_eq!(m.keys(), ["k@3", "other@0"]);
}

#[test]
fn deletes_detach_and_replayed_entries_are_skipped() {
    let mut m = Member::new();
    m.grant(4, 10).unwrap();
    m.put("x", 4).unwrap();
    m.put("y", 4).unwrap();
    m.apply(InternalRaftRequest {
        delete_range: Some(api::etcdserverpb::DeleteRangeRequest {
            key: b"x".to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(m.attached(4), ["y"]);

    // An entry at or below the consistent index (WAL replay after a crash) is not applied again.
    let grant = InternalRaftRequest {
        header: Some(RequestHeader {
            id: 1,
            ..Default::default()
        }),
        lease_grant: Some(LeaseGrantRequest { ttl: 10, id: 9 }),
        ..Default::default()
    };
    m.applier
        .apply(1, 1, &grant.encode_to_vec())
        .expect("applied");
    assert_eq!(m.leases.leases(), [4]);
}

#[test]
fn recover_rebuilds_leases_and_attachments() {
    let mut m = Member::new();
    m.grant(1, 30).unwrap();
    m.grant(2, 1).unwrap();
    m.put("a", 1).unwrap();
    m.put("b", 2).unwrap();
    m.put("c", 1).unwrap();
    m.put("c", 2).unwrap();
    m.put("d", 0).unwrap();

    let r = Leases::recover(&m.kv, cfg(), m.clock.clock()).unwrap();
    assert_eq!(r.leases(), [1, 2]);
    assert!(!r.is_primary(), "recovered lessors are not primary");
    let ttl = r.time_to_live(2).unwrap();
    assert_eq!((ttl.granted_ttl, ttl.keys.len()), (2, 2));
    assert_eq!(r.time_to_live(1).unwrap().keys, [b"a".to_vec()]);

    // reload replaces the state with the backend's.
    m.leases.demote();
    r.reload(&m.kv).unwrap();
    assert_eq!(r.leases(), [1, 2]);
}

#[test]
fn grants_on_the_primary_expire_after_their_ttl() {
    let mut m = Member::new();
    m.grant(1, 10).unwrap();
    // Not primary: nothing ever expires.
    m.clock.advance(100 * S);
    assert!(m.leases.expired(0).is_empty());

    m.leases.promote();
    let t0 = m.clock.now();
    // Promotion restarts every lease at TTL + extend (1 s).
    assert_eq!(
        m.leases.time_to_live(1).unwrap().expires_at,
        Some(t0 + 11 * S)
    );
    m.grant(2, 3).unwrap();
    assert_eq!(
        m.leases.time_to_live(2).unwrap().expires_at,
        Some(t0 + 3 * S)
    );
    m.clock.advance(3 * S);
    assert_eq!(m.leases.expired(0), [2]);
    assert_eq!(m.leases.renew(1).unwrap(), 10);
    assert!(matches!(
        m.leases.renew(2),
        Err(lease::LeaseError::LeaseNotFound)
    ));
    m.leases.demote();
    assert!(matches!(
        m.leases.renew(1),
        Err(lease::LeaseError::NotPrimary)
    ));
}

#[test]
fn noop_entries_record_their_term() {
    let mut m = Member::new();
    assert_eq!(m.leases.noop_term(), 0);
    m.apply_noop(3);
    assert_eq!(m.leases.noop_term(), 3);
    m.put("k", 0).unwrap();
    assert_eq!(m.leases.noop_term(), 3);
}
