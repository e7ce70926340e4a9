//! The pooled client to the backends of one site. A hand-written connector (rather than
//! hyper-util's `HttpConnector`) because the proxy needs to know *why* a connection failed —
//! refused, timed out, TLS — to answer and count it correctly, and because TLS to backends
//! verifies a configured server name rather than the address in the URI.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::body::{AttemptBody, BodyError};
use crate::config::{Timeouts, UpstreamPool};
use crate::tls::UpstreamTls;

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

/// One site's client: a pool of kept-alive connections per backend address.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<Connector, AttemptBody>,
    scheme: http::uri::Scheme,
    response_timeout: Duration,
}

impl UpstreamClient {
    pub fn new(tls: Option<UpstreamTls>, timeouts: &Timeouts, pool: &UpstreamPool) -> Self {
        let scheme = if tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };
        let connector = Connector::new(tls, timeouts.upstream_connect);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(pool.idle_timeout)
            .pool_max_idle_per_host(pool.max_idle_per_backend)
            // The original Host is forwarded as the client sent it; never derive it.
            .set_host(false)
            .build(connector);
        UpstreamClient {
            client,
            scheme,
            response_timeout: timeouts.upstream_response,
        }
    }

    pub fn scheme(&self) -> &http::uri::Scheme {
        &self.scheme
    }

    /// Sends a request whose URI already names the backend; waits for the response head at
    /// most the response timeout. Bodies stream both ways: nothing here buffers them.
    pub async fn send(
        &self,
        req: Request<AttemptBody>,
    ) -> Result<Response<hyper::body::Incoming>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::ResponseTimeout(self.response_timeout)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(e)),
        }
    }
}

fn classify(e: hyper_util::client::legacy::Error) -> UpstreamError {
    // Our connector's error is somewhere in the source chain of a connect error.
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return UpstreamError::Connect(c.clone());
        }
        if let Some(b) = s.downcast_ref::<BodyError>() {
            return UpstreamError::Body(*b);
        }
        source = s.source();
    }
    let closed = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<hyper::Error>())
        .is_some_and(|h| {
            let reset = std::error::Error::source(h)
                .and_then(|s| s.downcast_ref::<io::Error>())
                .is_some_and(|io| {
                    matches!(
                        io.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    )
                });
            h.is_incomplete_message() || h.is_canceled() || reset
        });
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

#[derive(Clone)]
pub(crate) struct Connector {
    tls: Option<Arc<UpstreamTls>>,
    connect_timeout: Duration,
}

impl Connector {
    pub(crate) fn new(tls: Option<UpstreamTls>, connect_timeout: Duration) -> Connector {
        Connector {
            tls: tls.map(Arc::new),
            connect_timeout,
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await })
    }
}

impl Connector {
    async fn connect(self, uri: Uri) -> Result<UpstreamIo, ConnectError> {
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
            return Err(ConnectError::BadAddress(authority));
        };
        // `Uri::host` keeps the brackets of an IPv6 literal; the socket API wants them off.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let timeout = self.connect_timeout;
        let attempt = async {
            let tcp = connect_any(host, port, &authority).await?;
            // Requests are small writes answered by small reads: Nagle would add 40 ms stalls.
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => Ok(MaybeTls::Plain(tcp)),
                Some(tls) => {
                    let name = tls
                        .server_name_for(host)
                        .map_err(|e| ConnectError::Tls(authority.clone(), e.to_string()))?;
                    let stream = tokio_rustls::TlsConnector::from(tls.client_config.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| ConnectError::Tls(authority.clone(), e.to_string()))?;
                    Ok(MaybeTls::Tls(Box::new(stream)))
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Err(_) => Err(ConnectError::Timeout(authority, timeout)),
            Ok(result) => result.map(|io| UpstreamIo(TokioIo::new(io))),
        }
    }
}

/// Resolves (an IP literal costs no lookup) and tries each address in turn, as a host name with
/// both an A and an AAAA record may answer on only one of them.
async fn connect_any(host: &str, port: u16, authority: &str) -> Result<TcpStream, ConnectError> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ConnectError::Resolve(authority.to_string(), e.to_string()))?;
    let mut last = ConnectError::Resolve(authority.to_string(), "no address".into());
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                last = ConnectError::Refused(authority.to_string())
            }
            Err(e) => last = ConnectError::Io(authority.to_string(), e.to_string()),
        }
    }
    Err(last)
}

pub(crate) enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A backend connection as hyper's client sees it.
pub(crate) struct UpstreamIo(TokioIo<MaybeTls>);

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
