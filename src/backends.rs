//! The routing state requests read: sites and their backends, as one immutable [`Snapshot`]
//! behind one [`ArcSwap`]. Whatever changes the set (discovery today, health checks later)
//! builds a successor snapshot and swaps it in whole (`rcu`, so concurrent producers never lose
//! each other's updates); requests load it without locks and never wait for the producers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::uri::Authority;

use crate::balance::{self, RoundRobin};
use crate::config::{Algorithm, BackendSource, Balance, Config, SiteConfig};
use crate::upstream::UpstreamClient;

/// One backend node.
#[derive(Debug)]
pub struct Backend {
    /// Stable identity and metrics label: `host:port` as configured, `ip:port` for A/AAAA
    /// records, `target:port` for SRV records (so a pod keeps its identity when its IP changes).
    pub id: String,
    /// Where requests are sent (the URI authority given to the pooled client).
    pub authority: Authority,
    /// SRV priority (lower is preferred); 0 for other sources.
    pub priority: u16,
    /// SRV weight within its priority; 1 for other sources.
    pub weight: u16,
    /// Requests sent to it whose response body has not ended yet.
    in_flight: AtomicUsize,
}

impl Backend {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Counts one request against a backend until dropped (when the response body has ended).
pub struct InFlight(Arc<Backend>);

impl InFlight {
    pub fn new(backend: Arc<Backend>) -> InFlight {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(backend)
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A member of a site as its source reports it; becomes a [`Backend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    /// `host:port` or `ip:port`: what to connect to.
    pub address: String,
    pub priority: u16,
    pub weight: u16,
}

/// A backend that left the set: no new requests go to it; requests in flight finish; it is
/// forgotten at `until` (sticky sessions will use it until then).
#[derive(Debug, Clone)]
pub struct Draining {
    pub backend: Arc<Backend>,
    pub until: Instant,
}

/// One site: its backends and the client (and so the connection pool) that reaches them.
pub struct Site {
    pub name: String,
    /// The best priority: new requests go here.
    pub backends: Vec<Arc<Backend>>,
    /// Worse SRV priorities: used only while `backends` is empty.
    pub backups: Vec<Arc<Backend>>,
    pub draining: Vec<Draining>,
    pub client: UpstreamClient,
    /// Shared across snapshots of the same site, so rotation continues through changes.
    pub rotation: Arc<RoundRobin>,
}

/// What a new member list changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub joined: Vec<String>,
    pub left: Vec<String>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty()
    }
}

impl Site {
    /// A backend for a new request; `key` is the request's hash key, when the algorithm has one.
    pub fn pick(&self, balance: &Balance, key: Option<&[u8]>) -> Option<&Arc<Backend>> {
        let set = if self.backends.is_empty() {
            &self.backups
        } else {
            &self.backends
        };
        match (&balance.algorithm, key) {
            (Algorithm::LeastRequests, _) => {
                balance::p2c(set, balance::random_u64(), |b| b.in_flight())
            }
            (Algorithm::Random, _) => balance::random(set, balance::random_u64()),
            (Algorithm::Hash(_), Some(key)) => {
                balance::rendezvous(set, key, balance.seed, |b| &b.id)
            }
            (Algorithm::RoundRobin, _) | (Algorithm::Hash(_), None) => {
                self.rotation.pick_weighted(set, |b| b.weight)
            }
        }
    }

    /// Anything to send new requests to?
    pub fn has_backends(&self) -> bool {
        !self.backends.is_empty() || !self.backups.is_empty()
    }

    /// Every member, in order: active, backups.
    pub fn members(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.backends.iter().chain(self.backups.iter())
    }

    /// The site with `members` as its set. A member that stays (or comes back from draining)
    /// keeps its `Backend`, so anything keyed on it survives; one that leaves starts draining.
    pub fn successor(&self, members: &[Member], now: Instant, drain: Duration) -> (Site, Change) {
        let mut known: HashMap<&str, &Arc<Backend>> = self
            .draining
            .iter()
            .filter(|d| d.until > now)
            .map(|d| (d.backend.id.as_str(), &d.backend))
            .collect();
        known.extend(self.members().map(|b| (b.id.as_str(), b)));
        let was: Vec<&str> = self.members().map(|b| b.id.as_str()).collect();

        let mut change = Change::default();
        let backends: Vec<Arc<Backend>> = members
            .iter()
            .filter_map(|m| {
                if !was.contains(&m.id.as_str()) {
                    change.joined.push(m.id.clone());
                }
                match known.get(m.id.as_str()) {
                    Some(b)
                        if b.authority.as_str() == m.address
                            && b.priority == m.priority
                            && b.weight == m.weight =>
                    {
                        Some(Arc::clone(b))
                    }
                    _ => backend(m),
                }
            })
            .collect();
        let mut draining: Vec<Draining> = self
            .draining
            .iter()
            .filter(|d| d.until > now && !members.iter().any(|m| m.id == d.backend.id))
            .cloned()
            .collect();
        for gone in self
            .members()
            .filter(|b| !members.iter().any(|m| m.id == b.id))
        {
            change.left.push(gone.id.clone());
            draining.push(Draining {
                backend: gone.clone(),
                until: now + drain,
            });
        }
        let best = backends.iter().map(|b| b.priority).min().unwrap_or(0);
        let (active, backups) = backends.into_iter().partition(|b| b.priority == best);
        let site = Site {
            name: self.name.clone(),
            backends: active,
            backups,
            draining,
            client: self.client.clone(),
            rotation: self.rotation.clone(),
        };
        (site, change)
    }
}

fn backend(m: &Member) -> Option<Arc<Backend>> {
    let authority = m.address.parse::<Authority>().ok()?;
    Some(Arc::new(Backend {
        id: m.id.clone(),
        authority,
        priority: m.priority,
        weight: m.weight,
        in_flight: AtomicUsize::new(0),
    }))
}

pub struct Snapshot {
    /// In order of preference; the first one serves traffic.
    pub sites: Vec<Arc<Site>>,
}

impl Snapshot {
    pub fn active_site(&self) -> Option<&Arc<Site>> {
        self.sites.first()
    }
}

pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// Replaces site `index` with its successor for `members`; returns what changed.
pub fn update_site(
    shared: &SharedSnapshot,
    index: usize,
    members: &[Member],
    now: Instant,
    drain: Duration,
) -> Change {
    let mut change = Change::default();
    shared.rcu(|current| {
        let mut sites = current.sites.clone();
        let (site, c) = sites[index].successor(members, now, drain);
        sites[index] = Arc::new(site);
        change = c;
        Snapshot { sites }
    });
    change
}

/// The snapshot at startup: static sites complete, DNS sites empty until their first lookup.
pub fn initial(config: &Config) -> Snapshot {
    Snapshot {
        sites: config
            .sites
            .iter()
            .map(|s| Arc::new(site(config, s)))
            .collect(),
    }
}

/// The members a static list describes.
pub fn static_members(list: &[String]) -> Vec<Member> {
    list.iter()
        .map(|entry| Member {
            id: entry.clone(),
            address: entry.clone(),
            priority: 0,
            weight: 1,
        })
        .collect()
}

fn site(config: &Config, s: &SiteConfig) -> Site {
    let empty = Site {
        name: s.name.clone(),
        backends: Vec::new(),
        backups: Vec::new(),
        draining: Vec::new(),
        client: UpstreamClient::new(s.tls.clone(), &config.timeouts, &config.upstream),
        rotation: Arc::new(RoundRobin::default()),
    };
    match &s.backends {
        BackendSource::Static(list) => {
            empty
                .successor(
                    &static_members(list),
                    Instant::now(),
                    config.upstream.drain_timeout,
                )
                .0
        }
        BackendSource::Dns { .. } | BackendSource::Srv { .. } => empty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Timeouts, UpstreamPool};

    fn site() -> Site {
        let t = Duration::from_secs(1);
        Site {
            name: "s".into(),
            backends: Vec::new(),
            backups: Vec::new(),
            draining: Vec::new(),
            client: UpstreamClient::new(
                None,
                &Timeouts {
                    tls_handshake: t,
                    request_header: t,
                    idle: t,
                    upstream_connect: t,
                    upstream_response: t,
                    shutdown_drain: t,
                },
                &UpstreamPool {
                    idle_timeout: t,
                    max_idle_per_backend: 1,
                    drain_timeout: t,
                },
            ),
            rotation: Arc::new(RoundRobin::default()),
        }
    }

    fn rr() -> Balance {
        Balance {
            algorithm: Algorithm::RoundRobin,
            seed: 0,
        }
    }

    fn m(id: &str, priority: u16) -> Member {
        Member {
            id: id.into(),
            address: format!("127.0.0.1:{}", 8000 + id.len() as u16 + priority),
            priority,
            weight: 1,
        }
    }

    #[tokio::test]
    async fn members_that_stay_keep_their_backend_and_leavers_drain() {
        let now = Instant::now();
        let drain = Duration::from_secs(60);
        let (s1, c1) = site().successor(&[m("a", 0), m("bb", 0)], now, drain);
        assert_eq!(c1.joined, vec!["a", "bb"]);
        let a = s1.backends[0].clone();

        let (s2, c2) = s1.successor(&[m("a", 0)], now, drain);
        assert_eq!(
            c2,
            Change {
                joined: vec![],
                left: vec!["bb".into()]
            }
        );
        assert!(Arc::ptr_eq(&s2.backends[0], &a), "a kept its identity");
        assert_eq!(s2.draining.len(), 1);
        assert_eq!(s2.draining[0].backend.id, "bb");

        // bb comes back before its drain ended: the same Backend, no longer draining.
        let bb = s2.draining[0].backend.clone();
        let (s3, c3) = s2.successor(&[m("a", 0), m("bb", 0)], now, drain);
        assert_eq!(c3.joined, vec!["bb"]);
        assert!(s3.draining.is_empty());
        assert!(s3.backends.iter().any(|b| Arc::ptr_eq(b, &bb)));

        // Draining entries expire.
        let (s4, _) = s3.successor(&[m("a", 0)], now, drain);
        let (s5, _) = s4.successor(&[m("a", 0)], now + drain + Duration::from_secs(1), drain);
        assert!(s5.draining.is_empty());
    }

    #[tokio::test]
    async fn worse_priorities_are_backups() {
        let (s, _) = site().successor(
            &[m("a", 10), m("b", 10), m("c", 20)],
            Instant::now(),
            Duration::ZERO,
        );
        assert_eq!(s.backends.len(), 2);
        assert_eq!(s.backups.len(), 1);
        for _ in 0..10 {
            assert_ne!(s.pick(&rr(), None).unwrap().id, "c");
        }
        let (s, _) = s.successor(&[m("c", 20)], Instant::now(), Duration::ZERO);
        assert_eq!(
            s.pick(&rr(), None).unwrap().id,
            "c",
            "the backup serves when nothing better is left"
        );
    }
}
