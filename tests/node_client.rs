//! Resume from Node (DESIGN §14): Node's `WebSocket` has no cookie jar, so
//! the client library keeps the session itself (`GET /ws-session`, then the
//! cookie as a `Cookie` header on every upgrade). One gateway; the script
//! `client/test/e2e/resume.mjs` (run with `node --experimental-websocket` on
//! Node 20) connects through a TCP proxy of its own and subscribes with the
//! library; the test publishes through the admin publish API:
//!
//! 1. seq 1..=50 arrive live;
//! 2. the script cuts the connection the way a network does (RST both ways:
//!    no close frame, no FIN) and holds the client's reconnection attempts
//!    (as a dead route would) while seq 51..=100 are published: the gateway
//!    keeps the session for the resume window and those messages in history;
//! 3. the proxy lets the client through: it must come back with `hello <same
//!    peer> resumed` on its own (the cookie it kept), get 51..=100 replayed,
//!    then 101..=150 live.
//!
//! The application (the script's `onMessage`) must see every seq 1..=150
//! exactly once, in order, no gap, no error; the state goes connecting →
//! open → reconnecting → open.

mod client;
mod common;
mod edge;
mod gw;

use client::*;
use common::{Driver, Gateway};
use std::time::{Duration, Instant};

const LIVE: u64 = 50;
const MISSED: u64 = 50;
const AFTER: u64 = 50;
const WAIT: Duration = Duration::from_secs(10);
const BUDGET: Duration = Duration::from_secs(45);

fn payload(seq: u64) -> String {
    format!("n-{seq}")
}

fn publish(gateway: &Gateway, topic: &str, seqs: std::ops::RangeInclusive<u64>) {
    for s in seqs {
        let got = gw::api_publish(gateway, topic, payload(s).as_bytes(), false);
        assert_eq!(
            got, s,
            "the only publisher of {topic} got seq {got}, expected {s}"
        );
    }
}

/// The last seq the script's application got (0 before any).
fn last_delivered(lines: &[String]) -> u64 {
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("msg "))
        .and_then(|r| r.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn node_client_keeps_its_session_and_resumes_with_nothing_lost() {
    let node = node_binary();
    let flags = node_websocket_flags(&node);
    let started = Instant::now();
    let gateway = Gateway::start(
        Driver::IoUring,
        &gw::args(&["--publish-token", gw::TOKEN, "--session-ttl", "30s"]),
    );
    let topic = gw::topic("node.resume");
    let url = format!("ws://{}/ws", gateway.addr);
    let mut args: Vec<&str> = flags.clone();
    args.push("test/e2e/resume.mjs");
    let mut script = Script::spawn(
        "resume.mjs",
        &node,
        &args,
        &[("WSGATE_URL", url.as_str()), ("TOPIC", topic.as_str())],
        &[],
    );

    // 0. Subscribed on a new session.
    let hello = script.wait_prefix(WAIT, "hello ");
    let parts: Vec<&str> = hello.split(' ').collect();
    assert!(
        parts.len() == 4 && parts[1] == "new" && parts[3] == gw::NODE,
        "first connection: expected `hello new <peer> {}`, got {hello:?}",
        gw::NODE
    );
    let peer = parts[2].to_string();
    assert!(gw::is_peer_id(&peer), "peer id in {hello:?}");
    let jar = script.wait_prefix(WAIT, "jar ");
    assert!(
        jar.split([' ', ',']).any(|c| c == gw::COOKIE),
        "the client should keep the gateway's cookie {}: {jar:?}",
        gw::COOKIE
    );
    assert_eq!(script.wait_prefix(WAIT, "ready "), "ready 0");

    // 1. Live.
    publish(&gateway, &topic, 1..=LIVE);
    script.wait(WAIT, &format!("seq {LIVE} delivered"), |ls| {
        (last_delivered(ls) >= LIVE).then_some(())
    });

    // 2. Cut; what is published now is missed.
    script.send("cut");
    let cut = script.wait_prefix(WAIT, "cut ");
    assert_ne!(cut, "cut 0", "the script had no connection to cut");
    gw::wait_open_connections(&gateway, 0, "the gateway sees the cut connection go");
    script.wait_prefix(WAIT, "state reconnecting ");
    // The client tries again (its attempt is held by the proxy) ...
    script.wait_prefix(WAIT, "held ");
    publish(&gateway, &topic, LIVE + 1..=LIVE + MISSED);
    assert_eq!(
        last_delivered(&script.lines()),
        LIVE,
        "delivered while cut off"
    );

    // 3. Let it through: resumed, replay, then live.
    script.send("release");
    let resumed = script.wait_nth(WAIT, "hello ", 2);
    assert_eq!(
        resumed,
        format!("hello resumed {peer} {}", gw::NODE),
        "the reconnect must resume the same session (peer {peer}) with the cookie the client kept"
    );
    script.wait(WAIT, &format!("seq {} delivered", LIVE + MISSED), |ls| {
        (last_delivered(ls) >= LIVE + MISSED).then_some(())
    });
    let last = LIVE + MISSED + AFTER;
    publish(&gateway, &topic, LIVE + MISSED + 1..=last);
    script.wait(WAIT, &format!("seq {last} delivered"), |ls| {
        (last_delivered(ls) >= last).then_some(())
    });

    let result = script.result(WAIT);
    let delivered = parse_delivered(field(&result, "delivered"));
    assert_exactly_once_in_order("the Node application", &delivered, last, payload);
    assert_eq!(field(&result, "gaps"), "", "no gap may be reported");
    assert_eq!(field(&result, "errors"), "", "no error may be reported");
    assert_eq!(
        field(&result, "states"),
        "connecting,open,reconnecting,open",
        "state transitions"
    );
    let states: Vec<String> = script
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("state reconnecting"))
        .collect();
    assert!(
        states.iter().all(|l| l.contains(" 1006 ")),
        "a cut connection is a 1006 for the client: {states:?}"
    );
    assert!(
        script.finish(Duration::from_secs(5)),
        "the script did not exit 0"
    );
    gateway.assert_healthy();
    let elapsed = started.elapsed();
    eprintln!(
        "Node {}: seq 1..={last} reached the application once, in order, across a cut \
         connection ({MISSED} replayed on `hello resumed`); {:.1} s",
        node_major(&node),
        elapsed.as_secs_f64()
    );
    assert!(elapsed < BUDGET, "took {elapsed:?}, budget {BUDGET:?}");
}
