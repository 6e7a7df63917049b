//! The gateway protocol on `--ws-path` (DESIGN §6): client commands in,
//! server lines out. Text frames carry `cmd topic [payload]`; binary frames
//! carry the same header line, then `\n`, then raw payload bytes.

use std::io::Write;

use crate::proto::peer::Member;

/// The longest topic name.
pub const MAX_TOPIC_LEN: usize = 128;

/// A client command, borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `sub <topic>`
    Sub(&'a str),
    /// `unsub <topic>`
    Unsub(&'a str),
    /// `pub <topic> <payload>`
    Pub {
        /// The topic.
        topic: &'a str,
        /// The payload: the rest of a text frame, or the bytes after `\n` of a binary one.
        payload: &'a [u8],
    },
    /// `who <topic>`
    Who(&'a str),
    /// `auth <jwt>`: a fresh token for the open connection (DESIGN §11).
    /// The token is a credential: it never goes into a log line or an answer.
    Auth(&'a [u8]),
    /// `send <payload>` (or a binary `send\n<bytes>`): a message for the
    /// application's backend (DESIGN §12), answered with `reply`.
    Send(&'a [u8]),
}

impl Command<'_> {
    /// The command's name, as in `ok <command> ...` and `err 403 <command> ...`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Sub(_) => "sub",
            Command::Unsub(_) => "unsub",
            Command::Pub { .. } => "pub",
            Command::Who(_) => "who",
            Command::Auth(_) => "auth",
            Command::Send(_) => "send",
        }
    }
}

/// A command the gateway cannot act on; answered with `err <code> <text>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// Not one of `sub`, `unsub`, `pub`, `who`.
    UnknownCommand,
    /// The command needs a topic.
    MissingTopic,
    /// A topic must be 1–128 bytes of `[A-Za-z0-9._:-]`.
    InvalidTopic,
    /// `sub`, `unsub` and `who` take nothing after the topic.
    TrailingData,
    /// A binary frame without the `\n` that ends its header line.
    MissingHeaderLine,
    /// `auth` without a token (or with more than one word).
    MissingToken,
    /// `auth` while authentication is off.
    AuthOff,
    /// `auth` while only the auth hook decides (no token key to check with).
    NoTokenCheck,
}

impl CommandError {
    /// The numeric code of the `err` line.
    pub fn code(self) -> u16 {
        match self {
            CommandError::InvalidTopic => 422,
            CommandError::NoTokenCheck => 401,
            _ => 400,
        }
    }

    /// The text of the `err` line.
    pub fn text(self) -> &'static str {
        match self {
            CommandError::UnknownCommand => "unknown command",
            CommandError::MissingTopic => "missing topic",
            CommandError::InvalidTopic => "invalid topic",
            CommandError::TrailingData => "unexpected data after topic",
            CommandError::MissingHeaderLine => "binary frame needs a header line ending in \\n",
            CommandError::MissingToken => "auth needs one token",
            CommandError::AuthOff => "auth is off",
            CommandError::NoTokenCheck => "auth invalid (no token key configured)",
        }
    }
}

/// Whether `topic` is 1–128 bytes of `[A-Za-z0-9._:-]`.
pub fn is_valid_topic(topic: &[u8]) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Parses one frame's command. Text frames are valid UTF-8 already.
pub fn parse(frame: &[u8], binary: bool) -> Result<Command<'_>, CommandError> {
    let (line, body) = if binary {
        let nl = frame
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(CommandError::MissingHeaderLine)?;
        (&frame[..nl], Some(&frame[nl + 1..]))
    } else {
        (frame, None)
    };
    let (name, rest) = split_word(line);
    if name == b"send" {
        // `send <payload>` / `send\n<bytes>`: everything after is the payload.
        return match (rest, body) {
            (None, Some(body)) => Ok(Command::Send(body)),
            (Some(payload), None) => Ok(Command::Send(payload)),
            (None, None) => Ok(Command::Send(&[])),
            (Some(_), Some(_)) => Err(CommandError::TrailingData),
        };
    }
    if name == b"auth" {
        // `auth <jwt>`: one word, in a text frame.
        return match (rest, body) {
            (Some(token), None) if !token.is_empty() && !token.contains(&b' ') => {
                Ok(Command::Auth(token))
            }
            _ => Err(CommandError::MissingToken),
        };
    }
    let (topic, rest) = split_word(rest.unwrap_or(&[]));
    let verb = match name {
        b"sub" | b"unsub" | b"pub" | b"who" => name,
        _ => return Err(CommandError::UnknownCommand),
    };
    if topic.is_empty() {
        return Err(CommandError::MissingTopic);
    }
    if !is_valid_topic(topic) {
        return Err(CommandError::InvalidTopic);
    }
    // Valid topics are ASCII, so this cannot fail.
    let topic = std::str::from_utf8(topic).map_err(|_| CommandError::InvalidTopic)?;
    if verb == b"pub" {
        let payload = match body {
            Some(body) => {
                if rest.is_some_and(|r| !r.is_empty()) {
                    return Err(CommandError::TrailingData);
                }
                body
            }
            None => rest.unwrap_or(&[]),
        };
        return Ok(Command::Pub { topic, payload });
    }
    if rest.is_some_and(|r| !r.is_empty()) || body.is_some_and(|b| !b.is_empty()) {
        return Err(CommandError::TrailingData);
    }
    Ok(match verb {
        b"sub" => Command::Sub(topic),
        b"unsub" => Command::Unsub(topic),
        _ => Command::Who(topic),
    })
}

/// Splits at the first space: the word, and what follows the space (if any).
fn split_word(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// Appends `hello <peer> new|resumed <node>[ <user>]`.
pub fn write_hello(out: &mut Vec<u8>, peer: &str, resumed: bool, node: &str, user: Option<&str>) {
    let state = if resumed { "resumed" } else { "new" };
    let _ = write!(out, "hello {peer} {state} {node}");
    if let Some(user) = user {
        let _ = write!(out, " {user}");
    }
}

/// Appends `ok auth <exp>`: a refreshed token is in force until `exp`.
pub fn write_ok_auth(out: &mut Vec<u8>, exp: u64) {
    let _ = write!(out, "ok auth {exp}");
}

/// Appends `err 401 auth invalid`: the refresh was refused, the old token
/// stays in force.
pub fn write_auth_invalid(out: &mut Vec<u8>) {
    out.extend_from_slice(b"err 401 auth invalid");
}

/// Appends `err 403 <command> <topic> forbidden`.
pub fn write_forbidden(out: &mut Vec<u8>, command: &str, topic: &str) {
    let _ = write!(out, "err 403 {command} {topic} forbidden");
}

/// Appends `err 403 sub <topic> revoked`: a refreshed token no longer
/// allows a subscription, which is dropped.
pub fn write_revoked(out: &mut Vec<u8>, topic: &str) {
    let _ = write!(out, "err 403 sub {topic} revoked");
}

/// Appends a delivered message: `msg <topic> <seq> <payload>` for text, or the
/// same header line, `\n` and the raw bytes for binary.
pub fn write_msg(out: &mut Vec<u8>, topic: &str, seq: u64, payload: &[u8], binary: bool) {
    let _ = write!(out, "msg {topic} {seq}");
    out.push(if binary { b'\n' } else { b' ' });
    out.extend_from_slice(payload);
}

/// Appends `ok <command> <topic> [<seq>]`.
pub fn write_ok(out: &mut Vec<u8>, command: &str, topic: &str, seq: Option<u64>) {
    let _ = write!(out, "ok {command} {topic}");
    if let Some(seq) = seq {
        let _ = write!(out, " {seq}");
    }
}

/// Appends `join <topic> <peer>[ <user>]` or `leave <topic> <peer>[ <user>]`.
pub fn write_presence(out: &mut Vec<u8>, joined: bool, topic: &str, member: &Member) {
    let verb = if joined { "join" } else { "leave" };
    let _ = write!(out, "{verb} {topic} {}", member.peer);
    if let Some(user) = &member.user {
        let _ = write!(out, " {user}");
    }
}

/// Appends `members <topic> <n> <peer>[:<user>]...`; `members` may be
/// empty while `count` is not (above the presence cap: the count only).
pub fn write_members<'a>(
    out: &mut Vec<u8>,
    topic: &str,
    count: usize,
    members: impl Iterator<Item = &'a Member>,
) {
    let _ = write!(out, "members {topic} {count}");
    for m in members {
        out.push(b' ');
        m.write_text(out);
    }
}

/// Appends `gap <topic> <from> <to>`.
pub fn write_gap(out: &mut Vec<u8>, topic: &str, from: u64, to: u64) {
    let _ = write!(out, "gap {topic} {from} {to}");
}

/// Appends `err <code> <text>`.
pub fn write_err(out: &mut Vec<u8>, err: CommandError) {
    let _ = write!(out, "err {} {}", err.code(), err.text());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::peer::PeerId;

    #[test]
    fn parses_send() {
        assert_eq!(
            parse(b"send hello there", false),
            Ok(Command::Send(b"hello there"))
        );
        assert_eq!(parse(b"send", false), Ok(Command::Send(b"")));
        assert_eq!(
            parse(b"send\n\x00\x01", true),
            Ok(Command::Send(b"\x00\x01"))
        );
        assert_eq!(
            parse(b"send x\n\x00", true),
            Err(CommandError::TrailingData)
        );
        assert_eq!(parse(b"sendx", false), Err(CommandError::UnknownCommand));
    }

    #[test]
    fn parses_text_commands() {
        assert_eq!(parse(b"sub chat.1", false), Ok(Command::Sub("chat.1")));
        assert_eq!(
            parse(b"unsub a:b-c_d", false),
            Ok(Command::Unsub("a:b-c_d"))
        );
        assert_eq!(parse(b"who room", false), Ok(Command::Who("room")));
        assert_eq!(
            parse(b"pub room hello  world ", false),
            Ok(Command::Pub {
                topic: "room",
                payload: b"hello  world "
            })
        );
        assert_eq!(
            parse(b"pub room", false),
            Ok(Command::Pub {
                topic: "room",
                payload: b""
            })
        );
    }

    #[test]
    fn parses_binary_commands() {
        assert_eq!(
            parse(b"pub room\n\x00\xff\nx", true),
            Ok(Command::Pub {
                topic: "room",
                payload: b"\x00\xff\nx"
            })
        );
        assert_eq!(parse(b"sub room\n", true), Ok(Command::Sub("room")));
        assert_eq!(
            parse(b"pub room", true),
            Err(CommandError::MissingHeaderLine)
        );
    }

    #[test]
    fn parses_auth() {
        assert_eq!(parse(b"auth a.b.c", false), Ok(Command::Auth(b"a.b.c")));
        for bad in [&b"auth"[..], b"auth ", b"auth a b"] {
            assert_eq!(parse(bad, false), Err(CommandError::MissingToken));
        }
        assert_eq!(
            parse(b"auth a.b.c\n", true),
            Err(CommandError::MissingToken)
        );
    }

    #[test]
    fn rejects_bad_commands() {
        let cases: [(&[u8], CommandError); 8] = [
            (b"", CommandError::UnknownCommand),
            (b"SUB room", CommandError::UnknownCommand),
            (b"subscribe room", CommandError::UnknownCommand),
            (b"sub", CommandError::MissingTopic),
            (b"sub ", CommandError::MissingTopic),
            (b"sub room!", CommandError::InvalidTopic),
            (b"sub room extra", CommandError::TrailingData),
            (b"pub r\xc3\xa9 x", CommandError::InvalidTopic),
        ];
        for (frame, err) in cases {
            assert_eq!(
                parse(frame, false),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(frame)
            );
        }
        let long = format!("sub {}", "a".repeat(129));
        assert_eq!(
            parse(long.as_bytes(), false),
            Err(CommandError::InvalidTopic)
        );
        let max = format!("sub {}", "a".repeat(128));
        assert!(parse(max.as_bytes(), false).is_ok());
    }

    #[test]
    fn server_lines_are_byte_exact() {
        let mut out = Vec::new();
        write_hello(&mut out, "id", true, "node-1", None);
        assert_eq!(out, b"hello id resumed node-1");
        out.clear();
        write_hello(&mut out, "id", false, "node-1", Some("alice"));
        assert_eq!(out, b"hello id new node-1 alice");
        out.clear();
        write_msg(&mut out, "t", 7, b"hi there", false);
        assert_eq!(out, b"msg t 7 hi there");
        out.clear();
        write_msg(&mut out, "t", 8, b"\x00\x01", true);
        assert_eq!(out, b"msg t 8\n\x00\x01");
        out.clear();
        write_ok(&mut out, "pub", "t", Some(9));
        assert_eq!(out, b"ok pub t 9");
        out.clear();
        let a = Member::new(PeerId::parse(b"00000000000000aa").unwrap(), None);
        let b = Member::new(
            PeerId::parse(b"00000000000000bb").unwrap(),
            Some("bob".into()),
        );
        write_members(&mut out, "t", 2, [a.clone(), b.clone()].iter());
        assert_eq!(out, b"members t 2 00000000000000aa 00000000000000bb:bob");
        out.clear();
        write_members(&mut out, "t", 5000, [].iter());
        assert_eq!(out, b"members t 5000");
        out.clear();
        write_presence(&mut out, true, "t", &b);
        assert_eq!(out, b"join t 00000000000000bb bob");
        out.clear();
        write_presence(&mut out, false, "t", &a);
        assert_eq!(out, b"leave t 00000000000000aa");
        out.clear();
        write_forbidden(&mut out, "pub", "t");
        assert_eq!(out, b"err 403 pub t forbidden");
        out.clear();
        write_revoked(&mut out, "t");
        assert_eq!(out, b"err 403 sub t revoked");
        out.clear();
        write_gap(&mut out, "t", 1, 5);
        assert_eq!(out, b"gap t 1 5");
        out.clear();
        write_err(&mut out, CommandError::InvalidTopic);
        assert_eq!(out, b"err 422 invalid topic");
    }
}
