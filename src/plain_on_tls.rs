//! A readable answer for a client that speaks plain HTTP to a TLS listener (`http://host:443/`,
//! a health check or a script with the wrong scheme). rustls would take `GET ...` for a TLS
//! record of an unknown type and answer with an alert, which curl shows as "Received HTTP/0.9"
//! and a browser as a download or a blank page; nginx answers 400 "plain HTTP request was sent
//! to HTTPS port", and so does this.
//!
//! The first bytes are looked at as rustls reads the ClientHello, not with a `MSG_PEEK` before
//! the handshake (nginx's way), which would be one system call more for every TLS connection
//! to serve the few that are mistakes. The ClientHello is read through `FirstBytes` (rustls'
//! `Acceptor`, by tokio-rustls' lazy acceptor), then the handshake goes on over the bare
//! stream: the reads of an established connection do not pass through the check. (Kept under
//! the connection for its life, the wrapper cost about 300 instructions a request over TLS,
//! callgrind: rustls' record reader was no longer inlined.)

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, StartHandshake, TlsAcceptor};

use crate::prefixed::writes_go_to_inner;

/// What a TLS listener sends to plain HTTP before it closes.
const ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 56\r\n\
Connection: close\r\n\
\r\n\
400 Bad Request: this port speaks HTTPS; use https://.\r\n";

/// How a TLS listener's handshake ended.
pub enum Handshake<I> {
    /// Boxed: the TLS session is over a kilobyte, and the connection keeps it on the heap.
    Done(Box<TlsStream<I>>),
    /// The client spoke plain HTTP: `answer` it.
    PlainHttp(FirstBytes<I>),
    Failed(io::Error),
}

/// The TLS handshake of an accepted connection, telling plain HTTP apart. rustls answers any
/// other failure with its alert, as before.
pub async fn handshake<I>(acceptor: &TlsAcceptor, stream: I) -> Handshake<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut hello = LazyConfigAcceptor::new(Acceptor::default(), FirstBytes::new(stream));
    let start = match (&mut hello).await {
        Ok(start) => start,
        Err(e) if PlainHttp::is(&e) => {
            return match hello.take_io() {
                Some(stream) => Handshake::PlainHttp(stream),
                None => Handshake::Failed(e),
            }
        }
        Err(e) => return Handshake::Failed(e),
    };
    let StartHandshake { accepted, io, .. } = start;
    let rest =
        StartHandshake::from_parts(accepted, io.inner).into_stream(acceptor.config().clone());
    match rest.await {
        Ok(tls) => Handshake::Done(Box::new(tls)),
        Err(e) => Handshake::Failed(e),
    }
}

/// A connection's stream while rustls reads its ClientHello: the first bytes read are checked
/// for plain HTTP, then everything passes through.
pub struct FirstBytes<I> {
    inner: I,
    checked: bool,
}

impl<I> FirstBytes<I> {
    pub fn new(inner: I) -> FirstBytes<I> {
        FirstBytes {
            inner,
            checked: false,
        }
    }
}

/// The error a read gives when the client spoke plain HTTP: the handshake ends with it, before
/// rustls has seen the bytes or queued an alert.
#[derive(Debug, thiserror::Error)]
#[error("plain HTTP on a TLS listener")]
pub struct PlainHttp;

impl PlainHttp {
    /// Whether a failed handshake failed on plain HTTP.
    pub fn is(error: &io::Error) -> bool {
        error.get_ref().is_some_and(|e| e.is::<PlainHttp>())
    }
}

/// Whether a connection's first byte starts an HTTP/1.x request line rather than a TLS record.
/// A ClientHello comes in a handshake record (22, 0x16); SSLv2's has the high bit set. Every
/// method token (and HTTP/2's `PRI` preface) starts with a letter, which no TLS record type
/// (20 to 24) is.
fn is_http(first: u8) -> bool {
    first.is_ascii_alphabetic()
}

/// What is read and dropped after the answer, at most: the rest of a request, not an upload.
const DRAIN_MAX: usize = 64 * 1024;

/// Answers the client that spoke plain HTTP, closes the write side, then reads and drops what
/// it still sends (the rest of its request) until it closes: closing with its bytes unread
/// would reset the connection under the answer. The caller bounds it in time.
pub async fn answer<I: AsyncRead + AsyncWrite + Unpin>(stream: FirstBytes<I>) -> io::Result<()> {
    let mut io = stream.inner;
    io.write_all(ANSWER).await?;
    io.shutdown().await?;
    let mut scratch = [0u8; 4096];
    let mut dropped = 0;
    while dropped < DRAIN_MAX {
        match io.read(&mut scratch).await? {
            0 => break,
            n => dropped += n,
        }
    }
    Ok(())
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstBytes<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.checked {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let start = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(&first) = buf.filled().get(start) {
            this.checked = true;
            if is_http(first) {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, PlainHttp)));
            }
        }
        Poll::Ready(Ok(()))
    }
}

writes_go_to_inner!(FirstBytes);

#[cfg(test)]
mod tests {
    use super::{is_http, ANSWER};

    #[test]
    fn tls_records_are_not_http_and_request_lines_are() {
        // ClientHello in a handshake record, SSLv2-compatible hello, and the other record types.
        for first in [0x16, 0x80, 0x14, 0x15, 0x17, 0x18] {
            assert!(!is_http(first), "{first:#x}");
        }
        for line in [
            "GET / HTTP/1.1",
            "POST /x HTTP/1.0",
            "PRI * HTTP/2.0",
            "get /",
        ] {
            assert!(is_http(line.as_bytes()[0]), "{line}");
        }
    }

    #[test]
    fn the_answer_declares_its_own_length() {
        let text = std::str::from_utf8(ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{text}"
        );
    }
}
