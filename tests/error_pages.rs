//! The operator's pages for the proxy's own error answers (`[error_pages]`), over both
//! protocols, and a backend's own errors passing untouched.

mod common;

use common::*;

const DOWN: &str = "<!doctype html><h1>We will be right back</h1>\n";
const DENIED: &str = "{\"error\": \"not found\"}\n";
const BAD: &str = "That request could not be read.\n";

/// A backend that closes on `/gone` without answering (the proxy's 502), answers `/own` with
/// a 404 of its own, and everything else with 200.
async fn backend() -> RawBackend {
    RawBackend::start(|head| {
        if head.starts_with("GET /gone") || head.starts_with("HEAD /gone") {
            RawReply::close("")
        } else if head.starts_with("GET /own") {
            RawReply::keep("HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nmine\n")
        } else {
            RawReply::keep("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        }
    })
    .await
}

fn pages(dir: &std::path::Path) -> String {
    std::fs::write(dir.join("down.html"), DOWN).unwrap();
    std::fs::write(dir.join("denied.json"), DENIED).unwrap();
    std::fs::write(dir.join("bad.txt"), BAD).unwrap();
    format!(
        "[error_pages]\n502 = \"{0}/down.html\"\n404 = \"{0}/denied.json\"\n400 = \"{0}/bad.txt\"\n",
        dir.display()
    )
}

#[tokio::test]
async fn the_proxys_own_errors_carry_the_operators_pages_and_backends_errors_pass() {
    let backend = backend().await;
    let dir = temp_dir("pages");
    let proxy = Harness::start(&[backend.addr], &pages(&dir)).await;
    let mut over_h1 = h1(proxy.tls("default.test", &[b"http/1.1"]).await).await;
    let mut over_h2 = h2(proxy.tls("default.test", &[b"h2"]).await).await;
    let html = "text/html; charset=utf-8";
    for (method, path, status, kind, body) in [
        ("GET", "/gone", 502, html, DOWN),
        ("HEAD", "/gone", 502, html, ""),
        ("GET", "/metrics", 404, "application/json", DENIED),
        (
            "GET",
            "/%c0%afmetrics",
            400,
            "text/plain; charset=utf-8",
            BAD,
        ),
        // The backend's own 404 is the backend's.
        ("GET", "/own", 404, "", "mine\n"),
        ("GET", "/", 200, "", "ok\n"),
    ] {
        let uri = format!("https://default.test{path}");
        for (protocol, resp) in over_both(&mut over_h1, &mut over_h2, method, &uri).await {
            let what = format!("{protocol} {method} {path}");
            let (got, headers, text) = read(resp).await;
            assert_eq!((got, text.as_str()), (status, body), "{what}");
            let content_type = headers.get("content-type").map(|v| v.to_str().unwrap());
            assert_eq!(content_type.unwrap_or(""), kind, "{what}");
            if !kind.is_empty() {
                // A HEAD's too: the length the page would have.
                let page_length = if method == "HEAD" {
                    DOWN.len()
                } else {
                    body.len()
                };
                assert_eq!(headers["content-length"], page_length.to_string(), "{what}");
            }
        }
    }

    // A head the HTTP/1.1 server refuses before it is a request gets the page too.
    let refused = raw(
        proxy.plain_addr(),
        b"GET / HTTP/1.1\r\nHost: app.test\r\nno colon here\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 400 "), "{refused}");
    assert!(refused.ends_with(BAD), "{refused}");

    // The running configuration names the pages.
    let (_, config) = proxy.admin("GET", "/config", None).await;
    assert!(config.contains("[error_pages]"), "{config}");
    assert!(config.contains("denied.json"), "{config}");

    // A changed page: the connections stay open, and their next error carries it.
    std::fs::write(dir.join("down.html"), "<h1>maintenance until 14:00</h1>").unwrap();
    proxy
        .reload_edited(|text| format!("{text}\n# edited\n"))
        .await;
    let get = || {
        http::Request::get("https://default.test/gone")
            .body(empty())
            .unwrap()
    };
    let (_, _, text) = read(send_h1(&mut over_h1, get()).await).await;
    assert_eq!(text, "<h1>maintenance until 14:00</h1>");
    let (_, _, text) = read(over_h2.send_request(get()).await.unwrap()).await;
    assert_eq!(text, "<h1>maintenance until 14:00</h1>");
}
