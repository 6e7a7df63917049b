//! A stand-in for the `--auth-hook` backend: an HTTP/1.1 server on
//! loopback (std only, a thread per connection, keep-alive), answering each
//! request as the test's function says and recording every request (so a
//! test can assert the JSON body) and how many TCP connections it accepted.
//! Stopped on drop; a hanging answer ends then too.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request the hook received.
#[derive(Clone, Debug)]
pub struct HookRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which accepted TCP connection it came on (0 = the first).
    pub conn: usize,
    pub at: Instant,
}

impl HookRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the hook request body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// How the hook answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A status and a body (sent as `application/json`).
    Status(u16, String),
    /// `200` with this JSON.
    Grant(Value),
    /// Never answer (the connection is held until the gateway closes it or
    /// the hook is dropped).
    Hang,
    /// Close the connection without answering.
    Close,
}

type Decide = dyn Fn(&HookRequest) -> Reply + Send + Sync;

/// The hook server.
pub struct Hook {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<HookRequest>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Hook {
    /// Starts on `127.0.0.1:<free port>`, answering with `decide`.
    pub fn start(decide: impl Fn(&HookRequest) -> Reply + Send + Sync + 'static) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the hook");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let decide: Arc<Decide> = Arc::new(decide);
        let accept = {
            let (requests, connections, stop) =
                (requests.clone(), connections.clone(), stop.clone());
            std::thread::Builder::new()
                .name("auth-hook".into())
                .spawn(move || {
                    for s in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(s) = s else { continue };
                        let conn = connections.fetch_add(1, Ordering::SeqCst);
                        let (requests, stop, decide) =
                            (requests.clone(), stop.clone(), decide.clone());
                        let _ = std::thread::Builder::new()
                            .name(format!("auth-hook-{conn}"))
                            .spawn(move || serve(s, conn, &requests, &stop, &*decide));
                    }
                })
                .expect("spawn the hook")
        };
        Hook {
            addr,
            requests,
            connections,
            stop,
            accept: Some(accept),
        }
    }

    /// A hook answering every request with the same reply.
    pub fn always(reply: Reply) -> Hook {
        Hook::start(move |_| reply.clone())
    }

    /// `http://127.0.0.1:<port>/auth`.
    pub fn url(&self) -> String {
        format!("http://{}/auth", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<HookRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// A URL on loopback where nothing listens (a hook that is down).
pub fn down_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/auth")
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Other",
    }
}

/// Serves one connection: requests in order, keep-alive unless the
/// request says `Connection: close`.
fn serve(
    mut s: TcpStream,
    conn: usize,
    requests: &Mutex<Vec<HookRequest>>,
    stop: &AtomicBool,
    decide: &Decide,
) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = s.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    // Bounded: nothing in the tests waits longer.
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        let Some(req) = read_request(&mut s, &mut buf, conn, stop, give_up) else {
            return;
        };
        let close = req
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let reply = decide(&req);
        requests.lock().unwrap().push(req);
        let (status, body) = match reply {
            Reply::Status(st, body) => (st, body),
            Reply::Grant(v) => (200, v.to_string()),
            Reply::Close => return,
            Reply::Hang => {
                // Hold the connection until the peer closes or the test ends.
                let mut tmp = [0u8; 1024];
                while !stop.load(Ordering::SeqCst) && Instant::now() < give_up {
                    match s.read(&mut tmp) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return,
                    }
                }
                return;
            }
        };
        let resp = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
            reason(status),
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if s.write_all(resp.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// Reads one request (head, then a `Content-Length` or chunked body);
/// `None` when the peer closed, the hook stopped, or the request is
/// malformed.
fn read_request(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    conn: usize,
    stop: &AtomicBool,
    give_up: Instant,
) -> Option<HookRequest> {
    let mut more = |buf: &mut Vec<u8>| -> Option<()> {
        let mut tmp = [0u8; 16384];
        loop {
            if stop.load(Ordering::SeqCst) || Instant::now() >= give_up {
                return None;
            }
            match s.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => {
                    buf.extend_from_slice(&tmp[..n]);
                    return Some(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
    };
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        more(buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let mut lines = head.trim_end().split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body = if get("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                more(buf)?;
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                more(buf)?;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break body;
            }
        }
    } else {
        let len: usize = get("Content-Length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            more(buf)?;
        }
        buf.drain(..len).collect()
    };
    Some(HookRequest {
        method,
        target,
        headers,
        body,
        conn,
        at: Instant::now(),
    })
}
