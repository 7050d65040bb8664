//! `--max-snapshots`: etcd's purge of old snapshot files (`fileutil.PurgeFile` on `*.snap.db` and
//! `*.snap` in `<data-dir>/member/snap`), every 30 seconds from start-up: of the files with a suffix,
//! sorted by name, the oldest are deleted while more than the maximum remain.
//!
//! Hearth itself writes no such files: its snapshot is the backend file (`db`, never matched) with
//! a marker in the WAL, and received snapshots are staged under another name. The purge therefore
//! only tidies files of these names left in the directory (by etcd, or copied there), as etcd would.
//! The WAL's own purge (`--max-wals`) is in the `wal` crate, where it knows which segments are still
//! needed. A failed purge is logged and purging stops; etcd stops the whole process instead.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

/// etcd's `purgeFileInterval`.
const INTERVAL: Duration = Duration::from_secs(30);

/// The suffixes etcd purges in the snapshot directory, in its order.
const SUFFIXES: [&str; 2] = ["snap.db", "snap"];

/// Deletes the oldest files of `dir` whose names end in `suffix` (by name) while more than `max`
/// remain; returns what it deleted.
pub(crate) fn purge_files(dir: &Path, suffix: &str, max: usize) -> std::io::Result<Vec<PathBuf>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(max);
    let mut purged = Vec::with_capacity(excess);
    for name in &names[..excess] {
        let path = dir.join(name);
        std::fs::remove_file(&path)?;
        tracing::info!(path = %path.display(), "purged");
        purged.push(path);
    }
    Ok(purged)
}

/// Purges `dir` now and every [`INTERVAL`] until shutdown.
pub(crate) async fn run(dir: PathBuf, max: usize, mut shutdown: watch::Receiver<bool>) {
    for suffix in SUFFIXES {
        tracing::info!(dir = %dir.display(), suffix, max, interval = ?INTERVAL, "started to purge file");
    }
    loop {
        let d = dir.clone();
        let done = tokio::task::spawn_blocking(move || {
            SUFFIXES
                .iter()
                .try_for_each(|s| purge_files(&d, s, max).map(|_| ()))
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(dir = %dir.display(), error = %e, "failed to purge snap file");
                return;
            }
            Err(_) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn keeps_the_newest_files_of_each_suffix_and_nothing_else_is_touched() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for i in 1..=4 {
            std::fs::write(dir.join(format!("{i:016x}-{i:016x}.snap")), b"s").unwrap();
            std::fs::write(dir.join(format!("{i:016x}.snap.db")), b"d").unwrap();
        }
        std::fs::write(dir.join("db"), b"backend").unwrap();
        std::fs::write(dir.join("db.install"), b"staged").unwrap();

        let purged = purge_files(dir, "snap.db", 2).unwrap();
        assert_eq!(purged.len(), 2);
        let purged = purge_files(dir, "snap", 2).unwrap();
        assert_eq!(purged.len(), 2);
        assert_eq!(
            names(dir),
            [
                "0000000000000003-0000000000000003.snap",
                "0000000000000003.snap.db",
                "0000000000000004-0000000000000004.snap",
                "0000000000000004.snap.db",
                "db",
                "db.install",
            ]
        );
        // At or below the maximum: nothing more goes.
        assert!(purge_files(dir, "snap", 2).unwrap().is_empty());
        assert!(purge_files(dir, "snap", 0).unwrap().len() == 2);
        assert_eq!(names(dir).len(), 4);
    }

    #[tokio::test]
    async fn the_task_purges_at_start_and_stops_at_shutdown() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 1..=7 {
            std::fs::write(tmp.path().join(format!("{i:016x}.snap")), b"s").unwrap();
        }
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run(tmp.path().to_path_buf(), 5, rx));
        let mut left = names(tmp.path()).len();
        for _ in 0..500 {
            left = names(tmp.path()).len();
            if left == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(left, 5);
        tx.send(true).unwrap();
        task.await.unwrap();
    }
}
