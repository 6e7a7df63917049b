//! Autobahn|Testsuite conformance: runs `tests/autobahn/run.sh`, which builds
//! the release gateway, fuzzes its /echo endpoint with wstest under both the
//! io_uring and epoll drivers, and compares the verdicts against
//! `tests/autobahn/expected.txt`. See tests/autobahn/README.md.
//!
//! Set `WSGATE_SKIP_AUTOBAHN=1` to skip it during quick local iterations.

use std::path::Path;
use std::process::Command;

#[test]
fn autobahn_conformance() {
    if std::env::var_os("WSGATE_SKIP_AUTOBAHN").is_some_and(|v| v == "1") {
        println!("autobahn: skipped (WSGATE_SKIP_AUTOBAHN=1)");
        return;
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests").join("autobahn").join("run.sh");
    // Output is captured and shown only on failure (or with --nocapture):
    // the run takes minutes and prints per-driver results.
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash {}: {e}", script.display()));

    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        println!("----- run.sh stdout -----\n{stdout}");
        println!("----- run.sh stderr -----\n{stderr}");
        panic!("tests/autobahn/run.sh failed: {}", out.status);
    }
    // The script's last line is the verdict, e.g.
    // "autobahn: io_uring OK (517 cases), epoll OK (517 cases)".
    println!("{stdout}");
}
