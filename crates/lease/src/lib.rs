//! Hearth's lessor: etcd's lease bookkeeping (`server/lease`) as pure logic.
//!
//! A lease is an ID with a time-to-live (TTL, in seconds). Keys written with a lease are
//! *attached* to it; when the lease is revoked, explicitly or because it expired, its keys are
//! deleted. The [`Lessor`] keeps the leases, the key ↔ lease attachments and the expiry
//! deadlines, and writes the lease records to the backend's `lease` bucket.
//!
//! # Invariants
//!
//! * **No clocks, no threads, no I/O of its own.** Every method that needs the time takes
//!   `now: Instant`; the server drives time (and tests do, deterministically). Nothing here
//!   spawns a thread or sleeps.
//! * **Revocation only through the caller.** The lessor never deletes a lease or a key by
//!   itself. [`Lessor::expired`] only *reports* leases past their deadline; the server proposes
//!   a `LeaseRevoke` through Raft and, when it is applied, calls [`Lessor::revoke`] and deletes
//!   the returned keys in the same MVCC write transaction, so every member revokes the same
//!   lease at the same log index and the key deletions form one revision.
//! * **Expiry is decided by the primary only.** The primary is the Raft leader (after it has
//!   applied its first entry of the term: [`Lessor::promote`]). Only the primary has deadlines,
//!   renews leases ([`Lessor::renew`]) and reports expired ones. Everywhere else every lease's
//!   deadline is "never" ([`Lessor::demote`]), so a follower with a slow or skewed clock cannot
//!   expire anything.
//! * **Persistence rides on the caller's transaction.** [`Lessor::grant`] and
//!   [`Lessor::revoke`] write or delete the record in the `backend::WriteTxn` they are given
//!   (the server passes `mvcc::TxnWrite::backend_txn()`), so a lease change commits atomically
//!   with the consistent index of the entry that made it. Records are stored exactly as etcd
//!   stores them: key = lease ID as 8 bytes big-endian, value = encoded `leasepb.Lease`.
//!   Attachments are not persisted: they are rebuilt from the key space after a restart.
//! * **Never panics on a bad record**: [`Lessor::recover`] reports it as
//!   [`LeaseError::Corrupt`].
//!
//! # etcd behaviour kept
//!
//! * Grant: ID 0 is refused (`LeaseNotFound`, as etcd's lessor does: the server picks IDs);
//!   TTL above [`MAX_LEASE_TTL`] → `TtlTooLarge`; a TTL below the minimum is raised to it (see
//!   [`min_lease_ttl`] for etcd's formula); an existing ID → `LeaseExists`. The raised TTL is
//!   what is stored and reported.
//! * A lease granted on the primary expires at `now + ttl`; on any other member it never
//!   expires locally.
//! * Promote: every lease gets the deadline `now + extend + ttl` (etcd passes the election
//!   timeout as `extend`, so no lease expires because the leader changed). With
//!   [`LEASE_REVOKE_RATE`] or more leases, etcd's pile-up spreading is applied as well: the
//!   deadlines are pushed back so that at most 3/4 of the revoke rate (750) fall into any one
//!   second. Deadlines are never moved earlier than `now + extend + ttl`.
//! * Expired leases are reported at most `limit` at a time, earliest deadline first, and each is
//!   reported again only after the retry interval ([`Lessor::with_retry_after`]) if its revoke
//!   has not been applied by then (etcd's `expiredLeaseRetryInterval`).
//! * Time-to-live: the remaining seconds are etcd's `int64(Remaining().Seconds())`, i.e. the
//!   signed remaining time **truncated toward zero** (10 s granted, 0.5 s later → 9; in the last
//!   second → 0; 1.5 s past the deadline but not yet revoked → -1).
//!
//! # Deliberate differences from etcd
//!
//! * **No checkpointing** (`--experimental-enable-lease-checkpoint`, `LeaseCheckpoint`
//!   requests): a new primary restarts every lease at its full TTL (plus `extend`), never at a
//!   checkpointed remainder. Records are written with `RemainingTTL = 0` and a non-zero
//!   `RemainingTTL` read back is ignored.
//! * **Renewing a lease past its deadline** returns `LeaseNotFound` at once and does not refresh
//!   it. etcd's keep-alive instead blocks until the (already reported) revoke is applied
//!   (→ not found) or the member is demoted (→ not primary); a server that wants exactly that
//!   can wait on its own and retry.
//! * A lease that never expires (on a non-primary) reports its granted TTL as the remaining TTL
//!   (etcd forwards time-to-live queries to the leader instead, and a leader whose lease was
//!   demoted mid-query answers `ErrLeaderChanged`; [`TimeToLive::expires_at`] lets the server
//!   do the same).
//! * [`Lessor::leases`] is sorted by ID; [`Lessor::leases_by_expiry`] gives etcd's listing
//!   order (soonest deadline first), with ties, which etcd leaves unordered, broken by ID.
//!
//! # Data structures and tradeoffs
//!
//! * Leases: `HashMap<i64, Lease>`; each lease holds its keys in a `BTreeSet<Vec<u8>>`, so
//!   [`Lessor::revoke`] returns them already sorted (etcd sorts them so that every member
//!   deletes in the same order and backend hashes agree). The reverse map key → lease is a
//!   `HashMap<Vec<u8>, i64>`, so an overwrite or delete finds the previous lease in O(1). Each
//!   attached key is therefore held twice in memory; the simplicity was preferred over sharing.
//! * Deadlines: a `BTreeSet<(Instant, i64)>` ordered by the time the lease is next due to be
//!   checked (its deadline, or after a report the retry time), with each lease remembering its
//!   own entry. Finding the expired leases costs O(log n) per lease returned, and a renew moves
//!   one entry in O(log n) with an exact removal (no lazy deletion, so the set never holds
//!   stale entries and its size equals the number of leases with a deadline). Promote rebuilds
//!   it in O(n log n); demote clears it.
//! * The lessor is a plain value (`Send + Sync`, no interior locking); the server owns it
//!   behind one mutex. See the crate-level notes on locking in [`Lessor`].

#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use api::leasepb;
use api::mvccpb::{event::EventType, Event};
use backend::{Bucket, Reader, WriteTxn};
use prost::Message;

#[cfg(test)]
mod tests;

/// The ID that means "no lease" (etcd's `NoLease`).
pub const NO_LEASE: i64 = 0;

/// The largest TTL, in seconds, a lease may be granted (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// etcd's `leaseRevokeRate`: the revocations per second the server is expected to issue at
/// most. Promote spreads deadlines when at least this many leases exist.
pub const LEASE_REVOKE_RATE: usize = 1000;

/// The default interval after which an expired lease whose revoke has not been applied is
/// reported again (etcd lessor's `defaultExpiredleaseRetryInterval`). etcd's server overrides
/// it with its request timeout, see [`expired_lease_retry_interval`].
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(3);

/// etcd's minimum lease TTL, in seconds, for a heartbeat interval and an election timeout in
/// milliseconds (`--heartbeat-interval`, `--election-timeout`).
///
/// etcd computes `ElectionTicks = election_ms / heartbeat_ms` (integer division), then
/// `minTTL = ((3 * ElectionTicks) / 2) * heartbeat` (integer division again), and rounds that up
/// to whole seconds: `MinLeaseTTL = ceil(minTTL.Seconds())`. With the defaults (100 ms, 1000 ms)
/// that is ceil(1.5 s) = 2 s. Roughly ceil(1.5 × election timeout), but with etcd's truncations
/// (5 ticks of 1 s give 7 s, not 8 s). A zero heartbeat gives 0.
pub fn min_lease_ttl(heartbeat_ms: u64, election_ms: u64) -> i64 {
    let ticks = election_ms.checked_div(heartbeat_ms).unwrap_or(0);
    let min_ms = u128::from(3 * ticks / 2) * u128::from(heartbeat_ms);
    i64::try_from(min_ms.div_ceil(1000)).unwrap_or(i64::MAX)
}

/// etcd's election timeout as its server uses it: `ElectionTicks * heartbeat`. This is the
/// `extend` etcd passes to `Promote`.
pub fn election_timeout(heartbeat_ms: u64, election_ms: u64) -> Duration {
    let ticks = election_ms.checked_div(heartbeat_ms).unwrap_or(0);
    Duration::from_millis(ticks.saturating_mul(heartbeat_ms))
}

/// The retry interval etcd's server gives its lessor: its request timeout,
/// `5 s + 2 × election timeout`.
pub fn expired_lease_retry_interval(heartbeat_ms: u64, election_ms: u64) -> Duration {
    Duration::from_secs(5) + 2 * election_timeout(heartbeat_ms, election_ms)
}

/// Errors of the lessor.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// No lease with this ID (or the ID is 0, or the lease is past its deadline on renew).
    #[error("lease not found")]
    LeaseNotFound,
    /// A lease with this ID already exists.
    #[error("lease already exists")]
    LeaseExists,
    /// The requested TTL exceeds [`MAX_LEASE_TTL`].
    #[error("too large lease TTL")]
    TtlTooLarge,
    /// This member is not the primary lessor (not the leader).
    #[error("not a primary lessor")]
    NotPrimary,
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    /// A lease record in the backend is malformed.
    #[error("corrupt lease record: {0}")]
    Corrupt(String),
}

/// What [`Lessor::time_to_live`] reports about one lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeToLive {
    /// The lease ID.
    pub id: i64,
    /// The TTL granted (after raising to the minimum), in seconds.
    pub granted_ttl: i64,
    /// Seconds left, truncated toward zero (negative once past the deadline but not yet
    /// revoked); the granted TTL if the lease has no deadline here (not primary).
    pub remaining_ttl: i64,
    /// The attached keys, sorted.
    pub keys: Vec<Vec<u8>>,
    /// The deadline, `None` if the lease never expires on this member.
    pub expires_at: Option<Instant>,
}

#[derive(Debug)]
struct Lease {
    ttl: i64,
    /// `None`: never expires here (not primary, or the deadline is not representable).
    expiry: Option<Instant>,
    /// The time this lease is filed under in `Lessor::queue`, if it is.
    queued: Option<Instant>,
    keys: BTreeSet<Vec<u8>>,
}

/// etcd's lessor as a plain value.
///
/// # Locking
///
/// `Lessor` has no interior locking. The server keeps it behind one mutex shared by the apply
/// loop (grant, revoke, [`apply_events`](Self::apply_events), promote, demote), the keep-alive
/// and time-to-live handlers and the expiry timer. [`grant`](Self::grant) and
/// [`revoke`](Self::revoke) are called while the caller holds the backend write transaction,
/// so the lock order is *backend write transaction, then lessor*: never open a backend write
/// transaction while holding the lessor lock.
///
/// # Atomicity
///
/// `grant` and `revoke` change the in-memory state as soon as the backend write succeeds. If
/// the caller's transaction is then aborted or fails to commit, memory and disk disagree: the
/// server must treat that as fatal for the member (as it does any apply failure) or rebuild
/// the lessor with [`recover`](Self::recover).
#[derive(Debug)]
pub struct Lessor {
    min_ttl: i64,
    retry_after: Duration,
    primary: bool,
    leases: HashMap<i64, Lease>,
    key_lease: HashMap<Vec<u8>, i64>,
    /// (time next due for an expiry check, lease ID); only populated on the primary.
    queue: BTreeSet<(Instant, i64)>,
}

fn lease_key(id: i64) -> [u8; 8] {
    id.to_be_bytes()
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

/// `now + extend + ttl`, or `None` if that instant is not representable.
fn deadline(now: Instant, extend: Duration, ttl: i64) -> Option<Instant> {
    now.checked_add(extend)?.checked_add(ttl_duration(ttl))
}

/// Files `lease` under `at` in `queue`, replacing its previous entry.
fn file(queue: &mut BTreeSet<(Instant, i64)>, id: i64, lease: &mut Lease, at: Option<Instant>) {
    if let Some(old) = lease.queued.take() {
        queue.remove(&(old, id));
    }
    if let Some(t) = at {
        queue.insert((t, id));
        lease.queued = Some(t);
    }
}

impl Lessor {
    /// An empty lessor, not primary. `min_ttl` is the minimum TTL in seconds (see
    /// [`min_lease_ttl`]); the retry interval is [`DEFAULT_RETRY_AFTER`].
    pub fn new(min_ttl: i64) -> Lessor {
        Lessor {
            min_ttl,
            retry_after: DEFAULT_RETRY_AFTER,
            primary: false,
            leases: HashMap::new(),
            key_lease: HashMap::new(),
            queue: BTreeSet::new(),
        }
    }

    /// Sets how long after reporting an expired lease [`expired`](Self::expired) reports it
    /// again if it has not been revoked (etcd's server uses
    /// [`expired_lease_retry_interval`]).
    pub fn with_retry_after(mut self, retry_after: Duration) -> Lessor {
        self.retry_after = retry_after;
        self
    }

    /// Loads every lease record from the `lease` bucket. The result is not primary and no lease
    /// has a deadline; TTLs below `min_ttl` are raised to it (as etcd does). Attachments are
    /// empty: the server replays them by scanning the key space at the current revision and
    /// calling [`attach`](Self::attach) for every live key with a non-zero lease.
    ///
    /// A key that is not 8 bytes, a value that does not decode, a record whose ID is 0 or
    /// differs from its key, or a TTL above [`MAX_LEASE_TTL`] is [`LeaseError::Corrupt`].
    pub fn recover<R: Reader + ?Sized>(reader: &R, min_ttl: i64) -> Result<Lessor, LeaseError> {
        let mut lessor = Lessor::new(min_ttl);
        let mut failure: Option<LeaseError> = None;
        reader.for_each(
            Bucket::Lease,
            &[],
            None,
            &mut |k, v| match lessor.load_record(k, v) {
                Ok(()) => true,
                Err(e) => {
                    failure = Some(e);
                    false
                }
            },
        )?;
        match failure {
            Some(e) => Err(e),
            None => Ok(lessor),
        }
    }

    fn load_record(&mut self, k: &[u8], v: &[u8]) -> Result<(), LeaseError> {
        let key: [u8; 8] = k.try_into().map_err(|_| {
            LeaseError::Corrupt(format!("lease key of {} bytes, expected 8", k.len()))
        })?;
        let id = i64::from_be_bytes(key);
        let rec = leasepb::Lease::decode(v)
            .map_err(|e| LeaseError::Corrupt(format!("lease {id}: {e}")))?;
        if rec.id != id {
            return Err(LeaseError::Corrupt(format!(
                "lease record under key {id} has ID {}",
                rec.id
            )));
        }
        if id == NO_LEASE {
            return Err(LeaseError::Corrupt("lease record with ID 0".into()));
        }
        if rec.ttl > MAX_LEASE_TTL {
            return Err(LeaseError::Corrupt(format!(
                "lease {id} has TTL {} above the maximum {MAX_LEASE_TTL}",
                rec.ttl
            )));
        }
        self.leases.insert(
            id,
            Lease {
                ttl: rec.ttl.max(self.min_ttl),
                expiry: None,
                queued: None,
                keys: BTreeSet::new(),
            },
        );
        Ok(())
    }

    /// The minimum TTL in seconds.
    pub fn min_ttl(&self) -> i64 {
        self.min_ttl
    }

    /// Whether this member is the primary lessor (between [`promote`](Self::promote) and
    /// [`demote`](Self::demote)).
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// Number of leases.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether there is no lease.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Whether lease `id` exists (etcd's `Lookup(id) != nil`; a Put with an unknown lease is
    /// refused with `LeaseNotFound` by the applier).
    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// The lease `key` is attached to, if any (etcd's `GetLease`).
    pub fn lease_of(&self, key: &[u8]) -> Option<i64> {
        self.key_lease.get(key).copied()
    }

    /// All lease IDs, sorted.
    pub fn leases(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// All lease IDs in etcd's `Leases()` order: soonest deadline first, leases without a
    /// deadline (all of them when not primary) last; equal deadlines by ID.
    pub fn leases_by_expiry(&self) -> Vec<i64> {
        let mut ids: Vec<(Option<Instant>, i64)> =
            self.leases.iter().map(|(&id, l)| (l.expiry, id)).collect();
        // `None` sorts first for `Option`; etcd's "never" is the longest remaining time.
        ids.sort_unstable_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) => x.cmp(&y).then(a.1.cmp(&b.1)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.1.cmp(&b.1),
        });
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Grants lease `id` with `ttl` seconds and writes its record into `txn`. Returns the TTL
    /// granted (raised to the minimum). On the primary the lease expires at `now + ttl`,
    /// elsewhere never. On error nothing is changed (a backend error may leave `txn` unusable).
    pub fn grant(
        &mut self,
        txn: &mut WriteTxn<'_>,
        id: i64,
        ttl: i64,
        now: Instant,
    ) -> Result<i64, LeaseError> {
        if id == NO_LEASE {
            return Err(LeaseError::LeaseNotFound);
        }
        if ttl > MAX_LEASE_TTL {
            return Err(LeaseError::TtlTooLarge);
        }
        let ttl = ttl.max(self.min_ttl);
        if self.leases.contains_key(&id) {
            return Err(LeaseError::LeaseExists);
        }
        let rec = leasepb::Lease {
            id,
            ttl,
            remaining_ttl: 0,
        };
        txn.put(Bucket::Lease, &lease_key(id), &rec.encode_to_vec())?;
        let mut lease = Lease {
            ttl,
            expiry: None,
            queued: None,
            keys: BTreeSet::new(),
        };
        if self.primary {
            lease.expiry = deadline(now, Duration::ZERO, ttl);
            let at = lease.expiry;
            file(&mut self.queue, id, &mut lease, at);
        }
        self.leases.insert(id, lease);
        Ok(ttl)
    }

    /// Revokes lease `id`: deletes its record in `txn`, forgets the lease and its attachments,
    /// and returns its keys, sorted. The caller deletes those keys in the same MVCC write
    /// transaction (one revision) before committing; the DELETE events it then passes to
    /// [`apply_events`](Self::apply_events) are no-ops.
    pub fn revoke(&mut self, txn: &mut WriteTxn<'_>, id: i64) -> Result<Vec<Vec<u8>>, LeaseError> {
        if !self.leases.contains_key(&id) {
            return Err(LeaseError::LeaseNotFound);
        }
        txn.delete(Bucket::Lease, &lease_key(id))?;
        let Some(mut lease) = self.leases.remove(&id) else {
            return Err(LeaseError::LeaseNotFound);
        };
        file(&mut self.queue, id, &mut lease, None);
        for key in &lease.keys {
            self.key_lease.remove(key);
        }
        Ok(lease.keys.into_iter().collect())
    }

    /// Attaches `key` to lease `id`, detaching it from the lease it had before. Unknown `id` →
    /// `LeaseNotFound`, and nothing changes. Used to replay attachments after
    /// [`recover`](Self::recover).
    pub fn attach(&mut self, id: i64, key: &[u8]) -> Result<(), LeaseError> {
        if !self.leases.contains_key(&id) {
            return Err(LeaseError::LeaseNotFound);
        }
        if self.lease_of(key) == Some(id) {
            return Ok(());
        }
        self.detach(key);
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key.to_vec());
            self.key_lease.insert(key.to_vec(), id);
        }
        Ok(())
    }

    /// Detaches `key` from its lease; returns that lease, if there was one.
    pub fn detach(&mut self, key: &[u8]) -> Option<i64> {
        let id = self.key_lease.remove(key)?;
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
        Some(id)
    }

    /// Updates the attachments from the events of one MVCC write, in order: a PUT attaches the
    /// key to `kv.lease` (detaching it from its previous lease; lease 0 only detaches), a
    /// DELETE detaches it. A PUT naming an unknown lease detaches the key and is logged.
    pub fn apply_events(&mut self, events: &[Event]) {
        for ev in events {
            let Some(kv) = &ev.kv else {
                tracing::warn!("lessor: event without a key-value ignored");
                continue;
            };
            match EventType::try_from(ev.r#type) {
                Ok(EventType::Put) if kv.lease == NO_LEASE => {
                    self.detach(&kv.key);
                }
                Ok(EventType::Put) => {
                    if self.attach(kv.lease, &kv.key).is_err() {
                        self.detach(&kv.key);
                        tracing::warn!(
                            lease = kv.lease,
                            key = %String::from_utf8_lossy(&kv.key),
                            "lessor: key written with an unknown lease; not attached"
                        );
                    }
                }
                Ok(EventType::Delete) => {
                    self.detach(&kv.key);
                }
                Err(_) => {
                    tracing::warn!(r#type = ev.r#type, "lessor: unknown event type ignored");
                }
            }
        }
    }

    /// Keep-alive: on the primary, moves lease `id`'s deadline to `now + ttl` and returns the
    /// TTL. Not primary → `NotPrimary`; unknown, or already past its deadline (its revoke is
    /// due) → `LeaseNotFound`.
    pub fn renew(&mut self, id: i64, now: Instant) -> Result<i64, LeaseError> {
        if !self.primary {
            return Err(LeaseError::NotPrimary);
        }
        let lease = self.leases.get_mut(&id).ok_or(LeaseError::LeaseNotFound)?;
        if lease.expiry.is_some_and(|e| e <= now) {
            return Err(LeaseError::LeaseNotFound);
        }
        lease.expiry = deadline(now, Duration::ZERO, lease.ttl);
        let at = lease.expiry;
        file(&mut self.queue, id, lease, at);
        Ok(lease.ttl)
    }

    /// Becomes the primary: every lease's deadline becomes `now + extend + ttl`, then etcd's
    /// pile-up spreading is applied if there are at least [`LEASE_REVOKE_RATE`] leases. Called
    /// when this member is leader and has applied the first (empty) entry of its term; etcd
    /// passes the election timeout as `extend`.
    pub fn promote(&mut self, now: Instant, extend: Duration) {
        self.primary = true;
        self.queue.clear();
        for (&id, lease) in &mut self.leases {
            lease.queued = None;
            lease.expiry = deadline(now, extend, lease.ttl);
            let at = lease.expiry;
            file(&mut self.queue, id, lease, at);
        }
        if self.leases.len() >= LEASE_REVOKE_RATE {
            self.spread_deadlines();
        }
    }

    /// etcd's `Promote` overlap adjustment: walking the leases by deadline, once more than
    /// 3/4 of [`LEASE_REVOKE_RATE`] fall into one window, each further lease is pushed back by
    /// `expires / target` seconds minus how far it already is into the window.
    fn spread_deadlines(&mut self) {
        const SECOND: i128 = 1_000_000_000;
        let target = (3 * LEASE_REVOKE_RATE / 4) as i128;
        let order: Vec<(Instant, i64)> = self.queue.iter().copied().collect();
        let Some(&(base_at, _)) = order.first() else {
            return;
        };
        // Offsets in nanoseconds from the first deadline.
        let offset = |t: Instant| t.duration_since(base_at).as_nanos() as i128;
        let mut base = 0i128;
        let mut next = SECOND;
        let mut expires = 0i128;
        for (at, id) in order {
            let remaining = offset(at);
            if remaining > next {
                base = remaining;
                next = base + SECOND;
                expires = 1;
                continue;
            }
            expires += 1;
            if expires <= target {
                continue;
            }
            let delay = SECOND * expires / target - (remaining - base);
            next = base + delay;
            // Never earlier than `now + extend + ttl` (etcd's delay is positive here anyway).
            let Ok(delay) = u64::try_from(delay) else {
                continue;
            };
            let Some(lease) = self.leases.get_mut(&id) else {
                continue;
            };
            lease.expiry = at.checked_add(Duration::from_nanos(delay));
            let at = lease.expiry;
            file(&mut self.queue, id, lease, at);
        }
    }

    /// Stops being the primary: no lease has a deadline any more (and none is reported or
    /// renewed here) until the next [`promote`](Self::promote).
    pub fn demote(&mut self) {
        self.primary = false;
        self.queue.clear();
        for lease in self.leases.values_mut() {
            lease.expiry = None;
            lease.queued = None;
        }
    }

    /// On the primary: up to `limit` (0 = no limit) leases whose deadline is at or before
    /// `now`, earliest first, for the server to revoke through Raft. A reported lease is not
    /// reported again until the retry interval has passed without its revoke being applied.
    /// Not primary → empty.
    pub fn expired(&mut self, now: Instant, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        if !self.primary {
            return out;
        }
        while limit == 0 || out.len() < limit {
            let Some(&(at, id)) = self.queue.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.queue.pop_first();
            let Some(lease) = self.leases.get_mut(&id) else {
                continue;
            };
            lease.queued = None;
            match lease.expiry {
                Some(e) if e <= now => {
                    out.push(id);
                    file(
                        &mut self.queue,
                        id,
                        lease,
                        now.checked_add(self.retry_after),
                    );
                }
                // Not due yet (cannot happen: entries are filed at the deadline or later).
                Some(e) => file(&mut self.queue, id, lease, Some(e)),
                None => {}
            }
        }
        out
    }

    /// The earliest time at which [`expired`](Self::expired) may report something, for the
    /// server's timer. `None` if nothing is due ever (not primary, or no lease).
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.first().map(|&(at, _)| at)
    }

    /// Lease `id`'s granted and remaining TTL and its keys, or `None` if it does not exist.
    pub fn time_to_live(&self, id: i64, now: Instant) -> Option<TimeToLive> {
        let lease = self.leases.get(&id)?;
        let remaining_ttl = match lease.expiry {
            None => lease.ttl,
            Some(e) if e >= now => secs_i64(e.duration_since(now)),
            Some(e) => -secs_i64(now.duration_since(e)),
        };
        Some(TimeToLive {
            id,
            granted_ttl: lease.ttl,
            remaining_ttl,
            keys: lease.keys.iter().cloned().collect(),
            expires_at: lease.expiry,
        })
    }
}

/// Whole seconds of `d`, truncated.
fn secs_i64(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

// The lessor is shared behind a mutex across threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Lessor>();
};
