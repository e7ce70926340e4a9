//! HTTP/2 streams that nothing moves on.
//!
//! An HTTP/1.1 response that the client takes nothing of, or that the backend feeds nothing
//! more, for the idle timeout ends its connection (`http1::server`). Over HTTP/2 such a stream
//! stalls out of sight: a stream polls its response body again only once the client has given
//! it flow-control window (`h2_server`), so a client can keep its connection lively while
//! giving one stream none (the slow read of CVE-2019-9511 and 9517), and a backend can stop in
//! the middle of a body. Either way the stream, its backend connection and its send buffer
//! were held for as long as the client stayed.
//!
//! [`Watched`] wraps each response body and counts the chunks the stream takes from it;
//! [`Stall`] is the stream's timer, kept by the connection that runs the stream (`h2_streams`) and
//! pushed along by that count while the body is under way. When it fires, the connection
//! drops the stream's future and h2 resets the stream with CANCEL. Before the response head
//! no timer runs: the backend's own timeouts (`upstream_response`, the queue's) cover that.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// What the connection can see of one stream's response: shared by its body and its timer.
#[derive(Debug, Default)]
pub struct Progress {
    /// Chunks the stream has taken from the body.
    chunks: AtomicU64,
    /// Set while the body is under way: a head sent, and the end not yet taken.
    streaming: AtomicBool,
}

/// A response body whose progress the stream's [`Stall`] watches.
pub struct Watched<B> {
    inner: B,
    progress: Arc<Progress>,
}

impl<B: Body> Watched<B> {
    pub fn new(inner: B, progress: Arc<Progress>) -> Watched<B> {
        // A body that is over with its head (every local answer, short backend answers read
        // with their head) is never watched: the stream ends as it is sent.
        progress
            .streaming
            .store(!inner.is_end_stream(), Ordering::Relaxed);
        Watched { inner, progress }
    }
}

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                self.progress.chunks.fetch_add(1, Ordering::Relaxed);
                if self.inner.is_end_stream() {
                    self.progress.streaming.store(false, Ordering::Relaxed);
                }
            }
            Poll::Ready(_) => self.progress.streaming.store(false, Ordering::Relaxed),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One stream's timer: due `after` past the last chunk taken while the body is under way.
pub struct Stall {
    progress: Arc<Progress>,
    after: Duration,
    /// The chunk count the timer was last set for.
    seen: u64,
    /// Made the first time the stream waits with its body under way, so streams whose answer
    /// goes out at once never touch the timer wheel (or the clock).
    timer: Option<Pin<Box<Sleep>>>,
}

impl Stall {
    pub fn new(progress: Arc<Progress>, after: Duration) -> Stall {
        Stall {
            progress,
            after,
            seen: 0,
            timer: None,
        }
    }

    /// Called when the stream's future is waiting: whether nothing has moved on its body for
    /// `after`. When not yet, the timer is set (or left) to wake the stream when it would be.
    pub fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.progress.streaming.load(Ordering::Relaxed) {
            return false;
        }
        let chunks = self.progress.chunks.load(Ordering::Relaxed);
        let timer = match &mut self.timer {
            Some(timer) if chunks == self.seen => timer,
            slot => {
                self.seen = chunks;
                let due = Instant::now() + self.after;
                match slot {
                    Some(timer) => {
                        timer.as_mut().reset(due);
                        timer
                    }
                    None => slot.insert(Box::pin(tokio::time::sleep_until(due))),
                }
            }
        };
        timer.as_mut().poll(cx).is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    /// A body whose chunks the test sends; it ends when the sender is dropped.
    struct Chunks(mpsc::Receiver<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c))))
        }
    }

    async fn expired(stall: &mut Stall) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(stall.expired(cx))).await
    }

    /// The timer runs only while the body is under way, each chunk taken pushes it along,
    /// and it expires `after` past the last one.
    #[tokio::test(start_paused = true)]
    async fn a_stream_expires_only_when_its_body_stops_moving() {
        let after = Duration::from_secs(10);
        let progress = Arc::new(Progress::default());
        let mut stall = Stall::new(progress.clone(), after);
        // Before the response head: no body, no timer.
        tokio::time::advance(after * 3).await;
        assert!(!expired(&mut stall).await);
        assert!(stall.timer.is_none());

        let (tx, rx) = mpsc::channel(4);
        let mut watched = Watched::new(Chunks(rx), progress.clone());
        assert!(!expired(&mut stall).await, "set at the head");
        tokio::time::advance(after - Duration::from_secs(1)).await;
        assert!(!expired(&mut stall).await);
        tx.send(Bytes::from_static(b"x")).await.unwrap();
        watched.frame().await.unwrap().unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        // The stream waits again right after taking a chunk, so the timer restarts then.
        assert!(!expired(&mut stall).await, "a chunk taken pushed it along");
        tokio::time::advance(after - Duration::from_secs(1)).await;
        assert!(!expired(&mut stall).await);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(expired(&mut stall).await, "nothing taken for `after`");

        // The end taken: not watched any more, however long the stream then waits.
        drop(tx);
        assert!(watched.frame().await.is_none());
        tokio::time::advance(after * 3).await;
        assert!(!expired(&mut stall).await);
    }

    /// A body over with its head (a local answer, a short backend answer) is never watched.
    #[tokio::test(start_paused = true)]
    async fn a_body_complete_with_its_head_is_not_watched() {
        let progress = Arc::new(Progress::default());
        let _watched = Watched::new(http_body_util::Empty::<Bytes>::new(), progress.clone());
        let mut stall = Stall::new(progress, Duration::from_secs(1));
        assert!(!expired(&mut stall).await);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!expired(&mut stall).await);
        assert!(stall.timer.is_none(), "no timer made");
    }
}
