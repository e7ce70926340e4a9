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
//! [`Stall`] is the stream's timer, kept by the stream while its body is under way
//! (`h2_server`) and pushed along by each chunk it takes. When it fires, the stream is reset
//! with CANCEL and its backend connection dropped. Before the response head no timer runs: the
//! backend's own timeouts (`upstream_response`, the queue's) cover that, and a body that is
//! over with its head (every local answer, short backend answers read with it) has none.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// One stream's timer, while its response body is under way (its head sent, its end not yet):
/// due `after` past the last chunk taken from the body.
pub struct Stall {
    after: Duration,
    /// Chunks taken from the body so far.
    chunks: u64,
    /// The chunk count the timer was last set for.
    seen: u64,
    /// Made the first time the stream waits, so streams whose answer goes out at once never
    /// touch the timer wheel (or the clock).
    timer: Option<Pin<Box<Sleep>>>,
}

impl Stall {
    pub fn new(after: Duration) -> Stall {
        Stall {
            after,
            chunks: 0,
            seen: 0,
            timer: None,
        }
    }

    /// A chunk was taken from the body: the timer starts again from the next wait.
    pub fn moved(&mut self) {
        self.chunks += 1;
    }

    /// Called when the stream is waiting: whether nothing has moved on its body for `after`.
    /// When not yet, the timer is set (or left) to wake the stream when it would be.
    pub fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let timer = match &mut self.timer {
            Some(timer) if self.chunks == self.seen => timer,
            slot => {
                self.seen = self.chunks;
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
    use std::task::Poll;

    async fn expired(stall: &mut Stall) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(stall.expired(cx))).await
    }

    /// The timer is made at the first wait, each chunk taken pushes it along, and it expires
    /// `after` past the last one.
    #[tokio::test(start_paused = true)]
    async fn a_stream_expires_only_when_its_body_stops_moving() {
        let after = Duration::from_secs(10);
        let mut stall = Stall::new(after);
        assert!(stall.timer.is_none(), "no timer until the stream waits");
        assert!(!expired(&mut stall).await, "set at the first wait");
        tokio::time::advance(after - Duration::from_secs(1)).await;
        assert!(!expired(&mut stall).await);
        stall.moved();
        tokio::time::advance(Duration::from_secs(2)).await;
        // The stream waits again right after taking a chunk, so the timer restarts then.
        assert!(!expired(&mut stall).await, "a chunk taken pushed it along");
        tokio::time::advance(after - Duration::from_secs(1)).await;
        assert!(!expired(&mut stall).await);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(expired(&mut stall).await, "nothing taken for `after`");
    }
}
