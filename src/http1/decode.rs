//! A message body read off a connection by its framing, for both directions: a client's
//! request body and a backend's response body. Data comes out as slices of the read buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncRead;

use super::chunked::{Chunk, ChunkError, ChunkedDecoder};
use super::Inbound;

/// Why a body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed {0} bytes before the end of the body")]
    Truncated(u64),
    #[error("connection closed inside a chunked body")]
    TruncatedChunks,
    #[error("malformed chunked body: {0}")]
    Framing(#[from] ChunkError),
    #[error("reading the body: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug)]
pub enum Decoder {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the connection closes.
    Close,
    Done,
    /// After an error: where the body ends is unknown, so nothing after it may be read as a
    /// message. Not done, so that no caller takes the connection for one at a message's end.
    Failed,
}

impl Decoder {
    /// The body was read to the end its framing gives (not after an error).
    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Done)
    }

    /// The bytes still to come when the length is known (0 once done).
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            Decoder::Chunked(_) | Decoder::Close | Decoder::Failed => None,
        }
    }

    /// The next bytes of the body (never empty), `None` at its end. After an error the
    /// decoder is `Failed`, gives nothing more, and the connection is not to be used again.
    pub fn poll_next<R: AsyncRead + ?Sized>(
        &mut self,
        inbound: &mut Inbound,
        mut io: Pin<&mut R>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, ReadError>>> {
        let result = loop {
            match self {
                Decoder::Done | Decoder::Failed => return Poll::Ready(None),
                Decoder::Length(left) => {
                    if !inbound.is_empty() {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(inbound.bytes.len());
                        *left -= n as u64;
                        let data = inbound.bytes.split_to(n).freeze();
                        if *left == 0 {
                            *self = Decoder::Done;
                        }
                        return Poll::Ready(Some(Ok(data)));
                    }
                    let left = *left;
                    match std::task::ready!(inbound.poll_fill(io.as_mut(), cx)) {
                        Ok(0) => break Err(ReadError::Truncated(left)),
                        Ok(_) => {}
                        Err(e) => break Err(e.into()),
                    }
                }
                Decoder::Chunked(decoder) => match decoder.decode(&mut inbound.bytes) {
                    Ok(Chunk::Data(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(Chunk::End) => {
                        *self = Decoder::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Chunk::Incomplete) => {
                        match std::task::ready!(inbound.poll_fill(io.as_mut(), cx)) {
                            Ok(0) => break Err(ReadError::TruncatedChunks),
                            Ok(_) => {}
                            Err(e) => break Err(e.into()),
                        }
                    }
                    Err(e) => break Err(e.into()),
                },
                Decoder::Close => {
                    if !inbound.is_empty() {
                        return Poll::Ready(Some(Ok(inbound.bytes.split().freeze())));
                    }
                    match std::task::ready!(inbound.poll_fill(io.as_mut(), cx)) {
                        Ok(0) => {
                            *self = Decoder::Done;
                            return Poll::Ready(None);
                        }
                        Ok(_) => {}
                        Err(e) => break Err(e.into()),
                    }
                }
            }
        };
        *self = Decoder::Failed;
        Poll::Ready(Some(result))
    }
}
