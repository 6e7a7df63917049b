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

/// Collects what arrives for slot 7 until `want` bytes or the stream ends,
/// re-arming when told to; recycles each buffer only after copying it out
/// (or, with `hold`, only when the ring ran dry). Returns the bytes, how many
/// times the receive was armed, and whether the end was seen.
fn collect(u: &mut Uring, fd: RawFd, want: usize, hold: bool) -> (Vec<u8>, usize, bool) {
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
        u.complete(|e| events.push(e));
        for e in events {
            match e {
                Recv::Data {
                    slot,
                    buf,
                    len,
                    rearm,
                } => {
                    assert_eq!(slot, 7);
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
                Recv::Rearm { slot, .. } => {
                    assert_eq!(slot, 7);
                    for b in held.drain(..) {
                        u.recycle(b);
                    }
                    u.arm_recv(fd, 7).expect("rearm");
                    arms += 1;
                }
                Recv::End { slot, error } => {
                    assert_eq!((slot, error), (7, None));
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
    let mut u = Uring::new(64, 4, 256).expect("ring");
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
    let mut u = Uring::new(64, 2, 64).expect("ring");
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
    let mut u = Uring::new(64, 2, 64).expect("ring");
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
    let mut u = Uring::new(8, 2, 64).expect("ring");
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
    let Err(e) = Uring::new(8, 3, 64) else {
        panic!("3 buffers accepted");
    };
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}
