//! Clients stalled in the middle of their request head must not delay other
//! clients: with 50 half-heads open, a 51st client upgrades and gets echoes.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn fifty_stalled_heads_do_not_block_an_upgrade() {
    for_each_driver(
        &["--handshake-timeout", "30s", "--echo-path", "/echo"],
        |gw| {
            let half = b"GET /echo HTTP/1.1\r\nHost: gw.example\r\nUpgrade: websocket\r\nConnec";
            assert!(Req::upgrade("/echo").bytes().starts_with(half));
            let mut stalled: Vec<Conn> = (0..50)
                .map(|_| {
                    let mut c = gw.connect();
                    c.send(half);
                    c
                })
                .collect();
            // Give the server time to accept them all and start waiting on them.
            std::thread::sleep(Duration::from_millis(200));

            // The 51st client: full upgrade and a few echoes (each read bounded by
            // IO_TIMEOUT = 5 s, far below the 30 s handshake timeout).
            let mut c = gw.upgrade("/echo");
            for i in 0..5 {
                let msg = format!("not blocked {i}");
                c.send_frame(true, OP_TEXT, msg.as_bytes());
                c.expect_frame(OP_TEXT, msg.as_bytes(), &msg);
            }
            // A health check goes through too.
            let resp = gw.roundtrip(&Req::get("/ws-health").bytes());
            assert_eq!(resp.status_line(), "HTTP/1.1 200 OK");

            // The stalled ones are still open and waiting (not timed out, not closed).
            for (i, s) in stalled.iter_mut().enumerate() {
                s.expect_silent_open(
                    Duration::from_millis(10),
                    &format!("stalled connection #{i}"),
                );
            }

            // A stalled client that finally completes its head is served normally.
            let rest = &Req::upgrade("/echo").bytes()[half.len()..];
            let s = &mut stalled[0];
            s.send(rest);
            let resp = s.read_head();
            assert_101(&resp, RFC_KEY, DEFAULT_COOKIE_NAME, DEFAULT_COOKIE_ATTRS);
            s.send_frame(true, OP_BINARY, b"late");
            s.expect_frame(
                OP_BINARY,
                b"late",
                "echo on the formerly stalled connection",
            );
        },
    );
}
