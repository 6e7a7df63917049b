//! A build without the `redis-tls` feature (`cargo test
//! --no-default-features`) keeps the lean gateway and says so when asked
//! for TLS to Redis: `rediss://` and every TLS flag fail at start with exit
//! code 2 and a line naming the missing `redis-tls` feature (issue 18),
//! never a plain-text connection to a server the operator meant to reach
//! over TLS. The URL's password is not in that line.

#![cfg(not(feature = "redis-tls"))]

mod common;

use std::time::Duration;

/// Flags, and environment variables.
type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);

#[test]
fn tls_to_redis_fails_at_start_without_the_feature() {
    let cases: Vec<Case> = vec![
        (
            vec!["--redis", "rediss://:lean-secret@127.0.0.1:6380"],
            vec![],
        ),
        (
            vec![
                "--redis",
                "redis://127.0.0.1:6379",
                "--redis-ca-file",
                "/nonexistent/ca.pem",
            ],
            vec![],
        ),
        (
            vec![
                "--redis",
                "redis://127.0.0.1:6379",
                "--redis-tls-server-name",
                "r.test",
            ],
            vec![],
        ),
        (
            vec!["--redis", "redis://127.0.0.1:6379", "--redis-tls-insecure"],
            vec![],
        ),
        (
            vec![],
            vec![("WSGATE_REDIS", "rediss://:lean-secret@127.0.0.1:6380")],
        ),
    ];
    let mut failed = Vec::new();
    for (flags, envs) in &cases {
        let mut args = vec!["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let (status, stderr) = common::run_to_exit(&args, envs, Duration::from_secs(10));
        let says_so = stderr
            .lines()
            .any(|l| l.contains("redis-tls") && l.contains("feature"));
        let code = status.and_then(|s| s.code());
        if code != Some(2) || !says_so || stderr.contains("lean-secret") {
            failed.push(format!(
                "{flags:?} {envs:?}: exit {code:?}, stderr:\n{stderr}"
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "a lean build must refuse TLS to Redis with exit 2 and a line naming the \
         missing `redis-tls` feature (and no password):\n{}",
        failed.join("\n")
    );
}
