//! A core's permessage-deflate (DESIGN §13): one compressor and one
//! decompressor serve every connection of the core, because every agreement
//! has no context takeover (`proto::extensions`). A connection's only
//! state is its agreement, one byte in its record, so an idle connection
//! with compression costs what one without does.
//!
//! Inbound, a compressed message is inflated once complete into a buffer
//! the core reuses. Outbound, a message at or above
//! `--compression-min-size` is compressed when that makes it smaller; a
//! fan-out frame is compressed once per core, for the first subscriber that
//! agreed (the driver keeps both forms for the rest: `hub_driver.rs`).

#[cfg(feature = "compression")]
use std::cell::RefCell;

use super::Core;
use crate::config::Config;
use crate::proto::close::ProtocolError;
#[cfg(feature = "compression")]
use crate::proto::deflate::{Deflater, Inflater};
use crate::proto::extensions::Deflate;
#[cfg(feature = "compression")]
use crate::proto::frame::{data_frame_payload, encode_compressed_frame};
use crate::proto::frame::{encode_frame, OpCode};

/// An inflated message buffer beyond this is given back after its message.
#[cfg(feature = "compression")]
const KEEP_INFLATED: usize = 256 * 1024;

/// One core's compressor, decompressor and their buffers.
pub struct CoreCompression {
    /// Messages smaller than this go out uncompressed.
    #[cfg(feature = "compression")]
    min_size: usize,
    #[cfg(feature = "compression")]
    deflater: RefCell<Deflater>,
    /// Made when the first compressed message arrives.
    #[cfg(feature = "compression")]
    inflater: RefCell<Option<Inflater>>,
    /// The message being inflated.
    #[cfg(feature = "compression")]
    inflated: RefCell<Vec<u8>>,
}

impl CoreCompression {
    /// A core's compression as configured (nothing is allocated yet).
    pub fn new(config: &Config) -> CoreCompression {
        let _ = config;
        CoreCompression {
            #[cfg(feature = "compression")]
            min_size: config.compression_min_size(),
            #[cfg(feature = "compression")]
            deflater: RefCell::new(Deflater::new()),
            #[cfg(feature = "compression")]
            inflater: RefCell::new(None),
            #[cfg(feature = "compression")]
            inflated: RefCell::new(Vec::new()),
        }
    }
}

impl Core {
    /// Inflates a complete compressed message (`data`, its frames'
    /// payloads joined) and hands its plain bytes to `f`: at most
    /// `--max-message-size` of them (the limit holds while inflating), text
    /// validated. Counts the message's bytes in
    /// `wsgate_compression_bytes_total`.
    #[cfg(feature = "compression")]
    pub fn inflate_message<R>(
        &self,
        data: &[u8],
        binary: bool,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, ProtocolError> {
        let c = &self.compression;
        let mut inflated = c.inflated.borrow_mut();
        let max = self.shared.config.max_message_size;
        let done = (c.inflater.borrow_mut())
            .get_or_insert_with(Inflater::new)
            .inflate(data, !binary, max, &mut inflated);
        let r = done.map(|()| {
            let plain = inflated.len() as u64;
            self.stats.compression_in(data.len() as u64, plain);
            f(&inflated)
        });
        if inflated.capacity() > KEEP_INFLATED {
            *inflated = Vec::new();
        }
        r
    }

    /// Without the feature nothing is ever agreed, so RSV1 stays reserved.
    #[cfg(not(feature = "compression"))]
    pub fn inflate_message<R>(
        &self,
        _data: &[u8],
        _binary: bool,
        _f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, ProtocolError> {
        Err(ProtocolError::ReservedBitsSet)
    }

    /// Appends one data message's frame for a connection with agreement
    /// `deflate`: compressed (RSV1) when agreed, at least
    /// `--compression-min-size` and smaller so; plain otherwise.
    pub fn encode_message(
        &self,
        out: &mut Vec<u8>,
        opcode: OpCode,
        payload: &[u8],
        deflate: Option<Deflate>,
    ) {
        let Some(agreed) = deflate else {
            return encode_frame(out, opcode, payload);
        };
        let plain = payload.len() as u64;
        #[cfg(feature = "compression")]
        if payload.len() >= self.compression.min_size {
            let mut deflater = self.compression.deflater.borrow_mut();
            let mut body = Vec::new();
            if deflater.compress(payload, agreed.window_bits(), &mut body) {
                encode_compressed_frame(out, opcode, &body);
                self.stats.compression_out(body.len() as u64, plain);
                return;
            }
        }
        let _ = agreed;
        encode_frame(out, opcode, payload);
        self.stats.compression_out(plain, plain);
    }

    /// The compressed form of `frame` (a whole plain data frame as the hub
    /// encodes it) for a peer with agreement `deflate`, and its payload's
    /// length; `None` when it goes plain (a control frame, under
    /// `--compression-min-size`, or not smaller compressed).
    pub fn compress_frame(&self, frame: &[u8], deflate: Deflate) -> Option<(Vec<u8>, usize)> {
        #[cfg(feature = "compression")]
        {
            let (opcode, payload) = data_frame_payload(frame)?;
            if payload.len() < self.compression.min_size {
                return None;
            }
            let mut body = Vec::new();
            let mut deflater = self.compression.deflater.borrow_mut();
            if !deflater.compress(payload, deflate.window_bits(), &mut body) {
                return None;
            }
            let mut out = Vec::with_capacity(body.len() + 10);
            encode_compressed_frame(&mut out, opcode, &body);
            Some((out, body.len()))
        }
        #[cfg(not(feature = "compression"))]
        {
            let _ = (frame, deflate);
            None
        }
    }
}
