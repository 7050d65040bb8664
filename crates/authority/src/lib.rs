//! Accepts the `:authority` values that etcd's own clients send but the `h2` crate rejects.
//!
//! etcdctl 3.4 dials some endpoints as `passthrough:///http://host:port`, so grpc-go sends
//! `:authority: http://host:port`; clientv3 3.5.0 sends `#initially=[...]`. etcd (Go's HTTP/2 server)
//! accepts both; `h2` resets such a stream with PROTOCOL_ERROR. So every inbound client connection passes
//! through this filter before `h2` sees it. It walks the HTTP/2 frames, decodes each header block with HPACK,
//! and forwards the original bytes untouched while the authority is valid. From the first invalid authority
//! on, the connection's header blocks are re-encoded as literals without indexing, with the authority fixed
//! (`http://host:port` becomes `host:port`; anything else is dropped, as an absent authority is allowed).
//! Re-encoding without indexing keeps `h2`'s HPACK table as it was, so later blocks need no further care.
//!
//! Clients choose the authority per connection (grpc-go, tonic and etcd's clients all do), so the first
//! header block that carries a valid one ends the inspection: the filter steps aside and forwards the rest
//! of the connection verbatim. The tradeoff: a client that sent a valid authority and later an invalid one
//! on the same connection gets `h2`'s reset, as it would without the filter; in exchange a healthy
//! connection costs one HPACK decode in all instead of one per request (measured at over a tenth of the
//! server's CPU for small puts). Anything the filter does not understand (bad HPACK, oversized blocks,
//! frames out of order) also makes it step aside, leaving the verdict to `h2`.
//!
//! Bounds, because the bytes are a stranger's: one header block of at most `MAX_BLOCK` bytes is
//! buffered, it is decoded into at most `MAX_HEADER_LIST` bytes of headers (HPACK's indexed fields
//! make a few input bytes stand for kilobytes), and no further frame is taken while
//! `MAX_PENDING_OUT` bytes of output wait for `h2`. The fuzz target `authority` checks them
//! (`docs/fuzzing.md`).
//!
//! # Invariants
//! * Knows nothing of gRPC services, etcd or the member: it sees bytes of HTTP/2 frames only.
//! * Never holds more than one header block and `MAX_PENDING_OUT` bytes of output per connection.

#![forbid(unsafe_code)]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[doc(hidden)]
/// The entry of the fuzz target (`fuzz/`, `docs/fuzzing.md`).
#[doc(hidden)]
pub mod fuzz;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const PREFACE_LEN: usize = PREFACE.len();
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest header block the filter buffers; beyond it, it steps aside.
const MAX_BLOCK: usize = 1 << 20;
/// The largest header list (RFC 7541 sizes: name, value and 32 per field) the filter decodes a
/// block into; beyond it, it steps aside. HPACK lets one byte name a dynamic-table entry of up to
/// 4 KiB, so without this bound a block of `MAX_BLOCK` bytes would decode into gigabytes. etcd's
/// clients send a few hundred bytes.
const MAX_HEADER_LIST: usize = 256 << 10;
/// `feed` takes no further frame once this much output waits to be read: a rewritten block can be
/// much larger than the bytes that encoded it, so the output is bounded separately from the input.
const MAX_PENDING_OUT: usize = 1 << 20;
/// Frame size used for re-encoded blocks: the protocol minimum, valid whatever the server advertised.
const OUT_FRAME: usize = 16384;

enum State {
    Preface(usize),
    FrameHeader,
    /// Forwarding this many more payload bytes of a frame that needs no inspection.
    Forward(usize),
    /// Collecting a HEADERS frame's payload (with its 9-byte header already in `raw`).
    Headers {
        payload_len: usize,
    },
    /// Stepped aside: everything is forwarded verbatim.
    Verbatim,
}

/// A header block being collected across HEADERS and CONTINUATION frames.
struct Pending {
    raw: Vec<u8>,
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// The frame walker, fed bytes as they arrive. Pure: no I/O.
pub struct Filter {
    state: State,
    pending: Option<Pending>,
    decoder: loona_hpack::Decoder<'static>,
    rewrite: bool,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            state: State::Preface(PREFACE_LEN),
            pending: None,
            decoder: loona_hpack::Decoder::new(),
            rewrite: false,
        }
    }
}

impl Filter {
    /// Consumes what it can of `input` and appends the bytes to forward to `out`.
    /// Stops early, leaving input unconsumed, when `out` holds `MAX_PENDING_OUT` bytes: call it
    /// again once `out` was drained.
    pub fn feed(&mut self, input: &mut BytesMut, out: &mut BytesMut) {
        loop {
            if out.len() >= MAX_PENDING_OUT && !matches!(self.state, State::Verbatim) {
                return;
            }
            match self.state {
                State::Verbatim => {
                    out.extend_from_slice(input);
                    input.clear();
                    return;
                }
                State::Preface(n) => {
                    // Not HTTP/2 (e.g. an HTTP/1.1 request for /health): nothing to fix here.
                    let seen = PREFACE_LEN - n;
                    let k = n.min(input.len());
                    if input[..k] != PREFACE[seen..seen + k] {
                        self.state = State::Verbatim;
                        continue;
                    }
                    out.extend_from_slice(&input[..k]);
                    input.advance(k);
                    self.state = if k == n {
                        State::FrameHeader
                    } else {
                        State::Preface(n - k)
                    };
                    if k < n {
                        return;
                    }
                }
                State::Forward(n) => {
                    let k = n.min(input.len());
                    out.extend_from_slice(&input[..k]);
                    input.advance(k);
                    self.state = if k == n {
                        State::FrameHeader
                    } else {
                        State::Forward(n - k)
                    };
                    if k < n {
                        return;
                    }
                }
                State::FrameHeader => {
                    if input.len() < FRAME_HEADER_LEN {
                        return;
                    }
                    let len = (usize::from(input[0]) << 16)
                        | (usize::from(input[1]) << 8)
                        | usize::from(input[2]);
                    let kind = input[3];
                    let in_block = self.pending.is_some();
                    if kind != HEADERS && kind != CONTINUATION && !in_block {
                        self.state = State::Forward(FRAME_HEADER_LEN + len);
                    } else if len > MAX_BLOCK || (kind == CONTINUATION) != in_block {
                        self.step_aside(out);
                    } else {
                        self.state = State::Headers { payload_len: len };
                    }
                }
                State::Headers { payload_len } => {
                    if input.len() < FRAME_HEADER_LEN + payload_len {
                        return;
                    }
                    let frame = input.split_to(FRAME_HEADER_LEN + payload_len);
                    self.state = State::FrameHeader;
                    if !self.collect(&frame) {
                        // The block collected so far first: the bytes go on in their order.
                        self.step_aside(out);
                        out.extend_from_slice(&frame);
                        continue;
                    }
                    if self
                        .pending
                        .as_ref()
                        .is_some_and(|p| p.flags & END_HEADERS != 0)
                    {
                        let p = self.pending.take().expect("checked above");
                        self.finish(p, out);
                    }
                }
            }
        }
    }

    /// Adds a HEADERS or CONTINUATION frame to the pending block; false if it is malformed.
    fn collect(&mut self, frame: &[u8]) -> bool {
        let kind = frame[3];
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_LEN..];
        if kind == CONTINUATION {
            let Some(p) = self.pending.as_mut() else {
                return false;
            };
            if p.stream != stream || p.block.len() + payload.len() > MAX_BLOCK {
                return false;
            }
            p.raw.extend_from_slice(frame);
            p.block.extend_from_slice(payload);
            p.flags |= flags & END_HEADERS;
            return true;
        }
        let mut body = payload;
        let mut pad = 0usize;
        if flags & PADDED != 0 {
            let Some((&n, rest)) = body.split_first() else {
                return false;
            };
            pad = usize::from(n);
            body = rest;
        }
        let mut priority = None;
        if flags & PRIORITY != 0 {
            if body.len() < 5 {
                return false;
            }
            priority = Some([body[0], body[1], body[2], body[3], body[4]]);
            body = &body[5..];
        }
        if pad > body.len() {
            return false;
        }
        let block = body[..body.len() - pad].to_vec();
        self.pending = Some(Pending {
            raw: frame.to_vec(),
            stream,
            flags,
            priority,
            block,
        });
        true
    }

    fn finish(&mut self, p: Pending, out: &mut BytesMut) {
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut size = 0usize;
        let decoded = self.decoder.decode_with_cb(&p.block, |n, v| {
            size = size.saturating_add(n.len() + v.len() + 32);
            if size <= MAX_HEADER_LIST {
                headers.push((n.into_owned(), v.into_owned()));
            }
        });
        if decoded.is_err() || size > MAX_HEADER_LIST {
            out.extend_from_slice(&p.raw);
            self.step_aside(out);
            return;
        }
        let bad = headers
            .iter()
            .any(|(n, v)| n.as_slice() == b":authority" && !valid_authority(v));
        if !bad && !self.rewrite {
            out.extend_from_slice(&p.raw);
            // A client sets the authority per connection, not per request (grpc-go, tonic and
            // etcd's clients do): once a valid one went by, the rest of the connection needs no
            // inspection, and the per-request HPACK decode (a large share of a small request's
            // CPU) is saved.
            if headers.iter().any(|(n, _)| n.as_slice() == b":authority") {
                self.step_aside(out);
            }
            return;
        }
        if bad && !self.rewrite {
            tracing::debug!(
                "client sent an invalid :authority; re-encoding this connection's headers"
            );
            self.rewrite = true;
        }
        let mut block = Vec::with_capacity(p.block.len() + 64);
        for (name, value) in &headers {
            if name.as_slice() == b":authority" && !valid_authority(value) {
                match repair_authority(value) {
                    Some(fixed) => encode_literal(&mut block, name, fixed),
                    None => continue,
                }
            } else {
                encode_literal(&mut block, name, value);
            }
        }
        write_block(out, p.stream, p.flags & END_STREAM, p.priority, &block);
    }

    fn step_aside(&mut self, out: &mut BytesMut) {
        if let Some(p) = self.pending.take() {
            out.extend_from_slice(&p.raw);
        }
        self.state = State::Verbatim;
    }
}

fn valid_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

/// `scheme://host:port[/...]` → `host:port`, if that is a valid authority.
fn repair_authority(v: &[u8]) -> Option<&[u8]> {
    let s = std::str::from_utf8(v).ok()?;
    let rest = &s[s.find("://")? + 3..];
    let host = rest.split('/').next()?;
    valid_authority(host.as_bytes()).then_some(host.as_bytes())
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1); `first` carries the pattern bits above the prefix.
fn encode_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// "Literal Header Field without Indexing — New Name", no Huffman coding (RFC 7541 §6.2.2).
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_int(out, 0, 7, name.len());
    out.extend_from_slice(name);
    encode_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

fn write_frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    out.put_uint(len as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
}

fn write_block(
    out: &mut BytesMut,
    stream: u32,
    end_stream: u8,
    priority: Option<[u8; 5]>,
    block: &[u8],
) {
    let prio_len = if priority.is_some() { 5 } else { 0 };
    let first_len = block.len().min(OUT_FRAME - prio_len);
    let (first, mut rest) = block.split_at(first_len);
    let mut flags = end_stream | if rest.is_empty() { END_HEADERS } else { 0 };
    if priority.is_some() {
        flags |= PRIORITY;
    }
    write_frame_header(out, prio_len + first.len(), HEADERS, flags, stream);
    if let Some(p) = priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(OUT_FRAME));
        rest = tail;
        write_frame_header(
            out,
            chunk.len(),
            CONTINUATION,
            if rest.is_empty() { END_HEADERS } else { 0 },
            stream,
        );
        out.extend_from_slice(chunk);
    }
}

/// A client connection seen through the filter. Writes go straight to the socket.
pub struct FixAuthority<S> {
    inner: S,
    filter: Filter,
    input: BytesMut,
    output: BytesMut,
    eof: bool,
}

impl<S> FixAuthority<S> {
    pub fn new(inner: S) -> Self {
        FixAuthority {
            inner,
            filter: Filter::default(),
            input: BytesMut::new(),
            output: BytesMut::new(),
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = buf.remaining().min(this.output.len());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Frames left over when `feed` stopped at its output bound come before new reads.
            if !this.input.is_empty() {
                this.filter.feed(&mut this.input, &mut this.output);
                if !this.output.is_empty() {
                    continue;
                }
            }
            this.input.reserve(16 * 1024);
            // Reads straight into the buffer's spare capacity (no zeroing, no copy).
            let n = std::task::ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.input
            ))?;
            if n == 0 {
                this.eof = true;
                // Whatever is left unparsed (a truncated frame) goes to h2 as is.
                this.output.extend_from_slice(&this.input);
                this.input.clear();
                continue;
            }
            this.filter.feed(&mut this.input, &mut this.output);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for FixAuthority<S>
{
    type ConnectInfo = S::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_frame(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        write_frame_header(&mut b, block.len(), HEADERS, flags, stream);
        b.extend_from_slice(block);
        b.to_vec()
    }

    fn block(headers: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (n, v) in headers {
            encode_literal(&mut b, n.as_bytes(), v.as_bytes());
        }
        b
    }

    /// Feeds `input` one byte at a time (the hardest split) and returns the output.
    fn run(input: &[u8]) -> Vec<u8> {
        let mut f = Filter::default();
        let (mut inb, mut out) = (BytesMut::new(), BytesMut::new());
        for b in input {
            inb.put_u8(*b);
            f.feed(&mut inb, &mut out);
        }
        out.to_vec()
    }

    /// Decodes every HEADERS block in `bytes` (after the preface) with a fresh decoder.
    fn decode_all(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut d = loona_hpack::Decoder::new();
        let mut i = PREFACE_LEN;
        let mut blocks = Vec::new();
        let mut cur = Vec::new();
        while i + FRAME_HEADER_LEN <= bytes.len() {
            let len = (usize::from(bytes[i]) << 16)
                | (usize::from(bytes[i + 1]) << 8)
                | usize::from(bytes[i + 2]);
            let (kind, flags) = (bytes[i + 3], bytes[i + 4]);
            let payload = &bytes[i + FRAME_HEADER_LEN..i + FRAME_HEADER_LEN + len];
            if kind == HEADERS || kind == CONTINUATION {
                let skip = if kind == HEADERS && flags & PRIORITY != 0 {
                    5
                } else {
                    0
                };
                cur.extend_from_slice(&payload[skip..]);
                if flags & END_HEADERS != 0 {
                    blocks.push(d.decode(&cur).unwrap());
                    cur.clear();
                }
            }
            i += FRAME_HEADER_LEN + len;
        }
        blocks
    }

    #[test]
    fn valid_authorities_pass_through_byte_for_byte() {
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(
            1,
            END_HEADERS,
            &block(&[(":authority", "127.0.0.1:2379"), (":path", "/x")]),
        ));
        input.extend([0, 0, 3, 0, END_STREAM, 0, 0, 0, 1, 7, 8, 9]);
        assert_eq!(run(&input), input);
    }

    #[test]
    fn a_valid_authority_ends_the_inspection() {
        let mut input = PREFACE.to_vec();
        // No authority yet: still inspecting.
        input.extend(headers_frame(1, END_HEADERS, &block(&[(":path", "/a")])));
        input.extend(headers_frame(
            3,
            END_HEADERS,
            &block(&[(":authority", "h:1"), (":path", "/b")]),
        ));
        let mut f = Filter::default();
        let (mut inb, mut out) = (BytesMut::from(&input[..]), BytesMut::new());
        f.feed(&mut inb, &mut out);
        assert!(matches!(f.state, State::Verbatim));
        // From here on bytes pass as they are, even a block the filter would have rewritten.
        let later = headers_frame(5, END_HEADERS, &block(&[(":authority", "http://h:1")]));
        inb.extend_from_slice(&later);
        f.feed(&mut inb, &mut out);
        input.extend_from_slice(&later);
        assert_eq!(out.to_vec(), input);
    }

    #[test]
    fn scheme_in_authority_is_stripped_and_junk_dropped() {
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(
            1,
            END_HEADERS,
            &block(&[(":authority", "http://127.0.0.1:2379"), (":path", "/a")]),
        ));
        input.extend(headers_frame(
            3,
            END_HEADERS | END_STREAM,
            &block(&[(":authority", "#initially=[x]"), (":path", "/b")]),
        ));
        input.extend(headers_frame(
            5,
            END_HEADERS,
            &block(&[(":authority", "ok:1"), (":path", "/c")]),
        ));
        let out = run(&input);
        let blocks = decode_all(&out);
        assert_eq!(blocks.len(), 3);
        assert_eq!(
            blocks[0][0],
            (b":authority".to_vec(), b"127.0.0.1:2379".to_vec())
        );
        assert_eq!(blocks[1], vec![(b":path".to_vec(), b"/b".to_vec())]);
        assert_eq!(blocks[2][0], (b":authority".to_vec(), b"ok:1".to_vec()));
        // END_STREAM survives the rewrite.
        let second = PREFACE_LEN + FRAME_HEADER_LEN + usize::from(out[PREFACE_LEN + 2]);
        assert_eq!(out[second + 4] & END_STREAM, END_STREAM);
    }

    #[test]
    fn continuation_frames_and_big_blocks_are_handled() {
        let big = "v".repeat(40_000);
        let b = block(&[(":authority", "http://h:1"), ("x-big", &big)]);
        let mut input = PREFACE.to_vec();
        let (a, rest) = b.split_at(10);
        input.extend(headers_frame(1, 0, a));
        let mut c = BytesMut::new();
        write_frame_header(&mut c, rest.len(), CONTINUATION, END_HEADERS, 1);
        c.extend_from_slice(rest);
        input.extend_from_slice(&c);
        let blocks = decode_all(&run(&input));
        assert_eq!(blocks[0][0].1, b"h:1");
        assert_eq!(blocks[0][1].1.len(), 40_000);
    }

    #[test]
    fn http1_requests_pass_untouched() {
        let req = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:2379\r\n\r\n".to_vec();
        assert_eq!(run(&req), req);
    }

    #[test]
    fn garbage_steps_aside_without_panicking() {
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(1, END_HEADERS, &[0xff, 0xff, 0xff, 0xff]));
        input.extend(b"trailing junk");
        assert_eq!(run(&input), input);
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let mut input = PREFACE.to_vec();
        input.extend(&noise);
        let _ = run(&input);
    }
}
