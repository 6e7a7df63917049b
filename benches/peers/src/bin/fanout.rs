//! The pub/sub fan-out and resume benchmark for wsgate's gateway protocol.
//!
//! Its own WebSocket client (no wsgate code): a minimal HTTP/1.1 upgrade,
//! masked client frames, and a reader of server frames that reads each
//! readable socket with non-blocking `recv` into a per-thread buffer. The
//! subscribers are spread over several tokio current_thread runtimes, one per
//! OS thread (epoll underneath), and are not pinned: the server runs one
//! runtime per CPU on both CPUs.
//!
//! `fanout suite` starts a fresh wsgate for every run and runs:
//!
//! * **fan-out**: `--subs` subscribers of one topic, then one publisher that
//!   keeps at most `--ack-window` publishes unacknowledged and at most
//!   `--e2e-window` messages not yet delivered to the average subscriber.
//!   Deliveries are counted at the receivers; every subscriber checks that
//!   the sequence numbers after its `ok sub` come one by one, with no gap and
//!   no reorder, and must end at the last acknowledged sequence number.
//! * **resume**: `--resume-sessions` sessions subscribed to one topic; per
//!   cycle every socket is dropped (reset, no close frame), one message is published
//!   while they are away, and every session reconnects with its cookie: it must
//!   get `hello <id> resumed` and then the missed message.
//!
//! Server CPU comes from `/proc/<pid>/stat` (utime + stime) and, with
//! nanosecond resolution, from `/proc/<pid>/task/*/schedstat`.
//!
//! `--server ADDR --admin ADDR --pid PID` drives a server that is already
//! running (e.g. under callgrind) instead of starting one per run.
//!
//! `fanout scale` is the topics-at-scale suite (issue 21): subscribe time,
//! fan-out CPU per delivery at several sizes beside echo's CPU per message,
//! memory per subscriber, topic memory; see `scale_bench.rs`.

#[path = "../common.rs"]
#[allow(dead_code)]
mod common;

/// `fanout scale`: topics at scale (issue 21), benches/fanout.sh's scenarios
/// subscribe, cpu, memory and topics.
#[path = "../scale_bench.rs"]
mod scale;

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet, LocalSet};

const FANOUT_TOPIC: &str = "fanout";
const RESUME_TOPIC: &str = "resume";
const COOKIE: &str = "WS_SESSION_ID";
/// wsgate's counter of messages it sent (all connections, all cores).
const SENT_METRIC: &str = "wsgate_messages_total{direction=\"out\"}";
const SCRATCH: usize = 256 * 1024;

// ---------------------------------------------------------------------------
// Options

#[derive(Clone, Debug)]
struct Opts {
    wsgate: PathBuf,
    /// An already running server instead of starting one per run.
    external: Option<(SocketAddr, SocketAddr, u32)>,
    out: Option<PathBuf>,
    runs: usize,
    threads: usize,
    scenarios: Vec<String>,
    // fan-out
    subs: usize,
    payload: usize,
    warmup: f64,
    measure: f64,
    ack_window: u64,
    e2e_window: u64,
    // resume
    resume_sessions: usize,
    resume_cycles: usize,
    resume_concurrency: usize,
    /// Seconds to wait for other processes to leave the CPUs before each run.
    quiet_wait: f64,
}

fn usage_exit() -> ! {
    eprintln!(
        "usage: fanout suite --wsgate PATH [--out DIR] [--runs 3] [--threads 2]\n\
         \x20      [--scenarios fanout,resume] [--subs 5000] [--payload 32] [--warmup 1]\n\
         \x20      [--measure 3] [--ack-window 32] [--e2e-window 32]\n\
         \x20      [--resume-sessions 1000] [--resume-cycles 20] [--resume-concurrency 64]\n\
         \x20      [--quiet-wait 30] [--server ADDR --admin ADDR --pid PID]\n\
         \x20      fanout scale --wsgate PATH --loadgen PATH ...   (topics at scale; `fanout scale --help`)"
    );
    std::process::exit(2)
}

fn die(msg: &str) -> ! {
    eprintln!("fanout: {msg}");
    std::process::exit(1)
}

fn parse_opts() -> Opts {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("suite") {
        usage_exit();
    }
    let mut o = Opts {
        wsgate: PathBuf::from("target/release/wsgate"),
        external: None,
        out: None,
        runs: 3,
        threads: 2,
        scenarios: vec!["fanout".into(), "resume".into()],
        subs: 5000,
        payload: 32,
        warmup: 1.0,
        measure: 3.0,
        ack_window: 32,
        e2e_window: 32,
        resume_sessions: 1000,
        resume_cycles: 20,
        resume_concurrency: 64,
        quiet_wait: 30.0,
    };
    let (mut server, mut admin, mut pid) = (None, None, None);
    while let Some(flag) = args.next() {
        let v = args.next().unwrap_or_else(|| usage_exit());
        let num = |v: &str| -> usize { v.parse().unwrap_or_else(|_| usage_exit()) };
        let float = |v: &str| -> f64 { v.parse().unwrap_or_else(|_| usage_exit()) };
        match flag.as_str() {
            "--wsgate" => o.wsgate = v.into(),
            "--out" => o.out = Some(v.into()),
            "--runs" => o.runs = num(&v).max(1),
            "--threads" => o.threads = num(&v).max(1),
            "--scenarios" => o.scenarios = v.split(',').map(str::to_string).collect(),
            "--subs" => o.subs = num(&v).max(1),
            "--payload" => o.payload = num(&v),
            "--warmup" => o.warmup = float(&v),
            "--measure" => o.measure = float(&v),
            "--ack-window" => o.ack_window = num(&v).max(1) as u64,
            "--e2e-window" => o.e2e_window = num(&v).max(1) as u64,
            "--resume-sessions" => o.resume_sessions = num(&v).max(1),
            "--resume-cycles" => o.resume_cycles = num(&v).max(1),
            "--resume-concurrency" => o.resume_concurrency = num(&v).max(1),
            "--quiet-wait" => o.quiet_wait = float(&v),
            "--server" => server = Some(v.parse().unwrap_or_else(|_| usage_exit())),
            "--admin" => admin = Some(v.parse().unwrap_or_else(|_| usage_exit())),
            "--pid" => pid = Some(v.parse().unwrap_or_else(|_| usage_exit())),
            _ => usage_exit(),
        }
    }
    match (server, admin, pid) {
        (Some(s), Some(a), Some(p)) => o.external = Some((s, a, p)),
        (None, None, None) => {}
        _ => die("--server, --admin and --pid go together"),
    }
    o
}

// ---------------------------------------------------------------------------
// WebSocket client pieces (pure)

use common::{OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

/// A masked client frame with this generator's fixed key, FIN set.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    common::client_frame(opcode, payload, [0x5a, 0x1c, 0xe3, 0x07])
}

fn upgrade_request(addr: SocketAddr, session: Option<&str>) -> Vec<u8> {
    let mut r = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(id) = session {
        let _ = write!(r, "Cookie: {COOKIE}={id}\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Parses a response head once complete: its length and the session cookie.
fn parse_head(buf: &[u8]) -> Option<Result<(usize, String), String>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 101") {
        return Some(Err(format!("upgrade refused: {status}")));
    }
    let prefix = format!("{COOKIE}=");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.eq_ignore_ascii_case("set-cookie") {
            continue;
        }
        if let Some(rest) = value.trim().strip_prefix(&prefix) {
            let id = rest.split(';').next().unwrap_or("").to_string();
            return Some(Ok((end, id)));
        }
    }
    Some(Err("101 without a session cookie".into()))
}

/// The first complete server frame in `d`: opcode, payload range, frame length.
fn next_frame(d: &[u8]) -> Result<Option<(u8, std::ops::Range<usize>, usize)>, String> {
    if d.len() < 2 {
        return Ok(None);
    }
    if d[1] & 0x80 != 0 {
        return Err("server sent a masked frame".into());
    }
    if d[0] & 0x80 == 0 {
        return Err("server sent a fragmented frame".into());
    }
    let (hlen, len) = match d[1] & 0x7F {
        126 if d.len() >= 4 => (4, u16::from_be_bytes([d[2], d[3]]) as usize),
        127 if d.len() >= 10 => (
            10,
            u64::from_be_bytes(d[2..10].try_into().unwrap()) as usize,
        ),
        126 | 127 => return Ok(None),
        n => (2, n as usize),
    };
    if d.len() < hlen + len {
        return Ok(None);
    }
    let opcode = d[0] & 0x0F;
    if opcode == OP_CLOSE {
        let code = (len >= 2).then(|| u16::from_be_bytes([d[hlen], d[hlen + 1]]));
        return Err(format!("server sent close {code:?}"));
    }
    Ok(Some((opcode, hlen..hlen + len, hlen + len)))
}

/// Calls `f` on every complete server frame in `data`; returns the bytes used.
fn parse_frames(
    data: &[u8],
    mut f: impl FnMut(u8, &[u8]) -> Result<(), String>,
) -> Result<usize, String> {
    let mut at = 0;
    while let Some((op, range, len)) = next_frame(&data[at..])? {
        f(op, &data[at..][range])?;
        at += len;
    }
    Ok(at)
}

/// Splits `<seq> <rest>` (or just `<seq>`).
fn parse_seq(s: &[u8]) -> Option<(u64, &[u8])> {
    let end = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
    let seq = std::str::from_utf8(&s[..end]).ok()?.parse().ok()?;
    Some((seq, s.get(end + 1..).unwrap_or(&[])))
}

fn show(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(&p[..p.len().min(120)]);
    format!("{s:?}")
}

// ---------------------------------------------------------------------------
// Async connections

thread_local! {
    static SCRATCH_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; SCRATCH]);
}

/// Connects and upgrades; returns the stream, bytes read past the head, and the cookie.
async fn ws_connect(
    addr: SocketAddr,
    session: Option<&str>,
) -> Result<(TcpStream, Vec<u8>, String), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream
        .write_all(&upgrade_request(addr, session))
        .await
        .map_err(|e| format!("write upgrade: {e}"))?;
    let mut buf = Vec::new();
    loop {
        if let Some(r) = parse_head(&buf) {
            let (end, id) = r?;
            return Ok((stream, buf.split_off(end), id));
        }
        if buf.len() > 16 * 1024 {
            return Err("response head too large".into());
        }
        match read_some(&stream, &mut buf).await {
            Ok(0) => return Err("EOF during upgrade".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read upgrade: {e}")),
        }
    }
}

/// Waits for the socket and appends what it has to `buf`.
async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        let r = SCRATCH_BUF.with(|s| {
            let mut s = s.borrow_mut();
            let r = stream.try_read(&mut s[..]);
            if let Ok(n) = r {
                buf.extend_from_slice(&s[..n]);
            }
            r
        });
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

/// Reads frames until `f` says it is done (returns `Ok(true)`); returns the
/// unparsed remainder.
async fn read_until(
    stream: &TcpStream,
    mut pending: Vec<u8>,
    deadline: Duration,
    mut f: impl FnMut(u8, &[u8]) -> Result<bool, String>,
) -> Result<Vec<u8>, String> {
    let stop_at = tokio::time::Instant::now() + deadline;
    loop {
        let mut at = 0;
        while let Some((op, range, len)) = next_frame(&pending[at..])? {
            let done = f(op, &pending[at..][range])?;
            at += len;
            if done {
                pending.drain(..at);
                return Ok(pending);
            }
        }
        pending.drain(..at);
        match tokio::time::timeout_at(stop_at, read_some(stream, &mut pending)).await {
            Err(_) => return Err("timed out".into()),
            Ok(Ok(0)) => return Err("EOF".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("read: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------
// Shared counters

const UNSET: u64 = u64::MAX;

/// One client thread's counters (padded: each thread writes its own line).
#[repr(align(128))]
#[derive(Default)]
struct Counters {
    msgs: AtomicU64,
    frames: AtomicU64,
    presence: AtomicU64,
    tid: AtomicU64,
}

/// What a fan-out subscriber saw.
struct SubSlot {
    /// The sequence number in its `ok sub` (UNSET before).
    base: AtomicU64,
    /// The last sequence number received.
    last: AtomicU64,
    /// Messages received.
    got: AtomicU64,
    /// Gaps, reorders, bad payloads, protocol errors.
    bad: AtomicU64,
}

#[derive(Default)]
struct Errors {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl Errors {
    fn add(&self, e: String) {
        if self.count.fetch_add(1, Relaxed) < 10 {
            self.first.lock().unwrap().push(e);
        }
    }
    fn summary(&self) -> String {
        let n = self.count.load(Relaxed);
        let first = self.first.lock().unwrap();
        let mut s = format!("{n} error(s)");
        for e in first.iter().take(5) {
            let _ = write!(s, "; {e}");
        }
        s
    }
}

fn gettid() -> u64 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Reads whatever the socket has into the thread's scratch buffer, behind the
/// unfinished frame in `pending`, and hands every complete frame to `f`.
/// Returns `Ok(false)` once the socket would block, `Ok(true)` at end of stream.
fn drain_socket(
    stream: &TcpStream,
    pending: &mut Vec<u8>,
    mut f: impl FnMut(u8, &[u8]) -> Result<(), String>,
) -> Result<bool, String> {
    SCRATCH_BUF.with(|s| {
        let mut s = s.borrow_mut();
        for _ in 0..4 {
            let staged = pending.len();
            if staged > SCRATCH / 2 {
                return Err("frame too large for this client".into());
            }
            s[..staged].copy_from_slice(pending);
            pending.clear();
            let n = match stream.try_read(&mut s[staged..]) {
                Ok(0) => return Ok(true),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    pending.extend_from_slice(&s[..staged]);
                    return Ok(false);
                }
                Err(e) => return Err(format!("read: {e}")),
            };
            let data = &s[..staged + n];
            let used = parse_frames(data, &mut f)?;
            pending.extend_from_slice(&data[used..]);
            if staged + n < SCRATCH {
                break; // probably drained; the next readable() tells
            }
        }
        Ok(false)
    })
}

// ---------------------------------------------------------------------------
// Fan-out

struct FanShared {
    addr: SocketAddr,
    threads: Vec<Counters>,
    subs: Vec<SubSlot>,
    subscribed: AtomicU64,
    stop: AtomicBool,
    errors: Errors,
    payload: usize,
}

impl FanShared {
    fn msgs(&self) -> u64 {
        self.threads.iter().map(|c| c.msgs.load(Relaxed)).sum()
    }
    fn frames(&self) -> u64 {
        self.threads.iter().map(|c| c.frames.load(Relaxed)).sum()
    }
    fn presence(&self) -> u64 {
        self.threads.iter().map(|c| c.presence.load(Relaxed)).sum()
    }
}

async fn fan_connect(addr: SocketAddr, i: usize) -> Result<(usize, TcpStream, Vec<u8>), String> {
    let (mut stream, pending, _) = ws_connect(addr, None).await?;
    stream
        .write_all(&client_frame(
            OP_TEXT,
            format!("sub {FANOUT_TOPIC}").as_bytes(),
        ))
        .await
        .map_err(|e| format!("write sub: {e}"))?;
    Ok((i, stream, pending))
}

/// A subscriber: counts `msg` frames and checks their sequence numbers.
async fn fan_subscriber(
    sh: Arc<FanShared>,
    t: usize,
    i: usize,
    stream: TcpStream,
    mut pending: Vec<u8>,
) {
    let ctr = &sh.threads[t];
    let slot = &sh.subs[i];
    let (mut base, mut last, mut got, mut bad) = (UNSET, 0u64, 0u64, 0u64);
    let pong = client_frame(OP_PONG, &[]);
    let mut first = !pending.is_empty();
    loop {
        if !first && stream.readable().await.is_err() {
            break;
        }
        let (mut msgs, mut frames, mut presence, mut ping) = (0u64, 0u64, 0u64, false);
        let mut on_frame = |op: u8, p: &[u8]| -> Result<(), String> {
            frames += 1;
            match op {
                OP_TEXT => {}
                OP_PING => {
                    ping = true;
                    return Ok(());
                }
                _ => return Ok(()),
            }
            if let Some(rest) = p.strip_prefix(b"msg fanout ") {
                let Some((seq, payload)) = parse_seq(rest) else {
                    return Err(format!("bad msg {}", show(p)));
                };
                if base == UNSET {
                    bad += 1;
                    return Err(format!("msg {seq} before ok sub"));
                }
                if seq != last + 1 {
                    bad += 1;
                    sh.errors
                        .add(format!("subscriber {i}: seq {seq} after {last}"));
                }
                if payload.len() != sh.payload {
                    bad += 1;
                    sh.errors
                        .add(format!("subscriber {i}: payload {} B", payload.len()));
                }
                last = seq;
                got += 1;
                msgs += 1;
            } else if p.starts_with(b"join ") || p.starts_with(b"leave ") {
                presence += 1;
            } else if let Some(rest) = p.strip_prefix(b"ok sub fanout ") {
                let Some((seq, _)) = parse_seq(rest) else {
                    return Err(format!("bad ok {}", show(p)));
                };
                base = seq;
                last = seq;
                slot.base.store(seq, Relaxed);
                sh.subscribed.fetch_add(1, Relaxed);
            } else if !p.starts_with(b"hello ") {
                return Err(format!("unexpected {}", show(p)));
            }
            Ok(())
        };
        let r = if first {
            first = false;
            let r = parse_frames(&pending, &mut on_frame);
            r.map(|used| {
                pending.drain(..used);
                false
            })
        } else {
            drain_socket(&stream, &mut pending, &mut on_frame)
        };
        ctr.msgs.fetch_add(msgs, Relaxed);
        ctr.frames.fetch_add(frames, Relaxed);
        ctr.presence.fetch_add(presence, Relaxed);
        slot.last.store(last, Relaxed);
        slot.got.store(got, Relaxed);
        slot.bad.store(bad, Relaxed);
        if ping {
            let _ = stream.try_write(&pong);
        }
        match r {
            Ok(false) => {}
            Ok(true) => {
                if !sh.stop.load(Relaxed) {
                    slot.bad.fetch_add(1, Relaxed);
                    sh.errors
                        .add(format!("subscriber {i}: server closed the connection"));
                }
                break;
            }
            Err(e) => {
                slot.bad.fetch_add(1, Relaxed);
                sh.errors.add(format!("subscriber {i}: {e}"));
                break;
            }
        }
    }
}

fn fan_thread(sh: Arc<FanShared>, t: usize, range: std::ops::Range<usize>, conc: usize) {
    let rt = runtime();
    let local = LocalSet::new();
    local.block_on(&rt, async move {
        sh.threads[t].tid.store(gettid(), Relaxed);
        let mut next = range.start;
        let mut set = JoinSet::new();
        while next < range.end || !set.is_empty() {
            while next < range.end && set.len() < conc {
                set.spawn_local(fan_connect(sh.addr, next));
                next += 1;
            }
            match set.join_next().await {
                Some(Ok(Ok((i, stream, pending)))) => {
                    tokio::task::spawn_local(fan_subscriber(sh.clone(), t, i, stream, pending));
                }
                Some(Ok(Err(e))) => sh.errors.add(format!("connect: {e}")),
                Some(Err(e)) => sh.errors.add(format!("connect task: {e}")),
                None => {}
            }
        }
        while !sh.stop.load(Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // Dropping the LocalSet drops every subscriber and closes its socket.
}

#[derive(Default)]
struct PubShared {
    stop: AtomicBool,
    published: AtomicU64,
    acked: AtomicU64,
    last_seq: AtomicU64,
    first_seq: AtomicU64,
    tid: AtomicU64,
}

async fn publisher(fan: Arc<FanShared>, ps: Arc<PubShared>, o: Opts) -> Result<(), String> {
    let (mut stream, pending, _) = ws_connect(fan.addr, None).await?;
    let mut pending = read_until(&stream, pending, Duration::from_secs(10), |op, p| {
        Ok(op == OP_TEXT && p.starts_with(b"hello "))
    })
    .await?;
    let payload: Vec<u8> = (0..o.payload).map(|i| b'a' + (i % 26) as u8).collect();
    let mut body = format!("pub {FANOUT_TOPIC} ").into_bytes();
    body.extend_from_slice(&payload);
    let frame = client_frame(OP_TEXT, &body);
    let subs = o.subs as u64;
    // Deliveries of earlier runs (every subscriber has caught up with them).
    let before = fan.msgs();
    let (mut published, mut acked, mut last) = (0u64, 0u64, 0u64);
    let mut out = Vec::new();
    loop {
        let eof = drain_socket(&stream, &mut pending, |op, p| {
            if op != OP_TEXT {
                return Ok(());
            }
            let Some(rest) = p.strip_prefix(b"ok pub fanout ") else {
                return Err(format!("publisher got {}", show(p)));
            };
            let Some((seq, _)) = parse_seq(rest) else {
                return Err(format!("bad ack {}", show(p)));
            };
            if seq <= last {
                return Err(format!("ack {seq} after {last}"));
            }
            if acked == 0 {
                ps.first_seq.store(seq, Relaxed);
            }
            last = seq;
            acked += 1;
            Ok(())
        })?;
        if eof {
            return Err("publisher: server closed the connection".into());
        }
        ps.acked.store(acked, Relaxed);
        ps.last_seq.store(last, Relaxed);
        let stopping = ps.stop.load(Relaxed);
        if stopping && acked == published {
            return Ok(());
        }
        let allowed = if stopping {
            published
        } else {
            (acked + o.ack_window).min((fan.msgs() - before) / subs + o.e2e_window)
        };
        if published < allowed {
            out.clear();
            for _ in published..allowed {
                out.extend_from_slice(&frame);
            }
            stream
                .write_all(&out)
                .await
                .map_err(|e| format!("publish: {e}"))?;
            published = allowed;
            ps.published.store(published, Relaxed);
            continue;
        }
        tokio::select! {
            r = stream.readable(), if published > acked => r.map_err(|e| format!("publisher: {e}"))?,
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Resume

const PHASE_DROP: u64 = 1;
const PHASE_RECONNECT: u64 = 2;
const PHASE_STOP: u64 = 3;

struct ResShared {
    addr: SocketAddr,
    threads: Vec<Counters>,
    /// Bumped for every command; `kind` (and `want_seq`) say what to do.
    phase: AtomicU64,
    kind: AtomicU64,
    want_seq: AtomicU64,
    subscribed: AtomicU64,
    dropped: AtomicU64,
    resumed: AtomicU64,
    failed: AtomicU64,
    unexpected: AtomicU64,
    errors: Errors,
    payload: usize,
}

impl ResShared {
    fn command(&self, kind: u64, want_seq: u64) {
        self.kind.store(kind, SeqCst);
        self.want_seq.store(want_seq, SeqCst);
        self.phase.fetch_add(1, SeqCst);
    }
    fn frames(&self) -> u64 {
        self.threads.iter().map(|c| c.frames.load(Relaxed)).sum()
    }
}

/// A session as the resume scenario knows it: the cookie's id and the name
/// its `hello` gave it (the peer id; older builds named the session id).
type Named = (String, String);

/// A new session: connect, check `hello <name> new`, subscribe, wait for `ok sub`.
async fn res_setup(
    addr: SocketAddr,
    k: usize,
) -> Result<(usize, TcpStream, Vec<u8>, Named), String> {
    let (mut stream, pending, id) = ws_connect(addr, None).await?;
    let mut name = String::new();
    let pending = read_until(&stream, pending, Duration::from_secs(20), |op, p| {
        if op != OP_TEXT {
            return Ok(false);
        }
        let text = String::from_utf8_lossy(p);
        let parts: Vec<&str> = text.split(' ').collect();
        if parts.len() == 4 && parts[0] == "hello" && parts[2] == "new" {
            name = parts[1].to_string();
            Ok(true)
        } else {
            Err(format!(
                "expected `hello <name> new <node>`, got {}",
                show(p)
            ))
        }
    })
    .await?;
    stream
        .write_all(&client_frame(
            OP_TEXT,
            format!("sub {RESUME_TOPIC}").as_bytes(),
        ))
        .await
        .map_err(|e| format!("write sub: {e}"))?;
    let ok = format!("ok sub {RESUME_TOPIC} ");
    let pending = read_until(&stream, pending, Duration::from_secs(30), |op, p| {
        Ok(op == OP_TEXT && p.starts_with(ok.as_bytes()))
    })
    .await?;
    Ok((k, stream, pending, (id, name)))
}

/// A reconnect with the cookie: `hello <the same name> resumed`, then the
/// missed message.
async fn res_reconnect(
    addr: SocketAddr,
    k: usize,
    (id, name): Named,
    want: u64,
    payload: usize,
) -> Result<(usize, TcpStream, Vec<u8>), String> {
    let (stream, pending, cid) = ws_connect(addr, Some(&id)).await?;
    if cid != id {
        return Err(format!("cookie {id} came back as {cid}"));
    }
    let hello = format!("hello {name} resumed ");
    let msg = format!("msg {RESUME_TOPIC} {want} ");
    let mut said_hello = false;
    let pending = read_until(&stream, pending, Duration::from_secs(20), |op, p| {
        if op != OP_TEXT {
            return Ok(false);
        }
        if !said_hello {
            if !p.starts_with(hello.as_bytes()) {
                return Err(format!("expected {hello:?}, got {}", show(p)));
            }
            said_hello = true;
            return Ok(false);
        }
        if p.starts_with(b"join ") || p.starts_with(b"leave ") {
            return Ok(false);
        }
        if p.starts_with(msg.as_bytes()) && p.len() == msg.len() + payload {
            return Ok(true);
        }
        Err(format!("expected {msg:?} + {payload} B, got {}", show(p)))
    })
    .await
    .map_err(|e| format!("session {id}: {e}"))?;
    Ok((k, stream, pending))
}

/// Holds a connected session: reads and discards presence; any `msg` here
/// would be a duplicate (nothing is published while sessions are connected).
async fn res_hold(sh: Arc<ResShared>, t: usize, stream: TcpStream, mut pending: Vec<u8>) {
    let pong = client_frame(OP_PONG, &[]);
    loop {
        let (mut frames, mut ping) = (0u64, false);
        let r = drain_socket(&stream, &mut pending, |op, p| {
            frames += 1;
            if op == OP_PING {
                ping = true;
            } else if op == OP_TEXT && p.starts_with(b"msg ") {
                sh.unexpected.fetch_add(1, Relaxed);
                sh.errors.add(format!("unexpected {}", show(p)));
            }
            Ok(())
        });
        sh.threads[t].frames.fetch_add(frames, Relaxed);
        if ping {
            let _ = stream.try_write(&pong);
        }
        match r {
            Ok(false) => {}
            Ok(true) => {
                sh.errors
                    .add("held session: server closed the connection".into());
                return;
            }
            Err(e) => {
                sh.errors.add(format!("held session: {e}"));
                return;
            }
        }
        if stream.readable().await.is_err() {
            return;
        }
    }
}

fn res_thread(sh: Arc<ResShared>, t: usize, count: usize, conc: usize) {
    let rt = runtime();
    let local = LocalSet::new();
    local.block_on(&rt, async move {
        sh.threads[t].tid.store(gettid(), Relaxed);
        let mut ids: Vec<Option<Named>> = vec![None; count];
        let mut holders: Vec<Option<JoinHandle<()>>> = (0..count).map(|_| None).collect();
        let mut fds: Vec<RawFd> = vec![-1; count];
        let mut next = 0;
        let mut set = JoinSet::new();
        while next < count || !set.is_empty() {
            while next < count && set.len() < conc {
                set.spawn_local(res_setup(sh.addr, next));
                next += 1;
            }
            match set.join_next().await {
                Some(Ok(Ok((k, stream, pending, id)))) => {
                    ids[k] = Some(id);
                    fds[k] = stream.as_raw_fd();
                    holders[k] = Some(tokio::task::spawn_local(res_hold(
                        sh.clone(),
                        t,
                        stream,
                        pending,
                    )));
                    sh.subscribed.fetch_add(1, Relaxed);
                }
                Some(Ok(Err(e))) => {
                    sh.failed.fetch_add(1, Relaxed);
                    sh.errors.add(format!("setup: {e}"));
                }
                Some(Err(e)) => sh.errors.add(format!("setup task: {e}")),
                None => {}
            }
        }
        let mut seen = sh.phase.load(SeqCst);
        loop {
            let phase = sh.phase.load(SeqCst);
            if phase == seen {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            seen = phase;
            match sh.kind.load(SeqCst) {
                PHASE_DROP => {
                    let mut n = 0;
                    for (h, fd) in holders.iter_mut().zip(&fds) {
                        if let Some(h) = h.take() {
                            // Abort with RST: no close frame, no FIN, and no
                            // TIME_WAIT left on this side to slow the next
                            // connect()s' port search.
                            set_linger_zero(*fd);
                            h.abort();
                            let _ = h.await; // the task and its socket are gone
                            n += 1;
                        }
                    }
                    sh.dropped.fetch_add(n, Relaxed);
                }
                PHASE_RECONNECT => {
                    let want = sh.want_seq.load(SeqCst);
                    let mut next = 0;
                    let mut set = JoinSet::new();
                    while next < count || !set.is_empty() {
                        while next < count && set.len() < conc {
                            if let Some(id) = ids[next].clone() {
                                set.spawn_local(res_reconnect(sh.addr, next, id, want, sh.payload));
                            }
                            next += 1;
                        }
                        match set.join_next().await {
                            Some(Ok(Ok((k, stream, pending)))) => {
                                fds[k] = stream.as_raw_fd();
                                holders[k] = Some(tokio::task::spawn_local(res_hold(
                                    sh.clone(),
                                    t,
                                    stream,
                                    pending,
                                )));
                                sh.resumed.fetch_add(1, Relaxed);
                            }
                            Some(Ok(Err(e))) => {
                                sh.failed.fetch_add(1, Relaxed);
                                sh.errors.add(e);
                            }
                            Some(Err(e)) => {
                                sh.failed.fetch_add(1, Relaxed);
                                sh.errors.add(format!("reconnect task: {e}"));
                            }
                            None => {}
                        }
                    }
                }
                _ => return,
            }
        }
    });
}

/// SO_LINGER {on, 0}: closing the socket resets the connection.
fn set_linger_zero(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is an open socket owned by a task that is still alive;
    // `linger` is valid for reads of its size for the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// A blocking WebSocket client for the resume publisher.
struct SyncWs {
    stream: std::net::TcpStream,
    pending: Vec<u8>,
}

impl SyncWs {
    fn connect(addr: SocketAddr) -> Result<SyncWs, String> {
        let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
        stream
            .write_all(&upgrade_request(addr, None))
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let pending = loop {
            if let Some(r) = parse_head(&buf) {
                let (end, _) = r?;
                break buf.split_off(end);
            }
            let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("EOF during upgrade".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let mut ws = SyncWs { stream, pending };
        ws.next_text_with(b"hello ")?;
        Ok(ws)
    }

    /// Reads until a text frame starting with `prefix`; returns it.
    fn next_text_with(&mut self, prefix: &[u8]) -> Result<Vec<u8>, String> {
        let mut chunk = [0u8; 4096];
        loop {
            while let Some((op, range, len)) = next_frame(&self.pending)? {
                let p = self.pending[range].to_vec();
                self.pending.drain(..len);
                if op == OP_TEXT {
                    if p.starts_with(prefix) {
                        return Ok(p);
                    }
                    return Err(format!("expected {:?}, got {}", show(prefix), show(&p)));
                }
            }
            let n = self.stream.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("EOF".into());
            }
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }

    fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<u64, String> {
        let mut body = format!("pub {topic} ").into_bytes();
        body.extend_from_slice(payload);
        self.stream
            .write_all(&client_frame(OP_TEXT, &body))
            .map_err(|e| e.to_string())?;
        let ack = self.next_text_with(format!("ok pub {topic} ").as_bytes())?;
        parse_seq(&ack[format!("ok pub {topic} ").len()..])
            .map(|(s, _)| s)
            .ok_or_else(|| format!("bad ack {}", show(&ack)))
    }
}

// ---------------------------------------------------------------------------
// The server, its metrics, CPU accounting

struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    admin: SocketAddr,
    pid: u32,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_server(o: &Opts, log: Option<PathBuf>) -> Result<Server, String> {
    if let Some((addr, admin, pid)) = o.external {
        return Ok(Server {
            child: None,
            addr,
            admin,
            pid,
        });
    }
    let mut child = Command::new(&o.wsgate)
        .args([
            "--cores",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--cookie-secure",
            "false",
            "--max-backpressure",
            "16MiB",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", o.wsgate.display()))?;
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut file = log.and_then(|p| std::fs::File::create(p).ok());
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(f) = file.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if line.contains(" event=listening ") {
                let field = |k: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(k))
                        .and_then(|v| v.parse::<SocketAddr>().ok())
                };
                if let (Some(tx), Some(l), Some(a)) = (tx.take(), field("listen="), field("admin="))
                {
                    let _ = tx.send((l, a));
                }
            }
        }
    });
    let pid = child.id();
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok((addr, admin)) => Ok(Server {
            child: Some(child),
            addr,
            admin,
            pid,
        }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err("wsgate did not report listening within 10 s".into())
        }
    }
}

fn metrics(admin: SocketAddr) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(admin).map_err(|e| format!("admin: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

/// The sum of the samples whose name (with labels) starts with `prefix`.
fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn metric_now(admin: SocketAddr, prefix: &str) -> Result<u64, String> {
    Ok(metric(&metrics(admin)?, prefix))
}

/// Resident memory of `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// utime + stime in clock ticks, from a `/proc/.../stat` file.
fn stat_ticks(path: &str) -> u64 {
    let (u, s) = stat_user_sys(path);
    u + s
}

/// (utime, stime) in clock ticks, from a `/proc/.../stat` file.
fn stat_user_sys(path: &str) -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return (0, 0);
    };
    let Some(at) = text.rfind(')') else {
        return (0, 0);
    };
    let f: Vec<&str> = text[at + 1..].split_whitespace().collect();
    // Fields 14 and 15 of the file; `f` starts at field 3.
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (get(11), get(12))
}

/// CPU time of every thread of `pid`, in ns (first field of each task's schedstat).
fn sched_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU time of one thread of this process, in ns.
fn thread_ns(tid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Machine-wide (busy, softirq, total) ticks from `/proc/stat`.
fn machine_ticks() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = text.lines().next().unwrap_or("");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    let total = busy + get(3) + get(4);
    (busy, get(6), total)
}

#[derive(Clone)]
struct Sample {
    t: Instant,
    srv_ticks: u64,
    srv_sys_ticks: u64,
    srv_ns: u64,
    cli_ticks: u64,
    cli_ns: u64,
    threads: Vec<u64>,
    mach: (u64, u64, u64),
}

fn sample(pid: u32, tids: &[u64]) -> Sample {
    let srv = stat_user_sys(&format!("/proc/{pid}/stat"));
    Sample {
        t: Instant::now(),
        srv_ticks: srv.0 + srv.1,
        srv_sys_ticks: srv.1,
        srv_ns: sched_ns(pid),
        cli_ticks: stat_ticks("/proc/self/stat"),
        cli_ns: sched_ns(std::process::id()),
        threads: tids.iter().map(|t| thread_ns(*t)).collect(),
        mach: machine_ticks(),
    }
}

/// CPU use between two samples, in cores (CPU seconds per second).
#[derive(Clone, Copy, Default, Debug)]
struct Usage {
    secs: f64,
    srv_cpu_s: f64,
    srv_sys_s: f64,
    srv_sched_s: f64,
    cli_cpu_s: f64,
    cli_sched_s: f64,
    busiest_thread: f64,
    softirq: f64,
    other: f64,
}

fn usage(a: &Sample, b: &Sample) -> Usage {
    let tck = clk_tck();
    let secs = (b.t - a.t).as_secs_f64();
    let d = |x: u64, y: u64| y.saturating_sub(x) as f64 / tck;
    let srv = d(a.srv_ticks, b.srv_ticks);
    let cli = d(a.cli_ticks, b.cli_ticks);
    let busiest = a
        .threads
        .iter()
        .zip(&b.threads)
        .map(|(x, y)| y.saturating_sub(*x) as f64 / 1e9 / secs)
        .fold(0.0, f64::max);
    let busy = d(a.mach.0, b.mach.0);
    Usage {
        secs,
        srv_cpu_s: srv,
        srv_sys_s: d(a.srv_sys_ticks, b.srv_sys_ticks),
        srv_sched_s: b.srv_ns.saturating_sub(a.srv_ns) as f64 / 1e9,
        cli_cpu_s: cli,
        cli_sched_s: b.cli_ns.saturating_sub(a.cli_ns) as f64 / 1e9,
        busiest_thread: busiest,
        softirq: d(a.mach.1, b.mach.1) / secs,
        other: ((busy - srv - cli) / secs).max(0.0),
    }
}

fn wait_for(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let until = Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `frames` stops moving for `quiet`; returns when it last moved.
fn settle(frames: impl Fn() -> u64, quiet: Duration, timeout: Duration) -> Result<Instant, String> {
    let start = Instant::now();
    let mut last = frames();
    let mut moved = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = frames();
        if now != last {
            last = now;
            moved = Instant::now();
        } else if moved.elapsed() >= quiet {
            return Ok(moved);
        }
        if start.elapsed() > timeout {
            return Err("presence traffic did not settle".into());
        }
    }
}

fn split(n: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    for p in 0..parts {
        let len = n / parts + usize::from(p < n % parts);
        out.push(at..at + len);
        at += len;
    }
    out
}

// ---------------------------------------------------------------------------
// Runs

#[derive(Default, Clone, Debug)]
struct FanSetup {
    secs: f64,
    presence: u64,
    srv_cpu_s: f64,
    rss_mib: f64,
}

#[derive(Default, Clone, Debug)]
struct FanRun {
    deliveries_s: f64,
    /// The server's own count of messages sent (deliveries and acks), per second.
    server_sent_s: f64,
    publishes_s: f64,
    us_per_delivery: f64,
    us_per_delivery_sched: f64,
    usage: Usage,
    subs_ok: usize,
    published: u64,
    errors: String,
    rss_mib: f64,
}

/// Waits (up to `--quiet-wait` s) until processes other than the server and
/// this client use less than 0.15 of a CPU.
fn wait_quiet(o: &Opts, pid: u32) {
    let until = Instant::now() + Duration::from_secs_f64(o.quiet_wait);
    let mut said = false;
    loop {
        let a = sample(pid, &[]);
        std::thread::sleep(Duration::from_millis(500));
        let u = usage(&a, &sample(pid, &[]));
        if u.other < 0.15 || Instant::now() > until {
            if said || u.other >= 0.15 {
                eprintln!("   other processes use {:.2} cores; going on", u.other);
            }
            return;
        }
        if !said {
            eprintln!(
                "   waiting for other processes to leave the CPUs ({:.2} cores busy)",
                u.other
            );
            said = true;
        }
    }
}

/// One server and one set of subscribers; `--runs` measured windows, each
/// with its own publisher connection and its own end-of-run check.
fn fan_all(o: &Opts) -> Result<(FanSetup, Vec<Result<FanRun, String>>), String> {
    let log = o.out.as_ref().map(|d| d.join("logs/fanout.log"));
    let server = start_server(o, log)?;
    let sh = Arc::new(FanShared {
        addr: server.addr,
        threads: (0..o.threads).map(|_| Counters::default()).collect(),
        subs: (0..o.subs)
            .map(|_| SubSlot {
                base: AtomicU64::new(UNSET),
                last: AtomicU64::new(0),
                got: AtomicU64::new(0),
                bad: AtomicU64::new(0),
            })
            .collect(),
        subscribed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        errors: Errors::default(),
        payload: o.payload,
    });
    wait_quiet(o, server.pid);
    let s0 = sample(server.pid, &[]);
    let threads: Vec<_> = split(o.subs, o.threads)
        .into_iter()
        .enumerate()
        .map(|(t, r)| {
            let sh = sh.clone();
            std::thread::spawn(move || fan_thread(sh, t, r, 64))
        })
        .collect();
    let result = (|| {
        let n = o.subs as u64;
        wait_for("subscriptions", Duration::from_secs(150), || {
            if sh.errors.count.load(Relaxed) > 0 {
                return Err(sh.errors.summary());
            }
            Ok(sh.subscribed.load(Relaxed) == n)
        })?;
        let settled = settle(
            || sh.frames(),
            Duration::from_millis(400),
            Duration::from_secs(150),
        )?;
        let s1 = sample(server.pid, &[]);
        let setup = FanSetup {
            secs: (settled - s0.t).as_secs_f64(),
            presence: sh.presence(),
            srv_cpu_s: usage(&s0, &s1).srv_cpu_s,
            rss_mib: rss_mib(server.pid),
        };
        eprintln!(
            "   {} subscribed; presence settled after {:.1} s ({} join frames, server CPU {:.1} s)",
            o.subs, setup.secs, setup.presence, setup.srv_cpu_s
        );
        let mut runs = Vec::new();
        for run in 1..=o.runs {
            eprintln!("== fan-out run {run}/{}", o.runs);
            wait_quiet(o, server.pid);
            let r = fan_run(o, &sh, &server);
            match &r {
                Ok(r) => eprintln!(
                    "   {:.0} deliveries/s, {:.1} publishes/s, {:.2} µs server CPU/delivery, server {:.2} + client {:.2} + other {:.2} cores; {}/{} subscribers ok; {}",
                    r.deliveries_s,
                    r.publishes_s,
                    r.us_per_delivery,
                    r.usage.srv_cpu_s / r.usage.secs,
                    r.usage.cli_cpu_s / r.usage.secs,
                    r.usage.other,
                    r.subs_ok,
                    o.subs,
                    r.errors
                ),
                Err(e) => eprintln!("   FAILED: {e}"),
            }
            let stop = r.is_err();
            runs.push(r);
            if stop {
                break;
            }
        }
        Ok((setup, runs))
    })();
    sh.stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    drop(server);
    result
}

fn fan_run(o: &Opts, sh: &Arc<FanShared>, server: &Server) -> Result<FanRun, String> {
    let pid = server.pid;
    let ps = Arc::new(PubShared::default());
    let pub_thread = {
        let (sh, ps, o) = (sh.clone(), ps.clone(), o.clone());
        std::thread::spawn(move || {
            ps.tid.store(gettid(), Relaxed);
            let rt = runtime();
            LocalSet::new().block_on(&rt, publisher(sh, ps, o))
        })
    };
    let mut tids: Vec<u64> = sh.threads.iter().map(|c| c.tid.load(Relaxed)).collect();
    wait_for("the publisher", Duration::from_secs(10), || {
        Ok(ps.tid.load(Relaxed) != 0)
    })?;
    tids.push(ps.tid.load(Relaxed));
    std::thread::sleep(Duration::from_secs_f64(o.warmup));
    let (a, ma, pa) = (sample(pid, &tids), sh.msgs(), ps.acked.load(Relaxed));
    let out_a = metric_now(server.admin, SENT_METRIC)?;
    std::thread::sleep(Duration::from_secs_f64(o.measure));
    let (b, mb, pb) = (sample(pid, &tids), sh.msgs(), ps.acked.load(Relaxed));
    let out_b = metric_now(server.admin, SENT_METRIC)?;
    ps.stop.store(true, Relaxed);
    pub_thread
        .join()
        .map_err(|_| "publisher panicked".to_string())??;
    let u = usage(&a, &b);
    let deliveries = (mb - ma) as f64;
    let mut r = FanRun {
        deliveries_s: deliveries / u.secs,
        server_sent_s: out_b.saturating_sub(out_a) as f64 / u.secs,
        publishes_s: (pb - pa) as f64 / u.secs,
        us_per_delivery: u.srv_cpu_s * 1e6 / deliveries,
        us_per_delivery_sched: u.srv_sched_s * 1e6 / deliveries,
        usage: u,
        published: ps.acked.load(Relaxed),
        ..Default::default()
    };
    let final_seq = ps.last_seq.load(Relaxed);
    if r.published != ps.published.load(Relaxed) {
        sh.errors.add(format!(
            "publisher: {} published, {} acknowledged",
            ps.published.load(Relaxed),
            r.published
        ));
    }
    // Every subscriber must reach the last acknowledged message; the counts
    // are cumulative over runs, so each run checks all the runs before it too.
    let _ = wait_for("the last deliveries", Duration::from_secs(30), || {
        Ok(sh
            .subs
            .iter()
            .all(|s| s.last.load(Relaxed) >= final_seq || s.bad.load(Relaxed) > 0))
    });
    r.subs_ok = sh
        .subs
        .iter()
        .filter(|s| {
            let base = s.base.load(Relaxed);
            base != UNSET
                && s.bad.load(Relaxed) == 0
                && s.last.load(Relaxed) == final_seq
                && s.got.load(Relaxed) == final_seq - base
        })
        .count();
    if r.subs_ok < o.subs && sh.errors.count.load(Relaxed) == 0 {
        sh.errors.add(format!(
            "{} subscriber(s) did not get every message up to {final_seq}",
            o.subs - r.subs_ok
        ));
    }
    r.errors = sh.errors.summary();
    r.rss_mib = rss_mib(pid);
    Ok(r)
}

#[derive(Default, Clone, Debug)]
struct ResRun {
    reconnects_s: f64,
    us_per_resume: f64,
    us_per_resume_sched: f64,
    usage: Usage,
    resumed_ok: u64,
    attempted: u64,
    metric_resumed: u64,
    errors: String,
}

fn res_run(o: &Opts, run: usize) -> Result<ResRun, String> {
    let log = o
        .out
        .as_ref()
        .map(|d| d.join(format!("logs/resume-{run}.log")));
    let server = start_server(o, log)?;
    let n = o.resume_sessions as u64;
    let sh = Arc::new(ResShared {
        addr: server.addr,
        threads: (0..o.threads).map(|_| Counters::default()).collect(),
        phase: AtomicU64::new(0),
        kind: AtomicU64::new(0),
        want_seq: AtomicU64::new(0),
        subscribed: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        resumed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
        errors: Errors::default(),
        payload: o.payload,
    });
    let conc = o.resume_concurrency.div_ceil(o.threads).max(1);
    wait_quiet(o, server.pid);
    let threads: Vec<_> = split(o.resume_sessions, o.threads)
        .into_iter()
        .enumerate()
        .map(|(t, r)| {
            let sh = sh.clone();
            std::thread::spawn(move || res_thread(sh, t, r.len(), conc))
        })
        .collect();
    let result = (|| {
        wait_for("sessions", Duration::from_secs(120), || {
            if sh.failed.load(Relaxed) > 0 {
                return Err(sh.errors.summary());
            }
            Ok(sh.subscribed.load(Relaxed) == n)
        })?;
        settle(
            || sh.frames(),
            Duration::from_millis(300),
            Duration::from_secs(60),
        )?;
        let tids: Vec<u64> = sh.threads.iter().map(|c| c.tid.load(Relaxed)).collect();
        let mut publisher = SyncWs::connect(server.addr)?;
        let payload: Vec<u8> = (0..o.payload).map(|i| b'A' + (i % 26) as u8).collect();
        let resumed_before = metric_now(server.admin, "wsgate_sessions_total{event=\"resumed\"}")?;
        let mut total = Usage::default();
        let mut per_thread = vec![0u64; tids.len()];
        let mut first: Option<Sample> = None;
        let mut last: Option<Sample> = None;
        for c in 0..o.resume_cycles as u64 {
            let active = metric_now(server.admin, "wsgate_connections_active")?;
            sh.command(PHASE_DROP, 0);
            wait_for("the drop", Duration::from_secs(10), || {
                Ok(sh.dropped.load(Relaxed) == n * (c + 1))
            })?;
            wait_for(
                "the server to see the drops",
                Duration::from_secs(10),
                || Ok(metric_now(server.admin, "wsgate_connections_active")? + n <= active),
            )?;
            std::thread::sleep(Duration::from_millis(20));
            let seq = publisher.publish(RESUME_TOPIC, &payload)?;
            let a = sample(server.pid, &tids);
            sh.command(PHASE_RECONNECT, seq);
            wait_for("the reconnects", Duration::from_secs(60), || {
                Ok(sh.resumed.load(Relaxed) + sh.failed.load(Relaxed) >= n * (c + 1))
            })?;
            let b = sample(server.pid, &tids);
            let u = usage(&a, &b);
            total.secs += u.secs;
            total.srv_cpu_s += u.srv_cpu_s;
            total.srv_sched_s += u.srv_sched_s;
            total.cli_cpu_s += u.cli_cpu_s;
            total.cli_sched_s += u.cli_sched_s;
            for (acc, (x, y)) in per_thread.iter_mut().zip(a.threads.iter().zip(&b.threads)) {
                *acc += y.saturating_sub(*x);
            }
            first.get_or_insert(a);
            last = Some(b);
            if sh.failed.load(Relaxed) > 0 {
                break;
            }
        }
        total.busiest_thread = per_thread
            .iter()
            .map(|ns| *ns as f64 / 1e9 / total.secs)
            .fold(0.0, f64::max);
        if let (Some(a), Some(b)) = (first, last) {
            // Over all the cycles (drops and publishes included): ticks are too
            // coarse for one reconnect phase.
            let whole = usage(&a, &b);
            total.other = whole.other;
            total.softirq = whole.softirq;
        }
        let resumed = sh.resumed.load(Relaxed);
        let attempted = resumed + sh.failed.load(Relaxed);
        let r = ResRun {
            reconnects_s: attempted as f64 / total.secs,
            us_per_resume: total.srv_cpu_s * 1e6 / attempted as f64,
            us_per_resume_sched: total.srv_sched_s * 1e6 / attempted as f64,
            usage: total,
            resumed_ok: resumed,
            attempted,
            metric_resumed: metric_now(server.admin, "wsgate_sessions_total{event=\"resumed\"}")?
                - resumed_before,
            errors: sh.errors.summary(),
        };
        Ok(r)
    })();
    sh.command(PHASE_STOP, 0);
    for t in threads {
        let _ = t.join();
    }
    drop(server);
    result
}

// ---------------------------------------------------------------------------
// Report

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// 1234567.8 → "1,234,568".
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let s = format!("{:.0}", x);
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn row<T>(
    out: &mut String,
    name: &str,
    runs: &[T],
    value: impl Fn(&T) -> f64,
    fmt: impl Fn(f64) -> String,
) {
    let vals: Vec<f64> = runs.iter().map(&value).collect();
    let _ = write!(out, "| {name} | **{}** |", fmt(median(vals.clone())));
    for v in vals {
        let _ = write!(out, " {} |", fmt(v));
    }
    out.push('\n');
}

fn text_row<T>(
    out: &mut String,
    name: &str,
    runs: &[T],
    summary: String,
    value: impl Fn(&T) -> String,
) {
    let _ = write!(out, "| {name} | **{summary}** |");
    for r in runs {
        let _ = write!(out, " {} |", value(r));
    }
    out.push('\n');
}

fn header(out: &mut String, runs: usize) {
    out.push_str("| | median |");
    for i in 1..=runs {
        let _ = write!(out, " run {i} |");
    }
    out.push_str("\n|---|---:|");
    for _ in 0..runs {
        out.push_str("---:|");
    }
    out.push('\n');
}

/// One line on who used the CPUs: whether a client thread saturated a core
/// and whether the machine as a whole was saturated (medians over runs).
fn saturation<'a>(usages: impl Iterator<Item = &'a Usage>) -> String {
    let u: Vec<&Usage> = usages.collect();
    let busiest = median(u.iter().map(|u| u.busiest_thread).collect());
    let srv = median(u.iter().map(|u| u.srv_cpu_s / u.secs).collect());
    let cli = median(u.iter().map(|u| u.cli_cpu_s / u.secs).collect());
    let other = median(u.iter().map(|u| u.other).collect());
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let total = srv + cli + other;
    let thread = if busiest >= 0.9 {
        format!(
            "the busiest client thread **saturated a core** ({:.0} %)",
            busiest * 100.0
        )
    } else {
        format!(
            "no client thread saturated a core (busiest: {:.0} %)",
            busiest * 100.0
        )
    };
    let machine = if total >= 0.9 * cpus as f64 {
        "the machine was CPU-bound, so the rates are those of server and client sharing the CPUs \
         and the server's CPU per operation is the figure that does not depend on the client"
    } else {
        "the machine was not CPU-bound: the rate is limited by latency or by the windows"
    };
    format!(
        "Client saturation: {thread}; server {srv:.2} + client {cli:.2} + other {other:.2} = \
         {total:.2} of {cpus} CPUs busy: {machine}."
    )
}

fn fan_table(o: &Opts, setup: &FanSetup, runs: &[FanRun]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Fan-out: 1 publisher → {} subscribers of one topic, {} B payload\n",
        thousands(o.subs as f64),
        o.payload
    );
    let _ = writeln!(
        s,
        "One server (`--cores 2`) and one set of subscribers for all runs (subscribing them costs \
         O(N²) presence frames, see the setup rows); each run has its own publisher connection, \
         {} s of warm-up and {} s measured. The publisher keeps at most {} publishes \
         unacknowledged and at most {} messages ahead of the average subscriber. Client: {} \
         subscriber threads + 1 publisher thread (tokio current_thread runtimes, epoll), unpinned; \
         the server's two runtimes are pinned to the two CPUs, so client and server share them.\n",
        o.warmup, o.measure, o.ack_window, o.e2e_window, o.threads
    );
    header(&mut s, runs.len());
    let f0 = |x: f64| thousands(x);
    let f2 = |x: f64| format!("{x:.2}");
    row(
        &mut s,
        "deliveries/s (`msg` frames counted at the subscribers)",
        runs,
        |r| r.deliveries_s,
        f0,
    );
    row(
        &mut s,
        "cross-check: messages sent/s by the server's own counter (deliveries + acks)",
        runs,
        |r| r.server_sent_s,
        f0,
    );
    row(
        &mut s,
        "publishes/s (acknowledged)",
        runs,
        |r| r.publishes_s,
        f0,
    );
    row(
        &mut s,
        "server CPU µs per delivery (`/proc/<pid>/stat` utime+stime)",
        runs,
        |r| r.us_per_delivery,
        f2,
    );
    row(
        &mut s,
        "server CPU µs per delivery (task schedstat, ns clock)",
        runs,
        |r| r.us_per_delivery_sched,
        f2,
    );
    row(
        &mut s,
        "server CPU, cores (of 2)",
        runs,
        |r| r.usage.srv_cpu_s / r.usage.secs,
        f2,
    );
    row(
        &mut s,
        "server CPU in the kernel (stime share)",
        runs,
        |r| r.usage.srv_sys_s / r.usage.srv_cpu_s,
        |x| format!("{:.0} %", x * 100.0),
    );
    row(
        &mut s,
        "client CPU, cores (all threads)",
        runs,
        |r| r.usage.cli_cpu_s / r.usage.secs,
        f2,
    );
    row(
        &mut s,
        "busiest client thread, share of one core",
        runs,
        |r| r.usage.busiest_thread,
        f2,
    );
    row(
        &mut s,
        "other processes, cores",
        runs,
        |r| r.usage.other,
        f2,
    );
    row(
        &mut s,
        "server RSS after the run, MiB",
        runs,
        |r| r.rss_mib,
        |x| format!("{x:.0}"),
    );
    let all_ok = runs.iter().all(|r| r.subs_ok == o.subs);
    text_row(
        &mut s,
        "every subscriber got every message, in order",
        runs,
        if all_ok { "yes".into() } else { "NO".into() },
        |r| {
            if r.subs_ok == o.subs {
                format!(
                    "yes ({} msgs × {})",
                    thousands(r.published as f64),
                    thousands(o.subs as f64)
                )
            } else {
                format!("NO: {}/{} subscribers ok", r.subs_ok, o.subs)
            }
        },
    );
    let _ = writeln!(s, "\n{}", saturation(runs.iter().map(|r| &r.usage)));
    let _ = writeln!(
        s,
        "\nSetup (once): connecting and subscribing the {} subscribers took **{:.1} s** until the \
         presence traffic settled: **{}** `join` frames delivered, **{:.1} s** of server CPU; \
         server RSS then {:.0} MiB.",
        thousands(o.subs as f64),
        setup.secs,
        thousands(setup.presence as f64),
        setup.srv_cpu_s,
        setup.rss_mib
    );
    s
}

fn res_table(o: &Opts, runs: &[ResRun]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Resume: {} sessions, {} drop/reconnect cycles per run\n",
        thousands(o.resume_sessions as f64),
        o.resume_cycles
    );
    let _ = writeln!(
        s,
        "Each session is subscribed to one topic. Per cycle every socket is dropped without a close \
         frame (reset with SO_LINGER 0, so the client's connects do not pile up TIME_WAIT), one {} B message is published while they are away, and every session reconnects \
         with its cookie ({} at a time): it must get `hello <id> resumed` and then the missed \
         message. Measured from the first reconnect to the last replay; the CPU covers TCP accept, \
         upgrade, hand-over to the session's core, hello, re-subscribe and replay.\n",
        o.payload, o.resume_concurrency
    );
    header(&mut s, runs.len());
    let f2 = |x: f64| format!("{x:.2}");
    row(&mut s, "reconnects/s", runs, |r| r.reconnects_s, thousands);
    row(
        &mut s,
        "server CPU µs per resume (task schedstat, ns clock)",
        runs,
        |r| r.us_per_resume_sched,
        |x| format!("{x:.1}"),
    );
    row(&mut s, "server CPU µs per resume (`/proc/<pid>/stat` utime+stime; 10 ms ticks, coarse over these short windows)", runs, |r| r.us_per_resume, |x| format!("{x:.1}"));
    row(
        &mut s,
        "server CPU, cores (of 2; schedstat)",
        runs,
        |r| r.usage.srv_sched_s / r.usage.secs,
        f2,
    );
    row(
        &mut s,
        "client CPU, cores (all threads; schedstat)",
        runs,
        |r| r.usage.cli_sched_s / r.usage.secs,
        f2,
    );
    row(
        &mut s,
        "other processes, cores (over the whole run)",
        runs,
        |r| r.usage.other,
        f2,
    );
    let total = (o.resume_sessions * o.resume_cycles) as u64;
    let all_ok = runs
        .iter()
        .all(|r| r.resumed_ok == total && r.metric_resumed == total && r.errors.starts_with("0 "));
    text_row(
        &mut s,
        "every reconnect `resumed` and replayed the missed message",
        runs,
        if all_ok { "yes".into() } else { "NO".into() },
        |r| {
            format!(
                "{} {}/{} (server counted {})",
                if r.resumed_ok == total { "yes" } else { "NO" },
                thousands(r.resumed_ok as f64),
                thousands(total as f64),
                thousands(r.metric_resumed as f64)
            )
        },
    );
    let precise: Vec<Usage> = runs
        .iter()
        .map(|r| Usage {
            srv_cpu_s: r.usage.srv_sched_s,
            cli_cpu_s: r.usage.cli_sched_s,
            ..r.usage
        })
        .collect();
    let _ = writeln!(s, "\n{}", saturation(precise.iter()));
    s
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("scale") {
        scale::main(std::env::args().skip(2));
        return;
    }
    let o = parse_opts();
    if let Some(out) = &o.out {
        let _ = std::fs::create_dir_all(out.join("logs"));
    }
    let want = |s: &str| o.scenarios.iter().any(|x| x == s);
    let mut md = String::new();
    let mut failed = false;
    if want("fanout") {
        eprintln!("== fan-out: {} subscribers", o.subs);
        match fan_all(&o) {
            Ok((setup, runs)) => {
                let ok: Vec<FanRun> = runs
                    .iter()
                    .filter_map(|r| r.as_ref().ok().cloned())
                    .collect();
                failed |= ok.len() != o.runs || ok.iter().any(|r| r.subs_ok != o.subs);
                md.push_str(&fan_table(&o, &setup, &ok));
                md.push('\n');
            }
            Err(e) => {
                eprintln!("   FAILED: {e}");
                failed = true;
            }
        }
    }
    if want("resume") {
        let mut res = Vec::new();
        let total = (o.resume_sessions * o.resume_cycles) as u64;
        for run in 1..=o.runs {
            eprintln!(
                "== resume run {run}/{}: {} sessions × {} cycles",
                o.runs, o.resume_sessions, o.resume_cycles
            );
            match res_run(&o, run) {
                Ok(r) => {
                    eprintln!(
                        "   {:.0} reconnects/s, {:.1} µs server CPU/resume ({:.1} by schedstat); {}/{} resumed; {}",
                        r.reconnects_s, r.us_per_resume, r.us_per_resume_sched, r.resumed_ok, r.attempted, r.errors
                    );
                    failed |= r.resumed_ok != total || !r.errors.starts_with("0 ");
                    res.push(r);
                }
                Err(e) => {
                    eprintln!("   FAILED: {e}");
                    failed = true;
                }
            }
        }
        if !res.is_empty() {
            md.push_str(&res_table(&o, &res));
        }
    }
    print!("{md}");
    if let Some(out) = &o.out {
        let _ = std::fs::write(out.join("fanout-table.md"), &md);
    }
    if failed {
        std::process::exit(1);
    }
}
