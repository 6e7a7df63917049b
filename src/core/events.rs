//! A core's side of the events hook (`--events-hook`, DESIGN §12): the
//! bounded queue of events waiting for the backend, and what the rest of the
//! core calls to add to it. The requests themselves are made by the
//! sender task (`serve/events.rs`).
//!
//! Bounded: at most `--events-queue` events per core. A client `send` that
//! finds it full is refused at once (`err 503 busy`, the connection stays);
//! a `connect`/`disconnect` that finds it full is dropped and counted. So a
//! slow or absent backend costs a core at most that many events of memory,
//! and never blocks it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::Core;
use crate::backend::{Event, What, MAX_BATCH};
use crate::config::Config;
use crate::hub::ConnId;
use crate::metrics::events::EventResult;
use crate::net::hook_client::HookClient;
use crate::proto::cookie::SessionId;
use crate::proto::http_client::HookTarget;
use crate::proto::peer::PeerId;

/// How long one request to the events hook may take.
pub const EVENTS_TIMEOUT: Duration = Duration::from_secs(5);

/// The events hook as configured (resolved once at start).
#[derive(Debug, Clone)]
pub struct EventsSetup {
    pub target: HookTarget,
    pub addr: SocketAddr,
    pub retry: Duration,
    pub cap: usize,
}

impl EventsSetup {
    /// `None` without `--events-hook`; `Err` when its host does not resolve.
    pub fn from_config(config: &Config) -> Result<Option<EventsSetup>, String> {
        let Some(url) = &config.events_hook else {
            return Ok(None);
        };
        let target = HookTarget::parse(url).map_err(|e| format!("--events-hook: {e}"))?;
        let addr = target
            .resolve()
            .map_err(|e| format!("--events-hook: {e}"))?;
        Ok(Some(EventsSetup {
            target,
            addr,
            retry: config.events_retry(),
            cap: config.events_queue(),
        }))
    }
}

/// An event waiting, and when it was first queued (ms).
pub struct Queued {
    pub event: Event,
    pub at: u64,
}

/// One core's queue and client.
pub struct Events {
    pub client: HookClient,
    queue: RefCell<VecDeque<Queued>>,
    cap: usize,
    /// `--events-retry` in ms.
    pub retry_ms: u64,
    waker: Cell<Option<Waker>>,
    /// The hook answered the last request (logged on each change).
    pub up: Cell<bool>,
    /// A request is out (its events are no longer in the queue).
    pub in_flight: Cell<bool>,
}

impl Events {
    pub fn new(setup: &EventsSetup) -> Events {
        Events {
            client: HookClient::plain(setup.target.clone(), setup.addr, EVENTS_TIMEOUT, 1),
            queue: RefCell::new(VecDeque::new()),
            cap: setup.cap,
            retry_ms: setup.retry.as_millis() as u64,
            waker: Cell::new(None),
            up: Cell::new(true),
            in_flight: Cell::new(false),
        }
    }

    /// Events waiting.
    pub fn depth(&self) -> usize {
        self.queue.borrow().len()
    }

    /// Queues `event`; false when the queue is full.
    fn push(&self, event: Event, now: u64) -> bool {
        let mut q = self.queue.borrow_mut();
        if q.len() >= self.cap {
            return false;
        }
        q.push_back(Queued { event, at: now });
        drop(q);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        true
    }

    /// The oldest events, at most one request's worth.
    pub fn take_batch(&self) -> Vec<Queued> {
        let mut q = self.queue.borrow_mut();
        let n = q.len().min(MAX_BATCH);
        let batch: Vec<Queued> = q.drain(..n).collect();
        if q.is_empty() && q.capacity() > 1024 {
            // A backlog is over: its memory goes back.
            *q = VecDeque::new();
        }
        batch
    }

    /// Events to try again, ahead of everything queued since, in order.
    pub fn put_back(&self, batch: Vec<Queued>) {
        let mut q = self.queue.borrow_mut();
        for e in batch.into_iter().rev() {
            q.push_front(e);
        }
    }

    /// Resolves once an event is waiting.
    pub fn ready(&self) -> Ready<'_> {
        Ready(self)
    }
}

/// See [`Events::ready`].
pub struct Ready<'a>(&'a Events);

impl Future for Ready<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.0.queue.borrow().is_empty() {
            return Poll::Ready(());
        }
        self.0.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// Why a client's `send` was not queued: the status of its `err` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRefused {
    /// No `--events-hook`: `err 501`.
    NoHook,
    /// The queue is full: `err 503 busy`.
    Busy,
}

impl Core {
    /// A connection said `hello`: its `connect` event.
    pub fn event_connect(
        &self,
        session: SessionId,
        peer: PeerId,
        user: Option<Arc<str>>,
        resumed: bool,
    ) {
        let what = What::Connect { resumed };
        self.queue_lifecycle(session, peer, user, what);
    }

    /// A connection ended: its `disconnect` event.
    pub fn event_disconnect(
        &self,
        (session, peer, user): (SessionId, PeerId, Option<Arc<str>>),
        code: u16,
        reason: &'static str,
        ended: bool,
    ) {
        let what = What::Disconnect {
            code,
            reason,
            ended,
        };
        self.queue_lifecycle(session, peer, user, what);
    }

    fn queue_lifecycle(
        &self,
        session: SessionId,
        peer: PeerId,
        user: Option<Arc<str>>,
        what: What,
    ) {
        let Some(events) = &self.events else {
            return;
        };
        let event = Event {
            session,
            peer,
            user,
            what,
        };
        let kind = event.kind() as usize;
        if !events.push(event, self.now()) {
            self.stats.events.count(kind, EventResult::Dropped, 1);
        }
        self.stats.events.set_depth(events.depth());
    }

    /// A client's `send` on gateway connection `conn`: queued for the
    /// backend (its `reply` comes later), or refused at once.
    pub fn event_send(
        &self,
        conn: ConnId,
        payload: &[u8],
        binary: bool,
    ) -> Result<(), SendRefused> {
        let Some(events) = &self.events else {
            return Err(SendRefused::NoHook);
        };
        let Some((session, peer, user)) = self.read_hub(|h| h.identity_of(conn)) else {
            return Ok(()); // the connection is going: nobody to answer
        };
        let event = Event {
            session,
            peer,
            user,
            what: What::Send {
                conn,
                payload: payload.to_vec(),
                binary,
            },
        };
        if !events.push(event, self.now()) {
            self.stats.events.count(2, EventResult::Busy, 1);
            return Err(SendRefused::Busy);
        }
        self.stats.events.set_depth(events.depth());
        Ok(())
    }
}
