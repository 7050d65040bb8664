//! Client watchers are grouped by the credentials their stream carries, and only watchers of one
//! group share upstream watchers, so coalescing never hands one user's events to another.
//!
//! The cluster checks permissions when an upstream watcher is created, with the credentials of the
//! stream it is created on (etcd's `isWatchPermitted`). If a watcher could join an upstream
//! watcher opened for someone else, a user without read permission on a key would receive its
//! events. So each group (the clients without credentials, and each distinct `token` /
//! `authorization` value) has its own upstream Watch stream carrying those credentials, its own
//! ranges and its own upstream watchers; the cluster refuses a watcher its user may not read
//! exactly as it would refuse it directly, and that answer reaches the client.
//!
//! # Tradeoffs
//!
//! * etcd's proxy instead checks each new watcher with a count-only Range under the client's
//!   token, then lets it join any upstream watcher of the range. Grouping costs coalescing under
//!   auth: tokens are per session (a simple token per `Authenticate`, a JWT per login), so two
//!   etcdctl processes of one user do not share upstream watchers. It needs no extra request per
//!   watcher, and it stays right when a token is refused or a permission is revoked (the group's
//!   upstream watchers were checked with that very token).
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
