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

#[cfg(test)]
mod tests {
    use super::*;

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
