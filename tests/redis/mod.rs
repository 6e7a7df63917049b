//! Helpers for the multi-node tests with `--redis` (`tests/redis_*.rs`):
//!
//! * [`RedisServer`]: a private `redis-server` (Debian's package, installed
//!   with apt-get when missing) on a free loopback port, no persistence, in a
//!   temp dir; killed on drop; can be killed, restarted on the same port,
//!   paused (SIGSTOP) and resumed; a tiny RESP client for `FLUSHALL`, `KEYS`...
//! * [`start_node`]: a wsgate node of a fleet (fixed `--node-id`, plain-HTTP
//!   cookie, publish token, `--redis <url>`).
//! * [`Ws`]: a gateway-protocol client that never panics on I/O (so a test
//!   can reconnect after a drain or a crash) and accepts any node id.
//! * [`Roamer`]: a subscriber in its own thread that records every `msg`,
//!   and when its connection ends (close 1001, EOF, reset) reconnects with its
//!   cookie (through the balancer or to the next node) and requires
//!   `hello … resumed`; [`Trace`] is what it saw, with checks that the
//!   messages of a topic are exactly the published ones, in order.
//! * [`ApiPublisher`]: publishes continuously through `POST /publish/<topic>`
//!   on a node's admin port (switchable while running).
//!
//! Every read has a deadline; every process is killed on drop.

#![allow(dead_code)]

use crate::common::*;
use crate::edge::{
    apt_install, die_with_parent, find_binary, free_port, Hello, TempDir, COOKIE, COOKIE_ATTRS,
};
use crate::gw::{content_length, Client};

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The publish-API token of every node.
pub const TOKEN: &str = "0123456789abcdef0123";
/// `--drain-timeout` of the nodes: closes spread over its first 30 %.
pub const DRAIN: Duration = Duration::from_secs(4);
/// `--history-size` of the nodes: larger than anything a test publishes.
pub const HISTORY: &str = "4096";
/// Default wait for one expected event.
pub const WAIT: Duration = Duration::from_secs(5);
/// The drivers of a three-node fleet: io_uring, epoll, io_uring.
pub const FLEET_DRIVERS: [Driver; 3] = [Driver::IoUring, Driver::Legacy, Driver::IoUring];
/// A moved client's backoff before it reconnects: the messages published
/// meanwhile must come to it as a replay.
pub const REJOIN_DELAY: Duration = Duration::from_millis(150);

// ---------------------------------------------------------------------------
// redis-server: find or install, start, kill, restart, pause
// ---------------------------------------------------------------------------

/// The `redis-server` binary, installed from Debian's package `redis-server`
/// when missing. `None` means "skip the test" (install failed outside CI);
/// with the `CI` environment variable set a failed install fails the test.
pub fn redis_server_binary() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = find_binary("redis-server") {
            return Some(p);
        }
        eprintln!(
            "redis-server not found: installing Debian's package `redis-server` with apt-get"
        );
        let started = Instant::now();
        let result = apt_install("redis-server").and_then(|()| {
            find_binary("redis-server")
                .ok_or_else(|| "redis-server still not found after apt-get install".to_string())
        });
        match result {
            Ok(p) => {
                eprintln!(
                    "installed {} in {:.1} s",
                    p.display(),
                    started.elapsed().as_secs_f64()
                );
                Some(p)
            }
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("CI is set and redis-server could not be installed: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: redis-server is not installed and installing it failed: {e}");
                None
            }
        }
    })
    .as_deref()
}

/// A private redis-server on `127.0.0.1:<port>` (no RDB, no AOF, its own temp
/// dir), killed on drop.
pub struct RedisServer {
    bin: PathBuf,
    pub port: u16,
    /// Extra `redis-server` arguments (e.g. `--requirepass x`).
    extra: Vec<String>,
    /// Password for the helper's own commands (`AUTH` first), if any.
    pub password: Option<String>,
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts one, or returns `None` when redis-server is unavailable and the
    /// test should be skipped (see [`redis_server_binary`]).
    pub fn start() -> Option<RedisServer> {
        RedisServer::start_with(&[], None)
    }

    /// Like [`RedisServer::start`] with extra server arguments and the
    /// password the helper's own commands authenticate with.
    pub fn start_with(extra: &[&str], password: Option<&str>) -> Option<RedisServer> {
        let bin = redis_server_binary()?.to_path_buf();
        let mut last = String::new();
        // The port is found free, then bound by redis-server: retry on the
        // rare race with another process taking it meanwhile.
        for _ in 0..5 {
            let mut r = RedisServer {
                bin: bin.clone(),
                port: free_port(),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                password: password.map(str::to_string),
                child: None,
                logs: Arc::new(Mutex::new(Vec::new())),
                dir: TempDir::new("redis"),
            };
            match r.spawn(Duration::from_secs(5)) {
                Ok(()) => return Some(r),
                Err(e) => {
                    eprintln!("{e}\n(retrying with another port)");
                    last = e;
                }
            }
        }
        panic!("could not start redis-server: {last}");
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts the process on `self.port` and waits (up to `within`) until it
    /// answers `PING`.
    fn spawn(&mut self, within: Duration) -> Result<(), String> {
        let port = self.port.to_string();
        let dir = self.dir.0.display().to_string();
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            &dir,
        ])
        .args(&self.extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // Should the test process die without running destructors, the
        // server dies with it.
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        collect_lines(&mut child, &self.logs);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                return Err(format!(
                    "redis-server on port {} exited at start ({st}):\n{}",
                    self.port,
                    self.logs.lock().unwrap().join("\n")
                ));
            }
            match resp_command(self.addr(), None, &["PING"]) {
                Ok(Resp::Simple(s)) if s == "PONG" => break,
                Ok(Resp::Error(e)) if e.starts_with("NOAUTH") => break,
                _ => {}
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {} did not answer PING within {within:?}:\n{}",
                    self.port,
                    self.logs.lock().unwrap().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL and reap (the gateways see their connections reset).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a fresh, empty server on the same port (after [`kill`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: redis-server still running");
        // The port was just released; retry briefly should it still be busy.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn(Duration::from_secs(5)) {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("{e}\n(retrying on the same port)");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("could not restart redis-server on port {}: {e}", self.port),
            }
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.pid().expect("redis-server is not running") as libc::pid_t;
        // SAFETY: kill(2) on our own child, which has not been reaped.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
    }

    /// SIGSTOP: the server keeps its sockets (TCP still accepts and ACKs)
    /// but answers nothing: a hung Redis.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// One command on db 0 (after `AUTH` when a password is set).
    pub fn cmd(&self, args: &[&str]) -> Resp {
        self.cmd_db(0, args)
    }

    /// One command on `db` (`SELECT db` first).
    pub fn cmd_db(&self, db: u32, args: &[&str]) -> Resp {
        let r = resp_session(self.addr(), self.password.as_deref(), db, args)
            .unwrap_or_else(|e| panic!("redis {args:?} on db {db}: {e}"));
        if let Resp::Error(e) = &r {
            panic!("redis {args:?} on db {db}: -{e}");
        }
        r
    }

    /// Every key of `db` (`KEYS *`, fine for a test's small instance).
    pub fn keys(&self, db: u32) -> Vec<String> {
        match self.cmd_db(db, &["KEYS", "*"]) {
            Resp::Array(items) => items
                .into_iter()
                .map(|i| match i {
                    Resp::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                    other => panic!("KEYS returned {other:?}"),
                })
                .collect(),
            other => panic!("KEYS returned {other:?}"),
        }
    }

    pub fn dump_logs(&self) {
        eprintln!("----- redis-server (port {}) output -----", self.port);
        for l in self.logs.lock().unwrap().iter() {
            eprintln!("{l}");
        }
        eprintln!("----- end of redis-server output -----");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        self.kill();
    }
}

/// A RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
    Nil,
}

fn resp_encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn resp_read(r: &mut BufReader<TcpStream>) -> io::Result<Resp> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "EOF from redis",
        ));
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad RESP {line:?}"));
    let (kind, rest) = line.split_at(1.min(line.len()));
    Ok(match kind {
        "+" => Resp::Simple(rest.to_string()),
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Int(rest.parse().map_err(|_| bad())?),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let mut b = vec![0u8; n as usize + 2];
                r.read_exact(&mut b)?;
                b.truncate(n as usize);
                Resp::Bulk(Some(b))
            }
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                Resp::Nil
            } else {
                let mut v = Vec::new();
                for _ in 0..n {
                    v.push(resp_read(r)?);
                }
                Resp::Array(v)
            }
        }
        _ => return Err(bad()),
    })
}

/// One connection: optional `AUTH`, then `args`; the reply.
pub fn resp_command(addr: SocketAddr, password: Option<&str>, args: &[&str]) -> io::Result<Resp> {
    resp_session(addr, password, 0, args)
}

fn resp_session(
    addr: SocketAddr,
    password: Option<&str>,
    db: u32,
    args: &[&str],
) -> io::Result<Resp> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut pre: Vec<Vec<String>> = Vec::new();
    if let Some(p) = password {
        pre.push(vec!["AUTH".into(), p.into()]);
    }
    if db != 0 {
        pre.push(vec!["SELECT".into(), db.to_string()]);
    }
    for c in &pre {
        let c: Vec<&str> = c.iter().map(String::as_str).collect();
        w.write_all(&resp_encode(&c))?;
        if let Resp::Error(e) = resp_read(&mut r)? {
            return Ok(Resp::Error(format!("{} failed: {e}", c[0])));
        }
    }
    w.write_all(&resp_encode(args))?;
    resp_read(&mut r)
}

// ---------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------

/// `from` publishes `p` on `t` (a topic both are subscribed to) and `to`
/// gets it with the seq `from`'s `ok pub` named; returns that seq.
pub fn pub_across(from: &mut Ws, to: &mut Ws, t: &str, p: &str) -> u64 {
    from.send_text(&format!("pub {t} {p}"));
    let mut skipped = Vec::new();
    let ok = from.reply(&format!("ok pub {t} "), WAIT, &mut skipped);
    let seq: u64 = ok.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(
        to.data_line(WAIT, &format!("{p} from the other node")),
        format!("msg {t} {seq} {p}"),
        "{} -> {}",
        from.name,
        to.name
    );
    seq
}

/// Reads `child`'s stdout and stderr, line by line, into `logs` (one thread
/// each, ending with the child's output).
pub fn collect_lines(child: &mut Child, logs: &Arc<Mutex<Vec<String>>>) {
    let outs = [
        (child.stdout.take()).map(|s| Box::new(s) as Box<dyn Read + Send>),
        (child.stderr.take()).map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for out in outs.into_iter().flatten() {
        let logs = logs.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut line = String::new();
            while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                logs.lock().unwrap().push(line.trim_end().to_string());
                line.clear();
            }
        });
    }
}

/// Starts node `name` of a fleet: loopback ports chosen by the kernel,
/// `--cores 2`, plain-HTTP cookie, `--drain-timeout 4s`, the publish token,
/// a large history, `--redis <redis_url>` (unless empty), then `extra`.
pub fn start_node(name: &str, driver: Driver, redis_url: &str, extra: &[&str]) -> Gateway {
    let drain = format!("{}s", DRAIN.as_secs());
    let mut args = vec![
        "--node-id",
        name,
        "--cookie-secure",
        "false",
        "--drain-timeout",
        &drain,
        "--publish-token",
        TOKEN,
        "--history-size",
        HISTORY,
    ];
    if !redis_url.is_empty() {
        args.extend_from_slice(&["--redis", redis_url]);
    }
    args.extend_from_slice(extra);
    Gateway::start(driver, &args)
}

/// Starts one node per `(name, driver)` on `redis_url` (see [`start_node`])
/// and waits (10 s each) until every one has `wsgate_redis_up` 1.
pub fn start_fleet(names: &[&str], drivers: &[Driver], redis_url: &str) -> Vec<Gateway> {
    let nodes: Vec<Gateway> = names
        .iter()
        .zip(drivers)
        .map(|(n, d)| start_node(n, *d, redis_url, &[]))
        .collect();
    for (n, gw) in names.iter().zip(&nodes) {
        wait_redis_up(gw, n, 1.0, Duration::from_secs(10));
    }
    nodes
}

/// Two nodes on `redis_url`, the first on io_uring and the second on
/// epoll (see [`start_node`], `extra` to both), each waited for (10 s)
/// until `wsgate_redis_up` is 1.
pub fn start_pair(names: [&str; 2], redis_url: &str, extra: &[&str]) -> (Gateway, Gateway) {
    let a = start_node(names[0], Driver::IoUring, redis_url, extra);
    let b = start_node(names[1], Driver::Legacy, redis_url, extra);
    wait_redis_up(&a, names[0], 1.0, Duration::from_secs(10));
    wait_redis_up(&b, names[1], 1.0, Duration::from_secs(10));
    (a, b)
}

/// `wsgate_redis_up` (the smallest value if it has several series), `None`
/// when the node does not export it.
pub fn redis_up(gw: &Gateway) -> Option<f64> {
    let fam = gw.scrape().family("wsgate_redis_up");
    fam.iter().map(|(_, v)| *v).reduce(f64::min)
}

/// Waits (polling every 50 ms) until `wsgate_redis_up` is `want` on `gw`;
/// returns how long it took, or panics with the samples and the node's
/// `redis_*` log lines.
pub fn wait_redis_up(gw: &Gateway, name: &str, want: f64, within: Duration) -> Duration {
    let t0 = Instant::now();
    let ok = wait_until(within, || redis_up(gw) == Some(want));
    if !ok {
        let logs: Vec<String> = gw
            .logs()
            .into_iter()
            .filter(|l| l.contains("redis"))
            .collect();
        panic!(
            "{name}: wsgate_redis_up is {:?} after {within:?}, expected {want}; \
             samples: {:?}; redis log lines:\n{}",
            redis_up(gw),
            gw.scrape().family("wsgate_redis_up"),
            logs.join("\n")
        );
    }
    t0.elapsed()
}

/// The node's log lines containing `event=<event>`.
pub fn log_events(gw: &Gateway, event: &str) -> Vec<String> {
    let key = format!("event={event}");
    gw.logs()
        .into_iter()
        .filter(|l| l.split_whitespace().any(|t| t == key))
        .collect()
}

/// Sends SIGTERM and waits (drain timeout + 2 s) for exit code 0; returns
/// how long the drain took. Every `drain_end` line (one per core) must say
/// `cut=0`.
pub fn terminate(gw: &Gateway, name: &str) -> Duration {
    let t = Instant::now();
    gw.send_signal("TERM");
    let (status, at) = gw
        .wait_exit(DRAIN + Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{name} did not exit within drain-timeout + 2 s after SIGTERM"));
    assert!(status.success(), "{name} exited with {status}, expected 0");
    let end = log_events(gw, "drain_end");
    assert!(
        !end.is_empty() && end.iter().all(|l| l.contains(" cut=0")),
        "{name}: every core's drain_end should say cut=0: {end:?}"
    );
    at - t
}

// ---------------------------------------------------------------------------
// Publish API on any node's admin port
// ---------------------------------------------------------------------------

/// `POST /publish/<topic>` with the token on `admin`; `Ok(seq)` on `200
/// <seq>\n`, `Err` describing anything else (connect error, status, body).
pub fn api_publish(admin: SocketAddr, topic: &str, body: &str) -> Result<u64, String> {
    let what = format!("POST /publish/{topic} on {admin}");
    let mut s = TcpStream::connect_timeout(&admin, WAIT).map_err(|e| format!("{what}: {e}"))?;
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    let req = format!(
        "POST /publish/{topic} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("{what}: write: {e}"))?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).into_owned();
            let clen = content_length(&head);
            if buf.len() >= pos + 4 + clen {
                let body = String::from_utf8_lossy(&buf[pos + 4..pos + 4 + clen]).into_owned();
                let status = head.split(' ').nth(1).unwrap_or("");
                if status != "200" {
                    return Err(format!("{what}: {head:?} {body:?}"));
                }
                return body
                    .strip_suffix('\n')
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("{what}: body {body:?} is not `<seq>\\n`"));
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what}: no complete answer within {WAIT:?}: {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        match s.read(&mut tmp) {
            Ok(0) => {
                return Err(format!(
                    "{what}: EOF after {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) => return Err(format!("{what}: read: {e}")),
        }
    }
}

/// One message published, as its publisher was told.
#[derive(Clone, Debug)]
pub struct Published {
    pub seq: u64,
    pub payload: String,
    /// When the answer came.
    pub at: Instant,
    /// The admin address it went to.
    pub via: SocketAddr,
}

/// A thread publishing `<label>-<n>` to one topic through the publish API,
/// one message every `every`, until stopped. `target` (the admin address)
/// can be switched while it runs. A failed publish fails the publisher.
pub struct ApiPublisher {
    pub target: Arc<Mutex<SocketAddr>>,
    pub count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Published>>>,
}

impl ApiPublisher {
    pub fn spawn(label: &str, admin: SocketAddr, topic: &str, every: Duration) -> ApiPublisher {
        let target = Arc::new(Mutex::new(admin));
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let handle = {
            let (target, stop, count) = (target.clone(), stop.clone(), count.clone());
            let (label, topic) = (label.to_string(), topic.to_string());
            // A bound on its own: the tests stop it long before.
            let deadline = Instant::now() + Duration::from_secs(60);
            std::thread::Builder::new()
                .name(format!("publisher-{label}"))
                .spawn(move || {
                    let mut out: Vec<Published> = Vec::new();
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        let payload = format!("{label}-{}", out.len() + 1);
                        let via = *target.lock().unwrap();
                        let seq = api_publish(via, &topic, &payload).unwrap_or_else(|e| {
                            panic!("publisher {label}: message #{}: {e}", out.len() + 1)
                        });
                        if let Some(last) = out.last() {
                            assert_eq!(
                                seq,
                                last.seq + 1,
                                "publisher {label}: the only publisher of {topic} got seq {seq} \
                                 after {} (sequence numbers of one topic must be consecutive)",
                                last.seq
                            );
                        }
                        out.push(Published {
                            seq,
                            payload,
                            at: Instant::now(),
                            via,
                        });
                        count.store(out.len(), Ordering::SeqCst);
                        std::thread::sleep(every);
                    }
                    out
                })
                .expect("spawn publisher")
        };
        ApiPublisher {
            target,
            count,
            stop,
            handle: Some(handle),
        }
    }

    /// Publish through another node from the next message on.
    pub fn switch_to(&self, admin: SocketAddr) {
        *self.target.lock().unwrap() = admin;
    }

    /// Stops it and returns everything it published (panics if it failed).
    pub fn finish(mut self) -> Vec<Published> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take().unwrap().join() {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

impl Drop for ApiPublisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Stops `publisher` (the only one of `topic`, whose first seq must be 1)
/// and makes its last seq the final one of `topic` for the roamers. Returns
/// what it published, as `seq -> payload`, and that last seq.
pub fn finish_publisher(
    publisher: ApiPublisher,
    shared: &Shared,
    topic: &str,
) -> (Vec<Published>, BTreeMap<u64, String>, u64) {
    let pubs = publisher.finish();
    let map = published_map(&pubs);
    let last = pubs.last().unwrap().seq;
    assert_eq!(pubs[0].seq, 1);
    shared.set_final(topic, last);
    (pubs, map, last)
}

/// `seq -> payload` of what the publishers were told.
pub fn published_map(pubs: &[Published]) -> BTreeMap<u64, String> {
    let mut m = BTreeMap::new();
    for p in pubs {
        if let Some(old) = m.insert(p.seq, p.payload.clone()) {
            panic!(
                "seq {} was handed out twice: {old:?} and {:?}",
                p.seq, p.payload
            );
        }
    }
    m
}

// ---------------------------------------------------------------------------
// A gateway-protocol client that reports I/O trouble instead of panicking
// ---------------------------------------------------------------------------

/// Why no message came.
pub use crate::gw::End;
/// One message from the server (fragments reassembled, pings answered).
pub use crate::gw::Event as Ev;

/// A [`Client`] connected to any node (or the balancer) of a fleet, with
/// its hello split up. The raw client (`next_until`, `try_send_text`,
/// `name`, `addr`…) is reached through `Deref`.
pub struct Ws {
    pub client: Client,
    /// Shadows the client's whole `hello` line.
    pub hello: Hello,
}

impl std::ops::Deref for Ws {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Ws {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Ws {
    /// Upgrades on `/ws` at `addr` (with the session cookie when given) and
    /// reads the hello. `Err` for anything short of a 101 and a well-formed
    /// hello within [`WAIT`]: connect refused, a 503, EOF, a timeout. The
    /// cookie must be a v4 UUID with the default attributes.
    pub fn connect(addr: SocketAddr, name: &str, cookie: Option<&str>) -> Result<Ws, String> {
        assert!(addr.ip().is_loopback(), "loopback only, got {addr}");
        let client = Client::try_connect(addr, name, cookie, false, |set_cookie, id| {
            assert!(is_uuid_v4(id), "{name}: session id {id:?} is not a v4 UUID");
            assert_eq!(set_cookie, format!("{COOKIE}={id}{COOKIE_ATTRS}"));
        })?;
        let hello = Hello {
            id: client.id.clone(),
            peer: client.peer.clone(),
            state: if client.resumed { "resumed" } else { "new" }.to_string(),
            node: client.node.clone(),
        };
        Ok(Ws { client, hello })
    }

    /// [`Ws::connect`] that must succeed with a `new` session.
    pub fn fresh(addr: SocketAddr, name: &str) -> Ws {
        let ws = Ws::connect(addr, name, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ws.hello.state, "new",
            "{name}: a cookie-less upgrade resumed: {:?}",
            ws.hello
        );
        ws
    }

    /// [`Ws::connect`] with a cookie that must succeed with `resumed`.
    pub fn resume(addr: SocketAddr, name: &str, id: &str) -> Ws {
        let ws = Ws::connect(addr, name, Some(id)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ws.hello.state, "resumed",
            "{name}: reconnect with the cookie of a live session at {addr}: {:?}",
            ws.hello
        );
        ws
    }

    pub fn id(&self) -> &str {
        &self.hello.id
    }

    /// The peer id its hello named (what presence shows of it).
    pub fn peer(&self) -> &str {
        &self.hello.peer
    }

    /// The next text line within `wait`; panics otherwise.
    pub fn line(&mut self, wait: Duration, ctx: &str) -> String {
        match self.next_until(Instant::now() + wait) {
            Ok(Ev::Text(t)) => t,
            other => panic!(
                "{} ({} on {}): waiting {wait:?} for {ctx}: got {other:?}",
                self.name, self.hello.id, self.hello.node
            ),
        }
    }

    /// The next text line within `wait` that is not a presence notice
    /// (`join`/`leave`); panics otherwise.
    pub fn data_line(&mut self, wait: Duration, ctx: &str) -> String {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self.line(left, ctx);
            if !(l.starts_with("join ") || l.starts_with("leave ")) {
                return l;
            }
        }
    }

    /// The next line starting with `prefix` within `wait`, skipping presence
    /// notices (`join`/`leave`); any other line in between is returned in
    /// `skipped` (e.g. `msg` lines racing a command's answer).
    pub fn reply(&mut self, prefix: &str, wait: Duration, skipped: &mut Vec<String>) -> String {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self.line(left, &format!("a line starting with {prefix:?}"));
            if l.starts_with(prefix) {
                return l;
            }
            if !(l.starts_with("join ") || l.starts_with("leave ")) {
                skipped.push(l);
            }
        }
    }

    /// `sub <topic>`; returns the seq of `ok sub <topic> <seq>` (presence
    /// notices and messages of other topics before it are skipped, anything
    /// else fails).
    pub fn sub(&mut self, topic: &str) -> u64 {
        self.send_text(&format!("sub {topic}"));
        let mut skipped = Vec::new();
        let l = self.reply(&format!("ok sub {topic} "), WAIT, &mut skipped);
        // Messages of other topics may come first.
        skipped.retain(|l| !parse_msg(l).is_some_and(|(t, _, _)| t != topic));
        assert!(
            skipped.is_empty(),
            "{}: before `ok sub` came {skipped:?}",
            self.name
        );
        l.rsplit(' ').next().unwrap().parse().unwrap_or_else(|_| {
            panic!("{}: malformed {l:?}", self.name);
        })
    }

    /// `unsub <topic>`; expects `ok unsub <topic>` (presence notices skipped).
    pub fn unsub(&mut self, topic: &str) {
        self.send_text(&format!("unsub {topic}"));
        let mut skipped = Vec::new();
        let l = self.reply(&format!("ok unsub {topic}"), WAIT, &mut skipped);
        assert_eq!(l, format!("ok unsub {topic}"), "{}", self.name);
        assert!(
            skipped.is_empty(),
            "{}: before `ok unsub` came {skipped:?}",
            self.name
        );
    }

    /// `who <topic>`: the member ids of `members <topic> <n> <ids…>`.
    pub fn who(&mut self, topic: &str) -> Vec<String> {
        self.send_text(&format!("who {topic}"));
        let mut skipped = Vec::new();
        let l = self.reply(&format!("members {topic} "), WAIT, &mut skipped);
        let mut w = l.split(' ').skip(2);
        let n: usize = w.next().and_then(|n| n.parse().ok()).unwrap_or(usize::MAX);
        let ids: Vec<String> = w.map(str::to_string).collect();
        assert_eq!(n, ids.len(), "{}: malformed {l:?}", self.name);
        ids
    }

    /// A close frame with `code`, then wait (bounded) for the server's close
    /// and EOF.
    pub fn close(mut self, code: u16) {
        let _ = self.try_send_close(code, "");
        let deadline = Instant::now() + WAIT;
        while self.next_until(deadline).is_ok() {}
    }

    /// Drops the TCP connection without a close frame.
    pub fn drop_tcp(self) {
        self.client.drop_tcp();
    }
}

pub use crate::gw::{parse_msg, topic};

// ---------------------------------------------------------------------------
// Roamer: a subscriber that survives drains and crashes
// ---------------------------------------------------------------------------

/// One `msg` received.
#[derive(Clone, Debug)]
pub struct Got {
    pub topic: String,
    pub seq: u64,
    pub payload: String,
    pub at: Instant,
    /// Which connection of the client (0 = the first).
    pub conn: usize,
}

/// State shared by the roamers of a test and the test's main thread.
#[derive(Default)]
pub struct Shared {
    /// Per topic: the last seq every roamer subscribed to it must reach
    /// before it stops (set when the publishers are done).
    finals: Mutex<HashMap<String, u64>>,
    /// Reconnects that got a hello (any kind).
    pub reconnected: AtomicUsize,
    /// Connections that ended (close frame, EOF or error).
    pub lost: AtomicUsize,
    /// `ok …` answers to commands sent through [`Roamer::command`].
    pub oks: AtomicUsize,
}

impl Shared {
    pub fn set_final(&self, topic: &str, seq: u64) {
        self.finals.lock().unwrap().insert(topic.to_string(), seq);
    }

    fn final_of(&self, topic: &str) -> Option<u64> {
        self.finals.lock().unwrap().get(topic).copied()
    }
}

/// What a roamer saw.
pub struct Trace {
    pub name: String,
    pub id: String,
    /// The hello of every connection, with when it came.
    pub hellos: Vec<(Instant, Hello)>,
    /// How each connection but the last ended: `close <code> <reason>`,
    /// `eof`, `error …`.
    pub ends: Vec<(Instant, String)>,
    pub msgs: Vec<Got>,
    /// Lines other than `msg` of its topics and presence notices (`ok`,
    /// `gap`, `err`, …), with the connection they came on.
    pub other: Vec<(usize, String)>,
    /// Why it stopped before reaching every final seq, if it did.
    pub failure: Option<String>,
    /// The last connection, still open.
    ws: Option<Ws>,
}

impl Trace {
    pub fn take_ws(&mut self) -> Option<Ws> {
        self.ws.take()
    }

    /// `(conn, seq, payload)` of `topic` in arrival order.
    pub fn seqs(&self, topic: &str) -> Vec<(usize, u64, &str)> {
        self.msgs
            .iter()
            .filter(|g| g.topic == topic)
            .map(|g| (g.conn, g.seq, g.payload.as_str()))
            .collect()
    }

    /// A compact picture of what arrived: per connection, runs of seqs.
    pub fn runs(&self, topic: &str) -> String {
        let mut out = String::new();
        let mut cur: Option<(usize, u64, u64)> = None;
        let flush = |out: &mut String, c: Option<(usize, u64, u64)>| {
            if let Some((conn, a, b)) = c {
                out.push_str(&format!(" [conn {conn}: {a}..={b}]"));
            }
        };
        for (conn, seq, _) in self.seqs(topic) {
            match cur {
                Some((c, a, b)) if c == conn && seq == b + 1 => cur = Some((c, a, seq)),
                _ => {
                    flush(&mut out, cur);
                    cur = Some((conn, seq, seq));
                }
            }
        }
        flush(&mut out, cur);
        if out.is_empty() {
            " (nothing)".into()
        } else {
            out
        }
    }

    fn who(&self) -> String {
        let nodes: Vec<String> = self
            .hellos
            .iter()
            .map(|(_, h)| format!("{} {}", h.state, h.node))
            .collect();
        format!("{} ({}; {})", self.name, self.id, nodes.join(" -> "))
    }

    /// No stop before the end, no `gap`/`err` or other unexpected lines.
    pub fn assert_clean(&self) {
        assert!(
            self.failure.is_none(),
            "{}: {}; ended connections: {:?}; got{}",
            self.who(),
            self.failure.as_deref().unwrap_or(""),
            self.ends.iter().map(|(_, e)| e).collect::<Vec<_>>(),
            self.msgs
                .iter()
                .map(|g| g.topic.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .iter()
                .map(|t| format!(" {t}:{}", self.runs(t)))
                .collect::<String>()
        );
        let bad: Vec<&(usize, String)> = self
            .other
            .iter()
            .filter(|(_, l)| !l.starts_with("ok sub ") && !l.starts_with("ok unsub "))
            .collect();
        assert!(bad.is_empty(), "{}: unexpected lines {bad:?}", self.who());
    }

    /// Exactly the published messages of `topic` with seq in `from..=to`,
    /// each once, in order, with its payload; nothing else of that topic.
    pub fn assert_exact(&self, topic: &str, from: u64, to: u64, published: &BTreeMap<u64, String>) {
        let want: Vec<(u64, &str)> = published
            .range(from..=to)
            .map(|(s, p)| (*s, p.as_str()))
            .collect();
        let got: Vec<(u64, &str)> = self
            .seqs(topic)
            .into_iter()
            .map(|(_, s, p)| (s, p))
            .collect();
        if got != want {
            let first_diff = got
                .iter()
                .zip(want.iter())
                .position(|(g, w)| g != w)
                .unwrap_or(got.len().min(want.len()));
            panic!(
                "{}: {topic}: expected seqs {from}..={to} exactly once in order ({} messages), \
                 got {} messages:{}; first difference at #{first_diff}: got {:?}, expected {:?}",
                self.who(),
                want.len(),
                got.len(),
                self.runs(topic),
                got.get(first_diff),
                want.get(first_diff)
            );
        }
    }

    /// After a crash: once re-deliveries are dropped (a seq at or below the
    /// highest already seen, as a client does), exactly the published
    /// messages of `topic` in `from..=to`, in order; within one connection
    /// strictly in order without holes. Returns the re-delivered seqs with
    /// when each had first arrived.
    pub fn assert_gapless_dedup(
        &self,
        topic: &str,
        from: u64,
        to: u64,
        published: &BTreeMap<u64, String>,
    ) -> Vec<(u64, Instant)> {
        let mut first_at: BTreeMap<u64, Instant> = BTreeMap::new();
        let mut kept: Vec<(u64, &str)> = Vec::new();
        let mut again = Vec::new();
        let mut high = 0u64;
        let mut prev: Option<(usize, u64)> = None;
        for g in self.msgs.iter().filter(|g| g.topic == topic) {
            assert!(
                g.seq >= from,
                "{}: {topic}: got seq {} (connection {}) although it subscribed after seq {}: \
                 a message from before its subscription;{}",
                self.who(),
                g.seq,
                g.conn,
                from - 1,
                self.runs(topic)
            );
            if let Some((c, s)) = prev {
                assert!(
                    c != g.conn || g.seq == s + 1,
                    "{}: {topic}: within connection {c}, seq {} followed {s}:{}",
                    self.who(),
                    g.seq,
                    self.runs(topic)
                );
            }
            prev = Some((g.conn, g.seq));
            if g.seq <= high {
                let Some(first) = first_at.get(&g.seq) else {
                    panic!(
                        "{}: {topic}: seq {} arrived (connection {}) after {high} without having                          arrived before: out of order;{}",
                        self.who(),
                        g.seq,
                        g.conn,
                        self.runs(topic)
                    );
                };
                again.push((g.seq, *first));
                continue;
            }
            high = g.seq;
            first_at.insert(g.seq, g.at);
            kept.push((g.seq, g.payload.as_str()));
        }
        let want: Vec<(u64, &str)> = published
            .range(from..=to)
            .map(|(s, p)| (*s, p.as_str()))
            .collect();
        if kept != want {
            let first_diff = kept
                .iter()
                .zip(want.iter())
                .position(|(g, w)| g != w)
                .unwrap_or(kept.len().min(want.len()));
            panic!(
                "{}: {topic}: after dropping re-deliveries expected seqs {from}..={to} in order \
                 ({} messages), kept {}:{}; first difference at #{first_diff}: got {:?}, \
                 expected {:?}",
                self.who(),
                want.len(),
                kept.len(),
                self.runs(topic),
                kept.get(first_diff),
                want.get(first_diff)
            );
        }
        again
    }
}

/// A subscriber in its own thread. Build with [`Roamer::spawn`] after the
/// client subscribed; `join` returns its [`Trace`].
pub struct Roamer {
    pub name: String,
    cmds: mpsc::Sender<String>,
    handle: JoinHandle<Trace>,
}

/// Where a roamer goes when its connection ends.
#[derive(Clone)]
pub struct Reconnect {
    /// Tried in turn (starting with `first`), each until a hello or an error.
    pub to: Vec<SocketAddr>,
    pub first: usize,
    /// Waited before reconnecting (a client's backoff): what is published
    /// meanwhile must come as a replay.
    pub delay: Duration,
}

impl Reconnect {
    /// Never reconnect: a lost connection stops the roamer.
    pub fn never() -> Reconnect {
        Reconnect {
            to: vec![],
            first: 0,
            delay: Duration::ZERO,
        }
    }

    /// Reconnect through `to` (e.g. the balancer) after `delay`.
    pub fn via(to: SocketAddr, delay: Duration) -> Reconnect {
        Reconnect {
            to: vec![to],
            first: 0,
            delay,
        }
    }
}

impl Roamer {
    /// Takes over `ws` (already subscribed to `topics`) and records every
    /// `msg` of those topics until each of them reached its final seq in
    /// `shared` or `deadline` passes. On a close frame it answers with the
    /// same code and waits for EOF; on a close, EOF or reset it reconnects
    /// with its cookie per `reconnect` (none: it stops) and requires
    /// `hello … resumed` (a `new` session stops it: its subscriptions are
    /// gone).
    pub fn spawn(
        ws: Ws,
        topics: &[&str],
        reconnect: Reconnect,
        shared: Arc<Shared>,
        deadline: Instant,
    ) -> Roamer {
        let name = ws.name.clone();
        let topics: Vec<String> = topics.iter().map(|s| s.to_string()).collect();
        let (tx, rx) = mpsc::channel::<String>();
        let handle = std::thread::Builder::new()
            .name(format!("roamer-{name}"))
            .stack_size(256 * 1024)
            .spawn(move || roam(ws, topics, reconnect, shared, deadline, rx))
            .expect("spawn roamer");
        Roamer {
            name,
            cmds: tx,
            handle,
        }
    }

    /// Sends a text command on its current connection (answers are counted
    /// in `Shared::oks` and kept in `Trace::other`).
    pub fn command(&self, text: &str) {
        let _ = self.cmds.send(text.to_string());
    }

    pub fn join(self) -> Trace {
        match self.handle.join() {
            Ok(t) => t,
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

/// `n` roamers `client0…` through the balancer `lb`: each a fresh session
/// whose `sub topic` must answer seq 0, shown to `seen`, then reconnecting
/// through `lb` after `delay` whenever its connection ends.
pub fn roamers_via(
    lb: SocketAddr,
    topic: &str,
    n: usize,
    delay: Duration,
    shared: &Arc<Shared>,
    deadline: Instant,
    mut seen: impl FnMut(&Ws),
) -> Vec<Roamer> {
    (0..n)
        .map(|i| {
            let mut ws = Ws::fresh(lb, &format!("client{i}"));
            assert_eq!(ws.sub(topic), 0);
            seen(&ws);
            Roamer::spawn(
                ws,
                &[topic],
                Reconnect::via(lb, delay),
                shared.clone(),
                deadline,
            )
        })
        .collect()
}

/// Joins every roamer (re-raising a roamer's panic).
pub fn join_all(roamers: Vec<Roamer>) -> Vec<Trace> {
    roamers.into_iter().map(Roamer::join).collect()
}

fn roam(
    ws: Ws,
    topics: Vec<String>,
    reconnect: Reconnect,
    shared: Arc<Shared>,
    deadline: Instant,
    cmds: mpsc::Receiver<String>,
) -> Trace {
    let mut trace = Trace {
        name: ws.name.clone(),
        id: ws.hello.id.clone(),
        hellos: vec![(Instant::now(), ws.hello.clone())],
        ends: Vec::new(),
        msgs: Vec::new(),
        other: Vec::new(),
        failure: None,
        ws: None,
    };
    let mut ws = ws;
    let mut conn = 0usize;
    let mut next_target = reconnect.first;
    let mut last: HashMap<String, u64> = HashMap::new();
    loop {
        let done = topics.iter().all(|t| {
            shared
                .final_of(t)
                .is_some_and(|f| last.get(t).copied().unwrap_or(0) >= f)
        });
        if done {
            break;
        }
        if Instant::now() >= deadline {
            let finals: Vec<(String, Option<u64>, u64)> = topics
                .iter()
                .map(|t| {
                    (
                        t.clone(),
                        shared.final_of(t),
                        last.get(t).copied().unwrap_or(0),
                    )
                })
                .collect();
            trace.failure = Some(format!(
                "deadline passed before every final seq arrived (topic, final, last seen): {finals:?}"
            ));
            break;
        }
        while let Ok(c) = cmds.try_recv() {
            // A failed write shows up as an error on the next read.
            let _ = ws.try_send_text(&c);
        }
        let ended = match ws.next_until(Instant::now() + Duration::from_millis(100)) {
            Ok(Ev::Text(l)) => {
                match parse_msg(&l) {
                    Some((t, seq, p)) if topics.iter().any(|x| x == t) => {
                        last.insert(t.to_string(), seq);
                        trace.msgs.push(Got {
                            topic: t.to_string(),
                            seq,
                            payload: p.to_string(),
                            at: Instant::now(),
                            conn,
                        });
                    }
                    _ if l.starts_with("join ") || l.starts_with("leave ") => {}
                    _ => {
                        if l.starts_with("ok ") {
                            shared.oks.fetch_add(1, Ordering::SeqCst);
                        }
                        trace.other.push((conn, l));
                    }
                }
                continue;
            }
            Ok(Ev::Binary(b)) => {
                trace
                    .other
                    .push((conn, format!("binary {:?}", String::from_utf8_lossy(&b))));
                continue;
            }
            Err(End::Timeout) => continue,
            Ok(Ev::Close(code, reason)) => {
                // Answer like a browser (echo the code: 1001 keeps the
                // session), then the server closes the TCP connection.
                let echo = code.unwrap_or(1000);
                let _ = ws.try_send_close(echo, "");
                let until = Instant::now() + WAIT;
                let mut after = Vec::new();
                let tail = loop {
                    match ws.next_until(until) {
                        Ok(ev) => after.push(ev),
                        Err(e) => break e,
                    }
                };
                let mut s = format!("close {} {reason}", code.map_or(-1, i64::from));
                if !after.is_empty() || !matches!(tail, End::Eof | End::EofInFrame) {
                    s.push_str(&format!(" (then {after:?}, {tail:?})"));
                }
                s
            }
            Err(End::Eof | End::EofInFrame) => "eof".to_string(),
            Err(End::Error(kind, e)) => format!("error {e} ({kind:?})"),
        };
        shared.lost.fetch_add(1, Ordering::SeqCst);
        trace.ends.push((Instant::now(), ended));
        if reconnect.to.is_empty() {
            trace.failure = Some("connection ended and no reconnect target".into());
            break;
        }
        std::thread::sleep(reconnect.delay);
        // Reconnect with the cookie, trying the targets in turn.
        let mut errors = Vec::new();
        let got = loop {
            if Instant::now() >= deadline {
                break None;
            }
            let addr = reconnect.to[next_target % reconnect.to.len()];
            next_target += 1;
            match Ws::connect(addr, &trace.name, Some(&trace.id)) {
                Ok(w) => break Some(w),
                Err(e) => {
                    errors.push(e);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        let Some(w) = got else {
            trace.failure = Some(format!("could not reconnect: {errors:?}"));
            break;
        };
        ws = w;
        conn += 1;
        shared.reconnected.fetch_add(1, Ordering::SeqCst);
        trace.hellos.push((Instant::now(), ws.hello.clone()));
        if ws.hello.state != "resumed" {
            trace.failure = Some(format!(
                "reconnect with the cookie got a new session: hello {} {} {}",
                ws.hello.id, ws.hello.state, ws.hello.node
            ));
            break;
        }
    }
    trace.ws = Some(ws);
    trace
}

/// Runs every check, then fails listing each one that failed (so one
/// report shows all of them, not only the first).
pub fn all_checks(checks: Vec<(String, Box<dyn FnOnce() + '_>)>) {
    let mut failures = Vec::new();
    for (what, f) in checks {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            failures.push(format!("- {what}: {}", crate::edge::panic_text(&*e)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} check(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Waits until `cond` or panics after `within` with `what`.
pub fn wait_for(within: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(within, cond),
        "timed out after {within:?}: {what}"
    );
}

/// Builds `n` clients on `addr` (fresh sessions), each subscribed to every
/// topic of `topics`; returns them with the subscription seqs.
pub fn subscribers(
    addr: SocketAddr,
    prefix: &str,
    n: usize,
    topics: &[&str],
) -> Vec<(Ws, Vec<u64>)> {
    (0..n)
        .map(|i| {
            let mut ws = Ws::fresh(addr, &format!("{prefix}{i}"));
            let seqs = topics.iter().map(|t| ws.sub(t)).collect();
            (ws, seqs)
        })
        .collect()
}

/// HAProxy (`tests/edge/haproxy.cfg`) in front of `nodes` (name, node),
/// once every node is UP in its health checks.
pub fn haproxy_for(nodes: &[(&str, &Gateway)]) -> crate::edge::Haproxy {
    let servers: Vec<(&str, SocketAddr)> = nodes.iter().map(|(n, g)| (*n, g.addr)).collect();
    let hap = crate::edge::Haproxy::start(&servers);
    for (n, _) in nodes {
        hap.wait_status(n, "UP", Duration::from_secs(5));
    }
    hap
}

/// [`haproxy_for`] the fleet `nodes`, named `names` in the same order.
pub fn haproxy_for_fleet(names: &[&str], nodes: &[Gateway]) -> crate::edge::Haproxy {
    let named: Vec<(&str, &Gateway)> = names.iter().copied().zip(nodes).collect();
    haproxy_for(&named)
}

/// The number of 5xx answers HAProxy's frontend gave (a bad deploy shows as
/// 502/503 at the balancer).
pub fn haproxy_5xx(hap: &crate::edge::Haproxy) -> String {
    hap.stat("edge", "FRONTEND", "hrsp_5xx")
}
