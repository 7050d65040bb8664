//! A cluster of real server processes on reserved loopback ports: start N members, find the
//! leader, kill/restart/cut off members, add members, and check that all members hold the same
//! data.

use std::time::Duration;

use etcd_client::MemberAddOptions;

use crate::poll::{self, Poll};
use crate::ports::{self, Port};
use crate::server::{Kind, MemberSpec, Probe, Server};

/// How long a cluster has to elect a leader, or members to converge.
pub const CONVERGE_DEADLINE: Duration = Duration::from_secs(30);

/// Flags every test cluster gets: a shorter election timeout than etcd's default keeps
/// failover tests quick (etcd requires at least 5 heartbeats per election timeout).
pub const FAST_ELECTIONS: [&str; 2] = ["--heartbeat-interval=50", "--election-timeout=500"];

pub struct Cluster {
    pub members: Vec<Server>,
    kind: Kind,
    token: String,
    args: Vec<String>,
}

impl Cluster {
    /// Starts `n` Hearth members (etcd with `HEARTH_TEST_TARGET=etcd`) as a new cluster with
    /// the test-only fault switch, and waits until every member serves a linearizable read.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(Kind::Hearth, n, &[]).await
    }

    /// Like `start`, with more flags for every member.
    pub async fn start_with(kind: Kind, n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_prepared(kind, n, extra, |_, _| {}).await
    }

    /// Like `start_with`, with `prepare(spec, data dir)` laying out each member's data dir before
    /// it starts (e.g. `hearthutl snapshot restore`).
    pub async fn start_prepared(
        kind: Kind,
        n: usize,
        extra: &[&str],
        mut prepare: impl FnMut(&MemberSpec, &std::path::Path),
    ) -> Cluster {
        let ports: Vec<(Port, Port)> = (0..n)
            .map(|_| (ports::reserve(), ports::reserve()))
            .collect();
        let token = format!("hearth-e2e-cluster-{}-{}", std::process::id(), ports[0].0);
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let initial = (0..n)
            .map(|i| format!("{}={}", names[i], ports[i].1.url()))
            .collect::<Vec<_>>()
            .join(",");
        let args: Vec<String> = FAST_ELECTIONS
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        let members = ports
            .into_iter()
            .zip(&names)
            .map(|((client, peer), name)| {
                Server::spawn_member_prepared(
                    kind,
                    MemberSpec {
                        name: name.clone(),
                        client,
                        peer,
                        initial_cluster: initial.clone(),
                        state: "new",
                        token: token.clone(),
                        args: args.clone(),
                        fault_file: true,
                        probe: Probe::Linearizable,
                    },
                    &mut prepare,
                )
            })
            .collect();
        let mut c = Cluster {
            members,
            kind,
            token,
            args,
        };
        for m in &mut c.members {
            m.wait_ready().await;
        }
        c
    }

    /// What runs (Hearth, or etcd when `HEARTH_TEST_TARGET=etcd`).
    pub fn kind(&self) -> Kind {
        self.members[0].kind()
    }

    pub fn member(&self, i: usize) -> &Server {
        &self.members[i]
    }

    pub fn member_mut(&mut self, i: usize) -> &mut Server {
        &mut self.members[i]
    }

    /// Client endpoints of the running members.
    pub fn endpoints(&self) -> Vec<String> {
        self.running().map(|i| self.members[i].endpoint()).collect()
    }

    /// Indexes of the running members.
    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|&i| self.members[i].is_running())
    }

    /// The member id of member `i` (from its Status).
    pub async fn member_id(&self, i: usize) -> u64 {
        let mut c = self.members[i].client().await;
        let s = c.status().await.expect("status");
        s.header().expect("header").member_id()
    }

    /// Index of the member that the running members (except `except`) agree leads, waiting
    /// for one.
    pub async fn wait_leader(&self, except: &[usize]) -> usize {
        poll::eventually(
            "a leader the running members agree on",
            CONVERGE_DEADLINE,
            async || self.leader(except).await,
        )
        .await
    }

    /// Waits until member `i` reports that it knows no leader (cut off from its peers, say);
    /// returns that Status.
    pub async fn wait_leader_lost(&self, i: usize) -> etcd_client::StatusResponse {
        let mut c = self.members[i].client().await;
        let what = format!("member {i} to lose its leader");
        poll::eventually(what, CONVERGE_DEADLINE, async || {
            let s = c.status().await.expect("status");
            match s.leader() {
                0 => Ok(s),
                leader => Err(format!("leader {leader:x}")),
            }
        })
        .await
    }

    async fn leader(&self, except: &[usize]) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for i in self.running().filter(|i| !except.contains(i)) {
            let mut c = crate::server::connect(&self.members[i].endpoint())
                .await
                .ok()?;
            let s = tokio::time::timeout(Duration::from_secs(3), c.status())
                .await
                .ok()?
                .ok()?;
            ids.push((i, s.header()?.member_id()));
            leaders.push(s.leader());
        }
        let first = *leaders.first()?;
        if first == 0 || leaders.iter().any(|&l| l != first) {
            return None;
        }
        ids.iter().find(|(_, id)| *id == first).map(|(i, _)| *i)
    }

    /// Waits until every running member has the same revision and applied index, then checks
    /// that HashKV at that revision is equal on all of them. Returns the revision.
    pub async fn assert_hashkv_equal(&self) -> i64 {
        let what = "every member at the same revision and applied index";
        let rev = poll::eventually(what, CONVERGE_DEADLINE, async || {
            let mut revs = Vec::new();
            let mut applied = Vec::new();
            for i in self.running() {
                let mut c = self.members[i].client().await;
                match c.status().await {
                    Ok(s) => {
                        revs.push(s.header().map(|h| h.revision()).unwrap_or(-1));
                        applied.push(s.raft_applied_index());
                    }
                    Err(_) => revs.push(-1),
                }
            }
            if all_equal(&revs) && all_equal(&applied) && revs[0] > 0 {
                Ok(revs[0])
            } else {
                Err(format!("revisions {revs:?}, applied {applied:?}"))
            }
        })
        .await;
        let hashes = self.hash_kv_all(rev).await;
        assert!(
            hashes
                .windows(2)
                .all(|w| (w[0].1, w[0].2) == (w[1].1, w[1].2)),
            "HashKV at revision {rev} differs between members: {hashes:?}"
        );
        rev
    }

    /// Checks, while writes may go on, that every running member has the same HashKV at one
    /// revision they have all applied (the smallest current revision among them). Returns it.
    pub async fn assert_hashkv_equal_at_common_revision(&self) -> i64 {
        let mut poll = Poll::new("every member at the same compaction", CONVERGE_DEADLINE);
        loop {
            let mut rev = i64::MAX;
            for i in self.running() {
                let mut c = self.members[i].client().await;
                let s = c.status().await.expect("status");
                rev = rev.min(s.header().expect("header").revision());
            }
            let hashes = self.hash_kv_all(rev).await;
            // A compaction can be applied on one member and not yet on another; HashKV is only
            // comparable between members at the same compaction (as etcd's corruption check).
            if hashes.windows(2).any(|w| w[0].2 != w[1].2) {
                poll.next(format!("members at different compactions: {hashes:?}"))
                    .await;
                continue;
            }
            assert!(
                hashes.windows(2).all(|w| w[0].1 == w[1].1),
                "HashKV at revision {rev} differs between members: {hashes:?}"
            );
            return rev;
        }
    }

    /// Every running member's (name, HashKV, compact revision) at `rev`.
    async fn hash_kv_all(&self, rev: i64) -> Vec<(String, u32, i64)> {
        let mut hashes = Vec::new();
        for i in self.running() {
            let mut c = self.members[i].client().await;
            let h = c.hash_kv(rev).await.expect("hash_kv");
            hashes.push((
                self.members[i].name().to_string(),
                h.hash(),
                h.compact_version(),
            ));
        }
        hashes
    }

    /// `--initial-cluster` for the running members plus `extra` (`name=url`).
    fn initial_cluster_with(&self, extra: &str) -> String {
        self.running()
            .map(|i| format!("{}={}", self.members[i].name(), self.members[i].peer_url()))
            .chain(std::iter::once(extra.to_string()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Adds a member (a learner if asked) with peer URL `url` through member `via`, retrying
    /// while the refusal is one that passes: etcd's rule that every peer must have been connected
    /// for 5 s (`etcdserver: unhealthy cluster`), or `Unavailable` (no leader for a moment).
    /// Returns the new member's id, or the first other refusal; with `patience` zero it does not
    /// retry at all.
    pub async fn member_add(
        &self,
        via: usize,
        url: &str,
        learner: bool,
        patience: Duration,
    ) -> Result<u64, (tonic::Code, String)> {
        let mut c = self.members[via].client().await;
        let mut poll = Poll::new(format!("{url} added"), patience);
        loop {
            let opts = learner.then(|| MemberAddOptions::new().with_is_learner());
            match c.member_add([url], opts).await {
                Ok(r) => return Ok(r.member().expect("added member").id()),
                Err(e) => {
                    let st = status_of(e);
                    let passes =
                        st.1 == "etcdserver: unhealthy cluster" || st.0 == tonic::Code::Unavailable;
                    if !passes || !poll.try_next().await {
                        return Err(st);
                    }
                }
            }
        }
    }

    /// Starts a member that was added with `MemberAdd` (with `peer.url()`), joining with
    /// `--initial-cluster-state existing`. Waits until it serves a serializable read. Returns
    /// its index.
    pub async fn join(&mut self, name: &str, client: Port, peer: Port) -> usize {
        let initial = self.initial_cluster_with(&format!("{name}={}", peer.url()));
        let mut s = Server::spawn_member(
            self.kind,
            MemberSpec {
                name: name.to_string(),
                client,
                peer,
                initial_cluster: initial,
                state: "existing",
                token: self.token.clone(),
                args: self.args.clone(),
                fault_file: true,
                probe: Probe::Serializable,
            },
        );
        s.wait_ready().await;
        self.members.push(s);
        self.members.len() - 1
    }
}

/// How long [`Cluster::member_add`] retries by default: etcd refuses changes until every peer
/// has been connected for 5 s.
pub const MEMBER_ADD_PATIENCE: Duration = Duration::from_secs(30);

/// A gRPC error's code and message (panics on a client-side error).
pub fn status_of(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not a gRPC status: {other}"),
    }
}

fn all_equal<T: PartialEq>(v: &[T]) -> bool {
    v.windows(2).all(|w| w[0] == w[1])
}
