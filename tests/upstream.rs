//! The proxy's side towards the backends: pooled kept-alive connections, and TLS to backends
//! (re-encryption) verified against a CA bundle and a configured server name.

mod common;

use common::*;

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
