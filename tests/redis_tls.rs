//! `--redis rediss://…` (issue 18): TLS to a TLS-only redis-server (no
//! plain port) whose certificate a CA made by the test signed.
//!
//! * Two nodes, one trusting the CA file and checking the URL's address,
//!   one checking the name given by `--redis-tls-server-name` (both in the
//!   certificate), on both io drivers, with a password in the URL: they fan
//!   a topic out to each other and a session resumes across them; the
//!   password is never logged.
//! * A node trusting another CA is refused: `redis_down` names the unknown
//!   issuer and `wsgate_redis_up` stays 0.
//! * A node expecting another name is refused: `redis_down` says the
//!   certificate is not valid for that name.
//! * `--redis-tls-insecure` connects to the same server without any CA and
//!   says so loudly at start.

#![cfg(feature = "redis-tls")]

mod common;
mod edge;
mod gw;
mod redis;
mod redis_modes;

use common::Driver;
use redis::*;
use redis_modes::*;
use std::time::Duration;

const PASS: &str = "tls-test-pass";

#[test]
fn rediss_verifies_the_server_and_serves_two_nodes() {
    if redis_server_binary().is_none() {
        return;
    }
    let pki = Pki::new();
    let server = tls_redis(&pki, &["--requirepass", PASS]);
    let url = format!("rediss://:{PASS}@127.0.0.1:{}", server.port);
    let ca = pki.path("ca.pem");

    let a = start_node("tls-a", Driver::IoUring, &url, &["--redis-ca-file", &ca]);
    let b = start_node(
        "tls-b",
        Driver::Legacy,
        &url,
        &[
            "--redis-ca-file",
            &ca,
            "--redis-tls-server-name",
            "redis.test",
        ],
    );
    let other_ca = pki.path("other-ca.pem");
    let wrong_ca = start_node(
        "tls-wrong-ca",
        Driver::Legacy,
        &url,
        &["--redis-ca-file", &other_ca],
    );
    let wrong_name = start_node(
        "tls-wrong-name",
        Driver::IoUring,
        &url,
        &[
            "--redis-ca-file",
            &ca,
            "--redis-tls-server-name",
            "other.test",
        ],
    );
    let insecure = start_node(
        "tls-insecure",
        Driver::Legacy,
        &url,
        &["--redis-tls-insecure"],
    );

    wait_redis_up(&a, "tls-a", 1.0, Duration::from_secs(10));
    wait_redis_up(&b, "tls-b", 1.0, Duration::from_secs(10));
    resume_and_fanout(&a, &b, "tls");

    let l = wait_redis_down_saying(
        &wrong_ca,
        "tls-wrong-ca",
        "UnknownIssuer",
        Duration::from_secs(10),
    );
    assert!(l.contains("invalid peer certificate"), "{l}");
    let l = wait_redis_down_saying(
        &wrong_name,
        "tls-wrong-name",
        "not valid for name \\\"other.test\\\"",
        Duration::from_secs(10),
    );
    assert!(l.contains("invalid peer certificate"), "{l}");
    for (gw, n) in [(&wrong_ca, "tls-wrong-ca"), (&wrong_name, "tls-wrong-name")] {
        assert_eq!(redis_up(gw), Some(0.0), "{n} must not be up");
        assert!(log_events(gw, "redis_up").is_empty(), "{n} logged redis_up");
    }

    wait_redis_up(&insecure, "tls-insecure", 1.0, Duration::from_secs(10));
    let warned = log_events(&insecure, "redis_tls_insecure");
    assert_eq!(warned.len(), 1, "one warning at start: {warned:?}");
    assert!(warned[0].contains("level=warn"), "{}", warned[0]);
    assert!(log_events(&a, "redis_tls_insecure").is_empty());

    for (gw, n) in [
        (&a, "tls-a"),
        (&b, "tls-b"),
        (&wrong_ca, "tls-wrong-ca"),
        (&wrong_name, "tls-wrong-name"),
        (&insecure, "tls-insecure"),
    ] {
        for l in gw.logs() {
            assert!(!l.contains(PASS), "{n} logged the Redis password: {l}");
        }
        assert!(
            gw.logs()
                .iter()
                .any(|l| l.contains("rediss://:***@127.0.0.1")),
            "{n}: the URL is logged without its password"
        );
    }
    a.assert_healthy();
    b.assert_healthy();
}
