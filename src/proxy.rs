//! One request: check the head (Host, target, path policy, declared size), redirect or pick a
//! backend, rewrite the head, forward, rewrite the response head, and hand back the response
//! whose body streams from the backend. Errors become responses in `error.rs`; nothing here
//! lets an error through, which would drop the connection instead of answering.
//!
//! Both protocols come here: the HTTP/1.1 server (`http1/server.rs`) and the HTTP/2 server
//! (`h2_server.rs`, `handle_h2`). The request body is borrowed, not owned, so a failed attempt that never read
//! it leaves it whole for the next backend.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};

use crate::access::RequestRecord;
use crate::admission::Shed;
use crate::backends::{Backend, InFlight, SharedSnapshot, Site};
use crate::balance;
use crate::body::{BodyLength, ClientBody, Limited, ProxyBody};
use crate::config::{Algorithm, Balance, Config, ForwardedMode, HashKey, HttpsRedirect};
use crate::connection::{ConnContext, ListenerContext};
use crate::cookies;
use crate::error::{local_response, ProxyError};
use crate::error_pages::ErrorPages;
use crate::failover::Failover;
use crate::headers::{self, Added, ForwardedFor};
use crate::metrics::Metrics;
use crate::paths;
use crate::rate_limit;
use crate::reply::{Fields, Reply};
use crate::request_id;
use crate::restrict;
use crate::select::{NoPick, Outcome, Selection};
use crate::sticky::{SessionKey, Sticky};
use crate::upstream::{UpstreamError, UpstreamResponse};

pub struct Proxy {
    snapshot: SharedSnapshot,
    balance: Balance,
    retries: u32,
    metrics: Arc<Metrics>,
    failover: Arc<Failover>,
    /// The proxy's own /lb-check path, answered here rather than forwarded.
    lb_check: Option<String>,
    access_log: bool,
    error_pages: ErrorPages,
}

impl Proxy {
    pub fn new(
        snapshot: SharedSnapshot,
        config: &Config,
        metrics: Arc<Metrics>,
        failover: Arc<Failover>,
    ) -> Proxy {
        Proxy {
            lb_check: config.failover.lb_check_path.clone(),
            failover,
            snapshot,
            balance: config.balance.clone(),
            retries: config.upstream.retries,
            metrics,
            access_log: config.log.access_log,
            error_pages: config.error_pages.clone(),
        }
    }

    /// One HTTP/2 request: its body read as DATA frames arrive.
    pub async fn handle_h2(
        &self,
        req: Request<crate::h2_server::RequestBody>,
        conn: Arc<ConnContext>,
    ) -> Response<ProxyBody> {
        let (mut parts, incoming) = req.into_parts();
        let mut body = Limited::new(incoming, conn.listener.body_limits());
        let mut reply = self
            .handle(
                &mut parts,
                &mut body,
                &conn,
                false,
                std::time::Instant::now(),
            )
            .await;
        // A backend that answered before reading the whole body: the stream's receiving side
        // stays open until the answer is sent, so the client gets the answer, not a reset.
        if body.is_unfinished() {
            reply.body.hold(body);
        }
        reply.into_response(parts.method == Method::HEAD)
    }

    /// One request, whatever protocol brought it, whose head arrived at `start`. `upgrade`
    /// says the client asked to switch protocols (HTTP/1.1 only): then a 101 from the backend
    /// comes back with its connection in the body (`ProxyBody::into_upgraded`).
    ///
    /// The head is lent, not moved: rustc stores an async fn's by-value argument twice in its
    /// state (rust-lang/rust#62958), and these states are boxed once per request.
    pub async fn handle(
        &self,
        parts: &mut http::request::Parts,
        body: &mut dyn ClientBody,
        conn: &Arc<ConnContext>,
        upgrade: bool,
        start: std::time::Instant,
    ) -> Reply {
        let mut record = RequestRecord::begin(conn.clone(), parts, start, self.access_log);
        if let Some(name) = &conn.listener.request_id {
            let trusted = conn.listener.trusts(conn.peer.ip());
            record.request_id = Some(request_id::of(name, &parts.headers, trusted));
        }
        let mut reply = match self.route(parts, body, conn, upgrade, &mut record).await {
            Ok(reply) => reply,
            Err(err) => {
                if let Some(reason) = err.refusal() {
                    conn.listener.metrics.request_refused(reason);
                }
                // Shedding is logged once per episode by the queue, not once per request.
                let (peer, id) = (record.peer(), record.request_id());
                if err.is_client_error() || matches!(err, ProxyError::Shed(_)) {
                    tracing::debug!(%peer, request_id = id, error = %err, "request refused");
                } else {
                    tracing::warn!(%peer, request_id = id, error = %err, "request failed");
                }
                Reply::local(self.error_response(err))
            }
        };
        if let Some(hsts) = &conn.listener.hsts {
            reply
                .fields
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        if let (Some(name), Some(id)) = (&conn.listener.request_id, &record.request_id) {
            reply.fields.insert(name.clone(), id.clone());
        }
        record.status = reply.status;
        reply.body.set_record(record);
        reply
    }

    /// The answer to a request that failed here, on the operator's page for its status if
    /// there is one. Out of line: every request's state machine carries its `handle`'s code.
    #[cold]
    #[inline(never)]
    fn error_response(&self, err: ProxyError) -> Response<ProxyBody> {
        let mut resp = err.into_response();
        self.error_pages.dress(&mut resp);
        resp
    }

    /// The operator's pages, for answers made before a request reaches `handle` (a refused
    /// HTTP/1.1 head).
    pub fn error_pages(&self) -> &ErrorPages {
        &self.error_pages
    }

    async fn route(
        &self,
        parts: &mut http::request::Parts,
        body: &mut dyn ClientBody,
        conn: &ConnContext,
        upgrade: bool,
        record: &mut RequestRecord,
    ) -> Result<Reply, ProxyError> {
        // A reverse proxy is not a tunnel; and TRACE would echo the client's cookies and the
        // proxy's forwarded fields back in the body (nginx refuses both too).
        if parts.method == Method::CONNECT || parts.method == Method::TRACE {
            return Err(ProxyError::MethodNotAllowed(parts.method.clone()));
        }
        let listener = &conn.listener;
        let host = match request_host(parts) {
            // Host is HTTP/1.1's requirement (RFC 9112 §3.2): a balancer's health check in
            // HTTP/1.0 often sends none (HAProxy's `option httpchk GET /lb-check` does). Only
            // the proxy's own /lb-check, which needs no host, answers such a request.
            Err(ProxyError::MissingHost) if parts.version == http::Version::HTTP_10 => None,
            host => Some(host?),
        };
        if let Some(redirect) = listener.redirect {
            let host = host.ok_or(ProxyError::MissingHost)?;
            return Ok(Reply::local(https_redirect(&host, &parts.uri, redirect)?));
        }
        // The exact path the policy checked is the one forwarded.
        let target = checked_target(&parts.uri, listener)?;
        if self.lb_check.as_deref() == Some(target.path()) {
            // For a global balancer in front of several proxies: UP while this one can serve.
            let (status, text) = if self.failover.serving() {
                (StatusCode::OK, "UP")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "DOWN")
            };
            let mut resp = Response::new(ProxyBody::local(text));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Ok(Reply::local(resp));
        }
        let host = host.ok_or(ProxyError::MissingHost)?;
        // The client behind any trusted proxies, read once for all that goes by it: the
        // restrict rules, the rate limits and `forwarded_for = "client"`.
        let client = if !listener.restrictions.is_empty()
            || !listener.rate_limits.is_empty()
            || listener.forwarded_for == ForwardedMode::Client
        {
            Some(headers::client_address(
                &parts.headers,
                conn.peer.ip(),
                |ip| listener.trusts(ip),
            ))
        } else {
            None
        };
        if let Some(client) = client {
            // Refused first: a client kept out of a path spends none of its allowance there.
            restrict::check(&listener.restrictions, target.path(), client)
                .map_err(ProxyError::Restricted)?;
            rate_limit::check(&listener.rate_limits, target.path(), client)
                .map_err(ProxyError::RateLimited)?;
        }
        let max_body = listener.limits.max_body_size;
        // The length the body declared, as its protocol read it (HTTP/1.1's framing, HTTP/2's
        // agreeing Content-Lengths): refused before a backend is chosen.
        if matches!(body.length(), BodyLength::Known(n) if n > max_body) {
            return Err(ProxyError::BodyTooLarge(max_body));
        }

        let snapshot = self.snapshot.load();
        let site = snapshot.active_site().ok_or(ProxyError::NoSite)?;
        let sticky = site.sticky.as_deref();
        let session = sticky.map_or(SessionKey::Unpinned, |s| {
            s.read(&parts.headers, conn.peer.ip())
        });
        let key = hash_key(&self.balance.algorithm, parts, conn);

        let upgrade = upgrade && headers::allowed_upgrade(&parts.headers, &conn.listener.upgrades);
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        // The proxy answered the client's `Expect: 100-continue` itself (or will, as it reads
        // the body): the backend is not to wait for a go-ahead of its own.
        parts.headers.remove(header::EXPECT);
        match sticky.and_then(Sticky::own_cookie) {
            // The proxy's cookie is for the proxy; backends never see it.
            Some(own) => cookies::remove(&mut parts.headers, own),
            // HTTP/1.1 clients send one line (RFC 6265 §5.4); HTTP/2 ones a line a cookie.
            None if parts.version == http::Version::HTTP_2 => cookies::join(&mut parts.headers),
            None => {}
        }
        // The client's own Host value when that is where the host came from: checked by
        // `request_host`, and shared with the request's buffer rather than copied.
        let (host_value, host_in_map) = match parts.headers.get(header::HOST) {
            Some(value) if parts.uri.authority().is_none() => (value.clone(), true),
            found => {
                if found.is_some() {
                    // The target's authority is the host (RFC 9110, 7.2): a Host beside it
                    // is replaced, not sent twice.
                    parts.headers.remove(header::HOST);
                }
                let value =
                    HeaderValue::from_str(host.as_str()).map_err(|_| ProxyError::BadHost)?;
                (value, false)
            }
        };
        let trusted = listener.trusts(conn.peer.ip());
        // Named alone only behind a trusted proxy (from anyone else the peer is the client).
        let resolved = match listener.forwarded_for {
            ForwardedMode::Client if trusted => client,
            _ => None,
        };
        let forwarded = headers::forwarded(
            &mut parts.headers,
            &ForwardedFor {
                hop: &conn.hop,
                host: &host_value,
                trusted,
                resolved,
            },
        );
        let added = Added {
            // HTTP/2 carries the host in :authority; the HTTP/1.1 backend needs it as Host.
            host: (!host_in_map).then_some(&host_value),
            forwarded: &forwarded,
        };
        // The proxy's word on the client's certificate, never the client's: whatever it sent
        // under the name goes, with or without a certificate of its own.
        if let Some((name, _)) = &listener.client_cert_header {
            parts.headers.remove(name);
            let chain_name = listener.client_cert_chain_header.as_ref();
            if let Some(chain_name) = chain_name {
                parts.headers.remove(chain_name);
            }
            if let Some((cert, chain)) = conn.client_cert.get().map(|b| &**b) {
                parts.headers.insert(name.clone(), cert.clone());
                if let (Some(chain_name), Some(chain)) = (chain_name, chain) {
                    parts.headers.insert(chain_name.clone(), chain.clone());
                }
            }
        }
        // After the hop-by-hop strip: a `Connection` naming the header must not remove the
        // proxy's ID. Whatever the client sent under that name is replaced.
        if let (Some(name), Some(id)) = (&listener.request_id, &record.request_id) {
            parts.headers.insert(name.clone(), id.clone());
        }
        parts.uri = Uri::from(target);
        parts.version = Version::HTTP_11;

        let (upstream, selection) = self
            .forward(site, &session, key.as_deref(), (parts, added), body, record)
            .await?;
        let UpstreamResponse {
            status,
            fields,
            body,
        } = upstream;
        let mut fields = Fields::Backend(fields);
        let backend = selection.backend;
        if let Some(sticky) = sticky {
            if let Some(outcomes) = &site.sticky_outcomes {
                outcomes[selection.outcome.index()].inc();
            }
            let nonce = match (&session, selection.outcome) {
                (_, Outcome::Hit) => None,
                // A re-pin keeps the session's nonce: its replacement stays the same.
                (SessionKey::Cookie { nonce, .. }, Outcome::Repinned) => Some(*nonce),
                _ => Some(balance::random_u64()),
            };
            if let Some(cookie) =
                nonce.and_then(|n| sticky.set_cookie(n, backend.tag, listener.tls))
            {
                fields.append(header::SET_COOKIE, cookie);
            }
            let set_cookies = fields.get_all(&header::SET_COOKIE);
            sticky.learn(set_cookies, &backend.id, backend.route.as_deref());
        }

        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        if switching && !upgrade {
            return Err(ProxyError::Upstream {
                backend: backend.id.clone(),
                error: UpstreamError::Protocol("101 to a request that did not ask for it".into()),
            });
        }
        fields.strip_hop_by_hop(switching);
        Ok(Reply {
            status,
            fields,
            body: ProxyBody::upstream(body),
        })
    }
}

impl Proxy {
    /// Sends the request to the site, trying further backends when an attempt fails in a way
    /// that is safe to retry: the connection could not be made (nothing was sent, so any
    /// method), or, for idempotent methods, it closed before a response head. Never once the
    /// body has been read from the client (it could not be sent again) and never after a
    /// response started. Each outcome feeds the backend's passive health.
    async fn forward(
        &self,
        site: &Site,
        session: &SessionKey,
        hash_key: Option<&[u8]>,
        (parts, added): (&http::request::Parts, Added<'_>),
        body: &mut dyn ClientBody,
        record: &mut RequestRecord,
    ) -> Result<(UpstreamResponse, Selection), ProxyError> {
        let idempotent = is_idempotent(&parts.method);
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        let mut failed: Option<ProxyError> = None;
        loop {
            let (selection, slot) = match self.admit(site, session, hash_key, &tried).await {
                Ok(admitted) => admitted,
                // A retry that finds no backend free answers with the failure that caused it.
                Err(e) => return Err(failed.unwrap_or(e)),
            };
            let backend = selection.backend.clone();
            record.backend = Some(slot);
            let error = match site.client.send(&backend, parts, added, body).await {
                Ok(resp) => {
                    let status = resp.status;
                    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
                        self.failed(site, &backend);
                    } else {
                        backend.health.succeeded();
                    }
                    return Ok((resp, selection));
                }
                Err(error) => error,
            };
            record.listener().upstream_error(&backend.id, error.kind());
            if error.is_backend_failure() {
                self.failed(site, &backend);
            }
            let retryable = match &error {
                UpstreamError::Connect(_) => true,
                UpstreamError::Closed(_) => idempotent,
                _ => false,
            };
            let kind = error.kind();
            let error = ProxyError::Upstream {
                backend: backend.id.clone(),
                error,
            };
            // Never once the body has been read from the client: it could not be sent again.
            let another = tried.len() < self.retries as usize
                && site.members().nth(tried.len() + 1).is_some();
            if !retryable || !another || body.touched() {
                return Err(error);
            }
            tracing::debug!(site = %site.name, backend = %backend.id, %error, "retrying on another backend");
            self.metrics
                .retries
                .with_label_values(&[&site.name, kind])
                .inc();
            failed = Some(error);
            tried.push(backend);
        }
    }

    /// A backend and a slot on it for one attempt: at once when one is free, else (first
    /// attempts only) after waiting in the site's queue; or the reason the request is shed.
    async fn admit(
        &self,
        site: &Site,
        session: &SessionKey,
        hash_key: Option<&[u8]>,
        tried: &[Arc<Backend>],
    ) -> Result<(Selection, InFlight), ProxyError> {
        let no_backend = || {
            self.metrics
                .shed
                .with_label_values(&[&site.name, "no_backend"])
                .inc();
            ProxyError::NoBackend(site.name.clone())
        };
        let Some(admission) = &site.admission else {
            let selection = site
                .select(&self.balance, session, hash_key, tried)
                .map_err(|_| no_backend())?;
            let slot = InFlight::new(selection.backend.clone());
            return Ok((selection, slot));
        };
        let pinned = match site.select(&self.balance, session, hash_key, tried) {
            Ok(selection) => match admission.try_acquire(&selection.backend) {
                Some(slot) => return Ok((selection, slot)),
                // Taken since it was chosen: wait for it if the session waits for its own.
                None => (selection.outcome != Outcome::Balanced && admission.config.sticky_waits)
                    .then_some(selection.backend),
            },
            Err(NoPick::NoBackend) => return Err(no_backend()),
            Err(NoPick::Busy { pinned }) => pinned,
        };
        if !tried.is_empty() {
            // Retries never queue: the request has waited its turn once.
            return Err(ProxyError::Shed(Shed::QueueFull));
        }
        let cap = admission.config.max_in_flight;
        let retry = || {
            let selection = site.select(&self.balance, session, hash_key, tried).ok()?;
            InFlight::try_new(&selection.backend, cap)
        };
        // Boxed: waiting is the overloaded path; inline, its state would enlarge every
        // request's future.
        let slot = Box::pin(admission.wait(pinned, retry))
            .await
            .map_err(ProxyError::Shed)?;
        let outcome = site.outcome_of(&self.balance, session, slot.backend());
        let selection = Selection {
            backend: slot.backend().clone(),
            outcome,
        };
        Ok((selection, slot))
    }

    fn failed(&self, site: &Site, backend: &Backend) {
        if let Some(length) = backend.health.failed(&site.outlier) {
            tracing::warn!(
                site = %site.name,
                backend = %backend.id,
                failures = site.outlier.consecutive_failures,
                ejected_for = ?length,
                "backend ejected after failing requests in a row"
            );
            self.metrics
                .ejections
                .with_label_values(&[&site.name, &backend.id])
                .inc();
        }
    }
}

/// Methods whose repetition has the same effect as one request (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The authority the client asked for: the absolute-form or HTTP/2 authority, else Host. Two
/// Host headers, or a Host naming another authority than the target, are refused: a backend or
/// a cache might read the other one.
fn request_host(req: &http::request::Parts) -> Result<Authority, ProxyError> {
    let mut hosts = req.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::DuplicateHost);
    }
    let authority = match req.uri.authority() {
        // RFC 9112 §3.2: a target with an authority and no scheme is the authority form,
        // CONNECT's alone (refused before this): `GET host:80` is not a request for `host`.
        Some(_) if req.uri.scheme().is_none() => return Err(ProxyError::BadTarget),
        Some(authority) => {
            if host.is_some_and(|h| {
                !h.as_bytes()
                    .eq_ignore_ascii_case(authority.as_str().as_bytes())
            }) {
                return Err(ProxyError::HostMismatch);
            }
            authority.clone()
        }
        None => {
            let host = host.ok_or(ProxyError::MissingHost)?;
            Authority::try_from(host.as_bytes()).map_err(|_| ProxyError::BadHost)?
        }
    };
    if !is_host(authority.as_str()) {
        return Err(ProxyError::BadHost);
    }
    Ok(authority)
}

/// Whether an authority is what a Host or `:authority` may be: a host and a port of digits.
/// - An authority may carry userinfo (`user@host`); a Host or `:authority` may not (RFC 9112
///   §3.2, RFC 9113 §8.3.1), and RFC 9110 §4.2.4 has it treated as an error: `good@evil`
///   passed on as Host and X-Forwarded-Host reads as `good` to a backend's allow list that
///   checks the start, and as `evil` to the browser that follows a link built from it.
/// - A port is digits (RFC 3986 §3.2.3), and RFC 9112 §3.2 answers a Host of another shape
///   with 400; `http` parses `app.test:abc` and only finds no port in it.
fn is_host(authority: &str) -> bool {
    if authority.contains('@') {
        return false;
    }
    // From the end, where a port is: digits up to a `:` are a port, a `]` closes an IPv6
    // literal with none after it, and a `:` after anything but digits ends a bad port.
    // (A loop over the whole Host cost 120 instructions a request; this costs a few.)
    let mut digits = true;
    for &b in authority.as_bytes().iter().rev() {
        match b {
            b':' => return digits,
            b']' => return true,
            b'0'..=b'9' => {}
            _ => digits = false,
        }
    }
    true
}

/// The path and query to forward: the canonical path (see `paths.rs`), checked against the
/// listener's policy, and the query as sent.
fn checked_target(uri: &Uri, listener: &ListenerContext) -> Result<PathAndQuery, ProxyError> {
    let pq = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    if pq.len() > listener.limits.max_uri_length {
        return Err(ProxyError::UriTooLong(listener.limits.max_uri_length));
    }
    let canonical = paths::canonicalize(uri.path()).map_err(|e| match uri.path() {
        // `*` (OPTIONS' server-wide form, RFC 9112 §3.2.4) is not a resource behind a reverse
        // proxy.
        path if !path.starts_with('/') => ProxyError::BadTarget,
        _ => ProxyError::from(e),
    })?;
    if listener.paths.denies(&canonical) {
        return Err(ProxyError::Denied(listener.deny_status));
    }
    let rebuilt = match (canonical, uri.query()) {
        (Cow::Borrowed(_), _) => {
            return Ok(uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")))
        }
        (Cow::Owned(path), None) => PathAndQuery::try_from(path),
        (Cow::Owned(path), Some(q)) => PathAndQuery::try_from(format!("{path}?{q}")),
    };
    // A canonical path is made of the characters of a valid one.
    rebuilt.map_err(|_| ProxyError::BadPath(paths::PathError::BadEscape))
}

/// The bytes a `hash` algorithm keys on, if the request has them.
fn hash_key(
    algorithm: &Algorithm,
    req: &http::request::Parts,
    conn: &ConnContext,
) -> Option<Vec<u8>> {
    let Algorithm::Hash(key) = algorithm else {
        return None;
    };
    match key {
        HashKey::SourceIp => Some(conn.peer.ip().to_string().into_bytes()),
        HashKey::Header(name) => req.headers.get(name).map(|v| v.as_bytes().to_vec()),
        HashKey::Cookie(name) => cookies::find(&req.headers, name).map(|v| v.as_bytes().to_vec()),
    }
}

fn https_redirect(
    host: &Authority,
    uri: &Uri,
    redirect: HttpsRedirect,
) -> Result<Response<ProxyBody>, ProxyError> {
    let pq = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let location = match redirect.port {
        443 => format!("https://{}{pq}", host.host()),
        port => format!("https://{}:{port}{pq}", host.host()),
    };
    match HeaderValue::try_from(location) {
        Ok(value) => {
            // 308, not 301: a POST to the login form must stay a POST.
            let mut resp = local_response(StatusCode::PERMANENT_REDIRECT, "");
            resp.headers_mut().insert(header::LOCATION, value);
            Ok(resp)
        }
        Err(_) => Err(ProxyError::BadHost),
    }
}
