//! HTTP/1.1 written for proxying. Both sides of an HTTP/1.1 exchange are served here rather
//! than by hyper's connection machinery: one task per client connection reads a request head,
//! forwards it over a pooled backend connection that the request owns for its duration, and
//! streams the answer back, with no task per backend connection and no channel between the
//! two halves (BENCHMARKS.md measured what those cost: most of the proxy's own CPU per
//! request). Parsing is `httparse`'s; framing, limits and keep-alive are decided here, by the
//! rules of RFC 9112, strictly.
//!
//! - `head`: request and response heads, parsed from a read buffer; `fields`: what their
//!   fields say about framing and the connection, read in one pass.
//! - `chunked`: the chunked transfer coding, decoded incrementally and strictly.
//! - `decode`: a body read off a connection by its framing (either direction).
//! - `encode`: heads written out, with the framing the proxy chose.
//! - `inbound`, `outgoing`: bytes read from a socket and queued for one, on either side.
//! - `server`: one client connection, request after request.

pub mod chunked;
pub mod decode;
pub mod encode;
pub mod fields;
pub mod head;
mod inbound;
mod outgoing;
pub mod server;

pub use inbound::Inbound;
pub use outgoing::Outgoing;

/// A connection without a request for this long gives back its buffers and waits holding
/// none (10k idle connections then cost no buffers; nginx frees them at once). Under load the
/// next request comes sooner, and the buffers are reused instead of allocated per request.
/// Client connections (`server`) and pooled backend ones (`upstream::pool`) alike.
pub const PARK_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

#[cfg(test)]
mod tests;
