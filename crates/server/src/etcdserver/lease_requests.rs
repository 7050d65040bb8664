//! The member's lease requests, as etcd's `EtcdServer` serves them (`v3_server.go`):
//!
//! * Grant and Revoke go through Raft (`InternalRaftRequest.lease_grant` / `lease_revoke`) and
//!   are answered from the apply result. Grant with ID 0 gets a server-chosen ID: the member's
//!   request-id generator with the sign bit cleared, as etcd does, so IDs are positive and
//!   unique across members and restarts.
//! * Renew (keep-alive) and TimeToLive are answered by the leader's lessor, which alone holds
//!   deadlines. On the leader they are answered here. Elsewhere they are forwarded to the leader
//!   over the peer URLs, as etcd's `leasehttp` does ([`EtcdServer::forward_lease_renew`],
//!   [`EtcdServer::forward_lease_time_to_live`]; the `LeaseRenew` and `LeaseTimeToLive` calls of
//!   `hearthraftpb`); a forward that fails for a reason other than the lease (the leader changed,
//!   the connection broke) is tried again, against the leader of the moment, every 50 ms until the
//!   request timeout, then the request answers `etcdserver: request timed out`. With no leader they
//!   wait for one up to the request timeout and then answer `etcdserver: no leader` (etcd's
//!   `waitLeader`).
//! * Leases (the listing) is answered from the local lessor, as etcd does.
//!
//! Before the leader renews a lease or answers its time to live, it confirms that it still leads
//! and has applied what it committed (etcd 3.5's `ensureLeadership` and `waitAppliedIndex`): a
//! read-index round, then the apply of that index. A leader cut off from the others, or stuck on
//! its disk, still believes it leads while another member has been elected and expires the lease;
//! answering the keep-alive would let the holder of a lock go on while a second client takes it.
//! The round also lets the leader see a lease granted or revoked through another member just
//! before. It costs a keep-alive one heartbeat round, as in etcd. The expiry driver confirms the
//! same way before it proposes revokes.
//!
//! A leader whose lessor is not yet promoted (it has not applied an entry of its term) makes a
//! keep-alive or time-to-live wait for the promotion (etcd's keep-alive retries against itself
//! until then; its time-to-live first waits for the leader to apply what it committed), and
//! answers `etcdserver: request timed out` if it does not come within the request timeout.

use std::time::Duration;

use api::etcdserverpb::{
    InternalRaftRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use auth::AuthInfo;
use lease::LeaseError;
use tokio::time::Instant;

use super::EtcdServer;
use apply::applier::Applied;
use rpctypes::ServerError;

/// How often a request waiting for a leader or a promotion looks again (etcd throttles its
/// forwarding retries by the same 50 ms).
const RETRY: Duration = Duration::from_millis(50);

/// Who answers a leader-only lease request.
enum Answerer {
    Me,
    Other(u64),
}

impl EtcdServer {
    /// etcd's request timeout: 5 s plus two election timeouts.
    fn lease_request_timeout(&self) -> Duration {
        Duration::from_secs(5) + self.cfg.election_timeout * 2
    }

    /// Waits until some member leads; `NoLeader` if none does before `deadline`.
    async fn lease_answerer(&self, deadline: Instant) -> Result<Answerer, ServerError> {
        loop {
            match self.leader() {
                0 => {}
                l if l == self.member_id => return Ok(Answerer::Me),
                l => return Ok(Answerer::Other(l)),
            }
            if Instant::now() + RETRY > deadline {
                return Err(ServerError::NoLeader);
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    pub async fn lease_grant(
        &self,
        ai: Option<&AuthInfo>,
        mut req: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, ServerError> {
        while req.id == lease::NO_LEASE {
            req.id = (self.next_id() & (i64::MAX as u64)) as i64;
        }
        let r = self
            .propose_as(
                ai,
                InternalRaftRequest {
                    lease_grant: Some(req),
                    ..Default::default()
                },
            )
            .await?;
        match r {
            Applied::LeaseGrant(mut resp) => {
                self.fill(&mut resp.header);
                Ok(resp)
            }
            _ => Err(ServerError::Internal("unexpected apply result".into())),
        }
    }

    /// Revoke on behalf of `ai`: the applier checks write access to the lease's keys.
    pub async fn lease_revoke(
        &self,
        ai: Option<&AuthInfo>,
        req: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, ServerError> {
        let r = self
            .propose_as(
                ai,
                InternalRaftRequest {
                    lease_revoke: Some(req),
                    ..Default::default()
                },
            )
            .await?;
        match r {
            Applied::LeaseRevoke(mut resp) => {
                self.fill(&mut resp.header);
                Ok(resp)
            }
            _ => Err(ServerError::Internal("unexpected apply result".into())),
        }
    }

    /// Who answers: this member once it leads with a promoted lessor (waiting for the
    /// promotion, which follows the first entry of its term), another member that leads, or
    /// nobody before `deadline`.
    async fn lease_primary(&self, deadline: Instant) -> Result<Answerer, ServerError> {
        let mut promoted = self.leases.subscribe();
        loop {
            match self.lease_answerer(deadline).await? {
                Answerer::Me if self.leases.is_primary() => return Ok(Answerer::Me),
                Answerer::Me => {}
                other => return Ok(other),
            }
            if Instant::now() >= deadline {
                return Err(ServerError::Timeout);
            }
            let wake = (Instant::now() + RETRY).min(deadline);
            let _ = tokio::time::timeout_at(wake, promoted.changed()).await;
        }
    }

    /// Whether this member still leads, confirmed by a quorum, with everything it committed
    /// applied (see the module doc). etcd answers a keep-alive that fails it with its lessor's
    /// `not a primary lessor`.
    pub(crate) async fn confirm_leadership(&self) -> bool {
        self.linearizable_read().await.is_ok() && self.leader() == self.member_id
    }

    /// Keep-alive: the lease's TTL after renewing it at the leader. `LeaseNotFound` if it does
    /// not exist or is already past its deadline (its revoke is on the way).
    pub async fn lease_renew(&self, id: i64) -> Result<i64, ServerError> {
        let deadline = Instant::now() + self.lease_request_timeout();
        loop {
            match self.lease_primary(deadline).await? {
                Answerer::Other(leader) => {
                    match self.forward_lease_renew(leader, id, deadline).await {
                        Err(e) if retry_forward(&e) => {
                            forward_pause(deadline, e).await?;
                        }
                        r => return r,
                    }
                }
                Answerer::Me => {
                    if !self.confirm_leadership().await {
                        return Err(ServerError::LeaseNotPrimary);
                    }
                    match self.leases.renew(id) {
                        // Demoted in between: ask again.
                        Err(LeaseError::NotPrimary) => {}
                        r => return r.map_err(ServerError::from),
                    }
                }
            }
        }
    }

    /// A keep-alive forwarded by a follower: renewed here if this member leads (once its lessor is
    /// promoted), else `NotLeader` (the follower asks again).
    pub(crate) async fn lease_renew_as_leader(&self, id: i64) -> Result<i64, ServerError> {
        let deadline = Instant::now() + self.lease_request_timeout();
        loop {
            match self.lease_primary(deadline).await? {
                Answerer::Other(_) => return Err(ServerError::NotLeader),
                Answerer::Me => {
                    // The follower asks the leader of the moment again.
                    if !self.confirm_leadership().await {
                        return Err(ServerError::NotLeader);
                    }
                    match self.leases.renew(id) {
                        Err(LeaseError::NotPrimary) => {}
                        r => return r.map_err(ServerError::from),
                    }
                }
            }
        }
    }

    /// TimeToLive as the leader's lessor knows it; `LeaseNotFound` for an unknown lease. Like
    /// etcd 3.5, which first waits for the leader to apply what it has committed, a new leader
    /// answers once its lessor is promoted, so the remaining TTL is always a real one.
    pub async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, ServerError> {
        let deadline = Instant::now() + self.lease_request_timeout();
        loop {
            match self.lease_primary(deadline).await? {
                Answerer::Other(leader) => {
                    match self.forward_lease_time_to_live(leader, req, deadline).await {
                        Err(e) if retry_forward(&e) => {
                            forward_pause(deadline, e).await?;
                        }
                        r => return r,
                    }
                }
                Answerer::Me => {
                    if !self.confirm_leadership().await {
                        return Err(ServerError::LeaseNotPrimary);
                    }
                    return self.local_time_to_live(&req);
                }
            }
        }
    }

    /// A time-to-live query forwarded by a follower: answered here if this member leads, else
    /// `NotLeader` (the follower asks again).
    pub(crate) async fn lease_time_to_live_as_leader(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, ServerError> {
        let deadline = Instant::now() + self.lease_request_timeout();
        match self.lease_primary(deadline).await? {
            Answerer::Other(_) => Err(ServerError::NotLeader),
            Answerer::Me if !self.confirm_leadership().await => Err(ServerError::NotLeader),
            Answerer::Me => self.local_time_to_live(&req),
        }
    }

    fn local_time_to_live(
        &self,
        req: &LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, ServerError> {
        let t = self
            .leases
            .time_to_live(req.id)
            .ok_or(ServerError::LeaseNotFound)?;
        Ok(LeaseTimeToLiveResponse {
            header: self.header(0),
            id: req.id,
            ttl: t.remaining_ttl,
            granted_ttl: t.granted_ttl,
            keys: if req.keys { t.keys } else { Vec::new() },
        })
    }

    /// The leader's peer URLs, if it is a member with some.
    fn leader_urls(&self, leader: u64) -> Result<Vec<String>, ServerError> {
        match self.cluster.member(leader) {
            Some(m) if !m.peer_urls.is_empty() => Ok(m.peer_urls),
            _ => Err(ServerError::NoLeader),
        }
    }

    /// A follower's keep-alive, sent to `leader` (etcd's `leasehttp.RenewHTTP` to the leader's
    /// peer URL).
    pub async fn forward_lease_renew(
        &self,
        leader: u64,
        id: i64,
        deadline: Instant,
    ) -> Result<i64, ServerError> {
        let urls = self.leader_urls(leader)?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.transport
            .forward_lease_renew(leader, &urls, id, left)
            .await
    }

    /// A follower's time-to-live query, sent to `leader` (etcd's `leasehttp.TimeToLiveHTTP`).
    pub async fn forward_lease_time_to_live(
        &self,
        leader: u64,
        req: LeaseTimeToLiveRequest,
        deadline: Instant,
    ) -> Result<LeaseTimeToLiveResponse, ServerError> {
        let urls = self.leader_urls(leader)?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.transport
            .forward_lease_time_to_live(leader, &urls, req, left)
            .await
    }
}

/// Whether a forward may succeed if tried again: everything but an answer about the lease itself
/// (etcd's forwarding loop stops only at success or `lease not found`).
fn retry_forward(e: &ServerError) -> bool {
    !matches!(
        e,
        ServerError::LeaseNotFound | ServerError::LeaseTtlTooLarge | ServerError::LeaseExist
    )
}

/// Waits before the next forward (etcd throttles its retries by 50 ms); at the deadline, the
/// request times out.
async fn forward_pause(deadline: Instant, e: ServerError) -> Result<(), ServerError> {
    tracing::debug!("forwarding a lease request to the leader: {e}");
    if Instant::now() + RETRY >= deadline {
        return Err(ServerError::Timeout);
    }
    tokio::time::sleep(RETRY).await;
    Ok(())
}
