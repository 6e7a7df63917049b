//! A client that pushes 256 MiB into the echo path and never reads must not
//! make the gateway buffer without bound: `--max-backpressure` stops the
//! reading (or the peer is closed as a slow consumer). The gateway keeps
//! serving everyone else meanwhile.

mod common;
use common::*;
use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const ARGS: [&str; 4] = ["--echo-path", "/echo", "--max-backpressure", "1MiB"];
const PUSH_TOTAL: u64 = 256 * 1024 * 1024;
const FRAME_PAYLOAD: usize = 64 * 1024;
const BLOCKED_FOR: Duration = Duration::from_secs(3);
/// Keeps the test bounded if the server takes bytes in slowly but steadily.
const MAX_PUSH_TIME: Duration = Duration::from_secs(15);
const MAX_GROWTH_KIB: u64 = 32 * 1024;

/// How the pusher ended.
#[derive(Debug)]
struct Pushed {
    bytes: u64,
    why: String,
    elapsed: Duration,
}

fn push(mut c: Conn) -> (Pushed, Conn) {
    let start = Instant::now();
    let f = frame(true, OP_BINARY, &rand_bytes(FRAME_PAYLOAD));
    c.stream
        .set_write_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let mut bytes = 0u64;
    let mut off = 0usize;
    let mut last_progress = Instant::now();
    let why = loop {
        if bytes >= PUSH_TOTAL {
            break "pushed everything".to_string();
        }
        if start.elapsed() >= MAX_PUSH_TIME {
            break format!("stopped after {MAX_PUSH_TIME:?} of pushing");
        }
        match c.stream.write(&f[off..]) {
            Ok(0) => break "write returned 0".to_string(),
            Ok(n) => {
                bytes += n as u64;
                off = (off + n) % f.len();
                last_progress = Instant::now();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if last_progress.elapsed() >= BLOCKED_FOR {
                    break format!("writes blocked for {BLOCKED_FOR:?} (back-pressure)");
                }
            }
            Err(e) => break format!("write error: {e} ({:?})", e.kind()),
        }
    };
    (
        Pushed {
            bytes,
            why,
            elapsed: start.elapsed(),
        },
        c,
    )
}

#[test]
fn pusher_that_never_reads_does_not_grow_memory() {
    for_each_driver(&ARGS, |gw| {
        let d = gw.driver.name();
        // Warm up the echo path (buffers, allocator) before the baseline.
        {
            let mut w = gw.upgrade("/echo");
            for _ in 0..4 {
                let p = rand_bytes(FRAME_PAYLOAD);
                w.send_frame(true, OP_BINARY, &p);
                w.expect_frame(OP_BINARY, &p, "warm-up echo");
            }
            w.send_frame(true, OP_CLOSE, &close_payload(1000, ""));
            w.expect_close_frame(1000, "warm-up close");
            w.expect_closed(false, "warm-up close");
        }
        let pusher = gw.upgrade("/echo");
        std::thread::sleep(Duration::from_millis(200));
        let baseline = gw.rss_kib();

        let done = AtomicBool::new(false);
        let mut peak = baseline;
        let (pushed, pusher) = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let r = push(pusher);
                done.store(true, Ordering::SeqCst);
                r
            });
            // Bounded by the pusher: 256 MiB at loopback speed or a 3 s stall.
            let hard_stop = Instant::now() + Duration::from_secs(25);
            while !done.load(Ordering::SeqCst) && Instant::now() < hard_stop {
                peak = peak.max(gw.rss_kib());
                std::thread::sleep(Duration::from_millis(20));
            }
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        });
        // A little longer, in case the server was still taking in bytes.
        for _ in 0..10 {
            peak = peak.max(gw.rss_kib());
            std::thread::sleep(Duration::from_millis(50));
        }
        let growth = peak.saturating_sub(baseline);
        eprintln!(
            "[{d}] pusher: {:.1} MiB written in {:.2}s, stopped: {}; gateway VmRSS baseline {} KiB, \
             peak {} KiB, growth {} KiB ({:.2} MiB)",
            pushed.bytes as f64 / 1048576.0,
            pushed.elapsed.as_secs_f64(),
            pushed.why,
            baseline,
            peak,
            growth,
            growth as f64 / 1024.0
        );
        assert!(
            growth < MAX_GROWTH_KIB,
            "[{d}] gateway RSS grew by {growth} KiB (baseline {baseline} KiB, peak {peak} KiB) \
             while a client pushed {} bytes without reading; limit {MAX_GROWTH_KIB} KiB",
            pushed.bytes
        );

        // Everyone else is still served while the pusher is connected.
        gw.assert_healthy();
        let mut other = gw.upgrade("/echo");
        other.send_frame(true, OP_TEXT, b"other client");
        other.expect_frame(
            OP_TEXT,
            b"other client",
            &format!("[{d}] echo for another client"),
        );
        let big = rand_bytes(FRAME_PAYLOAD);
        other.send_frame(true, OP_BINARY, &big);
        other.expect_frame(
            OP_BINARY,
            &big,
            &format!("[{d}] 64 KiB echo for another client"),
        );
        other.send_frame(true, OP_CLOSE, &close_payload(1000, ""));
        other.expect_close_frame(1000, "other client close");
        other.expect_closed(false, "other client close");
        drop(pusher);
    });
}
