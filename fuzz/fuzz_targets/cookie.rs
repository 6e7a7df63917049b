//! Finding the session cookie (`proto::cookie::find_session`) and the session
//! id format (`SessionId::parse`).
//!
//! Input: `Cookie` header values, one per line (`\n`-separated); the whole
//! input is also parsed as a bare id.
//!
//! Asserts:
//! - `find_session` equals a plain reference implementation (RFC 6265 pairs,
//!   optional quotes) whose id check is the `uuid` crate: hyphenated, version 4,
//!   RFC 4122 variant; the same for `SessionId::parse` on the raw input;
//! - ids round-trip through their text, owners are in range, and the
//!   `Set-Cookie` value written for an id is found again in a `Cookie` header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::proto::cookie::{find_session, CookieSpec, SessionId};

const NAMES: [&str; 2] = ["WS_SESSION_ID", "s"];

/// The id as canonical lowercase text, per the `uuid` crate.
fn reference_id(value: &[u8]) -> Option<[u8; 36]> {
    if value.len() != 36 {
        return None; // 36 bytes is the hyphenated form only
    }
    let id = uuid::Uuid::try_parse_ascii(value).ok()?;
    if id.get_version_num() != 4 || id.get_variant() != uuid::Variant::RFC4122 {
        return None;
    }
    let mut text = [0u8; 36];
    id.hyphenated().encode_lower(&mut text);
    Some(text)
}

fn reference_find(headers: &[&[u8]], name: &str) -> Option<[u8; 36]> {
    for header in headers {
        for pair in header.split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if &pair[..eq] != name.as_bytes() {
                continue;
            }
            let mut value = pair[eq + 1..].trim_ascii();
            if let Some(inner) = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
            {
                value = inner;
            }
            if let Some(id) = reference_id(value) {
                return Some(id);
            }
        }
    }
    None
}

fn check_id(id: SessionId) {
    let text = id.to_text();
    assert_eq!(SessionId::parse(&text), Some(id));
    assert_eq!(reference_id(&text), Some(text));
    for cores in 1..=5 {
        assert!(id.owner(cores) < cores);
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed = SessionId::parse(data);
    assert_eq!(parsed.map(|id| id.to_text()), reference_id(data));
    if let Some(id) = parsed {
        check_id(id);
    }
    let headers: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    for name in NAMES {
        let found = find_session(headers.iter().copied(), name);
        assert_eq!(found.map(|id| id.to_text()), reference_find(&headers, name));
        if let Some(id) = found {
            check_id(id);
            // What the 101 sets, the next request's Cookie header finds.
            let mut line = Vec::new();
            CookieSpec::new(name, 60, true).write(&mut line, id);
            let set = line.strip_prefix(b"Set-Cookie: ".as_slice()).unwrap();
            let pair = &set[..set.iter().position(|&b| b == b';').unwrap()];
            let header = [b"junk=1; ".as_slice(), pair].concat();
            assert_eq!(find_session([&header[..]], name), Some(id));
        }
    }
});
