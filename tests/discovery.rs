//! Backend discovery against a real DNS server on loopback (hickory-server, UDP and TCP),
//! whose records the tests change as pods come and go, and whose failures they switch on.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use common::*;
use sessiongate::demo::dns::{Answer, DnsServer, SrvTarget};

const NAME: &str = "keycloak-headless.kc.svc.cluster.local.";

/// Fast refreshes for tests: the TTLs below are long, so only the ceiling makes them happen.
fn dns_settings(dns: &DnsServer, extra: &str) -> String {
    format!(
        "[dns]\nnameservers = [\"{}\"]\nrefresh_min = \"50ms\"\nrefresh_max = \"200ms\"\n\
         timeout = \"300ms\"\nattempts = 1\n{extra}",
        dns.addr
    )
}

/// A proxy whose site is the headless service `NAME` on `port`, resolved through `dns`.
async fn headless_proxy(dns: &DnsServer, port: u16, extra: &str) -> Harness {
    Harness::start_site(
        &format!("{{ dns = \"{NAME}\", port = {port} }}"),
        &dns_settings(dns, extra),
    )
    .await
}

async fn dns() -> DnsServer {
    DnsServer::start(localhost()).await.unwrap()
}

fn ips(nodes: &[sessiongate::demo::DemoNode]) -> Vec<IpAddr> {
    nodes.iter().map(|n| n.addr.ip()).collect()
}

async fn metrics_value(proxy: &Harness, series: &str) -> Option<f64> {
    metric(&proxy.metrics().await, series)
}

#[tokio::test]
async fn scale_up_new_pods_receive_traffic_and_ttl_ceiling_applies() {
    let dns = dns().await;
    let (nodes, port) = nodes_on_one_port(3).await;
    // A TTL of an hour: only the refresh ceiling (200ms) lets the change be seen.
    dns.set_ips(NAME, &ips(&nodes[..2]), 3600);
    let proxy = headless_proxy(&dns, port, "").await;

    let seen: BTreeSet<_> = answering_nodes(proxy.plain_addr(), 10)
        .await
        .into_iter()
        .collect();
    assert_eq!(
        seen,
        BTreeSet::from(["node-1".to_string(), "node-2".to_string()])
    );

    dns.set_ips(NAME, &ips(&nodes), 3600);
    eventually("node-3 receives traffic", || async {
        answering_nodes(proxy.plain_addr(), 3)
            .await
            .contains(&"node-3".to_string())
    })
    .await;
    let seen: BTreeSet<_> = answering_nodes(proxy.plain_addr(), 9)
        .await
        .into_iter()
        .collect();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        metrics_value(
            &proxy,
            "sessiongate_backends{site=\"main\",state=\"active\"}"
        )
        .await,
        Some(3.0)
    );
}

#[tokio::test]
async fn scale_down_drains_a_pod_and_its_request_in_flight_completes() {
    let dns = dns().await;
    let node = sessiongate::demo::DemoNode::start("node-1", "127.0.0.2:0".parse().unwrap())
        .await
        .unwrap();
    let port = node.addr.port();
    let mut gate = GateBackend::start_on(SocketAddr::from(([127, 0, 0, 3], port))).await;
    dns.set_ips(NAME, &[node.addr.ip(), gate.addr.ip()], 3600);
    let proxy = headless_proxy(&dns, port, "").await;

    // Round robin: of two requests, one is held by the gate.
    let plain = proxy.plain_addr();
    let first = tokio::spawn(async move { get_plain(plain, "/login").await });
    let second = tokio::spawn(async move { get_plain(plain, "/login").await });
    assert_eq!(gate.wait_arrival().await, "/login");

    // The gated pod leaves DNS: it drains.
    dns.set_ips(NAME, &[node.addr.ip()], 3600);
    eventually("the pod is draining", || async {
        metrics_value(
            &proxy,
            "sessiongate_backends{site=\"main\",state=\"draining\"}",
        )
        .await
            == Some(1.0)
    })
    .await;
    assert_eq!(
        metrics_value(
            &proxy,
            "sessiongate_backends{site=\"main\",state=\"active\"}"
        )
        .await,
        Some(1.0)
    );
    // No new request goes to it...
    assert!(answering_nodes(plain, 10)
        .await
        .iter()
        .all(|n| n == "node-1"));
    assert!(
        gate.arrived.try_recv().is_err(),
        "a new request reached the draining pod"
    );
    // ...and the one in flight completes.
    gate.release(1);
    let results = [first.await.unwrap(), second.await.unwrap()];
    assert!(results.iter().all(|(status, _, _)| *status == 200));
    assert!(results.iter().any(|(_, _, body)| body == "released\n"));
}

#[tokio::test]
async fn servfail_and_timeouts_keep_the_last_known_good_set() {
    let dns = dns().await;
    let (nodes, port) = nodes_on_one_port(2).await;
    dns.set_ips(NAME, &ips(&nodes), 3600);
    let proxy = headless_proxy(&dns, port, "").await;
    assert_eq!(
        answering_nodes(proxy.plain_addr(), 4)
            .await
            .iter()
            .collect::<BTreeSet<_>>()
            .len(),
        2
    );

    for (answer, result) in [
        (Answer::ServFail, "servfail"),
        (Answer::Refused, "refused"),
        (Answer::Silent, "timeout"),
    ] {
        dns.fail(NAME, answer);
        let series = format!("sessiongate_dns_lookups_total{{result=\"{result}\",site=\"main\"}}");
        eventually(result, || async {
            metrics_value(&proxy, &series)
                .await
                .is_some_and(|n| n >= 2.0)
        })
        .await;
        assert_eq!(
            metrics_value(&proxy, "sessiongate_dns_stale{site=\"main\"}").await,
            Some(1.0)
        );
        // Still both backends, still served.
        let seen: BTreeSet<_> = answering_nodes(proxy.plain_addr(), 4)
            .await
            .into_iter()
            .collect();
        assert_eq!(seen.len(), 2, "after {result}");
        assert_eq!(
            metrics_value(
                &proxy,
                "sessiongate_backends{site=\"main\",state=\"active\"}"
            )
            .await,
            Some(2.0)
        );
    }
    dns.set_ips(NAME, &ips(&nodes), 3600);
    eventually("DNS is trusted again", || async {
        metrics_value(&proxy, "sessiongate_dns_stale{site=\"main\"}").await == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn nxdomain_holds_the_set_then_empties_it() {
    let dns = dns().await;
    let (nodes, port) = nodes_on_one_port(2).await;
    dns.set_ips(NAME, &ips(&nodes), 3600);
    let proxy = headless_proxy(&dns, port, "empty_hold = \"2s\"\n").await;
    assert_eq!(get_plain(proxy.plain_addr(), "/").await.0, 200);

    dns.remove(NAME);
    let nxdomain = "sessiongate_dns_lookups_total{result=\"nxdomain\",site=\"main\"}";
    eventually("NXDOMAIN seen", || async {
        metrics_value(&proxy, nxdomain).await.is_some()
    })
    .await;
    // Within the hold: still served from the last set.
    assert_eq!(get_plain(proxy.plain_addr(), "/").await.0, 200);
    assert_eq!(
        metrics_value(&proxy, "sessiongate_dns_stale{site=\"main\"}").await,
        Some(1.0)
    );
    // After it: empty, 503, both pods draining, not ready.
    eventually("the site is emptied", || async {
        get_plain(proxy.plain_addr(), "/").await.0 == 503
    })
    .await;
    assert_eq!(
        metrics_value(
            &proxy,
            "sessiongate_backends{site=\"main\",state=\"draining\"}"
        )
        .await,
        Some(2.0)
    );
    assert_eq!(get_plain(proxy.server.admin_addr(), "/ready").await.0, 503);
    // The pods come back: served again, ready again.
    dns.set_ips(NAME, &ips(&nodes), 3600);
    eventually("served again", || async {
        get_plain(proxy.plain_addr(), "/").await.0 == 200
    })
    .await;
    assert_eq!(get_plain(proxy.server.admin_addr(), "/ready").await.0, 200);
}

#[tokio::test]
async fn srv_records_give_ports_and_priorities() {
    let dns = dns().await;
    let nodes = start_nodes(3).await;
    let srv = "_http._tcp.keycloak.service.consul.";
    let mut targets = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let target = format!("{}.node.dc1.consul.", node.name);
        dns.set_ips(&target, &[node.addr.ip()], 3600);
        targets.push(SrvTarget {
            priority: if i < 2 { 10 } else { 20 },
            weight: 1,
            port: node.addr.port(),
            target,
        });
    }
    dns.set_srv(srv, &targets, 3600);
    let proxy =
        Harness::start_site(&format!("{{ srv = \"{srv}\" }}"), &dns_settings(&dns, "")).await;

    // Different ports per target; priority 20 is a backup and gets nothing.
    let seen: BTreeSet<_> = answering_nodes(proxy.plain_addr(), 10)
        .await
        .into_iter()
        .collect();
    assert_eq!(
        seen,
        BTreeSet::from(["node-1".to_string(), "node-2".to_string()])
    );
    let text = proxy.metrics().await;
    assert_eq!(
        metric(
            &text,
            "sessiongate_backends{site=\"main\",state=\"active\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &text,
            "sessiongate_backends{site=\"main\",state=\"backup\"}"
        ),
        Some(1.0)
    );
    // Backends are known by target name and port, not by address.
    let id = format!("node-1.node.dc1.consul:{}", nodes[0].addr.port());
    assert!(text.contains(&format!("backend=\"{id}\"")), "{text}");

    // The preferred targets disappear: the backup takes over.
    dns.set_srv(srv, &targets[2..], 3600);
    eventually("the backup serves", || async {
        answering_nodes(proxy.plain_addr(), 1).await == vec!["node-3".to_string()]
    })
    .await;
}

#[tokio::test]
async fn aaaa_records_on_ipv6_loopback() {
    let dns = dns().await;
    let node = sessiongate::demo::DemoNode::start("node-v6", "[::1]:0".parse().unwrap())
        .await
        .unwrap();
    dns.set_ips(NAME, &["::1".parse().unwrap()], 3600);
    let proxy = headless_proxy(&dns, node.addr.port(), "").await;
    assert_eq!(
        answering_nodes(proxy.plain_addr(), 2).await,
        vec!["node-v6", "node-v6"]
    );
    let text = proxy.metrics().await;
    assert!(
        text.contains(&format!("backend=\"[::1]:{}\"", node.addr.port())),
        "{text}"
    );
}

#[tokio::test]
async fn before_the_first_resolution_the_proxy_is_not_ready() {
    let dns = dns().await;
    let (nodes, port) = nodes_on_one_port(1).await;
    // The name does not exist yet (the StatefulSet's pods are not ready).
    let proxy = headless_proxy(&dns, port, "").await;
    assert_eq!(get_plain(proxy.server.admin_addr(), "/ready").await.0, 503);
    let (status, headers, _) = get_plain(proxy.plain_addr(), "/").await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");

    dns.set_ips(NAME, &ips(&nodes), 3600);
    eventually("ready once resolved", || async {
        get_plain(proxy.server.admin_addr(), "/ready").await.0 == 200
    })
    .await;
    assert_eq!(answering_nodes(proxy.plain_addr(), 1).await, vec!["node-1"]);
}

#[tokio::test]
async fn large_answers_fall_back_to_tcp() {
    // 200 addresses do not fit a UDP answer: the resolver must retry over TCP and see them all.
    let dns = dns().await;
    let many: Vec<IpAddr> = (0..200u32)
        .map(|i| IpAddr::from([127, 1, (i / 250) as u8, (i % 250) as u8 + 1]))
        .collect();
    dns.set_ips(NAME, &many, 3600);
    let proxy = headless_proxy(&dns, 9, "").await;
    eventually("all 200 backends known", || async {
        metrics_value(
            &proxy,
            "sessiongate_backends{site=\"main\",state=\"active\"}",
        )
        .await
            == Some(200.0)
    })
    .await;
    assert!(dns.tcp_queries() > 0, "the answer came over TCP");
}

#[tokio::test]
async fn a_reload_during_a_dns_failure_keeps_the_last_known_good_set() {
    let dns = dns().await;
    let (nodes, port) = nodes_on_one_port(2).await;
    dns.set_ips(NAME, &ips(&nodes), 3600);
    let proxy = headless_proxy(&dns, port, "empty_hold = \"1s\"\n").await;
    assert_eq!(get_plain(proxy.plain_addr(), "/").await.0, 200);

    // CoreDNS restarting as a certificate rotation reloads the proxy: the new configuration
    // starts from the set the old one knew, as the failure alone would have kept it.
    dns.fail(NAME, Answer::ServFail);
    proxy.server.reload().await.unwrap();
    let seen: BTreeSet<_> = answering_nodes(proxy.plain_addr(), 4)
        .await
        .into_iter()
        .collect();
    assert_eq!(seen.len(), 2);
    assert_eq!(get_plain(proxy.server.admin_addr(), "/ready").await.0, 200);
    assert_eq!(
        metrics_value(&proxy, "sessiongate_dns_stale{site=\"main\"}").await,
        Some(1.0)
    );

    // That set is DNS's last word, not a fixed list: NXDOMAIN still empties it after the hold.
    dns.remove(NAME);
    eventually("the site is emptied", || async {
        get_plain(proxy.plain_addr(), "/").await.0 == 503
    })
    .await;
    dns.set_ips(NAME, &ips(&nodes), 3600);
    eventually("served again", || async {
        get_plain(proxy.plain_addr(), "/").await.0 == 200
    })
    .await;
}
