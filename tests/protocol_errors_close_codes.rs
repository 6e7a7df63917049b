//! Protocol violations fail the connection with the RFC 6455 close code
//! (1002 protocol error, 1007 invalid payload, 1009 too big), and a clean
//! client close is answered with 1000; the server then closes TCP.

mod common;
use common::*;

const ECHO: [&str; 2] = ["--echo-path", "/echo"];

/// Upgrade on /echo, send `bytes` in one write, expect close `code` then EOF.
fn expect_failure(gw: &Gateway, bytes: &[u8], code: u16, what: &str) {
    let mut c = gw.upgrade("/echo");
    c.send_allow_reset(bytes);
    c.expect_fail(code, what);
}

#[test]
fn unmasked_client_frame_is_1002() {
    for_each_driver(&ECHO, |gw| {
        expect_failure(
            gw,
            &encode_frame(true, 0, OP_TEXT, b"hello", None),
            1002,
            "unmasked text",
        );
        expect_failure(
            gw,
            &encode_frame(true, 0, OP_PING, b"", None),
            1002,
            "unmasked ping",
        );
        // After a valid exchange, too.
        let mut c = gw.upgrade("/echo");
        c.send_frame(true, OP_TEXT, b"ok");
        c.expect_frame(OP_TEXT, b"ok", "valid frame first");
        c.send(&encode_frame(true, 0, OP_BINARY, &[1, 2, 3], None));
        c.expect_fail(1002, "unmasked binary after a valid frame");
    });
}

#[test]
fn invalid_utf8_text_is_1007() {
    for_each_driver(&ECHO, |gw| {
        expect_failure(
            gw,
            &frame(true, OP_TEXT, &[b'a', 0xff, b'b']),
            1007,
            "0xff in text",
        );
        expect_failure(
            gw,
            &frame(true, OP_TEXT, &[0xc0, 0xaf]),
            1007,
            "overlong encoding",
        );
        expect_failure(
            gw,
            &frame(true, OP_TEXT, &[0xed, 0xa0, 0x80]),
            1007,
            "UTF-16 surrogate",
        );
        expect_failure(
            gw,
            &frame(true, OP_TEXT, &[b'a', 0xe2, 0x82]),
            1007,
            "truncated sequence at end",
        );
        // Fragmented: the message ends in the middle of a code point.
        let mut w = frame(false, OP_TEXT, b"abc");
        w.extend(frame(true, OP_CONT, &[0xe2, 0x82]));
        expect_failure(gw, &w, 1007, "fragmented text ending mid-codepoint");
    });
}

#[test]
fn message_over_max_size_is_1009() {
    for_each_driver(
        &["--echo-path", "/echo", "--max-message-size", "1KiB"],
        |gw| {
            // Exactly at the limit is fine.
            let mut c = gw.upgrade("/echo");
            let at_limit = rand_bytes(1024);
            c.send_frame(true, OP_BINARY, &at_limit);
            c.expect_frame(OP_BINARY, &at_limit, "1024-byte message with a 1KiB limit");

            expect_failure(
                gw,
                &frame(true, OP_BINARY, &rand_bytes(2000)),
                1009,
                "2000-byte binary",
            );
            expect_failure(
                gw,
                &frame(true, OP_TEXT, &[b'x'; 2000]),
                1009,
                "2000-byte text",
            );
            // The limit is on the message, not the frame.
            let mut w = frame(false, OP_BINARY, &[1u8; 700]);
            w.extend(frame(true, OP_CONT, &[2u8; 700]));
            expect_failure(gw, &w, 1009, "two 700-byte fragments");
        },
    );
}

#[test]
fn client_close_1000_is_answered_with_1000_then_tcp_close() {
    for_each_driver(&ECHO, |gw| {
        let mut c = gw.upgrade("/echo");
        c.send_frame(true, OP_CLOSE, &close_payload(1000, ""));
        c.expect_close_frame(1000, "reply to close 1000");
        c.expect_closed(false, "after the close handshake");

        let mut c = gw.upgrade("/echo");
        c.send_frame(true, OP_CLOSE, &close_payload(1000, "bye now"));
        c.expect_close_frame(1000, "reply to close 1000 with a reason");
        c.expect_closed(false, "after the close handshake");

        // Data sent after the close frame is ignored.
        let mut c = gw.upgrade("/echo");
        let mut w = frame(true, OP_CLOSE, &close_payload(1000, ""));
        w.extend(frame(true, OP_TEXT, b"too late"));
        c.send_allow_reset(&w);
        c.expect_close_frame(1000, "reply to close followed by data");
        c.expect_closed(true, "after the close handshake");
    });
}

#[test]
fn invalid_close_codes_are_1002() {
    // 0-999 unused; 1004/1005/1006/1015 must not be sent on the wire;
    // 1016-2999 reserved; >= 5000 undefined (RFC 6455 7.4).
    let codes = [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
    ];
    for_each_driver(&ECHO, |gw| {
        for code in codes {
            expect_failure(
                gw,
                &frame(true, OP_CLOSE, &close_payload(code, "")),
                1002,
                &format!("close frame with code {code}"),
            );
        }
    });
}

#[test]
fn malformed_close_payloads() {
    for_each_driver(&ECHO, |gw| {
        // A one-byte close payload cannot hold a status code.
        expect_failure(
            gw,
            &frame(true, OP_CLOSE, &[0x03]),
            1002,
            "1-byte close payload",
        );
        // The close reason must be UTF-8 (RFC 6455 5.5.1 / 8.1).
        let mut p = close_payload(1000, "");
        p.extend_from_slice(&[0xff, 0xfe]);
        expect_failure(
            gw,
            &frame(true, OP_CLOSE, &p),
            1007,
            "close reason not UTF-8",
        );
    });
}

#[test]
fn reserved_bits_and_opcodes_are_1002() {
    for_each_driver(&ECHO, |gw| {
        for rsv in [0b100u8, 0b010, 0b001] {
            expect_failure(
                gw,
                &encode_frame(true, rsv, OP_TEXT, b"x", Some(rand_mask())),
                1002,
                &format!("RSV bits {rsv:03b}"),
            );
        }
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            expect_failure(
                gw,
                &encode_frame(true, 0, op, b"x", Some(rand_mask())),
                1002,
                &format!("reserved opcode {op:#x}"),
            );
        }
    });
}

#[test]
fn fragmentation_violations_are_1002() {
    for_each_driver(&ECHO, |gw| {
        expect_failure(
            gw,
            &frame(true, OP_CONT, b"orphan"),
            1002,
            "continuation without a start",
        );
        let mut w = frame(false, OP_TEXT, b"start");
        w.extend(frame(true, OP_TEXT, b"new message while fragmented"));
        expect_failure(gw, &w, 1002, "new data frame inside a fragmented message");
        expect_failure(gw, &frame(false, OP_PING, b"frag"), 1002, "fragmented ping");
        expect_failure(
            gw,
            &frame(true, OP_PING, &[b'p'; 126]),
            1002,
            "ping payload > 125",
        );
        expect_failure(
            gw,
            &frame(true, OP_CLOSE, &[b'c'; 126]),
            1002,
            "close payload > 125",
        );
    });
}
