//! Stickiness: reading which backend a request's session lives on, and writing it down.
//!
//! Three modes (see the README's "Sticky sessions"):
//! - `cookie`: the proxy's own cookie, `<nonce><tag><mac>` in hex. The tag is a keyed hash of
//!   the backend's stable identity (never its address); the MAC covers nonce and tag, so a
//!   client can neither name a backend it was never sent to nor tamper with the nonce. The nonce
//!   is the session's key: when its backend is gone, the replacement is the rendezvous winner
//!   for the nonce, the same on every replica that shares the secret.
//! - `route`: the backend's own session cookie ends in `.<route>` (Keycloak's
//!   `AUTH_SESSION_ID=<id>.<node>`); routes map to backends by configuration, by the first label
//!   of the backend's DNS name (SRV targets, StatefulSet pods), or as learned from responses.
//! - `source_ip`: the client address is the key.
//!
//! Everything here is a pure function of the request, the secret and the seed: replicas agree
//! without talking to each other.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use aws_lc_rs::hmac;
use http::header::{HeaderMap, HeaderValue};

use crate::balance::stable_hash;
use crate::config::StickyMode;
use crate::cookies;
use crate::verified_cookies;

/// Learned routes kept per site; past this many the map starts afresh (routes churn when pods
/// are renamed on every rollout, and a proxy must not grow for ever).
const MAX_LEARNED_ROUTES: usize = 4096;

/// What a request says about where its session lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionKey {
    /// Nothing usable (no cookie, or one that fails its MAC): balance, then pin.
    Unpinned,
    /// A valid proxy cookie: the backend tag and the nonce that keys its replacement.
    Cookie { nonce: u64, tag: u64 },
    /// The backend's route and the hash of the session id it was attached to.
    Route { route: String, key: u64 },
    /// The hash of the client address.
    SourceIp { key: u64 },
}

impl SessionKey {
    /// The key a replacement backend is chosen by, when the session has one.
    pub fn rendezvous_key(&self) -> Option<u64> {
        match self {
            SessionKey::Unpinned => None,
            SessionKey::Cookie { nonce, .. } => Some(*nonce),
            SessionKey::Route { key, .. } | SessionKey::SourceIp { key } => Some(*key),
        }
    }
}

pub struct Sticky {
    mode: Mode,
    seed: u64,
    /// Route → backend id, learned from Set-Cookie headers (route mode).
    learned: ArcSwap<HashMap<String, String>>,
}

enum Mode {
    Cookie {
        name: String,
        /// Boxed: aws-lc's key holds its HMAC state (hundreds of bytes), and the other modes
        /// are a few words.
        key: Box<hmac::Key>,
        /// The key's name in `verified_cookies`: the same secret gives the same id, so a reload
        /// that keeps the secret keeps what each thread has verified.
        key_id: u64,
    },
    Route {
        cookie: String,
        /// Backend id → route, from the configured route → backend map.
        configured: HashMap<String, String>,
        learn: bool,
    },
    SourceIp,
}

impl Sticky {
    pub fn new(mode: &StickyMode, seed: u64) -> Sticky {
        let (mode, seed) = match mode {
            StickyMode::Cookie { name, secret, .. } => {
                let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
                // Replicas sharing the secret share the replacement order too.
                let seed = seed ^ mac64(&key, &[b"sessiongate-seed-v1"]);
                let key_id = verified_cookies::key_id(mac64(&key, &[b"sessiongate-verified-v1"]));
                (
                    Mode::Cookie {
                        name: name.clone(),
                        key: Box::new(key),
                        key_id,
                    },
                    seed,
                )
            }
            StickyMode::Route {
                cookie,
                routes,
                learn,
            } => (
                Mode::Route {
                    cookie: cookie.clone(),
                    configured: routes
                        .iter()
                        .map(|(route, backend)| (backend.clone(), route.clone()))
                        .collect(),
                    learn: *learn,
                },
                seed,
            ),
            StickyMode::SourceIp => (Mode::SourceIp, seed),
        };
        Sticky {
            mode,
            seed,
            learned: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The proxy's own cookie, which is removed from requests before they reach a backend.
    pub fn own_cookie(&self) -> Option<&str> {
        match &self.mode {
            Mode::Cookie { name, .. } => Some(name),
            _ => None,
        }
    }

    pub fn read(&self, headers: &HeaderMap, peer: IpAddr) -> SessionKey {
        match &self.mode {
            Mode::Cookie { name, key, key_id } => cookies::find(headers, name)
                .and_then(|value| verify(key, *key_id, value))
                .map_or(SessionKey::Unpinned, |(nonce, tag)| SessionKey::Cookie {
                    nonce,
                    tag,
                }),
            Mode::Route { cookie, .. } => cookies::find(headers, cookie)
                .and_then(split_route)
                .map_or(SessionKey::Unpinned, |(id, route)| SessionKey::Route {
                    route: route.to_string(),
                    key: stable_hash(self.seed, &[id.as_bytes()]),
                }),
            Mode::SourceIp => SessionKey::SourceIp {
                key: match peer {
                    IpAddr::V4(v4) => stable_hash(self.seed, &[&v4.octets()]),
                    IpAddr::V6(v6) => stable_hash(self.seed, &[&v6.octets()]),
                },
            },
        }
    }

    /// The cookie-mode tag of a backend (0 in other modes): a keyed hash of its identity.
    pub fn tag(&self, backend_id: &str) -> u64 {
        match &self.mode {
            Mode::Cookie { key, .. } => {
                mac64(key, &[b"sessiongate-backend-v1", backend_id.as_bytes()])
            }
            _ => 0,
        }
    }

    /// The route a backend is known by before anything is learned: configured, else the first
    /// label of its host name (`keycloak-0` for `keycloak-0.keycloak-headless.ns.svc:8080`).
    pub fn route_of(&self, backend_id: &str) -> Option<String> {
        let Mode::Route { configured, .. } = &self.mode else {
            return None;
        };
        if let Some(route) = configured.get(backend_id) {
            return Some(route.clone());
        }
        let host = backend_id
            .rsplit_once(':')
            .map_or(backend_id, |(host, _)| host);
        if host.starts_with('[') || host.parse::<IpAddr>().is_ok() {
            return None;
        }
        host.split('.')
            .next()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
    }

    /// The backend id a route was learned for.
    pub fn learned(&self, route: &str) -> Option<String> {
        self.learned.load().get(route).cloned()
    }

    /// The `Set-Cookie` value pinning `nonce` to a backend with `tag`.
    pub fn set_cookie(&self, nonce: u64, tag: u64, secure: bool) -> Option<HeaderValue> {
        let Mode::Cookie { name, key, .. } = &self.mode else {
            return None;
        };
        let value = cookie_value(key, nonce, tag);
        let secure = if secure { "; Secure" } else { "" };
        HeaderValue::try_from(format!(
            "{name}={value}; Path=/; HttpOnly; SameSite=Lax{secure}"
        ))
        .ok()
    }

    /// Takes over the routes `previous` learned (a reload), when both read the same cookie in
    /// route mode and this one learns; returns how many.
    pub fn adopt_learned(&self, previous: &Sticky) -> usize {
        match (&self.mode, &previous.mode) {
            (
                Mode::Route {
                    cookie,
                    learn: true,
                    ..
                },
                Mode::Route { cookie: was, .. },
            ) if cookie == was => {
                let learned = previous.learned.load_full();
                let n = learned.len();
                self.learned.store(learned);
                n
            }
            _ => 0,
        }
    }

    /// Route mode: remembers the route a backend put in its session cookie, when it is not the
    /// one the backend is already known by.
    /// `set_cookies`: the response's Set-Cookie values.
    pub fn learn<'a>(
        &self,
        set_cookies: impl Iterator<Item = &'a [u8]>,
        backend_id: &str,
        known_route: Option<&str>,
    ) {
        let Mode::Route { cookie, learn, .. } = &self.mode else {
            return;
        };
        if !learn {
            return;
        }
        for line in set_cookies {
            let Some((_, route)) = cookies::set_by(line, cookie).and_then(split_route) else {
                continue;
            };
            if known_route == Some(route)
                || self.learned.load().get(route).map(String::as_str) == Some(backend_id)
            {
                continue;
            }
            tracing::info!(route, backend = backend_id, "learned a route");
            self.learned.rcu(|map| {
                let mut map = if map.len() >= MAX_LEARNED_ROUTES {
                    HashMap::new()
                } else {
                    HashMap::clone(map)
                };
                map.insert(route.to_string(), backend_id.to_string());
                Arc::new(map)
            });
        }
    }
}

/// `<id>.<route>`: the route follows the last dot; both parts non-empty.
fn split_route(value: &str) -> Option<(&str, &str)> {
    value
        .rsplit_once('.')
        .filter(|(id, route)| !id.is_empty() && !route.is_empty())
}

fn mac64(key: &hmac::Key, parts: &[&[u8]]) -> u64 {
    #[cfg(test)]
    tests::MACS.with(|n| n.set(n.get() + 1));
    let mut ctx = hmac::Context::with_key(key);
    for part in parts {
        ctx.update(part);
    }
    let tag = ctx.sign();
    u64::from_be_bytes(tag.as_ref()[..8].try_into().expect("SHA-256 is 32 bytes"))
}

/// The MAC a cookie pinning `nonce` to `tag` carries.
fn cookie_mac(key: &hmac::Key, nonce: u64, tag: u64) -> u64 {
    mac64(
        key,
        &[
            b"sessiongate-cookie-v1",
            &nonce.to_be_bytes(),
            &tag.to_be_bytes(),
        ],
    )
}

fn cookie_value(key: &hmac::Key, nonce: u64, tag: u64) -> String {
    let mac = cookie_mac(key, nonce, tag);
    format!("{nonce:016x}{tag:016x}{mac:016x}")
}

/// The nonce and tag of a cookie value, if its MAC is right: checked once per thread and
/// cookie, then found in `verified_cookies`.
fn verify(key: &hmac::Key, key_id: u64, value: &str) -> Option<(u64, u64)> {
    let value = value.as_bytes();
    if value.len() != 48 {
        return None;
    }
    let field = |i: usize| hex_u64(&value[i * 16..(i + 1) * 16]);
    let (nonce, tag, mac) = (field(0)?, field(1)?, field(2)?);
    if verified_cookies::contains(key_id, nonce, tag, mac) {
        return Some((nonce, tag));
    }
    let expected = cookie_mac(key, nonce, tag);
    // One 64-bit comparison, not a byte loop: no timing oracle to forge the MAC byte by byte.
    if mac != expected {
        return None;
    }
    verified_cookies::remember(key_id, nonce, tag, mac);
    Some((nonce, tag))
}

/// Sixteen hex digits as a number, in one pass. Not `u64::from_str_radix`, which takes a
/// leading `+` and so needed a second pass to refuse one.
fn hex_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16)?;
        Some(n << 4 | u64::from(v))
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        /// MACs computed on this thread (each test runs on a thread of its own).
        pub(super) static MACS: Cell<u64> = const { Cell::new(0) };
    }

    fn macs() -> u64 {
        MACS.with(Cell::get)
    }

    fn key_of(s: &Sticky) -> &hmac::Key {
        match &s.mode {
            Mode::Cookie { key, .. } => key,
            _ => unreachable!("cookie mode"),
        }
    }

    /// The cookie's verdict by its MAC alone, remembering nothing.
    fn genuine(s: &Sticky, value: &str) -> Option<(u64, u64)> {
        let field = |i: usize| u64::from_str_radix(value.get(i * 16..(i + 1) * 16)?, 16).ok();
        let (nonce, tag, mac) = (field(0)?, field(1)?, field(2)?);
        (value.len() == 48 && cookie_mac(key_of(s), nonce, tag) == mac).then_some((nonce, tag))
    }

    fn cookie_mode(secret: &str) -> Sticky {
        Sticky::new(
            &StickyMode::Cookie {
                name: "SG_NODE".into(),
                secret: secret.as_bytes().to_vec(),
                secret_file: None,
            },
            0,
        )
    }

    /// A cookie-mode proxy, a backend's tag and the genuine cookie value of session 7 on it.
    fn a_session_on(backend: &str) -> (Sticky, u64, String) {
        let s = cookie_mode("0123456789abcdef0123");
        let tag = s.tag(backend);
        let good = cookie_value(key_of(&s), 7, tag);
        (s, tag, good)
    }

    fn with_cookie(line: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, line.parse().unwrap());
        h
    }

    #[test]
    fn a_cookie_round_trips_and_reveals_nothing() {
        let s = cookie_mode("0123456789abcdef0123");
        let tag = s.tag("10.0.0.7:8080");
        let set = s.set_cookie(42, tag, true).unwrap();
        let set = set.to_str().unwrap();
        assert!(
            set.ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure"),
            "{set}"
        );
        assert!(
            !set.contains("10.0.0.7"),
            "the address is not in the cookie"
        );
        let value = set.split(';').next().unwrap();
        let peer = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(
            s.read(&with_cookie(value), peer),
            SessionKey::Cookie { nonce: 42, tag }
        );
        // Another replica with the same secret reads it the same way.
        assert_eq!(
            cookie_mode("0123456789abcdef0123").read(&with_cookie(value), peer),
            SessionKey::Cookie { nonce: 42, tag }
        );
        // Without Secure on plain listeners.
        assert!(!s
            .set_cookie(42, tag, false)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Secure"));
    }

    #[test]
    fn forged_cookies_are_unpinned() {
        let (s, _, good) = a_session_on("a:1");
        let peer = IpAddr::from([127, 0, 0, 1]);
        // Another backend's tag, a changed nonce, another secret, garbage: all unpinned.
        let other_tag = format!("{}{:016x}{}", &good[..16], s.tag("b:1"), &good[32..]);
        let other_nonce = format!("{:016x}{}", 8, &good[16..]);
        for bad in [
            other_tag.as_str(),
            other_nonce.as_str(),
            "x",
            "",
            &good[..47],
        ] {
            assert_eq!(
                s.read(&with_cookie(&format!("SG_NODE={bad}")), peer),
                SessionKey::Unpinned,
                "{bad}"
            );
        }
        assert_eq!(
            cookie_mode("another-secret-of-20")
                .read(&with_cookie(&format!("SG_NODE={good}")), peer),
            SessionKey::Unpinned
        );
    }

    #[test]
    fn routes_come_from_names_configuration_and_responses() {
        let s = Sticky::new(
            &StickyMode::Route {
                cookie: "AUTH_SESSION_ID".into(),
                routes: [("node-a".to_string(), "10.0.0.1:8080".to_string())].into(),
                learn: true,
            },
            0,
        );
        assert_eq!(s.route_of("10.0.0.1:8080").as_deref(), Some("node-a"));
        assert_eq!(
            s.route_of("keycloak-0.keycloak-headless.iam.svc.cluster.local:8080")
                .as_deref(),
            Some("keycloak-0")
        );
        assert_eq!(s.route_of("10.0.0.2:8080"), None);
        assert_eq!(s.route_of("[::1]:8080"), None);

        let peer = IpAddr::from([127, 0, 0, 1]);
        let key = s.read(&with_cookie("AUTH_SESSION_ID=abc.def.keycloak-1"), peer);
        assert_eq!(
            key,
            SessionKey::Route {
                route: "keycloak-1".into(),
                key: stable_hash(0, &[b"abc.def"])
            }
        );
        assert_eq!(
            s.read(&with_cookie("AUTH_SESSION_ID=noroute"), peer),
            SessionKey::Unpinned
        );

        let set_cookies = [&b"Other=1"[..], b"AUTH_SESSION_ID=xyz.pod-7; Path=/"];
        s.learn(set_cookies.into_iter(), "10.0.0.9:8080", None);
        assert_eq!(s.learned("pod-7").as_deref(), Some("10.0.0.9:8080"));
        s.learn(set_cookies.into_iter(), "10.0.0.3:8080", Some("pod-7"));
        assert_eq!(
            s.learned("pod-7").as_deref(),
            Some("10.0.0.9:8080"),
            "a backend's own known route teaches nothing"
        );
    }

    #[test]
    fn a_genuine_cookie_costs_one_mac_per_thread_and_a_forged_one_every_time() {
        let (s, tag, good) = a_session_on("a:1");
        let peer = IpAddr::from([127, 0, 0, 1]);
        let line = with_cookie(&format!("SG_NODE={good}"));

        let before = macs();
        for _ in 0..3 {
            assert_eq!(s.read(&line, peer), SessionKey::Cookie { nonce: 7, tag });
        }
        assert_eq!(macs() - before, 1, "checked once, then remembered");

        // The remembered cookie's nonce and tag with another MAC: checked, and refused, each time.
        let forged = format!(
            "{}{:016x}",
            &good[..32],
            u64::from_str_radix(&good[32..], 16).unwrap() ^ 1
        );
        let before = macs();
        for _ in 0..3 {
            assert_eq!(
                s.read(&with_cookie(&format!("SG_NODE={forged}")), peer),
                SessionKey::Unpinned
            );
        }
        assert_eq!(macs() - before, 3);
        assert_eq!(s.read(&line, peer), SessionKey::Cookie { nonce: 7, tag });
    }

    #[test]
    fn a_cookie_remembered_under_one_secret_is_refused_under_another() {
        let peer = IpAddr::from([127, 0, 0, 1]);
        let old = cookie_mode("the-old-secret-of-20");
        let good = cookie_value(key_of(&old), 7, old.tag("a:1"));
        let line = with_cookie(&format!("SG_NODE={good}"));
        assert!(matches!(old.read(&line, peer), SessionKey::Cookie { .. }));
        // A reload that changes the secret: the new key has its own id.
        let new = cookie_mode("the-new-secret-of-20");
        assert_eq!(new.read(&line, peer), SessionKey::Unpinned);
        // A reload that keeps it shares what this thread has verified.
        let before = macs();
        let same = cookie_mode("the-old-secret-of-20");
        let built = macs() - before; // the seed and the key's id
        assert!(matches!(same.read(&line, peer), SessionKey::Cookie { .. }));
        assert_eq!(
            macs() - before,
            built,
            "no MAC for a cookie already verified"
        );
    }

    #[test]
    fn remembering_never_changes_a_verdict() {
        // 20,000 reads of genuine cookies (two secrets, colliding nonces), the same with one
        // hex digit changed, and cookies from the other secret, in a scrambled order: each read
        // answers what the MAC alone answers.
        let peer = IpAddr::from([127, 0, 0, 1]);
        let (a, b) = (
            cookie_mode("secret-a-of-twenty-b"),
            cookie_mode("secret-b-of-twenty-b"),
        );
        let mut cookies = Vec::new();
        for i in 0..300u64 {
            let nonce = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % 4096; // slots collide
            for s in [&a, &b] {
                let good = cookie_value(key_of(s), nonce, s.tag(&format!("10.0.0.{}:80", i % 5)));
                let mut bad = good.clone().into_bytes();
                let at = (i as usize * 7) % 48;
                bad[at] = if bad[at] == b'0' { b'1' } else { b'0' };
                cookies.push(good);
                cookies.push(String::from_utf8(bad).unwrap());
            }
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let (mut pinned, mut refused) = (0, 0);
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let value = &cookies[(x % cookies.len() as u64) as usize];
            let s = if x & (1 << 40) == 0 { &a } else { &b };
            let expected = genuine(s, value).map_or(SessionKey::Unpinned, |(nonce, tag)| {
                SessionKey::Cookie { nonce, tag }
            });
            let read = s.read(&with_cookie(&format!("SG_NODE={value}")), peer);
            assert_eq!(read, expected, "{value}");
            if read == SessionKey::Unpinned {
                refused += 1;
            } else {
                pinned += 1;
            }
        }
        // Both verdicts were exercised, in the proportions the mix implies (a quarter genuine
        // for the reading secret).
        assert!(
            pinned > 4_000 && refused > 12_000,
            "{pinned} pinned, {refused} refused"
        );
    }

    #[test]
    fn cookie_fields_are_sixteen_hex_digits_and_nothing_else() {
        assert_eq!(hex_u64(b"00000000000000ff"), Some(255));
        assert_eq!(hex_u64(b"FFFFFFFFFFFFFFFF"), Some(u64::MAX));
        assert_eq!(hex_u64(b"0123456789abcdef"), Some(0x0123_4567_89ab_cdef));
        for bad in [
            &b"+000000000000001"[..],
            b"-000000000000001",
            b"000000000000000g",
            b" 00000000000000f",
        ] {
            assert_eq!(hex_u64(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        // A whole cookie with a `+` where a field starts is refused, as before.
        let (s, _, good) = a_session_on("a:1");
        let plus = format!("{}+{}", &good[..16], &good[17..]);
        assert_eq!(
            s.read(
                &with_cookie(&format!("SG_NODE={plus}")),
                IpAddr::from([127, 0, 0, 1])
            ),
            SessionKey::Unpinned
        );
    }

    #[test]
    fn source_addresses_hash_stably() {
        let s = Sticky::new(&StickyMode::SourceIp, 9);
        let h = HeaderMap::new();
        let a = s.read(&h, IpAddr::from([10, 1, 2, 3]));
        assert_eq!(a, s.read(&h, IpAddr::from([10, 1, 2, 3])));
        assert_ne!(a, s.read(&h, IpAddr::from([10, 1, 2, 4])));
    }
}
