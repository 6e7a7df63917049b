//! The task that turns a core's io events (ring completions or epoll events) into work: readiness goes into
//! the connections, and a parked connection with work gets served (on this
//! task for a simple read, else with a task of its own).

use std::rc::Rc;

use super::websocket;
use crate::core::Core;
use crate::net::reactor::{self, Wakeup};
use crate::sys::log::{self, Level};

/// Runs the reactor of one core forever.
pub async fn run(core: Rc<Core>) {
    let waitable = match core.reactor.waitable() {
        Ok(w) => w,
        Err(e) => {
            log::emit(
                Level::Error,
                "reactor_failed",
                &[("core", &core.index), ("error", &e)],
            );
            return;
        }
    };
    loop {
        // One batch for everything this wake brings: what the commands of
        // many connections give one connection (presence lines, fan-out)
        // leaves in one `send` when the batch ends.
        core.tick(); // the coarse clock follows the event loop's turns
        core.hub_batch(|| {
            core.reactor.dispatch(&core.conns, |wakeup| match wakeup {
                Wakeup::Readable(conn) => websocket::readable_while_parked(&core, conn),
                Wakeup::Notified(conn) => {
                    monoio::spawn(websocket::resume(core.clone(), conn));
                }
            })
        });
        (core.stats).set_ring_buffers(core.reactor.buffers_exhausted(), core.reactor.buffers());
        if reactor::work(&waitable).await.is_err() {
            return;
        }
    }
}
