//! Per-client rate limits: a client over its allowance gets 429 with `Retry-After` and no node
//! sees the request; other clients, and paths no rule covers, are served; behind a trusted
//! proxy each forwarded client counts on its own; a reload keeps the count. Rates of one request
//! an hour make "the fourth request is refused" a fact, whatever the machine's speed.

mod common;

use common::*;
use sessiongate::demo::DemoNode;

fn listeners(plain_extra: &str, rule: &str) -> String {
    format!(
        "[[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\n{plain_extra}\n\
         [[listener.rate_limit]]\n{rule}\n\
         [[listener]]\nname = \"tls\"\nlisten = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"default.crt\", key = \"default.key\" }}\n\
         [[listener.rate_limit]]\n{rule}\n"
    )
}

/// One node behind a proxy whose two listeners (`plain` with `plain_extra`, `tls`) each have
/// the rate limit `rule`; `extra` follows the site.
async fn start(plain_extra: &str, rule: &str, extra: &str) -> (Vec<DemoNode>, Harness) {
    let nodes = start_nodes(1).await;
    let backends = static_backends(&[nodes[0].addr]);
    let proxy = Harness::start_with(&listeners(plain_extra, rule), &backends, extra).await;
    (nodes, proxy)
}

fn retry_after_secs(value: Option<String>) -> u64 {
    value.expect("Retry-After").parse().unwrap()
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_and_no_node_sees_the_request() {
    let rule = "paths = [\"/realms/\"]\nrate = \"1/h\"\nburst = 3";
    let (nodes, proxy) = start("", rule, "").await;
    let plain = proxy.plain_addr();
    for _ in 0..3 {
        assert_eq!(get_from(plain, "127.0.0.1", "/realms/x", "").await.0, 200);
    }
    // The allowance is spent: an hour to wait for the next request (less the moments passed).
    let (status, retry_after) = get_from(plain, "127.0.0.1", "/realms/x", "").await;
    assert_eq!(status, 429);
    assert!((3590..=3600).contains(&retry_after_secs(retry_after)));
    // Headers from a peer nobody trusts change nothing; a disguised path is the same path.
    let spoof = "X-Forwarded-For: 192.0.2.9\r\n";
    assert_eq!(
        get_from(plain, "127.0.0.1", "/realms/y", spoof).await.0,
        429
    );
    assert_eq!(get_from(plain, "127.0.0.1", "/REALMS/./x", "").await.0, 429);
    // Paths no rule covers, and other clients, are served.
    assert_eq!(
        get_from(plain, "127.0.0.1", "/resources/x", "").await.0,
        200
    );
    assert_eq!(get_from(plain, "127.0.0.2", "/realms/x", "").await.0, 200);

    // HTTP/2: the same rule, the other listener's own count, refused stream by stream.
    let mut send = h2(proxy.tls("default.test", &[b"h2"]).await).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let req = http::Request::get("https://default.test/realms/x")
            .body(empty())
            .unwrap();
        let (status, headers, _) = read(send.send_request(req).await.unwrap()).await;
        if status == 429 {
            assert!(headers.contains_key("retry-after"));
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);

    let metrics = proxy.metrics().await;
    for (listener, refused) in [("plain", 3.0), ("tls", 1.0)] {
        let name = format!("sessiongate_rate_limited_total{{listener=\"{listener}\"}}");
        assert_eq!(metric(&metrics, &name), Some(refused), "{listener}");
    }
    // What reached the node: 3 + 1 + 1 over HTTP/1.1, 3 over HTTP/2. Nothing else.
    let served = |listener: &str| {
        format!(
            "sessiongate_requests_total{{backend=\"{}\",listener=\"{listener}\",status_class=\"2xx\"}}",
            nodes[0].addr
        )
    };
    assert_eq!(metric(&metrics, &served("plain")), Some(5.0));
    assert_eq!(metric(&metrics, &served("tls")), Some(3.0));
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_counts_on_its_own() {
    let trusted = "trusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]";
    let (_nodes, proxy) = start(trusted, "rate = \"1/h\"\nburst = 2", "").await;
    let plain = proxy.plain_addr();
    let from = |client: &str| format!("X-Forwarded-For: {client}\r\n");
    for _ in 0..2 {
        assert_eq!(
            get_from(plain, "127.0.0.1", "/x", &from("203.0.113.7"))
                .await
                .0,
            200
        );
    }
    assert_eq!(
        get_from(plain, "127.0.0.1", "/x", &from("203.0.113.7"))
            .await
            .0,
        429
    );
    // What the client wrote left of the address the trusted proxy saw counts for nothing, and a
    // trusted hop in between (10.0.0.5) is looked through.
    let spoofed = from("198.51.100.1, 203.0.113.7, 10.0.0.5");
    assert_eq!(get_from(plain, "127.0.0.1", "/x", &spoofed).await.0, 429);
    assert_eq!(
        get_from(plain, "127.0.0.1", "/x", &from("203.0.113.8"))
            .await
            .0,
        200
    );
    // The trusted proxy itself is a client too, for requests that name nobody else.
    for _ in 0..2 {
        assert_eq!(get_from(plain, "127.0.0.1", "/x", "").await.0, 200);
    }
    assert_eq!(get_from(plain, "127.0.0.1", "/x", "").await.0, 429);
}

#[tokio::test]
async fn a_reload_keeps_each_clients_count_and_a_new_burst_counts_what_was_used() {
    let grace = "[timeouts]\nclose_grace = \"1s\"\n";
    let (_nodes, proxy) = start("", "paths = [\"/x\"]\nrate = \"1/h\"\nburst = 2", grace).await;
    let plain = proxy.plain_addr();
    let statuses = |n: usize| async move {
        let mut got = Vec::new();
        for _ in 0..n {
            got.push(get_from(plain, "127.0.0.1", "/x", "").await.0);
        }
        got
    };
    assert_eq!(statuses(3).await, [200, 200, 429]);
    proxy
        .reload_edited(|t| t.replace("close_grace = \"1s\"", "close_grace = \"2s\""))
        .await;
    assert_eq!(statuses(1).await, [429]);
    // A larger burst over the same paths: what the client used still counts.
    proxy
        .reload_edited(|t| t.replace("burst = 2", "burst = 3"))
        .await;
    assert_eq!(statuses(2).await, [200, 429]);
    // A smaller one: nothing left.
    proxy
        .reload_edited(|t| t.replace("burst = 3", "burst = 1"))
        .await;
    assert_eq!(statuses(1).await, [429]);
    // Other paths make another rule, which counts afresh.
    proxy
        .reload_edited(|t| t.replace("paths = [\"/x\"]", "paths = [\"/x\", \"/y\"]"))
        .await;
    assert_eq!(statuses(2).await, [200, 429]);
}
