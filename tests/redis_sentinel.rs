//! `--redis-sentinel … --redis-sentinel-master NAME` (issue 18): a primary,
//! its replica and three sentinels on loopback (Debian's redis-server run
//! as `--sentinel`), two nodes (io_uring and epoll) that find the primary
//! through Sentinel.
//!
//! 1. The nodes connect to the primary Sentinel names (`redis_up` says the
//!    server), fan a topic out and resume each other's sessions.
//! 2. The primary is killed (`kill -9`): the sentinels promote the replica,
//!    the nodes follow (`redis_up` names the replica's address), a session
//!    made before the failover resumes on the other node, and fan-out and
//!    resume work on the new primary.
//! 3. The old primary comes back (Sentinel makes it a replica) and a
//!    failover is asked for by hand (`SENTINEL FAILOVER`): the nodes leave
//!    the demoted server as soon as Sentinel acts (it closes the clients of
//!    the server it demotes; a `+switch-master` announcement or a `READONLY`
//!    answer would do too), never on a timeout, and are up on the new
//!    primary (a stale answer from a sentinel is refused by `ROLE`).

mod common;
mod edge;
mod gw;
mod redis;
mod redis_modes;

use common::{wait_until, Driver};
use edge::{free_port, TempDir};
use redis::*;
use redis_modes::*;
use std::net::SocketAddr;
use std::time::Duration;

const MASTER: &str = "wsg-primary";

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn sentinel(dir: &TempDir, i: usize, primary: u16) -> Proc {
    let port = free_port();
    let conf = dir.0.join(format!("sentinel-{i}.conf"));
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {d}\n\
             sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
             sentinel down-after-milliseconds {MASTER} 1000\n\
             sentinel failover-timeout {MASTER} 4000\n\
             sentinel parallel-syncs {MASTER} 1\n",
            d = dir.0.display()
        ),
    )
    .unwrap();
    let bin = redis_server_binary().unwrap().display().to_string();
    let conf = conf.display().to_string();
    Proc::start(
        &format!("sentinel-{i}"),
        &bin,
        port,
        &[&conf, "--sentinel"],
        "+monitor master",
    )
}

/// What the sentinel at `port` says the primary's port is.
fn primary_port(port: u16) -> Option<u16> {
    let r = resp_command(
        loopback(port),
        None,
        &["SENTINEL", "get-master-addr-by-name", MASTER],
    )
    .ok()?;
    match r {
        Resp::Array(a) => match a.get(1) {
            Some(Resp::Bulk(Some(p))) => std::str::from_utf8(p).ok()?.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Whether both cores logged `redis_up` on `port` after the first `since`
/// `redis_up` lines.
fn up_on(gw: &common::Gateway, port: u16, since: usize) -> bool {
    let want = format!("server=127.0.0.1:{port}");
    log_events(gw, "redis_up")[since..]
        .iter()
        .filter(|l| l.contains(&want))
        .count()
        >= 2
}

#[test]
fn nodes_follow_the_primary_sentinel_names() {
    if redis_server_binary().is_none() {
        return;
    }
    let mut primary = plain_redis("primary", &[]);
    let p1 = primary.port;
    let p1_arg = p1.to_string();
    let replica = plain_redis("replica", &["--replicaof", "127.0.0.1", &p1_arg]);
    let p2 = replica.port;
    replica.wait_log("sync: Finished with success", 1, Duration::from_secs(10));
    let dir = TempDir::new("sentinels");
    let sentinels: Vec<Proc> = (0..3).map(|i| sentinel(&dir, i, p1)).collect();
    // Each sentinel knows the replica and the two other sentinels.
    for s in &sentinels {
        s.wait_log("+sentinel sentinel", 2, Duration::from_secs(15));
        s.wait_log("+slave slave", 1, Duration::from_secs(15));
    }
    let list = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect::<Vec<_>>()
        .join(",");
    let flags = ["--redis-sentinel", &list, "--redis-sentinel-master", MASTER];
    let a = start_node("sen-a", Driver::IoUring, "redis://primary/0", &flags);
    let b = start_node("sen-b", Driver::Legacy, "redis://primary/0", &flags);
    wait_redis_up(&a, "sen-a", 1.0, Duration::from_secs(10));
    wait_redis_up(&b, "sen-b", 1.0, Duration::from_secs(10));
    assert!(
        up_on(&a, p1, 0) && up_on(&b, p1, 0),
        "both on the primary first"
    );
    resume_and_fanout(&a, &b, "sen1");

    // A session made before the failover, with a message it has seen.
    let t = topic("sen.before");
    let mut x = Ws::fresh(a.addr, "x@a");
    assert_eq!(x.sub(&t), 0);
    let seq = api_publish(a.admin, &t, "before").unwrap();
    assert_eq!(x.data_line(WAIT, "before"), format!("msg {t} {seq} before"));
    let id = x.id().to_string();
    // Replicated before the primary goes.
    let ok = wait_until(Duration::from_secs(5), || {
        matches!(
            resp_command(
                loopback(p2),
                None,
                &["EXISTS", &format!("wsgate:t:{{{t}}}:seq")]
            ),
            Ok(Resp::Int(1))
        )
    });
    assert!(ok, "the replica never got the topic");
    x.drop_tcp();

    primary.kill();
    let ok = wait_until(Duration::from_secs(30), || {
        sentinels.iter().all(|s| primary_port(s.port) == Some(p2))
    });
    if !ok {
        for s in &sentinels {
            s.dump_logs();
        }
        panic!("the sentinels did not promote the replica within 30 s");
    }
    let ok = wait_until(Duration::from_secs(15), || {
        up_on(&a, p2, 0) && up_on(&b, p2, 0)
    });
    assert!(ok, "the nodes did not follow to the promoted replica");
    wait_redis_up(&a, "sen-a", 1.0, Duration::from_secs(5));
    wait_redis_up(&b, "sen-b", 1.0, Duration::from_secs(5));
    let mut x = Ws::resume(b.addr, "x@b", &id);
    let seq2 = api_publish(a.admin, &t, "after").unwrap();
    assert_eq!(seq2, seq + 1, "the topic's seq survived the failover");
    assert_eq!(x.data_line(WAIT, "after"), format!("msg {t} {seq2} after"));
    resume_and_fanout(&a, &b, "sen2");

    // The old primary returns as a replica; a failover by hand.
    primary.restart();
    // One sentinel turns it into a replica of the new primary.
    primary.wait_log("sync: Finished with success", 1, Duration::from_secs(30));
    let down_before = (
        log_events(&a, "redis_down").len(),
        log_events(&b, "redis_down").len(),
    );
    let up_before = (
        log_events(&a, "redis_up").len(),
        log_events(&b, "redis_up").len(),
    );
    let r = resp_command(
        loopback(sentinels[0].port),
        None,
        &["SENTINEL", "FAILOVER", MASTER],
    )
    .unwrap();
    assert!(matches!(r, Resp::Simple(ref s) if s == "OK"), "{r:?}");
    let ok = wait_until(Duration::from_secs(20), || {
        up_on(&a, p1, up_before.0) && up_on(&b, p1, up_before.1)
    });
    assert!(
        ok,
        "the nodes did not follow the manual failover back to the first server"
    );
    for (gw, n, before) in [(&a, "sen-a", down_before.0), (&b, "sen-b", down_before.1)] {
        let downs = log_events(gw, "redis_down");
        let after = &downs[before..];
        assert!(!after.is_empty(), "{n}: never left the demoted primary");
        assert!(
            !after.iter().any(|l| l.contains("timed out")),
            "{n}: followed the failover only after a timeout: {after:?}"
        );
        eprintln!("{n} left the demoted primary: {after:?}");
    }
    wait_redis_up(&a, "sen-a", 1.0, Duration::from_secs(5));
    wait_redis_up(&b, "sen-b", 1.0, Duration::from_secs(5));
    resume_and_fanout(&a, &b, "sen3");
    a.assert_healthy();
    b.assert_healthy();
}
