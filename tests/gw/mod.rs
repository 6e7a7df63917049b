//! A client for the gateway protocol on `/ws` (DESIGN §6), for the sessions
//! tests: upgrade with or without a session cookie, read the `hello`, send
//! commands, read server lines with deadlines, drop the TCP socket without a
//! close frame, and talk to the admin listener (metrics, publish API).
//!
//! Builds on `common` (gateway process, frame encoding); every read here is
//! bounded by a deadline, every failure message names the client and the
//! step. Only std is used.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{
    accept_for, close_payload, cookie_id, frame, rand_key, Gateway, OP_BINARY, OP_CLOSE, OP_CONT,
    OP_PING, OP_PONG, OP_TEXT,
};

/// Default deadline for one expected event or one HTTP exchange.
pub const WAIT: Duration = Duration::from_secs(5);
/// The node id every sessions test starts the gateway with.
pub const NODE: &str = "gw-test-node";
/// The publish-API token used by the tests.
pub const TOKEN: &str = "0123456789abcdef0123";
/// The session cookie name (default configuration).
pub const COOKIE: &str = "WS_SESSION_ID";

/// Gateway arguments for the sessions tests: plain-HTTP cookie, a fixed node
/// id, then `extra`.
pub fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--cookie-secure", "false", "--node-id", NODE];
    v.extend_from_slice(extra);
    v
}

/// A peer id: 16 lowercase hex digits (DESIGN §6).
pub fn is_peer_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One message from the server, after reassembling fragments; pings are
/// answered and skipped.
#[derive(Clone, PartialEq, Eq)]
pub enum Event {
    Text(String),
    Binary(Vec<u8>),
    /// Close frame: code (if any) and reason.
    Close(Option<u16>, String),
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Text(s) if s.len() > 120 => {
                write!(
                    f,
                    "Text({:?}… [{} bytes])",
                    &s[..char_floor(s, 120)],
                    s.len()
                )
            }
            Event::Text(s) => write!(f, "Text({s:?})"),
            Event::Binary(b) => {
                let shown = &b[..b.len().min(80)];
                write!(
                    f,
                    "Binary({:?}{} [{} bytes])",
                    String::from_utf8_lossy(shown),
                    if b.len() > 80 { "…" } else { "" },
                    b.len()
                )
            }
            Event::Close(code, reason) => write!(f, "Close({code:?}, {reason:?})"),
        }
    }
}

/// The largest char boundary of `s` at or below `i`.
fn char_floor(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Why no event came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Nothing within the deadline.
    Timeout,
    /// The server closed the TCP stream at a frame boundary.
    Eof,
    /// The server closed the TCP stream inside a frame.
    EofInFrame,
    /// A socket error (e.g. a reset).
    Error(io::ErrorKind, String),
}

impl End {
    /// The connection is gone (EOF, truncated frame or reset), not merely quiet.
    pub fn is_closed(&self) -> bool {
        match self {
            End::Eof | End::EofInFrame => true,
            End::Error(kind, _) => matches!(
                kind,
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ),
            End::Timeout => false,
        }
    }
}

/// A gateway-protocol client over a raw `TcpStream`.
///
/// The `try_*` methods report I/O trouble (connect refused, a non-101, EOF,
/// a reset, a timeout) as an `Err`, so a client whose node is killed can
/// carry on (the multi-node tests); the other methods panic naming the
/// client and the step. Protocol violations by the server (a bad accept
/// key, a masked frame, a malformed hello…) always panic.
pub struct Client {
    /// Label used in failure messages (e.g. `"A"`).
    pub name: String,
    /// The session id from the `Set-Cookie` of the 101 (a bearer secret:
    /// it must never appear in any frame).
    pub id: String,
    /// The peer id the `hello` names: what other clients see of the session.
    pub peer: String,
    /// The whole `hello` line.
    pub hello: String,
    /// `hello … resumed` (else `new`).
    pub resumed: bool,
    /// The node id the `hello` names.
    pub node: String,
    /// Where it connected (a node or a balancer).
    pub addr: SocketAddr,
    /// Fail on a server frame with RSV bits set.
    check_rsv: bool,
    stream: TcpStream,
    buf: Vec<u8>,
    /// Fragments of a message not yet complete: opcode and bytes.
    partial: Option<(u8, Vec<u8>)>,
}

impl Client {
    /// A fresh session (no cookie): asserts `hello <id> new <node>`.
    pub fn new(gw: &Gateway, name: &str) -> Client {
        let c = Client::connect(gw, name, None);
        assert!(
            !c.resumed,
            "{name}: a cookie-less upgrade was answered {:?}",
            c.hello
        );
        c
    }

    /// Reconnect with the cookie `id`: asserts `hello <peer> resumed <node>`.
    pub fn resume(gw: &Gateway, name: &str, id: &str) -> Client {
        let c = Client::connect(gw, name, Some(id));
        assert!(
            c.resumed,
            "{name}: reconnect with the cookie of a live session got {:?}, expected `hello <peer> resumed {NODE}`",
            c.hello
        );
        c
    }

    /// Upgrade on `/ws` (with `Cookie: WS_SESSION_ID=<cookie>` if given), check
    /// the 101 and read the `hello` line, which must name [`NODE`]. With a
    /// cookie, the session id must be kept. Panics on any failure.
    pub fn connect(gw: &Gateway, name: &str, cookie: Option<&str>) -> Client {
        let c = Client::try_connect(gw.addr, name, cookie, true, |_, _| {})
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.node, NODE,
            "{name}: expected `hello {} new|resumed {NODE}`, got {:?}",
            c.id, c.hello
        );
        c
    }

    /// Upgrade on `/ws` at `addr` (with the session cookie when given) and
    /// read the `hello <id> new|resumed <node>` line (any node). `Err` for
    /// anything short of a 101 and a hello within [`WAIT`]: connect refused,
    /// another status, EOF, a timeout. Panics on a wrong accept key, a 101
    /// without `Set-Cookie`, a changed session id or a malformed hello.
    /// `check_cookie(set_cookie, id)` runs on the 101's cookie before the
    /// hello is read; `check_rsv` makes every frame with RSV bits fail.
    pub fn try_connect(
        addr: SocketAddr,
        name: &str,
        cookie: Option<&str>,
        check_rsv: bool,
        check_cookie: impl FnOnce(&str, &str),
    ) -> Result<Client, String> {
        let deadline = Instant::now() + WAIT;
        let stream = TcpStream::connect_timeout(&addr, WAIT)
            .map_err(|e| format!("{name}: connect {addr}: {e}"))?;
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let mut c = Client {
            name: name.to_string(),
            id: String::new(),
            peer: String::new(),
            hello: String::new(),
            resumed: false,
            node: String::new(),
            addr,
            check_rsv,
            stream,
            buf: Vec::new(),
            partial: None,
        };
        let key = rand_key();
        let mut req = format!(
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        );
        if let Some(id) = cookie {
            req.push_str(&format!("Cookie: {COOKIE}={id}\r\n"));
        }
        req.push_str("\r\n");
        c.try_write(req.as_bytes())
            .map_err(|e| format!("{name}: writing the upgrade to {addr}: {e}"))?;

        // The 101 head.
        let head = loop {
            if let Some(pos) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = c.buf.drain(..pos + 4).collect();
                break String::from_utf8_lossy(&head).into_owned();
            }
            if c.buf.len() > 64 * 1024 {
                return Err(format!("{name}: response head over 64 KiB from {addr}"));
            }
            c.fill(deadline).map_err(|e| {
                format!(
                    "{name}: no complete response head from {addr} ({e:?}); got {:?}",
                    String::from_utf8_lossy(&c.buf)
                )
            })?;
        };
        if !head.starts_with("HTTP/1.1 101 ") {
            return Err(format!("{name}: upgrade at {addr} answered:\n{head}"));
        }
        let header = |n: &str| {
            head.split("\r\n").find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(n).then(|| v.trim().to_string())
            })
        };
        assert_eq!(
            header("Sec-WebSocket-Accept").as_deref(),
            Some(accept_for(&key).as_str()),
            "{name}: wrong accept key in:\n{head}"
        );
        let set_cookie = header("Set-Cookie")
            .unwrap_or_else(|| panic!("{name}: 101 without Set-Cookie:\n{head}"));
        let id = cookie_id(&set_cookie, COOKIE).to_string();
        check_cookie(&set_cookie, &id);
        if let Some(want) = cookie {
            assert_eq!(id, want, "{name}: the 101 changed the session id");
        }
        c.id = id;

        // The first message is the hello.
        let hello = match c.next_until(deadline) {
            Ok(Event::Text(t)) => t,
            other => {
                return Err(format!(
                    "{name}: expected the hello from {addr}, got {other:?}"
                ))
            }
        };
        let parts: Vec<&str> = hello.split(' ').collect();
        assert!(
            parts.len() == 4
                && parts[0] == "hello"
                && is_peer_id(parts[1])
                && matches!(parts[2], "new" | "resumed"),
            "{name}: expected `hello <peer-id> new|resumed <node>`, got {hello:?}"
        );
        assert!(
            !hello.contains(&c.id),
            "{name}: the hello carries the session id: {hello:?}"
        );
        c.peer = parts[1].to_string();
        c.resumed = parts[2] == "resumed";
        c.node = parts[3].to_string();
        c.hello = hello;
        Ok(c)
    }

    // --- raw I/O -------------------------------------------------------------

    fn try_write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn write(&mut self, bytes: &[u8], what: &str) {
        if let Err(e) = self.try_write(bytes) {
            panic!("{}: writing {what} ({} bytes): {e}", self.name, bytes.len());
        }
    }

    /// One read into the buffer, bounded by `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), End> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(End::Timeout);
        }
        self.stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(0) if self.buf.is_empty() && self.partial.is_none() => Err(End::Eof),
            Ok(0) => Err(End::EofInFrame),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(End::Timeout)
            }
            Err(e) => Err(End::Error(e.kind(), e.to_string())),
        }
    }

    /// Decode one complete frame from the buffer: (fin, opcode, payload).
    fn take_frame(&mut self) -> Option<(bool, u8, Vec<u8>)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let (fin, opcode, masked) = (b[0] & 0x80 != 0, b[0] & 0x0f, b[1] & 0x80 != 0);
        assert!(!masked, "{}: the server sent a masked frame", self.name);
        if self.check_rsv {
            assert_eq!(b[0] & 0x70, 0, "{}: server frame with RSV bits", self.name);
        }
        let (len, hdr) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        assert!(
            len <= 64 << 20,
            "{}: implausible frame length {len}",
            self.name
        );
        if b.len() < hdr + len {
            return None;
        }
        let payload = b[hdr..hdr + len].to_vec();
        self.buf.drain(..hdr + len);
        Some((fin, opcode, payload))
    }

    /// The next message, or why none came before `deadline`. Pings are
    /// answered; pongs are skipped; fragments are reassembled.
    pub fn next_until(&mut self, deadline: Instant) -> Result<Event, End> {
        loop {
            while let Some((fin, opcode, payload)) = self.take_frame() {
                match opcode {
                    OP_PING => {
                        let _ = self.try_write(&frame(true, OP_PONG, &payload));
                    }
                    OP_PONG => {}
                    OP_CLOSE => {
                        let code = (payload.len() >= 2)
                            .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                        let reason =
                            String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned();
                        return Ok(Event::Close(code, reason));
                    }
                    OP_TEXT | OP_BINARY | OP_CONT => {
                        let (op, mut data) = match (opcode, self.partial.take()) {
                            (OP_CONT, Some(p)) => p,
                            (OP_CONT, None) => {
                                panic!("{}: continuation frame without a start", self.name)
                            }
                            (op, None) => (op, Vec::new()),
                            (_, Some(_)) => {
                                panic!("{}: new data frame inside a fragmented one", self.name)
                            }
                        };
                        data.extend_from_slice(&payload);
                        if !fin {
                            self.partial = Some((op, data));
                            continue;
                        }
                        return Ok(if op == OP_TEXT {
                            Event::Text(String::from_utf8(data).unwrap_or_else(|e| {
                                panic!("{}: text message is not UTF-8: {e}", self.name)
                            }))
                        } else {
                            Event::Binary(data)
                        });
                    }
                    op => panic!("{}: unknown opcode {op:#x} from the server", self.name),
                }
            }
            self.fill(deadline)?;
        }
    }

    /// The next message within [`WAIT`]; panics naming `ctx` otherwise.
    pub fn next(&mut self, ctx: &str) -> Event {
        self.next_within(WAIT, ctx)
    }

    /// The next message within `wait`; panics naming `ctx` otherwise.
    pub fn next_within(&mut self, wait: Duration, ctx: &str) -> Event {
        match self.next_until(Instant::now() + wait) {
            Ok(ev) => ev,
            Err(end) => panic!(
                "{} ({}): waiting {wait:?} for {ctx}: {end:?}",
                self.name, self.id
            ),
        }
    }

    /// The next message must be a text frame; returns it.
    pub fn line(&mut self, ctx: &str) -> String {
        match self.next(ctx) {
            Event::Text(s) => s,
            other => panic!(
                "{} ({}): expected a text line ({ctx}), got {other:?}",
                self.name, self.id
            ),
        }
    }

    /// The next message must be exactly the text `want`.
    pub fn expect_line(&mut self, want: &str, ctx: &str) {
        let got = self.next(ctx);
        assert_eq!(
            got,
            Event::Text(want.to_string()),
            "{} ({}): {ctx}",
            self.name,
            self.id
        );
    }

    /// Nothing arrives for `wait` (and the connection stays open).
    pub fn expect_quiet(&mut self, wait: Duration, ctx: &str) {
        match self.next_until(Instant::now() + wait) {
            Err(End::Timeout) => {}
            Ok(ev) => panic!(
                "{} ({}): expected nothing ({ctx}), got {ev:?}",
                self.name, self.id
            ),
            Err(end) => panic!(
                "{} ({}): expected an open, quiet connection ({ctx}), got {end:?}",
                self.name, self.id
            ),
        }
    }

    /// Read until the connection ends (or `wait` passes); returns every message
    /// seen and how it ended.
    pub fn drain_to_end(&mut self, wait: Duration) -> (Vec<Event>, End) {
        let deadline = Instant::now() + wait;
        let mut seen = Vec::new();
        loop {
            match self.next_until(deadline) {
                Ok(ev) => seen.push(ev),
                Err(end) => return (seen, end),
            }
        }
    }

    // --- sending -------------------------------------------------------------

    /// A masked text frame; `Err` if the write fails.
    pub fn try_send_text(&mut self, text: &str) -> io::Result<()> {
        self.try_write(&frame(true, OP_TEXT, text.as_bytes()))
    }

    /// A masked text frame.
    pub fn send_text(&mut self, text: &str) {
        let f = frame(true, OP_TEXT, text.as_bytes());
        self.write(&f, &format!("text {text:?}"));
    }

    /// Bytes as they are (e.g. several frames in one write).
    pub fn send_raw(&mut self, bytes: &[u8], what: &str) {
        self.write(bytes, what);
    }

    /// A masked binary frame.
    pub fn send_binary(&mut self, bytes: &[u8]) {
        let f = frame(true, OP_BINARY, bytes);
        self.write(&f, "a binary frame");
    }

    /// A close frame with `code`; `Err` if the write fails.
    pub fn try_send_close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        self.try_write(&frame(true, OP_CLOSE, &close_payload(code, reason)))
    }

    /// A close frame with `code`.
    pub fn send_close(&mut self, code: u16, reason: &str) {
        let f = frame(true, OP_CLOSE, &close_payload(code, reason));
        self.write(&f, &format!("close {code}"));
    }

    /// Drop the TCP connection without a close frame (FIN, no WebSocket close).
    pub fn drop_tcp(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Close with `code` and wait for the server's close reply and EOF.
    pub fn close_with(mut self, code: u16) {
        self.send_close(code, "bye");
        let (events, end) = self.drain_to_end(WAIT);
        let closes: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e, Event::Close(..)))
            .collect();
        assert!(
            matches!(closes.as_slice(), [Event::Close(Some(c), _)] if *c == code),
            "{} ({}): after close {code}, expected the server's close {code}, got {events:?} then {end:?}",
            self.name,
            self.id
        );
        assert!(
            end.is_closed(),
            "{} ({}): the server did not close the TCP connection after the close handshake: {end:?}",
            self.name,
            self.id
        );
    }

    /// The next message must be a close frame with `code` and `reason`; answer
    /// it like a browser would (echo the code) and require the TCP close.
    pub fn expect_server_close(mut self, code: u16, reason: &str, ctx: &str) {
        let ev = self.next(ctx);
        assert_eq!(
            ev,
            Event::Close(Some(code), reason.to_string()),
            "{} ({}): {ctx}",
            self.name,
            self.id
        );
        let _ = self.try_send_close(code, "");
        let (events, end) = self.drain_to_end(WAIT);
        assert!(
            events.is_empty() && end.is_closed(),
            "{} ({}): {ctx}: after the close handshake expected EOF, got {events:?} then {end:?}",
            self.name,
            self.id
        );
    }

    // --- protocol ------------------------------------------------------------

    /// `sub <topic>`; expects `ok sub <topic> <seq>` next and returns the seq.
    pub fn sub(&mut self, topic: &str) -> u64 {
        self.send_text(&format!("sub {topic}"));
        let l = self.line(&format!("`ok sub {topic} <seq>`"));
        let seq = l
            .strip_prefix(&format!("ok sub {topic} "))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{} ({}): expected `ok sub {topic} <seq>`, got {l:?}",
                    self.name, self.id
                )
            });
        seq
    }

    /// `unsub <topic>`; expects `ok unsub <topic>` next.
    pub fn unsub(&mut self, topic: &str) {
        self.send_text(&format!("unsub {topic}"));
        self.expect_line(&format!("ok unsub {topic}"), "the unsub answer");
    }

    /// `pub <topic> <payload>`; when `subscribed`, expects its own `msg` first;
    /// then `ok pub <topic> <seq>`. Returns the seq.
    pub fn publish(&mut self, topic: &str, payload: &str, subscribed: bool) -> u64 {
        self.send_text(&format!("pub {topic} {payload}"));
        let own = if subscribed {
            Some(self.expect_msg(topic, payload, "its own message"))
        } else {
            None
        };
        let seq = self.expect_ok_pub(topic);
        if let Some(s) = own {
            assert_eq!(
                s, seq,
                "{}: own msg seq differs from the `ok pub` seq",
                self.name
            );
        }
        seq
    }

    /// The next line must be `ok pub <topic> <seq>`; returns the seq.
    pub fn expect_ok_pub(&mut self, topic: &str) -> u64 {
        let l = self.line(&format!("`ok pub {topic} <seq>`"));
        l.strip_prefix(&format!("ok pub {topic} "))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{} ({}): expected `ok pub {topic} <seq>`, got {l:?}",
                    self.name, self.id
                )
            })
    }

    /// The next line must be `msg <topic> <seq> <payload>`; returns the seq.
    pub fn expect_msg(&mut self, topic: &str, payload: &str, ctx: &str) -> u64 {
        let l = self.line(ctx);
        match parse_msg(&l) {
            Some((t, seq, p)) if t == topic && p == payload => seq,
            _ => panic!(
                "{} ({}): expected `msg {topic} <seq> {payload}` ({ctx}), got {l:?}",
                self.name, self.id
            ),
        }
    }

    /// The next line must be exactly `msg <topic> <seq> <payload>`.
    pub fn expect_msg_seq(&mut self, topic: &str, seq: u64, payload: &str, ctx: &str) {
        self.expect_line(&format!("msg {topic} {seq} {payload}"), ctx);
    }

    /// `who <topic>`; expects `members <topic> <n> <ids…>` and returns the ids
    /// (checking that `n` matches and that they are sorted).
    pub fn who(&mut self, topic: &str) -> Vec<String> {
        self.send_text(&format!("who {topic}"));
        let l = self.line(&format!("`members {topic} …`"));
        let mut words = l.split(' ');
        let ok = words.next() == Some("members") && words.next() == Some(topic);
        let n: Option<usize> = words.next().and_then(|n| n.parse().ok());
        let ids: Vec<String> = words.map(str::to_string).collect();
        assert!(
            ok && n == Some(ids.len()),
            "{} ({}): malformed members line {l:?}",
            self.name,
            self.id
        );
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "{}: members not sorted: {l:?}", self.name);
        ids
    }
}

/// Split `msg <topic> <seq> <payload>` (payload may contain spaces or be
/// empty when the separator is missing).
pub fn parse_msg(line: &str) -> Option<(&str, u64, &str)> {
    let rest = line.strip_prefix("msg ")?;
    let (topic, rest) = rest.split_once(' ')?;
    let (seq, payload) = match rest.split_once(' ') {
        Some((s, p)) => (s, p),
        None => (rest, ""),
    };
    Some((topic, seq.parse().ok()?, payload))
}

/// Split a binary `msg <topic> <seq>\n<bytes>`.
pub fn parse_binary_msg(data: &[u8]) -> Option<(String, u64, &[u8])> {
    let nl = data.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&data[..nl]).ok()?;
    let mut w = head.split(' ');
    if w.next()? != "msg" {
        return None;
    }
    let topic = w.next()?.to_string();
    let seq = w.next()?.parse().ok()?;
    if w.next().is_some() {
        return None;
    }
    Some((topic, seq, &data[nl + 1..]))
}

/// A topic name unique to this process and call.
pub fn topic(prefix: &str) -> String {
    format!("{prefix}.{:08x}", crate::common::rand_u64() as u32)
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// Sum over the family `name` (e.g. every `wsgate_connections_active{core}`).
pub fn metric(gw: &Gateway, name: &str) -> f64 {
    gw.scrape().sum(name)
}

/// Wait until the sum of `name` satisfies `cond` (up to 10 s); returns the
/// last value, panicking with `ctx` if the condition never held.
pub fn wait_metric(gw: &Gateway, name: &str, ctx: &str, cond: impl Fn(f64) -> bool) -> f64 {
    let s = gw.scrape_until(Duration::from_secs(10), |s| cond(s.sum(name)));
    let v = s.sum(name);
    assert!(
        cond(v),
        "[{}] {ctx}: {name} = {v} did not reach the expected value within 10 s; samples: {:?}",
        gw.driver.name(),
        s.family(name)
    );
    v
}

/// Wait until exactly `n` WebSocket connections are open on the gateway:
/// after a client drops its socket, this is how a test knows the server has
/// seen it go (so what is published next is "missed", not written into a dead
/// socket).
pub fn wait_open_connections(gw: &Gateway, n: usize, ctx: &str) {
    wait_metric(gw, "wsgate_connections_active", ctx, |v| v == n as f64);
}

// ---------------------------------------------------------------------------
// Admin HTTP (publish API)
// ---------------------------------------------------------------------------

/// An admin answer: status and body.
#[derive(Debug)]
pub struct AdminReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// One request on the admin listener. `body: Some(b)` adds `Content-Length`;
/// `None` sends only the head (give your own `Content-Length` in `headers`
/// to declare a body that is never sent). Reads the answer by
/// `Content-Length`.
pub fn admin_request(
    gw: &Gateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> AdminReply {
    let deadline = Instant::now() + WAIT;
    let mut s = TcpStream::connect_timeout(&gw.admin, WAIT)
        .unwrap_or_else(|e| panic!("connect admin {}: {e}", gw.admin));
    s.set_write_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body.unwrap_or(&[]));
    s.write_all(&bytes)
        .unwrap_or_else(|e| panic!("{method} {path}: write: {e}"));

    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    let what = format!("{method} {path}");
    let (head_len, status, head, clen) = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos + 4]).into_owned();
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{what}: bad status line in {head:?}"));
            let clen = content_length(&head);
            break (pos + 4, status, head, clen);
        }
        read_some(
            &mut s,
            &mut buf,
            &mut tmp,
            deadline,
            &what,
            "the response head",
        );
    };
    while buf.len() < head_len + clen {
        read_some(
            &mut s,
            &mut buf,
            &mut tmp,
            deadline,
            &what,
            "the response body",
        );
    }
    AdminReply {
        status,
        head,
        body: String::from_utf8_lossy(&buf[head_len..head_len + clen]).into_owned(),
    }
}

/// The `Content-Length` of a response head (0 when absent or malformed).
pub fn content_length(head: &str) -> usize {
    head.split("\r\n")
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

fn read_some(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    tmp: &mut [u8],
    deadline: Instant,
    what: &str,
    part: &str,
) {
    let left = deadline.saturating_duration_since(Instant::now());
    assert!(!left.is_zero(), "{what}: timed out waiting for {part}");
    s.set_read_timeout(Some(left)).unwrap();
    match s.read(tmp) {
        Ok(0) => panic!(
            "{what}: EOF before {part}; got {:?}",
            String::from_utf8_lossy(buf)
        ),
        Ok(n) => buf.extend_from_slice(&tmp[..n]),
        Err(e) => panic!(
            "{what}: {e} while waiting for {part}; got {:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

/// `POST /publish/<topic>` with the test token; must answer 200 `<seq>\n`.
/// Returns the seq.
pub fn api_publish(gw: &Gateway, topic: &str, body: &[u8], binary: bool) -> u64 {
    let auth = format!("Bearer {TOKEN}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if binary {
        headers.push(("Content-Type", "application/octet-stream"));
    }
    let r = admin_request(
        gw,
        "POST",
        &format!("/publish/{topic}"),
        &headers,
        Some(body),
    );
    assert_eq!(r.status, 200, "publish API: {}{}", r.head, r.body);
    r.body
        .strip_suffix('\n')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("publish API body {:?} is not `<seq>\\n`", r.body))
}
