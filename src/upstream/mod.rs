//! The client to the backends of one site: connections kept alive per backend (`pool.rs`),
//! made by a connector that knows *why* a connection failed — refused, timed out, TLS — so the
//! proxy can answer and count it correctly (`connect.rs`).

mod connect;
mod pool;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::client::conn::http1;

use crate::backends::Backend;
use crate::body::{AttemptBody, BodyError};
use crate::config::{Timeouts, UpstreamPool};
use crate::tls::UpstreamTls;

pub(crate) use connect::Connector;
pub use pool::{IdlePool, UpstreamBody};
use pool::{PoolSettings, Reuse, Sender};

/// Why a backend exchange failed; each kind maps to one status and one metric label.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect: {0}")]
    Connect(#[from] ConnectError),
    #[error("no response head within {0:?}")]
    ResponseTimeout(Duration),
    /// The connection closed (or reset) before a response head: the request may or may not
    /// have been processed.
    #[error("connection closed before the response: {0}")]
    Closed(String),
    #[error("{0}")]
    Protocol(String),
    /// The client's body, not the backend, failed the exchange.
    #[error(transparent)]
    Body(BodyError),
}

impl UpstreamError {
    /// Whether the backend is to blame (counts toward passive ejection).
    pub fn is_backend_failure(&self) -> bool {
        !matches!(self, UpstreamError::Body(_))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(c) => c.kind(),
            UpstreamError::ResponseTimeout(_) => "response_timeout",
            UpstreamError::Closed(_) => "closed",
            UpstreamError::Protocol(_) => "protocol",
            UpstreamError::Body(_) => "client_body",
        }
    }
}

/// Cloneable (causes kept as text) because hyper's client hands it back only by reference.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("connection refused by {0}")]
    Refused(String),
    #[error("no connection to {0} within {1:?}")]
    Timeout(String, Duration),
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    #[error("TLS to {0} failed: {1}")]
    Tls(String, String),
    #[error("cannot connect to {0}: {1}")]
    Io(String, String),
    #[error("bad backend address {0}")]
    BadAddress(String),
}

impl ConnectError {
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::Refused(_) => "connect_refused",
            ConnectError::Timeout(..) => "connect_timeout",
            ConnectError::Resolve(..) => "resolve",
            ConnectError::Tls(..) => "tls",
            ConnectError::Io(..) | ConnectError::BadAddress(_) => "connect",
        }
    }
}

/// One site's client. Cheap to clone; the connections belong to the backends.
#[derive(Clone)]
pub struct UpstreamClient {
    connector: Connector,
    pool: Arc<PoolSettings>,
    response_timeout: Duration,
}

impl UpstreamClient {
    pub fn new(tls: Option<UpstreamTls>, timeouts: &Timeouts, pool: &UpstreamPool) -> Self {
        UpstreamClient {
            connector: Connector::new(tls, timeouts.upstream_connect),
            pool: Arc::new(PoolSettings::new(
                pool.idle_timeout,
                pool.max_idle_per_backend,
            )),
            response_timeout: timeouts.upstream_response,
        }
    }

    /// Sends a request (origin-form target, Host set) to `backend`; waits for the response
    /// head at most the response timeout, connecting included. Bodies stream both ways:
    /// nothing here buffers them.
    pub async fn send(
        &self,
        backend: &Arc<Backend>,
        req: Request<AttemptBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, self.exchange(backend, req)).await {
            Err(_) => Err(UpstreamError::ResponseTimeout(self.response_timeout)),
            Ok(result) => result,
        }
    }

    async fn exchange(
        &self,
        backend: &Arc<Backend>,
        mut req: Request<AttemptBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        loop {
            let (mut sender, fresh) = match backend.pool.take(self.pool.idle_timeout) {
                Some(sender) => (sender, false),
                // Boxed: connecting (TLS state included) is the rare path, and inline it
                // would make every request's future kilobytes larger, copied as it moves.
                None => (Box::pin(self.open(backend)).await?, true),
            };
            // A returned connection is ready once hyper has seen its last response end.
            if !sender.is_ready() && sender.ready().await.is_err() {
                if fresh {
                    return Err(UpstreamError::Closed(
                        "closed before the first request".into(),
                    ));
                }
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    // An upgraded connection belongs to its tunnel, never to the pool.
                    let reuse = (resp.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| Reuse {
                        sender,
                        backend: backend.clone(),
                        settings: self.pool.clone(),
                    });
                    return Ok(resp.map(|body| UpstreamBody::new(body, reuse)));
                }
                Err(mut e) => match e.take_message() {
                    // Not a byte was written: a kept-alive connection the backend had just
                    // closed. Safe to send again, whatever the method; a new connection that
                    // fails this way is the backend's answer.
                    Some(unsent) if !fresh => req = unsent,
                    _ => return Err(classify(e.into_error())),
                },
            }
        }
    }

    async fn open(&self, backend: &Backend) -> Result<Sender, UpstreamError> {
        let io = self.connector.connect(&backend.authority).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let id = backend.id.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(backend = %id, error = %e, "backend connection ended with an error");
            }
        });
        Ok(sender)
    }
}

fn classify(e: hyper::Error) -> UpstreamError {
    // The client's body failing the exchange is not the backend's fault.
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<BodyError>() {
            return UpstreamError::Body(*b);
        }
        source = s.source();
    }
    let reset = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            )
        });
    let closed = e.is_incomplete_message() || e.is_canceled() || reset;
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if closed {
        UpstreamError::Closed(text)
    } else {
        UpstreamError::Protocol(text)
    }
}
