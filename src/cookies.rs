//! Reading cookies from request headers (RFC 6265 §5.4 on the server side): `Cookie` headers
//! hold `name=value` pairs separated by `;`. Names are compared exactly; a value may be quoted.
//! Parsing works on bytes: browsers send raw UTF-8 in some cookies, and one such cookie must
//! not hide the others on the same line (the fuzzer found that it did when lines were read as
//! visible ASCII only).

use http::header::{HeaderMap, COOKIE};

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
    line.split(|b| *b == b';').find_map(|pair| {
        let eq = pair.iter().position(|b| *b == b'=')?;
        let (n, v) = (&pair[..eq], &pair[eq + 1..]);
        if n.trim_ascii() != name.as_bytes() {
            return None;
        }
        let v = v.trim_ascii();
        let v = v
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(v);
        std::str::from_utf8(v).ok()
    })
}

/// Removes every cookie called `name` from the request, and joins what is left into one
/// `Cookie` line: HTTP/2 clients send one header per cookie, which an HTTP/1.1 backend must
/// receive joined with `; ` (RFC 9113 §8.2.3). Does nothing when there is nothing to change.
pub fn remove(headers: &mut HeaderMap, name: &str) {
    let lines = headers.get_all(COOKIE);
    let mut iter = lines.iter();
    let several = iter.next().is_some() && iter.next().is_some();
    if !several && find(headers, name).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for line in headers.get_all(COOKIE) {
        for pair in line.as_bytes().split(|b| *b == b';') {
            let n = pair.split(|b| *b == b'=').next().unwrap_or_default();
            if n.trim_ascii() == name.as_bytes() || pair.trim_ascii().is_empty() {
                continue;
            }
            if !joined.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(pair.trim_ascii());
        }
    }
    headers.remove(COOKIE);
    if let Ok(line) = http::HeaderValue::from_bytes(&joined) {
        if !joined.is_empty() {
            headers.insert(COOKIE, line);
        }
    }
}

/// The value a `Set-Cookie` line gives cookie `name`, if it sets that cookie.
pub fn set_by<'a>(line: &'a [u8], name: &str) -> Option<&'a str> {
    let first = line.split(|b| *b == b';').next()?;
    find_in_bytes(first, name)
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
