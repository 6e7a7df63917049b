//! The two deflate crates DESIGN §13 allows, side by side on what the
//! gateway does with them: one message compressed on its own (raw deflate,
//! sync flush, no context kept: `server_no_context_takeover`) and one
//! inflated on its own, for 1 KiB and 16 KiB of JSON. `flate2` runs on its
//! `zlib-rs` backend (what wsgate builds with, `proto/deflate.rs`);
//! `miniz_oxide` is called directly (its low-level API, as flate2's default
//! backend would). Levels 1 (wsgate's) and 6 (zlib's default).
//!
//! Run: `cargo bench --bench deflate` (about a minute). Time per iteration
//! is the CPU one message costs on one core; criterion's throughput line
//! gives MB/s of plain JSON. Each group prints the compressed sizes once.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use miniz_oxide::deflate::core::{
    compress as mz_compress, create_comp_flags_from_zip_params, CompressorOxide, TDEFLFlush,
};
use miniz_oxide::inflate::stream::{inflate as mz_inflate, InflateState};
use miniz_oxide::{DataFormat, MZFlush};

/// A chat/JSON-API-like document of exactly `n` bytes: objects with ids,
/// timestamps, user names and short texts that vary (a fixed seed).
fn json(n: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "hello", "gateway", "deploy", "room", "typing", "ok", "latency", "the", "retry", "session",
        "balancer", "node", "message", "resume", "drain", "cookie",
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut s = String::from("[");
    let mut id = 10_000;
    while s.len() < n {
        let words: Vec<&str> = (0..3 + next() % 6)
            .map(|_| WORDS[(next() % 16) as usize])
            .collect();
        s.push_str(&format!(
            "{{\"id\":{id},\"ts\":{},\"user\":\"user{}\",\"room\":\"room.{}\",\"text\":\"{}\",\"seen\":{}}},",
            1_765_000_000_000u64 + next() % 100_000_000,
            next() % 5000,
            next() % 40,
            words.join(" "),
            next() % 2 == 0
        ));
        id += 1 + next() % 3;
    }
    s.truncate(n);
    s.into_bytes()
}

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

fn flate2_compress(c: &mut Compress, msg: &[u8], out: &mut [u8]) -> usize {
    c.reset();
    c.compress(msg, out, FlushCompress::Sync).unwrap();
    assert_eq!(c.total_in() as usize, msg.len());
    c.total_out() as usize - TAIL.len()
}

fn miniz_compress(c: &mut CompressorOxide, msg: &[u8], out: &mut [u8]) -> usize {
    c.reset();
    let (_, used, n) = mz_compress(c, msg, out, TDEFLFlush::Sync);
    assert_eq!(used, msg.len());
    n - TAIL.len()
}

fn flate2_inflate(d: &mut Decompress, wire: &[u8], out: &mut [u8]) -> usize {
    d.reset(false);
    d.decompress(wire, out, FlushDecompress::Sync).unwrap();
    d.total_out() as usize
}

fn miniz_inflate(d: &mut InflateState, wire: &[u8], out: &mut [u8]) -> usize {
    d.reset(DataFormat::Raw);
    mz_inflate(d, wire, out, MZFlush::Sync).bytes_written
}

fn deflate_crates(c: &mut Criterion) {
    for (n, name) in [(1024, "1KiB"), (16 * 1024, "16KiB")] {
        let msg = json(n);
        let mut out = vec![0u8; n * 2 + 64];
        let mut plain = vec![0u8; n + 64];
        for level in [1, 6] {
            let mut zc = Compress::new_with_window_bits(Compression::new(level), false, 15);
            let mut mc =
                CompressorOxide::new(create_comp_flags_from_zip_params(level as i32, 0, 0));
            let z = flate2_compress(&mut zc, &msg, &mut out);
            let mut z_wire = out[..z].to_vec();
            z_wire.extend_from_slice(&TAIL);
            let m = miniz_compress(&mut mc, &msg, &mut out);
            let mut m_wire = out[..m].to_vec();
            m_wire.extend_from_slice(&TAIL);
            println!("deflate {name} JSON, level {level}: flate2/zlib-rs {z} B, miniz_oxide {m} B");

            let mut g = c.benchmark_group(format!("compress_{name}_level{level}"));
            g.throughput(Throughput::Bytes(n as u64));
            g.bench_function(BenchmarkId::from_parameter("flate2_zlib_rs"), |b| {
                b.iter(|| flate2_compress(&mut zc, black_box(&msg), &mut out))
            });
            g.bench_function(BenchmarkId::from_parameter("miniz_oxide"), |b| {
                b.iter(|| miniz_compress(&mut mc, black_box(&msg), &mut out))
            });
            g.finish();

            // Each inflates its own output (the sizes differ a little).
            let mut zd = Decompress::new(false);
            let mut md = InflateState::new_boxed(DataFormat::Raw);
            assert_eq!(flate2_inflate(&mut zd, &m_wire, &mut plain), n);
            assert_eq!(miniz_inflate(&mut md, &z_wire, &mut plain), n);
            assert_eq!(&plain[..n], &msg[..]);
            let mut g = c.benchmark_group(format!("inflate_{name}_level{level}"));
            g.throughput(Throughput::Bytes(n as u64));
            g.bench_function(BenchmarkId::from_parameter("flate2_zlib_rs"), |b| {
                b.iter(|| flate2_inflate(&mut zd, black_box(&z_wire), &mut plain))
            });
            g.bench_function(BenchmarkId::from_parameter("miniz_oxide"), |b| {
                b.iter(|| miniz_inflate(&mut md, black_box(&m_wire), &mut plain))
            });
            g.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = deflate_crates
}
criterion_main!(benches);
