//! The admin listener, separate from the public ones and on loopback by default:
//! `GET /metrics` (Prometheus text), `GET /live` (the process answers) and `GET /ready` (the
//! proxy accepts traffic and has a backend to send it to; 503 while starting or draining, so
//! Kubernetes stops sending traffic before the listeners close).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends::SharedSnapshot;
use crate::body::ProxyBody;
use crate::connection::{self, Activity};
use crate::error::local_response;
use crate::metrics::Metrics;

/// Admin connections are short scrapes and probes; keep idle ones briefly.
const ADMIN_IDLE: Duration = Duration::from_secs(30);

pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub snapshot: SharedSnapshot,
}

impl Admin {
    /// Values read from the routing state when scraped, rather than kept up to date on the
    /// request path.
    fn observe_backends(&self) {
        let gauge = &self.metrics.backend_in_flight;
        gauge.reset();
        for site in &self.snapshot.load().sites {
            let draining = site.draining.iter().map(|d| &d.backend);
            for backend in site.members().chain(draining) {
                gauge
                    .with_label_values(&[site.name.as_str(), backend.id.as_str()])
                    .set(backend.in_flight() as i64);
            }
            if let Some(admission) = &site.admission {
                self.metrics
                    .queue_depth
                    .with_label_values(&[site.name.as_str()])
                    .set(admission.depth() as i64);
            }
        }
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut resp = local_response(StatusCode::METHOD_NOT_ALLOWED, "");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        match req.uri().path() {
            "/metrics" => {
                self.observe_backends();
                let mut resp = Response::new(ProxyBody::local(self.metrics.render()));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            "/live" => local_response(StatusCode::OK, "live"),
            "/ready" => {
                let has_backend = self
                    .snapshot
                    .load()
                    .active_site()
                    .is_some_and(|s| s.has_backends());
                match (self.ready.load(Ordering::Acquire), has_backend) {
                    (true, true) => local_response(StatusCode::OK, "ready"),
                    (false, _) => {
                        local_response(StatusCode::SERVICE_UNAVAILABLE, "not accepting traffic")
                    }
                    (true, false) => local_response(StatusCode::SERVICE_UNAVAILABLE, "no backend"),
                }
            }
            _ => local_response(StatusCode::NOT_FOUND, ""),
        }
    }
}

pub async fn accept_loop(
    listener: TcpListener,
    admin: Arc<Admin>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()).http1_only());
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (admin, builder, shutdown) = (admin.clone(), builder.clone(), shutdown.clone());
        tasks.spawn(async move {
            let activity = Arc::new(Activity::new());
            let seen = activity.clone();
            let handler = move |req: Request<Incoming>| {
                seen.request_started();
                let resp = admin.handle(&req);
                seen.request_finished();
                async move { resp }
            };
            let _ = connection::serve(stream, &builder, &activity, ADMIN_IDLE, &shutdown, handler)
                .await;
        });
    }
}
