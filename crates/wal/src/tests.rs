use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::fs::{Fs, StdFs};
use crate::memfs::MemFs;
use crate::record::{self, Decoded};
use crate::{Entry, Options, Recovered, SnapshotMarker, Wal, WalError, WalOptions};

const META: &[u8] = b"node=1 cluster=7";
/// Deliberately two levels, so that `create` has to make both directory entries durable.
const DIR: &str = "/data/wal";

fn dir() -> &'static Path {
    Path::new(DIR)
}

/// Small enough that the workloads below span many segments.
fn small() -> Options {
    Options {
        segment_size: 1024,
        ..Options::default()
    }
}

fn entry(index: u64, term: u64, len: usize) -> Entry {
    Entry {
        index,
        term,
        data: (0..len)
            .map(|i| (index as usize * 31 + term as usize * 7 + i) as u8)
            .collect(),
    }
}

fn marker(index: u64, term: u64) -> SnapshotMarker {
    SnapshotMarker { index, term }
}

#[derive(Clone, Debug)]
enum Op {
    Save(Option<Vec<u8>>, Vec<Entry>),
    Snap(SnapshotMarker),
    Release(u64),
}

fn run(wal: &mut Wal, op: &Op) -> crate::Result<()> {
    match op {
        Op::Save(hs, es) => wal.save(hs.as_deref(), es),
        Op::Snap(m) => wal.save_snapshot(*m),
        Op::Release(i) => wal.release_to(*i),
    }
}

/// One record as the log writes it, in write order.
#[derive(Clone, Debug)]
enum Rec {
    Entry(Entry),
    HardState(Vec<u8>),
    Snap(SnapshotMarker),
}

fn records(op: &Op) -> Vec<Rec> {
    match op {
        Op::Save(hs, es) => es
            .iter()
            .cloned()
            .map(Rec::Entry)
            .chain(hs.clone().map(Rec::HardState))
            .collect(),
        Op::Snap(m) => vec![Rec::Snap(*m)],
        Op::Release(_) => vec![],
    }
}

/// Reference semantics, independent of the replay code.
#[derive(Clone, Debug, Default)]
struct Model {
    entries: BTreeMap<u64, Entry>,
    hard_state: Option<Vec<u8>>,
    snapshot: Option<SnapshotMarker>,
}

impl Model {
    fn apply(&mut self, rec: &Rec) {
        match rec {
            Rec::Entry(e) => {
                self.entries.split_off(&e.index);
                self.entries.insert(e.index, e.clone());
            }
            Rec::HardState(h) => self.hard_state = Some(h.clone()),
            Rec::Snap(m) => self.snapshot = Some(*m),
        }
    }

    fn apply_op(&mut self, op: &Op) {
        for r in records(op) {
            self.apply(&r);
        }
    }

    fn expected(&self) -> Recovered {
        let from = self.snapshot.map_or(0, |s| s.index + 1);
        Recovered {
            metadata: META.to_vec(),
            hard_state: self.hard_state.clone(),
            snapshot: self.snapshot,
            entries: self.entries.range(from..).map(|(_, e)| e.clone()).collect(),
            repaired_tail: None,
        }
    }

    fn matches(&self, r: &Recovered) -> bool {
        Recovered {
            repaired_tail: None,
            ..r.clone()
        } == self.expected()
    }

    fn check(&self, r: &Recovered) {
        let got = Recovered {
            repaired_tail: None,
            ..r.clone()
        };
        assert_eq!(got, self.expected());
    }

    fn next_index(&self) -> u64 {
        let last = self.entries.keys().next_back().copied().unwrap_or(0);
        last.max(self.snapshot.map_or(0, |s| s.index)) + 1
    }
}

/// Entries with varied sizes, hard-state-only saves, overwrites after term changes, snapshot
/// markers each followed by a release up to them.
fn workload(rounds: u64) -> Vec<Op> {
    let mut ops = Vec::new();
    let (mut next, mut term, mut snap) = (1u64, 1u64, 0u64);
    for r in 0..rounds {
        if r % 6 == 5 && next > snap + 3 {
            next -= 2;
            term += 1;
        }
        let n = 1 + r % 3;
        let entries = (0..n)
            .map(|i| entry(next + i, term, ((r * 37 + i * 13) % 90) as usize))
            .collect();
        next += n;
        let hs = format!("term={term} commit={}", next - 1).into_bytes();
        ops.push(Op::Save((r % 4 != 3).then(|| hs.clone()), entries));
        if r % 8 == 7 {
            ops.push(Op::Save(Some(hs), vec![]));
        }
        if r % 5 == 4 {
            snap = next - 2;
            ops.push(Op::Snap(marker(snap, term)));
            ops.push(Op::Release(snap + 1));
        }
    }
    ops
}

fn workload_without_releases(rounds: u64) -> Vec<Op> {
    let mut ops = workload(rounds);
    ops.retain(|op| !matches!(op, Op::Release(_)));
    ops
}

fn create(fs: &MemFs) -> Wal {
    Wal::create_with(fs.boxed(), dir(), META, small()).unwrap()
}

fn open(fs: &MemFs) -> crate::Result<(Wal, Recovered)> {
    Wal::open_with(fs.boxed(), dir(), small())
}

fn seg_paths(fs: &MemFs) -> Vec<PathBuf> {
    fs.names(dir())
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .map(|n| dir().join(n))
        .collect()
}

/// (start, end) of each record at the front of `data`.
fn record_spans(data: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut off = 0;
    while let Decoded::Record(f) = record::decode(&data[off..]) {
        spans.push((off, off + f.len));
        off += f.len;
    }
    spans
}

fn assert_corrupt_at(err: WalError, path: &Path, offset: usize) {
    let msg = err.to_string();
    match err {
        WalError::Corrupt {
            path: p, offset: o, ..
        } => {
            assert_eq!((p.as_path(), o), (path, offset as u64), "{msg}");
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(
                msg.contains(name) && msg.contains(&format!("offset {offset}")),
                "{msg}"
            );
        }
        other => panic!(
            "expected corruption at {}:{offset}, got {other}",
            path.display()
        ),
    }
}

/// `n` random bytes (the tests' generator is `fastrand`, seeded: a failure replays).
fn random_bytes(rng: &mut fastrand::Rng, n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    rng.fill(&mut b);
    b
}

fn round_trip(fs: Box<dyn Fs>, reopen: impl Fn() -> Box<dyn Fs>, dir: &Path) {
    let ops = workload(40);
    let mut model = Model::default();
    let mut wal = Wal::create_with(fs, dir, META, small()).unwrap();
    for (i, op) in ops.iter().enumerate() {
        run(&mut wal, op).unwrap();
        model.apply_op(op);
        if i % 9 == 0 {
            drop(wal);
            let (w, rec) = Wal::open_with(reopen(), dir, small()).unwrap();
            model.check(&rec);
            assert_eq!(rec.repaired_tail, None);
            wal = w;
        }
    }
    assert!(
        wal.current().seq >= 5,
        "workload should span several segments, cut {}",
        wal.current().seq
    );
    assert!(
        wal.segments[0].seq > 0,
        "releases should have removed segments"
    );
    drop(wal);
    let (_, rec) = Wal::open_with(reopen(), dir, small()).unwrap();
    model.check(&rec);
    assert!(model.snapshot.is_some() && !rec.entries.is_empty());
}

#[test]
fn round_trip_real_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/wal");
    assert!(!Wal::exists(&dir));
    round_trip(Box::new(StdFs), || Box::new(StdFs), &dir);
    assert!(Wal::exists(&dir));
    // The public constructors use the production segment size.
    let (mut wal, rec) = Wal::open(&dir).unwrap();
    assert_eq!(rec.metadata, META);
    wal.save(None, &[entry(1000, 9, 3)]).unwrap();
    assert!(matches!(
        Wal::create(&dir, META),
        Err(WalError::AlreadyExists(_))
    ));
}

#[test]
fn round_trip_memfs() {
    let fs = MemFs::new();
    let f2 = fs.clone();
    round_trip(fs.boxed(), move || f2.boxed(), dir());
}

#[test]
fn overwrite_semantics() {
    let fs = MemFs::new();
    let mut wal = create(&fs);
    let first: Vec<Entry> = (1..=10).map(|i| entry(i, 1, 40)).collect();
    wal.save(Some(b"hs1"), &first).unwrap();
    // A new leader replaces 5.. with its own 5 and 6, in a later segment.
    let second = vec![entry(5, 2, 50), entry(6, 2, 50)];
    wal.save(Some(b"hs2"), &second).unwrap();
    wal.save(None, &[entry(7, 2, 1)]).unwrap();
    // And another replaces from 3 with nothing after it.
    wal.save(None, &[entry(3, 3, 0)]).unwrap();
    assert!(wal.segments.len() >= 2);
    drop(wal);
    let (_, rec) = open(&fs).unwrap();
    let want: Vec<Entry> = vec![entry(1, 1, 40), entry(2, 1, 40), entry(3, 3, 0)];
    assert_eq!(rec.entries, want);
    assert_eq!(rec.hard_state.as_deref(), Some(&b"hs2"[..]));
}

#[test]
fn snapshot_covers_gaps_only_when_it_reaches_them() {
    let fs = MemFs::new();
    let mut wal = create(&fs);
    wal.save(None, &[entry(1, 1, 1), entry(2, 1, 1)]).unwrap();
    // A snapshot from the leader jumps the log forward.
    wal.save_snapshot(marker(9, 2)).unwrap();
    wal.save(None, &[entry(10, 2, 1)]).unwrap();
    let (mut wal, rec) = open(&fs).unwrap();
    assert_eq!(rec.entries, vec![entry(10, 2, 1)]);
    assert_eq!(rec.snapshot, Some(marker(9, 2)));
    // A hole no snapshot covers is an error, not a silently shorter log.
    wal.save(None, &[entry(12, 2, 1)]).unwrap();
    drop(wal);
    let err = open(&fs).unwrap_err();
    assert!(
        err.to_string().contains("entry 12 follows entry 10"),
        "{err}"
    );
}

#[test]
fn create_and_exists() {
    let fs = MemFs::new();
    assert!(!Wal::exists_with(&fs, dir()));
    assert!(matches!(open(&fs), Err(WalError::NotFound(_))));
    let wal = create(&fs);
    drop(wal);
    assert!(Wal::exists_with(&fs, dir()));
    assert!(matches!(
        Wal::create_with(fs.boxed(), dir(), META, small()),
        Err(WalError::AlreadyExists(_))
    ));
    let (_, rec) = open(&fs).unwrap();
    assert_eq!(rec.metadata, META);
    assert_eq!(
        (rec.hard_state, rec.snapshot, rec.entries.len()),
        (None, None, 0)
    );
}

#[test]
fn one_write_and_one_sync_per_save() {
    let fs = MemFs::new();
    let opts = Options {
        segment_size: 1 << 20,
        ..Options::default()
    };
    let mut wal = Wal::create_with(fs.boxed(), dir(), META, opts).unwrap();
    let entries: Vec<Entry> = (1..=100).map(|i| entry(i, 1, 100)).collect();
    let (syncs, writes) = (fs.syncs(), fs.writes());
    wal.save(Some(b"hs"), &entries).unwrap();
    assert_eq!((fs.syncs() - syncs, fs.writes() - writes), (1, 1));
    let cap = wal.buf.capacity();
    wal.save(Some(b"hs"), &entries[..50]).unwrap();
    assert_eq!(wal.buf.capacity(), cap, "the save buffer is reused");
    wal.save(None, &[]).unwrap();
    assert_eq!((fs.syncs() - syncs, fs.writes() - writes), (2, 2));
}

#[test]
fn zeroed_preallocated_tail_is_end_of_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut wal = Wal::create(&dir, META).unwrap();
    wal.save(Some(b"hs"), &[entry(1, 1, 10), entry(2, 1, 20)])
        .unwrap();
    let end = wal.offset as usize;
    let path = wal.current().path(&dir);
    drop(wal);
    let data = std::fs::read(&path).unwrap();
    assert_eq!(
        data.len() as u64,
        crate::SEGMENT_SIZE,
        "segment is preallocated"
    );
    assert!(data[end..].iter().all(|&b| b == 0));
    let (mut wal, rec) = Wal::open(&dir).unwrap();
    assert_eq!(rec.entries, vec![entry(1, 1, 10), entry(2, 1, 20)]);
    assert_eq!(rec.repaired_tail, None);
    assert_eq!(
        wal.offset as usize, end,
        "appending resumes after the last record"
    );
    wal.save(None, &[entry(3, 1, 5)]).unwrap();
    drop(wal);
    let (_, rec) = Wal::open(&dir).unwrap();
    assert_eq!(rec.entries.len(), 3);
}

#[test]
fn zeroed_bytes_in_a_sealed_segment_are_corruption() {
    let fs = MemFs::new();
    let mut wal = create(&fs);
    for op in workload_without_releases(12) {
        run(&mut wal, &op).unwrap();
    }
    drop(wal);
    let paths = seg_paths(&fs);
    assert!(paths.len() >= 3);
    let path = &paths[paths.len() - 2];
    let mut data = fs.read_file(path);
    let spans = record_spans(&data);
    assert_eq!(
        spans.last().unwrap().1,
        data.len(),
        "sealed segments are truncated"
    );
    let (start, end) = spans[spans.len() - 1];
    data[start..end].fill(0);
    fs.write_file(path, data);
    assert_corrupt_at(open(&fs).unwrap_err(), path, start);
}

/// Builds a multi-segment log whose last save is a batch of several records, and returns the
/// file system (all durable), the model before that save, the batch, and its location.
fn log_ending_in_batch() -> (MemFs, Model, Op, PathBuf, usize, usize) {
    let fs = MemFs::new();
    let mut wal = create(&fs);
    let mut model = Model::default();
    for op in workload(10) {
        run(&mut wal, &op).unwrap();
        model.apply_op(&op);
    }
    let next = model.next_index();
    let batch = Op::Save(
        Some(b"final hard state".to_vec()),
        vec![
            entry(next, 9, 150),
            entry(next + 1, 9, 0),
            entry(next + 2, 9, 8),
        ],
    );
    run(&mut wal, &batch).unwrap();
    let end = wal.offset as usize;
    let start = end - wal.buf.len();
    let path = wal.current().path(dir());
    drop(wal);
    (fs, model, batch, path, start, end)
}

#[test]
fn torn_last_write_at_every_byte_offset() {
    let (fs, before, batch, path, start, end) = log_ending_in_batch();
    let original = fs.read_file(&path);
    let spans: Vec<(usize, usize)> = record_spans(&original[start..])
        .into_iter()
        .map(|(s, e)| (start + s, start + e))
        .collect();
    let recs = records(&batch);
    assert_eq!(spans.len(), recs.len());
    assert_eq!(spans.last().unwrap().1, end);

    for cut in start..end {
        // Two shapes of tear: the rest of the write never reached the preallocated (zeroed)
        // file, or the file itself is short.
        for truncate in [false, true] {
            let fs = fs.reboot(0);
            let mut data = original.clone();
            if truncate {
                data.truncate(cut);
            } else {
                data[cut..end].fill(0);
            }
            fs.write_file(&path, data.clone());
            let (mut wal, rec) =
                open(&fs).unwrap_or_else(|e| panic!("cut at {cut} (truncate {truncate}): {e}"));

            let survivors = spans
                .iter()
                .take_while(|&&(s, e)| data.get(s..e) == Some(&original[s..e]))
                .count();
            let mut want = before.clone();
            for r in &recs[..survivors] {
                want.apply(r);
            }
            want.check(&rec);
            let lost_from = spans.get(survivors).map_or(end, |s| s.0);
            let junk = data
                .get(lost_from..)
                .is_some_and(|t| t.iter().any(|&b| b != 0));
            assert_eq!(
                rec.repaired_tail,
                junk.then(|| (path.clone(), lost_from as u64)),
                "cut at {cut} (truncate {truncate})"
            );

            // The log keeps going after the repair, and the repair is not needed again.
            let again = Op::Save(
                Some(b"after".to_vec()),
                vec![entry(want.next_index(), 10, 5)],
            );
            run(&mut wal, &again).unwrap();
            want.apply_op(&again);
            drop(wal);
            let (_, rec) = open(&fs).unwrap();
            want.check(&rec);
            assert_eq!(rec.repaired_tail, None);
        }
    }
}

#[test]
fn bit_flip_in_a_sealed_segment_names_file_and_offset() {
    let fs = MemFs::new();
    let mut wal = create(&fs);
    for op in workload_without_releases(12) {
        run(&mut wal, &op).unwrap();
    }
    drop(wal);
    let paths = seg_paths(&fs);
    assert!(paths.len() >= 3);
    let path = &paths[paths.len() / 2];
    let original = fs.read_file(path);
    let spans = record_spans(&original);
    assert_eq!(spans.last().unwrap().1, original.len());
    for &(start, end) in &spans {
        for byte in start..end {
            let fs = fs.reboot(0);
            let mut data = original.clone();
            data[byte] ^= 1 << (byte % 8);
            fs.write_file(path, data);
            assert_corrupt_at(open(&fs).unwrap_err(), path, start);
        }
    }
}

#[test]
fn bit_flip_followed_by_valid_records_in_last_segment_is_not_a_torn_tail() {
    let fs = MemFs::new();
    let mut wal = create(&fs);
    for i in 1..=6 {
        wal.save(Some(format!("hs{i}").as_bytes()), &[entry(i, 1, 30)])
            .unwrap();
    }
    let path = wal.current().path(dir());
    drop(wal);
    let original = fs.read_file(&path);
    let spans = record_spans(&original);
    // Every record but the last: each is followed by valid records.
    for &(start, end) in &spans[2..spans.len() - 1] {
        for byte in start..end {
            let fs = fs.reboot(0);
            let mut data = original.clone();
            data[byte] ^= 0x80 >> (byte % 8);
            fs.write_file(&path, data);
            assert_corrupt_at(open(&fs).unwrap_err(), &path, start);
        }
    }
    // Damage to the very last record is indistinguishable from a torn write.
    let (start, _) = *spans.last().unwrap();
    let mut data = original.clone();
    data[start + 20] ^= 1;
    fs.write_file(&path, data);
    let (_, rec) = open(&fs).unwrap();
    assert_eq!(rec.repaired_tail, Some((path.clone(), start as u64)));
    assert_eq!(rec.hard_state.as_deref(), Some(&b"hs5"[..]));
}

#[test]
fn missing_middle_segment_is_reported() {
    let fs = MemFs::new();
    let mut wal = create(&fs);
    for op in &workload_without_releases(12) {
        run(&mut wal, op).unwrap();
    }
    drop(wal);
    let paths = seg_paths(&fs);
    fs.remove(&paths[1]).unwrap();
    assert_corrupt_at(open(&fs).unwrap_err(), &paths[2], 0);
}

#[test]
fn segment_from_another_chain_is_reported() {
    // Same metadata, same shape, different history: only the CRC chain can tell.
    let fs = MemFs::new();
    let other = MemFs::new();
    let mut a = create(&fs);
    let mut b = create(&other);
    for i in 1..=30 {
        a.save(Some(b"a"), &[entry(i, 1, 30)]).unwrap();
        b.save(Some(b"b"), &[entry(i, 1, 30)]).unwrap();
    }
    drop((a, b));
    let paths = seg_paths(&fs);
    assert_eq!(paths, seg_paths(&other), "both logs cut at the same points");
    fs.write_file(&paths[1], other.read_file(&paths[1]));
    assert_corrupt_at(open(&fs).unwrap_err(), &paths[1], 0);
}

#[test]
fn power_loss_at_every_sync() {
    let ops = workload(24);
    let total = {
        let fs = MemFs::new();
        let mut wal = create(&fs);
        for op in &ops {
            run(&mut wal, op).unwrap();
        }
        fs.syncs()
    };
    let mut checked = 0;
    for crash in 1..=total {
        let fs = MemFs::new();
        fs.crash_at(crash);
        let mut wal = match Wal::create_with(fs.boxed(), dir(), META, small()) {
            Ok(w) => w,
            Err(_) => {
                // create never returned, so the log must either be absent or be usable.
                for torn in 0..=fs.pending_write_len() {
                    let fs = fs.reboot(torn);
                    if Wal::exists_with(&fs, dir()) {
                        let (_, rec) = open(&fs).unwrap();
                        Model::default().check(&rec);
                    } else {
                        drop(create(&fs));
                        open(&fs).unwrap();
                    }
                }
                continue;
            }
        };
        let mut acked = Model::default();
        let mut inflight = None;
        for op in &ops {
            match run(&mut wal, op) {
                Ok(()) => acked.apply_op(op),
                Err(e) => {
                    assert!(matches!(e, WalError::Io { .. }), "{e}");
                    assert!(matches!(run(&mut wal, op), Err(WalError::Poisoned)));
                    inflight = Some(op);
                    break;
                }
            }
        }
        let inflight = inflight.expect("the crash point is inside the workload");
        drop(wal);
        for torn in 0..=fs.pending_write_len() {
            let fs = fs.reboot(torn);
            let (mut wal, rec) =
                open(&fs).unwrap_or_else(|e| panic!("crash at sync {crash}, torn {torn}: {e}"));
            // Everything acknowledged, plus possibly a prefix of the write in flight.
            let mut candidate = acked.clone();
            let mut found = candidate.matches(&rec);
            for r in records(inflight) {
                if found {
                    break;
                }
                candidate.apply(&r);
                found = candidate.matches(&rec);
            }
            assert!(
                found,
                "crash at sync {crash}, torn {torn}: recovered {rec:?}\nacked {acked:?}\nin flight {inflight:?}"
            );
            let more = Op::Save(
                Some(b"later".to_vec()),
                vec![entry(candidate.next_index(), 50, 9)],
            );
            run(&mut wal, &more).unwrap();
            candidate.apply_op(&more);
            drop(wal);
            let (_, rec) = open(&fs).unwrap();
            candidate.check(&rec);
            checked += 1;
        }
    }
    eprintln!("power loss: {total} sync points, {checked} crash images");
    assert!(checked > total as usize, "checked {checked} crash images");
}

#[test]
fn release_to_keeps_the_log_readable() {
    let fs = MemFs::new();
    let mut wal = create(&fs);
    let mut model = Model::default();
    let ops = workload_without_releases(30);
    for op in &ops {
        run(&mut wal, op).unwrap();
        model.apply_op(op);
    }
    let before = seg_paths(&fs);
    assert!(before.len() > 4);
    // An older snapshot than the latest: releasing up to it must keep everything after it.
    let snaps: Vec<SnapshotMarker> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Snap(m) => Some(*m),
            _ => None,
        })
        .collect();
    let snap = snaps[snaps.len() / 2];

    // Nothing below the first cut: nothing to release.
    wal.release_to(1).unwrap();
    assert_eq!(seg_paths(&fs), before);

    wal.release_to(snap.index + 1).unwrap();
    let after = seg_paths(&fs);
    assert!(after.len() < before.len() && after.len() > 1, "{after:?}");
    assert_eq!(after[..], before[before.len() - after.len()..]);
    drop(wal);
    let (mut wal, rec) = open(&fs).unwrap();
    model.check(&rec);

    // Snapshot everything and release as far as possible: only the current segment is left,
    // and its header still carries metadata, hard state and the snapshot.
    let last = model.next_index() - 1;
    let m = marker(last, 99);
    wal.save_snapshot(m).unwrap();
    model.apply(&Rec::Snap(m));
    // Force a cut so the marker is also in a segment header.
    for i in 0..20 {
        let op = Op::Save(None, vec![entry(last + 1 + i, 99, 60)]);
        run(&mut wal, &op).unwrap();
        model.apply_op(&op);
    }
    let m = marker(last + 20, 99);
    wal.save_snapshot(m).unwrap();
    model.apply(&Rec::Snap(m));
    wal.release_to(u64::MAX).unwrap();
    assert_eq!(seg_paths(&fs).len(), 1);
    drop(wal);
    let (mut wal, rec) = open(&fs).unwrap();
    model.check(&rec);
    assert!(rec.hard_state.is_some() && rec.entries.is_empty());

    let op = Op::Save(Some(b"x".to_vec()), vec![entry(last + 21, 100, 3)]);
    run(&mut wal, &op).unwrap();
    model.apply_op(&op);
    drop(wal);
    model.check(&open(&fs).unwrap().1);
}

#[test]
fn garbage_never_panics() {
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let first = dir().join("0000000000000000-0000000000000000.wal");

    // Random bytes as the only segment.
    for i in 0..300 {
        let fs = MemFs::new();
        fs.create_dir_all(dir()).unwrap();
        let len = if i % 3 == 0 {
            rng.usize(..40)
        } else {
            rng.usize(..5000)
        };
        fs.put_file(&first, random_bytes(&mut rng, len));
        assert!(open(&fs).is_err());
    }

    // Plausible headers with absurd lengths: must be rejected without allocating them.
    for len in [u32::MAX, u32::MAX - 7, 1 << 31, 4096, 17] {
        for ty in 0..=6u8 {
            let fs = MemFs::new();
            drop(create(&fs));
            let mut data = fs.read_file(&first);
            let end = record_spans(&data).last().unwrap().1;
            data[end + 8..end + 12].copy_from_slice(&len.to_le_bytes());
            data[end + 12] = ty;
            fs.write_file(&first, data);
            match open(&fs) {
                Ok((_, rec)) => assert_eq!(rec.repaired_tail, Some((first.clone(), end as u64))),
                Err(e) => assert!(matches!(e, WalError::Corrupt { .. }), "{e}"),
            }
        }
    }

    // Random junk after valid records in the last segment is a torn tail.
    let fs = MemFs::new();
    let mut wal = create(&fs);
    for op in workload(12) {
        run(&mut wal, &op).unwrap();
    }
    let (end, last) = (wal.offset as usize, wal.current().path(dir()));
    drop(wal);
    let original = fs.read_file(&last);
    for _ in 0..100 {
        let fs = fs.reboot(0);
        let mut data = original.clone();
        let n = rng.usize(..data.len() - end) + 1;
        data[end..end + n].copy_from_slice(&random_bytes(&mut rng, n));
        fs.write_file(&last, data);
        let (_, rec) = open(&fs).unwrap();
        assert_eq!(rec.repaired_tail, Some((last.clone(), end as u64)));
    }

    // Random damage anywhere in a multi-segment log, and garbage as a whole sealed segment.
    let paths = seg_paths(&fs);
    for i in 0..400 {
        let fs = fs.reboot(0);
        let path = &paths[rng.usize(..paths.len())];
        let mut data = fs.read_file(path);
        if i % 10 == 0 {
            let n = rng.usize(..3000);
            data = random_bytes(&mut rng, n);
        } else {
            for _ in 0..1 + rng.usize(..8) {
                let at = rng.usize(..data.len());
                data[at] = rng.u8(..);
            }
        }
        fs.write_file(path, data);
        let _ = open(&fs);
    }

    // Names that merely look like segments are not segments.
    let fs = MemFs::new();
    fs.create_dir_all(dir()).unwrap();
    for name in [
        "foo.wal",
        "000000000000000A-0000000000000000.wal",
        "+00000000000000a-0000000000000000.wal",
        "0000000000000000-0000000000000000.wal.bak",
        "0000000000000000-00000000000000000.wal",
    ] {
        fs.put_file(&dir().join(name), random_bytes(&mut rng, 100));
    }
    assert!(!Wal::exists_with(&fs, dir()));
    drop(create(&fs));
    assert!(open(&fs).is_ok());
}

#[test]
fn leftover_temp_segment_is_removed() {
    let fs = MemFs::new();
    let mut wal = create(&fs);
    wal.save(None, &[entry(1, 1, 1)]).unwrap();
    drop(wal);
    let tmp = dir().join("0000000000000001-0000000000000002.wal.tmp");
    fs.put_file(&tmp, vec![1; 64]);
    let (_, rec) = open(&fs).unwrap();
    assert_eq!(rec.entries.len(), 1);
    assert!(!fs.names(dir()).iter().any(|n| n.ends_with(".tmp")));
}

#[test]
fn batch_larger_than_a_segment() {
    let fs = MemFs::new();
    let mut wal = create(&fs);
    let big: Vec<Entry> = (1..=10).map(|i| entry(i, 1, 300)).collect();
    // A segment holding only its header is not cut: the file just grows past its preallocation.
    wal.save(Some(b"hs"), &big).unwrap();
    assert_eq!(wal.segments.len(), 1);
    let more: Vec<Entry> = (11..=20).map(|i| entry(i, 1, 300)).collect();
    wal.save(Some(b"hs"), &more).unwrap();
    assert_eq!(wal.segments.len(), 2);
    drop(wal);
    let (_, rec) = open(&fs).unwrap();
    assert_eq!(rec.entries, big.into_iter().chain(more).collect::<Vec<_>>());
}

#[test]
fn wal_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<Wal>();
    send::<WalError>();
}

#[test]
fn a_full_disk_fails_the_save_and_loses_nothing_acknowledged() {
    let ops = workload(24);
    for fail_at in 0..ops.len() {
        if matches!(ops[fail_at], Op::Release(_)) {
            // Releasing only deletes files.
            continue;
        }
        let fs = MemFs::new();
        let mut wal = create(&fs);
        let mut acked = Model::default();
        for op in &ops[..fail_at] {
            run(&mut wal, op).unwrap();
            acked.apply_op(op);
        }
        fs.set_full(true);
        let e = run(&mut wal, &ops[fail_at]).unwrap_err();
        assert!(
            e.to_string().contains("No space left on device"),
            "op {fail_at}: {e}"
        );
        // Space is freed, but a log that failed a write is not trusted again until reopened.
        fs.set_full(false);
        assert!(matches!(
            run(&mut wal, &ops[fail_at]),
            Err(WalError::Poisoned)
        ));
        drop(wal);
        // Both without a crash and after one: exactly what was acknowledged.
        for fs in [fs.clone(), fs.reboot(0)] {
            let (mut wal, rec) = open(&fs).unwrap_or_else(|e| panic!("op {fail_at}: {e}"));
            acked.check(&rec);
            let mut model = acked.clone();
            for op in &ops[fail_at..] {
                run(&mut wal, op).unwrap();
                model.apply_op(op);
            }
            drop(wal);
            model.check(&open(&fs).unwrap().1);
        }
    }
}

/// Segments of a log with a snapshot marker at every save, cut every few saves.
fn log_with_segments(fs: &MemFs, opts: Options, saves: u64) -> Wal {
    let mut wal = Wal::create_with(fs.boxed(), dir(), META, opts).unwrap();
    for i in 1..=saves {
        wal.save(Some(b"hs"), &[entry(i, 1, 300)]).unwrap();
    }
    wal
}

#[test]
fn max_files_keeps_that_many_segments_and_never_one_still_needed() {
    let fs = MemFs::new();
    let opts = Options {
        max_files: 3,
        ..small()
    };
    let mut wal = log_with_segments(&fs, opts, 40);
    let all = seg_paths(&fs);
    assert!(all.len() > 6, "{all:?}");

    // Nothing is covered by a snapshot: every segment is needed, whatever the count.
    wal.release_to(0).unwrap();
    assert_eq!(seg_paths(&fs), all);

    // A snapshot covering the first entries only: only the segments before the one holding the
    // first entry still needed may go.
    let segs = wal.segments.clone();
    let needed_from = segs[4].index;
    wal.save_snapshot(marker(needed_from, 1)).unwrap();
    wal.release_to(needed_from).unwrap();
    let kept = seg_paths(&fs);
    assert_eq!(
        kept[..],
        all[4..],
        "four old segments purged, the needed ones kept"
    );
    assert!(kept.len() > 3, "needed segments are kept beyond max_files");

    // Everything covered: down to max_files, newest kept.
    let last = wal.last_index;
    wal.save_snapshot(marker(last, 1)).unwrap();
    wal.release_to(last).unwrap();
    let kept = seg_paths(&fs);
    assert_eq!(kept.len(), 3);
    assert_eq!(kept[..], all[all.len() - 3..]);

    // Cutting a new segment purges the oldest released one, keeping the count.
    let before = wal.current();
    while wal.current() == before {
        let i = wal.last_index + 1;
        wal.save(Some(b"hs"), &[entry(i, 1, 300)]).unwrap();
    }
    let after = seg_paths(&fs);
    assert_eq!(after.len(), 3);
    assert_eq!(after[..2], kept[1..]);
    drop(wal);
    let (_, rec) = open(&fs).unwrap();
    assert_eq!(rec.snapshot, Some(marker(last, 1)));
}

#[test]
fn max_files_zero_keeps_every_segment() {
    let fs = MemFs::new();
    let opts = Options {
        max_files: 0,
        ..small()
    };
    let mut wal = log_with_segments(&fs, opts, 30);
    let all = seg_paths(&fs);
    let last = wal.last_index;
    wal.save_snapshot(marker(last, 1)).unwrap();
    wal.release_to(last).unwrap();
    for i in last + 1..last + 20 {
        wal.save(Some(b"hs"), &[entry(i, 1, 300)]).unwrap();
    }
    let now = seg_paths(&fs);
    assert!(now.len() > all.len());
    assert_eq!(now[..all.len()], all[..]);
    drop(wal);
    let (_, rec) = open(&fs).unwrap();
    assert_eq!(rec.entries.first().map(|e| e.index), Some(last + 1));
}

#[test]
fn unsafe_no_fsync_never_syncs() {
    let fs = MemFs::new();
    let mut wal = Wal::create_with(
        fs.boxed(),
        dir(),
        META,
        Options {
            no_fsync: true,
            ..small()
        },
    )
    .unwrap();
    assert!(wal.options().unsafe_no_fsync);
    for i in 1..=20 {
        wal.save(Some(b"hs"), &[entry(i, 1, 300)]).unwrap();
    }
    wal.save_snapshot(marker(20, 1)).unwrap();
    wal.release_to(20).unwrap();
    assert_eq!(fs.syncs(), 0, "no sync of any file or directory");
    // The writes reached the files all the same.
    drop(wal);
    let (wal, rec) = open(&fs).unwrap();
    assert_eq!(rec.snapshot, Some(marker(20, 1)));
    assert!(!wal.options().unsafe_no_fsync);

    // The default syncs.
    let fs = MemFs::new();
    let mut wal = create(&fs);
    wal.save(Some(b"hs"), &[entry(1, 1, 3)]).unwrap();
    assert!(fs.syncs() > 0);
}

#[test]
fn public_options_reach_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = WalOptions {
        unsafe_no_fsync: true,
        max_files: 7,
    };
    let wal = Wal::create_with_options(&dir, META, opts).unwrap();
    assert_eq!(wal.options(), opts);
    drop(wal);
    let (wal, _) = Wal::open_with_options(&dir, WalOptions::default()).unwrap();
    assert_eq!(wal.options(), WalOptions::default());
}

mod fuzz;
