//! Close codes (RFC 6455 §7.4) and the protocol errors that produce them.

use std::fmt;

/// A close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection is fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is going away (drain).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1007: a text message was not valid UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: policy violation (origin, slow consumer, replaced session).
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: a message exceeded `--max-message-size`.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);

    /// Whether a peer may send this code in a close frame.
    ///
    /// RFC 6455 §7.4.1 and §7.4.2: 1004, 1005, 1006 and 1015 are never sent on
    /// the wire; 1016–2999 are reserved for future RFCs; 3000–4999 belong to
    /// libraries and applications. 1012–1014 were registered with IANA later.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A rule of RFC 6455 that a client broke; each knows the close code it earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// §5.1: "a server MUST close the connection upon receiving a frame that is not masked".
    UnmaskedFrameFromClient,
    /// §5.2: RSV1–3 "MUST be 0 unless an extension is negotiated" (RSV1
    /// is permessage-deflate's where it was negotiated).
    ReservedBitsSet,
    /// §5.2: opcodes 0x3–0x7 and 0xB–0xF are reserved.
    ReservedOpcode(u8),
    /// §5.5: "All control frames MUST have a payload length of 125 bytes or less".
    ControlFrameTooLong,
    /// §5.5: "All control frames ... MUST NOT be fragmented".
    FragmentedControlFrame,
    /// §5.2: "the most significant bit MUST be 0" in a 64-bit length.
    LengthOverflow,
    /// §5.4: a continuation frame with no message to continue.
    UnexpectedContinuation,
    /// §5.4: a new data frame while a fragmented message is unfinished.
    ExpectedContinuation,
    /// §5.5.1: a close payload of one byte cannot hold a status code.
    CloseFrameOneByte,
    /// §7.4: a close code that may not appear on the wire.
    InvalidCloseCode(u16),
    /// §5.6 / §8.1: text (or a close reason) that is not UTF-8.
    InvalidUtf8,
    /// The message is larger than `--max-message-size`.
    MessageTooBig,
    /// RFC 7692 §6.1: RSV1 on a control frame ("An endpoint MUST NOT set
    /// the "Per-Message Compressed" bit of control frames").
    CompressedControlFrame,
    /// RFC 7692 §6.1: RSV1 on a continuation frame (the bit is set on the
    /// first frame of a message only).
    CompressedContinuation,
    /// RFC 7692 §6.2: the payload of a compressed message does not inflate.
    InvalidCompressedData,
}

impl ProtocolError {
    /// The close code to send for this error.
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::MessageTooBig => CloseCode::TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short reason for the close frame and the logs.
    pub fn reason(self) -> &'static str {
        match self {
            ProtocolError::UnmaskedFrameFromClient => "unmasked frame",
            ProtocolError::ReservedBitsSet => "reserved bits set",
            ProtocolError::ReservedOpcode(_) => "reserved opcode",
            ProtocolError::ControlFrameTooLong => "control frame too long",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::LengthOverflow => "length overflow",
            ProtocolError::UnexpectedContinuation => "unexpected continuation",
            ProtocolError::ExpectedContinuation => "expected continuation",
            ProtocolError::CloseFrameOneByte => "one-byte close payload",
            ProtocolError::InvalidCloseCode(_) => "invalid close code",
            ProtocolError::InvalidUtf8 => "invalid utf-8",
            ProtocolError::MessageTooBig => "message too big",
            ProtocolError::CompressedControlFrame => "compressed control frame",
            ProtocolError::CompressedContinuation => "RSV1 on a continuation frame",
            ProtocolError::InvalidCompressedData => "invalid compressed data",
        }
    }
}

/// A close handshake the server starts on its own (not in answer to the
/// peer): the code and the reason text of its close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerClose {
    /// 1001 "draining": the node is shutting down (DESIGN §7).
    Draining,
    /// 1008 "replaced": a reconnect with the same session took over.
    Replaced,
    /// 1008 "token expired": the token's `exp` (+ leeway) passed without a
    /// refresh (DESIGN §11).
    TokenExpired,
}

impl ServerClose {
    /// The status code.
    pub fn code(self) -> CloseCode {
        match self {
            ServerClose::Draining => CloseCode::GOING_AWAY,
            ServerClose::Replaced | ServerClose::TokenExpired => CloseCode::POLICY,
        }
    }

    /// The reason text.
    pub fn reason(self) -> &'static str {
        match self {
            ServerClose::Draining => "draining",
            ServerClose::Replaced => "replaced",
            ServerClose::TokenExpired => "token expired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_matches_rfc_ranges() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(CloseCode(code).is_valid_on_wire(), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(code).is_valid_on_wire(), "{code}");
        }
    }

    #[test]
    fn each_error_maps_to_its_close_code() {
        use ProtocolError::*;
        let cases = [
            (UnmaskedFrameFromClient, 1002),
            (ReservedBitsSet, 1002),
            (ReservedOpcode(3), 1002),
            (ControlFrameTooLong, 1002),
            (FragmentedControlFrame, 1002),
            (LengthOverflow, 1002),
            (UnexpectedContinuation, 1002),
            (ExpectedContinuation, 1002),
            (CloseFrameOneByte, 1002),
            (InvalidCloseCode(1005), 1002),
            (InvalidUtf8, 1007),
            (MessageTooBig, 1009),
        ];
        for (err, code) in cases {
            assert_eq!(err.close_code(), CloseCode(code), "{err:?}");
        }
    }
}
