//! One HTTP/1.1 client connection, request after request, in one task: read a head, hand it to
//! the proxy with the body still on the connection, write the answer as the backend sends it.
//!
//! Timeouts, all on one timer per connection, which is pushed later as the connection moves on
//! (a later deadline is a store in Tokio's timer wheel; between requests, where a deadline
//! follows each one, the timer is left to fire early and set again then: `read_head`):
//! - `idle` between requests: the connection is closed without a word;
//! - `request_header` from the first byte of a head to its end: 408, then closed;
//! - `idle` again while a response is written and the client reads nothing of it: closed.
//!
//! A request without a body is abandoned when its client goes away (the backend slot or queue
//! place it held is freed at once), as nginx does. When the connection is closed with bytes of
//! the client's still unread (an error, a body not read), it is closed the way nginx's
//! lingering close does: the write side first, then what the client still sends is read and
//! dropped for a moment, so the client reads the answer instead of a reset.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Method, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::chunked::{chunk_header, ChunkedDecoder, CHUNK_END, LAST_CHUNK};
use super::decode::{Decoder, ReadError};
use super::encode::{self, Framing};
use super::head::{self, HeadError, HeadLimits, RequestBody, RequestHead};
use super::{Inbound, Outgoing, PARK_AFTER};
use crate::body::{
    BodyError, BodyLength, ClientBody, Limited, ProxyBody, RawBody, LINGER, LINGER_BYTES,
};
use crate::connection::ConnContext;
use crate::current_proxy::{ConnProxy, CurrentProxy};
use crate::error::local_response;
use crate::prefixed::Prefixed;
use crate::reply::{Fields, Reply};

/// The HTTP/2 connection preface: a client speaking HTTP/2 with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A request body the answer came before is read and dropped, keeping the connection, when at
/// most this much of it is left (as nginx discards one); a larger rest closes the connection.
/// A chunked rest, whose size is not known ahead, is dropped until this much has come.
const DISCARD_MAX: u64 = 64 * 1024;
/// Queued response bytes are written out once they reach this much.
const WRITE_BATCH: usize = 64 * 1024;

/// How a connection's HTTP/1.1 service ended.
pub enum Ended<I> {
    Closed,
    /// The client opened with the HTTP/2 preface: serve it as HTTP/2 (the preface included).
    Http2(Prefixed<I>),
}

/// The client connection and what has been read from it.
struct Client<I> {
    io: I,
    inbound: Inbound,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Client<I> {
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.inbound.poll_fill(Pin::new(&mut self.io), cx)
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>, out: &mut Outgoing) -> Poll<io::Result<()>> {
        out.poll_write_to(Pin::new(&mut self.io), cx)
    }

    async fn write_all(&mut self, out: &mut Outgoing) -> io::Result<()> {
        poll_fn(|cx| {
            std::task::ready!(self.poll_write_out(cx, out))?;
            Pin::new(&mut self.io).poll_flush(cx)
        })
        .await
    }
}

/// What a connection keeps between requests.
struct Connection<'a, I> {
    client: Client<I>,
    conn: &'a Arc<ConnContext>,
    proxy: ConnProxy<'a>,
    limits: HeadLimits,
    /// One timer for the connection's deadlines, pushed along as it goes.
    timer: Pin<Box<Sleep>>,
    /// Responses on their way to the client (reused from one to the next).
    out: Outgoing,
    retire: Pin<Box<WaitForCancellationFutureOwned>>,
    retire_token: &'a CancellationToken,
    retiring: bool,
    served: u64,
}

pub async fn serve<I>(
    io: I,
    conn: &Arc<ConnContext>,
    proxy: &CurrentProxy,
    retire: &CancellationToken,
) -> Ended<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = &conn.listener.limits;
    let mut c = Connection {
        client: Client {
            io,
            inbound: Inbound::default(),
        },
        conn,
        proxy: ConnProxy::new(proxy),
        limits: HeadLimits {
            max_size: limits.max_header_size,
            max_headers: limits.max_headers,
        },
        timer: Box::pin(tokio::time::sleep(conn.listener.timeouts.idle)),
        out: Outgoing::default(),
        retire: Box::pin(retire.clone().cancelled_owned()),
        retire_token: retire,
        retiring: retire.is_cancelled(),
        served: 0,
    };
    loop {
        let (head, arrived) = match c.read_head().await {
            Ok(Next::Head(head, arrived)) => (head, arrived),
            Ok(Next::Http2) => {
                let Client { io, inbound } = c.client;
                return Ended::Http2(Prefixed::new(inbound.bytes.freeze(), io));
            }
            Ok(Next::Close) => {
                let _ = shutdown(&mut c.client.io).await;
                return Ended::Closed;
            }
            Err(refused) => {
                // Boxed, as the other rare paths: inline, their state would enlarge every
                // connection's task for its whole life.
                Box::pin(c.refuse(refused)).await;
                return Ended::Closed;
            }
        };
        c.served += 1;
        // Boxed, once per request: the exchange's state is kilobytes, and inline it would stay
        // in the connection's task while the connection idles. Built in its box, not copied.
        match crate::boxed::pinned(|| c.exchange(head, arrived)).await {
            Ok(true) => {}
            Ok(false) => return Ended::Closed,
            Err(e) => {
                tracing::debug!(listener = %conn.listener.name, peer = %conn.peer, error = %e, "client connection failed");
                return Ended::Closed;
            }
        }
    }
}

// Not boxed: it is returned once per request and matched at once.
#[allow(clippy::large_enum_variant)]
enum Next {
    /// A head, and when its first bytes were there.
    Head(RequestHead, std::time::Instant),
    Http2,
    Close,
}

/// A head that gets an answer and a close rather than a request.
enum Refused {
    Head(HeadError),
    Timeout,
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send> Connection<'_, I> {
    /// The next request head, or why the connection ends.
    async fn read_head(&mut self) -> Result<Next, Refused> {
        let timeouts = &self.conn.listener.timeouts;
        // When the wait for this head began, and when its first byte came.
        let mut idle_from = Instant::now();
        let mut head_from = (!self.client.inbound.is_empty()).then_some(idle_from);
        let mut parked = false;
        loop {
            if !self.client.inbound.is_empty() {
                if self.served == 0 && is_h2_preface(&self.client.inbound.bytes) {
                    if self.client.inbound.bytes.len() >= H2_PREFACE.len() {
                        return Ok(Next::Http2);
                    }
                } else {
                    let inbound = &mut self.client.inbound;
                    match head::parse_request(&mut inbound.bytes, &mut inbound.scan, &self.limits) {
                        Ok(Some(head)) => {
                            let arrived = head_from.unwrap_or(idle_from).into_std();
                            return Ok(Next::Head(head, arrived));
                        }
                        Ok(None) => {}
                        Err(e) => return Err(Refused::Head(e)),
                    }
                }
            }
            // The usual case: the next request is already there.
            if let Poll::Ready(read) = poll_fn(|cx| Poll::Ready(self.client.poll_fill(cx))).await {
                match read {
                    Ok(0) | Err(_) => return Ok(Next::Close),
                    Ok(_) => {
                        head_from.get_or_insert_with(Instant::now);
                        continue;
                    }
                }
            }
            let deadline = match head_from {
                Some(start) => start + timeouts.request_header,
                None if self.retiring => idle_from + timeouts.close_grace,
                None if !parked => idle_from + PARK_AFTER.min(timeouts.idle),
                None => idle_from + timeouts.idle,
            };
            // Moved only to fire sooner, or once it has fired: a timer set by an earlier wait
            // (200 ms after the last request, say) fires first, and the loop comes back here
            // and sets it to this deadline. `Sleep::reset` at each wait converted the deadline
            // to the timer wheel's ticks, about 120 instructions a request.
            if self.timer.deadline() > deadline || self.timer.is_elapsed() {
                self.timer.as_mut().reset(deadline);
            }
            tokio::select! {
                biased;
                read = poll_fn(|cx| self.client.poll_fill(cx)) => match read {
                    Ok(0) | Err(_) => return Ok(Next::Close),
                    Ok(_) => {
                        head_from.get_or_insert_with(Instant::now);
                    }
                },
                () = self.timer.as_mut() => match head_from {
                    // Set by an earlier wait: set again, to this one's deadline.
                    _ if self.timer.deadline() < deadline => {}
                    Some(_) => return Err(Refused::Timeout),
                    // Quiet for a while: wait on without buffers (see PARK_AFTER).
                    None if !parked && !self.retiring => {
                        self.client.inbound.release();
                        self.out.release();
                        self.proxy.release();
                        parked = true;
                    }
                    None => return Ok(Next::Close),
                },
                () = self.retire.as_mut(), if !self.retiring => {
                    self.retiring = true;
                    // Idle, it waits a moment from now for one more request before closing:
                    // the client may have sent one as the reload or shutdown happened, and
                    // closing under it would reset it unanswered. That request is answered
                    // with `Connection: close`, as is a head already under way.
                    if head_from.is_none() {
                        idle_from = Instant::now();
                    }
                }
            }
        }
    }

    /// Answers a refused head and closes.
    async fn refuse(&mut self, refused: Refused) {
        let (status, kind) = match refused {
            Refused::Head(e) => {
                tracing::debug!(listener = %self.conn.listener.name, peer = %self.conn.peer, error = %e, "request head refused");
                (e.status(), "bad_request_head")
            }
            Refused::Timeout => (StatusCode::REQUEST_TIMEOUT, "request_header_timeout"),
        };
        self.conn.listener.metrics.connection_error(kind);
        let mut resp = local_response(status, "");
        self.proxy.get().error_pages().dress(&mut resp);
        let (parts, mut body) = resp.into_parts();
        let len = body.remaining().unwrap_or(0);
        let out = &mut self.out;
        let framing = Framing::Length(len);
        encode::response_head(
            parts.status,
            encode::map_fields(&parts.headers),
            false,
            framing,
            Some("close"),
            out.head_buf(),
        );
        out.queue_head();
        // A local answer: its bytes are there at once.
        if let Poll::Ready(Some(Ok(data))) = poll_fn(|cx| Poll::Ready(body.poll_data(cx))).await {
            out.push(data);
        }
        let write = self.client.write_all(out);
        if tokio::time::timeout(LINGER, write).await.is_ok() {
            linger(&mut self.client).await;
        }
    }

    /// One request and its answer. `Ok(true)`: the connection takes another request.
    async fn exchange(
        &mut self,
        head: RequestHead,
        arrived: std::time::Instant,
    ) -> io::Result<bool> {
        let RequestHead {
            mut parts,
            body: framing,
            keep_alive,
            expect_continue,
            close_after,
        } = head;
        let method = parts.method.clone();
        let version = parts.version;
        let upgrade = version == Version::HTTP_11;
        // Whether the request's body was read to its end; a bodiless one was. The answer is
        // taken as it comes, not paired with this: each move of a `Reply` copies 304 bytes.
        let mut body_finished = true;
        // The rest of a body the answer came before, small enough to read and drop after it.
        let mut leftover = None;
        let resp = if framing == RequestBody::None {
            let mut none = NoBody;
            // Pinned here and lent, not moved into `watch_client`: a future taken by value is
            // stored twice in the caller's state (as the argument and as the pinned local),
            // which made every request's boxed exchange 2.1 KB larger.
            let handling = std::pin::pin!(self
                .proxy
                .get()
                .handle(&mut parts, &mut none, self.conn, upgrade, arrived));
            match watch_client(handling, &mut self.client, &self.limits).await {
                Some(resp) => resp,
                None => return Ok(false),
            }
        } else {
            let decoder = match framing {
                RequestBody::Length(n) => Decoder::Length(n),
                _ => Decoder::Chunked(ChunkedDecoder::new()),
            };
            let raw = H1Body {
                client: &mut self.client,
                decoder,
                length: match framing {
                    RequestBody::Length(n) => BodyLength::Known(n),
                    _ => BodyLength::Unknown,
                },
                send_continue: expect_continue,
                continue_out: None,
            };
            let mut body = Limited::new(raw, self.conn.listener.body_limits());
            let resp = self
                .proxy
                .get()
                .handle(&mut parts, &mut body, self.conn, upgrade, arrived)
                .await;
            let raw = body.get_mut();
            body_finished = raw.decoder.is_done();
            // Not while a go-ahead is owed: that client may never send its body.
            let discardable = match &raw.decoder {
                Decoder::Length(n) => *n <= DISCARD_MAX,
                Decoder::Chunked(_) => true,
                Decoder::Close | Decoder::Done | Decoder::Failed => false,
            };
            if discardable && !raw.send_continue {
                leftover = Some(std::mem::replace(&mut raw.decoder, Decoder::Done));
            }
            resp
        };

        let Reply {
            status,
            fields,
            mut body,
        } = resp;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Box::pin(self.switch(status, fields, body))
                .await
                .map(|()| false);
        }
        self.retiring |= self.retire_token.is_cancelled();
        let retiring = self.retiring;
        let mut keep =
            keep_alive && !close_after && (body_finished || leftover.is_some()) && !retiring;
        let bodiless = method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let framing = if bodiless {
            match (&fields, body.remaining()) {
                // The proxy's own answer to HEAD says the length its text would have, as over
                // HTTP/2; a backend's says its own among its fields.
                (Fields::Local(_), Some(n)) if n > 0 && method == Method::HEAD => {
                    Framing::Length(n)
                }
                _ => Framing::Described,
            }
        } else {
            match body.remaining() {
                Some(n) => Framing::Length(n),
                None if version == Version::HTTP_11 => Framing::Chunked,
                None => {
                    keep = false;
                    Framing::Close
                }
            }
        };
        let connection = match (keep, version) {
            (false, _) => Some("close"),
            (true, Version::HTTP_10) => Some("keep-alive"),
            (true, _) => None,
        };
        encode::response_head(
            status,
            fields.iter(),
            fields.contains(&header::DATE),
            framing,
            connection,
            self.out.head_buf(),
        );
        self.out.queue_head();
        let sent = self.respond(&mut body, framing, bodiless).await;
        drop(body);
        // The rest of a body the answer came before is read now; when it does not come, the
        // connection closes like any other with the client's bytes unread.
        if let (Ok(()), true, Some(rest)) = (&sent, keep, leftover) {
            keep = discard(&mut self.client, rest).await;
        }
        match sent {
            Ok(()) if keep => Ok(true),
            Ok(()) => {
                if body_finished {
                    let _ = shutdown(&mut self.client.io).await;
                } else {
                    linger(&mut self.client).await;
                }
                Ok(false)
            }
            Err(Respond::Backend(e)) => {
                // The head is out: all the client can be told is that the body ends early.
                tracing::debug!(listener = %self.conn.listener.name, peer = %self.conn.peer, error = %e, "backend body failed mid-response");
                Ok(false)
            }
            Err(Respond::Client(e)) => Err(e),
            Err(Respond::Stalled) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Writes the head in `out` and the body after it. Bytes the body already has go out with
    /// the head in one write. Gives up when nothing moves for the idle timeout, either way: a
    /// client that reads nothing, or a backend that sends nothing more.
    async fn respond(
        &mut self,
        body: &mut ProxyBody,
        framing: Framing,
        bodiless: bool,
    ) -> Result<(), Respond> {
        let idle = self.conn.listener.timeouts.idle;
        let mut done = bodiless || body.remaining() == Some(0);
        // The backend's body failed: what was read of it still goes out, then the close.
        let mut failed: Option<ReadError> = None;
        // Set when something moved since the timer was last pushed along.
        let mut moved = true;
        let client = &mut self.client;
        let timer = &mut self.timer;
        let out = &mut self.out;
        poll_fn(|cx| loop {
            let mut body_pending = false;
            while !done && out.len() < WRITE_BATCH {
                match body.poll_data(cx) {
                    Poll::Ready(Some(Ok(data))) => {
                        queue(out, data, framing);
                        moved = true;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        failed = Some(e);
                        done = true;
                    }
                    Poll::Ready(None) => {
                        if framing == Framing::Chunked {
                            out.push(Bytes::from_static(LAST_CHUNK));
                        }
                        done = true;
                    }
                    Poll::Pending => {
                        body_pending = true;
                        break;
                    }
                }
            }
            let wrote = if out.is_empty() {
                Poll::Ready(Ok(()))
            } else {
                let before = out.len();
                let wrote = client.poll_write_out(cx, out);
                moved |= out.len() != before;
                wrote
            };
            match wrote {
                Poll::Ready(Ok(())) if !done && !body_pending => continue,
                Poll::Ready(Ok(())) => match Pin::new(&mut client.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) if done => {
                        return Poll::Ready(match failed.take() {
                            Some(e) => Err(Respond::Backend(e)),
                            None => Ok(()),
                        })
                    }
                    Poll::Ready(Ok(())) | Poll::Pending => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Respond::Client(e))),
                },
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Respond::Client(e))),
                Poll::Pending => {}
            }
            // Waiting on the client or the backend.
            if moved {
                moved = false;
                timer.as_mut().reset(Instant::now() + idle);
            }
            return match timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Respond::Stalled)),
                Poll::Pending => Poll::Pending,
            };
        })
        .await
    }

    /// The backend switched protocols: the 101 goes to the client, then bytes flow both ways
    /// until either side closes.
    async fn switch(
        &mut self,
        status: StatusCode,
        fields: Fields,
        body: ProxyBody,
    ) -> io::Result<()> {
        let Some((upstream, upstream_rest)) = body.into_upgraded() else {
            return Ok(());
        };
        encode::response_head(
            status,
            fields.iter(),
            fields.contains(&header::DATE),
            Framing::None,
            None,
            self.out.head_buf(),
        );
        self.out.queue_head();
        self.client.write_all(&mut self.out).await?;
        let client_rest = std::mem::take(&mut self.client.inbound.bytes).freeze();
        let mut upstream = Prefixed::new(upstream_rest.freeze(), upstream);
        let client = &mut self.client.io;
        let mut client = Prefixed::new(client_rest, client);
        let idle = self.conn.listener.timeouts.tunnel;
        match crate::tunnel::relay(&mut client, &mut upstream, idle).await {
            Ok(crate::tunnel::Ended::Closed { .. }) => {}
            Ok(crate::tunnel::Ended::Idle) => {
                tracing::debug!(idle = ?idle, "upgraded connection closed: nothing sent either way");
            }
            Err(e) => tracing::debug!(error = %e, "upgraded connection ended with an error"),
        }
        Ok(())
    }
}

enum Respond {
    Backend(ReadError),
    Client(io::Error),
    Stalled,
}

fn queue(out: &mut Outgoing, data: Bytes, framing: Framing) {
    if framing == Framing::Chunked {
        out.push(chunk_header(data.len()));
        out.push(data);
        out.push(Bytes::from_static(CHUNK_END));
    } else {
        out.push(data);
    }
}

/// Runs a bodiless request's exchange, watching its client: `None` if the client went away
/// first. Pipelined bytes that arrive meanwhile are kept for the next request.
async fn watch_client<F, I>(
    mut handling: Pin<&mut F>,
    client: &mut Client<I>,
    limits: &HeadLimits,
) -> Option<F::Output>
where
    F: std::future::Future,
    I: AsyncRead + AsyncWrite + Unpin,
{
    poll_fn(|cx| {
        if let Poll::Ready(resp) = handling.as_mut().poll(cx) {
            return Poll::Ready(Some(resp));
        }
        // Past a head's worth of pipelined bytes, stop reading: the client waits its turn.
        while client.inbound.bytes.len() <= limits.max_size {
            match client.poll_fill(cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => break,
            }
        }
        Poll::Pending
    })
    .await
}

fn is_h2_preface(bytes: &[u8]) -> bool {
    let n = bytes.len().min(H2_PREFACE.len());
    bytes[..n] == H2_PREFACE[..n]
}

/// Closes the write side (a TLS close_notify first), bounded in time.
async fn shutdown<I: AsyncWrite + Unpin>(io: &mut I) -> io::Result<()> {
    match tokio::time::timeout(LINGER, io.shutdown()).await {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Closes the write side, then reads and drops what the client still sends for a moment, so
/// closing with its bytes unread does not reset the connection under the answer.
async fn linger<I: AsyncRead + AsyncWrite + Unpin>(client: &mut Client<I>) {
    if shutdown(&mut client.io).await.is_err() {
        return;
    }
    let drain = async {
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            match poll_fn(|cx| client.poll_fill(cx)).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    dropped += n as u64;
                    client.inbound.bytes.clear();
                }
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Reads and drops the rest of a request body (`rest` decodes it), so that the connection
/// takes the next request. `false` when the client did not send it within `LINGER`, sent more
/// than `DISCARD_MAX` of it, or broke off: the connection is then to be closed.
async fn discard<I: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<I>,
    mut rest: Decoder,
) -> bool {
    let read = async {
        let mut dropped = 0;
        loop {
            let next =
                poll_fn(|cx| rest.poll_next(&mut client.inbound, Pin::new(&mut client.io), cx));
            match next.await {
                Some(Ok(data)) => {
                    dropped += data.len() as u64;
                    if dropped > DISCARD_MAX {
                        return false;
                    }
                }
                Some(Err(_)) => return false,
                None => return true,
            }
        }
    };
    tokio::time::timeout(LINGER, read).await.unwrap_or(false)
}

/// A request without a body.
struct NoBody;

impl ClientBody for NoBody {
    fn poll_chunk(&mut self, _: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        Poll::Ready(None)
    }

    fn length(&self) -> BodyLength {
        BodyLength::None
    }

    fn touched(&self) -> bool {
        false
    }
}

/// A request body read off the client connection as the backend takes it.
struct H1Body<'a, I> {
    client: &'a mut Client<I>,
    decoder: Decoder,
    length: BodyLength,
    /// `Expect: 100-continue`: the go-ahead is sent when the body is first asked for, that is,
    /// once a backend has been chosen and connected to.
    send_continue: bool,
    continue_out: Option<Outgoing>,
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send> RawBody for H1Body<'_, I> {
    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        if self.send_continue {
            let out = self.continue_out.get_or_insert_with(|| {
                let mut out = Outgoing::default();
                out.push(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"));
                out
            });
            match self.client.poll_write_out(cx, out) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Some(Err(BodyError::Aborted))),
                Poll::Pending => return Poll::Pending,
            }
            if let Poll::Ready(Err(_)) = Pin::new(&mut self.client.io).poll_flush(cx) {
                return Poll::Ready(Some(Err(BodyError::Aborted)));
            }
            self.send_continue = false;
            self.continue_out = None;
        }
        let client = &mut *self.client;
        match self
            .decoder
            .poll_next(&mut client.inbound, Pin::new(&mut client.io), cx)
        {
            Poll::Ready(Some(Err(ReadError::Framing(_)))) => {
                Poll::Ready(Some(Err(BodyError::Malformed)))
            }
            Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(BodyError::Aborted))),
            Poll::Ready(Some(Ok(data))) => Poll::Ready(Some(Ok(data))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn length(&self) -> BodyLength {
        self.length
    }
}
