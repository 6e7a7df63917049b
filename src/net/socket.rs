//! The one send, receive-and-discard and close path of every socket the
//! gateway writes to: client connections before and after the 101, and the
//! Redis connection.
//!
//! Sends are non-blocking `send` calls (`MSG_DONTWAIT`) issued until the
//! socket is full; what it does not take waits in the caller's queue, in
//! order. Waiting for readiness is the caller's business ([`Readiness`]):
//! monoio's for a socket that monoio still owns, the core's epoll set for an
//! open WebSocket.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::RawFd;
use std::time::Duration;

use monoio::time::{timeout_at, Instant};

use crate::sys;

/// How long a closing connection waits to flush and for the peer to finish.
pub const LINGER: Duration = Duration::from_secs(2);
/// Bytes read and discarded at most while lingering.
pub const LINGER_DISCARD: usize = 1 << 20;

/// Whether an error only means "not now".
pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Non-blocking sends until `data` is out or the socket is full; returns the
/// bytes sent. An error after some bytes went out is reported by the next
/// call, so the count of what left is always exact.
pub fn send_some(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < data.len() {
        match sys::send(fd, &data[sent..]) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(e) if would_block(&e) => break,
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(sent)
}

/// Sends `batch` behind whatever `queue` holds, as far as the socket takes
/// it now; the rest is queued. Returns the bytes sent.
pub fn send_behind(fd: RawFd, queue: &mut Vec<u8>, batch: &[u8]) -> io::Result<usize> {
    if !queue.is_empty() {
        queue.extend_from_slice(batch);
        return flush(fd, queue);
    }
    let sent = send_some(fd, batch)?;
    queue.extend_from_slice(&batch[sent..]);
    Ok(sent)
}

/// Sends as much of `queue` as the socket takes now; returns the bytes
/// sent. An emptied queue gives its memory back (idle connections hold
/// none), unless it is burst-sized ([`emptied`]).
pub fn flush(fd: RawFd, queue: &mut Vec<u8>) -> io::Result<usize> {
    let sent = send_some(fd, queue)?;
    queue.drain(..sent);
    emptied(queue);
    Ok(sent)
}

/// Capacity from which an emptied output queue is kept for the next flush
/// rather than freed: a connection that receives a burst (a fan-out of
/// several messages a loop turn) would otherwise allocate, grow and free
/// it on every turn, and with thousands of subscribers that churn (and the
/// page faults of the heap growing and shrinking) cost more than the
/// messages themselves. Its owner gives it back when the connection is
/// quiet (the heartbeat sweep: [`release_idle`]).
pub const KEEP_OUTPUT: usize = 1024;

/// After bytes left `queue`: an empty queue frees a small buffer at once and
/// keeps a burst-sized one.
pub fn emptied(queue: &mut Vec<u8>) {
    if queue.is_empty() && queue.capacity() < KEEP_OUTPUT {
        *queue = Vec::new();
    }
}

/// Frees an empty queue's buffer (a quiet connection holds none); whether
/// there was one.
pub fn release_idle(queue: &mut Vec<u8>) -> bool {
    if queue.is_empty() && queue.capacity() > 0 {
        *queue = Vec::new();
        return true;
    }
    false
}

/// How a socket's owner waits for it.
#[allow(async_fn_in_trait)] // used within the crate only, on one thread
pub trait Readiness {
    /// Called right before a `send` that will find out whether the socket
    /// is writable (edge-triggered readiness is forgotten here).
    fn before_send(&self) {}
    /// Called right before a `recv`, likewise.
    fn before_recv(&self) {}
    /// Resolves when the socket may take bytes.
    async fn writable(&self) -> io::Result<()>;
    /// Resolves when the socket may have bytes (or end of stream).
    async fn readable(&self) -> io::Result<()>;
}

/// Waits until `queue` is fully sent.
pub async fn flush_all(fd: RawFd, ready: &impl Readiness, queue: &mut Vec<u8>) -> io::Result<()> {
    loop {
        ready.before_send();
        flush(fd, queue)?;
        if queue.is_empty() {
            return Ok(());
        }
        ready.writable().await?;
    }
}

/// Closes the TCP connection without losing what we sent: flush, send FIN,
/// then read and discard until the peer closes too (closing with unread
/// input would send RST, which can destroy our last frame in flight).
/// All within [`LINGER`]. The descriptor itself is the caller's to close.
pub async fn linger_close(
    fd: RawFd,
    ready: &impl Readiness,
    mut out: Vec<u8>,
    scratch: &RefCell<Box<[u8]>>,
) {
    let deadline = Instant::now() + LINGER;
    if !matches!(
        timeout_at(deadline, flush_all(fd, ready, &mut out)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    sys::shutdown(fd, Shutdown::Write);
    let mut discarded = 0;
    while discarded < LINGER_DISCARD {
        ready.before_recv();
        // The scratch buffer is borrowed for the call only (never across an await).
        let got = sys::recv(fd, &mut scratch.borrow_mut());
        match got {
            Ok(0) => break,
            Ok(n) => {
                discarded += n;
                continue;
            }
            Err(e) if would_block(&e) => {}
            Err(_) => break,
        }
        if !matches!(timeout_at(deadline, ready.readable()).await, Ok(Ok(()))) {
            break;
        }
    }
}

/// Readiness of a socket monoio still owns (before the 101, Redis).
impl Readiness for monoio::net::TcpStream {
    async fn writable(&self) -> io::Result<()> {
        monoio::net::TcpStream::writable(self, false).await
    }
    async fn readable(&self) -> io::Result<()> {
        monoio::net::TcpStream::readable(self, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn an_emptied_queue_keeps_a_burst_sized_buffer_until_released() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut got = vec![0u8; 64 * 1024];

        // A few small frames: the buffer goes with the bytes.
        let mut small = b"one small frame".to_vec();
        assert_eq!(flush(a.as_raw_fd(), &mut small).unwrap(), 15);
        assert_eq!((small.len(), small.capacity()), (0, 0));
        assert_eq!(b.read(&mut got).unwrap(), 15);

        // A burst: the buffer stays for the next flush, empty.
        let mut burst = Vec::with_capacity(16 * 1024);
        burst.resize(4 * 1024, b'x');
        assert_eq!(flush(a.as_raw_fd(), &mut burst).unwrap(), 4 * 1024);
        assert!(burst.is_empty());
        assert_eq!(burst.capacity(), 16 * 1024);
        assert_eq!(b.read(&mut got).unwrap(), 4 * 1024);

        // The sweep gives it back once the connection is quiet, and only
        // an empty one.
        assert!(release_idle(&mut burst));
        assert_eq!(burst.capacity(), 0);
        assert!(!release_idle(&mut burst));
        let mut waiting = Vec::with_capacity(2048);
        waiting.push(1);
        assert!(!release_idle(&mut waiting));
        assert_eq!(waiting.capacity(), 2048);
    }
}
