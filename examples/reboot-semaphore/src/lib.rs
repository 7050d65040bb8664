//! A reboot semaphore on etcd's v3 API: a fleet of machines reboots for updates, and at most
//! `K` of them may be down at once. Each machine takes a slot before it reboots and gives it
//! back afterwards; a machine that dies holding a slot frees it when its lease expires.
//!
//! # Design: K locks, one lease per attempt
//!
//! The semaphore `NAME` with `K` slots is `K` locks, `NAME/slot-0` ... `NAME/slot-{K-1}`, taken
//! through etcd's Lock service (v3lock). A machine that wants to reboot:
//!
//! 1. grants itself a **lease** (TTL `ttl` seconds) and keeps it alive in the background;
//! 2. asks for **every** slot lock at once, on that lease, and takes the first one granted.
//!    Each lock is etcd's mutex: the waiter's key `NAME/slot-i/<lease hex>` is queued by create
//!    revision and the server answers when every older key is gone; so each slot has at most
//!    one holder, in arrival order;
//! 3. leaves its other requests queued, and passes on at once any of them that is granted
//!    later (unlocks it), so it never keeps a second slot from the machines behind it;
//! 4. reboots, holding its slot;
//! 5. **revokes its lease**: every key of the attempt goes in one revision, which frees its slot
//!    and takes it out of the other queues.
//!
//! **Why at most K reboot at once.** A machine reboots only while it holds one of the `K` slot
//! locks, and a lock has one holder at a time. So `K` slots cannot cover more than `K`
//! rebooting machines, whatever the timing (pigeonhole).
//!
//! **Why a dead machine frees its slot.** Its keys are attached to its lease. When it stops
//! renewing the lease (crash, power loss), the lease expires after `ttl` seconds, the cluster
//! deletes the keys, and the next waiter in that slot's queue gets the lock. Hearth's Lock
//! service also never grants a lock on a lease that expired while its caller waited (etcd
//! #11456), so a machine that was frozen longer than `ttl` gets an error instead of a slot, and
//! retries with a new lease.
//!
//! # Tradeoffs
//!
//! * Waiting in all `K` queues makes a machine take the first free slot, at the price of `K`
//!   waiting keys per machine (N × K keys under contention), and of one extra round trip for
//!   the machine behind it when it passes a slot on. Per-machine slot assignment would need one
//!   key each but could leave a slot idle while its machines wait on a busy one. Dropping the
//!   other requests instead of passing slots on would race with their being granted, and a
//!   slot granted to a request nobody waits for any more would stay taken until the release.
//! * The lease stands for the machine being alive: it must be kept alive *during* the reboot by
//!   something that survives it (here the machine process simulates the reboot by sleeping), or
//!   `ttl` must exceed the longest reboot. A holder that loses its lease mid-reboot (renewals
//!   failing for `ttl` seconds) is reported through [`Permit::lost`]; by then another machine
//!   may hold its slot, which is inherent to any lease-based lock.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{Client, LockOptions};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::oneshot;

/// The semaphore `name` with `slots` slots, on a cluster reached through `client`.
#[derive(Clone)]
pub struct Semaphore {
    client: Client,
    name: String,
    slots: usize,
    ttl: i64,
}

/// A held slot. Give it back with [`Permit::release`]; dropping it keeps the slot until the
/// lease expires.
pub struct Permit {
    client: Client,
    lease: i64,
    slot: usize,
    lost: Arc<AtomicBool>,
    /// Keeps the lease alive.
    keeper: tokio::task::JoinHandle<()>,
    /// Waits on the other slots, passing on whatever it is granted.
    queued: tokio::task::JoinHandle<()>,
}

impl Semaphore {
    pub fn new(client: Client, name: &str, slots: usize, ttl: i64) -> Semaphore {
        Semaphore {
            client,
            name: name.to_string(),
            slots: slots.max(1),
            ttl,
        }
    }

    /// The lock name of slot `i`.
    pub fn slot_name(&self, i: usize) -> String {
        format!("{}/slot-{i}", self.name)
    }

    /// Waits for a free slot and takes it.
    pub async fn acquire(&self) -> Result<Permit> {
        loop {
            let mut client = self.client.clone();
            let lease = client
                .lease_grant(self.ttl, None)
                .await
                .context("grant a lease")?
                .id();
            let lost = Arc::new(AtomicBool::new(false));
            let keeper = tokio::spawn(keep_alive(client.clone(), lease, self.ttl, lost.clone()));
            let (granted_tx, granted_rx) = oneshot::channel();
            let queued = tokio::spawn(queue_on_every_slot(
                client.clone(),
                (0..self.slots).map(|i| self.slot_name(i)).collect(),
                lease,
                granted_tx,
            ));
            match granted_rx.await {
                Ok(Ok(slot)) => {
                    return Ok(Permit {
                        client,
                        lease,
                        slot,
                        lost,
                        keeper,
                        queued,
                    });
                }
                Ok(Err(e)) => {
                    // Typically the lease expired while waiting (`concurrency: session
                    // expired`): start over with a new one.
                    keeper.abort();
                    queued.abort();
                    let _ = client.lease_revoke(lease).await;
                    eprintln!("no slot this time ({e}); retrying");
                }
                Err(_) => anyhow::bail!("the slot requests stopped"),
            }
        }
    }
}

/// Asks for every slot in `names` on `lease`; the first granted is reported through `granted`
/// (or the last error if none is), every later grant is unlocked at once. Runs until aborted.
async fn queue_on_every_slot(
    client: Client,
    names: Vec<String>,
    lease: i64,
    granted: oneshot::Sender<Result<usize, etcd_client::Error>>,
) {
    let mut requests: FuturesUnordered<_> = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let mut c = client.clone();
            async move {
                let r = c
                    .lock(name, Some(LockOptions::new().with_lease(lease)))
                    .await;
                (i, r)
            }
        })
        .collect();
    let mut granted = Some(granted);
    let mut last_err = None;
    while let Some((i, r)) = requests.next().await {
        match r {
            Ok(resp) => match granted.take() {
                Some(tx) => {
                    let _ = tx.send(Ok(i));
                }
                // Already holding a slot: pass this one on.
                None => {
                    let mut c = client.clone();
                    let _ = c.unlock(resp.key()).await;
                }
            },
            Err(e) => last_err = Some(e),
        }
    }
    if let (Some(tx), Some(e)) = (granted, last_err) {
        let _ = tx.send(Err(e));
    }
}

impl Permit {
    /// The slot held.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The lease the slot is held with.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// Whether the lease was lost (not renewed in time): the slot may be someone else's now.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Gives the slot back: revoking the lease deletes every key of this attempt at once.
    pub async fn release(mut self) -> Result<()> {
        self.keeper.abort();
        self.queued.abort();
        self.client
            .lease_revoke(self.lease)
            .await
            .context("revoke the lease")?;
        Ok(())
    }
}

/// Renews `lease` three times per TTL until aborted; sets `lost` when it cannot.
async fn keep_alive(mut client: Client, lease: i64, ttl: i64, lost: Arc<AtomicBool>) {
    let every = Duration::from_millis((ttl.max(1) as u64) * 1000 / 3);
    let Ok((mut keeper, mut stream)) = client.lease_keep_alive(lease).await else {
        lost.store(true, Ordering::SeqCst);
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        if keeper.keep_alive().await.is_err() {
            break;
        }
        match stream.message().await {
            Ok(Some(r)) if r.ttl() > 0 => {}
            _ => break,
        }
    }
    lost.store(true, Ordering::SeqCst);
}
