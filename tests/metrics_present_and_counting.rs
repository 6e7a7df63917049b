//! `GET /metrics` on the admin listener: every family is present, and the
//! counters move by exactly what the test did.

mod common;
use common::*;
use std::time::Duration;

const ARGS: [&str; 2] = ["--echo-path", "/echo"];
const SETTLE: Duration = Duration::from_secs(3);

const OK: &str = "wsgate_upgrades_total{result=\"ok\"}";
const R400: &str = "wsgate_upgrades_total{result=\"400\"}";
const MSG_IN: &str = "wsgate_messages_total{direction=\"in\"}";
const MSG_OUT: &str = "wsgate_messages_total{direction=\"out\"}";
const BYTES_IN: &str = "wsgate_bytes_total{direction=\"in\"}";
const BYTES_OUT: &str = "wsgate_bytes_total{direction=\"out\"}";
const C1000: &str = "wsgate_closes_total{code=\"1000\"}";
const HITS: &str = "wsgate_sticky_hits_total";
const MISSES: &str = "wsgate_sticky_misses_total";
const ACTIVE: &str = "wsgate_connections_active";

fn check_presence(gw: &Gateway, s: &Scrape) {
    let d = gw.driver.name();
    let need = |series: &str| {
        assert!(
            s.get(series).is_some(),
            "[{d}] /metrics lacks `{series}`:\n{}",
            s.text
        );
    };
    // One gauge per core.
    let active = s.family(ACTIVE);
    let mut labels: Vec<&str> = active.iter().map(|(k, _)| k.as_str()).collect();
    labels.sort();
    assert_eq!(
        labels,
        [
            "wsgate_connections_active{core=\"0\"}",
            "wsgate_connections_active{core=\"1\"}"
        ],
        "[{d}] {ACTIVE} must have one line per core (--cores 2):\n{}",
        s.text
    );
    for result in ["ok", "400", "403", "404", "405", "408", "426", "431", "503"] {
        need(&format!("wsgate_upgrades_total{{result=\"{result}\"}}"));
    }
    for series in [
        HITS,
        MISSES,
        MSG_IN,
        MSG_OUT,
        BYTES_IN,
        BYTES_OUT,
        "wsgate_slow_consumer_closes_total",
        "wsgate_heartbeat_timeouts_total",
        "wsgate_draining",
        "wsgate_io_driver{driver=\"io_uring\"}",
        "wsgate_io_driver{driver=\"epoll\"}",
    ] {
        need(series);
    }
    assert!(
        !s.family("wsgate_closes_total").is_empty(),
        "[{d}] /metrics lacks wsgate_closes_total{{code=..}}:\n{}",
        s.text
    );
    assert!(
        s.family("wsgate_closes_total")
            .iter()
            .all(|(k, _)| k.starts_with("wsgate_closes_total{code=\"")),
        "[{d}] wsgate_closes_total must be labelled by code:\n{}",
        s.text
    );
    assert!(
        !s.family("wsgate_info").is_empty(),
        "[{d}] /metrics lacks wsgate_info:\n{}",
        s.text
    );
    assert_eq!(
        s.val("wsgate_draining"),
        0.0,
        "[{d}] draining while serving"
    );
    let (uring, epoll) = match gw.driver {
        Driver::IoUring => (1.0, 0.0),
        Driver::Legacy => (0.0, 1.0),
    };
    assert_eq!(
        (
            s.val("wsgate_io_driver{driver=\"io_uring\"}"),
            s.val("wsgate_io_driver{driver=\"epoll\"}")
        ),
        (uring, epoll),
        "[{d}] wsgate_io_driver does not match the driver of this run:\n{}",
        s.text
    );
    // Every counter family has HELP and TYPE lines.
    for fam in [
        ACTIVE,
        "wsgate_upgrades_total",
        "wsgate_messages_total",
        "wsgate_bytes_total",
        "wsgate_closes_total",
        HITS,
        MISSES,
        "wsgate_slow_consumer_closes_total",
        "wsgate_draining",
        "wsgate_io_driver",
    ] {
        assert!(
            s.text.contains(&format!("# TYPE {fam} ")),
            "[{d}] no `# TYPE {fam}` line:\n{}",
            s.text
        );
    }
}

/// The difference `after - before` of every series in `expect` must be
/// exactly the expected value.
fn assert_deltas(d: &str, what: &str, before: &Scrape, after: &Scrape, expect: &[(&str, f64)]) {
    let mut wrong = Vec::new();
    for &(series, delta) in expect {
        let got = after.val(series) - before.val(series);
        if got != delta {
            wrong.push(format!(
                "{series}: moved by {got} (from {} to {}), expected {delta}",
                before.val(series),
                after.val(series)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "[{d}] after {what}:\n  {}\nscrape:\n{}",
        wrong.join("\n  "),
        after.text
    );
}

fn deltas_reached(before: &Scrape, now: &Scrape, expect: &[(&str, f64)]) -> bool {
    expect
        .iter()
        .all(|&(series, delta)| now.val(series) - before.val(series) >= delta)
}

fn close_1000(c: &mut Conn, d: &str) {
    c.send_frame(true, OP_CLOSE, &close_payload(1000, ""));
    c.expect_close_frame(1000, &format!("[{d}] close reply"));
    c.expect_closed(false, &format!("[{d}] after the close handshake"));
}

#[test]
fn metrics_are_present_and_count_exactly() {
    for_each_driver(&ARGS, |gw| {
        let d = gw.driver.name();
        let s0 = gw.scrape();
        check_presence(gw, &s0);
        assert_eq!(s0.sum(ACTIVE), 0.0, "[{d}] connections before any upgrade");

        // 3 upgrades.
        let mut conns: Vec<Conn> = (0..3)
            .map(|_| {
                gw.upgrade_req(&Req::upgrade("/echo").set("Sec-WebSocket-Key", &rand_key()))
                    .1
            })
            .collect();
        let expect = [(OK, 3.0), (R400, 0.0), (HITS, 0.0), (MISSES, 0.0)];
        let s1 = gw.scrape_until(SETTLE, |s| {
            deltas_reached(&s0, s, &expect) && s.sum(ACTIVE) >= 3.0
        });
        assert_deltas(d, "3 upgrades", &s0, &s1, &expect);
        assert_eq!(
            s1.sum(ACTIVE),
            3.0,
            "[{d}] {ACTIVE} summed over cores with 3 open connections:\n{}",
            s1.text
        );

        // 2 bad requests.
        for req in [
            Req::upgrade("/echo").without("Sec-WebSocket-Key"),
            Req::upgrade("/echo").header("Host", "second.example"),
        ] {
            let r = gw.roundtrip_allow_reset(&req.bytes());
            assert_eq!(r.status, 400, "[{d}] expected 400 for {req:?}:\n{}", r.head);
        }
        let expect = [(R400, 2.0), (OK, 0.0)];
        let s2 = gw.scrape_until(SETTLE, |s| deltas_reached(&s1, s, &expect));
        assert_deltas(d, "2 bad requests", &s1, &s2, &expect);

        // Echo of 5 messages of 10 bytes.
        for i in 0..5u8 {
            let msg = [b'0' + i; 10];
            conns[0].send_frame(true, OP_BINARY, &msg);
            conns[0].expect_frame(OP_BINARY, &msg, &format!("[{d}] echo {i}"));
        }
        let expect = [
            (MSG_IN, 5.0),
            (MSG_OUT, 5.0),
            (BYTES_IN, 50.0),
            (BYTES_OUT, 50.0),
        ];
        let s3 = gw.scrape_until(SETTLE, |s| deltas_reached(&s2, s, &expect));
        assert_deltas(d, "echo of 5 x 10 bytes", &s2, &s3, &expect);
        assert_eq!(s3.sum(ACTIVE), 3.0, "[{d}] {ACTIVE} after the echo");

        // Close all 3 with 1000.
        for c in conns.iter_mut() {
            close_1000(c, d);
        }
        let expect = [(C1000, 3.0)];
        let s4 = gw.scrape_until(SETTLE, |s| {
            deltas_reached(&s3, s, &expect) && s.sum(ACTIVE) == 0.0
        });
        assert_deltas(d, "3 closes with 1000", &s3, &s4, &expect);
        assert_eq!(
            s4.sum(ACTIVE),
            0.0,
            "[{d}] {ACTIVE} after closing everything:\n{}",
            s4.text
        );

        // A valid UUID v4 cookie: no session store on the echo path, so a miss.
        let id = make_uuid_v4();
        let (kept, mut c) = gw.upgrade_req(
            &Req::upgrade("/echo")
                .set("Sec-WebSocket-Key", &rand_key())
                .header("Cookie", &format!("{DEFAULT_COOKIE_NAME}={id}")),
        );
        assert_eq!(kept, id, "[{d}] a valid v4 cookie keeps its id");
        let expect = [(MISSES, 1.0), (HITS, 0.0), (OK, 1.0)];
        let s5 = gw.scrape_until(SETTLE, |s| deltas_reached(&s4, s, &expect));
        assert_deltas(d, "an upgrade with a valid cookie", &s4, &s5, &expect);
        close_1000(&mut c, d);
        let s6 = gw.scrape_until(SETTLE, |s| s.sum(ACTIVE) == 0.0);
        assert_eq!(s6.sum(ACTIVE), 0.0, "[{d}] {ACTIVE} at the end");
        assert_eq!(
            s6.val("wsgate_draining"),
            0.0,
            "[{d}] draining while serving"
        );

        // Unknown admin path.
        let r = gw.admin_get("/nope");
        assert_eq!(r.status, 404, "[{d}] admin /nope:\n{}", r.head);
    });
}
