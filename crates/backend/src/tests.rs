use super::*;

use std::io::Write as _;

/// A config under which nothing becomes durable unless asked for.
fn lazy() -> BackendConfig {
    BackendConfig {
        batch_interval: Duration::from_secs(3600),
        batch_limit: usize::MAX,
        ..BackendConfig::default()
    }
}

/// Copies the database file as it is on disk right now: what a crash at this moment would
/// leave behind (non-durable commits live only in memory until a durable commit).
fn crash_image(b: &Backend, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(b.path(), &dst).unwrap();
    dst
}

#[test]
fn buckets_exist_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
    let r = b.read().unwrap();
    for bucket in Bucket::ALL {
        assert_eq!(r.get(bucket, b"x").unwrap(), None, "{bucket}");
    }
    drop(r);
    let mut w = b.write().unwrap();
    w.put(Bucket::Key, b"a", b"1").unwrap();
    w.put(Bucket::Key, b"b", b"2").unwrap();
    w.put(Bucket::Meta, b"a", b"meta").unwrap();
    assert_eq!(
        w.get(Bucket::Key, b"a").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(w.ops(), 3);
    w.commit().unwrap();
    let r = b.read().unwrap();
    assert_eq!(
        r.get(Bucket::Key, b"a").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        r.get(Bucket::Meta, b"a").unwrap().as_deref(),
        Some(&b"meta"[..])
    );
    assert_eq!(r.get(Bucket::Lease, b"a").unwrap(), None);
}

#[test]
fn ranges_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
    let mut w = b.write().unwrap();
    for k in [b"a", b"b", b"c", b"d", b"e"] {
        w.put(Bucket::Key, k, k).unwrap();
    }
    w.commit().unwrap();
    let r = b.read().unwrap();
    let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(r.range(Bucket::Key, b"b", Some(b"d"), 0).unwrap()),
        vec![b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(keys(r.range(Bucket::Key, b"b", None, 0).unwrap()).len(), 4);
    assert_eq!(keys(r.range(Bucket::Key, b"a", None, 2).unwrap()).len(), 2);
    assert!(r
        .range(Bucket::Key, b"d", Some(b"b"), 0)
        .unwrap()
        .is_empty());
    assert!(r
        .range(Bucket::Key, b"b", Some(b"b"), 0)
        .unwrap()
        .is_empty());
    drop(r);

    let mut w = b.write().unwrap();
    assert!(w.delete(Bucket::Key, b"a").unwrap());
    assert!(!w.delete(Bucket::Key, b"zz").unwrap());
    assert_eq!(w.delete_range(Bucket::Key, b"c", Some(b"e")).unwrap(), 2);
    assert_eq!(w.delete_range(Bucket::Key, b"e", Some(b"c")).unwrap(), 0);
    assert_eq!(
        keys(w.range(Bucket::Key, b"", None, 0).unwrap()),
        vec![b"b".to_vec(), b"e".to_vec()]
    );
    w.commit().unwrap();
    let r = b.read().unwrap();
    assert_eq!(
        keys(r.range(Bucket::Key, b"", None, 0).unwrap()),
        vec![b"b".to_vec(), b"e".to_vec()]
    );
}

#[test]
fn snapshot_is_isolated_and_abort_discards() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
    let mut w = b.write().unwrap();
    w.put(Bucket::Key, b"k", b"v1").unwrap();
    w.commit().unwrap();

    let snap = b.read().unwrap();
    let mut w = b.write().unwrap();
    w.put(Bucket::Key, b"k", b"v2").unwrap();
    // Not committed yet: nobody else sees it.
    assert_eq!(
        b.read().unwrap().get(Bucket::Key, b"k").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    w.commit().unwrap();
    assert_eq!(
        snap.get(Bucket::Key, b"k").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(
        b.read().unwrap().get(Bucket::Key, b"k").unwrap().as_deref(),
        Some(&b"v2"[..])
    );

    let mut w = b.write().unwrap();
    w.put(Bucket::Key, b"k", b"v3").unwrap();
    drop(w);
    let mut w = b.write().unwrap();
    w.put(Bucket::Key, b"k", b"v4").unwrap();
    w.abort().unwrap();
    assert_eq!(
        b.read().unwrap().get(Bucket::Key, b"k").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
}

#[test]
fn non_durable_commits_are_lost_in_a_crash_until_force_commit() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(dir.path().join("db"), lazy()).unwrap();
    let mut w = b.write().unwrap();
    w.put(Bucket::Key, b"durable", b"1").unwrap();
    w.commit_durable().unwrap();
    assert_eq!(b.pending_commits(), 0);

    let mut w = b.write().unwrap();
    w.put(Bucket::Key, b"volatile", b"2").unwrap();
    let info = w.commit().unwrap();
    assert!(!info.durable);
    assert_eq!(b.pending_commits(), 1);
    // Visible at once ...
    assert!(b
        .read()
        .unwrap()
        .get(Bucket::Key, b"volatile")
        .unwrap()
        .is_some());
    // ... but not on disk.
    let img = crash_image(&b, dir.path(), "crash1");
    {
        let c = Backend::open(&img, lazy()).unwrap();
        let r = c.read().unwrap();
        assert!(r.get(Bucket::Key, b"durable").unwrap().is_some());
        assert_eq!(r.get(Bucket::Key, b"volatile").unwrap(), None);
    }

    b.force_commit().unwrap();
    assert_eq!(b.pending_commits(), 0);
    let img = crash_image(&b, dir.path(), "crash2");
    let c = Backend::open(&img, lazy()).unwrap();
    assert!(c
        .read()
        .unwrap()
        .get(Bucket::Key, b"volatile")
        .unwrap()
        .is_some());
}

#[test]
fn batch_limit_and_interval_trigger_durable_commits() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(
        dir.path().join("db"),
        BackendConfig {
            batch_interval: Duration::from_secs(3600),
            batch_limit: 3,
            ..BackendConfig::default()
        },
    )
    .unwrap();
    let put = |k: &[u8]| {
        let mut w = b.write().unwrap();
        w.put(Bucket::Key, k, b"v").unwrap();
        w.commit().unwrap().durable
    };
    assert!(!put(b"1"));
    assert!(!put(b"2"));
    assert!(put(b"3"), "third op reaches batch_limit");
    assert!(!put(b"4"));

    let dir2 = tempfile::tempdir().unwrap();
    let b2 = Backend::open(
        dir2.path().join("db"),
        BackendConfig {
            batch_interval: Duration::from_millis(30),
            batch_limit: usize::MAX,
            ..BackendConfig::default()
        },
    )
    .unwrap();
    let mut w = b2.write().unwrap();
    w.put(Bucket::Key, b"a", b"v").unwrap();
    assert!(!w.commit().unwrap().durable);
    assert!(!b2.commit_if_due().unwrap());
    // The interval passing on the backend's own clock is what is under test, and there is
    // nothing else to wait for: sleeping at least 40 ms passes the 30 ms interval for sure.
    std::thread::sleep(Duration::from_millis(40));
    let mut w = b2.write().unwrap();
    w.put(Bucket::Key, b"b", b"v").unwrap();
    assert!(w.commit().unwrap().durable, "interval elapsed");
    assert_eq!(b2.pending_commits(), 0);

    let mut w = b2.write().unwrap();
    w.put(Bucket::Key, b"c", b"v").unwrap();
    assert!(!w.commit().unwrap().durable);
    // As above: the interval passing is the behaviour under test.
    std::thread::sleep(Duration::from_millis(40));
    assert!(b2.commit_if_due().unwrap());
    assert_eq!(b2.pending_commits(), 0);
}

#[test]
fn a_volatile_commit_ignores_the_interval_but_not_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    // An interval of zero has always passed: every plain commit is durable.
    let b = Backend::open(
        dir.path().join("db"),
        BackendConfig {
            batch_interval: Duration::ZERO,
            batch_limit: 3,
            ..BackendConfig::default()
        },
    )
    .unwrap();
    let put = |k: &[u8], volatile: bool| {
        let mut w = b.write().unwrap();
        w.put(Bucket::Key, k, b"v").unwrap();
        let info = if volatile {
            w.commit_volatile()
        } else {
            w.commit()
        };
        info.unwrap().durable
    };
    assert!(put(b"1", false));
    assert!(!put(b"2", true));
    assert!(!put(b"3", true));
    assert_eq!(b.pending_commits(), 2);
    assert!(
        put(b"4", true),
        "third op since the last durable commit reaches batch_limit"
    );
    assert_eq!(b.pending_commits(), 0);
    assert!(!put(b"5", true));
    // The caller's timer makes it durable.
    assert!(b.commit_if_due().unwrap());
    assert_eq!(b.pending_commits(), 0);
}

#[test]
fn close_and_reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let b = Backend::open(&path, lazy()).unwrap();
    let mut w = b.write().unwrap();
    w.put(Bucket::Auth, b"k", b"v").unwrap();
    w.commit().unwrap();
    b.close().unwrap();
    let b = Backend::open(&path, lazy()).unwrap();
    assert!(b.read().unwrap().get(Bucket::Auth, b"k").unwrap().is_some());
    // A second handle on the same file is refused.
    assert!(Backend::open(&path, lazy()).is_err());
}

#[test]
fn size_and_size_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
    let empty_use = b.size_in_use().unwrap();
    let mut w = b.write().unwrap();
    let value = vec![7u8; 1000];
    for i in 0..2000u32 {
        w.put(Bucket::Key, &i.to_be_bytes(), &value).unwrap();
    }
    w.commit_durable().unwrap();
    let full_use = b.size_in_use().unwrap();
    assert!(full_use >= 2000 * 1000, "{full_use}");
    assert!(b.size().unwrap() >= full_use);
    let mut w = b.write().unwrap();
    w.delete_range(Bucket::Key, b"", None).unwrap();
    w.commit_durable().unwrap();
    let after = b.size_in_use().unwrap();
    assert!(after < full_use / 10, "{after} vs {full_use}");
    assert!(after <= empty_use + 4096 * 4);
}

#[test]
fn size_follows_the_file_through_commits_and_a_defrag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let b = Backend::open(&path, lazy()).unwrap();
    let on_disk = || disk_size(&std::fs::metadata(&path).unwrap());
    let empty = b.size().unwrap();
    assert_eq!(empty, on_disk());
    let value = vec![7u8; 1000];
    for round in 0..2u32 {
        let mut w = b.write().unwrap();
        for i in 0..2000u32 {
            w.put(Bucket::Key, &(round * 2000 + i).to_be_bytes(), &value)
                .unwrap();
        }
        // The first round's commit is not durable (the `lazy` config), the second is.
        if round == 0 {
            w.commit().unwrap();
        } else {
            w.commit_durable().unwrap();
        }
        assert_eq!(b.size().unwrap(), on_disk(), "after round {round}");
    }
    let full = b.size().unwrap();
    assert!(full > empty + 4000 * 1000, "{full} vs {empty}");
    let mut w = b.write().unwrap();
    w.delete_range(Bucket::Key, b"", None).unwrap();
    w.commit_durable().unwrap();
    b.defrag(&defrag::DefragConfig::default()).unwrap();
    assert_eq!(b.size().unwrap(), on_disk(), "after the defragmentation");
    assert!(
        b.size().unwrap() < full / 4,
        "{} vs {full}",
        b.size().unwrap()
    );
}

#[test]
fn garbage_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut x: u32 = 12345;
    let mut junk = Vec::with_capacity(1 << 16);
    for _ in 0..(1 << 16) {
        x = x.wrapping_mul(1664525).wrapping_add(1013904223);
        junk.push((x >> 24) as u8);
    }
    f.write_all(&junk).unwrap();
    drop(f);
    let e = Backend::open(&path, BackendConfig::default()).unwrap_err();
    assert!(matches!(e, BackendError::Corrupt(_)), "{e}");
}

#[test]
fn damaged_pages_are_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let b = Backend::open(&path, BackendConfig::default()).unwrap();
        let mut w = b.write().unwrap();
        for i in 0..500u32 {
            w.put(Bucket::Key, &i.to_be_bytes(), &[1u8; 200]).unwrap();
        }
        w.commit_durable().unwrap();
        b.close().unwrap();
    }
    // Scribble over the data pages (keep the header so the file still looks like redb).
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    for byte in &mut bytes[len / 4..] {
        *byte ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    let e = Backend::open(&path, BackendConfig::default()).unwrap_err();
    assert!(matches!(e, BackendError::Corrupt(_)), "{e}");
}

/// The database file through redb's storage seam, failing every write and sync with ENOSPC while
/// `full` is set: a disk that filled up.
#[derive(Debug)]
struct FullDisk {
    file: redb::backends::FileBackend,
    full: Arc<std::sync::atomic::AtomicBool>,
}

impl FullDisk {
    fn check(&self) -> std::io::Result<()> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(28))
        } else {
            Ok(())
        }
    }
}

impl redb::StorageBackend for FullDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.file.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.file.write(offset, data)
    }
}

#[test]
fn a_full_disk_refuses_further_writes_and_keeps_what_was_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        let disk = FullDisk {
            file: redb::backends::FileBackend::new(file).unwrap(),
            full: full.clone(),
        };
        let db = redb::Database::builder().create_with_backend(disk).unwrap();
        create_buckets(&db).unwrap();
        let b = Backend::on(db, Default::default(), path.clone(), lazy());
        for i in 0..100u32 {
            let mut w = b.write().unwrap();
            w.put(Bucket::Key, &i.to_be_bytes(), &[7; 512]).unwrap();
            w.commit().unwrap();
        }
        b.force_commit().unwrap();
        assert_eq!(b.failure(), None);

        full.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut w = b.write().unwrap();
        w.put(Bucket::Key, b"lost", &[1; 4096]).unwrap();
        let e = w.commit_durable().unwrap_err();
        assert!(e.to_string().contains("No space left on device"), "{e}");
        assert!(b.failure().is_some_and(|f| f.contains("No space left")));
        // Space comes back, but the backend does not pretend nothing happened.
        full.store(false, std::sync::atomic::Ordering::SeqCst);
        let e = b.write().unwrap_err();
        assert!(matches!(e, BackendError::Poisoned(_)), "{e}");
        assert!(b.force_commit().is_ok(), "nothing was pending");
        let r = b.read().unwrap();
        assert_eq!(r.range(Bucket::Key, &[], None, 0).unwrap().len(), 100);
    }
    let b = Backend::open(&path, lazy()).unwrap();
    let r = b.read().unwrap();
    let all = r.range(Bucket::Key, &[], None, 0).unwrap();
    assert_eq!(all.len(), 100, "every durable commit is still there");
    assert!(r.get(Bucket::Key, b"lost").unwrap().is_none());
    drop(r);
    let mut w = b.write().unwrap();
    w.put(Bucket::Key, b"after", b"1").unwrap();
    w.commit_durable().unwrap();
}

#[test]
fn unsafe_no_fsync_still_writes_the_file_and_defragments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let cfg = BackendConfig {
        unsafe_no_fsync: true,
        ..BackendConfig::default()
    };
    let b = Backend::open(&path, cfg.clone()).unwrap();
    let mut w = b.write().unwrap();
    for i in 0..100u32 {
        w.put(Bucket::Key, &i.to_be_bytes(), b"v").unwrap();
    }
    w.commit_durable().unwrap();
    // What the file holds now (no fsync needed for another reader of the file to see it).
    let image = crash_image(&b, dir.path(), "image");
    let copy = Backend::open(&image, BackendConfig::default()).unwrap();
    assert_eq!(
        copy.read()
            .unwrap()
            .get(Bucket::Key, &7u32.to_be_bytes())
            .unwrap()
            .as_deref(),
        Some(&b"v"[..])
    );
    b.defrag(&crate::defrag::DefragConfig::default()).unwrap();
    b.close().unwrap();
    let b = Backend::open(&path, cfg).unwrap();
    assert_eq!(
        b.read()
            .unwrap()
            .get(Bucket::Key, &99u32.to_be_bytes())
            .unwrap()
            .as_deref(),
        Some(&b"v"[..])
    );
}

#[test]
fn staged_values_are_committed_with_the_data_by_whoever_commits() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(dir.path().join("db"), lazy()).unwrap();
    let ci = |r: &dyn Reader| r.get(Bucket::Meta, b"ci").unwrap();
    let mut w = b.write().unwrap();
    w.put(Bucket::Meta, b"ci", &[0]).unwrap();
    w.commit().unwrap();
    for i in 1..=3u8 {
        let mut w = b.resume().unwrap();
        w.put(Bucket::Key, &[i], b"v").unwrap();
        w.stage(Bucket::Meta, b"ci", &[i]);
        assert_eq!(
            ci(&w),
            Some(vec![i]),
            "reads in the transaction see the staged value"
        );
        w.defer();
    }
    // A transaction resumed without staging anything keeps what was staged.
    b.resume().unwrap().defer();
    // Neither the data nor the staged value is visible before the commit.
    assert_eq!(ci(&b.read().unwrap()), Some(vec![0]));
    assert_eq!(b.read().unwrap().get(Bucket::Key, &[3]).unwrap(), None);
    // Another writer's transaction commits the deferred one first, staged value included.
    let w = b.write().unwrap();
    assert_eq!(ci(&b.read().unwrap()), Some(vec![3]));
    assert!(b.read().unwrap().get(Bucket::Key, &[3]).unwrap().is_some());
    w.abort().unwrap();
    // And force_commit of a deferred transaction makes its staged value durable with its data.
    let mut w = b.resume().unwrap();
    w.put(Bucket::Key, &[4], b"v").unwrap();
    w.stage(Bucket::Meta, b"ci", &[4]);
    w.defer();
    b.force_commit().unwrap();
    let img = crash_image(&b, dir.path(), "crash");
    let c = Backend::open(&img, lazy()).unwrap();
    let r = c.read().unwrap();
    assert_eq!(ci(&r), Some(vec![4]));
    assert!(r.get(Bucket::Key, &[4]).unwrap().is_some());
}

#[test]
fn the_last_write_of_a_staged_key_wins() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(dir.path().join("db"), lazy()).unwrap();
    let mut w = b.write().unwrap();
    w.stage(Bucket::Meta, b"a", b"staged");
    w.put(Bucket::Meta, b"a", b"put").unwrap();
    w.put(Bucket::Meta, b"b", b"put").unwrap();
    w.stage(Bucket::Meta, b"b", b"staged");
    w.stage(Bucket::Meta, b"c", b"staged");
    w.delete(Bucket::Meta, b"c").unwrap();
    w.stage(Bucket::Meta, b"d", b"staged");
    w.stage(Bucket::Meta, b"e", b"staged");
    w.delete_range(Bucket::Meta, b"e", None).unwrap();
    let seen = w.range(Bucket::Meta, b"", None, 0).unwrap();
    assert_eq!(
        w.range(Bucket::Meta, b"b", Some(b"d"), 0).unwrap(),
        vec![(b"b".to_vec(), b"staged".to_vec())],
        "a bounded scan"
    );
    assert_eq!(
        w.range(Bucket::Meta, b"", None, 1).unwrap(),
        vec![(b"a".to_vec(), b"put".to_vec())],
        "a scan stopped early"
    );
    w.commit().unwrap();
    let want = vec![
        (b"a".to_vec(), b"put".to_vec()),
        (b"b".to_vec(), b"staged".to_vec()),
        (b"d".to_vec(), b"staged".to_vec()),
    ];
    assert_eq!(seen, want, "a scan in the transaction");
    assert_eq!(
        b.read().unwrap().range(Bucket::Meta, b"", None, 0).unwrap(),
        want
    );
}

#[test]
fn published_deferred_changes_are_committed_for_readers_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(dir.path().join("db"), lazy()).unwrap();
    let mut w = b.resume().unwrap();
    w.put(Bucket::Key, b"a", b"1").unwrap();
    w.defer();
    // Deferred, not published: no reader needs it, so no reader commits it.
    assert!(b.is_visible());
    assert_eq!(b.read().unwrap().get(Bucket::Key, b"a").unwrap(), None);
    assert_eq!(b.deferred_ops(), 1);
    b.publish_deferred();
    assert!(!b.is_visible());
    // A raw snapshot does not wait for it; a reader commits it first.
    assert_eq!(b.read_raw().unwrap().get(Bucket::Key, b"a").unwrap(), None);
    assert!(b.read().unwrap().get(Bucket::Key, b"a").unwrap().is_some());
    assert!(b.is_visible());
    assert_eq!(b.deferred_ops(), 0);
    // Published, then continued and committed by the writer: visible with no reader's commit.
    let mut w = b.resume().unwrap();
    w.put(Bucket::Key, b"b", b"2").unwrap();
    w.defer();
    b.publish_deferred();
    let mut w = b.resume().unwrap();
    w.put(Bucket::Key, b"c", b"3").unwrap();
    w.commit().unwrap();
    assert!(b.is_visible());
    let commits = b.pending_commits();
    let r = b.read().unwrap();
    assert_eq!(b.pending_commits(), commits, "the reader commits nothing");
    assert!(r.get(Bucket::Key, b"b").unwrap().is_some());
    // Published and committed by another writer's `write` (which commits the deferred one).
    let mut w = b.resume().unwrap();
    w.put(Bucket::Key, b"d", b"4").unwrap();
    w.defer();
    b.publish_deferred();
    b.write().unwrap().abort().unwrap();
    assert!(b.is_visible());
    assert!(b.read().unwrap().get(Bucket::Key, b"d").unwrap().is_some());
}

#[test]
fn published_changes_lost_with_a_failure_make_reads_fail_not_miss_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(dir.path().join("db"), lazy()).unwrap();
    let mut w = b.resume().unwrap();
    w.put(Bucket::Key, b"a", b"1").unwrap();
    w.defer();
    b.publish_deferred();
    // The next writer continues the transaction, then loses it (aborted, as a failed request's
    // transaction is), and stops the backend as its owner does.
    let mut w = b.resume().unwrap();
    w.put(Bucket::Key, b"b", b"2").unwrap();
    drop(w);
    b.fail("lost published changes");
    assert!(matches!(b.read(), Err(BackendError::Poisoned(_))));
    assert!(!b.is_visible());
    // A raw snapshot (an estimate's) still opens.
    assert!(b.read_raw().is_ok());
}
