//! Site probes: each interval, `GET /lb-check` (Keycloak multi-site answers 200 `UP` or 503
//! `DOWN`) either on every backend of the site, the site being UP when at least `min_up` of them
//! answer 2xx, or on one URL (the site's own ingress). Probes have their own connections and
//! never wait behind requests or in a shedding queue.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Failover;
use crate::backends::{Backend, SharedSnapshot};
use crate::config::{HealthCheck, SiteProbe};
use crate::health::probe::{jittered, Prober};
use crate::tls::UpstreamTls;

pub struct SiteProbes {
    pub index: usize,
    pub probe: SiteProbe,
    pub prober: Arc<Prober>,
    pub snapshot: SharedSnapshot,
    pub failover: Arc<Failover>,
}

impl SiteProbes {
    pub fn new(
        index: usize,
        probe: SiteProbe,
        tls: Option<UpstreamTls>,
        snapshot: SharedSnapshot,
        failover: Arc<Failover>,
    ) -> SiteProbes {
        let check = HealthCheck {
            path: probe.path.clone(),
            port: None,
            interval: probe.interval,
            timeout: probe.timeout,
            rise: probe.rise,
            fall: probe.fall,
            expect_status: (200, 299),
            expect_json_up: false,
        };
        // A URL names its own scheme and host (sent as SNI and verified).
        let tls = match &probe.url {
            Some(url) if url.scheme_str() == Some("https") => {
                UpstreamTls::new(tls.as_ref().and_then(|t| t.ca_path.as_deref()), url.host()).ok()
            }
            Some(_) => None,
            None => tls,
        };
        SiteProbes {
            index,
            prober: Arc::new(Prober::new(tls, check)),
            probe,
            snapshot,
            failover,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let (up, detail) = self.probe_once().await;
            self.failover.probed(self.index, up, detail);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(jittered(self.probe.interval)) => {}
            }
        }
    }

    async fn probe_once(&self) -> (bool, String) {
        if let Some(url) = &self.probe.url {
            return match self.prober.probe_uri(url.clone()).await {
                Ok(()) => (true, format!("{url}: UP")),
                Err(why) => (false, format!("{url}: {why}")),
            };
        }
        let site = self.snapshot.load().sites[self.index].clone();
        let backends: Vec<Arc<Backend>> = site.members().cloned().collect();
        let results = probe_all(&self.prober, &backends).await;
        let up = results.iter().filter(|r| r.is_ok()).count();
        let mut detail = format!(
            "{up}/{} backends UP (need {})",
            backends.len(),
            self.probe.min_up
        );
        if let Some(Err(why)) = results.iter().find(|r| r.is_err()) {
            detail.push_str(&format!("; first failure: {why}"));
        }
        (up >= self.probe.min_up, detail)
    }
}

/// Probes every backend at once; results in the backends' order.
async fn probe_all(prober: &Arc<Prober>, backends: &[Arc<Backend>]) -> Vec<Result<(), String>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, backend) in backends.iter().enumerate() {
        let (prober, backend) = (prober.clone(), backend.clone());
        set.spawn(async move { (i, prober.probe(&backend).await) });
    }
    let mut results = vec![Err("probe task failed".to_string()); backends.len()];
    while let Some(done) = set.join_next().await {
        if let Ok((i, result)) = done {
            results[i] = result;
        }
    }
    results
}
