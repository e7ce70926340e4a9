//! The client to the backends of one site, HTTP/1.1 written for proxying (`crate::http1`):
//! the request owns a backend connection (`conn.rs`) for its exchange, takes it from the
//! backend's pool of kept-alive ones (`pool.rs`) or opens one with a connector that knows *why*
//! a connection failed (refused, timed out, TLS) so the proxy can answer and count it correctly
//! (`connect.rs`), and the response body gives it back when it ends (`response.rs`).

mod conn;
mod connect;
mod exchange;
mod pool;
mod response;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::body::BodyError;
use crate::config::{Timeouts, UpstreamPool};
use crate::tls::UpstreamTls;

pub(crate) use connect::Connector;
pub use connect::MaybeTls;
pub(crate) use exchange::probe_get;
pub use exchange::UpstreamResponse;
pub use pool::IdlePool;
use pool::PoolSettings;
pub use response::{BodyReadError, UpstreamBody};

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
}

/// A read or write on a backend connection failed: reset or closed means the backend went
/// away (the request may or may not have been processed), anything else is a protocol error.
fn io_failure(e: &io::Error, doing: &str) -> UpstreamError {
    let text = format!("{doing}: {e}");
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => UpstreamError::Closed(text),
        _ => UpstreamError::Protocol(text),
    }
}
