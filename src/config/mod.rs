//! Configuration: the TOML file → raw serde structs (`raw.rs`) → validated, typed [`Config`]
//! (`validate.rs`). Every problem is reported at once, each naming the file and the key, so an
//! operator fixes a file in one pass. Certificates are loaded during validation: a config whose
//! files are missing or unreadable is an invalid config, not a runtime surprise.

mod balancing;
mod effective;
mod error_pages;
mod failover;
mod rate_limit;
pub mod raw;
mod restrict;
mod server_tls;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::paths::PathPolicy;
use crate::tls::{CertificateSet, UpstreamTls};

/// A validated configuration, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from, for messages.
    pub source: String,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub timeouts: Timeouts,
    pub upstream: UpstreamPool,
    pub dns: DnsConfig,
    pub limits: Limits,
    pub balance: Balance,
    pub failover: FailoverConfig,
    pub reload: ReloadConfig,
    /// The operator's pages for the proxy's own error answers.
    pub error_pages: crate::error_pages::ErrorPages,
    pub listeners: Vec<ListenerConfig>,
    pub sites: Vec<SiteConfig>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// When set, the site operations (`/sites`) require `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Where the token was read from (watched for reloads).
    pub token_file: Option<PathBuf>,
    /// How long the series of a site or backend that is gone stay in `/metrics`.
    pub metrics_retain: Duration,
}

/// Reloading on file changes (SIGHUP reloads whatever this says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadConfig {
    /// How often the config file and the files it names are checked; `None`: not watched.
    pub watch_interval: Option<Duration>,
}

/// How the active site is chosen among several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConfig {
    /// `None`: manual failback (an operator says when); `Some(hold)`: automatic, once the
    /// preferred site has been UP for `hold`.
    pub auto_failback: Option<Duration>,
    /// The proxy's own `/lb-check` on public listeners; `None` passes the path through.
    pub lb_check_path: Option<String>,
}

/// How a site is judged UP or DOWN (Keycloak multi-site: `GET /lb-check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteProbe {
    pub path: String,
    /// Probe this URL (the site's own ingress) instead of each backend.
    pub url: Option<http::Uri>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// With per-backend probes: how many backends must answer UP.
    pub min_up: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    pub access_log: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tls_handshake: Duration,
    pub request_header: Duration,
    pub idle: Duration,
    pub upstream_connect: Duration,
    pub upstream_response: Duration,
    pub shutdown_drain: Duration,
    /// How long an idle connection asked to close (reload, shutdown) waits for one more
    /// request, answered with `Connection: close`, before it closes.
    pub close_grace: Duration,
    /// An upgraded connection (WebSocket) with no bytes either way for this long is closed.
    pub tunnel: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct UpstreamPool {
    pub idle_timeout: Duration,
    pub max_idle_per_backend: usize,
    pub drain_timeout: Duration,
    /// Further backends a failed request may be tried on (see `proxy.rs` for which failures).
    pub retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    Both,
    V4,
    V6,
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// `None`: the system resolver configuration.
    pub nameservers: Option<Vec<SocketAddr>>,
    pub timeout: Duration,
    pub attempts: usize,
    pub refresh_min: Duration,
    pub refresh_max: Duration,
    pub jitter: f64,
    pub empty_hold: Duration,
    pub family: IpFamily,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub tls: Option<CertificateSet>,
    pub redirect: Option<HttpsRedirect>,
    pub paths: PathPolicy,
    /// The rules as configured (the policy also holds their copies under the relative path).
    pub deny_paths: Vec<String>,
    pub allow_paths: Option<Vec<String>>,
    pub relative_path: Option<String>,
    pub deny_status: http::StatusCode,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// What X-Forwarded-For and Forwarded say behind a trusted proxy.
    pub forwarded_for: ForwardedMode,
    pub hsts: Option<http::HeaderValue>,
    /// The header that carries each request's ID (`request_id.rs`); none when unset.
    pub request_id: Option<http::HeaderName>,
    /// PROXY protocol: `Some(networks allowed to send it)`; connections from elsewhere are
    /// refused on such a listener.
    pub proxy_protocol: Option<Vec<ipnet::IpNet>>,
    /// The header a verified client certificate goes to the backend in, and how it is
    /// written (`tls.client_ca` set).
    pub client_cert_header: Option<(http::HeaderName, crate::tls::ClientCertFormat)>,
    /// Per-client request rate limits; the first rule covering a path applies.
    pub rate_limits: Vec<crate::rate_limit::RateLimitConfig>,
    /// Paths only some client networks may reach; every rule covering a path must admit
    /// the client.
    pub restrictions: Vec<crate::restrict::Restriction>,
    /// The protocols a client may switch to with `Upgrade`, lowercase; a request naming any
    /// other is forwarded without its `Upgrade` (`headers::allowed_upgrade`).
    pub upgrades: Vec<String>,
}

/// What the backend is told of the client behind a trusted proxy (`forwarded_for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedMode {
    /// The trusted peer's X-Forwarded-For and Forwarded, extended with the peer: the whole
    /// chain, as nginx's `$proxy_add_x_forwarded_for` and HAProxy's `option forwardfor`.
    Chain,
    /// Only the client the proxy resolved from the chain (`headers::client_address`), for
    /// backends that read the first address of the list, which the client itself may have
    /// written when a balancer appends to what it sent.
    Client,
}

impl ForwardedMode {
    pub fn name(self) -> &'static str {
        match self {
            ForwardedMode::Chain => "chain",
            ForwardedMode::Client => "client",
        }
    }
}

/// How a backend is chosen for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    /// Power of two choices on requests in flight.
    LeastRequests,
    Random,
    /// Rendezvous hashing on a key; requests without the key fall back to round robin.
    Hash(HashKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    SourceIp,
    Header(http::HeaderName),
    Cookie(String),
}

#[derive(Debug, Clone)]
pub struct Balance {
    /// How a backend is chosen for a request that is not (yet) sticky to one.
    pub algorithm: Algorithm,
    pub seed: u64,
    /// How long a backend back in service takes to get its full share (`Health::warmth`);
    /// `None`: at once.
    pub slow_start: Option<Duration>,
    /// Keeps a session on its backend; `None` (the default) balances every request afresh.
    pub sticky: Option<StickyMode>,
}

/// How a request names the backend holding its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyMode {
    /// The proxy's own cookie, `<nonce>.<tag>`, the tag an HMAC of the backend's identity.
    Cookie {
        name: String,
        secret: Vec<u8>,
        /// Where the secret was read from, if a file (shown by check-config instead of it).
        secret_file: Option<PathBuf>,
    },
    /// The route the backend appends to its own session cookie (`AUTH_SESSION_ID=<id>.<route>`).
    Route {
        cookie: String,
        /// Route → backend id, for backends whose route is not the first label of their name.
        routes: std::collections::BTreeMap<String, String>,
        /// Learn routes from the backends' Set-Cookie headers.
        learn: bool,
    },
    /// Rendezvous hash of the client address.
    SourceIp,
}

/// Active health checks of one site's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    /// Probe this port instead of the traffic port (Keycloak's management port 9000).
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that bring a down backend up, failures that take an up one down.
    pub rise: u32,
    pub fall: u32,
    /// Inclusive range of statuses that pass.
    pub expect_status: (u16, u16),
    /// The body must be JSON whose `status` is `UP` (Keycloak's /health/ready).
    pub expect_json_up: bool,
}

/// Passive health: a backend failing this many requests in a row is ejected for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// 0 turns passive ejection off.
    pub consecutive_failures: u32,
    /// The first ejection's length; each ejection in a row doubles it, up to `max_ejection`.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_uri_length: usize,
    pub max_header_size: usize,
    pub max_headers: usize,
    pub max_body_size: u64,
    pub min_body_rate: u64,
    pub body_rate_grace: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub h2_max_concurrent_streams: u32,
    /// Response bytes an HTTP/2 stream holds, at most, for a client that has not taken them.
    pub h2_stream_buffer: usize,
}

/// A plain listener that answers 308 to the https URL of every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpsRedirect {
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct SiteConfig {
    pub name: String,
    pub backends: BackendSource,
    pub tls: Option<UpstreamTls>,
    pub health: Option<HealthCheck>,
    pub outlier: Outlier,
    /// Per-backend in-flight caps and the site's wait queue; `None`: no cap.
    pub shedding: Option<Shedding>,
    /// Site-level UP/DOWN probing for failover; `None`: the site is never judged DOWN.
    pub probe: Option<SiteProbe>,
}

/// Admission control for one site: at most `max_in_flight` requests per backend, `queue` more
/// waiting (FIFO) for at most `queue_timeout`, the rest answered 503 at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shedding {
    pub max_in_flight: usize,
    pub queue: usize,
    pub queue_timeout: Duration,
    /// A sticky request whose backend is full waits for it (`true`) or goes elsewhere.
    pub sticky_waits: bool,
}

#[derive(Debug, Clone)]
pub enum BackendSource {
    /// `host:port` entries, used as written (a host name is resolved when connecting).
    Static(Vec<String>),
    /// The A/AAAA records of `name` (a headless service), all on `port`.
    Dns { name: String, port: u16 },
    /// The SRV records of `name`.
    Srv { name: String },
}

impl BackendSource {
    /// The DNS name that is looked up, for DNS-based sources.
    pub fn dns_name(&self) -> Option<&str> {
        match self {
            BackendSource::Static(_) => None,
            BackendSource::Dns { name, .. } | BackendSource::Srv { name } => Some(name),
        }
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The dotted key path, e.g. `listener[0].tls.cert`; empty for file-level problems.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in one config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub source_name: String,
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.issues.len();
        write!(
            f,
            "invalid config {}: {n} problem{}",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for issue in &self.issues {
            write!(f, "\n  {}: {issue}", self.source_name)?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a config file. Relative paths inside it (certificates, CA bundles)
    /// are taken relative to the file's directory, so a config works from any working directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source_name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: source_name.clone(),
            issues: vec![ConfigIssue {
                key: String::new(),
                message: format!("cannot read file: {e}"),
            }],
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::from_toml(&text, &source_name, &base)
    }

    /// Validates config text; `base` is the directory relative paths are resolved against.
    pub fn from_toml(text: &str, source_name: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw = parse(text).map_err(|issues| ConfigError {
            source_name: source_name.to_string(),
            issues,
        })?;
        validate::validate(raw, source_name, base).map_err(|issues| ConfigError {
            source_name: source_name.to_string(),
            issues,
        })
    }

    /// The effective configuration as TOML, every default written out.
    pub fn to_effective_toml(&self) -> String {
        effective::render(self)
    }
}

/// TOML → raw structs. Type errors stop serde at the first one; unknown keys are all collected.
fn parse(text: &str) -> Result<raw::RawConfig, Vec<ConfigIssue>> {
    let mut unknown = Vec::new();
    let de = toml::Deserializer::new(text);
    let parsed: Result<raw::RawConfig, _> =
        serde_ignored::deserialize(de, |path| unknown.push(key_of(&path)));
    match parsed {
        Err(e) => Err(vec![ConfigIssue {
            key: String::new(),
            message: e.to_string().trim_end().replace('\n', "\n    "),
        }]),
        Ok(_) if !unknown.is_empty() => Err(unknown
            .into_iter()
            .map(|key| ConfigIssue {
                key,
                message: "unknown key".into(),
            })
            .collect()),
        Ok(raw) => Ok(raw),
    }
}

/// `listener[0].tls.cert` rather than serde_ignored's `listener.0.?.cert`.
fn key_of(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", key_of(parent)),
        P::Map { parent, key } => {
            let parent = key_of(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            key_of(parent)
        }
    }
}

/// Resolves a path from the config file relative to the file's directory.
pub(crate) fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests;
