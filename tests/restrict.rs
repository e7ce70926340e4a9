//! Paths only some client networks may reach (`[[listener.restrict]]`): everyone else gets the
//! rule's status and no node sees the request, however the path is written, over HTTP/1.1 and
//! HTTP/2; behind a trusted proxy the client it forwarded is the one checked, and what an
//! untrusted peer claims counts for nothing. Clients are told apart by the loopback address
//! they connect from (127.0.0.1, 127.0.0.2, ...). Refusals are counted by reason.

mod common;

use common::*;

const RULE: &str = "[[listener.restrict]]\npaths = [\"/admin/\"]\nallow_from = [\"127.0.0.2\"]\n";

/// A backend that answers every request 200 and records its head.
async fn backend() -> RawBackend {
    RawBackend::start(|_| RawReply::keep("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")).await
}

/// Whether the backend received a request for `path` (its request line's target).
fn reached(node: &RawBackend, path: &str) -> bool {
    node.heads()
        .iter()
        .any(|h| h.starts_with(&format!("GET {path} ")))
}

#[tokio::test]
async fn clients_outside_the_networks_are_refused_and_no_node_sees_them() {
    let node = backend().await;
    let listeners = format!(
        "{PLAIN_LISTENER}relative_path = \"/auth\"\n{RULE}\
         [[listener]]\nname = \"tls\"\nlisten = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"default.crt\", key = \"default.key\" }}\n{RULE}"
    );
    let proxy = Harness::start_with(&listeners, &static_backends(&[node.addr]), "").await;
    let plain = proxy.plain_addr();
    let spoof = "X-Forwarded-For: 127.0.0.2\r\n";
    for (from, path, headers, status) in [
        ("127.0.0.2", "/admin/master/console/", "", 200),
        ("127.0.0.2", "/auth/admin/master/console/", "", 200),
        ("127.0.0.1", "/admin/master/console/", "", 403),
        ("127.0.0.1", "/admin", "", 403),
        // Under the relative path, and disguised as a deny's path would be.
        ("127.0.0.1", "/auth/admin/x", "", 403),
        ("127.0.0.1", "/ADMIN/./x", "", 403),
        ("127.0.0.1", "/realms/../%61dmin/x", "", 403),
        ("127.0.0.1", "/admin.json", "", 403),
        // A peer nobody trusts cannot claim another address.
        ("127.0.0.1", "/admin/x", spoof, 403),
        // Other paths are everyone's.
        ("127.0.0.1", "/realms/master/account", "", 200),
        ("127.0.0.1", "/administrator", "", 200),
    ] {
        let got = get_from(plain, from, path, headers).await.0;
        assert_eq!(got, status, "{path} from {from}");
    }
    assert!(reached(&node, "/admin/master/console/"));
    for refused in ["/admin", "/admin/x", "/auth/admin/x", "/admin.json"] {
        assert!(!reached(&node, refused), "{refused} reached the node");
    }

    // HTTP/2 over TLS, from 127.0.0.1: refused alike.
    let mut send = h2(proxy.tls("default.test", &[b"h2"]).await).await;
    for (path, status) in [("/admin/h2", 403), ("/realms/h2", 200)] {
        let req = http::Request::get(format!("https://default.test{path}"))
            .body(empty())
            .unwrap();
        let (got, _, body) = read(send.send_request(req).await.unwrap()).await;
        assert_eq!(got, status, "{path}: {body}");
    }
    assert!(!reached(&node, "/admin/h2"));

    // Counted by listener and reason, with the requests other rules refuse.
    assert_eq!(get_from(plain, "127.0.0.1", "/metrics", "").await.0, 404);
    assert_eq!(
        get_from(plain, "127.0.0.1", "/..;/metrics", "").await.0,
        400
    );
    let metrics = proxy.metrics().await;
    let refused = |listener: &str, reason: &str| {
        let series = format!(
            "sessiongate_requests_refused_total{{listener=\"{listener}\",reason=\"{reason}\"}}"
        );
        metric(&metrics, &series)
    };
    assert_eq!(refused("plain", "client_network"), Some(7.0), "{metrics}");
    assert_eq!(refused("tls", "client_network"), Some(1.0));
    assert_eq!(refused("plain", "denied_path"), Some(1.0));
    assert_eq!(refused("plain", "ambiguous_path"), Some(1.0));
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_checked() {
    let node = backend().await;
    let listeners = format!(
        "{PLAIN_LISTENER}trusted_proxies = [\"127.0.0.3\"]\n{RULE}\
         status = 404\n"
    );
    let proxy = Harness::start_with(&listeners, &static_backends(&[node.addr]), "").await;
    let plain = proxy.plain_addr();
    for (forwarded, status) in [
        ("127.0.0.2", 200),
        ("192.0.2.7", 404),
        // The chain's left part is whatever the client wrote: the nearest untrusted entry
        // is the client.
        ("127.0.0.2, 192.0.2.7", 404),
        // The trusted proxy's own address, forwarded by itself: not in allow_from either.
        ("127.0.0.3", 404),
    ] {
        let headers = format!("X-Forwarded-For: {forwarded}\r\n");
        let got = get_from(plain, "127.0.0.3", "/admin/x", &headers).await.0;
        assert_eq!(got, status, "X-Forwarded-For: {forwarded}");
    }
    // The trusted proxy itself, forwarding nobody: refused.
    assert_eq!(get_from(plain, "127.0.0.3", "/admin/x", "").await.0, 404);
}
