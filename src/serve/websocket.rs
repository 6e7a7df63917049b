//! An open WebSocket connection's task: from the 101 to the closed socket.
//!
//! The task waits for whichever it needs — readable (while the peer owes us
//! less than `--max-backpressure`), writable (while output is queued) or a
//! notification from its core (fan-out output, a close request) — and lets
//! `frames.rs` read, parse and answer. Queued output lives in the
//! connection's [`Conn`] so the core can append fan-out to it in order.
//! When the only thing left to wait for is the peer's next bytes (or a
//! notification), the task parks the connection and ends; the reactor
//! (`reactor.rs`) hands it back when there is work, so an idle connection
//! costs its `Conn` only.

use std::future::Future;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::frames::{read_and_answer, Ws};
use crate::core::Core;
use crate::hub::Identity;
use crate::net::conn::{Close, Conn, Wake, READ, WRITE};
use crate::net::socket;
use crate::proto::cookie::SessionId;
use crate::proto::extensions::Deflate;
use crate::proto::handshake::Endpoint;
use crate::sys::log::{self, Level};

/// A connection that answered 101.
pub struct Upgraded {
    /// Which endpoint it upgraded on.
    pub endpoint: Endpoint,
    /// The session it resumes or starts.
    pub session: SessionId,
    /// Whether the request carried a valid session cookie.
    pub cookie_present: bool,
    /// The client address for logs.
    pub client: String,
    /// Bytes that arrived behind the request head: the start of the stream.
    pub early: Vec<u8>,
    /// Who it is, with authentication on.
    pub identity: Option<Identity>,
    /// When its token stops being accepted (seconds since the epoch; 0: never).
    pub token_deadline: u64,
    /// The permessage-deflate agreement (RFC 7692), if the client offered
    /// one the gateway accepted.
    pub deflate: Option<Deflate>,
}

/// Runs an upgraded connection: registers it with its core and serves it
/// until it parks or closes. `out` is whatever of the 101 is still unsent;
/// on the gateway path it ends before the cookie, which the hub's
/// [`crate::hub::Output::Accept`] completes once the session is decided
/// (until then the connection's output is held).
pub async fn open(core: Rc<Core>, fd: OwnedFd, up: Upgraded, mut out: Vec<u8>) {
    let gateway = up.endpoint == Endpoint::Gateway;
    let conn = core.conns.register(fd.into_raw_fd(), core.now(), gateway);
    let conn_id = conn.conn_id();
    let watched = core.reactor.add(conn.fd(), conn.slot());
    if conn_id.is_some() {
        conn.hold();
    }
    conn.append_output(&mut out);
    conn.set_deflate(up.deflate);
    core.stats.connection_opened();
    if up.deflate.is_some() {
        core.stats.compressed_connection(true);
    }
    let mut ws = Ws::new(&core, conn.clone());
    ws.inbuf = up.early;
    if let Some(id) = conn_id {
        if up.token_deadline != 0 {
            conn.set_token_deadline(core.coarse_secs_at(up.token_deadline));
        }
        let cookie = (up.session, up.cookie_present);
        attach(&core, id, cookie, up.identity, &up.client);
    }
    if let Err(e) = watched {
        log::emit(
            Level::Warn,
            "watch_failed",
            &[("core", &core.index), ("error", &e)],
        );
        conn.set_close_state(Close::Cut(1006));
    }
    conn.note_output(core.now());
    if !ws.inbuf.is_empty() && conn.close_state().is_running() {
        // A client may send its first frames right behind the request head.
        read_and_answer(&core, &mut ws, false);
    }
    run(core, ws).await;
}

/// Attaches gateway connection `id` to its session (taking the session over
/// from an older socket) and counts the sticky hit or miss. A cookie that
/// names another user's session gets a new session instead (a sticky miss).
fn attach(
    core: &Core,
    id: u64,
    (session, cookie_present): (SessionId, bool),
    identity: Option<Identity>,
    client: &str,
) {
    let user = identity.as_ref().map(|w| w.user.clone());
    let rebound = core.with_hub(|hub| hub.bind_user(session, user.as_deref()));
    let session = rebound.unwrap_or(session);
    let mismatch = rebound.is_some();
    if !mismatch {
        take_over(core, session);
    }
    let cookie_present = cookie_present && !mismatch;
    let resumed =
        core.with_hub(|hub| hub.attach(id, session, cookie_present, identity, core.now()));
    if mismatch {
        core.stats.sticky_miss();
        let peer = core.read_hub(|hub| hub.peer_of(session));
        log::emit(
            Level::Info,
            "auth_session_mismatch",
            &[
                (
                    "peer",
                    &peer.map_or_else(|| "-".to_string(), |p| p.to_string()),
                ),
                ("client", &client),
                ("core", &core.index),
            ],
        );
        return;
    }
    if !cookie_present {
        return;
    }
    if resumed {
        core.stats.sticky_hit();
        return;
    }
    // The cookie names a session this node does not have: routing drift
    // (or an expired session). Logged by the new session's peer id: the
    // session id is a bearer secret.
    core.stats.sticky_miss();
    let peer = core.read_hub(|hub| hub.peer_of(session));
    log::emit(
        Level::Info,
        "sticky_miss",
        &[
            (
                "peer",
                &peer.map_or_else(|| "-".to_string(), |p| p.to_string()),
            ),
            ("client", &client),
            ("core", &core.index),
        ],
    );
}

/// Before a reconnect takes a session over from a socket that still looks
/// open: whatever the old socket never got through is rewound, so the new
/// one replays it (the hub then closes the old one with 1008).
fn take_over(core: &Core, session: SessionId) {
    let Some(old) = core.read_hub(|hub| hub.connection_of(session)) else {
        return;
    };
    let Some(old_conn) = core.gateway_conn(old) else {
        return;
    };
    let lost = old_conn.take_losses();
    core.with_hub(|hub| hub.rewind(session, &lost));
    if old_conn.has_output() {
        // A frame may be half-sent: no close frame can follow it cleanly.
        old_conn.cut(1006);
    }
}

/// Serves a parked connection that has work again (spawned by the reactor).
pub async fn resume(core: Rc<Core>, conn: Rc<Conn>) {
    let ws = Ws::new(&core, conn);
    run(core, ws).await;
}

/// Serves a parked connection that became readable, on the reactor's own
/// task: one read batch, parsed and answered. When that leaves nothing to
/// wait for but the peer's next bytes, the connection is parked again and no
/// task was needed (the common case for request/response traffic: a task per
/// message would cost a spawn and a free each time); otherwise a task carries
/// on from where the batch left off.
pub fn readable_while_parked(core: &Rc<Core>, conn: Rc<Conn>) {
    let mut ws = Ws::new(core, conn.clone());
    let simple = conn.close_state().is_running()
        && !conn.is_notified()
        && !conn.has_output()
        && conn.consume_ready(READ);
    if simple {
        let drained = read_and_answer(core, &mut ws, true);
        conn.note_output(core.now());
        let open = conn.close_state().is_running();
        // Output the core pushed in this batch leaves when the batch ends
        // (the reactor's dispatch is one batch), and wakes the connection
        // if the socket does not take it all.
        let settled = !conn.has_output() || conn.is_pushing();
        if drained && open && ws.is_idle() && settled && conn.park() {
            return;
        }
        if !drained && open {
            conn.set_ready(READ); // bytes are left: the task reads them after the others
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
    let conn = ws.conn.clone();
    let max_backpressure = core.shared.config.max_backpressure;
    while conn.close_state().is_running() {
        conn.send_wanted_close(core.now());
        let pending = conn.has_output();
        // Nothing to do until the peer sends: no task needed (nothing is
        // buffered, no partial message, nothing to send).
        if !pending && ws.is_idle() && conn.park() {
            return true;
        }
        // Read only while the peer owes us less than --max-backpressure.
        let can_read = conn.output_len() < max_backpressure;
        let interest = if can_read { READ } else { 0 } | if pending { WRITE } else { 0 };
        match conn.wait(interest).await {
            Wake::Read => {
                if !read_and_answer(core, ws, true) && conn.close_state().is_running() {
                    // Bytes are left: come back after the other connections.
                    conn.set_ready(READ);
                    YieldNow(false).await;
                }
            }
            Wake::Write => {
                if conn.flush_outbox().is_err() {
                    conn.set_close_state(Close::Cut(1006));
                }
            }
            Wake::Notified => {}
        }
        conn.note_output(core.now());
    }
    false
}

/// After the loop: counts, tells the hub, lingers, and closes the socket.
async fn finish(core: Rc<Core>, ws: Ws) {
    let conn = &ws.conn;
    let state = conn.close_state();
    core.stats.closed_with(state.final_code());
    core.stats.connection_closed();
    if conn.deflate().is_some() {
        core.stats.compressed_connection(false);
    }
    if let Some(id) = conn.conn_id() {
        conn.detach_id();
        let lost = conn.take_losses();
        let ended = state.ends_session();
        // Who it was, for the events hook (a connection another one
        // replaced is no longer its session's: no `disconnect` for it).
        #[cfg(feature = "backend")]
        let who = (core.events.as_ref()).and_then(|_| core.read_hub(|h| h.identity_of(id)));
        core.with_hub(|hub| hub.detach(id, core.now(), ended, &lost));
        #[cfg(feature = "backend")]
        if let Some(who) = who {
            let gone = !core.read_hub(|h| h.has_session(who.0));
            core.event_disconnect(who, state.final_code(), state.reason_word(), gone);
        }
    }
    core.shared.release_connection();
    let out = conn.take_output();
    // RFC 6455 §7.1.1: once the close handshake is complete the server closes
    // the TCP connection first. The peer sends nothing after its close frame,
    // so with our whole reply out and nothing unread, close(2) sends a FIN, not
    // a reset; anything else (a failure, output still queued, bytes behind the
    // peer's close) lingers so our last frame is not lost to a reset.
    let complete = matches!(state, Close::Received(_) | Close::Done(_)) && ws.close_at_end;
    if !(complete && out.is_empty()) {
        socket::linger_close(conn.fd(), &**conn, out, core.read_buf()).await;
    }
    // No shutdown(SHUT_RDWR) first: the close ends it (on the ring, a
    // `CLOSE` submitted with the cancellation of the socket's operations).
    core.reactor.close(conn);
    core.conns.remove(conn);
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
