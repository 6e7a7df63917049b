//! `--max-message-size`: a message over the limit, in one frame or in
//! fragments, closes the connection with 1009; a message of exactly the
//! limit is echoed.

mod common;
use common::*;
use std::time::Duration;

const LIMIT: usize = 64 * 1024;
const ARGS: [&str; 4] = ["--echo-path", "/echo", "--max-message-size", "64KiB"];
const C1009: &str = "wsgate_closes_total{code=\"1009\"}";

#[test]
fn oversized_messages_close_1009_and_the_limit_is_echoed() {
    for_each_driver(&ARGS, |gw| {
        let d = gw.driver.name();
        let before = gw.scrape();

        // Exactly the limit, one frame.
        let mut c = gw.upgrade("/echo");
        let exact = rand_bytes(LIMIT);
        c.send_frame(true, OP_BINARY, &exact);
        c.expect_frame(
            OP_BINARY,
            &exact,
            &format!("[{d}] echo of exactly {LIMIT} bytes"),
        );
        // Exactly the limit, in two fragments.
        let text: Vec<u8> = (0..LIMIT).map(|i| b'a' + (i % 26) as u8).collect();
        let mut w = frame(false, OP_TEXT, &text[..LIMIT / 2]);
        w.extend(frame(true, OP_CONT, &text[LIMIT / 2..]));
        c.send(&w);
        c.expect_frame(
            OP_TEXT,
            &text,
            &format!("[{d}] echo of a fragmented {LIMIT}-byte message"),
        );
        c.send_frame(true, OP_CLOSE, &close_payload(1000, ""));
        c.expect_close_frame(1000, &format!("[{d}] close after the echoes"));
        c.expect_closed(false, "after the close handshake");

        // One frame of 70000 bytes.
        let mut c = gw.upgrade("/echo");
        c.send_allow_reset(&frame(true, OP_BINARY, &rand_bytes(70_000)));
        c.expect_close_frame(1009, &format!("[{d}] single 70000-byte frame"));
        c.expect_closed(true, &format!("[{d}] after close 1009 (single frame)"));

        // Fragments adding up to more than the limit, each one small.
        let mut c = gw.upgrade("/echo");
        let part = rand_bytes(20_000);
        let mut w = frame(false, OP_BINARY, &part);
        w.extend(frame(false, OP_CONT, &part));
        w.extend(frame(false, OP_CONT, &part));
        w.extend(frame(true, OP_CONT, &part));
        c.send_allow_reset(&w);
        c.expect_close_frame(1009, &format!("[{d}] fragmented 80000-byte message"));
        c.expect_closed(true, &format!("[{d}] after close 1009 (fragments)"));

        let base = before.val(C1009);
        let after = gw.scrape_until(Duration::from_secs(2), |s| s.val(C1009) >= base + 2.0);
        assert!(
            after.get(C1009).is_some(),
            "[{d}] {C1009} missing from /metrics:\n{}",
            after.text
        );
        assert_eq!(
            after.val(C1009) - base,
            2.0,
            "[{d}] {C1009}: before {base}, after {}",
            after.val(C1009)
        );
    });
}
