//! `loadgen auth`: what authentication costs wsgate's gateway path
//! (`benches/auth.sh`). A module of `loadgen` (its client, `/proc` readers
//! and server starter are reused from there).
//!
//! Configurations, each a fresh `wsgate --cores 1` on the gateway path `/ws`:
//! `none` (auth off), `hs256`, `rs256`, `es256` (`--jwt-secret-file` /
//! `--jwt-public-key-file`, tokens minted beforehand by `mint-tokens` and
//! sent as `?token=`), `hook` (`--auth-hook` to the `auth-hook` server, no
//! token). Every auth configuration also has `--allow-sub 'room:*'
//! --allow-sub 'user:{user}'`.
//!
//! Scenarios, interleaved per round with a rotating order, medians over rounds:
//! - `upgrades`: `clients` loops of connect → `GET /ws[?token=…]` → 101 →
//!   read the `hello` text frame (its user checked against the token's
//!   `sub`, or the hook's user) → close frame → the server's close and TCP
//!   close. Server CPU = utime+stime of the gateway over the measured window
//!   ÷ upgrades in it.
//! - `idle`: 100 connections opened first, `settle` seconds, VmRSS; then
//!   `conns` more (64 handshakes at a time, each waits for its `hello`),
//!   `settle` seconds, VmRSS again: growth ÷ `conns`. Every connection uses a
//!   token of its own (distinct 20-byte users), and must still be open and
//!   silent at the end.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::common::{self, client_frame, OP_CLOSE, OP_TEXT};
use super::{
    clk_tck, cpu_busy_ticks, cpu_ticks, median, percentile, pin_self, start_server, vmrss_kib,
    wait_quiet, ws_connect, Args, Rng, Running, ServerSpec, Shared, Upgraded, CPUS, DISTURBED_PCT,
};

/// The flags' topic patterns of every auth configuration (two, as the issue asks).
const ALLOW_SUB: [&str; 2] = ["room:*", "user:{user}"];
/// Connections opened before the idle baseline (one-time allocations).
const WARM: usize = 100;
/// The hook server's fixed user (20 bytes, like the tokens' users).
const HOOK_USER: &str = "user-000000000000000";

/// `<sub> <jwt>` pairs from a `mint-tokens` file.
type Tokens = Rc<Vec<(String, String)>>;

struct Conf {
    id: &'static str,
    title: &'static str,
    /// Environment of the gateway (the allocator preload of `--idle-preload`).
    env: Vec<(&'static str, &'static str)>,
    /// wsgate's flags beyond the common ones.
    args: Vec<String>,
    tokens: Option<Tokens>,
    hook: bool,
}

impl Conf {
    /// The request target of the `i`-th upgrade and the user its `hello` must name.
    fn request(&self, i: usize) -> (String, Option<&str>) {
        match &self.tokens {
            Some(t) => {
                let (sub, jwt) = &t[i % t.len()];
                (format!("/ws?token={jwt}"), Some(sub.as_str()))
            }
            None if self.hook => ("/ws".into(), Some(HOOK_USER)),
            None => ("/ws".into(), None),
        }
    }
}

// ---------------------------------------------------------------------------
// Server frames

/// The first complete frame in `buf`: (opcode, payload range, frame length).
fn parse_frame(buf: &[u8]) -> Result<Option<(u8, std::ops::Range<usize>, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 != 0 {
        return Err("masked frame from the server".into());
    }
    let (len, head) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if buf.len() < head + len {
        return Ok(None);
    }
    Ok(Some((buf[0] & 0x0F, head..head + len, head + len)))
}

/// Reads until the first text frame and returns its payload; `pending`
/// holds bytes already read and keeps what follows the frame.
async fn read_text(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Result<String, String> {
    let mut tmp = [0u8; 2048];
    loop {
        if let Some((op, range, used)) = parse_frame(pending)? {
            let payload = String::from_utf8_lossy(&pending[range.clone()]).into_owned();
            pending.drain(..used);
            match op {
                OP_TEXT => return Ok(payload),
                OP_CLOSE => {
                    let code = payload
                        .as_bytes()
                        .get(..2)
                        .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                    return Err(format!(
                        "server closed before the hello: {code} {:?}",
                        payload.get(2..).unwrap_or("")
                    ));
                }
                _ => continue,
            }
        }
        let n = stream
            .read(&mut tmp)
            .await
            .map_err(|e| format!("read hello: {e}"))?;
        if n == 0 {
            return Err("connection closed before the hello".into());
        }
        pending.extend_from_slice(&tmp[..n]);
    }
}

/// `hello <peer-id> new <node-id>[ <user>]`: a new session of the expected user.
fn check_hello(hello: &str, user: Option<&str>) -> Result<(), String> {
    let f: Vec<&str> = hello.split(' ').collect();
    let ok = f.len() >= 4 && f[0] == "hello" && f[2] == "new" && f.get(4).copied() == user;
    if ok && f.len() <= 5 {
        return Ok(());
    }
    Err(match user {
        Some(u) if f.len() == 4 => format!(
            "hello {hello:?} names no user (expected {u}): the gateway did not authenticate"
        ),
        _ => format!("unexpected hello {hello:?} (expected user {user:?})"),
    })
}

/// Connect, upgrade, read the `hello` (checked): the open connection.
async fn gw_connect(
    addr: SocketAddr,
    conf: &Conf,
    i: usize,
    rng: &mut Rng,
) -> Result<(TcpStream, Vec<u8>, bool), String> {
    let (path, user) = conf.request(i);
    let Upgraded {
        mut stream,
        leftover,
        cookie,
    } = ws_connect(addr, &path, rng).await?;
    let mut pending = leftover;
    let hello = tokio::time::timeout(Duration::from_secs(5), read_text(&mut stream, &mut pending))
        .await
        .map_err(|_| "no hello within 5 s of the 101".to_string())??;
    check_hello(&hello, user)?;
    Ok((stream, pending, cookie))
}

// ---------------------------------------------------------------------------
// Measuring

/// Everything read at the two ends of a window.
struct Snap {
    at: Instant,
    gw: (u64, u64),
    hook: u64,
    me: u64,
    server_cpu: (u64, u64),
    client_cpu: (u64, u64),
}

fn snap(gw: u32, hook: Option<u32>) -> Result<Snap, String> {
    let (sc, cc) = *CPUS.get().unwrap_or(&(0, 1));
    Ok(Snap {
        at: Instant::now(),
        gw: cpu_ticks(gw)?,
        hook: match hook {
            Some(p) => cpu_ticks(p).map(|(u, s)| u + s)?,
            None => 0,
        },
        me: cpu_ticks(std::process::id()).map(|(u, s)| u + s)?,
        server_cpu: cpu_busy_ticks(sc),
        client_cpu: cpu_busy_ticks(cc),
    })
}

/// The window's values: seconds, gateway ticks (user+sys, sys), hook ticks,
/// and the share of either CPU others took (the hook server, pinned beside
/// the load generator, is not "others").
fn window_values(a: &Snap, b: &Snap) -> (f64, u64, u64, u64, Vec<(&'static str, f64)>) {
    let secs = (b.at - a.at).as_secs_f64();
    let ticks = (secs * clk_tck()).max(1.0);
    let (u, s) = (b.gw.0 - a.gw.0, b.gw.1 - a.gw.1);
    let hook = b.hook - a.hook;
    let busy_s = b.server_cpu.0.saturating_sub(a.server_cpu.0);
    let busy_c = b.client_cpu.0.saturating_sub(a.client_cpu.0);
    let steal = (b.server_cpu.1 - a.server_cpu.1).max(b.client_cpu.1 - a.client_cpu.1);
    let v = vec![
        (
            "sys_pct",
            if u + s > 0 {
                s as f64 / (u + s) as f64 * 100.0
            } else {
                f64::NAN
            },
        ),
        (
            "foreign_server_pct",
            busy_s.saturating_sub(u + s) as f64 / ticks * 100.0,
        ),
        (
            "foreign_client_pct",
            busy_c.saturating_sub(b.me - a.me + hook) as f64 / ticks * 100.0,
        ),
        ("steal_pct", steal as f64 / ticks * 100.0),
    ];
    (secs, u + s, s, hook, v)
}

fn us_per(ticks: u64, ops: u64) -> f64 {
    if ops == 0 {
        return f64::NAN;
    }
    ticks as f64 / clk_tck() * 1e6 / ops as f64
}

/// What one run measured: (metric key, value).
type Sample = Vec<(&'static str, f64)>;

fn get(s: &Sample, key: &str) -> Option<f64> {
    s.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn disturbance(s: &Sample) -> f64 {
    ["foreign_server_pct", "foreign_client_pct", "steal_pct"]
        .iter()
        .filter_map(|k| get(s, k))
        .fold(0.0, f64::max)
}

/// The hook server: its address and a `GET /count` of the POSTs it answered.
struct Hook {
    running: Running,
}

impl Hook {
    /// `GET /count` (POSTs answered) or `GET /conns` (connections accepted).
    async fn count(&self, what: &str) -> Result<u64, String> {
        let mut s = TcpStream::connect(self.running.addr)
            .await
            .map_err(|e| format!("hook /count: {e}"))?;
        s.write_all(format!("GET /{what} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .map_err(|e| format!("hook /count: {e}"))?;
        let mut buf = Vec::new();
        let mut tmp = [0u8; 256];
        loop {
            let n = s
                .read(&mut tmp)
                .await
                .map_err(|e| format!("hook /count: {e}"))?;
            if n == 0 {
                return Err("hook /count: closed".into());
            }
            buf.extend_from_slice(&tmp[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or("hook /count: no Content-Length")?;
                if body.len() >= len {
                    return body[..len]
                        .parse()
                        .map_err(|_| "hook /count: not a number".into());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Upgrades

/// One client: connect → 101 → hello → close, over and over. `all` counts
/// every completed upgrade (warm-up included), for the hook check.
async fn upgrade_loop(
    addr: SocketAddr,
    conf: Rc<Conf>,
    first: usize,
    stride: usize,
    seed: u64,
    sh: Rc<Shared>,
    all: Rc<Cell<u64>>,
) -> Result<(), String> {
    let mut rng = Rng(seed | 1);
    let mut buf = vec![0u8; 4096];
    let mut i = first;
    while !sh.stop.get() {
        let t0 = Instant::now();
        let (mut stream, mut got, cookie) = gw_connect(addr, &conf, i, &mut rng).await?;
        let t1 = Instant::now();
        i += stride;
        all.set(all.get() + 1);
        let close = client_frame(OP_CLOSE, &1000u16.to_be_bytes(), rng.key());
        stream
            .write_all(&close)
            .await
            .map_err(|e| format!("send close: {e}"))?;
        // The server answers with its close frame and then closes TCP.
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
            return Err("server did not close within 5 s of the close handshake".into());
        }
        if got.first() != Some(&(0x80 | OP_CLOSE)) {
            return Err("no close frame before the server closed TCP".into());
        }
        if sh.measuring.get() {
            sh.lat.borrow_mut().push(super::nanos(t1 - t0));
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

async fn run_upgrades(
    conf: Rc<Conf>,
    server: &Running,
    hook: Option<&Hook>,
    clients: usize,
    warmup: Duration,
    measure: Duration,
    seed: u64,
) -> Result<Sample, String> {
    let before = match (conf.hook, hook) {
        (true, Some(h)) => Some((h.count("count").await?, h.count("conns").await?)),
        (true, None) => return Err("the hook configuration needs --hook BIN".into()),
        _ => None,
    };
    let hook_pid = hook.filter(|_| conf.hook).map(|h| h.running.pid());
    let sh = Rc::new(Shared::default());
    let all = Rc::new(Cell::new(0u64));
    let mut set = JoinSet::new();
    for c in 0..clients {
        let (sh, all, conf) = (sh.clone(), all.clone(), conf.clone());
        let addr = server.addr;
        let seed = seed.wrapping_add(c as u64 * 7919);
        set.spawn_local(async move {
            if let Err(e) = upgrade_loop(addr, conf, c, clients, seed, sh.clone(), all).await {
                if !sh.stop.get() {
                    sh.fail(e);
                }
            }
        });
    }
    tokio::time::sleep(warmup).await;
    let a = snap(server.pid(), hook_pid)?;
    sh.measuring.set(true);
    tokio::time::sleep(measure).await;
    sh.measuring.set(false);
    let b = snap(server.pid(), hook_pid)?;
    sh.stop.set(true);
    super::finish(&mut set).await;
    if let Some(e) = sh.error.borrow().clone() {
        return Err(e);
    }
    let (secs, ticks, sys, hook_ticks, mut rest) = window_values(&a, &b);
    let ops = sh.ops.get();
    let mut lat = std::mem::take(&mut *sh.lat.borrow_mut());
    lat.sort_unstable();
    let mut hook_conns = None;
    if let (Some((calls0, conns0)), Some(h)) = (before, hook) {
        let calls = h.count("count").await? - calls0;
        if calls < all.get() {
            return Err(format!(
                "the hook answered {calls} requests for {} upgrades: the gateway did not call it for every upgrade",
                all.get()
            ));
        }
        // Minus the two connections of these /count and /conns requests.
        hook_conns = Some(h.count("conns").await?.saturating_sub(conns0 + 2));
    }
    let cookie =
        sh.cookie_yes.get() as f64 / (sh.cookie_yes.get() + sh.cookie_no.get()).max(1) as f64;
    let mut v = vec![
        ("ups", ops as f64 / secs),
        ("cpu", us_per(ticks, ops)),
        ("p50", percentile(&lat, 0.50) / 1e3),
        ("p99", percentile(&lat, 0.99) / 1e3),
        ("cookie", cookie * 100.0),
        ("ticks", ticks as f64),
        ("sys_ticks", sys as f64),
    ];
    if hook_pid.is_some() {
        v.push(("hook_cpu", us_per(hook_ticks, ops)));
    }
    if let Some(c) = hook_conns {
        v.push(("hook_conns", c as f64));
        v.push(("hook_calls_per_conn", all.get() as f64 / c.max(1) as f64));
    }
    v.append(&mut rest);
    Ok(v)
}

// ---------------------------------------------------------------------------
// Idle

/// Opens `n` gateway connections (tokens `first..first + n`), at most
/// `parallel` handshakes at a time, each waiting for its hello.
async fn open_many(
    addr: SocketAddr,
    conf: &Rc<Conf>,
    first: usize,
    n: usize,
    parallel: usize,
    seed: u64,
    lat: &RefCell<Vec<u32>>,
) -> Result<Vec<TcpStream>, String> {
    let mut out = Vec::with_capacity(n);
    let mut set = JoinSet::new();
    let mut started = 0;
    let mut rng = Rng(seed | 1);
    while out.len() < n {
        while started < n && set.len() < parallel {
            let mut r = Rng(rng.next() | 1);
            let (conf, i) = (conf.clone(), first + started);
            set.spawn_local(async move {
                let t0 = Instant::now();
                let (stream, rest, _) = gw_connect(addr, &conf, i, &mut r).await?;
                if !rest.is_empty() {
                    return Err(format!("{} unexpected bytes after the hello", rest.len()));
                }
                Ok((stream, t0.elapsed()))
            });
            started += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok((s, took)))) => {
                lat.borrow_mut().push(super::nanos(took));
                out.push(s);
            }
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => return Err(format!("task: {e}")),
            None => break,
        }
    }
    Ok(out)
}

fn rss_anon_kib(pid: u32) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no RssAnon".into())
}

async fn run_idle(
    conf: Rc<Conf>,
    server: &Running,
    conns: usize,
    settle: Duration,
    seed: u64,
) -> Result<Sample, String> {
    if let Some(t) = &conf.tokens {
        if t.len() < WARM + conns {
            return Err(format!(
                "{} tokens for {} connections: mint at least {}",
                t.len(),
                WARM + conns,
                WARM + conns
            ));
        }
    }
    let (addr, pid) = (server.addr, server.pid());
    let lat = RefCell::new(Vec::with_capacity(conns));
    let warm = open_many(addr, &conf, 0, WARM, 32, seed, &lat).await?;
    lat.borrow_mut().clear();
    tokio::time::sleep(settle).await;
    let (rss0, anon0) = (vmrss_kib(pid)?, rss_anon_kib(pid)?);
    let a = snap(pid, None)?;
    let idle = open_many(addr, &conf, WARM, conns, 64, seed ^ 0xABCDEF, &lat).await?;
    let b = snap(pid, None)?;
    tokio::time::sleep(settle).await;
    let (rss1, anon1) = (vmrss_kib(pid)?, rss_anon_kib(pid)?);
    for s in warm.iter().chain(idle.iter()) {
        let mut byte = [0u8; 1];
        match s.try_read(&mut byte) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Ok(_) => return Err("server closed or wrote to an idle connection".into()),
            Err(e) => return Err(format!("idle connection: {e}")),
        }
    }
    drop(warm);
    drop(idle);
    let (secs, ticks, _, _, mut rest) = window_values(&a, &b);
    let mut lat = lat.into_inner();
    lat.sort_unstable();
    let per = |x: u64, y: u64| x.saturating_sub(y) as f64 * 1024.0 / conns as f64;
    let mut v = vec![
        ("bytes_per_conn", per(rss1, rss0)),
        ("anon_bytes_per_conn", per(anon1, anon0)),
        ("rss_before_kib", rss0 as f64),
        ("rss_after_kib", rss1 as f64),
        ("conns", conns as f64 / secs),
        ("p50", percentile(&lat, 0.50) / 1e3),
        ("p99", percentile(&lat, 0.99) / 1e3),
        ("cpu", us_per(ticks, conns as u64)),
    ];
    v.append(&mut rest);
    Ok(v)
}

// ---------------------------------------------------------------------------
// The suite

fn read_tokens(path: &Path) -> Result<Tokens, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(s, t)| (s.to_string(), t.to_string()))
        .collect();
    if v.is_empty() {
        return Err(format!("{}: no tokens", path.display()));
    }
    Ok(Rc::new(v))
}

fn confs(
    ids: &str,
    dir: &Path,
    keys: &Path,
    hook: Option<SocketAddr>,
) -> Result<Vec<Conf>, String> {
    let allow: Vec<String> = ALLOW_SUB
        .iter()
        .flat_map(|p| ["--allow-sub".to_string(), p.to_string()])
        .collect();
    let with = |flag: &str, file: PathBuf| {
        let mut a = vec![flag.to_string(), file.display().to_string()];
        a.extend(allow.iter().cloned());
        a
    };
    ids.split(',')
        .filter(|id| !id.trim().is_empty())
        .map(|id| {
            let id = id.trim();
            Ok(match id {
                "none" => Conf {
                    id: "none",
                    title: "no auth",
                    args: vec![],
                    tokens: None,
                    hook: false,
                    env: vec![],
                },
                "hs256" => Conf {
                    id: "hs256",
                    title: "HS256",
                    args: with("--jwt-secret-file", dir.join("hs256.secret")),
                    tokens: Some(read_tokens(&dir.join("hs256.tokens"))?),
                    hook: false,
                    env: vec![],
                },
                "rs256" => Conf {
                    id: "rs256",
                    title: "RS256 (2048)",
                    args: with("--jwt-public-key-file", keys.join("rsa_public.pem")),
                    tokens: Some(read_tokens(&dir.join("rs256.tokens"))?),
                    hook: false,
                    env: vec![],
                },
                "es256" => Conf {
                    id: "es256",
                    title: "ES256",
                    args: with("--jwt-public-key-file", keys.join("ec_public.pem")),
                    tokens: Some(read_tokens(&dir.join("es256.tokens"))?),
                    hook: false,
                    env: vec![],
                },
                "hook" => {
                    let addr = hook.ok_or("the hook configuration needs --hook BIN")?;
                    let mut args = vec!["--auth-hook".to_string(), format!("http://{addr}/auth")];
                    args.extend(allow.iter().cloned());
                    Conf {
                        id: "hook",
                        title: "auth hook (local)",
                        args,
                        tokens: None,
                        hook: true,
                        env: vec![],
                    }
                }
                _ => {
                    return Err(format!(
                        "unknown configuration {id:?} (none,hs256,rs256,es256,hook)"
                    ))
                }
            })
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Scn {
    Upgrades,
    Idle,
}

impl Scn {
    fn name(self) -> &'static str {
        match self {
            Scn::Upgrades => "upgrades",
            Scn::Idle => "idle",
        }
    }
}

/// results[scenario][conf] = one result per round.
type Runs = Vec<Vec<Result<Sample, String>>>;

pub async fn main(args: Args) {
    let need = |k: &str| -> PathBuf {
        PathBuf::from(
            args.get(k)
                .unwrap_or_else(|| common::die(&format!("loadgen auth: --{k} is required"))),
        )
    };
    let wsgate = need("wsgate");
    let dir = need("tokens");
    let keys = need("keys");
    let out = PathBuf::from(args.get("out").unwrap_or("target/bench"));
    let rounds: usize = args.num("rounds", 5);
    let warmup = Duration::from_secs_f64(args.num("warmup", 0.5));
    let measure = Duration::from_secs_f64(args.num("measure", 3.0));
    let clients: usize = args.num("clients", 32);
    let conns: usize = args.num("idle-conns", 10_000);
    let settle = Duration::from_secs_f64(args.num("settle", 2.0));
    let server_cpu: usize = args.num("server-cpu", 0);
    let client_cpu: usize = args.num("client-cpu", 1);
    let quiet_wait: f64 = args.num("quiet-wait", 60.0);
    let retry_budget = Duration::from_secs_f64(args.num("retry-budget", 300.0));
    let up_ids = args.get("configs").unwrap_or("none,hs256,rs256,es256,hook");
    let idle_ids = args.get("idle-configs").unwrap_or("none,hs256");
    if WARM + conns > 19_000 {
        common::die("--idle-conns: at most 18,900 (the open-files limit is 20,000 per process)");
    }
    pin_self(client_cpu);
    let _ = CPUS.set((server_cpu, client_cpu));
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs)
        .unwrap_or_else(|e| common::die(&format!("{}: {e}", logs.display())));

    let hook = if up_ids.split(',').any(|c| c.trim() == "hook") {
        let spec = ServerSpec {
            id: "auth-hook",
            title: "auth-hook",
            program: need("hook"),
            args: vec!["--user".into(), HOOK_USER.into()],
            env: vec![],
        };
        // Beside the load generator: its CPU is not the gateway's.
        let running = start_server(&spec, client_cpu, &logs.join("auth-hook.log"))
            .unwrap_or_else(|e| common::die(&e));
        Some(Hook { running })
    } else {
        None
    };
    let hook_addr = hook.as_ref().map(|h| h.running.addr);
    let up_confs: Vec<Rc<Conf>> = confs(up_ids, &dir, &keys, hook_addr)
        .unwrap_or_else(|e| common::die(&e))
        .into_iter()
        .map(Rc::new)
        .collect();
    let mut idle_confs: Vec<Rc<Conf>> = if conns == 0 {
        vec![]
    } else {
        confs(idle_ids, &dir, &keys, hook_addr)
            .unwrap_or_else(|e| common::die(&e))
            .into_iter()
            .map(Rc::new)
            .collect()
    };
    // Informational: the same configurations with another allocator
    // preloaded, to tell live data from what glibc malloc keeps.
    if let Some(lib) = args.get("idle-preload").filter(|l| !l.is_empty()) {
        let lib: &'static str = Box::leak(lib.to_string().into_boxed_str());
        let name = Path::new(lib)
            .file_name()
            .map_or(lib.to_string(), |n| n.to_string_lossy().into_owned());
        let more: Vec<Rc<Conf>> = confs(idle_ids, &dir, &keys, hook_addr)
            .unwrap_or_else(|e| common::die(&e))
            .into_iter()
            .map(|c| {
                Rc::new(Conf {
                    id: Box::leak(format!("{}-preload", c.id).into_boxed_str()),
                    title: Box::leak(format!("{} ({name} preloaded)", c.title).into_boxed_str()),
                    env: vec![("LD_PRELOAD", lib)],
                    ..c
                })
            })
            .collect();
        idle_confs.extend(more);
    }
    let scenarios: Vec<(Scn, &[Rc<Conf>])> =
        [(Scn::Upgrades, &up_confs[..]), (Scn::Idle, &idle_confs[..])]
            .into_iter()
            .filter(|(_, c)| !c.is_empty())
            .collect();
    let base: Vec<String> = [
        "--cores",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--cookie-secure",
        "false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let started = Instant::now();
    let load = wait_quiet(Duration::from_secs_f64(quiet_wait)).await;
    if load > DISTURBED_PCT {
        eprintln!("warning: other processes use {load:.0}% of a CPU; results may be disturbed");
    }
    let mut runs: Vec<Runs> = scenarios
        .iter()
        .map(|(_, c)| c.iter().map(|_| Vec::new()).collect())
        .collect();
    let (mut retried, mut retry_spent) = (0, Duration::ZERO);
    for round in 0..rounds {
        for (si, (scn, cs)) in scenarios.iter().enumerate() {
            for j in 0..cs.len() {
                let k = (j + round + si) % cs.len();
                let conf = &cs[k];
                let log = logs.join(format!(
                    "auth-{}-{}-r{}.log",
                    scn.name(),
                    conf.id,
                    round + 1
                ));
                let seed = 0xA17 ^ ((round as u64) << 32) ^ ((si as u64) << 16) ^ k as u64;
                let spec = ServerSpec {
                    id: conf.id,
                    title: conf.title,
                    program: wsgate.clone(),
                    args: base.iter().chain(conf.args.iter()).cloned().collect(),
                    env: conf.env.clone(),
                };
                let once = || async {
                    let server = start_server(&spec, server_cpu, &log)?;
                    match scn {
                        Scn::Upgrades => {
                            run_upgrades(
                                conf.clone(),
                                &server,
                                hook.as_ref(),
                                clients,
                                warmup,
                                measure,
                                seed,
                            )
                            .await
                        }
                        Scn::Idle => run_idle(conf.clone(), &server, conns, settle, seed).await,
                    }
                };
                let mut result = once().await;
                let mut attempt = 1;
                while result.as_ref().map_or(0.0, disturbance) > DISTURBED_PCT
                    && attempt <= 2
                    && retry_spent < retry_budget
                {
                    let t = Instant::now();
                    eprintln!(
                        "    disturbed ({:.0}% of a CPU used by other processes); retry {attempt}",
                        result.as_ref().map_or(0.0, disturbance)
                    );
                    retried += 1;
                    attempt += 1;
                    wait_quiet(Duration::from_secs(20)).await;
                    result = once().await;
                    retry_spent += t.elapsed();
                }
                let summary = match &result {
                    Ok(s) => s
                        .iter()
                        .map(|(k, v)| format!("{k}={v:.3}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    Err(e) => format!("FAILED: {e}"),
                };
                eprintln!(
                    "[{:>5.1}s] round {}/{} {:<9} {:<6} {}",
                    started.elapsed().as_secs_f64(),
                    round + 1,
                    rounds,
                    scn.name(),
                    conf.id,
                    summary
                );
                runs[si][k].push(result);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    drop(hook);

    let md = report(
        &scenarios,
        &runs,
        rounds,
        warmup,
        measure,
        clients,
        conns,
        settle,
        (server_cpu, client_cpu),
    ) + &format!(
        "\nRe-runs of disturbed runs: {retried} ({:.0} s). Suite wall time: {:.0} s.\n",
        retry_spent.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    std::fs::write(out.join("auth-e2e.md"), &md)
        .unwrap_or_else(|e| common::die(&format!("write auth-e2e.md: {e}")));
    println!("{md}");
    let failed = runs
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

// ---------------------------------------------------------------------------
// Report

/// The no-auth configuration an idle configuration is compared with (the
/// one with the same allocator).
fn idle_base(cs: &[Rc<Conf>], c: &Conf) -> Option<usize> {
    let want = if c.env.is_empty() {
        "none"
    } else {
        "none-preload"
    };
    cs.iter().position(|x| x.id == want)
}

fn fmt(x: f64, d: usize) -> String {
    super::fmt_num(x, d)
}

fn med(rs: &[Result<Sample, String>], key: &str) -> f64 {
    median(
        rs.iter()
            .filter_map(|r| r.as_ref().ok())
            .filter_map(|s| get(s, key))
            .collect(),
    )
}

/// Median of the per-round ratios a/b (the rounds pair the runs).
fn paired(
    a: &[Result<Sample, String>],
    b: &[Result<Sample, String>],
    key: &str,
) -> (f64, Vec<f64>) {
    let v: Vec<f64> = a
        .iter()
        .zip(b)
        .filter_map(|(x, y)| {
            let (x, y) = (x.as_ref().ok()?, y.as_ref().ok()?);
            Some(get(x, key)? / get(y, key)?)
        })
        .collect();
    (median(v.clone()), v)
}

fn paired_diff(
    a: &[Result<Sample, String>],
    b: &[Result<Sample, String>],
    key: &str,
) -> (f64, Vec<f64>) {
    let v: Vec<f64> = a
        .iter()
        .zip(b)
        .filter_map(|(x, y)| {
            let (x, y) = (x.as_ref().ok()?, y.as_ref().ok()?);
            Some(get(x, key)? - get(y, key)?)
        })
        .collect();
    (median(v.clone()), v)
}

/// A median whose majority of runs was disturbed gets a †.
fn mark(rs: &[Result<Sample, String>]) -> &'static str {
    let ok: Vec<&Sample> = rs.iter().filter_map(|r| r.as_ref().ok()).collect();
    let bad = ok.iter().filter(|s| disturbance(s) > DISTURBED_PCT).count();
    if bad * 2 >= ok.len().max(1) && bad > 0 {
        " †"
    } else {
        ""
    }
}

fn list(v: &[f64], d: usize) -> String {
    v.iter().map(|x| fmt(*x, d)).collect::<Vec<_>>().join(", ")
}

#[allow(clippy::too_many_arguments)]
fn report(
    scenarios: &[(Scn, &[Rc<Conf>])],
    runs: &[Runs],
    rounds: usize,
    warmup: Duration,
    measure: Duration,
    clients: usize,
    conns: usize,
    settle: Duration,
    (scpu, ccpu): (usize, usize),
) -> String {
    let mut t = String::new();
    let mut verdicts = String::new();
    let mut details = String::new();
    for (si, (scn, cs)) in scenarios.iter().enumerate() {
        let r = &runs[si];
        let base = cs.iter().position(|c| c.id == "none");
        match scn {
            Scn::Upgrades => {
                let _ = writeln!(
                    t,
                    "### Upgrade cost (gateway path `/ws`)\n\n{clients} client loops of connect → `GET /ws[?token=…]` → 101 → \
                     `hello` text frame (its user checked) → close handshake → TCP close; medians of {rounds} rounds, \
                     each run {:.1} s warm-up + {:.1} s measured, configurations interleaved; gateway `--cores 1` on \
                     CPU {scpu}, load generator (and the hook server) on CPU {ccpu}. Server CPU = utime+stime of \
                     the gateway over the window ÷ upgrades.\n",
                    warmup.as_secs_f64(),
                    measure.as_secs_f64()
                );
                let _ = writeln!(
                    t,
                    "| auth | upgrades/s | server CPU (µs/upgrade) | ÷ no auth | + µs over no auth | in the kernel | connect→hello p50 (µs) | p99 (µs) | hook server CPU (µs/upgrade) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
                );
                for (k, c) in cs.iter().enumerate() {
                    let rk = &r[k];
                    if rk.iter().all(|x| x.is_err()) {
                        let e = rk
                            .iter()
                            .find_map(|x| x.as_ref().err())
                            .cloned()
                            .unwrap_or_default();
                        let _ = writeln!(
                            t,
                            "| {} | failed: {} | | | | | | | |",
                            c.title,
                            e.replace('|', "/")
                        );
                        continue;
                    }
                    let (ratio, add) = match base {
                        Some(b) if b != k => (
                            format!("{}×", fmt(paired(rk, &r[b], "cpu").0, 3)),
                            fmt(paired_diff(rk, &r[b], "cpu").0, 2),
                        ),
                        _ => ("—".into(), "—".into()),
                    };
                    let _ = writeln!(
                        t,
                        "| {} | {} | {}{} | {ratio} | {add} | {} % | {} | {} | {} |",
                        c.title,
                        fmt(med(rk, "ups"), 0),
                        fmt(med(rk, "cpu"), 2),
                        mark(rk),
                        fmt(med(rk, "sys_pct"), 0),
                        fmt(med(rk, "p50"), 1),
                        fmt(med(rk, "p99"), 1),
                        if c.hook {
                            fmt(med(rk, "hook_cpu"), 2)
                        } else {
                            "—".into()
                        },
                    );
                }
                let _ = writeln!(
                    t,
                    "\n÷ no auth and + µs: medians of the per-round ratios / differences against the no-auth run \
                     of the same round."
                );
                if let Some(h) = cs.iter().position(|c| c.hook) {
                    let _ = writeln!(
                        t,
                        "The hook server (`auth-hook`, one tokio thread, fixed 200 answer) was called once per upgrade \
                         (checked by its request count) over {} keep-alive connections per run (median), {} calls per \
                         connection.",
                        fmt(med(&r[h], "hook_conns"), 0),
                        fmt(med(&r[h], "hook_calls_per_conn"), 0)
                    );
                }
                t.push('\n');
                for (k, c) in cs.iter().enumerate() {
                    let ok = r[k].iter().filter(|x| x.is_ok()).count();
                    let _ = writeln!(
                        details,
                        "| upgrades | server CPU (µs/upgrade) | {} | {} |",
                        c.title,
                        r[k].iter()
                            .map(|x| x
                                .as_ref()
                                .ok()
                                .and_then(|s| get(s, "cpu"))
                                .map_or("failed".into(), |v| fmt(v, 2)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    let _ = writeln!(
                        details,
                        "| upgrades | upgrades/s | {} | {} |",
                        c.title,
                        r[k].iter()
                            .map(|x| x
                                .as_ref()
                                .ok()
                                .and_then(|s| get(s, "ups"))
                                .map_or("failed".into(), |v| fmt(v, 0)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    if ok < r[k].len() {
                        for e in r[k].iter().filter_map(|x| x.as_ref().err()) {
                            let _ = writeln!(
                                details,
                                "| upgrades | error | {} | {} |",
                                c.title,
                                e.replace('|', "/")
                            );
                        }
                    }
                }
                if let (Some(b), Some(h)) = (base, cs.iter().position(|c| c.id == "hs256")) {
                    let (ratio, per) = paired(&r[h], &r[b], "cpu");
                    let verdict = if !ratio.is_finite() {
                        "**not measured**"
                    } else if ratio < 1.10 {
                        "**met**"
                    } else {
                        "**not met**"
                    };
                    let _ = writeln!(
                        verdicts,
                        "| HS256 adds less than 10 % to the upgrade's server CPU | {}× (per round: {}) | {verdict} |",
                        fmt(ratio, 3),
                        list(&per, 3)
                    );
                }
            }
            Scn::Idle => {
                let _ = writeln!(
                    t,
                    "### Idle memory per connection (gateway path `/ws`)\n\n{WARM} connections first, {:.1} s, VmRSS of \
                     the gateway; then {} more (64 handshakes at a time, each waits for its `hello`; every token a \
                     user of its own, 20-byte ids), {:.1} s, VmRSS again: growth ÷ {}. Auth configurations have two \
                     `--allow-sub` patterns (`{}`, `{}`). Medians of {rounds} rounds.\n",
                    settle.as_secs_f64(),
                    fmt(conns as f64, 0),
                    settle.as_secs_f64(),
                    fmt(conns as f64, 0),
                    ALLOW_SUB[0],
                    ALLOW_SUB[1]
                );
                let _ = writeln!(
                    t,
                    "| auth | RSS growth (B/conn) | − no auth (B/conn) | RssAnon growth (B/conn) | gateway VmRSS before (KiB) | connects/s while opening | server CPU (µs/connect) |\n|---|---:|---:|---:|---:|---:|---:|"
                );
                for (k, c) in cs.iter().enumerate() {
                    let rk = &r[k];
                    if rk.iter().all(|x| x.is_err()) {
                        let e = rk
                            .iter()
                            .find_map(|x| x.as_ref().err())
                            .cloned()
                            .unwrap_or_default();
                        let _ = writeln!(
                            t,
                            "| {} | failed: {} | | | | | |",
                            c.title,
                            e.replace('|', "/")
                        );
                        continue;
                    }
                    let diff = match idle_base(cs, c) {
                        Some(b) if b != k => fmt(paired_diff(rk, &r[b], "bytes_per_conn").0, 1),
                        _ => "—".into(),
                    };
                    let _ = writeln!(
                        t,
                        "| {} | {} | {diff} | {} | {} | {} | {} |",
                        c.title,
                        fmt(med(rk, "bytes_per_conn"), 1),
                        fmt(med(rk, "anon_bytes_per_conn"), 1),
                        fmt(med(rk, "rss_before_kib"), 0),
                        fmt(med(rk, "conns"), 0),
                        fmt(med(rk, "cpu"), 1),
                    );
                }
                let _ = writeln!(
                    t,
                    "\n− no auth: median of the per-round differences (against the no-auth run of the same round \
                     and allocator). RssAnon: the anonymous part of VmRSS (heap, stacks).\n"
                );
                for (k, c) in cs.iter().enumerate() {
                    let _ = writeln!(
                        details,
                        "| idle | RSS growth (B/conn) | {} | {} |",
                        c.title,
                        r[k].iter()
                            .map(|x| x
                                .as_ref()
                                .ok()
                                .and_then(|s| get(s, "bytes_per_conn"))
                                .map_or("failed".into(), |v| fmt(v, 1)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    if let Some(b) = idle_base(cs, c).filter(|&b| b != k) {
                        let _ = writeln!(
                            details,
                            "| idle | − no auth (B/conn) | {} | {} |",
                            c.title,
                            list(&paired_diff(&r[k], &r[b], "bytes_per_conn").1, 1)
                        );
                    }
                    for e in r[k].iter().filter_map(|x| x.as_ref().err()) {
                        let _ = writeln!(
                            details,
                            "| idle | error | {} | {} |",
                            c.title,
                            e.replace('|', "/")
                        );
                    }
                }
                for (h, c) in cs
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| !c.id.starts_with("none"))
                {
                    let Some(b) = idle_base(cs, c) else { continue };
                    let (d, per) = paired_diff(&r[h], &r[b], "bytes_per_conn");
                    if !c.env.is_empty() {
                        let _ = writeln!(
                            verdicts,
                            "| (for comparison, not the target) {} − the same allocator without auth | {} B (per round: {}) | — |",
                            c.title,
                            fmt(d, 1),
                            list(&per, 1)
                        );
                        continue;
                    }
                    let verdict = if !d.is_finite() {
                        "**not measured**"
                    } else if d <= 64.0 {
                        "**met**"
                    } else {
                        "**not met**"
                    };
                    let _ = writeln!(
                        verdicts,
                        "| idle memory with {} within 64 B/conn of auth off | {} B (per round: {}) | {verdict} |",
                        cs[h].title,
                        fmt(d, 1),
                        list(&per, 1)
                    );
                }
            }
        }
    }
    let all: Vec<&Sample> = runs
        .iter()
        .flatten()
        .flatten()
        .filter_map(|r| r.as_ref().ok())
        .collect();
    let disturbed = all
        .iter()
        .filter(|s| disturbance(s) > DISTURBED_PCT)
        .count();
    let worst = all.iter().map(|s| disturbance(s)).fold(0.0, f64::max);
    let _ = writeln!(
        t,
        "### Targets\n\n| target | measured | verdict |\n|---|---|---|\n{verdicts}\n\
         Interference check (/proc/stat): {disturbed} of {} runs had more than {DISTURBED_PCT:.0} % of the \
         gateway's or the load generator's CPU taken by other processes or the hypervisor (worst kept run: \
         {worst:.1} %){}.\n",
        all.len(),
        if disturbed > 0 { "; cells marked † have a median from disturbed runs" } else { "" }
    );
    let _ = writeln!(
        t,
        "<details><summary>Per-round values</summary>\n\n| scenario | metric | auth | per round |\n|---|---|---|---|\n{details}\n</details>"
    );
    t
}
