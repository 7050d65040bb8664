//! What a Raft message from a peer must look like before raft-rs sees it.
//!
//! raft-rs trusts its peers: a message that no correct member sends can trip one of its internal
//! assertions (`fatal!`, an index out of bounds, an arithmetic overflow) and take the whole member down:
//! a heartbeat committing past the end of the log, an append that conflicts with committed entries or
//! whose entries do not follow its index, a proposal without entries, a read-index request without its
//! context entry. A peer may be buggy, from another version, or not a member at all, so every message is
//! checked twice and dropped (logged and counted, never stepped) if it is malformed:
//!
//! * [`check_peer_message`], on receipt, without any Raft state: the type is one peers exchange (never a
//!   local one), it is addressed to this member and comes from the peer that sent it, the term is set
//!   where raft-rs sets it, an append's entries follow its index in order with sensible terms, and no
//!   index overflows. [`check_snapshot_message`] is the same for the `MsgSnapshot` of a snapshot transfer.
//! * the Raft loop's admission, just before `step`, against the node's log (`raftnode::admit`): what
//!   depends on it (commit indexes within the log, appends that do not rewrite committed entries,
//!   responses that do not acknowledge entries the leader never had).
//!
//! The checks reject only what a correct member never sends; everything else is left to raft-rs, whose
//! job it is to handle stale, duplicated and reordered messages.

use protobuf::Message as _;
use raft::prelude::{ConfState, Message, MessageType};

/// Why a message was dropped.
pub type Rejection = String;

/// The message types members send each other (raft-rs forwards proposals and read-index requests to
/// the leader as messages too). Snapshots travel on their own call and are checked by
/// [`check_snapshot_message`].
fn is_peer_type(t: MessageType) -> bool {
    use MessageType::*;
    matches!(
        t,
        MsgPropose
            | MsgAppend
            | MsgAppendResponse
            | MsgRequestVote
            | MsgRequestVoteResponse
            | MsgHeartbeat
            | MsgHeartbeatResponse
            | MsgTransferLeader
            | MsgTimeoutNow
            | MsgReadIndex
            | MsgReadIndexResp
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse
    )
}

fn addressing(local: u64, from: u64, m: &Message) -> Result<(), Rejection> {
    if m.to != local {
        return Err(format!("addressed to {:x}, not to this member", m.to));
    }
    if m.from != from || from == 0 || from == local {
        return Err(format!("claims to be from {:x}", m.from));
    }
    Ok(())
}

/// The stateless checks of a message received on the message stream from member `from`.
pub fn check_peer_message(local: u64, from: u64, m: &Message) -> Result<(), Rejection> {
    let t = m.get_msg_type();
    if t == MessageType::MsgSnapshot {
        return Err("a snapshot must come on the snapshot call".into());
    }
    if !is_peer_type(t) {
        return Err(format!("{t:?} is not a message peers send"));
    }
    addressing(local, from, m)?;
    // raft-rs leaves the term unset only on the two kinds of message it forwards to the leader.
    if m.term == 0 && !matches!(t, MessageType::MsgPropose | MessageType::MsgReadIndex) {
        return Err(format!("{t:?} without a term"));
    }
    match t {
        MessageType::MsgPropose if m.entries.is_empty() => Err("a proposal without entries".into()),
        MessageType::MsgReadIndex | MessageType::MsgReadIndexResp if m.entries.len() != 1 => Err(
            format!("{t:?} with {} entries instead of one", m.entries.len()),
        ),
        MessageType::MsgAppend => check_append(m),
        MessageType::MsgAppendResponse if m.reject && m.reject_hint > m.index => Err(format!(
            "a rejection hinting at {} beyond the rejected index {}",
            m.reject_hint, m.index
        )),
        _ => Ok(()),
    }
}

/// Decodes and checks the messages of one batch received on the message stream from member
/// `from`, each on its own: a message that does not decode or fails [`check_peer_message`] is
/// dropped without affecting the others.
pub fn decode_batch(local: u64, from: u64, batch: &[Vec<u8>]) -> Vec<Result<Message, Rejection>> {
    batch
        .iter()
        .map(|b| {
            let m = Message::parse_from_bytes(b).map_err(|e| format!("undecodable: {e}"))?;
            check_peer_message(local, from, &m)?;
            Ok(m)
        })
        .collect()
}

/// An append's entries follow its index one by one, with terms that never go down, from the term at
/// the index up to the message's term.
fn check_append(m: &Message) -> Result<(), Rejection> {
    if m.log_term > m.term {
        return Err(format!(
            "an append whose previous entry's term {} is after its own term {}",
            m.log_term, m.term
        ));
    }
    let Some(last) = m.index.checked_add(m.entries.len() as u64) else {
        return Err(format!("an append at index {} overflows", m.index));
    };
    let mut term = m.log_term;
    for (i, e) in m.entries.iter().enumerate() {
        if e.index != m.index + 1 + i as u64 {
            return Err(format!(
                "an append at index {} whose entry {i} has index {}",
                m.index, e.index
            ));
        }
        if e.term < term || e.term > m.term {
            return Err(format!(
                "an append of term {} with an entry of term {} at index {}",
                m.term, e.term, e.index
            ));
        }
        term = e.term;
    }
    debug_assert!(last >= m.index);
    Ok(())
}

/// The configuration a snapshot carries: one raft-rs can restore (some voter, nobody both voter and
/// learner, no joint configuration, which Hearth never enters) and that includes this member.
fn check_conf_state(local: u64, cs: &ConfState) -> Result<(), Rejection> {
    if cs.voters.is_empty() {
        return Err("a snapshot whose configuration has no voter".into());
    }
    if !cs.voters_outgoing.is_empty() || !cs.learners_next.is_empty() || cs.auto_leave {
        return Err("a snapshot in a joint configuration".into());
    }
    let mut ids: Vec<u64> = cs.voters.iter().chain(&cs.learners).copied().collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    if ids.len() != n || ids.contains(&0) {
        return Err(format!("a snapshot with a malformed configuration {cs:?}"));
    }
    if !ids.contains(&local) {
        return Err("a snapshot whose configuration does not include this member".into());
    }
    Ok(())
}

/// The stateless checks of the `MsgSnapshot` that opens a snapshot transfer from member `from`.
pub fn check_snapshot_message(local: u64, from: u64, m: &Message) -> Result<(), Rejection> {
    if m.get_msg_type() != MessageType::MsgSnapshot {
        return Err(format!(
            "a snapshot transfer opened by {:?}",
            m.get_msg_type()
        ));
    }
    addressing(local, from, m)?;
    if m.term == 0 {
        return Err("a snapshot without a term".into());
    }
    let md = m.get_snapshot().get_metadata();
    if md.index == 0 || md.term == 0 || md.term > m.term {
        return Err(format!(
            "a snapshot at index {} of term {} sent in term {}",
            md.index, md.term, m.term
        ));
    }
    if !m.get_snapshot().data.is_empty() || !m.entries.is_empty() {
        return Err("a snapshot message carrying data".into());
    }
    check_conf_state(local, md.get_conf_state())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::Entry;

    fn msg(t: MessageType) -> Message {
        let mut m = Message {
            to: 1,
            from: 2,
            term: 3,
            ..Default::default()
        };
        m.set_msg_type(t);
        m
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn addressing_types_and_terms() {
        assert!(check_peer_message(1, 2, &msg(MessageType::MsgHeartbeat)).is_ok());
        for local in [
            MessageType::MsgHup,
            MessageType::MsgBeat,
            MessageType::MsgUnreachable,
        ] {
            assert!(check_peer_message(1, 2, &msg(local)).is_err());
        }
        assert!(check_peer_message(1, 2, &msg(MessageType::MsgSnapshot)).is_err());
        assert!(check_peer_message(9, 2, &msg(MessageType::MsgHeartbeat)).is_err());
        assert!(check_peer_message(1, 5, &msg(MessageType::MsgHeartbeat)).is_err());
        let mut m = msg(MessageType::MsgHeartbeat);
        m.from = 1;
        assert!(check_peer_message(1, 1, &m).is_err());
        m = msg(MessageType::MsgHeartbeat);
        m.term = 0;
        assert!(check_peer_message(1, 2, &m).is_err());
        let mut p = msg(MessageType::MsgPropose);
        p.term = 0;
        assert!(check_peer_message(1, 2, &p).is_err(), "no entries");
        p.entries.push(entry(0, 0));
        assert!(check_peer_message(1, 2, &p).is_ok());
        let mut r = msg(MessageType::MsgReadIndex);
        assert!(check_peer_message(1, 2, &r).is_err());
        r.entries.push(entry(0, 0));
        assert!(check_peer_message(1, 2, &r).is_ok());
    }

    #[test]
    fn appends_must_follow_their_index() {
        let mut m = msg(MessageType::MsgAppend);
        m.index = 10;
        m.log_term = 2;
        m.entries = vec![entry(11, 2), entry(12, 3)].into();
        assert!(check_peer_message(1, 2, &m).is_ok());
        m.entries = vec![entry(11, 2), entry(13, 3)].into();
        assert!(check_peer_message(1, 2, &m).is_err(), "a gap");
        m.entries = vec![entry(5, 2)].into();
        assert!(check_peer_message(1, 2, &m).is_err(), "behind its index");
        m.entries = vec![entry(11, 3), entry(12, 2)].into();
        assert!(check_peer_message(1, 2, &m).is_err(), "terms going down");
        m.entries = vec![entry(11, 4)].into();
        assert!(
            check_peer_message(1, 2, &m).is_err(),
            "a term after the message's"
        );
        m.entries = vec![entry(11, 1)].into();
        assert!(
            check_peer_message(1, 2, &m).is_err(),
            "before the previous term"
        );
        m.entries = vec![entry(0, 3)].into();
        m.index = u64::MAX;
        assert!(check_peer_message(1, 2, &m).is_err(), "overflow");
        let mut r = msg(MessageType::MsgAppendResponse);
        r.reject = true;
        r.index = 5;
        r.reject_hint = u64::MAX;
        assert!(check_peer_message(1, 2, &r).is_err());
    }

    #[test]
    fn snapshot_messages() {
        let mut m = msg(MessageType::MsgSnapshot);
        {
            let md = m.mut_snapshot().mut_metadata();
            md.index = 100;
            md.term = 3;
            md.mut_conf_state().voters = vec![1, 2, 3];
        }
        assert!(check_snapshot_message(1, 2, &m).is_ok());
        assert!(
            check_snapshot_message(4, 2, &m).is_err(),
            "addressed elsewhere"
        );
        let mut bad = m.clone();
        bad.mut_snapshot().mut_metadata().mut_conf_state().voters = vec![2, 3];
        assert!(check_snapshot_message(1, 2, &bad).is_err(), "not in it");
        bad = m.clone();
        bad.mut_snapshot().mut_metadata().mut_conf_state().learners = vec![3];
        assert!(
            check_snapshot_message(1, 2, &bad).is_err(),
            "voter and learner"
        );
        bad = m.clone();
        bad.mut_snapshot()
            .mut_metadata()
            .mut_conf_state()
            .voters_outgoing = vec![1];
        assert!(check_snapshot_message(1, 2, &bad).is_err(), "joint");
        bad = m.clone();
        bad.mut_snapshot().mut_metadata().term = 4;
        assert!(check_snapshot_message(1, 2, &bad).is_err(), "a future term");
        bad = m.clone();
        bad.mut_snapshot().mut_metadata().index = 0;
        assert!(check_snapshot_message(1, 2, &bad).is_err());
        bad = m.clone();
        bad.mut_snapshot().data = vec![1].into();
        assert!(check_snapshot_message(1, 2, &bad).is_err());
        bad = m;
        bad.set_msg_type(MessageType::MsgAppend);
        assert!(check_snapshot_message(1, 2, &bad).is_err());
    }
}
