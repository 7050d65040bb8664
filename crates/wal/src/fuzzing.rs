//! The entry of the `wal` fuzz target (`fuzz/`, `docs/fuzzing.md`), also run for a bounded number
//! of iterations by this crate's tests: bytes as the segments of a log, read back with exactly the
//! checks [`Wal::open`](crate::Wal::open) makes (records, CRC chain, torn tail, segment headers,
//! entry order), without a file system; and as a segment file name.
//!
//! Besides not panicking and not allocating what a damaged length claims, a log that is accepted
//! must be one the reader promises: entries in index order without holes and after the snapshot,
//! the end of the valid records within the newest segment and after its header.

use std::path::PathBuf;

use crate::record::{self, Decoded, ALIGN, HEADER_LEN};
use crate::{read_log, Segment};

/// Most segments one input is split into.
pub const MAX_SEGMENTS: usize = 8;

/// Splits an input into segments: a count byte (`1 + b % MAX_SEGMENTS`), the lengths of all but
/// the last segment as little-endian `u32`s (cut to what is left), then the segments' bytes.
pub fn split(data: &[u8]) -> Vec<&[u8]> {
    let Some((&b, mut rest)) = data.split_first() else {
        return vec![data];
    };
    let count = 1 + usize::from(b) % MAX_SEGMENTS;
    let mut lens = Vec::new();
    for _ in 1..count {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            break;
        };
        lens.push(u32::from_le_bytes(*len) as usize);
        rest = tail;
    }
    let mut segments = Vec::new();
    for len in lens {
        let (seg, tail) = rest.split_at(len.min(rest.len()));
        segments.push(seg);
        rest = tail;
    }
    segments.push(rest);
    segments
}

/// The inverse of [`split`], for building seeds from real segments (at most [`MAX_SEGMENTS`]).
pub fn join(segments: &[&[u8]]) -> Vec<u8> {
    assert!((1..=MAX_SEGMENTS).contains(&segments.len()));
    let mut v = vec![(segments.len() - 1) as u8];
    for s in &segments[..segments.len() - 1] {
        v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    }
    for s in segments {
        v.extend_from_slice(s);
    }
    v
}

/// The fuzz entry.
pub fn fuzz_wal(data: &[u8]) {
    // A directory entry's name: accepted only in the one form the log writes.
    if let Some(seg) = std::str::from_utf8(data).ok().and_then(Segment::parse) {
        assert_eq!(seg.name().as_bytes(), data);
    }

    // One record on its own.
    if let Decoded::Record(f) = record::decode(data) {
        assert!(f.len <= data.len() && f.len % ALIGN == 0);
        assert!(f.payload.len() <= f.len - HEADER_LEN);
    }
    if let Some(off) = record::next_valid_record(data, 0) {
        assert!(off % ALIGN == 0 && off > 0);
        assert!(matches!(record::decode(&data[off..]), Decoded::Record(_)));
    }

    // The whole input as a log.
    let segments = split(data);
    let read = read_log(
        segments
            .iter()
            .enumerate()
            .map(|(i, s)| Ok((PathBuf::from(format!("segment-{i}")), s.to_vec()))),
    );
    let Ok(log) = read else {
        return;
    };
    let tail = segments.last().expect("split gives at least one segment");
    assert_eq!(log.file_len, tail.len() as u64);
    assert!(log.end.header_end <= log.end.end && log.end.end <= tail.len());
    assert_eq!(
        log.end.torn,
        tail[log.end.end..].iter().any(|&b| b != 0),
        "a torn tail is exactly non-zero bytes after the last record"
    );
    let snap = log.snapshot.map(|s| s.index);
    for pair in log.entries.windows(2) {
        assert_eq!(pair[0].index.checked_add(1), Some(pair[1].index));
    }
    if let (Some(first), Some(s)) = (log.entries.first(), snap) {
        assert_eq!(
            Some(first.index),
            s.checked_add(1),
            "entries follow the snapshot"
        );
    }
    if let Some(last) = log.entries.last() {
        assert_eq!(log.last_live, Some(last.index));
    }
}
