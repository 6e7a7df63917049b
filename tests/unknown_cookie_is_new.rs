//! A valid UUID v4 cookie the node never issued (routing drift: the balancer
//! sent the client to another node) starts a `new` session that keeps the id,
//! and counts a sticky miss; a real resume counts a sticky hit.

mod common;
mod gw;

use common::{for_each_driver, make_uuid_v4};
use gw::{args, topic, wait_metric, wait_open_connections, Client};
use std::time::Duration;

const HITS: &str = "wsgate_sticky_hits_total";
const MISSES: &str = "wsgate_sticky_misses_total";
const NEW: &str = "wsgate_sessions_total{event=\"new\"}";
const RESUMED: &str = "wsgate_sessions_total{event=\"resumed\"}";

#[test]
fn unknown_valid_cookie_is_a_new_session_and_a_sticky_miss() {
    for_each_driver(&args(&[]), |gw| {
        let s0 = gw.scrape();
        let (hits0, misses0) = (s0.sum(HITS), s0.sum(MISSES));

        // No cookie at all: neither a hit nor a miss.
        let plain = Client::new(gw, "no cookie");
        wait_metric(gw, NEW, "the cookie-less session", |v| {
            v == s0.val(NEW) + 1.0
        });

        // A cookie this node never saw.
        let foreign = make_uuid_v4();
        let mut a = Client::connect(gw, "A", Some(&foreign));
        assert_eq!(
            a.hello,
            format!("hello {} new {}", a.peer, gw::NODE),
            "unknown cookie"
        );
        assert_eq!(a.id, foreign, "the cookie's id is kept");
        wait_metric(gw, MISSES, "sticky miss for the unknown cookie", |v| {
            v == misses0 + 1.0
        });
        wait_metric(gw, NEW, "the unknown cookie's session", |v| {
            v == s0.val(NEW) + 2.0
        });
        let s1 = gw.scrape();
        assert_eq!(s1.sum(HITS), hits0, "no sticky hit yet");

        // The adopted id is a real session now: it resumes.
        let t = topic("sticky");
        a.sub(&t);
        a.drop_tcp();
        wait_open_connections(gw, 1, "after A dropped");
        let mut a = Client::resume(gw, "A", &foreign);
        wait_metric(gw, HITS, "sticky hit for the resume", |v| v == hits0 + 1.0);
        wait_metric(gw, RESUMED, "the resume", |v| v == s0.val(RESUMED) + 1.0);
        let s2 = gw.scrape();
        assert_eq!(s2.sum(MISSES), misses0 + 1.0, "the resume is not a miss");
        assert_eq!(s2.val(NEW), s0.val(NEW) + 2.0, "the resume is not new");

        // And it still has its subscription.
        let mut p = plain;
        let seq = p.publish(&t, "to the adopted id", false);
        a.expect_msg_seq(&t, seq, "to the adopted id", "live on the resumed session");
        a.expect_quiet(Duration::from_millis(200), "nothing else");
    });
}

#[test]
fn two_unknown_cookies_are_two_misses_and_keep_their_ids() {
    for_each_driver(&args(&[]), |gw| {
        let misses0 = gw.scrape().sum(MISSES);
        let ids = [make_uuid_v4(), make_uuid_v4()];
        let clients: Vec<Client> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let c = Client::connect(gw, &format!("C{i}"), Some(id));
                assert!(!c.resumed, "C{i}: {:?}", c.hello);
                c
            })
            .collect();
        wait_metric(gw, MISSES, "two sticky misses", |v| v == misses0 + 2.0);
        let mut got: Vec<String> = clients.iter().map(|c| c.id.clone()).collect();
        let mut want = ids.to_vec();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    });
}
