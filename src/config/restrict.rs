//! Validation of a listener's `[[listener.restrict]]` rules (`restrict.rs`).

use super::raw;
use super::validate::{client_error_status, networks, rule_paths, Checker};
use crate::paths::Prefix;
use crate::restrict::Restriction;

/// `key` is the listener's (`listener[0]`); `relative` its `relative_path`, under which every
/// rule's paths apply too.
pub(super) fn restrictions(
    c: &mut Checker<'_>,
    key: &str,
    rules: &[raw::RawRestrict],
    relative: Option<&Prefix>,
) -> Vec<Restriction> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| rule(c, &format!("{key}.restrict[{i}]"), r, relative))
        .collect()
}

fn rule(
    c: &mut Checker<'_>,
    key: &str,
    r: &raw::RawRestrict,
    relative: Option<&Prefix>,
) -> Restriction {
    let (paths, paths_text) = rule_paths(c, key, r.paths.as_deref(), relative);
    let from_key = format!("{key}.allow_from");
    let allow_from = match r.allow_from.as_deref() {
        Some([]) => {
            c.issue(
                from_key,
                "is empty: nobody could reach these paths (deny_paths refuses a path to everyone)",
            );
            Vec::new()
        }
        Some(list) => networks(c, &from_key, Some(list)),
        None => {
            c.issue(
                from_key,
                "is required: the addresses or networks (CIDR) whose clients may reach the paths",
            );
            Vec::new()
        }
    };
    let status = client_error_status(
        c,
        &format!("{key}.status"),
        r.status,
        raw::DEFAULT_RESTRICT_STATUS,
    );
    Restriction {
        paths,
        paths_text,
        allow_from,
        status,
    }
}
