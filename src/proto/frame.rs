//! The frame header wire format (RFC 6455 §5.2): parsing client frames and
//! writing server frames. No state lives here; `receiver.rs` owns the rules
//! that span frames.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! ```

use super::close::ProtocolError;

/// Frame opcodes defined by RFC 6455 §5.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: a UTF-8 text message.
    Text,
    /// 0x2: a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Result<OpCode, ProtocolError> {
        Ok(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    /// The 4-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong are control frames (§5.5).
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A parsed client frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this frame ends its message.
    pub fin: bool,
    /// RSV1: with permessage-deflate, the first frame of a compressed
    /// message (RFC 7692 §6); always false from [`FrameHeader::parse`].
    pub rsv1: bool,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// The masking key (always present: unmasked client frames are rejected).
    pub mask: [u8; 4],
    /// Payload length in bytes.
    pub payload_len: u64,
    /// Header length in bytes (2 to 14).
    pub header_len: usize,
}

/// The longest possible header: 2 + 8 (64-bit length) + 4 (mask).
pub const MAX_HEADER_LEN: usize = 14;

impl FrameHeader {
    /// Parses a client frame header from the start of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed; nothing is consumed.
    pub fn parse(buf: &[u8]) -> Result<Option<FrameHeader>, ProtocolError> {
        FrameHeader::parse_with(buf, false)
    }

    /// As [`FrameHeader::parse`]; with `rsv1` (permessage-deflate was
    /// negotiated) RSV1 may be set and is reported: which frames may carry
    /// it is the receiver's rule (it spans frames).
    pub fn parse_with(buf: &[u8], rsv1: bool) -> Result<Option<FrameHeader>, ProtocolError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let fin = b0 & 0x80 != 0;
        // §5.2: RSV1-3 MUST be 0 unless an extension defines them; only
        // permessage-deflate's RSV1 is ever negotiated.
        let allowed = if rsv1 { 0x40 } else { 0 };
        if b0 & 0x70 & !allowed != 0 {
            return Err(ProtocolError::ReservedBitsSet);
        }
        let opcode = OpCode::from_bits(b0 & 0x0F)?;
        // §5.1: the server MUST close the connection on an unmasked frame.
        if b1 & 0x80 == 0 {
            return Err(ProtocolError::UnmaskedFrameFromClient);
        }
        let (payload_len, len_bytes) = match b1 & 0x7F {
            126 => {
                let Some(b) = buf.get(2..4) else {
                    return Ok(None);
                };
                (u16::from_be_bytes([b[0], b[1]]) as u64, 2)
            }
            127 => {
                let Some(b) = buf.get(2..10) else {
                    return Ok(None);
                };
                let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                // §5.2: the most significant bit of a 64-bit length MUST be 0.
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthOverflow);
                }
                (len, 8)
            }
            n => (n as u64, 0),
        };
        if opcode.is_control() {
            // §5.5: control frames are at most 125 bytes and never fragmented.
            if payload_len > 125 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
        }
        let mask_at = 2 + len_bytes;
        let Some(m) = buf.get(mask_at..mask_at + 4) else {
            return Ok(None);
        };
        Ok(Some(FrameHeader {
            fin,
            rsv1: b0 & 0x40 != 0,
            opcode,
            mask: [m[0], m[1], m[2], m[3]],
            payload_len,
            header_len: mask_at + 4,
        }))
    }
}

/// Writes an unmasked, unfragmented server frame header into `out`; returns its length.
pub fn write_header(out: &mut [u8; 10], opcode: OpCode, payload_len: usize) -> usize {
    out[0] = 0x80 | opcode.bits();
    if payload_len < 126 {
        out[1] = payload_len as u8;
        2
    } else if payload_len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// Appends a complete server frame (header and payload) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let mut header = [0u8; 10];
    let n = write_header(&mut header, opcode, payload.len());
    out.reserve(n + payload.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
}

/// Appends a complete server frame of a compressed message: RSV1 set
/// (RFC 7692 §6), `payload` already deflated.
pub fn encode_compressed_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let mut header = [0u8; 10];
    let n = write_header(&mut header, opcode, payload.len());
    header[0] |= 0x40;
    out.reserve(n + payload.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
}

/// The opcode and payload of a complete, unfragmented, uncompressed data
/// frame as [`encode_frame`] writes it (`None` for anything else: control
/// frames, compressed ones, or bytes that are not one whole frame).
pub fn data_frame_payload(frame: &[u8]) -> Option<(OpCode, &[u8])> {
    let (&b0, rest) = frame.split_first()?;
    let opcode = match b0 {
        0x81 => OpCode::Text,
        0x82 => OpCode::Binary,
        _ => return None,
    };
    let (&b1, rest) = rest.split_first()?;
    let (len, payload) = match b1 {
        126 => (
            u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize,
            &rest[2..],
        ),
        127 => {
            let len = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
            (usize::try_from(len).ok()?, &rest[8..])
        }
        n if n < 126 => (n as usize, rest),
        _ => return None,
    };
    (payload.len() == len).then_some((opcode, payload))
}

/// Appends a close frame with `code` and a reason (truncated to fit 125 bytes
/// on a character boundary).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; 125];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode_frame(out, OpCode::Close, &payload[..2 + end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_masked_hello_header() {
        // RFC 6455 §5.7: "A single-frame masked text message".
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let h = FrameHeader::parse(&frame).unwrap().unwrap();
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                rsv1: false,
                opcode: OpCode::Text,
                mask: [0x37, 0xfa, 0x21, 0x3d],
                payload_len: 5,
                header_len: 6
            }
        );
    }

    #[test]
    fn rfc_unmasked_frames_encode_byte_exact() {
        // RFC 6455 §5.7 examples, as a server sends them.
        let mut out = Vec::new();
        encode_frame(&mut out, OpCode::Text, b"Hello");
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        out.clear();
        encode_frame(&mut out, OpCode::Pong, b"Hello");
        assert_eq!(out, [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        out.clear();
        encode_frame(&mut out, OpCode::Binary, &[0u8; 256]);
        assert_eq!(&out[..4], [0x82, 0x7E, 0x01, 0x00]);
        out.clear();
        encode_frame(&mut out, OpCode::Binary, &vec![0u8; 65536]);
        assert_eq!(&out[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn length_encodings_parse() {
        let h = FrameHeader::parse(&[0x82, 0xFE, 0x01, 0x00, 1, 2, 3, 4])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, h.header_len), (256, 8));
        let h = FrameHeader::parse(&[0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, h.header_len), (65536, 14));
    }

    #[test]
    fn every_prefix_of_a_header_needs_more() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for end in 0..full.len() {
            assert_eq!(FrameHeader::parse(&full[..end]), Ok(None), "end={end}");
        }
    }

    #[test]
    fn header_rule_violations() {
        use ProtocolError::*;
        let cases: [(&[u8], ProtocolError); 6] = [
            (&[0x81, 0x05], UnmaskedFrameFromClient),
            (&[0xC1, 0x85], ReservedBitsSet),
            (&[0x83, 0x80], ReservedOpcode(3)),
            (&[0x89, 0xFE, 0x00, 0x7E], ControlFrameTooLong),
            (&[0x09, 0x80], FragmentedControlFrame),
            (&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0], LengthOverflow),
        ];
        for (bytes, err) in cases {
            assert_eq!(FrameHeader::parse(bytes), Err(err), "{bytes:?}");
        }
    }

    #[test]
    fn rsv1_only_where_permessage_deflate_was_negotiated() {
        // RFC 7692 §7.2.3.1: "Hello" compressed, in one masked frame.
        let frame = [0xc1, 0x87, 1, 2, 3, 4];
        assert_eq!(
            FrameHeader::parse(&frame),
            Err(ProtocolError::ReservedBitsSet)
        );
        let h = FrameHeader::parse_with(&frame, true).unwrap().unwrap();
        assert!(h.rsv1 && h.fin && h.opcode == OpCode::Text);
        // RSV2 and RSV3 stay reserved.
        for b0 in [0xa1, 0x91, 0xe1] {
            assert_eq!(
                FrameHeader::parse_with(&[b0, 0x80], true),
                Err(ProtocolError::ReservedBitsSet),
                "{b0:#x}"
            );
        }
    }

    #[test]
    fn compressed_frames_and_payloads_of_plain_ones() {
        let mut out = Vec::new();
        encode_compressed_frame(
            &mut out,
            OpCode::Text,
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        );
        // RFC 7692 §7.2.3.1, as a server sends it.
        assert_eq!(out, [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        for len in [0, 5, 125, 126, 65535, 65536] {
            for opcode in [OpCode::Text, OpCode::Binary] {
                let payload = vec![7u8; len];
                let mut frame = Vec::new();
                encode_frame(&mut frame, opcode, &payload);
                assert_eq!(data_frame_payload(&frame), Some((opcode, &payload[..])));
                assert_eq!(data_frame_payload(&frame[..frame.len() - 1]), None);
            }
        }
        assert_eq!(data_frame_payload(&out), None);
        let mut ping = Vec::new();
        encode_frame(&mut ping, OpCode::Ping, b"x");
        assert_eq!(data_frame_payload(&ping), None);
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary() {
        let mut out = Vec::new();
        let reason = "é".repeat(100);
        encode_close(&mut out, 1001, &reason);
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= 125);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}
