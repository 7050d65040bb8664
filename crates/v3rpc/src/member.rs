//! The Cluster service: member list, add (voter or learner), remove, update and promote, as etcd's
//! `v3rpc/member.go`. Its response headers carry no revision, as etcd's do. With auth enabled,
//! changes need the root role (etcd's `checkMembershipOperationPermission`) and the list any
//! valid user (etcd 3.5's `requireAuthInfo`). A `linearizable` member list waits for a linearizable
//! read point first, as etcd 3.5's does.

use std::sync::Arc;

use api::etcdserverpb::{
    cluster_server::Cluster as ClusterApi, Member as PbMember, MemberAddRequest, MemberAddResponse,
    MemberListRequest, MemberListResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
    ResponseHeader,
};
use tonic::{Request, Response, Status};

use membership::Member;
use rpctypes::ServerError;

use crate::auth::{require_admin, require_auth_info, Ctx};
use crate::{AuthGetter, Cluster, RaftStatusGetter, ReadIndexer};

pub struct ClusterService<S> {
    srv: Arc<S>,
}

impl<S: RaftStatusGetter> ClusterService<S> {
    pub fn new(srv: Arc<S>) -> ClusterService<S> {
        ClusterService { srv }
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.srv.cluster_id(),
            member_id: self.srv.member_id(),
            revision: 0,
            raft_term: self.srv.term(),
        })
    }
}

fn to_pb(members: &[Member]) -> Vec<PbMember> {
    members.iter().map(Member::to_etcd).collect()
}

#[tonic::async_trait]
impl<S> ClusterApi for ClusterService<S>
where
    S: Cluster + RaftStatusGetter + ReadIndexer + AuthGetter,
{
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        // Bad URLs are refused before the permission check, as etcd's gRPC layer does.
        let peer_urls = self.srv.parse_peer_urls(&req.get_ref().peer_ur_ls)?;
        require_admin(&*self.srv, &Ctx::of(&req))
            .await
            .map_err(ServerError::from)?;
        let (m, members) = self
            .srv
            .add_member(peer_urls, req.get_ref().is_learner)
            .await?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(PbMember {
                id: m.id,
                peer_ur_ls: m.peer_urls,
                is_learner: m.is_learner,
                ..Default::default()
            }),
            members: to_pb(&members),
        }))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        require_admin(&*self.srv, &Ctx::of(&req))
            .await
            .map_err(ServerError::from)?;
        let members = self.srv.remove_member(req.into_inner().id).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members: to_pb(&members),
        }))
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        require_admin(&*self.srv, &Ctx::of(&req))
            .await
            .map_err(ServerError::from)?;
        let req = req.into_inner();
        let members = self.srv.update_member(req.id, req.peer_ur_ls).await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members: to_pb(&members),
        }))
    }

    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        require_auth_info(&*self.srv, &Ctx::of(&req))
            .await
            .map_err(ServerError::from)?;
        // etcd 3.5: a linearizable list is read after a linearizable read point, so it has every
        // membership change committed before the request.
        if req.get_ref().linearizable {
            self.srv.linearizable_read().await?;
        }
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: to_pb(&self.srv.members()),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        require_admin(&*self.srv, &Ctx::of(&req))
            .await
            .map_err(ServerError::from)?;
        let members = self.srv.promote_member(req.into_inner().id).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members: to_pb(&members),
        }))
    }
}
