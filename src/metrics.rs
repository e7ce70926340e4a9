//! Every metric sessiongate exports, registered on one explicit [`Registry`] (never the global
//! one, so tests can run several proxies in one process). Labels stay low-cardinality:
//! listener, site, backend (an address), status class, error kind; never paths or clients.

use crate::request_counters;
use crate::stale_series::SeriesVec;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Request latencies from sub-millisecond (local answers, fast backends) to slow logins.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// `backend` label for answers the proxy gave itself (redirects, errors before a pick).
pub const NO_BACKEND: &str = "none";

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub open_connections: IntGaugeVec,
    pub connections: IntCounterVec,
    pub connection_errors: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub rate_limit_untracked: IntCounterVec,
    pub requests_refused: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub backends: IntGaugeVec,
    pub backends_changed: IntGaugeVec,
    pub dns_lookups: IntCounterVec,
    pub dns_stale: IntGaugeVec,
    pub certificate_expiry: IntGaugeVec,
    pub ready: IntGauge,
    pub sticky: IntCounterVec,
    pub retries: IntCounterVec,
    pub backend_up: IntGaugeVec,
    pub ejections: IntCounterVec,
    pub health_checks: IntCounterVec,
    pub shed: IntCounterVec,
    pub queue_depth: IntGaugeVec,
    pub queue_wait: HistogramVec,
    pub backend_in_flight: IntGaugeVec,
    pub site_active: IntGaugeVec,
    pub site_up: IntGaugeVec,
    pub site_forced_down: IntGaugeVec,
    pub site_probes: IntCounterVec,
    pub site_switches: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub config_last_reload_successful: IntGauge,
    config_hash: IntGauge,
    config_last_reload_success: IntGauge,
    process_series: std::sync::Once,
}

/// Handles for one listener, resolved once so the request path does not hash label sets.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub name: String,
    /// Which listener of which registry its `requests` are, for `request_counters`' table.
    id: u64,
    pub open_connections: IntGauge,
    pub connections: IntCounter,
    pub request_duration: Histogram,
    requests: IntCounterVec,
    connection_errors: IntCounterVec,
    tls_handshakes: IntCounterVec,
    requests_refused: IntCounterVec,
}

impl ListenerMetrics {
    pub fn request_done(&self, status: http::StatusCode, backend: &str, seconds: f64) {
        let (class, label) = status_class(status);
        request_counters::inc(&request_counters::Labels {
            vec: &self.requests,
            vec_id: self.id,
            class,
            values: [self.name.as_str(), label, backend],
        });
        self.request_duration.observe(seconds);
    }

    pub fn connection_error(&self, kind: &str) {
        self.connection_errors
            .with_label_values(&[self.name.as_str(), kind])
            .inc();
    }

    /// A request the listener's rules refused before any backend: `reason` is
    /// `ProxyError::refusal`'s. Not on a served request's path.
    pub fn request_refused(&self, reason: &str) {
        self.requests_refused
            .with_label_values(&[self.name.as_str(), reason])
            .inc();
    }

    /// A TLS handshake that succeeded: which version and key exchange, and whether it resumed.
    /// Once per connection, so the label lookup is not on the request path.
    pub fn tls_handshake(&self, version: &str, key_exchange: &str, resumed: bool) {
        let resumed = if resumed { "true" } else { "false" };
        self.tls_handshakes
            .with_label_values(&[self.name.as_str(), version, key_exchange, resumed])
            .inc();
    }
}

/// The status class's digit and label.
fn status_class(status: http::StatusCode) -> (u8, &'static str) {
    match status.as_u16() {
        100..=199 => (1, "1xx"),
        200..=299 => (2, "2xx"),
        300..=399 => (3, "3xx"),
        400..=499 => (4, "4xx"),
        _ => (5, "5xx"),
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

/// A gauge without labels.
fn single_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = counter(
            &registry,
            "sessiongate_requests_total",
            "Requests answered, by listener, status class and backend (`none` when the proxy answered itself).",
            &["listener", "status_class", "backend"],
        );
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "sessiongate_request_duration_seconds",
                "Time from request head received to response body fully sent, in seconds.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["listener"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(request_duration.clone()))
            .expect("unique metric");
        let open_connections = gauge(
            &registry,
            "sessiongate_open_connections",
            "Client connections currently open, by listener.",
            &["listener"],
        );
        let connections = counter(
            &registry,
            "sessiongate_connections_total",
            "Client connections accepted, by listener.",
            &["listener"],
        );
        let connection_errors = counter(
            &registry,
            "sessiongate_connection_errors_total",
            "Client connections that ended in error or were refused, by listener and kind (tls_handshake, tls_handshake_timeout, http, accept, per_ip_limit).",
            &["listener", "kind"],
        );
        let tls_handshakes = counter(
            &registry,
            "sessiongate_tls_handshakes_total",
            "Client TLS handshakes that succeeded, by listener, protocol version (TLSv1_2, TLSv1_3), key exchange group (X25519MLKEM768 is post-quantum) and whether the session resumed.",
            &["listener", "version", "key_exchange", "resumed"],
        );
        let rate_limited = counter(
            &registry,
            "sessiongate_rate_limited_total",
            "Requests answered 429 because their client was over a rate limit, by listener.",
            &["listener"],
        );
        let rate_limit_untracked = counter(
            &registry,
            "sessiongate_rate_limit_untracked_total",
            "Requests let through unlimited because a rate limit's client table was full of busy clients (raise max_clients), by listener.",
            &["listener"],
        );
        let requests_refused = counter(
            &registry,
            "sessiongate_requests_refused_total",
            "Requests the listener's rules refused before any backend, by listener and reason (denied_path: deny_paths or allow_paths; client_network: a restrict rule; ambiguous_path: a path backends could read apart, 400). Rate limits count in sessiongate_rate_limited_total.",
            &["listener", "reason"],
        );
        let upstream_errors = counter(
            &registry,
            "sessiongate_upstream_errors_total",
            "Failed exchanges with backends, by backend and kind (connect_refused, connect_timeout, tls, resolve, connect, response_timeout, protocol, client_body).",
            &["backend", "kind"],
        );
        let backends = gauge(
            &registry,
            "sessiongate_backends",
            "Backends per site and state: active (new requests), backup (worse SRV priority), draining (left the set).",
            &["site", "state"],
        );
        let backends_changed = gauge(
            &registry,
            "sessiongate_backends_last_change_timestamp_seconds",
            "When a site's backend set last changed, as a Unix timestamp.",
            &["site"],
        );
        let dns_lookups = counter(
            &registry,
            "sessiongate_dns_lookups_total",
            "Backend discovery lookups by site and result (ok, nxdomain, empty, servfail, refused, timeout, error).",
            &["site", "result"],
        );
        let dns_stale = gauge(
            &registry,
            "sessiongate_dns_stale",
            "1 while a site serves its last known good backends because DNS failed or answered empty.",
            &["site"],
        );
        let certificate_expiry = gauge(
            &registry,
            "sessiongate_tls_certificate_expiry_timestamp_seconds",
            "Expiry (notAfter) of each served certificate, as a Unix timestamp.",
            &["listener", "certificate"],
        );
        let sticky = counter(
            &registry,
            "sessiongate_sticky_total",
            "Sticky decisions by site and outcome: hit (the session's backend), miss (no usable sticky cookie, route or address: balanced and pinned), repin (the session's backend was gone or unavailable: moved to its deterministic replacement).",
            &["site", "outcome"],
        );
        let retries = counter(
            &registry,
            "sessiongate_upstream_retries_total",
            "Requests sent again to another backend after a failed attempt, by site and the failure kind.",
            &["site", "kind"],
        );
        let backend_up = gauge(
            &registry,
            "sessiongate_backend_up",
            "1 while a backend passes its active health checks, 0 while it fails them (sites with [site.health] only).",
            &["site", "backend"],
        );
        let ejections = counter(
            &registry,
            "sessiongate_backend_ejections_total",
            "Times a backend was ejected for failing requests in a row (passive health).",
            &["site", "backend"],
        );
        let health_checks = counter(
            &registry,
            "sessiongate_health_checks_total",
            "Active health probes by site and result (pass, fail).",
            &["site", "result"],
        );
        let shed = counter(
            &registry,
            "sessiongate_requests_shed_total",
            "Requests answered 503 without reaching a backend, by site and reason (queue_full, queue_timeout, no_backend).",
            &["site", "reason"],
        );
        let queue_depth = gauge(
            &registry,
            "sessiongate_queue_depth",
            "Requests waiting for a free backend slot, by site.",
            &["site"],
        );
        let queue_wait = HistogramVec::new(
            HistogramOpts::new(
                "sessiongate_queue_wait_seconds",
                "Time requests spent in a site's queue (admitted or timed out), in seconds.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["site"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(queue_wait.clone()))
            .expect("unique metric");
        let backend_in_flight = gauge(
            &registry,
            "sessiongate_backend_in_flight",
            "Requests in flight per backend (until the response body is sent), at scrape time.",
            &["site", "backend"],
        );
        let site_active = gauge(
            &registry,
            "sessiongate_site_active",
            "1 for the site new requests go to, 0 for the others.",
            &["site"],
        );
        let site_up = gauge(
            &registry,
            "sessiongate_site_up",
            "1 while a site's probes say UP, 0 while they say DOWN (sites with [site.lb_check]).",
            &["site"],
        );
        let site_forced_down = gauge(
            &registry,
            "sessiongate_site_forced_down",
            "1 while an operator holds the site down through the admin API.",
            &["site"],
        );
        let site_probes = counter(
            &registry,
            "sessiongate_site_probes_total",
            "Site probes (/lb-check) by site and result (up, down).",
            &["site", "result"],
        );
        let site_switches = counter(
            &registry,
            "sessiongate_site_switches_total",
            "Changes of the active site, by from, to and reason (failover, auto_failback, switchover, failback).",
            &["from", "to", "reason"],
        );
        let config_reloads = counter(
            &registry,
            "sessiongate_config_reloads_total",
            "Configuration reloads (SIGHUP or a changed file) by result (ok, error).",
            &["result"],
        );
        let config_last_reload_successful = single_gauge(
            &registry,
            "sessiongate_config_last_reload_successful",
            "1 if the last reload succeeded (or none was tried), 0 if it was refused.",
        );
        let config_hash = single_gauge(
            &registry,
            "sessiongate_config_hash",
            "A hash (48 bits of SHA-256) of the running configuration's files: the config and every file it names. Replicas reading the same files report the same value.",
        );
        let config_last_reload_success = single_gauge(
            &registry,
            "sessiongate_config_last_reload_success_timestamp_seconds",
            "When the running configuration was loaded (the start, or the last successful reload), in Unix seconds.",
        );
        let ready = single_gauge(
            &registry,
            "sessiongate_ready",
            "1 while the proxy accepts traffic, 0 while starting or draining.",
        );
        Metrics {
            registry,
            requests,
            request_duration,
            open_connections,
            connections,
            connection_errors,
            tls_handshakes,
            rate_limited,
            rate_limit_untracked,
            requests_refused,
            upstream_errors,
            backends,
            backends_changed,
            dns_lookups,
            dns_stale,
            certificate_expiry,
            ready,
            sticky,
            retries,
            backend_up,
            ejections,
            health_checks,
            shed,
            queue_depth,
            queue_wait,
            backend_in_flight,
            site_active,
            site_up,
            site_forced_down,
            site_probes,
            site_switches,
            config_reloads,
            config_last_reload_successful,
            config_hash,
            config_last_reload_success,
            process_series: std::sync::Once::new(),
        }
    }

    /// `reload::fingerprint` of the running configuration's files.
    pub fn config_hash(&self) -> u64 {
        self.config_hash.get() as u64
    }

    /// A configuration was loaded and runs now (the start, or a successful reload); `hash` is
    /// `reload::fingerprint` of its files.
    pub fn config_loaded(&self, hash: u64) {
        self.config_hash.set(hash as i64);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.config_last_reload_success.set(now as i64);
    }

    pub fn listener(&self, name: &str) -> ListenerMetrics {
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        ListenerMetrics {
            name: name.to_string(),
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            open_connections: self.open_connections.with_label_values(&[name]),
            connections: self.connections.with_label_values(&[name]),
            request_duration: self.request_duration.with_label_values(&[name]),
            requests: self.requests.clone(),
            connection_errors: self.connection_errors.clone(),
            tls_handshakes: self.tls_handshakes.clone(),
            requests_refused: self.requests_refused.clone(),
        }
    }

    /// Sets `sessiongate_tls_certificate_expiry_timestamp_seconds` to exactly `served`
    /// (listener, certificate path, notAfter), removing the series of any other.
    pub fn report_certificates(&self, served: &[(&str, String, i64)]) {
        for (listener, path, not_after) in served {
            self.certificate_expiry
                .with_label_values(&[listener, path.as_str()])
                .set(*not_after);
        }
        self.certificate_expiry.remove_where(&mut |labels| {
            !served.iter().any(|(listener, path, _)| {
                labels.get("listener") == Some(listener)
                    && labels.get("certificate") == Some(&path.as_str())
            })
        });
    }

    /// Every labelled metric (those with a `site` or `backend` label are swept of the series
    /// of what is gone, see `stale_series`). A new `*Vec` field belongs here too.
    pub fn labelled(&self) -> [&dyn SeriesVec; 30] {
        [
            &self.requests,
            &self.request_duration,
            &self.open_connections,
            &self.connections,
            &self.connection_errors,
            &self.tls_handshakes,
            &self.rate_limited,
            &self.rate_limit_untracked,
            &self.requests_refused,
            &self.upstream_errors,
            &self.backends,
            &self.backends_changed,
            &self.dns_lookups,
            &self.dns_stale,
            &self.certificate_expiry,
            &self.sticky,
            &self.retries,
            &self.backend_up,
            &self.ejections,
            &self.health_checks,
            &self.shed,
            &self.queue_depth,
            &self.queue_wait,
            &self.backend_in_flight,
            &self.site_active,
            &self.site_up,
            &self.site_forced_down,
            &self.site_probes,
            &self.site_switches,
            &self.config_reloads,
        ]
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> Vec<u8> {
        // The series every Prometheus client exports (`process_cpu_seconds_total`,
        // `process_resident_memory_bytes`, `process_open_fds`, ...), so that the usual dashboards
        // and alerts (descriptors near their limit, memory against the pod's) work unchanged.
        // Read from /proc/self at each scrape. Registered at the first scrape rather than at
        // start-up: an idle proxy's memory is mostly the code its start ran (build.rs), and
        // this code need not be part of it until someone asks.
        #[cfg(target_os = "linux")]
        self.process_series.call_once(|| {
            self.registry
                .register(Box::new(
                    prometheus::process_collector::ProcessCollector::for_self(),
                ))
                .expect("unique metric");
        });
        let mut out = Vec::with_capacity(8 * 1024);
        let encoder = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = encoder.encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
