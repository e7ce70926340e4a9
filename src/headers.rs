//! Header hygiene between the client and the backend: hop-by-hop headers (RFC 9110 §7.6.1) and
//! every header the sender named in `Connection` are removed in both directions, and the
//! forwarded headers are written by the proxy.
//!
//! A client-sent `X-Forwarded-For` would reach Keycloak, which trusts it for brute-force
//! detection and events, and `X-Original-URL` / `X-Rewrite-URL` make some frameworks route on a
//! path the proxy never checked. So every forwarded-style header the client sent (and their
//! underscore spellings, which some servers read as dashes) is removed and replaced by the
//! proxy's own, unless the peer is a configured trusted proxy: then the chain is extended.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that only ever describe one hop, whether or not `Connection` lists them.
pub(crate) const HOP_BY_HOP: [HeaderName; 8] = [
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

/// Headers only the proxy may write (compared with `_` read as `-`). The first four are the
/// chain a trusted proxy may extend; the rest are always removed.
const PROXY_ONLY: [&str; 10] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
];

/// A byte of an HTTP token (RFC 9110 §5.6.2).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Does this HTTP/1.1 request ask to switch protocols (WebSocket and the like)?
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_lists(headers, "upgrade")
}

/// Does this request ask to switch protocols, to `allowed` ones only? Every protocol its
/// `Upgrade` lists must be allowed (the name before any `/version`, any case), since the
/// backend picks among them. A request that names another, `h2c` above all, is forwarded as
/// an ordinary one: its `Upgrade` is dropped with the other hop-by-hop fields, as Envoy and
/// HAProxy drop `h2c`.
pub fn allowed_upgrade(headers: &HeaderMap, allowed: &[String]) -> bool {
    is_upgrade_request(headers)
        && headers
            .get_all(header::UPGRADE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|p| {
                p.split(|&b| b == b'/')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii()
            })
            .all(|name| {
                !name.is_empty()
                    && allowed
                        .iter()
                        .any(|a| a.as_bytes().eq_ignore_ascii_case(name))
            })
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
    // One pass over the names, comparing without hashing, finds which fixed hop-by-hop names
    // are there; most messages have none, or only `Connection`.
    let mut present = [false; 8]; // HOP_BY_HOP.len()
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let upgrade_value = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    // Collected first, as removing while reading is not possible.
    let listed = listed_in_connection(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    );
    for name in &listed {
        headers.remove(name);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    if let Some(value) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
}

/// The field names `Connection` values list, beyond the fixed hop-by-hop ones. The usual
/// `keep-alive` and `close` are no field's name: left out, the list stays empty and allocates
/// nothing.
pub(crate) fn listed_in_connection<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<HeaderName> {
    values
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"close")
                && !HOP_BY_HOP
                    .iter()
                    .any(|h| t.eq_ignore_ascii_case(h.as_str().as_bytes()))
        })
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect()
}

/// What the proxy knows about the hop a connection came in on, rendered once when it opens:
/// every request on it has the same client, scheme and port, and would otherwise format them
/// again (a handful of allocations per request, measured in BENCHMARKS.md).
pub struct Hop {
    /// The client as X-Forwarded-For lists it: `192.0.2.1`, `2001:db8::7`.
    client: HeaderValue,
    /// The Forwarded element up to its host: `for=192.0.2.1;proto=https;host=`.
    element_prefix: String,
    proto: &'static str,
    port: HeaderValue,
    /// The last Host (owned, see `forwarded_value`) and the Forwarded element rendered for it:
    /// a kept-alive connection asks for the same host request after request.
    last: std::sync::Mutex<Option<(HeaderValue, HeaderValue)>>,
}

/// A client address as X-Forwarded-For lists it, and as a Forwarded `for=` names it (RFC 7239
/// §6: an IPv6 address bracketed and quoted).
fn client_texts(client: IpAddr) -> (HeaderValue, String) {
    let ip = ip_text(client);
    let node = if ip.contains(':') {
        format!("\"[{ip}]\"")
    } else {
        ip.clone()
    };
    let listed = HeaderValue::try_from(ip).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    (listed, node)
}

impl Hop {
    pub fn new(client_ip: IpAddr, proto: &'static str, port: u16) -> Hop {
        let (client, node) = client_texts(client_ip);
        Hop {
            client,
            element_prefix: format!("for={node};proto={proto};host="),
            proto,
            port: HeaderValue::from(port),
            last: std::sync::Mutex::new(None),
        }
    }

    /// This hop's Forwarded element for `host`, rendered once per host per connection.
    fn forwarded_value(&self, host: &HeaderValue) -> HeaderValue {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((h, element)) = last.as_ref() {
            if h == host {
                return element.clone();
            }
        }
        let element = chain(None, self.forwarded_element(host));
        // A copy, not a clone: the client's value is a slice of the read buffer, and holding
        // it would keep that whole buffer for the connection's life.
        let own = HeaderValue::from_bytes(host.as_bytes()).unwrap_or_else(|_| host.clone());
        *last = Some((own, element.clone()));
        element
    }

    /// `for=192.0.2.1;proto=https;host=auth.example.com`, quoting as RFC 7239 §4 requires:
    /// IPv6 addresses are bracketed and quoted, and a host that is not a token is quoted.
    pub fn forwarded_element(&self, host: &HeaderValue) -> String {
        // Sized for the host too, so that `with_host` need not grow it.
        let mut element = String::with_capacity(self.element_prefix.len() + host.len() + 2);
        element.push_str(&self.element_prefix);
        with_host(element, host)
    }
}

/// `prefix` (an element up to `host=`) and the host, quoted unless it is a token.
fn with_host(mut element: String, host: &HeaderValue) -> String {
    let host = String::from_utf8_lossy(host.as_bytes());
    element.reserve(host.len() + 2);
    if !host.is_empty() && host.bytes().all(is_tchar) {
        element.push_str(&host);
    } else {
        element.push('"');
        for c in host.chars() {
            if c == '\\' || c == '"' {
                element.push('\\');
            }
            element.push(c);
        }
        element.push('"');
    }
    element
}

/// The client's address as far as the proxy can tell: the peer, or, when the peer is a trusted
/// proxy, the nearest address in its `X-Forwarded-For` that is not a trusted proxy too (as
/// nginx's `real_ip_recursive`). The chain's left part is whatever the client wrote, so the
/// walk stops at the first address no trusted proxy stands behind; an entry that is not an
/// address stops it at the last trusted one.
pub fn client_address(
    headers: &HeaderMap,
    peer: IpAddr,
    trusts: impl Fn(IpAddr) -> bool,
) -> IpAddr {
    if !trusts(peer) {
        return peer;
    }
    let mut nearest = peer;
    let values = headers.get_all(&X_FORWARDED_FOR).iter().rev();
    for value in values {
        let Ok(text) = value.to_str() else {
            return nearest;
        };
        for element in text.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = element
                .parse::<IpAddr>()
                .or_else(|_| element.parse::<std::net::SocketAddr>().map(|s| s.ip()));
            match parsed {
                Ok(ip) if trusts(ip) => nearest = ip,
                Ok(ip) => return ip,
                Err(_) => return nearest,
            }
        }
    }
    nearest
}

/// One request's forwarding facts: its connection's hop and the host it asked for.
pub struct ForwardedFor<'a> {
    pub hop: &'a Hop,
    pub host: &'a HeaderValue,
    /// The peer is a trusted proxy: extend its chain instead of replacing it.
    pub trusted: bool,
    /// Behind a trusted proxy with `forwarded_for = "client"`: the client resolved from its
    /// chain, named alone instead of the chain.
    pub resolved: Option<IpAddr>,
}

/// Headers an operator may not give another job, such as carrying request IDs: hop-by-hop
/// ones, those only the proxy writes, and those that frame, route or authenticate a message.
pub fn is_reserved(name: &HeaderName) -> bool {
    const MESSAGE: [HeaderName; 11] = [
        header::HOST,
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::COOKIE,
        header::SET_COOKIE,
        header::AUTHORIZATION,
        header::LOCATION,
        header::EXPECT,
        header::STRICT_TRANSPORT_SECURITY,
        header::RETRY_AFTER,
    ];
    HOP_BY_HOP.contains(name) || MESSAGE.contains(name) || proxy_only(name).is_some()
}

fn proxy_only(name: &HeaderName) -> Option<usize> {
    let n = name.as_str();
    PROXY_ONLY.iter().position(|p| {
        p.len() == n.len()
            && p.bytes()
                .zip(n.bytes())
                .all(|(a, b)| a == b || (a == b'-' && b == b'_'))
    })
}

/// The proxy's forwarded fields for one request: `Forwarded` (RFC 7239) and
/// `X-Forwarded-For/-Proto/-Host/-Port`.
pub type Forwarded = [(HeaderName, HeaderValue); 5];

/// The fields the proxy writes into a request it forwards, after the client's: `Host` when
/// the client named the host only as the target's authority (HTTP/2's `:authority`), and the
/// forwarded fields. They go to the HTTP/1.1 head encoder as they are and never into the
/// request's map: a hashed insert there, into a map h2 sized to the fields it decoded, grew
/// it (about 600 instructions an HTTP/2 request, callgrind).
#[derive(Clone, Copy)]
pub struct Added<'a> {
    pub host: Option<&'a HeaderValue>,
    pub forwarded: &'a Forwarded,
}

impl<'a> Added<'a> {
    /// The fields as names and values, in the order they are written.
    pub fn fields(self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        let host = self
            .host
            .map(|v| (header::HOST.as_str().as_bytes(), v.as_bytes()));
        let forwarded = self
            .forwarded
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
        host.into_iter().chain(forwarded)
    }
}

/// Writes `Forwarded` (RFC 7239) and `X-Forwarded-For/-Proto/-Host/-Port` into `headers`.
pub fn set_forwarded(headers: &mut HeaderMap, f: &ForwardedFor<'_>) {
    for (name, value) in forwarded(headers, f) {
        headers.insert(name, value);
    }
}

/// Removes every forwarded-style field the client sent from `headers` and returns the proxy's
/// own, to be written after them (the HTTP/1.1 encoder takes them as they are, so the request
/// path never inserts them into the map).
pub fn forwarded(headers: &mut HeaderMap, f: &ForwardedFor<'_>) -> Forwarded {
    // Kept from a trusted peer: the chain so far (the exact names, not underscore spellings).
    let (mut prior_forwarded, mut prior_xff) = (None, None);
    if f.trusted && f.resolved.is_none() {
        prior_forwarded = joined(headers, &header::FORWARDED);
        prior_xff = joined(headers, &X_FORWARDED_FOR);
    }
    let (proto, host, port) = if f.trusted {
        (
            headers.get(&X_FORWARDED_PROTO).cloned(),
            headers.get(&X_FORWARDED_HOST).cloned(),
            headers.get(&X_FORWARDED_PORT).cloned(),
        )
    } else {
        (None, None, None)
    };
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| proxy_only(n).is_some())
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }

    let hop = f.hop;
    let (forwarded, client) = match f.resolved {
        // One element, for the client, with what the first hop said of scheme and host.
        Some(resolved) => {
            let (listed, node) = client_texts(resolved);
            let scheme = proto.as_ref().and_then(|p| p.to_str().ok());
            let prefix = format!("for={node};proto={};host=", scheme.unwrap_or(hop.proto));
            let element = with_host(prefix, host.as_ref().unwrap_or(f.host));
            (chain(None, element), listed)
        }
        None => (
            match prior_forwarded {
                Some(prior) => chain(Some(prior), hop.forwarded_element(f.host)),
                None => hop.forwarded_value(f.host),
            },
            match prior_xff {
                Some(prior) => chain(
                    Some(prior),
                    hop.client.to_str().unwrap_or("unknown").to_owned(),
                ),
                None => hop.client.clone(),
            },
        ),
    };
    [
        (header::FORWARDED, forwarded),
        (X_FORWARDED_FOR.clone(), client),
        (
            X_FORWARDED_PROTO.clone(),
            proto.unwrap_or(HeaderValue::from_static(hop.proto)),
        ),
        (
            X_FORWARDED_HOST.clone(),
            host.unwrap_or_else(|| f.host.clone()),
        ),
        (
            X_FORWARDED_PORT.clone(),
            port.unwrap_or_else(|| hop.port.clone()),
        ),
    ]
}

/// All values of a header as one comma-separated list, if any are valid text.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn chain(prior: Option<String>, ours: String) -> HeaderValue {
    let text = match prior {
        Some(p) => format!("{p}, {ours}"),
        None => ours,
    };
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// An IPv4-mapped IPv6 peer (dual-stack listener) is reported as the IPv4 it is.
fn ip_text(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
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

    const SPOOFED: &[(&str, &str)] = &[
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-for", "7.7.7.7"),
        ("x-forwarded-host", "evil.test"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
        ("x_forwarded_for", "6.6.6.6"),
        ("X_Real_IP", "6.6.6.6"),
        ("x-original-url", "/metrics"),
        ("x-rewrite-url", "/metrics"),
        ("x-forwarded-prefix", "/admin"),
    ];

    #[test]
    fn forwarded_headers_replace_client_values() {
        let mut h = map(SPOOFED);
        let host = HeaderValue::from_static("auth.example.test");
        set_forwarded(
            &mut h,
            &ForwardedFor {
                hop: &Hop::new("::ffff:10.1.2.3".parse().unwrap(), "http", 8443),
                host: &host,
                trusted: false,
                resolved: None,
            },
        );
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                "forwarded",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-port",
                "x-forwarded-proto"
            ]
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "auth.example.test");
        assert_eq!(h["x-forwarded-port"], "8443");
        assert_eq!(
            h["forwarded"],
            "for=10.1.2.3;proto=http;host=auth.example.test"
        );
    }

    #[test]
    fn the_client_address_is_the_nearest_one_no_trusted_proxy_stands_behind() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let trusts = |ip: IpAddr| trusted.iter().any(|n| n.contains(&ip));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let client = |peer: &str, xff: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in xff {
                headers.append(&X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
            }
            client_address(&headers, ip(peer), trusts).to_string()
        };
        // An untrusted peer is the client, whatever it says.
        assert_eq!(client("192.0.2.1", &["203.0.113.7"]), "192.0.2.1");
        assert_eq!(client("10.0.0.1", &["203.0.113.7"]), "203.0.113.7");
        assert_eq!(
            client("10.0.0.1", &["1.1.1.1, 203.0.113.7 , 10.0.0.2"]),
            "203.0.113.7"
        );
        // Several header lines are one list, the last line nearest.
        assert_eq!(
            client("10.0.0.1", &["203.0.113.7", "10.0.0.2"]),
            "203.0.113.7"
        );
        assert_eq!(client("10.0.0.1", &["[2001:db8::7]:4711"]), "2001:db8::7");
        assert_eq!(client("10.0.0.1", &["203.0.113.7:80"]), "203.0.113.7");
        // No address to go by: the nearest trusted hop.
        assert_eq!(client("10.0.0.1", &[]), "10.0.0.1");
        assert_eq!(client("10.0.0.1", &["unknown, 10.0.0.3"]), "10.0.0.3");
        assert_eq!(client("10.0.0.1", &["10.0.0.3, 10.0.0.2"]), "10.0.0.3");
    }

    /// `forwarded_for = "client"`: behind a balancer that appends to what the client sent,
    /// the backend is told only the client the proxy resolved, never the client's own word
    /// first in the list, with the first hop's scheme and host.
    #[test]
    fn a_trusted_proxy_chain_can_be_replaced_by_the_client_it_names() {
        for (resolved, xff, node) in [
            ("203.0.113.9", "203.0.113.9", "203.0.113.9"),
            ("2001:db8::9", "2001:db8::9", "\"[2001:db8::9]\""),
        ] {
            let mut h = map(&[
                ("x-forwarded-for", "6.6.6.6, 7.7.7.7"),
                ("forwarded", "for=6.6.6.6, for=7.7.7.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "sso.example.test"),
            ]);
            let host = HeaderValue::from_static("internal.example.test");
            set_forwarded(
                &mut h,
                &ForwardedFor {
                    hop: &Hop::new("10.0.0.5".parse().unwrap(), "http", 8080),
                    host: &host,
                    trusted: true,
                    resolved: Some(resolved.parse().unwrap()),
                },
            );
            assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
            assert_eq!(h["x-forwarded-for"], xff);
            assert_eq!(
                h["forwarded"],
                format!("for={node};proto=https;host=sso.example.test").as_str()
            );
            assert_eq!(h["x-forwarded-proto"], "https");
            assert_eq!(h["x-forwarded-host"], "sso.example.test");
        }
    }

    #[test]
    fn a_trusted_proxy_chain_is_extended_with_rfc7239_quoting() {
        let mut h = map(SPOOFED);
        let host = HeaderValue::from_static("auth.example.test:8443");
        set_forwarded(
            &mut h,
            &ForwardedFor {
                hop: &Hop::new("2001:db8::7".parse().unwrap(), "https", 8443),
                host: &host,
                trusted: true,
                resolved: None,
            },
        );
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 7.7.7.7, 2001:db8::7");
        assert_eq!(
            h["forwarded"],
            "for=6.6.6.6, for=\"[2001:db8::7]\";proto=https;host=\"auth.example.test:8443\""
        );
        assert_eq!(
            h["x-forwarded-proto"], "https",
            "the first hop's word is kept"
        );
        assert_eq!(h["x-forwarded-host"], "evil.test");
        // Never trusted, whoever sent them: path overrides and underscore spellings.
        for gone in [
            "x-original-url",
            "x-rewrite-url",
            "x_forwarded_for",
            "x_real_ip",
            "x-real-ip",
            "x-forwarded-prefix",
        ] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
    }
}
