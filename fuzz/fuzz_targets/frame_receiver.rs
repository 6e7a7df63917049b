//! The read-side state machine (`proto::receiver::Receiver`).
//!
//! Input: `[config][split seed][body]`.
//! - `config` bit 0: body is raw wire bytes (0) or a frame recipe (1, below);
//!   bits 1-3 pick `max_message` from `LIMITS`.
//! - `split seed`: low nibble bounds the chunk size (1 << n, n <= 12), the high
//!   nibble seeds the chunk sizes.
//! - recipe: per frame `[b0][flags][key x4][len]` then up to `len` payload
//!   bytes; `b0` is the wire's first byte (FIN, RSV, opcode); `flags & 7 == 7`
//!   leaves the frame unmasked, `flags & 8` makes the length `len * 131`,
//!   `(flags >> 4) & 3` forces a 16-bit (1) or 64-bit (2) length field.
//!   The harness masks the payload itself (byte-wise reference) and predicts
//!   the outcome with a small model of RFC 6455.
//!
//! Asserts:
//! - the same bytes fed at once, in fuzz-chosen chunks and byte by byte give
//!   the same frames (consumed length and event each), the same error, and the
//!   same leftover;
//! - a step consumes at least one byte and never more than it was given; a
//!   `NeedMore` length hint is larger than what is there and is exactly what
//!   the frame consumes once complete;
//! - recipe mode: events and error equal the model's (payloads unmasked
//!   correctly, fragments assembled, limits and UTF-8 enforced at the right frame).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::proto::close::ProtocolError;
use wsgate::proto::receiver::{Event, Receiver, Step};

const LIMITS: [usize; 8] = [0, 1, 2, 125, 126, 1000, 1 << 16, usize::MAX];
/// Recipe streams stop growing past this (keeps one run fast).
const MAX_STREAM: usize = 256 * 1024;

#[derive(Debug, PartialEq, Eq, Clone)]
enum Owned {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

fn own(e: Event<'_>) -> Owned {
    match e {
        Event::Text(p) => Owned::Text(p.to_vec()),
        Event::Binary(p) => Owned::Binary(p.to_vec()),
        Event::Ping(p) => Owned::Ping(p.to_vec()),
        Event::Pong(p) => Owned::Pong(p.to_vec()),
        Event::Close(c, r) => Owned::Close(c.map(|c| c.0), r.to_string()),
        // `Receiver::new` agreed no permessage-deflate: RSV1 is reserved.
        Event::Compressed { .. } => panic!("a compressed message without an agreement"),
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Each complete frame: bytes consumed and what it produced.
    frames: Vec<(usize, Option<Owned>)>,
    /// The error, or the unconsumed bytes, the last length hint and `is_idle`.
    end: Result<(usize, Option<usize>, bool), ProtocolError>,
}

impl Outcome {
    fn events(&self) -> Vec<Owned> {
        self.frames.iter().filter_map(|(_, e)| e.clone()).collect()
    }
}

/// Feeds `stream` in chunks of the given sizes, the way a connection does:
/// unconsumed bytes stay in place (already unmasked) and new bytes are appended.
fn drive(max: usize, stream: &[u8], mut chunk: impl FnMut() -> usize) -> Outcome {
    let mut rx = Receiver::new(max);
    let mut pending = Vec::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    let mut hint = None;
    loop {
        let n = chunk().clamp(1, stream.len() - fed);
        pending.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            let have = pending.len();
            match rx.step(&mut pending) {
                Err(e) => {
                    return Outcome {
                        frames,
                        end: Err(e),
                    }
                }
                Ok(Step::NeedMore { frame_len }) => {
                    if let Some(len) = frame_len {
                        assert!(len > have, "hint {len} <= {have} buffered");
                        assert!(hint.is_none_or(|h| h == len), "hint changed");
                    }
                    hint = frame_len.or(hint);
                    break;
                }
                Ok(Step::Frame { consumed, event }) => {
                    assert!(consumed > 0 && consumed <= have, "{consumed} of {have}");
                    if let Some(h) = hint.take() {
                        assert_eq!(h, consumed, "hint vs consumed");
                    }
                    frames.push((consumed, event.map(own)));
                    pending.drain(..consumed);
                }
            }
        }
        if fed == stream.len() {
            return Outcome {
                frames,
                end: Ok((pending.len(), hint, rx.is_idle())),
            };
        }
    }
}

/// Chunk sizes for `drive` from the split seed.
fn chunker(seed: u8, len: usize) -> impl FnMut() -> usize {
    let bound = 1usize << (seed & 0x0F).min(12);
    let mut x = (seed as u64 >> 4) << 32 | len as u64 | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        1 + (x as usize % bound)
    }
}

/// Builds a stream from a recipe and predicts its outcome (events, error).
fn recipe(mut body: &[u8], max: usize) -> (Vec<u8>, Vec<Owned>, Option<ProtocolError>, bool) {
    let mut wire = Vec::new();
    let mut events = Vec::new();
    let mut error = None;
    // The data message in progress: its opcode and payload so far.
    let mut message: Option<(u8, Vec<u8>)> = None;
    while body.len() >= 7 && wire.len() < MAX_STREAM {
        let (b0, flags, key, len) = (
            body[0],
            body[1],
            [body[2], body[3], body[4], body[5]],
            body[6],
        );
        body = &body[7..];
        let len = if flags & 8 != 0 {
            len as usize * 131
        } else {
            len as usize
        };
        let take = len.min(body.len());
        let payload: Vec<u8> = if take == 0 {
            vec![0; len]
        } else {
            body[..take].iter().copied().cycle().take(len).collect()
        };
        body = &body[take..];
        let masked = flags & 7 != 7;
        wire.push(b0);
        let mask_bit = if masked { 0x80 } else { 0 };
        match (flags >> 4) & 3 {
            1 if len <= 0xFFFF => {
                wire.push(mask_bit | 126);
                wire.extend_from_slice(&(len as u16).to_be_bytes());
            }
            2 => {
                wire.push(mask_bit | 127);
                wire.extend_from_slice(&(len as u64).to_be_bytes());
            }
            _ if len < 126 => wire.push(mask_bit | len as u8),
            _ if len <= 0xFFFF => {
                wire.push(mask_bit | 126);
                wire.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                wire.push(mask_bit | 127);
                wire.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            wire.extend_from_slice(&key);
            wire.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            wire.extend_from_slice(&payload);
        }
        if error.is_some() {
            continue; // the receiver stops at the first error; more bytes change nothing
        }
        error = model_frame(b0, masked, &payload, max, &mut message, &mut events).err();
    }
    let idle = message.is_none();
    (wire, events, error, idle)
}

/// RFC 6455 for one complete frame, in the order the receiver checks.
fn model_frame(
    b0: u8,
    masked: bool,
    payload: &[u8],
    max: usize,
    message: &mut Option<(u8, Vec<u8>)>,
    events: &mut Vec<Owned>,
) -> Result<(), ProtocolError> {
    use ProtocolError::*;
    let (fin, op) = (b0 & 0x80 != 0, b0 & 0x0F);
    if b0 & 0x70 != 0 {
        return Err(ReservedBitsSet);
    }
    if !matches!(op, 0 | 1 | 2 | 8 | 9 | 10) {
        return Err(ReservedOpcode(op));
    }
    if !masked {
        return Err(UnmaskedFrameFromClient);
    }
    let control = op >= 8;
    if control && payload.len() > 125 {
        return Err(ControlFrameTooLong);
    }
    if control && !fin {
        return Err(FragmentedControlFrame);
    }
    match op {
        9 => events.push(Owned::Ping(payload.to_vec())),
        10 => events.push(Owned::Pong(payload.to_vec())),
        8 => match payload.len() {
            0 => events.push(Owned::Close(None, String::new())),
            1 => return Err(CloseFrameOneByte),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                    return Err(InvalidCloseCode(code));
                }
                let reason = std::str::from_utf8(&payload[2..]).map_err(|_| InvalidUtf8)?;
                events.push(Owned::Close(Some(code), reason.to_string()));
            }
        },
        _ => {
            let (kind, mut so_far) = match (op, message.take()) {
                (0, None) => return Err(UnexpectedContinuation),
                (0, Some(m)) => m,
                (_, Some(_)) => return Err(ExpectedContinuation),
                (op, None) => (op, Vec::new()),
            };
            if payload.len() > max - so_far.len() {
                return Err(MessageTooBig);
            }
            so_far.extend_from_slice(payload);
            if kind == 1 {
                match std::str::from_utf8(&so_far) {
                    Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                    Err(_) if fin => return Err(InvalidUtf8),
                    _ => {}
                }
            }
            if fin {
                events.push(if kind == 1 {
                    Owned::Text(so_far)
                } else {
                    Owned::Binary(so_far)
                });
            } else {
                *message = Some((kind, so_far));
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let [config, split, body @ ..] = data else {
        return;
    };
    let max = LIMITS[(config >> 1 & 7) as usize];
    let built;
    let (stream, model) = if config & 1 == 1 {
        let (wire, events, error, idle) = recipe(body, max);
        built = wire;
        (&built[..], Some((events, error, idle)))
    } else {
        (body, None)
    };
    if stream.is_empty() {
        return;
    }
    let whole = drive(max, stream, || usize::MAX);
    let chunked = drive(max, stream, chunker(*split, stream.len()));
    assert_eq!(whole, chunked, "whole vs chunked");
    if stream.len() <= 64 * 1024 {
        assert_eq!(whole, drive(max, stream, || 1), "whole vs byte by byte");
    }
    if let Some((events, error, idle)) = model {
        assert_eq!(whole.events(), events, "events vs model");
        match (whole.end, error) {
            (Err(got), Some(want)) => assert_eq!(got, want),
            (Ok((left, _, rx_idle)), None) => {
                assert_eq!(left, 0, "recipe frames are complete");
                assert_eq!(rx_idle, idle, "idle vs model");
            }
            (got, want) => panic!("receiver {got:?}, model {want:?}"),
        }
    }
});
