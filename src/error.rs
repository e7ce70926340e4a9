//! Every way a request can fail inside the proxy, and the one place where each becomes a
//! response. The match is exhaustive on purpose: a new failure cannot be added without deciding
//! its status. Bodies are short and never name backends: clients learn the status, operators
//! read the log and the metrics.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{BodyError, ProxyBody};
use crate::upstream::{ConnectError, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("request has no Host header or authority")]
    MissingHost,
    #[error("Host header is not a valid authority")]
    BadHost,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("Host header disagrees with the request target's authority")]
    HostMismatch,
    #[error("request path refused: {0}")]
    BadPath(#[from] crate::paths::PathError),
    #[error("request target is neither a path nor an absolute URI")]
    BadTarget,
    #[error("request target longer than {0} bytes")]
    UriTooLong(usize),
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("path denied by policy")]
    Denied(StatusCode),
    #[error("path restricted to other client networks")]
    Restricted(StatusCode),
    #[error("method {0} is not proxied")]
    MethodNotAllowed(http::Method),
    #[error("no backend available in site {0}")]
    NoBackend(String),
    #[error("no site configured")]
    NoSite,
    #[error("request shed: {0}")]
    Shed(crate::admission::Shed),
    #[error("client over its rate limit")]
    RateLimited(crate::rate_limit::Limited),
    #[error("backend {backend}: {error}")]
    Upstream {
        backend: String,
        error: UpstreamError,
    },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::MissingHost
            | ProxyError::BadHost
            | ProxyError::DuplicateHost
            | ProxyError::HostMismatch
            | ProxyError::BadPath(_)
            | ProxyError::BadTarget => StatusCode::BAD_REQUEST,
            ProxyError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Denied(status) | ProxyError::Restricted(status) => *status,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::NoBackend(_) | ProxyError::NoSite | ProxyError::Shed(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Upstream { error, .. } => match error {
                UpstreamError::Body(BodyError::TooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
                UpstreamError::Body(BodyError::TooSlow(_)) => StatusCode::REQUEST_TIMEOUT,
                UpstreamError::Body(BodyError::Aborted | BodyError::Malformed) => {
                    StatusCode::BAD_REQUEST
                }
                UpstreamError::ResponseTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
                UpstreamError::Closed(_) | UpstreamError::Protocol(_) => StatusCode::BAD_GATEWAY,
                UpstreamError::Connect(c) => match c {
                    ConnectError::Refused(_)
                    | ConnectError::Timeout(..)
                    | ConnectError::Resolve(..)
                    | ConnectError::Tls(..)
                    | ConnectError::Io(..)
                    | ConnectError::BadAddress(_) => StatusCode::BAD_GATEWAY,
                },
            },
        }
    }

    /// Why the listener's rules refused the request before any backend, as
    /// `sessiongate_requests_refused_total` labels it; `None` for every other failure.
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            ProxyError::Denied(_) => Some("denied_path"),
            ProxyError::Restricted(_) => Some("client_network"),
            ProxyError::BadPath(_) => Some("ambiguous_path"),
            _ => None,
        }
    }

    /// Is this the client's doing (logged quietly) or the proxy's and backends' (logged loudly)?
    pub fn is_client_error(&self) -> bool {
        self.status().is_client_error()
    }
}

/// A short plain-text answer from the proxy itself.
pub fn local_response(status: StatusCode, detail: &str) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("");
    let text = if detail.is_empty() {
        format!("{} {reason}\n", status.as_u16())
    } else {
        format!("{} {reason}: {detail}\n", status.as_u16())
    };
    let mut resp = Response::new(ProxyBody::local(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

impl ProxyError {
    pub fn into_response(self) -> Response<ProxyBody> {
        let detail = match &self {
            ProxyError::MissingHost => "missing Host",
            ProxyError::BadHost => "invalid Host",
            ProxyError::DuplicateHost => "more than one Host",
            ProxyError::HostMismatch => "Host does not match the request target",
            ProxyError::BadPath(_) => "ambiguous path",
            ProxyError::BadTarget => "the request target must be a path or an absolute URI",
            ProxyError::UriTooLong(_) => "request target too long",
            ProxyError::BodyTooLarge(_) => "request body too large",
            ProxyError::Denied(_) | ProxyError::Restricted(_) => "",
            ProxyError::MethodNotAllowed(_) => "method not allowed",
            ProxyError::NoBackend(_) | ProxyError::NoSite => "no backend available",
            ProxyError::Shed(_) => "overloaded, retry later",
            ProxyError::RateLimited(_) => "too many requests, retry later",
            ProxyError::Upstream { error, .. } => match error {
                UpstreamError::Body(BodyError::TooLarge(_)) => "request body too large",
                UpstreamError::Body(BodyError::TooSlow(_)) => "request body too slow",
                UpstreamError::Body(BodyError::Aborted) => "request body incomplete",
                UpstreamError::Body(BodyError::Malformed) => "malformed request body",
                UpstreamError::ResponseTimeout(_) => "backend did not answer in time",
                UpstreamError::Connect(_) => "backend unreachable",
                UpstreamError::Closed(_) | UpstreamError::Protocol(_) => {
                    "backend connection failed"
                }
            },
        };
        let mut resp = local_response(self.status(), detail);
        match self {
            ProxyError::MethodNotAllowed(_) => {
                resp.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
                );
            }
            ProxyError::RateLimited(limited) => {
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(crate::rate_limit::retry_after_secs(limited)),
                );
            }
            _ => {}
        }
        resp
    }
}
