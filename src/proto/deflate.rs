//! permessage-deflate's codec (RFC 7692 §7.2): one message in, one message
//! out, with no state carried from one message to the next (both
//! directions negotiate no context takeover: `extensions.rs`). So a core
//! needs one [`Deflater`] and one [`Inflater`] for all its connections.
//!
//! The deflate itself is flate2 on zlib-rs (README, "Dependencies"); this
//! module adds the framing rules (sync flush, the `00 00 ff ff` tail), the
//! size limit *while* inflating, and UTF-8 checks on inflated text.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::close::ProtocolError;
use super::utf8::Utf8Validator;

/// What a sync flush ends with, and what the receiver appends (§7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// zlib's level: 1 is its fastest (measured in benches/deflate.rs: README,
/// "Dependencies").
const LEVEL: u32 = 1;

/// Compresses messages one at a time (server_no_context_takeover).
pub struct Deflater {
    /// One compressor per window size a peer asked for (9–15 bits, index
    /// `bits - 9`), made when first needed: browsers ask for none, so
    /// usually only the 15-bit one exists.
    by_bits: [Option<Box<Compress>>; 7],
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater::new()
    }
}

impl Deflater {
    /// A deflater holding no compressor yet.
    pub fn new() -> Deflater {
        Deflater {
            by_bits: Default::default(),
        }
    }

    /// Appends the compressed payload of a message of `payload` for a peer
    /// whose window is `2^window_bits` bytes (8–15) to `out`: deflate with a
    /// sync flush, its `00 00 ff ff` removed (§7.2.1). Returns false, with
    /// `out` as it was, when that would not be smaller than `payload`: the
    /// message then goes uncompressed.
    pub fn compress(&mut self, payload: &[u8], window_bits: u8, out: &mut Vec<u8>) -> bool {
        // In a message of n bytes no match reaches back n bytes or more, so
        // any compressor serves a window as large as the message; a smaller
        // window needs a compressor of that size (zlib has none below 9
        // bits: such messages go uncompressed).
        let bits = if payload.len() <= 1 << window_bits.min(15) {
            15
        } else if window_bits >= 9 {
            window_bits.min(15)
        } else {
            return false;
        };
        let c = self.by_bits[usize::from(bits - 9)].get_or_insert_with(|| {
            Box::new(Compress::new_with_window_bits(
                Compression::new(LEVEL),
                false,
                bits,
            ))
        });
        c.reset();
        // Not smaller unless it fits in payload.len() - 1 bytes plus the
        // tail: no more output room than that is given, so a message that
        // does not shrink costs one bounded pass.
        let Some(room) = (payload.len() + TAIL.len()).checked_sub(1) else {
            return false;
        };
        let start = out.len();
        out.resize(start + room, 0);
        let mut written = 0;
        let mut input = payload;
        let smaller = loop {
            let (in_before, out_before) = (c.total_in(), c.total_out());
            let status = c.compress(input, &mut out[start + written..], FlushCompress::Sync);
            input = &input[(c.total_in() - in_before) as usize..];
            written += (c.total_out() - out_before) as usize;
            let done = &out[start..start + written];
            if input.is_empty() && done.ends_with(&TAIL) && written < room {
                break true;
            }
            let stuck = c.total_out() == out_before && c.total_in() == in_before;
            if written >= room || stuck || !matches!(status, Ok(Status::Ok | Status::BufError)) {
                break false; // out of room (not smaller), or no progress
            }
        };
        if smaller {
            out.truncate(start + written - TAIL.len());
        } else {
            out.truncate(start);
        }
        smaller
    }
}

/// Inflates messages one at a time (client_no_context_takeover).
pub struct Inflater {
    inner: Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

impl Inflater {
    /// A raw-deflate decompressor with the full 32 KiB window (every
    /// `client_max_window_bits` a client may use fits in it).
    pub fn new() -> Inflater {
        Inflater {
            inner: Decompress::new(false),
        }
    }

    /// Inflates the payload of one compressed message (its frames'
    /// payloads joined) into `out`, which is cleared first: `00 00 ff ff` is
    /// appended to the input (§7.2.2). `out` never grows past `max + 1`
    /// bytes (more than `max` is [`ProtocolError::MessageTooBig`], found
    /// while inflating: a bomb stops at the limit). Text is validated as it
    /// is inflated and fails at its first invalid byte.
    pub fn inflate(
        &mut self,
        data: &[u8],
        text: bool,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        self.inner.reset(false);
        out.clear();
        let cap = max.saturating_add(1);
        let mut utf8 = Utf8Validator::new();
        let mut checked = 0;
        let mut input = data;
        let mut tail = false;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= cap {
                    return Err(ProtocolError::MessageTooBig);
                }
                // Doubling, from about what deflate usually achieves on text.
                let want = out.len().max(data.len().saturating_mul(4)).max(4096);
                out.reserve_exact(want.min(cap - out.len()));
            }
            let (in_before, out_before) = (self.inner.total_in(), out.len());
            let status = self
                .inner
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| ProtocolError::InvalidCompressedData)?;
            input = &input[(self.inner.total_in() - in_before) as usize..];
            if text {
                utf8.feed(&out[checked..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                checked = out.len();
            }
            if out.len() > max {
                return Err(ProtocolError::MessageTooBig);
            }
            if status == Status::StreamEnd {
                // A block with BFINAL set ended the stream (§7.2.3.4): the
                // sender's flush may leave one `00` behind it (§7.2.1 appends
                // an empty stored block, then removes its last 4 bytes), then
                // comes the tail appended here. Anything else is not a
                // message §7.2.1 makes.
                if !tail && !matches!(input, [] | [0x00]) {
                    return Err(ProtocolError::InvalidCompressedData);
                }
                break;
            }
            let progress = !input.is_empty() || out.len() > out_before;
            if input.is_empty() && !tail {
                input = &TAIL;
                tail = true;
            } else if input.is_empty() && out.len() < out.capacity() {
                break; // all input in, and room left: nothing more to come
            } else if !progress && out.len() < out.capacity() {
                return Err(ProtocolError::InvalidCompressedData);
            }
        }
        if text {
            utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an independent implementation (miniz_oxide) makes of `data`
    /// plus the tail.
    fn reference_inflate(data: &[u8]) -> Vec<u8> {
        let mut input = data.to_vec();
        // The tail, then an empty final block (so the stream ends).
        input.extend_from_slice(&TAIL);
        input.extend_from_slice(&[0x03, 0x00]);
        miniz_oxide::inflate::decompress_to_vec(&input).unwrap()
    }

    fn json(n: usize) -> Vec<u8> {
        let mut s = String::from("[");
        let mut i = 0;
        while s.len() < n {
            s.push_str(&format!(
                "{{\"id\":{i},\"user\":\"user{}\",\"text\":\"hello from the gateway\",\"ok\":true}},",
                i % 17
            ));
            i += 1;
        }
        s.truncate(n);
        s.into_bytes()
    }

    #[test]
    fn rfc_7692_hello_examples() {
        // §7.2.3.1: "Hello" compressed, as the RFC shows it.
        let mut inf = Inflater::new();
        let mut out = Vec::new();
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        inf.inflate(&hello, true, 100, &mut out).unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.3: an uncompressed (stored) block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        inf.inflate(&stored, true, 100, &mut out).unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.4: a block with BFINAL set.
        let last = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        inf.inflate(&last, true, 100, &mut out).unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.6: an empty message is one empty block (`00`).
        inf.inflate(&[0x00], true, 100, &mut out).unwrap();
        assert!(out.is_empty());
        // §7.2.3.2: "Hello" twice, as two messages without context
        // takeover, each on its own.
        inf.inflate(&hello, true, 100, &mut out).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn round_trips_at_every_window_size() {
        let mut d = Deflater::new();
        let mut inf = Inflater::new();
        for n in [1, 100, 256, 257, 1024, 16 * 1024, 200_000] {
            let msg = json(n);
            for bits in 8..=15 {
                let mut out = vec![0xAA]; // appended behind what is there
                let smaller = d.compress(&msg, bits, &mut out);
                if !smaller {
                    assert_eq!(out, [0xAA], "n={n} bits={bits}");
                    assert!(n < 64 || (bits == 8 && n > 256), "n={n} bits={bits}");
                    continue;
                }
                let wire = &out[1..];
                assert!(wire.len() < n, "n={n} bits={bits}");
                assert!(!wire.ends_with(&TAIL));
                assert_eq!(reference_inflate(wire), msg, "n={n} bits={bits}");
                let mut back = Vec::new();
                inf.inflate(wire, true, n, &mut back).unwrap();
                assert_eq!(back, msg, "n={n} bits={bits}");
            }
        }
    }

    #[test]
    fn incompressible_messages_stay_plain() {
        let mut x = 0x9e3779b97f4a7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut out = Vec::new();
        assert!(!Deflater::new().compress(&noise, 15, &mut out));
        assert!(out.is_empty());
        assert!(!Deflater::new().compress(b"", 15, &mut out));
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        // 1 MiB of zeros per ~1 KiB: a stream far larger than the limit.
        let zeros = vec![0u8; 4 << 20];
        let mut wire = Vec::new();
        assert!(Deflater::new().compress(&zeros, 15, &mut wire));
        assert!(wire.len() < 64 * 1024, "{}", wire.len());
        let mut out = Vec::new();
        let max = 1 << 20;
        assert_eq!(
            Inflater::new().inflate(&wire, false, max, &mut out),
            Err(ProtocolError::MessageTooBig)
        );
        assert!(out.capacity() <= max + 1, "{}", out.capacity());
        // Exactly the limit passes.
        let mut wire = Vec::new();
        assert!(Deflater::new().compress(&zeros[..max], 15, &mut wire));
        Inflater::new()
            .inflate(&wire, false, max, &mut out)
            .unwrap();
        assert_eq!(out.len(), max);
    }

    #[test]
    fn bad_data_and_bad_text() {
        let mut inf = Inflater::new();
        let mut out = Vec::new();
        // Block type 3 is reserved (RFC 1951 §3.2.3).
        assert_eq!(
            inf.inflate(&[0xff, 0xff, 0xff], false, 100, &mut out),
            Err(ProtocolError::InvalidCompressedData)
        );
        // Data behind a final block.
        let last_then_junk = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x01];
        assert_eq!(
            inf.inflate(&last_then_junk, false, 100, &mut out),
            Err(ProtocolError::InvalidCompressedData)
        );
        // Invalid UTF-8 inside compressed text; as binary it is fine.
        let mut wire = Vec::new();
        let mut bad = json(2000);
        bad[1000] = 0xff;
        assert!(Deflater::new().compress(&bad, 15, &mut wire));
        assert_eq!(
            inf.inflate(&wire, true, 1 << 20, &mut out),
            Err(ProtocolError::InvalidUtf8)
        );
        inf.inflate(&wire, false, 1 << 20, &mut out).unwrap();
        assert_eq!(out, bad);
        // A code point cut at the message's end.
        let mut wire = Vec::new();
        let mut cut = json(1000);
        cut.extend_from_slice(&[0xe2, 0x82]);
        assert!(Deflater::new().compress(&cut, 15, &mut wire));
        assert_eq!(
            inf.inflate(&wire, true, 1 << 20, &mut out),
            Err(ProtocolError::InvalidUtf8)
        );
        // The inflater is fine for the next message.
        inf.inflate(
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            true,
            10,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"Hello");
    }
}
