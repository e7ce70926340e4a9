//! Client certificates for Keycloak's X.509 login behind the proxy: a listener with `client_ca`
//! asks for them, verifies them, and passes a verified one to the backend in one header as
//! nginx's `$ssl_client_escaped_cert` does (what Keycloak's `nginx` lookup reads); whatever a
//! client sends under that header never arrives. Real TLS clients with generated certificates.

mod common;

use std::sync::Arc;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// One node behind a proxy whose TLS listener asks for client certificates; `tls` adds keys to
/// its `tls` table.
async fn start(tls: &str) -> (Vec<sessiongate::demo::DemoNode>, Harness) {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start_with(&listener(tls), &static_backends(&[nodes[0].addr]), "").await;
    (nodes, proxy)
}

fn listener(auth: &str) -> String {
    format!(
        "[[listener]]\nname = \"tls\"\nlisten = \"127.0.0.1:0\"\n\
         [listener.tls]\ncert = \"default.crt\"\nkey = \"default.key\"\n\
         client_ca = \"ca.crt\"\n{auth}\n"
    )
}

/// One `GET /echo` over a new connection made with `config` (its identity, if any), sending a
/// forged `ssl-client-cert` of the client's own; the values of it the node saw, or `None` when
/// the proxy refused the client. (In TLS 1.3 the server's verdict on a client certificate
/// arrives after the client's handshake is done, so a refused client learns it when it reads.)
async fn seen_cert(proxy: &Harness, config: rustls::ClientConfig) -> Option<Vec<String>> {
    let body = echo(proxy, config, "ssl-client-cert: forged\r\n").await?;
    Some(
        echoed_header(&body, "ssl-client-cert")
            .into_iter()
            .map(str::to_string)
            .collect(),
    )
}

/// `GET /echo` with `headers` over a new connection made with `config`: the node's echo, or
/// `None` when the proxy refused the client.
async fn echo(proxy: &Harness, config: rustls::ClientConfig, headers: &str) -> Option<String> {
    Some(echo_with(proxy, &Arc::new(config), headers).await?.0)
}

/// As `echo`, with a client config that may resume an earlier session: also how the
/// handshake went.
async fn echo_with(
    proxy: &Harness,
    config: &Arc<rustls::ClientConfig>,
    headers: &str,
) -> Option<(String, rustls::HandshakeKind)> {
    let tcp = TcpStream::connect(proxy.tls_addr()).await.unwrap();
    let name = ServerName::try_from("default.test").unwrap();
    let mut tls = TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .ok()?;
    let request = format!("GET /echo HTTP/1.1\r\nHost: default.test\r\n{headers}\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut tls, request.as_bytes())
        .await
        .ok()?;
    let (head, body) = try_read_response(&mut tls).await.ok()?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Some((body, tls.get_ref().1.handshake_kind()?))
}

fn decoded(value: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&value[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[tokio::test]
async fn a_verified_certificate_reaches_the_node_and_a_forged_header_never_does() {
    let (_nodes, proxy) = start("").await;
    let alice = proxy.pki.client_identity("alice", true);

    let seen = seen_cert(
        &proxy,
        proxy.pki.client_config_with(&[b"http/1.1"], Some(&alice)),
    )
    .await
    .expect("a certificate from the trusted CA is accepted");
    assert_eq!(seen.len(), 1, "one value, the proxy's: {seen:?}");
    // Escaped whole, as nginx does: no bare `+`, `/`, `=` or newline for a URL decoder to misread.
    assert!(seen[0]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"%-_.~".contains(&b)));
    let pem = String::from_utf8(decoded(&seen[0])).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    assert_eq!(der, alice.cert, "the client's own certificate");

    // A returning client resumes its TLS session, and its certificate still goes with it.
    let config = Arc::new(proxy.pki.client_config_with(&[b"http/1.1"], Some(&alice)));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (body, kind) = echo_with(&proxy, &config, "").await.unwrap();
        seen.push((kind, echoed_header(&body, "ssl-client-cert").concat()));
    }
    assert_eq!(seen[1].0, rustls::HandshakeKind::Resumed);
    assert_eq!(seen[1].1, seen[0].1, "the same certificate after resuming");
    assert!(!seen[1].1.is_empty());

    // Optional: a client without a certificate is served, and its header is not passed on.
    let seen = seen_cert(&proxy, proxy.pki.client_config_with(&[b"http/1.1"], None))
        .await
        .expect("no certificate is fine when optional");
    assert!(seen.is_empty(), "{seen:?}");

    // A certificate from a CA nobody configured is refused, optional or not.
    let mallory = proxy.pki.client_identity("mallory", false);
    let refused = seen_cert(
        &proxy,
        proxy.pki.client_config_with(&[b"http/1.1"], Some(&mallory)),
    );
    assert!(
        refused.await.is_none(),
        "an unknown CA's certificate is refused"
    );

    // HTTP/2: the same header on each stream.
    let tcp = TcpStream::connect(proxy.tls_addr()).await.unwrap();
    let config = Arc::new(proxy.pki.client_config_with(&[b"h2"], Some(&alice)));
    let tls = TlsConnector::from(config)
        .connect(ServerName::try_from("default.test").unwrap(), tcp)
        .await
        .unwrap();
    let mut send = h2(tls).await;
    for _ in 0..2 {
        let req = http::Request::get("https://default.test/echo")
            .header("ssl-client-cert", "forged")
            .body(empty())
            .unwrap();
        let (status, _, body) = read(send.send_request(req).await.unwrap()).await;
        assert_eq!(status, 200);
        let seen = echoed_header(&body, "ssl-client-cert");
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            seen[0].starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
            "{}",
            seen[0]
        );
    }
}

/// RFC 9440's `Client-Cert`: the DER as a structured-field byte sequence, for Keycloak's
/// `rfc9440` lookup and any backend that follows the RFC.
#[tokio::test]
async fn the_certificate_and_its_chain_can_go_as_rfc_9440_says() {
    let (_nodes, proxy) = start("client_cert_format = \"rfc9440\"").await;
    let forged = "client-cert: :Zm9yZ2Vk:\r\nclient-cert-chain: :Zm9yZ2Vk:\r\n";
    let carol = proxy.pki.client_identity("carol", true);
    let config = proxy.pki.client_config_with(&[b"http/1.1"], Some(&carol));
    let body = echo(&proxy, config, forged).await.expect("served");
    assert_eq!(byte_sequences(&body, "client-cert"), [carol.cert.to_vec()]);
    // No intermediates sent, so no chain; the forged one never arrives.
    assert!(
        echoed_header(&body, "client-cert-chain").is_empty(),
        "{body}"
    );

    // Issued through an intermediate the client sends: RFC 9440's Client-Cert-Chain.
    let dave = proxy.pki.client_identity_via("dave", true, true);
    let config = proxy.pki.client_config_with(&[b"http/1.1"], Some(&dave));
    let body = echo(&proxy, config, forged).await.expect("served");
    assert_eq!(byte_sequences(&body, "client-cert"), [dave.cert.to_vec()]);
    assert_eq!(
        byte_sequences(&body, "client-cert-chain"),
        [dave.chain[0].to_vec()]
    );
}

/// The values of `name` the node echoed, each read as an RFC 9440 list of byte sequences
/// (`:<base64>:, ...`) and flattened.
fn byte_sequences(body: &str, name: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let seen = echoed_header(body, name);
    assert_eq!(seen.len(), 1, "{name}: {seen:?}");
    seen[0]
        .split(", ")
        .map(|item| {
            let encoded = item.strip_prefix(':').and_then(|v| v.strip_suffix(':'));
            base64::engine::general_purpose::STANDARD
                .decode(encoded.expect("a byte sequence: `:<base64>:`"))
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_required_certificate_turns_away_clients_without_one() {
    let (_nodes, proxy) =
        start("client_auth = \"required\"\nclient_cert_header = \"x-client-cert\"").await;
    let without = seen_cert(&proxy, proxy.pki.client_config_with(&[b"http/1.1"], None));
    assert!(without.await.is_none(), "no certificate, no connection");
    let bob = proxy.pki.client_identity("bob", true);
    let config = proxy.pki.client_config_with(&[b"http/1.1"], Some(&bob));
    let body = echo(
        &proxy,
        config,
        "ssl-client-cert: forged\r\nx-client-cert: forged\r\n",
    )
    .await
    .expect("a verified client is served");
    let seen = echoed_header(&body, "x-client-cert");
    assert!(seen.len() == 1 && seen[0] != "forged", "{seen:?}");
    // The default name is not the proxy's here: the client's value passes as any header.
    assert_eq!(echoed_header(&body, "ssl-client-cert"), ["forged"]);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "sessiongate_connection_errors_total{kind=\"tls_handshake\",listener=\"tls\"}"
        ),
        Some(1.0)
    );
}

/// A reload that changes whom the listener trusts closes the connections verified against the
/// old bundle (a CA withdrawn must not live on in kept-alive connections); one that names the
/// same bundle under another path, and changes only the backends, keeps them open.
#[tokio::test]
async fn a_reload_that_changes_the_client_ca_closes_the_connections_it_verified() {
    let nodes = start_nodes(2).await;
    let extra = "[timeouts]\nclose_grace = \"50ms\"\n";
    let proxy = Harness::start_with(&listener(""), &static_backends(&[nodes[0].addr]), extra).await;
    let alice = proxy.pki.client_identity("alice", true);
    let config = proxy.pki.client_config_with(&[b"http/1.1"], Some(&alice));
    let mut tls = tls_connect(proxy.tls_addr(), "default.test", Arc::new(config)).await;
    let request = b"GET /echo HTTP/1.1\r\nHost: default.test\r\n\r\n";
    let ask = async |tls: &mut tokio_rustls::client::TlsStream<TcpStream>| {
        tokio::io::AsyncWriteExt::write_all(tls, request)
            .await
            .unwrap();
        read_response(tls).await.0
    };
    assert!(ask(&mut tls).await.contains("x-node: node-1"));

    let bundle = proxy.dir.join("trusted.crt");
    std::fs::copy(proxy.dir.join("ca.crt"), &bundle).unwrap();
    let (one, two) = (nodes[0].addr.to_string(), nodes[1].addr.to_string());
    proxy
        .reload_edited(|t| {
            t.replace("client_ca = \"ca.crt\"", "client_ca = \"trusted.crt\"")
                .replace(&one, &two)
        })
        .await;
    // Ten times close_grace: a retired connection would be closed by now.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let head = ask(&mut tls).await;
    assert!(head.contains("x-node: node-2"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("connection: close"));

    // One more CA in the bundle: alice still verifies, but the trust has changed.
    let mut text = std::fs::read_to_string(&bundle).unwrap();
    text.push_str(&std::fs::read_to_string(proxy.dir.join("a.crt")).unwrap());
    std::fs::write(&bundle, text).unwrap();
    let changes = proxy.server.reload().await.unwrap();
    assert_eq!(changes.cycled, vec!["tls"]);
    assert!(wait_closed(&mut tls).await.is_empty());
}
