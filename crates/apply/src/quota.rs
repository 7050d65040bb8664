//! The backend space quota, as etcd computes it: a write is admitted while the backend file's
//! size plus an estimate of the write's cost stays under `--quota-backend-bytes` (2 GiB when 0).
//! The KV service checks it before proposing (and the server raises the NOSPACE alarm through Raft
//! when it fails); the applier checks it again, since the file may have grown in between. The size
//! is the local file's size on disk (`backend::Backend::size`): see the crate doc for what that means
//! for determinism.

use api::etcdserverpb::{request_op, InternalRaftRequest, PutRequest, TxnRequest};

/// etcd's default `--quota-backend-bytes` when the flag is 0: 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// etcd's estimate of a key's metadata in the backend.
pub const KV_OVERHEAD: u64 = 256;
/// etcd's estimate of a lease's size in the backend.
pub const LEASE_OVERHEAD: u64 = 64;
/// Above this etcd warns that the quota may degrade performance.
pub const MAX_QUOTA_BYTES: u64 = 8 * 1024 * 1024 * 1024;

pub fn cost_put(p: &PutRequest) -> u64 {
    KV_OVERHEAD + p.key.len() as u64 + p.value.len() as u64
}

/// The larger of the two branches' puts (top level only, as etcd counts).
pub fn cost_txn(t: &TxnRequest) -> u64 {
    let branch = |ops: &[api::etcdserverpb::RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(request_op::Request::RequestPut(p)) => cost_put(p),
                _ => 0,
            })
            .sum()
    };
    branch(&t.success).max(branch(&t.failure))
}

/// Whether the quota applies to an entry at all (puts, txns and lease grants).
pub fn limited(req: &InternalRaftRequest) -> bool {
    req.put.is_some() || req.txn.is_some() || req.lease_grant.is_some()
}

/// The cost of an entry that the quota limits (0 for everything it does not).
pub fn cost(req: &InternalRaftRequest) -> u64 {
    if let Some(p) = &req.put {
        return cost_put(p);
    }
    if let Some(t) = &req.txn {
        return cost_txn(t);
    }
    if req.lease_grant.is_some() {
        return LEASE_OVERHEAD;
    }
    0
}

/// The quota in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub max_bytes: u64,
}

impl Quota {
    /// The quota for `--quota-backend-bytes` (0: etcd's default), with etcd's start-up messages.
    pub fn from_flag(flag: u64) -> Quota {
        let max_bytes = if flag == 0 {
            tracing::info!(
                quota_size_bytes = DEFAULT_QUOTA_BACKEND_BYTES,
                "enabled backend quota with default value"
            );
            DEFAULT_QUOTA_BACKEND_BYTES
        } else {
            if flag > MAX_QUOTA_BYTES {
                tracing::warn!(
                    quota_size_bytes = flag,
                    quota_maximum_size_bytes = MAX_QUOTA_BYTES,
                    "quota exceeds the maximum value"
                );
            }
            tracing::info!(quota_size_bytes = flag, "enabled backend quota");
            flag
        };
        Quota { max_bytes }
    }

    /// Whether a write of `cost` fits with the backend at `size` bytes. As in etcd, a request
    /// the quota limits (put, txn, lease grant) is refused once the file reached the quota even
    /// if it adds nothing.
    pub fn available(&self, size: u64, cost: u64) -> bool {
        size.saturating_add(cost) < self.max_bytes
    }
}
