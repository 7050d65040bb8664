//! Several Raft loops in one process, connected by an in-memory transport that can cut members off: the
//! loop's replication, elections, held-back proposals and membership changes, without sockets.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use api::etcdserverpb::{InternalRaftRequest, PutRequest, RequestHeader};
use prost::Message as _;
use raft::prelude::MessageType;
use tokio::sync::Semaphore;

use super::*;
use crate::proposal::ProposalState;
use crate::storage::{open_log, Bootstrap, WalMeta};
use apply::applier::{Applied, ApplyResult};
use membership::store;
use rafthttp::{RaftTransport, SendReport};

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Net {
    routes: Mutex<HashMap<u64, crate::Handle>>,
    cut: Mutex<HashSet<u64>>,
    snapshots: Mutex<Vec<u64>>,
    /// Each member's backend and snapshot slot: when set, snapshots are delivered as the real transport
    /// does (a copy, staged at the receiver, installed by its Raft loop); else they fail.
    backends: Mutex<HashMap<u64, Store>>,
    deliver_snapshots: std::sync::atomic::AtomicBool,
    /// Bumped after every batch of messages a member's loop hands over (every `Ready`) and every
    /// snapshot delivery: what [`Net::eventually`] waits on. A leader's heartbeats and a leaderless
    /// member's campaigns keep such steps coming while anything can still change.
    steps: Mutex<u64>,
    stepped: Condvar,
}

/// A member's backend and its one snapshot slot.
type Store = (Arc<backend::Backend>, Arc<Semaphore>);

impl Net {
    fn step(&self) {
        *self.steps.lock().unwrap() += 1;
        self.stepped.notify_all();
    }

    /// Waits until `f` holds, looking again after every step a member takes; fails after
    /// [`DEADLINE`].
    fn eventually(&self, what: &str, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + DEADLINE;
        loop {
            let seen = *self.steps.lock().unwrap();
            if f() {
                return;
            }
            let mut steps = self.steps.lock().unwrap();
            while *steps == seen {
                let left = end
                    .checked_duration_since(Instant::now())
                    .unwrap_or_else(|| panic!("{what}: not within {DEADLINE:?}"));
                steps = self.stepped.wait_timeout(steps, left).unwrap().0;
            }
        }
    }

    /// Delivers `m`'s snapshot from `from` on its own thread, as the peer transport does over the
    /// network, and reports the outcome to the sender's loop.
    fn send_snapshot(self: &Arc<Net>, from: u64, mut m: raft::prelude::Message) {
        let net = self.clone();
        std::thread::spawn(move || {
            let ok = (|| {
                let (src, _) = net.backends.lock().unwrap().get(&from)?.clone();
                let (dst, slot) = net.backends.lock().unwrap().get(&m.to)?.clone();
                if net.cut.lock().unwrap().contains(&m.to) {
                    return None;
                }
                let (mut file, d) = src
                    .snapshot_with(|r| Described::read(r).map_err(backend::BackendError::Storage))
                    .ok()?;
                let md = m.mut_snapshot().mut_metadata();
                md.index = d.index;
                md.term = d.term;
                md.set_conf_state(d.conf_state?);
                let slot = slot.try_acquire_owned().ok()?;
                let staged = dst.install_staging_path();
                let mut out = std::fs::File::create(&staged).ok()?;
                std::io::copy(&mut file, &mut out).ok()?;
                let (reply, answer) = tokio::sync::oneshot::channel();
                let route = net.routes.lock().unwrap().get(&m.to)?.clone();
                route
                    .send(Command::InstallSnapshot(rafthttp::Incoming {
                        msg: m.clone(),
                        staged,
                        slot,
                        reply,
                    }))
                    .ok()?;
                recv(answer).ok()
            })()
            .is_some();
            net.snapshots.lock().unwrap().push(m.to);
            if let Some(r) = net.routes.lock().unwrap().get(&from) {
                let _ = r.send(Command::SnapshotStatus { to: m.to, ok });
            }
            net.step();
        });
    }
}

struct MemTransport {
    from: u64,
    net: Arc<Net>,
    permits: Arc<Semaphore>,
}

impl RaftTransport for MemTransport {
    fn send(&self, msgs: Vec<raft::prelude::Message>, report: &mut SendReport) {
        let routes = self.net.routes.lock().unwrap();
        let cut = self.net.cut.lock().unwrap();
        for m in msgs {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                if self
                    .net
                    .deliver_snapshots
                    .load(std::sync::atomic::Ordering::Acquire)
                {
                    self.net.send_snapshot(self.from, m);
                } else {
                    self.net.snapshots.lock().unwrap().push(m.to);
                    report.snapshot_failed.push(m.to);
                }
                continue;
            }
            let route = routes.get(&m.to);
            let permit = self.permits.clone().try_acquire_owned();
            match (route, permit) {
                (Some(r), Ok(permit)) if !cut.contains(&self.from) && !cut.contains(&m.to) => {
                    let _ = r.send(Command::Step {
                        msgs: vec![m],
                        permit,
                    });
                }
                _ => report.unreachable.push(m.to),
            }
        }
        drop((routes, cut));
        self.net.step();
    }
    fn add_peer(&self, _: u64, _: &[String]) {}
    fn remove_peer(&self, _: u64) {}
}

struct Member {
    id: u64,
    net: Arc<Net>,
    dir: tempfile::TempDir,
    kv: Arc<mvcc::KvStore>,
    backend: Arc<backend::Backend>,
    cluster: Arc<RaftCluster>,
    status: Arc<RaftStatus>,
    commands: crate::Handle,
    wait: Arc<Wait<ApplyResult>>,
    conf_wait: Arc<Wait<ConfResult>>,
    thread: Option<std::thread::JoinHandle<Result<(), RaftError>>>,
}

fn member(id: u64) -> membership::Member {
    membership::Member {
        id,
        name: format!("m{id}"),
        peer_urls: vec![format!("http://10.0.0.{id}:2380")],
        ..Default::default()
    }
}

/// How often the test members compact their log, and how much they keep.
#[derive(Clone, Copy)]
struct Compaction {
    snapshot_count: u64,
    catchup_entries: u64,
}

const RARELY: Compaction = Compaction {
    snapshot_count: 10_000,
    catchup_entries: 5_000,
};

fn start(net: &Arc<Net>, id: u64, boot: Bootstrap) -> Member {
    start_in(net, id, Some(boot), tempfile::tempdir().unwrap(), RARELY)
}

/// Starts member `id` on `dir` (bootstrapped with `boot` if it has no WAL yet), as `Hearth::start`
/// does.
fn start_in(
    net: &Arc<Net>,
    id: u64,
    boot: Option<Bootstrap>,
    dir: tempfile::TempDir,
    compaction: Compaction,
) -> Member {
    let backend = Arc::new(
        backend::Backend::open(dir.path().join("db"), backend::BackendConfig::default()).unwrap(),
    );
    let kv = Arc::new(mvcc::KvStore::open(backend.clone()).unwrap());
    let stored = store::load(&backend).unwrap();
    let (consistent_index, term) = kv.consistent_index_and_term().unwrap();
    let log = open_log(
        &dir.path().join("wal"),
        boot.as_ref(),
        &crate::Applied {
            consistent_index,
            term,
            conf_state: stored.conf_state.clone(),
        },
    )
    .unwrap();
    let cluster = Arc::new(RaftCluster::new(
        id,
        log.meta.cluster_id,
        stored.members,
        stored.removed,
    ));
    let wait = Arc::new(Wait::default());
    let conf_wait = Arc::new(Wait::default());
    let applier = Applier::new(
        kv.clone(),
        Arc::new(
            apply::lessor::Leases::recover(
                &kv,
                apply::lessor::LessorConfig::new(
                    Duration::from_millis(100),
                    Duration::from_millis(1000),
                ),
                Arc::new(Instant::now),
            )
            .unwrap(),
        ),
        wait.clone(),
    )
    .with_cluster(cluster.clone());
    let (tx, rx) = crate::Handle::channel();
    net.routes.lock().unwrap().insert(id, tx.clone());
    net.backends
        .lock()
        .unwrap()
        .insert(id, (backend.clone(), Arc::new(Semaphore::new(1))));
    let status = Arc::new(RaftStatus::default());
    let (applied_tx, _applied_rx) = watch::channel(0);
    let node = RaftNode::new(
        log,
        &NodeConfig {
            heartbeat: Duration::from_millis(10),
            election: Duration::from_millis(100),
            snapshot_count: compaction.snapshot_count,
            snapshot_catchup_entries: compaction.catchup_entries,
        },
        applier,
        backend.clone(),
        rx,
        status.clone(),
        applied_tx,
        ClusterParts {
            cluster: cluster.clone(),
            transport: Box::new(MemTransport {
                from: id,
                net: net.clone(),
                permits: Arc::new(Semaphore::new(1 << 16)),
            }),
            conf_wait: conf_wait.clone(),
        },
    )
    .unwrap();
    let thread = std::thread::spawn(move || node.run());
    Member {
        id,
        net: net.clone(),
        dir,
        kv,
        backend,
        cluster,
        status,
        commands: tx,
        wait,
        conf_wait,
        thread: Some(thread),
    }
}

fn new_cluster(net: &Arc<Net>, ids: &[u64]) -> Vec<Member> {
    new_cluster_with(net, ids, RARELY)
}

fn new_cluster_with(net: &Arc<Net>, ids: &[u64], compaction: Compaction) -> Vec<Member> {
    let members: Vec<_> = ids.iter().map(|&id| member(id)).collect();
    ids.iter()
        .map(|&id| {
            let boot = Bootstrap::NewCluster {
                meta: WalMeta {
                    node_id: id,
                    cluster_id: 7,
                    voters: ids.to_vec(),
                },
                members: members.clone(),
            };
            start_in(
                net,
                id,
                Some(boot),
                tempfile::tempdir().unwrap(),
                compaction,
            )
        })
        .collect()
}

impl Member {
    fn leader(&self) -> u64 {
        self.status.leader.load(Ordering::Acquire)
    }

    /// Proposes a put and returns the receiver of its result.
    fn put(&self, id: u64, key: &str) -> tokio::sync::oneshot::Receiver<ApplyResult> {
        let req = InternalRaftRequest {
            header: Some(RequestHeader {
                id,
                ..Default::default()
            }),
            put: Some(PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let rx = self.wait.register(id);
        self.commands
            .send(Command::Propose {
                id,
                data: req.encode_to_vec(),
                state: ProposalState::new(),
            })
            .unwrap();
        rx
    }

    fn change(&self, id: u64, change: Change) -> tokio::sync::oneshot::Receiver<ConfResult> {
        let rx = self.conf_wait.register(id);
        self.commands
            .send(Command::ProposeMembership {
                id,
                payload: change.to_entry(id).into(),
                state: ProposalState::new(),
            })
            .unwrap();
        rx
    }

    fn has(&self, key: &str) -> bool {
        let r = self
            .kv
            .read()
            .range(key.as_bytes(), None, Default::default())
            .unwrap();
        !r.kvs.is_empty()
    }

    fn stop(&mut self) -> Result<(), RaftError> {
        let _ = self.commands.send(Command::Stop);
        self.thread.take().unwrap().join().unwrap()
    }

    /// Stops the member and starts it again on its data.
    fn restart(mut self, net: &Arc<Net>, compaction: Compaction) -> Member {
        self.stop().unwrap();
        let (id, dir) = (
            self.id,
            std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()),
        );
        net.backends.lock().unwrap().remove(&id);
        drop(self);
        start_in(net, id, None, dir, compaction)
    }

    fn hash(&self) -> (u32, i64) {
        self.kv.hash_kv(0).unwrap()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

/// The answer `rx` gets, waited for (not polled) up to [`DEADLINE`].
fn recv<T>(rx: tokio::sync::oneshot::Receiver<T>) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    match rt.block_on(async { tokio::time::timeout(DEADLINE, rx).await }) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("answer dropped: {e}"),
        Err(_) => panic!("no answer within {DEADLINE:?}"),
    }
}

fn agreed_leader(ms: &[&Member]) -> Option<u64> {
    let l = ms[0].leader();
    (l != 0 && ms.iter().all(|m| m.leader() == l)).then_some(l)
}

#[test]
fn members_elect_replicate_and_agree_on_membership() {
    let net = Arc::new(Net::default());
    let ms = new_cluster(&net, &[1, 2, 3]);
    net.eventually("a leader", || {
        agreed_leader(&ms.iter().collect::<Vec<_>>()).is_some()
    });
    for m in &ms {
        let ids: Vec<u64> = m.cluster.members().iter().map(|m| m.id).collect();
        assert_eq!(ids, [1, 2, 3], "bootstrap membership on {}", m.id);
    }
    // Every member accepts writes; a follower's reach the leader.
    for (i, m) in ms.iter().enumerate() {
        match recv(m.put(100 + i as u64, &format!("k{i}"))) {
            Ok(Applied::Put(_)) => {}
            Ok(_) => panic!("not a put"),
            Err(e) => panic!("put on {}: {e}", m.id),
        }
    }
    for m in &ms {
        net.eventually("replicated", || (0..3).all(|i| m.has(&format!("k{i}"))));
    }
    let stored = store::load(&ms[0].backend).unwrap();
    assert_eq!(stored.members.len(), 3);
    assert_eq!(stored.conf_state.unwrap().voters.len(), 3);
}

#[test]
fn proposals_wait_for_a_leader_and_a_cut_off_leader_steps_down() {
    let net = Arc::new(Net::default());
    let ms = new_cluster(&net, &[1, 2, 3]);
    net.eventually("a leader", || {
        agreed_leader(&ms.iter().collect::<Vec<_>>()).is_some()
    });
    let old = agreed_leader(&ms.iter().collect::<Vec<_>>()).unwrap();
    let cut = ms.iter().find(|m| m.id == old).unwrap();
    net.cut.lock().unwrap().insert(old);
    let rest: Vec<&Member> = ms.iter().filter(|m| m.id != old).collect();
    net.eventually("a new leader", || {
        agreed_leader(&rest).is_some_and(|l| l != old)
    });
    // CheckQuorum: the cut-off leader steps down and knows no leader.
    net.eventually("the old leader steps down", || cut.leader() == 0);
    // A write there waits for a leader instead of failing: once the loop has taken the proposal
    // (it answers a later command), it holds it, unanswered and unapplied.
    let mut rx = cut.put(500, "held");
    let (reply, progress) = tokio::sync::oneshot::channel();
    cut.commands
        .send(Command::Progress { id: 1, reply })
        .unwrap();
    assert_eq!(recv(progress), None, "the cut-off member does not lead");
    assert_eq!(cut.leader(), 0);
    assert!(rx.try_recv().is_err(), "held, not answered");
    assert!(!cut.has("held"));
    // ...and goes through once the member is back.
    net.cut.lock().unwrap().clear();
    assert!(matches!(recv(rx), Ok(Applied::Put(_))));
    for m in &ms {
        net.eventually("replicated", || m.has("held"));
    }
}

#[test]
fn learner_is_added_promoted_and_a_member_removed_through_raft() {
    let net = Arc::new(Net::default());
    let mut ms = new_cluster(&net, &[1, 2, 3]);
    net.eventually("a leader", || {
        agreed_leader(&ms.iter().collect::<Vec<_>>()).is_some()
    });
    let learner = membership::Member {
        is_learner: true,
        name: String::new(),
        ..member(4)
    };
    let members = recv(ms[0].change(900, Change::Add(learner.clone()))).unwrap();
    assert!(members.iter().any(|m| m.id == 4 && m.is_learner));
    // The same change again is refused at apply time, with etcd's error.
    assert_eq!(
        recv(ms[1].change(901, Change::Add(learner))),
        Err(ServerError::MemberExist)
    );
    ms.push(start(
        &net,
        4,
        Bootstrap::Join {
            meta: WalMeta {
                node_id: 4,
                cluster_id: 7,
                voters: vec![],
            },
        },
    ));
    // The learner replays the log from its first entry and so learns the whole membership.
    net.eventually("the learner catches up", || {
        ms[3].cluster.members().len() == 4 && ms[3].cluster.is_local_learner()
    });
    let members = recv(ms[2].change(902, Change::Promote(4))).unwrap();
    assert!(members.iter().all(|m| !m.is_learner));
    net.eventually("promoted everywhere", || !ms[3].cluster.is_local_learner());
    assert_eq!(
        recv(ms[0].change(903, Change::Promote(4))),
        Err(ServerError::MemberNotLearner)
    );

    // Removing member 3: it stops on its own, the others carry on as three.
    let members = recv(ms[0].change(904, Change::Remove(3))).unwrap();
    assert!(members.iter().all(|m| m.id != 3));
    let mut removed = ms.remove(2);
    let stopped = removed.thread.take().unwrap().join().unwrap();
    assert!(matches!(stopped, Err(RaftError::Removed)), "{stopped:?}");
    net.routes.lock().unwrap().remove(&3);
    assert!(ms[0].cluster.is_removed(3));
    net.eventually("a leader of the three", || {
        agreed_leader(&ms.iter().collect::<Vec<_>>()).is_some_and(|l| l != 3)
    });
    // Once the new leader has applied an entry of its term (raft-rs turns a membership change proposed
    // before that into an empty entry, as etcd's raft does).
    assert!(matches!(recv(ms[2].put(906, "after")), Ok(Applied::Put(_))));
    assert_eq!(
        recv(ms[1].change(905, Change::Remove(3))),
        Err(ServerError::MemberNotFound)
    );
    for m in &ms {
        net.eventually("replicated", || m.has("after"));
        let st = store::load(&m.backend).unwrap();
        assert_eq!(st.removed, [3], "member {}", m.id);
        let cs = st.conf_state.unwrap();
        let mut voters = cs.voters.clone();
        voters.sort();
        assert_eq!(
            (voters, cs.learners),
            (vec![1, 2, 4], vec![]),
            "member {}",
            m.id
        );
    }
    assert!(net.snapshots.lock().unwrap().is_empty());
}

const OFTEN: Compaction = Compaction {
    snapshot_count: 10,
    catchup_entries: 2,
};

fn put_ok(m: &Member, id: u64, key: &str) {
    match recv(m.put(id, key)) {
        Ok(Applied::Put(_)) => {}
        Ok(_) => panic!("not a put"),
        Err(e) => panic!("put {key} on {}: {e}", m.id),
    }
}

fn leader_of<'a>(ms: &[&'a Member]) -> &'a Member {
    ms[0]
        .net
        .eventually("a leader", || agreed_leader(ms).is_some());
    let l = agreed_leader(ms).unwrap();
    ms.iter().find(|m| m.id == l).unwrap()
}

#[test]
fn follower_behind_the_compacted_log_installs_a_snapshot_and_restarts_from_it() {
    let net = Arc::new(Net::default());
    net.deliver_snapshots
        .store(true, std::sync::atomic::Ordering::Release);
    let mut ms = new_cluster_with(&net, &[1, 2, 3], OFTEN);
    let all: Vec<&Member> = ms.iter().collect();
    let leader = leader_of(&all).id;
    let behind = ms.iter().map(|m| m.id).find(|&id| id != leader).unwrap();
    net.cut.lock().unwrap().insert(behind);
    let rest: Vec<&Member> = ms.iter().filter(|m| m.id != behind).collect();
    for i in 0..60 {
        put_ok(leader_of(&rest), 1000 + i, &format!("k{i}"));
    }
    assert!(net.snapshots.lock().unwrap().is_empty());
    net.cut.lock().unwrap().clear();
    let b = ms.iter().find(|m| m.id == behind).unwrap();
    net.eventually("the member behind catches up", || b.has("k59"));
    net.eventually("by a snapshot", || {
        net.snapshots.lock().unwrap().contains(&behind)
    });
    assert!(b.backend.read().is_ok());
    net.eventually("same data everywhere", || {
        let h = ms[0].hash();
        ms.iter().all(|m| m.hash() == h)
    });
    // Writes go on, through the member that installed the snapshot too.
    put_ok(b, 2000, "after");
    for m in &ms {
        net.eventually("replicated", || m.has("after"));
    }
    assert_eq!(b.cluster.members().len(), 3);
    // It restarts from the snapshot: the WAL's marker and the installed backend agree.
    let i = ms.iter().position(|m| m.id == behind).unwrap();
    let b = ms.remove(i).restart(&net, OFTEN);
    net.eventually("it still has everything", || b.has("k0") && b.has("after"));
    put_ok(&b, 2001, "after-restart");
    ms.push(b);
    net.eventually("same data everywhere after the restart", || {
        let h = ms[0].hash();
        ms.iter().all(|m| m.has("after-restart") && m.hash() == h)
    });
}

#[test]
fn member_added_after_compaction_joins_by_snapshot() {
    let net = Arc::new(Net::default());
    net.deliver_snapshots
        .store(true, std::sync::atomic::Ordering::Release);
    let mut ms = new_cluster_with(&net, &[1, 2, 3], OFTEN);
    for i in 0..40 {
        put_ok(
            leader_of(&ms.iter().collect::<Vec<_>>()),
            3000 + i,
            &format!("j{i}"),
        );
    }
    let learner = membership::Member {
        is_learner: true,
        name: String::new(),
        ..member(4)
    };
    recv(ms[0].change(3900, Change::Add(learner))).unwrap();
    ms.push(start_in(
        &net,
        4,
        Some(Bootstrap::Join {
            meta: WalMeta {
                node_id: 4,
                cluster_id: 7,
                voters: vec![],
            },
        }),
        tempfile::tempdir().unwrap(),
        OFTEN,
    ));
    net.eventually("the new member catches up", || ms[3].has("j39"));
    net.eventually("by a snapshot", || {
        net.snapshots.lock().unwrap().contains(&4)
    });
    assert!(ms[3].cluster.is_local_learner());
    assert_eq!(ms[3].cluster.members().len(), 4);
    recv(ms[1].change(3901, Change::Promote(4))).unwrap();
    net.eventually("promoted", || !ms[3].cluster.is_local_learner());
    put_ok(&ms[3], 3902, "from-4");
    net.eventually("same data everywhere", || {
        let h = ms[0].hash();
        ms.iter().all(|m| m.has("from-4") && m.hash() == h)
    });
}

/// Messages no correct member sends, stepped straight into the loop (past the transport's own checks
/// where those would catch them): the members neither panic nor lose their data.
#[test]
fn hostile_peer_messages_do_not_bring_a_member_down() {
    use raft::prelude::{Entry as RaftEntry, Message};
    let net = Arc::new(Net::default());
    let ms = new_cluster(&net, &[1, 2, 3]);
    let all: Vec<&Member> = ms.iter().collect();
    let leader = leader_of(&all);
    put_ok(leader, 4000, "before");
    for m in &ms {
        net.eventually("replicated", || m.has("before"));
    }
    let follower = ms.iter().find(|m| m.id != leader.id).unwrap();
    let term = leader.status.term.load(Ordering::Acquire);
    let commit = follower.status.commit.load(Ordering::Acquire);
    let msg = |t: MessageType, to: u64, from: u64| {
        let mut m = Message {
            to,
            from,
            term,
            ..Default::default()
        };
        m.set_msg_type(t);
        m
    };
    let mut evil = Vec::new();
    // A heartbeat committing far beyond the follower's log.
    let mut hb = msg(MessageType::MsgHeartbeat, follower.id, leader.id);
    hb.commit = u64::MAX / 2;
    evil.push((follower, hb));
    // An append rewriting committed entries with another term.
    let mut app = msg(MessageType::MsgAppend, follower.id, leader.id);
    app.index = 0;
    app.log_term = 0;
    app.entries = (1..=commit)
        .map(|index| RaftEntry {
            index,
            term,
            ..Default::default()
        })
        .collect::<Vec<_>>()
        .into();
    evil.push((follower, app));
    // An append whose previous term precedes the whole log.
    let mut app = msg(MessageType::MsgAppend, follower.id, leader.id);
    app.index = commit + 1000;
    app.log_term = 0;
    evil.push((follower, app));
    // An append response acknowledging entries the leader never had.
    let mut resp = msg(MessageType::MsgAppendResponse, leader.id, follower.id);
    resp.index = u64::MAX - 1;
    evil.push((leader, resp));
    for (target, m) in evil {
        target
            .commands
            .send(Command::Step {
                msgs: vec![m],
                permit: Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap(),
            })
            .unwrap();
    }
    // And what the transport refuses on receipt never reaches the loop at all.
    for t in [
        MessageType::MsgHup,
        MessageType::MsgSnapStatus,
        MessageType::MsgPropose,
        MessageType::MsgReadIndex,
    ] {
        let mut m = msg(t, follower.id, leader.id);
        m.term = 0;
        assert!(
            rafthttp::validate::check_peer_message(follower.id, leader.id, &m).is_err(),
            "{t:?}"
        );
    }
    put_ok(leader, 4001, "after");
    for m in &ms {
        net.eventually("still replicating", || m.has("after"));
        assert!(m.thread.as_ref().is_some_and(|t| !t.is_finished()));
    }
}

#[test]
fn proposals_are_refused_past_etcds_gap_between_commit_and_apply() {
    let s = RaftStatus::default();
    s.commit.store(10 + MAX_APPLY_GAP, Ordering::Release);
    s.applied.store(10, Ordering::Release);
    assert_eq!(s.check_apply_gap(), Ok(()));
    s.commit.store(11 + MAX_APPLY_GAP, Ordering::Release);
    let e = s.check_apply_gap().unwrap_err();
    assert_eq!(e, ServerError::TooManyRequests);
    assert_eq!(e.to_string(), "etcdserver: too many requests");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert_eq!(MAX_APPLY_GAP, 5000);
}

#[test]
fn read_contexts_start_from_the_wall_clock_in_nanoseconds() {
    // 2020-09-13 in nanoseconds since the epoch: a constant start (0 in every run) would let a
    // restarted member take a request of its earlier run for its own.
    let start = first_read_seq();
    assert!(start > 1_600_000_000_000_000_000, "{start}");
    assert!(first_read_seq() >= start);
}
