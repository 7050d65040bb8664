//! The range-permission cache: each user's permissions from all their roles, merged into one set
//! of key intervals for reading and one for writing (etcd's `range_perm_cache.go`).
//!
//! # Key ranges
//!
//! A permission is `(key, range_end)` with etcd's conventions: an empty `range_end` is the single
//! key, `range_end == "\0"` is every key from `key` on, anything else is `[key, range_end)`. Keys
//! compare as bytes except that the empty byte string is *above* every key (etcd's
//! `BytesAffineComparable`): it stands for "no upper bound". A single key `k` is the interval
//! `[k, k"\0")`, which holds `k` and nothing else.
//!
//! # Merging and checks
//!
//! etcd keeps an interval tree per user and asks it "does some interval hold this key?" (a point
//! check) or "do the intervals overlapping this range cover it without a gap?" (a range check).
//! Here the intervals are sorted and merged once, when the cache is rebuilt, into disjoint,
//! non-touching intervals; both questions then become one binary search for the last interval
//! starting at or before the queried key: a point is permitted if that interval holds it, a range
//! if that interval holds all of it. This answers exactly what etcd's tree answers, including for
//! inverted ranges (`range_end < key`, which etcd's Range treats as empty).
//!
//! **Tradeoff.** The cache is rebuilt whole after every change of users, roles or permissions
//! (as etcd does): O(total permissions × log) per change, which is rare, so that checks, which
//! run on every request, cost O(log intervals) and allocate nothing.

use std::cmp::Ordering;

use api::authpb::{permission::Type as PermType, Permission};

/// etcd's `BytesAffineComparable` order: bytewise, except that the empty string is the largest.
pub(crate) fn affine_cmp(a: &[u8], b: &[u8]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

/// Whether `range_end` means "every key from `key` on" (`"\0"`).
pub(crate) fn is_open_ended(range_end: &[u8]) -> bool {
    range_end == [0]
}

/// etcd's `isValidPermissionRange`: a non-empty key and either no range end, `"\0"`, or a range
/// end above the key.
pub(crate) fn is_valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    if key.is_empty() {
        return false;
    }
    range_end.is_empty() || is_open_ended(range_end) || affine_cmp(key, range_end) == Ordering::Less
}

/// Disjoint, non-touching half-open intervals `[begin, end)` sorted by `begin` (affine order;
/// an empty `end` is unbounded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IntervalSet {
    ivs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl IntervalSet {
    /// Merges `ivs` (in any order; empty and inverted intervals are dropped: they hold no key).
    pub(crate) fn merged(mut ivs: Vec<(Vec<u8>, Vec<u8>)>) -> IntervalSet {
        ivs.retain(|(b, e)| affine_cmp(b, e) == Ordering::Less);
        ivs.sort_by(|x, y| affine_cmp(&x.0, &y.0));
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(ivs.len());
        for (b, e) in ivs {
            match out.last_mut() {
                // Touching intervals merge too: [a, c) and [c, d) cover [a, d) without a gap.
                Some(last) if affine_cmp(&b, &last.1) != Ordering::Greater => {
                    if affine_cmp(&e, &last.1) == Ordering::Greater {
                        last.1 = e;
                    }
                }
                _ => out.push((b, e)),
            }
        }
        IntervalSet { ivs: out }
    }

    /// The last interval whose begin is at or before `key`, the only one that can hold it.
    fn candidate(&self, key: &[u8]) -> Option<&(Vec<u8>, Vec<u8>)> {
        let n = self
            .ivs
            .partition_point(|(b, _)| affine_cmp(b, key) != Ordering::Greater);
        n.checked_sub(1).map(|i| &self.ivs[i])
    }

    /// Whether some interval holds `key` (etcd's `Intersects` with the point `[key, key"\0")`).
    pub(crate) fn contains_key(&self, key: &[u8]) -> bool {
        self.candidate(key)
            .is_some_and(|(_, e)| affine_cmp(key, e) == Ordering::Less)
    }

    /// Whether the intervals cover `[begin, end)` (`end` empty = unbounded; etcd's `Contains`).
    pub(crate) fn contains_range(&self, begin: &[u8], end: &[u8]) -> bool {
        self.candidate(begin).is_some_and(|(_, e)| {
            affine_cmp(begin, e) == Ordering::Less && affine_cmp(end, e) != Ordering::Greater
        })
    }

    #[cfg(test)]
    pub(crate) fn intervals(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.ivs
    }
}

/// One user's merged permissions (etcd's `unifiedRangePermissions`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct UnifiedRangePermissions {
    pub(crate) read: IntervalSet,
    pub(crate) write: IntervalSet,
}

/// Which permission an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// The interval a stored permission grants.
fn perm_interval(p: &Permission) -> (Vec<u8>, Vec<u8>) {
    let end = if p.range_end.is_empty() {
        let mut e = p.key.clone();
        e.push(0);
        e
    } else if is_open_ended(&p.range_end) {
        Vec::new()
    } else {
        p.range_end.clone()
    };
    (p.key.clone(), end)
}

impl UnifiedRangePermissions {
    /// Merges the permissions of all of a user's roles. Permission types other than READ, WRITE
    /// and READWRITE grant nothing (etcd stores them but ignores them here).
    pub(crate) fn build<'a>(perms: impl IntoIterator<Item = &'a Permission>) -> Self {
        let mut read = Vec::new();
        let mut write = Vec::new();
        for p in perms {
            let iv = perm_interval(p);
            match PermType::try_from(p.perm_type) {
                Ok(PermType::Read) => read.push(iv),
                Ok(PermType::Write) => write.push(iv),
                Ok(PermType::Readwrite) => {
                    read.push(iv.clone());
                    write.push(iv);
                }
                Err(_) => {}
            }
        }
        UnifiedRangePermissions {
            read: IntervalSet::merged(read),
            write: IntervalSet::merged(write),
        }
    }

    /// etcd's `isRangeOpPermitted` once the user is known: an empty `range_end` checks the single
    /// key, `"\0"` every key from `key` on, anything else `[key, range_end)`.
    pub(crate) fn permits(&self, key: &[u8], range_end: &[u8], access: Access) -> bool {
        let set = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        if range_end.is_empty() {
            set.contains_key(key)
        } else if is_open_ended(range_end) {
            set.contains_range(key, &[])
        } else {
            set.contains_range(key, range_end)
        }
    }
}
