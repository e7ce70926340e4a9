//! Reading cookies from request headers (RFC 6265 §5.4 on the server side): `Cookie` headers
//! hold `name=value` pairs separated by `;`. Names are compared exactly; a value may be quoted.
//! Parsing works on bytes: browsers send raw UTF-8 in some cookies, and one such cookie must
//! not hide the others on the same line (the fuzzer found that it did when lines were read as
//! visible ASCII only).

use bytes::BytesMut;
use http::header::{HeaderMap, COOKIE};
use memchr::memchr;

/// The value of the first cookie called `name`, across every `Cookie` header.
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .find_map(|line| find_in_bytes(line.as_bytes(), name))
}

/// The value of `name` in one `Cookie` header line.
pub fn find_in<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    find_in_bytes(line.as_bytes(), name)
}

/// The value of `name` in one line given as bytes; `None` also when that value is not UTF-8.
pub fn find_in_bytes<'a>(line: &'a [u8], name: &str) -> Option<&'a str> {
    pairs(line).find_map(|pair| match split_pair(pair) {
        (n, Some(v)) if n == name.as_bytes() => {
            let v = v
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v);
            std::str::from_utf8(v).ok()
        }
        _ => None,
    })
}

/// Removes every cookie called `name` from the request, and joins what is left into one
/// `Cookie` line (`join`). Does nothing when there is nothing to change.
pub fn remove(headers: &mut HeaderMap, name: &str) {
    rewrite(headers, Some(name));
}

/// Joins the request's `Cookie` lines into one: HTTP/2 clients send one header per cookie
/// (browsers do, for HPACK's sake), which an HTTP/1.1 backend must receive joined with `; `
/// (RFC 9113 §8.2.3); many read only the first `Cookie` line. One line is left as it is.
pub fn join(headers: &mut HeaderMap) {
    if headers.get_all(COOKIE).iter().nth(1).is_some() {
        rewrite(headers, None);
    }
}

/// The cookie lines joined into one, without the cookies called `drop`.
fn rewrite(headers: &mut HeaderMap, drop: Option<&str>) {
    // One pass that joins as it goes: on a sticky site nearly every request carries the cookie,
    // so the joined line is nearly always wanted.
    let mut joined = BytesMut::new();
    let (mut lines, mut removed) = (0, false);
    for line in headers.get_all(COOKIE) {
        lines += 1;
        joined.reserve(line.len());
        for pair in pairs(line.as_bytes()) {
            // A pair without `=` is named by all of it: `SG_NODE` alone goes too.
            if drop.is_some_and(|name| split_pair(pair).0 == name.as_bytes()) {
                removed = true;
                continue;
            }
            if !joined.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(pair);
        }
    }
    if lines < 2 && !removed {
        return;
    }
    headers.remove(COOKIE);
    if joined.is_empty() {
        return;
    }
    if let Ok(line) = http::HeaderValue::from_maybe_shared(joined.freeze()) {
        headers.insert(COOKIE, line);
    }
}

/// The value a `Set-Cookie` line gives cookie `name`, if it sets that cookie.
pub fn set_by<'a>(line: &'a [u8], name: &str) -> Option<&'a str> {
    let first = &line[..memchr(b';', line).unwrap_or(line.len())];
    find_in_bytes(first, name)
}

/// The `;`-separated pairs of one line, each trimmed of ASCII whitespace, empty ones left out.
/// `memchr` finds the separators many bytes at a time: this runs on every request of a sticky
/// site, over lines that Keycloak's cookies make hundreds of bytes long. Read a byte at a time,
/// finding and removing the proxy's cookie took 11k of a sticky request's 35k user-space
/// instructions (callgrind, BENCHMARKS.md).
fn pairs(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(line);
    std::iter::from_fn(move || loop {
        let current = rest?;
        let pair = match memchr(b';', current) {
            Some(semi) => {
                rest = Some(&current[semi + 1..]);
                &current[..semi]
            }
            None => {
                rest = None;
                current
            }
        };
        let pair = pair.trim_ascii();
        if !pair.is_empty() {
            return Some(pair);
        }
    })
}

/// A trimmed pair's name (what comes before its first `=`, trimmed) and value (what follows it,
/// trimmed), or its whole self and `None` when it has no `=`.
fn split_pair(pair: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr(b'=', pair) {
        Some(eq) => (
            pair[..eq].trim_ascii_end(),
            Some(pair[eq + 1..].trim_ascii_start()),
        ),
        None => (pair, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_one_cookie_and_joins_the_rest() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, "a=1; SG_NODE=x.y".parse().unwrap());
        h.append(COOKIE, "SG_NODE=z".parse().unwrap());
        h.append(COOKIE, "b=2".parse().unwrap());
        remove(&mut h, "SG_NODE");
        let lines: Vec<_> = h.get_all(COOKIE).iter().collect();
        assert_eq!(lines, ["a=1; b=2"]);

        let mut only = HeaderMap::new();
        only.insert(COOKIE, "SG_NODE=1".parse().unwrap());
        remove(&mut only, "SG_NODE");
        assert!(only.get(COOKIE).is_none(), "no empty Cookie header is left");

        let mut untouched = HeaderMap::new();
        untouched.insert(COOKIE, "a=1;b=2".parse().unwrap());
        remove(&mut untouched, "SG_NODE");
        assert_eq!(
            untouched[COOKIE], "a=1;b=2",
            "left as sent when nothing changes"
        );
        assert_eq!(set_by(b"SG_NODE=v; Path=/; HttpOnly", "SG_NODE"), Some("v"));
        assert_eq!(set_by(b"other=v; SG_NODE=w", "SG_NODE"), None);
    }

    #[test]
    fn finds_cookies_the_way_servers_read_them() {
        let line = "a=1; AUTH_SESSION_ID=abc.node-1;b=\"quoted\" ;  c = spaced ;=x; d";
        assert_eq!(find_in(line, "AUTH_SESSION_ID"), Some("abc.node-1"));
        assert_eq!(find_in(line, "b"), Some("quoted"));
        assert_eq!(find_in(line, "c"), Some("spaced"));
        assert_eq!(
            find_in(line, "auth_session_id"),
            None,
            "names are case-sensitive"
        );
        assert_eq!(
            find_in(line, "d"),
            None,
            "a name without a value is not a cookie"
        );
        assert_eq!(find_in("", "a"), None);
        let mut h = HeaderMap::new();
        h.append(COOKIE, "x=1".parse().unwrap());
        h.append(COOKIE, "y=2; x=3".parse().unwrap());
        assert_eq!(find(&h, "y"), Some("2"));
        assert_eq!(find(&h, "x"), Some("1"), "the first one wins");
    }

    /// The byte-at-a-time reading `find_in_bytes` and `remove` replaced, kept as the oracle of
    /// the test below: the same line must give the same answers.
    fn oracle_find<'a>(line: &'a [u8], name: &str) -> Option<&'a str> {
        line.split(|b| *b == b';').find_map(|pair| {
            let eq = pair.iter().position(|b| *b == b'=')?;
            if pair[..eq].trim_ascii() != name.as_bytes() {
                return None;
            }
            let v = pair[eq + 1..].trim_ascii();
            let v = v
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v);
            std::str::from_utf8(v).ok()
        })
    }

    fn oracle_remove(lines: &[&[u8]], name: &str) -> Vec<u8> {
        let mut joined = Vec::new();
        for pair in lines.iter().flat_map(|l| l.split(|b| *b == b';')) {
            let n = pair.split(|b| *b == b'=').next().unwrap_or_default();
            if n.trim_ascii() == name.as_bytes() || pair.trim_ascii().is_empty() {
                continue;
            }
            if !joined.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(pair.trim_ascii());
        }
        joined
    }

    #[test]
    fn reads_every_line_as_the_byte_at_a_time_reading_did() {
        // Lines drawn from the pieces that matter to a cookie reader: separators, spaces and
        // tabs, quotes, the name itself and near misses of it, a UTF-8 and a Latin-1 byte.
        const PIECES: [&[u8]; 14] = [
            b";",
            b"=",
            b" ",
            b"\t",
            b"\"",
            b"SG",
            b"SG_NODE",
            b"SG_NODEx",
            b"xSG_NODE",
            b"a",
            b"v1",
            b"\xc3\xa9",
            b"\xe9",
            b"; ",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut lines: Vec<Vec<u8>> = Vec::new();
            for _ in 0..1 + next() % 2 {
                let mut line = Vec::new();
                for _ in 0..next() % 12 {
                    line.extend_from_slice(PIECES[(next() % PIECES.len() as u64) as usize]);
                }
                lines.push(line);
            }
            for name in ["SG_NODE", "a", "SG"] {
                for line in &lines {
                    assert_eq!(
                        find_in_bytes(line, name),
                        oracle_find(line, name),
                        "{line:?}"
                    );
                }
                let Ok(values) = lines
                    .iter()
                    .map(|l| http::HeaderValue::from_bytes(l))
                    .collect::<Result<Vec<_>, _>>()
                else {
                    continue;
                };
                let mut headers = HeaderMap::new();
                for value in values {
                    headers.append(COOKIE, value);
                }
                let sent: Vec<_> = headers.get_all(COOKIE).iter().cloned().collect();
                remove(&mut headers, name);
                let left: Vec<_> = headers.get_all(COOKIE).iter().collect();
                let by_oracle =
                    oracle_remove(&lines.iter().map(|l| &l[..]).collect::<Vec<_>>(), name);
                let changed = lines.len() > 1
                    || lines.iter().any(|l| {
                        l.split(|b| *b == b';').any(|p| {
                            p.split(|b| *b == b'=')
                                .next()
                                .unwrap_or_default()
                                .trim_ascii()
                                == name.as_bytes()
                        })
                    });
                if !changed {
                    assert_eq!(left, sent.iter().collect::<Vec<_>>(), "{lines:?}");
                } else if by_oracle.is_empty() {
                    assert!(left.is_empty(), "{lines:?}");
                } else {
                    assert_eq!(left, [&by_oracle[..]], "{lines:?} without {name}");
                }
            }
        }
    }

    #[test]
    fn a_utf8_cookie_does_not_hide_its_neighbours() {
        let mut h = HeaderMap::new();
        let line = http::HeaderValue::from_bytes("name=José; tenant=acme".as_bytes()).unwrap();
        assert!(line.to_str().is_err(), "not visible ASCII");
        h.insert(COOKIE, line);
        assert_eq!(find(&h, "tenant"), Some("acme"));
        assert_eq!(find(&h, "name"), Some("José"));
        let latin1 = http::HeaderValue::from_bytes(b"name=Jos\xe9; tenant=acme").unwrap();
        assert_eq!(find_in_bytes(latin1.as_bytes(), "name"), None, "not UTF-8");
        assert_eq!(find_in_bytes(latin1.as_bytes(), "tenant"), Some("acme"));
    }
}
