//! Topics are forgotten when nobody needs them (DESIGN §6, "Topics at
//! scale"): a topic with no live and no resumable member is dropped
//! `--topic-ttl` after its last member left or its last publish, whichever
//! is later; a later `pub` or `sub` starts it again at seq 1. A live or a
//! resumable member keeps it (the replay still works after the socket was
//! gone longer than the topic TTL). The `wsgate_topics` gauge on the admin
//! `/metrics` says how many topics the node holds.

mod common;
mod gw;

use common::{for_each_driver, Gateway};
use gw::{args, topic, wait_open_connections, Client};
use std::time::{Duration, Instant};

/// `wsgate_topics`, summed over its series (panics if the node exports none).
fn topics(gw: &Gateway) -> f64 {
    let s = gw.scrape();
    assert!(
        !s.family("wsgate_topics").is_empty(),
        "[{}] /metrics has no `wsgate_topics` gauge",
        gw.driver.name()
    );
    s.sum("wsgate_topics")
}

/// Polls `wsgate_topics` until it equals `want` (within `within`); returns
/// how long that took.
fn wait_topics(gw: &Gateway, want: f64, within: Duration, ctx: &str) -> Duration {
    let t0 = Instant::now();
    loop {
        let v = topics(gw);
        if v == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "[{}] {ctx}: wsgate_topics = {v}, expected {want} within {within:?}",
            gw.driver.name()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Generous bound for a 1 s TTL to run out and be noticed.
const EXPIRY: Duration = Duration::from_secs(10);
/// Comfortably more than the 1 s TTL.
const PAST_TTL: Duration = Duration::from_millis(2500);

#[test]
fn a_topic_nobody_holds_is_forgotten_after_the_ttl() {
    for_each_driver(&args(&["--topic-ttl", "1s"]), |gw| {
        let t = topic("ttl");
        let mut p = Client::new(gw, "P(not subscribed)");
        assert_eq!(topics(gw), 0.0, "a fresh node holds no topic");

        assert_eq!(p.publish(&t, "first", false), 1);
        assert_eq!(p.publish(&t, "second", false), 2, "within the TTL");
        let last_pub = Instant::now();
        wait_topics(
            gw,
            1.0,
            Duration::from_secs(5),
            "the published topic is held",
        );

        wait_topics(gw, 0.0, EXPIRY, "the topic's TTL ran out");
        let after = last_pub.elapsed();
        assert!(
            after >= Duration::from_millis(500),
            "the topic was forgotten {after:?} after its last publish, before a 1 s TTL"
        );
        assert_eq!(
            p.publish(&t, "again", false),
            1,
            "a publish after the expiry starts the topic again"
        );
        wait_topics(gw, 1.0, Duration::from_secs(5), "held again");

        // A `sub` also starts a forgotten topic again, and holds it.
        wait_topics(gw, 0.0, EXPIRY, "the topic expired a second time");
        let mut a = Client::new(gw, "A");
        assert_eq!(a.sub(&t), 0, "`ok sub` of a forgotten topic: seq 0");
        wait_topics(gw, 1.0, Duration::from_secs(5), "held by the subscription");
        assert_eq!(p.publish(&t, "to A", false), 1);
        a.expect_msg_seq(&t, 1, "to A", "the first message of the new topic");
    });
}

#[test]
fn a_live_subscriber_keeps_its_topic_and_the_last_leave_or_publish_starts_the_ttl() {
    for_each_driver(&args(&["--topic-ttl", "1s"]), |gw| {
        let t = topic("ttlsub");
        let mut p = Client::new(gw, "P(not subscribed)");
        let mut a = Client::new(gw, "A");
        assert_eq!(a.sub(&t), 0);
        assert_eq!(p.publish(&t, "m1", false), 1);
        a.expect_msg_seq(&t, 1, "m1", "live");

        std::thread::sleep(PAST_TTL);
        assert_eq!(topics(gw), 1.0, "a subscribed topic is held past the TTL");
        assert_eq!(p.publish(&t, "m2", false), 2, "the seq continues");
        a.expect_msg_seq(&t, 2, "m2", "live after the TTL");

        // The last member leaves; a publish 0.6 s later restarts the clock:
        // 1.2 s after the leave the topic is still there.
        a.unsub(&t);
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(p.publish(&t, "m3", false), 3, "0.6 s after the last leave");
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(
            p.publish(&t, "m4", false),
            4,
            "0.6 s after the last publish (1.2 s after the last leave): \
             the TTL runs from the later of the two"
        );
        assert_eq!(topics(gw), 1.0);

        wait_topics(gw, 0.0, EXPIRY, "no member and no publish for the TTL");
        assert_eq!(p.publish(&t, "m1 again", false), 1);

        // A member that ends its session with close 1000 lets it go too.
        let u = topic("ttlclose");
        let mut b = Client::new(gw, "B");
        assert_eq!(b.sub(&u), 0);
        assert_eq!(p.publish(&u, "x", false), 1);
        b.expect_msg_seq(&u, 1, "x", "live");
        wait_topics(gw, 2.0, Duration::from_secs(5), "t (just published) and u");
        b.close_with(1000);
        wait_topics(gw, 0.0, EXPIRY, "both topics expired");
        assert_eq!(p.publish(&u, "y", false), 1);
    });
}

#[test]
fn a_resumable_session_keeps_its_topic_and_its_replay() {
    for_each_driver(
        &args(&["--topic-ttl", "1s", "--session-ttl", "30s"]),
        |gw| {
            let t = topic("ttlresume");
            let mut p = Client::new(gw, "P(not subscribed)");
            let mut a = Client::new(gw, "A");
            assert_eq!(a.sub(&t), 0);
            assert_eq!(p.publish(&t, "seen", false), 1);
            a.expect_msg_seq(&t, 1, "seen", "before the drop");

            let (id, peer) = (a.id.clone(), a.peer.clone());
            a.drop_tcp();
            wait_open_connections(gw, 1, "after A dropped its socket");
            assert_eq!(p.publish(&t, "missed-2", false), 2);
            assert_eq!(p.publish(&t, "missed-3", false), 3);

            // Longer than the topic TTL with no live member: the resumable
            // session holds the topic.
            std::thread::sleep(PAST_TTL);
            assert_eq!(topics(gw), 1.0, "held by the resumable session");

            let mut a = Client::resume(gw, "A", &id);
            assert_eq!(a.peer, peer);
            a.expect_msg_seq(&t, 2, "missed-2", "replay after more than the topic TTL");
            a.expect_msg_seq(&t, 3, "missed-3", "replay after more than the topic TTL");
            a.expect_quiet(Duration::from_millis(200), "nothing else replayed");
            assert_eq!(p.publish(&t, "live", false), 4, "the seq continues");
            a.expect_msg_seq(&t, 4, "live", "live after the resume");

            // Away again with nothing missed, longer than the TTL: resumed,
            // nothing replayed, the seq still continues.
            a.drop_tcp();
            wait_open_connections(gw, 1, "after A dropped again");
            std::thread::sleep(PAST_TTL);
            assert_eq!(topics(gw), 1.0);
            let mut a = Client::resume(gw, "A", &id);
            a.expect_quiet(Duration::from_millis(300), "nothing missed");
            assert_eq!(p.publish(&t, "after", false), 5);
            a.expect_msg_seq(&t, 5, "after", "live after the second resume");

            // Once the session ends, the topic goes.
            a.close_with(1000);
            wait_topics(gw, 0.0, EXPIRY, "the session ended and the TTL ran out");
            assert_eq!(p.publish(&t, "new", false), 1);
        },
    );
}

#[test]
fn five_thousand_topics_published_once_are_all_forgotten() {
    const N: usize = 5000;
    const BATCH: usize = 500;
    for_each_driver(&args(&["--topic-ttl", "1s"]), |gw| {
        let prefix = topic("many");
        let name = |i: usize| format!("{prefix}.{i}");
        let mut p = Client::new(gw, "P(not subscribed)");
        assert_eq!(topics(gw), 0.0);

        // Pipelined: a batch of `pub` frames in one write, then its answers
        // (per topic; their order across topics is not specified).
        for start in (0..N).step_by(BATCH) {
            let mut bytes = Vec::new();
            for i in start..start + BATCH {
                bytes.extend_from_slice(&common::frame(
                    true,
                    common::OP_TEXT,
                    format!("pub {} once", name(i)).as_bytes(),
                ));
            }
            p.send_raw(&bytes, "a batch of publishes");
            let mut seen = std::collections::HashSet::new();
            for _ in 0..BATCH {
                let l = p.line("`ok pub <topic> 1`");
                let t = l
                    .strip_prefix("ok pub ")
                    .and_then(|r| r.strip_suffix(" 1"))
                    .unwrap_or_else(|| panic!("expected `ok pub <topic> 1`, got {l:?}"));
                assert!(seen.insert(t.to_string()), "two answers for {t}");
            }
        }
        wait_topics(
            gw,
            N as f64,
            Duration::from_secs(5),
            "every published topic is held",
        );

        wait_topics(
            gw,
            0.0,
            Duration::from_secs(20),
            "5,000 idle topics after the TTL",
        );
        for i in [0, N / 2, N - 1] {
            assert_eq!(
                p.publish(&name(i), "again", false),
                1,
                "a forgotten topic starts at seq 1"
            );
        }
        wait_topics(gw, 3.0, Duration::from_secs(5), "three topics again");
    });
}
