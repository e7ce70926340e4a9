//! Typed [`Config`] → raw structs → TOML, every default written out: what
//! `sessiongate check-config` prints, so an operator sees exactly what will run.

use std::time::Duration;

use super::raw::*;
use super::{Algorithm, BackendSource, Config, HashKey, IpFamily, LogFormat, StickyMode};

fn dur(d: Duration) -> Option<String> {
    Some(humantime::format_duration(d).to_string())
}

pub(super) fn render(c: &Config) -> String {
    let t = &c.timeouts;
    let raw = RawConfig {
        admin: RawAdmin {
            listen: Some(c.admin.listen.to_string()),
            // The token itself is never printed.
            // The token itself is never printed; its file is.
            token: c
                .admin
                .token
                .as_ref()
                .filter(|_| c.admin.token_file.is_none())
                .map(|_| "set-in-the-config-file-not-shown".into()),
            token_file: c.admin.token_file.as_ref().map(|p| p.display().to_string()),
            metrics_retain: dur(c.admin.metrics_retain),
        },
        reload: RawReload {
            watch: Some(c.reload.watch_interval.is_some()),
            watch_interval: c.reload.watch_interval.and_then(dur),
        },
        // No pages: no table, rather than an empty one.
        error_pages: (!c.error_pages.is_empty()).then(|| {
            c.error_pages
                .iter()
                .map(|page| {
                    (
                        page.status.as_u16().to_string(),
                        page.path.display().to_string(),
                    )
                })
                .collect()
        }),
        failover: RawFailover {
            failback: Some(
                if c.failover.auto_failback.is_some() {
                    "auto"
                } else {
                    "manual"
                }
                .into(),
            ),
            failback_hold: c.failover.auto_failback.and_then(dur),
            lb_check_path: Some(c.failover.lb_check_path.clone().unwrap_or_default()),
        },
        log: RawLog {
            format: Some(match c.log.format {
                LogFormat::Human => "human".into(),
                LogFormat::Json => "json".into(),
            }),
            level: Some(c.log.level.clone()),
            access_log: Some(c.log.access_log),
        },
        timeouts: RawTimeouts {
            tls_handshake: dur(t.tls_handshake),
            request_header: dur(t.request_header),
            idle: dur(t.idle),
            upstream_connect: dur(t.upstream_connect),
            upstream_response: dur(t.upstream_response),
            shutdown_drain: dur(t.shutdown_drain),
            close_grace: dur(t.close_grace),
            tunnel: dur(t.tunnel),
        },
        upstream: RawUpstream {
            pool_idle_timeout: dur(c.upstream.idle_timeout),
            pool_max_idle_per_backend: Some(c.upstream.max_idle_per_backend),
            drain_timeout: dur(c.upstream.drain_timeout),
            retries: Some(c.upstream.retries),
        },
        balance: RawBalance {
            algorithm: Some(
                match c.balance.algorithm {
                    Algorithm::RoundRobin => "round_robin",
                    Algorithm::LeastRequests => "least_requests",
                    Algorithm::Random => "random",
                    Algorithm::Hash(_) => "hash",
                }
                .into(),
            ),
            hash_key: match &c.balance.algorithm {
                Algorithm::Hash(HashKey::SourceIp) => Some("source_ip".into()),
                Algorithm::Hash(HashKey::Header(h)) => Some(format!("header:{h}")),
                Algorithm::Hash(HashKey::Cookie(name)) => Some(format!("cookie:{name}")),
                _ => None,
            },
            hash_seed: Some(c.balance.seed),
            slow_start: c.balance.slow_start.and_then(dur),
            sticky: c.balance.sticky.as_ref().map(sticky),
        },
        limits: RawLimits {
            max_uri_length: Some(c.limits.max_uri_length),
            max_header_size: Some(c.limits.max_header_size.to_string()),
            max_headers: Some(c.limits.max_headers),
            max_body_size: Some(c.limits.max_body_size.to_string()),
            min_body_rate: Some(c.limits.min_body_rate),
            body_rate_grace: dur(c.limits.body_rate_grace),
            max_connections: Some(c.limits.max_connections),
            max_connections_per_ip: Some(c.limits.max_connections_per_ip),
            h2_max_concurrent_streams: Some(c.limits.h2_max_concurrent_streams),
            h2_stream_buffer: Some(c.limits.h2_stream_buffer.to_string()),
        },
        dns: RawDns {
            nameservers: c
                .dns
                .nameservers
                .as_ref()
                .map(|list| list.iter().map(|a| a.to_string()).collect()),
            timeout: dur(c.dns.timeout),
            attempts: Some(c.dns.attempts),
            refresh_min: dur(c.dns.refresh_min),
            refresh_max: dur(c.dns.refresh_max),
            jitter: Some(c.dns.jitter),
            empty_hold: dur(c.dns.empty_hold),
            family: Some(
                match c.dns.family {
                    IpFamily::Both => "both",
                    IpFamily::V4 => "ipv4",
                    IpFamily::V6 => "ipv6",
                }
                .into(),
            ),
        },
        listeners: c
            .listeners
            .iter()
            .map(|l| RawListener {
                name: Some(l.name.clone()),
                listen: Some(l.listen.to_string()),
                tls: l.tls.as_ref().map(|set| {
                    let mut pairs = set.certificates().iter().map(|cert| RawCertPair {
                        cert: Some(cert.cert_path.display().to_string()),
                        key: Some(cert.key_path.display().to_string()),
                    });
                    let default = pairs.next().unwrap_or_default();
                    let client = set.client_certs();
                    RawServerTls {
                        cert: default.cert,
                        key: default.key,
                        sni: pairs.collect(),
                        client_ca: client.map(|c| c.ca_path.display().to_string()),
                        client_auth: client.map(|c| {
                            (if c.required { "required" } else { "optional" }).to_string()
                        }),
                        client_cert_header: l
                            .client_cert_header
                            .as_ref()
                            .map(|(h, _)| h.to_string()),
                        client_cert_format: l
                            .client_cert_header
                            .as_ref()
                            .map(|(_, f)| f.name().to_string()),
                        ticket_keys: set.ticket_keys().map(|k| k.path.display().to_string()),
                    }
                }),
                redirect_to_https: Some(l.redirect.is_some()),
                https_port: l.redirect.map(|r| r.port),
                deny_paths: Some(l.deny_paths.clone()),
                allow_paths: l.allow_paths.clone(),
                relative_path: l.relative_path.clone(),
                deny_status: Some(l.deny_status.as_u16()),
                trusted_proxies: Some(l.trusted_proxies.iter().map(|n| n.to_string()).collect()),
                forwarded_for: Some(l.forwarded_for.name().to_string()),
                hsts: l
                    .hsts
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                request_id_header: l.request_id.as_ref().map(|h| h.to_string()),
                upgrades: Some(l.upgrades.clone()),
                proxy_protocol: Some(l.proxy_protocol.is_some()),
                proxy_protocol_from: l
                    .proxy_protocol
                    .as_ref()
                    .map(|nets| nets.iter().map(|n| n.to_string()).collect()),
                restrict: (!l.restrictions.is_empty()).then(|| {
                    l.restrictions
                        .iter()
                        .map(|r| RawRestrict {
                            paths: Some(r.paths_text.clone()),
                            allow_from: Some(r.allow_from.iter().map(|n| n.to_string()).collect()),
                            status: Some(r.status.as_u16()),
                        })
                        .collect()
                }),
                rate_limit: (!l.rate_limits.is_empty()).then(|| {
                    l.rate_limits
                        .iter()
                        .map(|r| RawRateLimit {
                            paths: Some(r.paths_text.clone()),
                            rate: Some(r.rate.text()),
                            burst: Some(r.burst),
                            max_clients: Some(r.max_clients),
                        })
                        .collect()
                }),
            })
            .collect(),
        sites: c
            .sites
            .iter()
            .map(|s| RawSite {
                name: Some(s.name.clone()),
                backends: Some(match &s.backends {
                    BackendSource::Static(list) => RawBackends {
                        static_list: Some(list.clone()),
                        ..Default::default()
                    },
                    BackendSource::Dns { name, port } => RawBackends {
                        dns: Some(name.clone()),
                        port: Some(*port),
                        ..Default::default()
                    },
                    BackendSource::Srv { name } => RawBackends {
                        srv: Some(name.clone()),
                        ..Default::default()
                    },
                }),
                tls: s.tls.as_ref().map(|t| RawUpstreamTls {
                    ca: t.ca_path.as_ref().map(|p| p.display().to_string()),
                    server_name: t.server_name.clone(),
                }),
                health: s.health.as_ref().map(|h| RawHealth {
                    path: Some(h.path.clone()),
                    port: h.port,
                    interval: dur(h.interval),
                    timeout: dur(h.timeout),
                    rise: Some(h.rise),
                    fall: Some(h.fall),
                    expect_status: Some(format!("{}-{}", h.expect_status.0, h.expect_status.1)),
                    expect_json_up: Some(h.expect_json_up),
                }),
                lb_check: s.probe.as_ref().map(|p| RawSiteProbe {
                    path: p.url.is_none().then(|| p.path.clone()),
                    url: p.url.as_ref().map(|u| u.to_string()),
                    interval: dur(p.interval),
                    timeout: dur(p.timeout),
                    rise: Some(p.rise),
                    fall: Some(p.fall),
                    min_up: p.url.is_none().then_some(p.min_up),
                }),
                shedding: s.shedding.map(|sh| RawShedding {
                    max_in_flight_per_backend: Some(sh.max_in_flight),
                    queue: Some(sh.queue),
                    queue_timeout: dur(sh.queue_timeout),
                    sticky_when_full: Some(
                        if sh.sticky_waits {
                            "wait"
                        } else {
                            "redispatch"
                        }
                        .into(),
                    ),
                }),
                outlier: Some(RawOutlier {
                    consecutive_failures: Some(s.outlier.consecutive_failures),
                    base_ejection: dur(s.outlier.base_ejection),
                    max_ejection: dur(s.outlier.max_ejection),
                }),
            })
            .collect(),
    };
    let mut out =
        toml::to_string_pretty(&raw).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
    // The names each certificate answers to are derived, not configured: show them as comments.
    for l in &c.listeners {
        if let Some(set) = &l.tls {
            for cert in set.certificates() {
                out.push_str(&format!(
                    "# listener {}: {} serves {} (expires {})\n",
                    l.name,
                    cert.cert_path.display(),
                    cert.names.join(", "),
                    cert.not_after
                ));
            }
            if let Some(keys) = set.ticket_keys() {
                out.push_str(&format!(
                    "# listener {}: session tickets sealed with key {}..., the first of {} in {}\n",
                    l.name,
                    keys.sealing,
                    keys.keys,
                    keys.path.display()
                ));
            }
        }
    }
    out
}

fn sticky(mode: &StickyMode) -> RawSticky {
    match mode {
        StickyMode::Cookie {
            name, secret_file, ..
        } => RawSticky {
            mode: Some("cookie".into()),
            cookie: Some(name.clone()),
            // The key itself is never printed.
            secret: secret_file
                .is_none()
                .then(|| "(set in the config file; not shown)".into()),
            secret_file: secret_file.as_ref().map(|p| p.display().to_string()),
            ..Default::default()
        },
        StickyMode::Route {
            cookie,
            routes,
            learn,
        } => RawSticky {
            mode: Some("route".into()),
            route_cookie: Some(cookie.clone()),
            routes: Some(routes.clone()),
            learn_routes: Some(*learn),
            ..Default::default()
        },
        StickyMode::SourceIp => RawSticky {
            mode: Some("source_ip".into()),
            ..Default::default()
        },
    }
}
