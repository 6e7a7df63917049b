//! The data path of open connections (`--io`, issue 19). The edges run on
//! both monoio drivers with the suite's `--io` (`WSGATE_IO`; epoll by
//! default) and once more with `--io uring` (the ring: multishot receive
//! into 4 KiB provided buffers): bytes a byte at a time, frames straddling
//! the ring's buffers, the buffer ring running dry under 2,000 busy
//! connections, 15,000 idle connections holding no receive buffer, the
//! answers of many connections sent in one batch, answers waiting for a
//! peer that does not read; and the data path in the log line and
//! `wsgate_info`.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const ECHO: [&str; 4] = ["--echo-path", "/echo", "--max-message-size", "1MiB"];

/// The two tests that open thousands of sockets take turns (this process
/// may hold 20,000 descriptors).
static MANY_SOCKETS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The data path the gateway reports (`wsgate_info{driver}`).
fn data_path(gw: &Gateway) -> &'static str {
    let text = gw.admin_get("/metrics").body_str();
    let info = (text.lines())
        .find(|l| l.starts_with("wsgate_info{"))
        .expect("wsgate_info is exported");
    for path in ["uring", "epoll"] {
        if info.contains(&format!("driver=\"{path}\"")) && info.ends_with(" 1") {
            return path;
        }
    }
    panic!("[{}] no driver label in {info}", gw.driver.name());
}

/// The gateway's log lines once its `listening` line is there.
fn logs_after_start(gw: &Gateway) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs = gw.logs();
        if logs.iter().any(|l| l.contains("event=listening")) || Instant::now() > deadline {
            return logs;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--io` as the whole suite may set it for every gateway (`WSGATE_IO`;
/// the default is `epoll`).
fn io_choice() -> String {
    std::env::var("WSGATE_IO").unwrap_or_else(|_| "epoll".into())
}

/// The data path each driver of the suite must get: with `--io auto`, the
/// io_uring driver gets the ring and the legacy one
/// (`MONOIO_FORCE_LEGACY_DRIVER=1`) epoll; otherwise what `--io` says.
fn expected_path(gw: &Gateway) -> &'static str {
    if gw
        .args
        .windows(2)
        .any(|w| w[0] == "--io" && w[1] == "uring")
    {
        return "uring";
    }
    match (io_choice().as_str(), gw.driver) {
        ("uring", _) => "uring",
        ("auto", Driver::IoUring) => "uring",
        _ => "epoll",
    }
}

/// Runs `f` on both drivers with `--io uring` wherever monoio runs on
/// io_uring (the edges of the ring are tested whatever the suite's
/// `WSGATE_IO`), else with the suite's choice.
fn for_each_path(f: impl Fn(&Gateway)) {
    for_each_driver(&ECHO, &f);
    let mut uring = ECHO.to_vec();
    uring.extend(["--io", "uring"]);
    eprintln!("=== and with --io uring on monoio's io_uring driver ===");
    let gw = Gateway::start(Driver::IoUring, &uring);
    f(&gw);
    gw.assert_healthy();
}

#[test]
fn the_driver_is_logged_and_exported() {
    for_each_driver(&ECHO, |gw| {
        let want = expected_path(gw);
        assert_eq!(data_path(gw), want);
        let logs = logs_after_start(gw);
        assert!(
            logs.iter()
                .any(|l| l.contains("event=listening") && l.contains(&format!(" io={want} "))),
            "listening line names io={want}: {logs:?}"
        );
        if gw.driver == Driver::Legacy && io_choice() == "auto" {
            assert!(
                logs.iter()
                    .any(|l| l.contains("event=io_uring_data_path_unavailable")
                        && l.contains("MONOIO_FORCE_LEGACY_DRIVER")),
                "the fallback is logged with its reason: {logs:?}"
            );
        }
    });
}

#[test]
fn a_peer_sending_one_byte_at_a_time_is_understood() {
    for_each_path(|gw| {
        let mut c = gw.upgrade("/echo");
        let payload = b"sent one byte per TCP segment";
        let f = frame(true, OP_TEXT, payload);
        for b in &f {
            c.send(std::slice::from_ref(b));
            std::thread::sleep(Duration::from_millis(1));
        }
        c.expect_frame(OP_TEXT, payload, "echo of a frame sent byte by byte");
        // And a second one right behind it, still byte by byte.
        for b in &frame(true, OP_BINARY, &[7; 300]) {
            c.send(std::slice::from_ref(b));
        }
        c.expect_frame(OP_BINARY, &[7; 300], "second frame, byte by byte");
    });
}

#[test]
fn frames_straddling_receive_buffers_arrive_whole() {
    for_each_path(|gw| {
        let mut c = gw.upgrade("/echo");
        // 4 KiB receive buffers: frames across one boundary, many, and one
        // with its 2-byte length field split by a boundary.
        let sizes = [4_090usize, 4_097, 70_000, 12_345, 125, 126, 65_536];
        let payloads: Vec<Vec<u8>> = sizes.iter().map(|&n| rand_bytes(n)).collect();
        let mut all = Vec::new();
        for p in &payloads {
            all.extend_from_slice(&frame(true, OP_BINARY, p));
        }
        c.send(&all); // one write: the gateway sees them in 4 KiB pieces
        for (p, n) in payloads.iter().zip(sizes) {
            c.expect_frame(OP_BINARY, p, &format!("echo of {n} bytes"));
        }
    });
}

fn raise_fd_limit(want: u64) {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = l.rlim_max.min(want);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
        assert!(
            l.rlim_cur >= want,
            "need {want} descriptors, the hard limit is {}",
            l.rlim_max
        );
    }
}

/// Upgrades a raw socket to `/echo` and reads the 101 head.
fn open_echo(gw: &Gateway) -> TcpStream {
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let key = rand_key();
    let req = format!(
        "GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("upgrade request");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).expect("101 head");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// Reads one unmasked server frame: (opcode, payload).
fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).expect("frame head");
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).expect("len16");
            usize::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).expect("len64");
            u64::from_be_bytes(l) as usize
        }
        n => usize::from(n),
    };
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).expect("payload");
    (h[0] & 0x0f, p)
}

#[test]
fn a_dry_buffer_ring_loses_nothing_under_2000_busy_connections() {
    let _turn = MANY_SOCKETS.lock().unwrap_or_else(|e| e.into_inner());
    raise_fd_limit(4_500);
    for_each_path(|gw| {
        let n = 2_000;
        let mut socks: Vec<TcpStream> = (0..n).map(|_| open_echo(gw)).collect();
        // Every connection sends 64 KiB at once (128 MiB in all, against
        // 2 MiB of receive buffers per core): the ring runs dry.
        let payloads: Vec<Vec<u8>> = (0..n)
            .map(|i| (0..65_536).map(|j| ((i * 31 + j) % 251) as u8).collect())
            .collect();
        let start = Instant::now();
        let mut jobs: Vec<(TcpStream, Vec<u8>)> = (socks.iter())
            .zip(&payloads)
            .map(|(s, p)| (s.try_clone().expect("clone"), frame(true, OP_BINARY, p)))
            .collect();
        let mut writers = Vec::new();
        while !jobs.is_empty() {
            let chunk: Vec<_> = jobs.drain(..jobs.len().min(250)).collect();
            writers.push(std::thread::spawn(move || {
                for (mut s, f) in chunk {
                    s.write_all(&f).expect("write");
                }
            }));
        }
        for (i, s) in socks.iter_mut().enumerate() {
            let (op, p) = read_frame(s);
            assert_eq!(op, OP_BINARY, "connection {i}");
            assert!(p == payloads[i], "connection {i}: echo differs");
        }
        for w in writers {
            w.join().expect("writer");
        }
        let exhausted = gw
            .scrape()
            .get("wsgate_uring_buffers_exhausted_total")
            .expect("the exhaustion counter is exported");
        eprintln!(
            "[{}] 2,000 x 64 KiB echoed in {:?}; buffer ring ran dry {exhausted} times",
            gw.driver.name(),
            start.elapsed()
        );
        match expected_path(gw) {
            "uring" => assert!(exhausted > 0.0, "128 MiB never ran 2 MiB of buffers dry"),
            _ => assert_eq!(exhausted, 0.0, "no ring on epoll"),
        }
    });
}

#[test]
fn idle_connections_hold_no_receive_buffer() {
    let _turn = MANY_SOCKETS.lock().unwrap_or_else(|e| e.into_inner());
    raise_fd_limit(15_500);
    for_each_path(|gw| {
        let n = 15_000;
        let before = gw.rss_kib();
        let mut socks = Vec::with_capacity(n);
        for _ in 0..n {
            socks.push(open_echo(gw));
        }
        std::thread::sleep(Duration::from_millis(500));
        let after = gw.rss_kib();
        let per_conn = (after.saturating_sub(before) * 1024) as f64 / n as f64;
        eprintln!(
            "[{}] {n} idle connections: RSS {before} -> {after} KiB, {per_conn:.0} B per connection",
            gw.driver.name()
        );
        // A 4 KiB receive buffer per idle connection would be 60 MiB here.
        assert!(per_conn < 1024.0, "{per_conn:.0} B per idle connection");
        // They still work.
        let s = &mut socks[n - 1];
        s.write_all(&frame(true, OP_TEXT, b"still here"))
            .expect("write");
        assert_eq!(read_frame(s), (OP_TEXT, b"still here".to_vec()));
    });
}

#[test]
fn answers_of_many_connections_leave_whole_and_in_order() {
    // On the ring the answers of every connection one wake serves leave in
    // one batch of sends: each peer must still get exactly its own, in order
    // (echoes and pongs interleaved as the frames were).
    for_each_path(|gw| {
        let n = 60;
        let mut socks: Vec<TcpStream> = (0..n).map(|_| open_echo(gw)).collect();
        let expected: Vec<Vec<(u8, Vec<u8>)>> = (0..n)
            .map(|i| {
                (0..40)
                    .map(|j| {
                        let p: Vec<u8> = (0..(i * 7 + j * 13) % 300)
                            .map(|k| ((i + j + k) % 251) as u8)
                            .collect();
                        if j % 9 == 4 {
                            (OP_PING, p[..p.len().min(125)].to_vec())
                        } else {
                            (OP_BINARY, p)
                        }
                    })
                    .collect()
            })
            .collect();
        for round in 0..2 {
            // Every connection's frames in one write, all before any is read.
            for (s, frames) in socks.iter_mut().zip(&expected) {
                let mut all = Vec::new();
                for (op, p) in frames {
                    all.extend_from_slice(&frame(true, *op, p));
                }
                s.write_all(&all).expect("write");
            }
            for (i, (s, frames)) in socks.iter_mut().zip(&expected).enumerate() {
                for (j, (op, p)) in frames.iter().enumerate() {
                    let want = if *op == OP_PING { OP_PONG } else { *op };
                    let (got_op, got) = read_frame(s);
                    assert_eq!(got_op, want, "round {round}, connection {i}, frame {j}");
                    assert!(
                        got == *p,
                        "round {round}, connection {i}, frame {j}: payload"
                    );
                }
            }
        }
    });
}

#[test]
fn answers_a_peer_leaves_unread_follow_in_order_once_it_reads() {
    // The peer writes far more than its socket buffers hold and reads
    // nothing for a while: the answers that find its socket full wait, the
    // gateway stops reading it (--max-backpressure), and once it reads,
    // every echo arrives whole and in order.
    for_each_path(|gw| {
        let mut s = open_echo(gw);
        // About 15 MB: more than loopback's socket buffers hold.
        let count = 60_000;
        let payload = |i: usize| -> Vec<u8> {
            let n = 100 + i % 300;
            (0..n).map(|k| ((i * 3 + k) % 251) as u8).collect()
        };
        let mut w = s.try_clone().expect("clone");
        let writer = std::thread::spawn(move || {
            let mut batch = Vec::new();
            for i in 0..count {
                batch.extend_from_slice(&frame(true, OP_BINARY, &payload(i)));
                if batch.len() > 8 * 1024 {
                    w.write_all(&batch).expect("write");
                    batch.clear();
                }
            }
            w.write_all(&batch).expect("write");
        });
        std::thread::sleep(Duration::from_millis(300));
        for i in 0..count {
            let (op, p) = read_frame(&mut s);
            assert_eq!(op, OP_BINARY, "echo {i}");
            assert!(p == payload(i), "echo {i}: payload differs");
        }
        writer.join().expect("writer");
    });
}
