//! A core's side of its Redis connection: the request pipeline the hub
//! driver feeds, and the signal that wakes the connection's task
//! (`serve/redis.rs`) to write it.

use std::cell::{Cell, RefCell, RefMut};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::engine::queue::Pipeline;
use crate::engine::schema::Schema;
use crate::hub::EngineOp;

/// The pipeline and its task's wake-up.
pub struct EngineLink {
    pipeline: RefCell<Pipeline>,
    woken: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl EngineLink {
    /// A link that is down until the connection's task says otherwise.
    pub fn new(schema: Arc<Schema>) -> EngineLink {
        EngineLink {
            pipeline: RefCell::new(Pipeline::new(schema)),
            woken: Cell::new(false),
            waker: Cell::new(None),
        }
    }

    /// The pipeline (borrow it for a call, never across an await).
    pub fn pipeline(&self) -> RefMut<'_, Pipeline> {
        self.pipeline.borrow_mut()
    }

    /// Queues a hub request at time `now` and wakes the connection's task.
    /// `false` when the connection is down.
    pub fn submit(&self, id: u64, op: &EngineOp, now: u64) -> bool {
        if !self.pipeline.borrow_mut().submit(id, op, now) {
            return false;
        }
        self.woken.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        true
    }

    /// Resolves once a request was submitted since the last time.
    pub fn woken(&self) -> Woken<'_> {
        Woken(self)
    }
}

/// See [`EngineLink::woken`].
pub struct Woken<'a>(&'a EngineLink);

impl Future for Woken<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.woken.replace(false) {
            Poll::Ready(())
        } else {
            self.0.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }
}
