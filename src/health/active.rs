//! Active health checks: one task per site probes every backend it knows (members and draining
//! ones, whose sessions still go to them) each interval, and flips a backend's `up` after
//! `fall` failures in a row or `rise` passes in a row. Transitions are logged once each.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::probe::{jittered, Prober};
use crate::backends::{Backend, SharedSnapshot, Site};
use crate::metrics::Metrics;

pub struct ActiveChecks {
    pub index: usize,
    pub site: String,
    pub prober: Arc<Prober>,
    pub interval: std::time::Duration,
    pub rise: u32,
    pub fall: u32,
    pub snapshot: SharedSnapshot,
    pub metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Streak {
    passes: u32,
    failures: u32,
}

impl ActiveChecks {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut streaks: HashMap<String, Streak> = HashMap::new();
        loop {
            let site = self.snapshot.load().sites[self.index].clone();
            let targets: Vec<Arc<Backend>> = site
                .members()
                .chain(site.draining.iter().map(|d| &d.backend))
                .cloned()
                .collect();
            let mut probes = JoinSet::new();
            for backend in targets {
                let prober = self.prober.clone();
                probes.spawn(async move {
                    let result = prober.probe(&backend).await;
                    (backend, result)
                });
            }
            while let Some(done) = probes.join_next().await {
                if let Ok((backend, result)) = done {
                    let streak = streaks.entry(backend.id.clone()).or_default();
                    self.judge(streak, &backend, &site, result);
                }
            }
            // Forget backends that are gone, and their metrics.
            let known: Vec<String> = site
                .members()
                .chain(site.draining.iter().map(|d| &d.backend))
                .map(|b| b.id.clone())
                .collect();
            streaks.retain(|id, _| {
                let keep = known.contains(id);
                if !keep {
                    let _ = self
                        .metrics
                        .backend_up
                        .remove_label_values(&[&self.site, id]);
                }
                keep
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(jittered(self.interval)) => {}
            }
        }
    }

    fn judge(
        &self,
        streak: &mut Streak,
        backend: &Backend,
        backend_site: &Site,
        result: Result<(), String>,
    ) {
        let passed = result.is_ok();
        self.metrics
            .health_checks
            .with_label_values(&[self.site.as_str(), if passed { "pass" } else { "fail" }])
            .inc();
        match result {
            Ok(()) => {
                streak.passes += 1;
                streak.failures = 0;
                if streak.passes >= self.rise && backend.health.set_up(true) {
                    tracing::info!(site = %self.site, backend = %backend.id, passes = streak.passes, "backend passes its health checks again: up");
                    if let Some(admission) = &backend_site.admission {
                        admission.kick(backend_site.members());
                    }
                }
            }
            Err(why) => {
                streak.failures += 1;
                streak.passes = 0;
                if streak.failures >= self.fall && backend.health.set_up(false) {
                    tracing::warn!(site = %self.site, backend = %backend.id, reason = %why, failures = streak.failures, "backend fails its health checks: down");
                } else {
                    tracing::debug!(site = %self.site, backend = %backend.id, reason = %why, "health check failed");
                }
            }
        }
        self.metrics
            .backend_up
            .with_label_values(&[&self.site, &backend.id])
            .set(i64::from(backend.health.is_up()));
    }
}
