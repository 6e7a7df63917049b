//! Rejected requests and finished WebSocket sessions release their
//! descriptors: the server's `/proc/<pid>/fd` count returns to its baseline.

mod common;
use common::*;
use std::time::Duration;

const SLACK: usize = 3;

/// Fd count once it stops changing (the runtime may lazily create a few fds).
fn settled_fd_count(gw: &Gateway) -> usize {
    let mut last = gw.fd_count();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let now = gw.fd_count();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn assert_returns_to(gw: &Gateway, baseline: usize, what: &str) {
    let mut now = gw.fd_count();
    let ok = wait_until(Duration::from_secs(5), || {
        now = gw.fd_count();
        now <= baseline + SLACK
    });
    assert!(
        ok,
        "{what}: server fd count {now} did not return to baseline {baseline} (+{SLACK}) within 5 s; fds: {:?}",
        std::fs::read_dir(format!("/proc/{}/fd", gw.pid))
            .map(|d| d
                .filter_map(|e| e.ok())
                .map(|e| std::fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default())
                .collect::<Vec<_>>())
            .unwrap_or_default()
    );
}

fn one_rejection(addr: std::net::SocketAddr, i: usize) {
    let mut c = Conn::connect(addr);
    match i % 3 {
        0 => {
            c.send(&Req::upgrade("/ws").without("Host").bytes());
            assert_rejection(&c.read_response(false), 400, "missing Host");
        }
        1 => {
            c.send(&Req::get(&format!("/missing/{i}")).bytes());
            assert_rejection(&c.read_response(false), 404, "unknown path");
        }
        _ => {
            let mut raw = b"GET /ws HTTP/1.1\r\nHost: gw.example\r\nX-Big: ".to_vec();
            raw.extend(std::iter::repeat(b'b').take(20 * 1024));
            c.send_allow_reset(&raw);
            assert_rejection(&c.read_response(true), 431, "20 KiB head");
        }
    }
}

#[test]
fn burst_of_rejections_releases_descriptors() {
    for_each_driver(&[], |gw| {
        // Warm up every code path once, then take the baseline.
        for i in 0..3 {
            one_rejection(gw.addr, i);
        }
        gw.assert_healthy();
        let baseline = settled_fd_count(gw);

        let addr = gw.addr;
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..50 {
                        one_rejection(addr, t * 50 + i);
                    }
                })
            })
            .collect();
        for t in threads {
            if let Err(e) = t.join() {
                std::panic::resume_unwind(e);
            }
        }
        assert_returns_to(gw, baseline, "after 200 rejected requests");
    });
}

#[test]
fn finished_websocket_sessions_release_descriptors() {
    for_each_driver(&["--echo-path", "/echo"], |gw| {
        {
            let mut c = gw.upgrade("/echo");
            c.send_frame(true, OP_CLOSE, &close_payload(1000, ""));
            c.expect_close_frame(1000, "warm-up close");
            c.expect_closed(false, "warm-up");
        }
        let baseline = settled_fd_count(gw);

        // 50 clean close handshakes.
        for i in 0..50 {
            let mut c = gw.upgrade("/echo");
            c.send_frame(true, OP_TEXT, format!("m{i}").as_bytes());
            c.expect_frame(OP_TEXT, format!("m{i}").as_bytes(), "echo");
            c.send_frame(true, OP_CLOSE, &close_payload(1000, ""));
            c.expect_close_frame(1000, "close reply");
            c.expect_closed(false, "after close handshake");
        }
        assert_returns_to(gw, baseline, "after 50 clean closes");

        // 50 clients that vanish without a close frame (TCP FIN only).
        let conns: Vec<Conn> = (0..50).map(|_| gw.upgrade("/echo")).collect();
        drop(conns);
        assert_returns_to(gw, baseline, "after 50 abrupt disconnects");

        // 50 protocol failures.
        for _ in 0..50 {
            let mut c = gw.upgrade("/echo");
            c.send(&encode_frame(true, 0, OP_TEXT, b"unmasked", None));
            c.expect_fail(1002, "unmasked frame");
        }
        assert_returns_to(gw, baseline, "after 50 protocol failures");
    });
}

#[test]
fn clients_abandoning_a_half_head_release_descriptors() {
    for_each_driver(&["--handshake-timeout", "30s"], |gw| {
        gw.assert_healthy();
        let baseline = settled_fd_count(gw);
        let conns: Vec<Conn> = (0..50)
            .map(|_| {
                let mut c = gw.connect();
                c.send(b"GET /ws HTTP/1.1\r\nHost: gw.exa");
                c
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        drop(conns);
        // Must not wait for the 30 s handshake timeout to notice the EOF.
        assert_returns_to(gw, baseline, "after 50 clients left mid-head");
    });
}
