//! Turns criterion's output for `benches/codec.rs` (target/criterion) into a
//! markdown table: median time per operation and throughput, per payload size.
//!
//! usage: codec-table [CRITERION_DIR]   (default: target/criterion)

use std::fmt::Write as _;
use std::path::Path;

const GROUPS: &[(&str, &[&str])] = &[
    ("header_parse", &["wsgate", "tungstenite"]),
    (
        "unmask",
        &[
            "wsgate",
            "wsgate_bytewise",
            "tungstenite_fast32_copy",
            "tungstenite_format_masked",
            "memcpy",
        ],
    ),
    ("encode", &["wsgate", "tungstenite", "memcpy"]),
    (
        "utf8_mixed",
        &["wsgate", "tungstenite", "std_from_utf8", "memcpy"],
    ),
    (
        "utf8_ascii",
        &["wsgate", "tungstenite", "std_from_utf8", "memcpy"],
    ),
    (
        "decode_message",
        &["wsgate_receiver", "tungstenite_websocket_read", "memcpy"],
    ),
];
const SIZES: &[(&str, f64)] = &[
    ("20B", 20.0),
    ("1KiB", 1024.0),
    ("16KiB", 16384.0),
    ("1MiB", 1048576.0),
];

/// The median point estimate (ns) from an estimates.json, without a JSON library.
fn median_ns(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let at = text.find("\"median\":")?;
    let rest = &text[at..];
    let p = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    let num: String = rest[p..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || ".eE+-".contains(*c))
        .collect();
    num.parse().ok()
}

fn fmt_time(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/criterion".into());
    let dir = Path::new(&dir);
    let mut t = String::new();
    let _ = write!(t, "| group | implementation |");
    for (s, _) in SIZES {
        let _ = write!(t, " {s} |");
    }
    t.push_str("\n|---|---|");
    for _ in SIZES {
        t.push_str("---:|");
    }
    t.push('\n');
    let mut found = 0;
    for (group, fns) in GROUPS {
        for (i, f) in fns.iter().enumerate() {
            let g = if i == 0 {
                format!("**{group}**")
            } else {
                String::new()
            };
            let _ = write!(t, "| {g} | {f} |");
            for (s, bytes) in SIZES {
                match median_ns(&dir.join(group).join(f).join(s).join("new/estimates.json")) {
                    Some(ns) => {
                        found += 1;
                        if *group == "header_parse" {
                            let _ = write!(t, " {} |", fmt_time(ns));
                        } else {
                            let gib_s = bytes / ns * 1e9 / (1u64 << 30) as f64;
                            let _ = write!(t, " {} ({gib_s:.2} GiB/s) |", fmt_time(ns));
                        }
                    }
                    None => t.push_str(" — |"),
                }
            }
            t.push('\n');
        }
    }
    if found == 0 {
        eprintln!("no criterion results under {}", dir.display());
        std::process::exit(1);
    }
    print!("{t}");
}
