//! Message heads: parsed with `httparse` straight out of a read buffer into `http` types whose
//! values share the buffer (no copy per header), with the framing of the body that follows
//! decided here, once, by the rules of RFC 9112 §6. Anything ambiguous is refused: the proxy
//! re-frames every body it forwards, so what the client framed oddly never reaches a backend as
//! a second request.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::fields::{Facts, RawFields};
use http::{Method, StatusCode, Uri, Version};

/// How a request's body is delimited (and so how much of the stream is the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
    Chunked,
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// HEAD, 1xx, 204, 304, or `Content-Length: 0`.
    Empty,
    Length(u64),
    Chunked,
    /// Until the connection closes (no length, no chunking): never reusable.
    Close,
}

/// Why a head was refused; each maps to one status (`status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("head larger than {0} bytes")]
    TooLarge(usize),
    #[error("request line longer than the head limit of {0} bytes")]
    UriTooLong(usize),
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    #[error("HTTP version not supported")]
    Version,
    #[error("malformed head: {0}")]
    Malformed(&'static str),
    #[error("ambiguous body framing: {0}")]
    Framing(&'static str),
    #[error("transfer coding other than chunked")]
    UnsupportedCoding,
}

impl HeadError {
    /// The answer a client gets for a request head refused this way.
    pub fn status(&self) -> StatusCode {
        match self {
            HeadError::TooLarge(_) | HeadError::TooManyHeaders(_) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HeadError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            HeadError::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            HeadError::Malformed(_) | HeadError::Framing(_) => StatusCode::BAD_REQUEST,
            HeadError::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

/// The size and field-count limits of a head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_size: usize,
    pub max_headers: usize,
}

/// A client's request head and what it says about the connection.
#[derive(Debug)]
pub struct RequestHead {
    pub parts: http::request::Parts,
    pub body: RequestBody,
    /// The client wants the connection kept after this exchange (version and `Connection`).
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a go-ahead before sending the body.
    pub expect_continue: bool,
    /// Content-Length and Transfer-Encoding both: served, then the connection is closed
    /// (RFC 9112 §6.3), so nothing after this body is ever read as a request.
    pub close_after: bool,
}

/// A backend's response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub fields: RawFields,
    pub body: ResponseBody,
    /// The backend will take another request on this connection.
    pub keep_alive: bool,
}

/// Finds where a head ends without parsing it, remembering how far it looked, so a head that
/// arrives a byte at a time is scanned once in all rather than once per byte (httparse would
/// parse it from the start on every read).
#[derive(Debug, Default, Clone, Copy)]
pub struct HeadScan {
    scanned: usize,
}

impl HeadScan {
    /// Where the head in `buf` ends (just past its empty line), once it is complete: a line
    /// feed followed by an empty line. Empty lines before the first line are not an end
    /// (RFC 9112 §2.2 lets a server ignore them).
    pub fn end(&mut self, buf: &[u8]) -> Option<usize> {
        let leading = buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(buf.len());
        let mut i = self.scanned.max(leading);
        while let Some(offset) = memchr::memchr(b'\n', &buf[i..]) {
            let lf = i + offset;
            match (buf.get(lf + 1), buf.get(lf + 2)) {
                (Some(b'\n'), _) => return Some(lf + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(lf + 3),
                (None, _) | (Some(b'\r'), None) => {
                    self.scanned = lf;
                    return None;
                }
                _ => i = lf + 1,
            }
        }
        self.scanned = buf.len();
        None
    }

    pub fn reset(&mut self) {
        self.scanned = 0;
    }
}

/// Header slots for httparse on the stack, for up to this many fields (more: on the heap).
/// Enough for a backend's response (`upstream::exchange`'s limit), so that no response head
/// costs an allocation: 256 slots are 8 KiB of a synchronous frame, never of a future.
pub(crate) const STACK_HEADERS: usize = 256;

/// The header fields as an `http` map whose values share `head` (no copy per value), with room
/// for `extra` more (the forwarded headers the proxy adds), so it does not grow mid-request.
fn header_map(
    head: &Bytes,
    fields: &[httparse::Header<'_>],
    extra: usize,
) -> Result<HeaderMap, HeadError> {
    let mut headers = HeaderMap::with_capacity(fields.len() + extra);
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| HeadError::Malformed("header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(field.value))
            .map_err(|_| HeadError::Malformed("header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Runs `parse` with header slots for `max` fields: on the stack when they fit.
fn with_slots<'b, R>(
    max: usize,
    parse: impl FnOnce(&mut [MaybeUninit<httparse::Header<'b>>]) -> R,
) -> R {
    if max <= STACK_HEADERS {
        let mut slots = [const { MaybeUninit::uninit() }; STACK_HEADERS];
        parse(&mut slots[..max])
    } else {
        let mut slots = Vec::with_capacity(max);
        parse(&mut slots.spare_capacity_mut()[..max])
    }
}

fn parse_error(e: httparse::Error, max_headers: usize) -> HeadError {
    match e {
        httparse::Error::Version => HeadError::Version,
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders(max_headers),
        httparse::Error::HeaderName => HeadError::Malformed("header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("header value"),
        httparse::Error::NewLine => HeadError::Malformed("line ending"),
        httparse::Error::Status => HeadError::Malformed("status"),
        httparse::Error::Token => HeadError::Malformed("method or token"),
    }
}

/// Whether the request line is `method target HTTP/x.y` (two digits, RFC 9112 §2.3), however
/// unsupported the version.
fn names_a_version(buf: &[u8]) -> bool {
    let Some(line) = buf
        .split(|&b| b == b'\n')
        .find(|l| !l.trim_ascii().is_empty())
    else {
        return false;
    };
    let words: Vec<&[u8]> = line.trim_ascii().split(|&b| b == b' ').collect();
    matches!(words[..], [_, _, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]]
        if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// The head is incomplete: refuse it if it can no longer fit.
fn check_partial(buf: &[u8], limits: &HeadLimits) -> Result<(), HeadError> {
    if buf.len() <= limits.max_size {
        return Ok(());
    }
    // No end of line yet: it is the request target that does not fit.
    if !buf.contains(&b'\n') {
        return Err(HeadError::UriTooLong(limits.max_size));
    }
    Err(HeadError::TooLarge(limits.max_size))
}

/// The complete head at the front of `buf`, split off with its length, once `scan` finds its
/// end; while incomplete, `partial` decides whether it can still fit. Split first, parsed
/// after: the frozen head's values can then be shared directly.
fn split_head(
    buf: &mut BytesMut,
    scan: &mut HeadScan,
    limits: &HeadLimits,
    partial: impl FnOnce(&[u8], &HeadLimits) -> Result<(), HeadError>,
) -> Result<Option<(Bytes, usize)>, HeadError> {
    let Some(end) = scan.end(buf) else {
        partial(buf, limits)?;
        return Ok(None);
    };
    if end > limits.max_size {
        return Err(HeadError::TooLarge(limits.max_size));
    }
    scan.reset();
    Ok(Some((buf.split_to(end).freeze(), end)))
}

/// Parses a request head from the front of `buf` once `scan` says it is complete, splitting it
/// off; `None` while more bytes are needed.
pub fn parse_request(
    buf: &mut BytesMut,
    scan: &mut HeadScan,
    limits: &HeadLimits,
) -> Result<Option<RequestHead>, HeadError> {
    let Some((head, end)) = split_head(buf, scan, limits, check_partial)? else {
        return Ok(None);
    };
    let parsed = with_slots(limits.max_headers, |slots| {
        let mut req = httparse::Request::new(&mut []);
        let status = httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut req, &head, slots)
            .map_err(|e| match e {
                // `GET /a b HTTP/1.1` fails on its "version" too, but it is malformed.
                httparse::Error::Version if !names_a_version(&head) => {
                    HeadError::Malformed("request line")
                }
                e => parse_error(e, limits.max_headers),
            })?;
        if status != httparse::Status::Complete(end) {
            // The scan saw an end that httparse reads otherwise: malformed.
            return Err(HeadError::Malformed("head"));
        }
        let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
            .map_err(|_| HeadError::Malformed("method"))?;
        let uri = Uri::from_maybe_shared(head.slice_ref(req.path.unwrap_or_default().as_bytes()))
            .map_err(|_| HeadError::Malformed("request target"))?;
        let facts = Facts::of(req.headers);
        // The proxy strips a request's hop-by-hop fields itself: whether `Upgrade` stays is
        // its decision.
        let headers = header_map(&head, req.headers, 8)?;
        Ok((method, uri, req.version.unwrap_or(1), headers, facts))
    });
    let (method, uri, minor, headers, facts) = match parsed {
        Err(HeadError::Version) => return read_as_http11(&head, limits),
        parsed => parsed?,
    };
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let (body, close_after) = facts.request_body(version)?;
    let keep_alive = facts.persistent(version);
    let expect_continue =
        version == Version::HTTP_11 && body != RequestBody::None && facts.expect_continue;
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(RequestHead {
        parts,
        body,
        keep_alive,
        expect_continue,
        close_after,
    }))
}

/// A head whose version httparse refused. RFC 9110 §2.5: a later minor version of a major
/// version the recipient implements is served as the highest one it conforms to, and
/// httparse reads only 1.0 and 1.1, so an `HTTP/1.2` to `HTTP/1.9` head is read again as
/// HTTP/1.1 (a copy, on a path no client in use takes); any other version is refused.
#[cold]
fn read_as_http11(head: &Bytes, limits: &HeadLimits) -> Result<Option<RequestHead>, HeadError> {
    let at = later_http1_minor(head).ok_or(HeadError::Version)?;
    let mut copy = BytesMut::from(&head[..]);
    copy[at] = b'1';
    parse_request(&mut copy, &mut HeadScan::default(), limits)
}

/// Where the minor digit of the request line's version is, when that version is `HTTP/1.x`
/// with x from 2 to 9 (empty lines before the request line skipped, as httparse does).
fn later_http1_minor(head: &[u8]) -> Option<usize> {
    let start = head.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let len = head[start..].iter().position(|&b| b == b'\n')?;
    let line = &head[start..start + len];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (minor, rest) = line.split_last()?;
    (rest.ends_with(b" HTTP/1.") && matches!(minor, b'2'..=b'9')).then_some(start + rest.len())
}

/// A backend's response head for a request made with `method`; 1xx heads other than 101 are
/// skipped (nothing downstream asked for them).
pub fn parse_response(
    buf: &mut BytesMut,
    scan: &mut HeadScan,
    method: &Method,
    limits: &HeadLimits,
) -> Result<Option<ResponseHead>, HeadError> {
    loop {
        let too_large = |buf: &[u8], limits: &HeadLimits| match buf.len() > limits.max_size {
            true => Err(HeadError::TooLarge(limits.max_size)),
            false => Ok(()),
        };
        let Some((head, end)) = split_head(buf, scan, limits, too_large)? else {
            return Ok(None);
        };
        let parsed = with_slots(limits.max_headers, |slots| {
            let mut resp = httparse::Response::new(&mut []);
            let status = httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut resp, &head, slots)
                .map_err(|e| parse_error(e, limits.max_headers))?;
            if status != httparse::Status::Complete(end) {
                return Err(HeadError::Malformed("head"));
            }
            let status = StatusCode::from_u16(resp.code.unwrap_or(0))
                .map_err(|_| HeadError::Malformed("status"))?;
            if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                return Ok(None);
            }
            let facts = Facts::of(resp.headers);
            // Hop-by-hop fields never reach the client, so they are not put in the map, unless
            // `Connection` names others (then the proxy's strip removes them all) or the
            // protocol switches (the switch needs `Upgrade`).
            let skip = !facts.connection_lists_others && status != StatusCode::SWITCHING_PROTOCOLS;
            let mut fields = RawFields::new(&head, resp.headers, skip);
            if status == StatusCode::NO_CONTENT || status == StatusCode::SWITCHING_PROTOCOLS {
                // These may not declare a body (RFC 9110 §8.6). Passed on, a Content-Length
                // would have an HTTP/1.1 client take the next answer's first bytes for this
                // one's body, and an HTTP/2 client reset the stream.
                fields.remove(&http::header::CONTENT_LENGTH);
            }
            Ok(Some((status, resp.version.unwrap_or(1), fields, facts)))
        });
        // Interim answers (100, 103) are skipped: nothing downstream asked for them.
        let Some((status, minor, fields, facts)) = parsed? else {
            continue;
        };
        let version = if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let body = facts.response_body(method, status)?;
        let keep_alive = body != ResponseBody::Close
            && status != StatusCode::SWITCHING_PROTOCOLS
            && facts.persistent(version);
        return Ok(Some(ResponseHead {
            status,
            version,
            fields,
            body,
            keep_alive,
        }));
    }
}
