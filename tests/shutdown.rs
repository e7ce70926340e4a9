//! Graceful shutdown: stop accepting, let what is in flight finish, tell HTTP/2 clients with
//! GOAWAY, report not-ready on the admin listener meanwhile.

mod common;

use common::*;
use sessiongate::Drained;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish_and_refuses_new_connections() {
    let mut gate = GateBackend::start().await;
    let proxy = Harness::start(&[gate.addr], "").await;
    let plain = proxy.plain_addr();
    let admin = proxy.server.admin_addr();

    // An idle HTTP/2 client: it must be told to go away, not cut off.
    let (mut idle_h2, h2_driver) = h2_watched(proxy.tls("default.test", &[b"h2"]).await).await;
    let warmup = tokio::spawn(async move {
        let req = http::Request::get("https://default.test/warmup")
            .body(empty())
            .unwrap();
        read(idle_h2.send_request(req).await.unwrap()).await.0
    });
    assert_eq!(gate.wait_arrival().await, "/warmup");
    gate.release(1);
    assert_eq!(warmup.await.unwrap(), 200);

    // A slow request in flight when the shutdown starts.
    let in_flight = tokio::spawn(async move { get_plain(plain, "/slow-login").await });
    assert_eq!(gate.wait_arrival().await, "/slow-login");

    let shutdown = tokio::spawn(proxy.server.shutdown());

    // Readiness goes to 503 at once, while the admin listener stays up for the drain.
    let mut ready = 200;
    for _ in 0..200 {
        ready = get_plain(admin, "/ready").await.0;
        if ready == 503 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(ready, 503);

    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(plain).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener still accepts during the drain");

    // The idle HTTP/2 connection ends cleanly (GOAWAY), without waiting for the drain.
    let h2_end = tokio::time::timeout(PATIENCE, h2_driver)
        .await
        .expect("GOAWAY closes the idle h2 connection");
    assert!(h2_end.unwrap().is_ok());
    assert!(
        !shutdown.is_finished(),
        "the drain waits for the request in flight"
    );

    // The request in flight completes with its real answer, and then the drain ends.
    gate.release(1);
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "released\n"));
    let drained = tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("drain ends")
        .unwrap();
    assert_eq!(drained, Drained::Clean);
}

/// A client that sent a request on a kept-alive connection as the shutdown began (here: after
/// it began) gets it answered, with `Connection: close`, instead of a reset: the connection was
/// idle, and idle connections wait `close_grace` for one more request before they close.
#[tokio::test]
async fn a_request_on_a_connection_idle_at_shutdown_is_answered_then_it_closes() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "[timeouts]\nclose_grace = \"20s\"\n").await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.plain_addr())
        .await
        .unwrap();
    let request = b"GET /echo HTTP/1.1\r\nHost: app.test\r\n\r\n";
    tcp.write_all(request).await.unwrap();
    let (head, _) = read_response(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );

    let shutdown = tokio::spawn(proxy.server.shutdown());
    // Long enough for the idle connection to see the shutdown: it used to close at once, and
    // this request then met a closed socket.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    tcp.write_all(request).await.unwrap();
    let (head, body) = read_response(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(body.contains("GET /echo"), "{body}");
    assert!(wait_closed(&mut tcp).await.is_empty());
    let drained = tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("the drain ends once the last connection closed")
        .unwrap();
    assert_eq!(drained, Drained::Clean);
}

#[tokio::test]
async fn the_drain_deadline_bounds_the_wait() {
    let mut gate = GateBackend::start().await;
    let proxy = Harness::start(&[gate.addr], "[timeouts]\nshutdown_drain = \"300ms\"\n").await;
    let plain = proxy.plain_addr();
    let _stuck = tokio::spawn(async move { get_plain(plain, "/never-answers").await });
    gate.wait_arrival().await;
    let drained = tokio::time::timeout(PATIENCE, proxy.server.shutdown())
        .await
        .expect("deadline honoured");
    assert_eq!(drained, Drained::DeadlinePassed);
}
