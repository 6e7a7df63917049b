//! A build without the `auth` feature (`cargo test --no-default-features`)
//! keeps the lean gateway, and says so when asked for auth: every flag of
//! the feature fails at start with exit code 2 and a line saying the build
//! lacks the `auth` feature (issue 14), instead of an "unknown argument" or,
//! worse, an open gateway the operator believes is protected.

#![cfg(not(feature = "auth"))]

mod common;

use std::time::Duration;

/// Flags, and environment variables.
type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);

/// Runs the lean `wsgate` with each `(flags, env)` case; returns a line per
/// case that did not exit 2 with a line naming the missing feature.
fn failures(cases: &[Case]) -> Vec<String> {
    let mut out = Vec::new();
    for (flags, envs) in cases {
        let mut args = vec!["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let (status, stderr) = common::run_to_exit(&args, envs, Duration::from_secs(10));
        let says_so = stderr.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("auth") && l.contains("feature")
        });
        let ok =
            status.and_then(|s| s.code()) == Some(2) && says_so && !stderr.contains("panicked");
        if !ok {
            out.push(format!(
                "{flags:?} {envs:?}: exit {:?} ({}), stderr:\n{}",
                status.and_then(|s| s.code()),
                if status.is_none() {
                    "it started and ran until killed"
                } else {
                    "exited"
                },
                stderr.trim_end()
            ));
        }
    }
    out
}

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
    let cases: Vec<Case> = vec![
        (vec!["--jwt-secret-file", &secret], vec![]),
        (vec!["--jwt-public-key-file", &rsa], vec![]),
        (vec!["--jwt-jwks-file", &jwks], vec![]),
        (vec!["--jwt-issuer", "https://idp.example"], vec![]),
        (vec!["--jwt-audience", "wsgate"], vec![]),
        (vec!["--jwt-leeway", "10s"], vec![]),
        (vec!["--auth-hook", "http://127.0.0.1:9/auth"], vec![]),
        (vec!["--auth-hook-timeout", "3s"], vec![]),
        (vec!["--allow-sub", "public.*"], vec![]),
        (vec!["--allow-pub", "public.*"], vec![]),
        // The environment form of a flag, too.
        (vec![], vec![("WSGATE_JWT_SECRET_FILE", secret.as_str())]),
    ];
    let failed = failures(&cases);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failed.is_empty(),
        "a lean build must refuse every auth flag with exit 2 and a line naming the \
         missing `auth` feature:\n{}",
        failed.join("\n")
    );
}

#[test]
fn auth_flags_given_with_their_default_value_fail_too() {
    // Given on the command line is given, whatever the value.
    let cases: Vec<Case> = vec![
        (vec!["--jwt-leeway", "5s"], vec![]),
        (vec!["--auth-hook-timeout", "2s"], vec![]),
    ];
    let failed = failures(&cases);
    assert!(
        failed.is_empty(),
        "a lean build must refuse an auth flag even when its value is the default:\n{}",
        failed.join("\n")
    );
}
