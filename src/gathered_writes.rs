//! Large writes gathered under an HTTP/2 connection, so that a body leaves in writes of up to
//! 64 KiB. h2 hands each DATA frame of more than 256 bytes to its transport as a write of its
//! own (the frame's 9-byte head chained to the payload) and flushes after each one, so a body
//! left as one system call per 16 KiB frame, and over TLS as two records per frame: 16,384
//! bytes of plaintext and the 9 left over.
//!
//! A flush that follows a gathered write is answered at once, and the connection's task is
//! woken to come back: h2 flushes its transport at the end of every poll of the connection, so
//! the next flush that comes with no write before it is the one that finds h2 with nothing more
//! to send, and that one writes. Small writes pass straight through while nothing is gathered:
//! h2 already gathers small frames (heads, small bodies, window updates) in a buffer of its own,
//! and copying them again would only cost.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A write of at least this many bytes starts gathering: h2's chained DATA frames run up to
/// 16 KiB, while what it buffers itself between flushes is usually a few hundred bytes.
const GATHER_FROM: usize = 4 * 1024;
/// What is gathered before it is written without waiting for a flush.
const GATHER_UP_TO: usize = 64 * 1024;

pub struct GatheredWrites<T> {
    inner: T,
    /// Accepted and not yet taken by `inner`, from `written` on. No allocation while nothing
    /// is gathered, so an idle connection holds none.
    gathered: Vec<u8>,
    written: usize,
    /// Bytes were gathered since the last flush: more may follow at once.
    gathered_since_flush: bool,
}

impl<T> GatheredWrites<T> {
    pub fn new(inner: T) -> GatheredWrites<T> {
        GatheredWrites {
            inner,
            gathered: Vec::new(),
            written: 0,
            gathered_since_flush: false,
        }
    }
}

impl<T: AsyncWrite + Unpin> GatheredWrites<T> {
    /// Writes out everything gathered.
    fn poll_write_gathered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.gathered.len() {
            let rest = &self.gathered[self.written..];
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.gathered.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_write_slices(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if self.gathered.is_empty() && len < GATHER_FROM {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        if self.gathered.len() + len > GATHER_UP_TO {
            ready!(self.poll_write_gathered(cx))?;
            if len >= GATHER_UP_TO {
                return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            }
        }
        if self.gathered.capacity() == 0 {
            self.gathered.reserve_exact(GATHER_UP_TO);
        }
        for buf in bufs {
            self.gathered.extend_from_slice(buf);
        }
        self.gathered_since_flush = true;
        Poll::Ready(Ok(len))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GatheredWrites<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if std::mem::take(&mut this.gathered_since_flush) {
            // Back for it once this poll of the connection is over.
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        if !this.gathered.is_empty() {
            ready!(this.poll_write_gathered(cx))?;
            // The body has left: an idle connection holds no buffer.
            this.gathered = Vec::new();
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_gathered(cx))?;
        this.gathered_since_flush = false;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GatheredWrites<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    /// A transport that keeps every write it is given, as one entry each.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        shut: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = joined.len();
            self.get_mut().writes.push(joined);
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

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Driver {
        io: GatheredWrites<Recorder>,
        wakes: Arc<CountingWaker>,
        waker: Waker,
    }

    impl Driver {
        fn new() -> Driver {
            let wakes = Arc::new(CountingWaker(AtomicUsize::new(0)));
            Driver {
                io: GatheredWrites::new(Recorder::default()),
                waker: Waker::from(wakes.clone()),
                wakes,
            }
        }

        /// As h2 hands over a DATA frame: its head and payload in one vectored write.
        fn frame(&mut self, payload: &[u8]) {
            let head = [0u8, 0, 0, 0, 0, 0, 0, 0, 1];
            let bufs = [IoSlice::new(&head), IoSlice::new(payload)];
            let mut cx = Context::from_waker(&self.waker);
            let n = Pin::new(&mut self.io).poll_write_vectored(&mut cx, &bufs);
            assert!(matches!(n, Poll::Ready(Ok(n)) if n == 9 + payload.len()));
        }

        fn write(&mut self, bytes: &[u8]) {
            let mut cx = Context::from_waker(&self.waker);
            let n = Pin::new(&mut self.io).poll_write(&mut cx, bytes);
            assert!(matches!(n, Poll::Ready(Ok(n)) if n == bytes.len()));
        }

        fn flush(&mut self) {
            let mut cx = Context::from_waker(&self.waker);
            assert!(Pin::new(&mut self.io).poll_flush(&mut cx).is_ready());
        }

        fn writes(&self) -> Vec<usize> {
            self.io.inner.writes.iter().map(Vec::len).collect()
        }

        fn wakes(&self) -> usize {
            self.wakes.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn small_writes_pass_straight_through() {
        let mut d = Driver::new();
        d.write(&[1; 300]);
        d.flush();
        d.write(&[2; 40]);
        assert_eq!(d.writes(), [300, 40]);
        assert_eq!(d.io.inner.flushes, 1);
        assert_eq!(d.wakes(), 0);
        assert_eq!(d.io.gathered.capacity(), 0);
    }

    #[test]
    fn large_frames_leave_together_at_the_flush_that_follows_no_write() {
        let mut d = Driver::new();
        // h2 flushes after each large frame; those flushes are answered and the task woken.
        for i in 0..3u8 {
            d.frame(&[i; 16_384]);
            d.flush();
        }
        assert_eq!(d.writes(), Vec::<usize>::new());
        assert_eq!(d.wakes(), 3);
        assert_eq!(d.io.inner.flushes, 0);
        // The next poll of the connection: nothing more to send, so its flush writes.
        d.flush();
        assert_eq!(d.writes(), [3 * 16_393]);
        assert_eq!(d.io.inner.flushes, 1);
        // In order, heads and payloads as they came.
        let out = &d.io.inner.writes[0];
        for i in 0..3usize {
            let frame = &out[i * 16_393..(i + 1) * 16_393];
            assert_eq!(frame[8], 1);
            assert!(frame[9..].iter().all(|&b| b == i as u8));
        }
        // Nothing kept once it has left.
        assert_eq!(d.io.gathered.capacity(), 0);
    }

    #[test]
    fn a_write_that_would_pass_64_kib_sends_what_was_gathered_first() {
        let mut d = Driver::new();
        for _ in 0..5 {
            d.frame(&[7; 16_384]);
            d.flush();
        }
        // Three frames fit in 64 KiB; the fourth sent them on, and gathering went on.
        assert_eq!(d.writes(), [3 * 16_393]);
        d.flush();
        assert_eq!(d.writes(), [3 * 16_393, 2 * 16_393]);
    }

    #[test]
    fn a_small_write_after_gathered_ones_keeps_its_place() {
        let mut d = Driver::new();
        d.frame(&[1; 8_000]);
        d.write(b"tail");
        d.flush();
        d.flush();
        assert_eq!(d.writes(), [8_009 + 4]);
        assert_eq!(&d.io.inner.writes[0][8_009..], b"tail");
    }

    #[test]
    fn shutdown_writes_what_was_gathered_first() {
        let mut d = Driver::new();
        d.frame(&[3; 10_000]);
        d.flush();
        let mut cx = Context::from_waker(&d.waker);
        assert!(Pin::new(&mut d.io).poll_shutdown(&mut cx).is_ready());
        assert_eq!(d.writes(), [10_009]);
        assert!(d.io.inner.shut);
    }
}
