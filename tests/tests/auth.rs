//! Authentication and role-based access control, side by side with etcd 3.4, plus what only
//! Hearth can be asked (restarts, leader changes, revocation under a live token).
//!
//! The matrix: every RPC of KV, Watch, Lease, Cluster, Maintenance, Auth, Lock and Election,
//! sent as each identity (root, a reader of `a/`, a writer of `a/`, a read-write user of `p/`, a
//! user with no role, no credentials, a malformed token, and with JWTs a token past its `exp`
//! signed with the server's own key), to Hearth and to etcd 3.4 with the same users, roles and
//! data. Every cell's gRPC code and message must be equal, except the cells listed in
//! `expected_difference`, where etcd 3.5 deliberately answers otherwise than 3.4.23 (security
//! fixes); each names the etcd commit. On failure the whole table is printed.

use std::collections::BTreeMap;
use std::time::Duration;

use api::authpb::{permission::Type as PermType, Permission, UserAddOptions};
use api::etcdserverpb::{
    alarm_request::AlarmAction, auth_client::AuthClient, cluster_client::ClusterClient, compare,
    kv_client::KvClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
    request_op, watch_client::WatchClient, watch_request, AlarmRequest, AlarmType,
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGetRequest, AuthRoleGrantPermissionRequest, AuthRoleListRequest,
    AuthRoleRevokePermissionRequest, AuthStatusRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGetRequest,
    AuthUserGrantRoleRequest, AuthUserListRequest, AuthUserRevokeRoleRequest, AuthenticateRequest,
    CompactionRequest, Compare, DefragmentRequest, DeleteRangeRequest, HashKvRequest, HashRequest,
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, MemberAddRequest, MemberListRequest, MemberPromoteRequest,
    MemberRemoveRequest, MemberUpdateRequest, MoveLeaderRequest, PutRequest, RangeRequest,
    RequestOp, SnapshotRequest, StatusRequest, TxnRequest, WatchCreateRequest, WatchRequest,
};
use api::v3electionpb::{
    election_client::ElectionClient, CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest,
    ResignRequest,
};
use api::v3lockpb::{lock_client::LockClient, LockRequest, UnlockRequest};
use hearth_tests::poll::eventually;
use hearth_tests::{Kind, Options, Server};
use tonic::transport::Channel;
use tonic::Status;

const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Who sends a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Ident {
    Root,
    /// READ on the prefix `a/`.
    Reader,
    /// WRITE on the prefix `a/`.
    Writer,
    /// READWRITE on the prefix `p/`.
    Prefixed,
    /// A user with no role.
    NoRole,
    /// No credentials at all.
    Anonymous,
    /// A token no server issued.
    BadToken,
    /// A JWT past its `exp`, signed with the server's key (JWT runs only).
    Expired,
}

use Ident::*;

impl Ident {
    fn user(self) -> Option<(&'static str, &'static str)> {
        match self {
            Root => Some(("root", "rootpw")),
            Reader => Some(("reader", "readerpw")),
            Writer => Some(("writer", "writerpw")),
            Prefixed => Some(("prefixed", "prefixedpw")),
            NoRole => Some(("norole", "norolepw")),
            _ => None,
        }
    }
}

const USERS: [Ident; 5] = [Root, Reader, Writer, Prefixed, NoRole];

/// How tokens are made in a run.
#[derive(Clone)]
enum Tokens {
    Simple,
    /// ES256 with the test's key pair (PKCS#8 private key PEM, SPKI public key PEM).
    Jwt {
        private: String,
        dir: std::path::PathBuf,
    },
}

/// One server of the side-by-side pair, with its tokens.
struct Target {
    server: Server,
    channel: Channel,
    tokens: BTreeMap<Ident, String>,
    member_id: u64,
}

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(CALL_TIMEOUT);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("token", t.parse().expect("token is ASCII"));
    }
    r
}

fn outcome<T>(r: Result<tonic::Response<T>, Status>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(s) => status_text(&s),
    }
}

/// What came back for a cell that changes something; a success is undone first by `undo`
/// (given the answer, sent as root), so that the next cell starts from the same state.
async fn undone<T>(r: Result<tonic::Response<T>, Status>, undo: impl AsyncFnOnce(&T)) -> String {
    if let Ok(answer) = &r {
        undo(answer.get_ref()).await;
    }
    outcome(r)
}

fn status_text(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// A Range of `key` up to `range_end` (empty: the key alone).
fn range_req(key: &[u8], range_end: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        ..Default::default()
    }
}

fn put_req(key: &[u8], value: &[u8]) -> PutRequest {
    PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

/// A user with a password.
fn user_add_req(name: &str, password: &str) -> AuthUserAddRequest {
    AuthUserAddRequest {
        name: name.into(),
        password: password.into(),
        options: Some(UserAddOptions { no_password: false }),
        hashed_password: String::new(),
    }
}

fn revoke_role_req(user: &str, role: &str) -> AuthUserRevokeRoleRequest {
    AuthUserRevokeRoleRequest {
        name: user.into(),
        role: role.into(),
    }
}

fn authenticate_req(name: &str, password: &str) -> AuthenticateRequest {
    AuthenticateRequest {
        name: name.into(),
        password: password.into(),
    }
}

fn grant_role_req(user: &str, role: &str) -> AuthUserGrantRoleRequest {
    AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    }
}

/// Grants `role` the permission `ty` on `key` up to `range_end`.
fn grant_permission_req(
    role: &str,
    ty: PermType,
    key: &[u8],
    range_end: &[u8],
) -> AuthRoleGrantPermissionRequest {
    AuthRoleGrantPermissionRequest {
        name: role.into(),
        perm: Some(Permission {
            perm_type: ty as i32,
            key: key.to_vec(),
            range_end: range_end.to_vec(),
        }),
    }
}

/// Reads `a/k` on `channel` with `token`: what came back.
async fn read_a_k(channel: Channel, token: Option<&str>) -> String {
    outcome(
        KvClient::new(channel)
            .range(with_token(range_req(b"a/k", b""), token))
            .await,
    )
}

/// Writes `value` to `a/k` on `channel` with `token`: what came back.
async fn write_a_k(channel: Channel, token: Option<&str>, value: &[u8]) -> String {
    outcome(
        KvClient::new(channel)
            .put(with_token(put_req(b"a/k", value), token))
            .await,
    )
}

/// `fn NAME(&self) -> CLIENT<Channel>`: a client of that service on the target's channel.
macro_rules! clients {
    ($($name:ident: $client:ident),* $(,)?) => {
        $(
            fn $name(&self) -> $client<Channel> {
                $client::new(self.channel.clone())
            }
        )*
    };
}

impl Target {
    async fn start(kind: Kind, tokens: &Tokens) -> Target {
        let mut args = vec!["--bcrypt-cost=4".to_string()];
        if let Tokens::Jwt { dir, .. } = tokens {
            args.push(format!(
                "--auth-token=jwt,pub-key={},priv-key={},sign-method=ES256,ttl=10m",
                dir.join("jwt.pub").display(),
                dir.join("jwt.key").display()
            ));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Server::start_with(kind, Options::with_args(&args)).await;
        let channel = channel(&server).await;
        let mut t = Target {
            server,
            channel,
            tokens: BTreeMap::new(),
            member_id: 0,
        };
        let st = MaintenanceClient::new(t.channel.clone())
            .status(StatusRequest {})
            .await
            .expect("status");
        t.member_id = st.into_inner().header.unwrap().member_id;
        t
    }

    fn token(&self, id: Ident) -> Option<&str> {
        match id {
            Anonymous => None,
            BadToken => Some("not-a-token"),
            _ => self.tokens.get(&id).map(String::as_str),
        }
    }

    fn root(&self) -> Option<&str> {
        self.token(Root)
    }

    clients! {
        kv: KvClient,
        auth: AuthClient,
        lease: LeaseClient,
        maint: MaintenanceClient,
        cluster: ClusterClient,
        lock: LockClient,
        election: ElectionClient,
    }

    /// Logs every user in again (JWTs carry the auth revision, so they go stale with every
    /// change of users or roles, as etcd's clients find out and do the same).
    async fn login(&mut self, tokens: &Tokens) {
        for id in USERS {
            let (name, password) = id.user().unwrap();
            let r = self
                .auth()
                .authenticate(authenticate_req(name, password))
                .await
                .unwrap_or_else(|e| panic!("{:?}: authenticate {name}: {e}", self.server.kind()));
            self.tokens.insert(id, r.into_inner().token);
        }
        if let Tokens::Jwt { private, .. } = tokens {
            self.tokens.insert(Expired, expired_jwt(private));
        }
    }

    /// Moves the auth revision on (as root) with a change that grants nobody anything, so that
    /// every token from before it is stale.
    async fn change_auth(&self) {
        let add = AuthRoleAddRequest {
            name: "unrelated".into(),
        };
        self.auth()
            .role_add(with_token(add, self.root()))
            .await
            .unwrap();
    }

    /// The users, roles and keys every run starts from, made as root before auth is enabled.
    async fn setup(&mut self, tokens: &Tokens) {
        let mut auth = self.auth();
        for id in USERS {
            let (name, password) = id.user().unwrap();
            auth.user_add(user_add_req(name, password)).await.unwrap();
        }
        auth.user_add(user_add_req("scratch", "scratchpw"))
            .await
            .unwrap();
        for (role, ty, key, end) in [
            ("reader", PermType::Read, "a/", "a0"),
            ("writer", PermType::Write, "a/", "a0"),
            ("prefixed", PermType::Readwrite, "p/", "p0"),
            ("scratchrole", PermType::Read, "s/", "s0"),
        ] {
            auth.role_add(AuthRoleAddRequest { name: role.into() })
                .await
                .unwrap();
            auth.role_grant_permission(grant_permission_req(
                role,
                ty,
                key.as_bytes(),
                end.as_bytes(),
            ))
            .await
            .unwrap();
        }
        for (user, role) in [
            ("root", "root"),
            ("reader", "reader"),
            ("writer", "writer"),
            ("prefixed", "prefixed"),
        ] {
            auth.user_grant_role(grant_role_req(user, role))
                .await
                .unwrap();
        }
        for key in ["a/k", "p/k", "z/k"] {
            self.kv().put(put_req(key.as_bytes(), b"v")).await.unwrap();
        }
        auth.auth_enable(AuthEnableRequest {}).await.unwrap();
        self.login(tokens).await;
    }
}

/// Hearth and etcd 3.4, each set up with the same users, roles and keys, auth enabled and
/// everyone logged in.
async fn side_by_side(tokens: &Tokens) -> (Target, Target) {
    let mut hearth = Target::start(Kind::Hearth, tokens).await;
    let mut etcd = Target::start(Kind::Etcd, tokens).await;
    hearth.setup(tokens).await;
    etcd.setup(tokens).await;
    (hearth, etcd)
}

/// A JWT with etcd's claims for `root`, signed with the server's key, expired an hour ago.
fn expired_jwt(private_pem: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let claims = serde_json::json!({"exp": exp, "revision": 1, "username": "root"});
    let key = jsonwebtoken::EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &key,
    )
    .unwrap()
}

/// Declares `Case` and `CASES` (every case, in declaration order) from one list.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        /// Every RPC of the matrix, in the order it runs.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
        enum Case {
            $($case),*
        }

        const CASES: &[Case] = &[$(Case::$case),*];
    };
}

cases! {
    RangeKey,
    RangePrefix,
    RangeFromKey,
    RangeOtherPrefix,
    PutKey,
    PutOtherPrefix,
    PutPrevKv,
    DeleteKey,
    TxnCompareAndPut,
    TxnReadOnly,
    TxnNested,
    Compact,
    WatchKey,
    WatchFromKey,
    LeaseGrant,
    LeaseRevoke,
    LeaseTimeToLive,
    LeaseTimeToLiveKeys,
    LeaseKeepAlive,
    LeaseLeases,
    Status,
    Defragment,
    Hash,
    HashKv,
    Snapshot,
    AlarmGet,
    AlarmDeactivate,
    MoveLeader,
    MemberList,
    MemberAdd,
    MemberAddBadUrls,
    MemberRemove,
    MemberUpdate,
    MemberPromote,
    AuthStatus,
    AuthEnable,
    AuthDisable,
    Authenticate,
    UserAdd,
    UserGet,
    UserGetSelf,
    UserList,
    UserDelete,
    UserChangePassword,
    UserGrantRole,
    UserRevokeRole,
    RoleAdd,
    RoleGet,
    RoleList,
    RoleDelete,
    RoleGrantPermission,
    RoleRevokePermission,
    Lock,
    Campaign,
    ElectionLeader,
    Proclaim,
}

use Case::*;

impl Case {
    /// Whether a successful cell changes users, roles or the enabled flag (then every JWT is
    /// stale and everyone logs in again).
    fn changes_auth(self) -> bool {
        matches!(
            self,
            AuthDisable
                | UserAdd
                | UserChangePassword
                | UserGrantRole
                | UserRevokeRole
                | RoleAdd
                | RoleGrantPermission
                | RoleRevokePermission
        )
    }
}

/// A lease with `a/k` attached, granted by root with the same ID on both servers.
async fn lease_on_a(t: &Target, id: i64) {
    t.lease()
        .lease_grant(with_token(LeaseGrantRequest { ttl: 600, id }, t.root()))
        .await
        .expect("grant");
    t.kv()
        .put(with_token(
            PutRequest {
                lease: id,
                ..put_req(b"a/leased", b"v")
            },
            t.root(),
        ))
        .await
        .expect("put with lease");
}

fn op(r: request_op::Request) -> RequestOp {
    RequestOp { request: Some(r) }
}

/// Sends `case` as `id` (cell number `n`, which keeps per-cell names apart) and says what came
/// back; then undoes what a successful cell changed, as root.
async fn run_cell(t: &Target, case: Case, id: Ident, n: i64) -> String {
    let tok = t.token(id);
    macro_rules! w {
        ($m:expr) => {
            with_token($m, tok)
        };
    }
    // `call!(client.method(request))`: the request sent as the caller, and what came back.
    macro_rules! call {
        ($client:ident . $method:ident ($m:expr)) => {
            outcome(t.$client().$method(w!($m)).await)
        };
    }
    match case {
        RangeKey => read_a_k(t.channel.clone(), tok).await,
        RangePrefix => call!(kv.range(range_req(b"a/", b"a0"))),
        RangeFromKey => call!(kv.range(range_req(b"a/", &[0]))),
        RangeOtherPrefix => call!(kv.range(range_req(b"p/k", b""))),
        PutKey => write_a_k(t.channel.clone(), tok, b"w").await,
        PutOtherPrefix => call!(kv.put(put_req(b"p/k", b"w"))),
        PutPrevKv => call!(kv.put(PutRequest {
            prev_kv: true,
            ..put_req(b"a/k", b"w")
        })),
        DeleteKey => call!(kv.delete_range(DeleteRangeRequest {
            key: format!("a/del{n}").into_bytes(),
            ..Default::default()
        })),
        TxnCompareAndPut => call!(kv.txn(TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Greater as i32,
                target: compare::CompareTarget::Version as i32,
                key: b"a/k".to_vec(),
                range_end: Vec::new(),
                target_union: Some(compare::TargetUnion::Version(0)),
            }],
            success: vec![op(request_op::Request::RequestPut(put_req(b"a/k", b"t")))],
            failure: vec![],
        })),
        TxnReadOnly => call!(kv.txn(TxnRequest {
            compare: vec![],
            success: vec![op(request_op::Request::RequestRange(range_req(
                b"a/k", b""
            )))],
            failure: vec![],
        })),
        TxnNested => call!(kv.txn(TxnRequest {
            compare: vec![],
            success: vec![op(request_op::Request::RequestTxn(TxnRequest {
                compare: vec![],
                success: vec![op(request_op::Request::RequestPut(put_req(b"z/k", b"n")))],
                failure: vec![],
            }))],
            failure: vec![],
        })),
        Compact => call!(kv.compact(CompactionRequest {
            revision: 2,
            physical: false,
        })),
        WatchKey => watch_cell(t, tok, b"a/k", b"").await,
        WatchFromKey => watch_cell(t, tok, b"a/", &[0]).await,
        LeaseGrant => call!(lease.lease_grant(LeaseGrantRequest {
            ttl: 600,
            id: 1000 + n,
        })),
        LeaseRevoke => {
            lease_on_a(t, 1000 + n).await;
            call!(lease.lease_revoke(LeaseRevokeRequest { id: 1000 + n }))
        }
        LeaseTimeToLive | LeaseTimeToLiveKeys => {
            lease_on_a(t, 1000 + n).await;
            call!(lease.lease_time_to_live(LeaseTimeToLiveRequest {
                id: 1000 + n,
                keys: case == LeaseTimeToLiveKeys,
            }))
        }
        LeaseKeepAlive => {
            lease_on_a(t, 1000 + n).await;
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(LeaseKeepAliveRequest { id: 1000 + n })
                .await
                .unwrap();
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            match t.lease().lease_keep_alive(w!(stream)).await {
                Err(s) => status_text(&s),
                Ok(r) => match tokio::time::timeout(CALL_TIMEOUT, r.into_inner().message()).await {
                    Ok(Ok(Some(_))) => "OK".into(),
                    Ok(Ok(None)) => "stream ended".into(),
                    Ok(Err(s)) => status_text(&s),
                    Err(_) => "no answer".into(),
                },
            }
        }
        LeaseLeases => call!(lease.lease_leases(LeaseLeasesRequest {})),
        Status => call!(maint.status(StatusRequest {})),
        Defragment => call!(maint.defragment(DefragmentRequest {})),
        Hash => call!(maint.hash(HashRequest {})),
        HashKv => call!(maint.hash_kv(HashKvRequest { revision: 0 })),
        Snapshot => match t.maint().snapshot(w!(SnapshotRequest {})).await {
            Err(s) => status_text(&s),
            Ok(r) => match r.into_inner().message().await {
                Ok(Some(_)) => "OK".into(),
                Ok(None) => "stream ended".into(),
                Err(s) => status_text(&s),
            },
        },
        AlarmGet => call!(maint.alarm(AlarmRequest {
            action: AlarmAction::Get as i32,
            member_id: 0,
            alarm: AlarmType::None as i32,
        })),
        AlarmDeactivate => call!(maint.alarm(AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id: t.member_id,
            alarm: AlarmType::Nospace as i32,
        })),
        MoveLeader => call!(maint.move_leader(MoveLeaderRequest {
            target_id: t.member_id,
        })),
        MemberList => call!(cluster.member_list(MemberListRequest {
            linearizable: false,
        })),
        MemberAdd => {
            let r = t
                .cluster()
                .member_add(w!(MemberAddRequest {
                    peer_ur_ls: vec![format!("http://127.0.0.1:{}", 40000 + n)],
                    is_learner: true,
                }))
                .await;
            undone(r, async |added| {
                let id = added.member.as_ref().unwrap().id;
                t.cluster()
                    .member_remove(with_token(MemberRemoveRequest { id }, t.root()))
                    .await
                    .expect("remove the added learner");
            })
            .await
        }
        // etcd checks the URLs before the permission.
        MemberAddBadUrls => call!(cluster.member_add(MemberAddRequest {
            peer_ur_ls: vec!["not a url".into()],
            is_learner: true,
        })),
        MemberRemove => call!(cluster.member_remove(MemberRemoveRequest { id: 12345 })),
        MemberUpdate => call!(cluster.member_update(MemberUpdateRequest {
            id: 12345,
            peer_ur_ls: vec!["http://127.0.0.1:1".into()],
        })),
        MemberPromote => call!(cluster.member_promote(MemberPromoteRequest { id: 12345 })),
        AuthStatus => call!(auth.auth_status(AuthStatusRequest {})),
        AuthEnable => call!(auth.auth_enable(AuthEnableRequest {})),
        AuthDisable => {
            let r = t.auth().auth_disable(w!(AuthDisableRequest {})).await;
            undone(r, async |_| {
                t.auth()
                    .auth_enable(AuthEnableRequest {})
                    .await
                    .expect("enable again");
            })
            .await
        }
        Authenticate => {
            let (name, password) = id.user().unwrap_or(("root", "wrong"));
            outcome(
                t.auth()
                    .authenticate(authenticate_req(name, password))
                    .await,
            )
        }
        UserAdd => {
            let name = format!("tmp{n}");
            let r = t.auth().user_add(w!(user_add_req(&name, "pw"))).await;
            undone(r, async |_| {
                t.auth()
                    .user_delete(with_token(AuthUserDeleteRequest { name }, t.root()))
                    .await
                    .expect("delete the added user");
            })
            .await
        }
        UserGet => call!(auth.user_get(AuthUserGetRequest {
            name: "reader".into()
        })),
        UserGetSelf => {
            let name = id.user().map(|u| u.0).unwrap_or("root").to_string();
            call!(auth.user_get(AuthUserGetRequest { name }))
        }
        UserList => call!(auth.user_list(AuthUserListRequest {})),
        UserDelete => call!(auth.user_delete(AuthUserDeleteRequest {
            name: "nobody".into()
        })),
        UserChangePassword => call!(auth.user_change_password(AuthUserChangePasswordRequest {
            name: "scratch".into(),
            password: "scratchpw".into(),
            hashed_password: String::new(),
        })),
        UserGrantRole => {
            let r = t
                .auth()
                .user_grant_role(w!(grant_role_req("scratch", "scratchrole")))
                .await;
            undone(r, async |_| {
                t.auth()
                    .user_revoke_role(with_token(
                        revoke_role_req("scratch", "scratchrole"),
                        t.root(),
                    ))
                    .await
                    .expect("revoke again");
            })
            .await
        }
        UserRevokeRole => call!(auth.user_revoke_role(revoke_role_req("scratch", "reader"))),
        RoleAdd => {
            let name = format!("tmprole{n}");
            let r = t
                .auth()
                .role_add(w!(AuthRoleAddRequest { name: name.clone() }))
                .await;
            undone(r, async |_| {
                t.auth()
                    .role_delete(with_token(AuthRoleDeleteRequest { role: name }, t.root()))
                    .await
                    .expect("delete the added role");
            })
            .await
        }
        RoleGet => call!(auth.role_get(AuthRoleGetRequest {
            role: "reader".into()
        })),
        RoleList => call!(auth.role_list(AuthRoleListRequest {})),
        RoleDelete => call!(auth.role_delete(AuthRoleDeleteRequest {
            role: "norole-role".into()
        })),
        RoleGrantPermission => call!(auth.role_grant_permission(grant_permission_req(
            "scratchrole",
            PermType::Read,
            b"s/",
            b"s0"
        ))),
        RoleRevokePermission => call!(auth.role_revoke_permission(
            AuthRoleRevokePermissionRequest {
                role: "scratchrole".into(),
                key: b"q/".to_vec(),
                range_end: b"q0".to_vec(),
            }
        )),
        Lock => {
            let name = b"p/lock".to_vec();
            let r = t.lock().lock(w!(LockRequest { name, lease: 0 })).await;
            undone(r, async |l| {
                t.lock()
                    .unlock(with_token(UnlockRequest { key: l.key.clone() }, t.root()))
                    .await
                    .expect("unlock");
            })
            .await
        }
        Campaign => {
            let r = t
                .election()
                .campaign(w!(CampaignRequest {
                    name: b"p/elect".to_vec(),
                    lease: 0,
                    value: b"me".to_vec(),
                }))
                .await;
            undone(r, async |c| {
                t.election()
                    .resign(with_token(
                        ResignRequest {
                            leader: c.leader.clone(),
                        },
                        t.root(),
                    ))
                    .await
                    .expect("resign");
            })
            .await
        }
        ElectionLeader => call!(election.leader(LeaderRequest {
            name: b"p/elect".to_vec()
        })),
        Proclaim => call!(election.proclaim(ProclaimRequest {
            leader: Some(LeaderKey {
                name: b"p/elect".to_vec(),
                key: b"p/elect/1".to_vec(),
                rev: 1,
                lease: 0,
            }),
            value: b"x".to_vec(),
        })),
    }
}

/// Opens a watch stream as the caller and creates one watcher: `created`, or why it was
/// canceled.
async fn watch_cell(t: &Target, tok: Option<&str>, key: &[u8], end: &[u8]) -> String {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: key.to_vec(),
                range_end: end.to_vec(),
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(t) = tok {
        req.metadata_mut().insert("token", t.parse().unwrap());
    }
    let r = match WatchClient::new(t.channel.clone()).watch(req).await {
        Ok(r) => r,
        Err(s) => return status_text(&s),
    };
    let mut stream = r.into_inner();
    match tokio::time::timeout(CALL_TIMEOUT, stream.message()).await {
        Ok(Ok(Some(m))) if m.canceled => format!("canceled: {}", m.cancel_reason),
        Ok(Ok(Some(m))) if m.created => "created".into(),
        Ok(Ok(Some(m))) => format!("unexpected {m:?}"),
        Ok(Ok(None)) => "stream ended".into(),
        Ok(Err(s)) => status_text(&s),
        Err(_) => "no answer".into(),
    }
}

/// Where etcd 3.5 (Hearth) deliberately answers otherwise than etcd 3.4.23: Hearth's answer, and
/// the etcd change that made it.
fn expected_difference(case: Case, id: Ident) -> Option<(&'static str, &'static str)> {
    const DENIED: &str = "PermissionDenied: etcdserver: permission denied";
    const EMPTY: &str = "InvalidArgument: etcdserver: user name is empty";
    const BAD: &str = "Unauthenticated: etcdserver: invalid auth token";
    // etcd f936af2c0 "guard unauthenticated endpoints with auth checks" (3.5.28; with c2f6dac8d
    // and cdbfd651c, which let any valid user have Status, MemberList and Alarm GET): Compact,
    // MoveLeader and changing alarms need the root role; Status, MemberList, Alarm GET,
    // LeaseGrant, LeaseRevoke and LeaseTimeToLive need credentials; LeaseKeepAlive needs write
    // access to the lease's keys and LeaseLeases read access to every lease's keys.
    const GUARD: &str = "etcd f936af2c0 (3.5.28): every endpoint checks credentials";
    // etcd 9e4303361 "enforce auth checks for nested txn ops" (3.5.28).
    const NESTED: &str = "etcd 9e4303361 (3.5.28): a nested txn's operations are checked";
    // etcd d1b1aa9db "protect lease timetolive with auth" (3.5.0): read access to the keys.
    const TTL_KEYS: &str = "etcd d1b1aa9db (3.5.0): LeaseTimeToLive with keys needs read access";
    // etcd 071e70cdc "add a new API and command for checking auth status" (#11536, 3.5.0).
    const STATUS: &str = "etcd 071e70cdc (3.5.0): the AuthStatus RPC exists";
    // etcd e863b001b: a watch is checked on its range as sent, before "\0" means "to the end".
    const WATCH: &str =
        "etcd e863b001b (3.5.33): a watch's range is checked before \"\\0\" is read";
    let non_root = matches!(id, Reader | Writer | Prefixed | NoRole);
    let refused = |fixed| -> Option<(&'static str, &'static str)> {
        match id {
            Anonymous => Some((EMPTY, fixed)),
            BadToken | Expired => Some((BAD, fixed)),
            _ => None,
        }
    };
    match case {
        Compact if non_root => Some((DENIED, GUARD)),
        Compact => refused(GUARD).filter(|_| id == Anonymous),
        MoveLeader | AlarmDeactivate if non_root => Some((DENIED, GUARD)),
        MoveLeader | AlarmDeactivate => refused(GUARD),
        Status | MemberList | AlarmGet | LeaseTimeToLive => refused(GUARD),
        LeaseGrant => refused(GUARD).filter(|_| id == Anonymous),
        LeaseKeepAlive if matches!(id, Reader | Prefixed | NoRole) => Some((DENIED, GUARD)),
        LeaseKeepAlive => refused(GUARD),
        LeaseLeases if matches!(id, Writer | Prefixed | NoRole) => Some((DENIED, GUARD)),
        LeaseLeases => refused(GUARD),
        TxnNested if non_root => Some((DENIED, NESTED)),
        TxnNested => refused(NESTED).filter(|_| id == Anonymous),
        LeaseTimeToLiveKeys if matches!(id, Writer | Prefixed | NoRole) => Some((DENIED, TTL_KEYS)),
        LeaseTimeToLiveKeys => refused(TTL_KEYS),
        AuthStatus => match id {
            Root => Some(("OK", STATUS)),
            Anonymous => Some((EMPTY, STATUS)),
            BadToken | Expired => Some((BAD, STATUS)),
            _ => Some((DENIED, STATUS)),
        },
        WatchFromKey if id == Reader => Some((
            "canceled: rpc error: code = PermissionDenied desc = etcdserver: permission denied",
            WATCH,
        )),
        _ => None,
    }
}

async fn matrix(tokens: Tokens) {
    let idents: Vec<Ident> = match tokens {
        Tokens::Simple => vec![Root, Reader, Writer, Prefixed, NoRole, Anonymous, BadToken],
        Tokens::Jwt { .. } => vec![
            Root, Reader, Writer, Prefixed, NoRole, Anonymous, BadToken, Expired,
        ],
    };
    let (mut hearth, mut etcd) = side_by_side(&tokens).await;
    let both_etcd = hearth.server.kind() == Kind::Etcd;

    let mut rows = Vec::new();
    let mut failures = 0;
    let mut n = 0;
    for &case in CASES {
        for &id in &idents {
            n += 1;
            let h = run_cell(&hearth, case, id, n).await;
            let e = run_cell(&etcd, case, id, n).await;
            let verdict = match expected_difference(case, id) {
                Some((want, why)) if !both_etcd => {
                    if h == want && e != want {
                        format!("expected difference ({why})")
                    } else {
                        failures += 1;
                        format!("MISMATCH: expected Hearth to answer {want:?} ({why})")
                    }
                }
                _ if h == e => "same".into(),
                _ => {
                    failures += 1;
                    "MISMATCH".into()
                }
            };
            rows.push(format!(
                "{case:?} as {id:?}\n    hearth: {h}\n    etcd:   {e}\n    {verdict}"
            ));
            if case.changes_auth() || (case == AuthDisable && id == Root) {
                hearth.login(&tokens).await;
                etcd.login(&tokens).await;
            }
        }
    }
    if failures > 0 {
        panic!(
            "{failures} of {} cells differ unexpectedly; the whole matrix:\n{}",
            rows.len(),
            rows.join("\n")
        );
    }
    eprintln!("{} cells compared", rows.len());
}

fn es256_tokens() -> (Tokens, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(dir.path().join("jwt.key"), kp.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("jwt.pub"), kp.public_key_pem()).unwrap();
    (
        Tokens::Jwt {
            private: kp.serialize_pem(),
            dir: dir.path().to_path_buf(),
        },
        dir,
    )
}

#[tokio::test]
async fn every_rpc_as_every_identity_answers_as_etcd_with_simple_tokens() {
    matrix(Tokens::Simple).await;
}

#[tokio::test]
async fn every_rpc_as_every_identity_answers_as_etcd_with_jwt_tokens() {
    let (tokens, _dir) = es256_tokens();
    matrix(tokens).await;
}

/// RS256 keys written where `--auth-token` finds them: (PKCS#8 private PEM, SPKI public PEM).
fn rs256_keys(dir: &std::path::Path) -> String {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let key = rsa::PrivateKey::new(
        &mut getrandom::rand_core::UnwrapErr(getrandom::SysRng),
        2048,
    )
    .unwrap();
    let private = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let public = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    std::fs::write(dir.join("rs.key"), &private).unwrap();
    std::fs::write(dir.join("rs.pub"), public).unwrap();
    private
}

/// JWTs signed with RS256 and ES256 keys the test made: a log-in, a request with the token, a
/// token signed with another key and one past its `exp` answer as etcd 3.4 answers them.
#[tokio::test]
async fn jwt_tokens_with_rs256_and_es256_keys_answer_as_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let rs_private = rs256_keys(dir.path());
    let es = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(dir.path().join("es.key"), es.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("es.pub"), es.public_key_pem()).unwrap();
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    for (method, name, private, alg) in [
        (
            "RS256",
            "rs",
            rs_private.clone(),
            jsonwebtoken::Algorithm::RS256,
        ),
        (
            "ES256",
            "es",
            es.serialize_pem(),
            jsonwebtoken::Algorithm::ES256,
        ),
    ] {
        let flag = format!(
            "--auth-token=jwt,pub-key={},priv-key={},sign-method={method},ttl=10m",
            dir.path().join(format!("{name}.pub")).display(),
            dir.path().join(format!("{name}.key")).display()
        );
        let sign = |pem: &str, exp_offset: i64| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let claims =
                serde_json::json!({"exp": now + exp_offset, "revision": 100, "username": "root"});
            let key = match alg {
                jsonwebtoken::Algorithm::RS256 => {
                    jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
                }
                _ => jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            };
            jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).unwrap()
        };
        // Signed with a key the server does not know (and, for RS256, another algorithm).
        let forged = {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let claims = serde_json::json!({"exp": now + 600, "revision": 100, "username": "root"});
            let key =
                jsonwebtoken::EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
                &claims,
                &key,
            )
            .unwrap()
        };
        let expired = sign(&private, -3600);
        let mut seen = Vec::new();
        for kind in [Kind::Hearth, Kind::Etcd] {
            let s = Server::start_with(kind, Options::with_args(&[&flag, "--bcrypt-cost=4"])).await;
            let ch = channel(&s).await;
            let mut auth = AuthClient::new(ch.clone());
            auth.user_add(AuthUserAddRequest {
                name: "root".into(),
                password: "rootpw".into(),
                options: Some(UserAddOptions { no_password: false }),
                hashed_password: String::new(),
            })
            .await
            .unwrap();
            auth.user_grant_role(AuthUserGrantRoleRequest {
                user: "root".into(),
                role: "root".into(),
            })
            .await
            .unwrap();
            auth.auth_enable(AuthEnableRequest {}).await.unwrap();
            let token = login(&s, "root", "rootpw").await;
            assert_eq!(token.split('.').count(), 3, "{method}: a JWT: {token}");
            seen.push(vec![
                write_as(&s, &token).await,
                read_as(&s, &token).await,
                write_as(&s, &forged).await,
                write_as(&s, &expired).await,
            ]);
        }
        assert_eq!(seen[0][..2], ["OK", "OK"], "{method}");
        assert_eq!(seen[0], seen[1], "{method}: Hearth, then etcd");
    }
}

// ---- etcdctl, side by side ---------------------------------------------------------------

/// The same `etcdctl user/role/auth` session against both servers: every command's exit code,
/// output and error line equal.
#[tokio::test]
async fn etcdctl_user_role_and_auth_commands_answer_as_etcd() {
    let hearth = Server::start_with(Kind::Hearth, Options::with_args(&["--bcrypt-cost=4"])).await;
    let etcd = Server::start_with(Kind::Etcd, Options::with_args(&["--bcrypt-cost=4"])).await;
    let root = ["--user=root:rootpw"];
    let alice = ["--user=alice:alicepw"];
    let session: Vec<Vec<&str>> = vec![
        vec!["user", "add", "root:rootpw"],
        vec!["user", "add", "root:again"],
        vec!["auth", "enable"],
        vec!["user", "grant-role", "root", "root"],
        vec!["role", "add", "reader"],
        vec!["role", "add", "reader"],
        vec![
            "role",
            "grant-permission",
            "reader",
            "read",
            "a/",
            "--prefix",
        ],
        vec!["role", "grant-permission", "reader", "readwrite", "b", "c"],
        vec!["role", "grant-permission", "reader", "write", "k"],
        vec!["role", "grant-permission", "nosuchrole", "read", "x"],
        vec!["role", "get", "reader"],
        vec!["role", "get", "nosuchrole"],
        vec!["user", "add", "alice:alicepw"],
        vec!["user", "add", "--no-password", "cert-user"],
        vec!["user", "grant-role", "alice", "reader"],
        vec!["user", "grant-role", "alice", "nosuchrole"],
        vec!["user", "get", "alice"],
        vec!["user", "get", "--detail", "alice"],
        vec!["user", "list"],
        vec!["role", "list"],
        vec!["put", "a/1", "one"],
        vec!["auth", "enable"],
        vec!["auth", "enable"],
        vec!["put", "a/2", "two"],
    ];
    let as_users: Vec<(&[&str], Vec<&str>)> = vec![
        (&root, vec!["put", "a/2", "two"]),
        (&alice, vec!["get", "a/", "--prefix"]),
        (&alice, vec!["put", "a/3", "three"]),
        (&alice, vec!["put", "b", "bee"]),
        (&alice, vec!["get", "b"]),
        (&alice, vec!["get", "k"]),
        (&alice, vec!["del", "a/1"]),
        (&alice, vec!["user", "list"]),
        (&alice, vec!["user", "get", "alice"]),
        (&alice, vec!["role", "get", "reader"]),
        (&alice, vec!["role", "get", "root"]),
        (&alice, vec!["auth", "disable"]),
        (&["--user=alice:wrong"], vec!["get", "a/1"]),
        (&["--user=nobody:pw"], vec!["get", "a/1"]),
        (&["--user=cert-user:pw"], vec!["get", "a/1"]),
        (
            &root,
            vec!["role", "revoke-permission", "reader", "a/", "--prefix"],
        ),
        (
            &root,
            vec!["role", "revoke-permission", "reader", "a/", "--prefix"],
        ),
        (&alice, vec!["get", "a/1"]),
        (
            &root,
            vec!["user", "passwd", "alice", "--interactive=false"],
        ),
        (&["--user=alice:newpw"], vec!["get", "b"]),
        (&root, vec!["user", "revoke-role", "alice", "reader"]),
        (&root, vec!["user", "revoke-role", "alice", "reader"]),
        (&root, vec!["user", "revoke-role", "root", "root"]),
        (&root, vec!["role", "delete", "root"]),
        (&root, vec!["user", "delete", "root"]),
        (&root, vec!["role", "delete", "reader"]),
        (&root, vec!["user", "delete", "alice"]),
        (&root, vec!["user", "delete", "alice"]),
        (&root, vec!["user", "list"]),
        (&root, vec!["auth", "disable"]),
        (&[], vec!["put", "a/4", "four"]),
        (&[], vec!["user", "list"]),
    ];
    let mut diffs = Vec::new();
    let mut steps = Vec::new();
    let run = |s: &Server, user: &[&str], cmd: &[&str]| {
        let mut args: Vec<&str> = user.to_vec();
        args.extend_from_slice(cmd);
        let stdin = if cmd.contains(&"passwd") {
            "newpw\n"
        } else {
            ""
        };
        hearth_tests::ctl::Ctl::from_output(&s.etcdctl_stdin(&args, stdin))
    };
    let all = session
        .iter()
        .map(|c| (&[][..], c.clone()))
        .chain(as_users.iter().map(|(u, c)| (*u, c.clone())));
    for (user, cmd) in all {
        let h = run(&hearth, user, &cmd);
        let e = run(&etcd, user, &cmd);
        let line = format!("etcdctl {} {}", user.join(" "), cmd.join(" "));
        if h != e {
            diffs.push(format!("{line}\n  hearth: {h:?}\n  etcd:   {e:?}"));
        }
        steps.push(format!("{line}: {:?} {:?}", e.code, e.errors));
    }
    assert!(
        diffs.is_empty(),
        "{} etcdctl commands answered differently:\n{}\n\nthe session as etcd answered it:\n{}",
        diffs.len(),
        diffs.join("\n"),
        steps.join("\n")
    );
}

// ---- tokens held while the auth store changes ----------------------------------------------

/// A permission revoked, a role taken away or a user deleted while a client holds a token takes
/// effect on that client's next request, on both servers alike.
#[tokio::test]
async fn a_change_takes_effect_on_the_next_request_of_a_token_holder() {
    let tokens = Tokens::Simple;
    let (hearth, etcd) = side_by_side(&tokens).await;
    let mut seen = Vec::new();
    for t in [&hearth, &etcd] {
        let read = || read_a_k(t.channel.clone(), t.token(Reader));
        let write = || write_a_k(t.channel.clone(), t.token(Writer), b"w");
        let mut steps = vec![read().await, write().await];
        t.auth()
            .role_revoke_permission(with_token(
                AuthRoleRevokePermissionRequest {
                    role: "reader".into(),
                    key: b"a/".to_vec(),
                    range_end: b"a0".to_vec(),
                },
                t.root(),
            ))
            .await
            .unwrap();
        t.auth()
            .user_revoke_role(with_token(revoke_role_req("writer", "writer"), t.root()))
            .await
            .unwrap();
        steps.push(read().await);
        steps.push(write().await);
        t.auth()
            .user_delete(with_token(
                AuthUserDeleteRequest {
                    name: "reader".into(),
                },
                t.root(),
            ))
            .await
            .unwrap();
        steps.push(read().await);
        seen.push(steps);
    }
    assert_eq!(
        seen[0],
        [
            "OK",
            "OK",
            "PermissionDenied: etcdserver: permission denied",
            "PermissionDenied: etcdserver: permission denied",
            "Unauthenticated: etcdserver: invalid auth token",
        ],
        "Hearth"
    );
    if hearth.server.kind() == Kind::Hearth {
        assert_eq!(seen[0], seen[1], "Hearth, then etcd");
    }
}

/// A write authorized against an older auth revision is refused when applied: the header
/// carries the revision its credentials were read at, and a JWT keeps the revision of its
/// log-in, so a write with a token from before a revoke is refused with etcd's
/// `revision of auth store is old` (clients log in again and retry), never let through.
#[tokio::test]
async fn a_jwt_from_before_a_change_is_refused_as_old_then_works_after_log_in() {
    let (tokens, _dir) = es256_tokens();
    let (mut hearth, mut etcd) = side_by_side(&tokens).await;
    let mut seen = Vec::new();
    for t in [&mut hearth, &mut etcd] {
        let put = |t: &Target| {
            let channel = t.channel.clone();
            let tok = t.token(Writer).map(str::to_string);
            async move { write_a_k(channel, tok.as_deref(), b"w").await }
        };
        let mut steps = vec![put(t).await];
        t.change_auth().await;
        steps.push(put(t).await);
        t.login(&tokens).await;
        steps.push(put(t).await);
        seen.push(steps);
    }
    assert_eq!(
        seen[0],
        [
            "OK",
            "InvalidArgument: etcdserver: revision of auth store is old",
            "OK"
        ]
    );
    assert_eq!(seen[0], seen[1], "Hearth, then etcd");
}

/// LeaseRevoke is checked when applied against the keys attached to the lease, with the
/// revision the caller's credentials carry: a JWT from before an auth change is refused as old
/// for a lease with keys, while a lease without keys has nothing to check, and the root role is
/// let through before any key is checked (etcd's `checkLeasePuts`). After logging in again the
/// revoke goes through.
///
/// etcd 3.4.23 checks every key even for root, so its stale root token is refused as old too;
/// etcd 96d083177 "Early exit auth check on lease puts" (3.4.27, 3.5.10) lets root through
/// first, as Hearth does.
#[tokio::test]
async fn a_lease_revoke_with_a_jwt_from_before_a_change_is_refused_as_old_if_the_lease_has_keys() {
    let (tokens, _dir) = es256_tokens();
    let (mut hearth, mut etcd) = side_by_side(&tokens).await;
    let mut seen = Vec::new();
    for t in [&mut hearth, &mut etcd] {
        lease_on_a(t, 4001).await;
        for id in [4002, 4003] {
            t.lease()
                .lease_grant(with_token(LeaseGrantRequest { ttl: 600, id }, t.root()))
                .await
                .expect("grant");
        }
        t.kv()
            .put(with_token(
                PutRequest {
                    lease: 4003,
                    ..put_req(b"a/other", b"v")
                },
                t.root(),
            ))
            .await
            .expect("put with lease");
        t.change_auth().await;
        let revoke = |t: &Target, id: Ident, lease: i64| {
            let mut client = t.lease();
            let tok = t.token(id).map(str::to_string);
            async move {
                outcome(
                    client
                        .lease_revoke(with_token(LeaseRevokeRequest { id: lease }, tok.as_deref()))
                        .await,
                )
            }
        };
        let mut steps = vec![
            revoke(t, Writer, 4001).await,
            revoke(t, Writer, 4002).await,
            revoke(t, Root, 4003).await,
        ];
        t.login(&tokens).await;
        steps.push(revoke(t, Writer, 4001).await);
        seen.push(steps);
    }
    const OLD: &str = "InvalidArgument: etcdserver: revision of auth store is old";
    assert_eq!(seen[1], [OLD, "OK", OLD, "OK"], "etcd 3.4.23");
    let root_early_exit = if hearth.server.kind() == Kind::Hearth {
        "OK"
    } else {
        OLD
    };
    assert_eq!(seen[0], [OLD, "OK", root_early_exit, "OK"], "Hearth");
}

// ---- a cluster -------------------------------------------------------------------------------

async fn channel(s: &Server) -> Channel {
    Channel::from_shared(s.endpoint())
        .unwrap()
        .connect()
        .await
        .expect("connect")
}

async fn login(s: &Server, name: &str, password: &str) -> String {
    eventually(
        format!("{name} logged in at {}", s.endpoint()),
        Duration::from_secs(30),
        async || {
            AuthClient::new(channel(s).await)
                .authenticate(authenticate_req(name, password))
                .await
                .map(|r| r.into_inner().token)
        },
    )
    .await
}

async fn read_as(s: &Server, token: &str) -> String {
    read_a_k(channel(s).await, Some(token)).await
}

async fn write_as(s: &Server, token: &str) -> String {
    write_a_k(channel(s).await, Some(token), b"v").await
}

/// Adds `root` (password `rootpw`) with the root role, then enables auth.
async fn enable_auth_with_root(auth: &mut AuthClient<Channel>) {
    auth.user_add(user_add_req("root", "rootpw")).await.unwrap();
    auth.user_grant_role(grant_role_req("root", "root"))
        .await
        .unwrap();
    auth.auth_enable(AuthEnableRequest {}).await.unwrap();
}

/// Auth off again as root (for the harness's own anonymous checks), then every member's
/// HashKV compared.
async fn disable_auth_and_compare(cluster: &hearth_tests::Cluster, root: &str) {
    AuthClient::new(channel(cluster.member(0)).await)
        .auth_disable(with_token(AuthDisableRequest {}, Some(root)))
        .await
        .unwrap();
    cluster.assert_hashkv_equal().await;
}

const DENIED: &str = "PermissionDenied: etcdserver: permission denied";

/// On every member of `cluster`, a read of `a/k` with the token `reader` is allowed, and a write
/// with the token `write.0` answers `write.1`; `when` ends the failure message.
async fn assert_every_member(
    cluster: &hearth_tests::Cluster,
    reader: &str,
    write: (&str, &str),
    when: &str,
) {
    for i in 0..3 {
        let s = cluster.member(i);
        assert_eq!(read_as(s, reader).await, "OK", "member {i}{when}");
        assert_eq!(write_as(s, write.0).await, write.1, "member {i}{when}");
    }
}

/// The leader's member ID as `s` sees it, asked as root.
async fn leader_of(s: &Server, root: &str) -> Option<u64> {
    let st = MaintenanceClient::new(channel(s).await)
        .status(with_token(StatusRequest {}, Some(root)))
        .await
        .ok()?
        .into_inner();
    (st.leader != 0).then_some(st.leader)
}

/// Users, roles and permissions survive restarts of every member and leader changes; a JWT
/// from before them keeps working on every member, and a simple token minted through one member
/// works on the others once they applied it.
#[tokio::test]
async fn auth_survives_restarts_and_leader_changes_in_a_cluster() {
    let (_tokens, dir) = es256_tokens();
    let jwt = format!(
        "--auth-token=jwt,pub-key={},priv-key={},sign-method=ES256,ttl=10m",
        dir.path().join("jwt.pub").display(),
        dir.path().join("jwt.key").display()
    );
    let mut cluster =
        hearth_tests::Cluster::start_with(Kind::Hearth, 3, &[&jwt, "--bcrypt-cost=4"]).await;
    cluster.wait_leader(&[]).await;
    let m0 = channel(cluster.member(0)).await;
    let mut auth = AuthClient::new(m0.clone());
    auth.role_add(AuthRoleAddRequest {
        name: "reader".into(),
    })
    .await
    .unwrap();
    auth.role_grant_permission(grant_permission_req("reader", PermType::Read, b"a/", b"a0"))
        .await
        .unwrap();
    auth.user_add(user_add_req("reader", "readerpw"))
        .await
        .unwrap();
    auth.user_grant_role(grant_role_req("reader", "reader"))
        .await
        .unwrap();
    enable_auth_with_root(&mut auth).await;
    let root = login(cluster.member(0), "root", "rootpw").await;
    let reader = login(cluster.member(0), "reader", "readerpw").await;
    assert_eq!(write_as(cluster.member(0), &root).await, "OK");
    assert_every_member(&cluster, &reader, (&reader, DENIED), "").await;

    // Every member restarts; the auth state comes back from the backend.
    for i in 0..3 {
        cluster.member_mut(i).restart().await;
    }
    for i in 0..3 {
        let s = cluster.member(i);
        eventually(
            format!("member {i} reads as reader after the restarts"),
            Duration::from_secs(30),
            async || (read_as(s, &reader).await == "OK").then_some(()),
        )
        .await;
        assert_eq!(
            write_as(s, &reader).await,
            DENIED,
            "member {i} after restarts"
        );
        let roles = AuthClient::new(channel(s).await)
            .user_get(with_token(
                AuthUserGetRequest {
                    name: "reader".into(),
                },
                Some(&root),
            ))
            .await
            .unwrap()
            .into_inner()
            .roles;
        assert_eq!(roles, ["reader"], "member {i} after restarts");
    }

    // The leader hands over; the same tokens keep working everywhere.
    let leader = eventually(
        "a leader after the restarts",
        Duration::from_secs(30),
        async || leader_of(cluster.member(0), &root).await,
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let st = MaintenanceClient::new(channel(cluster.member(i)).await)
            .status(with_token(StatusRequest {}, Some(&root)))
            .await
            .unwrap()
            .into_inner();
        ids.push(st.header.unwrap().member_id);
    }
    let from = ids.iter().position(|id| *id == leader).unwrap();
    let target = ids[(from + 1) % 3];
    MaintenanceClient::new(channel(cluster.member(from)).await)
        .move_leader(with_token(
            MoveLeaderRequest { target_id: target },
            Some(&root),
        ))
        .await
        .expect("move leader");
    // Every member must know the new leader first: a read in flight on a member while it learns of
    // the change fails with `leader changed`, as in etcd.
    for i in 0..3 {
        eventually("the new leader", Duration::from_secs(30), async || {
            (leader_of(cluster.member(i), &root).await == Some(target)).then_some(())
        })
        .await;
    }
    assert_every_member(&cluster, &reader, (&root, "OK"), " after the move").await;

    disable_auth_and_compare(&cluster, &root).await;
}

/// etcd's simple tokens: minted by every member as it applies the Authenticate entry, so a token
/// obtained through one member is accepted by the others (each waits until it applied it).
#[tokio::test]
async fn a_simple_token_from_one_member_works_on_the_others() {
    let mut cluster =
        hearth_tests::Cluster::start_with(Kind::Hearth, 3, &["--bcrypt-cost=4"]).await;
    cluster.wait_leader(&[]).await;
    let mut auth = AuthClient::new(channel(cluster.member(0)).await);
    enable_auth_with_root(&mut auth).await;
    let root = login(cluster.member(1), "root", "rootpw").await;
    for i in 0..3 {
        // A linearizable read first: a member that has not applied the auth enable yet would take
        // the write as one without auth, which is then refused when applied.
        assert_eq!(read_as(cluster.member(i), &root).await, "OK", "member {i}");
        assert_eq!(write_as(cluster.member(i), &root).await, "OK", "member {i}");
    }
    // A restart forgets simple tokens (they live in memory, as in etcd): the client logs in again.
    cluster.member_mut(2).restart().await;
    assert_eq!(
        write_as(cluster.member(2), &root).await,
        "Unauthenticated: etcdserver: invalid auth token"
    );
    let again = login(cluster.member(2), "root", "rootpw").await;
    assert_eq!(write_as(cluster.member(2), &again).await, "OK");
    disable_auth_and_compare(&cluster, &root).await;
}

/// A simple token does not outlive its member's restart even when its Authenticate entry is the
/// last one in the log: the member applies the entry again after the restart, and minting the
/// token again then would give it a new lifetime (and bring an expired one back). etcd 3.4 does
/// mint it again (it records the consistent index only with a write); etcd 3.5 records it with
/// every commit, so after a clean stop it does not, as here.
#[tokio::test]
async fn a_simple_token_is_not_minted_again_when_its_entry_is_replayed() {
    let mut s = Server::start_with(Kind::Hearth, Options::with_args(&["--bcrypt-cost=4"])).await;
    let mut auth = AuthClient::new(channel(&s).await);
    enable_auth_with_root(&mut auth).await;
    let root = login(&s, "root", "rootpw").await;
    assert_eq!(read_as(&s, &root).await, "OK");
    s.restart().await;
    assert_eq!(
        read_as(&s, &root).await,
        "Unauthenticated: etcdserver: invalid auth token"
    );
    // Logging in again works, and that token is minted.
    let again = login(&s, "root", "rootpw").await;
    assert_eq!(read_as(&s, &again).await, "OK");
}

// ---- the JSON gateway --------------------------------------------------------------------------

/// One JSON request over HTTP/1.0 on the client port: status and body.
fn post_json(port: u16, path: &str, body: &str, authorization: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(CALL_TIMEOUT)).unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn client_port(s: &Server) -> u16 {
    s.endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("endpoint with a port")
}

type JsonCall<'a> = dyn FnMut(&str, String, Option<&str>) -> (u16, String) + 'a;

/// Two users over JSON: each logs in at `/v3/auth/authenticate`, then sends its token in the
/// `Authorization` header; allowed and denied calls answer as etcd's gateway does.
#[tokio::test]
async fn two_users_over_the_json_gateway_answer_as_etcd() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let tokens = Tokens::Simple;
    let (hearth, etcd) = side_by_side(&tokens).await;
    let mut transcripts = Vec::new();
    for t in [&hearth, &etcd] {
        let port = client_port(&t.server);
        let mut lines = Vec::new();
        let mut call = |path: &str, body: String, auth: Option<&str>| {
            let (status, body) = post_json(port, path, &body, auth);
            // A success's body carries revisions and ids; an error's is compared whole.
            let shown = if status == 200 {
                "<ok>".to_string()
            } else {
                body.clone()
            };
            lines.push(format!("{path} {status} {shown}"));
            (status, body)
        };
        let login = |call: &mut JsonCall<'_>, name: &str, pw: &str| {
            let (_, body) = call(
                "/v3/auth/authenticate",
                format!(r#"{{"name":"{name}","password":"{pw}"}}"#),
                None,
            );
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"]
                .as_str()
                .map(str::to_string)
        };
        let reader = login(&mut call, "reader", "readerpw").expect("reader's token");
        let writer = login(&mut call, "writer", "writerpw").expect("writer's token");
        assert_eq!(login(&mut call, "reader", "wrong"), None);
        let key = b64("a/k");
        let range = format!(r#"{{"key":"{key}"}}"#);
        let put = format!(r#"{{"key":"{key}","value":"{}"}}"#, b64("json"));
        call("/v3/kv/range", range.clone(), Some(&reader));
        call("/v3/kv/put", put.clone(), Some(&reader));
        call("/v3/kv/put", put.clone(), Some(&writer));
        call("/v3/kv/range", range.clone(), Some(&writer));
        call("/v3/kv/range", range.clone(), None);
        call("/v3/kv/range", range.clone(), Some("not-a-token"));
        call("/v3/auth/user/list", "{}".into(), Some(&reader));
        call(
            "/v3/auth/user/get",
            r#"{"name":"reader"}"#.into(),
            Some(&reader),
        );
        transcripts.push(lines);
    }
    assert_eq!(
        transcripts[0], transcripts[1],
        "Hearth's JSON answers, then etcd's"
    );
    assert!(
        transcripts[0].iter().any(|l| l.contains(" 403 ")),
        "a denied call: {:#?}",
        transcripts[0]
    );
}
