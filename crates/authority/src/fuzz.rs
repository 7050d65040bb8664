//! The entry of the `authority` fuzz target (`fuzz/`, `docs/fuzzing.md`), also run for a bounded
//! number of iterations by this crate's tests: a client connection's first bytes through the
//! `:authority` filter, which sits in front of `h2` on every client connection.
//!
//! Besides never panicking and never buffering more than one header block:
//! * the output does not depend on how the input is split into reads;
//! * while the filter has not rewritten anything, it forwards the input byte for byte;
//! * `h2` never sees an invalid `:authority` in a header block the filter wrote itself: the output
//!   is decoded as `h2` would (one HPACK decoder from the start), and every block whose bytes are
//!   not copied from the input carries only valid authorities. Blocks copied verbatim are `h2`'s
//!   to judge (it resets a stream with an invalid one).

use bytes::BytesMut;

use super::{
    valid_authority, Filter, CONTINUATION, END_HEADERS, FRAME_HEADER_LEN, HEADERS, MAX_BLOCK,
    MAX_HEADER_LIST, MAX_PENDING_OUT, PADDED, PREFACE, PRIORITY,
};

/// Feeds `input` in reads of the sizes `sizes` yields, draining the output after every call as
/// the connection does, and checks that the output waiting at any time stays bounded.
fn filter(input: &[u8], mut sizes: impl FnMut() -> usize) -> (Vec<u8>, Filter) {
    let mut f = Filter::default();
    let (mut inb, mut out) = (BytesMut::new(), BytesMut::new());
    let mut all = Vec::new();
    let mut rest = input;
    loop {
        let n = sizes().clamp(1, rest.len().max(1)).min(rest.len());
        inb.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            let before = inb.len();
            f.feed(&mut inb, &mut out);
            assert!(
                out.len() <= MAX_PENDING_OUT + 2 * (MAX_HEADER_LIST + MAX_BLOCK) + before,
                "{} bytes of output from {before} bytes of input",
                out.len()
            );
            let progressed = inb.len() != before || !out.is_empty();
            all.extend_from_slice(&out);
            out.clear();
            if !progressed {
                break;
            }
        }
        if rest.is_empty() {
            break;
        }
    }
    (all, f)
}

/// The header blocks of an HTTP/2 byte stream (after the preface), each with the bytes of its
/// frames, as far as the frames are well formed.
fn header_blocks(bytes: &[u8]) -> Vec<(Vec<u8>, &[u8])> {
    let mut blocks = Vec::new();
    let Some(mut rest) = bytes.strip_prefix(&PREFACE[..]) else {
        return blocks;
    };
    let mut block = Vec::new();
    let mut start: Option<&[u8]> = None;
    while rest.len() >= FRAME_HEADER_LEN {
        let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        let (kind, flags) = (rest[3], rest[4]);
        let Some(payload) = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
            break;
        };
        let frame_start = rest;
        rest = &rest[FRAME_HEADER_LEN + len..];
        let mut body = payload;
        match kind {
            HEADERS => {
                if start.is_some() {
                    break;
                }
                start = Some(frame_start);
                let mut pad = 0;
                if flags & PADDED != 0 {
                    let Some((&p, b)) = body.split_first() else {
                        break;
                    };
                    (pad, body) = (usize::from(p), b);
                }
                if flags & PRIORITY != 0 {
                    let Some(b) = body.get(5..) else { break };
                    body = b;
                }
                let Some(b) = body.get(..body.len().saturating_sub(pad)) else {
                    break;
                };
                if pad > body.len() {
                    break;
                }
                body = b;
            }
            CONTINUATION if start.is_some() => {}
            CONTINUATION => break,
            _ if start.is_some() => break,
            _ => continue,
        }
        block.extend_from_slice(body);
        if flags & END_HEADERS != 0 {
            let from = start.take().expect("set by the HEADERS frame");
            let frames = &from[..from.len() - rest.len()];
            blocks.push((std::mem::take(&mut block), frames));
        }
    }
    blocks
}

/// The fuzz entry: the first byte picks how the input is split into reads and whether the
/// connection preface is put in front of the rest.
pub fn fuzz_authority(data: &[u8]) {
    let Some((&b, rest)) = data.split_first() else {
        return;
    };
    let input = if b & 1 == 0 {
        [&PREFACE[..], rest].concat()
    } else {
        rest.to_vec()
    };
    let (whole, f) = filter(&input, || usize::MAX);
    let mut x = u32::from(b) | 0x100;
    let (split, _) = filter(&input, || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        1 + (x % 23) as usize
    });
    assert_eq!(whole, split, "the output depends on how the input was read");
    if !f.rewrite {
        assert!(
            input.starts_with(&whole),
            "changed bytes without rewriting a block"
        );
    }
    let mut h2 = loona_hpack::Decoder::new();
    for (block, frames) in header_blocks(&whole) {
        let mut headers = Vec::new();
        if h2
            .decode_with_cb(&block, |n, v| {
                headers.push((n.into_owned(), v.into_owned()))
            })
            .is_err()
        {
            break;
        }
        let copied = input.windows(frames.len()).any(|w| w == frames);
        for (n, v) in &headers {
            if n.as_slice() == b":authority" && !copied {
                assert!(
                    valid_authority(v),
                    "the filter wrote the invalid authority {:?}",
                    String::from_utf8_lossy(v)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{encode_literal, write_frame_header, END_STREAM, PREFACE_LEN};
    use super::*;

    fn frames(stream: u32, flags: u8, block: &[u8], split: usize) -> Vec<u8> {
        let mut b = BytesMut::new();
        let (first, rest) = block.split_at(split.min(block.len()));
        let end = if rest.is_empty() { END_HEADERS } else { 0 };
        write_frame_header(&mut b, first.len(), HEADERS, flags | end, stream);
        b.extend_from_slice(first);
        if !rest.is_empty() {
            write_frame_header(&mut b, rest.len(), CONTINUATION, END_HEADERS, stream);
            b.extend_from_slice(rest);
        }
        b.to_vec()
    }

    /// Connections as etcd's clients open them: valid authorities, `http://` ones, junk, in
    /// literal and indexed (dynamic table) encodings, split over CONTINUATION frames, with a DATA
    /// frame between requests.
    fn seeds() -> Vec<Vec<u8>> {
        let authorities = [
            "127.0.0.1:2379",
            "http://127.0.0.1:2379",
            "#initially=[http://a:1;http://b:2]",
            "unix:///tmp/sock",
            "",
        ];
        let mut seeds = Vec::new();
        for (i, first) in authorities.iter().enumerate() {
            let second = authorities[(i + 1) % authorities.len()];
            let mut enc = loona_hpack::Encoder::new();
            let mut conn = vec![0u8];
            conn.extend_from_slice(PREFACE);
            for (s, a) in [(1u32, *first), (3, second), (5, *first)] {
                let headers: [(&[u8], &[u8]); 3] = [
                    (b":method", b"POST"),
                    (b":authority", a.as_bytes()),
                    (b":path", b"/etcdserverpb.KV/Range"),
                ];
                let block = if s == 3 {
                    let mut b = Vec::new();
                    for (n, v) in headers {
                        encode_literal(&mut b, n, v);
                    }
                    b
                } else {
                    enc.encode(headers)
                };
                conn.extend(frames(s, 0, &block, 7 * s as usize));
                let mut data = BytesMut::new();
                write_frame_header(&mut data, 3, 0, END_STREAM, s);
                data.extend_from_slice(&[0, 0, 0]);
                conn.extend_from_slice(&data);
            }
            // The same bytes without the preface in the input (the entry adds it).
            let mut bare = vec![0u8];
            bare.extend_from_slice(&conn[1 + PREFACE_LEN..]);
            seeds.push(bare);
            conn[0] = 1;
            seeds.push(conn);
        }
        seeds.push(b"\x01GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
        seeds
    }

    #[test]
    fn invalid_authorities_in_seeds_are_repaired() {
        for s in seeds() {
            fuzz_authority(&s);
        }
        let s = &seeds()[2];
        let input = [&PREFACE[..], &s[1..]].concat();
        let (out, f) = filter(&input, || 5);
        assert!(f.rewrite);
        let mut d = loona_hpack::Decoder::new();
        let blocks = header_blocks(&out);
        assert_eq!(blocks.len(), 3);
        let authorities: Vec<Vec<u8>> = blocks
            .iter()
            .map(|(b, _)| {
                d.decode(b)
                    .unwrap()
                    .into_iter()
                    .find(|(n, _)| n.as_slice() == b":authority")
                    .map(|(_, v)| v)
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(
            authorities,
            [
                b"127.0.0.1:2379".to_vec(),
                vec![],
                b"127.0.0.1:2379".to_vec()
            ]
        );
    }

    /// An authority to repair, one literal of almost 4 KiB added to the dynamic table, then
    /// references to it: each byte decodes into 4 KiB (a block of `MAX_BLOCK` such bytes into
    /// 4 GiB). The filter must not expand it: it leaves the block to h2, whose header list limit
    /// refuses it.
    #[test]
    fn an_hpack_bomb_is_not_expanded() {
        let mut block = Vec::new();
        encode_literal(&mut block, b":authority", b"http://h:1");
        block.push(0x40); // literal with incremental indexing, new name
        block.push(1);
        block.push(b'x');
        block.extend_from_slice(&[0x7f, 0x81, 0x1e]); // value length 127 + 3841 = 3968
        block.extend(std::iter::repeat_n(b'v', 3968));
        block.extend(std::iter::repeat_n(0xbe, 100)); // index 62, again and again: 400 KB
        let mut input = PREFACE.to_vec();
        let mut frame = BytesMut::new();
        write_frame_header(&mut frame, block.len(), HEADERS, END_HEADERS, 1);
        input.extend_from_slice(&frame);
        input.extend_from_slice(&block);
        let (out, _) = filter(&input, || 1024);
        assert_eq!(out.len(), input.len());
        assert!(out == input);
    }

    /// A CONTINUATION of another stream ends the inspection; the frames go on in their order
    /// (the collected HEADERS frame used to follow the CONTINUATION that broke it off).
    #[test]
    fn a_foreign_continuation_keeps_the_frame_order() {
        let mut block = Vec::new();
        encode_literal(&mut block, b":authority", b"http://h:1");
        let mut input = PREFACE.to_vec();
        let mut b = BytesMut::new();
        write_frame_header(&mut b, 4, HEADERS, 0, 1);
        b.extend_from_slice(&block[..4]);
        write_frame_header(&mut b, block.len() - 4, CONTINUATION, END_HEADERS, 3);
        b.extend_from_slice(&block[4..]);
        input.extend_from_slice(&b);
        assert_eq!(filter(&input, || 3).0, input);
    }

    #[test]
    fn bounded_fuzz_of_the_authority_filter() {
        fuzzcorpus::run(0x6175_7468, &seeds(), 3000, fuzz_authority);
    }
}
