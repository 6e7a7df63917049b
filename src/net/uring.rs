//! Readiness and input of open WebSocket connections on a per-core io_uring
//! ring (`--io uring`): the same interface to the serving layer as
//! [`super::epoll`], built on [`super::ring`].
//!
//! After the 101 a connection gets one multishot `RECV` (bytes land in the
//! core's provided buffer ring, so an idle connection holds no buffer) and
//! one multishot `POLLOUT` poll (like the epoll set's edge-triggered
//! `EPOLLOUT`: it fires again only after a send found the socket full).
//! A connection's unread bytes stay in the ring's buffers, lent to it (the
//! first parsed in place, [`Reactor::lend`]; the rest read with
//! [`Reactor::recv`] where the epoll path calls `recv(2)`), up to
//! `QUEUE_MAX` of them; beyond, and when the ring runs dry, they are
//! copied into the connection's input and the buffers go back.
//!
//! Output: what the connections a wake serves answer, and the frames the
//! core pushes them, leave in one batch of `SEND`s ([`Reactor::send_batch`]:
//! one `io_uring_enter` for all); what a full socket does not take waits in
//! the connection's output for its `POLLOUT`, as after a `send(2)`.
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

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
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
/// Receive buffers of a core's ring: how many circulate at first and at
/// most (sized by demand: doubled each time they run dry, halved after
/// [`SHRINK_AFTER_MS`] without), and their size.
const MIN_BUFFERS: u16 = 64;
const MAX_BUFFERS: u16 = 2048;
const BUFFER_SIZE: u32 = 16 * 1024;
const SHRINK_AFTER_MS: u64 = 10_000;
/// Submission queue entries of a core's ring.
const ENTRIES: u32 = 1024;
/// Spare input vectors kept for reuse: up to [`SPARES`] of at most
/// [`SPARE_MAX`] bytes, and [`BIG_SPARES`] of up to [`BIG_SPARE_MAX`] (a
/// large message arriving faster than it is read fills one: regrown each
/// time, it would be a fresh mapping and its page faults per message).
const SPARES: usize = 64;
const SPARE_MAX: usize = 64 * 1024;
const BIG_SPARES: usize = 4;
const BIG_SPARE_MAX: usize = 2 * INPUT_CAP;
/// Output vectors a batch of sends emptied, kept for the connections'
/// next answers (a batch serves many connections: a fresh vector each
/// would be a malloc and a free per connection per wake): at most this
/// much memory in all, none larger than [`OUT_SPARE_MAX`].
const OUT_SPARE_BYTES: usize = 1024 * 1024;
const OUT_SPARE_MAX: usize = 16 * 1024;

/// No buffer held.
const NONE: u16 = u16::MAX;
/// Receive buffers a connection may hold unread behind the one it is lent;
/// what arrives beyond them is copied into its input. When the ring runs
/// dry, every connection's buffers are copied out and given back.
const QUEUE_MAX: usize = 8;

/// Per registry slot: the epoch of its current registration, and the
/// receive buffer the connection holds. A connection's unread bytes stay
/// in the ring's buffers, lent to it (the serving layer parses the first
/// in place, see [`Reactor::lend`], and copies the rest out as it reads
/// them): a byte is copied once in user space, as after `recv(2)`.
#[derive(Clone, Copy)]
struct Slot {
    epoch: u32,
    /// The buffer held ([`NONE`]: none), read up to `off` of `len` bytes.
    held: u16,
    /// The peer's stream ended (or the socket failed): after the bytes,
    /// reads return 0.
    end: bool,
    off: u32,
    len: u32,
}

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            epoch: 0,
            held: NONE,
            end: false,
            off: 0,
            len: 0,
        }
    }
}

/// What arrived for one connection beyond its held buffer and was not
/// read yet: more buffers, then bytes copied out of buffers.
#[derive(Default)]
struct Input {
    /// Buffers after the held one, in order (id, length), ahead of `bytes`.
    queued: VecDeque<(u16, u32)>,
    queued_bytes: usize,
    bytes: Vec<u8>,
    /// Read up to here.
    off: usize,
    /// The receive was cancelled for [`INPUT_CAP`]; armed again once read.
    paused: bool,
}

impl Input {
    fn unread(&self) -> usize {
        self.queued_bytes + self.bytes.len() - self.off
    }
}

/// One core's ring and the input of its connections.
pub struct Reactor {
    ring: RefCell<Ring>,
    inputs: RefCell<IdMap<u32, Input>>,
    slots: RefCell<Vec<Slot>>,
    events: RefCell<Vec<Event>>,
    wakes: RefCell<Vec<Rc<Conn>>>,
    spare: RefCell<Vec<Vec<u8>>>,
    big_spare: RefCell<Vec<Vec<u8>>>,
    /// Emptied output vectors, and their capacity in all.
    out_spare: RefCell<Vec<Vec<u8>>>,
    out_spare_bytes: Cell<usize>,
    /// What each send of a batch did.
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
            ring: RefCell::new(Ring::sized(ENTRIES, MAX_BUFFERS, BUFFER_SIZE, MIN_BUFFERS)?),
            inputs: RefCell::default(),
            slots: RefCell::default(),
            events: RefCell::default(),
            wakes: RefCell::default(),
            spare: RefCell::default(),
            big_spare: RefCell::default(),
            out_spare: RefCell::default(),
            out_spare_bytes: Cell::new(0),
            results: RefCell::default(),
        })
    }

    /// How many times the buffer ring ran dry.
    pub fn exhausted(&self) -> u64 {
        self.ring.borrow().exhausted()
    }

    /// Receive buffers in circulation now.
    pub fn buffers(&self) -> u16 {
        self.ring.borrow().buffers()
    }

    /// About once a second (`now` in ms): buffers a quiet core no longer
    /// needs are given back.
    pub fn tune(&self, now: u64) {
        self.ring.borrow_mut().tune(now, SHRINK_AFTER_MS);
    }

    /// The current key of the connection in `slot`.
    fn current(&self, slot: u32) -> u64 {
        let slots = self.slots.borrow();
        key(slot, slots.get(slot as usize).map_or(0, |s| s.epoch))
    }

    /// Starts receiving on (and watching the writability of) socket `fd`
    /// of the connection in registry `slot`, for the rest of its life.
    pub fn add(&self, fd: RawFd, slot: u32) -> io::Result<()> {
        let key = {
            let mut slots = self.slots.borrow_mut();
            if slots.len() <= slot as usize {
                slots.resize(slot as usize + 1, Slot::default());
            }
            let s = &mut slots[slot as usize];
            let epoch = s.epoch.wrapping_add(1) & 0x00ff_ffff;
            *s = Slot {
                epoch,
                ..Slot::default()
            };
            key(slot, epoch)
        };
        self.inputs.borrow_mut().remove(&slot);
        let mut ring = self.ring.borrow_mut();
        ring.arm_recv(fd, key)?;
        ring.poll_writable(fd, key)?;
        // The reactor task may be asleep on the ring: hand these over now.
        ring.submit().map(drop)
    }

    /// The connection is done: its operations are cancelled (they hold the
    /// socket open otherwise), its input is dropped and its socket closed,
    /// the cancellation and the close in one `io_uring_enter`.
    pub fn close(&self, conn: &Conn) {
        self.forget(conn.slot());
        let fd = conn.fd();
        if fd < 0 {
            return;
        }
        if self.ring.borrow_mut().cancel_and_close(fd).is_ok() {
            conn.forget_fd();
        } else {
            let _ = self.ring.borrow_mut().cancel_fd(fd);
            conn.close_fd();
        }
    }

    /// Drops what the ring holds for the connection in `slot` (its
    /// buffers, its input); late completions for it are ignored.
    fn forget(&self, slot: u32) {
        let mut ring = self.ring.borrow_mut();
        if let Some(s) = self.slots.borrow_mut().get_mut(slot as usize) {
            if s.held != NONE {
                ring.recycle(s.held);
            }
            *s = Slot {
                epoch: s.epoch.wrapping_add(1) & 0x00ff_ffff, // late completions are ignored
                ..Slot::default()
            };
        }
        if let Some(input) = self.inputs.borrow_mut().remove(&slot) {
            for (buf, _) in input.queued {
                ring.recycle(buf);
            }
            self.keep_spare(input.bytes);
        }
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
            let mut dry = false;
            for event in events.drain(..) {
                match event {
                    Event::Recv(r) => {
                        dry |= matches!(
                            r,
                            Recv::Rearm {
                                out_of_buffers: true,
                                ..
                            }
                        );
                        self.on_recv(&mut ring, conns, r, &mut wakes);
                    }
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
            if dry {
                // Connections hold what ran the ring dry: copy it out.
                self.unpin(&mut ring);
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
                    self.on_data(ring, slot, key, buf, len, rearm);
                } else {
                    ring.recycle(buf);
                }
                rearm
            }
            Recv::End { error, .. } => {
                if error == Some(libc::ECANCELED) {
                    // Our own doing: a pause (armed again once the input is
                    // read) or a close (the key is stale by now).
                    return;
                }
                if live.is_some() {
                    if let Some(s) = self.slots.borrow_mut().get_mut(slot as usize) {
                        s.end = true;
                    }
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

    /// `len` bytes for the live connection in `slot` arrived in `buf`: held
    /// (lent to the connection) while it has few unread, else copied into
    /// its input.
    fn on_data(&self, ring: &mut Ring, slot: u32, key: u64, buf: u16, len: usize, rearm: bool) {
        let mut slots = self.slots.borrow_mut();
        let Some(s) = slots.get_mut(slot as usize) else {
            ring.recycle(buf);
            return;
        };
        let mut inputs = self.inputs.borrow_mut();
        let unread = inputs.get(&slot).map_or(0, Input::unread);
        if s.held == NONE && unread == 0 {
            (s.held, s.off, s.len) = (buf, 0, len as u32);
            return;
        }
        let input = inputs.entry(slot).or_default();
        if input.off == input.bytes.len() {
            input.bytes.clear();
            input.off = 0;
        }
        if input.bytes.is_empty() && input.queued.len() < QUEUE_MAX {
            input.queued.push_back((buf, len as u32));
            input.queued_bytes += len;
        } else {
            if input.bytes.capacity() == 0 {
                input.bytes = self.spare_vec();
            }
            input.bytes.extend_from_slice(ring.bytes(buf, len));
            ring.recycle(buf);
        }
        if input.unread() > INPUT_CAP && !input.paused {
            input.paused = true;
            if !rearm {
                let _ = ring.cancel_recv(key);
            }
        }
    }

    /// The ring ran dry: every buffer a connection holds is copied into
    /// its input and given back (the receives re-armed by this dispatch
    /// then find buffers again).
    fn unpin(&self, ring: &mut Ring) {
        let mut slots = self.slots.borrow_mut();
        let mut inputs = self.inputs.borrow_mut();
        for (i, s) in slots.iter_mut().enumerate() {
            let slot = i as u32;
            let queued = inputs.get(&slot).is_some_and(|inp| !inp.queued.is_empty());
            if s.held == NONE && !queued {
                continue;
            }
            let mut bytes = self.spare_vec();
            if s.held != NONE {
                bytes.extend_from_slice(&ring.bytes(s.held, s.len as usize)[s.off as usize..]);
                ring.recycle(s.held);
                s.held = NONE;
            }
            let input = inputs.entry(slot).or_default();
            for (buf, len) in input.queued.drain(..) {
                bytes.extend_from_slice(ring.bytes(buf, len as usize));
                ring.recycle(buf);
            }
            input.queued_bytes = 0;
            bytes.extend_from_slice(&input.bytes[input.off..]);
            let old = std::mem::replace(&mut input.bytes, bytes);
            input.off = 0;
            self.keep_spare(old);
        }
    }

    /// After the held buffer of `slot` was read: the next queued one is
    /// held; an input with nothing left goes (and a paused receive is
    /// armed again).
    fn settle(&self, conn: &Conn) {
        let slot = conn.slot();
        let mut slots = self.slots.borrow_mut();
        let Some(s) = slots.get_mut(slot as usize) else {
            return;
        };
        let mut inputs = self.inputs.borrow_mut();
        let Some(input) = inputs.get_mut(&slot) else {
            return;
        };
        if s.held == NONE {
            if let Some((buf, len)) = input.queued.pop_front() {
                (s.held, s.off, s.len) = (buf, 0, len);
                input.queued_bytes -= len as usize;
            }
        }
        if s.held != NONE || input.unread() > 0 {
            return;
        }
        let Some(input) = inputs.remove(&slot) else {
            return;
        };
        drop((slots, inputs));
        if input.paused {
            let mut ring = self.ring.borrow_mut();
            let _ = ring.arm_recv(conn.fd(), self.current(slot));
            let _ = ring.submit();
        }
        self.keep_spare(input.bytes);
    }

    /// Lends the receive buffer `conn` holds to `parse` (which may write
    /// to it: frames are unmasked in place), then gives it back to the
    /// ring. None when the connection holds no buffer (its bytes, if any,
    /// are read with [`Reactor::recv`]). `parse` must take what it needs
    /// out of the slice: the buffer is the kernel's again afterwards.
    pub fn lend(&self, conn: &Conn, parse: impl FnOnce(&mut [u8])) -> Option<usize> {
        let (buf, off, len) = {
            let mut slots = self.slots.borrow_mut();
            let s = slots.get_mut(conn.slot() as usize)?;
            if s.held == NONE {
                return None;
            }
            let held = (s.held, s.off as usize, s.len as usize);
            s.held = NONE;
            held
        };
        let ptr = self.ring.borrow_mut().buffer(buf, len);
        // SAFETY: the buffer was filled by the kernel before its completion
        // and is not in the buffer ring (no receive writes to it) until it is
        // recycled below; the slot no longer names it, so nothing else reads
        // or recycles it meanwhile; no RefCell borrow covers it, so `parse`
        // may use the reactor.
        let data = unsafe { std::slice::from_raw_parts_mut(ptr.add(off), len - off) };
        parse(data);
        self.ring.borrow_mut().recycle(buf);
        self.settle(conn);
        Some(len - off)
    }

    /// Sends what the core pushed to each of `conns` in this flush, in one
    /// `io_uring_enter` (non-blocking sends the kernel completes while
    /// submitting); what a full socket did not take stays queued and the
    /// connection's task waits for it, as after a `send(2)`.
    pub fn send_batch(&self, conns: &[Rc<Conn>], now: u64) {
        let mut batch: Vec<&Conn> = Vec::with_capacity(conns.len());
        for conn in conns {
            if !conn.end_push() {
                continue;
            }
            if conn.sendable() {
                batch.push(conn);
            } else {
                self.keep_output(conn.take_sent(Ok(0), now));
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
        for (conn, sent) in batch.into_iter().zip(results.drain(..)) {
            self.keep_output(conn.take_sent(sent, now));
        }
        *self.results.borrow_mut() = results;
    }

    /// Reads what arrived for `conn` into `buf`, as `recv(2)` would: the
    /// byte count, 0 at the end of the stream, `WouldBlock` when nothing
    /// is there.
    pub fn recv(&self, conn: &Conn, buf: &mut [u8]) -> io::Result<usize> {
        let mut at = 0;
        self.take(conn, buf.len(), |bytes| {
            buf[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        })
    }

    /// Appends up to `max` bytes of what arrived for `conn` to `vec`, as
    /// [`crate::sys::recv_append`] would.
    pub fn recv_append(&self, conn: &Conn, vec: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        // Room for all of `max` at once, as for `recv(2)`: a large frame
        // read in buffer-sized steps would otherwise regrow the vector
        // (past glibc's mmap threshold: a fresh mapping, page faults).
        vec.reserve(max);
        self.take(conn, max, |bytes| vec.extend_from_slice(bytes))
    }

    /// Hands up to `max` unread bytes of `conn` to `put`, in order (held
    /// buffer, queued buffers, copied bytes), giving back each buffer read.
    fn take(&self, conn: &Conn, max: usize, mut put: impl FnMut(&[u8])) -> io::Result<usize> {
        let slot = conn.slot();
        let mut n = 0;
        let end = loop {
            let mut slots = self.slots.borrow_mut();
            let Some(s) = slots.get_mut(slot as usize) else {
                return Err(io::ErrorKind::WouldBlock.into());
            };
            if n == max {
                break false;
            }
            if s.held != NONE {
                let mut ring = self.ring.borrow_mut();
                let avail = &ring.bytes(s.held, s.len as usize)[s.off as usize..];
                let k = avail.len().min(max - n);
                put(&avail[..k]);
                n += k;
                s.off += k as u32;
                if s.off == s.len {
                    ring.recycle(s.held);
                    s.held = NONE;
                    drop((ring, slots));
                    self.settle(conn);
                }
                continue;
            }
            let end = s.end;
            drop(slots);
            let mut inputs = self.inputs.borrow_mut();
            let Some(input) = inputs.get_mut(&slot) else {
                break end;
            };
            let avail = &input.bytes[input.off..];
            if avail.is_empty() {
                break end;
            }
            let k = avail.len().min(max - n);
            put(&avail[..k]);
            n += k;
            input.off += k;
            drop(inputs);
            self.settle(conn);
        };
        match n {
            0 if end => Ok(0),
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    /// An emptied output vector (a batch of sends emptied it), or a new one.
    pub fn spare_output(&self) -> Vec<u8> {
        let v = self.out_spare.borrow_mut().pop().unwrap_or_default();
        (self.out_spare_bytes).set(self.out_spare_bytes.get() - v.capacity());
        v
    }

    /// Keeps an emptied output vector for [`Reactor::spare_output`].
    #[inline]
    fn keep_output(&self, v: Vec<u8>) {
        let cap = v.capacity();
        let total = self.out_spare_bytes.get() + cap;
        if cap == 0 || cap > OUT_SPARE_MAX || total > OUT_SPARE_BYTES {
            return;
        }
        self.out_spare_bytes.set(total);
        self.out_spare.borrow_mut().push(v);
    }

    fn keep_spare(&self, mut bytes: Vec<u8>) {
        bytes.clear();
        if bytes.capacity() <= SPARE_MAX {
            let mut spare = self.spare.borrow_mut();
            if spare.len() < SPARES {
                spare.push(bytes);
            }
        } else if bytes.capacity() <= BIG_SPARE_MAX {
            let mut big = self.big_spare.borrow_mut();
            if big.len() < BIG_SPARES {
                big.push(bytes);
            }
        }
    }

    /// A vector for a new input (a big one first, while there are any:
    /// an input that needs one is the kind that outgrows the rest).
    fn spare_vec(&self) -> Vec<u8> {
        (self.big_spare.borrow_mut().pop())
            .or_else(|| self.spare.borrow_mut().pop())
            .unwrap_or_default()
    }
}
