//! Helpers for the tests of the JavaScript client (`client/`) against real
//! gateways: `tests/node_client.rs` (Node), `tests/browser_client.rs` and
//! `tests/browser_client_more.rs` (headless Chromium).
//!
//! * [`Script`]: a `node` process speaking in lines (commands on its stdin,
//!   events on its stdout), read by a thread; waits with deadlines that fail
//!   early when the script reports `fatal`/`pageerror` or exits; on drop its
//!   stdin is closed (the scripts then close what they opened and exit), then
//!   SIGTERM, then SIGKILL.
//! * [`StaticServer`]: a tiny file server on a loopback port (GET/HEAD only,
//!   no directory listing, no `..`), the "second origin" a page is loaded
//!   from; stopped on drop.
//! * Finding `node`, installing Debian's `chromium` and the pinned
//!   `puppeteer-core` (`client/test/browser/package-lock.json`, `npm ci` into
//!   `~/.cache/wsgate/puppeteer-<hash of the lock>`).
//!
//! Only std and libc.

#![allow(dead_code)]

use crate::edge::{apt_install, die_with_parent, find_binary, try_run_logged};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `client/` of this repository, or `WSGATE_CLIENT_DIR` when set: a copy of
/// it to run these tests against (e.g. with its dedupe disabled, to see them
/// fail).
pub fn client_dir() -> PathBuf {
    match std::env::var_os("WSGATE_CLIENT_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("client"),
    }
}

/// Whether `WSGATE_SKIP_BROWSER=1` asks to skip the browser test.
pub fn skip_browser() -> bool {
    std::env::var("WSGATE_SKIP_BROWSER").is_ok_and(|v| v == "1")
}

const SKIP_HINT: &str = "(set WSGATE_SKIP_BROWSER=1 to skip the browser test on a machine \
                         without root or without the package registries)";

// ---------------------------------------------------------------------------
// Tools: node, npm, chromium, puppeteer-core
// ---------------------------------------------------------------------------

/// The `node` binary; panics with what to install when there is none.
pub fn node_binary() -> PathBuf {
    find_binary("node").unwrap_or_else(|| {
        panic!(
            "`node` is not on PATH: the client tests need Node.js >= 20 (Debian: apt-get install \
             nodejs npm)"
        )
    })
}

/// The major version of `node`.
pub fn node_major(node: &Path) -> u32 {
    let out = Command::new(node)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {} --version: {e}", node.display()));
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    v.trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("unexpected `node --version`: {v:?}"))
}

/// The flags `node` needs for a global `WebSocket`: none from Node 22 on,
/// `--experimental-websocket` on Node 20 and 21.
pub fn node_websocket_flags(node: &Path) -> Vec<&'static str> {
    let major = node_major(node);
    assert!(
        major >= 20,
        "{} is Node {major}: the client tests need Node >= 20",
        node.display()
    );
    if major >= 22 {
        vec![]
    } else {
        vec!["--experimental-websocket"]
    }
}

/// Debian's `chromium`, installed with apt-get when missing. Panics when it
/// cannot be had.
pub fn chromium_binary() -> PathBuf {
    if let Some(p) = find_binary("chromium") {
        return p;
    }
    eprintln!("chromium not found: installing Debian's package `chromium` with apt-get");
    let started = Instant::now();
    if let Err(e) = apt_install("chromium") {
        panic!("chromium is not installed and installing it failed {SKIP_HINT}:\n{e}");
    }
    let p = find_binary("chromium")
        .unwrap_or_else(|| panic!("chromium still not found after apt-get install {SKIP_HINT}"));
    eprintln!(
        "installed {} in {:.1} s",
        p.display(),
        started.elapsed().as_secs_f64()
    );
    p
}

/// 64-bit FNV-1a (names the cache directory after the lock file's content).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The `version` of a package.json (a flat search: enough for npm's files).
fn json_version(text: &str) -> Option<String> {
    let i = text.find("\"version\"")?;
    let rest = &text[i + "\"version\"".len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// The pinned puppeteer-core of `client/test/browser/package-lock.json`,
/// installed with `npm ci --ignore-scripts` into
/// `~/.cache/wsgate/puppeteer-<hash of the lock>` on first use; returns that
/// directory (its `node_modules` holds puppeteer-core). Panics when npm is
/// missing or the install fails.
pub fn puppeteer_dir() -> PathBuf {
    let src = client_dir().join("test/browser");
    let manifest = std::fs::read_to_string(src.join("package.json")).expect("read package.json");
    let lock = std::fs::read_to_string(src.join("package-lock.json"))
        .expect("read client/test/browser/package-lock.json");
    let pinned = manifest
        .split("\"puppeteer-core\"")
        .nth(1)
        .and_then(|r| r.split('"').nth(1))
        .expect("puppeteer-core in client/test/browser/package.json")
        .to_string();
    assert!(
        pinned.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
        "puppeteer-core must be pinned to an exact version, not {pinned:?}"
    );
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let cache = home.join(".cache/wsgate");
    let dir = cache.join(format!(
        "puppeteer-{pinned}-{:08x}",
        fnv1a(lock.as_bytes()) as u32
    ));
    let installed = dir.join("node_modules/puppeteer-core/package.json");
    let done = dir.join(".installed");
    if done.is_file() {
        if let Ok(text) = std::fs::read_to_string(&installed) {
            if json_version(&text).as_deref() == Some(pinned.as_str()) {
                return dir;
            }
        }
    }
    let npm = find_binary("npm").unwrap_or_else(|| {
        panic!("`npm` is not on PATH: it installs puppeteer-core for the browser test {SKIP_HINT}")
    });
    eprintln!(
        "installing puppeteer-core {pinned} (package-lock.json) into {}",
        dir.display()
    );
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap_or_else(|e| panic!("copy {f}: {e}"));
    }
    let prefix = dir.display().to_string();
    let npm = npm.display().to_string();
    // `npm ci`: exactly the lock's versions; no install scripts (puppeteer-core
    // has none, and nothing may download a browser of its own).
    if let Err(e) = try_run_logged(
        &npm,
        &[
            "ci",
            "--prefix",
            &prefix,
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ],
    ) {
        panic!("installing puppeteer-core with npm failed {SKIP_HINT}:\n{e}");
    }
    let text = std::fs::read_to_string(&installed)
        .unwrap_or_else(|e| panic!("{}: {e}", installed.display()));
    assert_eq!(
        json_version(&text).as_deref(),
        Some(pinned.as_str()),
        "npm ci installed another puppeteer-core"
    );
    std::fs::write(&done, b"").expect("write the install marker");
    eprintln!(
        "installed puppeteer-core {pinned} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    dir
}

// ---------------------------------------------------------------------------
// A node script speaking in lines
// ---------------------------------------------------------------------------

/// A running `node` script: commands go to its stdin, each stdout line is
/// kept (in order) and echoed to the test's stderr with the script's name.
pub struct Script {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    pub started: Instant,
}

/// Lines that end a script's usefulness: a wait fails at once on them.
fn is_fatal(line: &str) -> bool {
    line.starts_with("fatal ") || line.starts_with("pageerror ")
}

impl Script {
    /// Spawns `node <args…>` in `client/` with `envs`. Stdout lines starting
    /// with one of `quiet_prefixes` are kept but not echoed.
    pub fn spawn(
        name: &str,
        node: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        quiet_prefixes: &'static [&'static str],
    ) -> Script {
        let mut cmd = Command::new(node);
        cmd.args(args)
            .current_dir(client_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        // Not a child of `node --test` (the scripts skip themselves there).
        cmd.env_remove("NODE_TEST_CONTEXT");
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} {args:?}: {e}", node.display()));
        let started = Instant::now();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let lines = lines.clone();
            let out = child.stdout.take().unwrap();
            let tag = name.to_string();
            std::thread::spawn(move || {
                let mut r = BufReader::new(out);
                let mut line = String::new();
                while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                    let l = line.trim_end().to_string();
                    if !quiet_prefixes.iter().any(|p| l.starts_with(p)) {
                        eprintln!("[{tag} +{:.2}s] {l}", started.elapsed().as_secs_f64());
                    }
                    lines.lock().unwrap().push(l);
                    line.clear();
                }
            });
        }
        {
            let stderr = stderr.clone();
            let err = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut r = BufReader::new(err);
                let mut line = String::new();
                while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                    stderr.lock().unwrap().push(line.trim_end().to_string());
                    line.clear();
                }
            });
        }
        Script {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            started,
        }
    }

    /// Sends one command line.
    pub fn send(&mut self, cmd: &str) {
        let name = &self.name;
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{name}: stdin already closed"));
        stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{name}: sending {cmd:?}: {e}"));
    }

    /// Every stdout line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `cond` holds on the lines so far (checked every 20 ms),
    /// returning its value; panics after `within`, or at once when the
    /// script reports `fatal`/`pageerror` or exits.
    pub fn wait<T>(
        &mut self,
        within: Duration,
        what: &str,
        mut cond: impl FnMut(&[String]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            {
                let lines = self.lines.lock().unwrap();
                if let Some(v) = cond(&lines) {
                    return v;
                }
                if let Some(f) = lines.iter().find(|l| is_fatal(l)) {
                    let f = f.clone();
                    drop(lines);
                    self.fail(&format!("while waiting for {what}: {f}"));
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                if let Some(v) = cond(&self.lines.lock().unwrap()) {
                    return v;
                }
                self.fail(&format!("exited ({st}) while waiting for {what}"));
            }
            if Instant::now() >= deadline {
                self.fail(&format!("timed out after {within:?} waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first line starting with `prefix` (waits like [`Script::wait`]).
    pub fn wait_prefix(&mut self, within: Duration, prefix: &str) -> String {
        self.wait(within, &format!("a line starting with {prefix:?}"), |ls| {
            ls.iter().find(|l| l.starts_with(prefix)).cloned()
        })
    }

    /// Waits for the count of lines starting with `prefix` to reach `n`;
    /// returns the `n`-th.
    pub fn wait_nth(&mut self, within: Duration, prefix: &str, n: usize) -> String {
        self.wait(
            within,
            &format!("line #{n} starting with {prefix:?}"),
            |ls| {
                ls.iter()
                    .filter(|l| l.starts_with(prefix))
                    .nth(n - 1)
                    .cloned()
            },
        )
    }

    /// Sends `result` and returns the `result <key> <value>` lines as
    /// `(key, value)` (a value of `-` is empty), up to `result end`.
    pub fn result(&mut self, within: Duration) -> Vec<(String, String)> {
        self.result_cmd("result", within)
    }

    /// [`Script::result`] asked with another command (`result <tab>` of
    /// `driver.mjs`).
    pub fn result_cmd(&mut self, cmd: &str, within: Duration) -> Vec<(String, String)> {
        let before = self.lines.lock().unwrap().len();
        self.send(cmd);
        self.wait(within, "the result", |ls| {
            let mine = &ls[before.min(ls.len())..];
            let end = mine.iter().position(|l| l == "result end")?;
            Some(
                mine[..end]
                    .iter()
                    .filter_map(|l| l.strip_prefix("result "))
                    .map(|kv| {
                        let (k, v) = kv.split_once(' ').unwrap_or((kv, ""));
                        let v = if v == "-" { "" } else { v };
                        (k.to_string(), v.to_string())
                    })
                    .collect(),
            )
        })
    }

    /// The script's stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    pub fn dump(&self) {
        eprintln!("----- {} stderr -----", self.name);
        for l in self.stderr.lock().unwrap().iter() {
            eprintln!("{l}");
        }
        eprintln!("----- end of {} stderr -----", self.name);
    }

    fn fail(&self, why: &str) -> ! {
        self.dump();
        panic!("{}: {why}", self.name);
    }

    /// Closes stdin (the script closes what it opened and exits) and waits
    /// up to `within`; then SIGTERM, then SIGKILL. Returns whether it exited
    /// by itself with status 0.
    pub fn finish(&mut self, within: Duration) -> bool {
        self.stdin.take();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            self.finish(Duration::from_secs(5));
        }
    }
}

/// The value of `key` in a [`Script::result`].
pub fn field<'a>(result: &'a [(String, String)], key: &str) -> &'a str {
    result
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no `{key}` in the result {result:?}"))
}

/// `seq:payload,…` → `[(seq, payload)]`.
pub fn parse_delivered(s: &str) -> Vec<(u64, String)> {
    if s.is_empty() {
        return vec![];
    }
    s.split(',')
        .map(|item| {
            let (seq, p) = item
                .split_once(':')
                .unwrap_or_else(|| panic!("bad delivered item {item:?}"));
            (
                seq.parse()
                    .unwrap_or_else(|_| panic!("bad seq in {item:?}")),
                p.to_string(),
            )
        })
        .collect()
}

/// Fails unless `got` is exactly `(s, payload(s))` for `s` in `1..=last`,
/// showing where it differs and the runs of seqs it got.
pub fn assert_exactly_once_in_order(
    who: &str,
    got: &[(u64, String)],
    last: u64,
    payload: impl Fn(u64) -> String,
) {
    let want: Vec<(u64, String)> = (1..=last).map(|s| (s, payload(s))).collect();
    if got == want.as_slice() {
        return;
    }
    let mut runs = String::new();
    let mut cur: Option<(u64, u64)> = None;
    for (s, _) in got {
        cur = match cur {
            Some((a, b)) if *s == b + 1 => Some((a, *s)),
            Some((a, b)) => {
                runs.push_str(&format!(" {a}..={b}"));
                Some((*s, *s))
            }
            None => Some((*s, *s)),
        };
    }
    if let Some((a, b)) = cur {
        runs.push_str(&format!(" {a}..={b}"));
    }
    let at = got
        .iter()
        .zip(&want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{who}: expected seqs 1..={last} exactly once, in order, with their payloads; got {} \
         messages, runs:{runs}; first difference at #{at}: got {:?}, expected {:?}",
        got.len(),
        got.get(at),
        want.get(at)
    );
}

// ---------------------------------------------------------------------------
// A static file server on loopback
// ---------------------------------------------------------------------------

/// Serves the files under `root` on `127.0.0.1:<port>` (`Connection: close`,
/// `Cache-Control: no-store`); stopped on drop.
pub struct StaticServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// `<status> <path>` of every request, for diagnostics.
    pub log: Arc<Mutex<Vec<String>>>,
    handle: Option<JoinHandle<()>>,
}

impl StaticServer {
    pub fn start(root: &Path) -> StaticServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let root = root
            .canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e}", root.display()));
        let handle = {
            let (stop, log) = (stop.clone(), log.clone());
            std::thread::Builder::new()
                .name("static-server".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let (root, log) = (root.clone(), log.clone());
                        std::thread::spawn(move || serve_one(conn, &root, &log));
                    }
                })
                .expect("spawn the static server")
        };
        StaticServer {
            addr,
            stop,
            log,
            handle: Some(handle),
        }
    }

    /// `http://127.0.0.1:<port>`: the page's origin.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

fn serve_one(mut conn: TcpStream, root: &Path, log: &Mutex<Vec<String>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
        if buf.len() > 16 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut first = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    // Plain paths only: no `..`, no percent-encoding, no backslashes.
    let clean = path.starts_with('/')
        && !path.split('/').any(|seg| seg == "..")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    let file = clean
        .then(|| root.join(path.trim_start_matches('/')))
        .and_then(|p| p.canonicalize().ok())
        .filter(|p| p.starts_with(root) && p.is_file());
    let (status, body, ctype) = match (method, file) {
        ("GET" | "HEAD", Some(p)) => match std::fs::read(&p) {
            Ok(b) => ("200 OK", b, content_type(&p)),
            Err(_) => ("404 Not Found", b"not found\n".to_vec(), "text/plain"),
        },
        ("GET" | "HEAD", None) => ("404 Not Found", b"not found\n".to_vec(), "text/plain"),
        _ => (
            "405 Method Not Allowed",
            b"method not allowed\n".to_vec(),
            "text/plain",
        ),
    };
    log.lock()
        .unwrap()
        .push(format!("{} {method} {target}", &status[..3]));
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(&body);
    }
    let _ = conn.write_all(&out);
}
