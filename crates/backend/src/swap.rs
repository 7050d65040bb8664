//! Replacing the database a [`Backend`] serves with another file, atomically and crash-safely.
//!
//! A replacement stages the new database as a complete redb file in the same directory as the
//! live one (`<db>.<purpose>.tmp`), makes it durable, and then, holding the write gate so no write
//! transaction is open:
//!
//! 1. [`Point::Staged`]: the staged file is complete; its last commit was durable, which is
//!    redb's fsync of the file.
//! 2. [`Point::Synced`]: nothing else of the staged file is pending.
//! 3. `rename(staged, db)` replaces the live path in one step; [`Point::Renamed`].
//! 4. The directory is fsynced so the rename itself survives power loss; [`Point::DirSynced`].
//! 5. The handle readers and writers use is switched to the staged database (it stays open
//!    across the rename, so no reopen is needed); [`Point::Swapped`].
//!
//! A crash before step 3 leaves the old file at the path (the stale staging file is removed at
//! the next open); a crash after it leaves the new one; between 3 and 4 power loss may leave
//! either, and both are complete databases. Nothing at the path is ever partially written.
//!
//! Read snapshots opened before the switch keep reading the old database (its handle lives
//! until the last of them ends, on the now unlinked inode); everything opened after sees the
//! new one. The `Arc<Backend>` others hold stays valid throughout.
//!
//! The old handle is closed on a thread of its own, after the write gate is released, without
//! fsyncs (nothing reads the unlinked file again), and its blocks are then freed a step at a
//! time (see `release`): freeing a large file at once is one large filesystem journal
//! transaction, and every fsync (the WAL's, the new file's commits) would wait behind it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, MutexGuard};

use crate::nosync::SyncSwitch;
use crate::{open_db, Backend, BackendError, Result};

/// Named points of a defragmentation or a replacement, in the order they are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Point {
    /// A defragmentation took its read snapshot and is about to copy it; writers are running.
    DefragCopy,
    /// A defragmentation copied its snapshot and is replaying the writes made meanwhile.
    DefragCatchUp,
    /// A defragmentation caught up all but the last few writes and holds the write gate to
    /// replay those; the staged file is durable up to its last catch-up round.
    DefragFinal,
    /// The staged file is complete and durable; the live file is untouched.
    Staged,
    /// Just before the rename.
    Synced,
    /// The staged file has been renamed over the live path; the directory is not yet fsynced.
    Renamed,
    /// The directory has been fsynced; the in-memory handle is not yet switched.
    DirSynced,
    /// The backend now serves the new database.
    Swapped,
}

/// A callback run at each [`Point`]; see [`Backend::set_hook`].
pub type Hook = Arc<dyn Fn(Point) + Send + Sync>;

/// The failpoints of an install's swap, at [`Point::Synced`], [`Point::Renamed`],
/// [`Point::DirSynced`] and [`Point::Swapped`] (`docs/failpoints.md`). A defragmentation's swap has
/// etcd's `defragBeforeRename`, hit just before it.
const INSTALL_FAILPOINTS: [&str; 4] = [
    "installBeforeRename",
    "installAfterRename",
    "installAfterSyncDir",
    "installAfterSwap",
];

/// The purposes a staging file may have; each has its own fixed name next to the database.
const STAGING: [&str; 2] = ["defrag", "install"];

/// `<dir>/<db>.<purpose>.tmp`.
pub(crate) fn staging_path(path: &Path, purpose: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "db".into());
    path.with_file_name(format!("{name}.{purpose}.tmp"))
}

pub(crate) fn remove_stale_staging(path: &Path) -> Result<()> {
    for purpose in STAGING {
        let p = staging_path(path, purpose);
        match std::fs::remove_file(&p) {
            Ok(()) => tracing::warn!(path = %p.display(), "removed an interrupted replacement"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs a directory, so a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing ancestors, and makes each new entry durable in its parent with
/// `sync` (given [`sync_dir`], or nothing under `--unsafe-no-fsync`): a data directory whose
/// entry a power loss takes back would start the member afresh, without what it acknowledged.
pub fn create_dir_all_durably(
    dir: &Path,
    mut sync: impl FnMut(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .collect();
    std::fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        sync(parent_dir(d))?;
    }
    Ok(())
}

impl Backend {
    /// Where a caller should write a file it will pass to [`install`](Self::install): in the
    /// database's directory (so the final rename is atomic) and removed at the next
    /// [`open`](Self::open) if a crash interrupts the install.
    pub fn install_staging_path(&self) -> PathBuf {
        staging_path(&self.path, "install")
    }

    /// Replaces the whole database with the redb file at `src`, atomically and crash-safely
    /// (see the module doc). `src` must be a complete database (for example one written by
    /// [`copy_to_file`](Self::copy_to_file) or received as [`SnapshotFile`](crate::SnapshotFile)
    /// bytes); it is verified page by page before anything changes, and missing buckets are
    /// created. A `src` outside the database's directory is first copied next to it.
    ///
    /// Writes committed through this backend concurrently are lost when the new file takes over:
    /// the caller stops its writers (the Raft applier, for a snapshot install) first. Layers that
    /// cache state derived from the file (the MVCC key index) must reload it afterwards.
    /// On success `src` no longer exists; on failure it is left as it was (a file passed at
    /// [`install_staging_path`](Self::install_staging_path) is removed).
    pub fn install(&self, src: &Path) -> Result<()> {
        let _one = self.replacing.lock().unwrap_or_else(|p| p.into_inner());
        let staged = self.install_staging_path();
        if src == self.path {
            return Err(BackendError::Storage(
                "cannot install the live database over itself".into(),
            ));
        }
        let copied = parent_dir(src) != parent_dir(&self.path);
        if copied {
            std::fs::copy(src, &staged)?;
        } else if src != staged {
            std::fs::rename(src, &staged)?;
        }
        // The staged bytes may have been written without an fsync (a copy, a received stream):
        // make them durable before anything can point at them. Done before redb opens the file,
        // so no second descriptor meets redb's locks.
        let opened = std::fs::File::open(&staged)
            .and_then(|f| f.sync_all())
            .map_err(BackendError::from)
            .and_then(|()| open_db(&staged, &self.config));
        // Leave the caller's file as it was given.
        let give_back = || {
            if copied || src == staged {
                let _ = std::fs::remove_file(&staged);
            } else {
                let _ = std::fs::rename(&staged, src);
            }
        };
        let (db, sync) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                give_back();
                return Err(e);
            }
        };
        let gate = self.write_gate.lock().unwrap_or_else(|p| p.into_inner());
        // Changes set aside for the old file are replaced with it; committing them first keeps
        // the old file consistent if the swap fails.
        if let Err(e) = self.commit_deferred_locked() {
            drop(gate);
            // redb lets go of the file before it moves back.
            drop((db, sync));
            give_back();
            return Err(e);
        }
        self.swap_in(db, sync, &staged, gate, Some(&INSTALL_FAILPOINTS))?;
        if src != staged {
            let _ = std::fs::remove_file(src);
        }
        Ok(())
    }

    /// Steps 1-5 of the module doc. `db` is open on `staged` and fully durable; `gate` keeps
    /// writers out until the switch is done. `failpoints` are hit after steps 2 to 5.
    pub(crate) fn swap_in(
        &self,
        db: redb::Database,
        sync: SyncSwitch,
        staged: &Path,
        gate: MutexGuard<'_, ()>,
        failpoints: Option<&[&'static str; 4]>,
    ) -> Result<()> {
        let failpoint = |i: usize| {
            if let Some(names) = failpoints {
                failpoint::hit(names[i]);
            }
        };
        self.at(Point::Staged);
        self.at(Point::Synced);
        failpoint(0);
        // A second descriptor on the file about to be replaced, to release its blocks in
        // steps once redb has closed it (see `release`).
        let old_file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .ok();
        if let Err(e) = std::fs::rename(staged, &self.path) {
            drop(db);
            let _ = std::fs::remove_file(staged);
            return Err(e.into());
        }
        self.at(Point::Renamed);
        failpoint(1);
        let synced = sync_dir(parent_dir(&self.path));
        self.at(Point::DirSynced);
        failpoint(2);
        // The rename happened: the path holds the new database whatever the directory fsync
        // said, so the handle must follow it.
        let old = std::mem::replace(
            &mut *self.db.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(db),
        );
        let old_sync = std::mem::replace(
            &mut *self.sync.lock().unwrap_or_else(|p| p.into_inner()),
            sync,
        );
        self.note_size();
        {
            let mut st = self.batch();
            st.last_durable = std::time::Instant::now();
            st.pending_ops = 0;
            st.pending_commits = 0;
        }
        drop(gate);
        // Closing the old handle (if no reader holds it) commits and fsyncs it; writers need not
        // wait. Once the rename is durable nothing will read the old file again: skip its fsyncs
        // (see `crate::nosync`) and free its blocks in steps. If the directory fsync failed, power
        // loss may still bring the old file back at the path: then it keeps both.
        let durable = synced.is_ok();
        if durable {
            old_sync.off();
        }
        let closer = std::thread::Builder::new()
            .name("backend-close".into())
            .spawn(move || release(old, if durable { old_file } else { None }));
        if let Err(e) = closer {
            tracing::warn!("closing the replaced database file on this thread: {e}");
        }
        self.at(Point::Swapped);
        failpoint(3);
        tracing::info!(path = %self.path.display(), "backend switched to a new database file");
        synced.map_err(BackendError::from)
    }
}

/// Bytes of a replaced file freed at a time.
pub(crate) const RELEASE_STEP: u64 = 4 << 20;

/// The pause between two steps of freeing a replaced file.
const RELEASE_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Closes a replaced (unlinked) database and gives its blocks back to the filesystem in steps.
/// Closing the last descriptor of a large unlinked file frees all its blocks in one journal
/// transaction, and every fsync on the filesystem waits for that transaction meanwhile;
/// truncating it a step at a time keeps each one small, and pausing between steps leaves the
/// journal to the WAL's fsyncs in between (back to back, 16 MiB steps held a WAL fsync for
/// 20 ms). A 2 GiB file is freed in about 10 s. Only once redb has closed the file: a reader may
/// still hold the old handle, and then its file is left whole until the last reader ends.
pub(crate) fn release(old: Arc<redb::Database>, file: Option<std::fs::File>) {
    let Ok(db) = Arc::try_unwrap(old) else {
        return;
    };
    drop(db);
    let Some(file) = file else { return };
    let Ok(mut len) = file.metadata().map(|m| m.len()) else {
        return;
    };
    while len > 0 {
        len = len.saturating_sub(RELEASE_STEP);
        if file.set_len(len).is_err() {
            return;
        }
        if len > 0 {
            std::thread::sleep(RELEASE_PAUSE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_directory_created_is_synced_in_its_parent_outermost_first() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("data")).unwrap();
        let dir = root.path().join("data/member/snap");
        let mut synced = Vec::new();
        create_dir_all_durably(&dir, |p| {
            synced.push(p.to_path_buf());
            sync_dir(p)
        })
        .unwrap();
        assert!(dir.is_dir());
        assert_eq!(
            synced,
            [root.path().join("data"), root.path().join("data/member")]
        );
        // Nothing new, nothing to sync.
        synced.clear();
        create_dir_all_durably(&dir, |p| {
            synced.push(p.to_path_buf());
            Ok(())
        })
        .unwrap();
        assert!(synced.is_empty());
    }
}
