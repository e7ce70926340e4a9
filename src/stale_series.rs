//! Forgetting the metric series of sites, backends and listeners that are gone.
//!
//! A `backend` label is an address, and Kubernetes gives every new pod a new one: kept for the
//! life of the process, the series of every pod that ever ran would pile up with each rollout,
//! in memory and in every scrape. So a series whose `site` is no longer configured, or whose
//! `backend` is in no site's set (a draining backend counts until its drain ends), or whose
//! `listener` a reload removed, is removed once it has been gone for `admin.metrics_retain`: ten minutes by default, by which time
//! Prometheus has scraped its last values many times over (linkerd2-proxy retires idle
//! endpoints' series the same way). A backend that comes back later starts its counters from
//! zero, which `rate()` and `increase()` read as a counter reset.
//!
//! The sweep runs when `/metrics` is scraped: the series only cost anything when they are
//! rendered, and a scrape is off the request path.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::proto::MetricFamily;

use crate::backends::Snapshot;
use crate::metrics::NO_BACKEND;

/// A labelled metric whose series can be listed and removed one by one.
pub trait SeriesVec: Sync {
    fn families(&self) -> Vec<MetricFamily>;
    fn remove_series(&self, labels: &HashMap<&str, &str>);

    /// Removes every series whose labels `remove` picks; returns how many.
    fn remove_where(&self, remove: &mut dyn FnMut(&HashMap<&str, &str>) -> bool) -> usize {
        let mut removed = 0;
        for family in self.families() {
            for metric in family.get_metric() {
                let labels: HashMap<&str, &str> = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                if remove(&labels) {
                    self.remove_series(&labels);
                    removed += 1;
                }
            }
        }
        removed
    }
}

impl<T: MetricVecBuilder> SeriesVec for MetricVec<T> {
    fn families(&self) -> Vec<MetricFamily> {
        self.collect()
    }

    fn remove_series(&self, labels: &HashMap<&str, &str>) {
        // Only fails for a series that is not there, which is what was wanted.
        let _ = self.remove(labels);
        // Threads may hold its handle: they must look it up again (`request_counters`).
        crate::request_counters::series_removed();
    }
}

/// The sites, backends and listeners still there: series labelled with anything else are
/// stale.
#[derive(Debug, Default)]
pub struct Present {
    pub sites: HashSet<String>,
    pub backends: HashSet<String>,
    pub listeners: HashSet<String>,
}

impl Present {
    /// Every site of the snapshot, every backend in a site's set or still draining at `now`
    /// (its requests may still be counted), and the `listeners` configured.
    pub fn of(snapshot: &Snapshot, listeners: &[String], now: Instant) -> Present {
        let mut present = Present {
            listeners: listeners.iter().cloned().collect(),
            ..Present::default()
        };
        for site in &snapshot.sites {
            present.sites.insert(site.name.clone());
            let draining = site.draining.iter().filter(|d| d.until > now);
            for backend in site.members().chain(draining.map(|d| &d.backend)) {
                present.backends.insert(backend.id.clone());
            }
        }
        present
    }

    /// What a series' labels name that is no longer here.
    fn gone_in<'a>(&self, labels: &HashMap<&'a str, &'a str>) -> Vec<Gone> {
        let mut gone = Vec::new();
        if let Some(site) = labels.get("site").filter(|s| !self.sites.contains(**s)) {
            gone.push(Gone::Site(site.to_string()));
        }
        if let Some(backend) = labels
            .get("backend")
            .filter(|b| **b != NO_BACKEND && !self.backends.contains(**b))
        {
            gone.push(Gone::Backend(backend.to_string()));
        }
        if let Some(listener) = labels
            .get("listener")
            .filter(|l| !self.listeners.contains(**l))
        {
            gone.push(Gone::Listener(listener.to_string()));
        }
        gone
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Gone {
    Site(String),
    Backend(String),
    Listener(String),
}

/// When each gone site or backend was first seen gone.
#[derive(Debug, Default)]
pub struct StaleSeries {
    absent_since: Mutex<HashMap<Gone, Instant>>,
}

impl StaleSeries {
    /// Removes the series of `vecs` that name a site, backend or listener gone for at least
    /// `retain`;
    /// returns how many.
    pub fn sweep(
        &self,
        vecs: &[&dyn SeriesVec],
        present: &Present,
        retain: Duration,
        now: Instant,
    ) -> usize {
        let mut absent_since = self
            .absent_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut still_gone = HashSet::new();
        let mut removed = 0;
        for vec in vecs {
            removed += vec.remove_where(&mut |labels| {
                let mut expired = false;
                for gone in present.gone_in(labels) {
                    let since = *absent_since.entry(gone.clone()).or_insert(now);
                    expired |= now.saturating_duration_since(since) >= retain;
                    still_gone.insert(gone);
                }
                expired
            });
        }
        // Whatever came back, or has no series left, starts afresh if it goes again.
        absent_since.retain(|gone, _| still_gone.contains(gone));
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntCounterVec, Opts};

    fn present(sites: &[&str], backends: &[&str]) -> Present {
        Present {
            sites: sites.iter().map(|s| s.to_string()).collect(),
            backends: backends.iter().map(|b| b.to_string()).collect(),
            listeners: ["a", "b"].map(String::from).into(),
        }
    }

    fn series(vec: &IntCounterVec) -> Vec<String> {
        let mut out: Vec<String> = vec.collect()[0]
            .get_metric()
            .iter()
            .map(|m| {
                // Label values in the order of their names (Prometheus sorts them).
                let values: Vec<&str> = m.get_label().iter().map(|l| l.value()).collect();
                values.join("/")
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn series_of_what_is_gone_are_removed_after_the_retention_only() {
        let requests =
            IntCounterVec::new(Opts::new("r", "r"), &["site", "backend", "listener"]).unwrap();
        for labels in [
            ["main", "10.0.0.1:8080", "a"],
            ["main", "10.0.0.2:8080", "a"],
            ["main", "10.0.0.2:8080", "b"],
            ["main", NO_BACKEND, "a"],
            ["old", "10.0.0.1:8080", "a"],
            ["main", "10.0.0.1:8080", "removed"],
        ] {
            requests.with_label_values(&labels).inc();
        }
        let stale = StaleSeries::default();
        let vecs: [&dyn SeriesVec; 1] = [&requests];
        let retain = Duration::from_secs(600);
        let t0 = Instant::now();
        // 10.0.0.2 left the set, and the site `old` and the listener `removed` were removed.
        let now_there = present(&["main"], &["10.0.0.1:8080"]);
        assert_eq!(stale.sweep(&vecs, &now_there, retain, t0), 0);
        let before = t0 + retain - Duration::from_secs(1);
        assert_eq!(stale.sweep(&vecs, &now_there, retain, before), 0);
        assert_eq!(series(&requests).len(), 6);
        assert_eq!(stale.sweep(&vecs, &now_there, retain, t0 + retain), 4);
        assert_eq!(
            series(&requests),
            ["10.0.0.1:8080/a/main", "none/a/main"],
            "the proxy's own answers (`none`) are never stale"
        );
        // Nothing is left to remember once the next sweep finds no series of them.
        let later = t0 + retain + Duration::from_secs(15);
        assert_eq!(stale.sweep(&vecs, &now_there, retain, later), 0);
        assert!(stale.absent_since.lock().unwrap().is_empty());
    }

    #[test]
    fn a_backend_that_comes_back_in_time_keeps_its_series_and_its_clock_restarts() {
        let requests = IntCounterVec::new(Opts::new("r", "r"), &["backend"]).unwrap();
        requests.with_label_values(&["10.0.0.2:8080"]).inc_by(7);
        let stale = StaleSeries::default();
        let vecs: [&dyn SeriesVec; 1] = [&requests];
        let retain = Duration::from_secs(600);
        let t0 = Instant::now();
        let gone = present(&[], &[]);
        let back = present(&[], &["10.0.0.2:8080"]);
        stale.sweep(&vecs, &gone, retain, t0);
        stale.sweep(&vecs, &back, retain, t0 + Duration::from_secs(300));
        // Gone again: the retention counts from now, not from the first time.
        let again = t0 + Duration::from_secs(400);
        assert_eq!(stale.sweep(&vecs, &gone, retain, again), 0);
        assert_eq!(stale.sweep(&vecs, &gone, retain, t0 + retain), 0);
        assert_eq!(requests.with_label_values(&["10.0.0.2:8080"]).get(), 7);
        assert_eq!(stale.sweep(&vecs, &gone, retain, again + retain), 1);
        assert!(series(&requests).is_empty());
    }
}
