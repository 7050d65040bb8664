//! Moving between etcd and Hearth through etcd's snapshot file, both ways: the same history of
//! writes (puts, overwrites, deletes, a txn, a compaction, leases with attached keys, and on etcd
//! users and roles), saved with `etcdctl snapshot save`, restored with `hearthutl snapshot
//! restore` or `etcdctl snapshot restore` (etcd 3.4), and then every Range at every revision
//! from the compaction point to the head, HashKV at the head and the leases compared with the
//! server that wrote them. Also: a 3-member Hearth cluster restored from an etcd snapshot takes
//! writes and serves a watcher that starts at a revision from before the migration.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, EventType, GetOptions,
    LeaseTimeToLiveOptions, Permission, PutOptions, Txn, TxnOp, WatchOptions,
};
use hearth_tests::server::{etcdctl, hearthutl_bin};
use hearth_tests::{Cluster, Kind, Options, Server};

const DEADLINE: Duration = Duration::from_secs(60);

/// What a history left behind.
#[derive(Debug, Clone, Copy)]
struct History {
    compacted: i64,
    head: i64,
}

/// Puts each `(key, value)` in turn.
async fn put_all(c: &mut Client, kvs: impl IntoIterator<Item = (String, String)>) {
    for (k, v) in kvs {
        c.put(k.as_str(), v, None)
            .await
            .unwrap_or_else(|e| panic!("put {k}: {e}"));
    }
}

/// Writes the same history on any server. The `key` bucket ends up with several hundred
/// records (several bbolt pages and a branch level), one value larger than a page, tombstones
/// from single and range deletes, and a txn's several changes at one revision.
async fn write_history(c: &mut Client, with_auth: bool) -> History {
    put_all(
        c,
        (0..300).map(|i| (format!("bulk/{i:04}"), format!("v{i}"))),
    )
    .await;
    let l1 = c.lease_grant(3600, None).await.expect("grant").id();
    let l2 = c.lease_grant(7200, None).await.expect("grant").id();
    for (k, l) in [("leased/a", l1), ("leased/b", l1), ("leased/c", l2)] {
        c.put(k, "held", Some(PutOptions::new().with_lease(l)))
            .await
            .expect("put with lease");
    }
    put_all(
        c,
        (0..150).map(|i| (format!("bulk/{i:04}"), format!("w{i}"))),
    )
    .await;
    c.delete(
        "bulk/0100",
        Some(DeleteOptions::new().with_range("bulk/0200")),
    )
    .await
    .expect("range delete");
    let txn = Txn::new()
        .when([Compare::version("bulk/0000", CompareOp::Greater, 0)])
        .and_then([
            TxnOp::put("txn/1", "one", None),
            TxnOp::put("txn/2", "two", None),
            TxnOp::delete("bulk/0250", None),
        ])
        .or_else([TxnOp::put("txn/never", "x", None)]);
    assert!(c.txn(txn).await.expect("txn").succeeded());
    c.put("big", vec![b'x'; 10_000], None)
        .await
        .expect("big put");
    let compacted = c
        .put("mid", "point", None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision()
        - 40;
    c.compact(compacted, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    put_all(
        c,
        (0..40).map(|i| (format!("after/{i:02}"), format!("a{i}"))),
    )
    .await;
    c.delete("leased/b", None).await.expect("delete");
    c.put("bulk/0001", "again", None).await.expect("put");
    if with_auth {
        c.user_add("alice", "secret", None).await.expect("user add");
        c.role_add("reader").await.expect("role add");
        c.role_grant_permission("reader", Permission::read("bulk/").with_prefix())
            .await
            .expect("grant permission");
        c.user_grant_role("alice", "reader")
            .await
            .expect("grant role");
    }
    let head = c
        .get("big", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    History { compacted, head }
}

/// `(key, value, create revision, mod revision, version, lease)`.
type Kv = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);

/// Every key at every revision in `from..=to`, and what a Range just below `from` answers.
async fn ranges(c: &mut Client, from: i64, to: i64) -> (String, Vec<(i64, Vec<Kv>)>) {
    let below = match c
        .get(
            "",
            Some(GetOptions::new().with_all_keys().with_revision(from - 1)),
        )
        .await
    {
        Ok(_) => "served".to_string(),
        Err(e) => e.to_string(),
    };
    let mut out = Vec::new();
    for rev in from..=to {
        let r = c
            .get(
                "",
                Some(GetOptions::new().with_all_keys().with_revision(rev)),
            )
            .await
            .unwrap_or_else(|e| panic!("range at {rev}: {e}"));
        let kvs = r
            .kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key().to_vec(),
                    kv.value().to_vec(),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version(),
                    kv.lease(),
                )
            })
            .collect();
        out.push((rev, kvs));
    }
    (below, out)
}

async fn hash_kv(c: &mut Client, rev: i64) -> (u32, i64) {
    let r = c.hash_kv(rev).await.expect("hash kv");
    (r.hash(), r.compact_version())
}

/// Every lease: `(id, granted TTL, attached keys)`.
async fn leases(c: &mut Client) -> Vec<(i64, i64, Vec<Vec<u8>>)> {
    let ids: Vec<i64> = c
        .leases()
        .await
        .expect("leases")
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    let mut out = Vec::new();
    for id in ids {
        let t = c
            .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .expect("time to live");
        assert!(
            t.ttl() > 0 && t.ttl() <= t.granted_ttl(),
            "lease {id}: {t:?}"
        );
        let mut keys = t.keys().to_vec();
        keys.sort();
        out.push((id, t.granted_ttl(), keys));
    }
    out.sort();
    out
}

/// What one server holds, as the comparisons need it.
#[derive(Debug, PartialEq)]
struct Observed {
    below: String,
    ranges: Vec<(i64, Vec<Kv>)>,
    hash: (u32, i64),
    leases: Vec<(i64, i64, Vec<Vec<u8>>)>,
}

async fn observe(c: &mut Client, h: History) -> Observed {
    let (below, ranges) = ranges(c, h.compacted, h.head).await;
    Observed {
        below,
        ranges,
        hash: hash_kv(c, h.head).await,
        leases: leases(c).await,
    }
}

/// A new write on `c` gets revision `rev`: the store goes on where the snapshot left off.
async fn assert_next_write_at(c: &mut Client, rev: i64) {
    let next = c.put("new", "write", None).await.expect("put");
    assert_eq!(next.header().expect("header").revision(), rev);
}

fn assert_same(what: &str, got: &Observed, want: &Observed) {
    assert_eq!(got.below, want.below, "{what}: range below the compaction");
    assert_eq!(got.ranges.len(), want.ranges.len(), "{what}: revisions");
    for ((rev, g), (_, w)) in got.ranges.iter().zip(&want.ranges) {
        assert_eq!(g, w, "{what}: range at revision {rev}");
    }
    assert_eq!(got.hash, want.hash, "{what}: HashKV at the head");
    assert_eq!(got.leases, want.leases, "{what}: leases");
}

fn ok(o: Output, what: &str) -> String {
    hearth_tests::ctl::succeeded(&o, what)
}

fn hearthutl(args: &[&str]) -> Output {
    std::process::Command::new(hearthutl_bin())
        .args(args)
        .output()
        .expect("run hearthutl")
}

/// `etcdctl` commands that work on files (the endpoint is not used).
fn etcdctl_offline(args: &[&str]) -> Output {
    etcdctl("127.0.0.1:1", args, "")
}

fn save(s: &Server, file: &Path) {
    let o = s.etcdctl(&["snapshot", "save", file.to_str().expect("utf-8 path")]);
    ok(o, "etcdctl snapshot save");
}

/// A new `kind` server with the history written on it (users and roles too, `with_auth`), saved
/// to `file` with `etcdctl snapshot save`; the server, a client of it, and what was written.
async fn saved_history(kind: Kind, with_auth: bool, file: &Path) -> (Server, Client, History) {
    let s = Server::start(kind).await;
    let mut c = s.client().await;
    let h = write_history(&mut c, with_auth).await;
    save(&s, file);
    (s, c, h)
}

fn status_json(o: Output, what: &str) -> serde_json::Value {
    serde_json::from_str(&ok(o, what)).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `etcdctl snapshot status` and `hearthutl snapshot status` print the same figures.
fn assert_status_agrees(file: &Path, head: i64) {
    let f = file.to_str().expect("utf-8 path");
    let etcd = status_json(
        etcdctl_offline(&["snapshot", "status", f, "-w", "json"]),
        "etcdctl snapshot status",
    );
    let hearth = status_json(
        hearthutl(&["snapshot", "status", f, "-w", "json"]),
        "hearthutl snapshot status",
    );
    assert_eq!(hearth, etcd);
    assert_eq!(etcd["revision"], head);
    assert_eq!(
        etcd["totalSize"].as_u64().expect("size") + 32,
        std::fs::metadata(file).expect("file").len()
    );
}

/// `snapshot restore FILE` arguments for one member: its data dir, name, initial cluster,
/// advertised peer URL and cluster token.
struct Restore<'a> {
    file: &'a str,
    data_dir: &'a Path,
    name: &'a str,
    initial_cluster: &'a str,
    peer: &'a str,
    token: &'a str,
}

impl Restore<'_> {
    fn args(&self) -> Vec<&str> {
        vec![
            "snapshot",
            "restore",
            self.file,
            "--data-dir",
            self.data_dir.to_str().expect("utf-8 path"),
            "--name",
            self.name,
            "--initial-cluster",
            self.initial_cluster,
            "--initial-advertise-peer-urls",
            self.peer,
            "--initial-cluster-token",
            self.token,
        ]
    }

    /// `hearthutl snapshot restore`, which must succeed.
    fn with_hearthutl(&self) {
        ok(hearthutl(&self.args()), "hearthutl snapshot restore");
    }

    /// `etcdctl snapshot restore` (etcd 3.4), which must succeed.
    fn with_etcdctl(&self) {
        ok(etcdctl_offline(&self.args()), "etcdctl snapshot restore");
    }
}

/// A single member of `kind` restored from `file`: by `hearthutl snapshot restore` for Hearth,
/// by `etcdctl snapshot restore` for etcd 3.4.
async fn restored_from(kind: Kind, file: &Path) -> Server {
    let file = file.to_str().expect("utf-8 path").to_string();
    Server::start_with(
        kind,
        Options {
            prepare: Some(Box::new(move |data_dir: &Path| {
                let restore = Restore {
                    file: &file,
                    data_dir,
                    name: "default",
                    initial_cluster: "default=http://127.0.0.1:2380",
                    peer: "http://127.0.0.1:2380",
                    token: "migrated",
                };
                match kind {
                    Kind::Hearth => restore.with_hearthutl(),
                    Kind::Etcd => restore.with_etcdctl(),
                }
            })),
            ..Default::default()
        },
    )
    .await
}

fn snapshot_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// Users, roles, and the reader role's permissions.
type Auth = (Vec<String>, Vec<String>, Vec<String>);

/// The users and roles etcd holds (names, and the reader role's permissions).
async fn auth_of(c: &mut Client) -> Auth {
    let users = c.user_list().await.expect("user list").users().to_vec();
    let roles = c.role_list().await.expect("role list").roles().to_vec();
    let perms = c
        .role_get("reader")
        .await
        .expect("role get")
        .permissions()
        .iter()
        .map(|p| format!("{:?}", p))
        .collect();
    (users, roles, perms)
}

/// The history written on a new `kind` server and saved to `file`, after which the server is
/// gone: the history, what the server held of it, and its users and roles (`with_auth`). Both
/// tools' `snapshot status` of the file agree.
async fn moved_out(kind: Kind, with_auth: bool, file: &Path) -> (History, Observed, Option<Auth>) {
    let (server, mut c, h) = saved_history(kind, with_auth, file).await;
    let want = observe(&mut c, h).await;
    let auth = if with_auth {
        Some(auth_of(&mut c).await)
    } else {
        None
    };
    drop(c);
    drop(server);
    assert_status_agrees(file, h.head);
    (h, want, auth)
}

/// A `kind` server restored from `file`, and a client of it, after checking that it holds the
/// history `h` as the server that wrote it did (`want`).
async fn moved_in(kind: Kind, file: &Path, h: History, want: &Observed) -> (Server, Client) {
    let s = restored_from(kind, file).await;
    let mut c = s.client().await;
    let what = format!("{kind:?} restored from {}", file.display());
    assert_same(&what, &observe(&mut c, h).await, want);
    (s, c)
}

/// etcd → `etcdctl snapshot save` → `hearthutl snapshot restore` → Hearth answers as etcd did;
/// then Hearth → `etcdctl snapshot save` → `etcdctl snapshot restore` → etcd has it all again,
/// users and roles included (Hearth carries the auth buckets byte for byte).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_history_moves_to_hearth_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let from_etcd = snapshot_path(&dir, "from-etcd.db");
    let (h, want, want_auth) = moved_out(Kind::Etcd, true, &from_etcd).await;
    assert!(want.ranges.len() > 40 && want.leases.len() == 2, "{h:?}");

    let (hearth, mut hc) = moved_in(Kind::Hearth, &from_etcd, h, &want).await;
    assert_next_write_at(&mut hc, h.head + 1).await;

    let from_hearth = snapshot_path(&dir, "from-hearth.db");
    save(&hearth, &from_hearth);
    assert_status_agrees(&from_hearth, h.head + 1);
    // Every revision up to the old head as etcd first had it; the new write is there too.
    let (_back, mut bc) = moved_in(Kind::Etcd, &from_hearth, h, &want).await;
    assert_eq!(Some(auth_of(&mut bc).await), want_auth);
    let got = bc.get("new", None).await.expect("get");
    assert_eq!(got.kvs()[0].mod_revision(), h.head + 1);
}

/// Hearth → `etcdctl snapshot save` against Hearth → `etcdctl snapshot status` and `etcdctl
/// snapshot restore` (etcd 3.4) → etcd serves the same data at the same revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearth_history_moves_to_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = snapshot_path(&dir, "from-hearth.db");
    let (h, want, _) = moved_out(Kind::Hearth, false, &file).await;
    let (_etcd, mut ec) = moved_in(Kind::Etcd, &file, h, &want).await;
    // The store goes on from the same revision.
    assert_next_write_at(&mut ec, h.head + 1).await;
}

/// `snapshot status` of a stopped etcd member's `member/snap/db` (a bare database, no checksum
/// trailer) and of a copy with a wrong trailer: etcdctl reads both (it never looks at the
/// trailer), and hearthutl prints what it prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_an_etcd_members_db_agrees_with_etcdctl() {
    let mut etcd = Server::start(Kind::Etcd).await;
    let mut c = etcd.client().await;
    let h = write_history(&mut c, false).await;
    drop(c);
    // etcd holds the file locked while it runs.
    etcd.stop();
    let db = etcd.data_dir().join("member").join("snap").join("db");
    let dir = tempfile::tempdir().expect("tempdir");
    let bad_trailer = snapshot_path(&dir, "bad-trailer.db");
    let mut bytes = std::fs::read(&db).expect("read the member's db");
    bytes.extend_from_slice(&[0; 32]);
    std::fs::write(&bad_trailer, &bytes).expect("write");
    for file in [&db, &bad_trailer] {
        let f = file.to_str().expect("utf-8 path");
        let want = status_json(
            etcdctl_offline(&["snapshot", "status", f, "-w", "json"]),
            "etcdctl snapshot status",
        );
        let got = status_json(
            hearthutl(&["snapshot", "status", f, "-w", "json"]),
            "hearthutl snapshot status",
        );
        assert_eq!(got, want, "{f}");
        assert_eq!(want["revision"], h.head, "{f}");
    }
}

/// `(type, key, value, mod revision, create revision, version, lease)` of a watch event.
type Ev = (i32, Vec<u8>, Vec<u8>, i64, i64, i64, i64);

/// Events of a watch on every key from `start`, until one at revision `until` has arrived.
async fn watch_events(c: &mut Client, start: i64, until: i64) -> Vec<Ev> {
    let mut stream = c
        .watch(
            "",
            Some(
                WatchOptions::new()
                    .with_all_keys()
                    .with_start_revision(start),
            ),
        )
        .await
        .expect("watch");
    let mut out: Vec<Ev> = Vec::new();
    while out.last().is_none_or(|e| e.3 < until) {
        let r = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("watch events in time")
            .expect("watch stream")
            .expect("watch response");
        assert!(!r.canceled(), "watch canceled: {r:?}");
        for e in r.events() {
            let kv = e.kv().expect("event kv");
            out.push((
                match e.event_type() {
                    EventType::Put => 0,
                    EventType::Delete => 1,
                },
                kv.key().to_vec(),
                kv.value().to_vec(),
                kv.mod_revision(),
                kv.create_revision(),
                kv.version(),
                kv.lease(),
            ));
        }
    }
    out
}

/// A 3-member Hearth cluster restored from an etcd snapshot takes writes, and a watcher that
/// starts at a revision from before the migration gets etcd's events, then the new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearth_cluster_from_etcd_snapshot_serves_old_watchers_and_new_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = snapshot_path(&dir, "from-etcd.db");
    let (etcd, mut ec, h) = saved_history(Kind::Etcd, true, &file).await;
    let start = h.compacted + 1;
    let want_events = watch_events(&mut ec, start, h.head).await;
    let want_hash = hash_kv(&mut ec, h.head).await;
    drop(ec);
    drop(etcd);

    let file_arg = file.to_str().expect("utf-8 path").to_string();
    let c = Cluster::start_prepared(Kind::Hearth, 3, &[], |spec, data_dir| {
        let peer = format!("http://127.0.0.1:{}", spec.peer);
        Restore {
            file: &file_arg,
            data_dir,
            name: &spec.name,
            initial_cluster: &spec.initial_cluster,
            peer: &peer,
            token: &spec.token,
        }
        .with_hearthutl();
    })
    .await;
    let mut watcher = c.member(2).client().await;
    let mut stream_owner = c.member(1).client().await;
    let watching = tokio::spawn(async move { watch_events(&mut watcher, start, h.head + 2).await });
    stream_owner
        .put("after-migration", "1", None)
        .await
        .expect("put");
    stream_owner.delete("txn/1", None).await.expect("delete");
    let got = tokio::time::timeout(DEADLINE, watching)
        .await
        .expect("watcher finished")
        .expect("watcher task");
    assert_eq!(got[..want_events.len()], want_events[..]);
    let tail: Vec<(i32, &[u8], i64)> = got[want_events.len()..]
        .iter()
        .map(|e| (e.0, e.1.as_slice(), e.3))
        .collect();
    assert_eq!(
        tail,
        [
            (0, &b"after-migration"[..], h.head + 1),
            (1, &b"txn/1"[..], h.head + 2)
        ]
    );
    for i in 0..3 {
        let mut m = c.member(i).client().await;
        assert_eq!(hash_kv(&mut m, h.head).await, want_hash, "member {i}");
    }
    c.assert_hashkv_equal().await;
}
