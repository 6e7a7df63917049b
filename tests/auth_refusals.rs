//! Every bad token is refused before the 101 (DESIGN §11): `401` with
//! `WWW-Authenticate: Bearer error="invalid_token"`, `Connection: close`,
//! no `Set-Cookie`, counted in `wsgate_upgrades_total{result="401"}` and
//! logged as `event=rejected status=401 reason=<word>`, never the token.
//! The algorithm follows the configured key (HS256 secret, RSA or EC public
//! key), never the token; the leeway defaults to 5 s. Good tokens pass in
//! the `Authorization` header and in the `token` query parameter.

#![cfg(feature = "auth")]

mod auth;
mod common;
mod gw;

use auth::client::{upgrade, Upgrade};
use auth::*;
use common::for_each_driver;
use serde_json::{json, Value};

/// Claims that pass the HS256 gateway below.
fn good(sub: &str) -> Value {
    let mut c = claims(sub, 300);
    c["iss"] = json!(ISSUER);
    c["aud"] = json!(AUDIENCE);
    c
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn without(mut c: Value, key: &str) -> Value {
    c.as_object_mut().unwrap().remove(key);
    c
}

#[test]
fn every_bad_token_is_a_401_before_the_101() {
    let keys = Keys::new();
    let args = gw_args(&[
        "--jwt-secret-file",
        &keys.secret_file,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
        "--jwt-leeway",
        "0s",
        "--allow-sub",
        "*",
    ]);
    for_each_driver(&strs(&args), |gw| {
        let other_secret = b"another-secret-that-is-long-enough-0123456789";
        let now = now();
        let cases: Vec<(&str, Upgrade, &str)> = vec![
            ("no token", Upgrade::new(), "missing"),
            ("not a JWT", Upgrade::bearer("not-a-token"), "malformed"),
            (
                "two parts",
                Upgrade::bearer("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0"),
                "malformed",
            ),
            (
                "signed with another secret",
                Upgrade::bearer(&hs256_with(other_secret, &good("alice"))),
                "bad_signature",
            ),
            (
                "payload swapped under a valid signature",
                Upgrade::bearer(&tampered(&hs256(&good("alice")), &good("mallory"))),
                "bad_signature",
            ),
            (
                "alg none",
                Upgrade::bearer(&alg_none(&good("alice"))),
                "alg",
            ),
            (
                "RS256 against an HS256 secret",
                Upgrade::bearer(&rs256(&good("alice"), None)),
                "alg",
            ),
            (
                "expired",
                Upgrade::bearer(&hs256(&with(good("alice"), "exp", json!(now - 60)))),
                "expired",
            ),
            (
                "nbf in the future",
                Upgrade::bearer(&hs256(&with(good("alice"), "nbf", json!(now + 600)))),
                "not_yet_valid",
            ),
            (
                "wrong issuer",
                Upgrade::bearer(&hs256(&with(
                    good("alice"),
                    "iss",
                    json!("https://evil.example"),
                ))),
                "issuer",
            ),
            (
                "no issuer",
                Upgrade::bearer(&hs256(&without(good("alice"), "iss"))),
                "issuer",
            ),
            (
                "wrong audience",
                Upgrade::bearer(&hs256(&with(good("alice"), "aud", json!("someone-else")))),
                "audience",
            ),
            (
                "no exp",
                Upgrade::bearer(&hs256(&without(good("alice"), "exp"))),
                "no_exp",
            ),
            (
                "no sub",
                Upgrade::bearer(&hs256(&without(good("alice"), "sub"))),
                "subject",
            ),
            ("empty sub", Upgrade::bearer(&hs256(&good(""))), "subject"),
            (
                "sub with a space",
                Upgrade::bearer(&hs256(&good("a b"))),
                "subject",
            ),
            (
                "sub with a slash",
                Upgrade::bearer(&hs256(&good("a/b"))),
                "subject",
            ),
            (
                "sub not ASCII",
                Upgrade::bearer(&hs256(&good("jos\u{e9}"))),
                "subject",
            ),
            (
                "sub of 129 bytes",
                Upgrade::bearer(&hs256(&good(&"a".repeat(129)))),
                "subject",
            ),
            (
                "sub not a string",
                Upgrade::bearer(&hs256(&with(good("x"), "sub", json!(42)))),
                // A claim of the wrong type: the shape is wrong, or the
                // subject is; either word names the rule.
                "subject|malformed",
            ),
            (
                "wsgate claim not a list",
                Upgrade::bearer(&hs256(&with(
                    good("alice"),
                    "wsgate",
                    json!({"sub": "room.1"}),
                ))),
                "permissions",
            ),
            (
                "wsgate claim with a bad pattern",
                Upgrade::bearer(&hs256(&with(
                    good("alice"),
                    "wsgate",
                    json!({"sub": ["a b"]}),
                ))),
                "permissions",
            ),
            (
                "a token over 8 KiB",
                Upgrade::bearer(&hs256(&with(good("alice"), "pad", json!("x".repeat(9000))))),
                "too_large",
            ),
            (
                "query: signed with another secret",
                Upgrade::query(&hs256_with(other_secret, &good("alice"))),
                "bad_signature",
            ),
            (
                "query: expired",
                Upgrade::query(&hs256(&with(good("alice"), "exp", json!(now - 60)))),
                "expired",
            ),
            (
                "query: a token over 8 KiB",
                Upgrade::query(&hs256(&with(good("alice"), "pad", json!("x".repeat(9000))))),
                "too_large",
            ),
            (
                "query: alg none",
                Upgrade::query(&alg_none(&good("alice"))),
                "alg",
            ),
        ];
        let s0 = gw.scrape();
        let mut secrets = Vec::new();
        for (what, req, _) in &cases {
            let token = req
                .headers
                .iter()
                .find_map(|(_, v)| v.strip_prefix("Bearer "))
                .or_else(|| req.target.strip_prefix("/ws?token="))
                .unwrap_or("");
            match upgrade(gw.addr, what, req) {
                Ok(ws) => panic!("{what}: upgraded ({:?}), expected a 401", ws.hello),
                Err(r) => r.assert_shape(401, &[token], what),
            }
            secrets.extend(token_secrets(token));
        }

        // Counted and logged, each with its reason.
        let n = cases.len() as f64;
        let got = wait_series(
            gw,
            "wsgate_upgrades_total{result=\"401\"}",
            upgrades(&s0, "401") + n,
        );
        assert_eq!(
            got,
            upgrades(&s0, "401") + n,
            "wsgate_upgrades_total{{result=\"401\"}}"
        );
        wait_rejections(gw, 401, cases.len());
        // In request order (each refusal is logged before it is written,
        // and the next request starts after the previous one's EOF).
        let logged: Vec<String> = rejections(gw)
            .into_iter()
            .filter(|(s, _)| *s == 401)
            .map(|(_, r)| r)
            .collect();
        assert_eq!(
            logged.len(),
            cases.len(),
            "[{}] {logged:?}",
            gw.driver.name()
        );
        for ((what, _, want), got) in cases.iter().zip(&logged) {
            // `a|b`: either word names the rule broken.
            assert!(
                want.split('|').any(|w| w == got),
                "[{}] {what}: logged reason={got}, expected reason={want}; all: {logged:?}",
                gw.driver.name()
            );
        }

        // Good tokens: header and query forms, odd but valid users, an
        // audience list.
        let long_user = "u".repeat(128);
        let ok_cases: Vec<(&str, Upgrade, &str)> = vec![
            ("header", Upgrade::bearer(&hs256(&good("alice"))), "alice"),
            ("query", Upgrade::query(&hs256(&good("bob"))), "bob"),
            (
                "every allowed byte",
                Upgrade::bearer(&hs256(&good("A-z_0.9:x@example.com"))),
                "A-z_0.9:x@example.com",
            ),
            (
                "128-byte user",
                Upgrade::bearer(&hs256(&good(&long_user))),
                &long_user,
            ),
            (
                "audience list",
                Upgrade::bearer(&hs256(&with(
                    good("carol"),
                    "aud",
                    json!(["other", AUDIENCE]),
                ))),
                "carol",
            ),
        ];
        for (what, req, user) in &ok_cases {
            let mut ws = upgrade(gw.addr, what, req)
                .unwrap_or_else(|r| panic!("{what}: refused:\n{}{}", r.head, r.body));
            assert_eq!(
                ws.hello,
                format!("hello {} new {} {user}", ws.peer, gw::NODE),
                "{what}: the hello names the user"
            );
            let t = gw::topic("refusals");
            assert_eq!(ws.sub(&t), 0, "{what}: a command works");
            secrets.extend(
                req.headers
                    .iter()
                    .filter_map(|(_, v)| v.strip_prefix("Bearer "))
                    .chain(req.target.strip_prefix("/ws?token="))
                    .flat_map(token_secrets),
            );
            secrets.push(ws.id.clone());
            ws.close();
        }
        assert_eq!(
            upgrades(&gw.scrape(), "401"),
            upgrades(&s0, "401") + n,
            "good tokens are not counted as 401"
        );
        assert_no_secrets(gw, &secrets);
    });
}

#[test]
fn the_algorithm_follows_the_public_key() {
    let keys = Keys::new();
    for (key_file, good_alg) in [(&keys.rsa_public, "RS256"), (&keys.ec_public, "ES256")] {
        let args = gw_args(&["--jwt-public-key-file", key_file, "--jwt-leeway", "0s"]);
        for_each_driver(&strs(&args), |gw| {
            let c = claims("alice", 300);
            let rs = rs256(&c, None);
            let es = es256(&c, None);
            let (good, other) = if good_alg == "RS256" {
                (rs, es)
            } else {
                (es, rs)
            };
            let own_pem = if good_alg == "RS256" {
                RSA_PUBLIC
            } else {
                EC_PUBLIC
            };
            let ws = upgrade(gw.addr, good_alg, &Upgrade::bearer(&good)).unwrap_or_else(|r| {
                panic!("{good_alg} with the configured key: refused:\n{}", r.head)
            });
            assert_eq!(ws.user.as_deref(), Some("alice"), "{:?}", ws.hello);
            ws.close();

            let bad = [
                ("the other asymmetric algorithm", other),
                (
                    // The classic forgery: the public key's PEM bytes used
                    // as an HMAC secret.
                    "HS256 signed with the public key PEM as secret",
                    hs256_with(own_pem, &c),
                ),
                ("HS256 with some secret", hs256(&c)),
                ("alg none", alg_none(&c)),
            ];
            for (what, token) in &bad {
                let r = upgrade(gw.addr, what, &Upgrade::bearer(token))
                    .err()
                    .unwrap_or_else(|| panic!("{good_alg} gateway: {what} was accepted"));
                r.assert_shape(401, &[token], what);
            }
            assert_eq!(
                wait_rejections(gw, 401, bad.len()),
                vec!["alg"; bad.len()],
                "[{}] {good_alg} gateway: every other alg is refused for its alg",
                gw.driver.name()
            );
            let mut secrets: Vec<String> = bad.iter().flat_map(|(_, t)| token_secrets(t)).collect();
            secrets.extend(token_secrets(&good));
            assert_no_secrets(gw, &secrets);
        });
    }
}

#[test]
fn leeway_is_5s_by_default_and_can_be_0() {
    let keys = Keys::new();
    for (leeway, accepted) in [(None, true), (Some("0s"), false)] {
        let mut flags = vec!["--jwt-secret-file", keys.secret_file.as_str()];
        if let Some(l) = leeway {
            flags.extend(["--jwt-leeway", l]);
        }
        let args = gw_args(&flags);
        for_each_driver(&strs(&args), |gw| {
            // Expired 2 s ago; valid from 2 s on.
            let late = hs256(&claims("late", -2));
            let early = hs256(&with(claims("early", 300), "nbf", json!(now() + 2)));
            for (what, token) in [("expired 2 s ago", &late), ("nbf in 2 s", &early)] {
                let got = upgrade(gw.addr, what, &Upgrade::bearer(token));
                match (accepted, got) {
                    (true, Ok(ws)) => ws.close(),
                    (false, Err(r)) => r.assert_shape(401, &[token], what),
                    (true, Err(r)) => {
                        panic!("{what}: refused with the default leeway (5 s):\n{}", r.head)
                    }
                    (false, Ok(ws)) => {
                        panic!("{what}: accepted with --jwt-leeway 0s: {:?}", ws.hello)
                    }
                }
            }
            if !accepted {
                assert_eq!(
                    wait_rejections(gw, 401, 2),
                    vec!["expired", "not_yet_valid"],
                    "[{}] with --jwt-leeway 0s",
                    gw.driver.name()
                );
            }
            assert_no_secrets(gw, &[token_secrets(&late), token_secrets(&early)].concat());
        });
    }
}
