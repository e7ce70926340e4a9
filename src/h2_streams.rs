//! A connection's HTTP/2 streams, run inside the connection's own task rather than a Tokio task
//! each. hyper hands every stream's future to an executor; this one keeps them in the
//! connection's `FuturesUnordered`, and `connection::serve_h2` polls them right after the
//! connection itself, so the streams a read of frames opens are started in the same poll.
//!
//! Why: spawning, scheduling and dropping a task per stream was 2.8% of the HTTP/2 leg's
//! user-space instructions (callgrind, 38.7k against 37.6k per request; BENCHMARKS.md). It is
//! also how nginx, HAProxy and Envoy serve a connection (one thread, all its streams), and the
//! streams now belong to the connection's task, which graceful shutdown already waits for.
//! What a task per stream gave besides, a panic that ends one stream alone, `Isolated` keeps.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor hyper gets for one connection (cloned into its state, hence the `Arc`; only
/// the connection's task ever locks it, so the lock is never contended).
#[derive(Clone, Default)]
pub struct ConnStreams(Arc<Mutex<FuturesUnordered<Isolated>>>);

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for ConnStreams {
    fn execute(&self, stream: F) {
        self.lock().push(Isolated(Box::pin(stream)));
    }
}

impl ConnStreams {
    /// Polls every stream that was woken, or added since the last call, until none is ready.
    /// A stream that is not ready has registered `cx`'s task: the connection's.
    pub fn poll(&self, cx: &mut Context<'_>) {
        let mut streams = self.lock();
        while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FuturesUnordered<Isolated>> {
        // A panic is caught inside `Isolated`, never while the lock is held; but if one were,
        // the streams are still whole.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A stream whose panic ends that stream alone (hyper then resets it), as a task's would.
struct Isolated(Stream);

impl Future for Isolated {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let stream = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| stream.as_mut().poll(cx))) {
            Ok(poll) => poll,
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
    use hyper::rt::Executor;

    /// Streams added while the connection is polled start in the same poll, are polled again
    /// when woken, and a panicking one ends alone.
    #[tokio::test]
    async fn streams_run_in_the_polling_task_and_a_panic_ends_one_only() {
        let streams = ConnStreams::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let first = done.clone();
        streams.execute(async move {
            rx.await.unwrap();
            first.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        streams.execute(async { panic!("a stream's bug") });
        let second = done.clone();
        streams.execute(async move {
            second.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        std::future::poll_fn(|cx| {
            streams.poll(cx);
            Poll::Ready(())
        })
        .await;
        assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(streams.lock().len(), 1, "the waiting stream is kept");
        tx.send(()).unwrap();
        std::future::poll_fn(|cx| {
            streams.poll(cx);
            match streams.lock().is_empty() {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
        .await;
        assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
