//! A build without the `compression` feature (`cargo test
//! --no-default-features`) is the lean gateway: asked for permessage-deflate
//! (`--compression on`, `--compression-min-size`, or their environment
//! variables) it fails at start with exit code 2 and a line saying the build
//! lacks the feature (issue 16); `--compression off` is what it does anyway,
//! and a client's offer is answered without the extension.

#![cfg(not(feature = "compression"))]

mod common;

use std::time::Duration;

use common::*;

/// Flags, and environment variables.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

#[test]
fn compression_flags_fail_at_start_without_the_feature() {
    let cases: [Case; 4] = [
        (&["--compression", "on"], &[]),
        (&["--compression-min-size", "1KiB"], &[]),
        (&[], &[("WSGATE_COMPRESSION", "on")]),
        (&[], &[("WSGATE_COMPRESSION_MIN_SIZE", "256B")]),
    ];
    let mut failed = Vec::new();
    for (flags, envs) in cases {
        let mut args = vec!["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let (status, stderr) = run_to_exit(&args, envs, Duration::from_secs(10));
        let says_so = stderr.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("compression") && l.contains("feature")
        });
        if status.and_then(|s| s.code()) != Some(2) || !says_so || stderr.contains("panicked") {
            failed.push(format!(
                "{flags:?} {envs:?}: exit {status:?}, stderr:\n{stderr}"
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "a lean build must refuse to be asked for compression:\n{}",
        failed.join("\n")
    );
}

#[test]
fn offers_are_declined_and_rsv1_stays_reserved() {
    let gw = Gateway::start(
        Driver::IoUring,
        &["--echo-path", "/echo", "--compression", "off"],
    );
    let req = Req::upgrade("/echo").header(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits",
    );
    let (_, mut c) = gw.upgrade_req(&req); // the contract's exact 101: no extension line
    c.send_frame(true, OP_TEXT, b"plain");
    c.expect_frame(OP_TEXT, b"plain", "echo");
    // RFC 7692 §7.2.3.1's compressed "Hello", which nothing agreed to.
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    c.send(&encode_frame(
        true,
        0b100,
        OP_TEXT,
        &hello,
        Some(rand_mask()),
    ));
    c.expect_fail(1002, "RSV1 in a lean build");
}
