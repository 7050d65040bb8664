//! Maintenance end to end: the NOSPACE alarm (side by side with etcd), online defragmentation
//! under load, snapshots saved with etcdctl and restored with hearthutl, Hash and MoveLeader.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hearth_tests::ctl::Ctl;
use hearth_tests::poll;
use hearth_tests::server::hearthutl_bin;
use hearth_tests::{Kind, Options, Server};

const DEADLINE: Duration = Duration::from_secs(60);

fn ctl(s: &Server, args: &[&str]) -> Ctl {
    Ctl::from_output(&s.etcdctl(args))
}

fn status_json(s: &Server) -> serde_json::Value {
    let c = ctl(s, &["endpoint", "status", "-w", "json"]);
    assert!(c.ok(), "{c:?}");
    let v: serde_json::Value = serde_json::from_str(c.stdout.trim()).unwrap();
    v[0]["Status"].clone()
}

fn db_size(s: &Server) -> u64 {
    status_json(s)["dbSize"].as_u64().unwrap()
}

fn member_id(s: &Server) -> u64 {
    status_json(s)["header"]["member_id"].as_u64().unwrap()
}

/// The NOSPACE scenario, with what each step printed (member ids and endpoints replaced).
fn nospace_transcript(s: &Server) -> Vec<(String, Ctl)> {
    let id = member_id(s).to_string();
    let hex_id = format!("{:x}", member_id(s));
    let ep = s.endpoint();
    let ep_host = ep.trim_start_matches("http://").to_string();
    let mut out = Vec::new();
    let mut step = |name: &str, c: Ctl| {
        let scrub = |t: &str| {
            t.replace(&id, "<member>")
                .replace(&hex_id, "<member>")
                .replace(&ep, "<endpoint>")
                .replace(&ep_host, "<endpoint>")
        };
        let c = Ctl {
            code: c.code,
            stdout: scrub(&c.stdout),
            errors: c.errors.iter().map(|e| scrub(e)).collect(),
        };
        out.push((name.to_string(), c));
    };

    // Fill until the quota refuses a put.
    let value = "v".repeat(100_000);
    let mut failed = None;
    for i in 0..200 {
        let c = ctl(s, &["put", &format!("fill/{i:04}"), &value]);
        if !c.ok() {
            failed = Some(c);
            break;
        }
    }
    let failed = failed.expect("the quota never refused a put");
    step("put over quota", failed);
    step("put again", ctl(s, &["put", "small", "x"]));
    step("alarm list", ctl(s, &["alarm", "list"]));
    let st = status_json(s);
    step(
        "status errors",
        Ctl {
            code: Some(0),
            stdout: serde_json::to_string(&st["errors"]).unwrap(),
            errors: vec![],
        },
    );
    step(
        "txn with a put",
        Ctl::from_output(&s.etcdctl_stdin(&["txn"], "\nput small x\n\n")),
    );
    step(
        "get",
        ctl(
            s,
            &[
                "get",
                "fill/0000",
                "--print-value-only=false",
                "--keys-only",
            ],
        ),
    );
    // How many keys fit differs between the two engines; that a delete works does not.
    let mut del = ctl(s, &["del", "fill/", "--prefix"]);
    if del.stdout.trim().parse::<u64>().is_ok_and(|n| n > 0) {
        del.stdout = "<count>\n".into();
    }
    step("delete", del);
    let rev = status_json(s)["header"]["revision"].as_i64().unwrap();
    let mut compact = ctl(s, &["compact", &rev.to_string(), "--physical"]);
    compact.stdout = compact.stdout.replace(&rev.to_string(), "<rev>");
    step("compact", compact);
    step("defrag", ctl(s, &["defrag"]));
    step("alarm disarm", ctl(s, &["alarm", "disarm"]));
    step("alarm list after disarm", ctl(s, &["alarm", "list"]));
    step("put after disarm", ctl(s, &["put", "small", "x"]));
    out
}

#[tokio::test]
async fn nospace_alarm_caps_writes_until_compact_defrag_disarm_like_etcd() {
    let quota = Options {
        args: vec!["--quota-backend-bytes=1500000".into()],
        ..Default::default()
    };
    let hearth = Server::start_with(Kind::Hearth, quota).await;
    let etcd = Server::start_with(
        Kind::Etcd,
        Options {
            args: vec!["--quota-backend-bytes=1500000".into()],
            ..Default::default()
        },
    )
    .await;
    let h = nospace_transcript(&hearth);
    let e = nospace_transcript(&etcd);
    for ((name, hc), (_, ec)) in h.iter().zip(&e) {
        assert_eq!(hc, ec, "step {name:?}: hearth vs etcd");
    }
    assert_eq!(h.len(), e.len());

    // What the transcript shows, spelled out.
    let get = |n: &str| &h.iter().find(|(s, _)| s == n).unwrap().1;
    assert_eq!(
        get("put over quota").errors,
        vec!["Error: etcdserver: mvcc: database space exceeded".to_string()]
    );
    assert_eq!(
        get("alarm list").stdout,
        "memberID:<member> alarm:NOSPACE \n"
    );
    assert_eq!(
        get("status errors").stdout,
        "[\"memberID:<member> alarm:NOSPACE \"]"
    );
    assert!(get("get").ok() && get("delete").ok());
    assert_eq!(get("put after disarm").stdout, "OK\n");
    // Defragmented below the quota again.
    assert!(db_size(&hearth) < 1_500_000);
    assert!(status_json(&hearth)["errors"].is_null());
}

#[tokio::test]
async fn defrag_serves_requests_while_copying_and_loses_no_acknowledged_write() {
    // The defragmentation pauses in its copy phase (armed from the start) until the failpoint
    // file re-arms the point.
    let hold_dir = tempfile::tempdir().unwrap();
    let failpoints = hold_dir.path().join("failpoints");
    let s = Server::start_with(
        Kind::Hearth,
        Options {
            env: vec![
                ("HEARTH_FAILPOINTS".into(), "defragBeforeCopy=pause".into()),
                (
                    "HEARTH_FAILPOINTS_FILE".into(),
                    failpoints.display().to_string(),
                ),
            ],
            ..Default::default()
        },
    )
    .await;
    let mut c = s.client().await;
    // A sizeable database, mostly garbage after a delete and a physical compaction.
    let value = "x".repeat(2000);
    for i in 0..3000 {
        c.put(format!("big/{i:05}"), value.clone(), None)
            .await
            .unwrap();
    }
    let del = c
        .delete(
            "big/00300",
            Some(etcd_client::DeleteOptions::new().with_range("big/99999")),
        )
        .await
        .unwrap();
    let rev = del.header().unwrap().revision();
    c.compact(
        rev,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    let size_before = c.status().await.unwrap().db_size();

    let mut dc = s.client().await;
    let defrag = tokio::spawn(async move { dc.defragment().await });
    poll::eventually("the defrag to reach its copy phase", DEADLINE, async || {
        s.log()
            .contains("failpoint defragBeforeCopy pauses until it is re-armed")
    })
    .await;

    // A writer that runs across the whole defragmentation, recording what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let mut wc = s.client().await;
    let stop2 = stop.clone();
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0u32;
        while !stop2.load(Ordering::SeqCst) {
            let k = format!("load/{i:06}");
            if wc.put(k.clone(), format!("v{i}"), None).await.is_ok() {
                acked.push((k, format!("v{i}")));
            }
            i += 1;
        }
        acked
    });

    // Requests issued while the copy is held complete while it is still held.
    for i in 0..100 {
        let k = format!("during/{i:04}");
        c.put(k.clone(), format!("d{i}"), None).await.unwrap();
        let got = c.get(k, None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), format!("d{i}").as_bytes());
        c.delete(format!("big/{i:05}"), None).await.unwrap();
    }
    assert!(!defrag.is_finished(), "the defrag was released by nobody");

    std::fs::write(&failpoints, "defragBeforeCopy=off").unwrap();
    defrag.await.unwrap().expect("defragment failed");
    // Keep writing a little after the swap too.
    let count = |c: &mut etcd_client::Client| {
        let mut c = c.clone();
        async move {
            c.get(
                "load/",
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_count_only(),
                ),
            )
            .await
            .unwrap()
            .count()
        }
    };
    let after_swap = count(&mut c).await;
    poll::eventually("the writer to go on after the swap", DEADLINE, async || {
        let now = count(&mut c).await;
        if now >= after_swap + 20 {
            Ok(())
        } else {
            Err(format!("{now} keys written, {after_swap} at the swap"))
        }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let acked = writer.await.unwrap();
    assert!(
        acked.len() as i64 > after_swap,
        "the writer never wrote after the swap"
    );

    // Nothing acknowledged was lost, and the file shrank.
    for (k, v) in &acked {
        let got = c.get(k.as_str(), None).await.unwrap();
        assert_eq!(got.kvs().len(), 1, "{k} lost");
        assert_eq!(got.kvs()[0].value(), v.as_bytes());
    }
    for i in 0..100 {
        let got = c.get(format!("during/{i:04}"), None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), format!("d{i}").as_bytes());
        let gone = c.get(format!("big/{i:05}"), None).await.unwrap();
        assert!(gone.kvs().is_empty());
    }
    let big = c
        .get(
            "big/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(big.count(), 200);
    let size_after = c.status().await.unwrap().db_size();
    assert!(size_after < size_before, "{size_before} -> {size_after}");
    // The size Status reports is the file now at the path, as the disk holds it (its length
    // may be larger: redb leaves the tail it grew into a hole), and what is in use fits in it.
    let db_file = s.data_dir().join("member").join("snap").join("db");
    let mut sc = c.clone();
    poll::eventually(
        "Status dbSize to be the file's size on disk",
        DEADLINE,
        async || {
            let st = sc.status().await.unwrap();
            let meta = std::fs::metadata(&db_file).unwrap();
            let on_disk = backend::disk_size(&meta) as i64;
            if st.db_size() == on_disk && st.raft_used_db_size() <= st.db_size() {
                Ok(())
            } else {
                Err(format!(
                    "dbSize {} dbSizeInUse {}, file {} bytes on disk, {} long",
                    st.db_size(),
                    st.raft_used_db_size(),
                    on_disk,
                    meta.len()
                ))
            }
        },
    )
    .await;

    // And it is all still there after a crash and restart on the new file.
    drop(c);
    let mut s = s;
    s.kill9();
    s.restart().await;
    let mut c = s.client().await;
    let (k, v) = acked.last().unwrap();
    assert_eq!(
        c.get(k.as_str(), None).await.unwrap().kvs()[0].value(),
        v.as_bytes()
    );
}

fn hearthutl(args: &[&str]) -> std::process::Output {
    Command::new(hearthutl_bin())
        .args(args)
        .output()
        .expect("run hearthutl")
}

fn snapshot_status(file: &Path) -> serde_json::Value {
    let o = hearthutl(&["snapshot", "status", file.to_str().unwrap(), "-w", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test]
async fn snapshot_save_status_restore_and_continue() {
    let s = Server::start(Kind::Hearth).await;
    let mut c = s.client().await;
    for i in 0..50 {
        c.put(format!("k/{i:03}"), format!("a{i}"), None)
            .await
            .unwrap();
    }
    for i in 0..10 {
        c.put(format!("k/{i:03}"), format!("b{i}"), None)
            .await
            .unwrap();
    }
    c.delete("k/049", None).await.unwrap();
    let before = c
        .get("k/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let rev = before.header().unwrap().revision();
    assert_eq!(rev, 62);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    let o = s.etcdctl(&["snapshot", "save", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("Snapshot saved at {}\n", file.display())
    );

    let st = snapshot_status(&file);
    assert_eq!(st["revision"], rev);
    // One record per revision after the first, plus the consistent index, the term, the Raft
    // configuration, the one member and the auth revision (written at start, as etcd does).
    assert_eq!(st["totalKey"], (rev - 1 + 5));
    assert_eq!(
        st["totalSize"].as_u64().unwrap() + 32,
        std::fs::metadata(&file).unwrap().len()
    );
    let table = hearthutl(&["snapshot", "status", file.to_str().unwrap(), "-w", "table"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("| TOTAL KEYS |"));

    // Corrupt copies are refused by restore with a clear error.
    let bytes = std::fs::read(&file).unwrap();
    let flipped = dir.path().join("flipped.db");
    let mut f = bytes.clone();
    f[bytes.len() / 2] ^= 0x01;
    std::fs::write(&flipped, &f).unwrap();
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1000]).unwrap();
    for (bad, msg) in [(&flipped, "expected sha256"), (&truncated, "missing hash")] {
        let o = hearthutl(&[
            "snapshot",
            "restore",
            bad.to_str().unwrap(),
            "--data-dir",
            dir.path().join("never").to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "restore accepted {}", bad.display());
        assert!(err.contains(msg), "{}: {err}", bad.display());
    }
    // Status, like etcd's, reads the database and not the checksum: it answers as etcd's does
    // for the flipped byte, and refuses a file cut short of its pages.
    let f = flipped.to_str().unwrap();
    let (ours, etcds) = (
        hearthutl(&["snapshot", "status", f, "-w", "json"]),
        hearth_tests::server::etcdctl("127.0.0.1:1", &["snapshot", "status", f, "-w", "json"], ""),
    );
    assert_eq!(
        ours.status.success(),
        etcds.status.success(),
        "hearthutl: {}, etcdctl: {}",
        String::from_utf8_lossy(&ours.stderr),
        String::from_utf8_lossy(&etcds.stderr)
    );
    if ours.status.success() {
        let json = |o: &std::process::Output| -> serde_json::Value {
            serde_json::from_slice(&o.stdout).unwrap()
        };
        assert_eq!(json(&ours), json(&etcds));
    }
    let o = hearthutl(&["snapshot", "status", truncated.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("truncated"), "{err}");
    assert!(!dir.path().join("never").exists());

    // Restore into a new member's data dir and start a new server from it.
    let file2 = file.clone();
    let restored = Server::start_with(
        Kind::Hearth,
        Options {
            prepare: Some(Box::new(move |data_dir: &Path| {
                let o = hearthutl(&[
                    "snapshot",
                    "restore",
                    file2.to_str().unwrap(),
                    "--data-dir",
                    data_dir.to_str().unwrap(),
                    "--name",
                    "default",
                    "--initial-cluster",
                    "default=http://127.0.0.1:2380",
                    "--initial-cluster-token",
                    "restored-cluster",
                    "--initial-advertise-peer-urls",
                    "http://127.0.0.1:2380",
                ]);
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            })),
            ..Default::default()
        },
    )
    .await;
    let mut rc = restored.client().await;
    let after = rc
        .get("k/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(after.header().unwrap().revision(), rev);
    let strip = |r: &etcd_client::GetResponse| -> Vec<String> {
        r.kvs()
            .iter()
            .map(|kv| {
                format!(
                    "{:?}={:?} create={} mod={} version={}",
                    kv.key(),
                    kv.value(),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version()
                )
            })
            .collect()
    };
    assert_eq!(strip(&after), strip(&before));
    // A new cluster: new ids.
    assert_ne!(
        after.header().unwrap().cluster_id(),
        before.header().unwrap().cluster_id()
    );
    let put = rc.put("k/new", "n", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), rev + 1);
    let old = rc
        .get(
            "k/000",
            Some(etcd_client::GetOptions::new().with_revision(11)),
        )
        .await
        .unwrap();
    assert_eq!(
        old.kvs()[0].value(),
        b"a0",
        "history before the snapshot is kept"
    );
}

#[tokio::test]
async fn hash_and_move_leader() {
    let h = Server::start(Kind::Hearth).await;
    let e = Server::start(Kind::Etcd).await;
    for s in [&h, &e] {
        let id = format!("{:x}", member_id(s));
        let ok = ctl(s, &["move-leader", &id]);
        assert_eq!(
            ok.stdout,
            format!("Leadership transferred from {id} to {id}\n"),
            "{:?}",
            s.kind()
        );
        let bad = ctl(s, &["move-leader", "1234"]);
        assert_eq!(
            bad.errors,
            vec!["Error: etcdserver: bad leader transferee".to_string()],
            "{:?}",
            s.kind()
        );
    }
    let mut c = h.client().await;
    c.put("a", "1", None).await.unwrap();
    let h1 = c.hash().await.unwrap().hash();
    assert_eq!(c.hash().await.unwrap().hash(), h1, "hash is stable");
    c.put("a", "2", None).await.unwrap();
    assert_ne!(c.hash().await.unwrap().hash(), h1, "hash sees a write");
}
