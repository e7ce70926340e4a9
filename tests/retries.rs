//! Retries and passive health through the proxy: a refused connection is retried on another
//! backend with the request body intact; a connection closed before the response is retried
//! only for idempotent methods; a backend failing requests in a row is ejected, one answering
//! 503 is not.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use tokio::net::TcpStream;

/// A backend that answers `reply` (`None`: closes without answering) and closes.
async fn scripted_backend(reply: Option<&'static str>) -> SocketAddr {
    RawBackend::start(move |_| match reply {
        Some(status) => RawReply::close(format!(
            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )),
        None => RawReply::close(""),
    })
    .await
    .addr
}

async fn send(proxy: SocketAddr, method: &str, path: &str, body: &'static str) -> (u16, String) {
    let mut send = h1(TcpStream::connect(proxy).await.unwrap()).await;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "app.test")
        .body(full(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let (status, headers, text) = read(send_h1(&mut send, req).await).await;
    let node = headers
        .get("x-node")
        .map_or("-".into(), |v| v.to_str().unwrap().to_string());
    assert!(status != 200 || node != "-", "{text}");
    (status, text)
}

#[tokio::test]
async fn a_refused_connection_is_retried_elsewhere_with_the_body_and_the_backend_ejected() {
    let dead = closed_port().await;
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let proxy = Harness::start(&[dead, node.addr], "").await;
    for _ in 0..12 {
        // Not idempotent, with a body: still retried, because nothing reached the dead backend.
        let (status, text) = send(proxy.plain_addr(), "POST", "/upload", "hello").await;
        assert_eq!((status, text.as_str()), (200, "5\n"));
    }
    let metrics = proxy.metrics().await;
    assert!(
        metric(
            &metrics,
            "sessiongate_upstream_retries_total{kind=\"connect_refused\",site=\"main\"}"
        )
        .unwrap()
            >= 5.0
    );
    let ejected =
        format!("sessiongate_backend_ejections_total{{backend=\"{dead}\",site=\"main\"}}");
    assert_eq!(metric(&metrics, &ejected), Some(1.0));
    let ejections: Vec<(String, bool)> = proxy
        .backends()
        .await
        .iter()
        .map(|b| (b["id"].as_str().unwrap().to_string(), b["ejected"] == true))
        .collect();
    let expected = [(dead.to_string(), true), (node.addr.to_string(), false)];
    assert_eq!(ejections, expected);
    // Ejected: the next requests do not even try it.
    let refused =
        format!("sessiongate_upstream_errors_total{{backend=\"{dead}\",kind=\"connect_refused\"}}");
    let before = metric(&metrics, &refused).unwrap();
    for _ in 0..10 {
        assert_eq!(send(proxy.plain_addr(), "GET", "/", "").await.0, 200);
    }
    assert_eq!(metric(&proxy.metrics().await, &refused), Some(before));
}

#[tokio::test]
async fn after_a_closed_connection_only_idempotent_requests_are_retried() {
    let slammer = scripted_backend(None).await;
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let proxy = Harness::start(
        &[slammer, node.addr],
        "[site.outlier]\nconsecutive_failures = 0\n",
    )
    .await;
    for _ in 0..10 {
        assert_eq!(send(proxy.plain_addr(), "GET", "/", "").await.0, 200);
        assert_eq!(send(proxy.plain_addr(), "PUT", "/upload", "").await.0, 200);
    }
    // Round robin alternates: two of four POSTs meet the backend that closes on them, and
    // a POST that may have been processed is not sent again.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(proxy.plain_addr(), "POST", "/upload", "").await.0);
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 502, 502]);
    assert!(
        metric(
            &proxy.metrics().await,
            "sessiongate_upstream_retries_total{kind=\"closed\",site=\"main\"}"
        )
        .unwrap()
            >= 10.0
    );
}

#[tokio::test]
async fn five_hundreds_in_a_row_eject_a_backend_but_503_means_busy() {
    for (reply, ejected) in [
        ("500 Internal Server Error", true),
        ("503 Service Unavailable", false),
    ] {
        let failing = scripted_backend(Some(reply)).await;
        let node = sessiongate::demo::DemoNode::start("node-1", localhost())
            .await
            .unwrap();
        let proxy = Harness::start(
            &[failing, node.addr],
            "[site.outlier]\nconsecutive_failures = 3\nbase_ejection = \"1h\"\nmax_ejection = \"1h\"\n",
        )
        .await;
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(send(proxy.plain_addr(), "GET", "/", "").await.0);
        }
        let tail_failures = statuses[10..].iter().filter(|s| **s != 200).count();
        let series =
            format!("sessiongate_backend_ejections_total{{backend=\"{failing}\",site=\"main\"}}");
        let count = metric(&proxy.metrics().await, &series);
        if ejected {
            assert_eq!(count, Some(1.0), "{statuses:?}");
            assert_eq!(tail_failures, 0, "ejected: {statuses:?}");
            assert_eq!(statuses.iter().filter(|s| **s == 500).count(), 3);
        } else {
            assert_eq!(count, None, "a busy backend is not ejected");
            assert_eq!(tail_failures, 5, "it keeps its share: {statuses:?}");
        }
    }
}
