//! Presence: `join` / `leave` go to the other subscribers of a topic (never
//! to the session itself), `who` lists the members sorted, and a second
//! socket with the same cookie takes the session over (the old socket gets
//! close 1008 "replaced") without any presence change.

mod common;
mod gw;

use common::for_each_driver;
use gw::{args, topic, Client};
use std::time::Duration;

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn join_leave_and_members() {
    for_each_driver(&args(&[]), |gw| {
        let t = topic("presence");
        let mut a = Client::new(gw, "A");
        let mut b = Client::new(gw, "B");
        let mut c = Client::new(gw, "C");
        // Presence names sessions by peer id, never by the session id.
        let (ida, idb, idc) = (a.peer.clone(), b.peer.clone(), c.peer.clone());

        assert_eq!(a.who(&t), Vec::<String>::new(), "an unknown topic");
        assert_eq!(a.sub(&t), 0);
        assert_eq!(a.who(&t), vec![ida.clone()]);

        assert_eq!(b.sub(&t), 0);
        a.expect_line(&format!("join {t} {idb}"), "A sees B join");
        assert_eq!(c.sub(&t), 0);
        a.expect_line(&format!("join {t} {idc}"), "A sees C join");
        b.expect_line(&format!("join {t} {idc}"), "B sees C join");

        // A non-member may ask too; its own sub/who produced no join for itself
        // (the strict reads above would have tripped on it).
        let mut d = Client::new(gw, "D");
        assert_eq!(d.who(&t), sorted(&[&ida, &idb, &idc]));
        assert_eq!(c.who(&t), sorted(&[&ida, &idb, &idc]));

        b.unsub(&t);
        a.expect_line(&format!("leave {t} {idb}"), "A sees B leave");
        c.expect_line(&format!("leave {t} {idb}"), "C sees B leave");
        assert_eq!(d.who(&t), sorted(&[&ida, &idc]));

        // B no longer gets messages; A and C do.
        let seq = d.publish(&t, "after B left", false);
        assert_eq!(seq, 1);
        a.expect_msg_seq(&t, 1, "after B left", "A still subscribed");
        c.expect_msg_seq(&t, 1, "after B left", "C still subscribed");
        b.expect_quiet(Duration::from_millis(300), "B unsubscribed");

        // Re-subscribing after unsub is a fresh join.
        assert_eq!(b.sub(&t), 1, "current seq at subscription");
        a.expect_line(&format!("join {t} {idb}"), "A sees B rejoin");
        c.expect_line(&format!("join {t} {idb}"), "C sees B rejoin");

        // Members of other topics are not mixed in.
        let u = topic("other");
        d.sub(&u);
        assert_eq!(a.who(&u), vec![d.peer.clone()]);
        assert_eq!(a.who(&t), sorted(&[&ida, &idb, &idc]));
        for (x, n) in [(&mut a, "A"), (&mut b, "B"), (&mut c, "C"), (&mut d, "D")] {
            x.expect_quiet(Duration::from_millis(100), &format!("{n}: nothing pending"));
        }
    });
}

#[test]
fn takeover_closes_the_old_socket_with_1008_replaced() {
    for_each_driver(&args(&[]), |gw| {
        let t = topic("takeover");
        let mut a = Client::new(gw, "A(old)");
        let mut b = Client::new(gw, "B");
        a.sub(&t);
        b.sub(&t);
        a.expect_line(&format!("join {t} {}", b.peer), "B joining");
        let (id, peer) = (a.id.clone(), a.peer.clone());

        // Same cookie while the old socket is still open.
        let mut a2 = Client::resume(gw, "A(new)", &id);
        assert_eq!(a2.peer, peer, "a takeover keeps the peer id");
        a.expect_server_close(1008, "replaced", "the replaced socket");

        // The new socket has the subscription; nobody saw a leave or join.
        let seq = b.publish(&t, "to the new socket", true);
        a2.expect_msg_seq(&t, seq, "to the new socket", "live on the new socket");
        b.expect_quiet(Duration::from_millis(300), "no presence for a takeover");
        assert_eq!(b.who(&t), sorted(&[&peer, &b.peer]));

        // Taking over again (from a socket that may land on the other core).
        let mut a3 = Client::resume(gw, "A(third)", &id);
        a2.expect_server_close(1008, "replaced", "the second replaced socket");
        let seq = b.publish(&t, "to the third socket", true);
        a3.expect_msg_seq(
            &t,
            seq,
            "to the third socket",
            "live after a second takeover",
        );
        a3.expect_quiet(Duration::from_millis(200), "no duplicates");
    });
}
