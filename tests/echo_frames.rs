//! The echo path returns every message as one unfragmented, unmasked frame
//! with the same opcode and payload; pings get pongs.

mod common;
use common::*;
use std::time::Duration;

const ECHO: [&str; 2] = ["--echo-path", "/echo"];

#[test]
fn text_and_binary_are_echoed() {
    for_each_driver(&ECHO, |gw| {
        let mut c = gw.upgrade("/echo");
        c.send_frame(true, OP_TEXT, b"hello");
        c.expect_frame(OP_TEXT, b"hello", "text echo");
        c.send_frame(true, OP_BINARY, &[0, 1, 2, 0xfe, 0xff]);
        c.expect_frame(OP_BINARY, &[0, 1, 2, 0xfe, 0xff], "binary echo");
        let unicode = "grüße, 世界 🌍".as_bytes();
        c.send_frame(true, OP_TEXT, unicode);
        c.expect_frame(OP_TEXT, unicode, "unicode text echo");
        // Clean close afterwards.
        c.send_frame(true, OP_CLOSE, &close_payload(1000, ""));
        c.expect_close_frame(1000, "close after echo");
        c.expect_closed(false, "after close handshake");
    });
}

#[test]
fn payload_length_encodings() {
    // (length, expected size of the extended length field in the echo)
    let cases = [
        (0usize, 0usize),
        (1, 0),
        (125, 0),
        (126, 2),
        (127, 2),
        (65535, 2),
        (65536, 8),
        (200_000, 8),
    ];
    for_each_driver(&ECHO, |gw| {
        let mut c = gw.upgrade("/echo");
        for &(len, ext) in &cases {
            for op in [OP_BINARY, OP_TEXT] {
                let payload: Vec<u8> = if op == OP_TEXT {
                    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
                } else {
                    rand_bytes(len)
                };
                c.send_frame(true, op, &payload);
                let f = c.expect_frame(op, &payload, &format!("echo of {len} bytes, opcode {op}"));
                assert_eq!(
                    f.ext_len_bytes, ext,
                    "echo of {len} bytes must use the minimal length encoding (RFC 6455 5.2)"
                );
            }
        }
    });
}

#[test]
fn fragmented_message_with_interleaved_ping() {
    for_each_driver(&ECHO, |gw| {
        let mut c = gw.upgrade("/echo");
        let mut w = Vec::new();
        w.extend(frame(false, OP_TEXT, b"Hel"));
        w.extend(frame(true, OP_PING, b"p1"));
        w.extend(frame(false, OP_CONT, b"lo"));
        w.extend(frame(true, OP_CONT, b", world"));
        c.send(&w);
        // The ping arrives mid-message; its pong and the echo may come in either
        // order, but each exactly once.
        let a = c.read_frame();
        let b = c.read_frame();
        let (pong, msg) = if a.opcode == OP_PONG { (a, b) } else { (b, a) };
        assert_eq!(
            (pong.opcode, pong.fin, pong.masked, pong.payload.as_slice()),
            (OP_PONG, true, false, &b"p1"[..]),
            "{pong:?}"
        );
        assert_eq!(
            (
                msg.opcode,
                msg.fin,
                msg.masked,
                msg.rsv,
                msg.payload.as_slice()
            ),
            (OP_TEXT, true, false, 0, &b"Hello, world"[..]),
            "fragmented message must be echoed as one frame: {msg:?}"
        );

        // Binary, fragments sent in separate writes, empty middle fragment.
        c.send_frame(false, OP_BINARY, &[1, 2, 3]);
        c.send_frame(false, OP_CONT, &[]);
        c.send_frame(true, OP_PING, b"");
        c.send_frame(true, OP_CONT, &[4, 5]);
        let a = c.read_frame();
        let b = c.read_frame();
        let (pong, msg) = if a.opcode == OP_PONG { (a, b) } else { (b, a) };
        assert_eq!((pong.opcode, pong.payload.len()), (OP_PONG, 0), "{pong:?}");
        assert_eq!(
            (msg.opcode, msg.fin, msg.payload.as_slice()),
            (OP_BINARY, true, &[1u8, 2, 3, 4, 5][..]),
            "{msg:?}"
        );
    });
}

#[test]
fn utf8_codepoint_split_across_fragments_is_valid() {
    for_each_driver(&ECHO, |gw| {
        let mut c = gw.upgrade("/echo");
        let text = "a€b😀c".as_bytes(); // € = e2 82 ac, 😀 = f0 9f 98 80
        c.send_frame(false, OP_TEXT, &text[..2]); // "a" + first byte of €
        c.send_frame(false, OP_CONT, &text[2..6]); // rest of € + "b" + first byte of 😀
        c.send_frame(true, OP_CONT, &text[6..]);
        c.expect_frame(OP_TEXT, text, "text split mid-codepoint");
    });
}

#[test]
fn ping_gets_pong_with_same_payload() {
    for_each_driver(&ECHO, |gw| {
        let mut c = gw.upgrade("/echo");
        c.send_frame(true, OP_PING, b"");
        c.expect_frame(OP_PONG, b"", "empty ping");
        let p125: Vec<u8> = rand_bytes(125);
        c.send_frame(true, OP_PING, &p125);
        c.expect_frame(OP_PONG, &p125, "125-byte ping");
        // An unsolicited pong is ignored (no reply).
        c.send_frame(true, OP_PONG, b"unsolicited");
        c.send_frame(true, OP_TEXT, b"after pong");
        c.expect_frame(OP_TEXT, b"after pong", "echo after unsolicited pong");
    });
}

#[test]
fn many_frames_in_one_write_are_all_answered_in_order() {
    for_each_driver(&ECHO, |gw| {
        let mut c = gw.upgrade("/echo");
        let mut w = Vec::new();
        for i in 0..200 {
            if i % 10 == 5 {
                w.extend(frame(true, OP_PING, format!("ping-{i}").as_bytes()));
            } else {
                w.extend(frame(true, OP_TEXT, format!("msg-{i}").as_bytes()));
            }
        }
        c.send(&w);
        for i in 0..200 {
            if i % 10 == 5 {
                c.expect_frame(
                    OP_PONG,
                    format!("ping-{i}").as_bytes(),
                    &format!("pong #{i}"),
                );
            } else {
                c.expect_frame(
                    OP_TEXT,
                    format!("msg-{i}").as_bytes(),
                    &format!("echo #{i}"),
                );
            }
        }
    });
}

#[test]
fn frame_trickled_byte_by_byte_is_reassembled() {
    for_each_driver(&ECHO, |gw| {
        let mut c = gw.upgrade("/echo");
        let payload: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
        let f = frame(true, OP_BINARY, &payload);
        for (i, b) in f.iter().enumerate() {
            c.send(&[*b]);
            if i < 16 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        c.expect_frame(OP_BINARY, &payload, "trickled frame");
    });
}

#[test]
fn concurrent_clients_are_echoed_independently() {
    for_each_driver(&ECHO, |gw| {
        let addr = gw.addr;
        let handles: Vec<_> = (0..16)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut c = Conn::connect(addr);
                    c.send(&Req::upgrade("/echo").bytes());
                    let resp = c.read_head();
                    assert_eq!(resp.status, 101, "{}", resp.head);
                    for i in 0..50 {
                        let msg = format!("client {t} message {i}");
                        c.send_frame(true, OP_TEXT, msg.as_bytes());
                        c.expect_frame(OP_TEXT, msg.as_bytes(), &msg);
                    }
                })
            })
            .collect();
        for h in handles {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
}

#[test]
fn full_duplex_volume_with_backpressure() {
    // 100 messages of 100 KB written by one thread while another reads the
    // echoes: the server must keep reading while its writes are blocked by a
    // slow reader and vice versa, and must not lose or reorder anything.
    for_each_driver(&ECHO, |gw| {
        let c = gw.upgrade("/echo");
        let mut writer = c.stream.try_clone().unwrap();
        let mut reader = c;
        const N: usize = 100;
        const LEN: usize = 100_000;
        let w = std::thread::spawn(move || {
            use std::io::Write;
            for i in 0..N {
                let payload = vec![(i % 251) as u8; LEN];
                writer
                    .write_all(&frame(true, OP_BINARY, &payload))
                    .expect("write");
            }
        });
        std::thread::sleep(Duration::from_millis(300)); // let buffers fill up first
        for i in 0..N {
            let expected = vec![(i % 251) as u8; LEN];
            reader.expect_frame(OP_BINARY, &expected, &format!("echo #{i}"));
        }
        w.join().expect("writer thread");
    });
}
