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

/// Writes the same history on any server. The `key` bucket ends up with several hundred
/// records (several bbolt pages and a branch level), one value larger than a page, tombstones
/// from single and range deletes, and a txn's several changes at one revision.
async fn write_history(c: &mut Client, with_auth: bool) -> History {
    for i in 0..300 {
        c.put(format!("bulk/{i:04}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    let l1 = c.lease_grant(3600, None).await.expect("grant").id();
    let l2 = c.lease_grant(7200, None).await.expect("grant").id();
    for (k, l) in [("leased/a", l1), ("leased/b", l1), ("leased/c", l2)] {
        c.put(k, "held", Some(PutOptions::new().with_lease(l)))
            .await
            .expect("put with lease");
    }
    for i in 0..150 {
        c.put(format!("bulk/{i:04}"), format!("w{i}"), None)
            .await
            .expect("overwrite");
    }
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
    for i in 0..40 {
        c.put(format!("after/{i:02}"), format!("a{i}"), None)
            .await
            .expect("put");
    }
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
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
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

/// A single Hearth member restored from `file` by `hearthutl snapshot restore`.
async fn hearth_from(file: &Path) -> Server {
    let file = file.to_path_buf();
    Server::start_with(
        Kind::Hearth,
        Options {
            prepare: Some(Box::new(move |data_dir: &Path| {
                ok(
                    hearthutl(&[
                        "snapshot",
                        "restore",
                        file.to_str().expect("utf-8 path"),
                        "--data-dir",
                        data_dir.to_str().expect("utf-8 path"),
                        "--name",
                        "default",
                        "--initial-cluster",
                        "default=http://127.0.0.1:2380",
                        "--initial-advertise-peer-urls",
                        "http://127.0.0.1:2380",
                        "--initial-cluster-token",
                        "migrated",
                    ]),
                    "hearthutl snapshot restore",
                );
            })),
            ..Default::default()
        },
    )
    .await
}

/// A single etcd 3.4 member restored from `file` by `etcdctl snapshot restore`.
async fn etcd_from(file: &Path) -> Server {
    let file = file.to_path_buf();
    Server::start_with(
        Kind::Etcd,
        Options {
            prepare: Some(Box::new(move |data_dir: &Path| {
                ok(
                    etcdctl_offline(&[
                        "snapshot",
                        "restore",
                        file.to_str().expect("utf-8 path"),
                        "--data-dir",
                        data_dir.to_str().expect("utf-8 path"),
                        "--name",
                        "default",
                        "--initial-cluster",
                        "default=http://127.0.0.1:2380",
                        "--initial-advertise-peer-urls",
                        "http://127.0.0.1:2380",
                        "--initial-cluster-token",
                        "migrated",
                    ]),
                    "etcdctl snapshot restore",
                );
            })),
            ..Default::default()
        },
    )
    .await
}

fn snapshot_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// The users and roles etcd holds (names, and the reader role's permissions).
async fn auth_of(c: &mut Client) -> (Vec<String>, Vec<String>, Vec<String>) {
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

/// etcd → `etcdctl snapshot save` → `hearthutl snapshot restore` → Hearth answers as etcd did;
/// then Hearth → `etcdctl snapshot save` → `etcdctl snapshot restore` → etcd has it all again,
/// users and roles included (Hearth carries the auth buckets byte for byte).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_history_moves_to_hearth_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = Server::start(Kind::Etcd).await;
    let mut ec = etcd.client().await;
    let h = write_history(&mut ec, true).await;
    let from_etcd = snapshot_path(&dir, "from-etcd.db");
    save(&etcd, &from_etcd);
    let want = observe(&mut ec, h).await;
    let want_auth = auth_of(&mut ec).await;
    assert!(want.ranges.len() > 40 && want.leases.len() == 2, "{h:?}");
    drop(ec);
    drop(etcd);
    assert_status_agrees(&from_etcd, h.head);

    let hearth = hearth_from(&from_etcd).await;
    let mut hc = hearth.client().await;
    assert_same(
        "Hearth restored from etcd",
        &observe(&mut hc, h).await,
        &want,
    );
    // The store goes on from the same revision.
    let next = hc.put("new", "write", None).await.expect("put");
    assert_eq!(next.header().expect("header").revision(), h.head + 1);

    let from_hearth = snapshot_path(&dir, "from-hearth.db");
    save(&hearth, &from_hearth);
    assert_status_agrees(&from_hearth, h.head + 1);
    let back = etcd_from(&from_hearth).await;
    let mut bc = back.client().await;
    // Every revision up to the old head as etcd first had it; the new write is there too.
    assert_same(
        "etcd restored from Hearth",
        &observe(&mut bc, h).await,
        &want,
    );
    assert_eq!(auth_of(&mut bc).await, want_auth);
    let got = bc.get("new", None).await.expect("get");
    assert_eq!(got.kvs()[0].mod_revision(), h.head + 1);
}

/// Hearth → `etcdctl snapshot save` against Hearth → `etcdctl snapshot status` and `etcdctl
/// snapshot restore` (etcd 3.4) → etcd serves the same data at the same revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearth_history_moves_to_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hearth = Server::start(Kind::Hearth).await;
    let mut hc = hearth.client().await;
    let h = write_history(&mut hc, false).await;
    let file = snapshot_path(&dir, "from-hearth.db");
    save(&hearth, &file);
    let want = observe(&mut hc, h).await;
    drop(hc);
    drop(hearth);
    assert_status_agrees(&file, h.head);

    let etcd = etcd_from(&file).await;
    let mut ec = etcd.client().await;
    assert_same(
        "etcd restored from Hearth",
        &observe(&mut ec, h).await,
        &want,
    );
    let next = ec.put("new", "write", None).await.expect("put");
    assert_eq!(next.header().expect("header").revision(), h.head + 1);
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
    let etcd = Server::start(Kind::Etcd).await;
    let mut ec = etcd.client().await;
    let h = write_history(&mut ec, true).await;
    let file = snapshot_path(&dir, "from-etcd.db");
    save(&etcd, &file);
    let start = h.compacted + 1;
    let want_events = watch_events(&mut ec, start, h.head).await;
    let want_hash = hash_kv(&mut ec, h.head).await;
    drop(ec);
    drop(etcd);

    let file_arg = file.to_str().expect("utf-8 path").to_string();
    let c = Cluster::start_prepared(Kind::Hearth, 3, &[], |spec, data_dir| {
        let peer = format!("http://127.0.0.1:{}", spec.peer);
        ok(
            hearthutl(&[
                "snapshot",
                "restore",
                &file_arg,
                "--data-dir",
                data_dir.to_str().expect("utf-8 path"),
                "--name",
                &spec.name,
                "--initial-cluster",
                &spec.initial_cluster,
                "--initial-cluster-token",
                &spec.token,
                "--initial-advertise-peer-urls",
                &peer,
            ]),
            "hearthutl snapshot restore",
        );
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
