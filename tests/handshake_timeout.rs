//! A request head not completed within `--handshake-timeout` gets a 408 and
//! the connection is closed.

mod common;
use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn half_head_gets_408_after_the_timeout() {
    for_each_driver(&["--handshake-timeout", "1s"], |gw| {
        let mut c = gw.connect();
        let started = Instant::now();
        c.send(b"GET /ws HTTP/1.1\r\nHost: gw.example\r\nUpgrade: websocket\r\n");
        let resp = c.read_response(false);
        let waited = started.elapsed();
        assert_rejection(&resp, 408, "half a request head");
        // It is the timeout that fired, not an early parse rejection.
        assert!(
            waited >= Duration::from_millis(800),
            "408 after only {waited:?}"
        );
    });
}

#[test]
fn trickling_bytes_does_not_extend_the_deadline() {
    for_each_driver(&["--handshake-timeout", "1s"], |gw| {
        let mut c = gw.connect();
        let started = Instant::now();
        let head = Req::upgrade("/ws").bytes();
        // One byte every 100 ms: the head would take several seconds.
        let mut got = None;
        for b in head.iter().take(40) {
            if c.stream.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            c.stream.set_nonblocking(true).unwrap();
            let mut probe = [0u8; 1];
            let peeked = c.stream.peek(&mut probe);
            c.stream.set_nonblocking(false).unwrap();
            if let Ok(n) = peeked {
                got = Some(n);
                break;
            }
        }
        assert!(
            got.is_some(),
            "no response while trickling for {:?}",
            started.elapsed()
        );
        let resp = c.read_response(true);
        assert_rejection(&resp, 408, "trickled head");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "deadline extended by trickling"
        );
    });
}

#[test]
fn complete_head_within_timeout_is_served() {
    for_each_driver(
        &["--handshake-timeout", "1s", "--echo-path", "/echo"],
        |gw| {
            let mut c = gw.upgrade("/echo");
            // The handshake timeout must not apply after the upgrade.
            std::thread::sleep(Duration::from_millis(1500));
            c.send_frame(true, OP_TEXT, b"still here");
            c.expect_frame(
                OP_TEXT,
                b"still here",
                "echo after the handshake timeout elapsed",
            );
        },
    );
}
