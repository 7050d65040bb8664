//! Bytes fields in JSON: standard base64 with padding, decoded exactly as Go's
//! `base64.StdEncoding.Decode` decodes them (what `encoding/json` does for a `[]byte`).
//!
//! etcd's gateway rejects what Go's decoder rejects (URL-safe letters, missing padding) and accepts
//! what it accepts (`\r` and `\n` anywhere, non-zero bits after the last full byte), and reports the
//! offset Go reports (`illegal base64 data at input byte 4`). A general-purpose base64 crate
//! differs on each of these points, so this small module does it Go's way.

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const PAD: u8 = b'=';

/// Appends the standard, padded base64 of `data`.
pub(crate) fn encode(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(data.len().div_ceil(3) * 4);
    let mut chunks = data.chunks_exact(3);
    for c in &mut chunks {
        let v = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
        out.extend_from_slice(&[
            STD[(v >> 18) as usize & 63],
            STD[(v >> 12) as usize & 63],
            STD[(v >> 6) as usize & 63],
            STD[v as usize & 63],
        ]);
    }
    match *chunks.remainder() {
        [a] => {
            let v = u32::from(a) << 16;
            out.extend_from_slice(&[
                STD[(v >> 18) as usize & 63],
                STD[(v >> 12) as usize & 63],
                PAD,
                PAD,
            ]);
        }
        [a, b] => {
            let v = (u32::from(a) << 16) | (u32::from(b) << 8);
            out.extend_from_slice(&[
                STD[(v >> 18) as usize & 63],
                STD[(v >> 12) as usize & 63],
                STD[(v >> 6) as usize & 63],
                PAD,
            ]);
        }
        _ => {}
    }
}

fn value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

fn is_newline(c: u8) -> bool {
    c == b'\r' || c == b'\n'
}

/// Decodes `src`; the error is Go's `CorruptInputError` offset.
pub(crate) fn decode(src: &[u8]) -> Result<Vec<u8>, usize> {
    let mut out = Vec::with_capacity(src.len() / 4 * 3 + 3);
    let mut si = 0;
    loop {
        // One quantum of up to four symbols; newlines are skipped wherever they are.
        let mut buf = [0u32; 4];
        let mut len = 4;
        let mut j = 0;
        let mut trailing_error = None;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                // The input ended inside a quantum: padding was required.
                return Err(si - j);
            }
            let c = src[si];
            si += 1;
            if let Some(v) = value(c) {
                buf[j] = v;
                j += 1;
                continue;
            }
            if is_newline(c) {
                continue;
            }
            if c != PAD {
                return Err(si - 1);
            }
            // Padding: only after two or three symbols, and `==` after two.
            match j {
                0 | 1 => return Err(si - 1),
                2 => {
                    while si < src.len() && is_newline(src[si]) {
                        si += 1;
                    }
                    if si == src.len() {
                        return Err(src.len());
                    }
                    if src[si] != PAD {
                        return Err(si - 1);
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && is_newline(src[si]) {
                si += 1;
            }
            if si < src.len() {
                // Data after the padding.
                trailing_error = Some(si);
            }
            len = j;
            break;
        }
        let v = (buf[0] << 18) | (buf[1] << 12) | (buf[2] << 6) | buf[3];
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        out.extend_from_slice(&bytes[..len - 1]);
        if let Some(at) = trailing_error {
            return Err(at);
        }
        if len < 4 {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(data: &[u8]) -> String {
        let mut out = Vec::new();
        encode(&mut out, data);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encodes_standard_padded() {
        assert_eq!(enc(b""), "");
        assert_eq!(enc(b"f"), "Zg==");
        assert_eq!(enc(b"fo"), "Zm8=");
        assert_eq!(enc(b"foo"), "Zm9v");
        assert_eq!(enc(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn decodes_what_go_accepts() {
        assert_eq!(decode(b"Zm9v"), Ok(b"foo".to_vec()));
        assert_eq!(decode(b"Zg=="), Ok(b"f".to_vec()));
        assert_eq!(decode(b"Zm8="), Ok(b"fo".to_vec()));
        assert_eq!(decode(b""), Ok(vec![]));
        assert_eq!(decode(b"Zm\r\n9v\n"), Ok(b"foo".to_vec()));
        assert_eq!(decode(b"Zm=\n="), Ok(b"f".to_vec()));
        // Go's StdEncoding is not strict: bits after the last byte are ignored.
        assert_eq!(decode(b"Zh=="), Ok(b"f".to_vec()));
    }

    #[test]
    fn rejects_at_go_offsets() {
        // Offsets as etcd's gateway reports them.
        assert_eq!(decode(b"Zm9v!"), Err(4));
        assert_eq!(decode(b"Zm9vYg"), Err(4));
        assert_eq!(decode(b"Zm9v-_8="), Err(4));
        assert_eq!(decode(b"Z"), Err(0));
        assert_eq!(decode(b"Zg="), Err(3));
        assert_eq!(decode(b"Zg=x"), Err(2));
        assert_eq!(decode(b"=abc"), Err(0));
        assert_eq!(decode(b"Zg==Zg=="), Err(4));
        assert_eq!(decode(b"Zm8=x"), Err(4));
    }
}
