//! Deterministic apply, as etcd's applier (`server/etcdserver/apply`, `txn`): a committed Raft entry
//! becomes store changes and a response, the same on every member that applies the same entries.
//!
//! * [`applier`]: the [`Applier`] the Raft loop drives entry by entry, with one publication of the
//!   backend transaction per batch of committed entries (committed when read, see
//!   `mvcc::KvStore::flush`); responses reach their proposers through [`wait`].
//! * [`txn`]: etcd's Range/Put/DeleteRange/Txn semantics over `mvcc`, also used for reads.
//! * [`alarm`]: replicated alarms and etcd's capped/corrupt apply rules; [`quota`]: the backend quota
//!   and etcd's cost estimates.
//! * [`auth`]: the auth store shared with the services, the permission gate every entry passes at
//!   apply (etcd's `authApplierV3`) and the Auth entries.
//! * [`lessor`]: the `lease` crate's lessor behind one mutex with an injected clock; [`expiry`]: which
//!   leases have expired and whether this member's lessor is primary.
//!
//! # Invariants
//! * No sockets, no threads, no runtime, no clock of its own: time comes only through the lessor's
//!   injected [`lessor::Clock`].
//! * Everything an entry changes is written in one backend transaction with the entry's consistent
//!   index; an entry at or below the consistent index is never applied again.
//! * What depends only on the entries is the same on every member. One input is local on purpose, as in
//!   etcd: the quota check at apply compares the *local* backend file's size with the quota, so members
//!   whose files differ in size may answer a write near the quota differently (the write is applied
//!   everywhere alike; only the answer and the NOSPACE alarm request differ).
//! * Knows nothing of the Raft loop, the peer transport, gRPC or the server that wires it.

#![forbid(unsafe_code)]

pub mod alarm;
pub mod applier;
pub mod auth;
pub mod expiry;
pub mod lessor;
pub mod metrics;
pub mod quota;
pub mod txn;
pub mod wait;

pub use applier::{Applied, Applier, ApplyFailed, ApplyResult, Space};
