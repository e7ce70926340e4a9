//! Raw structs → typed [`Config`]. Each check records a [`ConfigIssue`] and carries on with a
//! placeholder, so that the operator sees every problem in one run.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::raw::{self, RawConfig};
use super::{balancing, failover, rate_limit, restrict, server_tls};
use super::{
    resolve_path, AdminConfig, BackendSource, Config, ConfigIssue, DnsConfig, ForwardedMode,
    HttpsRedirect, IpFamily, Limits, ListenerConfig, LogConfig, LogFormat, ReloadConfig,
    SiteConfig, Timeouts, UpstreamPool,
};
use crate::paths::{self, PathPolicy, Prefix};
use crate::tls::UpstreamTls;

/// The longest duration any setting takes.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

pub(super) struct Checker<'a> {
    pub(super) base: &'a Path,
    pub(super) issues: Vec<ConfigIssue>,
}

impl Checker<'_> {
    pub(super) fn issue(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn duration(&mut self, key: &str, value: Option<&str>, default: &str) -> Duration {
        let text = value.unwrap_or(default);
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.issue(key, "must be greater than zero");
                Duration::from_secs(1)
            }
            // Every duration is added to a clock reading somewhere, which must not overflow;
            // no timeout needs longer.
            Ok(d) if d > MAX_DURATION => {
                self.issue(key, format!("`{text}` is longer than ten years"));
                Duration::from_secs(1)
            }
            Ok(d) => d,
            Err(e) => {
                self.issue(
                    key,
                    format!("`{text}` is not a duration like 5s or 250ms ({e})"),
                );
                Duration::from_secs(1)
            }
        }
    }

    /// A byte size: `16384`, `32KiB`, `10MiB`, `1GiB` (also `k`/`m`/`g` and `KB`/`MB`/`GB`,
    /// read as binary multiples, as nginx does).
    pub(super) fn size(&mut self, key: &str, value: Option<&str>, default: &str) -> u64 {
        let text = value.unwrap_or(default).trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => Some(1u64),
            "k" | "kb" | "kib" => Some(1 << 10),
            "m" | "mb" | "mib" => Some(1 << 20),
            "g" | "gb" | "gib" => Some(1 << 30),
            _ => None,
        };
        match (digits.parse::<u64>(), multiplier) {
            (Ok(n), Some(m)) if n > 0 => n.saturating_mul(m),
            _ => {
                self.issue(
                    key,
                    format!("`{text}` is not a size like 16384, 32KiB or 10MiB"),
                );
                1
            }
        }
    }

    pub(super) fn socket_addr(&mut self, key: &str, value: Option<&str>) -> SocketAddr {
        let fallback = SocketAddr::from(([127, 0, 0, 1], 0));
        match value {
            None => {
                self.issue(
                    key,
                    "is required (an address like 0.0.0.0:8443 or [::]:8443)",
                );
                fallback
            }
            Some(text) => text.parse().unwrap_or_else(|_| {
                self.issue(
                    key,
                    format!("`{text}` is not an ip:port address (like 0.0.0.0:8443 or [::]:8443)"),
                );
                fallback
            }),
        }
    }

    /// A probe's interval, timeout (at most the interval), rise and fall (at least 1 each),
    /// as given or defaulted: `(interval, timeout, rise, fall)`.
    pub(super) fn probe_timing(
        &mut self,
        key: &str,
        given: (Option<&str>, Option<&str>, Option<u32>, Option<u32>),
        defaults: (&str, &str, u32, u32),
    ) -> (Duration, Duration, u32, u32) {
        let interval = self.duration(&format!("{key}.interval"), given.0, defaults.0);
        let timeout = self.duration(&format!("{key}.timeout"), given.1, defaults.1);
        if timeout > interval {
            self.issue(
                format!("{key}.timeout"),
                "must not be longer than the interval",
            );
        }
        let mut at_least_one =
            |name: &str, value: Option<u32>, default: u32| match value.unwrap_or(default) {
                0 => {
                    self.issue(format!("{key}.{name}"), "must be at least 1");
                    1
                }
                n => n,
            };
        let rise = at_least_one("rise", given.2, defaults.2);
        let fall = at_least_one("fall", given.3, defaults.3);
        (interval, timeout, rise, fall)
    }

    pub(super) fn required<'v>(&mut self, key: &str, value: &'v Option<String>) -> Option<&'v str> {
        match value.as_deref() {
            Some(v) if !v.trim().is_empty() => Some(v),
            Some(_) => {
                self.issue(key, "must not be empty");
                None
            }
            None => {
                self.issue(key, "is required");
                None
            }
        }
    }
}

pub(super) fn validate(
    raw: RawConfig,
    source: &str,
    base: &Path,
) -> Result<Config, Vec<ConfigIssue>> {
    let mut c = Checker {
        base,
        issues: Vec::new(),
    };

    let admin = AdminConfig {
        listen: c.socket_addr(
            "admin.listen",
            Some(
                raw.admin
                    .listen
                    .as_deref()
                    .unwrap_or(raw::DEFAULT_ADMIN_LISTEN),
            ),
        ),
        token: failover::admin_token(&mut c, &raw.admin),
        token_file: raw
            .admin
            .token_file
            .as_deref()
            .map(|f| resolve_path(base, f)),
        metrics_retain: c.duration(
            "admin.metrics_retain",
            raw.admin.metrics_retain.as_deref(),
            "10m",
        ),
    };

    let format = match raw.log.format.as_deref() {
        None | Some("human") => LogFormat::Human,
        Some("json") => LogFormat::Json,
        Some(other) => {
            c.issue(
                "log.format",
                format!("`{other}` is not one of: human, json"),
            );
            LogFormat::Human
        }
    };
    let level = raw
        .log
        .level
        .clone()
        .unwrap_or_else(|| raw::DEFAULT_LOG_LEVEL.into());
    if let Err(e) = level.parse::<tracing_subscriber::EnvFilter>() {
        c.issue("log.level", format!("`{level}` is not a log filter: {e}"));
    }
    let log = LogConfig {
        format,
        level,
        access_log: raw.log.access_log.unwrap_or(true),
    };

    let t = &raw.timeouts;
    let timeouts = Timeouts {
        tls_handshake: c.duration(
            "timeouts.tls_handshake",
            t.tls_handshake.as_deref(),
            raw::DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        ),
        request_header: c.duration(
            "timeouts.request_header",
            t.request_header.as_deref(),
            raw::DEFAULT_REQUEST_HEADER_TIMEOUT,
        ),
        idle: c.duration(
            "timeouts.idle",
            t.idle.as_deref(),
            raw::DEFAULT_IDLE_TIMEOUT,
        ),
        upstream_connect: c.duration(
            "timeouts.upstream_connect",
            t.upstream_connect.as_deref(),
            raw::DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
        ),
        upstream_response: c.duration(
            "timeouts.upstream_response",
            t.upstream_response.as_deref(),
            raw::DEFAULT_UPSTREAM_RESPONSE_TIMEOUT,
        ),
        shutdown_drain: c.duration(
            "timeouts.shutdown_drain",
            t.shutdown_drain.as_deref(),
            raw::DEFAULT_SHUTDOWN_DRAIN,
        ),
        close_grace: c.duration(
            "timeouts.close_grace",
            t.close_grace.as_deref(),
            raw::DEFAULT_CLOSE_GRACE,
        ),
        tunnel: c.duration(
            "timeouts.tunnel",
            t.tunnel.as_deref(),
            raw::DEFAULT_TUNNEL_TIMEOUT,
        ),
    };

    let max_idle = raw
        .upstream
        .pool_max_idle_per_backend
        .unwrap_or(raw::DEFAULT_POOL_MAX_IDLE_PER_BACKEND);
    let upstream = UpstreamPool {
        idle_timeout: c.duration(
            "upstream.pool_idle_timeout",
            raw.upstream.pool_idle_timeout.as_deref(),
            raw::DEFAULT_POOL_IDLE_TIMEOUT,
        ),
        max_idle_per_backend: max_idle,
        drain_timeout: c.duration(
            "upstream.drain_timeout",
            raw.upstream.drain_timeout.as_deref(),
            raw::DEFAULT_DRAIN_TIMEOUT,
        ),
        retries: raw.upstream.retries.unwrap_or(raw::DEFAULT_RETRIES),
    };
    let dns = dns(&mut c, &raw.dns);
    let limits = limits(&mut c, &raw.limits);
    let balance = balancing::balance(&mut c, &raw.balance);

    if raw.listeners.is_empty() {
        c.issue("listener", "at least one [[listener]] is required");
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::from([admin.listen]);
    let listeners: Vec<ListenerConfig> = raw
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let l = listener(&mut c, i, l);
            if !names.insert(l.name.clone()) {
                c.issue(
                    format!("listener[{i}].name"),
                    format!("`{}` is used twice", l.name),
                );
            }
            if l.listen.port() != 0 && !addrs.insert(l.listen) {
                c.issue(
                    format!("listener[{i}].listen"),
                    format!("{} is already used by another listener or admin", l.listen),
                );
            }
            l
        })
        .collect();

    if raw.sites.is_empty() {
        c.issue("site", "at least one [[site]] is required");
    }
    let sites: Vec<SiteConfig> = raw
        .sites
        .iter()
        .enumerate()
        .map(|(i, s)| site(&mut c, i, s))
        .collect();
    let mut site_names = HashSet::new();
    for (i, s) in sites.iter().enumerate() {
        if !site_names.insert(s.name.as_str()) {
            c.issue(
                format!("site[{i}].name"),
                format!("`{}` is used twice", s.name),
            );
        }
    }
    let failover = failover::failover(&mut c, &raw.failover);
    let reload = ReloadConfig {
        watch_interval: raw.reload.watch.unwrap_or(true).then(|| {
            c.duration(
                "reload.watch_interval",
                raw.reload.watch_interval.as_deref(),
                raw::DEFAULT_WATCH_INTERVAL,
            )
        }),
    };

    let error_pages = super::error_pages::error_pages(&mut c, raw.error_pages.as_ref());

    if c.issues.is_empty() {
        Ok(Config {
            source: source.to_string(),
            admin,
            log,
            timeouts,
            upstream,
            dns,
            limits,
            balance,
            failover,
            reload,
            error_pages,
            listeners,
            sites,
        })
    } else {
        Err(c.issues)
    }
}

fn listener(c: &mut Checker<'_>, i: usize, l: &raw::RawListener) -> ListenerConfig {
    let key = format!("listener[{i}]");
    let name = l.name.clone().unwrap_or_else(|| format!("listener{i}"));
    if name.is_empty()
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
    {
        c.issue(
            format!("{key}.name"),
            format!("`{name}` must be letters, digits, '-', '_' or '.' (it is a metrics label)"),
        );
    }
    let listen = c.socket_addr(&format!("{key}.listen"), l.listen.as_deref());
    let tls = l
        .tls
        .as_ref()
        .and_then(|t| server_tls::server_tls(c, &format!("{key}.tls"), t));
    let client_cert_header = l
        .tls
        .as_ref()
        .and_then(|t| server_tls::client_cert_header(c, &format!("{key}.tls"), t));
    let redirect = match (l.redirect_to_https.unwrap_or(false), l.https_port) {
        (true, _) if l.tls.is_some() => {
            c.issue(
                format!("{key}.redirect_to_https"),
                "only makes sense on a plain (non-TLS) listener",
            );
            None
        }
        (true, port) => Some(HttpsRedirect {
            port: port.unwrap_or(443),
        }),
        (false, Some(_)) => {
            c.issue(
                format!("{key}.https_port"),
                "is only used with redirect_to_https = true",
            );
            None
        }
        (false, None) => None,
    };
    let prefixes = |c: &mut Checker<'_>, field: &str, list: &[String]| -> Vec<Prefix> {
        list.iter()
            .enumerate()
            .filter_map(|(j, p)| match Prefix::parse(p) {
                Ok(prefix) => Some(prefix),
                Err(e) => {
                    c.issue(format!("{key}.{field}[{j}]"), format!("`{p}`: {e}"));
                    None
                }
            })
            .collect()
    };
    let default_deny: Vec<String> = raw::DEFAULT_DENY_PATHS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let deny = prefixes(
        c,
        "deny_paths",
        l.deny_paths.as_deref().unwrap_or(&default_deny),
    );
    let allow = l.allow_paths.as_deref().map(|list| {
        if list.is_empty() {
            c.issue(
                format!("{key}.allow_paths"),
                "is empty: nothing would be forwarded",
            );
        }
        prefixes(c, "allow_paths", list)
    });
    let relative = l
        .relative_path
        .as_deref()
        .and_then(|r| match Prefix::parse(r) {
            Ok(p) => Some(p),
            Err(e) => {
                c.issue(format!("{key}.relative_path"), format!("`{r}`: {e}"));
                None
            }
        });
    let deny_status = client_error_status(
        c,
        &format!("{key}.deny_status"),
        l.deny_status,
        raw::DEFAULT_DENY_STATUS,
    );
    let trusted_proxies = networks(
        c,
        &format!("{key}.trusted_proxies"),
        l.trusted_proxies.as_deref(),
    );
    let proxy_protocol = match (l.proxy_protocol.unwrap_or(false), &l.proxy_protocol_from) {
        (true, Some(from)) if !from.is_empty() => Some(networks(
            c,
            &format!("{key}.proxy_protocol_from"),
            Some(from),
        )),
        (true, _) => {
            c.issue(
                format!("{key}.proxy_protocol_from"),
                "is required with proxy_protocol = true: the networks of the load balancers \
                 allowed to send PROXY headers (anyone else could claim any client address)",
            );
            None
        }
        (false, Some(_)) => {
            c.issue(
                format!("{key}.proxy_protocol_from"),
                "is only used with proxy_protocol = true",
            );
            None
        }
        (false, None) => None,
    };
    let forwarded_for = match l.forwarded_for.as_deref() {
        None | Some("chain") => ForwardedMode::Chain,
        Some("client") => ForwardedMode::Client,
        Some(other) => {
            c.issue(
                format!("{key}.forwarded_for"),
                format!("`{other}` is not one of: chain, client"),
            );
            ForwardedMode::Chain
        }
    };
    let hsts = l.hsts.as_deref().and_then(|v| {
        if l.tls.is_none() {
            c.issue(
                format!("{key}.hsts"),
                "only makes sense on a TLS listener (browsers ignore it over http)",
            );
        }
        http::HeaderValue::from_str(v)
            .map_err(|_| c.issue(format!("{key}.hsts"), "is not a valid header value"))
            .ok()
    });
    let request_id = l.request_id_header.as_deref().and_then(|name| {
        let key = format!("{key}.request_id_header");
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) if crate::headers::is_reserved(&header) => {
                c.issue(
                    key,
                    format!("`{name}` is a header the proxy or HTTP itself decides"),
                );
                None
            }
            Ok(header) => Some(header),
            Err(_) => {
                c.issue(key, format!("`{name}` is not a header name"));
                None
            }
        }
    });
    let rate_limits = rate_limit::rate_limits(
        c,
        &key,
        l.rate_limit.as_deref().unwrap_or_default(),
        relative.as_ref(),
    );
    let restrictions = restrict::restrictions(
        c,
        &key,
        l.restrict.as_deref().unwrap_or_default(),
        relative.as_ref(),
    );
    let upgrades = upgrades(c, &format!("{key}.upgrades"), l.upgrades.as_deref());
    ListenerConfig {
        name,
        listen,
        tls,
        redirect,
        paths: PathPolicy::new(deny, allow, relative),
        rate_limits,
        restrictions,
        client_cert_header,
        deny_paths: l.deny_paths.clone().unwrap_or(default_deny),
        allow_paths: l.allow_paths.clone(),
        relative_path: l.relative_path.clone(),
        deny_status,
        trusted_proxies,
        forwarded_for,
        hsts,
        request_id,
        proxy_protocol,
        upgrades,
    }
}

/// The protocols a client may switch to: tokens, lowercased, WebSocket when unset. `h2c` is
/// refused: a backend that takes an h2c upgrade speaks HTTP/2 to the client through the
/// tunnel, where no rule of the proxy's (denied paths, limits, forwarded headers) applies.
fn upgrades(c: &mut Checker<'_>, key: &str, list: Option<&[String]>) -> Vec<String> {
    let Some(list) = list else {
        return vec!["websocket".to_string()];
    };
    list.iter()
        .enumerate()
        .filter_map(|(j, protocol)| {
            let name = protocol.to_ascii_lowercase();
            if name.is_empty() || !name.bytes().all(crate::headers::is_tchar) {
                c.issue(
                    format!("{key}[{j}]"),
                    format!("`{protocol}` is not a protocol name"),
                );
                None
            } else if name == "h2c" {
                c.issue(
                    format!("{key}[{j}]"),
                    "h2c cannot be allowed: a backend that switches to it speaks HTTP/2 to the \
                     client through the tunnel, past the proxy's path rules and limits",
                );
                None
            } else {
                Some(name)
            }
        })
        .collect()
}

/// A rule's `paths` (every path when unset), parsed, and repeated under `relative` (the
/// listener's `relative_path`); with the text as written, for `check-config`.
pub(super) fn rule_paths(
    c: &mut Checker<'_>,
    key: &str,
    paths: Option<&[String]>,
    relative: Option<&Prefix>,
) -> (Vec<Prefix>, Vec<String>) {
    let text = paths.map_or_else(|| vec!["/".to_string()], <[String]>::to_vec);
    if text.is_empty() {
        c.issue(
            format!("{key}.paths"),
            "is empty: the rule would cover nothing (leave it out to cover every path)",
        );
    }
    let mut prefixes = Vec::new();
    for (j, p) in text.iter().enumerate() {
        match Prefix::parse(p) {
            Ok(prefix) => prefixes.push(prefix),
            Err(e) => c.issue(format!("{key}.paths[{j}]"), format!("`{p}`: {e}")),
        }
    }
    (paths::with_relative(prefixes, relative), text)
}

/// A status the proxy answers a refused request with: a 4xx.
pub(super) fn client_error_status(
    c: &mut Checker<'_>,
    key: &str,
    value: Option<u16>,
    default: u16,
) -> http::StatusCode {
    match value.unwrap_or(default) {
        s @ 400..=499 => http::StatusCode::from_u16(s).expect("4xx is a status"),
        other => {
            c.issue(key, format!("{other} is not a 4xx status"));
            http::StatusCode::from_u16(default).expect("the default is a status")
        }
    }
}

/// Addresses or CIDR networks, each problem reported with its index.
pub(super) fn networks(
    c: &mut Checker<'_>,
    key: &str,
    list: Option<&[String]>,
) -> Vec<ipnet::IpNet> {
    list.unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(j, net)| {
            let parsed = net
                .parse::<ipnet::IpNet>()
                .ok()
                .or_else(|| net.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from));
            if parsed.is_none() {
                c.issue(
                    format!("{key}[{j}]"),
                    format!("`{net}` is not an address or CIDR network"),
                );
            }
            parsed
        })
        .collect()
}

fn limits(c: &mut Checker<'_>, l: &raw::RawLimits) -> Limits {
    let max_header_size = c.size(
        "limits.max_header_size",
        l.max_header_size.as_deref(),
        raw::DEFAULT_MAX_HEADER_SIZE,
    );
    if max_header_size < 8192 {
        c.issue(
            "limits.max_header_size",
            "must be at least 8KiB (HTTP/1.1 buffers are never smaller)",
        );
    }
    let h2_stream_buffer = c.size(
        "limits.h2_stream_buffer",
        l.h2_stream_buffer.as_deref(),
        raw::DEFAULT_H2_STREAM_BUFFER,
    );
    if !(16 << 10..=1 << 30).contains(&h2_stream_buffer) {
        c.issue(
            "limits.h2_stream_buffer",
            "must be between 16KiB (one HTTP/2 frame) and 1GiB",
        );
    }
    let max_uri_length = l.max_uri_length.unwrap_or(raw::DEFAULT_MAX_URI_LENGTH);
    if max_uri_length < 256 {
        c.issue("limits.max_uri_length", "must be at least 256");
    }
    let positive = |c: &mut Checker<'_>, key: &str, v: Option<usize>, default: usize| {
        let v = v.unwrap_or(default);
        if v == 0 {
            c.issue(key, "must be at least 1");
        }
        v
    };
    Limits {
        max_uri_length,
        max_header_size: max_header_size as usize,
        max_headers: positive(
            c,
            "limits.max_headers",
            l.max_headers,
            raw::DEFAULT_MAX_HEADERS,
        ),
        max_body_size: c.size(
            "limits.max_body_size",
            l.max_body_size.as_deref(),
            raw::DEFAULT_MAX_BODY_SIZE,
        ),
        min_body_rate: l.min_body_rate.unwrap_or(raw::DEFAULT_MIN_BODY_RATE),
        body_rate_grace: c.duration(
            "limits.body_rate_grace",
            l.body_rate_grace.as_deref(),
            raw::DEFAULT_BODY_RATE_GRACE,
        ),
        max_connections: positive(
            c,
            "limits.max_connections",
            l.max_connections,
            raw::DEFAULT_MAX_CONNECTIONS,
        ),
        max_connections_per_ip: positive(
            c,
            "limits.max_connections_per_ip",
            l.max_connections_per_ip,
            raw::DEFAULT_MAX_CONNECTIONS_PER_IP,
        ),
        h2_max_concurrent_streams: positive(
            c,
            "limits.h2_max_concurrent_streams",
            l.h2_max_concurrent_streams.map(|v| v as usize),
            raw::DEFAULT_H2_MAX_CONCURRENT_STREAMS as usize,
        ) as u32,
        h2_stream_buffer: h2_stream_buffer as usize,
    }
}

fn site(c: &mut Checker<'_>, i: usize, s: &raw::RawSite) -> SiteConfig {
    let key = format!("site[{i}]");
    let name = s.name.clone().unwrap_or_else(|| format!("site{i}"));
    let backends = backend_source(c, &key, s.backends.as_ref());
    let tls = s.tls.as_ref().and_then(|t| {
        let ca = t.ca.as_deref().map(|p| resolve_path(c.base, p));
        // Discovered backends are addresses; their certificates name the service.
        let default_name = backends.dns_name().map(service_name);
        let server_name = t.server_name.as_deref().or(default_name.as_deref());
        match UpstreamTls::new(ca.as_deref(), server_name) {
            Ok(tls) => Some(tls),
            Err(e) => {
                c.issue(format!("{key}.tls"), e.to_string());
                None
            }
        }
    });
    let health = s
        .health
        .as_ref()
        .map(|h| balancing::health(c, &format!("{key}.health"), h));
    let outlier = balancing::outlier(c, &format!("{key}.outlier"), s.outlier.as_ref());
    let shedding = s
        .shedding
        .as_ref()
        .map(|sh| balancing::shedding(c, &format!("{key}.shedding"), sh));
    let probe = s
        .lb_check
        .as_ref()
        .map(|p| failover::site_probe(c, &format!("{key}.lb_check"), p));
    SiteConfig {
        name,
        backends,
        tls,
        health,
        outlier,
        shedding,
        probe,
    }
}

fn backend_source(c: &mut Checker<'_>, key: &str, b: Option<&raw::RawBackends>) -> BackendSource {
    let example = "backends = { static = [\"10.0.0.1:8080\"] }, { dns = \"keycloak-headless.ns.svc.cluster.local\", port = 8080 } or { srv = \"_http._tcp.keycloak-headless.ns.svc.cluster.local\" }";
    let Some(b) = b else {
        c.issue(format!("{key}.backends"), format!("is required: {example}"));
        return BackendSource::Static(Vec::new());
    };
    let given = [b.static_list.is_some(), b.dns.is_some(), b.srv.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        c.issue(
            format!("{key}.backends"),
            format!("needs exactly one of static, dns or srv: {example}"),
        );
        return BackendSource::Static(Vec::new());
    }
    if b.port.is_some() && b.dns.is_none() {
        c.issue(
            format!("{key}.backends.port"),
            "is only used with dns (srv records carry their ports)",
        );
    }
    if let Some(list) = &b.static_list {
        if list.is_empty() {
            c.issue(format!("{key}.backends.static"), "lists no backend");
        }
        for (j, entry) in list.iter().enumerate() {
            if let Err(why) = check_host_port(entry) {
                c.issue(format!("{key}.backends.static[{j}]"), why);
            }
        }
        return BackendSource::Static(list.clone());
    }
    if let Some(name) = &b.dns {
        check_dns_name(c, &format!("{key}.backends.dns"), name);
        let port = match b.port {
            Some(p) if p != 0 => p,
            _ => {
                c.issue(
                    format!("{key}.backends.port"),
                    "is required with dns (the port every address serves on)",
                );
                0
            }
        };
        return BackendSource::Dns {
            name: name.clone(),
            port,
        };
    }
    let name = b.srv.clone().unwrap_or_default();
    check_dns_name(c, &format!("{key}.backends.srv"), &name);
    BackendSource::Srv { name }
}

fn check_dns_name(c: &mut Checker<'_>, key: &str, name: &str) {
    let trimmed = name.trim_end_matches('.');
    let ok = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        });
    if !ok {
        c.issue(key, format!("`{name}` is not a DNS name"));
    }
}

/// The host name a service's certificate carries: the name itself, without the SRV
/// `_service._proto.` labels.
fn service_name(name: &str) -> String {
    let mut labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    while labels.first().is_some_and(|l| l.starts_with('_')) {
        labels.remove(0);
    }
    labels.join(".")
}

fn dns(c: &mut Checker<'_>, d: &raw::RawDns) -> DnsConfig {
    let nameservers = d.nameservers.as_ref().map(|list| {
        if list.is_empty() {
            c.issue(
                "dns.nameservers",
                "is empty; leave it out to use the system's resolver configuration",
            );
        }
        list.iter()
            .enumerate()
            .filter_map(|(i, entry)| {
                let parsed = entry.parse::<SocketAddr>().ok().or_else(|| {
                    entry
                        .parse::<std::net::IpAddr>()
                        .ok()
                        .map(|ip| SocketAddr::new(ip, 53))
                });
                if parsed.is_none() {
                    c.issue(
                        format!("dns.nameservers[{i}]"),
                        format!("`{entry}` is not ip or ip:port"),
                    );
                }
                parsed
            })
            .collect()
    });
    let refresh_min = c.duration(
        "dns.refresh_min",
        d.refresh_min.as_deref(),
        raw::DEFAULT_DNS_REFRESH_MIN,
    );
    let refresh_max = c.duration(
        "dns.refresh_max",
        d.refresh_max.as_deref(),
        raw::DEFAULT_DNS_REFRESH_MAX,
    );
    if refresh_min > refresh_max {
        c.issue(
            "dns.refresh_min",
            "must not be greater than dns.refresh_max",
        );
    }
    let jitter = d.jitter.unwrap_or(raw::DEFAULT_DNS_JITTER);
    if !(0.0..=0.5).contains(&jitter) {
        c.issue(
            "dns.jitter",
            "must be between 0 and 0.5 (a fraction of the refresh interval)",
        );
    }
    let attempts = d.attempts.unwrap_or(raw::DEFAULT_DNS_ATTEMPTS);
    if attempts == 0 {
        c.issue("dns.attempts", "must be at least 1");
    }
    let family = match d.family.as_deref() {
        None | Some("both") => IpFamily::Both,
        Some("ipv4") => IpFamily::V4,
        Some("ipv6") => IpFamily::V6,
        Some(other) => {
            c.issue(
                "dns.family",
                format!("`{other}` is not one of: both, ipv4, ipv6"),
            );
            IpFamily::Both
        }
    };
    DnsConfig {
        nameservers,
        timeout: c.duration(
            "dns.timeout",
            d.timeout.as_deref(),
            raw::DEFAULT_DNS_TIMEOUT,
        ),
        attempts,
        refresh_min,
        refresh_max,
        jitter,
        empty_hold: c.duration(
            "dns.empty_hold",
            d.empty_hold.as_deref(),
            raw::DEFAULT_DNS_EMPTY_HOLD,
        ),
        family,
    }
}

/// `host:port` with a port and a host that is an IP, a bracketed IPv6 address or a DNS name.
pub(super) fn check_host_port(entry: &str) -> Result<(), String> {
    if entry.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad =
        || format!("`{entry}` is not host:port (like 10.0.0.1:8080 or keycloak-0.internal:8080)");
    let (host, port) = entry.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        });
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}
