//! A peer's KV hash, for the corruption checks (etcd's `/members/hashkv`, which etcd serves on the
//! peer port and asks over the peer transport): one call of `hearthraftpb.Raft/HashKV` to one URL of
//! one member.
//!
//! Each call dials afresh: the checks run once a period (and once at start, before the peer streams
//! are up), and a fresh connection fails at once on a member that is down instead of waiting for a
//! cached channel to reconnect.

use std::time::Duration;

use api::etcdserverpb::{HashKvRequest, HashKvResponse};
use api::hearthraftpb::raft_client::RaftClient;
use rpctypes::ServerError;

use super::Transport;

impl Transport {
    /// Member `to`'s hash at `rev`, asked at `url`, within `timeout`. A peer of another cluster
    /// is [`ServerError::ClusterIdMismatch`]; one that has not reached `rev` or compacted past it,
    /// [`ServerError::FutureRev`] / [`ServerError::Compacted`].
    pub async fn peer_hash_kv(
        &self,
        to: u64,
        url: &str,
        rev: i64,
        timeout: Duration,
    ) -> Result<HashKvResponse, ServerError> {
        if super::blackholed() {
            return Err(ServerError::Internal(
                "peer traffic is blocked by the blackholePeerNetwork failpoint".into(),
            ));
        }
        let call = async {
            let channel = super::connect(url, &self.cfg)
                .await
                .map_err(ServerError::Internal)?;
            let mut req = tonic::Request::new(HashKvRequest { revision: rev });
            req.set_timeout(timeout);
            super::set_headers(&mut req, self.cluster_id, self.local_id, to);
            RaftClient::new(channel)
                .hash_kv(req)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| from_status(&s))
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or(Err(ServerError::Timeout))
    }
}

fn from_status(s: &tonic::Status) -> ServerError {
    if s.code() == tonic::Code::FailedPrecondition && s.message() == super::CLUSTER_MISMATCH_TEXT {
        return ServerError::ClusterIdMismatch;
    }
    ServerError::from_peer_status(s)
}
