//! Two gateway nodes on one Redis engine (`benches/redis_modes.sh`, issue
//! 18): how long a resume on the *other* node takes, and how fast a publish
//! on one node fans out to subscribers on the other. std only, blocking
//! sockets, one thread per subscriber.
//!
//! `redis-modes --a ADDR --b ADDR [--sessions 200] [--subs 100]
//! [--messages 2000] [--payload 32] [--window 32]`
//!
//! - resume: `sessions` sessions made on A (each subscribed to a topic), their
//!   sockets dropped without a close, then each reconnects to B with its
//!   cookie, one after the other: connect → `hello … resumed` latency
//!   (p50/p99), checked to say `resumed`.
//! - fan-out: `subs` subscribers of one topic on B, one publisher on A that
//!   keeps at most `window` `pub`s unacknowledged: deliveries/s counted at
//!   the subscribers from the first `pub` to the last delivery, and the
//!   publish → delivery latency (p50/p99); every subscriber must get every
//!   message once, in order.
//!
//! Prints one `key=value` line.

#[path = "../common.rs"]
#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{client_frame, die, OP_TEXT};

struct Ws {
    s: TcpStream,
    buf: Vec<u8>,
    cookie: String,
}

impl Ws {
    /// Upgrades on `/ws` (with `cookie` when given); returns the client and
    /// its hello line.
    fn connect(addr: SocketAddr, cookie: Option<&str>) -> (Ws, String) {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| die(&format!("{addr}: {e}")));
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        if let Some(c) = cookie {
            req.push_str(&format!("Cookie: WS_SESSION_ID={c}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = s
                .read(&mut chunk)
                .unwrap_or_else(|e| die(&format!("upgrade: {e}")));
            if n == 0 {
                die("upgrade: closed");
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            die(&format!("upgrade refused: {head}"));
        }
        let cookie = head
            .split("WS_SESSION_ID=")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .unwrap_or_else(|| die("no cookie"))
            .to_string();
        buf.drain(..end);
        let mut ws = Ws { s, buf, cookie };
        let hello = ws.line();
        (ws, hello)
    }

    fn send(&mut self, text: &str) {
        self.s
            .write_all(&client_frame(OP_TEXT, text.as_bytes(), [1, 2, 3, 4]))
            .unwrap_or_else(|e| die(&format!("send: {e}")));
    }

    /// The next text frame (pings and other opcodes skipped).
    fn line(&mut self) -> String {
        loop {
            if self.buf.len() >= 2 {
                let op = self.buf[0] & 0x0f;
                let (len, at) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    if op == OP_TEXT {
                        return String::from_utf8_lossy(&payload).into_owned();
                    }
                    continue;
                }
            }
            let mut chunk = [0u8; 65536];
            let n = self
                .s
                .read(&mut chunk)
                .unwrap_or_else(|e| die(&format!("read: {e}")));
            if n == 0 {
                die("closed by the gateway");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads until a line starting with `prefix`.
    fn until(&mut self, prefix: &str) -> String {
        loop {
            let l = self.line();
            if l.starts_with(prefix) {
                return l;
            }
        }
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let addr = |k: &str| -> SocketAddr {
        get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| die(&format!("{k} ADDR is required")))
    };
    let num = |k: &str, d: usize| get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (a, b) = (addr("--a"), addr("--b"));
    let sessions = num("--sessions", 200);
    let subs = num("--subs", 100);
    let messages = num("--messages", 2000);
    let payload = num("--payload", 32);
    let window = num("--window", 32);
    let tag = format!("{:x}", now_ns() as u64);

    // Resume on the other node.
    let topic = format!("bench.resume.{tag}");
    let mut cookies = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let (mut ws, _) = Ws::connect(a, None);
        ws.send(&format!("sub {topic}"));
        ws.until(&format!("ok sub {topic}"));
        cookies.push(ws.cookie.clone());
        drop(ws);
    }
    // Let the nodes see the drops (and save the sessions).
    std::thread::sleep(Duration::from_millis(300));
    let mut lat = Vec::with_capacity(sessions);
    let t = Instant::now();
    let mut kept = Vec::with_capacity(sessions);
    for c in &cookies {
        let t0 = Instant::now();
        let (ws, hello) = Ws::connect(b, Some(c));
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
        if !hello.contains(" resumed ") {
            die(&format!("not resumed on the other node: {hello}"));
        }
        kept.push(ws);
    }
    let resumes_per_s = sessions as f64 / t.elapsed().as_secs_f64();
    drop(kept);

    // Fan-out across nodes.
    let topic = format!("bench.fan.{tag}");
    let ready = Arc::new(Barrier::new(subs + 1));
    let handles: Vec<_> = (0..subs)
        .map(|_| {
            let ready = ready.clone();
            let topic = topic.clone();
            std::thread::spawn(move || {
                let (mut ws, _) = Ws::connect(b, None);
                ws.send(&format!("sub {topic}"));
                ws.until(&format!("ok sub {topic}"));
                ready.wait();
                let mut lat = Vec::with_capacity(messages);
                let mut next = 1u64;
                let prefix = format!("msg {topic} ");
                while (next as usize) <= messages {
                    let l = ws.until(&prefix);
                    let rest = &l[prefix.len()..];
                    let (seq, body) = rest.split_once(' ').unwrap();
                    let seq: u64 = seq.parse().unwrap();
                    if seq != next {
                        die(&format!("subscriber: seq {seq}, expected {next}"));
                    }
                    next += 1;
                    let sent: u128 = body.split(':').next().unwrap().parse().unwrap();
                    lat.push((now_ns().saturating_sub(sent)) as f64 / 1e6);
                }
                (lat, Instant::now())
            })
        })
        .collect();
    ready.wait();
    let (mut publisher, _) = Ws::connect(a, None);
    let pad = "x".repeat(payload.saturating_sub(20));
    let start = Instant::now();
    let mut acked = 0usize;
    for i in 0..messages {
        publisher.send(&format!("pub {topic} {}:{pad}", now_ns()));
        if i + 1 - acked >= window {
            publisher.until(&format!("ok pub {topic} "));
            acked += 1;
        }
    }
    while acked < messages {
        publisher.until(&format!("ok pub {topic} "));
        acked += 1;
    }
    let mut fan_lat = Vec::new();
    let mut last = start;
    for h in handles {
        let (l, end) = h.join().unwrap_or_else(|_| die("a subscriber failed"));
        fan_lat.extend(l);
        last = last.max(end);
    }
    let deliveries = (subs * messages) as f64;
    let per_s = deliveries / (last - start).as_secs_f64();
    println!(
        "resume_p50_ms={:.2} resume_p99_ms={:.2} resumes_per_s={:.0} fanout_deliveries_per_s={:.0} fanout_publishes_per_s={:.0} fanout_p50_ms={:.2} fanout_p99_ms={:.2}",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        resumes_per_s,
        per_s,
        messages as f64 / (last - start).as_secs_f64(),
        pct(&mut fan_lat, 0.5),
        pct(&mut fan_lat, 0.99),
    );
}
