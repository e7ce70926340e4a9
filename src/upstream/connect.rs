//! Connections to backends: TCP with the reason of a failure kept, and TLS verifying a
//! configured server name rather than the address.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::ConnectError;
use crate::tls::UpstreamTls;

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

impl Connector {
    /// A new connection to `host:port`, TLS included when the site re-encrypts.
    pub(crate) async fn connect(&self, to: &Authority) -> Result<MaybeTls, ConnectError> {
        let authority = to.as_str().to_string();
        let (host, Some(port)) = (to.host(), to.port_u16()) else {
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
            Ok(result) => result,
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

/// A backend connection, plain or re-encrypted.
pub enum MaybeTls {
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
