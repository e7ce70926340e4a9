//! Choosing the backend for one attempt of one request, in this order:
//! 1. the backend holding the request's session, if it is available (sticky hit), including a
//!    draining one: its sessions may finish there until the drain timeout;
//! 2. for a session whose backend is gone or unavailable, the rendezvous winner for the
//!    session's key among the available backends: the same replacement for every request of
//!    the session and on every replica (a re-pin);
//! 3. otherwise the site's algorithm, over available backends only (new sessions never go to
//!    draining ones).
//!
//! "Available" means up by the active checks, not ejected by passive ones, and not already
//! tried by this request. When nothing is available the site panics (Envoy's word): it tries
//! the unavailable ones rather than refuse everyone on the word of a health check.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use crate::backends::{Backend, Site};
use crate::balance;
use crate::config::{Algorithm, Balance};
use crate::health::now_ms;
use crate::sticky::SessionKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No session named a backend: chosen by the algorithm (a sticky miss, when sticky).
    Balanced,
    /// The session's own backend.
    Hit,
    /// The session's backend is gone or unavailable: its deterministic replacement.
    Repinned,
}

impl Outcome {
    /// Its place in `Site::sticky_outcomes`.
    pub fn index(self) -> usize {
        match self {
            Outcome::Balanced => 0,
            Outcome::Hit => 1,
            Outcome::Repinned => 2,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Balanced => "miss",
            Outcome::Hit => "hit",
            Outcome::Repinned => "repin",
        }
    }
}

pub struct Selection {
    pub backend: Arc<Backend>,
    pub outcome: Outcome,
}

/// Why no backend was selected.
#[derive(Debug)]
pub enum NoPick {
    /// None to send to (or every one already tried).
    NoBackend,
    /// Every backend that may take the request is at its in-flight cap: wait in the queue, for
    /// `pinned` when the request is a session that waits for its own backend.
    Busy { pinned: Option<Arc<Backend>> },
}

impl Site {
    /// The backend for the next attempt; `hash_key` is the request's key for the `hash`
    /// algorithm, `tried` the backends earlier attempts failed on.
    pub fn select(
        &self,
        balance: &Balance,
        session: &SessionKey,
        hash_key: Option<&[u8]>,
        tried: &[Arc<Backend>],
    ) -> Result<Selection, NoPick> {
        let now = now_ms();
        let usable =
            |b: &Arc<Backend>| b.health.available(now) && !tried.iter().any(|t| Arc::ptr_eq(t, b));
        let (cap, sticky_waits) = self.admission.as_ref().map_or((usize::MAX, true), |a| {
            (a.config.max_in_flight, a.config.sticky_waits)
        });
        let has_room = |b: &Arc<Backend>| b.in_flight() < cap;
        let seed = self.sticky.as_ref().map_or(balance.seed, |s| s.seed());
        let pinned = |backend: &Arc<Backend>, outcome| {
            if has_room(backend) {
                Ok(Selection {
                    backend: backend.clone(),
                    outcome,
                })
            } else {
                Err(backend.clone())
            }
        };
        // Set when the session's backend (or its replacement) is full and the session may go
        // elsewhere instead of waiting for it.
        let mut redispatch = false;
        if let Some(own) = self.session_backend(session, seed) {
            if usable(own) {
                match pinned(own, Outcome::Hit) {
                    Ok(hit) => return Ok(hit),
                    Err(own) if sticky_waits => return Err(NoPick::Busy { pinned: Some(own) }),
                    Err(_) => redispatch = true,
                }
            }
        }
        let pool = self.pool(usable, tried);
        if pool.is_empty() {
            return Err(NoPick::NoBackend);
        }
        if let (Some(key), false) = (session.rendezvous_key(), redispatch) {
            // The replacement is chosen among the available, full or not, so that it is the
            // same on every replica whatever their load.
            let replacement = balance::rendezvous(pool.iter(), &key.to_be_bytes(), seed, |b| &b.id)
                .ok_or(NoPick::NoBackend)?;
            match pinned(replacement, Outcome::Repinned) {
                Ok(repin) => return Ok(repin),
                Err(target) if sticky_waits => {
                    return Err(NoPick::Busy {
                        pinned: Some(target),
                    })
                }
                Err(_) => redispatch = true,
            }
        }
        // Without caps every backend has room: no second scan.
        let roomy: Cow<'_, [Arc<Backend>]> = if cap == usize::MAX || pool.iter().all(has_room) {
            pool
        } else {
            Cow::Owned(pool.iter().filter(|b| has_room(b)).cloned().collect())
        };
        // Percent of its share: below 100 only in slow start.
        let warmth = |b: &Arc<Backend>| match balance.slow_start {
            Some(window) => b.health.warmth(now, window.as_millis() as u64),
            None => 100,
        };
        let backend = match (&balance.algorithm, hash_key) {
            (Algorithm::LeastRequests, _) if balance.slow_start.is_some() => {
                let random = (balance::random_u64(), balance::random_u64());
                balance::p2c_weighted(&roomy, random, |b| b.in_flight(), warmth)
            }
            (Algorithm::LeastRequests, _) => {
                balance::p2c(&roomy, balance::random_u64(), |b| b.in_flight())
            }
            (Algorithm::Random, _) if balance.slow_start.is_some() => {
                balance::random_weighted(&roomy, balance::random_u64(), warmth)
            }
            (Algorithm::Random, _) => balance::random(&roomy, balance::random_u64()),
            (Algorithm::Hash(_), Some(key)) => {
                balance::rendezvous(roomy.iter(), key, balance.seed, |b| &b.id)
            }
            (Algorithm::RoundRobin, _) | (Algorithm::Hash(_), None) => self
                .rotation
                .pick_weighted(&roomy, |b| u64::from(b.weight) * warmth(b)),
        }
        .ok_or(NoPick::Busy { pinned: None })?;
        Ok(Selection {
            backend: backend.clone(),
            outcome: if redispatch {
                Outcome::Repinned
            } else {
                Outcome::Balanced
            },
        })
    }

    /// What choosing `backend` means for the session (for a request handed a slot by the queue).
    pub fn outcome_of(
        &self,
        balance: &Balance,
        session: &SessionKey,
        backend: &Arc<Backend>,
    ) -> Outcome {
        let seed = self.sticky.as_ref().map_or(balance.seed, |s| s.seed());
        match self.session_backend(session, seed) {
            Some(own) if Arc::ptr_eq(own, backend) => Outcome::Hit,
            _ if session.rendezvous_key().is_some() => Outcome::Repinned,
            _ => Outcome::Balanced,
        }
    }

    /// The backend the session lives on, if this site knows it (as a member or draining).
    fn session_backend(&self, session: &SessionKey, seed: u64) -> Option<&Arc<Backend>> {
        if *session == SessionKey::Unpinned {
            return None;
        }
        let now = Instant::now();
        let draining = self
            .draining
            .iter()
            .filter(move |d| d.until > now)
            .map(|d| &d.backend);
        match session {
            SessionKey::Unpinned => None,
            SessionKey::Cookie { tag, .. } => {
                self.members().chain(draining).find(|b| b.tag == *tag)
            }
            SessionKey::Route { route, .. } => {
                let mut known = self.members().chain(draining.clone());
                known
                    .find(|b| b.route.as_deref() == Some(route))
                    .or_else(|| {
                        let id = self.sticky.as_ref()?.learned(route)?;
                        self.members().chain(draining).find(|b| b.id == id)
                    })
            }
            // The address's backend among those its sessions may be on; the draining stay in
            // the running so their sessions finish there.
            SessionKey::SourceIp { key } => balance::rendezvous(
                self.preferred().iter().chain(draining),
                &key.to_be_bytes(),
                seed,
                |b| &b.id,
            ),
        }
    }

    /// The best priority that has members.
    fn preferred(&self) -> &[Arc<Backend>] {
        if self.backends.is_empty() {
            &self.backups
        } else {
            &self.backends
        }
    }

    /// The backends new requests may go to: the usable ones of the best priority that has
    /// any; with none usable anywhere, every untried member of the preferred priority.
    fn pool(
        &self,
        usable: impl Fn(&Arc<Backend>) -> bool,
        tried: &[Arc<Backend>],
    ) -> Cow<'_, [Arc<Backend>]> {
        for tier in [&self.backends, &self.backups] {
            if tier.is_empty() {
                continue;
            }
            // The common case: everything usable, no copy.
            if tier.iter().all(&usable) {
                return Cow::Borrowed(tier.as_slice());
            }
            let some: Vec<_> = tier.iter().filter(|b| usable(b)).cloned().collect();
            if !some.is_empty() {
                return Cow::Owned(some);
            }
        }
        Cow::Owned(
            self.preferred()
                .iter()
                .filter(|b| !tried.iter().any(|t| Arc::ptr_eq(t, b)))
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backends::{test_member, test_site, Member};
    use crate::config::{Outlier, StickyMode};
    use crate::sticky::Sticky;

    fn rr() -> Balance {
        Balance {
            algorithm: Algorithm::RoundRobin,
            seed: 0,
            slow_start: None,
            sticky: None,
        }
    }

    fn m(id: &str, priority: u16) -> Member {
        test_member(id, priority)
    }

    fn sticky_site(ids: &[&str]) -> Site {
        let mut site = test_site();
        site.sticky = Some(Arc::new(Sticky::new(
            &StickyMode::Cookie {
                name: "SG".into(),
                secret: b"0123456789abcdef".to_vec(),
                secret_file: None,
            },
            0,
        )));
        let members: Vec<Member> = ids.iter().map(|id| m(id, 0)).collect();
        site.successor(&members, Instant::now(), Duration::from_secs(60))
            .0
    }

    fn pick(site: &Site, session: &SessionKey, tried: &[Arc<Backend>]) -> (String, Outcome) {
        let s = site.select(&rr(), session, None, tried).ok().unwrap();
        (s.backend.id.clone(), s.outcome)
    }

    #[test]
    fn a_backend_joining_a_serving_set_starts_slowly_and_the_first_set_does_not() {
        let now = Instant::now();
        let (s, _) = test_site().successor(&[m("a", 0), m("bb", 0)], now, Duration::ZERO);
        let (s, _) = s.successor(&[m("a", 0), m("bb", 0), m("ccc", 0)], now, Duration::ZERO);
        let window = Duration::from_secs(3600);
        let slow = |algorithm| Balance {
            algorithm,
            slow_start: Some(window),
            ..rr()
        };
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        // One full turn of the weighted rotation: 100 + 100 + 10 slots (a second into an
        // hour's slow start is still 10%).
        for _ in 0..210 {
            let picked = s.select(
                &slow(Algorithm::RoundRobin),
                &SessionKey::Unpinned,
                None,
                &[],
            );
            *counts
                .entry(picked.ok().unwrap().backend.id.clone())
                .or_default() += 1;
        }
        assert_eq!(counts["ccc"], 10, "{counts:?}");
        assert_eq!((counts["a"], counts["bb"]), (100, 100));
        // Random and least requests give it some share too, never none and never its full one.
        for algorithm in [Algorithm::Random, Algorithm::LeastRequests] {
            let newcomer = (0..3000)
                .filter(|_| {
                    let picked =
                        s.select(&slow(algorithm.clone()), &SessionKey::Unpinned, None, &[]);
                    picked.ok().unwrap().backend.id == "ccc"
                })
                .count();
            assert!(
                (50..500).contains(&newcomer),
                "{algorithm:?}: {newcomer} of 3000"
            );
        }
        // Without slow start it takes its full share at once.
        let full = (0..300)
            .filter(|_| pick(&s, &SessionKey::Unpinned, &[]).0 == "ccc")
            .count();
        assert_eq!(full, 100);
    }

    #[test]
    fn worse_priorities_are_backups() {
        let (s, _) = test_site().successor(
            &[m("a", 10), m("b", 10), m("c", 20)],
            Instant::now(),
            Duration::ZERO,
        );
        assert_eq!(s.backends.len(), 2);
        assert_eq!(s.backups.len(), 1);
        for _ in 0..10 {
            assert_ne!(pick(&s, &SessionKey::Unpinned, &[]).0, "c");
        }
        let (s, _) = s.successor(&[m("c", 20)], Instant::now(), Duration::ZERO);
        assert_eq!(
            pick(&s, &SessionKey::Unpinned, &[]).0,
            "c",
            "the backup serves when nothing better is left"
        );
    }

    #[test]
    fn a_session_stays_and_moves_once_to_the_same_replacement() {
        let site = sticky_site(&["a", "bb", "ccc", "dddd"]);
        let tag = |id: &str| site.members().find(|b| b.id == id).unwrap().tag;
        let session = SessionKey::Cookie {
            nonce: 77,
            tag: tag("bb"),
        };
        assert_eq!(pick(&site, &session, &[]), ("bb".into(), Outcome::Hit));

        // bb fails: ejected. The replacement is the same every time, and on another replica.
        let bb = site.members().find(|b| b.id == "bb").unwrap().clone();
        bb.health.set_up(false);
        let (first, outcome) = pick(&site, &session, &[]);
        assert_eq!(outcome, Outcome::Repinned);
        assert_ne!(first, "bb");
        for _ in 0..20 {
            assert_eq!(pick(&site, &session, &[]).0, first);
        }
        let replica = sticky_site(&["dddd", "ccc", "bb", "a"]);
        replica
            .members()
            .find(|b| b.id == "bb")
            .unwrap()
            .health
            .set_up(false);
        assert_eq!(
            pick(&replica, &session, &[]).0,
            first,
            "order does not matter"
        );

        // A retry after bb refused the connection lands on the same replacement.
        bb.health.set_up(true);
        assert_eq!(pick(&site, &session, std::slice::from_ref(&bb)).0, first);

        // Re-pinned, the session names its new backend and stays there when bb is back.
        let moved = SessionKey::Cookie {
            nonce: 77,
            tag: tag(&first),
        };
        assert_eq!(pick(&site, &moved, &[]), (first, Outcome::Hit));
    }

    #[test]
    fn sessions_spread_over_replacements_and_others_stay() {
        let site = sticky_site(&["a", "bb", "ccc", "dddd"]);
        let ids: Vec<String> = site.members().map(|b| b.id.clone()).collect();
        let victim = site.members().find(|b| b.id == "a").unwrap().clone();
        victim.health.set_up(false);
        let mut landed = std::collections::HashMap::new();
        for nonce in 0..3000u64 {
            for id in &ids {
                let tag = site.members().find(|b| &b.id == id).unwrap().tag;
                let (now_on, outcome) = pick(&site, &SessionKey::Cookie { nonce, tag }, &[]);
                if id == "a" {
                    assert_eq!(outcome, Outcome::Repinned);
                    *landed.entry(now_on).or_insert(0) += 1;
                } else {
                    assert_eq!((now_on.as_str(), outcome), (id.as_str(), Outcome::Hit));
                }
            }
        }
        // The dead node's sessions spread evenly over the three others (no herd on one).
        assert_eq!(landed.len(), 3);
        for n in landed.values() {
            assert!((800..1200).contains(n), "{landed:?}");
        }
    }

    #[test]
    fn draining_backends_keep_their_sessions_but_get_no_new_ones() {
        let site = sticky_site(&["a", "bb"]);
        let bb_tag = site.members().find(|b| b.id == "bb").unwrap().tag;
        let (site, _) = site.successor(&[m("a", 0)], Instant::now(), Duration::from_secs(60));
        let session = SessionKey::Cookie {
            nonce: 1,
            tag: bb_tag,
        };
        assert_eq!(pick(&site, &session, &[]), ("bb".into(), Outcome::Hit));
        for _ in 0..10 {
            assert_eq!(pick(&site, &SessionKey::Unpinned, &[]).0, "a");
        }
        // After the drain timeout the session is re-pinned.
        let (expired, _) =
            sticky_site(&["a", "bb"]).successor(&[m("a", 0)], Instant::now(), Duration::ZERO);
        assert_eq!(
            pick(&expired, &session, &[]),
            ("a".into(), Outcome::Repinned)
        );
    }

    #[test]
    fn adding_backends_moves_no_pinned_session() {
        let site = sticky_site(&["a", "bb", "ccc"]);
        let sessions: Vec<SessionKey> = (0..300u64)
            .map(|nonce| {
                let b = site
                    .select(&rr(), &SessionKey::Unpinned, None, &[])
                    .unwrap();
                SessionKey::Cookie {
                    nonce,
                    tag: b.backend.tag,
                }
            })
            .collect();
        let before: Vec<String> = sessions.iter().map(|s| pick(&site, s, &[]).0).collect();
        let members: Vec<Member> = ["a", "bb", "ccc", "dddd", "eeeee"]
            .iter()
            .map(|id| m(id, 0))
            .collect();
        let (grown, _) = site.successor(&members, Instant::now(), Duration::ZERO);
        let after: Vec<String> = sessions.iter().map(|s| pick(&grown, s, &[]).0).collect();
        assert_eq!(before, after);
        let fresh: std::collections::HashSet<String> = (0..10)
            .map(|_| pick(&grown, &SessionKey::Unpinned, &[]).0)
            .collect();
        assert!(fresh.contains("dddd") && fresh.contains("eeeee"));
    }

    #[test]
    fn with_nothing_available_the_site_panics_rather_than_refuse() {
        let mut site = sticky_site(&["a", "bb"]);
        site.outlier = Outlier {
            consecutive_failures: 1,
            base_ejection: Duration::from_secs(60),
            max_ejection: Duration::from_secs(60),
        };
        for b in site.members() {
            b.health.failed(&site.outlier);
        }
        assert!(pick(&site, &SessionKey::Unpinned, &[]).0.len() <= 2);
        let a = site.members().next().unwrap().clone();
        let b = site.members().nth(1).unwrap().clone();
        assert_eq!(
            pick(&site, &SessionKey::Unpinned, std::slice::from_ref(&a)).0,
            b.id
        );
        assert!(matches!(
            site.select(&rr(), &SessionKey::Unpinned, None, &[a, b]),
            Err(NoPick::NoBackend)
        ));
    }
}
