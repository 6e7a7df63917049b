//! Shared helpers for the black-box integration tests.
//!
//! * `Gateway`: spawns the `wsgate` binary on ephemeral ports, drains its
//!   stderr in a background thread and kills it on drop.
//! * `for_each_driver`: runs a test body against a gateway started with the
//!   io_uring driver and another started with the legacy (epoll) driver.
//! * `Req` / `Conn` / `Response`: raw HTTP/1.1 over `TcpStream`, every read
//!   bounded by a timeout.
//! * A client-side WebSocket frame encoder (masked) and a decoder for
//!   server frames.
//!
//! Only std is used.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Upper bound for every socket read/write in the tests.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for the ` event=listening ` log line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// RFC 6455 section 1.3 example.
pub const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
pub const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Host header used by default in requests built with `Req`.
pub const DEFAULT_HOST: &str = "gw.example";

/// Cookie attributes of the default configuration (after `<name>=<id>`).
pub const DEFAULT_COOKIE_ATTRS: &str = "; Path=/; Max-Age=86400; SameSite=None; Secure; HttpOnly";
pub const DEFAULT_COOKIE_NAME: &str = "WS_SESSION_ID";

// ---------------------------------------------------------------------------
// Gateway process
// ---------------------------------------------------------------------------

/// The environment a test's gateway does not inherit: every `WSGATE_*`
/// setting (each flag reads one), except `WSGATE_IO`, with which the whole
/// suite runs on one data path (`WSGATE_IO=epoll cargo test`, README).
pub fn strip_from_gateway(var: &str) -> bool {
    var.starts_with("WSGATE_") && var != "WSGATE_IO"
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// Default environment: monoio picks io_uring.
    IoUring,
    /// `MONOIO_FORCE_LEGACY_DRIVER=1`: epoll.
    Legacy,
}

impl Driver {
    pub const ALL: [Driver; 2] = [Driver::IoUring, Driver::Legacy];

    pub fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Legacy => "legacy(epoll)",
        }
    }
}

pub struct Gateway {
    child: Mutex<Child>,
    pub pid: u32,
    /// Traffic listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    pub driver: Driver,
    pub args: Vec<String>,
    logs: Arc<Mutex<Vec<String>>>,
    dumped: Mutex<bool>,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|tok| {
            tok.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
        })
        .map(|v| v.trim_matches('"'))
}

impl Gateway {
    /// Start `wsgate --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --cores 2 <extra>`.
    pub fn start(driver: Driver, extra_args: &[&str]) -> Gateway {
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--cores",
            "2",
        ];
        args.extend_from_slice(extra_args);
        Gateway::start_exact(driver, &args, &[])
    }

    /// Make sure the requested io driver is really in use, so that "both
    /// drivers" is not silently one driver twice: the process must hold an
    /// io_uring instance exactly when the io_uring driver was asked for.
    fn assert_driver(&self) {
        let links: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .expect("read /proc/<pid>/fd")
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|p| p.display().to_string())
            .collect();
        let uring = links.iter().any(|l| l.contains("io_uring"));
        let epoll = links.iter().any(|l| l.contains("eventpoll"));
        let ok = match self.driver {
            Driver::IoUring => uring,
            Driver::Legacy => epoll && !uring,
        };
        if !ok {
            self.dump_logs();
            panic!(
                "[{}] wsgate is not running the requested io driver (io_uring fds: {uring}, \
                 epoll fds: {epoll}); is io_uring available here?",
                self.driver.name()
            );
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn dump_logs(&self) {
        let mut dumped = self.dumped.lock().unwrap();
        if *dumped {
            return;
        }
        *dumped = true;
        eprintln!(
            "----- wsgate stderr [{} driver, pid {}, args {:?}] -----",
            self.driver.name(),
            self.pid,
            self.args
        );
        for l in self.logs.lock().unwrap().iter() {
            eprintln!("{l}");
        }
        eprintln!("----- end of wsgate stderr -----");
    }

    /// Panics if the process has exited.
    pub fn assert_running(&self) {
        let mut c = self.child.lock().unwrap();
        match c.try_wait() {
            Ok(None) => {}
            Ok(Some(st)) => panic!("[{}] wsgate exited unexpectedly: {st}", self.driver.name()),
            Err(e) => panic!("try_wait failed: {e}"),
        }
    }

    /// The server is still alive and `GET /ws-health` answers 200 `ok`.
    pub fn assert_healthy(&self) {
        self.assert_running();
        let resp = self.roundtrip(&Req::get("/ws-health").bytes());
        assert_eq!(
            resp.status_line(),
            "HTTP/1.1 200 OK",
            "[{}] health check failed after test:\n{}",
            self.driver.name(),
            resp.head
        );
        // Liveness only; the exact body is checked in health_and_session_route.rs.
        assert_eq!(resp.body_str().trim_end(), "ok", "health body");
    }

    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// Connect, send `bytes`, read the whole response. For non-101 responses the
    /// body is read according to Content-Length and then EOF is required.
    pub fn roundtrip(&self, bytes: &[u8]) -> Response {
        let mut c = self.connect();
        c.send(bytes);
        c.read_response(false)
    }

    /// Like `roundtrip` but tolerates ECONNRESET after the response (used when the
    /// server rightfully does not read everything the client sent).
    pub fn roundtrip_allow_reset(&self, bytes: &[u8]) -> Response {
        let mut c = self.connect();
        c.send_allow_reset(bytes);
        c.read_response(true)
    }

    /// Perform an upgrade with `req`, require the exact default 101 head, return
    /// the session id and the open connection.
    pub fn upgrade_req(&self, req: &Req) -> (String, Conn) {
        let mut c = self.connect();
        c.send(&req.bytes());
        let resp = c.read_head();
        let key = req
            .get_header("Sec-WebSocket-Key")
            .unwrap_or(RFC_KEY)
            .to_string();
        let id = assert_101(&resp, &key, DEFAULT_COOKIE_NAME, DEFAULT_COOKIE_ATTRS);
        (id, c)
    }

    /// Upgrade on `path` with the default request.
    pub fn upgrade(&self, path: &str) -> Conn {
        self.upgrade_req(&Req::upgrade(path)).1
    }

    /// Number of open descriptors of the server process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .expect("read /proc/<pid>/fd")
            .count()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic>".to_string()
    }
}

/// Run `f` against a fresh gateway per driver (io_uring first, then epoll), both
/// started with `args`. Both drivers are always run; at the end the test fails
/// listing every driver that failed. After `f` the gateway must still be alive
/// and serving `/ws-health`.
pub fn for_each_driver<F: Fn(&Gateway)>(args: &[&str], f: F) {
    let mut failures = Vec::new();
    for driver in Driver::ALL {
        eprintln!(
            "=== running with the {} driver, args {:?} ===",
            driver.name(),
            args
        );
        let gw = match catch_unwind(AssertUnwindSafe(|| Gateway::start(driver, args))) {
            Ok(gw) => gw,
            Err(e) => {
                failures.push(format!(
                    "[{}] startup: {}",
                    driver.name(),
                    panic_message(&*e)
                ));
                continue;
            }
        };
        let r = catch_unwind(AssertUnwindSafe(|| {
            f(&gw);
            gw.assert_healthy();
        }));
        if let Err(e) = r {
            gw.dump_logs();
            failures.push(format!("[{}] {}", driver.name(), panic_message(&*e)));
        }
    }
    if !failures.is_empty() {
        panic!(
            "failed on {} driver(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------
// HTTP requests
// ---------------------------------------------------------------------------

/// A request head builder. Headers keep insertion order; values are written
/// verbatim (tests deliberately build malformed heads with it).
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl Req {
    /// `GET <path> HTTP/1.1` with only `Host`.
    pub fn get(path: &str) -> Req {
        Req {
            method: "GET".into(),
            path: path.into(),
            version: "HTTP/1.1".into(),
            headers: vec![("Host".into(), DEFAULT_HOST.into())],
        }
    }

    /// A valid WebSocket upgrade request with the RFC sample key.
    pub fn upgrade(path: &str) -> Req {
        Req::get(path)
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Key", RFC_KEY)
            .header("Sec-WebSocket-Version", "13")
    }

    pub fn method(mut self, m: &str) -> Req {
        self.method = m.into();
        self
    }

    pub fn version(mut self, v: &str) -> Req {
        self.version = v.into();
        self
    }

    /// Append a header (duplicates allowed).
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replace every header named `name` (case-insensitive) by one with `value`,
    /// keeping the position of the first; append if absent.
    pub fn set(mut self, name: &str, value: &str) -> Req {
        if let Some(i) = self
            .headers
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            self.headers[i].1 = value.into();
            let mut seen = false;
            self.headers.retain(|(n, _)| {
                if n.eq_ignore_ascii_case(name) {
                    if seen {
                        return false;
                    }
                    seen = true;
                }
                true
            });
            self
        } else {
            self.header(name, value)
        }
    }

    /// Remove every header named `name`.
    pub fn without(mut self, name: &str) -> Req {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} {}\r\n", self.method, self.path, self.version);
        for (n, v) in &self.headers {
            s.push_str(n);
            s.push_str(": ");
            s.push_str(v);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

// ---------------------------------------------------------------------------
// HTTP responses
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Response {
    /// Raw head including the final CRLF CRLF.
    pub head: String,
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header fields in order, value with surrounding whitespace trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn parse_head(head: &[u8]) -> Response {
        let text = String::from_utf8(head.to_vec())
            .unwrap_or_else(|_| panic!("response head is not UTF-8: {:?}", head));
        assert!(
            text.ends_with("\r\n\r\n"),
            "head not CRLF-terminated: {text:?}"
        );
        let inner = &text[..text.len() - 4];
        for (i, b) in inner.bytes().enumerate() {
            if b == b'\n' {
                assert!(
                    i > 0 && inner.as_bytes()[i - 1] == b'\r',
                    "bare LF in response head: {text:?}"
                );
            }
            if b == b'\r' {
                assert!(
                    inner.as_bytes().get(i + 1) == Some(&b'\n'),
                    "bare CR in response head: {text:?}"
                );
            }
        }
        let mut lines = inner.split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        for line in lines {
            let (n, v) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("malformed response header line {line:?} in {text:?}"));
            assert!(
                !n.is_empty() && !n.ends_with(' '),
                "malformed header name {line:?}"
            );
            headers.push((n.to_string(), v.trim().to_string()));
        }
        Response {
            head: text,
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
        }
    }

    pub fn status_line(&self) -> String {
        format!("{} {} {}", self.version, self.status, self.reason)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => panic!("no reason phrase known for {code}"),
    }
}

/// Assert the shape of a non-101 error response: exact status line,
/// `Content-Length` equal to the body length, `Connection: close`, a short
/// non-empty text body. (`read_response` already verified EOF after the body.)
pub fn assert_rejection(resp: &Response, code: u16, what: &str) {
    let expected = format!("HTTP/1.1 {} {}", code, reason_phrase(code));
    assert_eq!(
        resp.status_line(),
        expected,
        "{what}: wrong status line; full response head:\n{}body: {:?}",
        resp.head,
        resp.body_str()
    );
    assert_common_close_headers(resp, what);
    assert!(
        !resp.body.is_empty(),
        "{what}: expected a short text body, got none"
    );
    assert!(
        resp.body.len() < 1024,
        "{what}: body not short ({} bytes)",
        resp.body.len()
    );
    assert!(
        std::str::from_utf8(&resp.body).is_ok(),
        "{what}: body is not text: {:?}",
        resp.body
    );
}

/// `Content-Length` present and equal to the body length, `Connection: close`.
pub fn assert_common_close_headers(resp: &Response, what: &str) {
    let cl = resp
        .header("Content-Length")
        .unwrap_or_else(|| panic!("{what}: no Content-Length in:\n{}", resp.head));
    assert_eq!(
        cl.parse::<usize>().ok(),
        Some(resp.body.len()),
        "{what}: Content-Length {cl:?} vs body {:?}",
        resp.body_str()
    );
    let conn = resp
        .header("Connection")
        .unwrap_or_else(|| panic!("{what}: no Connection header in:\n{}", resp.head));
    assert!(
        conn.eq_ignore_ascii_case("close"),
        "{what}: Connection: {conn:?}, expected close"
    );
}

// ---------------------------------------------------------------------------
// Connection with buffered reads
// ---------------------------------------------------------------------------

pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        assert!(
            addr.ip().is_loopback(),
            "tests only talk to 127.0.0.1, got {addr}"
        );
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write {} bytes: {e}", bytes.len()));
    }

    /// Write, ignoring a reset/broken pipe (the server may reject and close
    /// before reading everything).
    pub fn send_allow_reset(&mut self, bytes: &[u8]) {
        match self.stream.write_all(bytes) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) => {}
            Err(e) => panic!("write {} bytes: {e}", bytes.len()),
        }
    }

    /// Bytes already received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    fn fill(&mut self, what: &str) {
        let mut tmp = [0u8; 16384];
        match self.stream.read(&mut tmp) {
            Ok(0) => panic!(
                "EOF while waiting for {what}; {} unconsumed bytes: {:?}",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf)
            ),
            Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            Err(e) if is_timeout(&e) => panic!(
                "timed out after {:?} waiting for {what}; {} unconsumed bytes: {:?}",
                IO_TIMEOUT,
                self.buf.len(),
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => panic!(
                "read error {e} ({:?}) while waiting for {what}; unconsumed: {:?}",
                e.kind(),
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    pub fn read_exact_bytes(&mut self, n: usize, what: &str) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill(what);
        }
        self.buf.drain(..n).collect()
    }

    /// Read up to and including the first CRLF CRLF.
    pub fn read_head(&mut self) -> Response {
        loop {
            if let Some(pos) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..pos + 4).collect();
                return Response::parse_head(&head);
            }
            assert!(
                self.buf.len() < 64 * 1024,
                "response head larger than 64 KiB"
            );
            self.fill("an HTTP response head");
        }
    }

    /// Read a response head; for non-101 also read the body
    /// (`Content-Length`, absent means empty) and require the server to close.
    pub fn read_response(&mut self, allow_reset: bool) -> Response {
        let mut resp = self.read_head();
        if resp.status != 101 {
            let len = resp
                .header("Content-Length")
                .map(|v| {
                    v.parse::<usize>()
                        .unwrap_or_else(|_| panic!("bad Content-Length {v:?}"))
                })
                .unwrap_or(0);
            resp.body = self.read_exact_bytes(len, "the response body");
            self.expect_closed(allow_reset, &format!("after `{}`", resp.status_line()));
        }
        resp
    }

    /// Require that nothing more arrives and the peer closed: read returns 0
    /// (or ECONNRESET when `allow_reset`).
    pub fn expect_closed(&mut self, allow_reset: bool, ctx: &str) {
        assert!(
            self.buf.is_empty(),
            "{ctx}: expected the server to close, but extra bytes arrived: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let mut tmp = [0u8; 4096];
        match self.stream.read(&mut tmp) {
            Ok(0) => {}
            Ok(n) => panic!(
                "{ctx}: expected EOF, got {n} more bytes: {:?}",
                String::from_utf8_lossy(&tmp[..n])
            ),
            Err(e) if allow_reset && e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) if is_timeout(&e) => {
                panic!("{ctx}: the server did not close the connection within {IO_TIMEOUT:?}")
            }
            Err(e) => panic!("{ctx}: expected EOF, got error {e} ({:?})", e.kind()),
        }
    }

    /// Nothing arrives within `wait` and the connection is not closed.
    pub fn expect_silent_open(&mut self, wait: Duration, ctx: &str) {
        assert!(
            self.buf.is_empty(),
            "{ctx}: unexpected buffered bytes {:?}",
            self.buf
        );
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut tmp = [0u8; 1024];
        let r = self.stream.read(&mut tmp);
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        match r {
            Err(e) if is_timeout(&e) => {}
            Ok(0) => panic!("{ctx}: connection was closed by the server"),
            Ok(n) => panic!(
                "{ctx}: unexpected data: {:?}",
                String::from_utf8_lossy(&tmp[..n])
            ),
            Err(e) => panic!("{ctx}: unexpected error {e}"),
        }
    }

    // --- WebSocket ---------------------------------------------------------

    /// Decode one server frame.
    pub fn read_frame(&mut self) -> Frame {
        let h = self.read_exact_bytes(2, "a WebSocket frame header");
        let fin = h[0] & 0x80 != 0;
        let rsv = (h[0] >> 4) & 0x07;
        let opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let len7 = (h[1] & 0x7f) as u64;
        let (len, ext_len_bytes) = match len7 {
            126 => {
                let b = self.read_exact_bytes(2, "a 16-bit frame length");
                (u16::from_be_bytes([b[0], b[1]]) as u64, 2)
            }
            127 => {
                let b = self.read_exact_bytes(8, "a 64-bit frame length");
                (u64::from_be_bytes(b.try_into().unwrap()), 8)
            }
            n => (n, 0),
        };
        assert!(
            len <= 64 * 1024 * 1024,
            "implausible frame length {len} (header {h:?})"
        );
        let mask = if masked {
            Some(<[u8; 4]>::try_from(self.read_exact_bytes(4, "a mask key")).unwrap())
        } else {
            None
        };
        let mut payload = self.read_exact_bytes(len as usize, "a frame payload");
        if let Some(m) = mask {
            apply_mask(&mut payload, m);
        }
        Frame {
            fin,
            rsv,
            opcode,
            masked,
            payload,
            ext_len_bytes,
        }
    }

    /// Next frame must be a well-formed server close frame carrying `code`.
    /// Returns the frame.
    pub fn expect_close_frame(&mut self, code: u16, ctx: &str) -> Frame {
        let f = self.read_frame();
        assert_eq!(
            (f.opcode, f.fin, f.rsv, f.masked),
            (OP_CLOSE, true, 0, false),
            "{ctx}: expected an unmasked FIN close frame, got {f:?}"
        );
        assert!(
            f.payload.len() >= 2,
            "{ctx}: close frame without status code: {f:?}"
        );
        assert!(f.payload.len() <= 125, "{ctx}: close frame too long");
        assert_eq!(
            f.close_code(),
            Some(code),
            "{ctx}: wrong close code, frame {f:?}"
        );
        assert!(
            std::str::from_utf8(&f.payload[2..]).is_ok(),
            "{ctx}: close reason not UTF-8: {f:?}"
        );
        f
    }

    /// Server fails the connection: close frame with `code`, then TCP close.
    pub fn expect_fail(&mut self, code: u16, ctx: &str) {
        self.expect_close_frame(code, ctx);
        self.expect_closed(true, &format!("{ctx}: after close {code}"));
    }

    /// Send a masked frame.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let f = frame(fin, opcode, payload);
        self.send(&f);
    }

    /// Next frame must be an unfragmented, unmasked data/control frame with
    /// exactly this opcode and payload.
    pub fn expect_frame(&mut self, opcode: u8, payload: &[u8], ctx: &str) -> Frame {
        let f = self.read_frame();
        assert!(!f.masked, "{ctx}: server frame is masked: {f:?}");
        assert_eq!(f.rsv, 0, "{ctx}: server frame has RSV bits: {f:?}");
        assert!(f.fin, "{ctx}: server frame is fragmented (FIN=0): {f:?}");
        assert_eq!(f.opcode, opcode, "{ctx}: wrong opcode in {f:?}");
        assert_eq!(
            f.payload.len(),
            payload.len(),
            "{ctx}: wrong payload length"
        );
        assert!(f.payload == payload, "{ctx}: payload bytes differ");
        f
    }
}

// ---------------------------------------------------------------------------
// WebSocket frames
// ---------------------------------------------------------------------------

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
    /// 0, 2 or 8: size of the extended payload length field used.
    pub ext_len_bytes: usize,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: &[u8] = if self.payload.len() > 64 {
            &self.payload[..64]
        } else {
            &self.payload
        };
        write!(
            f,
            "Frame {{ fin: {}, rsv: {}, opcode: {:#x}, masked: {}, len: {} (ext {}B), payload[..64]: {:?} }}",
            self.fin,
            self.rsv,
            self.opcode,
            self.masked,
            self.payload.len(),
            self.ext_len_bytes,
            String::from_utf8_lossy(shown)
        )
    }
}

impl Frame {
    pub fn close_code(&self) -> Option<u16> {
        if self.opcode == OP_CLOSE && self.payload.len() >= 2 {
            Some(u16::from_be_bytes([self.payload[0], self.payload[1]]))
        } else {
            None
        }
    }
}

pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

static RNG: AtomicU64 = AtomicU64::new(0);

/// Small xorshift PRNG (not cryptographic), seeded from the clock.
pub fn rand_u64() -> u64 {
    let mut x = RNG.load(Ordering::Relaxed);
    if x == 0 {
        x = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    RNG.store(x, Ordering::Relaxed);
    x
}

pub fn rand_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand_u64() as u8).collect()
}

/// Non-zero random mask key (so that masking actually changes the bytes).
pub fn rand_mask() -> [u8; 4] {
    loop {
        let m = (rand_u64() as u32).to_be_bytes();
        if m.iter().all(|&b| b != 0) {
            return m;
        }
    }
}

/// Encode a frame. `rsv` is the 3-bit RSV1..3 field; `mask` None = unmasked.
pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(((fin as u8) << 7) | ((rsv & 0x7) << 4) | (opcode & 0x0f));
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len <= 125 {
        out.push(mbit | len as u8);
    } else if len <= 0xffff {
        out.push(mbit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mbit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], m);
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked client frame with a random key.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, 0, opcode, payload, Some(rand_mask()))
}

pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

// ---------------------------------------------------------------------------
// Handshake checks
// ---------------------------------------------------------------------------

/// Lowercase hyphenated UUID v4 (version nibble 4, variant 8/9/a/b).
pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 36 {
        return false;
    }
    for (i, &c) in b.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        };
        if !ok {
            return false;
        }
    }
    b[14] == b'4' && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// A fresh random v4 UUID string (for use as a client cookie).
pub fn make_uuid_v4() -> String {
    let mut b = rand_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parse the cookie id out of a `Set-Cookie` value `<name>=<id><attrs>`.
pub fn cookie_id<'a>(set_cookie: &'a str, name: &str) -> &'a str {
    let rest = set_cookie
        .strip_prefix(name)
        .and_then(|r| r.strip_prefix('='))
        .unwrap_or_else(|| panic!("Set-Cookie {set_cookie:?} does not start with {name}="));
    rest.split(';').next().unwrap()
}

/// Assert the 101 head is exactly:
/// `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n
///  Sec-WebSocket-Accept: <accept>\r\nSet-Cookie: <name>=<uuid v4><attrs>\r\n\r\n`.
/// Returns the session id.
pub fn assert_101(resp: &Response, key: &str, cookie_name: &str, cookie_attrs: &str) -> String {
    assert_eq!(
        resp.status_line(),
        "HTTP/1.1 101 Switching Protocols",
        "full head:\n{}",
        resp.head
    );
    let set_cookie = resp
        .header("Set-Cookie")
        .unwrap_or_else(|| panic!("101 without Set-Cookie:\n{}", resp.head));
    let id = cookie_id(set_cookie, cookie_name).to_string();
    assert!(
        is_uuid_v4(&id),
        "session id {id:?} is not a lowercase v4 UUID; head:\n{}",
        resp.head
    );
    let expected = format!(
        "HTTP/1.1 101 Switching Protocols\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\
         Set-Cookie: {}={}{}\r\n\r\n",
        accept_for(key),
        cookie_name,
        id,
        cookie_attrs
    );
    assert_eq!(resp.head, expected, "101 head differs from the contract");
    id
}

// ---------------------------------------------------------------------------
// SHA-1 and base64 (for Sec-WebSocket-Accept of arbitrary keys)
// ---------------------------------------------------------------------------

pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(chunk[4 * i..4 * i + 4].try_into().unwrap());
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let (mut a, mut b, mut c, mut d, mut e) = (h[0], h[1], h[2], h[3], h[4]);
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        h[0] = h[0].wrapping_add(a);
        h[1] = h[1].wrapping_add(b);
        h[2] = h[2].wrapping_add(c);
        h[3] = h[3].wrapping_add(d);
        h[4] = h[4].wrapping_add(e);
    }
    let mut out = [0u8; 20];
    for (i, v) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

/// `Sec-WebSocket-Accept` for `key`.
pub fn accept_for(key: &str) -> String {
    base64(&sha1(format!("{key}{WS_GUID}").as_bytes()))
}

/// A random valid `Sec-WebSocket-Key` (base64 of 16 random bytes).
pub fn rand_key() -> String {
    base64(&rand_bytes(16))
}

/// Poll `f` until it returns true or `timeout` elapses.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// Lifecycle helpers: signals, exit status, memory, admin scrape, raw spawns
// ---------------------------------------------------------------------------

impl Gateway {
    /// Start `wsgate` with exactly `args` (nothing prepended) and extra
    /// environment variables `envs` (ambient `WSGATE_*` variables are still
    /// removed first). Same log parsing and driver check as [`Gateway::start`].
    pub fn start_exact(driver: Driver, args: &[&str], envs: &[(&str, &str)]) -> Gateway {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsgate"));
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars_os() {
            if strip_from_gateway(&k.to_string_lossy()) {
                cmd.env_remove(&k);
            }
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        match driver {
            Driver::IoUring => {
                cmd.env_remove("MONOIO_FORCE_LEGACY_DRIVER");
            }
            Driver::Legacy => {
                cmd.env("MONOIO_FORCE_LEGACY_DRIVER", "1");
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn wsgate {args:?}: {e}"));
        let pid = child.id();
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<Option<(SocketAddr, SocketAddr)>>();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut raw = Vec::new();
                let mut announced = false;
                loop {
                    raw.clear();
                    match reader.read_until(b'\n', &mut raw) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let line = String::from_utf8_lossy(&raw).trim_end().to_string();
                    if !announced && line.split_whitespace().any(|t| t == "event=listening") {
                        let listen = field(&line, "listen").and_then(|v| v.parse().ok());
                        let admin = field(&line, "admin").and_then(|v| v.parse().ok());
                        if let (Some(l), Some(a)) = (listen, admin) {
                            announced = true;
                            let _ = tx.send(Some((l, a)));
                        }
                    }
                    logs.lock().unwrap().push(line);
                }
                let _ = tx.send(None);
            });
        }
        let got = rx.recv_timeout(STARTUP_TIMEOUT);
        let (addr, admin) = match got {
            Ok(Some(pair)) => pair,
            other => {
                let _ = child.kill();
                let status = child.wait();
                std::thread::sleep(Duration::from_millis(50));
                let logs = logs.lock().unwrap().join("\n");
                panic!(
                    "[{}] wsgate {:?} env {:?} did not report ` event=listening listen=.. \
                     admin=..` within {:?} ({}), exit status {:?}; stderr:\n{}",
                    driver.name(),
                    args,
                    envs,
                    STARTUP_TIMEOUT,
                    match other {
                        Ok(None) => "stderr closed first",
                        _ => "timed out",
                    },
                    status,
                    logs
                );
            }
        };
        let gw = Gateway {
            child: Mutex::new(child),
            pid,
            addr,
            admin,
            driver,
            args,
            logs,
            dumped: Mutex::new(false),
        };
        gw.assert_driver();
        gw
    }

    /// Send a signal (`"TERM"`, `"INT"`, ...) to the gateway with kill(1).
    /// Refuses to signal a process that has already been reaped.
    pub fn send_signal(&self, sig: &str) {
        let mut c = self.child.lock().unwrap();
        if let Ok(Some(st)) = c.try_wait() {
            panic!(
                "[{}] cannot send SIG{sig}: wsgate already exited ({st})",
                self.driver.name()
            );
        }
        let pid = self.pid.to_string();
        let st = Command::new("kill")
            .args([&format!("-{sig}"), pid.as_str()])
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("running kill -{sig} {pid}: {e}"));
        assert!(st.success(), "kill -{sig} {pid} failed: {st}");
    }

    /// The exit status if the process has exited (reaps it), else None.
    pub fn try_exit_status(&self) -> Option<std::process::ExitStatus> {
        self.child
            .lock()
            .unwrap()
            .try_wait()
            .expect("try_wait on wsgate")
    }

    /// Poll (every 10 ms) until the process exits or `timeout` elapses.
    /// Returns the status and the instant the exit was observed.
    pub fn wait_exit(&self, timeout: Duration) -> Option<(std::process::ExitStatus, Instant)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_exit_status() {
                return Some((st, Instant::now()));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident set size of the gateway in KiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{}/status", self.pid))
    }

    /// `GET <path>` on the admin listener; the whole response (body by
    /// `Content-Length`, then EOF).
    pub fn admin_get(&self, path: &str) -> Response {
        let mut c = Conn::connect(self.admin);
        c.send(&Req::get(path).bytes());
        c.read_response(false)
    }

    /// Scrape and parse `GET /metrics` on the admin listener (must be 200).
    pub fn scrape(&self) -> Scrape {
        let resp = self.admin_get("/metrics");
        assert_eq!(
            resp.status,
            200,
            "[{}] GET /metrics: {}",
            self.driver.name(),
            resp.head
        );
        Scrape::parse(&resp.body_str())
    }

    /// Scrape until `cond` holds (or `timeout` passes); returns the last scrape.
    /// Counters are bumped by the cores a moment after the bytes hit the wire,
    /// so a test polls for the expected value and then asserts it exactly.
    pub fn scrape_until(&self, timeout: Duration, mut cond: impl FnMut(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.scrape();
            if cond(&s) || Instant::now() >= deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// A parsed Prometheus text exposition: `series -> value`, where `series` is
/// the sample name with its label set exactly as written
/// (e.g. `wsgate_closes_total{code="1000"}`).
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<(String, f64)>,
}

impl Scrape {
    /// Parse the text format; panics on a malformed sample line.
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("malformed metrics line {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("non-numeric value in metrics line {line:?}"));
            samples.push((series.trim().to_string(), value));
        }
        Scrape {
            text: text.to_string(),
            samples,
        }
    }

    /// Value of an exact series, if present.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
    }

    /// Value of an exact series; missing counts as 0 (for deltas).
    pub fn val(&self, series: &str) -> f64 {
        self.get(series).unwrap_or(0.0)
    }

    /// Every sample of the family `name` (bare `name` or `name{...}`).
    pub fn family(&self, name: &str) -> Vec<(String, f64)> {
        self.samples
            .iter()
            .filter(|(s, _)| {
                s == name
                    || s.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('{'))
            })
            .cloned()
            .collect()
    }

    /// Sum over every sample of the family `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.family(name).iter().map(|(_, v)| v).sum()
    }
}

/// Run `wsgate <args>` with extra environment `envs` (ambient `WSGATE_*`
/// removed, default driver) until it exits or `timeout` passes (then it is
/// killed). Returns the exit status (None if it had to be killed) and stderr.
pub fn run_to_exit(
    args: &[&str],
    envs: &[(&str, &str)],
    timeout: Duration,
) -> (Option<std::process::ExitStatus>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsgate"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars_os() {
        if strip_from_gateway(&k.to_string_lossy()) {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("MONOIO_FORCE_LEGACY_DRIVER");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("failed to spawn wsgate {args:?}: {e}"));
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stderr.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(st) => break Some(st),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let text = reader.join().unwrap_or_default();
    (status, text)
}

/// Like [`for_each_driver`], but without the health check after `f`: for
/// tests that make the gateway exit (SIGTERM).
pub fn for_each_driver_exiting<F: Fn(&Gateway)>(args: &[&str], f: F) {
    let mut failures = Vec::new();
    for driver in Driver::ALL {
        eprintln!(
            "=== running with the {} driver, args {:?} ===",
            driver.name(),
            args
        );
        let gw = match catch_unwind(AssertUnwindSafe(|| Gateway::start(driver, args))) {
            Ok(gw) => gw,
            Err(e) => {
                failures.push(format!(
                    "[{}] startup: {}",
                    driver.name(),
                    panic_message(&*e)
                ));
                continue;
            }
        };
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(&gw))) {
            gw.dump_logs();
            failures.push(format!("[{}] {}", driver.name(), panic_message(&*e)));
        }
    }
    if !failures.is_empty() {
        panic!(
            "failed on {} driver(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

impl Conn {
    /// Non-panicking frame read: `Ok(Some(frame))`, `Ok(None)` on a clean EOF
    /// at a frame boundary, `Err` on a timeout (WouldBlock/TimedOut), a reset,
    /// or EOF inside a frame (UnexpectedEof).
    pub fn try_read_frame(&mut self) -> io::Result<Option<Frame>> {
        fn need(c: &mut Conn, n: usize) -> io::Result<bool> {
            let mut tmp = [0u8; 16384];
            while c.buf.len() < n {
                let got = c.stream.read(&mut tmp)?;
                if got == 0 {
                    return Ok(false);
                }
                c.buf.extend_from_slice(&tmp[..got]);
            }
            Ok(true)
        }
        let eof_inside = || io::Error::new(io::ErrorKind::UnexpectedEof, "EOF inside a frame");
        if !need(self, 2)? {
            return if self.buf.is_empty() {
                Ok(None)
            } else {
                Err(eof_inside())
            };
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        let masked = b1 & 0x80 != 0;
        let (len, ext) = match b1 & 0x7f {
            126 => {
                if !need(self, 4)? {
                    return Err(eof_inside());
                }
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 2)
            }
            127 => {
                if !need(self, 10)? {
                    return Err(eof_inside());
                }
                let l = u64::from_be_bytes(self.buf[2..10].try_into().unwrap());
                if l > 64 * 1024 * 1024 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("implausible frame length {l}"),
                    ));
                }
                (l as usize, 8)
            }
            n => (n as usize, 0),
        };
        let head = 2 + ext + if masked { 4 } else { 0 };
        if !need(self, head + len)? {
            return Err(eof_inside());
        }
        let mut payload = self.buf[head..head + len].to_vec();
        if masked {
            let m: [u8; 4] = self.buf[2 + ext..2 + ext + 4].try_into().unwrap();
            apply_mask(&mut payload, m);
        }
        self.buf.drain(..head + len);
        Ok(Some(Frame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x07,
            opcode: b0 & 0x0f,
            masked,
            payload,
            ext_len_bytes: ext,
        }))
    }
}
