//! Range permissions (merging, key/range/prefix/from-key checks), the permission checks'
//! errors, the old-revision path, and the request-level checks.

use api::authpb::permission::Type as PermType;
use api::etcdserverpb::{
    compare, request_op, AuthRoleRevokePermissionRequest, AuthUserRevokeRoleRequest, Compare,
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use super::*;
use crate::range_perm_cache::{IntervalSet, UnifiedRangePermissions};

fn set(ivs: &[(&str, &str)]) -> IntervalSet {
    IntervalSet::merged(
        ivs.iter()
            .map(|(b, e)| (b.as_bytes().to_vec(), e.as_bytes().to_vec()))
            .collect(),
    )
}

fn ivs(s: &IntervalSet) -> Vec<(String, String)> {
    s.intervals()
        .iter()
        .map(|(b, e)| {
            (
                String::from_utf8(b.clone()).unwrap(),
                String::from_utf8(e.clone()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn intervals_merge_when_they_overlap_touch_or_nest_and_unbounded_ends_absorb() {
    let s = set(&[("c", "e"), ("a", "b"), ("b", "c"), ("d", "f"), ("x", "y")]);
    assert_eq!(
        ivs(&s),
        [("a".into(), "f".into()), ("x".into(), "y".into())]
    );
    let s = set(&[("a", "c"), ("b", "bb")]);
    assert_eq!(ivs(&s), [("a".into(), "c".into())]);
    // An empty end is "no upper bound" and swallows everything after its begin.
    let s = set(&[("m", ""), ("p", "q"), ("a", "b")]);
    assert_eq!(ivs(&s), [("a".into(), "b".into()), ("m".into(), "".into())]);
    // Empty and inverted intervals hold no key and are dropped.
    let s = set(&[("b", "a"), ("c", "c")]);
    assert!(s.intervals().is_empty());
}

#[test]
fn a_range_is_permitted_only_if_the_merged_intervals_cover_it_without_a_gap() {
    let s = set(&[("a", "c"), ("c", "e"), ("g", "")]);
    assert!(s.contains_range(b"a", b"e"));
    assert!(
        s.contains_range(b"b", b"d"),
        "covered across two touching grants"
    );
    assert!(!s.contains_range(b"b", b"f"), "gap [e, g)");
    assert!(s.contains_range(b"g", b""), "from-key up to the end");
    assert!(s.contains_range(b"h", b"z"));
    assert!(!s.contains_range(b"f", b""));
    assert!(s.contains_key(b"a"));
    assert!(s.contains_key(b"d"));
    assert!(!s.contains_key(b"e"));
    assert!(!s.contains_key(b"f"));
    assert!(s.contains_key(b"zzz"));
    // etcd's answer for an inverted range inside a granted interval is "permitted", outside
    // "denied" (Range returns nothing for it either way).
    assert!(s.contains_range(b"b", b"a"));
    assert!(!s.contains_range(b"f", b"a"));
}

#[test]
fn single_key_prefix_and_from_key_permissions_mean_what_etcd_means() {
    let perms = [
        perm(PermType::Read, b"k1", b""),
        perm(PermType::Readwrite, b"p/", b"p0"),
        perm(PermType::Write, b"a", b"z"),
        perm(PermType::Read, b"f", b"\0"),
    ];
    let u = UnifiedRangePermissions::build(perms.iter());
    use crate::range_perm_cache::Access::{Read, Write};
    assert!(u.permits(b"k1", b"", Read));
    assert!(u.permits(b"p/x", b"", Read));
    assert!(u.permits(b"p/", b"p0", Read), "the prefix itself");
    assert!(u.permits(b"p/a", b"p/b", Write));
    assert!(
        u.permits(b"p", b"p0", Write),
        "inside [a, z), which the prefix grant touches"
    );
    assert!(!u.permits(b"e", b"p0", Read), "starts before [f, +inf)");
    assert!(!u.permits(b"y", b"zz", Write), "past [a, z)");
    assert!(u.permits(b"f", b"\0", Read), "from-key f");
    assert!(u.permits(b"zz", b"", Read));
    assert!(!u.permits(b"e", b"\0", Read));
    assert!(u.permits(b"b", b"", Write));
    assert!(!u.permits(b"z", b"", Write), "range ends are exclusive");
    assert!(u.permits(b"k0", b"", Write), "inside [a, z)");
    assert!(!u.permits(b"e", b"", Read), "before [f, +inf)");
    // A single-key grant does not cover a longer key, nor a range starting at it.
    let only = UnifiedRangePermissions::build([perm(PermType::Read, b"k", b"")].iter());
    assert!(only.permits(b"k", b"", Read));
    assert!(!only.permits(b"k1", b"", Read));
    assert!(!only.permits(b"k", b"l", Read));
    assert!(
        only.permits(b"k", b"k\0", Read),
        "[k, k\\0) is the single key"
    );
    // "\0".."\0" grants everything.
    let all = UnifiedRangePermissions::build([perm(PermType::Read, b"\0", b"\0")].iter());
    assert!(all.permits(b"\0", b"\0", Read));
    assert!(all.permits(b"anything", b"", Read));
    assert!(!all.permits(b"anything", b"", Write));
    // Unknown permission types grant nothing (etcd stores but ignores them).
    let mut odd = perm(PermType::Read, b"a", b"");
    odd.perm_type = 7;
    let none = UnifiedRangePermissions::build([odd].iter());
    assert!(!none.permits(b"a", b"", Read));
}

#[test]
fn permissions_from_several_roles_are_merged_per_user() {
    let mut fx = Fx::new();
    fx.user_add("u", "pw");
    fx.role_add("r1");
    fx.role_add("r2");
    fx.grant("r1", PermType::Read, b"a", b"m");
    fx.grant("r2", PermType::Read, b"m", b"z");
    fx.grant_role("u", "r1");
    fx.enable();
    let ai = fx.ai("u");
    assert!(matches!(
        fx.store.is_range_permitted(&ai, b"a", b"z"),
        Err(AuthError::PermissionDenied)
    ));
    fx.grant_role("u", "r2");
    let ai = fx.ai("u");
    fx.store.is_range_permitted(&ai, b"a", b"z").unwrap();
    fx.store.is_range_permitted(&ai, b"l", b"n").unwrap();
    assert!(matches!(
        fx.store.is_range_permitted(&ai, b"a", b"\0"),
        Err(AuthError::PermissionDenied)
    ));
    fx.assert_persisted();
}

#[test]
fn checks_pass_everything_while_disabled_and_follow_etcds_order_of_errors_when_enabled() {
    let mut fx = Fx::new();
    fx.user_add("u", "pw");
    fx.role_add("r");
    fx.grant("r", PermType::Read, b"k", b"");
    fx.grant_role("u", "r");
    let nobody = AuthInfo::default();
    fx.store.is_put_permitted(&nobody, b"k").unwrap();
    fx.store.is_range_permitted(&nobody, b"a", b"\0").unwrap();
    fx.store.is_admin_permitted(&nobody).unwrap();

    fx.enable();
    let rev = fx.store.revision();
    let u = fx.ai("u");
    assert!(matches!(
        fx.store.is_range_permitted(&nobody, b"k", b""),
        Err(AuthError::UserEmpty)
    ));
    assert!(matches!(
        fx.store.is_range_permitted(
            &AuthInfo {
                username: "u".into(),
                revision: rev - 1
            },
            b"k",
            b""
        ),
        Err(AuthError::AuthOldRevision)
    ));
    assert!(matches!(
        fx.store.is_range_permitted(&fx.ai("ghost"), b"k", b""),
        Err(AuthError::PermissionDenied)
    ));
    fx.store.is_range_permitted(&u, b"k", b"").unwrap();
    assert!(matches!(
        fx.store.is_put_permitted(&u, b"k"),
        Err(AuthError::PermissionDenied)
    ));
    assert!(matches!(
        fx.store.is_delete_range_permitted(&u, b"k", b""),
        Err(AuthError::PermissionDenied)
    ));
    // A revision newer than the store's (a member behind the one that checked) is accepted.
    fx.store
        .is_range_permitted(
            &AuthInfo {
                username: "u".into(),
                revision: rev + 5,
            },
            b"k",
            b"",
        )
        .unwrap();
    // root may do anything, anywhere.
    let root = fx.ai("root");
    fx.store.is_put_permitted(&root, b"anything").unwrap();
    fx.store
        .is_delete_range_permitted(&root, b"\0", b"\0")
        .unwrap();
    fx.store.is_admin_permitted(&root).unwrap();
    assert!(matches!(
        fx.store.is_admin_permitted(&u),
        Err(AuthError::PermissionDenied)
    ));
    assert!(matches!(
        fx.store.is_admin_permitted(&fx.ai("ghost")),
        Err(AuthError::UserNotFound)
    ));
    assert!(matches!(
        fx.store.is_admin_permitted(&nobody),
        Err(AuthError::UserEmpty)
    ));
}

#[test]
fn a_request_authorized_before_a_revoke_is_refused_at_apply_with_old_revision() {
    let mut fx = Fx::new();
    fx.user_add("u", "pw");
    fx.role_add("r");
    fx.grant("r", PermType::Write, b"k", b"");
    fx.grant_role("u", "r");
    fx.enable();
    // The member checks the request and proposes it with the header's revision...
    let header = fx.ai("u");
    fx.store.is_put_permitted(&header, b"k").unwrap();
    // ...the revoke is applied first...
    let revoke = AuthRoleRevokePermissionRequest {
        role: "r".into(),
        key: b"k".to_vec(),
        range_end: vec![],
    };
    fx.apply(|s, t| s.role_revoke_permission(t, &revoke))
        .unwrap();
    // ...so at apply the write is refused, and the client's retry with fresh credentials is
    // denied.
    assert!(matches!(
        fx.store.is_put_permitted(&header, b"k"),
        Err(AuthError::AuthOldRevision)
    ));
    assert!(matches!(
        fx.store.is_put_permitted(&fx.ai("u"), b"k"),
        Err(AuthError::PermissionDenied)
    ));
}

#[test]
fn lease_checks_refuse_with_old_revision_when_the_store_moved_since_the_call_began() {
    let mut fx = kv_fixture();
    let keys = vec![b"rw/a".to_vec()];
    let seen = fx.store.revision();
    // An unrelated change lands while the caller's token is being looked up; a simple token then
    // carries the revision after it, so the permission checks themselves pass.
    fx.role_add("unrelated");
    let u = fx.ai("u");
    fx.store.is_put_permitted(&u, b"rw/a").unwrap();
    fx.store.is_range_permitted(&u, b"rw/a", b"").unwrap();
    assert!(matches!(
        fx.store.check_lease_renew(Some(&u), &keys, seen),
        Err(AuthError::AuthOldRevision)
    ));
    assert!(matches!(
        fx.store.check_lease_leases(Some(&u), &keys, seen),
        Err(AuthError::AuthOldRevision)
    ));
    assert!(matches!(
        fx.store.check_revision_unchanged(seen),
        Err(AuthError::AuthOldRevision)
    ));
    // Even a lease with no keys (no permission check at all) is refused.
    assert!(matches!(
        fx.store.check_lease_renew(Some(&u), &[], seen),
        Err(AuthError::AuthOldRevision)
    ));
    let now = fx.store.revision();
    fx.store.check_lease_renew(Some(&u), &keys, now).unwrap();
    fx.store.check_lease_leases(Some(&u), &keys, now).unwrap();
    fx.store.check_revision_unchanged(now).unwrap();
    // The root role is let through before the revision is compared (etcd returns early for
    // it in keep-alive and lease listing; time-to-live compares for everyone).
    let root = fx.ai("root");
    fx.store
        .check_lease_renew(Some(&root), &keys, seen)
        .unwrap();
    fx.store
        .check_lease_leases(Some(&root), &keys, seen)
        .unwrap();
    // Checks that are refused anyway keep their own error.
    assert!(matches!(
        fx.store
            .check_lease_renew(Some(&u), &[b"r/c".to_vec()], seen),
        Err(AuthError::PermissionDenied)
    ));
    assert!(matches!(
        fx.store.check_lease_leases(None, &keys, seen),
        Err(AuthError::UserEmpty)
    ));
}

#[test]
fn revoking_a_role_removes_its_permissions_from_the_cache() {
    let mut fx = Fx::new();
    fx.user_add("u", "pw");
    fx.role_add("r");
    fx.grant("r", PermType::Readwrite, b"a", b"\0");
    fx.grant_role("u", "r");
    fx.enable();
    fx.store.is_put_permitted(&fx.ai("u"), b"q").unwrap();
    let req = AuthUserRevokeRoleRequest {
        name: "u".into(),
        role: "r".into(),
    };
    fx.apply(|s, t| s.user_revoke_role(t, &req)).unwrap();
    assert!(matches!(
        fx.store.is_put_permitted(&fx.ai("u"), b"q"),
        Err(AuthError::PermissionDenied)
    ));
    fx.assert_persisted();
}

/// A store with auth enabled and user `u` who may read `r/`, write `w/`, read-write `rw/`.
fn kv_fixture() -> Fx {
    let mut fx = Fx::new();
    fx.user_add("u", "pw");
    fx.role_add("role");
    fx.grant("role", PermType::Read, b"r/", b"r0");
    fx.grant("role", PermType::Write, b"w/", b"w0");
    fx.grant("role", PermType::Readwrite, b"rw/", b"rw0");
    fx.grant_role("u", "role");
    fx.enable();
    fx
}

fn no_leases(_: i64) -> Vec<Vec<u8>> {
    Vec::new()
}

fn put(key: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    }
}

fn op(r: request_op::Request) -> RequestOp {
    RequestOp { request: Some(r) }
}

#[test]
fn put_checks_write_then_the_leases_keys_then_prev_kv_read() {
    let fx = kv_fixture();
    let u = fx.ai("u");
    fx.store.check_put(&u, &put("w/a"), &no_leases).unwrap();
    assert!(matches!(
        fx.store.check_put(&u, &put("r/a"), &no_leases),
        Err(AuthError::PermissionDenied)
    ));
    let prev = PutRequest {
        prev_kv: true,
        ..put("w/a")
    };
    assert!(matches!(
        fx.store.check_put(&u, &prev, &no_leases),
        Err(AuthError::PermissionDenied)
    ));
    let prev = PutRequest {
        prev_kv: true,
        ..put("rw/a")
    };
    fx.store.check_put(&u, &prev, &no_leases).unwrap();
    // Attaching a lease that already holds a key the user may not write is refused.
    let leased = PutRequest {
        lease: 5,
        ..put("w/b")
    };
    let lease_keys = |id: i64| {
        if id == 5 {
            vec![b"w/a".to_vec(), b"secret".to_vec()]
        } else {
            vec![]
        }
    };
    assert!(matches!(
        fx.store.check_put(&u, &leased, &lease_keys),
        Err(AuthError::PermissionDenied)
    ));
    let other = PutRequest {
        lease: 6,
        ..put("w/b")
    };
    fx.store.check_put(&u, &other, &lease_keys).unwrap();
    // root passes the lease check whatever the keys.
    fx.store
        .check_put(&fx.ai("root"), &leased, &lease_keys)
        .unwrap();
}

#[test]
fn range_and_delete_range_check_their_ranges_and_prev_kv() {
    let fx = kv_fixture();
    let u = fx.ai("u");
    let range = |k: &str, e: &str| RangeRequest {
        key: k.into(),
        range_end: e.into(),
        ..Default::default()
    };
    fx.store.check_range(&u, &range("r/", "r0")).unwrap();
    assert!(matches!(
        fx.store.check_range(&u, &range("r/", "s")),
        Err(AuthError::PermissionDenied)
    ));
    let del = |k: &str, e: &str, prev: bool| DeleteRangeRequest {
        key: k.into(),
        range_end: e.into(),
        prev_kv: prev,
    };
    fx.store
        .check_delete_range(&u, &del("w/", "w0", false))
        .unwrap();
    assert!(matches!(
        fx.store.check_delete_range(&u, &del("w/", "w0", true)),
        Err(AuthError::PermissionDenied)
    ));
    fx.store
        .check_delete_range(&u, &del("rw/", "rw0", true))
        .unwrap();
    assert!(matches!(
        fx.store.check_delete_range(&u, &del("r/x", "", false)),
        Err(AuthError::PermissionDenied)
    ));
}

#[test]
fn txn_checks_compares_both_branches_and_nested_transactions() {
    let fx = kv_fixture();
    let u = fx.ai("u");
    let cmp = |k: &str| Compare {
        key: k.into(),
        target: compare::CompareTarget::Value as i32,
        ..Default::default()
    };
    let ok = TxnRequest {
        compare: vec![cmp("r/x")],
        success: vec![op(request_op::Request::RequestPut(put("w/x")))],
        failure: vec![op(request_op::Request::RequestRange(RangeRequest {
            key: "rw/y".into(),
            ..Default::default()
        }))],
    };
    fx.store.check_txn(&u, &ok, &no_leases).unwrap();
    let bad_compare = TxnRequest {
        compare: vec![cmp("w/x")],
        ..ok.clone()
    };
    assert!(matches!(
        fx.store.check_txn(&u, &bad_compare, &no_leases),
        Err(AuthError::PermissionDenied)
    ));
    let bad_failure_branch = TxnRequest {
        failure: vec![op(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: "r/x".into(),
                ..Default::default()
            },
        ))],
        ..ok.clone()
    };
    assert!(matches!(
        fx.store.check_txn(&u, &bad_failure_branch, &no_leases),
        Err(AuthError::PermissionDenied)
    ));
    // A forbidden write hidden in a nested txn is found (etcd 3.4 missed it).
    let nested = TxnRequest {
        success: vec![op(request_op::Request::RequestTxn(TxnRequest {
            success: vec![op(request_op::Request::RequestPut(put("secret")))],
            ..Default::default()
        }))],
        ..ok.clone()
    };
    assert!(matches!(
        fx.store.check_txn(&u, &nested, &no_leases),
        Err(AuthError::PermissionDenied)
    ));
    // A put with prev_kv inside a txn needs read access too.
    let prev_in_txn = TxnRequest {
        success: vec![op(request_op::Request::RequestPut(PutRequest {
            prev_kv: true,
            ..put("w/x")
        }))],
        ..ok.clone()
    };
    assert!(matches!(
        fx.store.check_txn(&u, &prev_in_txn, &no_leases),
        Err(AuthError::PermissionDenied)
    ));
    fx.store
        .check_txn(&fx.ai("root"), &nested, &no_leases)
        .unwrap();
}

#[test]
fn lease_checks_need_a_user_and_access_to_every_attached_key() {
    let fx = kv_fixture();
    let u = fx.ai("u");
    let keys = vec![b"rw/a".to_vec(), b"w/b".to_vec()];
    fx.store.check_lease_keys_writable(&u, &keys).unwrap();
    let rev = fx.store.revision();
    fx.store.check_lease_renew(Some(&u), &keys, rev).unwrap();
    assert!(matches!(
        fx.store.check_lease_renew(None, &keys, rev),
        Err(AuthError::UserEmpty)
    ));
    assert!(matches!(
        fx.store.check_lease_keys_readable(Some(&u), &keys),
        Err(AuthError::PermissionDenied)
    ));
    fx.store
        .check_lease_keys_readable(Some(&u), &[b"rw/a".to_vec(), b"r/c".to_vec()])
        .unwrap();
    assert!(matches!(
        fx.store.check_lease_keys_readable(None, &[]),
        Err(AuthError::UserEmpty)
    ));
    // root reads every lease's keys, even with credentials from an older revision (etcd checks
    // admin first, and admin checks ignore the revision).
    let stale_root = AuthInfo {
        username: "root".into(),
        revision: 1,
    };
    fx.store
        .check_lease_keys_readable(Some(&stale_root), &[b"secret".to_vec()])
        .unwrap();
    assert!(matches!(
        fx.store.is_range_permitted(&stale_root, b"secret", b""),
        Err(AuthError::AuthOldRevision)
    ));
    assert!(matches!(
        fx.store.check_lease_keys_writable(&u, &[b"r/c".to_vec()]),
        Err(AuthError::PermissionDenied)
    ));
    fx.store.require_auth_info(Some(&u)).unwrap();
    assert!(matches!(
        fx.store.require_auth_info(None),
        Err(AuthError::UserEmpty)
    ));
    assert!(matches!(
        fx.store.require_admin(Some(&u)),
        Err(AuthError::PermissionDenied)
    ));
    assert!(matches!(
        fx.store.require_admin(None),
        Err(AuthError::UserEmpty)
    ));
    fx.store.require_admin(Some(&fx.ai("root"))).unwrap();

    // With auth disabled nothing is required.
    let plain = Fx::new();
    plain.store.check_lease_renew(None, &keys, 0).unwrap();
    plain.store.check_lease_leases(None, &keys, 0).unwrap();
    plain.store.check_lease_keys_readable(None, &keys).unwrap();
    plain.store.check_revision_unchanged(0).unwrap();
    plain.store.require_auth_info(None).unwrap();
    plain.store.require_admin(None).unwrap();
}
