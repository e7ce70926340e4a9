//! Backend selection, kept free of I/O so it can be tested and benchmarked alone: round robin
//! (weighted for SRV weights), least requests by power of two choices, random, and rendezvous
//! (highest random weight) hashing on a key. Randomness and load are passed in; the hash is a
//! fixed function of its input and seed, so every replica with the same seed and backend set
//! maps a key to the same backend, across restarts and versions.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Round robin over whatever slice it is given. The counter lives outside the backend list, so
/// a new snapshot (backends added or removed) continues the rotation rather than restarting it.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn pick<'a, T>(&self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        // Relaxed: the counter only spreads load; no other memory is ordered by it.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let picked = &items[n % items.len()];
        Some(picked)
    }
}

impl RoundRobin {
    /// Weighted round robin: over `total` consecutive picks each item is chosen
    /// `weight / total` of the time. Items of weight 0 are skipped unless all are 0 (RFC 2782
    /// gives them "a very small chance"; none here, as long as anything else can serve).
    pub fn pick_weighted<'a, T>(
        &self,
        items: &'a [T],
        weight: impl Fn(&T) -> u64,
    ) -> Option<&'a T> {
        let first = weight(items.first()?);
        if items.iter().all(|i| weight(i) == first) {
            return self.pick(items);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) as u64;
        nth_weighted(items, n, weight).or_else(|| self.pick(items))
    }
}

/// The item that the `n`th of `total` consecutive slots falls on, when each item takes
/// `weight` slots in turn; `None` when every weight is 0.
fn nth_weighted<T>(items: &[T], n: u64, weight: impl Fn(&T) -> u64) -> Option<&T> {
    let total: u64 = items.iter().map(&weight).sum();
    if total == 0 {
        return None;
    }
    let mut n = n % total;
    for item in items {
        let w = weight(item);
        if n < w {
            return Some(item);
        }
        n -= w;
    }
    debug_assert!(false, "n < total always lands on an item");
    items.last()
}

/// Random, each item as likely as its `weight` (uniformly when every weight is 0).
pub fn random_weighted<T>(items: &[T], random: u64, weight: impl Fn(&T) -> u64) -> Option<&T> {
    nth_weighted(items, random, weight).or_else(|| self::random(items, random))
}

/// A stable 64-bit hash of `parts` under `seed`: FNV-1a with a separator between parts, then
/// the SplitMix64 finaliser for avalanche. Unlike std's `DefaultHasher`, it is specified here
/// and never changes, which is what lets replicas (and versions) agree.
pub fn stable_hash(seed: u64, parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET ^ seed;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h = (h ^ 0xff).wrapping_mul(PRIME);
        }
        for b in *part {
            h = (h ^ u64::from(*b)).wrapping_mul(PRIME);
        }
    }
    // SplitMix64 finaliser.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Rendezvous hashing: the item whose `id` scores highest with `key`. Adding an item moves only
/// the keys it now wins (about 1/(N+1) of them); removing one moves only the keys it held.
pub fn rendezvous<'a, T: 'a>(
    items: impl IntoIterator<Item = &'a T>,
    key: &[u8],
    seed: u64,
    id: impl Fn(&T) -> &str,
) -> Option<&'a T> {
    let mut best: Option<(u64, &'a T)> = None;
    for item in items {
        let score = stable_hash(seed, &[key, id(item).as_bytes()]);
        // Ties (as good as impossible with 64 bits) go to the greater id, so order never matters.
        let wins = match best {
            None => true,
            Some((s, b)) => (score, id(item)) > (s, id(b)),
        };
        if wins {
            best = Some((score, item));
        }
    }
    best.map(|(_, item)| item)
}

/// Power of two choices: of two distinct items drawn with `random`, the one with less `load`.
/// Nearly as good as scanning for the least loaded, with no herd on one item.
pub fn p2c<T>(items: &[T], random: u64, load: impl Fn(&T) -> usize) -> Option<&T> {
    p2c_weighted(items, (random, 0), load, |_| 1)
}

/// Power of two choices where items have weights: of the two drawn with `random.0`, the less
/// loaded when their weights are equal (as [`p2c`]); otherwise each is taken, by `random.1`,
/// in proportion to `weight / (load + 1)`. So with equal loads a backend in slow start at a
/// tenth of its weight is taken about a tenth as often, rather than never (comparing scaled
/// loads strictly would starve it while the site is idle, when warming it costs nothing).
pub fn p2c_weighted<T>(
    items: &[T],
    random: (u64, u64),
    load: impl Fn(&T) -> usize,
    weight: impl Fn(&T) -> u64,
) -> Option<&T> {
    let (a, b) = match items.len() {
        0 => return None,
        1 => return items.first(),
        n => {
            let a = (random.0 % n as u64) as usize;
            let b = (a + 1 + ((random.0 >> 32) % (n as u64 - 1)) as usize) % n;
            debug_assert_ne!(a, b);
            (&items[a], &items[b])
        }
    };
    let (wa, wb) = (weight(a), weight(b));
    if wa == wb {
        return Some(if load(b) < load(a) { b } else { a });
    }
    let (sa, sb) = (
        wa as f64 / (load(a) + 1) as f64,
        wb as f64 / (load(b) + 1) as f64,
    );
    // `random.1` as a fraction in [0, 1).
    let draw = (random.1 >> 11) as f64 / (1u64 << 53) as f64;
    Some(if draw * (sa + sb) < sa { a } else { b })
}

/// Uniformly random.
pub fn random<T>(items: &[T], random: u64) -> Option<&T> {
    items.get((random % items.len().max(1) as u64) as usize)
}

/// A fast per-thread random number (xorshift64*), seeded from the OS-randomised hasher keys.
pub fn random_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id()) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_every_item_evenly() {
        let rr = RoundRobin::default();
        let items = ["a", "b", "c"];
        let mut counts = [0usize; 3];
        for _ in 0..300 {
            let picked = rr.pick(&items).unwrap();
            counts[items.iter().position(|i| i == picked).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn weights_share_the_picks() {
        let rr = RoundRobin::default();
        let items = [("a", 3u16), ("b", 1), ("c", 0)];
        let mut counts = [0usize; 3];
        for _ in 0..400 {
            let picked = rr.pick_weighted(&items, |i| i.1.into()).unwrap();
            counts[items.iter().position(|i| i == picked).unwrap()] += 1;
        }
        assert_eq!(counts, [300, 100, 0]);
        let zeros = [("a", 0u16), ("b", 0)];
        assert!(rr.pick_weighted(&zeros, |i| i.1.into()).is_some());
    }

    #[test]
    fn the_hash_never_changes() {
        // Replicas and versions must agree: these values are part of the contract.
        assert_eq!(stable_hash(0, &[b"a"]), stable_hash(0, &[b"a"]));
        assert_ne!(
            stable_hash(0, &[b"ab", b"c"]),
            stable_hash(0, &[b"a", b"bc"])
        );
        assert_ne!(stable_hash(1, &[b"a"]), stable_hash(0, &[b"a"]));
        // Computed independently from the definition (FNV-1a, 0xff separator, SplitMix64).
        assert_eq!(
            stable_hash(0, &[b"session-1", b"10.0.0.1:8080"]),
            0xe38b_0792_16ed_8f8b
        );
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:8080")).collect()
    }

    #[test]
    fn rendezvous_moves_about_one_in_n_plus_one_keys_when_a_backend_joins() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("session-{i}")).collect();
        for n in [2usize, 5, 10] {
            let before = ids(n);
            let after = ids(n + 1);
            let pick = |set: &[String], k: &str| {
                rendezvous(set, k.as_bytes(), 7, |s| s.as_str())
                    .unwrap()
                    .clone()
            };
            let mut moved = 0;
            for k in &keys {
                let (a, b) = (pick(&before, k), pick(&after, k));
                if a != b {
                    moved += 1;
                    assert_eq!(b, after[n], "a key only ever moves to the new backend");
                }
            }
            let share = moved as f64 / keys.len() as f64;
            let ideal = 1.0 / (n as f64 + 1.0);
            assert!(
                (share - ideal).abs() < ideal * 0.15,
                "n={n}: moved {share:.3}, ideal {ideal:.3}"
            );
            // Removing it again moves exactly those keys back, nothing else.
            let back = keys
                .iter()
                .filter(|k| pick(&after, k) != pick(&before, k))
                .count();
            assert_eq!(back, moved);
        }
    }

    #[test]
    fn rendezvous_spreads_keys_evenly() {
        let set = ids(4);
        let mut counts = [0usize; 4];
        for i in 0..40_000 {
            let k = format!("user-{i}");
            let picked = rendezvous(&set, k.as_bytes(), 0, |s| s.as_str()).unwrap();
            counts[set.iter().position(|s| s == picked).unwrap()] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn p2c_never_picks_the_more_loaded_of_its_two() {
        let loads = [5usize, 0, 3];
        for r in 0..1000u64 {
            let r = stable_hash(r, &[]);
            let picked = p2c(&loads, r, |l| *l).unwrap();
            assert_ne!(*picked, 5, "5 is never the lesser of two");
        }
        let two = [1usize, 0];
        for r in 0..100u64 {
            assert_eq!(*p2c(&two, stable_hash(r, &[]), |l| *l).unwrap(), 0);
        }
        assert!(p2c::<usize>(&[], 1, |l| *l).is_none());
    }

    #[test]
    fn random_reaches_everything() {
        let items = [0usize, 1, 2];
        let mut seen = [false; 3];
        for _ in 0..200 {
            seen[*random(&items, random_u64()).unwrap()] = true;
        }
        assert_eq!(seen, [true; 3]);
        assert!(random::<u8>(&[], 3).is_none());
    }

    /// The middle of the `k`th of `of` equal slots of [0, 1), as `p2c_weighted` reads its
    /// second random number.
    fn fraction(k: u64, of: u64) -> u64 {
        (((2 * k + 1) << 52) / of) << 11
    }

    #[test]
    fn weighted_p2c_takes_a_lighter_item_in_proportion_and_never_starves_it() {
        // (weight, load): the first is at a tenth of its share, as in slow start.
        let items = [(10u64, 0usize), (100, 0)];
        let pick = |k: u64, loads: (usize, usize)| {
            let items = [(items[0].0, loads.0), (items[1].0, loads.1)];
            let picked = p2c_weighted(&items, (0, fraction(k, 1100)), |i| i.1, |i| i.0);
            picked.unwrap().0
        };
        let light = (0..1100).filter(|&k| pick(k, (0, 0)) == 10).count();
        assert_eq!(light, 100, "10 / (10 + 100) of the draws");
        // Loaded ten times as much, the heavy one scores as the light: half each.
        let light = (0..1100).filter(|&k| pick(k, (0, 9)) == 10).count();
        assert_eq!(light, 550);
        // Equal weights: strictly the less loaded, whatever the draw.
        let equal = [(100u64, 3usize), (100, 2)];
        for k in 0..100 {
            let picked = p2c_weighted(&equal, (0, fraction(k, 100)), |i| i.1, |i| i.0);
            assert_eq!(picked.unwrap().1, 2);
        }
        assert_eq!(
            p2c_weighted(&items[..1], (7, 7), |i| i.1, |i| i.0),
            Some(&items[0])
        );
    }

    #[test]
    fn weighted_random_follows_the_weights() {
        let items = [(0u8, 10u64), (1, 100), (2, 0)];
        let mut counts = [0; 3];
        for n in 0..110 {
            counts[random_weighted(&items, n, |i| i.1).unwrap().0 as usize] += 1;
        }
        assert_eq!(counts, [10, 100, 0]);
        let zeros = [(0u8, 0u64), (1, 0)];
        assert!(random_weighted(&zeros, 5, |i| i.1).is_some());
    }

    #[test]
    fn empty_set_picks_nothing() {
        let rr = RoundRobin::default();
        assert!(rr.pick::<u8>(&[]).is_none());
    }
}
