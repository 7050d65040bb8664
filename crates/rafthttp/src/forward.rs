//! Requests a follower forwards to the leader over the peer URLs, as etcd's `leasehttp` does: lease
//! keep-alives and time-to-live queries, which only the leader's lessor can answer; and learner
//! promotions, which only the leader can check (it alone knows how far the learner has replicated).
//!
//! One client channel per peer is kept and reused (a keep-alive stream forwards a request every few
//! seconds per lease; dialling each time would cost a connection per request). tonic's channel
//! reconnects by itself; a channel whose URLs changed is replaced. Each call is bounded by the caller's
//! deadline; which errors are worth another try is the caller's decision (the server's `lease_requests`).
//!
//! The channel goes to the leader's first peer URL, dialed plaintext or TLS by its scheme. Tradeoff:
//! tonic balances over several endpoints only with its own connector, not with the TLS connector every
//! peer dial uses, so a leader reachable on a second peer URL only is not reached by forwarded requests
//! (members have a single peer URL in practice; etcd's `leasehttp` also tries the URLs in order).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use api::etcdserverpb::{LeaseKeepAliveRequest, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse};
use api::hearthraftpb::{raft_client::RaftClient, PromoteRequest};
use api::leasepb::LeaseInternalRequest;
use api::membershippb;
use rpctypes::ServerError;
use tonic::transport::Channel;

use super::Transport;

/// How long dialling the leader may take for a forwarded promotion.
const PROMOTE_DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Cached channels to peers: the URLs a channel was made for, and the channel.
#[derive(Default)]
pub(crate) struct Channels {
    by_peer: Mutex<HashMap<u64, (Vec<String>, Channel)>>,
}

impl Channels {
    fn get(&self, id: u64, urls: &[String], t: &Transport) -> Result<Channel, ServerError> {
        let mut map = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((u, c)) = map.get(&id) {
            if u.as_slice() == urls {
                return Ok(c.clone());
            }
        }
        // One lazily connected channel to the first URL: a custom connector (TLS) cannot be used
        // with tonic's balanced channels. Members have one peer URL in practice.
        let Some(url) = urls.first() else {
            return Err(ServerError::Internal(format!(
                "member {id:x} has no peer URL"
            )));
        };
        let (endpoint, connector) =
            super::endpoint(url, t.config()).map_err(ServerError::Internal)?;
        let c = endpoint.connect_with_connector_lazy(connector);
        map.insert(id, (urls.to_vec(), c.clone()));
        Ok(c)
    }

    pub(crate) fn forget(&self, id: u64) {
        self.by_peer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

impl Transport {
    fn forward_client(
        &self,
        leader: u64,
        urls: &[String],
    ) -> Result<RaftClient<Channel>, ServerError> {
        if super::blackholed() {
            return Err(ServerError::Internal(
                "peer traffic is blocked by the blackholePeerNetwork failpoint".into(),
            ));
        }
        Ok(RaftClient::new(self.forwarding.get(leader, urls, self)?))
    }

    fn request<T>(&self, body: T, leader: u64, timeout: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(body);
        req.set_timeout(timeout);
        super::set_headers(&mut req, self.cluster_id, self.local_id, leader);
        req
    }

    /// Renews lease `id` at `leader` (reached at `urls`); its TTL.
    pub async fn forward_lease_renew(
        &self,
        leader: u64,
        urls: &[String],
        id: i64,
        timeout: Duration,
    ) -> Result<i64, ServerError> {
        let mut c = self.forward_client(leader, urls)?;
        let req = self.request(LeaseKeepAliveRequest { id }, leader, timeout);
        match tokio::time::timeout(timeout, c.lease_renew(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner().ttl),
            Ok(Err(s)) => Err(ServerError::from_peer_status(&s)),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Asks `leader` (reached at `urls`) for a lease's time-to-live.
    pub async fn forward_lease_time_to_live(
        &self,
        leader: u64,
        urls: &[String],
        req: LeaseTimeToLiveRequest,
        timeout: Duration,
    ) -> Result<LeaseTimeToLiveResponse, ServerError> {
        let mut c = self.forward_client(leader, urls)?;
        let body = LeaseInternalRequest {
            lease_time_to_live_request: Some(req),
        };
        let req = self.request(body, leader, timeout);
        match tokio::time::timeout(timeout, c.lease_time_to_live(req)).await {
            Ok(Ok(r)) => r
                .into_inner()
                .lease_time_to_live_response
                .ok_or_else(|| ServerError::Internal("the leader sent an empty answer".into())),
            Ok(Err(s)) => Err(ServerError::from_peer_status(&s)),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Asks `leader`, at `url`, to promote learner `id` (`MemberPromote` on a follower); the
    /// membership after the promotion. Dials afresh: promotions are rare.
    pub async fn forward_promote(
        &self,
        leader: u64,
        url: &str,
        id: u64,
        timeout: Duration,
    ) -> Result<Vec<membershippb::Member>, ServerError> {
        let (endpoint, connector) =
            super::endpoint(url, self.config()).map_err(ServerError::Internal)?;
        let channel = endpoint
            .connect_timeout(PROMOTE_DIAL_TIMEOUT)
            .connect_with_connector(connector)
            .await
            .map_err(|e| ServerError::Internal(super::error_chain(&e)))?;
        let mut req = tonic::Request::new(PromoteRequest { member_id: id });
        req.set_timeout(timeout);
        super::set_headers(&mut req, self.cluster_id, self.local_id, leader);
        let resp = RaftClient::new(channel)
            .promote(req)
            .await
            .map_err(|s| ServerError::from_peer_status(&s))?;
        Ok(resp.into_inner().members)
    }
}
