//! etcd's storage and recovery flags on the real binary: `--force-new-cluster` (a member of a
//! cluster that lost its other members comes back alone with everything acknowledged, serves,
//! stays alone after a normal restart, and grows again with `member add`), `--wal-dir` (the WAL
//! lives there, not under the data dir, and a restart finds it), `--unsafe-no-fsync` (starts,
//! serves, survives a clean restart, and says it is unsafe) and `--max-wals`/`--max-snapshots`
//! accepted with their etcd values.

use std::path::Path;

use etcd_client::GetOptions;
use hearth_tests::cluster::{CONVERGE_DEADLINE, MEMBER_ADD_PATIENCE};
use hearth_tests::{poll, ports, Cluster, Kind, Options, Server};

const KEYS: usize = 40;

/// Keys under `k/` as (key, value), in key order; serializable reads if asked.
async fn keys(s: &Server, serializable: bool) -> Result<Vec<(String, String)>, String> {
    let mut c = hearth_tests::server::connect(&s.endpoint())
        .await
        .map_err(|e| e.to_string())?;
    let mut opts = GetOptions::new().with_prefix();
    if serializable {
        opts = opts.with_serializable();
    }
    let r = c.get("k/", Some(opts)).await.map_err(|e| e.to_string())?;
    Ok(r.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap_or_default().to_string(),
                kv.value_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

fn expected(n: usize) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = (0..n)
        .map(|i| (format!("k/{i:03}"), format!("v{i}")))
        .collect();
    v.sort();
    v
}

async fn member_ids(s: &Server) -> Vec<u64> {
    let mut c = s.client().await;
    let r = c.member_list().await.expect("member list");
    let mut ids: Vec<u64> = r.members().iter().map(|m| m.id()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_brings_one_member_back_alone_with_its_data() {
    let mut c = Cluster::start(3).await;
    let kind = c.kind();
    // Acknowledged writes, through every member.
    for i in 0..KEYS {
        let mut client = c.member(i % 3).client().await;
        client
            .put(format!("k/{i:03}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    let me = c.member_id(0).await;
    let cluster_id = {
        let mut client = c.member(0).client().await;
        let s = client.status().await.expect("status");
        s.header().expect("header").cluster_id()
    };
    let before = member_ids(c.member(0)).await;
    assert_eq!(before.len(), 3);

    // The whole cluster goes down; only member 0's data comes back, with the flag.
    for i in 0..3 {
        c.member_mut(i).stop();
    }
    let normal = c.member(0).args().to_vec();
    let mut forced = normal.clone();
    forced.push("--force-new-cluster".into());
    c.member_mut(0).set_args(forced);
    c.member_mut(0).restart().await;

    assert_eq!(keys(c.member(0), false).await.unwrap(), expected(KEYS));
    assert_eq!(member_ids(c.member(0)).await, [me], "the others are gone");
    {
        let mut client = c.member(0).client().await;
        let s = client.status().await.expect("status");
        assert_eq!(s.leader(), me, "it leads itself");
        let h = s.header().expect("header");
        assert_eq!((h.member_id(), h.cluster_id()), (me, cluster_id));
        client.put("k/after", "forced", None).await.expect("put");
    }
    if kind == Kind::Hearth {
        let log = c.member(0).log();
        assert!(log.contains("forcing restart member"), "{log}");
    }

    // A normal restart keeps it a cluster of one, with everything.
    c.member_mut(0).set_args(normal);
    c.member_mut(0).restart().await;
    let mut want = expected(KEYS);
    want.push(("k/after".into(), "forced".into()));
    want.sort();
    assert_eq!(keys(c.member(0), false).await.unwrap(), want);
    assert_eq!(member_ids(c.member(0)).await, [me]);

    // It grows again: a new member is added and catches up.
    let (client_port, peer_port) = (ports::reserve(), ports::reserve());
    let added = c
        .member_add(0, &peer_port.url(), false, MEMBER_ADD_PATIENCE)
        .await
        .expect("member add");
    let new = c.join("m3", client_port, peer_port).await;
    poll::eventually(
        "the new member to catch up",
        CONVERGE_DEADLINE,
        async || match keys(c.member(new), true).await {
            Ok(k) if k == want => Ok(()),
            Ok(k) => Err(format!("{} keys", k.len())),
            Err(e) => Err(e),
        },
    )
    .await;
    let mut both = vec![me, added];
    both.sort();
    // The new member lists itself once it applied its own addition, which came after the keys.
    c.assert_hashkv_equal().await;
    assert_eq!(member_ids(c.member(new)).await, both);
    c.member(new)
        .client()
        .await
        .put("k/grown", "yes", None)
        .await
        .expect("put through the new member");
    c.assert_hashkv_equal().await;
}

/// Names of the files in `dir` ending in `suffix`.
fn files(dir: &Path, suffix: &str) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(suffix))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_dir_holds_the_log_and_a_restart_finds_it() {
    let logs = tempfile::tempdir().unwrap();
    let wal_dir = logs.path().join("wal");
    let flag = format!("--wal-dir={}", wal_dir.display());
    let mut s = Server::start_with(Kind::Hearth, Options::with_args(&[&flag])).await;
    let mut c = s.client().await;
    for i in 0..KEYS {
        c.put(format!("k/{i:03}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    assert!(!files(&wal_dir, ".wal").is_empty(), "segments in --wal-dir");
    assert!(
        files(&s.data_dir().join("member").join("wal"), ".wal").is_empty(),
        "no WAL under the data dir"
    );
    s.restart().await;
    assert_eq!(keys(&s, false).await.unwrap(), expected(KEYS));
    s.client()
        .await
        .put("k/again", "x", None)
        .await
        .expect("put after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_no_fsync_serves_and_restarts() {
    let mut s = Server::start_with(
        Kind::Hearth,
        Options::with_args(&["--unsafe-no-fsync", "--max-wals=0", "--max-snapshots=1"]),
    )
    .await;
    let mut c = s.client().await;
    for i in 0..KEYS {
        c.put(format!("k/{i:03}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    // A clean stop loses nothing: the kernel has every write.
    s.restart().await;
    assert_eq!(keys(&s, false).await.unwrap(), expected(KEYS));
    if s.kind() == Kind::Hearth {
        let log = s.log();
        assert!(log.contains("are never fsynced"), "{log}");
    }
}
