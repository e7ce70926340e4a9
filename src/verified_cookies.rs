//! Sticky cookies this thread has already found genuine, so that their MAC is checked once.
//!
//! A browser sends the same sticky cookie with every request of its session, and checking the
//! cookie's HMAC-SHA256 costs two SHA-256 blocks and aws-lc's HMAC set-up, about 0.4 us (the
//! criterion bench `sticky/verify_first`): more than the rest of what stickiness costs a request.
//! So each thread remembers the cookies it has verified.
//!
//! An entry is the whole cookie (nonce, tag and MAC) and the key it was checked under, and a
//! request is taken as verified only if all four are equal: exactly what checking the MAC again
//! would prove, since the MAC is a function of the key, nonce and tag. Only cookies that passed
//! the MAC are ever stored, so a client cannot put anything here that it could not already
//! send. A forged cookie misses and is checked as before.
//!
//! The nonce, drawn at random for each session, picks the slot; a collision replaces the older
//! cookie, which costs one MAC when it comes back. Per thread, not shared: no lock and no atomic
//! on the request path, and a session spread over several threads is checked once on each.

use std::cell::RefCell;

/// 1,024 slots of 32 bytes: 32 KiB per thread that reads sticky cookies, allocated on first use.
const SLOTS: usize = 1024;

#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    /// Which key verified the cookie; never 0, so an empty slot matches nothing.
    key_id: u64,
    nonce: u64,
    tag: u64,
    mac: u64,
}

thread_local! {
    static VERIFIED: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

fn slot(nonce: u64) -> usize {
    // The nonce is uniformly random, so its low bits spread sessions evenly.
    (nonce as usize) % SLOTS
}

/// The identity of a key for this table: any value but 0 (see `Entry::key_id`).
pub fn key_id(fingerprint: u64) -> u64 {
    fingerprint | 1
}

/// Whether this thread has verified exactly this cookie under the key `key_id`.
pub fn contains(key_id: u64, nonce: u64, tag: u64, mac: u64) -> bool {
    let wanted = Entry {
        key_id,
        nonce,
        tag,
        mac,
    };
    // `try_with`: while the thread is being torn down the table is gone, and the MAC decides.
    VERIFIED
        .try_with(|v| v.borrow().get(slot(nonce)) == Some(&wanted))
        .unwrap_or(false)
}

/// Remembers a cookie whose MAC was just found right under the key `key_id`.
pub fn remember(key_id: u64, nonce: u64, tag: u64, mac: u64) {
    debug_assert_ne!(key_id, 0, "key ids come from key_id()");
    let _ = VERIFIED.try_with(|v| {
        let mut v = v.borrow_mut();
        if v.is_empty() {
            v.resize(SLOTS, Entry::default());
        }
        v[slot(nonce)] = Entry {
            key_id,
            nonce,
            tag,
            mac,
        };
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_cookie_under_the_same_key_is_found() {
        let key = key_id(0x1234);
        assert!(!contains(key, 7, 1, 2), "nothing is remembered yet");
        remember(key, 7, 1, 2);
        assert!(contains(key, 7, 1, 2));
        // Any field different: another key, another backend's tag, another MAC, another nonce.
        assert!(!contains(key_id(0x5678), 7, 1, 2));
        assert!(!contains(key, 7, 9, 2));
        assert!(!contains(key, 7, 1, 3));
        assert!(!contains(key, 7 + SLOTS as u64, 1, 2));
    }

    #[test]
    fn an_empty_slot_matches_no_cookie() {
        remember(key_id(1), 1, 1, 1);
        // Slot 0 is empty (all zeros); the zero cookie under any key is not in it.
        for fingerprint in [0, 1, u64::MAX] {
            assert!(!contains(key_id(fingerprint), 0, 0, 0));
        }
    }

    #[test]
    fn a_colliding_session_takes_the_slot_over() {
        let key = key_id(42);
        remember(key, 3, 1, 1);
        remember(key, 3 + SLOTS as u64, 2, 2);
        assert!(!contains(key, 3, 1, 1), "the older cookie is checked again");
        assert!(contains(key, 3 + SLOTS as u64, 2, 2));
    }

    #[test]
    fn each_thread_verifies_for_itself() {
        let key = key_id(99);
        remember(key, 5, 5, 5);
        let elsewhere = std::thread::spawn(move || contains(key, 5, 5, 5))
            .join()
            .unwrap();
        assert!(!elsewhere);
        assert!(contains(key, 5, 5, 5));
    }
}
