//! permessage-deflate (RFC 7692, DESIGN §13, issue 16) over real sockets:
//! what the 101 answers to each offer (accepted, declined, malformed, a
//! browser's), the RSV1 rules, a zip bomb stopped at `--max-message-size`,
//! a compressed message over many continuation frames, one 16 KiB message
//! fanned out to 500 compressed and 500 plain subscribers, and
//! `--compression off`. The client side's deflate is miniz_oxide, not the
//! gateway's zlib-rs.

#![cfg(feature = "compression")]

mod common;
mod gw;

use std::time::{Duration, Instant};

use common::*;
use miniz_oxide::deflate::core::{
    compress, create_comp_flags_from_zip_params, CompressorOxide, TDEFLFlush, TDEFLStatus,
};

/// The response line for an accepted offer without `server_max_window_bits`.
const ACCEPTED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const ECHO: [&str; 2] = ["--echo-path", "/echo"];
const RSV1: u8 = 0b100;

/// A client's compressed message: raw deflate, sync flush, the trailing
/// `00 00 ff ff` removed (RFC 7692 §7.2.1).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = CompressorOxide::new(create_comp_flags_from_zip_params(6, 0, 0));
    let mut out = vec![0u8; data.len() + data.len() / 8 + 64];
    let (status, used, n) = compress(&mut c, data, &mut out, TDEFLFlush::Sync);
    assert_eq!((status, used), (TDEFLStatus::Okay, data.len()));
    assert!(out[..n].ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(n - 4);
    out
}

/// Inflates a server's compressed message (the tail appended, then an
/// empty final block so the stream ends).
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff, 0x03, 0x00]);
    miniz_oxide::inflate::decompress_to_vec(&input)
        .unwrap_or_else(|e| panic!("server's compressed message does not inflate: {e:?}"))
}

/// JSON of exactly `n` bytes.
fn json(n: usize) -> Vec<u8> {
    let mut s = String::from("[");
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!(
            "{{\"id\":{i},\"user\":\"u{}\",\"text\":\"hello from the gateway\",\"ok\":true}},",
            i % 17
        ));
        i += 1;
    }
    s.truncate(n);
    s.into_bytes()
}

/// Upgrades on `path` offering `offers` (one `Sec-WebSocket-Extensions`
/// field each); checks the 101 is the contract's head with `line` (if any)
/// as its `Sec-WebSocket-Extensions` right before the cookie.
fn upgrade_with(gw: &Gateway, path: &str, offers: &[&str], line: Option<&str>) -> Conn {
    let mut req = Req::upgrade(path);
    for offer in offers {
        req = req.header("Sec-WebSocket-Extensions", offer);
    }
    let mut c = gw.connect();
    c.send(&req.bytes());
    let resp = c.read_head();
    assert_eq!(resp.status, 101, "{offers:?}: {}", resp.head);
    let cookie = resp.header("Set-Cookie").expect("Set-Cookie");
    let ext = line
        .map(|l| format!("Sec-WebSocket-Extensions: {l}\r\n"))
        .unwrap_or_default();
    let expected = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{ext}Set-Cookie: {cookie}\r\n\r\n",
        accept_for(RFC_KEY)
    );
    assert_eq!(resp.head, expected, "offers {offers:?}");
    c
}

/// Sends one message as a single frame, compressed (RSV1) or not.
fn send_message(c: &mut Conn, opcode: u8, payload: &[u8], compressed: bool) {
    if compressed {
        c.send(&encode_frame(
            true,
            RSV1,
            opcode,
            &deflate(payload),
            Some(rand_mask()),
        ));
    } else {
        c.send_frame(true, opcode, payload);
    }
}

/// Reads one unfragmented data message; returns whether it was compressed,
/// and its plain payload.
fn read_message(c: &mut Conn, opcode: u8, ctx: &str) -> (bool, Vec<u8>) {
    let f = c.read_frame();
    assert!(f.fin && !f.masked && f.opcode == opcode, "{ctx}: {f:?}");
    assert!(f.rsv == 0 || f.rsv == RSV1, "{ctx}: RSV2/3 set: {f:?}");
    if f.rsv == RSV1 {
        (true, inflate(&f.payload))
    } else {
        (false, f.payload)
    }
}

#[test]
fn offers_get_the_answers_rfc_7692_gives() {
    for_each_driver(&ECHO, |gw| {
        let d = gw.driver.name();
        let cases: [(&[&str], Option<String>); 13] = [
            (&["permessage-deflate"], Some(ACCEPTED.into())),
            // What Chrome, Firefox and Safari send.
            (
                &["permessage-deflate; client_max_window_bits"],
                Some(ACCEPTED.into()),
            ),
            (
                &["permessage-deflate; client_no_context_takeover; client_max_window_bits=10"],
                Some(ACCEPTED.into()),
            ),
            // §7.1.2.1: accepted with the same value echoed.
            (
                &["permessage-deflate; server_max_window_bits=10"],
                Some(format!("{ACCEPTED}; server_max_window_bits=10")),
            ),
            (
                &["permessage-deflate; server_max_window_bits=8; server_no_context_takeover"],
                Some(format!("{ACCEPTED}; server_max_window_bits=8")),
            ),
            // Declined (no extension), the connection goes on plain.
            (&["permessage-deflate; server_max_window_bits=16"], None),
            (&["permessage-deflate; server_max_window_bits"], None),
            (&["permessage-deflate; bogus_param"], None),
            (
                &["permessage-deflate; client_no_context_takeover; client_no_context_takeover"],
                None,
            ),
            (&["permessage-deflate; x=\"unterminated"], None),
            (&["x-webkit-deflate-frame"], None),
            // The first offer that can be honoured wins, across fields.
            (
                &[
                    "permessage-deflate; server_max_window_bits=7, x-foo",
                    "permessage-deflate; server_max_window_bits=12, permessage-deflate",
                ],
                Some(format!("{ACCEPTED}; server_max_window_bits=12")),
            ),
            (
                &["permessage-deflate; foo, permessage-deflate; client_max_window_bits"],
                Some(ACCEPTED.into()),
            ),
        ];
        for (offers, line) in cases {
            let mut c = upgrade_with(gw, "/echo", offers, line.as_deref());
            // Whatever was agreed, a message comes back as sent.
            let msg = json(1000);
            send_message(&mut c, OP_TEXT, &msg, line.is_some());
            let (compressed, back) = read_message(&mut c, OP_TEXT, &format!("[{d}] {offers:?}"));
            assert_eq!(back, msg, "[{d}] {offers:?}");
            // zlib has no 256-byte window: with server_max_window_bits=8
            // a message longer than 256 bytes goes out uncompressed.
            let window_8 = line.as_deref().is_some_and(|l| l.ends_with("=8"));
            assert_eq!(compressed, line.is_some() && !window_8, "[{d}] {offers:?}");
            c.send_frame(true, OP_CLOSE, &close_payload(1000, ""));
            c.expect_close_frame(1000, &format!("[{d}] {offers:?}"));
        }
        // The gateway path answers the same, through its session's core.
        let mut c = upgrade_with(
            gw,
            "/ws",
            &["permessage-deflate; client_max_window_bits"],
            Some(ACCEPTED),
        );
        let (_, hello) = read_message(&mut c, OP_TEXT, &format!("[{d}] hello"));
        assert!(hello.starts_with(b"hello "), "[{d}] {hello:?}");
    });
}

#[test]
fn echo_compresses_what_gets_smaller_and_nothing_else() {
    for_each_driver(&ECHO, |gw| {
        let d = gw.driver.name();
        let before = gw.scrape();
        let mut c = upgrade_with(gw, "/echo", &["permessage-deflate"], Some(ACCEPTED));
        // Under --compression-min-size (256 B): plain, whichever way it came.
        for compressed in [false, true] {
            send_message(&mut c, OP_TEXT, b"{\"small\":true}", compressed);
            let (rsv1, back) = read_message(&mut c, OP_TEXT, &format!("[{d}] small"));
            assert_eq!((rsv1, &back[..]), (false, &b"{\"small\":true}"[..]));
        }
        // JSON at and above it: compressed, and much smaller on the wire.
        for n in [256, 1024, 16 * 1024, 200_000] {
            let msg = json(n);
            send_message(&mut c, OP_TEXT, &msg, n % 2 == 0);
            let (rsv1, back) = read_message(&mut c, OP_TEXT, &format!("[{d}] json {n}"));
            assert!(rsv1, "[{d}] {n} bytes of JSON went out uncompressed");
            assert_eq!(back, msg, "[{d}] json {n}");
        }
        // Random bytes do not shrink: they go out plain.
        let noise = rand_bytes(4096);
        send_message(&mut c, OP_BINARY, &noise, true);
        let (rsv1, back) = read_message(&mut c, OP_BINARY, &format!("[{d}] noise"));
        assert_eq!((rsv1, back), (false, noise));
        c.send_frame(true, OP_CLOSE, &close_payload(1000, ""));
        c.expect_close_frame(1000, &format!("[{d}] close"));
        c.expect_closed(false, &format!("[{d}] after close"));

        let out_wire = "wsgate_compression_bytes_total{direction=\"out\",form=\"wire\"}";
        let out_plain = "wsgate_compression_bytes_total{direction=\"out\",form=\"plain\"}";
        let in_wire = "wsgate_compression_bytes_total{direction=\"in\",form=\"wire\"}";
        let in_plain = "wsgate_compression_bytes_total{direction=\"in\",form=\"plain\"}";
        let sent: f64 = (14 * 2 + 256 + 1024 + 16 * 1024 + 200_000 + 4096) as f64;
        let after = gw.scrape_until(Duration::from_secs(2), |s| {
            s.val(out_plain) - before.val(out_plain) >= sent
        });
        let delta = |k: &str| after.val(k) - before.val(k);
        assert_eq!(delta(out_plain), sent, "[{d}]\n{}", after.text);
        assert_eq!(delta(in_plain), sent, "[{d}]");
        assert!(delta(out_wire) < sent / 3.0, "[{d}] {}", delta(out_wire));
        assert!(delta(in_wire) < sent, "[{d}] {}", delta(in_wire));
    });
}

#[test]
fn rsv1_rules_and_bad_compressed_data() {
    for_each_driver(&ECHO, |gw| {
        let d = gw.driver.name();
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]; // RFC 7692 §7.2.3.1
        let offer = ["permessage-deflate"];
        let m = || Some(rand_mask());
        // (agreed, bytes, close code, what)
        let cases: Vec<(bool, Vec<u8>, u16, &str)> = vec![
            (
                false,
                encode_frame(true, RSV1, OP_TEXT, &hello, m()),
                1002,
                "RSV1 without agreement",
            ),
            (
                true,
                encode_frame(true, RSV1, OP_PING, b"", m()),
                1002,
                "RSV1 on a ping",
            ),
            (
                true,
                encode_frame(true, RSV1, OP_CLOSE, &close_payload(1000, ""), m()),
                1002,
                "RSV1 on a close",
            ),
            (
                true,
                [
                    encode_frame(false, RSV1, OP_TEXT, &hello[..3], m()),
                    encode_frame(true, RSV1, OP_CONT, &hello[3..], m()),
                ]
                .concat(),
                1002,
                "RSV1 on a continuation",
            ),
            (
                true,
                encode_frame(true, 0b010, OP_TEXT, b"x", m()),
                1002,
                "RSV2",
            ),
            (
                true,
                encode_frame(true, RSV1, OP_BINARY, &[0xff, 0xff, 0xff], m()),
                1007,
                "not deflate",
            ),
            (
                true,
                encode_frame(
                    true,
                    RSV1,
                    OP_TEXT,
                    &deflate(b"caf\xc3\x28 is not utf-8"),
                    m(),
                ),
                1007,
                "invalid UTF-8 once inflated",
            ),
        ];
        for (agreed, bytes, code, what) in cases {
            let line = agreed.then_some(ACCEPTED);
            let offers: &[&str] = if agreed { &offer } else { &[] };
            let mut c = upgrade_with(gw, "/echo", offers, line);
            c.send_allow_reset(&bytes);
            c.expect_fail(code, &format!("[{d}] {what}"));
        }
        // Compressed binary need not be UTF-8, and a plain message on the
        // same connection is fine.
        let mut c = upgrade_with(gw, "/echo", &offer, Some(ACCEPTED));
        send_message(&mut c, OP_BINARY, b"\xff\xfe\xfd", true);
        assert_eq!(read_message(&mut c, OP_BINARY, d).1, b"\xff\xfe\xfd");
        send_message(&mut c, OP_TEXT, b"plain", false);
        assert_eq!(read_message(&mut c, OP_TEXT, d).1, b"plain");
    });
}

#[test]
fn a_zip_bomb_closes_1009_without_inflating_past_the_limit() {
    for_each_driver(&ECHO, |gw| {
        let d = gw.driver.name();
        // 1 MiB of zeros deflates to about 1 KiB; sync-flushed pieces
        // concatenate into one stream, so ~1 MiB of them is a message that
        // inflates to about 1 GiB.
        let piece = {
            let mut p = deflate(&vec![0u8; 1 << 20]);
            p.extend_from_slice(&[0, 0, 0xff, 0xff]);
            p
        };
        let mut bomb = Vec::with_capacity(1 << 20);
        while bomb.len() + piece.len() < (1 << 20) - 4 {
            bomb.extend_from_slice(&piece);
        }
        bomb.truncate(bomb.len() - 4);
        let inflates_to = (bomb.len() / piece.len()) << 20;
        assert!(inflates_to > 900 << 20, "{inflates_to}");
        let rss_before = gw.rss_kib();
        let mut c = upgrade_with(gw, "/echo", &["permessage-deflate"], Some(ACCEPTED));
        c.send_allow_reset(&encode_frame(
            true,
            RSV1,
            OP_BINARY,
            &bomb,
            Some(rand_mask()),
        ));
        c.expect_fail(1009, &format!("[{d}] a {} KiB bomb", bomb.len() >> 10));
        let grown = gw.rss_kib().saturating_sub(rss_before);
        assert!(grown < 16 * 1024, "[{d}] RSS grew by {grown} KiB");
        eprintln!(
            "[{d}] bomb of {} KiB (inflating to {} MiB): RSS +{grown} KiB",
            bomb.len() >> 10,
            inflates_to >> 20
        );
        // A message of exactly the limit inflates and comes back.
        let mut c = upgrade_with(gw, "/echo", &["permessage-deflate"], Some(ACCEPTED));
        let zeros = vec![0u8; 1 << 20];
        send_message(&mut c, OP_BINARY, &zeros, true);
        let (rsv1, back) = read_message(&mut c, OP_BINARY, &format!("[{d}] 1 MiB"));
        assert!(rsv1 && back == zeros, "[{d}] 1 MiB of zeros");
    });
}

#[test]
fn a_compressed_message_over_many_continuation_frames() {
    for_each_driver(&ECHO, |gw| {
        let d = gw.driver.name();
        let mut c = upgrade_with(
            gw,
            "/echo",
            &["permessage-deflate; client_max_window_bits"],
            Some(ACCEPTED),
        );
        let msg = json(64 * 1024);
        let wire = deflate(&msg);
        // 97 frames, the first with RSV1, pings in between, and the bytes
        // written a few at a time so frames straddle reads.
        let mut bytes = Vec::new();
        let mut pings = 0;
        let chunks: Vec<&[u8]> = wire.chunks(wire.len() / 96).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let (fin, rsv, op) = match i {
                0 => (false, RSV1, OP_TEXT),
                i if i + 1 == chunks.len() => (true, 0, OP_CONT),
                _ => (false, 0, OP_CONT),
            };
            bytes.extend(encode_frame(fin, rsv, op, chunk, Some(rand_mask())));
            if i % 10 == 5 {
                bytes.extend(frame(true, OP_PING, b"p"));
                pings += 1;
            }
        }
        for piece in bytes.chunks(997) {
            c.send(piece);
        }
        let mut pongs = 0;
        let back = loop {
            let f = c.read_frame();
            if f.opcode == OP_PONG {
                pongs += 1;
                continue;
            }
            assert_eq!(
                (f.opcode, f.rsv, f.fin),
                (OP_TEXT, RSV1, true),
                "[{d}] {f:?}"
            );
            break inflate(&f.payload);
        };
        assert_eq!(
            back,
            msg,
            "[{d}] the message across {} frames",
            chunks.len()
        );
        assert!(chunks.len() > 90);
        assert_eq!(pongs, pings, "[{d}] a pong for each ping in between");
    });
}

/// A gateway-protocol subscriber on a raw socket, with or without
/// permessage-deflate.
struct Subscriber {
    conn: Conn,
    compressed: bool,
}

impl Subscriber {
    fn join(gw: &Gateway, topic: &str, compressed: bool) -> Subscriber {
        let (offers, line): (&[&str], _) = if compressed {
            (
                &["permessage-deflate; client_max_window_bits"],
                Some(ACCEPTED),
            )
        } else {
            (&[], None)
        };
        let conn = upgrade_with(gw, "/ws", offers, line);
        let mut s = Subscriber { conn, compressed };
        assert!(s.text().starts_with("hello "));
        send_message(
            &mut s.conn,
            OP_TEXT,
            format!("sub {topic}").as_bytes(),
            compressed,
        );
        assert!(s.text().starts_with(&format!("ok sub {topic} ")));
        s
    }

    /// The next text message; a compressed one only where agreed.
    fn text(&mut self) -> String {
        let (rsv1, payload) = read_message(&mut self.conn, OP_TEXT, "subscriber");
        assert!(
            !rsv1 || self.compressed,
            "a compressed frame without agreement"
        );
        String::from_utf8(payload).expect("UTF-8 text")
    }
}

#[test]
fn one_fan_out_serves_500_compressed_and_500_plain_subscribers() {
    // No presence lines: each subscriber's next frame is the message.
    let args = gw::args(&["--publish-token", gw::TOKEN, "--presence-max-members", "0"]);
    let gw = Gateway::start(Driver::IoUring, &args);
    let topic = "room.deflate";
    let subs: Vec<Subscriber> = (0..1000)
        .map(|i| Subscriber::join(&gw, topic, i % 2 == 0))
        .collect();
    let before = gw.scrape();
    assert_eq!(before.sum("wsgate_connections_compressed"), 500.0);
    assert_eq!(before.sum("wsgate_connections_active"), 1000.0);
    let payload = String::from_utf8(json(16 * 1024)).unwrap();
    let seq = gw::api_publish(&gw, topic, payload.as_bytes(), false);
    let line = format!("msg {topic} {seq} {payload}");
    let started = Instant::now();
    let mut compressed_frames = 0;
    for mut s in subs {
        let f = s.conn.read_frame();
        assert_eq!((f.opcode, f.fin), (OP_TEXT, true), "{f:?}");
        let got = if f.rsv == RSV1 {
            assert!(s.compressed, "a compressed frame to a plain subscriber");
            assert!(f.payload.len() < line.len() / 3, "{}", f.payload.len());
            compressed_frames += 1;
            inflate(&f.payload)
        } else {
            assert_eq!(f.rsv, 0);
            f.payload
        };
        assert!(got == line.as_bytes(), "a subscriber got another message");
    }
    assert_eq!(
        compressed_frames, 500,
        "every subscriber that agreed gets the compressed frame"
    );
    eprintln!("1000 deliveries read in {:?}", started.elapsed());
    let plain = "wsgate_compression_bytes_total{direction=\"out\",form=\"plain\"}";
    let wire = "wsgate_compression_bytes_total{direction=\"out\",form=\"wire\"}";
    let after = gw.scrape();
    let sent_plain = after.val(plain) - before.val(plain);
    let sent_wire = after.val(wire) - before.val(wire);
    assert_eq!(sent_plain, 500.0 * line.len() as f64);
    assert!(sent_wire < sent_plain / 3.0, "{sent_wire} of {sent_plain}");
}

#[test]
fn a_resumed_session_on_another_core_keeps_the_agreement() {
    // A cookie's session may live on the other core: the hand-over carries
    // the agreement into the 101 the owner completes.
    let gw = Gateway::start(Driver::IoUring, &gw::args(&[]));
    let offer = "permessage-deflate; server_max_window_bits=9";
    let line = format!("{ACCEPTED}; server_max_window_bits=9");
    let id = {
        let req = Req::upgrade("/ws").header("Sec-WebSocket-Extensions", offer);
        let mut c = gw.connect();
        c.send(&req.bytes());
        let resp = c.read_head();
        assert_eq!(resp.header("Sec-WebSocket-Extensions"), Some(line.as_str()));
        cookie_id(resp.header("Set-Cookie").unwrap(), DEFAULT_COOKIE_NAME).to_string()
    };
    for i in 0..8 {
        let req = Req::upgrade("/ws")
            .header("Sec-WebSocket-Extensions", offer)
            .header("Cookie", &format!("{DEFAULT_COOKIE_NAME}={id}"));
        let mut c = gw.connect();
        c.send(&req.bytes());
        let resp = c.read_head();
        assert_eq!(
            resp.header("Sec-WebSocket-Extensions"),
            Some(line.as_str()),
            "{i}: {}",
            resp.head
        );
        let (_, hello) = read_message(&mut c, OP_TEXT, "hello");
        assert!(
            hello.ends_with(b" resumed gw-test-node"),
            "{i}: {:?}",
            String::from_utf8_lossy(&hello)
        );
        // A window of 2^9 bytes: a long message still comes back right.
        send_message(&mut c, OP_TEXT, format!("sub t{i}").as_bytes(), true);
        let msg = String::from_utf8(json(8000)).unwrap();
        send_message(&mut c, OP_TEXT, format!("pub t{i} {msg}").as_bytes(), true);
        let mut got = Vec::new();
        while got.len() < 3 {
            got.push(String::from_utf8(read_message(&mut c, OP_TEXT, "reply").1).unwrap());
        }
        assert!(got.iter().any(|l| l.ends_with(&msg)), "{i}: {got:?}");
    }
}

#[test]
fn compression_off_ignores_offers() {
    for_each_driver(&["--echo-path", "/echo", "--compression", "off"], |gw| {
        let d = gw.driver.name();
        let mut c = upgrade_with(
            gw,
            "/echo",
            &["permessage-deflate; client_max_window_bits"],
            None,
        );
        let msg = json(4096);
        send_message(&mut c, OP_TEXT, &msg, false);
        assert_eq!(read_message(&mut c, OP_TEXT, d), (false, msg));
        send_message(&mut c, OP_TEXT, b"compressed anyway", true);
        c.expect_fail(1002, &format!("[{d}] RSV1 with compression off"));
        assert_eq!(gw.scrape().sum("wsgate_connections_compressed"), 0.0);
    });
}
