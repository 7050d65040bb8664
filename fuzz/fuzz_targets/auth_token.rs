//! The token a client sends in its request metadata: a simple token, or a JWT checked against a key.
//! The checks live in `auth::fuzzing::fuzz_auth_token`, which that crate's unit tests also run (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    auth::fuzzing::fuzz_auth_token(data);
});
