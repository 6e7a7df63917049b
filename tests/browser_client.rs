//! The JavaScript client in a real browser (DESIGN §14): headless Chromium
//! (Debian's `chromium`, driven by the pinned `puppeteer-core` of
//! `client/test/browser/package-lock.json`, both installed on first use)
//! loads `client/test/browser/stream.html` from a second loopback origin (a
//! static server in this test; the gateway serves no files) and connects
//! through HAProxy (the ALB stand-in of `tests/edge/haproxy.cfg`) to three
//! gateway nodes sharing a private Redis, which allow that origin.
//!
//! The page subscribes to a topic with the library; the test publishes seq
//! 1..=300 at a steady rate through a node's publish API. Meanwhile:
//! * at seq 100 the node the page is on is drained as in a rolling deploy
//!   (`maint` on HAProxy, then SIGTERM): the page gets close 1001, the
//!   library comes back after its short jittered delay and HAProxy sends it
//!   to another node, where it must `hello … resumed` (same peer id: the
//!   browser kept the cookie);
//! * at seq 200 the node it is on then is killed with SIGKILL: it must come
//!   back, resumed, on the last node.
//!
//! The page's application (`onMessage`) must get every seq 1..=300 exactly
//! once, in order, with its payload, and no gap. DESIGN §10/§14 and
//! `tests/redis_crash_resume.rs`: with Redis, a resume after a crash replays
//! from the session's last checkpoint (at most a second old), so the wire may
//! carry messages again — which the client drops — but never misses one; a
//! drain saves the session before its close frame, so nothing comes twice
//! there. How many re-deliveries the client dropped is printed (it counts the
//! `msg` lines on the wire too). The state must go connecting → open →
//! reconnecting → open → reconnecting → open.
//!
//! Then the demo page (`client/demo/index.html`) is checked in two separate
//! browser contexts (two users): presence and chat work, and a screenshot is
//! written (to `WSGATE_DEMO_SCREENSHOT` if set, e.g. `client/demo/screenshot.png`).
//!
//! `WSGATE_SKIP_BROWSER=1` skips the test; otherwise a missing chromium, npm
//! or redis-server that cannot be installed fails it.

mod client;
mod common;
mod edge;
mod gw;
mod redis;

use client::*;
use redis::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const NODES: [&str; 3] = ["browser-a", "browser-b", "browser-c"];
/// Messages published, one every `EVERY`.
const N: u64 = 300;
const EVERY: Duration = Duration::from_millis(20);
const DRAIN_AT: u64 = 100;
const KILL_AT: u64 = 200;
/// From the fleet's start to the end (tools installed before).
const BUDGET: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(15);

fn payload(seq: u64) -> String {
    format!("m-{seq}")
}

/// Publishes seq 1..=N through the admin address in `target` (switchable),
/// one every `EVERY`; `published` counts the answers.
struct Publisher {
    target: Arc<Mutex<SocketAddr>>,
    published: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), String>>>,
}

impl Publisher {
    fn spawn(admin: SocketAddr, topic: &str) -> Publisher {
        let target = Arc::new(Mutex::new(admin));
        let published = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (target, published, stop) = (target.clone(), published.clone(), stop.clone());
            let topic = topic.to_string();
            std::thread::spawn(move || {
                for s in 1..=N {
                    if stop.load(Ordering::SeqCst) {
                        return Err(format!("stopped after {}", s - 1));
                    }
                    let via = *target.lock().unwrap();
                    let seq = api_publish(via, &topic, &payload(s))?;
                    if seq != s {
                        return Err(format!(
                            "the only publisher of {topic} got seq {seq} for message {s}"
                        ));
                    }
                    published.store(s, Ordering::SeqCst);
                    std::thread::sleep(EVERY);
                }
                Ok(())
            })
        };
        Publisher {
            target,
            published,
            stop,
            handle: Some(handle),
        }
    }

    fn count(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }

    fn switch_to(&self, admin: SocketAddr) {
        *self.target.lock().unwrap() = admin;
    }

    /// Waits until `n` messages were published (the publisher failing or
    /// `within` passing fails the test).
    fn wait_count(&mut self, n: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count() < n {
            if self.handle.as_ref().is_some_and(|h| h.is_finished()) {
                self.join();
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} messages published after {within:?}",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn join(&mut self) {
        if let Some(h) = self.handle.take() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("publisher: {e}"),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `page hello <new|resumed> <peer> <node>` → (state, peer, node).
fn hello_parts(line: &str) -> (String, String, String) {
    let p: Vec<&str> = line.split(' ').collect();
    assert!(
        p.len() == 5 && p[0] == "page" && p[1] == "hello",
        "malformed {line:?}"
    );
    (p[2].to_string(), p[3].to_string(), p[4].to_string())
}

fn node_index(name: &str) -> usize {
    NODES
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("unknown node {name:?}"))
}

/// The last seq the page's application got (0 before any).
fn last_delivered(lines: &[String]) -> u64 {
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("page msg "))
        .and_then(|r| r.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn browser_client_survives_drain_and_kill_behind_haproxy_with_every_seq_once() {
    if skip_browser() {
        eprintln!("SKIPPED: WSGATE_SKIP_BROWSER=1 (the real-browser test of client/wsgate.js)");
        return;
    }
    // Installing tools (first run only) is not part of the time budget.
    let chromium = chromium_binary();
    let node = node_binary();
    let puppeteer = puppeteer_dir();
    edge::haproxy_binary();
    let Some(redis) = RedisServer::start() else {
        panic!(
            "redis-server is not available (see above); set WSGATE_SKIP_BROWSER=1 to skip the \
             browser test"
        );
    };
    let started = Instant::now();

    // The page's origin: a second loopback port, allowed by every node.
    let files = StaticServer::start(&client_dir());
    let origin = files.origin();
    let nodes: Vec<common::Gateway> = NODES
        .iter()
        .zip(FLEET_DRIVERS)
        .map(|(n, d)| start_node(n, d, &redis.url(), &["--allowed-origin", &origin]))
        .collect();
    for (n, gw) in NODES.iter().zip(&nodes) {
        wait_redis_up(gw, n, 1.0, Duration::from_secs(10));
    }
    let hap = haproxy_for_fleet(&NODES, &nodes);
    let ws_url = format!("ws://{}/ws", hap.addr);

    let chromium_s = chromium.display().to_string();
    let puppeteer_s = puppeteer.display().to_string();
    let mut page = Script::spawn(
        "chromium",
        &node,
        &["test/browser/driver.mjs"],
        &[
            ("CHROMIUM", chromium_s.as_str()),
            ("PUPPETEER_DIR", puppeteer_s.as_str()),
        ],
        &["page msg "],
    );
    page.wait_prefix(Duration::from_secs(30), "launched ");

    let topic = topic("browser.stream");
    page.send(&format!(
        "open {origin}/test/browser/stream.html?ws={ws_url}&topic={topic}"
    ));
    page.wait_prefix(WAIT, "opened");
    let (state, peer, first) = hello_parts(&page.wait_nth(WAIT, "page hello ", 1));
    assert_eq!(state, "new", "the first connection starts a session");
    assert!(gw::is_peer_id(&peer), "peer id {peer:?}");
    assert_eq!(page.wait_prefix(WAIT, "page ready "), "page ready 0");
    let x = node_index(&first);

    // Stream through a node the page is not on.
    let mut publisher = Publisher::spawn(nodes[(x + 1) % 3].admin, &topic);
    publisher.wait_count(DRAIN_AT, WAIT);

    // Rolling deploy of the page's node: deregister, then SIGTERM.
    hap.set_state(NODES[x], "maint");
    hap.wait_status(NODES[x], "MAINT", Duration::from_secs(2));
    let t_drain = Instant::now();
    let drained_in = terminate(&nodes[x], NODES[x]);
    let (state, peer2, second) = hello_parts(&page.wait_nth(WAIT, "page hello ", 2));
    let moved_in = t_drain.elapsed();
    assert!(
        state == "resumed" && peer2 == peer && second != first,
        "after the drain of {first}: expected `hello resumed {peer} <another node>`, got \
         {state} {peer2} {second}"
    );
    let y = node_index(&second);
    let z = 3 - x - y;
    // The publisher must survive the kill.
    if *publisher.target.lock().unwrap() == nodes[y].admin {
        publisher.switch_to(nodes[z].admin);
    }

    publisher.wait_count(KILL_AT, WAIT);
    let t_kill = Instant::now();
    nodes[y].send_signal("KILL");
    assert!(
        nodes[y].wait_exit(Duration::from_secs(5)).is_some(),
        "{} did not die of SIGKILL",
        NODES[y]
    );
    let (state, peer3, third) = hello_parts(&page.wait_nth(WAIT, "page hello ", 3));
    let back_in = t_kill.elapsed();
    assert!(
        state == "resumed" && peer3 == peer && third == NODES[z],
        "after the kill of {second}: expected `hello resumed {peer} {}`, got {state} {peer3} \
         {third}",
        NODES[z]
    );

    publisher.wait_count(N, Duration::from_secs(30));
    publisher.join();
    page.wait(WAIT, &format!("seq {N} delivered to the page"), |ls| {
        (last_delivered(ls) >= N).then_some(())
    });
    // Anything more (a duplicate the client failed to drop) would come now.
    std::thread::sleep(Duration::from_millis(200));
    let result = page.result(WAIT);
    let delivered = parse_delivered(field(&result, "delivered"));
    assert_exactly_once_in_order("the page's subscriber", &delivered, N, payload);
    assert_eq!(field(&result, "gaps"), "", "no gap may be reported");
    assert_eq!(field(&result, "errors"), "", "no error may be reported");
    assert_eq!(
        field(&result, "states"),
        "connecting,open,reconnecting,open,reconnecting,open",
        "the page's state transitions"
    );
    let reconnects: Vec<String> = page
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("page state reconnecting "))
        .collect();
    assert!(
        reconnects.len() == 2
            && reconnects[0].contains(" 1001 draining")
            && reconnects[1].contains(" 1006 "),
        "expected close 1001 draining, then 1006 (the kill): {reconnects:?}"
    );
    let raw: Vec<u64> = field(&result, "raw")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("raw seq"))
        .collect();
    let mut high = 0;
    let again: Vec<u64> = raw
        .iter()
        .copied()
        .filter(|&s| {
            let dup = s <= high;
            high = high.max(s);
            dup
        })
        .collect();
    let scenario = started.elapsed();

    // The demo: two users in separate browser contexts (separate cookie jars).
    let shot = std::env::var_os("WSGATE_DEMO_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("wsgate-demo-{}.png", std::process::id()))
        });
    let _ = std::fs::remove_file(&shot);
    let room = "room:lobby"; // a private Redis: the name is free
    let demo =
        |name: &str| format!("{origin}/demo/index.html?gw={ws_url}&topic={room}&name={name}");
    page.send(&format!(
        "demo {} {} {}",
        demo("alice"),
        demo("bob"),
        shot.display()
    ));
    let answer = page.wait_prefix(Duration::from_secs(40), "demo ");
    assert_eq!(answer, "demo ok", "the demo page");
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000,
        "screenshot {} is not a PNG of a page ({} bytes)",
        shot.display(),
        png.len()
    );
    if std::env::var_os("WSGATE_DEMO_SCREENSHOT").is_none() {
        let _ = std::fs::remove_file(&shot);
    }
    assert!(
        page.finish(Duration::from_secs(10)),
        "the driver did not exit 0"
    );

    let five_xx = haproxy_5xx(&hap);
    nodes[z].assert_healthy();
    let elapsed = started.elapsed();
    eprintln!(
        "chromium: seq 1..={N} reached the page's subscriber once, in order, no gap; first on \
         {first}; {first} drained in {drained_in:?}, page resumed on {second} {moved_in:?} after \
         the SIGTERM; {second} killed, page resumed on {third} {back_in:?} after the SIGKILL; \
         {} msg lines on the wire, {} re-deliveries dropped by the client {again:?}; HAProxy \
         5xx: {five_xx}; stream {:.1} s, with the demo {:.1} s",
        raw.len(),
        again.len(),
        scenario.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    assert!(elapsed < BUDGET, "took {elapsed:?}, budget {BUDGET:?}");
}
