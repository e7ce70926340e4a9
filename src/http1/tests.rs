//! Heads and their framing, as a client or a backend might send them.

use bytes::BytesMut;
use http::{Method, StatusCode, Version};

use super::head::*;

const LIMITS: HeadLimits = HeadLimits {
    max_size: 8192,
    max_headers: 20,
};

fn request(raw: impl AsRef<[u8]>) -> Result<Option<RequestHead>, HeadError> {
    let mut buf = BytesMut::from(raw.as_ref());
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

/// RFC 9110 §2.5: a later HTTP/1 minor version is served as HTTP/1.1; another major version is
/// not served at all.
#[test]
fn a_later_http1_minor_version_is_read_as_http11() {
    let later = complete("\r\nPOST /a?b HTTP/1.2\r\nHost: a\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(later.parts.version, Version::HTTP_11);
    assert_eq!(later.parts.uri, "/a?b");
    assert_eq!(later.parts.headers["host"], "a");
    assert!(later.keep_alive);
    assert_eq!(later.body, RequestBody::Length(2));
    assert_eq!(
        complete("GET / HTTP/1.9\n\n").parts.version,
        Version::HTTP_11
    );
    for raw in [
        "GET / HTTP/2.0\r\n\r\n",
        "GET / HTTP/3.0\r\n\r\n",
        "GET / HTTP/0.9\r\n\r\n",
    ] {
        let err = request(raw).expect_err(raw);
        assert_eq!(
            err.status(),
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "{raw:?}"
        );
    }
    for raw in [
        "GET /a b HTTP/1.2\r\n\r\n",
        "GET / HTTP/1.12\r\n\r\n",
        "GET / HTTP/1.x\r\n\r\n",
        "GET / HTTP/x.1\r\n\r\n",
    ] {
        let err = request(raw).expect_err(raw);
        assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{raw:?}");
    }
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
    // Codings besides chunked cannot be passed on without Transfer-Encoding: refused, whether
    // chunked frames them or not, and whatever order they come in.
    for coded in [
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: gzip",
        "Transfer-Encoding: chunked, gzip",
    ] {
        let raw = format!("HTTP/1.1 200 OK\r\n{coded}\r\n\r\n");
        assert_eq!(
            response(&raw, Method::GET).unwrap_err(),
            HeadError::UnsupportedCoding,
            "{coded}"
        );
    }
    let twice = response(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        Method::GET,
    );
    assert!(matches!(twice, Err(HeadError::Framing(_))));
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

/// A fixed-seed xorshift walk: the same inputs every run.
struct Walk(u64);

impl Walk {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }

    /// `count` random pieces, one after another.
    fn assemble(&mut self, pieces: &[&[u8]], count: usize) -> Vec<u8> {
        (0..count)
            .flat_map(|_| pieces[self.next(pieces.len())].iter().copied())
            .collect()
    }
}

/// The end of a head by its definition, one line at a time: the first line feed, after the
/// leading empty lines, that an empty line follows (`\n` or `\r\n`).
fn end_line_by_line(buf: &[u8]) -> Option<usize> {
    let leading = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    (leading..buf.len()).find_map(|lf| match (buf[lf], buf.get(lf + 1), buf.get(lf + 2)) {
        (b'\n', Some(b'\n'), _) => Some(lf + 2),
        (b'\n', Some(b'\r'), Some(b'\n')) => Some(lf + 3),
        _ => None,
    })
}

/// The scan finds the same end as the definition, whether it sees the bytes at once or as
/// they arrive, cut anywhere: the scan decides where a request ends and the next begins.
#[test]
fn the_head_scan_finds_the_first_empty_line_however_the_bytes_arrive() {
    const PIECES: &[&[u8]] = &[
        b"GET / HTTP/1.1",
        b"X: y",
        b"a",
        b" ",
        b"\r\n",
        b"\n",
        b"\r",
        b"\r\n\r\n",
        b"\n\n",
        b"\n\r\n",
    ];
    let mut walk = Walk(0x2545_f491_4f6c_dd1d);
    let mut ends = std::collections::HashSet::new();
    for _ in 0..5000 {
        let count = 1 + walk.next(9);
        let input = walk.assemble(PIECES, count);
        let expected = end_line_by_line(&input);
        assert_eq!(HeadScan::default().end(&input), expected, "{input:?}");
        for cut in 0..input.len() {
            let mut scan = HeadScan::default();
            let early = scan.end(&input[..cut]);
            assert_eq!(
                early,
                end_line_by_line(&input[..cut]),
                "{input:?} cut at {cut}"
            );
            if early.is_none() {
                assert_eq!(scan.end(&input), expected, "{input:?} cut at {cut}");
            }
        }
        let mut scan = HeadScan::default();
        let bytewise = (1..=input.len()).find_map(|to| scan.end(&input[..to]));
        assert_eq!(bytewise, expected, "{input:?} a byte at a time");
        ends.insert(expected.map(|end| input[..end].ends_with(b"\r\n\r\n")));
    }
    // Heads ending either way, and input with no end yet, all came up.
    assert_eq!(ends.len(), 3, "{ends:?}");
}

/// What parsing `input` as a request head gives when it arrives in the pieces `cuts` makes:
/// the answer (as text, to compare) and the bytes left after the head.
fn request_in_pieces(input: &[u8], cuts: &[usize]) -> (String, Vec<u8>) {
    let mut buf = BytesMut::new();
    let mut scan = HeadScan::default();
    let mut from = 0;
    for &to in cuts.iter().chain([&input.len()]) {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        match parse_request(&mut buf, &mut scan, &LIMITS) {
            Ok(None) => continue,
            // What was not fed yet is still "left" after the head.
            other => {
                let mut rest = buf.to_vec();
                rest.extend_from_slice(&input[from..]);
                return (format!("{other:?}"), rest);
            }
        }
    }
    ("incomplete".into(), input.to_vec())
}

/// However a client's bytes are split by the network, the proxy reads the same head and
/// leaves the same bytes for what follows: an incremental parser that answered differently at
/// some split would be a desynchronisation (a smuggling primitive). Inputs are built from
/// pieces both valid and hostile, and every split point of each is tried.
#[test]
fn a_head_reads_the_same_at_every_split_point() {
    const PIECES: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\n",
        b"POST /p?q=1 HTTP/1.0\r\n",
        b"GET http://a/x HTTP/1.1\r\n",
        b"Host: a\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: 3, 4\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Connection: close\r\n",
        b"Expect: 100-continue\r\n",
        b"X: a\r\n b\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b":",
        b"\0",
        b"abc",
    ];
    let mut walk = Walk(0x9e37_79b9_7f4a_7c15);
    let mut answers = std::collections::HashSet::new();
    for _ in 0..3000 {
        let count = 2 + walk.next(7);
        let input = walk.assemble(PIECES, count);
        let whole = request_in_pieces(&input, &[]);
        for cut in 1..input.len() {
            assert_eq!(
                request_in_pieces(&input, &[cut]),
                whole,
                "split at {cut}: {:?}",
                String::from_utf8_lossy(&input)
            );
        }
        let bytewise: Vec<usize> = (1..input.len()).collect();
        assert_eq!(request_in_pieces(&input, &bytewise), whole);
        answers.insert(whole.0.split('(').next().unwrap_or("").to_owned());
    }
    // The walk reached complete heads, refusals and incomplete input alike.
    for kind in ["Ok", "Err", "incomplete"] {
        assert!(answers.contains(kind), "{answers:?}");
    }
}

/// What decoding `input` as a chunked body gives when it arrives in pieces of `step` bytes:
/// the body and how much of the input it consumed, or the error.
fn chunked_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), String> {
    use super::chunked::{Chunk, ChunkedDecoder};
    let mut decoder = ChunkedDecoder::new();
    let (mut buf, mut body, mut fed) = (BytesMut::new(), Vec::new(), 0);
    loop {
        match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
            Chunk::Data(data) => body.extend_from_slice(&data),
            Chunk::End => return Ok((body, fed - buf.len())),
            Chunk::Incomplete if fed == input.len() => return Err("incomplete".into()),
            Chunk::Incomplete => {
                let next = (fed + step).min(input.len());
                buf.extend_from_slice(&input[fed..next]);
                fed = next;
            }
        }
    }
}

/// The chunked decoder, the same way: one answer and one end of the body whatever the read
/// sizes, so what follows a body is never read as part of it, or the other way round.
#[test]
fn a_chunked_body_decodes_the_same_at_every_read_size() {
    const PIECES: &[&[u8]] = &[
        b"5\r\n",
        b"hello",
        b"\r\n",
        b"0\r\n",
        b"a;ext=\"v\"\r\n",
        b"3 ;x\r\n",
        b"0123456789",
        b"X-Trailer: 1\r\n",
        b"\n",
        b"\r",
        b"FFFFFFFFFFFFFFFFF\r\n",
        b"GET / HTTP/1.1\r\n",
    ];
    let mut walk = Walk(0x2545_f491_4f6c_dd1d);
    let (mut decoded, mut refused) = (0, 0);
    for _ in 0..3000 {
        let count = 2 + walk.next(8);
        let input = walk.assemble(PIECES, count);
        let whole = chunked_in_steps(&input, input.len().max(1));
        for step in 1..input.len() {
            assert_eq!(
                chunked_in_steps(&input, step),
                whole,
                "step {step}: {:?}",
                String::from_utf8_lossy(&input)
            );
        }
        match whole {
            Ok(_) => decoded += 1,
            Err(_) => refused += 1,
        }
    }
    assert!(
        decoded > 50 && refused > 50,
        "{decoded} decoded, {refused} refused"
    );
}

/// A head the proxy accepted, written out as the proxy writes it to a backend, reads back as
/// the same request: method, origin-form target, every field but the framing ones, and the
/// same body framing. What the backend parses is what the proxy checked.
#[test]
fn an_accepted_head_written_for_a_backend_reads_back_the_same() {
    use super::encode::{request_head, Framing};
    const PIECES: &[&[u8]] = &[
        b"X-A: a\r\n",
        b"X-A: b, c\r\n",
        b"Cookie: s=1; t=\"2\"\r\n",
        b"X-Obs: caf\xc3\xa9\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: 3, 3\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: keep-alive\r\n",
        b"X-Tab:\tv \r\n",
    ];
    const LINES: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        b"POST /p?q=%20&r HTTP/1.0\r\nHost: a\r\n",
        b"PUT /x/y;z HTTP/1.1\r\nHost: a:8080\r\n",
    ];
    let mut walk = Walk(0x5851_f42d_4c95_7f2d);
    let mut accepted = 0;
    for _ in 0..2000 {
        let mut input = LINES[walk.next(LINES.len())].to_vec();
        let count = walk.next(5);
        input.extend(walk.assemble(PIECES, count));
        input.extend_from_slice(b"\r\n");
        let Ok(Some(first)) = request(&input) else {
            continue;
        };
        accepted += 1;
        let framing = match first.body {
            RequestBody::None => Framing::None,
            RequestBody::Length(n) => Framing::Length(n),
            RequestBody::Chunked => Framing::Chunked,
        };
        let target = first.parts.uri.path_and_query().unwrap().as_str();
        let mut out = BytesMut::new();
        request_head(
            &first.parts.method,
            target,
            &first.parts.headers,
            std::iter::empty(),
            framing,
            &mut out,
        );
        let again = request(&out)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&out)))
            .expect("complete");
        assert_eq!(again.parts.method, first.parts.method);
        assert_eq!(again.parts.uri, target);
        assert_eq!(
            again.body,
            first.body,
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        let unframed = |h: &http::HeaderMap| {
            let mut h = h.clone();
            h.remove(http::header::CONTENT_LENGTH);
            h.remove(http::header::TRANSFER_ENCODING);
            h
        };
        assert_eq!(
            unframed(&again.parts.headers),
            unframed(&first.parts.headers)
        );
    }
    assert!(accepted > 1000, "{accepted} of 2000 accepted");
}

/// `eq_lower` answers as `eq_ignore_ascii_case` for every byte against every byte a lowercase
/// name or token holds, and for whole names of other lengths and cases.
#[test]
fn eq_lower_is_eq_ignore_ascii_case_for_lowercase_names() {
    use super::fields::eq_lower;
    for lower in b"abcdefghijklmnopqrstuvwxyz0123456789-" {
        for byte in 0..=u8::MAX {
            assert_eq!(
                eq_lower(&[byte], &[*lower]),
                [byte].eq_ignore_ascii_case(&[*lower]),
                "{byte:#x} against {:?}",
                *lower as char
            );
        }
    }
    for (name, lower) in [
        (&b"Content-Length"[..], &b"content-length"[..]),
        (b"CONTENT-LENGTH", b"content-length"),
        (b"Content-Lengt", b"content-length"),
        (b"Content-Length ", b"content-length"),
        (b"Content\rLength", b"content-length"),
        (b"Keep-Alive", b"keep-alive"),
        (b"", b""),
    ] {
        assert_eq!(
            eq_lower(name, lower),
            name.eq_ignore_ascii_case(lower),
            "{name:?}"
        );
    }
}
