//! Backend selection, kept free of I/O so it can be tested and benchmarked alone. Round robin
//! (weighted for SRV weights) exists; least-requests, random and consistent hashing plug in
//! beside it.

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
    fn empty_set_picks_nothing() {
        let rr = RoundRobin::default();
        assert!(rr.pick::<u8>(&[]).is_none());
    }
}
