//! One configuration generation: the routing snapshot, the proxy, the failover controller and
//! the background tasks that keep them current (discovery, health checks, site probes), all
//! built from one validated [`Config`]. A reload builds the next generation beside the running
//! one and switches listeners to it (`current_proxy.rs`); the old one's tasks stop, and its
//! proxy is dropped when the last request routed by it ends.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends;
use crate::config::Config;
use crate::discovery;
use crate::failover::{self, Failover};
use crate::health;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::StartError;

pub struct Generation {
    pub snapshot: backends::SharedSnapshot,
    pub proxy: Arc<Proxy>,
    pub failover: Arc<Failover>,
    /// Stops this generation's background tasks.
    pub background: CancellationToken,
}

impl Generation {
    /// Builds a generation and starts its tasks. `control` is the parent of the background
    /// tasks' token (the process's control shutdown).
    pub async fn start(
        config: &Config,
        metrics: &Arc<Metrics>,
        control: (&CancellationToken, &TaskTracker),
        previous: Option<&Generation>,
    ) -> Result<Generation, StartError> {
        let (control_shutdown, control_tasks) = control;
        let background = control_shutdown.child_token();
        let snapshot: backends::SharedSnapshot =
            Arc::new(ArcSwap::from_pointee(backends::initial(config, metrics)));
        let now = std::time::Instant::now();
        if let Some(previous) = previous {
            let adopted = backends::adopt(&snapshot, &previous.snapshot.load(), config, now);
            tracing::info!(
                backends = adopted.backends,
                draining = adopted.draining,
                seeded = adopted.seeded,
                learned_routes = adopted.routes,
                "kept what the previous configuration knew of the backends it shares"
            );
        }
        for site in &snapshot.load().sites {
            discovery::report(metrics, site, now);
        }
        if let Err(e) =
            start_discovery(config, &snapshot, metrics, &background, control_tasks).await
        {
            background.cancel();
            return Err(e);
        }
        start_health_checks(config, &snapshot, metrics, &background, control_tasks);
        let failover = Arc::new(Failover::new(config, snapshot.clone(), metrics.clone()));
        if let Some(previous) = previous {
            failover.adopt(&previous.failover);
        }
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
                control_tasks.spawn(probes.run(background.clone()));
            }
        }
        let proxy = Arc::new(Proxy::new(
            snapshot.clone(),
            config,
            metrics.clone(),
            failover.clone(),
        ));
        Ok(Generation {
            snapshot,
            proxy,
            failover,
            background,
        })
    }

    /// Retires this generation: its background tasks stop. Requests it routed finish on it.
    pub fn end(&self) {
        self.background.cancel();
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
