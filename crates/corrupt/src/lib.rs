//! Hearth's corruption checks, after etcd's `etcdserver/corrupt.go` (3.5): members holding the same
//! data at the same revision and compaction have the same KV hash (`mvcc::KeyValueHash`), so a
//! member whose data went wrong (a flipped bit on disk, a bug that applied an entry differently) is
//! found by comparing hashes.
//!
//! * [`CorruptionChecker::initial_check`] (`--experimental-initial-corrupt-check`, 3.6's
//!   `--feature-gates=InitialCorruptCheck=true`): a restarting member, before it serves anything,
//!   asks every peer for the hash at its own revision; if one that has the same compaction has a
//!   different hash, the member refuses to start ("... found data inconsistency with peers").
//! * [`CorruptionChecker::periodic_check`] (`--corrupt-check-time`): the leader hashes at its
//!   revision, asks the followers for theirs at that revision, waits until it has applied
//!   everything committed (a linearizable read), and hashes again. A follower ahead of the leader,
//!   or at the same compaction with another hash, raises the `CORRUPT` alarm.
//! * [`CorruptionChecker::compact_hash_check`] (`--experimental-compact-hash-check-enabled`, 3.6's
//!   `CompactHashCheck` gate, every `--compact-hash-check-time`): the leader compares the hashes of
//!   its recent compactions, newest first, with the followers' hashes of the same compactions, until
//!   one revision is confirmed on every peer.
//!
//! An alarm is raised through Raft like any `AlarmRequest`, so every member then refuses writes
//! (`apply::alarm`). As in etcd 3.5 it names member 0: which of two members differing is corrupted
//! is not known from two hashes. The log line names the peer whose hash differs. (etcd 3.6 names the
//! follower, or with the compaction check the minority against a quorum.)
//!
//! # Shape
//!
//! The checks are etcd's, step for step, over a [`Hasher`]: what the member can do (hash its store,
//! ask peers for their hashes, wait for a linearizable read, raise the alarm), implemented by the
//! server over its store and the peer transport. When the checks run (at start, every period, only
//! on the leader) is the server's business.
//!
//! # Invariants
//!
//! Knows nothing of the store, Raft, the transport or gRPC: hashes come in as values, peers'
//! answers as [`PeerHash`]es. Never raises more than one alarm per periodic check. Logs etcd's lines
//! and fields (`found different hash values from remote peer`, `same compact revision then hashes
//! must match`, ...).

#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};

pub use mvcc::KeyValueHash;

#[cfg(test)]
mod tests;

/// A peer's answer to "your hash at revision r?", as the peer HashKV call returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHashKv {
    /// The member that answered (its response header).
    pub member_id: u64,
    /// Its current revision (its response header).
    pub revision: i64,
    pub hash: u32,
    pub compact_revision: i64,
}

/// Why a peer gave no hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// The peer has not reached the revision.
    FutureRev,
    /// The peer compacted past the revision.
    Compacted,
    /// The peer belongs to another cluster.
    ClusterIdMismatch,
    /// Unreachable, timed out, ...
    Other(String),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::FutureRev => {
                f.write_str("etcdserver: mvcc: required revision is a future revision")
            }
            PeerError::Compacted => {
                f.write_str("etcdserver: mvcc: required revision has been compacted")
            }
            PeerError::ClusterIdMismatch => f.write_str("etcdserver: cluster ID mismatch"),
            PeerError::Other(e) => f.write_str(e),
        }
    }
}

/// One peer's part of a round of hash requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHash {
    pub id: u64,
    /// Its peer URLs.
    pub endpoints: Vec<String>,
    pub resp: Result<PeerHashKv, PeerError>,
}

/// What the checks need of the member (etcd's `Hasher`).
pub trait Hasher: Send + Sync {
    fn member_id(&self) -> u64;
    /// The local hash at `rev` (0: current) and the current revision (`mvcc::KvStore::hash_by_rev`).
    fn hash_by_rev(
        &self,
        rev: i64,
    ) -> impl Future<Output = Result<(KeyValueHash, i64), String>> + Send;
    /// The hashes kept of the last compactions.
    fn hashes(&self) -> Vec<KeyValueHash>;
    /// Every other member's hash at `rev`, one entry per member that has a peer URL.
    fn peer_hash_by_rev(&self, rev: i64) -> impl Future<Output = Vec<PeerHash>> + Send;
    /// Waits until the member has applied everything committed before the call.
    fn linearizable_read_notify(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Raises the `CORRUPT` alarm for `member` through Raft, without waiting for it.
    fn trigger_corrupt_alarm(&self, member: u64);
}

/// Why a member refuses to start (etcd's texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitialCheckError {
    /// The local hash could not be computed.
    #[error("{member:x} failed to fetch hash ({error})")]
    Hash { member: u64, error: String },
    /// A peer at the same compaction has another hash.
    #[error("{member:x} found data inconsistency with peers")]
    Inconsistent { member: u64 },
}

/// etcd's `corruptionChecker`: the three checks over a [`Hasher`]. Shared by the tasks that run
/// them (`&self` everywhere).
pub struct CorruptionChecker<H> {
    hasher: H,
    /// The newest compaction revision confirmed on every peer.
    latest_revision_checked: AtomicI64,
}

fn id(v: u64) -> String {
    format!("{v:x}")
}

impl<H: Hasher> CorruptionChecker<H> {
    pub fn new(hasher: H) -> CorruptionChecker<H> {
        CorruptionChecker {
            hasher,
            latest_revision_checked: AtomicI64::new(0),
        }
    }

    pub fn hasher(&self) -> &H {
        &self.hasher
    }

    /// Compares this member's hash at its revision with its peers' before it serves anything.
    /// Only a peer at the same compaction with another hash is a mismatch; a peer that is behind,
    /// compacted past the revision, unreachable or of another cluster is logged and passed over.
    pub async fn initial_check(
        &self,
        timeout: std::time::Duration,
    ) -> Result<(), InitialCheckError> {
        let me = self.hasher.member_id();
        tracing::info!(
            local_member_id = %id(me),
            timeout = ?timeout,
            "starting initial corruption check"
        );
        let (h, _) = self
            .hasher
            .hash_by_rev(0)
            .await
            .map_err(|error| InitialCheckError::Hash { member: me, error })?;
        let mut mismatch = 0;
        for p in self.hasher.peer_hash_by_rev(h.revision).await {
            match &p.resp {
                Ok(r) if r.hash != h.hash => {
                    let same_compaction = r.compact_revision == h.compact_revision;
                    let msg = if same_compaction {
                        mismatch += 1;
                        "found different hash values from remote peer"
                    } else {
                        "found different compact revision values from remote peer"
                    };
                    tracing::warn!(
                        local_member_id = %id(me),
                        local_member_revision = h.revision,
                        local_member_compact_revision = h.compact_revision,
                        local_member_hash = h.hash,
                        remote_peer_id = %id(r.member_id),
                        remote_peer_endpoints = ?p.endpoints,
                        remote_peer_revision = r.revision,
                        remote_peer_compact_revision = r.compact_revision,
                        remote_peer_hash = r.hash,
                        "{msg}"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    let msg = match e {
                        PeerError::FutureRev => "cannot fetch hash from slow remote peer",
                        PeerError::Compacted => {
                            "cannot fetch hash from remote peer; local member is behind"
                        }
                        PeerError::ClusterIdMismatch => "cluster ID mismatch",
                        PeerError::Other(_) => continue,
                    };
                    tracing::warn!(
                        local_member_id = %id(me),
                        local_member_revision = h.revision,
                        local_member_compact_revision = h.compact_revision,
                        local_member_hash = h.hash,
                        remote_peer_id = %id(p.id),
                        remote_peer_endpoints = ?p.endpoints,
                        error = %e,
                        "{msg}"
                    );
                }
            }
        }
        if mismatch > 0 {
            return Err(InitialCheckError::Inconsistent { member: me });
        }
        tracing::info!(
            local_member_id = %id(me),
            "initial corruption checking passed; no corruption"
        );
        Ok(())
    }

    /// The leader's periodic check. Raises the `CORRUPT` alarm (once) when its own hash changed
    /// while its revision and compaction did not, or a follower is ahead of it (revision or
    /// compaction), or a follower at its compaction has another hash. An error only when this
    /// member's own part failed (the caller logs it and tries again next period).
    pub async fn periodic_check(&self) -> Result<(), String> {
        let me = self.hasher.member_id();
        let (h, _) = self.hasher.hash_by_rev(0).await?;
        let peers = self.hasher.peer_hash_by_rev(h.revision).await;
        self.hasher.linearizable_read_notify().await?;
        let (h2, rev2) = self.hasher.hash_by_rev(0).await?;

        let mut alarmed = false;
        let mut mismatch = |_culprit: u64| {
            if !alarmed {
                alarmed = true;
                // As etcd 3.5: which side is corrupted is not known, so the alarm names no
                // member (0); the log line before names the peer.
                self.hasher.trigger_corrupt_alarm(0);
            }
        };
        if h2.hash != h.hash
            && h2.revision == h.revision
            && h2.compact_revision == h.compact_revision
        {
            tracing::warn!(
                revision_1 = h.revision,
                compact_revision_1 = h.compact_revision,
                hash_1 = h.hash,
                revision_2 = h2.revision,
                compact_revision_2 = h2.compact_revision,
                hash_2 = h2.hash,
                "found hash mismatch"
            );
            mismatch(me);
        }
        let mut checked = 0;
        for p in &peers {
            let Ok(r) = &p.resp else { continue };
            checked += 1;
            if r.revision > rev2 {
                tracing::warn!(
                    leader_revision = rev2,
                    follower_revision = r.revision,
                    follower_peer_id = %id(p.id),
                    "revision from follower must be less than or equal to leader's"
                );
                mismatch(p.id);
            }
            if r.compact_revision > h2.compact_revision {
                tracing::warn!(
                    leader_compact_revision = h2.compact_revision,
                    follower_compact_revision = r.compact_revision,
                    follower_peer_id = %id(p.id),
                    "compact revision from follower must be less than or equal to leader's"
                );
                mismatch(p.id);
            }
            if r.compact_revision == h.compact_revision && r.hash != h.hash {
                tracing::warn!(
                    leader_compact_revision = h2.compact_revision,
                    leader_hash = h.hash,
                    follower_compact_revision = r.compact_revision,
                    follower_hash = r.hash,
                    follower_peer_id = %id(p.id),
                    "same compact revision then hashes must match"
                );
                mismatch(p.id);
            }
        }
        tracing::info!(
            number_of_peers_checked = checked,
            "finished peer corruption check"
        );
        Ok(())
    }

    /// The leader's compaction hash check: for each compaction this member kept a hash of and has
    /// not confirmed yet, newest first, asks the peers for their hash of it. A peer at the same
    /// previous compaction with another hash raises the alarm and ends the check; a revision every
    /// peer confirms ends it too (older ones need no check); otherwise the next older one is tried.
    pub async fn compact_hash_check(&self) {
        let me = self.hasher.member_id();
        tracing::info!(local_member_id = %id(me), "starting compact hash check");
        let hashes = self.unchecked_revisions();
        for (i, hash) in hashes.iter().enumerate() {
            let peers = self.hasher.peer_hash_by_rev(hash.revision).await;
            if peers.is_empty() {
                continue;
            }
            let mut checked = 0;
            for p in &peers {
                let Ok(r) = &p.resp else { continue };
                if r.compact_revision != hash.compact_revision {
                    continue;
                }
                if r.hash != hash.hash {
                    self.hasher.trigger_corrupt_alarm(0);
                    tracing::error!(
                        revision = hash.revision,
                        leader_compact_revision = hash.compact_revision,
                        leader_hash = hash.hash,
                        follower_compact_revision = r.compact_revision,
                        follower_hash = r.hash,
                        follower_peer_id = %id(p.id),
                        "failed compaction hash check"
                    );
                    return;
                }
                checked += 1;
                tracing::info!(
                    revision = hash.revision,
                    peer_id = %id(p.id),
                    "successfully checked hash on follower"
                );
            }
            if checked == peers.len() {
                tracing::info!(
                    number_of_peers_checked = checked,
                    revision = hash.revision,
                    "successfully checked hash on whole cluster"
                );
                self.latest_revision_checked
                    .fetch_max(hash.revision, Ordering::SeqCst);
                tracing::info!(
                    number_of_hashes_checked = i + 1,
                    "finished compaction hash check"
                );
                return;
            }
            tracing::warn!(
                number_of_peers_checked = checked,
                number_of_peers = peers.len(),
                revision = hash.revision,
                "skipped revision in compaction hash check; was not able to check all peers"
            );
        }
        tracing::info!(
            number_of_hashes_checked = hashes.len(),
            "finished compaction hash check"
        );
    }

    /// The kept compaction hashes newer than the last one confirmed, newest first.
    fn unchecked_revisions(&self) -> Vec<KeyValueHash> {
        let last = self.latest_revision_checked.load(Ordering::SeqCst);
        let mut hashes = self.hasher.hashes();
        hashes.sort_by_key(|h| std::cmp::Reverse(h.revision));
        hashes.retain(|h| h.revision > last);
        hashes
    }
}
