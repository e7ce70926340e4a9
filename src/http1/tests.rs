//! Heads and their framing, as a client or a backend might send them.

use bytes::BytesMut;
use http::{Method, StatusCode, Version};

use super::head::*;

const LIMITS: HeadLimits = HeadLimits {
    max_size: 8192,
    max_headers: 20,
};

fn request(raw: &str) -> Result<Option<RequestHead>, HeadError> {
    let mut buf = BytesMut::from(raw.as_bytes());
    parse_request(&mut buf, &mut HeadScan::default(), &LIMITS)
}

fn complete(raw: &str) -> RequestHead {
    request(raw).unwrap().expect("a complete head")
}

fn response(raw: &str, method: Method) -> Result<Option<ResponseHead>, HeadError> {
    let mut buf = BytesMut::from(raw.as_bytes());
    parse_response(&mut buf, &mut HeadScan::default(), &method, &LIMITS)
}

#[test]
fn a_request_head_is_split_off_and_the_rest_stays() {
    let mut buf = BytesMut::from(
        &b"GET /a?b=c HTTP/1.1\r\nHost: app.test\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next"[..],
    );
    let head = parse_request(&mut buf, &mut HeadScan::default(), &LIMITS)
        .unwrap()
        .unwrap();
    assert_eq!(head.parts.method, Method::GET);
    assert_eq!(head.parts.uri, "/a?b=c");
    assert_eq!(head.parts.version, Version::HTTP_11);
    assert_eq!(head.parts.headers["host"], "app.test");
    assert_eq!(head.parts.headers.get_all("x-two").iter().count(), 2);
    assert_eq!(head.body, RequestBody::None);
    assert!(head.keep_alive);
    assert_eq!(&buf[..], b"GET /next");
}

#[test]
fn a_head_fed_a_byte_at_a_time_completes_once() {
    let raw = b"\r\nPOST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
    let mut buf = BytesMut::new();
    let mut scan = HeadScan::default();
    let mut parsed = None;
    for (i, byte) in raw.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        if let Some(head) = parse_request(&mut buf, &mut scan, &LIMITS).unwrap() {
            assert_eq!(i, raw.len() - 4, "complete at the empty line");
            parsed = Some(head);
            break;
        }
    }
    let head = parsed.unwrap();
    assert_eq!(head.body, RequestBody::Length(3));
    assert!(buf.is_empty());
}

#[test]
fn keep_alive_follows_the_version_and_connection() {
    assert!(!complete("GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n").keep_alive);
    assert!(!complete("GET / HTTP/1.0\r\nHost: a\r\n\r\n").keep_alive);
    assert!(complete("GET / HTTP/1.0\r\nHost: a\r\nConnection: x, Keep-Alive\r\n\r\n").keep_alive);
    let expect =
        complete("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
    assert!(expect.expect_continue);
    assert!(!complete("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n").expect_continue);
}

#[test]
fn body_framing_follows_rfc_9112() {
    let chunked = complete("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
    assert_eq!(
        (chunked.body, chunked.close_after),
        (RequestBody::Chunked, false)
    );
    let both = complete(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!((both.body, both.close_after), (RequestBody::Chunked, true));
    let same =
        complete("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\nContent-Length: 4\r\n\r\n");
    assert_eq!(same.body, RequestBody::Length(4));
    assert_eq!(
        complete("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").body,
        RequestBody::None
    );
}

#[test]
fn ambiguous_or_oversized_heads_get_their_status() {
    let cases: &[(&str, StatusCode)] = &[
        (
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            StatusCode::NOT_IMPLEMENTED,
        ),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        ("GET / HTTP/1.1\r\nX: a\nb\r\n\r\n", StatusCode::BAD_REQUEST),
        (
            "GET / HTTP/1.1\r\n folded: x\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET / HTTP/2.0\r\n\r\n",
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        ),
        ("G(T / HTTP/1.1\r\n\r\n", StatusCode::BAD_REQUEST),
        ("GET /a b HTTP/1.1\r\n\r\n", StatusCode::BAD_REQUEST),
    ];
    for (raw, status) in cases {
        let err = request(raw).expect_err(raw);
        assert_eq!(err.status(), *status, "{raw:?}: {err}");
    }
    let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(21));
    assert_eq!(request(&many).unwrap_err(), HeadError::TooManyHeaders(20));
    let large = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    assert_eq!(request(&large).unwrap_err(), HeadError::TooLarge(8192));
    let partial_large = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(9000));
    assert_eq!(
        request(&partial_large).unwrap_err(),
        HeadError::TooLarge(8192)
    );
    let long_line = format!("GET /{} HTTP/1.1", "a".repeat(9000));
    assert_eq!(
        request(&long_line).unwrap_err(),
        HeadError::UriTooLong(8192)
    );
    assert!(request("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
}

#[test]
fn response_framing_and_reuse() {
    let r = |raw: &str| response(raw, Method::GET).unwrap().unwrap();
    let length = r("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nnode-1\n");
    assert_eq!(
        (length.body, length.keep_alive),
        (ResponseBody::Length(7), true)
    );
    let chunked = r("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(chunked.body, ResponseBody::Chunked);
    let close = r("HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!((close.body, close.keep_alive), (ResponseBody::Close, false));
    let old = r("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
    assert!(!old.keep_alive);
    let asked_close = r("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n");
    assert!(!asked_close.keep_alive);
    let empty = r("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(empty.body, ResponseBody::Empty);
    let head = response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::HEAD)
        .unwrap()
        .unwrap();
    assert_eq!((head.body, head.keep_alive), (ResponseBody::Empty, true));
    let bad = response(
        "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
        Method::GET,
    );
    assert!(bad.is_err());
}

#[test]
fn interim_responses_are_skipped_but_101_is_the_answer() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"[..],
    );
    let head = parse_response(&mut buf, &mut HeadScan::default(), &Method::POST, &LIMITS)
        .unwrap()
        .unwrap();
    assert_eq!(head.status, StatusCode::CREATED);
    assert!(buf.is_empty());
    let switch = response(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        Method::GET,
    )
    .unwrap()
    .unwrap();
    assert_eq!(switch.status, StatusCode::SWITCHING_PROTOCOLS);
    assert!(!switch.keep_alive);
}

#[test]
fn hop_by_hop_response_fields_stay_out_of_the_map_unless_the_proxy_must_see_them() {
    let r = |raw: &str| {
        response(raw, Method::GET)
            .unwrap()
            .unwrap()
            .fields
            .into_map()
    };
    let plain = r("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n");
    let names: Vec<_> = plain.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-a", "content-length"]);
    // `Connection` names another field: everything is kept for the proxy's strip to remove.
    let listed =
        r("HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n");
    assert!(listed.contains_key("connection") && listed.contains_key("x-secret"));
    let switch =
        r("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
    assert_eq!(switch["upgrade"], "websocket");
}
