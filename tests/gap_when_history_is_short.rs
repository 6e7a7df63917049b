//! When a resuming client missed more than `--history-size` messages, it gets
//! `gap <topic> <from> <to>` for the hole history cannot cover, then the
//! newest history, then live traffic.

mod common;
mod gw;

use common::for_each_driver;
use gw::{args, topic, wait_open_connections, Client};
use std::time::Duration;

#[test]
fn missing_ten_with_history_four_gives_a_gap_then_the_newest_four() {
    for_each_driver(&args(&["--history-size", "4"]), |gw| {
        let t = topic("gap");
        let mut a = Client::new(gw, "A");
        let mut b = Client::new(gw, "B");
        a.sub(&t);
        b.sub(&t);
        a.expect_line(&format!("join {t} {}", b.peer), "B joining");

        // A sees seqs 1 and 2.
        for i in 1..=2 {
            assert_eq!(b.publish(&t, &format!("m{i}"), true), i);
            a.expect_msg_seq(&t, i, &format!("m{i}"), "before the drop");
        }
        let id = a.id.clone();
        a.drop_tcp();
        wait_open_connections(gw, 1, "after A dropped");

        // A misses 3..=12; history keeps 9..=12.
        for i in 3..=12 {
            assert_eq!(b.publish(&t, &format!("m{i}"), true), i);
        }

        let mut a = Client::resume(gw, "A", &id);
        a.expect_line(&format!("gap {t} 3 8"), "the hole history cannot cover");
        for i in 9..=12 {
            a.expect_msg_seq(&t, i, &format!("m{i}"), "the newest history");
        }
        a.expect_quiet(Duration::from_millis(300), "after the replay");
        assert_eq!(b.publish(&t, "m13", true), 13);
        a.expect_msg_seq(&t, 13, "m13", "live after the gap and replay");
        b.expect_quiet(Duration::from_millis(200), "B saw no presence change");
    });
}

#[test]
fn missing_exactly_the_history_size_has_no_gap() {
    for_each_driver(&args(&["--history-size", "4"]), |gw| {
        let t = topic("nogap");
        let mut a = Client::new(gw, "A");
        let mut p = Client::new(gw, "P");
        a.sub(&t);
        assert_eq!(p.publish(&t, "m1", false), 1);
        a.expect_msg_seq(&t, 1, "m1", "before the drop");
        let id = a.id.clone();
        a.drop_tcp();
        wait_open_connections(gw, 1, "after A dropped");
        for i in 2..=5 {
            assert_eq!(p.publish(&t, &format!("m{i}"), false), i);
        }
        let mut a = Client::resume(gw, "A", &id);
        for i in 2..=5 {
            a.expect_msg_seq(&t, i, &format!("m{i}"), "replay covering the whole hole");
        }
        a.expect_quiet(Duration::from_millis(300), "no gap, no duplicates");
    });
}
