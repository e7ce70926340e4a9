//! An answer on its way to the client, whatever protocol carries it: its status, its fields and
//! its body. A backend's fields stay as it sent them (`RawFields`: slices of its head) and
//! are written on as they came to HTTP/1.1 clients; the proxy's own answers carry a map. Only
//! an HTTP/2 client's answer is turned into an `http::Response` (h2 needs one).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::Body;

use crate::body::ProxyBody;
use crate::headers;
use crate::http1::fields::RawFields;

pub struct Reply {
    pub status: StatusCode,
    pub fields: Fields,
    pub body: ProxyBody,
}

pub enum Fields {
    Backend(RawFields),
    Local(HeaderMap),
}

impl Reply {
    /// One of the proxy's own answers.
    pub fn local(resp: Response<ProxyBody>) -> Reply {
        let (parts, body) = resp.into_parts();
        Reply {
            status: parts.status,
            fields: Fields::Local(parts.headers),
            body,
        }
    }

    /// The answer as an HTTP/2 stream sends it. What HTTP/1.1's encoder adds to every head is
    /// added here too: a `Date` when the backend sent none (RFC 9110 §6.6.1, an origin with a
    /// clock), and a local answer's `Content-Length`. The answer to a HEAD request (`head`)
    /// keeps that length and sends no body: the stream ends with the head.
    pub fn into_response(self, head: bool) -> Response<ProxyBody> {
        let has_date = self.fields.contains(&header::DATE);
        let mut fields = match self.fields {
            Fields::Backend(raw) => raw.into_map(),
            Fields::Local(mut map) => {
                // A backend's answer keeps the framing it came with (its length, if it gave
                // one); the proxy's own have their whole body at hand.
                let size = self.body.size_hint();
                if let (Some(length), false) = (size.exact(), self.body.is_end_stream()) {
                    map.entry(header::CONTENT_LENGTH)
                        .or_insert_with(|| HeaderValue::from(length));
                }
                map
            }
        };
        if !has_date {
            let date = crate::http1::encode::with_date(HeaderValue::from_bytes);
            if let Ok(date) = date {
                fields.insert(header::DATE, date);
            }
        }
        let mut resp = Response::new(self.body);
        *resp.status_mut() = self.status;
        *resp.headers_mut() = fields;
        if head {
            resp.body_mut().drop_local_content();
        }
        resp
    }
}

impl Fields {
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        match self {
            Fields::Backend(raw) => raw.insert(name, value),
            Fields::Local(map) => {
                map.insert(name, value);
            }
        }
    }

    pub fn append(&mut self, name: HeaderName, value: HeaderValue) {
        match self {
            Fields::Backend(raw) => raw.append(name, value),
            Fields::Local(map) => {
                map.append(name, value);
            }
        }
    }

    pub fn contains(&self, name: &HeaderName) -> bool {
        match self {
            Fields::Backend(raw) => raw.contains(name),
            Fields::Local(map) => map.contains_key(name),
        }
    }

    /// The values of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        match self {
            Fields::Backend(raw) => Either::A(raw.get_all(name)),
            Fields::Local(map) => Either::B(map.get_all(name).iter().map(HeaderValue::as_bytes)),
        }
    }

    /// Every field, as names and values.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        match self {
            Fields::Backend(raw) => Either::A(raw.iter()),
            Fields::Local(map) => Either::B(crate::http1::encode::map_fields(map)),
        }
    }

    /// Removes what describes one hop only (see `headers::strip_hop_by_hop`).
    pub fn strip_hop_by_hop(&mut self, upgrade: bool) {
        match self {
            Fields::Backend(raw) => {
                // Left out when the head was read, unless a protocol switch or a
                // `Connection` that names other fields needs them looked at here.
                if raw.hop_by_hop_left_out() {
                    return;
                }
                let upgrade_value = upgrade
                    .then(|| raw.get_all(&header::UPGRADE).next())
                    .flatten()
                    .and_then(|v| HeaderValue::from_bytes(v).ok());
                let listed = headers::listed_in_connection(raw.get_all(&header::CONNECTION));
                for name in listed.iter().chain(headers::HOP_BY_HOP.iter()) {
                    raw.remove(name);
                }
                if let Some(value) = upgrade_value {
                    raw.append(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    raw.append(header::UPGRADE, value);
                }
            }
            Fields::Local(map) => headers::strip_hop_by_hop(map, upgrade),
        }
    }
}

/// One of two iterators of the same items.
enum Either<A, B> {
    A(A),
    B(B),
}

impl<A: Iterator, B: Iterator<Item = A::Item>> Iterator for Either<A, B> {
    type Item = A::Item;

    fn next(&mut self) -> Option<A::Item> {
        match self {
            Either::A(a) => a.next(),
            Either::B(b) => b.next(),
        }
    }
}
