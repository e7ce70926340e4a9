//! Load shedding with small limits and backends that hold requests until the test releases
//! them, so "N requests are in flight" and "M are queued" are facts the test waits for: exact
//! counts of 200s and 503s, queue timeouts, slots released on every path, sticky waits.

mod common;

use std::net::SocketAddr;

use common::*;
use http_body_util::BodyExt;
use tokio::net::TcpStream;

fn shedding(max: usize, queue: usize, timeout: &str, extra: &str) -> String {
    format!(
        "[site.shedding]\nmax_in_flight_per_backend = {max}\nqueue = {queue}\n\
         queue_timeout = \"{timeout}\"\n{extra}"
    )
}

/// `GET path` on a new connection: status, Retry-After, and the proxy's cookie if it set one
/// (else the body).
async fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> (u16, Option<String>, String) {
    let mut send = h1(TcpStream::connect(addr).await.unwrap()).await;
    let mut req = http::Request::get(path).header("host", "app.test");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let (status, headers, body) = read(send_h1(&mut send, req.body(empty()).unwrap()).await).await;
    let retry_after = headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let cookie = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("SG_NODE="));
    (status, retry_after, cookie.unwrap_or(body))
}

async fn queue_depth(proxy: &Harness) -> Option<f64> {
    metric(
        &proxy.metrics().await,
        "sessiongate_queue_depth{site=\"main\"}",
    )
}

#[tokio::test]
async fn caps_queue_and_shed_give_exact_counts() {
    let mut gate = GateBackend::start().await;
    let proxy = Harness::start(&[gate.addr], &shedding(2, 3, "1h", "")).await;
    let addr = proxy.plain_addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::spawn(async move { get(addr, "/held", None).await }));
        gate.wait_arrival().await;
    }
    let mut more = Vec::new();
    for _ in 0..6 {
        more.push(tokio::spawn(async move { get(addr, "/more", None).await }));
    }
    // Three wait; three are answered at once, without reaching the backend.
    eventually("three queued", || async {
        queue_depth(&proxy).await == Some(3.0)
    })
    .await;
    let mut shed = 0;
    eventually("three shed", || {
        shed = more.iter().filter(|t| t.is_finished()).count();
        async move { shed == 3 }
    })
    .await;
    assert!(
        gate.arrived.try_recv().is_err(),
        "nothing beyond the cap reached the backend"
    );

    gate.release(5);
    let mut statuses = Vec::new();
    for task in held.into_iter().chain(more) {
        let (status, retry_after, _) = task.await.unwrap();
        if status == 503 {
            assert_eq!(retry_after.as_deref(), Some("1"));
        }
        statuses.push(status);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 503, 503, 503]);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "sessiongate_requests_shed_total{reason=\"queue_full\",site=\"main\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "sessiongate_queue_wait_seconds_count{site=\"main\"}"
        ),
        Some(3.0)
    );
}

#[tokio::test]
async fn a_request_queued_past_the_timeout_gets_503_and_never_reaches_the_backend() {
    let mut gate = GateBackend::start().await;
    let proxy = Harness::start(&[gate.addr], &shedding(1, 1, "200ms", "")).await;
    let addr = proxy.plain_addr();
    let held = tokio::spawn(async move { get(addr, "/held", None).await });
    gate.wait_arrival().await;
    let (status, retry_after, body) = get(addr, "/late", None).await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")), "{body}");
    assert!(body.contains("overloaded"), "{body}");
    assert_eq!(
        metric(
            &proxy.metrics().await,
            "sessiongate_requests_shed_total{reason=\"queue_timeout\",site=\"main\"}"
        ),
        Some(1.0)
    );
    gate.release(1);
    assert_eq!(held.await.unwrap().0, 200);
    assert!(gate.arrived.try_recv().is_err());
}

/// A reload builds new backends, but the requests the old ones sent are still on the node: the
/// cap counts them, and the one that ends frees its slot for the new configuration's queue.
#[tokio::test]
async fn a_reload_keeps_counting_requests_in_flight() {
    let mut gate = GateBackend::start().await;
    let proxy = Harness::start(&[gate.addr], &shedding(1, 1, "1h", "")).await;
    let addr = proxy.plain_addr();
    let held = tokio::spawn(async move { get(addr, "/held", None).await });
    gate.wait_arrival().await;

    proxy
        .reload_edited(|text| text.replace("queue_timeout = \"1h\"", "queue_timeout = \"2h\""))
        .await;
    let in_flight = format!(
        "sessiongate_backend_in_flight{{backend=\"{}\",site=\"main\"}}",
        gate.addr
    );
    assert_eq!(metric(&proxy.metrics().await, &in_flight), Some(1.0));
    // The new configuration's cap is taken by the old one's request: the next request waits,
    // and the one after it finds the queue full.
    let queued = tokio::spawn(async move { get(addr, "/queued", None).await });
    eventually("queued", || async {
        queue_depth(&proxy).await == Some(1.0)
    })
    .await;
    let (status, _, body) = get(addr, "/shed", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(gate.arrived.try_recv().is_err(), "nothing beyond the cap");

    // The old request ends: its slot goes to the new configuration's waiter.
    gate.release(1);
    assert_eq!(held.await.unwrap().0, 200);
    assert_eq!(gate.wait_arrival().await, "/queued");
    gate.release(1);
    assert_eq!(queued.await.unwrap().0, 200);
    eventually("nothing in flight", || async {
        metric(&proxy.metrics().await, &in_flight) == Some(0.0)
    })
    .await;
}

/// After two quick reloads, requests wait in the queues of two generations while the slot they
/// wait for is held by a third: each freed slot goes to the oldest waiter, whichever generation
/// it waits in, and none waits for its queue timeout.
#[tokio::test]
async fn slots_freed_in_one_generation_reach_waiters_of_every_other() {
    let mut gate = GateBackend::start().await;
    let proxy = Harness::start(&[gate.addr], &shedding(1, 1, "1h", "")).await;
    let addr = proxy.plain_addr();
    let held = tokio::spawn(async move { get(addr, "/held", None).await });
    gate.wait_arrival().await;

    let mut queued = Vec::new();
    for (generation, timeout) in [(2, "2h"), (3, "3h")] {
        proxy
            .reload_edited(|text| {
                let was = format!("queue_timeout = \"{}h\"", generation - 1);
                text.replace(&was, &format!("queue_timeout = \"{timeout}\""))
            })
            .await;
        let path = format!("/queued-in-{generation}");
        queued.push(tokio::spawn(async move { get(addr, &path, None).await }));
        // The depth is the sum of both generations' queues.
        eventually("queued", || async {
            queue_depth(&proxy).await == Some(queued.len() as f64)
        })
        .await;
    }
    assert!(gate.arrived.try_recv().is_err(), "nothing beyond the cap");

    // The first generation's request ends: its slot goes to the second generation's waiter,
    // the older one. That one's end then reaches the third generation's waiter.
    gate.release(1);
    assert_eq!(held.await.unwrap().0, 200);
    assert_eq!(gate.wait_arrival().await, "/queued-in-2");
    gate.release(1);
    assert_eq!(gate.wait_arrival().await, "/queued-in-3");
    gate.release(1);
    for task in queued {
        assert_eq!(task.await.unwrap().0, 200);
    }
    assert_eq!(queue_depth(&proxy).await, Some(0.0));
}

#[tokio::test]
async fn a_client_that_leaves_the_queue_frees_its_place_at_once() {
    let mut gate = GateBackend::start().await;
    let proxy = Harness::start(&[gate.addr], &shedding(1, 1, "1h", "")).await;
    let addr = proxy.plain_addr();
    let held = tokio::spawn(async move { get(addr, "/held", None).await });
    gate.wait_arrival().await;
    let impatient = tokio::spawn(async move { get(addr, "/impatient", None).await });
    eventually("queued", || async {
        queue_depth(&proxy).await == Some(1.0)
    })
    .await;
    impatient.abort();
    eventually("left the queue", || async {
        queue_depth(&proxy).await == Some(0.0)
    })
    .await;
    // Its place is free: the next request queues rather than being shed, then is served.
    let next = tokio::spawn(async move { get(addr, "/next", None).await });
    eventually("queued", || async {
        queue_depth(&proxy).await == Some(1.0)
    })
    .await;
    gate.release(2);
    assert_eq!(held.await.unwrap().0, 200);
    assert_eq!(next.await.unwrap().0, 200);
    assert_eq!(
        gate.wait_arrival().await,
        "/next",
        "the one that left never arrived"
    );
}

#[tokio::test]
async fn slots_are_released_after_thousands_of_mixed_requests() {
    let nodes = start_nodes(2).await;
    let dead = closed_port().await;
    let proxy = Harness::start(
        &[nodes[0].addr, nodes[1].addr, dead],
        &shedding(
            3,
            4,
            "50ms",
            "[site.outlier]\nconsecutive_failures = 0\n[upstream]\nretries = 0\n",
        ),
    )
    .await;
    let addr = proxy.plain_addr();
    let mut tasks = Vec::new();
    for worker in 0..16 {
        tasks.push(tokio::spawn(async move {
            let mut counts = [0usize; 6];
            for i in 0..150 {
                let kind = (worker + i) % 4;
                let mut send = h1(TcpStream::connect(addr).await.unwrap()).await;
                let path = match kind {
                    0 => "/",
                    1 => "/bytes?n=300000",
                    2 => "/slow?ms=2",
                    _ => "/bytes?n=5000000",
                };
                let req = http::Request::get(path)
                    .header("host", "app.test")
                    .body(empty())
                    .unwrap();
                let resp = send_h1(&mut send, req).await;
                let status = resp.status().as_u16();
                counts[match status {
                    200 => 0,
                    502 => 1,
                    503 => 2,
                    _ => 3,
                }] += 1;
                if kind == 3 && status == 200 {
                    // The client reads a little of a large body and goes away.
                    let mut body = resp.into_body();
                    let _ = body.frame().await;
                    counts[4] += 1;
                } else {
                    let _ = resp.into_body().collect().await;
                }
            }
            counts
        }));
    }
    let mut total = [0usize; 6];
    for t in tasks {
        let counts = t.await.unwrap();
        for (a, b) in total.iter_mut().zip(counts) {
            *a += b;
        }
    }
    assert_eq!(total[0] + total[1] + total[2], 16 * 150, "{total:?}");
    assert_eq!(total[3], 0, "only 200, 502 and 503: {total:?}");
    assert!(
        total[1] > 0 && total[4] > 0,
        "errors and abandoned bodies happened: {total:?}"
    );
    eventually("every slot released", || async {
        let metrics = proxy.metrics().await;
        let in_flight: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("sessiongate_backend_in_flight{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        in_flight == 0.0 && queue_depth(&proxy).await == Some(0.0)
    })
    .await;
    // And every slot is usable again: round robin visits each backend once in three requests
    // (the dead one answers 502, never 503).
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get(addr, "/", None).await.0);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 502]);
}

#[tokio::test]
async fn a_sticky_request_waits_for_its_own_backend_or_is_redispatched() {
    for waits in [true, false] {
        let mut gate = GateBackend::start().await;
        let node = sessiongate::demo::DemoNode::start("node-1", localhost())
            .await
            .unwrap();
        let extra = format!(
            "[balance.sticky]\nmode = \"cookie\"\nsecret = \"0123456789abcdef0123456789\"\n{}",
            shedding(
                1,
                4,
                "1h",
                if waits {
                    ""
                } else {
                    "sticky_when_full = \"redispatch\"\n"
                }
            )
        );
        let proxy = Harness::start(&[gate.addr, node.addr], &extra).await;
        let addr = proxy.plain_addr();
        // A session pinned to the gated backend: round robin alternates, so one of two lands there.
        let pinned = loop {
            let mut first = tokio::spawn(async move { get(addr, "/login", None).await });
            tokio::select! {
                _ = gate.wait_arrival() => {
                    gate.release(1);
                    break first.await.unwrap().2;
                }
                done = &mut first => assert_eq!(done.unwrap().0, 200),
            }
        };
        assert!(pinned.starts_with("SG_NODE="), "{pinned}");

        // Its backend is busy with one request of the session (the cap).
        let cookie = pinned.clone();
        let busy = tokio::spawn(async move { get(addr, "/busy", Some(&cookie)).await });
        assert_eq!(gate.wait_arrival().await, "/busy");
        let cookie = pinned.clone();
        let again = tokio::spawn(async move { get(addr, "/again", Some(&cookie)).await });
        if waits {
            eventually("the session waits", || async {
                queue_depth(&proxy).await == Some(1.0)
            })
            .await;
            // Others are not held up: unpinned requests go to the free backend.
            assert_eq!(get(addr, "/", None).await.0, 200);
            gate.release(1);
            assert_eq!(
                gate.wait_arrival().await,
                "/again",
                "served by its own backend"
            );
            gate.release(1);
            let (status, _, _) = again.await.unwrap();
            assert_eq!(status, 200);
        } else {
            let (status, _, cookie) = again.await.unwrap();
            assert_eq!(status, 200, "redispatched to the free backend at once");
            assert!(
                cookie.starts_with("SG_NODE=") && cookie != pinned,
                "re-pinned: {cookie}"
            );
            gate.release(1);
        }
        assert_eq!(busy.await.unwrap().0, 200);
    }
}
