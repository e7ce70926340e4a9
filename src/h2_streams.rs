//! A connection's HTTP/2 streams, run inside the connection's own task rather than a Tokio task
//! each: `connection::serve_h2` pushes each stream it accepts here and polls them right after
//! the connection itself, so the streams a read of frames opens start in the same poll.
//!
//! Why: spawning, scheduling and dropping a task per stream was 2-3% of the HTTP/2 leg's
//! user-space instructions (callgrind, 38.7k against 37.8k per request; BENCHMARKS.md). It is
//! also how nginx, HAProxy and Envoy serve a connection (one thread, all its streams), and the
//! streams belong to the connection's task, which graceful shutdown already waits for. What a
//! task per stream gave besides, a panic that ends one stream alone, `Isolated` keeps.
//!
//! Each stream also carries its [`Stall`] timer (`h2_stall`): a stream whose response nothing
//! moves on for the idle timeout is dropped here, and h2 resets it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::h2_stall::Stall;

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One connection's streams under way.
#[derive(Default)]
pub struct ConnStreams {
    running: FuturesUnordered<Isolated>,
}

impl ConnStreams {
    /// A stream to run from the next `poll` on, dropped (reset) if `stall` expires.
    pub fn push(&mut self, stream: Stream, stall: Option<Stall>) {
        self.running.push(Isolated { stream, stall });
    }

    /// Polls every stream that was woken, or pushed since the last call, until none is ready.
    /// A stream that is not ready has registered `cx`'s task: the connection's.
    pub fn poll(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(Some(())) = self.running.poll_next_unpin(cx) {}
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.running.len()
    }
}

/// A stream whose panic ends that stream alone (h2 then resets it), as a task's would, and
/// which is dropped (reset) when its response stalls.
struct Isolated {
    stream: Stream,
    stall: Option<Stall>,
}

impl Future for Isolated {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let stream = &mut this.stream;
        match std::panic::catch_unwind(AssertUnwindSafe(|| stream.as_mut().poll(cx))) {
            Ok(Poll::Pending) => {
                if this.stall.as_mut().is_some_and(|stall| stall.expired(cx)) {
                    tracing::debug!("an HTTP/2 response stalled for the idle timeout; reset");
                    return Poll::Ready(());
                }
                Poll::Pending
            }
            Ok(Poll::Ready(())) => Poll::Ready(()),
            Err(_) => {
                tracing::error!("an HTTP/2 stream panicked; it alone is closed");
                Poll::Ready(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Streams pushed start in the next poll and are polled again when woken; a panicking one
    /// ends alone.
    #[tokio::test]
    async fn streams_run_in_the_polling_task_and_a_panic_ends_one_only() {
        let mut streams = ConnStreams::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(AtomicUsize::new(0));
        let first = done.clone();
        streams.push(
            Box::pin(async move {
                rx.await.unwrap();
                first.fetch_add(1, Ordering::SeqCst);
            }),
            None,
        );
        streams.push(Box::pin(async { panic!("a stream's bug") }), None);
        let second = done.clone();
        streams.push(
            Box::pin(async move {
                second.fetch_add(1, Ordering::SeqCst);
            }),
            None,
        );
        std::future::poll_fn(|cx| {
            streams.poll(cx);
            Poll::Ready(())
        })
        .await;
        assert_eq!(done.load(Ordering::SeqCst), 1, "the third");
        assert_eq!(streams.len(), 1, "the waiting stream is kept");
        tx.send(()).unwrap();
        std::future::poll_fn(|cx| {
            streams.poll(cx);
            match streams.len() {
                0 => Poll::Ready(()),
                _ => Poll::Pending,
            }
        })
        .await;
        assert_eq!(done.load(Ordering::SeqCst), 2);
    }
}
