//! A connection's HTTP/2 streams, run inside the connection's own task rather than a Tokio task
//! each. hyper hands every stream's future to an executor; this one queues it for the
//! connection, which runs it in a `FuturesUnordered` that `connection::serve_h2` polls right
//! after the connection itself, so the streams a read of frames opens start in the same poll.
//!
//! Why: spawning, scheduling and dropping a task per stream was 2-3% of the HTTP/2 leg's
//! user-space instructions (callgrind, 38.7k against 37.8k per request; BENCHMARKS.md). It is
//! also how nginx, HAProxy and Envoy serve a connection (one thread, all its streams), and the
//! streams now belong to the connection's task, which graceful shutdown already waits for.
//! What a task per stream gave besides, a panic that ends one stream alone, `Isolated` keeps.
//!
//! Each stream also carries its [`Stall`] timer (`h2_stall`): a stream whose response nothing
//! moves on for the idle timeout is dropped here, and h2 resets it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::h2_stall::{Progress, Stall};

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One connection's streams: the ones running, and the executor hyper is given.
pub struct ConnStreams {
    spawner: Spawner,
    running: FuturesUnordered<Isolated>,
}

/// The executor hyper gets (cloned into its state, hence the `Arc`). It only queues: a stream
/// may hand hyper a future while it is being polled (the task of an upgraded CONNECT stream),
/// so the running set must not be behind a lock that polling holds.
#[derive(Clone)]
pub struct Spawner(Arc<Mutex<Queue>>);

struct Queue {
    streams: Vec<Isolated>,
    /// The progress of the stream hyper hands over next ([`Spawner::watch_next`]).
    next: Option<Arc<Progress>>,
    stall_after: Duration,
}

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for Spawner {
    fn execute(&self, stream: F) {
        let mut queue = self.lock();
        let stall = queue
            .next
            .take()
            .map(|progress| Stall::new(progress, queue.stall_after));
        queue.streams.push(Isolated {
            stream: Box::pin(stream),
            stall,
        });
    }
}

impl Spawner {
    /// The progress of the stream whose future hyper hands over next, for its response body
    /// to report to. hyper makes a stream's future by calling the service with its request
    /// and hands it to the executor straight after (`H2Stream::new(service.call(req), ..)`
    /// then `execute_h2stream`, hyper's proto/h2/server.rs), so the service asks for this and
    /// the next `execute` takes it. A future hyper hands over otherwise (an upgrade's) finds
    /// none and is not watched.
    pub fn watch_next(&self) -> Arc<Progress> {
        let progress = Arc::new(Progress::default());
        self.lock().next = Some(progress.clone());
        progress
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Nothing can panic while it is held.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ConnStreams {
    /// A stream whose response nothing moves on for `stall_after` is dropped (reset).
    pub fn new(stall_after: Duration) -> ConnStreams {
        ConnStreams {
            spawner: Spawner(Arc::new(Mutex::new(Queue {
                streams: Vec::new(),
                next: None,
                stall_after,
            }))),
            running: FuturesUnordered::new(),
        }
    }

    pub fn executor(&self) -> Spawner {
        self.spawner.clone()
    }

    /// Polls every stream that was woken, or handed over since the last call, until none is
    /// ready and none is waiting to start. A stream that is not ready has registered `cx`'s
    /// task: the connection's.
    pub fn poll(&mut self, cx: &mut Context<'_>) {
        loop {
            self.running.extend(self.spawner.lock().streams.drain(..));
            while let Poll::Ready(Some(())) = self.running.poll_next_unpin(cx) {}
            if self.spawner.lock().streams.is_empty() {
                return;
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.running.len() + self.spawner.lock().streams.len()
    }
}

/// A stream whose panic ends that stream alone (hyper then resets it), as a task's would, and
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
    use hyper::rt::Executor;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Streams handed over start in the next poll and are polled again when woken; a stream
    /// may hand over another while it is polled (an upgraded CONNECT stream does); a
    /// panicking one ends alone.
    #[tokio::test]
    async fn streams_run_in_the_polling_task_and_a_panic_ends_one_only() {
        let mut streams = ConnStreams::new(Duration::from_secs(60));
        let exec = streams.executor();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(AtomicUsize::new(0));
        let first = done.clone();
        exec.execute(async move {
            rx.await.unwrap();
            first.fetch_add(1, Ordering::SeqCst);
        });
        exec.execute(async { panic!("a stream's bug") });
        let (second, inner_exec) = (done.clone(), exec.clone());
        exec.execute(async move {
            let third = second.clone();
            inner_exec.execute(async move {
                third.fetch_add(1, Ordering::SeqCst);
            });
            second.fetch_add(1, Ordering::SeqCst);
        });
        std::future::poll_fn(|cx| {
            streams.poll(cx);
            Poll::Ready(())
        })
        .await;
        assert_eq!(
            done.load(Ordering::SeqCst),
            2,
            "the second and the one it handed over"
        );
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
        assert_eq!(done.load(Ordering::SeqCst), 3);
    }
}
