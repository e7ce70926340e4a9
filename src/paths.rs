//! Request paths: one canonical form, and the deny/allow policy matched against it.
//!
//! Filters like "deny /metrics" are bypassed when the filter and the backend read a path
//! differently (`/%6detrics`, `/a/../metrics`, `//metrics`, `/metrics;x`, `/METRICS`). So the
//! path is canonicalised once, the policy is matched on the canonical form, and exactly that
//! form is forwarded: the backend never sees a path the policy did not see.
//!
//! Canonicalisation (RFC 3986 §6.2.2, strict where backends disagree):
//! - percent-escapes of unreserved characters are decoded (`%6D` → `m`); other escapes are
//!   kept, with upper-case hex;
//! - an encoded `/` or `\` (`%2F`, `%5C`), a raw `\`, NUL and other control characters (raw or
//!   encoded), a malformed escape, and a dot or empty segment disguised by parameters or
//!   spaces (`..;x`, which Tomcat reads as `..`; `/;x/metrics`, which it reads as `/metrics`;
//!   `/%20/metrics`, which Spring's `trimTokens` reads as `/metrics`) are refused: backends
//!   disagree on what they mean;
//! - an overlong UTF-8 form (`%C0%AF` for `/`, `%C0%AE` for `.`), which RFC 3629 forbids
//!   decoding but old backends decoded anyway, is refused too, and so is an escape behind an
//!   encoded `%` (`%252e`, `%256detrics`), which a backend that decodes twice reads and
//!   others do not;
//! - repeated slashes are merged, `.` and `..` segments resolved (never above the root).
//!
//! Matching is on whole segments, case-insensitively, each segment fully percent-decoded and
//! cut at its first `;` (path parameters), or at a decoded `#` or `?`, which a backend that
//! decodes before it splits takes for a fragment or a query. So `/Metrics;jsessionid=1/x` and
//! `/metrics%23x` are under `/metrics` but `/metricsfoo` is not. A protective rule (deny, rate limit) also covers a name with
//! spaces around it or a suffix after a dot (`/metrics%20`, `/metrics.json`), which some
//! backends read as the name itself; the allow list does not.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path does not start with /")]
    NotOrigin,
    #[error("encoded slash or backslash in path")]
    EncodedSeparator,
    #[error("backslash in path")]
    Backslash,
    #[error("control character in path")]
    Control,
    #[error("malformed percent-escape in path")]
    BadEscape,
    #[error("dot or empty segment disguised by parameters or spaces in path")]
    DisguisedSegment,
    #[error("overlong UTF-8 form in path")]
    Overlong,
    #[error("escape hidden behind an encoded % in path")]
    DoubleEncoded,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether a UTF-8 lead byte, followed by `next`, starts an overlong form: a character written
/// in more bytes than it needs (RFC 3629 §3). No valid text is written so; it exists to hide
/// `/`, `\` or `.` from a filter, for a backend that decodes it anyway (the IIS and Tomcat
/// traversals of `/%C0%AE%C0%AE/`). Only the lead and the first continuation byte decide it;
/// `next` is read only for the leads that need it.
fn overlong_lead(lead: u8, next: impl FnOnce() -> Option<u8>) -> bool {
    match lead {
        0xC0 | 0xC1 => true,
        0xE0 => matches!(next(), Some(0x80..=0x9F)),
        0xF0 => matches!(next(), Some(0x80..=0x8F)),
        _ => false,
    }
}

/// The byte the escape at `at` encodes, if there is a well-formed escape there.
fn escaped_byte(bytes: &[u8], at: usize) -> Option<u8> {
    if bytes.get(at) != Some(&b'%') {
        return None;
    }
    let hi = bytes.get(at + 1).copied().and_then(hex)?;
    let lo = bytes.get(at + 2).copied().and_then(hex)?;
    Some(hi << 4 | lo)
}

/// The canonical form of an origin-form path (no query). Borrowed when already canonical,
/// which is the common case and costs no allocation.
pub fn canonicalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if already_canonical(raw.as_bytes()) {
        return Ok(Cow::Borrowed(raw));
    }
    canonicalize_slowly(raw)
}

/// The common case, checked in one pass without allocating: a path with no escape, backslash,
/// control byte or parameter, no empty segment and no dot segment is its own canonical form.
fn already_canonical(bytes: &[u8]) -> bool {
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let mut segment_start = 1;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match b {
            // A space cannot come in a request target, but the matcher trims spaces around a
            // name, so a name made of spaces goes to the full check.
            b'%' | b'\\' | b';' | 0..=0x20 | 0x7f => return false,
            b'/' => {
                if !plain_segment(&bytes[segment_start..i]) {
                    return false;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    // The last segment may be empty: that is a trailing slash (or the root).
    let last = &bytes[segment_start..];
    last.is_empty() || plain_segment(last)
}

fn plain_segment(segment: &[u8]) -> bool {
    !segment.is_empty() && segment != b"." && segment != b".."
}

fn canonicalize_slowly(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotOrigin);
    }
    // Decode unreserved escapes, normalise the others, refuse the ambiguous.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut hides_escape = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let Some(v) = escaped_byte(bytes, i) else {
                    return Err(PathError::BadEscape);
                };
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0..=0x1f | 0x7f => return Err(PathError::Control),
                    v if is_unreserved(v) => {
                        decoded.push(v);
                        changed = true;
                    }
                    v if overlong_lead(v, || escaped_byte(bytes, i + 3)) => {
                        return Err(PathError::Overlong)
                    }
                    v => {
                        hides_escape |= v == b'%';
                        let upper = format!("%{v:02X}");
                        changed |= upper.as_bytes() != &bytes[i..i + 3];
                        decoded.extend_from_slice(upper.as_bytes());
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::Control),
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    // `%25` before two hex digits, once the rest is decoded (`%252F`, and `%25%32%46` too):
    // an escape a backend that decodes twice reads and others do not.
    if hides_escape && hidden_escape(&decoded) {
        return Err(PathError::DoubleEncoded);
    }
    // Segments: merge empty ones, resolve dot segments.
    let ends_with_slash = decoded.ends_with(b"/");
    let mut out: Vec<&[u8]> = Vec::new();
    let mut trailing = ends_with_slash;
    for segment in decoded.split(|b| *b == b'/').filter(|s| !s.is_empty()) {
        // Read as the matcher reads it (fully decoded, cut at `;`, spaces trimmed): an empty
        // or dot name made of anything but a plain `.`/`..` means different paths to
        // different backends.
        if segment != b"." && segment != b".." {
            let name = segment_name(std::str::from_utf8(segment).unwrap_or_default());
            if matches!(name.trim_matches(' '), "" | "." | "..") {
                return Err(PathError::DisguisedSegment);
            }
        }
        trailing = ends_with_slash;
        match segment {
            b"." => trailing = true,
            b".." => {
                out.pop();
                trailing = true;
            }
            s => out.push(s),
        }
    }
    let mut canonical = Vec::with_capacity(decoded.len());
    for s in &out {
        canonical.push(b'/');
        canonical.extend_from_slice(s);
    }
    if canonical.is_empty() || trailing {
        canonical.push(b'/');
    }
    if !changed && canonical == bytes {
        return Ok(Cow::Borrowed(raw));
    }
    // Only ASCII went in, and escapes stay escapes: the result is ASCII.
    Ok(Cow::Owned(
        String::from_utf8(canonical).expect("ASCII path"),
    ))
}

/// Whether an encoded `%` in a decoded path is followed by two hex digits.
fn hidden_escape(decoded: &[u8]) -> bool {
    decoded
        .windows(5)
        .any(|w| w[..3] == *b"%25" && hex(w[3]).is_some() && hex(w[4]).is_some())
}

/// A path prefix, stored as lower-case decoded segment names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    text: String,
    segments: Vec<String>,
}

impl Prefix {
    pub fn parse(text: &str) -> Result<Prefix, PathError> {
        let canonical = canonicalize(text)?;
        Ok(Prefix {
            text: text.to_string(),
            segments: names(&canonical).map(|n| fold_case(&n)).collect(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Does it cover this canonical path, as a protective rule (see `guards`)?
    pub fn matches(&self, canonical: &str) -> bool {
        self.guards(names(canonical))
    }

    /// `/metrics` covers `/metrics`, `/metrics/` and `/metrics/x`, not `/metricsx`: the exact
    /// reading, for the allow list, which must not let more through than it names.
    fn covers<'a>(&self, path: impl Iterator<Item = Cow<'a, str>>) -> bool {
        self.each_segment(path, |want, name| want.eq_ignore_ascii_case(name))
    }

    /// What a protective rule (a deny, a rate limit) covers: what `covers` does, and also the
    /// names some backends read as the same, a name with spaces around it (`/metrics%20`,
    /// which Spring's old `trimTokens` reads as `/metrics`), trailing dots (`/metrics.`, which
    /// Windows drops) or a suffix after a dot (`/metrics.json`: Spring MVC's suffix patterns).
    /// Still not `/metricsx`.
    fn guards<'a>(&self, path: impl Iterator<Item = Cow<'a, str>>) -> bool {
        self.each_segment(path, |want, name| {
            if want.eq_ignore_ascii_case(name) {
                // Exactly as named, whatever the name ends with (a prefix `/v1.`).
                return true;
            }
            let name = name
                .trim_start_matches(' ')
                .trim_end_matches([' ', '.'])
                .as_bytes();
            name.get(..want.len())
                .is_some_and(|stem| stem.eq_ignore_ascii_case(want.as_bytes()))
                && matches!(name.get(want.len()), None | Some(b'.'))
        })
    }

    fn each_segment<'a>(
        &self,
        mut path: impl Iterator<Item = Cow<'a, str>>,
        same: impl Fn(&str, &str) -> bool,
    ) -> bool {
        // Prefix segments are folded (`fold_case`); ASCII folding of the path's names is exact
        // here, since `segment_name` folds whatever is not plain ASCII the same way.
        self.segments
            .iter()
            .all(|want| path.next().is_some_and(|name| same(want, &name)))
    }

    fn under(&self, base: &Prefix) -> Prefix {
        Prefix {
            text: format!("{}{}", base.text.trim_end_matches('/'), self.text),
            segments: base
                .segments
                .iter()
                .chain(self.segments.iter())
                .cloned()
                .collect(),
        }
    }
}

/// Every valid percent-escape decoded; anything else kept as it is.
fn decode_all(text: &str) -> Vec<u8> {
    decode_bytes(text.as_bytes())
}

fn decode_bytes(raw: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match escaped_byte(raw, i) {
            Some(b) => {
                bytes.push(b);
                i += 3;
            }
            None => {
                bytes.push(raw[i]);
                i += 1;
            }
        }
    }
    bytes
}

/// What a backend that ignores RFC 3629 reads in an overlong form: the ASCII it hides
/// (`C0 AF` as `/`). Other bytes, valid UTF-8 or not, are kept as they are.
fn read_overlong(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let len = match bytes[i] {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        let tail = bytes
            .get(i + 1..i + len)
            .filter(|tail| len > 1 && tail.iter().all(|b| b & 0xC0 == 0x80));
        if let Some(tail) = tail {
            let lead = u32::from(bytes[i] & (0x7F >> len));
            let code = tail
                .iter()
                .fold(lead, |code, b| code << 6 | u32::from(b & 0x3F));
            if let Ok(ascii @ 0..=0x7F) = u8::try_from(code) {
                out.push(ascii);
                i += len;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Where a decoded name ends for the policy: at a path parameter (`;`), or at what a backend
/// that decodes before it splits would take for a query or a fragment (`%3F`, `%23`).
fn ends_name(b: u8) -> bool {
    matches!(b, b';' | b'#' | b'?')
}

/// How a segment is compared: fully decoded, cut where `ends_name` says, case folded.
/// Borrowed for a plain ASCII segment without escapes (the common case: no allocation on the
/// request path); such a name is compared with ASCII case folding. Anything else is decoded and
/// folded with `fold_case`.
fn segment_name(segment: &str) -> Cow<'_, str> {
    if segment.is_ascii() && !segment.contains('%') {
        let name = segment.split(|c: char| ends_name(c as u8)).next();
        return Cow::Borrowed(name.unwrap_or_default());
    }
    let bytes = decode_all(segment);
    let name = bytes.split(|b| ends_name(*b)).next().unwrap_or_default();
    Cow::Owned(fold_case(&String::from_utf8_lossy(name)))
}

/// Case folded as leniently as a backend may compare: each character through its upper case,
/// then that through its lower case, one character each. Java's `equalsIgnoreCase` compares
/// so, and reads `ſ` as `s` and `ı` and `İ` as `i` (`/metricſ` as `/metrics`), which
/// `to_lowercase` alone keeps apart.
fn fold_case(text: &str) -> String {
    text.chars()
        .map(|c| {
            let upper = c.to_uppercase().next().unwrap_or(c);
            upper.to_lowercase().next().unwrap_or(upper)
        })
        .collect()
}

/// The names of a canonical path's segments, as the policy compares them.
fn names(canonical: &str) -> impl Iterator<Item = Cow<'_, str>> {
    canonical
        .split('/')
        .filter(|s| !s.is_empty())
        .map(segment_name)
}

/// `list`, and under `relative` (Keycloak's `http-relative-path`, e.g. `/auth`) a copy of each.
pub fn with_relative(list: Vec<Prefix>, relative: Option<&Prefix>) -> Vec<Prefix> {
    match relative {
        None => list,
        Some(base) => {
            let under: Vec<Prefix> = list.iter().map(|p| p.under(base)).collect();
            list.into_iter().chain(under).collect()
        }
    }
}

/// The paths a listener refuses, matched on canonical paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPolicy {
    deny: Vec<Prefix>,
    /// When set, only paths under one of these are forwarded.
    allow: Option<Vec<Prefix>>,
}

impl PathPolicy {
    /// `relative` (Keycloak's `http-relative-path`, e.g. `/auth`) repeats every rule under it.
    pub fn new(
        deny: Vec<Prefix>,
        allow: Option<Vec<Prefix>>,
        relative: Option<Prefix>,
    ) -> PathPolicy {
        PathPolicy {
            deny: with_relative(deny, relative.as_ref()),
            allow: allow.map(|list| with_relative(list, relative.as_ref())),
        }
    }

    pub fn deny_list(&self) -> &[Prefix] {
        &self.deny
    }

    pub fn allow_list(&self) -> Option<&[Prefix]> {
        self.allow.as_deref()
    }

    /// Is this canonical path refused?
    pub fn denies(&self, canonical: &str) -> bool {
        self.denies_by(|| names(canonical), Prefix::guards)
    }

    /// For the lenient model's segments, already lower case and read as leniently as any
    /// backend would: matched exactly, or the model would check the policy against itself.
    fn denies_segments(&self, path: &[String]) -> bool {
        self.denies_by(
            || path.iter().map(|s| Cow::Borrowed(s.as_str())),
            Prefix::covers,
        )
    }

    fn denies_by<'a, I>(&self, path: impl Fn() -> I, denied_by: impl Fn(&Prefix, I) -> bool) -> bool
    where
        I: Iterator<Item = Cow<'a, str>>,
    {
        if self.deny.iter().any(|p| denied_by(p, path())) {
            return true;
        }
        match &self.allow {
            None => false,
            Some(allow) => !allow.iter().any(|p| p.covers(path())),
        }
    }
}

/// Decoded again and again until no escape is left, as a backend that decodes more than once
/// reads it (`%252e` as `.`). Each pass that decodes shortens the text, so this ends.
fn decode_repeatedly(text: &str) -> Vec<u8> {
    let mut bytes = decode_all(text);
    loop {
        let again = decode_bytes(&bytes);
        if again.len() == bytes.len() {
            return bytes;
        }
        bytes = again;
    }
}

/// How the most lenient backend could read a path: every escape decoded (and what that leaves
/// decoded again, as a backend that decodes twice would), overlong UTF-8 forms read as the
/// ASCII they hide, `\` taken as a separator, parameters and whatever follows a decoded `#`
/// or `?` dropped, dot segments resolved, spaces around a name, its trailing dots and a
/// suffix after its first dot dropped, case folded.
/// Vert.x/Quarkus (Keycloak) decode less and compare case-sensitively and exactly, so a path
/// that stays clear of the policy under this reading stays clear under theirs.
pub fn lenient_segments(path: &str) -> Vec<String> {
    let decoded = read_overlong(&decode_repeatedly(path));
    let text = fold_case(&String::from_utf8_lossy(&decoded));
    let mut out: Vec<String> = Vec::new();
    for segment in text.split(['/', '\\']) {
        match segment
            .split(|c: char| c.is_ascii() && ends_name(c as u8))
            .next()
            .unwrap_or_default()
            .trim_matches(' ')
        {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            name => {
                let name = name.trim_end_matches(['.', ' ']);
                let stem = match name.find('.') {
                    Some(dot) if dot > 0 => &name[..dot],
                    _ => name,
                };
                out.push(stem.to_string());
            }
        }
    }
    out
}

/// The property the tests and the fuzz target check: whatever the proxy would forward for
/// `raw`, a lenient backend does not read it as a path the policy refuses.
pub fn forwarding_is_safe(policy: &PathPolicy, raw: &str) -> bool {
    match canonicalize(raw) {
        Err(_) => true,
        Ok(canonical) => {
            policy.denies(&canonical) || !policy.denies_segments(&lenient_segments(&canonical))
        }
    }
}

/// The value of query parameter `key` in `uri` (the first one; `+` is not decoded).
pub fn query_param<'a>(uri: &'a http::Uri, key: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The value of query parameter `key` as text for a person to read, in a log line: decoded as
/// a form value is (`+` a space, percent-escapes decoded, so `curl --data-urlencode` and a
/// hand-written `why=dc1+maintenance` read the same), with control characters escaped so that
/// `%0A` cannot start a forged line in a text log.
pub fn query_text(uri: &http::Uri, key: &str) -> Option<String> {
    let raw = query_param(uri, key)?.replace('+', " ");
    let decoded = String::from_utf8_lossy(&decode_all(&raw)).into_owned();
    if !decoded.contains(char::is_control) {
        return Some(decoded);
    }
    Some(
        decoded
            .chars()
            .map(|c| match c {
                c if c.is_control() => c.escape_default().to_string(),
                c => c.to_string(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_text_reads_as_a_form_value_and_cannot_break_a_log_line() {
        let uri: http::Uri =
            "/x?who=alice%20smith&why=kernel+patch%0Areboot%1b[31m&raw=%zz%e9&who=mallory"
                .parse()
                .unwrap();
        assert_eq!(query_text(&uri, "who").as_deref(), Some("alice smith"));
        assert_eq!(
            query_text(&uri, "why").as_deref(),
            Some("kernel patch\\nreboot\\u{1b}[31m")
        );
        // A malformed escape is kept as written; a byte that is not UTF-8 is replaced.
        assert_eq!(query_text(&uri, "raw").as_deref(), Some("%zz\u{fffd}"));
        assert_eq!(query_text(&uri, "absent"), None);
    }

    #[test]
    fn the_fast_path_agrees_with_the_full_canonicalisation() {
        let tokens = [
            "a", "B", "/", "//", ".", "..", "%2e", "%41", "%2f", ";x", "\\", "~", "-", "%e9",
            "realms",
        ];
        let mut checked = 0;
        let mut stack = vec![(String::from("/"), 0)];
        while let Some((path, depth)) = stack.pop() {
            assert_eq!(canonicalize(&path), canonicalize_slowly(&path), "{path:?}");
            checked += 1;
            // Every sequence of up to four tokens after the root (15^4 = 50,625 paths).
            if depth < 4 {
                for t in tokens {
                    stack.push((format!("{path}{t}"), depth + 1));
                }
            }
        }
        assert!(checked > 10_000);
    }

    fn c(p: &str) -> Result<String, PathError> {
        canonicalize(p).map(|c| c.into_owned())
    }

    #[test]
    fn canonical_forms() {
        for (raw, canonical) in [
            ("/", "/"),
            ("/realms/master/account", "/realms/master/account"),
            ("/%6detrics", "/metrics"),
            ("/%6D%65trics", "/metrics"),
            ("//metrics", "/metrics"),
            ("/a//b///c", "/a/b/c"),
            ("/a/./b", "/a/b"),
            ("/a/../metrics", "/metrics"),
            ("/../../metrics", "/metrics"),
            ("/%2e%2e/metrics", "/metrics"),
            ("/a/%2E/b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/", "/a/b/"),
            ("/a%20b", "/a%20b"),
            ("/a%3bb", "/a%3Bb"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/metrics;jsessionid=x", "/metrics;jsessionid=x"),
            ("/%7Euser", "/~user"),
            // A `%` itself, with no escape behind it.
            ("/100%25", "/100%25"),
            ("/100%25off", "/100%25off"),
            ("/a%25%2Eb", "/a%25.b"),
        ] {
            assert_eq!(c(raw).as_deref(), Ok(canonical), "{raw}");
        }
        assert!(matches!(
            canonicalize("/realms/x").unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (raw, err) in [
            ("metrics", PathError::NotOrigin),
            ("*", PathError::NotOrigin),
            ("/a%2Fmetrics", PathError::EncodedSeparator),
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%5Cb", PathError::EncodedSeparator),
            ("/a\\b", PathError::Backslash),
            ("/a%00b", PathError::Control),
            ("/a%0d%0ab", PathError::Control),
            ("/a%7F", PathError::Control),
            ("/a%", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
            ("/..;/metrics", PathError::DisguisedSegment),
            ("/a/.;x/b", PathError::DisguisedSegment),
            ("/;x/metrics", PathError::DisguisedSegment),
            ("/a/;/b", PathError::DisguisedSegment),
            ("/%3b/metrics", PathError::DisguisedSegment),
            ("/..%3Bx/metrics", PathError::DisguisedSegment),
            ("/.%3b/metrics", PathError::DisguisedSegment),
            ("/%20/metrics", PathError::DisguisedSegment),
            ("/a/.%20/b", PathError::DisguisedSegment),
            ("/a/%20..%20/metrics", PathError::DisguisedSegment),
            ("/a/%20;x/metrics", PathError::DisguisedSegment),
            ("/%23/metrics", PathError::DisguisedSegment),
            ("/a/..%3Fx/metrics", PathError::DisguisedSegment),
            // Raw spaces never come in a request target, but the fuzzer sends them.
            ("/ /metrics", PathError::DisguisedSegment),
            ("/a/ . /metrics", PathError::DisguisedSegment),
            ("/a/%c0%ae%c0%ae/metrics", PathError::Overlong),
            ("/%C0%AFmetrics", PathError::Overlong),
            ("/a%c1%9cb", PathError::Overlong),
            ("/%c0", PathError::Overlong),
            ("/%e0%80%ae", PathError::Overlong),
            ("/%f0%80%80%af", PathError::Overlong),
            ("/%256detrics", PathError::DoubleEncoded),
            ("/a/%252e%252e/metrics", PathError::DoubleEncoded),
            ("/a%252Fmetrics", PathError::DoubleEncoded),
            // The hidden escape's digits escaped themselves.
            ("/a%25%32%46metrics", PathError::DoubleEncoded),
            ("/%2525%32%65", PathError::DoubleEncoded),
        ] {
            assert_eq!(c(raw), Err(err), "{raw}");
        }
    }

    fn policy(deny: &[&str], allow: Option<&[&str]>, relative: Option<&str>) -> PathPolicy {
        let p = |l: &[&str]| {
            l.iter()
                .map(|s| Prefix::parse(s).unwrap())
                .collect::<Vec<_>>()
        };
        PathPolicy::new(
            p(deny),
            allow.map(p),
            relative.map(|r| Prefix::parse(r).unwrap()),
        )
    }

    #[test]
    fn deny_matches_whole_segments_case_insensitively() {
        let pol = policy(&["/metrics", "/health"], None, Some("/auth"));
        for denied in [
            "/metrics",
            "/metrics/",
            "/metrics/x",
            "/METRICS",
            "/Health/ready",
            "/metrics;a=b",
            "/metrics%3Bx",
            "/metrics%23x",
            "/Metrics%3F",
            "/auth/metrics",
            "/AUTH/health/live",
            "/auth/metrics;x/y",
            "/metrics.json",
            "/metrics.",
            "/metrics%20",
            "/%20Metrics%20%20/x",
            "/metrics%20.",
            "/metrics.%20.",
            "/metric%C5%BF",
            "/metr%C4%B1cs",
            "/metr%C4%B0cs",
            "/health.d/ready",
            "/auth.x/metrics",
        ] {
            assert!(pol.denies(&c(denied).unwrap()), "{denied}");
        }
        for allowed in [
            "/",
            "/metricsx",
            "/realms/metrics",
            "/auth",
            "/auth/realms/x",
            "/healthz",
            "/x/auth/metrics",
            "/metrics-x",
            "/metri%20cs",
            "/x.metrics",
            "/metrics%20.json",
            "/x%23metrics",
        ] {
            assert!(!pol.denies(&c(allowed).unwrap()), "{allowed}");
        }
    }

    /// Every sequence of up to four tricky tokens, then a seeded random walk over longer ones:
    /// no forwarded path reads as a denied one, however leniently. The counts prove the search
    /// exercised forwarded paths, not just refused ones.
    #[test]
    fn no_forwarded_path_reads_as_a_denied_one() {
        const TOKENS: [&str; 33] = [
            "/",
            "//",
            ".",
            "..",
            "%2e",
            "%2E",
            "%2e%2e",
            ".%2e",
            "metrics",
            "METRICS",
            "%6detrics",
            "metric",
            "s",
            "health",
            ";x",
            "%3b",
            "%3B",
            "a",
            "%2f",
            "%5c",
            "%00",
            "%25",
            "auth",
            "%61uth",
            "%c0%ae",
            "%c0%af",
            "%20",
            "%c5%bf",
            // After `%25`, an escape hidden from a single decoding: `%252e`, `%256detrics`.
            "2e",
            "2f",
            "6detrics",
            "%23",
            "%3f",
        ];
        let deny_only = policy(&["/metrics", "/health"], None, Some("/auth"));
        let with_allow = policy(
            &["/metrics", "/health"],
            Some(&["/realms", "/resources"]),
            Some("/auth"),
        );
        let (mut forwarded, mut refused) = (0u64, 0u64);
        let mut check = |raw: &str| {
            for p in [&deny_only, &with_allow] {
                assert!(
                    forwarding_is_safe(p, raw),
                    "forwards {raw:?} as {:?}",
                    canonicalize(raw)
                );
            }
            match canonicalize(raw) {
                Ok(c) if !deny_only.denies(&c) => forwarded += 1,
                _ => refused += 1,
            }
        };
        // Exhaustive: all sequences of 0..=4 tokens after the leading slash.
        for len in 0..=4u32 {
            for n in 0..TOKENS.len().pow(len) {
                let mut raw = String::from("/");
                let mut rest = n;
                for _ in 0..len {
                    raw.push_str(TOKENS[rest % TOKENS.len()]);
                    rest /= TOKENS.len();
                }
                check(&raw);
            }
        }
        // Longer paths: a fixed-seed xorshift walk, the same every run.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..100_000 {
            let mut raw = String::from("/");
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for _ in 0..(5 + seed % 6) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                raw.push_str(TOKENS[(seed % TOKENS.len() as u64) as usize]);
            }
            check(&raw);
        }
        assert!(
            forwarded > 100_000 && refused > 100_000,
            "forwarded {forwarded}, refused {refused}"
        );
    }

    #[test]
    fn lenient_reading_is_at_least_as_lenient_as_ours() {
        assert_eq!(lenient_segments("/A/%2e%2E/Metrics;x"), vec!["metrics"]);
        assert_eq!(lenient_segments("/a%2fmetrics"), vec!["a", "metrics"]);
        assert_eq!(lenient_segments("/a\\..\\health"), vec!["health"]);
        assert_eq!(lenient_segments("/a/%c0%ae%C0%AE/metrics"), vec!["metrics"]);
        assert_eq!(lenient_segments("/%20/Metrics.json"), vec!["metrics"]);
        assert_eq!(
            lenient_segments("/a%20/.well-known"),
            vec!["a", ".well-known"]
        );
        assert_eq!(lenient_segments("/a%e0%80%afhealth"), vec!["a", "health"]);
        // Valid characters outside ASCII are not overlong, and are not read as ASCII.
        assert_eq!(lenient_segments("/%c3%a9%e2%80%a6"), vec!["é…"]);
    }

    #[test]
    fn characters_outside_ascii_written_properly_are_kept() {
        assert_eq!(c("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(
            c("/%e0%a0%80/%f0%90%80%80").unwrap(),
            "/%E0%A0%80/%F0%90%80%80"
        );
        // Not overlong, only invalid: no decoder reads ASCII in them, so they are forwarded.
        assert_eq!(c("/%e0%41/%f0/%ff").unwrap(), "/%E0A/%F0/%FF");
    }

    #[test]
    fn allow_list_limits_what_passes() {
        let pol = policy(
            &["/metrics"],
            Some(&["/realms/", "/resources", "/.well-known"]),
            None,
        );
        assert!(!pol.denies("/realms/master/protocol/openid-connect/auth"));
        assert!(!pol.denies("/resources/x.js"));
        assert!(!pol.denies("/.well-known/openid-configuration"));
        assert!(pol.denies("/admin/master/console/"));
        assert!(pol.denies("/"));
        assert!(pol.denies("/realmsx"));
        // The allow list reads names exactly: no space or suffix leniency lets more through.
        assert!(pol.denies("/realms.json/x"));
        assert!(pol.denies(&c("/resources%20/x.js").unwrap()));
        // A protective rule's leniency still applies inside an allowed prefix.
        assert!(pol.denies(&c("/realms/../metrics.json").unwrap()));
    }

    #[test]
    fn protective_rules_cover_names_read_with_spaces_trimmed_or_suffix_dropped() {
        let token = Prefix::parse("/realms/acme/protocol/openid-connect/token").unwrap();
        for path in [
            "/realms/acme/protocol/openid-connect/token",
            "/realms/acme/protocol/openid-connect/token.json",
            "/realms/acme/protocol/openid-connect/token%20",
            "/realms/acme.x/protocol/openid-connect/token",
        ] {
            assert!(token.matches(&c(path).unwrap()), "{path}");
        }
        for path in [
            "/realms/acme/protocol/openid-connect/tokens",
            "/realms/acme/protocol/openid-connect/to%20ken",
            "/realms/acme/protocol/openid-connect",
        ] {
            assert!(!token.matches(&c(path).unwrap()), "{path}");
        }
        // A prefix that ends with a dot still covers itself.
        let dotted = Prefix::parse("/v1.").unwrap();
        assert!(dotted.matches("/v1./x"));
        assert!(!dotted.matches("/v1/x"));
    }
}
