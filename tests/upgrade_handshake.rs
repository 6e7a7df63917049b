//! A valid upgrade request gets exactly the contract's 101 head, with the
//! RFC 6455 Sec-WebSocket-Accept for the client's key.

mod common;
use common::*;

#[test]
fn test_helpers_sha1_and_accept_match_known_vectors() {
    // FIPS 180 "abc" vector.
    let abc: String = sha1(b"abc").iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(abc, "a9993e364706816aba3e25717850c26c9cd0d89d");
    assert_eq!(accept_for(RFC_KEY), RFC_ACCEPT);
    assert_eq!(
        accept_for("x3JJHMbDL1EzLkh9GBhXDw=="),
        "HSmrc0sMlYUkAGmm5OPpG2HaGWk="
    );
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert!(is_uuid_v4(&make_uuid_v4()));
    assert!(!is_uuid_v4("6ba7b810-9dad-11d1-80b4-00c04fd430c8")); // v1
}

#[test]
fn rfc_sample_key_gets_exact_101_head() {
    for_each_driver(&[], |gw| {
        let mut c = gw.connect();
        c.send(&Req::upgrade("/ws").bytes());
        let resp = c.read_head();
        // assert_101 compares the whole head byte for byte (order included).
        let id = assert_101(&resp, RFC_KEY, DEFAULT_COOKIE_NAME, DEFAULT_COOKIE_ATTRS);
        assert!(resp
            .head
            .contains(&format!("Sec-WebSocket-Accept: {RFC_ACCEPT}\r\n")));
        assert!(is_uuid_v4(&id));
        // The gateway speaks first, with exactly one `hello` naming the
        // session's peer id (never the session id), and then waits.
        let hello = c.read_frame();
        assert_eq!(hello.opcode, 0x1, "hello is a text frame");
        let text = String::from_utf8(hello.payload).unwrap();
        let parts: Vec<&str> = text.split(' ').collect();
        assert!(
            parts.len() == 4 && parts[0] == "hello" && parts[2] == "new",
            "unexpected first frame {text:?}"
        );
        assert!(
            parts[1].len() == 16
                && parts[1]
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "the hello names a 16-hex peer id: {text:?}"
        );
        assert!(
            !text.contains(&id),
            "the hello carries the session id: {text:?}"
        );
        c.expect_silent_open(std::time::Duration::from_millis(300), "after hello");
    });
}

#[test]
fn random_keys_get_the_matching_accept() {
    for_each_driver(&[], |gw| {
        for _ in 0..5 {
            let key = rand_key();
            let req = Req::upgrade("/ws").set("Sec-WebSocket-Key", &key);
            let mut c = gw.connect();
            c.send(&req.bytes());
            let resp = c.read_head();
            assert_101(&resp, &key, DEFAULT_COOKIE_NAME, DEFAULT_COOKIE_ATTRS);
        }
    });
}

#[test]
fn header_names_and_tokens_are_case_insensitive_and_token_lists_work() {
    for_each_driver(&[], |gw| {
        let variants = [
            // header names in lowercase, Upgrade token in mixed case
            Req::get("/ws")
                .header("upgrade", "WebSocket")
                .header("connection", "upgrade")
                .header("sec-websocket-key", RFC_KEY)
                .header("sec-websocket-version", "13"),
            // Connection as a token list
            Req::upgrade("/ws").set("Connection", "keep-alive, Upgrade"),
            Req::upgrade("/ws").set("Connection", "Upgrade,keep-alive"),
            // extra unrelated headers
            Req::upgrade("/ws")
                .header("User-Agent", "wsgate-tests/1.0")
                .header("Sec-WebSocket-Protocol", "chat")
                .header("Accept-Encoding", "gzip"),
        ];
        for req in variants {
            let mut c = gw.connect();
            c.send(&req.bytes());
            let resp = c.read_head();
            assert!(
                resp.status == 101,
                "request\n{}\nexpected 101, got:\n{}",
                String::from_utf8_lossy(&req.bytes()),
                resp.head
            );
            assert_101(&resp, RFC_KEY, DEFAULT_COOKIE_NAME, DEFAULT_COOKIE_ATTRS);
        }
    });
}

#[test]
fn custom_ws_path_flag_moves_the_websocket_endpoint() {
    for_each_driver(&["--ws-path", "/socket"], |gw| {
        let _ = gw.upgrade("/socket");
        let resp = gw.roundtrip(&Req::upgrade("/ws").bytes());
        assert_rejection(&resp, 404, "old default /ws after --ws-path /socket");
        let resp = gw.roundtrip(&Req::upgrade("/socket").method("POST").bytes());
        assert_rejection(&resp, 405, "POST /socket");
        assert_eq!(resp.header("Allow"), Some("GET"), "{}", resp.head);
    });
}

#[test]
fn echo_path_accepts_upgrades_when_configured() {
    for_each_driver(&["--echo-path", "/echo"], |gw| {
        let _ = gw.upgrade("/echo");
        let _ = gw.upgrade("/ws");
    });
}
