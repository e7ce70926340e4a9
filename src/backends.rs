//! The routing state requests read: sites and their backends, as one immutable [`Snapshot`]
//! behind one [`ArcSwap`]. Whatever changes the set (discovery today, health checks later)
//! builds a successor snapshot and swaps it in whole (`rcu`, so concurrent producers never lose
//! each other's updates); requests load it without locks and never wait for the producers.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::uri::Authority;

use crate::admission::Admission;
use crate::balance::RoundRobin;
use crate::config::{BackendSource, Config, Outlier, SiteConfig};
use crate::health::{now_ms, Health};
use crate::metrics::Metrics;
use crate::select::Outcome;
use crate::sticky::Sticky;
use crate::upstream::{IdlePool, UpstreamClient};

/// One backend node.
#[derive(Debug)]
pub struct Backend {
    /// Stable identity and metrics label: `host:port` as configured, `ip:port` for A/AAAA
    /// records, `target:port` for SRV records (so a pod keeps its identity when its IP changes).
    pub id: String,
    /// Where requests are sent (`host:port`, connected to by the site's client).
    pub authority: Authority,
    /// SRV priority (lower is preferred); 0 for other sources.
    pub priority: u16,
    /// SRV weight within its priority; 1 for other sources.
    pub weight: u16,
    /// Sticky cookie tag (a keyed hash of `id`); 0 when the site has no cookie stickiness.
    pub tag: u64,
    /// The route its session cookies carry (route stickiness), when known up front.
    pub route: Option<String>,
    pub health: Health,
    /// Its requests in flight, shared with the same node in other generations.
    lineage: Arc<Lineage>,
    /// Set while it is draining (left the set): its slots go only to its own sessions.
    leaving: AtomicBool,
    /// The site's queue, when the site caps requests in flight.
    admission: Option<Arc<Admission>>,
    /// Its kept-alive connections.
    pub pool: IdlePool,
}

impl Backend {
    /// Requests sent to it whose response body has not ended yet, whichever generation sent
    /// them.
    pub fn in_flight(&self) -> usize {
        self.lineage.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }
}

/// What the `Backend`s of one node share across configuration generations. A reload builds
/// new `Backend`s, but the requests the old ones sent are still on the node: counted afresh,
/// the old and new caps would add up until they ended, and a WebSocket tunnel opened before the
/// reload would never count again. So the count is carried over, and a request that ends in one
/// generation offers its slot to every other live generation's queue too: after two quick
/// reloads, requests may wait in the queues of two generations at once, while the slot they wait
/// for is held by a third.
#[derive(Debug, Default)]
struct Lineage {
    in_flight: AtomicUsize,
    /// Set while more than one generation's `Backend` for the node is alive: only then does a
    /// release look beyond its own queue, so the request path pays one load outside reloads.
    several: AtomicBool,
    /// The live generations of the node, oldest first. Locked when a generation joins or
    /// drops, and by releases while `several` is set.
    generations: Mutex<Vec<LineageEntry>>,
}

#[derive(Debug)]
struct LineageEntry {
    /// Weak: the lineage must not keep a generation (and its pool) alive.
    backend: Weak<Backend>,
    /// Its queue, looked at without upgrading `backend`: a release upgrades only the
    /// generations with requests waiting, so it neither allocates while nobody waits nor
    /// drops a `Backend` under the lock (whose drop takes the lock).
    admission: Option<Arc<Admission>>,
}

impl Lineage {
    fn generations(&self) -> std::sync::MutexGuard<'_, Vec<LineageEntry>> {
        // Every step is one push or one retain: a panic leaves a consistent list.
        self.generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `backend`, just made on this lineage, joins it. Called before its generation is
    /// published, so `several` is set (SeqCst) before that generation's first waiter queues: a
    /// release that reads it unset has freed its slot before that waiter looks for one.
    fn join(&self, backend: &Arc<Backend>) {
        let mut generations = self.generations();
        generations.retain(|g| g.backend.strong_count() > 0);
        generations.push(LineageEntry {
            backend: Arc::downgrade(backend),
            admission: backend.admission.clone(),
        });
        self.several.store(generations.len() > 1, Ordering::SeqCst);
    }

    /// A generation's `Backend` dropped (its own entry no longer upgrades).
    fn prune(&self) {
        let mut generations = self.generations();
        generations.retain(|g| g.backend.strong_count() > 0);
        self.several.store(generations.len() > 1, Ordering::SeqCst);
    }

    /// The live generations' `Backend`s other than `own` whose queues have requests waiting,
    /// oldest first.
    fn waiting_elsewhere(&self, own: &Arc<Backend>) -> Vec<Arc<Backend>> {
        // Collected under the lock, used and dropped after it: dropping the last reference to
        // a generation's `Backend` prunes, which takes the lock. (The one clone dropped here,
        // of `own`, is not the last: the caller holds `own`.)
        self.generations()
            .iter()
            .filter(|g| g.admission.as_ref().is_some_and(|a| a.has_waiters()))
            .filter_map(|g| g.backend.upgrade())
            .filter(|b| !Arc::ptr_eq(b, own))
            .collect()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.lineage.prune();
    }
}

/// Counts one request against a backend until dropped (when the response body has ended): a
/// slot, when the site caps requests in flight.
pub struct InFlight {
    backend: Arc<Backend>,
}

impl InFlight {
    /// Counts a request whatever the count (sites without a cap).
    pub fn new(backend: Arc<Backend>) -> InFlight {
        backend.lineage.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight { backend }
    }

    /// Takes a slot if fewer than `cap` requests are in flight.
    pub fn try_new(backend: &Arc<Backend>, cap: usize) -> Option<InFlight> {
        backend
            .lineage
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        Some(InFlight {
            backend: backend.clone(),
        })
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Freed first, then offered to the queues: see `admission.rs` for why the order matters.
        let backend = &self.backend;
        backend.lineage.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(admission) = &backend.admission {
            admission.released(backend);
        }
        // Other generations of the node may have requests waiting for this slot (see
        // `Lineage::join` for why reading `several` unset loses no wake-up).
        if backend.lineage.several.load(Ordering::SeqCst) {
            for other in backend.lineage.waiting_elsewhere(backend) {
                if let Some(admission) = &other.admission {
                    admission.released(&other);
                }
            }
        }
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

/// A backend that left the set, or that an operator holds out of it: no new requests go to it;
/// requests in flight finish; it is forgotten at `until` (sticky sessions will use it until
/// then).
#[derive(Debug, Clone)]
pub struct Draining {
    pub backend: Arc<Backend>,
    pub until: Instant,
    /// Held by an operator: drains until released, while the source still lists it.
    pub held: bool,
}

/// How long a hold keeps a backend draining when nobody releases it: for good.
const HELD_FOR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The backends an operator holds out of a site (`POST /sites/<site>/backends/<id>/drain`), by
/// id, as HAProxy's `set server ... state drain` does: no new sessions, its sessions finish
/// there, and it stays out through discovery rounds and reloads until released. Shared by the
/// site's snapshots; read only when a snapshot is built.
#[derive(Debug, Default)]
pub struct Held(Mutex<BTreeSet<String>>);

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ids(&self) -> BTreeSet<String> {
        self.lock().clone()
    }

    fn copy(&self, other: &Held) {
        *self.lock() = other.ids();
    }

    /// Holds `id` or releases it; false when that was already so.
    pub fn set(&self, id: &str, held: bool) -> bool {
        match held {
            true => self.lock().insert(id.to_string()),
            false => self.lock().remove(id),
        }
    }
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
    /// Shared across snapshots too (learned routes live in it).
    pub sticky: Option<Arc<Sticky>>,
    /// `sessiongate_sticky_total` for this site by outcome (miss, hit, repin), resolved once so
    /// requests do not hash label sets.
    pub sticky_outcomes: Option<Arc<[prometheus::IntCounter; 3]>>,
    pub outlier: Outlier,
    /// In-flight caps and the wait queue, shared across snapshots; `None`: no caps.
    pub admission: Option<Arc<Admission>>,
    /// What the site's source lists (static list or last DNS answer), holds not applied: a
    /// hold or a release builds the successor from it.
    pub reported: Arc<[Member]>,
    /// Shared across snapshots.
    pub held: Arc<Held>,
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
    /// Anything to send new requests to?
    pub fn has_backends(&self) -> bool {
        !self.backends.is_empty() || !self.backups.is_empty()
    }

    /// Every member, in order: active, backups.
    pub fn members(&self) -> impl Iterator<Item = &Arc<Backend>> + Clone {
        self.backends.iter().chain(self.backups.iter())
    }

    /// The site whose source lists `reported`. A member that stays (or comes back from
    /// draining) keeps its `Backend`, so anything keyed on it survives; one that leaves starts
    /// draining; one an operator holds drains for as long as the hold lasts and the source
    /// lists it.
    pub fn successor(&self, reported: &[Member], now: Instant, drain: Duration) -> (Site, Change) {
        let held = self.held.ids();
        let (members, holding): (Vec<&Member>, Vec<&Member>) =
            reported.iter().partition(|m| !held.contains(&m.id));
        let mut known: HashMap<&str, &Arc<Backend>> = self
            .draining
            .iter()
            .filter(|d| d.until > now)
            .map(|d| (d.backend.id.as_str(), &d.backend))
            .collect();
        known.extend(self.members().map(|b| (b.id.as_str(), b)));
        let was: Vec<&str> = self.members().map(|b| b.id.as_str()).collect();
        let known_or_new = |m: &Member| match known.get(m.id.as_str()) {
            Some(b)
                if b.authority.as_str() == m.address
                    && b.priority == m.priority
                    && b.weight == m.weight =>
            {
                Some(Arc::clone(b))
            }
            _ => backend(
                m,
                self.sticky.as_deref(),
                self.admission.as_ref(),
                Arc::default(),
            ),
        };

        let mut change = Change::default();
        let backends: Vec<Arc<Backend>> = members
            .iter()
            .filter_map(|m| {
                let joined = !was.contains(&m.id.as_str());
                let backend = known_or_new(m)?;
                if joined {
                    change.joined.push(m.id.clone());
                    // Into a set already serving (a scale-up, or back from a hold): slow
                    // start, where configured, counts from now.
                    if !was.is_empty() {
                        backend.health.came_back(now_ms());
                    }
                }
                Some(backend)
            })
            .collect();
        let stays = |id: &str| reported.iter().any(|m| m.id == id);
        let mut draining: Vec<Draining> = self
            .draining
            .iter()
            .filter(|d| d.until > now && !stays(&d.backend.id))
            .map(|d| match d.held {
                // Held, and no longer listed: it drains as any leaver does.
                true => Draining {
                    until: now + drain,
                    held: false,
                    ..d.clone()
                },
                false => d.clone(),
            })
            .collect();
        for gone in self.members().filter(|b| !stays(&b.id)) {
            change.left.push(gone.id.clone());
            draining.push(Draining {
                backend: gone.clone(),
                until: now + drain,
                held: false,
            });
        }
        for m in holding {
            if was.contains(&m.id.as_str()) {
                change.left.push(m.id.clone());
            }
            if let Some(backend) = known_or_new(m) {
                draining.push(Draining {
                    backend,
                    until: now.checked_add(HELD_FOR).unwrap_or(now + drain),
                    held: true,
                });
            }
        }
        let best = backends.iter().map(|b| b.priority).min().unwrap_or(0);
        let (active, backups) = backends.into_iter().partition(|b| b.priority == best);
        let site = self.with_set(active, backups, draining);
        (
            Site {
                reported: reported.into(),
                ..site
            },
            change,
        )
    }

    /// This site with another set, everything else (pool, rotation, stickiness, queue) shared,
    /// and each backend marked as leaving or not.
    fn with_set(
        &self,
        backends: Vec<Arc<Backend>>,
        backups: Vec<Arc<Backend>>,
        draining: Vec<Draining>,
    ) -> Site {
        let site = Site {
            name: self.name.clone(),
            backends,
            backups,
            draining,
            client: self.client.clone(),
            rotation: self.rotation.clone(),
            sticky: self.sticky.clone(),
            sticky_outcomes: self.sticky_outcomes.clone(),
            outlier: self.outlier,
            admission: self.admission.clone(),
            reported: self.reported.clone(),
            held: self.held.clone(),
        };
        for b in site.members() {
            b.leaving.store(false, Ordering::Relaxed);
        }
        for d in &site.draining {
            d.backend.leaving.store(true, Ordering::Relaxed);
        }
        site
    }

    /// This site (a reload's) with what `was`, the previous generation's site of the same name,
    /// knew: see [`adopt`].
    fn adopting(
        &self,
        was: &Site,
        checked: bool,
        now: Instant,
        drain: Duration,
        adopted: &mut Adopted,
    ) -> Site {
        let ejects = self.outlier.consecutive_failures > 0;
        let was_draining = was.draining.iter().filter(|d| d.until > now);
        let old_of = |id: &str| {
            was.members()
                .chain(was_draining.clone().map(|d| &d.backend))
                .find(|o| o.id == id)
        };
        let mut carry = |tier: &mut dyn Iterator<Item = &Arc<Backend>>| -> Vec<Arc<Backend>> {
            tier.map(|backend| {
                let Some(old) = old_of(&backend.id) else {
                    // New with this configuration, into a site already serving.
                    if was.has_backends() {
                        backend.health.came_back(now_ms());
                    }
                    return Arc::clone(backend);
                };
                adopted.backends += 1;
                // One that moved (an SRV target's new address) is counted afresh, as
                // discovery would count it.
                let moved = old.authority != backend.authority;
                let backend = (!moved)
                    .then(|| self.carried(&member(backend), old))
                    .flatten()
                    .unwrap_or_else(|| Arc::clone(backend));
                backend.health.adopt(&old.health, checked, ejects);
                backend
            })
            .collect()
        };
        let backends = carry(&mut self.backends.iter());
        let backups = carry(&mut self.backups.iter());
        // So far only the backends operators hold.
        let held = carry(&mut self.draining.iter().map(|d| &d.backend));
        let mut draining: Vec<Draining> = self
            .draining
            .iter()
            .zip(held)
            .map(|(d, backend)| Draining {
                backend,
                ..d.clone()
            })
            .collect();
        let leavers = was
            .members()
            .map(|b| (b, now + drain))
            // A hold ends with the source's listing: as a leaver now.
            .chain(was_draining.map(|d| (&d.backend, if d.held { now + drain } else { d.until })));
        for (old, until) in leavers {
            let known = |id: &str| {
                self.members().any(|b| b.id == id) || draining.iter().any(|d| d.backend.id == id)
            };
            if known(&old.id) {
                continue;
            }
            if let Some(b) = self.carried(&member(old), old) {
                b.health.adopt(&old.health, checked, ejects);
                draining.push(Draining {
                    backend: b,
                    until,
                    held: false,
                });
                adopted.draining += 1;
            }
        }
        if let (Some(sticky), Some(old)) = (&self.sticky, &was.sticky) {
            adopted.routes += sticky.adopt_learned(old);
        }
        self.with_set(backends, backups, draining)
    }

    /// `member`, the node `old` was in another generation, made for this site (its pool, its
    /// stickiness tag, since the secret may have changed, its queue) and carrying `old`'s
    /// requests in flight: from now on a slot freed by one of them is offered to this
    /// generation's queue too, and the other way round.
    fn carried(&self, member: &Member, old: &Backend) -> Option<Arc<Backend>> {
        backend(
            member,
            self.sticky.as_deref(),
            self.admission.as_ref(),
            Arc::clone(&old.lineage),
        )
    }
}

/// What `backend` was made from.
fn member(backend: &Backend) -> Member {
    Member {
        id: backend.id.clone(),
        address: backend.authority.to_string(),
        priority: backend.priority,
        weight: backend.weight,
    }
}

/// A new `Backend` for `m`, counting its requests in flight in `lineage` (a fresh one for a
/// node this generation has not known before).
fn backend(
    m: &Member,
    sticky: Option<&Sticky>,
    admission: Option<&Arc<Admission>>,
    lineage: Arc<Lineage>,
) -> Option<Arc<Backend>> {
    let authority = m.address.parse::<Authority>().ok()?;
    let backend = Arc::new(Backend {
        id: m.id.clone(),
        authority,
        priority: m.priority,
        weight: m.weight,
        tag: sticky.map_or(0, |s| s.tag(&m.id)),
        route: sticky.and_then(|s| s.route_of(&m.id)),
        health: Health::default(),
        lineage,
        leaving: AtomicBool::new(false),
        admission: admission.cloned(),
        pool: IdlePool::default(),
    });
    backend.lineage.join(&backend);
    Some(backend)
}

pub struct Snapshot {
    /// In order of preference.
    pub sites: Vec<Arc<Site>>,
    /// The site new requests go to (failover changes it).
    pub active: usize,
}

impl Snapshot {
    pub fn active_site(&self) -> Option<&Arc<Site>> {
        self.sites.get(self.active)
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
        Snapshot {
            sites,
            active: current.active,
        }
    });
    change
}

/// Why a backend an operator named cannot be held or released.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("no site `{0}`")]
    UnknownSite(String),
    #[error("site `{site}` lists no backend `{id}`")]
    NotListed { site: String, id: String },
}

/// Holds backend `id` of the site named `site` out of its set, or releases it (see [`Held`]),
/// and publishes the site's successor. Returns whether that changed anything.
pub fn hold(
    shared: &SharedSnapshot,
    site: &str,
    id: &str,
    held: bool,
    now: Instant,
    drain: Duration,
) -> Result<bool, HoldError> {
    let snapshot = shared.load();
    let index = snapshot
        .sites
        .iter()
        .position(|s| s.name == site)
        .ok_or_else(|| HoldError::UnknownSite(site.to_string()))?;
    let current = &snapshot.sites[index];
    // A hold the source no longer lists can still be released.
    let listed = current.reported.iter().any(|m| m.id == id);
    let releasable = !held && current.held.ids().contains(id);
    if !listed && !releasable {
        return Err(HoldError::NotListed {
            site: site.to_string(),
            id: id.to_string(),
        });
    }
    if !current.held.set(id, held) {
        return Ok(false);
    }
    shared.rcu(|current| {
        let mut sites = current.sites.clone();
        let reported = sites[index].reported.clone();
        sites[index] = Arc::new(sites[index].successor(&reported, now, drain).0);
        Snapshot {
            sites,
            active: current.active,
        }
    });
    Ok(true)
}

/// What a reload kept of the previous generation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Backends whose health (check verdict, passive ejection) carried over.
    pub backends: usize,
    /// Backends the reload removed, or still draining, that drain on in this generation.
    pub draining: usize,
    /// Members of DNS sites not looked up yet, taken from the previous generation's set.
    pub seeded: usize,
    /// Learned routes carried over.
    pub routes: usize,
}

/// A reload keeps what the previous generation learned about the backends it shares with
/// this one, matched by site name and backend id: without it every reload would send requests
/// to backends known to be failing until they failed again, balance afresh the route-mode
/// sessions whose route was learned, and cut short the drain of backends that had left (a
/// certificate rotation during a rolling update would move their sessions at once). So:
/// - a backend that stays keeps its check verdict, only in sites still checked (nothing else
///   would ever bring a backend back up), and its passive ejection, in sites that still eject;
/// - a backend the reload removes, or one still draining, drains here as if it had left now
///   (or until its drain was due to end): a reload is one more change of the set;
/// - both carry the node's requests in flight, so its cap holds through the reload;
/// - backends an operator holds stay held;
/// - route mode keeps the routes it learned;
/// - a DNS site starts from the previous set, as its last known good one: a reload during a DNS
///   failure must not empty a site that the failure alone would have kept.
///
/// Called before this generation's discovery and health checks start, so that discovery goes on
/// from the set kept here and the checks' first verdicts are never overwritten.
pub fn adopt(next: &SharedSnapshot, previous: &Snapshot, config: &Config, now: Instant) -> Adopted {
    let mut adopted = Adopted::default();
    // Loaded and stored, not `rcu`: nothing else writes this snapshot yet, and carrying a
    // backend over links the old one to the new (a retried closure would leave it linked to
    // one thrown away).
    let current = next.load();
    let sites = current
        .sites
        .iter()
        .zip(&config.sites)
        .map(
            |(site, site_config)| match previous.sites.iter().find(|p| p.name == site.name) {
                Some(was) => {
                    let drain = config.upstream.drain_timeout;
                    site.held.copy(&was.held);
                    // A DNS site not looked up yet starts from the last known good set,
                    // as a DNS failure would keep it (discovery goes on from there).
                    let seed = site_config.backends.dns_name().is_some() && !site.has_backends();
                    let reported = if seed { &was.reported } else { &site.reported };
                    let (site, _) = site.successor(reported, now, drain);
                    if seed {
                        adopted.seeded += site.members().count();
                    }
                    let checked = site_config.health.is_some();
                    Arc::new(site.adopting(was, checked, now, drain, &mut adopted))
                }
                None => Arc::clone(site),
            },
        )
        .collect();
    next.store(Arc::new(Snapshot {
        sites,
        active: current.active,
    }));
    adopted
}

/// The snapshot at startup: static sites complete, DNS sites empty until their first lookup.
pub fn initial(config: &Config, metrics: &Metrics) -> Snapshot {
    Snapshot {
        active: 0,
        sites: config
            .sites
            .iter()
            .map(|s| Arc::new(site(config, s, metrics)))
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

fn site(config: &Config, s: &SiteConfig, metrics: &Metrics) -> Site {
    let empty = Site {
        name: s.name.clone(),
        backends: Vec::new(),
        backups: Vec::new(),
        draining: Vec::new(),
        client: UpstreamClient::new(s.tls.clone(), &config.timeouts, &config.upstream),
        rotation: Arc::new(RoundRobin::default()),
        sticky: config
            .balance
            .sticky
            .as_ref()
            .map(|mode| Arc::new(Sticky::new(mode, config.balance.seed))),
        sticky_outcomes: config.balance.sticky.as_ref().map(|_| {
            Arc::new(
                [Outcome::Balanced, Outcome::Hit, Outcome::Repinned]
                    .map(|o| metrics.sticky.with_label_values(&[&s.name, o.label()])),
            )
        }),
        outlier: s.outlier,
        admission: s
            .shedding
            .map(|sh| Arc::new(Admission::new(&s.name, sh, metrics))),
        reported: Arc::new([]),
        held: Arc::default(),
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

/// An empty site for unit tests.
#[cfg(test)]
pub(crate) fn test_site() -> Site {
    use crate::config::{Timeouts, UpstreamPool};
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
                close_grace: t,
                tunnel: t,
            },
            &UpstreamPool {
                idle_timeout: t,
                max_idle_per_backend: 1,
                drain_timeout: t,
                retries: 0,
            },
        ),
        rotation: Arc::new(RoundRobin::default()),
        sticky: None,
        sticky_outcomes: None,
        outlier: Outlier {
            consecutive_failures: 0,
            base_ejection: t,
            max_ejection: t,
        },
        admission: None,
        reported: Arc::new([]),
        held: Arc::default(),
    }
}

/// A member for unit tests: the address follows from the id and priority.
#[cfg(test)]
pub(crate) fn test_member(id: &str, priority: u16) -> Member {
    Member {
        id: id.into(),
        address: format!("127.0.0.1:{}", 8000 + id.len() as u16 + priority),
        priority,
        weight: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, priority: u16) -> Member {
        test_member(id, priority)
    }

    /// Only while two generations of a node live does a release look beyond its own queue,
    /// and a generation that fails to publish (its reload refused) leaves no trace.
    #[test]
    fn a_lineage_knows_its_live_generations() {
        let site = test_site();
        let old = backend(&m("a", 0), None, None, Arc::default()).unwrap();
        assert!(!old.lineage.several.load(Ordering::SeqCst));
        let new = site.carried(&m("a", 0), &old).unwrap();
        assert!(Arc::ptr_eq(&old.lineage, &new.lineage));
        assert!(new.lineage.several.load(Ordering::SeqCst));
        let newest = old.lineage.generations()[1].backend.upgrade().unwrap();
        assert!(Arc::ptr_eq(&newest, &new));
        drop(newest);

        let slot = InFlight::new(Arc::clone(&old));
        assert_eq!(new.in_flight(), 1);
        drop(old);
        assert!(
            new.lineage.several.load(Ordering::SeqCst),
            "a request holds the old one"
        );
        drop(slot);
        assert_eq!(new.in_flight(), 0);
        assert!(!new.lineage.several.load(Ordering::SeqCst));

        let refused = site.carried(&m("a", 0), &new).unwrap();
        assert!(new.lineage.several.load(Ordering::SeqCst));
        drop(refused);
        assert!(!new.lineage.several.load(Ordering::SeqCst));
        assert_eq!(new.lineage.generations().len(), 1);
    }

    #[tokio::test]
    async fn members_that_stay_keep_their_backend_and_leavers_drain() {
        let now = Instant::now();
        let drain = Duration::from_secs(60);
        let (s1, c1) = test_site().successor(&[m("a", 0), m("bb", 0)], now, drain);
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
    async fn a_held_backend_drains_until_released_or_no_longer_listed() {
        let now = Instant::now();
        let drain = Duration::from_secs(60);
        let listed = [m("a", 0), m("bb", 0)];
        let (s1, _) = test_site().successor(&listed, now, drain);
        let bb = s1.backends[1].clone();
        s1.held.set("bb", true);

        // Held: out of the set, draining past any drain timeout, the same Backend.
        let (s2, c2) = s1.successor(&listed, now, drain);
        assert_eq!(c2.left, vec!["bb"]);
        assert_eq!(s2.backends.len(), 1);
        assert!(s2.draining[0].held && Arc::ptr_eq(&s2.draining[0].backend, &bb));
        assert!(bb.is_leaving());
        let later = now + drain * 100;
        let (s3, c3) = s2.successor(&listed, later, drain);
        assert!(c3.is_empty(), "{c3:?}");
        assert!(s3.draining[0].held && s3.draining[0].until > later + drain);

        // Released: back in the set as it was.
        s3.held.set("bb", false);
        let (s4, c4) = s3.successor(&listed, later, drain);
        assert_eq!(c4.joined, vec!["bb"]);
        assert!(s4.draining.is_empty() && Arc::ptr_eq(&s4.backends[1], &bb));
        assert!(!bb.is_leaving());

        // Held, then no longer listed: an ordinary drain from then on.
        s4.held.set("bb", true);
        let (s5, _) = s4.successor(&listed, later, drain);
        let (s6, _) = s5.successor(&listed[..1], later, drain);
        assert!(!s6.draining[0].held);
        assert_eq!(s6.draining[0].until, later + drain);
    }
}
