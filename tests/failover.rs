//! Multi-site failover against two sites of real demo nodes whose `/lb-check` the tests flip:
//! failover, manual and automatic failback, switchover and force-down through the admin API
//! (with its bearer token), a shedding site that stays active, and the proxy's own /lb-check.

mod common;

use common::*;
use sessiongate::demo::DemoNode;
use tokio::net::TcpStream;

const TOKEN: &str = "an-admin-token-of-32-characters!";

/// Site `main` (node a-1) preferred, site `b` (node b-1) second, both probed every 50 ms.
async fn two_sites(extra: &str) -> (Harness, DemoNode, DemoNode) {
    let a = DemoNode::start("a-1", localhost()).await.unwrap();
    let b = DemoNode::start("b-1", localhost()).await.unwrap();
    let probe = "interval = \"50ms\"\ntimeout = \"50ms\"\nfall = 2\nrise = 2\n";
    let proxy = Harness::start_full(
        &format!("token = \"{TOKEN}\""),
        PLAIN_LISTENER,
        &format!("{{ static = [\"{}\"] }}", a.addr),
        &format!(
            "[site.lb_check]\n{probe}\n{extra}\n[[site]]\nname = \"b\"\n\
             backends = {{ static = [\"{}\"] }}\n[site.lb_check]\n{probe}",
            b.addr
        ),
    )
    .await;
    (proxy, a, b)
}

async fn sites(proxy: &Harness) -> serde_json::Value {
    let (status, body) = proxy.admin("GET", "/sites", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn site_state(sites: &serde_json::Value, name: &str) -> String {
    sites["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn node(proxy: &Harness) -> String {
    let (status, headers, body) = get_plain(proxy.plain_addr(), "/").await;
    assert_eq!(status, 200, "{body}");
    headers["x-node"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_site_going_down_moves_traffic_and_failback_waits_for_the_operator() {
    let (proxy, a, _b) = two_sites("").await;
    eventually("both sites probed UP", || async {
        let s = sites(&proxy).await;
        site_state(&s, "main") == "up" && site_state(&s, "b") == "up"
    })
    .await;
    assert_eq!(node(&proxy).await, "a-1");

    a.set_lb_check(false);
    // Every request succeeds while the switch happens: the DOWN site still serves until then.
    eventually("traffic moves to site b", || async {
        node(&proxy).await == "b-1"
    })
    .await;
    for _ in 0..10 {
        assert_eq!(node(&proxy).await, "b-1");
    }
    let s = sites(&proxy).await;
    assert_eq!(
        (s["active"].as_str(), site_state(&s, "main").as_str()),
        (Some("b"), "down")
    );
    let downs = s["sites"][0]["probes"]
        .as_array()
        .unwrap()
        .iter()
        .take_while(|p| p["up"] == false)
        .count();
    assert!(downs >= 2, "failed over after fall = 2 DOWN probes: {s:#}");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "sessiongate_site_switches_total{from=\"main\",reason=\"failover\",to=\"b\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, "sessiongate_site_active{site=\"b\"}"),
        Some(1.0)
    );

    // main is UP again: traffic stays on b (manual failback) until an operator says so.
    a.set_lb_check(true);
    eventually("main UP again", || async {
        site_state(&sites(&proxy).await, "main") == "up"
    })
    .await;
    for _ in 0..10 {
        assert_eq!(node(&proxy).await, "b-1", "no automatic failback");
    }
    let (status, body) = proxy
        .admin(
            "POST",
            "/sites/failback?who=alice&why=resynced",
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"active\": \"main\""), "{body}");
    assert_eq!(node(&proxy).await, "a-1");
}

#[tokio::test]
async fn automatic_failback_moves_traffic_back_after_the_hold_time() {
    let (proxy, a, _b) =
        two_sites("[failover]\nfailback = \"auto\"\nfailback_hold = \"200ms\"\n").await;
    eventually("main UP", || async {
        site_state(&sites(&proxy).await, "main") == "up"
    })
    .await;
    a.set_lb_check(false);
    eventually("on b", || async { node(&proxy).await == "b-1" }).await;
    a.set_lb_check(true);
    eventually("back on main", || async { node(&proxy).await == "a-1" }).await;
    assert_eq!(
        metric(
            &proxy.metrics().await,
            "sessiongate_site_switches_total{from=\"b\",reason=\"auto_failback\",to=\"main\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn switchover_and_force_down_through_the_admin_api() {
    let (proxy, _a, _b) = two_sites("").await;
    assert_eq!(proxy.admin("GET", "/sites", None).await.0, 401);
    assert_eq!(
        proxy
            .admin(
                "POST",
                "/sites/b/switchover",
                Some("wrong-token-of-32-characters!!!!")
            )
            .await
            .0,
        401
    );
    assert_eq!(
        proxy.admin("GET", "/metrics", None).await.0,
        200,
        "metrics need no token"
    );
    assert_eq!(
        proxy
            .admin("POST", "/sites/nowhere/switchover", Some(TOKEN))
            .await
            .0,
        404
    );
    assert_eq!(
        proxy
            .admin("GET", "/sites/b/switchover", Some(TOKEN))
            .await
            .0,
        405
    );

    // Planned switchover to b.
    let (status, body) = proxy
        .admin(
            "POST",
            "/sites/b/switchover?who=bob&why=maintenance",
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(node(&proxy).await, "b-1");
    // Forcing b down moves traffic back to main, and b cannot be switched to while held down.
    assert_eq!(
        proxy.admin("POST", "/sites/b/down", Some(TOKEN)).await.0,
        200
    );
    assert_eq!(node(&proxy).await, "a-1");
    assert_eq!(
        proxy
            .admin("POST", "/sites/b/switchover", Some(TOKEN))
            .await
            .0,
        409
    );
    let (status, headers, body) = get_plain(proxy.plain_addr(), "/lb-check").await;
    assert_eq!((status, body.as_str()), (200, "UP"));
    assert!(
        headers.get("x-node").is_none(),
        "answered by the proxy itself"
    );

    // Both held down: the last active site keeps serving, and the proxy says DOWN upstream.
    assert_eq!(
        proxy.admin("POST", "/sites/main/down", Some(TOKEN)).await.0,
        200
    );
    assert_eq!(
        node(&proxy).await,
        "a-1",
        "still serving rather than refusing everything"
    );
    let (status, _, body) = get_plain(proxy.plain_addr(), "/lb-check").await;
    assert_eq!((status, body.as_str()), (503, "DOWN"));
    // As HAProxy's `option httpchk GET /lb-check` asks: HTTP/1.0, no Host. Only the proxy's
    // own check answers without one.
    let check = raw(proxy.plain_addr(), b"GET /lb-check HTTP/1.0\r\n\r\n").await;
    assert!(check.starts_with("HTTP/1.1 503 "), "{check}");
    assert!(check.ends_with("\r\n\r\nDOWN"), "{check}");
    let other = raw(proxy.plain_addr(), b"GET /realms/x HTTP/1.0\r\n\r\n").await;
    assert!(other.starts_with("HTTP/1.1 400 "), "{other}");
    assert_eq!(
        proxy
            .admin("POST", "/sites/main/release", Some(TOKEN))
            .await
            .0,
        200
    );
    assert_eq!(get_plain(proxy.plain_addr(), "/lb-check").await.0, 200);
    assert_eq!(
        proxy.admin("POST", "/sites/b/release", Some(TOKEN)).await.0,
        200
    );
    assert_eq!(
        node(&proxy).await,
        "a-1",
        "releasing b does not move traffic"
    );
}

#[tokio::test]
async fn a_site_shedding_load_but_up_is_not_failed_over() {
    let (proxy, a, _b) = two_sites("").await;
    eventually("main UP", || async {
        site_state(&sites(&proxy).await, "main") == "up"
    })
    .await;
    a.set_busy(true);
    let probes_before = metric(
        &proxy.metrics().await,
        "sessiongate_site_probes_total{result=\"up\",site=\"main\"}",
    )
    .unwrap();
    // Many probe rounds later, with every request answered 503 by the busy node...
    eventually("ten more probes of main", || async {
        metric(
            &proxy.metrics().await,
            "sessiongate_site_probes_total{result=\"up\",site=\"main\"}",
        )
        .unwrap()
            >= probes_before + 10.0
    })
    .await;
    let (status, headers, _) = get_plain(proxy.plain_addr(), "/").await;
    assert_eq!((status, headers["x-node"].to_str().unwrap()), (503, "a-1"));
    // ...main is still active: 503s under load are not a site failure.
    assert_eq!(sites(&proxy).await["active"], "main");
}

#[tokio::test]
async fn sticky_sessions_move_to_the_new_site_deterministically_and_stay() {
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 1..=2 {
        a.push(
            DemoNode::start(&format!("a-{i}"), localhost())
                .await
                .unwrap(),
        );
        b.push(
            DemoNode::start(&format!("b-{i}"), localhost())
                .await
                .unwrap(),
        );
    }
    let list = |nodes: &[DemoNode]| {
        let l: Vec<String> = nodes.iter().map(|n| format!("\"{}\"", n.addr)).collect();
        format!("{{ static = [{}] }}", l.join(", "))
    };
    let sticky = "[balance.sticky]\nmode = \"cookie\"\nsecret = \"0123456789abcdef0123456789\"\n";
    let start = || async {
        Harness::start_full(
            &format!("token = \"{TOKEN}\""),
            PLAIN_LISTENER,
            &list(&a),
            &format!("{sticky}[[site]]\nname = \"b\"\nbackends = {}\n", list(&b)),
        )
        .await
    };
    let (p1, p2) = (start().await, start().await);
    // Sessions on site main, through p1.
    let mut cookies = Vec::new();
    for _ in 0..16 {
        let (status, headers, _) = get_plain(p1.plain_addr(), "/").await;
        assert_eq!(status, 200);
        let sg = headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .find(|c| c.starts_with("SG_NODE="))
            .unwrap();
        cookies.push(sg);
    }
    for p in [&p1, &p2] {
        assert_eq!(
            p.admin("POST", "/sites/b/switchover", Some(TOKEN)).await.0,
            200
        );
    }
    let visit = |proxy: &Harness, cookie: String| {
        let addr = proxy.plain_addr();
        async move {
            let mut send = h1(TcpStream::connect(addr).await.unwrap()).await;
            let req = http::Request::get("/")
                .header("host", "sso.test")
                .header("cookie", cookie)
                .body(empty())
                .unwrap();
            let (_, headers, _) = read(send_h1(&mut send, req).await).await;
            let node = headers["x-node"].to_str().unwrap().to_string();
            let repinned = headers
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
                .find(|c| c.starts_with("SG_NODE="));
            (node, repinned)
        }
    };
    let mut landed = std::collections::BTreeSet::new();
    for cookie in cookies {
        let (on_1, repinned) = visit(&p1, cookie.clone()).await;
        let (on_2, _) = visit(&p2, cookie).await;
        assert!(on_1.starts_with("b-"), "{on_1}");
        assert_eq!(
            on_1, on_2,
            "both proxies re-pin the session to the same node"
        );
        let (again, none) = visit(&p1, repinned.expect("a new cookie names the new node")).await;
        assert_eq!(
            (again.as_str(), none),
            (on_1.as_str(), None),
            "and it stays there"
        );
        landed.insert(on_1);
    }
    assert_eq!(landed.len(), 2, "sessions spread over the new site's nodes");
}

#[tokio::test]
async fn the_demo_fails_over_to_its_second_site_and_back_through_the_admin_api() {
    let demo = start_demo(2).await;
    let admin_get = || async {
        let mut send = h1(TcpStream::connect(demo.server.admin_addr()).await.unwrap()).await;
        let req = http::Request::get("/sites")
            .header("host", "admin")
            .body(empty())
            .unwrap();
        let (_, _, body) = read(send_h1(&mut send, req).await).await;
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    eventually("dc1 probed UP", || async {
        site_state(&admin_get().await, "dc1") == "up"
    })
    .await;
    demo.set_site_up(false);
    eventually("failed over to dc2", || async {
        admin_get().await["active"] == "dc2"
    })
    .await;
    demo.set_site_up(true);
    eventually("dc1 UP again", || async {
        site_state(&admin_get().await, "dc1") == "up"
    })
    .await;
    assert_eq!(admin_get().await["active"], "dc2", "manual failback");
    let mut send = h1(TcpStream::connect(demo.server.admin_addr()).await.unwrap()).await;
    let req = http::Request::post("/sites/failback?who=test")
        .header("host", "admin")
        .body(empty())
        .unwrap();
    assert_eq!(send_h1(&mut send, req).await.status(), 200);
    assert_eq!(admin_get().await["active"], "dc1");
    demo.server.shutdown().await;
}
