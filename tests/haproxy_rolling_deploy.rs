//! End to end behind a real load balancer: HAProxy on loopback in front of
//! three wsgate nodes, configured as a stand-in for an AWS ALB target group
//! with `app_cookie` stickiness (`tests/edge/haproxy.cfg`: round robin, a
//! stick table that learns `WS_SESSION_ID` from the 101, a plain-HTTP health
//! check on `/ws-health`, `timeout tunnel`, an admin socket).
//!
//! One test, in three acts on the same fleet:
//! * (a) 30 first connections (no cookie) spread over all three nodes, and
//!   HAProxy learned each session id from the `Set-Cookie` of the raw 101;
//! * (b) those 30 clients reconnect 10 times each with their cookie: every
//!   reconnect lands on its node and says `resumed`;
//! * (c) rolling deploy of one node: server set to `maint` on HAProxy's admin
//!   socket (the ALB's deregistration), then SIGTERM to that node. Each of its
//!   clients gets close 1001 and a clean close handshake (no reset, no EOF
//!   without a close frame), reconnects through HAProxy and lands on another
//!   node, which then keeps it (`resumed` on the next reconnect); the node
//!   exits 0 within drain-timeout + 2 s; meanwhile a publisher and a
//!   subscriber on each remaining node see every message in order and in
//!   time, the other clients are never closed, and HAProxy served no 5xx.
//!
//! HAProxy comes from Debian's package, installed with apt-get when missing.
//! Loopback only; every read has a timeout, every wait a deadline; HAProxy and
//! the gateways are killed on drop.

mod common;
mod edge;
use common::*;
use edge::*;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// The node taken out in the rolling deploy.
const VICTIM: &str = "node-a";
const CLIENTS: usize = 30;
const RECONNECTS: usize = 10;
const DRAIN: Duration = Duration::from_secs(4);
/// The whole scenario (after HAProxy is installed) must fit in this.
const BUDGET: Duration = Duration::from_secs(60);
/// Longest acceptable publish-to-delivery time on a surviving node.
const MAX_LATENCY: Duration = Duration::from_millis(1000);

// ---------------------------------------------------------------------------
// The rolling-deploy roles
// ---------------------------------------------------------------------------

/// What a client of the drained node went through.
struct DrainOutcome {
    id: String,
    close_code: Option<u16>,
    close_reason: String,
    /// Since SIGTERM.
    close_after: Duration,
    /// Where the reconnect landed, and what the next reconnect said.
    moved_to: Hello,
    stuck_to: Hello,
    conn: Conn,
}

/// A client of the node being drained: waits for the close frame, completes
/// the close handshake, reconnects through the balancer with its cookie, and
/// reconnects once more to see that it stays on its new node.
fn ride_out_drain(
    lb: SocketAddr,
    mut conn: Conn,
    hello: Hello,
    term: Arc<OnceLock<Instant>>,
) -> DrainOutcome {
    let who = format!("client {} of {}", hello.id, hello.node);
    conn.stream
        .set_read_timeout(Some(DRAIN + Duration::from_secs(4)))
        .unwrap();
    let close = loop {
        match conn.try_read_frame() {
            Ok(Some(f)) if f.opcode == OP_CLOSE => break f,
            Ok(Some(f)) if f.opcode == OP_PING => conn.send_frame(true, OP_PONG, &f.payload),
            Ok(Some(f)) => panic!("{who}: unexpected {f:?} before the close frame"),
            Ok(None) => panic!("{who}: abnormal close: EOF without a close frame"),
            Err(e) => panic!(
                "{who}: abnormal close: {e} ({:?}) without a close frame",
                e.kind()
            ),
        }
    };
    let close_after = term.get().map(|t| t.elapsed()).unwrap_or_default();
    let close_code = close.close_code();
    let close_reason = String::from_utf8_lossy(close.payload.get(2..).unwrap_or(&[])).into_owned();
    // Echo the code, as RFC 6455 asks; 1001 keeps the session resumable.
    conn.send_frame(true, OP_CLOSE, &close_payload(1001, ""));
    match conn.try_read_frame() {
        Ok(None) => {}
        Ok(Some(f)) => panic!("{who}: {f:?} after the close handshake"),
        Err(e) => panic!(
            "{who}: abnormal end after the close handshake: {e} ({:?}) instead of EOF",
            e.kind()
        ),
    }
    drop(conn);
    let (c, moved_to) = upgrade(lb, Some(&hello.id));
    leave(c, &format!("{who} after moving"));
    let (conn, stuck_to) = upgrade(lb, Some(&hello.id));
    DrainOutcome {
        id: hello.id,
        close_code,
        close_reason,
        close_after,
        moved_to,
        stuck_to,
        conn,
    }
}

/// What a publisher on a surviving node saw.
#[derive(Debug)]
struct PubReport {
    node: String,
    published: u64,
    /// When the first and the last `ok pub` arrived.
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    first_seq: u64,
    last_seq: u64,
    max_rtt: Duration,
}

/// Publishes `pub live.<node> <n>:<ms since base>` every few milliseconds
/// until `stop`, checking each `ok pub` (consecutive sequence numbers).
/// Stores the last sequence number in `last` when done.
fn publisher(
    node: String,
    mut conn: Conn,
    base: Instant,
    stop: Arc<AtomicBool>,
    last: Arc<AtomicU64>,
) -> (Conn, PubReport) {
    let topic = format!("live.{node}");
    let mut report = PubReport {
        node: node.clone(),
        published: 0,
        first_at: None,
        last_at: None,
        first_seq: 0,
        last_seq: 0,
        max_rtt: Duration::ZERO,
    };
    while !stop.load(Ordering::SeqCst) {
        let n = report.published + 1;
        let sent = Instant::now();
        let line = format!("pub {topic} {n}:{}", base.elapsed().as_millis());
        conn.send_frame(true, OP_TEXT, line.as_bytes());
        let ok = next_text_starting(&mut conn, "ok pub ", &format!("{node}: ok pub #{n}"));
        report.max_rtt = report.max_rtt.max(sent.elapsed());
        let seq: u64 = ok
            .strip_prefix(&format!("ok pub {topic} "))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{node}: unexpected answer {ok:?} to {line:?}"));
        if report.published == 0 {
            report.first_seq = seq;
        } else {
            assert_eq!(seq, report.last_seq + 1, "{node}: sequence numbers skip");
        }
        report.last_seq = seq;
        report.published = n;
        report.first_at.get_or_insert_with(Instant::now);
        report.last_at = Some(Instant::now());
        std::thread::sleep(Duration::from_millis(15));
    }
    last.store(report.last_seq, Ordering::SeqCst);
    (conn, report)
}

/// What a subscriber on a surviving node saw.
#[derive(Debug)]
struct SubReport {
    node: String,
    received: u64,
    first_seq: u64,
    last_seq: u64,
    max_latency: Duration,
}

/// Reads `msg live.<node> <seq> <n>:<ms>` until the publisher's last
/// sequence number arrives; every message in order, none missing, each
/// delivered within `MAX_LATENCY`.
fn subscriber(
    node: String,
    mut conn: Conn,
    base: Instant,
    last: Arc<AtomicU64>,
    deadline: Instant,
) -> (Conn, SubReport) {
    let topic = format!("live.{node}");
    let mut report = SubReport {
        node: node.clone(),
        received: 0,
        first_seq: 0,
        last_seq: 0,
        max_latency: Duration::ZERO,
    };
    let mut expected_n = 1u64;
    // Short reads, so the loop sees `last` being set.
    conn.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    loop {
        let target = last.load(Ordering::SeqCst);
        if target != 0 && report.last_seq >= target {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{node}: subscriber stuck at seq {} (publisher's last: {target})",
            report.last_seq
        );
        let f = match conn.try_read_frame() {
            Ok(Some(f)) => f,
            Ok(None) => panic!("{node}: subscriber got EOF"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => panic!("{node}: subscriber: {e} ({:?})", e.kind()),
        };
        match f.opcode {
            OP_PING => {
                conn.send_frame(true, OP_PONG, &f.payload);
                continue;
            }
            OP_TEXT => {}
            _ => panic!("{node}: subscriber got {f:?}"),
        }
        let text = String::from_utf8(f.payload).unwrap();
        let Some(rest) = text.strip_prefix(&format!("msg {topic} ")) else {
            continue; // join / leave notices
        };
        let mut it = rest.splitn(2, ' ');
        let seq: u64 = it.next().and_then(|s| s.parse().ok()).unwrap();
        let (n, ms) = it
            .next()
            .and_then(|p| p.split_once(':'))
            .and_then(|(n, ms)| Some((n.parse::<u64>().ok()?, ms.parse::<u64>().ok()?)))
            .unwrap_or_else(|| panic!("{node}: malformed message {text:?}"));
        if report.received == 0 {
            report.first_seq = seq;
        } else {
            assert_eq!(seq, report.last_seq + 1, "{node}: a message is missing");
        }
        assert_eq!(n, expected_n, "{node}: payloads out of order");
        expected_n += 1;
        let latency = base.elapsed().saturating_sub(Duration::from_millis(ms));
        report.max_latency = report.max_latency.max(latency);
        report.last_seq = seq;
        report.received += 1;
    }
    conn.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    (conn, report)
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

fn start_node(name: &str, driver: Driver) -> Gateway {
    Gateway::start_exact(
        driver,
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--cores",
            "1",
            "--node-id",
            name,
            "--cookie-secure",
            "false",
            "--drain-timeout",
            "4s",
        ],
        &[],
    )
}

/// Starts a node with the spawning thread's CPU affinity set to `cpu` (the
/// child inherits it), so that `--cores 1` nodes do not all pin to CPU 0.
fn start_node_on(name: &str, driver: Driver, cpu: usize) -> Gateway {
    // SAFETY: plain syscalls on this thread's own affinity mask.
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, size, &mut old) != 0 {
            return start_node(name, driver);
        }
        let allowed: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &old))
            .collect();
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(allowed[cpu % allowed.len()], &mut one);
        libc::sched_setaffinity(0, size, &one);
        let gw = std::panic::catch_unwind(|| start_node(name, driver));
        libc::sched_setaffinity(0, size, &old);
        gw.unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

fn sum_metric(nodes: &[(&str, &Gateway)], series: &str) -> f64 {
    nodes.iter().map(|(_, g)| g.scrape().val(series)).sum()
}

#[test]
fn haproxy_sticky_sessions_and_rolling_deploy() {
    // Installing HAProxy (first run only) is not part of the time budget.
    haproxy_binary();
    let started = Instant::now();

    // Node a (the one drained later) and c on io_uring, b on epoll.
    let drivers = [Driver::IoUring, Driver::Legacy, Driver::IoUring];
    let gateways: Vec<Gateway> = NODES
        .iter()
        .zip(drivers)
        .enumerate()
        .map(|(i, (name, d))| start_node_on(name, d, i))
        .collect();
    let by_name: BTreeMap<&str, &Gateway> = NODES.iter().copied().zip(gateways.iter()).collect();
    let all: Vec<(&str, &Gateway)> = by_name.iter().map(|(n, g)| (*n, *g)).collect();
    let servers: Vec<(&str, SocketAddr)> = all.iter().map(|(n, g)| (*n, g.addr)).collect();
    for (_, g) in &all {
        if let Some(l) = g.logs().iter().find(|l| l.contains("event=listening")) {
            eprintln!("{l}");
        }
    }
    let hap = Haproxy::start(&servers);
    let lb = hap.addr;
    eprintln!("haproxy on {lb} in front of {servers:?}");

    assert!(
        wait_until(Duration::from_secs(5), || NODES
            .iter()
            .all(|n| hap.server_status(n) == "UP")),
        "HAProxy's health checks on {HEALTH_PATH} did not mark every node UP: {:?}",
        NODES.map(|n| (n, hap.server_status(n)))
    );

    // (a) First connections: round robin over all three nodes, and the stick
    // table learned each id from the Set-Cookie of the 101.
    let mut clients: Vec<(Conn, Hello)> = (0..CLIENTS).map(|_| upgrade(lb, None)).collect();
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for (_, h) in &clients {
        assert_eq!(
            h.state, "new",
            "a first connection resumed something: {h:?}"
        );
        *spread.entry(h.node.clone()).or_default() += 1;
    }
    eprintln!("(a) first connections per node: {spread:?}");
    for n in NODES {
        assert!(
            spread.get(n).copied().unwrap_or(0) >= CLIENTS / NODES.len() / 2,
            "(a) first connections are not spread over every node: {spread:?}"
        );
    }
    let table = hap.stick_table();
    for (_, h) in &clients {
        assert_eq!(
            table.get(&h.id),
            Some(&h.node),
            "(a) HAProxy did not learn session {} -> {} from the 101's Set-Cookie",
            h.id,
            h.node
        );
    }

    // (b) 30 clients x 10 reconnects with their cookie, in parallel: each
    // lands on its node and resumes.
    let handles: Vec<_> = clients
        .drain(..)
        .enumerate()
        .map(|(i, (conn, hello))| {
            spawn(format!("reconnect-{i}"), move || {
                let mut conn = conn;
                for r in 1..=RECONNECTS {
                    leave(conn, &format!("client {i} before reconnect {r}"));
                    let (c, again) = upgrade(lb, Some(&hello.id));
                    assert_eq!(
                        (again.node.as_str(), again.state.as_str()),
                        (hello.node.as_str(), "resumed"),
                        "client {i} reconnect {r}: landed on {} ({}) instead of resuming on {}",
                        again.node,
                        again.state,
                        hello.node
                    );
                    conn = c;
                }
                (conn, hello)
            })
        })
        .collect();
    let clients = join_all("reconnecting client", handles);
    let reconnects = (CLIENTS * RECONNECTS) as f64;
    assert!(
        wait_until(Duration::from_secs(3), || sum_metric(
            &all,
            "wsgate_sticky_hits_total"
        ) == reconnects),
        "(b) wsgate_sticky_hits_total over the nodes: {} (expected {reconnects})",
        sum_metric(&all, "wsgate_sticky_hits_total")
    );
    assert_eq!(
        sum_metric(&all, "wsgate_sticky_misses_total"),
        0.0,
        "(b) routing drift"
    );
    eprintln!(
        "(b) {CLIENTS} clients x {RECONNECTS} reconnects: all resumed on their node ({:.1} s so far)",
        started.elapsed().as_secs_f64()
    );

    // (c) Rolling deploy of VICTIM.
    let mut victims = Vec::new();
    let mut survivors: BTreeMap<String, Vec<(Conn, Hello)>> = BTreeMap::new();
    for (c, h) in clients {
        if h.node == VICTIM {
            victims.push((c, h));
        } else {
            survivors.entry(h.node.clone()).or_default().push((c, h));
        }
    }
    assert!(victims.len() >= 3, "too few clients on {VICTIM}");

    // A publisher and a subscriber on each remaining node, running throughout.
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut streams = Vec::new();
    let mut idle: Vec<(Conn, Hello)> = Vec::new();
    for (node, mut conns) in survivors {
        assert!(conns.len() >= 3, "too few clients on {node}");
        let (mut sub_conn, _) = conns.pop().unwrap();
        let (pub_conn, _) = conns.pop().unwrap();
        idle.extend(conns);
        let topic = format!("live.{node}");
        sub_conn.send_frame(true, OP_TEXT, format!("sub {topic}").as_bytes());
        let ok = next_text_starting(&mut sub_conn, "ok sub ", "ok sub");
        assert!(ok.starts_with(&format!("ok sub {topic}")), "{ok:?}");
        let last = Arc::new(AtomicU64::new(0));
        let sub = {
            let (node, last) = (node.clone(), last.clone());
            let deadline = Instant::now() + Duration::from_secs(30);
            spawn(format!("sub-{node}"), move || {
                subscriber(node, sub_conn, base, last, deadline)
            })
        };
        let publ = {
            let (node, stop) = (node.clone(), stop.clone());
            spawn(format!("pub-{node}"), move || {
                publisher(node, pub_conn, base, stop, last)
            })
        };
        streams.push((publ, sub));
    }
    std::thread::sleep(Duration::from_millis(300));

    // Deregister: maintenance on the runtime API. No new connection may go there.
    let t_maint = Instant::now();
    let answer = hap.admin(&format!("set server {BACKEND}/{VICTIM} state maint"));
    assert!(
        answer.trim().is_empty(),
        "set server ... state maint: {answer:?}"
    );
    assert!(
        wait_until(Duration::from_secs(2), || hap.server_status(VICTIM)
            == "MAINT"),
        "{VICTIM} is {} instead of MAINT",
        hap.server_status(VICTIM)
    );
    for i in 0..2 * NODES.len() {
        let (c, h) = upgrade(lb, None);
        assert_ne!(
            h.node, VICTIM,
            "new connection {i} went to the node in maintenance"
        );
        leave(c, "probe after maint");
    }

    // SIGTERM the node; its clients ride it out in parallel.
    let term = Arc::new(OnceLock::new());
    let n_victims = victims.len();
    let victim_threads: Vec<_> = victims
        .into_iter()
        .enumerate()
        .map(|(i, (c, h))| {
            let term = term.clone();
            spawn(format!("victim-{i}"), move || {
                ride_out_drain(lb, c, h, term)
            })
        })
        .collect();
    let victim_gw = by_name[VICTIM];
    let t_term = Instant::now();
    term.set(t_term).unwrap();
    victim_gw.send_signal("TERM");
    let exit = victim_gw.wait_exit(DRAIN + Duration::from_secs(2));
    let (status, exited_at) = exit.unwrap_or_else(|| {
        panic!(
            "{VICTIM} did not exit within drain-timeout + 2 s ({:?})",
            DRAIN + Duration::from_secs(2)
        )
    });
    assert!(
        status.success(),
        "{VICTIM} exited with {status}, expected 0"
    );
    let exit_after = exited_at - t_term;
    let outcomes = join_all("drained client", victim_threads);
    let moved_at = Instant::now();

    let mut moved: BTreeMap<String, usize> = BTreeMap::new();
    for o in &outcomes {
        assert_eq!(
            (o.close_code, o.close_reason.as_str()),
            (Some(1001), "draining"),
            "client {} of {VICTIM}: close frame",
            o.id
        );
        assert!(
            o.close_after <= DRAIN,
            "client {}: close frame {:?} after SIGTERM",
            o.id,
            o.close_after
        );
        assert_eq!(o.moved_to.id, o.id);
        assert_ne!(
            o.moved_to.node, VICTIM,
            "client {} reconnected to the drained node",
            o.id
        );
        assert_eq!(
            o.moved_to.state, "new",
            "sessions are node-local: the move cannot resume"
        );
        assert_eq!(
            (o.stuck_to.node.as_str(), o.stuck_to.state.as_str()),
            (o.moved_to.node.as_str(), "resumed"),
            "client {}: after moving, the balancer must keep it on its new node",
            o.id
        );
        *moved.entry(o.moved_to.node.clone()).or_default() += 1;
    }
    let last_close = outcomes.iter().map(|o| o.close_after).max().unwrap();
    eprintln!(
        "(c) {n_victims} clients of {VICTIM}: close 1001 within {:.2} s of SIGTERM, moved to {moved:?}; \
         {VICTIM} exited 0 after {:.2} s",
        last_close.as_secs_f64(),
        exit_after.as_secs_f64()
    );
    let drain_end = victim_gw
        .logs()
        .into_iter()
        .find(|l| l.contains("event=drain_end"))
        .unwrap_or_else(|| panic!("no drain_end line in {VICTIM}'s log"));
    assert!(
        drain_end.contains(" cut=0"),
        "{VICTIM} had to cut connections: {drain_end}"
    );
    // The moved clients were routing drift for their new node: a miss each.
    let remaining: Vec<(&str, &Gateway)> =
        all.iter().copied().filter(|(n, _)| *n != VICTIM).collect();
    assert!(
        wait_until(Duration::from_secs(3), || {
            sum_metric(&remaining, "wsgate_sticky_misses_total") == n_victims as f64
        }),
        "wsgate_sticky_misses_total on the remaining nodes: {} (expected {n_victims})",
        sum_metric(&remaining, "wsgate_sticky_misses_total")
    );

    // Keep streaming a little past the moves, then stop and check the streams.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let mut kept = Vec::new();
    for (publ, sub) in streams {
        let (pc, p) = join_all("publisher", vec![publ]).pop().unwrap();
        let (sc, s) = join_all("subscriber", vec![sub]).pop().unwrap();
        eprintln!(
            "(c) {}: published {} (seq {}..={}, max rtt {:?}); {} subscriber got {} (seq {}..={}, max latency {:?})",
            p.node, p.published, p.first_seq, p.last_seq, p.max_rtt, s.node, s.received, s.first_seq, s.last_seq,
            s.max_latency
        );
        // It ran throughout: before the node was taken out, and past the
        // moment its last client had moved and it had exited.
        assert!(
            p.first_at.is_some_and(|t| t < t_maint) && p.last_at.is_some_and(|t| t > moved_at),
            "{}: the publisher did not cover the whole deploy",
            p.node
        );
        assert_eq!(
            (s.first_seq, s.last_seq, s.received),
            (p.first_seq, p.last_seq, p.published),
            "{}: the subscriber must get every message",
            p.node
        );
        assert!(
            s.max_latency <= MAX_LATENCY && p.max_rtt <= MAX_LATENCY,
            "{}: service stalled during the deploy (latency {:?}, rtt {:?})",
            p.node,
            s.max_latency,
            p.max_rtt
        );
        kept.push(pc);
        kept.push(sc);
    }

    // Every other client of the remaining nodes is still open and served.
    for (i, (mut c, h)) in idle.into_iter().enumerate() {
        let topic = format!("probe.{i}");
        c.send_frame(true, OP_TEXT, format!("sub {topic}").as_bytes());
        let ok = next_text(&mut c, &format!("idle client {} on {}", h.id, h.node));
        assert!(
            ok.starts_with(&format!("ok sub {topic}")),
            "idle client on {}: {ok:?}",
            h.node
        );
        kept.push(c);
    }
    for o in outcomes {
        kept.push(o.conn);
    }

    // The balancer served no 5xx at all (a 502 is what a bad deploy looks
    // like from the client side).
    let five_xx = hap.stat("edge", "FRONTEND", "hrsp_5xx");
    assert_eq!(five_xx, "0", "HAProxy answered 5xx responses");
    drop(kept);

    let elapsed = started.elapsed();
    eprintln!("whole scenario: {:.1} s", elapsed.as_secs_f64());
    assert!(elapsed < BUDGET, "took {elapsed:?}, budget {BUDGET:?}");
}
