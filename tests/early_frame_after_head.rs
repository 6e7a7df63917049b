//! Bytes that arrive in the same segment as the request head (a frame right
//! behind the upgrade request) are not lost.

mod common;
use common::*;

const ECHO: [&str; 2] = ["--echo-path", "/echo"];

#[test]
fn frame_in_the_same_write_as_the_head_is_echoed() {
    for_each_driver(&ECHO, |gw| {
        let mut w = Req::upgrade("/echo").bytes();
        w.extend(frame(true, OP_TEXT, b"early bird"));
        let mut c = gw.connect();
        c.send(&w);
        let resp = c.read_head();
        assert_101(&resp, RFC_KEY, DEFAULT_COOKIE_NAME, DEFAULT_COOKIE_ATTRS);
        c.expect_frame(OP_TEXT, b"early bird", "frame sent with the head");
    });
}

#[test]
fn several_frames_and_a_close_in_the_same_write_as_the_head() {
    for_each_driver(&ECHO, |gw| {
        let big = rand_bytes(70_000);
        let mut w = Req::upgrade("/echo").bytes();
        w.extend(frame(true, OP_TEXT, b"one"));
        w.extend(frame(true, OP_PING, b"two"));
        w.extend(frame(true, OP_BINARY, &big));
        w.extend(frame(true, OP_CLOSE, &close_payload(1000, "")));
        let mut c = gw.connect();
        c.send(&w);
        let resp = c.read_head();
        assert_101(&resp, RFC_KEY, DEFAULT_COOKIE_NAME, DEFAULT_COOKIE_ATTRS);
        c.expect_frame(OP_TEXT, b"one", "first early frame");
        c.expect_frame(OP_PONG, b"two", "early ping");
        c.expect_frame(OP_BINARY, &big, "early 70000-byte frame");
        c.expect_close_frame(1000, "early close");
        c.expect_closed(false, "after early close");
    });
}

#[test]
fn head_split_across_writes_then_frame() {
    for_each_driver(&ECHO, |gw| {
        let head = Req::upgrade("/echo").bytes();
        let mut c = gw.connect();
        let (a, b) = head.split_at(head.len() - 3);
        c.send(a);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut rest = b.to_vec();
        rest.extend(frame(true, OP_BINARY, &[9, 8, 7]));
        c.send(&rest);
        let resp = c.read_head();
        assert_101(&resp, RFC_KEY, DEFAULT_COOKIE_NAME, DEFAULT_COOKIE_ATTRS);
        c.expect_frame(OP_BINARY, &[9, 8, 7], "frame after a split head");
    });
}
