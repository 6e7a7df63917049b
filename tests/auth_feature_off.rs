//! A build without the `auth` feature (`cargo test --no-default-features`)
//! keeps the lean gateway, and says so when asked for auth: every flag of
//! the feature fails at start with exit code 2 and a line saying the build
//! lacks the `auth` feature (issue 14), instead of an "unknown argument" or,
//! worse, an open gateway the operator believes is protected.

#![cfg(not(feature = "auth"))]

mod common;

use std::time::Duration;

#[test]
fn auth_flags_fail_at_start_without_the_feature() {
    let dir = std::env::temp_dir().join(format!("wsg-lean-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "a-secret-that-is-long-enough-0123456789\n").unwrap();
    let secret = secret.display().to_string();
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/");
    let rsa = format!("{keys}rsa_public.pem");
    let jwks = format!("{keys}jwks.json");
    let cases: [&[&str]; 10] = [
        &["--jwt-secret-file", &secret],
        &["--jwt-public-key-file", &rsa],
        &["--jwt-jwks-file", &jwks],
        &["--jwt-issuer", "https://idp.example"],
        &["--jwt-audience", "wsgate"],
        &["--jwt-leeway", "5s"],
        &["--auth-hook", "http://127.0.0.1:9/auth"],
        &["--auth-hook-timeout", "2s"],
        &["--allow-sub", "public.*"],
        &["--allow-pub", "public.*"],
    ];
    let mut failures = Vec::new();
    for flags in cases {
        let mut args = vec!["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let (status, stderr) = common::run_to_exit(&args, &[], Duration::from_secs(10));
        let says_so = stderr.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("auth") && l.contains("feature")
        });
        let ok =
            status.and_then(|s| s.code()) == Some(2) && says_so && !stderr.contains("panicked");
        if !ok {
            failures.push(format!(
                "{flags:?}: exit {status:?}, stderr:\n{}",
                stderr.trim_end()
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "a lean build must refuse every auth flag with exit 2 and a line naming the \
         missing `auth` feature:\n{}",
        failures.join("\n")
    );
}
