//! The answer of RPCs that are declared on the wire but not served yet (Maintenance's Downgrade):
//! `Unimplemented`, so clients get a clear status instead of a missing method.

use tonic::Status;

pub(crate) fn unimplemented(service: &str, method: &str) -> Status {
    Status::unimplemented(format!(
        "{service}.{method} is not implemented by this server yet"
    ))
}
