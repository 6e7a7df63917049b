//! Rolling deploy of one node behind HAProxy (the ALB stand-in of
//! `tests/edge/haproxy.cfg`) with `--redis`: nothing is lost and nothing is
//! duplicated when sessions move to another node.
//!
//! Three nodes on one private redis-server; 24 clients connect through
//! HAProxy (round robin: spread over the three nodes) and subscribe to one
//! topic; a publisher streams to it through a surviving node's publish API
//! throughout. The victim is set to `maint` on HAProxy's runtime API, then
//! gets SIGTERM. Each of its clients:
//! * gets close 1001 `draining`, answers it, reconnects through HAProxy with
//!   its cookie and lands on another node with `hello <id> resumed <node>`;
//! * gets, over its two connections, every published message exactly once
//!   and in order: the ones it missed while moving replayed first (no `gap`,
//!   no duplicate, since the session was saved before the close frame), then
//!   live ones.
//!
//! The other clients are never disturbed and get every message once, in
//! order; the victim exits 0 with no connection cut; HAProxy answered no 5xx.

mod common;
mod edge;
mod gw;
mod redis;

use redis::*;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: [&str; 3] = ["deploy-a", "deploy-b", "deploy-c"];
const VICTIM: usize = 0;
const CLIENTS: usize = 24;
const BUDGET: Duration = Duration::from_secs(60);

#[test]
fn rolling_deploy_behind_haproxy_moves_sessions_with_nothing_lost() {
    // Installing HAProxy (first run only) is not part of the time budget.
    edge::haproxy_binary();
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let started = Instant::now();
    let nodes = start_fleet(&NODES, &FLEET_DRIVERS, &redis.url());
    let hap = haproxy_for_fleet(&NODES, &nodes);
    let lb = hap.addr;
    let victim = NODES[VICTIM];

    let t = topic("deploy");
    let shared = Arc::new(Shared::default());
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    let roamers = roamers_via(lb, &t, CLIENTS, REJOIN_DELAY, &shared, deadline, |ws| {
        *spread.entry(ws.hello.node.clone()).or_default() += 1;
    });
    eprintln!("clients per node: {spread:?}");
    for n in NODES {
        assert!(
            spread.get(n).copied().unwrap_or(0) >= CLIENTS / NODES.len() / 2,
            "first connections are not spread over every node: {spread:?}"
        );
    }
    let on_victim = spread[victim];

    let publisher = ApiPublisher::spawn("deploy", nodes[1].admin, &t, Duration::from_millis(10));
    std::thread::sleep(Duration::from_millis(700));

    // Deregister, then SIGTERM.
    hap.set_state(victim, "maint");
    hap.wait_status(victim, "MAINT", Duration::from_secs(2));
    let drained_in = terminate(&nodes[VICTIM], victim);
    wait_for(
        Duration::from_secs(10),
        "every client of the victim to reconnect",
        || shared.reconnected.load(Ordering::SeqCst) >= on_victim,
    );
    std::thread::sleep(Duration::from_millis(500));
    let (pubs, map, last) = finish_publisher(publisher, &shared, &t);

    let traces = join_all(roamers);
    let mut checks: Vec<(String, Box<dyn FnOnce() + '_>)> = Vec::new();
    for tr in &traces {
        let (t, map) = (&t, &map);
        checks.push((
            tr.name.clone(),
            Box::new(move || {
                tr.assert_clean();
                let first = &tr.hellos[0].1;
                if first.node == victim {
                    assert_eq!(
                        tr.ends.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>(),
                        vec!["close 1001 draining"],
                        "{}: a client of the drained node",
                        tr.name
                    );
                    let moved = &tr.hellos[1].1;
                    assert!(
                        tr.hellos.len() == 2
                            && moved.state == "resumed"
                            && moved.node != victim
                            && moved.id == tr.id,
                        "{}: expected one reconnect to `hello {} resumed <another node>`, got {:?}",
                        tr.name,
                        tr.id,
                        tr.hellos
                    );
                } else {
                    assert!(
                        tr.ends.is_empty() && tr.hellos.len() == 1,
                        "{}: a client of a surviving node was disturbed: {:?} {:?}",
                        tr.name,
                        tr.ends,
                        tr.hellos
                    );
                }
                tr.assert_exact(t, 1, last, map);
            }),
        ));
    }
    all_checks(checks);
    let five_xx = haproxy_5xx(&hap);
    assert_eq!(five_xx, "0", "HAProxy answered 5xx responses");
    for (i, (n, gw)) in NODES.iter().zip(&nodes).enumerate() {
        if i != VICTIM {
            gw.assert_healthy();
            assert_eq!(redis_up(gw), Some(1.0), "{n}");
        }
    }
    let moved: BTreeMap<String, usize> =
        traces
            .iter()
            .filter(|tr| tr.hellos.len() > 1)
            .fold(BTreeMap::new(), |mut m, tr| {
                *m.entry(tr.hellos[1].1.node.clone()).or_default() += 1;
                m
            });
    // How many messages were published while a client was between nodes
    // (answered before its resumed hello), i.e. came to it as a replay.
    let published_at: BTreeMap<u64, Instant> = pubs.iter().map(|p| (p.seq, p.at)).collect();
    let replayed: usize = traces
        .iter()
        .filter(|tr| tr.hellos.len() == 2)
        .map(|tr| {
            let resumed_at = tr.hellos[1].0;
            tr.msgs
                .iter()
                .filter(|g| g.conn == 1 && published_at[&g.seq] < resumed_at)
                .count()
        })
        .sum();
    assert!(
        replayed >= on_victim,
        "with a {REJOIN_DELAY:?} backoff every moved client should have had messages replayed; \
         {replayed} in all for {on_victim} clients"
    );
    let elapsed = started.elapsed();
    eprintln!(
        "{replayed} messages replayed to moved clients on their resume (published while they \
         were between nodes)"
    );
    eprintln!(
        "{on_victim} clients of {victim} moved to {moved:?}; {victim} drained in {drained_in:?}; \
         {} messages (seq 1..={last}) reached all {CLIENTS} clients once, in order; {:.1} s",
        pubs.len(),
        elapsed.as_secs_f64()
    );
    assert!(elapsed < BUDGET, "took {elapsed:?}, budget {BUDGET:?}");
}
