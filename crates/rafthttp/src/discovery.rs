//! How a member joining a running cluster learns it (`--initial-cluster-state existing`): it asks a
//! member listed in `--initial-cluster` for the cluster id and the members, on the `Members` call of
//! the peer service. The joining member has no transport yet, so each question dials afresh.

use std::time::Duration;

use api::hearthraftpb::{raft_client::RaftClient, MembersRequest, MembersResponse};

/// The cluster as the member at `url` knows it. `timeout` bounds the dial and the call; `tls` dials
/// an `https` URL.
pub async fn members(
    url: &str,
    tls: Option<&transport::ClientTls>,
    timeout: Duration,
) -> Result<MembersResponse, String> {
    let (endpoint, connector) = transport::endpoint(url, tls).map_err(|e| e.to_string())?;
    let channel = endpoint
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect_with_connector(connector)
        .await
        .map_err(|e| super::error_chain(&e))?;
    RaftClient::new(channel)
        .members(MembersRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.message().to_string())
}
