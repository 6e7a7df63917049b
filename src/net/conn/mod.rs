//! An open WebSocket connection as its core knows it: the socket, the
//! output waiting for the peer, the close handshake's state and the
//! heartbeat's clocks. The heartbeat sweep, the drain, the fan-out and the
//! connection's own task all act on a connection through this one record,
//! without waking its task.
//!
//! An idle connection is only its [`Conn`] (no task, no buffer, no
//! in-flight operation): its task parks it and ends, and the reactor spawns
//! a new one when the socket becomes readable or the core notifies it.
//! Everything here is core-local (`Rc`, `Cell`): no locks, no atomics.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::deliveries::Deliveries;
use super::socket::{self, Readiness};
use super::wakeups;
use crate::hub::ConnId;

mod close;
mod push;

use crate::proto::close::ServerClose;
use crate::proto::extensions::Deflate;
use crate::proto::frame::{encode_close, encode_frame, OpCode};
use crate::sys;
pub use close::Close;
pub use push::Pushed;

/// Readiness bit: the socket may have bytes (or end of stream, or an error).
pub const READ: u8 = 1;
/// Readiness bit: the socket may take bytes.
pub const WRITE: u8 = 2;

/// What a parked connection needs from the serving layer.
pub enum Wakeup {
    /// Its socket became readable.
    Readable(Rc<Conn>),
    /// Its core notified it (output, close, cut).
    Notified(Rc<Conn>),
}

/// An open WebSocket connection. Kept small: an idle connection is this
/// record and nothing else.
pub struct Conn {
    /// The socket; -1 once closed (so a stale record can never touch a
    /// reused descriptor number).
    fd: Cell<RawFd>,
    /// Index in the core's registry (and the reactor's token).
    slot: u32,
    close: Cell<Close>,
    notified: Cell<bool>,
    /// No task runs this connection: the reactor spawns one on readiness or notify.
    parked: Cell<bool>,
    /// [`READ`] / [`WRITE`] readiness reported by the reactor and not yet consumed.
    ready: Cell<u8>,
    /// Frames pushed in the current flush wait in the outbox for
    /// [`Conn::flush_pushed`].
    pushing: Cell<bool>,
    /// The 101 is not complete yet (its session, so its cookie, is being
    /// decided): output queues but nothing is sent until [`Conn::accept`].
    held: Cell<bool>,
    /// The permessage-deflate agreement, packed ([`Deflate::pack`]; 0:
    /// none). One byte: the compressor and decompressor are the core's.
    deflate: Cell<u8>,
    /// When the connection's token runs out, in whole seconds of the core's
    /// coarse clock (0: no token, or it never runs out). The heartbeat sweep
    /// closes it with 1008 "token expired" then: no timer per connection.
    token_deadline: Cell<u32>,
    /// The upper half of the hub's token of a gateway connection (the
    /// lower half is the slot); 0 for an echo connection, and once the hub
    /// has let it go.
    generation: Cell<u32>,
    /// Coarse time (its low 32 bits, see [`Stamp`]) of the last inbound bytes.
    last_seen: Cell<Stamp>,
    /// Coarse time a ping or our close frame went out and its answer is
    /// awaited; 0 when none.
    awaiting: Cell<Stamp>,
    /// Coarse time output started waiting on the peer; 0 when none is queued.
    out_since: Cell<Stamp>,
    /// Bytes of this connection's stream handed to the kernel.
    written: Cell<u64>,
    /// Output waiting for the peer to read, in order (empty, unallocated, when idle).
    outbox: RefCell<Vec<u8>>,
    waker: Cell<Option<Waker>>,
    /// Delivered messages the peer may not have received (gateway only,
    /// allocated on the first delivery).
    /// (A `Cell`, taken and put back around each use: a `RefCell`'s borrow
    /// flag would make every connection record a malloc size class larger.)
    deliveries: Cell<Option<Box<Deliveries>>>,
}

/// A coarse time (ms) as a connection keeps it: its low 32 bits, never 0
/// (0 means "none"). The heartbeat only ever asks how long ago a stamp was,
/// and that is at most its ping interval plus its pong timeout (the config
/// keeps both well under 2^31 ms, 24 days): 4 bytes where a `u64` takes 8,
/// three times in every connection record.
type Stamp = u32;

fn stamp(now: u64) -> Stamp {
    (now as u32).max(1)
}

/// The coarse time `at` was stamped, read at `now` (0 stays 0: none). A
/// stamp a millisecond "ahead" (0 was stored as 1) reads as `now`.
fn unstamp(at: Stamp, now: u64) -> u64 {
    if at == 0 {
        return 0;
    }
    let ago = (now as u32).wrapping_sub(at);
    if ago > i32::MAX as u32 {
        return now;
    }
    now.saturating_sub(u64::from(ago)).max(1)
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close_fd();
    }
}

impl Conn {
    /// A connection on socket `fd` (owned from now on), in registry `slot`,
    /// seen at coarse time `now`. It starts writable (the first send finds
    /// out) and not readable: the reactor's registration reports bytes that
    /// are already there.
    /// `generation` is the upper half of a gateway connection's hub token
    /// (0: not a gateway connection).
    pub(super) fn new(fd: RawFd, slot: u32, now: u64, generation: u32) -> Conn {
        Conn {
            fd: Cell::new(fd),
            slot,
            close: Cell::new(Close::Open),
            notified: Cell::new(false),
            parked: Cell::new(false),
            ready: Cell::new(WRITE),
            pushing: Cell::new(false),
            held: Cell::new(false),
            deflate: Cell::new(0),
            token_deadline: Cell::new(0),
            generation: Cell::new(generation),
            last_seen: Cell::new(stamp(now)),
            awaiting: Cell::new(0),
            out_since: Cell::new(0),
            written: Cell::new(0),
            outbox: RefCell::new(Vec::new()),
            waker: Cell::new(None),
            deliveries: Cell::new(None),
        }
    }

    /// The socket (-1 once closed).
    pub fn fd(&self) -> RawFd {
        self.fd.get()
    }

    /// The registry slot.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Holds all output back until [`Conn::accept`] (see `held`).
    pub fn hold(&self) {
        self.held.set(true);
    }

    /// Whether the 101 is still incomplete.
    pub fn is_held(&self) -> bool {
        self.held.get()
    }

    /// Completes the held 101: `tail` (its cookie line and end) goes in at
    /// byte `at` of the output, which starts with the rest of the 101; then
    /// everything queued meanwhile may leave, in order.
    pub fn accept(&self, at: usize, tail: &[u8]) {
        if !self.held.replace(false) {
            return;
        }
        {
            let mut outbox = self.outbox.borrow_mut();
            debug_assert!(outbox.len() >= at, "the 101 is held whole");
            let at = at.min(outbox.len());
            outbox.splice(at..at, tail.iter().copied());
        }
        // Out now, as the handshake would have sent it: fan-out that follows
        // (`hello`, a replay) must find the output empty unless the peer is
        // really not reading (see `push_frame`).
        if self.flush_outbox().is_err() {
            self.cut(1006);
            return;
        }
        self.set_ready(WRITE);
        self.notify();
    }

    /// Records the permessage-deflate agreement of the handshake.
    pub fn set_deflate(&self, agreed: Option<Deflate>) {
        self.deflate.set(Deflate::pack(agreed));
    }

    /// The permessage-deflate agreement, if any.
    pub fn deflate(&self) -> Option<Deflate> {
        Deflate::unpack(self.deflate.get())
    }

    /// When the token runs out (coarse seconds; 0: never).
    pub fn token_deadline(&self) -> u32 {
        self.token_deadline.get()
    }

    /// Sets when the token runs out (coarse seconds; 0: never).
    pub fn set_token_deadline(&self, secs: u32) {
        self.token_deadline.set(secs);
    }

    /// The hub's token of a gateway connection (`None`: the echo endpoint).
    pub fn conn_id(&self) -> Option<ConnId> {
        let generation = self.generation.get();
        (generation != 0).then(|| (u64::from(generation) << 32) | u64::from(self.slot))
    }

    /// The hub no longer knows this connection (it is closing): output for
    /// its old token finds nothing.
    pub fn detach_id(&self) {
        self.generation.set(0);
    }

    /// Where the close handshake is.
    pub fn close_state(&self) -> Close {
        self.close.get()
    }

    /// Moves the close handshake on (the connection's task, as frames arrive).
    pub fn set_close_state(&self, state: Close) {
        self.close.set(state);
    }

    /// The heartbeat's clocks: last inbound bytes, the ping or close awaiting
    /// an answer, and output waiting on the peer (coarse ms, 0 for none),
    /// read at coarse time `now`.
    pub fn clocks(&self, now: u64) -> (u64, u64, u64) {
        (
            unstamp(self.last_seen.get(), now),
            unstamp(self.awaiting.get(), now),
            unstamp(self.out_since.get(), now),
        )
    }

    /// Inbound bytes arrived at `now`: proof of life, and the answer to a
    /// pending ping (not to our close frame: only the peer's close is).
    pub fn heard_from(&self, now: u64) {
        self.last_seen.set(stamp(now));
        if self.close.get().accepts_output() {
            self.awaiting.set(0);
        }
    }

    /// Closes the socket now (idempotent).
    pub fn close_fd(&self) {
        let fd = self.fd.replace(-1);
        if fd >= 0 {
            // SAFETY: the record owns the descriptor; it was replaced by -1 above,
            // so it is closed exactly once.
            unsafe { libc::close(fd) };
        }
    }

    /// Forgets the socket without closing it: something else closes it
    /// (the data path's ring, [`crate::net::reactor::Reactor::close`]).
    pub fn forget_fd(&self) {
        self.fd.set(-1);
    }

    /// Wakes the connection's task: its outbox or close state changed.
    pub fn notify(&self) {
        self.notified.set(true);
        if self.parked.get() {
            wakeups::request_resume(self.slot);
        } else if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Waits for readiness in `interest` ([`READ`] | [`WRITE`]) or a notification.
    pub fn wait(&self, interest: u8) -> Wait<'_> {
        Wait {
            conn: self,
            interest,
        }
    }

    /// Whether a notification is waiting for the connection's task.
    pub fn is_notified(&self) -> bool {
        self.notified.get()
    }

    /// Takes readiness in `bits` if any was reported (as a wait would).
    pub fn consume_ready(&self, bits: u8) -> bool {
        let ready = self.ready.get();
        self.ready.set(ready & !bits);
        ready & bits != 0
    }

    /// Forgets readiness in `bits`: call right before the syscall that will
    /// find out (an edge that arrives afterwards sets it again).
    pub fn clear_ready(&self, bits: u8) {
        self.ready.set(self.ready.get() & !bits);
    }

    /// Marks readiness the task knows of itself (bytes left unread).
    pub fn set_ready(&self, bits: u8) {
        self.ready.set(self.ready.get() | bits);
    }

    /// Readiness from the reactor. Returns true when a task must be spawned
    /// for a parked connection (it is then no longer parked).
    pub fn on_ready(&self, bits: u8) -> bool {
        self.ready.set(self.ready.get() | bits);
        if self.parked.get() {
            if bits & READ != 0 {
                self.parked.set(false);
                return true;
            }
            return false;
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        false
    }

    /// Parks the connection: its task is about to end. Refused (false) when
    /// there is already something to do (readable, notified).
    pub fn park(&self) -> bool {
        if self.ready.get() & READ != 0 || self.notified.get() {
            return false;
        }
        self.waker.set(None);
        self.parked.set(true);
        true
    }

    /// Takes a parked connection out of the parked state for a notification.
    /// Returns true when a task must be spawned.
    pub fn unpark_notified(&self) -> bool {
        self.parked.get() && self.notified.get() && {
            self.parked.set(false);
            true
        }
    }

    /// Whether the only output is what the core pushed in its current
    /// flush (sent, or handed to the task, when the flush ends: see
    /// [`Conn::flush_pushed`]).
    pub fn is_pushing(&self) -> bool {
        self.pushing.get()
    }

    /// Whether output waits for the peer.
    pub fn has_output(&self) -> bool {
        !self.outbox.borrow().is_empty()
    }

    /// Bytes of output waiting for the peer.
    pub fn output_len(&self) -> usize {
        self.outbox.borrow().len()
    }

    /// Queues `bytes` (emptied, its capacity kept by the caller) behind the
    /// output, without sending yet.
    pub fn append_output(&self, bytes: &mut Vec<u8>) {
        if !bytes.is_empty() {
            self.outbox.borrow_mut().append(bytes);
        }
    }

    /// Takes what is left of the output (for the lingering close).
    /// Nothing leaves a connection whose 101 never completed.
    pub fn take_output(&self) -> Vec<u8> {
        let out = std::mem::take(&mut *self.outbox.borrow_mut());
        if self.held.get() {
            return Vec::new();
        }
        out
    }

    /// Tells the heartbeat whether output is waiting on the peer, and since when.
    pub fn note_output(&self, now: u64) {
        if !self.has_output() {
            self.out_since.set(0);
        } else if self.out_since.get() == 0 {
            self.out_since.set(stamp(now));
        }
    }

    /// Sends `batch` behind whatever is queued, as far as the socket takes
    /// it now; the rest is queued.
    pub fn send_batch(&self, batch: &[u8]) -> io::Result<()> {
        if self.held.get() {
            self.outbox.borrow_mut().extend_from_slice(batch);
            return Ok(());
        }
        let sent = socket::send_behind(self.fd(), &mut self.outbox.borrow_mut(), batch);
        self.count_sent(sent)
    }

    /// Sends as much of the queue as the socket takes now.
    pub fn flush_outbox(&self) -> io::Result<()> {
        if self.held.get() {
            return Ok(());
        }
        let sent = socket::flush(self.fd(), &mut self.outbox.borrow_mut());
        self.count_sent(sent)
    }

    fn count_sent(&self, sent: io::Result<usize>) -> io::Result<()> {
        let n = sent?;
        self.written.set(self.written.get() + n as u64);
        Ok(())
    }

    /// Once the queued output is out: a close the core asked for meanwhile
    /// goes behind it now. Call from the connection's task.
    pub fn send_wanted_close(&self, now: u64) {
        if let Close::Wanted(why) = self.close.get() {
            if !self.has_output() {
                encode_close(&mut self.outbox.borrow_mut(), why.code().0, why.reason());
                self.close.set(Close::Sent(why.code().0));
                self.awaiting.set(stamp(now));
            }
        }
    }

    /// Whether the connection task has output queued (a frame may be half-sent).
    pub fn output_pending(&self) -> bool {
        self.out_since.get() != 0
    }

    /// Sends a ping now, unless output is queued or the connection is
    /// closing. A peer whose socket cannot take two bytes is not reading: it
    /// is cut.
    pub fn send_ping(&self, now: u64) {
        if self.held.get()
            || self.output_pending()
            || self.has_output()
            || self.close.get() != Close::Open
        {
            return;
        }
        let mut frame = Vec::with_capacity(2);
        encode_frame(&mut frame, OpCode::Ping, &[]);
        if self.send_whole(&frame) {
            self.awaiting.set(stamp(now));
        }
    }

    /// Starts a close handshake: sent now if nothing is queued, otherwise by
    /// the connection task right after its queued output.
    pub fn request_close(&self, why: ServerClose, now: u64) {
        if self.close.get() != Close::Open {
            return;
        }
        if self.held.get() {
            // Not a WebSocket yet: no close frame can go before the 101.
            self.cut(1006);
            return;
        }
        if self.output_pending() || self.has_output() {
            self.close.set(Close::Wanted(why));
            self.notify();
            return;
        }
        let mut frame = Vec::with_capacity(32);
        encode_close(&mut frame, why.code().0, why.reason());
        if self.send_whole(&frame) {
            self.close.set(Close::Sent(why.code().0));
            self.awaiting.set(stamp(now));
        }
    }

    /// Shuts the socket down, counting the connection under `code`; the
    /// connection task then ends it.
    pub fn cut(&self, code: u16) {
        if matches!(self.close.get(), Close::Cut(_)) {
            return;
        }
        self.close.set(Close::Cut(code));
        // Before shutdown: afterwards the kernel no longer says what was unacknowledged.
        self.settle_losses();
        sys::shutdown(self.fd.get(), Shutdown::Both);
        self.notify();
    }

    /// Sends a small control frame in one piece, or cuts the connection: a
    /// partial control frame could never be completed without the task.
    fn send_whole(&self, frame: &[u8]) -> bool {
        let sent = socket::send_some(self.fd(), frame);
        if let Ok(n) = sent {
            self.written.set(self.written.get() + n as u64);
        }
        match sent {
            Ok(n) if n == frame.len() => true,
            _ => {
                self.cut(1006);
                false
            }
        }
    }
}

/// What woke a connection task waiting in [`Conn::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The socket is (probably) readable; the [`READ`] bit was consumed.
    Read,
    /// The socket is (probably) writable; the [`WRITE`] bit was consumed.
    Write,
    /// The core called [`Conn::notify`].
    Notified,
}

/// Resolves at the next readiness in `interest` or notification.
pub struct Wait<'a> {
    conn: &'a Conn,
    interest: u8,
}

impl Future for Wait<'_> {
    type Output = Wake;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Wake> {
        let conn = self.conn;
        if conn.notified.replace(false) {
            return Poll::Ready(Wake::Notified);
        }
        let ready = conn.ready.get();
        if ready & self.interest & WRITE != 0 {
            conn.ready.set(ready & !WRITE);
            return Poll::Ready(Wake::Write);
        }
        if ready & self.interest & READ != 0 {
            conn.ready.set(ready & !READ);
            return Poll::Ready(Wake::Read);
        }
        conn.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// The lingering close of an open connection waits on the core's epoll set.
impl Readiness for Conn {
    fn before_send(&self) {
        self.clear_ready(WRITE);
    }
    fn before_recv(&self) {
        self.clear_ready(READ);
    }
    async fn writable(&self) -> io::Result<()> {
        self.wait(WRITE).await;
        Ok(())
    }
    async fn readable(&self) -> io::Result<()> {
        self.wait(READ).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_stays_small() {
        // The record is all an idle connection costs (plus the registry's
        // and the hub's entries). With the `Rc`'s two counts it is at most
        // 120 bytes: one 128-byte malloc chunk (at 105 it is 144): hence
        // 32-bit clocks and the token's generation without its slot.
        assert!(
            std::mem::size_of::<Conn>() <= 104,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }

    #[test]
    fn a_stamp_reads_back_as_the_time_it_was_taken() {
        let at = 5_000u64;
        assert_eq!(unstamp(stamp(at), at + 30_000), at);
        assert_eq!(unstamp(0, at), 0, "none stays none");
        // Across the 32-bit wrap of the coarse clock.
        let at = (1u64 << 32) - 10;
        assert_eq!(unstamp(stamp(at), at + 40_000), at);
        let at = 3u64 << 32;
        assert_eq!(stamp(at), 1, "0 is stored as 1");
        assert_eq!(
            unstamp(stamp(at), at),
            at,
            "a millisecond ahead reads as now"
        );
        assert_eq!(unstamp(stamp(at), at + 10), at + 1);
    }

    #[test]
    fn a_gateway_token_is_its_generation_and_slot() {
        let conn = Conn::new(-1, 7, 1, 3);
        assert_eq!(conn.conn_id(), Some((3 << 32) | 7));
        conn.detach_id();
        assert_eq!(conn.conn_id(), None);
        assert_eq!(Conn::new(-1, 7, 1, 0).conn_id(), None, "an echo connection");
    }
}
