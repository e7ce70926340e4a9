//! Validation of a listener's `[[listener.rate_limit]]` rules (`rate_limit.rs`).

use super::raw;
use super::validate::{rule_paths, Checker};
use crate::paths::Prefix;
use crate::rate_limit::{Rate, RateLimitConfig};

/// `key` is the listener's (`listener[0]`); `relative` its `relative_path`, under which every
/// rule's paths apply too.
pub(super) fn rate_limits(
    c: &mut Checker<'_>,
    key: &str,
    rules: &[raw::RawRateLimit],
    relative: Option<&Prefix>,
) -> Vec<RateLimitConfig> {
    rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| rule(c, &format!("{key}.rate_limit[{i}]"), r, relative))
        .collect()
}

fn rule(
    c: &mut Checker<'_>,
    key: &str,
    r: &raw::RawRateLimit,
    relative: Option<&Prefix>,
) -> Option<RateLimitConfig> {
    let (paths, paths_text) = rule_paths(c, key, r.paths.as_deref(), relative);
    let rate = match r.rate.as_deref() {
        Some(text) => Rate::parse(text)
            .map_err(|e| c.issue(format!("{key}.rate"), e.to_string()))
            .ok(),
        None => {
            c.issue(
                format!("{key}.rate"),
                "is required: requests per client, like 10/s, 600/m or 1000/h",
            );
            None
        }
    };
    let burst = r.burst.or(rate.map(|r| r.count)).unwrap_or(1);
    if burst == 0 {
        c.issue(format!("{key}.burst"), "must be at least 1");
    }
    let max_clients = r.max_clients.unwrap_or(raw::DEFAULT_RATE_LIMIT_MAX_CLIENTS);
    if max_clients == 0 {
        c.issue(format!("{key}.max_clients"), "must be at least 1");
    }
    Some(RateLimitConfig {
        paths,
        paths_text,
        rate: rate?,
        burst,
        max_clients,
    })
}
