//! etcd's `concurrency.Mutex`, as the v3lock service runs it.
//!
//! Lock(name, lease): in one txn, if `<name>/<lease hex>` does not exist it is put (empty value,
//! with the lease), else read; the oldest key under `<name>/` is read in the same txn. The
//! caller's create revision is its place in the queue. If no older key exists the lock is held
//! at once, with the txn's header. Otherwise every key under the prefix created before ours must
//! be deleted first (waited for newest first, etcd's `waitDeletes`).
//!
//! After the wait, our own key is checked in a txn (`create_revision == ours`, then read it): a
//! lease that expired while we waited took our key with it, and the lock must not be granted on
//! it (etcd #11456, found by Jepsen; etcd 3.4's mutex still grants it). That fails with etcd's
//! `mutex: session is expired`. The txn's header is the response's.
//!
//! If the wait or the check fails, or the caller goes away meanwhile, our key is deleted (etcd
//! unlocks in those cases), so a cancelled waiter does not stay in the queue until its lease
//! expires.

use api::etcdserverpb::{ResponseHeader, TxnRequest};
use tonic::Status;

use super::{
    created_at, first_create, get, header_rev, op_put, op_range, prefix, range_kvs, session_key,
    Client, OnCancel,
};
use rpctypes::ServerError;

/// A granted lock: its key and the header to answer with.
#[derive(Debug, Clone, PartialEq)]
pub struct Locked {
    pub key: Vec<u8>,
    pub header: Option<ResponseHeader>,
}

/// Acquires the lock `name` for `lease` (0: a new lease of the default session TTL).
pub async fn lock(c: &Client, name: &[u8], lease: i64) -> Result<Locked, Status> {
    let lease = c.session(lease).await?;
    let pfx = prefix(name);
    let my_key = session_key(&pfx, lease);
    let resp = c
        .txn(TxnRequest {
            compare: vec![created_at(&my_key, 0)],
            success: vec![op_put(&my_key, b"", lease), op_range(first_create(&pfx))],
            failure: vec![op_range(get(&my_key)), op_range(first_create(&pfx))],
        })
        .await?;
    let my_rev = if resp.succeeded {
        header_rev(&resp.header)
    } else {
        range_kvs(&resp, 0)
            .first()
            .map(|kv| kv.create_revision)
            .ok_or_else(|| Status::from(ServerError::Internal("lock key vanished".into())))?
    };
    let owner = range_kvs(&resp, 1).first();
    if owner.is_none_or(|o| o.create_revision == my_rev) {
        return Ok(Locked {
            key: my_key,
            header: resp.header,
        });
    }

    let unlock = {
        let (c, k) = (c.clone(), my_key.clone());
        OnCancel::new(move || async move {
            let _ = c.delete(k).await;
        })
    };
    let checked = match c.wait_deletes(&pfx, my_rev - 1).await {
        Ok(_) => {
            c.txn(TxnRequest {
                compare: vec![created_at(&my_key, my_rev)],
                success: vec![op_range(get(&my_key))],
                failure: vec![],
            })
            .await
        }
        Err(e) => Err(e),
    };
    unlock.disarm();
    let check = match checked {
        Ok(r) => r,
        Err(e) => {
            let _ = c.delete(my_key).await;
            return Err(e);
        }
    };
    if !check.succeeded {
        return Err(ServerError::SessionExpired.into());
    }
    Ok(Locked {
        key: my_key,
        header: check.header,
    })
}

/// Releases a lock by deleting its key; returns the delete's header.
pub async fn unlock(c: &Client, key: Vec<u8>) -> Result<Option<ResponseHeader>, Status> {
    Ok(c.delete(key).await?.header)
}
