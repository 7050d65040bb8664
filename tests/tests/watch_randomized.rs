//! Side-by-side randomized watch test with the `etcd-client` crate: a seeded sequence of writes
//! (puts, deletes, txns, compactions) and watch requests (keys, ranges, prefixes, from-key,
//! start revisions now / historical / compacted / future, prev_kv, filters, client-chosen and
//! duplicate ids, cancels, progress requests) goes to etcd and to the server under test, on
//! two watch streams each. Then every watcher's event stream (types, key-values, prev_kv) and
//! control responses (created with its header revision, canceled, cancel reason,
//! compact_revision, progress replies) must be the same on both.
//!
//! Requests are sent in lockstep: each write is acknowledged by both servers, each create and
//! progress request is answered by both, and after a historical create both servers' gauges
//! must say no watcher is catching up, before the next step. What may legitimately differ is
//! how events are grouped into responses during catch-up (it depends on when catch-up runs),
//! so events are compared per watcher as one sequence; every response must still hold whole
//! revisions in order, without duplicates.
//!
//! `HEARTH_SEED=<seed>` replays a run, `HEARTH_STEPS=<n>` changes its length.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use api::etcdserverpb::request_op::Request;
use api::etcdserverpb::{CompactionRequest, Compare, DeleteRangeRequest, PutRequest, TxnRequest};
use etcd_client::proto::{PbEvent, PbKeyValue, PbWatchResponse};
use etcd_client::{WatchFilterType, WatchOptions, WatchRequestSender};
use hearth_tests::normalize::{compare, show_bytes};
use hearth_tests::poll::Poll;
use hearth_tests::rng::{Rng, RngExt, Seed};
use hearth_tests::rpc::{header_revision, request_op, RawKv};
use hearth_tests::watch::Inbox;
use hearth_tests::{Kind, Server};

const KEYS: &[&[u8]] = &[b"a", b"a/1", b"a/2", b"ab", b"b", b"b/1", b"c", b"\xff"];
const BOUNDS: &[&[u8]] = &[b"a", b"a/", b"a0", b"b", b"b0", b"c", b"d", b"\x00"];
const VALUES: &[&[u8]] = &[b"", b"1", b"22", b"x", b"\x00\xff"];
const STREAMS: usize = 2;
const DEFAULT_STEPS: usize = 250;
const DEADLINE: Duration = Duration::from_secs(60);

fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().unwrap() = last + 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// One server with its watch streams; every response received is kept, in order, per stream.
struct Side {
    server: Server,
    raw: RawKv,
    senders: Vec<WatchRequestSender>,
    inboxes: Vec<Inbox>,
    received: Vec<Vec<PbWatchResponse>>,
    _client: etcd_client::Client,
}

impl Side {
    async fn start(kind: Kind) -> Side {
        let server = Server::start(kind).await;
        let raw = server.raw().await;
        let client = server.client().await;
        let mut senders = Vec::new();
        let mut inboxes = Vec::new();
        for _ in 0..STREAMS {
            // Each stream starts with a watcher on a key nobody writes, so both servers number
            // the random watchers alike from 1.
            let stream = client
                .watch_client()
                .watch("never-written", None)
                .await
                .expect("open watch stream");
            let (sender, responses) = stream.split();
            senders.push(sender);
            inboxes.push(Inbox::spawn(responses));
        }
        let mut side = Side {
            server,
            raw,
            senders,
            inboxes,
            received: vec![Vec::new(); STREAMS],
            _client: client,
        };
        for s in 0..STREAMS {
            side.wait_for(s, "the first watcher's creation", |r| r.created)
                .await;
        }
        side
    }

    /// Reads stream `s` until a response matches `want`; returns it (it is also kept).
    async fn wait_for(
        &mut self,
        s: usize,
        what: &str,
        want: impl Fn(&PbWatchResponse) -> bool,
    ) -> PbWatchResponse {
        let poll = Poll::new(what, DEADLINE);
        loop {
            let r = self.inboxes[s]
                .next(poll.left())
                .await
                .unwrap_or_else(|e| panic!("{:?}: stream {s}: no {what}: {e}", self.server.kind()));
            self.received[s].push(r.clone());
            if want(&r) {
                return r;
            }
        }
    }

    /// Waits until the server's gauge says no watcher is catching up.
    async fn wait_slow_zero(&self) {
        self.server
            .wait_metrics(&[("etcd_debugging_mvcc_slow_watcher_total", 0.0)])
            .await;
    }

    /// Waits until the server's gauges say no watcher is catching up and no event is queued
    /// (etcd's pending-events gauge also counts events of cancelled watchers, forever: on etcd,
    /// as with `HEARTH_TEST_TARGET=etcd`, only the first part is checked).
    async fn wait_quiet(&self) {
        if self.server.kind() == Kind::Etcd {
            return self.wait_slow_zero().await;
        }
        self.server
            .wait_metrics(&[
                ("etcd_debugging_mvcc_slow_watcher_total", 0.0),
                ("etcd_debugging_mvcc_pending_events_total", 0.0),
            ])
            .await;
    }
}

#[derive(Clone, Debug)]
enum Step {
    Write(Request),
    Compact(i64),
    Create { stream: usize, opts: CreateOpts },
    Cancel { stream: usize, id: i64 },
    Progress { stream: usize },
}

#[derive(Clone, Debug)]
struct CreateOpts {
    key: Vec<u8>,
    /// None: one key; Some(b"\0"): from key; else the end.
    end: Option<Vec<u8>>,
    start_rev: i64,
    prev_kv: bool,
    filters: Vec<WatchFilterType>,
    id: i64,
    fragment: bool,
    progress_notify: bool,
}

impl CreateOpts {
    fn options(&self) -> WatchOptions {
        let mut o = WatchOptions::new()
            .with_start_revision(self.start_rev)
            .with_watch_id(self.id);
        if let Some(end) = &self.end {
            o = o.with_range(end.clone());
        }
        if self.prev_kv {
            o = o.with_prev_key();
        }
        if !self.filters.is_empty() {
            o = o.with_filters(self.filters.clone());
        }
        if self.fragment {
            o = o.with_fragment();
        }
        if self.progress_notify {
            o = o.with_progress_notify();
        }
        o
    }
}

/// What the generator knows (from the reference's answers).
struct Gen {
    rng: Rng,
    rev: i64,
    compacted: i64,
    /// Live watchers per stream: id -> start revision.
    live: Vec<BTreeMap<i64, i64>>,
}

impl Gen {
    fn key(&mut self) -> Vec<u8> {
        self.rng.pick(KEYS).to_vec()
    }

    fn put(&mut self) -> Request {
        Request::RequestPut(PutRequest {
            key: self.key(),
            value: self.rng.pick(VALUES).to_vec(),
            ..Default::default()
        })
    }

    fn delete(&mut self) -> Request {
        let key = self.key();
        let range_end = match self.rng.u64(..4) {
            0 | 1 => Vec::new(),
            2 => prefix_end(&key),
            _ => self.rng.pick(BOUNDS).to_vec(),
        };
        Request::RequestDeleteRange(DeleteRangeRequest {
            key,
            range_end,
            prev_kv: false,
        })
    }

    fn txn(&mut self) -> Request {
        // Distinct keys per branch: etcd rejects duplicates, and single-key ops keep clear of
        // the txn shapes that crash etcd 3.4 (see randomized.rs).
        let branch = |g: &mut Gen| {
            let mut keys: Vec<Vec<u8>> = (0..1 + g.rng.u64(..3)).map(|_| g.key()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .map(|key| {
                    request_op(if g.rng.chance(0.7) {
                        Request::RequestPut(PutRequest {
                            key,
                            value: g.rng.pick(VALUES).to_vec(),
                            ..Default::default()
                        })
                    } else {
                        Request::RequestDeleteRange(DeleteRangeRequest {
                            key,
                            ..Default::default()
                        })
                    })
                })
                .collect::<Vec<_>>()
        };
        let success = branch(self);
        let failure = branch(self);
        let key = self.key();
        Request::RequestTxn(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Greater as i32,
                target: CompareTarget::Version as i32,
                key,
                target_union: Some(TargetUnion::Version(self.rng.i64(0..=2))),
                range_end: Vec::new(),
            }],
            success,
            failure,
        })
    }

    fn create(&mut self) -> Step {
        let stream = self.rng.usize(..STREAMS);
        let key = self.key();
        let (key, end) = match self.rng.u64(..6) {
            0 | 1 => (key, None),
            2 | 3 => {
                let end = prefix_end(&key);
                (key, Some(end))
            }
            4 => (key, Some(vec![0])),
            _ => {
                let a = self.rng.pick(BOUNDS).to_vec();
                let b = self.rng.pick(BOUNDS).to_vec();
                // Sometimes an empty or inverted range, which etcd refuses.
                (a, Some(b))
            }
        };
        let start_rev = match self.rng.u64(..20) {
            0..=8 => 0,
            // Not exactly the compaction revision: Hearth keeps a tombstone there (as etcd
            // 3.5.16+ does, so such a watcher sees that delete), etcd 3.4 drops it.
            9..=16 => match self.rng.i64(1..=self.rev) {
                r if r == self.compacted => r + 1,
                r => r,
            },
            // A negative start revision is not drawn: etcd 3.4 takes it as "from now", etcd
            // 3.5.24+ (and Hearth) refuse it as compacted (`watch_features` checks that).
            _ => self.rev + self.rng.i64(1..=3),
        };
        let mut filters = Vec::new();
        if self.rng.chance(0.15) {
            filters.push(WatchFilterType::NoPut);
        }
        if self.rng.chance(0.15) {
            filters.push(WatchFilterType::NoDelete);
        }
        let id = if self.rng.chance(0.6) {
            0
        } else {
            self.rng.i64(1..=12)
        };
        Step::Create {
            stream,
            opts: CreateOpts {
                key,
                end,
                start_rev,
                prev_kv: self.rng.chance(0.4),
                filters,
                id,
                fragment: self.rng.chance(0.2),
                progress_notify: self.rng.chance(0.2),
            },
        }
    }

    fn step(&mut self) -> Step {
        match self.rng.u64(..100) {
            0..=34 => Step::Write(self.put()),
            35..=46 => Step::Write(self.delete()),
            47..=56 => Step::Write(self.txn()),
            57..=59 => {
                let lo = self.compacted.max(1);
                Step::Compact(if self.rng.chance(0.9) && self.rev > lo {
                    self.rng.i64(lo + 1..=self.rev)
                } else {
                    self.rng.i64(1..=self.rev + 2)
                })
            }
            60..=79 => self.create(),
            80..=89 => {
                let stream = self.rng.usize(..STREAMS);
                let ids: Vec<i64> = self.live[stream].keys().copied().collect();
                let id = if !ids.is_empty() && self.rng.chance(0.8) {
                    *self.rng.pick(&ids)
                } else {
                    self.rng.i64(-1..=15)
                };
                Step::Cancel { stream, id }
            }
            _ => Step::Progress {
                stream: self.rng.usize(..STREAMS),
            },
        }
    }
}

fn header_rev(r: &PbWatchResponse) -> i64 {
    r.header.as_ref().map_or(0, |h| h.revision)
}

fn show_kv(kv: &Option<PbKeyValue>) -> String {
    match kv {
        None => "-".into(),
        Some(kv) => format!(
            "{}@c{}m{}v{}={}",
            show_bytes(&kv.key),
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            show_bytes(&kv.value)
        ),
    }
}

fn show_event(e: &PbEvent) -> String {
    format!(
        "{} {} prev {}",
        if e.r#type == 0 { "PUT" } else { "DELETE" },
        show_kv(&e.kv),
        show_kv(&e.prev_kv)
    )
}

/// A stream's responses as comparable lines per watch id (events flattened; see module doc).
fn transcript(responses: &[PbWatchResponse]) -> BTreeMap<i64, Vec<String>> {
    let mut out: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for r in responses {
        let lines = out.entry(r.watch_id).or_default();
        if r.created {
            lines.push(format!(
                "created rev={} canceled={} reason={:?}",
                header_rev(r),
                r.canceled,
                r.cancel_reason
            ));
            continue;
        }
        if r.events.is_empty() && !r.canceled {
            lines.push(format!("progress rev={}", header_rev(r)));
            continue;
        }
        lines.extend(r.events.iter().map(show_event));
        if r.canceled {
            lines.push(format!(
                "canceled compact_revision={} reason={:?} rev={}",
                r.compact_revision,
                r.cancel_reason,
                header_rev(r)
            ));
        }
    }
    out
}

/// Order and grouping rules every server must keep, whatever the timing.
fn check_invariants(kind: Kind, responses: &[PbWatchResponse]) -> Result<(), String> {
    let mut last: BTreeMap<i64, (i64, bool)> = BTreeMap::new();
    for r in responses {
        // Ids are reused after a cancel: a new watcher starts afresh.
        if r.created || r.canceled {
            last.remove(&r.watch_id);
        }
        if r.events.is_empty() {
            continue;
        }
        let (prev_rev, prev_open) = last.get(&r.watch_id).copied().unwrap_or((0, false));
        let mut cur = prev_rev;
        for (i, e) in r.events.iter().enumerate() {
            let rev = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            let continues_fragment = i == 0 && prev_open && rev == prev_rev;
            if rev < cur || (rev == cur && i == 0 && !continues_fragment) {
                return Err(format!(
                    "{kind:?}: watcher {} got revision {rev} after {cur} (a revision split or repeated): {r:?}",
                    r.watch_id
                ));
            }
            cur = rev;
        }
        if header_rev(r) < cur {
            return Err(format!(
                "{kind:?}: header revision {} below event revision {cur}",
                header_rev(r)
            ));
        }
        last.insert(r.watch_id, (cur, r.fragment));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_randomized_side_by_side() {
    let seed_guard = Seed::from_env("watch_randomized_side_by_side");
    let seed = seed_guard.value();
    let steps: usize = std::env::var("HEARTH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_STEPS);
    eprintln!("watch_randomized: {steps} steps");
    let mut etcd = Side::start(Kind::Etcd).await;
    let mut hearth = Side::start(Kind::Hearth).await;
    let mut g = Gen {
        rng: seed_guard.rng(),
        rev: 1,
        compacted: 0,
        live: vec![BTreeMap::new(); STREAMS],
    };
    for s in 0..STREAMS {
        g.live[s].insert(0, 0);
    }
    let mut log = String::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();

    for n in 0..steps {
        let step = g.step();
        let _ = writeln!(log, "#{n}: {step:?}");
        match step.clone() {
            Step::Write(req) => {
                *counts.entry("write").or_default() += 1;
                let e = etcd.raw.call(req.clone()).await;
                let h = hearth.raw.call(req).await;
                if let Err(d) = compare(&e, &h) {
                    panic!("step #{n} (seed {seed}): write answers differ:\n{d}\n{log}");
                }
                if let Ok(r) = &e {
                    g.rev = g.rev.max(response_rev(r));
                }
            }
            Step::Compact(rev) => {
                *counts.entry("compact").or_default() += 1;
                let req = CompactionRequest {
                    revision: rev,
                    physical: false,
                };
                let e = etcd.raw.compact(req).await.map(|_| ());
                let h = hearth.raw.compact(req).await.map(|_| ());
                assert_eq!(e, h, "step #{n} (seed {seed}): compaction\n{log}");
                if e.is_ok() {
                    g.compacted = rev;
                }
            }
            Step::Create { stream, opts } => {
                *counts.entry("create").or_default() += 1;
                let mut answers = Vec::new();
                for side in [&mut etcd, &mut hearth] {
                    side.senders[stream]
                        .watch(opts.key.clone(), Some(opts.options()))
                        .await
                        .expect("send create");
                    let r = side
                        .wait_for(stream, "created response", |r| r.created)
                        .await;
                    answers.push(r);
                }
                if !answers[0].canceled {
                    g.live[stream].insert(answers[0].watch_id, opts.start_rev);
                    if opts.start_rev != 0 && opts.start_rev <= g.rev {
                        // Let catch-up finish on both, so what follows does not race it.
                        *counts.entry("historical").or_default() += 1;
                        etcd.wait_slow_zero().await;
                        hearth.wait_quiet().await;
                    }
                } else {
                    *counts.entry("create refused").or_default() += 1;
                }
            }
            Step::Cancel { stream, id } => {
                *counts.entry("cancel").or_default() += 1;
                let live = g.live[stream].remove(&id).is_some();
                for side in [&mut etcd, &mut hearth] {
                    side.senders[stream].cancel(id).await.expect("send cancel");
                    if live {
                        side.wait_for(stream, "canceled response", |r| {
                            r.canceled && r.watch_id == id && r.compact_revision == 0
                        })
                        .await;
                    }
                }
            }
            Step::Progress { stream } => {
                // etcd 3.5 (and Hearth) answer only when every watcher has reached its start
                // revision; etcd 3.4 answers at once. Ask only where both agree.
                if g.live[stream].values().any(|&start| start > g.rev) {
                    continue;
                }
                *counts.entry("progress").or_default() += 1;
                for side in [&mut etcd, &mut hearth] {
                    side.senders[stream]
                        .request_progress()
                        .await
                        .expect("send progress");
                    side.wait_for(stream, "progress reply", |r| {
                        r.watch_id == -1 && !r.created && r.events.is_empty()
                    })
                    .await;
                }
            }
        }
    }

    // Always end with a compaction and a watch from below it (etcd's canceled reply with
    // compact_revision), and one from just after it (replay with prev_kv; see `create` for why
    // not from exactly the compaction revision).
    let at = g.rev - 1;
    if at > g.compacted {
        let req = CompactionRequest {
            revision: at,
            physical: false,
        };
        let e = etcd.raw.compact(req).await.map(|_| ());
        let h = hearth.raw.compact(req).await.map(|_| ());
        assert_eq!(e, h, "final compaction");
        g.compacted = at;
    }
    for start_rev in [1, g.compacted + 1] {
        for side in [&mut etcd, &mut hearth] {
            let opts = WatchOptions::new()
                .with_start_revision(start_rev)
                .with_prefix()
                .with_prev_key();
            side.senders[0]
                .watch("", Some(opts))
                .await
                .expect("send create");
            side.wait_for(0, "created response", |r| r.created).await;
        }
    }

    // Pass every future start revision, let everything be delivered, then end each stream
    // with a progress reply: all events before it have been received.
    for i in 0..4 {
        let req = Request::RequestPut(PutRequest {
            key: KEYS[i % KEYS.len()].to_vec(),
            value: b"last".to_vec(),
            ..Default::default()
        });
        let e = etcd.raw.call(req.clone()).await;
        let h = hearth.raw.call(req).await;
        compare(&e, &h).unwrap_or_else(|d| panic!("final writes differ:\n{d}"));
        g.rev += 1;
    }
    // Hearth's progress reply comes after every event before it (it waits until every watcher
    // is synced). etcd 3.4 answers at once and its pending-events gauge counts events of
    // cancelled watchers forever, so on etcd the test first waits until each watcher has at
    // least as many events as on the server under test (a watcher short of events fails the
    // comparison below once the deadline passes).
    hearth.wait_quiet().await;
    for s in 0..STREAMS {
        hearth.senders[s]
            .request_progress()
            .await
            .expect("send progress");
        let r = hearth
            .wait_for(s, "final progress reply", |r| {
                r.watch_id == -1 && !r.created && r.events.is_empty()
            })
            .await;
        assert_eq!(header_rev(&r), g.rev, "final progress revision");
    }
    etcd.wait_slow_zero().await;
    for s in 0..STREAMS {
        let want = event_counts(&hearth.received[s]);
        let poll = Poll::new("etcd's events", DEADLINE);
        while !poll.expired() {
            let have = event_counts(&etcd.received[s]);
            if want
                .iter()
                .all(|(id, n)| have.get(id).copied().unwrap_or(0) >= *n)
            {
                break;
            }
            match etcd.inboxes[s].next(poll.left()).await {
                Ok(r) => etcd.received[s].push(r),
                Err(_) => break,
            }
        }
        etcd.senders[s]
            .request_progress()
            .await
            .expect("send progress");
        etcd.wait_for(s, "final progress reply", |r| {
            r.watch_id == -1 && !r.created && r.events.is_empty()
        })
        .await;
    }

    let mut diffs = Vec::new();
    let mut events = 0;
    for s in 0..STREAMS {
        for side in [&etcd, &hearth] {
            if let Err(e) = check_invariants(side.server.kind(), &side.received[s]) {
                diffs.push(e);
            }
        }
        let e = transcript(&etcd.received[s]);
        let h = transcript(&hearth.received[s]);
        events += e.values().flatten().filter(|l| !l.contains("rev=")).count();
        let ids: BTreeSet<i64> = e.keys().chain(h.keys()).copied().collect();
        for id in ids {
            let (el, hl) = (e.get(&id).cloned(), h.get(&id).cloned());
            if el != hl {
                let el = el.unwrap_or_default();
                let hl = hl.unwrap_or_default();
                let at = el.iter().zip(&hl).take_while(|(a, b)| a == b).count();
                diffs.push(format!(
                    "stream {s}, watch id {id}: first difference at line {at}\n  etcd:       {:?}\n  under test: {:?}",
                    &el[at..el.len().min(at + 4)],
                    &hl[at..hl.len().min(at + 4)],
                ));
            }
        }
    }
    eprintln!("watch_randomized: {counts:?}, {events} events compared");
    assert!(
        diffs.is_empty(),
        "seed {seed}: watch streams differ:\n{}\n--- steps ---\n{log}",
        diffs.join("\n")
    );
    // The run must have exercised the interesting cases.
    for what in ["create", "historical", "cancel", "progress", "compact"] {
        assert!(counts.get(what).copied().unwrap_or(0) > 0, "no {what} step");
    }
    assert!(events > 100, "only {events} events compared");
    let all: Vec<String> = (0..STREAMS)
        .flat_map(|s| transcript(&etcd.received[s]).into_values().flatten())
        .collect();
    for what in [
        "canceled compact_revision=",
        " prev ",
        "DELETE",
        "progress rev=",
    ] {
        assert!(
            all.iter()
                .any(|l| l.contains(what) && !l.ends_with("prev -")),
            "no {what:?} in the reference's answers"
        );
    }
}

fn event_counts(responses: &[PbWatchResponse]) -> BTreeMap<i64, usize> {
    let mut out = BTreeMap::new();
    for r in responses {
        *out.entry(r.watch_id).or_default() += r.events.len();
    }
    out
}

fn response_rev(r: &api::etcdserverpb::response_op::Response) -> i64 {
    header_revision(r).unwrap_or(0)
}
