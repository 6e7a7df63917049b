//! Where a byte of an open WebSocket arrives: read what the socket has into
//! the core's shared buffer, parse every complete frame of the batch, and
//! answer them all with one `send` (DESIGN §9: throughput comes from
//! batching; on the ring, the answers of every connection a reactor wake
//! serves leave together, see [`Core::send_answers`]). Gateway commands go
//! to the hub; the echo endpoint answers in place.

use std::rc::Rc;

use crate::core::{Core, READ_BUF_SIZE};
use crate::metrics::CoreStats;
use crate::net::conn::{Close, Conn};
use crate::net::reactor::DataPath;
use crate::net::socket::would_block;
use crate::proto::close::ProtocolError;
use crate::proto::command::{self, Command, CommandError};
use crate::proto::frame::{encode_close, encode_frame, OpCode};
use crate::proto::receiver::{Event, Receiver, Step};
use crate::sys::log::{self, Level};

/// An unfinished frame up to this size is staged through the core buffer;
/// larger ones are read straight into the connection's buffer.
const STAGE_MAX: usize = 16 * 1024;
/// Reads per readiness event before yielding to other connections.
const READS_PER_WAKE: usize = 4;
/// Output batched before it is sent even if more input is waiting.
const WRITE_BATCH: usize = 256 * 1024;

/// Read-side state of an open WebSocket connection while its task runs.
pub struct Ws {
    pub(super) rx: Receiver,
    /// The unfinished frame at the front of the stream (empty when idle).
    pub(super) inbuf: Vec<u8>,
    /// Full length of that frame, when its header has arrived.
    need: usize,
    /// The peer's close frame was the last byte it had sent (the read that
    /// brought it was short): with the handshake complete, nothing can be
    /// left unread, so the socket may be closed without lingering.
    pub(super) close_at_end: bool,
    /// What the core knows of this connection (output, heartbeat, close).
    pub(super) conn: Rc<Conn>,
}

impl Ws {
    /// The read side of `conn`, with nothing buffered.
    pub fn new(core: &Core, conn: Rc<Conn>) -> Ws {
        let max = core.shared.config.max_message_size;
        Ws {
            rx: match conn.deflate() {
                Some(_) => Receiver::with_deflate(max),
                None => Receiver::new(max),
            },
            inbuf: Vec::new(),
            need: 0,
            close_at_end: false,
            conn,
        }
    }

    /// Nothing is buffered or half-parsed: the connection may park.
    pub fn is_idle(&self) -> bool {
        self.inbuf.is_empty() && self.rx.is_idle()
    }
}

/// Messages and payload bytes of one batch, counted once at its end.
#[derive(Default)]
struct Tally {
    messages_in: u64,
    bytes_in: u64,
    messages_out: u64,
    bytes_out: u64,
}

impl Tally {
    fn record(&self, stats: &CoreStats) {
        stats.received(self.messages_in, self.bytes_in);
        stats.sent(self.messages_out, self.bytes_out);
    }
}

/// Reads what the socket has (if `read`; else only the bytes already
/// buffered), parses every complete frame and sends all replies in one batch.
/// Returns false when the socket (probably) still has bytes to read.
pub fn read_and_answer(core: &Core, ws: &mut Ws, read: bool) -> bool {
    let mut drained = true;
    let mut wbuf = core.write_buf().borrow_mut();
    wbuf.clear();
    if read {
        let rbuf = &mut *core.read_buf().borrow_mut();
        drained = false;
        for _ in 0..READS_PER_WAKE {
            drained = read_once(core, ws, rbuf, &mut wbuf);
            let running = ws.conn.close_state().is_running();
            if drained || !running || wbuf.len() >= WRITE_BATCH {
                break;
            }
        }
    } else {
        let mut inbuf = std::mem::take(&mut ws.inbuf);
        let used = parse_and_answer(core, ws, &mut inbuf, &mut wbuf);
        inbuf.drain(..used);
        if !inbuf.is_empty() {
            ws.inbuf = inbuf;
        }
    }
    if core.send_answers(&ws.conn, &wbuf).is_err() && ws.conn.close_state().is_running() {
        ws.conn.set_close_state(Close::Cut(1006));
    }
    core.shrink_write_buf(&mut wbuf);
    drained
}

/// One `recv` and the frames it completes. Returns true when the socket
/// has (probably) nothing more to read right now.
fn read_once(core: &Core, ws: &mut Ws, rbuf: &mut [u8], wbuf: &mut Vec<u8>) -> bool {
    // A small unfinished frame is staged in front of the core buffer so one
    // recv completes it and fetches what follows; a frame too large for the
    // core buffer is read straight into the connection's own buffer.
    let direct = ws.inbuf.len() > STAGE_MAX || ws.need > READ_BUF_SIZE;
    if ws.inbuf.is_empty() && !direct && core.reactor.path() == DataPath::Uring {
        // On the ring: the bytes are parsed where the kernel put them.
        let conn = ws.conn.clone();
        let lent = core.reactor.lend(&conn, |data| {
            let used = parse_and_answer(core, ws, data, wbuf);
            if used < data.len() {
                ws.inbuf.extend_from_slice(&data[used..]);
            }
        });
        if lent.is_some() {
            ws.conn.heard_from(core.now());
            // More may have arrived behind it (or the stream's end): the
            // next read says.
            return false;
        }
    }
    let (result, want) = if direct {
        let want = ws.need.saturating_sub(ws.inbuf.len()).max(STAGE_MAX);
        let got = core.reactor.recv_append(&ws.conn, &mut ws.inbuf, want);
        (got, want)
    } else {
        let staged = ws.inbuf.len();
        rbuf[..staged].copy_from_slice(&ws.inbuf);
        let got = core.reactor.recv(&ws.conn, &mut rbuf[staged..]);
        (got, READ_BUF_SIZE - staged)
    };
    let n = match result {
        Ok(n) if n > 0 => n,
        Err(e) if would_block(&e) => return true,
        _ => {
            // End of stream or an error: the peer vanished.
            ws.conn.set_close_state(Close::Cut(1006));
            return true;
        }
    };
    ws.conn.heard_from(core.now());
    let short = n < want;
    if direct {
        let mut inbuf = std::mem::take(&mut ws.inbuf);
        let used = parse_and_answer(core, ws, &mut inbuf, wbuf);
        inbuf.drain(..used);
        if !inbuf.is_empty() {
            ws.inbuf = inbuf;
        }
    } else {
        let data = &mut rbuf[..ws.inbuf.len() + n];
        let used = parse_and_answer(core, ws, data, wbuf);
        ws.inbuf.clear();
        if used < data.len() {
            ws.inbuf.extend_from_slice(&data[used..]);
        } else {
            ws.inbuf = Vec::new(); // idle connections hold no buffer
        }
    }
    ws.close_at_end &= short; // a full read may have left bytes in the kernel
    short
}

/// Parses the frames in `data` and writes the replies into `out`; returns
/// the bytes used. Once the connection is closed, the rest is discarded.
/// The commands of one batch reach the hub as one [`Core::hub_batch`].
pub fn parse_and_answer(core: &Core, ws: &mut Ws, data: &mut [u8], out: &mut Vec<u8>) -> usize {
    core.hub_batch(|| {
        let mut tally = Tally::default();
        let mut used = 0;
        let total = data.len();
        while ws.conn.close_state().is_running() {
            match ws.rx.step(&mut data[used..]) {
                Ok(Step::NeedMore { frame_len }) => {
                    ws.need = frame_len.unwrap_or(0);
                    break;
                }
                Ok(Step::Frame { consumed, event }) => {
                    used += consumed;
                    ws.need = 0;
                    if let Some(event) = event {
                        let at_end = used == total;
                        let close_at_end = &mut ws.close_at_end;
                        on_event(core, &ws.conn, close_at_end, event, out, &mut tally, at_end);
                    }
                }
                Err(e) => on_protocol_error(&ws.conn, e, out),
            }
        }
        tally.record(&core.stats);
        if ws.conn.close_state().is_running() {
            used
        } else {
            total
        }
    })
}

/// One complete frame's event. `at_end`: it was the last byte of the batch.
#[allow(clippy::too_many_arguments)] // the batch's state, passed apart from the borrowed frame
fn on_event(
    core: &Core,
    conn: &Conn,
    close_at_end: &mut bool,
    event: Event<'_>,
    out: &mut Vec<u8>,
    tally: &mut Tally,
    at_end: bool,
) {
    let state = conn.close_state();
    // After our close frame, only the peer's close matters (§5.5.1).
    let closing = matches!(state, Close::Sent(_));
    match event {
        Event::Text(payload) | Event::Binary(payload) => {
            tally.messages_in += 1;
            tally.bytes_in += payload.len() as u64;
            if conn.deflate().is_some() {
                let n = payload.len() as u64;
                core.stats.compression_in(n, n);
            }
            if !closing {
                let binary = matches!(event, Event::Binary(_));
                on_message(core, conn, payload, binary, out, tally);
            }
        }
        // After our close frame nothing is inflated: only the peer's close matters.
        Event::Compressed { .. } if closing => tally.messages_in += 1,
        Event::Compressed { binary, data } => {
            tally.messages_in += 1;
            let done = core.inflate_message(data, binary, |payload| {
                tally.bytes_in += payload.len() as u64;
                on_message(core, conn, payload, binary, out, tally);
            });
            if let Err(e) = done {
                on_protocol_error(conn, e, out);
            }
        }
        // §5.5.2: a pong with the same application data.
        Event::Ping(payload) if !closing => encode_frame(out, OpCode::Pong, payload),
        Event::Ping(_) | Event::Pong(_) => {}
        Event::Close(code, _) => {
            let code = code.map_or(1005, |c| c.0);
            let next = match state {
                // The reply to the close we sent.
                Close::Sent(sent) => Close::Done(sent),
                // §5.5.1: answer with a close, echoing the status code.
                _ => {
                    match code {
                        1005 => encode_frame(out, OpCode::Close, &[]),
                        code => encode_close(out, code, ""),
                    }
                    Close::Received(code)
                }
            };
            conn.set_close_state(next);
            *close_at_end = at_end;
        }
    }
}

/// A data message: echoed on the echo endpoint, a command on the gateway.
fn on_message(
    core: &Core,
    conn: &Conn,
    payload: &[u8],
    binary: bool,
    out: &mut Vec<u8>,
    tally: &mut Tally,
) {
    let Some(id) = conn.conn_id() else {
        let opcode = if binary { OpCode::Binary } else { OpCode::Text };
        core.encode_message(out, opcode, payload, conn.deflate());
        tally.messages_out += 1;
        tally.bytes_out += payload.len() as u64;
        return;
    };
    match command::parse(payload, binary) {
        Ok(Command::Auth(token)) => {
            conn.append_output(out);
            refresh(core, conn, id, token, out);
        }
        Ok(Command::Send(data)) => send_to_backend(core, id, data, binary, out),
        Ok(cmd) => {
            // Keep replies in order: what this batch wrote so far goes ahead
            // of what this command produces.
            conn.append_output(out);
            core.with_hub(|hub| hub.command(id, cmd, binary, core.now()));
        }
        Err(err) => {
            let mut line = Vec::with_capacity(48);
            command::write_err(&mut line, err);
            encode_frame(out, OpCode::Text, &line);
        }
    }
}

/// `send <payload>`: queued for the events hook, whose answer comes back
/// later as `reply` (DESIGN §12); refused at once without a hook
/// (`err 501`) or when the core's queue is full (`err 503 busy`: the
/// connection stays).
fn send_to_backend(core: &Core, id: u64, data: &[u8], binary: bool, out: &mut Vec<u8>) {
    #[cfg(feature = "backend")]
    let refused = core.event_send(id, data, binary).err().map(|r| match r {
        crate::core::events::SendRefused::NoHook => &b"err 501 send: no events hook"[..],
        crate::core::events::SendRefused::Busy => b"err 503 busy",
    });
    #[cfg(not(feature = "backend"))]
    let refused = {
        let _ = (core, id, data, binary);
        Some(&b"err 501 send: no events hook"[..])
    };
    if let Some(line) = refused {
        encode_frame(out, OpCode::Text, line);
    }
}

/// `auth <jwt>`: a fresh token for the open connection. One that passes
/// (same user) moves the connection's deadline and replaces its patterns
/// (the hub answers `ok auth <exp>`); anything else answers
/// `err 401 auth invalid` and leaves the old token in force.
fn refresh(core: &Core, conn: &Conn, id: u64, token: &[u8], out: &mut Vec<u8>) {
    #[cfg(feature = "auth")]
    if let Some(auth) = core.auth.as_ref().filter(|a| a.checks_tokens()) {
        match auth.verify(token) {
            Ok(passed) => {
                let now = core.now();
                let (identity, exp) = (passed.identity, passed.exp);
                if core.with_hub(|hub| hub.refresh(id, identity, exp, now)) {
                    conn.set_token_deadline(core.coarse_secs_at(passed.deadline));
                }
            }
            Err(e) => {
                log::emit(
                    Level::Debug,
                    "auth_refresh_refused",
                    &[("reason", &e.reason()), ("core", &core.index)],
                );
                let mut line = Vec::with_capacity(24);
                command::write_auth_invalid(&mut line);
                encode_frame(out, OpCode::Text, &line);
            }
        }
        return;
    }
    let _ = (conn, id, token);
    let mut line = Vec::with_capacity(48);
    let err = if core.auth.is_some() {
        CommandError::NoTokenCheck
    } else {
        CommandError::AuthOff
    };
    command::write_err(&mut line, err);
    encode_frame(out, OpCode::Text, &line);
}

/// The peer broke the protocol: fail the connection (§7.1.7) with the code
/// the rule earns, unless our close frame is already out (nothing may
/// follow it).
fn on_protocol_error(conn: &Conn, e: ProtocolError, out: &mut Vec<u8>) {
    let code = e.close_code();
    match conn.close_state() {
        Close::Sent(sent) => conn.set_close_state(Close::Failed(sent)),
        _ => {
            encode_close(out, code.0, e.reason());
            conn.set_close_state(Close::Failed(code.0));
        }
    }
    log::emit(
        Level::Debug,
        "protocol_error",
        &[("code", &code), ("reason", &e.reason())],
    );
}
