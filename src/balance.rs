//! Backend selection, kept free of I/O so it can be tested and benchmarked alone. Only round
//! robin exists yet; least-requests, random and consistent hashing plug in beside it.

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
    fn empty_set_picks_nothing() {
        let rr = RoundRobin::default();
        assert!(rr.pick::<u8>(&[]).is_none());
    }
}
