//! Parked connections that their core notified (fan-out output, a close
//! request, a cut), waiting for the reactor to give them a task again.
//! Thread-local: each core thread has its own list.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

thread_local! {
    /// Parked connections (registry slots) notified by their core.
    static RESUME: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// The reactor task of this thread's core, while it waits.
    static REACTOR_WAKER: Cell<Option<Waker>> = const { Cell::new(None) };
    /// The reactor has events in hand that its descriptor will not signal
    /// (completions a batch of sends set aside): it must dispatch again.
    static AGAIN: Cell<bool> = const { Cell::new(false) };
}

/// Asks the reactor to dispatch again without waiting for its descriptor.
pub fn request_dispatch() {
    AGAIN.with(|a| a.set(true));
    if let Some(w) = REACTOR_WAKER.with(Cell::take) {
        w.wake();
    }
}

/// Asks the reactor to spawn a task for a parked, notified connection.
pub fn request_resume(slot: u32) {
    RESUME.with(|r| r.borrow_mut().push(slot));
    if let Some(w) = REACTOR_WAKER.with(Cell::take) {
        w.wake();
    }
}

/// Takes the slots whose resume was requested.
pub fn take_resumes() -> Vec<u32> {
    RESUME.with(|r| std::mem::take(&mut *r.borrow_mut()))
}

/// Resolves when a resume or another dispatch was requested.
pub struct ResumeRequested;

impl Future for ResumeRequested {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if AGAIN.with(|a| a.replace(false)) || RESUME.with(|r| !r.borrow().is_empty()) {
            return Poll::Ready(());
        }
        REACTOR_WAKER.with(|w| w.set(Some(cx.waker().clone())));
        Poll::Pending
    }
}
