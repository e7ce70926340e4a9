//! `sessiongate demo`: a small cluster of session-keeping nodes on loopback, a DNS server that
//! publishes them the way Kubernetes publishes a StatefulSet behind a headless service (SRV
//! records naming each pod), and the proxy in front, discovering them, on an embedded default
//! config with a fresh self-signed certificate. The config and certificate are written to a
//! temporary directory and loaded through the same path as any operator's file, so the demo
//! shows (and exercises) the real thing. `add` and `remove` on stdin scale the first site,
//! `kill` crashes one of its pods; `fail` and `recover` flip its `/lb-check`, so failover to
//! the second site can be watched and driven through the admin API.

pub mod dns;
pub mod node;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use node::DemoNode;

use dns::{DnsServer, SrvTarget};

use crate::config::{Config, ConfigError};
use crate::{Server, StartError};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub nodes: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            https: SocketAddr::from(([127, 0, 0, 1], 8443)),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            nodes: 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start demo node: {0}")]
    Node(std::io::Error),
    #[error("cannot write the demo files to {0}: {1}")]
    Files(PathBuf, std::io::Error),
    #[error("cannot generate the demo certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
}

impl DemoError {
    /// What to try, for the errors whose cause is the machine's, not the demo's. The demo used
    /// to suggest other ports for every failure, a read-only `/tmp` included.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            DemoError::Start(StartError::Bind { .. }) => {
                Some("ports in use? choose others with --https, --http, --admin")
            }
            DemoError::Files(..) => Some(
                "the demo writes its config and certificate under $TMPDIR, else /tmp: make it \
                 writable (in a read-only container, mount a tmpfs at /tmp)",
            ),
            _ => None,
        }
    }
}

pub struct Demo {
    pub server: Server,
    /// The first site's nodes (`add` and `remove` scale it).
    pub nodes: Vec<DemoNode>,
    /// The second site's nodes.
    pub dc2: Vec<DemoNode>,
    pub dns: DnsServer,
    /// Its certificate, key and config, removed when the demo is dropped.
    pub dir: DemoDir,
    pub options: DemoOptions,
}

/// The demo's files: a directory of its own (`sessiongate-demo-<pid>`, and `-<n>` after it
/// for a second demo in one process, as tests start), removed on drop.
pub struct DemoDir(PathBuf);

impl DemoDir {
    fn create() -> Result<DemoDir, DemoError> {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let mut name = format!("sessiongate-demo-{}", std::process::id());
        match STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
            0 => {}
            n => name.push_str(&format!("-{n}")),
        }
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).map_err(|e| DemoError::Files(dir.clone(), e))?;
        Ok(DemoDir(dir))
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The headless service the demo's DNS server publishes for the first site.
pub const SERVICE: &str = "keycloak-headless.demo.svc.cluster.local";
/// The second site's service: a Keycloak cluster in another data centre.
pub const SERVICE_DC2: &str = "keycloak-headless.dc2.svc.cluster.local";
/// Nodes in the second site.
const DC2_NODES: usize = 2;
/// CoreDNS's default TTL for Kubernetes records.
const TTL: u32 = 5;

/// The embedded default config; `{…}` placeholders are filled in by [`start`].
pub const DEMO_CONFIG: &str = r#"# sessiongate demo: written by `sessiongate demo`, loaded like any config file.
[admin]
listen = "{admin}"

[log]
format = "human"
level = "info"
access_log = true

[[listener]]
name = "https"
listen = "{https}"
tls = { cert = "tls.crt", key = "tls.key" }

# Each client address may ask the token endpoint 10 times at once, then 5 times a second;
# past that: 429 with Retry-After, and no node sees the request.
[[listener.rate_limit]]
paths = ["/realms/demo/protocol/openid-connect/token"]
rate = "5/s"
burst = 10

# Keycloak's admin console, for the operators' network only (here 127.0.0.2); everyone
# else gets 403, and no node sees the request.
[[listener.restrict]]
paths = ["/admin/"]
allow_from = ["127.0.0.2"]

[[listener]]
name = "http"
listen = "{http}"
redirect_to_https = true
https_port = {https_port}

[balance]
algorithm = "least_requests"

# Keep each session on the node holding it: the nodes append their name to their session
# cookie, AUTH_SESSION_ID=<id>.<node>, as Keycloak does; the SRV targets (keycloak-N.<service>)
# give the route of each node. Delete this table to see sessions get lost.
[balance.sticky]
mode = "route"
route_cookie = "AUTH_SESSION_ID"

# Two sites, active/passive like Keycloak multi-site: dc1 serves while its /lb-check says UP;
# after 2 DOWN probes traffic moves to dc2, and comes back only when an operator says so
# (POST /sites/failback on the admin listener).
[failover]
failback = "manual"

[[site]]
name = "dc1"
# Discovered like a StatefulSet behind a headless service: one SRV record per pod.
backends = { srv = "_http._tcp.{service}" }

[site.health]
path = "/health/ready"       # Keycloak serves it on its management port (add port = 9000)
interval = "2s"
expect_json_up = true

[site.lb_check]
path = "/lb-check"
interval = "1s"
fall = 2
rise = 2

[[site]]
name = "dc2"
backends = { srv = "_http._tcp.{service_dc2}" }

[site.health]
path = "/health/ready"
interval = "2s"
expect_json_up = true

[site.lb_check]
path = "/lb-check"
interval = "1s"
fall = 2
rise = 2

[dns]
nameservers = ["{dns}"]    # the demo's own DNS server; leave out to use /etc/resolv.conf
"#;

pub async fn start(options: DemoOptions) -> Result<Demo, DemoError> {
    let dns = DnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(DemoError::Node)?;
    let mut nodes = Vec::new();
    for i in 0..options.nodes.max(1) {
        nodes.push(start_node("keycloak", i).await?);
    }
    publish(&dns, SERVICE, &nodes);
    let mut dc2 = Vec::new();
    for i in 0..DC2_NODES {
        dc2.push(start_node("dc2-keycloak", i).await?);
    }
    publish(&dns, SERVICE_DC2, &dc2);

    // Dropped with the demo, or here when it cannot start (a port in use).
    let dir = DemoDir::create()?;
    let server = serve_from(&dir.0, &options, dns.addr).await?;
    Ok(Demo {
        server,
        nodes,
        dc2,
        dns,
        dir,
        options,
    })
}

/// Writes the demo's certificate and config into `dir`, and starts the proxy on them.
async fn serve_from(
    dir: &Path,
    options: &DemoOptions,
    dns: SocketAddr,
) -> Result<Server, DemoError> {
    let write = |name: &str, contents: &str| {
        std::fs::write(dir.join(name), contents).map_err(|e| DemoError::Files(dir.to_owned(), e))
    };
    let key = rcgen::KeyPair::generate()?;
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?
            .self_signed(&key)?;
    write("tls.crt", &cert.pem())?;
    write("tls.key", &key.serialize_pem())?;
    let text = DEMO_CONFIG
        .replace("{admin}", &options.admin.to_string())
        .replace("{https}", &options.https.to_string())
        .replace("{http}", &options.http.to_string())
        .replace("{https_port}", &options.https.port().to_string())
        .replace("{service_dc2}", SERVICE_DC2)
        .replace("{service}", SERVICE)
        .replace("{dns}", &dns.to_string());
    write("demo.toml", &text)?;
    let config = Config::load(&dir.join("demo.toml"))?;
    Ok(Server::start(config).await?)
}

/// Pods are named like a StatefulSet's: keycloak-0, keycloak-1, ...
async fn start_node(set: &str, ordinal: usize) -> Result<DemoNode, DemoError> {
    DemoNode::start(
        &format!("{set}-{ordinal}"),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .map_err(DemoError::Node)
}

fn pod_name(node: &DemoNode, service: &str) -> String {
    format!("{}.{service}", node.name)
}

/// Publishes the nodes as Kubernetes does: SRV records per pod, A records per pod name, and A
/// records for the service name itself.
fn publish(dns: &DnsServer, service: &str, nodes: &[DemoNode]) {
    for node in nodes {
        dns.set_ips(&pod_name(node, service), &[node.addr.ip()], TTL);
    }
    let targets: Vec<SrvTarget> = nodes
        .iter()
        .map(|n| SrvTarget {
            priority: 0,
            weight: 100 / nodes.len().max(1) as u16,
            port: n.addr.port(),
            target: pod_name(n, service),
        })
        .collect();
    dns.set_srv(&format!("_http._tcp.{service}"), &targets, TTL);
    let ips: Vec<_> = nodes.iter().map(|n| n.addr.ip()).collect();
    dns.set_ips(service, &ips, TTL);
}

impl Demo {
    /// Starts the next pod and publishes it in DNS, as a StatefulSet scaling up does.
    pub async fn add_node(&mut self) -> Result<&DemoNode, DemoError> {
        let node = start_node("keycloak", self.nodes.len()).await?;
        self.nodes.push(node);
        publish(&self.dns, SERVICE, &self.nodes);
        Ok(self.nodes.last().expect("just pushed"))
    }

    /// Takes the newest pod out of DNS (it keeps serving while it drains, as a pod in its
    /// shutdown delay does); never the last one.
    pub fn remove_node(&mut self) -> Option<DemoNode> {
        if self.nodes.len() < 2 {
            return None;
        }
        let node = self.nodes.pop()?;
        self.dns.remove(&pod_name(&node, SERVICE));
        publish(&self.dns, SERVICE, &self.nodes);
        Some(node)
    }

    /// Stops the newest running pod outright, as a crash or an OOM kill does: it refuses
    /// connections but stays in DNS, where Kubernetes leaves it until it notices. Never the
    /// last running one.
    pub fn kill_node(&mut self) -> Option<&DemoNode> {
        let mut running = self.nodes.iter().filter(|n| !n.is_stopped());
        let newest = running.next_back()?;
        running.next()?; // another one keeps running
        newest.stop();
        Some(newest)
    }

    /// What every node of the first site answers on `/lb-check`: UP or DOWN (a broken site).
    pub fn set_site_up(&self, up: bool) {
        for node in &self.nodes {
            node.set_lb_check(up);
        }
    }

    /// The demo's self-signed certificate (PEM), for clients that want to trust it.
    pub fn certificate(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    /// Acts on one line typed into the demo's terminal and says what it did: `add` starts a
    /// pod and publishes it, `remove` takes the newest pod out of DNS (it keeps serving while
    /// it drains, as a pod in its shutdown delay does), `kill` crashes the newest running pod,
    /// `fail` and `recover` flip the first site's `/lb-check`. Nothing for an empty line.
    pub async fn command(&mut self, line: &str) -> Option<String> {
        Some(match line.trim() {
            "add" => match self.add_node().await {
                Ok(node) => format!(
                    "started {} at {}; published it in DNS",
                    node.name, node.addr
                ),
                Err(e) => e.to_string(),
            },
            "remove" => match self.remove_node() {
                Some(node) => format!(
                    "{} left DNS; it drains (its sessions and requests in flight finish there)",
                    node.name
                ),
                None => "keeping the last node".to_string(),
            },
            "kill" => match self.kill_node() {
                Some(node) => format!(
                    "{} crashed (still in DNS): its sessions move once, each to the node every \
                     replica of the proxy would pick, and stay there",
                    node.name
                ),
                None => "keeping the last running node".to_string(),
            },
            "fail" => {
                self.set_site_up(false);
                "dc1's nodes now answer /lb-check with 503 DOWN: watch traffic move to dc2".into()
            }
            "recover" => {
                self.set_site_up(true);
                "dc1 answers UP again; traffic stays on dc2 until you fail back (see the banner)"
                    .into()
            }
            "" => return None,
            other => format!("unknown command `{other}`: type add, remove, kill, fail or recover"),
        })
    }

    /// What to tell the person who started the demo.
    pub fn banner(&self) -> String {
        let https = self
            .server
            .listener_addr("https")
            .unwrap_or(self.options.https);
        let http = self
            .server
            .listener_addr("http")
            .unwrap_or(self.options.http);
        let admin = reachable(self.server.admin_addr());
        let list = |nodes: &[DemoNode]| {
            nodes
                .iter()
                .map(|n| format!("{} at {}", n.name, n.addr))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "\nsessiongate demo is running\n\
             \x20 site dc1: {nodes}  (active)\n\
             \x20 site dc2: {dc2}  (standby)\n\
             \x20 dns:      {dns}  (the pods as a headless service: dig @{dns_ip} -p {dns_port} _http._tcp.{SERVICE} SRV)\n\
             \x20 proxy:    https://localhost:{https_port}/  (self-signed certificate)\n\
             \x20 redirect: http://localhost:{http_port}/  -> 308 to https\n\
             \x20 admin:    http://{admin}/metrics  /live  /ready  /sites  /config\n\
             \x20 config:   {config}\n\
             \x20           (edit and save it: the proxy reloads, and open connections stay open)\n\n\
             Try (a session cookie jar, three requests):\n\
             \x20 for i in 1 2 3; do curl -sk -c /tmp/sg.jar -b /tmp/sg.jar https://localhost:{https_port}/; done\n\
             Each node keeps its sessions in memory, like a Keycloak pod, and names itself in the\n\
             session cookie. Route stickiness keeps every request of the session on that node:\n\
             \"welcome back ... request 2, 3\". Type `add` and repeat: the session stays put while\n\
             new sessions (drop the jar) reach the new node. Delete [balance.sticky] from the\n\
             config below to see \"SESSION LOST\", the problem this proxy exists to solve.\n\
             \x20 curl -sk --http2 https://localhost:{https_port}/echo   (headers as the node sees them)\n\n\
             Type `add` or `remove` and Enter to scale dc1, and watch the proxy follow DNS.\n\
             Type `kill` to crash a pod: its sessions move once, to the node every replica\n\
             of the proxy would pick (\"unknown here\", as Keycloak without shared caches),\n\
             then stay.\n\n\
             Multi-site: type `fail` and dc1's /lb-check answers DOWN; two probes later traffic\n\
             moves to dc2 (sessions re-pinned there). Type `recover`: dc1 is UP again, but traffic\n\
             stays on dc2 until an operator fails back:\n\
             \x20 curl -s http://{admin}/sites                       (state, probes, active site)\n\
             \x20 curl -s -X POST 'http://{admin}/sites/failback?who=me&why=resynced'\n\
             \x20 curl -s -X POST http://{admin}/sites/dc2/switchover  (planned switch)\n\
             \x20 curl -s -X POST http://{admin}/sites/dc1/down        (hold a site down; /release)\n\
             \x20 curl -sk https://localhost:{https_port}/lb-check     (the proxy's own, for a global balancer)\n\n\
             Drain a node by hand (no new sessions; its own stay) with an id from /sites:\n\
             \x20 curl -s -X POST 'http://{admin}/sites/dc1/backends/<id>/drain'   (and /release)\n\n\
             Rate limit on the token endpoint (10 at once, then 5/s per client): ten 200s, then 429s:\n\
             \x20 for i in $(seq 14); do curl -sk -o /dev/null -w '%{{http_code}} ' -X POST https://localhost:{https_port}/realms/demo/protocol/openid-connect/token; done\n\n\
             The admin console answers the operators' network only (127.0.0.2 here): 403, then 200:\n\
             \x20 curl -sk -o /dev/null -w '%{{http_code}}\\n' https://localhost:{https_port}/admin/\n\
             \x20 curl -sk -o /dev/null -w '%{{http_code}}\\n' --interface 127.0.0.2 https://localhost:{https_port}/admin/\n\n\
             Ctrl-C drains and stops.\n",
            dns = self.dns.addr,
            dns_ip = self.dns.addr.ip(),
            dns_port = self.dns.addr.port(),
            nodes = list(&self.nodes),
            dc2 = list(&self.dc2),
            https_port = https.port(),
            http_port = http.port(),
            config = self.dir.join("demo.toml").display(),
        )
    }
}

/// An address to type into a client: a listener bound to every address (`0.0.0.0`, `::`, as
/// in a container) is reached on loopback.
fn reachable(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            (std::net::Ipv4Addr::LOCALHOST, addr.port()).into()
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            (std::net::Ipv6Addr::LOCALHOST, addr.port()).into()
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::{reachable, start, DemoOptions};
    use std::net::SocketAddr;

    /// Tests run several demos in one process: each gets files of its own (two once shared
    /// one directory, and a demo could load the other's config and its DNS server), and
    /// takes them with it when dropped.
    #[tokio::test]
    async fn demos_in_one_process_keep_their_files_apart_and_remove_them() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let options = DemoOptions {
            https: any,
            http: any,
            admin: any,
            nodes: 1,
        };
        let a = start(options.clone()).await.unwrap();
        let b = start(options).await.unwrap();
        let (config_a, config_b) = (a.dir.join("demo.toml"), b.dir.join("demo.toml"));
        assert_ne!(config_a, config_b);
        let dns = |config: &std::path::Path| std::fs::read_to_string(config).unwrap();
        assert!(dns(&config_a).contains(&a.dns.addr.to_string()));
        assert!(dns(&config_b).contains(&b.dns.addr.to_string()));
        drop(a);
        assert!(!config_a.exists());
        assert!(config_b.exists());
        drop(b);
        assert!(!config_b.exists());
    }

    #[test]
    fn an_address_bound_to_all_is_shown_on_loopback() {
        let shown = |a: &str| reachable(a.parse().unwrap()).to_string();
        assert_eq!(shown("0.0.0.0:9901"), "127.0.0.1:9901");
        assert_eq!(shown("[::]:9901"), "[::1]:9901");
        assert_eq!(shown("10.1.2.3:9901"), "10.1.2.3:9901");
        assert_eq!(shown("127.0.0.1:9901"), "127.0.0.1:9901");
    }
}
