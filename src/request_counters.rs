//! The `sessiongate_requests_total` counters this thread has added to lately.
//!
//! Each request adds to the counter its listener, status class and backend pick.
//! `with_label_values` finds it by hashing the three labels (FNV), taking the vector's
//! read lock and cloning the counter's handle: about 250 instructions a request (callgrind),
//! and the lock's reader count is a cache line every runtime thread writes to. So each thread
//! keeps the counters it used in a small table of its own, picked by a cheap hash of the
//! labels: a hit compares the labels and adds, with no lock and no shared write but the
//! counter's own.
//!
//! A series that `stale_series` removed must not be written to through a handle kept here
//! (the increment would go to a counter no scrape sees). Every removal advances an epoch
//! ([`series_removed`]); an entry filled in an earlier epoch is looked up again, which makes
//! the series anew, as `with_label_values` would have.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{IntCounter, IntCounterVec};

/// 64 slots of 48 bytes (and a backend id each): about 4 KiB per thread that serves requests,
/// allocated on first use. A site of more backends than that shares slots, and a collision
/// costs the lookup the table saves.
const SLOTS: usize = 64;

/// Advanced after any series of a labelled metric is removed.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Says that a series was removed: entries filled before now are looked up again.
pub fn series_removed() {
    EPOCH.fetch_add(1, Ordering::Release);
}

struct Entry {
    /// Which `IntCounterVec` (a `ListenerMetrics`' identity: one per listener and metrics
    /// registry).
    vec_id: u64,
    class: u8,
    epoch: u64,
    backend: Box<str>,
    counter: IntCounter,
}

thread_local! {
    static TABLE: RefCell<Vec<Option<Entry>>> = const { RefCell::new(Vec::new()) };
}

/// The labels a request is counted under: `vec` is the listener's `requests_total`, `vec_id`
/// its identity, `class` the status class's digit and `values` the three label values.
pub struct Labels<'a> {
    pub vec: &'a IntCounterVec,
    pub vec_id: u64,
    pub class: u8,
    pub values: [&'a str; 3],
}

impl Labels<'_> {
    fn backend(&self) -> &str {
        self.values[2]
    }

    /// A slot for the labels: the backend id's first and last eight bytes (an address's
    /// host and port, where ids differ) mixed with the vector and the class.
    fn slot(&self) -> usize {
        let id = self.backend().as_bytes();
        let word = |bytes: &[u8]| bytes.iter().fold(0u64, |w, &b| w << 8 | u64::from(b));
        let (first, last) = match id.len() {
            n if n >= 8 => (
                u64::from_le_bytes(id[..8].try_into().unwrap_or_default()),
                u64::from_le_bytes(id[n - 8..].try_into().unwrap_or_default()),
            ),
            _ => (word(id), 0),
        };
        let mixed = (first ^ last.rotate_left(29) ^ self.vec_id.rotate_left(43))
            .wrapping_add(u64::from(self.class) << 56 | id.len() as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The high bits, which the multiplication mixed most, scaled to the table.
        ((u128::from(mixed) * SLOTS as u128) >> 64) as usize
    }

    fn matches(&self, entry: &Entry, epoch: u64) -> bool {
        entry.vec_id == self.vec_id
            && entry.class == self.class
            && entry.epoch == epoch
            && *entry.backend == *self.backend()
    }

    fn lookup(&self) -> IntCounter {
        self.vec.with_label_values(&self.values)
    }
}

/// Adds one to the counter of `labels`.
pub fn inc(labels: &Labels<'_>) {
    // Read before a lookup: a removal after it leaves this entry in an older epoch.
    let epoch = EPOCH.load(Ordering::Acquire);
    let counted = TABLE.try_with(|table| {
        let mut table = table.borrow_mut();
        if table.is_empty() {
            table.resize_with(SLOTS, || None);
        }
        let slot = &mut table[labels.slot()];
        match slot {
            Some(entry) if labels.matches(entry, epoch) => entry.counter.inc(),
            _ => {
                let counter = labels.lookup();
                counter.inc();
                *slot = Some(Entry {
                    vec_id: labels.vec_id,
                    class: labels.class,
                    epoch,
                    backend: labels.backend().into(),
                    counter,
                });
            }
        }
    });
    // While the thread is being torn down its table is gone: count the slow way.
    if counted.is_err() {
        labels.lookup().inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stale_series::SeriesVec;
    use prometheus::core::Collector;
    use prometheus::Opts;
    use std::collections::HashMap;

    fn vec() -> IntCounterVec {
        IntCounterVec::new(
            Opts::new("requests_total", "test"),
            &["listener", "status_class", "backend"],
        )
        .unwrap()
    }

    fn labels<'a>(vec: &'a IntCounterVec, vec_id: u64, class: u8, backend: &'a str) -> Labels<'a> {
        let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        Labels {
            vec,
            vec_id,
            class,
            values: ["web", classes[usize::from(class) - 1], backend],
        }
    }

    #[test]
    fn every_request_reaches_its_own_series_whatever_shares_a_slot() {
        let (a, b) = (vec(), vec());
        // Three times the slots: most backends share a slot with others.
        let backends: Vec<String> = (0..3 * SLOTS)
            .map(|i| format!("10.0.{}.{}:8080", i / 200, i % 200))
            .chain(["none".to_string(), "kc-0.kc:8080".to_string()])
            .collect();
        for round in 0..3 {
            for (i, backend) in backends.iter().enumerate() {
                for _ in 0..=(i % 3) {
                    inc(&labels(&a, 1, 2, backend));
                }
                if round == 0 {
                    inc(&labels(&a, 1, 5, backend));
                    inc(&labels(&b, 2, 2, backend));
                }
            }
        }
        for (i, backend) in backends.iter().enumerate() {
            let count =
                |vec: &IntCounterVec, class| vec.with_label_values(&["web", class, backend]).get();
            assert_eq!(count(&a, "2xx"), 3 * (i as u64 % 3 + 1), "{backend}");
            assert_eq!(count(&a, "5xx"), 1, "{backend}");
            assert_eq!(count(&b, "2xx"), 1, "{backend}: another registry's vector");
        }
    }

    #[test]
    fn a_removed_series_is_made_anew_not_written_through_a_kept_handle() {
        let a = vec();
        let backend = "10.0.0.9:8080";
        for _ in 0..5 {
            inc(&labels(&a, 7, 2, backend));
        }
        let series = HashMap::from([
            ("listener", "web"),
            ("status_class", "2xx"),
            ("backend", backend),
        ]);
        a.remove_series(&series);
        assert!(a.collect()[0].get_metric().is_empty(), "removed");
        inc(&labels(&a, 7, 2, backend));
        let families = a.collect();
        assert_eq!(families[0].get_metric().len(), 1, "the series is back");
        assert_eq!(families[0].get_metric()[0].get_counter().get_value(), 1.0);
    }
}
