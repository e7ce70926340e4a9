//! One client connection after accept (and TLS): ALPN (or, without TLS, an HTTP/2 preface)
//! decides the protocol. HTTP/1.1 is served by `http1::server`; HTTP/2 here, on the h2 crate
//! (`h2_server`), with an idle timeout between streams and a graceful close (GOAWAY) when the
//! proxy drains.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::body::ProxyBody;
use crate::config::{HttpsRedirect, Limits, ListenerConfig, Timeouts};
use crate::h2_server::{self, RequestBody};
use crate::h2_stall::{Progress, Stall};
use crate::h2_streams::ConnStreams;
use crate::headers::Hop;
use crate::metrics::{ListenerMetrics, Metrics};
use crate::paths::PathPolicy;
use crate::rate_limit::RateLimiter;
use crate::tls::ClientCerts;

/// What every connection of one listener shares.
pub struct ListenerContext {
    pub name: String,
    pub tls: bool,
    /// The listener's port, reported to backends as X-Forwarded-Port.
    pub port: u16,
    pub redirect: Option<HttpsRedirect>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub paths: PathPolicy,
    pub deny_status: http::StatusCode,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// What X-Forwarded-For and Forwarded say behind a trusted proxy.
    pub forwarded_for: crate::config::ForwardedMode,
    pub hsts: Option<http::HeaderValue>,
    pub request_id: Option<http::HeaderName>,
    /// Networks allowed to send a PROXY protocol header, on listeners that expect one.
    pub proxy_protocol: Option<Vec<ipnet::IpNet>>,
    /// Where a verified client certificate goes to the backend (`tls.client_ca` set).
    pub client_cert_header: Option<(http::HeaderName, crate::tls::ClientCertFormat)>,
    /// Where the intermediates of a client's chain go (RFC 9440's format only).
    pub client_cert_chain_header: Option<http::HeaderName>,
    /// Whom client certificates are verified against (`tls.client_ca`).
    pub client_ca: Option<ClientCerts>,
    /// Per-client rate limits, in order; the first covering a path applies.
    pub rate_limits: Vec<Arc<RateLimiter>>,
    /// Paths only some client networks may reach.
    pub restrictions: Vec<crate::restrict::Restriction>,
    /// The protocols a client may switch to (`headers::allowed_upgrade`).
    pub upgrades: Vec<String>,
    pub metrics: ListenerMetrics,
    all_metrics: Arc<Metrics>,
}

impl ListenerContext {
    /// `previous`: the listener's context before a reload, whose unchanged rate limits (and
    /// the clients they count) carry over, and whose changed ones over the same paths hand
    /// their clients' counts on.
    pub fn new(
        config: &ListenerConfig,
        port: u16,
        timeouts: Timeouts,
        limits: Limits,
        metrics: Arc<Metrics>,
        previous: Option<&ListenerContext>,
    ) -> ListenerContext {
        let rate_limits = config
            .rate_limits
            .iter()
            .map(|rule| {
                let mut before = previous.into_iter().flat_map(|p| &p.rate_limits);
                if let Some(same) = before.clone().find(|r| r.config == *rule) {
                    return same.clone();
                }
                let limited = metrics.rate_limited.with_label_values(&[&config.name]);
                let untracked = metrics
                    .rate_limit_untracked
                    .with_label_values(&[&config.name]);
                Arc::new(match before.find(|r| r.config.paths == rule.paths) {
                    Some(old) => RateLimiter::carried_from(
                        rule.clone(),
                        old,
                        limited,
                        untracked,
                        std::time::Instant::now(),
                    ),
                    None => RateLimiter::new(rule.clone(), limited, untracked),
                })
            })
            .collect();
        ListenerContext {
            name: config.name.clone(),
            tls: config.tls.is_some(),
            port,
            redirect: config.redirect,
            timeouts,
            limits,
            paths: config.paths.clone(),
            deny_status: config.deny_status,
            trusted_proxies: config.trusted_proxies.clone(),
            forwarded_for: config.forwarded_for,
            hsts: config.hsts.clone(),
            request_id: config.request_id.clone(),
            proxy_protocol: config.proxy_protocol.clone(),
            rate_limits,
            restrictions: config.restrictions.clone(),
            upgrades: config.upgrades.clone(),
            client_cert_header: config.client_cert_header.clone(),
            client_cert_chain_header: config
                .client_cert_header
                .as_ref()
                .and_then(|(leaf, format)| format.chain_header(leaf)),
            client_ca: config
                .tls
                .as_ref()
                .and_then(|set| set.client_certs())
                .cloned(),
            metrics: metrics.listener(&config.name),
            all_metrics: metrics,
        }
    }

    /// Whether a connection accepted under `self` is served under `next` just as it would be
    /// if accepted there, so that a reload may leave it open. The server certificates are not
    /// asked about: they matter only to handshakes still to come. Every field is named, so a
    /// field added later has to be judged here.
    pub fn serves_connections_like(&self, next: &ListenerContext) -> bool {
        let ListenerContext {
            name,
            tls,
            port,
            redirect,
            timeouts,
            limits,
            paths,
            deny_status,
            trusted_proxies,
            forwarded_for,
            hsts,
            request_id,
            proxy_protocol,
            client_cert_header,
            client_cert_chain_header,
            client_ca,
            rate_limits,
            restrictions,
            upgrades,
            // Named after the listener: the same for the same name.
            metrics: _,
            all_metrics: _,
        } = self;
        *name == next.name
            && *tls == next.tls
            && *port == next.port
            && *redirect == next.redirect
            && same_per_connection_timeouts(timeouts, &next.timeouts)
            && same_per_connection_limits(limits, &next.limits)
            && *paths == next.paths
            && *deny_status == next.deny_status
            && *trusted_proxies == next.trusted_proxies
            && *forwarded_for == next.forwarded_for
            && *hsts == next.hsts
            && *request_id == next.request_id
            && *proxy_protocol == next.proxy_protocol
            && *client_cert_header == next.client_cert_header
            && *client_cert_chain_header == next.client_cert_chain_header
            // A connection verified against a bundle the operator has since changed (a CA
            // withdrawn, say) must not outlive that decision.
            && *client_ca == next.client_ca
            && *upgrades == next.upgrades
            && *restrictions == next.restrictions
            // An unchanged rule is carried over as the same limiter (`new`).
            && rate_limits.len() == next.rate_limits.len()
            && rate_limits
                .iter()
                .zip(&next.rate_limits)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }

    pub fn body_limits(&self) -> crate::body::BodyLimits {
        crate::body::BodyLimits {
            max: self.limits.max_body_size,
            min_rate: self.limits.min_body_rate,
            grace: self.limits.body_rate_grace,
        }
    }

    /// Is this peer a proxy whose forwarded headers may be extended?
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        // A dual-stack listener sees IPv4 peers as `::ffff:a.b.c.d`.
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }

    pub fn upstream_error(&self, backend: &str, kind: &str) {
        self.all_metrics
            .upstream_errors
            .with_label_values(&[backend, kind])
            .inc();
    }
}

fn same_per_connection_timeouts(a: &Timeouts, b: &Timeouts) -> bool {
    // The proxy's (each request reads the current proxy's) and the process's.
    let b = Timeouts {
        upstream_connect: a.upstream_connect,
        upstream_response: a.upstream_response,
        shutdown_drain: a.shutdown_drain,
        ..*b
    };
    *a == b
}

fn same_per_connection_limits(a: &Limits, b: &Limits) -> bool {
    // Counted by the listener's caps, which a reload changes in place.
    let b = Limits {
        max_connections: a.max_connections,
        max_connections_per_ip: a.max_connections_per_ip,
        ..*b
    };
    *a == b
}

/// What one connection's requests share.
pub struct ConnContext {
    pub listener: Arc<ListenerContext>,
    pub peer: SocketAddr,
    pub activity: Activity,
    /// The forwarded headers' per-connection part.
    pub hop: Hop,
    /// The client's verified certificate as the backend gets it, and the intermediates it sent
    /// when the format carries them, once the handshake is done (on listeners that pass
    /// certificates on). Boxed: 16 bytes in every connection's context instead of 88.
    pub client_cert: OnceLock<Box<(http::HeaderValue, Option<http::HeaderValue>)>>,
}

/// Requests in flight on a connection and when the last one ended, for the idle timeout.
pub struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last request finished (or the connection opened).
    last_ms: AtomicU64,
    /// Requests started so far.
    started: AtomicU64,
    /// Signalled when a request finishes (holds one permit if nobody waits yet).
    finished: tokio::sync::Notify,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            started: AtomicU64::new(0),
            finished: tokio::sync::Notify::new(),
        }
    }

    pub fn request_started(&self) {
        self.started.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// `now`: when it finished (the caller has just read the clock).
    pub fn request_finished(&self, now: Instant) {
        let now = now.saturating_duration_since(self.opened).as_millis() as u64;
        self.last_ms.store(now, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.finished.notify_one();
    }

    /// A connection closed before its first request loses that request in flight on the wire
    /// (the client sent it as the server closed): such a connection is closed only after it.
    fn is_fresh(&self) -> bool {
        self.started.load(Ordering::Acquire) == 0
    }

    /// How long the connection has been without a request in flight; `None` while busy.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        Some(self.opened.elapsed().saturating_sub(last))
    }
}

impl ConnContext {
    pub fn new(listener: Arc<ListenerContext>, peer: SocketAddr) -> ConnContext {
        let proto = if listener.tls { "https" } else { "http" };
        ConnContext {
            hop: Hop::new(peer.ip(), proto, listener.port),
            listener,
            peer,
            activity: Activity::new(),
            client_cert: OnceLock::new(),
        }
    }
}

/// Serves one HTTP/2 connection until it closes, closing it gracefully when idle for `idle` or
/// when `shutdown` fires (a connection that has not had its first request yet waits
/// `close_grace` for it). Returns h2's verdict on the connection.
pub async fn serve_h2<I, S, F>(
    io: I,
    limits: &Limits,
    activity: &Activity,
    idle: Duration,
    close_grace: Duration,
    shutdown: &CancellationToken,
    handler: S,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(Request<RequestBody>) -> F,
    F: std::future::Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut conn = H2Conn {
        handshake: Some(h2_server::builder(limits).handshake(io)),
        serving: None,
        close_pending: false,
    };
    let mut streams = ConnStreams::default();
    // When the connection began to close (GOAWAY), if it has.
    let mut closing: Option<tokio::time::Instant> = None;
    // Set when asked to close a connection that has not had its first request yet: it closes
    // after that request, or after a short grace if none comes.
    let mut closing_after_first: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        let idle_for = activity.idle_for();
        let wait = match idle_for {
            Some(idle_for) => idle.saturating_sub(idle_for),
            None => idle,
        };
        let grace = closing_after_first.unwrap_or(now);
        // A closing connection is given up once it has had no request in flight for
        // `close_grace` since it began to close: h2 finishes as soon as its last stream has
        // and the GOAWAY is written, so by then its client takes nothing, not even that.
        let quiet_for = match (closing, idle_for) {
            (Some(since), Some(idle_for)) => idle_for.min(now - since),
            _ => Duration::ZERO,
        };
        let give_up = now + close_grace.saturating_sub(quiet_for);
        // Whether to begin closing now (GOAWAY), in one place for every reason to.
        let begin_close = tokio::select! {
            result = std::future::poll_fn(|cx| {
                let result = conn.poll(cx, &mut streams, &handler, idle);
                streams.poll(cx);
                result
            }) => return result.map_err(Into::into),
            _ = shutdown.cancelled(), if closing.is_none() && closing_after_first.is_none() => {
                let fresh = activity.is_fresh();
                if fresh {
                    closing_after_first = Some(tokio::time::Instant::now() + close_grace);
                }
                !fresh
            }
            _ = activity.finished.notified(), if closing.is_none() && closing_after_first.is_some() => true,
            // No request came (or one is under way: h2 finishes it before closing).
            _ = tokio::time::sleep_until(grace), if closing.is_none() && closing_after_first.is_some() => true,
            _ = tokio::time::sleep(wait), if closing.is_none() => {
                activity.idle_for().is_some_and(|d| d >= idle)
            }
            _ = tokio::time::sleep_until(give_up), if closing.is_some() => {
                let since = closing.map_or(Duration::ZERO, |since| since.elapsed());
                if activity.idle_for().is_some_and(|d| d >= close_grace) && since >= close_grace {
                    return Err("the client took nothing of the connection's close".into());
                }
                false
            }
        };
        if begin_close {
            closing = Some(tokio::time::Instant::now());
            conn.graceful_shutdown();
        }
    }
}

/// An HTTP/2 connection, from the client's preface on.
struct H2Conn<I> {
    handshake: Option<h2::server::Handshake<I, Bytes>>,
    serving: Option<h2::server::Connection<I, Bytes>>,
    /// Asked to close during the handshake: it closes as soon as that is done.
    close_pending: bool,
}

impl<I: AsyncRead + AsyncWrite + Unpin> H2Conn<I> {
    /// Drives the connection and starts each stream it opens in `streams`, until it is over.
    fn poll<S, F>(
        &mut self,
        cx: &mut Context<'_>,
        streams: &mut ConnStreams,
        handler: &S,
        stall_after: Duration,
    ) -> Poll<Result<(), h2::Error>>
    where
        S: Fn(Request<RequestBody>) -> F,
        F: std::future::Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        let conn = match (&mut self.serving, &mut self.handshake) {
            (Some(conn), _) => conn,
            (None, Some(handshake)) => {
                let conn = self
                    .serving
                    .insert(ready!(std::future::Future::poll(Pin::new(handshake), cx))?);
                self.handshake = None;
                if self.close_pending {
                    conn.graceful_shutdown();
                }
                conn
            }
            (None, None) => unreachable!("a connection is handshaking or serving"),
        };
        while let Some((req, reply)) = ready!(conn.poll_accept(cx)).transpose()? {
            let (parts, recv) = req.into_parts();
            let body = RequestBody::new(recv, &parts.headers);
            let req = Request::from_parts(parts, body);
            let progress = Arc::new(Progress::default());
            let watched = progress.clone();
            // The handler's future is made where it stays: made outside, it is kilobytes to
            // copy in.
            let stream =
                crate::boxed::pinned(|| h2_server::Respond::new(handler(req), reply, watched));
            streams.push(stream, Some(Stall::new(progress, stall_after)));
        }
        Poll::Ready(Ok(()))
    }

    fn graceful_shutdown(&mut self) {
        match &mut self.serving {
            Some(conn) => conn.graceful_shutdown(),
            None => self.close_pending = true,
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str = "[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n\
                        [[site]]\nbackends = { static = [\"127.0.0.1:1\"] }\n";

    /// The context of the listener in `text`, built after `previous` as a reload builds it.
    fn context(text: &str, previous: Option<&ListenerContext>) -> ListenerContext {
        let config = Config::from_toml(text, "test", std::path::Path::new(".")).unwrap();
        let metrics = Arc::new(Metrics::new());
        let l = &config.listeners[0];
        ListenerContext::new(l, 1, config.timeouts, config.limits, metrics, previous)
    }

    fn keeps(before: &str, after: &str) -> bool {
        let old = context(&format!("{BASE}{before}"), None);
        let new = context(&format!("{BASE}{after}"), Some(&old));
        old.serves_connections_like(&new)
    }

    #[test]
    fn only_what_a_connection_is_served_with_decides_whether_a_reload_closes_it() {
        let limit = "[[listener.rate_limit]]\npaths = [\"/token\"]\nrate = \"5/s\"\n";
        let with_limit = |rule: &str| BASE.replace("[[site]]", &format!("{rule}[[site]]"));
        // Kept: the proxy's settings and the listener's caps.
        assert!(keeps("", ""));
        assert!(keeps("", "[timeouts]\nupstream_response = \"7s\"\n"));
        assert!(keeps("", "[limits]\nmax_connections = 7\n"));
        assert!(keeps("", "[balance]\nalgorithm = \"random\"\n"));
        let old = context(&with_limit(limit), None);
        let new = context(&with_limit(limit), Some(&old));
        assert!(old.serves_connections_like(&new), "the same rate limit");
        // Closed: what each connection or request on it is held to.
        assert!(!keeps("", "[timeouts]\nidle = \"7s\"\n"));
        assert!(!keeps("", "[limits]\nmax_headers = 7\n"));
        assert!(!keeps("", "[limits]\nh2_max_concurrent_streams = 7\n"));
        assert!(!keeps("", "[limits]\nh2_stream_buffer = \"1MiB\"\n"));
        let new = context(&with_limit(&limit.replace("5/s", "6/s")), Some(&old));
        assert!(!old.serves_connections_like(&new), "a changed rate limit");
        let changed_listener = |key: &str| {
            let old = context(BASE, None);
            let new = context(&BASE.replace("[[site]]", &format!("{key}\n[[site]]")), None);
            old.serves_connections_like(&new)
        };
        assert!(!changed_listener("deny_status = 403"));
        assert!(!changed_listener("deny_paths = [\"/admin\"]"));
        assert!(!changed_listener("trusted_proxies = [\"10.0.0.0/8\"]"));
        assert!(!changed_listener("forwarded_for = \"client\""));
        assert!(!changed_listener("request_id_header = \"x-id\""));
        let restrict =
            "[[listener.restrict]]\npaths = [\"/admin/\"]\nallow_from = [\"10.0.0.0/8\"]\n";
        assert!(!changed_listener(restrict));
        let old = context(&with_limit(restrict), None);
        let new = context(&with_limit(restrict), Some(&old));
        assert!(old.serves_connections_like(&new), "the same restriction");
    }
}
