//! Proposals on their way into Raft, and the ones waiting for a leader.
//!
//! Like etcd, a member that knows no leader holds proposals back until one is elected rather than failing
//! them, so a write that arrives during an election succeeds once it is over. The caller gives up after its
//! request timeout; what happens then depends on whether Raft ever got the proposal, which
//! [`ProposalState`] settles without a race: either the Raft loop claims the proposal (and proposes it) or
//! the caller abandons it (and the Raft loop drops it), never both. An abandoned proposal was never in the
//! log, and the caller gets etcd's `context deadline exceeded`; a claimed one may still commit, and the
//! caller gets one of etcd's `request timed out` errors.
//!
//! The queue of waiting proposals is bounded; past the bound a proposal is refused with
//! `etcdserver: too many requests`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use raft::prelude::ConfChange;

/// The most proposals held back while there is no leader.
pub const MAX_WAITING: usize = 16 * 1024;

const QUEUED: u8 = 0;
const PROPOSED: u8 = 1;
const ABANDONED: u8 = 2;

#[derive(Debug, Default)]
pub struct ProposalState(AtomicU8);

impl ProposalState {
    pub fn new() -> Arc<ProposalState> {
        Arc::new(ProposalState::default())
    }

    /// The Raft loop takes the proposal; false if the caller already gave up.
    pub fn claim(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, PROPOSED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The caller gives up; false if the Raft loop already proposed it.
    pub fn abandon(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub fn is_abandoned(&self) -> bool {
        self.0.load(Ordering::Acquire) == ABANDONED
    }
}

/// What is being proposed.
#[derive(Debug)]
pub enum Payload {
    /// An encoded `InternalRaftRequest`.
    Normal(Vec<u8>),
    /// A membership change (its `id` is the request id).
    Conf(ConfChange),
    /// An encoded `hearthraftpb.MemberUpdate`, proposed as a normal entry with `MEMBER_UPDATE_CONTEXT`.
    MemberUpdate(Vec<u8>),
}

impl From<membership::ChangeEntry> for Payload {
    fn from(e: membership::ChangeEntry) -> Payload {
        match e {
            membership::ChangeEntry::Conf(cc) => Payload::Conf(cc),
            membership::ChangeEntry::MemberUpdate(data) => Payload::MemberUpdate(data),
        }
    }
}

#[derive(Debug)]
pub struct Pending {
    pub id: u64,
    pub payload: Payload,
    pub state: Arc<ProposalState>,
}

/// Proposals waiting for a leader, oldest first.
#[derive(Debug, Default)]
pub struct Waiting {
    queue: VecDeque<Pending>,
}

impl Waiting {
    /// Queues `p`, or gives it back if the queue is full (after dropping the abandoned ones).
    pub fn push(&mut self, p: Pending) -> Result<(), Pending> {
        if self.queue.len() >= MAX_WAITING {
            self.purge();
            if self.queue.len() >= MAX_WAITING {
                return Err(p);
            }
        }
        self.queue.push_back(p);
        Ok(())
    }

    /// Forgets proposals whose callers gave up.
    pub fn purge(&mut self) {
        self.queue.retain(|p| !p.state.is_abandoned());
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Everything, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = Pending> + '_ {
        self.queue.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(id: u64) -> Pending {
        Pending {
            id,
            payload: Payload::Normal(vec![]),
            state: ProposalState::new(),
        }
    }

    #[test]
    fn claim_and_abandon_exclude_each_other() {
        let s = ProposalState::new();
        assert!(s.claim());
        assert!(!s.abandon());
        let s = ProposalState::new();
        assert!(s.abandon());
        assert!(!s.claim());
        assert!(s.is_abandoned());
    }

    #[test]
    fn waiting_is_bounded_and_keeps_order() {
        let mut w = Waiting::default();
        for i in 0..MAX_WAITING as u64 {
            w.push(pending(i)).unwrap();
        }
        assert!(w.push(pending(u64::MAX)).is_err());
        // Abandoned proposals make room.
        let abandoned = pending(7);
        abandoned.state.abandon();
        w.queue[3] = abandoned;
        w.push(pending(u64::MAX)).unwrap();
        assert_eq!(w.len(), MAX_WAITING);
        let ids: Vec<u64> = w.drain().map(|p| p.id).take(5).collect();
        assert_eq!(ids, [0, 1, 2, 4, 5]);
        assert!(w.is_empty());
    }
}
