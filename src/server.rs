//! Process start: one pinned monoio runtime per CPU, each with its own
//! `SO_REUSEPORT` listener and accept loop (DESIGN §9).

use std::cell::Cell;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use monoio::net::{ListenerOpts, TcpListener};

use crate::config::Config;
use crate::connection;
use crate::conns::{ConnEntry, Registry};
use crate::gateway::AdminWaiter;
use crate::hub::{ConnId, Hub, HubConfig};
use crate::log::{self, Level};
use crate::mailbox::Mailbox;
use crate::metrics::{CoreStats, Metrics};
use crate::proto::cookie::CookieSpec;
use crate::proto::handshake::{OriginPolicy, Routes};
use crate::reactor::Reactor;
use crate::shutdown;
use crate::sys;
use std::collections::HashMap;

/// The built-in route that only sets the cookie (204).
pub const SESSION_PATH: &str = "/ws-session";

/// Size of each core's shared receive buffer.
pub const READ_BUF_SIZE: usize = 128 * 1024;

/// Which io driver a runtime ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Driver {
    /// io_uring.
    IoUring,
    /// epoll (monoio's legacy driver), where io_uring is blocked or forced off.
    Epoll,
}

impl Driver {
    /// The name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// State shared by all cores, read-only after start except for counters.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Path routing and origin policy.
    pub routes: Routes,
    /// The `Set-Cookie` line template.
    pub cookie: CookieSpec,
    /// This node's name.
    pub node_id: String,
    /// Open WebSocket connections on all cores (checked only at upgrade).
    pub active: AtomicUsize,
    /// Per-core counters.
    pub metrics: Metrics,
    /// Set once by the signal thread: health and upgrades answer 503.
    pub draining: AtomicBool,
    /// Number of cores.
    pub cores: usize,
    /// Each core's inbox, by core index.
    pub mailboxes: Vec<Mailbox>,
    /// The shared engine's schema and this process's owner identity (`--redis`).
    pub schema: Option<Arc<crate::store::Schema>>,
}

/// What one core owns: its index, the shared state and its scratch buffers.
pub struct Core {
    /// Index of this core (0-based).
    pub index: usize,
    /// Process-wide state.
    pub shared: Arc<Shared>,
    /// This core's counters.
    pub stats: Arc<CoreStats>,
    /// Receive buffer lent to whichever connection is reading right now.
    pub read_buf: RefCell<Box<[u8]>>,
    /// Output batch of the connection being served right now.
    pub write_buf: RefCell<Vec<u8>>,
    /// This core's open WebSocket connections.
    pub conns: Registry,
    /// Readiness of those connections' sockets.
    pub reactor: Reactor,
    /// This core has started draining.
    pub draining: Cell<bool>,
    /// This core's sessions and topics.
    pub hub: RefCell<Hub>,
    /// Gateway connections of this core, by hub token.
    pub gateway_conns: RefCell<HashMap<ConnId, Rc<ConnEntry>>>,
    /// Connections with frames gathered by the running hub flush (reused list).
    pub pushed: RefCell<Vec<Rc<ConnEntry>>>,
    /// Publish-API requests waiting for their sequence number.
    pub admin_waiters: RefCell<HashMap<u64, Rc<AdminWaiter>>>,
    /// This core's connection to the shared engine (`--redis`).
    pub redis: Option<Rc<crate::redis::RedisClient>>,
    next_id: Cell<u64>,
    epoch: std::time::Instant,
    now_ms: Cell<u64>,
}

impl Core {
    /// A token unique on this core (connections, requests).
    pub fn next_conn_id(&self) -> u64 {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        id
    }

    /// Coarse time in milliseconds (never 0), advanced by [`Core::tick`].
    pub fn now(&self) -> u64 {
        self.now_ms.get()
    }

    /// Reads the clock into the coarse time and returns it.
    pub fn tick(&self) -> u64 {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.now_ms.set(now);
        now
    }
}

/// A fatal start-up problem (exit code 2).
#[derive(Debug)]
pub struct StartError(pub String);

/// Starts every core and serves until the process ends.
pub fn run(config: Config) -> Result<(), StartError> {
    // Before any thread exists, so every thread inherits the mask.
    shutdown::block_signals();
    let cpus = sys::allowed_cpus().map_err(|e| StartError(format!("sched_getaffinity: {e}")))?;
    let cores = config.cores.unwrap_or(cpus.len());
    if cores > cpus.len() {
        return Err(StartError(format!(
            "--cores {cores} exceeds the {} CPUs this process may use ({cpus:?})",
            cpus.len()
        )));
    }
    // Fail early and clearly on a port that is taken: our own listeners use
    // SO_REUSEPORT and would otherwise silently share it with another process.
    let listen = probe_bind(config.listen, "--listen")?;
    let admin = probe_bind(config.admin_listen, "--admin-listen")?;
    let node_id = config.node_id.clone().unwrap_or_else(sys::hostname);
    let routes = Routes {
        ws_path: config.ws_path.clone(),
        echo_path: config.echo_path.clone(),
        health_path: config.health_path.clone(),
        session_path: SESSION_PATH.into(),
        origins: OriginPolicy::new(&config.allowed_origin),
    };
    let cookie = CookieSpec::new(
        &config.cookie_name,
        config.cookie_max_age.as_secs(),
        config.cookie_secure,
    );
    let mut bells = Vec::with_capacity(cores);
    let mut mailboxes = Vec::with_capacity(cores);
    for _ in 0..cores {
        let (ring, bell) = shutdown::doorbell().map_err(|e| StartError(format!("mailbox: {e}")))?;
        mailboxes.push(Mailbox::new(ring));
        bells.push(Some(bell));
    }
    let schema = config.redis.as_ref().map(|_| {
        Arc::new(crate::store::Schema::new(
            &node_id,
            config.history_size,
            config.session_ttl.as_millis() as u64,
        ))
    });
    let shared = Arc::new(Shared {
        schema,
        config,
        routes,
        cookie,
        node_id,
        active: AtomicUsize::new(0),
        metrics: Metrics::new(cores),
        draining: AtomicBool::new(false),
        cores,
        mailboxes,
    });

    let (ready_tx, ready_rx) = mpsc::channel::<Result<(usize, Driver, SocketAddr), String>>();
    let mut threads = Vec::with_capacity(cores);
    let mut rings = Vec::with_capacity(cores);
    // Before any other thread exists: a multi-threaded process that outgrows
    // its descriptor table waits milliseconds for the kernel to grow it (seen
    // as 8–15 ms accept stalls at 256, 512 and 1024 connections).
    sys::grow_fd_table();
    for (index, &cpu) in cpus.iter().enumerate().take(cores) {
        let (ring, bell) =
            shutdown::doorbell().map_err(|e| StartError(format!("doorbell: {e}")))?;
        rings.push(ring);
        let mail_bell = bells[index].take().expect("one bell per core");
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let admin = (index == 0).then_some(admin);
        let thread = std::thread::Builder::new()
            .name(format!("wsgate-core-{index}"))
            .spawn(move || core_main(index, cpu, listen, admin, shared, [bell, mail_bell], ready))
            .map_err(|e| StartError(format!("spawning core {index}: {e}")))?;
        threads.push(thread);
    }
    drop(ready_tx);
    let mut drivers = Vec::with_capacity(cores);
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok((index, driver, _))) => drivers.push((index, driver)),
            Ok(Err(msg)) => return Err(StartError(msg)),
            Err(_) => return Err(StartError("a core exited during start".into())),
        }
    }
    drivers.sort();
    let driver = drivers[0].1;
    log::emit(
        Level::Info,
        "listening",
        &[
            ("listen", &listen),
            ("admin", &admin),
            ("cores", &cores),
            ("cpus", &CpuList(&cpus[..cores])),
            ("driver", &driver.name()),
            ("node", &shared.node_id),
            (
                "redis",
                &shared
                    .config
                    .redis_target()
                    .map_or_else(|| "none".to_string(), |t| t.to_string()),
            ),
        ],
    );
    if driver == Driver::Epoll && std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_none() {
        log::emit(
            Level::Warn,
            "io_uring_unavailable",
            &[("fallback", &"epoll")],
        );
    }
    shutdown::spawn_signal_thread(shared.clone(), rings);
    for t in threads {
        let _ = t.join();
    }
    log::emit(Level::Info, "exit", &[("code", &0)]);
    Ok(())
}

struct CpuList<'a>(&'a [usize]);

impl std::fmt::Display for CpuList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, cpu) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{cpu}")?;
        }
        Ok(())
    }
}

/// Binds a plain socket (no SO_REUSEPORT) to learn the port is free and to
/// resolve port 0; it is closed again before the real listeners bind.
fn probe_bind(addr: SocketAddr, flag: &str) -> Result<SocketAddr, StartError> {
    let probe =
        std::net::TcpListener::bind(addr).map_err(|e| StartError(format!("{flag} {addr}: {e}")))?;
    probe
        .local_addr()
        .map_err(|e| StartError(format!("{flag} {addr}: {e}")))
}

type Ready = mpsc::Sender<Result<(usize, Driver, SocketAddr), String>>;

fn core_main(
    index: usize,
    cpu: usize,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    shared: Arc<Shared>,
    bells: [StdUnixStream; 2],
    ready: Ready,
) {
    if let Err(e) = sys::pin_current_thread(cpu) {
        let _ = ready.send(Err(format!("pinning core {index} to CPU {cpu}: {e}")));
        return;
    }
    // COOP_TASKRUN: completions wait for the thread's next ring entry instead
    // of interrupting it (measured: the rescheduling IPIs per operation, and
    // the kernel time they cost, vanish; benches/README.md). Kernels before
    // 5.19 refuse the flag: build a plain ring there.
    let build = |coop: bool| {
        let mut ring = io_uring::IoUring::builder();
        if coop {
            ring.setup_coop_taskrun().setup_taskrun_flag();
        }
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .with_entries(1024)
            .uring_builder(ring)
            .build()
    };
    let rt = build(true).or_else(|_| build(false));
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("building the runtime of core {index}: {e}")));
            return;
        }
    };
    let reactor = match Reactor::new() {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("epoll set of core {index}: {e}")));
            return;
        }
    };
    let stats = shared.metrics.core(index);
    if shared.config.redis.is_some() {
        stats.set_redis_up(false);
    }
    let core =
        Rc::new(Core {
            index,
            shared: shared.clone(),
            stats,
            read_buf: RefCell::new(vec![0u8; READ_BUF_SIZE].into_boxed_slice()),
            write_buf: RefCell::new(Vec::with_capacity(64 * 1024)),
            conns: Registry::default(),
            reactor,
            draining: Cell::new(false),
            hub: RefCell::new(Hub::new(HubConfig {
                core: index,
                cores: shared.cores,
                node_id: shared.node_id.clone(),
                session_ttl_ms: shared.config.session_ttl.as_millis() as u64,
                history_size: shared.config.history_size,
                engine: shared.config.redis.is_some(),
            })),
            gateway_conns: RefCell::new(HashMap::new()),
            pushed: RefCell::new(Vec::new()),
            admin_waiters: RefCell::new(HashMap::new()),
            redis: shared.config.redis_target().zip(shared.schema.clone()).map(
                |(target, schema)| {
                    Rc::new(crate::redis::RedisClient::new(
                        target,
                        shared.config.redis_timeout,
                        schema,
                    ))
                },
            ),
            next_id: Cell::new(0),
            epoch: std::time::Instant::now(),
            now_ms: Cell::new(1),
        });
    match rt {
        monoio::FusionRuntime::Uring(mut rt) => {
            rt.block_on(serve_core(
                core,
                Driver::IoUring,
                listen,
                admin,
                bells,
                ready,
            ));
        }
        monoio::FusionRuntime::Legacy(mut rt) => {
            rt.block_on(serve_core(core, Driver::Epoll, listen, admin, bells, ready));
        }
    }
}

async fn serve_core(
    core: Rc<Core>,
    driver: Driver,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    bells: [StdUnixStream; 2],
    ready: Ready,
) {
    let [drain_bell, mail_bell] = bells;
    core.stats.set_driver(driver);
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(4096);
    let listener = match TcpListener::bind_with_config(listen, &opts) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("--listen {listen}: {e}")));
            return;
        }
    };
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux, which
    // saves a setsockopt per connection; replies are batched per read anyway.
    if let Err(e) = crate::sys::set_nodelay(listener.as_raw_fd()) {
        let _ = ready.send(Err(format!("--listen {listen}: TCP_NODELAY: {e}")));
        return;
    }
    if let Some(admin) = admin {
        let admin_opts = ListenerOpts::new()
            .reuse_port(false)
            .reuse_addr(true)
            .backlog(256);
        match TcpListener::bind_with_config(admin, &admin_opts) {
            Ok(l) => {
                monoio::spawn(crate::admin::serve(l, core.clone()));
            }
            Err(e) => {
                let _ = ready.send(Err(format!("--admin-listen {admin}: {e}")));
                return;
            }
        }
    }
    let _ = ready.send(Ok((core.index, driver, listen)));
    drop(ready);
    core.tick();
    monoio::spawn(crate::heartbeat::run(core.clone()));
    monoio::spawn(crate::reactor::run(core.clone()));
    monoio::spawn(crate::gateway::mailbox_loop(core.clone(), mail_bell));
    monoio::spawn(crate::redis::run(core.clone()));
    // Serve until this core's drain is over; returning ends the runtime.
    let drained = shutdown::drain(core.clone(), drain_bell);
    monoio::select! {
        _ = accept_loop(listener, core.clone()) => {}
        _ = drained => {}
    }
}

async fn accept_loop(listener: TcpListener, core: Rc<Core>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                monoio::spawn(connection::serve(stream, peer, core.clone()));
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                log::emit(
                    Level::Warn,
                    "accept_failed",
                    &[("core", &core.index), ("error", &e)],
                );
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Shared {
    /// Whether the process is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Takes a connection slot if under `--max-connections`.
    pub fn try_acquire_connection(&self) -> bool {
        let before = self.active.fetch_add(1, Ordering::Relaxed);
        if before >= self.config.max_connections {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Returns a slot taken by [`Shared::try_acquire_connection`].
    pub fn release_connection(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}
