//! A core's connection to Redis, the shared engine (`--redis`, DESIGN §10).
//!
//! One connection per core, RESP3, pipelined: the hub's requests are encoded
//! by [`crate::store`] and written in batches; answers come back in order and
//! are matched to the oldest request waiting. The same connection carries the
//! pub/sub channels of the topics this core owns (RESP3 pushes), so a topic's
//! sync (`SUBSCRIBE`, then read seq and history) and the messages published
//! after it arrive in one ordered stream: nothing falls between them.
//!
//! Nothing waits on Redis longer than `--redis-timeout`: a request older than
//! that, an error on the socket or a close takes the connection down; every
//! waiting request then fails (the hub falls back to node-local service),
//! `wsgate_redis_up` drops to 0, and the task reconnects with backoff
//! (100 ms doubling to 2 s) until Redis answers again.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::Instant;

use crate::hub::{EngineOp, EngineReply};
use crate::log::{self, Level};
use crate::proto::resp::{self, encode_command, Value};
use crate::server::Core;
use crate::store::{self, Expect, Schema};

/// Where Redis is: `redis://[[user]:password@]host[:port][/db]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// Host name or address.
    pub host: String,
    /// Port (6379 by default).
    pub port: u16,
    /// ACL user (`AUTH user password`), if given.
    pub user: Option<String>,
    /// Password, if given.
    pub password: Option<String>,
    /// Database number (`SELECT`).
    pub db: u32,
}

impl RedisTarget {
    /// Parses a `redis://` URL.
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or("expected redis://[[user]:password@]host[:port][/db] (TLS is not supported)")?;
        let (auth, hostpart) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (
                    (!u.is_empty()).then(|| percent_decode(u)).transpose()?,
                    Some(percent_decode(p)?),
                ),
                // `redis://secret@host` is a password, as redis-cli reads it.
                None => (None, Some(percent_decode(a)?)),
            },
        };
        let (hostport, db) = match hostpart.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, db)) => (
                hp,
                db.parse()
                    .map_err(|_| format!("database {db:?} is not a number"))?,
            ),
            None => (hostpart, 0),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unclosed [ in host")?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err("missing host".into());
        }
        let port = match port {
            None => 6379,
            Some(p) => p
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("port {p:?} is not a port number"))?,
        };
        Ok(RedisTarget {
            host: host.to_string(),
            port,
            user,
            password,
            db,
        })
    }

    /// The address to connect to. A name is resolved on every attempt (it
    /// may move); this blocks the core briefly, once per reconnect.
    fn resolve(&self) -> io::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
    }
}

impl std::fmt::Display for RedisTarget {
    /// The URL without its password (for logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redis://")?;
        if self.password.is_some() {
            write!(f, "{}:***@", self.user.as_deref().unwrap_or(""))?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}/{}", self.host, self.port, self.db)
        } else {
            write!(f, "{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad percent escape in the user or password")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "user or password is not UTF-8 once decoded".into())
}

struct Waiting {
    /// The hub's request id.
    id: u64,
    expect: Expect,
    sent_at: Instant,
}

#[derive(Default)]
struct Queue {
    up: bool,
    /// Encoded commands not yet written.
    out: Vec<u8>,
    /// Requests whose answer has not arrived, oldest first.
    waiting: VecDeque<Waiting>,
}

/// A core's Redis client.
pub struct RedisClient {
    target: RedisTarget,
    timeout: Duration,
    schema: Arc<Schema>,
    queue: RefCell<Queue>,
    woken: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl RedisClient {
    /// A client (not connected until [`run`] starts).
    pub fn new(target: RedisTarget, timeout: Duration, schema: Arc<Schema>) -> RedisClient {
        RedisClient {
            target,
            timeout,
            schema,
            queue: RefCell::default(),
            woken: Cell::new(false),
            waker: Cell::new(None),
        }
    }

    /// Queues a request. `false` when the connection is down: the caller
    /// answers the hub with `Failed` at once.
    pub fn submit(&self, id: u64, op: &EngineOp) -> bool {
        let mut q = self.queue.borrow_mut();
        if !q.up {
            return false;
        }
        let expect = self.schema.encode(op, &mut q.out);
        if expect != Expect::Nothing {
            q.waiting.push_back(Waiting {
                id,
                expect,
                sent_at: Instant::now(),
            });
        }
        drop(q);
        self.wake();
        true
    }

    fn wake(&self) {
        self.woken.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn woken(&self) -> Woken<'_> {
        Woken(self)
    }
}

struct Woken<'a>(&'a RedisClient);

impl Future for Woken<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.woken.replace(false) {
            Poll::Ready(())
        } else {
            self.0.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }
}

/// Keeps this core's Redis connection up, forever.
pub async fn run(core: Rc<Core>) {
    let Some(client) = core.redis.clone() else {
        return;
    };
    let mut backoff = Duration::from_millis(100);
    let mut last_error = String::new();
    loop {
        let result = session(&core, &client).await;
        let err = match result {
            Ok(()) => io::Error::new(io::ErrorKind::ConnectionAborted, "closed"),
            Err(e) => e,
        };
        let up_before = client.queue.borrow().up;
        go_down(&core, &client);
        if up_before {
            backoff = Duration::from_millis(100);
        }
        let text = err.to_string();
        if up_before || text != last_error {
            log::emit(
                Level::Warn,
                "redis_down",
                &[
                    ("core", &core.index),
                    ("redis", &client.target),
                    ("error", &text),
                    ("retry_ms", &backoff.as_millis()),
                ],
            );
        }
        last_error = text;
        monoio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Marks the connection down and fails every waiting request.
fn go_down(core: &Rc<Core>, client: &RedisClient) {
    let waiting = {
        let mut q = client.queue.borrow_mut();
        q.up = false;
        q.out.clear();
        std::mem::take(&mut q.waiting)
    };
    core.stats.set_redis_up(false);
    let now = core.now();
    {
        let mut hub = core.hub.borrow_mut();
        // Down first, so the failures below fall back to local service.
        hub.engine_status(false, now);
        for w in waiting {
            hub.engine_reply(w.id, EngineReply::Failed, now);
        }
    }
    crate::gateway::flush_hub(core);
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

/// Connects, says hello, loads the scripts, then serves until the connection
/// fails.
async fn session(core: &Rc<Core>, client: &RedisClient) -> io::Result<()> {
    let addr = client.target.resolve()?;
    let stream = monoio::time::timeout(client.timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out("connect timed out"))??;
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let mut inbuf: Vec<u8> = Vec::with_capacity(16 * 1024);

    // HELLO 3 (with AUTH), SELECT, SCRIPT LOAD: all answered before service.
    let mut hello = Vec::new();
    let t = &client.target;
    let mut args: Vec<&str> = vec!["HELLO", "3"];
    if let Some(pw) = &t.password {
        args.extend(["AUTH", t.user.as_deref().unwrap_or("default"), pw]);
    }
    args.extend(["SETNAME", "wsgate"]);
    encode_command(&mut hello, &args);
    let db = t.db.to_string();
    encode_command(&mut hello, &["SELECT", &db]);
    let scripts = client.schema.scripts.all();
    for s in scripts {
        encode_command(&mut hello, &["SCRIPT", "LOAD", s.source]);
    }
    let deadline = Instant::now() + client.timeout;
    write_all(&stream, &hello, deadline).await?;
    for _ in 0..2 + scripts.len() {
        match read_value(&stream, &mut inbuf, deadline).await? {
            Value::Error(e) => {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, e));
            }
            Value::Push(_) => {}
            _ => {}
        }
    }

    client.queue.borrow_mut().up = true;
    core.stats.set_redis_up(true);
    log::emit(
        Level::Info,
        "redis_up",
        &[("core", &core.index), ("redis", &client.target)],
    );
    core.hub.borrow_mut().engine_status(true, core.now());
    crate::gateway::flush_hub(core);

    let check = (client.timeout / 4).max(Duration::from_millis(5));
    loop {
        // Write what is queued.
        loop {
            let pending = {
                let q = client.queue.borrow();
                !q.out.is_empty()
            };
            if !pending {
                break;
            }
            let n = {
                let q = client.queue.borrow();
                match crate::sys::send(fd, &q.out) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                break;
            }
            client.queue.borrow_mut().out.drain(..n);
        }
        // Has anything waited too long?
        if let Some(w) = client.queue.borrow().waiting.front() {
            if w.sent_at.elapsed() > client.timeout {
                return Err(timed_out("request timed out"));
            }
        }
        let has_output = !client.queue.borrow().out.is_empty();
        monoio::select! {
            r = stream.readable(false) => r?,
            w = stream.writable(false), if has_output => w?,
            _ = client.woken() => {},
            _ = monoio::time::sleep(check) => {},
        }
        // Read everything there is and hand it to the hub.
        loop {
            match crate::sys::recv_append(fd, &mut inbuf, 64 * 1024) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed by Redis",
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let mut used = 0;
        let now = core.tick();
        let mut fed = false;
        while let Some((value, n)) = resp::parse(&inbuf[used..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
        {
            used += n;
            fed = true;
            match value {
                Value::Push(items) => {
                    if let Some((topic, event)) = store::decode_push(&items) {
                        core.hub.borrow_mut().engine_event(topic, event);
                    }
                }
                value => {
                    let Some(w) = client.queue.borrow_mut().waiting.pop_front() else {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "an answer nobody asked for",
                        ));
                    };
                    let reply = client.schema.decode(w.expect, value);
                    core.hub.borrow_mut().engine_reply(w.id, reply, now);
                }
            }
        }
        inbuf.drain(..used);
        if fed {
            crate::gateway::flush_hub(core);
        }
    }
}

async fn write_all(stream: &TcpStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        match crate::sys::send(stream.as_raw_fd(), buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                monoio::time::timeout_at(deadline, stream.writable(false))
                    .await
                    .map_err(|_| timed_out("write timed out"))??;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_value(
    stream: &TcpStream,
    inbuf: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<Value> {
    loop {
        if let Some((v, n)) = resp::parse(inbuf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
        {
            inbuf.drain(..n);
            return Ok(v);
        }
        match crate::sys::recv_append(stream.as_raw_fd(), inbuf, 64 * 1024) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed by Redis",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                monoio::time::timeout_at(deadline, stream.readable(false))
                    .await
                    .map_err(|_| timed_out("no answer to HELLO"))??;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(url: &str) -> RedisTarget {
        RedisTarget::parse(url).unwrap()
    }

    #[test]
    fn parses_the_url_forms_users_write() {
        let plain = t("redis://127.0.0.1:6380");
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.db),
            ("127.0.0.1", 6380, 0)
        );
        assert_eq!((plain.user, plain.password), (None, None));
        let d = t("redis://cache.internal/3");
        assert_eq!((d.host.as_str(), d.port, d.db), ("cache.internal", 6379, 3));
        let pw = t("redis://:s%40cret@10.0.0.5:6379/1");
        assert_eq!(
            (pw.user.as_deref(), pw.password.as_deref()),
            (None, Some("s@cret"))
        );
        let acl = t("redis://app:pw@h:1");
        assert_eq!(
            (acl.user.as_deref(), acl.password.as_deref()),
            (Some("app"), Some("pw"))
        );
        let bare = t("redis://secret@h");
        assert_eq!(bare.password.as_deref(), Some("secret"));
        let v6 = t("redis://[::1]:7000/2");
        assert_eq!((v6.host.as_str(), v6.port, v6.db), ("::1", 7000, 2));
        assert_eq!(v6.to_string(), "redis://[::1]:7000/2");
        assert_eq!(pw.to_string(), "redis://:***@10.0.0.5:6379/1");
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        for bad in [
            "rediss://h:6379",
            "http://h",
            "redis://",
            "redis://h:0",
            "redis://h:port",
            "redis://h:6379/x",
            "redis://[::1",
            "redis://:%zz@h",
        ] {
            assert!(RedisTarget::parse(bad).is_err(), "{bad}");
        }
    }
}
