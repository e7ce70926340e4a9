//! A head's fields as httparse found them: what they say about the message, read in one pass
//! before anything else (body framing by RFC 9112 §6, `Connection` tokens, `Expect`), and a
//! backend's response fields kept as the slices they are (`RawFields`). Names are compared as
//! bytes.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::head::{HeadError, RequestBody, ResponseBody};

/// `bytes` equals `lower`, a lowercase name or token, ignoring ASCII case: what
/// `eq_ignore_ascii_case` answers, but without stopping at the first difference, so the
/// compiler compares a name in a few wide steps rather than a byte at a time. Names are
/// matched on every field of every head, both ways.
#[inline]
pub fn eq_lower(bytes: &[u8], lower: &[u8]) -> bool {
    debug_assert!(!lower.iter().any(u8::is_ascii_uppercase), "{lower:?}");
    bytes.len() == lower.len()
        && bytes
            .iter()
            .zip(lower)
            .fold(0, |diff, (a, b)| diff | (a.to_ascii_lowercase() ^ b))
            == 0
}

/// A field that describes one hop only (RFC 9110 §7.6.1), whatever `Connection` says.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 8] = [
        b"connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"keep-alive",
        b"proxy-connection",
    ];
    NAMES.iter().any(|n| eq_lower(name, n))
}

/// The framing and connection facts of one head.
#[derive(Debug, Default)]
pub struct Facts {
    /// Content-Length: every value and list element agreed on this.
    length: Option<u64>,
    length_error: Option<HeadError>,
    /// Transfer-Encoding was present.
    coded: bool,
    chunked_seen: bool,
    chunked_last: bool,
    chunked_twice: bool,
    other_coding: bool,
    pub close: bool,
    pub keep_alive: bool,
    /// `Connection` named something other than close, keep-alive and the fixed hop-by-hop
    /// names: those fields are to be removed too (the map's `strip_hop_by_hop` does it).
    pub connection_lists_others: bool,
    pub expect_continue: bool,
}

impl Facts {
    pub fn of(fields: &[httparse::Header<'_>]) -> Facts {
        let mut facts = Facts::default();
        for field in fields {
            let name = field.name.as_bytes();
            match name.len() {
                14 if eq_lower(name, b"content-length") => facts.length(field.value),
                17 if eq_lower(name, b"transfer-encoding") => facts.coding(field.value),
                10 if eq_lower(name, b"connection") => facts.connection(field.value),
                6 if eq_lower(name, b"expect") => {
                    facts.expect_continue |= eq_lower(field.value, b"100-continue");
                }
                _ => {}
            }
        }
        facts
    }

    fn length(&mut self, value: &[u8]) {
        for element in value.split(|&b| b == b',') {
            let element = element.trim_ascii();
            if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
                self.length_error = Some(HeadError::Framing("Content-Length is not a number"));
                return;
            }
            let Some(n) = std::str::from_utf8(element)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            else {
                self.length_error = Some(HeadError::Framing("Content-Length too large"));
                return;
            };
            if self.length.is_some_and(|l| l != n) {
                self.length_error = Some(HeadError::Framing("differing Content-Length values"));
                return;
            }
            self.length = Some(n);
        }
    }

    /// Codings in the order sent, across every Transfer-Encoding field.
    fn coding(&mut self, value: &[u8]) {
        self.coded = true;
        for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if coding.is_empty() {
                continue;
            }
            let chunked = eq_lower(coding, b"chunked");
            self.chunked_twice |= chunked && self.chunked_seen;
            self.chunked_seen |= chunked;
            self.other_coding |= !chunked;
            self.chunked_last = chunked;
        }
    }

    fn connection(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if eq_lower(token, b"close") {
                self.close = true;
            } else if eq_lower(token, b"keep-alive") {
                self.keep_alive = true;
            } else if !token.is_empty() && !is_hop_by_hop(token) {
                self.connection_lists_others = true;
            }
        }
    }

    /// The connection is kept after this message, as its version and `Connection` say.
    pub fn persistent(&self, version: Version) -> bool {
        match version {
            Version::HTTP_10 => self.keep_alive,
            _ => !self.close,
        }
    }

    /// `None` without Transfer-Encoding, else whether chunked is its last (and only) coding.
    /// Codings other than chunked are refused: the proxy cannot decode them to re-frame.
    fn transfer_encoding(&self) -> Result<Option<bool>, HeadError> {
        if !self.coded {
            return Ok(None);
        }
        if self.chunked_twice {
            return Err(HeadError::Framing("chunked applied twice"));
        }
        if !self.chunked_last {
            return Ok(Some(false));
        }
        if self.other_coding {
            return Err(HeadError::UnsupportedCoding);
        }
        Ok(Some(true))
    }

    fn content_length(&self) -> Result<Option<u64>, HeadError> {
        match self.length_error {
            Some(e) => Err(e),
            None => Ok(self.length),
        }
    }

    /// RFC 9112 §6.3 for requests: Transfer-Encoding must end in chunked (and wins over a
    /// Content-Length, the connection then closing after the answer); Content-Length values
    /// must all agree.
    pub fn request_body(&self, version: Version) -> Result<(RequestBody, bool), HeadError> {
        if let Some(chunked) = self.transfer_encoding()? {
            if version == Version::HTTP_10 {
                return Err(HeadError::Framing("Transfer-Encoding in HTTP/1.0"));
            }
            if !chunked {
                return Err(HeadError::Framing(
                    "Transfer-Encoding not ending in chunked",
                ));
            }
            let close_after = self.length.is_some() || self.length_error.is_some();
            return Ok((RequestBody::Chunked, close_after));
        }
        Ok(match self.content_length()? {
            None | Some(0) => (RequestBody::None, false),
            Some(n) => (RequestBody::Length(n), false),
        })
    }

    /// RFC 9112 §6.3 for responses to `method`.
    pub fn response_body(
        &self,
        method: &Method,
        status: StatusCode,
    ) -> Result<ResponseBody, HeadError> {
        if method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok(ResponseBody::Empty);
        }
        // Any coding but a lone chunked is refused (the exchange answers 502, as nginx does).
        // RFC 9112 §6.3 would read `gzip, chunked` by its chunks and `gzip` to the close, but
        // Transfer-Encoding is hop-by-hop: passed on without it, the client would take the
        // still-coded bytes for the body itself, and HTTP/2 cannot carry a transfer coding.
        match self.transfer_encoding()? {
            Some(true) => return Ok(ResponseBody::Chunked),
            Some(false) => return Err(HeadError::UnsupportedCoding),
            None => {}
        }
        Ok(match self.content_length()? {
            Some(0) => ResponseBody::Empty,
            Some(n) => ResponseBody::Length(n),
            None => ResponseBody::Close,
        })
    }
}

/// A backend's response fields as it sent them: slices of its head, plus what the proxy adds.
/// Written on to an HTTP/1.1 client without ever being put in a map (hashing each name and
/// validating each value again cost a sixth of the proxy's instructions per request); an
/// HTTP/2 client's answer gets the map (`into_map`).
#[derive(Debug, Clone)]
pub struct RawFields {
    head: Bytes,
    spans: Vec<Span>,
    added: Vec<(HeaderName, HeaderValue)>,
    /// The hop-by-hop fields were left out as the head was read.
    hop_by_hop_left_out: bool,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
    kept: bool,
}

impl RawFields {
    /// The fields of `head` (httparse's `fields`, borrowed from it), hop-by-hop ones left out
    /// with `skip_hop_by_hop`.
    pub fn new(head: &Bytes, fields: &[httparse::Header<'_>], skip_hop_by_hop: bool) -> RawFields {
        let base = head.as_ptr() as usize;
        let at = |part: &[u8]| {
            let start = (part.as_ptr() as usize - base) as u32;
            (start, start + part.len() as u32)
        };
        let spans = fields
            .iter()
            .filter(|f| !(skip_hop_by_hop && is_hop_by_hop(f.name.as_bytes())))
            .map(|f| Span {
                name: at(f.name.as_bytes()),
                value: at(f.value),
                kept: true,
            })
            .collect();
        RawFields {
            head: head.clone(),
            spans,
            added: Vec::new(),
            hop_by_hop_left_out: skip_hop_by_hop,
        }
    }

    pub fn hop_by_hop_left_out(&self) -> bool {
        self.hop_by_hop_left_out
    }

    fn name(&self, span: &Span) -> &[u8] {
        &self.head[span.name.0 as usize..span.name.1 as usize]
    }

    fn value(&self, span: &Span) -> &[u8] {
        &self.head[span.value.0 as usize..span.value.1 as usize]
    }

    /// The values of the field `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        let wanted = name.as_str().as_bytes();
        let sent = self
            .spans
            .iter()
            .filter(move |s| s.kept && eq_lower(self.name(s), wanted))
            .map(|s| self.value(s));
        let added = self
            .added
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_bytes());
        sent.chain(added)
    }

    pub fn contains(&self, name: &HeaderName) -> bool {
        self.get_all(name).next().is_some()
    }

    pub fn append(&mut self, name: HeaderName, value: HeaderValue) {
        self.added.push((name, value));
    }

    pub fn remove(&mut self, name: &HeaderName) {
        let wanted = name.as_str().as_bytes();
        for i in 0..self.spans.len() {
            let span = self.spans[i];
            if eq_lower(self.name(&span), wanted) {
                self.spans[i].kept = false;
            }
        }
        self.added.retain(|(n, _)| n != name);
    }

    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        self.remove(&name);
        self.append(name, value);
    }

    /// The fields that remain, as names and values.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let sent = self
            .spans
            .iter()
            .filter(|s| s.kept)
            .map(|s| (self.name(s), self.value(s)));
        let added = self
            .added
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
        sent.chain(added)
    }

    /// As an `http` map (for HTTP/2): names lowercased, values shared with the head. A name
    /// `http` refuses cannot come from httparse; it would be dropped.
    pub fn into_map(self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.spans.len() + self.added.len());
        for span in self.spans.iter().filter(|s| s.kept) {
            let name = HeaderName::from_bytes(self.name(span));
            let value = HeaderValue::from_maybe_shared(
                self.head
                    .slice(span.value.0 as usize..span.value.1 as usize),
            );
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
        }
        for (name, value) in self.added {
            map.append(name, value);
        }
        map
    }
}
