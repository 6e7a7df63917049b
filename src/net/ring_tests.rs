//! The ring against real loopback sockets: multishot receive, buffers
//! straddled and recycled, the ring running dry, end of stream.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::*;

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (server, _) = l.accept().expect("accept");
    client.set_nodelay(true).expect("nodelay");
    (client, server)
}

/// Collects what arrives for key 7 until `want` bytes or the stream ends,
/// re-arming when told to; recycles each buffer only after copying it out
/// (or, with `hold`, only when the ring ran dry). Returns the bytes, how many
/// times the receive was armed, and whether the end was seen.
fn collect(u: &mut Ring, fd: RawFd, want: usize, hold: bool) -> (Vec<u8>, usize, bool) {
    let mut got = Vec::new();
    let mut arms = 1;
    let mut ended = false;
    let mut held = Vec::new();
    u.arm_recv(fd, 7).expect("arm");
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < want && !ended {
        assert!(
            Instant::now() < deadline,
            "stalled at {} of {want}",
            got.len()
        );
        u.submit_and_wait().expect("wait");
        let mut events = Vec::new();
        u.complete(|e| {
            if let Event::Recv(r) = e {
                events.push(r);
            }
        });
        for e in events {
            match e {
                Recv::Data {
                    key,
                    buf,
                    len,
                    rearm,
                } => {
                    assert_eq!(key, 7);
                    got.extend_from_slice(u.bytes(buf, len));
                    if hold {
                        held.push(buf);
                    } else {
                        u.recycle(buf);
                    }
                    if rearm {
                        for b in held.drain(..) {
                            u.recycle(b);
                        }
                        u.arm_recv(fd, 7).expect("rearm");
                        arms += 1;
                    }
                }
                Recv::Rearm { key, .. } => {
                    assert_eq!(key, 7);
                    for b in held.drain(..) {
                        u.recycle(b);
                    }
                    u.arm_recv(fd, 7).expect("rearm");
                    arms += 1;
                }
                Recv::End { key, error } => {
                    assert_eq!((key, error), (7, None));
                    ended = true;
                }
            }
        }
    }
    (got, arms, ended)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn kernel_releases_are_read() {
    assert_eq!(parse_release("6.18.0-cloud-amd64"), Some((6, 18)));
    assert_eq!(
        parse_release("5.15.167.4-microsoft-standard-WSL2"),
        Some((5, 15))
    );
    assert_eq!(parse_release("6.0"), Some((6, 0)));
    assert_eq!(parse_release("garbage"), None);
    assert!((5, 19) < MIN_KERNEL && (6, 1) >= MIN_KERNEL);
}

#[test]
fn the_probe_agrees_with_the_kernel() {
    let release = parse_release(&kernel_release());
    match (probe(), IoUring::new(8)) {
        (Ok(()), Ok(_)) => assert!(release >= Some(MIN_KERNEL)),
        (Err(why), _) => assert!(!why.is_empty()),
        (Ok(()), Err(e)) => panic!("probe passed but io_uring_setup fails: {e}"),
    }
}

#[test]
fn one_arm_receives_many_sends_and_buffers_are_reused() {
    if probe().is_err() {
        return; // no io_uring here: the epoll path serves (the probe test says why)
    }
    let (mut client, server) = pair();
    let mut u = Ring::new(64, 4, 256).expect("ring");
    let data = pattern(20 * 100);
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            for chunk in data.chunks(100) {
                client.write_all(chunk).expect("write");
                std::thread::sleep(Duration::from_millis(1));
            }
            client
        })
    };
    let (got, _arms, _) = collect(&mut u, server.as_raw_fd(), data.len(), false);
    let _client = writer.join().expect("writer");
    assert_eq!(got, data);
    // Twenty sends through four buffers: they went back to the ring.
    assert_eq!(u.exhausted(), 0);
}

#[test]
fn a_peer_sending_one_byte_at_a_time_loses_nothing() {
    if probe().is_err() {
        return;
    }
    let (mut client, server) = pair();
    let mut u = Ring::new(64, 2, 64).expect("ring");
    let data = pattern(300);
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            for b in &data {
                client.write_all(std::slice::from_ref(b)).expect("write");
            }
            client
        })
    };
    let (got, _, _) = collect(&mut u, server.as_raw_fd(), data.len(), false);
    let _client = writer.join().expect("writer");
    assert_eq!(got, data);
}

#[test]
fn a_dry_buffer_ring_ends_the_receive_and_a_rearm_loses_nothing() {
    if probe().is_err() {
        return;
    }
    let (mut client, server) = pair();
    // Two buffers of 64 bytes, held until the ring runs dry: 64 KiB must
    // end the multishot receive (ENOBUFS) many times over.
    let mut u = Ring::new(64, 2, 64).expect("ring");
    let data = pattern(64 * 1024);
    client.write_all(&data).expect("write");
    let (got, arms, _) = collect(&mut u, server.as_raw_fd(), data.len(), true);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes reordered or changed");
    assert!(u.exhausted() > 0, "the ring never ran dry");
    assert!(arms > 1, "never re-armed");
}

#[test]
fn the_end_of_the_stream_ends_the_receive() {
    if probe().is_err() {
        return;
    }
    let (mut client, server) = pair();
    let mut u = Ring::new(8, 2, 64).expect("ring");
    client.write_all(b"last words").expect("write");
    drop(client);
    let (got, _, ended) = collect(&mut u, server.as_raw_fd(), usize::MAX, false);
    assert_eq!(got, b"last words");
    assert!(ended);
}

#[test]
fn buffer_counts_must_be_powers_of_two() {
    if probe().is_err() {
        return;
    }
    let Err(e) = Ring::new(8, 3, 64) else {
        panic!("3 buffers accepted");
    };
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn sends_to_many_connections_leave_in_one_enter() {
    if probe().is_err() {
        return;
    }
    let mut u = Ring::new(128, 2, 64).expect("ring");
    let pairs: Vec<(TcpStream, TcpStream)> = (0..50).map(|_| pair()).collect();
    for (key, (_, server)) in pairs.iter().enumerate() {
        let line = format!("frame for connection {key}").into_bytes();
        assert!(u.send(server.as_raw_fd(), key as u64, line).is_ok());
        assert!(u.is_sending(key as u64));
    }
    // A second send on a busy connection is refused, its buffer returned.
    let refused = u.send(pairs[0].1.as_raw_fd(), 0, b"again".to_vec());
    assert_eq!(refused.err().as_deref(), Some(&b"again"[..]));
    assert_eq!(u.submit().expect("submit"), 50, "one enter for all fifty");
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while done < 50 {
        assert!(Instant::now() < deadline, "{done} of 50 sends completed");
        u.submit_and_wait().expect("wait");
        u.complete(|e| {
            let Event::Sent { key, result, buf } = e else {
                panic!("unexpected {e:?}");
            };
            assert_eq!(buf, format!("frame for connection {key}").into_bytes());
            assert_eq!(result.expect("sent"), buf.len());
            done += 1;
        });
    }
    for (key, (client, _)) in pairs.iter().enumerate() {
        let want = format!("frame for connection {key}");
        let mut got = vec![0u8; want.len()];
        let mut c = client;
        std::io::Read::read_exact(&mut c, &mut got).expect("read");
        assert_eq!(got, want.as_bytes());
        assert!(!u.is_sending(key as u64));
    }
}

#[test]
fn a_send_larger_than_the_socket_takes_is_completed_by_sending_the_rest() {
    if probe().is_err() {
        return;
    }
    let (client, server) = pair();
    let mut u = Ring::new(8, 2, 64).expect("ring");
    let data = pattern(8 << 20);
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut c = client;
        std::io::Read::read_to_end(&mut c, &mut got).expect("read");
        got
    });
    let fd = server.as_raw_fd();
    let (mut sent, mut sends) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut next = Some(data.clone());
    while sent < data.len() {
        assert!(Instant::now() < deadline, "stalled at {sent}");
        if let Some(buf) = next.take() {
            assert!(u.send(fd, 3, buf).is_ok());
            sends += 1;
        }
        u.submit_and_wait().expect("wait");
        u.complete(|e| {
            let Event::Sent {
                key,
                result,
                mut buf,
            } = e
            else {
                panic!("unexpected {e:?}");
            };
            assert_eq!(key, 3);
            let n = result.expect("sent");
            assert!(n > 0 && n <= buf.len());
            sent += n;
            buf.drain(..n);
            if !buf.is_empty() {
                next = Some(buf);
            }
        });
    }
    drop(server);
    assert_eq!(reader.join().expect("reader"), data);
    assert!(sends >= 1);
}

#[test]
fn a_multishot_accept_takes_every_connection() {
    if probe().is_err() {
        return;
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let mut u = Ring::new(16, 2, 64).expect("ring");
    u.accept(l.as_raw_fd()).expect("accept");
    u.submit().expect("submit");
    let clients: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let mut accepted = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted.len() < clients.len() {
        assert!(
            Instant::now() < deadline,
            "{} of 5 accepted",
            accepted.len()
        );
        u.submit_and_wait().expect("wait");
        u.complete(|e| {
            let Event::Accepted { socket, rearm } = e else {
                panic!("unexpected {e:?}");
            };
            assert!(!rearm, "the multishot accept ended");
            accepted.push(socket.expect("accepted"));
        });
    }
    // Each is a live, non-blocking socket of one of the clients.
    let mut peers: Vec<_> = (accepted.iter())
        .map(|fd| {
            let s = TcpStream::from(fd.try_clone().expect("dup"));
            assert!(s.set_nonblocking(true).is_ok());
            s.peer_addr().expect("peer")
        })
        .collect();
    let mut locals: Vec<_> = clients
        .iter()
        .map(|c| c.local_addr().expect("local"))
        .collect();
    peers.sort();
    locals.sort();
    assert_eq!(peers, locals);
}

#[test]
fn sends_now_complete_in_one_enter_and_other_completions_wait_their_turn() {
    if probe().is_err() {
        return;
    }
    let mut u = Ring::new(64, 4, 256).expect("ring");
    let pairs: Vec<(TcpStream, TcpStream)> = (0..10).map(|_| pair()).collect();
    // A receive whose completion arrives while the sends are reaped.
    let (mut talker, listener) = pair();
    u.arm_recv(listener.as_raw_fd(), 99).expect("arm");
    u.submit().expect("submit");
    talker.write_all(b"hello").expect("write");
    std::thread::sleep(Duration::from_millis(20));
    let lines: Vec<Vec<u8>> = (0..10).map(|i| format!("now {i}").into_bytes()).collect();
    let sends: Vec<(RawFd, &[u8])> = (pairs.iter())
        .zip(&lines)
        .map(|((_, s), l)| (s.as_raw_fd(), l.as_slice()))
        .collect();
    let mut results = Vec::new();
    u.send_now(&sends, &mut results);
    assert_eq!(results.len(), 10);
    for (r, l) in results.iter().zip(&lines) {
        assert_eq!(*r.as_ref().expect("sent"), l.len());
    }
    for ((client, _), l) in pairs.iter().zip(&lines) {
        let mut got = vec![0u8; l.len()];
        let mut c = client;
        std::io::Read::read_exact(&mut c, &mut got).expect("read");
        assert_eq!(&got, l);
    }
    // The receive's completion was set aside, not lost.
    let mut data = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while data.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the receive's completion was lost"
        );
        if !u.has_stash() {
            u.submit_and_wait().expect("wait");
        }
        let mut events = Vec::new();
        u.complete(|e| events.push(e));
        for e in events {
            if let Event::Recv(Recv::Data { key, buf, len, .. }) = e {
                assert_eq!(key, 99);
                data.extend_from_slice(u.bytes(buf, len));
                u.recycle(buf);
            }
        }
    }
    assert_eq!(data, b"hello");
}

#[test]
fn a_send_now_to_a_full_socket_says_would_block() {
    if probe().is_err() {
        return;
    }
    let mut u = Ring::new(64, 4, 256).expect("ring");
    let (_client, server) = pair();
    server.set_nonblocking(true).expect("nonblocking");
    let big = vec![0u8; 1 << 20];
    let mut results = Vec::new();
    let mut total = 0;
    // Nobody reads: the socket fills, and a send then takes nothing.
    for _ in 0..64 {
        u.send_now(&[(server.as_raw_fd(), &big)], &mut results);
        match &results[0] {
            Ok(n) => total += n,
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
                assert!(total > 0);
                return;
            }
        }
    }
    panic!("64 MiB went into a socket nobody reads");
}

#[test]
fn the_buffers_grow_when_dry_and_shrink_when_quiet() {
    if probe().is_err() {
        return;
    }
    let (mut client, server) = pair();
    let mut u = Ring::sized(64, 8, 64, 2).expect("ring");
    assert_eq!(u.buffers(), 2);
    let data: Vec<u8> = (0..2048).map(|i| (i % 251) as u8).collect();
    client.write_all(&data).expect("write");
    // Holding every buffer until the receive ends runs the ring dry.
    let (got, arms, _) = collect(&mut u, server.as_raw_fd(), data.len(), true);
    assert_eq!(got, data);
    assert!(u.exhausted() > 0 && arms > 1, "never ran dry");
    assert_eq!(u.buffers(), 8, "doubled up to the room registered");
    u.tune(1_000, 10_000); // the first look after running dry starts the quiet
    u.tune(5_000, 10_000);
    assert_eq!(u.buffers(), 8, "not quiet for long enough yet");
    u.tune(11_000, 10_000);
    assert_eq!(u.buffers(), 4);
    // Buffers above the new count still in the kernel's ring are retired
    // as they come back; the stream is whole.
    client.write_all(&data).expect("write");
    let (got, _, _) = collect(&mut u, server.as_raw_fd(), data.len(), false);
    assert_eq!(got, data);
    // (that receive may have run the four dry again: quiet is counted anew)
    for now in [21_000, 32_000, 43_000, 54_000, 65_000] {
        u.tune(now, 10_000);
    }
    assert_eq!(u.buffers(), 2, "never below the minimum");
    // Growing again brings retired buffers back once each: running dry
    // while holding them all must still give every byte once, in order.
    let more: Vec<u8> = (0..2048).map(|i| (i % 241) as u8).collect();
    client.write_all(&more).expect("write");
    let (got, _, _) = collect(&mut u, server.as_raw_fd(), more.len(), true);
    assert_eq!(got, more);
    assert_eq!(u.buffers(), 8);
}

#[test]
fn completions_beyond_the_queue_are_not_lost() {
    if probe().is_err() {
        return;
    }
    // 4 entries: a completion queue of 32. Fifty receives complete before
    // any is read: the kernel keeps the overflow, `complete` must fetch it.
    let mut u = Ring::new(4, 64, 64).expect("ring");
    let pairs: Vec<(TcpStream, TcpStream)> = (0..50).map(|_| pair()).collect();
    for (key, (client, server)) in pairs.iter().enumerate() {
        u.arm_recv(server.as_raw_fd(), key as u64).expect("arm");
        let mut c = client;
        c.write_all(format!("to {key}").as_bytes()).expect("write");
    }
    u.submit().expect("submit");
    std::thread::sleep(Duration::from_millis(100));
    let mut seen = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 50 {
        assert!(
            Instant::now() < deadline,
            "{} of 50 receives seen",
            seen.len()
        );
        let mut data = Vec::new();
        u.complete(|e| {
            if let Event::Recv(Recv::Data { key, buf, len, .. }) = e {
                data.push((key, buf, len));
            }
        });
        for (key, buf, len) in data {
            seen.insert(key, u.bytes(buf, len).to_vec());
            u.recycle(buf);
        }
        u.submit().expect("submit");
    }
    for (key, got) in seen {
        assert_eq!(got, format!("to {key}").into_bytes());
    }
}

#[test]
fn cancel_and_close_ends_the_receive_and_closes_the_socket() {
    if probe().is_err() {
        return;
    }
    use std::io::Read;
    use std::os::fd::IntoRawFd;
    let (mut client, server) = pair();
    let mut u = Ring::new(8, 2, 64).expect("ring");
    let fd = server.into_raw_fd(); // the ring's to close from here on
    u.arm_recv(fd, 7).expect("arm");
    u.poll_writable(fd, 7).expect("poll");
    u.submit().expect("submit");
    u.cancel_and_close(fd).expect("queued");
    // The peer sees the end of the stream: the close ran, and no operation
    // kept the socket open.
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut b = [0u8; 8];
    assert_eq!(client.read(&mut b).expect("read"), 0, "no FIN");
    // The receive's last completion says it was cancelled.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ended = false;
    while !ended {
        assert!(Instant::now() < deadline, "the receive never ended");
        u.submit_and_wait().expect("wait");
        u.complete(|e| {
            if let Event::Recv(Recv::End { key: 7, error }) = e {
                assert_eq!(error, Some(libc::ECANCELED));
                ended = true;
            }
        });
    }
}

#[test]
fn sends_now_beyond_the_submission_queue_all_leave() {
    if probe().is_err() {
        return;
    }
    // 8 submission slots, 50 sends: the queue is handed over when full.
    let mut u = Ring::new(8, 2, 64).expect("ring");
    let pairs: Vec<(TcpStream, TcpStream)> = (0..50).map(|_| pair()).collect();
    let lines: Vec<Vec<u8>> = (0..50).map(|i| format!("send {i}").into_bytes()).collect();
    let sends: Vec<(RawFd, &[u8])> = (pairs.iter())
        .zip(&lines)
        .map(|((_, s), l)| (s.as_raw_fd(), l.as_slice()))
        .collect();
    let mut results = Vec::new();
    u.send_now(&sends, &mut results);
    assert_eq!(results.len(), 50);
    for ((r, l), (client, _)) in results.iter().zip(&lines).zip(&pairs) {
        assert_eq!(*r.as_ref().expect("sent"), l.len());
        let mut got = vec![0u8; l.len()];
        let mut c = client;
        std::io::Read::read_exact(&mut c, &mut got).expect("read");
        assert_eq!(&got, l);
    }
}
