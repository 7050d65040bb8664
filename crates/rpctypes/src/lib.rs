//! The server's errors, as etcd's `api/v3rpc/rpctypes`: etcd's exact codes and messages (clients such
//! as etcdctl and the client libraries match on the text), and the one place that maps them to a gRPC
//! status. The layers below have their own error types (`mvcc::MvccError`, `lease::LeaseError`) and
//! convert into [`ServerError`] here; nothing else builds a `tonic::Status` from a server error.
//!
//! Knows no server state, no Raft and no storage beyond the error enums it converts.

#![forbid(unsafe_code)]

use tonic::{Code, Status};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExist,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    TimeoutDueToLeaderFail,
    #[error("etcdserver: request timed out, possibly due to connection lost")]
    TimeoutDueToConnectionLost,
    /// The proposal was never handed to Raft before its deadline (no leader all along); etcd passes its
    /// context's error through, which gRPC reports as `Unknown`.
    #[error("context deadline exceeded")]
    DeadlineExceeded,
    /// Raft refused the proposal outright (e.g. the leader is handing over leadership).
    #[error("raft proposal dropped")]
    ProposalDropped,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: member ID already exist")]
    MemberExist,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExist,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    MemberNotEnoughStarted,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// A peer of another cluster answered (the corruption checks' peer HashKV).
    #[error("etcdserver: cluster ID mismatch")]
    ClusterIdMismatch,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    /// A leader that could not confirm it still leads before answering for a lease (etcd's
    /// `lease.ErrNotPrimary`, which its gRPC layer passes on unmapped).
    #[error("not a primary lessor")]
    LeaseNotPrimary,
    /// The v3lock service: the caller's lease expired while it waited (etcd's
    /// `concurrency.ErrSessionExpired`).
    #[error("mutex: session is expired")]
    SessionExpired,
    #[error("election: not leader")]
    ElectionNotLeader,
    #[error("election: no leader")]
    ElectionNoLeader,
    /// Proclaim and Resign without a leader key (etcd's `v3election.ErrMissingLeaderKey`).
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    /// An auth error (`auth::AuthError`) with the code and text etcd answers it with: through
    /// etcd's map (`ServerError::from`), or, where etcd passes the store's error through
    /// unmapped, `Unknown` with the store's text ([`ServerError::auth_unmapped`]).
    #[error("{message}")]
    Auth { code: Code, message: String },
    /// A local failure (disk, corrupt state). The text goes to the log; the client sees a generic error.
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl ServerError {
    pub fn code(&self) -> Code {
        use ServerError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | InvalidSortOption | RequestTooLarge | MemberBadUrls => Code::InvalidArgument,
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace | TooManyRequests => Code::ResourceExhausted,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExist
            | NotLeader
            | BadLeaderTransferee
            | MemberExist
            | PeerUrlExist
            | MemberNotEnoughStarted
            | MemberNotLearner
            | LearnerNotReady
            | TooManyLearners
            | ClusterIdMismatch => Code::FailedPrecondition,
            LeaderTransferTimeout => Code::DeadlineExceeded,
            Corrupt => Code::DataLoss,
            NoLeader
            | LeaderChanged
            | Timeout
            | TimeoutDueToLeaderFail
            | TimeoutDueToConnectionLost
            | Stopped
            | Unhealthy
            | NotSupportedForLearner => Code::Unavailable,
            DeadlineExceeded | ProposalDropped => Code::Unknown,
            PermissionDenied => Code::PermissionDenied,
            InvalidAuthToken => Code::Unauthenticated,
            // Plain Go errors in etcd: gRPC sends them as Unknown.
            LeaseNotPrimary | SessionExpired | ElectionNotLeader | ElectionNoLeader
            | MissingLeaderKey => Code::Unknown,
            Internal(_) => Code::Unknown,
            Auth { code, .. } => *code,
        }
    }
}

impl ServerError {
    /// The error a peer answered with (a promotion or lease request forwarded to the leader), back as the error it was,
    /// so that it reaches the client exactly as the leader would have sent it. Anything unknown stays
    /// an internal error with the peer's text.
    pub fn from_peer_status(s: &Status) -> ServerError {
        use ServerError::*;
        const KNOWN: &[ServerError] = &[
            NoLeader,
            LeaderChanged,
            Timeout,
            TimeoutDueToLeaderFail,
            TimeoutDueToConnectionLost,
            DeadlineExceeded,
            ProposalDropped,
            NotLeader,
            Stopped,
            Unhealthy,
            MemberExist,
            PeerUrlExist,
            MemberNotEnoughStarted,
            MemberBadUrls,
            MemberNotFound,
            MemberNotLearner,
            LearnerNotReady,
            TooManyLearners,
            TooManyRequests,
            LeaseNotFound,
            LeaseTtlTooLarge,
            Compacted,
            FutureRev,
        ];
        KNOWN
            .iter()
            .find(|e| e.code() == s.code() && e.to_string() == s.message())
            .cloned()
            .unwrap_or_else(|| Internal(format!("peer answered: {}", s.message())))
    }
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

/// What etcd's v3lock and v3election services answer for any error. They run etcd's client
/// recipes through an in-process client, which hands every error back as a plain Go error
/// (`rpctypes.EtcdError` has no gRPC status), so gRPC sends it as `Unknown` with the same text:
/// a Lock on an unknown lease fails with `Unknown "etcdserver: requested lease not found"`.
pub fn relayed(s: Status) -> Status {
    Status::new(Code::Unknown, s.message().to_string())
}

impl From<auth::AuthError> for ServerError {
    /// etcd's `togRPCError` for auth errors: the client-facing text and code.
    fn from(e: auth::AuthError) -> ServerError {
        match e {
            auth::AuthError::PermissionDenied => ServerError::PermissionDenied,
            auth::AuthError::InvalidAuthToken => ServerError::InvalidAuthToken,
            e => ServerError::Auth {
                code: Code::from_i32(i32::from(e.grpc_code())),
                message: e.to_string(),
            },
        }
    }
}

impl ServerError {
    /// An auth error as etcd answers it where it skips its `togRPCError` map (the admin checks of
    /// Defragment, Snapshot, Hash and HashKV): `Unknown` with the store's own text.
    pub fn auth_unmapped(e: &auth::AuthError) -> ServerError {
        ServerError::Auth {
            code: Code::Unknown,
            message: e.store_text(),
        }
    }
}

impl From<lease::LeaseError> for ServerError {
    fn from(e: lease::LeaseError) -> ServerError {
        use lease::LeaseError::*;
        match e {
            LeaseNotFound => ServerError::LeaseNotFound,
            LeaseExists => ServerError::LeaseExist,
            TtlTooLarge => ServerError::LeaseTtlTooLarge,
            NotPrimary => ServerError::NotLeader,
            other => ServerError::Internal(other.to_string()),
        }
    }
}

impl From<mvcc::MvccError> for ServerError {
    fn from(e: mvcc::MvccError) -> ServerError {
        match e {
            mvcc::MvccError::Compacted => ServerError::Compacted,
            mvcc::MvccError::FutureRev => ServerError::FutureRev,
            other => ServerError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_etcd_code_and_text() {
        let s: Status = ServerError::Compacted.into();
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let s: Status = ServerError::LeaseNotFound.into();
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "etcdserver: requested lease not found");
        let s = relayed(s);
        assert_eq!(s.code(), Code::Unknown);
        assert_eq!(s.message(), "etcdserver: requested lease not found");
        let s: Status = ServerError::MissingLeaderKey.into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unknown, "\"leader\" field must be provided")
        );
        let s: Status = ServerError::from(lease::LeaseError::TtlTooLarge).into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::OutOfRange, "etcdserver: too large lease TTL")
        );
    }

    #[test]
    fn auth_errors_carry_etcd_code_and_text_mapped_or_not() {
        let s: Status = ServerError::from(auth::AuthError::UserNotFound).into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::FailedPrecondition, "etcdserver: user name not found")
        );
        let s: Status = ServerError::from(auth::AuthError::PermissionDenied).into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::PermissionDenied, "etcdserver: permission denied")
        );
        let s: Status = ServerError::from(auth::AuthError::AuthOldRevision).into();
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old"
            )
        );
        let s: Status = ServerError::auth_unmapped(&auth::AuthError::PermissionDenied).into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unknown, "auth: permission denied")
        );
        let s: Status = ServerError::from(auth::AuthError::NoPasswordUser).into();
        assert_eq!(s.code(), Code::Unknown);
    }

    #[test]
    fn membership_errors_carry_etcd_code_and_text() {
        let s: Status = ServerError::LearnerNotReady.into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(
            s.message(),
            "etcdserver: can only promote a learner member which is in sync with leader"
        );
        let s: Status = ServerError::NotSupportedForLearner.into();
        assert_eq!(s.code(), Code::Unavailable);
        let s: Status = ServerError::DeadlineExceeded.into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unknown, "context deadline exceeded")
        );
    }

    #[test]
    fn peer_status_maps_back_to_the_same_error() {
        for e in [
            ServerError::LearnerNotReady,
            ServerError::MemberNotFound,
            ServerError::NoLeader,
        ] {
            assert_eq!(ServerError::from_peer_status(&e.clone().into()), e);
        }
        let odd = Status::internal("boom");
        assert!(matches!(
            ServerError::from_peer_status(&odd),
            ServerError::Internal(_)
        ));
    }
}
