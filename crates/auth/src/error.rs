//! The auth store's one error type, with etcd's wire strings and gRPC codes.
//!
//! etcd has two names for most auth errors: the store's (`auth: user not found`) and the one the
//! client sees (`etcdserver: user name not found`), joined by a map in `v3rpc/util.go`. Hearth
//! keeps only what the client sees: every variant's `Display` is the exact message etcd puts in
//! the gRPC status, and [`AuthError::grpc_code`] is the status code, so the server maps an
//! `AuthError` to a status in one line and in one place. Errors that etcd does not map (they
//! reach the client as `Unknown` with the store's own text, e.g. `auth: authentication failed,
//! password was given for no password user`) keep that text here.

use backend::BackendError;

/// gRPC status codes used below (the numbers of `google.golang.org/grpc/codes`), named so the
/// table in [`AuthError::grpc_code`] reads like etcd's `rpctypes/error.go`. This crate knows
/// nothing else of gRPC.
pub mod code {
    /// `codes.Unknown`: what etcd returns for an error its map does not know.
    pub const UNKNOWN: u8 = 2;
    /// `codes.InvalidArgument`.
    pub const INVALID_ARGUMENT: u8 = 3;
    /// `codes.PermissionDenied`.
    pub const PERMISSION_DENIED: u8 = 7;
    /// `codes.FailedPrecondition`.
    pub const FAILED_PRECONDITION: u8 = 9;
    /// `codes.Unauthenticated`.
    pub const UNAUTHENTICATED: u8 = 16;
}

/// Errors of the auth store, token providers and password functions.
///
/// `Display` is the message etcd sends to the client (or, for the configuration errors, the text
/// etcd reports when it refuses to start). See [`AuthError::grpc_code`] for the status codes.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// AuthEnable without a `root` user (`ErrRootUserNotExist`).
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// AuthEnable while `root` lacks the `root` role (`ErrRootRoleNotExist`).
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// UserAdd of an existing name (`ErrUserAlreadyExist`).
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// UserAdd with an empty name, or a permission check without a user while auth is enabled
    /// (`ErrUserEmpty`).
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// The named user does not exist (`ErrUserNotFound`).
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// RoleAdd of an existing name (`ErrRoleAlreadyExist`).
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// The named role does not exist (`ErrRoleNotFound`).
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// RoleAdd with an empty name (`ErrRoleEmpty`).
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// RoleGrantPermission without a permission (`ErrPermissionNotGiven`).
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    /// Wrong user or password, or a token for a user that cannot log in (`ErrAuthFailed`).
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// Authenticate of a `no_password` user, or a password etcd could not store
    /// (`ErrNoPasswordUser`; etcd does not map it, so it reaches clients as `Unknown`).
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    /// The user may not do this (`ErrPermissionDenied`).
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// UserRevokeRole of a role the user does not have (`ErrRoleNotGranted`).
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not have (`ErrPermissionNotGranted`).
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// Authenticate while auth is disabled (`ErrAuthNotEnabled`).
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// The request was authorized against an auth revision older than the store's
    /// (`ErrAuthOldRevision`); clients re-authenticate and retry.
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// Malformed, unknown, expired, forged or revoked token (`ErrInvalidAuthToken`).
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// A change that would lock the cluster out (deleting `root` while enabled, revoking its
    /// `root` role, deleting the `root` role) or an invalid permission range
    /// (`ErrInvalidAuthMgmt`).
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,

    /// `--auth-token` is malformed (unknown type, a field that is not `name=value`, a repeated
    /// field, a bad `ttl`, an unreadable key file, an unknown `sign-method`)
    /// (`ErrInvalidAuthOpts`). The detail is logged, as etcd does.
    #[error("auth: invalid auth options")]
    InvalidAuthOpts,
    /// The JWT sign method needs a key file that was not given (`ErrMissingKey`).
    #[error("auth: missing key data")]
    MissingKey,
    /// `pub-key` and `priv-key` are not one key pair (`ErrKeyMismatch`).
    #[error("auth: public and private keys don't match")]
    KeyMismatch,
    /// Authenticate with a JWT provider that has only a public key (`ErrVerifyOnly`; unmapped,
    /// `Unknown` for clients).
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnly,
    /// A JWT key file is not a key of the kind the sign method needs (golang-jwt's texts, e.g.
    /// `key is not a valid RSA private key`).
    #[error("{0}")]
    InvalidKey(String),
    /// A sign method etcd knows but Hearth cannot use (`ES512`, `none`).
    #[error("unsupported signing method: {0}")]
    UnsupportedSignMethod(String),
    /// A password longer than bcrypt's 72 bytes (Go's `bcrypt.ErrPasswordTooLong`, which etcd
    /// 3.5 returns unmapped, so `Unknown`).
    #[error("bcrypt: password length exceeds 72 bytes")]
    PasswordTooLong,
    /// bcrypt failed for another reason (an invalid cost).
    #[error("bcrypt: {0}")]
    Bcrypt(String),
    /// Signing a JWT failed.
    #[error("auth: failed to sign a JWT token: {0}")]
    Sign(String),
    /// The backend failed while reading or writing the auth buckets.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A record in the auth buckets does not decode, or does not match its key.
    #[error("corrupt auth record: {0}")]
    Corrupt(String),
}

impl AuthError {
    /// The gRPC status code etcd returns with this error (numbers from [`code`]). The table is
    /// etcd's `rpctypes/error.go` and `v3rpc/util.go`:
    ///
    /// | code | errors |
    /// | --- | --- |
    /// | `InvalidArgument` (3) | `UserEmpty`, `RoleEmpty`, `AuthFailed`, `PermissionNotGiven`, `InvalidAuthMgmt`, `AuthOldRevision` |
    /// | `FailedPrecondition` (9) | `RootUserNotExist`, `RootRoleNotExist`, `UserAlreadyExist`, `UserNotFound`, `RoleAlreadyExist`, `RoleNotFound`, `RoleNotGranted`, `PermissionNotGranted`, `AuthNotEnabled` |
    /// | `PermissionDenied` (7) | `PermissionDenied` |
    /// | `Unauthenticated` (16) | `InvalidAuthToken` |
    /// | `Unknown` (2) | everything etcd does not map: `NoPasswordUser`, `VerifyOnly`, `PasswordTooLong`, `Bcrypt`, `Sign`, the option and key errors, `Backend`, `Corrupt` |
    pub fn grpc_code(&self) -> u8 {
        use AuthError::*;
        match self {
            UserEmpty | RoleEmpty | AuthFailed | PermissionNotGiven | InvalidAuthMgmt
            | AuthOldRevision => code::INVALID_ARGUMENT,
            RootUserNotExist | RootRoleNotExist | UserAlreadyExist | UserNotFound
            | RoleAlreadyExist | RoleNotFound | RoleNotGranted | PermissionNotGranted
            | AuthNotEnabled => code::FAILED_PRECONDITION,
            PermissionDenied => code::PERMISSION_DENIED,
            InvalidAuthToken => code::UNAUTHENTICATED,
            NoPasswordUser
            | InvalidAuthOpts
            | MissingKey
            | KeyMismatch
            | VerifyOnly
            | InvalidKey(_)
            | UnsupportedSignMethod(_)
            | PasswordTooLong
            | Bcrypt(_)
            | Sign(_)
            | Backend(_)
            | Corrupt(_) => code::UNKNOWN,
        }
    }

    /// The text of etcd's own store error (`auth: ...`), which clients see, as `Unknown`, where
    /// etcd hands the store's error to gRPC without its `togRPCError` map: the admin checks of
    /// Defragment, Snapshot, Hash and HashKV (`authMaintenanceServer`). For errors etcd has no
    /// store-level twin of, the client-facing text.
    pub fn store_text(&self) -> String {
        use AuthError::*;
        let text = match self {
            RootUserNotExist => "auth: root user does not exist",
            RootRoleNotExist => "auth: root user does not have root role",
            UserAlreadyExist => "auth: user already exists",
            UserEmpty => "auth: user name is empty",
            UserNotFound => "auth: user not found",
            RoleAlreadyExist => "auth: role already exists",
            RoleNotFound => "auth: role not found",
            RoleEmpty => "auth: role name is empty",
            PermissionNotGiven => "auth: permission not given",
            AuthFailed => "auth: authentication failed, invalid user ID or password",
            PermissionDenied => "auth: permission denied",
            RoleNotGranted => "auth: role is not granted to the user",
            PermissionNotGranted => "auth: permission is not granted to the role",
            AuthNotEnabled => "auth: authentication is not enabled",
            AuthOldRevision => "auth: revision in header is old",
            InvalidAuthToken => "auth: invalid auth token",
            InvalidAuthMgmt => "auth: invalid auth management",
            _ => return self.to_string(),
        };
        text.to_string()
    }

    /// The reason etcd gives when it cancels a watch because of this error (`v3rpc/watch.go`):
    /// invalid token, old revision and empty user keep their error, anything else becomes
    /// permission denied. etcd writes the gRPC error's `Error()` text, so the reason reads
    /// `rpc error: code = PermissionDenied desc = etcdserver: permission denied` (etcd 3.4 and
    /// 3.5 alike).
    pub fn watch_cancel_reason(&self) -> String {
        let (code, e) = match self {
            AuthError::InvalidAuthToken => ("Unauthenticated", self),
            AuthError::AuthOldRevision | AuthError::UserEmpty => ("InvalidArgument", self),
            _ => ("PermissionDenied", &AuthError::PermissionDenied),
        };
        format!("rpc error: code = {code} desc = {e}")
    }
}
