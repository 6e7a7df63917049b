//! Tests of the auth hook's wire format: the URL, the request bytes, every
//! response shape (split at every point), the limits, and the verdicts.

use super::*;
use crate::proto::http_client::{MAX_BODY, MAX_CHUNK_OVERHEAD, MAX_HEAD, MAX_HEADERS};
use serde_json::{json, Value};

fn target(url: &str) -> HookTarget {
    HookTarget::parse(url).unwrap()
}

#[test]
fn target_defaults_and_parts() {
    let t = target("http://auth.internal/check");
    assert_eq!(
        (t.host(), t.port(), t.path()),
        ("auth.internal", 80, "/check")
    );
    let t = target("http://127.0.0.1:8081");
    assert_eq!((t.host(), t.port(), t.path()), ("127.0.0.1", 8081, "/"));
    let t = target("HTTP://h:1/a/b?k=v&x");
    assert_eq!((t.host(), t.port(), t.path()), ("h", 1, "/a/b?k=v&x"));
    let t = target("http://h?k=v");
    assert_eq!(t.path(), "/?k=v");
    let t = target("http://[::1]:9000/hook");
    assert_eq!((t.host(), t.port(), t.path()), ("::1", 9000, "/hook"));
    let t = target("http://[::1]/");
    assert_eq!(t.port(), 80);
}

#[test]
fn target_refusals_say_why() {
    let e = HookTarget::parse("https://auth/check").unwrap_err();
    assert!(e.contains("TLS"), "{e}");
    for (url, says) in [
        ("auth/check", "http://host"),
        ("ftp://auth/", "scheme"),
        ("http://user:pw@auth/", "user:password@"),
        ("http://auth/#frag", "fragment"),
        ("http://auth:0/", "port"),
        ("http://auth:70000/", "port"),
        ("http://auth:/", "port"),
        ("http:///path", "host"),
        ("http://a b/", "host"),
        ("http://a:b:80/", "port"),
        ("http://[::1/", "unclosed"),
        ("http://[::1]x/", "http://host"),
        ("http://[abc]/", "host"),
        ("http://auth/a b", "path"),
        ("http://auth/é", "path"),
    ] {
        let e = HookTarget::parse(url).unwrap_err();
        assert!(e.contains(says), "{url}: {e}");
    }
    // The password never shows in the message.
    assert!(!HookTarget::parse("http://u:secret@h/")
        .unwrap_err()
        .contains("secret"));
}

#[test]
fn target_display_drops_the_query() {
    assert_eq!(
        target("http://h:81/a?key=s3cret").to_string(),
        "http://h:81/a"
    );
    assert_eq!(target("http://[::1]/a").to_string(), "http://[::1]:80/a");
}

#[test]
fn target_resolves() {
    let addr = target("http://127.0.0.1:4567/").resolve().unwrap();
    assert_eq!(addr, "127.0.0.1:4567".parse().unwrap());
    let addr = target("http://[::1]:80/").resolve().unwrap();
    assert_eq!(addr, "[::1]:80".parse().unwrap());
}

fn full_request() -> HookRequest<'static> {
    HookRequest {
        session: "0b5c3d2e-8f4a-4c1e-9a7b-1d2e3f4a5b6c",
        resumed: true,
        path: b"/ws?token=abc",
        cookie: Some(b"wsgate=xyz; other=1"),
        authorization: Some(b"Bearer tok.en.sig"),
        origin: Some(b"https://app.example"),
        forwarded_for: Some(b"203.0.113.7"),
        user_agent: Some(b"Mozilla/5.0 \xff\xfe"),
        user: Some("alice"),
    }
}

/// Splits a request into head and JSON body, checking Content-Length.
fn split(bytes: &[u8]) -> (String, Value) {
    let at = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8(bytes[..at].to_vec()).unwrap();
    let body = &bytes[at..];
    assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
    (head, serde_json::from_slice(body).unwrap())
}

#[test]
fn request_bytes() {
    let mut out = b"leftover".to_vec();
    write_request(
        &target("http://auth:8081/check?v=1"),
        &full_request(),
        &mut out,
    );
    assert!(out.starts_with(b"leftover"));
    let (head, body) = split(&out[8..]);
    assert_eq!(
        head,
        format!(
            "POST /check?v=1 HTTP/1.1\r\nHost: auth:8081\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            out.len() - 8 - head.len()
        )
    );
    assert_eq!(
        body,
        json!({
            "session": "0b5c3d2e-8f4a-4c1e-9a7b-1d2e3f4a5b6c",
            "resumed": true,
            "path": "/ws?token=abc",
            "headers": {
                "cookie": "wsgate=xyz; other=1",
                "authorization": "Bearer tok.en.sig",
                "origin": "https://app.example",
                "x-forwarded-for": "203.0.113.7",
                "user-agent": "Mozilla/5.0 \u{fffd}\u{fffd}",
            },
            "user": "alice",
        })
    );
    // Exactly the documented keys, in order.
    let text = String::from_utf8(out[8 + head.len()..].to_vec()).unwrap();
    assert!(text.starts_with(r#"{"session":"#), "{text}");
}

#[test]
fn request_absent_fields_are_null() {
    let req = HookRequest {
        session: "s",
        path: b"/ws",
        ..HookRequest::default()
    };
    let mut out = Vec::new();
    write_request(&target("http://auth/"), &req, &mut out);
    let (head, body) = split(&out);
    assert!(
        head.starts_with("POST / HTTP/1.1\r\nHost: auth\r\n"),
        "{head}"
    );
    assert_eq!(
        body,
        json!({
            "session": "s", "resumed": false, "path": "/ws",
            "headers": {"cookie": null, "authorization": null, "origin": null,
                        "x-forwarded-for": null, "user-agent": null},
            "user": null,
        })
    );
}

#[test]
fn request_escapes_json() {
    let req = HookRequest {
        session: "s",
        path: b"/ws?q=\"\\\n",
        cookie: Some(b"a\"b"),
        ..HookRequest::default()
    };
    let mut out = Vec::new();
    write_request(&target("http://[::1]:81/"), &req, &mut out);
    let (head, body) = split(&out);
    assert!(head.contains("\r\nHost: [::1]:81\r\n"));
    assert_eq!(body["path"], "/ws?q=\"\\\n");
    assert_eq!(body["headers"]["cookie"], "a\"b");
}

#[test]
fn request_debug_keeps_credentials_out() {
    let text = format!("{:?}", full_request());
    for secret in ["xyz", "tok.en", "token", "abc"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(text.contains("/ws") && text.contains("alice"), "{text}");
}

// ---- responses ----

/// Parses `bytes` whole, checks that every strict prefix needs more (or,
/// for bodies ending at EOF, that nothing is complete before it), and
/// returns (status, body, keep_alive, consumed).
fn complete(bytes: &[u8]) -> (u16, Vec<u8>, bool, usize) {
    let r = parse_response(bytes).unwrap().expect("a complete response");
    for cut in 0..r.consumed {
        assert_eq!(parse_response(&bytes[..cut]), Ok(None), "prefix of {cut}");
    }
    // At EOF, the same answer.
    assert_eq!(parse_response_at_eof(bytes).as_ref(), Ok(&r));
    (r.status, r.body.to_vec(), r.keep_alive, r.consumed)
}

#[test]
fn content_length() {
    let b = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(complete(b), (200, b"hello".to_vec(), true, b.len()));
    // What follows belongs to the next response.
    let mut two = b.to_vec();
    two.extend_from_slice(b"HTTP/1.1 401 x\r\n");
    assert_eq!(complete(&two), (200, b"hello".to_vec(), true, b.len()));
    // Repeated with the same value, and whitespace around it.
    let b = b"HTTP/1.1 200 OK\r\ncontent-length: 2 \r\nContent-Length:2\r\n\r\nok";
    assert_eq!(complete(b).1, b"ok");
    let b = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(complete(b), (403, vec![], true, b.len()));
}

#[test]
fn keep_alive_rules() {
    let close = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n";
    assert!(!complete(close).2);
    let v10 = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
    assert!(!complete(v10).2);
    let ka = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
    assert!(complete(ka).2);
}

#[test]
fn chunked() {
    let b = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n1;ext=1\r\n \r\nA \r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
    assert_eq!(
        complete(b),
        (200, b"hello 0123456789".to_vec(), true, b.len())
    );
    let b = b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n0\r\n\r\nextra";
    assert_eq!(complete(b), (200, vec![], true, b.len() - 5));
    // Transfer-Encoding overrides Content-Length; the connection is not reused.
    let b = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
              2\r\nok\r\n0\r\n\r\n";
    assert_eq!(complete(b), (200, b"ok".to_vec(), false, b.len()));
}

#[test]
fn chunked_framing_errors() {
    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for bad in [
        &b"x\r\n"[..],
        b"\r\n",
        b"5 x\r\n",
        b"5\nhello\r\n",
        b"5\r\nhelloXX",
        b"5\r\nhello\rX",
        b"0\r\nbad\rtrailer\r\n\r\n",
        b"0\n\r\n",
    ] {
        let mut b = head.clone();
        b.extend_from_slice(bad);
        assert_eq!(
            parse_response(&b),
            Err(HookError::Chunk),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn transfer_encoding_other_than_chunked() {
    for te in ["gzip", "gzip, chunked", "chunked, chunked", "identity"] {
        let b = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n");
        assert_eq!(
            parse_response(b.as_bytes()),
            Err(HookError::TransferEncoding),
            "{te}"
        );
    }
    let b = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(parse_response(b), Err(HookError::TransferEncoding));
}

#[test]
fn bad_content_length() {
    for cl in [
        "",
        "x",
        "-1",
        "+5",
        "5, 5",
        "1 2",
        "99999999999999999999999",
    ] {
        let b = format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n");
        assert_eq!(
            parse_response(b.as_bytes()),
            Err(HookError::ContentLength),
            "{cl:?}"
        );
    }
    let b = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
    assert_eq!(parse_response(b), Err(HookError::ContentLength));
}

#[test]
fn body_to_eof() {
    let b = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"user\":\"a\"}";
    for cut in 0..=b.len() {
        assert_eq!(parse_response(&b[..cut]), Ok(None));
    }
    let r = parse_response_at_eof(b).unwrap();
    assert_eq!(
        (r.status, &*r.body, r.keep_alive),
        (200, &b"{\"user\":\"a\"}"[..], false)
    );
    assert_eq!(r.consumed, b.len());
    // Without Connection: close as well.
    let b = b"HTTP/1.1 200 OK\r\n\r\nok";
    assert_eq!(parse_response(b), Ok(None));
    assert!(!parse_response_at_eof(b).unwrap().keep_alive);
}

#[test]
fn eof_before_the_end() {
    let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    for cut in 0..whole.len() {
        assert_eq!(
            parse_response_at_eof(&whole[..cut]),
            Err(HookError::Truncated),
            "{cut}"
        );
    }
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
    for cut in 0..chunked.len() {
        assert_eq!(
            parse_response_at_eof(&chunked[..cut]),
            Err(HookError::Truncated),
            "{cut}"
        );
    }
}

#[test]
fn no_body_statuses() {
    let b = b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n";
    assert_eq!(complete(b), (204, vec![], true, b.len()));
    let b = b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(complete(b), (304, vec![], true, b.len()));
}

#[test]
fn informational_heads_are_skipped() {
    let b = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n\
              HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(complete(b), (401, vec![], true, b.len()));
    let b = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
    assert_eq!(parse_response(b), Err(HookError::Head));
}

#[test]
fn not_http() {
    for b in [
        &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"\0\0\0",
    ] {
        assert_eq!(parse_response(b), Err(HookError::Head), "{b:?}");
    }
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(parse_response(&many), Err(HookError::Head));
}

#[test]
fn head_limit() {
    let mut b = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
    b.resize(MAX_HEAD - 4 - 19, b'a');
    b.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(b.len(), MAX_HEAD);
    assert_eq!(complete(&b).0, 200);
    // One byte more and the head no longer fits, however it arrives.
    let mut b = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
    b.resize(MAX_HEAD - 4 - 18, b'a');
    b.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(parse_response(&b), Err(HookError::HeadTooLarge));
    assert_eq!(parse_response(&b[..MAX_HEAD]), Err(HookError::HeadTooLarge));
    assert_eq!(parse_response(&b[..MAX_HEAD - 1]), Ok(None));
    // A stream of 1xx heads counts toward the limit too.
    let b = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_HEAD / 25 + 1);
    assert_eq!(parse_response(&b), Err(HookError::HeadTooLarge));
}

#[test]
fn body_limits() {
    let head = |cl: usize| format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n").into_bytes();
    let mut ok = head(MAX_BODY);
    ok.resize(ok.len() + MAX_BODY, b'x');
    assert_eq!(complete(&ok).1.len(), MAX_BODY);
    assert_eq!(
        parse_response(&head(MAX_BODY + 1)),
        Err(HookError::BodyTooLarge)
    );

    let mut eof = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    eof.resize(eof.len() + MAX_BODY, b'x');
    assert_eq!(parse_response_at_eof(&eof).unwrap().body.len(), MAX_BODY);
    eof.push(b'x');
    assert_eq!(parse_response(&eof), Err(HookError::BodyTooLarge));

    // Chunked: the decoded size counts as soon as a size line says it.
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    chunked.extend_from_slice(format!("{:x}\r\n", MAX_BODY).as_bytes());
    chunked.resize(chunked.len() + MAX_BODY, b'y');
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(complete(&chunked).1.len(), MAX_BODY);
    let b = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8000\r\n";
    let mut two = b.to_vec();
    two.resize(two.len() + 0x8000, b'z');
    two.extend_from_slice(b"\r\n8001\r\n");
    assert_eq!(parse_response(&two), Err(HookError::BodyTooLarge));
    let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffffff\r\n";
    assert_eq!(parse_response(huge), Err(HookError::BodyTooLarge));
    // Framing that never ends (empty extensions forever) is cut off too.
    let mut ext = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
    ext.resize(ext.len() + MAX_BODY + MAX_CHUNK_OVERHEAD, b'e');
    assert_eq!(parse_response(&ext), Err(HookError::BodyTooLarge));
}

#[test]
fn reads_of_every_size_give_the_same_answer() {
    let streams: [&[u8]; 3] = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"user\":\"u\"}\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"u\r\n9\r\nser\":\"u\"}\r\n0\r\n\r\n",
        b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
    ];
    for s in streams {
        let whole = parse_response(s).unwrap().unwrap();
        assert_eq!(whole.consumed, s.len());
        // As the client reads: the buffer grows by `step` bytes at a time.
        for step in 1..=s.len() {
            let mut have = 0;
            let got = loop {
                have = (have + step).min(s.len());
                if let Some(r) = parse_response(&s[..have]).unwrap() {
                    break r;
                }
            };
            assert_eq!(got, whole, "step {step}");
        }
    }
}

#[test]
fn errors_and_debug_carry_nothing() {
    let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
        .unwrap()
        .unwrap();
    let text = format!("{r:?}");
    assert!(
        !text.contains("secret") && text.contains("body_len: 6"),
        "{text}"
    );
    assert_eq!(std::mem::size_of::<HookError>(), 1);
    for e in [
        HookError::Head,
        HookError::HeadTooLarge,
        HookError::BodyTooLarge,
        HookError::ContentLength,
        HookError::TransferEncoding,
        HookError::Chunk,
        HookError::Truncated,
    ] {
        assert_eq!(e.to_string(), e.reason());
    }
}

// ---- verdicts ----

fn grant(user: &str, sub: &[&str], publish: &[&str], expires_in: Option<u64>) -> HookVerdict {
    HookVerdict::Grant {
        user: user.into(),
        grants: Grants::boxed(sub, publish).unwrap(),
        expires_in,
    }
}

#[test]
fn verdict_grants() {
    let v = |body: &str| verdict(200, body.as_bytes());
    assert_eq!(
        v(r#"{"user":"alice","sub":["news*","user:{user}"],"pub":["chat"],"expires_in":300}"#),
        grant("alice", &["news*", "user:{user}"], &["chat"], Some(300))
    );
    assert_eq!(v(r#"{"user":"bob"}"#), grant("bob", &[], &[], None));
    assert_eq!(
        v(r#" {"user":"a@b.c","sub":null,"pub":[],"expires_in":null,"extra":{"x":1}} "#),
        grant("a@b.c", &[], &[], None)
    );
    assert_eq!(
        v(r#"{"user":"u","expires_in":0}"#),
        grant("u", &[], &[], Some(0))
    );
    let HookVerdict::Grant { grants, .. } = v(r#"{"user":"u","sub":["a"]}"#) else {
        panic!()
    };
    assert!(grants.is_some());
}

#[test]
fn verdict_refusals_pass_on() {
    assert_eq!(verdict(401, b""), HookVerdict::Refuse(401));
    assert_eq!(verdict(403, b"{\"user\":\"x\"}"), HookVerdict::Refuse(403));
    assert_eq!(verdict(403, b"not json"), HookVerdict::Refuse(403));
}

#[test]
fn verdict_failures() {
    for status in [100, 201, 204, 301, 400, 404, 429, 500, 502, 503] {
        assert_eq!(
            verdict(status, br#"{"user":"u"}"#),
            HookVerdict::Fail("status"),
            "{status}"
        );
    }
    let long = format!(r#"{{"user":"{}"}}"#, "a".repeat(129));
    for (body, why) in [
        ("", "json"),
        ("null", "json"),
        ("[]", "json"),
        (r#"["alice",["*"],["*"],5]"#, "json"),
        ("{", "json"),
        (r#"{"user":"u"} x"#, "json"),
        (r#"{"user":"u","user":"v"}"#, "json"),
        (r#"{"user":1}"#, "json"),
        (r#"{"user":"u","sub":"a"}"#, "json"),
        (r#"{"user":"u","sub":[1]}"#, "json"),
        (r#"{"user":"u","expires_in":"5"}"#, "json"),
        (r#"{"user":"u","x":"\ud800"}"#, "json"),
        ("{}", "user"),
        (r#"{"user":null}"#, "user"),
        (r#"{"user":""}"#, "user"),
        (r#"{"user":"a b"}"#, "user"),
        (long.as_str(), "user"),
        (r#"{"user":"u","sub":["a*b"]}"#, "patterns"),
        (r#"{"user":"u","pub":[""]}"#, "patterns"),
        (r#"{"user":"u","expires_in":-1}"#, "expires_in"),
        (r#"{"user":"u","expires_in":1.5}"#, "expires_in"),
        (r#"{"user":"u","expires_in":1e3}"#, "expires_in"),
        (
            r#"{"user":"u","expires_in":18446744073709551616}"#,
            "expires_in",
        ),
    ] {
        assert_eq!(
            verdict(200, body.as_bytes()),
            HookVerdict::Fail(why),
            "{body}"
        );
    }
    assert_eq!(
        verdict(200, b"{\"user\":\"\xff\"}"),
        HookVerdict::Fail("json")
    );
    // Found by fuzz/hook_response: bytes that are not UTF-8 in a field that
    // is otherwise ignored.
    assert_eq!(
        verdict(200, b"{\"user\":\"u\",\"x\":\"\xbf\"}"),
        HookVerdict::Fail("json")
    );
}
