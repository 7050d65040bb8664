//! Snapshot files: a database followed by the SHA-256 of its bytes, as `etcdctl snapshot save`
//! writes them. The database is etcd's (a bbolt file: what etcd and, since it speaks etcd's
//! format, Hearth's Snapshot RPC stream) or Hearth's own (a redb file, from Hearth before it
//! streamed etcd's format, or a member's `member/snap/db`); which one is decided by content.
//! `restore` verifies the checksum before trusting a byte. `status` does not, as etcdutl's does
//! not: it reports on the database itself, so that it answers for a member's `member/snap/db`
//! (which has no trailer) and for any file etcd's tools answer for (bbolt's integrity check
//! still guards what it reports). `defrag` rewrites a stopped member's backend.
//!
//! A restore builds everything in staging directories and renames it into place only when it is
//! complete, so that an interrupted restore never leaves a half-written data directory at the
//! target path, and a failed one leaves nothing at `--data-dir` or `--wal-dir`. An existing
//! empty data directory is accepted, as etcdutl accepts it (a mount point is the usual case),
//! and filled rather than replaced: a mount point cannot be renamed over, and its owner and mode
//! are the administrator's. Its staging directory is then inside it, so that the final renames
//! stay on its file system; if the process dies, that hidden `.restore-*` directory is what is
//! left, and the directory is no longer empty for a retry.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use backend::{Backend, BackendConfig, Bucket, Reader as _};
use sha2::{Digest as _, Sha256};

const SHA_LEN: u64 = 32;

/// redb's file magic (the first bytes of a Hearth backend).
const REDB_MAGIC: &[u8] = b"redb\x1a\x0a\xa9\x0d\x0a";

/// What `snapshot status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// CRC-32C of every bucket's name and content (for an etcd file, etcd's own hash).
    pub hash: u32,
    pub revision: i64,
    pub total_keys: u64,
    /// Bytes of the database (without the checksum).
    pub total_size: u64,
}

/// The two kinds of database a snapshot file can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// etcd's bbolt file.
    Etcd,
    /// Hearth's redb file.
    Hearth,
}

/// Whether the file ends with a checksum, by etcd's rule: database files are whole 512-byte
/// sectors, so 32 bytes past a sector boundary are the SHA-256.
fn has_hash(len: u64) -> bool {
    len % 512 == SHA_LEN
}

/// Copies the database part of `file` to `out`, checking the trailing SHA-256 unless `skip`.
/// Returns the database's length.
fn extract(file: &Path, out: &mut File, skip: bool) -> anyhow::Result<u64> {
    let f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let len = f.metadata()?.len();
    let hashed = has_hash(len);
    if !hashed && !skip {
        bail!(
            "snapshot missing hash but --skip-hash-check=false ({} is {len} bytes: truncated, or not a snapshot)",
            file.display()
        );
    }
    let db_len = if hashed { len - SHA_LEN } else { len };
    let mut r = BufReader::new(f);
    let mut sha = Sha256::new();
    let mut left = db_len;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let want = buf.len().min(left as usize);
        r.read_exact(&mut buf[..want])
            .with_context(|| format!("reading {}", file.display()))?;
        sha.update(&buf[..want]);
        out.write_all(&buf[..want])?;
        left -= want as u64;
    }
    if hashed && !skip {
        let mut stored = [0u8; SHA_LEN as usize];
        r.read_exact(&mut stored)?;
        let got = sha.finalize();
        if got.as_slice() != stored {
            bail!(
                "snapshot {} is corrupt: expected sha256 {}, got {}",
                file.display(),
                hex(&stored),
                hex(&got)
            );
        }
    }
    out.sync_all()?;
    Ok(db_len)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Which database `db` (a snapshot file, or the database extracted from one) holds, by its first
/// bytes.
fn detect(db: &Path, what: &Path) -> anyhow::Result<Format> {
    let mut head = Vec::with_capacity(64);
    File::open(db)
        .with_context(|| format!("cannot open {}", what.display()))?
        .take(64)
        .read_to_end(&mut head)?;
    if snapshot::is_etcd_file(&head) {
        Ok(Format::Etcd)
    } else if head.starts_with(REDB_MAGIC) {
        Ok(Format::Hearth)
    } else {
        bail!(
            "{} is not a snapshot: neither an etcd database (bbolt) nor a Hearth database (redb)",
            what.display()
        )
    }
}

fn open_db(path: &Path, what: &Path) -> anyhow::Result<Backend> {
    Backend::open(path, BackendConfig::default())
        .with_context(|| format!("{} does not hold a valid database", what.display()))
}

fn open_bbolt(path: &Path, what: &Path) -> anyhow::Result<bbolt::Db> {
    let db = bbolt::Db::open(path)
        .with_context(|| format!("{} does not hold a valid etcd database", what.display()))?;
    snapshot::check_integrity(&db).with_context(|| format!("{}", what.display()))?;
    Ok(db)
}

pub fn status(file: &Path) -> anyhow::Result<Status> {
    if detect(file, file)? == Format::Etcd {
        // As etcdutl does, the file is read as the bbolt database it starts with, in place: a
        // reader never goes past the pages the meta names, so a `snapshot save` trailer (right or
        // wrong) and its absence (a member's `member/snap/db`) make no difference.
        let db = bbolt::Db::open(file)
            .with_context(|| format!("{} does not hold a valid etcd database", file.display()))?;
        let s = snapshot::status(&db).with_context(|| format!("{}", file.display()))?;
        return Ok(Status {
            hash: s.hash,
            revision: s.revision,
            total_keys: s.total_keys,
            total_size: s.total_size,
        });
    }
    // redb may write to a file it opens, so Hearth's database is read from a copy; the trailer,
    // if any, is left out unchecked, as for etcd's files.
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("db");
    let total_size = extract(file, &mut File::create(&db)?, true)?;
    let be = Arc::new(open_db(&db, file)?);
    let (hash, total_keys) = {
        let r = be.read()?;
        (r.hash(&|_, _| false)?, r.total_keys()?)
    };
    let kv = mvcc::KvStore::open(be.clone())
        .with_context(|| format!("{} does not hold valid key-value data", file.display()))?;
    Ok(Status {
        hash,
        revision: kv.rev(),
        total_keys,
        total_size,
    })
}

/// What a restore made.
struct Restored {
    revision: i64,
    compact_revision: i64,
    member_id: u64,
    cluster_id: u64,
    format: Format,
    skipped: Vec<String>,
}

pub fn restore(file: &Path, cfg: &server::Config, skip_hash_check: bool) -> anyhow::Result<()> {
    // etcdutl fills an existing empty data dir (a mount point, as Kubernetes hands a pod one)
    // and refuses any other; an existing wal-dir it refuses even empty.
    let fill = match std::fs::read_dir(&cfg.data_dir).map(|mut d| d.next().is_none()) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Ok(true) => true,
        _ => bail!("data-dir {:?} not empty or could not be read", cfg.data_dir),
    };
    if let Some(w) = cfg.wal_dir.as_ref().filter(|w| w.exists()) {
        bail!("wal-dir {w:?} exists");
    }
    let wal = wal_place(cfg)?;
    // Check the flags before writing anything.
    server::new_member_meta(cfg)?;
    // Removed on any error. If the process dies, a hidden `.*.restore-*` directory is left
    // beside the target (or, when filling an existing directory, inside it), never a
    // half-written data directory.
    let staging = if fill {
        // Inside the target, so that moving the result into it is a rename on its file system.
        tempfile::Builder::new()
            .prefix(".restore-")
            .tempdir_in(&cfg.data_dir)
    } else {
        let parent = parent_of(&cfg.data_dir);
        backend::swap::create_dir_all_durably(&parent, backend::swap::sync_dir)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        tempfile::Builder::new()
            .prefix(&format!(".{}.restore-", file_name(&cfg.data_dir)))
            .tempdir_in(&parent)
    }
    .with_context(|| format!("cannot create a staging directory for {:?}", cfg.data_dir))?;
    // A WAL outside the data dir is staged beside `--wal-dir`, so it too is put in place by a
    // rename.
    let wal_staging = match &wal {
        WalPlace::Apart(w) => {
            let parent = parent_of(w);
            backend::swap::create_dir_all_durably(&parent, backend::swap::sync_dir)
                .with_context(|| format!("cannot create {}", parent.display()))?;
            Some(
                tempfile::Builder::new()
                    .prefix(&format!(".{}.restore-", file_name(w)))
                    .tempdir_in(&parent)
                    .with_context(|| {
                        format!("cannot create a staging directory in {}", parent.display())
                    })?,
            )
        }
        WalPlace::Inside(_) => None,
    };
    let staged_cfg = server::Config {
        data_dir: staging.path().to_path_buf(),
        wal_dir: match (&wal, &wal_staging) {
            (WalPlace::Inside(rel), _) => Some(staging.path().join(rel)),
            (WalPlace::Apart(_), Some(s)) => Some(s.path().join("wal")),
            (WalPlace::Apart(_), None) => unreachable!("a WAL apart is staged apart"),
        },
        ..cfg.clone()
    };
    let r = restore_into(file, &staged_cfg, skip_hash_check)?;
    let wal = wal_staging
        .as_ref()
        .zip(cfg.wal_dir.as_deref())
        .map(|(s, w)| (s.path().join("wal"), w));
    publish(staging, fill, &cfg.data_dir, wal)?;
    for s in &r.skipped {
        eprintln!("warning: left out of the restore: {s}");
    }
    println!(
        "restored {} snapshot {} at revision {} (compacted at {}) into {} (member {:x}, cluster {:x})",
        match r.format {
            Format::Etcd => "etcd",
            Format::Hearth => "Hearth",
        },
        file.display(),
        r.revision,
        r.compact_revision,
        cfg.data_dir.display(),
        r.member_id,
        r.cluster_id
    );
    Ok(())
}

/// Where the restored WAL goes.
enum WalPlace {
    /// At this path inside the data dir (`member/wal` without `--wal-dir`): it moves with the
    /// data.
    Inside(PathBuf),
    /// At `--wal-dir`, elsewhere.
    Apart(PathBuf),
}

fn wal_place(cfg: &server::Config) -> anyhow::Result<WalPlace> {
    let Some(w) = &cfg.wal_dir else {
        return Ok(WalPlace::Inside(Path::new("member").join("wal")));
    };
    let (data, wal) = (std::path::absolute(&cfg.data_dir)?, std::path::absolute(w)?);
    if let Ok(rel) = wal.strip_prefix(&data) {
        return Ok(WalPlace::Inside(rel.to_path_buf()));
    }
    if data.starts_with(&wal) {
        bail!("data-dir {:?} is inside wal-dir {w:?}", cfg.data_dir);
    }
    Ok(WalPlace::Apart(w.clone()))
}

/// Puts a complete restore in place: the WAL staged at `wal.0` (when apart) at `--wal-dir`
/// `wal.1` first, then the data staged in `staging` at `data_dir` (renamed there, or, to `fill`
/// an existing empty directory, its entries moved into it). A failure takes back what was
/// already put in place, so nothing is left at either target. Killed between the two steps, a
/// restore leaves a WAL at `--wal-dir` and no data dir: a WAL alone is no member, unlike a data
/// dir without its WAL, which would start as a new one.
fn publish(
    staging: tempfile::TempDir,
    fill: bool,
    data_dir: &Path,
    wal: Option<(PathBuf, &Path)>,
) -> anyhow::Result<()> {
    let mut placed = Placed::default();
    if let Some((from, to)) = wal {
        if to.exists() {
            bail!("wal-dir {to:?} exists");
        }
        placed.rename(&from, to)?;
        backend::swap::sync_dir(&parent_of(to))?;
    }
    if fill {
        let mut names = std::fs::read_dir(staging.path())?
            .map(|e| Ok(e?.file_name()))
            .collect::<std::io::Result<Vec<_>>>()?;
        // `member` last: until it is there, the directory is no member's.
        names.sort_by_key(|n| n == "member");
        for n in names {
            let to = data_dir.join(&n);
            // A rename would replace an empty directory that appeared since the check.
            if to.symlink_metadata().is_ok() {
                bail!("data-dir {data_dir:?} not empty or could not be read");
            }
            placed.rename(&staging.path().join(&n), &to)?;
        }
        staging.close()?;
        backend::swap::sync_dir(data_dir)?;
    } else {
        if data_dir.symlink_metadata().is_ok() {
            bail!("data-dir {data_dir:?} not empty or could not be read");
        }
        placed.rename(&staging.keep(), data_dir)?;
        backend::swap::sync_dir(&parent_of(data_dir))?;
    }
    placed.0.clear();
    Ok(())
}

/// What [`publish`] has renamed into place, removed again (and the removal made durable) when
/// dropped before it is done.
#[derive(Default)]
struct Placed(Vec<PathBuf>);

impl Placed {
    /// Renames `from` to `to`; whatever happens, `from` will not outlive the restore.
    fn rename(&mut self, from: &Path, to: &Path) -> anyhow::Result<()> {
        match std::fs::rename(from, to) {
            Ok(()) => {
                self.0.push(to.to_path_buf());
                Ok(())
            }
            Err(e) => {
                remove(from);
                Err(e).with_context(|| format!("cannot move the restored data into {to:?}"))
            }
        }
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        for p in self.0.drain(..).rev() {
            remove(&p);
            let _ = backend::swap::sync_dir(&parent_of(&p));
        }
    }
}

/// Best effort: the restore is failing already.
fn remove(p: &Path) {
    let _ = match p.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        _ => std::fs::remove_file(p),
    };
}

/// The directory `p` is in.
fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into())
}

fn restore_into(
    file: &Path,
    cfg: &server::Config,
    skip_hash_check: bool,
) -> anyhow::Result<Restored> {
    let (_, snap_dir) = server::member_dirs(cfg)?;
    let raw = snap_dir.join("snapshot.part");
    extract(file, &mut File::create(&raw)?, skip_hash_check)?;
    let staged = snap_dir.join("db.restore");
    let format = detect(&raw, file)?;
    let mut skipped = Vec::new();
    match format {
        Format::Etcd => {
            let db = open_bbolt(&raw, file)?;
            let be = Backend::open(&staged, BackendConfig::default())?;
            let imported = snapshot::import(&db, &be)
                .with_context(|| format!("reading {}", file.display()))?;
            skipped = imported.skipped;
            be.close()?;
            drop(db);
            std::fs::remove_file(&raw)?;
        }
        Format::Hearth => std::fs::rename(&raw, &staged)?,
    }
    let (revision, compact_revision) = {
        let be = Arc::new(open_db(&staged, file)?);
        reset_for_new_cluster(&be)?;
        let kv = mvcc::KvStore::open(be.clone())
            .with_context(|| format!("{} does not hold valid key-value data", file.display()))?;
        lease::Lessor::recover(&be.read()?, 1)
            .with_context(|| format!("{} does not hold valid leases", file.display()))?;
        let revs = (kv.rev(), kv.compact_rev());
        drop(kv);
        Arc::try_unwrap(be)
            .map_err(|_| anyhow::anyhow!("backend still in use"))?
            .close()?;
        revs
    };
    let meta = server::bootstrap_from_backend(cfg, &staged)?;
    Ok(Restored {
        revision,
        compact_revision,
        member_id: meta.node_id,
        cluster_id: meta.cluster_id,
        format,
        skipped,
    })
}

/// The snapshot comes from another cluster: its Raft position (consistent index, term) means
/// nothing to the new member's fresh log, which starts at index 1, so it is cleared; so is the
/// old cluster's membership. Data, revisions, compaction marks, leases, auth and alarms stay
/// (etcd's restore keeps alarms too).
fn reset_for_new_cluster(be: &Backend) -> anyhow::Result<()> {
    let mut w = be.write()?;
    let mut meta_keys = Vec::new();
    w.for_each(Bucket::Meta, &[], None, &mut |k, _| {
        if mvcc::is_raft_meta(Bucket::Meta, k) {
            meta_keys.push(k.to_vec());
        }
        true
    })?;
    for k in meta_keys {
        w.delete(Bucket::Meta, &k)?;
    }
    membership::store::clear(&mut w)?;
    w.commit_durable()?;
    Ok(())
}

pub fn defrag(data_dir: &Path) -> anyhow::Result<()> {
    let db = data_dir.join("member").join("snap").join("db");
    if !db.exists() {
        bail!("no backend database at {}", db.display());
    }
    let be = Backend::open(&db, BackendConfig::default())
        .with_context(|| format!("cannot open {}", db.display()))?;
    let stats = be.defrag(&backend::DefragConfig::default())?;
    be.close()?;
    println!(
        "Finished defragmenting etcd data[{}] ({} -> {} bytes)",
        data_dir.display(),
        stats.size_before,
        stats.size_after
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_file(dir: &Path) -> std::path::PathBuf {
        let be = Backend::open(dir.join("src"), BackendConfig::default()).unwrap();
        let mut w = be.write().unwrap();
        w.put(Bucket::Meta, b"consistent_index", &9u64.to_be_bytes())
            .unwrap();
        // Lease 5 with a TTL of 10 s (`leasepb.Lease`).
        w.put(Bucket::Lease, &5i64.to_be_bytes(), LEASE_5).unwrap();
        w.commit_durable().unwrap();
        let mut bytes = Vec::new();
        be.snapshot().unwrap().read_to_end(&mut bytes).unwrap();
        let sha = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sha);
        let p = dir.join("snap.db");
        std::fs::write(&p, &bytes).unwrap();
        p
    }

    #[test]
    fn status_does_not_check_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let p = snapshot_file(dir.path());
        let s = status(&p).unwrap();
        assert_eq!(s.total_keys, 2);
        assert_eq!(s.revision, 1);

        // A member's `member/snap/db` (no trailer), and a wrong trailer, read the same.
        let mut bytes = std::fs::read(&p).unwrap();
        let db_len = bytes.len() - SHA_LEN as usize;
        std::fs::write(&p, &bytes[..db_len]).unwrap();
        assert_eq!(status(&p).unwrap(), s);
        bytes[db_len] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(status(&p).unwrap(), s);
    }

    #[test]
    fn offline_defrag_shrinks_a_data_dir_and_keeps_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("member/snap");
        std::fs::create_dir_all(&snap).unwrap();
        let before = {
            let be = Backend::open(snap.join("db"), BackendConfig::default()).unwrap();
            let v = vec![1u8; 4000];
            for i in 0..2000u32 {
                let mut w = be.write().unwrap();
                w.put(Bucket::Key, &i.to_be_bytes(), &v).unwrap();
                w.commit().unwrap();
            }
            let mut w = be.write().unwrap();
            w.delete_range(Bucket::Key, &10u32.to_be_bytes(), None)
                .unwrap();
            w.commit_durable().unwrap();
            let size = be.size().unwrap();
            be.close().unwrap();
            size
        };
        defrag(dir.path()).unwrap();
        let be = Backend::open(snap.join("db"), BackendConfig::default()).unwrap();
        assert!(
            be.size().unwrap() < before / 4,
            "{} vs {before}",
            be.size().unwrap()
        );
        assert_eq!(
            be.read()
                .unwrap()
                .range(Bucket::Key, &[], None, 0)
                .unwrap()
                .len(),
            10
        );
        assert!(defrag(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn restore_resets_the_raft_position_and_refuses_an_existing_dir() {
        let dir = tempfile::tempdir().unwrap();
        let p = snapshot_file(dir.path());
        let cfg = server::Config {
            data_dir: dir.path().join("restored"),
            ..Default::default()
        };
        restore(&p, &cfg, false).unwrap();
        let be = Backend::open(
            cfg.data_dir.join("member/snap/db"),
            BackendConfig::default(),
        )
        .unwrap();
        let r = be.read().unwrap();
        assert_eq!(r.get(Bucket::Meta, b"consistent_index").unwrap(), None);
        assert_eq!(
            r.get(Bucket::Lease, &5i64.to_be_bytes())
                .unwrap()
                .as_deref(),
            Some(LEASE_5)
        );
        assert!(cfg.data_dir.join("member/wal").exists());
        let e = restore(&p, &cfg, false).unwrap_err().to_string();
        assert!(e.contains("not empty or could not be read"), "{e}");
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    const LEASE_5: &[u8] = &[0x08, 0x05, 0x10, 0x0a];

    #[test]
    fn restore_puts_the_wal_in_wal_dir() {
        let dir = tempfile::tempdir().unwrap();
        let p = snapshot_file(dir.path());
        let cfg = server::Config {
            data_dir: dir.path().join("restored"),
            wal_dir: Some(dir.path().join("logs").join("wal")),
            ..Default::default()
        };
        restore(&p, &cfg, false).unwrap();
        assert!(!cfg.data_dir.join("member/wal").exists());
        let segments = std::fs::read_dir(dir.path().join("logs/wal"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".wal")
            })
            .count();
        assert_eq!(segments, 1);
        assert!(cfg.data_dir.join("member/snap/db").exists());
        // An existing wal-dir is refused before anything is written.
        let again = server::Config {
            data_dir: dir.path().join("other"),
            ..cfg.clone()
        };
        let e = restore(&p, &again, false).unwrap_err().to_string();
        assert!(e.contains("wal-dir"), "{e}");
        assert!(!again.data_dir.exists());
    }

    #[test]
    fn a_failed_wal_dir_leaves_nothing_at_either_target() {
        let dir = tempfile::tempdir().unwrap();
        let p = snapshot_file(dir.path());
        // `--wal-dir` under a regular file cannot be created.
        std::fs::write(dir.path().join("afile"), b"").unwrap();
        let cfg = server::Config {
            data_dir: dir.path().join("x2"),
            wal_dir: Some(dir.path().join("afile").join("wal")),
            ..Default::default()
        };
        let e = format!("{:#}", restore(&p, &cfg, false).unwrap_err());
        assert!(e.contains("afile"), "{e}");
        assert!(!cfg.data_dir.exists(), "{e}");
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    /// The last step fails after the WAL was put at `--wal-dir` (something took the data dir's
    /// path meanwhile): the WAL is taken back, and what took the path is left alone.
    #[test]
    fn a_failed_last_step_takes_the_wal_back() {
        let dir = tempfile::tempdir().unwrap();
        for fill in [false, true] {
            let data_dir = dir.path().join(format!("data-{fill}"));
            let wal_dir = dir.path().join(format!("wal-{fill}"));
            std::fs::create_dir_all(data_dir.join("member")).unwrap();
            let staging = tempfile::Builder::new()
                .prefix(".restore-")
                .tempdir_in(if fill { &data_dir } else { dir.path() })
                .unwrap();
            std::fs::create_dir_all(staging.path().join("member/snap")).unwrap();
            let wal_staging = tempfile::Builder::new()
                .prefix(".wal.restore-")
                .tempdir_in(dir.path())
                .unwrap();
            let staged_wal = wal_staging.path().join("wal");
            std::fs::create_dir(&staged_wal).unwrap();
            std::fs::write(staged_wal.join("0.wal"), b"log").unwrap();
            let e = publish(staging, fill, &data_dir, Some((staged_wal, &wal_dir))).unwrap_err();
            assert!(e.to_string().contains("not empty"), "{e}");
            assert!(!wal_dir.exists(), "fill {fill}");
            drop(wal_staging);
            let names = |d: &Path| {
                std::fs::read_dir(d)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect::<Vec<_>>()
            };
            assert_eq!(names(&data_dir), ["member"], "fill {fill}");
            assert!(names(&data_dir.join("member")).is_empty(), "fill {fill}");
            assert_eq!(leftovers(dir.path()), Vec::<String>::new());
        }
    }

    /// A `--wal-dir` inside the data dir is put in place with it, in the same rename; one that
    /// would hold the data dir is refused before anything is written.
    #[test]
    fn a_wal_dir_inside_the_data_dir_moves_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = snapshot_file(dir.path());
        let cfg = server::Config {
            data_dir: dir.path().join("x4"),
            wal_dir: Some(dir.path().join("x4").join("wal")),
            ..Default::default()
        };
        restore(&p, &cfg, false).unwrap();
        assert!(cfg.data_dir.join("member/snap/db").exists());
        assert!(!cfg.data_dir.join("member/wal").exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("x4/wal"))
                .unwrap()
                .count(),
            1
        );

        let cfg = server::Config {
            data_dir: dir.path().join("x5").join("data"),
            wal_dir: Some(dir.path().join("x5")),
            ..Default::default()
        };
        let e = restore(&p, &cfg, false).unwrap_err().to_string();
        assert!(e.contains("inside wal-dir"), "{e}");
        assert!(!dir.path().join("x5").exists());
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    /// As etcdutl does, an existing empty data dir (a mount point) is filled, not replaced: it
    /// keeps its inode, hence its owner, mode and mount.
    #[test]
    fn restore_fills_an_existing_empty_data_dir() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = snapshot_file(dir.path());
        for wal_dir in [None, Some(dir.path().join("logs").join("wal"))] {
            let data_dir = dir.path().join("mnt");
            std::fs::create_dir(&data_dir).unwrap();
            let ino = std::fs::metadata(&data_dir).unwrap().ino();
            let cfg = server::Config {
                data_dir: data_dir.clone(),
                wal_dir: wal_dir.clone(),
                ..Default::default()
            };
            restore(&p, &cfg, false).unwrap();
            assert_eq!(std::fs::metadata(&data_dir).unwrap().ino(), ino);
            let names: Vec<_> = std::fs::read_dir(&data_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["member"], "nothing else in {data_dir:?}");
            assert!(data_dir.join("member/snap/db").exists());
            let wal = wal_dir.unwrap_or_else(|| data_dir.join("member/wal"));
            assert_eq!(std::fs::read_dir(&wal).unwrap().count(), 1, "{wal:?}");
            // Not empty any more: refused, in etcdutl's words.
            let e = restore(&p, &cfg, false).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("data-dir {data_dir:?} not empty or could not be read")
            );
            std::fs::remove_dir_all(&data_dir).unwrap();
            let _ = std::fs::remove_dir_all(dir.path().join("logs"));
        }
        // A file is no directory to fill.
        let cfg = server::Config {
            data_dir: p.clone(),
            ..Default::default()
        };
        let e = restore(&p, &cfg, false).unwrap_err().to_string();
        assert!(e.contains("not empty or could not be read"), "{e}");
        // etcdutl refuses an existing wal-dir even when it is empty.
        let wal_dir = dir.path().join("empty-wal");
        std::fs::create_dir(&wal_dir).unwrap();
        let cfg = server::Config {
            data_dir: dir.path().join("other"),
            wal_dir: Some(wal_dir.clone()),
            ..Default::default()
        };
        let e = restore(&p, &cfg, false).unwrap_err().to_string();
        assert_eq!(e, format!("wal-dir {wal_dir:?} exists"));
        assert!(!cfg.data_dir.exists());
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    /// Staging directories left in `dir`.
    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".restore-"))
            .collect()
    }

    /// The snapshot file etcd 3.4.23 saved (see the bbolt crate's golden test), trailer included.
    const ETCD_FILE: &[u8] = include_bytes!("../../bbolt/tests/data/etcd-3.4.23-small.db");

    #[test]
    fn status_of_an_etcd_file_is_etcds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("etcd.db");
        let db = &ETCD_FILE[..ETCD_FILE.len() - SHA_LEN as usize];
        let mut bad_trailer = ETCD_FILE.to_vec();
        *bad_trailer.last_mut().unwrap() ^= 1;
        // What `etcdctl snapshot status -w json` printed for each: etcd reads the bbolt
        // database and never looks at the trailer.
        let want = Status {
            hash: 168725416,
            revision: 6,
            total_keys: 14,
            total_size: 20480,
        };
        for (name, bytes) in [
            ("saved", ETCD_FILE),
            ("raw member/snap/db", db),
            ("wrong trailer", &bad_trailer[..]),
        ] {
            std::fs::write(&p, bytes).unwrap();
            assert_eq!(status(&p).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn restore_of_an_etcd_file_keeps_revisions_leases_and_auth() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("etcd.db");
        std::fs::write(&p, ETCD_FILE).unwrap();
        let cfg = server::Config {
            data_dir: dir.path().join("restored"),
            ..Default::default()
        };
        restore(&p, &cfg, false).unwrap();
        let be = Arc::new(
            Backend::open(
                cfg.data_dir.join("member/snap/db"),
                BackendConfig::default(),
            )
            .unwrap(),
        );
        {
            let r = be.read().unwrap();
            assert_eq!(r.range(Bucket::Lease, &[], None, 0).unwrap().len(), 1);
            assert!(r.get(Bucket::AuthUsers, b"root").unwrap().is_some());
            assert!(r.get(Bucket::AuthRoles, b"r1").unwrap().is_some());
            // The old cluster's member is gone; the new one is written when the log applies.
            assert!(r.range(Bucket::Members, &[], None, 0).unwrap().is_empty());
        }
        let kv = mvcc::KvStore::open(be.clone()).unwrap();
        assert_eq!((kv.rev(), kv.compact_rev()), (6, 3));
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn damaged_or_foreign_files_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = server::Config {
            data_dir: dir.path().join("never"),
            ..Default::default()
        };
        let with_hash = |db: &[u8]| {
            let mut b = db.to_vec();
            b.extend_from_slice(&Sha256::digest(db));
            b
        };
        let etcd_db = &ETCD_FILE[..ETCD_FILE.len() - 32];
        // A page of the key space pointing past the end: checksum right, structure wrong.
        let mut bad_root = etcd_db.to_vec();
        bad_root[16 + 16..16 + 24].copy_from_slice(&1000u64.to_le_bytes());
        bad_root[4096 + 16 + 16..4096 + 16 + 24].copy_from_slice(&1000u64.to_le_bytes());
        // What restore and status say. Status does not look at the checksum, as etcd's does not:
        // the flipped byte is in a value, which etcd's status hashes as it is (its hash for
        // this file).
        /// Name, bytes, restore's error, status's hash or error.
        type Case = (
            &'static str,
            Vec<u8>,
            &'static str,
            Result<u32, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "foreign",
                with_hash(&[7u8; 8192]),
                "neither an etcd database",
                Err("neither an etcd database"),
            ),
            (
                "flipped",
                {
                    let mut b = ETCD_FILE.to_vec();
                    b[9000] ^= 4;
                    b
                },
                "expected sha256",
                Ok(2508047073),
            ),
            (
                "truncated",
                ETCD_FILE[..ETCD_FILE.len() - 1000].to_vec(),
                "missing hash",
                Err("truncated"),
            ),
            // Truncated, with a checksum of what is left.
            (
                "short",
                with_hash(&etcd_db[..etcd_db.len() - 4096]),
                "truncated",
                Err("truncated"),
            ),
            (
                "bad-meta",
                with_hash(&bad_root),
                "no valid meta page",
                Err("no valid meta page"),
            ),
        ];
        for (name, bytes, want, want_status) in cases {
            let p = dir.path().join(name);
            std::fs::write(&p, &bytes).unwrap();
            let e = format!("{:#}", restore(&p, &cfg, false).unwrap_err());
            assert!(e.contains(want), "{name}: {e}");
            match (status(&p), want_status) {
                (Ok(s), Ok(hash)) => assert_eq!(s.hash, hash, "{name}"),
                (Err(e), Err(want)) => {
                    let e = format!("{e:#}");
                    assert!(e.contains(want), "{name}: {e}");
                }
                (got, want) => panic!("{name}: status {got:?}, want {want:?}"),
            }
            assert!(!cfg.data_dir.exists(), "{name}");
            assert_eq!(leftovers(dir.path()), Vec::<String>::new(), "{name}");
        }
    }
}
