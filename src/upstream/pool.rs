//! Kept-alive connections to one backend, and the response body that gives its connection back
//! when it ends.
//!
//! Why not hyper-util's pooled client: it keys its pool by scheme and authority (a hash and a
//! lock per checkout and per return), boxes every request's future, and spawns a task per
//! request that waits for the connection to be ready again before returning it. Here the pool
//! hangs off the `Backend` the request was routed to, a connection goes back the moment its
//! response body ends, and the next request waits for it to be ready only if it has not been
//! polled since (benches/compare.sh measured the difference; BENCHMARKS.md).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;

use crate::backends::Backend;
use crate::body::AttemptBody;

pub(crate) type Sender = http1::SendRequest<AttemptBody>;

struct Idle {
    sender: Sender,
    since: Instant,
}

/// The idle connections of one backend. Most recently used last, and reused first: it is the
/// warmest, and the ones at the bottom are left to age out.
#[derive(Default)]
pub struct IdlePool {
    idle: Mutex<Vec<Idle>>,
    /// Whether the client's sweeper knows this pool.
    registered: AtomicBool,
}

impl std::fmt::Debug for IdlePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdlePool({} idle)", self.len())
    }
}

impl IdlePool {
    /// An idle connection not older than `max_age` and not closed by the backend.
    pub(crate) fn take(&self, max_age: Duration) -> Option<Sender> {
        let now = Instant::now();
        let mut idle = self.lock();
        while let Some(entry) = idle.pop() {
            if !entry.sender.is_closed() && now.duration_since(entry.since) < max_age {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put(&self, sender: Sender, max_idle: usize) {
        let mut idle = self.lock();
        if idle.len() < max_idle && !sender.is_closed() {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes connections idle for `max_age` or more (dropping the last sender of a connection
    /// makes hyper close it).
    pub(crate) fn evict(&self, max_age: Duration) {
        let now = Instant::now();
        self.lock()
            .retain(|e| !e.sender.is_closed() && now.duration_since(e.since) < max_age);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
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

    fn register(self: &Arc<Self>, backend: &Arc<Backend>) {
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
/// connection is checked again on the spot, so none is ever used past it). Ends with the
/// site's client, on reload.
async fn sweep(settings: Weak<PoolSettings>) {
    let every = settings
        .upgrade()
        .map_or(Duration::from_secs(1), |s| s.idle_timeout / 4)
        .clamp(Duration::from_millis(250), Duration::from_secs(15));
    loop {
        tokio::time::sleep(every).await;
        let Some(settings) = settings.upgrade() else {
            return;
        };
        let mut registry = settings
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        registry.backends.retain(|backend| match backend.upgrade() {
            Some(backend) => {
                backend.pool.evict(settings.idle_timeout);
                true
            }
            None => false,
        });
    }
}

/// A connection lent to one exchange, to go back to its backend's pool.
pub(crate) struct Reuse {
    pub sender: Sender,
    pub backend: Arc<Backend>,
    pub settings: Arc<PoolSettings>,
}

impl Reuse {
    fn give_back(self) {
        self.settings.register(&self.backend);
        self.backend.pool.put(self.sender, self.settings.max_idle);
    }
}

/// A backend's response body. When it has been read to its end the connection goes back to
/// the pool; dropped before that, the connection goes with it (hyper closes a connection
/// whose response was not read).
pub struct UpstreamBody {
    inner: Incoming,
    reuse: Option<Reuse>,
}

impl UpstreamBody {
    pub(crate) fn new(inner: Incoming, reuse: Option<Reuse>) -> UpstreamBody {
        UpstreamBody { inner, reuse }
    }

    fn give_back_if_done(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(reuse) = self.reuse.take() {
                reuse.give_back();
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => {
                if let Some(reuse) = this.reuse.take() {
                    reuse.give_back();
                }
            }
            Poll::Ready(Some(Ok(_))) => this.give_back_if_done(),
            Poll::Ready(Some(Err(_))) => this.reuse = None,
            Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper stops polling a body once `is_end_stream` says so, and never polls an empty
        // one (HEAD, 204, 304): those end here.
        self.give_back_if_done();
    }
}
