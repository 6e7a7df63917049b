//! Where an open connection is known to its core: the per-core registry that
//! the heartbeat sweeper, the drain and the readiness reactor walk, and the
//! small shared record through which they act on a connection without waking
//! its task.
//!
//! An idle connection is only its [`ConnEntry`] here (no task, no buffer, no
//! in-flight operation): its task parks it and ends, and the reactor
//! (`reactor.rs`) spawns a new one when the socket becomes readable or the core
//! notifies it. Everything here is core-local (`Rc`, `Cell`): no locks, no atomics.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::hub::ConnId;
use crate::proto::frame::{encode_close, encode_frame, OpCode};
use crate::proto::handshake::Endpoint;
use crate::sys;

/// Per topic, the first message that never reached the peer.
pub type Lost = Vec<(Arc<str>, u64)>;

/// Readiness bit: the socket may have bytes (or end of stream, or an error).
pub const READ: u8 = 1;
/// Readiness bit: the socket may take bytes.
pub const WRITE: u8 = 2;

/// The part of a connection that its core may look at and act on. Kept small:
/// an idle connection is this record and nothing else.
pub struct ConnEntry {
    /// The socket; -1 once closed (so a stale record can never touch a reused
    /// descriptor number).
    fd: Cell<RawFd>,
    /// Index in the core's registry (and the reactor's token).
    slot: u32,
    /// The code of the close frame sent on the core's behalf; 0 when none.
    pub close_sent: Cell<u16>,
    /// The socket was shut down by the core (dead peer, drain deadline).
    pub cut: Cell<bool>,
    notified: Cell<bool>,
    /// No task runs this connection: the reactor spawns one on readiness or notify.
    parked: Cell<bool>,
    /// [`READ`] / [`WRITE`] readiness reported by the reactor and not yet consumed.
    ready: Cell<u8>,
    /// Frames pushed in the current flush wait in the outbox for
    /// [`ConnEntry::flush_pushed`].
    pushing: Cell<bool>,
    /// Which WebSocket endpoint this is.
    pub endpoint: Endpoint,
    /// The hub's token for a gateway connection (0 for none).
    conn_id: ConnId,
    /// Coarse time (ms) of the last inbound bytes.
    pub last_seen: Cell<u64>,
    /// Coarse time a heartbeat ping was sent; 0 when none is outstanding.
    pub ping_sent: Cell<u64>,
    /// Coarse time output started waiting on the peer; 0 when none is queued.
    pub out_since: Cell<u64>,
    /// Bytes of this connection's stream handed to the kernel.
    written: Cell<u64>,
    /// Output waiting for the peer to read, in order (empty, unallocated, when idle).
    pub outbox: RefCell<Vec<u8>>,
    waker: Cell<Option<Waker>>,
    /// Rarely used state, allocated on first use.
    cold: RefCell<Option<Box<Cold>>>,
}

/// Bytes [`ConnEntry::push_frame`] gathers for one connection before it
/// writes them out without waiting for the end of the flush.
const PUSH_BATCH: usize = 16 * 1024;

/// What [`ConnEntry::push_frame`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued as the connection's first frame of this flush: the caller must
    /// call [`ConnEntry::flush_pushed`] when it has pushed everything.
    First,
    /// Queued behind others (or dropped: the connection is closing).
    Queued,
    /// The peer is a slow consumer and was cut.
    SlowConsumer,
}

/// Delivery records kept per connection before asking the kernel what the
/// peer acknowledged: 64 records (2 KiB) per busy subscriber, one ioctl per
/// 64 deliveries.
const PRUNE_TAGS_AT: usize = 64;

/// The parts of a [`ConnEntry`] an echo or idle connection never needs.
#[derive(Default)]
struct Cold {
    /// A close the connection task must send once its queued output is out.
    close_wanted: Option<(u16, &'static str)>,
    /// Delivered messages not yet known to have reached the peer: where in
    /// the stream each frame ends, and its topic and sequence number.
    tags: VecDeque<(u64, Arc<str>, u64)>,
    /// Prune `tags` (one ioctl) when it grows to this many; doubles while
    /// the peer lags, back to [`PRUNE_TAGS_AT`] when it catches up.
    prune_at: usize,
    /// Once the connection is abandoned: per topic, the first message that
    /// did not reach the peer (so a resume replays from there).
    lost: Option<Lost>,
}

/// What woke a connection task waiting in [`ConnEntry::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The socket is (probably) readable; the [`READ`] bit was consumed.
    Read,
    /// The socket is (probably) writable; the [`WRITE`] bit was consumed.
    Write,
    /// The core called [`ConnEntry::notify`].
    Notified,
}

/// Resolves at the next readiness in `interest` or notification.
pub struct Wait<'a> {
    entry: &'a ConnEntry,
    interest: u8,
}

impl Future for Wait<'_> {
    type Output = Wake;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Wake> {
        let entry = self.entry;
        if entry.notified.replace(false) {
            return Poll::Ready(Wake::Notified);
        }
        let ready = entry.ready.get();
        if ready & self.interest & WRITE != 0 {
            entry.ready.set(ready & !WRITE);
            return Poll::Ready(Wake::Write);
        }
        if ready & self.interest & READ != 0 {
            entry.ready.set(ready & !READ);
            return Poll::Ready(Wake::Read);
        }
        entry.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for ConnEntry {
    fn drop(&mut self) {
        self.close_fd();
    }
}

impl ConnEntry {
    /// The socket (-1 once closed).
    pub fn fd(&self) -> RawFd {
        self.fd.get()
    }

    /// The registry slot.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The hub's token of a gateway connection.
    pub fn conn_id(&self) -> Option<ConnId> {
        (self.conn_id != 0).then_some(self.conn_id)
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

    /// Wakes the connection's task: its outbox or close request changed.
    pub fn notify(&self) {
        self.notified.set(true);
        if self.parked.get() {
            crate::reactor::request_resume(self.slot);
        } else if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Waits for readiness in `interest` ([`READ`] | [`WRITE`]) or a notification.
    pub fn wait(&self, interest: u8) -> Wait<'_> {
        Wait {
            entry: self,
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

    /// A close the core asked for while output was queued, if any.
    pub fn take_close_wanted(&self) -> Option<(u16, &'static str)> {
        self.cold.borrow_mut().as_mut()?.close_wanted.take()
    }

    fn cold_mut(&self) -> std::cell::RefMut<'_, Cold> {
        std::cell::RefMut::map(self.cold.borrow_mut(), |c| {
            &mut **c.get_or_insert_with(Default::default)
        })
    }

    /// Queues a complete frame produced elsewhere on this core (fan-out,
    /// replies). The first frame a connection gets in one flush of the hub
    /// returns [`Pushed::First`]: the caller then calls
    /// [`ConnEntry::flush_pushed`] once it has pushed everything, so all the
    /// frames one flush gives a connection leave in one `send` (a publisher's
    /// burst reaches each subscriber as one write, not one per message).
    /// A peer owed more than `max_backpressure` bytes that its socket refused
    /// is not reading: it is cut as a slow consumer (its socket is full, so no
    /// close frame could reach it).
    pub fn push_frame(
        &self,
        frame: &[u8],
        tag: Option<&(Arc<str>, u64)>,
        max_backpressure: usize,
    ) -> Pushed {
        if self.cut.get() || self.close_sent.get() != 0 {
            return Pushed::Queued; // closing: nothing more is sent
        }
        let mut outbox = self.outbox.borrow_mut();
        let mut first = false;
        if self.pushing.get() {
            if outbox.len() + frame.len() > max_backpressure.min(PUSH_BATCH) {
                // Enough for one write: out with it before queueing more.
                drop(outbox);
                if self.flush_outbox().is_err() {
                    let queued = (self.outbox.borrow().len() + frame.len()) as u64;
                    self.record_tag(queued, tag); // never reached the peer
                    self.cut();
                    return Pushed::Queued;
                }
                outbox = self.outbox.borrow_mut();
            }
        } else if outbox.is_empty() {
            self.pushing.set(true);
            first = true;
        }
        // Bytes in the outbox beyond this flush's own were refused by the socket.
        if !outbox.is_empty() && outbox.len() + frame.len() > max_backpressure {
            let queued = outbox.len() as u64;
            drop(outbox);
            self.record_tag(queued + frame.len() as u64, tag);
            // The peer is alive, only slow: the kernel still delivers what it
            // holds before the FIN, so only the queue here is lost.
            self.settle_losses_at(self.written.get());
            self.cut();
            *self.outbox.borrow_mut() = Vec::new();
            return Pushed::SlowConsumer;
        }
        outbox.extend_from_slice(frame);
        let queued = outbox.len() as u64;
        drop(outbox);
        self.record_tag(queued, tag);
        if first {
            Pushed::First
        } else {
            Pushed::Queued
        }
    }

    /// Sends what [`ConnEntry::push_frame`] queued since it returned
    /// [`Pushed::First`], as far as the socket takes it now; the connection's
    /// task is told to wait for the socket to drain the rest.
    pub fn flush_pushed(&self, now: u64) {
        self.pushing.set(false);
        if self.cut.get() {
            return;
        }
        if self.flush_outbox().is_err() {
            self.cut();
            return;
        }
        if !self.outbox.borrow().is_empty() {
            if self.out_since.get() == 0 {
                self.out_since.set(now);
            }
            self.notify(); // the task must now wait for the socket to drain
        }
    }

    /// Sends `batch` behind whatever is queued, as far as the socket takes it
    /// now; the rest is queued.
    pub fn send_batch(&self, batch: &[u8]) -> io::Result<()> {
        let mut outbox = self.outbox.borrow_mut();
        if !outbox.is_empty() {
            outbox.extend_from_slice(batch);
            drop(outbox);
            return self.flush_outbox();
        }
        let sent = self.send_counted(batch)?;
        outbox.extend_from_slice(&batch[sent..]);
        Ok(())
    }

    /// Sends as much of the queue as the socket takes now.
    pub fn flush_outbox(&self) -> io::Result<()> {
        let mut outbox = self.outbox.borrow_mut();
        let sent = self.send_counted(&outbox)?;
        outbox.drain(..sent);
        if outbox.is_empty() {
            *outbox = Vec::new();
        }
        Ok(())
    }

    /// Non-blocking sends until `data` is out or the socket is full; counts
    /// the bytes that left.
    fn send_counted(&self, data: &[u8]) -> io::Result<usize> {
        let mut sent = 0;
        while sent < data.len() {
            match sys::send(self.fd.get(), &data[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.written.set(self.written.get() + sent as u64);
                    return Err(e);
                }
            }
        }
        self.written.set(self.written.get() + sent as u64);
        Ok(sent)
    }

    /// Remembers a delivered message that ends `queued` bytes past what the
    /// kernel has taken.
    fn record_tag(&self, queued: u64, tag: Option<&(Arc<str>, u64)>) {
        let Some((topic, seq)) = tag else { return };
        let mut guard = self.cold_mut();
        let cold = &mut *guard;
        let tags = &mut cold.tags;
        tags.push_back((self.written.get() + queued, topic.clone(), *seq));
        if tags.len() >= cold.prune_at.max(PRUNE_TAGS_AT) {
            // Forget what the peer has acknowledged.
            let acked = self.acked();
            while tags.front().is_some_and(|t| t.0 <= acked) {
                tags.pop_front();
            }
            cold.prune_at = if tags.len() >= PRUNE_TAGS_AT / 2 {
                tags.len() * 2
            } else {
                if tags.capacity() > 4 * PRUNE_TAGS_AT {
                    tags.shrink_to(2 * PRUNE_TAGS_AT); // a lag is over
                }
                PRUNE_TAGS_AT
            };
        }
    }

    /// Stream bytes the peer's TCP has acknowledged: written minus what the
    /// kernel still holds (unsent or unacknowledged).
    fn acked(&self) -> u64 {
        self.written
            .get()
            .saturating_sub(sys::unacked_bytes(self.fd.get()) as u64)
    }

    /// Works out, once, which delivered messages never reached the peer,
    /// counting as delivered only what the peer's TCP acknowledged (the peer
    /// may be gone). Called before the socket is given up.
    pub fn settle_losses(&self) {
        let unsettled = matches!(&*self.cold.borrow(), Some(c) if c.lost.is_none());
        if unsettled {
            self.settle_losses_at(self.acked());
        }
    }

    /// As [`ConnEntry::settle_losses`], counting the first `delivered` bytes
    /// of the stream as delivered.
    fn settle_losses_at(&self, delivered: u64) {
        let mut cold = self.cold.borrow_mut();
        // No record yet: no message was ever delivered, so none can be lost.
        let Some(cold) = cold.as_mut() else { return };
        if cold.lost.is_some() {
            return;
        }
        let acked = delivered;
        let mut first: Vec<(Arc<str>, u64)> = Vec::new();
        for (end, topic, seq) in cold.tags.drain(..) {
            if end > acked && !first.iter().any(|(t, _)| *t == topic) {
                first.push((topic, seq));
            }
        }
        cold.tags = VecDeque::new(); // settled: the queue's memory goes too
        cold.lost = Some(first);
    }

    /// The messages (first per topic) that never reached the peer.
    pub fn take_losses(&self) -> Lost {
        self.settle_losses();
        let mut cold = self.cold.borrow_mut();
        cold.as_mut()
            .and_then(|c| c.lost.take())
            .unwrap_or_default()
    }

    /// Whether the connection task has output queued (a frame may be half-sent).
    pub fn output_pending(&self) -> bool {
        self.out_since.get() != 0
    }

    /// Sends a ping now, unless output is queued. A peer whose socket cannot
    /// take two bytes is not reading: it is cut.
    pub fn send_ping(&self, now: u64) {
        if self.output_pending()
            || !self.outbox.borrow().is_empty()
            || self.cut.get()
            || self.close_sent.get() != 0
        {
            return;
        }
        let mut frame = Vec::with_capacity(2);
        encode_frame(&mut frame, OpCode::Ping, &[]);
        if self.send_whole(&frame) {
            self.ping_sent.set(now);
        }
    }

    /// Starts a close handshake with `code`: sent now if nothing is queued,
    /// otherwise by the connection task right after its queued output.
    pub fn request_close(&self, code: u16, reason: &'static str) {
        if self.cut.get() || self.close_sent.get() != 0 {
            return;
        }
        if self.output_pending() || !self.outbox.borrow().is_empty() {
            self.cold_mut().close_wanted = Some((code, reason));
            self.notify();
            return;
        }
        let mut frame = Vec::with_capacity(32);
        encode_close(&mut frame, code, reason);
        if self.send_whole(&frame) {
            self.close_sent.set(code);
        }
    }

    /// Shuts the socket down; the connection task then sees end of stream.
    pub fn cut(&self) {
        if !self.cut.replace(true) {
            // Before shutdown: afterwards the kernel no longer says what was unacknowledged.
            self.settle_losses();
            sys::shutdown(self.fd.get(), Shutdown::Both);
            self.notify();
        }
    }

    /// Sends a small control frame in one piece, or cuts the connection: a
    /// partial control frame could never be completed without the task.
    fn send_whole(&self, frame: &[u8]) -> bool {
        match self.send_counted(frame) {
            Ok(n) if n == frame.len() => true,
            _ => {
                self.cut();
                false
            }
        }
    }
}

/// One core's open WebSocket connections.
#[derive(Default)]
pub struct Registry {
    slots: RefCell<Vec<Option<Rc<ConnEntry>>>>,
    free: RefCell<Vec<u32>>,
    len: Cell<usize>,
}

impl Registry {
    /// Registers a connection on socket `fd` (the record owns it from now
    /// on), seen at coarse time `now`. It starts writable (the first send
    /// finds out) and not readable: the reactor's registration, which must
    /// follow, reports bytes that are already there, so no `recv` is spent
    /// on a client that is still waiting for us.
    pub fn register(
        &self,
        fd: RawFd,
        now: u64,
        endpoint: Endpoint,
        conn_id: Option<ConnId>,
    ) -> Rc<ConnEntry> {
        let mut slots = self.slots.borrow_mut();
        let slot = match self.free.borrow_mut().pop() {
            Some(slot) => slot,
            None => {
                slots.push(None);
                (slots.len() - 1) as u32
            }
        };
        let entry = Rc::new(ConnEntry {
            fd: Cell::new(fd),
            slot,
            close_sent: Cell::new(0),
            cut: Cell::new(false),
            notified: Cell::new(false),
            parked: Cell::new(false),
            ready: Cell::new(WRITE),
            pushing: Cell::new(false),
            endpoint,
            conn_id: conn_id.unwrap_or(0),
            last_seen: Cell::new(now),
            ping_sent: Cell::new(0),
            out_since: Cell::new(0),
            written: Cell::new(0),
            outbox: RefCell::new(Vec::new()),
            waker: Cell::new(None),
            cold: RefCell::new(None),
        });
        slots[slot as usize] = Some(entry.clone());
        self.len.set(self.len.get() + 1);
        entry
    }

    /// Removes a connection (its task is ending).
    pub fn remove(&self, entry: &ConnEntry) {
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[entry.slot as usize];
        if slot.as_deref().is_some_and(|e| std::ptr::eq(e, entry)) {
            *slot = None;
            self.free.borrow_mut().push(entry.slot);
            self.len.set(self.len.get() - 1);
        }
    }

    /// The connection in `slot`, if any.
    pub fn get(&self, slot: u32) -> Option<Rc<ConnEntry>> {
        self.slots.borrow().get(slot as usize)?.clone()
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.len.get()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len.get() == 0
    }

    /// Calls `f` on every open connection.
    pub fn for_each(&self, mut f: impl FnMut(&ConnEntry)) {
        for entry in self.slots.borrow().iter().flatten() {
            f(entry);
        }
    }

    /// The open connections right now (for work spread over time).
    pub fn snapshot(&self) -> Vec<Rc<ConnEntry>> {
        self.slots.borrow().iter().flatten().cloned().collect()
    }
}
