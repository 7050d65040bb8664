//! A write side that turns h2's flushes into one system call each.
//!
//! h2 copies a DATA frame's payload into its write buffer only below a "chain threshold": 256 bytes when
//! the stream says it supports vectored writes, 1 KiB when it does not. A bigger payload is kept aside
//! and the buffer must be written out before h2 accepts the next frame. A unary gRPC answer of a few
//! hundred bytes (one key with a 256-byte value, a lease, a member list) is above 256 bytes, so with a
//! vectored stream every answer costs its own `writev`, and the trailers go into the next one; with 1000
//! clients on 100 connections the answers queued on one connection are not sent together. Measured by
//! hand on one core, a 256-byte value ranged by 1000 clients ran at 22-25k requests/s with the vectored
//! stream and 22-29k through this one (figures and method in `bench/RESULTS.md`, "Answers share a
//! write"). Without the holding below, a non-vectored stream would write h2's buffer and a payload over
//! 1 KiB it kept aside in two calls instead of one.
//!
//! [`Coalesce`] gets both: it tells h2 it cannot write vectored (so payloads up to 1 KiB are copied and
//! many answers share one write), holds what h2 writes until h2 flushes, and sends held bytes together
//! with a payload too big to hold in one vectored call. The tradeoff is one copy of each flush's bytes
//! (at most [`HOLD_LIMIT`], cheap next to a system call) and a buffer per connection while a flush is
//! being assembled; it is released once written, so an idle connection holds nothing.
//!
//! hyper's HTTP/1 writer (the JSON gateway, `/metrics`) also sees a stream that cannot write vectored and
//! copies a response's head and body into one buffer before writing it: one copy more, one call fewer.
//!
//! Every writer over this stream must flush (hyper and h2 do, after each batch of frames): bytes written
//! without a flush stay here.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes held before a flush; a write that would go past it is sent at once, together with
/// what is held. h2's own write buffer is 16 KiB.
pub(crate) const HOLD_LIMIT: usize = 16 * 1024;

/// A stream whose writes are held until a flush or until they outgrow [`HOLD_LIMIT`].
pub(crate) struct Coalesce<T> {
    inner: T,
    held: Vec<u8>,
}

impl<T> Coalesce<T> {
    pub(crate) fn new(inner: T) -> Coalesce<T> {
        Coalesce {
            inner,
            held: Vec::new(),
        }
    }

    /// Drops `n` written bytes from the front of what is held, releasing the buffer once it is empty.
    fn consumed(&mut self, n: usize) {
        if n >= self.held.len() {
            self.held = Vec::new();
        } else {
            self.held.drain(..n);
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes out everything held.
    fn poll_write_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consumed(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.held.len() + buf.len() <= HOLD_LIMIT {
            this.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        while !this.held.is_empty() {
            let both = [IoSlice::new(&this.held), IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &both))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let held = this.held.len();
            this.consumed(n);
            if n > held {
                return Poll::Ready(Ok(n - held));
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_held(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_held(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    /// False on purpose: it raises h2's chain threshold from 256 bytes to 1 KiB (see the module doc).
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    /// A sink that records each call it accepts, takes at most `max_per_call` bytes per call, and
    /// answers `Pending` (waking at once) to every `pending_every`-th call.
    #[derive(Default)]
    struct Sink {
        calls: Vec<Vec<u8>>,
        max_per_call: usize,
        pending_every: usize,
        seen: usize,
        flushes: usize,
        shut: bool,
    }

    impl Sink {
        fn new(max_per_call: usize, pending_every: usize) -> Sink {
            Sink {
                max_per_call,
                pending_every,
                ..Sink::default()
            }
        }

        fn stall(&mut self, cx: &mut Context<'_>) -> bool {
            self.seen += 1;
            if self.pending_every != 0 && self.seen.is_multiple_of(self.pending_every) {
                cx.waker().wake_by_ref();
                return true;
            }
            false
        }

        fn written(&self) -> Vec<u8> {
            self.calls.concat()
        }
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            assert!(!this.shut, "write after shutdown");
            if this.stall(cx) {
                return Poll::Pending;
            }
            let mut call = Vec::new();
            for b in bufs {
                let room = this.max_per_call - call.len();
                call.extend_from_slice(&b[..b.len().min(room)]);
            }
            let n = call.len();
            this.calls.push(call);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().shut = true;
            Poll::Ready(Ok(()))
        }
    }

    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    /// Polls `f` until it is ready; the sink wakes before every `Pending`, so this always ends.
    fn block_on<R>(mut f: impl FnMut(&mut Context<'_>) -> Poll<R>) -> R {
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(r) = f(&mut cx) {
                return r;
            }
        }
    }

    fn write_all(c: &mut Coalesce<Sink>, mut buf: &[u8]) {
        while !buf.is_empty() {
            let n = block_on(|cx| Pin::new(&mut *c).poll_write(cx, buf)).unwrap();
            assert!(n > 0 && n <= buf.len(), "wrote {n} of {}", buf.len());
            buf = &buf[n..];
        }
    }

    fn flush(c: &mut Coalesce<Sink>) {
        block_on(|cx| Pin::new(&mut *c).poll_flush(cx)).unwrap();
    }

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn small_writes_go_out_in_one_call_at_the_flush() {
        let mut c = Coalesce::new(Sink::new(usize::MAX, 0));
        let parts: Vec<Vec<u8>> = (0..10).map(|i| bytes(300, i)).collect();
        for p in &parts {
            write_all(&mut c, p);
        }
        assert!(c.inner.calls.is_empty(), "nothing is sent before the flush");
        flush(&mut c);
        assert_eq!(c.inner.calls.len(), 1);
        assert_eq!(c.inner.written(), parts.concat());
        assert_eq!(c.inner.flushes, 1);
        assert_eq!(c.held.capacity(), 0, "the buffer is released once written");
    }

    #[test]
    fn held_bytes_and_a_big_write_share_one_call() {
        let mut c = Coalesce::new(Sink::new(usize::MAX, 0));
        let head = bytes(900, 1);
        let payload = bytes(HOLD_LIMIT, 2);
        write_all(&mut c, &head);
        write_all(&mut c, &payload);
        assert_eq!(c.inner.calls.len(), 1);
        flush(&mut c);
        assert_eq!(c.inner.calls.len(), 1, "the flush had nothing left to send");
        assert_eq!(c.inner.written(), [head, payload].concat());
    }

    #[test]
    fn shutdown_sends_what_is_held_first() {
        let mut c = Coalesce::new(Sink::new(usize::MAX, 0));
        write_all(&mut c, b"goaway");
        block_on(|cx| Pin::new(&mut c).poll_shutdown(cx)).unwrap();
        assert_eq!(c.inner.written(), b"goaway");
        assert!(c.inner.shut);
    }

    #[test]
    fn says_it_cannot_write_vectored() {
        assert!(!Coalesce::new(Sink::new(1, 0)).is_write_vectored());
    }

    /// Random writes and flushes over sinks that take few bytes per call and often stall: every byte
    /// arrives once, in order, nothing is held after a flush, and no write reports zero bytes.
    #[test]
    fn partial_and_stalled_writes_lose_nothing() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        for round in 0..100 {
            let max_per_call = [3, 7, 512, 4096, usize::MAX][round % 5];
            let pending_every = [0, 2, 3][round % 3];
            let mut c = Coalesce::new(Sink::new(max_per_call, pending_every));
            let mut expected = Vec::new();
            for step in 0..30 {
                let len = match next(4) {
                    0 => next(64),
                    1 => next(2048),
                    2 => HOLD_LIMIT - 100 + next(200),
                    _ => next(3 * HOLD_LIMIT),
                };
                let part = bytes(len, step as u8);
                write_all(&mut c, &part);
                expected.extend_from_slice(&part);
                assert!(c.held.len() <= HOLD_LIMIT);
                if next(3) == 0 {
                    flush(&mut c);
                    assert!(c.held.is_empty());
                    assert_eq!(c.inner.written(), expected);
                }
            }
            flush(&mut c);
            assert_eq!(c.inner.written(), expected, "round {round}");
        }
    }
}
