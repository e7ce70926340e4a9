//! The response body type the proxy hands to hyper: a backend's body streamed through as it
//! arrives, or a short local answer. It carries the request's [`RequestRecord`], which is
//! finished when the body ends or is dropped, so duration, access log and (later) admission
//! slots cover the whole response, not just its head.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::access::RequestRecord;

pub struct ProxyBody {
    inner: Inner,
    record: Option<RequestRecord>,
    sent: u64,
    ended: bool,
}

enum Inner {
    Upstream(Incoming),
    Local(Option<Bytes>),
}

impl ProxyBody {
    pub fn upstream(body: Incoming) -> ProxyBody {
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
