//! Snapshot files: a redb database followed by the SHA-256 of its bytes, as the Snapshot RPC
//! streams it (etcd's layout). `status` and `restore` verify the checksum before trusting a
//! byte; `defrag` rewrites a stopped member's backend.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use backend::{Backend, BackendConfig, Bucket, Reader as _};
use sha2::{Digest as _, Sha256};

const SHA_LEN: u64 = 32;

/// What `snapshot status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// CRC-32C of every bucket's content.
    pub hash: u32,
    pub revision: i64,
    pub total_keys: u64,
    /// Bytes of the database (without the checksum).
    pub total_size: u64,
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

fn open_db(path: &Path, what: &Path) -> anyhow::Result<Backend> {
    Backend::open(path, BackendConfig::default())
        .with_context(|| format!("{} does not hold a valid database", what.display()))
}

pub fn status(file: &Path) -> anyhow::Result<Status> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("db");
    let total_size = extract(file, &mut File::create(&db)?, false)?;
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

pub fn restore(file: &Path, cfg: &server::Config, skip_hash_check: bool) -> anyhow::Result<()> {
    if cfg.data_dir.exists() {
        bail!("data-dir {:?} exists", cfg.data_dir);
    }
    // Check the flags before writing anything.
    server::new_member_meta(cfg)?;
    let result = restore_into(file, cfg, skip_hash_check);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&cfg.data_dir);
    }
    result
}

fn restore_into(file: &Path, cfg: &server::Config, skip_hash_check: bool) -> anyhow::Result<()> {
    let (_, snap_dir) = server::member_dirs(&cfg.data_dir)?;
    let staged = snap_dir.join("db.restore");
    extract(file, &mut File::create(&staged)?, skip_hash_check)?;
    let revision = {
        let be = Arc::new(open_db(&staged, file)?);
        reset_for_new_cluster(&be)?;
        let kv = mvcc::KvStore::open(be.clone())
            .with_context(|| format!("{} does not hold valid key-value data", file.display()))?;
        let rev = kv.rev();
        drop(kv);
        Arc::try_unwrap(be)
            .map_err(|_| anyhow::anyhow!("backend still in use"))?
            .close()?;
        rev
    };
    let meta = server::bootstrap_from_backend(cfg, &staged)?;
    println!(
        "restored snapshot {} at revision {revision} into {} (member {:x}, cluster {:x})",
        file.display(),
        cfg.data_dir.display(),
        meta.node_id,
        meta.cluster_id
    );
    Ok(())
}

/// The snapshot comes from another cluster: its Raft position (consistent index, term) means
/// nothing to the new member's fresh log, which starts at index 1, so it is cleared; so are the
/// old cluster's alarms and membership. Data, revisions, compaction marks and leases stay.
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
    w.delete_range(Bucket::Alarm, &[], None)?;
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
        w.put(Bucket::Lease, b"lease", b"1").unwrap();
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
    fn status_checks_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let p = snapshot_file(dir.path());
        let s = status(&p).unwrap();
        assert_eq!(s.total_keys, 2);
        assert_eq!(s.revision, 1);

        let mut bytes = std::fs::read(&p).unwrap();
        bytes[5000] ^= 0x40;
        std::fs::write(&p, &bytes).unwrap();
        let e = status(&p).unwrap_err().to_string();
        assert!(e.contains("expected sha256"), "{e}");

        bytes[5000] ^= 0x40;
        std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
        let e = status(&p).unwrap_err().to_string();
        assert!(e.contains("missing hash"), "{e}");
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
            r.get(Bucket::Lease, b"lease").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert!(cfg.data_dir.join("member/wal").exists());
        let e = restore(&p, &cfg, false).unwrap_err().to_string();
        assert!(e.contains("exists"), "{e}");
    }
}
