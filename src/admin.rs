//! The admin listener, separate from the public ones and on loopback by default:
//! `GET /metrics` (Prometheus text), `GET /live` (the process answers), `GET /ready` (the
//! proxy accepts traffic and has a backend to send it to; 503 while starting or draining, so
//! Kubernetes stops sending traffic before the listeners close), and, behind a bearer token
//! when one is configured, the running configuration (`GET /config`) and the site operations:
//! `GET /sites`, `POST /sites/<name>/switchover`, `POST /sites/failback`,
//! `POST /sites/<name>/down`, `POST /sites/<name>/release`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends::{self, Backend, SharedSnapshot};
use crate::body::ProxyBody;
use crate::error::local_response;
use crate::failover::state::OperationError;
use crate::failover::{Failover, Operation, Operator};
use crate::health::now_ms;
use crate::metrics::Metrics;
use crate::stale_series::{Present, StaleSeries};

/// Admin connections are short scrapes and probes; keep idle ones briefly.
const ADMIN_IDLE: Duration = Duration::from_secs(30);

pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    /// What the current configuration generation answers with (swapped on reload).
    pub current: ArcSwap<AdminState>,
    /// When sites and backends that left were first seen gone, to drop their series.
    pub stale_series: StaleSeries,
}

pub struct AdminState {
    pub snapshot: SharedSnapshot,
    pub failover: Arc<Failover>,
    /// Required (as `Authorization: Bearer`) by the site operations when set.
    pub token: Option<String>,
    /// How long the series of a site, backend or listener that is gone are kept.
    pub metrics_retain: Duration,
    /// The listeners configured, by name (the series of others are stale).
    pub listeners: Vec<String>,
    /// `[upstream] drain_timeout`: how long a backend drains once its hold ends with its listing.
    pub drain: Duration,
    /// `[balance] slow_start`, to show the share of warming backends.
    pub slow_start: Option<Duration>,
    /// The running configuration as `check-config` prints it (secrets not shown), after a
    /// comment saying where and when it was loaded.
    pub config_text: String,
}

impl Admin {
    /// Values read from the routing state when scraped, rather than kept up to date on the
    /// request path; and the series of sites, backends and listeners gone for `metrics_retain`
    /// dropped.
    fn observe_backends(&self) {
        let current = self.current.load();
        let snapshot = current.snapshot.load();
        let now = Instant::now();
        let present = Present::of(&snapshot, &current.listeners, now);
        let labelled = self.metrics.labelled();
        self.stale_series
            .sweep(&labelled, &present, current.metrics_retain, now);
        let gauge = &self.metrics.backend_in_flight;
        gauge.reset();
        for site in &snapshot.sites {
            // Backends per state: a drain ends by the clock, with no discovery round to say so
            // (a static site's backend a reload removed).
            crate::discovery::report(&self.metrics, site, now);
            let draining = site.draining.iter().map(|d| &d.backend);
            for backend in site.members().chain(draining) {
                gauge
                    .with_label_values(&[site.name.as_str(), backend.id.as_str()])
                    .set(backend.in_flight() as i64);
            }
        }
    }

    fn handle(&self, req: &Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        if req.uri().path() == "/sites" || req.uri().path().starts_with("/sites/") {
            return self.sites(req, peer);
        }
        // The path first, then the method: a path that is not there is 404 whatever the
        // method, and 405 says the path exists.
        let page = match req.uri().path() {
            "/metrics" => Page::Metrics,
            "/live" => Page::Live,
            "/config" => Page::Config,
            "/ready" => Page::Ready,
            _ => return local_response(StatusCode::NOT_FOUND, ""),
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut resp = local_response(StatusCode::METHOD_NOT_ALLOWED, "");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        match page {
            Page::Metrics => {
                self.observe_backends();
                let mut resp = Response::new(ProxyBody::local(self.metrics.render()));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            Page::Live => local_response(StatusCode::OK, "live"),
            Page::Config => self.config(req),
            Page::Ready => {
                let has_backend = self
                    .current
                    .load()
                    .snapshot
                    .load()
                    .active_site()
                    .is_some_and(|s| s.has_backends());
                match (self.ready.load(Ordering::Acquire), has_backend) {
                    (true, true) => local_response(StatusCode::OK, "ready"),
                    (false, _) => {
                        local_response(StatusCode::SERVICE_UNAVAILABLE, "not accepting traffic")
                    }
                    (true, false) => local_response(StatusCode::SERVICE_UNAVAILABLE, "no backend"),
                }
            }
        }
    }
}

/// The admin listener's read-only pages (`/sites` has its own routing).
enum Page {
    Metrics,
    Live,
    Config,
    Ready,
}

impl Admin {
    /// What this replica runs, to check that a reload took (or which replica missed one). It
    /// names every backend and file, so it takes the token, as the site operations do.
    fn config(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        let current = self.current.load();
        if !authorized(current.token.as_deref(), req) {
            return unauthorized();
        }
        // The hash the metrics report, to match a replica's /config with its series.
        let text = format!(
            "# sessiongate_config_hash {}\n{}",
            self.metrics.config_hash(),
            current.config_text
        );
        let mut resp = Response::new(ProxyBody::local(text));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }

    fn sites(&self, req: &Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let current = self.current.load();
        if !authorized(current.token.as_deref(), req) {
            return unauthorized();
        }
        let path = req.uri().path().trim_end_matches('/');
        let segments: Vec<&str> = path.split('/').skip(2).collect();
        let query = |key: &str| crate::paths::query_text(req.uri(), key).unwrap_or_default();
        let operator = Operator {
            who: query("who"),
            why: query("why"),
            peer: peer.to_string(),
        };
        let operation = match (req.method(), segments.as_slice()) {
            (&Method::GET, []) => return json_response(StatusCode::OK, &self.status(&current)),
            (&Method::POST, [site, "backends", id, op @ ("drain" | "release")]) => {
                return self.hold(&current, site, id, *op == "drain", &operator);
            }
            (&Method::POST, ["failback"]) => Operation::Failback,
            (&Method::POST, [site, "switchover"]) => Operation::Switchover(site.to_string()),
            (&Method::POST, [site, "down"]) => Operation::ForceDown(site.to_string()),
            (&Method::POST, [site, "release"]) => Operation::Release(site.to_string()),
            (
                _,
                []
                | ["failback"]
                | [_, "switchover" | "down" | "release"]
                | [_, "backends", _, "drain" | "release"],
            ) => {
                let mut resp = local_response(StatusCode::METHOD_NOT_ALLOWED, "");
                let allow = if segments.is_empty() { "GET" } else { "POST" };
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                return resp;
            }
            _ => return local_response(StatusCode::NOT_FOUND, ""),
        };
        match current.failover.operate(&operation, &operator) {
            Ok(active) => json_response(
                StatusCode::OK,
                &serde_json::json!({ "ok": true, "active": active }),
            ),
            Err(e) => {
                let status = match e {
                    OperationError::UnknownSite(_) => StatusCode::NOT_FOUND,
                    OperationError::NotEligible(_) => StatusCode::CONFLICT,
                };
                json_response(
                    status,
                    &serde_json::json!({ "ok": false, "error": e.to_string() }),
                )
            }
        }
    }

    /// The failover state, and each site's backends as requests see them.
    fn status(&self, current: &AdminState) -> serde_json::Value {
        let mut status = current.failover.status();
        let snapshot = current.snapshot.load();
        let (now, ms) = (Instant::now(), now_ms());
        let window = current.slow_start.map(|w| w.as_millis() as u64);
        if let Some(sites) = status["sites"].as_array_mut() {
            for entry in sites {
                let Some(site) = snapshot.sites.iter().find(|s| entry["name"] == *s.name) else {
                    continue;
                };
                let backend = |b: &Backend, state: &str| {
                    let mut entry = serde_json::json!({
                        "id": b.id,
                        "address": b.authority.as_str(),
                        "state": state,
                        "up": b.health.is_up(),
                        "ejected": b.health.is_ejected(ms),
                        "in_flight": b.in_flight(),
                    });
                    let share = window.map_or(100, |w| b.health.warmth(ms, w));
                    if share < 100 {
                        entry["slow_start_percent"] = share.into();
                    }
                    entry
                };
                let mut backends: Vec<_> =
                    site.backends.iter().map(|b| backend(b, "active")).collect();
                backends.extend(site.backups.iter().map(|b| backend(b, "backup")));
                backends.extend(
                    site.draining
                        .iter()
                        .filter(|d| d.until > now)
                        .map(|d| backend(&d.backend, if d.held { "held" } else { "draining" })),
                );
                entry["backends"] = backends.into();
            }
        }
        status
    }

    /// `POST /sites/<site>/backends/<id>/drain` or `.../release`.
    fn hold(
        &self,
        current: &AdminState,
        site: &str,
        id: &str,
        held: bool,
        operator: &Operator,
    ) -> Response<ProxyBody> {
        let now = Instant::now();
        match backends::hold(&current.snapshot, site, id, held, now, current.drain) {
            Ok(changed) => {
                let snapshot = current.snapshot.load();
                if let Some(s) = snapshot.sites.iter().find(|s| s.name == site) {
                    crate::discovery::report(&self.metrics, s, now);
                    if let (Some(admission), false) = (&s.admission, held) {
                        // Its free slots: no release would hand them to the queue.
                        admission.kick(s.members());
                    }
                }
                // As `&str`, which the human log format quotes (`who="alice b"`): a name with a
                // space or an `=` in it cannot read as another field.
                let (who, why, peer) =
                    (operator.who.as_str(), operator.why.as_str(), &operator.peer);
                match (changed, held) {
                    (false, _) => {}
                    (true, true) => tracing::warn!(
                        site, backend = id, who, why, %peer,
                        "backend held out by an operator: draining until released"
                    ),
                    (true, false) => tracing::warn!(
                        site, backend = id, who, why, %peer,
                        "backend released by an operator"
                    ),
                }
                json_response(
                    StatusCode::OK,
                    &serde_json::json!({ "ok": true, "changed": changed, "held": held }),
                )
            }
            Err(e) => json_response(
                StatusCode::NOT_FOUND,
                &serde_json::json!({ "ok": false, "error": e.to_string() }),
            ),
        }
    }
}

fn unauthorized() -> Response<ProxyBody> {
    let mut resp = local_response(StatusCode::UNAUTHORIZED, "bearer token required");
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Says so when the site operations (switchover, force-down, drain) are open to whoever
/// reaches the admin listener: no token, and an address beyond loopback (a container's
/// `0.0.0.0`, say). Metrics and health need no token; the operations would move traffic.
pub fn warn_if_open(listen: SocketAddr, token: Option<&str>) {
    if open_without_token(listen, token) {
        tracing::warn!(
            %listen,
            "the admin listener takes site operations from any address that reaches it, \
             without a token: set admin.token or admin.token_file, or listen on loopback"
        );
    }
}

fn open_without_token(listen: SocketAddr, token: Option<&str>) -> bool {
    token.is_none() && !listen.ip().is_loopback()
}

fn authorized(token: Option<&str>, req: &Request<Incoming>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant time in the token's length: no timing oracle for guessing it.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(format!("{value:#}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub async fn accept_loop(
    listener: TcpListener,
    admin: Arc<Admin>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let mut builder = http1::Builder::new();
    // hyper's head timer also runs while a kept-alive connection idles: the idle timeout.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ADMIN_IDLE);
    let builder = Arc::new(builder);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (admin, builder, shutdown) = (admin.clone(), builder.clone(), shutdown.clone());
        tasks.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = admin.handle(&req, peer);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::open_without_token;

    #[test]
    fn site_operations_without_a_token_are_open_only_beyond_loopback() {
        let open = |listen: &str, token| open_without_token(listen.parse().unwrap(), token);
        assert!(open("0.0.0.0:9901", None));
        assert!(open("[::]:9901", None));
        assert!(open("10.0.0.5:9901", None));
        assert!(!open("127.0.0.1:9901", None));
        assert!(!open("[::1]:9901", None));
        assert!(!open("0.0.0.0:9901", Some("0123456789abcdef")));
    }
}
