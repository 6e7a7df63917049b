//! No token, session id or credential ever reaches a log line or
//! `/metrics` (DESIGN §6, §11), even at `--log-level debug`: tokens in the
//! `Authorization` header and in the `token` query parameter (origin form
//! and absolute form, RFC 9112 §3.2.2), good and bad ones, on the gateway
//! path and on other routes, in `auth` refreshes; the query string is
//! dropped from every log line.

#![cfg(feature = "auth")]

mod auth;
mod common;
mod gw;

use auth::client::{upgrade, Upgrade};
use auth::*;
use common::for_each_driver;

#[test]
fn no_token_or_session_id_in_any_log_line_or_metric() {
    let keys = Keys::new();
    let args = gw_args(&[
        "--jwt-secret-file",
        &keys.secret_file,
        "--allow-sub",
        "*",
        "--log-level",
        "debug",
    ]);
    for_each_driver(&strs(&args), |gw| {
        let good = hs256(&claims("alice", 300));
        let good2 = hs256(&claims("alice", 600));
        let other = hs256(&claims("bob", 300));
        let bad = hs256_with(
            b"not-the-gateway-secret-0123456789abcdef",
            &claims("eve", 300),
        );
        let mut ids = Vec::new();

        // Upgrades that succeed: header, query, query among other
        // parameters, absolute form.
        for (what, req) in [
            ("header", Upgrade::bearer(&good)),
            ("query", Upgrade::query(&good)),
            (
                "query among other parameters",
                Upgrade {
                    target: format!("/ws?v=2&token={good}&lang=en"),
                    headers: Vec::new(),
                },
            ),
            (
                "absolute form",
                Upgrade {
                    target: format!("http://127.0.0.1/ws?token={good}"),
                    headers: Vec::new(),
                },
            ),
        ] {
            let mut ws = upgrade(gw.addr, what, &req)
                .unwrap_or_else(|r| panic!("{what}: refused:\n{}{}", r.head, r.body));
            assert_eq!(ws.user.as_deref(), Some("alice"), "{what}: {:?}", ws.hello);
            assert_eq!(ws.sub(&gw::topic("s")), 0, "{what}");
            ids.push(ws.id.clone());
            if what == "header" {
                ws.roundtrip(
                    &format!("auth {good2}"),
                    &format!("ok auth {}", claims_exp(&good2)),
                );
                ws.roundtrip(&format!("auth {other}"), "err 401 auth invalid");
                ws.roundtrip(&format!("auth {bad}"), "err 401 auth invalid");
            }
            ws.close();
        }

        // Refusals and other routes, with tokens in the query.
        for (what, target, status) in [
            ("bad token in the query", format!("/ws?token={bad}"), 401),
            (
                "bad token, absolute form",
                format!("http://127.0.0.1/ws?token={bad}"),
                401,
            ),
            ("unknown path", format!("/nope?token={good}"), 404),
        ] {
            let r = upgrade(
                gw.addr,
                what,
                &Upgrade {
                    target,
                    headers: Vec::new(),
                },
            )
            .err()
            .unwrap_or_else(|| panic!("{what}: upgraded"));
            assert_eq!(r.status, status, "{what}:\n{}", r.head);
        }
        let r = upgrade(gw.addr, "bad header", &Upgrade::bearer(&bad))
            .err()
            .expect("a bad token upgraded");
        r.assert_shape(401, &[&bad], "bad header");

        let secrets = [
            token_secrets(&good),
            token_secrets(&good2),
            token_secrets(&other),
            token_secrets(&bad),
            ids.clone(),
        ]
        .concat();
        assert!(
            gw.logs().iter().any(|l| l.contains("level=debug")),
            "the gateway logs at debug level"
        );
        assert_no_secrets(gw, &secrets);
        let metrics = gw.admin_get("/metrics").body_str();
        for s in &secrets {
            assert!(!metrics.contains(s.as_str()), "a secret in /metrics");
        }
    });
}

/// The `exp` claim of a token minted here.
fn claims_exp(token: &str) -> i64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["exp"].as_i64().unwrap()
}
