//! The browser client's own unit tests (`client/test/*.test.js`: backoff,
//! dedupe, queueing, the state machine, token refresh, against a fake
//! WebSocket and clock), run with `node --test` so that README's test
//! command runs them too. Node is installed from Debian's `nodejs` package
//! if missing (`node --test` needs Node ≥ 18; the library itself targets
//! browsers and Node ≥ 22, the unit tests inject their own WebSocket).

mod common;
mod edge;

use std::path::Path;
use std::process::Command;

fn node_binary() -> String {
    let found = |name: &str| {
        Command::new(name)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(v) = found("node") {
        eprintln!("node {v}");
        return "node".into();
    }
    eprintln!("node not found: installing Debian's package `nodejs` with apt-get");
    edge::apt_install("nodejs").unwrap_or_else(|e| panic!("{e}"));
    let v = found("node").expect("node still not found after apt-get install nodejs");
    eprintln!("installed node {v}");
    "node".into()
}

#[test]
fn the_client_library_unit_tests_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("client");
    let mut files: Vec<String> = std::fs::read_dir(dir.join("test"))
        .expect("client/test")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".test.js"))
        .map(|n| format!("test/{n}"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "client unit test files: {files:?}");
    let out = Command::new(node_binary())
        .arg("--test")
        .args(&files)
        .current_dir(&dir)
        .output()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node --test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // The summary names how many ran: none skipped, none failed.
    let count = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# {key} ")))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no `# {key}` line in node's summary:\n{stdout}"))
    };
    assert!(count("pass") >= 50, "too few client tests ran:\n{stdout}");
    assert_eq!(count("fail"), 0);
    eprintln!("client unit tests: {} passed", count("pass"));
}
