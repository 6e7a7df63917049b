//! The operating system below everything else: the few system calls monoio
//! does not wrap the way we need them, and the log ([`log`]). Nothing here
//! imports another module of the crate.
//!
//! Reads and writes on WebSocket connections are plain non-blocking
//! `recv`/`send` (`MSG_DONTWAIT`) issued after monoio reports readiness: the
//! buffer is only borrowed for the duration of the call, so one per-core buffer
//! serves every connection and an idle connection holds none.

use std::io;
use std::os::fd::RawFd;

pub mod entropy;
pub mod hash;
pub mod log;

/// Which io driver a runtime ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Driver {
    /// io_uring.
    IoUring,
    /// epoll (monoio's legacy driver), where io_uring is blocked or forced off.
    Epoll,
}

impl Driver {
    /// The name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// Which driver moves the bytes of open connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DataPath {
    Uring,
    Epoll,
}

impl DataPath {
    /// The name in logs, metrics and `--io`.
    pub fn name(self) -> &'static str {
        match self {
            DataPath::Uring => "uring",
            DataPath::Epoll => "epoll",
        }
    }
}

/// Bytes allowed in names that appear unquoted in protocol lines and logs.
pub fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

/// The CPUs this process may run on (`sched_getaffinity`), in ascending order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET only reads the set.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: as above; CPU_SET writes inside the set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t; 0 means the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `TCP_NODELAY` (on a listener: inherited by every accepted socket).
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    set_flag(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY)
}

/// A listening TCP socket, non-blocking, `SO_REUSEADDR` and optionally
/// `SO_REUSEPORT`, bound to `addr` (port 0 picks a free port; read it back
/// with `local_addr`). Made here rather than by monoio so that the process
/// can bind every core's socket before any core starts: a port resolved from
/// port 0 is then never released and re-bound (another process could take it
/// in between).
pub fn listener(
    addr: std::net::SocketAddr,
    reuse_port: bool,
    backlog: i32,
) -> io::Result<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain system call; the descriptor is owned right below.
    let fd = unsafe { libc::socket(domain, flags, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns; the listener
    // closes it on every path below.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    set_flag(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR)?;
    if reuse_port {
        set_flag(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT)?;
    }
    // SAFETY: sockaddr_storage is plain data, large enough for both families.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        std::net::SocketAddr::V4(a) => {
            // SAFETY: storage is large enough and suitably aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(a) => {
            // SAFETY: storage is large enough and suitably aligned for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: `storage` holds a sockaddr of `len` bytes for `fd`'s family.
    let rc = unsafe {
        libc::bind(
            fd,
            (&storage as *const libc::sockaddr_storage).cast(),
            len as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain system call on a bound socket.
    if unsafe { libc::listen(fd, backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(listener)
}

fn set_flag(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid c_int for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Non-blocking receive into `buf`. `Ok(0)` is end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of buf.len() bytes for the call.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Non-blocking receive appended to `vec`, reading at most `max` bytes.
pub fn recv_append(fd: RawFd, vec: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    vec.reserve(max);
    let spare = vec.spare_capacity_mut();
    let len = spare.len().min(max);
    loop {
        // SAFETY: the spare capacity is valid for writes of `len` bytes; recv
        // initializes the first `n` of them, and only those are exposed below.
        let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), len, libc::MSG_DONTWAIT) };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: the kernel wrote `n` bytes right after the current length.
            unsafe { vec.set_len(vec.len() + n) };
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Non-blocking send; never raises SIGPIPE.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for reads of buf.len() bytes for the call.
        let n = unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `shutdown(2)`; errors (e.g. already disconnected) are irrelevant to callers.
pub fn shutdown(fd: RawFd, how: std::net::Shutdown) {
    let how = match how {
        std::net::Shutdown::Read => libc::SHUT_RD,
        std::net::Shutdown::Write => libc::SHUT_WR,
        std::net::Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: shutdown on any fd value is memory-safe; failure is reported via errno.
    unsafe { libc::shutdown(fd, how) };
}

/// The host name, for the default `--node-id`.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its full length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "wsgate".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name: String = buf[..end]
        .iter()
        .map(|&b| b as char)
        .filter(|c| is_name_byte(*c as u8))
        .collect();
    if name.is_empty() {
        "wsgate".into()
    } else {
        name
    }
}

/// Bytes in a TCP socket's send queue not yet acknowledged by the peer
/// (`SIOCOUTQ`); 0 if the kernel cannot say.
pub fn unacked_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one c_int through the pointer.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if rc == 0 && n > 0 {
        n as usize
    } else {
        0
    }
}

/// Makes the process's descriptor table as large as the soft `RLIMIT_NOFILE`
/// (capped at 2^20) now, while the process is single-threaded: duplicates a
/// descriptor to the highest slot and closes it again (the table never
/// shrinks). Best effort.
pub fn grow_fd_table() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let n = (lim.rlim_cur as usize).min(1 << 20);
    if n < 2 {
        return;
    }
    let Ok(devnull) = std::fs::File::open("/dev/null") else {
        return;
    };
    // SAFETY: dup2 of a valid descriptor onto a free high slot, closed at once.
    unsafe {
        let high = (n - 1) as libc::c_int;
        if libc::fcntl(high, libc::F_GETFD) == -1
            && libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&devnull), high) == high
        {
            libc::close(high);
        }
    }
}

/// Returns the heap's free pages to the system (glibc's `malloc_trim`);
/// a no-op on other C libraries.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Fixes glibc's trim and mmap thresholds (call once, before the cores
/// start). Left alone, glibc raises both each time a large block is freed
/// (up to 32 MiB): after a table of 30,000 topics is freed, the top of a
/// core's arena then stays resident and `malloc_trim` does not reach it
/// (it trims the top of the main arena only). Fixed, the top of every
/// arena is given back once more than 1 MiB of it is free, and blocks of
/// 128 KiB or more live in their own mappings. A no-op on other C
/// libraries.
pub fn tune_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters; called before
    // other threads allocate.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Free memory the heap holds beyond which [`trim_heap_if_slack`] gives it
/// back to the system.
pub const HEAP_SLACK: usize = 4 << 20;

/// Gives the heap's free pages back when it holds more than [`HEAP_SLACK`]
/// bytes free (after a burst: a subscribe storm's presence lines, a
/// fan-out's buffers). Cheap to ask; called about once a second.
pub fn trim_heap_if_slack() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        if info.fordblks > HEAP_SLACK {
            trim_heap();
        }
    }
}
