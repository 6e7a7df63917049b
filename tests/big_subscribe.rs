//! A big subscribe is not interrupted (DESIGN §6, "Topics at scale"; issue
//! 21): 2,000 clients subscribe to one topic at the default presence cap
//! (1,000) with short heartbeats (`--ping-interval 2s --pong-timeout 1s`).
//! Every client gets its `ok sub`, no connection is cut (no close, no
//! heartbeat timeout, no slow-consumer cut), presence lines stop at the cap
//! (after its `ok sub`, the k-th member sees the joins of members
//! k+1..=1000, so those join counts are exactly 999, 998, …, 1 and 1,001
//! zeros; the joins announced are those of members 2..=1000, each once),
//! and one publish afterwards reaches every subscriber exactly once.
//!
//! A client whose `sub` is still on its way to the topic's owner already
//! listens on its core and may get joins of members before it; those are
//! not counted in the series above (only checked to be distinct members).
//!
//! The test process holds the 2,000 client sockets. A few threads each
//! drive a share of them with `poll(2)`, answering every ping at once, so a
//! heartbeat cut can only be the gateway's doing. Connections are opened
//! in batches; every wait is bounded and generous; nothing is timed.

mod common;
mod gw;

use common::{accept_for, for_each_driver, frame, rand_key, Gateway, OP_PONG, OP_TEXT};
use gw::{api_publish, args, is_peer_id, topic, NODE, TOKEN};
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CLIENTS: usize = 2000;
const WORKERS: usize = 4;
const BATCH: usize = 50;
const _: () = assert!(CLIENTS % WORKERS == 0);
/// The default `--presence-max-members`.
const CAP: usize = 1000;
/// Bound of each phase (connect all, subscribe all, deliver the message).
const PHASE: Duration = Duration::from_secs(60);
const PAYLOAD: &str = "to-every-subscriber";

/// What the workers and the main thread share.
#[derive(Default)]
struct Shared {
    subscribed: AtomicUsize,
    delivered: AtomicUsize,
    /// Set by the main thread: stop servicing and return.
    stop: AtomicBool,
    /// Set by anyone on a failure: everybody stops early.
    failed: AtomicBool,
}

/// One client connection, driven without blocking.
struct Peer {
    name: String,
    stream: TcpStream,
    key: String,
    buf: Vec<u8>,
    pos: usize,
    upgraded: bool,
    /// Our peer id, from the hello.
    peer: Option<u64>,
    ok_sub: Option<u64>,
    joins: Vec<u64>,
    /// How many of `joins` came before its own `ok sub`.
    joins_before_ok: usize,
    msgs: Vec<String>,
    failure: Option<String>,
}

fn parse_peer(s: &str) -> Option<u64> {
    if is_peer_id(s) {
        u64::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

impl Peer {
    fn connect(addr: SocketAddr, name: String) -> Result<Peer, String> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| format!("{name}: connect {addr}: {e}"))?;
        stream.set_nodelay(true).unwrap();
        let key = rand_key();
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        (&stream)
            .write_all(req.as_bytes())
            .map_err(|e| format!("{name}: writing the upgrade: {e}"))?;
        stream.set_nonblocking(true).unwrap();
        Ok(Peer {
            name,
            stream,
            key,
            buf: Vec::new(),
            pos: 0,
            upgraded: false,
            peer: None,
            ok_sub: None,
            joins: Vec::new(),
            joins_before_ok: 0,
            msgs: Vec::new(),
            failure: None,
        })
    }

    fn fail(&mut self, shared: &Shared, why: String) {
        if self.failure.is_none() {
            self.failure = Some(format!("{}: {why}", self.name));
        }
        shared.failed.store(true, Ordering::SeqCst);
    }

    /// Write all of `bytes` to the non-blocking socket (small frames: the
    /// send buffer has room; retried briefly should it not).
    fn write(&mut self, bytes: &[u8], shared: &Shared) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut off = 0;
        while off < bytes.len() {
            match (&self.stream).write(&bytes[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => {
                    self.fail(shared, format!("write failed: {e}"));
                    return;
                }
            }
        }
    }

    /// Read what is there and handle every complete frame.
    fn service(&mut self, t: &str, tmp: &mut [u8], shared: &Shared) {
        loop {
            match (&self.stream).read(tmp) {
                Ok(0) => {
                    self.fail(shared, "the gateway closed the connection (EOF)".into());
                    return;
                }
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(shared, format!("read error: {e}"));
                    return;
                }
            }
        }
        if !self.upgraded {
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            let accept = format!("Sec-WebSocket-Accept: {}", accept_for(&self.key));
            if !head.starts_with("HTTP/1.1 101 ") || !head.split("\r\n").any(|l| l == accept) {
                self.fail(shared, format!("the upgrade was answered {head:?}"));
                return;
            }
            self.upgraded = true;
            self.pos = end + 4;
        }
        while let Some((opcode, fin, payload)) = self.take_frame() {
            if !fin {
                self.fail(shared, "a fragmented server frame".into());
                return;
            }
            match opcode {
                0x1 => match String::from_utf8(payload) {
                    Ok(line) => self.on_line(t, line, shared),
                    Err(_) => self.fail(shared, "a text frame that is not UTF-8".into()),
                },
                0x9 => {
                    let pong = frame(true, OP_PONG, &payload);
                    self.write(&pong, shared);
                }
                0xA => {}
                0x8 => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    let reason =
                        String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned();
                    self.fail(
                        shared,
                        format!("the gateway closed with {code:?} {reason:?}"),
                    );
                }
                op => self.fail(shared, format!("unexpected opcode {op:#x}")),
            }
            if self.failure.is_some() {
                return;
            }
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 1 << 16 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// One complete server frame from the buffer: (opcode, fin, payload).
    fn take_frame(&mut self) -> Option<(u8, bool, Vec<u8>)> {
        let b = &self.buf[self.pos..];
        if b.len() < 2 {
            return None;
        }
        let (fin, opcode) = (b[0] & 0x80 != 0, b[0] & 0x0f);
        assert_eq!(b[1] & 0x80, 0, "{}: a masked server frame", self.name);
        let (len, hdr) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        assert!(
            len <= 1 << 20,
            "{}: implausible frame length {len}",
            self.name
        );
        if b.len() < hdr + len {
            return None;
        }
        let payload = b[hdr..hdr + len].to_vec();
        self.pos += hdr + len;
        Some((opcode, fin, payload))
    }

    fn on_line(&mut self, t: &str, line: String, shared: &Shared) {
        if self.peer.is_none() {
            let w: Vec<&str> = line.split(' ').collect();
            match (w.as_slice(), w.get(1).and_then(|p| parse_peer(p))) {
                (["hello", _, "new", node], Some(p)) if *node == NODE => self.peer = Some(p),
                _ => self.fail(
                    shared,
                    format!("expected `hello <peer> new {NODE}`, got {line:?}"),
                ),
            }
            return;
        }
        if let Some(seq) = line.strip_prefix(&format!("ok sub {t} ")) {
            match (self.ok_sub, seq.parse::<u64>()) {
                (None, Ok(s)) => {
                    self.ok_sub = Some(s);
                    shared.subscribed.fetch_add(1, Ordering::SeqCst);
                }
                _ => self.fail(shared, format!("a second or malformed {line:?}")),
            }
        } else if let Some(p) = line.strip_prefix(&format!("join {t} ")) {
            match parse_peer(p) {
                Some(p) if Some(p) != self.peer => {
                    self.joins.push(p);
                    if self.ok_sub.is_none() {
                        self.joins_before_ok += 1;
                    }
                }
                _ => self.fail(
                    shared,
                    format!("a join naming itself or malformed: {line:?}"),
                ),
            }
        } else if line.starts_with(&format!("msg {t} ")) {
            if line != format!("msg {t} 1 {PAYLOAD}") {
                self.fail(shared, format!("unexpected message {line:?}"));
            } else if self.msgs.is_empty() {
                shared.delivered.fetch_add(1, Ordering::SeqCst);
            }
            self.msgs.push(line);
        } else {
            self.fail(shared, format!("unexpected line {line:?}"));
        }
    }
}

/// `poll(2)` over `peers` for up to `wait`, then service the readable ones.
fn service_all(peers: &mut [Peer], t: &str, tmp: &mut [u8], shared: &Shared, wait: Duration) {
    if peers.is_empty() {
        std::thread::sleep(wait);
        return;
    }
    let mut fds: Vec<libc::pollfd> = peers
        .iter()
        .map(|p| libc::pollfd {
            fd: p.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()`
    // pollfd entries for the duration of the call.
    let n = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            wait.as_millis() as i32,
        )
    };
    if n <= 0 {
        return;
    }
    for (p, fd) in peers.iter_mut().zip(&fds) {
        if fd.revents != 0 && p.failure.is_none() {
            p.service(t, tmp, shared);
        }
    }
}

/// Services `peers` until `done(peers)` holds, the test fails elsewhere, or
/// `within` passes (a failure naming `what`).
fn service_until(
    peers: &mut [Peer],
    t: &str,
    tmp: &mut [u8],
    shared: &Shared,
    within: Duration,
    what: &str,
    done: impl Fn(&[Peer]) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(f) = peers.iter().find_map(|p| p.failure.clone()) {
            return Err(f);
        }
        if done(peers) {
            return Ok(());
        }
        if shared.failed.load(Ordering::SeqCst) {
            return Err("stopped: another worker failed".into());
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {within:?} waiting for {what}"));
        }
        service_all(peers, t, tmp, shared, Duration::from_millis(20));
    }
}

/// One worker: opens its `count` connections in batches (servicing the ones
/// it has meanwhile), subscribes them all, then keeps answering until told
/// to stop. Returns its peers (with what they saw) and its failure, if any.
fn worker(
    w: usize,
    count: usize,
    addr: SocketAddr,
    t: &str,
    shared: &Shared,
) -> (Vec<Peer>, Option<String>) {
    let mut peers: Vec<Peer> = Vec::with_capacity(count);
    let mut tmp = vec![0u8; 64 * 1024];
    let mut run = || -> Result<(), String> {
        // Connect in batches; each batch's hellos arrive before the next.
        while peers.len() < count {
            let n = BATCH.min(count - peers.len());
            for _ in 0..n {
                let name = format!("w{w}/c{}", peers.len());
                peers.push(Peer::connect(addr, name)?);
            }
            service_until(&mut peers, t, &mut tmp, shared, PHASE, "hellos", |ps| {
                ps.iter().all(|p| p.peer.is_some())
            })?;
        }
        // Subscribe in batches.
        let sub = frame(true, OP_TEXT, format!("sub {t}").as_bytes());
        for start in (0..count).step_by(BATCH) {
            for p in &mut peers[start..(start + BATCH).min(count)] {
                p.write(&sub, shared);
            }
            service_all(&mut peers, t, &mut tmp, shared, Duration::ZERO);
        }
        service_until(
            &mut peers,
            t,
            &mut tmp,
            shared,
            PHASE,
            "every `ok sub`",
            |ps| ps.iter().all(|p| p.ok_sub.is_some()),
        )?;
        // Keep answering pings and reading until the main thread is done.
        service_until(
            &mut peers,
            t,
            &mut tmp,
            shared,
            3 * PHASE,
            "the stop",
            |_| shared.stop.load(Ordering::SeqCst),
        )
    };
    let r = run().err();
    if r.is_some() {
        shared.failed.store(true, Ordering::SeqCst);
    }
    (peers, r)
}

/// Tells the workers to stop when dropped (so a panic in the main thread
/// does not leave the scope waiting for them).
struct StopOnDrop<'a>(&'a Shared);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

fn closes_and_cuts(gw: &Gateway) -> (f64, f64, f64) {
    let s = gw.scrape();
    (
        s.sum("wsgate_closes_total"),
        s.sum("wsgate_heartbeat_timeouts_total"),
        s.sum("wsgate_slow_consumer_closes_total"),
    )
}

/// Waits until `cond` holds, a worker failed, or `within` passes.
fn wait_phase(shared: &Shared, within: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !cond() {
        if shared.failed.load(Ordering::SeqCst) || Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn two_thousand_clients_subscribe_to_one_topic_without_a_cut() {
    let gw_args = args(&[
        "--ping-interval",
        "2s",
        "--pong-timeout",
        "1s",
        "--publish-token",
        TOKEN,
    ]);
    for_each_driver(&gw_args, |gw| {
        let t = topic("big");
        let shared = Shared::default();
        let started = Instant::now();
        let (results, phases) = std::thread::scope(|s| {
            let handles: Vec<_> = (0..WORKERS)
                .map(|w| {
                    // CLIENTS is a multiple of WORKERS.
                    let count = CLIENTS / WORKERS;
                    let (t, shared) = (&t, &shared);
                    std::thread::Builder::new()
                        .name(format!("big-sub-{w}"))
                        .spawn_scoped(s, move || worker(w, count, gw.addr, t, shared))
                        .expect("spawn worker")
                })
                .collect();
            // Whatever happens below (a panic included), the workers stop.
            let _stop = StopOnDrop(&shared);
            let mut phases = Vec::new();
            let all_subscribed = wait_phase(&shared, PHASE, || {
                shared.subscribed.load(Ordering::SeqCst) == CLIENTS
            });
            phases.push(format!(
                "subscribed: {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            if all_subscribed {
                let before = closes_and_cuts(gw);
                phases.push(format!(
                    "after subscribing: closes, heartbeat cuts, slow-consumer cuts = {before:?}"
                ));
                let seq = api_publish(gw, &t, PAYLOAD.as_bytes(), false);
                phases.push(format!("published seq {seq}"));
                wait_phase(&shared, PHASE, || {
                    shared.delivered.load(Ordering::SeqCst) == CLIENTS
                });
                phases.push(format!(
                    "delivered: {:.1} s",
                    started.elapsed().as_secs_f64()
                ));
                // One more heartbeat round with everybody subscribed, and
                // time for a duplicate to show.
                std::thread::sleep(Duration::from_millis(3500));
            }
            shared.stop.store(true, Ordering::SeqCst);
            let results: Vec<(Vec<Peer>, Option<String>)> = handles
                .into_iter()
                .map(|h| h.join().expect("worker thread panicked"))
                .collect();
            (results, phases)
        });
        eprintln!("[{}] {}", gw.driver.name(), phases.join("; "));

        let failures: Vec<&String> = results.iter().filter_map(|(_, f)| f.as_ref()).collect();
        let peers: Vec<&Peer> = results.iter().flat_map(|(p, _)| p.iter()).collect();
        let mut peer_failures: Vec<&String> =
            peers.iter().filter_map(|p| p.failure.as_ref()).collect();
        peer_failures.truncate(10);
        let (closes, heartbeat, slow) = closes_and_cuts(gw);
        assert!(
            failures.is_empty() && peer_failures.is_empty(),
            "[{}] after {:.1} s ({}): workers failed: {failures:?}; first client failures: \
             {peer_failures:?}; {} of {CLIENTS} subscribed, {} got the message; \
             closes {closes}, heartbeat timeouts {heartbeat}, slow-consumer closes {slow}",
            gw.driver.name(),
            started.elapsed().as_secs_f64(),
            phases.join("; "),
            shared.subscribed.load(Ordering::SeqCst),
            shared.delivered.load(Ordering::SeqCst),
        );
        assert_eq!(peers.len(), CLIENTS);
        assert_eq!(
            (closes, heartbeat, slow),
            (0.0, 0.0, 0.0),
            "no connection may be cut: wsgate_closes_total, wsgate_heartbeat_timeouts_total, \
             wsgate_slow_consumer_closes_total"
        );
        assert_eq!(
            gw.scrape().sum("wsgate_connections_active"),
            CLIENTS as f64,
            "every client is still connected"
        );

        // Everybody subscribed to a fresh topic and got the message once.
        let bad_sub: Vec<_> = peers
            .iter()
            .filter(|p| p.ok_sub != Some(0))
            .map(|p| (&p.name, p.ok_sub))
            .take(5)
            .collect();
        assert!(
            bad_sub.is_empty(),
            "`ok sub {t} 0` expected, got {bad_sub:?}"
        );
        let bad_msg: Vec<_> = peers
            .iter()
            .filter(|p| p.msgs.len() != 1)
            .map(|p| (&p.name, p.msgs.len()))
            .take(5)
            .collect();
        assert!(
            bad_msg.is_empty(),
            "every subscriber gets the message exactly once; (client, copies): {bad_msg:?}"
        );

        // Presence at the default cap: after its `ok sub`, the k-th member
        // sees 1000 - k joins (k <= 1000), later members none.
        let ours: HashSet<u64> = peers.iter().filter_map(|p| p.peer).collect();
        assert_eq!(ours.len(), CLIENTS, "peer ids are distinct");
        let mut counts: Vec<usize> = peers
            .iter()
            .map(|p| p.joins.len() - p.joins_before_ok)
            .collect();
        counts.sort_unstable();
        let mut want: Vec<usize> = vec![0; CLIENTS - CAP + 1];
        want.extend(1..CAP);
        let early: usize = peers.iter().map(|p| p.joins_before_ok).sum();
        eprintln!(
            "[{}] joins before the client's own `ok sub` (its sub in flight): {early}",
            gw.driver.name()
        );
        if counts != want {
            let total: usize = counts.iter().sum();
            let hist = |c: usize| counts.iter().filter(|&&x| x == c).count();
            panic!(
                "join lines per client after its `ok sub` should be 1,001 x 0 and 1..=999 once \
                 each (499,500 in all); got {total} in all, the largest counts {:?}, {} clients \
                 with none, {} with 1, {} with 999 ({early} more came before an `ok sub`)",
                &counts[counts.len().saturating_sub(5)..],
                hist(0),
                hist(1),
                hist(CAP - 1)
            );
        }
        let mut joined: HashSet<u64> = HashSet::new();
        for p in &peers {
            let mut seen = HashSet::new();
            for j in &p.joins {
                assert!(
                    ours.contains(j),
                    "{}: a join naming a stranger {j:016x}",
                    p.name
                );
                assert!(seen.insert(*j), "{}: two joins of {j:016x}", p.name);
                joined.insert(*j);
            }
        }
        // The members 2..=1000 in the order the topic took them; the first
        // one too when a client whose own `sub` was still in flight (already
        // listening on its core) heard its join.
        assert!(
            (CAP - 1..=CAP).contains(&joined.len()),
            "joins announce the first {CAP} members at most: {} announced",
            joined.len()
        );
    });
}
