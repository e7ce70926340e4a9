//! Futures boxed where they are built, for the per-request boxes of the hot path.
//!
//! `Box::pin(make())` builds the value on the stack and then copies all of it into the heap:
//! for an async fn's future that is its whole size (2.9 KB for an HTTP/1.1 exchange), although
//! a future that has not started holds only its arguments. Allocating first and building into
//! the allocation lets the compiler write the arguments straight into the box.

use std::pin::Pin;

/// `Box::pin(make())`, with the box allocated before `make` runs.
#[inline(always)]
pub fn pinned<F>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}
