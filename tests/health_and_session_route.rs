//! `GET /ws-health` answers 200 `ok`; `GET /ws-session` answers 204 with the
//! same session cookie a 101 would carry.

mod common;
use common::*;

#[test]
fn health_is_200_ok_without_upgrade_headers() {
    for_each_driver(&[], |gw| {
        for _ in 0..20 {
            let resp = gw.roundtrip(&Req::get("/ws-health").bytes());
            assert_eq!(
                resp.status_line(),
                "HTTP/1.1 200 OK",
                "head:\n{}",
                resp.head
            );
            assert_eq!(resp.body_str(), "ok");
            assert_common_close_headers(&resp, "health");
        }
    });
}

#[test]
fn connection_closes_after_one_response_even_if_more_requests_were_sent() {
    for_each_driver(&[], |gw| {
        let mut two = Req::get("/ws-health").bytes();
        two.extend(Req::get("/ws-health").bytes());
        let mut c = gw.connect();
        c.send(&two);
        // One response, then the close (a reset is tolerated: the second
        // request may be left unread).
        let resp = c.read_response(true);
        assert_eq!(resp.status_line(), "HTTP/1.1 200 OK", "{}", resp.head);
    });
}

/// RFC 9110 section 8.6 forbids Content-Length in a 204; accept it absent or
/// `0`, but there must be no body and the server must close.
fn assert_204_no_body(resp: &Response) {
    assert_eq!(
        resp.status_line(),
        "HTTP/1.1 204 No Content",
        "head:\n{}",
        resp.head
    );
    if let Some(cl) = resp.header("Content-Length") {
        assert_eq!(cl, "0", "204 with non-zero Content-Length:\n{}", resp.head);
    }
    assert!(resp.body.is_empty());
    let conn = resp
        .header("Connection")
        .unwrap_or_else(|| panic!("no Connection header:\n{}", resp.head));
    assert!(conn.eq_ignore_ascii_case("close"), "Connection: {conn}");
}

fn session_cookie(resp: &Response, name: &str, attrs: &str) -> String {
    let cookies = resp.headers_named("Set-Cookie");
    assert_eq!(
        cookies.len(),
        1,
        "expected exactly one Set-Cookie:\n{}",
        resp.head
    );
    let id = cookie_id(cookies[0], name).to_string();
    assert!(is_uuid_v4(&id), "id {id:?} not a lowercase v4 uuid");
    assert_eq!(
        cookies[0],
        format!("{name}={id}{attrs}"),
        "Set-Cookie differs from the 101 format"
    );
    id
}

#[test]
fn session_route_is_204_with_the_101_cookie() {
    for_each_driver(&[], |gw| {
        let resp = gw.roundtrip(&Req::get("/ws-session").bytes());
        assert_204_no_body(&resp);
        let a = session_cookie(&resp, DEFAULT_COOKIE_NAME, DEFAULT_COOKIE_ATTRS);

        let resp = gw.roundtrip(&Req::get("/ws-session").bytes());
        let b = session_cookie(&resp, DEFAULT_COOKIE_NAME, DEFAULT_COOKIE_ATTRS);
        assert_ne!(a, b, "two cookie-less requests got the same id");

        // A valid cookie is kept.
        let resp = gw.roundtrip(
            &Req::get("/ws-session")
                .header("Cookie", &format!("{DEFAULT_COOKIE_NAME}={a}"))
                .bytes(),
        );
        assert_204_no_body(&resp);
        assert_eq!(
            session_cookie(&resp, DEFAULT_COOKIE_NAME, DEFAULT_COOKIE_ATTRS),
            a
        );

        // The id from /ws-session is the id a later upgrade keeps.
        let (id, _c) = gw.upgrade_req(
            &Req::upgrade("/ws").header("Cookie", &format!("{DEFAULT_COOKIE_NAME}={a}")),
        );
        assert_eq!(id, a);

        // A malformed one is replaced.
        let resp = gw.roundtrip(
            &Req::get("/ws-session")
                .header("Cookie", &format!("{DEFAULT_COOKIE_NAME}=garbage"))
                .bytes(),
        );
        let c = session_cookie(&resp, DEFAULT_COOKIE_NAME, DEFAULT_COOKIE_ATTRS);
        assert!(!resp.head.contains("garbage"), "{}", resp.head);
        assert_ne!(c, a);
    });
}

#[test]
fn session_route_follows_cookie_flags() {
    let args = [
        "--cookie-secure",
        "false",
        "--cookie-name",
        "STICKY",
        "--cookie-max-age",
        "3600s",
    ];
    for_each_driver(&args, |gw| {
        let resp = gw.roundtrip(&Req::get("/ws-session").bytes());
        assert_204_no_body(&resp);
        session_cookie(&resp, "STICKY", "; Path=/; Max-Age=3600; HttpOnly");
    });
}
