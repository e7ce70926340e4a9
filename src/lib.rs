//! sessiongate: a session-aware edge reverse proxy and load balancer.
//!
//! [`Server::start`] binds every listener of a validated [`Config`] and serves until
//! [`Server::shutdown`] drains it. The binary (`main.rs`) and the integration tests both drive
//! the proxy through this one entry point.

#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod admission;
pub mod backends;
pub mod balance;
pub mod body;
pub mod config;
pub mod connection;
pub mod cookies;
pub mod demo;
pub mod discovery;
pub mod error;
pub mod failover;
pub mod headers;
pub mod health;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod paths;
pub mod proxy;
pub mod proxy_protocol;
pub mod select;
pub mod sticky;
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
    #[error(transparent)]
    Resolver(#[from] discovery::dns::ResolverError),
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
    /// The admin listener and background tasks (discovery) stay up while draining, so /ready
    /// can say 503 until the end.
    control_shutdown: CancellationToken,
    control_tasks: TaskTracker,
}

impl Server {
    /// Binds everything first (so a port in use fails the start before anything serves), then
    /// spawns the accept loops on the current Tokio runtime.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let metrics = Arc::new(Metrics::new());
        let snapshot = Arc::new(ArcSwap::from_pointee(backends::initial(&config, &metrics)));
        for site in &snapshot.load().sites {
            discovery::report(&metrics, site, std::time::Instant::now());
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
        let control_shutdown = CancellationToken::new();
        let control_tasks = TaskTracker::new();

        start_discovery(
            &config,
            &snapshot,
            &metrics,
            &control_shutdown,
            &control_tasks,
        )
        .await?;

        start_health_checks(
            &config,
            &snapshot,
            &metrics,
            &control_shutdown,
            &control_tasks,
        );
        let failover = Arc::new(failover::Failover::new(
            &config,
            snapshot.clone(),
            metrics.clone(),
        ));
        // Each probe re-evaluates the state machine, so automatic failback needs no timer of
        // its own: it happens at the preferred site's probe after the hold time.
        for (index, site) in config.sites.iter().enumerate() {
            if let Some(probe) = &site.probe {
                let probes = failover::probe::SiteProbes::new(
                    index,
                    probe.clone(),
                    site.tls.clone(),
                    snapshot.clone(),
                    failover.clone(),
                );
                control_tasks.spawn(probes.run(control_shutdown.clone()));
            }
        }

        let admin_addr = local_addr(&admin_listener, config.admin.listen);
        let admin = Arc::new(admin::Admin {
            metrics: metrics.clone(),
            ready: ready.clone(),
            snapshot: snapshot.clone(),
            failover: failover.clone(),
            token: config.admin.token.clone(),
        });
        control_tasks.spawn(admin::accept_loop(
            admin_listener,
            admin,
            control_shutdown.clone(),
            control_tasks.clone(),
        ));

        let proxy = Arc::new(proxy::Proxy::new(
            snapshot.clone(),
            &config,
            metrics.clone(),
            failover.clone(),
            public_tasks.clone(),
        ));
        let mut listeners = Vec::new();
        for (l, tcp) in bound {
            let addr = local_addr(&tcp, l.listen);
            let context = Arc::new(connection::ListenerContext::new(
                l,
                addr.port(),
                config.timeouts,
                config.limits,
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
                builder: Arc::new(connection::http_builder(&config.timeouts, &config.limits)),
                permits: Arc::new(tokio::sync::Semaphore::new(config.limits.max_connections)),
                per_ip: Arc::new(listener::PerIp::new(config.limits.max_connections_per_ip)),
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
            control_shutdown,
            control_tasks,
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
        self.control_shutdown.cancel();
        self.control_tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.control_tasks.wait()).await;
        drained
    }
}

/// Starts one refresh task per DNS-discovered site and waits (bounded) for every first lookup,
/// so the proxy does not report ready before it knows its backends, and an unresolvable name
/// is said loudly at startup rather than discovered through 503s.
async fn start_discovery(
    config: &Config,
    snapshot: &backends::SharedSnapshot,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<(), StartError> {
    let dns_sites: Vec<_> = config
        .sites
        .iter()
        .enumerate()
        .filter(|(_, s)| s.backends.dns_name().is_some())
        .collect();
    if dns_sites.is_empty() {
        return Ok(());
    }
    let resolver = Arc::new(discovery::DnsResolver::new(&config.dns)?);
    let mut first = Vec::new();
    for (index, site) in dns_sites {
        let task = discovery::SiteDiscovery {
            index,
            name: site.name.clone(),
            source: site.backends.clone(),
            resolver: resolver.clone(),
            config: config.dns.clone(),
            drain: config.upstream.drain_timeout,
            snapshot: snapshot.clone(),
            metrics: metrics.clone(),
        };
        let (done, first_done) = tokio::sync::oneshot::channel();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let (policy, next) = task.first_round().await;
            let _ = done.send(());
            task.run(policy, next, shutdown).await;
        });
        first.push((index, site, first_done));
    }
    // A lookup is bounded by timeout x attempts per query; SRV adds one per target.
    let patience = config.dns.timeout * (config.dns.attempts as u32) * 4 + Duration::from_secs(1);
    let deadline = tokio::time::Instant::now() + patience;
    for (index, site, done) in first {
        let _ = tokio::time::timeout_at(deadline, done).await;
        if !snapshot.load().sites[index].has_backends() {
            tracing::error!(
                site = %site.name,
                name = %site.backends.dns_name().unwrap_or_default(),
                "no backends found for the site at startup; answering 503 and reporting not \
                 ready until the name resolves"
            );
        }
    }
    Ok(())
}

/// One active health check task per site that has `[site.health]`.
fn start_health_checks(
    config: &Config,
    snapshot: &backends::SharedSnapshot,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) {
    for (index, site) in config.sites.iter().enumerate() {
        let Some(check) = &site.health else {
            continue;
        };
        let checks = health::active::ActiveChecks {
            index,
            site: site.name.clone(),
            prober: Arc::new(health::probe::Prober::new(site.tls.clone(), check.clone())),
            interval: check.interval,
            rise: check.rise,
            fall: check.fall,
            snapshot: snapshot.clone(),
            metrics: metrics.clone(),
        };
        tasks.spawn(checks.run(shutdown.clone()));
    }
}

fn local_addr(listener: &tokio::net::TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}
