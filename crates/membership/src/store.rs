//! The membership in the backend, as etcd keeps it in bolt: bucket `members` maps a member id (lower-case
//! hex, etcd's `types.ID` string) to the member (an encoded `membershippb.Member`), bucket
//! `members_removed` maps the id of every removed member to `removed`, and `meta/confState` holds the Raft
//! configuration (an encoded `eraftpb.ConfState`) that goes with them. All three are written in the
//! backend transaction that also records the consistent index of the entry that changed them, so after a
//! crash they are exactly as of the backend's consistent index.

use api::membershippb;
use backend::{Backend, BackendError, Bucket, Reader, WriteTxn};
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::ConfState;

use super::Member;

const META_CONF_STATE: &[u8] = b"confState";
const REMOVED: &[u8] = b"removed";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("corrupt membership record: {0}")]
    Corrupt(String),
}

fn key(id: u64) -> Vec<u8> {
    format!("{id:x}").into_bytes()
}

pub fn save_member(txn: &mut WriteTxn<'_>, m: &Member) -> Result<(), BackendError> {
    txn.put(Bucket::Members, &key(m.id), &m.to_pb().encode_to_vec())
}

/// Removes the member and records its id as removed for good.
pub fn remove_member(txn: &mut WriteTxn<'_>, id: u64) -> Result<(), BackendError> {
    txn.delete(Bucket::Members, &key(id))?;
    txn.put(Bucket::MembersRemoved, &key(id), REMOVED)
}

pub fn save_conf_state(txn: &mut WriteTxn<'_>, cs: &ConfState) -> Result<(), BackendError> {
    let bytes = cs
        .write_to_bytes()
        .map_err(|e| BackendError::Storage(format!("encoding the conf state: {e}")))?;
    txn.put(Bucket::Meta, META_CONF_STATE, &bytes)
}

/// Forgets the whole membership (for a backend that will start a new cluster: `hearthutl snapshot
/// restore`).
pub fn clear(txn: &mut WriteTxn<'_>) -> Result<(), BackendError> {
    txn.delete_range(Bucket::Members, &[], None)?;
    txn.delete_range(Bucket::MembersRemoved, &[], None)?;
    txn.delete(Bucket::Meta, META_CONF_STATE)?;
    Ok(())
}

/// What the backend holds about the membership.
#[derive(Debug, Default)]
pub struct Stored {
    pub members: Vec<Member>,
    pub removed: Vec<u64>,
    /// None in a backend that never applied a membership change.
    pub conf_state: Option<ConfState>,
}

fn parse_id(k: &[u8]) -> Result<u64, StoreError> {
    std::str::from_utf8(k)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("member key {k:?}")))
}

/// The Raft configuration a backend snapshot records (None if it never applied a membership change).
pub fn read_conf_state(r: &dyn Reader) -> Result<Option<ConfState>, StoreError> {
    match r.get(Bucket::Meta, META_CONF_STATE)? {
        None => Ok(None),
        Some(b) => {
            Ok(Some(ConfState::parse_from_bytes(&b).map_err(|e| {
                StoreError::Corrupt(format!("conf state: {e}"))
            })?))
        }
    }
}

pub fn load(backend: &Backend) -> Result<Stored, StoreError> {
    let r = backend.read()?;
    let mut members = Vec::new();
    for (k, v) in r.range(Bucket::Members, b"", None, 0)? {
        let id = parse_id(&k)?;
        let pb = membershippb::Member::decode(v.as_slice())
            .map_err(|e| StoreError::Corrupt(format!("member {id:x}: {e}")))?;
        let m = Member::from_pb(&pb);
        if m.id != id {
            return Err(StoreError::Corrupt(format!(
                "member {id:x} is stored as {:x}",
                m.id
            )));
        }
        members.push(m);
    }
    let mut removed = Vec::new();
    for (k, _) in r.range(Bucket::MembersRemoved, b"", None, 0)? {
        removed.push(parse_id(&k)?);
    }
    let conf_state = read_conf_state(&r)?;
    Ok(Stored {
        members,
        removed,
        conf_state,
    })
}
