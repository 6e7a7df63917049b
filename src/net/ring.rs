//! One core's io_uring ring for open connections (the operations; the
//! reactor built on it is [`super::uring`]).
//!
//! - **Receive**: one multishot `RECV` per connection selects its buffer
//!   from the core's buffer ring when bytes arrive, so an idle connection
//!   holds no buffer. A buffer goes back to the ring ([`Ring::recycle`]) as
//!   soon as the frame parser has taken its bytes.
//! - **Termination**: the kernel ends a multishot receive when the buffer
//!   ring is empty (`ENOBUFS`), on end of stream, on an error, or when it
//!   chooses to (`IORING_CQE_F_MORE` clear). [`Recv::rearm`] says when the
//!   owner must arm it again: nothing is lost, the bytes stay in the socket.
//! - **Send**: [`Ring::send`] queues one `SEND` per connection; the
//!   buffer stays with the ring until its completion hands it back
//!   ([`Event::Sent`], with how much the kernel took), and every queued send
//!   of a loop turn goes to the kernel in one `io_uring_enter`.
//! - **Accept**: one multishot `ACCEPT` per listener ([`Ring::accept`]).
//! - **Close**: [`Ring::cancel_and_close`] cancels a socket's operations
//!   and closes it in one `io_uring_enter`, with no completion on success.
//! - **Probe**: [`probe`] checks what this needs (kernel ≥ 6.0, the opcodes,
//!   completions skipped on success, a registrable buffer ring) and names
//!   what is missing.
//!
//! Sans policy: the ring knows keys (the caller's 56-bit names for its
//! connections) and buffers, nothing of WebSocket. All unsafe code of the
//! data path's ring is in this file.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

/// The buffer group of the core's receive buffers.
const BGID: u16 = 0;

/// What a completion's `user_data` carries: the operation in the top byte,
/// the caller's key for the connection in the other 56 bits.
const OP_RECV: u64 = 1 << 56;
const OP_SEND: u64 = 2 << 56;
const OP_ACCEPT: u64 = 3 << 56;
const OP_POLL_OUT: u64 = 4 << 56;
const OP_CANCEL: u64 = 5 << 56;
const OP_SEND_NOW: u64 = 6 << 56;
const OP_CLOSE: u64 = 7 << 56;
/// The bits of `user_data` that are the caller's key.
pub const KEY_MASK: u64 = !OP_MASK;
const OP_MASK: u64 = 0xff << 56;

/// The kernel version multishot receive with provided buffer rings needs
/// here (multishot `RECV` since 6.0; buffer rings since 5.19).
const MIN_KERNEL: (u32, u32) = (6, 0);

/// Checks that this kernel and its settings allow the io_uring data path.
/// `Err` names what is missing (for the log line of the fallback).
pub fn probe() -> Result<(), String> {
    let release = kernel_release();
    match parse_release(&release) {
        Some(v) if v >= MIN_KERNEL => {}
        Some(_) => return Err(format!("kernel {release} (multishot receive needs 6.0)")),
        None => return Err(format!("kernel release {release:?} not understood")),
    }
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup: {e}"))?;
    if !ring.params().is_feature_skip_cqe_on_success() {
        return Err("IOSQE_CQE_SKIP_SUCCESS not supported".into());
    }
    let mut p = Probe::new();
    (ring.submitter().register_probe(&mut p)).map_err(|e| format!("IORING_REGISTER_PROBE: {e}"))?;
    for (code, name) in [
        (opcode::RecvMulti::CODE, "IORING_OP_RECV"),
        (opcode::Send::CODE, "IORING_OP_SEND"),
        (opcode::SendMsg::CODE, "IORING_OP_SENDMSG"),
        (opcode::AcceptMulti::CODE, "IORING_OP_ACCEPT"),
        (opcode::Shutdown::CODE, "IORING_OP_SHUTDOWN"),
        (opcode::Close::CODE, "IORING_OP_CLOSE"),
    ] {
        if !p.is_supported(code) {
            return Err(format!("{name} not supported"));
        }
    }
    BufRing::new(&ring, 2, 64, 2).map_err(|e| format!("IORING_REGISTER_PBUF_RING: {e}"))?;
    Ok(())
}

fn kernel_release() -> String {
    // SAFETY: uname fills the struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is valid for writes.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = (u.release.iter())
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `6.18.0-foo` → `(6, 18)`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The provided buffer ring: `count` buffers of `size` bytes the kernel
/// picks from, and the ring of their descriptors shared with it.
struct BufRing {
    /// The descriptors (page-aligned, shared with the kernel).
    ring: *mut types::BufRingEntry,
    ring_len: usize,
    /// The buffers themselves, `count × size` bytes.
    bufs: *mut u8,
    bufs_len: usize,
    count: u16,
    size: u32,
    /// Buffers in circulation: ids below this go back to the kernel when
    /// recycled; ids at or above it are retired (their pages released).
    live: u16,
    /// Per buffer id: in the kernel's ring or lent to a reader (not ours
    /// to push again until it is recycled).
    out: Vec<bool>,
    /// Our copy of the ring's tail (published to the kernel on
    /// [`BufRing::publish`]).
    tail: u16,
    /// Buffers given back since the last publish.
    unpublished: bool,
}

fn map_anonymous(len: usize) -> io::Result<*mut u8> {
    // SAFETY: an anonymous private mapping; checked for failure below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

impl BufRing {
    /// Registers room for `count` (a power of two) buffers of `size` bytes
    /// with `ring`, the first `live` of them in circulation (the others'
    /// memory is reserved, not touched, until [`BufRing::grow`]).
    fn new(ring: &IoUring, count: u16, size: u32, live: u16) -> io::Result<BufRing> {
        if !count.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two",
            ));
        }
        let ring_len = usize::from(count) * std::mem::size_of::<types::BufRingEntry>();
        let bufs_len = usize::from(count) * size as usize;
        let entries = map_anonymous(ring_len)?.cast::<types::BufRingEntry>();
        let bufs = match map_anonymous(bufs_len) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: entries was mapped above with ring_len.
                unsafe { libc::munmap(entries.cast(), ring_len) };
                return Err(e);
            }
        };
        let mut br = BufRing {
            ring: entries,
            ring_len,
            bufs,
            bufs_len,
            count,
            size,
            live: live.clamp(1, count),
            out: vec![false; usize::from(count)],
            tail: 0,
            unpublished: false,
        };
        // SAFETY: the mapping is page-aligned and lives until drop, after
        // the ring is unregistered (or the ring itself is gone).
        unsafe {
            ring.submitter()
                .register_buf_ring(entries as u64, count, BGID)?;
        }
        for bid in 0..br.live {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Puts buffer `bid` back in the ring (seen by the kernel after
    /// [`BufRing::publish`]).
    fn push(&mut self, bid: u16) {
        let mask = self.count - 1;
        // SAFETY: the index is masked into the ring; the entry is ours to
        // write until the tail that covers it is published.
        let entry = unsafe { &mut *self.ring.add(usize::from(self.tail & mask)) };
        // SAFETY: bid < count, so the buffer is within the mapping.
        let addr = unsafe { self.bufs.add(usize::from(bid) * self.size as usize) };
        entry.set_addr(addr as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.out[usize::from(bid)] = true;
        self.tail = self.tail.wrapping_add(1);
        self.unpublished = true;
    }

    /// Buffer `bid` is back from its reader: into the kernel's ring again,
    /// or retired (pages released) if the ring shrank meanwhile.
    fn recycle(&mut self, bid: u16) {
        if bid < self.live {
            self.push(bid);
            return;
        }
        self.out[usize::from(bid)] = false;
        // SAFETY: bid < count: a page-aligned range within the mapping
        // that neither the kernel (not in its ring) nor a reader uses.
        unsafe {
            libc::madvise(
                self.bufs.add(usize::from(bid) * self.size as usize).cast(),
                self.size as usize,
                libc::MADV_DONTNEED,
            );
        }
    }

    /// Doubles the buffers in circulation (up to the room registered);
    /// false when there is no more room.
    fn grow(&mut self) -> bool {
        if self.live >= self.count {
            return false;
        }
        let next = self.live.saturating_mul(2).min(self.count);
        for bid in self.live..next {
            // A retired buffer still out comes back through `recycle`.
            if !self.out[usize::from(bid)] {
                self.push(bid);
            }
        }
        self.live = next;
        true
    }

    /// Halves the buffers in circulation (not below `min`): those above
    /// are retired as they come back.
    fn shrink(&mut self, min: u16) {
        self.live = (self.live / 2).max(min).min(self.live);
    }

    /// Makes the buffers pushed so far visible to the kernel.
    fn publish(&mut self) {
        if !self.unpublished {
            return;
        }
        self.unpublished = false;
        // SAFETY: the tail field overlays the first entry's reserved field;
        // the kernel reads it, so it is written atomically with release
        // ordering (the entries written before it become visible first).
        unsafe {
            let tail = types::BufRingEntry::tail(self.ring).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// The first `len` bytes of buffer `bid`.
    fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        assert!(
            bid < self.count && len <= self.size as usize,
            "buffer out of range"
        );
        // SAFETY: in range (checked); the kernel wrote these bytes before
        // posting the completion that named the buffer, and does not touch
        // it again until it is pushed back.
        unsafe {
            std::slice::from_raw_parts(self.bufs.add(usize::from(bid) * self.size as usize), len)
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both mappings were made in `new` with these lengths.
        // The owner unregisters the ring (or drops the io_uring) first.
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_len);
            libc::munmap(self.bufs.cast(), self.bufs_len);
        }
    }
}

/// What one receive completion says.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    /// `len` bytes of the connection `key` are in buffer `buf` (read
    /// them with [`Ring::bytes`], then give it back with
    /// [`Ring::recycle`]). `rearm`: this was the receive's last completion.
    Data {
        key: u64,
        buf: u16,
        len: usize,
        rearm: bool,
    },
    /// The peer ended its stream (or the socket failed: `error`); the
    /// receive is over and must not be armed again.
    End { key: u64, error: Option<i32> },
    /// The receive ended without data and must be armed again (the buffer
    /// ring ran dry: `ENOBUFS`; or the kernel stopped it).
    Rearm { key: u64, out_of_buffers: bool },
}

/// What a completion says.
#[derive(Debug)]
pub enum Event {
    Recv(Recv),
    /// The send of the connection in `key` is done: `result` is how many
    /// bytes of `buf` the kernel took (the rest is the caller's to send
    /// again), or the socket's error. `buf` is the buffer given to
    /// [`Ring::send`].
    Sent {
        key: u64,
        result: io::Result<usize>,
        buf: Vec<u8>,
    },
    /// The socket of connection `key` can take bytes again (or failed:
    /// the next send says how); `rearm`: the poll is over.
    Writable {
        key: u64,
        rearm: bool,
    },
    /// A connection the listener's multishot accept took (or why it
    /// failed); `rearm`: the accept is over and must be queued again.
    Accepted {
        socket: io::Result<OwnedFd>,
        rearm: bool,
    },
}

impl Recv {
    /// The connection the completion is for.
    pub fn key(&self) -> u64 {
        match *self {
            Recv::Data { key, .. } | Recv::End { key, .. } | Recv::Rearm { key, .. } => key,
        }
    }
}

/// One core's ring (see the module documentation).
pub struct Ring {
    // Declared first: dropped (and its operations gone) before the buffers
    // they write into.
    ring: IoUring,
    bufs: BufRing,
    /// Completions met by [`Ring::send_now`] that are not its own:
    /// (user data, result, flags), handed out by the next `complete`.
    stash: Vec<(u64, i32, u32)>,
    /// Buffers of the sends in flight, by key (the kernel reads them until
    /// the completion).
    sending: HashMap<u64, Vec<u8>>,
    /// Buffer ring exhaustions (`ENOBUFS`) so far.
    exhausted: u64,
    /// The fewest buffers in circulation, and when (caller's ms) they last
    /// ran dry or were last halved.
    min_buffers: u16,
    last_dry: u64,
    exhausted_since_tune: bool,
}

impl Ring {
    /// A ring of `entries` submission slots and `buffers` (a power of two)
    /// receive buffers of `buf_size` bytes, all in circulation.
    pub fn new(entries: u32, buffers: u16, buf_size: u32) -> io::Result<Ring> {
        Ring::sized(entries, buffers, buf_size, buffers)
    }

    /// A ring with room for `max` receive buffers of which `min` circulate
    /// at first: each time the buffers run dry their number doubles, and
    /// [`Ring::tune`] halves it again after a quiet while.
    pub fn sized(entries: u32, max: u16, buf_size: u32, min: u16) -> io::Result<Ring> {
        // Completions are posted when the core thread next enters the
        // kernel, not by interrupting it (as for monoio's own ring: the
        // default costs up to 2.8x CPU, benches/README.md). Deferred task
        // work (DEFER_TASKRUN) would batch receives further, but only the
        // ring's own waiter is woken for it: its eventfd signal arrived
        // 14-19 ms late here (benches/README.md), and monoio waits on its own
        // ring, not this one.
        // Completions are room for a burst of every connection's receive
        // (more than the kernel's default of twice the entries): past it
        // they wait in the kernel's overflow list, flushed by `complete`.
        let cq = entries.saturating_mul(8);
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_cqsize(cq)
            .build(entries)
            .or_else(|_| IoUring::builder().setup_cqsize(cq).build(entries))?;
        let bufs = BufRing::new(&ring, max, buf_size, min)?;
        Ok(Ring {
            ring,
            bufs,
            stash: Vec::new(),
            sending: HashMap::new(),
            exhausted: 0,
            min_buffers: min.clamp(1, max),
            last_dry: 0,
            exhausted_since_tune: false,
        })
    }

    /// The ring's descriptor: readable while completions wait (monoio
    /// waits on it as one descriptor, as on the epoll set).
    pub fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// How many times the buffer ring ran dry.
    pub fn exhausted(&self) -> u64 {
        self.exhausted
    }

    /// Queues a multishot receive on socket `fd` of connection `key` (sent
    /// to the kernel by the next [`Ring::submit`]).
    pub fn arm_recv(&mut self, fd: RawFd, key: u64) -> io::Result<()> {
        let sqe = opcode::RecvMulti::new(types::Fd(fd), BGID)
            .build()
            .user_data(OP_RECV | key);
        self.push(&sqe)
    }

    /// Queues a send of `buf` on socket `fd` of connection `key`.
    /// One send per connection at a time: a second one before the first
    /// completed is refused (and `buf` given back in the error's place).
    pub fn send(&mut self, fd: RawFd, key: u64, buf: Vec<u8>) -> Result<(), Vec<u8>> {
        if self.sending.contains_key(&key) || buf.is_empty() {
            return Err(buf);
        }
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let sqe = opcode::Send::new(types::Fd(fd), buf.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(OP_SEND | key);
        // The Vec's heap block does not move when the Vec does.
        self.sending.insert(key, buf);
        if self.push(&sqe).is_err() {
            return Err(self.sending.remove(&key).unwrap_or_default());
        }
        Ok(())
    }

    /// Whether [`Ring::send_now`] set completions aside for the next
    /// [`Ring::complete`] (the ring's descriptor does not signal them).
    pub fn has_stash(&self) -> bool {
        !self.stash.is_empty()
    }

    /// Whether a send of connection `key` is in flight.
    pub fn is_sending(&self, key: u64) -> bool {
        self.sending.contains_key(&key)
    }

    /// Sends each of `sends` (socket, bytes) at once, all in one
    /// `io_uring_enter`, and puts what each one did in `results` (bytes
    /// taken, or the error; `WouldBlock` for a full socket), in order.
    /// Non-blocking (`MSG_DONTWAIT`): the kernel completes them while
    /// submitting, so the bytes are not looked at after this returns (it
    /// waits for any that did not). Other completions met meanwhile are kept
    /// for the next [`Ring::complete`].
    pub fn send_now(&mut self, sends: &[(RawFd, &[u8])], results: &mut Vec<io::Result<usize>>) {
        results.clear();
        results.resize_with(sends.len(), || Err(io::ErrorKind::Interrupted.into()));
        let mut queued = 0usize;
        let mut done = 0usize;
        let mut next = sends.iter().enumerate().peekable();
        while next.peek().is_some() {
            {
                // One view of the queue for as many entries as it has room
                // for (each view publishes its tail when dropped).
                let mut sq = self.ring.submission();
                while !sq.is_full() {
                    let Some((i, &(fd, bytes))) = next.next() else {
                        break;
                    };
                    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                    let sqe = opcode::Send::new(types::Fd(fd), bytes.as_ptr(), len)
                        .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(OP_SEND_NOW | i as u64);
                    // SAFETY: `bytes` stays borrowed until this function has
                    // reaped the send's completion; the queue has room.
                    let _ = unsafe { sq.push(&sqe) };
                    queued += 1;
                }
            }
            if next.peek().is_some() {
                // Full: hand what is queued to the kernel to make room.
                let made_room = match self.ring.submit() {
                    Ok(_) if !self.ring.submission().is_full() => Ok(()),
                    Ok(_) => Err(io::Error::other("submission queue full")),
                    Err(e) => Err(e),
                };
                if let Err(e) = made_room {
                    for (i, _) in next.by_ref() {
                        results[i] = Err(io::Error::new(e.kind(), e.to_string()));
                        done += 1;
                    }
                }
            }
        }
        let mut reaped = 0usize;
        let mut submitted = self.ring.submit();
        while reaped < queued {
            if submitted.is_err() {
                // Nothing can be reaped if the ring refuses to enter; the
                // sends still in the queue are the kernel's until they run.
                submitted = self.ring.submit_and_wait(1);
                continue;
            }
            let mut got = 0usize;
            for cqe in self.ring.completion() {
                let data = cqe.user_data();
                if data & OP_MASK != OP_SEND_NOW {
                    self.stash.push((data, cqe.result(), cqe.flags()));
                    continue;
                }
                let i = (data & KEY_MASK) as usize;
                let res = cqe.result();
                results[i] = if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    Ok(res as usize)
                };
                got += 1;
            }
            reaped += got;
            if reaped < queued {
                // Not completed inline (unexpected for MSG_DONTWAIT): wait,
                // the bytes must stay untouched until the kernel is done.
                submitted = self.ring.submit_and_wait(1);
            }
        }
        debug_assert_eq!(reaped + done, sends.len());
    }

    /// Queues a multishot poll for `POLLOUT` on socket `fd` of connection
    /// `key`: like an edge-triggered `EPOLLOUT`, it reports once when armed
    /// on a writable socket, then each time space frees after a send found
    /// the socket full.
    pub fn poll_writable(&mut self, fd: RawFd, key: u64) -> io::Result<()> {
        let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
            .multi(true)
            .build()
            .user_data(OP_POLL_OUT | key);
        self.push(&sqe)
    }

    /// Cancels every operation on socket `fd` and hands the cancellation to
    /// the kernel at once (a receive or poll that holds the socket keeps it
    /// open past `close(2)` otherwise). Their last completions follow.
    pub fn cancel_fd(&mut self, fd: RawFd) -> io::Result<()> {
        let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
            .build()
            .user_data(OP_CANCEL);
        self.push(&sqe)?;
        self.submit().map(drop)
    }

    /// Cancels every operation on socket `fd` and closes it, both handed to
    /// the kernel in one `io_uring_enter` (one system call where
    /// [`Ring::cancel_fd`] and `close(2)` make two). On `Ok` the descriptor
    /// is the ring's: the caller forgets it (its number is free once the
    /// kernel has run the close, at the latest on the ring's next enter).
    /// On `Err` nothing was queued and the caller still owns it.
    pub fn cancel_and_close(&mut self, fd: RawFd) -> io::Result<()> {
        // No completion unless one fails (a cancel that finds nothing to
        // cancel: its completion is ignored like the others).
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(OP_CANCEL);
        let close = opcode::Close::new(types::Fd(fd))
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(OP_CLOSE);
        // Both or neither: room for two first. Not linked: a cancel that
        // finds nothing fails, and the close must run anyway; the socket
        // itself lives on until the last operation holding it has ended.
        let room = |ring: &mut IoUring| {
            let sq = ring.submission();
            sq.capacity() - sq.len()
        };
        if room(&mut self.ring) < 2 {
            self.ring.submit()?;
        }
        {
            let mut sq = self.ring.submission();
            if sq.capacity() - sq.len() < 2 {
                return Err(io::Error::other("submission queue full"));
            }
            // SAFETY: neither entry refers to memory (a descriptor only).
            unsafe {
                sq.push(&cancel)
                    .map_err(|_| io::Error::other("submission queue full"))?;
                sq.push(&close)
                    .map_err(|_| io::Error::other("submission queue full"))?;
            }
        }
        // Not submitted now, the close still runs on the next enter (the
        // caller no longer uses the descriptor): not an error for it.
        let _ = self.submit();
        Ok(())
    }

    /// Cancels connection `key`'s receive (to stop reading a peer that is
    /// owed too much); its last completion follows.
    pub fn cancel_recv(&mut self, key: u64) -> io::Result<()> {
        let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(OP_RECV | key))
            .build()
            .user_data(OP_CANCEL);
        self.push(&sqe)
    }

    /// Queues a multishot accept on listening socket `fd`.
    pub fn accept(&mut self, fd: RawFd) -> io::Result<()> {
        let sqe = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(OP_ACCEPT);
        self.push(&sqe)
    }

    #[inline]
    fn push(&mut self, sqe: &io_uring::squeue::Entry) -> io::Result<()> {
        // SAFETY: the entry refers to memory that outlives the operation:
        // the registered buffer ring, or a send's buffer kept in `sending`
        // until its completion.
        if unsafe { self.ring.submission().push(sqe) }.is_ok() {
            return Ok(());
        }
        // Full: hand what is queued to the kernel and try again.
        self.ring.submit()?;
        // SAFETY: as above.
        unsafe { self.ring.submission().push(sqe) }
            .map_err(|_| io::Error::other("submission queue full"))
    }

    /// Gives buffer `buf` back to the kernel (after its bytes were used).
    pub fn recycle(&mut self, buf: u16) {
        self.bufs.recycle(buf);
    }

    /// Receive buffers in circulation now.
    pub fn buffers(&self) -> u16 {
        self.bufs.live
    }

    /// Called about once a second with the time in ms: after `quiet` ms
    /// without running dry, the buffers in circulation are halved (not
    /// below the minimum), and their pages released as they come back.
    pub fn tune(&mut self, now: u64, quiet: u64) {
        if self.last_dry == 0 || self.exhausted_since_tune {
            self.last_dry = now;
            self.exhausted_since_tune = false;
            return;
        }
        if now.saturating_sub(self.last_dry) >= quiet && self.bufs.live > self.min_buffers {
            self.bufs.shrink(self.min_buffers);
            self.last_dry = now;
        }
    }

    /// The bytes a [`Recv::Data`] names.
    pub fn bytes(&self, buf: u16, len: usize) -> &[u8] {
        self.bufs.bytes(buf, len)
    }

    /// Where buffer `buf` (of at least `len` bytes) starts, for a caller
    /// that holds it (named by a completion, not yet recycled).
    pub fn buffer(&mut self, buf: u16, len: usize) -> *mut u8 {
        let b = &self.bufs;
        assert!(
            buf < b.count && len <= b.size as usize,
            "buffer out of range"
        );
        // SAFETY: in range (checked): within the buffers' mapping.
        unsafe { b.bufs.add(usize::from(buf) * b.size as usize) }
    }

    /// Publishes recycled buffers and hands every queued operation to the
    /// kernel: one `io_uring_enter` (none when nothing is queued).
    pub fn submit(&mut self) -> io::Result<usize> {
        self.bufs.publish();
        if self.ring.submission().is_empty() {
            return Ok(0);
        }
        self.ring.submit()
    }

    /// Submits, then waits until at least one completion is there.
    pub fn submit_and_wait(&mut self) -> io::Result<usize> {
        self.bufs.publish();
        self.ring.submit_and_wait(1)
    }

    /// Hands out every completion waiting in the ring.
    pub fn complete(&mut self, mut each: impl FnMut(Event)) {
        let mut exhausted = 0;
        // What `send_now` set aside first (it came first), then the rest.
        let mut all = std::mem::take(&mut self.stash);
        loop {
            all.extend((self.ring.completion()).map(|c| (c.user_data(), c.result(), c.flags())));
            if !self.ring.submission().cq_overflow() {
                break;
            }
            // Completions the full queue could not take wait in the kernel
            // (receives that ended among them): an enter with GETEVENTS
            // moves them in, after the ones just read. Without it they
            // would never come, and the ring's descriptor stay readable.
            if self.ring.submit().is_err() {
                break;
            }
        }
        for (data, res, flags) in all.drain(..) {
            let key = data & !OP_MASK;
            let event = match data & OP_MASK {
                OP_RECV => {
                    let r = recv_event(key, res, flags);
                    exhausted += u64::from(matches!(
                        r,
                        Recv::Rearm {
                            out_of_buffers: true,
                            ..
                        }
                    ));
                    Event::Recv(r)
                }
                OP_SEND => {
                    let buf = self.sending.remove(&key).unwrap_or_default();
                    let result = if res < 0 {
                        Err(io::Error::from_raw_os_error(-res))
                    } else {
                        Ok(res as usize)
                    };
                    Event::Sent { key, result, buf }
                }
                OP_POLL_OUT => Event::Writable {
                    key,
                    rearm: !cqueue::more(flags),
                },
                OP_ACCEPT => {
                    let socket = if res < 0 {
                        Err(io::Error::from_raw_os_error(-res))
                    } else {
                        // SAFETY: a successful accept's result is a new descriptor, ours.
                        Ok(unsafe { OwnedFd::from_raw_fd(res) })
                    };
                    Event::Accepted {
                        socket,
                        rearm: !cqueue::more(flags),
                    }
                }
                _ => continue,
            };
            each(event);
        }
        self.exhausted += exhausted;
        if exhausted > 0 {
            // Dry: more connections are busy at once than there are
            // buffers. Double them (published by the next submit, before
            // the receives are armed again).
            self.bufs.grow();
            self.exhausted_since_tune = true;
        }
        self.stash = all; // empty; its capacity kept
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // A send still in flight may be read by the kernel until the ring's
        // teardown has cancelled it, after this returns: its buffer is
        // leaked rather than freed under it (only at a core's exit).
        for (_, buf) in self.sending.drain() {
            std::mem::forget(buf);
        }
    }
}

/// What a receive completion with result `res` and `flags` means.
fn recv_event(key: u64, res: i32, flags: u32) -> Recv {
    match (res, cqueue::buffer_select(flags)) {
        (n, Some(buf)) if n > 0 => Recv::Data {
            key,
            buf,
            len: n as usize,
            rearm: !cqueue::more(flags),
        },
        (0, _) => Recv::End { key, error: None },
        (e, _) if e == -libc::ENOBUFS => Recv::Rearm {
            key,
            out_of_buffers: true,
        },
        (e, _) if e < 0 => Recv::End {
            key,
            error: Some(-e),
        },
        _ => Recv::Rearm {
            key,
            out_of_buffers: false,
        },
    }
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
