//! bbolt's on-disk structures, byte for byte: the page header, the meta record, branch and leaf
//! elements, the bucket header and the freelist. Every integer is little-endian (bbolt writes
//! its structs as the machine lays them out; etcd runs on little-endian machines, and a
//! big-endian file would fail the magic check here, as it would in bbolt on another machine).
//!
//! Decoding never indexes out of bounds: each accessor checks the range it reads and returns
//! `None` (the callers turn that into an error naming the page).

/// `meta.magic`.
pub const MAGIC: u32 = 0xED0C_DAED;
/// `meta.version`: the data file format version bbolt 1.x reads and writes.
pub const VERSION: u32 = 2;
/// `meta.freelist` when the freelist is not stored (bbolt's `NoFreelistSync`, which etcd sets):
/// a reader rebuilds it as "every page no bucket uses".
pub const NO_FREELIST: u64 = u64::MAX;
/// bbolt's largest key.
pub const MAX_KEY_SIZE: usize = 32768;
/// bbolt's largest value.
pub const MAX_VALUE_SIZE: usize = (1 << 31) - 2;
/// The page size Hearth writes (Linux's page size, what etcd's bbolt picks there).
pub const DEFAULT_PAGE_SIZE: usize = 4096;

/// Page header: `id u64, flags u16, count u16, overflow u32`.
pub(crate) const PAGE_HEADER: usize = 16;
/// Branch element: `pos u32, ksize u32, pgid u64`; `pos` is relative to the element itself.
pub(crate) const BRANCH_ELEM: usize = 16;
/// Leaf element: `flags u32, pos u32, ksize u32, vsize u32`; `pos` relative to the element.
pub(crate) const LEAF_ELEM: usize = 16;
/// Bucket header (the value of a bucket's entry in its parent): `root u64, sequence u64`,
/// followed by the bucket's only page when it is inline (`root == 0`).
pub(crate) const BUCKET_HEADER: usize = 16;
/// Meta record (after the page header of pages 0 and 1), checksum included.
pub(crate) const META_LEN: usize = 64;
/// The checksum covers the meta record up to the checksum field.
const META_SUMMED: usize = 56;

pub(crate) const BRANCH_PAGE: u16 = 0x01;
pub(crate) const LEAF_PAGE: u16 = 0x02;
pub(crate) const META_PAGE: u16 = 0x04;
pub(crate) const FREELIST_PAGE: u16 = 0x10;
/// Leaf element flag: the value is a nested bucket.
pub(crate) const BUCKET_LEAF: u32 = 0x01;

/// bbolt stops at 0xFFFF elements per page (`count` is a u16, and 0xFFFF marks a long freelist).
pub(crate) const MAX_ELEMENTS: usize = 0xFFFE;

pub(crate) fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// A page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    pub fn parse(b: &[u8]) -> Option<PageHeader> {
        Some(PageHeader {
            id: u64_at(b, 0)?,
            flags: u16_at(b, 8)?,
            count: u16_at(b, 10)?,
            overflow: u32_at(b, 12)?,
        })
    }

    pub fn write(&self, b: &mut [u8]) {
        b[0..8].copy_from_slice(&self.id.to_le_bytes());
        b[8..10].copy_from_slice(&self.flags.to_le_bytes());
        b[10..12].copy_from_slice(&self.count.to_le_bytes());
        b[12..16].copy_from_slice(&self.overflow.to_le_bytes());
    }

    /// bbolt's name for the page type, as its error messages print it.
    pub fn kind(&self) -> String {
        if self.flags & BRANCH_PAGE != 0 {
            "branch".into()
        } else if self.flags & LEAF_PAGE != 0 {
            "leaf".into()
        } else if self.flags & META_PAGE != 0 {
            "meta".into()
        } else if self.flags & FREELIST_PAGE != 0 {
            "freelist".into()
        } else {
            format!("unknown<{:02x}>", self.flags)
        }
    }
}

/// The meta record of pages 0 and 1: where the root bucket and the freelist are, how many pages
/// the file uses (`pgid`, the high-water mark) and the transaction that wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub magic: u32,
    pub version: u32,
    pub page_size: u32,
    pub flags: u32,
    /// Root page of the root bucket (whose entries are the top-level buckets).
    pub root: u64,
    pub sequence: u64,
    /// Page of the freelist, or [`NO_FREELIST`].
    pub freelist: u64,
    /// Pages in use: every page id is below it.
    pub pgid: u64,
    pub txid: u64,
    pub checksum: u64,
}

impl Meta {
    pub(crate) fn parse(b: &[u8]) -> Option<Meta> {
        Some(Meta {
            magic: u32_at(b, 0)?,
            version: u32_at(b, 4)?,
            page_size: u32_at(b, 8)?,
            flags: u32_at(b, 12)?,
            root: u64_at(b, 16)?,
            sequence: u64_at(b, 24)?,
            freelist: u64_at(b, 32)?,
            pgid: u64_at(b, 40)?,
            txid: u64_at(b, 48)?,
            checksum: u64_at(b, 56)?,
        })
    }

    fn fields(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[0..4].copy_from_slice(&self.magic.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.root.to_le_bytes());
        b[24..32].copy_from_slice(&self.sequence.to_le_bytes());
        b[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        b[40..48].copy_from_slice(&self.pgid.to_le_bytes());
        b[48..56].copy_from_slice(&self.txid.to_le_bytes());
        b[56..64].copy_from_slice(&self.checksum.to_le_bytes());
        b
    }

    /// FNV-1a (64 bit) of the record up to the checksum, as bbolt's `meta.sum64`.
    pub(crate) fn sum64(&self) -> u64 {
        fnv1a64(&self.fields()[..META_SUMMED])
    }

    /// The record with its checksum filled in.
    pub(crate) fn encode(mut self) -> [u8; META_LEN] {
        self.checksum = self.sum64();
        self.fields()
    }

    /// bbolt's `meta.validate`: magic, version, then the checksum (bbolt accepts a checksum of 0,
    /// written by bolt versions before checksums existed).
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.magic != MAGIC {
            Err(format!("invalid magic {:#010x}", self.magic))
        } else if self.version != VERSION {
            Err(format!(
                "version {} (only version {VERSION} is supported)",
                self.version
            ))
        } else if self.checksum != 0 && self.checksum != self.sum64() {
            Err(format!(
                "checksum mismatch (stored {:#018x}, computed {:#018x})",
                self.checksum,
                self.sum64()
            ))
        } else {
            Ok(())
        }
    }
}

/// 64-bit FNV-1a, bbolt's meta checksum (Go's `hash/fnv.New64a`).
pub(crate) fn fnv1a64(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One element of a leaf page, read from `page` (which starts at the page header).
pub(crate) fn leaf_element(page: &[u8], i: usize) -> Option<(u32, &[u8], &[u8])> {
    let e = PAGE_HEADER.checked_add(i.checked_mul(LEAF_ELEM)?)?;
    let flags = u32_at(page, e)?;
    let pos = u32_at(page, e + 4)? as usize;
    let ksize = u32_at(page, e + 8)? as usize;
    let vsize = u32_at(page, e + 12)? as usize;
    let k0 = e.checked_add(pos)?;
    let v0 = k0.checked_add(ksize)?;
    let v1 = v0.checked_add(vsize)?;
    Some((flags, page.get(k0..v0)?, page.get(v0..v1)?))
}

/// One element of a branch page: the first key of a child and the child's page.
pub(crate) fn branch_element(page: &[u8], i: usize) -> Option<(&[u8], u64)> {
    let e = PAGE_HEADER.checked_add(i.checked_mul(BRANCH_ELEM)?)?;
    let pos = u32_at(page, e)? as usize;
    let ksize = u32_at(page, e + 4)? as usize;
    let pgid = u64_at(page, e + 8)?;
    let k0 = e.checked_add(pos)?;
    Some((page.get(k0..k0.checked_add(ksize)?)?, pgid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_go() {
        // Go: fnv.New64a() over "" and "a".
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn meta_round_trips_and_detects_damage() {
        let m = Meta {
            magic: MAGIC,
            version: VERSION,
            page_size: 4096,
            flags: 0,
            root: 7,
            sequence: 0,
            freelist: 2,
            pgid: 9,
            txid: 4,
            checksum: 0,
        };
        let b = m.encode();
        let back = Meta::parse(&b).unwrap();
        back.validate().unwrap();
        let mut bad = b;
        bad[20] ^= 1;
        let e = Meta::parse(&bad).unwrap().validate().unwrap_err();
        assert!(e.contains("checksum mismatch"), "{e}");
        assert!(Meta::parse(&b[..63]).is_none());
    }

    #[test]
    fn elements_out_of_bounds_are_none() {
        let mut page = vec![0u8; 64];
        PageHeader {
            id: 3,
            flags: LEAF_PAGE,
            count: 1,
            overflow: 0,
        }
        .write(&mut page);
        // pos points past the page.
        page[20..24].copy_from_slice(&1000u32.to_le_bytes());
        page[24..28].copy_from_slice(&1u32.to_le_bytes());
        assert!(leaf_element(&page, 0).is_none());
        assert!(leaf_element(&page, usize::MAX).is_none());
        assert!(branch_element(&page, 3).is_none());
    }
}
