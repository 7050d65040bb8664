//! bcrypt hashing and checking, `--bcrypt-cost`, request preparation, and the error table.

use api::authpb::UserAddOptions;
use api::etcdserverpb::{AuthUserAddRequest, AuthUserChangePasswordRequest};

use super::*;
use crate::code;
use crate::password::*;

#[test]
fn hashes_are_gos_2a_format_at_the_given_cost_and_check_only_the_right_password() {
    let h = hash_password("secret", COST).unwrap();
    assert_eq!(h.len(), 60);
    assert!(h.starts_with(b"$2a$04$"));
    assert!(check_password(&h, "secret"));
    assert!(!check_password(&h, "Secret"));
    assert!(!check_password(&h, ""));
    assert_ne!(h, hash_password("secret", COST).unwrap(), "salted");
    // Malformed or empty hashes match nothing (a user stored without a hash cannot log in).
    assert!(!check_password(b"", "secret"));
    assert!(!check_password(b"$2a$04$short", "secret"));
    assert!(!check_password(&[0xff, 0xfe], "secret"));
    // $2b$ hashes (other implementations) are accepted too.
    let b = String::from_utf8(h.clone())
        .unwrap()
        .replacen("$2a$", "$2b$", 1);
    assert!(check_password(b.as_bytes(), "secret"));
}

#[test]
fn passwords_longer_than_72_bytes_are_refused_as_go_does() {
    let max = "x".repeat(72);
    assert!(check_password(&hash_password(&max, COST).unwrap(), &max));
    assert!(matches!(
        hash_password(&"x".repeat(73), COST),
        Err(AuthError::PasswordTooLong)
    ));
    assert_eq!(
        AuthError::PasswordTooLong.to_string(),
        "bcrypt: password length exceeds 72 bytes"
    );
}

#[test]
fn bcrypt_cost_outside_bcrypts_bounds_falls_back_to_the_default() {
    assert_eq!(effective_bcrypt_cost(0), DEFAULT_BCRYPT_COST);
    assert_eq!(effective_bcrypt_cost(3), DEFAULT_BCRYPT_COST);
    assert_eq!(effective_bcrypt_cost(4), 4);
    assert_eq!(effective_bcrypt_cost(10), 10);
    assert_eq!(effective_bcrypt_cost(31), 31);
    assert_eq!(effective_bcrypt_cost(32), DEFAULT_BCRYPT_COST);
    let fx_cost = {
        let dir = tempfile::tempdir().unwrap();
        let be = backend::Backend::open(dir.path().join("db"), Default::default()).unwrap();
        let mut txn = be.write().unwrap();
        let s = AuthStore::open(&mut txn, TokenProvider::nop(), 99).unwrap();
        s.bcrypt_cost()
    };
    assert_eq!(fx_cost, 10);
}

#[test]
fn requests_are_hashed_before_proposing_except_for_no_password_users_and_empty_changes() {
    let mut add = AuthUserAddRequest {
        name: "a".into(),
        password: "pw".into(),
        ..Default::default()
    };
    prepare_user_add(&mut add, COST).unwrap();
    assert!(add.password.is_empty());
    assert!(!add.hashed_password.is_empty());

    let mut cn = AuthUserAddRequest {
        name: "cn".into(),
        password: "ignored".into(),
        options: Some(UserAddOptions { no_password: true }),
        ..Default::default()
    };
    prepare_user_add(&mut cn, COST).unwrap();
    assert_eq!(cn.hashed_password, "");
    assert_eq!(
        cn.password, "ignored",
        "etcd leaves it; the store ignores it"
    );

    let mut empty = AuthUserChangePasswordRequest {
        name: "a".into(),
        ..Default::default()
    };
    prepare_user_change_password(&mut empty, COST).unwrap();
    assert_eq!(empty.hashed_password, "");

    let mut long = AuthUserAddRequest {
        name: "a".into(),
        password: "y".repeat(100),
        ..Default::default()
    };
    assert!(matches!(
        prepare_user_add(&mut long, COST),
        Err(AuthError::PasswordTooLong)
    ));
}

#[test]
fn error_strings_and_grpc_codes_are_etcds() {
    let table: &[(AuthError, &str, u8)] = &[
        (
            AuthError::RootUserNotExist,
            "etcdserver: root user does not exist",
            code::FAILED_PRECONDITION,
        ),
        (
            AuthError::RootRoleNotExist,
            "etcdserver: root user does not have root role",
            code::FAILED_PRECONDITION,
        ),
        (
            AuthError::UserAlreadyExist,
            "etcdserver: user name already exists",
            code::FAILED_PRECONDITION,
        ),
        (
            AuthError::UserEmpty,
            "etcdserver: user name is empty",
            code::INVALID_ARGUMENT,
        ),
        (
            AuthError::UserNotFound,
            "etcdserver: user name not found",
            code::FAILED_PRECONDITION,
        ),
        (
            AuthError::RoleAlreadyExist,
            "etcdserver: role name already exists",
            code::FAILED_PRECONDITION,
        ),
        (
            AuthError::RoleNotFound,
            "etcdserver: role name not found",
            code::FAILED_PRECONDITION,
        ),
        (
            AuthError::RoleEmpty,
            "etcdserver: role name is empty",
            code::INVALID_ARGUMENT,
        ),
        (
            AuthError::AuthFailed,
            "etcdserver: authentication failed, invalid user ID or password",
            code::INVALID_ARGUMENT,
        ),
        (
            AuthError::PermissionNotGiven,
            "etcdserver: permission not given",
            code::INVALID_ARGUMENT,
        ),
        (
            AuthError::PermissionDenied,
            "etcdserver: permission denied",
            code::PERMISSION_DENIED,
        ),
        (
            AuthError::RoleNotGranted,
            "etcdserver: role is not granted to the user",
            code::FAILED_PRECONDITION,
        ),
        (
            AuthError::PermissionNotGranted,
            "etcdserver: permission is not granted to the role",
            code::FAILED_PRECONDITION,
        ),
        (
            AuthError::AuthNotEnabled,
            "etcdserver: authentication is not enabled",
            code::FAILED_PRECONDITION,
        ),
        (
            AuthError::InvalidAuthToken,
            "etcdserver: invalid auth token",
            code::UNAUTHENTICATED,
        ),
        (
            AuthError::InvalidAuthMgmt,
            "etcdserver: invalid auth management",
            code::INVALID_ARGUMENT,
        ),
        (
            AuthError::AuthOldRevision,
            "etcdserver: revision of auth store is old",
            code::INVALID_ARGUMENT,
        ),
        // Not in etcd's map: the client sees the store's text with Unknown.
        (
            AuthError::NoPasswordUser,
            "auth: authentication failed, password was given for no password user",
            code::UNKNOWN,
        ),
        (
            AuthError::VerifyOnly,
            "auth: token signing attempted with verify-only key",
            code::UNKNOWN,
        ),
    ];
    for (e, msg, c) in table {
        assert_eq!(e.to_string(), *msg);
        assert_eq!(e.grpc_code(), *c, "{msg}");
    }
    assert_eq!(
        AuthError::UserNotFound.watch_cancel_reason(),
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    );
    assert_eq!(
        AuthError::AuthOldRevision.watch_cancel_reason(),
        "rpc error: code = InvalidArgument desc = etcdserver: revision of auth store is old"
    );
    assert_eq!(
        AuthError::InvalidAuthToken.watch_cancel_reason(),
        "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"
    );
}
