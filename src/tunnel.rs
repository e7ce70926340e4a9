//! The bytes of an upgraded connection (WebSocket), relayed both ways until either side closes
//! or neither has sent anything for `[timeouts] tunnel`, as HAProxy's `timeout tunnel` and
//! nginx's `proxy_read_timeout` do. Without the limit, a tunnel whose client vanished without
//! a FIN (a phone leaving coverage, a NAT forgetting the flow) would hold its descriptors, its
//! backend connection and its place under the connection caps for good.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// A side closed (or failed); the bytes each way.
    Closed { to_upstream: u64, to_client: u64 },
    /// Nothing moved either way for the idle limit.
    Idle,
}

/// Relays `client` and `upstream` to each other.
pub async fn relay<C, U>(client: &mut C, upstream: &mut U, idle: Duration) -> io::Result<Ended>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let start = Instant::now();
    // Milliseconds after `start` of the last byte read or written, on either side.
    let last = AtomicU64::new(0);
    let mut client = Active {
        io: client,
        last: &last,
        start,
    };
    let mut upstream = Active {
        io: upstream,
        last: &last,
        start,
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let watch = async {
        // Sleeps to the moment the tunnel would have been idle for the limit, counted from
        // the last activity seen on waking: no timer is touched per byte.
        let mut deadline = start + idle;
        loop {
            tokio::time::sleep_until(deadline).await;
            let seen = start + Duration::from_millis(last.load(Ordering::Relaxed));
            if seen + idle <= Instant::now() {
                return;
            }
            deadline = seen + idle;
        }
    };
    tokio::select! {
        copied = copy => copied.map(|(to_upstream, to_client)| Ended::Closed { to_upstream, to_client }),
        () = watch => Ok(Ended::Idle),
    }
}

/// An I/O object that notes the time of each read or write that moved bytes.
struct Active<'a, T: ?Sized> {
    io: &'a mut T,
    last: &'a AtomicU64,
    start: Instant,
}

impl<T: ?Sized> Active<'_, T> {
    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last.fetch_max(now, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin + ?Sized> AsyncRead for Active<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin + ?Sized> AsyncWrite for Active<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut *self.io).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Paused time: the limit is crossed by the clock, never by waiting.
    #[tokio::test(start_paused = true)]
    async fn a_tunnel_ends_after_the_limit_without_bytes_and_activity_moves_the_limit_on() {
        let (mut client, mut client_far) = tokio::io::duplex(64);
        let (mut upstream, mut upstream_far) = tokio::io::duplex(64);
        let idle = Duration::from_secs(60);
        let relay = tokio::spawn(async move { relay(&mut client, &mut upstream, idle).await });

        // Bytes each way at 50 s intervals keep it open well past the limit.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(50)).await;
            client_far.write_all(b"ping").await.unwrap();
            let mut got = [0; 4];
            upstream_far.read_exact(&mut got).await.unwrap();
            upstream_far.write_all(b"pong").await.unwrap();
            client_far.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"pong");
        }
        assert!(!relay.is_finished());
        // Then silence: it ends once the limit has passed since the last byte, not before.
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(!relay.is_finished());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ended = tokio::time::timeout(Duration::from_secs(1), relay).await;
        assert_eq!(ended.expect("still open").unwrap().unwrap(), Ended::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_side_that_closes_ends_the_tunnel_with_its_byte_counts() {
        let (mut client, mut client_far) = tokio::io::duplex(64);
        let (mut upstream, mut upstream_far) = tokio::io::duplex(64);
        let relay = tokio::spawn(async move {
            relay(&mut client, &mut upstream, Duration::from_secs(60)).await
        });
        client_far.write_all(b"hello").await.unwrap();
        client_far.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream_far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        upstream_far.write_all(b"bye").await.unwrap();
        drop(upstream_far);
        let ended = relay.await.unwrap().unwrap();
        assert_eq!(
            ended,
            Ended::Closed {
                to_upstream: 5,
                to_client: 3
            }
        );
    }
}
