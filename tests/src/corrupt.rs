//! Offline damage to a stopped Hearth member's backend (`<data-dir>/member/snap/db`), for the
//! corruption-check tests: one stored value changed, everything else (revisions, the consistent
//! index, the file's integrity) intact, as a flipped bit that redb's own checks cannot see would
//! leave it. Written with the `backend` crate, so the file stays a valid database.

use std::path::Path;

use api::mvccpb::KeyValue;
use backend::{Backend, BackendConfig, Bucket, Reader as _};
use prost::Message as _;

/// Flips the low bit of the first byte of `key`'s newest value in the member at `data_dir`, which
/// must not be running. Panics if the key has no non-empty value there.
pub fn flip_value(data_dir: &Path, key: &[u8]) {
    let path = data_dir.join("member").join("snap").join("db");
    let be = Backend::open(&path, BackendConfig::default())
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut t = be.write().expect("write transaction");
    let mut newest: Option<(Vec<u8>, KeyValue)> = None;
    t.for_each(Bucket::Key, &[], None, &mut |k, v| {
        if let Ok(kv) = KeyValue::decode(v) {
            if kv.key == key && !kv.value.is_empty() {
                newest = Some((k.to_vec(), kv));
            }
        }
        true
    })
    .expect("scan the key bucket");
    let (k, mut kv) = newest.unwrap_or_else(|| {
        panic!(
            "no value of {:?} in {}",
            String::from_utf8_lossy(key),
            path.display()
        )
    });
    kv.value[0] ^= 1;
    t.put(Bucket::Key, &k, &kv.encode_to_vec())
        .expect("write the changed value");
    t.commit_durable().expect("commit");
}
