//! What peers ask of this member, served on the peer URLs by the transport: is a member removed, the
//! member list for a joining member, and the requests followers forward to the leader.

use rpctypes::ServerError;

use super::EtcdServer;

#[tonic::async_trait]
impl rafthttp::PeerHandler for EtcdServer {
    fn is_removed(&self, id: u64) -> bool {
        self.cluster.is_removed(id)
    }

    fn members(&self) -> Vec<api::membershippb::Member> {
        self.cluster.members().iter().map(|m| m.to_pb()).collect()
    }

    async fn promote(&self, id: u64) -> Result<Vec<api::membershippb::Member>, ServerError> {
        let members = self.promote_member_as_leader(id).await?;
        Ok(members.iter().map(|m| m.to_pb()).collect())
    }

    async fn lease_renew(
        &self,
        id: i64,
    ) -> Result<api::etcdserverpb::LeaseKeepAliveResponse, ServerError> {
        let ttl = self.lease_renew_as_leader(id).await?;
        Ok(api::etcdserverpb::LeaseKeepAliveResponse {
            header: self.header(0),
            id,
            ttl,
        })
    }

    async fn lease_time_to_live(
        &self,
        req: api::etcdserverpb::LeaseTimeToLiveRequest,
    ) -> Result<api::etcdserverpb::LeaseTimeToLiveResponse, ServerError> {
        self.lease_time_to_live_as_leader(req).await
    }
}
