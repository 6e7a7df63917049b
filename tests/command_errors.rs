//! Bad commands are answered with `err <code> <text>` and the connection keeps
//! working; payloads are delivered byte for byte (spaces, UTF-8, binary).

mod common;
mod gw;

use common::for_each_driver;
use gw::{args, parse_binary_msg, topic, Client, Event};
use std::time::Duration;

/// Send `cmd`; the answer must be `err <code> <text>` with `code` one of
/// `codes` and a non-empty text.
fn expect_err(c: &mut Client, cmd: &[u8], binary: bool, codes: &[u16]) {
    if binary {
        c.send_binary(cmd);
    } else {
        c.send_text(std::str::from_utf8(cmd).unwrap());
    }
    let shown = String::from_utf8_lossy(cmd);
    let l = c.line(&format!("the err answer to {shown:?}"));
    let mut parts = l.splitn(3, ' ');
    let (kw, code, text) = (parts.next(), parts.next(), parts.next());
    let code: Option<u16> = code.and_then(|c| c.parse().ok());
    assert!(
        kw == Some("err")
            && code.is_some_and(|c| codes.contains(&c))
            && text.is_some_and(|t| !t.trim().is_empty()),
        "{shown:?} ({}): expected `err <{codes:?}> <text>`, got {l:?}",
        if binary { "binary" } else { "text" }
    );
}

#[test]
fn bad_commands_get_err_and_the_connection_stays() {
    for_each_driver(&args(&[]), |gw| {
        let mut c = Client::new(gw, "C");
        let long = format!("sub {}", "a".repeat(129));
        let text_cases: Vec<(&str, &[u16])> = vec![
            ("bogus", &[400]),
            ("bogus topic", &[400]),
            ("SUB upper", &[400]),
            ("", &[400]),
            ("sub", &[400, 422]),
            ("sub ", &[400, 422]),
            ("unsub", &[400, 422]),
            ("who", &[400, 422]),
            ("pub", &[400, 422]),
            ("sub bad!topic", &[422]),
            ("sub sp ace", &[400, 422]),
            ("pub bad/topic payload", &[422]),
            ("who bad#topic", &[422]),
            ("unsub é", &[422]),
            (&long, &[422]),
        ];
        for (cmd, codes) in &text_cases {
            expect_err(&mut c, cmd.as_bytes(), false, codes);
        }
        // Binary frames need a header line ending in `\n`.
        expect_err(&mut c, b"pub nolinefeed", true, &[400]);
        expect_err(&mut c, b"bogus x\n\x00\x01", true, &[400]);
        expect_err(&mut c, b"pub bad!topic\n\x00", true, &[422]);

        // Still fully working; the errors consumed no sequence numbers.
        let t = topic("errs");
        assert_eq!(c.sub(&t), 0);
        assert_eq!(c.publish(&t, "still here", true), 1);
        let max = "T".repeat(128);
        assert_eq!(c.sub(&max), 0, "a 128-byte topic is valid");
        let all = "Az09._:-";
        assert_eq!(c.sub(all), 0, "every allowed character");
        assert_eq!(c.who(all), vec![c.peer.clone()]);
        c.expect_quiet(Duration::from_millis(200), "nothing pending");
    });
}

#[test]
fn text_payloads_are_delivered_intact() {
    for_each_driver(&args(&[]), |gw| {
        let t = topic("text");
        let mut a = Client::new(gw, "A");
        let mut b = Client::new(gw, "B");
        a.sub(&t);
        b.sub(&t);
        a.expect_line(&format!("join {t} {}", b.peer), "B joining");
        let payloads = [
            "hello world",
            "  leading and trailing spaces  ",
            "double  spaces   and\ttabs",
            "looks like a command: sub x; pub y z",
            "héllo wörld ✓ 日本語 🎉",
            "line one\nline two",
        ];
        for (i, p) in payloads.iter().enumerate() {
            let seq = b.publish(&t, p, true);
            assert_eq!(seq, i as u64 + 1);
            a.expect_msg_seq(&t, seq, p, &format!("payload {p:?}"));
        }
        // A large text payload (64 KiB, 16-bit and 64-bit frame lengths).
        for len in [200, 70_000] {
            let big = "0123456789 ".repeat(len / 11);
            let seq = b.publish(&t, &big, true);
            a.expect_msg_seq(&t, seq, &big, &format!("a {}-byte payload", big.len()));
        }
        a.expect_quiet(Duration::from_millis(200), "nothing else");
    });
}

#[test]
fn binary_pub_delivers_binary_frames() {
    for_each_driver(&args(&[]), |gw| {
        let t = topic("bin");
        let mut a = Client::new(gw, "A");
        let mut b = Client::new(gw, "B");
        a.sub(&t);
        b.sub(&t);
        a.expect_line(&format!("join {t} {}", b.peer), "B joining");
        let raw: Vec<u8> = (0..=255u8).chain([b'\n', b' ', b'\n', 0]).collect();
        let mut frame = format!("pub {t}\n").into_bytes();
        frame.extend_from_slice(&raw);
        b.send_binary(&frame);

        let check = |who: &str, ev: Event| match ev {
            Event::Binary(data) => {
                let (tt, seq, body) = parse_binary_msg(&data)
                    .unwrap_or_else(|| panic!("{who}: malformed binary msg {ev:?}", ev = data));
                assert_eq!(tt, t, "{who}: topic");
                assert_eq!(seq, 1, "{who}: seq");
                assert!(body == raw.as_slice(), "{who}: payload bytes differ");
            }
            other => panic!("{who}: expected a binary msg frame, got {other:?}"),
        };
        // The publisher gets its own binary msg, then a text `ok pub`.
        check("B (publisher)", b.next("B's own binary msg"));
        assert_eq!(b.expect_ok_pub(&t), 1);
        check("A", a.next("A's binary msg"));

        // An empty binary payload, then text and binary interleave in order.
        b.send_binary(format!("pub {t}\n").as_bytes());
        match a.next("empty binary msg") {
            Event::Binary(d) => assert_eq!(d, format!("msg {t} 2\n").into_bytes()),
            other => panic!("A: expected an empty binary msg, got {other:?}"),
        }
        check_skip_own(&mut b, &t, 2);
        assert_eq!(b.publish(&t, "text after binary", true), 3);
        a.expect_msg_seq(&t, 3, "text after binary", "text after binary");
        a.expect_quiet(Duration::from_millis(200), "nothing else");
    });
}

/// Skip the publisher's own binary msg (checking its seq) and its `ok pub`.
fn check_skip_own(b: &mut Client, t: &str, seq: u64) {
    match b.next("own binary msg") {
        Event::Binary(d) => {
            let (tt, s, _) = parse_binary_msg(&d).expect("binary msg");
            assert_eq!((tt.as_str(), s), (t, seq));
        }
        other => panic!("B: expected its own binary msg, got {other:?}"),
    }
    assert_eq!(b.expect_ok_pub(t), seq);
}
