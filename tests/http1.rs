//! The proxy's own HTTP/1.1 (src/http1): what a client and a backend can do on the wire and
//! what each must then get. Raw bytes on both sides, where a well-behaved library would never
//! produce the case.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    let out = raw(
        proxy.plain_addr(),
        b"GET /echo?n=1 HTTP/1.1\r\nHost: app.test\r\n\r\nGET /echo?n=2 HTTP/1.1\r\nHost: app.test\r\n\r\nGET /echo?n=3 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 3, "{out}");
    let order: Vec<usize> = ["/echo?n=1", "/echo?n=2", "/echo?n=3"]
        .iter()
        .map(|t| out.find(&format!("GET {t} HTTP/1.1")).expect(t))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{out}");
    assert!(
        out.contains("connection: close\r\n"),
        "the last one closes: {out}"
    );
}

/// Each request on a kept-alive connection reaches the backend with its own fields only:
/// nothing of one request's head may outlive it into the next (a reused map that was not
/// emptied did, when that was tried; BENCHMARKS.md).
#[tokio::test]
async fn a_request_on_a_kept_alive_connection_carries_only_its_own_fields() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    let mut send = h1(TcpStream::connect(proxy.plain_addr()).await.unwrap()).await;
    let first = http::Request::get("/echo?n=1")
        .header("host", "app.test")
        .header("x-only-first", "1")
        .header("cookie", "a=1")
        .body(empty())
        .unwrap();
    let (status, _, echo) = read(send.send_request(first).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(echoed_header(&echo, "x-only-first"), ["1"], "{echo}");
    for n in 2..4 {
        send.ready().await.unwrap();
        let next = http::Request::get(format!("/echo?n={n}"))
            .header("host", "app.test")
            .body(empty())
            .unwrap();
        let (status, _, echo) = read(send.send_request(next).await.unwrap()).await;
        assert_eq!(status, 200);
        assert!(echo.contains(&format!("/echo?n={n}")), "{echo}");
        assert!(echoed_header(&echo, "x-only-first").is_empty(), "{echo}");
        assert!(echoed_header(&echo, "cookie").is_empty(), "{echo}");
        assert_eq!(echoed_header(&echo, "host"), ["app.test"], "{echo}");
    }
}

#[tokio::test]
async fn http10_clients_keep_alive_only_when_they_ask() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    let mut tcp = TcpStream::connect(proxy.plain_addr()).await.unwrap();
    tcp.write_all(b"GET /echo HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("connection: keep-alive\r\n"), "{head}");
    // The backend was asked in HTTP/1.1, whatever the client spoke.
    assert!(body.contains("GET /echo HTTP/1.1"), "{body}");
    tcp.write_all(b"GET /echo HTTP/1.0\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let rest = String::from_utf8(wait_closed(&mut tcp).await).unwrap();
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    assert!(rest.contains("connection: close\r\n"), "{rest}");
}

#[tokio::test]
async fn chunked_and_close_delimited_backend_bodies_are_reframed_for_each_client() {
    let backend = RawBackend::start(|head| {
        if head.starts_with("GET /chunked") {
            RawReply::keep(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            )
        } else {
            // HTTP/1.0 style: no length, the body ends when the connection does.
            RawReply::close("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        }
    })
    .await;
    let proxy = Harness::start(&[backend.addr], "").await;

    // HTTP/1.1 client, both bodies on one connection: re-chunked, trailers dropped.
    let mut tcp = TcpStream::connect(proxy.plain_addr()).await.unwrap();
    tcp.write_all(b"GET /chunked HTTP/1.1\r\nHost: app.test\r\n\r\nGET /close HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let out = String::from_utf8(wait_closed(&mut tcp).await).unwrap();
    assert_eq!(
        out.matches("transfer-encoding: chunked\r\n").count(),
        2,
        "{out}"
    );
    assert!(
        out.contains("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "{out}"
    );
    assert!(out.contains("d\r\nuntil the end\r\n0\r\n\r\n"), "{out}");
    assert!(
        !out.contains("X-Trailer") && !out.contains("ext=1"),
        "{out}"
    );

    // HTTP/1.0 client: no chunks for it, the body ends with the connection.
    let out = raw(
        proxy.plain_addr(),
        b"GET /chunked HTTP/1.0\r\nHost: app.test\r\n\r\n",
    )
    .await;
    assert!(!out.contains("transfer-encoding"), "{out}");
    assert!(out.ends_with("\r\n\r\nhello world"), "{out}");
}

#[tokio::test]
async fn expect_100_continue_gets_its_go_ahead_and_the_backend_never_waits_for_one() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    let mut tcp = TcpStream::connect(proxy.plain_addr()).await.unwrap();
    tcp.write_all(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(PATIENCE, tcp.read_exact(&mut interim))
        .await
        .expect("a go-ahead before the body")
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    tcp.write_all(b"hello").await.unwrap();
    let (head, body) = read_response(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "5\n");

    tcp.write_all(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        .await
        .unwrap();
    tcp.read_exact(&mut interim).await.unwrap();
    tcp.write_all(b"ok").await.unwrap();
    let (_, echo) = read_response(&mut tcp).await;
    assert!(echoed_header(&echo, "expect").is_empty(), "{echo}");
}

/// A backend that answers as soon as it has a request's head, reading no body, and a proxy in
/// front of it.
async fn early<F>(reply: F) -> (RawBackend, Harness)
where
    F: Fn(&str) -> RawReply + Send + Sync + 'static,
{
    let backend = RawBackend::start_early(reply).await;
    let proxy = Harness::start(&[backend.addr], "").await;
    (backend, proxy)
}

const FIRST_BYTES: &[u8] = b"first bytes";
const CHUNKED: &str = "Transfer-Encoding: chunked";

/// A connection to the proxy that has sent an upload's head, framed by `framing` (a
/// Content-Length or `CHUNKED`), and only the first few bytes of its body.
async fn upload_start(proxy: &Harness, framing: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(proxy.plain_addr()).await.unwrap();
    let head = format!("POST /upload HTTP/1.1\r\nHost: app.test\r\n{framing}\r\n\r\n");
    let first = if framing == CHUNKED {
        [b"b\r\n", FIRST_BYTES, b"\r\n"].concat()
    } else {
        FIRST_BYTES.to_vec()
    };
    tcp.write_all(&[head.as_bytes(), &first].concat())
        .await
        .unwrap();
    tcp
}

fn sized(length: usize) -> String {
    format!("Content-Length: {length}")
}

/// A chunk of `n` bytes, framed.
fn chunk(n: usize) -> Vec<u8> {
    [format!("{n:x}\r\n").as_bytes(), &vec![b'x'; n], b"\r\n"].concat()
}

/// The connection has been answered with a 401 that keeps it open.
async fn kept_after_401(tcp: &mut TcpStream) {
    let (answer, body) = read_response(tcp).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(body, "who?\n");
}

/// The next request on a connection whose body's rest was dropped is the backend's second
/// head: a byte of the body taken for the start of a request would have got a 400.
async fn next_request_is_served(tcp: &mut TcpStream, backend: &RawBackend) {
    tcp.write_all(b"GET /next HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_response(tcp).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let heads = backend.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[1].starts_with("GET /next "), "{heads:?}");
    // The first backend connection had a request half sent: the second went on a new one.
    assert_eq!(backend.connections(), 2);
}

const WHO: &str = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nwho?\n";

#[tokio::test]
async fn a_backend_answering_before_the_body_is_read_is_heard_and_its_connection_dropped() {
    let (backend, proxy) = early(|_| {
        RawReply::keep("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig\n")
    })
    .await;
    // A head that promises a large body, and only the start of it.
    let mut tcp = upload_start(&proxy, &sized(1_000_000)).await;
    let out = String::from_utf8(wait_closed(&mut tcp).await).unwrap();
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("connection: close\r\n"), "{out}");
    assert!(out.ends_with("big\n"), "{out}");
    // That backend connection had a request half sent: it is never lent again.
    let _ = raw(
        proxy.plain_addr(),
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(backend.connections(), 2);
}

/// The answer comes before the end of a small body (a 401 to an upload, say): the proxy reads
/// and drops the rest after the answer and keeps the connection, as nginx does, so the client's
/// next request needs no new connection (and over TLS no new handshake). A client that never
/// sends the rest has its connection closed after a moment, not held.
#[tokio::test]
async fn a_small_body_the_answer_came_before_is_dropped_and_its_connection_kept() {
    let (backend, proxy) = early(|_| RawReply::keep(WHO)).await;
    let mut tcp = upload_start(&proxy, &sized(40_000)).await;
    kept_after_401(&mut tcp).await;
    tcp.write_all(&vec![b'x'; 40_000 - FIRST_BYTES.len()])
        .await
        .unwrap();
    next_request_is_served(&mut tcp, &backend).await;

    // The same start, and the rest never comes.
    let mut tcp = upload_start(&proxy, &sized(40_000)).await;
    let out = String::from_utf8(wait_closed(&mut tcp).await).unwrap();
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(out.ends_with("who?\n"), "{out}");
}

/// The same for a chunked body, whose size is not known ahead: its rest is dropped while no
/// more than 64 KiB of it comes, and a larger one closes the connection.
#[tokio::test]
async fn a_small_chunked_body_the_answer_came_before_is_dropped_and_its_connection_kept() {
    let (backend, proxy) = early(|_| RawReply::keep(WHO)).await;
    let mut tcp = upload_start(&proxy, CHUNKED).await;
    kept_after_401(&mut tcp).await;
    let rest = [
        chunk(10_000),
        chunk(10_000),
        chunk(3),
        b"0\r\nx-sum: 1\r\n\r\n".to_vec(),
    ];
    tcp.write_all(&rest.concat()).await.unwrap();
    next_request_is_served(&mut tcp, &backend).await;

    // 80 KB more: dropped up to the bound, then the connection closes with nothing more said.
    let mut tcp = upload_start(&proxy, CHUNKED).await;
    kept_after_401(&mut tcp).await;
    let _ = tcp
        .write_all(&[chunk(40_000), chunk(40_000)].concat())
        .await;
    let _ = tcp
        .write_all(b"0\r\n\r\nGET /never HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(wait_closed(&mut tcp).await, b"");
    assert!(
        !backend.heads().iter().any(|h| h.starts_with("GET /never")),
        "{:?}",
        backend.heads()
    );
}

/// A backend that answers before reading the body and closes its connection, as a server
/// refusing an upload does: the proxy's next write of the body fails (the backend reset the
/// connection), but the answer is already there, and the client gets it, not a 502. Ten
/// clients, since whether the proxy's write fails before it reads depends on timing.
#[tokio::test]
async fn a_backend_that_answers_early_and_closes_is_still_heard() {
    let (_backend, proxy) = early(|_| {
        RawReply::close("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig\n")
    })
    .await;
    for _ in 0..10 {
        let tcp = TcpStream::connect(proxy.plain_addr()).await.unwrap();
        let (mut from, mut to) = tcp.into_split();
        // The whole body, as fast as the proxy takes it, until it stops taking it.
        let upload = tokio::spawn(async move {
            let body = vec![b'x'; 4 << 20];
            let head = format!(
                "POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = to.write_all(head.as_bytes()).await;
            let _ = to.write_all(&body).await;
            to
        });
        let out = String::from_utf8(wait_closed(&mut from).await).unwrap();
        assert!(out.starts_with("HTTP/1.1 413"), "{out}");
        assert!(out.ends_with("big\n"), "{out}");
        drop(tokio::time::timeout(PATIENCE, upload).await);
    }
}

/// A 204 may not declare a body (RFC 9110 §8.6), and a backend's Content-Length on one is not
/// passed on: an HTTP/1.1 client that read it would take the next answer's first bytes for
/// this one's body, and an HTTP/2 client would reset the stream.
#[tokio::test]
async fn a_204_reaches_clients_without_the_length_its_backend_gave_it() {
    let backend = RawBackend::start(|_| {
        RawReply::keep("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
    })
    .await;
    let proxy = Harness::start(&[backend.addr], "").await;
    let out = raw(
        proxy.plain_addr(),
        b"GET /a HTTP/1.1\r\nHost: app.test\r\n\r\nGET /b HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        out.matches("HTTP/1.1 204 No Content\r\n").count(),
        2,
        "{out}"
    );
    assert!(
        !out.to_ascii_lowercase().contains("content-length"),
        "{out}"
    );
    let mut send = h2(TcpStream::connect(proxy.plain_addr()).await.unwrap()).await;
    let req = http::Request::get("http://app.test/c")
        .body(empty())
        .unwrap();
    let (status, headers, body) = read(send.send_request(req).await.unwrap()).await;
    assert_eq!((status, body.as_str()), (204, ""));
    assert!(!headers.contains_key("content-length"), "{headers:?}");
}

#[tokio::test]
async fn interim_answers_from_the_backend_are_not_passed_on() {
    let backend = RawBackend::start(|_| {
        RawReply::keep("HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    })
    .await;
    let proxy = Harness::start(&[backend.addr], "").await;
    let out = raw(
        proxy.plain_addr(),
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(!out.contains("103") && out.ends_with("\r\n\r\nok"), "{out}");
}

#[tokio::test]
async fn a_backend_body_cut_short_closes_the_client_connection_and_others_are_served() {
    let backend = RawBackend::start(|head| {
        if head.starts_with("GET /short") {
            RawReply::close("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        } else {
            RawReply::keep("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }
    })
    .await;
    let proxy = Harness::start(&[backend.addr], "").await;
    let mut tcp = TcpStream::connect(proxy.plain_addr()).await.unwrap();
    tcp.write_all(b"GET /short HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    // The client learns the body is short the only way left once the head is out: the
    // connection closes before the promised length.
    let out = String::from_utf8(wait_closed(&mut tcp).await).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("\r\n\r\nabc"),
        "{out}"
    );
    assert_eq!(get_plain(proxy.plain_addr(), "/").await.0, 200);
}

#[tokio::test]
async fn a_response_in_a_transfer_coding_besides_chunked_gets_502_not_undecodable_bytes() {
    // `gzip, chunked` on a kept connection would be read to a close that never comes, and
    // plain `gzip` passed on without its hop-by-hop Transfer-Encoding would reach the client as
    // if it were the body: both are refused, over HTTP/1.1 and HTTP/2 alike.
    let backend = RawBackend::start(|head| {
        if head.starts_with("GET /gzip-chunked") {
            RawReply::keep(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\n\x1f\x8b\x08\0\0\r\n0\r\n\r\n")
        } else if head.starts_with("GET /gzip") {
            RawReply::close(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b\x08\0\0")
        } else {
            RawReply::keep("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }
    })
    .await;
    let proxy = Harness::start(&[backend.addr], "").await;
    for path in ["/gzip-chunked", "/gzip"] {
        let (status, _, _) = get_plain(proxy.plain_addr(), path).await;
        assert_eq!(status, 502, "{path} over HTTP/1.1");
        let mut send = h2(proxy.tls("default.test", &[b"h2"]).await).await;
        let req = http::Request::get(path)
            .header("host", "default.test")
            .body(empty())
            .unwrap();
        let (status, _, _) = read(send.send_request(req).await.unwrap()).await;
        assert_eq!(status, 502, "{path} over HTTP/2");
    }
    assert_eq!(get_plain(proxy.plain_addr(), "/").await.0, 200);
    let metrics = proxy.metrics().await;
    let refused = format!(
        "sessiongate_upstream_errors_total{{backend=\"{}\",kind=\"protocol\"}}",
        backend.addr
    );
    assert_eq!(metric(&metrics, &refused), Some(4.0), "{metrics}");
}

#[tokio::test]
async fn kept_alive_connections_the_backend_closed_are_never_used() {
    // Answers as if keeping the connection, then closes it (as a backend's idle timeout does).
    let backend =
        RawBackend::start(|_| RawReply::close("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
            .await;
    let proxy = Harness::start(&[backend.addr], "").await;
    for _ in 0..10 {
        let (status, _, body) = get_plain(proxy.plain_addr(), "/").await;
        assert_eq!((status, body.as_str()), (200, "ok"));
    }
    assert_eq!(backend.connections(), 10);
    let metrics = proxy.metrics().await;
    assert!(
        !metrics.contains("sessiongate_upstream_errors_total{"),
        "{metrics}"
    );
}

#[tokio::test]
async fn chunked_request_bodies_are_decoded_and_sent_on_with_a_length_or_chunked() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "").await;
    let out = raw(
        proxy.plain_addr(),
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n",
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("\r\n\r\n7\n"),
        "{out}"
    );
}

#[tokio::test]
async fn a_body_sent_after_a_refusal_does_not_reset_the_answer() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "[limits]\nmax_body_size = \"64KiB\"\n").await;
    let mut tcp = TcpStream::connect(proxy.plain_addr()).await.unwrap();
    tcp.write_all(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 600000\r\n\r\n")
        .await
        .unwrap();
    // The client sends its body regardless, as many do; the proxy reads and drops it while it
    // closes, so the answer arrives instead of a reset.
    let body = vec![b'x'; 600_000];
    let (mut rx, mut tx) = tcp.split();
    let (written, out) = tokio::join!(tx.write_all(&body), async {
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout(PATIENCE, rx.read(&mut chunk)).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    let _ = written;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_cut_off_after_the_idle_timeout() {
    let nodes = start_nodes(1).await;
    let proxy = Harness::start(&[nodes[0].addr], "[timeouts]\nidle = \"300ms\"\n").await;
    let mut tcp = TcpStream::connect(proxy.plain_addr()).await.unwrap();
    tcp.write_all(b"GET /bytes?n=100000000 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    // Read nothing until the proxy has given up on this connection, then drain: the stream
    // ends long before 100 MB.
    connections_closed(&proxy, "plain").await;
    let mut got = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    let drained = tokio::time::timeout(PATIENCE, async {
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the proxy closed the connection");
    assert!(got < 100_000_000, "{got} bytes");
    assert_eq!(get_plain(proxy.plain_addr(), "/").await.0, 200);
}
