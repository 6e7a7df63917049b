//! Heartbeat: a quiet connection gets a ping after `--ping-interval`; no
//! traffic within `--pong-timeout` cuts it; a peer that answers its pings
//! stays open and keeps working.

mod common;
use common::*;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

const ARGS: [&str; 6] = [
    "--echo-path",
    "/echo",
    "--ping-interval",
    "1s",
    "--pong-timeout",
    "500ms",
];

const TIMEOUTS: &str = "wsgate_heartbeat_timeouts_total";

/// Never answers: must get a ping after about a second, then be cut.
fn silent_client(mut c: Conn, d: &str) {
    let start = Instant::now();
    let ping = c.read_frame();
    let ping_at = start.elapsed();
    assert_eq!(
        (ping.opcode, ping.fin, ping.masked),
        (OP_PING, true, false),
        "[{d}] silent client: expected an unmasked FIN ping first, got {ping:?}"
    );
    assert!(
        ping.payload.len() <= 125,
        "[{d}] ping payload too long: {ping:?}"
    );
    assert!(
        ping_at >= Duration::from_millis(800) && ping_at <= Duration::from_secs(4),
        "[{d}] silent client: ping after {ping_at:?}, expected about the 1s ping interval"
    );
    // No reply. The connection must end within a few seconds; a close frame
    // before the end of the stream is tolerated.
    c.stream
        .set_read_timeout(Some(Duration::from_secs(4)))
        .unwrap();
    let mut frames = Vec::new();
    let end = loop {
        match c.try_read_frame() {
            Ok(Some(f)) => {
                assert!(
                    f.opcode == OP_CLOSE || f.opcode == OP_PING,
                    "[{d}] silent client: unexpected frame {f:?}"
                );
                frames.push(f);
                assert!(frames.len() < 10, "[{d}] too many frames: {frames:?}");
            }
            Ok(None) => break "EOF",
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!(
                "[{d}] silent client: not closed within 4s after the ping ({e}); frames after the ping: {frames:?}"
            ),
        }
    };
    eprintln!(
        "[{d}] silent client: ping after {:.3}s, {end} {:.3}s after the start; frames after the ping: {frames:?}",
        ping_at.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
}

/// Answers every ping with a pong carrying the same payload for `hold`,
/// then must still echo a message. Returns the number of pings answered.
fn responsive_client(mut c: Conn, hold: Duration, d: &str) -> usize {
    let start = Instant::now();
    c.stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut pings = 0;
    while start.elapsed() < hold {
        match c.try_read_frame() {
            Ok(Some(f)) if f.opcode == OP_PING => {
                assert!(!f.masked && f.fin, "[{d}] malformed ping {f:?}");
                pings += 1;
                c.send_frame(true, OP_PONG, &f.payload);
            }
            Ok(Some(f)) => panic!(
                "[{d}] responsive client: unexpected frame after {:?}: {f:?}",
                start.elapsed()
            ),
            Ok(None) => panic!(
                "[{d}] responsive client: closed by the server after {:?} ({pings} pings answered)",
                start.elapsed()
            ),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!(
                "[{d}] responsive client: {e} after {:?} ({pings} pings answered)",
                start.elapsed()
            ),
        }
    }
    c.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // Still usable: an echo, skipping pings that may cross it.
    let msg = b"still here after the pings";
    c.send_frame(true, OP_TEXT, msg);
    loop {
        let f = c.read_frame();
        if f.opcode == OP_PING {
            c.send_frame(true, OP_PONG, &f.payload);
            continue;
        }
        assert!(
            f.opcode == OP_TEXT && f.fin && !f.masked && f.payload == msg,
            "[{d}] responsive client: expected the echo, got {f:?}"
        );
        break;
    }
    c.send_frame(true, OP_CLOSE, &close_payload(1000, ""));
    loop {
        let f = c.read_frame();
        if f.opcode == OP_PING {
            continue;
        }
        assert_eq!(f.close_code(), Some(1000), "[{d}] close reply: {f:?}");
        break;
    }
    c.expect_closed(false, "after the close handshake");
    pings
}

#[test]
fn silent_peer_is_cut_and_responsive_peer_stays() {
    for_each_driver(&ARGS, |gw| {
        let d = gw.driver.name();
        let before = gw.scrape();
        assert!(
            before.get(TIMEOUTS).is_some(),
            "[{d}] {TIMEOUTS} missing from /metrics:\n{}",
            before.text
        );
        let silent = gw.upgrade("/echo");
        let responsive = gw.upgrade("/echo");
        let pings = std::thread::scope(|s| {
            let a = s.spawn(|| silent_client(silent, d));
            let b = s.spawn(|| responsive_client(responsive, Duration::from_millis(4500), d));
            let pings = b.join();
            let silent = a.join();
            if let Err(e) = silent {
                std::panic::resume_unwind(e);
            }
            pings.unwrap_or_else(|e| std::panic::resume_unwind(e))
        });
        eprintln!("[{d}] responsive client answered {pings} pings in 4.5s");
        assert!(
            pings >= 2,
            "[{d}] responsive client got only {pings} pings in 4.5s with a 1s ping interval"
        );
        let base = before.val(TIMEOUTS);
        let after = gw.scrape_until(Duration::from_secs(2), |s| s.val(TIMEOUTS) > base);
        assert_eq!(
            after.val(TIMEOUTS) - base,
            1.0,
            "[{d}] {TIMEOUTS}: before {base}, after {}; exactly the silent client timed out",
            after.val(TIMEOUTS)
        );
    });
}
