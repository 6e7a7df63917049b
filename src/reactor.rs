//! Readiness of open WebSocket connections: one edge-triggered epoll set per
//! core, and the task that turns its events into work.
//!
//! After the 101 a connection's socket leaves monoio and is registered here
//! once, for its lifetime (`EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`). An
//! event sets readiness bits in the connection's [`ConnEntry`] and wakes its
//! task; an idle connection has no task at all (it was parked), so a readable
//! event or a notification from the core spawns one. This is what keeps an
//! idle connection down to its `ConnEntry`: no task, no buffer, no in-flight
//! io_uring operation or driver slab entry per connection. The epoll set itself
//! is waited on through monoio (one poll of one descriptor per core), so this
//! works the same on the io_uring and the epoll driver.
//!
//! Edge-triggered discipline: a task clears a readiness bit right before the
//! syscall that finds out (see [`ConnEntry::clear_ready`]); an edge that arrives
//! afterwards sets it again. Events are only processed while no connection task
//! runs (single-threaded core), so a task that read until the socket was empty
//! and parks without awaiting in between cannot miss one.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::conns::{ConnEntry, READ, WRITE};
use crate::log::{self, Level};
use crate::server::Core;

/// Events taken per `epoll_wait`.
const BATCH: usize = 256;

/// One core's epoll set.
pub struct Reactor {
    epfd: OwnedFd,
}

impl Reactor {
    /// A new, empty epoll set.
    pub fn new() -> io::Result<Reactor> {
        // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        Ok(Reactor {
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches a connection's socket for the rest of its life (closing the
    /// socket removes it). Readiness the socket already has is reported too
    /// (epoll polls the file when it is added), so bytes that arrived before
    /// this call are not missed.
    pub fn add(&self, entry: &ConnEntry) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: u64::from(entry.slot()),
        };
        // SAFETY: ev is a valid epoll_event for the call.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                entry.fd(),
                &mut ev,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

thread_local! {
    /// Parked connections (registry slots) notified by their core.
    static RESUME: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// The reactor task of this thread's core, while it waits.
    static REACTOR_WAKER: Cell<Option<Waker>> = const { Cell::new(None) };
}

/// Asks the reactor to spawn a task for a parked, notified connection.
pub fn request_resume(slot: u32) {
    RESUME.with(|r| r.borrow_mut().push(slot));
    if let Some(w) = REACTOR_WAKER.with(Cell::take) {
        w.wake();
    }
}

/// Resolves when a resume was requested.
struct ResumeRequested;

impl Future for ResumeRequested {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if RESUME.with(|r| !r.borrow().is_empty()) {
            return Poll::Ready(());
        }
        REACTOR_WAKER.with(|w| w.set(Some(cx.waker().clone())));
        Poll::Pending
    }
}

/// Runs the reactor of one core forever.
pub async fn run(core: Rc<Core>) {
    // monoio waits on a duplicate of the epoll descriptor (it closes what it owns).
    // SAFETY: dup of a valid descriptor; a non-negative result is ours.
    let dup = unsafe { libc::fcntl(core.reactor.epfd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    let waitable = if dup < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: dup is a fresh descriptor; only readiness polls are made on it.
        monoio::net::UnixStream::from_std(unsafe {
            std::os::unix::net::UnixStream::from_raw_fd(dup)
        })
    };
    let waitable = match waitable {
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
    // SAFETY: epoll_event is plain data.
    let mut events: Vec<libc::epoll_event> = vec![unsafe { std::mem::zeroed() }; BATCH];
    loop {
        dispatch(&core, &mut events);
        monoio::select! {
            r = waitable.readable(false) => {
                if r.is_err() {
                    return;
                }
            }
            _ = ResumeRequested => {}
        }
    }
}

/// Hands out every pending event and resume request.
fn dispatch(core: &Rc<Core>, events: &mut [libc::epoll_event]) {
    loop {
        // SAFETY: events is valid for writes of events.len() entries.
        let n = unsafe {
            libc::epoll_wait(
                core.reactor.epfd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                0,
            )
        };
        if n <= 0 {
            break;
        }
        for ev in &events[..n as usize] {
            let (bits, slot) = (ev.events, ev.u64);
            let Some(entry) = core.conns.get(slot as u32) else {
                continue;
            };
            let mut ready = 0;
            if bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32
                != 0
            {
                ready |= READ;
            }
            if bits & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                ready |= WRITE;
            }
            if entry.on_ready(ready) {
                crate::websocket::readable_while_parked(core, entry);
            }
        }
        if (n as usize) < events.len() {
            break;
        }
    }
    let slots = RESUME.with(|r| std::mem::take(&mut *r.borrow_mut()));
    for slot in slots {
        if let Some(entry) = core.conns.get(slot) {
            if entry.unpark_notified() {
                monoio::spawn(crate::websocket::resume(core.clone(), entry));
            }
        }
    }
}
