//! Reading cookies from request headers (RFC 6265 §5.4 on the server side): `Cookie` headers
//! hold `name=value` pairs separated by `;`. Names are compared exactly; a value may be quoted.
//! Lenient where browsers are (empty pairs, stray spaces), never panicking on anything.

use http::header::{HeaderMap, COOKIE};

/// The value of the first cookie called `name`, across every `Cookie` header.
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|line| find_in(line, name))
}

/// The value of `name` in one `Cookie` header line.
pub fn find_in<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split(';').find_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        if n.trim() != name {
            return None;
        }
        let v = v.trim();
        Some(
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v),
        )
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
}
