//! `--jwt-jwks-file` (DESIGN §11, issue 14): the key is chosen by the
//! token's `kid` and must match the token's `alg`; the file is re-read when
//! it changes, so keys rotate without a restart (within ~1–2 s; asserted
//! with a generous bound). A file that cannot be used keeps the keys in
//! force.

#![cfg(feature = "auth")]

mod auth;
mod common;
mod gw;

use std::time::{Duration, Instant};

use auth::client::{upgrade, Upgrade};
use auth::*;
use common::{for_each_driver, Driver, Gateway};

/// How long a rotation may take to be seen (the contract: ~1–2 s).
const ROTATION: Duration = Duration::from_secs(3);

fn accepted(gw: &Gateway, token: &str) -> bool {
    match upgrade(gw.addr, "probe", &Upgrade::bearer(token)) {
        Ok(ws) => {
            ws.close();
            true
        }
        Err(r) => {
            r.assert_shape(401, &[token], "a JWKS refusal");
            false
        }
    }
}

/// Polls until `token` is accepted (or refused, `want` false); returns how
/// long that took, panics after [`ROTATION`].
fn wait_accepted(gw: &Gateway, token: &str, want: bool, what: &str) -> Duration {
    let t0 = Instant::now();
    loop {
        if accepted(gw, token) == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < ROTATION,
            "[{}] {what}: still {} {ROTATION:?} after the JWKS file changed",
            gw.driver.name(),
            if want { "refused" } else { "accepted" }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_kid_picks_the_key_and_the_key_fixes_the_alg() {
    let keys = Keys::new();
    let args = gw_args(&["--jwt-jwks-file", &keys.jwks, "--jwt-leeway", "0s"]);
    for_each_driver(&strs(&args), |gw| {
        let c = claims("alice", 300);
        for (what, token) in [
            ("RS256 by kid", rs256(&c, Some(KID_RSA))),
            ("ES256 by kid", es256(&c, Some(KID_EC))),
        ] {
            let ws = upgrade(gw.addr, what, &Upgrade::bearer(&token))
                .unwrap_or_else(|r| panic!("{what}: refused:\n{}", r.head));
            assert_eq!(ws.user.as_deref(), Some("alice"), "{what}: {:?}", ws.hello);
            ws.close();
        }
        let bad = [
            ("RS256 naming the EC key", rs256(&c, Some(KID_EC)), "alg"),
            ("ES256 naming the RSA key", es256(&c, Some(KID_RSA)), "alg"),
            (
                "an unknown kid",
                rs256(&c, Some("test-rsa-9")),
                "unknown_key",
            ),
            ("alg none", alg_none(&c), "alg"),
            (
                "HS256 with the RSA PEM as secret",
                {
                    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
                    h.kid = Some(KID_RSA.into());
                    jsonwebtoken::encode(
                        &h,
                        &c,
                        &jsonwebtoken::EncodingKey::from_secret(RSA_PUBLIC),
                    )
                    .unwrap()
                },
                "alg",
            ),
        ];
        for (what, token, _) in &bad {
            let r = upgrade(gw.addr, what, &Upgrade::bearer(token))
                .err()
                .unwrap_or_else(|| panic!("{what}: accepted"));
            r.assert_shape(401, &[token], what);
        }
        let mut want: Vec<&str> = bad.iter().map(|(_, _, r)| *r).collect();
        want.sort();
        assert_eq!(wait_rejections(gw, 401, bad.len()), want);
        let secrets: Vec<String> = bad.iter().flat_map(|(_, t, _)| token_secrets(t)).collect();
        assert_no_secrets(gw, &secrets);
    });
}

#[test]
fn keys_rotate_without_a_restart() {
    let dir = TempDir::new("jwks");
    let path = dir.write("jwks.json", jwks_with(&[KID_RSA]).as_bytes());
    let args = gw_args(&["--jwt-jwks-file", &path, "--jwt-leeway", "0s"]);
    // A gateway per driver, each started on the one-key file.
    for driver in Driver::ALL {
        dir.replace("jwks.json", jwks_with(&[KID_RSA]).as_bytes());
        let gw = &Gateway::start(driver, &strs(&args));
        let c = claims("alice", 300);
        let rsa = rs256(&c, Some(KID_RSA));
        let ec = es256(&c, Some(KID_EC));
        assert!(accepted(gw, &rsa), "the RSA key of the file at start");
        assert!(!accepted(gw, &ec), "the EC key is not in the file yet");
        assert_eq!(wait_rejections(gw, 401, 1), vec!["unknown_key"]);

        // Rotate (atomic rename, as a fetcher writes it): EC in, RSA out.
        dir.replace("jwks.json", jwks_with(&[KID_EC]).as_bytes());
        let took = wait_accepted(gw, &ec, true, "the new EC key");
        eprintln!("[{}] rotation seen after {took:?}", gw.driver.name());
        assert!(!accepted(gw, &rsa), "the removed RSA key still verifies");
        assert_eq!(
            rejection_reasons(gw, 401).last().map(String::as_str),
            Some("unknown_key"),
            "the removed key's kid is unknown now"
        );

        // A file that cannot be used keeps the keys in force.
        dir.replace("jwks.json", b"{\"keys\": [ not json");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(2500) {
            assert!(
                accepted(gw, &ec),
                "an unusable JWKS file dropped the keys in force"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        gw.assert_running();

        // Rewritten in place (same inode): both keys.
        std::fs::write(&path, jwks_with(&[KID_RSA, KID_EC])).unwrap();
        wait_accepted(gw, &rsa, true, "the RSA key written back in place");
        assert!(accepted(gw, &ec), "the EC key kept");
        assert_no_secrets(gw, &[token_secrets(&rsa), token_secrets(&ec)].concat());
        gw.assert_healthy();
    }
}
