//! Services whose RPCs are declared on the wire but not served yet: each answers `Unimplemented`, so clients
//! get a clear status instead of a missing service.

use api::etcdserverpb;
use tonic::{Request, Response, Status};

/// The stub behind every not-yet-served service.
pub struct Unimplemented;

pub(crate) fn unimplemented(service: &str, method: &str) -> Status {
    Status::unimplemented(format!(
        "{service}.{method} is not implemented by this server yet"
    ))
}

#[tonic::async_trait]
impl etcdserverpb::auth_server::Auth for Unimplemented {
    async fn auth_enable(
        &self,
        _: Request<etcdserverpb::AuthEnableRequest>,
    ) -> Result<Response<etcdserverpb::AuthEnableResponse>, Status> {
        Err(unimplemented("Auth", "auth_enable"))
    }
    async fn auth_disable(
        &self,
        _: Request<etcdserverpb::AuthDisableRequest>,
    ) -> Result<Response<etcdserverpb::AuthDisableResponse>, Status> {
        Err(unimplemented("Auth", "auth_disable"))
    }
    async fn auth_status(
        &self,
        _: Request<etcdserverpb::AuthStatusRequest>,
    ) -> Result<Response<etcdserverpb::AuthStatusResponse>, Status> {
        Err(unimplemented("Auth", "auth_status"))
    }
    async fn authenticate(
        &self,
        _: Request<etcdserverpb::AuthenticateRequest>,
    ) -> Result<Response<etcdserverpb::AuthenticateResponse>, Status> {
        Err(unimplemented("Auth", "authenticate"))
    }
    async fn user_add(
        &self,
        _: Request<etcdserverpb::AuthUserAddRequest>,
    ) -> Result<Response<etcdserverpb::AuthUserAddResponse>, Status> {
        Err(unimplemented("Auth", "user_add"))
    }
    async fn user_get(
        &self,
        _: Request<etcdserverpb::AuthUserGetRequest>,
    ) -> Result<Response<etcdserverpb::AuthUserGetResponse>, Status> {
        Err(unimplemented("Auth", "user_get"))
    }
    async fn user_list(
        &self,
        _: Request<etcdserverpb::AuthUserListRequest>,
    ) -> Result<Response<etcdserverpb::AuthUserListResponse>, Status> {
        Err(unimplemented("Auth", "user_list"))
    }
    async fn user_delete(
        &self,
        _: Request<etcdserverpb::AuthUserDeleteRequest>,
    ) -> Result<Response<etcdserverpb::AuthUserDeleteResponse>, Status> {
        Err(unimplemented("Auth", "user_delete"))
    }
    async fn user_change_password(
        &self,
        _: Request<etcdserverpb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<etcdserverpb::AuthUserChangePasswordResponse>, Status> {
        Err(unimplemented("Auth", "user_change_password"))
    }
    async fn user_grant_role(
        &self,
        _: Request<etcdserverpb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<etcdserverpb::AuthUserGrantRoleResponse>, Status> {
        Err(unimplemented("Auth", "user_grant_role"))
    }
    async fn user_revoke_role(
        &self,
        _: Request<etcdserverpb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<etcdserverpb::AuthUserRevokeRoleResponse>, Status> {
        Err(unimplemented("Auth", "user_revoke_role"))
    }
    async fn role_add(
        &self,
        _: Request<etcdserverpb::AuthRoleAddRequest>,
    ) -> Result<Response<etcdserverpb::AuthRoleAddResponse>, Status> {
        Err(unimplemented("Auth", "role_add"))
    }
    async fn role_get(
        &self,
        _: Request<etcdserverpb::AuthRoleGetRequest>,
    ) -> Result<Response<etcdserverpb::AuthRoleGetResponse>, Status> {
        Err(unimplemented("Auth", "role_get"))
    }
    async fn role_list(
        &self,
        _: Request<etcdserverpb::AuthRoleListRequest>,
    ) -> Result<Response<etcdserverpb::AuthRoleListResponse>, Status> {
        Err(unimplemented("Auth", "role_list"))
    }
    async fn role_delete(
        &self,
        _: Request<etcdserverpb::AuthRoleDeleteRequest>,
    ) -> Result<Response<etcdserverpb::AuthRoleDeleteResponse>, Status> {
        Err(unimplemented("Auth", "role_delete"))
    }
    async fn role_grant_permission(
        &self,
        _: Request<etcdserverpb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<etcdserverpb::AuthRoleGrantPermissionResponse>, Status> {
        Err(unimplemented("Auth", "role_grant_permission"))
    }
    async fn role_revoke_permission(
        &self,
        _: Request<etcdserverpb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<etcdserverpb::AuthRoleRevokePermissionResponse>, Status> {
        Err(unimplemented("Auth", "role_revoke_permission"))
    }
}
