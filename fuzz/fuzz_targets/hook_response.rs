//! The auth hook's response parser (`auth::parse_response`,
//! `parse_response_at_eof`) and the verdict on a complete answer
//! (`auth::verdict`).
//!
//! Input: `[split seed][stream]`: the seed chooses read sizes as in `resp`;
//! the stream is what the backend would send.
//!
//! Asserts:
//! - fed as it arrives (re-parsing the growing buffer, as
//!   `net/hook_client.rs` does), the first decision (a response or an error)
//!   is the decision on the whole stream;
//! - a response uses no more than it was given, parses the same from exactly
//!   its own bytes, and one byte less still needs more; its status is at
//!   least 200 and its body at most 64 KiB;
//! - at end of stream a decision stands; an undecided stream is either
//!   complete with every byte (and not reusable) or truncated;
//! - verdicts (on the response, and on the raw stream as a 200 body): a grant
//!   comes from a 200 and names the `user` a JSON parser finds, with a valid
//!   id; a refusal is the 401/403 it was given; every other status fails.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::auth::{
    is_valid_user, parse_response, parse_response_at_eof, verdict, HookError, HookResponse,
    HookVerdict,
};

type Decision<'a> = Result<Option<HookResponse<'a>>, HookError>;

fn check_verdict(status: u16, body: &[u8]) {
    match verdict(status, body) {
        HookVerdict::Grant {
            user,
            grants,
            expires_in,
        } => {
            assert_eq!(status, 200);
            assert!(is_valid_user(user.as_bytes()));
            assert!(grants.is_none_or(|g| !g.is_empty()));
            let json: serde_json::Value = serde_json::from_slice(body).expect("a grant is JSON");
            assert_eq!(json["user"].as_str(), Some(&*user));
            assert_eq!(json["expires_in"].as_u64(), expires_in);
        }
        HookVerdict::Refuse(s) => assert!(s == status && (s == 401 || s == 403)),
        HookVerdict::Fail(reason) => assert!(!matches!(status, 401 | 403) && !reason.is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    let [seed, stream @ ..] = data else { return };
    let whole: Decision = parse_response(stream);

    // As it arrives: at most ~256 reads, each re-parsing the whole buffer.
    let bound = 1usize << (seed & 0x0F).min(12);
    let least = stream.len() / 256;
    let mut x = (*seed as u64) << 32 | stream.len() as u64 | 1;
    let mut have = 0;
    while have < stream.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        have = (have + least + 1 + x as usize % bound).min(stream.len());
        let now = parse_response(&stream[..have]);
        if !matches!(now, Ok(None)) {
            assert_eq!(now, whole, "decided at {have}");
            break;
        }
    }

    let at_eof = parse_response_at_eof(stream);
    match &whole {
        Ok(Some(r)) => {
            assert!(r.consumed <= stream.len() && r.body.len() <= 64 * 1024);
            assert!(r.status >= 200, "{}", r.status);
            let own = &stream[..r.consumed];
            assert_eq!(parse_response(own).as_ref(), Ok(&Some(r.clone())));
            assert_eq!(parse_response(&own[..r.consumed - 1]), Ok(None));
            assert_eq!(at_eof.as_ref(), Ok(r));
            check_verdict(r.status, &r.body);
        }
        Err(e) => assert_eq!(at_eof.as_ref(), Err(e)),
        Ok(None) => match at_eof {
            Ok(r) => {
                assert!(r.consumed == stream.len() && !r.keep_alive && r.status >= 200);
                assert!(r.body.len() <= 64 * 1024);
                check_verdict(r.status, &r.body);
            }
            Err(e) => assert_eq!(e, HookError::Truncated),
        },
    }

    // The JSON rules on their own, without the HTTP around them.
    check_verdict(200, stream);
});
