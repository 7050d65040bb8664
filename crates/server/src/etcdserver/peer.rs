//! What peers ask of this member, served on the peer URLs by the transport: is a member removed, the
//! member list for a joining member, the requests followers forward to the leader, and its KV hash
//! for a peer's corruption check.

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

    async fn hash_kv(&self, rev: i64) -> Result<api::etcdserverpb::HashKvResponse, ServerError> {
        let (h, current) = self.hash_by_rev(rev).await?;
        Ok(api::etcdserverpb::HashKvResponse {
            header: self.header(current),
            hash: h.hash,
            compact_revision: h.compact_revision,
        })
    }
}
