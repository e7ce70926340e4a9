//! Bytes read from one side of a connection and not consumed yet, for both the client and the
//! backend side. Reads grow from 8 KiB to 64 KiB while they keep filling the buffer (a large
//! body), and a connection that goes idle gives its buffer back (`release`): it then waits
//! for its next bytes reading into the stack, and allocates only when they come. That is why
//! ten thousand idle keep-alive connections cost no read buffers at all (nginx does the same).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

use super::head::HeadScan;

const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;
/// What an idle connection reads into while it holds no buffer: a request head fits.
const IDLE_READ: usize = 2048;

#[derive(Debug)]
pub struct Inbound {
    pub bytes: BytesMut,
    /// How far the head at the front has been scanned for its end.
    pub scan: HeadScan,
    read_size: usize,
    /// No buffer is held: the connection is new or gave it back (`release`). Not the same as
    /// a capacity of 0, which is also what a buffer whose every byte was split off as body
    /// has left: taking that for idle sent every other read of a large body through the
    /// 2 KiB stack buffer, two system calls per 64 KiB and, over TLS, a 2 KiB record of its
    /// own (BENCHMARKS.md).
    parked: bool,
}

impl Default for Inbound {
    fn default() -> Self {
        Inbound {
            bytes: BytesMut::new(),
            scan: HeadScan::default(),
            read_size: FIRST_READ,
            parked: true,
        }
    }
}

impl Inbound {
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Reads what the other side sent; `Ok(0)` at end of stream.
    pub fn poll_fill<R: AsyncRead + ?Sized>(
        &mut self,
        io: Pin<&mut R>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if self.parked {
            return self.poll_fill_unbuffered(io, cx);
        }
        if self.bytes.capacity() - self.bytes.len() < self.read_size / 2 {
            if !self.bytes.is_empty() {
                self.bytes.reserve(self.read_size);
            } else if !self.bytes.try_reclaim(self.read_size) {
                // Everything read was handed on, and the buffer is still shared with a chunk on
                // its way to the client or smaller than the next read: a fresh one of exactly
                // the read size. `reserve` would grow the old one to twice its size or more,
                // which every later read then kept filling (120 KiB per streaming connection).
                self.bytes = BytesMut::with_capacity(self.read_size);
            }
        }
        let spare = self.bytes.capacity() - self.bytes.len();
        let n = std::task::ready!(tokio_util::io::poll_read_buf(io, cx, &mut self.bytes))?;
        if n == spare && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_fill_unbuffered<R: AsyncRead + ?Sized>(
        &mut self,
        io: Pin<&mut R>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let mut stack = [MaybeUninit::<u8>::uninit(); IDLE_READ];
        let mut read = ReadBuf::uninit(&mut stack);
        std::task::ready!(io.poll_read(cx, &mut read))?;
        let got = read.filled();
        if !got.is_empty() {
            self.bytes.reserve(self.read_size.max(got.len()));
            self.bytes.extend_from_slice(got);
            self.parked = false;
        }
        Poll::Ready(Ok(got.len()))
    }

    /// Gives the buffer back if nothing is in it (the connection is about to wait).
    pub fn release(&mut self) {
        if self.bytes.is_empty() && !self.parked {
            self.bytes = BytesMut::new();
            self.read_size = FIRST_READ;
            self.parked = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a body of `len` bytes off an in-memory reader that fills whatever space it is
    /// given, handing each read on as a body chunk does (`split_to(..).freeze()`); `hold`
    /// keeps the chunk alive until after the next read, as a client that has not taken it yet
    /// does. Returns each read's size and the largest buffer held.
    async fn read_body(len: usize, hold: bool) -> (Vec<usize>, usize) {
        let body = vec![7u8; len];
        let mut reader: &[u8] = &body;
        let mut inbound = Inbound::default();
        let (mut reads, mut largest) = (Vec::new(), 0);
        let mut held: Option<bytes::Bytes> = None;
        loop {
            let n = std::future::poll_fn(|cx| inbound.poll_fill(Pin::new(&mut reader), cx))
                .await
                .unwrap();
            if n == 0 {
                return (reads, largest);
            }
            reads.push(n);
            largest = largest.max(inbound.bytes.capacity());
            let chunk = inbound.bytes.split_to(n).freeze();
            // The chunk the last read gave is dropped only now, after this read.
            drop(std::mem::replace(&mut held, hold.then_some(chunk)));
        }
    }

    #[tokio::test]
    async fn a_large_body_is_read_in_reads_that_grow_to_64_kib_and_stay_there() {
        for hold in [false, true] {
            let (reads, largest) = read_body(1024 * 1024, hold).await;
            // The first read is an idle connection's, into the stack; then 8, 16, 32, 64 KiB.
            assert_eq!(reads[0], IDLE_READ, "hold {hold}: {reads:?}");
            let full = reads
                .iter()
                .position(|&n| n == MAX_READ)
                .expect("reaches 64 KiB");
            assert!(full <= 5, "hold {hold}: {reads:?}");
            // From there on every read fills 64 KiB but the body's last: none goes back to
            // the stack's 2 KiB (a buffer read to its end is not an idle connection's).
            let (last, steady) = reads[full..].split_last().unwrap();
            assert!(
                steady.iter().all(|&n| n == MAX_READ),
                "hold {hold}: {reads:?}"
            );
            assert!(*last <= MAX_READ);
            assert!(
                largest <= MAX_READ,
                "hold {hold}: a buffer of {largest} bytes"
            );
        }
    }

    #[tokio::test]
    async fn a_released_buffer_is_given_back_and_the_next_read_goes_to_the_stack() {
        let mut inbound = Inbound::default();
        let mut reader: &[u8] = &[1u8; 100_000];
        for _ in 0..4 {
            std::future::poll_fn(|cx| inbound.poll_fill(Pin::new(&mut reader), cx))
                .await
                .unwrap();
            inbound.bytes.clear();
        }
        assert!(inbound.bytes.capacity() > 0);
        inbound.release();
        assert_eq!(inbound.bytes.capacity(), 0);
        let n = std::future::poll_fn(|cx| inbound.poll_fill(Pin::new(&mut reader), cx))
            .await
            .unwrap();
        assert_eq!(n, IDLE_READ);
        // A buffer with bytes in it is never given back.
        inbound.release();
        assert_eq!(inbound.bytes.len(), IDLE_READ);
    }
}
