//! The configuration file as written by the operator: plain serde structs, every field optional
//! where a default exists. Nothing here is checked beyond TOML types; `validate.rs` turns these
//! into the typed [`super::Config`], and `effective.rs` turns a `Config` back into these (defaults
//! filled in) for `sessiongate check-config`.
//!
//! Unknown keys are not rejected by serde here: the loader collects them all with
//! `serde_ignored`, so one run reports every misspelt key instead of the first.

use serde::{Deserialize, Serialize};

pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: &str = "10s";
/// hyper's own default for the request head, kept: long enough for slow mobile links.
pub const DEFAULT_REQUEST_HEADER_TIMEOUT: &str = "30s";
/// Close client connections with no request in flight after this long (nginx: 75s).
pub const DEFAULT_IDLE_TIMEOUT: &str = "60s";
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: &str = "5s";
/// Time to the upstream response head (nginx `proxy_read_timeout`: 60s).
pub const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT: &str = "60s";
/// Below Kubernetes' default 30s grace period, so the drain ends before SIGKILL.
pub const DEFAULT_SHUTDOWN_DRAIN: &str = "25s";
/// Long enough for a request sent as a reload or shutdown began to arrive (Envoy's HTTP/2
/// drain grace is 5s), short enough not to hold up a reload's old connections.
pub const DEFAULT_CLOSE_GRACE: &str = "1s";
/// HAProxy's documentation suggests `timeout tunnel 1h` for WebSocket; nginx's
/// `proxy_read_timeout` (60 s) cuts quiet ones far sooner.
pub const DEFAULT_TUNNEL_TIMEOUT: &str = "1h";
/// About 3 MiB of table per rule at most.
pub const DEFAULT_RATE_LIMIT_MAX_CLIENTS: usize = 100_000;
/// Shorter than the idle timeouts of common backends (Quarkus/Vert.x: 30 min, Tomcat: 60s), so
/// the proxy closes pooled connections before the backend does and rarely races it.
pub const DEFAULT_POOL_IDLE_TIMEOUT: &str = "30s";
pub const DEFAULT_POOL_MAX_IDLE_PER_BACKEND: usize = 128;
/// How long a backend that left the set stays known as draining (its sessions may finish).
pub const DEFAULT_DRAIN_TIMEOUT: &str = "5m";
/// Further backends a failed request may try: enough to step over two dead nodes in a rollout.
pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_STICKY_COOKIE: &str = "SG_NODE";
/// Keycloak's session cookie: `<session id>.<route>`.
pub const DEFAULT_ROUTE_COOKIE: &str = "AUTH_SESSION_ID";
pub const DEFAULT_HEALTH_INTERVAL: &str = "5s";
pub const DEFAULT_HEALTH_TIMEOUT: &str = "2s";
/// HAProxy's defaults: two passes to come up, three failures to go down.
pub const DEFAULT_HEALTH_RISE: u32 = 2;
pub const DEFAULT_HEALTH_FALL: u32 = 3;
pub const DEFAULT_HEALTH_STATUS: &str = "200-399";
/// Envoy's outlier detection default (consecutive 5xx, connect failures counted as 5xx).
pub const DEFAULT_OUTLIER_FAILURES: u32 = 5;
pub const DEFAULT_OUTLIER_BASE_EJECTION: &str = "10s";
pub const DEFAULT_OUTLIER_MAX_EJECTION: &str = "5m";
/// Long enough to ride out a burst, short enough that a user is told before giving up.
pub const DEFAULT_QUEUE_TIMEOUT: &str = "5s";
pub const DEFAULT_LB_CHECK_PATH: &str = "/lb-check";
/// Kubernetes propagates ConfigMap and Secret updates within about a minute; checking small
/// files every 2 s costs nothing and keeps the delay on the proxy's side short.
pub const DEFAULT_WATCH_INTERVAL: &str = "2s";
/// Seconds, not the 30 s of DNS health checks: fall x interval bounds the failover time.
pub const DEFAULT_SITE_PROBE_INTERVAL: &str = "2s";
pub const DEFAULT_SITE_PROBE_TIMEOUT: &str = "1s";
pub const DEFAULT_SITE_PROBE_FALL: u32 = 3;
pub const DEFAULT_SITE_PROBE_RISE: u32 = 2;
pub const DEFAULT_FAILBACK_HOLD: &str = "5m";
/// Keycloak serves these on the public port in many deployments; they must stay internal.
pub const DEFAULT_DENY_PATHS: [&str; 2] = ["/metrics", "/health"];
pub const DEFAULT_DENY_STATUS: u16 = 404;
pub const DEFAULT_RESTRICT_STATUS: u16 = 403;
/// nginx's and HAProxy's order of magnitude; OIDC authorization URLs stay well below.
pub const DEFAULT_MAX_URI_LENGTH: usize = 8192;
/// Keycloak's cookies (KEYCLOAK_IDENTITY, AUTH_SESSION_ID, ...) can take several KiB together.
pub const DEFAULT_MAX_HEADER_SIZE: &str = "32KiB";
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Large enough for realm imports through the admin API.
pub const DEFAULT_MAX_BODY_SIZE: &str = "10MiB";
/// Kestrel's default minimum request body rate (bytes per second), after the grace period.
pub const DEFAULT_MIN_BODY_RATE: u64 = 240;
pub const DEFAULT_BODY_RATE_GRACE: &str = "5s";
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Generous: many users share one address behind corporate NAT.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1_000;
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// hyper's own default is 400 KB a stream, 50 MB for a connection's 128 streams when its client
/// reads slowly; nginx holds `proxy_buffers` (32-64 KiB) a stream, HAProxy one 16 KiB buffer.
pub const DEFAULT_H2_STREAM_BUFFER: &str = "64KiB";
/// Per DNS query; with `DEFAULT_DNS_ATTEMPTS` a lookup gives up after 4s.
pub const DEFAULT_DNS_TIMEOUT: &str = "2s";
pub const DEFAULT_DNS_ATTEMPTS: usize = 2;
/// Refresh floor: a TTL of 0 (Consul's default) must not turn into a query storm.
pub const DEFAULT_DNS_REFRESH_MIN: &str = "1s";
/// Refresh ceiling: a long TTL must not hide a scale-up for minutes.
pub const DEFAULT_DNS_REFRESH_MAX: &str = "30s";
/// Each refresh waits ±10%, so replicas do not query in lockstep.
pub const DEFAULT_DNS_JITTER: f64 = 0.1;
/// After NXDOMAIN or an empty answer, keep the last set this long before emptying the site:
/// a headless service briefly empty during a rollout must not take the site down.
pub const DEFAULT_DNS_EMPTY_HOLD: &str = "30s";

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawConfig {
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub balance: RawBalance,
    #[serde(default)]
    pub failover: RawFailover,
    #[serde(default)]
    pub reload: RawReload,
    /// Status → the page the proxy's own answers of that status carry (`error_pages.rs`).
    pub error_pages: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<RawListener>,
    #[serde(default, rename = "site")]
    pub sites: Vec<RawSite>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawAdmin {
    pub listen: Option<String>,
    /// Bearer token required by the site operations; or `token_file`.
    pub token: Option<String>,
    pub token_file: Option<String>,
    /// How long the metric series of a site or backend that is gone are kept (default 10m).
    pub metrics_retain: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawReload {
    /// Reload when the config file or a file it names (certificates, keys, CA bundles,
    /// secrets) changes, including through Kubernetes' `..data` symlink swap.
    pub watch: Option<bool>,
    pub watch_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawFailover {
    /// `manual` (default) or `auto`.
    pub failback: Option<String>,
    /// With `auto`: how long the preferred site must have been UP.
    pub failback_hold: Option<String>,
    /// The proxy's own /lb-check on public listeners; "" passes the path to the backends.
    pub lb_check_path: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawSiteProbe {
    pub path: Option<String>,
    pub url: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub min_up: Option<usize>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawLog {
    /// `human` or `json`.
    pub format: Option<String>,
    /// A tracing filter directive (`info`, `sessiongate=debug,hyper=warn`); `RUST_LOG` wins.
    pub level: Option<String>,
    /// One line per request at target `sessiongate::access`.
    pub access_log: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawTimeouts {
    pub tls_handshake: Option<String>,
    pub request_header: Option<String>,
    pub idle: Option<String>,
    pub upstream_connect: Option<String>,
    pub upstream_response: Option<String>,
    pub shutdown_drain: Option<String>,
    pub close_grace: Option<String>,
    pub tunnel: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawUpstream {
    pub pool_idle_timeout: Option<String>,
    pub pool_max_idle_per_backend: Option<usize>,
    pub drain_timeout: Option<String>,
    pub retries: Option<u32>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawDns {
    /// `ip` or `ip:port`; absent: the system's resolver configuration (resolv.conf, with its
    /// search domains and ndots, as Kubernetes writes it).
    pub nameservers: Option<Vec<String>>,
    pub timeout: Option<String>,
    pub attempts: Option<usize>,
    pub refresh_min: Option<String>,
    pub refresh_max: Option<String>,
    pub jitter: Option<f64>,
    pub empty_hold: Option<String>,
    /// `both`, `ipv4` or `ipv6`: which address records `dns` backends are looked up with.
    pub family: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawListener {
    pub name: Option<String>,
    pub listen: Option<String>,
    pub tls: Option<RawServerTls>,
    /// Answer every request with 308 to the same URL over https (plain listeners only).
    pub redirect_to_https: Option<bool>,
    /// The port written into redirects; 443 is left out of the URL.
    pub https_port: Option<u16>,
    /// Path prefixes never forwarded (whole segments, case-insensitive).
    pub deny_paths: Option<Vec<String>>,
    /// When set, only paths under these prefixes are forwarded.
    pub allow_paths: Option<Vec<String>>,
    /// Keycloak's `http-relative-path` (e.g. `/auth`): every rule applies under it too.
    pub relative_path: Option<String>,
    pub deny_status: Option<u16>,
    /// Peers (CIDR) whose forwarded headers are extended rather than replaced.
    pub trusted_proxies: Option<Vec<String>>,
    /// `chain` (extend a trusted peer's X-Forwarded-For and Forwarded) or `client` (name only
    /// the client the proxy resolved from them).
    pub forwarded_for: Option<String>,
    /// Strict-Transport-Security value added to responses on a TLS listener.
    pub hsts: Option<String>,
    /// A header carrying each request's ID to the backend and back (e.g. `X-Request-ID`).
    pub request_id_header: Option<String>,
    /// Expect a PROXY protocol (v1 or v2) header on every connection, from these networks only.
    pub proxy_protocol: Option<bool>,
    pub proxy_protocol_from: Option<Vec<String>>,
    /// Per-client request rate limits (`[[listener.rate_limit]]`).
    pub rate_limit: Option<Vec<RawRateLimit>>,
    /// Paths only some client networks may reach (`[[listener.restrict]]`).
    pub restrict: Option<Vec<RawRestrict>>,
    /// The protocols an HTTP/1.1 client may switch to (`Upgrade`); default `["websocket"]`.
    pub upgrades: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawRestrict {
    /// Path prefixes the rule covers (default: every path).
    pub paths: Option<Vec<String>>,
    /// Addresses or CIDR networks whose clients may reach them.
    pub allow_from: Option<Vec<String>>,
    /// The answer to everyone else (default 403).
    pub status: Option<u16>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawRateLimit {
    /// Path prefixes the rule covers (default: every path).
    pub paths: Option<Vec<String>>,
    /// Requests per client: `10/s`, `600/m`, `1000/h`.
    pub rate: Option<String>,
    /// Requests a client may send at once (default: the rate's count).
    pub burst: Option<u32>,
    /// Clients tracked at once; past it, new clients go unlimited (and are counted).
    pub max_clients: Option<usize>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawBalance {
    /// `round_robin`, `least_requests`, `random` or `hash`.
    pub algorithm: Option<String>,
    /// With `hash`: `source_ip`, `header:<name>` or `cookie:<name>`.
    pub hash_key: Option<String>,
    /// Replicas that must agree on where a key goes share this (and the backend set).
    pub hash_seed: Option<u64>,
    /// A backend back in service gets a share of new requests rising from 10% to 100% over
    /// this long (off when absent).
    pub slow_start: Option<String>,
    /// Present: requests keep to the backend holding their session.
    pub sticky: Option<RawSticky>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawSticky {
    /// `cookie`, `route` or `source_ip`.
    pub mode: Option<String>,
    /// cookie: the name of the proxy's cookie.
    pub cookie: Option<String>,
    /// cookie: the key of the cookie's HMAC; replicas share it. Or `secret_file`.
    pub secret: Option<String>,
    pub secret_file: Option<String>,
    /// route: the backend's session cookie, whose value ends in `.<route>`.
    pub route_cookie: Option<String>,
    /// route: route → backend id, where the route is not the first label of the backend's name.
    pub routes: Option<std::collections::BTreeMap<String, String>>,
    /// route: learn routes from the backends' Set-Cookie headers.
    pub learn_routes: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawHealth {
    pub path: Option<String>,
    pub port: Option<u16>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    /// `200` or a range like `200-399`.
    pub expect_status: Option<String>,
    pub expect_json_up: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawOutlier {
    pub consecutive_failures: Option<u32>,
    pub base_ejection: Option<String>,
    pub max_ejection: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawLimits {
    pub max_uri_length: Option<usize>,
    pub max_header_size: Option<String>,
    pub max_headers: Option<usize>,
    pub max_body_size: Option<String>,
    /// Bytes per second a request body must keep up after the grace period, or 408.
    pub min_body_rate: Option<u64>,
    pub body_rate_grace: Option<String>,
    /// Open client connections per listener; past it, accepting pauses.
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub h2_max_concurrent_streams: Option<u32>,
    /// Response bytes an HTTP/2 stream may hold for a client that has not taken them yet.
    pub h2_stream_buffer: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawServerTls {
    /// The default certificate (PEM chain), served when no SNI name matches.
    pub cert: Option<String>,
    pub key: Option<String>,
    /// More certificates, chosen by SNI from the names in each certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<RawCertPair>,
    /// Ask clients for certificates issued by this CA bundle (Keycloak's X.509 login).
    pub client_ca: Option<String>,
    /// `optional` (the default: a client may send none) or `required`.
    pub client_auth: Option<String>,
    /// The header that carries a verified client certificate to the backend.
    pub client_cert_header: Option<String>,
    /// `nginx` (percent-encoded PEM, the default) or `rfc9440` (`Client-Cert: :<base64 DER>:`).
    pub client_cert_format: Option<String>,
    /// Session ticket keys shared by replicas (80 bytes each, the first seals); absent: a
    /// random key of the process's own.
    pub ticket_keys: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawCertPair {
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawSite {
    pub name: Option<String>,
    pub backends: Option<RawBackends>,
    /// TLS to the backends (re-encryption); absent means plain HTTP.
    pub tls: Option<RawUpstreamTls>,
    /// Active health checks; absent: none (passive ejection still applies).
    pub health: Option<RawHealth>,
    pub outlier: Option<RawOutlier>,
    /// Per-backend in-flight caps and a bounded wait queue; absent: no cap.
    pub shedding: Option<RawShedding>,
    /// Site-level UP/DOWN probing for failover (Keycloak multi-site `/lb-check`).
    pub lb_check: Option<RawSiteProbe>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawShedding {
    /// Requests in flight per backend (Keycloak: its `http-pool-max-threads`).
    pub max_in_flight_per_backend: Option<usize>,
    /// Requests waiting for a slot, per site (Keycloak: `http-max-queued-requests`).
    pub queue: Option<usize>,
    pub queue_timeout: Option<String>,
    /// `wait` (for the session's own backend) or `redispatch` (to one with a free slot).
    pub sticky_when_full: Option<String>,
}

/// Exactly one of `static`, `dns` (with `port`) or `srv`.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawBackends {
    #[serde(rename = "static")]
    pub static_list: Option<Vec<String>>,
    /// A name whose A/AAAA records are the backends (a Kubernetes headless service).
    pub dns: Option<String>,
    pub port: Option<u16>,
    /// An SRV name: targets, ports, priorities and weights come from the records.
    pub srv: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawUpstreamTls {
    /// PEM bundle of CAs trusted for backend certificates; the system's roots when absent.
    pub ca: Option<String>,
    /// Name checked against the backend certificate and sent as SNI; the backend's host when
    /// absent.
    pub server_name: Option<String>,
}
