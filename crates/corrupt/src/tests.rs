//! The checks against a scripted member: its hashes, its peers' answers, the alarms it raises.

use std::collections::VecDeque;
use std::sync::Mutex;

use futures::executor::block_on;

use super::*;

const ME: u64 = 0xa;

fn kvh(hash: u32, compact_revision: i64, revision: i64) -> KeyValueHash {
    KeyValueHash {
        hash,
        compact_revision,
        revision,
    }
}

fn answer(id: u64, hash: u32, compact_revision: i64, revision: i64) -> PeerHash {
    PeerHash {
        id,
        endpoints: vec![format!("http://peer-{id}")],
        resp: Ok(PeerHashKv {
            member_id: id,
            revision,
            hash,
            compact_revision,
        }),
    }
}

fn failure(id: u64, e: PeerError) -> PeerHash {
    PeerHash {
        id,
        endpoints: vec![format!("http://peer-{id}")],
        resp: Err(e),
    }
}

#[derive(Default)]
struct Fake {
    /// Successive answers of `hash_by_rev(0)` (the last one repeats).
    local: Mutex<VecDeque<Result<(KeyValueHash, i64), String>>>,
    kept: Vec<KeyValueHash>,
    /// The peers' answers, by revision asked.
    peers: Vec<(i64, Vec<PeerHash>)>,
    read_fails: bool,
    asked: Mutex<Vec<i64>>,
    alarms: Mutex<Vec<u64>>,
}

impl Fake {
    fn with_local(hashes: &[(KeyValueHash, i64)]) -> Fake {
        Fake {
            local: Mutex::new(hashes.iter().map(|h| Ok(*h)).collect()),
            ..Fake::default()
        }
    }

    fn peers(mut self, rev: i64, answers: Vec<PeerHash>) -> Fake {
        self.peers.push((rev, answers));
        self
    }
}

impl Hasher for Fake {
    fn member_id(&self) -> u64 {
        ME
    }

    async fn hash_by_rev(&self, rev: i64) -> Result<(KeyValueHash, i64), String> {
        assert_eq!(rev, 0);
        let mut l = self.local.lock().unwrap();
        if l.len() > 1 {
            l.pop_front().unwrap()
        } else {
            l.front().cloned().unwrap()
        }
    }

    fn hashes(&self) -> Vec<KeyValueHash> {
        self.kept.clone()
    }

    async fn peer_hash_by_rev(&self, rev: i64) -> Vec<PeerHash> {
        self.asked.lock().unwrap().push(rev);
        self.peers
            .iter()
            .find(|(r, _)| *r == rev)
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    }

    async fn linearizable_read_notify(&self) -> Result<(), String> {
        if self.read_fails {
            Err("etcdserver: request timed out".into())
        } else {
            Ok(())
        }
    }

    fn trigger_corrupt_alarm(&self, member: u64) {
        self.alarms.lock().unwrap().push(member);
    }
}

fn checker(f: Fake) -> CorruptionChecker<Fake> {
    CorruptionChecker::new(f)
}

fn alarms_of(c: &CorruptionChecker<Fake>) -> Vec<u64> {
    c.hasher().alarms.lock().unwrap().clone()
}

fn asked(c: &CorruptionChecker<Fake>) -> Vec<i64> {
    std::mem::take(&mut *c.hasher().asked.lock().unwrap())
}

const T: std::time::Duration = std::time::Duration::from_secs(7);

#[test]
fn initial_check_fails_only_on_a_peer_at_the_same_compaction_with_another_hash() {
    let local = (kvh(111, 3, 20), 20);
    let ok = checker(Fake::with_local(&[local]).peers(
        20,
        vec![
            answer(1, 111, 3, 25),
            // Another compaction: its hash cannot be compared.
            answer(2, 999, 10, 25),
            failure(3, PeerError::FutureRev),
            failure(4, PeerError::Compacted),
            failure(5, PeerError::ClusterIdMismatch),
            failure(6, PeerError::Other("connection refused".into())),
        ],
    ));
    assert_eq!(block_on(ok.initial_check(T)), Ok(()));
    assert_eq!(asked(&ok), [20], "asked at its own revision");

    let bad = checker(
        Fake::with_local(&[local]).peers(20, vec![answer(1, 111, 3, 25), answer(2, 112, 3, 25)]),
    );
    let err = block_on(bad.initial_check(T)).unwrap_err();
    assert_eq!(err, InitialCheckError::Inconsistent { member: ME });
    assert_eq!(err.to_string(), "a found data inconsistency with peers");
    assert!(
        alarms_of(&bad).is_empty(),
        "the initial check raises no alarm"
    );

    let broken = checker(Fake {
        local: Mutex::new([Err("backend: io error".to_string())].into()),
        ..Fake::default()
    });
    assert_eq!(
        block_on(broken.initial_check(T)).unwrap_err().to_string(),
        "a failed to fetch hash (backend: io error)"
    );
}

#[test]
fn periodic_check_passes_when_followers_agree_or_lag() {
    let c = checker(
        Fake::with_local(&[(kvh(50, 3, 20), 20), (kvh(60, 3, 22), 22)]).peers(
            20,
            vec![
                answer(1, 50, 3, 21),
                // Not compacted at 3 yet, and behind: not comparable.
                answer(2, 77, -1, 19),
                failure(3, PeerError::Other("timeout".into())),
            ],
        ),
    );
    block_on(c.periodic_check()).unwrap();
    assert_eq!(asked(&c), [20]);
    assert!(alarms_of(&c).is_empty());
}

#[test]
fn periodic_check_raises_one_alarm_for_member_zero_on_a_differing_follower() {
    let c = checker(
        Fake::with_local(&[(kvh(50, 3, 20), 20), (kvh(60, 3, 22), 22)])
            .peers(20, vec![answer(1, 51, 3, 21), answer(2, 52, 3, 21)]),
    );
    block_on(c.periodic_check()).unwrap();
    assert_eq!(
        alarms_of(&c),
        [0],
        "once, for no member in particular (3.5)"
    );
}

#[test]
fn periodic_check_raises_the_alarm_for_a_follower_ahead_of_the_leader() {
    let ahead =
        checker(Fake::with_local(&[(kvh(50, 3, 20), 20)]).peers(20, vec![answer(1, 50, 3, 21)]));
    block_on(ahead.periodic_check()).unwrap();
    assert_eq!(alarms_of(&ahead), [0], "revision 21 > the leader's 20");

    let compacted_ahead =
        checker(Fake::with_local(&[(kvh(50, 3, 20), 20)]).peers(20, vec![answer(1, 80, 5, 20)]));
    block_on(compacted_ahead.periodic_check()).unwrap();
    assert_eq!(alarms_of(&compacted_ahead), [0]);
}

#[test]
fn periodic_check_raises_the_alarm_when_the_leaders_own_hash_moves() {
    let c = checker(Fake::with_local(&[
        (kvh(50, 3, 20), 20),
        (kvh(51, 3, 20), 20),
    ]));
    block_on(c.periodic_check()).unwrap();
    assert_eq!(alarms_of(&c), [0]);
}

#[test]
fn periodic_check_stops_when_the_leader_cannot_read() {
    let mut f = Fake::with_local(&[(kvh(50, 3, 20), 20)]).peers(20, vec![answer(1, 51, 3, 20)]);
    f.read_fails = true;
    let c = checker(f);
    assert_eq!(
        block_on(c.periodic_check()),
        Err("etcdserver: request timed out".into())
    );
    assert!(alarms_of(&c).is_empty());
}

#[test]
fn compact_hash_check_confirms_the_newest_revision_every_peer_has() {
    let mut f = Fake::default()
        .peers(
            9,
            vec![
                answer(1, 90, 7, 12),
                failure(2, PeerError::Other("unreachable".into())),
            ],
        )
        .peers(7, vec![answer(1, 70, 5, 12), answer(2, 70, 5, 12)]);
    f.kept = vec![kvh(50, -1, 5), kvh(70, 5, 7), kvh(90, 7, 9)];
    let c = checker(f);
    block_on(c.compact_hash_check());
    assert_eq!(
        asked(&c),
        [9, 7],
        "newest first, until one is confirmed everywhere"
    );
    assert!(alarms_of(&c).is_empty());
    // 7 is confirmed: only newer ones are asked next time.
    block_on(c.compact_hash_check());
    assert_eq!(asked(&c), [9]);
}

#[test]
fn compact_hash_check_raises_the_alarm_on_a_differing_peer() {
    let mut f = Fake::default().peers(
        9,
        vec![
            // Restarted since: it answers a fresh hash against another compaction.
            answer(1, 11, 9, 12),
            answer(2, 91, 7, 12),
        ],
    );
    f.kept = vec![kvh(70, 5, 7), kvh(90, 7, 9)];
    let c = checker(f);
    block_on(c.compact_hash_check());
    assert_eq!(alarms_of(&c), [0]);
    assert_eq!(asked(&c), [9], "the check ends at the mismatch");
}
