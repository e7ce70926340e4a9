//! sessiongate: a session-aware edge reverse proxy and load balancer.
//!
//! [`Server::start`] binds every listener of a validated [`Config`] and serves until
//! [`Server::shutdown`] drains it. The binary (`main.rs`) and the integration tests both drive
//! the proxy through this one entry point.

#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod backends;
pub mod balance;
pub mod body;
pub mod config;
pub mod connection;
pub mod demo;
pub mod error;
pub mod headers;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod tls;
pub mod upstream;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection and request finished before the deadline.
    Clean,
    /// The deadline passed with connections still open; they are abandoned.
    DeadlinePassed,
}

/// A running proxy.
pub struct Server {
    listeners: Vec<(String, SocketAddr)>,
    admin_addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    drain: Duration,
    /// Public listeners and their connections (and upgraded tunnels).
    public_shutdown: CancellationToken,
    public_tasks: TaskTracker,
    /// The admin listener stays up while draining, so /ready can say 503 until the end.
    admin_shutdown: CancellationToken,
    admin_tasks: TaskTracker,
}

impl Server {
    /// Binds everything first (so a port in use fails the start before anything serves), then
    /// spawns the accept loops on the current Tokio runtime.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let metrics = Arc::new(Metrics::new());
        let snapshot = Arc::new(ArcSwap::from_pointee(backends::from_config(&config)));
        for site in &snapshot.load().sites {
            metrics
                .backends
                .with_label_values(&[&site.name])
                .set(site.backends.len() as i64);
        }

        let bind = |what: String, addr: SocketAddr| {
            listener::bind(addr).map_err(|source| StartError::Bind { what, addr, source })
        };
        let admin_listener = bind("admin".into(), config.admin.listen)?;
        let mut bound = Vec::new();
        for l in &config.listeners {
            bound.push((l, bind(format!("listener {}", l.name), l.listen)?));
        }

        let ready = Arc::new(AtomicBool::new(false));
        let public_shutdown = CancellationToken::new();
        let public_tasks = TaskTracker::new();
        let admin_shutdown = CancellationToken::new();
        let admin_tasks = TaskTracker::new();

        let admin_addr = local_addr(&admin_listener, config.admin.listen);
        let admin = Arc::new(admin::Admin {
            metrics: metrics.clone(),
            ready: ready.clone(),
            snapshot: snapshot.clone(),
        });
        admin_tasks.spawn(admin::accept_loop(
            admin_listener,
            admin,
            admin_shutdown.clone(),
            admin_tasks.clone(),
        ));

        let proxy = Arc::new(proxy::Proxy::new(
            snapshot.clone(),
            public_tasks.clone(),
            config.log.access_log,
        ));
        let mut listeners = Vec::new();
        for (l, tcp) in bound {
            let addr = local_addr(&tcp, l.listen);
            let context = Arc::new(connection::ListenerContext::new(
                &l.name,
                l.tls.is_some(),
                addr.port(),
                l.redirect,
                config.timeouts,
                metrics.clone(),
            ));
            if let Some(set) = &l.tls {
                for cert in set.certificates() {
                    metrics
                        .certificate_expiry
                        .with_label_values(&[&l.name, &cert.cert_path.display().to_string()])
                        .set(cert.not_after_unix);
                }
            }
            let serving = Arc::new(listener::Serving {
                context,
                tls: l
                    .tls
                    .as_ref()
                    .map(|set| tokio_rustls::TlsAcceptor::from(set.server_config())),
                proxy: proxy.clone(),
                builder: Arc::new(connection::http_builder(&config.timeouts)),
                shutdown: public_shutdown.clone(),
                tasks: public_tasks.clone(),
            });
            public_tasks.spawn(listener::accept_loop(tcp, serving));
            tracing::info!(
                listener = %l.name,
                %addr,
                tls = l.tls.is_some(),
                redirect_to_https = l.redirect.is_some(),
                "listening"
            );
            listeners.push((l.name.clone(), addr));
        }
        tracing::info!(%admin_addr, "admin listening (/metrics, /live, /ready)");
        ready.store(true, Ordering::Release);
        metrics.ready.set(1);
        Ok(Server {
            listeners,
            admin_addr,
            metrics,
            ready,
            drain: config.timeouts.shutdown_drain,
            public_shutdown,
            public_tasks,
            admin_shutdown,
            admin_tasks,
        })
    }

    /// The bound address of a public listener (useful when the config said port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    pub fn listener_addrs(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Graceful shutdown: report not-ready, stop accepting, let requests in flight finish
    /// (HTTP/2 clients get GOAWAY, HTTP/1.1 connections close after their current response),
    /// and wait up to the drain deadline.
    pub async fn shutdown(self) -> Drained {
        self.ready.store(false, Ordering::Release);
        self.metrics.ready.set(0);
        self.public_shutdown.cancel();
        self.public_tasks.close();
        let drained = match tokio::time::timeout(self.drain, self.public_tasks.wait()).await {
            Ok(()) => Drained::Clean,
            Err(_) => Drained::DeadlinePassed,
        };
        self.admin_shutdown.cancel();
        self.admin_tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.admin_tasks.wait()).await;
        drained
    }
}

fn local_addr(listener: &tokio::net::TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}
