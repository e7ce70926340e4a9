//! Graceful shutdown: stop accepting, let what is in flight finish, tell HTTP/2 clients with
//! GOAWAY, report not-ready on the admin listener meanwhile.

mod common;

use common::*;
use sessiongate::Drained;

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
