//! Bodies on their way through the proxy.
//!
//! - [`ProxyBody`], the response body an HTTP/2 stream sends (`h2_server`): a backend's body read
//!   from its connection as it arrives, or a short local answer. It carries the request's
//!   [`RequestRecord`], finished when the body ends or is dropped, so duration, access log and
//!   admission slots cover the whole response, not just its head.
//! - [`ClientBody`], a client's request body as the exchange with a backend reads it, whatever
//!   protocol brought it, with the listener's size and rate limits ([`Limited`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::access::RequestRecord;
use crate::upstream::{BodyReadError, UpstreamBody};

pub struct ProxyBody {
    inner: Inner,
    record: Option<RequestRecord>,
    sent: u64,
    ended: bool,
    /// An HTTP/2 request body the answer came before (`Proxy::handle_h2`): kept open while
    /// the answer goes out, then read and dropped (`h2_server::Respond`).
    request: Option<Box<dyn ClientBody + Sync>>,
}

/// A request body its answer came before is read and dropped for at most this long and this
/// much, so that closing it does not cost the client the answer: HTTP/1.1's lingering close,
/// and the rest of an HTTP/2 stream's body (`h2_server::Respond`).
pub const LINGER: Duration = Duration::from_secs(2);
pub const LINGER_BYTES: u64 = 1 << 20;

enum Inner {
    Upstream(UpstreamBody),
    Local(Option<Bytes>),
}

impl ProxyBody {
    pub fn upstream(body: UpstreamBody) -> ProxyBody {
        ProxyBody::new(Inner::Upstream(body))
    }

    pub fn local(text: impl Into<Bytes>) -> ProxyBody {
        let bytes = text.into();
        ProxyBody::new(Inner::Local((!bytes.is_empty()).then_some(bytes)))
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::new(Inner::Local(None))
    }

    fn new(inner: Inner) -> ProxyBody {
        ProxyBody {
            inner,
            record: None,
            sent: 0,
            ended: false,
            request: None,
        }
    }

    // Set in place, not by value: a `Reply` moved through a builder is 304 bytes copied each
    // way, per request.
    pub fn set_record(&mut self, record: RequestRecord) {
        self.record = Some(record);
    }

    pub fn hold(&mut self, request: impl ClientBody + Sync + 'static) {
        self.request = Some(Box::new(request));
    }

    /// The request body `hold` was given, for whoever sends the answer to keep from here on.
    pub fn take_held(&mut self) -> Option<Box<dyn ClientBody + Sync>> {
        self.request.take()
    }

    /// Makes this the answer to a HEAD request: its head still says what the body would be,
    /// and none follows (RFC 9110 §9.3.2). A backend's answer to HEAD has none already; the
    /// proxy's own text is dropped. (HTTP/1.1's encoder knows the method and sends no body.)
    pub fn drop_local_content(&mut self) {
        if let Inner::Local(bytes) = &mut self.inner {
            *bytes = None;
        }
    }

    /// The next bytes, `None` at the end (the HTTP/1.1 server's way of reading it).
    pub fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BodyReadError>>> {
        Pin::new(self)
            .poll_frame(cx)
            .map(|f| f.map(|f| f.map(|f| f.into_data().unwrap_or_default())))
    }

    /// The length still to come, when known (HTTP/1.1 then sends a Content-Length).
    pub fn remaining(&self) -> Option<u64> {
        match &self.inner {
            Inner::Upstream(body) => body.remaining(),
            Inner::Local(bytes) => Some(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }

    /// A backend's connection after its 101 answer, for the tunnel; `None` for any other.
    pub fn into_upgraded(mut self) -> Option<(crate::upstream::MaybeTls, bytes::BytesMut)> {
        self.ended = true;
        match std::mem::replace(&mut self.inner, Inner::Local(None)) {
            Inner::Upstream(body) => body.into_upgraded(),
            Inner::Local(_) => None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyReadError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyReadError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
            Inner::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            // An HTTP/2 stream stops polling once `is_end_stream` says so, without a final
            // `None` (`h2_server`).
            let complete = self.ended || self.is_end_stream();
            record.finish(self.sent, complete);
        }
    }
}

/// How long a request body the client declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body at all.
    None,
    Known(u64),
    /// Chunked, or HTTP/2 without a content-length: sent on to the backend chunked.
    Unknown,
}

/// A client's request body as the exchange with a backend reads it.
pub trait ClientBody: Send {
    /// The next bytes, `None` at the end.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>>;
    fn length(&self) -> BodyLength;
    /// Whether any bytes have been read: from then on the request cannot be sent again (to
    /// another backend, after a failed attempt).
    fn touched(&self) -> bool;
}

/// A body as its protocol delivers it, before the listener's limits.
pub trait RawBody: Send {
    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>>;
    fn length(&self) -> BodyLength;
}

#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max: u64,
    pub min_rate: u64,
    pub grace: Duration,
}

/// Why the request body could not be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    #[error("request body slower than {0} bytes/s")]
    TooSlow(u64),
    #[error("client aborted the request body")]
    Aborted,
    #[error("request body framing is malformed")]
    Malformed,
}

/// The request body on its way to the backend, streamed, with the listener's limits: at most
/// `max` bytes (413), and after `grace`, at least `min_rate` bytes per second on average (408),
/// so a client trickling a body cannot hold a backend slot for ever.
pub struct Limited<B> {
    inner: B,
    received: u64,
    touched: bool,
    ended: bool,
    limits: BodyLimits,
    /// When the body first arrived or was first waited for: the rate is measured from there
    /// (a body that is already complete costs no clock read).
    start: Option<Instant>,
    /// Created on the first wait, so bodies that are already there never arm a timer.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B: RawBody> Limited<B> {
    pub fn new(inner: B, limits: BodyLimits) -> Limited<B> {
        Limited {
            inner,
            received: 0,
            touched: false,
            ended: false,
            limits,
            start: None,
            deadline: None,
        }
    }

    pub fn get_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// Part of the body was not read: the backend answered without it (or failed).
    pub fn is_unfinished(&self) -> bool {
        !self.ended && self.inner.length() != BodyLength::None
    }

    /// When the body falls below the minimum rate, given what has arrived so far.
    fn due(&self, start: Instant) -> tokio::time::Instant {
        let earned = if self.limits.min_rate == 0 {
            Duration::from_secs(u64::MAX / 4)
        } else {
            Duration::from_secs_f64(self.received as f64 / self.limits.min_rate as f64)
        };
        tokio::time::Instant::from_std(start + self.limits.grace + earned)
    }
}

impl<B: RawBody> ClientBody for Limited<B> {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        match self.inner.poll_raw(cx) {
            Poll::Ready(Some(Ok(data))) => {
                let start = *self.start.get_or_insert_with(Instant::now);
                self.touched = true;
                self.received += data.len() as u64;
                if self.received > self.limits.max {
                    return Poll::Ready(Some(Err(BodyError::TooLarge(self.limits.max))));
                }
                let due = self.due(start);
                if let Some(deadline) = self.deadline.as_mut() {
                    deadline.as_mut().reset(due);
                }
                Poll::Ready(Some(Ok(data)))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => {
                if self.limits.min_rate == 0 {
                    return Poll::Pending;
                }
                let start = *self.start.get_or_insert_with(Instant::now);
                let due = self.due(start);
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(BodyError::TooSlow(self.limits.min_rate))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn length(&self) -> BodyLength {
        self.inner.length()
    }

    fn touched(&self) -> bool {
        self.touched
    }
}
