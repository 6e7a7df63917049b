//! The events hook's answer parser (`backend::parse_replies`): a `200` body
//! from the application's backend, for a batch of events.
//!
//! Input: `[n][body]`: `n` (0..=255) events were sent, `body` is the answer.
//!
//! Asserts:
//! - there is exactly one reply per event, whatever the body;
//! - a reply other than `Missing` comes from a body that is a JSON array
//!   (a JSON parser agrees), at the same index; a `Status` is an HTTP status
//!   (100..=599); a text reply is the element's `reply` string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wsgate::backend::{parse_replies, Reply};

fuzz_target!(|data: &[u8]| {
    let Some((&n, body)) = data.split_first() else {
        return;
    };
    let n = usize::from(n);
    let replies = parse_replies(body, n);
    assert_eq!(replies.len(), n);
    let parsed: Option<Vec<Value>> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => Some(items),
        _ => None,
    };
    for (i, r) in replies.iter().enumerate() {
        if *r == Reply::Missing {
            continue;
        }
        let items = parsed.as_ref().expect("a reply from a body that is no JSON array");
        let item = items.get(i).expect("a reply past the array's end");
        match r {
            Reply::Text(t) => assert_eq!(item["reply"].as_str(), Some(t.as_str())),
            Reply::Binary(_) => assert!(item["reply_base64"].is_string()),
            Reply::Status(s) => assert!((100..=599).contains(s)),
            Reply::Missing => unreachable!(),
        }
    }
});
