//! The expiry driver: decides, on the leader only, which leases have expired, and revokes them
//! through Raft so every member deletes their keys at the same log index.
//!
//! Every [`CHECK_INTERVAL`] (and at once when an empty entry is applied, which is when a new
//! leader's term starts) it runs `apply::expiry::check`:
//!
//! 1. **Leadership.** The lessor is promoted when this member leads and has applied an entry of its
//!    term, demoted otherwise (see `apply::expiry`).
//! 2. **Expiry.** On the primary, up to [`REVOKE_LIMIT`] leases past their deadline are taken,
//!    and a `LeaseRevoke` is proposed for each, at most [`MAX_PENDING_REVOKES`] at a time.
//!
//! # Rate and bounds
//!
//! etcd revokes at most `leaseRevokeRate` (1000) leases per second: 500 every 500 ms. Checking
//! every 100 ms with a limit of 100 keeps the same rate while noticing an expiry (and a lost
//! leadership) sooner. A lease that was reported but whose revoke was not applied (lost
//! leadership, timeout) is reported again after the lessor's retry interval (etcd's request
//! timeout), never sooner, so slow proposals do not pile up duplicates. The proposals run in
//! their own tasks so a slow Raft round never delays the leadership check.

use std::sync::Arc;
use std::time::Duration;

use api::etcdserverpb::LeaseRevokeRequest;
use tokio::sync::{watch, Semaphore};

use apply::expiry::{check, Leadership};
use apply::lessor::metrics;

use crate::etcdserver::EtcdServer;

/// How often leadership and deadlines are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Leases revoked per check: `LEASE_REVOKE_RATE` per second.
pub const REVOKE_LIMIT: usize = lease::LEASE_REVOKE_RATE / 10;
/// Revoke proposals in flight at once (etcd's `maxPendingRevokes`).
pub const MAX_PENDING_REVOKES: usize = 16;

/// Runs the driver until `shutdown` says so.
pub async fn run(srv: Arc<EtcdServer>, mut shutdown: watch::Receiver<bool>) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_REVOKES));
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = srv.leases().woken() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let expired = check(srv.leases(), leadership(&srv), REVOKE_LIMIT);
        if !expired.is_empty() {
            tokio::spawn(revoke_all(srv.clone(), pending.clone(), expired));
        }
    }
}

/// What the driver knows about Raft leadership at this moment.
fn leadership(srv: &EtcdServer) -> Leadership {
    // The applied empty entry is read first: if the term moves on in between, the terms
    // differ and the member does not count as primary this round.
    let noop_term = srv.leases().noop_term();
    Leadership {
        member_id: srv.member_id(),
        leader: srv.leader(),
        term: srv.term(),
        noop_term,
    }
}

async fn revoke_all(srv: Arc<EtcdServer>, pending: Arc<Semaphore>, ids: Vec<i64>) {
    // A leader stuck on its disk or cut off believes it leads after another member took over;
    // its revokes would reach the new leader later, against leases that one keeps alive.
    if !srv.confirm_leadership().await {
        tracing::warn!(
            leases = ids.len(),
            "not revoking expired leases: this member could not confirm that it leads"
        );
        return;
    }
    for id in ids {
        let Ok(permit) = pending.clone().acquire_owned().await else {
            return;
        };
        let srv = srv.clone();
        tokio::spawn(async move {
            // As root, as etcd's `WithRoot`: an expired lease goes whoever's keys it holds.
            let root = srv.auth_store().root_auth_info();
            match srv
                .lease_revoke(Some(&root), LeaseRevokeRequest { id })
                .await
            {
                Ok(_) => metrics::EXPIRED.inc(),
                // Revoked meanwhile by a client, or leadership moved: the next primary retries.
                Err(e) => tracing::warn!(lease = id, "failed to revoke an expired lease: {e}"),
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_limit_is_etcds_rate() {
        // 1000 leases per second, checked every 100 ms.
        assert_eq!(
            REVOKE_LIMIT as u128 * (1000 / CHECK_INTERVAL.as_millis()),
            lease::LEASE_REVOKE_RATE as u128
        );
    }
}
