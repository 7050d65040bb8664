//! Reading a log back: validation of each segment, the CRC chain across segments, the torn-tail
//! rule, and rebuilding the entry list with overwrite semantics.

use std::path::{Path, PathBuf};

use crate::record::{self, Decoded, Frame, RecordType, CRC_PAYLOAD_LEN, ENTRY_HEAD_LEN};
use crate::{corrupt, Entry, Result, SnapshotMarker};

/// Where a segment's valid records end.
pub(crate) struct SegmentEnd {
    /// Offset just past the last good record: where appending resumes.
    pub end: usize,
    /// Non-zero bytes follow `end` and must be wiped (a torn write).
    pub torn: bool,
    /// Offset just past the segment's crc and metadata records.
    pub header_end: usize,
}

/// An entry whose index does not directly follow the previous live entry. Legal only when a
/// snapshot marker covers the missing indexes, which is only known once everything is read.
struct Gap {
    index: u64,
    after: Option<u64>,
    path: PathBuf,
    offset: usize,
}

#[derive(Default)]
pub(crate) struct Replay {
    pub metadata: Option<Vec<u8>>,
    pub hard_state: Option<Vec<u8>>,
    pub snapshot: Option<SnapshotMarker>,
    /// Live entries in index order, including those a snapshot covers (dropped in `finish`,
    /// because a later marker could in principle be lower).
    pub entries: Vec<Entry>,
    gaps: Vec<Gap>,
    /// CRC of the last good record; `None` until the first record seeds the chain.
    pub crc: Option<u32>,
}

impl Replay {
    /// Validates and applies one segment. `last` selects the torn-tail rule: only the newest
    /// segment may end in a damaged record, because only its end can have been in flight.
    pub fn segment(&mut self, path: &Path, data: &[u8], last: bool) -> Result<SegmentEnd> {
        let mut off = 0;
        let mut count = 0usize;
        let mut header_end = 0;
        let stop = loop {
            if off == data.len() {
                break None;
            }
            let frame = match record::decode(&data[off..]) {
                Decoded::Record(f) => f,
                Decoded::Zero => break Some((off, None)),
                Decoded::Invalid(d) => break Some((off, Some(d))),
            };
            // A complete, self-consistent record that does not continue the chain was never
            // appended after its predecessor (a lost or foreign segment, stale bytes): no torn
            // write produces that, so it is fatal even at the tail.
            if let Some(c) = self.crc {
                if frame.prev != c {
                    return Err(corrupt(
                        path,
                        off,
                        format!(
                            "crc chain broken: record continues {:08x} but the log is at {c:08x}",
                            frame.prev
                        ),
                    ));
                }
            }
            match (count, frame.ty) {
                (0, RecordType::Crc) => {
                    let carried = u32::from_le_bytes(
                        frame.payload[..CRC_PAYLOAD_LEN]
                            .try_into()
                            .expect("length checked"),
                    );
                    if carried != frame.prev {
                        return Err(corrupt(
                            path,
                            off,
                            "crc record disagrees with its own chain",
                        ));
                    }
                }
                (0, ty) => {
                    return Err(corrupt(
                        path,
                        off,
                        format!("segment starts with a {ty:?} record instead of a crc record"),
                    ))
                }
                (1, RecordType::Metadata) => header_end = off + frame.len,
                (1, ty) => {
                    return Err(corrupt(
                        path,
                        off,
                        format!("expected the metadata record, found {ty:?}"),
                    ))
                }
                (_, ty @ (RecordType::Crc | RecordType::Metadata)) => {
                    return Err(corrupt(
                        path,
                        off,
                        format!("{ty:?} record in the middle of a segment"),
                    ))
                }
                _ => {}
            }
            self.apply(&frame, path, off)?;
            self.crc = Some(frame.crc);
            off += frame.len;
            count += 1;
        };

        let Some((at, defect)) = stop else {
            if count < 2 {
                return Err(corrupt(path, off, "segment ends inside its header records"));
            }
            return Ok(SegmentEnd {
                end: off,
                torn: false,
                header_end,
            });
        };
        let what = match defect {
            Some(d) => d.to_string(),
            None => "zeroed bytes".to_string(),
        };
        if !last {
            // Sealed segments are truncated to their last record when the next one is cut, so
            // anything but a clean end of file is damage.
            return Err(corrupt(path, at, format!("{what} inside a sealed segment")));
        }
        if count < 2 {
            // Segment headers are fsynced before the segment is renamed into place, so they
            // cannot be torn.
            return Err(corrupt(path, at, format!("{what} in the segment header")));
        }
        if let Some(next) = record::next_valid_record(data, at) {
            return Err(corrupt(
                path,
                at,
                format!("{what}, followed by a valid record at offset {next}"),
            ));
        }
        Ok(SegmentEnd {
            end: at,
            torn: data[at..].iter().any(|&b| b != 0),
            header_end,
        })
    }

    fn apply(&mut self, frame: &Frame<'_>, path: &Path, off: usize) -> Result<()> {
        let p = frame.payload;
        match frame.ty {
            RecordType::Crc => {}
            RecordType::Metadata => match &self.metadata {
                None => self.metadata = Some(p.to_vec()),
                Some(m) if m.as_slice() == p => {}
                Some(_) => {
                    return Err(corrupt(
                        path,
                        off,
                        "metadata differs from an earlier segment's",
                    ))
                }
            },
            RecordType::HardState => self.hard_state = Some(p.to_vec()),
            RecordType::Snapshot => {
                self.snapshot = Some(SnapshotMarker {
                    index: record::le_u64(&p[..8]),
                    term: record::le_u64(&p[8..16]),
                })
            }
            RecordType::Entry => {
                let index = record::le_u64(&p[..8]);
                let term = record::le_u64(&p[8..16]);
                // Overwrite semantics: entry `index` supersedes every earlier entry >= index.
                let keep = self.entries.partition_point(|e| e.index < index);
                self.entries.truncate(keep);
                self.gaps.retain(|g| g.index < index);
                let after = self.entries.last().map(|e| e.index);
                if after.and_then(|a| a.checked_add(1)) != Some(index) {
                    self.gaps.push(Gap {
                        index,
                        after,
                        path: path.to_path_buf(),
                        offset: off,
                    });
                }
                self.entries.push(Entry {
                    index,
                    term,
                    data: p[ENTRY_HEAD_LEN..].to_vec(),
                });
            }
        }
        Ok(())
    }

    /// Drops entries covered by the snapshot and checks that what remains is contiguous.
    /// Returns the entries and the index of the last live entry (before dropping).
    pub fn finish_entries(&mut self) -> Result<(Vec<Entry>, Option<u64>)> {
        let last = self.entries.last().map(|e| e.index);
        let snap = self.snapshot.map(|s| s.index);
        for g in &self.gaps {
            let covered = match snap {
                Some(s) => g.index <= s.saturating_add(1),
                // Without a snapshot the log may start anywhere, but may not have holes.
                None => g.after.is_none(),
            };
            if !covered {
                let reason = match g.after {
                    Some(a) => format!(
                        "entry {} follows entry {a} and no snapshot covers the gap",
                        g.index
                    ),
                    None => format!(
                        "first entry {} does not follow snapshot {}",
                        g.index,
                        snap.unwrap_or(0)
                    ),
                };
                return Err(corrupt(&g.path, g.offset, reason));
            }
        }
        let mut entries = std::mem::take(&mut self.entries);
        if let Some(s) = snap {
            let covered = entries.partition_point(|e| e.index <= s);
            entries.drain(..covered);
        }
        Ok((entries, last))
    }
}
