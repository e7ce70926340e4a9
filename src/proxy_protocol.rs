//! PROXY protocol (v1 text and v2 binary, as HAProxy specifies them): an L4 load balancer in
//! front writes the real client address before the connection's own bytes. Only peers in the
//! listener's `proxy_protocol_from` networks may do so; anyone else could claim any address, so
//! on such a listener their connections are refused. Parsing is the `ppp` crate's; this module
//! reads exactly what it needs and hands the rest of the bytes on.

use std::io;
use std::net::{IpAddr, SocketAddr};

use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt};

pub use crate::prefixed::Prefixed;

/// A v2 header with room for the usual TLVs; HAProxy reads at most this much too.
const MAX_HEADER: usize = 536;

#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("PROXY header from {0}, which is not in proxy_protocol_from")]
    Untrusted(IpAddr),
    #[error("invalid PROXY header: {0}")]
    Invalid(String),
    #[error("PROXY header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("connection closed before a complete PROXY header")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl ProxyHeaderError {
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyHeaderError::Untrusted(_) => "proxy_protocol_untrusted",
            _ => "proxy_protocol",
        }
    }
}

/// Reads the PROXY header from `io` (whose TCP peer is `peer`) and returns the client address
/// it names (the peer itself for v2 LOCAL and v1 UNKNOWN: the balancer's own health checks),
/// with the stream, the bytes read past the header still to come.
pub async fn accept<I>(
    mut io: I,
    peer: SocketAddr,
    trusted: &[ipnet::IpNet],
) -> Result<(Prefixed<I>, SocketAddr), ProxyHeaderError>
where
    I: AsyncRead + Unpin,
{
    if !trusted.iter().any(|net| net.contains(&peer.ip())) {
        return Err(ProxyHeaderError::Untrusted(peer.ip()));
    }
    let mut buf = vec![0u8; MAX_HEADER];
    let mut filled = 0;
    loop {
        let n = io.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        filled += n;
        let parsed = HeaderResult::parse(&buf[..filled]);
        if parsed.is_incomplete() {
            // A v1 header ends at its first CRLF: past it, more bytes cannot make it valid.
            let v1_ended =
                buf.starts_with(b"PROXY ") && buf[..filled].windows(2).any(|w| w == b"\r\n");
            if v1_ended {
                return Err(ProxyHeaderError::Invalid("malformed v1 header".into()));
            }
            if filled == buf.len() {
                return Err(ProxyHeaderError::TooLong);
            }
            continue;
        }
        let (len, client) = match parsed {
            HeaderResult::V1(Ok(header)) => (header.header.len(), v1_client(&header.addresses)),
            HeaderResult::V2(Ok(header)) => (header.len(), v2_client(&header)),
            HeaderResult::V1(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
            HeaderResult::V2(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
        };
        buf.truncate(filled);
        let rest = buf.split_off(len);
        return Ok((Prefixed::new(rest, io), client.unwrap_or(peer)));
    }
}

fn v1_client(addresses: &v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    }
}

fn v2_client(header: &v2::Header<'_>) -> Option<SocketAddr> {
    if header.command == v2::Command::Local {
        return None;
    }
    match &header.addresses {
        v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::Unix(_) | v2::Addresses::Unspecified => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> Vec<ipnet::IpNet> {
        vec!["10.0.0.0/8".parse().unwrap()]
    }

    async fn read_all<I: AsyncRead + Unpin>(mut io: I) -> Vec<u8> {
        let mut out = Vec::new();
        io.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn v1_and_v2_name_the_client_and_keep_the_bytes_after_them() {
        let lb: SocketAddr = "10.1.2.3:40000".parse().unwrap();
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n".to_vec();
        let (rest, client) = accept(&v1[..], lb, &trusted()).await.unwrap();
        assert_eq!(client, "203.0.113.7:51234".parse().unwrap());
        assert_eq!(read_all(rest).await, b"GET / HTTP/1.1\r\n");

        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        v2.extend([
            0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 1, 187,
        ]);
        v2.extend(b"hello");
        let (rest, client) = accept(&v2[..], lb, &trusted()).await.unwrap();
        assert_eq!(client, "198.51.100.9:8080".parse().unwrap());
        assert_eq!(read_all(rest).await, b"hello");

        // LOCAL (the balancer's own health check): the peer itself.
        let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(accept(&local[..], lb, &trusted()).await.unwrap().1, lb);
    }

    #[tokio::test]
    async fn untrusted_peers_and_bad_headers_are_refused() {
        let outsider: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n".to_vec();
        assert!(matches!(
            accept(&v1[..], outsider, &trusted()).await,
            Err(ProxyHeaderError::Untrusted(_))
        ));
        let lb: SocketAddr = "10.1.2.3:40000".parse().unwrap();
        for bad in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"PROXY TCP4 nonsense\r\n"] {
            let result = accept(bad, lb, &trusted()).await;
            assert!(
                matches!(result, Err(ProxyHeaderError::Invalid(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(bad),
                result.err()
            );
        }
        assert!(matches!(
            accept(&b"PROXY TCP4 1.2"[..], lb, &trusted()).await,
            Err(ProxyHeaderError::Closed)
        ));
    }
}
