//! Which of etcd's buckets hold what, and how a pair changes on its way between Hearth's
//! backend and etcd's file.
//!
//! Hearth's backend already uses etcd's bucket names and, for most buckets, etcd's bytes: the
//! `key` bucket (revision → `mvccpb.KeyValue`, see the `mvcc` crate), `lease` (id → `leasepb.Lease`),
//! `alarm` (`AlarmMember` → empty), the compaction marks and consistent index in `meta`, the
//! `auth*` buckets and `cluster` are copied byte for byte. Two records differ and are translated
//! when a snapshot is written for etcd: a member (Hearth: `membershippb.Member`; etcd: JSON) and
//! `meta/confState` (Hearth: protobuf; etcd 3.5: JSON).
//!
//! Reading etcd's file into Hearth keeps what describes the data (the key space, compaction
//! marks, leases, auth, alarms, the cluster version) and leaves out what describes the old
//! cluster's Raft log and members (consistent index, term, conf state, storage version, the
//! member buckets), which a restored member rebuilds from its flags, as `etcdutl snapshot
//! restore` does.

use std::borrow::Cow;

use backend::Bucket;
use prost::Message as _;

use crate::json;
use crate::SnapshotError;

/// The buckets of an etcd snapshot, in the order bbolt keeps them (by name, bytewise).
pub(crate) const BUCKETS: [Bucket; 10] = [
    Bucket::Alarm,
    Bucket::Auth,
    Bucket::AuthRoles,
    Bucket::AuthUsers,
    Bucket::Cluster,
    Bucket::Key,
    Bucket::Lease,
    Bucket::Members,
    Bucket::MembersRemoved,
    Bucket::Meta,
];

pub(crate) const META_CONSISTENT_INDEX: &[u8] = b"consistent_index";
pub(crate) const META_TERM: &[u8] = b"term";
pub(crate) const META_CONF_STATE: &[u8] = b"confState";
pub(crate) const META_SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
pub(crate) const META_FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
/// etcd 3.6 records its storage schema version here.
pub(crate) const META_STORAGE_VERSION: &[u8] = b"storageVersion";

/// The pair as etcd's file holds it.
pub(crate) fn to_etcd<'a>(
    bucket: Bucket,
    key: &[u8],
    value: &'a [u8],
) -> Result<Cow<'a, [u8]>, SnapshotError> {
    match bucket {
        Bucket::Members => {
            let m = api::membershippb::Member::decode(value).map_err(|e| {
                SnapshotError::Corrupt(format!("member {}: {e}", String::from_utf8_lossy(key)))
            })?;
            Ok(Cow::Owned(json::member(&m).into_bytes()))
        }
        Bucket::Meta if key == META_CONF_STATE => {
            let cs = json::ConfState::decode(value)
                .map_err(|e| SnapshotError::Corrupt(format!("meta confState: {e}")))?;
            Ok(Cow::Owned(json::conf_state(&cs).into_bytes()))
        }
        _ => Ok(Cow::Borrowed(value)),
    }
}

/// What happens to a bucket of etcd's file when it is read into Hearth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Import {
    /// Copied byte for byte into this backend bucket.
    Copy(Bucket),
    /// `meta`: only the compaction marks are kept.
    Meta,
    /// Left out: the restored member rebuilds it.
    Rebuilt,
    /// A bucket Hearth does not know: left out, and said so.
    Unknown,
}

pub(crate) fn import_rule(name: &[u8]) -> Import {
    match BUCKETS.iter().find(|b| b.name().as_bytes() == name) {
        Some(Bucket::Meta) => Import::Meta,
        Some(Bucket::Members | Bucket::MembersRemoved) => Import::Rebuilt,
        Some(b) => Import::Copy(*b),
        None => Import::Unknown,
    }
}

/// Whether a `meta` key of etcd's file is kept (the compaction marks), dropped silently (the old
/// cluster's Raft position and configuration), or unknown (`None`).
pub(crate) fn keep_meta(key: &[u8]) -> Option<bool> {
    if key == META_SCHEDULED_COMPACT || key == META_FINISHED_COMPACT {
        Some(true)
    } else if [
        META_CONSISTENT_INDEX,
        META_TERM,
        META_CONF_STATE,
        META_STORAGE_VERSION,
    ]
    .contains(&key)
    {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_in_bbolt_order_and_cover_the_backend() {
        let names: Vec<&str> = BUCKETS.iter().map(|b| b.name()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        for b in Bucket::ALL {
            assert!(BUCKETS.contains(&b), "{b} is not exported");
        }
    }

    #[test]
    fn import_rules() {
        assert_eq!(import_rule(b"key"), Import::Copy(Bucket::Key));
        assert_eq!(import_rule(b"authUsers"), Import::Copy(Bucket::AuthUsers));
        assert_eq!(import_rule(b"meta"), Import::Meta);
        assert_eq!(import_rule(b"members_removed"), Import::Rebuilt);
        assert_eq!(import_rule(b"test"), Import::Unknown);
        assert_eq!(keep_meta(b"finishedCompactRev"), Some(true));
        assert_eq!(keep_meta(b"term"), Some(false));
        assert_eq!(keep_meta(b"other"), None);
    }
}
