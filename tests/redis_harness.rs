//! Checks of the Redis test harness itself (`tests/redis/mod.rs`), so that a
//! failing `redis_*` test points at the gateway and not at its tools:
//! the private redis-server starts, answers, can be killed, restarted on the
//! same port, paused and resumed, and guarded by a password; the roamer and
//! the publish-API publisher see exactly what one node without `--redis`
//! delivers, and such a node exports no `wsgate_redis_up`.

mod common;
mod edge;
mod gw;
mod redis;

use common::Driver;
use redis::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn private_redis_server_lifecycle() {
    let Some(mut r) = RedisServer::start() else {
        return;
    };
    assert_eq!(r.cmd(&["PING"]), Resp::Simple("PONG".into()));
    assert_eq!(
        r.cmd(&["SET", "wsgate:probe", "1"]),
        Resp::Simple("OK".into())
    );
    assert_eq!(r.keys(0), vec!["wsgate:probe".to_string()]);
    assert_eq!(r.cmd(&["FLUSHALL"]), Resp::Simple("OK".into()));
    assert!(r.keys(0).is_empty());
    let port = r.port;

    r.kill();
    assert!(
        resp_command(r.addr(), None, &["PING"]).is_err(),
        "a killed redis-server still answers"
    );
    r.restart();
    assert_eq!(r.port, port);
    assert_eq!(r.cmd(&["PING"]), Resp::Simple("PONG".into()));

    // A paused server accepts connections but answers nothing.
    r.pause();
    let t = Instant::now();
    let hung = resp_command(r.addr(), None, &["PING"]);
    assert!(hung.is_err(), "a SIGSTOPped redis-server answered {hung:?}");
    assert!(
        t.elapsed() >= Duration::from_secs(4),
        "the RESP read should time out"
    );
    r.resume();
    assert_eq!(r.cmd(&["PING"]), Resp::Simple("PONG".into()));

    // With a password: the helper authenticates, a bare client is refused.
    let Some(p) = RedisServer::start_with(&["--requirepass", "harness-pass"], Some("harness-pass"))
    else {
        return;
    };
    assert_eq!(p.cmd(&["PING"]), Resp::Simple("PONG".into()));
    match resp_command(p.addr(), None, &["PING"]).unwrap() {
        Resp::Error(e) => assert!(e.starts_with("NOAUTH"), "{e}"),
        other => panic!("PING without AUTH: {other:?}"),
    }
    assert_eq!(
        p.cmd_db(3, &["SET", "wsgate:x", "1"]),
        Resp::Simple("OK".into())
    );
    assert_eq!(p.keys(3), vec!["wsgate:x".to_string()]);
    assert!(p.keys(0).is_empty());
}

#[test]
fn roamer_and_publisher_on_one_node_without_redis() {
    let gw = start_node("solo", Driver::IoUring, "", &[]);
    assert_eq!(
        redis_up(&gw),
        None,
        "without --redis there is no wsgate_redis_up"
    );
    let t = topic("harness");
    let shared = Arc::new(Shared::default());
    let deadline = Instant::now() + Duration::from_secs(20);
    let roamers: Vec<Roamer> = subscribers(gw.addr, "solo/sub", 3, &[&t])
        .into_iter()
        .map(|(ws, seqs)| {
            assert_eq!(seqs, vec![0]);
            Roamer::spawn(ws, &[&t], Reconnect::never(), shared.clone(), deadline)
        })
        .collect();
    let publisher = ApiPublisher::spawn("p", gw.admin, &t, Duration::from_millis(5));
    wait_for(Duration::from_secs(10), "50 publishes", || {
        publisher.count.load(std::sync::atomic::Ordering::SeqCst) >= 50
    });
    let (_, map, last) = finish_publisher(publisher, &shared, &t);
    for r in roamers {
        let tr = r.join();
        tr.assert_clean();
        tr.assert_exact(&t, 1, last, &map);
        assert_eq!(tr.hellos.len(), 1);
    }
    gw.assert_healthy();
}
