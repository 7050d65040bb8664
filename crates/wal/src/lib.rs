//! Hearth's write-ahead log.
//!
//! The log stores opaque bytes tagged with raft indexes: the server encodes raft entries and hard
//! state itself, so this crate never depends on raft's types. The on-disk format is specified
//! byte by byte in `docs/wal.md`.
//!
//! # Durability and where the fsyncs are
//!
//! * [`Wal::save`] encodes everything it is given into one reused buffer, issues one positional
//!   write and one `fdatasync`. The server calls it once per raft `Ready`, so a single flush
//!   covers every client write that arrived in that round (group commit). The flush is the
//!   dominant cost of a write, which is why nothing on this path syncs per record. `fdatasync`
//!   rather than `fsync` because segments are preallocated: appends do not change the file size,
//!   so there is no inode update worth waiting for.
//! * Hard state is encoded after the entries of the same save. A torn write keeps a prefix of the
//!   records, so any hard state that survives also has the entries its commit index may point
//!   at.
//! * New segments are written in full under a temporary name, fsynced, renamed into place, and
//!   then the directory is fsynced. Until the directory is synced the rename may be undone by a
//!   crash; appending acknowledged data to a file whose name may vanish would lose it, so no save
//!   writes to a new segment before that directory sync returns. The temporary name means a crash
//!   mid-cut leaves a file that [`Wal::open`] recognises and deletes instead of a half-written
//!   segment.
//! * Before the cut the old segment is truncated to its last record and fsynced (a real fsync:
//!   its size changes). Sealed segments therefore contain nothing but valid records, and any
//!   damage in them is reported instead of being mistaken for a normal end.
//! * [`Wal::create`] also fsyncs the parent of the log directory and of every directory it had
//!   to create: an unsynced directory entry can disappear together with everything under it.
//! * [`Wal::release_to`] fsyncs the directory after each deletion, oldest first, so that a crash
//!   leaves a contiguous run of segments rather than an old segment resurrected behind a gap.
//! * With [`WalOptions::unsafe_no_fsync`] (etcd's `--unsafe-no-fsync`) none of these syncs happen:
//!   the file system sees the same writes, renames and removals in the same order, but nothing is
//!   made durable, so a power failure can lose acknowledged data or leave a log that does not open.
//!   A crash of the process alone loses nothing (the kernel still has the pages).
//!
//! # Releasing and purging segments
//!
//! [`Wal::release_to`] says which segments are no longer needed (a snapshot covers their entries),
//! as etcd's `ReleaseLockTo` unlocks them; they are then deleted oldest first while the log has more
//! than [`WalOptions::max_files`] segments, as etcd's purge of `--max-wals` does (0: never). A segment
//! still needed is never deleted, whatever the count. etcd purges on a 30 s timer; here the purge runs
//! when it can change something, after a release and after a cut, so it needs no thread.
//!
//! Segments are preallocated with `File::set_len`. On most file systems that makes a sparse file
//! rather than reserving blocks, so block allocation still happens on write; `fdatasync` persists
//! that allocation, so correctness does not depend on it, only the latency saving does.
//!
//! # Recovery
//!
//! [`Wal::open`] reads every segment and checks every record's CRC and the CRC chain between
//! records and across segments. Only the end of the newest segment can have been in flight
//! during a crash, so only there is a damaged or zeroed region accepted, and only when no valid
//! record follows it: it is cut off (logged, and reported in [`Recovered::repaired_tail`]) and
//! appending resumes after the last good record. Damage anywhere else is an
//! [`WalError::Corrupt`] naming the file and byte offset. A disk that persists the sectors of a
//! single write out of order could leave a hole followed by a valid record from the same
//! unacknowledged write; that is reported as corruption too, since it cannot be told apart from
//! damage to acknowledged data and losing acknowledged data silently is the worse failure.
//!
//! After an I/O error the log refuses further writes ([`WalError::Poisoned`]): after a failed
//! fsync the kernel may already have dropped the dirty pages, so a retry could report success
//! for data that is gone. Reopen the log to continue.
//!
//! The log takes no lock on its directory; the server must not open it twice. Unix only
//! (positional writes).

#![forbid(unsafe_code)]

mod fs;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod memfs;
mod record;
mod replay;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use fs::{Fs, FsFile, NoSyncFs, StdFs};
use record::{RecordType, ENTRY_HEAD_LEN, SNAPSHOT_LEN};
use replay::{Replay, SegmentEnd};

/// Size a segment is preallocated to; a new segment is cut before a save that would not fit.
pub const SEGMENT_SIZE: u64 = 64 * 1024 * 1024;

/// A save buffer that grew beyond this (one huge batch) is freed rather than kept for reuse.
const MAX_RETAINED_BUF: usize = 16 * 1024 * 1024;

const SEGMENT_EXT: &str = ".wal";
const TMP_EXT: &str = ".tmp";

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("a write-ahead log already exists in {0}")]
    AlreadyExists(PathBuf),
    #[error("no write-ahead log in {0}")]
    NotFound(PathBuf),
    #[error("corrupt write-ahead log: {path} at byte offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("a record of {0} bytes does not fit the log's 32-bit length field")]
    TooLarge(usize),
    #[error("write-ahead log is unusable after an earlier I/O error; reopen it")]
    Poisoned,
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;

pub(crate) fn corrupt(path: &Path, offset: usize, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

trait Context<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| WalError::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// One log entry. `data` is the server's encoding of the raft entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

/// Records that a snapshot up to `index` exists, so entries up to it are not needed on replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMarker {
    pub index: u64,
    pub term: u64,
}

/// Everything [`Wal::open`] read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// As given to [`Wal::create`].
    pub metadata: Vec<u8>,
    /// The most recently saved hard state.
    pub hard_state: Option<Vec<u8>>,
    /// The most recently saved snapshot marker.
    pub snapshot: Option<SnapshotMarker>,
    /// Entries after the snapshot, in index order. An entry with index `i` replaces every entry
    /// logged before it with index `>= i`.
    pub entries: Vec<Entry>,
    /// File and offset at which a torn tail was cut off, if there was one.
    pub repaired_tail: Option<(PathBuf, u64)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    seq: u64,
    /// Index of the first entry expected in this segment: one past the last live entry when it
    /// was cut. Every live entry of earlier segments is below it, which is what
    /// [`Wal::release_to`] relies on.
    index: u64,
}

impl Segment {
    fn name(self) -> String {
        format!("{:016x}-{:016x}{SEGMENT_EXT}", self.seq, self.index)
    }

    fn path(self, dir: &Path) -> PathBuf {
        dir.join(self.name())
    }

    fn parse(name: &str) -> Option<Segment> {
        let stem = name.strip_suffix(SEGMENT_EXT)?;
        let (seq, index) = stem.split_once('-')?;
        let hex = |s: &str| {
            // from_str_radix alone would accept a sign and upper case: insist on the exact form
            // we write so that every segment has exactly one name.
            (s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .then(|| u64::from_str_radix(s, 16).ok())
                .flatten()
        };
        Some(Segment {
            seq: hex(seq)?,
            index: hex(index)?,
        })
    }
}

/// Segments sorted by sequence, and names of leftover temporary files from interrupted cuts.
fn scan_dir(fs: &dyn Fs, dir: &Path) -> io::Result<(Vec<Segment>, Vec<String>)> {
    let mut segments = Vec::new();
    let mut temps = Vec::new();
    for name in fs.list(dir)? {
        if let Some(s) = Segment::parse(&name) {
            segments.push(s);
        } else if name
            .strip_suffix(TMP_EXT)
            .and_then(Segment::parse)
            .is_some()
        {
            temps.push(name);
        }
    }
    segments.sort_by_key(|s| s.seq);
    Ok((segments, temps))
}

fn remove_temps(fs: &dyn Fs, dir: &Path, temps: &[String]) -> Result<()> {
    for t in temps {
        let path = dir.join(t);
        tracing::info!(path = %path.display(), "removing unfinished wal segment");
        fs.remove(&path).ctx("remove", &path)?;
    }
    Ok(())
}

fn frame_len(payload_len: usize) -> Result<usize> {
    record::frame_len(payload_len).ok_or(WalError::TooLarge(payload_len))
}

/// Encodes the records every segment starts with, so that a segment is readable after all its
/// predecessors were released: the running CRC, the metadata, and the latest hard state and
/// snapshot marker. Returns the new running CRC and the offset past the metadata record.
fn encode_header(
    buf: &mut Vec<u8>,
    crc: u32,
    metadata: &[u8],
    hard_state: Option<&[u8]>,
    snapshot: Option<SnapshotMarker>,
) -> (u32, u64) {
    let mut crc = record::encode(buf, crc, RecordType::Crc, &crc.to_le_bytes(), &[]);
    crc = record::encode(buf, crc, RecordType::Metadata, &[], metadata);
    let header_end = buf.len() as u64;
    if let Some(hs) = hard_state {
        crc = record::encode(buf, crc, RecordType::HardState, &[], hs);
    }
    if let Some(s) = snapshot {
        let p = record::entry_head(s.index, s.term);
        crc = record::encode(buf, crc, RecordType::Snapshot, &p, &[]);
    }
    (crc, header_end)
}

/// Makes a complete, durable segment appear under its final name (see the module doc).
fn write_segment(
    fs: &dyn Fs,
    dir: &Path,
    seg: Segment,
    size: u64,
    header: &[u8],
) -> Result<Box<dyn FsFile>> {
    let path = seg.path(dir);
    let tmp = dir.join(format!("{}{TMP_EXT}", seg.name()));
    let mut f = fs.create(&tmp).ctx("create", &tmp)?;
    f.set_len(size).ctx("preallocate", &tmp)?;
    f.write_at(0, header).ctx("write", &tmp)?;
    f.sync_all().ctx("sync", &tmp)?;
    fs.rename(&tmp, &path).ctx("rename", &tmp)?;
    fs.sync_dir(dir).ctx("sync directory", dir)?;
    Ok(f)
}

/// How a log is created or opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Never fsync (etcd's `--unsafe-no-fsync`; see the module doc).
    pub unsafe_no_fsync: bool,
    /// The most segment files kept (etcd's `--max-wals`): segments no longer needed are deleted,
    /// oldest first, while there are more. 0 keeps every segment. The default, 1, deletes a segment
    /// as soon as it is no longer needed.
    pub max_files: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            unsafe_no_fsync: false,
            max_files: 1,
        }
    }
}

#[derive(Clone, Copy)]
struct Options {
    segment_size: u64,
    max_files: usize,
    no_fsync: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options::from(WalOptions::default())
    }
}

impl From<WalOptions> for Options {
    fn from(o: WalOptions) -> Self {
        Options {
            segment_size: SEGMENT_SIZE,
            max_files: o.max_files,
            no_fsync: o.unsafe_no_fsync,
        }
    }
}

impl Options {
    /// The file system to use: `fs`, or `fs` without syncs.
    fn fs(self, fs: Box<dyn Fs>) -> Box<dyn Fs> {
        if self.no_fsync {
            Box::new(NoSyncFs(fs))
        } else {
            fs
        }
    }
}

/// A log read back from its segments (oldest first), before a torn tail is repaired: everything
/// [`Wal::open`] checks, without any I/O, so the fuzz entry runs exactly these checks.
struct ReadLog {
    /// The newest segment and where its valid records end.
    tail: PathBuf,
    end: SegmentEnd,
    file_len: u64,
    metadata: Vec<u8>,
    /// The running CRC after the last good record.
    crc: u32,
    hard_state: Option<Vec<u8>>,
    snapshot: Option<SnapshotMarker>,
    /// Entries after the snapshot, in index order.
    entries: Vec<Entry>,
    /// Index of the last live entry (the snapshot may cover it).
    last_live: Option<u64>,
}

fn read_log(segments: impl IntoIterator<Item = Result<(PathBuf, Vec<u8>)>>) -> Result<ReadLog> {
    let mut replay = Replay::default();
    let mut tail = None;
    let mut segments = segments.into_iter().peekable();
    while let Some(seg) = segments.next() {
        let (path, data) = seg?;
        let last = segments.peek().is_none();
        let end = replay.segment(&path, &data, last)?;
        if last {
            tail = Some((path, end, data.len() as u64));
        }
    }
    let Some((tail, end, file_len)) = tail else {
        return Err(WalError::NotFound(PathBuf::new()));
    };
    // Both are set by any segment that passed validation (it must hold crc + metadata).
    let (Some(metadata), Some(crc)) = (replay.metadata.take(), replay.crc) else {
        return Err(corrupt(&tail, 0, "no metadata record"));
    };
    let (entries, last_live) = replay.finish_entries()?;
    Ok(ReadLog {
        tail,
        end,
        file_len,
        metadata,
        crc,
        hard_state: replay.hard_state.take(),
        snapshot: replay.snapshot,
        entries,
        last_live,
    })
}

/// An open log, positioned for appending.
pub struct Wal {
    fs: Box<dyn Fs>,
    dir: PathBuf,
    segment_size: u64,
    max_files: usize,
    no_fsync: bool,
    /// The highest index given to [`Wal::release_to`]: segments before the newest one that starts
    /// at or below it are no longer needed.
    released_to: u64,
    /// Live segments in order; never empty, the last one is `file`.
    segments: Vec<Segment>,
    file: Box<dyn FsFile>,
    offset: u64,
    /// A segment holding only its header is not cut again, however large the next save.
    header_end: u64,
    crc: u32,
    /// Index of the last live entry; names the next segment.
    last_index: u64,
    metadata: Vec<u8>,
    hard_state: Option<Vec<u8>>,
    snapshot: Option<SnapshotMarker>,
    buf: Vec<u8>,
    poisoned: bool,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("segment", &self.current().name())
            .field("offset", &self.offset)
            .field("last_index", &self.last_index)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Whether `dir` holds at least one segment.
    pub fn exists(dir: &Path) -> bool {
        Self::exists_with(&StdFs, dir)
    }

    /// Starts a new log in `dir` (created if missing). Fails if `dir` already holds segments.
    pub fn create(dir: &Path, metadata: &[u8]) -> Result<Wal> {
        Self::create_with(Box::new(StdFs), dir, metadata, Options::default())
    }

    /// Reads the whole log, repairs a torn tail, and returns the log ready for appending.
    pub fn open(dir: &Path) -> Result<(Wal, Recovered)> {
        Self::open_with(Box::new(StdFs), dir, Options::default())
    }

    /// [`Wal::create`] with options.
    pub fn create_with_options(dir: &Path, metadata: &[u8], opts: WalOptions) -> Result<Wal> {
        Self::create_with(Box::new(StdFs), dir, metadata, opts.into())
    }

    /// [`Wal::open`] with options.
    pub fn open_with_options(dir: &Path, opts: WalOptions) -> Result<(Wal, Recovered)> {
        Self::open_with(Box::new(StdFs), dir, opts.into())
    }

    /// The options this log was opened or created with.
    pub fn options(&self) -> WalOptions {
        WalOptions {
            unsafe_no_fsync: self.no_fsync,
            max_files: self.max_files,
        }
    }

    fn exists_with(fs: &dyn Fs, dir: &Path) -> bool {
        scan_dir(fs, dir).is_ok_and(|(segs, _)| !segs.is_empty())
    }

    fn create_with(fs: Box<dyn Fs>, dir: &Path, metadata: &[u8], opts: Options) -> Result<Wal> {
        let fs = opts.fs(fs);
        frame_len(metadata.len())?;
        // Every directory entry on the way to `dir` that we create must be made durable in its
        // parent, or a crash could take the whole log with it. `dir` itself may have been
        // created by the caller just now, so its entry is synced either way.
        let mut created = vec![dir];
        for a in dir.ancestors().skip(1) {
            if a.as_os_str().is_empty() {
                break;
            }
            match fs.list(a) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => created.push(a),
                _ => break,
            }
        }
        fs.create_dir_all(dir).ctx("create directory", dir)?;
        for d in created {
            let parent = match d.parent() {
                Some(p) if p.as_os_str().is_empty() => Path::new("."),
                Some(p) => p,
                None => continue,
            };
            fs.sync_dir(parent).ctx("sync directory", parent)?;
        }
        let (segments, temps) = scan_dir(&*fs, dir).ctx("list", dir)?;
        if !segments.is_empty() {
            return Err(WalError::AlreadyExists(dir.to_path_buf()));
        }
        remove_temps(&*fs, dir, &temps)?;
        let seg = Segment { seq: 0, index: 0 };
        let mut buf = Vec::new();
        let (crc, header_end) = encode_header(&mut buf, 0, metadata, None, None);
        let file = write_segment(&*fs, dir, seg, opts.segment_size, &buf)?;
        Ok(Wal {
            fs,
            dir: dir.to_path_buf(),
            segment_size: opts.segment_size,
            max_files: opts.max_files,
            no_fsync: opts.no_fsync,
            released_to: 0,
            segments: vec![seg],
            file,
            offset: buf.len() as u64,
            header_end,
            crc,
            last_index: 0,
            metadata: metadata.to_vec(),
            hard_state: None,
            snapshot: None,
            buf,
            poisoned: false,
        })
    }

    fn open_with(fs: Box<dyn Fs>, dir: &Path, opts: Options) -> Result<(Wal, Recovered)> {
        let fs = opts.fs(fs);
        let (segments, temps) = match scan_dir(&*fs, dir) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(WalError::NotFound(dir.to_path_buf()))
            }
            Err(e) => return Err(e).ctx("list", dir),
        };
        if segments.is_empty() {
            return Err(WalError::NotFound(dir.to_path_buf()));
        }
        for pair in segments.windows(2) {
            if pair[0].seq.checked_add(1) != Some(pair[1].seq) {
                return Err(corrupt(
                    &pair[1].path(dir),
                    0,
                    format!("segment follows {}: a segment is missing", pair[0].name()),
                ));
            }
        }
        remove_temps(&*fs, dir, &temps)?;

        let log = read_log(segments.iter().map(|seg| {
            let path = seg.path(dir);
            let data = fs.read(&path).ctx("read", &path)?;
            Ok((path, data))
        }))?;
        let ReadLog {
            tail: path,
            end,
            file_len,
            ..
        } = &log;
        let mut file = fs.open(path).ctx("open", path)?;
        let end_offset = end.end as u64;
        let mut repaired_tail = None;
        if end.torn {
            tracing::warn!(
                path = %path.display(),
                offset = end_offset,
                discarded = file_len - end_offset,
                "write-ahead log ends in a torn write; truncating it"
            );
            // Shrinking first zeroes the torn bytes when the file is grown back, so stale
            // fragments can never be mistaken for records that follow later appends.
            file.set_len(end_offset).ctx("truncate", path)?;
            file.set_len(opts.segment_size.max(end_offset))
                .ctx("preallocate", path)?;
            file.sync_all().ctx("sync", path)?;
            repaired_tail = Some((path.clone(), end_offset));
        } else if *file_len < opts.segment_size {
            // A segment sealed just before a cut that did not survive a crash.
            file.set_len(opts.segment_size).ctx("preallocate", path)?;
            file.sync_all().ctx("sync", path)?;
        }

        let ReadLog {
            end,
            metadata,
            crc,
            hard_state,
            snapshot,
            entries,
            last_live,
            ..
        } = log;
        let last_index = last_live.or(snapshot.map(|s| s.index)).unwrap_or(0);
        let recovered = Recovered {
            metadata: metadata.clone(),
            hard_state: hard_state.clone(),
            snapshot,
            entries,
            repaired_tail,
        };
        let wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            segment_size: opts.segment_size,
            max_files: opts.max_files,
            no_fsync: opts.no_fsync,
            released_to: 0,
            segments,
            file,
            offset: end_offset,
            header_end: end.header_end as u64,
            crc,
            last_index,
            metadata,
            hard_state,
            snapshot,
            buf: Vec::new(),
            poisoned: false,
        };
        Ok((wal, recovered))
    }

    /// Appends `entries`, then `hard_state`, with one write and one `fdatasync`. Does nothing
    /// if given nothing. On error the log is poisoned.
    pub fn save(&mut self, hard_state: Option<&[u8]>, entries: &[Entry]) -> Result<()> {
        if hard_state.is_none() && entries.is_empty() {
            return Ok(());
        }
        self.usable()?;
        let mut size = 0usize;
        for e in entries {
            let n = frame_len(ENTRY_HEAD_LEN.saturating_add(e.data.len()))?;
            size = size.checked_add(n).ok_or(WalError::TooLarge(usize::MAX))?;
        }
        if let Some(hs) = hard_state {
            size = size
                .checked_add(frame_len(hs.len())?)
                .ok_or(WalError::TooLarge(usize::MAX))?;
        }
        self.make_room(size)?;

        self.buf.clear();
        self.buf.reserve(size);
        let mut crc = self.crc;
        for e in entries {
            let head = record::entry_head(e.index, e.term);
            crc = record::encode(&mut self.buf, crc, RecordType::Entry, &head, &e.data);
        }
        if let Some(hs) = hard_state {
            crc = record::encode(&mut self.buf, crc, RecordType::HardState, &[], hs);
        }
        self.append(crc)?;

        if let Some(e) = entries.last() {
            self.last_index = e.index;
        }
        if let Some(hs) = hard_state {
            match &mut self.hard_state {
                Some(v) => {
                    v.clear();
                    v.extend_from_slice(hs);
                }
                None => self.hard_state = Some(hs.to_vec()),
            }
        }
        Ok(())
    }

    /// Appends a snapshot marker and syncs. On replay, entries up to `marker.index` are dropped.
    pub fn save_snapshot(&mut self, marker: SnapshotMarker) -> Result<()> {
        self.usable()?;
        self.make_room(frame_len(SNAPSHOT_LEN)?)?;
        self.buf.clear();
        let p = record::entry_head(marker.index, marker.term);
        let crc = record::encode(&mut self.buf, self.crc, RecordType::Snapshot, &p, &[]);
        self.append(crc)?;
        self.snapshot = Some(marker);
        Ok(())
    }

    /// Marks the oldest segments whose live entries are all below `index` as no longer needed, and
    /// deletes those beyond [`WalOptions::max_files`] (see the module doc). The current segment is
    /// never deleted. Segments start with the latest metadata, hard state and snapshot marker, so
    /// the log stays readable; `index` must not exceed the latest snapshot index + 1 or replay will
    /// find entries missing.
    pub fn release_to(&mut self, index: u64) -> Result<()> {
        self.usable()?;
        let r = self.release(index);
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    fn release(&mut self, index: u64) -> Result<()> {
        self.released_to = self.released_to.max(index);
        self.purge()
    }

    /// Deletes segments no longer needed, oldest first, while there are more than `max_files`.
    fn purge(&mut self) -> Result<()> {
        if self.max_files == 0 {
            return Ok(());
        }
        // Every live entry in segments[..k] is below segments[k].index (see `Segment::index`),
        // whatever the names of the segments before k say, so only the largest such k matters.
        let Some(k) = (1..self.segments.len())
            .rev()
            .find(|&k| self.segments[k].index <= self.released_to)
        else {
            return Ok(());
        };
        let excess = self.segments.len().saturating_sub(self.max_files);
        for _ in 0..k.min(excess) {
            let path = self.segments[0].path(&self.dir);
            self.fs.remove(&path).ctx("remove", &path)?;
            self.segments.remove(0);
            self.fs
                .sync_dir(&self.dir)
                .ctx("sync directory", &self.dir)?;
            tracing::info!(path = %path.display(), "purged");
        }
        Ok(())
    }

    fn current(&self) -> Segment {
        self.segments[self.segments.len() - 1]
    }

    fn usable(&self) -> Result<()> {
        if self.poisoned {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Cuts a new segment if `size` more bytes would overflow the preallocated one. Cutting
    /// before the write rather than after keeps appends inside preallocated space.
    fn make_room(&mut self, size: usize) -> Result<()> {
        let full = self.offset.saturating_add(size as u64) > self.segment_size;
        if full && self.offset > self.header_end {
            let r = self.cut();
            if r.is_err() {
                self.poisoned = true;
            }
            r?;
        }
        Ok(())
    }

    fn cut(&mut self) -> Result<()> {
        let cur = self.current();
        let cur_path = cur.path(&self.dir);
        self.file.set_len(self.offset).ctx("truncate", &cur_path)?;
        self.file.sync_all().ctx("sync", &cur_path)?;
        let Some(seq) = cur.seq.checked_add(1) else {
            return Err(corrupt(&cur_path, 0, "segment sequence number exhausted"));
        };
        let next = Segment {
            seq,
            index: self.last_index.saturating_add(1),
        };
        self.buf.clear();
        let (crc, header_end) = encode_header(
            &mut self.buf,
            self.crc,
            &self.metadata,
            self.hard_state.as_deref(),
            self.snapshot,
        );
        self.file = write_segment(&*self.fs, &self.dir, next, self.segment_size, &self.buf)?;
        self.segments.push(next);
        self.offset = self.buf.len() as u64;
        self.header_end = header_end;
        self.crc = crc;
        tracing::debug!(segment = %next.name(), "cut wal segment");
        // One more segment: an old one may now be beyond the count.
        self.purge()
    }

    /// Writes `self.buf` at the append offset and syncs it; `crc` is the chain value after it.
    fn append(&mut self, crc: u32) -> Result<()> {
        let r = self
            .file
            .write_at(self.offset, &self.buf)
            .and_then(|()| failpoint::hit_io("walBeforeSync"))
            .and_then(|()| self.file.sync_data());
        if r.is_ok() {
            failpoint::hit("walAfterSync");
        }
        if let Err(e) = r {
            self.poisoned = true;
            return Err(e).ctx("append to", &self.current().path(&self.dir));
        }
        self.offset += self.buf.len() as u64;
        self.crc = crc;
        if self.buf.capacity() > MAX_RETAINED_BUF {
            self.buf = Vec::new();
        }
        Ok(())
    }
}
