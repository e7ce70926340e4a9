//! PROXY protocol on listeners: v1 and v2 (over TLS too) set the client address the backend
//! sees; a peer outside `proxy_protocol_from` is refused, as is a connection without a header.

mod common;

use common::*;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn listeners(from: &str) -> String {
    format!(
        "[[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nproxy_protocol = true\n\
         proxy_protocol_from = [\"{from}\"]\n\
         [[listener]]\nname = \"tls\"\nlisten = \"127.0.0.1:0\"\nproxy_protocol = true\n\
         proxy_protocol_from = [\"{from}\"]\ntls = {{ cert = \"default.crt\", key = \"default.key\" }}\n"
    )
}

fn v2_header(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0, 12]);
    h.extend(client);
    h.extend([127, 0, 0, 1]);
    h.extend(port.to_be_bytes());
    h.extend(443u16.to_be_bytes());
    h
}

#[tokio::test]
async fn v1_and_v2_headers_set_the_client_address() {
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let proxy = Harness::start_with(
        &listeners("127.0.0.0/8"),
        &format!("{{ static = [\"{}\"] }}", node.addr),
        "",
    )
    .await;

    let answer = raw(
        proxy.plain_addr(),
        b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 80\r\n\
          GET /echo HTTP/1.1\r\nHost: sso.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        echoed_header(&answer, "x-forwarded-for"),
        vec!["203.0.113.7"]
    );

    // v2, then TLS and HTTP/2 on the same connection.
    let mut tcp = TcpStream::connect(proxy.tls_addr()).await.unwrap();
    tcp.write_all(&v2_header([198, 51, 100, 9], 40000))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(proxy.pki.client_config(&[b"h2"]))
        .connect(ServerName::try_from("default.test").unwrap(), tcp)
        .await
        .unwrap();
    let mut send = h2(tls).await;
    let req = http::Request::get("https://sso.test/echo")
        .body(empty())
        .unwrap();
    let (status, _, body) = read(send.send_request(req).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(
        echoed_header(&body, "x-forwarded-for"),
        vec!["198.51.100.9"]
    );
}

#[tokio::test]
async fn peers_outside_the_trusted_networks_and_headerless_connections_are_refused() {
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let proxy = Harness::start_with(
        &listeners("10.0.0.0/8"),
        &format!("{{ static = [\"{}\"] }}", node.addr),
        "",
    )
    .await;
    // 127.0.0.1 is not a trusted balancer: whatever it claims, it is not served.
    let answer = raw(
        proxy.plain_addr(),
        b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(answer, "");
    assert!(node.seen().is_empty());

    let trusting = Harness::start_with(
        &listeners("127.0.0.0/8"),
        &format!("{{ static = [\"{}\"] }}", node.addr),
        "",
    )
    .await;
    let answer = raw(trusting.plain_addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(answer, "", "no header, no service");
    assert!(node.seen().is_empty());
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "sessiongate_connection_errors_total{kind=\"proxy_protocol_untrusted\",listener=\"plain\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &trusting.metrics().await,
            "sessiongate_connection_errors_total{kind=\"proxy_protocol\",listener=\"plain\"}"
        ),
        Some(1.0)
    );
}
