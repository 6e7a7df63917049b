//! SIGTERM drains: every open connection gets close 1001 "draining", the
//! closes are spread over the first part of `--drain-timeout`, peers that
//! answer are released at once, mute peers are cut at the deadline, health
//! and upgrades answer 503 meanwhile, and the process exits 0 in time. A
//! second signal exits at once with code 1.

mod common;
use common::*;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

const DRAIN: Duration = Duration::from_secs(6);
const TOTAL: usize = 300;
const MUTE: usize = 10;

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    index: usize,
    mute: bool,
    /// Close frame: arrival, code, reason.
    close_at: Option<Instant>,
    close_code: Option<u16>,
    close_reason: String,
    /// When the responder's own close frame went out.
    reply_at: Option<Instant>,
    /// End of the stream (EOF, or a reset for mute peers).
    end_at: Option<Instant>,
    end_kind: String,
    error: Option<String>,
}

fn run_client(index: usize, mute: bool, mut conn: Conn) -> Seen {
    let mut seen = Seen {
        index,
        mute,
        ..Default::default()
    };
    // Longer than the whole drain, so a read never times out on a healthy run.
    conn.stream
        .set_read_timeout(Some(DRAIN + Duration::from_secs(8)))
        .unwrap();
    match conn.try_read_frame() {
        Ok(Some(f)) if f.opcode == OP_CLOSE => {
            seen.close_at = Some(Instant::now());
            seen.close_code = f.close_code();
            seen.close_reason = String::from_utf8_lossy(f.payload.get(2..).unwrap_or(&[])).into();
        }
        Ok(Some(f)) => {
            seen.error = Some(format!("expected a close frame, got {f:?}"));
            return seen;
        }
        Ok(None) => {
            seen.error = Some("EOF before any close frame".into());
            return seen;
        }
        Err(e) => {
            seen.error = Some(format!("waiting for the close frame: {e} ({:?})", e.kind()));
            return seen;
        }
    }
    if !mute {
        // Alternate a plain 1000 and an echo of the 1001.
        let reply = if index % 2 == 0 {
            close_payload(1000, "")
        } else {
            close_payload(1001, "")
        };
        let f = frame(true, OP_CLOSE, &reply);
        if let Err(e) = std::io::Write::write_all(&mut conn.stream, &f) {
            seen.error = Some(format!("sending the close reply: {e}"));
            return seen;
        }
        seen.reply_at = Some(Instant::now());
    }
    match conn.try_read_frame() {
        Ok(None) => {
            seen.end_at = Some(Instant::now());
            seen.end_kind = "EOF".into();
        }
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
            seen.end_at = Some(Instant::now());
            seen.end_kind = "reset".into();
        }
        Ok(Some(f)) => seen.error = Some(format!("unexpected frame after the close: {f:?}")),
        Err(e) => seen.error = Some(format!("waiting for EOF: {e} ({:?})", e.kind())),
    }
    seen
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[test]
fn sigterm_sends_1001_spread_then_exits_0() {
    for_each_driver_exiting(&["--echo-path", "/echo", "--drain-timeout", "6s"], |gw| {
        let d = gw.driver.name();
        let mut conns = Vec::with_capacity(TOTAL);
        for _ in 0..TOTAL {
            let c = gw.upgrade("/echo");
            assert!(c.buffered().is_empty(), "bytes after the 101");
            conns.push(c);
        }
        let s = gw.scrape_until(Duration::from_secs(3), |s| {
            s.sum("wsgate_connections_active") == TOTAL as f64
        });
        assert_eq!(
            s.sum("wsgate_connections_active"),
            TOTAL as f64,
            "[{d}] connections_active before SIGTERM"
        );

        let mut handles = Vec::with_capacity(TOTAL);
        for (i, c) in conns.into_iter().enumerate() {
            // Spread the mute peers among the others.
            let mute = i % (TOTAL / MUTE) == TOTAL / MUTE - 1;
            handles.push(
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || run_client(i, mute, c))
                    .expect("spawn client thread"),
            );
        }
        std::thread::sleep(Duration::from_millis(200));

        let t0 = Instant::now();
        gw.send_signal("TERM");

        // Health and new upgrades answer 503 during the drain.
        let mut health = None;
        let flipped = wait_until(Duration::from_secs(2), || {
            let r = gw.roundtrip(&Req::get("/ws-health").bytes());
            let is503 = r.status == 503;
            health = Some(r);
            is503
        });
        let health = health.unwrap();
        let health_ok = flipped && health.body_str().trim_end() == "draining";
        let health_desc = format!("{} body {:?}", health.status_line(), health.body_str());
        let upgrade = gw.roundtrip_allow_reset(
            &Req::upgrade("/echo")
                .set("Sec-WebSocket-Key", &rand_key())
                .bytes(),
        );
        let upgrade_close_hdr = upgrade
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let during_checks_at = t0.elapsed();

        let exit = gw.wait_exit(DRAIN + Duration::from_secs(6));
        if exit.is_none() {
            // Release the client threads instead of letting their reads time out.
            gw.send_signal("KILL");
        }
        let seen: Vec<Seen> = handles
            .into_iter()
            .map(|h| h.join().expect("client thread panicked"))
            .collect();

        let mut failures = Vec::new();
        if !health_ok {
            failures.push(format!(
                "GET /ws-health during the drain: expected `503` with body `draining`, got {health_desc}"
            ));
        }
        if upgrade.status != 503 || !upgrade_close_hdr {
            failures.push(format!(
                "upgrade during the drain: expected 503 with Connection: close, got:\n{}",
                upgrade.head
            ));
        }
        match exit {
            None => failures.push(format!(
                "process still running {:.1}s after SIGTERM (drain timeout {DRAIN:?})",
                secs(t0.elapsed())
            )),
            Some((st, at)) => {
                let after = at - t0;
                if st.code() != Some(0) {
                    failures.push(format!("exit status {st}, expected 0"));
                }
                if after > DRAIN + Duration::from_secs(2) {
                    failures.push(format!(
                        "exited {:.2}s after SIGTERM, expected within drain-timeout + 2s = {:.0}s",
                        secs(after),
                        secs(DRAIN) + 2.0
                    ));
                }
                eprintln!("[{d}] exit {st} {:.2}s after SIGTERM", secs(after));
            }
        }

        let mut wrong = Vec::new();
        for s in &seen {
            if let Some(e) = &s.error {
                wrong.push(format!("client {} (mute {}): {e}", s.index, s.mute));
            } else if s.close_code != Some(1001) || s.close_reason != "draining" {
                wrong.push(format!(
                    "client {}: close {:?} {:?}, expected 1001 \"draining\"",
                    s.index, s.close_code, s.close_reason
                ));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{} of {TOTAL} clients did not see a clean 1001 \"draining\" then close; first: {}",
                wrong.len(),
                wrong.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
            ));
        }

        let arrivals: Vec<Duration> = seen
            .iter()
            .filter_map(|s| s.close_at)
            .map(|t| t - t0)
            .collect();
        if !arrivals.is_empty() {
            let first = *arrivals.iter().min().unwrap();
            let last = *arrivals.iter().max().unwrap();
            eprintln!(
                "[{d}] 1001 arrivals: first {:.3}s, last {:.3}s after SIGTERM ({} frames)",
                secs(first),
                secs(last),
                arrivals.len()
            );
            if last - first < DRAIN * 15 / 100 {
                failures.push(format!(
                    "1001s not spread: first {:.3}s, last {:.3}s after SIGTERM (spread {:.3}s < {:.2}s = 15% of {DRAIN:?})",
                    secs(first), secs(last), secs(last - first), secs(DRAIN * 15 / 100)
                ));
            }
            if last >= DRAIN * 60 / 100 {
                failures.push(format!(
                    "last 1001 arrived {:.3}s after SIGTERM, expected before {:.2}s (60% of {DRAIN:?})",
                    secs(last),
                    secs(DRAIN * 60 / 100)
                ));
            }
        }

        // Responders are released soon after their reply, well before the deadline.
        let mut slow = Vec::new();
        let mut worst_responder = Duration::ZERO;
        for s in seen.iter().filter(|s| !s.mute && s.error.is_none()) {
            let (Some(reply), Some(end)) = (s.reply_at, s.end_at) else {
                continue;
            };
            worst_responder = worst_responder.max(end - reply);
            if s.end_kind != "EOF" {
                slow.push(format!(
                    "client {}: {} instead of EOF after its close reply",
                    s.index, s.end_kind
                ));
            } else if end - reply > Duration::from_millis(1500) || end - t0 > DRAIN * 75 / 100 {
                slow.push(format!(
                    "client {}: EOF {:.2}s after its reply ({:.2}s after SIGTERM)",
                    s.index,
                    secs(end - reply),
                    secs(end - t0)
                ));
            }
        }
        eprintln!(
            "[{d}] slowest responder EOF: {:.3}s after its reply",
            secs(worst_responder)
        );
        if !slow.is_empty() {
            failures.push(format!(
                "{} responding peers not released promptly; first: {}",
                slow.len(),
                slow.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
            ));
        }

        // Mute peers are cut only at the deadline.
        let mut mute_ends = Vec::new();
        let mut mute_off = Vec::new();
        for s in seen.iter().filter(|s| s.mute && s.error.is_none()) {
            let Some(end) = s.end_at else { continue };
            let after = end - t0;
            mute_ends.push(format!("{:.2}s({})", secs(after), s.end_kind));
            if after < DRAIN - Duration::from_secs(1) || after > DRAIN + Duration::from_millis(2500)
            {
                mute_off.push(format!("client {} at {:.2}s", s.index, secs(after)));
            }
        }
        if !mute_off.is_empty() {
            failures.push(format!(
                "{} mute peers not cut at the {DRAIN:?} deadline (expected {:.0}s..{:.1}s after SIGTERM): {}",
                mute_off.len(),
                secs(DRAIN) - 1.0,
                secs(DRAIN) + 2.5,
                mute_off.join(", ")
            ));
        }
        eprintln!("[{d}] mute peers cut at: {}", mute_ends.join(" "));
        eprintln!(
            "[{d}] 503 checks done {:.3}s after SIGTERM",
            secs(during_checks_at)
        );

        if !failures.is_empty() {
            gw.dump_logs();
            panic!("[{d}] drain failures:\n  {}", failures.join("\n  "));
        }
    });
}

#[test]
fn second_sigterm_exits_at_once_with_1() {
    for_each_driver_exiting(&["--echo-path", "/echo", "--drain-timeout", "20s"], |gw| {
        let d = gw.driver.name();
        let mut conns: Vec<Conn> = (0..20).map(|_| gw.upgrade("/echo")).collect();
        gw.send_signal("TERM");
        // The first signal has been taken once health answers 503.
        assert!(
            wait_until(Duration::from_secs(3), || gw
                .roundtrip(&Req::get("/ws-health").bytes())
                .status
                == 503),
            "[{d}] /ws-health never answered 503 after the first SIGTERM"
        );
        // Mute peers: the drain cannot be over, the connections are open.
        for (i, c) in conns.iter_mut().enumerate() {
            c.stream.set_nonblocking(true).unwrap();
            let mut b = [0u8; 256];
            if let Ok(0) = std::io::Read::read(&mut c.stream, &mut b) {
                panic!("[{d}] connection {i} already closed before the second signal");
            }
            c.stream.set_nonblocking(false).unwrap();
        }
        assert!(
            gw.try_exit_status().is_none(),
            "[{d}] exited before the second signal"
        );
        let t1 = Instant::now();
        gw.send_signal("TERM");
        let (st, at) = gw
            .wait_exit(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("[{d}] still running 5s after the second SIGTERM"));
        eprintln!(
            "[{d}] second SIGTERM: exit {st} after {:.3}s",
            secs(at - t1)
        );
        assert_eq!(
            st.code(),
            Some(1),
            "[{d}] exit status after the second SIGTERM: {st}"
        );
        assert!(
            at - t1 < Duration::from_secs(2),
            "[{d}] exit took {:.2}s after the second SIGTERM, expected at once",
            secs(at - t1)
        );
    });
}
