//! The read side of a WebSocket connection: bytes in, messages out.
//!
//! [`Receiver::step`] looks at the unconsumed bytes of the stream, which the
//! caller keeps contiguous. It either needs more bytes (consuming nothing) or
//! consumes exactly one frame and may return what that frame completed: a
//! message, a ping, a pong or a close. Payloads are unmasked in place, so an
//! unfragmented message is handed out as a slice of the caller's buffer with no
//! copy; only fragmented messages are assembled. While a frame is incomplete its
//! arrived bytes are already unmasked and UTF-8-checked, so invalid text fails
//! before the rest of the frame arrives, and the bytes must be kept as they are.
//!
//! With permessage-deflate negotiated (RFC 7692), a message whose first
//! frame has RSV1 set is compressed: its frames' payloads are gathered as
//! they are (bounded by the same limit) and handed out whole as
//! [`Event::Compressed`], for the core's inflater to inflate and check.

use super::close::{CloseCode, ProtocolError};
use super::frame::{FrameHeader, OpCode};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// What a complete frame produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text message, already validated as UTF-8.
    Text(&'a [u8]),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A ping; the caller answers with a pong carrying the same payload (§5.5.2).
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A valid close frame: its code (absent when the payload is empty) and reason.
    Close(Option<CloseCode>, &'a str),
    /// A complete compressed message (permessage-deflate): its frames'
    /// payloads joined, not yet inflated (so text is not yet validated).
    Compressed {
        /// A binary message (else text).
        binary: bool,
        /// The compressed payload, without the `00 00 ff ff` tail.
        data: &'a [u8],
    },
}

/// The result of one [`Receiver::step`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// The frame at the start of the buffer is incomplete. `frame_len` is its
    /// full length once its header has arrived, so the caller can size a buffer.
    NeedMore {
        /// Total bytes (header and payload) of the incomplete frame, if known.
        frame_len: Option<usize>,
    },
    /// One frame of `consumed` bytes was taken off the front of the buffer.
    Frame {
        /// Bytes to drop from the front of the buffer.
        consumed: usize,
        /// What the frame completed, if anything.
        event: Option<Event<'a>>,
    },
}

/// Per-connection read-side state.
#[derive(Debug)]
pub struct Receiver {
    max_message: usize,
    /// The data opcode of a fragmented message in progress.
    fragmented: Option<OpCode>,
    /// permessage-deflate was negotiated: RSV1 marks compressed messages.
    deflate: bool,
    /// The message in progress is compressed (its first frame had RSV1).
    compressed: bool,
    /// Payload of the fragmented message so far.
    assembled: Vec<u8>,
    /// True once `assembled` was handed out and must be dropped on the next step.
    delivered: bool,
    /// Running validation of the current text message.
    utf8: Utf8Validator,
    /// Payload bytes of the incomplete frame at the buffer start already unmasked.
    progress: usize,
}

impl Receiver {
    /// A receiver accepting messages of at most `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Receiver {
            max_message,
            fragmented: None,
            deflate: false,
            compressed: false,
            assembled: Vec::new(),
            delivered: false,
            utf8: Utf8Validator::new(),
            progress: 0,
        }
    }

    /// A receiver for a connection that negotiated permessage-deflate: RSV1
    /// on a message's first frame means compressed (RFC 7692 §6).
    pub fn with_deflate(max_message: usize) -> Self {
        Receiver {
            deflate: true,
            ..Receiver::new(max_message)
        }
    }

    /// Whether the receiver holds no partial message (nothing to lose).
    pub fn is_idle(&self) -> bool {
        self.fragmented.is_none() && self.progress == 0
    }

    /// Parses the frame at the start of `buf`. See the module docs.
    // Long by design: one state machine step, RFC 6455 §5 in the order a
    // frame is read (header, limits, control rules, unmask, UTF-8).
    pub fn step<'a>(&'a mut self, buf: &'a mut [u8]) -> Result<Step<'a>, ProtocolError> {
        if self.delivered {
            // Free the assembled message: idle connections hold no buffers.
            self.assembled = Vec::new();
            self.delivered = false;
        }
        let Some(h) = FrameHeader::parse_with(buf, self.deflate)? else {
            return Ok(Step::NeedMore { frame_len: None });
        };
        let text = match h.opcode {
            OpCode::Continuation => match self.fragmented {
                None => return Err(ProtocolError::UnexpectedContinuation),
                Some(op) => op == OpCode::Text,
            },
            OpCode::Text | OpCode::Binary if self.fragmented.is_some() => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            op => op == OpCode::Text,
        };
        // RFC 7692 §6.1: the bit is set on a message's first frame only.
        let compressed = match h.opcode {
            _ if !h.rsv1 => h.opcode == OpCode::Continuation && self.compressed,
            OpCode::Text | OpCode::Binary => true,
            OpCode::Continuation => return Err(ProtocolError::CompressedContinuation),
            _ => return Err(ProtocolError::CompressedControlFrame),
        };
        // Compressed text is validated once inflated, not as it arrives.
        let check_utf8 = text && !compressed;
        if !h.opcode.is_control() {
            // Fail on size from the header alone, before any payload is buffered.
            let before = if h.opcode == OpCode::Continuation {
                self.assembled.len()
            } else {
                0
            };
            if h.payload_len > (self.max_message - before) as u64 {
                return Err(ProtocolError::MessageTooBig);
            }
        }
        // Bounded by max_message or 125 above, so it fits in usize.
        let payload_len = h.payload_len as usize;
        let frame_len = h.header_len + payload_len;
        let arrived = (buf.len() - h.header_len).min(payload_len);
        let payload = &mut buf[h.header_len..h.header_len + arrived];

        if self.progress == 0 && h.opcode == OpCode::Text {
            self.utf8.reset();
        }
        if arrived > self.progress {
            let fresh = &mut payload[self.progress..];
            apply_mask(fresh, h.mask, self.progress);
            if check_utf8 {
                self.utf8
                    .feed(fresh)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            self.progress = arrived;
        }
        if arrived < payload_len {
            return Ok(Step::NeedMore {
                frame_len: Some(frame_len),
            });
        }
        self.progress = 0;

        let payload: &'a [u8] = payload;
        let event = match h.opcode {
            OpCode::Ping => Some(Event::Ping(payload)),
            OpCode::Pong => Some(Event::Pong(payload)),
            OpCode::Close => Some(parse_close(payload)?),
            OpCode::Text | OpCode::Binary if h.fin && compressed => Some(Event::Compressed {
                binary: !text,
                data: payload,
            }),
            OpCode::Text | OpCode::Binary if h.fin => {
                if text {
                    self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                    Some(Event::Text(payload))
                } else {
                    Some(Event::Binary(payload))
                }
            }
            OpCode::Text | OpCode::Binary => {
                self.fragmented = Some(h.opcode);
                self.compressed = compressed;
                self.assembled.extend_from_slice(payload);
                None
            }
            OpCode::Continuation => {
                self.assembled.extend_from_slice(payload);
                if h.fin {
                    self.fragmented = None;
                    self.delivered = true;
                    if compressed {
                        self.compressed = false;
                        Some(Event::Compressed {
                            binary: !text,
                            data: &self.assembled,
                        })
                    } else if text {
                        self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                        Some(Event::Text(&self.assembled))
                    } else {
                        Some(Event::Binary(&self.assembled))
                    }
                } else {
                    None
                }
            }
        };
        Ok(Step::Frame {
            consumed: frame_len,
            event,
        })
    }
}

/// §5.5.1: an optional 2-byte code, then an optional UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Event<'_>, ProtocolError> {
    match payload.len() {
        0 => Ok(Event::Close(None, "")),
        1 => Err(ProtocolError::CloseFrameOneByte),
        _ => {
            let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
            if !code.is_valid_on_wire() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason =
                std::str::from_utf8(&payload[2..]).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Event::Close(Some(code), reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mask::apply_mask;

    /// An owned copy of an event, so tests can keep it past the buffer.
    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Owned {
        Text(Vec<u8>),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, String),
        Compressed(bool, Vec<u8>),
    }

    fn own(e: Event<'_>) -> Owned {
        match e {
            Event::Text(p) => Owned::Text(p.to_vec()),
            Event::Binary(p) => Owned::Binary(p.to_vec()),
            Event::Ping(p) => Owned::Ping(p.to_vec()),
            Event::Pong(p) => Owned::Pong(p.to_vec()),
            Event::Close(c, r) => Owned::Close(c.map(|c| c.0), r.to_string()),
            Event::Compressed { binary, data } => Owned::Compressed(binary, data.to_vec()),
        }
    }

    /// A masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        client_frame_rsv(fin, false, opcode, payload)
    }

    /// A masked client frame, RSV1 set if `rsv1`.
    fn client_frame_rsv(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0xa1, 0xb2, 0xc3, 0xd4];
        let mut out = vec![(fin as u8) << 7 | (rsv1 as u8) << 6 | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], key, 0);
        out
    }

    /// Feeds `chunks` the way a connection does and collects the events.
    fn drive(rx: &mut Receiver, chunks: &[&[u8]]) -> Result<Vec<Owned>, ProtocolError> {
        let mut pending = Vec::new();
        let mut events = Vec::new();
        for chunk in chunks {
            pending.extend_from_slice(chunk);
            loop {
                match rx.step(&mut pending)? {
                    Step::NeedMore { .. } => break,
                    Step::Frame { consumed, event } => {
                        if let Some(e) = event {
                            events.push(own(e));
                        }
                        pending.drain(..consumed);
                    }
                }
            }
        }
        Ok(events)
    }

    fn sample_stream() -> (Vec<u8>, Vec<Owned>) {
        let mut s = Vec::new();
        // RFC 6455 §5.7 masked "Hello".
        s.extend_from_slice(&[
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ]);
        // Fragmented text "Hel" + "lo €" with a ping in between (§5.4 allows it).
        s.extend(client_frame(false, 0x1, b"Hel"));
        s.extend(client_frame(true, 0x9, b"ping!"));
        s.extend(client_frame(false, 0x0, b"lo \xe2"));
        s.extend(client_frame(true, 0x0, b"\x82\xac"));
        s.extend(client_frame(true, 0x2, &[7u8; 300]));
        s.extend(client_frame(true, 0xA, b""));
        s.extend(client_frame(true, 0x8, b"\x03\xe8bye"));
        let expected = vec![
            Owned::Text(b"Hello".to_vec()),
            Owned::Ping(b"ping!".to_vec()),
            Owned::Text("Hello €".as_bytes().to_vec()),
            Owned::Binary(vec![7u8; 300]),
            Owned::Pong(vec![]),
            Owned::Close(Some(1000), "bye".into()),
        ];
        (s, expected)
    }

    #[test]
    fn whole_stream_at_once() {
        let (s, expected) = sample_stream();
        assert_eq!(drive(&mut Receiver::new(1 << 20), &[&s]).unwrap(), expected);
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let (s, expected) = sample_stream();
        for split in 0..=s.len() {
            let got = drive(&mut Receiver::new(1 << 20), &[&s[..split], &s[split..]]).unwrap();
            assert_eq!(got, expected, "split={split}");
        }
    }

    #[test]
    fn every_pair_of_split_points_gives_the_same_events() {
        let (s, expected) = sample_stream();
        for a in 0..=s.len() {
            for b in a..=s.len() {
                let got =
                    drive(&mut Receiver::new(1 << 20), &[&s[..a], &s[a..b], &s[b..]]).unwrap();
                assert_eq!(got, expected, "a={a} b={b}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let (s, expected) = sample_stream();
        let chunks: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(
            drive(&mut Receiver::new(1 << 20), &chunks).unwrap(),
            expected
        );
    }

    #[test]
    fn lengths_7_16_64_bit() {
        for len in [0, 125, 126, 65535, 65536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let f = client_frame(true, 0x2, &payload);
            let got = drive(&mut Receiver::new(1 << 20), &[&f]).unwrap();
            assert_eq!(got, vec![Owned::Binary(payload)], "len={len}");
        }
    }

    #[test]
    fn incomplete_frame_reports_its_length() {
        let f = client_frame(true, 0x2, &[1u8; 1000]);
        let mut buf = f[..10].to_vec();
        let mut rx = Receiver::new(1 << 20);
        assert_eq!(
            rx.step(&mut buf).unwrap(),
            Step::NeedMore {
                frame_len: Some(1008)
            }
        );
        let mut buf = f[..1].to_vec();
        assert_eq!(
            rx.step(&mut buf).unwrap(),
            Step::NeedMore { frame_len: None }
        );
    }

    #[test]
    fn protocol_errors_with_their_close_codes() {
        use ProtocolError::*;
        let too_big = client_frame(true, 0x2, &[0u8; 101]);
        let cases: Vec<(Vec<u8>, ProtocolError, u16)> = vec![
            (vec![0x81, 0x00], UnmaskedFrameFromClient, 1002),
            (client_frame(true, 0x0, b"x"), UnexpectedContinuation, 1002),
            (
                [
                    client_frame(false, 0x1, b"a"),
                    client_frame(true, 0x1, b"b"),
                ]
                .concat(),
                ExpectedContinuation,
                1002,
            ),
            (
                client_frame(true, 0x1, b"\xce\xba\xed\xa0\x80"),
                InvalidUtf8,
                1007,
            ),
            (
                [
                    client_frame(false, 0x1, b"a"),
                    client_frame(true, 0x0, b"\xe2\x82"),
                ]
                .concat(),
                InvalidUtf8,
                1007,
            ),
            (client_frame(true, 0x8, b"\x03"), CloseFrameOneByte, 1002),
            (
                client_frame(true, 0x8, &1005u16.to_be_bytes()),
                InvalidCloseCode(1005),
                1002,
            ),
            (
                client_frame(true, 0x8, &999u16.to_be_bytes()),
                InvalidCloseCode(999),
                1002,
            ),
            (client_frame(true, 0x8, b"\x03\xe8\xff"), InvalidUtf8, 1007),
            (too_big, MessageTooBig, 1009),
            (
                [
                    client_frame(false, 0x2, &[0u8; 60]),
                    client_frame(true, 0x0, &[0u8; 41]),
                ]
                .concat(),
                MessageTooBig,
                1009,
            ),
            (
                client_frame(true, 0x9, &[0u8; 126]),
                ControlFrameTooLong,
                1002,
            ),
            (client_frame(false, 0x9, b""), FragmentedControlFrame, 1002),
            (client_frame(true, 0x3, b""), ReservedOpcode(3), 1002),
            (client_frame(true, 0xB, b""), ReservedOpcode(0xB), 1002),
            (
                [&[0x91u8][..], &client_frame(true, 0x1, b"")[1..]].concat(),
                ReservedBitsSet,
                1002,
            ),
        ];
        for (bytes, err, code) in cases {
            let got = drive(&mut Receiver::new(100), &[&bytes]);
            assert_eq!(got, Err(err), "{bytes:?}");
            assert_eq!(err.close_code().0, code);
        }
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_completes() {
        // The 6.4.* pattern: the invalid bytes arrive, the rest of the frame has not.
        let mut payload = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5".to_vec();
        payload.extend_from_slice(b"\xf4\x90\x80\x80");
        payload.extend_from_slice(&[b'a'; 1000]);
        let f = client_frame(true, 0x1, &payload);
        let mut head = f[..8 + 13].to_vec(); // 8-byte header (16-bit length), 13 payload bytes
        assert_eq!(
            Receiver::new(1 << 20).step(&mut head),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    /// RFC 7692 §7.2.3.1's compressed "Hello".
    const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    fn compressed_stream() -> (Vec<u8>, Vec<Owned>) {
        let mut s = Vec::new();
        // One frame, compressed; then the same split over three frames with
        // a ping in between (§7.2.3.1, §7.2.3.2 of RFC 7692).
        s.extend(client_frame_rsv(true, true, 0x1, &HELLO));
        s.extend(client_frame_rsv(false, true, 0x1, &HELLO[..3]));
        s.extend(client_frame(true, 0x9, b"p"));
        s.extend(client_frame(false, 0x0, &HELLO[3..5]));
        s.extend(client_frame(true, 0x0, &HELLO[5..]));
        // An uncompressed message on the same connection, and compressed
        // binary whose bytes are not UTF-8 (checked only once inflated).
        s.extend(client_frame(true, 0x1, b"plain"));
        s.extend(client_frame_rsv(true, true, 0x2, &[0xff, 0xfe]));
        s.extend(client_frame_rsv(true, true, 0x1, &[0xff, 0xfe]));
        let expected = vec![
            Owned::Compressed(false, HELLO.to_vec()),
            Owned::Ping(b"p".to_vec()),
            Owned::Compressed(false, HELLO.to_vec()),
            Owned::Text(b"plain".to_vec()),
            Owned::Compressed(true, vec![0xff, 0xfe]),
            Owned::Compressed(false, vec![0xff, 0xfe]),
        ];
        (s, expected)
    }

    #[test]
    fn compressed_messages_at_every_split_point() {
        let (s, expected) = compressed_stream();
        for split in 0..=s.len() {
            let mut rx = Receiver::with_deflate(1 << 20);
            let got = drive(&mut rx, &[&s[..split], &s[split..]]).unwrap();
            assert_eq!(got, expected, "split={split}");
            assert!(rx.is_idle());
        }
        let chunks: Vec<&[u8]> = s.chunks(1).collect();
        let got = drive(&mut Receiver::with_deflate(1 << 20), &chunks).unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn rsv1_rules() {
        use ProtocolError::*;
        let cases: Vec<(Vec<u8>, bool, ProtocolError)> = vec![
            // Not negotiated: RSV1 is reserved.
            (
                client_frame_rsv(true, true, 0x1, &HELLO),
                false,
                ReservedBitsSet,
            ),
            // RFC 7692 §6.1: never on control frames...
            (
                client_frame_rsv(true, true, 0x9, b""),
                true,
                CompressedControlFrame,
            ),
            (
                client_frame_rsv(true, true, 0x8, b""),
                true,
                CompressedControlFrame,
            ),
            // ...nor on continuation frames, compressed message or not.
            (
                [
                    client_frame_rsv(false, true, 0x1, &HELLO[..3]),
                    client_frame_rsv(true, true, 0x0, &HELLO[3..]),
                ]
                .concat(),
                true,
                CompressedContinuation,
            ),
            (
                [
                    client_frame(false, 0x2, b"a"),
                    client_frame_rsv(true, true, 0x0, b"b"),
                ]
                .concat(),
                true,
                CompressedContinuation,
            ),
            // The compressed bytes count against the limit too.
            (
                client_frame_rsv(true, true, 0x2, &[0u8; 101]),
                true,
                MessageTooBig,
            ),
            (
                [
                    client_frame_rsv(false, true, 0x2, &[0u8; 60]),
                    client_frame(true, 0x0, &[0u8; 41]),
                ]
                .concat(),
                true,
                MessageTooBig,
            ),
        ];
        for (bytes, deflate, err) in cases {
            let mut rx = if deflate {
                Receiver::with_deflate(100)
            } else {
                Receiver::new(100)
            };
            assert_eq!(drive(&mut rx, &[&bytes]), Err(err), "{bytes:?}");
        }
        assert_eq!(CompressedControlFrame.close_code().0, 1002);
        assert_eq!(CompressedContinuation.close_code().0, 1002);
        assert_eq!(InvalidCompressedData.close_code().0, 1007);
    }

    #[test]
    fn fragmented_message_buffer_is_freed_after_delivery() {
        let mut rx = Receiver::new(1 << 20);
        let s = [
            client_frame(false, 0x2, &[1u8; 5000]),
            client_frame(true, 0x0, &[2u8; 5000]),
        ]
        .concat();
        assert_eq!(drive(&mut rx, &[&s]).unwrap().len(), 1);
        let mut empty = Vec::new();
        assert_eq!(
            rx.step(&mut empty).unwrap(),
            Step::NeedMore { frame_len: None }
        );
        assert_eq!(rx.assembled.capacity(), 0);
        assert!(rx.is_idle());
    }
}
