//! The server's side of etcd's quota (`v3rpc/quota.go`, `etcdserver/quota.go`): the check before
//! proposing, and raising the NOSPACE alarm through Raft when a write went over the quota (before
//! proposing, or at apply time, when the applier asks). The rules themselves are `apply::quota`.

use std::sync::Arc;

use api::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmResponse, AlarmType, InternalRaftRequest,
};
use apply::Applied;
use rpctypes::ServerError;
use tokio::sync::{watch, Notify};

use super::EtcdServer;

impl EtcdServer {
    /// etcd's quota check before proposing a put or txn: whether the backend has room for a
    /// write of `cost` bytes.
    pub fn quota_has_room(&self, cost: u64) -> Result<bool, ServerError> {
        let size = self
            .backend
            .size()
            .map_err(|e| ServerError::Internal(e.to_string()))?;
        Ok(self.quota.available(size, cost))
    }

    /// Refuses a write that did not fit: raises the NOSPACE alarm (through Raft, waiting for it)
    /// and gives the error to answer with.
    pub async fn refuse_over_quota(&self) -> ServerError {
        if let Err(e) = self.raise_alarm(AlarmType::Nospace).await {
            tracing::warn!("failed to raise the NOSPACE alarm: {e}");
        }
        ServerError::NoSpace
    }

    /// Raises `alarm` for this member through Raft.
    pub async fn raise_alarm(&self, alarm: AlarmType) -> Result<AlarmResponse, ServerError> {
        self.alarm(AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.member_id,
            alarm: alarm as i32,
        })
        .await
    }

    /// Proposes an alarm request (GET included, as etcd does, so the answer is linearizable).
    pub async fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, ServerError> {
        match self
            .propose(InternalRaftRequest {
                alarm: Some(req),
                ..Default::default()
            })
            .await?
        {
            Applied::Alarm(resp) => Ok(resp),
            _ => Err(ServerError::Internal("unexpected apply result".into())),
        }
    }
}

/// Raises the NOSPACE alarm each time the applier asks for it (a write went over the quota at
/// apply time), until shutdown. Requests that arrive while one is in flight are coalesced.
pub async fn raise_nospace_when_asked(
    srv: Arc<EtcdServer>,
    asked: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = asked.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if srv.alarms.has(AlarmType::Nospace) {
            continue;
        }
        if let Err(e) = srv.raise_alarm(AlarmType::Nospace).await {
            tracing::warn!("failed to raise the NOSPACE alarm: {e}");
        }
    }
}
