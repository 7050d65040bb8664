//! Who sends a request, and the Auth service (etcd's `v3rpc/auth.go`).
//!
//! etcd reads the caller's credentials from the gRPC context wherever it needs them
//! (`AuthInfoFromCtx`); Hearth reads them once per request into a [`Ctx`] and hands it to the
//! member's methods, which resolve it when etcd would ([`AuthGetter::auth_info`]): a request
//! carries a token in the `token` metadata (the JSON gateway turns `Authorization` into it; a
//! plain `authorization` metadata entry is etcd's second choice), and on a TLS port the verified
//! client certificate's common name, which counts as the user under `--client-cert-auth` when
//! no token is given. The lock and election recipes run in-process over the KV service; they put
//! their caller's `Ctx` into the requests they make, so they act with the caller's rights.
//!
//! The Auth service itself only translates: Authenticate and every other Auth request go to the
//! member ([`Authenticator`]), which checks the password (Authenticate) or hashes a new one
//! (UserAdd, UserChangePassword) off the runtime, proposes through Raft, and answers with what
//! the applier decided; errors are etcd's (`togRPCError`).

use std::sync::Arc;

use api::etcdserverpb::{
    auth_server::Auth, AuthDisableRequest, AuthDisableResponse, AuthEnableRequest,
    AuthEnableResponse, AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest,
    AuthRoleDeleteResponse, AuthRoleGetRequest, AuthRoleGetResponse,
    AuthRoleGrantPermissionRequest, AuthRoleGrantPermissionResponse, AuthRoleListRequest,
    AuthRoleListResponse, AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse,
    AuthStatusRequest, AuthStatusResponse, AuthUserAddRequest, AuthUserAddResponse,
    AuthUserChangePasswordRequest, AuthUserChangePasswordResponse, AuthUserDeleteRequest,
    AuthUserDeleteResponse, AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest,
    AuthUserGrantRoleResponse, AuthUserListRequest, AuthUserListResponse,
    AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse, AuthenticateRequest,
    AuthenticateResponse, InternalRaftRequest,
};
use apply::auth::AuthApplied;
use auth::{AuthError, AuthInfo};
use rpctypes::ServerError;
use tonic::{Request, Response, Status};

use crate::{AuthGetter, Authenticator, KvGetter, RaftStatusGetter};

/// What a request says about who sent it (etcd keeps it in the gRPC context).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ctx {
    /// The `token` metadata value, else the `authorization` one.
    pub token: Option<String>,
    /// The common name of the client certificate the TLS port verified, if any. Requests that
    /// came through the JSON gateway have none (etcd ignores the gateway's own certificate).
    pub common_name: Option<String>,
    /// The member's own request made as root (etcd's `AuthStore().WithRoot`), such as the read of
    /// `/health`. Never set from a client's request.
    pub root: bool,
}

impl Ctx {
    /// The credentials of `req`: a `Ctx` an in-process caller attached (the recipes), or the
    /// request's metadata and connection.
    pub fn of<T>(req: &Request<T>) -> Ctx {
        if let Some(cx) = req.extensions().get::<Ctx>() {
            return cx.clone();
        }
        let md = req.metadata();
        let token = md
            .get(auth::TOKEN_METADATA_KEY)
            .or_else(|| md.get(auth::TOKEN_METADATA_KEY_GATEWAY))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let common_name = req
            .extensions()
            .get::<transport::ConnInfo>()
            .and_then(|c| c.common_name())
            .map(str::to_string);
        Ctx {
            token,
            common_name,
            root: false,
        }
    }

    /// Root's credentials, for a request the member makes on its own behalf.
    pub fn root() -> Ctx {
        Ctx {
            root: true,
            ..Ctx::default()
        }
    }

    /// `req` carrying these credentials, for an in-process call.
    pub fn attach<T>(&self, req: T) -> Request<T> {
        let mut r = Request::new(req);
        r.extensions_mut().insert(self.clone());
        r
    }
}

/// etcd's check for calls only the root role may make (`AuthAdmin.isPermitted`,
/// `authMaintenanceServer.isAuthenticated`): the caller's credentials, then `IsAdminPermitted`.
pub(crate) async fn require_admin<S: AuthGetter + ?Sized>(
    srv: &S,
    cx: &Ctx,
) -> Result<(), AuthError> {
    let ai = srv.auth_info(cx).await?;
    srv.auth_store().require_admin(ai.as_ref())
}

/// etcd 3.5's `requireAuthInfo`: with auth enabled, some valid credentials.
pub(crate) async fn require_auth_info<S: AuthGetter + ?Sized>(
    srv: &S,
    cx: &Ctx,
) -> Result<Option<AuthInfo>, AuthError> {
    if !srv.auth_store().is_enabled() {
        return Ok(None);
    }
    let ai = srv.auth_info(cx).await?;
    srv.auth_store().require_auth_info(ai.as_ref())?;
    Ok(ai)
}

pub struct AuthService<S> {
    srv: Arc<S>,
}

impl<S> AuthService<S> {
    pub fn new(srv: Arc<S>) -> AuthService<S> {
        AuthService { srv }
    }
}

impl<S: Authenticator + RaftStatusGetter> AuthService<S> {
    async fn request(&self, cx: Ctx, req: InternalRaftRequest) -> Result<AuthApplied, Status> {
        Ok(self.srv.auth_request(&cx, req).await?)
    }
}

fn unexpected() -> Status {
    ServerError::Internal("unexpected auth answer".into()).into()
}

/// The Auth service: each RPC puts its request into its field of an `InternalRaftRequest` and
/// takes its answer out of its variant of `AuthApplied`, with the member's header. (One macro
/// writes the whole `impl`, so that `async_trait` sees the methods.)
macro_rules! auth_service {
    ($(($name:ident, $req:ty, $resp:ty, $field:ident, $variant:ident)),* $(,)?) => {
        #[tonic::async_trait]
        impl<S: Authenticator + RaftStatusGetter + KvGetter> Auth for AuthService<S> {
            $(
                async fn $name(&self, req: Request<$req>) -> Result<Response<$resp>, Status> {
                    let cx = Ctx::of(&req);
                    let internal = InternalRaftRequest {
                        $field: Some(req.into_inner()),
                        ..Default::default()
                    };
                    match self.request(cx, internal).await? {
                        AuthApplied::$variant(mut resp) => {
                            resp.header = crate::header::header(&*self.srv, 0);
                            Ok(Response::new(resp))
                        }
                        _ => Err(unexpected()),
                    }
                }
            )*

            async fn authenticate(
                &self,
                req: Request<AuthenticateRequest>,
            ) -> Result<Response<AuthenticateResponse>, Status> {
                let mut resp = self.srv.authenticate(req.into_inner()).await?;
                resp.header = crate::header::header(&*self.srv, 0);
                Ok(Response::new(resp))
            }
        }
    };
}

auth_service!(
    (
        auth_enable,
        AuthEnableRequest,
        AuthEnableResponse,
        auth_enable,
        Enable
    ),
    (
        auth_disable,
        AuthDisableRequest,
        AuthDisableResponse,
        auth_disable,
        Disable
    ),
    (
        auth_status,
        AuthStatusRequest,
        AuthStatusResponse,
        auth_status,
        Status
    ),
    (
        user_add,
        AuthUserAddRequest,
        AuthUserAddResponse,
        auth_user_add,
        UserAdd
    ),
    (
        user_get,
        AuthUserGetRequest,
        AuthUserGetResponse,
        auth_user_get,
        UserGet
    ),
    (
        user_list,
        AuthUserListRequest,
        AuthUserListResponse,
        auth_user_list,
        UserList
    ),
    (
        user_delete,
        AuthUserDeleteRequest,
        AuthUserDeleteResponse,
        auth_user_delete,
        UserDelete
    ),
    (
        user_change_password,
        AuthUserChangePasswordRequest,
        AuthUserChangePasswordResponse,
        auth_user_change_password,
        UserChangePassword
    ),
    (
        user_grant_role,
        AuthUserGrantRoleRequest,
        AuthUserGrantRoleResponse,
        auth_user_grant_role,
        UserGrantRole
    ),
    (
        user_revoke_role,
        AuthUserRevokeRoleRequest,
        AuthUserRevokeRoleResponse,
        auth_user_revoke_role,
        UserRevokeRole
    ),
    (
        role_add,
        AuthRoleAddRequest,
        AuthRoleAddResponse,
        auth_role_add,
        RoleAdd
    ),
    (
        role_get,
        AuthRoleGetRequest,
        AuthRoleGetResponse,
        auth_role_get,
        RoleGet
    ),
    (
        role_list,
        AuthRoleListRequest,
        AuthRoleListResponse,
        auth_role_list,
        RoleList
    ),
    (
        role_delete,
        AuthRoleDeleteRequest,
        AuthRoleDeleteResponse,
        auth_role_delete,
        RoleDelete
    ),
    (
        role_grant_permission,
        AuthRoleGrantPermissionRequest,
        AuthRoleGrantPermissionResponse,
        auth_role_grant_permission,
        RoleGrantPermission
    ),
    (
        role_revoke_permission,
        AuthRoleRevokePermissionRequest,
        AuthRoleRevokePermissionResponse,
        auth_role_revoke_permission,
        RoleRevokePermission
    ),
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_token_metadata_or_the_client_certificate() {
        let mut r = Request::new(());
        r.metadata_mut()
            .insert("authorization", "from-gateway".parse().unwrap());
        assert_eq!(Ctx::of(&r).token.as_deref(), Some("from-gateway"));
        r.metadata_mut().insert("token", "tok.5".parse().unwrap());
        assert_eq!(Ctx::of(&r).token.as_deref(), Some("tok.5"));
        assert_eq!(Ctx::of(&r).common_name, None);

        let attached = Ctx {
            token: None,
            common_name: Some("alice".into()),
            root: false,
        };
        let r = attached.attach(());
        assert_eq!(Ctx::of(&r), attached);
    }

    #[test]
    fn the_verified_client_certificate_names_the_user() {
        let tls = transport::TlsConnInfo {
            peer_certificates: Vec::new(),
            peer: Some(transport::CertSummary {
                common_name: Some("alice".into()),
                ..Default::default()
            }),
            alpn: None,
            version: None,
            cipher_suite: None,
            server_name: None,
        };
        let mut r = Request::new(());
        r.extensions_mut()
            .insert(transport::ConnInfo::new(None, None, Some(tls)));
        assert_eq!(Ctx::of(&r).common_name.as_deref(), Some("alice"));
        assert_eq!(Ctx::of(&r).token, None);
        // A plaintext connection (or the JSON gateway's in-process call) names nobody.
        let mut r = Request::new(());
        r.extensions_mut()
            .insert(transport::ConnInfo::new(None, None, None));
        assert_eq!(Ctx::of(&r).common_name, None);
    }
}
