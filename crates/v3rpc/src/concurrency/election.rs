//! etcd's `concurrency.Election`, as the v3election service runs it.
//!
//! * Campaign(name, value, lease): in one txn, `<name>/<lease hex>` is put with the value if it
//!   does not exist, else read. Our create revision is our place; if the key existed with
//!   another value, that value is proclaimed first. Then every older key under `<name>/` must be
//!   deleted (etcd's `waitDeletes`); the answer carries the *first* txn's header and the leader
//!   key (name, key, create revision, lease). If the caller goes away while waiting, the
//!   candidacy is resigned.
//! * Proclaim(leader, value): puts the value on the leader key if its create revision is still the
//!   leader's (else `election: not leader`).
//! * Resign(leader): deletes the leader key if its create revision is still the leader's (a
//!   stale leader key is not an error).
//! * Leader(name): the oldest key under `<name>/` (else `election: no leader`).
//! * Observe(name): the current leader's key-value, then every new value of it; when it is
//!   deleted, the next leader's; with no leader, the first key put under `<name>/`.
//!
//! As in etcd, Campaign, Proclaim and Resign open a session, so a lease of 0 grants a new lease of
//! the default session TTL (and Proclaim and Resign then use that lease).

use api::etcdserverpb::{ResponseHeader, TxnRequest};
use api::mvccpb::{event::EventType, KeyValue};
use api::v3electionpb::{LeaderKey, LeaderResponse};
use tokio::sync::mpsc;
use tonic::Status;

use super::{
    created_at, first_create, get, header_rev, op_delete, op_put, op_range, prefix, prefix_end,
    range_kvs, session_key, watch_end, Client, KeyWatch, OnCancel,
};
use rpctypes::ServerError;

/// A successful campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct Elected {
    pub header: Option<ResponseHeader>,
    pub leader: LeaderKey,
}

pub async fn campaign(
    c: &Client,
    name: &[u8],
    value: &[u8],
    lease: i64,
) -> Result<Elected, Status> {
    let lease = c.session(lease).await?;
    let pfx = prefix(name);
    let key = session_key(&pfx, lease);
    let resp = c
        .txn(TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![op_put(&key, value, lease)],
            failure: vec![op_range(get(&key))],
        })
        .await?;
    let mut leader = LeaderKey {
        name: name.to_vec(),
        key: key.clone(),
        rev: header_rev(&resp.header),
        lease,
    };
    if !resp.succeeded {
        let kv = range_kvs(&resp, 0)
            .first()
            .ok_or_else(|| Status::from(ServerError::Internal("campaign key vanished".into())))?;
        leader.rev = kv.create_revision;
        if kv.value != value {
            if let Err(e) = proclaim(c, &leader, value).await {
                let _ = resign(c, &leader).await;
                return Err(e);
            }
        }
    }

    let give_up = {
        let (c, l) = (c.clone(), leader.clone());
        OnCancel::new(move || async move {
            let _ = resign(&c, &l).await;
        })
    };
    let waited = c.wait_deletes(&pfx, leader.rev - 1).await;
    give_up.disarm();
    waited?;
    Ok(Elected {
        header: resp.header,
        leader,
    })
}

/// Puts `value` on the leader key while it is still the leader's.
pub async fn proclaim(
    c: &Client,
    leader: &LeaderKey,
    value: &[u8],
) -> Result<Option<ResponseHeader>, Status> {
    let resp = c
        .txn(TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![op_put(&leader.key, value, leader.lease)],
            failure: vec![],
        })
        .await?;
    if !resp.succeeded {
        return Err(ServerError::ElectionNotLeader.into());
    }
    Ok(resp.header)
}

/// Deletes the leader key while it is still the leader's.
pub async fn resign(c: &Client, leader: &LeaderKey) -> Result<Option<ResponseHeader>, Status> {
    let resp = c
        .txn(TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![op_delete(&leader.key)],
            failure: vec![],
        })
        .await?;
    Ok(resp.header)
}

/// The current leader's key-value.
pub async fn leader(c: &Client, name: &[u8]) -> Result<LeaderResponse, Status> {
    let resp = c.range(first_create(&prefix(name))).await?;
    let kv = resp
        .kvs
        .into_iter()
        .next()
        .ok_or_else(|| Status::from(ServerError::ElectionNoLeader))?;
    Ok(LeaderResponse {
        header: resp.header,
        kv: Some(kv),
    })
}

/// etcd's `Election.observe`: sends the leader's key-value and each change to it into `out`
/// until `out` is closed or a read fails (then the stream just ends, as etcd's does).
pub async fn observe(c: &Client, name: &[u8], out: mpsc::Sender<Result<LeaderResponse, Status>>) {
    let pfx = prefix(name);
    tokio::select! {
        _ = follow(c, &pfx, &out) => {}
        _ = out.closed() => {}
    }
}

/// Returns only when a read fails or `out` is closed.
async fn follow(
    c: &Client,
    pfx: &[u8],
    out: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Option<()> {
    loop {
        let resp = c.range(first_create(pfx)).await.ok()?;
        let rev = header_rev(&resp.header);
        let (mut header, kv) = match resp.kvs.into_iter().next() {
            Some(kv) => (resp.header.unwrap_or_default(), kv),
            None => first_put(c, pfx, rev).await?,
        };
        out.send(Ok(LeaderResponse {
            header: Some(header),
            kv: Some(kv.clone()),
        }))
        .await
        .ok()?;

        // Every new value of this leader's key, until it is deleted.
        let mut w = KeyWatch::new(c, kv.key, None, header.revision + 1, vec![]).ok()?;
        'changes: loop {
            let wr = w.next().await.ok()?;
            header = c.header(wr.revision).unwrap_or_default();
            for ev in &wr.events {
                if ev.r#type == EventType::Delete as i32 {
                    break 'changes;
                }
                out.send(Ok(LeaderResponse {
                    header: Some(header),
                    kv: ev.kv.clone(),
                }))
                .await
                .ok()?;
            }
        }
    }
}

/// With no leader at `rev`: waits for the first key put under `pfx`. The header's revision is
/// that put's (etcd's).
async fn first_put(c: &Client, pfx: &[u8], rev: i64) -> Option<(ResponseHeader, KeyValue)> {
    let end = watch_end(prefix_end(pfx));
    let mut w = KeyWatch::new(c, pfx.to_vec(), end, rev + 1, vec![]).ok()?;
    loop {
        let wr = w.next().await.ok()?;
        let put = wr
            .events
            .iter()
            .find(|e| e.r#type == EventType::Put as i32)
            .and_then(|e| e.kv.clone());
        if let Some(kv) = put {
            let mut header = c.header(wr.revision).unwrap_or_default();
            header.revision = kv.mod_revision;
            return Some((header, kv));
        }
    }
}
