//! The decisions of etcd's lessor loop, without its loop: whether this member's lessor is primary, and
//! which leases are due for revocation. The server's driver task (`server::lessor_driver`) calls [`check`]
//! on a timer and proposes the revocations; here nothing waits, sleeps or reads a clock (the lessor's
//! injected clock says what time it is).
//!
//! The lessor is primary exactly when this member is the Raft leader *and* has applied the empty entry it
//! appended at the start of its term (etcd promotes when it applies that entry). Then it is promoted
//! (every deadline restarts at TTL plus the election timeout, so a leader change or restart expires nothing
//! early); otherwise it is demoted (no deadlines; a follower with a slow clock can expire nothing).

use crate::lessor::Leases;

/// What the driver knows about Raft leadership at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub member_id: u64,
    pub leader: u64,
    pub term: u64,
    /// The term of the newest empty entry applied here.
    pub noop_term: u64,
}

impl Leadership {
    /// Leader, and it has applied an entry of its own term.
    pub fn primary(&self) -> bool {
        self.leader == self.member_id && self.term != 0 && self.noop_term == self.term
    }
}

/// One round: promotes or demotes the lessor to match `leadership`, and returns the expired
/// leases to revoke (at most `limit`; none unless primary).
pub fn check(leases: &Leases, leadership: Leadership, limit: usize) -> Vec<i64> {
    let primary = leadership.primary();
    if primary != leases.is_primary() {
        if primary {
            tracing::info!(term = leadership.term, "lessor promoted");
            leases.promote();
        } else {
            tracing::info!(term = leadership.term, "lessor demoted");
            leases.demote();
        }
    }
    if primary {
        leases.expired(limit)
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
