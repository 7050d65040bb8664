//! The gRPC services, as etcd's `v3rpc` package: they validate requests, hand them to the server and map
//! errors to etcd's statuses. They hold no state of their own.

pub mod kv;
pub mod maintenance;
pub mod unimplemented;
pub mod validate;
