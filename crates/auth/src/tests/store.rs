//! Every Auth RPC's apply-time semantics and errors, and that memory always equals disk.

use api::authpb::{permission::Type as PermType, Role, User, UserAddOptions};
use api::etcdserverpb::{
    AuthRoleDeleteRequest, AuthRoleGetRequest, AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserChangePasswordRequest,
    AuthUserDeleteRequest, AuthUserGetRequest, AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
    InternalAuthenticateRequest, InternalRaftRequest,
};
use backend::{Bucket, Reader};
use base64::Engine;
use prost::Message;

use super::*;
use crate::password::check_password;

fn rev_on_disk(fx: &Fx) -> Vec<u8> {
    fx.be
        .read()
        .unwrap()
        .get(Bucket::Auth, b"authRevision")
        .unwrap()
        .unwrap()
}

#[test]
fn open_writes_auth_revision_one_on_a_fresh_backend_and_keeps_it_afterwards() {
    let fx = Fx::new();
    assert_eq!(fx.store.revision(), 1);
    assert_eq!(rev_on_disk(&fx), 1u64.to_be_bytes());
    // No enabled flag until the first AuthEnable, as etcd.
    let read = fx.be.read().unwrap();
    assert_eq!(read.get(Bucket::Auth, b"authEnabled").unwrap(), None);
    drop(read);

    let mut fx = fx;
    fx.role_add("r");
    let mut txn = fx.be.write().unwrap();
    let again = AuthStore::open(&mut txn, TokenProvider::nop(), COST).unwrap();
    txn.commit().unwrap();
    assert_eq!(again.revision(), 2);
    assert!(again.role("r").is_some());
}

#[test]
fn load_from_writes_nothing_and_reads_revision_zero_from_an_empty_backend() {
    let dir = tempfile::tempdir().unwrap();
    let be = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
    let store = AuthStore::load_from(&be.read().unwrap(), TokenProvider::nop(), COST).unwrap();
    assert_eq!(store.revision(), 0);
    assert!(!store.is_enabled());
    assert_eq!(
        be.read()
            .unwrap()
            .get(Bucket::Auth, b"authRevision")
            .unwrap(),
        None
    );
}

#[test]
fn user_add_stores_hash_options_and_bumps_the_revision() {
    let mut fx = Fx::new();
    fx.user_add("alice", "pw");
    assert_eq!(fx.store.revision(), 2);
    let u = fx.store.user("alice").unwrap();
    assert_eq!(u.name, b"alice");
    assert!(check_password(&u.password, "pw"));
    assert!(!check_password(&u.password, "other"));
    // etcd stores an (empty) options message even when the request had none.
    assert_eq!(u.options, Some(UserAddOptions { no_password: false }));
    fx.assert_persisted();
}

#[test]
fn user_add_refuses_an_empty_or_existing_name_and_changes_nothing() {
    let mut fx = Fx::new();
    fx.user_add("alice", "pw");
    let rev = fx.store.revision();
    let empty = AuthUserAddRequest::default();
    assert!(matches!(
        fx.apply(|s, t| s.user_add(t, &empty)),
        Err(AuthError::UserEmpty)
    ));
    let dup = AuthUserAddRequest {
        name: "alice".into(),
        hashed_password: String::new(),
        ..Default::default()
    };
    assert!(matches!(
        fx.apply(|s, t| s.user_add(t, &dup)),
        Err(AuthError::UserAlreadyExist)
    ));
    assert_eq!(fx.store.revision(), rev);
    assert_eq!(rev_on_disk(&fx), rev.to_be_bytes());
    fx.assert_persisted();
}

#[test]
fn user_add_no_password_stores_no_hash_even_if_one_is_given() {
    let mut fx = Fx::new();
    let req = AuthUserAddRequest {
        name: "cn-user".into(),
        password: "ignored".into(),
        options: Some(UserAddOptions { no_password: true }),
        hashed_password: "aWdub3JlZA==".into(),
    };
    fx.apply(|s, t| s.user_add(t, &req)).unwrap();
    let u = fx.store.user("cn-user").unwrap();
    assert!(u.password.is_empty());
    assert_eq!(u.options, Some(UserAddOptions { no_password: true }));
    fx.assert_persisted();
}

#[test]
fn user_add_hashes_a_clear_text_password_at_apply_for_old_style_entries() {
    let mut fx = Fx::new();
    let req = AuthUserAddRequest {
        name: "old".into(),
        password: "clear".into(),
        ..Default::default()
    };
    fx.apply(|s, t| s.user_add(t, &req)).unwrap();
    let hash = &fx.store.user("old").unwrap().password;
    assert!(hash.starts_with(b"$2a$04$"));
    assert!(check_password(hash, "clear"));
}

#[test]
fn user_add_with_a_hash_that_is_not_base64_is_refused_as_etcd_does() {
    let mut fx = Fx::new();
    let req = AuthUserAddRequest {
        name: "bad".into(),
        hashed_password: "not base64!".into(),
        ..Default::default()
    };
    assert!(matches!(
        fx.apply(|s, t| s.user_add(t, &req)),
        Err(AuthError::NoPasswordUser)
    ));
    assert!(fx.store.user("bad").is_none());
    assert_eq!(fx.store.revision(), 1);
    fx.assert_persisted();
}

#[test]
fn user_delete_removes_the_user_and_refuses_root_while_enabled() {
    let mut fx = Fx::new();
    fx.user_add("alice", "pw");
    fx.user_add("root", "rootpw");
    let missing = AuthUserDeleteRequest { name: "bob".into() };
    assert!(matches!(
        fx.apply(|s, t| s.user_delete(t, &missing)),
        Err(AuthError::UserNotFound)
    ));
    let alice = AuthUserDeleteRequest {
        name: "alice".into(),
    };
    let rev = fx.store.revision();
    fx.apply(|s, t| s.user_delete(t, &alice)).unwrap();
    assert!(fx.store.user("alice").is_none());
    assert_eq!(fx.store.revision(), rev + 1);
    fx.assert_persisted();

    fx.enable();
    let root = AuthUserDeleteRequest {
        name: "root".into(),
    };
    let rev = fx.store.revision();
    assert!(matches!(
        fx.apply(|s, t| s.user_delete(t, &root)),
        Err(AuthError::InvalidAuthMgmt)
    ));
    assert_eq!(fx.store.revision(), rev);
    // Disabled again, root may go.
    fx.apply(|s, t| s.auth_disable(t)).unwrap();
    fx.apply(|s, t| s.user_delete(t, &root)).unwrap();
    assert!(fx.store.user("root").is_none());
    fx.assert_persisted();
}

#[test]
fn user_change_password_replaces_the_hash_and_keeps_roles_and_options() {
    let mut fx = Fx::new();
    fx.user_add("alice", "old");
    fx.role_add("r");
    fx.grant_role("alice", "r");
    let mut req = AuthUserChangePasswordRequest {
        name: "alice".into(),
        password: "new".into(),
        ..Default::default()
    };
    password::prepare_user_change_password(&mut req, COST).unwrap();
    assert!(req.password.is_empty());
    let rev = fx.store.revision();
    fx.apply(|s, t| s.user_change_password(t, &req)).unwrap();
    let u = fx.store.user("alice").unwrap();
    assert!(check_password(&u.password, "new"));
    assert!(!check_password(&u.password, "old"));
    assert_eq!(u.roles, vec!["r".to_string()]);
    assert_eq!(u.options, Some(UserAddOptions { no_password: false }));
    assert_eq!(fx.store.revision(), rev + 1);
    fx.assert_persisted();

    let missing = AuthUserChangePasswordRequest {
        name: "bob".into(),
        ..Default::default()
    };
    assert!(matches!(
        fx.apply(|s, t| s.user_change_password(t, &missing)),
        Err(AuthError::UserNotFound)
    ));
}

#[test]
fn user_change_password_of_a_no_password_user_stores_no_hash() {
    let mut fx = Fx::new();
    fx.user_add_no_password("cn");
    let mut req = AuthUserChangePasswordRequest {
        name: "cn".into(),
        password: "pw".into(),
        ..Default::default()
    };
    password::prepare_user_change_password(&mut req, COST).unwrap();
    fx.apply(|s, t| s.user_change_password(t, &req)).unwrap();
    assert!(fx.store.user("cn").unwrap().password.is_empty());
    fx.assert_persisted();
}

#[test]
fn user_change_password_invalidates_the_users_simple_tokens() {
    let mut fx = Fx::new();
    fx.user_add("alice", "pw");
    fx.enable();
    let token = fx.login("alice", 10, at(0)).unwrap();
    assert!(fx.store.auth_info_from_token(&token, at(1)).is_ok());
    let mut req = AuthUserChangePasswordRequest {
        name: "alice".into(),
        password: "pw2".into(),
        ..Default::default()
    };
    password::prepare_user_change_password(&mut req, COST).unwrap();
    fx.apply(|s, t| s.user_change_password(t, &req)).unwrap();
    assert!(matches!(
        fx.store.auth_info_from_token(&token, at(2)),
        Err(AuthError::InvalidAuthToken)
    ));
}

#[test]
fn user_grant_role_checks_user_and_role_keeps_roles_sorted_and_ignores_duplicates() {
    let mut fx = Fx::new();
    fx.user_add("alice", "pw");
    fx.role_add("zeta");
    fx.role_add("alpha");
    let no_user = AuthUserGrantRoleRequest {
        user: "bob".into(),
        role: "alpha".into(),
    };
    assert!(matches!(
        fx.apply(|s, t| s.user_grant_role(t, &no_user)),
        Err(AuthError::UserNotFound)
    ));
    let no_role = AuthUserGrantRoleRequest {
        user: "alice".into(),
        role: "nope".into(),
    };
    assert!(matches!(
        fx.apply(|s, t| s.user_grant_role(t, &no_role)),
        Err(AuthError::RoleNotFound)
    ));
    fx.grant_role("alice", "zeta");
    fx.grant_role("alice", "alpha");
    // root may be granted without a root role record.
    fx.grant_role("alice", "root");
    assert!(fx.store.role("root").is_none());
    assert_eq!(
        fx.store.user("alice").unwrap().roles,
        ["alpha", "root", "zeta"]
    );
    let rev = fx.store.revision();
    fx.grant_role("alice", "alpha");
    assert_eq!(
        fx.store.revision(),
        rev,
        "a duplicate grant changes nothing"
    );
    assert_eq!(
        fx.store.user("alice").unwrap().roles,
        ["alpha", "root", "zeta"]
    );
    fx.assert_persisted();
}

#[test]
fn user_revoke_role_removes_one_role_and_protects_root_while_enabled() {
    let mut fx = Fx::new();
    fx.user_add("alice", "pw");
    fx.role_add("r");
    fx.grant_role("alice", "r");
    let req = |name: &str, role: &str| AuthUserRevokeRoleRequest {
        name: name.into(),
        role: role.into(),
    };
    assert!(matches!(
        fx.apply(|s, t| s.user_revoke_role(t, &req("bob", "r"))),
        Err(AuthError::UserNotFound)
    ));
    assert!(matches!(
        fx.apply(|s, t| s.user_revoke_role(t, &req("alice", "other"))),
        Err(AuthError::RoleNotGranted)
    ));
    fx.apply(|s, t| s.user_revoke_role(t, &req("alice", "r")))
        .unwrap();
    assert!(fx.store.user("alice").unwrap().roles.is_empty());
    fx.assert_persisted();

    fx.enable();
    let rev = fx.store.revision();
    assert!(matches!(
        fx.apply(|s, t| s.user_revoke_role(t, &req("root", "root"))),
        Err(AuthError::InvalidAuthMgmt)
    ));
    assert_eq!(fx.store.revision(), rev);
    fx.apply(|s, t| s.auth_disable(t)).unwrap();
    fx.apply(|s, t| s.user_revoke_role(t, &req("root", "root")))
        .unwrap();
    fx.assert_persisted();
}

#[test]
fn user_get_and_user_list_report_roles_and_names_in_byte_order() {
    let mut fx = Fx::new();
    fx.user_add("bob", "pw");
    fx.user_add("Alice", "pw");
    fx.user_add("alice", "pw");
    fx.role_add("r");
    fx.grant_role("bob", "r");
    let got = fx
        .store
        .user_get(&AuthUserGetRequest { name: "bob".into() })
        .unwrap();
    assert_eq!(got.roles, ["r"]);
    assert!(matches!(
        fx.store.user_get(&AuthUserGetRequest {
            name: "nobody".into()
        }),
        Err(AuthError::UserNotFound)
    ));
    assert_eq!(fx.store.user_list().users, ["Alice", "alice", "bob"]);
}

#[test]
fn role_add_get_list_and_their_errors() {
    let mut fx = Fx::new();
    assert!(matches!(
        fx.apply(|s, t| s.role_add(t, &AuthRoleAddRequest::default())),
        Err(AuthError::RoleEmpty)
    ));
    fx.role_add("b");
    fx.role_add("a");
    assert!(matches!(
        fx.apply(|s, t| s.role_add(t, &AuthRoleAddRequest { name: "a".into() })),
        Err(AuthError::RoleAlreadyExist)
    ));
    assert_eq!(fx.store.revision(), 3);
    assert_eq!(fx.store.role_list().roles, ["a", "b"]);
    assert!(fx
        .store
        .role_get(&AuthRoleGetRequest { role: "a".into() })
        .unwrap()
        .perm
        .is_empty());
    assert!(matches!(
        fx.store.role_get(&AuthRoleGetRequest { role: "c".into() }),
        Err(AuthError::RoleNotFound)
    ));
    fx.assert_persisted();
}

#[test]
fn role_delete_revokes_the_role_from_every_user_and_protects_root_while_enabled() {
    let mut fx = Fx::new();
    fx.user_add("alice", "pw");
    fx.user_add("bob", "pw");
    fx.role_add("r");
    fx.role_add("s");
    fx.grant("r", PermType::Read, b"k", b"");
    fx.grant_role("alice", "r");
    fx.grant_role("alice", "s");
    fx.grant_role("bob", "r");
    let rev = fx.store.revision();
    fx.apply(|s, t| s.role_delete(t, &AuthRoleDeleteRequest { role: "r".into() }))
        .unwrap();
    assert_eq!(
        fx.store.revision(),
        rev + 1,
        "one revision for the whole change"
    );
    assert!(fx.store.role("r").is_none());
    assert_eq!(fx.store.user("alice").unwrap().roles, ["s"]);
    assert!(fx.store.user("bob").unwrap().roles.is_empty());
    fx.assert_persisted();
    assert!(matches!(
        fx.apply(|s, t| s.role_delete(t, &AuthRoleDeleteRequest { role: "r".into() })),
        Err(AuthError::RoleNotFound)
    ));

    fx.role_add("root");
    fx.enable();
    assert!(matches!(
        fx.apply(|s, t| s.role_delete(
            t,
            &AuthRoleDeleteRequest {
                role: "root".into()
            }
        )),
        Err(AuthError::InvalidAuthMgmt)
    ));
    assert!(fx.store.role("root").is_some());
}

#[test]
fn role_grant_permission_validates_the_range_and_keeps_permissions_sorted() {
    let mut fx = Fx::new();
    fx.role_add("r");
    let grant = |name: &str, p: Option<api::authpb::Permission>| AuthRoleGrantPermissionRequest {
        name: name.into(),
        perm: p,
    };
    assert!(matches!(
        fx.apply(|s, t| s.role_grant_permission(t, &grant("r", None))),
        Err(AuthError::PermissionNotGiven)
    ));
    for (key, end) in [
        (&b""[..], &b""[..]),
        (b"b", b"a"),
        (b"b", b"b"),
        (b"", b"\0"),
    ] {
        assert!(
            matches!(
                fx.apply(|s, t| s
                    .role_grant_permission(t, &grant("r", Some(perm(PermType::Read, key, end))))),
                Err(AuthError::InvalidAuthMgmt)
            ),
            "{key:?}..{end:?}"
        );
    }
    assert!(matches!(
        fx.apply(|s, t| s
            .role_grant_permission(t, &grant("nope", Some(perm(PermType::Read, b"a", b""))))),
        Err(AuthError::RoleNotFound)
    ));
    assert_eq!(fx.store.revision(), 2, "refused grants change nothing");

    fx.grant("r", PermType::Read, b"m", b"");
    fx.grant("r", PermType::Write, b"a", b"c");
    fx.grant("r", PermType::Read, b"m", b"n");
    fx.grant("r", PermType::Read, b"z", b"\0");
    // Same key and range end: the type is replaced, nothing is added.
    fx.grant("r", PermType::Readwrite, b"m", b"n");
    // Same key, other range end, after one that matches a later permission: no duplicate.
    fx.grant("r", PermType::Write, b"m", b"n");
    let perms = &fx.store.role("r").unwrap().key_permission;
    assert_eq!(
        perms,
        &vec![
            perm(PermType::Write, b"a", b"c"),
            perm(PermType::Read, b"m", b""),
            perm(PermType::Write, b"m", b"n"),
            perm(PermType::Read, b"z", b"\0"),
        ]
    );
    fx.assert_persisted();
}

#[test]
fn role_revoke_permission_needs_an_exact_key_and_range_end() {
    let mut fx = Fx::new();
    fx.role_add("r");
    fx.grant("r", PermType::Read, b"a", b"");
    fx.grant("r", PermType::Read, b"a", b"b");
    let revoke = |role: &str, key: &[u8], end: &[u8]| AuthRoleRevokePermissionRequest {
        role: role.into(),
        key: key.to_vec(),
        range_end: end.to_vec(),
    };
    assert!(matches!(
        fx.apply(|s, t| s.role_revoke_permission(t, &revoke("x", b"a", b""))),
        Err(AuthError::RoleNotFound)
    ));
    assert!(matches!(
        fx.apply(|s, t| s.role_revoke_permission(t, &revoke("r", b"a", b"c"))),
        Err(AuthError::PermissionNotGranted)
    ));
    fx.apply(|s, t| s.role_revoke_permission(t, &revoke("r", b"a", b"b")))
        .unwrap();
    assert_eq!(
        fx.store.role("r").unwrap().key_permission,
        vec![perm(PermType::Read, b"a", b"")]
    );
    fx.assert_persisted();
}

#[test]
fn auth_enable_requires_root_with_the_root_role_and_does_not_move_the_revision() {
    let mut fx = Fx::new();
    assert!(matches!(
        fx.apply(|s, t| s.auth_enable(t)),
        Err(AuthError::RootUserNotExist)
    ));
    fx.user_add("root", "pw");
    assert!(matches!(
        fx.apply(|s, t| s.auth_enable(t)),
        Err(AuthError::RootRoleNotExist)
    ));
    fx.grant_role("root", "root");
    let rev = fx.store.revision();
    fx.apply(|s, t| s.auth_enable(t)).unwrap();
    assert!(fx.store.is_enabled());
    assert_eq!(fx.store.revision(), rev);
    let flag = fx
        .be
        .read()
        .unwrap()
        .get(Bucket::Auth, b"authEnabled")
        .unwrap();
    assert_eq!(flag, Some(vec![1]));
    // Enabling again is a no-op.
    fx.apply(|s, t| s.auth_enable(t)).unwrap();
    assert_eq!(fx.store.revision(), rev);
    fx.assert_persisted();
    assert_eq!(
        fx.store.auth_status(),
        api::etcdserverpb::AuthStatusResponse {
            header: None,
            enabled: true,
            auth_revision: rev
        }
    );
}

#[test]
fn auth_disable_bumps_the_revision_and_forgets_every_token() {
    let mut fx = Fx::new();
    let rev0 = fx.store.revision();
    fx.apply(|s, t| s.auth_disable(t)).unwrap();
    assert_eq!(
        fx.store.revision(),
        rev0,
        "disabling a disabled store is a no-op"
    );
    fx.enable();
    let token = fx.login("root", 7, at(0)).unwrap();
    assert_eq!(fx.store.tokens().simple_tokens(), 1);
    let rev = fx.store.revision();
    fx.apply(|s, t| s.auth_disable(t)).unwrap();
    assert!(!fx.store.is_enabled());
    assert_eq!(fx.store.revision(), rev + 1);
    let flag = fx
        .be
        .read()
        .unwrap()
        .get(Bucket::Auth, b"authEnabled")
        .unwrap();
    assert_eq!(flag, Some(vec![0]));
    assert_eq!(fx.store.tokens().simple_tokens(), 0);
    fx.assert_persisted();
    // Re-enabled, the old token stays dead.
    fx.apply(|s, t| s.auth_enable(t)).unwrap();
    assert!(matches!(
        fx.store.auth_info_from_token(&token, at(1)),
        Err(AuthError::InvalidAuthToken)
    ));
}

#[test]
fn authenticate_mints_a_simple_token_of_the_proposed_prefix_and_the_entry_index() {
    let mut fx = Fx::new();
    fx.user_add("alice", "pw");
    fx.user_add_no_password("cn");
    let req = |name: &str| InternalAuthenticateRequest {
        name: name.into(),
        password: String::new(),
        simple_token: "abcdefghijklmnop".into(),
    };
    assert!(matches!(
        fx.store.authenticate(&req("alice"), 9, at(0)),
        Err(AuthError::AuthNotEnabled)
    ));
    fx.enable();
    let resp = fx.store.authenticate(&req("alice"), 9, at(0)).unwrap();
    assert_eq!(resp.token, "abcdefghijklmnop.9");
    let ai = fx.store.auth_info_from_token(&resp.token, at(1)).unwrap();
    assert_eq!(ai, Some(fx.ai("alice")));
    assert!(matches!(
        fx.store.authenticate(&req("nobody"), 10, at(0)),
        Err(AuthError::AuthFailed)
    ));
    assert!(matches!(
        fx.store.authenticate(&req("cn"), 11, at(0)),
        Err(AuthError::AuthFailed)
    ));
}

#[test]
fn password_check_happens_off_the_store_and_reports_etcds_errors() {
    let mut fx = Fx::new();
    fx.user_add("alice", "pw");
    fx.user_add_no_password("cn");
    assert!(matches!(
        fx.store.prepare_password_check("alice"),
        Err(AuthError::AuthNotEnabled)
    ));
    fx.enable();
    let check = fx.store.prepare_password_check("alice").unwrap();
    assert_eq!(check.name(), "alice");
    assert_eq!(check.verify("pw").unwrap(), fx.store.revision());
    assert!(matches!(check.verify("wrong"), Err(AuthError::AuthFailed)));
    assert!(matches!(
        fx.store.prepare_password_check("nobody"),
        Err(AuthError::AuthFailed)
    ));
    assert!(matches!(
        fx.store.prepare_password_check("cn"),
        Err(AuthError::NoPasswordUser)
    ));
    // The check is made on a copy: it stays valid (and stale) after the store moves on.
    let check = fx.store.prepare_password_check("alice").unwrap();
    fx.role_add("r");
    assert_ne!(check.verify("pw").unwrap(), fx.store.revision());
}

#[test]
fn recover_replaces_the_state_and_drops_tokens_of_users_that_vanished() {
    let mut fx = Fx::new();
    fx.user_add("alice", "pw");
    fx.user_add("bob", "pw");
    fx.enable();
    let alice = fx.login("alice", 20, at(0)).unwrap();
    let bob = fx.login("bob", 21, at(0)).unwrap();

    // Another member's backend where bob never existed and a role was added.
    let mut other = Fx::new();
    other.user_add("alice", "pw2");
    other.role_add("extra");
    other.enable();
    fx.store.recover(&other.be.read().unwrap()).unwrap();
    assert_eq!(
        fx.store.persisted_state(),
        other.store.persisted_state(),
        "recovered state is the snapshot's"
    );
    assert!(fx
        .store
        .auth_info_from_token(&alice, at(1))
        .unwrap()
        .is_some());
    assert!(matches!(
        fx.store.auth_info_from_token(&bob, at(1)),
        Err(AuthError::InvalidAuthToken)
    ));

    // A snapshot with auth disabled forgets every token.
    let plain = Fx::new();
    fx.store.recover(&plain.be.read().unwrap()).unwrap();
    assert!(!fx.store.is_enabled());
    assert_eq!(fx.store.tokens().simple_tokens(), 0);
}

#[test]
fn corrupt_records_are_reported_not_panicked_on() {
    let cases: Vec<(Bucket, &[u8], Vec<u8>)> = vec![
        (Bucket::AuthUsers, b"u", vec![0xff, 0xff, 0xff]),
        (
            Bucket::AuthUsers,
            b"u",
            User {
                name: b"v".to_vec(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (Bucket::AuthRoles, b"r", vec![0x0a, 0x05, b'r']),
        (
            Bucket::AuthRoles,
            b"r",
            Role {
                name: b"s".to_vec(),
                key_permission: vec![],
            }
            .encode_to_vec(),
        ),
        (Bucket::Auth, b"authRevision", vec![1, 2, 3]),
    ];
    for (bucket, key, value) in cases {
        let fx = Fx::new();
        let mut txn = fx.be.write().unwrap();
        txn.put(bucket, key, &value).unwrap();
        txn.commit().unwrap();
        let r = AuthStore::load_from(&fx.be.read().unwrap(), TokenProvider::nop(), COST);
        assert!(matches!(r, Err(AuthError::Corrupt(_))), "{bucket} {key:?}");
    }
}

#[test]
fn enabled_flag_other_than_one_reads_as_disabled_as_in_etcd() {
    let fx = Fx::new();
    let mut txn = fx.be.write().unwrap();
    txn.put(Bucket::Auth, b"authEnabled", &[2]).unwrap();
    txn.commit().unwrap();
    let s = AuthStore::load_from(&fx.be.read().unwrap(), TokenProvider::nop(), COST).unwrap();
    assert!(!s.is_enabled());
}

#[test]
fn the_applier_gate_needs_root_for_admin_requests_and_allows_self_user_get_and_own_role_get() {
    let mut fx = Fx::new();
    fx.user_add("alice", "pw");
    fx.role_add("r");
    fx.grant_role("alice", "r");
    let list = InternalRaftRequest {
        auth_user_list: Some(Default::default()),
        ..Default::default()
    };
    let get = |name: &str| InternalRaftRequest {
        auth_user_get: Some(AuthUserGetRequest { name: name.into() }),
        ..Default::default()
    };
    let role_get = |role: &str| InternalRaftRequest {
        auth_role_get: Some(AuthRoleGetRequest { role: role.into() }),
        ..Default::default()
    };
    let alice = fx.ai("alice");
    // Disabled: everything passes.
    fx.store.check_apply(&alice, &list).unwrap();
    fx.enable();
    let alice = fx.ai("alice");
    let root = fx.ai("root");
    assert!(matches!(
        fx.store.check_apply(&alice, &list),
        Err(AuthError::PermissionDenied)
    ));
    assert!(matches!(
        fx.store.check_apply(&AuthInfo::default(), &list),
        Err(AuthError::UserEmpty)
    ));
    assert!(matches!(
        fx.store.check_apply(&fx.ai("ghost"), &list),
        Err(AuthError::UserNotFound)
    ));
    fx.store.check_apply(&root, &list).unwrap();
    fx.store.check_apply(&alice, &get("alice")).unwrap();
    assert!(matches!(
        fx.store.check_apply(&alice, &get("root")),
        Err(AuthError::PermissionDenied)
    ));
    fx.store.check_apply(&alice, &role_get("r")).unwrap();
    assert!(matches!(
        fx.store.check_apply(&alice, &role_get("root")),
        Err(AuthError::PermissionDenied)
    ));
    fx.store.check_apply(&root, &role_get("r")).unwrap();
    // Authenticate and KV requests are not gated here.
    let auth = InternalRaftRequest {
        authenticate: Some(Default::default()),
        ..Default::default()
    };
    fx.store.check_apply(&AuthInfo::default(), &auth).unwrap();
    assert!(crate::needs_admin_permission(&InternalRaftRequest {
        auth_status: Some(Default::default()),
        ..Default::default()
    }));
}

#[test]
fn hashed_passwords_are_base64_in_the_proposal_and_raw_bcrypt_on_disk() {
    let mut fx = Fx::new();
    let mut req = AuthUserAddRequest {
        name: "alice".into(),
        password: "pw".into(),
        ..Default::default()
    };
    password::prepare_user_add(&mut req, COST).unwrap();
    assert!(req.password.is_empty(), "no clear text in the proposal");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&req.hashed_password)
        .unwrap();
    fx.apply(|s, t| s.user_add(t, &req)).unwrap();
    assert_eq!(fx.store.user("alice").unwrap().password, raw);
}
