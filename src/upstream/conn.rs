//! One connection to a backend and the bytes read from it. The request that uses it owns it:
//! it writes the request, reads the response head, and the response body reads on from it in
//! the client connection's own task. There is no task per backend connection and no channel
//! between it and the request, which is where hyper's client spent most of its time per
//! request (BENCHMARKS.md).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use tokio::time::{Instant, Sleep};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::connect::MaybeTls;
use crate::http1::decode::{Decoder, ReadError};
use crate::http1::{Inbound, Outgoing};

pub(crate) struct UpstreamConn {
    io: MaybeTls,
    /// Read from the backend and not consumed yet.
    pub(crate) inbound: Inbound,
    /// Waiting to be written to it.
    pub(crate) out: Outgoing,
    /// The response timeout, kept from one exchange to the next: a new timer per request
    /// would be an insertion and a removal in Tokio's timer wheel. It is moved to a later
    /// deadline only when it fires (`poll_expired`), not at each exchange: `Sleep::reset`
    /// converts the deadline to the wheel's ticks, about 120 instructions a request.
    timer: Option<Pin<Box<Sleep>>>,
    /// When the exchange under way times out; the timer may still be set to fire sooner.
    deadline: Instant,
    /// Responses read to their end on it: a failure before the first byte of a response on a
    /// reused connection is most likely the backend closing it while it sat idle.
    pub(crate) served: u64,
    /// When it last went back to the pool.
    pub(crate) idle_since: std::time::Instant,
}

impl UpstreamConn {
    /// Boxed: the connection passes from the pool to the exchange to the response body and
    /// back, and moving a pointer costs less than moving its couple of hundred bytes each time.
    pub(crate) fn new(io: MaybeTls) -> Box<UpstreamConn> {
        Box::new(UpstreamConn {
            io,
            inbound: Inbound::default(),
            out: Outgoing::default(),
            timer: None,
            deadline: Instant::now(),
            served: 0,
            idle_since: std::time::Instant::now(),
        })
    }

    /// Reads what the backend sent into `buf`; `Ok(0)` at end of stream.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.inbound.poll_fill(Pin::new(&mut self.io), cx)
    }

    /// The next bytes of a body framed by `decoder`.
    pub(crate) fn poll_body(
        &mut self,
        decoder: &mut Decoder,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<bytes::Bytes, ReadError>>> {
        decoder.poll_next(&mut self.inbound, Pin::new(&mut self.io), cx)
    }

    /// Writes every byte queued in `out`, front first, with vectored writes.
    pub(crate) fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.out.poll_write_to(Pin::new(&mut self.io), cx)
    }

    /// Sets the deadline of the exchange about to start. A timer still set for an earlier
    /// exchange's deadline is left to fire then, and `poll_expired` moves it on.
    pub(crate) fn arm(&mut self, deadline: Instant) {
        self.deadline = deadline;
        match &mut self.timer {
            Some(timer) if timer.deadline() <= deadline && !timer.is_elapsed() => {}
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    /// Whether the deadline set by `arm` has passed (registering to be woken when it does).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timer) = self.timer.as_mut() else {
            return false;
        };
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= self.deadline {
                return true;
            }
            // An earlier exchange's deadline: this one's is later.
            timer.as_mut().reset(self.deadline);
        }
        false
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Whether an idle connection can take a request: the backend has neither closed it nor
    /// sent anything unasked. No system call unless the socket has signalled something since
    /// it was last read (the readiness the runtime already tracks).
    pub(crate) fn is_reusable(&mut self) -> bool {
        if !self.inbound.is_empty() {
            return false;
        }
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut probe = [0u8; 64];
        let mut probe = ReadBuf::new(&mut probe);
        // Pending: nothing to read, open and quiet (a TLS backend's session tickets are
        // consumed by rustls here and yield no plaintext). Ready: end of stream, bytes nobody
        // asked for, or an error.
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }

    /// The socket and whatever was read past the response head, for a protocol switch.
    pub(crate) fn into_upgraded(self) -> (MaybeTls, BytesMut) {
        (self.io, self.inbound.bytes)
    }
}

/// A waker that does nothing, for polling a socket once without waiting.
fn noop_waker() -> Waker {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    static WAKER: OnceLock<Waker> = OnceLock::new();
    WAKER.get_or_init(|| Waker::from(Arc::new(Noop))).clone()
}
