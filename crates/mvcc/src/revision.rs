//! Revisions and their on-disk encoding as keys of the backend's `key` bucket.

use crate::MvccError;

/// Length of an encoded revision: main (8 bytes, big endian), `_`, sub (8 bytes, big endian).
pub const REV_BYTES_LEN: usize = 8 + 1 + 8;
/// Length of an encoded tombstone revision: the revision plus a trailing `t`.
pub const MARKED_REV_BYTES_LEN: usize = REV_BYTES_LEN + 1;
const MARK_TOMBSTONE: u8 = b't';

/// A revision: `main` is the store revision of one atomic write transaction, `sub` the index
/// of a change within it. Ordered by `main`, then `sub`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// The store revision of the transaction that made the change.
    pub main: i64,
    /// The change's position within that transaction, from 0.
    pub sub: i64,
}

impl Revision {
    /// A revision.
    pub const fn new(main: i64, sub: i64) -> Revision {
        Revision { main, sub }
    }

    /// The 17-byte backend key of this revision (big-endian so byte order is revision order).
    pub fn to_bytes(self) -> [u8; REV_BYTES_LEN] {
        let mut b = [0u8; REV_BYTES_LEN];
        b[..8].copy_from_slice(&self.main.to_be_bytes());
        b[8] = b'_';
        b[9..].copy_from_slice(&self.sub.to_be_bytes());
        b
    }
}

/// A key of the `key` bucket: a revision, marked when the change was a deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketKey {
    /// The revision of the change.
    pub rev: Revision,
    /// The change deleted the key (the stored value is a `KeyValue` with only `key` set).
    pub tombstone: bool,
}

impl BucketKey {
    /// A bucket key.
    pub const fn new(rev: Revision, tombstone: bool) -> BucketKey {
        BucketKey { rev, tombstone }
    }

    /// The encoded key: 17 bytes, or 18 with the trailing `t` of a tombstone.
    pub fn to_bytes(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(MARKED_REV_BYTES_LEN);
        v.extend_from_slice(&self.rev.to_bytes());
        if self.tombstone {
            v.push(MARK_TOMBSTONE);
        }
        v
    }

    /// Decodes a key of the `key` bucket; anything malformed is [`MvccError::Corrupt`].
    pub fn from_bytes(b: &[u8]) -> Result<BucketKey, MvccError> {
        let corrupt = || MvccError::Corrupt(format!("invalid revision key {b:02x?}"));
        let tombstone = match b.len() {
            REV_BYTES_LEN => false,
            MARKED_REV_BYTES_LEN if b[REV_BYTES_LEN] == MARK_TOMBSTONE => true,
            _ => return Err(corrupt()),
        };
        if b[8] != b'_' {
            return Err(corrupt());
        }
        let main = i64::from_be_bytes(b[..8].try_into().map_err(|_| corrupt())?);
        let sub = i64::from_be_bytes(b[9..17].try_into().map_err(|_| corrupt())?);
        if main < 0 || sub < 0 {
            return Err(corrupt());
        }
        Ok(BucketKey {
            rev: Revision { main, sub },
            tombstone,
        })
    }
}
