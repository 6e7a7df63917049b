//! Helpers for the managed-Redis tests (`tests/redis_tls.rs`,
//! `tests/redis_sentinel.rs`, …, issue 18):
//!
//! * [`Pki`]: a CA and a server certificate (for `127.0.0.1` and
//!   `redis.test`) made with the `openssl` CLI in a temp dir, and a second,
//!   unrelated CA.
//! * [`Proc`]: a `redis-server` / `redis-sentinel` process with its own
//!   arguments, ready once its log says so; killed on drop.
//! * [`resume_and_fanout`]: two nodes fan a topic out to each other and one
//!   node's client resumes on the other with the messages it missed.
//!
//! Every wait is bounded; every process dies with the test.

#![allow(dead_code)]

use crate::common::*;
use crate::edge::{die_with_parent, free_port, TempDir};
use crate::redis::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs `openssl` with `args` in `dir`; panics with its output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e} (Debian package `openssl`)"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Test certificates.
pub struct Pki {
    pub dir: TempDir,
}

impl Pki {
    /// `ca.pem` signs `server.pem` (key `server.key`; names `redis.test` and
    /// `127.0.0.1`); `other-ca.pem` is a CA that signed nothing of ours.
    pub fn new() -> Pki {
        let dir = TempDir::new("pki");
        let d = &dir.0;
        for ca in ["ca", "other-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=wsgate test {ca}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        }
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=redis.test",
            ],
        );
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:redis.test,IP:127.0.0.1\n\
             basicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.0.join(name).display().to_string()
    }
}

/// A redis-server or redis-sentinel with the arguments a test gives.
pub struct Proc {
    pub port: u16,
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
    bin: PathBuf,
    args: Vec<String>,
    ready: String,
    pub dir: TempDir,
    pub label: String,
}

impl Proc {
    /// Starts `bin` (a path, or a name on PATH) with `args` (where `{port}`
    /// is `port` and `{dir}` its own temp dir), waiting up to 10 s for a log
    /// line containing `ready`.
    pub fn start(label: &str, bin: &str, port: u16, args: &[&str], ready: &str) -> Proc {
        let mut p = Proc {
            port,
            child: None,
            logs: Arc::new(Mutex::new(Vec::new())),
            bin: PathBuf::from(bin),
            args: Vec::new(),
            ready: ready.to_string(),
            dir: TempDir::new(label),
            label: label.to_string(),
        };
        let dir = p.dir.0.display().to_string();
        p.args = args
            .iter()
            .map(|a| {
                a.replace("{port}", &port.to_string())
                    .replace("{dir}", &dir)
            })
            .collect();
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let seen = self.logs.lock().unwrap().len();
        collect_lines(&mut child, &self.logs);
        let ready = self.ready.clone();
        let ok = wait_until(Duration::from_secs(10), || {
            self.logs.lock().unwrap()[seen..]
                .iter()
                .any(|l| l.contains(&ready))
        });
        if !ok {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} on port {} not ready ({ready:?}) within 10 s:\n{}",
                self.label,
                self.port,
                self.logs.lock().unwrap().join("\n")
            );
        }
        self.child = Some(child);
    }

    /// Starts it again with the same arguments (after [`Proc::kill`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{}: still running", self.label);
        self.spawn();
    }

    /// Waits (bounded) until its log has a line containing `needle`, at
    /// least `count` times.
    pub fn wait_log(&self, needle: &str, count: usize, within: Duration) {
        let ok = wait_until(within, || {
            self.logs().iter().filter(|l| l.contains(needle)).count() >= count
        });
        if !ok {
            self.dump_logs();
            panic!(
                "{}: no {count}× {needle:?} in its log within {within:?}",
                self.label
            );
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn dump_logs(&self) {
        eprintln!("---- {} (port {}) ----", self.label, self.port);
        for l in self.logs() {
            eprintln!("{l}");
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TLS-only redis-server (no plain port) with `pki`'s server certificate,
/// not asking clients for one; `extra` arguments after.
pub fn tls_redis(pki: &Pki, extra: &[&str]) -> Proc {
    let bin = redis_server_binary().expect("redis-server (Debian package redis-server)");
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let mut args = vec![
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--bind",
        "127.0.0.1",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        "{dir}",
    ];
    args.extend_from_slice(extra);
    let bin = bin.display().to_string();
    Proc::start(
        "redis-tls",
        &bin,
        free_port(),
        &args,
        "Ready to accept connections",
    )
}

/// A plain redis-server on a free port (`extra` arguments after).
pub fn plain_redis(label: &str, extra: &[&str]) -> Proc {
    let bin = redis_server_binary().expect("redis-server (Debian package redis-server)");
    redis_proc(&bin.display().to_string(), label, extra)
}

/// Two nodes on one engine: a client of each subscribed to a (new) topic gets
/// what the other publishes; then `a`'s client drops its TCP connection,
/// `b` publishes three messages, and the client resumes on `b` with its
/// subscription and the three messages replayed in order.
pub fn resume_and_fanout(a: &Gateway, b: &Gateway, label: &str) {
    resume_and_fanout_on(a, b, label, &topic(label));
}

/// [`resume_and_fanout`] on topic `t`.
pub fn resume_and_fanout_on(a: &Gateway, b: &Gateway, label: &str, t: &str) {
    let t = t.to_string();
    let mut x = Ws::fresh(a.addr, &format!("{label}-x@a"));
    let mut y = Ws::fresh(b.addr, &format!("{label}-y@b"));
    let at = x.sub(&t);
    assert_eq!(y.sub(&t), at, "both nodes see the same seq");
    pub_across(&mut x, &mut y, &t, "a-to-b");
    let last = pub_across(&mut y, &mut x, &t, "b-to-a");
    // x has seen `last`; it goes away without a close, and what `b`
    // publishes next is missed only once `a` has seen the socket go (before
    // that, `a` writes it into the dead socket and counts it delivered).
    let id = x.id().to_string();
    let open = crate::gw::metric(a, "wsgate_connections_active") as usize;
    x.drop_tcp();
    crate::gw::wait_open_connections(a, open - 1, &format!("{label}: x's socket gone on a"));
    let mut missed = Vec::new();
    for i in 0..3 {
        let p = format!("missed-{i}");
        y.send_text(&format!("pub {t} {p}"));
        let mut skipped = Vec::new();
        let ok = y.reply(&format!("ok pub {t} "), WAIT, &mut skipped);
        let seq: u64 = ok.rsplit(' ').next().unwrap().parse().unwrap();
        missed.push(format!("msg {t} {seq} {p}"));
    }
    let mut x = Ws::resume(b.addr, &format!("{label}-x@b"), &id);
    for want in &missed {
        assert_eq!(&x.data_line(WAIT, "a missed message replayed"), want);
    }
    assert!(missed[0].contains(&format!(" {} ", last + 1)), "{missed:?}");
}

/// The node's `redis_down` log lines.
pub fn redis_down_lines(gw: &Gateway) -> Vec<String> {
    log_events(gw, "redis_down")
}

/// Waits (bounded) for a `redis_down` line containing `needle`; panics with
/// the node's redis lines.
pub fn wait_redis_down_saying(gw: &Gateway, name: &str, needle: &str, within: Duration) -> String {
    let t0 = Instant::now();
    loop {
        if let Some(l) = redis_down_lines(gw)
            .into_iter()
            .find(|l| l.contains(needle))
        {
            return l;
        }
        if t0.elapsed() > within {
            let lines: Vec<String> = gw
                .logs()
                .into_iter()
                .filter(|l| l.contains("redis"))
                .collect();
            panic!(
                "{name}: no redis_down line saying {needle:?} within {within:?}:\n{}",
                lines.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cluster's key slot (CRC16/XMODEM of the key or its hash tag), to
/// pick names by slot without asking a server each time.
pub fn key_slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let tagged = b.iter().position(|&c| c == b'{').and_then(|o| {
        let len = b[o + 1..].iter().position(|&c| c == b'}')?;
        (len > 0).then(|| &b[o + 1..o + 1 + len])
    });
    let mut crc: u16 = 0;
    for &x in tagged.unwrap_or(b) {
        crc ^= u16::from(x) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The slot of a topic's keys and channel.
pub fn topic_slot(topic: &str) -> u16 {
    key_slot(&format!("wsgate:t:{{{topic}}}:seq"))
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    pub failed: bool,
    pub slots: Vec<(u16, u16)>,
}

/// A Redis Cluster of `primaries` shards with one replica each, on
/// loopback (`redis-cli --cluster create`).
pub struct Cluster {
    pub nodes: Vec<Proc>,
}

impl Cluster {
    pub fn start(primaries: usize) -> Cluster {
        let bin = redis_server_binary().expect("redis-server (Debian package redis-server)");
        let bin = bin.display().to_string();
        let nodes: Vec<Proc> = (0..primaries * 2)
            .map(|i| {
                // The bus port is given: port + 10000 (the default) does
                // not fit above 55535.
                let bus = free_port().to_string();
                redis_proc(
                    &bin,
                    &format!("cluster-{i}"),
                    &[
                        "--cluster-port",
                        &bus,
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "{dir}/nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-replica-validity-factor",
                        "0",
                    ],
                )
            })
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let out = Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli (Debian package redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let c = Cluster { nodes };
        c.wait_ok(Duration::from_secs(20));
        c
    }

    fn addr(&self, i: usize) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.nodes[i].port))
    }

    /// One command on node `i`.
    pub fn cmd(&self, i: usize, args: &[&str]) -> Resp {
        resp_command(self.addr(i), None, args).unwrap_or_else(|e| panic!("node {i} {args:?}: {e}"))
    }

    /// `CLUSTER NODES` as node `i` sees it.
    pub fn view(&self, i: usize) -> Vec<NodeInfo> {
        let Resp::Bulk(Some(text)) = self.cmd(i, &["CLUSTER", "NODES"]) else {
            panic!("CLUSTER NODES on node {i}");
        };
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let port = f
                    .get(1)?
                    .split('@')
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()?;
                let flags = f.get(2)?;
                let slots = f[8.min(f.len())..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .filter_map(|s| match s.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => s.parse().ok().map(|x| (x, x)),
                    })
                    .collect();
                Some(NodeInfo {
                    id: f[0].to_string(),
                    port,
                    primary: flags.contains("master"),
                    failed: flags.contains("fail"),
                    slots,
                })
            })
            .collect()
    }

    /// The index of the node with `port`.
    pub fn index_of(&self, port: u16) -> usize {
        self.nodes.iter().position(|n| n.port == port).unwrap()
    }

    /// The node (index) serving `slot`, as node `from` sees it.
    pub fn owner(&self, from: usize, slot: u16) -> usize {
        let view = self.view(from);
        let n = view
            .iter()
            .find(|n| {
                n.primary && !n.failed && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
            })
            .unwrap_or_else(|| panic!("nobody serves slot {slot}: {view:?}"));
        self.index_of(n.port)
    }

    /// Waits until every live node says `cluster_state:ok` and every
    /// replica's link to its primary is up.
    pub fn wait_ok(&self, within: Duration) {
        let ok = wait_until(within, || {
            self.nodes.iter().enumerate().all(|(i, n)| {
                if n.child.is_none() {
                    return true;
                }
                let info = match resp_command(self.addr(i), None, &["CLUSTER", "INFO"]) {
                    Ok(Resp::Bulk(Some(t))) => String::from_utf8_lossy(&t).into_owned(),
                    _ => return false,
                };
                let role = resp_command(self.addr(i), None, &["ROLE"]);
                let linked = match role {
                    Ok(Resp::Array(r)) => match r.first() {
                        Some(Resp::Bulk(Some(k))) if k == b"slave" => {
                            matches!(r.get(3), Some(Resp::Bulk(Some(s))) if s == b"connected")
                        }
                        _ => true,
                    },
                    _ => false,
                };
                info.contains("cluster_state:ok") && linked
            })
        });
        if !ok {
            for n in &self.nodes {
                n.dump_logs();
            }
            panic!("the cluster is not ok within {within:?}");
        }
    }
}

/// redis-server `bin` on a free port, nothing saved to disk (`extra`
/// arguments after).
fn redis_proc(bin: &str, label: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--port",
        "{port}",
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        "{dir}",
    ];
    args.extend_from_slice(extra);
    Proc::start(
        label,
        bin,
        free_port(),
        &args,
        "Ready to accept connections",
    )
}
