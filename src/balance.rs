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
        weight: impl Fn(&T) -> u16,
    ) -> Option<&'a T> {
        let first = weight(items.first()?);
        if items.iter().all(|i| weight(i) == first) {
            return self.pick(items);
        }
        let total: u64 = items.iter().map(|i| u64::from(weight(i))).sum();
        if total == 0 {
            return self.pick(items);
        }
        let mut n = self.next.fetch_add(1, Ordering::Relaxed) as u64 % total;
        for item in items {
            let w = u64::from(weight(item));
            if n < w {
                return Some(item);
            }
            n -= w;
        }
        debug_assert!(false, "n < total always lands on an item");
        items.last()
    }
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
    match items.len() {
        0 => None,
        1 => items.first(),
        n => {
            let a = (random % n as u64) as usize;
            let b = (a + 1 + ((random >> 32) % (n as u64 - 1)) as usize) % n;
            debug_assert_ne!(a, b);
            Some(if load(&items[b]) < load(&items[a]) {
                &items[b]
            } else {
                &items[a]
            })
        }
    }
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
            let picked = rr.pick_weighted(&items, |i| i.1).unwrap();
            counts[items.iter().position(|i| i == picked).unwrap()] += 1;
        }
        assert_eq!(counts, [300, 100, 0]);
        let zeros = [("a", 0u16), ("b", 0)];
        assert!(rr.pick_weighted(&zeros, |i| i.1).is_some());
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

    #[test]
    fn empty_set_picks_nothing() {
        let rr = RoundRobin::default();
        assert!(rr.pick::<u8>(&[]).is_none());
    }
}
