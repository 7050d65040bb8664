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
                // The rejection looks back for the last entry of a term at most the message's, and
                // raft-rs stops the process if it reaches an entry whose term it cannot read. The
                // walk ends within the log if its first entry qualifies; else it goes on to the
                // entry before, readable only until the log is first compacted at run time
                // (raft-rs's `compact` drops entries, not the record of the one before them).
                let first = log.first_index();
                let ends_in_log = |i: u64| log.term(i).is_ok_and(|t| t <= m.log_term);
                if ends_in_log(first) || ends_in_log(first.saturating_sub(1)) {
                    Ok(())
                } else {
                    Err(format!(
                        "an append whose previous term {} precedes this member's whole log",
                        m.log_term
                    ))
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

#[cfg(test)]
mod tests {
    use raft::prelude::{ConfState, Entry, HardState};

    use super::*;

    /// A follower in term 2 whose log held entries 1 to 20 (committed to 15) and was compacted
    /// to start at 10 while it ran.
    fn compacted_follower() -> Raft<MemStorage> {
        let storage = MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        let entries: Vec<Entry> = (1..=20)
            .map(|index| Entry {
                index,
                term: 2,
                ..Default::default()
            })
            .collect();
        storage.wl().append(&entries).unwrap();
        storage.wl().set_hardstate(HardState {
            term: 2,
            commit: 15,
            ..Default::default()
        });
        storage.wl().compact(10).unwrap();
        let cfg = raft::Config {
            id: 1,
            applied: 15,
            ..Default::default()
        };
        Raft::new(&cfg, storage, &crate::log::logger()).unwrap()
    }

    fn append(index: u64, log_term: u64) -> Message {
        Message {
            msg_type: MessageType::MsgAppend,
            from: 2,
            to: 1,
            term: 2,
            index,
            log_term,
            ..Default::default()
        }
    }

    #[test]
    fn an_append_beyond_a_compacted_log_is_rejected_by_raft_not_dropped() {
        let mut r = compacted_follower();
        // A new leader probing at its own last index, past this member's: raft-rs must answer it
        // with a rejection hinting at this member's last index, or the leader never backs up.
        let mut m = append(25, 2);
        admit(&r, &mut m).unwrap();
        r.step(m).unwrap();
        let reply = r.msgs.pop().expect("an answer");
        assert_eq!(reply.get_msg_type(), MessageType::MsgAppendResponse);
        assert!(reply.reject);
        assert_eq!(reply.reject_hint, 20);
    }

    #[test]
    fn an_append_older_than_the_whole_log_is_dropped() {
        // Every entry here is of a later term than the message's previous one: raft-rs would
        // look back past the log's start, which no correct leader makes it do.
        let r = compacted_follower();
        assert!(admit(&r, &mut append(25, 1)).is_err());
    }
}
