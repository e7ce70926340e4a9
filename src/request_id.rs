//! Request IDs (`[[listener]] request_id_header`): one ID per request, sent to the backend in
//! that header, returned to the client in it, and written in the access log line, so that a
//! user's "it failed at 10:42" can be found in the proxy's log and in Keycloak's (nginx's
//! `$request_id`, Envoy's `x-request-id`, HAProxy's `unique-id-header`).
//!
//! An ID the client sent is kept only from a trusted proxy (`trusted_proxies`), which made it
//! itself; from anyone else it is replaced, as the forwarded headers are: a client that picks
//! its own IDs could make its requests look like another user's in the logs. A kept ID must
//! look like one (1 to 128 characters of letters, digits and `-_.:+/=`), or it is replaced too.

use std::cell::Cell;
use std::hash::BuildHasher;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Longest ID kept from a trusted proxy.
const MAX_LEN: usize = 128;

/// The request's ID: the trusted proxy's, when `trusted` and it sent one that looks like an ID,
/// else a new one.
pub fn of(name: &HeaderName, headers: &HeaderMap, trusted: bool) -> HeaderValue {
    let sent = trusted.then(|| headers.get(name)).flatten();
    match sent {
        Some(value) if looks_like_an_id(value.as_bytes()) => value.clone(),
        _ => generate(),
    }
}

fn looks_like_an_id(bytes: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b))
}

/// A random (version 4) UUID, as Envoy makes them and log tools expect.
///
/// Not from `balance::random_u64`: an ID is shown to the client, and one output of that
/// generator gives away its state, and so the next choices and cookie nonces of its thread.
/// SipHash under the process's random keys, over a per-thread counter, gives nothing away and
/// never repeats within a thread.
pub fn generate() -> HeaderValue {
    thread_local! {
        static KEYS: std::collections::hash_map::RandomState =
            std::collections::hash_map::RandomState::new();
        static COUNTER: Cell<u64> = const { Cell::new(0) };
    }
    let n = COUNTER.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n
    });
    let (high, low) = KEYS.with(|k| (k.hash_one((n, 0u8)), k.hash_one((n, 1u8))));
    let mut bits = (u128::from(high) << 64) | u128::from(low);
    bits = (bits & !(0xf << 76)) | (0x4 << 76); // version 4
    bits = (bits & !(0x3 << 62)) | (0x2 << 62); // variant 10
    let hex = format!("{bits:032x}");
    let text = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    HeaderValue::try_from(text).expect("hex digits and dashes are a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> HeaderName {
        HeaderName::from_static("x-request-id")
    }

    fn sent(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name(), HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn new_ids_are_version_4_uuids_and_differ() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| generate().to_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(50) {
            let groups: Vec<&str> = id.split('-').collect();
            assert_eq!(
                groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{id}"
            );
            assert!(groups[2].starts_with('4'), "{id}");
            assert!(matches!(&groups[3][..1], "8" | "9" | "a" | "b"), "{id}");
        }
    }

    #[test]
    fn a_sent_id_is_kept_only_from_a_trusted_proxy_and_only_if_it_looks_like_one() {
        let from_lb = sent("lb-7f3a:42");
        assert_eq!(of(&name(), &from_lb, true), "lb-7f3a:42");
        assert_ne!(of(&name(), &from_lb, false), "lb-7f3a:42");
        let too_long = "a".repeat(MAX_LEN + 1);
        for odd in ["has space", "quote\"", "semi;colon", too_long.as_str()] {
            assert_ne!(of(&name(), &sent(odd), true), odd);
        }
        assert_eq!(
            of(&name(), &sent(&"a".repeat(MAX_LEN)), true).len(),
            MAX_LEN
        );
        assert_eq!(of(&name(), &HeaderMap::new(), true).len(), 36);
    }
}
