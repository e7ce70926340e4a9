//! `sessiongate demo`: a small cluster of session-keeping nodes on loopback and the proxy in
//! front of them, on an embedded default config with a fresh self-signed certificate. The
//! config and certificate are written to a temporary directory and loaded through the same
//! path as any operator's file, so the demo shows (and exercises) the real thing.

pub mod dns;
pub mod node;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use node::DemoNode;

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

pub struct Demo {
    pub server: Server,
    pub nodes: Vec<DemoNode>,
    pub dir: PathBuf,
    pub options: DemoOptions,
}

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

[[listener]]
name = "http"
listen = "{http}"
redirect_to_https = true
https_port = {https_port}

[[site]]
name = "demo"
backends = { static = [{nodes}] }
"#;

pub async fn start(options: DemoOptions) -> Result<Demo, DemoError> {
    let mut nodes = Vec::new();
    for i in 1..=options.nodes.max(1) {
        let node = DemoNode::start(&format!("node-{i}"), SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(DemoError::Node)?;
        nodes.push(node);
    }

    let dir = std::env::temp_dir().join(format!("sessiongate-demo-{}", std::process::id()));
    let write = |name: &str, contents: &str| {
        std::fs::write(dir.join(name), contents).map_err(|e| DemoError::Files(dir.clone(), e))
    };
    std::fs::create_dir_all(&dir).map_err(|e| DemoError::Files(dir.clone(), e))?;
    let key = rcgen::KeyPair::generate()?;
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?
            .self_signed(&key)?;
    write("tls.crt", &cert.pem())?;
    write("tls.key", &key.serialize_pem())?;
    let node_list = nodes
        .iter()
        .map(|n| format!("\"{}\"", n.addr))
        .collect::<Vec<_>>()
        .join(", ");
    let text = DEMO_CONFIG
        .replace("{admin}", &options.admin.to_string())
        .replace("{https}", &options.https.to_string())
        .replace("{http}", &options.http.to_string())
        .replace("{https_port}", &options.https.port().to_string())
        .replace("{nodes}", &node_list);
    write("demo.toml", &text)?;

    let config = Config::load(&dir.join("demo.toml"))?;
    let server = Server::start(config).await?;
    Ok(Demo {
        server,
        nodes,
        dir,
        options,
    })
}

impl Demo {
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
        let admin = self.server.admin_addr();
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{} at {}", n.name, n.addr))
            .collect();
        format!(
            "\nsessiongate demo is running\n\
             \x20 cluster:  {nodes}\n\
             \x20 proxy:    https://localhost:{https_port}/  (self-signed certificate)\n\
             \x20 redirect: http://localhost:{http_port}/  -> 308 to https\n\
             \x20 admin:    http://{admin}/metrics  /live  /ready\n\
             \x20 config:   {config}\n\n\
             Try (a session cookie jar, three requests):\n\
             \x20 for i in 1 2 3; do curl -sk -c /tmp/sg.jar -b /tmp/sg.jar https://localhost:{https_port}/; done\n\
             Each node keeps its sessions in memory, like a Keycloak pod. Balancing is round robin, so\n\
             the second request lands on another node, which does not know the session: the\n\
             \"SESSION LOST\" you see is the problem session-aware balancing exists to solve.\n\
             \x20 curl -sk --http2 https://localhost:{https_port}/echo   (headers as the node sees them)\n\n\
             Ctrl-C drains and stops.\n",
            nodes = nodes.join(", "),
            https_port = https.port(),
            http_port = http.port(),
            config = self.dir.join("demo.toml").display(),
        )
    }
}
