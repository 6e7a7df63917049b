//! Readiness of open WebSocket connections: one edge-triggered epoll set per
//! core.
//!
//! After the 101 a connection's socket leaves monoio and is registered here
//! once, for its lifetime (`EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`). An
//! event sets readiness bits in the connection's [`Conn`] and wakes its task;
//! an idle connection has no task at all (it was parked), so a readable event
//! or a notification from the core hands it back to the serving layer, which
//! gives it one. This is what keeps an idle connection down to its `Conn`: no
//! task, no buffer, no in-flight io_uring operation or driver slab entry per
//! connection. The epoll set itself is waited on through monoio (one poll of
//! one descriptor per core), so this works the same on the io_uring and the
//! epoll driver.
//!
//! Edge-triggered discipline: a task clears a readiness bit right before the
//! syscall that finds out (see [`Conn::clear_ready`]); an edge that arrives
//! afterwards sets it again. Events are only processed while no connection task
//! runs (single-threaded core), so a task that read until the socket was empty
//! and parks without awaiting in between cannot miss one.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::conn::Wakeup;
use super::conn::{READ, WRITE};
use super::registry::Registry;

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

    /// Watches socket `fd` of the connection in registry `slot` for the rest
    /// of its life (closing the socket removes it). Readiness the socket
    /// already has is reported too (epoll polls the file when it is added),
    /// so bytes that arrived before this call are not missed.
    pub fn add(&self, fd: RawFd, slot: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: u64::from(slot),
        };
        // SAFETY: ev is a valid epoll_event for the call.
        let rc =
            unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The epoll set's descriptor (monoio waits on a duplicate of it).
    pub fn fd(&self) -> RawFd {
        self.epfd.as_raw_fd()
    }

    /// Hands out every pending event (readiness bits into the connections);
    /// parked connections that became readable go to `wake`.
    pub fn dispatch(&self, conns: &Registry, mut wake: impl FnMut(Wakeup)) {
        // Not zeroed: the kernel writes the entries it reports, and only
        // those are read (this runs on every wake of the reactor).
        let mut events = [const { MaybeUninit::<libc::epoll_event>::uninit() }; BATCH];
        loop {
            let buf = events.as_mut_ptr().cast();
            // SAFETY: events is valid for writes of BATCH entries.
            let n = unsafe { libc::epoll_wait(self.epfd.as_raw_fd(), buf, BATCH as i32, 0) };
            if n <= 0 {
                break;
            }
            for ev in &events[..n as usize] {
                // SAFETY: epoll_wait initialized the first n entries.
                let ev = unsafe { ev.assume_init_ref() };
                let Some(conn) = conns.get(ev.u64 as u32) else {
                    continue;
                };
                if conn.on_ready(readiness(ev.events)) {
                    wake(Wakeup::Readable(conn));
                }
            }
            if (n as usize) < BATCH {
                break;
            }
        }
    }
}

/// Readiness bits of an epoll event.
fn readiness(events: u32) -> u8 {
    let mut ready = 0;
    if events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
        ready |= READ;
    }
    if events & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
        ready |= WRITE;
    }
    ready
}
