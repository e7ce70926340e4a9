//! Message heads written out: requests to backends and responses to clients. The framing
//! headers are never copied from the other side; they are written from the framing the proxy
//! chose for the body it is about to send.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use http::header::HeaderMap;
use http::{Method, StatusCode};

use super::fields::eq_lower;

/// Room made for a head before writing it: most heads fit, so the buffer (reclaimed from the
/// last head once that was written) grows at most once per head instead of field by field.
const HEAD_RESERVE: usize = 2048;

/// How the body after a head is delimited, as the proxy sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body follows and none is declared (a GET, a 204).
    None,
    /// No body follows, but the head describes one (HEAD, 304): its Content-Length stays.
    Described,
    Length(u64),
    Chunked,
    /// Until the connection closes (to an HTTP/1.0 client that cannot take chunks).
    Close,
}

/// A request head for a backend: the origin-form `target`, HTTP/1.1, every header but the
/// framing ones, the `added` fields (names and values, written as they are), then the framing
/// of the body that follows.
pub fn request_head<'a>(
    method: &Method,
    target: &str,
    headers: &'a HeaderMap,
    added: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    framing: Framing,
    out: &mut BytesMut,
) {
    out.reserve(HEAD_RESERVE + target.len());
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    fields(map_fields(headers).chain(added), framing, out);
    out.extend_from_slice(b"\r\n");
}

/// A map's fields as names and values.
pub fn map_fields(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
}

/// A response head for a client, its fields as names and values (`has_date`: a Date is among
/// them, else one is written). `connection` is written as the `Connection` header when set
/// (`close`, or `keep-alive` for an HTTP/1.0 client that asked for it).
pub fn response_head<'a>(
    status: StatusCode,
    fields_in: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    has_date: bool,
    framing: Framing,
    connection: Option<&'static str>,
    out: &mut BytesMut,
) {
    out.reserve(HEAD_RESERVE);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    if !has_date {
        out.extend_from_slice(b"date: ");
        with_date(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n");
    }
    fields(fields_in, framing, out);
    if let Some(connection) = connection {
        out.extend_from_slice(b"connection: ");
        out.extend_from_slice(connection.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The header fields, with the framing headers replaced by `framing`'s.
fn fields<'a>(
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    framing: Framing,
    out: &mut BytesMut,
) {
    let keep_length = framing == Framing::Described;
    for (name, value) in fields {
        if eq_lower(name, b"transfer-encoding")
            || (!keep_length && eq_lower(name, b"content-length"))
        {
            continue;
        }
        field(name, value, out);
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa(n, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::Described | Framing::Close => {}
    }
}

fn field(name: &[u8], value: &[u8], out: &mut BytesMut) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Decimal digits of `n`, written into the end of `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

thread_local! {
    /// The IMF-fixdate of the current second, rendered once per second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Calls `f` with the current time as an HTTP date (RFC 9110 §5.6.7).
pub fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            let bytes = text.as_bytes();
            if bytes.len() == 29 {
                cached.1.copy_from_slice(bytes);
                cached.0 = second;
            }
        }
        f(&cached.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn framing_headers_are_the_proxys() {
        let headers = map(&[
            ("host", "app.test"),
            ("content-length", "999"),
            ("transfer-encoding", "chunked"),
            ("x-a", "1"),
        ]);
        let mut out = BytesMut::new();
        let added = [(&b"x-forwarded-for"[..], &b"10.0.0.1"[..])];
        request_head(
            &Method::POST,
            "/p?q=1",
            &headers,
            added.into_iter(),
            Framing::Length(5),
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nhost: app.test\r\nx-a: 1\r\nx-forwarded-for: 10.0.0.1\r\ncontent-length: 5\r\n\r\n"
        );
        let mut out = BytesMut::new();
        request_head(
            &Method::PUT,
            "/",
            &headers,
            std::iter::empty(),
            Framing::Chunked,
            &mut out,
        );
        assert!(String::from_utf8(out.to_vec())
            .unwrap()
            .ends_with("x-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"));
    }

    #[test]
    fn responses_get_a_date_and_keep_a_described_length() {
        let headers = map(&[("content-length", "42")]);
        let mut out = BytesMut::new();
        response_head(
            StatusCode::OK,
            map_fields(&headers),
            false,
            Framing::Described,
            Some("close"),
            &mut out,
        );
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ndate: "), "{text}");
        assert!(
            text.ends_with(" GMT\r\ncontent-length: 42\r\nconnection: close\r\n\r\n"),
            "{text}"
        );
        let with_date = map(&[("date", "Tue, 01 Dec 2026 00:00:00 GMT")]);
        let mut out = BytesMut::new();
        response_head(
            StatusCode::NO_CONTENT,
            map_fields(&with_date),
            true,
            Framing::None,
            None,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            "HTTP/1.1 204 No Content\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n"
        );
    }

    #[test]
    fn digits() {
        for n in [0u64, 7, 10, 4096, u64::MAX] {
            assert_eq!(itoa(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }
}
