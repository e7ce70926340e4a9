//! Backend discovery: one refresh task per DNS-discovered site. Each round looks the site's
//! name up, applies the failure policy, and publishes the site's new member set into the shared
//! snapshot. Requests never wait for any of this.
//!
//! The failure policy, explicit because DNS hiccups must never empty a site:
//! - records found: publish them; ask again after their TTL, clamped to
//!   `[refresh_min, refresh_max]`, ±jitter;
//! - SERVFAIL, REFUSED, timeout or any other failure: keep the last known good set (the site
//!   is *stale*), retry after `refresh_min`, doubling per consecutive failure up to
//!   `refresh_max`;
//! - NXDOMAIN or an empty answer: keep the last set for `empty_hold`, then publish an empty set
//!   (every backend starts draining); retry every `refresh_min` meanwhile.

pub mod dns;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::backends::{self, Member, SharedSnapshot, Site};
use crate::config::{BackendSource, DnsConfig};
use crate::metrics::Metrics;
pub use dns::{DnsResolver, FailKind, Outcome};

/// What to do after one lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Publish(Vec<Member>),
    /// Keep the current set; `stale` when it is no longer confirmed by DNS.
    Keep {
        stale: bool,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub struct Step {
    pub action: Action,
    /// When to look again (before jitter).
    pub next: Duration,
}

/// The failure policy's memory between lookups. Pure: the clock is passed in.
#[derive(Debug)]
pub struct Policy {
    refresh_min: Duration,
    refresh_max: Duration,
    empty_hold: Duration,
    /// A set has been published since the last NXDOMAIN/empty period began.
    published: bool,
    empty_since: Option<Instant>,
    failures: u32,
    /// The trouble last logged and when, so that it is not repeated every refresh.
    last_logged: Option<(&'static str, Instant)>,
}

/// How often a lasting DNS problem is logged again.
const LOG_REPEAT: Duration = Duration::from_secs(60);

impl Policy {
    pub fn new(config: &DnsConfig) -> Policy {
        Policy {
            refresh_min: config.refresh_min,
            refresh_max: config.refresh_max,
            empty_hold: config.empty_hold,
            published: false,
            empty_since: None,
            failures: 0,
            last_logged: None,
        }
    }

    pub fn step(&mut self, outcome: Outcome, now: Instant) -> Step {
        match outcome {
            Outcome::Found { members, ttl } => {
                self.failures = 0;
                self.empty_since = None;
                self.published = true;
                Step {
                    action: Action::Publish(members),
                    next: ttl.clamp(self.refresh_min, self.refresh_max),
                }
            }
            Outcome::NoRecords { .. } => {
                self.failures = 0;
                let since = *self.empty_since.get_or_insert(now);
                let action = if self.published && now.duration_since(since) >= self.empty_hold {
                    self.published = false;
                    Action::Publish(Vec::new())
                } else {
                    Action::Keep {
                        stale: self.published,
                    }
                };
                Step {
                    action,
                    next: self.refresh_min,
                }
            }
            Outcome::Failed { .. } => {
                self.failures = self.failures.saturating_add(1);
                let backoff = self
                    .refresh_min
                    .saturating_mul(1 << (self.failures - 1).min(16));
                Step {
                    action: Action::Keep {
                        stale: self.published,
                    },
                    next: backoff.min(self.refresh_max),
                }
            }
        }
    }
}

/// `d` scaled by a random factor in `[1 - fraction, 1 + fraction]`, so that replicas started
/// together do not query in lockstep.
pub fn jittered(d: Duration, fraction: f64) -> Duration {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    let unit = (random as f64 / u64::MAX as f64) * 2.0 - 1.0; // in [-1, 1]
    d.mul_f64((1.0 + fraction * unit).max(0.0))
}

/// One DNS-discovered site and what its task needs.
pub struct SiteDiscovery {
    pub index: usize,
    pub name: String,
    pub source: BackendSource,
    pub resolver: Arc<DnsResolver>,
    pub config: DnsConfig,
    pub drain: Duration,
    pub snapshot: SharedSnapshot,
    pub metrics: Arc<Metrics>,
}

impl SiteDiscovery {
    /// Looks up once and publishes; returns the policy (to continue with) and when to look again.
    pub async fn first_round(&self) -> (Policy, Duration) {
        let mut policy = Policy::new(&self.config);
        // A set taken over from the previous configuration (a reload) counts as published: a
        // failure keeps it, NXDOMAIN empties it after `empty_hold`, as before the reload.
        policy.published = self.snapshot.load().sites[self.index].has_backends();
        let next = self.round(&mut policy).await;
        (policy, next)
    }

    /// Refreshes until `shutdown`.
    pub async fn run(self, mut policy: Policy, mut next: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(jittered(next, self.config.jitter)) => {}
            }
            next = self.round(&mut policy).await;
        }
    }

    async fn round(&self, policy: &mut Policy) -> Duration {
        let outcome = self.resolver.resolve(&self.source).await;
        self.metrics
            .dns_lookups
            .with_label_values(&[&self.name, outcome.label()])
            .inc();
        self.log_outcome(policy, &outcome);
        let now = Instant::now();
        let step = policy.step(outcome, now);
        match step.action {
            Action::Publish(members) => {
                self.publish(&members, now);
                self.metrics
                    .dns_stale
                    .with_label_values(&[&self.name])
                    .set(0);
            }
            Action::Keep { stale } => {
                self.metrics
                    .dns_stale
                    .with_label_values(&[&self.name])
                    .set(i64::from(stale));
                // Draining entries still expire while DNS is unhappy.
                report(&self.metrics, &self.snapshot.load().sites[self.index], now);
            }
        }
        step.next
    }

    /// Logs a lookup's trouble when it starts, when it changes kind, and once a minute while it
    /// lasts: a failing DNS must be visible without a line per refresh.
    fn log_outcome(&self, policy: &mut Policy, outcome: &Outcome) {
        let label = outcome.label();
        let now = Instant::now();
        let repeat = policy
            .last_logged
            .is_some_and(|(l, at)| l == label && now.duration_since(at) < LOG_REPEAT);
        if matches!(outcome, Outcome::Found { .. }) {
            if policy.last_logged.is_some() {
                tracing::info!(site = %self.name, name = %self.source.dns_name().unwrap_or_default(), "DNS answers again");
            }
            policy.last_logged = None;
            return;
        }
        if repeat {
            return;
        }
        policy.last_logged = Some((label, now));
        let name = self.source.dns_name().unwrap_or_default();
        let held = self.snapshot.load().sites[self.index].members().count();
        match outcome {
            Outcome::Failed { reason, .. } => tracing::warn!(
                site = %self.name, %name, result = label, error = %reason, kept = held,
                "DNS lookup failed; keeping the last known good backends"
            ),
            Outcome::NoRecords { .. } if held > 0 => tracing::warn!(
                site = %self.name, %name, result = label, kept = held, hold = ?self.config.empty_hold,
                "DNS lists no backends; keeping the last set until the hold time passes"
            ),
            Outcome::NoRecords { .. } => tracing::warn!(
                site = %self.name, %name, result = label, "DNS lists no backends for the site"
            ),
            Outcome::Found { .. } => {}
        }
    }

    fn publish(&self, members: &[Member], now: Instant) {
        let before = self.snapshot.load().sites[self.index].members().count();
        let change = backends::update_site(&self.snapshot, self.index, members, now, self.drain);
        let snapshot = self.snapshot.load();
        let site = &snapshot.sites[self.index];
        report(&self.metrics, site, now);
        if change.is_empty() {
            return;
        }
        if let Some(admission) = &site.admission {
            // Backends that joined have free slots no release would hand to the queue.
            admission.kick(site.members());
        }
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.metrics
            .backends_changed
            .with_label_values(&[&self.name])
            .set(unix as i64);
        let view: Vec<&str> = site.members().map(|b| b.id.as_str()).collect();
        if view.is_empty() {
            tracing::error!(site = %self.name, left = ?change.left, "site has no backends left; answering 503");
        } else {
            tracing::info!(
                site = %self.name,
                members = ?view,
                joined = ?change.joined,
                left = ?change.left,
                "backends changed"
            );
        }
        if let BackendSource::Dns { name, .. } = &self.source {
            if view.len() == 1 && before != 1 {
                tracing::warn!(
                    site = %self.name, %name, address = view[0],
                    "the name resolves to a single address: if it is a Kubernetes Service, it \
                     must be headless (clusterIP: None) for each pod to be a backend; a \
                     ClusterIP service hides the pods behind one virtual IP and defeats \
                     per-node balancing and stickiness"
                );
            }
        }
    }
}

/// Backends per state for one site.
pub fn report(metrics: &Metrics, site: &Site, now: Instant) {
    let live = site.draining.iter().filter(|d| d.until > now);
    let held = live.clone().filter(|d| d.held).count();
    for (state, n) in [
        ("active", site.backends.len()),
        ("backup", site.backups.len()),
        ("draining", live.count() - held),
        ("held", held),
    ] {
        metrics
            .backends
            .with_label_values(&[&site.name, state])
            .set(n as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DnsConfig {
        DnsConfig {
            nameservers: None,
            timeout: Duration::from_secs(1),
            attempts: 1,
            refresh_min: Duration::from_secs(1),
            refresh_max: Duration::from_secs(30),
            jitter: 0.1,
            empty_hold: Duration::from_secs(10),
            family: crate::config::IpFamily::Both,
        }
    }

    fn found(ttl: u64) -> Outcome {
        Outcome::Found {
            members: vec![Member {
                id: "a".into(),
                address: "127.0.0.1:1".into(),
                priority: 0,
                weight: 1,
            }],
            ttl: Duration::from_secs(ttl),
        }
    }

    fn failed() -> Outcome {
        Outcome::Failed {
            kind: FailKind::ServFail,
            reason: "x".into(),
        }
    }

    #[test]
    fn ttl_is_honoured_within_floor_and_ceiling() {
        let mut p = Policy::new(&config());
        let t = Instant::now();
        assert_eq!(
            p.step(found(0), t).next,
            Duration::from_secs(1),
            "TTL 0 (Consul) hits the floor"
        );
        assert_eq!(p.step(found(5), t).next, Duration::from_secs(5));
        assert_eq!(
            p.step(found(3600), t).next,
            Duration::from_secs(30),
            "long TTLs hit the ceiling"
        );
    }

    #[test]
    fn failures_keep_the_last_set_and_back_off() {
        let mut p = Policy::new(&config());
        let t = Instant::now();
        assert!(matches!(p.step(found(5), t).action, Action::Publish(_)));
        let nexts: Vec<u64> = (0..7)
            .map(|_| {
                let step = p.step(failed(), t);
                assert_eq!(step.action, Action::Keep { stale: true });
                step.next.as_secs()
            })
            .collect();
        assert_eq!(nexts, vec![1, 2, 4, 8, 16, 30, 30]);
        assert!(matches!(p.step(found(5), t).action, Action::Publish(_)));
        assert_eq!(
            p.step(failed(), t).next,
            Duration::from_secs(1),
            "backoff resets after a success"
        );
    }

    #[test]
    fn nxdomain_holds_then_empties() {
        let mut p = Policy::new(&config());
        let t = Instant::now();
        p.step(found(5), t);
        let gone = || Outcome::NoRecords { nxdomain: true };
        assert_eq!(p.step(gone(), t).action, Action::Keep { stale: true });
        assert_eq!(
            p.step(gone(), t + Duration::from_secs(9)).action,
            Action::Keep { stale: true }
        );
        assert_eq!(
            p.step(gone(), t + Duration::from_secs(10)).action,
            Action::Publish(Vec::new())
        );
        // Already empty: nothing more to publish, and nothing stale either.
        assert_eq!(
            p.step(gone(), t + Duration::from_secs(11)).action,
            Action::Keep { stale: false }
        );
        // Records return: published at once, and a later outage starts a new hold.
        assert!(matches!(
            p.step(found(5), t + Duration::from_secs(12)).action,
            Action::Publish(_)
        ));
        assert_eq!(
            p.step(
                Outcome::NoRecords { nxdomain: false },
                t + Duration::from_secs(13)
            )
            .action,
            Action::Keep { stale: true }
        );
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(10), 0.1);
            assert!(
                d >= Duration::from_secs(9) && d <= Duration::from_secs(11),
                "{d:?}"
            );
        }
    }
}
