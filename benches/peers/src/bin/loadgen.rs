//! The end-to-end load generator and harness for wsgate's benchmark suite.
//!
//! It is its own WebSocket client (no wsgate code): a minimal HTTP/1.1 upgrade,
//! masked client frames and a streaming reader of server frames, on one tokio
//! current_thread runtime. Every connection is a closed loop: it keeps a fixed
//! number of messages in flight and sends one more for every echo it gets.
//!
//! `loadgen suite` starts each server (pinned with `taskset`), runs every
//! scenario against it, kills it, and interleaves the servers within every
//! round; it then prints the medians as a markdown table and writes it to
//! `e2e.md`, with every run's numbers in `results.json`.
//!
//! `loadgen run` drives one scenario against a server that is already running,
//! for a fixed time or a fixed number of operations (for profiling).

#[path = "../common.rs"]
#[allow(dead_code)]
mod common;

/// `loadgen auth`: the authentication cost suite of benches/auth.sh.
#[path = "../auth_bench.rs"]
mod auth_bench;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------
// Scenarios

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `conns` connections, each with `depth` messages of `size` bytes in flight.
    Echo {
        conns: usize,
        depth: usize,
        size: usize,
    },
    /// `clients` concurrent loops of connect → 101 → close.
    Upgrades { clients: usize },
    /// `conns` upgraded connections that then stay silent.
    Idle { conns: usize },
}

struct Scenario {
    name: &'static str,
    title: &'static str,
    kind: Kind,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "fan-in",
        title: "fan-in: 200 conns × 1 in flight × 20 B",
        kind: Kind::Echo {
            conns: 200,
            depth: 1,
            size: 20,
        },
    },
    Scenario {
        name: "pipelined-32",
        title: "pipelined: 50 conns × 16 in flight × 32 B",
        kind: Kind::Echo {
            conns: 50,
            depth: 16,
            size: 32,
        },
    },
    Scenario {
        name: "pipelined-1k",
        title: "pipelined: 50 conns × 8 in flight × 1 KiB",
        kind: Kind::Echo {
            conns: 50,
            depth: 8,
            size: 1024,
        },
    },
    Scenario {
        name: "large-64k",
        title: "large: 4 conns × 4 in flight × 64 KiB",
        kind: Kind::Echo {
            conns: 4,
            depth: 4,
            size: 64 * 1024,
        },
    },
    Scenario {
        name: "ping-pong",
        title: "ping-pong: 1 conn × 1 in flight × 32 B",
        kind: Kind::Echo {
            conns: 1,
            depth: 1,
            size: 32,
        },
    },
    Scenario {
        name: "upgrades",
        title: "upgrades: 32 concurrent clients, connect → 101 → close",
        kind: Kind::Upgrades { clients: 32 },
    },
    Scenario {
        name: "idle",
        title: "idle: 5,000 idle connections",
        kind: Kind::Idle { conns: 5000 },
    },
];

/// Connections opened (and kept) before the idle baseline, so one-time
/// allocations of a server's first connections are not counted per connection.
const IDLE_WARM_CONNS: usize = 100;

// ---------------------------------------------------------------------------
// Client framing

use common::{client_frame, OP_CLOSE, OP_TEXT};

/// Reads server frames from a byte stream in pieces of any size and checks
/// each echo against the payload that was sent, without buffering whole frames.
#[derive(Default)]
struct FrameReader {
    head: [u8; 10],
    head_have: usize,
    /// Payload bytes of the current frame still to come; `None` while in a header.
    remaining: Option<usize>,
    offset: usize,
    opcode: u8,
}

impl FrameReader {
    fn header_len(&self) -> usize {
        if self.head_have < 2 {
            return 2;
        }
        match self.head[1] & 0x7F {
            126 => 4,
            127 => 10,
            _ => 2,
        }
    }

    /// Consumes `data`; returns the number of complete data frames (each checked
    /// to be `expect`, with opcode `want_op`).
    fn feed(&mut self, mut data: &[u8], expect: &[u8], want_op: u8) -> Result<usize, String> {
        let mut done = 0;
        while !data.is_empty() {
            match self.remaining {
                None => {
                    let need = self.header_len();
                    let take = (need - self.head_have).min(data.len());
                    self.head[self.head_have..self.head_have + take].copy_from_slice(&data[..take]);
                    self.head_have += take;
                    data = &data[take..];
                    if self.head_have < 2 || self.head_have < self.header_len() {
                        continue;
                    }
                    let h = &self.head;
                    if h[1] & 0x80 != 0 {
                        return Err("server sent a masked frame".into());
                    }
                    self.opcode = h[0] & 0x0F;
                    if h[0] & 0x80 == 0 {
                        return Err("server fragmented an echo".into());
                    }
                    let len = match h[1] & 0x7F {
                        126 => u16::from_be_bytes([h[2], h[3]]) as usize,
                        127 => u64::from_be_bytes(h[2..10].try_into().unwrap()) as usize,
                        n => n as usize,
                    };
                    if self.opcode == OP_CLOSE {
                        return Err("server sent a close frame".into());
                    }
                    if self.opcode != want_op {
                        return Err(format!("unexpected opcode {:#x}", self.opcode));
                    }
                    if len != expect.len() {
                        return Err(format!("echo of {} bytes, sent {}", len, expect.len()));
                    }
                    self.head_have = 0;
                    self.offset = 0;
                    if len == 0 {
                        done += 1;
                    } else {
                        self.remaining = Some(len);
                    }
                }
                Some(rem) => {
                    let take = rem.min(data.len());
                    if data[..take] != expect[self.offset..self.offset + take] {
                        return Err("echo differs from what was sent".into());
                    }
                    self.offset += take;
                    data = &data[take..];
                    if take == rem {
                        self.remaining = None;
                        done += 1;
                    } else {
                        self.remaining = Some(rem - take);
                    }
                }
            }
        }
        Ok(done)
    }
}

/// A small xorshift generator for masking keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn key(&mut self) -> [u8; 4] {
        (self.next() as u32).to_ne_bytes()
    }
}

fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

struct Upgraded {
    stream: TcpStream,
    /// Bytes that arrived behind the 101 head.
    leftover: Vec<u8>,
    /// The 101 carried `Set-Cookie: WS_SESSION_ID=...`.
    cookie: bool,
}

/// TCP connect, HTTP/1.1 upgrade request, read the 101 head.
async fn ws_connect(addr: SocketAddr, path: &str, rng: &mut Rng) -> Result<Upgraded, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&rng.next().to_ne_bytes());
    nonce[8..].copy_from_slice(&rng.next().to_ne_bytes());
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b64(&nonce)
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send request: {e}"))?;
    let mut buf = Vec::with_capacity(512);
    let mut tmp = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut tmp)
            .await
            .map_err(|e| format!("read 101: {e}"))?;
        if n == 0 {
            return Err("connection closed before the 101".into());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            if !head.starts_with("HTTP/1.1 101") {
                let first = head.lines().next().unwrap_or("");
                return Err(format!("expected 101, got {first:?}"));
            }
            let cookie = head.lines().any(|l| {
                let l = l.to_ascii_lowercase();
                l.starts_with("set-cookie:") && l.contains("ws_session_id=")
            });
            return Ok(Upgraded {
                stream,
                leftover: buf[end + 4..].to_vec(),
                cookie,
            });
        }
        if buf.len() > 16 * 1024 {
            return Err("response head too long".into());
        }
    }
}

// ---------------------------------------------------------------------------
// Load

/// State shared by the connection tasks of one measurement (one thread).
#[derive(Default)]
struct Shared {
    measuring: Cell<bool>,
    stop: Cell<bool>,
    ops: Cell<u64>,
    bytes: Cell<u64>,
    /// Latencies in nanoseconds of operations completed while measuring.
    lat: RefCell<Vec<u32>>,
    cookie_yes: Cell<u64>,
    cookie_no: Cell<u64>,
    error: RefCell<Option<String>>,
    /// Stop once this many operations were counted (0: no limit).
    limit: Cell<u64>,
}

impl Shared {
    fn count(&self, ops: u64, bytes: u64) {
        self.ops.set(self.ops.get() + ops);
        self.bytes.set(self.bytes.get() + bytes);
        let limit = self.limit.get();
        if limit != 0 && self.ops.get() >= limit {
            self.stop.set(true);
        }
    }
    fn fail(&self, e: String) {
        let mut slot = self.error.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
        self.stop.set(true);
    }
}

fn nanos(d: Duration) -> u32 {
    d.as_nanos().min(u32::MAX as u128) as u32
}

/// One closed-loop echo connection.
async fn echo_conn(
    up: Upgraded,
    payload: Rc<Vec<u8>>,
    depth: usize,
    key: [u8; 4],
    opcode: u8,
    sh: Rc<Shared>,
) -> Result<(), String> {
    let Upgraded {
        mut stream,
        leftover,
        ..
    } = up;
    let frame = client_frame(opcode, &payload, key);
    let flen = frame.len();
    let batch = frame.repeat(depth);
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(depth);
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; (64 * 1024).max(2 * flen).min(256 * 1024)];
    let now = Instant::now();
    stream
        .write_all(&batch)
        .await
        .map_err(|e| format!("send: {e}"))?;
    sent.extend(std::iter::repeat_n(now, depth));
    let mut pending = leftover;
    loop {
        let n = if pending.is_empty() {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("server closed the connection".into());
            }
            n
        } else {
            let n = pending.len();
            buf[..n].copy_from_slice(&pending);
            pending = Vec::new();
            n
        };
        let done = reader.feed(&buf[..n], &payload, opcode)?;
        if done == 0 {
            continue;
        }
        if done > sent.len() {
            return Err("more echoes than messages sent".into());
        }
        let now = Instant::now();
        if sh.measuring.get() {
            let mut lat = sh.lat.borrow_mut();
            for t in sent.drain(..done) {
                lat.push(nanos(now - t));
            }
            drop(lat);
            sh.count(done as u64, (done * payload.len()) as u64);
        } else {
            sent.drain(..done);
        }
        if sh.stop.get() {
            return Ok(());
        }
        stream
            .write_all(&batch[..done * flen])
            .await
            .map_err(|e| format!("send: {e}"))?;
        sent.extend(std::iter::repeat_n(now, done));
    }
}

/// One client of the upgrades scenario: connect → 101 → close, over and over.
async fn upgrade_loop(addr: SocketAddr, seed: u64, sh: Rc<Shared>) -> Result<(), String> {
    let mut rng = Rng(seed | 1);
    let mut buf = vec![0u8; 4096];
    while !sh.stop.get() {
        let t0 = Instant::now();
        let up = ws_connect(addr, "/echo", &mut rng).await?;
        let t1 = Instant::now();
        let Upgraded {
            mut stream,
            leftover,
            cookie,
        } = up;
        let close = client_frame(OP_CLOSE, &1000u16.to_be_bytes(), rng.key());
        stream
            .write_all(&close)
            .await
            .map_err(|e| format!("send close: {e}"))?;
        // The server answers with its close frame and then closes TCP (RFC 6455 §7.1.1).
        let mut got = leftover;
        let finished = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        if finished.is_err() {
            return Err(
                "server did not close the connection within 5 s of the close handshake".into(),
            );
        }
        if got.first() != Some(&(0x80 | OP_CLOSE)) {
            return Err("no close frame before the server closed TCP".into());
        }
        drop(stream);
        if sh.measuring.get() {
            sh.lat.borrow_mut().push(nanos(t1 - t0));
            if cookie {
                sh.cookie_yes.set(sh.cookie_yes.get() + 1);
            } else {
                sh.cookie_no.set(sh.cookie_no.get() + 1);
            }
            sh.count(1, 0);
        }
    }
    Ok(())
}

/// Opens `n` upgraded connections, at most `parallel` handshakes at a time.
async fn open_many(
    addr: SocketAddr,
    n: usize,
    parallel: usize,
    seed: u64,
    lat: Option<&RefCell<Vec<u32>>>,
) -> Result<Vec<Upgraded>, String> {
    let mut out = Vec::with_capacity(n);
    let mut set = JoinSet::new();
    let mut started = 0;
    let mut rng = Rng(seed | 1);
    while out.len() < n {
        while started < n && set.len() < parallel {
            let mut r = Rng(rng.next() | 1);
            set.spawn_local(async move {
                let t0 = Instant::now();
                let up = ws_connect(addr, "/echo", &mut r).await;
                up.map(|u| (u, t0.elapsed()))
            });
            started += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok((up, took)))) => {
                if let Some(lat) = lat {
                    lat.borrow_mut().push(nanos(took));
                }
                out.push(up);
            }
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => return Err(format!("task: {e}")),
            None => break,
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// /proc

fn clk_tck() -> f64 {
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// (utime, stime) of the whole process (all threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<(u64, u64), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let after = &stat[stat.rfind(')').ok_or("bad stat")? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); `after` starts at field 3.
    let utime: u64 = f[11].parse().map_err(|_| "bad utime")?;
    let stime: u64 = f[12].parse().map_err(|_| "bad stime")?;
    Ok((utime, stime))
}

fn vmrss_kib(pid: u32) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".into())
}

/// The CPUs the server and the load generator are pinned to.
static CPUS: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();

fn cpus() -> (usize, usize) {
    *CPUS.get_or_init(|| (0, 1))
}

/// (busy, steal) clock ticks of one CPU from /proc/stat.
fn cpu_busy_ticks(cpu: usize) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let name = format!("cpu{cpu} ");
    let Some(line) = stat.lines().find(|l| l.starts_with(&name)) else {
        return (0, 0);
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: only time in
    // process context counts as busy, so the servers' own interrupt and softirq
    // work (loopback packets, TCP timers) is never mistaken for someone else's.
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    (get(0) + get(1) + get(2), get(7))
}

/// Everything read at the two ends of a measured window.
struct Snapshot {
    at: Instant,
    server: Option<(u64, u64)>,
    me: u64,
    server_cpu: (u64, u64),
    client_cpu: (u64, u64),
}

fn snapshot(target: Target) -> Result<Snapshot, String> {
    let (sc, cc) = cpus();
    Ok(Snapshot {
        at: Instant::now(),
        server: target.pid.map(cpu_ticks).transpose()?,
        me: cpu_ticks(std::process::id()).map(|(u, s)| u + s)?,
        server_cpu: cpu_busy_ticks(sc),
        client_cpu: cpu_busy_ticks(cc),
    })
}

/// A measured window: its length, the server's CPU time in it, and how much
/// of the two CPUs other processes (or the hypervisor) took meanwhile.
struct Window {
    secs: f64,
    server_ticks: Option<u64>,
    /// The part of `server_ticks` spent in the kernel (stime).
    server_sys_ticks: Option<u64>,
    /// % of the server's CPU busy with anything but the server.
    foreign_server_pct: f64,
    /// % of the load generator's CPU busy with anything but the load generator.
    foreign_client_pct: f64,
    /// % of either CPU stolen by the hypervisor.
    steal_pct: f64,
}

/// Other load above this share of a CPU marks a run as disturbed.
const DISTURBED_PCT: f64 = 5.0;

fn window(a: &Snapshot, b: &Snapshot) -> Window {
    let secs = (b.at - a.at).as_secs_f64();
    let ticks = (secs * clk_tck()).max(1.0);
    let delta = a.server.zip(b.server).map(|(x, y)| (y.0 - x.0, y.1 - x.1));
    let server_ticks = delta.map(|(u, s)| u + s);
    let own = server_ticks.unwrap_or(0);
    let busy_s = b.server_cpu.0.saturating_sub(a.server_cpu.0);
    let busy_c = b.client_cpu.0.saturating_sub(a.client_cpu.0);
    let steal = (b.server_cpu.1 - a.server_cpu.1).max(b.client_cpu.1 - a.client_cpu.1);
    Window {
        secs,
        server_ticks,
        server_sys_ticks: delta.map(|(_, s)| s),
        foreign_server_pct: busy_s.saturating_sub(own) as f64 / ticks * 100.0,
        foreign_client_pct: busy_c.saturating_sub(b.me - a.me) as f64 / ticks * 100.0,
        steal_pct: steal as f64 / ticks * 100.0,
    }
}

impl Window {
    fn values(&self) -> [(&'static str, f64); 4] {
        let sys_pct = match (self.server_sys_ticks, self.server_ticks) {
            (Some(s), Some(t)) if t > 0 => s as f64 / t as f64 * 100.0,
            _ => f64::NAN,
        };
        [
            ("sys_pct", sys_pct),
            ("foreign_server_pct", self.foreign_server_pct),
            ("foreign_client_pct", self.foreign_client_pct),
            ("steal_pct", self.steal_pct),
        ]
    }
}

/// Waits until neither CPU is noticeably busy with other processes, for at
/// most `max`. Returns the last foreign load seen (% of the busier CPU).
async fn wait_quiet(max: Duration) -> f64 {
    let deadline = Instant::now() + max;
    let nobody = Target {
        addr: "0.0.0.0:0".parse().unwrap(),
        pid: None,
    };
    loop {
        let a = snapshot(nobody).ok();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let b = snapshot(nobody).ok();
        let load = match (a, b) {
            (Some(a), Some(b)) => {
                let w = window(&a, &b);
                w.foreign_server_pct
                    .max(w.foreign_client_pct)
                    .max(w.steal_pct)
            }
            _ => 0.0,
        };
        if load <= DISTURBED_PCT || Instant::now() >= deadline {
            return load;
        }
    }
}

// ---------------------------------------------------------------------------
// One measurement

#[derive(Clone, Copy)]
struct Timing {
    warmup: Duration,
    measure: Duration,
}

/// What one run of one scenario against one server measured.
#[derive(Clone, Debug, Default)]
struct Sample {
    ops: u64,
    secs: f64,
    /// (metric key, value)
    values: Vec<(&'static str, f64)>,
}

impl Sample {
    fn get(&self, key: &str) -> Option<f64> {
        self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

/// Where the server under test is, and (if known) its pid for /proc.
#[derive(Clone, Copy)]
struct Target {
    addr: SocketAddr,
    pid: Option<u32>,
}

async fn run_scenario(
    sc: &Scenario,
    target: Target,
    timing: Timing,
    limit: u64,
    seed: u64,
) -> Result<Sample, String> {
    match sc.kind {
        Kind::Echo { conns, depth, size } => {
            run_echo(target, conns, depth, size, timing, limit, seed).await
        }
        Kind::Upgrades { clients } => run_upgrades(target, clients, timing, limit, seed).await,
        Kind::Idle { conns } => run_idle(target, conns, seed).await,
    }
}

/// The payload: printable ASCII (valid UTF-8), sent as a text message.
fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Measures a window over the running tasks, stops them, and returns the
/// window, the operations and seconds in it, and the sorted latencies.
async fn measured(
    sh: &Shared,
    set: &mut JoinSet<()>,
    target: Target,
    timing: Timing,
    limit: u64,
) -> Result<(Window, u64, f64, Vec<u32>), String> {
    let window = measure_window(sh, target, timing, limit).await;
    finish(set).await;
    let w = window?;
    if let Some(e) = sh.error.borrow().clone() {
        return Err(e);
    }
    let (ops, secs) = (sh.ops.get(), w.secs);
    let mut lat = std::mem::take(&mut *sh.lat.borrow_mut());
    lat.sort_unstable();
    Ok((w, ops, secs, lat))
}

/// Lets the tasks run for `warmup`, then measures for `measure` (or until
/// `limit` operations), reading the server's CPU time at both ends.
async fn measure_window(
    sh: &Shared,
    target: Target,
    timing: Timing,
    limit: u64,
) -> Result<Window, String> {
    tokio::time::sleep(timing.warmup).await;
    if let Some(e) = sh.error.borrow().clone() {
        return Err(e);
    }
    let start = snapshot(target)?;
    sh.limit.set(limit);
    sh.measuring.set(true);
    if limit > 0 {
        while !sh.stop.get() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    } else {
        tokio::time::sleep(timing.measure).await;
    }
    sh.measuring.set(false);
    let end = snapshot(target)?;
    sh.stop.set(true);
    Ok(window(&start, &end))
}

async fn finish(set: &mut JoinSet<()>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while set.join_next().await.is_some() {}
    })
    .await;
    set.abort_all();
    while set.join_next().await.is_some() {}
}

fn cpu_us_per_op(ticks: Option<u64>, ops: u64) -> f64 {
    match ticks {
        Some(t) if ops > 0 => t as f64 / clk_tck() * 1e6 / ops as f64,
        _ => f64::NAN,
    }
}

async fn run_echo(
    target: Target,
    conns: usize,
    depth: usize,
    size: usize,
    timing: Timing,
    limit: u64,
    seed: u64,
) -> Result<Sample, String> {
    let sh = Rc::new(Shared::default());
    let ups = open_many(target.addr, conns, 64, seed, None).await?;
    let payload = Rc::new(payload(size));
    let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut set = JoinSet::new();
    for up in ups {
        let (payload, sh, key) = (payload.clone(), sh.clone(), rng.key());
        set.spawn_local(async move {
            if let Err(e) = echo_conn(up, payload, depth, key, OP_TEXT, sh.clone()).await {
                if !sh.stop.get() {
                    sh.fail(e);
                }
            }
        });
    }
    let (w, ops, secs, lat) = measured(&sh, &mut set, target, timing, limit).await?;
    let mut values = vec![
        ("msgs", ops as f64 / secs),
        ("mibs", sh.bytes.get() as f64 / secs / (1u64 << 20) as f64),
        ("p50", percentile(&lat, 0.50) / 1e3),
        ("p99", percentile(&lat, 0.99) / 1e3),
        ("cpu", cpu_us_per_op(w.server_ticks, ops)),
    ];
    values.extend(w.values());
    Ok(Sample { ops, secs, values })
}

async fn run_upgrades(
    target: Target,
    clients: usize,
    timing: Timing,
    limit: u64,
    seed: u64,
) -> Result<Sample, String> {
    let sh = Rc::new(Shared::default());
    let mut set = JoinSet::new();
    for i in 0..clients {
        let sh = sh.clone();
        let addr = target.addr;
        set.spawn_local(async move {
            if let Err(e) = upgrade_loop(addr, seed.wrapping_add(i as u64 * 7919), sh.clone()).await
            {
                sh.fail(e);
            }
        });
    }
    let (w, ops, secs, lat) = measured(&sh, &mut set, target, timing, limit).await?;
    let with_cookie =
        sh.cookie_yes.get() as f64 / (sh.cookie_yes.get() + sh.cookie_no.get()).max(1) as f64;
    let mut values = vec![
        ("ups", ops as f64 / secs),
        ("p50", percentile(&lat, 0.50) / 1e3),
        ("p99", percentile(&lat, 0.99) / 1e3),
        ("cpu", cpu_us_per_op(w.server_ticks, ops)),
        ("cookie", with_cookie * 100.0),
    ];
    values.extend(w.values());
    Ok(Sample { ops, secs, values })
}

async fn run_idle(target: Target, conns: usize, seed: u64) -> Result<Sample, String> {
    let Some(pid) = target.pid else {
        return Err("the idle scenario needs the server's pid (--pid)".into());
    };
    let warm = open_many(target.addr, IDLE_WARM_CONNS, 32, seed, None).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = vmrss_kib(pid)?;
    let start = snapshot(target)?;
    let lat = RefCell::new(Vec::with_capacity(conns));
    let idle = open_many(target.addr, conns, 64, seed ^ 0xABCDEF, Some(&lat)).await?;
    let w = window(&start, &snapshot(target)?);
    let secs = w.secs;
    // Let the server finish whatever the handshakes left behind, then look.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = vmrss_kib(pid)?;
    // Every connection must still be open: none may have been closed by the server.
    for up in warm.iter().chain(idle.iter()) {
        let mut b = [0u8; 1];
        match up.stream.try_read(&mut b) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Ok(_) => return Err("server closed or wrote to an idle connection".into()),
            Err(e) => return Err(format!("idle connection: {e}")),
        }
    }
    drop(warm);
    drop(idle);
    let mut lat = lat.into_inner();
    lat.sort_unstable();
    let grown = rss1.saturating_sub(rss0) as f64 * 1024.0;
    Ok(Sample {
        ops: conns as u64,
        secs,
        values: vec![
            ("bytes_per_conn", grown / conns as f64),
            ("rss_before_kib", rss0 as f64),
            ("rss_after_kib", rss1 as f64),
            ("conns", conns as f64 / secs),
            ("p50", percentile(&lat, 0.50) / 1e3),
            ("p99", percentile(&lat, 0.99) / 1e3),
            ("cpu", cpu_us_per_op(w.server_ticks, conns as u64)),
        ]
        .into_iter()
        .chain(w.values())
        .collect(),
    })
}

// ---------------------------------------------------------------------------
// Servers

struct ServerSpec {
    /// Short name used on the command line and in JSON.
    id: &'static str,
    /// Column title.
    title: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
}

struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SIGKILL: wsgate would otherwise drain for up to --drain-timeout.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(spec: &ServerSpec, cpu: usize, log: &Path) -> Result<Running, String> {
    let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let child = Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(&spec.program)
        .args(&spec.args)
        .envs(spec.env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .map_err(|e| format!("start {}: {e}", spec.program.display()))?;
    let mut running = Running {
        child,
        addr: "0.0.0.0:0".parse().unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(" event=listening ")) {
            let addr = line
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("listen="))
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| format!("no listen= in {line:?}"))?;
            running.addr = addr;
            return Ok(running);
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            return Err(format!("{} exited with {status}: {}", spec.id, text.trim()));
        }
        if Instant::now() > deadline {
            return Err(format!("{} did not report listening within 10 s", spec.id));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// Reporting

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
    None,
}

struct Metric {
    key: &'static str,
    label: &'static str,
    better: Better,
    decimals: usize,
}

fn metrics_for(kind: Kind, size: usize) -> Vec<Metric> {
    let m = |key, label, better, decimals| Metric {
        key,
        label,
        better,
        decimals,
    };
    match kind {
        Kind::Echo { .. } => {
            let mut v = vec![m("msgs", "throughput (msg/s)", Better::Higher, 0)];
            if size >= 16 * 1024 {
                v.push(m("mibs", "throughput (MiB/s)", Better::Higher, 1));
            }
            v.push(m("p50", "latency p50 (µs)", Better::Lower, 1));
            v.push(m("p99", "latency p99 (µs)", Better::Lower, 1));
            v.push(m("cpu", "server CPU (µs/msg)", Better::Lower, 3));
            v.push(m(
                "sys_pct",
                "server CPU in the kernel (%)",
                Better::None,
                0,
            ));
            v
        }
        Kind::Upgrades { .. } => vec![
            m("ups", "throughput (upgrades/s)", Better::Higher, 0),
            m("p50", "connect→101 p50 (µs)", Better::Lower, 1),
            m("p99", "connect→101 p99 (µs)", Better::Lower, 1),
            m("cpu", "server CPU (µs/upgrade)", Better::Lower, 2),
            m("sys_pct", "server CPU in the kernel (%)", Better::None, 0),
            m("cookie", "101 with Set-Cookie (%)", Better::None, 0),
        ],
        Kind::Idle { .. } => vec![
            m(
                "bytes_per_conn",
                "RSS growth (bytes/conn)",
                Better::Lower,
                0,
            ),
            m("conns", "connects/s while opening", Better::Higher, 0),
            m("p50", "connect→101 p50 (µs)", Better::Lower, 1),
            m("p99", "connect→101 p99 (µs)", Better::Lower, 1),
            m("cpu", "server CPU (µs/connect)", Better::Lower, 2),
            m("sys_pct", "server CPU in the kernel (%)", Better::None, 0),
        ],
    }
}

enum Goal {
    /// wsgate ÷ better reference must be at most this.
    RatioAtMost(f64),
    /// wsgate ÷ better reference must be at least this.
    RatioAtLeast(f64),
    /// wsgate's own value must be at most this.
    AtMost(f64),
}

fn target_for(scenario: &str, metric: &str) -> Option<Goal> {
    Some(match (scenario, metric) {
        ("fan-in", "cpu") => Goal::RatioAtMost(0.75),
        ("pipelined-32", "cpu") => Goal::RatioAtMost(0.8),
        ("pipelined-1k", "cpu") => Goal::RatioAtMost(0.8),
        ("large-64k", "mibs") => Goal::RatioAtLeast(1.0),
        ("upgrades", "cpu") => Goal::RatioAtMost(0.75),
        ("ping-pong", "p99") => Goal::RatioAtMost(1.0),
        ("idle", "bytes_per_conn") => Goal::AtMost(256.0),
        _ => return None,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt_num(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return "—".into();
    }
    let s = format!("{x:.decimals$}");
    // Thousands separators for the integer part.
    let (int, frac) = match s.find('.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (&s[..], ""),
    };
    let (sign, digits) = if let Some(d) = int.strip_prefix('-') {
        ("-", d)
    } else {
        ("", int)
    };
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}{frac}")
}

/// results[scenario][server] = one sample per round (Err for a failed run).
type Results = Vec<Vec<Vec<Result<Sample, String>>>>;

struct Report {
    table: String,
    /// (scenario, target text, verdict) for the summary.
    verdicts: Vec<(String, String, String)>,
}

fn report(servers: &[ServerSpec], results: &Results, scenarios: &[&Scenario]) -> Report {
    let mut t = String::new();
    let refs: Vec<usize> = (0..servers.len())
        .filter(|&i| !servers[i].id.starts_with("wsgate"))
        .collect();
    let ws = servers.iter().position(|s| s.id == "wsgate");
    let _ = write!(t, "| scenario | metric |");
    for s in servers {
        let _ = write!(t, " {} |", s.title);
    }
    let _ = writeln!(t, " wsgate ÷ better ref | target | met? |");
    let _ = write!(t, "|---|---|");
    for _ in servers {
        let _ = write!(t, "---:|");
    }
    let _ = writeln!(t, "---:|---|---|");
    let mut verdicts = Vec::new();
    for (si, sc) in scenarios.iter().enumerate() {
        let size = match sc.kind {
            Kind::Echo { size, .. } => size,
            _ => 0,
        };
        for (mi, m) in metrics_for(sc.kind, size).iter().enumerate() {
            let meds: Vec<f64> = (0..servers.len())
                .map(|k| {
                    median(
                        results[si][k]
                            .iter()
                            .filter_map(|r| r.as_ref().ok())
                            .filter_map(|s| s.get(m.key))
                            .collect(),
                    )
                })
                .collect();
            let label = if mi == 0 {
                format!("**{}**", sc.name)
            } else {
                String::new()
            };
            let _ = write!(t, "| {label} | {} |", m.label);
            for (k, v) in meds.iter().enumerate() {
                let runs = &results[si][k];
                let fails = runs.iter().filter(|r| r.is_err()).count();
                let disturbed = runs
                    .iter()
                    .filter(|r| disturbance(r) > DISTURBED_PCT)
                    .count();
                let mut mark = String::new();
                if fails > 0 {
                    mark.push_str(&format!(" ({fails} failed)"));
                }
                // The median may come from a disturbed run.
                if disturbed > 0 && 2 * disturbed >= runs.len() {
                    mark.push_str(" †");
                }
                let _ = write!(t, " {}{} |", fmt_num(*v, m.decimals), mark);
            }
            let best_ref = match m.better {
                Better::Higher => refs
                    .iter()
                    .map(|&k| meds[k])
                    .filter(|x| x.is_finite())
                    .fold(f64::NAN, f64::max),
                Better::Lower => refs
                    .iter()
                    .map(|&k| meds[k])
                    .filter(|x| x.is_finite())
                    .fold(f64::NAN, f64::min),
                Better::None => f64::NAN,
            };
            let ratio = ws.map(|w| meds[w] / best_ref).unwrap_or(f64::NAN);
            let ratio_s = if ratio.is_finite() {
                format!("{ratio:.2}×")
            } else {
                "—".into()
            };
            let (goal_s, met_s) = match target_for(sc.name, m.key) {
                None => (String::new(), String::new()),
                Some(goal) => {
                    let wsv = ws.map(|w| meds[w]).unwrap_or(f64::NAN);
                    let (text, ok) = match goal {
                        Goal::RatioAtMost(x) => {
                            (format!("≤ {x:.2}×"), ratio.is_finite() && ratio <= x)
                        }
                        Goal::RatioAtLeast(x) => {
                            (format!("≥ {x:.2}×"), ratio.is_finite() && ratio >= x)
                        }
                        Goal::AtMost(x) => (format!("≤ {x:.0}"), wsv.is_finite() && wsv <= x),
                    };
                    let verdict = if ok { "**met**" } else { "**not met**" };
                    verdicts.push((
                        sc.name.to_string(),
                        format!("{} {}", m.label, text),
                        verdict.replace("**", ""),
                    ));
                    (text, verdict.to_string())
                }
            };
            let _ = writeln!(t, " {ratio_s} | {goal_s} | {met_s} |");
        }
    }
    Report { table: t, verdicts }
}

fn json_escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

fn json(
    servers: &[ServerSpec],
    results: &Results,
    scenarios: &[&Scenario],
    timing: Timing,
    rounds: usize,
) -> String {
    let mut j = String::new();
    let _ = write!(
        j,
        "{{\n  \"rounds\": {rounds},\n  \"warmup_s\": {},\n  \"measure_s\": {},\n  \"clk_tck\": {},\n  \"scenarios\": {{\n",
        timing.warmup.as_secs_f64(),
        timing.measure.as_secs_f64(),
        clk_tck()
    );
    for (si, sc) in scenarios.iter().enumerate() {
        let _ = writeln!(j, "    \"{}\": {{", sc.name);
        for (k, s) in servers.iter().enumerate() {
            let _ = write!(j, "      \"{}\": [", s.id);
            for (r, res) in results[si][k].iter().enumerate() {
                if r > 0 {
                    j.push_str(", ");
                }
                match res {
                    Ok(sample) => {
                        let _ =
                            write!(j, "{{\"ops\": {}, \"secs\": {:.4}", sample.ops, sample.secs);
                        for (key, v) in &sample.values {
                            if v.is_finite() {
                                let _ = write!(j, ", \"{key}\": {v:.6}");
                            } else {
                                let _ = write!(j, ", \"{key}\": null");
                            }
                        }
                        j.push('}');
                    }
                    Err(e) => {
                        let _ = write!(j, "{{\"error\": \"{}\"}}", json_escape(e));
                    }
                }
            }
            let comma = if k + 1 < servers.len() { "," } else { "" };
            let _ = writeln!(j, "]{comma}");
        }
        let comma = if si + 1 < scenarios.len() { "," } else { "" };
        let _ = writeln!(j, "    }}{comma}");
    }
    j.push_str("  }\n}\n");
    j
}

/// The largest share (%) of either CPU that others took during a run.
fn sample_disturbance(s: &Sample) -> f64 {
    ["foreign_server_pct", "foreign_client_pct", "steal_pct"]
        .iter()
        .filter_map(|k| s.get(k))
        .fold(0.0, f64::max)
}

fn disturbance(r: &Result<Sample, String>) -> f64 {
    r.as_ref().map(sample_disturbance).unwrap_or(0.0)
}

/// Starts the server, runs one scenario against it, kills it.
async fn measure_once(
    spec: &ServerSpec,
    sc: &Scenario,
    server_cpu: usize,
    log: &Path,
    timing: Timing,
    seed: u64,
) -> Result<Sample, String> {
    let server = start_server(spec, server_cpu, log)?;
    let target = Target {
        addr: server.addr,
        pid: Some(server.pid()),
    };
    let r = run_scenario(sc, target, timing, 0, seed).await;
    drop(server); // SIGKILL; its clients are already gone
    r
}

fn per_round_table(servers: &[ServerSpec], results: &Results, scenarios: &[&Scenario]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "| scenario | metric | server | per-round values |");
    let _ = writeln!(t, "|---|---|---|---|");
    for (si, sc) in scenarios.iter().enumerate() {
        let size = match sc.kind {
            Kind::Echo { size, .. } => size,
            _ => 0,
        };
        for m in metrics_for(sc.kind, size) {
            if m.key != "cpu" && target_for(sc.name, m.key).is_none() {
                continue;
            }
            for (k, s) in servers.iter().enumerate() {
                let vals: Vec<String> = results[si][k]
                    .iter()
                    .map(|r| match r {
                        Ok(sample) => {
                            let v = fmt_num(sample.get(m.key).unwrap_or(f64::NAN), m.decimals);
                            let d = sample_disturbance(sample);
                            if d > DISTURBED_PCT {
                                format!("{v} (disturbed {d:.0}%)")
                            } else {
                                v
                            }
                        }
                        Err(_) => "failed".into(),
                    })
                    .collect();
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {} |",
                    sc.name,
                    m.label,
                    s.title,
                    vals.join(", ")
                );
            }
        }
    }
    t
}

// ---------------------------------------------------------------------------
// Command line

struct Args {
    map: Vec<(String, String)>,
    flags: Vec<String>,
}

impl Args {
    fn parse(args: impl Iterator<Item = String>) -> Args {
        let mut map = Vec::new();
        let mut flags = Vec::new();
        let mut it = args.peekable();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if let Some((k, v)) = name.split_once('=') {
                    map.push((k.to_string(), v.to_string()));
                } else if it.peek().is_some_and(|n| !n.starts_with("--")) {
                    map.push((name.to_string(), it.next().unwrap()));
                } else {
                    flags.push(name.to_string());
                }
            } else {
                common::die(&format!("unexpected argument {a:?}"));
            }
        }
        Args { map, flags }
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.map
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> T {
        match self.get(k) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| common::die(&format!("bad --{k} {v:?}"))),
        }
    }
}

const USAGE: &str = "\
usage:
  loadgen suite --wsgate BIN --tt BIN --fws BIN [--rounds 3] [--warmup 0.5] [--measure 2]
                [--scenarios fan-in,pipelined-32,...] [--out DIR] [--server-cpu 0] [--client-cpu 1]
                [--quiet-wait 60] [--retry-budget 300] [--with-wsgate-io-epoll] [--with-wsgate-epoll] [--no-pin]
  loadgen run --addr HOST:PORT --scenario NAME [--pid PID] [--seconds 2 | --count N] [--warmup 0.5]
  loadgen auth --wsgate BIN --tokens DIR --keys DIR [--hook BIN] [--configs none,hs256,rs256,es256,hook]
               [--idle-configs none,hs256] [--rounds 5] [--warmup 0.5] [--measure 3] [--clients 32]
               [--idle-conns 10000] [--settle 2] [--out DIR] [--server-cpu 0] [--client-cpu 1]
               [--quiet-wait 60] [--retry-budget 300]   (see benches/auth.sh)

scenarios: fan-in pipelined-32 pipelined-1k large-64k ping-pong upgrades idle";

fn pin_self(cpu: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("warning: could not pin the load generator to CPU {cpu}");
        }
    }
}

fn pick_scenarios(arg: Option<&str>) -> Vec<&'static Scenario> {
    match arg {
        None | Some("all") => SCENARIOS.iter().collect(),
        Some(list) => list
            .split(',')
            .map(|n| {
                SCENARIOS
                    .iter()
                    .find(|s| s.name == n.trim())
                    .unwrap_or_else(|| common::die(&format!("unknown scenario {n:?}\n{USAGE}")))
            })
            .collect(),
    }
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let cmd = argv.next().unwrap_or_default();
    let args = Args::parse(argv);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    match cmd.as_str() {
        "suite" => local.block_on(&rt, suite(args)),
        "run" => local.block_on(&rt, run(args)),
        "auth" => local.block_on(&rt, auth_bench::main(args)),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

async fn run(args: Args) {
    let addr: SocketAddr = args
        .get("addr")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| common::die(&format!("--addr HOST:PORT is required\n{USAGE}")));
    let sc = pick_scenarios(Some(
        args.get("scenario")
            .unwrap_or_else(|| common::die("--scenario is required")),
    ))[0];
    let pid = args
        .get("pid")
        .map(|p| p.parse().unwrap_or_else(|_| common::die("bad --pid")));
    let timing = Timing {
        warmup: Duration::from_secs_f64(args.num("warmup", 0.5)),
        measure: Duration::from_secs_f64(args.num("seconds", 2.0)),
    };
    let count: u64 = args.num("count", 0);
    match run_scenario(sc, Target { addr, pid }, timing, count, 0x5EED).await {
        Ok(s) => {
            let mut line = format!("scenario={} ops={} secs={:.3}", sc.name, s.ops, s.secs);
            for (k, v) in &s.values {
                let _ = write!(line, " {k}={v:.3}");
            }
            println!("{line}");
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

async fn suite(args: Args) {
    let need = |k: &str| -> PathBuf {
        PathBuf::from(
            args.get(k)
                .unwrap_or_else(|| common::die(&format!("--{k} BIN is required\n{USAGE}"))),
        )
    };
    let wsgate_args: Vec<String> = [
        "--cores",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--echo-path",
        "/echo",
        "--cookie-secure",
        "false",
        "--max-message-size",
        "16MiB",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let servers = vec![
        ServerSpec {
            id: "wsgate",
            title: "wsgate",
            program: need("wsgate"),
            args: wsgate_args.clone(),
            env: vec![],
        },
        ServerSpec {
            id: "tokio-tungstenite",
            title: "tokio-tungstenite",
            program: need("tt"),
            args: vec![],
            env: vec![],
        },
        ServerSpec {
            id: "fastwebsockets",
            title: "fastwebsockets",
            program: need("fws"),
            args: vec![],
            env: vec![],
        },
    ];
    let mut servers = servers;
    if args.flags.iter().any(|f| f == "with-wsgate-io-epoll") {
        // The same wsgate binary with the epoll data path (`--io epoll`; monoio
        // itself still on io_uring), beside its default io_uring data path.
        let mut epoll_args = wsgate_args.clone();
        epoll_args.extend(["--io".to_string(), "epoll".to_string()]);
        servers.insert(
            1,
            ServerSpec {
                id: "wsgate-io-epoll",
                title: "wsgate --io epoll",
                program: need("wsgate"),
                args: epoll_args,
                env: vec![],
            },
        );
    }
    if args.flags.iter().any(|f| f == "with-wsgate-epoll") {
        // Informational column: the same wsgate binary on monoio's epoll driver.
        servers.insert(
            1,
            ServerSpec {
                id: "wsgate-epoll",
                title: "wsgate (epoll driver)",
                program: need("wsgate"),
                args: wsgate_args,
                env: vec![("MONOIO_FORCE_LEGACY_DRIVER", "1")],
            },
        );
    }
    let rounds: usize = args.num("rounds", 3);
    let timing = Timing {
        warmup: Duration::from_secs_f64(args.num("warmup", 0.5)),
        measure: Duration::from_secs_f64(args.num("measure", 2.0)),
    };
    let scenarios = pick_scenarios(args.get("scenarios"));
    let out = PathBuf::from(args.get("out").unwrap_or("target/bench"));
    let server_cpu: usize = args.num("server-cpu", 0);
    let client_cpu: usize = args.num("client-cpu", 1);
    if !args.flags.iter().any(|f| f == "no-pin") {
        pin_self(client_cpu);
    }
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs)
        .unwrap_or_else(|e| common::die(&format!("{}: {e}", logs.display())));

    let mut results: Results = scenarios
        .iter()
        .map(|_| servers.iter().map(|_| Vec::new()).collect())
        .collect();
    let _ = CPUS.set((server_cpu, client_cpu));
    let quiet_wait: f64 = args.num("quiet-wait", 60.0);
    let retry_budget = Duration::from_secs_f64(args.num("retry-budget", 300.0));
    let started = Instant::now();
    let load = wait_quiet(Duration::from_secs_f64(quiet_wait)).await;
    if load > DISTURBED_PCT {
        eprintln!(
            "warning: other processes use {load:.0}% of CPU {server_cpu} or {client_cpu} \
             (waited {quiet_wait:.0} s for them to stop); results will be disturbed and are marked so"
        );
    }
    let mut retried = 0;
    let mut retry_spent = Duration::ZERO;
    for round in 0..rounds {
        for (si, sc) in scenarios.iter().enumerate() {
            // Interleave: every server in every round, in a rotating order.
            let n = servers.len();
            for j in 0..n {
                let k = (j + round + si) % n;
                let spec = &servers[k];
                let log = logs.join(format!("{}-{}-r{}.log", spec.id, sc.name, round + 1));
                let seed = 0x1234_5678 ^ ((round as u64) << 32) ^ ((si as u64) << 16) ^ k as u64;
                let mut result = measure_once(spec, sc, server_cpu, &log, timing, seed).await;
                // A run that shared a CPU with someone else is run again (up to
                // twice) once the machine is quiet; the last attempt counts. All
                // retries together may add at most --retry-budget to the suite.
                let mut attempt = 1;
                while disturbance(&result) > DISTURBED_PCT
                    && attempt <= 2
                    && retry_spent < retry_budget
                {
                    let t = Instant::now();
                    retried += 1;
                    attempt += 1;
                    eprintln!(
                        "    disturbed ({:.0}% of a CPU used by other processes); retry {}",
                        disturbance(&result),
                        attempt - 1
                    );
                    wait_quiet(Duration::from_secs(20)).await;
                    result = measure_once(spec, sc, server_cpu, &log, timing, seed).await;
                    retry_spent += t.elapsed();
                }
                let summary = match &result {
                    Ok(s) => s
                        .values
                        .iter()
                        .map(|(k, v)| format!("{k}={v:.3}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    Err(e) => format!("FAILED: {e}"),
                };
                eprintln!(
                    "[{:>5.1}s] round {}/{} {:<13} {:<18} {}",
                    started.elapsed().as_secs_f64(),
                    round + 1,
                    rounds,
                    sc.name,
                    spec.id,
                    summary
                );
                results[si][k].push(result);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    let rep = report(&servers, &results, &scenarios);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Medians of {rounds} rounds; servers interleaved in every round; each run {:.1} s warm-up + {:.1} s measured; \
         servers on CPU {server_cpu} (one worker), load generator on CPU {client_cpu}. \
         Server CPU = utime+stime from /proc/PID/stat over the measured window ÷ operations in it.\n",
        timing.warmup.as_secs_f64(),
        timing.measure.as_secs_f64()
    );
    for sc in &scenarios {
        let _ = writeln!(md, "- **{}**: {}", sc.name, sc.title);
    }
    md.push('\n');
    md.push_str(&rep.table);
    let runs: Vec<&Sample> = results
        .iter()
        .flatten()
        .flatten()
        .filter_map(|r| r.as_ref().ok())
        .collect();
    let disturbed = runs
        .iter()
        .filter(|s| sample_disturbance(s) > DISTURBED_PCT)
        .count();
    let worst = runs
        .iter()
        .map(|s| sample_disturbance(s))
        .fold(0.0, f64::max);
    let _ = writeln!(
        md,
        "\nInterference check (/proc/stat): {disturbed} of {} runs had more than {DISTURBED_PCT:.0}% of the \
         server's or the load generator's CPU taken by other processes or the hypervisor \
         ({retried} re-runs of disturbed runs, {:.0} s spent on them; worst kept run: {worst:.1}%).{}",
        runs.len(),
        retry_spent.as_secs_f64(),
        if rep.table.contains(" †") {
            " **Cells marked † have a median that may come from a disturbed run: rerun on a quiet machine.**"
        } else if disturbed > 0 {
            " No median depends on them: no cell has a majority of disturbed runs."
        } else {
            ""
        }
    );
    md.push_str("\n### Targets\n\n| scenario | target | status |\n|---|---|---|\n");
    for (sc, text, verdict) in &rep.verdicts {
        let _ = writeln!(md, "| {sc} | {text} | {verdict} |");
    }
    md.push_str("\n<details><summary>Per-round values</summary>\n\n");
    md.push_str(&per_round_table(&servers, &results, &scenarios));
    md.push_str("\n</details>\n");
    let _ = writeln!(
        md,
        "\nSuite wall time: {:.0} s.",
        started.elapsed().as_secs_f64()
    );

    std::fs::write(out.join("e2e.md"), &md)
        .unwrap_or_else(|e| common::die(&format!("write e2e.md: {e}")));
    std::fs::write(
        out.join("results.json"),
        json(&servers, &results, &scenarios, timing, rounds),
    )
    .unwrap_or_else(|e| common::die(&format!("write results.json: {e}")));
    println!("{md}");
    let failed = results
        .iter()
        .flatten()
        .flatten()
        .filter(|r| r.is_err())
        .count();
    if failed > 0 {
        eprintln!("{failed} run(s) failed; see {}", logs.display());
        std::process::exit(1);
    }
}
