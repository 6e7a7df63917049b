//! The "done when": a rolling restart of every node, one at a time,
//! behind HAProxy with `--redis`, and at the end every client is still
//! subscribed and has received every message published during the whole
//! run, exactly once and in order.
//!
//! Three nodes on one private redis-server, 18 clients through HAProxy
//! subscribed to one topic, a publisher streaming through the publish API of
//! a node that is not being restarted (switched before each restart). Each
//! node in turn: `maint` on HAProxy, SIGTERM (exit 0, no connection cut), a
//! fresh process with the same `--node-id` on new ports, HAProxy pointed at
//! it (`set server … addr`), `ready`, UP. Clients of a draining node get
//! close 1001, reconnect through HAProxy with their cookie and must get
//! `hello … resumed` each time (some move more than once). At the end:
//! every message once, in order, for every client; `who` on any node lists
//! all 18 sessions; HAProxy answered no 5xx.

mod common;
mod edge;
mod gw;
mod redis;

use redis::*;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: [&str; 3] = ["every-a", "every-b", "every-c"];
const CLIENTS: usize = 18;
const BUDGET: Duration = Duration::from_secs(60);

#[test]
fn rolling_restart_of_every_node_loses_nothing() {
    edge::haproxy_binary();
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let started = Instant::now();
    let mut nodes = start_fleet(&NODES, &FLEET_DRIVERS, &redis.url());
    let hap = haproxy_for_fleet(&NODES, &nodes);
    let lb = hap.addr;

    let t = topic("every");
    let shared = Arc::new(Shared::default());
    let deadline = Instant::now() + Duration::from_secs(50);
    let roamers = roamers_via(lb, &t, CLIENTS, REJOIN_DELAY, &shared, deadline, |_| {});
    let publisher = ApiPublisher::spawn("every", nodes[1].admin, &t, Duration::from_millis(10));
    std::thread::sleep(Duration::from_millis(500));

    for i in 0..NODES.len() {
        let name = NODES[i];
        publisher.switch_to(nodes[(i + 1) % NODES.len()].admin);
        // Any publish still in flight to this node completes first.
        std::thread::sleep(Duration::from_millis(200));
        hap.set_state(name, "maint");
        hap.wait_status(name, "MAINT", Duration::from_secs(2));
        let open = nodes[i].scrape().sum("wsgate_connections_active") as usize;
        let before = shared.reconnected.load(Ordering::SeqCst);
        let drained = terminate(&nodes[i], name);
        wait_for(
            Duration::from_secs(10),
            &format!("the {open} clients of {name} to reconnect"),
            || shared.reconnected.load(Ordering::SeqCst) >= before + open,
        );
        let fresh = start_node(name, FLEET_DRIVERS[i], &redis.url(), &[]);
        wait_redis_up(&fresh, name, 1.0, Duration::from_secs(10));
        hap.set_addr(name, fresh.addr);
        hap.set_state(name, "ready");
        hap.wait_status(name, "UP", Duration::from_secs(5));
        eprintln!(
            "restarted {name}: {open} clients moved, drained in {drained:?}, back on {} ({:.1} s)",
            fresh.addr,
            started.elapsed().as_secs_f64()
        );
        nodes[i] = fresh;
        std::thread::sleep(Duration::from_millis(300));
    }
    let (pubs, map, last) = finish_publisher(publisher, &shared, &t);

    let traces = join_all(roamers);
    let mut checks: Vec<(String, Box<dyn FnOnce() + '_>)> = Vec::new();
    for tr in &traces {
        let (t, map) = (&t, &map);
        checks.push((
            tr.name.clone(),
            Box::new(move || {
                tr.assert_clean();
                for (_, e) in &tr.ends {
                    assert_eq!(e, "close 1001 draining", "{}: {:?}", tr.name, tr.ends);
                }
                let peer = &tr.hellos[0].1.peer;
                for (_, h) in &tr.hellos[1..] {
                    assert!(
                        h.state == "resumed" && h.id == tr.id && h.peer == *peer,
                        "{}: every reconnect must resume: {:?}",
                        tr.name,
                        tr.hellos
                    );
                }
                tr.assert_exact(t, 1, last, map);
            }),
        ));
    }
    all_checks(checks);

    // Still subscribed, fleet-wide: `who` on every node lists every session.
    let want: BTreeSet<String> = traces
        .iter()
        .map(|tr| tr.hellos[0].1.peer.clone())
        .collect();
    for (n, gw) in NODES.iter().zip(&nodes) {
        let mut probe = Ws::fresh(gw.addr, &format!("probe@{n}"));
        let got: BTreeSet<String> = probe.who(&t).into_iter().collect();
        assert_eq!(got, want, "`who {t}` on {n} after the rolling restart");
        gw.assert_healthy();
        assert_eq!(redis_up(gw), Some(1.0), "{n}");
    }
    assert_eq!(haproxy_5xx(&hap), "0", "HAProxy answered 5xx responses");
    let moves: usize = traces.iter().map(|tr| tr.hellos.len() - 1).sum();
    let elapsed = started.elapsed();
    eprintln!(
        "rolling restart of {} nodes: {moves} session moves; {} messages (seq 1..={last}) reached \
         all {CLIENTS} clients once, in order; {:.1} s",
        NODES.len(),
        pubs.len(),
        elapsed.as_secs_f64()
    );
    assert!(elapsed < BUDGET, "took {elapsed:?}, budget {BUDGET:?}");
}
