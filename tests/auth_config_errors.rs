//! Bad auth configuration fails at start like any bad configuration
//! (DESIGN §2, §11): exit code 2, one line `wsgate: error: …`, no panic, and
//! never the secret itself. An HS256 secret needs at least 32 bytes (a
//! trailing newline does not count); a PEM key is no shared secret.

#![cfg(feature = "auth")]

mod auth;
mod common;
mod gw;

use std::time::Duration;

use auth::*;
use common::{run_to_exit, Driver, Gateway};

fn expect_config_error(what: &str, flags: &[&str], secret: Option<&str>) {
    let mut args = vec!["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    let (status, stderr) = run_to_exit(&args, &[], Duration::from_secs(10));
    let status = status.unwrap_or_else(|| panic!("{what}: still running; stderr:\n{stderr}"));
    assert!(!stderr.contains("panicked"), "{what}: panicked:\n{stderr}");
    assert_eq!(
        status.code(),
        Some(2),
        "{what}: {status}; stderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.trim_end_matches('\n').split('\n').collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("wsgate: error:"),
        "{what}: expected one line `wsgate: error: …`, got:\n{stderr}"
    );
    if let Some(s) = secret {
        assert!(!stderr.contains(s), "{what}: the secret leaked: {stderr}");
    }
    eprintln!("{what}: {}", lines[0]);
}

#[test]
fn bad_auth_flags_exit_2_with_one_line() {
    let dir = TempDir::new("cfg");
    let short = "0123456789abcdef0123456789abcde"; // 31 bytes
    let short_file = dir.write("short", format!("{short}\n").as_bytes());
    let missing = dir.0.join("no-such-file").display().to_string();
    let garbage = dir.write("garbage.pem", b"-----BEGIN PUBLIC KEY-----\nnot base64\n");
    let bad_jwks = dir.write("bad.json", b"{\"keys\": [");
    let rsa = key_path("rsa_public.pem");
    let jwks = key_path("jwks.json");
    let cases: Vec<(&str, Vec<&str>, Option<&str>)> = vec![
        (
            "a 31-byte secret",
            vec!["--jwt-secret-file", &short_file],
            Some(short),
        ),
        (
            "a missing secret file",
            vec!["--jwt-secret-file", &missing],
            None,
        ),
        (
            "a PEM public key as the HS256 secret",
            vec!["--jwt-secret-file", &rsa],
            None,
        ),
        (
            "an unreadable public key",
            vec!["--jwt-public-key-file", &garbage],
            None,
        ),
        (
            "a missing public key",
            vec!["--jwt-public-key-file", &missing],
            None,
        ),
        (
            "a JWKS file that is not JSON",
            vec!["--jwt-jwks-file", &bad_jwks],
            None,
        ),
        (
            "a bad --allow-sub pattern",
            vec!["--jwt-secret-file", &short_file, "--allow-sub", "a b"],
            None,
        ),
        (
            "a bad --allow-pub pattern",
            vec!["--jwt-jwks-file", &jwks, "--allow-pub", "x{usr}"],
            None,
        ),
        (
            "an unparsable leeway",
            vec!["--jwt-jwks-file", &jwks, "--jwt-leeway", "soon"],
            None,
        ),
        (
            "a hook URL that is not http://",
            vec!["--auth-hook", "ftp://127.0.0.1/auth"],
            None,
        ),
        (
            "a hook URL that is no URL",
            vec!["--auth-hook", "auth"],
            None,
        ),
        (
            "an unparsable hook timeout",
            vec![
                "--auth-hook",
                "http://127.0.0.1:9/auth",
                "--auth-hook-timeout",
                "x",
            ],
            None,
        ),
    ];
    for (what, flags, secret) in &cases {
        expect_config_error(what, flags, *secret);
    }
}

#[test]
fn a_32_byte_secret_with_a_trailing_newline_is_enough() {
    let dir = TempDir::new("cfg32");
    let secret = "0123456789abcdef0123456789abcdef"; // 32 bytes
    let file = dir.write("secret", format!("{secret}\n").as_bytes());
    let gw = Gateway::start(
        Driver::IoUring,
        &strs(&gw_args(&["--jwt-secret-file", &file, "--allow-sub", "*"])),
    );
    let token = hs256_with(secret.as_bytes(), &claims("alice", 300));
    let mut ws = auth::client::upgrade(gw.addr, "alice", &auth::client::Upgrade::bearer(&token))
        .unwrap_or_else(|r| panic!("refused:\n{}", r.head));
    assert_eq!(ws.user.as_deref(), Some("alice"));
    assert_eq!(ws.sub("any.topic"), 0);
    ws.close();
    let logs = gw.logs().join("\n");
    assert!(!logs.contains(secret), "the secret is in the log");
    gw.assert_healthy();
}
