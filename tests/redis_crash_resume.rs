//! kill -9 of a node: its clients resume on the other nodes with nothing
//! lost. Three nodes on one private redis-server.
//!
//! Six clients on node A (direct connections) are subscribed to topic `main`
//! while a publisher streams to it through node B's publish API (and another
//! to topic `late` through node C's). Some seconds in (so several 1 s
//! checkpoints have happened), every client subscribes to `late` too, and
//! as soon as the last `ok sub late` has arrived node A is killed with
//! SIGKILL. Each client sees its connection end, reconnects with its cookie
//! to node B or C and must get:
//! * `hello <id> resumed <B|C>` and its subscriptions back, both of them
//!   (a subscription is never lost, even one made just before the crash);
//! * for each topic, once re-deliveries are dropped (seq at or below the
//!   highest it had seen, as a client does), every published message from
//!   its subscription on, in order, through the end of the run: nothing in
//!   history is missing, in particular nothing published after the crash;
//! * re-deliveries only of messages it had received in the last checkpoint
//!   window before the crash (1 s, plus slack for a loaded debug build);
//! * no `gap` line.

mod common;
mod edge;
mod gw;
mod redis;

use common::Driver;
use redis::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 6;
/// Checkpoint interval of the contract (1 s) plus slack: a re-delivered
/// message must have first arrived at most this long before the crash.
const REDELIVERY_WINDOW: Duration = Duration::from_millis(2000);

#[test]
fn clients_of_a_killed_node_resume_elsewhere_with_nothing_lost() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let started = Instant::now();
    let a = start_node("crash-a", Driver::IoUring, &redis.url(), &[]);
    let b = start_node("crash-b", Driver::Legacy, &redis.url(), &[]);
    let c = start_node("crash-c", Driver::IoUring, &redis.url(), &[]);
    for (gw, n) in [(&a, "crash-a"), (&b, "crash-b"), (&c, "crash-c")] {
        wait_redis_up(gw, n, 1.0, Duration::from_secs(10));
    }
    let main = topic("crash.main");
    let late = topic("crash.late");

    let shared = Arc::new(Shared::default());
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut subs_main = Vec::new();
    let roamers: Vec<Roamer> = subscribers(a.addr, "client", CLIENTS, &[&main])
        .into_iter()
        .enumerate()
        .map(|(i, (ws, seqs))| {
            assert_eq!(ws.hello.node, "crash-a");
            subs_main.push(seqs[0]);
            Roamer::spawn(
                ws,
                &[&main, &late],
                // Half go to B first, half to C.
                Reconnect {
                    to: vec![b.addr, c.addr],
                    first: i % 2,
                    delay: Duration::ZERO,
                },
                shared.clone(),
                deadline,
            )
        })
        .collect();
    assert!(subs_main.iter().all(|s| *s == 0), "{subs_main:?}");

    let pub_main = ApiPublisher::spawn("main", b.admin, &main, Duration::from_millis(10));
    let pub_late = ApiPublisher::spawn("late", c.admin, &late, Duration::from_millis(20));
    // Let several checkpoints pass.
    std::thread::sleep(Duration::from_millis(2500));

    // Subscribe to `late` just before the crash.
    for r in &roamers {
        r.command(&format!("sub {late}"));
    }
    wait_for(WAIT, "every `ok sub late`", || {
        shared.oks.load(Ordering::SeqCst) >= CLIENTS
    });
    a.send_signal("KILL");
    let crash = Instant::now();
    let (status, _) = a
        .wait_exit(Duration::from_secs(5))
        .expect("crash-a did not die from SIGKILL");
    assert!(!status.success(), "crash-a exited {status} after SIGKILL");

    // Everybody reconnects; the publishers go on a little past that.
    wait_for(Duration::from_secs(10), "every client to reconnect", || {
        shared.reconnected.load(Ordering::SeqCst) >= CLIENTS
    });
    let reconnected = crash.elapsed();
    std::thread::sleep(Duration::from_millis(700));
    let main_pubs = pub_main.finish();
    let late_pubs = pub_late.finish();
    let main_map = published_map(&main_pubs);
    let late_map = published_map(&late_pubs);
    let main_last = main_pubs.last().unwrap().seq;
    let late_last = late_pubs.last().unwrap().seq;
    let after_crash = main_pubs.iter().filter(|p| p.at > crash).count();
    shared.set_final(&main, main_last);
    shared.set_final(&late, late_last);

    let traces = join_all(roamers);
    let redelivered = std::sync::atomic::AtomicUsize::new(0);
    let mut checks: Vec<(String, Box<dyn FnOnce() + '_>)> = Vec::new();
    for tr in &traces {
        eprintln!(
            "{} ({:?}): main:{} late:{}",
            tr.name,
            tr.hellos
                .iter()
                .map(|(_, h)| format!("{} {}", h.state, h.node))
                .collect::<Vec<_>>(),
            tr.runs(&main),
            tr.runs(&late)
        );
        checks.push((
            format!("{} resumed elsewhere", tr.name),
            Box::new(|| {
                tr.assert_clean();
                assert_eq!(
                    tr.hellos.len(),
                    2,
                    "{}: one reconnect: {:?}",
                    tr.name,
                    tr.hellos
                );
                let h = &tr.hellos[1].1;
                assert!(
                    h.state == "resumed"
                        && (h.node == "crash-b" || h.node == "crash-c")
                        && h.id == tr.id,
                    "{}: after the crash expected `hello {} resumed crash-b|crash-c`, got {h:?}",
                    tr.name,
                    tr.id
                );
                assert!(
                    tr.ends[0].1 == "eof" || tr.ends[0].1.starts_with("error"),
                    "{}: a killed node's connection ends without a close frame, got {:?}",
                    tr.name,
                    tr.ends[0].1
                );
            }),
        ));
        for (t, map, last) in [(&main, &main_map, main_last), (&late, &late_map, late_last)] {
            let (main, crash, redelivered) = (&main, crash, &redelivered);
            checks.push((
                format!("{} on {t}", tr.name),
                Box::new(move || {
                    let from = if t == main {
                        1
                    } else {
                        let sub: u64 = tr
                            .other
                            .iter()
                            .find_map(|(_, l)| l.strip_prefix(&format!("ok sub {t} ")))
                            .and_then(|s| s.parse().ok())
                            .unwrap_or_else(|| {
                                panic!("{}: no `ok sub {t} <seq>` in {:?}", tr.name, tr.other)
                            });
                        sub + 1
                    };
                    let again = tr.assert_gapless_dedup(t, from, last, map);
                    redelivered.fetch_add(again.len(), Ordering::SeqCst);
                    for (seq, first) in &again {
                        let before = crash.saturating_duration_since(*first);
                        assert!(
                            before <= REDELIVERY_WINDOW,
                            "{}: {t}: seq {seq} was delivered again after the crash although it \
                             had arrived {before:?} before it (checkpoints are every 1 s);{}",
                            tr.name,
                            tr.runs(t)
                        );
                    }
                }),
            ));
        }
    }
    all_checks(checks);
    let redelivered_total = redelivered.load(Ordering::SeqCst);
    eprintln!(
        "crash: {CLIENTS} clients back within {reconnected:?}; {after_crash} of {} messages on \
         `main` published after the crash; {redelivered_total} re-deliveries in all; {:.1} s",
        main_pubs.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        after_crash >= 50,
        "too few messages after the crash to mean anything"
    );
    b.assert_healthy();
    c.assert_healthy();
}
