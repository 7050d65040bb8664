//! The alarm and quota rules of the applier, driven entry by entry: no sockets, no clocks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use api::etcdserverpb::{
    alarm_request::AlarmAction, request_op, AlarmRequest, AlarmType, CompactionRequest,
    DeleteRangeRequest, InternalRaftRequest, LeaseGrantRequest, PutRequest, RangeRequest,
    RequestHeader, RequestOp, TxnRequest,
};
use prost::Message as _;

use super::*;
use crate::applier::{Applied, Applier, ApplyResult, Space};
use crate::quota::{self, Quota};
use crate::wait::Wait;
use rpctypes::ServerError;

const MEMBER: u64 = 0x8e9e05c52164694d;

fn put(k: &str, v: &str) -> InternalRaftRequest {
    InternalRaftRequest {
        put: Some(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn txn(
    success: Vec<request_op::Request>,
    failure: Vec<request_op::Request>,
) -> InternalRaftRequest {
    let ops = |v: Vec<request_op::Request>| {
        v.into_iter()
            .map(|r| RequestOp { request: Some(r) })
            .collect()
    };
    InternalRaftRequest {
        txn: Some(TxnRequest {
            compare: vec![],
            success: ops(success),
            failure: ops(failure),
        }),
        ..Default::default()
    }
}

fn alarm(action: AlarmAction, alarm: AlarmType) -> InternalRaftRequest {
    InternalRaftRequest {
        alarm: Some(AlarmRequest {
            action: action as i32,
            member_id: MEMBER,
            alarm: alarm as i32,
        }),
        ..Default::default()
    }
}

fn put_op(k: &str) -> request_op::Request {
    request_op::Request::RequestPut(PutRequest {
        key: k.into(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

fn delete_op(k: &str) -> request_op::Request {
    request_op::Request::RequestDeleteRange(DeleteRangeRequest {
        key: k.into(),
        ..Default::default()
    })
}

fn range_op(k: &str) -> request_op::Request {
    request_op::Request::RequestRange(RangeRequest {
        key: k.into(),
        ..Default::default()
    })
}

fn store_with(alarms: &[(u64, AlarmType)]) -> AlarmStore {
    let s = AlarmStore::default();
    for (m, a) in alarms {
        s.commit(AlarmChange::Activate(*m, *a as i32));
    }
    s
}

#[test]
fn nospace_caps_writes_that_add_data_and_lets_the_rest_through() {
    let s = store_with(&[(MEMBER, AlarmType::Nospace)]);
    assert_eq!(gate(&s, &put("a", "b")), Err(ServerError::NoSpace));
    let grant = InternalRaftRequest {
        lease_grant: Some(LeaseGrantRequest { ttl: 10, id: 0 }),
        ..Default::default()
    };
    assert_eq!(gate(&s, &grant), Err(ServerError::NoSpace));
    assert_eq!(
        gate(&s, &txn(vec![put_op("a")], vec![])),
        Err(ServerError::NoSpace)
    );
    assert_eq!(
        gate(&s, &txn(vec![range_op("a")], vec![put_op("a")])),
        Err(ServerError::NoSpace),
        "a put in either branch counts"
    );
    assert_eq!(
        gate(&s, &txn(vec![range_op("a"), delete_op("b")], vec![])),
        Ok(())
    );
    let del = InternalRaftRequest {
        delete_range: Some(DeleteRangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(gate(&s, &del), Ok(()));
    let compact = InternalRaftRequest {
        compaction: Some(CompactionRequest {
            revision: 1,
            physical: false,
        }),
        ..Default::default()
    };
    assert_eq!(gate(&s, &compact), Ok(()));
    assert_eq!(
        gate(&s, &alarm(AlarmAction::Deactivate, AlarmType::Nospace)),
        Ok(())
    );
    // Without the alarm nothing is refused.
    assert_eq!(gate(&AlarmStore::default(), &put("a", "b")), Ok(()));
}

#[test]
fn corrupt_refuses_every_kv_request_but_not_alarms() {
    let s = store_with(&[(MEMBER, AlarmType::Corrupt)]);
    assert_eq!(gate(&s, &put("a", "b")), Err(ServerError::Corrupt));
    assert_eq!(
        gate(&s, &txn(vec![range_op("a")], vec![])),
        Err(ServerError::Corrupt)
    );
    assert_eq!(gate(&s, &alarm(AlarmAction::Get, AlarmType::None)), Ok(()));
}

#[test]
fn alarms_are_listed_by_member_then_type() {
    let s = store_with(&[(2, AlarmType::Corrupt), (1, AlarmType::Nospace)]);
    assert_eq!(
        s.get(AlarmType::None),
        vec![
            AlarmMember {
                member_id: 1,
                alarm: AlarmType::Nospace as i32
            },
            AlarmMember {
                member_id: 2,
                alarm: AlarmType::Corrupt as i32
            },
        ]
    );
    assert_eq!(s.get(AlarmType::Corrupt).len(), 1);
    assert_eq!(s.get(AlarmType::None).len(), 2);
}

#[test]
fn quota_costs_are_etcds() {
    assert_eq!(quota::cost(&put("ab", "cde")), 256 + 5);
    assert_eq!(
        quota::cost(&txn(vec![put_op("a"), put_op("b")], vec![put_op("ccc")])),
        2 * (256 + 2)
    );
    assert_eq!(quota::cost(&txn(vec![delete_op("a")], vec![])), 0);
    let q = Quota { max_bytes: 1000 };
    assert!(q.available(100, 899));
    assert!(!q.available(100, 900));
    assert!(
        !q.available(1000, 0),
        "a full backend refuses even a write of no cost"
    );
}

struct Harness {
    _dir: tempfile::TempDir,
    kv: Arc<mvcc::KvStore>,
    alarms: Arc<AlarmStore>,
    wait: Arc<Wait<ApplyResult>>,
    applier: Applier,
    raised: Arc<AtomicUsize>,
    index: u64,
}

impl Harness {
    fn new(max_bytes: u64) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let be =
            Arc::new(backend::Backend::open(dir.path().join("db"), Default::default()).unwrap());
        let kv = Arc::new(mvcc::KvStore::open(be.clone()).unwrap());
        let alarms = Arc::new(AlarmStore::load(&be.read().unwrap()).unwrap());
        let wait = Arc::new(Wait::default());
        let raised = Arc::new(AtomicUsize::new(0));
        let r = raised.clone();
        let applier = Applier::new(
            kv.clone(),
            crate::lessor::Leases::for_tests(&kv),
            wait.clone(),
        )
        .with_space(Space {
            alarms: alarms.clone(),
            quota: Quota { max_bytes },
            raise_nospace: Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }),
        });
        Harness {
            _dir: dir,
            kv,
            alarms,
            wait,
            applier,
            raised,
            index: 0,
        }
    }

    fn apply(&mut self, mut req: InternalRaftRequest) -> ApplyResult {
        self.index += 1;
        let id = self.index;
        req.header = Some(RequestHeader {
            id,
            ..Default::default()
        });
        let mut rx = self.wait.register(id);
        self.applier
            .apply(self.index, 1, &req.encode_to_vec())
            .expect("applied");
        self.applier.flush().expect("flush");
        rx.try_recv().expect("applied synchronously")
    }
}

#[test]
fn apply_over_quota_answers_nospace_raises_the_alarm_and_the_alarm_caps_writes() {
    let mut h = Harness::new(u64::MAX);
    assert!(h.apply(put("a", "1")).is_ok());
    // A quota the file is already over: the write is applied (every member applies the same
    // entries) but answered with NoSpace, and the server is asked to raise the alarm.
    h.applier = std::mem::replace(
        &mut h.applier,
        Applier::new(
            h.kv.clone(),
            crate::lessor::Leases::for_tests(&h.kv),
            h.wait.clone(),
        ),
    )
    .with_space(Space {
        alarms: h.alarms.clone(),
        quota: Quota { max_bytes: 1 },
        raise_nospace: {
            let r = h.raised.clone();
            Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
        },
    });
    assert_eq!(h.apply(put("b", "2")).err(), Some(ServerError::NoSpace));
    assert_eq!(h.kv.rev(), 3);
    assert_eq!(h.raised.load(Ordering::SeqCst), 1);

    // The alarm entry comes back through Raft.
    match h.apply(alarm(AlarmAction::Activate, AlarmType::Nospace)) {
        Ok(Applied::Alarm(r)) => assert_eq!(r.alarms.len(), 1),
        _ => panic!("alarm not applied"),
    }
    assert!(h.alarms.has(AlarmType::Nospace));
    // Capped: refused and not applied, no further raise.
    assert_eq!(h.apply(put("c", "3")).err(), Some(ServerError::NoSpace));
    assert_eq!(h.kv.rev(), 3);
    assert_eq!(h.raised.load(Ordering::SeqCst), 1);
    // Deletes work.
    let del = InternalRaftRequest {
        delete_range: Some(DeleteRangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(h.apply(del).is_ok());
    assert_eq!(h.kv.rev(), 4);

    // The alarm is persisted with the consistent index.
    let loaded = AlarmStore::load(&h.kv.backend().read().unwrap()).unwrap();
    assert_eq!(loaded.get(AlarmType::None).len(), 1);
    assert_eq!(h.kv.consistent_index(), h.index);
    match h.apply(alarm(AlarmAction::Get, AlarmType::None)) {
        Ok(Applied::Alarm(r)) => assert_eq!(r.alarms[0].member_id, MEMBER),
        _ => panic!("alarm get failed"),
    }

    // Disarmed (and under a quota that fits again), writes work.
    h.applier = std::mem::replace(
        &mut h.applier,
        Applier::new(
            h.kv.clone(),
            crate::lessor::Leases::for_tests(&h.kv),
            h.wait.clone(),
        ),
    )
    .with_space(Space {
        alarms: h.alarms.clone(),
        quota: Quota {
            max_bytes: u64::MAX,
        },
        raise_nospace: Box::new(|| {}),
    });
    match h.apply(alarm(AlarmAction::Deactivate, AlarmType::Nospace)) {
        Ok(Applied::Alarm(r)) => assert_eq!(r.alarms.len(), 1),
        _ => panic!("alarm not deactivated"),
    }
    assert!(!h.alarms.has(AlarmType::Nospace));
    assert!(AlarmStore::load(&h.kv.backend().read().unwrap())
        .unwrap()
        .get(AlarmType::None)
        .is_empty());
    assert!(h.apply(put("d", "4")).is_ok());
    assert_eq!(h.kv.rev(), 5);
    // Deactivating an alarm that is not active answers with no alarms.
    match h.apply(alarm(AlarmAction::Deactivate, AlarmType::Nospace)) {
        Ok(Applied::Alarm(r)) => assert!(r.alarms.is_empty()),
        _ => panic!("deactivate failed"),
    }
}
