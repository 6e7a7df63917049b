//! Readiness and input of open WebSocket connections on a per-core io_uring
//! ring (`--io uring`): the same interface to the serving layer as
//! [`super::epoll`], built on [`super::ring`].
//!
//! After the 101 a connection gets one multishot `RECV` (bytes land in the
//! core's provided buffer ring, so an idle connection holds no buffer) and
//! one multishot `POLLOUT` poll (like the epoll set's edge-triggered
//! `EPOLLOUT`: it fires again only after a send found the socket full).
//! Each buffer's bytes are copied into the connection's input at once and
//! the buffer goes back to the ring, so the ring never waits on a slow
//! parser; the serving layer reads that input with [`Reactor::recv`] where
//! the epoll path calls `recv(2)`.
//!
//! Bounded: a connection's input holds at most [`INPUT_CAP`] bytes (plus
//! what was in flight): past it the receive is cancelled, and armed again
//! once the connection has read its input. The kernel's socket buffer then
//! fills and TCP's flow control holds the peer back, as on epoll when the
//! gateway stops reading a peer owed too much.
//!
//! Keys: a completion names its connection by registry slot and an epoch
//! the slot gets on each registration, so a late completion for a closed
//! connection never reaches the one that reuses its slot.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

use super::conn::Wakeup;
use super::conn::{Conn, READ, WRITE};
use super::registry::Registry;
use super::ring::{Event, Recv, Ring};
use super::wakeups;
use crate::sys::hash::IdMap;

/// Input a connection may hold before its receive is paused.
pub const INPUT_CAP: usize = 256 * 1024;
/// Receive buffers of a core's ring, and their size.
const BUFFERS: u16 = 512;
const BUFFER_SIZE: u32 = 4096;
/// Submission queue entries of a core's ring.
const ENTRIES: u32 = 1024;
/// Spare input vectors kept for reuse (each at most [`SPARE_MAX`] bytes).
const SPARES: usize = 64;
const SPARE_MAX: usize = 64 * 1024;

/// What arrived for one connection and was not read yet.
#[derive(Default)]
struct Input {
    bytes: Vec<u8>,
    /// Read up to here.
    off: usize,
    /// The peer's stream ended (or the socket failed): after the bytes,
    /// reads return 0.
    end: bool,
    /// The receive was cancelled for [`INPUT_CAP`]; armed again once read.
    paused: bool,
}

/// One core's ring and the input of its connections.
pub struct Reactor {
    ring: RefCell<Ring>,
    inputs: RefCell<IdMap<u32, Input>>,
    /// Per registry slot: the epoch of its current registration.
    epochs: RefCell<Vec<u32>>,
    events: RefCell<Vec<Event>>,
    wakes: RefCell<Vec<Rc<Conn>>>,
    spare: RefCell<Vec<Vec<u8>>>,
    /// The connections of a batch of sends, and what each send did.
    batch: RefCell<Vec<Rc<Conn>>>,
    results: RefCell<Vec<io::Result<usize>>>,
}

fn key(slot: u32, epoch: u32) -> u64 {
    (u64::from(epoch & 0x00ff_ffff) << 32) | u64::from(slot)
}

fn split(key: u64) -> (u32, u32) {
    (key as u32, (key >> 32) as u32)
}

impl Reactor {
    /// A new ring with its buffer ring registered.
    pub fn new() -> io::Result<Reactor> {
        Ok(Reactor {
            ring: RefCell::new(Ring::new(ENTRIES, BUFFERS, BUFFER_SIZE)?),
            inputs: RefCell::default(),
            epochs: RefCell::default(),
            events: RefCell::default(),
            wakes: RefCell::default(),
            spare: RefCell::default(),
            batch: RefCell::default(),
            results: RefCell::default(),
        })
    }

    /// How many times the buffer ring ran dry.
    pub fn exhausted(&self) -> u64 {
        self.ring.borrow().exhausted()
    }

    /// The current key of the connection in `slot`.
    fn current(&self, slot: u32) -> u64 {
        let epochs = self.epochs.borrow();
        key(slot, epochs.get(slot as usize).copied().unwrap_or(0))
    }

    /// Starts receiving on (and watching the writability of) socket `fd`
    /// of the connection in registry `slot`, for the rest of its life.
    pub fn add(&self, fd: RawFd, slot: u32) -> io::Result<()> {
        let key = {
            let mut epochs = self.epochs.borrow_mut();
            if epochs.len() <= slot as usize {
                epochs.resize(slot as usize + 1, 0);
            }
            let e = &mut epochs[slot as usize];
            *e = e.wrapping_add(1) & 0x00ff_ffff;
            key(slot, *e)
        };
        self.inputs.borrow_mut().remove(&slot);
        let mut ring = self.ring.borrow_mut();
        ring.arm_recv(fd, key)?;
        ring.poll_writable(fd, key)?;
        // The reactor task may be asleep on the ring: hand these over now.
        ring.submit().map(drop)
    }

    /// The connection in `slot` is closing: its operations are cancelled
    /// (they hold the socket open otherwise) and its input is dropped.
    /// Call right before closing the socket.
    pub fn remove(&self, fd: RawFd, slot: u32) {
        if let Some(e) = self.epochs.borrow_mut().get_mut(slot as usize) {
            *e = e.wrapping_add(1) & 0x00ff_ffff; // late completions are ignored
        }
        if let Some(input) = self.inputs.borrow_mut().remove(&slot) {
            self.keep_spare(input.bytes);
        }
        let _ = self.ring.borrow_mut().cancel_fd(fd);
    }

    /// The ring's descriptor: readable while completions wait (monoio
    /// waits on a duplicate of it).
    pub fn fd(&self) -> RawFd {
        self.ring.borrow().fd()
    }

    /// Takes every completion: bytes into the connections' input, readiness
    /// into the connections; parked connections with work go to `wake`
    /// (after the ring is let go of, so serving them may use it).
    pub fn dispatch(&self, conns: &Registry, mut wake: impl FnMut(Wakeup)) {
        let mut events = std::mem::take(&mut *self.events.borrow_mut());
        let mut wakes = std::mem::take(&mut *self.wakes.borrow_mut());
        {
            let mut ring = self.ring.borrow_mut();
            ring.complete(|e| events.push(e));
            for event in events.drain(..) {
                match event {
                    Event::Recv(r) => self.on_recv(&mut ring, conns, r, &mut wakes),
                    Event::Writable { key, rearm } => {
                        let Some(conn) = self.live(conns, key) else {
                            continue;
                        };
                        conn.on_ready(WRITE);
                        if rearm {
                            let _ = ring.poll_writable(conn.fd(), key);
                        }
                    }
                    Event::Sent { .. } | Event::Accepted { .. } => {}
                }
            }
            let _ = ring.submit();
        }
        *self.events.borrow_mut() = events;
        for conn in wakes.drain(..) {
            wake(Wakeup::Readable(conn));
        }
        *self.wakes.borrow_mut() = wakes;
    }

    /// The connection a completion with `key` is for, if it is still the
    /// registration that started the operation.
    fn live(&self, conns: &Registry, key: u64) -> Option<Rc<Conn>> {
        let (slot, _) = split(key);
        (self.current(slot) == key)
            .then(|| conns.get(slot))
            .flatten()
    }

    fn on_recv(&self, ring: &mut Ring, conns: &Registry, r: Recv, wakes: &mut Vec<Rc<Conn>>) {
        let key = r.key();
        let (slot, _) = split(key);
        let live = self.live(conns, key);
        let rearm = match r {
            Recv::Data {
                buf, len, rearm, ..
            } => {
                if live.is_some() {
                    let mut inputs = self.inputs.borrow_mut();
                    let input = inputs.entry(slot).or_insert_with(|| Input {
                        bytes: self.spare.borrow_mut().pop().unwrap_or_default(),
                        ..Input::default()
                    });
                    input.bytes.extend_from_slice(ring.bytes(buf, len));
                    if input.bytes.len() - input.off > INPUT_CAP && !input.paused {
                        input.paused = true;
                        if !rearm {
                            let _ = ring.cancel_recv(key);
                        }
                    }
                }
                ring.recycle(buf);
                rearm
            }
            Recv::End { error, .. } => {
                if error == Some(libc::ECANCELED) {
                    // Our own doing: a pause (armed again once the input is
                    // read) or a close (the key is stale by now).
                    return;
                }
                if live.is_some() {
                    self.inputs.borrow_mut().entry(slot).or_default().end = true;
                }
                false
            }
            Recv::Rearm { .. } => true,
        };
        let Some(conn) = live else {
            return;
        };
        if rearm && !self.inputs.borrow().get(&slot).is_some_and(|i| i.paused) {
            let _ = ring.arm_recv(conn.fd(), key);
        }
        if conn.on_ready(READ) {
            wakes.push(conn);
        }
    }

    /// Sends what the core pushed to each of `conns` in this flush, in one
    /// `io_uring_enter` (non-blocking sends the kernel completes while
    /// submitting); what a full socket did not take stays queued and the
    /// connection's task waits for it, as after a `send(2)`.
    pub fn send_batch(&self, conns: &[Rc<Conn>], now: u64) {
        let mut batch = std::mem::take(&mut *self.batch.borrow_mut());
        batch.clear();
        for conn in conns {
            if !conn.end_push() {
                continue;
            }
            if conn.sendable() {
                batch.push(conn.clone());
            } else {
                conn.take_sent(Ok(0), now);
            }
        }
        let mut results = std::mem::take(&mut *self.results.borrow_mut());
        {
            // Every outbox is borrowed (shared) until the sends are done.
            let outs: Vec<std::cell::Ref<'_, Vec<u8>>> =
                batch.iter().map(|c| c.pushed_output()).collect();
            let sends: Vec<(RawFd, &[u8])> = (batch.iter())
                .zip(&outs)
                .map(|(c, out)| (c.fd(), out.as_slice()))
                .collect();
            let mut ring = self.ring.borrow_mut();
            ring.send_now(&sends, &mut results);
            if ring.has_stash() {
                wakeups::request_dispatch();
            }
        }
        for (conn, sent) in batch.drain(..).zip(results.drain(..)) {
            conn.take_sent(sent, now);
        }
        *self.batch.borrow_mut() = batch;
        *self.results.borrow_mut() = results;
    }

    /// Reads what arrived for `conn` into `buf`, as `recv(2)` would: the
    /// byte count, 0 at the end of the stream, `WouldBlock` when nothing
    /// is there.
    pub fn recv(&self, conn: &Conn, buf: &mut [u8]) -> io::Result<usize> {
        self.take(conn, buf.len(), |bytes| {
            buf[..bytes.len()].copy_from_slice(bytes)
        })
    }

    /// Appends up to `max` bytes of what arrived for `conn` to `vec`, as
    /// [`crate::sys::recv_append`] would.
    pub fn recv_append(&self, conn: &Conn, vec: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        self.take(conn, max, |bytes| vec.extend_from_slice(bytes))
    }

    fn take(&self, conn: &Conn, max: usize, put: impl FnOnce(&[u8])) -> io::Result<usize> {
        let slot = conn.slot();
        let mut inputs = self.inputs.borrow_mut();
        let Some(input) = inputs.get_mut(&slot) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let avail = &input.bytes[input.off..];
        if avail.is_empty() {
            return if input.end {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = avail.len().min(max);
        put(&avail[..n]);
        input.off += n;
        if input.off < input.bytes.len() || input.end {
            return Ok(n);
        }
        // All read: the input goes (its vector kept for reuse), and a
        // paused receive starts again.
        let Some(input) = inputs.remove(&slot) else {
            return Ok(n);
        };
        drop(inputs);
        if input.paused {
            let mut ring = self.ring.borrow_mut();
            let _ = ring.arm_recv(conn.fd(), self.current(slot));
            let _ = ring.submit();
        }
        self.keep_spare(input.bytes);
        Ok(n)
    }

    fn keep_spare(&self, mut bytes: Vec<u8>) {
        let mut spare = self.spare.borrow_mut();
        if spare.len() < SPARES && bytes.capacity() <= SPARE_MAX {
            bytes.clear();
            spare.push(bytes);
        }
    }
}
