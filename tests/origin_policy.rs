//! `Origin` checking: same-origin by default (host[:port] vs `Host`,
//! case-insensitive, default ports optional), `--allowed-origin` adds exact
//! origins, `--allowed-origin '*'` allows any. Disallowed → 403.

mod common;
use common::*;

fn check(gw: &Gateway, host: &str, origin: Option<&str>, allowed: bool) {
    let mut req = Req::upgrade("/ws").set("Host", host);
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    let what = format!("Host: {host:?}, Origin: {origin:?}");
    if allowed {
        let mut c = gw.connect();
        c.send(&req.bytes());
        let resp = c.read_head();
        assert_eq!(
            resp.status, 101,
            "{what}: expected 101, got:\n{}",
            resp.head
        );
        assert_101(&resp, RFC_KEY, DEFAULT_COOKIE_NAME, DEFAULT_COOKIE_ATTRS);
    } else {
        let resp = gw.roundtrip(&req.bytes());
        assert_rejection(&resp, 403, &what);
    }
}

#[test]
fn same_origin_default_policy() {
    for_each_driver(&[], |gw| {
        // No Origin at all (non-browser client) is allowed.
        check(gw, "gw.example", None, true);
        // Exact host match.
        check(gw, "gw.example", Some("http://gw.example"), true);
        check(gw, "gw.example", Some("https://gw.example"), true);
        check(gw, "gw.example:8080", Some("http://gw.example:8080"), true);
        check(gw, "127.0.0.1:9000", Some("http://127.0.0.1:9000"), true);
        // Case-insensitive.
        check(gw, "gw.example", Some("https://GW.Example"), true);
        check(gw, "GW.EXAMPLE", Some("https://gw.example"), true);
        // Default ports may be omitted on either side.
        check(gw, "gw.example", Some("https://gw.example:443"), true);
        check(gw, "gw.example", Some("http://gw.example:80"), true);
        check(gw, "gw.example:443", Some("https://gw.example"), true);
        check(gw, "gw.example:80", Some("http://gw.example"), true);

        // Different host.
        check(gw, "gw.example", Some("https://evil.example"), false);
        // Suffix / prefix tricks.
        check(
            gw,
            "gw.example",
            Some("https://gw.example.evil.example"),
            false,
        );
        check(gw, "gw.example", Some("https://evilgw.example"), false);
        check(gw, "gw.example", Some("https://sub.gw.example"), false);
        // Different explicit port.
        check(gw, "gw.example", Some("https://gw.example:8443"), false);
        check(gw, "gw.example:8080", Some("http://gw.example"), false);
        check(gw, "gw.example:8080", Some("http://gw.example:8081"), false);
        // Opaque origin.
        check(gw, "gw.example", Some("null"), false);
    });
}

#[test]
fn allowed_origin_flag_adds_exact_origins() {
    let args = [
        "--allowed-origin",
        "https://app.example.com",
        "--allowed-origin",
        "https://admin.example.com",
    ];
    for_each_driver(&args, |gw| {
        check(gw, "gw.example", Some("https://app.example.com"), true);
        check(gw, "gw.example", Some("https://admin.example.com"), true);
        // Same-origin still works.
        check(gw, "gw.example", Some("https://gw.example"), true);
        check(gw, "gw.example", None, true);
        // Exactness: scheme, port, host.
        check(gw, "gw.example", Some("http://app.example.com"), false);
        check(
            gw,
            "gw.example",
            Some("https://app.example.com:8443"),
            false,
        );
        check(gw, "gw.example", Some("https://other.example.com"), false);
        check(
            gw,
            "gw.example",
            Some("https://app.example.com.evil.example"),
            false,
        );
        check(
            gw,
            "gw.example",
            Some("https://evil.app.example.com"),
            false,
        );
    });
}

#[test]
fn wildcard_allows_any_origin() {
    for_each_driver(&["--allowed-origin", "*"], |gw| {
        check(gw, "gw.example", Some("https://anything.example"), true);
        check(gw, "gw.example", Some("http://evil.example:1234"), true);
        check(gw, "gw.example", Some("https://gw.example"), true);
        check(gw, "gw.example", None, true);
    });
}

#[test]
fn rejected_origin_does_not_affect_later_clients() {
    for_each_driver(&[], |gw| {
        for _ in 0..20 {
            check(gw, "gw.example", Some("https://evil.example"), false);
        }
        check(gw, "gw.example", Some("https://gw.example"), true);
    });
}
