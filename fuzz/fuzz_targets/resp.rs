//! The RESP3 parser (`proto::resp::parse`), which the Redis connection runs
//! over a growing input buffer.
//!
//! Input: `[split seed][stream]`: the seed chooses chunk sizes (low nibble
//! bounds them at 1 << n, n <= 12, plus len/256); the stream is what Redis
//! would send.
//!
//! Asserts:
//! - the stream parsed at once and parsed as it arrives in chunks (re-parsing
//!   the unconsumed buffer after each chunk, like `redis.rs`) gives the same
//!   values and the same error;
//! - a value uses at least one byte and no more than it was given, depends only
//!   on the bytes it used, and every strict prefix of those bytes needs more;
//! - round trip: every value, written back in canonical RESP3, parses to itself;
//!   `encode_command` output parses to the array of its arguments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::proto::resp::{encode_command, parse, RespError, Value};

fn encode(v: &Value, out: &mut Vec<u8>) {
    let header = |out: &mut Vec<u8>, kind: u8, n: usize| {
        out.push(kind);
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    match v {
        Value::Simple(s) => {
            out.push(b'+');
            out.extend_from_slice(s);
            out.extend_from_slice(b"\r\n");
        }
        Value::Error(e) => {
            header(out, b'!', e.len());
            out.extend_from_slice(e.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Value::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Value::Bulk(b) => {
            header(out, b'$', b.len());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::Null => out.extend_from_slice(b"_\r\n"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Value::Number(n) => out.extend_from_slice(format!(",{n}\r\n").as_bytes()),
        Value::Array(items) | Value::Push(items) => {
            header(
                out,
                if matches!(v, Value::Push(_)) {
                    b'>'
                } else {
                    b'*'
                },
                items.len(),
            );
            items.iter().for_each(|i| encode(i, out));
        }
        Value::Map(pairs) => {
            header(out, b'%', pairs.len());
            for (k, v) in pairs {
                encode(k, out);
                encode(v, out);
            }
        }
    }
}

/// Parses values off the front of a buffer that grows by `chunks`.
fn drive(
    stream: &[u8],
    mut chunk: impl FnMut() -> usize,
) -> (Vec<(Value, usize)>, Option<RespError>) {
    let (mut pending, mut fed, mut values) = (Vec::new(), 0, Vec::new());
    while fed < stream.len() {
        let n = chunk().clamp(1, stream.len() - fed);
        pending.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            match parse(&pending) {
                Err(e) => return (values, Some(e)),
                Ok(None) => break,
                Ok(Some((v, used))) => {
                    assert!(used > 0 && used <= pending.len());
                    values.push((v, used));
                    pending.drain(..used);
                }
            }
        }
    }
    (values, None)
}

fuzz_target!(|data: &[u8]| {
    let [seed, stream @ ..] = data else { return };
    let whole = drive(stream, || usize::MAX);
    let bound = 1usize << (seed & 0x0F).min(12);
    // Each chunk re-parses the whole unconsumed buffer (as `redis.rs` does), so
    // at most ~256 chunks: tiny splits on long inputs would be quadratic.
    let least = stream.len() / 256;
    let mut x = (*seed as u64) << 32 | stream.len() as u64 | 1;
    let chunked = drive(stream, || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        least + 1 + x as usize % bound
    });
    assert_eq!(whole, chunked, "whole vs chunked");

    let mut at = 0;
    for (v, used) in &whole.0 {
        let bytes = &stream[at..at + used];
        at += used;
        assert_eq!(parse(bytes), Ok(Some((v.clone(), *used))));
        assert_eq!(parse(&bytes[..used - 1]), Ok(None));
        let mut again = Vec::new();
        encode(v, &mut again);
        assert_eq!(
            parse(&again),
            Ok(Some((v.clone(), again.len()))),
            "{again:?}"
        );
        let _ = (v.as_bytes(), v.as_int());
    }

    // Commands: the stream's 0xFF-separated pieces as arguments.
    let args: Vec<&[u8]> = stream.split(|&b| b == 0xFF).take(64).collect();
    let mut cmd = Vec::new();
    encode_command(&mut cmd, &args);
    let want = Value::Array(args.iter().map(|a| Value::Bulk(a.to_vec())).collect());
    assert_eq!(parse(&cmd), Ok(Some((want, cmd.len()))));
});
