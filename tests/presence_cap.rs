//! Presence is bounded (DESIGN §6, "Topics at scale"): with
//! `--presence-max-members N`, a `join` is sent only when the topic has at
//! most N members after it, a `leave` only when it had at most N before it;
//! `who` lists the ids at or below N and answers the count alone above it.
//! A member is a live or a resumable session: a dropped socket counts until
//! its `--session-ttl` runs out. With N = 0 there are no presence lines at
//! all and `who` only ever counts.
//!
//! "No line was sent" is shown by a marker: a non-member publishes, and the
//! member's very next line must be that message (a presence line for the
//! same topic would have come before it), then nothing more for a moment.

mod common;
mod gw;

use common::for_each_driver;
use gw::{args, topic, wait_open_connections, Client, Event};
use std::time::{Duration, Instant};

/// `who <topic>`, answered with the raw `members …` line.
fn who_line(c: &mut Client, t: &str) -> String {
    c.send_text(&format!("who {t}"));
    c.line(&format!("the answer to `who {t}`"))
}

/// `members <t> <n> <ids…>` with the ids sorted (the listing form).
fn listed(t: &str, peers: &[&str]) -> String {
    let mut ids: Vec<&str> = peers.to_vec();
    ids.sort();
    let mut s = format!("members {t} {}", ids.len());
    for id in ids {
        s.push(' ');
        s.push_str(id);
    }
    s
}

/// `members <t> <n>` (the count-only form above the cap).
fn counted(t: &str, n: usize) -> String {
    format!("members {t} {n}")
}

/// The publisher `p` (not a member) publishes a marker; each of `members`
/// must get exactly that message as its next line (no presence line before
/// it) and then nothing for a moment.
fn mark(p: &mut Client, t: &str, members: &mut [&mut Client], label: &str) -> u64 {
    let payload = format!("mark:{}", label.replace(' ', "_"));
    let seq = p.publish(t, &payload, false);
    for m in members.iter_mut() {
        let name = m.name.clone();
        m.expect_msg_seq(
            t,
            seq,
            &payload,
            &format!("{label}: {name}'s next line must be the marker, not a presence line"),
        );
    }
    for m in members.iter_mut() {
        m.expect_quiet(
            Duration::from_millis(100),
            &format!("{label}: nothing after the marker"),
        );
    }
    seq
}

#[test]
fn crossing_the_cap_up_and_down() {
    for_each_driver(&args(&["--presence-max-members", "3"]), |gw| {
        let t = topic("cap");
        let mut p = Client::new(gw, "P(non-member)");
        let mut a = Client::new(gw, "A");
        let mut b = Client::new(gw, "B");
        let mut c = Client::new(gw, "C");
        let mut d = Client::new(gw, "D");
        let (pa, pb, pc) = (a.peer.clone(), b.peer.clone(), c.peer.clone());

        // 1..=3 members: presence as without a cap.
        assert_eq!(a.sub(&t), 0);
        assert_eq!(who_line(&mut p, &t), listed(&t, &[&pa]));
        assert_eq!(b.sub(&t), 0);
        a.expect_line(&format!("join {t} {pb}"), "A sees B join (2 members)");
        assert_eq!(c.sub(&t), 0);
        a.expect_line(&format!("join {t} {pc}"), "A sees C join (3 members)");
        b.expect_line(&format!("join {t} {pc}"), "B sees C join (3 members)");
        assert_eq!(who_line(&mut p, &t), listed(&t, &[&pa, &pb, &pc]));
        assert_eq!(who_line(&mut d, &t), listed(&t, &[&pa, &pb, &pc]));

        // The 4th member takes the topic above the cap: no join at anyone.
        assert_eq!(d.sub(&t), 0);
        mark(
            &mut p,
            &t,
            &mut [&mut a, &mut b, &mut c, &mut d],
            "after the 4th sub",
        );
        assert_eq!(who_line(&mut p, &t), counted(&t, 4), "who above the cap");
        assert_eq!(who_line(&mut a, &t), counted(&t, 4), "a member's who");

        // 4 -> 3: no leave (the topic had more than 3 before it).
        d.unsub(&t);
        mark(
            &mut p,
            &t,
            &mut [&mut a, &mut b, &mut c],
            "after the unsub from 4 to 3",
        );
        d.expect_quiet(Duration::from_millis(100), "D unsubscribed");
        assert_eq!(
            who_line(&mut p, &t),
            listed(&t, &[&pa, &pb, &pc]),
            "who lists the ids again at the cap"
        );

        // 3 -> 2: below the cap, leave lines resume.
        c.unsub(&t);
        a.expect_line(&format!("leave {t} {pc}"), "A sees C leave (3 -> 2)");
        b.expect_line(&format!("leave {t} {pc}"), "B sees C leave (3 -> 2)");
        assert_eq!(who_line(&mut p, &t), listed(&t, &[&pa, &pb]));

        // Up again: 2 -> 3 sends a join, 3 -> 4 does not.
        c.sub(&t);
        a.expect_line(&format!("join {t} {pc}"), "A sees C rejoin (2 -> 3)");
        b.expect_line(&format!("join {t} {pc}"), "B sees C rejoin (2 -> 3)");
        d.sub(&t);
        mark(
            &mut p,
            &t,
            &mut [&mut a, &mut b, &mut c, &mut d],
            "after the second 3 -> 4 sub",
        );
        assert_eq!(who_line(&mut b, &t), counted(&t, 4));

        // A session ended by close 1000 leaves like an unsub: 4 -> 3 silent…
        d.close_with(1000);
        mark(
            &mut p,
            &t,
            &mut [&mut a, &mut b, &mut c],
            "after D's close 1000 (4 -> 3)",
        );
        assert_eq!(who_line(&mut p, &t), listed(&t, &[&pa, &pb, &pc]));
        // … 3 -> 2 announced.
        c.close_with(1000);
        a.expect_line(&format!("leave {t} {pc}"), "A sees C's close 1000 (3 -> 2)");
        b.expect_line(&format!("leave {t} {pc}"), "B sees C's close 1000 (3 -> 2)");
        assert_eq!(who_line(&mut p, &t), listed(&t, &[&pa, &pb]));

        // Every member still got every message exactly once: nothing pending.
        mark(&mut p, &t, &mut [&mut a, &mut b], "at the end");
    });
}

#[test]
fn zero_means_no_presence_lines_and_who_counts() {
    for_each_driver(&args(&["--presence-max-members", "0"]), |gw| {
        let t = topic("nopresence");
        let empty = topic("empty");
        let mut p = Client::new(gw, "P(non-member)");
        let mut a = Client::new(gw, "A");
        let mut b = Client::new(gw, "B");
        let mut c = Client::new(gw, "C");

        assert_eq!(
            who_line(&mut p, &empty),
            counted(&empty, 0),
            "an empty topic"
        );

        assert_eq!(a.sub(&t), 0);
        assert_eq!(
            who_line(&mut p, &t),
            counted(&t, 1),
            "with N = 0, even one member is counted, not listed"
        );
        assert_eq!(b.sub(&t), 0);
        assert_eq!(c.sub(&t), 0);
        mark(
            &mut p,
            &t,
            &mut [&mut a, &mut b, &mut c],
            "after three subs",
        );
        assert_eq!(who_line(&mut p, &t), counted(&t, 3));
        assert_eq!(who_line(&mut a, &t), counted(&t, 3), "a member's who");

        b.unsub(&t);
        mark(&mut p, &t, &mut [&mut a, &mut c], "after an unsub");
        assert_eq!(who_line(&mut p, &t), counted(&t, 2));

        c.close_with(1000);
        mark(&mut p, &t, &mut [&mut a], "after a close 1000");
        assert_eq!(who_line(&mut p, &t), counted(&t, 1));

        // A resumable member that comes back: no line either way.
        let id = a.id.clone();
        b.sub(&t);
        a.drop_tcp();
        wait_open_connections(gw, 2, "after A dropped its socket");
        assert_eq!(who_line(&mut p, &t), counted(&t, 2), "A is still a member");
        let mut a = Client::resume(gw, "A", &id);
        mark(&mut p, &t, &mut [&mut a, &mut b], "after A resumed");

        a.unsub(&t);
        b.unsub(&t);
        // `ok unsub` comes from the client's own core; the topic's owner
        // (perhaps the other core) hears of it by mail, maybe after P's `who`.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut last = who_line(&mut p, &t);
        while last != counted(&t, 0) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            last = who_line(&mut p, &t);
        }
        assert_eq!(last, counted(&t, 0), "no member left");
        p.expect_quiet(Duration::from_millis(100), "P never subscribed");
    });
}

#[test]
fn a_dropped_member_counts_until_its_session_expires() {
    // The dropped sessions expire after 3 s; the steps that need them still
    // resumable take well under that.
    for_each_driver(
        &args(&["--presence-max-members", "3", "--session-ttl", "3s"]),
        |gw| {
            let t = topic("capdrop");
            let mut p = Client::new(gw, "P(non-member)");
            let mut a = Client::new(gw, "A");
            let mut b = Client::new(gw, "B");
            let mut c = Client::new(gw, "C");
            let mut d = Client::new(gw, "D");
            let (pa, pb, pc, pd) = (
                a.peer.clone(),
                b.peer.clone(),
                c.peer.clone(),
                d.peer.clone(),
            );

            a.sub(&t);
            b.sub(&t);
            a.expect_line(&format!("join {t} {pb}"), "A sees B join");
            c.sub(&t);
            a.expect_line(&format!("join {t} {pc}"), "A sees C join");
            b.expect_line(&format!("join {t} {pc}"), "B sees C join");

            // C drops its socket: still a member (resumable), no leave.
            c.drop_tcp();
            let c_dropped = Instant::now();
            wait_open_connections(gw, 4, "after C dropped its socket");
            assert_eq!(
                who_line(&mut p, &t),
                listed(&t, &[&pa, &pb, &pc]),
                "C is a member while resumable"
            );

            // D is the 4th member counting C: no join.
            d.sub(&t);
            mark(
                &mut p,
                &t,
                &mut [&mut a, &mut b, &mut d],
                "after D's sub made 4 members with the dropped C",
            );
            assert_eq!(who_line(&mut p, &t), counted(&t, 4));
            assert!(
                c_dropped.elapsed() < Duration::from_secs(3),
                "the steps above took {:?}: C's session may have expired before D's sub \
                 (the test needs them faster than --session-ttl 3s)",
                c_dropped.elapsed()
            );

            // C's session runs out: 4 -> 3, no leave. Poll `who` from P until
            // it lists three, then A and B must have seen nothing.
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let l = who_line(&mut p, &t);
                if l == listed(&t, &[&pa, &pb, &pd]) {
                    break;
                }
                assert_eq!(l, counted(&t, 4), "while C is still resumable");
                assert!(
                    Instant::now() < deadline,
                    "C's session did not expire within 15 s (--session-ttl 3s)"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            mark(
                &mut p,
                &t,
                &mut [&mut a, &mut b, &mut d],
                "after C expired (4 -> 3)",
            );

            // D drops and expires: 3 -> 2, so A and B see D leave.
            d.drop_tcp();
            wait_open_connections(gw, 3, "after D dropped its socket");
            for (m, n) in [(&mut a, "A"), (&mut b, "B")] {
                match m.next_within(Duration::from_secs(15), "D's leave after its TTL") {
                    Event::Text(l) if l == format!("leave {t} {pd}") => {}
                    other => panic!("{n}: expected `leave {t} {pd}` (3 -> 2), got {other:?}"),
                }
            }
            assert_eq!(who_line(&mut p, &t), listed(&t, &[&pa, &pb]));
            mark(&mut p, &t, &mut [&mut a, &mut b], "at the end");
        },
    );
}
