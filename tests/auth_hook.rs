//! `--auth-hook URL` (DESIGN §11): the gateway POSTs
//! `{"session","resumed","path","headers":{cookie,authorization,origin,
//! x-forwarded-for,user-agent},"user"}` as JSON; `200 {"user","sub","pub",
//! "expires_in"?}` grants, `401` / `403` are passed on, anything else, a
//! hook that never answers (within `--auth-hook-timeout`, default 2 s) or
//! one that is down means `503` (fail closed). JWT, when configured, comes
//! first. The upgrade waiting for the hook does not block its core; hook
//! connections are kept alive. The hook's body and the credentials it sees
//! are never logged. The hook here is a small HTTP server in the test.

#![cfg(feature = "auth")]

mod auth;
mod common;
mod gw;

use std::time::{Duration, Instant};

use auth::client::{upgrade, Upgrade, Ws};
use auth::hook::{down_url, Hook, HookRequest, Reply};
use auth::*;
use common::{for_each_driver, Driver, Gateway};
use gw::{topic, wait_open_connections};
use serde_json::{json, Value};

const HOOK_REQUESTS: &str = "wsgate_auth_hook_requests_total";

fn hook_args(hook_url: &str, extra: &[&str]) -> Vec<String> {
    let mut v = vec!["--auth-hook", hook_url, "--allowed-origin", "*"];
    v.extend_from_slice(extra);
    gw_args(&v)
}

/// A gateway with one core (everything shares one core and one hook pool).
fn one_core(args: &[String]) -> Gateway {
    let mut v: Vec<&str> = vec![
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--cores",
        "1",
    ];
    v.extend(strs(args));
    Gateway::start_exact(Driver::IoUring, &v, &[])
}

fn connect(gw: &Gateway, name: &str, req: &Upgrade) -> Ws {
    upgrade(gw.addr, name, req).unwrap_or_else(|r| panic!("{name}: refused:\n{}{}", r.head, r.body))
}

/// The upgrading client's `User-Agent`, as the hook request's body tells it
/// (the tests' hooks decide by it).
fn client_ua(req: &HookRequest) -> String {
    req.json()["headers"]["user-agent"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

const CREDENTIAL: &str = "opaque-credential-0123456789";

fn browser_like() -> Upgrade {
    Upgrade::bearer(CREDENTIAL)
        .header("Origin", "https://app.example")
        .header("X-Forwarded-For", "203.0.113.7")
        .header("User-Agent", "auth-tests/1.0")
}

#[test]
fn a_grant_names_the_user_and_its_topics() {
    let hook = Hook::always(Reply::Grant(
        json!({"user": "hook-user", "sub": ["h.*"], "pub": ["h.1"]}),
    ));
    let args = hook_args(&hook.url(), &[]);
    for_each_driver(&strs(&args), |gw| {
        let s0 = gw.scrape();
        let seen = hook.requests().len();
        let mut ws = connect(gw, "client", &browser_like());
        assert_eq!(
            ws.hello,
            format!("hello {} new {} hook-user", ws.peer, gw::NODE),
            "the hook's user names the session"
        );
        let reqs = hook.requests();
        let req = reqs.last().expect("the hook was not called");
        assert_eq!(reqs.len(), seen + 1, "one hook request per upgrade");
        assert_eq!(
            (req.method.as_str(), req.target.as_str()),
            ("POST", "/auth")
        );
        assert!(
            req.header("Content-Type")
                .is_some_and(|v| v.starts_with("application/json")),
            "Content-Type: {:?}",
            req.header("Content-Type")
        );
        let body = req.json();
        assert_eq!(body["session"], json!(ws.id), "the session id: {body}");
        assert_eq!(body["resumed"], json!(false), "{body}");
        assert_eq!(body["path"], json!("/ws"), "{body}");
        assert_eq!(body["user"], Value::Null, "no JWT configured: {body}");
        let h = &body["headers"];
        assert_eq!(h["cookie"], Value::Null, "no cookie sent: {body}");
        assert_eq!(h["authorization"], json!(format!("Bearer {CREDENTIAL}")));
        assert_eq!(h["origin"], json!("https://app.example"));
        assert_eq!(h["x-forwarded-for"], json!("203.0.113.7"));
        assert_eq!(h["user-agent"], json!("auth-tests/1.0"));

        // The hook's patterns.
        let t = topic("h");
        assert_eq!(ws.sub(&t), 0);
        ws.sub_forbidden("other.1");
        assert_eq!(ws.publish("h.1", "granted"), 1);
        ws.roundtrip("pub h.2 no", "err 403 pub h.2 forbidden");

        // A reconnect with the cookie: the hook is asked again and told.
        let id = ws.id.clone();
        let peer = ws.peer.clone();
        ws.drop_tcp();
        wait_open_connections(gw, 0, "after the drop");
        let again = connect(gw, "client again", &browser_like().cookie(&id));
        assert_eq!(
            again.hello,
            format!("hello {peer} resumed {} hook-user", gw::NODE)
        );
        let reqs = hook.requests();
        assert_eq!(reqs.len(), seen + 2, "one hook request per upgrade");
        let body = reqs.last().unwrap().json();
        assert_eq!(body["session"], json!(id), "{body}");
        assert_eq!(body["resumed"], json!(true), "{body}");
        assert_eq!(
            body["headers"]["cookie"],
            json!(format!("{}={id}", gw::COOKIE)),
            "{body}"
        );
        let got = wait_series(gw, HOOK_REQUESTS, s0.sum(HOOK_REQUESTS) + 2.0);
        assert_eq!(got, s0.sum(HOOK_REQUESTS) + 2.0, "{HOOK_REQUESTS}");
        again.close();
        assert_no_secrets(gw, &[id, CREDENTIAL.to_string()]);
    });
}

#[test]
fn the_hooks_user_owns_the_session() {
    // The hook names the user after the client's User-Agent.
    let hook = Hook::start(|req| {
        let user = client_ua(req);
        Reply::Grant(json!({"user": user, "sub": ["*"]}))
    });
    let args = hook_args(&hook.url(), &[]);
    for_each_driver(&strs(&args), |gw| {
        let s0 = gw.scrape();
        let t = topic("owned");
        let as_user = |u: &str| Upgrade::new().header("User-Agent", u);
        let mut u1 = connect(gw, "u1", &as_user("u1"));
        assert_eq!(u1.user.as_deref(), Some("u1"));
        assert_eq!(u1.sub(&t), 0);
        // Another user with u1's cookie: a new session, u1 untouched.
        let u2 = connect(gw, "u2", &as_user("u2").cookie(&u1.id));
        assert!(
            u2.id != u1.id && u2.state == "new" && u2.user.as_deref() == Some("u2"),
            "another hook user with u1's cookie: {:?} (id kept: {})",
            u2.hello,
            u2.id == u1.id
        );
        let mismatch = "wsgate_auth_session_mismatch_total";
        assert_eq!(
            wait_series(gw, mismatch, s0.sum(mismatch) + 1.0),
            s0.sum(mismatch) + 1.0,
            "{mismatch}"
        );
        u1.expect_quiet(Duration::from_millis(300), "u1 after u2's upgrade");
        assert_eq!(u1.who(&t), vec![u1.member()]);
        // The same user with its own cookie resumes.
        let (id, peer) = (u1.id.clone(), u1.peer.clone());
        u1.drop_tcp();
        wait_open_connections(gw, 1, "after u1 dropped");
        let again = connect(gw, "u1 again", &as_user("u1").cookie(&id));
        assert_eq!(again.hello, format!("hello {peer} resumed {} u1", gw::NODE));
        let secrets = vec![id, u2.id.clone()];
        again.close();
        u2.close();
        assert_no_secrets(gw, &secrets);
    });
}

#[test]
fn refusals_are_passed_on_and_anything_else_is_a_503() {
    let hook = Hook::start(|req| match client_ua(req).as_str() {
        "ua-401" => Reply::Status(401, "{}".into()),
        "ua-403" => Reply::Status(403, "{}".into()),
        "ua-500" => Reply::Status(500, "{}".into()),
        "ua-404" => Reply::Status(404, "{}".into()),
        "ua-badjson" => Reply::Status(200, "this is not json".into()),
        "ua-nouser" => Reply::Grant(json!({"sub": ["*"]})),
        "ua-baduser" => Reply::Grant(json!({"user": "a b", "sub": ["*"]})),
        "ua-close" => Reply::Close,
        _ => Reply::Grant(json!({"user": "fine"})),
    });
    let args = hook_args(&hook.url(), &[]);
    for_each_driver(&strs(&args), |gw| {
        let s0 = gw.scrape();
        let cases = [
            ("ua-401", 401),
            ("ua-403", 403),
            ("ua-500", 503),
            ("ua-404", 503),
            ("ua-badjson", 503),
            ("ua-nouser", 503),
            ("ua-baduser", 503),
            ("ua-close", 503),
        ];
        for (ua, status) in cases {
            let req = Upgrade::bearer(CREDENTIAL).header("User-Agent", ua);
            let r = upgrade(gw.addr, ua, &req)
                .err()
                .unwrap_or_else(|| panic!("{ua}: upgraded, expected {status}"));
            r.assert_basic(status, &[CREDENTIAL], ua);
            if status == 401 {
                // RFC 9110 §15.5.2: a 401 carries a challenge.
                assert!(r.header("WWW-Authenticate").is_some(), "{ua}:\n{}", r.head);
            }
        }
        let s1 = gw.scrape_until(Duration::from_secs(5), |s| {
            upgrades(s, "503") >= upgrades(&s0, "503") + 6.0
        });
        for (result, n) in [("401", 1.0), ("403", 1.0), ("503", 6.0)] {
            assert_eq!(
                upgrades(&s1, result),
                upgrades(&s0, result) + n,
                "wsgate_upgrades_total{{result=\"{result}\"}}"
            );
        }
        // The log lines may trail the answers by a moment.
        common::wait_until(Duration::from_secs(5), || rejections(gw).len() >= 8);
        std::thread::sleep(Duration::from_millis(100));
        let logged: Vec<u16> = rejections(gw).into_iter().map(|(s, _)| s).collect();
        for (status, n) in [(401, 1), (403, 1), (503, 6)] {
            assert_eq!(
                logged.iter().filter(|s| **s == status).count(),
                n,
                "`event=rejected status={status}` lines: {logged:?}"
            );
        }
        let fam = s1.family(HOOK_REQUESTS);
        let total: f64 = fam.iter().map(|(_, v)| v).sum();
        assert!(
            total >= s0.sum(HOOK_REQUESTS) + 8.0,
            "{HOOK_REQUESTS}: every hook call counted: {fam:?}"
        );
        assert!(
            fam.iter().filter(|(_, v)| *v > 0.0).count() >= 3,
            "{HOOK_REQUESTS}: results told apart (granted, 401, 403, failure): {fam:?}"
        );
        // Still serving.
        let ws = connect(gw, "fine", &Upgrade::new().header("User-Agent", "ok"));
        assert_eq!(ws.user.as_deref(), Some("fine"));
        ws.close();
        assert_no_secrets(gw, &[CREDENTIAL.to_string()]);
    });
}

#[test]
fn a_hook_that_never_answers_is_a_503_within_the_timeout() {
    let hook = Hook::always(Reply::Hang);
    let args = hook_args(&hook.url(), &["--auth-hook-timeout", "300ms"]);
    for_each_driver(&strs(&args), |gw| {
        let s0 = gw.scrape();
        let r = upgrade(gw.addr, "hung", &Upgrade::new())
            .err()
            .expect("upgraded although the hook never answered");
        r.assert_basic(503, &[], "a hung hook");
        assert!(
            r.elapsed >= Duration::from_millis(250) && r.elapsed <= Duration::from_secs(2),
            "a hung hook with --auth-hook-timeout 300ms answered after {:?}",
            r.elapsed
        );
        let got = wait_series(
            gw,
            "wsgate_upgrades_total{result=\"503\"}",
            upgrades(&s0, "503") + 1.0,
        );
        assert_eq!(got, upgrades(&s0, "503") + 1.0);
        let hook_total = wait_series(gw, HOOK_REQUESTS, s0.sum(HOOK_REQUESTS) + 1.0);
        assert_eq!(hook_total, s0.sum(HOOK_REQUESTS) + 1.0, "{HOOK_REQUESTS}");
    });
}

#[test]
fn waiting_for_the_hook_blocks_nothing_and_the_default_timeout_is_2s() {
    let hook = Hook::start(|req| match client_ua(req).as_str() {
        "hang" => Reply::Hang,
        _ => Reply::Grant(json!({"user": "quick", "sub": ["*"]})),
    });
    // One core: the hung upgrade and the quick one share it.
    let gw = one_core(&hook_args(&hook.url(), &[]));
    let addr = gw.addr;
    let hung = std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = upgrade(addr, "hung", &Upgrade::new().header("User-Agent", "hang"));
        (r.err(), t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..3 {
        let t0 = Instant::now();
        let mut ws = connect(&gw, "quick", &Upgrade::new().header("User-Agent", "quick"));
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "quick upgrade #{i} took {:?} while another waited for the hook",
            t0.elapsed()
        );
        assert_eq!(ws.sub(&topic("q")), 0);
        ws.close();
    }
    assert!(
        !hung.is_finished(),
        "the hung upgrade finished before the quick ones were served"
    );
    let (refusal, took) = hung.join().unwrap();
    let r = refusal.expect("upgraded although the hook never answered");
    r.assert_basic(503, &[], "a hung hook, default timeout");
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(4),
        "the default --auth-hook-timeout is 2s; the 503 came after {took:?}"
    );
    gw.assert_healthy();
}

#[test]
fn a_hook_that_is_down_is_a_503() {
    let url = down_url();
    let args = hook_args(&url, &[]);
    for_each_driver(&strs(&args), |gw| {
        let s0 = gw.scrape();
        let r = upgrade(gw.addr, "down", &Upgrade::new())
            .err()
            .expect("upgraded although the hook is down");
        r.assert_basic(503, &[], "a hook that is down");
        assert!(
            r.elapsed <= Duration::from_millis(2500),
            "a refused connection to the hook took {:?}",
            r.elapsed
        );
        let got = wait_series(
            gw,
            "wsgate_upgrades_total{result=\"503\"}",
            upgrades(&s0, "503") + 1.0,
        );
        assert_eq!(got, upgrades(&s0, "503") + 1.0);
        let hook_total = wait_series(gw, HOOK_REQUESTS, s0.sum(HOOK_REQUESTS) + 1.0);
        assert!(hook_total >= s0.sum(HOOK_REQUESTS) + 1.0, "{HOOK_REQUESTS}");
    });
}

#[test]
fn the_jwt_comes_first_then_the_hook_sees_its_user() {
    let keys = Keys::new();
    let hook = Hook::start(|req| {
        let user = req.json()["user"].clone();
        Reply::Grant(json!({"user": user, "sub": ["j.*"]}))
    });
    let args = hook_args(&hook.url(), &["--jwt-secret-file", &keys.secret_file]);
    for_each_driver(&strs(&args), |gw| {
        let before = hook.requests().len();
        let bad = hs256_with(
            b"not-the-gateway-secret-0123456789abcdef",
            &claims("alice", 300),
        );
        for (what, req) in [
            ("no token", Upgrade::new()),
            ("a bad token", Upgrade::bearer(&bad)),
        ] {
            let r = upgrade(gw.addr, what, &req)
                .err()
                .unwrap_or_else(|| panic!("{what}: upgraded"));
            r.assert_shape(401, &[&bad], what);
        }
        assert_eq!(
            hook.requests().len(),
            before,
            "the hook was asked about a token the JWT check refuses"
        );
        let token = hs256(&claims("alice", 300));
        let mut ws = connect(gw, "alice", &Upgrade::query(&token));
        assert_eq!(ws.user.as_deref(), Some("alice"), "{:?}", ws.hello);
        let reqs = hook.requests();
        assert_eq!(reqs.len(), before + 1);
        let body = reqs.last().unwrap().json();
        assert_eq!(body["user"], json!("alice"), "the JWT's sub: {body}");
        assert_eq!(body["session"], json!(ws.id), "{body}");
        assert_eq!(ws.sub("j.1"), 0);
        ws.sub_forbidden("k.1");
        let secrets = [
            token_secrets(&token),
            token_secrets(&bad),
            vec![ws.id.clone()],
        ]
        .concat();
        ws.close();
        assert_no_secrets(gw, &secrets);
    });
}

#[test]
fn expires_in_closes_the_connection_like_exp() {
    let hook = Hook::always(Reply::Grant(
        json!({"user": "temp", "sub": ["*"], "expires_in": 2}),
    ));
    let args = hook_args(&hook.url(), &[]);
    for_each_driver(&strs(&args), |gw| {
        let t0 = Instant::now();
        let mut ws = connect(gw, "temp", &Upgrade::new());
        assert_eq!(ws.sub(&topic("tmp")), 0);
        // expires_in 2 s (plus at most the default 5 s leeway, plus slack).
        ws.expect_quiet(Duration::from_millis(1500), "before expires_in");
        ws.expect_close(
            1008,
            "token expired",
            Duration::from_secs(9).saturating_sub(t0.elapsed()),
            "at the hook's expires_in",
        );
    });
}

#[test]
fn hook_connections_are_kept_alive() {
    let hook = Hook::always(Reply::Grant(json!({"user": "kept", "sub": ["*"]})));
    let gw = one_core(&hook_args(&hook.url(), &[]));
    for i in 0..5 {
        let ws = connect(&gw, &format!("client {i}"), &Upgrade::new());
        ws.close();
    }
    assert_eq!(hook.requests().len(), 5);
    assert!(
        hook.connections() <= 2,
        "5 sequential upgrades on one core opened {} connections to the hook \
         (expected keep-alive)",
        hook.connections()
    );
    gw.assert_healthy();
}
