//! Membership changes as etcd's server makes them (`AddMember`, `RemoveMember`, `UpdateMember`,
//! `PromoteMember`): first the checks that depend on this moment rather than on the log (etcd's strict
//! reconfiguration check: enough started members, connected peers; a learner caught up with the leader),
//! then the change goes through Raft (`configure`) and the caller gets the membership once it is applied.
//! The checks that depend only on the membership run again at apply time (`membership::validate`), on
//! every member alike.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::EtcdServer;
use membership::{Change, Member};
use raftnode::Command;
use raftnode::ProposalState;
use rpctypes::ServerError;

/// etcd's `HealthInterval`: a peer counts as connected once its stream has been up this long.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// etcd's `readyPercent`: a learner may be promoted once it has this share of the leader's log.
const READY_PERCENT: f64 = 0.9;

/// etcd's `types.NewURLs`: trimmed, `http(s)://host:port` without a path (or a `unix(s)://` address,
/// taken as it is), sorted.
pub fn parse_peer_urls(urls: &[String]) -> Result<Vec<String>, ServerError> {
    if urls.is_empty() {
        return Err(ServerError::MemberBadUrls);
    }
    let mut out = Vec::with_capacity(urls.len());
    for u in urls {
        let u = u.trim();
        let ok = match crate::urls::parse(u) {
            Ok(uri) => match uri.scheme_str() {
                Some("http" | "https") => {
                    crate::urls::has_port(&uri) && crate::urls::port(&uri).is_ok()
                }
                Some("unix" | "unixs") => true,
                _ => false,
            },
            // A unix address may be a path, which is not an authority.
            Err(_) => u.starts_with("unix://") || u.starts_with("unixs://"),
        };
        if !ok {
            return Err(ServerError::MemberBadUrls);
        }
        out.push(u.to_string());
    }
    out.sort();
    Ok(out)
}

impl EtcdServer {
    /// Adds a member (a learner if asked), as etcd's `AddMember`; returns it and the new membership.
    /// `peer_urls` come from [`parse_peer_urls`].
    pub async fn add_member(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<(Member, Vec<Member>), ServerError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let m = Member {
            id: crate::ids::added_member_id(&peer_urls, now),
            peer_urls,
            is_learner,
            ..Default::default()
        };
        if self.cfg.strict_reconfig_check {
            if !m.is_learner && !self.cluster.is_ready_to_add_voting_member() {
                tracing::warn!("rejecting member add request; not enough healthy members");
                return Err(ServerError::MemberNotEnoughStarted);
            }
            let voters: Vec<u64> = self.cluster.voting_members().iter().map(|m| m.id).collect();
            let since = Instant::now().checked_sub(HEALTH_INTERVAL);
            let connected = since.map_or(0, |t| self.transport.connected_since(&voters, t));
            if connected < voters.len() {
                tracing::warn!(
                    "rejecting member add request; local member has not been connected to all peers, \
                     reconfigure breaks active quorum"
                );
                return Err(ServerError::Unhealthy);
            }
        }
        let members = self.configure(Change::Add(m.clone())).await?;
        Ok((m, members))
    }

    /// Removes a member, as etcd's `RemoveMember`.
    pub async fn remove_member(&self, id: u64) -> Result<Vec<Member>, ServerError> {
        if self.cfg.strict_reconfig_check {
            self.may_remove_member(id)?;
        }
        self.configure(Change::Remove(id)).await
    }

    fn may_remove_member(&self, id: u64) -> Result<(), ServerError> {
        if self.cluster.member(id).is_some_and(|m| m.is_learner) {
            return Ok(());
        }
        if !self.cluster.is_ready_to_remove_voting_member(id) {
            tracing::warn!("rejecting member remove request; not enough healthy members");
            return Err(ServerError::MemberNotEnoughStarted);
        }
        // A member that is down is not part of the active quorum: removing it is safe.
        if id != self.member_id && self.transport.active_since(id).is_none() {
            return Ok(());
        }
        let voters: Vec<u64> = self.cluster.voting_members().iter().map(|m| m.id).collect();
        let since = Instant::now().checked_sub(HEALTH_INTERVAL);
        let active = since.map_or(0, |t| self.transport.connected_since(&voters, t));
        if active.saturating_sub(1) < 1 + voters.len().saturating_sub(1) / 2 {
            tracing::warn!(
                "rejecting member remove request; local member has not been connected to all peers, \
                 reconfigure breaks active quorum"
            );
            return Err(ServerError::Unhealthy);
        }
        Ok(())
    }

    /// Changes a member's peer URLs, as etcd's `UpdateMember`.
    pub async fn update_member(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<Vec<Member>, ServerError> {
        self.configure(Change::UpdatePeerUrls(id, peer_urls)).await
    }

    /// Promotes a learner, as etcd's `PromoteMember`: on the leader, which alone knows whether the learner
    /// has caught up; a follower forwards the request to the leader.
    pub async fn promote_member(&self, id: u64) -> Result<Vec<Member>, ServerError> {
        match self.promote_member_as_leader(id).await {
            Err(ServerError::NotLeader) => {}
            other => return other,
        }
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let Some(leader) = self.wait_leader(deadline).await else {
                return Err(ServerError::NoLeader);
            };
            for url in &leader.peer_urls {
                match self.promote_on(url, leader.id, id).await {
                    Ok(members) => return Ok(members),
                    Err(
                        e @ (ServerError::LearnerNotReady
                        | ServerError::MemberNotFound
                        | ServerError::MemberNotLearner),
                    ) => return Err(e),
                    Err(e) => tracing::debug!(url = %url, "forwarding member promote: {e}"),
                }
            }
            if Instant::now() >= deadline {
                return Err(ServerError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The leader's side of `promote_member`; `NotLeader` anywhere else.
    pub async fn promote_member_as_leader(&self, id: u64) -> Result<Vec<Member>, ServerError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Progress { id, reply })?;
        let Some((learner_match, leader_match)) = rx.await.map_err(|_| ServerError::Stopped)?
        else {
            return Err(ServerError::NotLeader);
        };
        if let Some(m) = learner_match {
            if (m as f64) < (leader_match as f64) * READY_PERCENT {
                return Err(ServerError::LearnerNotReady);
            }
        }
        if self.cfg.strict_reconfig_check && !self.cluster.is_ready_to_promote_member() {
            tracing::warn!("rejecting member promote request; not enough healthy members");
            return Err(ServerError::MemberNotEnoughStarted);
        }
        self.configure(Change::Promote(id)).await
    }

    /// The leader as a member with peer URLs, waiting for one until `deadline`.
    async fn wait_leader(&self, deadline: Instant) -> Option<Member> {
        loop {
            if let Some(m) = self
                .cluster
                .member(self.leader())
                .filter(|m| !m.peer_urls.is_empty())
            {
                return Some(m);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(self.cfg.election_timeout.min(Duration::from_millis(200))).await;
        }
    }

    async fn promote_on(
        &self,
        url: &str,
        leader: u64,
        id: u64,
    ) -> Result<Vec<Member>, ServerError> {
        let members = self
            .transport
            .forward_promote(leader, url, id, self.request_timeout)
            .await?;
        Ok(members.iter().map(Member::from_pb).collect())
    }

    /// Proposes a membership change through Raft and waits until it is applied (etcd's `configure`).
    async fn configure(&self, change: Change) -> Result<Vec<Member>, ServerError> {
        let id = self.next_id();
        let rx = self.conf_wait.register(id);
        let state = ProposalState::new();
        let start = Instant::now();
        if self
            .send(Command::ProposeMembership {
                id,
                payload: change.to_entry(id).into(),
                state: state.clone(),
            })
            .is_err()
        {
            self.conf_wait.cancel(id);
            return Err(ServerError::Stopped);
        }
        let result = match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => {
                self.conf_wait.cancel(id);
                Err(self.timeout_error(&state, start))
            }
        };
        if result.is_ok() {
            tracing::info!(change = ?change, "applied a configuration change through raft");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_are_checked_and_sorted_like_etcd() {
        let ok = parse_peer_urls(&[
            "http://127.0.0.2:2380".into(),
            " http://127.0.0.1:2380 ".into(),
        ])
        .unwrap();
        assert_eq!(ok, ["http://127.0.0.1:2380", "http://127.0.0.2:2380"]);
        assert!(parse_peer_urls(&["unix://sock".into()]).is_ok());
        assert!(parse_peer_urls(&["unix://dir/sock".into()]).is_ok());
        assert!(
            parse_peer_urls(&["http://h:".into()]).is_ok(),
            "etcd's SplitHostPort takes it"
        );
        for bad in [
            "foo",
            "ftp://127.0.0.1:2380",
            "http://127.0.0.1",
            "http://127.0.0.1:2380/path",
            "http://127.0.0.1:notaport",
            "http://127.0.0.1:2380?q",
            "http://127.0.0.1:2380#f",
            "http://[::1]",
        ] {
            assert_eq!(
                parse_peer_urls(&[bad.to_string()]),
                Err(ServerError::MemberBadUrls),
                "{bad}"
            );
        }
        assert_eq!(parse_peer_urls(&[]), Err(ServerError::MemberBadUrls));
    }
}
