//! The permessage-deflate offer parser (`proto::extensions::offers`, RFC
//! 7692 §5–7 on RFC 6455 §9.1's grammar).
//!
//! Input: `Sec-WebSocket-Extensions` field values, one per line.
//!
//! Asserts:
//! - an accepted offer's window is 8–15 bits or none, and the response line
//!   written for it is one header line that, read back as an offer, is the
//!   same agreement (every parameter of a response is also one of an offer);
//! - each field's offers are found again when the field is split at its
//!   commas outside quotes and the pieces are parsed one by one (an element
//!   never spills into the next);
//! - an offer is accepted only where a plain model of the grammar sees
//!   `permessage-deflate` as the element's name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::proto::extensions::{offers, Declined, Deflate};

/// The element's name as a model sees it: up to the first `;`, trimmed.
fn names_deflate(element: &[u8]) -> bool {
    let name = element.split(|&b| b == b';').next().unwrap_or_default();
    name.trim_ascii()
        .eq_ignore_ascii_case(b"permessage-deflate")
}

/// Splits at commas outside quoted strings (with `\` escapes inside them).
fn split(field: &[u8]) -> Vec<&[u8]> {
    let (mut out, mut start, mut quoted, mut i) = (Vec::new(), 0, false, 0);
    while i < field.len() {
        match field[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                out.push(&field[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&field[start.min(field.len())..]);
    out
}

fuzz_target!(|data: &[u8]| {
    for field in data.split(|&b| b == b'\n') {
        let all: Vec<Result<Deflate, Declined>> = offers(field).collect();
        let mut pieces = Vec::new();
        for element in split(field) {
            let found: Vec<_> = offers(element).collect();
            assert!(found.len() <= 1, "one element, one offer: {found:?}");
            if let Some(Ok(_)) = found.first() {
                assert!(
                    names_deflate(element),
                    "{:?}",
                    String::from_utf8_lossy(element)
                );
            }
            pieces.extend(found);
        }
        assert_eq!(all, pieces, "{:?}", String::from_utf8_lossy(field));
        for d in all.iter().flatten() {
            assert!(
                matches!(d.server_max_window_bits, None | Some(8..=15)),
                "{d:?}"
            );
            let mut line = Vec::new();
            d.write_response(&mut line);
            let value = line
                .strip_prefix(b"Sec-WebSocket-Extensions: ".as_slice())
                .and_then(|v| v.strip_suffix(b"\r\n".as_slice()))
                .expect("one header line");
            assert!(!value.contains(&b'\r') && !value.contains(&b'\n'));
            let again: Vec<_> = offers(value).collect();
            assert_eq!(again, vec![Ok(*d)], "{:?}", String::from_utf8_lossy(value));
        }
    }
});
