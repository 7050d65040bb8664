//! Writing a bbolt file from sorted entries, in two passes so it can be streamed.
//!
//! # Layout
//!
//! Pages 0 and 1 are the two meta pages (the same record; page 0 with the higher transaction
//! id), page 2 is an empty freelist (every page is in use), then each top-level bucket that is
//! not inline has its pages, in bucket-name order, and the root bucket's pages come last. A
//! bucket's tree is built bottom-up: leaves are filled in key order until the next entry would
//! not fit in a page, and each finished page adds its first key to the branch level above,
//! which is finished the same way. A leaf holds at least one entry and a branch at least two,
//! so a page is larger than the page size (with overflow pages) only when one entry (or two
//! branch keys) cannot fit a page otherwise, as in bbolt. Pages are full rather than half
//! full as bbolt's own splits leave them (bbolt's compaction also packs pages full): the file
//! is a copy to read and restore, not a live database.
//!
//! A bucket whose page would take at most a quarter of a page is stored inline in the root
//! bucket's entry, as bbolt does (`Bucket.inlineable`).
//!
//! # Two passes, bounded memory
//!
//! The meta pages come first in the file but name the root page and the number of pages, which
//! are known only once every bucket is laid out. So the caller feeds every bucket twice, with
//! the same entries in the same order: a [`Planner`] counts pages without keeping them, giving
//! a [`Plan`] (total size, where each bucket starts, the root pages and the meta pages); then
//! [`Plan::writer`] builds each bucket's pages again, now keeping them, so they can be written
//! out (or sent) as they are finished. Either pass holds one unfinished page per tree level and
//! nothing else, so memory does not grow with the database. If the second pass does not come
//! out exactly as planned (the entries changed in between), [`TreeWriter::finish`] says so.

use crate::page::{
    Meta, PageHeader, BRANCH_ELEM, BRANCH_PAGE, BUCKET_HEADER, BUCKET_LEAF, DEFAULT_PAGE_SIZE,
    FREELIST_PAGE, LEAF_ELEM, LEAF_PAGE, MAGIC, MAX_ELEMENTS, MAX_KEY_SIZE, MAX_VALUE_SIZE,
    META_PAGE, PAGE_HEADER, VERSION,
};
use crate::{Error, Result};

/// First page of the first bucket: after the two metas and the freelist.
const FIRST_DATA_PAGE: u64 = 3;
/// Transaction id written in meta page 0 (page 1 gets one less). Even, so the next bbolt
/// transaction (odd id) overwrites page 1, the older one, as bbolt expects (`txid % 2`).
const TXID: u64 = 2;

/// An unfinished page: element headers and the key/value bytes that follow them.
#[derive(Default)]
struct Node {
    /// `(flags, key length, value length, child page)` per element.
    elems: Vec<(u32, u32, u32, u64)>,
    data: Vec<u8>,
}

impl Node {
    fn size(&self, elem: usize) -> usize {
        PAGE_HEADER + self.elems.len() * elem + self.data.len()
    }

    fn first_key(&self) -> &[u8] {
        let k = self.elems.first().map_or(0, |e| e.1 as usize);
        &self.data[..k]
    }

    fn clear(&mut self) {
        self.elems.clear();
        self.data.clear();
    }

    /// The page bytes (padded to whole pages) with the given id.
    fn encode(&self, id: u64, leaf: bool, page_size: usize) -> Vec<u8> {
        let elem = if leaf { LEAF_ELEM } else { BRANCH_ELEM };
        let size = self.size(elem);
        let pages = size.div_ceil(page_size).max(1);
        let mut b = vec![0u8; pages * page_size];
        PageHeader {
            id,
            flags: if leaf { LEAF_PAGE } else { BRANCH_PAGE },
            count: self.elems.len() as u16,
            overflow: (pages - 1) as u32,
        }
        .write(&mut b);
        let mut data_at = PAGE_HEADER + self.elems.len() * elem;
        let mut src = 0usize;
        for (i, &(flags, klen, vlen, child)) in self.elems.iter().enumerate() {
            let e = PAGE_HEADER + i * elem;
            let pos = (data_at - e) as u32;
            if leaf {
                b[e..e + 4].copy_from_slice(&flags.to_le_bytes());
                b[e + 4..e + 8].copy_from_slice(&pos.to_le_bytes());
                b[e + 8..e + 12].copy_from_slice(&klen.to_le_bytes());
                b[e + 12..e + 16].copy_from_slice(&vlen.to_le_bytes());
            } else {
                b[e..e + 4].copy_from_slice(&pos.to_le_bytes());
                b[e + 4..e + 8].copy_from_slice(&klen.to_le_bytes());
                b[e + 8..e + 16].copy_from_slice(&child.to_le_bytes());
            }
            let n = (klen + vlen) as usize;
            b[data_at..data_at + n].copy_from_slice(&self.data[src..src + n]);
            data_at += n;
            src += n;
        }
        b
    }
}

/// Builds one bucket's B+tree bottom-up from entries in key order, numbering pages from a
/// given first page. Finished pages are appended to the caller's buffer, or only counted.
struct TreeBuilder {
    page_size: usize,
    next: u64,
    keep: bool,
    leaf: Node,
    /// Unfinished branch pages, lowest level first.
    levels: Vec<Node>,
    last_key: Option<Vec<u8>>,
}

impl TreeBuilder {
    fn new(page_size: usize, first: u64, keep: bool) -> TreeBuilder {
        TreeBuilder {
            page_size,
            next: first,
            keep,
            leaf: Node::default(),
            levels: Vec::new(),
            last_key: None,
        }
    }

    fn push(&mut self, key: &[u8], value: &[u8], flags: u32, out: &mut Vec<u8>) -> Result<()> {
        check_entry(key, value)?;
        if let Some(last) = &self.last_key {
            if key <= last.as_slice() {
                return Err(Error::Unsorted(format!(
                    "key {:?} after {:?}",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(last)
                )));
            }
        }
        self.last_key = Some(key.to_vec());
        let add = LEAF_ELEM + key.len() + value.len();
        if !self.leaf.elems.is_empty()
            && (self.leaf.size(LEAF_ELEM) + add > self.page_size
                || self.leaf.elems.len() >= MAX_ELEMENTS)
        {
            self.flush_leaf(out)?;
        }
        self.leaf
            .elems
            .push((flags, key.len() as u32, value.len() as u32, 0));
        self.leaf.data.extend_from_slice(key);
        self.leaf.data.extend_from_slice(value);
        Ok(())
    }

    /// Emits `node` as page(s) numbered from `self.next`; returns its page id.
    fn emit(&mut self, node: &Node, leaf: bool, out: &mut Vec<u8>) -> Result<u64> {
        let elem = if leaf { LEAF_ELEM } else { BRANCH_ELEM };
        let pages = node.size(elem).div_ceil(self.page_size).max(1);
        if pages - 1 > u32::MAX as usize {
            return Err(Error::TooLarge(
                "a page needs too many overflow pages".into(),
            ));
        }
        let id = self.next;
        self.next += pages as u64;
        if self.keep {
            out.extend_from_slice(&node.encode(id, leaf, self.page_size));
        }
        Ok(id)
    }

    fn flush_leaf(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let leaf = std::mem::take(&mut self.leaf);
        let id = self.emit(&leaf, true, out)?;
        self.push_child(0, leaf.first_key(), id, out)?;
        self.leaf = leaf;
        self.leaf.clear();
        Ok(())
    }

    fn push_child(
        &mut self,
        level: usize,
        key: &[u8],
        child: u64,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if self.levels.len() == level {
            self.levels.push(Node::default());
        }
        let add = BRANCH_ELEM + key.len();
        let full = {
            let n = &self.levels[level];
            n.elems.len() >= 2 && (n.size(BRANCH_ELEM) + add > self.page_size)
                || n.elems.len() >= MAX_ELEMENTS
        };
        if full {
            self.flush_branch(level, out)?;
        }
        let n = &mut self.levels[level];
        n.elems.push((0, key.len() as u32, 0, child));
        n.data.extend_from_slice(key);
        Ok(())
    }

    fn flush_branch(&mut self, level: usize, out: &mut Vec<u8>) -> Result<()> {
        let node = std::mem::take(&mut self.levels[level]);
        let id = self.emit(&node, false, out)?;
        self.push_child(level + 1, node.first_key(), id, out)?;
        self.levels[level] = node;
        self.levels[level].clear();
        Ok(())
    }

    /// Finishes every level; returns the root page id.
    fn finish(mut self, out: &mut Vec<u8>) -> Result<(u64, u64)> {
        if !self.leaf.elems.is_empty() || self.levels.is_empty() {
            if self.levels.is_empty() {
                // The whole tree is this one leaf (possibly empty).
                let leaf = std::mem::take(&mut self.leaf);
                let id = self.emit(&leaf, true, out)?;
                return Ok((id, self.next));
            }
            self.flush_leaf(out)?;
        }
        let mut level = 0;
        loop {
            let top = level + 1 == self.levels.len();
            if top && self.levels[level].elems.len() == 1 {
                let root = self.levels[level].elems[0].3;
                return Ok((root, self.next));
            }
            self.flush_branch(level, out)?;
            level += 1;
        }
    }
}

fn check_entry(key: &[u8], value: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::TooLarge("empty key".into()));
    }
    if key.len() > MAX_KEY_SIZE {
        return Err(Error::TooLarge(format!(
            "key of {} bytes (bbolt's limit is {MAX_KEY_SIZE})",
            key.len()
        )));
    }
    if value.len() > MAX_VALUE_SIZE {
        return Err(Error::TooLarge(format!(
            "value of {} bytes (bbolt's limit is {MAX_VALUE_SIZE})",
            value.len()
        )));
    }
    Ok(())
}

/// How one top-level bucket is stored.
#[derive(Clone, Debug)]
enum Stored {
    /// Inline: the whole value of its entry in the root bucket.
    Inline(Vec<u8>),
    /// Pages `first..first + pages`, rooted at `root`.
    Tree { first: u64, pages: u64, root: u64 },
}

/// The first pass: lays out buckets without keeping their pages.
pub struct Planner {
    page_size: usize,
    next: u64,
    buckets: Vec<(Vec<u8>, Stored)>,
}

impl Planner {
    /// A planner for a file with `page_size`-byte pages (a power of two, 1 KiB to 64 KiB).
    pub fn new(page_size: usize) -> Result<Planner> {
        if !page_size.is_power_of_two() || !(1024..=65536).contains(&page_size) {
            return Err(Error::TooLarge(format!("page size {page_size}")));
        }
        Ok(Planner {
            page_size,
            next: FIRST_DATA_PAGE,
            buckets: Vec::new(),
        })
    }

    /// A planner for [`DEFAULT_PAGE_SIZE`] pages.
    pub fn with_default_page_size() -> Planner {
        Planner {
            page_size: DEFAULT_PAGE_SIZE,
            next: FIRST_DATA_PAGE,
            buckets: Vec::new(),
        }
    }

    /// Starts the next top-level bucket; names must be non-empty and strictly increasing.
    pub fn bucket(&mut self, name: &[u8]) -> Result<BucketPlanner<'_>> {
        if name.is_empty() || name.len() > MAX_KEY_SIZE {
            return Err(Error::TooLarge(format!(
                "bucket name of {} bytes",
                name.len()
            )));
        }
        if let Some((last, _)) = self.buckets.last() {
            if name <= last.as_slice() {
                return Err(Error::Unsorted(format!(
                    "bucket {:?} after {:?}",
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(last)
                )));
            }
        }
        let tree = TreeBuilder::new(self.page_size, self.next, false);
        Ok(BucketPlanner {
            name: name.to_vec(),
            inline: Some(Node::default()),
            tree,
            planner: self,
        })
    }

    /// Lays out the root bucket and the metas.
    pub fn finish(self) -> Result<Plan> {
        let mut root = TreeBuilder::new(self.page_size, self.next, true);
        let mut root_pages = Vec::new();
        for (name, stored) in &self.buckets {
            let value = match stored {
                Stored::Inline(v) => v.clone(),
                Stored::Tree { root, .. } => bucket_header(*root).to_vec(),
            };
            root.push(name, &value, BUCKET_LEAF, &mut root_pages)?;
        }
        let (root_id, high) = root.finish(&mut root_pages)?;
        let meta = Meta {
            magic: MAGIC,
            version: VERSION,
            page_size: self.page_size as u32,
            flags: 0,
            root: root_id,
            sequence: 0,
            freelist: 2,
            pgid: high,
            txid: TXID,
            checksum: 0,
        };
        Ok(Plan {
            page_size: self.page_size,
            buckets: self.buckets,
            root_pages,
            meta,
        })
    }
}

fn bucket_header(root: u64) -> [u8; BUCKET_HEADER] {
    let mut h = [0u8; BUCKET_HEADER];
    h[..8].copy_from_slice(&root.to_le_bytes());
    h
}

/// The first pass over one bucket.
pub struct BucketPlanner<'p> {
    planner: &'p mut Planner,
    name: Vec<u8>,
    /// The bucket's entries while they still fit inline.
    inline: Option<Node>,
    tree: TreeBuilder,
}

impl BucketPlanner<'_> {
    /// The next entry (keys strictly increasing).
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree.push(key, value, 0, &mut Vec::new())?;
        if let Some(n) = &mut self.inline {
            n.elems.push((0, key.len() as u32, value.len() as u32, 0));
            n.data.extend_from_slice(key);
            n.data.extend_from_slice(value);
            if n.size(LEAF_ELEM) > self.planner.page_size / 4 {
                self.inline = None;
            }
        }
        Ok(())
    }

    /// Ends the bucket.
    pub fn finish(self) -> Result<()> {
        let BucketPlanner {
            planner,
            name,
            inline,
            tree,
        } = self;
        let stored = match inline {
            Some(node) => {
                let mut v = bucket_header(0).to_vec();
                v.extend_from_slice(
                    &node.encode(0, true, planner.page_size)[..node.size(LEAF_ELEM)],
                );
                Stored::Inline(v)
            }
            None => {
                let first = planner.next;
                let (root, next) = tree.finish(&mut Vec::new())?;
                planner.next = next;
                Stored::Tree {
                    first,
                    pages: next - first,
                    root,
                }
            }
        };
        planner.buckets.push((name, stored));
        Ok(())
    }
}

/// The layout of a whole file; the second pass writes it.
#[derive(Clone, Debug)]
pub struct Plan {
    page_size: usize,
    buckets: Vec<(Vec<u8>, Stored)>,
    root_pages: Vec<u8>,
    meta: Meta,
}

impl Plan {
    /// Bytes of the whole file.
    pub fn size(&self) -> u64 {
        self.meta.pgid * self.page_size as u64
    }

    /// The file's first three pages: meta 0, meta 1, the (empty) freelist.
    pub fn header(&self) -> Vec<u8> {
        let ps = self.page_size;
        let mut b = vec![0u8; 3 * ps];
        for (i, txid) in [(0usize, TXID), (1, TXID - 1)] {
            let page = &mut b[i * ps..(i + 1) * ps];
            PageHeader {
                id: i as u64,
                flags: META_PAGE,
                count: 0,
                overflow: 0,
            }
            .write(page);
            let m = Meta { txid, ..self.meta }.encode();
            page[PAGE_HEADER..PAGE_HEADER + m.len()].copy_from_slice(&m);
        }
        PageHeader {
            id: 2,
            flags: FREELIST_PAGE,
            count: 0,
            overflow: 0,
        }
        .write(&mut b[2 * ps..]);
        b
    }

    /// The second pass over bucket `name`: `None` if the bucket is inline (its entries are in
    /// the plan already) or was not planned.
    pub fn writer(&self, name: &[u8]) -> Option<TreeWriter> {
        self.buckets
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, s)| match s {
                Stored::Inline(_) => None,
                Stored::Tree { first, pages, root } => Some(TreeWriter {
                    tree: TreeBuilder::new(self.page_size, *first, true),
                    name: name.to_vec(),
                    first: *first,
                    pages: *pages,
                    root: *root,
                }),
            })
    }

    /// The root bucket's pages: the end of the file.
    pub fn root_pages(&self) -> &[u8] {
        &self.root_pages
    }
}

/// The second pass over one bucket: its pages, as they are finished.
pub struct TreeWriter {
    tree: TreeBuilder,
    name: Vec<u8>,
    first: u64,
    pages: u64,
    root: u64,
}

impl TreeWriter {
    /// The next entry; appends any page it finishes to `out`.
    pub fn push(&mut self, key: &[u8], value: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.tree.push(key, value, 0, out)
    }

    /// Ends the bucket, appending its last pages to `out`; fails if they differ from the plan.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<()> {
        let (root, next) = self.tree.finish(out)?;
        if root != self.root || next - self.first != self.pages {
            return Err(Error::PlanMismatch(format!(
                "bucket {:?}: planned {} pages rooted at {}, wrote {} rooted at {root}",
                String::from_utf8_lossy(&self.name),
                self.pages,
                self.root,
                next - self.first
            )));
        }
        Ok(())
    }
}

/// A bucket's entries: `(key, value)` in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A whole file from buckets held in memory (names and keys sorted), for tests and small
/// files.
pub fn build(page_size: usize, buckets: &[(&[u8], Entries)]) -> Result<Vec<u8>> {
    let mut planner = Planner::new(page_size)?;
    for (name, entries) in buckets {
        let mut b = planner.bucket(name)?;
        for (k, v) in entries {
            b.push(k, v)?;
        }
        b.finish()?;
    }
    let plan = planner.finish()?;
    let mut out = plan.header();
    for (name, entries) in buckets {
        if let Some(mut w) = plan.writer(name) {
            for (k, v) in entries {
                w.push(k, v, &mut out)?;
            }
            w.finish(&mut out)?;
        }
    }
    out.extend_from_slice(plan.root_pages());
    debug_assert_eq!(out.len() as u64, plan.size());
    Ok(out)
}
