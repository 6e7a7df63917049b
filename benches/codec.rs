//! Codec micro-benchmarks: wsgate's frame header parse, unmask, encode, UTF-8
//! validation and whole-message decode, side by side with tungstenite's codec
//! on the same inputs, and `memcpy` (`copy_from_slice`) of the same bytes as
//! the physical limit. Payloads: 20 B, 1 KiB, 16 KiB and 1 MiB.
//!
//! Run: `cargo bench --bench codec` (about 1.5 minutes), or with `-- --quick`.
//! `benches/run.sh` runs it and turns the results into a table.
//!
//! Where tungstenite keeps an operation private, the closest public API stands
//! in for it, and the benchmark id says so:
//! - unmasking: `tungstenite::protocol::frame::mask` is a private module. Two
//!   stand-ins: `tungstenite_format_masked` is the public `Frame::format` of a
//!   frame with a mask set (header + masked copy of the payload), and
//!   `tungstenite_fast32_copy` is a verbatim copy of its private
//!   `apply_mask_fast32` (MIT/Apache-2.0), so the loop itself can be compared.
//! - UTF-8: tungstenite's incremental validator (`tungstenite::utf8`) is
//!   private; `Utf8Bytes::try_from(Bytes)` is the public validation a whole
//!   text payload goes through.

use std::hint::black_box;
use std::io::{self, Cursor, Read, Write};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use wsgate::proto::frame::{encode_frame, FrameHeader, OpCode};
use wsgate::proto::mask::{apply_mask, apply_mask_bytewise};
use wsgate::proto::receiver::{Event, Receiver, Step};
use wsgate::proto::utf8::Utf8Validator;

use tungstenite::protocol::frame::coding::{Data, OpCode as TOpCode};
use tungstenite::protocol::frame::{Frame as TFrame, FrameHeader as TFrameHeader, Utf8Bytes};
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tungstenite::{Bytes, Message};

const SIZES: &[(usize, &str)] = &[
    (20, "20B"),
    (1024, "1KiB"),
    (16 * 1024, "16KiB"),
    (1024 * 1024, "1MiB"),
];

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Text of exactly `n` bytes, mostly ASCII with some 2-, 3- and 4-byte characters.
fn mixed_text(n: usize) -> Vec<u8> {
    let unit = "The quick brown fox — jumps über den Zaun, 速い狐 🦊! ".as_bytes();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let room = n - out.len();
        if room >= unit.len() {
            out.extend_from_slice(unit);
        } else {
            out.extend(std::iter::repeat(b'.').take(room));
        }
    }
    debug_assert!(std::str::from_utf8(&out).is_ok());
    out
}

/// Pure ASCII text of exactly `n` bytes (the common case for JSON messages).
fn ascii_text(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A masked client text frame (what a server reads) carrying `payload`.
fn client_frame(payload: &[u8]) -> (Vec<u8>, usize) {
    let mut out = vec![0x81];
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
    out.extend_from_slice(&KEY);
    let header_len = out.len();
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    (out, header_len)
}

/// `'static` bytes, so tungstenite's `Bytes::from_static` can wrap them without a copy.
fn leak(v: Vec<u8>) -> &'static [u8] {
    Box::leak(v.into_boxed_slice())
}

/// Verbatim copy of tungstenite 0.30's private `apply_mask_fast32`
/// (src/protocol/frame/mask.rs, MIT/Apache-2.0), which its codec calls.
mod tungstenite_mask_copy {
    #[inline]
    fn apply_mask_fallback(buf: &mut [u8], mask: [u8; 4]) {
        for (i, byte) in buf.iter_mut().enumerate() {
            *byte ^= mask[i & 3];
        }
    }

    #[inline]
    pub fn apply_mask_fast32(buf: &mut [u8], mask: [u8; 4]) {
        let mask_u32 = u32::from_ne_bytes(mask);
        let (prefix, words, suffix) = unsafe { buf.align_to_mut::<u32>() };
        apply_mask_fallback(prefix, mask);
        let head = prefix.len() & 3;
        let mask_u32 = if head > 0 {
            if cfg!(target_endian = "big") {
                mask_u32.rotate_left(8 * head as u32)
            } else {
                mask_u32.rotate_right(8 * head as u32)
            }
        } else {
            mask_u32
        };
        for word in words.iter_mut() {
            *word ^= mask_u32;
        }
        apply_mask_fallback(suffix, mask_u32.to_ne_bytes());
    }
}

/// A stream that hands out the same bytes again after every `rewind`, and
/// swallows writes: lets tungstenite's `WebSocket::read` decode one frame per
/// iteration without a socket.
struct Replay {
    data: &'static [u8],
    pos: usize,
}

impl Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

impl Write for Replay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The physical limit: copy the same bytes once (`copy_from_slice`), with
/// both ends opaque to the optimiser.
#[inline(never)]
fn memcpy(dst: &mut [u8], src: &[u8]) {
    black_box(&mut *dst).copy_from_slice(black_box(src));
    black_box(dst);
}

/// A copy target for `src` that is not 1–63 bytes ahead of it modulo 4 KiB:
/// on some CPUs (seen on this AMD EPYC VM) glibc's `rep movsb` copy runs ~17×
/// slower at those distances, which would make the baseline a CPU quirk of
/// the allocation layout instead of the copy. Returns the buffer and where
/// the target starts in it.
fn copy_target(src: &[u8]) -> (Vec<u8>, usize) {
    let dst = vec![0u8; src.len() + 4096];
    let ahead =
        |off: usize| (dst.as_ptr() as usize + off).wrapping_sub(src.as_ptr() as usize) % 4096;
    let off = (0..4096).step_by(64).find(|&o| ahead(o) >= 64).unwrap_or(0);
    (dst, off)
}

fn header_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("header_parse");
    for &(n, label) in SIZES {
        let (frame, header_len) = client_frame(&mixed_text(n));
        let head = frame[..header_len].to_vec();
        g.bench_with_input(BenchmarkId::new("wsgate", label), &head, |b, head| {
            b.iter(|| FrameHeader::parse(black_box(head)).unwrap().unwrap())
        });
        g.bench_with_input(BenchmarkId::new("tungstenite", label), &head, |b, head| {
            b.iter(|| {
                let mut cursor = Cursor::new(black_box(head.as_slice()));
                TFrameHeader::parse(&mut cursor).unwrap().unwrap()
            })
        });
    }
    g.finish();
}

fn unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    for &(n, label) in SIZES {
        g.throughput(Throughput::Bytes(n as u64));
        // The payload sits behind its header in the read buffer, as in a server:
        // usually not 8-byte aligned. XOR-ing in place repeatedly is the same work.
        let (mut frame, header_len) = client_frame(&mixed_text(n));
        g.bench_function(BenchmarkId::new("wsgate", label), |b| {
            b.iter(|| apply_mask(black_box(&mut frame[header_len..]), KEY, 0))
        });
        g.bench_function(BenchmarkId::new("wsgate_bytewise", label), |b| {
            b.iter(|| apply_mask_bytewise(black_box(&mut frame[header_len..]), KEY, 0))
        });
        g.bench_function(BenchmarkId::new("tungstenite_fast32_copy", label), |b| {
            b.iter(|| {
                tungstenite_mask_copy::apply_mask_fast32(black_box(&mut frame[header_len..]), KEY)
            })
        });
        let payload: &'static [u8] = leak(mixed_text(n));
        let mut out = Vec::with_capacity(n + 14);
        g.bench_function(BenchmarkId::new("tungstenite_format_masked", label), |b| {
            b.iter(|| {
                out.clear();
                let mut f =
                    TFrame::message(Bytes::from_static(payload), TOpCode::Data(Data::Text), true);
                f.header_mut().mask = Some(KEY);
                f.format(&mut out).unwrap();
                black_box(&out);
            })
        });
        let src = mixed_text(n);
        let (mut dst, off) = copy_target(&src);
        g.bench_function(BenchmarkId::new("memcpy", label), |b| {
            b.iter(|| memcpy(&mut dst[off..off + n], &src))
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for &(n, label) in SIZES {
        g.throughput(Throughput::Bytes(n as u64));
        let payload: &'static [u8] = leak(mixed_text(n));
        let mut out: Vec<u8> = Vec::with_capacity(n + 14);
        g.bench_function(BenchmarkId::new("wsgate", label), |b| {
            b.iter(|| {
                out.clear();
                encode_frame(&mut out, OpCode::Text, black_box(payload));
                black_box(&out);
            })
        });
        g.bench_function(BenchmarkId::new("tungstenite", label), |b| {
            b.iter(|| {
                out.clear();
                TFrame::message(
                    Bytes::from_static(black_box(payload)),
                    TOpCode::Data(Data::Text),
                    true,
                )
                .format(&mut out)
                .unwrap();
                black_box(&out);
            })
        });
        let (mut dst, off) = copy_target(payload);
        g.bench_function(BenchmarkId::new("memcpy", label), |b| {
            b.iter(|| memcpy(&mut dst[off..off + n], payload))
        });
    }
    g.finish();
}

fn utf8(c: &mut Criterion) {
    for (group, make) in [
        ("utf8_mixed", mixed_text as fn(usize) -> Vec<u8>),
        ("utf8_ascii", ascii_text as fn(usize) -> Vec<u8>),
    ] {
        let mut g = c.benchmark_group(group);
        for &(n, label) in SIZES {
            g.throughput(Throughput::Bytes(n as u64));
            let text: &'static [u8] = leak(make(n));
            g.bench_function(BenchmarkId::new("wsgate", label), |b| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    v.feed(black_box(text)).unwrap();
                    v.finish().unwrap();
                })
            });
            g.bench_function(BenchmarkId::new("tungstenite", label), |b| {
                b.iter(|| Utf8Bytes::try_from(Bytes::from_static(black_box(text))).unwrap())
            });
            g.bench_function(BenchmarkId::new("std_from_utf8", label), |b| {
                b.iter(|| std::str::from_utf8(black_box(text)).unwrap().len())
            });
            let (mut dst, off) = copy_target(text);
            g.bench_function(BenchmarkId::new("memcpy", label), |b| {
                b.iter(|| memcpy(&mut dst[off..off + n], text))
            });
        }
        g.finish();
    }
}

/// A whole masked text message from buffered bytes to a validated payload:
/// copy in (what `recv` does), parse, unmask, validate.
fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_message");
    for &(n, label) in SIZES {
        g.throughput(Throughput::Bytes(n as u64));
        let (frame, _) = client_frame(&mixed_text(n));
        let frame: &'static [u8] = leak(frame);

        let mut rx = Receiver::new(16 << 20);
        let mut buf = vec![0u8; frame.len()];
        g.bench_function(BenchmarkId::new("wsgate_receiver", label), |b| {
            b.iter(|| {
                buf.copy_from_slice(black_box(frame));
                match rx.step(&mut buf).unwrap() {
                    Step::Frame {
                        event: Some(Event::Text(p)),
                        ..
                    } => p.len(),
                    other => panic!("{other:?}"),
                }
            })
        });

        let config = WebSocketConfig::default()
            .max_message_size(Some(16 << 20))
            .max_frame_size(Some(16 << 20));
        let mut ws = WebSocket::from_raw_socket(
            Replay {
                data: frame,
                pos: 0,
            },
            Role::Server,
            Some(config),
        );
        g.bench_function(BenchmarkId::new("tungstenite_websocket_read", label), |b| {
            b.iter(|| {
                ws.get_mut().pos = 0;
                match ws.read().unwrap() {
                    Message::Text(t) => t.len(),
                    other => panic!("{other:?}"),
                }
            })
        });

        let (mut dst, off) = copy_target(frame);
        let len = frame.len();
        g.bench_function(BenchmarkId::new("memcpy", label), |b| {
            b.iter(|| memcpy(&mut dst[off..off + len], frame))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(800))
        .sample_size(30)
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = header_parse, unmask, encode, utf8, decode
}
criterion_main!(benches);
