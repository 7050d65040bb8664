//! The auto-compaction task: runs the `compactor` crate's schedule (`--auto-compaction-mode`,
//! `--auto-compaction-retention`) on tokio's clock, and proposes each compaction through Raft as a
//! client's `Compact` would be (not physical: the deletion of old records runs in the background on
//! every member). Every member runs it; it compacts only while this member leads (etcd pauses its
//! compactor on followers), reading leadership at each wake-up.

use std::sync::Arc;
use std::time::Instant;

use api::etcdserverpb::CompactionRequest;
use compactor::{Command, Compactor, Outcome, Retention};
use rpctypes::ServerError;
use tokio::sync::watch;
use v3rpc::{KvGetter as _, RaftKv as _};

use crate::etcdserver::EtcdServer;

/// Runs the compactor until `shutdown` says so.
pub async fn run(srv: Arc<EtcdServer>, retention: Retention, mut shutdown: watch::Receiver<bool>) {
    let rev = || srv.kv().rev();
    let (mut c, mut cmd) = Compactor::new(retention, Instant::now(), rev());
    loop {
        cmd = match cmd {
            Command::Wait(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                c.woke(Instant::now(), srv.leader() == srv.member_id(), rev())
            }
            Command::Compact(at) => {
                let req = CompactionRequest {
                    revision: at,
                    physical: false,
                };
                // The member's own request, as etcd's compactor makes it: not a client's, so as root.
                let root = v3rpc::Ctx::root();
                let outcome = tokio::select! {
                    r = srv.compact(&root, req) => match r {
                        Ok(_) => Outcome::Done,
                        Err(ServerError::Compacted) => Outcome::AlreadyCompacted,
                        Err(e) => Outcome::Failed(e.to_string()),
                    },
                    _ = shutdown.wait_for(|s| *s) => return,
                };
                c.compacted(Instant::now(), outcome, rev())
            }
        };
    }
}
