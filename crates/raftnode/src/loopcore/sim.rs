//! Three [`Core`]s in one deterministic in-memory simulation, after raft-rs's test network: every member
//! has its own clock, moved only by the test; a round turns every member, performs its effects (persist is
//! a no-op in memory, applying records the entries) and delivers every message sent, in order. No
//! threads, sleeps or wall clock: the outcome of a scenario is the same on every run.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::prelude::{ConfChange, ConfChangeType, ConfState, EntryType, Message};
use raft::storage::MemStorage;
use raft::RawNode;

use super::*;
use crate::proposal::{Payload, Pending, ProposalState};

const TICK: Duration = Duration::from_millis(100);

struct Member {
    core: Core<u64>,
    clock: Instant,
    /// Data of the normal entries applied, in order.
    applied: Vec<Vec<u8>>,
    applied_index: u64,
    /// (reader, read index) for every answered read.
    reads: Vec<(u64, u64)>,
    /// How many readers each read-index answer served.
    answers: Vec<usize>,
    conf: Option<ConfState>,
    stopped: bool,
}

struct Sim {
    members: BTreeMap<u64, Member>,
    net: VecDeque<Message>,
    cut: HashSet<u64>,
}

fn core(id: u64, voters: &[u64]) -> Core<u64> {
    let storage = MemStorage::new_with_conf_state(ConfState::from((voters.to_vec(), vec![])));
    let cfg = raft::Config {
        id,
        election_tick: 10,
        heartbeat_tick: 1,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    };
    let node = RawNode::new(&cfg, storage, &crate::log::logger()).unwrap();
    Core::new(
        node,
        CoreConfig {
            tick: TICK,
            snapshot_count: 10_000,
            snapshot_catchup_entries: 5_000,
            max_reads: 1024,
            first_read_seq: 0,
        },
        0,
    )
}

impl Sim {
    fn new(ids: &[u64]) -> Sim {
        let start = Instant::now();
        let members = ids
            .iter()
            .map(|&id| {
                let m = Member {
                    core: core(id, ids),
                    clock: start,
                    applied: Vec::new(),
                    applied_index: 0,
                    reads: Vec::new(),
                    answers: Vec::new(),
                    conf: None,
                    stopped: false,
                };
                (id, m)
            })
            .collect();
        Sim {
            members,
            net: VecDeque::new(),
            cut: HashSet::new(),
        }
    }

    fn m(&mut self, id: u64) -> &mut Member {
        self.members.get_mut(&id).unwrap()
    }

    /// One round: the clocks of `tick` move by one tick, every running member takes a turn and its
    /// effects are performed, then every message sent is delivered.
    fn round(&mut self, tick: &[u64]) {
        let ids: Vec<u64> = self.members.keys().copied().collect();
        for id in ids {
            let m = self.m(id);
            if m.stopped {
                continue;
            }
            if tick.contains(&id) {
                m.clock += TICK;
            }
            let effects = m.core.turn(m.clock).unwrap();
            self.perform(id, effects);
        }
        while let Some(msg) = self.net.pop_front() {
            if self.cut.contains(&msg.from) || self.cut.contains(&msg.to) {
                continue;
            }
            if let Some(m) = self.members.get_mut(&msg.to) {
                if !m.stopped {
                    let _ = m.core.step(msg);
                }
            }
        }
    }

    fn all(&self) -> Vec<u64> {
        self.members.keys().copied().collect()
    }

    /// Rounds with every clock moving until `f` holds; fails after `max` rounds.
    fn until(&mut self, what: &str, max: usize, f: impl Fn(&Sim) -> bool) {
        let all = self.all();
        for _ in 0..max {
            if f(self) {
                return;
            }
            self.round(&all);
        }
        assert!(f(self), "{what}: not within {max} rounds");
    }

    fn perform(&mut self, id: u64, effects: Vec<Effect<u64>>) {
        let mut queue: VecDeque<Effect<u64>> = effects.into();
        while let Some(e) = queue.pop_front() {
            let m = self.members.get_mut(&id).unwrap();
            let mut more = Vec::new();
            match e {
                Effect::Failpoint(_) | Effect::ReadsRetried(_) | Effect::LeaderChanged(_) => {}
                Effect::Send(msgs) => self.net.extend(msgs),
                Effect::Persist { .. } => {}
                Effect::Apply(entries) => {
                    for e in &entries {
                        if !e.data.is_empty() {
                            m.applied.push(e.data.to_vec());
                        }
                    }
                    m.applied_index = entries.last().map(|e| e.index).unwrap_or(m.applied_index);
                    let index = m.applied_index;
                    m.core.applied(index, Some(index), &mut more);
                }
                Effect::ApplyMembership(e) => {
                    assert_eq!(e.get_entry_type(), EntryType::EntryConfChange);
                    let cc = crate::storage::parse_conf_change(&e).unwrap();
                    let cs = m.core.apply_conf_change(m.clock, e.index, &cc).unwrap();
                    m.conf = Some(cs);
                    m.applied_index = e.index;
                }
                Effect::SnapshotMarker { index, .. } => m.core.snapshot_written(index).unwrap(),
                Effect::ReadIndex { waiters, index } => {
                    m.answers.push(waiters.len());
                    m.reads.extend(waiters.into_iter().map(|w| (w, index)));
                }
                Effect::FailReads { waiters, error } => panic!("reads {waiters:?} failed: {error}"),
                Effect::FailProposal { pending, error } => {
                    panic!("proposal {} failed: {error}", pending.id)
                }
                Effect::Stop => m.stopped = true,
            }
            queue.extend(more);
        }
    }

    fn leader(&self) -> Option<u64> {
        let running: Vec<&Member> = self.members.values().filter(|m| !m.stopped).collect();
        let l = running.first()?.core.leader();
        (l != 0 && running.iter().all(|m| m.core.leader() == l)).then_some(l)
    }

    fn propose(&mut self, on: u64, id: u64, payload: Payload) {
        let mut out = Vec::new();
        let p = Pending {
            id,
            payload,
            state: Arc::new(ProposalState::default()),
        };
        self.m(on).core.propose(p, &mut out);
        self.perform(on, out);
    }

    fn put(&mut self, on: u64, id: u64, data: &str) {
        self.propose(on, id, Payload::Normal(data.as_bytes().to_vec()));
    }
}

/// A fresh cluster where only member 1's clock moves: it campaigns first and wins; then all agree.
fn elected() -> Sim {
    let mut sim = Sim::new(&[1, 2, 3]);
    for _ in 0..100 {
        if sim.leader() == Some(1) {
            break;
        }
        sim.round(&[1]);
    }
    assert_eq!(sim.leader(), Some(1), "member 1 is elected");
    sim
}

#[test]
fn election_step_by_step() {
    let mut sim = Sim::new(&[1, 2, 3]);
    // Nobody's clock moves: nobody campaigns.
    for _ in 0..50 {
        sim.round(&[]);
    }
    assert_eq!(sim.leader(), None);
    let sim = elected();
    for m in sim.members.values() {
        assert_eq!(m.core.raft().term, sim.members[&1].core.raft().term);
    }
    // Cut the leader off: the others elect one among themselves, the old one steps down (CheckQuorum).
    let mut sim = sim;
    sim.cut.insert(1);
    sim.until("a new leader among 2 and 3", 200, |s| {
        let l2 = s.members[&2].core.leader();
        l2 != 0 && l2 != 1 && s.members[&3].core.leader() == l2
    });
    sim.until("the old leader steps down", 200, |s| {
        s.members[&1].core.leader() == 0
    });
}

#[test]
fn replication_and_held_proposals() {
    let mut sim = elected();
    sim.put(1, 1, "a");
    sim.put(2, 2, "b");
    sim.until("replicated", 20, |s| {
        s.members.values().all(|m| m.applied.len() == 2)
    });
    let first = sim.members[&1].applied.clone();
    for m in sim.members.values() {
        assert_eq!(m.applied, first, "same order everywhere");
    }
    // A member that knows no leader holds a proposal, and proposes it once it knows one again.
    sim.cut.insert(3);
    sim.until("3 loses its leader", 200, |s| {
        s.members[&3].core.leader() == 0
    });
    sim.put(3, 3, "held");
    assert_eq!(sim.members[&3].core.waiting.len(), 1);
    sim.cut.clear();
    sim.until("the held proposal is applied everywhere", 300, |s| {
        s.members
            .values()
            .all(|m| m.applied.contains(&b"held".to_vec()))
    });
}

/// [`elected`], with one write applied on every member.
fn elected_with_a_write() -> Sim {
    let mut sim = elected();
    sim.put(1, 1, "a");
    sim.until("applied", 20, |s| {
        s.members.values().all(|m| m.applied.len() == 1)
    });
    sim
}

#[test]
fn read_index_batches_reads_and_answers_after_the_write() {
    let mut sim = elected_with_a_write();
    let commit = sim.members[&1].core.raft().raft_log.committed;
    // Two reads on a follower in one turn share one read-index request.
    let mut out = Vec::new();
    sim.m(2).core.read_index(100, &mut out);
    sim.m(2).core.read_index(101, &mut out);
    assert!(out.is_empty());
    sim.until("answered", 20, |s| s.members[&2].reads.len() == 2);
    assert_eq!(sim.members[&2].answers, [2]);
    for (_, index) in &sim.members[&2].reads {
        assert!(
            *index >= commit,
            "read index {index} before the write's {commit}"
        );
    }
}

#[test]
fn reads_on_every_member_at_once_are_all_answered_without_a_retry() {
    let mut sim = elected_with_a_write();
    // Each member's first read-index request; no clock moves, so none can be sent again.
    for id in sim.all() {
        let mut out = Vec::new();
        sim.m(id).core.read_index(100 + id, &mut out);
        assert!(out.is_empty());
    }
    for _ in 0..10 {
        sim.round(&[]);
    }
    for (id, m) in &sim.members {
        assert_eq!(m.reads.len(), 1, "member {id}'s read is answered");
    }
}

#[test]
fn conf_change_removes_a_member_which_stops_after_its_grace() {
    let mut sim = elected();
    let cc = ConfChange {
        change_type: ConfChangeType::RemoveNode,
        node_id: 3,
        ..Default::default()
    };
    sim.propose(1, 9, Payload::Conf(cc));
    sim.until("applied everywhere", 20, |s| {
        s.members.values().all(|m| m.conf.is_some())
    });
    for m in sim.members.values() {
        let mut voters = m.conf.as_ref().unwrap().voters.clone();
        voters.sort_unstable();
        assert_eq!(voters, [1, 2]);
    }
    // Member 3 keeps going for its grace period (by its own clock), then stops.
    assert!(!sim.members[&3].stopped);
    for _ in 0..(REMOVED_STOP_DELAY.as_millis() / TICK.as_millis()) as usize + 1 {
        sim.round(&[3]);
    }
    assert!(sim.members[&3].stopped);
    // The two others go on committing.
    sim.put(1, 10, "after");
    sim.until("the two commit alone", 20, |s| {
        [1, 2]
            .iter()
            .all(|id| s.members[id].applied.contains(&b"after".to_vec()))
    });
}
