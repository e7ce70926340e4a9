//! HTTP/2 streams served on the h2 crate directly: a client's request body, and a stream's
//! answer sent as the client's flow-control window lets it.
//!
//! hyper's HTTP/2 server is a layer over h2 that the proxy does not need. Its answers are
//! checked for connection-specific fields the proxy has already removed (h2 checks them again
//! besides), each stream's future goes through an executor, and each body through a wrapper of
//! its own. That layer was about 2,000 instructions an HTTP/2 request (callgrind, BENCHMARKS.md).
//! What it gave besides is here: a client's reset cancels its request, a `Date` and a local
//! answer's `Content-Length` are added (`Reply::into_response`), and the settings are hyper's
//! defaults where the listener sets none (`builder`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, Response};
use http_body::{Body, Frame};

use crate::body::{BodyError, BodyLength, ClientBody, ProxyBody, RawBody, LINGER, LINGER_BYTES};
use crate::config::Limits;
use crate::h2_stall::{Progress, Watched};

/// What hyper's server set beyond h2's defaults, kept: a 1 MiB window for each stream and for
/// the connection (the spec's 64 KiB holds a fast client's upload to one window a round trip).
const WINDOW: u32 = 1024 * 1024;

/// The HTTP/2 settings of one listener. A header list larger than `max_header_size` is refused
/// by h2 (431 to that stream); rapid-reset floods (CVE-2023-44487) are cut by the reset limits.
/// (HTTP/1.1's limits are applied by `http1::server`.)
pub fn builder(limits: &Limits) -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_size as u32)
        // What a stream holds for a client that does not take it (a slow reader): hyper's
        // 400 KB default times 128 streams is 50 MB a connection.
        .max_send_buffer_size(limits.h2_stream_buffer)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(Some(1024));
    builder
}

/// A client's request body: its DATA frames in order, each credited back to the client's
/// window as it is taken (the listener's body limits bound what is read ahead). Trailers are
/// dropped: nothing the backend asked for; see http1/chunked.rs.
pub struct RequestBody {
    recv: RecvStream,
    length: BodyLength,
}

impl RequestBody {
    pub fn new(recv: RecvStream, fields: &HeaderMap) -> RequestBody {
        let length = if recv.is_end_stream() {
            BodyLength::None
        } else {
            match declared_length(fields) {
                Some(0) => BodyLength::None,
                Some(n) => BodyLength::Known(n),
                None => BodyLength::Unknown,
            }
        };
        RequestBody { recv, length }
    }
}

/// The `Content-Length` a request declares, if every one it sends says the same number. h2
/// has refused the stream if the first is not a number, and holds the DATA to it.
fn declared_length(fields: &HeaderMap) -> Option<u64> {
    let mut values = fields
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .map(|v| std::str::from_utf8(v.as_bytes()).ok()?.parse::<u64>().ok());
    let first = values.next()??;
    values.all(|v| v == Some(first)).then_some(first)
}

impl RawBody for RequestBody {
    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            return match ready!(self.recv.poll_data(cx)) {
                None => Poll::Ready(None),
                // A reset, whatever its reason, ends the body short of what it declared: the
                // backend must not take it as whole.
                Some(Err(_)) => Poll::Ready(Some(Err(BodyError::Aborted))),
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    if data.is_empty() {
                        continue;
                    }
                    Poll::Ready(Some(Ok(data)))
                }
            };
        }
    }

    fn length(&self) -> BodyLength {
        self.length
    }
}

/// Why a stream ended before its answer was sent whole. Only logged (at debug): the client
/// sees h2's reset.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("the client reset the stream ({0:?})")]
    Reset(Reason),
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    #[error("the response body failed: {0}")]
    Body(String),
    #[error("the stream closed before the response was sent")]
    Closed,
}

pin_project_lite::pin_project! {
    /// One stream: `answer` (the handler's future), raced against the client's reset, then its
    /// response sent, the body watched for stalls (`h2_stall`), then what is left of the
    /// request's body read and dropped (`Unread`). Written out rather than an `async fn`: the
    /// handler's future is kilobytes, and an `async fn` moves a future it is given once into
    /// its state and again where it awaits it (two copies a request).
    pub struct Respond<F> {
        #[pin]
        answer: F,
        reply: SendResponse<Bytes>,
        progress: Option<Arc<Progress>>,
        body: Option<Sending>,
        // Boxed: it is rare, and a stream that has none then pays only a null check to drop it.
        unread: Option<Box<Unread>>,
        sent: bool,
    }
}

/// A response body under way, and the stream it goes out on.
type Sending = (Watched<ProxyBody>, SendStream<Bytes>);

impl<F: Future<Output = Response<ProxyBody>>> Respond<F> {
    pub fn new(answer: F, reply: SendResponse<Bytes>, progress: Arc<Progress>) -> Respond<F> {
        Respond {
            answer,
            reply,
            progress: Some(progress),
            body: None,
            unread: None,
            sent: false,
        }
    }
}

impl<F: Future<Output = Response<ProxyBody>>> Future for Respond<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if !*this.sent {
            let result = match this.body {
                Some((body, stream)) => ready!(poll_body(Pin::new(body), stream, cx, false)),
                None => match ready!(poll_answer(this.answer.as_mut(), this.reply, cx)) {
                    Err(e) => Err(e),
                    Ok(mut response) => {
                        // Kept here from now on: it outlives the response's body.
                        *this.unread = response.body_mut().take_held().and_then(Unread::new);
                        let progress = this.progress.take().unwrap_or_default();
                        match send_head(response, progress, this.reply) {
                            Ok(Some(sending)) => {
                                let (body, stream) = this.body.insert(sending);
                                ready!(poll_body(Pin::new(body), stream, cx, true))
                            }
                            Ok(None) => Ok(()),
                            Err(e) => Err(e),
                        }
                    }
                },
            };
            *this.sent = true;
            if let Err(e) = result {
                tracing::debug!(error = %e, "an HTTP/2 stream ended early");
                return Poll::Ready(());
            }
        }
        match this.unread {
            Some(unread) => unread.poll_drop(cx),
            None => Poll::Ready(()),
        }
    }
}

/// A request body its answer came before: a refused upload, the proxy's own answer to a
/// denied path, a backend's 401. Kept open while the answer goes out, since a reset would
/// lose the answer, then read and dropped for at most `LINGER` and `LINGER_BYTES`, so that
/// the stream ends with the client's last DATA frame rather than with the RST_STREAM
/// (NO_ERROR) that RFC 9113 §8.1 allows. libcurl before 8 (Debian 12's curl) takes that reset
/// for an error and loses the answer, even to a request of a few bytes whose DATA frame came
/// just after its head; nginx reads such bodies too. A body that declared more is reset at
/// once: reading it all would cost more than it saves.
struct Unread {
    body: Box<dyn ClientBody + Sync>,
    dropped: u64,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Unread {
    /// `None` for a body that declared more than would be read: dropped (reset) at once.
    fn new(body: Box<dyn ClientBody + Sync>) -> Option<Box<Unread>> {
        if matches!(body.length(), BodyLength::Known(n) if n > LINGER_BYTES) {
            return None;
        }
        Some(Box::new(Unread {
            body,
            dropped: 0,
            deadline: None,
        }))
    }

    /// `Ready` when the body is over, failed, or went past the bounds.
    fn poll_drop(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Set once the answer is out: the bounds count from there.
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER)));
        loop {
            match self.body.poll_chunk(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    self.dropped += data.len() as u64;
                    if self.dropped > LINGER_BYTES {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                Poll::Pending => return deadline.as_mut().poll(cx),
            }
        }
    }
}

/// The handler's answer, unless the client resets the stream first: one that does no longer
/// wants it, and dropping the handler's future gives its backend connection (or its place in
/// a queue) back.
fn poll_answer<F: Future>(
    answer: Pin<&mut F>,
    reply: &mut SendResponse<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, StreamError>> {
    if let Poll::Ready(response) = answer.poll(cx) {
        return Poll::Ready(Ok(response));
    }
    match ready!(reply.poll_reset(cx)) {
        Ok(reason) => Poll::Ready(Err(StreamError::Reset(reason))),
        Err(e) => Poll::Ready(Err(e.into())),
    }
}

/// Sends the response's head; what is left to send of its body, if any.
fn send_head(
    response: Response<ProxyBody>,
    progress: Arc<Progress>,
    reply: &mut SendResponse<Bytes>,
) -> Result<Option<Sending>, StreamError> {
    let (parts, body) = response.into_parts();
    let body = Watched::new(body, progress);
    let end = body.is_end_stream();
    let stream = reply
        .send_response(Response::from_parts(parts, ()), end)
        .inspect_err(|_| reply.send_reset(Reason::INTERNAL_ERROR))?;
    Ok((!end).then_some((body, stream)))
}

/// Moves `body` onto `stream` a frame at a time, taking the next frame only once the client's
/// window (and the stream's send buffer) has room, as hyper's `PipeToSendStream` did.
///
/// With `first_try`, the body is asked first, before h2 is asked for room: a body that came
/// with its head (most do) goes out in the same poll as the head, and asking h2 for room and
/// watching for a reset cost more than sending it (about 500 instructions a request,
/// callgrind). What that frame can add to the stream's send buffer is one read from the
/// backend.
fn poll_body<B>(
    mut body: Pin<&mut B>,
    stream: &mut SendStream<Bytes>,
    cx: &mut Context<'_>,
    first_try: bool,
) -> Poll<Result<(), StreamError>>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut ask = !first_try;
    loop {
        if ask {
            // A byte asks h2 for room; the frame that comes may be larger, and h2 holds it
            // until the window lets it go.
            stream.reserve_capacity(1);
            if stream.capacity() == 0 {
                loop {
                    match ready!(stream.poll_capacity(cx)) {
                        Some(Ok(0)) => {}
                        Some(Ok(_)) => break,
                        Some(Err(e)) => return Poll::Ready(Err(e.into())),
                        None => return Poll::Ready(Err(StreamError::Closed)),
                    }
                }
            } else if let Poll::Ready(reason) = stream.poll_reset(cx)? {
                return Poll::Ready(Err(StreamError::Reset(reason)));
            }
        }
        let polled = match body.as_mut().poll_frame(cx) {
            Poll::Ready(polled) => polled,
            Poll::Pending if ask => return Poll::Pending,
            // Not there yet: wait for it as for any later frame, with a reset watched for.
            Poll::Pending => {
                ask = true;
                continue;
            }
        };
        ask = true;
        if send_frame(polled, body.is_end_stream(), stream)? {
            return Poll::Ready(Ok(()));
        }
    }
}

/// Sends on what the body gave (`end`: it has no more); whether the stream is done.
fn send_frame<E: std::fmt::Display>(
    polled: Option<Result<Frame<Bytes>, E>>,
    end: bool,
    stream: &mut SendStream<Bytes>,
) -> Result<bool, StreamError> {
    match polled {
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => {
                stream.send_data(data, end)?;
                Ok(end)
            }
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => {
                    stream.reserve_capacity(0);
                    stream.send_trailers(trailers)?;
                    Ok(true)
                }
                Err(_) => Ok(false),
            },
        },
        Some(Err(e)) => {
            stream.send_reset(Reason::INTERNAL_ERROR);
            Err(StreamError::Body(e.to_string()))
        }
        None => {
            stream.reserve_capacity(0);
            stream.send_data(Bytes::new(), true)?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from_static(v),
            );
        }
        map
    }

    #[test]
    fn a_length_counts_only_when_every_declaration_agrees() {
        assert_eq!(declared_length(&fields(&[])), None);
        assert_eq!(declared_length(&fields(&["12"])), Some(12));
        assert_eq!(declared_length(&fields(&["12", "12"])), Some(12));
        assert_eq!(declared_length(&fields(&["12", "13"])), None);
        assert_eq!(declared_length(&fields(&["12", "x"])), None);
        assert_eq!(declared_length(&fields(&["-1"])), None);
    }
}
