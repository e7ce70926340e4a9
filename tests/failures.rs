//! Every failure gets a clear answer (or a clean close where no answer is possible), and the
//! proxy keeps serving everyone else.

mod common;

use common::*;
use http_body_util::BodyExt;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_backend_that_refuses_connections_gives_502() {
    let dead = closed_port().await;
    let proxy = Harness::start(&[dead], "").await;
    let (status, headers, body) = get_plain(proxy.plain_addr(), "/").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body, "502 Bad Gateway: backend unreachable\n");
    assert!(
        !body.contains(&dead.port().to_string()),
        "the body must not reveal the backend"
    );
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    let metrics = proxy.metrics().await;
    let refused =
        format!("sessiongate_upstream_errors_total{{backend=\"{dead}\",kind=\"connect_refused\"}}");
    assert_eq!(metric(&metrics, &refused), Some(1.0), "{metrics}");
    let answered = format!(
        "sessiongate_requests_total{{backend=\"{dead}\",listener=\"plain\",status_class=\"5xx\"}}"
    );
    assert_eq!(metric(&metrics, &answered), Some(1.0), "{metrics}");
}

#[tokio::test]
async fn a_backend_that_stalls_gives_504_and_others_are_still_served() {
    let mut gate = GateBackend::start().await;
    let proxy = Harness::start(&[gate.addr], "[timeouts]\nupstream_response = \"300ms\"\n").await;
    let stalled = tokio::spawn({
        let addr = proxy.plain_addr();
        async move { get_plain(addr, "/stalls").await }
    });
    assert_eq!(gate.wait_arrival().await, "/stalls");
    let (status, _, body) = stalled.await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert_eq!(
        body,
        "504 Gateway Timeout: backend did not answer in time\n"
    );
    let metrics = proxy.metrics().await;
    let timeouts = format!(
        "sessiongate_upstream_errors_total{{backend=\"{}\",kind=\"response_timeout\"}}",
        gate.addr
    );
    assert_eq!(metric(&metrics, &timeouts), Some(1.0), "{metrics}");

    // The proxy itself is fine: the next request that the backend answers passes.
    let next = tokio::spawn({
        let addr = proxy.plain_addr();
        async move { get_plain(addr, "/next").await }
    });
    // One permit for this request, one spare in case the stalled handler still waits.
    gate.release(2);
    assert_eq!(gate.wait_arrival().await, "/next");
    assert_eq!(next.await.unwrap().0, 200);
}

#[tokio::test]
async fn a_silent_tls_client_is_closed_after_the_handshake_timeout() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "[timeouts]\ntls_handshake = \"200ms\"\n").await;
    let mut silent = TcpStream::connect(proxy.tls_addr()).await.unwrap();
    let got = wait_closed(&mut silent).await;
    assert!(
        got.is_empty(),
        "nothing is sent to a client that never said hello"
    );
    // Meanwhile a real client is served.
    let mut send = h2(proxy.tls("default.test", &[b"h2"]).await).await;
    let req = http::Request::get("https://default.test/")
        .body(empty())
        .unwrap();
    assert_eq!(read(send.send_request(req).await.unwrap()).await.0, 200);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "sessiongate_connection_errors_total{kind=\"tls_handshake_timeout\",listener=\"tls\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
}

/// Plain HTTP to a TLS listener gets a readable 400 and a close, not a TLS alert; a TLS
/// client that sends garbage still gets the alert; the listener serves on.
#[tokio::test]
async fn plain_http_to_a_tls_listener_gets_a_readable_400() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    for request in [
        &b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"[..],
        b"POST /realms/x HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
        // HTTP/2 with prior knowledge: its preface is an HTTP/1.1-shaped line.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        // One byte at a time: the first is enough.
        b"G",
    ] {
        let mut client = TcpStream::connect(proxy.tls_addr()).await.unwrap();
        client.write_all(request).await.unwrap();
        let got = String::from_utf8(wait_closed(&mut client).await).unwrap();
        assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
        assert!(got.contains("this port speaks HTTPS"), "{got}");
    }
    // A request longer than the first read: what follows the answer is read and dropped, so
    // the close is a FIN, not a reset that would cut the answer off (RFC 9112 §9.6). Closed
    // with its bytes unread, the connection would refuse the rest of the upload.
    let mut client = TcpStream::connect(proxy.tls_addr()).await.unwrap();
    let head = b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 60000\r\n\r\n";
    client.write_all(head).await.unwrap();
    client.write_all(&[b'x'; 30_000]).await.unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"use https://.\r\n") {
        let mut chunk = [0u8; 1024];
        let n = client.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed before the answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    client
        .write_all(&[b'x'; 30_000])
        .await
        .expect("the rest of the upload is taken");
    client.shutdown().await.unwrap();
    assert_eq!(client.read(&mut [0u8; 16]).await.unwrap(), 0, "then a FIN");

    // Neither TLS nor HTTP: closed, with no HTTP answer.
    let mut client = TcpStream::connect(proxy.tls_addr()).await.unwrap();
    client
        .write_all(&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    let got = wait_closed(&mut client).await;
    assert!(!got.starts_with(b"HTTP"), "{got:?}");
    // A TLS client whose handshake fails still gets rustls' alert: here, no protocol in common.
    let tcp = TcpStream::connect(proxy.tls_addr()).await.unwrap();
    let refused = tokio_rustls::TlsConnector::from(proxy.pki.client_config(&[b"h3"]))
        .connect("default.test".try_into().unwrap(), tcp)
        .await
        .expect_err("no protocol in common");
    assert!(
        refused.to_string().contains("NoApplicationProtocol"),
        "{refused}"
    );

    let mut send = h1(proxy.tls("default.test", &[b"http/1.1"]).await).await;
    let req = http::Request::get("/").header("host", "default.test");
    let (status, _, _) = read(send_h1(&mut send, req.body(empty()).unwrap()).await).await;
    assert_eq!(status, 200);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "sessiongate_connection_errors_total{kind=\"plain_http_on_tls\",listener=\"tls\"}"
        ),
        Some(5.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn slow_request_headers_are_cut_off_while_others_are_served() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "[timeouts]\nrequest_header = \"300ms\"\n").await;
    let mut slow = TcpStream::connect(proxy.plain_addr()).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: ")
        .await
        .unwrap();
    let (status, _, _) = get_plain(proxy.plain_addr(), "/").await;
    assert_eq!(status, 200);
    let got = wait_closed(&mut slow).await;
    assert!(
        got.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(String::from_utf8_lossy(&got).contains("connection: close"));
}

/// The response timeout runs from each request's own start, on a backend connection reused
/// from an earlier one whose deadline comes first (that timer is left to fire early and is
/// set again then: `upstream/conn.rs`). A lower bound only: a timer never fires early.
#[tokio::test]
async fn a_reused_backend_connection_times_out_from_its_own_request() {
    let backend = RawBackend::start(|head| {
        if head.starts_with("GET /first") {
            RawReply::keep("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        } else {
            RawReply::keep("") // holds the request unanswered
        }
    })
    .await;
    let proxy = Harness::start(
        &[backend.addr],
        "[timeouts]\nupstream_response = \"800ms\"\n",
    )
    .await;
    assert_eq!(get_plain(proxy.plain_addr(), "/first").await.0, 200);
    // The first request's deadline is 800 ms after it; this one starts 500 ms later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    let (status, _, body) = get_plain(proxy.plain_addr(), "/stalls").await;
    assert_eq!(status, 504, "{body}");
    assert!(
        sent.elapsed() >= Duration::from_millis(800),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(
        backend.connections(),
        1,
        "the second request reused the connection"
    );
}

/// Likewise on a kept-alive client connection, where one timer serves every deadline and a
/// deadline set by an earlier wait may come first: `idle` runs from the end of the last
/// request, and `request_header` from the first byte of the head.
#[tokio::test]
async fn deadlines_on_a_kept_alive_connection_run_from_their_own_start() {
    let nodes = start_nodes(1).await;
    let timeouts = "[timeouts]\nidle = \"800ms\"\nrequest_header = \"800ms\"\n";
    let proxy = Harness::start(&[nodes[0].addr], timeouts).await;
    let request = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n";

    let mut tcp = TcpStream::connect(proxy.plain_addr()).await.unwrap();
    tcp.write_all(request).await.unwrap();
    assert!(read_response(&mut tcp).await.0.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    tcp.write_all(request).await.unwrap();
    assert!(read_response(&mut tcp).await.0.starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    assert!(wait_closed(&mut tcp).await.is_empty());
    assert!(
        answered.elapsed() >= Duration::from_millis(800),
        "{:?}",
        answered.elapsed()
    );

    // A head begun soon after an answer, while the timer is set for a moment after it.
    let mut tcp = TcpStream::connect(proxy.plain_addr()).await.unwrap();
    tcp.write_all(request).await.unwrap();
    assert!(read_response(&mut tcp).await.0.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: app").await.unwrap();
    let begun = Instant::now();
    let got = wait_closed(&mut tcp).await;
    assert!(
        got.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        begun.elapsed() >= Duration::from_millis(800),
        "{:?}",
        begun.elapsed()
    );
}

#[tokio::test]
async fn request_header_does_not_cut_an_idle_keep_alive_connection() {
    // The head deadline runs from a head's first byte; between requests only `idle` applies
    // (nginx's keepalive_timeout, HAProxy's timeout http-keep-alive).
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(
        &[nodes[0].addr],
        "[timeouts]\nrequest_header = \"200ms\"\nidle = \"30s\"\n",
    )
    .await;
    let mut tcp = TcpStream::connect(proxy.plain_addr()).await.unwrap();
    for _ in 0..2 {
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        let (head, _) = read_response(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        // Longer than request_header: the connection must still be open after it.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "[timeouts]\nidle = \"300ms\"\n").await;
    // HTTP/2: after one request, the connection idles and the proxy closes it with GOAWAY.
    let (mut send, driver) = h2_watched(proxy.tls("default.test", &[b"h2"]).await).await;
    let req = http::Request::get("https://default.test/")
        .body(empty())
        .unwrap();
    assert_eq!(read(send.send_request(req).await.unwrap()).await.0, 200);
    let ended = tokio::time::timeout(PATIENCE, driver)
        .await
        .expect("idle HTTP/2 connection closed");
    assert!(
        ended.unwrap().is_ok(),
        "closed gracefully (GOAWAY), not reset"
    );

    // HTTP/1.1: same, the connection ends after one idle period.
    let mut tcp = TcpStream::connect(proxy.plain_addr()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let got = wait_closed(&mut tcp).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// A backend that stops in the middle of a body, under an HTTP/2 client: once nothing has
/// moved for the idle timeout, the stream is reset (a status can no longer be sent) and the
/// backend's connection is closed, as an HTTP/1.1 client's connection would be; the client's
/// connection serves on.
#[tokio::test]
async fn a_backend_that_stops_mid_body_has_the_http2_stream_reset() {
    let stops = RawBackend::start(|head| {
        if head.starts_with("GET /stops") {
            RawReply::keep("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nthe first bytes")
        } else {
            RawReply::keep("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }
    })
    .await;
    let proxy = Harness::start(&[stops.addr], "[timeouts]\nidle = \"300ms\"\n").await;
    let mut send = h2(proxy.tls("default.test", &[b"h2"]).await).await;
    let req = http::Request::get("https://default.test/stops")
        .body(empty())
        .unwrap();
    let response = send.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut got = Vec::new();
    let error = loop {
        match tokio::time::timeout(PATIENCE, body.frame()).await {
            Ok(Some(Ok(frame))) => got.extend_from_slice(frame.data_ref().unwrap()),
            Ok(Some(Err(e))) => break e,
            Ok(None) => panic!("the body ended, truncated, as if complete"),
            Err(_) => panic!("the stream was not reset within {PATIENCE:?}"),
        }
    };
    assert_eq!(got, b"the first bytes");
    let reason = std::error::Error::source(&error)
        .and_then(|e| e.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason);
    assert_eq!(reason, Some(h2::Reason::CANCEL), "{error:?}");
    let req = http::Request::get("https://default.test/next")
        .body(empty())
        .unwrap();
    let (status, _, text) = read(send.send_request(req).await.unwrap()).await;
    assert_eq!((status, text.as_str()), (200, "ok"));
    assert_eq!(
        stops.connections(),
        2,
        "the stalled connection was not reused"
    );
}
