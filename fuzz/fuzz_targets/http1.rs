//! The proxy's own HTTP/1.1 parsing under arbitrary bytes (src/http1): never panics; a request
//! head and a chunked body read the same wherever the network splits them (the first input byte
//! picks the split); and a head the proxy accepts, written out as it writes heads to a backend,
//! reads back as the same request.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sessiongate::http1::chunked::{Chunk, ChunkedDecoder};
use sessiongate::http1::encode::{request_head, Framing};
use sessiongate::http1::head::{parse_request, HeadLimits, HeadScan, RequestBody};

const LIMITS: HeadLimits = HeadLimits { max_size: 8192, max_headers: 64 };

/// Parses a request head fed in two pieces, split at `cut`: the answer and the bytes after it.
fn head(input: &[u8], cut: usize) -> (String, Vec<u8>) {
    let (mut buf, mut scan) = (BytesMut::new(), HeadScan::default());
    for (fed, piece) in [(cut, &input[..cut]), (input.len(), &input[cut..])] {
        buf.extend_from_slice(piece);
        match parse_request(&mut buf, &mut scan, &LIMITS) {
            Ok(None) => continue,
            // What was not fed yet is still "left" after the head.
            other => {
                let mut rest = buf.to_vec();
                rest.extend_from_slice(&input[fed..]);
                return (format!("{other:?}"), rest);
            }
        }
    }
    ("incomplete".into(), input.to_vec())
}

/// Decodes a chunked body fed in two pieces: the body and the bytes consumed, or the error.
fn chunked(input: &[u8], cut: usize) -> Result<(Vec<u8>, usize), String> {
    let (mut decoder, mut buf, mut body) = (ChunkedDecoder::new(), BytesMut::new(), Vec::new());
    let mut pieces = [&input[..cut], &input[cut..]].into_iter();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
            Chunk::Data(data) => body.extend_from_slice(&data),
            Chunk::End => return Ok((body, fed - buf.len())),
            Chunk::Incomplete => match pieces.next() {
                Some(piece) => {
                    buf.extend_from_slice(piece);
                    fed += piece.len();
                }
                None => return Err("incomplete".into()),
            },
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else { return };
    let cut = (cut as usize).min(input.len());
    assert_eq!(head(input, cut), head(input, 0), "split at {cut}");
    assert_eq!(chunked(input, cut), chunked(input, input.len()), "split at {cut}");

    let Ok(Some(first)) = parse_request(&mut BytesMut::from(input), &mut HeadScan::default(), &LIMITS) else {
        return;
    };
    let framing = match first.body {
        RequestBody::None => Framing::None,
        RequestBody::Length(n) => Framing::Length(n),
        RequestBody::Chunked => Framing::Chunked,
    };
    let target = first.parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = BytesMut::new();
    request_head(&first.parts.method, target, &first.parts.headers, &[], framing, &mut out);
    let again = parse_request(&mut out.clone(), &mut HeadScan::default(), &LIMITS)
        .unwrap_or_else(|e| panic!("{e}: {out:?}"))
        .expect("a complete head");
    assert_eq!(again.parts.method, first.parts.method);
    assert_eq!(again.body, first.body);
    let unframed = |h: &http::HeaderMap| {
        let mut h = h.clone();
        h.remove(http::header::CONTENT_LENGTH);
        h.remove(http::header::TRANSFER_ENCODING);
        h
    };
    assert_eq!(unframed(&again.parts.headers), unframed(&first.parts.headers));
});
