//! sessiongate: a session-aware edge reverse proxy and load balancer.
//!
//! [`Server::start`] binds every listener of a validated [`Config`] and serves until
//! [`Server::shutdown`] drains it; [`Server::reload`] switches to a new configuration without
//! dropping a connection. The binary (`main.rs`) and the integration tests both drive the
//! proxy through this one entry point.

#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod admission;
pub mod backends;
pub mod balance;
pub mod body;
pub mod boxed;
pub mod config;
pub mod connection;
pub mod cookies;
pub mod current_proxy;
pub mod demo;
pub mod discovery;
pub mod error;
pub mod error_pages;
pub mod failover;
pub mod gathered_writes;
pub mod generation;
pub mod h2_server;
pub mod h2_stall;
pub mod h2_streams;
pub mod headers;
pub mod health;
pub mod http1;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod paths;
pub mod plain_on_tls;
pub mod prefixed;
pub mod proxy;
pub mod proxy_protocol;
pub mod rate_limit;
pub mod reload;
pub mod reply;
pub mod request_counters;
pub mod request_id;
pub mod restrict;
pub mod select;
pub mod service_manager;
pub mod stale_series;
pub mod sticky;
pub mod ticket_keys;
pub mod tls;
pub mod tunnel;
pub mod upstream;
mod verified_cookies;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use metrics::Metrics;

use config::{ConfigError, ListenerConfig};
use current_proxy::CurrentProxy;
use generation::Generation;

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
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    admin_addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    admin: Arc<admin::Admin>,
    /// What the next request on any listener is served with; a reload stores its proxy here.
    proxy: Arc<CurrentProxy>,
    /// Public listeners and their connections (and upgraded tunnels).
    public_shutdown: CancellationToken,
    public_tasks: TaskTracker,
    /// The admin listener and background tasks stay up while draining, so /ready can say 503
    /// until the end.
    control_shutdown: CancellationToken,
    control_tasks: TaskTracker,
    /// What runs now; reloads take this lock, so they happen one at a time.
    pub(crate) running: tokio::sync::Mutex<Running>,
    /// Bound addresses by listener name, for `listener_addr`.
    bound: Mutex<Vec<(String, SocketAddr)>>,
}

pub(crate) struct Running {
    pub(crate) config: Config,
    generation: Generation,
    listeners: Vec<ListenerHandle>,
    /// `reload::fingerprint` of the files the last load read (the running configuration's, or
    /// those a reload refused): the watcher reloads only when the files say something else, so
    /// a SIGHUP after an edit is not followed by a second reload of the same edit.
    pub(crate) loaded: u64,
}

/// One bound public listener.
struct ListenerHandle {
    name: String,
    /// As configured (port 0 stays 0), to tell whether a reload changed it.
    listen: SocketAddr,
    addr: SocketAddr,
    serving: Arc<listener::Serving>,
}

/// Why a reload was refused; the running configuration keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
}

/// What a successful reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Listeners that keep their socket.
    pub kept: Vec<String>,
    /// Kept listeners whose open connections close gracefully: a setting they were served
    /// with changed. The others' connections stay open and serve on the new configuration.
    pub cycled: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl Server {
    /// Binds everything first (so a port in use fails the start before anything serves), then
    /// spawns the accept loops on the current Tokio runtime.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let metrics = Arc::new(Metrics::new());
        let admin_listener = bind("admin".into(), config.admin.listen)?;
        let mut bound = Vec::new();
        for l in &config.listeners {
            bound.push((l.clone(), bind(format!("listener {}", l.name), l.listen)?));
        }

        let loaded = reload::fingerprint(&reload::watched_files(&config));
        metrics.config_loaded(loaded);
        let ready = Arc::new(AtomicBool::new(false));
        let public_shutdown = CancellationToken::new();
        let public_tasks = TaskTracker::new();
        let control_shutdown = CancellationToken::new();
        let control_tasks = TaskTracker::new();

        let generation =
            Generation::start(&config, &metrics, (&control_shutdown, &control_tasks), None).await?;
        let proxy = Arc::new(CurrentProxy::new(generation.proxy.clone()));

        let admin_addr = local_addr(&admin_listener, config.admin.listen);
        let admin = Arc::new(admin::Admin {
            metrics: metrics.clone(),
            ready: ready.clone(),
            current: ArcSwap::from_pointee(admin_state(&config, &generation)),
            stale_series: stale_series::StaleSeries::default(),
        });
        control_tasks.spawn(admin::accept_loop(
            admin_listener,
            admin.clone(),
            control_shutdown.clone(),
            control_tasks.clone(),
        ));

        let inner = Arc::new(Inner {
            admin_addr,
            metrics: metrics.clone(),
            ready: ready.clone(),
            admin,
            proxy,
            public_shutdown,
            public_tasks,
            control_shutdown,
            control_tasks,
            running: tokio::sync::Mutex::new(Running {
                loaded,
                config: config.clone(),
                generation,
                listeners: Vec::new(),
            }),
            bound: Mutex::new(Vec::new()),
        });
        {
            let mut running = inner.running.lock().await;
            for (l, tcp) in bound {
                let handle = inner.spawn_listener(&config, &l, tcp);
                running.listeners.push(handle);
            }
            inner.publish_bound(&running.listeners);
            report_certificates(&inner.metrics, &config);
        }
        if let Some(interval) = config.reload.watch_interval {
            inner.control_tasks.spawn(reload::watch(
                Arc::downgrade(&inner),
                interval,
                inner.control_shutdown.clone(),
            ));
        }
        tracing::info!(%admin_addr, "admin listening (/metrics, /live, /ready, /sites)");
        admin::warn_if_open(admin_addr, config.admin.token.as_deref());
        ready.store(true, Ordering::Release);
        metrics.ready.set(1);
        metrics.config_last_reload_successful.set(1);
        Ok(Server { inner })
    }

    /// Reads the configuration file again and switches to it: everything is validated and
    /// every new port bound before anything changes; on any error the running configuration
    /// keeps serving. Listeners whose name and address are unchanged keep their socket. Requests
    /// in flight finish on the configuration they were routed by, and the next request on an
    /// open connection is routed by the new one. A kept listener whose per-connection settings
    /// changed (limits, timeouts, path rules, headers, client CA: `serves_connections_like`)
    /// closes its open connections gracefully instead, and their clients reconnect to it.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        self.inner.reload().await
    }

    /// The bound address of a public listener (useful when the config said port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.inner
            .bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.inner
            .bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.inner.admin_addr
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Graceful shutdown: report not-ready, stop accepting, let requests in flight finish
    /// (HTTP/2 clients get GOAWAY, HTTP/1.1 connections close after their current response),
    /// and wait up to the drain deadline.
    pub async fn shutdown(self) -> Drained {
        let inner = &self.inner;
        inner.ready.store(false, Ordering::Release);
        inner.metrics.ready.set(0);
        let drain = inner.running.lock().await.config.timeouts.shutdown_drain;
        inner.public_shutdown.cancel();
        inner.public_tasks.close();
        let drained = match tokio::time::timeout(drain, inner.public_tasks.wait()).await {
            Ok(()) => Drained::Clean,
            Err(_) => Drained::DeadlinePassed,
        };
        inner.control_shutdown.cancel();
        inner.control_tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), inner.control_tasks.wait()).await;
        drained
    }
}

impl Inner {
    pub(crate) async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let mut running = self.running.lock().await;
        // Read before loading: should the files change meanwhile, the watcher sees that they
        // differ from what was loaded and reloads again, rather than miss the change.
        let files = reload::watched_files(&running.config);
        let before = reload::fingerprint(&files);
        let result = self.reload_locked(&mut running).await;
        let now_watched = reload::watched_files(&running.config);
        running.loaded = if now_watched == files {
            before
        } else {
            // The new configuration names other files (a certificate moved): as they are now.
            reload::fingerprint(&now_watched)
        };
        match &result {
            Ok(changes) => {
                self.metrics.config_reloads.with_label_values(&["ok"]).inc();
                self.metrics.config_last_reload_successful.set(1);
                self.metrics.config_loaded(running.loaded);
                tracing::info!(
                    config = %running.config.source,
                    kept = ?changes.kept,
                    connections_closed_on = ?changes.cycled,
                    added = ?changes.added,
                    removed = ?changes.removed,
                    "configuration reloaded"
                );
            }
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                self.metrics.config_last_reload_successful.set(0);
                tracing::error!(error = %e, "reload refused; the running configuration keeps serving");
            }
        }
        result
    }

    async fn reload_locked(&self, running: &mut Running) -> Result<Reloaded, ReloadError> {
        let config = Config::load(std::path::Path::new(&running.config.source))?;
        if config.admin.listen != running.config.admin.listen {
            tracing::warn!(
                running = %running.config.admin.listen,
                configured = %config.admin.listen,
                "the admin listener's address changes only with a restart"
            );
        }
        admin::warn_if_open(running.config.admin.listen, config.admin.token.as_deref());
        // Bind what is new before changing anything: a port in use fails the reload alone.
        let mut fresh = Vec::new();
        for l in &config.listeners {
            let kept = running
                .listeners
                .iter()
                .any(|h| h.name == l.name && h.listen == l.listen);
            if !kept {
                fresh.push((l.clone(), bind(format!("listener {}", l.name), l.listen)?));
            }
        }
        let generation = Generation::start(
            &config,
            &self.metrics,
            (&self.control_shutdown, &self.control_tasks),
            Some(&running.generation),
        )
        .await?;

        // Commit: nothing below can fail.
        self.proxy.store(generation.proxy.clone());
        let mut changes = Reloaded::default();
        let mut listeners = Vec::new();
        for handle in running.listeners.drain(..) {
            match config
                .listeners
                .iter()
                .find(|l| l.name == handle.name && l.listen == handle.listen)
            {
                Some(l) => {
                    let previous = handle.serving.state.load_full();
                    let state = self.serving_state(&config, l, handle.addr, Some(&previous));
                    let cycled = !Arc::ptr_eq(&state.context, &previous.context);
                    handle.serving.state.store(Arc::new(state));
                    if cycled {
                        previous.retire.cancel();
                        changes.cycled.push(handle.name.clone());
                    }
                    changes.kept.push(handle.name.clone());
                    listeners.push(handle);
                }
                None => {
                    // Stop accepting, and close its connections gracefully.
                    handle.serving.shutdown.cancel();
                    handle.serving.state.load().retire.cancel();
                    changes.removed.push(handle.name.clone());
                }
            }
        }
        for (l, tcp) in fresh {
            changes.added.push(l.name.clone());
            listeners.push(self.spawn_listener(&config, &l, tcp));
        }
        self.publish_bound(&listeners);
        report_certificates(&self.metrics, &config);
        self.admin
            .current
            .store(Arc::new(admin_state(&config, &generation)));
        let old = std::mem::replace(&mut running.generation, generation);
        old.end();
        running.listeners = listeners;
        running.config = config;
        Ok(changes)
    }

    fn spawn_listener(
        &self,
        config: &Config,
        l: &ListenerConfig,
        tcp: tokio::net::TcpListener,
    ) -> ListenerHandle {
        let addr = local_addr(&tcp, l.listen);
        let serving = Arc::new(listener::Serving {
            state: ArcSwap::from_pointee(self.serving_state(config, l, addr, None)),
            shutdown: self.public_shutdown.child_token(),
            tasks: self.public_tasks.clone(),
        });
        self.public_tasks
            .spawn(listener::accept_loop(tcp, serving.clone()));
        tracing::info!(
            listener = %l.name,
            %addr,
            tls = l.tls.is_some(),
            redirect_to_https = l.redirect.is_some(),
            proxy_protocol = l.proxy_protocol.is_some(),
            "listening"
        );
        ListenerHandle {
            name: l.name.clone(),
            listen: l.listen,
            addr,
            serving,
        }
    }

    /// What a listener serves new connections with. A listener a reload kept (`previous`)
    /// keeps counting the connections it has open: they stay open (or finish), and counted
    /// afresh, the caps would add up meanwhile. It keeps its context too, and with it its open
    /// connections, when the new one would serve them alike.
    fn serving_state(
        &self,
        config: &Config,
        l: &ListenerConfig,
        addr: SocketAddr,
        previous: Option<&listener::ServingState>,
    ) -> listener::ServingState {
        let context = connection::ListenerContext::new(
            l,
            addr.port(),
            config.timeouts,
            config.limits,
            self.metrics.clone(),
            previous.map(|p| &*p.context),
        );
        let (context, retire) = match previous {
            Some(p) if p.context.serves_connections_like(&context) => {
                (p.context.clone(), p.retire.clone())
            }
            _ => (Arc::new(context), self.public_shutdown.child_token()),
        };
        listener::ServingState {
            context,
            tls: l
                .tls
                .as_ref()
                .map(|set| tokio_rustls::TlsAcceptor::from(set.server_config())),
            proxy: self.proxy.clone(),
            retire,
            connections: match previous {
                Some(p) => {
                    p.connections.set_cap(config.limits.max_connections);
                    p.connections.clone()
                }
                None => Arc::new(listener::ConnectionCap::new(config.limits.max_connections)),
            },
            per_ip: match previous {
                Some(p) => {
                    p.per_ip.set_limit(config.limits.max_connections_per_ip);
                    p.per_ip.clone()
                }
                None => Arc::new(listener::PerIp::new(config.limits.max_connections_per_ip)),
            },
        }
    }

    fn publish_bound(&self, listeners: &[ListenerHandle]) {
        *self.bound.lock().unwrap_or_else(|e| e.into_inner()) =
            listeners.iter().map(|h| (h.name.clone(), h.addr)).collect();
    }
}

/// The expiry of every certificate the listeners serve, and of no other: a certificate a reload
/// stopped serving must not go on raising expiry alerts.
fn report_certificates(metrics: &Metrics, config: &Config) {
    let served: Vec<(&str, String, i64)> = config
        .listeners
        .iter()
        .flat_map(|l| {
            l.tls.iter().flat_map(|set| set.certificates()).map(|cert| {
                let path = cert.cert_path.display().to_string();
                (l.name.as_str(), path, cert.not_after_unix)
            })
        })
        .collect();
    metrics.report_certificates(&served);
}

fn admin_state(config: &Config, generation: &Generation) -> admin::AdminState {
    admin::AdminState {
        snapshot: generation.snapshot.clone(),
        failover: generation.failover.clone(),
        token: config.admin.token.clone(),
        metrics_retain: config.admin.metrics_retain,
        listeners: config.listeners.iter().map(|l| l.name.clone()).collect(),
        drain: config.upstream.drain_timeout,
        slow_start: config.balance.slow_start,
        config_text: format!(
            "# {}, loaded {}\n{}",
            config.source,
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            config.to_effective_toml()
        ),
    }
}

fn bind(what: String, addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    listener::bind(addr).map_err(|source| StartError::Bind { what, addr, source })
}

fn local_addr(listener: &tokio::net::TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}
