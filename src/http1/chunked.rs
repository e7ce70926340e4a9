//! The chunked transfer coding (RFC 9112 §7.1), decoded incrementally from a read buffer and
//! written back out. The decoder is strict where leniency has been used to smuggle requests:
//! lines end in CRLF (a bare LF is an error), a size has at most 16 hex digits, extensions are
//! skipped but bounded, and trailers are read, bounded and dropped (never forwarded: nothing on
//! the other side asked for them, and a trailer the proxy did not check must not arrive as a
//! header). It never consumes a byte past the body's end, so a pipelined request stays put.

use bytes::{Buf, Bytes, BytesMut};

/// Longest extension text after one chunk size (nginx and hyper allow a few KiB in all).
const MAX_EXTENSION: usize = 4096;
/// Most bytes of trailer fields after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    BadSize,
    #[error("chunk size does not fit 64 bits")]
    SizeOverflow,
    #[error("chunk extension too long")]
    ExtensionTooLong,
    #[error("chunk data not followed by CRLF")]
    BadDataEnd,
    #[error("invalid or oversized trailer section")]
    BadTrailers,
}

/// What one step of decoding found.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Body bytes, split off the buffer without copying.
    Data(Bytes),
    /// The buffer holds no more of the body: read more and call again.
    Incomplete,
    /// The last chunk and the trailer section were read.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size {
        value: u64,
        digits: u8,
    },
    /// After the size: whitespace and extensions, skipped up to CR.
    Extension {
        value: u64,
        len: usize,
    },
    SizeLf {
        value: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    Trailer {
        line: usize,
        total: usize,
    },
    TrailerLf {
        empty: bool,
        total: usize,
    },
    Done,
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes framing from `buf` and returns the next body bytes, `Incomplete` when `buf`
    /// ran out first, or `End`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, ChunkError> {
        loop {
            match self.state {
                State::Done => return Ok(Chunk::End),
                State::Data { left } => {
                    if buf.is_empty() {
                        return Ok(Chunk::Incomplete);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                    return Ok(Chunk::Data(data));
                }
                state => {
                    let Some(&byte) = buf.first() else {
                        return Ok(Chunk::Incomplete);
                    };
                    buf.advance(1);
                    self.state = step(state, byte)?;
                }
            }
        }
    }
}

/// One framing byte (never called in `Data` or `Done`).
fn step(state: State, byte: u8) -> Result<State, ChunkError> {
    Ok(match state {
        State::Size { value, digits } => match byte {
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                if digits == 16 {
                    return Err(ChunkError::SizeOverflow);
                }
                let digit = u64::from((byte as char).to_digit(16).unwrap_or(0));
                State::Size {
                    value: value << 4 | digit,
                    digits: digits + 1,
                }
            }
            _ if digits == 0 => return Err(ChunkError::BadSize),
            b'\r' => State::SizeLf { value },
            b';' | b' ' | b'\t' => State::Extension { value, len: 1 },
            _ => return Err(ChunkError::BadSize),
        },
        State::Extension { value, len } => match byte {
            b'\r' => State::SizeLf { value },
            // Visible text and whitespace only: a bare LF or a control byte here is how
            // parsers are made to disagree on where the chunk starts.
            b'\t' | b' '..=b'~' | 0x80..=0xff if len < MAX_EXTENSION => State::Extension {
                value,
                len: len + 1,
            },
            b'\t' | b' '..=b'~' | 0x80..=0xff => return Err(ChunkError::ExtensionTooLong),
            _ => return Err(ChunkError::BadSize),
        },
        State::SizeLf { value } => match byte {
            b'\n' if value == 0 => State::Trailer { line: 0, total: 0 },
            b'\n' => State::Data { left: value },
            _ => return Err(ChunkError::BadSize),
        },
        State::DataCr => match byte {
            b'\r' => State::DataLf,
            _ => return Err(ChunkError::BadDataEnd),
        },
        State::DataLf => match byte {
            b'\n' => State::Size {
                value: 0,
                digits: 0,
            },
            _ => return Err(ChunkError::BadDataEnd),
        },
        State::Trailer { line, total } => match byte {
            b'\r' => State::TrailerLf {
                empty: line == 0,
                total,
            },
            b'\n' => return Err(ChunkError::BadTrailers),
            _ if total >= MAX_TRAILERS => return Err(ChunkError::BadTrailers),
            _ => State::Trailer {
                line: line + 1,
                total: total + 1,
            },
        },
        State::TrailerLf { empty, total } => match byte {
            b'\n' if empty => State::Done,
            b'\n' => State::Trailer { line: 0, total },
            _ => return Err(ChunkError::BadTrailers),
        },
        State::Data { .. } | State::Done => state,
    })
}

/// The size line that starts a chunk of `len` bytes (`len` > 0).
pub fn chunk_header(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// What ends a chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";
/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; the body and what was left unconsumed.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut decoder = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Chunk::Data(data) => body.extend_from_slice(&data),
                Chunk::End => return Ok((body, buf.to_vec())),
                Chunk::Incomplete => {
                    if fed == input.len() {
                        return Err(ChunkError::BadSize);
                    }
                    let next = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn decodes_whatever_the_read_boundaries() {
        let input =
            b"5\r\nhello\r\n7;name=value\r\n, world\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n";
        for step in 1..input.len() {
            let (body, rest) = decode_in_steps(input, step).unwrap();
            assert_eq!(body, b"hello, world", "step {step}");
            // Whatever of the next request was fed is still there.
            assert!(b"GET / HTTP/1.1\r\n".starts_with(&rest), "step {step}");
        }
    }

    #[test]
    fn hex_sizes_in_either_case_and_whitespace_before_extensions() {
        let (body, _) =
            decode_in_steps(b"A \r\n0123456789\r\nb\t;x\r\nabcdefghijk\r\n0\r\n\r\n", 64).unwrap();
        assert_eq!(body, b"0123456789abcdefghijk");
    }

    #[test]
    fn refuses_what_parsers_disagree_on() {
        let bad: &[(&[u8], ChunkError)] = &[
            (b"zz\r\nabc\r\n0\r\n\r\n", ChunkError::BadSize),
            (b"\r\n", ChunkError::BadSize),
            (b"5\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b"5;a\nb\r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b"5\r\nhelloX\r\n0\r\n\r\n", ChunkError::BadDataEnd),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::BadDataEnd),
            (b"FFFFFFFFFFFFFFFFFFFF\r\nabc\r\n", ChunkError::SizeOverflow),
            (b"-1\r\n", ChunkError::BadSize),
            (b"0\r\nX: 1\n\r\n", ChunkError::BadTrailers),
            (b"0\r\n\n", ChunkError::BadTrailers),
        ];
        for (input, expected) in bad {
            assert_eq!(
                decode_in_steps(input, 3).unwrap_err(),
                *expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn extensions_and_trailers_are_bounded() {
        let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(MAX_EXTENSION));
        assert_eq!(
            decode_in_steps(long_ext.as_bytes(), 512).unwrap_err(),
            ChunkError::ExtensionTooLong
        );
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "t".repeat(MAX_TRAILERS));
        assert_eq!(
            decode_in_steps(long_trailer.as_bytes(), 512).unwrap_err(),
            ChunkError::BadTrailers
        );
    }

    #[test]
    fn sixteen_hex_digits_are_the_most() {
        let mut decoder = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"000000000000000a\r\n0123456789"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Chunk::Data(Bytes::from_static(b"0123456789"))
        );
        assert_eq!(decoder.decode(&mut buf).unwrap(), Chunk::Incomplete);
    }
}
