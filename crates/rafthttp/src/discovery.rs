//! How a member joining a running cluster learns it (`--initial-cluster-state existing`): it asks a
//! member listed in `--initial-cluster` for the cluster id and the members, on the `Members` call of
//! the peer service. The joining member has no transport yet, so each question dials afresh.

use std::time::Duration;

use api::hearthraftpb::{raft_client::RaftClient, MembersRequest, MembersResponse};
use tonic::transport::Endpoint;

/// The cluster as the member at `url` knows it. `timeout` bounds the dial and the call.
pub async fn members(url: &str, timeout: Duration) -> Result<MembersResponse, String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    RaftClient::new(channel)
        .members(MembersRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.message().to_string())
}
