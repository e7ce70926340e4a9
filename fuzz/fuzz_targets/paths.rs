//! Path canonicalisation under arbitrary input: never panics; its output is canonical (a
//! second pass changes nothing); and nothing it forwards reads as a denied path to even the
//! most lenient backend (`paths::forwarding_is_safe`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessiongate::paths::{canonicalize, forwarding_is_safe, PathPolicy, Prefix};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let policy = PathPolicy::new(
        vec![Prefix::parse("/metrics").unwrap(), Prefix::parse("/health").unwrap()],
        None,
        Some(Prefix::parse("/auth").unwrap()),
    );
    if let Ok(canonical) = canonicalize(raw) {
        assert_eq!(canonicalize(&canonical).as_deref(), Ok(canonical.as_ref()), "not idempotent");
        assert!(forwarding_is_safe(&policy, raw), "bypass: {raw:?} -> {canonical:?}");
    }
});
