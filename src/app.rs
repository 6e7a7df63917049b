//! Process start: one pinned monoio runtime per CPU, each with its own
//! `SO_REUSEPORT` listener and accept loop (DESIGN §9), and the signal
//! thread. `main` parses the flags and calls [`run`].

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use monoio::net::TcpListener;

use crate::config::{Config, SESSION_PATH};
use crate::core::auth::Gate;
use crate::core::{Core, Shared};
use crate::net::mailbox::Mailbox;
use crate::net::reactor::{self as data_path, DataPath, Reactor};
use crate::proto::cookie::CookieSpec;
use crate::proto::handshake::{OriginPolicy, Routes};
use crate::serve::{admin, drain, handshake, heartbeat, mailbox, reactor, redis};
use crate::sys::log::{self, Level};
use crate::sys::{self, Driver};

/// A fatal start-up problem (exit code 2).
#[derive(Debug)]
pub struct StartError(pub String);

/// What a core reports once it serves (or why it cannot).
type Ready = mpsc::Sender<Result<(usize, Driver), String>>;

/// Starts every core and serves until the process ends.
pub fn run(config: Config) -> Result<(), StartError> {
    // Before any thread exists, so every thread inherits the mask.
    drain::block_signals();
    sys::tune_heap();
    let (path, fallback) = data_path::choose(config.io).map_err(StartError)?;
    if let Some(why) = &fallback {
        log::emit(
            Level::Warn,
            "io_uring_data_path_unavailable",
            &[("missing", why), ("fallback", &"epoll")],
        );
    }
    let cpus = sys::allowed_cpus().map_err(|e| StartError(format!("sched_getaffinity: {e}")))?;
    let cores = config.cores.unwrap_or(cpus.len());
    if cores > cpus.len() {
        return Err(StartError(format!(
            "--cores {cores} exceeds the {} CPUs this process may use ({cpus:?})",
            cpus.len()
        )));
    }
    let (listeners, admin_listener) = bind_all(config.listen, config.admin_listen, cores)?;
    let listen = local_addr(&listeners[0], "--listen")?;
    let admin = local_addr(&admin_listener, "--admin-listen")?;
    let mut admin_listener = Some(admin_listener);
    let (shared, mail_bells) = shared_state(config, cores, path)?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(cores);
    let mut rings = Vec::with_capacity(cores);
    // Before any other thread exists: a multi-threaded process that outgrows
    // its descriptor table waits milliseconds for the kernel to grow it (seen
    // as 8–15 ms accept stalls at 256, 512 and 1024 connections).
    sys::grow_fd_table();
    let cores_iter = cpus.iter().enumerate().take(cores).zip(mail_bells);
    for (((index, &cpu), mail_bell), listener) in cores_iter.zip(listeners) {
        let (ring, bell) = drain::doorbell().map_err(|e| StartError(format!("doorbell: {e}")))?;
        rings.push(ring);
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let admin = admin_listener.take();
        let sockets = Listeners { listener, admin };
        let thread = std::thread::Builder::new()
            .name(format!("wsgate-core-{index}"))
            .spawn(move || core_main(index, cpu, sockets, shared, [bell, mail_bell], ready))
            .map_err(|e| StartError(format!("spawning core {index}: {e}")))?;
        threads.push(thread);
    }
    drop(ready_tx);
    let mut drivers = Vec::with_capacity(cores);
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok(started)) => drivers.push(started),
            Ok(Err(msg)) => return Err(StartError(msg)),
            Err(_) => return Err(StartError("a core exited during start".into())),
        }
    }
    drivers.sort();
    let driver = drivers[0].1;
    log_listening(&shared, listen, admin, &cpus[..cores], driver);
    drain::spawn_signal_thread(shared.clone(), rings);
    for t in threads {
        let _ = t.join();
    }
    log::emit(Level::Info, "exit", &[("code", &0)]);
    Ok(())
}

/// The process-wide state and each core's mailbox doorbell (the core's end).
fn shared_state(
    config: Config,
    cores: usize,
    path: DataPath,
) -> Result<(Arc<Shared>, Vec<StdUnixStream>), StartError> {
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
        let (ring, bell) = drain::doorbell().map_err(|e| StartError(format!("mailbox: {e}")))?;
        mailboxes.push(Mailbox::new(ring));
        bells.push(bell);
    }
    // First: a bad CA file is a configuration error, before any log line.
    #[cfg(feature = "redis-tls")]
    let redis_tls = crate::net::redis_tls::TlsSetup::from_config(&config).map_err(StartError)?;
    let auth = Gate::from_config(&config).map_err(StartError)?;
    match &auth {
        None => log::emit(Level::Info, "auth_off", &[]),
        Some(gate) => log::emit(
            Level::Info,
            "auth_on",
            &[
                ("checks", &gate.describe()),
                ("allow_sub", &gate.policy.flags.sub.len()),
                ("allow_pub", &gate.policy.flags.publish.len()),
            ],
        ),
    }
    #[allow(unused_mut)] // set below only with the `backend` and `redis-tls` features
    let mut shared = Shared::new(config, routes, cookie, node_id, mailboxes, auth, path);
    #[cfg(feature = "redis-tls")]
    {
        shared.redis_tls = redis_tls;
    }
    #[cfg(feature = "backend")]
    {
        shared.events =
            crate::core::events::EventsSetup::from_config(&shared.config).map_err(StartError)?;
    }
    Ok((Arc::new(shared), bells))
}

fn log_listening(
    shared: &Shared,
    listen: SocketAddr,
    admin: SocketAddr,
    cpus: &[usize],
    driver: Driver,
) {
    let redis =
        (shared.config.redis_target()).map_or_else(|| "none".to_string(), |t| t.to_string());
    log::emit(
        Level::Info,
        "listening",
        &[
            ("listen", &listen),
            ("admin", &admin),
            ("cores", &cpus.len()),
            ("cpus", &CpuList(cpus)),
            ("driver", &driver.name()),
            ("io", &shared.data_path.name()),
            ("node", &shared.node_id),
            ("redis", &redis),
        ],
    );
    if driver == Driver::Epoll && std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_none() {
        log::emit(
            Level::Warn,
            "io_uring_unavailable",
            &[("fallback", &"epoll")],
        );
    }
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

/// Every core's traffic listener (`SO_REUSEPORT`, one port) and the admin
/// listener, bound before any core starts.
fn bind_all(
    listen: SocketAddr,
    admin: SocketAddr,
    cores: usize,
) -> Result<(Vec<std::net::TcpListener>, std::net::TcpListener), StartError> {
    // Fail early and clearly on a port that is taken: our own listeners use
    // SO_REUSEPORT and would otherwise silently share it with another process.
    if listen.port() != 0 {
        drop(
            std::net::TcpListener::bind(listen)
                .map_err(|e| StartError(format!("--listen {listen}: {e}")))?,
        );
    }
    let bind = |addr: SocketAddr| {
        sys::listener(addr, true, 4096).map_err(|e| StartError(format!("--listen {addr}: {e}")))
    };
    let first = bind(listen)?;
    // Port 0 was resolved by the first socket, which stays bound: the
    // others join it on that port.
    let port = local_addr(&first, "--listen")?;
    let mut listeners = vec![first];
    for _ in 1..cores {
        listeners.push(bind(port)?);
    }
    for l in &listeners {
        // Accepted sockets inherit TCP_NODELAY from the listener on Linux,
        // which saves a setsockopt per connection; replies are batched per
        // read anyway.
        sys::set_nodelay(l.as_raw_fd())
            .map_err(|e| StartError(format!("--listen {port}: TCP_NODELAY: {e}")))?;
    }
    let admin = sys::listener(admin, false, 256)
        .map_err(|e| StartError(format!("--admin-listen {admin}: {e}")))?;
    Ok((listeners, admin))
}

fn local_addr(l: &std::net::TcpListener, flag: &str) -> Result<SocketAddr, StartError> {
    l.local_addr()
        .map_err(|e| StartError(format!("{flag}: {e}")))
}

/// The sockets a core serves: its traffic listener and, on one core, the
/// admin listener.
struct Listeners {
    listener: std::net::TcpListener,
    admin: Option<std::net::TcpListener>,
}

fn core_main(
    index: usize,
    cpu: usize,
    sockets: Listeners,
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
    let rt = match build(true).or_else(|_| build(false)) {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("building the runtime of core {index}: {e}")));
            return;
        }
    };
    let path = shared.data_path;
    let reactor = match Reactor::new(path) {
        Ok(r) => r,
        Err(e) => {
            let what = format!("{} data path of core {index}: {e}", path.name());
            let _ = ready.send(Err(what));
            return;
        }
    };
    let core = Rc::new(Core::new(index, shared, reactor));
    match rt {
        monoio::FusionRuntime::Uring(mut rt) => {
            rt.block_on(serve_core(core, Driver::IoUring, sockets, bells, ready));
        }
        monoio::FusionRuntime::Legacy(mut rt) => {
            rt.block_on(serve_core(core, Driver::Epoll, sockets, bells, ready));
        }
    }
}

/// Binds this core's listeners, starts its tasks, and serves until its
/// drain is over (returning ends the runtime).
async fn serve_core(
    core: Rc<Core>,
    driver: Driver,
    sockets: Listeners,
    bells: [StdUnixStream; 2],
    ready: Ready,
) {
    let [drain_bell, mail_bell] = bells;
    core.stats.set_driver(driver);
    core.stats.set_data_path(core.reactor.path());
    let listener = match start_listeners(&core, sockets) {
        Ok(l) => l,
        Err(msg) => {
            let _ = ready.send(Err(msg));
            return;
        }
    };
    let _ = ready.send(Ok((core.index, driver)));
    drop(ready);
    core.tick();
    monoio::spawn(heartbeat::run(core.clone()));
    monoio::spawn(reactor::run(core.clone()));
    monoio::spawn(mailbox::run(core.clone(), mail_bell));
    monoio::spawn(redis::run(core.clone()));
    #[cfg(feature = "backend")]
    monoio::spawn(crate::serve::events::run(core.clone()));
    let drained = drain::drain(core.clone(), drain_bell);
    monoio::select! {
        _ = accept_loop(listener, core.clone()) => {}
        _ = drained => {}
    }
    // The drain's `disconnect` events reach the backend before the core ends.
    #[cfg(feature = "backend")]
    crate::serve::events::flush(&core, std::time::Duration::from_secs(2)).await;
}

/// Hands this core's listeners to its runtime (and starts the admin task on
/// the core that holds the admin listener).
fn start_listeners(core: &Rc<Core>, sockets: Listeners) -> Result<TcpListener, String> {
    let listener = TcpListener::from_std(sockets.listener).map_err(|e| format!("--listen: {e}"))?;
    if let Some(admin) = sockets.admin {
        let l = TcpListener::from_std(admin).map_err(|e| format!("--admin-listen: {e}"))?;
        monoio::spawn(admin::serve(l, core.clone()));
    }
    Ok(listener)
}

async fn accept_loop(listener: TcpListener, core: Rc<Core>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                monoio::spawn(handshake::serve(stream, peer, core.clone()));
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
