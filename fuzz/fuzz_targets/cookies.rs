//! Cookie parsing under arbitrary header bytes: never panics, and what it finds is a piece of
//! the input that the named cookie really carries.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let (name, line) = rest.split_at((split as usize).min(rest.len()));
    let (Ok(name), Ok(line)) = (std::str::from_utf8(name), std::str::from_utf8(line)) else { return };
    if let Some(value) = sessiongate::cookies::find_in(line, name) {
        assert!(line.contains(value), "{value:?} is not from {line:?}");
        assert!(!value.contains(';'), "a value never spans pairs: {value:?}");
    }
    if let Ok(header) = http::HeaderValue::from_str(line) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::COOKIE, header);
        assert_eq!(sessiongate::cookies::find(&headers, name), sessiongate::cookies::find_in(line, name));
    }
});
