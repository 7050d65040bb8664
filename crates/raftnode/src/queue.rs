//! The Raft loop's command queue, and what bounds it.
//!
//! Three kinds of senders put commands in it, and none of them may make the loop wait:
//! * clients (proposals, read-index requests) are admitted against a byte budget ([`QUEUE_BYTES`]): a
//!   command holds its share of the budget until the loop takes it. When the budget is spent a client
//!   waits (asynchronously, on its own task) for room up to its deadline and is then refused with etcd's
//!   `etcdserver: too many requests` ([`Handle::admit`]);
//! * peers: their messages hold a permit of the transport's in-flight budget until the loop has stepped
//!   them; a peer's receiver never waits for the loop (the transport refuses what does not fit);
//! * the member itself: the apply thread's progress (one per batch handed to it, and that queue is
//!   bounded), the transport's reports and control commands (a few per event).
//!
//! Tradeoff: one std channel with admission on top, rather than a bounded channel, so the loop waits on a
//! single queue with a timeout (its tick) and a full queue never blocks a sender that must not wait (a
//! peer's receiver, the apply thread). Client commands are what a client can produce at any rate; they
//! are what the budget bounds. [`Handle::queued_bytes`] says how much of it is in use.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use raft::prelude::Message;
use rpctypes::ServerError;

use crate::node::Command;

/// The most bytes of client commands (proposals and read requests) queued for the loop at once.
pub const QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// What a client command costs besides its payload (its bookkeeping, and the bound on how many
/// payload-less commands, such as read requests, can queue).
pub const COMMAND_OVERHEAD: usize = 256;

/// The Raft loop's command queue: how the rest of the member reaches the loop.
#[derive(Clone)]
pub struct Handle {
    tx: Sender<Command>,
    budget: Arc<Semaphore>,
    capacity: usize,
    /// Counts the handles: the loop stops once none is left (its own sender, for the apply thread's
    /// reports, keeps the channel itself open).
    _alive: Arc<()>,
}

/// The receiving end the loop takes (with a sender of its own, for the apply thread's reports).
pub struct Commands {
    pub(crate) rx: Receiver<Command>,
    pub(crate) tx: Sender<Command>,
    alive: std::sync::Weak<()>,
}

impl Commands {
    /// Whether every [`Handle`] is gone (nobody can reach the loop any more).
    pub(crate) fn abandoned(&self) -> bool {
        self.alive.strong_count() == 0
    }
}

impl Handle {
    /// A queue with the default budget, and the receiving end the loop takes.
    pub fn channel() -> (Handle, Commands) {
        Handle::with_budget(QUEUE_BYTES)
    }

    /// A queue whose client commands may queue up to `bytes` (at least one command's overhead).
    pub fn with_budget(bytes: usize) -> (Handle, Commands) {
        let capacity = bytes.clamp(COMMAND_OVERHEAD, Semaphore::MAX_PERMITS);
        let (tx, rx) = std::sync::mpsc::channel();
        let alive = Arc::new(());
        let commands = Commands {
            rx,
            tx: tx.clone(),
            alive: Arc::downgrade(&alive),
        };
        let h = Handle {
            tx,
            budget: Arc::new(Semaphore::new(capacity)),
            capacity,
            _alive: alive,
        };
        (h, commands)
    }

    /// Queues a control command (not a client's proposal or read); `Stopped` once the loop is gone.
    pub fn send(&self, cmd: Command) -> Result<(), ServerError> {
        self.tx.send(cmd).map_err(|_| ServerError::Stopped)
    }

    /// What a client command with a payload of `payload` bytes takes of the budget.
    fn cost(&self, payload: usize) -> u32 {
        let c = payload
            .saturating_add(COMMAND_OVERHEAD)
            .min(self.capacity)
            .min(u32::MAX as usize);
        c as u32
    }

    /// Queues a client's command (`payload` bytes) once it fits the budget, waiting up to `wait` for
    /// room; refused with `etcdserver: too many requests` if there is none by then.
    pub async fn admit(
        &self,
        cmd: Command,
        payload: usize,
        wait: Duration,
    ) -> Result<(), ServerError> {
        let n = self.cost(payload);
        let permit = match self.budget.clone().try_acquire_many_owned(n) {
            Ok(p) => p,
            Err(_) => {
                let acquire = self.budget.clone().acquire_many_owned(n);
                match tokio::time::timeout(wait, acquire).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(ServerError::Stopped),
                    Err(_) => return Err(ServerError::TooManyRequests),
                }
            }
        };
        self.queue(cmd, permit)
    }

    /// Queues a client's command if it fits the budget now; refused with `etcdserver: too many
    /// requests` otherwise.
    pub fn try_admit(&self, cmd: Command, payload: usize) -> Result<(), ServerError> {
        let permit = self
            .budget
            .clone()
            .try_acquire_many_owned(self.cost(payload))
            .map_err(|_| ServerError::TooManyRequests)?;
        self.queue(cmd, permit)
    }

    fn queue(&self, cmd: Command, permit: OwnedSemaphorePermit) -> Result<(), ServerError> {
        self.send(Command::Admitted {
            cmd: Box::new(cmd),
            permit,
        })
    }

    /// Bytes of the client budget held by commands the loop has not taken yet.
    pub fn queued_bytes(&self) -> usize {
        self.capacity - self.budget.available_permits()
    }

    /// The client budget, in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl rafthttp::Raft for Handle {
    fn process(&self, msgs: Vec<Message>, permit: OwnedSemaphorePermit) -> bool {
        self.tx.send(Command::Step { msgs, permit }).is_ok()
    }

    fn report_unreachable(&self, id: u64) {
        let _ = self.tx.send(Command::Unreachable(id));
    }

    fn report_snapshot(&self, to: u64, ok: bool) {
        let _ = self.tx.send(Command::SnapshotStatus { to, ok });
    }

    fn report_removed(&self) {
        let _ = self.tx.send(Command::Removed);
    }

    fn install_snapshot(&self, snapshot: rafthttp::Incoming) -> bool {
        self.tx.send(Command::InstallSnapshot(snapshot)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proposal::ProposalState;

    fn propose(id: u64, len: usize) -> Command {
        Command::Propose {
            id,
            data: vec![0; len],
            state: ProposalState::new(),
        }
    }

    /// A flood of proposals that the loop does not take: the queue holds at most its budget, the
    /// rest is refused with etcd's error, and room comes back as the loop takes commands.
    #[test]
    fn client_commands_queue_up_to_the_budget() {
        let budget = 64 * 1024;
        let (h, commands) = Handle::with_budget(budget);
        let mut admitted = 0;
        let mut refused = 0;
        for id in 0..10_000 {
            match h.try_admit(propose(id, 1000), 1000) {
                Ok(()) => admitted += 1,
                Err(e) => {
                    assert_eq!(e, ServerError::TooManyRequests);
                    assert_eq!(e.to_string(), "etcdserver: too many requests");
                    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
                    refused += 1;
                }
            }
            assert!(h.queued_bytes() <= budget, "{}", h.queued_bytes());
        }
        assert_eq!(admitted, budget / (1000 + COMMAND_OVERHEAD));
        assert_eq!(refused, 10_000 - admitted);
        // Control commands and peer messages are not held to the client budget.
        h.send(Command::Unreachable(2)).unwrap();
        // The loop takes one command: its share comes back.
        let taken = commands.rx.recv().unwrap();
        assert!(matches!(taken, Command::Admitted { .. }));
        drop(taken);
        assert!(h.try_admit(propose(1, 1000), 1000).is_ok());
        assert!(h.try_admit(propose(2, 1000), 1000).is_err());
    }

    #[test]
    fn a_waiting_client_gets_in_when_room_comes_back_or_is_refused_at_its_deadline() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let (h, commands) = Handle::with_budget(2 * COMMAND_OVERHEAD);
            h.try_admit(propose(1, 0), 0).unwrap();
            h.try_admit(propose(2, 0), 0).unwrap();
            // Full, and nobody takes a command: the wait runs out.
            let refused = h.admit(propose(3, 0), 0, Duration::from_millis(10)).await;
            assert_eq!(refused, Err(ServerError::TooManyRequests));
            let waiting = {
                let h = h.clone();
                tokio::spawn(
                    async move { h.admit(propose(4, 0), 0, Duration::from_secs(60)).await },
                )
            };
            tokio::task::yield_now().await;
            drop(commands.rx.recv().unwrap());
            assert_eq!(waiting.await.unwrap(), Ok(()));
            assert_eq!(h.queued_bytes(), 2 * COMMAND_OVERHEAD);
        });
    }
}
