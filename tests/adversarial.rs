//! The edge under attack: raw HTTP/1.1 requests (and HTTP/2 ones) that try to reach denied
//! paths through disguises, smuggle requests, spoof headers or exhaust limits. Each has its
//! exact expected answer; the backend records every target it receives, and the suite ends by
//! checking that none of them is a denied path however a backend might normalise it.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMITS: &str = r#"
[limits]
max_uri_length = 4096
max_header_size = "16KiB"
max_headers = 50
max_body_size = "64KiB"
min_body_rate = 1000
body_rate_grace = "300ms"
"#;

/// The listener config under test: Keycloak behind `/auth` (its legacy relative path).
async fn proxy(node: &sessiongate::demo::DemoNode) -> Harness {
    Harness::start_site(&format!("{{ static = [\"{}\"] }}", node.addr), LIMITS).await
}

/// These listeners in front of `node`, with the default limits.
async fn listeners_before(node: &sessiongate::demo::DemoNode, listeners: &str) -> Harness {
    Harness::start_with(
        listeners,
        &format!("{{ static = [\"{}\"] }}", node.addr),
        "",
    )
    .await
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// One raw request: its bytes and the status it must get.
struct Case {
    what: &'static str,
    request: String,
    status: u16,
    /// Something else the response must contain.
    also: Option<&'static str>,
}

fn get(what: &'static str, target: &str, status: u16) -> Case {
    Case {
        what,
        request: format!("GET {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"),
        status,
        also: None,
    }
}

fn raw_case(what: &'static str, request: &str, status: u16) -> Case {
    Case {
        what,
        request: request.to_string(),
        status,
        also: None,
    }
}

fn cases() -> Vec<Case> {
    let mut cases = vec![
        // Path disguises of the denied paths: 404, never forwarded.
        get("plain", "/metrics", 404),
        get("upper case", "/METRICS", 404),
        get("mixed case, slash", "/Metrics/", 404),
        get("below", "/metrics/vendor", 404),
        get("escaped letter", "/%6detrics", 404),
        get("all escaped", "/%6D%65%74%72%69%63%73", 404),
        get("double slash", "//metrics", 404),
        get("triple slash", "///metrics", 404),
        get("dot segment", "/./metrics", 404),
        get("parent segment", "/realms/../metrics", 404),
        get("escaped parent", "/%2e%2e/metrics", 404),
        get("escaped parent below", "/realms/%2E%2E/metrics", 404),
        get("path parameter", "/metrics;jsessionid=1", 404),
        get("escaped semicolon", "/metrics%3Bx", 404),
        get("escaped fragment mark", "/metrics%23x", 404),
        get("escaped query mark", "/health%3F/ready", 404),
        get("query", "/metrics?format=prometheus", 404),
        get("health", "/health", 404),
        get("health ready", "/health/ready", 404),
        get("health upper", "/HEALTH/live", 404),
        get("health parent", "/realms/x/../../health/started", 404),
        get("under the relative path", "/auth/metrics", 404),
        get("under the relative path, disguised", "/auth/%2e/Health", 404),
        get("suffix", "/metrics.json", 404),
        get("trailing dot", "/health.", 404),
        get("trailing space", "/metrics%20", 404),
        get("long s, Java's equalsIgnoreCase", "/metric%C5%BF", 404),
        get("suffix under the relative path", "/auth/health.d/ready", 404),
        // What backends read differently: 400.
        get("encoded slash", "/realms%2Fmetrics", 400),
        get("encoded slash lower", "/%2fmetrics", 400),
        get("encoded backslash", "/%5cmetrics", 400),
        get("dot segment with parameter", "/..;/metrics", 400),
        get("dot segment with parameter below", "/realms/..;x/metrics", 400),
        get("parameters-only segment", "/;jsessionid=1/metrics", 400),
        get("encoded parameter dot segment", "/..%3Bx/metrics", 400),
        get("encoded NUL", "/metrics%00", 400),
        get("encoded CR LF", "/x%0d%0aSet-Cookie:%20a=b", 400),
        get("bad escape", "/%zz", 400),
        get("truncated escape", "/metrics%2", 400),
        get("space-only segment", "/%20/metrics", 400),
        get("dot segment with a space", "/realms/..%20/metrics", 400),
        get("dot segment with an escaped query mark", "/realms/..%3fx/metrics", 400),
        get("overlong slash", "/%c0%afmetrics", 400),
        get("overlong parent", "/realms/%C0%AE%C0%AE/metrics", 400),
        get("overlong in three bytes", "/realms/%e0%80%ae%e0%80%ae/health", 400),
        get("double-encoded letter", "/%256detrics", 400),
        get("double-encoded parent", "/realms/%252e%252e/metrics", 400),
        get("double-encoded slash", "/realms%252fmetrics", 400),
        get("a percent sign itself", "/realms/100%25", 200),
        raw_case("raw backslash", "GET /a\\metrics HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n", 400),
        // Request forms and Host.
        raw_case(
            "absolute form naming another host",
            "GET http://evil.test/realms/x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
            400,
        ),
        raw_case(
            "absolute form, denied path",
            "GET http://app.test/metrics HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
            404,
        ),
        raw_case(
            "two Host headers",
            "GET /realms/x HTTP/1.1\r\nHost: app.test\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
            400,
        ),
        raw_case("no Host", "GET /realms/x HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        raw_case(
            "TRACE",
            "TRACE /realms/x HTTP/1.1\r\nHost: app.test\r\nCookie: KEYCLOAK_IDENTITY=secret\r\nConnection: close\r\n\r\n",
            405,
        ),
        raw_case(
            "CONNECT",
            "CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\nConnection: close\r\n\r\n",
            405,
        ),
        // Smuggling shapes: src/http1 refuses ambiguous framing, and the proxy re-frames what it
        // forwards, so nothing the client framed oddly reaches the backend as a second request.
        // Transfer-Encoding wins over Content-Length (RFC 9112 §6.1), the request is answered
        // and the connection closed (§6.3): the "smuggled" request after the body is never
        // read, and the body the backend gets is re-framed by the proxy.
        Case {
            what: "Content-Length and Transfer-Encoding",
            request: "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /metrics HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n".into(),
            status: 200,
            also: Some("connection: close\r\n"),
        },
        raw_case(
            "two different Content-Lengths",
            "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\nContent-Length: 40\r\nConnection: close\r\n\r\nabcd",
            400,
        ),
        raw_case(
            "Transfer-Encoding not ending in chunked",
            "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked, identity\r\nConnection: close\r\n\r\n0\r\n\r\n",
            400,
        ),
        raw_case(
            "obfuscated Transfer-Encoding",
            "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: xchunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
            400,
        ),
        raw_case(
            "space before the colon",
            "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding : chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
            400,
        ),
        raw_case(
            "negative Content-Length",
            "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nContent-Length: -1\r\nConnection: close\r\n\r\n",
            400,
        ),
        raw_case(
            "bad chunk size",
            "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        raw_case(
            "overflowing chunk size",
            "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        // Shapes aimed at a hand-written HTTP/1.1 parser (src/http1): each is a place where two
        // parsers have been known to disagree, so the answer is a refusal, never a guess.
        raw_case(
            "obs-fold continuation line",
            "GET /realms/x HTTP/1.1\r\nHost: app.test\r\nX-A: a\r\n b\r\nConnection: close\r\n\r\n",
            400,
        ),
        raw_case(
            "Transfer-Encoding folded onto a second line",
            "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding:\r\n chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
            400,
        ),
        raw_case(
            "chunked named twice",
            "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
            400,
        ),
        raw_case(
            "bare LF after a chunk size",
            "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\nabc\r\n0\r\n\r\n",
            400,
        ),
        raw_case(
            "chunk data longer than its size, a request behind it",
            "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcGET /metrics HTTP/1.1\r\nHost: app.test\r\n\r\n0\r\n\r\n",
            400,
        ),
        // h2c smuggling: a backend that took the upgrade would speak HTTP/2 with the client
        // through the tunnel, past every rule. The request goes on without `Upgrade`.
        raw_case(
            "h2c upgrade",
            "GET /realms/x HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
            200,
        ),
        raw_case(
            "chunk extension flood",
            &format!(
                "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1;{}\r\na\r\n0\r\n\r\n",
                "e".repeat(5000)
            ),
            400,
        ),
        raw_case(
            "NUL in a header value",
            "GET /realms/x HTTP/1.1\r\nHost: app.test\r\nX-A: a\0b\r\nConnection: close\r\n\r\n",
            400,
        ),
        raw_case(
            "lone CR in a header value",
            "GET /realms/x HTTP/1.1\r\nHost: app.test\r\nX-A: a\rb\r\nConnection: close\r\n\r\n",
            400,
        ),
        raw_case(
            "Content-Length with a sign",
            "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nContent-Length: +4\r\nConnection: close\r\n\r\nabcd",
            400,
        ),
        // RFC 9110 §2.5: a later minor version is served as the highest one implemented.
        raw_case(
            "HTTP/1.2",
            "GET /realms/x HTTP/1.2\r\nHost: app.test\r\nConnection: close\r\n\r\n",
            200,
        ),
        raw_case(
            "HTTP/3.0 in an HTTP/1 request line",
            "GET /realms/x HTTP/3.0\r\nHost: app.test\r\nConnection: close\r\n\r\n",
            505,
        ),
        // Agreeing Content-Length values are one length (RFC 9112 §6.3): served.
        raw_case(
            "a Content-Length list that agrees",
            "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4, 4\r\nConnection: close\r\n\r\nabcd",
            200,
        ),
        // Limits.
        get("URI too long", &format!("/realms/{}", "a".repeat(5000)), 414),
        raw_case(
            "header too large",
            &format!("GET /realms/x HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "b".repeat(20_000)),
            431,
        ),
        raw_case(
            "too many headers",
            &format!(
                "GET /realms/x HTTP/1.1\r\nHost: app.test\r\n{}Connection: close\r\n\r\n",
                (0..60).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()
            ),
            431,
        ),
        raw_case(
            "declared body too large",
            "POST /realms/x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n",
            413,
        ),
        raw_case(
            "streamed body too large",
            &format!(
                "POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
                format!("8000\r\n{}\r\n", "c".repeat(0x8000)).repeat(4)
            ),
            413,
        ),
        // Allowed requests still pass, with hostile headers removed.
        raw_case(
            "path override headers",
            "GET /echo HTTP/1.1\r\nHost: app.test\r\nX-Original-URL: /metrics\r\nX-Rewrite-URL: /metrics\r\nX_Forwarded_For: 6.6.6.6\r\nConnection: close\r\n\r\n",
            200,
        ),
        get("an allowed path", "/realms/master/.well-known/openid-configuration", 200),
        get("escaped allowed path is forwarded canonical", "/realms/%6Daster//account/./", 200),
        get("a path that only starts like metrics", "/metricsfoo", 200),
    ];
    for c in &mut cases {
        c.request = c.request.replace("{}", "");
    }
    cases
}

/// What the most lenient backend would route on (see `paths::lenient_segments`).
fn as_backend_reads(target: &str) -> Vec<String> {
    sessiongate::paths::lenient_segments(target.split('?').next().unwrap_or_default())
}

fn is_denied(segments: &[String]) -> bool {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    matches!(
        s.as_slice(),
        ["metrics", ..] | ["health", ..] | ["auth", "metrics", ..] | ["auth", "health", ..]
    )
}

#[tokio::test]
async fn raw_http1_attacks_get_their_answers_and_no_denied_path_arrives() {
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let proxy = proxy_with_relative_path(&node).await;
    let mut failures = Vec::new();
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for case in &cases {
        let response = raw(proxy.plain_addr(), case.request.as_bytes()).await;
        let got = status_of(&response);
        if case.also.is_some_and(|also| !response.contains(also)) {
            failures.push(format!(
                "{}: no `{}` in {response}",
                case.what,
                case.also.unwrap_or("")
            ));
        }
        // One answer, then the close: bytes after a refused request are never read as another.
        let answers = response.matches("HTTP/1.1 ").count();
        if answers != 1 {
            failures.push(format!("{}: {answers} answers: {response}", case.what));
        }
        if got != case.status {
            failures.push(format!(
                "{}: expected {}, got {got}: {}",
                case.what,
                case.status,
                response.lines().next().unwrap_or("(nothing)")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    let seen = node.seen();
    assert!(!seen.is_empty());
    for target in &seen {
        assert!(
            !is_denied(&as_backend_reads(target)),
            "a denied path reached the backend: {target}"
        );
    }
    // The canonical form is what was forwarded.
    assert!(
        seen.contains(&"/realms/master/account/".to_string()),
        "{seen:?}"
    );
    // The proxy is still serving everyone.
    assert_eq!(get_plain(proxy.plain_addr(), "/realms/x").await.0, 200);
}

async fn proxy_with_relative_path(node: &sessiongate::demo::DemoNode) -> Harness {
    let plain =
        "[[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nrelative_path = \"/auth\"\n";
    Harness::start_with(
        plain,
        &format!("{{ static = [\"{}\"] }}", node.addr),
        LIMITS,
    )
    .await
}

#[tokio::test]
async fn http2_gets_the_same_rules() {
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let proxy = proxy(&node).await;
    let mut send = h2(proxy.tls("default.test", &[b"h2"]).await).await;
    for (path, status) in [
        ("/metrics", 404),
        ("/%6Detrics", 404),
        ("//health/ready", 404),
        ("/realms/../metrics", 404),
        ("/metrics;x", 404),
        ("/realms%2Fx", 400),
        ("/%00", 400),
        ("/realms/%c0%ae%c0%ae/metrics", 400),
        ("/%256detrics", 400),
        ("/Metrics.json", 404),
        ("/realms/x", 200),
    ] {
        let req = http::Request::get(format!("https://default.test{path}"))
            .body(empty())
            .unwrap();
        let (got, _, _) = read(send.send_request(req).await.unwrap()).await;
        assert_eq!(got, status, "{path}");
    }
    // :authority and Host disagreeing.
    let req = http::Request::get("https://default.test/realms/x")
        .header("host", "evil.test")
        .body(empty())
        .unwrap();
    assert_eq!(read(send.send_request(req).await.unwrap()).await.0, 400);
    for target in node.seen() {
        assert!(!is_denied(&as_backend_reads(&target)), "{target}");
    }
    let _ = proxy;
}

#[tokio::test]
async fn a_slow_body_gets_408_and_others_are_still_served() {
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let proxy = proxy(&node).await;
    let mut slow = tokio::net::TcpStream::connect(proxy.plain_addr())
        .await
        .unwrap();
    slow.write_all(
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 50000\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    // Meanwhile, everyone else is served.
    assert_eq!(get_plain(proxy.plain_addr(), "/realms/x").await.0, 200);
    let got = wait_closed(&mut slow).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn per_address_connection_limit_refuses_the_excess_only() {
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let proxy = Harness::start(&[node.addr], "[limits]\nmax_connections_per_ip = 2\n").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            tokio::net::TcpStream::connect(proxy.plain_addr())
                .await
                .unwrap(),
        );
    }
    // The third connection from the same address is closed at once, unanswered.
    assert_eq!(one_request(proxy.plain_addr()).await, "");
    // Once one closes, a new connection is served.
    drop(held.pop());
    eventually("a slot frees up", || async {
        one_request(proxy.plain_addr())
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;
    let metrics = proxy.metrics().await;
    assert!(metric(
        &metrics,
        "sessiongate_connection_errors_total{kind=\"per_ip_limit\",listener=\"plain\"}"
    )
    .is_some_and(|n| n >= 1.0));
}

/// A request on a new connection, answered then closed: what came back (nothing when the
/// connection was refused).
async fn one_request(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s
        .write_all(b"GET /realms/x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut out))
        .await
        .expect("answered or closed");
    String::from_utf8_lossy(&out).into_owned()
}

/// A new connection that has had one request answered, and stays open (kept alive).
async fn kept_alive(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /realms/x HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.0.starts_with("HTTP/1.1 200"));
    s
}

/// The connections a client holds outlive a reload, and so does their count: a reload does
/// not hand every client a second allowance. A new cap applies to them at once.
#[tokio::test]
async fn per_address_counts_survive_a_reload() {
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let extra = "[limits]\nmax_connections_per_ip = 2\n[timeouts]\nclose_grace = \"1h\"\n";
    let proxy = Harness::start(&[node.addr], extra).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(kept_alive(proxy.plain_addr()).await);
    }
    // Still open after the reload (idle, they wait `close_grace` for a last request).
    proxy
        .reload_edited(|t| t.replace("close_grace = \"1h\"", "close_grace = \"2h\""))
        .await;
    assert_eq!(one_request(proxy.plain_addr()).await, "", "over the cap");
    proxy
        .reload_edited(|t| t.replace("max_connections_per_ip = 2", "max_connections_per_ip = 3"))
        .await;
    assert!(one_request(proxy.plain_addr())
        .await
        .starts_with("HTTP/1.1 200"));
}

/// `forwarded_for = "client"`: a balancer that appends to what the client sent (AWS ALB's
/// default) leaves the client's own word first in the list, which is the address Keycloak's
/// Quarkus reads. The backend is told only the client the proxy resolved, the address its
/// rules use: the nearest in the chain that no trusted proxy stands for.
#[tokio::test]
async fn a_trusted_chain_can_reach_the_backend_as_the_client_alone() {
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let listeners = r#"
[[listener]]
name = "resolving"
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.0/8", "10.0.0.0/8"]
forwarded_for = "client"
[[listener.restrict]]
paths = ["/admin/"]
allow_from = ["203.0.113.0/24"]
"#;
    let proxy = listeners_before(&node, listeners).await;
    let addr = proxy.server.listener_addr("resolving").unwrap();
    let request = |path: &str, xff: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: kc.internal\r\nX-Forwarded-For: {xff}\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Host: sso.example.test\r\n\
             Forwarded: for=6.6.6.6, for=203.0.113.9\r\nConnection: close\r\n\r\n"
        )
    };
    let response = raw(
        addr,
        request("/echo", "6.6.6.6, 203.0.113.9, 10.0.0.5").as_bytes(),
    )
    .await;
    assert_eq!(
        echoed_header(&response, "x-forwarded-for"),
        vec!["203.0.113.9"]
    );
    assert_eq!(
        echoed_header(&response, "forwarded"),
        vec!["for=203.0.113.9;proto=https;host=sso.example.test"]
    );
    assert_eq!(echoed_header(&response, "x-forwarded-proto"), vec!["https"]);
    assert_eq!(
        echoed_header(&response, "x-forwarded-host"),
        vec!["sso.example.test"]
    );
    // The address the restrict rule judged is the one the backend is told.
    let admitted = raw(addr, request("/admin/x", "6.6.6.6, 203.0.113.9").as_bytes()).await;
    assert!(admitted.starts_with("HTTP/1.1 200"), "{admitted}");
    let refused = raw(addr, request("/admin/x", "203.0.113.9, 6.6.6.6").as_bytes()).await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
}

#[tokio::test]
async fn trusted_proxies_extend_the_chain_and_hsts_is_sent() {
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let listeners = r#"
[[listener]]
name = "trusting"
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.0/8"]
[[listener]]
name = "tls"
listen = "127.0.0.1:0"
hsts = "max-age=31536000; includeSubDomains"
tls = { cert = "default.crt", key = "default.key" }
"#;
    let proxy = listeners_before(&node, listeners).await;
    let trusting = proxy.server.listener_addr("trusting").unwrap();
    let response = raw(
        trusting,
        b"GET /echo HTTP/1.1\r\nHost: auth.example.test\r\nX-Forwarded-For: 203.0.113.7\r\n\
          X-Forwarded-Proto: https\r\nForwarded: for=203.0.113.7;proto=https\r\n\
          X-Original-URL: /metrics\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        echoed_header(&response, "x-forwarded-for"),
        vec!["203.0.113.7, 127.0.0.1"]
    );
    assert_eq!(
        echoed_header(&response, "x-forwarded-proto"),
        vec!["https"],
        "the first hop's scheme"
    );
    assert_eq!(
        echoed_header(&response, "forwarded"),
        vec!["for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host=auth.example.test"]
    );
    assert!(
        echoed_header(&response, "x-original-url").is_empty(),
        "{response}"
    );
    assert!(
        !response
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "HSTS only over TLS"
    );

    let mut send = h2(proxy.tls("default.test", &[b"h2"]).await).await;
    let req = http::Request::get("https://default.test/realms/x")
        .body(empty())
        .unwrap();
    let (status, headers, _) = read(send.send_request(req).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    // Also on the proxy's own answers.
    let req = http::Request::get("https://default.test/metrics")
        .body(empty())
        .unwrap();
    let (status, headers, _) = read(send.send_request(req).await.unwrap()).await;
    assert_eq!(status, 404);
    assert!(headers.contains_key("strict-transport-security"));
}

#[tokio::test]
async fn the_connection_cap_applies_back_pressure_not_errors() {
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let proxy = Harness::start(&[node.addr], "[limits]\nmax_connections = 2\n").await;
    let plain = proxy.plain_addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(plain).await.unwrap();
        s.write_all(b"GET /realms/x HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    // The third connection waits in the backlog: connected, but not served...
    let waiting = tokio::spawn(async move { get_plain(plain, "/realms/x").await.0 });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served beyond the cap"
    );
    // ...until a slot frees up; then it gets its answer, not an error.
    drop(held.pop());
    assert_eq!(
        tokio::time::timeout(PATIENCE, waiting)
            .await
            .unwrap()
            .unwrap(),
        200
    );
}

/// A proxy whose listener takes at most `cap` connections, and `cap` kept-alive connections to
/// it, which a reload leaves open (idle, they wait `close_grace` for one more request).
async fn at_connection_cap(
    cap: usize,
) -> (
    sessiongate::demo::DemoNode,
    Harness,
    Vec<tokio::net::TcpStream>,
) {
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let extra = format!("[limits]\nmax_connections = {cap}\n[timeouts]\nclose_grace = \"1h\"\n");
    let proxy = Harness::start(&[node.addr], &extra).await;
    let mut held = Vec::new();
    for _ in 0..cap {
        held.push(kept_alive(proxy.plain_addr()).await);
    }
    (node, proxy, held)
}

/// A new connection is not served while `held` are open, and is once the last of them closes.
async fn served_only_after_one_closes(
    addr: std::net::SocketAddr,
    held: &mut Vec<tokio::net::TcpStream>,
) {
    let waiting = tokio::spawn(async move { one_request(addr).await });
    // A wait that can only hide the fault, never fail a correct proxy: nothing frees a slot.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "served beyond the cap");
    drop(held.pop());
    let answer = tokio::time::timeout(PATIENCE, waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// The listener's connection cap counts the connections a reload left open, whether the
/// reload keeps the cap or changes it: a lower cap is not met by letting in more, a higher one
/// lets in more at once.
#[tokio::test]
async fn the_connection_cap_counts_the_connections_a_reload_left_open() {
    let (_node, proxy, mut held) = at_connection_cap(2).await;
    let plain = proxy.plain_addr();
    proxy
        .reload_edited(|t| t.replace("close_grace = \"1h\"", "close_grace = \"2h\""))
        .await;
    // One old connection closes: a new one may take its place, and only one.
    drop(held.pop());
    held.push(kept_alive(plain).await);
    served_only_after_one_closes(plain, &mut held).await;

    let (_node, proxy, mut held) = at_connection_cap(3).await;
    let plain = proxy.plain_addr();
    proxy
        .reload_edited(|t| t.replace("max_connections = 3", "max_connections = 1"))
        .await;
    // Two of the three close: the one still open is the new cap.
    held.truncate(1);
    served_only_after_one_closes(plain, &mut held).await;
    // Raised while at the cap: a second connection at once.
    held.push(kept_alive(plain).await);
    proxy
        .reload_edited(|t| t.replace("max_connections = 1", "max_connections = 2"))
        .await;
    held.push(kept_alive(plain).await);
}

#[tokio::test]
async fn http2_header_list_limit_answers_431_to_that_stream_only() {
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let proxy = proxy(&node).await;
    let mut send = h2(proxy.tls("default.test", &[b"h2"]).await).await;
    let req = http::Request::get("https://default.test/realms/x")
        .header("x-big", "b".repeat(20_000))
        .body(empty())
        .unwrap();
    // The HTTP/2 layer answers this stream 431 itself; the request never reaches the proxy.
    assert_eq!(send.send_request(req).await.unwrap().status(), 431);
    // The connection, and everyone else, carry on.
    let req = http::Request::get("https://default.test/realms/x")
        .body(empty())
        .unwrap();
    assert_eq!(read(send.send_request(req).await.unwrap()).await.0, 200);
    assert!(node.seen().iter().all(|t| t == "/realms/x"));
}

#[tokio::test]
async fn http2_concurrent_streams_are_capped() {
    let mut gate = GateBackend::start().await;
    let proxy = Harness::start(&[gate.addr], "[limits]\nh2_max_concurrent_streams = 2\n").await;
    let mut send = h2(proxy.tls("default.test", &[b"h2"]).await).await;
    // One exchange first, so the client has the server's SETTINGS (and its limit) in hand;
    // streams opened before that are refused with REFUSED_STREAM instead, also correct.
    let warm = {
        let mut send = send.clone();
        tokio::spawn(async move {
            let req = http::Request::get("https://default.test/warm")
                .body(empty())
                .unwrap();
            send.send_request(req).await.unwrap().status()
        })
    };
    assert_eq!(gate.wait_arrival().await, "/warm");
    gate.release(1);
    assert_eq!(warm.await.unwrap(), 200);
    send.ready().await.unwrap();
    let mut requests = Vec::new();
    for i in 0..3 {
        let mut send = send.clone();
        requests.push(tokio::spawn(async move {
            let req = http::Request::get(format!("https://default.test/s{i}"))
                .body(empty())
                .unwrap();
            send.send_request(req).await.unwrap().status()
        }));
    }
    // Two streams reach the backend; the third waits for the server's limit to allow it.
    gate.wait_arrival().await;
    gate.wait_arrival().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        gate.arrived.try_recv().is_err(),
        "a third stream was opened beyond the limit of 2"
    );
    gate.release(1);
    gate.wait_arrival().await;
    gate.release(2);
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn a_rapid_reset_flood_costs_the_backend_nothing_and_others_are_served() {
    let node = sessiongate::demo::DemoNode::start("node-1", localhost())
        .await
        .unwrap();
    let proxy = Harness::start(&[node.addr], "").await;
    // A raw HTTP/2 client that opens streams and resets each at once (CVE-2023-44487).
    let tls = proxy.tls("default.test", &[b"h2"]).await;
    let (mut client, connection) = h2::client::handshake(tls).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut sent = 0;
    for i in 0..2_000 {
        let Ok(ready) = client.clone().ready().await else {
            break;
        };
        client = ready;
        let req = http::Request::get(format!("https://default.test/flood{i}"))
            .body(())
            .unwrap();
        match client.send_request(req, false) {
            Ok((_response, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                sent += 1;
            }
            Err(_) => break,
        }
    }
    assert_eq!(sent, 2_000);
    // The harm of the attack is amplification: each reset stream costing backend work. Here a
    // reset cancels the stream before anything is forwarded.
    drop(client);
    let _ = tokio::time::timeout(PATIENCE, driver).await;
    let reached = node
        .seen()
        .iter()
        .filter(|t| t.starts_with("/flood"))
        .count();
    assert!(
        reached <= 20,
        "{reached} of {sent} reset streams reached the backend"
    );
    // Everyone else is served.
    assert_eq!(get_plain(proxy.plain_addr(), "/realms/x").await.0, 200);
}

/// The HTTP/2 slow read (CVE-2019-9511 and 9517's family): a client opens a stream for a large
/// answer and never gives back flow-control window, while its connection stays lively. The
/// stream is reset once nothing has moved on it for the idle timeout, as an HTTP/1.1
/// connection that reads nothing is closed, and its backend connection goes with it; the
/// client's other streams go on meanwhile and after.
#[tokio::test]
async fn an_http2_stream_the_client_gives_no_window_is_reset_and_the_rest_go_on() {
    let node = &start_nodes(1).await[0];
    // Long enough that the window is spent, and a second stream served, well before it.
    let proxy = Harness::start(&[node.addr], "[timeouts]\nidle = \"2s\"\n").await;
    let tls = proxy.tls("default.test", &[b"h2"]).await;
    // The connection's window is large, so only the stream's own (64 KiB) runs out.
    let (client, connection) = h2::client::Builder::new()
        .initial_connection_window_size(16 << 20)
        .handshake::<_, bytes::Bytes>(tls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let get = |path: &str| {
        http::Request::get(format!("https://default.test{path}"))
            .body(())
            .unwrap()
    };
    let mut client = client.ready().await.unwrap();
    let (response, _) = client
        .send_request(get("/bytes?n=100000000"), true)
        .unwrap();
    let mut body = response.await.unwrap().into_body();
    let served = format!(
        "sessiongate_requests_total{{backend=\"{}\",listener=\"tls\",status_class=\"2xx\"}}",
        node.addr
    );

    // Read what the window allows and give none of it back: no WINDOW_UPDATE goes out.
    let mut got = 0usize;
    let mut short = 0;
    let reset = loop {
        match tokio::time::timeout(PATIENCE, body.data()).await {
            Ok(Some(Ok(data))) => {
                got += data.len();
                // Meanwhile, with the window spent, other streams are served at once.
                if got >= 65_535 && short == 0 {
                    let mut client = client.clone().ready().await.unwrap();
                    let (response, _) = client.send_request(get("/"), true).unwrap();
                    assert_eq!(response.await.unwrap().status(), 200);
                    short += 1;
                    assert_eq!(
                        metric(&proxy.metrics().await, &served),
                        Some(1.0),
                        "the stalled stream is still in flight"
                    );
                }
            }
            Ok(Some(Err(e))) => break e,
            Ok(None) => panic!("the stream ended after {got} bytes instead of being reset"),
            Err(_) => panic!("the stalled stream was not reset within {PATIENCE:?}"),
        }
    };
    assert_eq!(reset.reason(), Some(h2::Reason::CANCEL), "{reset}");
    assert_eq!(got, 65_535, "the stream's whole window and no more");
    assert_eq!(short, 1);
    // The request is over: counted, its backend connection closed rather than kept.
    assert_eq!(metric(&proxy.metrics().await, &served), Some(2.0));
    // The connection serves on.
    let mut client = client.ready().await.unwrap();
    let (response, _) = client.send_request(get("/after"), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
}

/// A client that stops reading its socket altogether, over HTTP/2: its stream is reset, and
/// the connection, idle then but unable to take its GOAWAY, is closed instead of kept for
/// ever with the kernel's buffers full.
#[tokio::test]
async fn an_http2_client_that_reads_nothing_is_cut_off() {
    let node = &start_nodes(1).await[0];
    let proxy = Harness::start(&[node.addr], "[timeouts]\nidle = \"300ms\"\n").await;
    let tcp = tokio::net::TcpStream::connect(proxy.plain_addr())
        .await
        .unwrap();
    let (io, reading) = StopsReading::new(tcp);
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 30)
        .initial_connection_window_size(1 << 30)
        .handshake::<_, bytes::Bytes>(io)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get("http://default.test/bytes?n=1000000000")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(req, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    reading.stop();
    connections_closed(&proxy, "plain").await;
    let served = format!(
        "sessiongate_requests_total{{backend=\"{}\",listener=\"plain\",status_class=\"2xx\"}}",
        node.addr
    );
    assert_eq!(metric(&proxy.metrics().await, &served), Some(1.0));
    assert_eq!(get_plain(proxy.plain_addr(), "/").await.0, 200);
}

/// Writes `frame` over and over, about 64 KiB a write, reading nothing, until a write makes
/// no progress for a second (the proxy has stopped reading: `Ok`) or fails (it closed the
/// connection: `Err`); either way with the bytes written. Panics past 32 MiB taken, and
/// checks every 4 MiB that a plain client is still served.
async fn flood(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    frame: &[u8],
    proxy: &Harness,
) -> Result<usize, usize> {
    let chunk: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * (65_536 / frame.len()))
        .collect();
    let mut sent = 0;
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(1), tls.write_all(&chunk)).await {
            Err(_) => return Ok(sent),
            Ok(Err(_)) => return Err(sent),
            Ok(Ok(())) => sent += chunk.len(),
        }
        assert!(sent < 32 << 20, "{} MiB of a flood taken", sent >> 20);
        if sent % (4 << 20) < chunk.len() {
            assert_eq!(get_plain(proxy.plain_addr(), "/").await.0, 200);
        }
    }
}

/// PING and SETTINGS floods from a client that reads none of the answers (CVE-2019-9512 and
/// 9515): the proxy owes an ACK for each frame, and stops reading once it cannot write them,
/// so the flood meets back-pressure instead of filling the proxy's memory with ACKs. The
/// connection, idle and unable to take its GOAWAY, is then closed; everyone else is served
/// throughout.
#[tokio::test]
async fn floods_that_read_no_answers_meet_back_pressure_and_are_closed() {
    let node = &start_nodes(1).await[0];
    // Long enough for a flood to stall on its own before the idle connection is closed.
    let proxy = Harness::start(
        &[node.addr],
        "[timeouts]\nidle = \"3s\"\nclose_grace = \"300ms\"\n",
    )
    .await;
    // Frame heads: length, type, flags, stream 0. A PING carries 8 bytes; a SETTINGS nothing.
    let floods: [(&str, &[u8]); 2] = [
        ("PING", b"\0\0\x08\x06\0\0\0\0\0pingpong"),
        ("SETTINGS", b"\0\0\0\x04\0\0\0\0\0"),
    ];
    for (what, frame) in floods {
        let mut tls = raw_h2(&proxy).await;
        let taken = flood(&mut tls, frame, &proxy).await;
        assert!(
            taken.is_ok(),
            "{what}: the connection failed instead of stalling"
        );
        connections_closed(&proxy, "tls").await;
        assert_eq!(get_plain(proxy.plain_addr(), "/").await.0, 200);
    }
}

/// A header block that never ends (the CONTINUATION flood of 2024, CVE-2024-27316's family):
/// the proxy would have to buffer it whole before it could decode it. h2 counts the frames of
/// a header block and closes the connection past a few, long before its idle timeout.
#[tokio::test]
async fn a_header_block_that_never_ends_is_cut_off() {
    let node = &start_nodes(1).await[0];
    let proxy = Harness::start(&[node.addr], "[timeouts]\nidle = \"1h\"\n").await;
    let mut tls = raw_h2(&proxy).await;
    // HEADERS on stream 1 with END_STREAM but not END_HEADERS, then CONTINUATION frames
    // without END_HEADERS, each a literal field (`a: b`) in HPACK.
    tls.write_all(b"\0\0\x05\x01\x01\0\0\0\x01\x40\x01a\x01b")
        .await
        .unwrap();
    let taken = flood(&mut tls, b"\0\0\x05\x09\0\0\0\0\x01\x40\x01a\x01b", &proxy).await;
    // What was written before the close reached the kernel's buffers (some MiB on loopback),
    // not the proxy: the close, long before the idle timeout, is what tells.
    taken.expect_err("the proxy kept reading an endless header block");
    connections_closed(&proxy, "tls").await;
    assert_eq!(get_plain(proxy.plain_addr(), "/").await.0, 200);
}
