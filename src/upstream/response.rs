//! A backend's response body, read straight from the connection the request owns. When it has
//! been read to its end, the connection goes back to its backend's pool at once; dropped before
//! that, the connection is closed with it (it would hand the next request the rest of this
//! body).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};

use super::conn::UpstreamConn;
use super::connect::MaybeTls;
use super::pool::PoolSettings;
use crate::backends::Backend;
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::decode::Decoder;
use crate::http1::head::ResponseBody;

/// Why a backend's body could not be read to its end; the client sees a truncated response.
pub use crate::http1::decode::ReadError as BodyReadError;

/// Where a connection goes when its response ends, if it may be used again.
pub(crate) struct ReturnTo {
    pub backend: Arc<Backend>,
    pub settings: Arc<PoolSettings>,
}

impl ReturnTo {
    fn give_back(self, mut conn: Box<UpstreamConn>) {
        conn.served += 1;
        self.settings.register(&self.backend);
        self.backend.pool.put(conn, self.settings.max_idle);
    }
}

pub struct UpstreamBody {
    conn: Option<Box<UpstreamConn>>,
    decoder: Decoder,
    reuse: Option<ReturnTo>,
}

impl UpstreamBody {
    pub(crate) fn new(
        conn: Box<UpstreamConn>,
        framing: ResponseBody,
        reuse: Option<ReturnTo>,
    ) -> UpstreamBody {
        let decoder = match framing {
            ResponseBody::Empty => Decoder::Done,
            ResponseBody::Length(n) => Decoder::Length(n),
            ResponseBody::Chunked => Decoder::Chunked(ChunkedDecoder::new()),
            ResponseBody::Close => Decoder::Close,
        };
        let mut body = UpstreamBody {
            conn: Some(conn),
            decoder,
            reuse,
        };
        if body.decoder.is_done() {
            body.finish();
        }
        body
    }

    /// A body that is over before it starts (a protocol switch takes the connection).
    pub(crate) fn switched(conn: Box<UpstreamConn>) -> UpstreamBody {
        UpstreamBody {
            conn: Some(conn),
            decoder: Decoder::Done,
            reuse: None,
        }
    }

    /// The connection after a 101 answer, with what the backend already sent past the head.
    pub(crate) fn into_upgraded(mut self) -> Option<(MaybeTls, BytesMut)> {
        self.conn.take().map(|conn| (*conn).into_upgraded())
    }

    pub fn is_end(&self) -> bool {
        self.decoder.is_done()
    }

    /// The bytes still to come when the backend declared a length (0 once ended).
    pub fn remaining(&self) -> Option<u64> {
        self.decoder.remaining()
    }

    /// The next bytes of the body, `None` at its end.
    pub fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BodyReadError>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = conn.poll_body(&mut self.decoder, cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) if self.decoder.is_done() => self.finish(),
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) => {
                self.conn = None;
                self.reuse = None;
            }
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
        }
        polled
    }

    /// The body ended: the connection goes back if it may, and holds nothing past the body.
    fn finish(&mut self) {
        let (Some(conn), Some(reuse)) = (self.conn.take(), self.reuse.take()) else {
            return;
        };
        if conn.inbound.is_empty() {
            reuse.give_back(conn);
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyReadError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyReadError>>> {
        self.get_mut()
            .poll_data(cx)
            .map(|data| data.map(|d| d.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.is_end()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
