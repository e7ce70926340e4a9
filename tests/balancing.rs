//! Balancing algorithms through the proxy: least requests steers around a busy backend;
//! hashing keeps a key on one backend, agrees across proxy instances, and moves only the keys
//! a new backend wins.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn least_requests_sends_new_requests_around_a_busy_backend() {
    let mut gate = GateBackend::start().await;
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let proxy = Harness::start_site(
        &static_backends(&[gate.addr, node.addr]),
        "[balance]\nalgorithm = \"least_requests\"\n",
    )
    .await;
    let plain = proxy.plain_addr();
    // Until one request is held by the gate, requests may go either way.
    let held = loop {
        let mut req = tokio::spawn(async move { get_plain(plain, "/login").await });
        tokio::select! {
            _ = gate.wait_arrival() => break req,
            done = &mut req => assert_eq!(done.unwrap().0, 200),
        }
    };
    // The gate has one request in flight, node-1 none: every new request goes to node-1.
    assert!(answering_nodes(plain, 20)
        .await
        .iter()
        .all(|n| n == "node-1"));
    assert!(gate.arrived.try_recv().is_err());
    gate.release(1);
    assert_eq!(held.await.unwrap().0, 200);
}

#[tokio::test]
async fn hashing_on_a_header_is_stable_and_agrees_across_instances() {
    let nodes = start_nodes(4).await;
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let balance =
        "[balance]\nalgorithm = \"hash\"\nhash_key = \"header:X-Tenant\"\nhash_seed = 42\n";
    let a = Harness::start_site(&static_backends(&addrs), balance).await;
    let b = Harness::start_site(&static_backends(&addrs), balance).await;
    let mut placement = HashMap::new();
    for tenant in 0..40 {
        for proxy in [&a, &b, &a] {
            let mut send = h1(tokio::net::TcpStream::connect(proxy.plain_addr())
                .await
                .unwrap())
            .await;
            let req = http::Request::get("/")
                .header("host", "app.test")
                .header("x-tenant", format!("tenant-{tenant}"))
                .body(empty())
                .unwrap();
            let (status, headers, _) = read(send_h1(&mut send, req).await).await;
            assert_eq!(status, 200);
            let node = headers["x-node"].to_str().unwrap().to_string();
            let first = placement.entry(tenant).or_insert_with(|| node.clone());
            assert_eq!(*first, node, "tenant-{tenant} moved");
        }
    }
    let used: std::collections::HashSet<_> = placement.values().collect();
    assert_eq!(
        used.len(),
        4,
        "40 tenants spread over every node: {placement:?}"
    );
}

/// `GET /` from a given loopback source address; the answering node.
async fn from_source(source: &str, proxy: SocketAddr) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut tcp = socket.connect(proxy).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("x-node: "))
        .unwrap_or_else(|| panic!("no answer: {out}"))
        .to_string()
}

#[tokio::test]
async fn hashing_on_the_source_address_moves_only_what_a_new_node_wins() {
    let nodes = start_nodes(4).await;
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let balance = "[balance]\nalgorithm = \"hash\"\nhash_key = \"source_ip\"\n";
    let three = Harness::start_site(&static_backends(&addrs[..3]), balance).await;
    let four = Harness::start_site(&static_backends(&addrs), balance).await;
    let sources: Vec<String> = (10..70).map(|i| format!("127.0.{i}.1")).collect();
    let mut moved = 0;
    for source in &sources {
        let before = from_source(source, three.plain_addr()).await;
        assert_eq!(
            before,
            from_source(source, three.plain_addr()).await,
            "{source} is stable"
        );
        let after = from_source(source, four.plain_addr()).await;
        if before != after {
            moved += 1;
            assert_eq!(
                after, "node-4",
                "{source} moved elsewhere than to the new node"
            );
        }
    }
    // About a quarter move: all to the new node, none between the old ones.
    assert!(
        (5..=25).contains(&moved),
        "{moved} of {} moved",
        sources.len()
    );
}

#[tokio::test]
async fn requests_without_the_key_fall_back_to_round_robin() {
    let nodes = start_nodes(3).await;
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let proxy = Harness::start_site(
        &static_backends(&addrs),
        "[balance]\nalgorithm = \"hash\"\nhash_key = \"cookie:tenant\"\n",
    )
    .await;
    let seen: std::collections::HashSet<_> = answering_nodes(proxy.plain_addr(), 6)
        .await
        .into_iter()
        .collect();
    assert_eq!(seen.len(), 3);
    // With the cookie: one node, every time.
    let mut nodes_seen = std::collections::HashSet::new();
    for _ in 0..6 {
        let response = raw(
            proxy.plain_addr(),
            b"GET / HTTP/1.1\r\nHost: app.test\r\nCookie: a=1; tenant=acme\r\nConnection: close\r\n\r\n",
        )
        .await;
        nodes_seen.insert(
            response
                .lines()
                .find_map(|l| l.strip_prefix("x-node: "))
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(nodes_seen.len(), 1);
}

/// A node added while the site serves gets a tenth of its share at first (slow start), so a
/// cold JVM is not handed a full share of new sessions; the nodes already serving are not
/// slowed.
#[tokio::test]
async fn a_node_added_by_a_reload_starts_slowly() {
    let nodes = start_nodes(3).await;
    let (first, all): (Vec<_>, Vec<_>) = (
        nodes[..2].iter().map(|n| n.addr).collect(),
        nodes.iter().map(|n| n.addr).collect(),
    );
    let proxy =
        Harness::start_site(&static_backends(&first), "[balance]\nslow_start = \"1h\"\n").await;
    let plain = proxy.plain_addr();
    let served = answering_nodes(plain, 20).await;
    assert_eq!(served.iter().filter(|n| *n == "node-1").count(), 10);
    proxy
        .reload_edited(|text| text.replace(&static_backends(&first), &static_backends(&all)))
        .await;
    // One turn of the weighted rotation: 100 + 100 + 10 (an hour's slow start, seconds in).
    let served = answering_nodes(plain, 210).await;
    let count = |name: &str| served.iter().filter(|n| *n == name).count();
    assert_eq!(
        (count("node-1"), count("node-2"), count("node-3")),
        (100, 100, 10)
    );
    let shares: Vec<(String, Option<u64>)> = proxy
        .backends()
        .await
        .iter()
        .map(|b| {
            let address = b["address"].as_str().unwrap().to_string();
            (address, b["slow_start_percent"].as_u64())
        })
        .collect();
    let expected: Vec<(String, Option<u64>)> = all
        .iter()
        .zip([None, None, Some(10)])
        .map(|(a, share)| (a.to_string(), share))
        .collect();
    assert_eq!(shares, expected);
}
