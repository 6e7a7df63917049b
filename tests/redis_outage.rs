//! Redis going away must not take a node down with it. Two nodes on one
//! private redis-server with `--redis-timeout 500ms`:
//!
//! * `redis_killed_then_restarted`: the redis-server is killed (SIGKILL).
//!   Open connections stay; local pub/sub on one node keeps delivering, each
//!   answer within the timeout plus a margin; a local drop-and-resume works;
//!   new connections are served; health stays 200; `wsgate_redis_up` drops to
//!   0 (and `event=redis_down` is logged) within a few seconds. A fresh
//!   redis-server on the same port: `wsgate_redis_up` is back to 1 (and
//!   `event=redis_up`) within a bounded time, by itself, and a publish on one
//!   node reaches subscribers on the other again (a new topic, and the topic
//!   that was subscribed before the outage).
//! * `redis_hung_then_back`: the redis-server is frozen (SIGSTOP: its sockets
//!   stay open, nothing is answered). Every request is answered within the
//!   timeout plus a margin, `wsgate_redis_up` drops to 0; after SIGCONT it
//!   is back to 1 and cross-node fan-out works again.

mod common;
mod edge;
mod gw;
mod redis;

use common::{wait_until, Driver, Gateway};
use redis::*;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_millis(500);
/// What "answered within the Redis timeout" is allowed on top of it (debug
/// build, two CPUs).
const MARGIN: Duration = Duration::from_millis(700);
/// How fast an outage must show in `wsgate_redis_up`.
const DETECT: Duration = Duration::from_secs(5);
/// How fast a node must be back on Redis once it is reachable (reconnect
/// backoff at most 2 s, plus slack).
const RECOVER: Duration = Duration::from_secs(8);
/// How long Redis stays dead in `redis_killed_then_restarted`.
const OUTAGE: Duration = Duration::from_secs(4);

fn node(name: &str, driver: Driver, url: &str) -> Gateway {
    start_node(name, driver, url, &["--redis-timeout", "500ms"])
}

/// `pub <topic> <payload>` from a subscribed client: its own `msg` then `ok
/// pub`, both within the timeout + margin. Returns the seq.
fn timed_pub(ws: &mut Ws, t: &str, payload: &str) -> u64 {
    let sent = Instant::now();
    ws.send_text(&format!("pub {t} {payload}"));
    let mut skipped = Vec::new();
    let ok = ws.reply(&format!("ok pub {t} "), TIMEOUT + MARGIN, &mut skipped);
    let seq: u64 = ok.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(
        skipped,
        vec![format!("msg {t} {seq} {payload}")],
        "{}: its own message, then `ok pub`",
        ws.name
    );
    let took = sent.elapsed();
    assert!(
        took <= TIMEOUT + MARGIN,
        "{}: `pub` answered after {took:?} (redis timeout {TIMEOUT:?})",
        ws.name
    );
    seq
}

/// The next line must be the `msg` of `t` with `payload`; returns its seq.
fn expect_payload(ws: &mut Ws, t: &str, payload: &str, wait: Duration) -> u64 {
    let l = ws.data_line(wait, &format!("msg {t} <seq> {payload}"));
    match parse_msg(&l) {
        Some((tt, seq, p)) if tt == t && p == payload => seq,
        _ => panic!("{}: expected `msg {t} <seq> {payload}`, got {l:?}", ws.name),
    }
}

/// Reads lines until the `msg` of `t` with `payload` (other messages of `t`
/// are allowed before it); returns its seq and what was skipped.
fn find_payload(ws: &mut Ws, t: &str, payload: &str, wait: Duration) -> (u64, Vec<String>) {
    let deadline = Instant::now() + wait;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = match ws.next_until(Instant::now() + left) {
            Ok(Ev::Text(l)) => l,
            other => panic!(
                "{}: waiting {wait:?} for `msg {t} <seq> {payload}`: {other:?}; before it: {skipped:?}",
                ws.name
            ),
        };
        match parse_msg(&l) {
            Some((tt, seq, p)) if tt == t && p == payload => return (seq, skipped),
            _ if l.starts_with("join ") || l.starts_with("leave ") => {}
            _ => skipped.push(l),
        }
    }
}

/// Health answers 200 `ok`, quickly.
fn healthy_fast(gw: &Gateway, name: &str) {
    let t = Instant::now();
    gw.assert_healthy();
    assert!(
        t.elapsed() <= TIMEOUT + MARGIN,
        "{name}: /ws-health took {:?}",
        t.elapsed()
    );
}

/// A cross-node round: `from` publishes a new message to `t`; `to` gets it.
fn cross_node(from: &mut Ws, to: &mut Ws, t: &str, payload: &str) {
    from.send_text(&format!("pub {t} {payload}"));
    let (seq, skipped) = find_payload(to, t, payload, WAIT);
    eprintln!(
        "{} -> {}: {payload:?} arrived as seq {seq} (skipped before it: {skipped:?})",
        from.name, to.name
    );
    // The publisher is subscribed too: its own message and `ok pub`.
    let mut skipped = Vec::new();
    let ok = from.reply(&format!("ok pub {t} "), WAIT, &mut skipped);
    assert_eq!(ok, format!("ok pub {t} {seq}"), "{}", from.name);
}

#[test]
fn redis_killed_then_restarted() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let started = Instant::now();
    let a = node("out-a", Driver::IoUring, &redis.url());
    let b = node("out-b", Driver::Legacy, &redis.url());
    wait_redis_up(&a, "out-a", 1.0, Duration::from_secs(10));
    wait_redis_up(&b, "out-b", 1.0, Duration::from_secs(10));
    assert!(log_events(&a, "redis_down").is_empty() && log_events(&b, "redis_down").is_empty());
    let t = topic("outage");

    let mut a1 = Ws::fresh(a.addr, "a1");
    let mut a2 = Ws::fresh(a.addr, "a2");
    let mut b1 = Ws::fresh(b.addr, "b1");
    for ws in [&mut a1, &mut a2, &mut b1] {
        assert_eq!(ws.sub(&t), 0, "{}", ws.name);
    }
    // Before: a publish on A reaches both nodes.
    let s0 = timed_pub(&mut a1, &t, "before");
    assert_eq!(s0, 1);
    for ws in [&mut a2, &mut b1] {
        let (seq, skipped) = find_payload(ws, &t, "before", WAIT);
        assert_eq!((seq, skipped), (1, vec![]), "{}", ws.name);
    }

    // Redis dies.
    redis.kill();
    let killed = Instant::now();
    let down_a = wait_redis_up(&a, "out-a", 0.0, DETECT);
    let down_b = wait_redis_up(&b, "out-b", 0.0, DETECT);
    eprintln!("wsgate_redis_up 0 after {down_a:?} (out-a), {down_b:?} (out-b)");
    for (gw, n) in [(&a, "out-a"), (&b, "out-b")] {
        assert!(
            wait_until(Duration::from_secs(2), || !log_events(gw, "redis_down")
                .is_empty()),
            "{n}: no event=redis_down log line"
        );
        healthy_fast(gw, n);
    }

    // Local pub/sub on A keeps working over the open connections.
    let mut last = s0;
    for i in 0..5 {
        let p = format!("during-{i}");
        let seq = timed_pub(&mut a1, &t, &p);
        assert!(
            seq > last,
            "a1: seq {seq} after {last} (seqs must increase)"
        );
        let got = expect_payload(&mut a2, &t, &p, TIMEOUT + MARGIN);
        assert_eq!(got, seq, "a2 and a1 must agree on the seq");
        last = seq;
    }
    // A local drop and resume on A.
    let a2_id = a2.id().to_string();
    a2.drop_tcp();
    wait_for(WAIT, "out-a to see a2 go", || {
        a.scrape().sum("wsgate_connections_active") == 1.0
    });
    let mut missed = Vec::new();
    for i in 0..3 {
        let p = format!("away-{i}");
        missed.push((timed_pub(&mut a1, &t, &p), p));
    }
    let t_resume = Instant::now();
    let mut a2 = Ws::connect(a.addr, "a2", Some(&a2_id)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        t_resume.elapsed() <= TIMEOUT + MARGIN,
        "a2's resume took {:?}",
        t_resume.elapsed()
    );
    assert_eq!(
        (a2.hello.state.as_str(), a2.hello.node.as_str()),
        ("resumed", "out-a"),
        "a local resume while Redis is down: {:?}",
        a2.hello
    );
    for (seq, p) in &missed {
        let l = a2.data_line(TIMEOUT + MARGIN, "a missed message replayed");
        assert_eq!(
            l,
            format!("msg {t} {seq} {p}"),
            "a2's replay after the local resume"
        );
    }
    // New connections and commands are served.
    let mut n1 = Ws::connect(a.addr, "n1", None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n1.hello.state, "new");
    let fresh = topic("outage-local");
    let t_sub = Instant::now();
    assert_eq!(n1.sub(&fresh), 0);
    assert!(
        t_sub.elapsed() <= TIMEOUT + MARGIN,
        "sub took {:?}",
        t_sub.elapsed()
    );
    // B serves its own client too.
    let sb = timed_pub(&mut b1, &t, "from-b-during");
    eprintln!("during the outage: b1's local publish got seq {sb}");
    for (gw, n) in [(&a, "out-a"), (&b, "out-b")] {
        healthy_fast(gw, n);
        assert_eq!(redis_up(gw), Some(0.0), "{n}: still down while Redis is");
    }

    // A few seconds of outage, so the nodes' reconnect attempts back off.
    std::thread::sleep(OUTAGE.saturating_sub(killed.elapsed()));
    for (gw, n) in [(&a, "out-a"), (&b, "out-b")] {
        healthy_fast(gw, n);
        assert_eq!(redis_up(gw), Some(0.0), "{n}: up while Redis is still dead");
    }

    // Redis comes back (empty) on the same port.
    redis.restart();
    let back = Instant::now();
    let up_a = wait_redis_up(&a, "out-a", 1.0, RECOVER);
    let up_b = wait_redis_up(&b, "out-b", 1.0, RECOVER);
    eprintln!(
        "outage {:.1} s; wsgate_redis_up 1 again {up_a:?} (out-a), {up_b:?} (out-b) after the restart",
        (back - killed).as_secs_f64()
    );
    for (gw, n) in [(&a, "out-a"), (&b, "out-b")] {
        assert!(
            wait_until(Duration::from_secs(2), || !log_events(gw, "redis_up")
                .is_empty()),
            "{n}: no event=redis_up log line"
        );
    }

    // Cross-node fan-out again: a new topic, both ways ...
    let t2 = topic("after");
    assert_eq!(a1.sub(&t2), 0);
    assert_eq!(b1.sub(&t2), 0);
    cross_node(&mut a1, &mut b1, &t2, "a-to-b-after");
    cross_node(&mut b1, &mut a1, &t2, "b-to-a-after");
    // ... and the topic everybody subscribed to before the outage.
    cross_node(&mut a1, &mut b1, &t, "a-to-b-old-topic");
    for (gw, n) in [(&a, "out-a"), (&b, "out-b")] {
        healthy_fast(gw, n);
    }
    drop((a2, n1));
    eprintln!("whole scenario: {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn redis_hung_then_back() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = node("hung-a", Driver::IoUring, &redis.url());
    let b = node("hung-b", Driver::IoUring, &redis.url());
    wait_redis_up(&a, "hung-a", 1.0, Duration::from_secs(10));
    wait_redis_up(&b, "hung-b", 1.0, Duration::from_secs(10));
    let t = topic("hung");
    let mut a1 = Ws::fresh(a.addr, "a1");
    let mut a2 = Ws::fresh(a.addr, "a2");
    let mut b1 = Ws::fresh(b.addr, "b1");
    for ws in [&mut a1, &mut a2, &mut b1] {
        assert_eq!(ws.sub(&t), 0, "{}", ws.name);
    }
    cross_node(&mut a1, &mut b1, &t, "before");
    assert_eq!(expect_payload(&mut a2, &t, "before", WAIT), 1);

    redis.pause();
    // Requests are answered within the timeout (+ margin) while Redis hangs.
    for i in 0..5 {
        let p = format!("during-{i}");
        let seq = timed_pub(&mut a1, &t, &p);
        assert_eq!(expect_payload(&mut a2, &t, &p, TIMEOUT + MARGIN), seq);
    }
    let t_new = Instant::now();
    let mut n1 = Ws::connect(a.addr, "n1", None).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        t_new.elapsed() <= TIMEOUT + MARGIN,
        "a new connection's hello took {:?} with Redis hung",
        t_new.elapsed()
    );
    let t_sub = Instant::now();
    assert_eq!(n1.sub(&topic("hung-local")), 0);
    assert!(
        t_sub.elapsed() <= TIMEOUT + MARGIN,
        "sub took {:?}",
        t_sub.elapsed()
    );
    let down = wait_redis_up(&a, "hung-a", 0.0, DETECT);
    wait_redis_up(&b, "hung-b", 0.0, DETECT);
    eprintln!("hung Redis: wsgate_redis_up 0 on hung-a after {down:?}");
    healthy_fast(&a, "hung-a");
    healthy_fast(&b, "hung-b");

    redis.resume();
    let up = wait_redis_up(&a, "hung-a", 1.0, RECOVER);
    wait_redis_up(&b, "hung-b", 1.0, RECOVER);
    eprintln!("Redis answering again: wsgate_redis_up 1 on hung-a after {up:?}");
    let t2 = topic("hung-after");
    assert_eq!(a1.sub(&t2), 0);
    assert_eq!(b1.sub(&t2), 0);
    cross_node(&mut a1, &mut b1, &t2, "a-to-b-after");
    cross_node(&mut b1, &mut a1, &t2, "b-to-a-after");
    drop(n1);
}
