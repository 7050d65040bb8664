//! The first bytes of a client connection through the `:authority` filter in front of h2.
//! The checks live in `v3rpc::fuzzing::fuzz_authority`, which that crate's unit tests also run (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    v3rpc::fuzzing::fuzz_authority(data);
});
