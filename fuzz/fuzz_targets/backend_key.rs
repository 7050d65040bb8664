//! Records of the backend's `key` bucket, rebuilt into the key index as at start-up.
//! The checks live in `mvcc::fuzzing::fuzz_backend_key`, which that crate's unit tests also run (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mvcc::fuzzing::fuzz_backend_key(data);
});
