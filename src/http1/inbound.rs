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
}

impl Default for Inbound {
    fn default() -> Self {
        Inbound {
            bytes: BytesMut::new(),
            scan: HeadScan::default(),
            read_size: FIRST_READ,
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
        if self.bytes.capacity() == 0 {
            return self.poll_fill_unbuffered(io, cx);
        }
        if self.bytes.capacity() - self.bytes.len() < self.read_size / 2 {
            self.bytes.reserve(self.read_size);
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
        }
        Poll::Ready(Ok(got.len()))
    }

    /// Gives the buffer back if nothing is in it (the connection is about to wait).
    pub fn release(&mut self) {
        if self.bytes.is_empty() && self.bytes.capacity() > 0 {
            self.bytes = BytesMut::new();
            self.read_size = FIRST_READ;
        }
    }
}
