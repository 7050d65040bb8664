//! The driver's decisions with a manual clock and made-up leadership.

use std::time::Duration;

use super::*;
use crate::lessor::tests::Member;

const S: Duration = Duration::from_secs(1);
const ME: u64 = 0xa;

fn led(term: u64, noop_term: u64) -> Leadership {
    Leadership {
        member_id: ME,
        leader: ME,
        term,
        noop_term,
    }
}

fn followed(term: u64) -> Leadership {
    Leadership {
        member_id: ME,
        leader: 0xb,
        term,
        noop_term: term,
    }
}

#[test]
fn primary_only_once_the_leader_applied_an_entry_of_its_term() {
    assert!(
        !led(2, 1).primary(),
        "leader that has not applied its empty entry yet"
    );
    assert!(led(2, 2).primary());
    assert!(!followed(2).primary());
    assert!(!led(0, 0).primary(), "no term yet");
    let none = Leadership {
        leader: 0,
        ..led(2, 2)
    };
    assert!(!none.primary());
}

#[test]
fn promotes_and_demotes_with_leadership() {
    let m = Member::new();
    assert!(check(&m.leases, led(2, 1), 10).is_empty());
    assert!(!m.leases.is_primary());
    check(&m.leases, led(2, 2), 10);
    assert!(m.leases.is_primary());
    assert!(*m.leases.subscribe().borrow());
    // Another member took over at a later term.
    check(&m.leases, followed(3), 10);
    assert!(!m.leases.is_primary());
    // Re-elected: not primary until its new empty entry is applied.
    check(&m.leases, led(4, 2), 10);
    assert!(!m.leases.is_primary());
    check(&m.leases, led(4, 4), 10);
    assert!(m.leases.is_primary());
}

#[test]
fn expired_leases_are_reported_on_the_primary_only_within_the_limit() {
    let mut m = Member::new();
    for id in 1..=5 {
        m.grant(id, 10).unwrap();
    }
    m.grant(6, 60).unwrap();
    // A follower never reports, however late it is.
    m.clock.advance(1000 * S);
    assert!(check(&m.leases, followed(2), 10).is_empty());

    // Promotion extends every lease by the election timeout (1 s here): nothing is due at TTL.
    assert!(check(&m.leases, led(2, 2), 10).is_empty());
    m.clock.advance(10 * S);
    assert!(check(&m.leases, led(2, 2), 10).is_empty());
    m.clock.advance(S);
    assert_eq!(check(&m.leases, led(2, 2), 2), [1, 2]);
    assert_eq!(check(&m.leases, led(2, 2), 2), [3, 4]);
    assert_eq!(check(&m.leases, led(2, 2), 2), [5]);
    // Reported leases whose revoke has not been applied come back after the retry interval.
    assert!(check(&m.leases, led(2, 2), 10).is_empty());
    m.revoke(1).unwrap();
    m.revoke(2).unwrap();
    m.clock.advance(7 * S);
    assert_eq!(check(&m.leases, led(2, 2), 10), [3, 4, 5]);
    assert_eq!(m.leases.leases(), [3, 4, 5, 6]);
}

#[test]
fn a_new_leader_restarts_every_deadline() {
    let mut m = Member::new();
    m.grant(1, 10).unwrap();
    check(&m.leases, led(2, 2), 10);
    m.clock.advance(9 * S);
    // Leadership moves away just before the lease is due, and comes back later.
    check(&m.leases, followed(3), 10);
    m.clock.advance(30 * S);
    assert!(check(&m.leases, followed(3), 10).is_empty());
    assert!(check(&m.leases, led(4, 4), 10).is_empty());
    m.clock.advance(10 * S);
    assert!(
        check(&m.leases, led(4, 4), 10).is_empty(),
        "a full TTL plus the election timeout from the new promotion"
    );
    m.clock.advance(S);
    assert_eq!(check(&m.leases, led(4, 4), 10), [1]);
}
