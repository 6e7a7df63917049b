//! The gateway WebSocket path (`/ws`) accepts the upgrade, says `hello`,
//! answers pings with pongs and answers a close with a close.

mod common;
use common::*;

/// Upgrades on `/ws` and reads the gateway's `hello`.
fn gateway(gw: &Gateway) -> Conn {
    let mut c = gw.upgrade("/ws");
    let hello = c.read_frame();
    assert_eq!(hello.opcode, OP_TEXT, "hello is a text frame");
    assert!(
        hello.payload.starts_with(b"hello "),
        "first frame: {:?}",
        String::from_utf8_lossy(&hello.payload)
    );
    c
}

#[test]
fn ws_path_answers_ping_with_pong() {
    for_each_driver(&[], |gw| {
        let mut c = gateway(gw);
        c.send_frame(true, OP_PING, b"are you there");
        c.expect_frame(OP_PONG, b"are you there", "pong on /ws");
        c.send_frame(true, OP_PING, b"");
        c.expect_frame(OP_PONG, b"", "empty pong on /ws");
    });
}

#[test]
fn ws_path_answers_close_with_close() {
    for_each_driver(&[], |gw| {
        let mut c = gateway(gw);
        c.send_frame(true, OP_CLOSE, &close_payload(1000, "done"));
        c.expect_close_frame(1000, "close reply on /ws");
        c.expect_closed(false, "after close handshake on /ws");
    });
}

#[test]
fn ws_path_rejects_unmasked_frames() {
    for_each_driver(&[], |gw| {
        let mut c = gateway(gw);
        c.send(&encode_frame(true, 0, OP_PING, b"x", None));
        c.expect_fail(1002, "unmasked ping on /ws");
    });
}
