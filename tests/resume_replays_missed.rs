//! A client whose network drops (no close frame) and that comes back with its
//! cookie inside the TTL gets `hello … resumed`, exactly the messages it
//! missed, in order, before live traffic, and nobody saw it leave or rejoin.

mod common;
mod gw;

use common::for_each_driver;
use gw::{args, topic, wait_open_connections, Client};
use std::time::Duration;

#[test]
fn resume_replays_the_five_missed_messages_then_live_ones() {
    for_each_driver(&args(&[]), |gw| {
        let t = topic("resume");
        let mut a = Client::new(gw, "A");
        let mut b = Client::new(gw, "B");
        assert_eq!(a.sub(&t), 0, "a new topic starts at seq 0");
        assert_eq!(b.sub(&t), 0);
        a.expect_line(&format!("join {t} {}", b.peer), "B joining");

        // One message while both are connected: A has seen seq 1.
        let s1 = b.publish(&t, "before the drop", true);
        assert_eq!(s1, 1);
        a.expect_msg_seq(&t, 1, "before the drop", "the message before the drop");

        let (a_id, a_peer) = (a.id.clone(), a.peer.clone());
        a.drop_tcp();
        wait_open_connections(gw, 1, "after A dropped its socket");

        let mut seqs = Vec::new();
        for i in 0..5 {
            seqs.push(b.publish(&t, &format!("missed number {i}"), true));
        }
        assert_eq!(seqs, vec![2, 3, 4, 5, 6], "B's publishes while A is away");

        let mut a = Client::resume(gw, "A", &a_id);
        for (i, seq) in seqs.iter().enumerate() {
            a.expect_msg_seq(
                &t,
                *seq,
                &format!("missed number {i}"),
                &format!("replay of missed message {i}"),
            );
        }
        // Live traffic comes after the replay; nothing is repeated.
        let live = b.publish(&t, "live after resume", true);
        assert_eq!(live, 7);
        a.expect_msg_seq(&t, 7, "live after resume", "the first live message");
        a.expect_quiet(Duration::from_millis(300), "after the live message");

        // A is still subscribed (its subscription came back) and can publish.
        let own = a.publish(&t, "A is back", true);
        assert_eq!(own, 8);
        b.expect_msg_seq(&t, 8, "A is back", "A's publish after resume");

        // B never saw A leave or join (any such line would have broken the
        // strict sequences above, and nothing is pending now).
        b.expect_quiet(Duration::from_millis(300), "B after the resume");
        assert_eq!(b.who(&t), sorted(vec![a_peer.clone(), b.peer.clone()]));
    });
}

#[test]
fn resume_with_nothing_missed_replays_nothing() {
    for_each_driver(&args(&[]), |gw| {
        let t = topic("noreplay");
        let mut a = Client::new(gw, "A");
        let mut b = Client::new(gw, "B");
        a.sub(&t);
        b.sub(&t);
        a.expect_line(&format!("join {t} {}", b.peer), "B joining");
        for i in 1..=3 {
            b.publish(&t, &format!("seen {i}"), true);
            a.expect_msg_seq(&t, i, &format!("seen {i}"), "live before the drop");
        }
        let id = a.id.clone();
        a.drop_tcp();
        wait_open_connections(gw, 1, "after A dropped");
        let mut a = Client::resume(gw, "A", &id);
        a.expect_quiet(Duration::from_millis(500), "resume with nothing missed");
        b.publish(&t, "next", true);
        a.expect_msg_seq(&t, 4, "next", "live after an empty replay");
        b.expect_quiet(Duration::from_millis(200), "B: no presence for a resume");
    });
}

#[test]
fn resume_brings_back_every_subscription_and_only_those() {
    // Topics are owned by different cores; six of them cover both.
    for_each_driver(&args(&[]), |gw| {
        let topics: Vec<String> = (0..6).map(|i| topic(&format!("multi{i}"))).collect();
        let dropped_topic = topic("unsubscribed");
        let mut a = Client::new(gw, "A");
        let mut p = Client::new(gw, "P");
        for t in &topics {
            a.sub(t);
        }
        a.sub(&dropped_topic);
        a.unsub(&dropped_topic);
        for t in &topics {
            p.publish(t, "seen", false);
            a.expect_msg_seq(t, 1, "seen", "before the drop");
        }
        let (id, peer) = (a.id.clone(), a.peer.clone());
        a.drop_tcp();
        wait_open_connections(gw, 1, "after A dropped");

        // While A is away: B (a bystander on the same topics) can still see A
        // as a member: presence does not flicker.
        let mut b = Client::new(gw, "B");
        let mut members = b.who(&topics[0]);
        assert_eq!(
            members,
            vec![peer.clone()],
            "A is still a member while away"
        );
        for (i, t) in topics.iter().enumerate() {
            for k in 0..=i {
                p.publish(t, &format!("missed {i}.{k}"), false);
            }
        }
        p.publish(&dropped_topic, "not for A", false);

        let mut a = Client::resume(gw, "A", &id);
        // Per topic: exactly the missed messages, in order. Across topics the
        // order is not specified.
        let expected: usize = (1..=topics.len()).sum();
        let mut got: Vec<Vec<(u64, String)>> = vec![Vec::new(); topics.len()];
        for n in 0..expected {
            let l = a.line(&format!("replayed message {n} of {expected}"));
            let (t, seq, payload) =
                gw::parse_msg(&l).unwrap_or_else(|| panic!("A: unexpected line {l:?}"));
            let i = topics
                .iter()
                .position(|x| x == t)
                .unwrap_or_else(|| panic!("A: replay for a topic it is not subscribed to: {l:?}"));
            got[i].push((seq, payload.to_string()));
        }
        for (i, g) in got.iter().enumerate() {
            let want: Vec<(u64, String)> = (0..=i)
                .map(|k| (k as u64 + 2, format!("missed {i}.{k}")))
                .collect();
            assert_eq!(g, &want, "replay of {}", topics[i]);
        }
        a.expect_quiet(Duration::from_millis(300), "nothing else after the replay");
        for t in &topics {
            let seq = p.publish(t, "live", false);
            a.expect_msg_seq(t, seq, "live", "live after the replay");
        }
        assert_eq!(a.peer, peer, "the same peer id after the resume");
        members = b.who(&topics[5]);
        assert_eq!(members, vec![peer.clone()]);
    });
}

#[test]
fn resume_during_live_traffic_has_no_hole_and_no_duplicate() {
    // A reconnects while a publisher is busy: the replay and the live stream
    // must join without a hole or a repeat. Several rounds, so that some
    // reconnects are accepted by the core that does not own the session.
    const ROUNDS: u64 = 6;
    const MISSED: u64 = 40;
    const DURING: u64 = 300;
    for_each_driver(&args(&["--history-size", "1000"]), |gw| {
        let t = topic("racing");
        let mut a = Client::new(gw, "A");
        a.sub(&t);
        let id = a.id.clone();
        let mut p = Client::new(gw, "P");
        let mut next = 1u64;
        for round in 1..=ROUNDS {
            a.drop_tcp();
            wait_open_connections(gw, 1, &format!("round {round}: after A dropped"));
            for _ in 0..MISSED {
                assert_eq!(p.publish(&t, &format!("m{next}"), false), next);
                next += 1;
            }
            // Keep publishing from another thread while A comes back.
            let tt = t.clone();
            let first = next;
            let (started_tx, started_rx) = std::sync::mpsc::channel();
            let publisher = std::thread::spawn(move || {
                for seq in first..first + DURING {
                    assert_eq!(p.publish(&tt, &format!("m{seq}"), false), seq);
                    if seq == first + 10 {
                        let _ = started_tx.send(());
                    }
                }
                p
            });
            started_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the publisher thread got going");
            a = Client::resume(gw, &format!("A (round {round})"), &id);
            let last = first + DURING - 1;
            let mut want = first - MISSED;
            while want <= last {
                let l = a.line(&format!("round {round}: seq {want}"));
                assert_eq!(
                    l,
                    format!("msg {t} {want} m{want}"),
                    "round {round}: the replay and live stream must be seamless"
                );
                want += 1;
            }
            p = publisher.join().expect("publisher thread");
            next = last + 1;
            a.expect_quiet(Duration::from_millis(100), "no duplicates at the end");
        }
    });
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
