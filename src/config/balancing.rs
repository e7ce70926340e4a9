//! Validation of how backends are chosen and judged: `[balance]` (algorithm, stickiness),
//! `[site.health]` (active checks) and `[site.outlier]` (passive ejection).

use std::collections::BTreeMap;

use super::raw;
use super::validate::{check_host_port, Checker};
use super::{
    resolve_path, Algorithm, Balance, HashKey, HealthCheck, Outlier, Shedding, StickyMode,
};

/// The shortest secret accepted: 128 bits, so tags cannot be forged by guessing the key.
const MIN_SECRET_LEN: usize = 16;

pub(super) fn balance(c: &mut Checker<'_>, b: &raw::RawBalance) -> Balance {
    let key = b.hash_key.as_deref().map(|k| match k.split_once(':') {
        None if k == "source_ip" => Some(HashKey::SourceIp),
        Some(("header", name)) => match http::HeaderName::from_bytes(name.trim().as_bytes()) {
            Ok(h) => Some(HashKey::Header(h)),
            Err(_) => {
                c.issue("balance.hash_key", format!("`{name}` is not a header name"));
                None
            }
        },
        Some(("cookie", name)) if !name.trim().is_empty() => {
            Some(HashKey::Cookie(name.trim().to_string()))
        }
        _ => {
            c.issue(
                "balance.hash_key",
                format!("`{k}` is not one of: source_ip, header:<name>, cookie:<name>"),
            );
            None
        }
    });
    let algorithm = match (b.algorithm.as_deref(), key) {
        (None | Some("round_robin"), None) => Algorithm::RoundRobin,
        (Some("least_requests"), None) => Algorithm::LeastRequests,
        (Some("random"), None) => Algorithm::Random,
        (Some("hash"), Some(Some(key))) => Algorithm::Hash(key),
        (Some("hash"), Some(None)) => Algorithm::RoundRobin, // reported above
        (Some("hash"), None) => {
            c.issue("balance.hash_key", "is required with algorithm = \"hash\"");
            Algorithm::RoundRobin
        }
        (Some("round_robin" | "least_requests" | "random") | None, Some(_)) => {
            c.issue("balance.hash_key", "is only used with algorithm = \"hash\"");
            Algorithm::RoundRobin
        }
        (Some(other), _) => {
            c.issue(
                "balance.algorithm",
                format!("`{other}` is not one of: round_robin, least_requests, random, hash"),
            );
            Algorithm::RoundRobin
        }
    };
    let slow_start = b
        .slow_start
        .as_deref()
        .map(|s| c.duration("balance.slow_start", Some(s), s));
    if slow_start.is_some() && matches!(algorithm, Algorithm::Hash(_)) {
        c.issue(
            "balance.slow_start",
            "is not used with algorithm = \"hash\": a key keeps to its backend",
        );
    }
    Balance {
        algorithm,
        slow_start,
        seed: b.hash_seed.unwrap_or(0),
        sticky: b.sticky.as_ref().and_then(|s| sticky(c, s)),
    }
}

fn sticky(c: &mut Checker<'_>, s: &raw::RawSticky) -> Option<StickyMode> {
    let only = |c: &mut Checker<'_>, key: &str, given: bool, mode: &str| {
        if given {
            c.issue(
                format!("balance.sticky.{key}"),
                format!("is only used with mode = \"{mode}\""),
            );
        }
    };
    let mode = s.mode.as_deref();
    if mode != Some("cookie") {
        only(c, "cookie", s.cookie.is_some(), "cookie");
        only(c, "secret", s.secret.is_some(), "cookie");
        only(c, "secret_file", s.secret_file.is_some(), "cookie");
    }
    if mode != Some("route") {
        only(c, "route_cookie", s.route_cookie.is_some(), "route");
        only(c, "routes", s.routes.is_some(), "route");
        only(c, "learn_routes", s.learn_routes.is_some(), "route");
    }
    match mode {
        Some("cookie") => {
            let name = cookie_name(
                c,
                "balance.sticky.cookie",
                s.cookie.as_deref(),
                raw::DEFAULT_STICKY_COOKIE,
            );
            let (secret, secret_file) = secret(c, s)?;
            Some(StickyMode::Cookie {
                name,
                secret,
                secret_file,
            })
        }
        Some("route") => {
            let cookie = cookie_name(
                c,
                "balance.sticky.route_cookie",
                s.route_cookie.as_deref(),
                raw::DEFAULT_ROUTE_COOKIE,
            );
            let routes: BTreeMap<String, String> = s.routes.clone().unwrap_or_default();
            for (route, backend) in &routes {
                if let Err(why) = check_host_port(backend) {
                    c.issue(format!("balance.sticky.routes.{route}"), why);
                }
            }
            Some(StickyMode::Route {
                cookie,
                routes,
                learn: s.learn_routes.unwrap_or(true),
            })
        }
        Some("source_ip") => Some(StickyMode::SourceIp),
        Some(other) => {
            c.issue(
                "balance.sticky.mode",
                format!("`{other}` is not one of: cookie, route, source_ip"),
            );
            None
        }
        None => {
            c.issue(
                "balance.sticky.mode",
                "is required in [balance.sticky]: cookie, route or source_ip",
            );
            None
        }
    }
}

/// A cookie name: an RFC 6265 token.
fn cookie_name(c: &mut Checker<'_>, key: &str, value: Option<&str>, default: &str) -> String {
    let name = value.unwrap_or(default);
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        c.issue(key, format!("`{name}` is not a cookie name"));
    }
    name.to_string()
}

fn secret(
    c: &mut Checker<'_>,
    s: &raw::RawSticky,
) -> Option<(Vec<u8>, Option<std::path::PathBuf>)> {
    let (secret, file) = match (&s.secret, &s.secret_file) {
        (Some(text), None) => (text.as_bytes().to_vec(), None),
        (None, Some(path)) => {
            let path = resolve_path(c.base, path);
            match std::fs::read(&path) {
                // A trailing newline from `echo` or a Secret mount is not part of the key.
                Ok(bytes) => (bytes.trim_ascii_end().to_vec(), Some(path)),
                Err(e) => {
                    c.issue(
                        "balance.sticky.secret_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        }
        _ => {
            c.issue(
                "balance.sticky.secret",
                "mode = \"cookie\" needs exactly one of secret or secret_file (shared by every replica)",
            );
            return None;
        }
    };
    if secret.len() < MIN_SECRET_LEN {
        let key = if file.is_some() {
            "secret_file"
        } else {
            "secret"
        };
        c.issue(
            format!("balance.sticky.{key}"),
            format!("must be at least {MIN_SECRET_LEN} bytes (try: openssl rand -hex 32)"),
        );
        return None;
    }
    Some((secret, file))
}

pub(super) fn health(c: &mut Checker<'_>, key: &str, h: &raw::RawHealth) -> HealthCheck {
    let path = h.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
        c.issue(
            format!("{key}.path"),
            format!("`{path}` is not a path like /health/ready"),
        );
    }
    if h.port == Some(0) {
        c.issue(format!("{key}.port"), "must not be 0");
    }
    let (interval, timeout, rise, fall) = c.probe_timing(
        key,
        (h.interval.as_deref(), h.timeout.as_deref(), h.rise, h.fall),
        (
            raw::DEFAULT_HEALTH_INTERVAL,
            raw::DEFAULT_HEALTH_TIMEOUT,
            raw::DEFAULT_HEALTH_RISE,
            raw::DEFAULT_HEALTH_FALL,
        ),
    );
    let text = h
        .expect_status
        .as_deref()
        .unwrap_or(raw::DEFAULT_HEALTH_STATUS);
    let parse = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|s| (100..=599).contains(s))
    };
    let expect_status = match text.split_once('-') {
        None => parse(text).map(|s| (s, s)),
        Some((lo, hi)) => parse(lo).zip(parse(hi)).filter(|(lo, hi)| lo <= hi),
    }
    .unwrap_or_else(|| {
        c.issue(
            format!("{key}.expect_status"),
            format!("`{text}` is not a status like 200 or a range like 200-399"),
        );
        (200, 399)
    });
    HealthCheck {
        path,
        port: h.port,
        interval,
        timeout,
        rise,
        fall,
        expect_status,
        expect_json_up: h.expect_json_up.unwrap_or(false),
    }
}

pub(super) fn outlier(c: &mut Checker<'_>, key: &str, o: Option<&raw::RawOutlier>) -> Outlier {
    let empty = raw::RawOutlier::default();
    let o = o.unwrap_or(&empty);
    let base_ejection = c.duration(
        &format!("{key}.base_ejection"),
        o.base_ejection.as_deref(),
        raw::DEFAULT_OUTLIER_BASE_EJECTION,
    );
    let max_ejection = c.duration(
        &format!("{key}.max_ejection"),
        o.max_ejection.as_deref(),
        raw::DEFAULT_OUTLIER_MAX_EJECTION,
    );
    if max_ejection < base_ejection {
        c.issue(
            format!("{key}.max_ejection"),
            "must not be shorter than base_ejection",
        );
    }
    Outlier {
        consecutive_failures: o
            .consecutive_failures
            .unwrap_or(raw::DEFAULT_OUTLIER_FAILURES),
        base_ejection,
        max_ejection,
    }
}

pub(super) fn shedding(c: &mut Checker<'_>, key: &str, s: &raw::RawShedding) -> Shedding {
    let max_in_flight = match s.max_in_flight_per_backend {
        Some(0) | None => {
            c.issue(
                format!("{key}.max_in_flight_per_backend"),
                "is required in [site.shedding] and must be at least 1",
            );
            1
        }
        Some(n) => n,
    };
    let sticky_waits = match s.sticky_when_full.as_deref() {
        None | Some("wait") => true,
        Some("redispatch") => false,
        Some(other) => {
            c.issue(
                format!("{key}.sticky_when_full"),
                format!("`{other}` is not one of: wait, redispatch"),
            );
            true
        }
    };
    Shedding {
        max_in_flight,
        // By default as many may wait as one backend serves at once.
        queue: s.queue.unwrap_or(max_in_flight),
        queue_timeout: c.duration(
            &format!("{key}.queue_timeout"),
            s.queue_timeout.as_deref(),
            raw::DEFAULT_QUEUE_TIMEOUT,
        ),
        sticky_waits,
    }
}
