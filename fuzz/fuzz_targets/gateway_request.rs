//! The body of a JSON gateway request: cut into JSON values and decoded into the route's request.
//! The checks live in `gateway::fuzzing::fuzz_gateway_request`, which that crate's unit tests also run (docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gateway::fuzzing::fuzz_gateway_request(data);
});
