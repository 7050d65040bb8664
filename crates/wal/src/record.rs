//! Record framing. The byte layout is specified in `docs/wal.md`; keep the two in step.

use std::fmt;

/// crc(4) + prev_crc(4) + payload length(4) + type(1) + reserved(3).
pub(crate) const HEADER_LEN: usize = 16;
/// Frames are padded to this so every header starts 8-aligned; the torn-tail scan relies on
/// that to probe only plausible record starts.
pub(crate) const ALIGN: usize = 8;
/// index(8) + term(8) in front of an entry's data.
pub(crate) const ENTRY_HEAD_LEN: usize = 16;
pub(crate) const SNAPSHOT_LEN: usize = 16;
pub(crate) const CRC_PAYLOAD_LEN: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RecordType {
    Metadata = 1,
    Entry = 2,
    HardState = 3,
    Crc = 4,
    Snapshot = 5,
}

impl RecordType {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Metadata,
            2 => Self::Entry,
            3 => Self::HardState,
            4 => Self::Crc,
            5 => Self::Snapshot,
            _ => return None,
        })
    }

    fn payload_len_ok(self, len: usize) -> bool {
        match self {
            Self::Metadata | Self::HardState => true,
            Self::Entry => len >= ENTRY_HEAD_LEN,
            Self::Crc => len == CRC_PAYLOAD_LEN,
            Self::Snapshot => len == SNAPSHOT_LEN,
        }
    }
}

/// Size on disk of a record with `payload_len` payload bytes, or `None` if the length does not
/// fit the 32-bit length field.
pub(crate) fn frame_len(payload_len: usize) -> Option<usize> {
    if u32::try_from(payload_len).is_err() {
        return None;
    }
    Some(HEADER_LEN + payload_len.checked_next_multiple_of(ALIGN)?)
}

/// Appends one record to `buf`, chained to `prev`, and returns its CRC (the next record's
/// `prev`). The caller has already checked the payload length with [`frame_len`].
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    prev: u32,
    ty: RecordType,
    head: &[u8],
    body: &[u8],
) -> u32 {
    let start = buf.len();
    let payload_len = head.len() + body.len();
    debug_assert!(u32::try_from(payload_len).is_ok());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&prev.to_le_bytes());
    buf.extend_from_slice(&(payload_len as u32).to_le_bytes());
    buf.extend_from_slice(&[ty as u8, 0, 0, 0]);
    buf.extend_from_slice(head);
    buf.extend_from_slice(body);
    let end = start + HEADER_LEN + payload_len.next_multiple_of(ALIGN);
    buf.resize(end, 0);
    let crc = crc32c::crc32c_append(prev, &buf[start + 4..end]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    crc
}

pub(crate) fn entry_head(index: u64, term: u64) -> [u8; ENTRY_HEAD_LEN] {
    let mut h = [0; ENTRY_HEAD_LEN];
    h[..8].copy_from_slice(&index.to_le_bytes());
    h[8..].copy_from_slice(&term.to_le_bytes());
    h
}

/// A record that is consistent with itself. Whether it continues the log's CRC chain is the
/// reader's business: `prev` is kept so that a record can be checked without the chain.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame<'a> {
    pub ty: RecordType,
    pub prev: u32,
    pub crc: u32,
    pub payload: &'a [u8],
    /// Bytes the frame occupies, padding included.
    pub len: usize,
}

#[derive(Debug)]
pub(crate) enum Decoded<'a> {
    Record(Frame<'a>),
    /// An all-zero header: never written, the normal end of a preallocated segment.
    Zero,
    Invalid(Defect),
}

/// Why bytes are not a record. Kept allocation-free because the torn-tail scan decodes at every
/// aligned offset of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Defect {
    TruncatedHeader { have: usize },
    UnknownType(u8),
    ReservedNonZero,
    PastEnd { payload_len: u32, have: usize },
    BadPayloadLen { ty: RecordType, payload_len: u32 },
    CrcMismatch { stored: u32, computed: u32 },
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TruncatedHeader { have } => {
                write!(f, "record header cut short ({have} of {HEADER_LEN} bytes)")
            }
            Self::UnknownType(t) => write!(f, "unknown record type {t}"),
            Self::ReservedNonZero => write!(f, "reserved header bytes are not zero"),
            Self::PastEnd { payload_len, have } => write!(
                f,
                "record of {payload_len} payload bytes runs past the end of the file ({have} bytes left)"
            ),
            Self::BadPayloadLen { ty, payload_len } => {
                write!(f, "{ty:?} record with impossible payload length {payload_len}")
            }
            Self::CrcMismatch { stored, computed } => {
                write!(f, "crc mismatch (stored {stored:08x}, computed {computed:08x})")
            }
        }
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decodes the record starting at `buf[0]`. Never reads past `buf` and never allocates, whatever
/// the bytes claim.
pub(crate) fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < HEADER_LEN {
        return if buf.iter().all(|&b| b == 0) {
            Decoded::Zero
        } else {
            Decoded::Invalid(Defect::TruncatedHeader { have: buf.len() })
        };
    }
    let header = &buf[..HEADER_LEN];
    if header.iter().all(|&b| b == 0) {
        return Decoded::Zero;
    }
    let Some(ty) = RecordType::from_u8(header[12]) else {
        return Decoded::Invalid(Defect::UnknownType(header[12]));
    };
    if header[13..16] != [0, 0, 0] {
        return Decoded::Invalid(Defect::ReservedNonZero);
    }
    let payload_len = le_u32(&header[8..12]);
    // u64 so that a hostile length cannot overflow on any target.
    let len = HEADER_LEN as u64 + (u64::from(payload_len)).next_multiple_of(ALIGN as u64);
    if len > buf.len() as u64 {
        return Decoded::Invalid(Defect::PastEnd {
            payload_len,
            have: buf.len() - HEADER_LEN,
        });
    }
    let len = len as usize;
    let payload = &buf[HEADER_LEN..HEADER_LEN + payload_len as usize];
    if !ty.payload_len_ok(payload.len()) {
        return Decoded::Invalid(Defect::BadPayloadLen { ty, payload_len });
    }
    let stored = le_u32(&header[0..4]);
    let prev = le_u32(&header[4..8]);
    let computed = crc32c::crc32c_append(prev, &buf[4..len]);
    if stored != computed {
        return Decoded::Invalid(Defect::CrcMismatch { stored, computed });
    }
    Decoded::Record(Frame {
        ty,
        prev,
        crc: stored,
        payload,
        len,
    })
}

/// The first offset after `from` (exclusive, 8-aligned) holding a self-consistent record.
/// Used to tell a torn tail (nothing valid follows) from damage in the middle of the log.
pub(crate) fn next_valid_record(buf: &[u8], from: usize) -> Option<usize> {
    let mut off = from.checked_add(ALIGN)? / ALIGN * ALIGN;
    while off + HEADER_LEN <= buf.len() {
        // Cheap pre-filter: almost every offset in garbage or zeros fails on the type byte.
        let t = buf[off + 12];
        if (1..=5).contains(&t) && matches!(decode(&buf[off..]), Decoded::Record(_)) {
            return Some(off);
        }
        off += ALIGN;
    }
    None
}
