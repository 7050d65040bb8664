//! Cluster membership, as etcd's `api/membership`: who the members are (id, name, peer and client URLs,
//! learner or voter), which ids were removed for good, and the rules a membership change must pass.
//!
//! The membership changes only by applying Raft entries, in log order, on every member alike: conf
//! changes (add, promote, remove, update peer URLs) and attribute updates (a member publishing its name and
//! client URLs when it starts). So it is the same on every member at the same applied index, and
//! `MemberList` agrees everywhere once the members have caught up. Each change is written to the backend
//! (`store`) in the same transaction as the consistent index, so a restart recovers exactly what was
//! applied.
//!
//! The checks that depend on things that are not in the log (is the cluster healthy enough to change, has
//! the learner caught up) are made before proposing, by the server (`server::reconfig`); the ones here
//! depend only on the membership and run at apply time, so every member decides alike.
//!
//! Knows Raft's conf change types (they carry the changes) but not the Raft loop, the transport or
//! the services; it never does I/O of its own beyond the backend transactions its callers hand it.

#![forbid(unsafe_code)]

mod metrics;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use api::hearthraftpb::{ConfChangeContext, MemberUpdate};
use api::{etcdserverpb, membershippb};
use prost::Message as _;
use raft::prelude::{ConfChange, ConfChangeType};

use rpctypes::ServerError;

/// etcd allows one learner at a time.
pub const MAX_LEARNERS: usize = 1;

/// The context of a normal entry that carries a `MemberUpdate` (raft-rs has no no-op conf change type
/// like etcd's `ConfChangeUpdateNode`, and new peer URLs do not change Raft's configuration).
pub const MEMBER_UPDATE_CONTEXT: &[u8] = b"hearth/member-update";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Member {
    pub id: u64,
    /// Empty until the member has started and published its attributes.
    pub name: String,
    /// Sorted when the member is added; as given by `MemberUpdate` after that (as etcd keeps them).
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl Member {
    /// etcd counts a member as started once it has published its name.
    pub fn is_started(&self) -> bool {
        !self.name.is_empty()
    }

    pub fn to_pb(&self) -> membershippb::Member {
        membershippb::Member {
            id: self.id,
            raft_attributes: Some(membershippb::RaftAttributes {
                peer_urls: self.peer_urls.clone(),
                is_learner: self.is_learner,
            }),
            member_attributes: Some(membershippb::Attributes {
                name: self.name.clone(),
                client_urls: self.client_urls.clone(),
            }),
        }
    }

    pub fn from_pb(m: &membershippb::Member) -> Member {
        let raft = m.raft_attributes.clone().unwrap_or_default();
        let attrs = m.member_attributes.clone().unwrap_or_default();
        Member {
            id: m.id,
            name: attrs.name,
            peer_urls: raft.peer_urls,
            client_urls: attrs.client_urls,
            is_learner: raft.is_learner,
        }
    }

    /// The member as the Cluster service reports it.
    pub fn to_etcd(&self) -> etcdserverpb::Member {
        etcdserverpb::Member {
            id: self.id,
            name: self.name.clone(),
            peer_ur_ls: self.peer_urls.clone(),
            client_ur_ls: self.client_urls.clone(),
            is_learner: self.is_learner,
        }
    }
}

/// How a membership change travels through Raft.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeEntry {
    /// A conf change (addition, promotion, removal); its `id` is the request id.
    Conf(ConfChange),
    /// An encoded `hearthraftpb.MemberUpdate`, proposed as a normal entry with
    /// [`MEMBER_UPDATE_CONTEXT`] (new peer URLs do not change Raft's configuration).
    MemberUpdate(Vec<u8>),
}

/// A membership change, decoded from a Raft `ConfChange` and its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Add(Member),
    Promote(u64),
    Remove(u64),
    /// New peer URLs for an existing member.
    UpdatePeerUrls(u64, Vec<String>),
}

impl Change {
    /// The entry that carries this change through Raft, with `id` as the request id to answer.
    pub fn to_entry(&self, id: u64) -> ChangeEntry {
        match self {
            Change::UpdatePeerUrls(member, urls) => ChangeEntry::MemberUpdate(
                MemberUpdate {
                    request_id: id,
                    member_id: *member,
                    peer_urls: urls.clone(),
                }
                .encode_to_vec(),
            ),
            _ => {
                let mut cc = self.to_conf_change();
                cc.id = id;
                ChangeEntry::Conf(cc)
            }
        }
    }

    /// Decodes a committed member update entry: the request id and the change.
    pub fn from_member_update(data: &[u8]) -> Result<(u64, Change), String> {
        let u =
            MemberUpdate::decode(data).map_err(|e| format!("undecodable member update: {e}"))?;
        Ok((
            u.request_id,
            Change::UpdatePeerUrls(u.member_id, u.peer_urls),
        ))
    }

    /// The `ConfChange` (without request id) that carries an addition, promotion or removal through Raft.
    /// (A peer URL update is not a conf change: see `to_entry`.)
    pub fn to_conf_change(&self) -> ConfChange {
        let mut cc = ConfChange::default();
        let ctx = |member: Member, is_promote: bool| {
            ConfChangeContext {
                member: Some(member.to_pb()),
                is_promote,
            }
            .encode_to_vec()
        };
        match self {
            Change::Add(m) => {
                cc.set_change_type(if m.is_learner {
                    ConfChangeType::AddLearnerNode
                } else {
                    ConfChangeType::AddNode
                });
                cc.node_id = m.id;
                cc.context = ctx(m.clone(), false).into();
            }
            Change::Promote(id) => {
                cc.set_change_type(ConfChangeType::AddNode);
                cc.node_id = *id;
                let m = Member {
                    id: *id,
                    ..Default::default()
                };
                cc.context = ctx(m, true).into();
            }
            Change::Remove(id) => {
                cc.set_change_type(ConfChangeType::RemoveNode);
                cc.node_id = *id;
            }
            Change::UpdatePeerUrls(id, _) => {
                // Never proposed as a conf change; an AddNode would promote a learner.
                cc.set_change_type(ConfChangeType::AddNode);
                cc.node_id = *id;
            }
        }
        cc
    }

    /// Decodes a committed `ConfChange`. An entry every member received alike, so an error here is the same
    /// everywhere: the change is skipped, never half applied.
    pub fn from_conf_change(cc: &ConfChange) -> Result<Change, String> {
        let ctx = || {
            let c = ConfChangeContext::decode(cc.context.as_ref())
                .map_err(|e| format!("undecodable conf change context: {e}"))?;
            let m = c
                .member
                .as_ref()
                .map(Member::from_pb)
                .ok_or("conf change context has no member")?;
            if m.id != cc.node_id {
                return Err(format!(
                    "conf change for {:x} carries member {:x}",
                    cc.node_id, m.id
                ));
            }
            Ok((m, c.is_promote))
        };
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let (mut m, is_promote) = ctx()?;
                if is_promote {
                    return Ok(Change::Promote(m.id));
                }
                m.is_learner = cc.get_change_type() == ConfChangeType::AddLearnerNode;
                Ok(Change::Add(m))
            }
            ConfChangeType::RemoveNode => Ok(Change::Remove(cc.node_id)),
        }
    }

    pub fn member_id(&self) -> u64 {
        match self {
            Change::Add(m) => m.id,
            Change::Promote(id) | Change::Remove(id) | Change::UpdatePeerUrls(id, _) => *id,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct State {
    members: BTreeMap<u64, Member>,
    removed: BTreeSet<u64>,
}

/// The membership of the cluster this member belongs to. Shared between the Raft loop (the only writer)
/// and the services.
#[derive(Debug)]
pub struct RaftCluster {
    local_id: u64,
    cluster_id: u64,
    state: RwLock<State>,
    /// Whether this member joined as a learner, for the time before it has applied its own addition.
    joined_as_learner: std::sync::atomic::AtomicBool,
    /// `--max-learners` (etcd checks each member's own setting at apply, so members should agree).
    max_learners: std::sync::atomic::AtomicUsize,
}

impl RaftCluster {
    pub fn new(
        local_id: u64,
        cluster_id: u64,
        members: impl IntoIterator<Item = Member>,
        removed: impl IntoIterator<Item = u64>,
    ) -> RaftCluster {
        let c = RaftCluster {
            local_id,
            cluster_id,
            state: RwLock::new(State {
                members: members.into_iter().map(|m| (m.id, m)).collect(),
                removed: removed.into_iter().collect(),
            }),
            joined_as_learner: Default::default(),
            max_learners: std::sync::atomic::AtomicUsize::new(MAX_LEARNERS),
        };
        c.publish_learner();
        c
    }

    /// etcd's `--max-learners`: most learners a change may leave in the membership.
    pub fn set_max_learners(&self, n: usize) {
        self.max_learners
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records what the cluster being joined said about this member, until the log says it again.
    pub fn set_joined_as_learner(&self, learner: bool) {
        self.joined_as_learner
            .store(learner, std::sync::atomic::Ordering::Release);
        self.publish_learner();
    }

    /// `etcd_server_is_learner` follows the local member.
    fn publish_learner(&self) {
        metrics::IS_LEARNER.set(if self.is_local_learner() { 1.0 } else { 0.0 });
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // Every write leaves the state whole (plain map inserts/removes), so a poisoned lock is harmless.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn local_id(&self) -> u64 {
        self.local_id
    }

    /// Every member, by id.
    pub fn members(&self) -> Vec<Member> {
        self.read().members.values().cloned().collect()
    }

    pub fn member(&self, id: u64) -> Option<Member> {
        self.read().members.get(&id).cloned()
    }

    pub fn voting_members(&self) -> Vec<Member> {
        self.read()
            .members
            .values()
            .filter(|m| !m.is_learner)
            .cloned()
            .collect()
    }

    pub fn is_removed(&self, id: u64) -> bool {
        self.read().removed.contains(&id)
    }

    pub fn removed(&self) -> Vec<u64> {
        self.read().removed.iter().copied().collect()
    }

    /// Whether this member is (still) a learner. A member that joined and has not applied its own addition
    /// yet goes by what the cluster told it when it joined.
    pub fn is_local_learner(&self) -> bool {
        match self.member(self.local_id) {
            Some(m) => m.is_learner,
            None => self
                .joined_as_learner
                .load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// etcd's `ValidateConfigurationChange`: the checks that depend only on the membership.
    pub fn validate(&self, change: &Change) -> Result<(), ServerError> {
        let st = self.read();
        let id = change.member_id();
        if st.removed.contains(&id) {
            return Err(ServerError::MemberNotFound);
        }
        match change {
            Change::Add(m) => {
                if st.members.contains_key(&id) {
                    return Err(ServerError::MemberExist);
                }
                let taken: BTreeSet<&String> =
                    st.members.values().flat_map(|m| &m.peer_urls).collect();
                if m.peer_urls.iter().any(|u| taken.contains(u)) {
                    return Err(ServerError::PeerUrlExist);
                }
                if m.is_learner
                    && st.members.values().filter(|m| m.is_learner).count() + 1
                        > self.max_learners.load(std::sync::atomic::Ordering::Relaxed)
                {
                    return Err(ServerError::TooManyLearners);
                }
            }
            Change::Promote(_) => match st.members.get(&id) {
                None => return Err(ServerError::MemberNotFound),
                Some(m) if !m.is_learner => return Err(ServerError::MemberNotLearner),
                Some(_) => {}
            },
            Change::Remove(_) => {
                if !st.members.contains_key(&id) {
                    return Err(ServerError::MemberNotFound);
                }
            }
            Change::UpdatePeerUrls(_, urls) => {
                if !st.members.contains_key(&id) {
                    return Err(ServerError::MemberNotFound);
                }
                let taken: BTreeSet<&String> = st
                    .members
                    .values()
                    .filter(|m| m.id != id)
                    .flat_map(|m| &m.peer_urls)
                    .collect();
                if urls.iter().any(|u| taken.contains(u)) {
                    return Err(ServerError::PeerUrlExist);
                }
            }
        }
        Ok(())
    }

    /// The member record(s) a validated change leaves behind: `(member to save, id removed)`.
    pub fn outcome(&self, change: &Change) -> (Option<Member>, Option<u64>) {
        let st = self.read();
        match change {
            Change::Add(m) => (Some(m.clone()), None),
            Change::Promote(id) => (
                st.members.get(id).map(|m| Member {
                    is_learner: false,
                    ..m.clone()
                }),
                None,
            ),
            Change::Remove(id) => (None, Some(*id)),
            Change::UpdatePeerUrls(id, urls) => (
                st.members.get(id).map(|m| Member {
                    peer_urls: urls.clone(),
                    ..m.clone()
                }),
                None,
            ),
        }
    }

    /// Makes an outcome (already written to the backend) visible.
    pub fn commit(&self, saved: Option<Member>, removed: Option<u64>) {
        let mut st = self.write();
        if let Some(m) = saved {
            st.members.insert(m.id, m);
        }
        if let Some(id) = removed {
            st.members.remove(&id);
            st.removed.insert(id);
        }
        drop(st);
        self.publish_learner();
    }

    /// Replaces the whole membership (a snapshot from the leader was installed: the backend now holds the
    /// leader's). Returns the ids of the members that are gone.
    pub fn replace(&self, members: Vec<Member>, removed: Vec<u64>) -> Vec<u64> {
        let mut st = self.write();
        let fresh: BTreeMap<u64, Member> = members.into_iter().map(|m| (m.id, m)).collect();
        let gone = st
            .members
            .keys()
            .filter(|id| !fresh.contains_key(id))
            .copied()
            .collect();
        st.members = fresh;
        st.removed = removed.into_iter().collect();
        drop(st);
        self.publish_learner();
        gone
    }

    /// The member with `name` and `client_urls` set, if it is a member (else None: a removed member's late
    /// publication, which etcd skips too).
    pub fn with_attributes(&self, id: u64, name: &str, client_urls: &[String]) -> Option<Member> {
        self.read().members.get(&id).map(|m| Member {
            name: name.to_string(),
            client_urls: client_urls.to_vec(),
            ..m.clone()
        })
    }

    /// etcd's `IsReadyToAddVotingMember`: after the addition, the started voters must still be a quorum.
    pub fn is_ready_to_add_voting_member(&self) -> bool {
        let voters = self.voting_members();
        let started = voters.iter().filter(|m| m.is_started()).count();
        let members = voters.len() + 1;
        // Adding a second member to a one-member cluster is how a cluster is grown from a restored member.
        if started == 1 && members == 2 {
            return true;
        }
        started > members / 2
    }

    /// etcd's `IsReadyToRemoveVotingMember`: the started voters that remain must be a quorum.
    pub fn is_ready_to_remove_voting_member(&self, id: u64) -> bool {
        let others: Vec<Member> = self
            .voting_members()
            .into_iter()
            .filter(|m| m.id != id)
            .collect();
        let started = others.iter().filter(|m| m.is_started()).count();
        started > others.len() / 2
    }

    /// etcd's `IsReadyToPromoteMember`: counting the learner as a started voter, the started voters must
    /// be a quorum.
    pub fn is_ready_to_promote_member(&self) -> bool {
        let voters = self.voting_members();
        let started = voters.iter().filter(|m| m.is_started()).count() + 1;
        let members = voters.len() + 1;
        started > members / 2
    }
}

#[cfg(test)]
mod tests;
