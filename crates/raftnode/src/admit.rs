//! The checks of a peer's Raft message that need the node's log, made in the Raft loop just before the
//! message is stepped (the stateless ones were made on receipt, `rafthttp::validate`): raft-rs trusts
//! its peers and stops the process on some inputs a correct member never sends.

use raft::prelude::{Message, MessageType};
use raft::storage::MemStorage;
use raft::{Raft, StateRole};

/// Why a message was dropped.
pub type Rejection = String;

/// The checks that need the node's log, made in the Raft loop just before `m` is stepped. May lower a
/// heartbeat's commit index to the end of this member's log (which is what a correct leader sends).
pub fn admit(r: &Raft<MemStorage>, m: &mut Message) -> Result<(), Rejection> {
    // raft-rs only answers a message of an older term; what is in it does not matter.
    if m.term != 0 && m.term < r.term {
        return Ok(());
    }
    let log = &r.raft_log;
    match m.get_msg_type() {
        MessageType::MsgHeartbeat if m.commit > log.last_index() => {
            tracing::warn!(
                remote_peer_id = format!("{:x}", m.from),
                commit = m.commit,
                last_index = log.last_index(),
                "a heartbeat commits beyond this member's log; only its log is committed"
            );
            m.commit = log.last_index();
            Ok(())
        }
        MessageType::MsgAppend if m.index >= log.committed => {
            if log.match_term(m.index, m.log_term) {
                // Appended entries may replace uncommitted ones, never committed ones.
                match m
                    .entries
                    .iter()
                    .find(|e| e.index <= log.committed && !log.match_term(e.index, e.term))
                {
                    Some(e) => Err(format!(
                        "an append whose entry {} of term {} conflicts with a committed entry",
                        e.index, e.term
                    )),
                    None => Ok(()),
                }
            } else {
                // The rejection looks for the last entry of a term at most the message's; the log must
                // have one.
                let first = log.first_index().saturating_sub(1);
                match log.term(first) {
                    Ok(t) if t <= m.log_term => Ok(()),
                    _ => Err(format!(
                        "an append whose previous term {} precedes this member's whole log",
                        m.log_term
                    )),
                }
            }
        }
        MessageType::MsgAppendResponse
            if r.state == StateRole::Leader && m.index > log.last_index() =>
        {
            Err(format!(
                "an append response for index {} beyond the leader's log ({})",
                m.index,
                log.last_index()
            ))
        }
        _ => Ok(()),
    }
}
