//! One request sent to a backend and its response head read, on a connection the request owns.
//!
//! The request head is written with the first body bytes when they are already there; the body
//! follows as the client sends it, re-framed (Content-Length when the client declared one,
//! chunked otherwise). A backend may answer before it has read the whole body (a 413, a 401):
//! the answer is read as soon as it starts, the rest of the body is not sent, and the
//! connection is not reused.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, StatusCode};

use super::conn::UpstreamConn;
use super::response::{ReturnTo, UpstreamBody};
use super::{io_failure, UpstreamClient, UpstreamError};
use crate::backends::Backend;
use crate::body::{BodyError, BodyLength, ClientBody};
use crate::headers::Added;
use crate::http1::chunked::{chunk_header, CHUNK_END, LAST_CHUNK};
use crate::http1::encode::{self, Framing};
use crate::http1::fields::RawFields;
use crate::http1::head::{self, HeadLimits, ResponseHead};
use crate::http1::Outgoing;

/// What a response head from a backend may be: Keycloak's are a few KiB with their cookies.
const RESPONSE_HEAD: HeadLimits = HeadLimits {
    max_size: 64 * 1024,
    max_headers: 256,
};
// Every response head parses in header slots on the stack.
const _: () = assert!(RESPONSE_HEAD.max_headers <= head::STACK_HEADERS);

/// A backend's answer: its status and fields as sent, and the body still on the connection.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub fields: RawFields,
    pub body: UpstreamBody,
}

/// How sending the request ended.
enum Sent {
    /// Every byte, body included, was written.
    Complete,
    /// The backend started answering before the body was all sent.
    Early,
}

enum SendError {
    /// The connection failed under the write (or the backend closed it).
    Io(std::io::Error),
    Body(BodyError),
}

impl UpstreamClient {
    /// Sends a request (origin-form target and Host already set in `req`, `extra` fields
    /// written after its own) to `backend` and waits for the response head, at most the
    /// response timeout, connecting included. The body is read from `body` as it is sent; if
    /// `body` has not been touched when this fails, the request can be sent again elsewhere.
    pub async fn send(
        &self,
        backend: &Arc<Backend>,
        req: &http::request::Parts,
        added: Added<'_>,
        body: &mut dyn ClientBody,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let framing = match body.length() {
            BodyLength::Known(n) => Framing::Length(n),
            BodyLength::Unknown => Framing::Chunked,
            // Servers may insist on a length for these (411) even when it is zero.
            BodyLength::None if expects_body(&req.method) => Framing::Length(0),
            BodyLength::None => Framing::None,
        };
        let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let timeout = self.response_timeout;
        loop {
            let (mut conn, fresh) = match backend.pool.take(self.pool.idle_timeout) {
                Some(conn) => (conn, false),
                // Boxed: connecting (TLS state included) is the rare path, and inline it
                // would make every request's future kilobytes larger, copied as it moves.
                None => (Box::pin(self.open(backend)).await?, true),
            };
            // The connection is there: from now on the response timeout runs. (Connecting
            // is bounded by the connect timeout.)
            conn.arm(tokio::time::Instant::now() + timeout);
            let head = conn.out.head_buf();
            encode::request_head(
                &req.method,
                target,
                &req.headers,
                added.fields(),
                framing,
                head,
            );
            conn.out.queue_head();
            let mut sending = Sending {
                framing,
                left: match framing {
                    Framing::Length(n) => n,
                    _ => 0,
                },
                done: matches!(framing, Framing::None | Framing::Length(0)),
            };
            let sent = within(&mut conn, |conn, cx| sending.poll(conn, cx, body)).await;
            let (complete, write_failed) =
                match sent.ok_or(UpstreamError::ResponseTimeout(timeout))? {
                    Ok(Sent::Complete) => (true, None),
                    Ok(Sent::Early) => (false, None),
                    // A kept-alive connection the backend had closed, and nothing of the body
                    // spent: safe to send again, whatever the method.
                    Err(SendError::Io(_)) if !fresh && !body.touched() => continue,
                    // A backend may answer before it has read the whole request and close (a
                    // refused upload): the write fails, but its answer can be here already.
                    Err(SendError::Io(e)) => (false, Some(e)),
                    Err(SendError::Body(e)) => return Err(UpstreamError::Body(e)),
                };
            let answer = within(&mut conn, |conn, cx| poll_head(conn, cx, &req.method)).await;
            if let Some(e) = write_failed {
                if !matches!(answer, Some(Ok(_))) {
                    return Err(io_failure(&e, "writing the request"));
                }
            }
            let head = match answer.ok_or(UpstreamError::ResponseTimeout(timeout))? {
                Ok(head) => head,
                // A kept-alive connection closed with not a byte of answer: the backend closed
                // it as it sat idle, just before (or as) the request arrived. An idempotent
                // request is sent again on another connection to the same backend; a pooled
                // connection is usually checked before use (`is_reusable`), this is the race.
                Err(UpstreamError::Closed(_))
                    if !fresh && conn.inbound.is_empty() && retry_safe(req, body) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            let ResponseHead {
                status,
                fields,
                body: framing,
                keep_alive,
                ..
            } = head;
            let body = if status == StatusCode::SWITCHING_PROTOCOLS {
                // The connection belongs to the tunnel now, never to the pool.
                UpstreamBody::switched(conn)
            } else {
                let reuse = (keep_alive && complete).then(|| ReturnTo {
                    backend: backend.clone(),
                    settings: self.pool.clone(),
                });
                UpstreamBody::new(conn, framing, reuse)
            };
            return Ok(UpstreamResponse {
                status,
                fields,
                body,
            });
        }
    }

    async fn open(&self, backend: &Backend) -> Result<Box<UpstreamConn>, UpstreamError> {
        let io = self.connector.connect(&backend.authority).await?;
        Ok(UpstreamConn::new(io))
    }
}

/// Whether a request that may have reached the backend can be sent again: idempotent, and
/// none of its body read.
fn retry_safe(req: &http::request::Parts, body: &dyn ClientBody) -> bool {
    crate::proxy::is_idempotent(&req.method) && !body.touched()
}

/// Methods whose requests normally carry a body.
fn expects_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// The request's bytes on their way out.
struct Sending {
    framing: Framing,
    /// Bytes of a declared length still to send.
    left: u64,
    /// The body's last bytes (and the last chunk) are queued.
    done: bool,
}

impl Sending {
    fn poll(
        &mut self,
        conn: &mut UpstreamConn,
        cx: &mut Context<'_>,
        body: &mut dyn ClientBody,
    ) -> Poll<Result<Sent, SendError>> {
        loop {
            if !conn.out.is_empty() {
                match conn.poll_write_out(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(SendError::Io(e))),
                    Poll::Pending => return poll_early(conn, cx),
                }
            }
            if self.done {
                return match conn.poll_flush(cx) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(Sent::Complete)),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(SendError::Io(e))),
                    Poll::Pending => poll_early(conn, cx),
                };
            }
            match body.poll_chunk(cx) {
                Poll::Ready(Some(Ok(data))) => self.queue(data, &mut conn.out)?,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(SendError::Body(e))),
                Poll::Ready(None) => {
                    if self.framing == Framing::Chunked {
                        conn.out.push(Bytes::from_static(LAST_CHUNK));
                    } else if self.left > 0 {
                        // Shorter than declared: the backend would wait for the rest.
                        return Poll::Ready(Err(SendError::Body(BodyError::Aborted)));
                    }
                    self.done = true;
                }
                Poll::Pending => {
                    // Whatever is queued goes out before waiting for more.
                    if let Poll::Ready(Err(e)) = conn.poll_flush(cx) {
                        return Poll::Ready(Err(SendError::Io(e)));
                    }
                    return poll_early(conn, cx);
                }
            }
        }
    }

    fn queue(&mut self, data: Bytes, out: &mut Outgoing) -> Result<(), SendError> {
        match self.framing {
            Framing::Chunked => {
                out.push(chunk_header(data.len()));
                out.push(data);
                out.push(Bytes::from_static(CHUNK_END));
            }
            _ => {
                let n = data.len() as u64;
                if n > self.left {
                    // Longer than declared: never let the excess reach the backend.
                    return Err(SendError::Body(BodyError::Aborted));
                }
                self.left -= n;
                out.push(data);
                self.done = self.left == 0;
            }
        }
        Ok(())
    }
}

/// Polls `step` on the connection until it is ready, or `None` once the deadline set by
/// `UpstreamConn::arm` has passed.
async fn within<T>(
    conn: &mut UpstreamConn,
    mut step: impl FnMut(&mut UpstreamConn, &mut Context<'_>) -> Poll<T>,
) -> Option<T> {
    poll_fn(|cx| {
        if let Poll::Ready(done) = step(conn, cx) {
            return Poll::Ready(Some(done));
        }
        if conn.poll_expired(cx) {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// While the request waits to be written or for more body: has the backend answered, or
/// closed the connection?
fn poll_early(conn: &mut UpstreamConn, cx: &mut Context<'_>) -> Poll<Result<Sent, SendError>> {
    match conn.poll_fill(cx) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Ok(0)) => {
            Poll::Ready(Err(SendError::Io(std::io::ErrorKind::UnexpectedEof.into())))
        }
        Poll::Ready(Ok(_)) => Poll::Ready(Ok(Sent::Early)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(SendError::Io(e))),
    }
}

fn poll_head(
    conn: &mut UpstreamConn,
    cx: &mut Context<'_>,
    method: &Method,
) -> Poll<Result<ResponseHead, UpstreamError>> {
    loop {
        match head::parse_response(
            &mut conn.inbound.bytes,
            &mut conn.inbound.scan,
            method,
            &RESPONSE_HEAD,
        ) {
            Ok(Some(head)) => return Poll::Ready(Ok(head)),
            Ok(None) => {}
            Err(e) => return Poll::Ready(Err(UpstreamError::Protocol(e.to_string()))),
        }
        match std::task::ready!(conn.poll_fill(cx)) {
            Ok(0) if conn.inbound.bytes.is_empty() => {
                return Poll::Ready(Err(UpstreamError::Closed(
                    "closed before the response".into(),
                )))
            }
            Ok(0) => {
                return Poll::Ready(Err(UpstreamError::Closed(
                    "closed inside the response head".into(),
                )))
            }
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(io_failure(&e, "reading the response"))),
        }
    }
}

/// A GET on a new connection that is closed after it (health and site probes: they must never
/// queue behind requests or find a connection the backend has given up on). Returns the status
/// and up to `max_body` bytes of the body.
pub(crate) async fn probe_get(
    connector: &super::Connector,
    authority: &http::uri::Authority,
    target: &str,
    max_body: usize,
) -> Result<(StatusCode, Bytes), UpstreamError> {
    let mut conn = UpstreamConn::new(connector.connect(authority).await?);
    let mut headers = http::HeaderMap::new();
    if let Ok(host) = http::HeaderValue::from_str(authority.as_str()) {
        headers.insert(http::header::HOST, host);
    }
    headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("sessiongate-health-check"),
    );
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    let head = conn.out.head_buf();
    encode::request_head(
        &Method::GET,
        target,
        &headers,
        std::iter::empty(),
        Framing::None,
        head,
    );
    conn.out.queue_head();
    poll_fn(|cx| {
        std::task::ready!(conn.poll_write_out(cx))?;
        conn.poll_flush(cx)
    })
    .await
    .map_err(|e| io_failure(&e, "writing the probe"))?;
    let head = poll_fn(|cx| poll_head(&mut conn, cx, &Method::GET)).await?;
    let status = head.status;
    let mut body = UpstreamBody::new(conn, head.body, None);
    let mut collected = Vec::new();
    while collected.len() < max_body {
        match poll_fn(|cx| body.poll_data(cx)).await {
            None => break,
            Some(Ok(data)) => collected.extend_from_slice(&data),
            Some(Err(e)) => return Err(UpstreamError::Protocol(e.to_string())),
        }
    }
    collected.truncate(max_body);
    Ok((status, Bytes::from(collected)))
}
