//! The 101 carries a `Set-Cookie` with a session id: a fresh lowercase v4 UUID,
//! or the client's own valid id echoed back; malformed ids never reflected.

mod common;
use common::*;
use std::collections::HashSet;

fn upgrade_with_cookie(gw: &Gateway, cookie: Option<&str>) -> (Response, String) {
    let mut req = Req::upgrade("/ws");
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    let mut c = gw.connect();
    c.send(&req.bytes());
    let resp = c.read_head();
    let id = assert_101(&resp, RFC_KEY, DEFAULT_COOKIE_NAME, DEFAULT_COOKIE_ATTRS);
    (resp, id)
}

#[test]
fn cookie_less_upgrades_get_distinct_fresh_v4_ids() {
    for_each_driver(&[], |gw| {
        let mut seen = HashSet::new();
        for _ in 0..20 {
            let (_, id) = upgrade_with_cookie(gw, None);
            assert!(seen.insert(id.clone()), "id {id} handed out twice");
        }
    });
}

#[test]
fn valid_cookie_is_kept() {
    for_each_driver(&[], |gw| {
        // The server's own id round-trips.
        let (_, first) = upgrade_with_cookie(gw, None);
        let (_, again) = upgrade_with_cookie(gw, Some(&format!("WS_SESSION_ID={first}")));
        assert_eq!(again, first);

        // A client-made v4 id is accepted too.
        let mine = make_uuid_v4();
        let (_, got) = upgrade_with_cookie(gw, Some(&format!("WS_SESSION_ID={mine}")));
        assert_eq!(got, mine);

        // Among other cookies.
        let mine = make_uuid_v4();
        let (_, got) = upgrade_with_cookie(gw, Some(&format!("a=1; WS_SESSION_ID={mine}; b=2")));
        assert_eq!(got, mine);
        let mine = make_uuid_v4();
        let (_, got) = upgrade_with_cookie(gw, Some(&format!("a=1; WS_SESSION_ID={mine}")));
        assert_eq!(got, mine);
        let mine = make_uuid_v4();
        let (_, got) = upgrade_with_cookie(gw, Some(&format!("WS_SESSION_ID={mine}; b=2")));
        assert_eq!(got, mine);
    });
}

#[test]
fn malformed_cookie_gets_a_fresh_id_and_is_never_reflected() {
    let valid = make_uuid_v4();
    let long_value = format!("{}{}", valid, "z".repeat(4000));
    let cases: Vec<(&str, String, String)> = vec![
        // (what, Cookie header, substring that must not appear in the head)
        (
            "not-a-uuid",
            "WS_SESSION_ID=not-a-uuid".into(),
            "not-a-uuid".into(),
        ),
        (
            "percent-encoded CRLF header injection",
            format!("WS_SESSION_ID={valid}%0d%0aSet-Cookie:%20evil=1"),
            "evil".into(),
        ),
        (
            "quoted value with attribute injection",
            format!("WS_SESSION_ID=\"{valid}; Domain=evil.example\""),
            "evil.example".into(),
        ),
        (
            "uuid with trailing junk",
            format!("WS_SESSION_ID={valid}X-Injected:1"),
            "X-Injected".into(),
        ),
        (
            "over-long value",
            format!("WS_SESSION_ID={long_value}"),
            "zzzz".into(),
        ),
        (
            "empty value",
            "WS_SESSION_ID=".into(),
            "WS_SESSION_ID=;".into(),
        ),
        (
            "uuid without hyphens",
            format!("WS_SESSION_ID={}", valid.replace('-', "")),
            valid.replace('-', ""),
        ),
        (
            "uuid in braces",
            format!("WS_SESSION_ID={{{valid}}}"),
            format!("{{{valid}}}"),
        ),
    ];
    for_each_driver(&[], |gw| {
        for (what, cookie, forbidden) in &cases {
            let (resp, id) = upgrade_with_cookie(gw, Some(cookie));
            assert!(
                !resp.head.contains(forbidden.as_str()),
                "{what}: request cookie value reflected in the response head:\n{}",
                resp.head
            );
            assert_ne!(
                &id, &valid,
                "{what}: the embedded id was accepted from a malformed value"
            );
            assert_eq!(
                resp.headers_named("Set-Cookie").len(),
                1,
                "{what}:\n{}",
                resp.head
            );
        }
    });
}

#[test]
fn non_v4_uuid_cookie_is_replaced() {
    for_each_driver(&[], |gw| {
        // A well-formed version-1 UUID is not a v4 session id.
        let v1 = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
        let (resp, id) = upgrade_with_cookie(gw, Some(&format!("WS_SESSION_ID={v1}")));
        assert_ne!(id, v1, "non-v4 id echoed:\n{}", resp.head);
        // Uppercase hex is not the canonical lowercase form the server emits.
        let upper = make_uuid_v4().to_uppercase();
        let (resp, id) = upgrade_with_cookie(gw, Some(&format!("WS_SESSION_ID={upper}")));
        assert!(
            !resp.head.contains(&upper),
            "uppercase id reflected verbatim:\n{}",
            resp.head
        );
        assert!(is_uuid_v4(&id));
    });
}

#[test]
fn cookie_name_must_match_exactly() {
    for_each_driver(&[], |gw| {
        let mine = make_uuid_v4();
        for cookie in [
            format!("XWS_SESSION_ID={mine}"),
            format!("WS_SESSION_IDX={mine}"),
            format!("ws_session_id={mine}"),
        ] {
            let (_, id) = upgrade_with_cookie(gw, Some(&cookie));
            assert_ne!(
                id, mine,
                "cookie `{cookie}` was taken as the session cookie"
            );
        }
    });
}

#[test]
fn cookie_flags_change_name_max_age_and_security_attributes() {
    // --cookie-secure false drops SameSite=None and Secure.
    for_each_driver(&["--cookie-secure", "false"], |gw| {
        let mut c = gw.connect();
        c.send(&Req::upgrade("/ws").bytes());
        let resp = c.read_head();
        assert_101(
            &resp,
            RFC_KEY,
            "WS_SESSION_ID",
            "; Path=/; Max-Age=86400; HttpOnly",
        );
    });
    // --cookie-name renames the cookie, both emitted and accepted.
    for_each_driver(&["--cookie-name", "LB_STICKY"], |gw| {
        let mut c = gw.connect();
        c.send(&Req::upgrade("/ws").bytes());
        let resp = c.read_head();
        let id = assert_101(&resp, RFC_KEY, "LB_STICKY", DEFAULT_COOKIE_ATTRS);
        assert!(!resp.head.contains("WS_SESSION_ID"));

        let mine = make_uuid_v4();
        let mut c = gw.connect();
        c.send(
            &Req::upgrade("/ws")
                .header("Cookie", &format!("LB_STICKY={mine}"))
                .bytes(),
        );
        assert_eq!(
            assert_101(&c.read_head(), RFC_KEY, "LB_STICKY", DEFAULT_COOKIE_ATTRS),
            mine
        );

        // The default name is no longer the session cookie.
        let mut c = gw.connect();
        c.send(
            &Req::upgrade("/ws")
                .header("Cookie", &format!("WS_SESSION_ID={mine}"))
                .bytes(),
        );
        let other = assert_101(&c.read_head(), RFC_KEY, "LB_STICKY", DEFAULT_COOKIE_ATTRS);
        assert_ne!(other, mine);
        assert_ne!(other, id);
    });
    // --cookie-max-age.
    for_each_driver(&["--cookie-max-age", "3600s"], |gw| {
        let mut c = gw.connect();
        c.send(&Req::upgrade("/ws").bytes());
        let resp = c.read_head();
        assert_101(
            &resp,
            RFC_KEY,
            "WS_SESSION_ID",
            "; Path=/; Max-Age=3600; SameSite=None; Secure; HttpOnly",
        );
    });
    // All together.
    for_each_driver(
        &[
            "--cookie-secure",
            "false",
            "--cookie-name",
            "X",
            "--cookie-max-age",
            "3600s",
        ],
        |gw| {
            let mut c = gw.connect();
            c.send(&Req::upgrade("/ws").bytes());
            assert_101(
                &c.read_head(),
                RFC_KEY,
                "X",
                "; Path=/; Max-Age=3600; HttpOnly",
            );
        },
    );
}
