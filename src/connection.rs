//! Where a byte arrives first: the socket code of a client connection up to
//! the 101 (the open WebSocket continues in `websocket.rs`).
//!
//! A connection is one task on its core. It waits for readiness (never with a
//! read in flight, so no buffer is pinned while idle and dropping a wait is
//! safe), reads with non-blocking `recv` into the core's shared buffer, hands
//! the bytes to the sans-IO core (`proto`), and answers. A gateway connection
//! whose session lives on another core is handed over to that core here. Every
//! refusal ends in a lingering close, so the answer is not lost to a reset.
//! After the 101 the socket leaves monoio for the core's reactor (`reactor.rs`).

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::{timeout_at, Instant};

use crate::log::{self, Level, Quoted};
use crate::mailbox::{Adoption, CoreMsg};
use crate::proto::cookie::{find_session, SessionId};
use crate::proto::handshake::{write_101, write_session_204, Endpoint, Rejection, Route};
use crate::proto::http::{parse_request, write_response, HeadError};
use crate::server::{Core, READ_BUF_SIZE};

/// How long a closing connection waits to flush and for the peer to finish.
pub(crate) const LINGER: Duration = Duration::from_secs(2);
/// Bytes read and discarded at most while lingering.
pub(crate) const LINGER_DISCARD: usize = 1 << 20;

/// Serves one accepted TCP connection to the end.
pub async fn serve(stream: TcpStream, peer: SocketAddr, core: Rc<Core>) {
    // TCP_NODELAY is inherited from the listener (server.rs): no syscall here.
    let conn = Conn {
        fd: stream.as_raw_fd(),
        stream,
        peer,
        core,
    };
    let mut out = Vec::new();
    // Boxed: the handshake's state must not inflate the long-lived part of
    // this task (an idle connection is mostly this future's size).
    let Some(up) = Box::pin(conn.handshake(&mut out)).await else {
        Box::pin(conn.linger_close(out)).await;
        return;
    };
    let owner = up.session.owner(conn.core.shared.cores);
    if up.endpoint == Endpoint::Gateway && owner != conn.core.index {
        // A resumed session lives on another core: hand the socket over, with
        // the bytes already read, once the 101 is out.
        if Box::pin(conn.flush(&mut out)).await.is_err() {
            conn.core.shared.release_connection();
            Box::pin(conn.linger_close(out)).await;
            return;
        }
        let Conn {
            stream, peer, core, ..
        } = conn;
        // SAFETY: into_raw_fd gives up ownership of a valid, open descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(stream.into_raw_fd()) };
        core.shared.mailboxes[owner].post(CoreMsg::Adopt(Adoption {
            fd,
            peer,
            session: up.session,
            cookie_present: up.cookie_present,
            client: up.client,
            early: up.early,
        }));
        return;
    }
    // The socket leaves monoio: from here on the core's reactor watches it.
    let Conn { stream, core, .. } = conn;
    // SAFETY: into_raw_fd gives up ownership of a valid, open descriptor (the
    // handshake's readiness waits have completed, so nothing else holds it).
    let fd = unsafe { OwnedFd::from_raw_fd(stream.into_raw_fd()) };
    crate::websocket::open(core, fd, up, out).await;
}

/// Runs a connection handed over by another core.
pub async fn adopt(adoption: Adoption, core: Rc<Core>) {
    let up = Upgraded {
        endpoint: Endpoint::Gateway,
        session: adoption.session,
        cookie_present: adoption.cookie_present,
        client: adoption.client,
        early: adoption.early,
    };
    crate::websocket::open(core, adoption.fd, up, Vec::new()).await;
}

/// One client connection's socket and its core.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) fd: RawFd,
    pub(crate) peer: SocketAddr,
    pub(crate) core: Rc<Core>,
}

/// A connection that answered 101.
pub(crate) struct Upgraded {
    pub(crate) endpoint: Endpoint,
    pub(crate) session: SessionId,
    /// Whether the request carried a valid session cookie.
    pub(crate) cookie_present: bool,
    /// The client address for logs.
    pub(crate) client: String,
    /// Bytes that arrived behind the request head: the start of the stream.
    pub(crate) early: Vec<u8>,
}

/// What to do after looking at the bytes of a request head so far.
enum Decision {
    NeedMore,
    /// A response is in the core's write buffer; close after it.
    Respond,
    /// The 101 is in the core's write buffer.
    Upgrade {
        endpoint: Endpoint,
        session: SessionId,
        cookie_present: bool,
        client: String,
        head_len: usize,
    },
}

pub(crate) fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Conn {
    /// Reads the request head and answers it. Returns the upgraded connection,
    /// or `None` with any response left in `out` for [`Conn::linger_close`].
    async fn handshake(&self, out: &mut Vec<u8>) -> Option<Upgraded> {
        let deadline = Instant::now() + self.core.shared.config.handshake_timeout;
        let mut head: Vec<u8> = Vec::new();
        // Clients send the head right behind the connect, so it has usually
        // arrived by the time the accept completes: read first, wait after.
        let mut wait = false;
        loop {
            if wait {
                match timeout_at(deadline, self.stream.readable(false)).await {
                    Err(_) => {
                        self.reject(Rejection::Timeout, None);
                        self.take_output(out);
                        return None;
                    }
                    Ok(Err(_)) => return None,
                    Ok(Ok(())) => {}
                }
            }
            wait = true;
            let (decision, early) = {
                let rbuf = &mut *self.core.read_buf.borrow_mut();
                let n = match crate::sys::recv(self.fd, rbuf) {
                    Ok(0) => return None,
                    Ok(n) => n,
                    Err(e) if would_block(&e) => continue,
                    Err(_) => return None,
                };
                let fresh = head.is_empty();
                if !fresh {
                    head.extend_from_slice(&rbuf[..n]);
                }
                let data: &[u8] = if fresh { &rbuf[..n] } else { &head };
                let decision = self.decide(data);
                let early = match decision {
                    Decision::Upgrade { head_len, .. } if head_len < data.len() => {
                        data[head_len..].to_vec()
                    }
                    _ => Vec::new(),
                };
                if matches!(decision, Decision::NeedMore) && fresh {
                    head.extend_from_slice(&rbuf[..n]);
                }
                (decision, early)
            };
            match decision {
                Decision::NeedMore => continue,
                Decision::Respond => {
                    self.take_output(out);
                    return None;
                }
                Decision::Upgrade {
                    endpoint,
                    session,
                    cookie_present,
                    client,
                    ..
                } => {
                    self.take_output(out);
                    return Some(Upgraded {
                        endpoint,
                        session,
                        cookie_present,
                        client,
                        early,
                    });
                }
            }
        }
    }

    /// Sends what is in the core's write buffer now; keeps the rest in `out`.
    pub(crate) fn take_output(&self, out: &mut Vec<u8>) {
        let mut wbuf = self.core.write_buf.borrow_mut();
        if let Err(e) = self.send_now(&wbuf, out) {
            log::emit(
                Level::Debug,
                "send_failed",
                &[("peer", &self.peer), ("error", &e)],
            );
        }
        wbuf.clear();
        if wbuf.capacity() > 4 * READ_BUF_SIZE {
            *wbuf = Vec::with_capacity(64 * 1024);
        }
    }

    /// Sends `batch` behind any pending `out`, as far as the socket takes it
    /// without blocking; the remainder is appended to `out`.
    pub(crate) fn send_now(&self, batch: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if !out.is_empty() {
            out.extend_from_slice(batch);
            return self.try_flush(out);
        }
        let sent = self.send_some(batch)?;
        out.extend_from_slice(&batch[sent..]);
        Ok(())
    }

    /// Sends as much of `out` as the socket takes now.
    pub(crate) fn try_flush(&self, out: &mut Vec<u8>) -> io::Result<()> {
        let sent = self.send_some(out)?;
        out.drain(..sent);
        if out.is_empty() {
            *out = Vec::new();
        }
        Ok(())
    }

    /// Non-blocking sends until `data` is out or the socket is full.
    pub(crate) fn send_some(&self, data: &[u8]) -> io::Result<usize> {
        let mut sent = 0;
        while sent < data.len() {
            match crate::sys::send(self.fd, &data[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    /// Waits until `out` is fully sent.
    pub(crate) async fn flush(&self, out: &mut Vec<u8>) -> io::Result<()> {
        while !out.is_empty() {
            self.stream.writable(false).await?;
            self.try_flush(out)?;
        }
        Ok(())
    }

    /// Decides on a request head and writes the response into the core's buffer.
    fn decide(&self, data: &[u8]) -> Decision {
        let shared = &self.core.shared;
        let (req, head_len) = match parse_request(data) {
            Ok(None) => return Decision::NeedMore,
            Ok(Some(parsed)) => parsed,
            Err(HeadError::TooLarge) => return self.reject(Rejection::HeadTooLarge, None),
            Err(HeadError::Malformed(why)) => return self.reject(Rejection::BadRequest(why), None),
        };
        let mut wbuf = self.core.write_buf.borrow_mut();
        let route = match shared.routes.route(&req) {
            Ok(route) => route,
            Err(rejection) => {
                drop(wbuf);
                return self.reject(rejection, req.forwarded_for);
            }
        };
        match route {
            Route::Health if shared.is_draining() => {
                write_response(&mut wbuf, 503, &[], "draining");
                Decision::Respond
            }
            Route::Health => {
                write_response(&mut wbuf, 200, &[], "ok");
                Decision::Respond
            }
            Route::Session => {
                let id = find_session(req.cookie_headers(), &shared.config.cookie_name)
                    .unwrap_or_else(SessionId::random);
                write_session_204(&mut wbuf, &shared.cookie, id);
                Decision::Respond
            }
            Route::Upgrade { .. } if shared.is_draining() => {
                drop(wbuf);
                self.reject(Rejection::Unavailable("draining"), req.forwarded_for)
            }
            Route::Upgrade { endpoint, key } => {
                if !shared.try_acquire_connection() {
                    drop(wbuf);
                    return self.reject(
                        Rejection::Unavailable("connection limit reached"),
                        req.forwarded_for,
                    );
                }
                let known = find_session(req.cookie_headers(), &shared.config.cookie_name);
                let session = match known {
                    Some(id) => id,
                    // A new session is minted on this core, so it needs no hand-over.
                    None => SessionId::random_owned_by(self.core.index, shared.cores),
                };
                if known.is_some() && endpoint == Endpoint::Echo {
                    // The echo path keeps no sessions: its cookie never finds one.
                    self.core.stats.sticky_miss();
                }
                write_101(&mut wbuf, key, &shared.cookie, session);
                self.core.stats.upgraded();
                log::emit(
                    Level::Debug,
                    "upgrade",
                    &[
                        ("core", &self.core.index),
                        ("session", &session),
                        ("cookie", &if known.is_some() { "kept" } else { "minted" }),
                        ("client", &ClientAddr(self.peer, req.forwarded_for)),
                    ],
                );
                Decision::Upgrade {
                    endpoint,
                    session,
                    cookie_present: known.is_some(),
                    client: ClientAddr(self.peer, req.forwarded_for).to_string(),
                    head_len,
                }
            }
        }
    }

    /// Writes a refusal into the core's buffer, counts and logs it.
    fn reject(&self, rejection: Rejection, forwarded_for: Option<&[u8]>) -> Decision {
        rejection.write(&mut self.core.write_buf.borrow_mut());
        self.core.stats.rejected(rejection.status());
        let level = if matches!(rejection, Rejection::NotFound | Rejection::Timeout) {
            Level::Debug
        } else {
            Level::Info
        };
        log::emit(
            level,
            "rejected",
            &[
                ("status", &rejection.status()),
                ("reason", &rejection.reason()),
                ("client", &ClientAddr(self.peer, forwarded_for)),
            ],
        );
        Decision::Respond
    }

    /// Closes the TCP connection without losing what we sent: flush, send FIN,
    /// then read and discard until the peer closes too (closing with unread
    /// input would send RST, which can destroy our last frame in flight).
    pub(crate) async fn linger_close(&self, mut out: Vec<u8>) {
        let deadline = Instant::now() + LINGER;
        if timeout_at(deadline, self.flush(&mut out)).await.is_ok() {
            crate::sys::shutdown(self.fd, Shutdown::Write);
            let mut discarded = 0;
            while discarded < LINGER_DISCARD {
                match timeout_at(deadline, self.stream.readable(false)).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
                let rbuf = &mut *self.core.read_buf.borrow_mut();
                match crate::sys::recv(self.fd, rbuf) {
                    Ok(0) => break,
                    Ok(n) => discarded += n,
                    Err(e) if would_block(&e) => {}
                    Err(_) => break,
                }
            }
        }
        // On io_uring a dropped socket is closed only when the ring is next
        // entered; shutting it down first ends the TCP connection right now.
        crate::sys::shutdown(self.fd, Shutdown::Both);
    }
}

/// The client address for logs: `X-Forwarded-For` when present, quoted.
pub(crate) struct ClientAddr<'a>(SocketAddr, Option<&'a [u8]>);

impl std::fmt::Display for ClientAddr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(xff) => write!(f, "{}", Quoted(xff)),
            None => write!(f, "{}", self.0),
        }
    }
}
