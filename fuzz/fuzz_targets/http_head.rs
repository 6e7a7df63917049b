//! The request head parser (`proto::http::parse_request`) and the routing of
//! what it returns (`proto::handshake::Routes::route`, the 101, every refusal).
//!
//! Input: the bytes a client sent on the traffic port, as they are.
//!
//! Asserts:
//! - a complete head ends in CRLF CRLF within `MAX_HEAD` bytes, re-parses the
//!   same from exactly its own bytes, every strict prefix of it needs more, and
//!   the bytes after it are never consumed; the target's path has no query,
//!   and an absolute-form authority is a non-empty host without userinfo;
//! - growing the buffer never changes a decision already made: a prefix that
//!   failed fails the same, a prefix that completed completes the same;
//! - an upgrade carries a valid 24-byte key and a GET; the 101 and every
//!   refusal are one well-formed response (no injected lines);
//! - `*` origins allow everything same-origin allows, and only refuse nothing else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::proto::cookie::{find_session, CookieSpec, SessionId};
use wsgate::proto::extensions::offers;
use wsgate::proto::handshake::OriginPolicy;
use wsgate::proto::handshake::{
    accept_key, write_101, write_session_204, Rejection, Route, Routes,
};
use wsgate::proto::http::{parse_request, HeadError, Request, MAX_HEAD};

fn routes(origins: &[&str]) -> Routes {
    Routes {
        ws_path: "/ws".into(),
        echo_path: Some("/echo".into()),
        health_path: "/ws-health".into(),
        session_path: "/ws-session".into(),
        origins: OriginPolicy::new(&origins.iter().map(|o| o.to_string()).collect::<Vec<_>>()),
    }
}

/// A response is one status line, headers, the blank line, and its body.
fn check_response(out: &[u8], status: u16) {
    let head_end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("blank line")
        + 4;
    let head = std::str::from_utf8(&out[..head_end]).expect("ASCII head");
    assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head:?}");
    for line in head[..head_end - 4].split("\r\n").skip(1) {
        assert!(
            line.contains(": ") && !line.contains(['\r', '\n']),
            "{line:?}"
        );
    }
    let body = &out[head_end..];
    match head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Content-Length: "))
    {
        Some(n) => assert_eq!(n.parse::<usize>().unwrap(), body.len()),
        None => assert!(body.is_empty()),
    }
}

fn refuse(r: Rejection) {
    let mut out = Vec::new();
    r.write(&mut out);
    check_response(&out, r.status());
}

fn check_request(data: &[u8], req: &Request<'_>, end: usize) {
    assert!(end <= data.len() && end <= MAX_HEAD);
    assert!(data[..end].ends_with(b"\r\n\r\n"));
    assert!(!req.path.contains('?'));
    if let Some(authority) = req.authority {
        // Absolute-form: the target was `scheme://authority/path`.
        assert!(!authority.is_empty() && !authority.contains(&b'@') && !authority.contains(&b'/'));
        assert!(req.path.starts_with('/'));
    }
    assert!(req.cookie_headers().count() <= 8);
    let same = routes(&[]).route(req);
    let any = routes(&["*"]).route(req);
    match (same, any) {
        (Err(Rejection::OriginNotAllowed), Ok(_)) => {}
        (same, any) => assert_eq!(same, any),
    }
    assert_ne!(any, Err(Rejection::OriginNotAllowed));
    let cookie = CookieSpec::new("WS_SESSION_ID", 86400, true);
    let id = find_session(req.cookie_headers(), "WS_SESSION_ID");
    if let Some(id) = id {
        let text = id.to_text();
        assert!(req
            .cookie_headers()
            .any(|h| h.windows(36).any(|w| w.eq_ignore_ascii_case(&text))));
    }
    let id =
        id.unwrap_or_else(|| SessionId::parse(b"0f8fad5b-d9cb-469f-a165-70867728950e").unwrap());
    let mut out = Vec::new();
    match any {
        Ok(Route::Upgrade { key, .. }) => {
            assert_eq!(req.method, "GET");
            assert!(req.minor_version >= 1);
            assert_eq!(key.len(), 24);
            assert!(accept_key(key).iter().all(|b| b.is_ascii_graphic()));
            // The offer a build with compression would accept (this crate
            // builds wsgate without it: `negotiate` would say none).
            let deflate = req
                .extension_headers()
                .flat_map(offers)
                .find_map(Result::ok);
            write_101(&mut out, key, deflate, &cookie, id);
            check_response(&out, 101);
        }
        Ok(Route::Session) => {
            write_session_204(&mut out, &cookie, id);
            check_response(&out, 204);
        }
        Ok(Route::Health) => assert!(matches!(req.method, "GET" | "HEAD")),
        Err(r) => refuse(r),
    }
}

/// What a buffer parses to, owned, so a prefix and the whole can be compared.
fn outcome(buf: &[u8]) -> Result<Option<(String, usize)>, HeadError> {
    parse_request(buf).map(|r| r.map(|(req, end)| (format!("{req:?}"), end)))
}

fuzz_target!(|data: &[u8]| {
    let whole = outcome(data);
    match parse_request(data) {
        Ok(Some((req, end))) => {
            check_request(data, &req, end);
            assert_eq!(
                outcome(&data[..end]),
                whole,
                "trailing bytes changed the head"
            );
            assert_eq!(outcome(&data[..end - 1]), Ok(None));
        }
        Ok(None) => assert!(data.len() < MAX_HEAD),
        Err(HeadError::TooLarge) => refuse(Rejection::HeadTooLarge),
        Err(HeadError::Malformed(why)) => refuse(Rejection::BadRequest(why)),
    }
    // The connection re-parses as bytes arrive: a decision made on a prefix stands.
    let seed = data
        .iter()
        .fold(data.len(), |h, &b| h.wrapping_mul(31) ^ b as usize);
    for cut in [data.len() / 2, seed % (data.len() + 1)] {
        match outcome(&data[..cut]) {
            Ok(None) => {}
            decided => assert_eq!(decided, whole, "cut={cut}"),
        }
    }
});
