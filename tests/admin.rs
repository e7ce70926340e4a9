//! The admin listener: metrics in Prometheus text, liveness, readiness, the running
//! configuration, nothing else.

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
    // A path that is not there is 404 whatever the method, not 405.
    let response = raw(
        admin,
        b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");

    // The proxy's own metrics never appear on a public listener.
    let (_, _, body) = get_plain(proxy.plain_addr(), "/metrics").await;
    assert!(
        !body.contains("sessiongate_") && !body.contains("process_"),
        "{body}"
    );
}

/// Reloads the harness' config with its one site renamed `next`, only `keep` in it, and no
/// TLS listener.
async fn reload_to_one_backend(proxy: &Harness, keep: std::net::SocketAddr, gone: &str) {
    proxy
        .reload_edited(|text| {
            let text = text
                .replace("name = \"main\"", "name = \"next\"")
                .replace(&format!(", \"{gone}\""), "")
                .replace(TLS_LISTENER, "");
            assert!(text.contains(&format!("static = [\"{keep}\"]")), "{text}");
            text
        })
        .await;
}

#[tokio::test]
async fn series_of_backends_sites_and_listeners_that_are_gone_leave_after_metrics_retain() {
    // Pods come and go with new addresses: their series must not pile up for the life of the
    // process. A short retention here; the default (10 minutes) keeps them, as the end shows.
    let nodes = start_nodes(2).await;
    let backends = static_backends(&[nodes[0].addr, nodes[1].addr]);
    let listeners = format!("{TLS_LISTENER}{PLAIN_LISTENER}");
    let short = Harness::start_full("metrics_retain = \"1ms\"", &listeners, &backends, "").await;
    let default = Harness::start_full("", &listeners, &backends, "").await;
    let (kept, gone) = (nodes[0].addr.to_string(), nodes[1].addr.to_string());
    for proxy in [&short, &default] {
        for _ in 0..4 {
            assert_eq!(get_plain(proxy.plain_addr(), "/").await.0, 200);
        }
        let tls = proxy.pki.client_config(&[b"http/1.1"]);
        assert_eq!(tls_get(proxy.tls_addr(), "default.test", tls).await.1, 200);
        let text = proxy.metrics().await;
        assert!(text.contains(&format!("backend=\"{gone}\"")), "{text}");
        assert!(text.contains("site=\"main\""), "{text}");
        assert!(text.contains("listener=\"tls\""), "{text}");
        reload_to_one_backend(proxy, nodes[0].addr, &gone).await;
        assert_eq!(get_plain(proxy.plain_addr(), "/").await.0, 200);
    }

    eventually(
        "the series of the gone backend, site and listener to leave",
        || async {
            let text = short.metrics().await;
            !text.contains(&format!("backend=\"{gone}\""))
                && !text.contains("site=\"main\"")
                && !text.contains("listener=\"tls\"")
        },
    )
    .await;
    let text = short.metrics().await;
    let kept_series = format!(
        "sessiongate_requests_total{{backend=\"{kept}\",listener=\"plain\",status_class=\"2xx\"}}"
    );
    assert_eq!(metric(&text, &kept_series), Some(3.0), "{text}");
    assert!(
        text.contains("sessiongate_backends{site=\"next\",state=\"active\"} 1"),
        "{text}"
    );

    // A backend that comes back after its series left is counted from zero on a series of
    // its own again, although this thread counted it before (`request_counters`).
    short
        .reload_edited(|text| {
            text.replace(
                &format!("static = [\"{kept}\"]"),
                &format!("static = [\"{kept}\", \"{gone}\"]"),
            )
        })
        .await;
    for _ in 0..4 {
        assert_eq!(get_plain(short.plain_addr(), "/").await.0, 200);
    }
    let gone_series = format!(
        "sessiongate_requests_total{{backend=\"{gone}\",listener=\"plain\",status_class=\"2xx\"}}"
    );
    let text = short.metrics().await;
    assert_eq!(metric(&text, &gone_series), Some(2.0), "{text}");
    assert_eq!(metric(&text, &kept_series), Some(5.0), "{text}");

    // With the default retention the last values are still there to be scraped.
    for _ in 0..2 {
        let text = default.metrics().await;
        assert_eq!(metric(&text, &gone_series), Some(2.0), "{text}");
        assert!(text.contains("site=\"main\""), "{text}");
        let tls_connections = "sessiongate_connections_total{listener=\"tls\"}";
        assert_eq!(metric(&text, tls_connections), Some(1.0), "{text}");
    }
}

/// `GET /config` shows what this replica runs, every default written out as `check-config`
/// prints it, with no secret in it; it takes the admin token when one is set, and shows the new
/// configuration after a reload.
#[tokio::test]
async fn the_running_configuration_is_shown_behind_the_token_and_without_secrets() {
    let nodes = start_nodes(2).await;
    let token = "an-admin-token-of-32-characters!";
    let secret = "a-sticky-secret-nobody-may-read";
    let proxy = Harness::start_full(
        &format!("token = \"{token}\""),
        &format!("{TLS_LISTENER}{PLAIN_LISTENER}"),
        &static_backends(&[nodes[0].addr]),
        &format!("[balance.sticky]\nmode = \"cookie\"\nsecret = \"{secret}\"\n"),
    )
    .await;
    assert_eq!(proxy.admin("GET", "/config", None).await.0, 401);
    let (status, text) = proxy.admin("GET", "/config", Some(token)).await;
    assert_eq!(status, 200);
    let source = proxy.dir.join("sessiongate.toml").display().to_string();
    let hash = metric(&proxy.metrics().await, "sessiongate_config_hash").unwrap();
    let head = format!("# sessiongate_config_hash {hash}\n# {source}, loaded 20");
    assert!(text.starts_with(&head), "{text}");
    for shown in [
        "name = \"tls\"".to_string(),
        format!("\"{}\"", nodes[0].addr),
        "max_header_size = ".into(),
        "mode = \"cookie\"".into(),
    ] {
        assert!(text.contains(&shown), "{shown} not in\n{text}");
    }
    assert!(!text.contains(token) && !text.contains(secret), "{text}");
    // What is shown is a config sessiongate reads back (the secret aside, as check-config).
    let shown = text.replace("(set in the config file; not shown)", secret);
    let shown = shown.replace("set-in-the-config-file-not-shown", token);
    sessiongate::Config::from_toml(&shown, "shown", &proxy.dir).expect("a valid config");

    let (one, two) = (nodes[0].addr.to_string(), nodes[1].addr.to_string());
    proxy.reload_edited(|t| t.replace(&one, &two)).await;
    let (_, text) = proxy.admin("GET", "/config", Some(token)).await;
    assert!(text.contains(&two) && !text.contains(&one), "{text}");
}
