//! The member's lessor: the `lease` crate's clock-free [`Lessor`] behind one mutex, with the
//! clock and the leadership signal the server gives it.
//!
//! Three parties share it:
//! * the applier (Raft apply thread): [`Leases::grant`] and [`Leases::revoke`] inside the MVCC
//!   write transaction of the entry, [`Leases::apply_events`] after every committed write (a
//!   put attaches its key, an overwrite or delete detaches it), [`Leases::noop_applied`] for a
//!   leader's empty entry;
//! * the Lease service: [`Leases::renew`], [`Leases::time_to_live`], [`Leases::leases`];
//! * the expiry decisions (`expiry`, driven by the server's task): [`Leases::promote`],
//!   [`Leases::demote`], [`Leases::expired`].
//!
//! # Invariants
//!
//! * A lease record and the deletion of its keys commit in the same backend transaction as the
//!   consistent index of the entry that made them (the applier's `TxnWrite`), so a crash replays
//!   either all of a grant or revoke or none of it.
//! * Lock order: the store's write transaction first, then the lessor mutex; the mutex is never
//!   held while a write transaction is opened, and never across an `.await`.
//! * If a write transaction that changed the lessor fails to commit, memory and disk disagree;
//!   [`Leases::reload`] then rebuilds the lessor from the backend (what a restart would do).
//! * Time comes only from the injected [`Clock`], so the apply path and the driver are tested
//!   with a manual clock.
//!
//! # Start-up
//!
//! [`Leases::recover`] loads the records from the `lease` bucket and re-attaches every live key
//! that names a lease, scanning the key space in batches of [`RECOVER_BATCH`] keys. No lease has
//! a deadline until the member is leader and promotes the lessor, which restarts every lease at
//! its full TTL plus the election timeout (etcd's `Promote(extend)`), so a restart never expires
//! a lease early.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use api::mvccpb::Event;
use lease::{LeaseError, Lessor, TimeToLive};
use mvcc::{KvStore, RangeOptions, TxnWrite};
use prometheus::{register_counter, register_histogram, Counter, Histogram};
use tokio::sync::{watch, Notify};

use rpctypes::ServerError;

use crate::txn::LeaseLookup;

/// Keys read per batch when re-attaching keys to their leases at start-up.
pub const RECOVER_BATCH: i64 = 10_000;

/// Where the lessor gets the time. `Instant::now` in the server; a manual clock in tests.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The lessor's timing, derived from the member's configuration as etcd derives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LessorConfig {
    /// The minimum TTL in seconds (etcd's `MinLeaseTTL`).
    pub min_ttl: i64,
    /// Added to every deadline at promotion (etcd passes its election timeout).
    pub extend: Duration,
    /// How long an expired lease whose revoke has not been applied waits before it is
    /// reported again (etcd's `ExpiredLeasesRetryInterval`, its request timeout).
    pub retry_after: Duration,
}

impl LessorConfig {
    /// The timing etcd derives from `--heartbeat-interval` and `--election-timeout`.
    pub fn new(heartbeat: Duration, election: Duration) -> LessorConfig {
        let hb = heartbeat.as_millis() as u64;
        let el = election.as_millis() as u64;
        LessorConfig {
            min_ttl: lease::min_lease_ttl(hb, el),
            extend: lease::election_timeout(hb, el),
            retry_after: lease::expired_lease_retry_interval(hb, el),
        }
    }
}

/// etcd's lease metrics (`server/lease/metrics.go`, and the server's expired counter).
pub mod metrics {
    use super::*;

    pub static GRANTED: LazyLock<Counter> = LazyLock::new(|| {
        register_counter!(
            "etcd_debugging_lease_granted_total",
            "The total number of granted leases."
        )
        .expect("metric names are unique and valid")
    });
    pub static REVOKED: LazyLock<Counter> = LazyLock::new(|| {
        register_counter!(
            "etcd_debugging_lease_revoked_total",
            "The total number of revoked leases."
        )
        .expect("metric names are unique and valid")
    });
    pub static RENEWED: LazyLock<Counter> = LazyLock::new(|| {
        register_counter!(
            "etcd_debugging_lease_renewed_total",
            "The number of renewed leases seen by the leader."
        )
        .expect("metric names are unique and valid")
    });
    pub static TTL: LazyLock<Histogram> = LazyLock::new(|| {
        register_histogram!(
            "etcd_debugging_lease_ttl_total",
            "Bucketed histogram of lease TTLs.",
            // 1 second to about 3 months, as etcd.
            prometheus::exponential_buckets(1.0, 2.0, 24).expect("static bucket parameters")
        )
        .expect("metric names are unique and valid")
    });
    pub static EXPIRED: LazyLock<Counter> = LazyLock::new(|| {
        register_counter!(
            "etcd_debugging_server_lease_expired_total",
            "The total number of expired leases."
        )
        .expect("metric names are unique and valid")
    });

    /// Registers them, so they are on `/metrics` from the first scrape.
    pub fn register() {
        let _ = (
            GRANTED.get(),
            REVOKED.get(),
            RENEWED.get(),
            TTL.get_sample_count(),
            EXPIRED.get(),
        );
    }
}

/// The shared lessor. See the module doc.
pub struct Leases {
    lessor: Mutex<Lessor>,
    clock: Clock,
    cfg: LessorConfig,
    /// The term of the newest empty entry applied: a leader appends one when its term starts,
    /// so `noop_term == term` on the leader means it has applied an entry of its own term.
    noop_term: AtomicU64,
    primary: watch::Sender<bool>,
    /// Wakes the expiry driver when leadership may have changed.
    wake: Notify,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("cfg", &self.cfg)
            .field("noop_term", &self.noop_term)
            .finish_non_exhaustive()
    }
}

impl Leases {
    /// A lessor with no leases (for a store that has none, and tests).
    pub fn new(cfg: LessorConfig, clock: Clock) -> Leases {
        Leases::with_lessor(
            Lessor::new(cfg.min_ttl).with_retry_after(cfg.retry_after),
            cfg,
            clock,
        )
    }

    fn with_lessor(lessor: Lessor, cfg: LessorConfig, clock: Clock) -> Leases {
        metrics::register();
        Leases {
            lessor: Mutex::new(lessor),
            clock,
            cfg,
            noop_term: AtomicU64::new(0),
            primary: watch::channel(false).0,
            wake: Notify::new(),
        }
    }

    /// The lessor as `kv`'s backend and key space describe it: records from the `lease`
    /// bucket, keys re-attached from the live key space. Not primary.
    pub fn recover(kv: &KvStore, cfg: LessorConfig, clock: Clock) -> Result<Leases, LeaseError> {
        let lessor = load(kv, &cfg)?;
        Ok(Leases::with_lessor(lessor, cfg, clock))
    }

    /// The leases of `kv` with etcd's default timing and the system's monotonic clock, for tests of
    /// other parts that only need a lessor to exist.
    #[cfg(test)]
    pub(crate) fn for_tests(kv: &KvStore) -> Arc<Leases> {
        let cfg = LessorConfig::new(Duration::from_millis(100), Duration::from_millis(1000));
        Arc::new(Leases::recover(kv, cfg, Arc::new(Instant::now)).expect("recover leases"))
    }

    /// Rebuilds the lessor from the backend after a write transaction that changed it failed to
    /// commit (or after the backend was replaced). Keeps being primary if it was, with every
    /// deadline restarted as at promotion.
    pub fn reload(&self, kv: &KvStore) -> Result<(), LeaseError> {
        let mut fresh = load(kv, &self.cfg)?;
        let mut l = self.lock();
        if l.is_primary() {
            fresh.promote(self.now(), self.cfg.extend);
        }
        *l = fresh;
        Ok(())
    }

    pub fn config(&self) -> &LessorConfig {
        &self.cfg
    }

    pub fn now(&self) -> Instant {
        (self.clock)()
    }

    fn lock(&self) -> MutexGuard<'_, Lessor> {
        // Every lessor method leaves it consistent before it can panic, so a poisoned lock
        // holds a usable lessor.
        self.lessor.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- The apply path (Raft apply thread). ----

    /// Grants lease `id` in the entry's write transaction `w`; returns the TTL granted.
    pub fn grant(&self, w: &mut TxnWrite<'_>, id: i64, ttl: i64) -> Result<i64, ServerError> {
        let txn = w
            .backend_txn()
            .ok_or_else(|| ServerError::Internal("no backend transaction".into()))?;
        let now = self.now();
        let granted = self
            .lock()
            .grant(txn, id, ttl, now)
            .map_err(ServerError::from)?;
        metrics::GRANTED.inc();
        metrics::TTL.observe(granted as f64);
        Ok(granted)
    }

    /// Revokes lease `id` in the entry's write transaction `w`: its record goes, and every key
    /// attached to it is deleted in `w`, in key order (so every member deletes in the same
    /// order), all in `w`'s one revision.
    pub fn revoke(&self, w: &mut TxnWrite<'_>, id: i64) -> Result<(), ServerError> {
        let txn = w
            .backend_txn()
            .ok_or_else(|| ServerError::Internal("no backend transaction".into()))?;
        let keys = self.lock().revoke(txn, id).map_err(ServerError::from)?;
        for k in &keys {
            w.delete_range(k, None);
        }
        metrics::REVOKED.inc();
        Ok(())
    }

    /// Updates the attachments from a committed write's events.
    pub fn apply_events(&self, events: &[Event]) {
        if !events.is_empty() {
            self.lock().apply_events(events);
        }
    }

    /// A leader's empty entry of `term` was applied.
    pub fn noop_applied(&self, term: u64) {
        self.noop_term.store(term, Ordering::Release);
        self.wake.notify_one();
    }

    /// The term of the newest empty entry applied.
    pub fn noop_term(&self) -> u64 {
        self.noop_term.load(Ordering::Acquire)
    }

    // ---- The Lease service. ----

    /// Keep-alive on the primary (see [`Lessor::renew`]).
    pub fn renew(&self, id: i64) -> Result<i64, LeaseError> {
        let now = self.now();
        let ttl = self.lock().renew(id, now)?;
        metrics::RENEWED.inc();
        Ok(ttl)
    }

    pub fn time_to_live(&self, id: i64) -> Option<TimeToLive> {
        let now = self.now();
        self.lock().time_to_live(id, now)
    }

    /// The keys attached to lease `id` (none for an unknown lease), for the auth checks of a
    /// revoke or of a put that attaches the lease.
    pub fn keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.time_to_live(id).map(|t| t.keys).unwrap_or_default()
    }

    /// Every lease, in etcd's order (soonest deadline first).
    pub fn leases(&self) -> Vec<i64> {
        self.lock().leases_by_expiry()
    }

    // ---- The expiry driver. ----

    pub fn is_primary(&self) -> bool {
        self.lock().is_primary()
    }

    /// Becomes primary: every lease restarts at its TTL plus the election timeout.
    pub fn promote(&self) {
        let now = self.now();
        self.lock().promote(now, self.cfg.extend);
        self.primary.send_replace(true);
    }

    /// Stops being primary: no lease expires here any more.
    pub fn demote(&self) {
        self.lock().demote();
        self.primary.send_replace(false);
    }

    /// Up to `limit` leases past their deadline (primary only).
    pub fn expired(&self, limit: usize) -> Vec<i64> {
        let now = self.now();
        self.lock().expired(now, limit)
    }

    /// Follows promotions and demotions (keep-alives wait on it for a new leader's promotion).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.primary.subscribe()
    }

    /// Resolves when leadership may have changed (an empty entry was applied).
    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

impl LeaseLookup for Leases {
    fn exists(&self, id: i64) -> bool {
        self.lock().contains(id)
    }
}

fn load(kv: &KvStore, cfg: &LessorConfig) -> Result<Lessor, LeaseError> {
    let reader = kv.backend().read()?;
    let mut lessor = Lessor::recover(&reader, cfg.min_ttl)?.with_retry_after(cfg.retry_after);
    drop(reader);
    if lessor.is_empty() {
        return Ok(lessor);
    }
    let view = kv.read();
    let mut start = Vec::new();
    let mut missing = 0usize;
    loop {
        let opts = RangeOptions {
            limit: RECOVER_BATCH,
            ..Default::default()
        };
        let r = view.range(&start, Some(&[]), opts).map_err(|e| match e {
            mvcc::MvccError::Backend(b) => LeaseError::Backend(b),
            other => LeaseError::Corrupt(format!("key space: {other}")),
        })?;
        let Some(last) = r.kvs.last() else { break };
        let mut next = last.key.clone();
        next.push(0);
        for kv in &r.kvs {
            if kv.lease != lease::NO_LEASE && lessor.attach(kv.lease, &kv.key).is_err() {
                missing += 1;
            }
        }
        if (r.kvs.len() as i64) < RECOVER_BATCH {
            break;
        }
        start = next;
    }
    if missing > 0 {
        // etcd logs and goes on as well: such a key simply never expires.
        tracing::warn!(keys = missing, "keys name a lease that does not exist");
    }
    tracing::info!(leases = lessor.len(), "recovered leases");
    Ok(lessor)
}

#[cfg(test)]
pub(crate) mod tests;
