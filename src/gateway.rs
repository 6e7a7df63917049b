//! The glue between a core's [`Hub`](crate::hub::Hub) and the world: carrying
//! out its outputs (frames to sockets, mail to other cores, publish-API
//! answers) and feeding it the core's mailbox.

use std::cell::Cell;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use monoio::net::UnixStream;

use crate::conns::Pushed;
use crate::hub::{EngineReply, Output};
use crate::log::{self, Level};
use crate::mailbox::CoreMsg;
use crate::server::Core;

/// Carries out everything the hub has queued. Frames for one connection are
/// gathered and leave in one write at the end (see [`ConnEntry::push_frame`]).
pub fn flush_hub(core: &Core) {
    let max_backpressure = core.shared.config.max_backpressure;
    // Taken, not borrowed: nothing here calls back into flush_hub, but a
    // re-entrant call would then start a list of its own instead of panicking.
    let mut pushed = core.pushed.take();
    loop {
        let Some(out) = core.hub.borrow_mut().poll_output() else {
            break;
        };
        match out {
            Output::Send { conn, frame, tag } => {
                let Some(entry) = core.gateway_conns.borrow().get(&conn).cloned() else {
                    continue;
                };
                match entry.push_frame(&frame, tag.as_ref(), max_backpressure) {
                    Pushed::First => {
                        core.stats.sent(1, frame.len() as u64);
                        pushed.push(entry);
                    }
                    Pushed::Queued => core.stats.sent(1, frame.len() as u64),
                    Pushed::SlowConsumer => {
                        core.stats.slow_consumer_close();
                        core.stats.closed_with(1008);
                        log::emit(
                            Level::Info,
                            "slow_consumer",
                            &[("core", &core.index), ("conn", &conn)],
                        );
                    }
                }
            }
            Output::Close { conn, code, reason } => {
                if let Some(entry) = core.gateway_conns.borrow().get(&conn).cloned() {
                    entry.request_close(code, reason);
                }
            }
            Output::Mail { core: to, msg } => core.shared.mailboxes[to].post(CoreMsg::Hub(msg)),
            Output::AdminPublished { request, seq } => {
                if let Some(waiter) = core.admin_waiters.borrow_mut().remove(&request) {
                    waiter.complete(seq);
                }
            }
            Output::Engine { id, op } => {
                let sent = core.redis.as_ref().is_some_and(|r| r.submit(id, &op));
                if !sent {
                    // Redis is down: the hub serves it locally.
                    core.hub
                        .borrow_mut()
                        .engine_reply(id, EngineReply::Failed, core.now());
                }
            }
        }
    }
    let now = core.now();
    for entry in pushed.drain(..) {
        entry.flush_pushed(now);
    }
    core.pushed.replace(pushed);
    core.stats.set_sessions(&core.hub.borrow());
}

/// Serves this core's mailbox forever.
pub async fn mailbox_loop(core: Rc<Core>, bell: StdUnixStream) {
    let Ok(bell) = UnixStream::from_std(bell) else {
        return;
    };
    let mut scratch = [0u8; 64];
    loop {
        if bell.readable(false).await.is_err() {
            return;
        }
        // Drain the doorbell first: a ring after this point means new mail.
        while matches!(crate::sys::recv(bell.as_raw_fd(), &mut scratch), Ok(n) if n > 0) {}
        for msg in core.shared.mailboxes[core.index].take() {
            match msg {
                CoreMsg::Hub(msg) => core.hub.borrow_mut().receive(msg),
                CoreMsg::Adopt(adoption) => {
                    monoio::spawn(crate::connection::adopt(adoption, core.clone()));
                }
            }
        }
        flush_hub(&core);
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
pub struct Published(pub Rc<AdminWaiter>);

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

/// Publishes from the admin API on this core; resolves to the sequence number.
pub fn admin_publish(core: &Core, topic: &str, payload: &[u8], binary: bool) -> Published {
    let request = core.next_conn_id();
    let waiter = Rc::new(AdminWaiter::default());
    core.admin_waiters
        .borrow_mut()
        .insert(request, waiter.clone());
    core.hub
        .borrow_mut()
        .publish_api(request, topic, payload, binary);
    flush_hub(core);
    Published(waiter)
}
