//! A subscriber that never reads is closed once more than
//! `--max-backpressure` bytes are queued for it; the publisher and a reading
//! subscriber are not stalled and miss nothing.

mod common;
mod gw;

use common::for_each_driver;
use gw::{args, parse_msg, topic, wait_metric, Client, Event};
use std::time::{Duration, Instant};

const SLOW: &str = "wsgate_slow_consumer_closes_total";
const PAYLOAD: usize = 4096;
/// Publishes in flight at once: 8 × 4 KiB stays well under the 64 KiB bound,
/// so a subscriber that does read is never at risk.
const WINDOW: u64 = 8;
/// Sent in any case; more rounds follow until S is closed.
const MIN_MESSAGES: u64 = 2000;
const MAX_MESSAGES: u64 = 12_000;

fn payload(seq: u64) -> String {
    let head = format!("{seq:08}:");
    format!("{head}{}", "x".repeat(PAYLOAD - head.len()))
}

#[test]
fn a_subscriber_that_never_reads_is_closed_and_nobody_else_stalls() {
    for_each_driver(&args(&["--max-backpressure", "64KiB"]), |gw| {
        let t = topic("slow");
        let started = Instant::now();
        let mut slow = Client::new(gw, "S (never reads)");
        let mut other = Client::new(gw, "O (reads)");
        let mut p = Client::new(gw, "P (publisher)");
        slow.sub(&t);
        other.sub(&t);
        slow.expect_line(&format!("join {t} {}", other.peer), "O joining");
        // From here on S reads nothing until the end.

        // O reads in a thread until the `end` marker; returns every seq, in order.
        let tt = t.clone();
        let reader = std::thread::spawn(move || -> Result<Vec<u64>, String> {
            let mut seqs = Vec::new();
            loop {
                let ev = other
                    .next_until(Instant::now() + Duration::from_secs(10))
                    .map_err(|e| format!("O after {} messages: {e:?}", seqs.len()))?;
                let Event::Text(l) = ev else {
                    return Err(format!("O: unexpected {ev:?}"));
                };
                let Some((topic, seq, body)) = parse_msg(&l) else {
                    return Err(format!("O: unexpected line {:?}", &l[..l.len().min(80)]));
                };
                if topic != tt {
                    return Err(format!("O: message for topic {topic}"));
                }
                if body == "end" {
                    return Ok(seqs);
                }
                if body != payload(seq) {
                    return Err(format!("O: payload of seq {seq} differs"));
                }
                seqs.push(seq);
            }
        });

        // P publishes windows of WINDOW messages, reading each window's acks.
        let mut sent = 0u64;
        let mut acked = Vec::new();
        loop {
            for _ in 0..WINDOW {
                sent += 1;
                p.send_text(&format!("pub {t} {}", payload(sent)));
            }
            for _ in 0..WINDOW {
                acked.push(p.expect_ok_pub(&t));
            }
            if sent >= MIN_MESSAGES
                && sent % 500 == 0
                && (gw.scrape().sum(SLOW) >= 1.0 || sent >= MAX_MESSAGES)
            {
                break;
            }
        }
        let end_seq = p.publish(&t, "end", false);
        assert_eq!(end_seq, sent + 1);
        assert_eq!(
            acked,
            (1..=sent).collect::<Vec<_>>(),
            "P got every `ok pub`, in order"
        );
        eprintln!(
            "[{}] published {sent} × {PAYLOAD} B in {:?}",
            gw.driver.name(),
            started.elapsed()
        );

        let seqs = reader
            .join()
            .expect("O's reader thread panicked")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seqs.len() as u64, sent, "O received every message");
        assert!(
            seqs.iter().copied().eq(1..=sent),
            "O received every message in order"
        );

        wait_metric(gw, SLOW, "S counted as a slow consumer", |v| v >= 1.0);

        // S: what was buffered before the cut, in order, then the end of
        // the connection (EOF, possibly inside a frame, or a reset).
        let (events, end) = slow.drain_to_end(Duration::from_secs(15));
        assert!(
            end.is_closed(),
            "S's connection was not closed: after {} messages, {end:?}",
            events.len()
        );
        let mut next = 1u64;
        for ev in &events {
            match ev {
                Event::Text(l) => {
                    let (_, seq, body) = parse_msg(l).unwrap_or_else(|| {
                        panic!("S: unexpected line {:?}", &l[..l.len().min(80)])
                    });
                    assert_eq!(seq, next, "S: messages out of order");
                    assert_eq!(body, payload(seq), "S: payload of seq {seq}");
                    next += 1;
                }
                Event::Close(code, _) => {
                    assert_eq!(*code, Some(1008), "S: close code");
                }
                Event::Binary(_) => panic!("S: unexpected binary frame"),
            }
        }
        assert!(
            next - 1 < sent,
            "S received all {sent} messages: it was never cut off"
        );
        eprintln!(
            "[{}] S got {} messages before the cut, ended with {end:?}",
            gw.driver.name(),
            next - 1
        );
    });
}

/// The cut is not a close 1000, so the slow subscriber's session stays for
/// resume. Coming back, it must get everything after the last message it
/// fully received: the frames the server had queued for it and dropped at
/// the cut were never delivered, so they are replayed from history (or
/// reported in a `gap` where history no longer has them), never silently
/// skipped.
#[test]
fn a_cut_slow_subscriber_resumes_from_what_it_really_received() {
    for_each_driver(&args(&["--max-backpressure", "64KiB"]), |gw| {
        let t = topic("slowresume");
        let mut slow = Client::new(gw, "S (never reads)");
        let mut p = Client::new(gw, "P (publisher)");
        slow.sub(&t);
        let mut sent = 0u64;
        while sent < MAX_MESSAGES {
            for _ in 0..WINDOW {
                sent += 1;
                p.send_text(&format!("pub {t} {}", payload(sent)));
            }
            for _ in 0..WINDOW {
                p.expect_ok_pub(&t);
            }
            if sent % 200 == 0 && gw.scrape().sum(SLOW) >= 1.0 {
                break;
            }
        }
        wait_metric(gw, SLOW, "S cut as a slow consumer", |v| v >= 1.0);
        // A few more while S is away.
        for _ in 0..5 {
            sent += 1;
            assert_eq!(p.publish(&t, &payload(sent), false), sent);
        }

        let id = slow.id.clone();
        let (events, end) = slow.drain_to_end(Duration::from_secs(15));
        assert!(end.is_closed(), "S not cut: {end:?}");
        let mut received = 0u64;
        for ev in &events {
            if let Event::Text(l) = ev {
                let (_, seq, _) = parse_msg(l).expect("msg line");
                assert_eq!(seq, received + 1, "S: order before the cut");
                received = seq;
            }
        }
        gw::wait_open_connections(gw, 1, "S's cut connection is gone");

        let mut s = Client::connect(gw, "S (back)", Some(&id));
        assert!(
            s.resumed,
            "after a slow-consumer cut (not a close 1000) the session should resume; got {:?}",
            s.hello
        );
        let mut next = received + 1;
        let first = s.line("the first line after the resume");
        if let Some(rest) = first.strip_prefix(&format!("gap {t} ")) {
            let (from, to) = rest
                .split_once(' ')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                .unwrap_or_else(|| panic!("malformed gap line {first:?}"));
            assert_eq!(
                from, next,
                "S fully received up to seq {received}: the gap must start right after it"
            );
            next = to + 1;
        } else {
            let (_, seq, body) =
                parse_msg(&first).unwrap_or_else(|| panic!("S: unexpected first line {first:?}"));
            assert_eq!(
                seq,
                next,
                "S fully received seqs 1..={received} before the cut, then resumed; the \
                 replay (history holds 128) must start at {next}, but seqs {next}..{} were \
                 silently skipped (no gap, no replay)",
                seq.saturating_sub(1)
            );
            assert_eq!(body, payload(seq));
            next += 1;
        }
        while next <= sent {
            s.expect_msg_seq(&t, next, &payload(next), "the rest of the replay");
            next += 1;
        }
        s.expect_quiet(Duration::from_millis(200), "nothing after the replay");
    });
}
