//! The operator's own pages for the answers the proxy makes itself, as HAProxy's `errorfile`
//! and nginx's `error_page` give them: a maintenance page for the 503 of a site with no
//! backend or a shed request, say, instead of a line of plain text. A backend's own answers
//! pass as they came, whatever their status.
//!
//! Pages are read when the config is loaded (a missing or oversized page is a config error)
//! and held in memory; the proxy serves them from there, so a page costs an error nothing
//! but a reference count. They belong to the proxy of a configuration generation, not to a
//! connection: a reload that changes a page leaves every connection open, and their next
//! error gets the new page.

use std::fmt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;

/// A page is sent whole from memory with every such answer: 64 KiB is room for a styled page
/// with an inline logo, and keeps a flood of errors from costing more than their pages.
pub const MAX_PAGE_SIZE: u64 = 64 * 1024;

/// One status's page.
#[derive(Clone)]
pub struct ErrorPage {
    pub status: StatusCode,
    /// Where it was read from: shown by `check-config` and watched for reloads.
    pub path: PathBuf,
    pub content_type: HeaderValue,
    pub body: Bytes,
}

impl fmt::Debug for ErrorPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorPage")
            .field("status", &self.status.as_u16())
            .field("path", &self.path)
            .field("bytes", &self.body.len())
            .finish()
    }
}

/// Why a page could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("cannot read `{path}`: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("`{path}` is {size} bytes; a page may be at most {MAX_PAGE_SIZE}")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("`{path}`: its extension names the page's type, one of .html, .htm, .json, .txt")]
    UnknownType { path: PathBuf },
}

impl ErrorPage {
    /// Reads the page for `status` from `path`; its type comes from its extension.
    pub fn load(status: StatusCode, path: &Path) -> Result<ErrorPage, PageError> {
        let content_type = content_type(path).ok_or_else(|| PageError::UnknownType {
            path: path.to_path_buf(),
        })?;
        let read = |error| PageError::Read {
            path: path.to_path_buf(),
            error,
        };
        // Checked before reading, so a path naming a large file by mistake reads none of it.
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_PAGE_SIZE {
            return Err(PageError::TooLarge {
                path: path.to_path_buf(),
                size,
            });
        }
        let body = std::fs::read(path).map_err(read)?;
        Ok(ErrorPage {
            status,
            path: path.to_path_buf(),
            content_type: HeaderValue::from_static(content_type),
            body: Bytes::from(body),
        })
    }
}

fn content_type(path: &Path) -> Option<&'static str> {
    let extension = path.extension()?.to_str()?.to_ascii_lowercase();
    match extension.as_str() {
        "html" | "htm" => Some("text/html; charset=utf-8"),
        "json" => Some("application/json"),
        "txt" => Some("text/plain; charset=utf-8"),
        _ => None,
    }
}

/// The pages of one configuration, by status.
#[derive(Debug, Clone, Default)]
pub struct ErrorPages {
    pages: Vec<ErrorPage>,
}

impl ErrorPages {
    /// `pages` has one page a status (the config's keys make sure of it).
    pub fn new(pages: Vec<ErrorPage>) -> ErrorPages {
        ErrorPages { pages }
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ErrorPage> {
        self.pages.iter()
    }

    /// Puts the page for the answer's status, if there is one, in place of its text. The
    /// answer keeps its other fields (`Retry-After`, `Allow`); its length follows the page.
    pub fn dress(&self, resp: &mut Response<ProxyBody>) {
        // A handful of pages at most: a scan beats a map's hashing, and runs only on errors.
        let Some(page) = self.pages.iter().find(|p| p.status == resp.status()) else {
            return;
        };
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, page.content_type.clone());
        *resp.body_mut() = ProxyBody::local(page.body.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body;

    /// A directory for one test's pages, removed when the test is done.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!("sg-pages-{}-{tag}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_page_replaces_the_text_of_its_status_only_and_keeps_the_other_fields() {
        let dir = Dir::new("dress");
        let path = dir.join("busy.html");
        std::fs::write(&path, "<h1>back soon</h1>").unwrap();
        let page = ErrorPage::load(StatusCode::SERVICE_UNAVAILABLE, &path).unwrap();
        let pages = ErrorPages::new(vec![page]);

        let mut busy = crate::error::local_response(StatusCode::SERVICE_UNAVAILABLE, "busy");
        pages.dress(&mut busy);
        assert_eq!(busy.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(busy.headers()["retry-after"], "1");
        assert_eq!(busy.body().size_hint().exact(), Some(18));

        let mut other = crate::error::local_response(StatusCode::BAD_GATEWAY, "down");
        pages.dress(&mut other);
        assert_eq!(other.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(
            other.body().size_hint().exact(),
            Some("502 Bad Gateway: down\n".len() as u64)
        );
    }

    #[test]
    fn pages_that_cannot_be_served_are_refused_with_their_reason() {
        let dir = Dir::new("refused");
        let status = StatusCode::SERVICE_UNAVAILABLE;
        let missing = ErrorPage::load(status, &dir.join("missing.html")).unwrap_err();
        assert!(
            missing.to_string().starts_with("cannot read `"),
            "{missing}"
        );

        let big = dir.join("big.html");
        std::fs::write(&big, vec![b'x'; MAX_PAGE_SIZE as usize + 1]).unwrap();
        let e = ErrorPage::load(status, &big).unwrap_err();
        assert!(
            e.to_string()
                .contains("65537 bytes; a page may be at most 65536"),
            "{e}"
        );

        let odd = dir.join("page.php");
        std::fs::write(&odd, "x").unwrap();
        let e = ErrorPage::load(status, &odd).unwrap_err();
        assert!(e.to_string().contains(".html, .htm, .json, .txt"), "{e}");

        for (name, kind) in [
            ("a.HTM", "text/html; charset=utf-8"),
            ("a.json", "application/json"),
            ("a.txt", "text/plain; charset=utf-8"),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, "{}").unwrap();
            assert_eq!(ErrorPage::load(status, &path).unwrap().content_type, kind);
        }
    }
}
