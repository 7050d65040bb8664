//! Raft messages from a peer: a message-stream batch, or the message that opens a snapshot transfer.
//! The checks live in `rafthttp::fuzzing::fuzz_peer_message`, which that crate's unit tests also run (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rafthttp::fuzzing::fuzz_peer_message(data);
});
