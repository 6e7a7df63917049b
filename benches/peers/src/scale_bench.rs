//! `fanout scale`: topics at scale (issue 21, DESIGN §6), measured the way
//! the issue measured: the gateway `--cores 1` pinned to CPU 0 (`taskset`),
//! this load generator pinned to CPU 1, one process, one thread (a tokio
//! current_thread runtime holds every socket), 32 publishes in flight.
//!
//! Every round starts a fresh gateway per step and runs, in this order:
//!
//! * **populations**, one per subscriber count N (ascending): the publisher-less
//!   gateway is read (RSS), N clients connect and wait for `hello` (RSS), then
//!   all N send `sub fanout` back to back. Subscribe time is from the first
//!   `sub` written to the last `ok sub` read; connections the server cut
//!   meanwhile and presence lines (`join`/`leave`) are counted until the
//!   presence traffic settles (RSS again: memory per subscribed session).
//!   On the same subscribers: fan-out runs (a fresh publisher connection per
//!   run, `--warmup` + `--measure` seconds, at most `--ack-window` publishes
//!   unacknowledged and `--e2e-window` messages ahead of the average
//!   subscriber; server CPU per delivery over the measured window, every
//!   subscriber checked gap-free and in order to the last acknowledged
//!   message), and 1 s after a run drained, RSS: memory a burst left behind.
//! * **echo**: a gateway with `--echo-path /echo`, driven by `loadgen run
//!   --scenario pipelined-32` (the end-to-end suite's scenario, unchanged):
//!   server CPU per echoed message, for the fan-out ÷ echo ratio of the same
//!   round.
//! * **topics**: a gateway (with `--topic-ttl` when the binary has it), one
//!   client connection that publishes once to `--topics` distinct topics
//!   nobody subscribes to (`pub`, `--ack-window` in flight); RSS before, after,
//!   and `--ttl-wait` seconds later; the `wsgate_topics` gauge when exported.
//!
//! * **peers** (`--peer NAME=PATH`, benches/fanout.sh `PEERS=uws`): after
//!   wsgate's steps, every round runs the populations and echo again against
//!   each peer, a server started like wsgate (same flags, same pinning; e.g.
//!   benches/peers/uws/wsgate-compat.sh, uWebSockets.js); the report adds a
//!   table with a column per server and wsgate ÷ peer, then each peer's own.
//!
//! Medians are over rounds. Every measured window records how much of CPU 0
//! and CPU 1 other processes took (busy ticks not the gateway's or this
//! process's; > 5 % marks the window disturbed).

use super::*;

use std::cell::Cell;
use std::rc::Rc;

const TOPIC: &str = "fanout";
/// Another process's share of either CPU above this marks a window disturbed.
const DISTURBED_PCT: f64 = 5.0;

// ---------------------------------------------------------------------------
// Options

#[derive(Clone, Debug)]
struct ScaleOpts {
    wsgate: PathBuf,
    loadgen: Option<PathBuf>,
    out: Option<PathBuf>,
    rounds: usize,
    scenarios: Vec<String>,
    sub_sizes: Vec<usize>,
    fan_sizes: Vec<usize>,
    payload: usize,
    big_payload: usize,
    big_subs: usize,
    mem_subs: usize,
    warmup: f64,
    measure: f64,
    ack_window: u64,
    e2e_window: u64,
    sub_timeout: f64,
    echo_seconds: f64,
    topics: usize,
    /// `--topic-ttl` for the topics gateway (None: the binary lacks the flag).
    topic_ttl: Option<String>,
    ttl_wait: f64,
    /// Extra gateway flags for every gateway (e.g. `--presence-max-members 1000`).
    gateway_args: Vec<String>,
    server_cpu: usize,
    client_cpu: usize,
    quiet_wait: f64,
    concurrency: usize,
    /// Other servers measured in the same rounds (`--peer NAME=PATH`): each
    /// is started like wsgate (same flags, pinned the same way) and must
    /// print the same `event=listening listen=… admin=…` line. They run the
    /// scenarios subscribe, cpu (with echo) and memory, after wsgate in every
    /// round; not topics (it reads wsgate's `wsgate_topics` gauge and
    /// `--topic-ttl`).
    peers: Vec<(String, PathBuf)>,
    /// Server log names under `--out`/logs start with this.
    log_tag: String,
}

const USAGE: &str = "\
usage: fanout scale --wsgate PATH [--loadgen PATH] [--out DIR] [--rounds 3]
         [--scenarios subscribe,cpu,memory,topics] [--sub-sizes 5000,15000]
         [--fan-sizes 1000,5000,15000] [--payload 32] [--big-payload 1024] [--big-subs 5000]
         [--mem-subs 5000] [--warmup 1] [--measure 3] [--ack-window 32] [--e2e-window 32]
         [--sub-timeout 150] [--echo-seconds 2] [--topics 30000] [--topic-ttl 5s]
         [--ttl-wait 7] [--gateway-arg FLAG]... [--server-cpu 0] [--client-cpu 1]
         [--quiet-wait 60] [--concurrency 64] [--peer NAME=PATH]...";

fn parse(args: impl Iterator<Item = String>) -> ScaleOpts {
    let mut o = ScaleOpts {
        wsgate: PathBuf::from("target/release/wsgate"),
        loadgen: None,
        out: None,
        rounds: 3,
        scenarios: ["subscribe", "cpu", "memory", "topics"]
            .map(String::from)
            .to_vec(),
        sub_sizes: vec![5000, 15000],
        fan_sizes: vec![1000, 5000, 15000],
        payload: 32,
        big_payload: 1024,
        big_subs: 5000,
        mem_subs: 5000,
        warmup: 1.0,
        measure: 3.0,
        ack_window: 32,
        e2e_window: 32,
        sub_timeout: 150.0,
        echo_seconds: 2.0,
        topics: 30000,
        topic_ttl: None,
        ttl_wait: 7.0,
        gateway_args: Vec::new(),
        server_cpu: 0,
        client_cpu: 1,
        quiet_wait: 60.0,
        concurrency: 64,
        peers: Vec::new(),
        log_tag: "scale".into(),
    };
    let bad = || -> ! {
        eprintln!("{USAGE}");
        std::process::exit(2)
    };
    let list = |v: &str| -> Vec<usize> {
        v.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse().unwrap_or_else(|_| bad()))
            .collect()
    };
    let mut args = args.peekable();
    while let Some(flag) = args.next() {
        let v = args.next().unwrap_or_else(|| bad());
        let num = |v: &str| -> usize { v.parse().unwrap_or_else(|_| bad()) };
        let float = |v: &str| -> f64 { v.parse().unwrap_or_else(|_| bad()) };
        match flag.as_str() {
            "--wsgate" => o.wsgate = v.into(),
            "--loadgen" => o.loadgen = Some(v.into()),
            "--out" => o.out = Some(v.into()),
            "--rounds" => o.rounds = num(&v).max(1),
            "--scenarios" => {
                o.scenarios = v
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            }
            "--sub-sizes" => o.sub_sizes = list(&v),
            "--fan-sizes" => o.fan_sizes = list(&v),
            "--payload" => o.payload = num(&v),
            "--big-payload" => o.big_payload = num(&v),
            "--big-subs" => o.big_subs = num(&v),
            "--mem-subs" => o.mem_subs = num(&v),
            "--warmup" => o.warmup = float(&v),
            "--measure" => o.measure = float(&v),
            "--ack-window" => o.ack_window = num(&v).max(1) as u64,
            "--e2e-window" => o.e2e_window = num(&v).max(1) as u64,
            "--sub-timeout" => o.sub_timeout = float(&v),
            "--echo-seconds" => o.echo_seconds = float(&v),
            "--topics" => o.topics = num(&v),
            "--topic-ttl" => o.topic_ttl = (!v.is_empty()).then_some(v),
            "--ttl-wait" => o.ttl_wait = float(&v),
            "--gateway-arg" => o.gateway_args.push(v),
            "--server-cpu" => o.server_cpu = num(&v),
            "--client-cpu" => o.client_cpu = num(&v),
            "--quiet-wait" => o.quiet_wait = float(&v),
            "--concurrency" => o.concurrency = num(&v).max(1),
            "--peer" => {
                let Some((name, path)) = v.split_once('=') else {
                    bad()
                };
                o.peers.push((name.to_string(), path.into()));
            }
            _ => bad(),
        }
    }
    for s in &o.scenarios {
        if !["subscribe", "cpu", "memory", "topics"].contains(&s.as_str()) {
            eprintln!("fanout scale: unknown scenario {s:?}");
            bad();
        }
    }
    o
}

/// Scenarios a peer runs (see `ScaleOpts::peers`).
const PEER_SCENARIOS: [&str; 3] = ["subscribe", "cpu", "memory"];

impl ScaleOpts {
    /// The options to measure peer `path` with: the same sizes and pinning,
    /// no extra gateway flags, no topics scenario.
    fn for_peer(&self, name: &str, path: &std::path::Path) -> ScaleOpts {
        let mut p = self.clone();
        p.log_tag = format!("scale-{name}");
        p.wsgate = path.to_path_buf();
        p.gateway_args.clear();
        p.topic_ttl = None;
        p.scenarios.retain(|s| PEER_SCENARIOS.contains(&s.as_str()));
        p.peers.clear();
        p
    }
    fn want(&self, s: &str) -> bool {
        self.scenarios.iter().any(|x| x == s)
    }
    /// Subscriber counts to populate, ascending.
    fn populations(&self) -> Vec<usize> {
        let mut v = Vec::new();
        if self.want("subscribe") {
            v.extend(&self.sub_sizes);
        }
        if self.want("cpu") {
            v.extend(&self.fan_sizes);
            if self.big_payload > 0 && self.big_subs > 0 {
                v.push(self.big_subs);
            }
        }
        if self.want("memory") && self.mem_subs > 0 {
            v.push(self.mem_subs);
        }
        v.sort_unstable();
        v.dedup();
        v
    }
    /// Fan-out payload sizes to run at N subscribers.
    fn fan_payloads(&self, n: usize) -> Vec<usize> {
        let mut v = Vec::new();
        if (self.want("cpu") && self.fan_sizes.contains(&n))
            || (self.want("memory") && n == self.mem_subs)
        {
            v.push(self.payload);
        }
        if self.want("cpu") && self.big_payload > 0 && n == self.big_subs {
            v.push(self.big_payload);
        }
        v
    }
}

// ---------------------------------------------------------------------------
// /proc: per-CPU busy time, the gateway's and this process's CPU, RSS

/// (busy = user + nice + system, steal) ticks of one CPU. Interrupt and
/// softirq time is left out: the loopback traffic of the gateway and the
/// client is never taken for somebody else's.
fn cpu_busy(cpu: usize) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let name = format!("cpu{cpu} ");
    let Some(line) = stat.lines().find(|l| l.starts_with(&name)) else {
        return (0, 0);
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    (get(0) + get(1) + get(2), get(7))
}

#[derive(Clone)]
struct Snap {
    t: Instant,
    srv: (u64, u64),
    srv_ns: u64,
    cli: u64,
    cpus: [(u64, u64); 2],
}

fn snap(o: &ScaleOpts, pid: Option<u32>) -> Snap {
    let (u, s) = pid.map_or((0, 0), |p| stat_user_sys(&format!("/proc/{p}/stat")));
    Snap {
        t: Instant::now(),
        srv: (u, s),
        srv_ns: pid.map_or(0, sched_ns),
        cli: stat_ticks("/proc/self/stat"),
        cpus: [cpu_busy(o.server_cpu), cpu_busy(o.client_cpu)],
    }
}

/// A measured window.
#[derive(Clone, Copy, Default, Debug)]
struct Win {
    secs: f64,
    /// Gateway utime + stime, seconds.
    srv_s: f64,
    srv_sys_s: f64,
    /// Gateway CPU by task schedstat (ns clock), seconds.
    srv_sched_s: f64,
    /// This process (the load generator), seconds.
    cli_s: f64,
    /// % of the gateway's CPU busy with anything but the gateway.
    foreign_srv_pct: f64,
    /// % of the load generator's CPU busy with anything but the load generator.
    foreign_cli_pct: f64,
    steal_pct: f64,
}

impl Win {
    fn foreign(&self) -> f64 {
        self.foreign_srv_pct
            .max(self.foreign_cli_pct)
            .max(self.steal_pct)
    }
}

fn win(a: &Snap, b: &Snap) -> Win {
    let tck = clk_tck();
    let secs = (b.t - a.t).as_secs_f64();
    let ticks = (secs * tck).max(1.0);
    let srv = (b.srv.0 + b.srv.1).saturating_sub(a.srv.0 + a.srv.1);
    let cli = b.cli.saturating_sub(a.cli);
    let busy0 = b.cpus[0].0.saturating_sub(a.cpus[0].0);
    let busy1 = b.cpus[1].0.saturating_sub(a.cpus[1].0);
    let steal = b.cpus[0]
        .1
        .saturating_sub(a.cpus[0].1)
        .max(b.cpus[1].1.saturating_sub(a.cpus[1].1));
    Win {
        secs,
        srv_s: srv as f64 / tck,
        srv_sys_s: b.srv.1.saturating_sub(a.srv.1) as f64 / tck,
        srv_sched_s: b.srv_ns.saturating_sub(a.srv_ns) as f64 / 1e9,
        cli_s: cli as f64 / tck,
        foreign_srv_pct: busy0.saturating_sub(srv) as f64 / ticks * 100.0,
        foreign_cli_pct: busy1.saturating_sub(cli) as f64 / ticks * 100.0,
        steal_pct: steal as f64 / ticks * 100.0,
    }
}

/// Resident memory of `pid` in bytes (VmRSS).
fn rss(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib * 1024.0)
}

/// A gauge or counter by exact name (no labels), if the gateway exports it.
fn gauge(admin: SocketAddr, name: &str) -> Option<f64> {
    let text = metrics(admin).ok()?;
    text.lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Waits (up to `quiet_wait` s) until no other process takes more than 5 %
/// of either CPU; returns the last share seen.
async fn wait_quiet(o: &ScaleOpts, pid: Option<u32>) -> f64 {
    let until = Instant::now() + Duration::from_secs_f64(o.quiet_wait);
    let mut said = false;
    loop {
        let a = snap(o, pid);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let w = win(&a, &snap(o, pid));
        let f = w.foreign();
        if f <= DISTURBED_PCT || Instant::now() > until {
            if said || f > DISTURBED_PCT {
                eprintln!("   other processes take {f:.0} % of a CPU; going on");
            }
            return f;
        }
        if !said {
            eprintln!("   waiting for other processes to leave the CPUs ({f:.0} % of a CPU)");
            said = true;
        }
    }
}

fn pin_self(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the pointer and size
    // describe it for the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("fanout scale: could not pin the load generator to CPU {cpu}");
        }
    }
}

// ---------------------------------------------------------------------------
// The gateway

struct Gateway {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    pid: u32,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // SIGKILL: a drain would take up to --drain-timeout.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(o: &ScaleOpts, extra: &[String], log: &str) -> Result<Gateway, String> {
    let mut args: Vec<String> = [
        "-c",
        &o.server_cpu.to_string(),
        o.wsgate.to_str().unwrap_or("wsgate"),
        "--cores",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--cookie-secure",
        "false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(o.gateway_args.iter().cloned());
    args.extend(extra.iter().cloned());
    let mut child = Command::new("taskset")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("taskset {}: {e}", o.wsgate.display()))?;
    let stderr = child.stderr.take().expect("piped stderr");
    let log = o.out.as_ref().map(|d| d.join("logs").join(log));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut file = log.and_then(|p| std::fs::File::create(p).ok());
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(f) = file.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if line.contains(" event=listening ") {
                let field = |k: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(k))
                        .and_then(|v| v.parse::<SocketAddr>().ok())
                };
                if let (Some(tx), Some(l), Some(a)) = (tx.take(), field("listen="), field("admin="))
                {
                    let _ = tx.send((l, a));
                }
            }
        }
    });
    let pid = child.id();
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok((addr, admin)) => Ok(Gateway {
            child,
            addr,
            admin,
            pid,
        }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "{} did not report listening within 10 s (args: {args:?})",
                o.wsgate.display()
            ))
        }
    }
}

// ---------------------------------------------------------------------------
// A population of subscribers (one topic), all on this thread

#[derive(Default)]
struct Slot {
    /// The sequence number in its `ok sub` (UNSET before).
    base: Cell<u64>,
    last: Cell<u64>,
    got: Cell<u64>,
    bad: Cell<u64>,
    alive: Cell<bool>,
    hello: Cell<bool>,
    subscribed: Cell<bool>,
}

#[derive(Default)]
struct Pop {
    slots: Vec<Slot>,
    streams: RefCell<Vec<Option<Rc<TcpStream>>>>,
    tasks: RefCell<Vec<JoinHandle<()>>>,
    hellos: Cell<usize>,
    ok_subs: Cell<usize>,
    /// Live and subscribed.
    live_subscribed: Cell<usize>,
    last_ok: Cell<Option<Instant>>,
    msgs: Cell<u64>,
    presence: Cell<u64>,
    frames: Cell<u64>,
    /// Connections the server closed (close frame or end of stream) or that
    /// failed, while the harness was not stopping.
    cut: Cell<u64>,
    cut_before_ok: Cell<usize>,
    stopping: Cell<bool>,
    payload: Cell<usize>,
    err_count: Cell<u64>,
    errors: RefCell<Vec<String>>,
}

impl Pop {
    fn new(n: usize) -> Rc<Pop> {
        Rc::new(Pop {
            slots: (0..n)
                .map(|_| Slot {
                    base: Cell::new(UNSET),
                    ..Default::default()
                })
                .collect(),
            streams: RefCell::new(vec![None; n]),
            ..Default::default()
        })
    }
    fn error(&self, e: String) {
        self.err_count.set(self.err_count.get() + 1);
        let mut v = self.errors.borrow_mut();
        if v.len() < 5 {
            v.push(e);
        }
    }
    fn error_summary(&self) -> String {
        let n = self.err_count.get();
        if n == 0 {
            return "no errors".into();
        }
        format!("{n} error(s): {}", self.errors.borrow().join("; "))
    }
}

async fn member(pop: Rc<Pop>, i: usize, stream: Rc<TcpStream>, mut pending: Vec<u8>) {
    let slot = &pop.slots[i];
    slot.alive.set(true);
    let pong = client_frame(OP_PONG, &[]);
    let msg_prefix = format!("msg {TOPIC} ");
    let ok_prefix = format!("ok sub {TOPIC} ");
    let mut first = true;
    let end: Result<(), String> = loop {
        if !first && stream.readable().await.is_err() {
            break Err("socket error".into());
        }
        let (mut msgs, mut presence, mut frames, mut ping) = (0u64, 0u64, 0u64, false);
        let mut on_frame = |op: u8, p: &[u8]| -> Result<(), String> {
            frames += 1;
            match op {
                OP_TEXT => {}
                OP_PING => {
                    ping = true;
                    return Ok(());
                }
                _ => return Ok(()),
            }
            if let Some(rest) = p.strip_prefix(msg_prefix.as_bytes()) {
                let Some((seq, payload)) = parse_seq(rest) else {
                    return Err(format!("bad msg {}", show(p)));
                };
                if slot.base.get() == UNSET {
                    return Err(format!("msg {seq} before ok sub"));
                }
                if seq != slot.last.get() + 1 {
                    slot.bad.set(slot.bad.get() + 1);
                    pop.error(format!(
                        "subscriber {i}: seq {seq} after {}",
                        slot.last.get()
                    ));
                }
                if payload.len() != pop.payload.get() {
                    slot.bad.set(slot.bad.get() + 1);
                    pop.error(format!("subscriber {i}: payload {} B", payload.len()));
                }
                slot.last.set(seq);
                slot.got.set(slot.got.get() + 1);
                msgs += 1;
            } else if p.starts_with(b"join ") || p.starts_with(b"leave ") {
                presence += 1;
            } else if let Some(rest) = p.strip_prefix(ok_prefix.as_bytes()) {
                let Some((seq, _)) = parse_seq(rest) else {
                    return Err(format!("bad ok {}", show(p)));
                };
                if slot.subscribed.replace(true) {
                    return Err("a second ok sub".into());
                }
                slot.base.set(seq);
                slot.last.set(seq);
                pop.ok_subs.set(pop.ok_subs.get() + 1);
                pop.live_subscribed.set(pop.live_subscribed.get() + 1);
                pop.last_ok.set(Some(Instant::now()));
            } else if p.starts_with(b"hello ") {
                if !slot.hello.replace(true) {
                    pop.hellos.set(pop.hellos.get() + 1);
                }
            } else {
                return Err(format!("unexpected {}", show(p)));
            }
            Ok(())
        };
        let r = if first {
            first = false;
            parse_frames(&pending, &mut on_frame).map(|used| {
                pending.drain(..used);
                false
            })
        } else {
            drain_socket(&stream, &mut pending, &mut on_frame)
        };
        pop.msgs.set(pop.msgs.get() + msgs);
        pop.presence.set(pop.presence.get() + presence);
        pop.frames.set(pop.frames.get() + frames);
        if ping {
            let _ = stream.try_write(&pong);
        }
        match r {
            Ok(false) => {}
            Ok(true) => break Err("end of stream".into()),
            Err(e) => break Err(e),
        }
    };
    slot.alive.set(false);
    if slot.subscribed.get() {
        pop.live_subscribed
            .set(pop.live_subscribed.get().saturating_sub(1));
    }
    if pop.stopping.get() {
        return;
    }
    let e = end.unwrap_err();
    pop.cut.set(pop.cut.get() + 1);
    if !slot.subscribed.get() {
        pop.cut_before_ok.set(pop.cut_before_ok.get() + 1);
    }
    slot.bad.set(slot.bad.get() + 1);
    pop.error(format!("subscriber {i}: {e}"));
}

/// Connects `n` clients (`concurrency` handshakes at a time) and waits for
/// every `hello`.
async fn connect_all(o: &ScaleOpts, pop: &Rc<Pop>, addr: SocketAddr) -> Result<(), String> {
    let n = pop.slots.len();
    let mut set = JoinSet::new();
    let mut next = 0;
    while next < n || !set.is_empty() {
        while next < n && set.len() < o.concurrency {
            let i = next;
            set.spawn_local(async move { ws_connect(addr, None).await.map(|(s, p, _)| (i, s, p)) });
            next += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok((i, stream, pending)))) => {
                let stream = Rc::new(stream);
                pop.streams.borrow_mut()[i] = Some(stream.clone());
                let h = tokio::task::spawn_local(member(pop.clone(), i, stream, pending));
                pop.tasks.borrow_mut().push(h);
            }
            Some(Ok(Err(e))) => return Err(format!("connect: {e}")),
            Some(Err(e)) => return Err(format!("connect task: {e}")),
            None => {}
        }
    }
    let until = Instant::now() + Duration::from_secs(30);
    while pop.hellos.get() < n {
        if pop.err_count.get() > 0 {
            return Err(pop.error_summary());
        }
        if Instant::now() > until {
            return Err(format!("{} of {n} got hello within 30 s", pop.hellos.get()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Ends a population: no TIME_WAIT left behind (SO_LINGER 0), tasks gone.
async fn teardown(pop: &Rc<Pop>) {
    pop.stopping.set(true);
    for s in pop.streams.borrow().iter().flatten() {
        set_linger_zero(s.as_raw_fd());
    }
    let tasks: Vec<JoinHandle<()>> = pop.tasks.borrow_mut().drain(..).collect();
    for h in tasks {
        h.abort();
        let _ = h.await;
    }
    pop.streams.borrow_mut().clear();
}

/// Waits until `count` stops moving for `quiet`, at most `timeout`; returns
/// when it last moved.
async fn settle(count: impl Fn() -> u64, quiet: Duration, timeout: Duration) -> Instant {
    let start = Instant::now();
    let mut last = count();
    let mut moved = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = count();
        if now != last {
            last = now;
            moved = Instant::now();
        } else if moved.elapsed() >= quiet || start.elapsed() > timeout {
            return moved;
        }
    }
}

/// A client connection other than a subscriber (the publisher).
struct Client {
    stream: TcpStream,
    pending: Vec<u8>,
}

async fn client_connect(addr: SocketAddr) -> Result<Client, String> {
    let (stream, pending, _) = ws_connect(addr, None).await?;
    let pending = read_until(&stream, pending, Duration::from_secs(20), |op, p| {
        Ok(op == OP_TEXT && p.starts_with(b"hello "))
    })
    .await?;
    Ok(Client { stream, pending })
}

impl Client {
    /// Closes with 1000 (the session ends at once) and waits briefly for the
    /// server's close.
    async fn close(mut self) {
        let close = client_frame(OP_CLOSE, &1000u16.to_be_bytes());
        let _ = self.stream.write_all(&close).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let mut buf = Vec::new();
            while let Ok(n) = read_some(&self.stream, &mut buf).await {
                if n == 0 {
                    break;
                }
                buf.clear();
            }
        })
        .await;
        set_linger_zero(self.stream.as_raw_fd());
    }
}

/// Reads (and answers pings) for `dur`.
async fn idle(c: &mut Client, dur: Duration) -> Result<(), String> {
    let until = tokio::time::Instant::now() + dur;
    let pong = client_frame(OP_PONG, &[]);
    loop {
        let mut ping = false;
        let eof = drain_socket(&c.stream, &mut c.pending, |op, _| {
            ping |= op == OP_PING;
            Ok(())
        })?;
        if ping {
            let _ = c.stream.try_write(&pong);
        }
        if eof {
            return Err("server closed the connection".into());
        }
        tokio::select! {
            r = c.stream.readable() => r.map_err(|e| format!("read: {e}"))?,
            _ = tokio::time::sleep_until(until) => return Ok(()),
        }
    }
}

/// What one publisher run did.
#[derive(Default)]
struct PubState {
    stop: Cell<bool>,
    published: Cell<u64>,
    acked: Cell<u64>,
    last_seq: Cell<u64>,
}

/// Publishes `frame` to `topic` while `ps.stop` is unset, keeping at most
/// `ack_window` publishes unacknowledged and at most `e2e_window` messages
/// ahead of the average live subscriber; then waits for the last acks.
async fn publish_loop(
    o: &ScaleOpts,
    c: &mut Client,
    pop: &Pop,
    ps: &PubState,
    frame: &[u8],
) -> Result<(), String> {
    let ack_prefix = format!("ok pub {TOPIC} ");
    let before = pop.msgs.get();
    let mut out = Vec::new();
    let pong = client_frame(OP_PONG, &[]);
    loop {
        let (mut acked, mut last, mut ping) = (ps.acked.get(), ps.last_seq.get(), false);
        let eof = drain_socket(&c.stream, &mut c.pending, |op, p| {
            if op == OP_PING {
                ping = true;
            }
            if op != OP_TEXT {
                return Ok(());
            }
            let Some(rest) = p.strip_prefix(ack_prefix.as_bytes()) else {
                return Err(format!("publisher got {}", show(p)));
            };
            let Some((seq, _)) = parse_seq(rest) else {
                return Err(format!("bad ack {}", show(p)));
            };
            if seq <= last {
                return Err(format!("ack {seq} after {last}"));
            }
            last = seq;
            acked += 1;
            Ok(())
        })?;
        if ping {
            let _ = c.stream.try_write(&pong);
        }
        if eof {
            return Err("publisher: server closed the connection".into());
        }
        ps.acked.set(acked);
        ps.last_seq.set(last);
        let published = ps.published.get();
        let stopping = ps.stop.get();
        if stopping && acked == published {
            return Ok(());
        }
        let subs = pop.live_subscribed.get().max(1) as u64;
        let allowed = if stopping {
            published
        } else {
            (acked + o.ack_window).min((pop.msgs.get() - before) / subs + o.e2e_window)
        };
        if published < allowed {
            out.clear();
            for _ in published..allowed {
                out.extend_from_slice(frame);
            }
            c.stream
                .write_all(&out)
                .await
                .map_err(|e| format!("publish: {e}"))?;
            ps.published.set(allowed);
            continue;
        }
        tokio::select! {
            r = c.stream.readable(), if published > acked => r.map_err(|e| format!("publisher: {e}"))?,
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Steps and their results

#[derive(Clone, Debug, Default)]
struct SubResult {
    n: usize,
    /// First `sub` written → last `ok sub` read (None: not all within the timeout).
    secs: Option<f64>,
    ok: usize,
    cut: u64,
    presence: u64,
    /// First `sub` written → presence traffic settled.
    settle_secs: f64,
    srv_cpu_s: f64,
    win: Win,
    rss_start: f64,
    rss_connected: f64,
    rss_subscribed: f64,
    /// 5 s after `rss_subscribed` (memory population only).
    rss_subscribed_later: Option<f64>,
}

#[derive(Clone, Debug, Default)]
struct FanResult {
    n: usize,
    payload: usize,
    deliveries_s: f64,
    publishes_s: f64,
    us_per_delivery: f64,
    us_per_delivery_sched: f64,
    win: Win,
    subs_ok: usize,
    live: usize,
    published: u64,
    cut: u64,
    errors: String,
    /// RSS right before the run, and 1 s after every subscriber had it all.
    rss_before: f64,
    rss_after: f64,
    /// 5 s after the burst drained (memory population only).
    rss_after_later: Option<f64>,
    drain_secs: f64,
}

#[derive(Clone, Debug, Default)]
struct EchoResult {
    msgs_s: f64,
    us_per_msg: f64,
    foreign: f64,
    line: String,
}

#[derive(Clone, Debug, Default)]
struct TopicResult {
    topics: usize,
    acked: u64,
    rss_start: f64,
    rss_published: f64,
    rss_end: f64,
    gauge_published: Option<f64>,
    gauge_end: Option<f64>,
    publish_secs: f64,
    win: Win,
}

#[derive(Default)]
struct Round {
    subs: Vec<Result<SubResult, String>>,
    fans: Vec<Result<FanResult, String>>,
    echo: Option<Result<EchoResult, String>>,
    topics: Option<Result<TopicResult, String>>,
}

impl Round {
    /// The subscribe step of `n` subscribers, if it succeeded.
    fn sub(&self, n: usize) -> Option<SubResult> {
        (self.subs.iter().filter_map(|x| x.as_ref().ok()))
            .find(|x| x.n == n)
            .cloned()
    }

    /// The fan-out step of `n` subscribers and `payload` bytes, if it succeeded.
    fn fan(&self, n: usize, payload: usize) -> Option<FanResult> {
        (self.fans.iter().filter_map(|x| x.as_ref().ok()))
            .find(|x| x.n == n && x.payload == payload)
            .cloned()
    }
}

/// One population: connect, subscribe (timed), then the fan-out runs.
async fn population(o: &ScaleOpts, n: usize, round: usize, r: &mut Round) -> Result<bool, String> {
    eprintln!("== round {round}: {n} subscribers");
    let gw = start_gateway(o, &[], &format!("{}-{round}-subs-{n}.log", o.log_tag))?;
    let pop = Pop::new(n);
    let res = population_steps(o, n, &gw, &pop, r).await;
    // The gateway goes first, so the client sockets are not left in TIME_WAIT.
    drop(gw);
    teardown(&pop).await;
    res
}

async fn population_steps(
    o: &ScaleOpts,
    n: usize,
    gw: &Gateway,
    pop: &Rc<Pop>,
    r: &mut Round,
) -> Result<bool, String> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_start = rss(gw.pid);
    let t = Instant::now();
    connect_all(o, pop, gw.addr).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_connected = rss(gw.pid);
    eprintln!(
        "   connected in {:.1} s; RSS {:.1} → {:.1} MiB",
        t.elapsed().as_secs_f64(),
        rss_start / 1048576.0,
        rss_connected / 1048576.0
    );
    wait_quiet(o, Some(gw.pid)).await;
    // Everybody subscribes at once.
    let sub = client_frame(OP_TEXT, format!("sub {TOPIC}").as_bytes());
    let a = snap(o, Some(gw.pid));
    let t0 = Instant::now();
    let streams: Vec<Rc<TcpStream>> = pop.streams.borrow().iter().flatten().cloned().collect();
    for s in &streams {
        match s.try_write(&sub) {
            Ok(k) if k == sub.len() => {}
            _ => {
                // Rare on a fresh socket; the member task reads meanwhile.
                let mut at = 0;
                while at < sub.len() {
                    let _ = s.writable().await;
                    match s.try_write(&sub[at..]) {
                        Ok(k) => at += k,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            pop.error(format!("write sub: {e}"));
                            break;
                        }
                    }
                }
            }
        }
    }
    drop(streams);
    let sent = t0.elapsed().as_secs_f64();
    let deadline = t0 + Duration::from_secs_f64(o.sub_timeout);
    let mut last_note = Instant::now();
    let finished = loop {
        if pop.ok_subs.get() + pop.cut_before_ok.get() >= n {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        if last_note.elapsed() > Duration::from_secs(10) {
            last_note = Instant::now();
            eprintln!(
                "   {:.0} s: {} of {n} subscribed, {} cut, {} presence lines",
                t0.elapsed().as_secs_f64(),
                pop.ok_subs.get(),
                pop.cut.get(),
                pop.presence.get()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let secs = finished
        .then(|| pop.last_ok.get().map(|t| (t - t0).as_secs_f64()))
        .flatten()
        .filter(|_| pop.ok_subs.get() == n);
    let settled = if finished {
        settle(
            || pop.frames.get(),
            Duration::from_millis(400),
            Duration::from_secs(60),
        )
        .await
    } else {
        Instant::now()
    };
    let b = snap(o, Some(gw.pid));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_subscribed = rss(gw.pid);
    let rss_subscribed_later = if o.want("memory") && n == o.mem_subs && finished {
        tokio::time::sleep(Duration::from_secs(4)).await;
        Some(rss(gw.pid))
    } else {
        None
    };
    let w = win(&a, &b);
    let res = SubResult {
        n,
        secs,
        ok: pop.ok_subs.get(),
        cut: pop.cut.get(),
        presence: pop.presence.get(),
        settle_secs: (settled - t0).as_secs_f64(),
        srv_cpu_s: w.srv_s,
        win: w,
        rss_start,
        rss_connected,
        rss_subscribed,
        rss_subscribed_later,
    };
    eprintln!(
        "   subscribe: {} (all {n} `sub` written in {:.3} s); {}/{n} ok, {} cut, {} presence lines, \
         settled at {:.2} s, server CPU {:.2} s; RSS {:.1} MiB ({:.0} B/session); other {:.0} %",
        secs.map_or(format!("NOT DONE within {:.0} s", o.sub_timeout), |s| format!("{s:.3} s")),
        sent,
        res.ok,
        res.cut,
        res.presence,
        res.settle_secs,
        res.srv_cpu_s,
        res.rss_subscribed / 1048576.0,
        (res.rss_subscribed - rss_start) / n as f64,
        w.foreign()
    );
    r.subs.push(Ok(res));
    if !finished {
        return Ok(false);
    }
    for payload in o.fan_payloads(n) {
        wait_quiet(o, Some(gw.pid)).await;
        let f = fan_run(o, n, payload, gw, pop).await;
        match &f {
            Ok(f) => eprintln!(
                "   fan-out {n} × {payload} B: {:.0} deliveries/s, {:.3} µs server CPU/delivery \
                 ({:.3} schedstat), server {:.2} + client {:.2} cores, other {:.0} %; \
                 {}/{} subscribers ok, {} cut, drained {:.2} s after the last ack; \
                 left after the burst {:.0} B/subscriber; {}",
                f.deliveries_s,
                f.us_per_delivery,
                f.us_per_delivery_sched,
                f.win.srv_s / f.win.secs,
                f.win.cli_s / f.win.secs,
                f.win.foreign(),
                f.subs_ok,
                n,
                f.cut,
                f.drain_secs,
                (f.rss_after - f.rss_before) / n as f64,
                f.errors
            ),
            Err(e) => eprintln!("   fan-out {n} × {payload} B FAILED: {e}"),
        }
        let failed = f.is_err();
        r.fans.push(f);
        if failed {
            break;
        }
    }
    Ok(true)
}

async fn fan_run(
    o: &ScaleOpts,
    n: usize,
    payload: usize,
    gw: &Gateway,
    pop: &Rc<Pop>,
) -> Result<FanResult, String> {
    let mut c = client_connect(gw.addr).await?;
    let body: Vec<u8> = format!("pub {TOPIC} ")
        .into_bytes()
        .into_iter()
        .chain((0..payload).map(|i| b'a' + (i % 26) as u8))
        .collect();
    let frame = client_frame(OP_TEXT, &body);
    pop.payload.set(payload);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss(gw.pid);
    let cut0 = pop.cut.get();
    let ps = PubState::default();
    let timing = async {
        tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
        let a = (snap(o, Some(gw.pid)), pop.msgs.get(), ps.acked.get());
        tokio::time::sleep(Duration::from_secs_f64(o.measure)).await;
        let b = (snap(o, Some(gw.pid)), pop.msgs.get(), ps.acked.get());
        ps.stop.set(true);
        (a, b)
    };
    let (pubres, ((a, ma, pa), (b, mb, pb))) =
        tokio::join!(publish_loop(o, &mut c, pop, &ps, &frame), timing);
    pubres?;
    let w = win(&a, &b);
    let deliveries = (mb - ma) as f64;
    let final_seq = ps.last_seq.get();
    // Every live subscriber must reach the last acknowledged message.
    let t = Instant::now();
    while !pop
        .slots
        .iter()
        .all(|s| !s.alive.get() || s.last.get() >= final_seq || s.bad.get() > 0)
    {
        if t.elapsed() > Duration::from_secs(30) {
            pop.error("timed out waiting for the last deliveries".into());
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let drain_secs = t.elapsed().as_secs_f64();
    c.close().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss(gw.pid);
    let rss_after_later = if o.want("memory") && n == o.mem_subs {
        tokio::time::sleep(Duration::from_secs(4)).await;
        Some(rss(gw.pid))
    } else {
        None
    };
    let subs_ok = pop
        .slots
        .iter()
        .filter(|s| {
            let base = s.base.get();
            s.alive.get()
                && base != UNSET
                && s.bad.get() == 0
                && s.last.get() == final_seq
                && s.got.get() == final_seq - base
        })
        .count();
    if subs_ok < n && pop.err_count.get() == 0 {
        pop.error(format!(
            "{} subscriber(s) did not get every message up to {final_seq}",
            n - subs_ok
        ));
    }
    Ok(FanResult {
        n,
        payload,
        deliveries_s: deliveries / w.secs,
        publishes_s: pb.saturating_sub(pa) as f64 / w.secs,
        us_per_delivery: w.srv_s * 1e6 / deliveries,
        us_per_delivery_sched: w.srv_sched_s * 1e6 / deliveries,
        win: w,
        subs_ok,
        live: pop.live_subscribed.get(),
        published: ps.acked.get(),
        cut: pop.cut.get() - cut0,
        errors: pop.error_summary(),
        rss_before,
        rss_after,
        rss_after_later,
        drain_secs,
    })
}

/// Echo pipelined-32 through `loadgen run` against a gateway with `--echo-path /echo`.
async fn echo(o: &ScaleOpts, round: usize) -> Result<EchoResult, String> {
    let loadgen = o
        .loadgen
        .as_ref()
        .ok_or("no --loadgen: the echo reference needs it")?;
    eprintln!("== round {round}: echo pipelined-32");
    let extra = ["--echo-path", "/echo", "--max-message-size", "16MiB"].map(String::from);
    let gw = start_gateway(o, &extra, &format!("{}-{round}-echo.log", o.log_tag))?;
    wait_quiet(o, Some(gw.pid)).await;
    // Blocking is fine here: no subscriber is connected meanwhile. The child
    // inherits this process's CPU (the load generator's).
    let out = Command::new(loadgen)
        .args([
            "run",
            "--addr",
            &gw.addr.to_string(),
            "--scenario",
            "pipelined-32",
            "--pid",
            &gw.pid.to_string(),
            "--warmup",
            "0.5",
            "--seconds",
            &o.echo_seconds.to_string(),
        ])
        .output()
        .map_err(|e| format!("{}: {e}", loadgen.display()))?;
    drop(gw);
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        return Err(format!(
            "loadgen: {} {}",
            line,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let r = EchoResult {
        msgs_s: field("msgs"),
        us_per_msg: field("cpu"),
        foreign: field("foreign_server_pct")
            .max(field("foreign_client_pct"))
            .max(field("steal_pct")),
        line: line.clone(),
    };
    eprintln!(
        "   echo: {:.0} msgs/s, {:.3} µs server CPU/msg, other {:.0} % ({})",
        r.msgs_s, r.us_per_msg, r.foreign, r.line
    );
    Ok(r)
}

/// Publishes once to `--topics` distinct topics nobody subscribes to, then idles.
async fn topics(o: &ScaleOpts, round: usize) -> Result<TopicResult, String> {
    eprintln!(
        "== round {round}: {} topics published once{}",
        o.topics,
        o.topic_ttl
            .as_ref()
            .map_or(" (the binary has no --topic-ttl)".into(), |t| format!(
                ", --topic-ttl {t}"
            ))
    );
    let extra: Vec<String> = o
        .topic_ttl
        .iter()
        .flat_map(|t| ["--topic-ttl".to_string(), t.clone()])
        .collect();
    let gw = start_gateway(o, &extra, &format!("{}-{round}-topics.log", o.log_tag))?;
    let mut c = client_connect(gw.addr).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_quiet(o, Some(gw.pid)).await;
    let rss_start = rss(gw.pid);
    let payload = b"x";
    let a = snap(o, Some(gw.pid));
    let t0 = Instant::now();
    let (mut published, mut acked) = (0usize, 0u64);
    let mut out = Vec::new();
    while (acked as usize) < o.topics {
        let allowed = (acked as usize + o.ack_window as usize).min(o.topics);
        if published < allowed {
            out.clear();
            for k in published..allowed {
                let mut body = format!("pub topic-{k:06} ").into_bytes();
                body.extend_from_slice(payload);
                out.extend_from_slice(&client_frame(OP_TEXT, &body));
            }
            c.stream
                .write_all(&out)
                .await
                .map_err(|e| format!("publish: {e}"))?;
            published = allowed;
        }
        let pending = std::mem::take(&mut c.pending);
        c.pending = read_until(&c.stream, pending, Duration::from_secs(20), |op, p| {
            if op != OP_TEXT {
                return Ok(false);
            }
            if !p.starts_with(b"ok pub topic-") {
                return Err(format!("publisher got {}", show(p)));
            }
            acked += 1;
            Ok(true)
        })
        .await?;
    }
    let b = snap(o, Some(gw.pid));
    let publish_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_published = rss(gw.pid);
    let gauge_published = gauge(gw.admin, "wsgate_topics");
    // Idle (answering pings) for the topics' time to live and then some.
    idle(&mut c, Duration::from_secs_f64(o.ttl_wait)).await?;
    let rss_end = rss(gw.pid);
    let gauge_end = gauge(gw.admin, "wsgate_topics");
    c.close().await;
    drop(gw);
    let r = TopicResult {
        topics: o.topics,
        acked,
        rss_start,
        rss_published,
        rss_end,
        gauge_published,
        gauge_end,
        publish_secs,
        win: win(&a, &b),
    };
    eprintln!(
        "   RSS {:.1} → {:.1} MiB ({:.0} B/topic) → {:.1} MiB after {:.0} s ({:+.1} % of the start); \
         wsgate_topics {:?} → {:?}",
        rss_start / 1048576.0,
        rss_published / 1048576.0,
        (rss_published - rss_start) / o.topics as f64,
        rss_end / 1048576.0,
        o.ttl_wait,
        (rss_end / rss_start - 1.0) * 100.0,
        gauge_published,
        gauge_end
    );
    Ok(r)
}

// ---------------------------------------------------------------------------
// Report

fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.filter(|x| x.is_finite()).map_or("–".into(), f)
}

/// One table row: label, median, per-round values (None: not measured that round).
fn table_row(out: &mut String, label: &str, vals: &[Option<f64>], f: impl Fn(f64) -> String) {
    let have: Vec<f64> = vals
        .iter()
        .flatten()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    let med = (!have.is_empty()).then(|| median(have));
    let _ = write!(out, "| {label} | **{}** |", fmt_opt(med, &f));
    for v in vals {
        let _ = write!(out, " {} |", fmt_opt(*v, &f));
    }
    out.push('\n');
}

fn text_row(out: &mut String, label: &str, summary: &str, vals: &[String]) {
    let _ = write!(out, "| {label} | **{summary}** |");
    for v in vals {
        let _ = write!(out, " {v} |");
    }
    out.push('\n');
}

fn med(vals: &[Option<f64>]) -> Option<f64> {
    let have: Vec<f64> = vals
        .iter()
        .flatten()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    (!have.is_empty()).then(|| median(have))
}

fn report(o: &ScaleOpts, server: &str, rounds: &[Round]) -> (String, bool) {
    let mut s = String::new();
    let mut all_ok = true;
    let nr = rounds.len();
    let f0 = |x: f64| thousands(x);
    let f2 = |x: f64| format!("{x:.2}");
    let f3 = |x: f64| format!("{x:.3}");
    let mib = |x: f64| format!("{:.1}", x / 1048576.0);
    let _ = writeln!(
        s,
        "### Topics at scale: {server} on CPU {}, load generator on CPU {}\n",
        o.server_cpu, o.client_cpu
    );
    let _ = writeln!(
        s,
        "Medians of {nr} round(s); a fresh gateway per step. Fan-out: {} s warm-up + {} s measured, \
         at most {} publishes unacknowledged and {} messages ahead of the average subscriber; \
         every subscriber checked gap-free and in order to the last acknowledged message.\n",
        o.warmup, o.measure, o.ack_window, o.e2e_window
    );
    s.push_str("| scenario | metric | median |");
    for i in 1..=nr {
        let _ = write!(s, " round {i} |");
    }
    s.push_str("\n|---|---|---:|");
    for _ in 0..nr {
        s.push_str("---:|");
    }
    s.push('\n');
    let sub_of = |r: &Round, n: usize| r.sub(n);
    let fan_of = |r: &Round, n: usize, p: usize| r.fan(n, p);
    let echo_of = |r: &Round| -> Option<EchoResult> { r.echo.clone()?.ok() };
    if o.want("subscribe") {
        for &n in &o.sub_sizes {
            let subs: Vec<Option<SubResult>> = rounds.iter().map(|r| sub_of(r, n)).collect();
            let label = format!("subscribe {}", thousands(n as f64));
            let secs: Vec<String> = subs
                .iter()
                .map(|x| match x {
                    None => "–".into(),
                    Some(x) => x.secs.map_or(
                        format!(
                            "> {:.0} ({} of {} ok)",
                            o.sub_timeout,
                            thousands(x.ok as f64),
                            thousands(n as f64)
                        ),
                        |v| format!("{v:.3}"),
                    ),
                })
                .collect();
            let done: Vec<Option<f64>> = subs
                .iter()
                .map(|x| x.as_ref().and_then(|x| x.secs))
                .collect();
            let summary = if done.iter().all(Option::is_some) && !done.is_empty() {
                f3(med(&done).unwrap_or(f64::NAN))
            } else if done.iter().any(Option::is_some) {
                format!(
                    "{} ({} of {} rounds done)",
                    f3(med(&done).unwrap_or(f64::NAN)),
                    done.iter().flatten().count(),
                    subs.len()
                )
            } else {
                format!("> {:.0}", o.sub_timeout)
            };
            let _ = writeln!(
                s,
                "| {label} | time, first `sub` sent → last `ok sub` (s) | **{summary}** |{}",
                secs.iter().map(|v| format!(" {v} |")).collect::<String>()
            );
            let get = |f: &dyn Fn(&SubResult) -> f64| -> Vec<Option<f64>> {
                subs.iter().map(|x| x.as_ref().map(f)).collect()
            };
            let mut row = |metric: &str, vals: Vec<Option<f64>>, f: &dyn Fn(f64) -> String| {
                let mut line = String::new();
                table_row(&mut line, metric, &vals, f);
                let _ = write!(s, "| {label} {line}");
            };
            // A round that did not finish shows its counts up to the
            // timeout, and no settle time or memory per session.
            let done = |x: &SubResult, v: f64| if x.secs.is_some() { v } else { f64::NAN };
            row(
                "connections cut meanwhile (by the timeout if not done)",
                get(&|x| x.cut as f64),
                &f0,
            );
            row(
                "presence lines received (total; by the timeout if not done)",
                get(&|x| x.presence as f64),
                &f0,
            );
            row(
                "time until presence settled (s)",
                get(&|x| done(x, x.settle_secs)),
                &f2,
            );
            row("server CPU over it (s)", get(&|x| x.srv_cpu_s), &f2);
            row(
                "RSS growth per subscribed session (B)",
                get(&|x| done(x, (x.rss_subscribed - x.rss_start) / n as f64)),
                &f0,
            );
            row(
                "of which the connection (B, before `sub`)",
                get(&|x| (x.rss_connected - x.rss_start) / n as f64),
                &f0,
            );
            all_ok &= subs
                .iter()
                .all(|x| x.as_ref().is_some_and(|x| x.secs.is_some() && x.cut == 0));
        }
    }
    let echo_us: Vec<Option<f64>> = rounds
        .iter()
        .map(|r| echo_of(r).map(|e| e.us_per_msg))
        .collect();
    if o.want("cpu") {
        let mut cases: Vec<(usize, usize)> = o.fan_sizes.iter().map(|&n| (n, o.payload)).collect();
        if o.big_payload > 0 && o.big_subs > 0 {
            cases.push((o.big_subs, o.big_payload));
        }
        for (n, p) in cases {
            let fans: Vec<Option<FanResult>> = rounds.iter().map(|r| fan_of(r, n, p)).collect();
            let label = format!("fan-out {} × {} B", thousands(n as f64), p);
            let get = |f: &dyn Fn(&FanResult) -> f64| -> Vec<Option<f64>> {
                fans.iter().map(|x| x.as_ref().map(f)).collect()
            };
            let mut row = |metric: &str, vals: Vec<Option<f64>>, f: &dyn Fn(f64) -> String| {
                let mut line = String::new();
                table_row(&mut line, metric, &vals, f);
                let _ = write!(s, "| {label} {line}");
            };
            let cpu = get(&|x| x.us_per_delivery);
            row("server CPU per delivery (µs)", cpu.clone(), &f3);
            row(
                "server CPU per delivery, schedstat (µs)",
                get(&|x| x.us_per_delivery_sched),
                &f3,
            );
            row("deliveries/s", get(&|x| x.deliveries_s), &f0);
            row("publishes/s", get(&|x| x.publishes_s), &f0);
            row(
                "server CPU (cores)",
                get(&|x| x.win.srv_s / x.win.secs),
                &f2,
            );
            row(
                "server CPU in the kernel (share)",
                get(&|x| x.win.srv_sys_s / x.win.srv_s),
                &|v| format!("{:.0} %", v * 100.0),
            );
            row(
                "load generator CPU (cores)",
                get(&|x| x.win.cli_s / x.win.secs),
                &f2,
            );
            let ratios: Vec<Option<f64>> = cpu
                .iter()
                .zip(&echo_us)
                .map(|(c, e)| Some(c.as_ref()? / e.as_ref()?))
                .collect();
            let ratio_of_medians = med(&cpu).zip(med(&echo_us)).map(|(c, e)| c / e);
            let _ = writeln!(
                s,
                "| {label} | ÷ echo pipelined-32 CPU per message (median ÷ median; per round) | **{}** |{}",
                fmt_opt(ratio_of_medians, f2),
                ratios.iter().map(|v| format!(" {} |", fmt_opt(*v, f2))).collect::<String>()
            );
            let ok: Vec<String> = fans
                .iter()
                .map(|x| match x {
                    None => "–".into(),
                    Some(x) if x.subs_ok == n && x.cut == 0 => {
                        format!("yes ({} msgs)", thousands(x.published as f64))
                    }
                    Some(x) => format!(
                        "NO: {}/{} ok ({} live), {} cut",
                        x.subs_ok, n, x.live, x.cut
                    ),
                })
                .collect();
            let measured = fans.iter().flatten().count();
            let good = fans.iter().flatten().all(|x| x.subs_ok == n && x.cut == 0);
            all_ok &= good && measured > 0;
            let summary = match (measured, good) {
                (0, _) => "not measured (the subscribe did not finish)".to_string(),
                (m, true) if m == fans.len() => "yes".into(),
                (m, true) => format!("yes ({m} of {} rounds measured)", fans.len()),
                (_, false) => "NO".into(),
            };
            text_row(
                &mut s,
                &format!("{label} | every subscriber got every message once, in order"),
                &summary,
                &ok,
            );
        }
        let mut line = String::new();
        table_row(&mut line, "server CPU per message (µs)", &echo_us, f3);
        let _ = write!(s, "| echo pipelined-32 {line}");
        let mut line = String::new();
        let echo_rate: Vec<Option<f64>> = rounds
            .iter()
            .map(|r| echo_of(r).map(|e| e.msgs_s))
            .collect();
        table_row(&mut line, "messages/s", &echo_rate, f0);
        let _ = write!(s, "| echo pipelined-32 {line}");
    }
    if o.want("memory") {
        let n = o.mem_subs;
        let subs: Vec<Option<SubResult>> = rounds.iter().map(|r| sub_of(r, n)).collect();
        let label = format!("memory {} subscribers", thousands(n as f64));
        let mut row = |metric: &str, vals: &[Option<f64>], f: &dyn Fn(f64) -> String| {
            let mut line = String::new();
            table_row(&mut line, metric, vals, f);
            let _ = write!(s, "| {label} {line}");
        };
        let per_session = |x: &Option<SubResult>, later: bool| -> Option<f64> {
            let x = x.as_ref()?;
            let at = if later {
                x.rss_subscribed_later?
            } else {
                x.rss_subscribed
            };
            Some((at - x.rss_start) / n as f64)
        };
        row(
            "RSS growth per subscribed session, 1 s after presence settled (B)",
            &subs
                .iter()
                .map(|x| per_session(x, false))
                .collect::<Vec<_>>(),
            &f0,
        );
        row(
            "… 5 s after (B)",
            &subs
                .iter()
                .map(|x| per_session(x, true))
                .collect::<Vec<_>>(),
            &f0,
        );
        let mut payloads = vec![o.payload];
        if o.want("cpu") && o.big_subs == n && o.big_payload > 0 {
            payloads.push(o.big_payload);
        }
        for (k, p) in payloads.iter().enumerate() {
            let fans: Vec<Option<FanResult>> = rounds.iter().map(|r| fan_of(r, n, *p)).collect();
            // Left behind relative to the RSS before the first burst.
            let base: Vec<Option<f64>> = rounds
                .iter()
                .map(|r| fan_of(r, n, o.payload).map(|f| f.rss_before))
                .collect();
            let left = |later: bool| -> Vec<Option<f64>> {
                fans.iter()
                    .zip(&base)
                    .map(|(f, b)| {
                        let f = f.as_ref()?;
                        let at = if later {
                            f.rss_after_later?
                        } else {
                            f.rss_after
                        };
                        Some((at - b.as_ref()?) / n as f64)
                    })
                    .collect()
            };
            let what = if k == 0 {
                format!(
                    "left per subscriber 1 s after a {} s burst of {p} B drained (B)",
                    o.warmup + o.measure
                )
            } else {
                format!(
                    "left 1 s after the {p} B burst that followed (B, vs before the first burst)"
                )
            };
            row(&what, &left(false), &f0);
            row("… 5 s after (B)", &left(true), &f0);
        }
        // What a subscribed session costs once the subscribe's presence
        // burst and the first fan-out burst are behind it.
        let settled: Vec<Option<f64>> = rounds
            .iter()
            .map(|r| {
                let start = sub_of(r, n)?.rss_start;
                let f = fan_of(r, n, o.payload)?;
                Some((f.rss_after_later.unwrap_or(f.rss_after) - start) / n as f64)
            })
            .collect();
        row(
            &format!(
                "RSS growth per subscribed session 5 s after the {} B burst drained \
                 (B, vs the gateway before connecting)",
                o.payload
            ),
            &settled,
            &f0,
        );
        row(
            "gateway RSS once subscribed (MiB)",
            &subs
                .iter()
                .map(|x| x.as_ref().map(|x| x.rss_subscribed))
                .collect::<Vec<_>>(),
            &mib,
        );
    }
    if o.want("topics") {
        let ts: Vec<Option<TopicResult>> = rounds.iter().map(|r| r.topics.clone()?.ok()).collect();
        let label = format!("topics {} published once", thousands(o.topics as f64));
        let get = |f: &dyn Fn(&TopicResult) -> f64| -> Vec<Option<f64>> {
            ts.iter().map(|x| x.as_ref().map(f)).collect()
        };
        let mut row = |metric: &str, vals: Vec<Option<f64>>, f: &dyn Fn(f64) -> String| {
            let mut line = String::new();
            table_row(&mut line, metric, &vals, f);
            let _ = write!(s, "| {label} {line}");
        };
        row("RSS at the start (MiB)", get(&|x| x.rss_start), &mib);
        row(
            "RSS after publishing (MiB)",
            get(&|x| x.rss_published),
            &mib,
        );
        row(
            "growth per topic (B)",
            get(&|x| (x.rss_published - x.rss_start) / x.topics as f64),
            &f0,
        );
        row(
            &format!("RSS {:.0} s later (MiB)", o.ttl_wait),
            get(&|x| x.rss_end),
            &mib,
        );
        row(
            "… relative to the start",
            get(&|x| (x.rss_end / x.rss_start - 1.0) * 100.0),
            &|v| format!("{v:+.1} %"),
        );
        row(
            "`wsgate_topics` after publishing",
            get(&|x| x.gauge_published.unwrap_or(f64::NAN)),
            &f0,
        );
        row(
            "`wsgate_topics` at the end",
            get(&|x| x.gauge_end.unwrap_or(f64::NAN)),
            &f0,
        );
        row(
            "publishes/s",
            get(&|x| x.acked as f64 / x.publish_secs),
            &f0,
        );
        all_ok &= ts
            .iter()
            .all(|x| x.as_ref().is_some_and(|x| x.acked as usize == x.topics));
    }
    // Interference: every measured window.
    let mut wins: Vec<(String, f64)> = Vec::new();
    for (i, r) in rounds.iter().enumerate() {
        for x in r.subs.iter().flatten() {
            wins.push((
                format!("round {} subscribe {}", i + 1, x.n),
                x.win.foreign(),
            ));
        }
        for x in r.fans.iter().flatten() {
            wins.push((
                format!("round {} fan-out {}×{}", i + 1, x.n, x.payload),
                x.win.foreign(),
            ));
        }
        if let Some(Ok(e)) = &r.echo {
            wins.push((format!("round {} echo", i + 1), e.foreign));
        }
        if let Some(Ok(t)) = &r.topics {
            wins.push((format!("round {} topics", i + 1), t.win.foreign()));
        }
    }
    let disturbed: Vec<&(String, f64)> = wins.iter().filter(|w| w.1 > DISTURBED_PCT).collect();
    let worst = wins.iter().map(|w| w.1).fold(0.0, f64::max);
    let _ = writeln!(
        s,
        "\nInterference check: {} measured windows, {} with another process above {DISTURBED_PCT:.0} % of \
         either CPU (worst {worst:.1} %){}.",
        wins.len(),
        disturbed.len(),
        if disturbed.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                disturbed
                    .iter()
                    .map(|(n, f)| format!("{n} {f:.0} %"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let mut failures = Vec::new();
    for (i, r) in rounds.iter().enumerate() {
        for e in r.subs.iter().filter_map(|x| x.as_ref().err()) {
            failures.push(format!("round {}: {e}", i + 1));
        }
        for e in r.fans.iter().filter_map(|x| x.as_ref().err()) {
            failures.push(format!("round {}: {e}", i + 1));
        }
        for x in r.fans.iter().flatten() {
            if x.errors != "no errors" {
                failures.push(format!(
                    "round {} fan-out {}×{}: {}",
                    i + 1,
                    x.n,
                    x.payload,
                    x.errors
                ));
            }
        }
        if let Some(Err(e)) = &r.echo {
            failures.push(format!("round {} echo: {e}", i + 1));
        }
        if let Some(Err(e)) = &r.topics {
            failures.push(format!("round {} topics: {e}", i + 1));
        }
    }
    if !failures.is_empty() {
        all_ok = false;
        let _ = writeln!(s, "\nFailures and errors:\n");
        for f in failures {
            let _ = writeln!(s, "- {f}");
        }
    }
    (s, all_ok)
}

// ---------------------------------------------------------------------------

/// One round's steps for one server: its populations, echo, topics.
async fn run_round(o: &ScaleOpts, round: usize, hopeless: &mut Vec<usize>) -> Round {
    let mut r = Round::default();
    for n in o.populations() {
        // Populations whose subscribe did not finish in time are not repeated.
        if hopeless.contains(&n) {
            eprintln!(
                "== round {round}: {n} subscribers skipped (did not subscribe within {:.0} s before)",
                o.sub_timeout
            );
            continue;
        }
        match population(o, n, round, &mut r).await {
            Ok(true) => {}
            Ok(false) => hopeless.push(n),
            Err(e) => {
                eprintln!("   FAILED: {e}");
                r.subs.push(Err(format!("{n} subscribers: {e}")));
            }
        }
    }
    if o.want("cpu") {
        r.echo = Some(echo(o, round).await);
        if let Some(Err(e)) = &r.echo {
            eprintln!("   FAILED: {e}");
        }
    }
    if o.want("topics") && o.topics > 0 {
        r.topics = Some(topics(o, round).await);
        if let Some(Err(e)) = &r.topics {
            eprintln!("   FAILED: {e}");
        }
    }
    r
}

/// wsgate beside each peer: the medians of the figures both can give, a
/// column per server, and wsgate ÷ peer.
fn compare(o: &ScaleOpts, rounds: &[Round], peers: &[(String, Vec<Round>)]) -> String {
    let mut s = String::new();
    let names: Vec<&str> = peers.iter().map(|(n, _)| n.as_str()).collect();
    let _ = writeln!(
        s,
        "### wsgate beside {}: the same harness, rounds interleaved\n",
        names.join(", ")
    );
    let _ = writeln!(
        s,
        "Medians of {} round(s); in every round wsgate's steps run first, then each peer's, \
         each on a fresh server pinned to CPU {} with the load generator on CPU {}. \
         Every figure is measured by the harness (client-side counts, `/proc/<pid>` of the \
         server process: all its threads); the peers export no metrics and have no presence \
         (no `join` lines: their subscribe does less work), resume or replay.\n",
        rounds.len(),
        o.server_cpu,
        o.client_cpu
    );
    s.push_str("| scenario | metric | wsgate |");
    for n in &names {
        let _ = write!(s, " {n} | wsgate ÷ {n} |");
    }
    s.push_str("\n|---|---|---:|");
    for _ in &names {
        s.push_str("---:|---:|");
    }
    s.push('\n');
    let f0 = |x: f64| thousands(x);
    let f2 = |x: f64| format!("{x:.2}");
    let f3 = |x: f64| format!("{x:.3}");
    // A row: the median of `value` over each server's rounds.
    let line = |s: &mut String,
                label: &str,
                metric: &str,
                value: &dyn Fn(&Round) -> Option<f64>,
                fmt: &dyn Fn(f64) -> String| {
        let of = |rs: &[Round]| med(&rs.iter().map(value).collect::<Vec<_>>());
        let w = of(rounds);
        let _ = write!(s, "| {label} | {metric} | {} |", fmt_opt(w, fmt));
        for (_, pr) in peers {
            let p = of(pr);
            let ratio = w.zip(p).map(|(a, b)| a / b);
            let _ = write!(s, " {} | {} |", fmt_opt(p, fmt), fmt_opt(ratio, f2));
        }
        s.push('\n');
    };
    let fan_of = |r: &Round, n: usize, p: usize| r.fan(n, p);
    let sub_of = |r: &Round, n: usize| r.sub(n);
    let echo_us = |r: &Round| -> Option<f64> { Some(r.echo.clone()?.ok()?.us_per_msg) };
    if o.want("subscribe") {
        for &n in &o.sub_sizes {
            let label = format!("subscribe {}", thousands(n as f64));
            line(
                &mut s,
                &label,
                "time, first `sub` sent → last `ok sub` (s)",
                &|r| sub_of(r, n)?.secs,
                &f3,
            );
            line(
                &mut s,
                &label,
                "presence lines received (the peers send none)",
                &|r| Some(sub_of(r, n)?.presence as f64),
                &f0,
            );
        }
    }
    if o.want("cpu") {
        let mut cases: Vec<(usize, usize)> = o.fan_sizes.iter().map(|&n| (n, o.payload)).collect();
        if o.big_payload > 0 && o.big_subs > 0 {
            cases.push((o.big_subs, o.big_payload));
        }
        for (n, p) in cases {
            let label = format!("fan-out {} × {} B", thousands(n as f64), p);
            line(
                &mut s,
                &label,
                "**server CPU per delivery (µs)**",
                &|r| Some(fan_of(r, n, p)?.us_per_delivery),
                &f3,
            );
            line(
                &mut s,
                &label,
                "server CPU per delivery, schedstat (µs)",
                &|r| Some(fan_of(r, n, p)?.us_per_delivery_sched),
                &f3,
            );
            line(
                &mut s,
                &label,
                "deliveries/s",
                &|r| Some(fan_of(r, n, p)?.deliveries_s),
                &f0,
            );
            line(
                &mut s,
                &label,
                "**÷ the same server's echo pipelined-32 CPU per message** (per round, median)",
                &|r| Some(fan_of(r, n, p)?.us_per_delivery / echo_us(r)?),
                &f2,
            );
            line(
                &mut s,
                &label,
                "subscribers that got every message once, in order (of the subscribers)",
                &|r| {
                    let f = fan_of(r, n, p)?;
                    Some(if f.cut == 0 {
                        f.subs_ok as f64
                    } else {
                        f64::NAN
                    })
                },
                &f0,
            );
        }
        line(
            &mut s,
            "echo pipelined-32",
            "server CPU per message (µs)",
            &echo_us,
            &f3,
        );
        line(
            &mut s,
            "echo pipelined-32",
            "messages/s",
            &|r| Some(r.echo.clone()?.ok()?.msgs_s),
            &f0,
        );
    }
    if o.want("memory") {
        let n = o.mem_subs;
        let label = format!("memory {} subscribers", thousands(n as f64));
        line(
            &mut s,
            &label,
            "RSS growth per subscribed session, 1 s after the subscribe (B)",
            &|r| {
                let x = sub_of(r, n)?;
                Some((x.rss_subscribed - x.rss_start) / n as f64)
            },
            &f0,
        );
        line(
            &mut s,
            &label,
            &format!(
                "left per subscriber 1 s after a {} s burst of {} B drained (B)",
                o.warmup + o.measure,
                o.payload
            ),
            &|r| {
                let f = fan_of(r, n, o.payload)?;
                Some((f.rss_after - f.rss_before) / n as f64)
            },
            &f0,
        );
        line(
            &mut s,
            &label,
            "… 5 s after (B)",
            &|r| {
                let f = fan_of(r, n, o.payload)?;
                Some((f.rss_after_later? - f.rss_before) / n as f64)
            },
            &f0,
        );
        line(
            &mut s,
            &label,
            "server RSS once subscribed (MiB)",
            &|r| Some(sub_of(r, n)?.rss_subscribed / 1048576.0),
            &|x| format!("{x:.1}"),
        );
    }
    s
}

pub(super) fn main(args: impl Iterator<Item = String>) {
    let o = parse(args);
    if let Some(out) = &o.out {
        let _ = std::fs::create_dir_all(out.join("logs"));
    }
    pin_self(o.client_cpu);
    let peer_opts: Vec<(String, ScaleOpts)> = o
        .peers
        .iter()
        .map(|(name, path)| (name.clone(), o.for_peer(name, path)))
        .collect();
    let rt = runtime();
    let local = LocalSet::new();
    let (rounds, peer_rounds) = local.block_on(&rt, async {
        let mut rounds: Vec<Round> = Vec::new();
        let mut peer_rounds: Vec<Vec<Round>> = peer_opts.iter().map(|_| Vec::new()).collect();
        let mut hopeless: Vec<usize> = Vec::new();
        let mut peer_hopeless: Vec<Vec<usize>> = vec![Vec::new(); peer_opts.len()];
        for round in 1..=o.rounds {
            rounds.push(run_round(&o, round, &mut hopeless).await);
            for (k, (name, po)) in peer_opts.iter().enumerate() {
                eprintln!("== round {round}: peer {name} ({})", po.wsgate.display());
                peer_rounds[k].push(run_round(po, round, &mut peer_hopeless[k]).await);
            }
        }
        (rounds, peer_rounds)
    });
    let (mut md, mut ok) = report(&o, "gateway `--cores 1`", &rounds);
    if !peer_opts.is_empty() {
        let peers: Vec<(String, Vec<Round>)> = peer_opts
            .iter()
            .zip(peer_rounds)
            .map(|((name, _), r)| (name.clone(), r))
            .collect();
        md.push('\n');
        md.push_str(&compare(&o, &rounds, &peers));
        for ((name, po), (_, pr)) in peer_opts.iter().zip(&peers) {
            let (pmd, pok) = report(po, &format!("peer {name} (`{}`)", po.wsgate.display()), pr);
            md.push('\n');
            md.push_str(&pmd);
            ok &= pok;
        }
    }
    print!("{md}");
    if let Some(out) = &o.out {
        let _ = std::fs::write(out.join("scale-table.md"), &md);
    }
    if !ok {
        std::process::exit(1);
    }
}
