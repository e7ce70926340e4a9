//! Shared pieces of the integration tests: a test PKI, a proxy started from real TOML on port 0,
//! real HTTP/1.1 and HTTP/2 clients over real TLS, and a raw TCP client for what well-behaved
//! clients never send.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use sessiongate::demo::DemoNode;
use sessiongate::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ClientBody = BoxBody<Bytes, BoxError>;

/// Generous bound on anything a test waits for, so a bug fails the test instead of hanging it.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A fresh directory for one test's files, removed when the value is dropped (a test run
/// leaves nothing behind in the temporary directory; thousands of runs would add up).
pub fn temp_dir(tag: &str) -> TempDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sessiongate-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A test's directory (`temp_dir`), removed with everything in it when dropped.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = PathBuf;

    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A client's certificate and key, for listeners that ask for one.
pub struct ClientIdentity {
    pub cert: CertificateDer<'static>,
    /// The intermediates the client sends after its certificate, issuer first.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

/// A test CA and leaf certificates for `default.test`, `a.test` and `*.b.test`, written as PEM
/// files into a directory.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_der: CertificateDer<'static>,
    pub leaf_der: std::collections::HashMap<&'static str, CertificateDer<'static>>,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "sessiongate test CA");
        let ca_key = KeyPair::generate().unwrap();
        std::fs::write(dir.join("ca.key"), ca_key.serialize_pem()).unwrap();
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
        let mut leaf_der = std::collections::HashMap::new();
        for (file, names) in [
            ("default", vec!["default.test", "localhost", "127.0.0.1"]),
            ("a", vec!["a.test"]),
            ("b", vec!["*.b.test"]),
        ] {
            let key = KeyPair::generate().unwrap();
            let params =
                CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                    .unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.join(format!("{file}.crt")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
            leaf_der.insert(file, cert.der().clone());
        }
        Pki {
            dir: dir.to_path_buf(),
            ca_der: ca.der().clone(),
            leaf_der,
        }
    }

    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        Arc::new(self.client_config_with(alpn, None))
    }

    /// A client trusting this CA that speaks only `version`, with `provider`'s algorithms (to
    /// offer a chosen set of cipher suites or key exchange groups).
    pub fn client_config_using(
        &self,
        provider: rustls::crypto::CryptoProvider,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// A client that presents `identity` (its certificate and key) when asked.
    pub fn client_config_with(
        &self,
        alpn: &[&[u8]],
        identity: Option<&ClientIdentity>,
    ) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(sessiongate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(id) => {
                let chain = std::iter::once(&id.cert).chain(&id.chain).cloned();
                builder
                    .with_client_auth_cert(chain.collect(), id.key.clone_key())
                    .unwrap()
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A client certificate for `name`, issued by this test CA (`trusted`) or by a CA of its
    /// own that nobody trusts.
    pub fn client_identity(&self, name: &str, trusted: bool) -> ClientIdentity {
        self.client_identity_via(name, trusted, false)
    }

    /// As `client_identity`, issued through an intermediate CA (`via_intermediate`) that the
    /// client sends after its certificate.
    pub fn client_identity_via(
        &self,
        name: &str,
        trusted: bool,
        via_intermediate: bool,
    ) -> ClientIdentity {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair,
        };
        let ca_key =
            KeyPair::from_pem(&std::fs::read_to_string(self.dir.join("ca.key")).unwrap()).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "sessiongate test CA");
        let ca = if trusted {
            CertifiedIssuer::self_signed(ca_params, ca_key).unwrap()
        } else {
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap()
        };
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (cert, chain) = if via_intermediate {
            let mut mid_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            mid_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            mid_params
                .distinguished_name
                .push(DnType::CommonName, "sessiongate test intermediate");
            let mid =
                CertifiedIssuer::signed_by(mid_params, KeyPair::generate().unwrap(), &ca).unwrap();
            (
                params.signed_by(&key, &mid).unwrap(),
                vec![mid.der().clone()],
            )
        } else {
            (params.signed_by(&key, &ca).unwrap(), Vec::new())
        };
        ClientIdentity {
            cert: cert.der().clone(),
            chain,
            key: rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }
}

/// The TLS listener with all three certificates; `default` first.
pub const TLS_LISTENER: &str = r#"
[[listener]]
name = "tls"
listen = "127.0.0.1:0"
[listener.tls]
cert = "default.crt"
key = "default.key"
sni = [ { cert = "a.crt", key = "a.key" }, { cert = "b.crt", key = "b.key" } ]
"#;

pub const PLAIN_LISTENER: &str = r#"
[[listener]]
name = "plain"
listen = "127.0.0.1:0"
"#;

/// A proxy on port 0 with a TLS and a plain listener, in front of `backends`.
pub struct Harness {
    pub server: Server,
    pub pki: Pki,
    /// Last, so that the directory goes after the proxy that reads it.
    pub dir: TempDir,
}

/// A site's `backends` value listing `addrs`.
pub fn static_backends(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("{{ static = [{}] }}", list.join(", "))
}

impl Harness {
    /// `extra` is appended verbatim (e.g. a `[timeouts]` table).
    pub async fn start(backends: &[SocketAddr], extra: &str) -> Harness {
        Harness::start_site(&static_backends(backends), extra).await
    }

    /// A proxy whose one site has `backends = <backends>`; `extra` follows the site.
    pub async fn start_site(backends: &str, extra: &str) -> Harness {
        Harness::start_with(&format!("{TLS_LISTENER}{PLAIN_LISTENER}"), backends, extra).await
    }

    /// A proxy with the given `[[listener]]` blocks (which may use the test PKI's files).
    pub async fn start_with(listeners: &str, backends: &str, extra: &str) -> Harness {
        Harness::start_full("", listeners, backends, extra).await
    }

    /// As `start_with`, with more keys for the `[admin]` table.
    pub async fn start_full(admin: &str, listeners: &str, backends: &str, extra: &str) -> Harness {
        let dir = temp_dir("proxy");
        let pki = Pki::new(&dir);
        let text = format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n{admin}\n[log]\naccess_log = false\n{listeners}\n\
             [[site]]\nname = \"main\"\nbackends = {backends}\n{extra}"
        );
        std::fs::write(dir.join("sessiongate.toml"), &text).unwrap();
        let config = Config::load(&dir.join("sessiongate.toml")).expect("test config is valid");
        let server = Server::start(config).await.expect("proxy starts");
        Harness { server, pki, dir }
    }

    pub fn tls_addr(&self) -> SocketAddr {
        self.server.listener_addr("tls").unwrap()
    }

    pub fn plain_addr(&self) -> SocketAddr {
        self.server.listener_addr("plain").unwrap()
    }

    pub async fn tls(&self, sni: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        tls_connect(self.tls_addr(), sni, self.pki.client_config(alpn)).await
    }

    /// Rewrites the config file with `edit`, which must change it, and reloads.
    pub async fn reload_edited(&self, edit: impl FnOnce(&str) -> String) {
        let path = self.dir.join("sessiongate.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = edit(&text);
        assert_ne!(edited, text, "the edit changes the configuration");
        std::fs::write(&path, edited).unwrap();
        self.server.reload().await.unwrap();
    }

    /// A request to the admin listener, with a bearer token if given: status and body.
    pub async fn admin(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let mut send = h1(TcpStream::connect(self.server.admin_addr()).await.unwrap()).await;
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let (status, _, body) = read(send_h1(&mut send, req.body(empty()).unwrap()).await).await;
        (status, body)
    }

    /// The backends `GET /sites` lists for the first site (no token).
    pub async fn backends(&self) -> Vec<serde_json::Value> {
        let (status, body) = self.admin("GET", "/sites", None).await;
        assert_eq!(status, 200, "{body}");
        let sites: serde_json::Value = serde_json::from_str(&body).unwrap();
        sites["sites"][0]["backends"].as_array().unwrap().clone()
    }

    pub async fn metrics(&self) -> String {
        let (status, _, body) = get_plain(self.server.admin_addr(), "/metrics").await;
        assert_eq!(status, 200);
        body
    }
}

pub async fn start_nodes(n: usize) -> Vec<DemoNode> {
    let mut nodes = Vec::new();
    for i in 1..=n {
        nodes.push(
            DemoNode::start(&format!("node-{i}"), localhost())
                .await
                .unwrap(),
        );
    }
    nodes
}

pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .expect("TLS handshake with the proxy")
}

/// What a TLS handshake settled on.
pub struct Handshake {
    pub kind: Option<rustls::HandshakeKind>,
    pub suite: Option<rustls::SupportedCipherSuite>,
    pub group: Option<rustls::NamedGroup>,
}

/// `GET /` (Host `default.test`) over a new TLS connection, read to the end of the answer: a
/// TLS 1.3 session ticket comes after the handshake, so it has arrived by then. Returns the
/// handshake and the status.
pub async fn tls_get(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> (Handshake, u16) {
    let tls = tls_connect(addr, sni, config).await;
    let handshake = Handshake {
        kind: tls.get_ref().1.handshake_kind(),
        suite: tls.get_ref().1.negotiated_cipher_suite(),
        group: tls
            .get_ref()
            .1
            .negotiated_key_exchange_group()
            .map(|g| g.name()),
    };
    let mut send = h1(tls).await;
    let req = http::Request::get("/")
        .header("host", "default.test")
        .body(empty())
        .unwrap();
    let (status, _, _) = read(send_h1(&mut send, req).await).await;
    (handshake, status)
}

pub type H1 = hyper::client::conn::http1::SendRequest<ClientBody>;
pub type H2 = hyper::client::conn::http2::SendRequest<ClientBody>;

pub async fn h1<I>(io: I) -> H1
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    send
}

pub async fn h2<I>(io: I) -> H2
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    h2_watched(io).await.0
}

/// An HTTP/2 client and the task driving its connection, which ends `Ok` when the server
/// closes it gracefully (GOAWAY) and `Err` when it is cut off.
pub async fn h2_watched<I>(io: I) -> (H2, tokio::task::JoinHandle<Result<(), hyper::Error>>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    (send, tokio::spawn(conn))
}

pub fn empty() -> ClientBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

pub fn full(data: impl Into<Bytes>) -> ClientBody {
    Full::new(data.into()).map_err(|e| match e {}).boxed()
}

/// A response as status, headers and body text.
pub async fn read(resp: http::Response<hyper::body::Incoming>) -> (u16, http::HeaderMap, String) {
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// `GET path` over a fresh plain HTTP/1.1 connection.
pub async fn get_plain(addr: SocketAddr, path: &str) -> (u16, http::HeaderMap, String) {
    let mut send = h1(TcpStream::connect(addr).await.unwrap()).await;
    let req = http::Request::get(path)
        .header("host", "app.test")
        .body(empty())
        .unwrap();
    read(send.send_request(req).await.unwrap()).await
}

/// Writes raw bytes and reads until the server closes (requests should say Connection: close).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut out))
        .await
        .expect("server closes the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// The lines of an echo body, lowercased header names as the node saw them.
pub fn echoed_header<'a>(echo: &'a str, name: &str) -> Vec<&'a str> {
    echo.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// A metric sample's value from Prometheus text, e.g. `sessiongate_requests_total{...}`.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// An address nothing listens on, and nothing else can take: a socket bound to it that never
/// listens, so connections are refused, kept for the rest of the test process. (Bound and
/// released, the port went back to the kernel, and a test running alongside could be given it
/// for a listener of its own.)
pub async fn closed_port() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(localhost()).unwrap();
    let addr = socket.local_addr().unwrap();
    std::mem::forget(socket);
    addr
}

/// A backend that holds every request until the test releases it, and says when one arrived:
/// "a request is in flight" becomes a fact the test can wait for instead of a sleep.
pub struct GateBackend {
    pub addr: SocketAddr,
    pub arrived: tokio::sync::mpsc::UnboundedReceiver<String>,
    release: Arc<tokio::sync::Semaphore>,
}

impl GateBackend {
    pub async fn start() -> GateBackend {
        GateBackend::start_on(localhost()).await
    }

    pub async fn start_on(addr: SocketAddr) -> GateBackend {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, arrived) = tokio::sync::mpsc::unbounded_channel();
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let gate = release.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (tx, gate) = (tx.clone(), gate.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (tx, gate) = (tx.clone(), gate.clone());
                            async move {
                                let _ = tx.send(req.uri().path().to_string());
                                gate.acquire().await.unwrap().forget();
                                Ok::<_, std::convert::Infallible>(http::Response::new(full(
                                    "released\n",
                                )))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        GateBackend {
            addr,
            arrived,
            release,
        }
    }

    /// Lets `n` held requests answer.
    pub fn release(&self, n: usize) {
        self.release.add_permits(n);
    }

    pub async fn wait_arrival(&mut self) -> String {
        tokio::time::timeout(PATIENCE, self.arrived.recv())
            .await
            .expect("a request reaches the backend")
            .unwrap()
    }
}

/// What a [`RawBackend`] does with one request: writes `bytes` (exactly, framing and all), then
/// keeps the connection for the next request or closes it. Empty `bytes` with `close`: the
/// connection closes without an answer.
pub struct RawReply {
    pub bytes: Vec<u8>,
    pub close: bool,
}

impl RawReply {
    pub fn keep(bytes: impl AsRef<[u8]>) -> RawReply {
        RawReply {
            bytes: bytes.as_ref().to_vec(),
            close: false,
        }
    }

    pub fn close(bytes: impl AsRef<[u8]>) -> RawReply {
        RawReply {
            bytes: bytes.as_ref().to_vec(),
            close: true,
        }
    }
}

/// A backend speaking raw bytes, for what a well-behaved server never sends: it reads each
/// request head (and a Content-Length body, unless the reply is to come before it), hands the
/// head to `reply`, and writes what that returns. It records every head and counts
/// connections.
pub struct RawBackend {
    pub addr: SocketAddr,
    pub heads: Arc<std::sync::Mutex<Vec<String>>>,
    pub connections: Arc<AtomicUsize>,
}

impl RawBackend {
    pub async fn start<F>(reply: F) -> RawBackend
    where
        F: Fn(&str) -> RawReply + Send + Sync + 'static,
    {
        RawBackend::start_reading(true, reply).await
    }

    /// Like `start`, but answers as soon as the head is in, without reading any body.
    pub async fn start_early<F>(reply: F) -> RawBackend
    where
        F: Fn(&str) -> RawReply + Send + Sync + 'static,
    {
        RawBackend::start_reading(false, reply).await
    }

    async fn start_reading<F>(read_body: bool, reply: F) -> RawBackend
    where
        F: Fn(&str) -> RawReply + Send + Sync + 'static,
    {
        let listener = tokio::net::TcpListener::bind(localhost()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let reply = Arc::new(reply);
        let (seen, count) = (heads.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (seen, reply) = (seen.clone(), reply.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match tcp.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end);
                        if read_body {
                            let length = head
                                .lines()
                                .filter_map(|l| l.split_once(':'))
                                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            while buf.len() < length {
                                let mut chunk = [0u8; 4096];
                                match tcp.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            }
                            buf.drain(..length);
                        }
                        seen.lock().unwrap().push(head.clone());
                        let answer = reply(&head);
                        if tcp.write_all(&answer.bytes).await.is_err() || answer.close {
                            return;
                        }
                    }
                });
            }
        });
        RawBackend {
            addr,
            heads,
            connections,
        }
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// `GET path` over HTTP/1.1 from `from` (a loopback address), with extra header lines:
/// the status and the Retry-After value.
pub async fn get_from(
    proxy: SocketAddr,
    from: &str,
    path: &str,
    headers: &str,
) -> (u16, Option<String>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut tcp: TcpStream = socket.connect(proxy).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{headers}\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes())
        .await
        .unwrap();
    let (head, _) = read_response(&mut tcp).await;
    let status = head[9..12].parse().unwrap();
    let retry_after = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .map(str::to_string);
    (status, retry_after)
}

/// Reads one response whose body has a Content-Length; returns its head and body.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> (String, String) {
    try_read_response(stream)
        .await
        .unwrap_or_else(|buf| panic!("closed early: {buf}"))
}

/// As `read_response`, or what came before the connection failed or closed.
pub async fn try_read_response<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(String, String), String> {
    let mut buf = Vec::new();
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                let length = head
                    .lines()
                    .filter_map(|l| l.split_once(": "))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.trim().parse::<usize>().unwrap());
                if buf.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]);
                    return Ok((head, body.into_owned()));
                }
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return Err(String::from_utf8_lossy(&buf).into_owned()),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("a response or a close")
}

/// Reads from a connection until the peer closes it; panics if that takes longer than PATIENCE.
pub async fn wait_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .ok();
    out
}

/// Sends on a kept-alive HTTP/1.1 connection, first waiting until it can take the next request
/// (right after a response body ends, hyper may not have returned the connection to idle yet).
pub async fn send_h1(
    send: &mut H1,
    req: http::Request<ClientBody>,
) -> http::Response<hyper::body::Incoming> {
    send.ready()
        .await
        .expect("connection ready for the next request");
    send.send_request(req).await.expect("response")
}

/// Polls `check` until it holds; panics after PATIENCE. For waiting on eventual effects (a DNS
/// refresh, a drain) without asserting how long they take.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded by PATIENCE) until listener `listener` has no connection open: the proxy
/// has closed the one the test left hanging.
pub async fn connections_closed(proxy: &Harness, listener: &str) {
    let open = format!("sessiongate_open_connections{{listener=\"{listener}\"}}");
    eventually(
        &format!("every connection to {listener} closed"),
        || async { metric(&proxy.metrics().await, &open) == Some(0.0) },
    )
    .await;
}

/// `n` demo nodes on 127.0.0.2, 127.0.0.3, ... all on one port, as pods behind a headless
/// service all serve on the same port.
pub async fn nodes_on_one_port(n: usize) -> (Vec<DemoNode>, u16) {
    'retry: for _ in 0..20 {
        let first = DemoNode::start("node-1", "127.0.0.2:0".parse().unwrap())
            .await
            .unwrap();
        let port = first.addr.port();
        let mut nodes = vec![first];
        for i in 2..=n {
            let addr = SocketAddr::from(([127, 0, 0, i as u8 + 1], port));
            match DemoNode::start(&format!("node-{i}"), addr).await {
                Ok(node) => nodes.push(node),
                Err(_) => {
                    nodes.iter().for_each(DemoNode::stop);
                    continue 'retry;
                }
            }
        }
        return (nodes, port);
    }
    panic!("no port free on every loopback address");
}

/// Which node answers `GET /` through the plain listener, `n` times.
pub async fn answering_nodes(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let (status, headers, body) = get_plain(addr, "/").await;
        assert_eq!(status, 200, "{body}");
        seen.push(headers["x-node"].to_str().unwrap().to_string());
    }
    seen
}

/// The embedded demo on port 0 everywhere, with `nodes` nodes in its first site.
pub async fn start_demo(nodes: usize) -> sessiongate::demo::Demo {
    let any = localhost();
    sessiongate::demo::start(sessiongate::demo::DemoOptions {
        https: any,
        http: any,
        admin: any,
        nodes,
    })
    .await
    .unwrap()
}

/// A connection whose reading the test can stop: after [`ReadSwitch::stop`], reads wait for
/// ever (nothing wakes them), while writes still go out. A client that stops reading its
/// socket, as one that hangs or attacks (slow read) does.
pub struct StopsReading<I> {
    io: I,
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Clone)]
pub struct ReadSwitch(Arc<std::sync::atomic::AtomicBool>);

impl ReadSwitch {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl<I> StopsReading<I> {
    pub fn new(io: I) -> (StopsReading<I>, ReadSwitch) {
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let switch = ReadSwitch(stopped.clone());
        (StopsReading { io, stopped }, switch)
    }
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StopsReading<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.stopped.load(Ordering::SeqCst) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StopsReading<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A raw HTTP/2 connection to the proxy's TLS listener, past the client preface and an empty
/// SETTINGS frame.
pub async fn raw_h2(proxy: &Harness) -> TlsStream<TcpStream> {
    let mut tls = proxy.tls("default.test", &[b"h2"]).await;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    tls
}

/// An HTTP/2 frame's bytes: its head (length, type, flags, stream) and `payload`.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u32).to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The next frame off a raw HTTP/2 connection: type, flags, stream and payload.
pub async fn read_h2_frame(tls: &mut TlsStream<TcpStream>) -> (u8, u8, u32, Vec<u8>) {
    let mut head = [0u8; 9];
    tokio::time::timeout(PATIENCE, tls.read_exact(&mut head))
        .await
        .expect("a frame in time")
        .expect("a frame");
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0; length];
    tls.read_exact(&mut payload)
        .await
        .expect("a frame's payload");
    (head[3], head[4], stream, payload)
}

/// The same request, bodiless, over an HTTP/1.1 connection and an HTTP/2 one: each answer with
/// its protocol's name.
pub async fn over_both(
    over_h1: &mut H1,
    over_h2: &mut H2,
    method: &str,
    uri: &str,
) -> [(&'static str, http::Response<hyper::body::Incoming>); 2] {
    let req = || {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(empty())
            .unwrap()
    };
    let h1_answer = send_h1(over_h1, req()).await;
    let h2_answer = over_h2.send_request(req()).await.unwrap();
    [("HTTP/1.1", h1_answer), ("HTTP/2", h2_answer)]
}
