//! The data path of open connections, on one of two drivers (`--io`): a
//! per-core io_uring ring ([`super::uring`]) or a per-core edge-triggered
//! epoll set ([`super::epoll`]). Both are waited on by monoio as one
//! descriptor and give the serving layer the same thing: wake-ups for
//! parked connections, readiness bits for running ones, and `recv`.

use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;

use super::conn::Conn;
pub use super::conn::Wakeup;
use super::registry::Registry;
use super::wakeups::{self, ResumeRequested};
use super::{epoll, uring};
use crate::config::IoChoice;
use crate::sys;
pub use crate::sys::DataPath;

/// One core's driver.
pub enum Reactor {
    Uring(Box<uring::Reactor>),
    Epoll(epoll::Reactor),
}

impl Reactor {
    /// A driver for `path`.
    pub fn new(path: DataPath) -> io::Result<Reactor> {
        Ok(match path {
            DataPath::Uring => Reactor::Uring(Box::new(uring::Reactor::new()?)),
            DataPath::Epoll => Reactor::Epoll(epoll::Reactor::new()?),
        })
    }

    pub fn path(&self) -> DataPath {
        match self {
            Reactor::Uring(_) => DataPath::Uring,
            Reactor::Epoll(_) => DataPath::Epoll,
        }
    }

    /// Takes on socket `fd` of the connection in registry `slot` for the
    /// rest of its life. Bytes that arrived before are not missed.
    pub fn add(&self, fd: RawFd, slot: u32) -> io::Result<()> {
        match self {
            Reactor::Uring(r) => r.add(fd, slot),
            Reactor::Epoll(r) => r.add(fd, slot),
        }
    }

    /// Closes the connection's socket: on the ring, its operations there are
    /// cancelled (they would hold it open) and the socket closed in one
    /// `io_uring_enter`; on epoll, `close(2)` (which leaves the epoll set).
    pub fn close(&self, conn: &Conn) {
        match self {
            Reactor::Uring(r) => r.close(conn),
            Reactor::Epoll(_) => conn.close_fd(),
        }
    }

    /// A descriptor monoio can wait on for this driver's events (a
    /// duplicate: monoio closes what it owns).
    pub fn waitable(&self) -> io::Result<monoio::net::UnixStream> {
        let fd = match self {
            Reactor::Uring(r) => r.fd(),
            Reactor::Epoll(r) => r.fd(),
        };
        // SAFETY: dup of a valid descriptor; a non-negative result is ours.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: dup is a fresh descriptor; only readiness polls are made on it.
        monoio::net::UnixStream::from_std(unsafe {
            std::os::unix::net::UnixStream::from_raw_fd(dup)
        })
    }

    /// Hands out every pending event and resume request; parked
    /// connections with work go to `wake`.
    pub fn dispatch(&self, conns: &Registry, mut wake: impl FnMut(Wakeup)) {
        match self {
            Reactor::Uring(r) => r.dispatch(conns, &mut wake),
            Reactor::Epoll(r) => r.dispatch(conns, &mut wake),
        }
        for slot in wakeups::take_resumes() {
            if let Some(conn) = conns.get(slot) {
                if conn.unpark_notified() {
                    wake(Wakeup::Notified(conn));
                }
            }
        }
    }

    /// Reads from `conn`'s stream into `buf` (`recv(2)`'s answers).
    pub fn recv(&self, conn: &Conn, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Reactor::Uring(r) => r.recv(conn, buf),
            Reactor::Epoll(_) => sys::recv(conn.fd(), buf),
        }
    }

    /// Appends up to `max` bytes of `conn`'s stream to `vec`.
    pub fn recv_append(&self, conn: &Conn, vec: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        match self {
            Reactor::Uring(r) => r.recv_append(conn, vec, max),
            Reactor::Epoll(_) => sys::recv_append(conn.fd(), vec, max),
        }
    }

    /// On the ring, lends the receive buffer `conn` holds to `parse` (to
    /// parse in place, without a copy) and returns its length; None when
    /// there is none (always on epoll: read with [`Reactor::recv`]).
    pub fn lend(&self, conn: &Conn, parse: impl FnOnce(&mut [u8])) -> Option<usize> {
        match self {
            Reactor::Uring(r) => r.lend(conn, parse),
            Reactor::Epoll(_) => None,
        }
    }

    /// Sends the output the core pushed to `conns` in this flush: on the
    /// ring, all in one `io_uring_enter` (true: done); on epoll, false (the
    /// caller sends them one by one).
    pub fn send_batch(&self, conns: &[Rc<Conn>], now: u64) -> bool {
        match self {
            Reactor::Uring(r) => {
                r.send_batch(conns, now);
                true
            }
            Reactor::Epoll(_) => false,
        }
    }

    /// An emptied output vector for a connection's next batch (on the
    /// ring, one that a batch of sends emptied; on epoll, none).
    pub fn spare_output(&self) -> Vec<u8> {
        match self {
            Reactor::Uring(r) => r.spare_output(),
            Reactor::Epoll(_) => Vec::new(),
        }
    }

    /// Receive buffers in circulation (0 on epoll).
    pub fn buffers(&self) -> u16 {
        match self {
            Reactor::Uring(r) => r.buffers(),
            Reactor::Epoll(_) => 0,
        }
    }

    /// About once a second: the ring gives back buffers a quiet core no
    /// longer needs (nothing on epoll).
    pub fn tune(&self, now: u64) {
        if let Reactor::Uring(r) = self {
            r.tune(now);
        }
    }

    /// Receive buffer ring exhaustions so far (0 on epoll).
    pub fn buffers_exhausted(&self) -> u64 {
        match self {
            Reactor::Uring(r) => r.exhausted(),
            Reactor::Epoll(_) => 0,
        }
    }
}

/// Resolves when the driver (through `waitable`) or a resume request has work.
pub async fn work(waitable: &monoio::net::UnixStream) -> io::Result<()> {
    monoio::select! {
        r = waitable.readable(false) => r,
        _ = ResumeRequested => Ok(()),
    }
}

/// Decides the data path at start: `Err` when `--io uring` cannot run
/// here; with `auto`, the fallback and why (for the log line).
pub fn choose(choice: IoChoice) -> Result<(DataPath, Option<String>), String> {
    let forced_legacy = std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_some();
    match choice {
        IoChoice::Epoll => Ok((DataPath::Epoll, None)),
        IoChoice::Uring => match super::ring::probe() {
            Ok(()) => Ok((DataPath::Uring, None)),
            Err(why) => Err(format!("--io uring: {why}")),
        },
        IoChoice::Auto if forced_legacy => Ok((
            DataPath::Epoll,
            Some("MONOIO_FORCE_LEGACY_DRIVER is set".into()),
        )),
        IoChoice::Auto => match super::ring::probe() {
            Ok(()) => Ok((DataPath::Uring, None)),
            Err(why) => Ok((DataPath::Epoll, Some(why))),
        },
    }
}
