//! `POST /publish/<topic>` on the admin listener: bearer token, status codes,
//! text and binary bodies, and the seq in the body matches the delivered
//! `msg`.

mod common;
mod gw;

use common::for_each_driver;
use gw::{admin_request, api_publish, args, parse_binary_msg, topic, Client, Event, TOKEN};
use std::time::Duration;

fn with_token(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec!["--publish-token", TOKEN];
    v.extend_from_slice(extra);
    args(&v)
}

#[test]
fn api_publishes_reach_subscribers_with_the_answered_seq() {
    for_each_driver(&with_token(&[]), |gw| {
        let t = topic("api");
        let mut s = Client::new(gw, "S");
        let mut p = Client::new(gw, "P");
        assert_eq!(s.sub(&t), 0);

        let seq = api_publish(gw, &t, b"hello from the backend", false);
        assert_eq!(seq, 1);
        s.expect_msg_seq(&t, seq, "hello from the backend", "the API publish");

        // Sequence numbers are shared with WebSocket publishers.
        assert_eq!(p.publish(&t, "from a socket", false), 2);
        s.expect_msg_seq(&t, 2, "from a socket", "the socket publish");
        assert_eq!(api_publish(gw, &t, b"again", false), 3);
        s.expect_msg_seq(&t, 3, "again", "the second API publish");

        // Binary body → binary frame.
        let raw: Vec<u8> = vec![0, 1, 2, b'\n', b' ', 0xff, 0xfe, 0x80];
        let seq = api_publish(gw, &t, &raw, true);
        assert_eq!(seq, 4);
        match s.next("the binary API publish") {
            Event::Binary(data) => {
                let (tt, sq, body) = parse_binary_msg(&data)
                    .unwrap_or_else(|| panic!("malformed binary msg {data:?}"));
                assert_eq!((tt.as_str(), sq, body), (t.as_str(), 4, raw.as_slice()));
            }
            other => panic!("expected a binary frame, got {other:?}"),
        }

        // A topic nobody subscribed to gets seqs too.
        let lonely = topic("lonely");
        assert_eq!(api_publish(gw, &lonely, b"x", false), 1);
        assert_eq!(api_publish(gw, &lonely, b"y", false), 2);
        // A later subscriber sees the topic's current seq.
        assert_eq!(p.sub(&lonely), 2);

        // An empty body is a valid (empty) message.
        let seq = api_publish(gw, &t, b"", false);
        assert_eq!(seq, 5);
        s.expect_msg_seq(&t, 5, "", "the empty API publish");
        s.expect_quiet(Duration::from_millis(200), "nothing else");
    });
}

#[test]
fn api_refusals() {
    for_each_driver(&with_token(&["--max-message-size", "4KiB"]), |gw| {
        let t = topic("refused");
        let mut s = Client::new(gw, "S");
        s.sub(&t);
        let path = format!("/publish/{t}");
        let good = format!("Bearer {TOKEN}");
        let wrong = format!("Bearer {}", TOKEN.replace('0', "9"));

        let r = admin_request(gw, "POST", &path, &[], Some(b"no token"));
        assert_eq!(r.status, 401, "missing token: {}{}", r.head, r.body);
        let r = admin_request(
            gw,
            "POST",
            &path,
            &[("Authorization", &wrong)],
            Some(b"wrong token"),
        );
        assert_eq!(r.status, 403, "wrong token: {}{}", r.head, r.body);
        let r = admin_request(
            gw,
            "POST",
            &path,
            &[("Authorization", &format!("Bearer {TOKEN}x"))],
            Some(b"token with a suffix"),
        );
        assert_eq!(r.status, 403, "token with a suffix: {}{}", r.head, r.body);
        for bad in ["bad!topic", "sp%20ace", &"x".repeat(129)] {
            let r = admin_request(
                gw,
                "POST",
                &format!("/publish/{bad}"),
                &[("Authorization", &good)],
                Some(b"bad topic"),
            );
            assert_eq!(r.status, 400, "invalid topic {bad:?}: {}{}", r.head, r.body);
        }
        // Over --max-message-size: refused from the declared length, before
        // the body is sent.
        let r = admin_request(
            gw,
            "POST",
            &path,
            &[("Authorization", &good), ("Content-Length", "4097")],
            None,
        );
        assert_eq!(r.status, 413, "body over the limit: {}{}", r.head, r.body);
        let big = vec![b'y'; 4097];
        let r = admin_request(gw, "POST", &path, &[("Authorization", &good)], Some(&big));
        assert_eq!(
            r.status, 413,
            "body over the limit, sent: {}{}",
            r.head, r.body
        );
        let r = admin_request(gw, "GET", &path, &[("Authorization", &good)], None);
        assert_eq!(r.status, 405, "GET: {}{}", r.head, r.body);

        // Nothing of that was published: the next good publish is seq 1, and
        // exactly at the limit is fine.
        s.expect_quiet(Duration::from_millis(200), "refused publishes");
        let body = "z".repeat(4096);
        assert_eq!(api_publish(gw, &t, body.as_bytes(), false), 1);
        s.expect_msg_seq(&t, 1, &body, "a body of exactly --max-message-size");
    });
}

#[test]
fn api_is_off_without_a_token() {
    for_each_driver(&args(&[]), |gw| {
        let r = admin_request(
            gw,
            "POST",
            "/publish/anything",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            Some(b"hi"),
        );
        assert_eq!(
            r.status, 404,
            "publish API without --publish-token: {}{}",
            r.head, r.body
        );
        let r = admin_request(gw, "POST", "/publish/anything", &[], Some(b"hi"));
        assert_eq!(r.status, 404, "without token either: {}{}", r.head, r.body);
    });
}
