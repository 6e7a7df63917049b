//! Many commands in one write (a publisher's burst) are answered in order:
//! every subscriber gets every message in sequence, and the publisher gets
//! its own `msg` and `ok pub` lines in the order of its publishes. The
//! gateway gathers what one read's commands produce for a connection into one
//! write per connection; this is what that must not reorder or lose.

mod common;
mod gw;

use common::{for_each_driver, frame, OP_TEXT};
use gw::{args, topic, Client};

const BURST: usize = 300;
const BAD_AT: usize = 150;

/// The next line that is not presence (`join`/`leave`).
fn next_data_line(c: &mut Client, ctx: &str) -> String {
    loop {
        let l = c.line(ctx);
        if !(l.starts_with("join ") || l.starts_with("leave ")) {
            return l;
        }
    }
}

#[test]
fn a_burst_of_commands_in_one_write_is_answered_in_order() {
    for_each_driver(&args(&[]), |gw| {
        let t = topic("burst");
        // Several subscribers, so that on a multi-core gateway they are
        // likely spread over cores (fan-out by mail as well as locally).
        let mut subs: Vec<Client> = (0..6).map(|i| Client::new(gw, &format!("S{i}"))).collect();
        for s in subs.iter_mut() {
            assert_eq!(s.sub(&t), 0);
        }
        let mut p = Client::new(gw, "P");
        assert_eq!(p.sub(&t), 0);

        let mut burst = Vec::new();
        for i in 0..BURST {
            if i == BAD_AT {
                burst.extend(frame(true, OP_TEXT, b"bogus in the middle"));
            }
            burst.extend(frame(true, OP_TEXT, format!("pub {t} m{i}").as_bytes()));
        }
        p.send_raw(&burst, "the burst of publishes");

        // The bad command is answered at once; a publish is answered when
        // the topic's core has numbered it (possibly another core), so the
        // `err` may come before lines of earlier publishes, but exactly once.
        let mut lines: Vec<String> = (0..2 * BURST + 1)
            .map(|_| next_data_line(&mut p, "its lines for the burst"))
            .collect();
        let errs: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].starts_with("err "))
            .collect();
        assert_eq!(errs.len(), 1, "P: one err for one bad command: {errs:?}");
        let err = lines.remove(errs[0]);
        assert!(err.starts_with("err 400 "), "P: got {err:?}");
        for (i, pair) in lines.chunks(2).enumerate() {
            let seq = i + 1;
            assert_eq!(
                pair[0],
                format!("msg {t} {seq} m{i}"),
                "P: own message {seq}"
            );
            assert_eq!(
                pair[1],
                format!("ok pub {t} {seq}"),
                "P: ack of publish {seq}"
            );
        }
        for s in subs.iter_mut() {
            for i in 0..BURST {
                let l = next_data_line(s, "the burst, in order");
                assert_eq!(
                    l,
                    format!("msg {t} {} m{i}", i + 1),
                    "{}: message {}",
                    s.name,
                    i + 1
                );
            }
        }
        // Still serving one command at a time afterwards.
        assert_eq!(p.publish(&t, "after", true), BURST as u64 + 1);
        for s in subs.iter_mut() {
            let l = next_data_line(s, "the message after the burst");
            assert_eq!(l, format!("msg {t} {} after", BURST + 1), "{}", s.name);
        }
    });
}
