//! Raw structs → typed [`Config`]. Each check records a [`ConfigIssue`] and carries on with a
//! placeholder, so that the operator sees every problem in one run.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::raw::{self, RawConfig};
use super::{
    resolve_path, AdminConfig, BackendSource, Config, ConfigIssue, HttpsRedirect, ListenerConfig,
    LogConfig, LogFormat, SiteConfig, Timeouts, UpstreamPool,
};
use crate::tls::{self, CertificateSet, UpstreamTls};

struct Checker<'a> {
    base: &'a Path,
    issues: Vec<ConfigIssue>,
}

impl Checker<'_> {
    fn issue(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            key: key.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: &str) -> Duration {
        let text = value.unwrap_or(default);
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.issue(key, "must be greater than zero");
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

    fn socket_addr(&mut self, key: &str, value: Option<&str>) -> SocketAddr {
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

    fn required<'v>(&mut self, key: &str, value: &'v Option<String>) -> Option<&'v str> {
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
    };

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
    if raw.sites.len() > 1 {
        // Traffic to a second site needs the failover state machine; refusing the config is
        // honest, silently ignoring the site would not be.
        c.issue(
            "site[1]",
            "only one site is supported in this version (multi-site failover is not built yet)",
        );
    }
    let sites = raw
        .sites
        .iter()
        .enumerate()
        .map(|(i, s)| site(&mut c, i, s))
        .collect();

    if c.issues.is_empty() {
        Ok(Config {
            source: source.to_string(),
            admin,
            log,
            timeouts,
            upstream,
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
        .and_then(|t| server_tls(c, &format!("{key}.tls"), t));
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
    ListenerConfig {
        name,
        listen,
        tls,
        redirect,
    }
}

fn server_tls(c: &mut Checker<'_>, key: &str, t: &raw::RawServerTls) -> Option<CertificateSet> {
    let mut pairs = Vec::new();
    let mut pair =
        |c: &mut Checker<'_>, key: &str, cert: &Option<String>, keyf: &Option<String>| {
            let cert = c.required(&format!("{key}.cert"), cert).map(str::to_owned);
            let keyp = c.required(&format!("{key}.key"), keyf).map(str::to_owned);
            if let (Some(cert), Some(keyp)) = (cert, keyp) {
                let (cert_path, key_path) =
                    (resolve_path(c.base, &cert), resolve_path(c.base, &keyp));
                match tls::load_certificate(&cert_path, &key_path) {
                    Ok(loaded) => pairs.push(loaded),
                    Err(e) => c.issue(format!("{key}.cert"), e.to_string()),
                }
            }
        };
    pair(c, key, &t.cert, &t.key);
    for (j, p) in t.sni.iter().enumerate() {
        pair(c, &format!("{key}.sni[{j}]"), &p.cert, &p.key);
    }
    if pairs.is_empty() {
        return None;
    }
    match CertificateSet::new(pairs) {
        Ok(set) => Some(set),
        Err(e) => {
            c.issue(key, e.to_string());
            None
        }
    }
}

fn site(c: &mut Checker<'_>, i: usize, s: &raw::RawSite) -> SiteConfig {
    let key = format!("site[{i}]");
    let name = s.name.clone().unwrap_or_else(|| format!("site{i}"));
    let backends = match s.backends.as_ref().and_then(|b| b.static_list.as_ref()) {
        None => {
            c.issue(
                format!("{key}.backends"),
                "is required, e.g. backends = { static = [\"10.0.0.1:8080\"] }",
            );
            Vec::new()
        }
        Some(list) if list.is_empty() => {
            c.issue(format!("{key}.backends.static"), "lists no backend");
            Vec::new()
        }
        Some(list) => {
            for (j, entry) in list.iter().enumerate() {
                if let Err(why) = check_host_port(entry) {
                    c.issue(format!("{key}.backends.static[{j}]"), why);
                }
            }
            list.clone()
        }
    };
    let tls = s.tls.as_ref().and_then(|t| {
        let ca = t.ca.as_deref().map(|p| resolve_path(c.base, p));
        match UpstreamTls::new(ca.as_deref(), t.server_name.as_deref()) {
            Ok(tls) => Some(tls),
            Err(e) => {
                c.issue(format!("{key}.tls"), e.to_string());
                None
            }
        }
    });
    SiteConfig {
        name,
        backends: BackendSource::Static(backends),
        tls,
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
