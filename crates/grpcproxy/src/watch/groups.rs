//! Client watchers are grouped by the credentials their stream carries, and only watchers of one
//! group share upstream watchers, so coalescing never hands one user's events to another.
//!
//! The cluster checks permissions when an upstream watcher is created, with the credentials of the
//! stream it is created on (etcd's `isWatchPermitted`). So each group (the clients without
//! credentials, and each distinct `token` / `authorization` value) has its own upstream Watch
//! stream carrying those credentials, its own ranges and its own upstream watchers: the events
//! an upstream watcher carries were checked against the credentials of every client it feeds.
//!
//! Grouping alone does not check a client watcher that joins an upstream watcher already open:
//! the check was made for the group when that upstream watcher was created, and what the
//! credentials may read can change since (auth enabled while the tokenless group watches, a
//! permission revoked). That is why the stream also asks the cluster about every new watcher
//! first (see `watch`); grouping keeps a watcher from ever being fed from an upstream watcher
//! checked for someone else.
//!
//! # Tradeoffs
//!
//! * etcd's proxy checks each new watcher the same way, then lets it join any upstream watcher
//!   of the range, whoever opened it. Grouping costs coalescing under auth: tokens are per
//!   session (a simple token per `Authenticate`, a JWT per login), so two etcdctl processes of
//!   one user do not share upstream watchers.
//! * Without auth (no credentials), every client is in one group and coalescing is complete.
//! * A group with credentials lives while a client stream of it is open; its upstream stream is
//!   closed with the last one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tonic::metadata::MetadataMap;

use crate::metrics::Metrics;
use crate::upstream::{auth_metadata, credentials_key, Upstream};
use crate::watch::mux::WatchMux;
use crate::watch::ranges::WatchRanges;

pub struct WatchGroups {
    up: Arc<Upstream>,
    metrics: Arc<Metrics>,
    anonymous: Arc<WatchRanges>,
    by_credentials: Mutex<HashMap<Vec<u8>, Weak<WatchRanges>>>,
}

impl WatchGroups {
    /// `mux` is the proxy's stream without credentials (shared with the cache's watch).
    pub fn new(up: Arc<Upstream>, metrics: Arc<Metrics>, mux: Arc<WatchMux>) -> WatchGroups {
        let anonymous = Arc::new(WatchRanges::new(mux, metrics.clone(), false));
        WatchGroups {
            up,
            metrics,
            anonymous,
            by_credentials: Mutex::new(HashMap::new()),
        }
    }

    /// The group of a client stream opened with metadata `md`.
    pub fn group(&self, md: &MetadataMap) -> Arc<WatchRanges> {
        let Some(key) = credentials_key(md) else {
            return self.anonymous.clone();
        };
        let mut map = self
            .by_credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.retain(|_, g| g.strong_count() > 0);
        if let Some(g) = map.get(&key).and_then(Weak::upgrade) {
            return g;
        }
        let mux = WatchMux::spawn_as(self.up.clone(), self.metrics.clone(), auth_metadata(md));
        let g = Arc::new(WatchRanges::new(mux, self.metrics.clone(), true));
        map.insert(key, Arc::downgrade(&g));
        g
    }

    /// Groups with credentials currently open.
    pub fn len(&self) -> usize {
        let map = self
            .by_credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.values().filter(|g| g.strong_count() > 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
