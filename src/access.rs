//! What is recorded about each request once its response has been fully sent (or abandoned):
//! the request metrics and the access log line. Created when the request head arrives, finished
//! by the response body's drop (see `body.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, StatusCode, Version};

use crate::backends::InFlight;
use crate::connection::ConnContext;
use crate::metrics::NO_BACKEND;

pub struct RequestRecord {
    conn: Arc<ConnContext>,
    start: Instant,
    method: Method,
    version: Version,
    /// Path only: query strings carry OAuth codes and tokens that must not reach logs.
    path: String,
    pub status: StatusCode,
    /// The backend chosen, counted as in flight until this record finishes.
    pub backend: Option<InFlight>,
    /// The request's ID, on listeners that give requests one.
    pub request_id: Option<HeaderValue>,
    log: bool,
}

impl RequestRecord {
    /// `start`: when the request's head arrived.
    pub fn begin(
        conn: Arc<ConnContext>,
        req: &http::request::Parts,
        start: Instant,
        log: bool,
    ) -> RequestRecord {
        conn.activity.request_started();
        RequestRecord {
            conn,
            start,
            method: req.method.clone(),
            version: req.version,
            path: if log {
                req.uri.path().to_string()
            } else {
                String::new()
            },
            status: StatusCode::OK,
            backend: None,
            request_id: None,
            log,
        }
    }

    pub fn listener(&self) -> &crate::connection::ListenerContext {
        &self.conn.listener
    }

    pub fn peer(&self) -> SocketAddr {
        self.conn.peer
    }

    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_ref().and_then(|id| id.to_str().ok())
    }

    /// Called once, when the response body is done: `complete` is false when the client went
    /// away or the backend failed mid-body.
    pub fn finish(self, bytes_sent: u64, complete: bool) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        let listener = &self.conn.listener;
        let backend = self
            .backend
            .as_ref()
            .map_or(NO_BACKEND, |b| b.backend().id.as_str());
        listener
            .metrics
            .request_done(self.status, backend, elapsed.as_secs_f64());
        self.conn.activity.request_finished(now);
        if self.log {
            tracing::info!(
                target: "sessiongate::access",
                listener = %listener.name,
                peer = %self.conn.peer,
                request_id = self.request_id(),
                method = %self.method,
                path = %self.path,
                version = ?self.version,
                status = self.status.as_u16(),
                backend,
                bytes = bytes_sent,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                complete,
            );
        }
    }
}
