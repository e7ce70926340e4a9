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
//! This is the binary's only unsafe code (the library forbids it): a `GlobalAlloc` cannot be
//! written without it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

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
}
