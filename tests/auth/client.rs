//! A gateway-protocol client for the auth tests: the upgrade carries any
//! headers and query (a bearer token, `?token=`, a session cookie, origin,
//! `X-Forwarded-For`...); a refusal comes back as a [`Refusal`] (status,
//! head, body, read to EOF); a 101 reads the `hello <peer> new|resumed
//! <node>[ <user>]` line. Reads are bounded by deadlines; fragments are
//! reassembled and pings answered.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{
    accept_for, close_payload, cookie_id, frame, is_uuid_v4, rand_key, OP_BINARY, OP_CLOSE,
    OP_CONT, OP_PING, OP_PONG, OP_TEXT,
};
use crate::gw::{is_peer_id, parse_msg, End, Event, COOKIE, WAIT};

/// What an upgrade request carries besides the WebSocket headers.
#[derive(Clone, Debug)]
pub struct Upgrade {
    /// Request target, `/ws` by default (`/ws?token=…` with [`Upgrade::query`]).
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Default for Upgrade {
    fn default() -> Self {
        Upgrade::new()
    }
}

impl Upgrade {
    /// `GET /ws` with no credentials.
    pub fn new() -> Upgrade {
        Upgrade {
            target: "/ws".into(),
            headers: Vec::new(),
        }
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(token: &str) -> Upgrade {
        Upgrade::new().header("Authorization", &format!("Bearer {token}"))
    }

    /// `GET /ws?token=<token>`.
    pub fn query(token: &str) -> Upgrade {
        Upgrade {
            target: format!("/ws?token={token}"),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Upgrade {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// `Cookie: WS_SESSION_ID=<id>`.
    pub fn cookie(self, id: &str) -> Upgrade {
        self.header("Cookie", &format!("{COOKIE}={id}"))
    }
}

/// A non-101 answer to an upgrade, read to its end.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub status: u16,
    pub status_line: String,
    pub head: String,
    pub body: String,
    /// From the request's first byte to the end of the head.
    pub elapsed: Duration,
}

impl Refusal {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.head, name)
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.head
            .split("\r\n")
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then_some(v.trim())
            })
            .collect()
    }

    /// [`Refusal::assert_basic`]; for 401 also exactly one
    /// `WWW-Authenticate: Bearer error="invalid_token"`.
    pub fn assert_shape(&self, status: u16, secrets: &[&str], ctx: &str) {
        self.assert_basic(status, secrets, ctx);
        if status == 401 {
            assert_eq!(
                self.headers_named("WWW-Authenticate"),
                vec![r#"Bearer error="invalid_token""#],
                "{ctx}: the 401's WWW-Authenticate; head:\n{}",
                self.head
            );
        }
    }

    /// `HTTP/1.1 <status> <phrase>`, `Connection: close`, no `Set-Cookie`;
    /// `secrets` (the token, the cookie) are not echoed in the head or body.
    pub fn assert_basic(&self, status: u16, secrets: &[&str], ctx: &str) {
        let phrase = match status {
            401 => "Unauthorized",
            403 => "Forbidden",
            503 => "Service Unavailable",
            other => panic!("no reason phrase for {other}"),
        };
        assert_eq!(
            self.status_line,
            format!("HTTP/1.1 {status} {phrase}"),
            "{ctx}: wrong status; head:\n{}body: {:?}",
            self.head,
            self.body
        );
        let conn = self.header("Connection").unwrap_or("");
        assert!(
            conn.eq_ignore_ascii_case("close"),
            "{ctx}: expected `Connection: close`, head:\n{}",
            self.head
        );
        assert!(
            self.header("Set-Cookie").is_none(),
            "{ctx}: a refusal must not set the session cookie; head:\n{}",
            self.head
        );
        for s in secrets.iter().filter(|s| s.len() >= 8) {
            assert!(
                !self.head.contains(s) && !self.body.contains(s),
                "{ctx}: the refusal echoes a secret; head:\n{}body: {:?}",
                self.head,
                self.body
            );
        }
    }
}

fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// An open gateway-protocol connection.
pub struct Ws {
    pub name: String,
    /// The session id of the 101's `Set-Cookie`.
    pub id: String,
    /// The hello's peer id, state (`new` / `resumed`), node and user
    /// (`None` with auth off: a four-word hello).
    pub peer: String,
    pub state: String,
    pub node: String,
    pub user: Option<String>,
    pub hello: String,
    /// The whole 101 head.
    pub head: String,
    stream: TcpStream,
    buf: Vec<u8>,
    partial: Option<(u8, Vec<u8>)>,
}

/// Upgrades at `addr` with `req`; `Ok` with the hello read, `Err` with the
/// refusal. Panics on I/O trouble (connect, timeout, EOF before a head)
/// and on protocol violations (bad accept key, no cookie, bad hello).
pub fn upgrade(addr: SocketAddr, name: &str, req: &Upgrade) -> Result<Ws, Refusal> {
    try_upgrade(addr, name, req).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`upgrade`], but I/O trouble is an `Err(String)` too.
pub fn try_upgrade(
    addr: SocketAddr,
    name: &str,
    req: &Upgrade,
) -> Result<Result<Ws, Refusal>, String> {
    assert!(addr.ip().is_loopback(), "loopback only, got {addr}");
    let deadline = Instant::now() + WAIT;
    let stream =
        TcpStream::connect_timeout(&addr, WAIT).map_err(|e| format!("{name}: connect: {e}"))?;
    stream.set_nodelay(true).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let mut ws = Ws {
        name: name.to_string(),
        id: String::new(),
        peer: String::new(),
        state: String::new(),
        node: String::new(),
        user: None,
        hello: String::new(),
        head: String::new(),
        stream,
        buf: Vec::new(),
        partial: None,
    };
    let key = rand_key();
    let mut text = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        req.target
    );
    for (n, v) in &req.headers {
        text.push_str(&format!("{n}: {v}\r\n"));
    }
    text.push_str("\r\n");
    let started = Instant::now();
    ws.stream
        .write_all(text.as_bytes())
        .map_err(|e| format!("{name}: writing the upgrade: {e}"))?;
    let head = loop {
        if let Some(pos) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = ws.buf.drain(..pos + 4).collect();
            break String::from_utf8_lossy(&head).into_owned();
        }
        match ws.fill(deadline) {
            Ok(()) => {}
            Err(e) => {
                return Err(format!(
                    "{name}: no response head ({e:?}) after {:?}; got {:?}",
                    started.elapsed(),
                    String::from_utf8_lossy(&ws.buf)
                ))
            }
        }
    };
    let elapsed = started.elapsed();
    let status_line = head.split("\r\n").next().unwrap_or("").to_string();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{name}: bad status line {status_line:?}"))?;
    if status != 101 {
        let len: usize = header_of(&head, "Content-Length")
            .map(|v| v.parse().expect("Content-Length"))
            .unwrap_or(0);
        while ws.buf.len() < len {
            ws.fill(deadline)
                .map_err(|e| format!("{name}: the {status}'s body: {e:?}"))?;
        }
        let body = String::from_utf8_lossy(&ws.buf[..len]).into_owned();
        ws.buf.drain(..len);
        // Then the server closes (a reset is fine too).
        match ws.fill(deadline) {
            Err(End::Eof) => {}
            Err(End::Error(io::ErrorKind::ConnectionReset, _)) => {}
            other => {
                return Err(format!(
                    "{name}: after `{status_line}` expected the server to close, got {other:?} \
                     (extra bytes {:?})",
                    String::from_utf8_lossy(&ws.buf)
                ))
            }
        }
        return Ok(Err(Refusal {
            status,
            status_line,
            head,
            body,
            elapsed,
        }));
    }
    assert_eq!(
        header_of(&head, "Sec-WebSocket-Accept"),
        Some(accept_for(&key).as_str()),
        "{name}: wrong accept key:\n{head}"
    );
    let set_cookie = header_of(&head, "Set-Cookie")
        .unwrap_or_else(|| panic!("{name}: 101 without Set-Cookie:\n{head}"));
    ws.id = cookie_id(set_cookie, COOKIE).to_string();
    assert!(is_uuid_v4(&ws.id), "{name}: session id is no v4 UUID");
    ws.head = head;
    let hello = match ws.next_until(deadline) {
        Ok(Event::Text(t)) => t,
        other => return Err(format!("{name}: expected the hello, got {other:?}")),
    };
    let w: Vec<&str> = hello.split(' ').collect();
    assert!(
        (w.len() == 4 || w.len() == 5)
            && w[0] == "hello"
            && is_peer_id(w[1])
            && matches!(w[2], "new" | "resumed"),
        "{name}: expected `hello <peer-id> new|resumed <node>[ <user>]`, got {hello:?}"
    );
    assert!(
        !hello.contains(&ws.id),
        "{name}: the hello carries the session id"
    );
    ws.peer = w[1].to_string();
    ws.state = w[2].to_string();
    ws.node = w[3].to_string();
    ws.user = w.get(4).map(|s| s.to_string());
    ws.hello = hello;
    Ok(Ok(ws))
}

impl Ws {
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

    fn take_frame(&mut self) -> Option<(bool, u8, Vec<u8>)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let (fin, opcode) = (b[0] & 0x80 != 0, b[0] & 0x0f);
        assert!(b[1] & 0x80 == 0, "{}: masked server frame", self.name);
        let (len, hdr) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if b.len() < hdr + len {
            return None;
        }
        let payload = b[hdr..hdr + len].to_vec();
        self.buf.drain(..hdr + len);
        Some((fin, opcode, payload))
    }

    /// The next message before `deadline`, or why none came.
    pub fn next_until(&mut self, deadline: Instant) -> Result<Event, End> {
        loop {
            while let Some((fin, opcode, payload)) = self.take_frame() {
                match opcode {
                    OP_PING => {
                        let _ = self.stream.write_all(&frame(true, OP_PONG, &payload));
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
                            (OP_CONT, None) => panic!("{}: stray continuation", self.name),
                            (op, None) => (op, Vec::new()),
                            (_, Some(_)) => panic!("{}: interleaved data frames", self.name),
                        };
                        data.extend_from_slice(&payload);
                        if !fin {
                            self.partial = Some((op, data));
                            continue;
                        }
                        return Ok(if op == OP_TEXT {
                            Event::Text(String::from_utf8(data).expect("UTF-8 text frame"))
                        } else {
                            Event::Binary(data)
                        });
                    }
                    op => panic!("{}: unknown opcode {op:#x}", self.name),
                }
            }
            self.fill(deadline)?;
        }
    }

    /// The next message within `wait`; panics naming `ctx` otherwise.
    pub fn next_within(&mut self, wait: Duration, ctx: &str) -> Event {
        match self.next_until(Instant::now() + wait) {
            Ok(ev) => ev,
            Err(end) => panic!("{}: waiting {wait:?} for {ctx}: {end:?}", self.name),
        }
    }

    /// The next message must be a text line (within [`WAIT`]).
    pub fn line(&mut self, ctx: &str) -> String {
        match self.next_within(WAIT, ctx) {
            Event::Text(t) => t,
            other => panic!("{}: expected a text line ({ctx}), got {other:?}", self.name),
        }
    }

    /// The next text line that is not a `join` / `leave` notice.
    pub fn data_line(&mut self, ctx: &str) -> String {
        loop {
            let l = self.line(ctx);
            if !(l.starts_with("join ") || l.starts_with("leave ")) {
                return l;
            }
        }
    }

    /// The next message must be exactly the text `want`.
    pub fn expect_line(&mut self, want: &str, ctx: &str) {
        let got = self.next_within(WAIT, ctx);
        assert_eq!(got, Event::Text(want.to_string()), "{}: {ctx}", self.name);
    }

    /// Nothing arrives for `wait` and the connection stays open.
    pub fn expect_quiet(&mut self, wait: Duration, ctx: &str) {
        match self.next_until(Instant::now() + wait) {
            Err(End::Timeout) => {}
            Ok(ev) => panic!("{}: expected nothing ({ctx}), got {ev:?}", self.name),
            Err(end) => panic!(
                "{}: expected an open, quiet connection ({ctx}), got {end:?}",
                self.name
            ),
        }
    }

    /// The next message (within `wait`) must be the close frame `code`
    /// `reason`; it is answered and the TCP close awaited.
    pub fn expect_close(&mut self, code: u16, reason: &str, wait: Duration, ctx: &str) {
        let ev = self.next_within(wait, ctx);
        assert_eq!(
            ev,
            Event::Close(Some(code), reason.to_string()),
            "{}: {ctx}",
            self.name
        );
        let _ = self
            .stream
            .write_all(&frame(true, OP_CLOSE, &close_payload(code, "")));
        let deadline = Instant::now() + WAIT;
        let mut after = Vec::new();
        let end = loop {
            match self.next_until(deadline) {
                Ok(ev) => after.push(ev),
                Err(e) => break e,
            }
        };
        assert!(
            after.is_empty() && end.is_closed(),
            "{}: {ctx}: after the close expected EOF, got {after:?} then {end:?}",
            self.name
        );
    }

    /// A masked text frame.
    pub fn send_text(&mut self, text: &str) {
        self.stream
            .write_all(&frame(true, OP_TEXT, text.as_bytes()))
            .unwrap_or_else(|e| panic!("{}: sending {text:?}: {e}", self.name));
    }

    /// A masked binary frame.
    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(&frame(true, OP_BINARY, bytes))
            .unwrap_or_else(|e| panic!("{}: sending a binary frame: {e}", self.name));
    }

    /// Sends `cmd` and expects exactly the line `want` back.
    pub fn roundtrip(&mut self, cmd: &str, want: &str) {
        self.send_text(cmd);
        self.expect_line(want, &format!("the answer to {cmd:?}"));
    }

    /// `sub <topic>` must answer `ok sub <topic> <seq>`; returns the seq.
    pub fn sub(&mut self, topic: &str) -> u64 {
        self.send_text(&format!("sub {topic}"));
        let l = self.line(&format!("`ok sub {topic} <seq>`"));
        l.strip_prefix(&format!("ok sub {topic} "))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{}: expected `ok sub {topic} <seq>`, got {l:?}", self.name))
    }

    /// `sub <topic>` must answer exactly `err 403 sub <topic> forbidden`.
    pub fn sub_forbidden(&mut self, topic: &str) {
        self.roundtrip(
            &format!("sub {topic}"),
            &format!("err 403 sub {topic} forbidden"),
        );
    }

    /// `pub <topic> <payload>` (not subscribed) must answer `ok pub <topic>
    /// <seq>`; returns the seq.
    pub fn publish(&mut self, topic: &str, payload: &str) -> u64 {
        self.send_text(&format!("pub {topic} {payload}"));
        let l = self.line(&format!("`ok pub {topic} <seq>`"));
        l.strip_prefix(&format!("ok pub {topic} "))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{}: expected `ok pub {topic} <seq>`, got {l:?}", self.name))
    }

    /// `pub <topic> <payload>` by a subscriber: its own `msg <topic> <seq>
    /// <payload>` first, then `ok pub <topic> <seq>`; returns the seq.
    pub fn publish_own(&mut self, topic: &str, payload: &str) -> u64 {
        self.send_text(&format!("pub {topic} {payload}"));
        let seq = self.expect_msg(topic, payload, "its own message");
        self.expect_line(&format!("ok pub {topic} {seq}"), "the pub answer");
        seq
    }

    /// The next line must be `msg <topic> <seq> <payload>`; returns the seq.
    pub fn expect_msg(&mut self, topic: &str, payload: &str, ctx: &str) -> u64 {
        let l = self.line(ctx);
        match parse_msg(&l) {
            Some((t, seq, p)) if t == topic && p == payload => seq,
            _ => panic!(
                "{}: expected `msg {topic} <seq> {payload}` ({ctx}), got {l:?}",
                self.name
            ),
        }
    }

    /// `who <topic>`: the words after `members <topic> <n>` (checked to be
    /// `n` of them).
    pub fn who(&mut self, topic: &str) -> Vec<String> {
        self.send_text(&format!("who {topic}"));
        let l = self.line(&format!("`members {topic} …`"));
        let mut w = l.split(' ');
        let ok = w.next() == Some("members") && w.next() == Some(topic);
        let n: Option<usize> = w.next().and_then(|n| n.parse().ok());
        let ids: Vec<String> = w.map(str::to_string).collect();
        assert!(
            ok && n == Some(ids.len()),
            "{}: malformed members line {l:?}",
            self.name
        );
        ids
    }

    /// `<peer>:<user>`, as `members` lists it with auth on.
    pub fn member(&self) -> String {
        format!("{}:{}", self.peer, self.user.as_deref().unwrap_or("?"))
    }

    /// Closes with 1000 (ending the session) and waits for the server's
    /// close and EOF.
    pub fn close(mut self) {
        let _ = self
            .stream
            .write_all(&frame(true, OP_CLOSE, &close_payload(1000, "")));
        let deadline = Instant::now() + WAIT;
        while self.next_until(deadline).is_ok() {}
    }

    /// Drops the TCP connection without a close frame.
    pub fn drop_tcp(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
