//! The Raft log on disk (the WAL) and in memory (raft-rs's `MemStorage`), as etcd's `storage.go` and
//! `raft.go` bootstrap and restart them.
//!
//! A new cluster's log starts, as etcd's does, with one committed `AddNode` entry per initial member (term 1,
//! indexes 1..=n, the member in the entry's context), identical on every initial member. So the membership is
//! in the log from its first entry: a member that joins later learns it by replaying the log, like any
//! other state. A joining member starts with an empty log and an empty configuration, and its leader
//! fills it.
//!
//! On restart the configuration is the one the backend recorded with the membership (`meta/confState`), at
//! the backend's consistent index; entries up to that index are not handed to the applier again (raft-rs
//! starts with `applied` there). The commit index in the WAL is saved lazily, so it is raised to what the
//! backend proves was committed.
//!
//! The backend only ever applies entries the WAL already holds, so its consistent index is an entry of the
//! WAL with the same term, or the latest snapshot marker. When it is not, the backend is a snapshot from
//! the leader whose install was interrupted before its marker reached the WAL (`node::snapshot`): the backend
//! is taken as the snapshot, the WAL's entries (all older, or from a term the snapshot superseded) are
//! dropped, and the missing marker is written, which is where the install would have got to. Likewise,
//! entries after a marker whose term is older than the marker's were left behind by an install (raft-rs
//! discarded them with its log) and are dropped: a log's terms never go down.
//!
//! `--force-new-cluster` ([`LogOptions::force_new_cluster`]) restarts a member's log as etcd's
//! `restartAsStandaloneNode` does: the uncommitted tail is dropped and committed conf changes removing
//! every other member are appended, so the member comes back alone with its data, id and cluster id.
//! Segments no longer needed (before the newest snapshot marker) are purged at open as `--max-wals` says.

use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfState, Entry, EntryType, HardState, Snapshot};
use raft::storage::MemStorage;

use crate::RaftError;
use membership::{Change, Member};

/// The node's identity and the voters it was bootstrapped with, kept in the WAL's metadata record:
/// node id, cluster id, voter count, voter ids (all big-endian).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalMeta {
    pub node_id: u64,
    pub cluster_id: u64,
    pub voters: Vec<u64>,
}

impl WalMeta {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(20 + 8 * self.voters.len());
        b.extend_from_slice(&self.node_id.to_be_bytes());
        b.extend_from_slice(&self.cluster_id.to_be_bytes());
        b.extend_from_slice(&(self.voters.len() as u32).to_be_bytes());
        for v in &self.voters {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<WalMeta, RaftError> {
        let bad = || RaftError::Corrupt("WAL metadata record is malformed".into());
        let u64_at = |i: usize| -> Result<u64, RaftError> {
            let s = b.get(i..i + 8).ok_or_else(bad)?;
            Ok(u64::from_be_bytes(s.try_into().map_err(|_| bad())?))
        };
        let n = u32::from_be_bytes(
            b.get(16..20)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize;
        if b.len() != 20 + 8 * n {
            return Err(bad());
        }
        let voters = (0..n)
            .map(|i| u64_at(20 + 8 * i))
            .collect::<Result<_, _>>()?;
        Ok(WalMeta {
            node_id: u64_at(0)?,
            cluster_id: u64_at(8)?,
            voters,
        })
    }
}

/// How the log of a member without a WAL starts.
#[derive(Debug, Clone)]
pub enum Bootstrap {
    /// A new cluster with these initial members.
    NewCluster { meta: WalMeta, members: Vec<Member> },
    /// Joining an existing cluster: the leader sends the log.
    Join { meta: WalMeta },
}

/// What the backend says about what was applied.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub consistent_index: u64,
    /// The term of the entry at the consistent index (0 if the backend never recorded it).
    pub term: u64,
    /// The configuration at the consistent index, if the backend ever applied a membership change.
    pub conf_state: Option<ConfState>,
}

/// The raft log as recovered from (or freshly created in) the WAL directory.
pub struct RecoveredLog {
    pub wal: wal::Wal,
    pub storage: MemStorage,
    pub meta: WalMeta,
    /// Index of the newest snapshot marker (0 if none).
    pub snapshot_index: u64,
}

/// The entries a new cluster's log starts with: one `AddNode` per member, in the given order.
pub fn bootstrap_entries(members: &[Member]) -> Result<Vec<Entry>, RaftError> {
    members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let cc = Change::Add(Member {
                is_learner: false,
                ..m.clone()
            })
            .to_conf_change();
            let mut e = Entry::default();
            e.set_entry_type(EntryType::EntryConfChange);
            e.term = 1;
            e.index = i as u64 + 1;
            e.data = cc
                .write_to_bytes()
                .map_err(|err| RaftError::Corrupt(err.to_string()))?
                .into();
            Ok(e)
        })
        .collect()
}

fn wal_entries(entries: &[Entry]) -> Result<Vec<wal::Entry>, RaftError> {
    entries
        .iter()
        .map(|e| {
            Ok(wal::Entry {
                index: e.index,
                term: e.term,
                data: e
                    .write_to_bytes()
                    .map_err(|err| RaftError::Corrupt(err.to_string()))?,
            })
        })
        .collect()
}

/// How the log is opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOptions {
    /// The WAL's fsync and segment-retention options (`--unsafe-no-fsync`, `--max-wals`).
    pub wal: wal::WalOptions,
    /// `--force-new-cluster`: restart an existing log as a cluster of this member alone
    /// ([`force_new_cluster`]). Ignored when there is no WAL yet.
    pub force_new_cluster: bool,
}

/// Opens the WAL in `dir`, or creates it as `boot` says if it does not exist, and rebuilds the in-memory
/// raft log.
pub fn open_log(
    dir: &std::path::Path,
    boot: Option<&Bootstrap>,
    applied: &Applied,
) -> Result<RecoveredLog, RaftError> {
    open_log_with(dir, boot, applied, &LogOptions::default())
}

/// [`open_log`] with options.
pub fn open_log_with(
    dir: &std::path::Path,
    boot: Option<&Bootstrap>,
    applied: &Applied,
    opts: &LogOptions,
) -> Result<RecoveredLog, RaftError> {
    if !wal::Wal::exists(dir) {
        let boot = boot.ok_or_else(|| {
            RaftError::Corrupt(format!(
                "no WAL in {} and nothing to bootstrap",
                dir.display()
            ))
        })?;
        return create_log(dir, boot, opts.wal);
    }
    let (w, rec) = wal::Wal::open_with_options(dir, opts.wal)?;
    if let Some((file, offset)) = &rec.repaired_tail {
        tracing::warn!(file = %file.display(), offset, "repaired a torn write at the end of the WAL");
    }
    let meta = WalMeta::decode(&rec.metadata)?;
    let mut w = w;
    let mut entries = Vec::with_capacity(rec.entries.len());
    for e in &rec.entries {
        let entry = Entry::parse_from_bytes(&e.data)
            .map_err(|err| RaftError::Corrupt(format!("entry {}: {err}", e.index)))?;
        if entry.index != e.index {
            return Err(RaftError::Corrupt(format!(
                "entry {} is labelled {}",
                entry.index, e.index
            )));
        }
        entries.push(entry);
    }
    // The configuration the log starts from, and the index from which the log's conf changes are not
    // in it yet.
    let (conf_state, conf_from) = match &applied.conf_state {
        Some(cs) => (cs.clone(), applied.consistent_index),
        // A log that starts with the bootstrap entries rebuilds its configuration by applying them.
        None if entries
            .first()
            .is_some_and(|e| e.index == 1 && e.get_entry_type() == EntryType::EntryConfChange) =>
        {
            (ConfState::default(), 0)
        }
        // A log from before membership was recorded: the voters it was bootstrapped with.
        None => (ConfState::from((meta.voters.clone(), vec![])), 0),
    };
    let mut marker = rec.snapshot;
    if let Some(m) = uninstalled_snapshot(applied, marker, &entries) {
        tracing::warn!(
            snapshot_index = m.index,
            snapshot_term = m.term,
            wal_last_index = entries.last().map(|e| e.index).unwrap_or(0),
            "the backend holds a snapshot whose install was interrupted before the WAL recorded it; \
             completing the install"
        );
        w.save_snapshot(m)?;
        marker = Some(m);
    }
    if let Some(m) = marker {
        // Entries up to the marker are covered by it (the WAL's replay drops them already); what follows
        // a marker in an older term was discarded with raft-rs's log when the snapshot was installed.
        entries.retain(|e| e.index > m.index);
        if let Some(stale) = entries.iter().position(|e| e.term < m.term) {
            tracing::warn!(
                from_index = entries[stale].index,
                snapshot_index = m.index,
                "dropping WAL entries an installed snapshot superseded"
            );
            entries.truncate(stale);
        }
        // Segments before the marker are no longer needed: purge them as `--max-wals` says.
        w.release_to(m.index)?;
    }
    let snapshot_index = marker.map(|m| m.index).unwrap_or(0);
    if let Some(first) = entries.first() {
        if first.index != snapshot_index + 1 {
            return Err(RaftError::Corrupt(format!(
                "log starts at {} but the snapshot is at {snapshot_index}",
                first.index
            )));
        }
    }
    let last = entries.last().map(|e| e.index).unwrap_or(snapshot_index);
    if applied.consistent_index > last {
        tracing::error!(
            consistent_index = applied.consistent_index,
            last_index = last,
            "the backend has applied entries the WAL does not have"
        );
    }
    let mut hs = match &rec.hard_state {
        Some(hs) => HardState::parse_from_bytes(hs)
            .map_err(|err| RaftError::Corrupt(format!("hard state: {err}")))?,
        None => HardState::default(),
    };
    // The commit index is saved lazily (with the next append): it can trail the snapshot marker and
    // what the backend applied, both of which were committed.
    hs.commit = hs
        .commit
        .max(snapshot_index)
        .max(applied.consistent_index)
        .min(last);
    // A snapshot from a later term than the saved hard state (its hard state was never saved after
    // the install): the term moves on, with no vote cast in it.
    if let Some(m) = marker.filter(|m| m.term > hs.term) {
        hs.term = m.term;
        hs.vote = 0;
    }
    if opts.force_new_cluster {
        force_new_cluster(
            &mut w,
            &meta,
            &mut entries,
            &mut hs,
            (&conf_state, conf_from),
        )?;
    }
    let storage = MemStorage::new();
    {
        let mut core = storage.wl();
        if let Some(m) = &marker {
            let mut snap = Snapshot::default();
            let md = snap.mut_metadata();
            md.index = m.index;
            md.term = m.term;
            md.set_conf_state(conf_state.clone());
            core.apply_snapshot(snap)?;
        }
        core.append(&entries)?;
        core.set_hardstate(hs);
        core.set_conf_state(conf_state);
    }
    Ok(RecoveredLog {
        wal: w,
        storage,
        meta,
        snapshot_index,
    })
}

/// The members in the configuration `conf_state` changed by the conf changes of `entries` after
/// index `from`, in order (etcd's `getIDs`): voters and learners alike.
fn member_ids(
    conf_state: &ConfState,
    entries: &[Entry],
    from: u64,
) -> Result<std::collections::BTreeSet<u64>, RaftError> {
    use raft::prelude::ConfChangeType;
    let mut ids: std::collections::BTreeSet<u64> = conf_state
        .voters
        .iter()
        .chain(&conf_state.learners)
        .copied()
        .collect();
    for e in entries.iter().filter(|e| e.index > from) {
        if e.get_entry_type() != EntryType::EntryConfChange {
            continue;
        }
        let cc = parse_conf_change(e)?;
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                ids.insert(cc.node_id);
            }
            ConfChangeType::RemoveNode => {
                ids.remove(&cc.node_id);
            }
        }
    }
    Ok(ids)
}

/// etcd's `restartAsStandaloneNode` (`--force-new-cluster`): entries past the commit index are
/// discarded, and committed conf change entries are appended that remove every other member of the
/// configuration (`conf_state` changed by the conf changes after `conf_from`, [`member_ids`]) (and add this one first if it is not among them, with etcd's placeholder peer URL), so the
/// member restarts as a cluster of its own, with its data, its id and its cluster id. The entries and
/// the commit index covering them are saved before anything else happens; the Raft loop applies
/// them as any committed entries, which removes the other members from the membership.
fn force_new_cluster(
    w: &mut wal::Wal,
    meta: &WalMeta,
    entries: &mut Vec<Entry>,
    hs: &mut HardState,
    (conf_state, conf_from): (&ConfState, u64),
) -> Result<(), RaftError> {
    let old_commit = hs.commit;
    if let Some(i) = entries.iter().position(|e| e.index > hs.commit) {
        tracing::info!(
            entry_index = entries[i].index,
            commit_index_from_wal = hs.commit,
            number_of_discarded_entries = entries.len() - i,
            "discarding uncommitted WAL entries"
        );
        entries.truncate(i);
    }
    let ids = member_ids(conf_state, entries, conf_from)?;
    let me = meta.node_id;
    let term = entries.last().map(|e| e.term).unwrap_or(0).max(hs.term);
    let mut changes = Vec::new();
    // Raft must never be left without a voter: this member is added before the others go.
    if !ids.contains(&me) {
        changes.push(Change::Add(Member {
            id: me,
            peer_urls: vec!["http://localhost:2380".into()],
            ..Default::default()
        }));
    }
    changes.extend(
        ids.iter()
            .filter(|&&id| id != me)
            .map(|&id| Change::Remove(id)),
    );
    let mut added = Vec::with_capacity(changes.len());
    for (i, c) in changes.iter().enumerate() {
        let mut e = Entry::default();
        e.set_entry_type(EntryType::EntryConfChange);
        e.term = term;
        e.index = hs.commit + 1 + i as u64;
        e.data = c
            .to_conf_change()
            .write_to_bytes()
            .map_err(|err| RaftError::Corrupt(err.to_string()))?
            .into();
        added.push(e);
    }
    if let Some(e) = added.last() {
        hs.commit = e.index;
    }
    if term > hs.term {
        hs.term = term;
        hs.vote = 0;
    }
    let hs_bytes = hs
        .write_to_bytes()
        .map_err(|e| RaftError::Corrupt(e.to_string()))?;
    // Entries replace whatever the WAL holds at their indexes (the uncommitted tail just discarded).
    w.save(Some(&hs_bytes), &wal_entries(&added)?)?;
    entries.extend(added);
    tracing::info!(
        cluster_id = format!("{:x}", meta.cluster_id),
        local_member_id = format!("{me:x}"),
        wal_commit_index = old_commit,
        commit_index = hs.commit,
        "forcing restart member"
    );
    Ok(())
}

fn create_log(
    dir: &std::path::Path,
    boot: &Bootstrap,
    opts: wal::WalOptions,
) -> Result<RecoveredLog, RaftError> {
    let (meta, entries) = match boot {
        Bootstrap::NewCluster { meta, members } => (meta, bootstrap_entries(members)?),
        Bootstrap::Join { meta } => (meta, Vec::new()),
    };
    let mut w = wal::Wal::create_with_options(dir, &meta.encode(), opts)?;
    let storage = MemStorage::new();
    if !entries.is_empty() {
        let hs = HardState {
            term: 1,
            commit: entries.len() as u64,
            ..Default::default()
        };
        let hs_bytes = hs
            .write_to_bytes()
            .map_err(|e| RaftError::Corrupt(e.to_string()))?;
        w.save(Some(&hs_bytes), &wal_entries(&entries)?)?;
        let mut core = storage.wl();
        core.append(&entries)?;
        core.set_hardstate(hs);
    }
    Ok(RecoveredLog {
        wal: w,
        storage,
        meta: meta.clone(),
        snapshot_index: 0,
    })
}

/// The snapshot the backend holds when its consistent index is neither the WAL's latest snapshot marker
/// nor an entry of the WAL with the same term (see the module doc). A backend that never recorded a term
/// (from before terms were recorded with the data) is taken at its word.
fn uninstalled_snapshot(
    applied: &Applied,
    marker: Option<wal::SnapshotMarker>,
    entries: &[Entry],
) -> Option<wal::SnapshotMarker> {
    let (index, term) = (applied.consistent_index, applied.term);
    if index == 0 || term == 0 {
        return None;
    }
    let held = match marker {
        Some(m) if index <= m.index => true,
        _ => entries.iter().any(|e| e.index == index && e.term == term),
    };
    (!held).then_some(wal::SnapshotMarker { index, term })
}

/// Decodes a committed `EntryConfChange`.
pub fn parse_conf_change(e: &Entry) -> Result<ConfChange, RaftError> {
    ConfChange::parse_from_bytes(&e.data)
        .map_err(|err| RaftError::Corrupt(format!("conf change {}: {err}", e.index)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    #[test]
    fn wal_meta_round_trips_and_rejects_garbage() {
        let m = WalMeta {
            node_id: 7,
            cluster_id: 9,
            voters: vec![7, 8],
        };
        assert_eq!(WalMeta::decode(&m.encode()).unwrap(), m);
        assert!(WalMeta::decode(&[1, 2, 3]).is_err());
        let mut long = m.encode();
        long.push(0);
        assert!(WalMeta::decode(&long).is_err());
        let mut huge = m.encode();
        huge[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(WalMeta::decode(&huge).is_err());
    }

    fn member(id: u64, name: &str) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![format!("http://127.0.0.1:{id}")],
            ..Default::default()
        }
    }

    #[test]
    fn new_cluster_log_starts_with_committed_additions_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let members = vec![member(1, "a"), member(2, "b"), member(3, "c")];
        let meta = WalMeta {
            node_id: 2,
            cluster_id: 99,
            voters: vec![1, 2, 3],
        };
        let boot = Bootstrap::NewCluster {
            meta: meta.clone(),
            members: members.clone(),
        };
        let log = open_log(dir.path(), Some(&boot), &Applied::default()).unwrap();
        let st = log.storage.initial_state().unwrap();
        assert_eq!(st.hard_state.commit, 3);
        assert_eq!(st.hard_state.term, 1);
        assert!(st.conf_state.voters.is_empty(), "applied from the log");
        let e = log
            .storage
            .entries(1, 4, None, raft::GetEntriesContext::empty(false))
            .unwrap();
        let changes: Vec<Change> = e
            .iter()
            .map(|e| Change::from_conf_change(&parse_conf_change(e).unwrap()).unwrap())
            .collect();
        assert_eq!(
            changes,
            members.iter().cloned().map(Change::Add).collect::<Vec<_>>()
        );
        drop(log);

        // Reopened before anything was applied: the same log, the configuration still to be applied.
        let log = open_log(dir.path(), None, &Applied::default()).unwrap();
        assert_eq!(log.meta, meta);
        let st = log.storage.initial_state().unwrap();
        assert_eq!(
            (st.hard_state.commit, log.storage.last_index().unwrap()),
            (3, 3)
        );
        assert!(st.conf_state.voters.is_empty());
        drop(log);

        // Reopened after the backend applied them: its configuration, and the commit it proves.
        let applied = Applied {
            consistent_index: 3,
            term: 1,
            conf_state: Some(ConfState::from((vec![1, 2, 3], vec![]))),
        };
        let log = open_log(dir.path(), None, &applied).unwrap();
        let st = log.storage.initial_state().unwrap();
        assert_eq!(st.conf_state.voters, [1, 2, 3]);
        assert_eq!(st.hard_state.commit, 3);
    }

    #[test]
    fn joining_member_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let meta = WalMeta {
            node_id: 5,
            cluster_id: 99,
            voters: vec![],
        };
        let log = open_log(
            dir.path(),
            Some(&Bootstrap::Join { meta }),
            &Applied::default(),
        )
        .unwrap();
        assert_eq!(log.storage.last_index().unwrap(), 0);
        drop(log);
        let log = open_log(dir.path(), None, &Applied::default()).unwrap();
        let st = log.storage.initial_state().unwrap();
        assert!(st.conf_state.voters.is_empty() && st.conf_state.learners.is_empty());
    }

    #[test]
    fn log_from_before_membership_was_recorded_keeps_its_voters() {
        // Such a WAL has its voters in the metadata and no bootstrap entries.
        let dir = tempfile::tempdir().unwrap();
        let meta = WalMeta {
            node_id: 1,
            cluster_id: 9,
            voters: vec![1],
        };
        let mut w = wal::Wal::create(dir.path(), &meta.encode()).unwrap();
        let e = Entry {
            index: 1,
            term: 2,
            ..Default::default()
        };
        let hs = HardState {
            term: 2,
            vote: 1,
            commit: 1,
            ..Default::default()
        };
        w.save(
            Some(&hs.write_to_bytes().unwrap()),
            &wal_entries(&[e]).unwrap(),
        )
        .unwrap();
        drop(w);
        let log = open_log(dir.path(), None, &Applied::default()).unwrap();
        let st = log.storage.initial_state().unwrap();
        assert_eq!(st.conf_state.voters, [1]);
        assert_eq!(st.hard_state, hs);
    }

    /// A WAL with entries 1..=5 of term 2 (the last two never committed) and commit 3.
    fn log_with_uncommitted_tail(dir: &std::path::Path) -> WalMeta {
        let meta = WalMeta {
            node_id: 1,
            cluster_id: 9,
            voters: vec![1],
        };
        let mut w = wal::Wal::create(dir, &meta.encode()).unwrap();
        let entries: Vec<Entry> = (1..=5)
            .map(|index| Entry {
                index,
                term: 2,
                ..Default::default()
            })
            .collect();
        let hs = HardState {
            term: 2,
            commit: 3,
            ..Default::default()
        };
        w.save(
            Some(&hs.write_to_bytes().unwrap()),
            &wal_entries(&entries).unwrap(),
        )
        .unwrap();
        meta
    }

    #[test]
    fn backend_ahead_of_the_wal_is_a_snapshot_whose_marker_is_written() {
        let dir = tempfile::tempdir().unwrap();
        log_with_uncommitted_tail(dir.path());
        let cs = ConfState::from((vec![1, 2, 3], vec![]));
        // The leader's snapshot, installed before its marker: index 100 of term 4.
        let applied = Applied {
            consistent_index: 100,
            term: 4,
            conf_state: Some(cs.clone()),
        };
        let log = open_log(dir.path(), None, &applied).unwrap();
        assert_eq!(log.snapshot_index, 100);
        let st = log.storage.initial_state().unwrap();
        assert_eq!((st.hard_state.commit, st.hard_state.term), (100, 4));
        assert_eq!(st.conf_state, cs);
        assert_eq!(log.storage.first_index().unwrap(), 101);
        assert_eq!(log.storage.last_index().unwrap(), 100);
        assert_eq!(log.storage.term(100).unwrap(), 4);
        drop(log);
        // The marker is durable: the same again, and nothing left of the old entries.
        let (_, rec) = wal::Wal::open(dir.path()).unwrap();
        assert_eq!(rec.snapshot.map(|m| (m.index, m.term)), Some((100, 4)));
        let log = open_log(dir.path(), None, &applied).unwrap();
        assert_eq!(log.snapshot_index, 100);
        assert_eq!(log.storage.last_index().unwrap(), 100);
    }

    #[test]
    fn snapshot_inside_the_wal_with_another_term_replaces_the_tail() {
        // Index 4 of term 2 is in the WAL (uncommitted); the leader's snapshot holds index 4 of term 3.
        let dir = tempfile::tempdir().unwrap();
        log_with_uncommitted_tail(dir.path());
        let applied = Applied {
            consistent_index: 4,
            term: 3,
            conf_state: Some(ConfState::from((vec![1], vec![]))),
        };
        let log = open_log(dir.path(), None, &applied).unwrap();
        assert_eq!(log.snapshot_index, 4);
        assert_eq!(
            log.storage.last_index().unwrap(),
            4,
            "entry 5 of term 2 is gone"
        );
        assert_eq!(log.storage.term(4).unwrap(), 3);
    }

    #[test]
    fn backend_at_a_wal_entry_is_not_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        log_with_uncommitted_tail(dir.path());
        let applied = Applied {
            consistent_index: 3,
            term: 2,
            conf_state: Some(ConfState::from((vec![1], vec![]))),
        };
        let log = open_log(dir.path(), None, &applied).unwrap();
        assert_eq!(log.snapshot_index, 0);
        assert_eq!(log.storage.last_index().unwrap(), 5);
        assert_eq!(log.storage.initial_state().unwrap().hard_state.commit, 3);
    }

    fn force() -> LogOptions {
        LogOptions {
            force_new_cluster: true,
            ..LogOptions::default()
        }
    }

    fn changes(log: &RecoveredLog, from: u64) -> Vec<Change> {
        let last = log.storage.last_index().unwrap();
        log.storage
            .entries(from, last + 1, None, raft::GetEntriesContext::empty(false))
            .unwrap()
            .iter()
            .map(|e| Change::from_conf_change(&parse_conf_change(e).unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn force_new_cluster_drops_the_uncommitted_tail_and_removes_the_others() {
        let dir = tempfile::tempdir().unwrap();
        log_with_uncommitted_tail(dir.path());
        let applied = Applied {
            consistent_index: 3,
            term: 2,
            conf_state: Some(ConfState::from((vec![1, 2], vec![3]))),
        };
        let log = open_log_with(dir.path(), None, &applied, &force()).unwrap();
        let st = log.storage.initial_state().unwrap();
        assert_eq!(st.hard_state.commit, 5, "the new entries are committed");
        assert_eq!(st.hard_state.term, 2);
        assert_eq!(log.storage.last_index().unwrap(), 5);
        assert_eq!(changes(&log, 4), [Change::Remove(2), Change::Remove(3)]);
        assert_eq!(log.storage.term(5).unwrap(), 2);
        // Raft starts from the old configuration and applies the removals.
        assert_eq!(st.conf_state.voters, [1, 2]);
        drop(log);

        // Durable: a restart without the flag finds the removals in place of the old tail.
        let log = open_log(dir.path(), None, &applied).unwrap();
        let st = log.storage.initial_state().unwrap();
        assert_eq!(st.hard_state.commit, 5);
        assert_eq!(changes(&log, 4), [Change::Remove(2), Change::Remove(3)]);
    }

    #[test]
    fn force_new_cluster_counts_committed_changes_and_adds_itself_when_missing() {
        // Member 1's log: entries 1..=2 applied (configuration {2, 3}), then a committed addition of 4
        // and an uncommitted addition of 5.
        let dir = tempfile::tempdir().unwrap();
        let meta = WalMeta {
            node_id: 1,
            cluster_id: 9,
            voters: vec![],
        };
        let mut w = wal::Wal::create(dir.path(), &meta.encode()).unwrap();
        let add = |index: u64, id: u64| {
            let cc = Change::Add(member(id, "x")).to_conf_change();
            let mut e = Entry::default();
            e.set_entry_type(EntryType::EntryConfChange);
            e.term = 3;
            e.index = index;
            e.data = cc.write_to_bytes().unwrap().into();
            e
        };
        let normal = |index: u64| Entry {
            index,
            term: 3,
            ..Default::default()
        };
        let entries = [normal(1), normal(2), add(3, 4), add(4, 5)];
        let hs = HardState {
            term: 3,
            vote: 2,
            commit: 3,
            ..Default::default()
        };
        w.save(
            Some(&hs.write_to_bytes().unwrap()),
            &wal_entries(&entries).unwrap(),
        )
        .unwrap();
        drop(w);
        let applied = Applied {
            consistent_index: 2,
            term: 3,
            conf_state: Some(ConfState::from((vec![2, 3], vec![]))),
        };
        let log = open_log_with(dir.path(), None, &applied, &force()).unwrap();
        let got = changes(&log, 4);
        assert_eq!(
            got,
            [
                Change::Add(Member {
                    id: 1,
                    peer_urls: vec!["http://localhost:2380".into()],
                    ..Default::default()
                }),
                Change::Remove(2),
                Change::Remove(3),
                Change::Remove(4),
            ]
        );
        let st = log.storage.initial_state().unwrap();
        assert_eq!((st.hard_state.commit, st.hard_state.vote), (7, 2));
    }

    #[test]
    fn force_new_cluster_of_a_lone_member_appends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        log_with_uncommitted_tail(dir.path());
        let applied = Applied {
            consistent_index: 3,
            term: 2,
            conf_state: Some(ConfState::from((vec![1], vec![]))),
        };
        let log = open_log_with(dir.path(), None, &applied, &force()).unwrap();
        assert_eq!(
            log.storage.last_index().unwrap(),
            3,
            "entries 4 and 5 dropped"
        );
        assert_eq!(log.storage.initial_state().unwrap().hard_state.commit, 3);
    }

    #[test]
    fn wal_options_reach_the_wal_on_create_and_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            wal: wal::WalOptions {
                unsafe_no_fsync: true,
                max_files: 3,
            },
            force_new_cluster: false,
        };
        let meta = WalMeta {
            node_id: 5,
            cluster_id: 99,
            voters: vec![],
        };
        let log = open_log_with(
            dir.path(),
            Some(&Bootstrap::Join { meta }),
            &Applied::default(),
            &opts,
        )
        .unwrap();
        assert_eq!(log.wal.options(), opts.wal);
        drop(log);
        let log = open_log_with(dir.path(), None, &Applied::default(), &opts).unwrap();
        assert_eq!(log.wal.options(), opts.wal);
        drop(log);
        let log = open_log(dir.path(), None, &Applied::default()).unwrap();
        assert!(!log.wal.options().unsafe_no_fsync);
    }

    #[test]
    fn missing_wal_without_bootstrap_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open_log(&dir.path().join("wal"), None, &Applied::default()).is_err());
    }
}
