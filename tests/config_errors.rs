//! Bad configuration fails at start: exit code 2, one line `wsgate: error: …`
//! on stderr, no panic. Environment variables work like flags.

mod common;
use common::*;
use std::net::TcpListener;
use std::time::Duration;

const EXIT_WITHIN: Duration = Duration::from_secs(10);
const LOOPBACK: [&str; 4] = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];

/// Run with `args` (and `envs`) and require a clean configuration error.
/// Returns the error line.
fn expect_config_error(what: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let (status, stderr) = run_to_exit(args, envs, EXIT_WITHIN);
    let status = status.unwrap_or_else(|| {
        panic!("{what}: wsgate {args:?} still running after {EXIT_WITHIN:?}; stderr:\n{stderr}")
    });
    assert!(
        !stderr.contains("panicked"),
        "{what}: wsgate {args:?} panicked:\n{stderr}"
    );
    assert_eq!(
        status.code(),
        Some(2),
        "{what}: wsgate {args:?} exit status {status}, expected code 2; stderr:\n{stderr}"
    );
    let body = stderr.strip_suffix('\n').unwrap_or(&stderr);
    let lines: Vec<&str> = body.split('\n').collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("wsgate: error:") && lines[0].len() > 15,
        "{what}: wsgate {args:?}: expected exactly one line `wsgate: error: …` on stderr, got:\n{stderr}"
    );
    eprintln!("{what}: {}", lines[0]);
    lines[0].to_string()
}

fn with_loopback<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = LOOPBACK.to_vec();
    v.extend_from_slice(extra);
    v
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    let cases: [(&str, &[&str]); 13] = [
        ("unknown flag", &["--no-such-flag"]),
        ("unparsable duration", &["--drain-timeout", "ten"]),
        ("fractional size", &["--max-message-size", "1.5MiB"]),
        ("zero cores", &["--cores", "0"]),
        ("too many cores", &["--cores", "999"]),
        (
            "pong timeout not shorter than ping interval",
            &["--ping-interval", "5s", "--pong-timeout", "5s"],
        ),
        ("invalid cookie name", &["--cookie-name", "a b"]),
        ("echo path collides with ws path", &["--echo-path", "/ws"]),
        (
            "redis CA file that is not there",
            &[
                "--redis",
                "rediss://:hunter2@127.0.0.1:6379",
                "--redis-ca-file",
                "/nonexistent/ca.pem",
            ],
        ),
        (
            "redis TLS flag without rediss",
            &[
                "--redis",
                "redis://127.0.0.1:6379",
                "--redis-tls-server-name",
                "r.test",
            ],
        ),
        (
            "redis URL with a bad port",
            &["--redis", "redis://127.0.0.1:99999"],
        ),
        ("redis timeout out of range", &["--redis-timeout", "1ms"]),
        (
            "redis URL with a bad database",
            &["--redis", "redis://:hunter2@h:1/x"],
        ),
    ];
    for (what, extra) in cases {
        let line = expect_config_error(what, &with_loopback(extra), &[]);
        assert!(
            !line.contains("hunter2"),
            "{what}: the password leaked: {line}"
        );
    }
}

#[test]
fn ports_in_use_exit_2_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port to hold");
    let port = taken.local_addr().unwrap().to_string();
    let line = expect_config_error(
        "--listen on a taken port",
        &["--listen", &port, "--admin-listen", "127.0.0.1:0"],
        &[],
    );
    assert!(
        line.contains("--listen"),
        "the error should name the flag: {line}"
    );
    let line = expect_config_error(
        "--admin-listen on a taken port",
        &["--listen", "127.0.0.1:0", "--admin-listen", &port],
        &[],
    );
    assert!(
        line.contains("--admin-listen"),
        "the error should name the flag: {line}"
    );
    drop(taken);
}

#[test]
fn bad_environment_value_exits_2() {
    expect_config_error(
        "WSGATE_DRAIN_TIMEOUT=ten",
        &LOOPBACK,
        &[("WSGATE_DRAIN_TIMEOUT", "ten")],
    );
}

#[test]
fn environment_variable_sets_the_echo_path() {
    let gw = Gateway::start_exact(
        Driver::IoUring,
        &with_loopback(&["--cores", "2"]),
        &[("WSGATE_ECHO_PATH", "/e")],
    );
    let mut c = gw.upgrade("/e");
    c.send_frame(true, OP_TEXT, b"via env");
    c.expect_frame(
        OP_TEXT,
        b"via env",
        "echo on the path set by WSGATE_ECHO_PATH",
    );
    c.send_frame(true, OP_CLOSE, &close_payload(1000, ""));
    c.expect_close_frame(1000, "close on /e");
    c.expect_closed(false, "after the close handshake on /e");
    gw.assert_healthy();
}

#[test]
fn bare_start_serves_health() {
    let gw = Gateway::start_exact(Driver::IoUring, &LOOPBACK, &[]);
    gw.assert_healthy();
}

#[test]
fn events_hook_flags_are_checked() {
    let cases: [(&str, &[&str], &str); 5] = [
        (
            "retry without a hook",
            &["--events-retry", "5s"],
            "--events-retry",
        ),
        (
            "queue without a hook",
            &["--events-queue", "5"],
            "--events-queue",
        ),
        (
            "a hook that is not http",
            &["--events-hook", "https://127.0.0.1:9/ev"],
            "--events-hook",
        ),
        (
            "an empty queue",
            &[
                "--events-hook",
                "http://127.0.0.1:9/ev",
                "--events-queue",
                "0",
            ],
            "--events-queue",
        ),
        (
            "an unparsable retry",
            &[
                "--events-hook",
                "http://127.0.0.1:9/ev",
                "--events-retry",
                "soon",
            ],
            "--events-retry",
        ),
    ];
    for (what, flags, names) in cases {
        let line = expect_config_error(what, &with_loopback(flags), &[]);
        if cfg!(feature = "backend") || what == "an unparsable retry" {
            assert!(line.contains(names), "{what}: {line}");
        } else {
            // The lean build names the first flag it lacks.
            assert!(line.contains("`backend` feature"), "{what}: {line}");
        }
    }
}
