//! One request: redirect or pick a backend, rewrite the head, forward, rewrite the response
//! head, stream the body back. Errors become responses in `error.rs`; nothing here lets an
//! error reach hyper, which would drop the connection instead of answering.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

use crate::access::RequestRecord;
use crate::backends::{Backend, SharedSnapshot};
use crate::body::ProxyBody;
use crate::config::HttpsRedirect;
use crate::connection::ConnContext;
use crate::error::{local_response, ProxyError};
use crate::headers::{self, ForwardedFor};

pub struct Proxy {
    snapshot: SharedSnapshot,
    /// Upgraded (WebSocket) tunnels outlive their request; tracked so shutdown waits for them.
    tunnels: TaskTracker,
    access_log: bool,
}

impl Proxy {
    pub fn new(snapshot: SharedSnapshot, tunnels: TaskTracker, access_log: bool) -> Proxy {
        Proxy {
            snapshot,
            tunnels,
            access_log,
        }
    }

    pub async fn handle(
        &self,
        req: Request<Incoming>,
        conn: Arc<ConnContext>,
    ) -> Response<ProxyBody> {
        let mut record = RequestRecord::begin(conn.clone(), &req, self.access_log);
        let resp = match self.route(req, &conn, &mut record).await {
            Ok(resp) => resp,
            Err(err) => {
                if err.is_client_error() {
                    tracing::debug!(peer = %record.peer(), error = %err, "request refused");
                } else {
                    tracing::warn!(peer = %record.peer(), error = %err, "request failed");
                }
                err.into_response()
            }
        };
        record.status = resp.status();
        resp.map(|body| body.with_record(record))
    }

    async fn route(
        &self,
        mut req: Request<Incoming>,
        conn: &ConnContext,
        record: &mut RequestRecord,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed(Method::CONNECT));
        }
        let host = request_host(&req)?;
        if let Some(redirect) = conn.listener.redirect {
            return Ok(https_redirect(&host, req.uri(), redirect));
        }

        let snapshot = self.snapshot.load();
        let site = snapshot.active_site().ok_or(ProxyError::NoSite)?;
        let backend = site
            .pick()
            .ok_or_else(|| ProxyError::NoBackend(site.name.clone()))?;
        record.backend = Some(backend.id.clone());

        // Only HTTP/1.1 has Upgrade; HTTP/2 clients never reach this.
        let client_upgrade = (req.version() == Version::HTTP_11
            && headers::is_upgrade_request(req.headers()))
        .then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, client_upgrade.is_some());
        let host_value = HeaderValue::from_str(host.as_str()).map_err(|_| ProxyError::BadHost)?;
        headers::set_forwarded(
            &mut parts.headers,
            &ForwardedFor {
                client_ip: conn.peer.ip(),
                proto: if conn.listener.tls { "https" } else { "http" },
                host: Some(&host_value),
                port: conn.listener.port,
            },
        );
        // HTTP/2 carries the host in :authority; the HTTP/1.1 backend needs it as Host.
        parts.headers.insert(header::HOST, host_value);
        parts.uri = backend_uri(site.client.scheme(), backend, parts.uri.path_and_query());
        parts.version = Version::HTTP_11;

        let mut resp = site
            .client
            .send(Request::from_parts(parts, body))
            .await
            .map_err(|error| {
                conn.listener.upstream_error(&backend.id, error.kind());
                ProxyError::Upstream {
                    backend: backend.id.clone(),
                    error,
                }
            })?;

        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let (true, Some(client)) = (switching, client_upgrade) {
            let upstream = hyper::upgrade::on(&mut resp);
            self.tunnels.spawn(tunnel(client, upstream));
        }
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, switching);
        parts.version = Version::HTTP_11;
        Ok(Response::from_parts(parts, ProxyBody::upstream(body)))
    }
}

/// The authority the client asked for: the absolute-form or HTTP/2 authority, else Host.
fn request_host<B>(req: &Request<B>) -> Result<Authority, ProxyError> {
    if let Some(authority) = req.uri().authority() {
        return Ok(authority.clone());
    }
    let host = req
        .headers()
        .get(header::HOST)
        .ok_or(ProxyError::MissingHost)?;
    Authority::try_from(host.as_bytes()).map_err(|_| ProxyError::BadHost)
}

fn backend_uri(scheme: &http::uri::Scheme, backend: &Backend, pq: Option<&PathAndQuery>) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(backend.authority.clone());
    parts.path_and_query = Some(
        pq.cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).expect("scheme, authority and path make a valid URI")
}

fn https_redirect(host: &Authority, uri: &Uri, redirect: HttpsRedirect) -> Response<ProxyBody> {
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
            resp
        }
        Err(_) => ProxyError::BadHost.into_response(),
    }
}

/// Copies bytes both ways once both sides have switched protocols.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    match tokio::join!(client, upstream) {
        (Ok(client), Ok(upstream)) => {
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        (Err(e), _) | (_, Err(e)) => tracing::debug!(error = %e, "protocol upgrade failed"),
    }
}
