//! Alarms, as etcd keeps them: a set of `(member, alarm type)` replicated through Raft
//! (`AlarmRequest` entries), persisted in the backend's `alarm` bucket in the same transaction
//! as the consistent index, and restored at start-up.
//!
//! While an alarm is active the applier refuses some requests, as etcd's capped and corrupt
//! appliers do ([`gate`]): under NOSPACE, puts, txns that contain a put and lease grants fail
//! with `etcdserver: mvcc: database space exceeded`, while reads, deletes, compactions and
//! revocations still work, so an operator can free space; under CORRUPT, every KV and lease
//! request that goes through Raft fails with `etcdserver: corrupt cluster` (reads do not, and are
//! still served, as etcd 3.5 serves them from its base applier). The decision depends only on replicated
//! state, so every member refuses the same entries. Deterministic, no sockets, no clocks.

use std::collections::BTreeSet;
use std::sync::RwLock;

use api::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType,
    InternalRaftRequest,
};
use backend::{Bucket, Reader};
use prost::Message as _;

use crate::quota;
use rpctypes::ServerError;

/// The active alarms of the cluster.
#[derive(Debug, Default)]
pub struct AlarmStore {
    active: RwLock<BTreeSet<(u64, i32)>>,
}

/// A change to apply to the in-memory set once its backend transaction committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmChange {
    Activate(u64, i32),
    Deactivate(u64, i32),
}

fn key(member: u64, alarm: i32) -> Vec<u8> {
    AlarmMember {
        member_id: member,
        alarm,
    }
    .encode_to_vec()
}

impl AlarmChange {
    /// Stores the change in the `alarm` bucket.
    pub fn write(&self, txn: &mut backend::WriteTxn<'_>) -> Result<(), backend::BackendError> {
        match *self {
            AlarmChange::Activate(m, a) => txn.put(Bucket::Alarm, &key(m, a), &[]),
            AlarmChange::Deactivate(m, a) => txn.delete(Bucket::Alarm, &key(m, a)).map(|_| ()),
        }
    }
}

impl AlarmStore {
    /// The alarms stored in the backend's `alarm` bucket (keys are encoded `AlarmMember`s).
    pub fn load(r: &impl Reader) -> Result<AlarmStore, ServerError> {
        let mut active = BTreeSet::new();
        let mut bad = 0usize;
        r.for_each(Bucket::Alarm, &[], None, &mut |k, _| {
            match AlarmMember::decode(k) {
                Ok(m) if m.alarm != AlarmType::None as i32 => {
                    active.insert((m.member_id, m.alarm));
                }
                _ => bad += 1,
            }
            true
        })
        .map_err(|e| ServerError::Internal(e.to_string()))?;
        if bad > 0 {
            tracing::warn!(bad, "ignored undecodable entries in the alarm bucket");
        }
        Ok(AlarmStore {
            active: RwLock::new(active),
        })
    }

    /// Replaces the alarms with those stored in `r` (the backend was replaced by a snapshot).
    pub fn reload(&self, r: &impl Reader) -> Result<(), ServerError> {
        let fresh = AlarmStore::load(r)?;
        let fresh = fresh.active.into_inner().unwrap_or_else(|p| p.into_inner());
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeSet<(u64, i32)>> {
        self.active.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Active alarms of type `alarm` (every type for `NONE`), ordered by member then type.
    pub fn get(&self, alarm: AlarmType) -> Vec<AlarmMember> {
        self.read()
            .iter()
            .filter(|(_, a)| alarm == AlarmType::None || *a == alarm as i32)
            .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect()
    }

    pub fn has(&self, alarm: AlarmType) -> bool {
        self.read().iter().any(|(_, a)| *a == alarm as i32)
    }

    /// Makes a committed change visible.
    pub fn commit(&self, change: AlarmChange) {
        let mut set = self.active.write().unwrap_or_else(|p| p.into_inner());
        match change {
            AlarmChange::Activate(m, a) => {
                if set.insert((m, a)) {
                    tracing::warn!(member = format!("{m:x}"), alarm = a, "alarm raised");
                }
            }
            AlarmChange::Deactivate(m, a) => {
                if set.remove(&(m, a)) {
                    tracing::warn!(member = format!("{m:x}"), alarm = a, "alarm disarmed");
                }
            }
        }
    }

    /// Computes an `AlarmRequest`'s response and the change it makes; the caller writes the
    /// change ([`AlarmChange::write`]) in the transaction that records the consistent index and,
    /// once committed, makes it visible with [`commit`](Self::commit).
    pub fn prepare(
        &self,
        req: &AlarmRequest,
    ) -> Result<(AlarmResponse, Option<AlarmChange>), ServerError> {
        let mut resp = AlarmResponse::default();
        let alarm = AlarmType::try_from(req.alarm).unwrap_or(AlarmType::None);
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => {
                resp.alarms = self.get(alarm);
                Ok((resp, None))
            }
            Ok(AlarmAction::Activate) => {
                // etcd ignores a request to raise "no alarm".
                if alarm == AlarmType::None {
                    return Ok((resp, None));
                }
                let m = AlarmMember {
                    member_id: req.member_id,
                    alarm: alarm as i32,
                };
                resp.alarms.push(m);
                Ok((
                    resp,
                    Some(AlarmChange::Activate(req.member_id, alarm as i32)),
                ))
            }
            Ok(AlarmAction::Deactivate) => {
                if !self.read().contains(&(req.member_id, alarm as i32)) {
                    return Ok((resp, None));
                }
                resp.alarms.push(AlarmMember {
                    member_id: req.member_id,
                    alarm: alarm as i32,
                });
                Ok((
                    resp,
                    Some(AlarmChange::Deactivate(req.member_id, alarm as i32)),
                ))
            }
            Err(_) => Err(ServerError::Internal(format!(
                "unknown alarm action {}",
                req.action
            ))),
        }
    }
}

/// etcd's capped and corrupt appliers: whether an entry may be applied under the active alarms.
pub fn gate(alarms: &AlarmStore, req: &InternalRaftRequest) -> Result<(), ServerError> {
    if alarms.has(AlarmType::Corrupt)
        && (req.range.is_some()
            || req.put.is_some()
            || req.delete_range.is_some()
            || req.txn.is_some()
            || req.compaction.is_some()
            || req.lease_grant.is_some()
            || req.lease_revoke.is_some())
    {
        return Err(ServerError::Corrupt);
    }
    if alarms.has(AlarmType::Nospace)
        && (req.put.is_some()
            || req.lease_grant.is_some()
            || req.txn.as_ref().is_some_and(|t| quota::cost_txn(t) > 0))
    {
        return Err(ServerError::NoSpace);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
