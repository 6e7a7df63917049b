//! `--redis-cluster` (issue 18): a local Redis Cluster of three primaries
//! and three replicas (`redis-cli --cluster create` on loopback ports) and
//! three nodes (io_uring, epoll, io_uring).
//!
//! 1. Topics whose keys live on each of the three shards: the nodes fan
//!    them out to each other and resume each other's sessions; each topic's
//!    keys are on one primary only, and a different one per topic.
//! 2. A slot migration by hand (`CLUSTER SETSLOT … IMPORTING/MIGRATING`,
//!    `MIGRATE`, `SETSLOT … NODE`) of a topic that two clients follow:
//!    while it migrates, the topic is still served by the source, and a
//!    `who` of a new topic in that slot (its key not on the source) is
//!    answered `ASK` and followed (`wsgate_redis_redirects_total{kind="ask"}`); once
//!    moved, a node whose map is stale is answered `MOVED` and follows it
//!    (`kind="moved"`); the followers keep getting the topic, and its seq
//!    goes on.
//! 3. `kill -9` of the primary that holds a topic: its replica takes over,
//!    the nodes find it, a session made before resumes on the other node
//!    with its subscription, and the topic's seq goes on.

mod common;
mod edge;
mod gw;
mod redis;
mod redis_modes;

use common::{wait_until, Driver, Gateway};
use redis::*;
use redis_modes::*;
use std::time::Duration;

/// A topic name (with `prefix`) whose slot `keep` accepts.
fn topic_where(prefix: &str, keep: impl Fn(u16) -> bool) -> String {
    (0u32..)
        .map(|i| format!("{prefix}.{i}"))
        .find(|t| keep(topic_slot(t)))
        .unwrap()
}

fn redirects(gw: &Gateway, kind: &str) -> f64 {
    let want = format!("kind=\"{kind}\"");
    (gw.scrape().family("wsgate_redis_redirects_total").iter())
        .filter(|(l, _)| l.contains(&want))
        .map(|(_, v)| *v)
        .sum()
}

/// A sample of a per-server family (`server="127.0.0.1:<port>"`, and
/// `kind` when given).
fn per_server(gw: &Gateway, family: &str, port: u16, kind: Option<&str>) -> f64 {
    let server = format!("server=\"127.0.0.1:{port}\"");
    (gw.scrape().family(family).iter())
        .filter(|(l, _)| l.contains(&server))
        .filter(|(l, _)| kind.map_or(true, |k| l.contains(&format!("kind=\"{k}\""))))
        .map(|(_, v)| *v)
        .sum()
}

fn publish(gw: &Gateway, t: &str, body: &str) -> u64 {
    api_publish(gw.admin, t, body).unwrap_or_else(|e| panic!("publish {t}: {e}"))
}

#[test]
fn nodes_route_by_slot_follow_redirects_and_failover() {
    if redis_server_binary().is_none() {
        return;
    }
    let mut cluster = Cluster::start(3);
    let seed = format!("redis://127.0.0.1:{}", cluster.nodes[0].port);
    let flags = ["--redis-cluster"];
    let a = start_node("cl-a", Driver::IoUring, &seed, &flags);
    let b = start_node("cl-b", Driver::Legacy, &seed, &flags);
    let c = start_node("cl-c", Driver::IoUring, &seed, &flags);
    for (gw, n) in [(&a, "cl-a"), (&b, "cl-b"), (&c, "cl-c")] {
        wait_redis_up(gw, n, 1.0, Duration::from_secs(10));
    }

    // 1. A topic on each shard.
    let mut owners = Vec::new();
    let mut topics = Vec::new();
    for (i, (lo, hi)) in [(0, 5460), (5461, 10922), (10923, 16383)]
        .into_iter()
        .enumerate()
    {
        let t = topic_where(&format!("cl{i}.{:x}", std::process::id()), |s| {
            (lo..=hi).contains(&s)
        });
        let owner = cluster.owner(0, topic_slot(&t));
        resume_and_fanout_on(&a, &b, &format!("cl{i}"), &t);
        let holders: Vec<usize> = (0..cluster.nodes.len())
            .filter(|&n| {
                matches!(
                    cluster.cmd(n, &["EXISTS", &format!("wsgate:t:{{{t}}}:seq")]),
                    Resp::Int(1)
                ) && cluster
                    .view(n)
                    .iter()
                    .any(|v| v.port == cluster.nodes[n].port && v.primary)
            })
            .collect();
        assert_eq!(holders, vec![owner], "{t}: its keys on its primary only");
        owners.push(owner);
        topics.push(t);
    }
    owners.sort();
    owners.dedup();
    assert_eq!(owners.len(), 3, "the topics' keys live on three primaries");

    // 2. A slot migration.
    let tm = topics[0].clone();
    let slot = topic_slot(&tm);
    let source = cluster.owner(0, slot);
    let target = cluster.owner(0, topic_slot(&topics[1]));
    let view = cluster.view(0);
    let id_of = |i: usize| {
        view.iter()
            .find(|v| v.port == cluster.nodes[i].port)
            .unwrap()
            .id
            .clone()
    };
    let (source_id, target_id) = (id_of(source), id_of(target));
    let mut x = Ws::fresh(a.addr, "mig-x@a");
    let mut y = Ws::fresh(b.addr, "mig-y@b");
    let first = x.sub(&tm);
    assert!(first > 0);
    assert_eq!(y.sub(&tm), first);
    let s = slot.to_string();
    cluster.cmd(target, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &source_id]);
    cluster.cmd(source, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &target_id]);
    // The migrating topic's keys are still on the source: served there.
    let during = publish(&b, &tm, "during-migration");
    assert_eq!(during, first + 1);
    for ws in [&mut x, &mut y] {
        assert_eq!(
            ws.data_line(WAIT, "the migrating topic"),
            format!("msg {tm} {during} during-migration")
        );
    }
    // A new topic in the migrating slot: its key is not on the source, so
    // the source answers ASK and the target serves it behind ASKING.
    let tq = topic_where(&format!("ask.{:x}", std::process::id()), |q| q == slot);
    let mut w = Ws::fresh(c.addr, "ask-w@c");
    assert!(w.who(&tq).is_empty());
    assert!(redirects(&c, "ask") >= 1.0, "no ASK followed by cl-c");
    assert_eq!(redirects(&c, "moved"), 0.0, "no MOVED yet");
    // Move the keys, then the slot.
    loop {
        let Resp::Array(keys) = cluster.cmd(source, &["CLUSTER", "GETKEYSINSLOT", &s, "100"])
        else {
            panic!("GETKEYSINSLOT");
        };
        if keys.is_empty() {
            break;
        }
        let keys: Vec<String> = keys
            .iter()
            .map(|k| match k {
                Resp::Bulk(Some(k)) => String::from_utf8_lossy(k).into_owned(),
                other => panic!("{other:?}"),
            })
            .collect();
        let port = cluster.nodes[target].port.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys.iter().map(String::as_str));
        cluster.cmd(source, &args);
    }
    for i in 0..cluster.nodes.len() {
        if cluster
            .view(i)
            .iter()
            .any(|v| v.port == cluster.nodes[i].port && v.primary)
        {
            cluster.cmd(i, &["CLUSTER", "SETSLOT", &s, "NODE", &target_id]);
        }
    }
    let ok = wait_until(Duration::from_secs(10), || {
        (0..cluster.nodes.len()).all(|i| cluster.owner(i, slot) == target)
    });
    assert!(ok, "the slot did not move");
    // cl-c's cores still think the source has it.
    let tn = topic_where(&format!("moved.{:x}", std::process::id()), |q| q == slot);
    assert_eq!(publish(&c, &tn, "moved"), 1);
    assert!(redirects(&c, "moved") >= 1.0, "no MOVED followed by cl-c");
    let (sp, tp) = (cluster.nodes[source].port, cluster.nodes[target].port);
    let fam = "wsgate_redis_server_redirects_total";
    assert!(
        per_server(&c, fam, sp, Some("moved")) >= 1.0,
        "MOVED counted for the source {sp}: {:?}",
        c.scrape().family(fam)
    );
    assert!(
        per_server(&c, fam, sp, Some("ask")) >= 1.0,
        "ASK counted for the source"
    );
    assert_eq!(per_server(&c, fam, tp, Some("moved")), 0.0);
    // The followers of the moved topic get it from its new primary.
    for (gw, n) in [(&a, "cl-a"), (&b, "cl-b")] {
        wait_redis_up(gw, n, 1.0, Duration::from_secs(10));
    }
    let seq = publish(&b, &tm, "after-migration");
    assert_eq!(seq, during + 1, "the moved topic's seq goes on");
    for ws in [&mut x, &mut y] {
        assert_eq!(
            ws.data_line(WAIT, "the moved topic"),
            format!("msg {tm} {seq} after-migration")
        );
    }
    assert_eq!(
        cluster.cmd(target, &["EXISTS", &format!("wsgate:t:{{{tm}}}:seq")]),
        Resp::Int(1)
    );

    // 3. A primary killed: its replica takes over.
    let tf = topics[2].clone();
    let fslot = topic_slot(&tf);
    let dead = cluster.owner(0, fslot);
    let mut z = Ws::fresh(a.addr, "fail-z@a");
    let before = z.sub(&tf);
    let zid = z.id().to_string();
    z.drop_tcp();
    cluster.wait_ok(Duration::from_secs(10));
    cluster.nodes[dead].kill();
    let live = (0..cluster.nodes.len()).find(|&i| i != dead).unwrap();
    let ok = wait_until(Duration::from_secs(30), || {
        let v = cluster.view(live);
        v.iter().any(|n| {
            n.primary
                && !n.failed
                && n.port != cluster.nodes[dead].port
                && n.slots.iter().any(|&(lo, hi)| lo <= fslot && fslot <= hi)
        })
    });
    assert!(ok, "the replica did not take over within 30 s");
    for (gw, n) in [(&a, "cl-a"), (&b, "cl-b")] {
        wait_redis_up(gw, n, 1.0, Duration::from_secs(20));
    }
    let dead_port = cluster.nodes[dead].port;
    for gw in [&a, &b] {
        let f = per_server(gw, "wsgate_redis_server_failures_total", dead_port, None);
        assert!(f >= 1.0, "the killed primary's failures counted");
        assert_eq!(
            per_server(gw, "wsgate_redis_server_up", dead_port, None),
            0.0
        );
        let up = gw.scrape().family("wsgate_redis_server_up");
        assert_eq!(up.iter().filter(|(_, v)| *v == 1.0).count(), 3, "{up:?}");
    }
    let mut z = Ws::resume(b.addr, "fail-z@b", &zid);
    let seq = publish(&a, &tf, "after-failover");
    assert_eq!(seq, before + 1, "the topic's seq survived the failover");
    assert_eq!(
        z.data_line(WAIT, "after the failover"),
        format!("msg {tf} {seq} after-failover")
    );
    resume_and_fanout_on(&a, &b, "cl-after", &tf);
    let ups = log_events(&a, "redis_up");
    assert!(!ups.is_empty());
    for gw in [&a, &b, &c] {
        gw.assert_healthy();
    }
    drop(cluster.nodes.remove(dead));
}
