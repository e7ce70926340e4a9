//! The admin listener: metrics in Prometheus text, liveness, readiness, nothing else.

mod common;

use common::*;

#[tokio::test]
async fn admin_serves_metrics_live_and_ready_and_nothing_else() {
    let nodes = start_nodes(2).await;
    let proxy = Harness::start(&[nodes[0].addr, nodes[1].addr], "").await;
    let admin = proxy.server.admin_addr();
    assert!(admin.ip().is_loopback());

    for _ in 0..4 {
        assert_eq!(get_plain(proxy.plain_addr(), "/").await.0, 200);
    }
    let (status, headers, text) = get_plain(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    for node in &nodes {
        let series = format!(
            "sessiongate_requests_total{{backend=\"{}\",listener=\"plain\",status_class=\"2xx\"}}",
            node.addr
        );
        assert_eq!(metric(&text, &series), Some(2.0), "{series} in\n{text}");
    }
    for expected in [
        "sessiongate_request_duration_seconds_count{listener=\"plain\"} 4",
        "sessiongate_connections_total{listener=\"plain\"} 4",
        "sessiongate_open_connections{listener=\"plain\"}",
        "sessiongate_backends{site=\"main\",state=\"active\"} 2",
        "sessiongate_ready 1",
        "sessiongate_tls_certificate_expiry_timestamp_seconds{certificate=",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }

    assert_eq!(get_plain(admin, "/live").await.0, 200);
    assert_eq!(get_plain(admin, "/ready").await.0, 200);
    assert_eq!(get_plain(admin, "/anything-else").await.0, 404);
    let response = raw(
        admin,
        b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");

    // The proxy's own metrics never appear on a public listener.
    let (_, _, body) = get_plain(proxy.plain_addr(), "/metrics").await;
    assert!(!body.contains("sessiongate_"), "{body}");
}
