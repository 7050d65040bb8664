//! The JSON gateway (`POST /v3/...` on the client port), side by side with etcd 3.4's: the same
//! requests, as a gateway user sends them, to Hearth and to Debian's etcd, and the answers'
//! statuses, content types and bodies compared byte for byte after normalisation.
//!
//! What is normalised, and why (nothing else is):
//! - `cluster_id` and `member_id`: derived from the peer URLs, whose ports differ between the two
//!   servers.
//! - `raft_term`: how many elections a fresh member went through is not part of the API.
//! - lease IDs the servers choose themselves (a grant with `ID` 0): each server picks its own;
//!   they are replaced by the order in which they were granted. IDs the client chooses are equal.
//! - the remaining `TTL` of a lease (`timetolive`): wall-clock time, read a few milliseconds
//!   apart; a difference of one second is accepted, any more is a failure.
//! - the order of `leases` in `leases`: etcd orders them by expiry time, which is wall-clock time.
//!
//! The randomized history prints its seed; `HEARTH_SEED=<seed>` replays it, `HEARTH_STEPS=<n>`
//! changes its length. The watch test drives `curl --no-buffer`, as a shell script would.

use std::time::Duration;

use base64::Engine as _;
use hearth_tests::poll;
use hearth_tests::rng::{Rng, RngExt, Seed};
use hearth_tests::{Kind, Options, Server};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long an answer (a response, a streamed line, a lease expiry) may take before the test
/// gives up on it.
const DEADLINE: Duration = Duration::from_secs(30);

mod http1 {
    //! A keep-alive HTTP/1.1 client connection (hyper), reconnecting when the server closed it.

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::client::conn::http1::SendRequest;
    use hyper_util::rt::TokioIo;

    pub struct Conn {
        port: u16,
        tx: Option<SendRequest<Full<Bytes>>>,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Reply {
        pub status: u16,
        pub content_type: String,
        pub location: String,
        pub body: String,
    }

    impl Conn {
        pub fn new(port: u16) -> Conn {
            Conn { port, tx: None }
        }

        /// A sender ready for the next request. A keep-alive connection is ready only once
        /// hyper has finished with the previous answer, so readiness is awaited here for every
        /// caller; a connection the server closed meanwhile is replaced by a new one.
        async fn sender(&mut self) -> &mut SendRequest<Full<Bytes>> {
            if let Some(tx) = self.tx.as_mut() {
                if tx.ready().await.is_err() {
                    self.tx = None;
                }
            }
            if self.tx.is_none() {
                let s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .unwrap_or_else(|e| panic!("connect to port {}: {e}", self.port));
                let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                    .await
                    .expect("HTTP/1.1 handshake");
                tokio::spawn(conn);
                tx.ready()
                    .await
                    .expect("a new HTTP/1.1 connection is ready");
                self.tx = Some(tx);
            }
            self.tx.as_mut().expect("connected")
        }

        pub async fn request(
            &mut self,
            method: &str,
            path: &str,
            body: &[u8],
            headers: &[(&str, &str)],
        ) -> Reply {
            let port = self.port;
            let mut b = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", format!("127.0.0.1:{port}"));
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            let req = b
                .body(Full::new(Bytes::copy_from_slice(body)))
                .expect("request");
            let tx = self.sender().await;
            let resp = tx
                .send_request(req)
                .await
                .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"));
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let (content_type, location) = (header("content-type"), header("location"));
            let body = resp
                .into_body()
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: body: {e}"))
                .to_bytes();
            Reply {
                status,
                content_type,
                location,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        }

        pub async fn post(&mut self, path: &str, body: &str) -> Reply {
            self.request("POST", path, body.as_bytes(), &[]).await
        }

        /// POSTs to a route that streams and returns the answer up to its first line (the body
        /// is the first streamed response); the connection is then dropped.
        pub async fn first_line(&mut self, path: &str, body: &str) -> Reply {
            let req = hyper::Request::builder()
                .method("POST")
                .uri(path)
                .header("host", format!("127.0.0.1:{}", self.port))
                .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
                .expect("request");
            let tx = self.sender().await;
            let mut resp = tx.send_request(req).await.expect("send");
            self.tx = None;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let mut line = Vec::new();
            while !line.contains(&b'\n') {
                match resp.body_mut().frame().await {
                    Some(Ok(f)) => {
                        if let Ok(d) = f.into_data() {
                            line.extend_from_slice(&d);
                        }
                    }
                    _ => break,
                }
            }
            Reply {
                status,
                content_type,
                location: String::new(),
                body: String::from_utf8_lossy(&line).into_owned(),
            }
        }
    }
}

use http1::{Conn, Reply};

fn port_of(s: &Server) -> u16 {
    s.endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("endpoint has a port")
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Replaces the string value of every `"field":"..."` in `body` for which `f` gives a new one.
fn replace_field(body: &str, field: &str, f: impl Fn(&str) -> Option<String>) -> String {
    let pat = format!("\"{field}\":\"");
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(i) = rest.find(&pat) {
        out.push_str(&rest[..i + pat.len()]);
        rest = &rest[i + pat.len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        match f(&rest[..end]) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[..end]),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Lease IDs granted so far, as (etcd's, Hearth's).
#[derive(Default)]
struct Leases(Vec<[i64; 2]>);

impl Leases {
    fn id(&self, i: usize, side: usize) -> i64 {
        self.0[i][side]
    }
}

/// The normalisations of the module doc that apply to every body.
fn normalize(body: &str, side: usize, leases: &Leases) -> String {
    let mut s = replace_field(body, "cluster_id", |_| Some("C".into()));
    s = replace_field(&s, "member_id", |_| Some("M".into()));
    s = replace_field(&s, "raft_term", |_| Some("T".into()));
    let lease = |v: &str| {
        let id: i64 = v.parse().ok()?;
        let i = leases.0.iter().position(|l| l[side] == id)?;
        Some(format!("L{i}"))
    };
    s = replace_field(&s, "ID", lease);
    s = replace_field(&s, "lease", lease);
    // The `leases` list, sorted (its order is expiry order, i.e. wall-clock).
    if let Some(start) = s.find("\"leases\":[") {
        let from = start + "\"leases\":[".len();
        if let Some(len) = s[from..].find(']') {
            let mut items: Vec<String> = s[from..from + len]
                .split("},{")
                .map(|x| x.trim_matches(|c| c == '{' || c == '}').to_string())
                .collect();
            items.sort();
            let joined = format!("{{{}}}", items.join("},{"));
            s.replace_range(from..from + len, &joined);
        }
    }
    s
}

/// Remaining TTLs read a moment apart: equal when they differ by at most a second.
fn align_remaining_ttl(etcd: &mut String, hearth: &mut String) {
    let ttl = |s: &str| -> Option<i64> {
        let i = s.find("\"TTL\":\"")? + 7;
        s[i..].split('"').next()?.parse().ok()
    };
    if let (Some(a), Some(b)) = (ttl(etcd), ttl(hearth)) {
        if (a - b).abs() <= 1 && a > 0 && b > 0 {
            *etcd = replace_field(etcd, "TTL", |_| Some("~".into()));
            *hearth = replace_field(hearth, "TTL", |_| Some("~".into()));
        }
    }
}

/// etcd lists a lease's attached keys in the order of a Go map, which changes from call to call; the
/// order carries no meaning, so both answers' `keys` are compared sorted. Base64 has no `,` or `]`.
fn sort_lease_keys(body: &mut String) {
    let Some(start) = body.find("\"keys\":[").map(|i| i + 8) else {
        return;
    };
    let Some(len) = body[start..].find(']') else {
        return;
    };
    let mut keys: Vec<&str> = body[start..start + len].split(',').collect();
    keys.sort_unstable();
    let sorted = keys.join(",");
    body.replace_range(start..start + len, &sorted);
}

/// Two servers side by side, each with a keep-alive connection.
struct Pair {
    // Both servers live as long as the pair.
    _etcd: Server,
    hearth: Server,
    conns: [Conn; 2],
    leases: Leases,
}

impl Pair {
    async fn start() -> Pair {
        Pair::start_with(&[]).await
    }

    async fn start_with(args: &[&str]) -> Pair {
        let etcd = Server::start_with(Kind::Etcd, Options::with_args(args)).await;
        let hearth = Server::start_with(Kind::Hearth, Options::with_args(args)).await;
        let conns = [Conn::new(port_of(&etcd)), Conn::new(port_of(&hearth))];
        Pair {
            _etcd: etcd,
            hearth,
            conns,
            leases: Leases::default(),
        }
    }

    /// Sends per-side bodies; returns both replies, bodies normalised.
    async fn send_each(
        &mut self,
        method: &str,
        path: &str,
        bodies: [&str; 2],
        headers: &[(&str, &str)],
    ) -> [Reply; 2] {
        let mut out = Vec::new();
        for (side, (conn, body)) in self.conns.iter_mut().zip(bodies).enumerate() {
            let r = tokio::time::timeout(
                DEADLINE,
                conn.request(method, path, body.as_bytes(), headers),
            )
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer from side {side}"));
            out.push(r);
        }
        let mut out: [Reply; 2] = [out.remove(0), out.remove(0)];
        for (side, r) in out.iter_mut().enumerate() {
            r.body = normalize(&r.body, side, &self.leases);
        }
        out
    }

    async fn send(&mut self, method: &str, path: &str, body: &str) -> [Reply; 2] {
        self.send_each(method, path, [body, body], &[]).await
    }

    /// Sends `body` to both and requires equal answers; returns etcd's.
    async fn same(&mut self, path: &str, body: &str) -> Reply {
        let [e, h] = self.send("POST", path, body).await;
        assert_eq!(e, h, "POST {path} {body}\n  etcd:   {e:?}\n  hearth: {h:?}");
        e
    }
}

fn header_revision(body: &str) -> Option<i64> {
    let v: Value = serde_json::from_str(body).ok()?;
    v.get("header")?.get("revision")?.as_str()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The randomized history.

/// Keys written: at most 12, so no sorted range ever has more than 12 results (beyond that the
/// order of ties in etcd is an accident of Go's sort, see tests/tests/randomized.rs).
const PUT_KEYS: &[&[u8]] = &[
    b"a",
    b"a/1",
    b"a/2",
    b"ab",
    b"b",
    b"b\x00",
    b"c",
    b"c/x",
    b"k<&>\"",
    b"\xff",
    b"\xff\xff",
    b"z",
];
/// Keys never written, for range bounds and missing keys.
const OTHER_KEYS: &[&[u8]] = &[b"a0", b"a/", b"b/", b"\x00", b"d", b"aa"];
const VALUES: &[&[u8]] = &[b"", b"1", b"2", b"10", b"x", b"\x00\xff", b"<&>"];

/// How one request spells its JSON (all accepted by etcd): `.proto` or camel-case names,
/// 64-bit integers as strings or numbers, enums by name or number, zero values left out or given.
#[derive(Clone, Copy, Debug)]
struct Style {
    camel: bool,
    int_numbers: bool,
    enum_numbers: bool,
    zeros: bool,
}

/// A JSON object under construction in a style.
struct J {
    st: Style,
    map: Map<String, Value>,
}

impl J {
    fn new(st: Style) -> J {
        J {
            st,
            map: Map::new(),
        }
    }

    fn name(&self, orig: &str) -> String {
        if !self.st.camel {
            return orig.to_string();
        }
        let mut out = String::new();
        let mut up = false;
        for c in orig.chars() {
            if c == '_' {
                up = true;
            } else if up {
                out.extend(c.to_uppercase());
                up = false;
            } else {
                out.push(c);
            }
        }
        out
    }

    fn set(mut self, orig: &str, v: Value) -> J {
        let k = self.name(orig);
        self.map.insert(k, v);
        self
    }

    fn bytes(self, orig: &str, b: &[u8]) -> J {
        if b.is_empty() && !self.st.zeros {
            return self;
        }
        self.set(orig, Value::String(b64(b)))
    }

    fn int(self, orig: &str, n: i64) -> J {
        if n == 0 && !self.st.zeros {
            return self;
        }
        let v = if self.st.int_numbers {
            json!(n)
        } else {
            json!(n.to_string())
        };
        self.set(orig, v)
    }

    fn flag(self, orig: &str, b: bool) -> J {
        if !b && !self.st.zeros {
            return self;
        }
        self.set(orig, json!(b))
    }

    fn enumeration(self, orig: &str, names: &[&str], n: i32) -> J {
        if n == 0 && !self.st.zeros {
            return self;
        }
        let v = if self.st.enum_numbers {
            json!(n)
        } else {
            json!(names[n as usize])
        };
        self.set(orig, v)
    }

    fn done(self) -> Value {
        Value::Object(self.map)
    }
}

#[derive(Clone, Copy, Debug)]
enum LeaseRef {
    None,
    /// The i-th lease granted.
    Known(usize),
    /// An ID as written (possibly never granted).
    Raw(i64),
}

impl LeaseRef {
    fn id(self, side: usize, leases: &Leases) -> i64 {
        match self {
            LeaseRef::None => 0,
            LeaseRef::Known(i) => leases.id(i, side),
            LeaseRef::Raw(id) => id,
        }
    }
}

#[derive(Clone, Debug)]
struct RangeOp {
    key: Vec<u8>,
    range_end: Vec<u8>,
    limit: i64,
    revision: i64,
    sort_order: i32,
    sort_target: i32,
    serializable: bool,
    keys_only: bool,
    count_only: bool,
    min_mod: i64,
    max_mod: i64,
    min_create: i64,
    max_create: i64,
}

#[derive(Clone, Debug)]
enum CmpValue {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(LeaseRef),
}

#[derive(Clone, Debug)]
struct CompareOp {
    result: i32,
    target: i32,
    key: Vec<u8>,
    range_end: Vec<u8>,
    value: CmpValue,
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: LeaseRef,
        prev_kv: bool,
        ignore_value: bool,
        ignore_lease: bool,
    },
    Range(RangeOp),
    Delete {
        key: Vec<u8>,
        range_end: Vec<u8>,
        prev_kv: bool,
    },
    Txn {
        compare: Vec<CompareOp>,
        success: Vec<Op>,
        failure: Vec<Op>,
    },
    Compact {
        revision: i64,
        physical: bool,
    },
    Grant {
        ttl: i64,
        id: LeaseRef,
    },
    Revoke {
        id: LeaseRef,
    },
    TimeToLive {
        id: LeaseRef,
        keys: bool,
    },
    Leases,
}

const SORT_ORDERS: &[&str] = &["NONE", "ASCEND", "DESCEND"];
const SORT_TARGETS: &[&str] = &["KEY", "VERSION", "CREATE", "MOD", "VALUE"];
const CMP_RESULTS: &[&str] = &["EQUAL", "GREATER", "LESS", "NOT_EQUAL"];
const CMP_TARGETS: &[&str] = &["VERSION", "CREATE", "MOD", "VALUE", "LEASE"];

impl Op {
    fn path(&self) -> &'static str {
        match self {
            Op::Put { .. } => "/v3/kv/put",
            Op::Range(_) => "/v3/kv/range",
            Op::Delete { .. } => "/v3/kv/deleterange",
            Op::Txn { .. } => "/v3/kv/txn",
            Op::Compact { .. } => "/v3/kv/compaction",
            Op::Grant { .. } => "/v3/lease/grant",
            Op::Revoke { .. } => "/v3/lease/revoke",
            Op::TimeToLive { .. } => "/v3/kv/lease/timetolive",
            Op::Leases => "/v3/lease/leases",
        }
    }

    fn json(&self, st: Style, side: usize, leases: &Leases) -> Value {
        match self {
            Op::Put {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            } => J::new(st)
                .bytes("key", key)
                .bytes("value", value)
                .int("lease", lease.id(side, leases))
                .flag("prev_kv", *prev_kv)
                .flag("ignore_value", *ignore_value)
                .flag("ignore_lease", *ignore_lease)
                .done(),
            Op::Range(r) => J::new(st)
                .bytes("key", &r.key)
                .bytes("range_end", &r.range_end)
                .int("limit", r.limit)
                .int("revision", r.revision)
                .enumeration("sort_order", SORT_ORDERS, r.sort_order)
                .enumeration("sort_target", SORT_TARGETS, r.sort_target)
                .flag("serializable", r.serializable)
                .flag("keys_only", r.keys_only)
                .flag("count_only", r.count_only)
                .int("min_mod_revision", r.min_mod)
                .int("max_mod_revision", r.max_mod)
                .int("min_create_revision", r.min_create)
                .int("max_create_revision", r.max_create)
                .done(),
            Op::Delete {
                key,
                range_end,
                prev_kv,
            } => J::new(st)
                .bytes("key", key)
                .bytes("range_end", range_end)
                .flag("prev_kv", *prev_kv)
                .done(),
            Op::Txn {
                compare,
                success,
                failure,
            } => {
                let cmps: Vec<Value> = compare
                    .iter()
                    .map(|c| {
                        // A oneof member is always written (its presence selects it).
                        let any = Style { zeros: true, ..st };
                        let j = J::new(st)
                            .enumeration("result", CMP_RESULTS, c.result)
                            .enumeration("target", CMP_TARGETS, c.target)
                            .bytes("key", &c.key)
                            .bytes("range_end", &c.range_end);
                        let member = J::new(any);
                        let member = match &c.value {
                            CmpValue::Version(n) => member.int("version", *n),
                            CmpValue::Create(n) => member.int("create_revision", *n),
                            CmpValue::Mod(n) => member.int("mod_revision", *n),
                            CmpValue::Value(v) => member.bytes("value", v),
                            CmpValue::Lease(l) => member.int("lease", l.id(side, leases)),
                        };
                        let mut map = j.map;
                        map.extend(member.map);
                        Value::Object(map)
                    })
                    .collect();
                let ops = |ops: &[Op]| -> Vec<Value> {
                    ops.iter()
                        .map(|op| {
                            let (name, v) = match op {
                                Op::Put { .. } => ("request_put", op.json(st, side, leases)),
                                Op::Range(_) => ("request_range", op.json(st, side, leases)),
                                Op::Delete { .. } => {
                                    ("request_delete_range", op.json(st, side, leases))
                                }
                                _ => ("request_txn", op.json(st, side, leases)),
                            };
                            J::new(st).set(name, v).done()
                        })
                        .collect()
                };
                let mut j = J::new(st);
                if !cmps.is_empty() || st.zeros {
                    j = j.set("compare", Value::Array(cmps));
                }
                if !success.is_empty() || st.zeros {
                    j = j.set("success", Value::Array(ops(success)));
                }
                if !failure.is_empty() || st.zeros {
                    j = j.set("failure", Value::Array(ops(failure)));
                }
                j.done()
            }
            Op::Compact { revision, physical } => J::new(st)
                .int("revision", *revision)
                .flag("physical", *physical)
                .done(),
            Op::Grant { ttl, id } => J::new(st)
                .int("TTL", *ttl)
                .int("ID", id.id(side, leases))
                .done(),
            Op::Revoke { id } => J::new(st).int("ID", id.id(side, leases)).done(),
            Op::TimeToLive { id, keys } => J::new(st)
                .int("ID", id.id(side, leases))
                .flag("keys", *keys)
                .done(),
            Op::Leases => json!({}),
        }
    }

    fn has_delete(&self) -> bool {
        match self {
            Op::Delete { .. } => true,
            Op::Txn {
                success, failure, ..
            } => success.iter().chain(failure).any(Op::has_delete),
            _ => false,
        }
    }

    /// etcd 3.4 crashes on an `ignore_*` put after a delete of its key in the same txn (see
    /// tests/tests/randomized.rs), so txns with deletes carry no `ignore_*` puts.
    fn drop_ignore_flags(&mut self) {
        match self {
            Op::Put {
                ignore_value,
                ignore_lease,
                ..
            } => {
                *ignore_value = false;
                *ignore_lease = false;
            }
            Op::Txn {
                success, failure, ..
            } => {
                for op in success.iter_mut().chain(failure.iter_mut()) {
                    op.drop_ignore_flags();
                }
            }
            _ => {}
        }
    }
}

fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().expect("non-empty") = last + 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

struct Gen {
    rng: Rng,
    rev: i64,
    compacted: i64,
    /// Leases granted so far (their indexes are `LeaseRef::Known`).
    granted: usize,
}

impl Gen {
    fn key(&mut self) -> Vec<u8> {
        match self.rng.u64(..100) {
            0..=84 => self.rng.pick(PUT_KEYS).to_vec(),
            85..=97 => self.rng.pick(OTHER_KEYS).to_vec(),
            _ => Vec::new(),
        }
    }

    fn put_key(&mut self) -> Vec<u8> {
        if self.rng.chance(0.02) {
            return Vec::new();
        }
        self.rng.pick(PUT_KEYS).to_vec()
    }

    fn key_range(&mut self) -> (Vec<u8>, Vec<u8>) {
        let key = self.key();
        let end = match self.rng.u64(..100) {
            0..=34 => Vec::new(),
            35..=54 => prefix_end(&key),
            55..=64 => vec![0],
            65..=69 => return (vec![0], vec![0]),
            _ => self.key(),
        };
        (key, end)
    }

    fn revision(&mut self) -> i64 {
        if self.rng.chance(0.6) {
            return 0;
        }
        match self.rng.u64(..10) {
            0 => -1,
            1 => self.rev + 1 + self.rng.u64(..2) as i64,
            2 => (self.compacted - self.rng.u64(..2) as i64).max(1),
            _ => self.rng.i64(self.compacted.max(1)..=self.rev),
        }
    }

    fn small_rev(&mut self) -> i64 {
        self.rng.i64(0..=self.rev + 1)
    }

    fn maybe_rev(&mut self) -> i64 {
        if self.rng.chance(0.1) {
            self.small_rev()
        } else {
            0
        }
    }

    fn lease(&mut self) -> LeaseRef {
        if self.granted > 0 && self.rng.chance(0.2) {
            LeaseRef::Known(self.rng.u64(..self.granted as u64) as usize)
        } else if self.rng.chance(0.02) {
            LeaseRef::Raw(self.rng.i64(1..=1000))
        } else {
            LeaseRef::None
        }
    }

    fn range(&mut self, in_txn: bool) -> RangeOp {
        let (key, range_end) = self.key_range();
        let sorted = self.rng.chance(0.5);
        RangeOp {
            key,
            range_end,
            limit: match self.rng.u64(..10) {
                0..=4 => 0,
                5 => -1,
                _ => self.rng.i64(1..=4),
            },
            revision: if in_txn && self.rng.chance(0.7) {
                0
            } else {
                self.revision()
            },
            sort_order: if sorted {
                self.rng.i64(0..=2) as i32
            } else {
                0
            },
            sort_target: if sorted {
                self.rng.i64(0..=4) as i32
            } else {
                0
            },
            serializable: self.rng.chance(0.2),
            keys_only: self.rng.chance(0.2),
            count_only: self.rng.chance(0.15),
            min_mod: self.maybe_rev(),
            max_mod: self.maybe_rev(),
            min_create: self.maybe_rev(),
            max_create: self.maybe_rev(),
        }
    }

    fn put(&mut self) -> Op {
        let ignore_value = self.rng.chance(0.1);
        Op::Put {
            key: self.put_key(),
            value: if ignore_value && !self.rng.chance(0.1) {
                Vec::new()
            } else {
                self.rng.pick(VALUES).to_vec()
            },
            lease: self.lease(),
            prev_kv: self.rng.chance(0.5),
            ignore_value,
            ignore_lease: self.rng.chance(0.1),
        }
    }

    fn delete(&mut self) -> Op {
        let (key, range_end) = self.key_range();
        Op::Delete {
            key,
            range_end,
            prev_kv: self.rng.chance(0.5),
        }
    }

    fn compare(&mut self) -> CompareOp {
        let target = self.rng.i64(0..=4) as i32;
        let mut value = match target {
            0 => CmpValue::Version(self.rng.i64(0..=4)),
            1 => CmpValue::Create(self.small_rev()),
            2 => CmpValue::Mod(self.small_rev()),
            3 => CmpValue::Value(self.rng.pick(VALUES).to_vec()),
            _ => CmpValue::Lease(match self.lease() {
                LeaseRef::None => LeaseRef::Raw(0),
                l => l,
            }),
        };
        if self.rng.chance(0.03) {
            value = CmpValue::Version(self.rng.i64(0..=2));
        }
        let key = self.rng.pick(PUT_KEYS).to_vec();
        let range_end = match self.rng.u64(..10) {
            0 => prefix_end(&key),
            1 => vec![0],
            2 => self.rng.pick(PUT_KEYS).to_vec(),
            _ => Vec::new(),
        };
        CompareOp {
            result: self.rng.i64(0..=3) as i32,
            target,
            key,
            range_end,
            value,
        }
    }

    fn txn(&mut self, depth: u32) -> Op {
        let compare = (0..self.rng.u64(..4)).map(|_| self.compare()).collect();
        let n_success = self.rng.u64(..5);
        let n_failure = self.rng.u64(..4);
        let success = (0..n_success).map(|_| self.txn_op(depth)).collect();
        let failure = (0..n_failure).map(|_| self.txn_op(depth)).collect();
        Op::Txn {
            compare,
            success,
            failure,
        }
    }

    fn txn_op(&mut self, depth: u32) -> Op {
        match self.rng.u64(..100) {
            0..=34 => Op::Range(self.range(true)),
            35..=69 => self.put(),
            70..=89 => self.delete(),
            _ if depth < 2 => self.txn(depth + 1),
            _ => Op::Range(self.range(true)),
        }
    }

    fn step(&mut self) -> Op {
        match self.rng.u64(..100) {
            0..=24 => self.put(),
            25..=49 => Op::Range(self.range(false)),
            50..=59 => self.delete(),
            60..=79 => {
                let mut t = self.txn(0);
                if t.has_delete() {
                    t.drop_ignore_flags();
                }
                t
            }
            80..=82 => Op::Compact {
                revision: self.compacted - 1
                    + self.rng.u64(..((self.rev - self.compacted) / 3 + 3) as u64) as i64,
                physical: self.rng.chance(0.5),
            },
            83..=88 => Op::Grant {
                // Long enough never to expire during the test (expiry time is not compared).
                ttl: if self.rng.chance(0.03) {
                    9_000_000_001
                } else {
                    self.rng.i64(3600..=100_000)
                },
                id: if self.rng.chance(0.6) {
                    LeaseRef::Raw(self.rng.i64(1..=40))
                } else {
                    LeaseRef::None
                },
            },
            89..=91 => Op::Revoke {
                id: match self.lease() {
                    LeaseRef::None => LeaseRef::Raw(self.rng.i64(1..=40)),
                    l => l,
                },
            },
            92..=96 => Op::TimeToLive {
                id: match self.lease() {
                    LeaseRef::None => LeaseRef::Raw(self.rng.i64(1..=40)),
                    l => l,
                },
                keys: self.rng.chance(0.5),
            },
            _ => Op::Leases,
        }
    }

    fn style(&mut self) -> Style {
        Style {
            camel: self.rng.chance(0.3),
            int_numbers: self.rng.chance(0.4),
            enum_numbers: self.rng.chance(0.3),
            zeros: self.rng.chance(0.15),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_json_history_answers_as_etcd() {
    let seed_guard = Seed::from_env("randomized_json_history_answers_as_etcd");
    let seed = seed_guard.value();
    let steps: usize = std::env::var("HEARTH_STEPS")
        .ok()
        .map(|s| s.parse().expect("HEARTH_STEPS is a number"))
        .unwrap_or(500);
    println!("gateway randomized history: {steps} steps");
    let mut p = Pair::start().await;
    let mut g = Gen {
        rng: seed_guard.rng(),
        rev: 1,
        compacted: 0,
        granted: 0,
    };
    for step in 0..steps {
        let op = g.step();
        let st = g.style();
        let bodies = [0, 1].map(|side| op.json(st, side, &p.leases).to_string());
        let path = op.path();
        let [mut e, mut h] = p
            .send_each("POST", path, [bodies[0].as_str(), bodies[1].as_str()], &[])
            .await;
        match &op {
            Op::Grant { id, .. } if e.status == 200 && h.status == 200 => {
                let id_of = |raw: &str| -> i64 {
                    serde_json::from_str::<Value>(raw)
                        .ok()
                        .and_then(|v| v.get("ID")?.as_str()?.parse().ok())
                        .unwrap_or(0)
                };
                let ids = match id {
                    LeaseRef::Raw(n) => [*n, *n],
                    _ => {
                        // Read the IDs from the raw answers (normalisation left them as they
                        // were, being unknown until now).
                        [id_of(&e.body), id_of(&h.body)]
                    }
                };
                p.leases.0.push(ids);
                g.granted += 1;
                e.body = normalize(&e.body, 0, &p.leases);
                h.body = normalize(&h.body, 1, &p.leases);
            }
            Op::TimeToLive { .. } => {
                align_remaining_ttl(&mut e.body, &mut h.body);
                sort_lease_keys(&mut e.body);
                sort_lease_keys(&mut h.body);
            }
            _ => {}
        }
        assert_eq!(
            e,
            h,
            "seed {seed}, step {step}: POST {path}\n  etcd request:   {}\n  hearth request: {}\n  etcd:   {e:?}\n  hearth: {h:?}",
            bodies[0],
            bodies[1]
        );
        if let Some(r) = header_revision(&e.body) {
            g.rev = g.rev.max(r);
        }
        if let Op::Compact { revision, .. } = op {
            if e.status == 200 {
                g.compacted = revision;
            }
        }
    }
    // The whole key space at the end.
    let all = json!({"key": b64(b"\0"), "range_end": b64(b"\0")}).to_string();
    p.same("/v3/kv/range", &all).await;
    println!(
        "gateway randomized history: {steps} steps equal, last revision {}, {} leases",
        g.rev, g.granted
    );
}

// ---------------------------------------------------------------------------------------------
// Watch over /v3/watch with curl.

/// `curl --no-buffer` posting `body` to `/v3/watch`; its output lines as they arrive.
struct CurlWatch {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl CurlWatch {
    fn start(port: u16, body: &str) -> CurlWatch {
        let mut child = tokio::process::Command::new("curl")
            .args([
                "--silent",
                "--no-buffer",
                "-X",
                "POST",
                "--data-binary",
                body,
                &format!("http://127.0.0.1:{port}/v3/watch"),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn curl");
        let stdout = child.stdout.take().expect("curl stdout");
        CurlWatch {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next line (one streamed response); fails the test if none comes in time.
    async fn line(&mut self) -> String {
        match tokio::time::timeout(DEADLINE, self.lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            other => panic!("no watch response from curl: {other:?}"),
        }
    }
}

impl Drop for CurlWatch {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The watch scenario against one server; returns its transcript (normalised lines).
async fn watch_transcript(server: &Server) -> Vec<String> {
    let port = port_of(server);
    let mut conn = Conn::new(port);
    let leases = Leases::default();
    let mut out = Vec::new();
    let mut record = |side_line: String| out.push(normalize(&side_line, 0, &leases));
    let put = |k: &[u8], v: &[u8]| json!({"key": b64(k), "value": b64(v)}).to_string();

    let mut w = CurlWatch::start(
        port,
        &json!({"create_request": {"key": b64(b"k/"), "range_end": b64(b"k0"), "prev_kv": true}})
            .to_string(),
    );
    record(w.line().await);
    // Each event arrives before the next write is made: the stream is live.
    assert_eq!(
        conn.post("/v3/kv/put", &put(b"k/1", b"one")).await.status,
        200
    );
    record(w.line().await);
    assert_eq!(
        conn.post("/v3/kv/put", &put(b"k/1", b"two")).await.status,
        200
    );
    record(w.line().await);
    assert_eq!(
        conn.post(
            "/v3/kv/deleterange",
            &json!({"key": b64(b"k/1")}).to_string()
        )
        .await
        .status,
        200
    );
    record(w.line().await);
    // A compaction does not disturb a live watcher.
    let head = header_revision(&conn.post("/v3/kv/put", &put(b"other", b"x")).await.body)
        .expect("revision");
    let compacted = conn
        .post(
            "/v3/kv/compaction",
            &json!({"revision": head.to_string(), "physical": true}).to_string(),
        )
        .await;
    assert_eq!(compacted.status, 200, "{compacted:?}");
    assert_eq!(
        conn.post("/v3/kv/put", &put(b"k/2", b"three")).await.status,
        200
    );
    record(w.line().await);
    // A watcher from a compacted revision is canceled with the compaction's revision.
    let mut old = CurlWatch::start(
        port,
        &json!({"create_request": {"key": b64(b"k/"), "range_end": b64(b"k0"), "start_revision": 2}})
            .to_string(),
    );
    record(old.line().await);
    record(old.line().await);
    // A progress request, a second watcher with a client-chosen ID, and its cancellation, on one
    // stream; then an event for both watchers of that stream.
    let mut multi = CurlWatch::start(
        port,
        &[
            json!({"create_request": {"key": b64(b"k/2")}}),
            json!({"create_request": {"key": b64(b"k/"), "range_end": b64(b"k0"), "watch_id": "7", "filters": ["NODELETE"]}}),
            json!({"progress_request": {}}),
        ]
        .iter()
        .map(Value::to_string)
        .collect::<String>(),
    );
    for _ in 0..3 {
        record(multi.line().await);
    }
    assert_eq!(
        conn.post(
            "/v3/kv/deleterange",
            &json!({"key": b64(b"k/2")}).to_string()
        )
        .await
        .status,
        200
    );
    record(w.line().await);
    record(multi.line().await);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_over_json_streams_live_events_across_a_compaction_as_etcd() {
    let etcd = Server::start(Kind::Etcd).await;
    let hearth = Server::start(Kind::Hearth).await;
    let want = watch_transcript(&etcd).await;
    let got = watch_transcript(&hearth).await;
    for (i, (e, h)) in want.iter().zip(&got).enumerate() {
        assert_eq!(e, h, "watch line {i}\n  etcd:   {e}\n  hearth: {h}");
    }
    assert_eq!(want.len(), got.len());
    // The transcript holds what it should: events with prev_kv, the compaction cancel.
    assert!(
        want.iter().any(|l| l.contains("\"prev_kv\":{")),
        "{want:#?}"
    );
    assert!(
        want.iter().any(|l| l.contains("\"compact_revision\":\"")),
        "{want:#?}"
    );
}

/// A JSON watcher that stops reading costs the server no more than a slow gRPC watcher: writes go
/// on, the watcher is handed to the watch service's slow-watcher handling, and memory stays
/// bounded. The bound is Hearth's own: etcd 3.4, run with `HEARTH_TEST_TARGET=etcd`, buffers for
/// the stalled watcher and fails it (about 230 MiB here, against about 120 MiB for Hearth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_json_watcher_does_not_hold_up_writes() {
    let hearth = Server::start(Kind::Hearth).await;
    let port = port_of(&hearth);
    // A client that sends a watch request and never reads a byte of the answer.
    let body =
        json!({"create_request": {"key": b64(b"s/"), "range_end": b64(b"s0"), "prev_kv": true}})
            .to_string();
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stalled
        .write_all(
            format!(
                "POST /v3/watch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .expect("send watch request");
    // A reader that keeps up, on the same keys: it reads every event as it comes.
    let writes: i64 = 384;
    let last = format!("\"mod_revision\":\"{}\"", writes + 1);
    let mut live = CurlWatch::start(port, &body);
    live.line().await;
    let reader = tokio::spawn(async move {
        loop {
            if live.line().await.contains(&last) {
                return;
            }
        }
    });

    // 48 MiB of values (96 MiB of events with prev_kv, more as JSON), far beyond any buffer.
    let value = vec![b'v'; 128 * 1024];
    let mut conn = Conn::new(port);
    let mut peak_kib = 0;
    for i in 0..writes {
        let put = json!({"key": b64(format!("s/{}", i % 8).as_bytes()), "value": b64(&value)})
            .to_string();
        let r = tokio::time::timeout(DEADLINE, conn.post("/v3/kv/put", &put))
            .await
            .unwrap_or_else(|_| panic!("put {i} held up by the stalled watcher"));
        assert_eq!(r.status, 200, "put {i}: {r:?}");
        if i % 32 == 0 {
            peak_kib = peak_kib.max(hearth.rss_kib().unwrap_or(0));
        }
    }
    peak_kib = peak_kib.max(hearth.rss_kib().unwrap_or(0));
    // The reader that keeps up saw the last write.
    reader.await.expect("live reader");
    println!(
        "stalled JSON watcher: peak VmRSS {} MiB, slow watchers {:?}",
        peak_kib / 1024,
        hearth.metric("etcd_debugging_mvcc_slow_watcher_total")
    );
    assert!(peak_kib > 0, "could not read the server's VmRSS");
    assert!(
        peak_kib / 1024 < 160,
        "server VmRSS reached {} MiB while a JSON watcher was stalled",
        peak_kib / 1024
    );
    // The stall reached the watch service, whose slow-watcher handling took over.
    assert!(
        hearth
            .metric("etcd_debugging_mvcc_slow_watcher_total")
            .unwrap_or(0.0)
            >= 1.0,
        "the stalled watcher was never slow"
    );
    drop(stalled);
}

// ---------------------------------------------------------------------------------------------
// Leases through JSON only.

/// Posts a keep-alive stream of `n` requests for `id`; returns the streamed lines.
async fn keepalive(conn: &mut Conn, id: i64, n: usize) -> String {
    let body: String = (0..n)
        .map(|_| json!({"ID": id.to_string()}).to_string())
        .collect();
    conn.post("/v3/lease/keepalive", &body).await.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grant_keepalive_and_expiry_through_json_as_etcd() {
    let mut p = Pair::start().await;
    // A TTL below the minimum is raised to it; the ID is the client's.
    let granted = p
        .same("/v3/lease/grant", r#"{"TTL":"1","ID":"4241"}"#)
        .await;
    assert!(granted.body.contains("\"ID\":\"4241\""), "{granted:?}");
    p.same("/v3/lease/revoke", r#"{"ID":"4241"}"#).await;
    p.same("/v3/lease/grant", r#"{"TTL":"5","ID":"4242"}"#)
        .await;
    p.leases.0.push([4242, 4242]);
    p.same(
        "/v3/kv/put",
        &json!({"key": b64(b"leased"), "value": b64(b"v"), "lease": "4242"}).to_string(),
    )
    .await;
    // Three keep-alives in one streamed request: three streamed answers, each one line.
    let mut ka = Vec::new();
    for side in 0..2 {
        let raw = keepalive(&mut p.conns[side], 4242, 3).await;
        let lines: Vec<String> = raw.lines().map(|l| normalize(l, side, &p.leases)).collect();
        assert_eq!(lines.len(), 3, "side {side}: {raw}");
        ka.push(lines);
    }
    assert_eq!(ka[0], ka[1]);
    let [mut e, mut h] = p
        .send("POST", "/v3/lease/timetolive", r#"{"ID":4242,"keys":true}"#)
        .await;
    align_remaining_ttl(&mut e.body, &mut h.body);
    assert_eq!(e, h);
    assert!(
        e.body
            .contains(&format!("\"keys\":[\"{}\"]", b64(b"leased"))),
        "{e:?}"
    );

    // Expiry: wait until both have revoked it. (Hearth may report the lease gone a moment before
    // the revision that deleted its key is in the header; the answers are compared once both
    // have settled.)
    poll::eventually(
        "the lease to expire on both servers",
        DEADLINE,
        async || {
            let [e, h] = p
                .send("POST", "/v3/lease/timetolive", r#"{"ID":"4242"}"#)
                .await;
            if e.body.contains("\"TTL\":\"-1\"") && e == h {
                Ok(())
            } else {
                Err(format!("{e:?} {h:?}"))
            }
        },
    )
    .await;
    // An expired lease answers as etcd's does, everywhere.
    p.same("/v3/kv/range", &json!({"key": b64(b"leased")}).to_string())
        .await;
    p.same("/v3/lease/revoke", r#"{"ID":"4242"}"#).await;
    p.same(
        "/v3/kv/put",
        &json!({"key": b64(b"leased"), "value": b64(b"w"), "lease": 4242}).to_string(),
    )
    .await;
    p.same("/v3/lease/leases", "{}").await;
    let mut after = Vec::new();
    for side in 0..2 {
        let raw = keepalive(&mut p.conns[side], 4242, 1).await;
        after.push(normalize(&raw, side, &p.leases));
    }
    assert_eq!(after[0], after[1]);
    assert!(
        !after[0].contains("\"TTL\""),
        "an expired lease keeps TTL 0: {after:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input, routing, every route.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_etcds_status_and_body_and_changes_nothing() {
    let mut p = Pair::start().await;
    p.same(
        "/v3/kv/put",
        &json!({"key": b64(b"foo"), "value": b64(b"bar")}).to_string(),
    )
    .await;
    let before = p
        .same("/v3/kv/range", &json!({"key": b64(b"foo")}).to_string())
        .await;
    let big = |n: usize| json!({"key": b64(b"foo"), "value": b64(&vec![b'x'; n])}).to_string();
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "POST",
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"YmFy""#.into(),
        ),
        (
            "POST",
            "/v3/kv/put",
            r#"{"key":"Zm9v!","value":"YmFy"}"#.into(),
        ),
        (
            "POST",
            "/v3/kv/put",
            r#"{"key":"Zm9vYg","value":"YmFy"}"#.into(),
        ),
        (
            "POST",
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"-_8="}"#.into(),
        ),
        ("POST", "/v3/kv/put", r#"{"key":"Zm9v","value":5}"#.into()),
        ("POST", "/v3/kv/put", r#"{"key":"Zm9v","lease":"x"}"#.into()),
        ("POST", "/v3/kv/put", r#"{"key":"Zm9v","lease":1.5}"#.into()),
        (
            "POST",
            "/v3/kv/put",
            r#"{"key":"Zm9v","prev_kv":"true"}"#.into(),
        ),
        ("POST", "/v3/kv/put", r#"["key"]"#.into()),
        ("POST", "/v3/kv/put", "{bad".into()),
        ("POST", "/v3/kv/put", "\"Zm9v\"".into()),
        ("POST", "/v3/kv/put", "{}".into()),
        ("POST", "/v3/kv/put", "".into()),
        (
            "POST",
            "/v3/kv/range",
            r#"{"key":"Zm9v","sort_order":"UP"}"#.into(),
        ),
        (
            "POST",
            "/v3/kv/range",
            r#"{"key":"Zm9v","revision":"99"}"#.into(),
        ),
        (
            "POST",
            "/v3/kv/range",
            r#"{"key":"Zm9v","limit":""}"#.into(),
        ),
        ("POST", "/v3/kv/range", "{\"key\":\"Zm9v\x01\"}".into()),
        (
            "POST",
            "/v3/kv/txn",
            r#"{"success":[{"request_put":{"key":5}}]}"#.into(),
        ),
        ("POST", "/v3/kv/txn", r#"{"compare":{}}"#.into()),
        (
            "POST",
            "/v3/kv/deleterange",
            r#"{"key":"Zm9v","range_end":true}"#.into(),
        ),
        ("POST", "/v3/watch", "{bad".into()),
        ("POST", "/v3/lease/keepalive", r#"{"ID":"x"}"#.into()),
        ("POST", "/v3/lease/grant", r#"{"TTL":"9000000001"}"#.into()),
        ("POST", "/v3/lease/revoke", r#"{"ID":"1"}"#.into()),
        // etcd's request limit: a value over --max-request-bytes, and a message over the gRPC
        // limit.
        ("POST", "/v3/kv/put", big(1600 * 1024)),
        ("POST", "/v3/kv/put", big(2200 * 1024)),
        // Routing.
        ("POST", "/v3/kv/nope", "{}".into()),
        ("POST", "/v3/nope", "{}".into()),
        ("POST", "/v3/kv/range/", "{}".into()),
        ("POST", "/v3/kv/range:get", "{}".into()),
        ("POST", "/v3alpha/kv/range", "{}".into()),
        ("POST", "/nope", "{}".into()),
        ("POST", "/v3//kv/range", "{}".into()),
        ("GET", "/v3/kv/./range", "".into()),
        ("POST", "/v3", "{}".into()),
        ("POST", "/v3/", "{}".into()),
        ("GET", "/v3/kv/range", "".into()),
        (
            "PUT",
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"YmF6"}"#.into(),
        ),
        ("DELETE", "/v3/kv/deleterange", r#"{"key":"Zm9v"}"#.into()),
        ("GET", "/v3/watch", "".into()),
        ("OPTIONS", "/v3/kv/put", "".into()),
    ];
    for (method, path, body) in &cases {
        let [e, h] = p.send(method, path, body).await;
        let shown = if body.len() > 200 { &body[..200] } else { body };
        assert_eq!(
            e, h,
            "{method} {path} {shown}\n  etcd:   {e:?}\n  hearth: {h:?}"
        );
    }
    // Nothing was applied, not even in part.
    let after = p
        .same("/v3/kv/range", &json!({"key": b64(b"foo")}).to_string())
        .await;
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_served_and_answers_as_etcd() {
    let mut p = Pair::start().await;
    let key = b64(b"k");
    p.same(
        "/v3/kv/put",
        &json!({"key": key, "value": b64(b"v")}).to_string(),
    )
    .await;
    p.same("/v3/lease/grant", r#"{"TTL":"600","ID":"5"}"#).await;
    p.leases.0.push([5, 5]);
    // (path, body, compared with etcd's answer).
    let routes: Vec<(&str, String, bool)> = vec![
        ("/v3/kv/range", json!({"key": key}).to_string(), true),
        ("/v3beta/kv/range", json!({"key": key}).to_string(), true),
        ("/v3/kv/put", json!({"key": key, "value": b64(b"w"), "prev_kv": true}).to_string(), true),
        ("/v3/kv/txn", json!({"success": [{"request_range": {"key": key}}]}).to_string(), true),
        ("/v3/kv/deleterange", json!({"key": b64(b"none")}).to_string(), true),
        ("/v3/kv/compaction", json!({"revision": "1"}).to_string(), true),
        ("/v3/lease/timetolive", r#"{"ID":"77"}"#.into(), true),
        ("/v3/kv/lease/timetolive", r#"{"ID":"77"}"#.into(), true),
        ("/v3/lease/leases", "{}".into(), true),
        ("/v3/kv/lease/leases", "{}".into(), true),
        ("/v3/lease/revoke", r#"{"ID":"77"}"#.into(), true),
        ("/v3/kv/lease/revoke", r#"{"ID":"77"}"#.into(), true),
        ("/v3/lease/keepalive", r#"{"ID":"5"}"#.into(), true),
        ("/v3/lease/grant", r#"{"TTL":"600","ID":"6"}"#.into(), true),
        ("/v3/lock/lock", json!({"name": b64(b"l"), "lease": "5"}).to_string(), true),
        ("/v3/lock/unlock", json!({"key": b64(b"l/5")}).to_string(), true),
        ("/v3/election/campaign", json!({"name": b64(b"e"), "lease": "5", "value": b64(b"x")}).to_string(), true),
        ("/v3/election/leader", json!({"name": b64(b"e")}).to_string(), true),
        ("/v3/election/observe", json!({"name": b64(b"e")}).to_string(), true),
        ("/v3/election/proclaim", json!({"leader": {"name": b64(b"e"), "key": b64(b"e/5"), "rev": "9", "lease": "5"}, "value": b64(b"y")}).to_string(), true),
        ("/v3/election/resign", json!({"leader": {"name": b64(b"e"), "key": b64(b"e/5"), "rev": "9", "lease": "5"}}).to_string(), true),
        ("/v3/maintenance/transfer-leadership", r#"{"targetID":"5"}"#.into(), true),
        // An empty message: no header.
        ("/v3/maintenance/defragment", "{}".into(), true),
        // Answers that differ by nature or by design (sizes, hashes, versions, random member
        // IDs), or whose service Hearth does not serve yet (auth): only their routing is checked.
        ("/v3/maintenance/status", "{}".into(), false),
        ("/v3/maintenance/hash", "{}".into(), false),
        ("/v3/maintenance/alarm", "{}".into(), false),
        ("/v3/cluster/member/list", "{}".into(), false),
        ("/v3/cluster/member/update", r#"{"ID":"1"}"#.into(), true),
        ("/v3/cluster/member/remove", r#"{"ID":"1"}"#.into(), true),
        ("/v3/cluster/member/promote", r#"{"ID":"1"}"#.into(), true),
        ("/v3/cluster/member/add", r#"{"peerURLs":["http://127.0.0.1:1"],"isLearner":true}"#.into(), false),
        ("/v3/auth/enable", "{}".into(), false),
        ("/v3/auth/disable", "{}".into(), false),
        ("/v3/auth/authenticate", r#"{"name":"u","password":"p"}"#.into(), false),
        ("/v3/auth/user/add", r#"{"name":"u","password":"p"}"#.into(), false),
        ("/v3/auth/user/get", r#"{"name":"u"}"#.into(), false),
        ("/v3/auth/user/list", "{}".into(), false),
        ("/v3/auth/user/changepw", r#"{"name":"u","password":"q"}"#.into(), false),
        ("/v3/auth/user/grant", r#"{"user":"u","role":"r"}"#.into(), false),
        ("/v3/auth/user/revoke", r#"{"name":"u","role":"r"}"#.into(), false),
        ("/v3/auth/user/delete", r#"{"name":"u"}"#.into(), false),
        ("/v3/auth/role/add", r#"{"name":"r"}"#.into(), false),
        ("/v3/auth/role/get", r#"{"role":"r"}"#.into(), false),
        ("/v3/auth/role/list", "{}".into(), false),
        ("/v3/auth/role/grant", r#"{"name":"r","perm":{"permType":"READ","key":"aw=="}}"#.into(), false),
        ("/v3/auth/role/revoke", r#"{"role":"r","key":"aw=="}"#.into(), false),
        ("/v3/auth/role/delete", r#"{"role":"r"}"#.into(), false),
    ];
    for (path, body, compared) in &routes {
        let [e, h] = if path.ends_with("/observe") {
            // A stream that never ends on its own: its first response is compared.
            let mut out = Vec::new();
            for side in 0..2 {
                let mut r = tokio::time::timeout(DEADLINE, p.conns[side].first_line(path, body))
                    .await
                    .unwrap_or_else(|_| panic!("no observe answer from side {side}"));
                r.body = normalize(&r.body, side, &p.leases);
                out.push(r);
            }
            [out.remove(0), out.remove(0)]
        } else {
            p.send("POST", path, body).await
        };
        // Unrouted is Go's plain-text 404 or 405; a JSON 404 is a service's NotFound.
        assert!(
            !h.content_type.starts_with("text/plain"),
            "POST {path}: not routed by Hearth: {h:?}"
        );
        if *compared {
            assert_eq!(e, h, "POST {path} {body}\n  etcd:   {e:?}\n  hearth: {h:?}");
        }
    }
    // The snapshot route streams the database as `{"result":{"blob":...}}` lines.
    let snap = Conn::new(port_of(&p.hearth))
        .post("/v3/maintenance/snapshot", "{}")
        .await;
    assert_eq!(snap.status, 200);
    assert!(
        snap.body.lines().count() >= 2 && snap.body.lines().all(|l| l.starts_with("{\"result\":{")),
        "{}",
        &snap.body[..snap.body.len().min(300)]
    );
}
