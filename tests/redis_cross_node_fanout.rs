//! With `--redis`, a publish on any node reaches the subscribers on every
//! node exactly once, in sequence order, the same order for all; presence
//! (`join`/`leave`, `who`) is fleet-wide; every key lives under `wsgate:`.
//!
//! Three nodes (io_uring, epoll, io_uring) on one private redis-server
//! (Debian's package, installed when missing; the test is skipped with a
//! message if that fails outside CI).

mod common;
mod edge;
mod gw;
mod redis;

use common::Driver;
use redis::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: [&str; 3] = ["fan-a", "fan-b", "fan-c"];

#[test]
fn publish_on_one_node_reaches_every_node_exactly_once_in_order() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let started = Instant::now();
    let nodes = start_fleet(&NODES, &FLEET_DRIVERS, &redis.url());
    let t = topic("fanout");

    // Two subscribers on every node.
    let shared = Arc::new(Shared::default());
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut roamers = Vec::new();
    for (n, gw) in NODES.iter().zip(&nodes) {
        for (ws, seqs) in subscribers(gw.addr, &format!("{n}/sub"), 2, &[&t]) {
            assert_eq!(ws.hello.node, *n);
            assert_eq!(seqs, vec![0], "{}: a new topic starts at seq 0", ws.name);
            roamers.push(Roamer::spawn(
                ws,
                &[&t],
                Reconnect::never(),
                shared.clone(),
                deadline,
            ));
        }
    }

    // (1) 200 messages published on node A, alternating a client `pub` and
    // the admin API: seqs 1..=200 in publish order.
    let a = &nodes[0];
    let mut publisher = Ws::fresh(a.addr, "fan-a/publisher");
    let mut published: Vec<(u64, String)> = Vec::new();
    for i in 1..=100 {
        let p = format!("client-{i}");
        publisher.send_text(&format!("pub {t} {p}"));
        let mut skipped = Vec::new();
        let ok = publisher.reply(&format!("ok pub {t} "), WAIT, &mut skipped);
        assert!(
            skipped.is_empty(),
            "publisher (not subscribed) got {skipped:?}"
        );
        let seq: u64 = ok.rsplit(' ').next().unwrap().parse().unwrap();
        published.push((seq, p));
        let p = format!("api-{i}");
        let seq = api_publish(a.admin, &t, &p).unwrap_or_else(|e| panic!("{e}"));
        published.push((seq, p));
    }
    let seqs: Vec<u64> = published.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<u64>>(),
        "one publisher at a time on node A: seqs must be 1..=200 in publish order"
    );

    // (2) Concurrent publishers on all three nodes (a client on B, the API
    // on C, a client on A), 50 each: 150 distinct seqs after 200, one
    // order that every subscriber sees.
    let mut threads = Vec::new();
    for (k, via) in ["client", "api", "client"].into_iter().enumerate() {
        let node = (k + 1) % 3;
        let (addr, admin, t) = (nodes[node].addr, nodes[node].admin, t.clone());
        let label = format!("{}-{via}", NODES[node]);
        threads.push(edge::spawn(label.clone(), move || {
            let mut out = Vec::new();
            let mut ws = (via == "client").then(|| Ws::fresh(addr, &label));
            for i in 1..=50 {
                let p = format!("{label}-{i}");
                let seq = match ws.as_mut() {
                    Some(ws) => {
                        ws.send_text(&format!("pub {t} {p}"));
                        let mut skipped = Vec::new();
                        let ok = ws.reply(&format!("ok pub {t} "), WAIT, &mut skipped);
                        ok.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
                    }
                    None => api_publish(admin, &t, &p).unwrap_or_else(|e| panic!("{e}")),
                };
                out.push((seq, p));
            }
            out
        }));
    }
    for out in edge::join_all("concurrent publisher", threads) {
        let s: Vec<u64> = out.iter().map(|(s, _)| *s).collect();
        assert!(
            s.windows(2).all(|w| w[0] < w[1]),
            "one publisher's seqs must increase: {s:?}"
        );
        published.extend(out);
    }
    let mut map: BTreeMap<u64, String> = BTreeMap::new();
    for (s, p) in &published {
        assert!(
            map.insert(*s, p.clone()).is_none(),
            "seq {s} handed out twice"
        );
    }
    assert_eq!(
        map.keys().copied().collect::<Vec<_>>(),
        (1..=350).collect::<Vec<u64>>(),
        "350 publishes on three nodes: seqs 1..=350, none twice, none skipped"
    );
    shared.set_final(&t, 350);

    let mut traces = join_all(roamers);
    for tr in &traces {
        tr.assert_clean();
        tr.assert_exact(&t, 1, 350, &map);
    }
    // Exactly once: nothing more comes afterwards either.
    for tr in &mut traces {
        let mut ws = tr.take_ws().expect("open connection");
        match ws.next_until(Instant::now() + Duration::from_millis(300)) {
            Err(End::Timeout) => {}
            other => panic!("{}: after seq 350 expected silence, got {other:?}", ws.name),
        }
    }
    eprintln!(
        "350 messages from 3 nodes reached {} subscribers on 3 nodes exactly once, in order ({:.1} s)",
        traces.len(),
        started.elapsed().as_secs_f64()
    );

    // Key space: everything under `wsgate:`.
    let keys = redis.keys(0);
    assert!(!keys.is_empty(), "nothing was stored in Redis db 0");
    let foreign: Vec<&String> = keys.iter().filter(|k| !k.starts_with("wsgate:")).collect();
    assert!(
        foreign.is_empty(),
        "keys outside the `wsgate:` prefix: {foreign:?}"
    );
    for (n, gw) in NODES.iter().zip(&nodes) {
        gw.assert_healthy();
        assert_eq!(redis_up(gw), Some(1.0), "{n}: wsgate_redis_up");
    }
}

#[test]
fn presence_is_fleet_wide() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = start_node("who-a", Driver::IoUring, &redis.url(), &[]);
    let b = start_node("who-b", Driver::Legacy, &redis.url(), &[]);
    wait_redis_up(&a, "who-a", 1.0, Duration::from_secs(10));
    wait_redis_up(&b, "who-b", 1.0, Duration::from_secs(10));
    let t = topic("who");

    let mut x = Ws::fresh(a.addr, "x@a");
    assert_eq!(x.sub(&t), 0);
    let mut y = Ws::fresh(b.addr, "y@b");
    assert_eq!(y.sub(&t), 0);
    // Presence names sessions by peer id across nodes too.
    let (xid, yid) = (x.peer().to_string(), y.peer().to_string());
    assert_eq!(
        x.line(WAIT, "y's join from the other node"),
        format!("join {t} {yid}"),
        "x on node A must see y (node B) join"
    );
    let mut want = vec![xid.clone(), yid.clone()];
    want.sort();
    for (ws, node) in [(&mut x, "who-a"), (&mut y, "who-b")] {
        let mut ids = ws.who(&t);
        ids.sort();
        assert_eq!(
            ids, want,
            "`who {t}` on {node} must list both nodes' members"
        );
    }
    // A third member on A: y on B sees it join; then it leaves for good.
    let mut z = Ws::fresh(a.addr, "z@a");
    assert_eq!(z.sub(&t), 0);
    let zid = z.peer().to_string();
    assert_eq!(y.line(WAIT, "z's join"), format!("join {t} {zid}"));
    assert_eq!(x.line(WAIT, "z's join"), format!("join {t} {zid}"));
    z.unsub(&t);
    assert_eq!(y.line(WAIT, "z's leave"), format!("leave {t} {zid}"));
    assert_eq!(x.line(WAIT, "z's leave"), format!("leave {t} {zid}"));
    let mut ids = y.who(&t);
    ids.sort();
    assert_eq!(ids, want, "after z left");
    a.assert_healthy();
    b.assert_healthy();
}
