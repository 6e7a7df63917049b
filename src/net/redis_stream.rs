//! The byte stream of one Redis connection: a non-blocking TCP socket,
//! plain or with TLS (`rediss://`, feature `redis-tls`). Bytes move with
//! non-blocking `send`/`recv` on the socket's descriptor; the caller waits
//! with monoio's readiness (safe to drop on both drivers, DESIGN §9), so a
//! TLS record is never lost to a dropped read. With TLS, rustls's
//! `ClientConnection` is driven by hand: `read_tls` + `process_new_packets`
//! in, `write_tls` out, nothing blocking.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use monoio::net::TcpStream;
use monoio::time::{timeout_at, Instant};

#[cfg(feature = "redis-tls")]
use super::redis_tls::TlsSetup;
use super::socket::{self, would_block};
use crate::proto::resp::{self, Value};
use crate::sys;

/// Most bytes read from the socket per `recv`.
const READ_CHUNK: usize = 64 * 1024;

/// The TLS settings a connection is made with (nothing without the feature).
#[cfg(feature = "redis-tls")]
pub type Tls = TlsSetup;
/// The TLS settings a connection is made with (nothing without the feature).
#[cfg(not(feature = "redis-tls"))]
#[derive(Debug, Clone)]
pub enum Tls {}

/// One connection to a Redis server.
pub struct RedisStream {
    tcp: TcpStream,
    #[cfg(feature = "redis-tls")]
    tls: Option<Box<rustls::ClientConnection>>,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

fn closed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, what.to_string())
}

impl RedisStream {
    /// Connects to `addr` before `deadline`; with `tls`, also completes the
    /// TLS handshake (the certificate verified for `host`). Anything the
    /// server sent right behind the handshake is appended to `inbuf`.
    #[cfg_attr(not(feature = "redis-tls"), allow(unused_variables, clippy::ptr_arg))]
    pub async fn connect(
        addr: SocketAddr,
        host: &str,
        tls: Option<&Tls>,
        inbuf: &mut Vec<u8>,
        deadline: Instant,
    ) -> io::Result<RedisStream> {
        let tcp = timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out("connect timed out"))??;
        let _ = tcp.set_nodelay(true);
        #[cfg_attr(not(feature = "redis-tls"), allow(unused_mut))]
        let mut stream = RedisStream {
            tcp,
            #[cfg(feature = "redis-tls")]
            tls: None,
        };
        if let Some(tls) = tls {
            #[cfg(feature = "redis-tls")]
            {
                stream.tls = Some(Box::new(tls.connect(host)?));
                stream.handshake(inbuf, deadline).await?;
            }
            #[cfg(not(feature = "redis-tls"))]
            match *tls {}
        }
        Ok(stream)
    }

    /// The socket's descriptor.
    pub fn fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }

    /// Whether TLS records wait to be written (the caller waits for
    /// [`RedisStream::writable`] and calls [`RedisStream::send_some`]).
    pub fn wants_write(&self) -> bool {
        #[cfg(feature = "redis-tls")]
        if let Some(tls) = &self.tls {
            return tls.wants_write();
        }
        false
    }

    /// Sends as much of `data` as the socket takes now (with TLS: as much
    /// as rustls takes once its earlier records are out); returns how many
    /// of `data`'s bytes were taken.
    pub fn send_some(&mut self, data: &[u8]) -> io::Result<usize> {
        #[cfg(feature = "redis-tls")]
        if let Some(tls) = &mut self.tls {
            use std::io::Write;
            let fd = self.tcp.as_raw_fd();
            flush_tls(tls, fd)?;
            if tls.wants_write() || data.is_empty() {
                return Ok(0);
            }
            let n = tls.writer().write(&data[..data.len().min(READ_CHUNK)])?;
            flush_tls(tls, fd)?;
            return Ok(n);
        }
        socket::send_some(self.tcp.as_raw_fd(), data)
    }

    /// Reads everything the socket has now and appends what it carries to
    /// `inbuf`. A closed connection (or a TLS error, named) is an error.
    pub fn recv_all(&mut self, inbuf: &mut Vec<u8>) -> io::Result<()> {
        #[cfg(feature = "redis-tls")]
        if let Some(tls) = &mut self.tls {
            return recv_tls(tls, self.tcp.as_raw_fd(), inbuf);
        }
        loop {
            match sys::recv_append(self.tcp.as_raw_fd(), inbuf, READ_CHUNK) {
                Ok(0) => return Err(closed("closed by Redis")),
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Resolves when the socket may have bytes (safe to drop).
    pub async fn readable(&self) -> io::Result<()> {
        self.tcp.readable(false).await
    }

    /// Resolves when the socket may take bytes (safe to drop).
    pub async fn writable(&self) -> io::Result<()> {
        self.tcp.writable(false).await
    }

    /// Sends all of `out` before `deadline`.
    pub async fn write_all(&mut self, out: &mut Vec<u8>, deadline: Instant) -> io::Result<()> {
        loop {
            let n = self.send_some(out)?;
            out.drain(..n);
            if out.is_empty() && !self.wants_write() {
                return Ok(());
            }
            timeout_at(deadline, self.writable())
                .await
                .map_err(|_| timed_out("write timed out"))??;
        }
    }

    /// The next value Redis sends, before `deadline`; `what` names the wait
    /// in a timeout.
    pub async fn read_value(
        &mut self,
        inbuf: &mut Vec<u8>,
        deadline: Instant,
        what: &str,
    ) -> io::Result<Value> {
        loop {
            if let Some((v, n)) = resp::parse(inbuf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
            {
                inbuf.drain(..n);
                return Ok(v);
            }
            let before = inbuf.len();
            self.recv_all(inbuf)?;
            if inbuf.len() == before {
                timeout_at(deadline, self.readable())
                    .await
                    .map_err(|_| timed_out(what))??;
            }
        }
    }

    /// Drives the TLS handshake to its end.
    #[cfg(feature = "redis-tls")]
    async fn handshake(&mut self, inbuf: &mut Vec<u8>, deadline: Instant) -> io::Result<()> {
        let fd = self.tcp.as_raw_fd();
        loop {
            let tls = self.tls.as_mut().expect("a TLS connection");
            flush_tls(tls, fd)?;
            if !tls.is_handshaking() {
                if !tls.wants_write() {
                    return Ok(());
                }
            } else if !tls.wants_write() {
                let before = inbuf.len();
                recv_tls(tls, fd, inbuf).map_err(|e| {
                    let e = e.to_string();
                    let e = e.strip_prefix("tls: ").unwrap_or(&e);
                    io::Error::new(io::ErrorKind::InvalidData, format!("tls handshake: {e}"))
                })?;
                if !tls.is_handshaking() || tls.wants_write() || inbuf.len() != before {
                    continue;
                }
                timeout_at(deadline, self.tcp.readable(false))
                    .await
                    .map_err(|_| timed_out("tls handshake timed out"))??;
                continue;
            }
            timeout_at(deadline, self.tcp.writable(false))
                .await
                .map_err(|_| timed_out("tls handshake timed out"))??;
        }
    }
}

/// `read`/`write` on a non-blocking descriptor, for rustls.
#[cfg(feature = "redis-tls")]
struct Fd(RawFd);

#[cfg(feature = "redis-tls")]
impl io::Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv(self.0, buf)
    }
}

#[cfg(feature = "redis-tls")]
impl io::Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::send(self.0, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes rustls's pending records until done or the socket is full.
#[cfg(feature = "redis-tls")]
fn flush_tls(tls: &mut rustls::ClientConnection, fd: RawFd) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(&mut Fd(fd)) {
            Ok(_) => {}
            Err(e) if would_block(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads every record the socket has, decrypts, appends the plaintext.
#[cfg(feature = "redis-tls")]
fn recv_tls(tls: &mut rustls::ClientConnection, fd: RawFd, inbuf: &mut Vec<u8>) -> io::Result<()> {
    use std::io::Read;
    loop {
        let eof = match tls.read_tls(&mut Fd(fd)) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if would_block(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Err(e) = tls.process_new_packets() {
            // Tell the server why (the alert), as far as the socket takes it.
            let _ = flush_tls(tls, fd);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("tls: {e}"),
            ));
        }
        let mut reader = tls.reader();
        let mut plain = [0u8; 16 * 1024];
        loop {
            match reader.read(&mut plain) {
                Ok(0) => return Err(closed("closed by Redis (tls close_notify)")),
                Ok(n) => inbuf.extend_from_slice(&plain[..n]),
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(closed(&format!("closed by Redis ({e})"))),
            }
        }
        if eof {
            return Err(closed("closed by Redis"));
        }
    }
}
