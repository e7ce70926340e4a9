//! Public listeners: bind, accept, TLS handshake (with a deadline), then hand the connection to
//! `connection::serve`. The accept loop never ends on an error: it logs, backs off when the
//! process is out of descriptors or memory, and keeps accepting.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{self, ConnContext, ListenerContext};
use crate::current_proxy::CurrentProxy;
use crate::gathered_writes::GatheredWrites;
use crate::http1;
use crate::plain_on_tls::{self, Handshake};
use crate::proxy_protocol;

/// Accept queue length: enough for a burst of reconnects after a rolling restart.
const BACKLOG: u32 = 4096;

/// Binds with SO_REUSEADDR, so a restart does not wait for TIME_WAIT sockets to clear, and
/// TCP_NODELAY, which accepted sockets inherit: no system call per connection for it.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// An accept loop: the socket's lifetime state, and what each new connection is served with
/// (swapped whole on reload; a connection keeps the state it was accepted with).
pub struct Serving {
    pub state: ArcSwap<ServingState>,
    /// Stops this accept loop (shutdown, or the listener was removed by a reload).
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

/// One configuration generation of a listener.
pub struct ServingState {
    pub context: Arc<ListenerContext>,
    pub tls: Option<TlsAcceptor>,
    /// The proxy every listener's next request is served with (a reload stores a new one).
    pub proxy: Arc<CurrentProxy>,
    /// Closes the connections accepted with `context` gracefully: at shutdown, when the
    /// listener is removed, or when a reload changes a setting they were served with.
    pub retire: CancellationToken,
    pub connections: Arc<ConnectionCap>,
    pub per_ip: Arc<PerIp>,
}

/// One permit per open client connection, up to the listener's `max_connections`: at the cap
/// the accept loop waits and the kernel's backlog holds newcomers (back-pressure, not
/// refusal). Kept across reloads with its listener, since the connections it counts outlive
/// their generation.
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
    cap: AtomicUsize,
    /// Permits a lowered cap still has to take back: they are out with open connections, and
    /// each is forgotten as the accept loop gets it back.
    owed: AtomicUsize,
}

impl ConnectionCap {
    pub fn new(cap: usize) -> ConnectionCap {
        ConnectionCap {
            permits: Arc::new(Semaphore::new(cap)),
            cap: AtomicUsize::new(cap),
            owed: AtomicUsize::new(0),
        }
    }

    /// A permit for one more connection, once there are fewer than the cap.
    async fn acquire(&self) -> OwnedSemaphorePermit {
        loop {
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let repaid = self
                .owed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if repaid.is_err() {
                return permit;
            }
            permit.forget();
        }
    }

    /// Sets the cap (a reload), counting the connections open now: a higher cap adds permits
    /// (first paying back any still owed), a lower one takes back the free ones and owes the
    /// rest, so no new connection is let in until enough have closed.
    pub fn set_cap(&self, cap: usize) {
        let old = self.cap.swap(cap, Ordering::SeqCst);
        if cap > old {
            let mut more = cap - old;
            let owed = self
                .owed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    Some(n.saturating_sub(more))
                })
                .expect("always Some");
            more -= owed.min(more);
            self.permits.add_permits(more);
        } else if cap < old {
            let excess = old - cap;
            let taken = self.permits.forget_permits(excess);
            self.owed.fetch_add(excess - taken, Ordering::SeqCst);
        }
    }
}

/// Open connections per client address, so one client cannot take every slot. Kept across
/// reloads with its listener, since the connections it counts outlive their generation.
pub struct PerIp {
    limit: AtomicUsize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Held for a connection's life; releases its address's count when dropped.
pub struct IpSlot {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    pub fn new(limit: usize) -> PerIp {
        PerIp {
            limit: AtomicUsize::new(limit),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The cap a reload set; addresses above it take no new connection until under it.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().expect("per-ip lock");
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit.load(Ordering::Relaxed) {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            owner: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().expect("per-ip lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

pub async fn accept_loop(listener: TcpListener, handle: Arc<Serving>) {
    loop {
        let connections = handle.state.load().connections.clone();
        let permit = tokio::select! {
            _ = handle.shutdown.cancelled() => return,
            permit = connections.acquire() => permit,
        };
        let accepted = tokio::select! {
            _ = handle.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let serving = handle.state.load_full();
        match accepted {
            Ok((stream, peer)) => {
                if serving.context.proxy_protocol.is_some() {
                    // The client's address is known only once the header is read, so the
                    // per-address cap applies after it, on the real client.
                    handle.tasks.spawn(async move {
                        let ctx = serving.context.clone();
                        let trusted = ctx.proxy_protocol.as_deref().unwrap_or_default();
                        let header = proxy_protocol::accept(stream, peer, trusted);
                        let timeout = ctx.timeouts.tls_handshake;
                        let (io, client) = match tokio::time::timeout(timeout, header).await {
                            Ok(Ok(accepted)) => accepted,
                            Ok(Err(e)) => {
                                serving.context.metrics.connection_error(e.kind());
                                tracing::debug!(listener = %serving.context.name, %peer, error = %e, "PROXY header refused");
                                return;
                            }
                            Err(_) => {
                                serving.context.metrics.connection_error("proxy_protocol");
                                tracing::debug!(listener = %serving.context.name, %peer, "no PROXY header in time");
                                return;
                            }
                        };
                        let Some(slot) = admit(&serving, client) else {
                            return;
                        };
                        serve_client(io, client, &serving).await;
                        drop((permit, slot));
                    });
                    continue;
                }
                let Some(slot) = admit(&serving, peer) else {
                    continue;
                };
                handle.tasks.spawn(async move {
                    serve_client(stream, peer, &serving).await;
                    drop((permit, slot));
                });
            }
            Err(e) if is_per_connection(&e) => {
                tracing::debug!(listener = %serving.context.name, error = %e, "accept failed for one connection");
            }
            Err(e) => {
                serving.context.metrics.connection_error("accept");
                tracing::warn!(listener = %serving.context.name, error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A connection slot for `client`'s address, or `None` (counted) past the per-address cap.
fn admit(serving: &ServingState, client: SocketAddr) -> Option<IpSlot> {
    let slot = serving.per_ip.admit(client.ip());
    if slot.is_none() {
        serving.context.metrics.connection_error("per_ip_limit");
        tracing::debug!(listener = %serving.context.name, peer = %client, "per-address connection limit reached");
    }
    slot
}

/// Errors that concern one half-open connection, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn serve_client<I>(stream: I, peer: SocketAddr, serving: &ServingState)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ctx = &serving.context;
    ctx.metrics.connections.inc();
    ctx.metrics.open_connections.inc();
    let conn = Arc::new(ConnContext::new(ctx.clone(), peer));
    let result = match &serving.tls {
        None => serve_http(stream, &conn, serving).await,
        // Boxed: the handshake's state (the TLS session, over a kilobyte) is needed only until
        // it is done; inline it would size the connection's task for its whole life.
        Some(acceptor) => match Box::pin(handshake(acceptor, stream, &conn)).await {
            Some(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                Box::pin(serve_h2(tls, &conn, serving)).await
            }
            Some(tls) => serve_http(tls, &conn, serving).await,
            None => Ok(()),
        },
    };
    if let Err(e) = result {
        ctx.metrics.connection_error("http");
        tracing::debug!(listener = %ctx.name, %peer, error = %e, "client connection ended with an error");
    }
    ctx.metrics.open_connections.dec();
}

/// The TLS handshake, within the handshake timeout. The stream comes back boxed: it is over a
/// kilobyte, and every future it passes through would otherwise hold it inline (an idle
/// connection's task was 10 KB before it and the HTTP/2 and exchange paths were boxed; 1.9 KB
/// after, 1.1 KB with the handshake boxed too).
async fn handshake<I>(
    acceptor: &TlsAcceptor,
    stream: I,
    conn: &ConnContext,
) -> Option<Box<tokio_rustls::server::TlsStream<I>>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let ctx = &conn.listener;
    let peer = conn.peer;
    // Not cut short by a reload or a shutdown: the client may be about to send its first
    // request, which the connection then answers (with `Connection: close`, or GOAWAY) within
    // `close_grace`, as it would on a plain listener. `tls_handshake` bounds the wait.
    let deadline = tokio::time::Instant::now() + ctx.timeouts.tls_handshake;
    match tokio::time::timeout_at(deadline, plain_on_tls::handshake(acceptor, stream)).await {
        Ok(Handshake::PlainHttp(stream)) => {
            ctx.metrics.connection_error("plain_http_on_tls");
            tracing::debug!(listener = %ctx.name, %peer, "plain HTTP on a TLS listener: 400");
            let _ = tokio::time::timeout_at(deadline, plain_on_tls::answer(stream)).await;
            None
        }
        Ok(Handshake::Done(tls)) => {
            let session = tls.get_ref().1;
            ctx.metrics.tls_handshake(
                session
                    .protocol_version()
                    .and_then(|v| v.as_str())
                    .unwrap_or("unknown"),
                session
                    .negotiated_key_exchange_group()
                    .and_then(|g| g.name().as_str())
                    .unwrap_or("none"),
                session.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            );
            if let Some((_, format)) = ctx.client_cert_header {
                // Verified by rustls against the listener's client CA, or absent.
                let chain = session.peer_certificates().unwrap_or_default();
                if let Some(values) = format.values(chain) {
                    let _ = conn.client_cert.set(Box::new(values));
                }
            }
            Some(tls)
        }
        Ok(Handshake::Failed(e)) => {
            ctx.metrics.connection_error("tls_handshake");
            tracing::debug!(listener = %ctx.name, %peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            ctx.metrics.connection_error("tls_handshake_timeout");
            tracing::debug!(listener = %ctx.name, %peer, "TLS handshake timed out");
            None
        }
    }
}

/// HTTP/1.1, or HTTP/2 if the client opens with its preface (prior knowledge).
async fn serve_http<I>(
    io: I,
    conn: &Arc<ConnContext>,
    serving: &ServingState,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match http1::server::serve(io, conn, &serving.proxy, &serving.retire).await {
        http1::server::Ended::Closed => Ok(()),
        // Boxed, like the other HTTP/2 path: an HTTP/2 connection is kilobytes, and inline
        // it would size every HTTP/1.1 connection's task for it too.
        http1::server::Ended::Http2(io) => Box::pin(serve_h2(io, conn, serving)).await,
    }
}

async fn serve_h2<I>(
    io: I,
    conn: &Arc<ConnContext>,
    serving: &ServingState,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let proxy = serving.proxy.clone();
    let handler_conn = conn.clone();
    connection::serve_h2(
        GatheredWrites::new(io),
        &conn.listener.limits,
        &conn.activity,
        conn.listener.timeouts.idle,
        conn.listener.timeouts.close_grace,
        &serving.retire,
        move |req| {
            let proxy = proxy.load_full();
            let conn = handler_conn.clone();
            // Not boxed here: the stream it answers is boxed whole (`connection::serve_h2`).
            async move { proxy.handle_h2(req, conn).await }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The accept loop no longer sets TCP_NODELAY on each connection: it relies on this.
    #[tokio::test]
    async fn accepted_connections_inherit_no_delay_from_the_listener() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (accepted, _) = accepted.unwrap();
        assert!(accepted.nodelay().unwrap());
        // The client side is untouched: the option really came from the listener.
        assert!(!client.unwrap().nodelay().unwrap());
    }

    /// Whether a new connection would be let in now, without waiting.
    fn admits(cap: &ConnectionCap) -> Option<OwnedSemaphorePermit> {
        futures_util::FutureExt::now_or_never(cap.acquire())
    }

    #[test]
    fn a_lowered_cap_takes_back_permits_as_connections_close_and_a_raised_one_repays_first() {
        let cap = ConnectionCap::new(3);
        let mut open: Vec<_> = (0..3).map(|_| admits(&cap).unwrap()).collect();
        assert!(admits(&cap).is_none());

        cap.set_cap(1);
        assert_eq!(cap.owed.load(Ordering::SeqCst), 2);
        // Two close: their permits are taken back, and the one still open is the cap.
        open.truncate(1);
        assert!(admits(&cap).is_none());
        assert_eq!(cap.owed.load(Ordering::SeqCst), 0);
        open.clear();
        open.push(admits(&cap).unwrap());
        assert!(admits(&cap).is_none());

        // Lowered while full, then raised before anything closed: the debt is paid first.
        cap.set_cap(0);
        assert_eq!(cap.owed.load(Ordering::SeqCst), 1);
        cap.set_cap(2);
        assert_eq!(cap.owed.load(Ordering::SeqCst), 0);
        open.push(admits(&cap).unwrap());
        assert!(admits(&cap).is_none());
        // Raised with free permits: they are added as they are.
        open.pop();
        cap.set_cap(4);
        let more: Vec<_> = (0..3).map(|_| admits(&cap).unwrap()).collect();
        assert!(admits(&cap).is_none());
        assert_eq!(open.len() + more.len(), 4);
    }
}
