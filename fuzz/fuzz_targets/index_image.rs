//! A key index image as a clean stop writes it, decoded as the next start does.
//! The checks live in `mvcc::fuzzing::fuzz_index_image`, which that crate's unit tests also run (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mvcc::fuzzing::fuzz_index_image(data);
});
