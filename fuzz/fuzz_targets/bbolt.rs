//! A bbolt file (an etcd snapshot to restore): opened, checked and walked.
//! The checks live in `bbolt::fuzzing::fuzz_bbolt`, which that crate's unit tests also run (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bbolt::fuzzing::fuzz_bbolt(data);
});
