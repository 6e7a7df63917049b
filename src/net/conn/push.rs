//! Fan-out into a connection: frames the core pushes (one `send` per
//! connection per flush), slow consumers, and the delivery records that say
//! what a dropped socket lost.

use std::io;
use std::sync::Arc;

use super::{Close, Conn};
use crate::net::deliveries::{Deliveries, Lost};
use crate::net::socket;
use crate::sys;

/// What [`Conn::push_frame`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued as the connection's first frame of this flush: the caller must
    /// call [`Conn::flush_pushed`] when it has pushed everything.
    First,
    /// Queued behind others (or dropped: the connection is closing).
    Queued,
    /// The peer is a slow consumer and was cut.
    SlowConsumer,
}

/// Bytes [`Conn::push_frame`] gathers for one connection before it writes
/// them out without waiting for the end of the flush.
const PUSH_BATCH: usize = 16 * 1024;

impl Conn {
    /// Queues a complete frame produced elsewhere on this core (fan-out,
    /// replies). The first frame a connection gets in one flush of the hub
    /// returns [`Pushed::First`]: the caller then calls
    /// [`Conn::flush_pushed`] once it has pushed everything, so all the
    /// frames one flush gives a connection leave in one `send` (a publisher's
    /// burst reaches each subscriber as one write, not one per message).
    /// A peer owed more than `max_backpressure` bytes that its socket refused
    /// is not reading: it is cut as a slow consumer (its socket is full, so no
    /// close frame could reach it).
    pub fn push_frame(
        &self,
        frame: &[u8],
        tag: Option<(&Arc<str>, u64)>,
        max_backpressure: usize,
    ) -> Pushed {
        if !self.close.get().accepts_output() {
            return Pushed::Queued; // closing: nothing more is sent
        }
        let mut outbox = self.outbox.borrow_mut();
        let mut first = false;
        if self.pushing.get() {
            if outbox.len() + frame.len() > max_backpressure.min(PUSH_BATCH) {
                // Enough for one write: out with it before queueing more.
                drop(outbox);
                if self.flush_outbox().is_err() {
                    let queued = (self.output_len() + frame.len()) as u64;
                    self.record_tag(queued, tag); // never reached the peer
                    self.cut(1006);
                    return Pushed::Queued;
                }
                outbox = self.outbox.borrow_mut();
            }
        } else if outbox.is_empty() {
            self.pushing.set(true);
            first = true;
            if outbox.capacity() == 0 {
                // A flush usually brings several frames: room for them at
                // once, not a reallocation per frame (given back when the
                // output drains).
                outbox.reserve((frame.len() * 8).clamp(256, PUSH_BATCH));
            }
        }
        // Bytes in the outbox beyond this flush's own were refused by the socket.
        if !outbox.is_empty() && outbox.len() + frame.len() > max_backpressure {
            let queued = outbox.len() as u64;
            *outbox = Vec::new();
            drop(outbox);
            self.record_tag(queued + frame.len() as u64, tag);
            // The peer is alive, only slow: the kernel still delivers what it
            // holds before the FIN, so only the queue here is lost.
            self.settle_losses_at(self.written.get());
            self.cut(1008);
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

    /// Queues `answers` (what the connection's own read batch answered:
    /// echoes, pongs, command errors) to leave with the frames the core
    /// pushes in its current flush, as [`Conn::push_frame`] queues those.
    /// `Some(true)`: the connection's first output of the flush (the caller
    /// lists it, as for [`Pushed::First`]); `Some(false)`: queued behind
    /// that; None: they cannot wait (the 101 is incomplete, the connection
    /// is closing, or output from before waits for the socket) and the
    /// caller sends them now ([`Conn::send_batch`]).
    /// An output with no memory yet takes `spare`'s (an emptied vector).
    pub fn queue_answers(&self, answers: &[u8], spare: impl FnOnce() -> Vec<u8>) -> Option<bool> {
        if self.held.get() || !self.close.get().accepts_output() {
            return None;
        }
        let mut outbox = self.outbox.borrow_mut();
        let first = !self.pushing.get();
        if first && !outbox.is_empty() {
            return None;
        }
        self.pushing.set(true);
        if outbox.capacity() == 0 {
            *outbox = spare();
        }
        outbox.extend_from_slice(answers);
        Some(first)
    }

    /// Sends what [`Conn::push_frame`] queued since it returned
    /// [`Pushed::First`], as far as the socket takes it now; the connection's
    /// task is told to wait for the socket to drain the rest.
    pub fn flush_pushed(&self, now: u64) {
        if self.end_push() {
            let sent = self.flush_outbox();
            self.pushed_sent(sent, now);
        }
    }

    /// Ends the current flush's pushing; false when the connection was cut
    /// meanwhile (nothing more to do). Otherwise its output goes now: by
    /// [`Conn::flush_pushed`], or, when [`Conn::sendable`], in a batch of
    /// sends ([`Conn::pushed_output`], then [`Conn::take_sent`]; a
    /// connection that is not sendable takes `Ok(0)`).
    pub fn end_push(&self) -> bool {
        self.pushing.set(false);
        !matches!(self.close.get(), Close::Cut(_))
    }

    /// Whether output waits that may be sent now (the 101 is complete).
    pub fn sendable(&self) -> bool {
        !self.held.get() && self.has_output()
    }

    /// Lends the output waiting to be sent (for a batch of sends; the
    /// borrow ends before [`Conn::take_sent`]).
    pub fn pushed_output(&self) -> std::cell::Ref<'_, Vec<u8>> {
        self.outbox.borrow()
    }

    /// What a batched send of [`Conn::pushed_output`]'s bytes did. An
    /// output sent whole leaves the connection (idle connections hold no
    /// buffer): its emptied vector is returned for reuse, unless it is
    /// burst-sized ([`socket::KEEP_OUTPUT`]).
    pub fn take_sent(&self, sent: io::Result<usize>, now: u64) -> Vec<u8> {
        let sent = match sent {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            other => other,
        };
        let mut emptied = Vec::new();
        let sent = sent.inspect(|&n| {
            let mut outbox = self.outbox.borrow_mut();
            outbox.drain(..n);
            if outbox.is_empty() && outbox.capacity() < socket::KEEP_OUTPUT {
                emptied = std::mem::take(&mut *outbox);
            }
            // A burst-sized one stays for the next flush (the sweep gives
            // it back when the connection is quiet).
        });
        let sent = self.count_sent(sent);
        self.pushed_sent(sent, now);
        emptied
    }

    #[inline]
    fn pushed_sent(&self, sent: io::Result<()>, now: u64) {
        if sent.is_err() {
            self.cut(1006);
            return;
        }
        if self.has_output() {
            if self.out_since.get() == 0 {
                self.out_since.set(super::stamp(now));
            }
            self.notify(); // the task must now wait for the socket to drain
        }
    }

    /// Remembers a delivered message that ends `queued` bytes past what the
    /// kernel has taken.
    fn record_tag(&self, queued: u64, tag: Option<(&Arc<str>, u64)>) {
        let Some((topic, seq)) = tag else { return };
        self.with_deliveries(|slot| {
            let deliveries = slot.get_or_insert_with(Default::default);
            if deliveries.record(self.written.get() + queued, topic, seq) {
                deliveries.prune(self.acked());
            }
        });
    }

    /// Runs `f` on the delivery records (taken out of their cell for it).
    fn with_deliveries<R>(&self, f: impl FnOnce(&mut Option<Box<Deliveries>>) -> R) -> R {
        let mut slot = self.deliveries.take();
        let r = f(&mut slot);
        self.deliveries.set(slot);
        r
    }

    /// After a burst: the output buffer a busy connection keeps between
    /// flushes ([`socket::KEEP_OUTPUT`]) goes, and once the peer has
    /// acknowledged every delivery, the records go (their memory with them).
    /// Called by the heartbeat sweep, about once a second. Returns whether
    /// anything was freed.
    pub fn trim_after_burst(&self) -> bool {
        if self.has_output() {
            return false;
        }
        let released = socket::release_idle(&mut self.outbox.borrow_mut());
        released | self.trim_records()
    }

    fn trim_records(&self) -> bool {
        self.with_deliveries(|slot| {
            let Some(d) = slot.as_mut() else {
                return false;
            };
            if !d.is_settled() {
                d.prune(self.acked());
            }
            if d.is_empty() {
                *slot = None;
                return true;
            }
            false
        })
    }

    /// Stream bytes the peer's TCP has acknowledged: written minus what the
    /// kernel still holds (unsent or unacknowledged).
    fn acked(&self) -> u64 {
        let held = sys::unacked_bytes(self.fd.get()) as u64;
        self.written.get().saturating_sub(held)
    }

    /// Works out, once, which delivered messages never reached the peer,
    /// counting as delivered only what the peer's TCP acknowledged (the peer
    /// may be gone). Called before the socket is given up.
    pub fn settle_losses(&self) {
        let unsettled = self.with_deliveries(|slot| matches!(slot, Some(d) if !d.is_settled()));
        if unsettled {
            self.settle_losses_at(self.acked());
        }
    }

    /// As [`Conn::settle_losses`], counting the first `delivered` bytes as delivered.
    fn settle_losses_at(&self, delivered: u64) {
        // No record: no message was ever delivered, so none can be lost.
        self.with_deliveries(|slot| {
            if let Some(d) = slot.as_mut() {
                d.settle(delivered);
            }
        });
    }

    /// The messages (first per topic) that never reached the peer.
    pub fn take_losses(&self) -> Lost {
        self.settle_losses();
        self.with_deliveries(|slot| slot.as_mut().map(|d| d.take_lost()).unwrap_or_default())
    }
}
