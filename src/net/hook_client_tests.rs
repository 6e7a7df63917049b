//! The hook client against real sockets: std servers on 127.0.0.1 in
//! threads, the client on a monoio runtime (each test on the legacy and
//! the fusion driver).

use super::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::thread;

fn on_both_drivers<F, Fut>(test: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("legacy runtime")
        .block_on(test());
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("fusion runtime")
        .block_on(test());
}

/// A backend on 127.0.0.1: each accepted connection runs `script` in its
/// own thread, with the connection's index.
struct Backend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Request bodies, in arrival order.
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

type Bodies = Arc<Mutex<Vec<serde_json::Value>>>;

fn backend(script: impl Fn(usize, StdStream, &Bodies) + Send + Sync + 'static) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let bodies: Bodies = Arc::default();
    let script = Arc::new(script);
    let (count, seen) = (accepted.clone(), bodies.clone());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let index = count.fetch_add(1, SeqCst);
            let (script, seen) = (script.clone(), seen.clone());
            thread::spawn(move || script(index, stream, &seen));
        }
    });
    Backend {
        addr,
        accepted,
        bodies,
    }
}

/// Reads one request; records its JSON body. `None` at end of stream.
fn read_request(stream: &mut StdStream, bodies: &Bodies) -> Option<()> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    assert!(head.starts_with("POST /check HTTP/1.1\r\n"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    let mut body = vec![0; length];
    stream.read_exact(&mut body).ok()?;
    bodies
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap());
    Some(())
}

/// Answers every request on the connection with `response`.
fn answering(response: &'static [u8]) -> impl Fn(usize, StdStream, &Bodies) + Send + Sync {
    move |_, mut s, bodies| {
        while read_request(&mut s, bodies).is_some() {
            s.write_all(response).unwrap();
        }
    }
}

const GRANT: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 34\r\n\r\n{\"user\":\"alice\",\"sub\":[\"news*\"]}  ";

fn client(backend: &Backend, timeout_ms: u64, concurrency: usize) -> (HookClient, Arc<HookStats>) {
    let stats = Arc::new(HookStats::default());
    let target = HookTarget::parse(&format!("http://{}/check", backend.addr)).unwrap();
    let c = HookClient::new(
        target,
        backend.addr,
        Duration::from_millis(timeout_ms),
        concurrency,
        stats.clone(),
    );
    (c, stats)
}

fn request(session: &str) -> HookRequest<'_> {
    HookRequest {
        session,
        path: b"/ws",
        cookie: Some(b"wsgate=1"),
        ..HookRequest::default()
    }
}

fn granted(v: &HookVerdict) -> bool {
    matches!(v, HookVerdict::Grant { user, grants: Some(_), expires_in: None } if &**user == "alice")
}

#[test]
fn grant() {
    on_both_drivers(|| async {
        let b = backend(answering(GRANT));
        let (c, stats) = client(&b, 2000, 4);
        let v = c.call(&request("s1")).await;
        assert!(granted(&v), "{v:?}");
        assert_eq!(stats.count(HookResult::Granted), 1);
        let bodies = b.bodies.lock().unwrap();
        assert_eq!(bodies[0]["session"], "s1");
        assert_eq!(bodies[0]["headers"]["cookie"], "wsgate=1");
    });
}

#[test]
fn refusals_pass_on() {
    on_both_drivers(|| async {
        for (status, result) in [
            (401, HookResult::Unauthorized),
            (403, HookResult::Forbidden),
        ] {
            let response: &'static [u8] = match status {
                401 => b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
                _ => b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno",
            };
            let b = backend(answering(response));
            let (c, stats) = client(&b, 2000, 4);
            assert_eq!(c.call(&request("s")).await, HookVerdict::Refuse(status));
            assert_eq!(stats.count(result), 1);
            // Still keep-alive: the next call reuses the connection.
            assert_eq!(c.call(&request("s")).await, HookVerdict::Refuse(status));
            assert_eq!(b.accepted.load(SeqCst), 1);
        }
    });
}

#[test]
fn bad_answers_fail_closed() {
    on_both_drivers(|| async {
        for (response, reason, result) in [
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nnot json"[..],
                "json",
                HookResult::Malformed,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"user\":1}",
                "json",
                HookResult::Malformed,
            ),
            (b"SSH-2.0-nope\r\n\r\n", "malformed", HookResult::Malformed),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n",
                "too_large",
                HookResult::Malformed,
            ),
            (
                b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
                "status",
                HookResult::Error,
            ),
        ] {
            let b = backend(answering(response));
            let (c, stats) = client(&b, 2000, 4);
            assert_eq!(c.call(&request("s")).await, HookVerdict::Fail(reason));
            assert_eq!(stats.count(result), 1, "{reason}");
        }
    });
}

#[test]
fn answer_in_pieces_and_to_end_of_stream() {
    on_both_drivers(|| async {
        let b = backend(|_, mut s, bodies| {
            while read_request(&mut s, bodies).is_some() {
                for piece in [
                    &b"HTTP/1.1 200 OK\r\nTransfer-"[..],
                    b"Encoding: chunked\r\n\r\n5\r\n{\"use",
                    b"\r\n1b\r\nr\":\"alice\",\"sub\":[\"news*\"]}\r\n",
                    b"0\r\n\r\n",
                ] {
                    s.write_all(piece).unwrap();
                    thread::sleep(Duration::from_millis(5));
                }
            }
        });
        let (c, _) = client(&b, 2000, 4);
        let v = c.call(&request("s")).await;
        assert!(granted(&v), "{v:?}");
        assert_eq!(c.idle_connections(), 1);

        // No length: the body ends when the backend closes; not pooled.
        let b = backend(|_, mut s, bodies| {
            read_request(&mut s, bodies);
            s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"user\":\"alice\",\"sub\":[\"news*\"]}")
                .unwrap();
        });
        let (c, _) = client(&b, 2000, 4);
        let v = c.call(&request("s")).await;
        assert!(granted(&v), "{v:?}");
        assert_eq!(c.idle_connections(), 0);
    });
}

/// Reads requests and never answers; notes when the client hangs up.
fn silent(hung_up: Arc<AtomicBool>) -> impl Fn(usize, StdStream, &Bodies) + Send + Sync {
    move |_, mut s, bodies| {
        while read_request(&mut s, bodies).is_some() {}
        hung_up.store(true, SeqCst);
    }
}

#[test]
fn silence_is_a_timeout_within_the_bound() {
    on_both_drivers(|| async {
        let hung_up = Arc::new(AtomicBool::new(false));
        let b = backend(silent(hung_up.clone()));
        let (c, stats) = client(&b, 200, 1);
        let c = Rc::new(c);
        // Two calls, one turn: the second waits, and its wait counts too.
        let started = Instant::now();
        let calls: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                monoio::spawn(async move { c.call(&request("s")).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await, HookVerdict::Fail("timeout"));
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_millis(800), "{took:?}");
        assert_eq!(stats.count(HookResult::Timeout), 2);
        assert_eq!(c.idle_connections(), 0);
        // The timed-out connection was dropped, not pooled (the hook's
        // thread sees the hang-up; up to 5 s on a loaded machine).
        for _ in 0..500 {
            if hung_up.load(SeqCst) {
                break;
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(hung_up.load(SeqCst));
        // The second call got its turn as the first gave up, at about its
        // own deadline: it may have connected before giving up too.
        assert!((1..=2).contains(&b.accepted.load(SeqCst)));
    });
}

#[test]
fn nobody_listening_is_an_error() {
    on_both_drivers(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let stats = Arc::new(HookStats::default());
        let target = HookTarget::parse(&format!("http://{addr}/check")).unwrap();
        let c = HookClient::new(target, addr, Duration::from_secs(2), 4, stats.clone());
        let started = Instant::now();
        assert_eq!(c.call(&request("s")).await, HookVerdict::Fail("connect"));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(stats.count(HookResult::Error), 1);
    });
}

#[test]
fn keep_alive_connection_is_reused() {
    on_both_drivers(|| async {
        let b = backend(answering(GRANT));
        let (c, stats) = client(&b, 2000, 4);
        for i in 0..5 {
            let v = c.call(&request(&format!("s{i}"))).await;
            assert!(granted(&v), "{v:?}");
        }
        assert_eq!(b.accepted.load(SeqCst), 1);
        assert_eq!(b.bodies.lock().unwrap().len(), 5);
        assert_eq!(c.idle_connections(), 1);
        assert_eq!(stats.count(HookResult::Granted), 5);
    });
}

#[test]
fn idle_connection_closed_by_the_backend_is_replaced() {
    on_both_drivers(|| async {
        // Answers one request, then closes (an idle timeout of zero).
        let b = backend(|_, mut s, bodies| {
            if read_request(&mut s, bodies).is_some() {
                s.write_all(GRANT).unwrap();
            }
        });
        let (c, _) = client(&b, 2000, 4);
        assert!(granted(&c.call(&request("s")).await));
        monoio::time::sleep(Duration::from_millis(50)).await;
        assert!(granted(&c.call(&request("s")).await));
        assert_eq!(b.accepted.load(SeqCst), 2);
    });
}

#[test]
fn pooled_connection_closed_unanswered_is_retried_once() {
    on_both_drivers(|| async {
        // The first connection answers once, then takes the next request
        // and hangs up; later connections answer.
        let b = backend(|index, mut s, bodies| {
            if index == 0 {
                read_request(&mut s, bodies);
                s.write_all(GRANT).unwrap();
                read_request(&mut s, bodies);
                return;
            }
            answering(GRANT)(index, s, bodies);
        });
        let (c, stats) = client(&b, 2000, 4);
        assert!(granted(&c.call(&request("s")).await));
        assert!(granted(&c.call(&request("s")).await));
        assert_eq!(b.accepted.load(SeqCst), 2);
        assert_eq!(stats.count(HookResult::Granted), 2);

        // Only once: when the fresh connection hangs up too, the call fails.
        let b = backend(|index, mut s, bodies| {
            read_request(&mut s, bodies);
            if index == 0 {
                s.write_all(GRANT).unwrap();
                read_request(&mut s, bodies);
            }
        });
        let (c, stats) = client(&b, 2000, 4);
        assert!(granted(&c.call(&request("s")).await));
        assert_eq!(c.call(&request("s")).await, HookVerdict::Fail("closed"));
        assert_eq!(b.accepted.load(SeqCst), 2);
        assert_eq!(stats.count(HookResult::Error), 1);
    });
}

#[test]
fn concurrency_is_bounded_and_turns_are_taken_in_order() {
    on_both_drivers(|| async {
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n, m) = (now.clone(), most.clone());
        let b = backend(move |_, mut s, bodies| {
            while read_request(&mut s, bodies).is_some() {
                let in_flight = n.fetch_add(1, SeqCst) + 1;
                m.fetch_max(in_flight, SeqCst);
                thread::sleep(Duration::from_millis(30));
                n.fetch_sub(1, SeqCst);
                s.write_all(GRANT).unwrap();
            }
        });
        let (c, stats) = client(&b, 5000, 2);
        let c = Rc::new(c);
        let calls: Vec<_> = (0..6)
            .map(|i| {
                let c = c.clone();
                monoio::spawn(async move { c.call(&request(&format!("s{i}"))).await })
            })
            .collect();
        for call in calls {
            assert!(granted(&call.await));
        }
        assert_eq!(most.load(SeqCst), 2);
        assert!(b.accepted.load(SeqCst) <= 2);
        assert!(c.idle_connections() <= 2);
        assert_eq!(stats.count(HookResult::Granted), 6);

        // One turn: requests reach the backend in the order of the calls.
        let b = backend(answering(GRANT));
        let (c, _) = client(&b, 5000, 1);
        let c = Rc::new(c);
        let calls: Vec<_> = (0..5)
            .map(|i| {
                let c = c.clone();
                monoio::spawn(async move { c.call(&request(&format!("s{i}"))).await })
            })
            .collect();
        for call in calls {
            assert!(granted(&call.await));
        }
        let order: Vec<_> = (b.bodies.lock().unwrap().iter())
            .map(|v| v["session"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(order, ["s0", "s1", "s2", "s3", "s4"]);
    });
}

#[test]
fn a_waiter_that_gives_up_leaves_the_queue() {
    on_both_drivers(|| async {
        let turns = Turns::new(1);
        let first = turns.take().await;
        // Gives up while waiting: no turn is lost or kept.
        assert!(
            monoio::time::timeout(Duration::from_millis(10), turns.take())
                .await
                .is_err()
        );
        assert!(turns.waiting.borrow().is_empty());
        drop(first);
        assert_eq!(turns.free.get(), 1);
        let again = turns.take().await;
        assert_eq!(turns.free.get(), 0);
        // Given a turn, then dropped before it saw it: the turn passes on.
        let mut waiting = Box::pin(turns.take());
        let polled = monoio::time::timeout(Duration::from_millis(10), &mut waiting).await;
        assert!(polled.is_err());
        drop(again);
        assert!(turns.waiting.borrow().is_empty());
        assert_eq!(turns.free.get(), 0);
        drop(waiting);
        assert_eq!(turns.free.get(), 1);
    });
}

#[test]
fn results_map_to_counters() {
    let grant = verdict(200, br#"{"user":"u"}"#);
    assert_eq!(result_of(&grant), HookResult::Granted);
    assert_eq!(
        result_of(&HookVerdict::Refuse(401)),
        HookResult::Unauthorized
    );
    assert_eq!(result_of(&HookVerdict::Refuse(403)), HookResult::Forbidden);
    for (reason, result) in [
        ("timeout", HookResult::Timeout),
        ("connect", HookResult::Error),
        ("closed", HookResult::Error),
        ("status", HookResult::Error),
        ("malformed", HookResult::Malformed),
        ("too_large", HookResult::Malformed),
        ("json", HookResult::Malformed),
        ("user", HookResult::Malformed),
        ("patterns", HookResult::Malformed),
        ("expires_in", HookResult::Malformed),
    ] {
        assert_eq!(result_of(&HookVerdict::Fail(reason)), result, "{reason}");
    }
}
