//! The routing state requests read: sites and their backends, as one immutable [`Snapshot`]
//! behind one [`ArcSwap`]. Whatever changes the set (static config today, DNS discovery and
//! health checks later) builds a new snapshot and swaps it in whole; requests load it without
//! locks and never wait for the producers.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::uri::Authority;

use crate::balance::RoundRobin;
use crate::config::{BackendSource, Config, SiteConfig};
use crate::upstream::UpstreamClient;

/// One backend node.
#[derive(Debug)]
pub struct Backend {
    /// Stable identity and metrics label: `host:port` as configured.
    pub id: String,
    /// Where requests are sent (the URI authority given to the pooled client).
    pub authority: Authority,
}

/// One site: its backends and the client (and so the connection pool) that reaches them.
pub struct Site {
    pub name: String,
    pub backends: Vec<Arc<Backend>>,
    pub client: UpstreamClient,
    /// Shared across snapshots of the same site, so rotation continues through changes.
    pub rotation: Arc<RoundRobin>,
}

impl Site {
    pub fn pick(&self) -> Option<&Arc<Backend>> {
        self.rotation.pick(&self.backends)
    }
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

/// The snapshot a static config describes.
pub fn from_config(config: &Config) -> Snapshot {
    Snapshot {
        sites: config
            .sites
            .iter()
            .map(|s| Arc::new(site(config, s)))
            .collect(),
    }
}

fn site(config: &Config, s: &SiteConfig) -> Site {
    let BackendSource::Static(list) = &s.backends;
    let backends = list
        .iter()
        .map(|entry| {
            Arc::new(Backend {
                id: entry.clone(),
                // Validation accepted only host:port forms, which are authorities.
                authority: entry.parse().expect("validated host:port"),
            })
        })
        .collect();
    Site {
        name: s.name.clone(),
        backends,
        client: UpstreamClient::new(s.tls.clone(), &config.timeouts, &config.upstream),
        rotation: Arc::new(RoundRobin::default()),
    }
}
