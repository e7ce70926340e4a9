//! Hot reload: a reload under continuous load loses no request; open connections stay open
//! unless their listener's per-connection settings changed; a bad config or a bad
//! certificate is refused and the running configuration keeps serving; a certificate rotated
//! the way Kubernetes updates a Secret (a `..data` symlink swap) is picked up by the watcher.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sessiongate::{Config, Server};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn write_config(dir: &Path, backend: std::net::SocketAddr, cert: &str, extra: &str) {
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess_log = false\n\
         [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\n\
         [[listener]]\nname = \"tls\"\nlisten = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n\
         [[site]]\nname = \"main\"\nbackends = {{ static = [\"{backend}\"] }}\n{extra}",
        key = cert.replace(".crt", ".key"),
    );
    std::fs::write(dir.join("sessiongate.toml"), text).unwrap();
}

async fn start(dir: &Path) -> Server {
    Server::start(Config::load(&dir.join("sessiongate.toml")).unwrap())
        .await
        .unwrap()
}

async fn answering(server: &Server) -> (u16, String) {
    let (status, headers, _) = get_plain(server.listener_addr("plain").unwrap(), "/").await;
    let node = headers
        .get("x-node")
        .map_or("-".into(), |v| v.to_str().unwrap().to_string());
    (status, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_continuous_load_lose_no_request() {
    let dir = temp_dir("reload-load");
    Pki::new(&dir);
    let nodes = start_nodes(2).await;
    write_config(
        &dir,
        nodes[0].addr,
        "default.crt",
        "[reload]\nwatch = false\n",
    );
    let server = Arc::new(start(&dir).await);
    let plain = server.listener_addr("plain").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..6 {
        let (stop, served) = (stop.clone(), served.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (status, _, body) = get_plain(plain, "/echo").await;
                assert_eq!(status, 200, "{body}");
                served.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Slow requests in flight across every reload finish on the configuration they began with.
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(tokio::spawn(async move {
            get_plain(plain, "/slow?ms=300").await.0
        }));
    }
    for round in 0..6 {
        let backend = nodes[(round + 1) % 2].addr;
        write_config(&dir, backend, "default.crt", "[reload]\nwatch = false\n");
        let changes = server.reload().await.unwrap();
        assert_eq!(
            changes.kept,
            vec!["plain", "tls"],
            "unchanged listeners keep their sockets"
        );
        assert_eq!(server.listener_addr("plain"), Some(plain));
    }
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert!(served.load(Ordering::Relaxed) > 0);
    // The last reload pointed at node-1 (round 5: nodes[0]).
    assert_eq!(answering(&server).await, (200, "node-1".to_string()));
    assert_eq!(
        metric(
            &String::from_utf8(server.metrics().render()).unwrap(),
            "sessiongate_config_reloads_total{result=\"ok\"}"
        ),
        Some(6.0)
    );
}

/// The head of the answer to `GET /echo` on a kept-alive plain connection.
async fn echo_head(tcp: &mut TcpStream) -> String {
    let request = b"GET /echo HTTP/1.1\r\nHost: app.test\r\n\r\n";
    tcp.write_all(request).await.unwrap();
    read_response(tcp).await.0
}

/// A kept-alive connection to the plain listener, answered once, by node-1.
async fn answered_by_node_1(server: &Server) -> TcpStream {
    let mut tcp = TcpStream::connect(server.listener_addr("plain").unwrap())
        .await
        .unwrap();
    let head = echo_head(&mut tcp).await;
    assert!(head.contains("x-node: node-1"), "{head}");
    tcp
}

/// The node that answers `GET /echo` on an HTTP/2 connection.
async fn h2_node(h2: &mut H2) -> String {
    let get = http::Request::get("https://default.test/echo").body(empty());
    let (status, headers, _) = read(h2.send_request(get.unwrap()).await.unwrap()).await;
    assert_eq!(status, 200);
    headers["x-node"].to_str().unwrap().to_string()
}

/// An HTTP/2 connection to the TLS listener, answered once, by node-1, and the task driving it.
async fn h2_answered_by_node_1(
    server: &Server,
    pki: &Pki,
) -> (H2, tokio::task::JoinHandle<Result<(), hyper::Error>>) {
    let tls = server.listener_addr("tls").unwrap();
    let stream = tls_connect(tls, "default.test", pki.client_config(&[b"h2"])).await;
    let (mut h2, driver) = h2_watched(stream).await;
    assert_eq!(h2_node(&mut h2).await, "node-1");
    (h2, driver)
}

/// A proxy on `write_config`'s two listeners in front of `node` (node-1), with an idle
/// kept-alive HTTP/1.1 connection and an HTTP/2 one over TLS open, each answered once.
struct Open {
    pki: Pki,
    server: Server,
    tcp: TcpStream,
    /// Held: a client that drops its last handle closes the connection itself.
    h2: H2,
    h2_driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
    dir: TempDir,
}

async fn open(tag: &str, node: std::net::SocketAddr, extra: &str) -> Open {
    let dir = temp_dir(tag);
    let pki = Pki::new(&dir);
    write_config(&dir, node, "default.crt", extra);
    let server = start(&dir).await;
    let tcp = answered_by_node_1(&server).await;
    let (h2, h2_driver) = h2_answered_by_node_1(&server, &pki).await;
    Open {
        dir,
        pki,
        server,
        tcp,
        h2,
        h2_driver,
    }
}

/// A kept-alive connection idle at a reload that changes its listener's settings waits
/// `close_grace` for one more request, answers it and closes: a client that sent it as the
/// reload happened (wrk under load met dozens of resets per hundred reloads) gets its answer.
/// An idle HTTP/2 connection gets GOAWAY.
#[tokio::test]
async fn a_request_on_a_connection_idle_at_a_reload_is_answered_then_it_closes() {
    let nodes = start_nodes(2).await;
    let extra = "[reload]\nwatch = false\n[timeouts]\nclose_grace = \"20s\"\n";
    let Open {
        dir,
        server,
        mut tcp,
        // Held (see `Open`): dropped, it would close the connection from the client's side.
        h2: _h2,
        h2_driver,
        ..
    } = open("reload-idle", nodes[0].addr, extra).await;

    // A per-connection setting changes (the header cap), and the backend with it.
    let changed = format!("{extra}[limits]\nmax_headers = 50\n");
    write_config(&dir, nodes[1].addr, "default.crt", &changed);
    let changes = server.reload().await.unwrap();
    assert_eq!(changes.cycled, vec!["plain", "tls"]);
    // Long enough for the idle connection to see the reload: it used to close at once, and
    // this request then met a closed socket.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let head = echo_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("x-node: node-2"),
        "routed by the new configuration: {head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(wait_closed(&mut tcp).await.is_empty());
    let h2_end = tokio::time::timeout(PATIENCE, h2_driver).await;
    assert!(h2_end.expect("GOAWAY closes it").unwrap().is_ok());
    assert_eq!(answering(&server).await, (200, "node-2".to_string()));
}

/// A reload that changes what requests are routed to (the backends) and the certificate served,
/// and nothing a connection is served with, closes no connection: an idle kept-alive HTTP/1.1
/// connection and an HTTP/2 one over TLS each send their next request to the new backend, with
/// no `Connection: close` and no GOAWAY. New handshakes get the new certificate. nginx and
/// HAProxy close every such connection on a reload, and each client pays a new handshake.
#[tokio::test]
async fn a_reload_that_changes_routing_or_certificates_keeps_connections_open() {
    let nodes = start_nodes(2).await;
    // A short close_grace: a connection the reload retired would be gone by the next request.
    let extra = "[reload]\nwatch = false\n[timeouts]\nclose_grace = \"50ms\"\n";
    let Open {
        dir,
        pki,
        server,
        mut tcp,
        mut h2,
        h2_driver,
    } = open("reload-keep", nodes[0].addr, extra).await;
    let tls = server.listener_addr("tls").unwrap();

    write_config(&dir, nodes[1].addr, "a.crt", extra);
    let changes = server.reload().await.unwrap();
    assert_eq!(changes.kept, vec!["plain", "tls"]);
    assert!(changes.cycled.is_empty(), "{changes:?}");
    // Ten times close_grace: long enough for a retired connection to have closed.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let head = echo_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("x-node: node-2"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );

    assert!(!h2_driver.is_finished(), "no GOAWAY");
    assert_eq!(h2_node(&mut h2).await, "node-2");
    assert!(!h2_driver.is_finished());

    assert_eq!(served_certificate(tls).await, pki.leaf_der["a"].to_vec());
}

#[tokio::test]
async fn a_bad_config_or_certificate_is_refused_and_the_old_one_keeps_serving() {
    let dir = temp_dir("reload-bad");
    let pki = Pki::new(&dir);
    let nodes = start_nodes(1).await;
    write_config(
        &dir,
        nodes[0].addr,
        "default.crt",
        "[reload]\nwatch = false\n",
    );
    let server = start(&dir).await;
    let tls = server.listener_addr("tls").unwrap();

    std::fs::write(dir.join("sessiongate.toml"), "[[listener]\nbroken").unwrap();
    assert!(matches!(
        server.reload().await,
        Err(sessiongate::ReloadError::Config(_))
    ));
    assert_eq!(answering(&server).await, (200, "node-1".into()));

    // A certificate file that is not a certificate.
    std::fs::write(dir.join("broken.crt"), "not a certificate").unwrap();
    std::fs::copy(dir.join("default.key"), dir.join("broken.key")).unwrap();
    write_config(
        &dir,
        nodes[0].addr,
        "broken.crt",
        "[reload]\nwatch = false\n",
    );
    let err = server.reload().await.unwrap_err();
    assert!(err.to_string().contains("broken.crt"), "{err}");
    tls_connect(tls, "default.test", pki.client_config(&[b"http/1.1"])).await;
    let metrics = String::from_utf8(server.metrics().render()).unwrap();
    assert_eq!(
        metric(
            &metrics,
            "sessiongate_config_reloads_total{result=\"error\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(&metrics, "sessiongate_config_last_reload_successful"),
        Some(0.0)
    );

    write_config(
        &dir,
        nodes[0].addr,
        "default.crt",
        "[reload]\nwatch = false\n",
    );
    server.reload().await.unwrap();
    let metrics = String::from_utf8(server.metrics().render()).unwrap();
    assert_eq!(
        metric(&metrics, "sessiongate_config_last_reload_successful"),
        Some(1.0)
    );
}

/// A reload builds new TLS configs; a client's ticket from before it must still resume.
#[tokio::test]
async fn tls_sessions_resume_across_a_reload() {
    let dir = temp_dir("reload-resume");
    let pki = Pki::new(&dir);
    let nodes = start_nodes(1).await;
    write_config(
        &dir,
        nodes[0].addr,
        "default.crt",
        "[reload]\nwatch = false\n",
    );
    let server = start(&dir).await;
    let tls = server.listener_addr("tls").unwrap();
    // One config, one session cache.
    let config = pki.client_config(&[b"http/1.1"]);
    let mut kinds = Vec::new();
    for reload in [false, true, false] {
        if reload {
            write_config(
                &dir,
                nodes[0].addr,
                "default.crt",
                "[reload]\nwatch = false\n[limits]\nmax_connections = 5000\n",
            );
            server.reload().await.unwrap();
            continue;
        }
        let (handshake, status) = tls_get(tls, "default.test", config.clone()).await;
        assert_eq!(status, 200);
        kinds.push(handshake.kind);
    }
    assert_eq!(
        kinds,
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
}

/// Accepts any certificate: the test compares the served certificate itself.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn served_certificate(addr: std::net::SocketAddr) -> Vec<u8> {
    let provider = sessiongate::tls::provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("default.test").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[cfg(unix)]
#[tokio::test]
async fn a_certificate_rotated_by_a_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let dir = temp_dir("reload-rotate");
    let pki = Pki::new(&dir);
    // A Secret volume as the kubelet writes it: files point into ..data, itself a symlink.
    let secret = dir.join("secret");
    std::fs::create_dir_all(secret.join("..2026_11_22_01")).unwrap();
    for (from, to) in [("default.crt", "tls.crt"), ("default.key", "tls.key")] {
        std::fs::copy(dir.join(from), secret.join("..2026_11_22_01").join(to)).unwrap();
    }
    symlink("..2026_11_22_01", secret.join("..data")).unwrap();
    symlink("..data/tls.crt", secret.join("tls.crt")).unwrap();
    symlink("..data/tls.key", secret.join("tls.key")).unwrap();
    let nodes = start_nodes(1).await;
    write_config(
        &dir,
        nodes[0].addr,
        "secret/tls.crt",
        "[reload]\nwatch_interval = \"50ms\"\n",
    );
    let server = start(&dir).await;
    let tls = server.listener_addr("tls").unwrap();
    assert_eq!(
        served_certificate(tls).await,
        pki.leaf_der["default"].to_vec()
    );

    // Rotation: a new directory, then ..data swapped to it in one rename.
    std::fs::create_dir_all(secret.join("..2026_11_22_02")).unwrap();
    for (from, to) in [("a.crt", "tls.crt"), ("a.key", "tls.key")] {
        std::fs::copy(dir.join(from), secret.join("..2026_11_22_02").join(to)).unwrap();
    }
    symlink("..2026_11_22_02", secret.join("..data_tmp")).unwrap();
    std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).unwrap();

    let rotated = pki.leaf_der["a"].to_vec();
    eventually("the new certificate is served", || async {
        served_certificate(tls).await == rotated
    })
    .await;
    assert_eq!(answering(&server).await, (200, "node-1".into()));
}

/// An edit reloaded by SIGHUP (here `Server::reload`) is not reloaded a second time by the
/// watcher: a reload rebuilds every site and re-resolves every name, so once is enough.
#[tokio::test]
async fn the_watcher_does_not_reload_an_edit_a_sighup_already_loaded() {
    let dir = temp_dir("reload-once");
    Pki::new(&dir);
    let nodes = start_nodes(1).await;
    let watch = "[reload]\nwatch_interval = \"50ms\"\n";
    write_config(&dir, nodes[0].addr, "default.crt", watch);
    let server = start(&dir).await;
    let reloads = || {
        let text = String::from_utf8(server.metrics().render()).unwrap();
        metric(&text, "sessiongate_config_reloads_total{result=\"ok\"}").unwrap_or(0.0)
    };

    write_config(
        &dir,
        nodes[0].addr,
        "default.crt",
        &format!("{watch}# one\n"),
    );
    server.reload().await.unwrap();
    // Six of the watcher's looks at the files: an ordering aid, not a measurement (were the
    // watcher slower, this would pass without showing anything, never fail).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        reloads(),
        1.0,
        "the watcher reloaded what SIGHUP had loaded"
    );

    // It still sees an edit of its own.
    write_config(
        &dir,
        nodes[0].addr,
        "default.crt",
        &format!("{watch}# two\n"),
    );
    eventually("the watcher reloads the second edit", || async {
        reloads() == 2.0
    })
    .await;
    assert_eq!(answering(&server).await, (200, "node-1".into()));
}

/// `GET /` through `proxy` with `cookies` (a `Cookie` line), if any: the node that answered,
/// the body, and the cookies it set, as a `Cookie` line to send next time.
async fn visit(proxy: std::net::SocketAddr, cookies: Option<&str>) -> (String, String, String) {
    let mut send = h1(TcpStream::connect(proxy).await.unwrap()).await;
    let mut req = http::Request::get("/").header("host", "sso.test");
    if let Some(cookies) = cookies {
        req = req.header("cookie", cookies);
    }
    let (status, headers, body) = read(send_h1(&mut send, req.body(empty()).unwrap()).await).await;
    assert_eq!(status, 200, "{body}");
    let set: Vec<&str> = headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next())
        .collect();
    (
        headers["x-node"].to_str().unwrap().to_owned(),
        body,
        set.join("; "),
    )
}

#[tokio::test]
async fn a_reload_keeps_health_verdicts_and_learned_routes() {
    // Static addresses carry no route up front: route mode learns each node's from the
    // `AUTH_SESSION_ID=<id>.<node>` cookies it sets.
    let nodes = start_nodes(3).await;
    let health = |interval: &str, fall: u32| {
        format!(
            "[site.health]\npath = \"/health/ready\"\ninterval = \"{interval}\"\n\
             timeout = \"100ms\"\nrise = 1\nfall = {fall}\nexpect_json_up = true\n"
        )
    };
    let balance = "[balance]\nalgorithm = \"round_robin\"\n[balance.sticky]\nmode = \"route\"\n";
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let proxy = Harness::start_site(
        &static_backends(&addrs),
        &format!("{}{balance}", health("100ms", 1)),
    )
    .await;
    let mut sessions = Vec::new();
    for _ in 0..12 {
        let (node, _, cookies) = visit(proxy.plain_addr(), None).await;
        assert!(cookies.starts_with("AUTH_SESSION_ID="), "{cookies}");
        sessions.push((node, cookies));
    }
    let node1_up = format!(
        "sessiongate_backend_up{{backend=\"{}\",site=\"main\"}}",
        nodes[0].addr
    );
    nodes[0].set_ready(false);
    eventually("node-1 is checked down", || async {
        metric(&proxy.metrics().await, &node1_up) == Some(0.0)
    })
    .await;

    // The new configuration would need three failed probes an hour apart to find node-1 down
    // again: only the verdict carried over keeps requests off it.
    proxy
        .reload_edited(|text| text.replace(&health("100ms", 1), &health("1h", 3)))
        .await;

    // Old sessions first: a new session's cookie would teach the new generation its node's
    // route again.
    for (home, session) in sessions.iter().filter(|(home, _)| home != "node-1") {
        let (node, body, _) = visit(proxy.plain_addr(), Some(session)).await;
        assert_eq!(&node, home, "{body}");
        assert!(body.contains("welcome back"), "{body}");
    }
    assert!(sessions.iter().any(|(home, _)| home != "node-1"));
    for _ in 0..9 {
        assert_ne!(visit(proxy.plain_addr(), None).await.0, "node-1");
    }
    let text = proxy.metrics().await;
    let repinned = "sessiongate_sticky_total{outcome=\"repin\",site=\"main\"}";
    assert_eq!(metric(&text, repinned), Some(0.0), "{text}");

    // A site no longer checked takes no verdict over: nothing would ever bring node-1 back.
    proxy
        .reload_edited(|text| text.replace(&health("1h", 3), ""))
        .await;
    let mut reached = Vec::new();
    for _ in 0..3 {
        reached.push(visit(proxy.plain_addr(), None).await.0);
    }
    assert!(reached.iter().any(|n| n == "node-1"), "{reached:?}");
}

#[tokio::test]
async fn a_backend_a_reload_removes_drains_like_one_that_left_dns() {
    let nodes = start_nodes(2).await;
    let both = static_backends(&[nodes[0].addr, nodes[1].addr]);
    let sticky = "[upstream]\ndrain_timeout = \"1h\"\n[balance.sticky]\nmode = \"cookie\"\n\
                  secret = \"a-shared-secret-of-32-characters\"\n";
    let proxy = Harness::start_site(&both, sticky).await;
    // Browsers: the proxy's own cookie and the node's session cookie, as set.
    let mut users = Vec::new();
    for _ in 0..6 {
        let (node, _, cookies) = visit(proxy.plain_addr(), None).await;
        users.push((node, cookies));
    }
    assert!(users.iter().any(|(node, _)| node == "node-2"));

    let only_first = static_backends(&[nodes[0].addr]);
    proxy
        .reload_edited(|text| text.replace(&both, &only_first))
        .await;

    // node-2's sessions finish there; no new session goes to it.
    for (home, cookies) in &users {
        let (node, body, _) = visit(proxy.plain_addr(), Some(cookies)).await;
        assert_eq!(&node, home, "{body}");
        assert!(body.contains("welcome back"), "{body}");
    }
    for _ in 0..6 {
        assert_eq!(answering(&proxy.server).await, (200, "node-1".to_string()));
    }
    let text = proxy.metrics().await;
    assert!(
        text.contains("sessiongate_backends{site=\"main\",state=\"draining\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn certificates_a_reload_stops_serving_leave_the_expiry_metric_at_once() {
    // An expiry alert on a certificate no longer served would page someone for nothing.
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    let expiry = |text: &str, file: &str| {
        text.lines().any(|l| {
            l.starts_with("sessiongate_tls_certificate_expiry_timestamp_seconds{")
                && l.contains(&format!("{file}\""))
        })
    };
    let text = proxy.metrics().await;
    assert!(
        ["default.crt", "a.crt", "b.crt"]
            .iter()
            .all(|f| expiry(&text, f)),
        "{text}"
    );

    let sni =
        "sni = [ { cert = \"a.crt\", key = \"a.key\" }, { cert = \"b.crt\", key = \"b.key\" } ]";
    proxy
        .reload_edited(|config| {
            assert!(config.contains(sni));
            config.replace(sni, "")
        })
        .await;

    let text = proxy.metrics().await;
    assert!(expiry(&text, "default.crt"), "{text}");
    assert!(!expiry(&text, "a.crt") && !expiry(&text, "b.crt"), "{text}");
}

#[tokio::test]
async fn a_drain_that_ends_leaves_the_backend_count() {
    let nodes = start_nodes(2).await;
    let both = static_backends(&[nodes[0].addr, nodes[1].addr]);
    let proxy = Harness::start_site(&both, "[upstream]\ndrain_timeout = \"2s\"\n").await;
    let only_first = static_backends(&[nodes[0].addr]);
    proxy
        .reload_edited(|text| text.replace(&both, &only_first))
        .await;
    // A static site has no discovery round to notice: the scrape reads the clock.
    let draining = "sessiongate_backends{site=\"main\",state=\"draining\"}";
    assert_eq!(metric(&proxy.metrics().await, draining), Some(1.0));
    eventually("the drain ends", || async {
        metric(&proxy.metrics().await, draining) == Some(0.0)
    })
    .await;
    let active = "sessiongate_backends{site=\"main\",state=\"active\"}";
    assert_eq!(metric(&proxy.metrics().await, active), Some(1.0));
}

/// Replicas that read the same files report the same `sessiongate_config_hash`, and one that
/// has not reloaded an edit yet reports another: the fleet-wide check the alert
/// `SessiongateConfigDiffers` makes. The load time moves with each successful reload.
#[tokio::test]
async fn replicas_on_the_same_files_report_the_same_config_hash() {
    let dir = temp_dir("reload-hash");
    Pki::new(&dir);
    let nodes = start_nodes(2).await;
    write_config(
        &dir,
        nodes[0].addr,
        "default.crt",
        "[reload]\nwatch = false\n",
    );
    // Two replicas on one config file (every port 0).
    let (one, two) = (start(&dir).await, start(&dir).await);
    let read = |server: &Server, name: &str| {
        let text = String::from_utf8(server.metrics().render()).unwrap();
        metric(&text, name).unwrap()
    };
    let hash = "sessiongate_config_hash";
    let loaded = "sessiongate_config_last_reload_success_timestamp_seconds";
    assert_eq!(read(&one, hash), read(&two, hash));
    let started = read(&one, loaded);
    assert!(started > 1.7e9, "{started}");

    // A certificate the config names changes, and one replica reloads it.
    std::fs::copy(dir.join("a.crt"), dir.join("default.crt")).unwrap();
    std::fs::copy(dir.join("a.key"), dir.join("default.key")).unwrap();
    one.reload().await.unwrap();
    assert_ne!(read(&one, hash), read(&two, hash));
    assert!(read(&one, loaded) >= started);
    two.reload().await.unwrap();
    assert_eq!(read(&one, hash), read(&two, hash));

    // A refused reload leaves the running configuration's hash.
    let before = read(&one, hash);
    std::fs::write(dir.join("sessiongate.toml"), "not = [valid").unwrap();
    assert!(one.reload().await.is_err());
    assert_eq!(read(&one, hash), before);
}

/// A listener a reload removes stops accepting and closes its open connections gracefully (an
/// HTTP/2 one gets GOAWAY); the listener kept beside it keeps its own.
#[tokio::test]
async fn a_removed_listener_closes_its_connections_and_a_kept_one_keeps_its_own() {
    let nodes = start_nodes(1).await;
    let extra = "[reload]\nwatch = false\n[timeouts]\nclose_grace = \"50ms\"\n";
    let Open {
        dir,
        server,
        mut tcp,
        // Held (see `Open`): dropped, it would close the connection from the client's side.
        h2: _h2,
        h2_driver,
        ..
    } = open("reload-remove", nodes[0].addr, extra).await;
    let tls = server.listener_addr("tls").unwrap();

    let path = dir.join("sessiongate.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let (from, to) = (
        text.find("[[listener]]\nname = \"tls\"").unwrap(),
        text.find("[[site]]").unwrap(),
    );
    text.replace_range(from..to, "");
    std::fs::write(&path, text).unwrap();
    let changes = server.reload().await.unwrap();
    assert_eq!(
        (changes.kept, changes.removed, changes.cycled),
        (vec!["plain".to_string()], vec!["tls".to_string()], vec![])
    );

    let h2_end = tokio::time::timeout(PATIENCE, h2_driver).await;
    assert!(h2_end.expect("GOAWAY closes it").unwrap().is_ok());
    eventually("the removed listener refuses connections", || async {
        TcpStream::connect(tls).await.is_err()
    })
    .await;
    let head = echo_head(&mut tcp).await;
    assert!(head.contains("x-node: node-1"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("connection: close"));
}

/// A TLS handshake under way when a reload closes its listener's connections is not cut: the
/// connection's first request is answered, with `Connection: close`, as on a plain listener.
#[tokio::test]
async fn a_tls_handshake_under_way_at_a_reload_completes_and_its_request_is_answered() {
    let dir = temp_dir("reload-handshake");
    let pki = Pki::new(&dir);
    let nodes = start_nodes(1).await;
    let extra = "[reload]\nwatch = false\n[timeouts]\nclose_grace = \"20s\"\n";
    write_config(&dir, nodes[0].addr, "default.crt", extra);
    let server = start(&dir).await;
    // Accepted (counted), and no ClientHello sent yet.
    let tcp = TcpStream::connect(server.listener_addr("tls").unwrap())
        .await
        .unwrap();
    let accepted = "sessiongate_connections_total{listener=\"tls\"}";
    eventually("the proxy accepts the connection", || async {
        let text = String::from_utf8(server.metrics().render()).unwrap();
        metric(&text, accepted) == Some(1.0)
    })
    .await;

    write_config(
        &dir,
        nodes[0].addr,
        "default.crt",
        &format!("{extra}[limits]\nmax_headers = 50\n"),
    );
    assert_eq!(server.reload().await.unwrap().cycled, vec!["plain", "tls"]);
    // Long enough for a cut connection to be gone.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let name = rustls::pki_types::ServerName::try_from("default.test").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(pki.client_config(&[b"http/1.1"]))
        .connect(name, tcp)
        .await
        .expect("the handshake completes");
    tls.write_all(b"GET /echo HTTP/1.1\r\nHost: default.test\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
}
