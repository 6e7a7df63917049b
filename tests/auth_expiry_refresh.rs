//! A token's expiry on an open connection (DESIGN §11): at `exp` (+ leeway,
//! here `--jwt-leeway 0s`) the connection gets close `1008 "token
//! expired"`, unless the client sent `auth <new-jwt>` for the same user
//! before (`ok auth <exp>`); a refresh that is invalid, or for another
//! user, gets `err 401 auth invalid` and the old token stays in force. The
//! new token's grants replace the old ones: subscriptions no longer allowed
//! are dropped with `err 403 sub <topic> revoked`.

#![cfg(feature = "auth")]

mod auth;
mod common;
mod gw;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth::client::{upgrade, Upgrade, Ws};
use auth::*;
use common::{for_each_driver, Gateway};
use gw::{api_publish, topic};

const CLOSES_1008: &str = "wsgate_closes_total{code=\"1008\"}";

fn args(keys: &Keys) -> Vec<String> {
    gw_args(&[
        "--jwt-secret-file",
        &keys.secret_file,
        "--jwt-leeway",
        "0s",
        "--allow-sub",
        "flag.*",
        "--allow-pub",
        "flag.*",
    ])
}

/// Seconds since the epoch, with a fraction.
fn now_f() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// How long until the epoch second `t` (zero if passed).
fn until(t: f64) -> Duration {
    Duration::from_secs_f64((t - now_f()).max(0.0))
}

fn connect(gw: &Gateway, name: &str, token: &str) -> Ws {
    upgrade(gw.addr, name, &Upgrade::bearer(token))
        .unwrap_or_else(|r| panic!("{name}: refused:\n{}{}", r.head, r.body))
}

/// The connection stays open (and quiet) until shortly before `exp`, then
/// gets close 1008 "token expired", no later than `exp` + 4 s.
fn expect_expiry_close(ws: &mut Ws, exp: i64, ctx: &str) {
    let exp = exp as f64;
    ws.expect_quiet(until(exp - 0.7), &format!("{ctx}: open until its exp"));
    ws.expect_close(1008, "token expired", until(exp + 4.0), ctx);
    let at = now_f();
    assert!(
        at >= exp - 1.0,
        "{ctx}: closed {:.2} s before the token's exp",
        exp - at
    );
}

#[test]
fn an_expired_token_closes_the_connection_with_1008() {
    let keys = Keys::new();
    for_each_driver(&strs(&args(&keys)), |gw| {
        let s0 = gw.scrape();
        let t = topic("flag.exp");
        let exp = now() + 3;
        let short = hs256(&serde_json::json!({"sub": "alice", "exp": exp}));
        let mut alice = connect(gw, "alice", &short);
        assert_eq!(alice.user.as_deref(), Some("alice"));
        assert_eq!(alice.sub(&t), 0);
        let long = hs256(&claims("bob", 300));
        let mut bob = connect(gw, "bob", &long);
        assert_eq!(bob.sub(&t), 0);
        alice.expect_line(&format!("join {t} {} bob", bob.peer), "bob joins");

        // Working before its exp.
        assert_eq!(bob.publish_own(&t, "before"), 1);
        alice.expect_line(&format!("msg {t} 1 before"), "a message before the exp");
        expect_expiry_close(&mut alice, exp, "alice at her token's exp");
        let got = wait_series(gw, CLOSES_1008, s0.val(CLOSES_1008) + 1.0);
        assert_eq!(got, s0.val(CLOSES_1008) + 1.0, "{CLOSES_1008}");

        // The long-lived one is untouched.
        // (Whether alice's session lingers or ends is not at stake here: a
        // `leave` for her may come first.)
        bob.send_text(&format!("pub {t} after"));
        assert_eq!(bob.data_line("his own message"), format!("msg {t} 2 after"));
        assert_eq!(bob.data_line("the pub answer"), format!("ok pub {t} 2"));

        // The expired token no longer opens anything, with or without the
        // session cookie; a fresh one for the same user does.
        for req in [
            Upgrade::bearer(&short),
            Upgrade::bearer(&short).cookie(&alice.id),
        ] {
            let r = upgrade(gw.addr, "alice again", &req)
                .err()
                .expect("an expired token was accepted");
            r.assert_shape(401, &[&short, &alice.id], "the expired token");
        }
        assert_eq!(wait_rejections(gw, 401, 2), vec!["expired", "expired"]);
        let fresh = hs256(&claims("alice", 300));
        let again = upgrade(gw.addr, "alice", &Upgrade::bearer(&fresh).cookie(&alice.id))
            .unwrap_or_else(|r| panic!("a fresh token: refused:\n{}", r.head));
        assert_eq!(again.user.as_deref(), Some("alice"), "{:?}", again.hello);
        let secrets = [
            token_secrets(&short),
            token_secrets(&long),
            token_secrets(&fresh),
            vec![alice.id.clone(), bob.id.clone(), again.id.clone()],
        ]
        .concat();
        again.close();
        bob.close();
        assert_no_secrets(gw, &secrets);
    });
}

#[test]
fn a_refresh_keeps_the_connection_open_past_the_first_exp() {
    let keys = Keys::new();
    for_each_driver(&strs(&args(&keys)), |gw| {
        let s0 = gw.scrape();
        let t = topic("flag.refresh");
        let exp1 = now() + 2;
        let first = hs256(&serde_json::json!({"sub": "alice", "exp": exp1}));
        let mut alice = connect(gw, "alice", &first);
        assert_eq!(alice.sub(&t), 0);

        let exp2 = now() + 120;
        let second = hs256(&serde_json::json!({"sub": "alice", "exp": exp2}));
        alice.roundtrip(&format!("auth {second}"), &format!("ok auth {exp2}"));

        // Well past the first exp: still open, still subscribed.
        alice.expect_quiet(
            until(exp1 as f64 + 2.5),
            "past the first token's exp after a refresh",
        );
        assert_eq!(api_publish(gw, &t, b"still here", false), 1);
        alice.expect_line(&format!("msg {t} 1 still here"), "after the first exp");
        assert_eq!(alice.publish_own(&t, "me too"), 2);

        // A second refresh is answered the same way.
        let exp3 = now() + 240;
        let third = hs256(&serde_json::json!({"sub": "alice", "exp": exp3}));
        alice.roundtrip(&format!("auth {third}"), &format!("ok auth {exp3}"));
        assert_eq!(gw.scrape().val(CLOSES_1008), s0.val(CLOSES_1008), "no 1008");
        let secrets = [
            token_secrets(&first),
            token_secrets(&second),
            token_secrets(&third),
            vec![alice.id.clone()],
        ]
        .concat();
        alice.close();
        assert_no_secrets(gw, &secrets);
    });
}

#[test]
fn an_invalid_refresh_leaves_the_old_token_in_force() {
    let keys = Keys::new();
    for_each_driver(&strs(&args(&keys)), |gw| {
        let t = topic("flag.invalid");
        let exp = now() + 4;
        let first = hs256(&serde_json::json!({"sub": "alice", "exp": exp}));
        let mut alice = connect(gw, "alice", &first);
        assert_eq!(alice.sub(&t), 0);

        let c = claims("alice", 300);
        let bad = [
            ("not a token", "garbage".to_string()),
            ("another user", hs256(&claims("mallory", 300))),
            ("expired", hs256(&claims("alice", -60))),
            (
                "wrong secret",
                hs256_with(b"not-the-gateway-secret-0123456789abcdef", &c),
            ),
            ("alg none", alg_none(&c)),
            ("RS256", rs256(&c, None)),
        ];
        for (what, token) in &bad {
            alice.send_text(&format!("auth {token}"));
            alice.expect_line("err 401 auth invalid", &format!("a refresh with {what}"));
        }
        // Still open, still alice, still subscribed.
        assert_eq!(api_publish(gw, &t, b"after the bad refreshes", false), 1);
        alice.expect_line(
            &format!("msg {t} 1 after the bad refreshes"),
            "still subscribed",
        );
        // The old token's exp still holds.
        expect_expiry_close(&mut alice, exp, "the old token after bad refreshes");
        let mut secrets: Vec<String> = bad.iter().flat_map(|(_, t)| token_secrets(t)).collect();
        secrets.extend(token_secrets(&first));
        secrets.push(alice.id.clone());
        assert_no_secrets(gw, &secrets);
    });
}

#[test]
fn narrower_grants_revoke_subscriptions() {
    let keys = Keys::new();
    for_each_driver(&strs(&args(&keys)), |gw| {
        let room1 = topic("room.1");
        let room2 = topic("room.2");
        let room3 = topic("room.3");
        let extra = topic("extra");
        let flag = topic("flag.kept");
        let first = hs256(&claims_with("alice", 300, &["room.*"], &["room.*"]));
        let mut alice = connect(gw, "alice", &first);
        for t in [&room1, &room2, &room3, &flag] {
            assert_eq!(alice.sub(t), 0, "{t}");
        }
        assert_eq!(alice.publish_own(&room1, "before"), 1);

        // The new token keeps room.1 (by name) and adds extra.*; no pub.
        let exp2 = now() + 600;
        let mut c = claims_with("alice", 0, &[&room1, "extra*"], &[]);
        c["exp"] = serde_json::json!(exp2);
        let second = hs256(&c);
        alice.send_text(&format!("auth {second}"));
        alice.expect_line(&format!("ok auth {exp2}"), "the refresh");
        let mut revoked = vec![alice.line("a revocation"), alice.line("a revocation")];
        revoked.sort();
        let mut want = vec![
            format!("err 403 sub {room2} revoked"),
            format!("err 403 sub {room3} revoked"),
        ];
        want.sort();
        assert_eq!(revoked, want, "the subscriptions no longer allowed");
        alice.expect_quiet(Duration::from_millis(300), "nothing else after the refresh");

        // Dropped: no more messages for them; kept: room.1 and the flag's.
        for t in [&room2, &room3] {
            assert_eq!(api_publish(gw, t, b"gone", false), 1);
        }
        assert_eq!(api_publish(gw, &room1, b"kept", false), 2);
        alice.expect_line(&format!("msg {room1} 2 kept"), "room.1 is still granted");
        assert_eq!(api_publish(gw, &flag, b"flag", false), 1);
        alice.expect_line(&format!("msg {flag} 1 flag"), "the flag's pattern is kept");
        alice.expect_quiet(
            Duration::from_millis(300),
            "nothing from the revoked topics",
        );

        // The grants are the new token's, not the union.
        alice.sub_forbidden(&room2);
        alice.roundtrip(
            &format!("who {room2}"),
            &format!("err 403 who {room2} forbidden"),
        );
        alice.roundtrip(
            &format!("pub {room1} no longer"),
            &format!("err 403 pub {room1} forbidden"),
        );
        assert_eq!(alice.sub(&extra), 0, "the new grant");
        let secrets = [
            token_secrets(&first),
            token_secrets(&second),
            vec![alice.id.clone()],
        ]
        .concat();
        alice.close();
        assert_no_secrets(gw, &secrets);
    });
}

#[test]
fn the_leeway_is_added_to_exp() {
    let keys = Keys::new();
    let args = gw_args(&[
        "--jwt-secret-file",
        &keys.secret_file,
        "--jwt-leeway",
        "2s",
        "--allow-sub",
        "flag.*",
    ]);
    for_each_driver(&strs(&args), |gw| {
        let exp = now() + 1;
        let token = hs256(&serde_json::json!({"sub": "alice", "exp": exp}));
        let mut alice = connect(gw, "alice", &token);
        assert_eq!(alice.sub(&topic("flag.leeway")), 0);
        // Open past exp, closed at exp + 2 s.
        expect_expiry_close(&mut alice, exp + 2, "at exp + --jwt-leeway 2s");
        assert_no_secrets(
            gw,
            &[token_secrets(&token), vec![alice.id.clone()]].concat(),
        );
    });
}
