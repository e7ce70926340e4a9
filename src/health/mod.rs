//! Whether a backend should get requests: active checks (`active.rs`) set `up`; passive
//! ejection follows the requests themselves. Both live in atomics on the [`Backend`], which
//! keeps its identity across snapshots, so the request path reads health without locks.
//!
//! [`Backend`]: crate::backends::Backend

pub mod active;
pub mod probe;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::config::Outlier;

/// Milliseconds on a process-wide monotonic clock (never 0, so 0 can mean "not ejected").
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[derive(Debug)]
pub struct Health {
    /// The active checks' verdict; up until they say otherwise.
    up: AtomicBool,
    /// Requests failed in a row (connection failures and 5xx other than 503).
    failures: AtomicU32,
    /// Ejections in a row: each doubles the next one.
    ejections: AtomicU32,
    /// Ejected until this `now_ms()`; 0 when not ejected.
    ejected_until: AtomicU64,
    /// When it came back into service: joined a set already serving, or came back up; 0 when
    /// in service from the start. With `ejected_until`, where slow start counts from.
    back_since: AtomicU64,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            back_since: AtomicU64::new(0),
        }
    }
}

/// The least share of its weight a backend in slow start gets (Envoy's default).
const SLOW_START_FLOOR: u64 = 10;

impl Health {
    pub fn available(&self, now: u64) -> bool {
        self.up.load(Ordering::Relaxed) && self.ejected_until.load(Ordering::Relaxed) <= now
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Sets the active checks' verdict; true when it changed.
    pub fn set_up(&self, up: bool) -> bool {
        let changed = self.up.swap(up, Ordering::Relaxed) != up;
        if changed && up {
            self.came_back(now_ms());
        }
        changed
    }

    /// Marks it as (back) in service from `now`: slow start counts from here.
    pub fn came_back(&self, now: u64) {
        self.back_since.store(now, Ordering::Relaxed);
    }

    /// The share of its weight, in percent, that it gets `now`, `window` ms into slow start:
    /// from 10% when it came back into service (joined, came back up, or its ejection ended)
    /// rising linearly to 100% (HAProxy's `slowstart`, Envoy's `slow_start_config`). A JVM
    /// node such as Keycloak serves slowly until its code is compiled and its caches warm:
    /// a full share of new sessions at once would make the first users' logins crawl.
    pub fn warmth(&self, now: u64, window: u64) -> u64 {
        let since = self
            .back_since
            .load(Ordering::Relaxed)
            .max(self.ejected_until.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(since);
        if since == 0 || window == 0 || elapsed >= window {
            return 100;
        }
        (SLOW_START_FLOOR + (100 - SLOW_START_FLOOR) * elapsed / window).max(SLOW_START_FLOOR)
    }

    /// Takes over what the previous generation knew of the same backend (a reload): the
    /// active checks' verdict when `active` (this generation checks it too, so a verdict that
    /// has gone stale is corrected after `rise` or `fall` probes), and the passive ejection
    /// state when `passive` (an ejection ends by itself).
    pub fn adopt(&self, previous: &Health, active: bool, passive: bool) {
        if active {
            self.up.store(previous.is_up(), Ordering::Relaxed);
        }
        // A slow start under way goes on.
        let since = previous.back_since.load(Ordering::Relaxed);
        self.back_since.store(since, Ordering::Relaxed);
        if passive {
            for (mine, was) in [
                (&self.failures, &previous.failures),
                (&self.ejections, &previous.ejections),
            ] {
                mine.store(was.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            let until = previous.ejected_until.load(Ordering::Relaxed);
            self.ejected_until.store(until, Ordering::Relaxed);
        }
    }

    /// A request got an answer that is not a failure (a 503 counts here: a backend shedding
    /// load is busy, not dead, and ejecting it would only push its load onto the others).
    pub fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0
            && self.ejected_until.load(Ordering::Relaxed) <= now_ms()
        {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A request failed on this backend; returns how long it is now ejected for, if this
    /// failure ejected it.
    pub fn failed(&self, outlier: &Outlier) -> Option<Duration> {
        if outlier.consecutive_failures == 0 {
            return None;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ms();
        if failures < outlier.consecutive_failures || self.is_ejected(now) {
            return None;
        }
        self.failures.store(0, Ordering::Relaxed);
        let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let length = outlier
            .base_ejection
            .saturating_mul(1 << n)
            .min(outlier.max_ejection);
        self.ejected_until
            .store(now + length.as_millis() as u64, Ordering::Relaxed);
        Some(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_rises_from_a_tenth_to_full_from_each_return_to_service() {
        let window = 60_000;
        let h = Health::default();
        assert_eq!(h.warmth(5_000, window), 100, "in service from the start");
        h.came_back(10_000);
        assert_eq!(h.warmth(10_000, window), 10);
        assert_eq!(h.warmth(40_000, window), 55);
        assert_eq!(h.warmth(70_000, window), 100);
        assert_eq!(h.warmth(10_000, 0), 100, "no slow start");
        // An ejection that ended at 100 s counts as a return to service.
        h.ejected_until.store(100_000, Ordering::Relaxed);
        assert_eq!(h.warmth(106_000, window), 19);
        // So does coming back up after the checks held it down.
        assert!(h.set_up(false) && h.set_up(true));
        let back = h.back_since.load(Ordering::Relaxed);
        assert!(back > 0);
        assert_eq!(h.warmth(back.max(100_000) + 30_000, window), 55);
        // A reload's new Health goes on with the ramp.
        let next = Health::default();
        next.adopt(&h, true, true);
        assert_eq!(next.warmth(back.max(100_000) + 30_000, window), 55);
    }

    #[test]
    fn ejection_backs_off_and_resets() {
        let outlier = Outlier {
            consecutive_failures: 2,
            base_ejection: Duration::from_millis(1),
            max_ejection: Duration::from_millis(3),
        };
        let h = Health::default();
        assert!(h.available(now_ms()));
        assert_eq!(h.failed(&outlier), None);
        assert_eq!(h.failed(&outlier), Some(Duration::from_millis(1)));
        assert!(!h.available(now_ms()));
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.available(now_ms()), "the ejection ends by itself");
        h.failed(&outlier);
        assert_eq!(
            h.failed(&outlier),
            Some(Duration::from_millis(2)),
            "doubled"
        );
        std::thread::sleep(Duration::from_millis(5));
        h.failed(&outlier);
        assert_eq!(h.failed(&outlier), Some(Duration::from_millis(3)), "capped");
        std::thread::sleep(Duration::from_millis(5));
        h.succeeded();
        h.failed(&outlier);
        assert_eq!(
            h.failed(&outlier),
            Some(Duration::from_millis(1)),
            "reset by a success"
        );

        let other = Health::default();
        other.failed(&outlier);
        other.succeeded();
        assert_eq!(other.failed(&outlier), None, "failures must be consecutive");
        assert!(other.set_up(false));
        assert!(!other.available(now_ms()));
        assert!(!other.set_up(false), "no change");
    }

    #[test]
    fn a_reload_takes_over_only_what_the_new_site_still_judges() {
        let outlier = Outlier {
            consecutive_failures: 1,
            base_ejection: Duration::from_secs(3600),
            max_ejection: Duration::from_secs(3600),
        };
        let was = Health::default();
        was.set_up(false);
        assert_eq!(was.failed(&outlier), Some(Duration::from_secs(3600)));

        let both = Health::default();
        both.adopt(&was, true, true);
        assert!(!both.is_up() && both.is_ejected(now_ms()));
        let unchecked = Health::default();
        unchecked.adopt(&was, false, true);
        assert!(unchecked.is_up() && unchecked.is_ejected(now_ms()));
        let no_ejection = Health::default();
        no_ejection.adopt(&was, true, false);
        assert!(!no_ejection.is_up() && !no_ejection.is_ejected(now_ms()));
        let streak = both.ejections.load(Ordering::Relaxed);
        assert_eq!(
            streak, 1,
            "the streak carries: the next ejection is twice as long"
        );
    }
}
