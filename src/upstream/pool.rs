//! Kept-alive connections to one backend.
//!
//! Why not hyper-util's pooled client: it keys its pool by scheme and authority (a hash and a
//! lock per checkout and per return), and each of its connections is a task that the request
//! talks to through channels. Here the pool hangs off the `Backend` the request was routed to,
//! a connection is owned by the request using it, and it goes back the moment its response
//! body ends (`response.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::conn::UpstreamConn;
use crate::backends::Backend;
use crate::http1::PARK_AFTER;

/// The idle connections of one backend. Most recently used last, and reused first: it is the
/// warmest, and the ones at the bottom are left to age out.
#[derive(Default)]
pub struct IdlePool {
    // Boxed on purpose: connections move out to requests and back, a pointer at a time.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<UpstreamConn>>>,
    /// Whether the client's sweeper knows this pool.
    registered: AtomicBool,
}

impl std::fmt::Debug for IdlePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdlePool({} idle)", self.len())
    }
}

impl IdlePool {
    /// An idle connection not older than `max_age` that the backend has not closed.
    pub(crate) fn take(&self, max_age: Duration) -> Option<Box<UpstreamConn>> {
        let now = Instant::now();
        let mut idle = self.lock();
        while let Some(mut conn) = idle.pop() {
            if now.duration_since(conn.idle_since) < max_age && conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps the connection's buffers: under load it is taken again within microseconds, and
    /// giving them back here cost five allocations per request. The sweeper parks it later.
    pub(crate) fn put(&self, mut conn: Box<UpstreamConn>, max_idle: usize) {
        let mut idle = self.lock();
        if idle.len() < max_idle {
            conn.idle_since = Instant::now();
            idle.push(conn);
        }
    }

    /// Closes connections idle for `max_age` or more, and those the backend closed; those
    /// left idle for `PARK_AFTER` give back their buffers. `now`: the sweep's one clock read.
    pub(crate) fn evict(&self, max_age: Duration, now: Instant) {
        self.lock().retain_mut(|c| {
            let idle = now.duration_since(c.idle_since);
            if idle >= PARK_AFTER {
                c.inbound.release();
                c.out.release();
            }
            idle < max_age && c.is_reusable()
        });
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[allow(clippy::vec_box)]
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Box<UpstreamConn>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a site's pools share: their limits, and the backends whose pools the sweeper visits.
pub(crate) struct PoolSettings {
    pub idle_timeout: Duration,
    pub max_idle: usize,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    backends: Vec<Weak<Backend>>,
    /// Whether the sweeper runs: one per client, started with the first pooled connection.
    sweeping: bool,
}

impl PoolSettings {
    pub(crate) fn new(idle_timeout: Duration, max_idle: usize) -> PoolSettings {
        PoolSettings {
            idle_timeout,
            max_idle,
            registry: Mutex::default(),
        }
    }

    pub(crate) fn register(self: &Arc<Self>, backend: &Arc<Backend>) {
        // A plain load on the request path; the swap decides only the first time.
        if backend.pool.registered.load(Ordering::Acquire)
            || backend.pool.registered.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if !registry.sweeping {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            runtime.spawn(sweep(Arc::downgrade(self)));
            registry.sweeping = true;
        }
        registry.backends.push(Arc::downgrade(backend));
    }
}

/// Closes idle connections past the idle timeout, checking a few times per timeout (a taken
/// connection is checked again on the spot, so none is ever used past it), and at least once
/// a second, so that a burst's connections give back their buffers soon after it. Ends with
/// the site's client, on reload.
async fn sweep(settings: Weak<PoolSettings>) {
    let every = settings
        .upgrade()
        .map_or(Duration::from_secs(1), |s| s.idle_timeout / 4)
        .clamp(Duration::from_millis(250), Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        let Some(settings) = settings.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut registry = settings
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        registry.backends.retain(|backend| match backend.upgrade() {
            Some(backend) => {
                backend.pool.evict(settings.idle_timeout, now);
                true
            }
            None => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::connect::MaybeTls;
    use tokio::io::AsyncWriteExt;

    /// A pooled connection to a real socket, with a read buffer as a request leaves it.
    async fn used_conn() -> (Box<UpstreamConn>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let mut conn = UpstreamConn::new(MaybeTls::Plain(client.unwrap()));
        let mut backend = accepted.unwrap().0;
        // An answer read and consumed, as a response leaves the buffer.
        backend
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        std::future::poll_fn(|cx| conn.poll_fill(cx)).await.unwrap();
        conn.inbound.bytes.clear();
        conn.out.head_buf().reserve(512);
        (conn, backend)
    }

    #[tokio::test]
    async fn a_returned_connection_keeps_its_buffers_until_it_has_idled() {
        let pool = IdlePool::default();
        let (conn, _backend) = used_conn().await;
        pool.put(conn, 8);
        let returned = pool.lock()[0].idle_since;
        // Swept as it comes back: too fresh to park, so the next request reuses the buffers.
        pool.evict(Duration::from_secs(30), returned);
        {
            let mut idle = pool.lock();
            assert!(idle[0].inbound.bytes.capacity() >= 8 * 1024);
            assert!(idle[0].out.head_buf().capacity() >= 512);
        }
        // Left idle past PARK_AFTER: swept, it gives them back and stays pooled.
        pool.evict(Duration::from_secs(30), returned + PARK_AFTER);
        let mut conn = pool.take(Duration::from_secs(30)).expect("still pooled");
        assert_eq!(conn.inbound.bytes.capacity(), 0);
        assert_eq!(conn.out.head_buf().capacity(), 0);
    }
}
