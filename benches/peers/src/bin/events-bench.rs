//! The events hook benchmark of `benches/events.sh` (issue 15):
//!
//! - `events-bench backend [--listen ADDR]`: a trivial events hook backend
//!   (HTTP/1.1 keep-alive, one tokio thread): every `POST` is a JSON array of
//!   events, answered `200` with one element per event, `{"reply":"ok"}`
//!   for a `send` and `null` for the others. `GET /count` answers the events
//!   seen so far.
//! - `events-bench rtt --addr GW --pid PID [--conns 50] [--depth 16]
//!   [--seconds 3]`: `conns` WebSockets on `/ws`, each keeping `depth`
//!   `send` commands in flight; prints sends/s, the round trip (send →
//!   `reply`) p50/p99 in µs, and the gateway's CPU per send (from `/proc`).
//! - `events-bench idle --addr GW --pid PID [--conns 5000]`: opens `conns`
//!   idle WebSockets on `/ws` (each reads its `hello`), waits, and prints
//!   the gateway's RSS growth per connection.

#[path = "../common.rs"]
#[allow(dead_code)]
mod common;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| -> Option<String> {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let num = |k: &str, d: u64| get(k).map_or(d, |v| v.parse().unwrap_or(d));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    match args.first().map(String::as_str) {
        Some("backend") => {
            let listen: SocketAddr = get("--listen")
                .unwrap_or_else(|| "127.0.0.1:0".into())
                .parse()
                .unwrap_or_else(|_| common::die("--listen ADDR"));
            local.block_on(&rt, backend(listen));
        }
        Some(mode @ ("rtt" | "idle")) => {
            let addr: SocketAddr = get("--addr")
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| common::die("--addr HOST:PORT is required"));
            let pid: u32 = get("--pid")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| common::die("--pid PID is required"));
            if mode == "rtt" {
                let (conns, depth) = (num("--conns", 50) as usize, num("--depth", 16) as usize);
                let secs = num("--seconds", 3);
                local.block_on(&rt, rtt(addr, pid, conns, depth, secs));
            } else {
                local.block_on(&rt, idle(addr, pid, num("--conns", 5000) as usize));
            }
        }
        _ => common::die("usage: events-bench backend|rtt|idle ... (see the source)"),
    }
}

// ---------------------------------------------------------------------------
// The backend

async fn backend(listen: SocketAddr) {
    let listener = TcpListener::bind(listen)
        .await
        .unwrap_or_else(|e| common::die(&format!("bind {listen}: {e}")));
    common::announce("events-backend", listener.local_addr().unwrap());
    let seen = Rc::new(Cell::new(0u64));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let seen = seen.clone();
        tokio::task::spawn_local(async move {
            let _ = serve(stream, &seen).await;
        });
    }
}

async fn serve(mut stream: TcpStream, seen: &Cell<u64>) -> Result<(), String> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut tmp = vec![0u8; 64 * 1024];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + len {
                break;
            }
            let body: Vec<u8> = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            let out = if head.starts_with("get ") {
                let n = seen.get().to_string();
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{n}", n.len())
            } else {
                let events: Vec<serde_json::Value> =
                    serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                seen.set(seen.get() + events.len() as u64);
                let replies: Vec<&str> = events
                    .iter()
                    .map(|e| match e["type"].as_str() {
                        Some("send") => r#"{"reply":"ok"}"#,
                        _ => "null",
                    })
                    .collect();
                let json = format!("[{}]", replies.join(","));
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
                    json.len()
                )
            };
            stream
                .write_all(out.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
        }
        let n = stream.read(&mut tmp).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

// ---------------------------------------------------------------------------
// Clients

/// An upgraded `/ws` connection whose `hello` was read.
async fn open(addr: SocketAddr, n: u64) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    // 16 bytes in canonical base64: 21 digits, then a last character whose
    // low bits are zero.
    let key = format!("{:021}A==", n % 1_000_000_000_000_000_000);
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 2048];
    loop {
        let n = s.read(&mut tmp).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the hello".into());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                return Err(String::from_utf8_lossy(&buf[..end]).into_owned());
            }
            // The hello: one unmasked text frame (length < 126).
            let rest = &buf[end + 4..];
            if rest.len() >= 2 && rest.len() >= 2 + usize::from(rest[1] & 0x7f) {
                return Ok(s);
            }
        }
    }
}

async fn rtt(addr: SocketAddr, pid: u32, conns: usize, depth: usize, secs: u64) {
    let lat = Rc::new(RefCell::new(Vec::<u32>::new()));
    let done = Rc::new(Cell::new(false));
    let count = Rc::new(Cell::new(0u64));
    let mut tasks = Vec::new();
    let measuring = Rc::new(Cell::new(false));
    for i in 0..conns {
        let s = open(addr, i as u64 + 1)
            .await
            .unwrap_or_else(|e| common::die(&format!("open: {e}")));
        let (lat, done, count, measuring) = (lat.clone(), done.clone(), count.clone(), measuring.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let (mut rd, mut wr) = s.into_split();
            let frame = common::client_frame(1, b"send ping", [1, 2, 3, 4]);
            let sent: Rc<RefCell<std::collections::VecDeque<Instant>>> = Rc::default();
            for _ in 0..depth {
                sent.borrow_mut().push_back(Instant::now());
                wr.write_all(&frame).await.unwrap();
            }
            let mut buf = Vec::new();
            let mut tmp = vec![0u8; 16 * 1024];
            while !done.get() {
                let n = rd.read(&mut tmp).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&tmp[..n]);
                let mut used = 0;
                let mut answered = 0;
                while buf.len() >= used + 2 {
                    let len = usize::from(buf[used + 1] & 0x7f);
                    if buf.len() < used + 2 + len {
                        break;
                    }
                    assert_eq!(&buf[used + 2..used + 2 + len], b"reply ok");
                    used += 2 + len;
                    answered += 1;
                }
                buf.drain(..used);
                let mut out = Vec::new();
                for _ in 0..answered {
                    let t0 = sent.borrow_mut().pop_front().unwrap();
                    if measuring.get() {
                        lat.borrow_mut().push(t0.elapsed().as_micros() as u32);
                        count.set(count.get() + 1);
                    }
                    sent.borrow_mut().push_back(Instant::now());
                    out.extend_from_slice(&frame);
                }
                if !out.is_empty() && wr.write_all(&out).await.is_err() {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = cpu_ticks(pid);
    let start = Instant::now();
    measuring.set(true);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    measuring.set(false);
    let elapsed = start.elapsed().as_secs_f64();
    let t1 = cpu_ticks(pid);
    done.set(true);
    let mut l = lat.borrow().clone();
    l.sort_unstable();
    let p = |q: f64| l.get(((l.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(0);
    let n = count.get();
    let cpu_us = (t1 - t0) as f64 / clk_tck() * 1e6 / n.max(1) as f64;
    println!(
        "scenario=send-reply conns={conns} depth={depth} sends={n} sends_per_s={:.0} p50_us={} p99_us={} server_cpu_us_per_send={cpu_us:.2}",
        n as f64 / elapsed,
        p(0.50),
        p(0.99)
    );
    std::process::exit(0);
}

async fn idle(addr: SocketAddr, pid: u32, conns: usize) {
    // A few first, so that what the first connections cost once is not counted.
    let mut warm = Vec::new();
    for i in 0..200 {
        warm.push(open(addr, i).await.unwrap_or_else(|e| common::die(&e)));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = vmrss_kib(pid);
    let mut keep = Vec::with_capacity(conns);
    for i in 0..conns {
        keep.push(open(addr, 1000 + i as u64).await.unwrap_or_else(|e| common::die(&e)));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss1 = vmrss_kib(pid);
    let t0 = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t1 = cpu_ticks(pid);
    let per = (rss1.saturating_sub(rss0) * 1024) as f64 / conns as f64;
    println!(
        "scenario=idle-ws conns={conns} rss_before_kib={rss0} rss_after_kib={rss1} bytes_per_conn={per:.0} idle_cpu_ms_per_s={:.1}",
        (t1 - t0) as f64 / clk_tck() * 1e3 / 2.0
    );
    drop(warm);
    drop(keep);
}

fn clk_tck() -> f64 {
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn vmrss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
