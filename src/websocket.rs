//! An open WebSocket connection: the read/parse/answer loop after the 101.
//!
//! The task waits for whichever it needs — readable (while the peer owes us
//! less than `--max-backpressure`), writable (while output is queued) or a
//! notification from its core (fan-out output, a close request) — then reads
//! with non-blocking `recv` into the core's shared buffer, parses every frame
//! of the batch, and writes all replies with one `send`. Queued output lives in
//! the connection's [`ConnEntry`] so the core can append fan-out to it in order.
//! Readiness comes from the core's reactor (`reactor.rs`). When the only thing
//! left to wait for is the peer's next bytes (or a notification), the task
//! parks the connection and ends; the reactor spawns a new one
//! ([`resume`]) when there is work, so an idle connection costs its
//! `ConnEntry` only.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use monoio::time::{timeout_at, Instant};

use crate::connection::{would_block, Upgraded, LINGER, LINGER_DISCARD};
use crate::conns::{ConnEntry, Wake, READ, WRITE};
use crate::gateway;
use crate::log::{self, Level};
use crate::metrics::CoreStats;
use crate::proto::command;
use crate::proto::frame::{encode_close, encode_frame, OpCode};
use crate::proto::handshake::Endpoint;
use crate::proto::receiver::{Event, Receiver, Step};
use crate::server::{Core, READ_BUF_SIZE};

/// An unfinished frame up to this size is staged through the core buffer;
/// larger ones are read straight into the connection's buffer.
const STAGE_MAX: usize = 16 * 1024;
/// Reads per readiness event before yielding to other connections.
const READS_PER_WAKE: usize = 4;
/// Output batched before it is sent even if more input is waiting.
const WRITE_BATCH: usize = 256 * 1024;

/// Where a connection is in its close handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// The peer's close arrived (and was answered unless we sent ours first);
    /// the code it carried (1005 if none).
    CloseReceived(u16),
    /// We failed the connection with this code (RFC 6455 §7.1.7).
    Failed(u16),
    /// The peer vanished without a close frame (1006).
    Gone,
}

/// Read-side state of an open WebSocket connection while its task runs.
struct Ws {
    rx: Receiver,
    /// The unfinished frame at the front of the stream (empty when idle).
    inbuf: Vec<u8>,
    /// Full length of that frame, when its header has arrived.
    need: usize,
    phase: Phase,
    /// The peer's close frame was the last byte it had sent (the read that
    /// brought it was short): with the handshake complete, nothing can be
    /// left unread, so the socket may be closed without lingering.
    close_at_end: bool,
    /// What the core knows of this connection (output, heartbeat, drain).
    entry: Rc<ConnEntry>,
}

impl Ws {
    fn new(core: &Core, entry: Rc<ConnEntry>) -> Ws {
        Ws {
            rx: Receiver::new(core.shared.config.max_message_size),
            inbuf: Vec::new(),
            need: 0,
            phase: Phase::Open,
            close_at_end: false,
            entry,
        }
    }
}

/// Runs an upgraded connection: registers it with its core and serves it
/// until it parks or closes. `out` is whatever of the 101 is still unsent.
pub(crate) async fn open(core: Rc<Core>, fd: OwnedFd, up: Upgraded, out: Vec<u8>) {
    let conn_id = (up.endpoint == Endpoint::Gateway).then(|| core.next_conn_id());
    let entry = core
        .conns
        .register(fd.into_raw_fd(), core.now(), up.endpoint, conn_id);
    let watched = core.reactor.add(&entry);
    *entry.outbox.borrow_mut() = out;
    core.stats.connection_opened();
    let mut ws = Ws::new(&core, entry.clone());
    ws.inbuf = up.early;
    if let Some(id) = conn_id {
        core.gateway_conns.borrow_mut().insert(id, entry.clone());
        take_over(&core, up.session);
        let resumed = core
            .hub
            .borrow_mut()
            .attach(id, up.session, up.cookie_present, core.now());
        if up.cookie_present {
            if resumed {
                core.stats.sticky_hit();
            } else {
                // The cookie names a session this node does not have:
                // routing drift (or an expired session).
                core.stats.sticky_miss();
                log::emit(
                    Level::Info,
                    "sticky_miss",
                    &[
                        ("session", &up.session),
                        ("client", &up.client),
                        ("core", &core.index),
                    ],
                );
            }
        }
        gateway::flush_hub(&core);
    }
    if let Err(e) = watched {
        log::emit(
            Level::Warn,
            "watch_failed",
            &[("core", &core.index), ("error", &e)],
        );
        ws.phase = Phase::Gone;
    }
    note_output(&core, &entry);
    if !ws.inbuf.is_empty() && ws.phase == Phase::Open {
        // A client may send its first frames right behind the request head.
        pump(&core, &mut ws, false);
    }
    run(core, ws).await;
}

/// Serves a parked connection that has work again (spawned by the reactor).
pub async fn resume(core: Rc<Core>, entry: Rc<ConnEntry>) {
    let ws = Ws::new(&core, entry);
    run(core, ws).await;
}

/// Serves a parked connection that became readable, on the reactor's own
/// task: one read batch, parsed and answered. When that leaves nothing to
/// wait for but the peer's next bytes, the connection is parked again and no
/// task was needed (the common case for request/response traffic: a task per
/// message would cost a spawn and a free each time); otherwise a task carries
/// on from where the batch left off.
pub fn readable_while_parked(core: &Rc<Core>, entry: Rc<ConnEntry>) {
    let mut ws = Ws::new(core, entry.clone());
    let simple = !entry.cut.get()
        && !entry.is_notified()
        && entry.outbox.borrow().is_empty()
        && entry.consume_ready(READ);
    if simple {
        let drained = pump(core, &mut ws, true);
        note_output(core, &entry);
        if drained
            && ws.phase == Phase::Open
            && ws.inbuf.is_empty()
            && ws.rx.is_idle()
            && entry.outbox.borrow().is_empty()
            && entry.park()
        {
            return;
        }
        if !drained && ws.phase == Phase::Open {
            entry.set_ready(READ); // bytes are left: the task reads them after the others
        }
    }
    monoio::spawn(run(core.clone(), ws));
}

async fn run(core: Rc<Core>, mut ws: Ws) {
    if serve_open(&core, &mut ws).await {
        return; // parked
    }
    Box::pin(finish(core, ws)).await;
}

/// The open-connection loop. Returns true when the connection was parked.
async fn serve_open(core: &Core, ws: &mut Ws) -> bool {
    let entry = ws.entry.clone();
    let max_backpressure = core.shared.config.max_backpressure;
    while ws.phase == Phase::Open {
        if entry.cut.get() {
            ws.phase = Phase::Gone;
            break;
        }
        if entry.outbox.borrow().is_empty() {
            if let Some((code, reason)) = entry.take_close_wanted() {
                // A close the core asked for while our output was queued.
                encode_close(&mut entry.outbox.borrow_mut(), code, reason);
                entry.close_sent.set(code);
            }
        }
        let (pending, can_read) = {
            let outbox = entry.outbox.borrow();
            (!outbox.is_empty(), outbox.len() < max_backpressure)
        };
        // Nothing to do until the peer sends: no task needed (nothing is
        // buffered, no partial message, nothing to send).
        if !pending && ws.inbuf.is_empty() && ws.rx.is_idle() && entry.park() {
            return true;
        }
        // Read only while the peer owes us less than --max-backpressure.
        let interest = if can_read { READ } else { 0 } | if pending { WRITE } else { 0 };
        match entry.wait(interest).await {
            Wake::Read => {
                if !pump(core, ws, true) && ws.phase == Phase::Open {
                    // Bytes are left: come back after the other connections.
                    entry.set_ready(READ);
                    YieldNow(false).await;
                }
            }
            Wake::Write => {
                if entry.flush_outbox().is_err() {
                    ws.phase = Phase::Gone;
                }
            }
            Wake::Notified => {}
        }
        note_output(core, &entry);
    }
    false
}

/// After the loop: counts, tells the hub, lingers, and closes the socket.
async fn finish(core: Rc<Core>, ws: Ws) {
    let entry = &ws.entry;
    let sent = entry.close_sent.get();
    let code = match ws.phase {
        Phase::Gone | Phase::Open => 1006,
        _ if sent != 0 => sent,
        Phase::CloseReceived(code) | Phase::Failed(code) => code,
    };
    core.stats.closed_with(code);
    core.stats.connection_closed();
    if let Some(id) = entry.conn_id() {
        core.gateway_conns.borrow_mut().remove(&id);
        // Only the client's own 1000 ends its session; anything else keeps it for a resume.
        let ended = ws.phase == Phase::CloseReceived(1000) && sent == 0;
        let lost = entry.take_losses();
        core.hub.borrow_mut().detach(id, core.now(), ended, &lost);
        gateway::flush_hub(&core);
    }
    core.shared.release_connection();
    let out = std::mem::take(&mut *entry.outbox.borrow_mut());
    // RFC 6455 §7.1.1: once the close handshake is complete the server closes
    // the TCP connection first. The peer sends nothing after its close frame,
    // so with our whole reply out and nothing unread, close(2) sends a FIN, not
    // a reset; anything else (a failure, output still queued, bytes behind the
    // peer's close) lingers so our last frame is not lost to a reset.
    let complete = matches!(ws.phase, Phase::CloseReceived(_)) && ws.close_at_end;
    if !(complete && out.is_empty()) {
        linger_close(&core, entry, out).await;
    }
    core.conns.remove(entry);
    entry.close_fd();
}

/// Closes the TCP connection without losing what we sent: flush, send FIN,
/// then read and discard until the peer closes too (closing with unread
/// input would send RST, which can destroy our last frame in flight).
async fn linger_close(core: &Core, entry: &ConnEntry, mut out: Vec<u8>) {
    let deadline = Instant::now() + LINGER;
    let fd = entry.fd();
    let flushed = timeout_at(deadline, async {
        loop {
            entry.clear_ready(WRITE);
            let sent = send_some(fd, &out)?;
            out.drain(..sent);
            if out.is_empty() {
                return Ok::<(), io::Error>(());
            }
            entry.wait(WRITE).await;
        }
    })
    .await;
    if matches!(flushed, Ok(Ok(()))) {
        crate::sys::shutdown(fd, Shutdown::Write);
        let mut discarded = 0;
        while discarded < LINGER_DISCARD {
            entry.clear_ready(READ);
            // The core buffer is borrowed for the call only (never across an await).
            let got = crate::sys::recv(fd, &mut core.read_buf.borrow_mut());
            match got {
                Ok(0) => break,
                Ok(n) => {
                    discarded += n;
                    continue;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => break,
            }
            if timeout_at(deadline, entry.wait(READ)).await.is_err() {
                break;
            }
        }
    }
    // No shutdown(SHUT_RDWR) here: the caller closes the descriptor itself
    // right after (close(2), not a ring operation), which ends it as well.
}

/// Non-blocking sends until `data` is out or the socket is full.
fn send_some(fd: std::os::fd::RawFd, data: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < data.len() {
        match crate::sys::send(fd, &data[sent..]) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(e) if would_block(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Pending once (after scheduling itself again), then ready.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Before a reconnect takes a session over from a socket that still looks
/// open: whatever the old socket never got through is rewound, so the new
/// one replays it (the hub then closes the old one with 1008).
fn take_over(core: &Core, session: crate::proto::cookie::SessionId) {
    let Some(old) = core.hub.borrow().connection_of(session) else {
        return;
    };
    let Some(old_entry) = core.gateway_conns.borrow().get(&old).cloned() else {
        return;
    };
    let lost = old_entry.take_losses();
    core.hub.borrow_mut().rewind(session, &lost);
    if !old_entry.outbox.borrow().is_empty() {
        // A frame may be half-sent: no close frame can follow it cleanly.
        old_entry.cut();
    }
}

/// Tells the core whether output is waiting on the peer, and since when.
fn note_output(core: &Core, entry: &ConnEntry) {
    if entry.outbox.borrow().is_empty() {
        entry.out_since.set(0);
    } else if entry.out_since.get() == 0 {
        entry.out_since.set(core.now());
    }
}

/// Reads what the socket has (if `read`; else only the bytes already
/// buffered), parses every complete frame and sends all replies in one batch.
/// Returns false when the socket (probably) still has bytes to read.
fn pump(core: &Core, ws: &mut Ws, read: bool) -> bool {
    let mut drained = true;
    let mut wbuf = core.write_buf.borrow_mut();
    wbuf.clear();
    if read {
        let rbuf = &mut *core.read_buf.borrow_mut();
        drained = false;
        for _ in 0..READS_PER_WAKE {
            drained = read_once(core, ws, rbuf, &mut wbuf);
            if drained || ws.phase != Phase::Open || wbuf.len() >= WRITE_BATCH {
                break;
            }
        }
    } else {
        let mut inbuf = std::mem::take(&mut ws.inbuf);
        let used = process(ws, &mut inbuf, &mut wbuf, core);
        inbuf.drain(..used);
        if !inbuf.is_empty() {
            ws.inbuf = inbuf;
        }
    }
    let failed = ws.entry.send_batch(&wbuf).is_err();
    if failed && ws.phase == Phase::Open {
        ws.phase = Phase::Gone;
    }
    wbuf.clear();
    if wbuf.capacity() > 4 * READ_BUF_SIZE {
        *wbuf = Vec::with_capacity(64 * 1024);
    }
    drained
}

/// One `recv` and the frames it completes. Returns true when the socket
/// has (probably) nothing more to read right now.
fn read_once(core: &Core, ws: &mut Ws, rbuf: &mut [u8], wbuf: &mut Vec<u8>) -> bool {
    let fd = ws.entry.fd();
    // A small unfinished frame is staged in front of the core buffer so one
    // recv completes it and fetches what follows; a frame too large for the
    // core buffer is read straight into the connection's own buffer.
    let direct = ws.inbuf.len() > STAGE_MAX || ws.need > READ_BUF_SIZE;
    let (result, want) = if direct {
        let want = ws.need.saturating_sub(ws.inbuf.len()).max(STAGE_MAX);
        (crate::sys::recv_append(fd, &mut ws.inbuf, want), want)
    } else {
        let staged = ws.inbuf.len();
        rbuf[..staged].copy_from_slice(&ws.inbuf);
        (
            crate::sys::recv(fd, &mut rbuf[staged..]),
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
    ws.entry.last_seen.set(core.now());
    ws.entry.ping_sent.set(0);
    let short = n < want;
    if direct {
        let mut inbuf = std::mem::take(&mut ws.inbuf);
        let used = process(ws, &mut inbuf, wbuf, core);
        inbuf.drain(..used);
        if !inbuf.is_empty() {
            ws.inbuf = inbuf;
        }
    } else {
        let data = &mut rbuf[..ws.inbuf.len() + n];
        let used = process(ws, data, wbuf, core);
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
/// the bytes used. Once the connection is closing, the rest is discarded.
fn process(ws: &mut Ws, data: &mut [u8], out: &mut Vec<u8>, core: &Core) -> usize {
    let stats: &CoreStats = &core.stats;
    let mut used = 0;
    let total = data.len();
    // After our close frame (drain, takeover), only the peer's close matters (§5.5.1).
    let closing = ws.entry.close_sent.get() != 0;
    let (mut messages_in, mut bytes_in, mut messages_out, mut bytes_out) = (0u64, 0u64, 0u64, 0u64);
    // Gateway commands handed to the hub whose output is not flushed yet.
    let mut commanded = false;
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
                        if closing {
                            continue;
                        }
                        let binary = matches!(event, Event::Binary(_));
                        match (ws.entry.endpoint, ws.entry.conn_id()) {
                            (Endpoint::Echo, _) => {
                                let opcode = if binary { OpCode::Binary } else { OpCode::Text };
                                encode_frame(out, opcode, payload);
                                messages_out += 1;
                                bytes_out += payload.len() as u64;
                            }
                            (Endpoint::Gateway, Some(conn)) => {
                                match command::parse(payload, binary) {
                                    Ok(cmd) => {
                                        // Keep replies in order: what this batch wrote so far
                                        // goes behind what the batch's earlier commands
                                        // produced and ahead of what this one produces.
                                        if !out.is_empty() {
                                            if commanded {
                                                gateway::flush_hub(core);
                                            }
                                            ws.entry.outbox.borrow_mut().append(out);
                                        }
                                        core.hub.borrow_mut().command(
                                            conn,
                                            cmd,
                                            binary,
                                            core.now(),
                                        );
                                        commanded = true;
                                    }
                                    Err(err) => {
                                        let mut line = Vec::with_capacity(48);
                                        command::write_err(&mut line, err);
                                        encode_frame(out, OpCode::Text, &line);
                                    }
                                }
                            }
                            (Endpoint::Gateway, None) => {}
                        }
                    }
                    // §5.5.2: a pong with the same application data.
                    Event::Ping(payload) if !closing => encode_frame(out, OpCode::Pong, payload),
                    Event::Ping(_) | Event::Pong(_) => {}
                    // The reply to the close we sent.
                    Event::Close(code, _) if closing => {
                        ws.phase = Phase::CloseReceived(code.map_or(1005, |c| c.0));
                        ws.close_at_end = used == total;
                    }
                    // §5.5.1: answer with a close, echoing the status code.
                    Event::Close(code, _) => {
                        match code {
                            Some(code) => encode_close(out, code.0, ""),
                            None => encode_frame(out, OpCode::Close, &[]),
                        }
                        ws.phase = Phase::CloseReceived(code.map_or(1005, |c| c.0));
                        ws.close_at_end = used == total;
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
    if commanded {
        // One flush for the whole batch: a publisher's burst reaches each
        // subscriber as one write (see ConnEntry::push_frame).
        gateway::flush_hub(core);
    }
    stats.received(messages_in, bytes_in);
    stats.sent(messages_out, bytes_out);
    if ws.phase != Phase::Open {
        return data.len();
    }
    used
}
