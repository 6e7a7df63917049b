//! Resume and replay work the same above the presence cap (DESIGN §6,
//! "Topics at scale"): with `--presence-max-members 2`, a member whose
//! socket drops comes back with its cookie, gets `hello … resumed`, exactly
//! the messages it missed in order, then live traffic; nobody sees a `join`
//! or `leave` about it, and the cap keeps counting it while it is away.

mod common;
mod gw;

use common::for_each_driver;
use gw::{args, topic, wait_open_connections, Client};
use std::time::Duration;

/// `who <topic>`, answered with the raw `members …` line.
fn who_line(c: &mut Client, t: &str) -> String {
    c.send_text(&format!("who {t}"));
    c.line(&format!("the answer to `who {t}`"))
}

/// `members <t> <n> <ids…>` with the ids sorted.
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

/// `p` publishes `payload`; each of `members` must get it as its next line.
fn publish_to(p: &mut Client, t: &str, payload: &str, members: &mut [&mut Client]) -> u64 {
    let seq = p.publish(t, payload, false);
    for m in members.iter_mut() {
        let name = m.name.clone();
        m.expect_msg_seq(
            t,
            seq,
            payload,
            &format!("{name}: `{payload}` as its next line (no presence line)"),
        );
    }
    seq
}

#[test]
fn a_member_above_the_cap_resumes_with_exactly_what_it_missed() {
    for_each_driver(&args(&["--presence-max-members", "2"]), |gw| {
        let t = topic("replaycap");
        let mut p = Client::new(gw, "P(publisher)");
        let mut a = Client::new(gw, "A");
        let mut b = Client::new(gw, "B");
        let mut c = Client::new(gw, "C");
        let mut d = Client::new(gw, "D");
        assert_eq!(a.sub(&t), 0);
        assert_eq!(b.sub(&t), 0);
        a.expect_line(&format!("join {t} {}", b.peer), "A sees B join (2 members)");
        assert_eq!(c.sub(&t), 0, "3rd member: above the cap");
        assert_eq!(d.sub(&t), 0, "4th member");
        let first = publish_to(
            &mut p,
            &t,
            "before the drop",
            &mut [&mut a, &mut b, &mut c, &mut d],
        );
        assert_eq!(first, 1);

        let (d_id, d_peer) = (d.id.clone(), d.peer.clone());
        d.drop_tcp();
        wait_open_connections(gw, 4, "after D dropped its socket");
        assert_eq!(
            who_line(&mut p, &t),
            format!("members {t} 4"),
            "the dropped D still counts: 4 members, above the cap"
        );

        let mut missed = Vec::new();
        for i in 0..5 {
            let payload = format!("missed-{i}");
            let seq = publish_to(&mut p, &t, &payload, &mut [&mut a, &mut b, &mut c]);
            missed.push((seq, payload));
        }
        assert_eq!(
            missed.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![2, 3, 4, 5, 6]
        );

        let mut d = Client::resume(gw, "D", &d_id);
        assert_eq!(d.peer, d_peer, "the same peer id after the resume");
        for (seq, payload) in &missed {
            d.expect_msg_seq(&t, *seq, payload, "the replay, in order");
        }
        d.expect_quiet(Duration::from_millis(300), "nothing after the replay");
        let live = publish_to(&mut p, &t, "live", &mut [&mut a, &mut b, &mut c, &mut d]);
        assert_eq!(live, 7);
        for (m, n) in [(&mut a, "A"), (&mut b, "B"), (&mut c, "C"), (&mut d, "D")] {
            m.expect_quiet(
                Duration::from_millis(150),
                &format!("{n}: no join/leave about D, no duplicate"),
            );
        }
        assert_eq!(who_line(&mut a, &t), format!("members {t} 4"));

        // D is subscribed as before and can publish to everyone.
        let own = d.publish(&t, "D is back", true);
        assert_eq!(own, 8);
        for (m, n) in [(&mut a, "A"), (&mut b, "B"), (&mut c, "C")] {
            m.expect_msg_seq(&t, 8, "D is back", &format!("{n}: D's publish"));
        }
    });
}

#[test]
fn the_cap_is_crossed_while_a_member_is_away() {
    for_each_driver(&args(&["--presence-max-members", "2"]), |gw| {
        let t = topic("awaycap");
        let mut p = Client::new(gw, "P(publisher)");
        let mut a = Client::new(gw, "A");
        let mut b = Client::new(gw, "B");
        let mut c = Client::new(gw, "C");
        a.sub(&t);
        b.sub(&t);
        a.expect_line(&format!("join {t} {}", b.peer), "A sees B join");
        c.sub(&t);
        publish_to(&mut p, &t, "seen by all", &mut [&mut a, &mut b, &mut c]);

        let (c_id, c_peer) = (c.id.clone(), c.peer.clone());
        c.drop_tcp();
        wait_open_connections(gw, 3, "after C dropped its socket");

        // B leaves while C is away: the topic had 3 members (C resumable),
        // more than the cap, so A gets no leave.
        b.unsub(&t);
        let mut missed = Vec::new();
        for i in 0..3 {
            let payload = format!("while-away-{i}");
            let seq = publish_to(&mut p, &t, &payload, &mut [&mut a]);
            missed.push((seq, payload));
        }
        assert_eq!(who_line(&mut p, &t), listed(&t, &[&a.peer, &c_peer]));

        let mut c = Client::resume(gw, "C", &c_id);
        for (seq, payload) in &missed {
            c.expect_msg_seq(&t, *seq, payload, "C's replay, in order");
        }
        c.expect_quiet(Duration::from_millis(300), "nothing after the replay");
        a.expect_quiet(Duration::from_millis(100), "A: no presence line for C");

        // B comes back: 2 -> 3, above the cap again: no join.
        b.sub(&t);
        publish_to(
            &mut p,
            &t,
            "after B came back",
            &mut [&mut a, &mut b, &mut c],
        );
        assert_eq!(who_line(&mut p, &t), format!("members {t} 3"));
        for (m, n) in [(&mut a, "A"), (&mut b, "B"), (&mut c, "C")] {
            m.expect_quiet(Duration::from_millis(100), &format!("{n}: nothing pending"));
        }
    });
}
