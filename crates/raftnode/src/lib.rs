//! The Raft node, as etcd's `etcdserver/raft.go` and `storage`: the loop that owns raft-rs's `RawNode`
//! and the WAL and hands committed entries to an apply thread (`node`), performing what its I/O-free core
//! decides (`loopcore`: held proposals, read-index batching, snapshot cadence, a `Ready`'s order, a
//! lone voter's campaign, a removed member's stop), its bounded command queue
//! (`queue`), the Raft log rebuilt from the WAL or bootstrapped for a new member (`storage`), proposals
//! held back while there is no leader (`proposal`), Raft snapshots sent from and installed into the
//! backend (`node::snapshot`), and the admission of peer messages against the log (`admit`).
//!
//! # Invariants
//! * The only place that does Raft I/O: the WAL is written here and nowhere else, and an entry is
//!   fsynced before raft-rs counts it as persisted; messages raft-rs marks as persisted leave only after
//!   that fsync.
//! * Reaches peers only through [`rafthttp::RaftTransport`]; is reached only through its command queue
//!   ([`Handle`]).
//! * The membership, Raft's configuration and the consistent index are written in one backend
//!   transaction; entries at or below the backend's consistent index are never applied twice.
//! * Knows nothing of gRPC, the client services or the server that wires it.

// Two `unsafe` calls into the C library, which have no safe wrapper: a thread's scheduling policy
// (`sched`) and returning the heap's free pages (`heap`).
#![deny(unsafe_code)]

mod admit;
pub mod heap;
mod heartbeat;
mod log;
pub mod loopcore;
pub mod metrics;
mod node;
mod proposal;
mod queue;
pub mod sched;
mod storage;

pub use node::{
    BackendSnapshots, ClusterParts, Command, ConfResult, Described, NodeConfig, RaftNode,
    RaftStatus, APPLY_QUEUE, MAX_APPLY_GAP, SNAPSHOT_CATCHUP_ENTRIES,
};
pub use proposal::{Payload, ProposalState};
pub use queue::{Commands, Handle, COMMAND_OVERHEAD, QUEUE_BYTES};
pub use storage::{open_log, open_log_with, Applied, Bootstrap, LogOptions, RecoveredLog, WalMeta};

/// Why the Raft loop stopped, or the log could not be opened. Any of them is fatal for the member.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("wal: {0}")]
    Wal(#[from] wal::WalError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("backend: {0}")]
    Backend(#[from] backend::BackendError),
    #[error("corrupt raft state in WAL: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Apply(#[from] apply::applier::ApplyFailed),
    #[error("{}", rafthttp::REMOVED_TEXT)]
    Removed,
}
