//! The backend hooks' HTTP/1.1 client, one per core and hook: the auth
//! hook (`--auth-hook`, DESIGN.md §11) and the events hook
//! (`--events-hook`, §12).
//!
//! The wire format is sans-IO in `proto/http_client.rs` (and the auth
//! hook's messages in `auth/hook.rs`); this module only moves its bytes. Keep-alive connections are reused (at most `concurrency` kept
//! idle); at most `concurrency` calls are in flight per core and the others
//! wait their turn, oldest first. The whole call (waiting for a turn,
//! connecting, writing, reading) is bounded by the timeout, after which the
//! verdict is `Fail("timeout")` and the connection it was using is dropped,
//! never pooled. A pooled connection that the backend closed before it
//! answered a byte is retried once on a fresh connection.
//!
//! Reads wait with `readable()` and then `recv` into the call's own buffer,
//! so a timed-out call drops no in-flight read, and an idle pooled
//! connection holds no buffer (DESIGN §9).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
#[cfg(feature = "auth")]
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
#[cfg(feature = "auth")]
use std::time::Instant;

use monoio::net::TcpStream;

#[cfg(feature = "auth")]
use crate::auth::{verdict, write_request, HookRequest, HookVerdict};
#[cfg(feature = "auth")]
use crate::metrics::hook::{HookResult, HookStats};
use crate::net::socket::{self, would_block};
use crate::proto::http_client::{parse_response, parse_response_at_eof, write_post, HookTarget};
use crate::sys;

/// Bytes asked of the kernel per `recv` (a hook answer is usually one read).
const READ_CHUNK: usize = 16 * 1024;

/// A core's client of one hook. Core-local (`!Send`): share it on its core
/// as `Rc<HookClient>`; every method takes `&self`.
pub struct HookClient {
    target: HookTarget,
    addr: SocketAddr,
    timeout: Duration,
    #[cfg(feature = "auth")]
    stats: Option<Arc<HookStats>>,
    /// Keep-alive connections between calls, most recently used last.
    idle: RefCell<Vec<TcpStream>>,
    max_idle: usize,
    turns: Turns,
}

/// A complete answer (status and body), or why there is none: a fixed
/// word (`timeout`, `connect`, `closed`, or a response parse error's).
pub type Answer = Result<(u16, Vec<u8>), &'static str>;

/// How one attempt on one connection ended.
enum Trip {
    /// The backend closed or reset the connection before any response byte:
    /// on a pooled connection, worth one more try on a fresh one.
    Unanswered,
    Done(Answer),
}

impl HookClient {
    /// A client of `target`, connecting to `addr` (resolved once, at start);
    /// each call is bounded by `timeout`; at most `concurrency` calls (at
    /// least 1) are in flight and as many connections kept idle.
    #[cfg(feature = "auth")]
    pub fn new(
        target: HookTarget,
        addr: SocketAddr,
        timeout: Duration,
        concurrency: usize,
        stats: Arc<HookStats>,
    ) -> HookClient {
        let mut c = HookClient::plain(target, addr, timeout, concurrency);
        c.stats = Some(stats);
        c
    }

    /// A client without the auth hook's counters (the events hook keeps
    /// its own).
    pub fn plain(
        target: HookTarget,
        addr: SocketAddr,
        timeout: Duration,
        concurrency: usize,
    ) -> HookClient {
        let concurrency = concurrency.max(1);
        HookClient {
            target,
            addr,
            timeout,
            #[cfg(feature = "auth")]
            stats: None,
            idle: RefCell::new(Vec::new()),
            max_idle: concurrency,
            turns: Turns::new(concurrency),
        }
    }

    /// Asks the hook about one upgrade. Never fails otherwise than with
    /// [`HookVerdict::Fail`]; counted in the stats with its latency.
    #[cfg(feature = "auth")]
    pub async fn call(&self, req: &HookRequest<'_>) -> HookVerdict {
        let started = Instant::now();
        let mut request = Vec::with_capacity(512);
        write_request(&self.target, req, &mut request);
        let verdict = match self.send(&request).await {
            Ok((status, body)) => verdict(status, &body),
            Err(why) => HookVerdict::Fail(why),
        };
        if let Some(stats) = &self.stats {
            stats.record(result_of(&verdict), started.elapsed());
        }
        verdict
    }

    /// POSTs `body` (`content_type`) to the hook's URL: its answer, or why
    /// there is none, within the client's timeout (waiting for a turn
    /// included).
    pub async fn post(&self, content_type: &str, body: &[u8]) -> Answer {
        let mut request = Vec::with_capacity(body.len() + 256);
        write_post(&self.target, content_type, body, &mut request);
        self.send(&request).await
    }

    async fn send(&self, request: &[u8]) -> Answer {
        match monoio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(answer) => answer,
            // Dropping `exchange` dropped its connection and gave its turn back.
            Err(_) => Err("timeout"),
        }
    }

    /// Connections kept idle right now.
    pub fn idle_connections(&self) -> usize {
        self.idle.borrow().len()
    }

    async fn exchange(&self, request: &[u8]) -> Answer {
        let _turn = self.turns.take().await;
        if let Some(stream) = self.take_idle() {
            match self.round_trip(stream, request).await {
                Trip::Done(answer) => return answer,
                Trip::Unanswered => {} // closed while idle: once more, fresh
            }
        }
        let stream = match TcpStream::connect_addr(self.addr).await {
            Ok(stream) => stream,
            Err(_) => return Err("connect"),
        };
        let _ = stream.set_nodelay(true);
        match self.round_trip(stream, request).await {
            Trip::Done(answer) => answer,
            Trip::Unanswered => Err("closed"),
        }
    }

    /// The most recently used idle connection that still looks open (a
    /// non-blocking `recv` finds nothing to read: no FIN, no stray bytes).
    fn take_idle(&self) -> Option<TcpStream> {
        loop {
            let stream = self.idle.borrow_mut().pop()?;
            let mut probe = [0u8; 1];
            match sys::recv(stream.as_raw_fd(), &mut probe) {
                Err(e) if would_block(&e) => return Some(stream),
                _ => continue, // closed, reset, or talking out of turn: drop it
            }
        }
    }

    fn give_back(&self, stream: TcpStream) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < self.max_idle {
            idle.push(stream);
        }
    }

    /// Writes the request and reads one response. The connection goes back
    /// to the pool only after a complete keep-alive response with nothing
    /// after it.
    async fn round_trip(&self, stream: TcpStream, request: &[u8]) -> Trip {
        let fd = stream.as_raw_fd();
        let mut out = request.to_vec();
        if socket::flush_all(fd, &stream, &mut out).await.is_err() {
            return Trip::Unanswered;
        }
        let mut buf = Vec::new();
        loop {
            match sys::recv_append(fd, &mut buf, READ_CHUNK) {
                Ok(0) if buf.is_empty() => return Trip::Unanswered,
                Ok(0) => {
                    let answer = match parse_response_at_eof(&buf) {
                        Ok(r) => Ok((r.status, r.body.into_owned())),
                        Err(e) => Err(e.reason()),
                    };
                    return Trip::Done(answer);
                }
                Ok(_) => match parse_response(&buf) {
                    Ok(None) => {}
                    Ok(Some(r)) => {
                        let reusable = r.keep_alive && r.consumed == buf.len();
                        let answer = Ok((r.status, r.body.into_owned()));
                        if reusable {
                            self.give_back(stream);
                        }
                        return Trip::Done(answer);
                    }
                    Err(e) => return Trip::Done(Err(e.reason())),
                },
                Err(e) if would_block(&e) => {
                    if stream.readable(false).await.is_err() {
                        return broken(&buf);
                    }
                }
                Err(_) => return broken(&buf),
            }
        }
    }
}

/// The connection failed while reading: before any response byte, the
/// caller may try again; in the middle of a response, it may not.
fn broken(buf: &[u8]) -> Trip {
    if buf.is_empty() {
        Trip::Unanswered
    } else {
        Trip::Done(Err("closed"))
    }
}

/// The counter a verdict goes to.
#[cfg(feature = "auth")]
fn result_of(verdict: &HookVerdict) -> HookResult {
    match verdict {
        HookVerdict::Grant { .. } => HookResult::Granted,
        HookVerdict::Refuse(401) => HookResult::Unauthorized,
        HookVerdict::Refuse(_) => HookResult::Forbidden,
        HookVerdict::Fail("timeout") => HookResult::Timeout,
        HookVerdict::Fail("connect" | "closed" | "status") => HookResult::Error,
        HookVerdict::Fail(_) => HookResult::Malformed,
    }
}

/// At most `n` holders at a time; the others wait in arrival order.
struct Turns {
    free: Cell<usize>,
    waiting: RefCell<VecDeque<Rc<Waiter>>>,
}

struct Waiter {
    granted: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Turns {
    fn new(n: usize) -> Turns {
        Turns {
            free: Cell::new(n),
            waiting: RefCell::new(VecDeque::new()),
        }
    }

    fn take(&self) -> TakeTurn<'_> {
        TakeTurn {
            turns: self,
            waiter: None,
        }
    }

    /// A turn ends: it goes to the oldest waiter, or back to the free count.
    fn give_back(&self) {
        let next = self.waiting.borrow_mut().pop_front();
        match next {
            Some(w) => {
                w.granted.set(true);
                if let Some(waker) = w.waker.take() {
                    waker.wake();
                }
            }
            None => self.free.set(self.free.get() + 1),
        }
    }
}

/// Resolves to a [`Turn`]. Dropped while waiting, it leaves the queue (or
/// passes on a turn it was given but never saw).
struct TakeTurn<'a> {
    turns: &'a Turns,
    waiter: Option<Rc<Waiter>>,
}

impl<'a> Future for TakeTurn<'a> {
    type Output = Turn<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Turn<'a>> {
        let turns = self.turns;
        match &self.waiter {
            Some(w) if w.granted.get() => {
                self.waiter = None;
                Poll::Ready(Turn { turns })
            }
            Some(w) => {
                w.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
            None if turns.free.get() > 0 && turns.waiting.borrow().is_empty() => {
                turns.free.set(turns.free.get() - 1);
                Poll::Ready(Turn { turns })
            }
            None => {
                let w = Rc::new(Waiter {
                    granted: Cell::new(false),
                    waker: Cell::new(Some(cx.waker().clone())),
                });
                turns.waiting.borrow_mut().push_back(w.clone());
                self.waiter = Some(w);
                Poll::Pending
            }
        }
    }
}

impl Drop for TakeTurn<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.waiter.take() {
            if w.granted.get() {
                self.turns.give_back();
            } else {
                self.turns
                    .waiting
                    .borrow_mut()
                    .retain(|x| !Rc::ptr_eq(x, &w));
            }
        }
    }
}

/// One call's turn; given back when dropped.
struct Turn<'a> {
    turns: &'a Turns,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.turns.give_back();
    }
}

#[cfg(all(test, feature = "auth"))]
#[path = "hook_client_tests.rs"]
mod tests;
