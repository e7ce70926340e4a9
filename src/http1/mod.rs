//! HTTP/1.1 written for proxying. Both sides of an HTTP/1.1 exchange are served here rather
//! than by hyper's connection machinery: one task per client connection reads a request head,
//! forwards it over a pooled backend connection that the request owns for its duration, and
//! streams the answer back, with no task per backend connection and no channel between the
//! two halves (BENCHMARKS.md measured what those cost: most of the proxy's own CPU per
//! request). Parsing is `httparse`'s; framing, limits and keep-alive are decided here, by the
//! rules of RFC 9112, strictly.
//!
//! - `head`: request and response heads, parsed from a read buffer, and their body framing.
//! - `chunked`: the chunked transfer coding, decoded incrementally and strictly.
//! - `encode`: heads written out, with the framing the proxy chose.

pub mod chunked;
pub mod encode;
pub mod head;

#[cfg(test)]
mod tests;
