//! Bytes queued for one side of a connection, written in order with vectored writes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;

/// Queued bytes: a head and the body bytes after it go out in one system call.
/// Kept with its connection and reused: after the first exchange, queueing a head and its
/// body allocates nothing.
#[derive(Default)]
pub struct Outgoing {
    parts: Vec<Bytes>,
    /// Bytes queued and not written yet.
    len: usize,
    /// Where heads are encoded; split off and queued by `queue_head`.
    scratch: BytesMut,
}

impl Outgoing {
    pub fn push(&mut self, bytes: impl Into<Bytes>) {
        let bytes = bytes.into();
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.parts.push(bytes);
        }
    }

    /// A buffer to encode a head into, then `queue_head`.
    pub fn head_buf(&mut self) -> &mut BytesMut {
        &mut self.scratch
    }

    pub fn queue_head(&mut self) {
        let head = self.scratch.split().freeze();
        self.push(head);
    }

    /// Gives back memory while the connection idles.
    pub fn release(&mut self) {
        if self.parts.is_empty() {
            self.parts = Vec::new();
            self.scratch = BytesMut::new();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn poll_write_to<W: AsyncWrite + ?Sized>(
        &mut self,
        mut io: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.parts.is_empty() {
            let n = if self.parts.len() == 1 || !io.is_write_vectored() {
                std::task::ready!(io.as_mut().poll_write(cx, &self.parts[0]))?
            } else {
                let mut slices = [io::IoSlice::new(&[]); 8];
                let count = self.parts.len().min(slices.len());
                for (slice, part) in slices.iter_mut().zip(&self.parts) {
                    *slice = io::IoSlice::new(part);
                }
                std::task::ready!(io.as_mut().poll_write_vectored(cx, &slices[..count]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        let mut done = 0;
        for part in &mut self.parts {
            if n >= part.len() {
                n -= part.len();
                done += 1;
            } else {
                part.advance(n);
                break;
            }
        }
        self.parts.drain(..done);
    }
}
