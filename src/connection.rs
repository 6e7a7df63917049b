//! Where a byte arrives: the only socket code of a client connection.
//!
//! A connection is one task on its core. It waits for readiness (never with a
//! read in flight, so no buffer is pinned while idle and dropping a wait is
//! safe), then reads with non-blocking `recv` into the core's shared buffer,
//! hands the bytes to the sans-IO core (`proto`), and writes everything the
//! batch produced with one `send`. Only an unfinished frame or unsent output
//! is copied into the connection's own buffers, which are freed once empty.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::{timeout_at, Instant};

use crate::conns::ConnEntry;
use crate::log::{self, Level, Quoted};
use crate::proto::cookie::{find_session, SessionId};
use crate::proto::frame::{encode_close, encode_frame, OpCode};
use crate::proto::handshake::{write_101, write_session_204, Endpoint, Rejection, Route};
use crate::proto::http::{parse_request, write_response, HeadError};
use crate::proto::receiver::{Event, Receiver, Step};
use crate::server::{Core, READ_BUF_SIZE};

/// How long a closing connection waits to flush and for the peer to finish.
const LINGER: Duration = Duration::from_secs(2);
/// Bytes read and discarded at most while lingering.
const LINGER_DISCARD: usize = 1 << 20;
/// An unfinished frame up to this size is staged through the core buffer;
/// larger ones are read straight into the connection's buffer.
const STAGE_MAX: usize = 16 * 1024;
/// Reads per readiness event before yielding to other connections.
const READS_PER_WAKE: usize = 4;
/// Output batched before it is sent even if more input is waiting.
const WRITE_BATCH: usize = 256 * 1024;

/// Serves one accepted TCP connection to the end.
pub async fn serve(stream: TcpStream, peer: SocketAddr, core: Rc<Core>) {
    let _ = stream.set_nodelay(true);
    let conn = Conn {
        fd: stream.as_raw_fd(),
        stream,
        peer,
        core,
    };
    let mut out = Vec::new();
    if let Some(upgraded) = conn.handshake(&mut out).await {
        conn.websocket(upgraded, out).await;
    } else {
        conn.linger_close(out).await;
    }
}

struct Conn {
    stream: TcpStream,
    fd: RawFd,
    peer: SocketAddr,
    core: Rc<Core>,
}

/// A connection that answered 101.
struct Upgraded {
    endpoint: Endpoint,
    session: SessionId,
    /// Bytes that arrived behind the request head: the start of the stream.
    early: Vec<u8>,
}

/// What to do after looking at the bytes of a request head so far.
enum Decision {
    NeedMore,
    /// A response is in the core's write buffer; close after it.
    Respond,
    /// The 101 is in the core's write buffer.
    Upgrade {
        endpoint: Endpoint,
        session: SessionId,
        head_len: usize,
    },
}

/// Where a connection is in its close handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// The peer's close was answered; the code it sent (1005 if none).
    CloseReceived(u16),
    /// We failed the connection with this code (RFC 6455 §7.1.7).
    Failed(u16),
    /// The peer vanished without a close frame (1006).
    Gone,
}

/// Read-side state of an open WebSocket connection.
struct Ws {
    endpoint: Endpoint,
    rx: Receiver,
    /// The unfinished frame at the front of the stream (empty when idle).
    inbuf: Vec<u8>,
    /// Full length of that frame, when its header has arrived.
    need: usize,
    phase: Phase,
    /// What the core knows of this connection (heartbeat, drain).
    entry: Rc<ConnEntry>,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Conn {
    /// Reads the request head and answers it. Returns the upgraded connection,
    /// or `None` with any response left in `out` for [`Conn::linger_close`].
    async fn handshake(&self, out: &mut Vec<u8>) -> Option<Upgraded> {
        let deadline = Instant::now() + self.core.shared.config.handshake_timeout;
        let mut head: Vec<u8> = Vec::new();
        loop {
            match timeout_at(deadline, self.stream.readable(false)).await {
                Err(_) => {
                    self.reject(Rejection::Timeout, None);
                    self.take_output(out);
                    return None;
                }
                Ok(Err(_)) => return None,
                Ok(Ok(())) => {}
            }
            let (decision, early) = {
                let rbuf = &mut *self.core.read_buf.borrow_mut();
                let n = match crate::sys::recv(self.fd, rbuf) {
                    Ok(0) => return None,
                    Ok(n) => n,
                    Err(e) if would_block(&e) => continue,
                    Err(_) => return None,
                };
                let fresh = head.is_empty();
                if !fresh {
                    head.extend_from_slice(&rbuf[..n]);
                }
                let data: &[u8] = if fresh { &rbuf[..n] } else { &head };
                let decision = self.decide(data);
                let early = match decision {
                    Decision::Upgrade { head_len, .. } if head_len < data.len() => {
                        data[head_len..].to_vec()
                    }
                    _ => Vec::new(),
                };
                if matches!(decision, Decision::NeedMore) && fresh {
                    head.extend_from_slice(&rbuf[..n]);
                }
                (decision, early)
            };
            match decision {
                Decision::NeedMore => continue,
                Decision::Respond => {
                    self.take_output(out);
                    return None;
                }
                Decision::Upgrade {
                    endpoint, session, ..
                } => {
                    self.take_output(out);
                    return Some(Upgraded {
                        endpoint,
                        session,
                        early,
                    });
                }
            }
        }
    }

    /// Sends what is in the core's write buffer now; keeps the rest in `out`.
    fn take_output(&self, out: &mut Vec<u8>) {
        let mut wbuf = self.core.write_buf.borrow_mut();
        if let Err(e) = self.send_now(&wbuf, out) {
            log::emit(
                Level::Debug,
                "send_failed",
                &[("peer", &self.peer), ("error", &e)],
            );
        }
        wbuf.clear();
        if wbuf.capacity() > 4 * READ_BUF_SIZE {
            *wbuf = Vec::with_capacity(64 * 1024);
        }
    }

    /// Sends `batch` behind any pending `out`, as far as the socket takes it
    /// without blocking; the remainder is appended to `out`.
    fn send_now(&self, batch: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if !out.is_empty() {
            out.extend_from_slice(batch);
            return self.try_flush(out);
        }
        let sent = self.send_some(batch)?;
        out.extend_from_slice(&batch[sent..]);
        Ok(())
    }

    /// Sends as much of `out` as the socket takes now.
    fn try_flush(&self, out: &mut Vec<u8>) -> io::Result<()> {
        let sent = self.send_some(out)?;
        out.drain(..sent);
        if out.is_empty() {
            *out = Vec::new();
        }
        Ok(())
    }

    /// Non-blocking sends until `data` is out or the socket is full.
    fn send_some(&self, data: &[u8]) -> io::Result<usize> {
        let mut sent = 0;
        while sent < data.len() {
            match crate::sys::send(self.fd, &data[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    /// Waits until `out` is fully sent.
    async fn flush(&self, out: &mut Vec<u8>) -> io::Result<()> {
        while !out.is_empty() {
            self.stream.writable(false).await?;
            self.try_flush(out)?;
        }
        Ok(())
    }

    /// Decides on a request head and writes the response into the core's buffer.
    fn decide(&self, data: &[u8]) -> Decision {
        let shared = &self.core.shared;
        let (req, head_len) = match parse_request(data) {
            Ok(None) => return Decision::NeedMore,
            Ok(Some(parsed)) => parsed,
            Err(HeadError::TooLarge) => return self.reject(Rejection::HeadTooLarge, None),
            Err(HeadError::Malformed(why)) => return self.reject(Rejection::BadRequest(why), None),
        };
        let mut wbuf = self.core.write_buf.borrow_mut();
        let route = match shared.routes.route(&req) {
            Ok(route) => route,
            Err(rejection) => {
                drop(wbuf);
                return self.reject(rejection, req.forwarded_for);
            }
        };
        match route {
            Route::Health if shared.is_draining() => {
                write_response(&mut wbuf, 503, &[], "draining");
                Decision::Respond
            }
            Route::Health => {
                write_response(&mut wbuf, 200, &[], "ok");
                Decision::Respond
            }
            Route::Session => {
                let id = find_session(req.cookie_headers(), &shared.config.cookie_name)
                    .unwrap_or_else(SessionId::random);
                write_session_204(&mut wbuf, &shared.cookie, id);
                Decision::Respond
            }
            Route::Upgrade { .. } if shared.is_draining() => {
                drop(wbuf);
                self.reject(Rejection::Unavailable("draining"), req.forwarded_for)
            }
            Route::Upgrade { endpoint, key } => {
                if !shared.try_acquire_connection() {
                    drop(wbuf);
                    return self.reject(
                        Rejection::Unavailable("connection limit reached"),
                        req.forwarded_for,
                    );
                }
                let known = find_session(req.cookie_headers(), &shared.config.cookie_name);
                let session = known.unwrap_or_else(SessionId::random);
                if known.is_some() {
                    // Nothing outlives a socket yet, so a cookie never finds its session here.
                    self.core.stats.sticky_miss();
                }
                write_101(&mut wbuf, key, &shared.cookie, session);
                self.core.stats.connection_opened();
                log::emit(
                    Level::Debug,
                    "upgrade",
                    &[
                        ("core", &self.core.index),
                        ("session", &session),
                        ("cookie", &if known.is_some() { "kept" } else { "minted" }),
                        ("client", &ClientAddr(self.peer, req.forwarded_for)),
                    ],
                );
                Decision::Upgrade {
                    endpoint,
                    session,
                    head_len,
                }
            }
        }
    }

    /// Writes a refusal into the core's buffer, counts and logs it.
    fn reject(&self, rejection: Rejection, forwarded_for: Option<&[u8]>) -> Decision {
        rejection.write(&mut self.core.write_buf.borrow_mut());
        self.core.stats.rejected(rejection.status());
        let level = if matches!(rejection, Rejection::NotFound | Rejection::Timeout) {
            Level::Debug
        } else {
            Level::Info
        };
        log::emit(
            level,
            "rejected",
            &[
                ("status", &rejection.status()),
                ("reason", &rejection.reason()),
                ("client", &ClientAddr(self.peer, forwarded_for)),
            ],
        );
        Decision::Respond
    }

    /// Runs an upgraded connection until it closes.
    async fn websocket(&self, up: Upgraded, mut out: Vec<u8>) {
        let shared = self.core.shared.clone();
        let registration = self.core.conns.register(self.fd, self.core.now());
        let mut ws = Ws {
            endpoint: up.endpoint,
            rx: Receiver::new(shared.config.max_message_size),
            inbuf: up.early,
            need: 0,
            phase: Phase::Open,
            entry: registration.entry.clone(),
        };
        let _ = up.session; // sessions arrive with the gateway protocol
        self.note_output(&ws.entry, &out);
        if !ws.inbuf.is_empty() {
            // A client may send its first frames right behind the request head.
            self.pump(&mut ws, &mut out, false);
        }
        let max_backpressure = shared.config.max_backpressure;
        while ws.phase == Phase::Open {
            if ws.entry.cut.get() {
                ws.phase = Phase::Gone;
                break;
            }
            if out.is_empty() {
                if let Some((code, reason)) = ws.entry.close_wanted.take() {
                    // A close the core asked for while our output was queued.
                    encode_close(&mut out, code, reason);
                    ws.entry.close_sent.set(code);
                    if self.try_flush(&mut out).is_err() {
                        ws.phase = Phase::Gone;
                        break;
                    }
                }
            }
            // Read while the peer owes us less than --max-backpressure;
            // beyond it, only wait for the peer to take its output.
            let readable = if out.is_empty() {
                self.stream.readable(false).await.map(|_| true)
            } else if out.len() >= max_backpressure {
                self.stream.writable(false).await.map(|_| false)
            } else {
                monoio::select! {
                    r = self.stream.readable(false) => r.map(|_| true),
                    w = self.stream.writable(false) => w.map(|_| false),
                }
            };
            match readable {
                Ok(true) => self.pump(&mut ws, &mut out, true),
                Ok(false) => {
                    if self.try_flush(&mut out).is_err() {
                        ws.phase = Phase::Gone;
                    }
                }
                Err(_) => ws.phase = Phase::Gone,
            }
            self.note_output(&ws.entry, &out);
        }
        let code = match (ws.phase, ws.entry.close_sent.get()) {
            (Phase::Gone, _) => 1006,
            (_, sent) if sent != 0 => sent,
            (Phase::CloseReceived(code) | Phase::Failed(code), _) => code,
            (Phase::Open, _) => 1006,
        };
        self.core.stats.closed_with(code);
        self.core.stats.connection_closed();
        shared.release_connection();
        self.linger_close(out).await;
        drop(registration);
    }

    /// Tells the core whether output is waiting on the peer, and since when.
    fn note_output(&self, entry: &ConnEntry, out: &[u8]) {
        if out.is_empty() {
            entry.out_since.set(0);
        } else if entry.out_since.get() == 0 {
            entry.out_since.set(self.core.now());
        }
    }

    /// Reads what the socket has (if `read`; else only the bytes already
    /// buffered), parses every complete frame and sends all replies in one batch.
    fn pump(&self, ws: &mut Ws, out: &mut Vec<u8>, read: bool) {
        let mut wbuf = self.core.write_buf.borrow_mut();
        wbuf.clear();
        if read {
            let rbuf = &mut *self.core.read_buf.borrow_mut();
            for _ in 0..READS_PER_WAKE {
                let drained = self.read_once(ws, rbuf, &mut wbuf);
                if drained || ws.phase != Phase::Open || wbuf.len() >= WRITE_BATCH {
                    break;
                }
            }
        } else {
            process_inbuf(ws, &mut wbuf, &self.core.stats);
        }
        if !wbuf.is_empty() && self.send_now(&wbuf, out).is_err() && ws.phase == Phase::Open {
            ws.phase = Phase::Gone;
        }
        wbuf.clear();
        if wbuf.capacity() > 4 * READ_BUF_SIZE {
            *wbuf = Vec::with_capacity(64 * 1024);
        }
    }

    /// One `recv` and the frames it completes. Returns true when the socket
    /// has (probably) nothing more to read right now.
    fn read_once(&self, ws: &mut Ws, rbuf: &mut [u8], wbuf: &mut Vec<u8>) -> bool {
        let stats = &self.core.stats;
        // A small unfinished frame is staged in front of the core buffer so one
        // recv completes it and fetches what follows; a frame too large for the
        // core buffer is read straight into the connection's own buffer.
        let direct = ws.inbuf.len() > STAGE_MAX || ws.need > READ_BUF_SIZE;
        let (result, want) = if direct {
            let want = ws.need.saturating_sub(ws.inbuf.len()).max(STAGE_MAX);
            (crate::sys::recv_append(self.fd, &mut ws.inbuf, want), want)
        } else {
            let staged = ws.inbuf.len();
            rbuf[..staged].copy_from_slice(&ws.inbuf);
            (
                crate::sys::recv(self.fd, &mut rbuf[staged..]),
                READ_BUF_SIZE - staged,
            )
        };
        let n = match result {
            Ok(0) => {
                ws.phase = Phase::Gone;
                return true;
            }
            Ok(n) => n,
            Err(e) if would_block(&e) => return true,
            Err(_) => {
                ws.phase = Phase::Gone;
                return true;
            }
        };
        // Any inbound traffic is proof of life (and answers a pending ping).
        ws.entry.last_seen.set(self.core.now());
        ws.entry.ping_sent.set(0);
        if direct {
            process_inbuf(ws, wbuf, stats);
        } else {
            let data = &mut rbuf[..ws.inbuf.len() + n];
            let used = process(ws, data, wbuf, stats);
            ws.inbuf.clear();
            if used < data.len() {
                ws.inbuf.extend_from_slice(&data[used..]);
            } else {
                ws.inbuf = Vec::new(); // idle connections hold no buffer
            }
        }
        n < want
    }

    /// Closes the TCP connection without losing what we sent: flush, send FIN,
    /// then read and discard until the peer closes too (closing with unread
    /// input would send RST, which can destroy our last frame in flight).
    async fn linger_close(&self, mut out: Vec<u8>) {
        let deadline = Instant::now() + LINGER;
        if timeout_at(deadline, self.flush(&mut out)).await.is_ok() {
            crate::sys::shutdown(self.fd, Shutdown::Write);
            let mut discarded = 0;
            while discarded < LINGER_DISCARD {
                match timeout_at(deadline, self.stream.readable(false)).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
                let rbuf = &mut *self.core.read_buf.borrow_mut();
                match crate::sys::recv(self.fd, rbuf) {
                    Ok(0) => break,
                    Ok(n) => discarded += n,
                    Err(e) if would_block(&e) => {}
                    Err(_) => break,
                }
            }
        }
        // On io_uring a dropped socket is closed only when the ring is next
        // entered; shutting it down first ends the TCP connection right now.
        crate::sys::shutdown(self.fd, Shutdown::Both);
    }
}

/// Parses the frames buffered in the connection itself.
fn process_inbuf(ws: &mut Ws, wbuf: &mut Vec<u8>, stats: &crate::metrics::CoreStats) {
    let mut inbuf = std::mem::take(&mut ws.inbuf);
    let used = process(ws, &mut inbuf, wbuf, stats);
    inbuf.drain(..used);
    if !inbuf.is_empty() {
        ws.inbuf = inbuf;
    }
}

/// Parses the frames in `data` and writes the replies; returns the bytes used.
/// Once the connection is closing, the rest of the input is discarded.
fn process(
    ws: &mut Ws,
    data: &mut [u8],
    out: &mut Vec<u8>,
    stats: &crate::metrics::CoreStats,
) -> usize {
    let mut used = 0;
    // After our close frame (drain), nothing but the peer's close matters (§5.5.1).
    let closing = ws.entry.close_sent.get() != 0;
    let (mut messages_in, mut bytes_in, mut messages_out, mut bytes_out) = (0u64, 0u64, 0u64, 0u64);
    while ws.phase == Phase::Open {
        match ws.rx.step(&mut data[used..]) {
            Ok(Step::NeedMore { frame_len }) => {
                ws.need = frame_len.unwrap_or(0);
                break;
            }
            Ok(Step::Frame { consumed, event }) => {
                used += consumed;
                ws.need = 0;
                let Some(event) = event else { continue };
                match event {
                    Event::Text(payload) | Event::Binary(payload) => {
                        messages_in += 1;
                        bytes_in += payload.len() as u64;
                        if ws.endpoint == Endpoint::Echo && !closing {
                            let opcode = if matches!(event, Event::Text(_)) {
                                OpCode::Text
                            } else {
                                OpCode::Binary
                            };
                            encode_frame(out, opcode, payload);
                            messages_out += 1;
                            bytes_out += payload.len() as u64;
                        }
                    }
                    // §5.5.2: a pong with the same application data.
                    Event::Ping(payload) if !closing => encode_frame(out, OpCode::Pong, payload),
                    Event::Ping(_) => {}
                    Event::Pong(_) => {}
                    // §5.5.1: answer with a close, echoing the status code.
                    Event::Close(code, _) if closing => {
                        ws.phase = Phase::CloseReceived(code.map_or(1005, |c| c.0));
                    }
                    Event::Close(code, _) => {
                        match code {
                            Some(code) => encode_close(out, code.0, ""),
                            None => encode_frame(out, OpCode::Close, &[]),
                        }
                        ws.phase = Phase::CloseReceived(code.map_or(1005, |c| c.0));
                    }
                }
            }
            Err(e) => {
                let code = e.close_code();
                encode_close(out, code.0, e.reason());
                ws.phase = Phase::Failed(code.0);
                log::emit(
                    Level::Debug,
                    "protocol_error",
                    &[("code", &code), ("reason", &e.reason())],
                );
            }
        }
    }
    stats.received(messages_in, bytes_in);
    stats.sent(messages_out, bytes_out);
    if ws.phase != Phase::Open {
        return data.len();
    }
    used
}

/// The client address for logs: `X-Forwarded-For` when present, quoted.
struct ClientAddr<'a>(SocketAddr, Option<&'a [u8]>);

impl std::fmt::Display for ClientAddr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(xff) => write!(f, "{}", Quoted(xff)),
            None => write!(f, "{}", self.0),
        }
    }
}
