//! The entry of the `peer_message` fuzz target (`fuzz/`, `docs/fuzzing.md`), also run for a bounded
//! number of iterations by this crate's tests: bytes from a peer, as a message batch of the stream
//! and as the message that opens a snapshot transfer, through the decoding and the checks of
//! `validate`.
//!
//! Besides not panicking, what is accepted must be what the checks promise raft-rs: addressed to
//! this member from the sending peer, a type peers exchange, an append's entries in order, and the
//! message must survive re-encoding unchanged (what is stepped is what was sent).

use api::hearthraftpb::MessageBatch;
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};

use crate::validate::{check_peer_message, check_snapshot_message, decode_batch};

/// The receiving member and the claimed sender, from the first byte: the sender is sometimes 0
/// or the receiver itself, which no correct peer is.
fn ids(data: &[u8]) -> (u64, u64, &[u8]) {
    match data.split_first() {
        Some((&b, rest)) => (1 + u64::from(b % 3), u64::from(b / 3 % 4), rest),
        None => (1, 2, data),
    }
}

/// The fuzz entry: the first byte picks the ids (see `ids`), the rest is a peer's bytes.
pub fn fuzz_peer_message(data: &[u8]) {
    let (local, from, rest) = ids(data);
    if let Ok(batch) = MessageBatch::decode(rest) {
        let checked = decode_batch(local, from, &batch.messages);
        assert_eq!(checked.len(), batch.messages.len());
        for m in checked.iter().flatten() {
            accepted_on_stream(local, from, m);
        }
    }
    if let Ok(m) = Message::parse_from_bytes(rest) {
        if check_peer_message(local, from, &m).is_ok() {
            accepted_on_stream(local, from, &m);
        }
        if check_snapshot_message(local, from, &m).is_ok() {
            accepted_snapshot(local, from, &m);
        }
    }
}

/// Compared by their known fields (what raft-rs reads), in text form: rust-protobuf's `PartialEq`
/// tells an emptied set of unknown fields from none, and it writes unknown fields grouped by wire
/// type in hash order, so neither values nor encodings compare.
fn round_trips(m: &Message) {
    let bytes = m.write_to_bytes().expect("an accepted message encodes");
    let again = Message::parse_from_bytes(&bytes).expect("its encoding decodes");
    assert_eq!(
        protobuf::text_format::print_to_string(&again),
        protobuf::text_format::print_to_string(m),
        "re-encoding changed an accepted message"
    );
}

fn accepted_on_stream(local: u64, from: u64, m: &Message) {
    assert_eq!(m.to, local);
    assert_eq!(m.from, from);
    assert!(from != 0 && from != local);
    let t = m.get_msg_type();
    assert!(
        !matches!(
            t,
            MessageType::MsgHup
                | MessageType::MsgBeat
                | MessageType::MsgUnreachable
                | MessageType::MsgSnapStatus
                | MessageType::MsgCheckQuorum
                | MessageType::MsgSnapshot
        ),
        "{t:?} accepted from a peer"
    );
    if t == MessageType::MsgAppend {
        let mut term = m.log_term;
        for (i, e) in m.entries.iter().enumerate() {
            let want = m.index.checked_add(1 + i as u64);
            assert_eq!(Some(e.index), want, "an append's entries out of order");
            assert!(term <= e.term && e.term <= m.term);
            term = e.term;
        }
    }
    round_trips(m);
}

fn accepted_snapshot(local: u64, from: u64, m: &Message) {
    assert_eq!(m.get_msg_type(), MessageType::MsgSnapshot);
    assert_eq!((m.to, m.from), (local, from));
    let md = m.get_snapshot().get_metadata();
    assert!(md.index > 0 && md.term > 0 && md.term <= m.term);
    let cs = md.get_conf_state();
    assert!(cs.voters.contains(&local) || cs.learners.contains(&local));
    round_trips(m);
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::{Entry, Snapshot};

    /// The id byte for receiver 1 and sender 2.
    const ONE_FROM_TWO: u8 = 6;

    fn msg(t: MessageType, term: u64) -> Message {
        let mut m = Message {
            to: 1,
            from: 2,
            term,
            ..Default::default()
        };
        m.set_msg_type(t);
        m
    }

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    /// One valid message of every kind a peer sends.
    fn valid_messages() -> Vec<Message> {
        use MessageType::*;
        let mut out = Vec::new();
        let mut app = msg(MsgAppend, 5);
        (app.index, app.log_term, app.commit) = (10, 4, 9);
        app.entries = vec![entry(11, 4, b"put a"), entry(12, 5, b"put b")].into();
        out.push(app);
        let mut resp = msg(MsgAppendResponse, 5);
        (resp.index, resp.reject, resp.reject_hint) = (12, true, 7);
        out.push(resp);
        for t in [
            MsgRequestVote,
            MsgRequestPreVote,
            MsgRequestVoteResponse,
            MsgRequestPreVoteResponse,
            MsgHeartbeat,
            MsgHeartbeatResponse,
            MsgTimeoutNow,
            MsgTransferLeader,
        ] {
            let mut m = msg(t, 7);
            (m.index, m.log_term, m.commit) = (30, 6, 29);
            m.context = b"ctx".to_vec().into();
            out.push(m);
        }
        let mut prop = msg(MsgPropose, 0);
        prop.entries = vec![entry(0, 0, b"proposal")].into();
        out.push(prop);
        let mut ri = msg(MsgReadIndex, 0);
        ri.entries = vec![entry(0, 0, b"request-id")].into();
        out.push(ri);
        let mut rr = msg(MsgReadIndexResp, 3);
        rr.index = 44;
        rr.entries = vec![entry(0, 0, b"request-id")].into();
        out.push(rr);
        out
    }

    fn snapshot_message() -> Message {
        let mut m = msg(MessageType::MsgSnapshot, 9);
        let mut s = Snapshot::default();
        s.mut_metadata().index = 1000;
        s.mut_metadata().term = 8;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        s.mut_metadata().mut_conf_state().learners = vec![4];
        m.set_snapshot(s);
        m
    }

    fn with_ids(bytes: Vec<u8>) -> Vec<u8> {
        let mut v = vec![ONE_FROM_TWO];
        v.extend(bytes);
        v
    }

    #[test]
    fn valid_messages_are_accepted_unchanged() {
        let msgs = valid_messages();
        let raw: Vec<Vec<u8>> = msgs.iter().map(|m| m.write_to_bytes().unwrap()).collect();
        for (m, r) in msgs.iter().zip(decode_batch(1, 2, &raw)) {
            assert_eq!(&r.unwrap(), m);
        }
        let snap = snapshot_message();
        let decoded = Message::parse_from_bytes(&snap.write_to_bytes().unwrap()).unwrap();
        assert!(check_snapshot_message(1, 2, &decoded).is_ok());
        // The same messages from someone else, or to someone else, are refused.
        for r in decode_batch(1, 3, &raw)
            .into_iter()
            .chain(decode_batch(2, 2, &raw))
        {
            assert!(r.is_err());
        }
    }

    #[test]
    fn bounded_fuzz_of_peer_messages() {
        let msgs = valid_messages();
        let raw: Vec<Vec<u8>> = msgs.iter().map(|m| m.write_to_bytes().unwrap()).collect();
        let mut seeds: Vec<Vec<u8>> = raw.iter().cloned().map(with_ids).collect();
        seeds.push(with_ids(snapshot_message().write_to_bytes().unwrap()));
        for chunk in raw.chunks(3) {
            let batch = MessageBatch {
                messages: chunk.to_vec(),
            };
            seeds.push(with_ids(batch.encode_to_vec()));
        }
        fuzzcorpus::run(0x7065_6572, &seeds, 5000, fuzz_peer_message);
    }
}
