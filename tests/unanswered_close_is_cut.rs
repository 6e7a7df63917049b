//! A close handshake the server starts has a deadline: a peer that never
//! answers our close frame (here the socket a takeover replaced) is cut
//! after `--pong-timeout`, like a peer that never answers a ping, instead of
//! holding its socket until the peer goes away by itself.

mod common;
mod gw;

use std::time::{Duration, Instant};

use common::for_each_driver;
use gw::{args, metric, Client, Event};

#[test]
fn a_replaced_socket_that_never_answers_the_close_is_cut_after_the_pong_timeout() {
    let flags = ["--ping-interval", "4s", "--pong-timeout", "400ms"];
    for_each_driver(&args(&flags), |gw| {
        let a = Client::new(gw, "A(old)");
        let id = a.id.clone();
        let mut a = a;
        let mut a2 = Client::resume(gw, "A(new)", &id);
        let ev = a.next("the close frame of the takeover");
        assert_eq!(ev, Event::Close(Some(1008), "replaced".into()));
        let dead_before = metric(gw, "wsgate_heartbeat_timeouts_total");
        // A does not answer: its socket must still end, within the pong
        // timeout plus a sweep or two (bounded here by 3 s).
        let started = Instant::now();
        let (events, end) = a.drain_to_end(Duration::from_secs(3));
        assert!(
            events.is_empty() && end.is_closed(),
            "the unanswered close: expected EOF within 3 s, got {events:?} then {end:?} after {:?}",
            started.elapsed()
        );
        let dead_after = metric(gw, "wsgate_heartbeat_timeouts_total");
        assert_eq!(dead_after, dead_before + 1.0, "counted as a dead peer");
        // The session lives on in the new socket (its own message comes back).
        let t = gw::topic("after-cut");
        a2.sub(&t);
        assert_eq!(a2.publish(&t, "still here", true), 1);
    });
}
