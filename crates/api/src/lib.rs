//! The etcd v3 wire protocol as Hearth speaks it: generated message and service types only, no logic.

/// Key-value records and watch events (`mvccpb`).
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}
