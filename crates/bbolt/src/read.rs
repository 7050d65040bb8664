//! Reading a bbolt file: pick the meta page as bbolt does, walk bucket trees in key order, and
//! check the file's integrity as bbolt's `Tx.Check` does.
//!
//! Pages are read with positioned reads (`pread`), never memory-mapped: a damaged or truncated
//! file must give an error, and a mapping of a file that is shorter than its meta claims would
//! fault on access instead. A walk holds one page per tree level, so memory stays bounded
//! whatever the file size.
//!
//! Every structural fact a walk relies on is checked as it is read (page ids below the
//! high-water mark, page types, element bounds, keys in strictly increasing order, no page
//! visited twice), so a corrupt file is reported with the page at fault and never loops or
//! panics.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use crate::page::{
    branch_element, leaf_element, u16_at, u64_at, Meta, PageHeader, BRANCH_PAGE, BUCKET_HEADER,
    BUCKET_LEAF, DEFAULT_PAGE_SIZE, FREELIST_PAGE, LEAF_PAGE, MAGIC, META_PAGE, NO_FREELIST,
    PAGE_HEADER,
};
use crate::{Error, Result};

/// Deepest tree (or bucket nesting) accepted; a real tree of 2^40 keys is under 10 levels, so
/// anything deeper is a cycle.
const MAX_DEPTH: usize = 64;

/// Most problems [`Db::check`] reports before it stops looking.
const MAX_PROBLEMS: usize = 100;

/// Where a file's bytes are read from: the file, a page at a time, or a copy already in memory.
#[derive(Debug)]
enum Source {
    File(File),
    Bytes(Vec<u8>),
}

impl Source {
    fn len(&self) -> std::io::Result<u64> {
        match self {
            Source::File(f) => Ok(f.metadata()?.len()),
            Source::Bytes(b) => Ok(b.len() as u64),
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self {
            Source::File(f) => f.read_exact_at(buf, offset),
            Source::Bytes(b) => {
                let bytes = usize::try_from(offset)
                    .ok()
                    .and_then(|start| b.get(start..start.checked_add(buf.len())?))
                    .ok_or(std::io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(bytes);
                Ok(())
            }
        }
    }
}

/// An open bbolt file (read only).
#[derive(Debug)]
pub struct Db {
    file: Source,
    len: u64,
    page_size: usize,
    meta: Meta,
}

/// Where a bucket's entries are: a tree of pages, or one page stored inside its parent's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketRef {
    /// The bucket's root page.
    Tree(u64),
    /// The bytes of the bucket's only page (an inline bucket).
    Inline(Vec<u8>),
}

/// One entry of a bucket.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub key: &'a [u8],
    /// The value; for a nested bucket, its bucket header (and inline page).
    pub value: &'a [u8],
    /// The entry is a nested bucket.
    pub is_bucket: bool,
}

/// Called with each page's id and header.
type PageVisitor<'v> = dyn FnMut(u64, &PageHeader) + 'v;

/// What a walk keeps: the last key (for the order check) and the pages seen.
struct Walk<'v> {
    last: Vec<u8>,
    started: bool,
    visits: u64,
    limit: u64,
    /// Called for every page of the tree (with its header) before its entries are visited.
    on_page: Option<&'v mut PageVisitor<'v>>,
}

impl Db {
    /// Opens the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        let path = path.as_ref();
        let file = File::open(path)?;
        Db::from_file(file)
    }

    /// Reads and validates the meta pages of `file`.
    ///
    /// As bbolt does, the page size comes from meta page 0 (or is 4096 if page 0 is damaged),
    /// and the valid meta with the highest transaction id wins; a file neither of whose metas is
    /// valid is refused, naming what is wrong with each. The file must be at least as long as
    /// the pages the meta says are in use.
    pub fn from_file(file: File) -> Result<Db> {
        Db::from_source(Source::File(file))
    }

    /// [`from_file`](Self::from_file) for a file already read into memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Db> {
        Db::from_source(Source::Bytes(bytes))
    }

    fn from_source(file: Source) -> Result<Db> {
        let len = file.len()?;
        let mut first = [0u8; PAGE_HEADER + crate::page::META_LEN];
        if len < first.len() as u64 {
            return Err(Error::NotBbolt(format!(
                "{len} bytes is too short for a bbolt file"
            )));
        }
        file.read_exact_at(&mut first, 0)?;
        let m0 = Meta::parse(&first[PAGE_HEADER..]).ok_or_else(|| corrupt("meta page 0"))?;
        if m0.magic != MAGIC {
            return Err(Error::NotBbolt(format!(
                "no bbolt magic in page 0 (found {:#010x})",
                m0.magic
            )));
        }
        let v0 = m0.validate();
        let page_size = match v0 {
            Ok(()) => m0.page_size as usize,
            Err(_) => DEFAULT_PAGE_SIZE,
        };
        if !page_size.is_power_of_two() || !(512..=1 << 20).contains(&page_size) {
            return Err(corrupt(format!("meta page 0: page size {page_size}")));
        }
        let v1 = {
            let mut b = [0u8; PAGE_HEADER + crate::page::META_LEN];
            match file.read_exact_at(&mut b, page_size as u64) {
                Ok(()) => Meta::parse(&b[PAGE_HEADER..])
                    .ok_or_else(|| "unreadable".to_string())
                    .and_then(|m| {
                        m.validate()?;
                        if m.page_size as usize != page_size {
                            return Err(format!("page size {} differs", m.page_size));
                        }
                        Ok(m)
                    }),
                Err(_) => Err("missing (file too short)".to_string()),
            }
        };
        let meta = match (v0.map(|()| m0), v1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(a), Err(_)) => a,
            (Err(_), Ok(b)) => b,
            (Err(e0), Err(e1)) => {
                return Err(corrupt(format!(
                    "no valid meta page: meta 0: {e0}; meta 1: {e1}"
                )))
            }
        };
        let needed = meta.pgid.checked_mul(page_size as u64);
        match needed {
            Some(n) if n <= len => {}
            _ => {
                return Err(Error::Truncated(format!(
                    "the meta page says {} pages of {page_size} bytes are in use, the file has {len} bytes",
                    meta.pgid
                )))
            }
        }
        if meta.pgid < 3 || meta.root < 2 || meta.root >= meta.pgid {
            return Err(corrupt(format!(
                "meta: root page {} outside the {} pages in use",
                meta.root, meta.pgid
            )));
        }
        if meta.freelist != NO_FREELIST && (meta.freelist < 2 || meta.freelist >= meta.pgid) {
            return Err(corrupt(format!(
                "meta: freelist page {} outside the {} pages in use",
                meta.freelist, meta.pgid
            )));
        }
        Ok(Db {
            file,
            len,
            page_size,
            meta,
        })
    }

    /// The meta record in use.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Bytes per page.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The size of the database as bbolt reports it (`Tx.Size`: pages in use times page size).
    pub fn size(&self) -> u64 {
        self.meta.pgid * self.page_size as u64
    }

    /// Length of the file (at least [`size`](Self::size)).
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// The root bucket, whose entries are the top-level buckets.
    pub fn root(&self) -> BucketRef {
        BucketRef::Tree(self.meta.root)
    }

    /// Reads page `id` with its overflow pages, checking that it lies below the high-water mark
    /// and that its header names it.
    fn page(&self, id: u64) -> Result<(PageHeader, Vec<u8>)> {
        if id < 2 || id >= self.meta.pgid {
            return Err(corrupt(format!(
                "page {id}: out of bounds ({} pages in use)",
                self.meta.pgid
            )));
        }
        let ps = self.page_size as u64;
        let mut buf = vec![0u8; self.page_size];
        self.file.read_exact_at(&mut buf, id * ps)?;
        let h = PageHeader::parse(&buf).ok_or_else(|| corrupt(format!("page {id}: header")))?;
        if h.id != id {
            return Err(corrupt(format!("page {id}: header says page {}", h.id)));
        }
        if h.overflow > 0 {
            let last = id.checked_add(u64::from(h.overflow));
            if last.is_none_or(|l| l >= self.meta.pgid) {
                return Err(corrupt(format!(
                    "page {id}: {} overflow pages run past the {} pages in use",
                    h.overflow, self.meta.pgid
                )));
            }
            let total = (u64::from(h.overflow) + 1) * ps;
            buf.resize(total as usize, 0);
            self.file
                .read_exact_at(&mut buf[self.page_size..], (id + 1) * ps)?;
        }
        Ok((h, buf))
    }

    /// The top-level buckets, in name order: `(name, where its entries are)`.
    pub fn buckets(&self) -> Result<Vec<(Vec<u8>, BucketRef)>> {
        let mut out = Vec::new();
        let mut failure = None;
        self.for_each(&self.root(), &mut |e| {
            if !e.is_bucket {
                failure = Some(corrupt(format!(
                    "root bucket: entry {:?} is not a bucket",
                    String::from_utf8_lossy(e.key)
                )));
                return false;
            }
            match bucket_ref(e.value) {
                Ok(b) => {
                    out.push((e.key.to_vec(), b));
                    true
                }
                Err(err) => {
                    failure = Some(corrupt(format!(
                        "bucket {:?}: {err}",
                        String::from_utf8_lossy(e.key)
                    )));
                    false
                }
            }
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// The top-level bucket `name`, if there is one.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<BucketRef>> {
        Ok(self
            .buckets()?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b))
    }

    /// Calls `f` on every entry of bucket `b` in key order until it returns `false`. Nested
    /// buckets are reported as entries (with `is_bucket`), not entered; open one with
    /// [`bucket_ref`].
    pub fn for_each(&self, b: &BucketRef, f: &mut dyn FnMut(Entry<'_>) -> bool) -> Result<()> {
        let mut walk = Walk {
            last: Vec::new(),
            started: false,
            visits: 0,
            limit: self.meta.pgid,
            on_page: None,
        };
        self.walk_bucket(b, &mut walk, f).map(|_| ())
    }

    fn walk_bucket(
        &self,
        b: &BucketRef,
        walk: &mut Walk<'_>,
        f: &mut dyn FnMut(Entry<'_>) -> bool,
    ) -> Result<bool> {
        match b {
            BucketRef::Tree(root) => self.walk_page(*root, 0, Bounds::default(), walk, f),
            BucketRef::Inline(page) => {
                let h =
                    PageHeader::parse(page).ok_or_else(|| corrupt("inline bucket: page header"))?;
                if h.flags & LEAF_PAGE == 0 {
                    return Err(corrupt(format!(
                        "inline bucket: page of type {}, expected leaf",
                        h.kind()
                    )));
                }
                leaf_entries(page, &h, "inline bucket", Bounds::default(), walk, f)
            }
        }
    }

    fn walk_page(
        &self,
        id: u64,
        depth: usize,
        bounds: Bounds<'_>,
        walk: &mut Walk<'_>,
        f: &mut dyn FnMut(Entry<'_>) -> bool,
    ) -> Result<bool> {
        if depth > MAX_DEPTH {
            return Err(corrupt(format!(
                "page {id}: tree deeper than {MAX_DEPTH} levels (a cycle)"
            )));
        }
        walk.visits += 1;
        if walk.visits > walk.limit {
            return Err(corrupt(format!(
                "page {id}: more page visits than pages in use (a page is referenced twice)"
            )));
        }
        let (h, page) = self.page(id)?;
        if let Some(cb) = walk.on_page.as_mut() {
            cb(id, &h);
        }
        if h.flags & LEAF_PAGE != 0 {
            leaf_entries(&page, &h, &format!("page {id}"), bounds, walk, f)
        } else if h.flags & BRANCH_PAGE != 0 {
            if h.count == 0 {
                return Err(corrupt(format!("page {id}: empty branch page")));
            }
            let count = usize::from(h.count);
            let elem = |i: usize| {
                branch_element(&page, i)
                    .ok_or_else(|| corrupt(format!("page {id}: branch element {i} out of bounds")))
            };
            let mut prev: Option<&[u8]> = None;
            for i in 0..count {
                let (key, child) = elem(i)?;
                if prev.is_some_and(|p| key <= p) || !bounds.admit(key) {
                    return Err(corrupt(format!(
                        "page {id}: branch key {i} {:?} out of order",
                        String::from_utf8_lossy(key)
                    )));
                }
                prev = Some(key);
                // bbolt's rule (`tx.Check` since 1.3.8): a child's keys lie in
                // [its key, the next key), within the parent's own range.
                let hi = if i + 1 < count {
                    Some(elem(i + 1)?.0)
                } else {
                    bounds.hi
                };
                let child_bounds = Bounds { lo: Some(key), hi };
                if !self.walk_page(child, depth + 1, child_bounds, walk, f)? {
                    return Ok(false);
                }
            }
            Ok(true)
        } else {
            Err(corrupt(format!(
                "page {id}: invalid type: {}, expected branch or leaf",
                h.kind()
            )))
        }
    }

    /// bbolt's `Tx.Check`: every page below the high-water mark is used exactly once (by a
    /// bucket tree, the freelist or a meta) or is free, never both; bucket pages are branch or
    /// leaf pages. Returns the problems found (empty when the file is sound), in bbolt's
    /// wording where bbolt has one. Structural damage that stops a walk is reported as a
    /// problem of its own.
    pub fn check(&self) -> Result<Vec<String>> {
        let n =
            usize::try_from(self.meta.pgid).map_err(|_| corrupt("meta: page count overflows"))?;
        let mut problems = Vec::new();
        let mut freed = vec![false; n];
        let mut reachable = vec![false; n];
        reachable[0] = true;
        reachable[1] = true;
        let synced = self.meta.freelist != NO_FREELIST;
        if synced {
            match self.freelist() {
                Ok((h, ids)) => {
                    for i in 0..=u64::from(h.overflow) {
                        reachable[(self.meta.freelist + i) as usize] = true;
                    }
                    for id in ids {
                        match freed.get_mut(id as usize) {
                            Some(true) => problems.push(format!("page {id}: already freed")),
                            Some(f) => *f = true,
                            None => problems.push(format!(
                                "page {id}: freed but out of bounds: {}",
                                self.meta.pgid
                            )),
                        }
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        self.check_bucket(
            &self.root(),
            "root",
            0,
            &mut reachable,
            &freed,
            &mut problems,
        );
        if synced {
            for (i, (r, f)) in reachable.iter().zip(&freed).enumerate() {
                if !r && !f {
                    problems.push(format!("page {i}: unreachable unfreed"));
                    if problems.len() >= MAX_PROBLEMS {
                        break;
                    }
                }
            }
        }
        problems.truncate(MAX_PROBLEMS);
        Ok(problems)
    }

    fn check_bucket(
        &self,
        b: &BucketRef,
        name: &str,
        nesting: usize,
        reachable: &mut [bool],
        freed: &[bool],
        problems: &mut Vec<String>,
    ) {
        if problems.len() >= MAX_PROBLEMS {
            return;
        }
        if nesting > MAX_DEPTH {
            problems.push(format!("bucket {name}: nested deeper than {MAX_DEPTH}"));
            return;
        }
        let mut children = Vec::new();
        let mut page_problems = Vec::new();
        let mut on_page = |id: u64, h: &PageHeader| {
            for i in 0..=u64::from(h.overflow) {
                let p = (id + i) as usize;
                match reachable.get_mut(p) {
                    Some(true) => page_problems.push(format!("page {p}: multiple references")),
                    Some(r) => *r = true,
                    None => {}
                }
            }
            if freed.get(id as usize).copied().unwrap_or(false) {
                page_problems.push(format!("page {id}: reachable freed"));
            }
        };
        let mut walk = Walk {
            last: Vec::new(),
            started: false,
            visits: 0,
            limit: self.meta.pgid,
            on_page: Some(&mut on_page),
        };
        let walked = self.walk_bucket(b, &mut walk, &mut |e| {
            if e.is_bucket {
                children.push((
                    String::from_utf8_lossy(e.key).into_owned(),
                    bucket_ref(e.value),
                ));
            }
            true
        });
        drop(walk);
        problems.extend(page_problems);
        if let Err(e) = walked {
            problems.push(format!("bucket {name}: {e}"));
        }
        for (child, r) in children {
            match r {
                Ok(r) => self.check_bucket(&r, &child, nesting + 1, reachable, freed, problems),
                Err(e) => problems.push(format!("bucket {child}: {e}")),
            }
        }
    }

    /// The freelist page's header and the free page ids it lists.
    fn freelist(&self) -> Result<(PageHeader, Vec<u64>)> {
        let id = self.meta.freelist;
        let (h, page) = self.page(id)?;
        if h.flags & FREELIST_PAGE == 0 {
            return Err(corrupt(format!(
                "page {id}: invalid freelist page type: {}",
                h.kind()
            )));
        }
        let (skip, count) = if h.count == 0xFFFF {
            let c = u64_at(&page, PAGE_HEADER)
                .ok_or_else(|| corrupt(format!("page {id}: freelist count")))?;
            (1usize, c)
        } else {
            (0usize, u64::from(h.count))
        };
        let room = (page.len() - PAGE_HEADER) / 8;
        if count > (room.saturating_sub(skip)) as u64 {
            return Err(corrupt(format!(
                "page {id}: freelist of {count} ids does not fit its page"
            )));
        }
        let ids = (0..count as usize)
            .map(|i| u64_at(&page, PAGE_HEADER + (skip + i) * 8).unwrap_or(0))
            .collect();
        Ok((h, ids))
    }
}

/// The key range a page's keys must lie in: `[lo, hi)`, from the branch above it.
#[derive(Clone, Copy, Default)]
struct Bounds<'a> {
    lo: Option<&'a [u8]>,
    hi: Option<&'a [u8]>,
}

impl Bounds<'_> {
    fn admit(&self, key: &[u8]) -> bool {
        self.lo.is_none_or(|lo| key >= lo) && self.hi.is_none_or(|hi| key < hi)
    }
}

/// The entries of one leaf page, checking bounds and key order.
fn leaf_entries(
    page: &[u8],
    h: &PageHeader,
    what: &str,
    bounds: Bounds<'_>,
    walk: &mut Walk<'_>,
    f: &mut dyn FnMut(Entry<'_>) -> bool,
) -> Result<bool> {
    for i in 0..usize::from(h.count) {
        let (flags, key, value) = leaf_element(page, i)
            .ok_or_else(|| corrupt(format!("{what}: leaf element {i} out of bounds")))?;
        if key.is_empty() {
            return Err(corrupt(format!(
                "{what}: leaf element {i} has an empty key"
            )));
        }
        if !bounds.admit(key) {
            return Err(corrupt(format!(
                "{what}: key {:?} outside the range its parent branch gives",
                String::from_utf8_lossy(key)
            )));
        }
        if walk.started && key <= walk.last.as_slice() {
            return Err(corrupt(format!(
                "{what}: key {:?} out of order (after {:?})",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(&walk.last)
            )));
        }
        walk.started = true;
        walk.last.clear();
        walk.last.extend_from_slice(key);
        let e = Entry {
            key,
            value,
            is_bucket: flags & BUCKET_LEAF != 0,
        };
        if !f(e) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Where the entries of a nested bucket are, from its entry's value (a bucket header, then the
/// inline page when the root is 0).
pub fn bucket_ref(value: &[u8]) -> Result<BucketRef> {
    let root = u64_at(value, 0).ok_or_else(|| {
        corrupt(format!(
            "bucket header of {} bytes, expected at least {BUCKET_HEADER}",
            value.len()
        ))
    })?;
    if root != 0 {
        return Ok(BucketRef::Tree(root));
    }
    let page = value.get(BUCKET_HEADER..).unwrap_or_default();
    if u16_at(page, 8).is_none() {
        return Err(corrupt("inline bucket without its page"));
    }
    Ok(BucketRef::Inline(page.to_vec()))
}

/// Whether `prefix` (the first bytes of a file) starts like a bbolt file: meta page 0's magic
/// and page flags.
pub fn looks_like_bbolt(prefix: &[u8]) -> bool {
    u16_at(prefix, 8) == Some(META_PAGE) && crate::page::u32_at(prefix, PAGE_HEADER) == Some(MAGIC)
}

fn corrupt(msg: impl Into<String>) -> Error {
    Error::Corrupt(msg.into())
}
