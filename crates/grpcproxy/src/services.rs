//! The services the proxy forwards as they are (etcd's `maintenance.go`, `cluster.go`, `auth.go`,
//! `lock.go`, `election.go`): Maintenance, Cluster, Auth, Lock and Election. Calls go to the
//! pinned endpoint with the retry policy of `upstream`; lock and election names and the keys
//! they return carry the namespace.
//!
//! `MemberList` answers as etcd's proxy does: with `--advertise-client-url` set (the default),
//! the proxy lists itself as the only member, so clients that sync their endpoints from the member
//! list keep talking to the proxy; with it empty, the cluster's list is passed through.

use std::pin::Pin;
use std::sync::Arc;

use api::etcdserverpb::auth_client::AuthClient;
use api::etcdserverpb::auth_server::Auth;
use api::etcdserverpb::cluster_client::ClusterClient;
use api::etcdserverpb::cluster_server::Cluster;
use api::etcdserverpb::maintenance_client::MaintenanceClient;
use api::etcdserverpb::maintenance_server::Maintenance;
use api::etcdserverpb::*;
use api::v3electionpb::election_client::ElectionClient;
use api::v3electionpb::election_server::Election;
use api::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use api::v3lockpb::lock_client::LockClient;
use api::v3lockpb::lock_server::Lock;
use api::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use futures::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use crate::namespace::Namespace;
use crate::upstream::{client_status, forward, Retry, Upstream};

/// Forwards one unary call: `$client` is the tonic client type, `$method` its method.
macro_rules! unary {
    ($up:expr, $req:ident, $retry:expr, $client:ident, $method:ident) => {{
        let md = $req.metadata().clone();
        let r = $req.into_inner();
        let up: &Upstream = $up;
        up.call($retry, |ch| {
            let req = forward(&md, r.clone());
            async move {
                $client::new(ch)
                    .max_decoding_message_size(up.max_recv_bytes)
                    .max_encoding_message_size(up.max_send_bytes)
                    .$method(req)
                    .await
                    .map(Response::into_inner)
            }
        })
        .await
        .map_err(|s| client_status(up, s))
    }};
}

/// Implements pure forwarding methods of a service trait.
macro_rules! forward_methods {
    ($client:ident; $($method:ident($req:ty) -> $resp:ty, $retry:expr;)*) => {
        $(
            // What `#[tonic::async_trait]` makes of an `async fn` (it cannot see into a macro).
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                req: Request<$req>,
            ) -> Pin<Box<dyn std::future::Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move { unary!(&self.up, req, $retry, $client, $method).map(Response::new) })
            }
        )*
    };
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Passes an upstream server stream on to the client, each message through `f`.
fn relay<T: Send + 'static>(s: Streaming<T>, f: impl Fn(T) -> T + Send + 'static) -> BoxStream<T> {
    Box::pin(s.map(move |m| m.map(&f)))
}

pub struct MaintenanceProxy {
    pub up: Arc<Upstream>,
}

#[tonic::async_trait]
impl Maintenance for MaintenanceProxy {
    type SnapshotStream = BoxStream<SnapshotResponse>;

    forward_methods! { MaintenanceClient;
        alarm(AlarmRequest) -> AlarmResponse, Retry::Unsent;
        status(StatusRequest) -> StatusResponse, Retry::Safe;
        defragment(DefragmentRequest) -> DefragmentResponse, Retry::Unsent;
        hash(HashRequest) -> HashResponse, Retry::Safe;
        hash_kv(HashKvRequest) -> HashKvResponse, Retry::Safe;
        move_leader(MoveLeaderRequest) -> MoveLeaderResponse, Retry::Unsent;
        downgrade(DowngradeRequest) -> DowngradeResponse, Retry::Unsent;
    }

    async fn snapshot(
        &self,
        req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let s = unary!(&self.up, req, Retry::Safe, MaintenanceClient, snapshot)?;
        Ok(Response::new(relay(s, |m| m)))
    }
}

pub struct ClusterProxy {
    pub up: Arc<Upstream>,
    /// `--advertise-client-url`; empty to pass `MemberList` through.
    pub advertise_client_url: String,
}

/// The machine's host name, which etcd's proxy gives itself in `MemberList`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl Cluster for ClusterProxy {
    forward_methods! { ClusterClient;
        member_add(MemberAddRequest) -> MemberAddResponse, Retry::Unsent;
        member_remove(MemberRemoveRequest) -> MemberRemoveResponse, Retry::Unsent;
        member_update(MemberUpdateRequest) -> MemberUpdateResponse, Retry::Unsent;
        member_promote(MemberPromoteRequest) -> MemberPromoteResponse, Retry::Unsent;
    }

    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if !self.advertise_client_url.is_empty() {
            return Ok(Response::new(MemberListResponse {
                header: None,
                members: vec![Member {
                    name: hostname(),
                    client_ur_ls: vec![self.advertise_client_url.clone()],
                    ..Default::default()
                }],
            }));
        }
        unary!(&self.up, req, Retry::Safe, ClusterClient, member_list).map(Response::new)
    }
}

pub struct AuthProxy {
    pub up: Arc<Upstream>,
}

#[tonic::async_trait]
impl Auth for AuthProxy {
    forward_methods! { AuthClient;
        auth_enable(AuthEnableRequest) -> AuthEnableResponse, Retry::Unsent;
        auth_disable(AuthDisableRequest) -> AuthDisableResponse, Retry::Unsent;
        auth_status(AuthStatusRequest) -> AuthStatusResponse, Retry::Safe;
        authenticate(AuthenticateRequest) -> AuthenticateResponse, Retry::Safe;
        user_add(AuthUserAddRequest) -> AuthUserAddResponse, Retry::Unsent;
        user_get(AuthUserGetRequest) -> AuthUserGetResponse, Retry::Safe;
        user_list(AuthUserListRequest) -> AuthUserListResponse, Retry::Safe;
        user_delete(AuthUserDeleteRequest) -> AuthUserDeleteResponse, Retry::Unsent;
        user_change_password(AuthUserChangePasswordRequest) -> AuthUserChangePasswordResponse, Retry::Unsent;
        user_grant_role(AuthUserGrantRoleRequest) -> AuthUserGrantRoleResponse, Retry::Unsent;
        user_revoke_role(AuthUserRevokeRoleRequest) -> AuthUserRevokeRoleResponse, Retry::Unsent;
        role_add(AuthRoleAddRequest) -> AuthRoleAddResponse, Retry::Unsent;
        role_get(AuthRoleGetRequest) -> AuthRoleGetResponse, Retry::Safe;
        role_list(AuthRoleListRequest) -> AuthRoleListResponse, Retry::Safe;
        role_delete(AuthRoleDeleteRequest) -> AuthRoleDeleteResponse, Retry::Unsent;
        role_grant_permission(AuthRoleGrantPermissionRequest) -> AuthRoleGrantPermissionResponse, Retry::Unsent;
        role_revoke_permission(AuthRoleRevokePermissionRequest) -> AuthRoleRevokePermissionResponse, Retry::Unsent;
    }
}

pub struct LockProxy {
    pub up: Arc<Upstream>,
    pub ns: Namespace,
}

#[tonic::async_trait]
impl Lock for LockProxy {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let req = req.map(|mut r| {
            r.name = self.ns.key(&r.name);
            r
        });
        let mut resp = unary!(&self.up, req, Retry::Unsent, LockClient, lock)?;
        self.ns.strip_owned(&mut resp.key);
        Ok(Response::new(resp))
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let req = req.map(|mut r| {
            r.key = self.ns.key(&r.key);
            r
        });
        unary!(&self.up, req, Retry::Unsent, LockClient, unlock).map(Response::new)
    }
}

pub struct ElectionProxy {
    pub up: Arc<Upstream>,
    pub ns: Namespace,
}

impl ElectionProxy {
    fn prefix_leader(&self, l: &mut Option<LeaderKey>) {
        if let Some(l) = l {
            l.name = self.ns.key(&l.name);
            l.key = self.ns.key(&l.key);
        }
    }
}

fn strip_leader(ns: &Namespace, l: &mut Option<LeaderKey>) {
    if let Some(l) = l {
        ns.strip_owned(&mut l.name);
        ns.strip_owned(&mut l.key);
    }
}

#[tonic::async_trait]
impl Election for ElectionProxy {
    type ObserveStream = BoxStream<LeaderResponse>;

    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let req = req.map(|mut r| {
            r.name = self.ns.key(&r.name);
            r
        });
        let mut resp = unary!(&self.up, req, Retry::Unsent, ElectionClient, campaign)?;
        strip_leader(&self.ns, &mut resp.leader);
        Ok(Response::new(resp))
    }

    async fn proclaim(
        &self,
        req: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let req = req.map(|mut r| {
            self.prefix_leader(&mut r.leader);
            r
        });
        unary!(&self.up, req, Retry::Unsent, ElectionClient, proclaim).map(Response::new)
    }

    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let req = req.map(|mut r| {
            r.name = self.ns.key(&r.name);
            r
        });
        let mut resp = unary!(&self.up, req, Retry::Safe, ElectionClient, leader)?;
        if let Some(kv) = &mut resp.kv {
            self.ns.kv(kv);
        }
        Ok(Response::new(resp))
    }

    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let req = req.map(|mut r| {
            r.name = self.ns.key(&r.name);
            r
        });
        let s = unary!(&self.up, req, Retry::Safe, ElectionClient, observe)?;
        let ns = self.ns.clone();
        Ok(Response::new(relay(s, move |mut m| {
            if let Some(kv) = &mut m.kv {
                ns.kv(kv);
            }
            m
        })))
    }

    async fn resign(
        &self,
        req: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let req = req.map(|mut r| {
            self.prefix_leader(&mut r.leader);
            r
        });
        unary!(&self.up, req, Retry::Unsent, ElectionClient, resign).map(Response::new)
    }
}
