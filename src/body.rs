//! The response body type the proxy hands to hyper: a backend's body streamed through as it
//! arrives, or a short local answer. It carries the request's [`RequestRecord`], which is
//! finished when the body ends or is dropped, so duration, access log and (later) admission
//! slots cover the whole response, not just its head.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::access::RequestRecord;
use crate::upstream::UpstreamBody;

pub struct ProxyBody {
    inner: Inner,
    record: Option<RequestRecord>,
    sent: u64,
    ended: bool,
}

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
        }
    }

    pub fn with_record(mut self, record: RequestRecord) -> ProxyBody {
        self.record = Some(record);
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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
            // hyper stops polling once `is_end_stream` says so, without a final `None`.
            let complete = self.ended || self.is_end_stream();
            record.finish(self.sent, complete);
        }
    }
}

/// The request body on its way to the backend, streamed, with the listener's limits: at most
/// `max` bytes (413), and after `grace`, at least `min_rate` bytes per second on average (408),
/// so a client trickling a body cannot hold a backend slot for ever.
pub struct RequestBody {
    inner: Incoming,
    received: u64,
    limits: BodyLimits,
    start: std::time::Instant,
    /// Created on the first wait, so bodiless requests never arm a timer.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max: u64,
    pub min_rate: u64,
    pub grace: std::time::Duration,
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
}

impl RequestBody {
    pub fn new(inner: Incoming, limits: BodyLimits) -> RequestBody {
        RequestBody {
            inner,
            received: 0,
            limits,
            start: std::time::Instant::now(),
            deadline: None,
        }
    }

    /// When the body falls below the minimum rate, given what has arrived so far.
    fn due(&self) -> tokio::time::Instant {
        let earned = if self.limits.min_rate == 0 {
            std::time::Duration::from_secs(u64::MAX / 4)
        } else {
            std::time::Duration::from_secs_f64(self.received as f64 / self.limits.min_rate as f64)
        };
        tokio::time::Instant::from_std(self.start + self.limits.grace + earned)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.received > this.limits.max {
                        return Poll::Ready(Some(Err(BodyError::TooLarge(this.limits.max))));
                    }
                    let due = this.due();
                    if let Some(deadline) = this.deadline.as_mut() {
                        deadline.as_mut().reset(due);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(BodyError::Aborted))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.limits.min_rate == 0 {
                    return Poll::Pending;
                }
                let due = this.due();
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(BodyError::TooSlow(this.limits.min_rate))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One attempt's view of the request body. If the attempt ends without the body ever being
/// polled (the connection failed, or hyper never needed it), the body goes back into `slot`
/// whole, so the request can be retried on another backend with nothing lost. Once polled, it
/// is spent: part of it may be on the wire.
pub struct AttemptBody {
    inner: Option<RequestBody>,
    polled: bool,
    slot: Arc<Mutex<Option<RequestBody>>>,
}

/// Where an unpolled body comes back to.
#[derive(Clone, Default)]
pub struct Reclaim(Arc<Mutex<Option<RequestBody>>>);

impl Reclaim {
    pub fn attempt(&self, body: RequestBody) -> AttemptBody {
        AttemptBody {
            inner: Some(body),
            polled: false,
            slot: self.0.clone(),
        }
    }

    /// The body back, if the attempt never touched it.
    pub fn take(&self) -> Option<RequestBody> {
        self.0.lock().ok()?.take()
    }
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        this.polled = true;
        match this.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Some(inner) => inner.is_end_stream(),
            None => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), RequestBody::size_hint)
    }
}

impl Drop for AttemptBody {
    fn drop(&mut self) {
        if !self.polled {
            if let (Some(body), Ok(mut slot)) = (self.inner.take(), self.slot.lock()) {
                *slot = Some(body);
            }
        }
    }
}
