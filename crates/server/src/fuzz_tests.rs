//! Fuzz-style tests with a seeded generator (a failure replays): what the server does with hostile
//! input from clients and from its own disk.
//!
//! Random and hostile committed entries through the applier, on two independent stores at once: the
//! applier runs on the Raft thread, so a panic there stops the member, and two members that applied
//! the same entries must answer the same and hold the same data. Entries are not validated first
//! (validation happens in the gRPC layer; a log may hold anything an older or buggy proposer put
//! there), and the numbers are the extremes: `i64::MIN/MAX` limits, revisions, TTLs and ids, unknown
//! enum values, nested txns, garbage bytes instead of an entry.

use std::sync::Arc;
use std::time::Instant;

use api::etcdserverpb::{
    compare, request_op, AlarmRequest, CompactionRequest, Compare, DeleteRangeRequest,
    InternalRaftRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    RequestHeader, RequestOp, TxnRequest,
};
use prost::Message as _;

use apply::applier::{Applier, ApplyResult};
use apply::wait::Wait;

/// The lessor's timing for the default configuration.
fn lessor_config() -> apply::lessor::LessorConfig {
    let cfg = crate::config::Config::default();
    apply::lessor::LessorConfig::new(cfg.heartbeat_interval, cfg.election_timeout)
}

/// SplitMix64: a fixed sequence, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Mostly small numbers around the store's revisions, sometimes the extremes.
    fn num(&mut self) -> i64 {
        match self.below(10) {
            0 => *[i64::MIN, i64::MAX, -1, 0, 1, i64::MAX - 1, i64::MIN + 1]
                .get(self.below(7) as usize)
                .unwrap_or(&0),
            1 => self.next() as i64,
            2..=4 => 0,
            _ => self.below(40) as i64 - 5,
        }
    }

    fn enum_value(&mut self, known: i32) -> i32 {
        if self.chance(10) {
            self.next() as i32
        } else {
            self.below(known as u64) as i32
        }
    }

    fn key(&mut self) -> Vec<u8> {
        match self.below(12) {
            0 => Vec::new(),
            1 => vec![0],
            2 => vec![0xff; 1 + self.below(3) as usize],
            _ => format!("k{}", self.below(8)).into_bytes(),
        }
    }

    fn range_end(&mut self) -> Vec<u8> {
        match self.below(4) {
            0 | 1 => Vec::new(),
            2 => vec![0],
            _ => self.key(),
        }
    }

    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn range(rng: &mut Rng) -> RangeRequest {
    let filtered = rng.chance(20);
    let filter = |rng: &mut Rng| if filtered { rng.num() } else { 0 };
    RangeRequest {
        key: rng.key(),
        range_end: rng.range_end(),
        limit: rng.num(),
        revision: rng.num(),
        sort_order: if rng.chance(50) { 0 } else { rng.enum_value(3) },
        sort_target: rng.enum_value(5),
        serializable: rng.chance(50),
        keys_only: rng.chance(20),
        count_only: rng.chance(10),
        min_mod_revision: filter(rng),
        max_mod_revision: filter(rng),
        min_create_revision: filter(rng),
        max_create_revision: filter(rng),
    }
}

fn put(rng: &mut Rng) -> PutRequest {
    PutRequest {
        key: rng.key(),
        value: rng.bytes(16),
        lease: if rng.chance(80) { 0 } else { rng.num() },
        prev_kv: rng.chance(50),
        ignore_value: rng.chance(10),
        ignore_lease: rng.chance(10),
    }
}

fn delete(rng: &mut Rng) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: rng.key(),
        range_end: rng.range_end(),
        prev_kv: rng.chance(50),
    }
}

fn txn(rng: &mut Rng, depth: u32) -> TxnRequest {
    use compare::TargetUnion;
    let compares = (0..rng.below(4))
        .map(|_| Compare {
            result: rng.enum_value(4),
            target: rng.enum_value(5),
            key: rng.key(),
            range_end: rng.range_end(),
            target_union: match rng.below(6) {
                0 => None,
                1 => Some(TargetUnion::Version(rng.num())),
                2 => Some(TargetUnion::CreateRevision(rng.num())),
                3 => Some(TargetUnion::ModRevision(rng.num())),
                4 => Some(TargetUnion::Value(rng.bytes(4))),
                _ => Some(TargetUnion::Lease(rng.num())),
            },
        })
        .collect();
    let ops = |rng: &mut Rng| -> Vec<RequestOp> {
        (0..rng.below(5))
            .map(|_| RequestOp {
                request: match rng.below(if depth < 3 { 5 } else { 4 }) {
                    0 => None,
                    1 => Some(request_op::Request::RequestRange(range(rng))),
                    2 => Some(request_op::Request::RequestPut(put(rng))),
                    3 => Some(request_op::Request::RequestDeleteRange(delete(rng))),
                    _ => Some(request_op::Request::RequestTxn(txn(rng, depth + 1))),
                },
            })
            .collect()
    };
    TxnRequest {
        compare: compares,
        success: ops(rng),
        failure: ops(rng),
    }
}

fn request(rng: &mut Rng) -> InternalRaftRequest {
    let mut r = InternalRaftRequest::default();
    match rng.below(20) {
        0..=5 => r.put = Some(put(rng)),
        6..=7 => r.delete_range = Some(delete(rng)),
        8..=13 => r.txn = Some(txn(rng, 0)),
        14 => {
            r.compaction = Some(CompactionRequest {
                revision: rng.num(),
                physical: rng.chance(50),
            })
        }
        15 | 16 => {
            r.lease_grant = Some(LeaseGrantRequest {
                ttl: rng.num(),
                id: if rng.chance(50) {
                    rng.below(4) as i64 + 1
                } else {
                    rng.num()
                },
            })
        }
        17 => {
            r.lease_revoke = Some(LeaseRevokeRequest {
                id: if rng.chance(50) {
                    rng.below(4) as i64 + 1
                } else {
                    rng.num()
                },
            })
        }
        18 => {
            // GET and DEACTIVATE, and unknown actions and types; activating would only gate writes.
            let action = [0, 2, 3, 7, -1][rng.below(5) as usize];
            r.alarm = Some(AlarmRequest {
                action,
                member_id: rng.next(),
                alarm: rng.enum_value(3),
            })
        }
        _ => {}
    }
    r
}

struct Member {
    _dir: tempfile::TempDir,
    kv: Arc<mvcc::KvStore>,
    wait: Arc<Wait<ApplyResult>>,
    applier: Applier,
}

impl Member {
    fn new() -> Member {
        let dir = tempfile::tempdir().unwrap();
        let be =
            Arc::new(backend::Backend::open(dir.path().join("db"), Default::default()).unwrap());
        let kv = Arc::new(mvcc::KvStore::open(be).unwrap());
        let wait = Arc::new(Wait::default());
        let applier = Applier::new(
            kv.clone(),
            Arc::new(
                apply::lessor::Leases::recover(&kv, lessor_config(), Arc::new(Instant::now))
                    .unwrap(),
            ),
            wait.clone(),
        );
        Member {
            _dir: dir,
            kv,
            wait,
            applier,
        }
    }

    /// Applies `data` as entry `index` and returns what its proposer would have been told.
    fn apply(&mut self, index: u64, data: &[u8]) -> String {
        let mut rx = self.wait.register(index);
        self.applier
            .apply(index, 1, data)
            .expect("the store took it");
        self.applier.flush().expect("the store committed it");
        match rx.try_recv() {
            Ok(Ok(a)) => format!("{:?}", Outcome(&a)),
            Ok(Err(e)) => format!("error {e}"),
            Err(_) => "no answer".into(),
        }
    }
}

/// What an applied entry answered, without the compaction handle (which has no stable form).
struct Outcome<'a>(&'a apply::applier::Applied);

impl std::fmt::Debug for Outcome<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use apply::applier::Applied::*;
        match self.0 {
            Put(r) => write!(f, "{r:?}"),
            DeleteRange(r) => write!(f, "{r:?}"),
            Txn(r) => write!(f, "{r:?}"),
            Compaction(r, h) => write!(f, "{r:?} physical {}", h.is_some()),
            Alarm(r) => write!(f, "{r:?}"),
            MemberAttrSet => write!(f, "member attributes"),
            LeaseGrant(r) => write!(f, "{r:?}"),
            LeaseRevoke(r) => write!(f, "{r:?}"),
            Auth(r) => write!(f, "{r:?}"),
        }
    }
}

#[test]
fn random_entries_never_panic_and_two_members_agree() {
    let mut rng = Rng(0x0005_eed0_fa99_11e5);
    let mut a = Member::new();
    let mut b = Member::new();
    let mut answered = 0;
    for index in 1..=3000u64 {
        let data = if rng.chance(3) {
            rng.bytes(64)
        } else {
            let mut req = request(&mut rng);
            req.header = Some(RequestHeader {
                id: index,
                ..Default::default()
            });
            req.encode_to_vec()
        };
        if let Ok(req) = InternalRaftRequest::decode(data.as_slice()) {
            validate_as_the_kv_service_would(&req);
        }
        let (ra, rb) = (a.apply(index, &data), b.apply(index, &data));
        assert_eq!(ra, rb, "entry {index} answered differently");
        if !ra.starts_with("error") && ra != "no answer" {
            answered += 1;
        }
        // Reads of the applied state with random options, as the KV service serves them.
        let req = range(&mut rng);
        let read = |m: &Member| format!("{:?}", apply::txn::range(&m.kv.read(), &req));
        assert_eq!(read(&a), read(&b), "range {req:?} after entry {index}");
    }
    assert!(answered > 500, "too few entries did anything: {answered}");
    assert!(a.kv.rev() > 100, "revision {}", a.kv.rev());
    assert_eq!(a.kv.rev(), b.kv.rev());
    assert_eq!(a.kv.hash_kv(0).unwrap(), b.kv.hash_kv(0).unwrap());
}

/// The gRPC layer's checks on the same hostile requests: an answer, never a panic.
fn validate_as_the_kv_service_would(req: &InternalRaftRequest) {
    use v3rpc::validate;
    if let Some(t) = &req.txn {
        for max_ops in [0, 1, 128] {
            let _ = validate::check_txn(t, max_ops);
        }
    }
    if let Some(p) = &req.put {
        let _ = validate::check_put(p);
        let _ = apply::quota::cost_put(p);
    }
    if let Some(d) = &req.delete_range {
        let _ = validate::check_delete(d);
    }
    if let Some(t) = &req.txn {
        let _ = apply::quota::cost_txn(t);
    }
}

/// Every loader that runs at start-up, over a backend whose buckets hold random records (a damaged or
/// foreign file that still passes redb's checksums): each reports an error or loads, none panics.
#[test]
fn startup_loaders_survive_garbage_records() {
    use backend::Bucket;
    let mut rng = Rng(0xbad_d15c);
    let mut loaded = 0;
    for round in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        let be =
            Arc::new(backend::Backend::open(dir.path().join("db"), Default::default()).unwrap());
        {
            let mut w = be.write().unwrap();
            for _ in 0..rng.below(30) {
                let bucket = Bucket::ALL[rng.below(Bucket::ALL.len() as u64) as usize];
                let key = match rng.below(4) {
                    // Plausible keys: revisions, lease ids, member ids, meta names.
                    0 => {
                        let mut k = mvcc::Revision::new(rng.num(), rng.num())
                            .to_bytes()
                            .to_vec();
                        if rng.chance(30) {
                            k.push(if rng.chance(50) {
                                b't'
                            } else {
                                rng.next() as u8
                            });
                        }
                        k
                    }
                    1 => rng.num().to_be_bytes().to_vec(),
                    2 => [
                        &b"consistent_index"[..],
                        b"term",
                        b"scheduledCompactRev",
                        b"finishedCompactRev",
                        b"confState",
                    ][rng.below(5) as usize]
                        .to_vec(),
                    _ => rng.bytes(20),
                };
                let value = if rng.chance(50) {
                    // A valid KeyValue or Lease with random fields.
                    api::mvccpb::KeyValue {
                        key: rng.key(),
                        create_revision: rng.num(),
                        mod_revision: rng.num(),
                        version: rng.num(),
                        value: rng.bytes(8),
                        lease: rng.num(),
                    }
                    .encode_to_vec()
                } else {
                    rng.bytes(40)
                };
                w.put(bucket, &key, &value).unwrap();
            }
            w.commit_durable().unwrap();
        }
        let _ = membership::store::load(&be);
        let _ = apply::alarm::AlarmStore::load(&be.read().unwrap());
        let Ok(kv) = mvcc::KvStore::open(be.clone()) else {
            continue;
        };
        let _ = kv.consistent_index_and_term();
        let _ = kv.hash_kv(0);
        let _ = apply::txn::range(
            &kv.read(),
            &RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            },
        );
        if apply::lessor::Leases::recover(&kv, lessor_config(), Arc::new(Instant::now)).is_ok() {
            loaded += 1;
        }
        // Writes on top of whatever was loaded, to the keys the garbage may have named.
        for k in 0..8 {
            let mut w = kv.write();
            w.put(format!("k{k}").as_bytes(), format!("{round}").as_bytes(), 0);
            w.delete_range(&[0xff], None);
            let _ = w.end(0, 0);
        }
    }
    assert!(
        loaded > 0,
        "no round got past the loaders: the garbage is too crude"
    );
}
