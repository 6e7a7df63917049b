//! A dropped session is kept for `--session-ttl`, then expires: the other
//! subscribers get `leave`, and a later reconnect with the old cookie starts
//! a `new` session under the same id. A close with 1000 ends the session at
//! once; any other close code keeps it for resume.

mod common;
mod gw;

use common::for_each_driver;
use gw::{args, metric, topic, wait_metric, wait_open_connections, Client, Event};
use std::time::{Duration, Instant};

const ENDED: &str = "wsgate_sessions_total{event=\"ended\"}";

#[test]
fn ttl_expiry_sends_leave_and_a_later_reconnect_is_new() {
    for_each_driver(&args(&["--session-ttl", "1s"]), |gw| {
        let t = topic("ttl");
        let mut a = Client::new(gw, "A");
        let mut b = Client::new(gw, "B");
        a.sub(&t);
        b.sub(&t);
        a.expect_line(&format!("join {t} {}", b.peer), "B joining");
        let ended_before = gw.scrape().val(ENDED);

        let (a_id, a_peer) = (a.id.clone(), a.peer.clone());
        let dropped = Instant::now();
        a.drop_tcp();
        match b.next_within(Duration::from_secs(10), "A's leave after the TTL") {
            Event::Text(l) if l == format!("leave {t} {a_peer}") => {}
            other => panic!("B: expected `leave {t} {a_peer}`, got {other:?}"),
        }
        let after = dropped.elapsed();
        assert!(
            after >= Duration::from_millis(500),
            "leave came {after:?} after the drop: before the 1 s TTL could have run out"
        );
        wait_metric(gw, ENDED, "the expired session is counted as ended", |v| {
            v >= ended_before + 1.0
        });
        // The expired session is reclaimed: only B's is held.
        wait_metric(
            gw,
            "wsgate_sessions_held",
            "expired session reclaimed",
            |v| v == 1.0,
        );
        assert_eq!(b.who(&t), vec![b.peer.clone()], "members after expiry");

        // The cookie still works, but names nothing any more: a new session
        // with the same id and no subscriptions.
        let mut a = Client::connect(gw, "A again", Some(&a_id));
        assert!(
            !a.resumed,
            "reconnect after the TTL: expected `hello <peer> new …`, got {:?}",
            a.hello
        );
        assert_ne!(a.peer, a_peer, "a new session gets a new peer id");
        b.publish(&t, "after expiry", true);
        a.expect_quiet(
            Duration::from_millis(300),
            "a new session has no subscriptions",
        );
        // Subscribing again is a fresh join.
        a.sub(&t);
        b.expect_line(
            &format!("join {t} {}", a.peer),
            "A rejoining as a new session",
        );
    });
}

#[test]
fn close_1000_ends_the_session_at_once() {
    // Default TTL (120 s): a leave within seconds can only come from the close.
    for_each_driver(&args(&[]), |gw| {
        let t = topic("close1000");
        let mut a = Client::new(gw, "A");
        let mut b = Client::new(gw, "B");
        a.sub(&t);
        b.sub(&t);
        a.expect_line(&format!("join {t} {}", b.peer), "B joining");
        let ended_before = gw.scrape().val(ENDED);
        let (a_id, a_peer) = (a.id.clone(), a.peer.clone());
        a.close_with(1000);
        b.expect_line(
            &format!("leave {t} {a_peer}"),
            "leave right after close 1000",
        );
        wait_metric(gw, ENDED, "close 1000 ends the session", |v| {
            v >= ended_before + 1.0
        });
        assert_eq!(b.who(&t), vec![b.peer.clone()], "members after close 1000");
        let a = Client::connect(gw, "A again", Some(&a_id));
        assert!(
            !a.resumed,
            "reconnect after close 1000: expected `hello <peer> new …`, got {:?}",
            a.hello
        );
    });
}

#[test]
fn close_with_another_code_keeps_the_session() {
    for_each_driver(&args(&[]), |gw| {
        let t = topic("close1001");
        let mut a = Client::new(gw, "A");
        let mut b = Client::new(gw, "B");
        a.sub(&t);
        b.sub(&t);
        a.expect_line(&format!("join {t} {}", b.peer), "B joining");
        let (a_id, a_peer) = (a.id.clone(), a.peer.clone());
        a.close_with(1001);
        wait_open_connections(gw, 1, "after A closed with 1001");
        let seq = b.publish(&t, "while A is away", true);
        b.expect_quiet(Duration::from_millis(300), "no leave for a 1001 close");
        let mut a = Client::resume(gw, "A", &a_id);
        assert_eq!(a.peer, a_peer, "the peer id survives a resume");
        a.expect_msg_seq(&t, seq, "while A is away", "replay after a 1001 close");
        a.expect_quiet(Duration::from_millis(200), "nothing more");
        assert_eq!(
            metric(gw, "wsgate_sessions_held"),
            2.0,
            "A and B are the only sessions"
        );
    });
}
