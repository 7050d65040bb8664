//! A checksum of the whole backend content, equal for equal content whatever the file layout.

use crate::{Backend, Bucket, ReadTxn, Reader, Result};

impl ReadTxn {
    /// CRC-32C over every bucket's name and then its keys and values in key order, skipping the
    /// pairs `ignore` selects (a layer's bookkeeping that may differ between equal replicas).
    pub fn hash(&self, ignore: &dyn Fn(Bucket, &[u8]) -> bool) -> Result<u32> {
        let mut crc = 0u32;
        for b in Bucket::ALL {
            crc = crc32c::crc32c_append(crc, b.name().as_bytes());
            self.for_each(b, &[], None, &mut |k, v| {
                if !ignore(b, k) {
                    crc = crc32c::crc32c_append(crc, k);
                    crc = crc32c::crc32c_append(crc, v);
                }
                true
            })?;
        }
        Ok(crc)
    }

    /// Number of pairs in every bucket together.
    pub fn total_keys(&self) -> Result<u64> {
        let mut n = 0u64;
        for b in Bucket::ALL {
            self.for_each(b, &[], None, &mut |_, _| {
                n += 1;
                true
            })?;
        }
        Ok(n)
    }
}

impl Backend {
    /// [`ReadTxn::hash`] of the latest commit.
    pub fn hash(&self, ignore: &dyn Fn(Bucket, &[u8]) -> bool) -> Result<u32> {
        self.read()?.hash(ignore)
    }
}
