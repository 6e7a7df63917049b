//! The events hook's messages (`--events-hook URL`, DESIGN §12), sans-IO.
//!
//! The gateway POSTs a JSON array of events (at most [`MAX_BATCH`] per
//! request, in the order they happened on the core):
//!
//! ```json
//! [{"type":"connect","session":"…","peer":"…","user":null,"node":"n1","resumed":false},
//!  {"type":"send","session":"…","peer":"…","user":"42","node":"n1","data":"hi"},
//!  {"type":"send",…,"binary":true,"data":"AAEC"},
//!  {"type":"disconnect",…,"code":1001,"reason":"going_away","ended":false}]
//! ```
//!
//! (`data` of a binary `send` is base64.) A `200` answer is a JSON array
//! with one element per event, in order; for a `send` it is the reply to
//! the client: `{"reply":"text"}`, `{"reply_base64":"…"}` (a binary reply),
//! or `{"status":N}` (the client gets `err N send failed`); for the other
//! events it is ignored (`null` will do). See [`parse_replies`].
//!
//! Events carry the session id (the backend addresses a session with it,
//! `POST /send/session/<id>`): they go to the backend only, never to a log.

use std::sync::Arc;

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use crate::proto::cookie::SessionId;
use crate::proto::peer::PeerId;

/// Events per request at most.
pub const MAX_BATCH: usize = 100;

/// One event for the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub session: SessionId,
    pub peer: PeerId,
    pub user: Option<Arc<str>>,
    pub what: What,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// A connection said `hello` (`resumed`: its session was kept).
    Connect { resumed: bool },
    /// A connection ended with `code` (`reason`: a fixed word); `ended`:
    /// its session is gone too (no resume possible).
    Disconnect {
        code: u16,
        reason: &'static str,
        ended: bool,
    },
    /// A client's `send <payload>`; the reply goes to connection `conn` of
    /// this core.
    Send {
        conn: u64,
        payload: Vec<u8>,
        binary: bool,
    },
}

impl Event {
    /// The `type` field.
    pub fn kind(&self) -> Kind {
        match self.what {
            What::Connect { .. } => Kind::Connect,
            What::Disconnect { .. } => Kind::Disconnect,
            What::Send { .. } => Kind::Send,
        }
    }
}

/// The three kinds, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect = 0,
    Disconnect = 1,
    Send = 2,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Connect, Kind::Disconnect, Kind::Send];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Disconnect => "disconnect",
            Kind::Send => "send",
        }
    }
}

#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    session: String,
    peer: String,
    user: Option<&'a str>,
    node: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    binary: Option<bool>,
}

/// The JSON body of one request: `events` as an array.
pub fn encode_batch<'a>(node: &str, events: impl Iterator<Item = &'a Event>) -> Vec<u8> {
    let wire: Vec<Wire<'_>> = events
        .map(|e| {
            let mut w = Wire {
                kind: e.kind().label(),
                session: e.session.to_string(),
                peer: e.peer.to_string(),
                user: e.user.as_deref(),
                node,
                resumed: None,
                code: None,
                reason: None,
                ended: None,
                data: None,
                binary: None,
            };
            match &e.what {
                What::Connect { resumed } => w.resumed = Some(*resumed),
                What::Disconnect {
                    code,
                    reason,
                    ended,
                } => {
                    w.code = Some(*code);
                    w.reason = Some(reason);
                    w.ended = Some(*ended);
                }
                What::Send {
                    payload, binary, ..
                } => {
                    if *binary {
                        w.data = Some(base64::engine::general_purpose::STANDARD.encode(payload));
                        w.binary = Some(true);
                    } else {
                        w.data = Some(String::from_utf8_lossy(payload).into_owned());
                    }
                }
            }
            w
        })
        .collect();
    // Strings, numbers and bools into a Vec: cannot fail.
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// What the backend answered for one `send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `reply <text>`.
    Text(String),
    /// A binary `reply\n<bytes>`.
    Binary(Vec<u8>),
    /// `err <status> send failed`.
    Status(u16),
    /// No usable answer for it (`err 502 send failed`).
    Missing,
}

/// The per-event answers of a `200` body for `n` events: element `i` of
/// the array answers event `i`; anything that is not such an element (a
/// body that is not a JSON array, a short array, an element of another
/// shape) is [`Reply::Missing`].
pub fn parse_replies(body: &[u8], n: usize) -> Vec<Reply> {
    let items = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    let mut out: Vec<Reply> = items.iter().take(n).map(reply_of).collect();
    out.resize(n, Reply::Missing);
    out
}

fn reply_of(v: &Value) -> Reply {
    let Some(o) = v.as_object() else {
        return Reply::Missing;
    };
    if let Some(text) = o.get("reply").and_then(Value::as_str) {
        return Reply::Text(text.to_string());
    }
    if let Some(b64) = o.get("reply_base64").and_then(Value::as_str) {
        return match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(bytes) => Reply::Binary(bytes),
            Err(_) => Reply::Missing,
        };
    }
    match o.get("status").and_then(Value::as_u64) {
        Some(s @ 100..=599) => Reply::Status(s as u16),
        _ => Reply::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(what: What) -> Event {
        Event {
            session: SessionId::parse(b"6f1c2d3e-4b5a-4c6d-8e7f-8091a2b3c4d5").unwrap(),
            peer: PeerId::random(),
            user: Some("42".into()),
            what,
        }
    }

    #[test]
    fn a_batch_is_a_json_array_of_the_documented_shapes() {
        let events = [
            ev(What::Connect { resumed: true }),
            ev(What::Send {
                conn: 9,
                payload: b"hi \"there\"".to_vec(),
                binary: false,
            }),
            ev(What::Send {
                conn: 9,
                payload: vec![0, 1, 2],
                binary: true,
            }),
            ev(What::Disconnect {
                code: 1001,
                reason: "going_away",
                ended: false,
            }),
        ];
        let body = encode_batch("n1", events.iter());
        let v: Value = serde_json::from_slice(&body).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a[0]["type"], "connect");
        assert_eq!(a[0]["session"], "6f1c2d3e-4b5a-4c6d-8e7f-8091a2b3c4d5");
        assert_eq!(a[0]["user"], "42");
        assert_eq!(a[0]["node"], "n1");
        assert_eq!(a[0]["resumed"], true);
        assert_eq!(a[0]["peer"].as_str().unwrap().len(), 16);
        assert_eq!(a[1]["type"], "send");
        assert_eq!(a[1]["data"], "hi \"there\"");
        assert!(a[1].get("binary").is_none());
        assert_eq!(a[2]["data"], "AAEC");
        assert_eq!(a[2]["binary"], true);
        assert_eq!(a[3]["type"], "disconnect");
        assert_eq!(a[3]["code"], 1001);
        assert_eq!(a[3]["reason"], "going_away");
        assert_eq!(a[3]["ended"], false);
        assert!(a[3].get("data").is_none());
    }

    #[test]
    fn replies_line_up_with_the_events() {
        let body =
            br#"[null, {"reply":"pong"}, {"reply_base64":"AAE="}, {"status":429}, {"x":1}, 5]"#;
        assert_eq!(
            parse_replies(body, 7),
            [
                Reply::Missing,
                Reply::Text("pong".into()),
                Reply::Binary(vec![0, 1]),
                Reply::Status(429),
                Reply::Missing,
                Reply::Missing,
                Reply::Missing,
            ]
        );
        assert_eq!(
            parse_replies(b"not json", 2),
            [Reply::Missing, Reply::Missing]
        );
        assert_eq!(parse_replies(br#"{"reply":"x"}"#, 1), [Reply::Missing]);
        assert_eq!(
            parse_replies(br#"[{"reply_base64":"!!"}]"#, 1),
            [Reply::Missing]
        );
        assert_eq!(parse_replies(br#"[{"status":42}]"#, 1), [Reply::Missing]);
        assert_eq!(parse_replies(b"[]", 0), []);
    }
}
