//! The segments of a write-ahead log, read back as at start-up; and a segment file name.
//! The checks live in `wal::fuzzing::fuzz_wal`, which that crate's unit tests also run (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wal::fuzzing::fuzz_wal(data);
});
