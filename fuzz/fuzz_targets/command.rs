//! The gateway command parser (`proto::command::parse`).
//!
//! Input: one frame's payload, parsed both as a text frame and as a binary one.
//!
//! Asserts:
//! - an accepted command has a valid topic, and its payload is the tail of the
//!   frame (text: after `pub <topic> `; binary: after the first `\n`);
//! - round trip: the command written back in canonical form parses to the same
//!   command, as text and as binary;
//! - `auth <token>` (text only) carries one non-empty word without spaces,
//!   the tail of the frame;
//! - `send` carries the rest of the frame (text: after `send `; binary: after
//!   the first `\n`), and writes back to the same command;
//! - a binary frame without `\n` is always `MissingHeaderLine`; every error has
//!   a 400/401/422 code and a one-line `err` text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::proto::command::{is_valid_topic, parse, write_err, Command};

/// The canonical frame for `cmd`: text form, or binary form.
fn encode(cmd: &Command<'_>, binary: bool) -> Vec<u8> {
    let (verb, topic, payload) = match *cmd {
        Command::Sub(t) => ("sub", t, None),
        Command::Unsub(t) => ("unsub", t, None),
        Command::Who(t) => ("who", t, None),
        Command::Pub { topic, payload } => ("pub", topic, Some(payload)),
        Command::Auth(token) => return [b"auth ", token].concat(),
        Command::Send(p) => {
            return match binary {
                true => [b"send\n", p].concat(),
                false => [b"send ", p].concat(),
            }
        }
    };
    let mut out = format!("{verb} {topic}").into_bytes();
    match (payload, binary) {
        (None, false) => {}
        (None, true) => out.push(b'\n'),
        (Some(p), _) => {
            out.push(if binary { b'\n' } else { b' ' });
            out.extend_from_slice(p);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    for binary in [false, true] {
        match parse(data, binary) {
            Ok(Command::Auth(token)) => {
                assert!(!binary && !token.is_empty() && !token.contains(&b' '));
                assert_eq!([b"auth ", token].concat(), data);
                assert_eq!(parse(&encode(&Command::Auth(token), false), false), Ok(Command::Auth(token)));
            }
            Ok(Command::Send(payload)) => {
                assert!(data.ends_with(payload));
                for as_binary in [false, true] {
                    let frame = encode(&Command::Send(payload), as_binary);
                    assert_eq!(parse(&frame, as_binary), Ok(Command::Send(payload)));
                }
            }
            Ok(cmd) => {
                let topic = match cmd {
                    Command::Sub(t) | Command::Unsub(t) | Command::Who(t) => t,
                    Command::Auth(_) | Command::Send(_) => unreachable!("matched above"),
                    Command::Pub { topic, payload } => {
                        assert!(data.ends_with(payload));
                        if binary {
                            let nl = data.iter().position(|&b| b == b'\n').unwrap();
                            assert_eq!(payload, &data[nl + 1..]);
                        }
                        topic
                    }
                };
                assert!(is_valid_topic(topic.as_bytes()));
                for as_binary in [false, true] {
                    let frame = encode(&cmd, as_binary);
                    assert_eq!(parse(&frame, as_binary), Ok(cmd), "{frame:?}");
                }
            }
            Err(e) => {
                assert!(matches!(e.code(), 400 | 401 | 422));
                let mut out = Vec::new();
                write_err(&mut out, e);
                assert!(out.starts_with(b"err ") && !out.contains(&b'\n'));
            }
        }
    }
    if !data.contains(&b'\n') {
        assert_eq!(
            parse(data, true),
            Err(wsgate::proto::command::CommandError::MissingHeaderLine)
        );
    }
});
