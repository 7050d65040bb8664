//! The first bytes of a client connection through the `:authority` filter in front of h2.
//! The checks live in `authority::fuzz::fuzz_authority`, which that crate's unit tests also run (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    authority::fuzz::fuzz_authority(data);
});
