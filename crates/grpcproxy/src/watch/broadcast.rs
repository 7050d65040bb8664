//! The client watchers of one key range and the upstream watchers ("feeds") that serve them: a
//! state machine with no I/O. It is told what the cluster sent (`on_response`, `on_progress_all`)
//! and what clients asked (`add`, `remove`, `resync`), pushes responses into the clients' queues
//! (`ClientSink`, never waiting), and tells the upstream side which watchers to open and close
//! (`Commands`). See the module doc of `watch` for the design; the invariants it keeps:
//!
//! * A feed's `through` is a revision up to which the cluster has sent every event of the range
//!   on that feed: `start - 1` once created (or the created revision for a watch from "now"), then
//!   the revision of each event and of each progress notification received.
//! * A client watcher's `next_rev` is the first revision it has not been sent. Events below it
//!   are dropped (no duplicates); a watcher is only ever fed by a feed whose `through` is at least
//!   `next_rev - 1` when it joins, or buffers the shared feed's responses until its own feed has
//!   reached where the buffer starts (no gaps).
//! * Everything is pushed under the range's lock, so a client's responses leave in the order
//!   the state machine produced them: created before events, events in revision order.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use api::etcdserverpb::{
    watch_create_request::FilterType, ResponseHeader, WatchCreateRequest, WatchResponse,
};
use api::mvccpb::{event::EventType, Event};
use prost::Message as _;

use crate::metrics::Metrics;

pub type FeedId = i64;
pub type SubId = u64;

/// Responses one client watcher may hold in its merge buffer before it gives the buffer up.
pub const MAX_BUFFERED_BYTES: usize = 4 << 20;

/// A client stream's queue of responses.
pub trait ClientSink: Send + Sync {
    /// Queues all of `parts` (the fragments of one response) or none of them; false when the
    /// queue is full.
    fn try_push(&self, parts: Vec<WatchResponse>) -> bool;
    /// Queues a control response (created, canceled) whatever the queue holds.
    fn push(&self, r: WatchResponse);
}

/// What the state machine asks of the upstream side. Calls never wait.
pub trait Commands {
    fn new_id(&self) -> FeedId;
    fn create(&self, id: FeedId, req: WatchCreateRequest);
    fn cancel(&self, id: FeedId);
}

/// What a client asked for when creating its watcher.
#[derive(Clone)]
pub struct SubSpec {
    /// The id the client knows the watcher by.
    pub watch_id: i64,
    /// First revision wanted; 0 is "after the current revision".
    pub start: i64,
    pub prev_kv: bool,
    pub noput: bool,
    pub nodelete: bool,
    pub progress: bool,
    pub fragment: bool,
    /// Namespace prefix length to strip from keys on the way out.
    pub strip: usize,
    /// Fragment size when `fragment` is set.
    pub fragment_bytes: usize,
    pub sink: Arc<dyn ClientSink>,
}

impl SubSpec {
    pub fn from_request(
        c: &WatchCreateRequest,
        watch_id: i64,
        strip: usize,
        fragment_bytes: usize,
        sink: Arc<dyn ClientSink>,
    ) -> SubSpec {
        let has = |f: FilterType| c.filters.contains(&(f as i32));
        SubSpec {
            watch_id,
            start: c.start_revision.max(0),
            prev_kv: c.prev_kv,
            noput: has(FilterType::Noput),
            nodelete: has(FilterType::Nodelete),
            progress: c.progress_notify,
            fragment: c.fragment,
            strip,
            fragment_bytes,
            sink,
        }
    }
}

enum SubState {
    /// Fed by this feed (the shared one, or its own until it merges).
    Live(FeedId),
    /// Fed by its own feed from an older revision; `buffer` holds the shared feed's responses
    /// from `Buffer::from` on, to be delivered once its own feed has reached `from`.
    CatchUp {
        feed: FeedId,
        buffer: Option<Buffer>,
    },
    /// Dropped from every feed because its client's queue was full; resumes from `next_rev`
    /// when the queue has drained (`resync`).
    Lagging,
}

struct Buffer {
    from: i64,
    responses: Vec<WatchResponse>,
    bytes: usize,
}

struct Sub {
    spec: SubSpec,
    next_rev: i64,
    created: bool,
    state: SubState,
}

struct Feed {
    start: i64,
    prev_kv: bool,
    through: Option<i64>,
    shared: bool,
    /// Watchers fed by this feed.
    subs: BTreeSet<SubId>,
    /// Watchers catching up elsewhere that buffer this (shared) feed's responses.
    buffering: BTreeSet<SubId>,
}

/// The state of one key range.
pub struct RangeState {
    key: Vec<u8>,
    end: Vec<u8>,
    shared: Option<FeedId>,
    feeds: HashMap<FeedId, Feed>,
    subs: HashMap<SubId, Sub>,
    /// The last header the cluster sent, for the responses the proxy makes itself.
    header: ResponseHeader,
    reported_coalescing: i64,
    reported_feeds: i64,
}

impl RangeState {
    pub fn new(key: Vec<u8>, end: Vec<u8>, header: ResponseHeader) -> RangeState {
        RangeState {
            key,
            end,
            shared: None,
            feeds: HashMap::new(),
            subs: HashMap::new(),
            header,
            reported_coalescing: 0,
            reported_feeds: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty() && self.feeds.is_empty()
    }

    /// Number of upstream watchers this range holds.
    pub fn feeds(&self) -> usize {
        self.feeds.len()
    }

    fn header_at(&self, rev: i64) -> ResponseHeader {
        ResponseHeader {
            revision: rev,
            ..self.header
        }
    }

    fn create_request(&self, start: i64, prev_kv: bool) -> WatchCreateRequest {
        WatchCreateRequest {
            key: self.key.clone(),
            range_end: self.end.clone(),
            start_revision: start,
            prev_kv,
            progress_notify: true,
            ..Default::default()
        }
    }

    fn new_feed(&mut self, start: i64, prev_kv: bool, shared: bool, cmds: &dyn Commands) -> FeedId {
        let id = cmds.new_id();
        self.feeds.insert(
            id,
            Feed {
                start,
                prev_kv,
                through: None,
                shared,
                subs: BTreeSet::new(),
                buffering: BTreeSet::new(),
            },
        );
        if shared {
            self.shared = Some(id);
        }
        cmds.create(id, self.create_request(start, prev_kv));
        id
    }

    fn drop_feed_if_unused(&mut self, id: FeedId, cmds: &dyn Commands) {
        let unused = self
            .feeds
            .get(&id)
            .is_some_and(|f| f.subs.is_empty() && f.buffering.is_empty());
        if unused {
            self.feeds.remove(&id);
            if self.shared == Some(id) {
                self.shared = None;
            }
            cmds.cancel(id);
        }
    }

    /// Makes the feed carry `prev_kv`: a new upstream watcher continues where this one is, and
    /// takes its watchers. Returns the feed that now serves them.
    fn upgrade_prev_kv(&mut self, id: FeedId, cmds: &dyn Commands) -> FeedId {
        let Some(old) = self.feeds.remove(&id) else {
            return id;
        };
        if old.prev_kv {
            self.feeds.insert(id, old);
            return id;
        }
        let start = old.through.map_or(old.start, |t| t + 1);
        let new = cmds.new_id();
        cmds.cancel(id);
        cmds.create(new, self.create_request(start, true));
        for s in &old.subs {
            if let Some(sub) = self.subs.get_mut(s) {
                match &mut sub.state {
                    SubState::Live(f) | SubState::CatchUp { feed: f, .. } if *f == id => *f = new,
                    _ => {}
                }
            }
        }
        if self.shared == Some(id) {
            self.shared = Some(new);
        }
        self.feeds.insert(
            new,
            Feed {
                start,
                prev_kv: true,
                ..old
            },
        );
        new
    }

    /// A new client watcher.
    pub fn add(&mut self, id: SubId, spec: SubSpec, cmds: &dyn Commands, m: &Metrics) {
        let mut sub = Sub {
            next_rev: spec.start,
            created: false,
            state: SubState::Lagging,
            spec,
        };
        let shared = self.shared.and_then(|g| Some((g, self.feeds.get(&g)?)));
        match shared {
            None => {
                let f = self.new_feed(sub.spec.start, sub.spec.prev_kv, true, cmds);
                sub.state = SubState::Live(f);
            }
            Some((g, feed)) => {
                let (start, through) = (feed.start, feed.through);
                let joins = match through {
                    // Not created yet: only the same start revision can wait with it.
                    None => sub.spec.start == start,
                    Some(t) => sub.spec.start == 0 || sub.spec.start > t,
                };
                if joins {
                    let g = if sub.spec.prev_kv {
                        self.upgrade_prev_kv(g, cmds)
                    } else {
                        g
                    };
                    if let Some(t) = through {
                        // Created already: announce the watcher ourselves, as starting where the
                        // shared feed is.
                        if sub.next_rev == 0 {
                            sub.next_rev = t + 1;
                        }
                        sub.created = true;
                        sub.spec.sink.push(WatchResponse {
                            header: Some(self.header_at(t)),
                            watch_id: sub.spec.watch_id,
                            created: true,
                            ..Default::default()
                        });
                    }
                    sub.state = SubState::Live(g);
                } else {
                    // History the shared feed is past: a feed of its own until it catches up.
                    let f = self.new_feed(sub.spec.start, sub.spec.prev_kv, false, cmds);
                    sub.state = SubState::CatchUp {
                        feed: f,
                        buffer: None,
                    };
                }
            }
        }
        if let SubState::Live(f) | SubState::CatchUp { feed: f, .. } = sub.state {
            if let Some(feed) = self.feeds.get_mut(&f) {
                feed.subs.insert(id);
            }
        }
        self.subs.insert(id, sub);
        self.sync_metrics(m);
    }

    /// Detaches a watcher from its feeds (dropping those it alone used).
    fn detach(&mut self, id: SubId, cmds: &dyn Commands) {
        let Some(sub) = self.subs.get_mut(&id) else {
            return;
        };
        let state = std::mem::replace(&mut sub.state, SubState::Lagging);
        match state {
            SubState::Live(f) => {
                if let Some(feed) = self.feeds.get_mut(&f) {
                    feed.subs.remove(&id);
                }
                self.drop_feed_if_unused(f, cmds);
            }
            SubState::CatchUp { feed, buffer } => {
                if let Some(fd) = self.feeds.get_mut(&feed) {
                    fd.subs.remove(&id);
                }
                self.drop_feed_if_unused(feed, cmds);
                if buffer.is_some() {
                    if let Some(g) = self.shared {
                        if let Some(gf) = self.feeds.get_mut(&g) {
                            gf.buffering.remove(&id);
                        }
                        self.drop_feed_if_unused(g, cmds);
                    }
                }
            }
            SubState::Lagging => {}
        }
    }

    /// Removes a client watcher (cancel, or its stream ended). Returns the header for its
    /// "canceled" response, or None if the watcher was already gone (ended by the cluster).
    pub fn remove(
        &mut self,
        id: SubId,
        cmds: &dyn Commands,
        m: &Metrics,
    ) -> Option<ResponseHeader> {
        if !self.subs.contains_key(&id) {
            return None;
        }
        let rev = self.through_of(id).unwrap_or(self.header.revision);
        self.detach(id, cmds);
        self.subs.remove(&id);
        self.sync_metrics(m);
        Some(self.header_at(rev))
    }

    /// The revision up to which watcher `id` has been sent every event (None before it is
    /// created).
    pub fn through_of(&self, id: SubId) -> Option<i64> {
        let sub = self.subs.get(&id)?;
        if !sub.created {
            return None;
        }
        match &sub.state {
            // Never above the feed's: a watcher with a future start must not be told of a
            // revision the cluster may not have reached.
            SubState::Live(f) | SubState::CatchUp { feed: f, .. } => self.feeds.get(f)?.through,
            SubState::Lagging => Some(sub.next_rev - 1),
        }
    }

    /// The client's queue has room again: a lagging watcher catches up from where it stopped.
    pub fn resync(&mut self, id: SubId, cmds: &dyn Commands, m: &Metrics) {
        let Some(sub) = self.subs.get(&id) else {
            return;
        };
        if !matches!(sub.state, SubState::Lagging) {
            return;
        }
        let (start, prev_kv) = (sub.next_rev.max(1), sub.spec.prev_kv);
        let f = self.new_feed(start, prev_kv, false, cmds);
        if let Some(feed) = self.feeds.get_mut(&f) {
            feed.subs.insert(id);
        }
        if let Some(sub) = self.subs.get_mut(&id) {
            sub.state = SubState::CatchUp {
                feed: f,
                buffer: None,
            };
        }
        self.sync_metrics(m);
    }

    /// How to open upstream watcher `id` again on a new stream: from the revision after the
    /// last one it received.
    pub fn resume_request(&self, id: FeedId) -> Option<WatchCreateRequest> {
        let f = self.feeds.get(&id)?;
        Some(self.create_request(f.through.map_or(f.start, |t| t + 1), f.prev_kv))
    }

    /// A response of upstream watcher `fid`.
    pub fn on_response(
        &mut self,
        fid: FeedId,
        resp: WatchResponse,
        cmds: &dyn Commands,
        m: &Metrics,
    ) {
        if let Some(h) = &resp.header {
            self.header = *h;
        }
        let Some(feed) = self.feeds.get(&fid) else {
            return;
        };
        let shared = feed.shared;
        let rev = resp.header.as_ref().map_or(0, |h| h.revision);
        if resp.canceled {
            self.on_canceled(fid, &resp);
        } else if resp.created {
            self.on_created(fid, &resp, rev);
        } else if !resp.events.is_empty() {
            self.on_events(fid, &resp, cmds, m);
        } else {
            self.on_progress(fid, &resp, rev);
        }
        if shared {
            let waiting: Vec<SubId> = self
                .subs
                .iter()
                .filter(|(_, s)| matches!(s.state, SubState::CatchUp { .. }))
                .map(|(id, _)| *id)
                .collect();
            for s in waiting {
                self.try_merge(s, cmds);
            }
        } else if let Some(f) = self.feeds.get(&fid) {
            let subs: Vec<SubId> = f.subs.iter().copied().collect();
            for s in subs {
                self.try_merge(s, cmds);
            }
        }
        self.sync_metrics(m);
    }

    /// The cluster ended watcher `fid` (compaction, or a reason): so do its client watchers.
    fn on_canceled(&mut self, fid: FeedId, resp: &WatchResponse) {
        let Some(feed) = self.feeds.remove(&fid) else {
            return;
        };
        if self.shared == Some(fid) {
            self.shared = None;
        }
        for s in feed.subs {
            if let Some(sub) = self.subs.remove(&s) {
                sub.spec.sink.push(WatchResponse {
                    header: resp.header,
                    watch_id: sub.spec.watch_id,
                    created: resp.created && !sub.created,
                    canceled: true,
                    compact_revision: resp.compact_revision,
                    cancel_reason: resp.cancel_reason.clone(),
                    ..Default::default()
                });
            }
        }
        for s in feed.buffering {
            if let Some(Sub {
                state: SubState::CatchUp { buffer, .. },
                ..
            }) = self.subs.get_mut(&s)
            {
                *buffer = None;
            }
        }
    }

    fn on_created(&mut self, fid: FeedId, resp: &WatchResponse, rev: i64) {
        let Some(feed) = self.feeds.get_mut(&fid) else {
            return;
        };
        let t = if feed.start == 0 { rev } else { feed.start - 1 };
        let through = feed.through.map_or(t, |old| old.max(t));
        feed.through = Some(through);
        let subs: Vec<SubId> = feed.subs.iter().copied().collect();
        for s in subs {
            let Some(sub) = self.subs.get_mut(&s) else {
                continue;
            };
            if sub.created {
                continue;
            }
            sub.created = true;
            if sub.next_rev == 0 {
                sub.next_rev = through + 1;
            }
            sub.spec.sink.push(WatchResponse {
                header: resp.header,
                watch_id: sub.spec.watch_id,
                created: true,
                ..Default::default()
            });
        }
    }

    fn on_events(&mut self, fid: FeedId, resp: &WatchResponse, cmds: &dyn Commands, m: &Metrics) {
        let Some(feed) = self.feeds.get(&fid) else {
            return;
        };
        let last = resp
            .events
            .iter()
            .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
            .max()
            .unwrap_or(0);
        let subs: Vec<SubId> = feed.subs.iter().copied().collect();
        let buffering: Vec<SubId> = feed.buffering.iter().copied().collect();
        let header = resp.header.unwrap_or_default();
        let mut lagged = Vec::new();
        for s in &subs {
            if let Some(sub) = self.subs.get_mut(s) {
                if sub.created && !deliver(sub, &header, &resp.events) {
                    lagged.push(*s);
                }
            }
        }
        if subs.len() > 1 {
            m.events_coalescing.inc_by((subs.len() - 1) as f64);
        }
        for s in buffering {
            let Some(Sub {
                state: SubState::CatchUp { buffer, .. },
                ..
            }) = self.subs.get_mut(&s)
            else {
                continue;
            };
            let Some(b) = buffer else { continue };
            b.bytes += resp.encoded_len();
            if b.bytes > MAX_BUFFERED_BYTES {
                // The catch-up takes too long: give the buffer up and start a new one later,
                // from where the shared feed will then be.
                *buffer = None;
                if let Some(f) = self.feeds.get_mut(&fid) {
                    f.buffering.remove(&s);
                }
            } else {
                b.responses.push(resp.clone());
            }
        }
        if let Some(f) = self.feeds.get_mut(&fid) {
            f.through = Some(f.through.map_or(last, |t| t.max(last)));
        }
        for s in lagged {
            self.detach(s, cmds);
        }
    }

    /// A progress notification: every event up to `rev` has been sent on this feed.
    fn on_progress(&mut self, fid: FeedId, resp: &WatchResponse, rev: i64) {
        let Some(feed) = self.feeds.get_mut(&fid) else {
            return;
        };
        if feed.through.is_none() {
            return;
        }
        feed.through = feed.through.map(|t| t.max(rev));
        for s in &feed.subs {
            if let Some(sub) = self.subs.get(s) {
                if sub.created && sub.spec.progress {
                    // Best effort: a progress notification dropped for a full queue loses
                    // nothing.
                    sub.spec.sink.try_push(vec![WatchResponse {
                        header: resp.header,
                        watch_id: sub.spec.watch_id,
                        ..Default::default()
                    }]);
                }
            }
        }
    }

    /// An ordered progress answer on the upstream stream: every event up to `rev` has been sent
    /// on every created feed of it.
    pub fn on_progress_all(&mut self, fid: FeedId, rev: i64, cmds: &dyn Commands, m: &Metrics) {
        if let Some(f) = self.feeds.get_mut(&fid) {
            if let Some(t) = f.through {
                f.through = Some(t.max(rev));
            }
        }
        let waiting: Vec<SubId> = self
            .subs
            .iter()
            .filter(|(_, s)| matches!(s.state, SubState::CatchUp { .. }))
            .map(|(id, _)| *id)
            .collect();
        for s in waiting {
            self.try_merge(s, cmds);
        }
        self.sync_metrics(m);
    }

    /// Moves a catching-up watcher onto the shared feed once that loses nothing and repeats
    /// nothing; makes its feed the shared one if there is none.
    fn try_merge(&mut self, id: SubId, cmds: &dyn Commands) {
        let Some(sub) = self.subs.get(&id) else {
            return;
        };
        let SubState::CatchUp { feed: own, buffer } = &sub.state else {
            return;
        };
        let own = *own;
        let buffer_from = buffer.as_ref().map(|b| b.from);
        let wants_prev_kv = sub.spec.prev_kv;
        let Some(x) = self.feeds.get(&own).and_then(|f| f.through) else {
            return;
        };
        let Some(g) = self.shared else {
            // No shared feed: this one becomes it.
            if let Some(f) = self.feeds.get_mut(&own) {
                f.shared = true;
            }
            self.shared = Some(own);
            if let Some(sub) = self.subs.get_mut(&id) {
                sub.state = SubState::Live(own);
            }
            return;
        };
        let Some(t) = self.feeds.get(&g).and_then(|f| f.through) else {
            return; // the shared feed is not created yet
        };
        let g = if wants_prev_kv {
            self.upgrade_prev_kv(g, cmds)
        } else {
            g
        };
        match buffer_from {
            Some(from) if x >= from => {
                let Some(sub) = self.subs.get_mut(&id) else {
                    return;
                };
                let SubState::CatchUp { buffer, .. } =
                    std::mem::replace(&mut sub.state, SubState::Live(g))
                else {
                    return;
                };
                let mut ok = true;
                for r in buffer.map(|b| b.responses).unwrap_or_default() {
                    let header = r.header.unwrap_or_default();
                    if !deliver(sub, &header, &r.events) {
                        ok = false;
                        break;
                    }
                }
                self.finish_merge(id, own, g, ok, cmds);
            }
            Some(_) => {}
            None if x >= t => {
                if let Some(sub) = self.subs.get_mut(&id) {
                    sub.state = SubState::Live(g);
                }
                self.finish_merge(id, own, g, true, cmds);
            }
            None => {
                if let Some(Sub {
                    state: SubState::CatchUp { buffer, .. },
                    ..
                }) = self.subs.get_mut(&id)
                {
                    *buffer = Some(Buffer {
                        from: t,
                        responses: Vec::new(),
                        bytes: 0,
                    });
                }
                if let Some(gf) = self.feeds.get_mut(&g) {
                    gf.buffering.insert(id);
                }
            }
        }
    }

    /// The watcher now reads the shared feed `g`; its own feed `own` closes.
    fn finish_merge(&mut self, id: SubId, own: FeedId, g: FeedId, ok: bool, cmds: &dyn Commands) {
        if let Some(f) = self.feeds.get_mut(&own) {
            f.subs.remove(&id);
        }
        self.drop_feed_if_unused(own, cmds);
        if let Some(gf) = self.feeds.get_mut(&g) {
            gf.buffering.remove(&id);
            gf.subs.insert(id);
        }
        if !ok {
            self.detach(id, cmds);
        }
    }

    fn sync_metrics(&mut self, m: &Metrics) {
        let coalescing = self
            .shared
            .and_then(|g| self.feeds.get(&g))
            .map_or(0, |f| f.subs.len().saturating_sub(1)) as i64;
        m.watchers_coalescing
            .add((coalescing - self.reported_coalescing) as f64);
        self.reported_coalescing = coalescing;
        let feeds = self.feeds.len() as i64;
        m.upstream_watchers
            .add((feeds - self.reported_feeds) as f64);
        self.reported_feeds = feeds;
    }
}

/// Sends a watcher its part of one upstream response: the events from its `next_rev` on that
/// pass its filters, with or without `prev_kv`, keys stripped of the namespace, fragmented if it
/// asked. False (and nothing sent) when its client's queue is full.
fn deliver(sub: &mut Sub, header: &ResponseHeader, events: &[Event]) -> bool {
    let mut out = Vec::new();
    let mut last = None;
    for ev in events {
        let Some(kv) = &ev.kv else { continue };
        if kv.mod_revision < sub.next_rev {
            continue;
        }
        last = Some(kv.mod_revision);
        let is_put = ev.r#type == EventType::Put as i32;
        if (is_put && sub.spec.noput) || (!is_put && sub.spec.nodelete) {
            continue;
        }
        let mut e = ev.clone();
        if !sub.spec.prev_kv {
            e.prev_kv = None;
        }
        if sub.spec.strip > 0 {
            for kv in e.kv.iter_mut().chain(e.prev_kv.iter_mut()) {
                let n = sub.spec.strip.min(kv.key.len());
                kv.key.drain(..n);
            }
        }
        out.push(e);
    }
    let Some(last) = last else { return true };
    if out.is_empty() {
        sub.next_rev = last + 1;
        return true;
    }
    let resp = WatchResponse {
        header: Some(*header),
        watch_id: sub.spec.watch_id,
        events: out,
        ..Default::default()
    };
    let parts = if sub.spec.fragment {
        fragments(resp, sub.spec.fragment_bytes)
    } else {
        vec![resp]
    };
    if sub.spec.sink.try_push(parts) {
        sub.next_rev = last + 1;
        true
    } else {
        false
    }
}

/// Splits a response larger than `limit` into fragments (all but the last marked `fragment`),
/// each holding whole events, as etcd's `sendFragments`.
pub fn fragments(resp: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if resp.events.len() <= 1 || resp.encoded_len() <= limit {
        return vec![resp];
    }
    let mut parts = Vec::new();
    let empty = WatchResponse {
        events: Vec::new(),
        fragment: true,
        ..resp.clone()
    };
    let mut cur = empty.clone();
    let mut size = empty.encoded_len();
    for ev in resp.events {
        let n = ev.encoded_len() + 4;
        if !cur.events.is_empty() && size + n > limit {
            parts.push(std::mem::replace(&mut cur, empty.clone()));
            size = empty.encoded_len();
        }
        size += n;
        cur.events.push(ev);
    }
    cur.fragment = false;
    parts.push(cur);
    parts
}
