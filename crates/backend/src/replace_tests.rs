//! Tests of copies, installs and online defragmentation, including crashes at every named point.

use super::*;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

type Content = BTreeMap<(Bucket, Vec<u8>), Vec<u8>>;

fn content(r: &impl Reader) -> Content {
    let mut out = Content::new();
    for b in Bucket::ALL {
        r.for_each(b, &[], None, &mut |k, v| {
            out.insert((b, k.to_vec()), v.to_vec());
            true
        })
        .unwrap();
    }
    out
}

fn fill(b: &Backend, from: usize, to: usize, value_len: usize) {
    let value = vec![b'v'; value_len];
    for chunk in (from..to).collect::<Vec<_>>().chunks(500) {
        let mut w = b.write().unwrap();
        for i in chunk {
            w.put(Bucket::Key, format!("k{i:08}").as_bytes(), &value)
                .unwrap();
        }
        w.commit().unwrap();
    }
}

fn no_ignore(_: Bucket, _: &[u8]) -> bool {
    false
}

#[test]
fn copy_to_file_and_snapshot_stream_hold_the_same_content() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
    fill(&b, 0, 3000, 100);
    let mut w = b.write().unwrap();
    w.put(Bucket::Meta, b"m", b"1").unwrap();
    w.put(Bucket::Alarm, b"a", b"").unwrap();
    w.commit().unwrap();
    let want = content(&b.read().unwrap());

    let dst = dir.path().join("copy");
    assert_eq!(b.copy_to_file(&dst).unwrap(), want.len() as u64);
    assert!(
        b.copy_to_file(&dst).is_err(),
        "an existing file is never overwritten"
    );
    let c = Backend::open(&dst, BackendConfig::default()).unwrap();
    assert_eq!(content(&c.read().unwrap()), want);
    assert_eq!(c.hash(&no_ignore).unwrap(), b.hash(&no_ignore).unwrap());
    assert_eq!(c.read().unwrap().total_keys().unwrap(), want.len() as u64);

    let mut snap = b.snapshot().unwrap();
    assert_eq!(snap.pairs(), want.len() as u64);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut snap, &mut bytes).unwrap();
    assert_eq!(bytes.len() as u64, snap.size());
    let streamed = dir.path().join("streamed");
    std::fs::write(&streamed, &bytes).unwrap();
    let s = Backend::open(&streamed, BackendConfig::default()).unwrap();
    assert_eq!(content(&s.read().unwrap()), want);
    // Nothing of the stream's temporary file is left in the directory.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

/// What `snapshot_with` describes is read from the copy's own read snapshot, even when a write
/// commits while the copy is being made.
#[test]
fn snapshot_with_describes_exactly_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
    fill(&b, 0, 100, 10);
    let mut w = b.write().unwrap();
    w.put(Bucket::Meta, b"index", b"1").unwrap();
    w.commit().unwrap();
    let (mut snap, described) = b
        .snapshot_with(|r| {
            // A writer that commits after the read snapshot was taken.
            let mut w = b.write()?;
            w.put(Bucket::Meta, b"index", b"2")?;
            w.commit()?;
            r.get(Bucket::Meta, b"index")
        })
        .unwrap();
    assert_eq!(described.as_deref(), Some(&b"1"[..]));
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut snap, &mut bytes).unwrap();
    let copy = dir.path().join("copy");
    std::fs::write(&copy, &bytes).unwrap();
    let c = Backend::open(&copy, BackendConfig::default()).unwrap();
    let r = c.read().unwrap();
    assert_eq!(
        r.get(Bucket::Meta, b"index").unwrap().as_deref(),
        Some(&b"1"[..])
    );
}

#[test]
fn hash_ignores_what_it_is_told_and_sees_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
    fill(&b, 0, 10, 1);
    let h = b.hash(&no_ignore).unwrap();
    let mut w = b.write().unwrap();
    w.put(Bucket::Meta, b"ci", b"1").unwrap();
    w.commit().unwrap();
    assert_ne!(b.hash(&no_ignore).unwrap(), h);
    let ignore_ci = |bk: Bucket, k: &[u8]| bk == Bucket::Meta && k == b"ci";
    assert_eq!(b.hash(&ignore_ci).unwrap(), h);
}

#[test]
fn install_swaps_the_database_under_shared_handles() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap());
    fill(&b, 0, 100, 10);
    let old_view = b.read().unwrap();

    let other_dir = tempfile::tempdir().unwrap();
    let other = Backend::open(other_dir.path().join("db"), BackendConfig::default()).unwrap();
    fill(&other, 1000, 1010, 3);
    let src = other_dir.path().join("copy");
    other.copy_to_file(&src).unwrap();
    let want = content(&other.read().unwrap());

    let shared = b.clone();
    b.install(&src).unwrap();
    assert!(!src.exists());
    assert_eq!(content(&shared.read().unwrap()), want);
    // A snapshot opened before the swap keeps reading what it saw.
    assert_eq!(content(&old_view).len(), 100);
    drop(old_view);
    // Writes go to the new file, and survive a reopen.
    let mut w = b.write().unwrap();
    w.put(Bucket::Key, b"after", b"x").unwrap();
    w.commit().unwrap();
    drop(shared);
    Arc::try_unwrap(b).unwrap().close().unwrap();
    let reopened = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
    let got = content(&reopened.read().unwrap());
    assert_eq!(got.len(), want.len() + 1);
    assert!(got.contains_key(&(Bucket::Key, b"after".to_vec())));

    // A file that is not a database is refused and nothing changes.
    let bad = dir.path().join("bad");
    std::fs::write(&bad, b"not a database at all, not even close").unwrap();
    assert!(reopened.install(&bad).is_err());
    assert_eq!(content(&reopened.read().unwrap()), got);
    assert!(bad.exists(), "a refused file is left where it was");
    assert!(!reopened.install_staging_path().exists());
}

#[test]
fn defrag_catches_up_writes_made_during_the_copy_and_shrinks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap());
    fill(&b, 0, 6000, 1000);
    // Delete most of it: the file keeps its size until defragmented.
    let mut w = b.write().unwrap();
    w.delete_range(Bucket::Key, b"k00000100", Some(b"k00005900"))
        .unwrap();
    w.commit().unwrap();
    b.force_commit().unwrap();
    let before = b.size().unwrap();

    // Writers run at both phases outside the critical section: puts, deletes, range deletes,
    // and an aborted transaction that must leave no trace.
    let writer = b.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    b.set_hook(Some(Arc::new(move |p| {
        let round = match p {
            Point::DefragCopy => 0,
            Point::DefragCatchUp => 1,
            _ => return,
        };
        seen.fetch_add(1, Ordering::SeqCst);
        let w2 = writer.clone();
        std::thread::spawn(move || {
            fill(&w2, 10_000 + round * 3000, 10_000 + round * 3000 + 2500, 10);
            let mut w = w2.write().unwrap();
            w.delete(Bucket::Key, b"k00000001").unwrap();
            w.delete_range(Bucket::Key, b"k00005950", Some(b"k00005960"))
                .unwrap();
            w.put(Bucket::Lease, format!("l{round}").as_bytes(), b"lease")
                .unwrap();
            w.commit().unwrap();
            // A staged value in a deferred transaction, committed by the next writer: it is
            // journaled like a put.
            let mut w = w2.write().unwrap();
            w.stage(Bucket::Meta, b"staged", &[round as u8]);
            w.defer();
            let mut w = w2.write().unwrap();
            w.put(Bucket::Key, b"aborted", b"x").unwrap();
            w.abort().unwrap();
        })
        .join()
        .unwrap();
    })));
    let stats = b
        .defrag(&DefragConfig {
            final_ops: 10,
            ..Default::default()
        })
        .unwrap();
    b.set_hook(None);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(stats.caught_up + stats.final_ops >= 5000, "{stats:?}");

    let got = content(&b.read().unwrap());
    let mut want = Content::new();
    for i in (0..100).chain(5900..6000) {
        want.insert(
            (Bucket::Key, format!("k{i:08}").into_bytes()),
            vec![b'v'; 1000],
        );
    }
    for i in (10_000..12_500).chain(13_000..15_500) {
        want.insert(
            (Bucket::Key, format!("k{i:08}").into_bytes()),
            vec![b'v'; 10],
        );
    }
    want.remove(&(Bucket::Key, b"k00000001".to_vec()));
    for i in 5950..5960 {
        want.remove(&(Bucket::Key, format!("k{i:08}").into_bytes()));
    }
    want.insert((Bucket::Lease, b"l0".to_vec()), b"lease".to_vec());
    want.insert((Bucket::Lease, b"l1".to_vec()), b"lease".to_vec());
    want.insert((Bucket::Meta, b"staged".to_vec()), vec![1]);
    assert_eq!(got, want);
    assert!(
        stats.size_after < before,
        "{} -> {}: {stats:?}",
        before,
        stats.size_after
    );
    assert_eq!(b.size().unwrap(), stats.size_after);
    assert!(!swap::staging_path(b.path(), "defrag").exists());

    // The new file is the one at the path, and it is durable.
    drop(got);
    Arc::try_unwrap(b).unwrap().close().unwrap();
    let reopened = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
    assert_eq!(content(&reopened.read().unwrap()), want);
}

#[test]
fn defrag_gives_up_when_the_journal_overflows_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap());
    fill(&b, 0, 100, 10);
    let writer = b.clone();
    b.set_hook(Some(Arc::new(move |p| {
        if p == Point::DefragCopy {
            let w2 = writer.clone();
            std::thread::spawn(move || fill(&w2, 100, 1100, 100))
                .join()
                .unwrap();
        }
    })));
    let err = b
        .defrag(&DefragConfig {
            max_journal_bytes: 10_000,
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("abandoned"), "{err}");
    b.set_hook(None);
    assert_eq!(content(&b.read().unwrap()).len(), 1100);
    assert!(!swap::staging_path(b.path(), "defrag").exists());
    // Journaling is off again, and the next attempt succeeds.
    b.defrag(&DefragConfig::default()).unwrap();
    assert_eq!(content(&b.read().unwrap()).len(), 1100);
}

/// Crash tests: a child process (this test binary, re-run on one test) defragments or installs
/// and is killed (abort, no unwinding, no clean close) at a named point; the parent then opens
/// the directory as a restarted server would and checks it holds a complete database with every
/// durable write. The same directory is also checked as power loss would leave it before the
/// staged file was durable: the staging file torn to any length does not matter.
const CHILD_ENV: &str = "BACKEND_CRASH_CHILD";

fn point_name(p: Point) -> &'static str {
    match p {
        Point::DefragCopy => "DefragCopy",
        Point::DefragCatchUp => "DefragCatchUp",
        Point::DefragFinal => "DefragFinal",
        Point::Staged => "Staged",
        Point::Synced => "Synced",
        Point::Renamed => "Renamed",
        Point::DirSynced => "DirSynced",
        Point::Swapped => "Swapped",
    }
}

#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    let (op, point, dir) = (
        parts.next().unwrap().to_string(),
        parts.next().unwrap().to_string(),
        PathBuf::from(parts.next().unwrap()),
    );
    let b = Arc::new(Backend::open(dir.join("db"), BackendConfig::default()).unwrap());
    let writer = b.clone();
    b.set_hook(Some(Arc::new(move |p| {
        if p == Point::DefragCopy {
            // A durable write made during the copy must survive whatever happens next.
            let mut w = writer.write().unwrap();
            w.put(Bucket::Key, b"during", b"copy").unwrap();
            w.commit_durable().unwrap();
        }
        if point_name(p) == point {
            std::process::abort();
        }
    })));
    match op.as_str() {
        "defrag" => {
            b.defrag(&DefragConfig::default()).unwrap();
        }
        _ => {
            let mut w = b.write().unwrap();
            w.put(Bucket::Key, b"during", b"copy").unwrap();
            w.commit_durable().unwrap();
            b.install(&dir.join("replacement")).unwrap();
        }
    }
    // Reaching the end means the point was never hit: the parent sees a clean exit and fails.
    std::process::exit(0);
}

fn run_crash(op: &str, point: Point) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let original: Content;
    {
        let b = Backend::open(&db, BackendConfig::default()).unwrap();
        fill(&b, 0, 2000, 200);
        let mut w = b.write().unwrap();
        w.delete_range(Bucket::Key, b"k00000100", Some(b"k00001900"))
            .unwrap();
        w.commit().unwrap();
        original = content(&b.read().unwrap());
        b.close().unwrap();
    }
    let mut replacement = Content::new();
    if op == "install" {
        let other_dir = tempfile::tempdir().unwrap();
        let o = Backend::open(other_dir.path().join("db"), BackendConfig::default()).unwrap();
        fill(&o, 5000, 5100, 7);
        replacement = content(&o.read().unwrap());
        o.copy_to_file(&dir.path().join("replacement")).unwrap();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["replace_tests::crash_child", "--exact", "--nocapture"])
        .env(
            CHILD_ENV,
            format!("{op}:{}:{}", point_name(point), dir.path().display()),
        )
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{op} child was not killed at {point:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Power loss before the staged file was complete: its bytes may be anything.
    let staged = swap::staging_path(&db, op);
    if staged.exists() {
        let len = std::fs::metadata(&staged).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&staged)
            .unwrap()
            .set_len(len / 3)
            .unwrap();
    }

    let b = Backend::open(&db, BackendConfig::default()).unwrap();
    assert!(!staged.exists(), "{op} at {point:?}: staging file left");
    let got = content(&b.read().unwrap());
    let renamed = matches!(point, Point::Renamed | Point::DirSynced | Point::Swapped);
    let mut want = if op == "install" && renamed {
        replacement
    } else {
        original
    };
    if !(op == "install" && renamed) {
        want.insert((Bucket::Key, b"during".to_vec()), b"copy".to_vec());
    }
    assert_eq!(got.len(), want.len(), "{op} at {point:?}");
    assert!(got == want, "{op} at {point:?}: content differs");
    // The database at the path is fully usable.
    let mut w = b.write().unwrap();
    w.put(Bucket::Key, b"after", b"crash").unwrap();
    w.commit_durable().unwrap();
}

#[test]
fn defrag_survives_a_crash_at_every_point() {
    for p in [
        Point::DefragCopy,
        Point::DefragCatchUp,
        Point::DefragFinal,
        Point::Staged,
        Point::Synced,
        Point::Renamed,
        Point::DirSynced,
        Point::Swapped,
    ] {
        run_crash("defrag", p);
    }
}

#[test]
fn install_survives_a_crash_at_every_point() {
    for p in [
        Point::Staged,
        Point::Synced,
        Point::Renamed,
        Point::DirSynced,
        Point::Swapped,
    ] {
        run_crash("install", p);
    }
}

/// The MVCC store's shape: every put a new revision key, an overwrite a second revision of the
/// same key, a compaction deletes the older revisions. After a defragmentation the size the
/// backend reports (Status `dbSize`) is what the live pairs need, well below what the file
/// took before, and it is the size of the file now at the path.
#[test]
fn defrag_after_a_compaction_reports_the_size_of_the_live_data() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
    let keys = 20_000u64;
    let value = vec![b'v'; 256];
    let mut rev = 0u64;
    let revs: Vec<u64> = (0..keys + keys / 2).collect();
    for chunk in revs.chunks(1000) {
        let mut w = b.write().unwrap();
        for _ in chunk {
            rev += 1;
            w.put(Bucket::Key, &rev.to_be_bytes(), &value).unwrap();
        }
        w.commit().unwrap();
    }
    // Half the keys were overwritten: their first revisions (every other one) are compacted.
    let mut w = b.write().unwrap();
    for r in (1..=keys).step_by(2) {
        w.delete(Bucket::Key, &r.to_be_bytes()).unwrap();
    }
    w.commit().unwrap();
    b.force_commit().unwrap();
    let live: u64 = content(&b.read().unwrap())
        .iter()
        .map(|((_, k), v)| (k.len() + v.len()) as u64)
        .sum();
    assert_eq!(live, keys * (8 + 256));
    let before = b.size().unwrap();

    let stats = b.defrag(&DefragConfig::default()).unwrap();
    let after = b.size().unwrap();
    assert_eq!(stats.size_after, after);
    assert_eq!(stats.size_before, before);
    // Leaf pages filled in key order hold the pairs with about a tenth more for page headers,
    // entry offsets and the pages' unused ends; branch pages and redb's header, allocator
    // state and empty buckets add a few pages.
    let bound = live + live / 4 + (256 << 10);
    assert!(
        after <= bound,
        "{after} bytes after a defragment, {live} live, bound {bound}, {before} before"
    );
    assert!(after < before - before / 4, "{before} -> {after}");
    // The figure is the file at the path, as the disk holds it.
    let meta = std::fs::metadata(b.path()).unwrap();
    assert_eq!(after, disk_size(&meta));
    assert_eq!(b.file_len().unwrap(), meta.len());
    assert!(meta.len() >= after);
    let in_use = b.size_in_use().unwrap();
    assert!(
        in_use >= live && in_use <= after,
        "{in_use} in use of {after}"
    );

    b.close().unwrap();
    let reopened = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
    assert_eq!(content(&reopened.read().unwrap()).len() as u64, keys);
}

/// A replaced file's blocks are given back in steps once redb closed it; while a reader still
/// holds the old handle, its file is left whole (the reader reads it).
#[test]
fn a_replaced_file_is_emptied_only_once_its_last_reader_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(dir.path().join("old"), BackendConfig::default()).unwrap();
    fill(&b, 0, 20_000, 2000);
    let len = b.file_len().unwrap();
    assert!(len > 2 * swap::RELEASE_STEP, "{len}");
    let db = b.db();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(b.path())
        .unwrap();
    let probe = file.try_clone().unwrap();
    std::fs::remove_file(b.path()).unwrap();

    let reader = db.clone();
    swap::release(db.clone(), Some(file.try_clone().unwrap()));
    assert_eq!(probe.metadata().unwrap().len(), len, "a reader held it");
    drop(reader);
    drop(b);
    swap::release(db, Some(file));
    assert_eq!(probe.metadata().unwrap().len(), 0);
}

/// Writes `key` (and the staged `ci` record, as the applier stages its consistent index) in the
/// deferred transaction, continuing it if there is one, sets it aside again and, if asked,
/// publishes it: the applier's batch that no commit holds yet.
fn defer_put(b: &Backend, key: &[u8], publish: bool) {
    let mut w = b.resume().unwrap();
    w.put(Bucket::Key, key, b"deferred").unwrap();
    w.stage(Bucket::Meta, b"ci", key);
    w.defer();
    if publish {
        b.publish_deferred();
    }
}

/// `want` plus what [`defer_put`] wrote for `keys`, in that order.
fn with_deferred(want: &Content, keys: &[&[u8]]) -> Content {
    let mut want = want.clone();
    for k in keys {
        want.insert((Bucket::Key, k.to_vec()), b"deferred".to_vec());
        want.insert((Bucket::Meta, b"ci".to_vec()), k.to_vec());
    }
    want
}

/// Commits what is pending, closes `b` (its last handle) and checks that the file at `path`
/// opens to `want`.
fn reopens_with(b: Arc<Backend>, path: &Path, want: &Content) {
    b.force_commit().unwrap();
    drop(Arc::try_unwrap(b).unwrap());
    let reopened = Backend::open(path, BackendConfig::default()).unwrap();
    assert_eq!(&content(&reopened.read().unwrap()), want);
}

/// Published changes pending when a defragmentation starts, or published while it copies and
/// catches up, are in the defragmented file: those pending at the start were written before the
/// journal was on (only a commit before the snapshot brings them into the copy), those left
/// pending at the end are in a transaction on the old file (only a commit in the critical
/// section brings them into the journal).
#[test]
fn defrag_keeps_published_deferred_changes_made_before_and_during_it() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap());
    fill(&b, 0, 200, 100);
    let filled = content(&b.read().unwrap());
    defer_put(&b, b"before", true);
    assert!(!b.is_visible());

    let writer = b.clone();
    b.set_hook(Some(Arc::new(move |p| match p {
        Point::DefragCopy => {
            // Committed by a reader while the copy runs: it reaches the copy through the journal.
            defer_put(&writer, b"copy-read", true);
            let r = writer.read().unwrap();
            assert!(r.get(Bucket::Key, b"copy-read").unwrap().is_some());
            defer_put(&writer, b"copy-pending", true);
        }
        // Continues the transaction left pending during the copy; nobody reads it before the
        // critical section.
        Point::DefragCatchUp => defer_put(&writer, b"catch-up-pending", true),
        _ => {}
    })));
    b.defrag(&DefragConfig::default()).unwrap();
    b.set_hook(None);

    let want = with_deferred(
        &filled,
        &[
            b"before",
            b"copy-read",
            b"copy-pending",
            b"catch-up-pending",
        ],
    );
    // A raw snapshot commits nothing: what it sees, the defragmentation committed.
    assert_eq!(content(&b.read_raw().unwrap()), want);
    assert!(b.is_visible());
    assert_eq!(b.deferred_ops(), 0);
    assert_eq!(content(&b.read().unwrap()), want);

    reopens_with(b, &dir.path().join("db"), &want);
}

/// A deferred transaction nobody published is committed by a defragmentation all the same (it
/// may not begin or end with a transaction open on the old file), so its changes are in the
/// defragmented file instead of being lost with the old one.
#[test]
fn defrag_commits_unpublished_deferred_changes_into_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap());
    fill(&b, 0, 200, 100);
    let filled = content(&b.read().unwrap());
    defer_put(&b, b"before", false);
    // Unpublished: no reader needs it, so no reader commits it.
    assert!(b.is_visible());
    assert_eq!(content(&b.read().unwrap()), filled);

    let writer = b.clone();
    b.set_hook(Some(Arc::new(move |p| {
        if p == Point::DefragCatchUp {
            defer_put(&writer, b"during", false);
        }
    })));
    b.defrag(&DefragConfig::default()).unwrap();
    b.set_hook(None);

    let want = with_deferred(&filled, &[b"before", b"during"]);
    assert_eq!(b.deferred_ops(), 0);
    assert_eq!(content(&b.read_raw().unwrap()), want);

    reopens_with(b, &dir.path().join("db"), &want);
}

/// An install commits a pending deferred transaction into the file it replaces (so the old file
/// stays consistent should the swap fail) and the installed file replaces those changes with the
/// rest: afterwards readers see exactly the installed content, nothing published is left
/// uncommitted, and the next transaction, deferred or not, writes into the new file.
#[test]
fn install_commits_a_pending_deferred_transaction_into_the_replaced_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap());
    fill(&b, 0, 100, 10);

    let other_dir = tempfile::tempdir().unwrap();
    let other = Backend::open(other_dir.path().join("db"), BackendConfig::default()).unwrap();
    fill(&other, 1000, 1010, 3);
    let installed = content(&other.read().unwrap());

    // What the old file holds once the install has the write gate, just before the rename.
    type Seen = (Option<Vec<u8>>, usize, bool);
    let seen: Arc<Mutex<Option<Seen>>> = Arc::default();
    let (observer, at_swap) = (b.clone(), seen.clone());
    b.set_hook(Some(Arc::new(move |p| {
        if p == Point::Staged {
            let old = observer.read_raw().unwrap().get(Bucket::Key, b"x").unwrap();
            let deferred = observer.deferred_ops();
            *at_swap.lock().unwrap() = Some((old, deferred, observer.is_visible()));
        }
    })));

    for (round, publish) in [true, false].into_iter().enumerate() {
        let src = other_dir.path().join(format!("copy{round}"));
        other.copy_to_file(&src).unwrap();
        defer_put(&b, b"x", publish);
        b.install(&src).unwrap();
        assert_eq!(
            seen.lock().unwrap().take(),
            Some((Some(b"deferred".to_vec()), 0, true)),
            "published: {publish}"
        );
        assert!(b.is_visible(), "published: {publish}");
        assert_eq!(b.deferred_ops(), 0, "published: {publish}");
        assert_eq!(
            content(&b.read().unwrap()),
            installed,
            "published: {publish}"
        );
    }
    b.set_hook(None);

    defer_put(&b, b"after", true);
    let want = with_deferred(&installed, &[b"after"]);
    assert_eq!(content(&b.read().unwrap()), want);

    reopens_with(b, &dir.path().join("db"), &want);
}

/// An install whose commit of the pending deferred transaction fails (the backend refuses
/// writes) changes nothing: the caller's file is where it was, or removed if it was given at the
/// staging path, and nothing is left at the staging path.
#[test]
fn an_install_whose_deferred_commit_fails_gives_the_file_back() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::open(dir.path().join("db"), BackendConfig::default()).unwrap();
    fill(&b, 0, 10, 1);
    let before = content(&b.read().unwrap());
    defer_put(&b, b"x", true);
    b.fail("a write failed");

    let other_dir = tempfile::tempdir().unwrap();
    let other = Backend::open(other_dir.path().join("db"), BackendConfig::default()).unwrap();
    fill(&other, 1000, 1010, 3);
    let beside = dir.path().join("incoming");
    let elsewhere = other_dir.path().join("incoming");
    for src in [&beside, &elsewhere] {
        other.copy_to_file(src).unwrap();
        let err = b.install(src).unwrap_err();
        assert!(matches!(err, BackendError::Poisoned(_)), "{err}");
        assert!(src.exists(), "{}", src.display());
        assert!(!b.install_staging_path().exists(), "{}", src.display());
    }
    other.copy_to_file(&b.install_staging_path()).unwrap();
    assert!(b.install(&b.install_staging_path()).is_err());
    assert!(!b.install_staging_path().exists());
    // The served file is the old one, without the changes the failure took.
    assert_eq!(content(&b.read_raw().unwrap()), before);
}
