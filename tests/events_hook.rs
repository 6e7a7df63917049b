//! `--events-hook URL` (DESIGN §12) against a small HTTP backend inside the
//! test: `connect`, `send` and `disconnect` arrive in order with their
//! fields; a `send` gets the backend's `reply` (binary stays binary); a
//! failing backend gives `err <status> send failed`; a backend that is down
//! for a while loses no `connect`/`disconnect` (retried within
//! `--events-retry`); a stalled backend with a small `--events-queue` gives
//! `err 503 busy` while the gateway keeps serving; a burst of sends reaches
//! the backend in far fewer requests than sends.

#![cfg(feature = "backend")]

mod common;
mod gw;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{for_each_driver, wait_until};
use gw::{metric, Client, Event, TOKEN};
use serde_json::{json, Value};

const QUIET: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// 200, each send answered `echo:<data>` (binary: the bytes reversed).
    Echo,
    /// This status for every request.
    Status(u16),
    /// Accept and close without answering (a backend that is down).
    Refuse,
    /// Read the request and never answer.
    Stall,
    /// As `Echo`, after this many ms.
    Slow(u64),
}

#[derive(Default)]
struct State {
    mode: Option<Mode>,
    /// Events of the requests answered with 200, in arrival order.
    events: Vec<Value>,
    /// Requests received (any answer).
    requests: usize,
}

/// A keep-alive HTTP/1.1 backend on a loopback port.
struct Backend {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    fn start(mode: Mode) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            mode: Some(mode),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (st, sp) = (st.clone(), sp.clone());
                        conns.push(std::thread::spawn(move || serve(s, &st, &sp)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Backend {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    fn set(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    fn events(&self) -> Vec<Value> {
        self.state.lock().unwrap().events.clone()
    }

    fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }

    /// Waits until `cond` holds for the events answered so far.
    fn wait_events(&self, ctx: &str, cond: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ev = self.events();
            if cond(&ev) {
                return ev;
            }
            assert!(Instant::now() < deadline, "{ctx}: backend saw {ev:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves one connection's requests until it closes or the test ends.
fn serve(mut s: TcpStream, state: &Mutex<State>, stop: &AtomicBool) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut tmp) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                Err(_) => {}
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        assert!(head.starts_with("post /events http/1.1"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        while buf.len() < end + 4 + len {
            match s.read(&mut tmp) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                Err(_) if stop.load(Ordering::SeqCst) => return,
                Err(_) => {}
            }
        }
        let body: Vec<u8> = buf.drain(..end + 4 + len).skip(end + 4).collect();
        let batch: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array of events");
        assert!(
            !batch.is_empty() && batch.len() <= 100,
            "batch of {}",
            batch.len()
        );
        let mode = {
            let mut st = state.lock().unwrap();
            st.requests += 1;
            st.mode.expect("mode")
        };
        let (status, answer) = match mode {
            Mode::Refuse => return, // closed unanswered
            Mode::Stall => {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Mode::Status(status) => (status, Vec::new()),
            Mode::Echo | Mode::Slow(_) => {
                if let Mode::Slow(ms) = mode {
                    std::thread::sleep(Duration::from_millis(ms));
                }
                let replies: Vec<Value> = batch.iter().map(reply_for).collect();
                state.lock().unwrap().events.extend(batch);
                (200, serde_json::to_vec(&replies).unwrap())
            }
        };
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if s.write_all(resp.as_bytes()).is_err() || s.write_all(&answer).is_err() {
            return;
        }
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn reply_for(e: &Value) -> Value {
    if e["type"] != "send" {
        return Value::Null;
    }
    let data = e["data"].as_str().unwrap_or_default();
    if data == "fail" {
        return json!({"status": 418});
    }
    if e["binary"] == true {
        let mut bytes = b64().decode(data).expect("base64");
        bytes.reverse();
        return json!({"reply_base64": b64().encode(bytes)});
    }
    json!({"reply": format!("echo:{data}")})
}

fn args(backend: &Backend, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = gw::args(&["--publish-token", TOKEN])
        .into_iter()
        .map(str::to_string)
        .collect();
    v.push("--events-hook".into());
    v.push(backend.url());
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The events of one session, in order.
fn of_session<'a>(events: &'a [Value], id: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["session"] == id).collect()
}

#[test]
fn events_arrive_in_order_and_a_send_gets_its_reply() {
    let backend = Backend::start(Mode::Echo);
    for_each_driver(&strs(&args(&backend, &[])), |gw| {
        let mut a = Client::new(gw, "A");
        a.send_text("send hi there");
        a.expect_line("reply echo:hi there", "the backend's reply");
        a.send_binary(b"send\n\x01\x02\x03");
        match a.next("the binary reply") {
            Event::Binary(data) => assert_eq!(data, b"reply\n\x03\x02\x01"),
            other => panic!("expected a binary reply, got {other:?}"),
        }
        a.send_text("send fail");
        a.expect_line("err 418 send failed", "a send the backend refused");
        let (id, peer) = (a.id.clone(), a.peer.clone());
        a.close_with(1000);
        let ev = backend.wait_events("A's disconnect", |ev| {
            of_session(ev, &id)
                .iter()
                .any(|e| e["type"] == "disconnect")
        });
        let mine = of_session(&ev, &id);
        let kinds: Vec<&str> = mine.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["connect", "send", "send", "send", "disconnect"],
            "{mine:#?}"
        );
        for e in &mine {
            assert_eq!(e["peer"], peer.as_str());
            assert_eq!(e["user"], Value::Null, "auth is off");
            assert_eq!(e["node"], gw::NODE);
        }
        assert_eq!(mine[0]["resumed"], false);
        assert_eq!(mine[1]["data"], "hi there");
        assert_eq!(mine[2]["binary"], true);
        assert_eq!(mine[2]["data"], b64().encode([1u8, 2, 3]));
        assert_eq!(mine[4]["code"], 1000);
        assert_eq!(mine[4]["reason"], "client");
        assert_eq!(mine[4]["ended"], true, "a 1000 ends the session");

        // A resume says so; a socket that vanished keeps its session.
        let b = Client::new(gw, "B");
        let id = b.id.clone();
        b.drop_tcp();
        let b2 = Client::resume(gw, "B again", &id);
        b2.drop_tcp();
        let ev = backend.wait_events("B's two disconnects", |ev| {
            of_session(ev, &id)
                .iter()
                .filter(|e| e["type"] == "disconnect")
                .count()
                == 2
        });
        let mine = of_session(&ev, &id);
        let kinds: Vec<&str> = mine.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["connect", "disconnect", "connect", "disconnect"],
            "{mine:#?}"
        );
        assert_eq!(mine[2]["resumed"], true);
        assert_eq!(mine[1]["code"], 1006);
        assert_eq!(mine[1]["reason"], "vanished");
        assert_eq!(mine[1]["ended"], false);
        assert_eq!(
            metric(gw, "wsgate_events_total{type=\"send\",result=\"ok\"}"),
            2.0
        );
        assert_eq!(
            metric(gw, "wsgate_events_total{type=\"send\",result=\"failed\"}"),
            1.0
        );
        // The session id goes to the backend only: never to a log line.
        assert!(gw.logs().iter().all(|l| !l.contains(&id)));
    });
}

#[test]
fn a_failing_backend_fails_sends_at_once_and_retries_connects() {
    let backend = Backend::start(Mode::Status(500));
    for_each_driver(&strs(&args(&backend, &[])), |gw| {
        backend.set(Mode::Status(500));
        let mut a = Client::new(gw, "A");
        a.send_text("send x");
        a.expect_line("err 500 send failed", "a 500 from the backend");
        // Down (connections closed unanswered) for a while.
        backend.set(Mode::Refuse);
        a.send_text("send y");
        a.expect_line("err 502 send failed", "a backend that closes unanswered");
        let ids: Vec<String> = (0..3)
            .map(|i| {
                let c = Client::new(gw, &format!("C{i}"));
                let id = c.id.clone();
                c.drop_tcp();
                id
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            wait_until(Duration::from_secs(5), || {
                gw.logs()
                    .iter()
                    .any(|l| l.contains("event=events_hook_down"))
            }),
            "the hook going down is logged"
        );
        backend.set(Mode::Echo);
        let a_id = a.id.clone();
        let ev = backend.wait_events("every connect and disconnect after the outage", |ev| {
            ids.iter().all(|id| of_session(ev, id).len() == 2) && !of_session(ev, &a_id).is_empty()
        });
        for id in &ids {
            let kinds: Vec<&str> = of_session(&ev, id)
                .iter()
                .map(|e| e["type"].as_str().unwrap())
                .collect();
            assert_eq!(kinds, ["connect", "disconnect"], "in order, once");
        }
        let a_events = of_session(&ev, &a.id);
        assert_eq!(
            a_events[0]["type"], "connect",
            "A's connect came through too"
        );
        assert!(
            a_events.iter().all(|e| e["type"] != "send"),
            "failed sends are not retried"
        );
        // The backend has the events before the gateway has read its
        // answer (and logged the hook up): wait for the line.
        let up = wait_until(Duration::from_secs(5), || {
            gw.logs().iter().any(|l| l.contains("event=events_hook_up"))
        });
        assert!(up, "the hook coming back is logged");
        a.send_text("send back");
        a.expect_line("reply echo:back", "served again");
    });
}

#[test]
fn a_stalled_backend_with_a_small_queue_answers_busy_and_serves_the_rest() {
    let backend = Backend::start(Mode::Stall);
    let a = args(&backend, &["--events-queue", "8"]);
    for_each_driver(&strs(&a), |gw| {
        let mut c = Client::new(gw, "C");
        let t = gw::topic("still");
        assert_eq!(c.sub(&t), 0);
        let mut burst = Vec::new();
        for i in 0..20 {
            burst.extend(common::frame(true, 1, format!("send {i}").as_bytes()));
        }
        c.send_raw(&burst, "20 sends at once");
        // The connection stays, the core serves everyone else.
        gw.assert_healthy();
        assert_eq!(gw::api_publish(gw, &t, b"still here", false), 1);
        let mut busy = 0;
        loop {
            match c.next("err 503 busy, then the publish") {
                Event::Text(l) if l == "err 503 busy" => busy += 1,
                Event::Text(l) if l == format!("msg {t} 1 still here") => break,
                other => panic!("expected `err 503 busy` or the publish, got {other:?}"),
            }
        }
        // 8 queued (the connect among them), one request out with a few.
        assert!((10..=19).contains(&busy), "{busy} of 20 sends refused");
        let mut d = Client::new(gw, "D");
        assert_eq!(d.sub(&t), 1);
        assert!(metric(gw, "wsgate_events_total{type=\"send\",result=\"busy\"}") >= 10.0);
        assert!(metric(gw, "wsgate_events_queue_depth") <= 8.0);
    });
}

#[test]
fn a_burst_of_sends_goes_in_few_requests_and_every_reply_comes_back_in_order() {
    let backend = Backend::start(Mode::Echo);
    for_each_driver(&strs(&args(&backend, &[])), |gw| {
        let before = backend.requests();
        let mut c = Client::new(gw, "C");
        let mut burst = Vec::new();
        for i in 0..1000 {
            burst.extend(common::frame(true, 1, format!("send {i}").as_bytes()));
        }
        c.send_raw(&burst, "1,000 sends");
        for i in 0..1000 {
            c.expect_line(&format!("reply echo:{i}"), "replies in order");
        }
        let requests = backend.requests() - before;
        eprintln!("1,000 sends (and a connect) in {requests} requests");
        assert!(requests <= 100, "{requests} requests for 1,000 sends");
        c.expect_quiet(QUIET, "one reply each");
    });
}

#[test]
fn a_drain_sends_its_disconnects_before_the_node_exits() {
    // A slow backend: the drain's disconnects are still on their way when
    // the last connection is closed.
    let backend = Backend::start(Mode::Slow(300));
    let a = args(&backend, &["--drain-timeout", "2s"]);
    common::for_each_driver_exiting(&strs(&a), |gw| {
        let clients: Vec<Client> = (0..4).map(|i| Client::new(gw, &format!("C{i}"))).collect();
        let ids: Vec<String> = clients.iter().map(|c| c.id.clone()).collect();
        backend.wait_events("the connects", |ev| {
            ids.iter().all(|id| !of_session(ev, id).is_empty())
        });
        gw.send_signal("TERM");
        // Each client answers its 1001, as a browser does.
        for mut c in clients {
            loop {
                match c.next_within(Duration::from_secs(5), "the drain's close") {
                    Event::Close(code, _) => {
                        assert_eq!(code, Some(1001));
                        c.send_close(1001, "");
                        break;
                    }
                    _ => continue,
                }
            }
            let _ = c.drain_to_end(Duration::from_secs(3));
        }
        let (status, _) = gw
            .wait_exit(Duration::from_secs(10))
            .expect("the node exits");
        assert!(status.success(), "{status}");
        // Every disconnect reached the backend before the node exited.
        let ev = backend.events();
        for id in &ids {
            let mine = of_session(&ev, id);
            let last = mine.last().expect("events of the session");
            assert_eq!(last["type"], "disconnect", "{mine:#?}");
            assert_eq!(last["code"], 1001);
            assert_eq!(
                last["ended"], false,
                "a drained session can resume elsewhere"
            );
        }
    });
}
