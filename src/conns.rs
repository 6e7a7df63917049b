//! Where an open connection is known to its core: the per-core registry that
//! the heartbeat sweeper and the drain walk, and the small shared record
//! through which they act on a connection without waking its task.
//!
//! Everything here is core-local (`Rc`, `Cell`): no locks, no atomics.

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

use crate::proto::frame::{encode_close, encode_frame, OpCode};
use crate::sys;

/// Per topic, the first message that never reached the peer.
pub type Lost = Vec<(Arc<str>, u64)>;

/// The part of a connection that its core may look at and act on.
pub struct ConnEntry {
    fd: RawFd,
    /// Coarse time (ms) of the last inbound bytes.
    pub last_seen: Cell<u64>,
    /// Coarse time a heartbeat ping was sent; 0 when none is outstanding.
    pub ping_sent: Cell<u64>,
    /// Coarse time output started waiting on the peer; 0 when none is queued.
    pub out_since: Cell<u64>,
    /// The code of the close frame sent on the core's behalf; 0 when none.
    pub close_sent: Cell<u16>,
    /// A close the connection task must send once its queued output is out.
    pub close_wanted: Cell<Option<(u16, &'static str)>>,
    /// The socket was shut down by the core (dead peer, drain deadline).
    pub cut: Cell<bool>,
    /// Output waiting for the peer to read, in order (empty when idle).
    pub outbox: RefCell<Vec<u8>>,
    /// Bytes of this connection's stream handed to the kernel.
    written: Cell<u64>,
    /// Delivered messages not yet known to have reached the peer: where in
    /// the stream each frame ends, and its topic and sequence number.
    tags: RefCell<VecDeque<(u64, Arc<str>, u64)>>,
    /// Once the connection is abandoned: per topic, the first message that
    /// did not reach the peer (so a resume replays from there).
    lost: RefCell<Option<Lost>>,
    waker: Cell<Option<Waker>>,
    notified: Cell<bool>,
}

/// Resolves when the connection's task was notified (see [`ConnEntry::notify`]).
pub struct Notified<'a>(&'a ConnEntry);

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.notified.replace(false) {
            Poll::Ready(())
        } else {
            self.0.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }
}

impl ConnEntry {
    /// Wakes the connection's task: its outbox or close request changed.
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// A future that resolves at the next [`ConnEntry::notify`].
    pub fn notified(&self) -> Notified<'_> {
        Notified(self)
    }

    /// Queues a complete frame produced elsewhere on this core (fan-out,
    /// replies): sent at once when nothing is queued, else appended. A peer
    /// owed more than `max_backpressure` bytes is not reading: it is cut as a
    /// slow consumer (its socket is full, so no close frame could reach it)
    /// and `false` is returned.
    pub fn push_frame(
        &self,
        frame: &[u8],
        tag: Option<&(Arc<str>, u64)>,
        max_backpressure: usize,
        now: u64,
    ) -> bool {
        if self.cut.get() || self.close_sent.get() != 0 {
            return true; // closing: nothing more is sent
        }
        let mut outbox = self.outbox.borrow_mut();
        if outbox.is_empty() {
            let sent = match self.send_counted(frame) {
                Ok(n) => n,
                Err(_) => {
                    drop(outbox);
                    self.record_tag(frame.len() as u64, tag); // never reached the peer
                    self.cut();
                    return true;
                }
            };
            outbox.extend_from_slice(&frame[sent..]);
            let queued = outbox.len() as u64;
            drop(outbox);
            self.record_tag(queued, tag);
            if queued > 0 {
                self.out_since.set(now);
                self.notify(); // the task must now wait for the socket to drain
            }
            return true;
        }
        if outbox.len() + frame.len() > max_backpressure {
            let queued = outbox.len() as u64;
            drop(outbox);
            self.record_tag(queued + frame.len() as u64, tag);
            // The peer is alive, only slow: the kernel still delivers what it
            // holds before the FIN, so only the queue here is lost.
            self.settle_losses_at(self.written.get());
            self.cut();
            *self.outbox.borrow_mut() = Vec::new();
            return false;
        }
        outbox.extend_from_slice(frame);
        let queued = outbox.len() as u64;
        drop(outbox);
        self.record_tag(queued, tag);
        true
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
            match sys::send(self.fd, &data[sent..]) {
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
        let mut tags = self.tags.borrow_mut();
        tags.push_back((self.written.get() + queued, topic.clone(), *seq));
        if tags.len() >= 1024 {
            // Forget what the peer has acknowledged; one ioctl per 1024 messages.
            let acked = self.acked();
            while tags.front().is_some_and(|t| t.0 <= acked) {
                tags.pop_front();
            }
        }
    }

    /// Stream bytes the peer's TCP has acknowledged: written minus what the
    /// kernel still holds (unsent or unacknowledged).
    fn acked(&self) -> u64 {
        self.written
            .get()
            .saturating_sub(sys::unacked_bytes(self.fd) as u64)
    }

    /// Works out, once, which delivered messages never reached the peer,
    /// counting as delivered only what the peer's TCP acknowledged (the peer
    /// may be gone). Called before the socket is given up.
    pub fn settle_losses(&self) {
        if self.lost.borrow().is_none() {
            self.settle_losses_at(self.acked());
        }
    }

    /// As [`ConnEntry::settle_losses`], counting the first `delivered` bytes
    /// of the stream as delivered.
    fn settle_losses_at(&self, delivered: u64) {
        if self.lost.borrow().is_some() {
            return;
        }
        let acked = delivered;
        let mut first: Vec<(Arc<str>, u64)> = Vec::new();
        for (end, topic, seq) in self.tags.borrow_mut().drain(..) {
            if end > acked && !first.iter().any(|(t, _)| *t == topic) {
                first.push((topic, seq));
            }
        }
        *self.lost.borrow_mut() = Some(first);
    }

    /// The messages (first per topic) that never reached the peer.
    pub fn take_losses(&self) -> Lost {
        self.settle_losses();
        self.lost.borrow_mut().take().unwrap_or_default()
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
            self.close_wanted.set(Some((code, reason)));
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
            sys::shutdown(self.fd, Shutdown::Both);
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
    free: RefCell<Vec<usize>>,
    len: Cell<usize>,
}

/// Removes its connection from the registry when dropped.
pub struct Registration<'a> {
    registry: &'a Registry,
    slot: usize,
    /// The registered entry.
    pub entry: Rc<ConnEntry>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.slots.borrow_mut()[self.slot] = None;
        self.registry.free.borrow_mut().push(self.slot);
        self.registry.len.set(self.registry.len.get() - 1);
    }
}

impl Registry {
    /// Registers a connection on socket `fd`, seen at coarse time `now`.
    pub fn register(&self, fd: RawFd, now: u64) -> Registration<'_> {
        let entry = Rc::new(ConnEntry {
            fd,
            last_seen: Cell::new(now),
            ping_sent: Cell::new(0),
            out_since: Cell::new(0),
            close_sent: Cell::new(0),
            close_wanted: Cell::new(None),
            cut: Cell::new(false),
            outbox: RefCell::new(Vec::new()),
            written: Cell::new(0),
            tags: RefCell::new(VecDeque::new()),
            lost: RefCell::new(None),
            waker: Cell::new(None),
            notified: Cell::new(false),
        });
        let mut slots = self.slots.borrow_mut();
        let slot = match self.free.borrow_mut().pop() {
            Some(slot) => {
                slots[slot] = Some(entry.clone());
                slot
            }
            None => {
                slots.push(Some(entry.clone()));
                slots.len() - 1
            }
        };
        self.len.set(self.len.get() + 1);
        Registration {
            registry: self,
            slot,
            entry,
        }
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
