//! The only way into a core's [`Hub`]: [`Core::with_hub`] runs a closure on
//! it and then carries out everything the hub asked for (frames to the
//! core's connections, mail to other cores, engine requests, publish-API
//! answers), so no caller can forget to. Frames for one connection are
//! gathered and leave in one `send` at the end of the call, or at the end of
//! the enclosing [`Core::hub_batch`] (see [`Conn::push_frame`]); on the ring
//! a connection's answers to its own frames join them there
//! ([`Core::send_answers`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::Core;
use crate::hub::{ConnId, DirectCount, DirectTarget, EngineReply, Hub, Output};
use crate::net::conn::{Conn, Pushed};
use crate::net::mailbox::CoreMsg;
use crate::net::reactor::DataPath;
use crate::proto::extensions::Deflate;
use crate::proto::frame::data_frame_payload;
use crate::proto::handshake::{finish_101, HEAD_101_LEN};
use crate::sys::log::{self, Level};

/// Answers of one read batch larger than this go out at once (the batch
/// of sends saves a system call per connection, which matters for small
/// messages only).
const ANSWERS_WAIT_MAX: usize = 16 * 1024;
/// Answers that wait for the end of a batch, summed over its connections:
/// past this, everything queued is sent.
const ANSWERS_BATCH_MAX: usize = 256 * 1024;
/// Entries of [`HubDriver::pushed`] kept while no flush is under way.
const IDLE_PUSHED: usize = 64;

/// A core's hub and what its outputs are carried out on.
pub struct HubDriver {
    hub: RefCell<Hub>,
    /// Connections with frames gathered since the last send (reused list).
    pushed: RefCell<Vec<Rc<Conn>>>,
    /// Open [`Core::hub_batch`] calls.
    batch: Cell<u32>,
    /// Bytes of answers queued since the last send ([`Core::send_answers`]).
    answers: Cell<usize>,
    /// Publish-API requests waiting for their sequence number.
    admin_waiters: RefCell<HashMap<u64, Rc<AdminWaiter>>>,
    /// Direct-message requests waiting for every core's count.
    direct_waiters: RefCell<HashMap<u64, Rc<DirectWaiter>>>,
}

impl HubDriver {
    /// A driver for `hub`.
    pub fn new(hub: Hub) -> HubDriver {
        HubDriver {
            hub: RefCell::new(hub),
            pushed: RefCell::default(),
            batch: Cell::new(0),
            answers: Cell::new(0),
            admin_waiters: RefCell::default(),
            direct_waiters: RefCell::default(),
        }
    }
}

impl Core {
    /// Runs `f` on this core's hub, then carries out what it asked for.
    pub fn with_hub<R>(&self, f: impl FnOnce(&mut Hub) -> R) -> R {
        let r = f(&mut self.hub.hub.borrow_mut());
        self.carry_out();
        if self.hub.batch.get() == 0 {
            self.send_pushed();
        }
        r
    }

    /// Runs `f`, whose [`Core::with_hub`] calls leave the frames they give a
    /// connection queued until `f` returns: then each connection gets them
    /// in one `send` (a burst of commands read at once reaches each
    /// subscriber as one write).
    pub fn hub_batch<R>(&self, f: impl FnOnce() -> R) -> R {
        let driver = &self.hub;
        driver.batch.set(driver.batch.get() + 1);
        let r = f();
        driver.batch.set(driver.batch.get() - 1);
        if driver.batch.get() == 0 {
            self.send_pushed();
        }
        r
    }

    /// Reads the hub (nothing to carry out).
    pub fn read_hub<R>(&self, f: impl FnOnce(&Hub) -> R) -> R {
        f(&self.hub.hub.borrow())
    }

    /// The gateway connection the hub knows as `id` (an index into the
    /// registry: the id carries the slot).
    pub fn gateway_conn(&self, id: ConnId) -> Option<Rc<Conn>> {
        self.conns.with_gateway(id, Rc::clone)
    }

    /// Carries out every output the hub has queued; frames wait in the
    /// connections' outboxes for [`Core::send_pushed`].
    fn carry_out(&self) {
        loop {
            let Some(out) = self.hub.hub.borrow_mut().poll_output() else {
                break;
            };
            match out {
                Output::Send { conn, frame, tag } => {
                    let tag = tag.as_ref().map(|(t, seq)| (t, *seq));
                    self.push(conn, &mut Forms::new(&frame), tag);
                }
                Output::Deliver {
                    conns,
                    frame,
                    topic,
                    seq,
                } => {
                    // One frame for every subscriber on this core, and one
                    // compressed form for all those that agreed.
                    let mut forms = Forms::new(&frame);
                    for conn in conns {
                        self.push(conn, &mut forms, Some((&topic, seq)));
                    }
                }
                Output::Accept { conn, session } => {
                    if let Some(c) = self.gateway_conn(conn) {
                        let mut tail = Vec::with_capacity(160);
                        finish_101(&mut tail, c.deflate(), &self.shared.cookie, session);
                        c.accept(HEAD_101_LEN, &tail);
                    }
                }
                Output::Close { conn, why } => {
                    if let Some(c) = self.gateway_conn(conn) {
                        c.request_close(why, self.now());
                    }
                }
                Output::Mail { core: to, msg } => self.shared.mailboxes[to].post(CoreMsg::Hub(msg)),
                Output::AdminPublished { request, seq } => {
                    let waiter = self.hub.admin_waiters.borrow_mut().remove(&request);
                    if let Some(waiter) = waiter {
                        waiter.complete(seq);
                    }
                }
                Output::AdminDirect {
                    request,
                    count,
                    more,
                } => {
                    let mut waiters = self.hub.direct_waiters.borrow_mut();
                    if let Some(waiter) = waiters.get(&request) {
                        if waiter.add(count, more) {
                            waiters.remove(&request);
                        }
                    }
                }
                #[cfg(feature = "backend")]
                Output::Connected {
                    session,
                    peer,
                    user,
                    resumed,
                } => self.event_connect(session, peer, user, resumed),
                #[cfg(not(feature = "backend"))]
                Output::Connected { .. } => {}
                Output::Engine { id, op } => {
                    let sent = (self.engine()).is_some_and(|e| e.submit(id, &op, self.tick()));
                    if !sent {
                        // Redis is down: the hub serves it locally.
                        let now = self.now();
                        let mut hub = self.hub.hub.borrow_mut();
                        hub.engine_reply(id, EngineReply::Failed, now);
                    }
                }
            }
        }
        let hub = self.hub.hub.borrow();
        self.stats
            .set_sessions(hub.stats, hub.session_count(), hub.topic_count());
    }

    fn push(&self, id: ConnId, forms: &mut Forms<'_>, tag: Option<(&std::sync::Arc<str>, u64)>) {
        let max_backpressure = self.shared.config.max_backpressure;
        let pushed = self.conns.with_gateway(id, |conn| {
            let (frame, sizes) = match conn.deflate() {
                None => (forms.plain, None),
                Some(deflate) => {
                    let (frame, wire, plain) = forms.for_peer(self, deflate);
                    (frame, Some((wire, plain)))
                }
            };
            let pushed = conn.push_frame(frame, tag, max_backpressure);
            if pushed == Pushed::First {
                self.hub.pushed.borrow_mut().push(conn.clone());
            }
            (pushed, frame.len(), sizes)
        });
        let Some((pushed, len, sizes)) = pushed else {
            return;
        };
        if let Some((wire, plain)) = sizes {
            self.stats.compression_out(wire as u64, plain as u64);
        }
        match pushed {
            Pushed::First | Pushed::Queued => self.stats.sent(1, len as u64),
            Pushed::SlowConsumer => {
                self.stats.slow_consumer_close();
                log::emit(
                    Level::Info,
                    "slow_consumer",
                    &[("core", &self.index), ("conn", &id)],
                );
            }
        }
    }

    /// Sends `frame` to gateway connection `id` if it is still open, the
    /// way hub output goes (with the enclosing [`Core::hub_batch`]'s).
    pub fn push_to(&self, id: ConnId, frame: &[u8]) {
        self.push(id, &mut Forms::new(frame), None);
        if self.hub.batch.get() == 0 {
            self.send_pushed();
        }
    }

    /// Sends the answers of `conn`'s read batch. On the ring, inside a
    /// [`Core::hub_batch`] (the reactor's dispatch: every connection a wake
    /// serves), they wait for the batch's end and leave with every other
    /// connection's answers and pushed frames in one `io_uring_enter`;
    /// otherwise (and on epoll) they go now, with one `send`. What the
    /// socket does not take waits in the connection's output either way.
    pub fn send_answers(&self, conn: &Rc<Conn>, answers: &[u8]) -> io::Result<()> {
        let wait = !answers.is_empty()
            && answers.len() <= ANSWERS_WAIT_MAX
            && self.hub.batch.get() > 0
            && self.reactor.path() == DataPath::Uring;
        let queued = if wait {
            conn.queue_answers(answers, || self.reactor.spare_output())
        } else {
            None
        };
        let Some(first) = queued else {
            return conn.send_batch(answers);
        };
        if first {
            self.hub.pushed.borrow_mut().push(conn.clone());
        }
        let waiting = self.hub.answers.get() + answers.len();
        self.hub.answers.set(waiting);
        if waiting > ANSWERS_BATCH_MAX {
            // Enough for one batch of sends: out with them now, so a wake
            // that serves many busy connections holds little output.
            self.send_pushed();
        }
        Ok(())
    }

    /// Sends what [`Core::carry_out`] gathered, one `send` per connection.
    fn send_pushed(&self) {
        self.hub.answers.set(0);
        if self.hub.pushed.borrow().is_empty() {
            return; // the common case for a batch of echo frames
        }
        let mut pushed = self.hub.pushed.take();
        let now = self.now();
        if pushed.len() > 1 && self.reactor.send_batch(&pushed, now) {
            pushed.clear();
        }
        for conn in pushed.drain(..) {
            conn.flush_pushed(now);
        }
        self.hub.pushed.replace(pushed);
    }

    /// Gives back what a burst grew in the hub's queues and the list of
    /// connections to send to, once they are empty (called about once a
    /// second: a fan-out that keeps going regrows them at most that often).
    /// After a subscribe storm of 5,000 they held ~170 KB.
    pub fn shrink_idle_queues(&self) {
        {
            let mut pushed = self.hub.pushed.borrow_mut();
            if pushed.is_empty() && pushed.capacity() > IDLE_PUSHED {
                *pushed = Vec::new();
            }
        }
        self.hub.hub.borrow_mut().shrink_idle_queues();
    }

    /// Publishes from the admin API on this core; resolves to the sequence number.
    pub fn admin_publish(&self, topic: &str, payload: &[u8], binary: bool) -> Published {
        let request = self.next_id();
        let waiter = Rc::new(AdminWaiter::default());
        let waiters = &self.hub.admin_waiters;
        waiters.borrow_mut().insert(request, waiter.clone());
        self.with_hub(|hub| hub.publish_api(request, topic, payload, binary));
        Published(waiter)
    }

    /// Sends a direct message from the admin API on this core; resolves to
    /// the sum of the counts of the cores (and, through the engine, the
    /// nodes) that hold `target`'s sessions.
    pub fn admin_direct(&self, target: DirectTarget, payload: &[u8], binary: bool) -> DirectSent {
        let request = self.next_id();
        let waiter = Rc::new(DirectWaiter::default());
        let waiters = &self.hub.direct_waiters;
        waiters.borrow_mut().insert(request, waiter.clone());
        // The answers are carried out after the call, so the number of
        // them is known before the first is counted.
        self.with_hub(|hub| {
            let asked = hub.direct_api(request, target, payload, binary);
            waiter.remaining.set(asked);
        });
        DirectSent(waiter)
    }

    /// A direct-message request the admin API stopped waiting for.
    pub fn forget_direct(&self, sent: &DirectSent) {
        let mut waiters = self.hub.direct_waiters.borrow_mut();
        waiters.retain(|_, w| !Rc::ptr_eq(w, &sent.0));
    }
}

/// A frame the hub encoded, and the compressed forms connections that
/// agreed permessage-deflate get: each made once, when the first such
/// connection needs it (one per window size asked for; browsers ask for
/// none, so there is one).
struct Forms<'a> {
    plain: &'a [u8],
    /// Per window size: the compressed frame and its payload's length, or
    /// `None` when the message goes plain (too small, or not smaller).
    compressed: Vec<(u8, Option<Compressed>)>,
    /// The plain frame's payload length, once known.
    plain_payload: Option<usize>,
}

/// A compressed frame and its payload's length.
type Compressed = (Vec<u8>, usize);

impl<'a> Forms<'a> {
    fn new(plain: &'a [u8]) -> Forms<'a> {
        Forms {
            plain,
            compressed: Vec::new(),
            plain_payload: None,
        }
    }

    /// The frame for a connection with agreement `deflate`, its payload's
    /// length on the wire and as plain bytes.
    fn for_peer(&mut self, core: &Core, deflate: Deflate) -> (&[u8], usize, usize) {
        let plain = *self.plain_payload.get_or_insert_with(|| {
            data_frame_payload(self.plain).map_or(self.plain.len(), |(_, p)| p.len())
        });
        let bits = deflate.window_bits();
        let i = match self.compressed.iter().position(|(b, _)| *b == bits) {
            Some(i) => i,
            None => {
                self.compressed
                    .push((bits, core.compress_frame(self.plain, deflate)));
                self.compressed.len() - 1
            }
        };
        match &self.compressed[i].1 {
            Some((frame, wire)) => (frame, *wire, plain),
            None => (self.plain, plain, plain),
        }
    }
}

/// A direct-message request waiting for the counts of the cores it asked.
#[derive(Default)]
pub struct DirectWaiter {
    remaining: Cell<usize>,
    count: Cell<DirectCount>,
    waker: Cell<Option<Waker>>,
}

impl DirectWaiter {
    /// One answer, announcing `more` to come; true when it was the last.
    fn add(&self, c: DirectCount, more: usize) -> bool {
        let mut sum = self.count.get();
        sum.delivered += c.delivered;
        sum.held += c.held;
        self.count.set(sum);
        let remaining = self.remaining.get().saturating_sub(1) + more;
        self.remaining.set(remaining);
        let done = self.remaining.get() == 0;
        if done {
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
        done
    }
}

/// Resolves to how many sessions a direct message reached, and how many
/// keep it for their resume.
pub struct DirectSent(Rc<DirectWaiter>);

impl DirectSent {
    /// What the answers so far say, and how many are still to come.
    pub fn so_far(&self) -> (DirectCount, usize) {
        (self.0.count.get(), self.0.remaining.get())
    }
}

impl Future for DirectSent {
    type Output = DirectCount;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<DirectCount> {
        if self.0.remaining.get() == 0 {
            return Poll::Ready(self.0.count.get());
        }
        self.0.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// A publish-API request waiting for its sequence number.
#[derive(Default)]
pub struct AdminWaiter {
    seq: Cell<Option<u64>>,
    waker: Cell<Option<Waker>>,
}

impl AdminWaiter {
    fn complete(&self, seq: u64) {
        self.seq.set(Some(seq));
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Resolves to the sequence number of a publish-API request.
pub struct Published(Rc<AdminWaiter>);

impl Future for Published {
    type Output = u64;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        match self.0.seq.get() {
            Some(seq) => Poll::Ready(seq),
            None => {
                self.0.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}
