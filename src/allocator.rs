//! The process's allocator: mimalloc, called through its C interface the way its own malloc
//! replacement calls it.
//!
//! Why not the `mimalloc` crate's `MiMalloc`: it passes every allocation to
//! `mi_malloc_aligned`, whatever the alignment. mimalloc (v2 and v3 alike) sends a request of
//! alignment 1 over 1 KiB whose size is not a power of two down its generic path and
//! over-allocates to align it. Those are exactly the proxy's byte buffers (heads being encoded,
//! read buffers), so six of the eleven allocations of a proxied request cost ~270 instructions
//! each instead of ~40: 1,500 of 23,000 user-space instructions per request (callgrind;
//! BENCHMARKS.md). mimalloc's block sizes are whole words, so every block is word-aligned:
//! alignments up to a word go to plain `mi_malloc`, larger ones keep the aligned calls.
//!
//! It also gives freed memory back to the system when a runtime thread goes idle (`on_idle`).
//!
//! This is the binary's only unsafe code (the library forbids it): a `GlobalAlloc` cannot be
//! written without it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ffi::c_void;
use std::time::{Duration, Instant};

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has.
const WORD: usize = std::mem::size_of::<usize>();

pub struct MiMalloc;

// SAFETY: each call hands mimalloc a size (and, past a word, an alignment) from a valid
// `Layout`, and frees only pointers mimalloc returned. Blocks from `mi_malloc` are word-aligned,
// which covers every layout routed to it (`layout.align() <= WORD`); the test below checks it.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

/// How often a thread going idle collects: mimalloc's purge delay (1 s), so that the pages one
/// collection frees are handed back to the system by the next.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    static COLLECTED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs as each runtime thread goes idle (Tokio's `on_thread_park`), and at most once a second
/// collects the thread's heap.
///
/// Why: mimalloc hands the pages a burst leaves empty back to the system a purge delay after
/// they empty, and only from inside its own calls (a thread allocating a fresh page, or
/// collecting). A proxy that goes quiet after a burst makes neither, so it kept the burst's
/// memory for as long as it stayed quiet: 100 MiB five seconds after 9,750 TLS connections
/// closed, as nginx and HAProxy keep theirs; with this, 15 MiB (BENCHMARKS.md, "What was
/// tried"). Purging at once instead (`MIMALLOC_PURGE_DELAY=0`) cost an `madvise` every 25
/// requests under load; this costs a clock read per park and one collection a second.
pub fn on_idle() {
    let now = Instant::now();
    let due = COLLECTED.with(|last| {
        let due = last
            .get()
            .is_none_or(|t| now.duration_since(t) >= COLLECT_EVERY);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: takes no pointer; collects the calling thread's own heap, as mimalloc does
        // inside its own calls.
        unsafe { mi::mi_collect(false) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_have_the_alignment_asked_for_at_every_size() {
        let a = MiMalloc;
        for align in [1, 2, 4, 8, 16, 64, 4096] {
            for size in (1..3000).chain([4095, 8191, 8193, 65_537, 1 << 20]) {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                    p.write_bytes(0xa5, size);
                    let q = a.realloc(p, layout, size * 2 + 1);
                    assert_eq!(q as usize % align, 0, "realloc {size}, align {align}");
                    assert_eq!(*q.add(size - 1), 0xa5, "realloc keeps the bytes");
                    a.dealloc(q, Layout::from_size_align(size * 2 + 1, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }

    /// Resident memory of this process, in bytes.
    fn resident() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            .expect("VmRSS in /proc/self/status");
        kib << 10
    }

    /// The runtime the proxy runs on gives a burst's memory back once it goes quiet: 64 MiB of
    /// 8 KiB buffers (a burst's read buffers) are freed, and the thread then only sleeps, as an
    /// idle proxy's thread wakes only for its timers.
    #[test]
    fn an_idle_runtime_gives_a_bursts_memory_back() {
        const BURST: usize = 64 << 20;
        crate::runtime(Some(1)).block_on(async {
            let buffers: Vec<Vec<u8>> = (0..BURST / 8192).map(|i| vec![i as u8; 8192]).collect();
            let during = resident();
            drop(buffers);
            // Bounded: mimalloc's purge delay is 1 s; a slow machine gets ten times that.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = resident();
                if now + BURST / 2 < during {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "still {} MiB resident, {} MiB during the burst",
                    now >> 20,
                    during >> 20
                );
            }
        });
    }
}
