//! Several Raft loops in one process, connected by an in-memory transport that can cut members off: the
//! loop's replication, elections, held-back proposals and membership changes, without sockets.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::etcdserverpb::{InternalRaftRequest, PutRequest, RequestHeader};
use prost::Message as _;
use raft::prelude::MessageType;
use tokio::sync::Semaphore;

use super::*;
use crate::applier::{Applied, ApplyResult};
use crate::membership::store;
use crate::proposal::ProposalState;
use crate::rafthttp::{RaftTransport, SendReport};

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Net {
    routes: Mutex<HashMap<u64, Sender<Command>>>,
    cut: Mutex<HashSet<u64>>,
    snapshots: Mutex<Vec<u64>>,
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
                self.net.snapshots.lock().unwrap().push(m.to);
                report.snapshot_failed.push(m.to);
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
    }
    fn add_peer(&self, _: u64, _: &[String]) {}
    fn remove_peer(&self, _: u64) {}
}

struct Member {
    id: u64,
    _dir: tempfile::TempDir,
    kv: Arc<mvcc::KvStore>,
    backend: Arc<backend::Backend>,
    cluster: Arc<RaftCluster>,
    status: Arc<RaftStatus>,
    commands: Sender<Command>,
    wait: Arc<Wait<ApplyResult>>,
    conf_wait: Arc<Wait<ConfResult>>,
    thread: Option<std::thread::JoinHandle<Result<(), RaftError>>>,
}

fn member(id: u64) -> crate::membership::Member {
    crate::membership::Member {
        id,
        name: format!("m{id}"),
        peer_urls: vec![format!("http://10.0.0.{id}:2380")],
        ..Default::default()
    }
}

fn start(net: &Arc<Net>, id: u64, boot: Bootstrap) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(
        backend::Backend::open(dir.path().join("db"), backend::BackendConfig::default()).unwrap(),
    );
    let kv = Arc::new(mvcc::KvStore::open(backend.clone()).unwrap());
    let cluster_id = match &boot {
        Bootstrap::NewCluster { meta, .. } | Bootstrap::Join { meta } => meta.cluster_id,
    };
    let log = open_log(
        &dir.path().join("wal"),
        Some(&boot),
        &crate::storage::Applied::default(),
    )
    .unwrap();
    let cluster = Arc::new(RaftCluster::new(id, cluster_id, [], []));
    let wait = Arc::new(Wait::default());
    let conf_wait = Arc::new(Wait::default());
    let applier = Applier::new(
        kv.clone(),
        crate::lessor::Leases::for_tests(&kv),
        wait.clone(),
    )
    .with_cluster(cluster.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    net.routes.lock().unwrap().insert(id, tx.clone());
    let status = Arc::new(RaftStatus::default());
    let (applied_tx, _applied_rx) = watch::channel(0);
    let node = RaftNode::new(
        log,
        &NodeConfig {
            heartbeat: Duration::from_millis(10),
            election: Duration::from_millis(100),
            snapshot_count: 10_000,
            snapshot_catchup_entries: 5_000,
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
        _dir: dir,
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
    let members: Vec<_> = ids.iter().map(|&id| member(id)).collect();
    ids.iter()
        .map(|&id| {
            start(
                net,
                id,
                Bootstrap::NewCluster {
                    meta: WalMeta {
                        node_id: id,
                        cluster_id: 7,
                        voters: ids.to_vec(),
                    },
                    members: members.clone(),
                },
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
                payload: change.to_payload(id),
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
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < end, "{what}: not within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn recv<T>(rx: tokio::sync::oneshot::Receiver<T>) -> T {
    let end = Instant::now() + DEADLINE;
    let mut rx = rx;
    loop {
        match rx.try_recv() {
            Ok(v) => return v,
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                assert!(Instant::now() < end, "no answer within {DEADLINE:?}");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("answer dropped: {e}"),
        }
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
    eventually("a leader", || {
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
        eventually("replicated", || (0..3).all(|i| m.has(&format!("k{i}"))));
    }
    let stored = store::load(&ms[0].backend).unwrap();
    assert_eq!(stored.members.len(), 3);
    assert_eq!(stored.conf_state.unwrap().voters.len(), 3);
}

#[test]
fn proposals_wait_for_a_leader_and_a_cut_off_leader_steps_down() {
    let net = Arc::new(Net::default());
    let ms = new_cluster(&net, &[1, 2, 3]);
    eventually("a leader", || {
        agreed_leader(&ms.iter().collect::<Vec<_>>()).is_some()
    });
    let old = agreed_leader(&ms.iter().collect::<Vec<_>>()).unwrap();
    let cut = ms.iter().find(|m| m.id == old).unwrap();
    net.cut.lock().unwrap().insert(old);
    let rest: Vec<&Member> = ms.iter().filter(|m| m.id != old).collect();
    eventually("a new leader", || {
        agreed_leader(&rest).is_some_and(|l| l != old)
    });
    // CheckQuorum: the cut-off leader steps down and knows no leader.
    eventually("the old leader steps down", || cut.leader() == 0);
    // A write there waits for a leader instead of failing...
    let rx = cut.put(500, "held");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!cut.has("held"));
    // ...and goes through once the member is back.
    net.cut.lock().unwrap().clear();
    assert!(matches!(recv(rx), Ok(Applied::Put(_))));
    for m in &ms {
        eventually("replicated", || m.has("held"));
    }
}

#[test]
fn learner_is_added_promoted_and_a_member_removed_through_raft() {
    let net = Arc::new(Net::default());
    let mut ms = new_cluster(&net, &[1, 2, 3]);
    eventually("a leader", || {
        agreed_leader(&ms.iter().collect::<Vec<_>>()).is_some()
    });
    let learner = crate::membership::Member {
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
    eventually("the learner catches up", || {
        ms[3].cluster.members().len() == 4 && ms[3].cluster.is_local_learner()
    });
    let members = recv(ms[2].change(902, Change::Promote(4))).unwrap();
    assert!(members.iter().all(|m| !m.is_learner));
    eventually("promoted everywhere", || !ms[3].cluster.is_local_learner());
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
    assert_eq!(
        recv(ms[1].change(905, Change::Remove(3))),
        Err(ServerError::MemberNotFound)
    );
    eventually("a leader of the three", || {
        agreed_leader(&ms.iter().collect::<Vec<_>>()).is_some()
    });
    assert!(matches!(recv(ms[2].put(906, "after")), Ok(Applied::Put(_))));
    for m in &ms {
        eventually("replicated", || m.has("after"));
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
