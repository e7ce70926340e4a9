//! Multi-site failover: the state machine (`state.rs`) behind a lock, the site probes that feed
//! it (`probe.rs`), and what a decision does: swap the active site in the routing snapshot (new
//! requests go to the new site; requests in flight finish where they are; sticky sessions of
//! the old site are re-pinned on the new one by the usual deterministic replacement), log the
//! transition with its reason, and count it.

pub mod probe;
pub mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::json;

use crate::backends::{SharedSnapshot, Snapshot};
use crate::config::Config;
use crate::metrics::Metrics;
use state::{Event, OperationError, SiteHealth, State};

/// An operator's request through the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Switchover(String),
    Failback,
    ForceDown(String),
    Release(String),
}

/// Who asked and why, for the log.
#[derive(Debug, Clone, Default)]
pub struct Operator {
    pub who: String,
    pub why: String,
    pub peer: String,
}

pub struct Failover {
    state: Mutex<State>,
    snapshot: SharedSnapshot,
    metrics: Arc<Metrics>,
}

impl Failover {
    pub fn new(config: &Config, snapshot: SharedSnapshot, metrics: Arc<Metrics>) -> Failover {
        let sites = config
            .sites
            .iter()
            .map(|s| {
                let (rise, fall) = s.probe.as_ref().map_or((1, 1), |p| (p.rise, p.fall));
                (s.name.clone(), rise, fall)
            })
            .collect();
        let failover = Failover {
            state: Mutex::new(State::new(sites, config.failover.auto_failback)),
            snapshot,
            metrics,
        };
        failover.publish_active(0);
        failover
    }

    /// Carries an operator's decisions over a reload: the active site (by name) and the
    /// sites held down. Probe states start afresh with the new probes.
    pub fn adopt(&self, previous: &Failover) {
        let (active, forced): (String, Vec<String>) = {
            let old = previous.lock();
            (
                old.sites[old.active].name.clone(),
                old.sites
                    .iter()
                    .filter(|s| s.forced_down)
                    .map(|s| s.name.clone())
                    .collect(),
            )
        };
        let active = {
            let mut state = self.lock();
            for name in &forced {
                if let Ok(i) = state.index_of(name) {
                    state.sites[i].forced_down = true;
                }
            }
            state.index_of(&active).ok().inspect(|&i| state.active = i)
        };
        if let Some(i) = active {
            self.publish_active(i);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A site probe finished.
    pub fn probed(&self, site: usize, up: bool, detail: String) {
        let events = {
            let mut state = self.lock();
            let name = state.sites[site].name.clone();
            self.metrics
                .site_probes
                .with_label_values(&[name.as_str(), if up { "up" } else { "down" }])
                .inc();
            state.probed(site, up, detail, Instant::now())
        };
        self.apply(events, None);
    }

    pub fn operate(&self, op: &Operation, operator: &Operator) -> Result<String, OperationError> {
        let now = Instant::now();
        let event = {
            let mut state = self.lock();
            match op {
                Operation::Switchover(site) => state.switchover(site)?,
                Operation::Failback => state.failback(),
                Operation::ForceDown(site) => state.force_down(site, now)?,
                Operation::Release(site) => state.release(site, now)?,
            }
        };
        tracing::warn!(
            operation = ?op,
            who = operator.who.as_str(),
            why = operator.why.as_str(),
            peer = %operator.peer,
            "site operation"
        );
        if let Operation::ForceDown(site) | Operation::Release(site) = op {
            let forced = matches!(op, Operation::ForceDown(_));
            self.metrics
                .site_forced_down
                .with_label_values(&[site.as_str()])
                .set(i64::from(forced));
        }
        self.apply(event.into_iter().collect(), Some(operator));
        let state = self.lock();
        Ok(state.sites[state.active].name.clone())
    }

    /// Whether the proxy should tell a global balancer it can serve: its active site is not
    /// DOWN or forced down, and has backends.
    pub fn serving(&self) -> bool {
        let eligible = {
            let state = self.lock();
            let active = &state.sites[state.active];
            !active.forced_down && active.health != SiteHealth::Down
        };
        eligible
            && self
                .snapshot
                .load()
                .active_site()
                .is_some_and(|s| s.has_backends())
    }

    /// Every site with its state, probe history and the active flag, for `GET /sites`.
    pub fn status(&self) -> serde_json::Value {
        let state = self.lock();
        let sites: Vec<_> = state
            .sites
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let probes: Vec<_> = s
                    .history
                    .iter()
                    .map(|p| {
                        json!({
                            "at": humantime::format_rfc3339_seconds(p.at).to_string(),
                            "up": p.up,
                            "detail": p.detail,
                        })
                    })
                    .collect();
                json!({
                    "name": s.name,
                    "active": i == state.active,
                    "state": s.health.label(),
                    "forced_down": s.forced_down,
                    "up_for_seconds": s.up_since.map(|t| t.elapsed().as_secs()),
                    "probes": probes,
                })
            })
            .collect();
        json!({ "active": state.sites[state.active].name, "sites": sites })
    }

    fn apply(&self, events: Vec<Event>, operator: Option<&Operator>) {
        if events.is_empty() {
            return;
        }
        let names: Vec<String> = self.lock().sites.iter().map(|s| s.name.clone()).collect();
        let (who, why) = operator.map_or(("probe", ""), |o| (o.who.as_str(), o.why.as_str()));
        for event in events {
            match event {
                Event::Switched { from, to, reason } => {
                    self.publish_active(to);
                    self.metrics
                        .site_switches
                        .with_label_values(&[&names[from], &names[to], reason.label()])
                        .inc();
                    tracing::warn!(
                        from = %names[from],
                        to = %names[to],
                        reason = reason.label(),
                        who,
                        why,
                        "active site changed: new requests go to {}",
                        names[to]
                    );
                }
                Event::Health { site, health } => {
                    self.metrics
                        .site_up
                        .with_label_values(&[names[site].as_str()])
                        .set(i64::from(health == SiteHealth::Up));
                    match health {
                        SiteHealth::Down => {
                            tracing::warn!(site = %names[site], "site is DOWN by its probes")
                        }
                        _ => {
                            tracing::info!(site = %names[site], state = health.label(), "site state")
                        }
                    }
                }
                Event::NoSiteUp { staying } => tracing::error!(
                    site = %names[staying],
                    "no site is UP: still serving from {} rather than refusing everything",
                    names[staying]
                ),
                Event::FailbackPending { site } => tracing::warn!(
                    site = %names[site],
                    "preferred site is UP again; traffic stays where it is until an operator \
                     fails back (POST /sites/failback on the admin listener)"
                ),
            }
        }
    }

    fn publish_active(&self, active: usize) {
        self.snapshot.rcu(|current| Snapshot {
            sites: current.sites.clone(),
            active,
        });
        let state = self.lock();
        for (i, site) in state.sites.iter().enumerate() {
            self.metrics
                .site_active
                .with_label_values(&[site.name.as_str()])
                .set(i64::from(i == active));
        }
    }
}
