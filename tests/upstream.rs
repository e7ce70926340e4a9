//! The proxy's side towards the backends: pooled kept-alive connections, and TLS to backends
//! (re-encryption) verified against a CA bundle and a configured server name.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn upstream_connections_are_pooled_and_kept_alive() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    // Many clients, each on its own connection, one after the other: the backend sees one
    // connection, reused for all of them.
    for _ in 0..20 {
        assert_eq!(get_plain(proxy.plain_addr(), "/").await.0, 200);
    }
    let (_, _, stats) = get_plain(proxy.plain_addr(), "/stats").await;
    assert_eq!(stats, "connections: 1\n");
    // HTTP/2 clients share the same pool.
    let mut send = h2(proxy.tls("default.test", &[b"h2"]).await).await;
    for _ in 0..10 {
        let req = http::Request::get("https://default.test/")
            .body(empty())
            .unwrap();
        assert_eq!(read(send.send_request(req).await.unwrap()).await.0, 200);
    }
    let (_, _, stats) = get_plain(proxy.plain_addr(), "/stats").await;
    assert_eq!(stats, "connections: 1\n");
}

/// A connection goes back to the pool when its response has been read to the end, empty ones
/// (HEAD) included; one whose response the client abandoned mid-body is never lent again (it
/// would hand the next request the rest of that body).
#[tokio::test]
async fn empty_responses_keep_the_connection_and_abandoned_ones_do_not() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    for _ in 0..5 {
        let mut send = h1(TcpStream::connect(proxy.plain_addr()).await.unwrap()).await;
        let req = http::Request::head("/")
            .header("host", "app.test")
            .body(empty())
            .unwrap();
        let (status, _, body) = read(send_h1(&mut send, req).await).await;
        assert_eq!((status, body.as_str()), (200, ""));
    }
    let (_, _, stats) = get_plain(proxy.plain_addr(), "/stats").await;
    assert_eq!(
        stats, "connections: 1\n",
        "HEAD responses kept the connection"
    );

    // 5 MB asked for, a few bytes read, then the client leaves.
    let mut tcp = TcpStream::connect(proxy.plain_addr()).await.unwrap();
    tcp.write_all(b"GET /bytes?n=5000000 HTTP/1.1\r\nhost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    let n = tokio::time::timeout(PATIENCE, tcp.read(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    drop(tcp);
    for _ in 0..3 {
        let (status, _, body) = get_plain(proxy.plain_addr(), "/echo").await;
        assert_eq!(status, 200);
        assert!(body.contains("GET /echo HTTP/1.1"), "{body}");
    }
    let (_, _, stats) = get_plain(proxy.plain_addr(), "/stats").await;
    assert_eq!(
        stats, "connections: 2\n",
        "the abandoned connection was replaced once"
    );
}

/// A pooled connection idle past `pool_idle_timeout` is closed by the proxy (so it closes
/// before the backend's own keep-alive timeout does), even when no request comes to notice.
#[tokio::test]
async fn idle_backend_connections_are_closed_after_the_idle_timeout() {
    let listener = tokio::net::TcpListener::bind(localhost()).await.unwrap();
    let backend = listener.local_addr().unwrap();
    let proxy = Harness::start(&[backend], "[upstream]\npool_idle_timeout = \"300ms\"\n").await;
    let client = tokio::spawn(async move { get_plain(proxy.plain_addr(), "/").await });
    let (mut conn, _) = listener.accept().await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(conn.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await
        .unwrap();
    let (status, _, body) = client.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
    // Kept alive, then closed by the proxy: end of file, not another request.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "expected the proxy to close the idle connection: {read:?}"
    );
}

/// What sessiongate offers a TLS backend, read from its ClientHello: the post-quantum hybrid,
/// then X25519. rustls 0.23.48's default order puts P-384 ahead of X25519, which a backend that
/// follows the client's order (as rustls and OpenSSL servers do) would choose: the slowest of
/// the curves, for every new backend connection.
#[tokio::test]
async fn tls_to_backends_offers_the_post_quantum_hybrid_then_x25519() {
    use rustls::NamedGroup;
    let listener = tokio::net::TcpListener::bind(localhost()).await.unwrap();
    let backend = listener.local_addr().unwrap();
    let hello = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut acceptor = rustls::server::Acceptor::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a whole ClientHello");
            acceptor.read_tls(&mut &buf[..n]).unwrap();
            if let Some(accepted) = acceptor.accept().map_err(|(e, _)| e).unwrap() {
                return accepted.client_hello().named_groups().unwrap().to_vec();
            }
        }
    });
    let proxy = Harness::start(
        &[backend],
        "tls = { server_name = \"a.test\", ca = \"ca.crt\" }\n",
    )
    .await;
    let (status, _, _) = get_plain(proxy.plain_addr(), "/").await;
    assert_eq!(status, 502);
    let groups = tokio::time::timeout(PATIENCE, hello)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        groups,
        vec![
            NamedGroup::X25519MLKEM768,
            NamedGroup::X25519,
            NamedGroup::secp256r1,
            NamedGroup::secp384r1
        ]
    );
}

#[tokio::test]
async fn tls_to_backends_verifies_the_configured_name() {
    // The TLS backend is a second sessiongate terminating TLS in front of a demo node.
    let nodes = start_nodes(1).await;
    let backend = Harness::start(&[nodes[0].addr], "").await;
    let ca = backend.dir.join("ca.crt");
    let target = backend.tls_addr();

    let good = Harness::start(
        &[target],
        &format!(
            "tls = {{ ca = \"{}\", server_name = \"a.test\" }}\n",
            ca.display()
        ),
    )
    .await;
    let (status, headers, body) = get_plain(good.plain_addr(), "/echo").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-node"], "node-1");
    // The inner proxy saw the outer one as its client, over TLS.
    assert_eq!(echoed_header(&body, "x-forwarded-proto"), vec!["https"]);

    // A name the backend's certificate does not carry: the connection is refused, 502.
    let wrong = Harness::start(
        &[target],
        &format!(
            "tls = {{ ca = \"{}\", server_name = \"c.test\" }}\n",
            ca.display()
        ),
    )
    .await;
    let (status, _, _) = get_plain(wrong.plain_addr(), "/").await;
    assert_eq!(status, 502);
    let metrics = wrong.metrics().await;
    let series = format!("sessiongate_upstream_errors_total{{backend=\"{target}\",kind=\"tls\"}}");
    assert_eq!(metric(&metrics, &series), Some(1.0), "{metrics}");

    // A CA that did not sign the backend's certificate: refused as well.
    let stranger = Harness::start(
        &[target],
        "tls = { server_name = \"a.test\", ca = \"ca.crt\" }\n",
    )
    .await;
    assert_eq!(get_plain(stranger.plain_addr(), "/").await.0, 502);
}
