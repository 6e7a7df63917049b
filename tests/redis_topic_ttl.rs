//! With `--redis`, a topic's keys expire like the topic itself (DESIGN §6,
//! "Topics at scale"): while the topic has no member, `wsgate:t:{<topic>}:seq`
//! and `wsgate:t:{<topic>}:h` carry a TTL of at most `--topic-ttl` from the
//! later of its last publish and its last member leaving; while it has a
//! member (live or resumable) they carry none. Once they are gone, a publish
//! on any node starts the topic again at seq 1.
//!
//! Two nodes (io_uring, epoll) with `--topic-ttl 2s` on one private
//! redis-server (Debian's package, installed when missing; the test is
//! skipped with a message if that fails outside CI).

mod common;
mod edge;
mod gw;
mod redis;

use common::{Driver, Gateway};
use redis::*;
use std::time::{Duration, Instant};

const TTL_MS: i64 = 2000;

/// The topic's sequence and history keys.
fn keys(t: &str) -> [String; 2] {
    [
        format!("wsgate:t:{{{t}}}:seq"),
        format!("wsgate:t:{{{t}}}:h"),
    ]
}

/// `PTTL` of each key (-2: no such key, -1: no expiry).
fn pttls(redis: &RedisServer, t: &str) -> Vec<(String, i64)> {
    keys(t)
        .into_iter()
        .map(|k| match redis.cmd(&["PTTL", &k]) {
            Resp::Int(n) => (k, n),
            other => panic!("PTTL {k}: {other:?}"),
        })
        .collect()
}

/// Polls until every key's PTTL satisfies `ok` (within `within`); returns
/// the last reading, panicking with it and `ctx` otherwise.
fn wait_pttls(
    redis: &RedisServer,
    t: &str,
    within: Duration,
    ctx: &str,
    ok: impl Fn(i64) -> bool,
) -> Vec<(String, i64)> {
    let deadline = Instant::now() + within;
    loop {
        let got = pttls(redis, t);
        if got.iter().all(|(_, v)| ok(*v)) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: PTTL readings {got:?} (after {within:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn expiring(v: i64) -> bool {
    v > 0 && v <= TTL_MS
}

/// `wsgate_topics` of a node, summed (panics if it exports none).
fn topics(gw: &Gateway) -> f64 {
    let s = gw.scrape();
    assert!(
        !s.family("wsgate_topics").is_empty(),
        "/metrics has no `wsgate_topics` gauge"
    );
    s.sum("wsgate_topics")
}

#[test]
fn topic_keys_expire_only_while_the_topic_has_no_member() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let ttl = ["--topic-ttl", "2s"];
    let a = start_node("kttl-a", Driver::IoUring, &redis.url(), &ttl);
    let b = start_node("kttl-b", Driver::Legacy, &redis.url(), &ttl);
    wait_redis_up(&a, "kttl-a", 1.0, Duration::from_secs(10));
    wait_redis_up(&b, "kttl-b", 1.0, Duration::from_secs(10));
    let t = topic("kttl");
    let publish = |gw: &Gateway, body: &str| {
        api_publish(gw.admin, &t, body).unwrap_or_else(|e| panic!("{e}"))
    };

    // (1) A publish to a topic with no member: both keys expire within the TTL.
    assert_eq!(publish(&a, "one"), 1);
    wait_pttls(
        &redis,
        &t,
        Duration::from_secs(1),
        "after a publish to a member-less topic, PTTL in (0, 2000]",
        expiring,
    );

    // (2) Another publish, on the other node, 1.2 s later: the seq continues
    // and the expiry is pushed back (unrefreshed it would be ~800 ms).
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(publish(&b, "two"), 2, "within the TTL the seq continues");
    wait_pttls(
        &redis,
        &t,
        Duration::from_secs(1),
        "the last publish restarts the keys' TTL",
        |v| v > 1000 && v <= TTL_MS,
    );

    // (3) A live subscriber: no expiry, even past the TTL and after publishes.
    let mut x = Ws::fresh(a.addr, "x@a");
    assert_eq!(x.sub(&t), 2);
    wait_pttls(
        &redis,
        &t,
        Duration::from_secs(3),
        "while the topic has a member, PTTL -1",
        |v| v == -1,
    );
    assert_eq!(publish(&b, "three"), 3);
    assert_eq!(
        x.data_line(WAIT, "msg 3"),
        format!("msg {t} 3 three"),
        "x gets the message"
    );
    std::thread::sleep(Duration::from_millis(2500));
    wait_pttls(
        &redis,
        &t,
        Duration::ZERO,
        "a publish while the topic has a member sets no expiry; the keys outlive the TTL",
        |v| v == -1,
    );

    // (4) A resumable member (dropped socket) holds them as well, and its
    // replay works after more than the TTL.
    let id = x.id().to_string();
    x.drop_tcp();
    wait_for(Duration::from_secs(10), "x's socket gone on node a", || {
        a.scrape().sum("wsgate_connections_active") == 0.0
    });
    assert_eq!(publish(&b, "four"), 4);
    std::thread::sleep(Duration::from_millis(2500));
    wait_pttls(
        &redis,
        &t,
        Duration::ZERO,
        "while the only member is resumable, PTTL -1",
        |v| v == -1,
    );
    let mut x = Ws::resume(a.addr, "x@a (back)", &id);
    assert_eq!(
        x.data_line(WAIT, "the replay of seq 4"),
        format!("msg {t} 4 four")
    );

    // (5) The last member leaves: the keys get the TTL, then they are gone,
    // the nodes forget the topic, and a publish on node b starts at seq 1.
    x.unsub(&t);
    wait_pttls(
        &redis,
        &t,
        Duration::from_secs(3),
        "after the last member left, PTTL in (0, 2000]",
        expiring,
    );
    wait_pttls(
        &redis,
        &t,
        Duration::from_secs(6),
        "the keys are gone after the TTL",
        |v| v == -2,
    );
    wait_for(
        Duration::from_secs(10),
        "wsgate_topics 0 on both nodes",
        || topics(&a) == 0.0 && topics(&b) == 0.0,
    );
    assert_eq!(publish(&b, "again"), 1, "a forgotten topic starts at seq 1");
    wait_pttls(
        &redis,
        &t,
        Duration::from_secs(1),
        "the new topic's keys expire as well",
        expiring,
    );
    a.assert_healthy();
    b.assert_healthy();
}

#[test]
fn a_member_less_topic_expires_everywhere_and_restarts_on_another_node() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let ttl = ["--topic-ttl", "2s"];
    let a = start_node("kexp-a", Driver::IoUring, &redis.url(), &ttl);
    let b = start_node("kexp-b", Driver::Legacy, &redis.url(), &ttl);
    wait_redis_up(&a, "kexp-a", 1.0, Duration::from_secs(10));
    wait_redis_up(&b, "kexp-b", 1.0, Duration::from_secs(10));

    // A few topics published on node a only.
    let ts: Vec<String> = (0..20).map(|i| topic(&format!("kexp{i}"))).collect();
    for t in &ts {
        assert_eq!(api_publish(a.admin, t, "x").unwrap(), 1);
        assert_eq!(api_publish(a.admin, t, "y").unwrap(), 2);
    }
    for t in &ts {
        wait_pttls(
            &redis,
            t,
            Duration::from_secs(1),
            "after publishes to a member-less topic, PTTL in (0, 2000]",
            expiring,
        );
    }
    wait_for(Duration::from_secs(10), "every topic key expired", || {
        ts.iter()
            .all(|t| pttls(&redis, t).iter().all(|(_, v)| *v == -2))
    });
    let left: Vec<String> = redis
        .keys(0)
        .into_iter()
        .filter(|k| k.starts_with("wsgate:t:"))
        .collect();
    assert!(
        left.iter()
            .all(|k| !ts.iter().any(|t| k.contains(t.as_str()))),
        "topic keys left after the TTL: {left:?}"
    );
    for t in &ts {
        assert_eq!(
            api_publish(b.admin, t, "again").unwrap(),
            1,
            "{t}: after the keys expired, a publish on another node starts at seq 1"
        );
    }
    a.assert_healthy();
    b.assert_healthy();
}
