//! Per-client request rate limits, as nginx's `limit_req` and HAProxy's `http_req_rate` stick
//! tables: a client (an IPv4 address, or an IPv6 /64, which one subscriber usually holds whole)
//! may send `burst` requests at once and then one per `1 / rate`; past that it gets 429 with
//! `Retry-After`, and the backends never see the request. Keycloak's own brute-force detection
//! counts failures per user; this counts requests per address, before any reach a node.
//!
//! The algorithm is GCRA (the generic cell rate algorithm, a token bucket that keeps one number
//! per client): the client's *theoretical arrival time* `tat`, when it will have used up no
//! allowance at all. A request is let through when `max(tat, now) + interval - now` stays within
//! `burst * interval`, and then moves `tat` on by one interval. A client whose `tat` has passed
//! is at full allowance, which is what a client the table does not know is: so those entries
//! may be forgotten whenever room is needed, and the table holds only clients that are busy.
//!
//! The table is split in shards, each behind its own lock, holding at most `max_clients` in all.
//! When a shard is full of busy clients, a newcomer is let through untracked and counted: the
//! limit then fails open for new addresses rather than refuse users for an attacker's
//! thousands of addresses (the connection caps and the nodes' queues still stand).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use crate::paths::Prefix;

const SHARDS: usize = 16;

/// One rule as configured: which paths, how fast, how much at once, how many clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Canonical path prefixes the rule covers (with their copies under `relative_path`).
    pub paths: Vec<Prefix>,
    /// As written, for `check-config`.
    pub paths_text: Vec<String>,
    pub rate: Rate,
    /// Requests a client may send at once.
    pub burst: u32,
    /// Clients tracked at once.
    pub max_clients: usize,
}

/// `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// Why a rate was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("`{0}` is not a rate like 10/s, 600/m or 1000/h")]
    NoUnit(String),
    #[error("`{0}`: the count must be a whole number above 0")]
    BadCount(String),
    #[error("`{text}`: unit `{unit}` is not s, m or h")]
    BadUnit { text: String, unit: String },
}

impl Rate {
    /// `10/s`, `600/m`, `1000/h`.
    pub fn parse(text: &str) -> Result<Rate, RateError> {
        let (count, unit) = text
            .split_once('/')
            .ok_or_else(|| RateError::NoUnit(text.into()))?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| RateError::BadCount(text.into()))?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => {
                return Err(RateError::BadUnit {
                    text: text.into(),
                    unit: other.into(),
                })
            }
        };
        Ok(Rate { count, per })
    }

    pub fn text(&self) -> String {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        format!("{}/{unit}", self.count)
    }

    /// The time one request uses up, in nanoseconds (at least 1).
    fn interval_ns(&self) -> u64 {
        (self.per.as_nanos() / u128::from(self.count)).max(1) as u64
    }
}

/// Why a request was not let through: when it would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

/// One rule and its clients. Shared by the generations of a listener whose rule did not change,
/// and carried into a changed rule over the same paths ([`RateLimiter::carried_from`]), so a
/// reload does not hand every client a fresh allowance.
pub struct RateLimiter {
    pub config: RateLimitConfig,
    interval_ns: u64,
    /// `burst * interval`: how far ahead of now a client's `tat` may run.
    tolerance_ns: u64,
    per_shard: usize,
    epoch: Instant,
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<u128, u64>>]>,
    limited: IntCounter,
    untracked: IntCounter,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig, limited: IntCounter, untracked: IntCounter) -> Self {
        let interval_ns = config.rate.interval_ns();
        RateLimiter {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(config.burst)),
            per_shard: config.max_clients.div_ceil(SHARDS).max(1),
            epoch: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            limited,
            untracked,
            config,
        }
    }

    /// The rule `config` replacing `old` over the same paths with another rate, burst or size
    /// (a reload): each busy client keeps what it has used of its allowance, counted in
    /// requests, up to the new burst. Starting every client afresh instead would hand a client
    /// being held back, a password guesser say, a new burst at each tuning of the rule.
    pub fn carried_from(
        config: RateLimitConfig,
        old: &RateLimiter,
        limited: IntCounter,
        untracked: IntCounter,
        now: Instant,
    ) -> Self {
        let new = RateLimiter::new(config, limited, untracked);
        let old_now = old.nanos_at(now);
        let new_now = new.nanos_at(now);
        for shard in old.shards.iter() {
            let table = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (&key, &tat) in table.iter().filter(|(_, &tat)| tat > old_now) {
                let used = (tat - old_now).div_ceil(old.interval_ns);
                let ahead = used.saturating_mul(new.interval_ns).min(new.tolerance_ns);
                let mut into = new.shard_of(key);
                // A table made smaller than its busy clients keeps those that fit; the rest
                // are unknown to it, as when it is full.
                if into.len() < new.per_shard {
                    into.insert(key, new_now + ahead);
                }
            }
        }
        new
    }

    fn nanos_at(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn shard_of(&self, key: u128) -> std::sync::MutexGuard<'_, HashMap<u128, u64>> {
        let shard = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[shard]
            .lock()
            // Every step is one insert or one retain: a panic leaves a consistent table.
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn covers(&self, canonical_path: &str) -> bool {
        self.config.paths.iter().any(|p| p.matches(canonical_path))
    }

    /// Counts a request from `client` at `now`: `Err` when it is over its allowance.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Limited> {
        let key = client_key(client);
        let now_ns = self.nanos_at(now);
        let mut table = self.shard_of(key);
        let verdict = match table.get_mut(&key) {
            Some(tat) => self.arrive(tat, now_ns),
            None => {
                if table.len() >= self.per_shard {
                    // Clients at full allowance are as good as unknown.
                    table.retain(|_, tat| *tat > now_ns);
                }
                if table.len() >= self.per_shard {
                    self.untracked.inc();
                    return Ok(());
                }
                let tat = table.entry(key).or_insert(now_ns);
                self.arrive(tat, now_ns)
            }
        };
        if verdict.is_err() {
            self.limited.inc();
        }
        verdict
    }

    fn arrive(&self, tat: &mut u64, now_ns: u64) -> Result<(), Limited> {
        let next = (*tat).max(now_ns).saturating_add(self.interval_ns);
        let ahead = next - now_ns;
        if ahead > self.tolerance_ns {
            return Err(Limited {
                retry_after: Duration::from_nanos(ahead - self.tolerance_ns),
            });
        }
        *tat = next;
        Ok(())
    }

    /// Clients tracked now (busy or not yet forgotten).
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The first rule covering `canonical_path` decides; `Err` if `client` is over it.
pub fn check(
    rules: &[std::sync::Arc<RateLimiter>],
    canonical_path: &str,
    client: IpAddr,
) -> Result<(), Limited> {
    match rules.iter().find(|r| r.covers(canonical_path)) {
        Some(rule) => rule.check(client, Instant::now()),
        None => Ok(()),
    }
}

/// An IPv4 address whole (IPv4-mapped IPv6 included), an IPv6 address by its /64.
fn client_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        // Tagged so that no /64 meets an IPv4 address.
        IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 64) - 1)) | 1,
    }
}

/// `Retry-After` in whole seconds, rounded up (at least 1).
pub fn retry_after_secs(limited: Limited) -> u64 {
    limited.retry_after.as_secs()
        + u64::from(limited.retry_after.subsec_nanos() > 0 || limited.retry_after.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(rate: &str, burst: u32, max_clients: usize) -> RateLimitConfig {
        RateLimitConfig {
            paths: vec![Prefix::parse("/").unwrap()],
            paths_text: vec!["/".into()],
            rate: Rate::parse(rate).unwrap(),
            burst,
            max_clients,
        }
    }

    fn counter() -> IntCounter {
        IntCounter::new("c", "c").unwrap()
    }

    fn limiter(rate: &str, burst: u32, max_clients: usize) -> RateLimiter {
        RateLimiter::new(rule(rate, burst, max_clients), counter(), counter())
    }

    /// `old` changed to `rate`, `burst` and `max_clients` at `now`.
    fn changed(
        old: &RateLimiter,
        (rate, burst, max_clients): (&str, u32, usize),
        now: Instant,
    ) -> RateLimiter {
        let config = rule(rate, burst, max_clients);
        RateLimiter::carried_from(config, old, counter(), counter(), now)
    }

    /// How many requests `client` gets through at `now` before its first 429, and that 429.
    fn passes(rl: &RateLimiter, client: IpAddr, now: Instant) -> (usize, Limited) {
        for passed in 0..1000 {
            if let Err(limited) = rl.check(client, now) {
                return (passed, limited);
            }
        }
        panic!("never limited");
    }

    #[test]
    fn a_changed_rule_keeps_what_each_client_used_of_its_allowance() {
        let old = limiter("1/h", 5, 100);
        let now = Instant::now() + Duration::from_secs(10);
        let (used, other) = (ip("192.0.2.1"), ip("192.0.2.2"));
        for _ in 0..3 {
            assert!(old.check(used, now).is_ok());
        }
        let hour = Duration::from_secs(3600);

        // Burst 4: one request of it left; a client unknown before has all four.
        let rl = changed(&old, ("1/h", 4, 100), now);
        assert_eq!(passes(&rl, used, now).0, 1);
        assert_eq!(passes(&rl, other, now).0, 4);
        // Burst 2, below what it used: nothing left, and the wait is one new interval, not
        // the rest of the old debt.
        let rl = changed(&old, ("1/h", 2, 100), now);
        assert_eq!(passes(&rl, used, now), (0, Limited { retry_after: hour }));
        // A faster rate: three requests used are paid back at the new one.
        let rl = changed(&old, ("60/m", 5, 100), now);
        assert_eq!(passes(&rl, used, now).0, 2);
        assert_eq!(passes(&rl, used, now + Duration::from_secs(3)).0, 3);
        // A table made smaller than its busy clients keeps only what fits.
        for n in 0..64 {
            assert!(old.check(ip(&format!("198.51.100.{n}")), now).is_ok());
        }
        let rl = changed(&old, ("1/h", 5, 16), now);
        assert!(rl.tracked() <= 16, "{}", rl.tracked());
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn rates_parse_and_print() {
        assert_eq!(
            Rate::parse("10/s").unwrap(),
            Rate {
                count: 10,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(Rate::parse("600 / m").unwrap().text(), "600/m");
        assert_eq!(Rate::parse("5/h").unwrap().interval_ns(), 720_000_000_000);
        assert_eq!(Rate::parse("10"), Err(RateError::NoUnit("10".into())));
        for bad in ["0/s", "-1/s", "ten/s"] {
            assert_eq!(Rate::parse(bad), Err(RateError::BadCount(bad.into())));
        }
        for (bad, unit) in [("10/d", "d"), ("10/", "")] {
            let want = RateError::BadUnit {
                text: bad.into(),
                unit: unit.into(),
            };
            assert_eq!(Rate::parse(bad), Err(want));
        }
    }

    #[test]
    fn a_burst_goes_through_then_one_request_per_interval() {
        let rl = limiter("10/s", 5, 100);
        let t0 = rl.epoch + Duration::from_secs(1);
        let client = ip("192.0.2.1");
        for _ in 0..5 {
            assert_eq!(rl.check(client, t0), Ok(()));
        }
        let denied = rl.check(client, t0).unwrap_err();
        assert_eq!(denied.retry_after, Duration::from_millis(100));
        // Refused requests use up nothing: still 100 ms to wait.
        assert_eq!(rl.check(client, t0), Err(denied));
        assert_eq!(rl.limited.get(), 2);
        // 100 ms later, one more; 50 ms after that, none.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(rl.check(client, t1), Ok(()));
        assert_eq!(
            rl.check(client, t1 + Duration::from_millis(50)),
            Err(Limited {
                retry_after: Duration::from_millis(50)
            })
        );
        // Rested for the whole burst, the client has it all again.
        let rested = t1 + Duration::from_millis(500);
        for _ in 0..5 {
            assert_eq!(rl.check(client, rested), Ok(()));
        }
        assert!(rl.check(client, rested).is_err());
        // Others are not affected.
        assert_eq!(rl.check(ip("192.0.2.2"), t0), Ok(()));
    }

    #[test]
    fn a_steady_client_at_the_rate_is_never_limited() {
        let rl = limiter("10/s", 1, 100);
        let client = ip("192.0.2.1");
        for i in 0..1000 {
            let at = rl.epoch + Duration::from_millis(100 * i);
            assert_eq!(rl.check(client, at), Ok(()), "request {i}");
        }
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let rl = limiter("1/h", 2, 100);
        let now = rl.epoch;
        assert_eq!(rl.check(ip("2001:db8:1:2::1"), now), Ok(()));
        assert_eq!(rl.check(ip("2001:db8:1:2:ffff::9"), now), Ok(()));
        assert!(rl.check(ip("2001:db8:1:2::3"), now).is_err());
        assert_eq!(rl.check(ip("2001:db8:1:3::1"), now), Ok(()));
        // An IPv4-mapped address is its IPv4 address.
        assert_eq!(rl.check(ip("192.0.2.7"), now), Ok(()));
        assert_eq!(rl.check(ip("::ffff:192.0.2.7"), now), Ok(()));
        assert!(rl.check(ip("192.0.2.7"), now).is_err());
    }

    #[test]
    fn rested_clients_are_forgotten_and_a_full_table_fails_open() {
        let rl = limiter("1/s", 1, SHARDS);
        let t0 = rl.epoch;
        // Clients until every shard holds one (a shard holds one), each let through.
        let mut n = 0u32;
        while rl.tracked() < SHARDS {
            assert_eq!(rl.check(IpAddr::from(n.to_be_bytes()), t0), Ok(()));
            n += 1;
        }
        let untracked = rl.untracked.get();
        // Every shard is full of busy clients: a newcomer goes through, untracked, every time.
        let newcomer = ip("198.51.100.1");
        assert_eq!(rl.check(newcomer, t0), Ok(()));
        assert_eq!(rl.check(newcomer, t0), Ok(()));
        assert_eq!(rl.untracked.get(), untracked + 2);
        // A second later all have rested: the newcomer takes a forgotten one's place.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(rl.check(newcomer, t1), Ok(()));
        assert!(rl.check(newcomer, t1).is_err());
        assert_eq!(rl.untracked.get(), untracked + 2);
        assert!(rl.tracked() <= SHARDS);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let s = |ms| {
            retry_after_secs(Limited {
                retry_after: Duration::from_millis(ms),
            })
        };
        assert_eq!((s(0), s(1), s(1000), s(1001), s(59_999)), (1, 1, 1, 2, 60));
    }
}
