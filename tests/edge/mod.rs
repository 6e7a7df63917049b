//! The load-balancer stand-in shared by the fleet tests
//! (`tests/haproxy_rolling_deploy.rs`, `tests/redis_*.rs`): HAProxy on
//! loopback, configured from `tests/edge/haproxy.cfg` as an AWS ALB target
//! group with `app_cookie` stickiness, driven through its runtime API; and
//! WebSocket clients that go through it (upgrade with or without the session
//! cookie, read the `hello`, leave with 1001).
//!
//! Also the small process/thread utilities those tests share: a temp dir
//! removed on drop, named threads joined with every failure listed, a free
//! loopback port, and installing a Debian package with apt-get when a tool is
//! missing.
//!
//! HAProxy is killed on drop (and, through `PR_SET_PDEATHSIG`, should the test
//! process die without running destructors). Only std and libc are used.

#![allow(dead_code)]

use crate::common::*;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const COOKIE: &str = "WS_SESSION_ID";
/// `--cookie-secure false`: plain HTTP on loopback.
pub const COOKIE_ATTRS: &str = "; Path=/; Max-Age=86400; HttpOnly";
pub const HEALTH_PATH: &str = "/ws-health";
/// The backend (target group) name in `haproxy.cfg`.
pub const BACKEND: &str = "wsgate";
const CONFIG_TEMPLATE: &str = include_str!("haproxy.cfg");

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        // Short: it holds a unix socket path (108 bytes at most).
        let p = std::env::temp_dir().join(format!("wsg-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic>".into()
    }
}

/// Joins every handle; panics listing every thread that panicked.
pub fn join_all<T>(what: &str, handles: Vec<JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(v) => out.push(v),
            Err(e) => failures.push(format!("  {what} #{i}: {}", panic_text(&*e))),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the {what} threads failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    out
}

pub fn spawn<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    std::thread::Builder::new()
        .name(name)
        .stack_size(256 * 1024)
        .spawn(f)
        .expect("spawn thread")
}

// ---------------------------------------------------------------------------
// HAProxy: install, configure, run, talk to its admin socket
// ---------------------------------------------------------------------------

/// `name` on `PATH` or in the sbin directories (where Debian puts daemons).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub fn find_haproxy() -> Option<PathBuf> {
    find_binary("haproxy")
}

/// Runs `program args` (non-interactive Debian frontend), echoing the command
/// line; `Err` with its output when it cannot be run or exits non-zero.
pub fn try_run_logged(program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("+ {program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub fn run_logged(program: &str, args: &[&str]) {
    if let Err(e) = try_run_logged(program, args) {
        panic!("{e}");
    }
}

/// `apt-get update` then `apt-get install -y --no-install-recommends
/// <package>` from Debian's packages; through `sudo -n` when not root.
pub fn apt_install(package: &str) -> Result<(), String> {
    let lock = "DPkg::Lock::Timeout=120";
    let update = ["-o", lock, "update", "-q"];
    let install = [
        "-o",
        lock,
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        package,
    ];
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        try_run_logged("apt-get", &update)?;
        try_run_logged("apt-get", &install)
    } else {
        let sudo = |args: &[&str]| {
            let mut v = vec!["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"];
            v.extend_from_slice(args);
            try_run_logged("sudo", &v)
        };
        sudo(&update)?;
        sudo(&install)
    }
}

/// The haproxy binary, installed from Debian's packages if missing.
pub fn haproxy_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = find_haproxy() {
            return p;
        }
        eprintln!("haproxy not found: installing Debian's package `haproxy` with apt-get");
        let started = Instant::now();
        if let Err(e) = apt_install("haproxy") {
            panic!("{e}");
        }
        let p = find_haproxy().expect("haproxy still not found after apt-get install haproxy");
        eprintln!(
            "installed {} in {:.1} s",
            p.display(),
            started.elapsed().as_secs_f64()
        );
        p
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// One command on HAProxy's runtime API (a unix socket, spoken with std).
/// In non-interactive mode HAProxy answers and closes.
pub fn admin_request(socket: &Path, command: &str) -> io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(command.as_bytes())?;
    s.write_all(b"\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A running HAProxy, killed on drop (its temp dir removed after it).
pub struct Haproxy {
    child: Child,
    /// The frontend: what clients connect to.
    pub addr: SocketAddr,
    pub socket: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

/// Fills in `tests/edge/haproxy.cfg`.
pub fn render_config(dir: &Path, port: u16, servers: &[(&str, SocketAddr)]) -> String {
    let server_lines: String = servers
        .iter()
        .map(|(name, addr)| format!("    server {name} {addr}\n"))
        .collect();
    let config = CONFIG_TEMPLATE
        .replace("@@DIR@@", &dir.display().to_string())
        .replace("@@FRONTEND_PORT@@", &port.to_string())
        .replace("@@COOKIE@@", COOKIE)
        .replace("@@HEALTH_PATH@@", HEALTH_PATH)
        .replace("@@SERVERS@@\n", &server_lines);
    assert!(!config.contains("@@"), "unfilled placeholder:\n{config}");
    config
}

impl Haproxy {
    /// Writes the config for `servers` (name, address), checks it with
    /// `haproxy -c`, starts HAProxy in the foreground and returns once its
    /// admin socket answers.
    pub fn start(servers: &[(&str, SocketAddr)]) -> Haproxy {
        let bin = haproxy_binary();
        let version = Command::new(bin)
            .arg("-v")
            .output()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout);
                text.lines().next().unwrap_or("").to_string()
            })
            .unwrap_or_default();
        eprintln!("using {} ({version})", bin.display());
        let mut last_err = String::new();
        // The frontend port is found free, then bound by HAProxy: retry on
        // the rare race with another process taking it meanwhile.
        for _ in 0..5 {
            let dir = TempDir::new("haproxy");
            let port = free_port();
            let config = render_config(&dir.0, port, servers);
            let cfg = dir.0.join("haproxy.cfg");
            std::fs::write(&cfg, &config).expect("write haproxy.cfg");
            let check = Command::new(bin)
                .args(["-c", "-f"])
                .arg(&cfg)
                .output()
                .expect("run haproxy -c");
            assert!(
                check.status.success(),
                "haproxy -c rejects the config:\n{}{}\n--- config ---\n{config}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );

            let mut cmd = Command::new(bin);
            cmd.args(["-db", "-f"])
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            // Should this test process die without running its destructors,
            // HAProxy dies with it (the signal follows the spawning thread,
            // which is the test's own and outlives the guard).
            die_with_parent(&mut cmd);
            let mut child = cmd.spawn().expect("spawn haproxy");
            let logs = Arc::new(Mutex::new(Vec::new()));
            {
                let logs = logs.clone();
                let stderr = child.stderr.take().unwrap();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(stderr);
                    let mut line = String::new();
                    while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                        logs.lock().unwrap().push(line.trim_end().to_string());
                        line.clear();
                    }
                });
            }
            let socket = dir.0.join("haproxy.sock");
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut exited = None;
            while Instant::now() < deadline {
                if let Ok(Some(st)) = child.try_wait() {
                    exited = Some(st);
                    break;
                }
                if admin_request(&socket, "show info").is_ok_and(|s| s.contains("Pid:")) {
                    return Haproxy {
                        child,
                        addr: SocketAddr::from(([127, 0, 0, 1], port)),
                        socket,
                        logs,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(50));
            last_err = format!(
                "haproxy {} ({exited:?}); stderr:\n{}",
                if exited.is_some() {
                    "exited at start"
                } else {
                    "did not answer on its admin socket within 5 s"
                },
                logs.lock().unwrap().join("\n")
            );
            eprintln!("{last_err}\n(retrying with another port)");
        }
        panic!("could not start haproxy: {last_err}");
    }

    pub fn admin(&self, command: &str) -> String {
        admin_request(&self.socket, command)
            .unwrap_or_else(|e| panic!("haproxy admin socket, `{command}`: {e}"))
    }

    /// `show stat`: one map per proxy/server line, keyed by column name.
    pub fn stats(&self) -> Vec<HashMap<String, String>> {
        let text = self.admin("show stat");
        let mut lines = text.lines();
        let header = lines
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .unwrap_or_else(|| panic!("unexpected `show stat` answer: {text:?}"));
        let cols: Vec<&str> = header.split(',').collect();
        lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                cols.iter()
                    .zip(l.split(','))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect()
    }

    pub fn stat(&self, proxy: &str, server: &str, column: &str) -> String {
        self.stats()
            .into_iter()
            .find(|row| {
                row.get("pxname").map(String::as_str) == Some(proxy)
                    && row.get("svname").map(String::as_str) == Some(server)
            })
            .and_then(|row| row.get(column).cloned())
            .unwrap_or_else(|| panic!("no `{column}` for {proxy}/{server} in `show stat`"))
    }

    pub fn server_status(&self, server: &str) -> String {
        self.stat(BACKEND, server, "status")
    }

    /// The stick table: session id -> server name.
    pub fn stick_table(&self) -> HashMap<String, String> {
        self.admin(&format!("show table {BACKEND}"))
            .lines()
            .filter_map(|l| {
                let field = |k: &str| {
                    l.split_whitespace()
                        .find_map(|t| t.strip_prefix(k))
                        .map(str::to_string)
                };
                Some((field("key=")?, field("server_key=")?))
            })
            .collect()
    }

    /// `set server <backend>/<server> state <state>` (`maint`, `ready`,
    /// `drain`); the runtime API answers nothing on success.
    pub fn set_state(&self, server: &str, state: &str) {
        let answer = self.admin(&format!("set server {BACKEND}/{server} state {state}"));
        assert!(
            answer.trim().is_empty(),
            "set server {BACKEND}/{server} state {state}: {answer:?}"
        );
    }

    /// Points `server` at a new address (a node restarted on another port),
    /// as a target group registers a replacement target.
    pub fn set_addr(&self, server: &str, addr: SocketAddr) {
        let answer = self.admin(&format!(
            "set server {BACKEND}/{server} addr {} port {}",
            addr.ip(),
            addr.port()
        ));
        // HAProxy acknowledges an address change with a sentence ("IP changed
        // from ... to ...", "no need to change the addr ..."), not an error.
        assert!(
            !answer.to_ascii_lowercase().contains("error")
                && !answer.to_ascii_lowercase().contains("unknown")
                && !answer.to_ascii_lowercase().contains("require"),
            "set server {BACKEND}/{server} addr {addr}: {answer:?}"
        );
    }

    /// Waits (up to `within`) until `server`'s status is `want` (`UP`,
    /// `MAINT`, `DOWN`, ...); panics with the last status otherwise.
    pub fn wait_status(&self, server: &str, want: &str, within: Duration) {
        let ok = wait_until(within, || self.server_status(server) == want);
        assert!(
            ok,
            "HAProxy: {BACKEND}/{server} is {} after {within:?}, expected {want}",
            self.server_status(server)
        );
    }

    pub fn dump_logs(&self) {
        eprintln!("----- haproxy stderr -----");
        for l in self.logs.lock().unwrap().iter() {
            eprintln!("{l}");
        }
        eprintln!("----- end of haproxy stderr -----");
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// WebSocket clients through the balancer
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Hello {
    /// The session id (the cookie).
    pub id: String,
    /// The peer id the hello names.
    pub peer: String,
    /// `new` or `resumed`.
    pub state: String,
    pub node: String,
}

/// Upgrade on `/ws` through the balancer, presenting `cookie` (a session id)
/// if given. Checks the 101 (status, accept key, the exact cookie line; the
/// balancer may change the case of header names) and reads the hello.
pub fn upgrade(lb: SocketAddr, cookie: Option<&str>) -> (Conn, Hello) {
    let key = rand_key();
    let mut req = Req::upgrade("/ws").set("Sec-WebSocket-Key", &key);
    if let Some(id) = cookie {
        req = req.header("Cookie", &format!("{COOKIE}={id}"));
    }
    let mut c = Conn::connect(lb);
    c.send(&req.bytes());
    let resp = c.read_head();
    assert_eq!(
        resp.status, 101,
        "upgrade through HAProxy with cookie {cookie:?} was answered:\n{}",
        resp.head
    );
    assert_eq!(
        resp.header("Sec-WebSocket-Accept"),
        Some(accept_for(&key).as_str()),
        "accept key in:\n{}",
        resp.head
    );
    let set_cookie = resp
        .header("Set-Cookie")
        .unwrap_or_else(|| panic!("101 without Set-Cookie:\n{}", resp.head));
    let id = cookie_id(set_cookie, COOKIE).to_string();
    assert!(is_uuid_v4(&id), "session id {id:?} is not a v4 UUID");
    assert_eq!(set_cookie, format!("{COOKIE}={id}{COOKIE_ATTRS}"));
    if let Some(want) = cookie {
        assert_eq!(id, want, "the gateway must keep the client's valid id");
    }
    let text = next_text(&mut c, "the hello");
    let parts: Vec<&str> = text.split(' ').collect();
    assert!(
        parts.len() == 4 && parts[0] == "hello" && matches!(parts[2], "new" | "resumed"),
        "expected `hello <peer> new|resumed <node>`, got {text:?}"
    );
    let peer = parts[1];
    assert!(
        peer.len() == 16 && peer.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "the hello names a peer id, got {text:?}"
    );
    assert!(
        !text.contains(&id),
        "the hello carries the session id: {text:?}"
    );
    let hello = Hello {
        peer: peer.to_string(),
        id,
        state: parts[2].to_string(),
        node: parts[3].to_string(),
    };
    (c, hello)
}

/// The next text frame, answering pings; panics on a close frame, EOF, a
/// reset or the read timeout.
pub fn next_text(c: &mut Conn, what: &str) -> String {
    loop {
        let f = c
            .try_read_frame()
            .unwrap_or_else(|e| panic!("waiting for {what}: {e} ({:?})", e.kind()))
            .unwrap_or_else(|| panic!("EOF while waiting for {what}"));
        match f.opcode {
            OP_TEXT => return String::from_utf8(f.payload).expect("text frame is UTF-8"),
            OP_PING => c.send_frame(true, OP_PONG, &f.payload),
            OP_PONG => {}
            _ => panic!("{f:?} while waiting for {what}"),
        }
    }
}

/// The next text frame starting with `prefix`, skipping others (presence
/// notices and the like).
pub fn next_text_starting(c: &mut Conn, prefix: &str, what: &str) -> String {
    loop {
        let t = next_text(c, what);
        if t.starts_with(prefix) {
            return t;
        }
    }
}

/// Leave the way a browser tab does: close 1001 (which keeps the session for
/// a resume, unlike 1000), wait for the server's close reply, then EOF.
pub fn leave(mut c: Conn, what: &str) {
    c.send_frame(true, OP_CLOSE, &close_payload(1001, "going away"));
    loop {
        match c.try_read_frame() {
            Ok(Some(f)) if f.opcode == OP_CLOSE => break,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("{what}: EOF before the server's close reply"),
            Err(e) => panic!("{what}: waiting for the close reply: {e} ({:?})", e.kind()),
        }
    }
    match c.try_read_frame() {
        Ok(None) => {}
        other => panic!("{what}: expected EOF after the close handshake, got {other:?}"),
    }
}

/// `PR_SET_PDEATHSIG` = SIGKILL for the child `cmd` spawns: should the test
/// process die without running destructors, the child dies with it.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}
