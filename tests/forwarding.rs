//! Requests through the proxy over real TLS with real HTTP/1.1 and HTTP/2 clients, and raw
//! HTTP/1.1 for what clients like curl would never send.

mod common;

use std::collections::HashSet;

use common::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn http1_and_http2_over_tls_reach_every_backend_in_turn() {
    let nodes = start_nodes(3).await;
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let proxy = Harness::start(&addrs, "").await;

    // HTTP/1.1 over TLS: one kept-alive connection, round robin across all three nodes.
    let tls = proxy.tls("default.test", &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut send = h1(tls).await;
    let mut seen = HashSet::new();
    for _ in 0..6 {
        let req = http::Request::get("/echo")
            .header("host", "default.test")
            .body(empty())
            .unwrap();
        let (status, headers, body) = read(send_h1(&mut send, req).await).await;
        assert_eq!(status, 200);
        assert!(body.contains("GET /echo HTTP/1.1"), "{body}");
        seen.insert(headers["x-node"].to_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 3, "round robin reached {seen:?}");

    // HTTP/2 over TLS: ALPN picks h2; the backend receives HTTP/1.1 with the authority as Host.
    let tls = proxy.tls("default.test", &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut send = h2(tls).await;
    let mut seen = HashSet::new();
    for _ in 0..6 {
        let req = http::Request::get("https://default.test:8443/echo?x=1")
            .body(empty())
            .unwrap();
        let (status, headers, body) = read(send.send_request(req).await.unwrap()).await;
        assert_eq!(status, 200);
        assert!(body.contains("GET /echo?x=1 HTTP/1.1"), "{body}");
        assert_eq!(echoed_header(&body, "host"), vec!["default.test:8443"]);
        assert_eq!(echoed_header(&body, "x-forwarded-proto"), vec!["https"]);
        seen.insert(headers["x-node"].to_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 3);
    // A Host beside the :authority it agrees with: the backend gets one Host, not two.
    let req = http::Request::get("https://default.test:8443/echo")
        .header("host", "default.test:8443")
        .body(empty())
        .unwrap();
    let (status, _, body) = read(send.send_request(req).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(echoed_header(&body, "host"), vec!["default.test:8443"]);
}

/// Large answers over HTTP/2 leave in gathered writes (`gathered_writes.rs`), answered flushes
/// and all: several at once on one connection, each arrives whole and in order, and the
/// connection serves on after them.
#[tokio::test]
async fn large_http2_answers_arrive_whole_and_in_order_side_by_side() {
    use http_body_util::BodyExt;
    // Each path's body is a sequence of its own, so a piece of one inside another shows.
    fn body(path: &str) -> Vec<u8> {
        let len: u64 = match path {
            "/a" => 1_048_593,
            "/b" => 262_147,
            "/c" => 70_001,
            _ => 100,
        };
        let seed = path.bytes().fold(7u64, |h, b| h * 31 + u64::from(b));
        (0..len)
            .map(|i| ((i * 0x9E37_79B9 + seed) >> 11) as u8)
            .collect()
    }
    let backend = RawBackend::start(|head| {
        let body = body(head.split_whitespace().nth(1).unwrap_or("/"));
        let mut answer =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        answer.extend_from_slice(&body);
        RawReply::keep(answer)
    })
    .await;
    let proxy = Harness::start(&[backend.addr], "").await;
    let send = h2(proxy.tls("default.test", &[b"h2"]).await).await;

    let fetch = |path: &'static str| {
        let mut send = send.clone();
        async move {
            let req = http::Request::get(format!("https://default.test{path}"))
                .body(empty())
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.unwrap().to_bytes()
        }
    };
    let all = async {
        let (a, b, c) = tokio::join!(fetch("/a"), fetch("/b"), fetch("/c"));
        for (path, got) in [("/a", a), ("/b", b), ("/c", c)] {
            let expected = body(path);
            assert_eq!(got.len(), expected.len(), "{path}");
            assert!(got == expected, "{path}: the bytes differ");
        }
        // A small answer after them: nothing was left gathered and unsent.
        assert_eq!(fetch("/d").await, body("/d"));
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), all)
        .await
        .expect("every answer arrives");
}

/// A client ordering its suites like OpenSSL (AES-256-GCM-SHA384 first) gets AES-128-GCM: the
/// server's order decides, which spares every handshake SHA-384 (no hardware path on x86). A
/// client that offers only AES-256 still gets it.
#[tokio::test]
async fn the_server_chooses_aes_128_and_still_accepts_clients_without_it() {
    use rustls::crypto::aws_lc_rs::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384,
    };
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    let client = |suites: Vec<rustls::SupportedCipherSuite>| {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: suites,
            ..(*sessiongate::tls::provider()).clone()
        };
        proxy
            .pki
            .client_config_using(provider, &rustls::version::TLS13)
    };
    for (offered, expected) in [
        (
            vec![TLS13_AES_256_GCM_SHA384, TLS13_AES_128_GCM_SHA256],
            TLS13_AES_128_GCM_SHA256,
        ),
        (vec![TLS13_AES_256_GCM_SHA384], TLS13_AES_256_GCM_SHA384),
    ] {
        let (handshake, status) = tls_get(proxy.tls_addr(), "default.test", client(offered)).await;
        assert_eq!(handshake.suite.unwrap().suite(), expected.suite());
        assert_eq!(status, 200);
    }
}

/// A client that offers X25519MLKEM768 (as browsers do) gets the post-quantum hybrid; one that
/// offers only classical groups gets the first of them it listed, without a HelloRetryRequest.
#[tokio::test]
async fn browsers_get_post_quantum_key_exchange_and_classical_clients_still_connect() {
    use rustls::crypto::aws_lc_rs::kx_group::{SECP256R1, SECP384R1, X25519, X25519MLKEM768};
    use rustls::NamedGroup;
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    let client = |kx_groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
                  version: &'static rustls::SupportedProtocolVersion| {
        let provider = rustls::crypto::CryptoProvider {
            kx_groups,
            ..rustls::crypto::aws_lc_rs::default_provider()
        };
        proxy.pki.client_config_using(provider, version)
    };
    let tls13 = &rustls::version::TLS13;
    for (offered, version, expected) in [
        // The hybrid first, with an X25519 share beside it: a browser since 2024.
        (
            vec![X25519MLKEM768, X25519],
            tls13,
            NamedGroup::X25519MLKEM768,
        ),
        // OpenSSL 3.0 (wrk, curl on Debian 12): classical groups only.
        (
            vec![X25519, SECP256R1, SECP384R1],
            tls13,
            NamedGroup::X25519,
        ),
        (vec![SECP256R1], tls13, NamedGroup::secp256r1),
        // TLS 1.2 has no post-quantum group; the classical one is chosen.
        (
            vec![X25519MLKEM768, X25519],
            &rustls::version::TLS12,
            NamedGroup::X25519,
        ),
    ] {
        let (handshake, status) =
            tls_get(proxy.tls_addr(), "default.test", client(offered, version)).await;
        assert_eq!(handshake.group, Some(expected));
        assert_eq!(handshake.kind, Some(rustls::HandshakeKind::Full));
        assert_eq!(status, 200);
    }
    // Counted by what was negotiated, so an operator sees how much traffic is post-quantum.
    let metrics = proxy.metrics().await;
    for (version, group) in [
        ("TLSv1_3", "X25519MLKEM768"),
        ("TLSv1_3", "X25519"),
        ("TLSv1_3", "secp256r1"),
        ("TLSv1_2", "X25519"),
    ] {
        let series = format!(
            "sessiongate_tls_handshakes_total{{key_exchange=\"{group}\",listener=\"tls\",resumed=\"false\",version=\"{version}\"}}"
        );
        assert_eq!(
            metric(&metrics, &series),
            Some(1.0),
            "{series} in {metrics}"
        );
    }
}

/// A returning client skips the certificate and its signature: the second connection of each
/// protocol version resumes with the ticket the first one got.
#[tokio::test]
async fn returning_clients_resume_their_tls_session() {
    use rustls::HandshakeKind;
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        // One client config, and so one session cache, for both connections.
        let provider = (*sessiongate::tls::provider()).clone();
        let config = proxy.pki.client_config_using(provider, version);
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let (handshake, status) =
                tls_get(proxy.tls_addr(), "default.test", config.clone()).await;
            assert_eq!(status, 200);
            kinds.push(handshake.kind);
        }
        assert_eq!(
            kinds,
            [Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)],
            "{version:?}"
        );
    }
    // One resumed handshake per version is counted as such.
    let metrics = proxy.metrics().await;
    let resumed = |version: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("sessiongate_tls_handshakes_total{")
                    && l.contains("resumed=\"true\"")
                    && l.contains(&format!("version=\"{version}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(
        (resumed("TLSv1_3"), resumed("TLSv1_2")),
        (1.0, 1.0),
        "{metrics}"
    );
}

/// Replicas given the same `ticket_keys` file resume each other's sessions; a key file
/// rotated and reloaded changes which tickets open. Each listener here stands for a replica:
/// without the file they would all share this process's own key, so the listeners with other
/// keys, which must not resume, show that the file's keys seal and open.
#[tokio::test]
async fn replicas_sharing_ticket_keys_resume_each_others_sessions() {
    use rustls::HandshakeKind::{Full, Resumed};
    let keys = temp_dir("ticket-keys");
    let key = |seed: u8| -> Vec<u8> { (0..80u8).map(|i| i.wrapping_mul(seed) ^ seed).collect() };
    for (file, seeds) in [
        ("a", &[3][..]),
        ("c", &[5]),
        ("ba", &[7, 3]),
        ("ab", &[3, 7]),
        ("reloaded", &[3]),
    ] {
        let bytes: Vec<u8> = seeds.iter().flat_map(|&s| key(s)).collect();
        std::fs::write(keys.join(file), bytes).unwrap();
    }
    let listeners: String = ["a", "a2", "c", "ba", "ab", "reloaded"]
        .iter()
        .map(|name| {
            format!(
                "[[listener]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\n[listener.tls]\n\
                 cert = \"default.crt\"\nkey = \"default.key\"\nticket_keys = \"{}\"\n",
                keys.join(if *name == "a2" { "a" } else { name }).display()
            )
        })
        .collect();
    let nodes = start_nodes(1).await;
    let proxy = Harness::start_with(&listeners, &static_backends(&[nodes[0].addr]), "").await;
    let addr = |name: &str| proxy.server.listener_addr(name).unwrap();

    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        // A fresh client (its own session cache) for each pair: the first connection's ticket
        // is offered to the second listener.
        let second_connection = |from: &'static str, to: &'static str| {
            let config = proxy
                .pki
                .client_config_using((*sessiongate::tls::provider()).clone(), version);
            let (first, second) = (addr(from), addr(to));
            async move {
                let (handshake, status) = tls_get(first, "default.test", config.clone()).await;
                assert_eq!((handshake.kind, status), (Some(Full), 200));
                let (handshake, status) = tls_get(second, "default.test", config).await;
                assert_eq!(status, 200);
                handshake.kind
            }
        };
        for (from, to, kind) in [
            // The same file: resumed.
            ("a", "a2", Resumed),
            // Another key: a full handshake, though both run in one process.
            ("a", "c", Full),
            // Rotation, first step: the next key added behind; the old one still seals.
            ("ab", "a", Resumed),
            // Second step: the next key moved to the front. It opens what the old one sealed,
            // and what it seals does not open where only the old key is.
            ("a", "ba", Resumed),
            ("ba", "a", Full),
            ("ba", "ab", Resumed),
        ] {
            assert_eq!(
                second_connection(from, to).await,
                Some(kind),
                "{from} -> {to}, {version:?}"
            );
        }
    }

    // The file rewritten without the key the client's ticket was sealed with, and reloaded:
    // the ticket no longer opens, and the new key's does.
    let config = proxy.pki.client_config(&[b"http/1.1"]);
    let mut kinds = Vec::new();
    for rewritten in [false, true] {
        if rewritten {
            std::fs::write(keys.join("reloaded"), key(5)).unwrap();
            proxy.server.reload().await.unwrap();
        }
        for _ in 0..2 {
            let (handshake, _) = tls_get(addr("reloaded"), "default.test", config.clone()).await;
            kinds.push(handshake.kind);
        }
    }
    assert_eq!(
        kinds,
        [Some(Full), Some(Resumed), Some(Full), Some(Resumed)]
    );
}

/// A client's TLS session cache (rustls' own) that counts the TLS 1.3 tickets it is given.
#[derive(Debug)]
struct CountingTickets {
    cache: rustls::client::ClientSessionMemoryCache,
    given: std::sync::atomic::AtomicUsize,
}

impl CountingTickets {
    fn new() -> CountingTickets {
        CountingTickets {
            cache: rustls::client::ClientSessionMemoryCache::new(32),
            given: Default::default(),
        }
    }

    fn given(&self) -> usize {
        self.given.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl rustls::client::ClientSessionStore for CountingTickets {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.cache.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.cache.kx_hint(name)
    }
    fn set_tls12_session(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.cache.set_tls12_session(name, value)
    }
    fn tls12_session(
        &self,
        name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.cache.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.cache.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.given.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.cache.insert_tls13_ticket(name, value)
    }
    fn take_tls13_ticket(
        &self,
        name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.cache.take_tls13_ticket(name)
    }
}

#[tokio::test]
async fn tls13_clients_get_one_ticket_per_handshake_unless_they_ask_for_more() {
    use rustls::client::{Resumption, TicketRequest};
    use rustls::HandshakeKind::{Full, Resumed};
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    // No request: one ticket after each handshake. Asking (RFC 9149): what is asked, up to six.
    let cases = [
        (None, [1, 1]),
        (
            Some(TicketRequest {
                new_session_count: 3,
                resumption_count: 9,
            }),
            [3, 6],
        ),
    ];
    for (request, expected) in cases {
        let tickets = std::sync::Arc::new(CountingTickets::new());
        let mut config = (*proxy.pki.client_config(&[])).clone();
        config.resumption = Resumption::store(tickets.clone());
        config.send_ticket_request = request;
        let config = std::sync::Arc::new(config);
        let mut given = Vec::new();
        for kind in [Full, Resumed] {
            let before = tickets.given();
            let (handshake, status) =
                tls_get(proxy.tls_addr(), "default.test", config.clone()).await;
            assert_eq!((status, handshake.kind), (200, Some(kind)));
            given.push(tickets.given() - before);
        }
        assert_eq!(given, expected, "{request:?}");
    }
}

/// A connection closed after one answer: the client gets its ticket, the answer and a clean
/// TLS close (close_notify), whether or not it offered ALPN.
#[tokio::test]
async fn a_connection_closed_after_one_answer_gets_its_ticket_answer_and_close_notify() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    for alpn in [None, Some(b"http/1.1")] {
        let tickets = std::sync::Arc::new(CountingTickets::new());
        let mut config = (*proxy.pki.client_config(&[])).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = rustls::client::Resumption::store(tickets.clone());
        let mut tls = tls_connect(proxy.tls_addr(), "default.test", config.into()).await;
        tls.write_all(b"GET /echo HTTP/1.1\r\nHost: default.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        // rustls reports a close without close_notify as an error here.
        let mut answer = String::new();
        tls.read_to_string(&mut answer)
            .await
            .expect("a clean TLS close");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        assert_eq!(tickets.given(), 1, "{alpn:?}");
    }
}

/// A handshake that fails says why: the client gets the alert, not just a closed connection.
#[tokio::test]
async fn a_failed_handshake_still_sends_its_alert() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    let config = proxy.pki.client_config(&[b"spdy/3"]);
    let tcp = tokio::net::TcpStream::connect(proxy.tls_addr())
        .await
        .unwrap();
    let err = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("default.test").unwrap(), tcp)
        .await
        .expect_err("no protocol in common");
    let err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a TLS error: {err}"));
    assert_eq!(
        *err,
        rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
    );
}

#[tokio::test]
async fn sni_chooses_the_certificate() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    for (sni, expected) in [
        ("a.test", "a"),
        ("login.b.test", "b"),
        ("default.test", "default"),
        ("unknown.test", "default"),
    ] {
        let config = {
            // Trust everything the proxy may present, so that the check below is what decides.
            let mut roots = rustls::RootCertStore::empty();
            roots.add(proxy.pki.ca_der.clone()).unwrap();
            let mut c = rustls::ClientConfig::builder_with_provider(sessiongate::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            c.dangerous()
                .set_certificate_verifier(std::sync::Arc::new(AcceptAny));
            std::sync::Arc::new(c)
        };
        let tls = tls_connect(proxy.tls_addr(), sni, config).await;
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(presented, proxy.pki.leaf_der[expected], "SNI {sni}");
    }
    // And a client that verifies: a.test validates against the CA with the a.test certificate.
    let tls = proxy.tls("a.test", &[b"h2"]).await;
    let mut send = h2(tls).await;
    let (status, _, _) = read(
        send.send_request(http::Request::get("https://a.test/").body(empty()).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
}

#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        sessiongate::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test]
async fn tls12_clients_are_served() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    let provider = (*sessiongate::tls::provider()).clone();
    let config = proxy
        .pki
        .client_config_using(provider, &rustls::version::TLS12);
    let tls = tls_connect(proxy.tls_addr(), "default.test", config).await;
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut send = h1(tls).await;
    let req = http::Request::get("/")
        .header("host", "default.test")
        .body(empty())
        .unwrap();
    assert_eq!(read(send_h1(&mut send, req).await).await.0, 200);
}

#[tokio::test]
async fn forwarded_headers_are_the_proxys_and_host_is_kept() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    let response = raw(
        proxy.plain_addr(),
        b"GET /echo HTTP/1.1\r\nHost: app.example.test:1234\r\n\
          X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\nX-Forwarded-Proto: https\r\n\
          X-Forwarded-Host: evil.test\r\nX-Forwarded-Port: 1\r\nForwarded: for=6.6.6.6;proto=https\r\n\
          X-Real-IP: 6.6.6.6\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(
        echoed_header(&response, "x-forwarded-for"),
        vec!["127.0.0.1"]
    );
    assert_eq!(echoed_header(&response, "x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        echoed_header(&response, "x-forwarded-host"),
        vec!["app.example.test:1234"]
    );
    let port = proxy.plain_addr().port().to_string();
    assert_eq!(
        echoed_header(&response, "x-forwarded-port"),
        vec![port.as_str()]
    );
    assert_eq!(
        echoed_header(&response, "host"),
        vec!["app.example.test:1234"]
    );
    // RFC 7239: the proxy's own element; the host has a colon, so it is quoted.
    assert_eq!(
        echoed_header(&response, "forwarded"),
        vec!["for=127.0.0.1;proto=http;host=\"app.example.test:1234\""]
    );
    assert!(
        echoed_header(&response, "x-real-ip").is_empty(),
        "{response}"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_do_not_cross_in_either_direction() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    let response = raw(
        proxy.plain_addr(),
        b"GET /echo HTTP/1.1\r\nHost: app.test\r\nConnection: close, X-Client-Hop\r\n\
          X-Client-Hop: secret\r\nKeep-Alive: timeout=300\r\nProxy-Connection: keep-alive\r\n\
          TE: trailers\r\nTrailer: X-Checksum\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
          Upgrade: h2c\r\nX-End-To-End: kept\r\n\r\n",
    )
    .await;
    let (head, body) = response.split_once("\r\n\r\n").expect("a full response");
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    // What the backend received: end-to-end headers only.
    for gone in [
        "x-client-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(
            echoed_header(body, gone).is_empty(),
            "{gone} reached the backend:\n{body}"
        );
    }
    assert_eq!(echoed_header(body, "x-end-to-end"), vec!["kept"]);
    // What the client received: the backend's `Connection: x-backend-hop` and the headers it
    // named, `Keep-Alive` and `Proxy-Connection` are gone.
    let head = head.to_ascii_lowercase();
    for gone in ["x-backend-hop", "keep-alive:", "proxy-connection"] {
        assert!(!head.contains(gone), "{gone} reached the client:\n{head}");
    }
}

#[tokio::test]
async fn plain_listener_can_redirect_to_https() {
    let nodes = start_nodes(1).await;
    let extra = r#"
[[listener]]
name = "redirect"
listen = "127.0.0.1:0"
redirect_to_https = true
https_port = 8443
"#;
    let proxy = Harness::start(&[nodes[0].addr], extra).await;
    let addr = proxy.server.listener_addr("redirect").unwrap();
    let response = raw(
        addr,
        b"POST /realms/demo/login-actions/authenticate?session_code=x HTTP/1.1\r\nHost: auth.example.test:80\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 308"), "{response}");
    assert!(
        response.contains("location: https://auth.example.test:8443/realms/demo/login-actions/authenticate?session_code=x\r\n"),
        "{response}"
    );
}

#[tokio::test]
async fn websocket_upgrade_passes_through_until_quiet_for_the_tunnel_timeout() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "[timeouts]\ntunnel = \"1s\"\n").await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.plain_addr())
        .await
        .unwrap();
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(PATIENCE, tcp.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // Bytes now flow both ways through the tunnel.
    for message in [&b"hello through the proxy"[..], &b"and back again"[..]] {
        tcp.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(PATIENCE, tcp.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
    // Then nothing either way: the proxy closes the tunnel (a client gone without a FIN would
    // otherwise hold it for good).
    assert!(wait_closed(&mut tcp).await.is_empty());
}

/// An `Upgrade` to a protocol the listener does not allow is no switch: the request reaches
/// the backend without it, and the backend's 101 could not be passed on anyway. Above all h2c,
/// which a backend would take to speak HTTP/2 with the client through the tunnel, where none
/// of the proxy's rules apply (h2c smuggling). The backend here switches whenever asked.
#[tokio::test]
async fn upgrades_to_protocols_not_allowed_are_forwarded_as_ordinary_requests() {
    let backend = RawBackend::start(|head| {
        if head.to_ascii_lowercase().contains("\r\nupgrade:") {
            RawReply::keep(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
            )
        } else {
            RawReply::keep("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }
    })
    .await;
    let listeners = format!(
        "{PLAIN_LISTENER}[[listener]]\nname = \"none\"\nlisten = \"127.0.0.1:0\"\nupgrades = []\n"
    );
    let proxy = Harness::start_with(&listeners, &static_backends(&[backend.addr]), "").await;
    let none = proxy.server.listener_addr("none").unwrap();
    let cases = [
        (proxy.plain_addr(), "h2c"),
        (proxy.plain_addr(), "H2C"),
        (proxy.plain_addr(), "websocket, h2c"),
        (proxy.plain_addr(), "x-other/1"),
        (none, "websocket"),
    ];
    for (addr, protocols) in cases {
        let request = format!(
            "GET /a HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
             Upgrade: {protocols}\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
        );
        let response = raw(addr, request.as_bytes()).await;
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{protocols}: {response}"
        );
        assert!(response.ends_with("\r\n\r\nok"), "{protocols}: {response}");
        let head = backend.heads().pop().unwrap().to_ascii_lowercase();
        assert!(!head.contains("upgrade"), "{protocols}: {head}");
        assert!(!head.contains("http2-settings"), "{protocols}: {head}");
    }
    assert_eq!(backend.heads().len(), cases.len());
}

#[tokio::test]
async fn requests_without_host_or_with_connect_are_refused_and_others_still_served() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    let response = raw(
        proxy.plain_addr(),
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    let response = raw(
        proxy.plain_addr(),
        b"CONNECT internal.test:22 HTTP/1.1\r\nHost: internal.test:22\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    let response = raw(
        proxy.plain_addr(),
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

/// A Host or authority with userinfo is refused (RFC 9110 §4.2.4): passed on, `good@evil`
/// reads as `good` to an allow list that checks the start, and as `evil` to a browser
/// following a link a backend built from it. So is one whose port is not digits (RFC 9112
/// §3.2).
#[tokio::test]
async fn hosts_with_userinfo_or_a_port_not_of_digits_are_refused() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    for request in [
        &b"GET /echo HTTP/1.1\r\nHost: app.test@evil.test\r\nConnection: close\r\n\r\n"[..],
        b"GET /echo HTTP/1.1\r\nHost: user:pass@app.test:8080\r\nConnection: close\r\n\r\n",
        // The absolute form and a Host that agrees with it.
        b"GET http://app.test@evil.test/echo HTTP/1.1\r\nHost: app.test@evil.test\r\n\
          Connection: close\r\n\r\n",
        b"GET http://app.test@evil.test/echo HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: app.test:abc\r\nConnection: close\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: app.test:80x\r\nConnection: close\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: [::1]:http\r\nConnection: close\r\n\r\n",
        b"GET http://app.test:8o/echo HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let response = raw(proxy.plain_addr(), request).await;
        assert!(
            response.starts_with("HTTP/1.1 400"),
            "{}: {response}",
            String::from_utf8_lossy(request)
        );
    }
    for uri in ["http://app.test@evil.test/echo", "http://app.test:abc/echo"] {
        let req = http::Request::get(uri).body(empty()).unwrap();
        assert_eq!(h2_echo(req).await.0, 400, "{uri}");
    }
    // Ports of digits, an empty one (RFC 3986 allows it) and IPv6 literals are served.
    for host in ["app.test:8080", "app.test:", "[::1]", "[::1]:8080"] {
        let request = format!("GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let response = raw(proxy.plain_addr(), request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{host}: {response}");
        assert_eq!(echoed_header(&response, "host"), vec![host]);
    }
}

/// A request target is a path or an absolute URI (RFC 9112 §3.2). `GET host:80` (the authority
/// form, CONNECT's) and `OPTIONS *` are refused as what they are, not as a Host that disagrees
/// with the target or as an ambiguous path; the forms that are served stay served.
#[tokio::test]
async fn request_targets_that_are_not_paths_are_refused_as_such() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    for target in ["app.test", "app.test:80", "*"] {
        let method = if target == "*" { "OPTIONS" } else { "GET" };
        let request =
            format!("{method} {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let response = raw(proxy.plain_addr(), request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{target}: {response}");
        assert!(
            response
                .trim_end()
                .ends_with("400 Bad Request: the request target must be a path or an absolute URI"),
            "{target}: {response}"
        );
    }
    for (request, status) in [
        (
            &b"GET http://app.test/echo HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
            "200",
        ),
        (
            b"GET http://app.test HTTP/1.1\r\nConnection: close\r\n\r\n",
            "200",
        ),
        (
            b"CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\nConnection: close\r\n\r\n",
            "405",
        ),
    ] {
        let response = raw(proxy.plain_addr(), request).await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}")),
            "{}: {response}",
            String::from_utf8_lossy(request)
        );
    }
}

/// `req` over HTTP/2 with prior knowledge to a plain listener in front of one echoing node:
/// the status, and the request as the node saw it.
async fn h2_echo(req: http::Request<ClientBody>) -> (u16, String) {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    let mut send = h2(tokio::net::TcpStream::connect(proxy.plain_addr())
        .await
        .unwrap())
    .await;
    let (status, _, body) = read(send.send_request(req).await.unwrap()).await;
    (status, body)
}

#[tokio::test]
async fn plain_listeners_speak_http2_with_prior_knowledge() {
    let req = http::Request::get("http://app.test/echo")
        .body(empty())
        .unwrap();
    let (status, body) = h2_echo(req).await;
    assert_eq!(status, 200);
    assert_eq!(echoed_header(&body, "host"), vec!["app.test"]);
    assert_eq!(echoed_header(&body, "x-forwarded-proto"), vec!["http"]);
}

/// HTTP/2 clients send each cookie as a header of its own (browsers do, for HPACK's sake); an
/// HTTP/1.1 backend gets them as one `Cookie` line joined with `; ` (RFC 9113 §8.2.3), since
/// many servers read only the first line, and a login cookie in another would be lost.
#[tokio::test]
async fn http2_cookie_crumbs_reach_the_backend_as_one_line() {
    let req = http::Request::get("http://app.test/echo")
        .header("cookie", "KEYCLOAK_IDENTITY=a")
        .header("cookie", "AUTH_SESSION_ID=b.node-1")
        .header("cookie", "c=3; d=4")
        .body(empty())
        .unwrap();
    let (status, body) = h2_echo(req).await;
    assert_eq!(status, 200);
    assert_eq!(
        echoed_header(&body, "cookie"),
        vec!["KEYCLOAK_IDENTITY=a; AUTH_SESSION_ID=b.node-1; c=3; d=4"]
    );
}

#[tokio::test]
async fn each_request_gets_an_id_that_the_backend_and_the_client_see() {
    let nodes = start_nodes(1).await;
    let listeners = format!(
        "{}{}[[listener]]\nname = \"trusting\"\nlisten = \"127.0.0.1:0\"\n\
         trusted_proxies = [\"127.0.0.0/8\"]\nrequest_id_header = \"X-Request-ID\"\n",
        TLS_LISTENER.replace(
            "[listener.tls]",
            "request_id_header = \"X-Request-ID\"\n[listener.tls]"
        ),
        PLAIN_LISTENER.to_owned() + "request_id_header = \"X-Request-ID\"\n",
    );
    let proxy = Harness::start_with(&listeners, &static_backends(&[nodes[0].addr]), "").await;
    let is_uuid = |id: &str| id.len() == 36 && id.split('-').count() == 5;
    let response_id = |head: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .map(str::to_owned)
    };

    // A client's own ID is replaced, even one it asks to be removed on the way.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let response = raw(
            proxy.plain_addr(),
            b"GET /echo HTTP/1.1\r\nHost: app.test\r\nX-Request-ID: forged\r\n\
              Connection: close, X-Request-ID\r\n\r\n",
        )
        .await;
        let (head, body) = response.split_once("\r\n\r\n").expect("a full response");
        assert!(head.starts_with("HTTP/1.1 200"), "{response}");
        let sent = echoed_header(body, "x-request-id");
        assert_eq!(sent.len(), 1, "{body}");
        assert!(is_uuid(sent[0]), "{body}");
        assert_eq!(response_id(head).as_deref(), Some(sent[0]), "{head}");
        seen.push(sent[0].to_string());
    }
    assert_ne!(seen[0], seen[1], "each request its own");

    // A trusted proxy's ID is kept.
    let trusting = proxy.server.listener_addr("trusting").unwrap();
    let response = raw(
        trusting,
        b"GET /echo HTTP/1.1\r\nHost: app.test\r\nX-Request-ID: lb-7f3a:42\r\n\
          Connection: close\r\n\r\n",
    )
    .await;
    let (head, body) = response.split_once("\r\n\r\n").expect("a full response");
    assert_eq!(echoed_header(body, "x-request-id"), vec!["lb-7f3a:42"]);
    assert_eq!(response_id(head).as_deref(), Some("lb-7f3a:42"));

    // The proxy's own answers carry one too, so a refused request can be found in the log.
    let response = raw(
        proxy.plain_addr(),
        b"GET /metrics HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(
        response_id(&response).is_some_and(|id| is_uuid(&id)),
        "{response}"
    );

    // HTTP/2.
    let mut send = h2(proxy.tls("default.test", &[b"h2"]).await).await;
    let req = http::Request::get("https://default.test/echo")
        .header("x-request-id", "forged")
        .body(empty())
        .unwrap();
    let (status, headers, body) = read(send.send_request(req).await.unwrap()).await;
    assert_eq!(status, 200);
    let id = headers["x-request-id"].to_str().unwrap();
    assert!(is_uuid(id), "{id}");
    assert_eq!(echoed_header(&body, "x-request-id"), vec![id]);
}

/// What an HTTP/2 client's answer carries besides the backend's fields, as HTTP/1.1's would: a
/// `Date` when the backend sent none, and the length of the proxy's own answers. A backend's
/// own `Date` is left as it is.
#[tokio::test]
async fn http2_answers_carry_a_date_and_local_ones_their_length() {
    let backend = RawBackend::start(|head| {
        if head.starts_with("GET /dated") {
            RawReply::keep("HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\n\r\nok")
        } else {
            RawReply::keep("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }
    })
    .await;
    let proxy = Harness::start(&[backend.addr], "").await;
    let mut send = h2(proxy.tls("default.test", &[b"h2"]).await).await;
    let mut get = async |path: &str| {
        let req = http::Request::get(format!("https://default.test{path}"))
            .body(empty())
            .unwrap();
        read(send.send_request(req).await.unwrap()).await
    };
    let dated = |headers: &http::HeaderMap| {
        let date = headers.get("date").expect("a date").to_str().unwrap();
        httpdate::parse_http_date(date).expect("an HTTP date")
    };

    let (status, headers, body) = get("/").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let now = std::time::SystemTime::now();
    let date = dated(&headers);
    assert!(
        date <= now && now.duration_since(date).unwrap() < PATIENCE,
        "{headers:?}"
    );
    assert_eq!(headers.get_all("date").iter().count(), 1);

    let (status, headers, _) = get("/dated").await;
    assert_eq!(status, 200);
    assert_eq!(headers["date"], "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(headers.get_all("date").iter().count(), 1);

    // The proxy's own answer: the metrics path, denied.
    let (status, headers, body) = get("/metrics").await;
    assert_eq!(status, 404);
    assert!(!body.is_empty());
    assert_eq!(headers["content-length"], body.len().to_string().as_str());
    dated(&headers);
}

/// A HEAD request's answer is a head alone (RFC 9110 §9.3.2), the proxy's own answers too,
/// with the length a GET's body would have: over HTTP/2 a DATA frame after it is a protocol
/// error that costs the client the stream, over HTTP/1.1 bytes the client reads as the next
/// answer.
#[tokio::test]
async fn head_requests_get_heads_alone_from_backends_and_the_proxy() {
    let backend = RawBackend::start(|head| {
        if head.starts_with("HEAD ") {
            RawReply::keep("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        } else {
            RawReply::keep("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        }
    })
    .await;
    let proxy = Harness::start(&[backend.addr], "").await;
    let mut over_h1 = h1(proxy.tls("default.test", &[b"http/1.1"]).await).await;
    let mut over_h2 = h2(proxy.tls("default.test", &[b"h2"]).await).await;
    // The backend's answer, the proxy's denial and its refusal of an ambiguous path; each
    // connection serves on after each.
    for (method, path, want) in [
        ("HEAD", "/", 200),
        ("HEAD", "/metrics", 404),
        ("HEAD", "/%c0%afmetrics", 400),
        ("GET", "/metrics", 404),
        ("GET", "/", 200),
    ] {
        let uri = format!("https://default.test{path}");
        for (protocol, resp) in over_both(&mut over_h1, &mut over_h2, method, &uri).await {
            let what = format!("{protocol} {method} {path}");
            let (parts, body) = resp.into_parts();
            let body = http_body_util::BodyExt::collect(body).await;
            let body = body.unwrap_or_else(|e| panic!("{what}: the answer failed: {e}"));
            let body = body.to_bytes();
            assert_eq!(parts.status, want, "{what}");
            let length = parts.headers.get("content-length");
            let length: usize = length.expect(&what).to_str().unwrap().parse().unwrap();
            assert!(length > 0, "{what}: the length the body would have");
            match method {
                "HEAD" => assert!(body.is_empty(), "{what}: {body:?}"),
                _ => assert_eq!(body.len(), length, "{what}"),
            }
        }
    }
}

/// An answer that comes before its request's body (here the proxy's own, to a denied path):
/// the rest of the body is read and dropped, so that the stream ends with the client's
/// END_STREAM rather than a reset, which libcurl before 8 takes for an error, losing the
/// answer. A body that declared more than the proxy reads is reset at once, with NO_ERROR
/// (RFC 9113 §8.1: the client keeps the answer).
#[tokio::test]
async fn an_http2_body_its_answer_came_before_is_read_and_dropped_unless_large() {
    let node = &start_nodes(1).await[0];
    let proxy = Harness::start(&[node.addr], "").await;
    for (declared, sent, reset) in [(40_000, 40_000, false), (2_000_000, 20_000, true)] {
        let mut tls = raw_h2(&proxy).await;
        // HPACK: :method POST, :scheme https (indexed), :path, :authority and content-length
        // (literal values of indexed names).
        let length = declared.to_string();
        let mut block = vec![0x83, 0x87, 0x44, 8];
        block.extend_from_slice(b"/metrics");
        block.extend_from_slice(&[0x41, 12]);
        block.extend_from_slice(b"default.test");
        block.extend_from_slice(&[0x5c, length.len() as u8]);
        block.extend_from_slice(length.as_bytes());
        tls.write_all(&h2_frame(0x1, 0x4, 1, &block)).await.unwrap();
        // The answer, whole, before a byte of the body.
        let mut resets = Vec::new();
        loop {
            match read_h2_frame(&mut tls).await {
                (0x4, 0, 0, _) => tls.write_all(&h2_frame(0x4, 0x1, 0, &[])).await.unwrap(),
                // :status 404 is the static table's 13th entry.
                (0x1, _, 1, block) => assert_eq!(block[0], 0x80 | 13, "{block:?}"),
                (0x0, flags, 1, _) if flags & 0x1 != 0 => break,
                (0x3, _, 1, reason) => resets.push(reason),
                _ => {}
            }
        }
        // The body, in frames of 16 KiB, the last one ending the stream; then a PING, whose
        // ACK comes after the proxy has read them all.
        let mut frames = Vec::new();
        let mut left = sent;
        while left > 0 {
            let n = left.min(16_384);
            left -= n;
            let end = u8::from(left == 0 && sent == declared);
            frames.extend(h2_frame(0x0, end, 1, &vec![b'x'; n]));
        }
        frames.extend(h2_frame(0x6, 0, 0, b"pingpong"));
        tls.write_all(&frames).await.unwrap();
        loop {
            match read_h2_frame(&mut tls).await {
                (0x6, 0x1, 0, _) => break,
                (0x3, _, 1, reason) => resets.push(reason),
                _ => {}
            }
        }
        if reset {
            assert_eq!(resets.first(), Some(&vec![0; 4]), "NO_ERROR first");
        } else {
            assert!(resets.is_empty(), "reset: {resets:?}");
        }
    }
}

/// An HTTP/2 upload the client resets part way is never passed on as if it were whole: sent
/// on chunked (it declared no length), its last chunk never follows the part that came, and
/// the backend's connection is closed.
#[tokio::test]
async fn an_http2_upload_reset_part_way_never_reaches_the_backend_whole() {
    let backend = tokio::net::TcpListener::bind(localhost()).await.unwrap();
    let proxy = Harness::start(&[backend.local_addr().unwrap()], "").await;
    let (mut client, driver) = h2_raw_client(&proxy).await;
    let req = http::Request::post("https://default.test/upload")
        .body(())
        .unwrap();
    let (_response, mut upload) = client.send_request(req, false).unwrap();
    upload
        .send_data(bytes::Bytes::from_static(b"first part"), false)
        .unwrap();
    let (mut tcp, seen) = backend_reads_until(&backend, b"first part").await;
    let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    assert!(text.contains("transfer-encoding: chunked"), "{text}");

    upload.send_reset(h2::Reason::CANCEL);
    // What follows, up to the proxy's close, is nothing: no last chunk.
    assert!(wait_closed(&mut tcp).await.is_empty());
    drop(client);
    driver.abort();
}

/// A client that resets an HTTP/2 stream no longer wants its answer: the request is given up
/// at once, and the backend's connection with it, rather than held until the backend answers
/// or `upstream_response` runs out.
#[tokio::test]
async fn a_reset_http2_stream_gives_up_its_request_at_once() {
    let backend = tokio::net::TcpListener::bind(localhost()).await.unwrap();
    let proxy = Harness::start(
        &[backend.local_addr().unwrap()],
        "[timeouts]\nupstream_response = \"600s\"\n",
    )
    .await;
    let (mut client, driver) = h2_raw_client(&proxy).await;
    let req = http::Request::get("https://default.test/slow")
        .body(())
        .unwrap();
    let (_response, mut stream) = client.send_request(req, true).unwrap();
    // The backend has the request, and answers nothing.
    let (mut tcp, head) = backend_reads_until(&backend, b"\r\n\r\n").await;
    assert!(head.starts_with(b"GET /slow HTTP/1.1\r\n"));

    stream.send_reset(h2::Reason::CANCEL);
    assert!(wait_closed(&mut tcp).await.is_empty());
    drop(client);
    driver.abort();
}

/// An h2 client on the proxy's TLS listener, its connection driven by a task.
async fn h2_raw_client(
    proxy: &Harness,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = proxy.tls("default.test", &[b"h2"]).await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    let driver = tokio::spawn(connection);
    (client.ready().await.unwrap(), driver)
}

/// The proxy's connection to `backend`, read until `pattern` has come.
async fn backend_reads_until(
    backend: &tokio::net::TcpListener,
    pattern: &[u8],
) -> (tokio::net::TcpStream, Vec<u8>) {
    let (mut tcp, _) = tokio::time::timeout(PATIENCE, backend.accept())
        .await
        .unwrap()
        .unwrap();
    let mut seen = Vec::new();
    while !seen.windows(pattern.len()).any(|w| w == pattern) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    (tcp, seen)
}

/// An HTTP/2 upload that declares more than `max_body_size` is refused on its head, before a
/// byte of it is sent or a backend chosen, as an HTTP/1.1 one is.
#[tokio::test]
async fn an_http2_upload_declared_too_large_is_refused_on_its_head() {
    let backend = tokio::net::TcpListener::bind(localhost()).await.unwrap();
    let proxy = Harness::start(
        &[backend.local_addr().unwrap()],
        "[limits]\nmax_body_size = \"64KiB\"\n",
    )
    .await;
    let (mut client, driver) = h2_raw_client(&proxy).await;
    let req = http::Request::post("https://default.test/upload")
        .header("content-length", "1000000")
        .body(())
        .unwrap();
    let (response, _upload) = client.send_request(req, false).unwrap();
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 413);
    drop(client);
    driver.abort();
}
