//! Validation of multi-site settings: `[failover]`, `[site.lb_check]`, and the admin token that
//! guards the site operations.

use super::raw;
use super::validate::Checker;
use super::{resolve_path, FailoverConfig, SiteProbe};

pub(super) fn failover(c: &mut Checker<'_>, f: &raw::RawFailover) -> FailoverConfig {
    let hold = f.failback_hold.as_deref();
    let auto_failback = match f.failback.as_deref() {
        None | Some("manual") => {
            if hold.is_some() {
                c.issue(
                    "failover.failback_hold",
                    "is only used with failback = \"auto\"",
                );
            }
            None
        }
        Some("auto") => {
            Some(c.duration("failover.failback_hold", hold, raw::DEFAULT_FAILBACK_HOLD))
        }
        Some(other) => {
            c.issue(
                "failover.failback",
                format!("`{other}` is not one of: manual, auto"),
            );
            None
        }
    };
    let lb_check_path = match f.lb_check_path.as_deref() {
        None => Some(raw::DEFAULT_LB_CHECK_PATH.to_string()),
        Some("") => None,
        Some(p) if p.starts_with('/') => Some(p.to_string()),
        Some(p) => {
            c.issue(
                "failover.lb_check_path",
                format!("`{p}` is not a path like /lb-check (\"\" turns it off)"),
            );
            None
        }
    };
    FailoverConfig {
        auto_failback,
        lb_check_path,
    }
}

pub(super) fn site_probe(c: &mut Checker<'_>, key: &str, p: &raw::RawSiteProbe) -> SiteProbe {
    let path = p
        .path
        .clone()
        .unwrap_or_else(|| raw::DEFAULT_LB_CHECK_PATH.to_string());
    if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
        c.issue(
            format!("{key}.path"),
            format!("`{path}` is not a path like /lb-check"),
        );
    }
    let url = p.url.as_deref().and_then(|u| match u.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
            Some(uri)
        }
        _ => {
            c.issue(
                format!("{key}.url"),
                format!("`{u}` is not an http(s) URL like https://site-b.example.com/lb-check"),
            );
            None
        }
    });
    if url.is_some() && p.path.is_some() {
        c.issue(
            format!("{key}.path"),
            "is not used with url (the URL has its own path)",
        );
    }
    if url.is_some() && p.min_up.is_some() {
        c.issue(
            format!("{key}.min_up"),
            "is only used when probing each backend",
        );
    }
    let (interval, timeout, rise, fall) = c.probe_timing(
        key,
        (p.interval.as_deref(), p.timeout.as_deref(), p.rise, p.fall),
        (
            raw::DEFAULT_SITE_PROBE_INTERVAL,
            raw::DEFAULT_SITE_PROBE_TIMEOUT,
            raw::DEFAULT_SITE_PROBE_RISE,
            raw::DEFAULT_SITE_PROBE_FALL,
        ),
    );
    let min_up = match p.min_up {
        Some(0) => {
            c.issue(format!("{key}.min_up"), "must be at least 1");
            1
        }
        n => n.unwrap_or(1),
    };
    SiteProbe {
        path,
        url,
        interval,
        timeout,
        rise,
        fall,
        min_up,
    }
}

/// The admin bearer token, from `token` or `token_file` (trailing newline dropped).
pub(super) fn admin_token(c: &mut Checker<'_>, a: &raw::RawAdmin) -> Option<String> {
    let token = match (&a.token, &a.token_file) {
        (None, None) => return None,
        (Some(t), None) => t.clone(),
        (None, Some(file)) => {
            let path = resolve_path(c.base, file);
            match std::fs::read_to_string(&path) {
                Ok(t) => t.trim_end().to_string(),
                Err(e) => {
                    c.issue(
                        "admin.token_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        }
        (Some(_), Some(_)) => {
            c.issue("admin.token", "give token or token_file, not both");
            return None;
        }
    };
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        c.issue(
            if a.token.is_some() {
                "admin.token"
            } else {
                "admin.token_file"
            },
            "must be at least 16 visible ASCII characters (try: openssl rand -hex 24)",
        );
        return None;
    }
    Some(token)
}
