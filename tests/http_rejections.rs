//! Malformed or unacceptable HTTP requests are rejected with the right status,
//! `Content-Length`, `Connection: close`, a short body, and then EOF.

mod common;
use common::*;

fn expect(gw: &Gateway, raw: &[u8], code: u16, what: &str) -> Response {
    let resp = gw.roundtrip(raw);
    assert_rejection(
        &resp,
        code,
        &format!("{what}\nrequest: {:?}", String::from_utf8_lossy(raw)),
    );
    resp
}

#[test]
fn unknown_path_is_404() {
    for_each_driver(&[], |gw| {
        expect(gw, &Req::get("/nope").bytes(), 404, "plain GET /nope");
        expect(gw, &Req::upgrade("/nope").bytes(), 404, "upgrade on /nope");
        expect(gw, &Req::get("/").bytes(), 404, "GET /");
        // A prefix of or extension to the WS path is not the WS path.
        expect(gw, &Req::upgrade("/wsx").bytes(), 404, "upgrade on /wsx");
        expect(
            gw,
            &Req::upgrade("/ws/extra").bytes(),
            404,
            "upgrade on /ws/extra",
        );
    });
}

#[test]
fn echo_path_is_404_unless_configured() {
    for_each_driver(&[], |gw| {
        expect(
            gw,
            &Req::upgrade("/echo").bytes(),
            404,
            "upgrade on /echo without --echo-path",
        );
    });
}

#[test]
fn non_get_on_ws_path_is_405_with_allow_get() {
    for_each_driver(&["--echo-path", "/echo"], |gw| {
        for (method, path) in [
            ("POST", "/ws"),
            ("PUT", "/ws"),
            ("DELETE", "/ws"),
            ("POST", "/echo"),
        ] {
            let req = Req::upgrade(path)
                .method(method)
                .header("Content-Length", "0");
            let resp = expect(gw, &req.bytes(), 405, &format!("{method} {path}"));
            assert_eq!(
                resp.header("Allow"),
                Some("GET"),
                "{method} {path}:\n{}",
                resp.head
            );
        }
    });
}

#[test]
fn http_1_0_upgrade_is_400() {
    for_each_driver(&[], |gw| {
        expect(
            gw,
            &Req::upgrade("/ws").version("HTTP/1.0").bytes(),
            400,
            "HTTP/1.0 upgrade",
        );
    });
}

#[test]
fn whitespace_before_header_colon_is_400() {
    for_each_driver(&[], |gw| {
        let raw = "GET /ws HTTP/1.1\r\nHost : gw.example\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Version: 13\r\n\r\n";
        expect(gw, raw.as_bytes(), 400, "`Host : x`");
        let raw = "GET /ws HTTP/1.1\r\nHost: gw.example\r\nUpgrade\t: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Version: 13\r\n\r\n";
        expect(gw, raw.as_bytes(), 400, "`Upgrade\\t: websocket`");
    });
}

#[test]
fn bare_lf_anywhere_in_head_is_400() {
    let valid = String::from_utf8(Req::upgrade("/ws").bytes()).unwrap();
    // Replace the CRLF ending line `i` (0 = request line) by a bare LF.
    let line_count = valid.matches("\r\n").count();
    let cases: Vec<(String, String)> = (0..line_count)
        .map(|i| {
            let mut out = String::new();
            for (n, part) in valid.split("\r\n").enumerate() {
                out.push_str(part);
                if n < line_count {
                    out.push_str(if n == i { "\n" } else { "\r\n" });
                }
            }
            (format!("bare LF ending line {i}"), out)
        })
        .collect();
    for_each_driver(&[], |gw| {
        for (what, raw) in &cases {
            expect(gw, raw.as_bytes(), 400, what);
        }
        // Also on a non-upgrade route.
        expect(
            gw,
            b"GET /ws-health HTTP/1.1\nHost: gw.example\r\n\r\n",
            400,
            "bare LF on health request line",
        );
    });
}

#[test]
fn bare_cr_in_head_is_400() {
    for_each_driver(&[], |gw| {
        let raw = String::from_utf8(Req::upgrade("/ws").header("X-Thing", "a\rb").bytes()).unwrap();
        expect(gw, raw.as_bytes(), 400, "bare CR inside a header value");
        let raw = String::from_utf8(Req::upgrade("/ws").bytes())
            .unwrap()
            .replacen("GET /ws HTTP/1.1\r\n", "GET /ws HTTP/1.1\r\r\n", 1);
        expect(gw, raw.as_bytes(), 400, "CR CR LF after the request line");
    });
}

#[test]
fn missing_host_is_400() {
    for_each_driver(&[], |gw| {
        expect(
            gw,
            &Req::upgrade("/ws").without("Host").bytes(),
            400,
            "upgrade without Host",
        );
    });
}

#[test]
fn connection_without_upgrade_token_is_400() {
    for_each_driver(&[], |gw| {
        for v in ["keep-alive", "close", "keep-alive, notupgrade", "upgrades"] {
            expect(
                gw,
                &Req::upgrade("/ws").set("Connection", v).bytes(),
                400,
                &format!("Connection: {v}"),
            );
        }
    });
}

#[test]
fn bad_sec_websocket_key_is_400() {
    let cases: Vec<(String, Req)> = vec![
        (
            "missing key".into(),
            Req::upgrade("/ws").without("Sec-WebSocket-Key"),
        ),
        (
            "empty key".into(),
            Req::upgrade("/ws").set("Sec-WebSocket-Key", ""),
        ),
        (
            "key of 3 bytes".into(),
            Req::upgrade("/ws").set("Sec-WebSocket-Key", "AAAA"),
        ),
        (
            "key of 15 bytes".into(),
            Req::upgrade("/ws").set("Sec-WebSocket-Key", &base64(&[7u8; 15])),
        ),
        (
            "key of 17 bytes".into(),
            Req::upgrade("/ws").set("Sec-WebSocket-Key", &base64(&[7u8; 17])),
        ),
        (
            "key of 32 bytes".into(),
            Req::upgrade("/ws").set("Sec-WebSocket-Key", &base64(&[7u8; 32])),
        ),
        (
            "24 chars that are not base64".into(),
            Req::upgrade("/ws").set("Sec-WebSocket-Key", "!!!!!!!!!!!!!!!!!!!!!!=="),
        ),
        (
            "key present twice (same value)".into(),
            Req::upgrade("/ws").header("Sec-WebSocket-Key", RFC_KEY),
        ),
        (
            "key present twice (different values)".into(),
            Req::upgrade("/ws").header("Sec-WebSocket-Key", &rand_key()),
        ),
    ];
    for_each_driver(&[], |gw| {
        for (what, req) in &cases {
            expect(gw, &req.bytes(), 400, what);
        }
    });
}

#[test]
fn unsupported_or_missing_version_is_426() {
    for_each_driver(&[], |gw| {
        let cases = [
            (
                "version 8",
                Req::upgrade("/ws").set("Sec-WebSocket-Version", "8"),
            ),
            (
                "version 14",
                Req::upgrade("/ws").set("Sec-WebSocket-Version", "14"),
            ),
            (
                "version missing",
                Req::upgrade("/ws").without("Sec-WebSocket-Version"),
            ),
        ];
        for (what, req) in cases {
            let resp = expect(gw, &req.bytes(), 426, what);
            assert_eq!(
                resp.header("Sec-WebSocket-Version"),
                Some("13"),
                "{what}:\n{}",
                resp.head
            );
        }
    });
}

#[test]
fn ws_path_without_upgrade_websocket_is_426() {
    for_each_driver(&[], |gw| {
        let cases = [
            ("no Upgrade header", Req::upgrade("/ws").without("Upgrade")),
            ("Upgrade: h2c", Req::upgrade("/ws").set("Upgrade", "h2c")),
        ];
        for (what, req) in cases {
            let resp = expect(gw, &req.bytes(), 426, what);
            assert_eq!(
                resp.header("Sec-WebSocket-Version"),
                Some("13"),
                "{what}:\n{}",
                resp.head
            );
        }
    });
}

fn oversized_head(complete: bool) -> Vec<u8> {
    let mut raw = b"GET /ws HTTP/1.1\r\nHost: gw.example\r\nX-Big: ".to_vec();
    raw.extend(std::iter::repeat(b'a').take(20 * 1024));
    if complete {
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(
            &Req::upgrade("/ws").bytes()[b"GET /ws HTTP/1.1\r\nHost: gw.example\r\n".len()..],
        );
    }
    raw
}

#[test]
fn oversized_head_is_431() {
    for_each_driver(&[], |gw| {
        // The server cannot know how much of the 20 KiB it has consumed when it
        // gives up, so a reset after the full response is tolerated; the
        // response itself must arrive intact.
        let resp = gw.roundtrip_allow_reset(&oversized_head(false));
        assert_rejection(&resp, 431, "20 KiB header value, head never completed");
        let resp = gw.roundtrip_allow_reset(&oversized_head(true));
        assert_rejection(&resp, 431, "complete head with a 20 KiB header value");
    });
}

#[test]
fn many_rejections_leave_the_server_serving() {
    for_each_driver(&[], |gw| {
        for i in 0..30 {
            expect(
                gw,
                &Req::upgrade("/ws").without("Host").bytes(),
                400,
                "missing Host",
            );
            expect(
                gw,
                &Req::get(&format!("/nope{i}")).bytes(),
                404,
                "unknown path",
            );
        }
        let _ = gw.upgrade("/ws");
    });
}
