//! The core's decisions with time driven explicitly: no threads, sleeps or wall clock (one `Instant`
//! read at the start, then only arithmetic on it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::prelude::ConfState;
use raft::storage::MemStorage;
use raft::RawNode;

use super::*;
use crate::proposal::ProposalState;

#[test]
fn reads_share_a_request_and_are_asked_again_when_unanswered() {
    let t0 = Instant::now();
    let mut r: Reads<u32> = Reads::new(7, 0, 3);
    r.push(1).unwrap();
    r.push(2).unwrap();
    let first = r.flush(t0);
    assert_eq!(first.contexts.len(), 1, "one request for both reads");
    assert_eq!(first.retried, 0);
    // Nothing new, not old yet: nothing to send.
    assert_eq!(r.flush(t0 + READ_INDEX_RETRY / 2), ReadRequests::default());
    r.push(3).unwrap();
    assert_eq!(r.push(4), Err(4), "bounded");
    let second = r.flush(t0 + READ_INDEX_RETRY);
    assert_eq!(second.retried, 1, "the first request again");
    assert_eq!(second.contexts[0], first.contexts[0]);
    assert_eq!(second.contexts.len(), 2);
    assert_eq!(r.answered(&first.contexts[0]), [1, 2]);
    assert!(r.answered(&first.contexts[0]).is_empty(), "answered once");
    assert!(r.answered(b"garbage").is_empty());
    // Another member's request with the sequence number of this one's unanswered request (2) is
    // not this one's: it answers none of this member's reads.
    let mut other: Reads<u32> = Reads::new(8, 0, 3);
    other.push(9).unwrap();
    other.flush(t0);
    other.push(10).unwrap();
    let theirs = other.flush(t0);
    assert_eq!(theirs.contexts.len(), 1);
    assert_ne!(theirs.contexts[0], second.contexts[1]);
    assert!(r.answered(&theirs.contexts[0]).is_empty());
    assert_eq!(r.take_inflight(), [3]);
    assert!(r.is_empty());
}

#[test]
fn a_restarted_member_does_not_take_its_earlier_contexts_for_its_own() {
    let t0 = Instant::now();
    let mut before: Reads<u32> = Reads::new(7, 1_000, 3);
    before.push(1).unwrap();
    let old = before.flush(t0);
    // The member restarts; its new run counts from further on and its read is still unanswered
    // when the leader answers the old run's request.
    let mut after: Reads<u32> = Reads::new(7, 2_000, 3);
    after.push(2).unwrap();
    let new = after.flush(t0);
    assert_ne!(old.contexts, new.contexts);
    assert!(after.answered(&old.contexts[0]).is_empty());
    assert_eq!(after.answered(&new.contexts[0]), [2]);
}

fn lone(snapshot_count: u64) -> Core<u32> {
    lone_with_learners(snapshot_count, vec![])
}

/// Member 1 as the only voter, beside `learners`.
fn lone_with_learners(snapshot_count: u64, learners: Vec<u64>) -> Core<u32> {
    let storage = MemStorage::new_with_conf_state(ConfState::from((vec![1], learners)));
    let cfg = raft::Config {
        id: 1,
        election_tick: 10,
        heartbeat_tick: 1,
        ..Default::default()
    };
    let node = RawNode::new(&cfg, storage, &crate::log::logger()).unwrap();
    Core::new(
        node,
        CoreConfig {
            tick: Duration::from_millis(100),
            snapshot_count,
            snapshot_catchup_entries: 2,
            max_reads: 16,
            first_read_seq: 0,
        },
        0,
    )
}

fn pending(id: u64) -> Pending {
    Pending {
        id,
        payload: Payload::Normal(vec![1]),
        state: Arc::new(ProposalState::default()),
    }
}

/// Applies what a turn hands out, as a runtime would, and returns the last index applied.
fn perform(core: &mut Core<u32>, effects: Vec<Effect<u32>>, durable: bool) -> Vec<Effect<u32>> {
    let mut rest = Vec::new();
    for e in effects {
        match e {
            Effect::Apply(entries) => {
                let last = entries.last().map(|e| e.index).unwrap_or(0);
                core.applied(last, durable.then_some(last), &mut rest);
            }
            other => rest.push(other),
        }
    }
    rest
}

#[test]
fn a_lone_voter_leads_at_once_and_held_proposals_go_in() {
    let t0 = Instant::now();
    let mut core = lone(100);
    let mut out = Vec::new();
    // No leader yet: the proposal is held, not failed.
    core.propose(pending(7), &mut out);
    assert!(out.is_empty());
    assert_eq!(core.waiting.len(), 1);
    // The first turn campaigns (a lone voter needs no timeout) and proposes what was held.
    let effects = core.turn(t0).unwrap();
    assert_eq!(core.leader(), 1);
    assert!(core.waiting.is_empty());
    let mut effects = perform(&mut core, effects, false);
    let mut t = t0;
    for _ in 0..5 {
        t += Duration::from_millis(100);
        let turn = core.turn(t).unwrap();
        effects.extend(perform(&mut core, turn, false));
    }
    assert!(effects.iter().any(|e| matches!(e, Effect::Persist { entries, .. } if entries.iter().any(|e| e.data.as_ref() == [1]))));
    assert_eq!(core.raft().raft_log.applied, core.raft().raft_log.committed);
}

#[test]
fn a_snapshot_marker_is_due_every_snapshot_count_durable_entries() {
    let t0 = Instant::now();
    let mut core = lone(3);
    let mut markers = Vec::new();
    let mut t = t0;
    for i in 0..8 {
        let mut out = Vec::new();
        if core.leader() != 0 {
            core.propose(pending(i), &mut out);
        }
        out.extend(core.turn(t).unwrap());
        for e in perform(&mut core, out, true) {
            if let Effect::SnapshotMarker { index, .. } = e {
                markers.push(index);
                core.snapshot_written(index).unwrap();
            }
        }
        t += Duration::from_millis(100);
    }
    assert!(!markers.is_empty());
    for w in markers.windows(2) {
        assert!(w[1] >= w[0] + 3, "{markers:?}");
    }
    assert!(markers[0] >= 3);
    // The in-memory log keeps `snapshot_catchup_entries` before the last marker.
    let last = *markers.last().unwrap();
    assert_eq!(core.node.store().first_index().unwrap(), last - 2);
}

#[test]
fn a_removed_member_stops_after_its_grace_period_by_the_given_clock() {
    let t0 = Instant::now();
    let mut core = lone(100);
    let _ = core.turn(t0).unwrap();
    let cc = ConfChange {
        change_type: raft::prelude::ConfChangeType::AddNode,
        node_id: 2,
        ..Default::default()
    };
    core.apply_conf_change(t0, 0, &cc).unwrap();
    let cc = ConfChange {
        change_type: raft::prelude::ConfChangeType::RemoveNode,
        node_id: 1,
        ..Default::default()
    };
    core.apply_conf_change(t0, 0, &cc).unwrap();
    let just_before = t0 + REMOVED_STOP_DELAY - Duration::from_millis(1);
    assert!(!core
        .turn(just_before)
        .unwrap()
        .iter()
        .any(|e| matches!(e, Effect::Stop)));
    assert!(core
        .turn(t0 + REMOVED_STOP_DELAY)
        .unwrap()
        .iter()
        .any(|e| matches!(e, Effect::Stop)));
}

#[test]
fn reads_past_the_bound_and_at_shutdown_are_failed() {
    let mut core = lone(100);
    let mut out = Vec::new();
    for i in 0..17 {
        core.read_index(i, &mut out);
    }
    match out.as_slice() {
        [Effect::FailReads { waiters, error }] => {
            assert_eq!(waiters, &[16]);
            assert_eq!(*error, ServerError::TooManyRequests);
        }
        _ => panic!("one refusal"),
    }
    let mut out = Vec::new();
    core.propose(pending(1), &mut out);
    core.shut_down(&mut out);
    assert!(
        matches!(&out[0], Effect::FailReads { waiters, error: ServerError::Stopped } if waiters.len() == 16)
    );
    assert!(matches!(
        &out[1],
        Effect::FailProposal {
            error: ServerError::Stopped,
            ..
        }
    ));
}

#[test]
fn a_joining_member_replaying_the_others_additions_does_not_stop() {
    let t0 = Instant::now();
    // Member 4 joins: its log starts with the changes that added 1, 2 and 3, which it applies before
    // the one that adds it.
    let storage = MemStorage::new();
    let cfg = raft::Config {
        id: 4,
        election_tick: 10,
        heartbeat_tick: 1,
        ..Default::default()
    };
    let node = RawNode::new(&cfg, storage, &crate::log::logger()).unwrap();
    let mut core: Core<u32> = Core::new(
        node,
        CoreConfig {
            tick: Duration::from_millis(100),
            snapshot_count: 100,
            snapshot_catchup_entries: 2,
            max_reads: 16,
            first_read_seq: 0,
        },
        0,
    );
    for id in [1, 2, 3] {
        let cc = ConfChange {
            change_type: raft::prelude::ConfChangeType::AddNode,
            node_id: id,
            ..Default::default()
        };
        core.apply_conf_change(t0, 0, &cc).unwrap();
    }
    let later = t0 + REMOVED_STOP_DELAY * 2;
    assert!(!core
        .turn(later)
        .unwrap()
        .iter()
        .any(|e| matches!(e, Effect::Stop)));
}

#[test]
fn a_ready_is_handed_out_in_the_loops_order_with_its_failpoints() {
    let t0 = Instant::now();
    let mut core = lone(100);
    let _ = core.turn(t0).unwrap();
    let mut out = Vec::new();
    core.propose(pending(1), &mut out);
    assert!(out.is_empty());
    let effects = core.turn(t0).unwrap();
    let at = |want: &dyn Fn(&Effect<u32>) -> bool| {
        effects
            .iter()
            .position(want)
            .expect("every step of the Ready is there")
    };
    let leader_send = at(&|e| matches!(e, Effect::Failpoint("raftBeforeLeaderSend")));
    let persist = at(
        &|e| matches!(e, Effect::Persist { entries, .. } if entries.iter().any(|e| e.data.as_ref() == [1])),
    );
    let follower_send = at(&|e| matches!(e, Effect::Failpoint("raftBeforeFollowerSend")));
    let advance = at(&|e| matches!(e, Effect::Failpoint("raftBeforeAdvance")));
    assert!(leader_send < persist && persist < follower_send && follower_send < advance);
}

#[test]
fn a_lone_voter_sends_nothing_of_its_new_term_before_the_term_is_persisted() {
    let mut core = lone_with_learners(100, vec![2]);
    let mut out = Vec::new();
    core.propose(pending(7), &mut out);
    // One turn: the campaign, the win and the appends to the learner all come out of one Ready.
    let effects = core.turn(Instant::now()).unwrap();
    assert_eq!(core.leader(), 1);
    let term = core.raft().term;
    let persisted = effects
        .iter()
        .position(|e| matches!(e, Effect::Persist { hard_state, .. } if hard_state.term == term))
        .expect("the new term is persisted");
    let first_send = effects
        .iter()
        .position(
            |e| matches!(e, Effect::Send(msgs) if msgs.iter().any(|m| m.to == 2 && m.term == term)),
        )
        .expect("the learner is sent the new term's entries");
    assert!(persisted < first_send);
}

/// Proposes `n` writes on a lone leader and applies them; returns the last index applied and the
/// messages sent.
fn write(core: &mut Core<u32>, t: Instant, n: u64) -> (u64, Vec<Message>) {
    let mut out = Vec::new();
    for i in 0..n {
        core.propose(pending(i), &mut out);
    }
    out.extend(core.turn(t).unwrap());
    let mut sent = Vec::new();
    for e in perform(core, out, false) {
        if let Effect::Send(msgs) = e {
            sent.extend(msgs);
        }
    }
    (core.raft().raft_log.applied, sent)
}

/// Member 1 leading alone, with learner 2 so far behind that the compacted log cannot catch it up:
/// raft-rs has sent it a snapshot, which the runtime has not reported yet.
fn leading_a_snapshot_transfer(t: Instant) -> Core<u32> {
    let mut core = lone_with_learners(100, vec![2]);
    let (last, _) = write(&mut core, t, 5);
    assert_eq!(core.leader(), 1);
    core.snapshot_written(last).unwrap();
    assert_eq!(core.store().first_index().unwrap(), last - 2);
    // The learner answers the leader's probe: it holds none of the log.
    let mut m = Message::default();
    m.set_msg_type(raft::prelude::MessageType::MsgAppendResponse);
    m.from = 2;
    m.to = 1;
    m.term = core.raft().term;
    m.index = core.raft().prs().get(2).unwrap().next_idx - 1;
    m.reject = true;
    core.step(m).unwrap();
    let (_, sent) = write(&mut core, t, 0);
    assert!(sent
        .iter()
        .any(|m| m.to == 2 && m.get_msg_type() == raft::prelude::MessageType::MsgSnapshot));
    assert_eq!(
        core.raft().prs().get(2).unwrap().state,
        raft::ProgressState::Snapshot
    );
    core
}

#[test]
fn a_leader_keeps_its_log_while_a_snapshot_is_sent_and_compacts_at_the_next_marker_after() {
    for ok in [true, false] {
        let t = Instant::now();
        let mut core = leading_a_snapshot_transfer(t);
        let first = core.store().first_index().unwrap();
        // Markers while the transfer runs trim nothing: the learner will resume after the
        // snapshot's index, which is older than them.
        for _ in 0..2 {
            let (last, _) = write(&mut core, t, 5);
            core.snapshot_written(last).unwrap();
            assert_eq!(core.store().first_index().unwrap(), first, "ok: {ok}");
            assert_eq!(core.snapshot_index, last, "the marker itself counts");
        }
        // Delivered or failed, the transfer is over: the next marker compacts.
        core.snapshot_sent(2, ok);
        let (last, _) = write(&mut core, t, 5);
        core.snapshot_written(last).unwrap();
        assert_eq!(core.store().first_index().unwrap(), last - 2, "ok: {ok}");
    }
}

#[test]
fn a_leader_that_steps_down_during_a_snapshot_transfer_compacts_at_its_next_marker() {
    let t = Instant::now();
    let mut core = leading_a_snapshot_transfer(t);
    let (last, _) = write(&mut core, t, 5);
    // A higher term: this member follows, and the transfer it started is no longer its concern.
    let mut m = Message::default();
    m.set_msg_type(raft::prelude::MessageType::MsgHeartbeat);
    m.from = 2;
    m.to = 1;
    m.term = core.raft().term + 1;
    core.step(m).unwrap();
    assert_ne!(core.leader(), 1);
    core.snapshot_written(last).unwrap();
    assert_eq!(core.store().first_index().unwrap(), last - 2);
}
