//! Header hygiene between the client and the backend: hop-by-hop headers (RFC 9110 §7.6.1) and
//! every header the sender named in `Connection` are removed in both directions, and the
//! forwarded headers are written by the proxy, replacing anything the client sent. Trusting a
//! previous proxy's headers is deliberately not possible yet: a client-sent `X-Forwarded-For`
//! would otherwise reach Keycloak, which uses it for brute-force detection and events.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that only ever describe one hop, whether or not `Connection` lists them.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Does this HTTP/1.1 request ask to switch protocols (WebSocket and the like)?
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_lists(headers, "upgrade")
}

fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers and those named in `Connection`. With `upgrade`, the
/// `Connection: upgrade` and `Upgrade` pair is put back, since a protocol switch must reach the
/// other side to happen at all (RFC 9110 §7.8).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let upgrade_value = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    // Names listed in Connection: collected first, as removing while reading is not possible.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if let Some(value) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
}

/// What the proxy knows about the hop it received a request on.
pub struct ForwardedFor<'a> {
    pub client_ip: IpAddr,
    pub proto: &'static str,
    pub host: Option<&'a HeaderValue>,
    pub port: u16,
}

/// Writes X-Forwarded-For/-Proto/-Host/-Port and removes client-sent `Forwarded` and
/// `X-Real-IP`, so a backend configured for either header style sees only the proxy's word.
pub fn set_forwarded(headers: &mut HeaderMap, f: &ForwardedFor<'_>) {
    headers.remove(header::FORWARDED);
    headers.remove(&X_REAL_IP);
    headers.insert(X_FORWARDED_FOR.clone(), ip_value(f.client_ip));
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(f.proto));
    match f.host {
        Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host.clone()),
        None => headers.remove(&X_FORWARDED_HOST),
    };
    headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(f.port));
}

fn ip_value(ip: IpAddr) -> HeaderValue {
    // An IPv4-mapped IPv6 peer (dual-stack listener) is reported as the IPv4 it is.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    HeaderValue::try_from(ip.to_string()).expect("an IP address is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn removes_standard_and_connection_listed_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept"]);
    }

    #[test]
    fn upgrade_keeps_only_the_switch() {
        let mut h = map(&[
            ("connection", "Upgrade, x-secret"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
        ]);
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert!(h.get("x-secret").is_none());
    }

    #[test]
    fn forwarded_headers_replace_client_values() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("x-forwarded-host", "evil.test"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
        ]);
        let host = HeaderValue::from_static("auth.example.test");
        set_forwarded(
            &mut h,
            &ForwardedFor {
                client_ip: "::ffff:10.1.2.3".parse().unwrap(),
                proto: "https",
                host: Some(&host),
                port: 8443,
            },
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "auth.example.test");
        assert_eq!(h.get("x-forwarded-port").unwrap(), "8443");
        assert!(h.get("forwarded").is_none() && h.get("x-real-ip").is_none());
    }
}
