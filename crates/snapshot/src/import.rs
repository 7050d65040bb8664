//! etcd's snapshot file into a Hearth backend, and etcd's `snapshot status` of such a file.
//!
//! The import walks each bucket of the file once in key order and writes it into the backend in
//! transactions of at most [`IMPORT_BATCH`] pairs (made durable once, at the end), so memory
//! stays bounded whatever the file size. It checks only what it must to place a pair (the
//! shape of the file, the buckets); the records themselves are checked by the layers that load
//! them (`mvcc::KvStore::open`, the lessor), which a restore runs before it declares success.

use backend::{Backend, Bucket};

use crate::schema::{self, Import};
use crate::SnapshotError;

/// Pairs written per backend transaction.
pub const IMPORT_BATCH: usize = 10_000;

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Pairs written into the backend.
    pub pairs: u64,
    /// What was left out on purpose, one line each (e.g. a bucket Hearth does not know).
    pub skipped: Vec<String>,
}

/// What `etcdctl snapshot status` reports about a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// CRC-32C over every bucket's name and then its keys and values, in bbolt's order.
    pub hash: u32,
    /// The main revision of the last key of the `key` bucket (0 if it is empty).
    pub revision: i64,
    /// Pairs in every bucket together.
    pub total_keys: u64,
    /// Pages in use times the page size.
    pub total_size: u64,
}

/// Fails unless `db` passes bbolt's integrity check (as etcd's `snapshot status` does first).
pub fn check_integrity(db: &bbolt::Db) -> Result<(), SnapshotError> {
    let problems = db.check()?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SnapshotError::Integrity(problems))
    }
}

fn name(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// etcd's `snapshot status` of `db`: the integrity check, then one walk over every bucket.
pub fn status(db: &bbolt::Db) -> Result<Status, SnapshotError> {
    check_integrity(db)?;
    let mut crc = 0u32;
    let mut revision = 0i64;
    let mut total_keys = 0u64;
    let mut failure = None;
    for (bucket, r) in db.buckets()? {
        crc = crc32c::crc32c_append(crc, &bucket);
        let is_key = bucket == b"key";
        db.for_each(&r, &mut |e| {
            crc = crc32c::crc32c_append(crc, e.key);
            crc = crc32c::crc32c_append(crc, e.value);
            if is_key {
                match e.key.get(..8) {
                    Some(main) => {
                        revision = i64::from_be_bytes(main.try_into().unwrap_or_default());
                    }
                    None => {
                        failure = Some(SnapshotError::Corrupt(format!(
                            "key bucket: key {:02x?} is not a revision",
                            e.key
                        )));
                        return false;
                    }
                }
            }
            total_keys += 1;
            true
        })?;
        if let Some(e) = failure.take() {
            return Err(e);
        }
    }
    Ok(Status {
        hash: crc,
        revision,
        total_keys,
        total_size: db.size(),
    })
}

/// Writes the key space, compaction marks, leases, auth, alarms and cluster version of `db`
/// (an etcd snapshot) into `backend`, which should be empty. See the crate docs for what is
/// left out. The file must hold the `key` and `meta` buckets; a nested bucket is refused (etcd
/// never writes one).
pub fn import(db: &bbolt::Db, backend: &Backend) -> Result<Imported, SnapshotError> {
    let buckets = db.buckets()?;
    for required in [Bucket::Key, Bucket::Meta] {
        if !buckets.iter().any(|(n, _)| n == required.name().as_bytes()) {
            return Err(SnapshotError::NotEtcd(format!(
                "no `{}` bucket (buckets: {})",
                required.name(),
                buckets
                    .iter()
                    .map(|(n, _)| name(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut out = Imported::default();
    let mut txn = Some(backend.write()?);
    let mut in_txn = 0usize;
    for (bucket_name, r) in &buckets {
        let rule = schema::import_rule(bucket_name);
        let target = match rule {
            Import::Copy(b) => b,
            Import::Meta => Bucket::Meta,
            Import::Rebuilt => continue,
            Import::Unknown => {
                out.skipped.push(format!(
                    "bucket {:?}: not an etcd bucket Hearth keeps",
                    name(bucket_name)
                ));
                continue;
            }
        };
        let mut failure: Option<SnapshotError> = None;
        db.for_each(r, &mut |e| {
            let mut step = || -> Result<(), SnapshotError> {
                if e.is_bucket {
                    return Err(SnapshotError::NotEtcd(format!(
                        "bucket {:?} holds a nested bucket {:?}",
                        name(bucket_name),
                        name(e.key)
                    )));
                }
                if rule == Import::Meta {
                    match schema::keep_meta(e.key) {
                        Some(true) => {}
                        Some(false) => return Ok(()),
                        None => {
                            out.skipped.push(format!("meta key {:?}", name(e.key)));
                            return Ok(());
                        }
                    }
                }
                let w = match txn.as_mut() {
                    Some(w) => w,
                    None => txn.insert(backend.write()?),
                };
                w.put(target, e.key, e.value)?;
                out.pairs += 1;
                in_txn += 1;
                if in_txn >= IMPORT_BATCH {
                    if let Some(w) = txn.take() {
                        w.commit()?;
                    }
                    in_txn = 0;
                }
                Ok(())
            };
            match step() {
                Ok(()) => true,
                Err(err) => {
                    failure = Some(err);
                    false
                }
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
    }
    match txn {
        Some(w) => w.commit_durable()?,
        None => backend.force_commit()?,
    }
    Ok(out)
}
