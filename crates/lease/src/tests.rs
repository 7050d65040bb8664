use super::*;

use api::mvccpb::KeyValue;
use backend::{Backend, BackendConfig};

const S: Duration = Duration::from_secs(1);

struct Fixture {
    _dir: tempfile::TempDir,
    be: Backend,
}

fn backend() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let be = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
    Fixture { _dir: dir, be }
}

impl Fixture {
    fn grant(&self, l: &mut Lessor, id: i64, ttl: i64, now: Instant) -> Result<i64, LeaseError> {
        let mut txn = self.be.write().unwrap();
        let r = l.grant(&mut txn, id, ttl, now);
        txn.commit().unwrap();
        r
    }

    fn revoke(&self, l: &mut Lessor, id: i64) -> Result<Vec<Vec<u8>>, LeaseError> {
        let mut txn = self.be.write().unwrap();
        let r = l.revoke(&mut txn, id);
        txn.commit().unwrap();
        r
    }

    fn record(&self, id: i64) -> Option<leasepb::Lease> {
        let r = self.be.read().unwrap();
        r.get(Bucket::Lease, &id.to_be_bytes())
            .unwrap()
            .map(|v| leasepb::Lease::decode(v.as_slice()).unwrap())
    }
}

fn put(key: &str, lease: i64) -> Event {
    Event {
        r#type: EventType::Put as i32,
        kv: Some(KeyValue {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        }),
        prev_kv: None,
    }
}

fn del(key: &str) -> Event {
    Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }),
        prev_kv: None,
    }
}

fn keys(l: &Lessor, id: i64, now: Instant) -> Vec<String> {
    l.time_to_live(id, now)
        .unwrap()
        .keys
        .into_iter()
        .map(|k| String::from_utf8(k).unwrap())
        .collect()
}

#[test]
fn min_lease_ttl_follows_etcd_formula() {
    // Defaults: 10 ticks of 100 ms -> 15 * 100 ms = 1.5 s -> 2 s.
    assert_eq!(min_lease_ttl(100, 1000), 2);
    // 5 ticks of 100 ms -> (15 / 2) = 7 ticks -> 0.7 s -> 1 s.
    assert_eq!(min_lease_ttl(100, 500), 1);
    // 5 ticks of 1 s -> 7 s, not ceil(7.5) = 8: etcd's integer division.
    assert_eq!(min_lease_ttl(1000, 5000), 7);
    // 20 ticks of 50 ms -> 30 * 50 ms = 1.5 s -> 2 s.
    assert_eq!(min_lease_ttl(50, 1000), 2);
    // Election timeout not a multiple of the heartbeat: ticks truncate (1050 / 100 = 10).
    assert_eq!(min_lease_ttl(100, 1050), 2);
    assert_eq!(min_lease_ttl(0, 1000), 0);
    assert_eq!(election_timeout(100, 1050), Duration::from_millis(1000));
    assert_eq!(expired_lease_retry_interval(100, 1000), 7 * S);
}

#[test]
fn grant_raises_min_ttl_rejects_too_large_and_duplicates() {
    let f = backend();
    let now = Instant::now();
    let mut l = Lessor::new(5);
    assert_eq!(f.grant(&mut l, 1, 1, now).unwrap(), 5);
    assert_eq!(f.grant(&mut l, 2, 60, now).unwrap(), 60);
    assert_eq!(f.grant(&mut l, 3, -7, now).unwrap(), 5);
    assert_eq!(
        f.grant(&mut l, 4, MAX_LEASE_TTL, now).unwrap(),
        MAX_LEASE_TTL
    );
    assert!(matches!(
        f.grant(&mut l, 5, MAX_LEASE_TTL + 1, now),
        Err(LeaseError::TtlTooLarge)
    ));
    assert!(matches!(
        f.grant(&mut l, 2, 10, now),
        Err(LeaseError::LeaseExists)
    ));
    assert!(matches!(
        f.grant(&mut l, NO_LEASE, 10, now),
        Err(LeaseError::LeaseNotFound)
    ));
    assert_eq!(l.leases(), [1, 2, 3, 4]);
    assert_eq!(l.time_to_live(2, now).unwrap().granted_ttl, 60);

    // Records as etcd stores them: 8-byte big-endian ID -> leasepb.Lease with the raised TTL.
    assert_eq!(
        f.record(1),
        Some(leasepb::Lease {
            id: 1,
            ttl: 5,
            remaining_ttl: 0
        })
    );
    assert_eq!(f.record(2).unwrap().ttl, 60);
    assert_eq!(f.record(5), None);
    // A refused duplicate did not overwrite the record.
    assert_eq!(f.record(2).unwrap().ttl, 60);
    let raw =
        f.be.read()
            .unwrap()
            .get(Bucket::Lease, &[0, 0, 0, 0, 0, 0, 0, 2])
            .unwrap()
            .unwrap();
    // ID = 1 (0x08), TTL = 2 (0x10), RemainingTTL 0 omitted.
    assert_eq!(raw, [0x08, 2, 0x10, 60]);
}

#[test]
fn grant_expires_only_on_primary() {
    let f = backend();
    let t0 = Instant::now();
    let mut l = Lessor::new(1);
    f.grant(&mut l, 1, 10, t0).unwrap();
    assert_eq!(l.time_to_live(1, t0).unwrap().expires_at, None);
    assert!(l.expired(t0 + 100 * S, 0).is_empty());

    l.promote(t0, Duration::ZERO);
    f.grant(&mut l, 2, 10, t0).unwrap();
    assert_eq!(l.time_to_live(2, t0).unwrap().expires_at, Some(t0 + 10 * S));
    assert!(l
        .expired(t0 + 10 * S - Duration::from_nanos(1), 0)
        .is_empty());
    // Lease 1 was refreshed at promote (t0 + 10 s) too.
    assert_eq!(l.expired(t0 + 10 * S, 0), [1, 2]);
}

#[test]
fn events_attach_move_and_detach_keys() {
    let f = backend();
    let now = Instant::now();
    let mut l = Lessor::new(1);
    f.grant(&mut l, 1, 10, now).unwrap();
    f.grant(&mut l, 2, 10, now).unwrap();

    l.apply_events(&[put("b", 1), put("a", 1), put("c", 2), put("free", 0)]);
    assert_eq!(keys(&l, 1, now), ["a", "b"]);
    assert_eq!(keys(&l, 2, now), ["c"]);
    assert_eq!(l.lease_of(b"a"), Some(1));
    assert_eq!(l.lease_of(b"free"), None);

    // Overwriting "a" under lease 2 moves it; overwriting "b" without a lease detaches it.
    l.apply_events(&[put("a", 2), put("b", 0)]);
    assert_eq!(keys(&l, 1, now), Vec::<String>::new());
    assert_eq!(keys(&l, 2, now), ["a", "c"]);
    assert_eq!(l.lease_of(b"b"), None);

    // Deletes detach.
    l.apply_events(&[del("c"), del("never-existed")]);
    assert_eq!(keys(&l, 2, now), ["a"]);
    assert_eq!(l.lease_of(b"c"), None);

    // An unknown lease is ignored, and the key no longer belongs to its old lease.
    l.apply_events(&[put("a", 99)]);
    assert_eq!(keys(&l, 2, now), Vec::<String>::new());
    assert_eq!(l.lease_of(b"a"), None);
    assert!(!l.contains(99));

    // Events without a key-value or of an unknown type change nothing.
    l.apply_events(&[
        Event {
            r#type: EventType::Put as i32,
            kv: None,
            prev_kv: None,
        },
        Event {
            r#type: 7,
            ..put("x", 1)
        },
    ]);
    assert_eq!(l.lease_of(b"x"), None);

    // attach() refuses unknown leases without touching the key's current lease.
    l.attach(1, b"k").unwrap();
    assert!(matches!(l.attach(5, b"k"), Err(LeaseError::LeaseNotFound)));
    assert_eq!(l.lease_of(b"k"), Some(1));
    l.attach(2, b"k").unwrap();
    assert_eq!(keys(&l, 1, now), Vec::<String>::new());
    assert_eq!(keys(&l, 2, now), ["k"]);
    assert_eq!(l.detach(b"k"), Some(2));
    assert_eq!(l.detach(b"k"), None);
}

#[test]
fn revoke_returns_sorted_keys_and_deletes_record() {
    let f = backend();
    let now = Instant::now();
    let mut l = Lessor::new(1);
    f.grant(&mut l, 7, 10, now).unwrap();
    f.grant(&mut l, 8, 10, now).unwrap();
    l.apply_events(&[
        put("zeta", 7),
        put("alpha", 7),
        put("mid", 7),
        put("other", 8),
    ]);

    assert_eq!(
        f.revoke(&mut l, 7).unwrap(),
        [b"alpha".to_vec(), b"mid".to_vec(), b"zeta".to_vec()]
    );
    assert_eq!(f.record(7), None);
    assert!(f.record(8).is_some());
    assert!(!l.contains(7));
    assert_eq!(l.lease_of(b"alpha"), None);
    assert_eq!(l.lease_of(b"other"), Some(8));
    assert_eq!(l.leases(), [8]);
    // The DELETE events of the revoked keys are no-ops.
    l.apply_events(&[del("alpha"), del("mid"), del("zeta")]);
    assert_eq!(keys(&l, 8, now), ["other"]);

    assert!(matches!(
        f.revoke(&mut l, 7),
        Err(LeaseError::LeaseNotFound)
    ));
    // The record is deleted in the caller's transaction only.
    let mut txn = f.be.write().unwrap();
    l.revoke(&mut txn, 8).unwrap();
    drop(txn); // aborted
    assert!(f.record(8).is_some());
}

#[test]
fn renew_on_primary_only() {
    let f = backend();
    let t0 = Instant::now();
    let mut l = Lessor::new(1);
    f.grant(&mut l, 1, 10, t0).unwrap();
    assert!(matches!(l.renew(1, t0), Err(LeaseError::NotPrimary)));

    l.promote(t0, Duration::ZERO);
    assert!(matches!(l.renew(2, t0), Err(LeaseError::LeaseNotFound)));
    assert_eq!(l.renew(1, t0 + 6 * S).unwrap(), 10);
    assert_eq!(
        l.time_to_live(1, t0 + 6 * S).unwrap().expires_at,
        Some(t0 + 16 * S)
    );
    assert!(l.expired(t0 + 15 * S, 0).is_empty());
    assert_eq!(l.next_due(), Some(t0 + 16 * S));

    // Past its deadline the lease cannot be renewed: its revoke is due.
    assert!(matches!(
        l.renew(1, t0 + 16 * S),
        Err(LeaseError::LeaseNotFound)
    ));
    assert_eq!(l.expired(t0 + 16 * S, 0), [1]);
}

#[test]
fn promote_extends_and_demote_freezes() {
    let f = backend();
    let t0 = Instant::now();
    let mut l = Lessor::new(1);
    f.grant(&mut l, 1, 10, t0).unwrap();
    f.grant(&mut l, 2, 20, t0).unwrap();
    assert!(!l.is_primary());

    let t1 = t0 + 100 * S;
    l.promote(t1, 2 * S);
    assert!(l.is_primary());
    assert_eq!(l.time_to_live(1, t1).unwrap().expires_at, Some(t1 + 12 * S));
    assert_eq!(l.time_to_live(2, t1).unwrap().remaining_ttl, 22);
    assert!(l
        .expired(t1 + 12 * S - Duration::from_nanos(1), 0)
        .is_empty());
    assert_eq!(l.expired(t1 + 12 * S, 0), [1]);

    l.demote();
    assert!(!l.is_primary());
    assert_eq!(l.next_due(), None);
    let later = t1 + 1000 * S;
    assert!(l.expired(later, 0).is_empty());
    let ttl = l.time_to_live(2, later).unwrap();
    assert_eq!((ttl.expires_at, ttl.remaining_ttl), (None, 20));
    assert!(matches!(l.renew(2, later), Err(LeaseError::NotPrimary)));

    // Promoted again, every lease (including the expired-but-unrevoked one) restarts.
    l.promote(later, S);
    assert_eq!(
        l.time_to_live(1, later).unwrap().expires_at,
        Some(later + 11 * S)
    );
    assert!(l.expired(later + 10 * S, 0).is_empty());
}

#[test]
fn promote_spreads_pile_ups_like_etcd() {
    let f = backend();
    let t0 = Instant::now();
    let mut l = Lessor::new(1);
    let n = 1500;
    let mut txn = f.be.write().unwrap();
    for id in 1..=n {
        l.grant(&mut txn, id, 10, t0).unwrap();
    }
    txn.commit().unwrap();
    l.promote(t0, S);
    let base = t0 + 11 * S;
    let deadlines: Vec<Instant> = (1..=n)
        .map(|id| l.time_to_live(id, t0).unwrap().expires_at.unwrap())
        .collect();
    assert!(deadlines.iter().all(|&d| d >= base));
    // 3/4 of the revoke rate stays in the first second, the rest is pushed into the next.
    assert_eq!(deadlines.iter().filter(|&&d| d < base + S).count(), 750);
    assert_eq!(deadlines.iter().filter(|&&d| d == base).count(), 750);
    assert!(deadlines.iter().all(|&d| d <= base + 2 * S));
    assert_eq!(l.expired(base, 0).len(), 750);
    assert_eq!(l.expired(base + 2 * S, 0).len(), 750);

    // Below the revoke rate nothing is spread.
    let mut small = Lessor::new(1);
    let mut txn = f.be.write().unwrap();
    for id in 1..=999 {
        small.grant(&mut txn, id, 10, t0).unwrap();
    }
    drop(txn);
    small.promote(t0, S);
    assert_eq!(small.expired(base, 0).len(), 999);
}

#[test]
fn expired_respects_limit_and_retry() {
    let f = backend();
    let t0 = Instant::now();
    let mut l = Lessor::new(1).with_retry_after(5 * S);
    l.promote(t0, Duration::ZERO);
    // Deadlines: 5 -> t0+3, 4 -> t0+4, ..., 1 -> t0+7.
    for id in 1..=5 {
        f.grant(&mut l, id, 8 - id, t0).unwrap();
    }
    let t = t0 + 10 * S;
    assert_eq!(l.expired(t, 2), [5, 4]);
    assert_eq!(l.expired(t, 2), [3, 2]);
    assert_eq!(l.expired(t, 2), [1]);
    // Each is reported once until the retry interval passes.
    assert!(l.expired(t, 0).is_empty());
    assert!(l.expired(t + 5 * S - Duration::from_nanos(1), 0).is_empty());

    // Lease 3's revoke went through; the others are reported again.
    f.revoke(&mut l, 3).unwrap();
    assert_eq!(l.next_due(), Some(t + 5 * S));
    assert_eq!(l.expired(t + 5 * S, 0), [1, 2, 4, 5]);
    assert!(l.expired(t + 5 * S, 0).is_empty());
    assert_eq!(l.expired(t + 10 * S, 3), [1, 2, 4]);

    // Not primary: nothing is reported.
    l.demote();
    assert!(l.expired(t + 100 * S, 0).is_empty());
}

#[test]
fn time_to_live_truncates_like_etcd() {
    let f = backend();
    let t0 = Instant::now();
    let mut l = Lessor::new(1);
    l.promote(t0, Duration::ZERO);
    f.grant(&mut l, 1, 10, t0).unwrap();
    let rem = |l: &Lessor, d: Duration| l.time_to_live(1, t0 + d).unwrap().remaining_ttl;
    let ms = Duration::from_millis;
    assert_eq!(rem(&l, Duration::ZERO), 10);
    assert_eq!(rem(&l, ms(1)), 9);
    assert_eq!(rem(&l, ms(500)), 9);
    assert_eq!(rem(&l, ms(9_000)), 1);
    assert_eq!(rem(&l, ms(9_001)), 0);
    assert_eq!(rem(&l, ms(10_000)), 0);
    // Past the deadline, not yet revoked: etcd's int64(negative seconds) truncates toward 0.
    assert_eq!(rem(&l, ms(10_500)), 0);
    assert_eq!(rem(&l, ms(11_500)), -1);
    let ttl = l.time_to_live(1, t0).unwrap();
    assert_eq!((ttl.id, ttl.granted_ttl), (1, 10));
    assert!(l.time_to_live(2, t0).is_none());

    // A lease without a deadline reports its TTL.
    l.demote();
    assert_eq!(rem(&l, ms(11_500)), 10);
}

#[test]
fn recover_round_trips_through_backend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let t0 = Instant::now();
    {
        let be = Backend::open(&path, BackendConfig::default()).unwrap();
        let mut l = Lessor::new(1);
        l.promote(t0, Duration::ZERO);
        let mut txn = be.write().unwrap();
        for (id, ttl) in [(3, 30), (-5, 2), (1, 10), (i64::MAX, 4)] {
            l.grant(&mut txn, id, ttl, t0).unwrap();
        }
        txn.commit().unwrap();
        let mut txn = be.write().unwrap();
        l.revoke(&mut txn, 1).unwrap();
        txn.commit().unwrap();
        be.close().unwrap();
    }
    let be = Backend::open(&path, BackendConfig::default()).unwrap();
    // A minimum TTL raised since the grants applies to the recovered leases.
    let mut l = Lessor::recover(&be.read().unwrap(), 3).unwrap();
    assert_eq!(l.min_ttl(), 3);
    assert_eq!(l.leases(), [-5, 3, i64::MAX]);
    assert!(!l.is_primary());
    let ttl = l.time_to_live(-5, t0).unwrap();
    assert_eq!((ttl.granted_ttl, ttl.expires_at), (3, None));
    assert_eq!(l.time_to_live(3, t0).unwrap().granted_ttl, 30);
    assert_eq!(l.time_to_live(i64::MAX, t0).unwrap().granted_ttl, 4);
    assert!(l.expired(t0 + 1000 * S, 0).is_empty());

    // Replaying attachments, then promoting, restarts the clocks.
    l.attach(3, b"k1").unwrap();
    l.attach(3, b"k0").unwrap();
    assert!(l.attach(1, b"gone").is_err());
    let t1 = t0 + 50 * S;
    l.promote(t1, S);
    assert_eq!(l.expired(t1 + 4 * S, 0), [-5]);
    assert_eq!(l.expired(t1 + 5 * S, 0), [i64::MAX]);
    let mut txn = be.write().unwrap();
    assert_eq!(
        l.revoke(&mut txn, 3).unwrap(),
        [b"k0".to_vec(), b"k1".to_vec()]
    );
    txn.commit().unwrap();

    // Recovery through a write transaction (any Reader) sees the same records.
    let txn = be.write().unwrap();
    let again = Lessor::recover(&txn, 1).unwrap();
    assert_eq!(again.leases(), [-5, i64::MAX]);
    assert_eq!(again.time_to_live(-5, t0).unwrap().granted_ttl, 2);
}

#[test]
fn corrupt_records_are_errors() {
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        (
            "short key",
            vec![0, 1],
            leasepb::Lease::default().encode_to_vec(),
        ),
        ("bad value", 5i64.to_be_bytes().to_vec(), vec![0x08, 0x80]),
        (
            "id mismatch",
            5i64.to_be_bytes().to_vec(),
            leasepb::Lease {
                id: 6,
                ttl: 10,
                remaining_ttl: 0,
            }
            .encode_to_vec(),
        ),
        (
            "id zero",
            0i64.to_be_bytes().to_vec(),
            leasepb::Lease::default().encode_to_vec(),
        ),
        (
            "ttl too large",
            5i64.to_be_bytes().to_vec(),
            leasepb::Lease {
                id: 5,
                ttl: i64::MAX,
                remaining_ttl: 0,
            }
            .encode_to_vec(),
        ),
    ];
    for (name, k, v) in cases {
        let f = backend();
        let mut txn = f.be.write().unwrap();
        // A valid record too, so the bad one is not the only thing read.
        txn.put(
            Bucket::Lease,
            &9i64.to_be_bytes(),
            &leasepb::Lease {
                id: 9,
                ttl: 10,
                remaining_ttl: 0,
            }
            .encode_to_vec(),
        )
        .unwrap();
        txn.put(Bucket::Lease, &k, &v).unwrap();
        txn.commit().unwrap();
        match Lessor::recover(&f.be.read().unwrap(), 1) {
            Err(LeaseError::Corrupt(msg)) => assert!(!msg.is_empty(), "{name}"),
            other => panic!("{name}: expected Corrupt, got {other:?}"),
        }
    }

    // A checkpointed RemainingTTL (written by a member with checkpointing) is accepted and
    // ignored.
    let f = backend();
    let mut txn = f.be.write().unwrap();
    txn.put(
        Bucket::Lease,
        &9i64.to_be_bytes(),
        &leasepb::Lease {
            id: 9,
            ttl: 10,
            remaining_ttl: 4,
        }
        .encode_to_vec(),
    )
    .unwrap();
    txn.commit().unwrap();
    let l = Lessor::recover(&f.be.read().unwrap(), 1).unwrap();
    assert_eq!(l.time_to_live(9, Instant::now()).unwrap().granted_ttl, 10);
}

#[test]
fn leasepb_wire_format_matches_etcd() {
    use api::etcdserverpb::{LeaseTimeToLiveRequest, LeaseTimeToLiveResponse};
    let rec = leasepb::Lease {
        id: 1,
        ttl: 2,
        remaining_ttl: 3,
    };
    // ID = 1, TTL = 2, RemainingTTL = 3, all varints.
    assert_eq!(rec.encode_to_vec(), [0x08, 1, 0x10, 2, 0x18, 3]);
    let req = leasepb::LeaseInternalRequest {
        lease_time_to_live_request: Some(LeaseTimeToLiveRequest { id: 5, keys: true }),
    };
    assert_eq!(req.encode_to_vec(), [0x0a, 4, 0x08, 5, 0x10, 1]);
    let resp = leasepb::LeaseInternalResponse {
        lease_time_to_live_response: Some(LeaseTimeToLiveResponse {
            ttl: 7,
            ..Default::default()
        }),
    };
    assert_eq!(resp.encode_to_vec(), [0x0a, 2, 0x18, 7]);
}

#[test]
fn leases_by_expiry_lists_soonest_first() {
    let f = backend();
    let t0 = Instant::now();
    let mut l = Lessor::new(1);
    f.grant(&mut l, 7, 30, t0).unwrap();
    f.grant(&mut l, 3, 60, t0).unwrap();
    // Not primary: no deadlines, so by ID.
    assert_eq!(l.leases_by_expiry(), [3, 7]);
    l.promote(t0, Duration::ZERO);
    f.grant(&mut l, 9, 20, t0).unwrap();
    f.grant(&mut l, 1, 30, t0).unwrap();
    // 9 (20 s), then 1 and 7 (30 s, by ID), then 3 (60 s).
    assert_eq!(l.leases_by_expiry(), [9, 1, 7, 3]);
    // Renewed at 15 s, it runs to 35 s.
    l.renew(9, t0 + 15 * S).unwrap();
    assert_eq!(l.leases_by_expiry(), [1, 7, 9, 3]);
    assert_eq!(l.leases(), [1, 3, 7, 9]);
}
