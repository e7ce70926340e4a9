//! Validation of `[error_pages]`: a page for each status the proxy answers itself
//! (`error_pages.rs`).

use std::collections::BTreeMap;

use super::resolve_path;
use super::validate::Checker;
use crate::error_pages::{ErrorPage, ErrorPages};

pub(super) fn error_pages(
    c: &mut Checker<'_>,
    raw: Option<&BTreeMap<String, String>>,
) -> ErrorPages {
    let mut pages = Vec::new();
    for (status, file) in raw.into_iter().flatten() {
        let key = format!("error_pages.{status}");
        let code = match status.parse::<u16>().ok().map(http::StatusCode::from_u16) {
            Some(Ok(code)) if code.is_client_error() || code.is_server_error() => code,
            Some(Ok(_)) => {
                c.issue(
                    key,
                    format!("{status} is not an error status: pages are for 400 to 599"),
                );
                continue;
            }
            _ => {
                c.issue(key, format!("`{status}` is not a status code"));
                continue;
            }
        };
        if pages.iter().any(|p: &ErrorPage| p.status == code) {
            // `0503` and `503` are two keys to TOML, one status here.
            c.issue(key, format!("a second page for {code}"));
            continue;
        }
        match ErrorPage::load(code, &resolve_path(c.base, file)) {
            Ok(page) => pages.push(page),
            Err(e) => c.issue(key, e.to_string()),
        }
    }
    ErrorPages::new(pages)
}
